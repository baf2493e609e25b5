#!/usr/bin/env python3
"""Writes tests/data/chat/golden.jsonl: chats rendered by transformers' own apply_chat_template
machinery (its Jinja environment: ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks,
loopcontrols, its raise_exception and tojson) for the real chat templates in
tests/data/chat/templates/, and, where a real tokenizer of the family is committed, the token ids
of apply_chat_template(tokenize=True).

Templates (text as published with each model; the Hub is not reachable from here):
  llama3.jinja        Meta-Llama-3-8B-Instruct (tests/data/tokenizers/llama3-tokenizer_config.json)
  llama3.2.jinja      Llama-3.2-3B-Instruct (as vendored in llama.cpp's models/templates)
  qwen3.jinja         Qwen3 (tests/data/tokenizers/qwen3-tokenizer_config.json)
  qwen2.5.jinja       Qwen2.5-Instruct (as vendored in a tokenizer_config.json on GitHub)
  mistral-v0.1.jinja  Mistral-7B-Instruct-v0.1
  mistral-nemo.jinja  Mistral-Nemo-Instruct-2407, the v3 [INST] template with tools
  gemma2.jinja        gemma-2-2b-it
  gemma3.jinja        gemma-3-it
  phi3.5.jinja        Phi-3.5-mini-instruct
  phi4.jinja          phi-4
Ids ("ids", apply_chat_template(tokenize=True)): llama3 and llama3.2 with the Llama 3 tokenizer,
qwen3 and qwen2.5 with the Qwen3 tokenizer (Qwen2.5's vocabulary, plus <think> tokens). No Mistral, Gemma or Phi tokenizer is committed: those records
have the text only ("text"), which tern must render byte for byte.

Llama 3.2's template takes today's date from strftime_now; tern defines no strftime_now (rows must
not change from day to day), so the template's own fallback "26 Jul 2024" is used, and the
reference is rendered with date_string = "26 Jul 2024" to match.

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

from transformers import AutoTokenizer
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKS = os.path.join(ROOT, "tests", "data", "tokenizers")
TPL = os.path.join(ROOT, "tests", "data", "chat", "templates")
OUT = os.path.join(ROOT, "tests", "data", "chat", "golden.jsonl")
DATE = "26 Jul 2024"

# template file -> (tokenizer for ids or None, bos, eos)
TEMPLATES = {
    "llama3.jinja": ("llama3", None, None),
    "llama3.2.jinja": ("llama3", None, None),
    "qwen3.jinja": ("qwen3", None, None),
    "qwen2.5.jinja": ("qwen3", None, None),
    "mistral-v0.1.jinja": (None, "<s>", "</s>"),
    "mistral-nemo.jinja": (None, "<s>", "</s>"),
    "gemma2.jinja": (None, "<bos>", "<eos>"),
    "gemma3.jinja": (None, "<bos>", "<eos>"),
    "phi3.5.jinja": (None, "<s>", "<|endoftext|>"),
    "phi4.jinja": (None, None, "<|im_end|>"),
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


def unpack(tmp, name):
    d = os.path.join(tmp, name)
    if not os.path.isdir(d):
        os.makedirs(d)
        for f in ("tokenizer", "tokenizer_config"):
            with gzip.open(os.path.join(TOKS, f"{name}-{f}.json.gz"), "rb") as src, \
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


END = {"mistral": "</s>", "gemma": "<end_of_turn>", "phi3.5": "<|end|>", "phi4": "<|im_end|>"}


def trained_text(tplname, messages, text):
    """The text of each trained span for the families without a committed tokenizer: the content
    as the template writes it (Gemma trims) and the end-of-turn marker right after it."""
    if tplname.startswith(("llama3", "qwen")):
        return trained(tplname, messages, text)
    end = next(v for k, v in END.items() if tplname.startswith(k))
    strip = tplname.startswith("gemma")
    return [(m["content"].strip() if strip else m["content"]) + end for m in messages if m["role"] == "assistant"]


def main():
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, (tokname, bos, eos) in TEMPLATES.items():
            with open(os.path.join(TPL, name), encoding="utf-8") as f:
                template = f.read()
            hf = None
            if tokname:
                hf = AutoTokenizer.from_pretrained(unpack(tmp, tokname))
                bos, eos = hf.bos_token, hf.eos_token
            for messages, agp in CHATS:
                rec = {"template": name, "tokenizer": tokname, "bos_token": bos, "eos_token": eos,
                       "add_generation_prompt": agp, "messages": messages}
                kw = {k: v for k, v in (("bos_token", bos), ("eos_token", eos)) if v is not None}
                try:
                    out, _ = render_jinja_template([messages], chat_template=template, add_generation_prompt=agp,
                                                   date_string=DATE, **kw)
                    rec["text"] = out[0]
                except Exception as e:  # the template's raise_exception
                    rec["error"] = str(e)
                    rows.append(rec)
                    continue
                if hf is not None:
                    hf.chat_template = template
                    ids = hf.apply_chat_template(messages, tokenize=True, add_generation_prompt=agp,
                                                 date_string=DATE)
                    ids = ids["input_ids"] if hasattr(ids, "keys") else ids
                    assert list(ids) == hf(rec["text"], add_special_tokens=False)["input_ids"]
                    rec["ids"] = list(ids)
                    if not agp:
                        rec["trained"] = trained(name, messages, rec["text"])
                if not agp:
                    rec["trained_text"] = trained_text(name, messages, rec["text"])
                rows.append(rec)
    with open(OUT, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    print(f"{OUT}: {len(rows)} records")


if __name__ == "__main__":
    main()
