#!/usr/bin/env python3
"""Write a synthetic HF model directory with real shapes and random bf16 weights.

For timing tern's loaders on 7B-class sizes without downloading a model: the values are random
(a 64 MiB block of random bf16 values reused at shifting offsets), the shapes, names, config and
sharding are those of the real architecture.

Usage: tools/make_synthetic_model.py OUT_DIR [--preset mistral-7b|llama3-8b|llama3-70b|llama3.2-1b|llama2-7b|llama2-13b|llama-100m|tiny]
       [--shard-gb 5]
"""
import argparse
import json
import os
import struct

import numpy as np

PRESETS = {
    "mistral-7b": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                       num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                       vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=32768, sliding_window=4096,
                       tie_word_embeddings=False, architectures=["MistralForCausalLM"]),
    "llama3-8b": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                      max_position_embeddings=8192, tie_word_embeddings=False,
                      architectures=["LlamaForCausalLM"]),
    # Llama-3-70B (meta-llama/Meta-Llama-3-70B): 131 GiB of bf16 (tools/bench_multi_gpu.sh)
    "llama3-70b": dict(model_type="llama", hidden_size=8192, intermediate_size=28672,
                       num_hidden_layers=80, num_attention_heads=64, num_key_value_heads=8,
                       vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                       max_position_embeddings=8192, tie_word_embeddings=False,
                       architectures=["LlamaForCausalLM"]),
    "llama3.2-1b": dict(model_type="llama", hidden_size=2048, intermediate_size=8192,
                        num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                        vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                        max_position_embeddings=8192, tie_word_embeddings=True,
                        architectures=["LlamaForCausalLM"]),
    # Llama-2-7B / 13B (meta-llama/Llama-2-7b-hf, -13b-hf): MHA, vocab 32000, untied
    "llama2-7b": dict(model_type="llama", hidden_size=4096, intermediate_size=11008,
                      num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32,
                      vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0,
                      max_position_embeddings=4096, tie_word_embeddings=False,
                      architectures=["LlamaForCausalLM"]),
    "llama2-13b": dict(model_type="llama", hidden_size=5120, intermediate_size=13824,
                       num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=40,
                       vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=4096, tie_word_embeddings=False,
                       architectures=["LlamaForCausalLM"]),
    # a ~100M-parameter Llama (tools/bench_cpu.sh): 12 layers of 768, GQA 12/4, vocab 32000, tied
    "llama-100m": dict(model_type="llama", hidden_size=768, intermediate_size=2048,
                       num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                       vocab_size=32000, rms_norm_eps=1e-5, rope_theta=10000.0,
                       max_position_embeddings=2048, tie_word_embeddings=True,
                       architectures=["LlamaForCausalLM"]),
    "tiny": dict(model_type="llama", hidden_size=256, intermediate_size=704, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=1000,
                 rms_norm_eps=1e-5, rope_theta=10000.0, max_position_embeddings=2048,
                 tie_word_embeddings=False, architectures=["LlamaForCausalLM"]),
}


def tensors(c):
    D, F, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    H, K = c["num_attention_heads"], c["num_key_value_heads"]
    Dh = D // H
    yield "model.embed_tokens.weight", [V, D]
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", [D]
        yield p + "self_attn.q_proj.weight", [H * Dh, D]
        yield p + "self_attn.k_proj.weight", [K * Dh, D]
        yield p + "self_attn.v_proj.weight", [K * Dh, D]
        yield p + "self_attn.o_proj.weight", [D, H * Dh]
        yield p + "post_attention_layernorm.weight", [D]
        yield p + "mlp.gate_proj.weight", [F, D]
        yield p + "mlp.up_proj.weight", [F, D]
        yield p + "mlp.down_proj.weight", [D, F]
    yield "model.norm.weight", [D]
    if not c["tie_word_embeddings"]:
        yield "lm_head.weight", [V, D]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--preset", default="mistral-7b", choices=sorted(PRESETS))
    ap.add_argument("--shard-gb", type=float, default=5.0)
    a = ap.parse_args()
    c = dict(PRESETS[a.preset], torch_dtype="bfloat16", hidden_act="silu")
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)

    rng = np.random.default_rng(0)
    pool = (rng.standard_normal(32 << 20, dtype=np.float32) * 0.02).view(np.uint32)
    pool = ((pool + 0x7FFF + ((pool >> 16) & 1)) >> 16).astype(np.uint16).tobytes()  # bf16, RNE

    shards, cur, size = [], [], 0
    limit = int(a.shard_gb * (1 << 30))
    for name, shape in tensors(c):
        n = int(np.prod(shape)) * 2
        if cur and size + n > limit:
            shards.append(cur)
            cur, size = [], 0
        cur.append((name, shape, n))
        size += n
    shards.append(cur)

    weight_map, total, shift = {}, 0, 0
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, off = {"__metadata__": {"format": "pt"}}, 0
        for name, shape, n in shard:
            header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
            off += n
            weight_map[name] = fname
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        with open(os.path.join(a.out, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h)
            for name, shape, n in shard:
                left = n
                while left:
                    start = (shift % (len(pool) // 2)) & ~1  # whole bf16 values only
                    chunk = min(left, len(pool) - start)
                    f.write(pool[start:start + chunk])
                    left -= chunk
                    shift += 4099
        total += off
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    print(f"{a.out}: {len(weight_map)} tensors, {total / (1 << 30):.2f} GiB in {len(shards)} shards")


if __name__ == "__main__":
    main()
