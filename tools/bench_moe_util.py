#!/usr/bin/env python3
"""Helpers of tools/bench_moe_12gb.sh (the standard library, and torch for h2d only).

    bench_moe_util.py h2d OUT.json [--gib 1] [--reps 5]
        Host-to-device copy rate of GPU 0 (torch): pinned and pageable host memory, GB/s
        (1 GB = 1e9 bytes), the best of --reps copies of --gib GiB each.
    bench_moe_util.py tern OUT.json --tern-dir DIR --log LOG --run RUN.json
        tern's stream figures per optimizer step (the mean over the steps after the first):
        bytes from host and disk, wait and read seconds, expert bytes; its residency line and
        peak device bytes (metrics.jsonl), merged into RUN.json (bench_util.py record's file).
    bench_moe_util.py table OUT_DIR [--rates RATES.json] [--device-budget BYTES]
        Merges OUT_DIR/runs/*.json into OUT_DIR/results.json and prints the table (markdown):
        per shape and stack tokens/s, s/step, peak device memory against the budget, bytes per
        step by tier, the I/O bound of tokens/s the measured rates set, the share of it reached,
        and tern against the reference stack.

The bound: a step must move its disk-tier bytes from the disk and all streamed bytes over PCIe,
so it takes at least max(disk / disk_rate, (host + disk) / h2d_rate) seconds (the two overlap at
best; compute is left out): bound tokens/s = tokens per step / that time.
"""
import argparse
import glob
import json
import os
import re
import sys
import time


def cmd_h2d(a):
    import torch
    out = {"h2d_gib": a.gib}
    if not torch.cuda.is_available():
        out["error"] = "torch sees no CUDA device"
    else:
        n = int(a.gib * 2**30)
        dev = torch.empty(n, dtype=torch.uint8, device="cuda:0")
        for kind, pin in (("pinned", True), ("pageable", False)):
            host = torch.empty(n, dtype=torch.uint8, pin_memory=pin)
            host.fill_(1)
            best = None
            for _ in range(a.reps):
                torch.cuda.synchronize()
                t = time.perf_counter()
                dev.copy_(host, non_blocking=pin)
                torch.cuda.synchronize()
                dt = time.perf_counter() - t
                best = dt if best is None else min(best, dt)
            out[f"h2d_{kind}_gbs"] = round(n / best / 1e9, 2)
            del host
        out["device"] = torch.cuda.get_device_name(0)
    with open(a.out, "w") as f:
        json.dump(out, f)
    print(" ".join(f"{k} {v}" for k, v in out.items()))


RESIDENCY = re.compile(r"residency (\d+) device, (\d+) host, (\d+) disk layers")


def cmd_tern(a):
    steps = []
    try:
        with open(os.path.join(a.tern_dir, "metrics.jsonl")) as f:
            for l in f:
                l = l.strip()
                if l:
                    o = json.loads(l)
                    if "step_s" in o and o.get("step", 0) > 0:
                        steps.append(o)
    except OSError:
        pass
    with open(a.run) as f:
        r = json.load(f)
    timed = steps[1:] if len(steps) > 1 else steps
    if timed:
        mean = lambda k: sum(o.get(k, 0) for o in timed) / len(timed)  # noqa: E731
        r["stream"] = {k: round(mean(k), 4) for k in (
            "stream_host_bytes", "stream_disk_bytes", "stream_wait_s", "stream_read_s",
            "stream_expert_bytes", "stream_expert_whole_bytes", "stream_expert_loads",
            "stream_expert_hits")}
        r["peak_device_bytes"] = max(o.get("peak_device_bytes", 0) for o in steps)
        r["peak_host_bytes"] = max(o.get("peak_host_bytes", 0) for o in steps)
    try:
        with open(a.log, errors="replace") as f:
            for l in f:
                m = RESIDENCY.search(l)
                if m:
                    r["residency"] = dict(zip(("device", "host", "disk"), map(int, m.groups())))
                    r["residency_line"] = l.strip()
                    break
    except OSError:
        pass
    with open(a.run + ".tmp", "w") as f:
        json.dump(r, f)
    os.replace(a.run + ".tmp", a.run)


def last_error(log):
    """The last exception line of a Python log (or its last line)."""
    try:
        with open(log, errors="replace") as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError as e:
        return f"no log: {e}"
    for l in reversed(lines):
        if re.match(r"^([A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt))\b", l):
            return l[:200]
    return lines[-1][:200] if lines else "empty log"


def cmd_ref(a):
    """One reference run (tools/bench_hf_offload.py's JSON, which it rewrites after every step)."""
    res = {}
    try:
        with open(a.result) as f:
            res = json.load(f)
    except (OSError, ValueError):
        pass
    r = dict(res, kind="ref", shape=a.shape, label=a.label, rc=a.rc, wall_s=round(a.wall, 1), log=a.log)
    timed_out = a.rc in (124, 137)
    if a.cgroup_peak:
        r["cgroup_peak_gib"] = round(a.cgroup_peak / 2**30, 3)
    if a.rc == 0 and res.get("status") == "ok":
        r["status"] = "ok"
    elif res.get("step_s") and timed_out:
        r["status"] = "partial"
        r["error"] = f"stopped by the time limit of {a.timeout:g} s after {len(res['step_s'])} step(s)"
    else:
        r["status"] = "failed"
        why = res.get("error") or last_error(a.log)
        if timed_out:
            why = f"timed out after {a.timeout:g} s while {res.get('status', 'starting')}; last: {last_error(a.log)}"
        elif a.rc > 128:
            why = f"killed by signal {a.rc - 128} (out of memory?) while {res.get('status', 'starting')}; last: {why}"
        r["error"] = why
        if not res.get("step_s"):
            r.pop("tokens_per_s", None)
    with open(a.out + ".tmp", "w") as f:
        json.dump(r, f)
    os.replace(a.out + ".tmp", a.out)
    print(f"{a.label}: {r['status']}" + (f", {r['tokens_per_s']} tokens/s" if r.get("tokens_per_s") else "")
          + (f", peak {r['peak_gib']} GiB" if r.get("peak_gib") is not None else "")
          + (f" ({r['error']})" if r.get("error") else ""))


def fmt(v, spec="{:,.1f}"):
    return "—" if v is None else spec.format(v)


def cmd_table(a):
    runs = []
    for p in sorted(glob.glob(os.path.join(a.dir, "runs", "*.json"))):
        with open(p) as f:
            runs.append(json.load(f))
    rates = {}
    if a.rates and os.path.isfile(a.rates):
        with open(a.rates) as f:
            rates = json.load(f)
    disk, h2d = rates.get("disk_read_gbs"), rates.get("h2d_pinned_gbs")
    for r in runs:
        s = r.get("stream")
        if r.get("kind") == "tern" and s and disk:
            t = s["stream_disk_bytes"] / (disk * 1e9)  # without a GPU (h2d not measured): the disk alone
            if h2d:
                t = max(t, (s["stream_host_bytes"] + s["stream_disk_bytes"]) / (h2d * 1e9))
            if t > 0:
                r["bound_tokens_per_s"] = round(r["tokens_per_step"] / t, 1)
                if r.get("tokens_per_s"):
                    r["of_bound"] = round(r["tokens_per_s"] / r["bound_tokens_per_s"], 3)
    with open(os.path.join(a.dir, "results.json"), "w") as f:
        json.dump({"rates": rates, "runs": runs}, f, indent=1)
    budget = a.device_budget
    print(f"Rates: disk read {fmt(disk, '{:.2f}')} GB/s ({rates.get('disk_how', '?')}), host→device "
          f"{fmt(h2d, '{:.2f}')} GB/s pinned / {fmt(rates.get('h2d_pageable_gbs'), '{:.2f}')} pageable; "
          f"page cache: {rates.get('ram_limit', '?')}")
    print("tern's disk read GB/s = disk-tier bytes / the seconds tern spent copying them out of the mapping "
          "(page faults): far above the measured disk rate means the page cache served them. RAM peak = the "
          "cgroup's peak where there is one (it may not count pinned host memory), else the process's maxrss.")
    print()
    print("| shape | stack | status | tokens/s | s/step | peak device GiB (budget "
          f"{fmt(budget / 2**30 if budget else None, '{:.2f}')}) | residency dev/host/disk | host GB/step | "
          "disk GB/step | tern's disk read GB/s | RAM peak GiB | I/O bound tokens/s | of bound | tern / ref |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    ref = {}
    for r in runs:
        if r.get("kind") != "tern" and r.get("tokens_per_s") and r.get("status") in ("ok", "partial"):
            ref.setdefault(r["shape"], r["tokens_per_s"])
    for r in runs:
        st = r.get("status", "?")
        if r.get("error"):
            st += ": " + r["error"].replace("|", "/")[:160]
        peak = r.get("peak_device_bytes")
        peak = peak / 2**30 if peak else r.get("peak_gib")
        smi = r.get("smi_peak_gib")
        peak_s = fmt(peak, "{:.2f}") + (f" (smi {smi:.2f})" if smi else "")
        if peak is not None and budget:
            peak_s += " ✓" if peak * 2**30 <= budget else " ✗ over"
        res = r.get("residency")
        res_s = f"{res['device']}/{res['host']}/{res['disk']} layers" if res else "—"
        pl = r.get("placement_params")
        if pl and not res:  # accelerate's placement, by parameters
            tot = sum(pl.values()) or 1
            res_s = " / ".join(f"{k} {100 * v / tot:.0f} %" for k, v in sorted(pl.items()))
        s = r.get("stream") or {}
        tps = r.get("tokens_per_s") if st.split(":")[0] in ("ok", "partial") else None
        vs = "—"
        if r.get("kind") == "tern" and tps and ref.get(r["shape"]):
            vs = f"{tps / ref[r['shape']]:.1f}×"
        print(f"| {r.get('shape')} | {r.get('label') or r.get('stack')} | {st} | {fmt(tps)} | "
              f"{fmt(r.get('s_per_step'), '{:.2f}')} | {peak_s} | {res_s} | "
              f"{fmt(s.get('stream_host_bytes', 0) / 1e9 if s else None, '{:.2f}')} | "
              f"{fmt(s.get('stream_disk_bytes', 0) / 1e9 if s else None, '{:.2f}')} | "
              f"{fmt(s['stream_disk_bytes'] / s['stream_read_s'] / 1e9 if s.get('stream_read_s') else None, '{:.2f}')} | "
              f"{fmt(r.get('cgroup_peak_gib') or r.get('host_peak_gib'), '{:.2f}')} | "
              f"{fmt(r.get('bound_tokens_per_s'))} | "
              f"{fmt(r.get('of_bound') * 100 if r.get('of_bound') else None, '{:.0f} %')} | {vs} |")
    print()
    for l in targets(runs, ref):
        print(l)


def targets(runs, ref):
    """Issue 12's targets, one line per tern run."""
    out = []
    for r in runs:
        if r.get("kind") != "tern":
            continue
        tps = r.get("tokens_per_s") if r.get("status") in ("ok", "partial") else None
        yn = lambda c: "—" if c is None else ("yes" if c else "NO")  # noqa: E731
        rt = ref.get(r.get("shape"))
        out.append(f"targets, {r.get('shape')} {r.get('label')}: ≥ 100 tokens/s: {yn(None if tps is None else tps >= 100)}; "
                   f"≥ 5× the reference: {yn(None if not (tps and rt) else tps >= 5 * rt)}"
                   f"{'' if rt else ' (no reference tokens/s)'}; ≥ 80 % of the I/O bound: "
                   f"{yn(None if r.get('of_bound') is None else r['of_bound'] >= 0.8)}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    h = sub.add_parser("h2d")
    h.add_argument("out")
    h.add_argument("--gib", type=float, default=1.0)
    h.add_argument("--reps", type=int, default=5)
    t = sub.add_parser("tern")
    t.add_argument("--tern-dir", required=True)
    t.add_argument("--log", required=True)
    t.add_argument("--run", required=True)
    r = sub.add_parser("ref")
    r.add_argument("--out", required=True)
    r.add_argument("--result", required=True)
    r.add_argument("--log", required=True)
    r.add_argument("--rc", type=int, required=True)
    r.add_argument("--wall", type=float, required=True)
    r.add_argument("--timeout", type=float, default=None)
    r.add_argument("--shape", required=True)
    r.add_argument("--label", required=True)
    r.add_argument("--cgroup-peak", type=float, default=None)
    b = sub.add_parser("table")
    b.add_argument("dir")
    b.add_argument("--rates")
    b.add_argument("--device-budget", type=float, default=None)
    a = ap.parse_args()
    {"h2d": cmd_h2d, "tern": cmd_tern, "ref": cmd_ref, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
