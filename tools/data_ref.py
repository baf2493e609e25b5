#!/usr/bin/env python3
"""Writes the data-module parity references under tests/data/datasets/ref/.

Inputs it writes (JSONL datasets tern reads):
  chat_chatml.jsonl, chat_llama3.jsonl, chat_mistral.jsonl   chats (messages and sharegpt forms)
  alpaca.jsonl, completion.jsonl                              alpaca and raw-text records
References (one line per input line, same order):
  chat_chatml.qwen3.ref.jsonl    transformers' apply_chat_template with Qwen3's own Jinja template
                                 (tests/data/tokenizers/qwen3-tokenizer_config.json), ids from HF
                                 tokenizers
  chat_llama3.llama3.ref.jsonl   the same with Llama 3's template; the generation prompt that this
                                 template always appends is cut off (asserted), see docs/CONFIG.md
  chat_mistral.llama2.ref.jsonl  ecosystem.md's Mistral v1 strings rendered here (no Mistral
                                 tokenizer_config is committed), ids from the Llama 2 sentencepiece
                                 tokenizer, the one Mistral v1 shares
  alpaca.<tok>.ref.jsonl         ecosystem.md's prompt strings; ids = encode(prompt + output,
                                 add_special_tokens=True) + [eos] as axolotl builds them, n_prompt =
                                 len(encode(prompt, add_special_tokens=True)) (tokens not trained)
  completion.<tok>.ref.jsonl     encode(text, add_special_tokens=True) + [eos]
Each ref line: {"text": rendered string, "ids": [...], "trained": [...]} where "trained" lists the
texts tern must train with train_on_inputs: false (chats: each assistant content with its
end-of-turn token, as the tokenizer decodes that run of tokens: sentencepiece drops the leading
space) or "n_prompt" for alpaca.

The Qwen3 template puts "<think>\\n\\n</think>\\n\\n" in front of an assistant turn that follows the
last user turn; tern's ChatML does not. The ChatML chats therefore either end with a user turn or
give that last assistant content with the empty think block written out, which the template keeps
as it is, so both sides render the same string. Run from the repository root:
  python3 tools/data_ref.py
"""
import gzip
import json
import os
import shutil
import tempfile

import transformers
from tokenizers import Tokenizer
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKS = os.path.join(ROOT, "tests", "data", "tokenizers")
OUT = os.path.join(ROOT, "tests", "data", "datasets", "ref")

THINK = "<think>\n\n</think>\n\n"

# (form, [(role, content)]): form "messages" or "sharegpt"
CHATS = [
    ("messages", [("system", "You are a terse assistant."), ("user", "What is 2+2?"),
                  ("assistant", "It is 4.")]),
    ("sharegpt", [("user", "Capital of France?"), ("assistant", "Paris."),
                  ("user", "And its population?"), ("assistant", "About 2.1 million people.")]),
    ("messages", [("user", "Übersetze: 猫 und Hund"), ("assistant", "Katze und Hund 🐱🐶")]),
    ("messages", [("user", "Hi"), ("assistant", "Hello! How can I help?"),
                  ("user", "Tell me a joke.")]),
    ("messages", [("system", "Answer in two lines."), ("user", "Write two lines:\nabout rain."),
                  ("assistant", "Rain falls down,\nthe streets turn brown.")]),
]

ALPACA = [
    {"instruction": "Name a primary colour.", "input": "", "output": "Blue."},
    {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"},
    {"instruction": "Translate to French.", "input": "Good morning, friend!",
     "output": "Bonjour, mon ami !"},
    {"instruction": "Say hi.", "output": "Hi!"},
]
COMPLETION = ["The cat sat on the mat.", "  Leading spaces and a tab\there.", "Ünïcödé text: 日本語.\nNew line."]

ALPACA_IN = ("Below is an instruction that describes a task, paired with an input that provides further "
             "context. Write a response that appropriately completes the request.\n\n"
             "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
ALPACA_NO = ("Below is an instruction that describes a task. Write a response that appropriately "
             "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def unpack(tmp, name):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    for f in ("tokenizer", "tokenizer_config"):
        with gzip.open(os.path.join(TOKS, f"{name}-{f}.json.gz"), "rb") as src, \
                open(os.path.join(d, f + ".json"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
        cfg = json.load(f)
    return d, Tokenizer.from_file(os.path.join(d, "tokenizer.json")), cfg


def record(form, msgs):
    if form == "sharegpt":
        conv = [{"from": {"user": "human", "assistant": "gpt"}.get(r, r), "value": c} for r, c in msgs]
        return {"conversations": conv}
    return {"messages": [{"role": r, "content": c} for r, c in msgs]}


def write_jsonl(name, rows):
    with open(os.path.join(OUT, name), "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def chatml_chats():
    """CHATS with the last assistant turn after the last user turn given its empty think block."""
    out = []
    for form, msgs in CHATS:
        last_user = max(i for i, (r, _) in enumerate(msgs) if r == "user")
        out.append((form, [(r, THINK + c if r == "assistant" and i > last_user else c)
                           for i, (r, c) in enumerate(msgs)]))
    return out


def hf_chat(tokdir, tok, chats, end_token, strip_suffix=""):
    hf = AutoTokenizer.from_pretrained(tokdir)
    refs = []
    for _, msgs in chats:
        messages = [{"role": r, "content": c} for r, c in msgs]
        text = hf.apply_chat_template(messages, tokenize=False)
        if strip_suffix:
            assert text.endswith(strip_suffix), text
            text = text[: -len(strip_suffix)]
        ids = tok.encode(text, add_special_tokens=False).ids
        if not strip_suffix:  # the tokenized template is HF's tokenization of the rendered text
            tk = hf.apply_chat_template(messages, tokenize=True)
            tk = tk["input_ids"] if isinstance(tk, dict) or hasattr(tk, "keys") else tk
            assert list(tk) == ids, (tk, ids)
        refs.append({"text": text, "ids": ids,
                     "trained": [c + end_token for r, c in msgs if r == "assistant"]})
    return refs


def mistral_v1(msgs):
    text, i, system = "<s>", 0, None
    if msgs[0][0] == "system":
        system, i = msgs[0][1], 1
    for k, (r, c) in enumerate(msgs[i:]):
        assert r == ("user" if k % 2 == 0 else "assistant")
        if r == "user":
            text += " [INST] " + (system + "\n\n" if system is not None and k == 0 else "") + c + " [/INST]"
        else:
            text += " " + c + "</s>"
    return text


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        toks = {n: unpack(tmp, n) for n in ("llama2", "llama3", "qwen3")}

        chats = chatml_chats()
        write_jsonl("chat_chatml.jsonl", [record(f, m) for f, m in chats])
        d, tok, _ = toks["qwen3"]
        write_jsonl("chat_chatml.qwen3.ref.jsonl", hf_chat(d, tok, chats, "<|im_end|>"))

        write_jsonl("chat_llama3.jsonl", [record(f, m) for f, m in CHATS])
        d, tok, _ = toks["llama3"]
        write_jsonl("chat_llama3.llama3.ref.jsonl",
                    hf_chat(d, tok, CHATS, "<|eot_id|>", "<|start_header_id|>assistant<|end_header_id|>\n\n"))

        mchats = CHATS
        write_jsonl("chat_mistral.jsonl", [record(f, m) for f, m in mchats])
        _, tok, _ = toks["llama2"]
        refs = []
        for _, msgs in mchats:
            text = mistral_v1(msgs)
            refs.append({"text": text, "ids": tok.encode(text, add_special_tokens=False).ids,
                         "trained": [c + "</s>" for r, c in msgs if r == "assistant"]})
        write_jsonl("chat_mistral.llama2.ref.jsonl", refs)

        write_jsonl("alpaca.jsonl", ALPACA)
        write_jsonl("completion.jsonl", [{"text": t} for t in COMPLETION])
        for name, (_, tok, cfg) in toks.items():
            eos = tok.token_to_id(cfg["eos_token"] if isinstance(cfg["eos_token"], str)
                                  else cfg["eos_token"]["content"])
            refs = []
            for a in ALPACA:
                prompt = (ALPACA_IN if a.get("input") else ALPACA_NO).format(**a)
                ids = tok.encode(prompt + a["output"], add_special_tokens=True).ids + [eos]
                p = tok.encode(prompt, add_special_tokens=True).ids
                assert ids[: len(p)] == p
                refs.append({"text": prompt + a["output"], "ids": ids, "n_prompt": len(p)})
            write_jsonl(f"alpaca.{name}.ref.jsonl", refs)
            write_jsonl(f"completion.{name}.ref.jsonl",
                        [{"text": t, "ids": tok.encode(t, add_special_tokens=True).ids + [eos]}
                         for t in COMPLETION])
    print(f"wrote {OUT} (transformers {transformers.__version__})")


if __name__ == "__main__":
    main()
