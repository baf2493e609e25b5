"""The loop both reference harnesses (tools/bench_hf.py, tools/bench_unsloth.py) time.

Nothing here imports torch, transformers or unsloth at module level: the Unsloth harness must
import unsloth before transformers/peft, and argument parsing (--help) must work without torch.

One optimizer step = `accum` micro-batches of `batch` rows of `seq` tokens, each
`(model(input_ids=x, labels=x).loss / accum).backward()`, then global-norm clipping at 1.0, AdamW
and zero_grad: the loop of ../shared/benchmarks/hf_bench.py. `warmup` steps run first (Unsloth
compiles its blocks on the first one), then the peak-memory counter is reset and `steps` steps are
timed, each between two torch.cuda.synchronize() calls. tokens/s = tokens per step / mean seconds
per timed step; peak = torch.cuda.max_memory_allocated() over the timed steps (it still counts the
weights and optimizer state, which stay allocated).

The rows come from --data (the pre-tokenized JSONL that tools/bench_gpu.sh writes for tern, so
every stack sees the same ids; rows are cycled) or, without it, from torch.randint.

TERN_REF_PROFILE=FILE in the environment: one more step after the timed ones runs under
torch.profiler, and FILE gets the GPU time of every kernel name summed (profile_step).
"""
import argparse
import json
import os
import platform
import sys
import time

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def parser(description):
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("model", help="HF model directory (config.json + safetensors)")
    ap.add_argument("--quant", default="nf4", choices=["nf4", "bf16", "f32"],
                    help="base weights: bitsandbytes nf4 with double quant and bf16 compute (default), "
                         "bf16, or f32 (CPU smoke tests)")
    ap.add_argument("--batch", type=int, default=1, help="rows per micro-batch (default 1)")
    ap.add_argument("--seq", type=int, default=2048, help="tokens per row (default 2048)")
    ap.add_argument("--accum", type=int, default=4, help="micro-batches per optimizer step (default 4)")
    ap.add_argument("--steps", type=int, default=3, help="timed optimizer steps (default 3)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (default 16)")
    ap.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 2 x rank)")
    ap.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    ap.add_argument("--data", default=None,
                    help="pre-tokenized JSONL ({\"input_ids\": [...]} a line) to take rows from")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"],
                    help="cuda (default) or cpu (smoke tests: no timing value, no peak memory)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the result object to this file")
    return ap


def check_args(a):
    for k in ("batch", "seq", "accum", "steps", "rank"):
        if getattr(a, k) < 1:
            sys.exit(f"--{k} must be >= 1 (got {getattr(a, k)})")
    if a.warmup < 0:
        sys.exit(f"--warmup must be >= 0 (got {a.warmup})")
    if a.alpha is None:
        a.alpha = 2.0 * a.rank
    if a.data is not None and not os.path.isfile(a.data):
        sys.exit(f"--data: {a.data}: no such file")
    return a


def load_rows(path, seq):
    """Rows of exactly `seq` ids from a pre-tokenized JSONL (shorter rows are skipped)."""
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                ids = json.loads(line)["input_ids"]
                if len(ids) >= seq:
                    rows.append(ids[:seq])
    if not rows:
        sys.exit(f"--data: {path}: no row of {seq} or more ids")
    return rows


def versions(names):
    import importlib.metadata as md
    out = {}
    for n in names:
        try:
            out[n] = md.version(n)
        except Exception:
            out[n] = None
    return out


def checkpointing(model):
    """Whether the model recomputes activations (transformers 5 renamed the attribute)."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
            try:
                v = getattr(model, name)
            except AttributeError:
                continue
            return bool(v)
    return None


def train(model, a, stack, load_s, extra=None):
    """Times the loop on `model` (already on the device, LoRA attached) and returns the result."""
    import torch

    dev = torch.device(a.device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        sys.exit("no trainable parameter: LoRA was not attached")
    opt = torch.optim.AdamW(params, lr=a.lr)
    V = model.config.vocab_size
    gen = torch.Generator(device="cpu").manual_seed(a.seed)
    rows = load_rows(a.data, a.seq) if a.data else None
    for r in rows or []:
        if max(r) >= V:
            sys.exit(f"--data: id {max(r)} is outside the vocabulary (0..{V - 1})")
    cursor = [0]

    def batch():
        if rows is None:
            x = torch.randint(0, V, (a.batch, a.seq), generator=gen)
        else:
            take = [rows[(cursor[0] + i) % len(rows)] for i in range(a.batch)]
            cursor[0] += a.batch
            x = torch.tensor(take, dtype=torch.long)
        return x.to(dev, non_blocking=True)

    def step():
        tot = torch.zeros((), device=dev)
        for _ in range(a.accum):
            x = batch()
            loss = model(input_ids=x, labels=x).loss
            (loss / a.accum).backward()
            tot += loss.detach() / a.accum
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return tot

    model.train()
    losses, warm = [], []
    for _ in range(a.warmup):
        sync()
        t = time.perf_counter()
        losses.append(float(step()))
        sync()
        warm.append(time.perf_counter() - t)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(a.steps):
        sync()
        t = time.perf_counter()
        l = step()
        sync()
        times.append(time.perf_counter() - t)
        losses.append(float(l))
    if cuda and os.environ.get("TERN_REF_PROFILE"):
        profile_step(step, sync, os.environ["TERN_REF_PROFILE"])
    tok = a.batch * a.seq * a.accum
    mean = sum(times) / len(times)
    res = dict(
        stack=stack, model=os.path.abspath(a.model), quant=a.quant, batch=a.batch, seq=a.seq,
        accum=a.accum, rank=a.rank, alpha=a.alpha, tokens_per_step=tok, warmup_steps=a.warmup,
        timed_steps=a.steps, s_per_step=round(mean, 4), step_s=[round(t, 4) for t in times],
        warmup_s=[round(t, 2) for t in warm], tokens_per_s=round(tok / mean, 1),
        peak_gib=round(torch.cuda.max_memory_allocated(dev) / 2**30, 3) if cuda else None,
        peak_reserved_gib=round(torch.cuda.max_memory_reserved(dev) / 2**30, 3) if cuda else None,
        load_s=round(load_s, 1), loss_first=round(losses[0], 4), loss_last=round(losses[-1], 4),
        trainable_params=sum(p.numel() for p in params),
        gradient_checkpointing=checkpointing(model),
        data=os.path.abspath(a.data) if a.data else "random",
        device=torch.cuda.get_device_name(dev) if cuda else platform.processor() or "cpu",
        python=platform.python_version(),
    )
    res.update(extra or {})
    return res


def profile_step(step, sync, path):
    """One more step under torch.profiler (after the timed ones, so they are not slowed): the GPU
    time of every kernel name summed, largest first, written to `path` as a table (ms, calls,
    share of the kernels' sum) under a line with the step's wall time and the kernels' sum."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    sync()
    t = time.perf_counter()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        step()
        sync()
    wall = time.perf_counter() - t
    sums = {}
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us, n = sums.get(e.name, (0.0, 0))
        dt = e.device_time if hasattr(e, "device_time") else e.cuda_time  # torch < 2.4: cuda_time
        sums[e.name] = (us + dt, n + 1)
    total = sum(us for us, _ in sums.values()) or 1.0
    with open(path, "w") as f:
        f.write(f"# profiled step: wall {wall * 1e3:.1f} ms (profiler on), kernels {total / 1e3:.1f} ms\n")
        f.write("# ms\tcalls\tshare\tkernel\n")
        for name, (us, n) in sorted(sums.items(), key=lambda kv: -kv[1][0]):
            f.write(f"{us / 1e3:.3f}\t{n}\t{us / total:.3f}\t{name[:160]}\n")


def emit(res, a):
    line = json.dumps(res)
    print("RESULT " + line, flush=True)
    if a.json:
        tmp = a.json + ".tmp"
        with open(tmp, "w") as f:
            f.write(line + "\n")
        os.replace(tmp, a.json)
