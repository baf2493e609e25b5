#!/usr/bin/env python3
"""Writes tests/data/golden/bitnet/: the reference run of tools/make_golden.py (whose run_case this
reuses: same data, optimizer, files and layout) on a tiny random BitNet b1.58 model as transformers 5
runs it with quantization_config {quant_method: bitnet, linear_class: autobitlinear,
quantization_mode: online}: every decoder projection is an AutoBitLinear (an nn.Linear that PEFT
wraps) whose forward quantizes its weight to ternary with one scale per tensor (WeightQuant:
round(W / mean|W|) clipped to [-1, 1], times mean|W|) and its input to 8 bits per token (ActQuant:
round(x * 127 / absmax) / (127 / absmax)), with straight-through gradients; the LoRA path sees the
unquantized input. Sub-norms (attn_sub_norm before o_proj, ffn_sub_norm before down_proj), ReLU²
gated MLP, untied embeddings; lm_head stays a plain Linear.

  bitnet   D 64, F 96, H 4 / Hkv 2, Dh 16, V 128, 2 layers; LoRA r 8, alpha 16 on all 7 projections

run_case's PEFT-vs-hand-merged check does not apply (W + s B A would be quantized as a whole); it is
replaced by a hand-written forward of every LoRA-wrapped AutoBitLinear (ActQuant(x) WeightQuant(W)ᵀ
+ s B A x) against PEFT's, on random inputs. The float64 run casts the weights and activations to
float32 for the quantization (transformers' ActQuant/WeightQuant call .float()), so its trajectory
differs from the float32 one where a rounding flips a level.

    python3 tools/make_golden_bitnet.py [--out tests/data/golden]
"""
import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as g  # noqa: E402

tf = g.tf
QCFG = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
CASE = {
    "bitnet": (tf.BitNetConfig,
               dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, vocab_size=g.VOCAB, max_position_embeddings=64, hidden_act="relu2",
                    rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, tie_word_embeddings=False),
               dict(r=8, alpha=16, rslora=False, targets=g.ALL7), "ternary"),
}

_build = g.build_model


def build_model(name, cls, kw):
    """make_golden's model (plain Linears); config.json gains the quantization_config, so that
    run_case's from_pretrained makes the AutoBitLinears."""
    model = _build(name, cls, kw)
    model.config.quantization_config = dict(QCFG)
    return model


def merged_forward_check(base_cfg_model, pm, lo, ids, labels, mask):
    """Every LoRA-wrapped projection is an AutoBitLinear in online mode, and PEFT's output equals
    ActQuant(x) WeightQuant(W)ᵀ + s B A x written out here; returns the largest difference (and
    the loss twice, for run_case's print)."""
    from transformers.integrations.bitnet import AutoBitLinear
    s = g.lora_scale(lo)
    worst, n = 0.0, 0
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, mod in pm.named_modules():
            if not hasattr(mod, "base_layer") or not hasattr(mod, "lora_A"):
                continue
            base = mod.base_layer
            assert isinstance(base, AutoBitLinear) and base.online_quant, name
            w = base.weight.float()
            ws = 1.0 / w.abs().mean().clamp(min=1e-5)
            wq = (w * ws).round().clamp(-1, 1) / ws
            x = torch.randn(3, 5, base.in_features, generator=gen)
            xs = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
            xq = (x * xs).round().clamp(-128, 127) / xs
            want = xq @ wq.T + s * (x @ mod.lora_A["default"].weight.T) @ mod.lora_B["default"].weight.T
            worst = max(worst, float((mod(x) - want).abs().max()))
            n += 1
        assert n == 2 * 7, f"{n} LoRA-wrapped AutoBitLinears"
        assert not isinstance(pm.base_model.model.lm_head, AutoBitLinear)
        l1, c1 = g.micro_loss_sum(pm, ids, labels, mask)
    print(f"   {n} LoRA-wrapped AutoBitLinears (online); lm_head a plain Linear")
    return worst, float(l1 / c1), float(l1 / c1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "golden"))
    ap.add_argument("--rel", default="tests/data/golden")
    a = ap.parse_args()
    g.CASES.update(CASE)
    g.build_model = build_model
    g.merged_forward_check = merged_forward_check
    # a padded batch runs other matmul shapes: fp32 differences of 1e-7 flip an 8-bit activation
    # level where x * 127 / absmax lies that close to a half, and one level moves logits by ~1e-3
    g.PAD_TOL = 2e-2
    g.run_case("bitnet", os.path.normpath(a.out), a.rel)
    d = os.path.join(os.path.normpath(a.out), "bitnet")
    gp = os.path.join(d, "golden.json")
    with open(gp) as f:
        gold = json.load(f)
    gold["command"] = "python3 tools/make_golden_bitnet.py"
    gold["checks"]["autobitlinear_vs_manual_max_diff"] = gold["checks"].pop("peft_vs_manual_merge_max_logit_diff")
    with open(gp, "w") as f:
        json.dump(gold, f, indent=1)
        f.write("\n")
    with open(os.path.join(d, "model", "config.json")) as f:
        assert json.load(f)["quantization_config"]["quantization_mode"] == "online"
    return 0


if __name__ == "__main__":
    sys.exit(main())
