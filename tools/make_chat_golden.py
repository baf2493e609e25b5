#!/usr/bin/env python3
"""Writes tests/data/chat/golden.jsonl: chats rendered by transformers' own apply_chat_template
machinery (its Jinja environment: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, its raise_exception and tojson) for the real chat templates in
tests/data/chat/templates/, and, where a real tokenizer of the family is committed, the token ids
of apply_chat_template(tokenize=True).

Templates (tests/data/chat/templates/, text as published with each model; README.md there says
where each copy came from; the Hub is not reachable from here):
  llama3.jinja        Meta-Llama-3-8B-Instruct          tokenizer: llama3
  llama3.2.jinja      Llama-3.2-3B-Instruct             tokenizer: llama3
  qwen3.jinja         Qwen3                             tokenizer: qwen3
  qwen2.5.jinja       Qwen2.5-Instruct                  tokenizer: qwen3 (Qwen2.5's vocabulary + <think>)
  mistral-v0.1.jinja  Mistral-7B-Instruct-v0.1          tokenizer: mistral-v1
  mistral-v0.2.jinja  Mistral-7B-Instruct-v0.2 (2024)   tokenizer: mistral-v1
  mistral-v0.3.jinja  Mistral-7B-Instruct-v0.3          tokenizer: mistral-v3
  mistral-nemo.jinja  Mistral-Nemo-Instruct-2407        tokenizer: tekken
  gemma2.jinja        gemma-2-2b-it                     tokenizer: gemma2
  gemma3.jinja        gemma-3-it                        tokenizer: gemma3
  phi3.jinja          Phi-3-mini-4k-instruct            tokenizer: phi3
  phi3.5.jinja        Phi-3.5-mini-instruct             tokenizer: phi3 (Phi-3-mini's, the same kind)
  phi4.jinja          phi-4                             tokenizer: phi4
Every record that renders has the ids of apply_chat_template(tokenize=True) ("ids").

Tokenizers (tests/data/tokenizers/<name>-tokenizer.json.gz and -tokenizer_config.json.gz): the models'
own. llama3, qwen3 and phi3 are the Hub's files; mistral-v1, mistral-v3, tekken, gemma2, gemma3 and phi4
were converted from the models' tokenizer files shipped in PyPI packages by tools/make_chat_tokenizers.py
(transformers' converters; mistral-v3, gemma2 and gemma3 byte for byte the Hub's tokenizer.json), tekken,
gemma2, gemma3 and phi4 pruned to the vocabulary these strings need, with the same ids (that tool checks
it). Their tokenizer_config.json has tokenizer_class PreTrainedTokenizerFast, so transformers uses
tokenizer.json as written.

transformers 5 does not use a LlamaTokenizer's tokenizer.json pre-processing as written: it rebuilds
it from tokenizer_config.json (Metaspace, prepend_scheme "first" when legacy is false). Phi-3's
config says legacy: false, so AutoTokenizer's ids differ from tokenizer.json's (tokenizers, and
transformers 4): "ids" are transformers' apply_chat_template with the tokenizer.json as written
(PreTrainedTokenizerFast), which is what tern implements; "ids_autotokenizer" records
AutoTokenizer's where they differ (tern does not match those; docs/CONFIG.md says so).

"tokenizer_default": true where the template is the tokenizer's own (its tokenizer_config.json's),
so test_chat loads those rows through chat_template: tokenizer_default.

A record whose template raises (Gemma 2 refuses a system message) has "error": the message.
"trained" (records with ids, add_generation_prompt false): the texts tern must train with
train_on_inputs: false, as the tokenizer decodes each run: every assistant turn as the template
renders it after its header (Llama 3 trims the content) and its end-of-turn token.
"trained_text" (every record with text, add_generation_prompt false): the same as text spans, for
all families (Gemma trims; the end of turn is </s>, <end_of_turn>, <|end|> or <|im_end|>).

Run from the repository root: python3 tools/make_chat_golden.py
"""
import gzip
import json
import os
import shutil
import tempfile

from transformers import AutoTokenizer, PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKS = os.path.join(ROOT, "tests", "data", "tokenizers")
TPL = os.path.join(ROOT, "tests", "data", "chat", "templates")
OUT = os.path.join(ROOT, "tests", "data", "chat", "golden.jsonl")
DATE = "26 Jul 2024"

# template file -> tokenizer (tests/data/tokenizers/<name>-*.json.gz)
TEMPLATES = {
    "llama3.jinja": "llama3",
    "llama3.2.jinja": "llama3",
    "qwen3.jinja": "qwen3",
    "qwen2.5.jinja": "qwen3",
    "mistral-v0.1.jinja": "mistral-v1",
    "mistral-v0.2.jinja": "mistral-v1",
    "mistral-v0.3.jinja": "mistral-v3",
    "mistral-nemo.jinja": "tekken",
    "gemma2.jinja": "gemma2",
    "gemma3.jinja": "gemma3",
    "phi3.jinja": "phi3",
    "phi3.5.jinja": "phi3",
    "phi4.jinja": "phi4",
}

SYS = {"role": "system", "content": "You are a terse assistant."}
CHATS = [
    ([SYS, {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "It is 4."}], False),
    ([{"role": "user", "content": "Capital of France?"}, {"role": "assistant", "content": "Paris."},
      {"role": "user", "content": "And its population?"},
      {"role": "assistant", "content": "  About 2.1 million people.\n"}], False),
    ([{"role": "user", "content": "Übersetze: 猫 und Hund"}], True),
    ([SYS, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
      {"role": "user", "content": "Tell me a joke."}], True),
    ([{"role": "user", "content": "Think first: 3*3?"},
      {"role": "assistant", "content": "<think>\n3 times 3.\n</think>\n\n9."},
      {"role": "user", "content": "And 4*4?"},
      {"role": "assistant", "content": "<think>\nFour fours.\n</think>\n\n16."}], False),
    ([{"role": "user", "content": "Weather in Paris?"},
      {"role": "assistant", "content": "", "tool_calls": [
          {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}}]},
      {"role": "user", "content": "Thanks."}, {"role": "assistant", "content": "You're welcome."}], False),
]


# tokenizer.json committed once under another name: the "llama2" tokenizer.json is Mistral-7B-v0.1's
# (byte for byte what transformers' converter makes of Mistral's tokenizer.model.v1; README.md)
SAME_TOKENIZER_JSON = {"mistral-v1": "llama2"}


def unpack(tmp, name):
    d = os.path.join(tmp, name)
    if not os.path.isdir(d):
        os.makedirs(d)
        for f in ("tokenizer", "tokenizer_config"):
            base = SAME_TOKENIZER_JSON.get(name, name) if f == "tokenizer" else name
            with gzip.open(os.path.join(TOKS, f"{base}-{f}.json.gz"), "rb") as src, \
                    open(os.path.join(d, f + ".json"), "wb") as dst:
                shutil.copyfileobj(src, dst)
    return d


def trained(tplname, messages, text):
    """What tern trains of each assistant turn, decoded as the tokenizer decodes the run: the turn as
    the template renders it after its header (for a tool call: the call), and its end-of-turn."""
    out = []
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        c = m["content"]
        if m.get("tool_calls"):
            f = m["tool_calls"][0]["function"]
            args = json.dumps(f["arguments"], ensure_ascii=False)
            if tplname == "llama3.2.jinja":
                out.append('{"name": "%s", "parameters": %s}<|eot_id|>' % (f["name"], args))
            elif tplname.startswith("qwen"):
                call = '<tool_call>\n{"name": "%s", "arguments": %s}\n</tool_call><|im_end|>' % (f["name"], args)
                out.append(call)
            else:
                out.append(c.strip() + "<|eot_id|>")
            continue
        if tplname.startswith("llama3"):
            out.append(c.strip() + "<|eot_id|>")
        elif tplname == "qwen2.5.jinja":
            out.append(c + "<|im_end|>")
        else:  # qwen3: the reasoning is kept after the last user turn, an empty block on the last turn
            think, body = "", c
            if "</think>" in c:
                think = c.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                body = c.split("</think>")[-1].lstrip("\n")
            if i > last_user and (i == len(messages) - 1 or think):
                out.append("<think>\n" + think.strip("\n") + "\n</think>\n\n" + body.lstrip("\n") + "<|im_end|>")
            else:
                out.append(body + "<|im_end|>")
    return out


END = {"mistral": "</s>", "gemma": "<end_of_turn>", "phi3": "<|end|>", "phi4": "<|im_end|>"}


def trained_text(tplname, messages, text):
    """The text of each trained span for the families without a committed tokenizer: the content
    as the template writes it (Gemma and Mistral v0.3 trim) and the end-of-turn marker right after it."""
    if tplname.startswith(("llama3", "qwen")):
        return trained(tplname, messages, text)
    end = next(v for k, v in END.items() if tplname.startswith(k))
    strip = tplname.startswith(("gemma", "mistral-v0.3"))
    return [(m["content"].strip() if strip else m["content"]) + end for m in messages if m["role"] == "assistant"]


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, tokname in TEMPLATES.items():
            with open(os.path.join(TPL, name), encoding="utf-8") as f:
                template = f.read()
            d = unpack(tmp, tokname)
            with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
                own = json.load(f).get("chat_template") == template
            auto = AutoTokenizer.from_pretrained(d)
            # transformers' apply_chat_template with tokenizer.json as written (see the top)
            hf = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                         bos_token=auto.bos_token, eos_token=auto.eos_token)
            bos, eos = hf.bos_token, hf.eos_token
            for messages, agp in CHATS:
                rec = {"template": name, "tokenizer": tokname, "tokenizer_default": own, "bos_token": bos,
                       "eos_token": eos, "add_generation_prompt": agp, "messages": messages}
                kw = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
                try:
                    out, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=agp,
                                                   date_string=DATE, **kw)
                    rec["text"] = out[0]
                except Exception as e:  # the template's raise_exception
                    rec["error"] = str(e)
                    rows.append(rec)
                    continue
                ids = []
                for tok in (hf, auto):
                    tok.chat_template = template
                    r = tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp,
                                                date_string=DATE)
                    ids.append(list(r["input_ids"] if hasattr(r, "keys") else r))
                assert ids[0] == hf(rec["text"], add_special_tokens=False)["input_ids"]
                rec["ids"] = ids[0]
                if ids[1] != ids[0]:
                    rec["ids_autotokenizer"] = ids[1]
                if not agp and tokname in ("llama3", "qwen3"):
                    rec["trained"] = trained(name, messages, rec["text"])
                if not agp:
                    rec["trained_text"] = trained_text(name, messages, rec["text"])
                rows.append(rec)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(rows)} records, {sum('ids' in r for r in rows)} with ids, "
          f"{sum('ids_autotokenizer' in r for r in rows)} where AutoTokenizer differs")


if __name__ == "__main__":
    main()
