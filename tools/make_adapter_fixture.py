#!/usr/bin/env python3
"""PEFT interop for tern's adapter files (src/train/adapter.c, tests/test_adapter.c).

make_adapter_fixture.py [--out tests/data/adapter]
    Builds a tiny random Llama with transformers (seeded), wraps it with PEFT LoRA (r=4,
    lora_alpha=8, lora_dropout=0.05, all seven projections), fills every lora_A and lora_B with
    non-zero random values and writes
      <out>/peft_llama/            PeftModel.save_pretrained (adapter_config.json,
                                   adapter_model.safetensors, README.md)
      <out>/peft_llama.json        the model's dimensions, r, alpha, dropout and the tensor order
      <out>/peft_llama.bin         every LoRA tensor as PEFT holds it in memory (not read back from
                                   the file): raw little-endian float32, in peft_llama.json's order
    test_adapter reads the PEFT directory with tern_adapter_read and compares with the .bin.

make_adapter_fixture.py --check DIR
    DIR is an adapter written by tern for the same tiny model (run test_adapter with
    TERN_ADAPTER_KEEP=DIR). Loads it with PeftModel.from_pretrained onto the same seeded base and
    checks that PEFT sees exactly the file's tensors (bit-equal, none missing, none extra), that
    each LoRA layer's scaling is alpha/r (alpha/sqrt(r) with use_rslora), and that the logits of
    the PEFT model equal those of the base with W + scaling * B @ A merged by hand.
"""
import argparse
import json
import math
import os
import shutil
import sys

import numpy as np
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM

MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PATHS = {m: ("self_attn." if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp.") + m for m in MODULES}
SEED = 1234


def tiny_config():
    return LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32,
                       tie_word_embeddings=False)


def make_base():
    torch.manual_seed(SEED)
    model = LlamaForCausalLM(tiny_config()).eval()
    model.name_or_path = "tern-tests/tiny-llama"
    return model


def in_out(cfg):
    d, f = cfg.hidden_size, cfg.intermediate_size
    kv = cfg.num_key_value_heads * (d // cfg.num_attention_heads)
    return {"q_proj": [d, d], "k_proj": [d, kv], "v_proj": [d, kv], "o_proj": [d, d],
            "gate_proj": [d, f], "up_proj": [d, f], "down_proj": [f, d]}


def make_fixture(out):
    from peft import LoraConfig, get_peft_model
    import peft

    cfg = tiny_config()
    r, alpha, dropout = 4, 8, 0.05
    model = get_peft_model(make_base(), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout,
                                                   target_modules=MODULES, task_type="CAUSAL_LM"))
    gen = torch.Generator().manual_seed(SEED + 1)
    params = dict(model.named_parameters())
    order, blobs = [], []
    with torch.no_grad():
        for layer in range(cfg.num_hidden_layers):
            for m in MODULES:
                for ab in "AB":
                    key = f"base_model.model.model.layers.{layer}.{PATHS[m]}.lora_{ab}.default.weight"
                    p = params[key]
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.25)
                    order.append({"name": key.replace(".default", ""), "shape": list(p.shape)})
                    blobs.append(p.detach().numpy().astype("<f4").tobytes())
    target = os.path.join(out, "peft_llama")
    shutil.rmtree(target, ignore_errors=True)
    model.save_pretrained(target)
    with open(os.path.join(out, "peft_llama.bin"), "wb") as f:
        f.write(b"".join(blobs))
    meta = {"peft_version": peft.__version__, "layers": cfg.num_hidden_layers, "r": r, "lora_alpha": alpha,
            "lora_dropout": dropout, "in_out": in_out(cfg), "tensors": order}
    with open(os.path.join(out, "peft_llama.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(f"wrote {target} ({len(order)} tensors, PEFT {peft.__version__})")


def check(dirname):
    from peft import PeftModel
    from peft.tuners.lora import LoraLayer

    with open(os.path.join(dirname, "adapter_config.json")) as f:
        acfg = json.load(f)
    sd = load_file(os.path.join(dirname, "adapter_model.safetensors"))
    model = PeftModel.from_pretrained(make_base(), dirname).eval()
    params = {k.replace(".default", ""): v for k, v in model.named_parameters() if "lora_" in k}
    missing = sorted(set(sd) - set(params))
    extra = sorted(set(params) - set(sd))
    assert not missing and not extra, f"tensors in the file but not the model: {missing}; the reverse: {extra}"
    for name, t in sd.items():
        assert t.dtype == torch.float32, f"{name}: {t.dtype}"
        assert torch.equal(params[name].detach(), t), f"{name} differs after loading"
    r, alpha = acfg["r"], acfg["lora_alpha"]
    want = alpha / math.sqrt(r) if acfg.get("use_rslora") else alpha / r
    layers = [m for m in model.modules() if isinstance(m, LoraLayer)]
    assert layers, "PEFT created no LoRA layers"
    for m in layers:
        assert m.scaling["default"] == want, f"scaling {m.scaling['default']} != {want}"
    # the PEFT forward against the base with every delta merged by hand
    merged = make_base()
    mparams = dict(merged.named_parameters())
    with torch.no_grad():
        for name in sd:
            if ".lora_A." not in name:
                continue
            module = name[len("base_model.model."):-len(".lora_A.weight")]
            a, b = sd[name].double(), sd[name.replace("lora_A", "lora_B")].double()
            w = mparams[module + ".weight"]
            w.copy_((w.double() + want * (b @ a)).float())
    ids = torch.arange(1, 17).unsqueeze(0) % tiny_config().vocab_size
    with torch.no_grad():
        got = model(input_ids=ids).logits
        ref = merged(input_ids=ids).logits
        base = make_base()(input_ids=ids).logits
    diff = (got - ref).abs().max().item()
    moved = (got - base).abs().max().item()
    assert diff < 1e-4, f"PEFT logits differ from the merged reference by {diff}"
    assert moved > 1e-3, f"the adapter does not change the logits ({moved})"
    print(f"OK {dirname}: PEFT loaded {len(sd)} tensors bit-exact; r={r} alpha={alpha} "
          f"use_rslora={acfg.get('use_rslora')} scaling={want}; {len(layers)} LoRA layers; "
          f"max |PEFT - merged| logits {diff:.2e}, max |PEFT - base| {moved:.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "adapter"))
    ap.add_argument("--check", metavar="DIR")
    args = ap.parse_args()
    if args.check:
        check(args.check)
    else:
        os.makedirs(args.out, exist_ok=True)
        make_fixture(args.out)


if __name__ == "__main__":
    sys.exit(main())
