#!/usr/bin/env python3
"""Golden learning-rate multipliers for tern_lr_lambda (tests/test_config.c).

Writes tests/data/lr_golden.txt: one line per (schedule, warmup W, total K, min ratio, step k) with
the multiplier transformers' get_scheduler gives at step k (its LambdaLR's lr_lambdas[0](k)).
cosine with a min ratio is axolotl's get_cosine_schedule_with_min_lr (cosine_min_lr_ratio with
lr_scheduler: cosine), computed here from its formula and checked against transformers'
cosine_with_min_lr, which is the same curve.

usage: python3 tools/lr_golden.py [OUT]   (needs torch and transformers)
"""
import math
import sys

import torch
from transformers import get_scheduler

CASES = [  # (tern name, transformers name, W, K, min ratio)
    ("cosine", "cosine", 3, 20, 0.0),
    ("cosine", "cosine", 0, 7, 0.0),
    ("linear", "linear", 3, 20, 0.0),
    ("linear", "linear", 1, 1, 0.0),
    ("constant_with_warmup", "constant_with_warmup", 4, 12, 0.0),
    ("cosine_with_min_lr", "cosine_with_min_lr", 3, 20, 0.1),
    ("cosine_with_min_lr", "cosine_with_min_lr", 0, 9, 0.25),
    ("cosine", "cosine_with_min_lr", 5, 30, 0.1),  # axolotl: cosine + cosine_min_lr_ratio
]


def axolotl_cosine_min_lr(k, W, K, r):
    if k < W:
        return k / max(1, W)
    p = (k - W) / max(1, K - W)
    return (1 - r) * 0.5 * (1.0 + math.cos(math.pi * p)) + r


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/lr_golden.txt"
    lines = ["# schedule W K min_ratio k lambda  (tools/lr_golden.py; transformers get_scheduler)"]
    for name, hf, W, K, r in CASES:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        kw = {"min_lr_rate": r} if hf == "cosine_with_min_lr" else None
        sch = get_scheduler(hf, opt, num_warmup_steps=W, num_training_steps=K, scheduler_specific_kwargs=kw)
        for k in range(K + 2):
            v = sch.lr_lambdas[0](k)
            if r > 0:
                a = axolotl_cosine_min_lr(k, W, K, r)
                assert abs(a - v) < 1e-12, (name, k, a, v)
            lines.append(f"{name} {W} {K} {r!r} {k} {v!r}")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{out}: {len(lines) - 1} values")


if __name__ == "__main__":
    main()
