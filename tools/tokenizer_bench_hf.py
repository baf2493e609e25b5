#!/usr/bin/env python3
"""The reference figure for `tern tokenize --bench`: HF `tokenizers` encoding every line of FILE on
one thread (RAYON_NUM_THREADS=1, encode_batch so that Python's per-call cost stays out), first pass
with a fresh tokenizer (cold word cache), then more passes until SECONDS have passed.
  RAYON_NUM_THREADS=1 python3 tools/tokenizer_bench_hf.py DIR/tokenizer.json FILE [SECONDS]"""
import os
import sys
import time

os.environ.setdefault("RAYON_NUM_THREADS", "1")
from tokenizers import Tokenizer, __version__  # noqa: E402


def main():
    path, text_path = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    with open(text_path, "rb") as f:
        raw = f.read()
    # Lines as getline() cuts them (only at "\n", which stays), like tern tokenize --bench.
    text = raw.decode("utf-8")
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    if not lines[-1]:
        lines.pop()
    tok = Tokenizer.from_file(path)
    mb = len(raw) / 1e6
    t0 = time.perf_counter()
    n_tok = sum(len(e.ids) for e in tok.encode_batch(lines, add_special_tokens=False))
    cold = time.perf_counter() - t0
    passes, warm = 0, 0.0
    while passes < 1 or warm < seconds:
        t = time.perf_counter()
        tok.encode_batch(lines, add_special_tokens=False)
        warm += time.perf_counter() - t
        passes += 1
    print(f"HF tokenizers {__version__}: {path} on {text_path} ({mb:.2f} MB, {len(lines)} lines, {n_tok} tokens, "
          f"RAYON_NUM_THREADS={os.environ['RAYON_NUM_THREADS']})")
    print(f"  first pass (cold word cache) {mb / cold:8.2f} MB/s  {n_tok / cold / 1e6:8.3f} M tokens/s")
    print(f"  {passes:3d} more passes (warm)       {mb * passes / warm:8.2f} MB/s  {n_tok * passes / warm / 1e6:8.3f} M tokens/s")


if __name__ == "__main__":
    main()
