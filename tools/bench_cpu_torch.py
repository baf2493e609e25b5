#!/usr/bin/env python3
"""PyTorch + PEFT LoRA training on the CPU: the reference of tools/bench_cpu.sh.

Trains LoRA (r, alpha, every linear projection of the decoder, no dropout) on a model directory
with the rows of a pre-tokenized JSONL (bench_util.py data), fp32 throughout, AdamW, the loss of
every token (labels = input_ids), gradient clipping 1.0, gradient checkpointing when asked: the
recipe tern runs in the same script. Prints one JSON line and writes it to --out:
{"tokens_per_s", "step_s", "steps", "tokens_per_step", "threads", "torch", "transformers", "peft"}.

    tools/bench_cpu_torch.py --model DIR --data ROWS.jsonl [--batch 2] [--seq 256] [--steps 5]
        [--warmup 1] [--threads N] [--r 16] [--alpha 32] [--checkpointing 1] [--base f32|bf16]
        [--out RESULT.json]

tokens/s = batch x seq / the mean wall time of the timed steps (after --warmup steps).
--base bf16 keeps the frozen base in bf16 (the LoRA weights stay fp32), the closest PyTorch
has on a CPU to tern's NF4/ternary bases (bitsandbytes' 4-bit layers need a GPU).
"""
import argparse
import json
import os
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--alpha", type=int, default=32)
    ap.add_argument("--checkpointing", type=int, default=1)
    ap.add_argument("--base", default="f32", choices=["f32", "bf16"])
    ap.add_argument("--out")
    a = ap.parse_args()

    import torch
    import transformers
    import peft
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    with open(a.data) as f:
        for line in f:
            ids = json.loads(line)["input_ids"][: a.seq]
            if len(ids) == a.seq:
                rows.append(ids)
    need = a.batch * (a.warmup + a.steps)
    if len(rows) < a.batch:
        sys.exit(f"bench_cpu_torch: {a.data} has {len(rows)} rows of {a.seq} ids; need {a.batch}")
    dtype = torch.float32 if a.base == "f32" else torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=dtype, attn_implementation="sdpa")
    model.config.use_cache = False
    if a.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    cfg = peft.LoraConfig(r=a.r, lora_alpha=a.alpha, lora_dropout=0.0, target_modules="all-linear",
                          task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, cfg)
    for n, p in model.named_parameters():
        if p.requires_grad:
            p.data = p.data.float()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)

    times = []
    for step in range(a.warmup + a.steps):
        k = (step * a.batch) % max(1, len(rows) - a.batch + 1)
        x = torch.tensor(rows[k:k + a.batch], dtype=torch.long)
        t0 = time.perf_counter()
        out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        dt = time.perf_counter() - t0
        if step >= a.warmup:
            times.append(dt)
        print(f"step {step + 1}: loss {out.loss.item():.4f} {dt:.3f} s", file=sys.stderr)
    step_s = sum(times) / len(times)
    res = {
        "tokens_per_s": a.batch * a.seq / step_s,
        "step_s": step_s,
        "steps": len(times),
        "tokens_per_step": a.batch * a.seq,
        "threads": a.threads,
        "base": a.base,
        "checkpointing": bool(a.checkpointing),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "needed_rows": need,
    }
    line = json.dumps(res)
    print(line)
    if a.out:
        with open(a.out, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
