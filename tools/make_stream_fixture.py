#!/usr/bin/env python3
"""A 6-layer tiny Llama for the streaming tests (tests/data/models/llama6): enough layers that a
plan can keep 2 on the device, 2 in host memory and 2 on disk. Random bf16 weights (seed 6).

    python3 tools/make_stream_fixture.py tests/data/models/llama6
"""
import sys

import torch
from transformers import LlamaConfig, LlamaForCausalLM

out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/models/llama6"
torch.manual_seed(6)
cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=6,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                  tie_word_embeddings=False, rms_norm_eps=1e-5)
m = LlamaForCausalLM(cfg)
with torch.no_grad():
    for n, p in m.named_parameters():
        if n.endswith("norm.weight"):
            p.copy_(1 + 0.1 * torch.randn_like(p))
        else:
            p.copy_(0.05 * torch.randn_like(p))
m.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
print("wrote", out)
