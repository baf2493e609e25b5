#!/usr/bin/env python3
"""Writes tests/data/golden/<case>/ for the mixture-of-experts cases (mixtral, qwen3_moe): the same
reference run, files and layout as tools/make_golden.py (whose run_case this reuses), on tiny random
transformers 5 models, float32, eager attention.

  mixtral    2 layers, 4 experts, top 2 (renormalised), LoRA r 8 on q/k/v/o
  qwen3_moe  3 layers, 8 experts, top 3 without norm_topk_prob, layer 1 dense (mlp_only_layers),
             q/k norms, tied embeddings, LoRA r 8 on q/k/v/o

The routers are drawn 10x larger than the other projections (std 0.5) so that no token's k-th and
(k+1)-th router logits are within 1e-3 of each other (checked over the data's real tokens; the
router seed is advanced until none is): top-k is discontinuous, and a
different choice in tern's fp32 and PyTorch's fp32 would not be a bug of either. run_case's checks
(PEFT vs a hand-merged forward, right padding, float32 vs float64 reference) run unchanged; the
routers' seed is chosen as said above.

    python3 tools/make_golden_moe.py [--out tests/data/golden] [--cases mixtral,qwen3_moe]
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_golden as g  # noqa: E402

tf = g.tf
ATTN4 = ["q_proj", "k_proj", "v_proj", "o_proj"]

MOE_CASES = {
    "mixtral": (tf.MixtralConfig,
                dict(hidden_size=64, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2, vocab_size=g.VOCAB,
                     max_position_embeddings=64, sliding_window=None, tie_word_embeddings=False,
                     router_jitter_noise=0.0, output_router_logits=False),
                dict(r=8, alpha=16, rslora=False, targets=ATTN4), "f32"),
    "qwen3_moe": (tf.Qwen3MoeConfig,
                  dict(hidden_size=64, intermediate_size=80, moe_intermediate_size=32, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
                       num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
                       vocab_size=g.VOCAB, max_position_embeddings=64, use_sliding_window=False,
                       tie_word_embeddings=True, output_router_logits=False),
                  dict(r=8, alpha=16, rslora=False, targets=ATTN4), "f32"),
}

_build = g.build_model


class _Auto:
    """AutoModelForCausalLM with experts_implementation="eager": transformers 5 otherwise runs the
    experts through torch's grouped_mm, which has no float64 path (run_case's float64 check)."""

    @staticmethod
    def from_config(cfg, **kw):
        return tf.AutoModelForCausalLM.from_config(cfg, experts_implementation="eager", **kw)

    @staticmethod
    def from_pretrained(d, **kw):
        return tf.AutoModelForCausalLM.from_pretrained(d, experts_implementation="eager", **kw)


class _TF:
    AutoModelForCausalLM = _Auto

    def __getattr__(self, name):
        return getattr(tf, name)


def topk_gap(model, k, ids, mask):
    """Smallest logit_k - logit_(k+1) (the k-th and (k+1)-th largest router logits) over the real
    tokens of the data, every sparse layer."""
    gaps = []

    def hook(_mod, _inp, out):
        logits = out[0] if isinstance(out, tuple) else out
        v, _ = torch.topk(logits.float(), k + 1, dim=-1)
        gap = (v[:, k - 1] - v[:, k]).view(ids.shape)
        gaps.append(float(gap[mask.bool()].min()))

    hs = [m.register_forward_hook(hook) for n, m in model.named_modules() if n.endswith("mlp.gate")]
    pos = torch.arange(g.S).unsqueeze(0).expand(ids.shape[0], g.S)
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    for h in hs:
        h.remove()
    return min(gaps)


def build_model(name, cls, kw):
    """make_golden's model, the routers redrawn (std 0.5) with the first seed whose smallest top-k
    logit gap over the case's data (make_golden's rows, same seed) is above 1e-3."""
    model = _build(name, cls, kw)
    if name not in MOE_CASES:
        return model
    ids, _labels, mask = g.make_data(g.np.random.default_rng(g.case_seed(name) + 2))
    ids, mask = torch.from_numpy(ids).long(), torch.from_numpy(mask).long()
    for attempt in range(100):
        torch.manual_seed(g.case_seed(name) + 7 + attempt)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if pname.endswith("mlp.gate.weight"):
                    p.normal_(0.0, 0.5)
        gap = topk_gap(model, kw["num_experts_per_tok"], ids, mask)
        if gap > 1e-3:
            print(f"   routers: seed offset {attempt}, smallest top-k logit gap over the real tokens {gap:.3e}")
            return model
    raise SystemExit("no router seed keeps every top-k choice clear of rounding")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "golden"))
    ap.add_argument("--rel", default="tests/data/golden")
    ap.add_argument("--cases", default=",".join(MOE_CASES))
    a = ap.parse_args()
    g.CASES.update(MOE_CASES)
    g.build_model = build_model
    g.tf = _TF()
    for c in a.cases.split(","):
        g.run_case(c, os.path.normpath(a.out), a.rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
