#!/usr/bin/env python3
"""Writes the text that the tokenizer speed figures use (about 3.2 MB): the first 3 MB of Python's
standard library sources (*.py in sorted order: English prose in docstrings and code), then the 440
parity-test strings (CJK, emoji, RTL, accents, special tokens, ...) ten times, one per line.
  python3 tools/tokenizer_bench_text.py OUT.txt"""
import glob
import json
import os
import sys

root = os.path.dirname(os.__file__)
parts, size = [], 0
for f in sorted(glob.glob(os.path.join(root, "*.py"))):
    t = open(f, encoding="utf-8", errors="replace").read()
    parts.append(t)
    size += len(t.encode())
    if size > 3_000_000:
        break
here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(here, "tests", "data", "tokenizer_strings.jsonl"), encoding="utf-8") as f:
    strings = [json.loads(line)["text"].replace("\n", " ") for line in f]
body = "".join(parts) + ("\n".join(strings) + "\n") * 10
with open(sys.argv[1], "w", encoding="utf-8") as f:
    f.write(body)
print(f"{sys.argv[1]}: {len(body.encode())} bytes (Python {sys.version.split()[0]} stdlib from {root})")
