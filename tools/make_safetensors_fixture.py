#!/usr/bin/env python3
"""Write tests/data/st_official.safetensors with the official safetensors library (torch API).

tests/test_safetensors.c reads it and checks every value, proving tern's reader agrees with the
real format (header layout, dtype names, little-endian C-order data, offsets, metadata).
Tensors (values are exact in every dtype, so the C test can state them):
  f32   F32  [2, 3]  i * 0.5 - 1          (i = 0..5, row-major)
  f16   F16  [4]     i * 0.25 - 0.5
  bf16  BF16 [2, 2]  i * 2 - 3
  u8    U8   [5]     i * 50
  i8    I8   [3]     [-128, 0, 127]
  i32   I32  [2, 1]  [-70000, 70000]
  i64   I64  [2]     [-(2**40), 2**40 + 1]
  bool  BOOL [3]     [True, False, True]
  scalar F32 []      3.25
  empty F16 [0, 4]
metadata: {"format": "pt", "producer": "tools/make_safetensors_fixture.py"}

Usage: tools/make_safetensors_fixture.py [--out tests/data/st_official.safetensors]
"""
import argparse
import os

import torch
from safetensors.torch import save_file


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "st_official.safetensors"))
    args = ap.parse_args()
    t = {
        "f32": (torch.arange(6, dtype=torch.float32) * 0.5 - 1).reshape(2, 3),
        "f16": (torch.arange(4, dtype=torch.float32) * 0.25 - 0.5).to(torch.float16),
        "bf16": (torch.arange(4, dtype=torch.float32) * 2 - 3).to(torch.bfloat16).reshape(2, 2),
        "u8": (torch.arange(5) * 50).to(torch.uint8),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "i32": torch.tensor([[-70000], [70000]], dtype=torch.int32),
        "i64": torch.tensor([-(2**40), 2**40 + 1], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "scalar": torch.tensor(3.25, dtype=torch.float32),
        "empty": torch.zeros(0, 4, dtype=torch.float16),
    }
    save_file(t, args.out, metadata={"format": "pt", "producer": "tools/make_safetensors_fixture.py"})
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    main()
