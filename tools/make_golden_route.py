#!/usr/bin/env python3
"""Writes tests/data/route_topk_golden.txt: the mixture-of-experts router as transformers 5 computes
it, for test_ops' check of route_topk / route_topk_bwd (tests/test_ops_route.h).

The routers are transformers' own modules (MixtralTopKRouter: always renormalised; Qwen3MoeTopKRouter
with norm_topk_prob on and off), fed hidden states equal to the logits through an identity router
weight (F.linear by the identity is exact in fp32), so the golden is torch's softmax, torch.topk's
order (exact ties included: lower expert first) and autograd of sum(dw * scores) into the logits.

Per case: "case T E k norm", then T*E logits, T*k sel, T*k w, T*k dw, T*E dlogits (one row each).
Usage: python3 tools/make_golden_route.py [out]   (default tests/data/route_topk_golden.txt)
"""
import sys

import torch
from transformers import MixtralConfig, Qwen3MoeConfig
from transformers.models.mixtral.modeling_mixtral import MixtralTopKRouter
from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeTopKRouter


def logits_with_ties(g, T, E, k):
    """Random logits; row 1 all equal, row 2 with the k-th and (k+1)-th largest exactly equal,
    row 3 with two equal leaders."""
    x = torch.randn(T, E, generator=g, dtype=torch.float32) * 2.0
    if T > 1:
        x[1, :] = 0.5
    if T > 2 and k < E:
        order = torch.argsort(x[2], descending=True)
        x[2, order[k]] = x[2, order[k - 1]]
    if T > 3 and E > 1:
        order = torch.argsort(x[3], descending=True)
        x[3, order[1]] = x[3, order[0]]
    return x


def case(router, T, E, k, norm, g):
    with torch.no_grad():
        router.weight.copy_(torch.eye(E))
    x = logits_with_ties(g, T, E, k).requires_grad_(True)
    logits, scores, idx = router(x)
    assert torch.equal(logits, x)
    dw = torch.randn(T, k, generator=g, dtype=torch.float32)
    (scores * dw).sum().backward()
    rows = [f"case {T} {E} {k} {int(norm)}"]
    for t in (x.detach(), idx.float(), scores.detach(), dw, x.grad):
        rows.append(" ".join(repr(float(v)) for v in t.flatten()))
    return rows


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/route_topk_golden.txt"
    g = torch.Generator().manual_seed(20240601)
    lines = []
    mc = MixtralConfig(hidden_size=8, num_local_experts=8, num_experts_per_tok=2)
    lines += case(MixtralTopKRouter(mc), 7, 8, 2, True, g)
    for norm in (True, False):
        qc = Qwen3MoeConfig(hidden_size=16, num_experts=16, num_experts_per_tok=4, norm_topk_prob=norm)
        lines += case(Qwen3MoeTopKRouter(qc), 6, 16, 4, norm, g)
    qc = Qwen3MoeConfig(hidden_size=128, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True)
    lines += case(Qwen3MoeTopKRouter(qc), 5, 128, 8, True, g)
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
