#!/usr/bin/env python3
"""Write a tiny stand-in of a Hugging Face model: the real model's config.json with small
dimensions, random bf16 weights of the right names and shapes, and the family's real tokenizer.

For training a step of a config that names a 7B model (tests/cli_axolotl_cache.sh): model_type,
vocab_size, special token ids, rope and norm settings, biases, q/k norms, tied embeddings and
MoE experts stay those of REAL_CONFIG; hidden 64, 2 layers, 4 heads (2 kv heads, head_dim 16),
intermediate 128 replace the sizes. Standard library only (no numpy); deterministic (seeded);
a 152k-vocabulary stand-in takes well under a second.

Usage: tools/make_standin_model.py REAL_CONFIG.json TOKENIZER_PREFIX OUT_DIR [LAYERS [EXPERTS]]
  LAYERS: instead of 2 (tests/cli_moe.sh streams a 6-layer Mixtral stand-in).
  EXPERTS: instead of 4 for a Mixtral config (tests/cli_moe.sh streams 64 experts per expert).
  TOKENIZER_PREFIX: e.g. tests/data/tokenizers/llama2 for llama2-tokenizer.json(.gz) and
  llama2-tokenizer_config.json(.gz); written to OUT_DIR as tokenizer.json, tokenizer_config.json.
"""
import gzip
import json
import os
import random
import struct
import sys

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2)


def tensors(c):
    D, F, V, L = c["hidden_size"], c["intermediate_size"], c["vocab_size"], c["num_hidden_layers"]
    H, K, Dh = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
    mt = c["model_type"]
    yield "model.embed_tokens.weight", [V, D], False
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", [D], True
        yield p + "self_attn.q_proj.weight", [H * Dh, D], False
        yield p + "self_attn.k_proj.weight", [K * Dh, D], False
        yield p + "self_attn.v_proj.weight", [K * Dh, D], False
        if mt == "qwen2" or c.get("attention_bias"):
            yield p + "self_attn.q_proj.bias", [H * Dh], False
            yield p + "self_attn.k_proj.bias", [K * Dh], False
            yield p + "self_attn.v_proj.bias", [K * Dh], False
        if mt == "qwen3":
            yield p + "self_attn.q_norm.weight", [Dh], True
            yield p + "self_attn.k_norm.weight", [Dh], True
        yield p + "self_attn.o_proj.weight", [D, H * Dh], False
        yield p + "post_attention_layernorm.weight", [D], True
        if mt == "mixtral":
            E = c["num_local_experts"]
            yield p + "block_sparse_moe.gate.weight", [E, D], False
            for e in range(E):
                q = p + f"block_sparse_moe.experts.{e}."
                yield q + "w1.weight", [F, D], False
                yield q + "w2.weight", [D, F], False
                yield q + "w3.weight", [F, D], False
        else:
            yield p + "mlp.gate_proj.weight", [F, D], False
            yield p + "mlp.up_proj.weight", [F, D], False
            yield p + "mlp.down_proj.weight", [D, F], False
    yield "model.norm.weight", [D], True
    if not c.get("tie_word_embeddings", False):
        yield "lm_head.weight", [V, D], False


def random_bf16(rng, n):
    """n bf16 values of random sign and mantissa, magnitude in [2^-7, 2^-5): byte 0 (exponent's
    low bit and mantissa) is random, byte 1 (sign and exponent's high bits) is 0x3c or 0xbc."""
    hi = bytes(0x3C | (b & 0x80) for b in range(256))
    out = bytearray(2 * n)
    out[0::2] = rng.randbytes(n)
    out[1::2] = rng.randbytes(n).translate(hi)
    return bytes(out)


class Values:
    """Random bf16 values: a pool of 2^20, read from a shifting (odd) offset so that tensors
    differ; copying is all the work, so a 152k x 64 embedding takes milliseconds."""

    def __init__(self, rng):
        self.pool = random_bf16(rng, 1 << 20) * 2
        self.shift = 0

    def take(self, n):
        out = bytearray()
        while len(out) < 2 * n:
            start = 2 * (self.shift % (1 << 20))
            out += self.pool[start:start + min(2 * n - len(out), 1 << 21)]
            self.shift += 4099
        return out


def main():
    if len(sys.argv) not in (4, 5, 6):
        sys.exit(__doc__.split("\n\n")[-1])
    real, tok, out = sys.argv[1:4]
    with open(real) as f:
        c = json.load(f)
    c.update(SMALL)
    if len(sys.argv) >= 5:  # LAYERS
        c["num_hidden_layers"] = int(sys.argv[4])
    c["head_dim"] = c["hidden_size"] // c["num_attention_heads"]
    c.pop("quantization_config", None)
    if isinstance(c.get("layer_types"), list):
        c["layer_types"] = c["layer_types"][: c["num_hidden_layers"]]
    if "max_window_layers" in c:
        c["max_window_layers"] = min(c["max_window_layers"], c["num_hidden_layers"])
    if "num_local_experts" in c:
        c["num_local_experts"] = int(sys.argv[5]) if len(sys.argv) >= 6 else 4
    c["torch_dtype"] = "bfloat16"
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)

    values = Values(random.Random(0))
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, shape, is_norm in tensors(c):
        n = 1
        for s in shape:
            n *= s
        data = b"\x80\x3f" * n if is_norm else values.take(n)  # norms 1.0
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)

    for part in ("tokenizer.json", "tokenizer_config.json"):
        src = f"{tok}-{part}"
        if os.path.exists(src + ".gz"):
            with gzip.open(src + ".gz", "rb") as f:
                data = f.read()
        else:
            with open(src, "rb") as f:
                data = f.read()
        with open(os.path.join(out, part), "wb") as f:
            f.write(data)
    print(f"{out}: {c['model_type']}, vocab {c['vocab_size']}, {len(header) - 1} tensors, "
          f"{off / (1 << 20):.1f} MiB")


if __name__ == "__main__":
    main()
