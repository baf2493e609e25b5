#!/usr/bin/env python3
"""Helpers of tools/bench_gpu.sh (standard library only).

    bench_util.py data OUT.jsonl --rows N --seq S --vocab V [--seed 0]
        N pre-tokenized rows ({"input_ids": [...]}) of S random ids in [0, V): full rows for tern
        (sequence_len S, no padding) and the same ids for the Python stacks (--data).
    bench_util.py record --out RUN.json --stack NAME --shape NAME --tokens-per-step N --log LOG
                         --rc RC --wall S [--tern-dir DIR] [--result REF.json] [--smi SMI.txt]
                         [--timeout S] [--label TEXT]
        One run's result: tern's from DIR/metrics.jsonl and the "mem" of its progress lines,
        a reference harness's from the JSON it wrote; on failure the error line of the log.
    bench_util.py meta OUT.json KEY=VALUE... [--versions torch,peft,...]
        The run's description and the installed versions of the named distributions.
    bench_util.py table OUT_DIR [--meta META.json]
        Merges OUT_DIR/runs/*.json into OUT_DIR/results.json and prints the table (markdown).
"""
import argparse
import glob
import json
import os
import random
import re
import sys


def cmd_data(a):
    rng = random.Random(a.seed)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        for _ in range(a.rows):
            f.write(json.dumps({"input_ids": [rng.randrange(a.vocab) for _ in range(a.seq)]},
                               separators=(",", ":")) + "\n")
    os.replace(tmp, a.out)


UNITS = {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}
# tern's progress line: "mem NET (peak device ALL, host H)": ALL is everything the backend
# allocated on the device (its scratch and workspaces included), the figure that compares with
# torch.cuda.max_memory_allocated; older binaries print only NET
MEM = re.compile(r"^step \d+/\d+ .*\bmem ([0-9.]+) (KiB|MiB|GiB|TiB)(?: \(peak device ([0-9.]+) (KiB|MiB|GiB|TiB))?")
DEVICE = re.compile(r"^  device +(.*?); memory: (.*)$")
PY_ERR = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)|AssertionError)\b.*")


def error_line(log, stack):
    """The line that says why a run failed: tern's `tern: ...`, Python's exception, else the last."""
    try:
        with open(log, errors="replace") as f:
            lines = [l.rstrip("\r\n") for l in f]
    except OSError as e:
        return f"no log: {e}"
    lines = [l.split("\r")[-1].strip() for l in lines]
    lines = [l for l in lines if l]
    pick = None
    for l in reversed(lines):
        if l.startswith("tern: ") or PY_ERR.match(l) or l.startswith("error:"):
            pick = l
            break
    if pick is None and lines:
        pick = lines[-1]
    pick = (pick or "empty log").replace("|", "/")
    return pick if len(pick) <= 200 else pick[:197] + "..."


def smi_peak(path):
    peak = None
    try:
        with open(path) as f:
            for l in f:
                l = l.strip().split(",")[0].strip()
                if l.isdigit():
                    peak = max(peak or 0, int(l))
    except OSError:
        return None
    return None if peak is None else round(peak / 1024, 3)  # MiB -> GiB


def tern_result(d, log, tokens_per_step):
    steps = []
    with open(os.path.join(d, "metrics.jsonl")) as f:
        for l in f:
            l = l.strip()
            if l:
                o = json.loads(l)
                if "step_s" in o and o.get("step", 0) > 0:
                    steps.append(o)
    if not steps:
        return None
    times = [o["step_s"] for o in steps]
    timed = times[1:] if len(times) > 1 else times  # the first step is the warm-up
    mean = sum(timed) / len(timed)
    peak, device, memory = None, None, None
    with open(log, errors="replace") as f:
        for l in f:
            for part in l.rstrip("\n").split("\r"):
                m = MEM.match(part)
                if m:
                    v, u = (m.group(3), m.group(4)) if m.group(3) else (m.group(1), m.group(2))
                    peak = max(peak or 0.0, float(v) * UNITS[u])
                m = DEVICE.match(part)
                if m:
                    device, memory = m.group(1), m.group(2)
    return dict(tokens_per_step=tokens_per_step, tokens_per_s=round(tokens_per_step / mean, 1),
                s_per_step=round(mean, 4), step_s=times, timed_steps=len(timed),
                warmup_steps=len(times) - len(timed),
                peak_gib=None if peak is None else round(peak / 2**30, 3),
                loss_first=steps[0].get("loss"), loss_last=steps[-1].get("loss"),
                metrics_tokens_per_s=steps[-1].get("tokens_per_s"), device=device,
                memory=memory)


def cmd_record(a):
    r = dict(stack=a.stack, kind=a.kind or a.stack, shape=a.shape, tokens_per_step=a.tokens_per_step, rc=a.rc,
             wall_s=round(a.wall, 1), log=a.log, label=a.label)
    res = None
    try:
        if a.tern_dir:
            res = tern_result(a.tern_dir, a.log, a.tokens_per_step)
            r["output_dir"] = a.tern_dir
        elif a.result and os.path.isfile(a.result):
            with open(a.result) as f:
                res = json.load(f)
            for k in ("stack", "kind", "shape", "log", "label"):
                res.pop(k, None)
    except (OSError, ValueError, KeyError) as e:
        r["parse_error"] = f"{type(e).__name__}: {e}"
    timed_out = a.timeout is not None and a.rc in (124, 137)
    if res:
        r.update(res)
        r["tokens_per_step"] = a.tokens_per_step
    if a.rc == 0 and res:
        r["status"] = "ok"
    elif res and r["kind"] == "tern" and timed_out:
        r["status"] = "partial"  # tern was stopped by the time limit after some steps
        r["error"] = f"partial: stopped by the time limit of {a.timeout:g} s"
    elif a.rc == 125 and error_line(a.log, a.stack).startswith("skipped:"):
        r["status"] = "skipped"
        r["error"] = error_line(a.log, a.stack)
    else:
        r["status"] = "failed"
        why = error_line(a.log, a.stack)
        if timed_out:
            why = f"timed out after {a.timeout:g} s; last: {why}"
        elif a.rc > 128 and a.rc != 125:
            why = f"killed by signal {a.rc - 128}; last: {why}"
        elif a.rc == 0:
            why = r.get("parse_error") or f"no result ({why})"
        r["error"] = why
    if a.smi:
        r["smi_peak_gib"] = smi_peak(a.smi)
    tmp = a.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(r, f)
    os.replace(tmp, a.out)
    print(f"{a.shape} {a.stack}: " + (
        f"{r['tokens_per_s']:,.1f} tokens/s, peak {fmt_gib(r.get('peak_gib'))} GiB" +
        (f"; {r['error']}" if r["status"] == "partial" else "")
        if r["status"] in ("ok", "partial") else
        ("FAILED: " if r["status"] == "failed" else "") + r["error"]))


def fmt_gib(v):
    return "—" if v is None else f"{v:.2f}" if v >= 0.1 else f"{v:.3g}"


def fmt_ratio(x, y):
    if x is None or y is None or y == 0:
        return "—"
    return f"{x / y:.3f}×"


def cmd_table(a):
    runs = []
    for p in sorted(glob.glob(os.path.join(a.dir, "runs", "*.json"))):
        with open(p) as f:
            runs.append(json.load(f))
    meta = {}
    if a.meta and os.path.isfile(a.meta):
        with open(a.meta) as f:
            meta = json.load(f)
    out = dict(meta=meta, runs=runs)
    tmp = os.path.join(a.dir, "results.json.tmp")
    with open(tmp, "w") as f:
        json.dump(out, f, indent=1)
    os.replace(tmp, os.path.join(a.dir, "results.json"))

    shapes = []
    for r in runs:
        if r["shape"] not in shapes:
            shapes.append(r["shape"])
    rows = [("shape", "tokens/step", "stack", "tokens/s", "peak GiB", "note")]
    for s in shapes:
        rs = [r for r in runs if r["shape"] == s]
        tps = rs[0]["tokens_per_step"]
        ok = {}
        for r in rs:
            good = r["status"] in ("ok", "partial")
            note = []
            if r.get("status") != "ok":
                note.append(("FAILED: " if r["status"] == "failed" else "") + r.get("error", ""))
            if good and r.get("smi_peak_gib") is not None:
                note.append(f"nvidia-smi {r['smi_peak_gib']:.2f} GiB")
            if good:
                n = r.get("timed_steps", 0)
                note.append(f"{n} timed step{'s' if n != 1 else ''}, {r.get('s_per_step', 0):.3f} s/step")
            if r.get("label"):
                note.append(r["label"])
            rows.append((s, f"{tps:,}", r["stack"], f"{r['tokens_per_s']:,.1f}" if good else "—",
                         fmt_gib(r.get("peak_gib")) if good else "—", "; ".join(note)))
            if good:
                ok[r["stack"]] = r
        terns = [r["stack"] for r in rs if r.get("kind") == "tern"]
        refs = [r["stack"] for r in rs if r.get("kind") != "tern"]
        pairs = [(t, x) for t in terns for x in refs]
        pairs += [(terns[i], terns[0]) for i in range(1, len(terns))]
        for t, x in pairs:
            a_, b_ = ok.get(t), ok.get(x)
            rows.append((s, f"{tps:,}", f"{t}/{x}",
                         fmt_ratio(a_ and a_["tokens_per_s"], b_ and b_["tokens_per_s"]),
                         fmt_ratio(a_ and a_.get("peak_gib"), b_ and b_.get("peak_gib")),
                         "speed and memory ratios" if a_ and b_ else "not measured on both sides"))
    w = [max(len(r[i]) for r in rows) for i in range(5)]
    left = (0, 2)  # shape and stack read left-aligned, the numbers right-aligned
    for i, r in enumerate(rows):
        cells = [r[j].ljust(w[j]) if j in left else r[j].rjust(w[j]) for j in range(5)] + [r[5]]
        print("| " + " | ".join(cells) + " |")
        if i == 0:
            seps = ["-" * (w[j] + 2) if j in left else "-" * (w[j] + 1) + ":" for j in range(5)]
            print("|" + "|".join(seps) + "|---|")


def cmd_meta(a):
    import importlib.metadata as md
    meta = {}
    for kv in a.kv:
        k, _, v = kv.partition("=")
        meta[k] = v
    vers = {}
    for n in filter(None, a.versions.split(",")):
        try:
            vers[n] = md.version(n)
        except Exception:
            vers[n] = None
    meta["python"] = sys.version.split()[0]
    meta["python_versions"] = vers
    meta["pythonpath"] = os.environ.get("PYTHONPATH", "")
    with open(a.out, "w") as f:
        json.dump(meta, f, indent=1)
    print("python " + meta["python"] + ": " + ", ".join(f"{k} {v or '-'}" for k, v in vers.items()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("data")
    d.add_argument("out")
    d.add_argument("--rows", type=int, required=True)
    d.add_argument("--seq", type=int, required=True)
    d.add_argument("--vocab", type=int, required=True)
    d.add_argument("--seed", type=int, default=0)
    r = sub.add_parser("record")
    r.add_argument("--out", required=True)
    r.add_argument("--stack", required=True)
    r.add_argument("--shape", required=True)
    r.add_argument("--tokens-per-step", type=int, required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--rc", type=int, required=True)
    r.add_argument("--wall", type=float, required=True)
    r.add_argument("--tern-dir")
    r.add_argument("--result")
    r.add_argument("--smi")
    r.add_argument("--timeout", type=float)
    r.add_argument("--label", default="")
    r.add_argument("--kind", help="tern for a tern run (default: the stack name)")
    t = sub.add_parser("table")
    t.add_argument("dir")
    t.add_argument("--meta")
    m = sub.add_parser("meta")
    m.add_argument("out")
    m.add_argument("kv", nargs="*", help="KEY=VALUE")
    m.add_argument("--versions", default="", help="distributions whose version to record")
    a = ap.parse_args()
    {"data": cmd_data, "record": cmd_record, "table": cmd_table, "meta": cmd_meta}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
