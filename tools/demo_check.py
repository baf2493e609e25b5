#!/usr/bin/env python3
"""Check that the demo can succeed: LoRA-fine-tune demo/model on demo/data with configs/demo.yaml's
hyper-parameters in PyTorch + PEFT, and report eval loss and task accuracy before and after.

The data path follows tern's (src/data/data.c): alpaca prompt strings, BOS + prompt (label -100
unless train_on_inputs) + output + EOS; the samples are shuffled with splitmix64 from the seed (the
same Fisher-Yates as tern, so the validation split is the same samples), the first val_set_size
are held out, the rest are packed next-fit into rows of sequence_len. A packed row is computed here
as its samples padded side by side (same positions, no attention across samples, same loss sum),
so one optimizer step sees exactly the tokens tern's step sees. The loss is normalised over the
trained tokens of the whole accumulation window; AdamW (PyTorch), warmup + cosine, global-norm
clipping, as tern does.

Accuracy: greedy decoding of each prompt in demo/data/eval.jsonl until EOS (at most 8 tokens),
exact match with "output", per task.

Usage: python3 tools/demo_check.py [--config configs/demo.yaml] [--set key=value ...] [--device cpu]
"""
import argparse
import json
import math
import os
import sys
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_demo import ALPACA_NO_INPUT, ALPACA_WITH_INPUT  # noqa: E402

MASK64 = (1 << 64) - 1


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def tern_shuffle(v, seed):
    state = seed & MASK64
    for i in range(len(v) - 1, 0, -1):
        state, z = splitmix64(state)
        j = z % (i + 1)
        v[i], v[j] = v[j], v[i]


def prompt_of(x):
    if x.get("input"):
        return ALPACA_WITH_INPUT.format(x["instruction"], x["input"])
    return ALPACA_NO_INPUT.format(x["instruction"])


def encode_sample(tok, x, bos, eos, train_on_inputs):
    p = tok.encode(prompt_of(x), add_special_tokens=False).ids
    o = tok.encode(x["output"], add_special_tokens=False).ids
    ids = [bos] + p + o + [eos]
    labels = ids[:] if train_on_inputs else [-100] * (1 + len(p)) + o + [eos]
    return ids, labels


def next_fit(samples, S):
    rows, cur, used = [], [], 0
    for s in samples:
        n = min(len(s[0]), S)
        if cur and used + n > S:
            rows.append(cur)
            cur, used = [], 0
        cur.append((s[0][:n], s[1][:n]))
        used += n
    if cur:
        rows.append(cur)
    return rows


def batch_of(rows, pad, device):
    import torch

    samples = [s for r in rows for s in r]
    L = max(len(s[0]) for s in samples)
    ids = torch.full((len(samples), L), pad, dtype=torch.long)
    lab = torch.full((len(samples), L), -100, dtype=torch.long)
    att = torch.zeros((len(samples), L), dtype=torch.long)
    for i, (a, b) in enumerate(samples):
        ids[i, : len(a)] = torch.tensor(a)
        lab[i, : len(b)] = torch.tensor(b)
        att[i, : len(a)] = 1
    return ids.to(device), lab.to(device), att.to(device)


def loss_sum(model, ids, lab, att):
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=att).logits.float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), lab[:, 1:].reshape(-1),
                           ignore_index=-100, reduction="sum")


def eval_loss(model, rows, pad, device):
    import torch

    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(rows), 8):
            ids, lab, att = batch_of(rows[i: i + 8], pad, device)
            tot += loss_sum(model, ids, lab, att).item()
            n += int((lab[:, 1:] != -100).sum())
    return tot / max(1, n)


def accuracy(model, tok, items, bos, eos, device, show=0):
    import torch

    per, examples = {}, []
    with torch.no_grad():
        for x in items:
            ids = [bos] + tok.encode(prompt_of(x), add_special_tokens=False).ids
            t = torch.tensor([ids], device=device)
            out = []
            for _ in range(8):
                nxt = int(model(input_ids=t).logits[0, -1].argmax())
                if nxt == eos:
                    break
                out.append(nxt)
                t = torch.cat([t, torch.tensor([[nxt]], device=device)], 1)
            got = tok.decode(out)
            ok = got == x["output"]
            k = x.get("task", "all")
            c = per.setdefault(k, [0, 0])
            c[0] += ok
            c[1] += 1
            if len(examples) < show:
                examples.append(f"{x['instruction']} | {x['input']} -> {got!r} (want {x['output']!r})")
    total = sum(c[0] for c in per.values()) / max(1, sum(c[1] for c in per.values()))
    return total, {k: c[0] / c[1] for k, c in sorted(per.items())}, examples


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/demo.yaml")
    ap.add_argument("--set", action="append", default=[], help="override a config key (YAML value)")
    ap.add_argument("--eval", default=None, help="accuracy set (default: <data dir>/eval.jsonl)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--show", type=int, default=6, help="print this many eval answers")
    a = ap.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model
    from tokenizers import Tokenizer
    from transformers import LlamaForCausalLM

    torch.set_num_threads(a.threads)
    with open(a.config) as f:
        c = yaml.safe_load(f)
    for kv in a.set:
        k, v = kv.split("=", 1)
        c[k] = yaml.safe_load(v)
    seed = c.get("seed", 42)
    torch.manual_seed(seed)
    S = c.get("sequence_len", 2048)
    mbs, ga = c.get("micro_batch_size", 1), c.get("gradient_accumulation_steps", 1)
    lr = float(c.get("learning_rate", 2e-4))
    r, alpha = c.get("lora_r", 8), c.get("lora_alpha", 16)
    targets = (["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
               if c.get("lora_target_linear") else c.get("lora_target_modules") or ["q_proj", "v_proj"])
    tok = Tokenizer.from_file(os.path.join(c["base_model"], "tokenizer.json"))
    tcfg = json.load(open(os.path.join(c["base_model"], "tokenizer_config.json")))
    bos, eos = tok.token_to_id(tcfg["bos_token"]), tok.token_to_id(tcfg["eos_token"])

    samples = []
    for ds in c["datasets"]:
        assert ds.get("type") == "alpaca", "demo_check reads alpaca datasets only"
        with open(ds["path"]) as f:
            samples += [json.loads(line) for line in f if line.strip()]
    enc = [encode_sample(tok, x, bos, eos, c.get("train_on_inputs", False)) for x in samples]
    tern_shuffle(enc, seed)
    vs = c.get("val_set_size", 0) or 0
    n_val = math.ceil(vs * len(enc)) if vs < 1 else int(vs)
    pack = c.get("sample_packing", False)
    layout = (lambda v: next_fit(v, S)) if pack else (lambda v: [[(s[0][:S], s[1][:S])] for s in v])
    val_rows, train_rows = layout(enc[:n_val]), layout(enc[n_val:])
    rows_per_step = mbs * ga
    steps_per_epoch = math.ceil(len(train_rows) / rows_per_step)
    steps = c.get("max_steps") or math.ceil(c.get("num_epochs", 1) * steps_per_epoch)
    warm = c.get("warmup_steps") or int(math.ceil((c.get("warmup_ratio") or 0) * steps))
    trained_tok = sum(len(s[0]) for rr in train_rows for s in rr)
    print(f"data: {len(samples)} samples, {n_val} held out ({len(val_rows)} rows); train "
          f"{len(train_rows)} rows of {S} ({trained_tok} tokens, {trained_tok / len(train_rows):.0f}"
          f" per row); {steps} steps of {rows_per_step} rows = {steps * rows_per_step} rows = "
          f"{steps * rows_per_step * S} row tokens ({steps / steps_per_epoch:.2f} epochs)", flush=True)

    base = LlamaForCausalLM.from_pretrained(c["base_model"], torch_dtype=torch.float32).to(a.device)
    base.eval()
    evals_path = a.eval or os.path.join(os.path.dirname(c["datasets"][0]["path"]), "eval.jsonl")
    with open(evals_path) as f:
        evals = [json.loads(line) for line in f if line.strip()]
    t0 = time.time()
    l0 = eval_loss(base, val_rows, eos, a.device)
    acc0, per0, ex0 = accuracy(base, tok, evals, bos, eos, a.device, a.show)
    print(f"before: eval loss {l0:.4f}, accuracy {acc0:.3f} on {len(evals)} ({time.time() - t0:.0f}s)")
    print("  per task: " + ", ".join(f"{k} {v:.2f}" for k, v in per0.items()))
    for e in ex0:
        print("  " + e)

    lcfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=c.get("lora_dropout", 0.0) or 0.0,
                      target_modules=targets, use_rslora=bool(c.get("use_rslora")), bias="none",
                      task_type="CAUSAL_LM")
    model = get_peft_model(base, lcfg)
    params = [p for p in model.parameters() if p.requires_grad]
    print(f"LoRA: r {r}, alpha {alpha}, {sum(p.numel() for p in params)} trainable parameters on "
          f"{targets}", flush=True)
    opt = torch.optim.AdamW(params, lr=lr, betas=(c.get("adam_beta1", 0.9), c.get("adam_beta2", 0.999)),
                            eps=float(c.get("adam_epsilon", 1e-8)), weight_decay=c.get("weight_decay", 0.0))
    sched = c.get("lr_scheduler", "cosine")

    def lr_at(s):
        if s < warm:
            return lr * s / warm
        prog = (s - warm) / max(1, steps - warm)
        return lr * (0.5 * (1 + math.cos(math.pi * prog)) if sched == "cosine" else
                     1 - prog if sched == "linear" else 1.0)

    clip = c.get("max_grad_norm", 1.0)
    eval_every = c.get("eval_steps") or 0
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train_rows), generator=g).tolist()
    pos = 0
    model.train()
    t0 = time.time()
    for s in range(steps):
        window = []
        for _ in range(rows_per_step):
            if pos == len(order):
                order = torch.randperm(len(train_rows), generator=g).tolist()
                pos = 0
            window.append(train_rows[order[pos]])
            pos += 1
        n_tr = sum(sum(1 for t in smp[1][1:] if t != -100) for rr in window for smp in rr)
        opt.zero_grad(set_to_none=True)
        tot = 0.0
        for m in range(ga):
            ids, lab, att = batch_of(window[m * mbs:(m + 1) * mbs], eos, a.device)
            loss = loss_sum(model, ids, lab, att) / max(1, n_tr)
            loss.backward()
            tot += loss.item()
        gn = torch.nn.utils.clip_grad_norm_(params, clip if clip else float("inf")).item()
        for grp in opt.param_groups:
            grp["lr"] = lr_at(s)
        opt.step()
        line = f"step {s + 1}/{steps} loss {tot:.4f} lr {lr_at(s):.2e} grad_norm {gn:.3f}"
        if eval_every and ((s + 1) % eval_every == 0) and s + 1 < steps:
            model.eval()
            line += f" eval_loss {eval_loss(model, val_rows, eos, a.device):.4f}"
            model.train()
        print(line, flush=True)
    model.eval()
    l1 = eval_loss(model, val_rows, eos, a.device)
    acc1, per1, ex1 = accuracy(model, tok, evals, bos, eos, a.device, a.show)
    print(f"after: eval loss {l1:.4f}, accuracy {acc1:.3f} on {len(evals)} "
          f"(training {time.time() - t0:.0f}s)")
    print("  per task: " + ", ".join(f"{k} {v:.2f}" for k, v in per1.items()))
    for e in ex1:
        print("  " + e)
    print(json.dumps({"eval_loss_before": round(l0, 4), "eval_loss_after": round(l1, 4),
                      "accuracy_before": round(acc0, 4), "accuracy_after": round(acc1, 4),
                      "per_task_after": per1, "steps": steps, "row_tokens": steps * rows_per_step * S,
                      "tokens": trained_tok * steps * rows_per_step / len(train_rows)}))


if __name__ == "__main__":
    main()
