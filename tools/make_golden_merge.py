#!/usr/bin/env python3
"""Golden references for `tern merge` (tests/test_export.c) and a logits check of tern's output.

    python3 tools/make_golden_merge.py                 # writes tests/data/merge/<case>.safetensors
    python3 tools/make_golden_merge.py --check TERN    # runs TERN merge on every case, then loads
                                                       # each result with transformers and compares
                                                       # its logits with PEFT's merged model

For each golden case (tests/data/golden/<case>: model/ + adapter_final/) the reference is PEFT's
merge_and_unload(): PeftModel.from_pretrained(base, adapter_final) in float32, merged, and the
state dict of the merged model. The committed file holds, in float32, exactly the tensors that the
merge changes (the targeted projections, modules_to_save); the test checks every other tensor
equals the base. llama_nf4: the base projections are first replaced by dequantize(quantize_nf4(W))
(bitsandbytes' algorithm, double quant, blocksize 64; tools/nf4_golden.py), which is what a merge
of a QLoRA adapter into its NF4 base computes (PEFT's merge on a bitsandbytes Linear4bit adds the
delta to the dequantized weight); tern quantizes the fp32 model itself (--base-format nf4-dq).

Deterministic: run twice, the same tensors bit for bit (the order of the __metadata__ keys in the
header may differ: safetensors keeps them in a hash map). torch CPU, one thread.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers as tf
import peft
from safetensors.torch import save_file, load_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden  # noqa: E402  (quantize_nf4_dq)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "data", "golden")
OUT = os.path.join(ROOT, "tests", "data", "merge")
CASES = {  # case: base format tern merges into
    "llama": "auto",
    "qwen2": "auto",       # rsLoRA, q/k/v biases
    "qwen3": "auto",       # tied embeddings, head_dim != D/H
    "mistral": "auto",     # q_proj, v_proj only
    "llama_save": "auto",  # modules_to_save embed_tokens + lm_head
    "qwen3_save": "auto",  # modules_to_save on a tied base: the merged model gets its own lm_head
    "llama_nf4": "nf4-dq",
    "mixtral_exp": "auto",    # LoRA on the experts (PEFT target_parameters) and the attention
    "qwen3_moe_exp": "auto",  # the same on Qwen3-MoE (gate_up only)
    "mixtral_router": "auto",  # and LoRA on the router (mlp.gate, target_modules "gate")
}
# mixtures of experts: compared in the checkpoint's per-expert names, as save_pretrained writes them
MOE = ("mixtral_exp", "qwen3_moe_exp", "mixtral_router")
PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def base_model(case):
    m = tf.AutoModelForCausalLM.from_pretrained(os.path.join(GOLD, case, "model"), dtype=torch.float32,
                                                attn_implementation="eager")
    if CASES[case] == "nf4-dq":
        with torch.no_grad():
            for n, p in m.named_parameters():
                if n.endswith(".weight") and any(f".{x}." in n for x in PROJ):
                    p.copy_(make_golden.quantize_nf4_dq(p))
    return m


def peft_merged(case):
    m = base_model(case)
    pm = peft.PeftModel.from_pretrained(m, os.path.join(GOLD, case, "adapter_final"))
    return pm.merge_and_unload()


def changed_moe(case):
    import glob
    from safetensors.torch import load_file
    base = load_file(os.path.join(GOLD, case, "model", "model.safetensors"))
    with tempfile.TemporaryDirectory() as d:
        peft_merged(case).save_pretrained(d)
        merged = {}
        for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
            merged.update(load_file(f))
    return {k: v.contiguous().float() for k, v in merged.items()
            if k in base and not torch.equal(base[k].float(), v.float())}


def changed(case):
    if case in MOE:
        return changed_moe(case)
    base = {k: v.clone() for k, v in tf.AutoModelForCausalLM.from_pretrained(
        os.path.join(GOLD, case, "model"), dtype=torch.float32).state_dict().items()}
    merged = peft_merged(case).state_dict()
    out = {}
    for k, v in merged.items():
        if k not in base:
            continue
        if not torch.equal(base[k], v):
            out[k] = v.detach().contiguous().float()
    return out


def make(cases):
    os.makedirs(OUT, exist_ok=True)
    for case in cases:
        t = changed(case)
        path = os.path.join(OUT, f"{case}.safetensors")
        save_file(dict(sorted(t.items())), path, metadata={"format": "pt", "peft": peft.__version__,
                                                            "transformers": tf.__version__,
                                                            "torch": torch.__version__,
                                                            "base_format": CASES[case]})
        print(f"{path}: {len(t)} tensors")


def check(tern):
    ids = torch.tensor([[1] + list(range(3, 40, 2)) + [5, 9, 17, 33, 65, 127]], dtype=torch.long)
    worst = 0.0
    ok = True
    for case in CASES:
        with tempfile.TemporaryDirectory() as d:
            out = os.path.join(d, "merged")
            cmd = [tern, "merge", "--base", os.path.join(GOLD, case, "model"), "--adapter",
                   os.path.join(GOLD, case, "adapter_final"), "--out", out, "--dtype", "f32"]
            if CASES[case] != "auto":
                cmd += ["--base-format", CASES[case]]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            ours = tf.AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
            ref = peft_merged(case)
            with torch.no_grad():
                a = ours(input_ids=ids).logits
                b = ref(input_ids=ids).logits
            err = (a - b).abs().max().item()
            worst = max(worst, err)
            good = err <= 1e-5
            ok &= good
            print(f"{case:12s} max |logits tern-merged - PEFT merged| = {err:.3g}  {'ok' if good else 'FAIL'}")
    print(f"worst {worst:.3g} (tolerance 1e-5)")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", metavar="TERN", help="the tern binary to check")
    ap.add_argument("--cases", default=",".join(CASES), help="comma-separated cases to write (default all)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if a.check:
        sys.exit(check(a.check))
    make(a.cases.split(","))
