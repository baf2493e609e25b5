#!/usr/bin/env python3
"""Writes the tokenizer parity references: tests/data/tokenizer_ref_<name>.jsonl.

For every string in tests/data/tokenizer_strings.jsonl and every tokenizer in
tests/data/tokenizers/<name>-tokenizer.json.gz, Hugging Face `tokenizers` (pip install tokenizers)
gives one line:
  {"ids": encode(text, add_special_tokens=False),
   "ids_special": encode(text, add_special_tokens=True),
   "decoded": decode(ids_special, skip_special_tokens=False),
   "decoded_skip": decode(ids_special, skip_special_tokens=True)}
tests/test_tokenizer.c must reproduce every field. Run from the repository root:
  python3 tools/tokenizer_ref.py
"""
import gzip
import json
import os
import sys

from tokenizers import Tokenizer, __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
NAMES = ["llama2", "llama3", "qwen3"]


def main():
    with open(os.path.join(DATA, "tokenizer_strings.jsonl"), encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f if line.strip()]
    for name in NAMES:
        path = os.path.join(DATA, "tokenizers", f"{name}-tokenizer.json.gz")
        with gzip.open(path, "rt", encoding="utf-8") as f:
            tok = Tokenizer.from_str(f.read())
        out = os.path.join(DATA, f"tokenizer_ref_{name}.jsonl")
        with open(out, "w", encoding="utf-8") as f:
            for t in texts:
                ids = tok.encode(t, add_special_tokens=False).ids
                ids_sp = tok.encode(t, add_special_tokens=True).ids
                rec = {"ids": ids, "ids_special": ids_sp,
                       "decoded": tok.decode(ids_sp, skip_special_tokens=False),
                       "decoded_skip": tok.decode(ids_sp, skip_special_tokens=True)}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(f"{out}: {len(texts)} strings (tokenizers {__version__})", file=sys.stderr)


if __name__ == "__main__":
    main()
