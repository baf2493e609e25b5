#!/usr/bin/env python3
"""Reads tern's TensorBoard event files with the `tensorboard` package (pip install tensorboard)
and checks them against metrics.jsonl: every train/* scalar tern logged at a step equals the
metrics line of that step (to float32 and printing precision), eval/loss likewise.

usage: tools/tb_check.py OUTPUT_DIR      (a run with use_tensorboard: true)
"""
import glob
import json
import math
import sys

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    files = sorted(glob.glob(f"{out}/runs/*/events.out.tfevents.*"))
    if not files:
        sys.exit(f"no event file under {out}/runs/")
    run_dir = files[-1].rsplit("/", 1)[0]
    acc = EventAccumulator(run_dir, size_guidance={"scalars": 0})
    acc.Reload()
    tags = acc.Tags()["scalars"]
    steps, evals = {}, {}
    with open(f"{out}/metrics.jsonl") as f:
        for line in f:
            m = json.loads(line)
            (evals if "eval_loss" in m else steps)[m["step"]] = m
    want = {
        "train/loss": ("loss", steps),
        "train/learning_rate": ("lr", steps),
        "train/grad_norm": ("grad_norm", steps),
        "train/epoch": ("epoch", steps),
        "train/tokens_per_second": ("tokens_per_s", steps),
        "eval/loss": ("eval_loss", evals),
    }
    bad = 0
    for tag, (key, table) in want.items():
        if tag not in tags:
            if table:
                print(f"FAIL {tag}: missing (tags: {tags})")
                bad += 1
            continue
        events = acc.Scalars(tag)
        for e in events:
            ref = table.get(e.step, {}).get(key)
            # metrics.jsonl prints 6 decimals (tokens/s one, epoch four): float32 and that rounding
            tol = {"tokens_per_s": 0.051, "epoch": 5.1e-5}.get(key, 2e-6)
            if ref is None or not math.isclose(e.value, ref, rel_tol=1e-6, abs_tol=tol):
                print(f"FAIL {tag} step {e.step}: {e.value} vs metrics.jsonl {ref}")
                bad += 1
        print(f"{tag}: {len(events)} events, steps {events[0].step}..{events[-1].step}"
              if events else f"{tag}: none")
    if len(acc.Scalars("train/loss")) != len(steps):
        print(f"FAIL train/loss has {len(acc.Scalars('train/loss'))} events, metrics.jsonl {len(steps)} steps")
        bad += 1
    print(f"{files[-1]}: {'OK' if not bad else f'{bad} mismatches'} (read with tensorboard's EventAccumulator)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
