#!/usr/bin/env python3
"""Checks a LoRA adapter (e.g. one written by `tern train`) with transformers + PEFT.

Loss of base + adapter on pre-tokenized rows, as JSON on stdout:

    python3 tools/check_adapter.py --model DIR --adapter DIR --data data.safetensors [--rows a:b]
        [--micro-batch 2] [--base-format f32|nf4-dq]

  DIR is loaded with AutoModelForCausalLM in float32 (attn_implementation="eager"), the adapter with
  PeftModel.from_pretrained. --data is a safetensors file with input_ids, labels (transformers-style,
  unshifted, -100 = not trained) and attention_mask, I32 [n, S] (tests/data/golden/<case>/
  data.safetensors), or a pre-tokenized JSONL file ({"input_ids", "labels"?} a line; rows are
  right-padded to the longest). The loss is the summed token cross-entropy of rows a..b-1 (targets =
  labels shifted by one) divided by the number of trained targets in those rows. --base-format
  nf4-dq first replaces the q/k/v/o/gate/up/down base weights by dequantize(quantize_nf4(W))
  (bitsandbytes' algorithm, double quantization, blocksize 64; tools/nf4_golden.py), as the golden
  llama_nf4 case does; with "auto" (the default) that happens when a golden.json beside --data
  says base_format "nf4-dq". --no-adapter gives the base model's loss. An adapter with
  modules_to_save (embed_tokens, lm_head trained in full) is loaded as PEFT loads it; the output's
  "modules_to_save" gives, per module, max |loaded weight - file tensor| (0 when PEFT took the
  file's tensor for that module) so a name PEFT did not match shows up as a non-zero difference.
  A BitNet model (config.json quantization_config {quant_method: bitnet, ...}) loads as
  transformers makes it: its projections are AutoBitLinear (online: ternary weights and 8-bit
  per-token activations computed in the forward; offline: quantized weights + weight_scale) or
  BitLinear (inference only: not an nn.Linear, PEFT cannot wrap it); the output's "bitnet" gives
  the quantization_config, how many projections are AutoBitLinear / BitLinear and how many of them
  PEFT wrapped with LoRA, so a load that fell back to plain Linears shows up (base_format
  "bitnet-<linear_class>-<mode>").

Differences between two adapters, as JSON:

    python3 tools/check_adapter.py --adapter DIR --compare-adapter DIR2

  For every tensor: max |a - b|, max |a - b| / max |b|, the relative Frobenius error ||a - b|| / ||b||;
  tensors present in only one of them and adapter_config.json fields that differ (r, lora_alpha,
  target_modules, use_rslora, lora_dropout, bias, task_type) are listed. Exit status 1 when the
  names differ.

    pip install torch transformers peft safetensors numpy
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch


def load_rows(path):
    if path.endswith(".jsonl"):
        rows = []
        with open(path) as f:
            for line in f:
                if line.strip():
                    o = json.loads(line)
                    ids = o["input_ids"]
                    rows.append((ids, o.get("labels", ids)))
        S = max(len(r[0]) for r in rows)
        n = len(rows)
        ids = torch.zeros((n, S), dtype=torch.long)
        lab = torch.full((n, S), -100, dtype=torch.long)
        mask = torch.zeros((n, S), dtype=torch.long)
        for i, (a, b) in enumerate(rows):
            ids[i, :len(a)] = torch.tensor(a)
            lab[i, :len(b)] = torch.tensor(b)
            mask[i, :len(a)] = 1
        return ids, lab, mask
    from safetensors.torch import load_file
    t = load_file(path)
    ids = t["input_ids"].long()
    lab = t["labels"].long()
    mask = t["attention_mask"].long() if "attention_mask" in t else torch.ones_like(ids)
    return ids, lab, mask


def dequant_nf4_base(model):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import nf4_golden
    dmap = nf4_golden.dynamic_map(fused=True)
    names = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    n = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in names:
                x = mod.weight.detach().float().cpu().numpy().reshape(-1)
                packed, absmax = nf4_golden.nf4_quantize(x, 64)
                _q, _nest, _off, rec = nf4_golden.double_quant(absmax, dmap)
                codes = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:x.size]
                deq = (nf4_golden.NF4_CODE[codes] * np.repeat(rec, 64)[:x.size]).astype(np.float32)
                mod.weight.copy_(torch.from_numpy(deq.reshape(mod.weight.shape)))
                n += 1
    return n


def want_nf4(args):
    if args.base_format != "auto":
        return args.base_format == "nf4-dq"
    g = os.path.join(os.path.dirname(os.path.abspath(args.data)), "golden.json")
    if os.path.exists(g):
        with open(g) as f:
            if json.load(f).get("base_format") == "nf4-dq":
                return True
    return False


def bitnet_info(model, qcfg):
    """The quantized projections of a BitNet model, and how many PEFT wrapped (None: not BitNet)."""
    if not qcfg or qcfg.get("quant_method") != "bitnet":
        return None
    from transformers.integrations import bitnet as tb
    auto = [m for m in model.modules() if isinstance(m, tb.AutoBitLinear)]
    bitl = [m for m in model.modules() if isinstance(m, tb.BitLinear)]
    wrapped = sum(1 for m in model.modules() if hasattr(m, "base_layer") and hasattr(m, "lora_A")
                  and isinstance(m.base_layer, (tb.AutoBitLinear, tb.BitLinear)))
    return {"quantization_config": qcfg, "autobitlinear": len(auto),
            "autobitlinear_online": sum(1 for m in auto if m.online_quant), "bitlinear": len(bitl),
            "lora_wrapped": wrapped}


def loss_cmd(args):
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    import transformers as tf
    ids, lab, mask = load_rows(args.data)
    a, b = 0, ids.shape[0]
    if args.rows:
        sa, sb = args.rows.split(":")
        a = int(sa) if sa else 0
        b = int(sb) if sb else ids.shape[0]
    if not (0 <= a < b <= ids.shape[0]):
        sys.exit(f"check_adapter: --rows {args.rows}: outside 0..{ids.shape[0]}")
    model = tf.AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    qcfg = getattr(model.config, "quantization_config", None)
    if qcfg is not None and not isinstance(qcfg, dict):
        qcfg = qcfg.to_dict()
    nf4 = want_nf4(args)
    if nf4 and qcfg and qcfg.get("quant_method") == "bitnet":
        sys.exit(f"check_adapter: {args.model}: --base-format nf4-dq does not apply to a BitNet model "
                 "(its projections are BitLinear / AutoBitLinear); leave --base-format at auto")
    if nf4:
        dequant_nf4_base(model)
    saved = {}
    if not args.no_adapter:
        import peft
        model = peft.PeftModel.from_pretrained(model, args.adapter)
        files = adapter_tensors(args.adapter)
        for mname in model.peft_config["default"].modules_to_save or []:
            hits = [(n, m) for n, m in model.named_modules()
                    if n.split(".")[-1] == mname and hasattr(m, "modules_to_save")]
            if not hits:
                sys.exit(f"check_adapter: modules_to_save {mname}: PEFT wrapped no module of that name")
            for n, m in hits:
                w = m.modules_to_save["default"].weight.detach()
                key = n + ".weight"
                saved[mname] = (float((w.double() - files[key].double()).abs().max())
                                if key in files else None)
    bitnet = bitnet_info(model, qcfg)
    if bitnet and bitnet["autobitlinear"] + bitnet["bitlinear"] == 0:
        sys.exit(f"check_adapter: {args.model}: quant_method bitnet, but transformers made no BitLinear "
                 "or AutoBitLinear")
    model.eval()
    total, n_tr = 0.0, 0
    S = ids.shape[1]
    with torch.no_grad():
        for r in range(a, b, args.micro_batch):
            e = min(b, r + args.micro_batch)
            pos = torch.arange(S).unsqueeze(0).expand(e - r, S)
            z = model(input_ids=ids[r:e], attention_mask=mask[r:e], position_ids=pos, use_cache=False).logits
            zz = z[:, :-1, :].reshape(-1, z.shape[-1]).float()
            y = lab[r:e, 1:].reshape(-1)
            total += float(torch.nn.functional.cross_entropy(zz, y, ignore_index=-100, reduction="sum").double())
            n_tr += int((y != -100).sum())
    out = {"model": args.model, "adapter": None if args.no_adapter else args.adapter, "data": args.data,
           "rows": [a, b],
           "base_format": ("nf4-dq" if nf4 else "bitnet-%s-%s" % (qcfg.get("linear_class", "bitlinear"),
                                                                  qcfg.get("quantization_mode", "offline"))
                           if bitnet else "f32"), "n_trained": n_tr, "loss_sum": total,
           "loss": total / n_tr if n_tr else None,
           "perplexity": math.exp(total / n_tr) if n_tr else None, "modules_to_save": saved}
    if bitnet:
        out["bitnet"] = bitnet
    print(json.dumps(out, indent=1))
    return 0


def adapter_tensors(d):
    from safetensors.torch import load_file
    p = os.path.join(d, "adapter_model.safetensors")
    if not os.path.exists(p):
        sys.exit(f"check_adapter: {p}: not found (an adapter directory holds adapter_model.safetensors)")
    return load_file(p)


def compare_cmd(args):
    ta, tb = adapter_tensors(args.adapter), adapter_tensors(args.compare_adapter)
    res = {"a": args.adapter, "b": args.compare_adapter, "tensors": {}, "only_in_a": sorted(set(ta) - set(tb)),
           "only_in_b": sorted(set(tb) - set(ta)), "config_differences": {}}
    worst_abs = worst_rel = worst_fro = 0.0
    for k in sorted(set(ta) & set(tb)):
        x, y = ta[k].double(), tb[k].double()
        if x.shape != y.shape:
            res["tensors"][k] = {"shape_a": list(x.shape), "shape_b": list(y.shape)}
            res.setdefault("shape_mismatch", []).append(k)
            continue
        d = (x - y).abs()
        mabs = float(d.max()) if d.numel() else 0.0
        scale = float(y.abs().max()) if y.numel() else 0.0
        mrel = mabs / scale if scale > 0 else (0.0 if mabs == 0 else math.inf)
        fro = float((x - y).norm() / y.norm()) if float(y.norm()) > 0 else (0.0 if mabs == 0 else math.inf)
        res["tensors"][k] = {"dtype_a": str(ta[k].dtype), "dtype_b": str(tb[k].dtype), "max_abs": mabs,
                             "max_rel": mrel, "rel_fro": fro}
        worst_abs, worst_rel, worst_fro = max(worst_abs, mabs), max(worst_rel, mrel), max(worst_fro, fro)
    res["worst"] = {"max_abs": worst_abs, "max_rel": worst_rel, "rel_fro": worst_fro}
    ca, cb = ({}, {})
    for d, c in ((args.adapter, "a"), (args.compare_adapter, "b")):
        p = os.path.join(d, "adapter_config.json")
        if os.path.exists(p):
            with open(p) as f:
                (ca if c == "a" else cb).update(json.load(f))
    for key in ("r", "lora_alpha", "target_modules", "use_rslora", "lora_dropout", "bias", "task_type",
                "peft_type", "modules_to_save"):
        va, vb = ca.get(key), cb.get(key)
        if isinstance(va, list) and isinstance(vb, list):
            va, vb = sorted(va), sorted(vb)
        if va != vb:
            res["config_differences"][key] = [va, vb]
    print(json.dumps(res, indent=1))
    return 1 if res["only_in_a"] or res["only_in_b"] or res.get("shape_mismatch") else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--model", help="base model directory (config.json + safetensors)")
    ap.add_argument("--adapter", required=True, help="PEFT adapter directory")
    ap.add_argument("--data", help="data.safetensors (input_ids, labels, attention_mask) or pre-tokenized .jsonl")
    ap.add_argument("--rows", help="a:b, the rows to evaluate (default: all)")
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--base-format", choices=["auto", "f32", "nf4-dq"], default="auto")
    ap.add_argument("--no-adapter", action="store_true", help="the base model's loss")
    ap.add_argument("--compare-adapter", metavar="DIR2", help="print the differences between --adapter and DIR2")
    args = ap.parse_args()
    if args.compare_adapter:
        return compare_cmd(args)
    if not args.model or not args.data:
        ap.error("--model and --data are needed for the loss (or give --compare-adapter)")
    return loss_cmd(args)


if __name__ == "__main__":
    sys.exit(main())
