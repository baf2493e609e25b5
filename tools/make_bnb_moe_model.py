#!/usr/bin/env python3
"""Write a random-weight bitsandbytes 4-bit (NF4, double quant) checkpoint of a MoE model, fast.

    tools/make_bnb_moe_model.py OUT_DIR --preset mixtral-8x7b|qwen3-30b-a3b|tiny-mixtral|tiny-qwen3-moe
                                [--config CONFIG.json] [--shard-gb 5] [--seed 0]

The files are what transformers' save_pretrained writes for a `load_in_4bit` model (nf4, double
quant, bf16 compute; formats.md §1.4, src/model/bnb.c), with the Hub's per-expert names (Mixtral
block_sparse_moe.experts.<e>.w1/w3/w2, Qwen3-MoE mlp.experts.<e>.gate/up/down_proj): every
attention and expert projection `<m>.weight` as U8 [(n+1)/2, 1] packed codes (first element in
the high nibble), `.absmax` U8 [n/64], `.nested_absmax` F32 [ceil(n/64/256)], `.quant_map` F32
[16] (the NF4 table), `.nested_quant_map` F32 [256] (bitsandbytes' create_dynamic_map, bit for
bit: tern keeps the u8 absmax only then) and `.quant_state.bitsandbytes__nf4` (its JSON as U8);
embeddings, lm_head, norms and routers in bf16. config.json carries quantization_config with
llm_int8_skip_modules ["lm_head", "gate"] (module names: transformers 4.x would otherwise expect
a quantized router; transformers 5's router is no Linear). Sharded as model-0000k-of-0000n
.safetensors + model.safetensors.index.json.

Who reads it (checked on the CPU with tiny presets, 2026-12-05): tern (base nf4-dq, every byte
as stored); transformers 4.57.6 + bitsandbytes 0.50.2 (Linear4bit attention and experts, routers
nn.Linear); transformers 5 (5.25) cannot: its fused expert parameters (gate_up_proj [E, 2F, D])
are no nn.Linear, so bitsandbytes quantizes only the attention and the per-expert 4-bit tensors
are a size mismatch (the same happens with transformers 5's own bnb save of a MoE model: it
writes the experts in bf16).

Nothing is quantized: random codes and scales are a valid random model. The codes are slices of
one 64 MiB block of random bytes taken at shifting offsets; the absmax codes are random around a
fixed offset (dequantized absmax = dynamic_map[code] * 0.25 * offset + offset, so in [0.75, 1.25]
times 0.04): weights have a standard deviation of about 0.02, as the models' initializer_range,
and activations stay finite. Norm weights are 1, embeddings / lm_head / routers random bf16 with
standard deviation 0.02. Mixtral-8x7B: 24.48 GB (22.80 GiB) in 5 shards; Qwen3-30B-A3B: 16.72 GB
(15.57 GiB) in 4 (--dry-run prints the sizes). The shards are written in parallel (--jobs, forked
processes sharing the random block): the speed is the disk's write rate and the kernel's copy into
the page cache (about 1.3 s of CPU per GB on the 2-core build VM).
"""
import argparse
import json
import math
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
PLAN = os.path.join(HERE, "..", "tests", "data", "plan")

PRESETS = {
    # the published config.json files that tests/test_plan.c checks its arithmetic on
    "mixtral-8x7b": os.path.join(PLAN, "mixtral-8x7b-v0.1", "config.json"),
    "qwen3-30b-a3b": os.path.join(PLAN, "qwen3-30b-a3b", "config.json"),
    # tiny ones for trying the bench script (the same key sets, small shapes)
    "tiny-mixtral": dict(
        architectures=["MixtralForCausalLM"], model_type="mixtral", hidden_size=256,
        intermediate_size=512, num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
        num_local_experts=8, num_experts_per_tok=2, vocab_size=1000, rms_norm_eps=1e-5,
        rope_theta=1e6, max_position_embeddings=4096, sliding_window=None, tie_word_embeddings=False,
        output_router_logits=False, router_aux_loss_coef=0.02, hidden_act="silu",
        torch_dtype="bfloat16", bos_token_id=1, eos_token_id=2),
    "tiny-qwen3-moe": dict(
        architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", hidden_size=256,
        intermediate_size=768, moe_intermediate_size=128, num_hidden_layers=6,
        num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_experts=16,
        num_experts_per_tok=4, norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
        vocab_size=1000, rms_norm_eps=1e-6, rope_theta=1e6, max_position_embeddings=4096,
        attention_bias=False, tie_word_embeddings=False, output_router_logits=False,
        router_aux_loss_coef=0.001, use_sliding_window=False, sliding_window=None,
        hidden_act="silu", torch_dtype="bfloat16", bos_token_id=1, eos_token_id=2),
}

BLOCK, NESTED = 64, 256
ABSMAX_OFFSET = 0.04  # dequantized absmax in [0.75, 1.25] x this: weight std ~0.02

# bitsandbytes' NF4 quant_map (formats.md §1.1; src/quant/nf4.c tern_nf4_code): exact fp32 values
NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def dynamic_map():
    """bitsandbytes create_dynamic_map(signed=True, 7, 8) in fp32 as torch computes it (tern_dynamic_map
    in src/quant/nf4.c): torch.linspace's fp32 `start + step * idx` rounds once (FMA), which the
    exact double sum, rounded to fp32 once, reproduces (both factors have at most 24 + 7 bits)."""
    vals = []
    for i in range(7):
        steps = (1 << i) + 1
        scale = np.float32([1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0][i])
        start, end = np.float32(0.1), np.float32(1.0)
        step = np.float32((end - start) / np.float32(steps - 1))
        half = steps // 2
        b = [np.float32(float(step) * k + float(start)) if k < half
             else np.float32(-float(step) * (steps - k - 1) + float(end)) for k in range(steps)]
        for k in range(steps - 1):
            mid = np.float32((b[k] + b[k + 1]) / np.float32(2.0))
            vals += [np.float32(scale * mid), -np.float32(scale * mid)]
    vals += [np.float32(0.0), np.float32(1.0)]
    return np.sort(np.array(vals, dtype=np.float32))


def load_config(a):
    p = PRESETS[a.preset] if a.config is None else a.config
    if isinstance(p, dict):
        return dict(p)
    with open(p) as f:
        return json.load(f)


def tensors(c):
    """(name, kind, shape) in checkpoint order; kind: q (4-bit projection), emb, norm, router."""
    mt = c["model_type"]
    D, V, L = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    H, K = c["num_attention_heads"], c["num_key_value_heads"]
    Dh = c.get("head_dim") or D // H
    if mt == "mixtral":
        E, Fe = c["num_local_experts"], c["intermediate_size"]
    elif mt == "qwen3_moe":
        E, Fe = c["num_experts"], c["moe_intermediate_size"]
        if c.get("mlp_only_layers") or c.get("decoder_sparse_step", 1) != 1:
            sys.exit("qwen3_moe: only every-layer-sparse configs (mlp_only_layers [], decoder_sparse_step 1)")
    else:
        sys.exit(f"model_type {mt}: this writer knows mixtral and qwen3_moe")
    yield "model.embed_tokens.weight", "emb", [V, D]
    for i in range(L):
        p = f"model.layers.{i}."
        yield p + "input_layernorm.weight", "norm", [D]
        yield p + "self_attn.q_proj.weight", "q", [H * Dh, D]
        yield p + "self_attn.k_proj.weight", "q", [K * Dh, D]
        yield p + "self_attn.v_proj.weight", "q", [K * Dh, D]
        yield p + "self_attn.o_proj.weight", "q", [D, H * Dh]
        if mt == "qwen3_moe":
            yield p + "self_attn.q_norm.weight", "norm", [Dh]
            yield p + "self_attn.k_norm.weight", "norm", [Dh]
        yield p + "post_attention_layernorm.weight", "norm", [D]
        if mt == "mixtral":
            yield p + "block_sparse_moe.gate.weight", "router", [E, D]
            for e in range(E):
                x = f"{p}block_sparse_moe.experts.{e}."
                yield x + "w1.weight", "q", [Fe, D]
                yield x + "w2.weight", "q", [D, Fe]
                yield x + "w3.weight", "q", [Fe, D]
        else:
            yield p + "mlp.gate.weight", "router", [E, D]
            for e in range(E):
                x = f"{p}mlp.experts.{e}."
                yield x + "down_proj.weight", "q", [D, Fe]
                yield x + "gate_proj.weight", "q", [Fe, D]
                yield x + "up_proj.weight", "q", [Fe, D]
    yield "model.norm.weight", "norm", [D]
    if not c.get("tie_word_embeddings", False):
        yield "lm_head.weight", "emb", [V, D]


class Pool:
    """Random bytes served at shifting offsets (bf16 pool for the float tensors)."""

    def __init__(self, rng, nbytes=64 << 20):
        self.raw = memoryview(rng.integers(0, 256, nbytes, dtype=np.uint8).tobytes())
        f = (rng.standard_normal(nbytes // 2, dtype=np.float32) * 0.02).view(np.uint32)
        self.bf16 = memoryview(((f + 0x7FFF + ((f >> 16) & 1)) >> 16).astype(np.uint16).tobytes())
        self.shift = 0

    def write(self, f, pool, n, align=1):
        while n:
            start = (self.shift % (len(pool) // 2)) // align * align
            chunk = min(n, len(pool) - start)
            f.write(pool[start:start + chunk])
            n -= chunk
            self.shift += 4099 * 4096 + 12345


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--preset", default="mixtral-8x7b", choices=sorted(PRESETS))
    ap.add_argument("--config", default=None, help="a config.json to use instead of the preset's")
    ap.add_argument("--shard-gb", type=float, default=5.0, help="shard size in GB (default 5, as transformers)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dry-run", action="store_true", help="print the sizes, write nothing")
    ap.add_argument("--jobs", type=int, default=min(8, os.cpu_count() or 1),
                    help="shards written at once (default: the CPU count, at most 8)")
    a = ap.parse_args()
    t0 = time.time()
    c = load_config(a)
    skip = ["lm_head", "gate"]  # module names: transformers 4.x keeps the routers nn.Linear (bf16)
    c["quantization_config"] = {
        "_load_in_4bit": True, "_load_in_8bit": False, "bnb_4bit_compute_dtype": "bfloat16",
        "bnb_4bit_quant_storage": "uint8", "bnb_4bit_quant_type": "nf4",
        "bnb_4bit_use_double_quant": True, "llm_int8_enable_fp32_cpu_offload": False,
        "llm_int8_has_fp16_weight": False, "llm_int8_skip_modules": skip,
        "llm_int8_threshold": 6.0, "load_in_4bit": True, "load_in_8bit": False,
        "quant_method": "bitsandbytes"}
    c.setdefault("torch_dtype", "bfloat16")
    if not a.dry_run:
        os.makedirs(a.out, exist_ok=True)

    rng = np.random.default_rng(a.seed)
    pool = Pool(rng) if not a.dry_run else None
    qmap = NF4.tobytes()
    dmap = dynamic_map().tobytes()
    off = float(np.float32(ABSMAX_OFFSET))
    ones = {}

    # groups of file tensors (a projection's six, or one): (name, dtype, shape, nbytes, writer),
    # writer(f) writes nbytes
    def groups():
        for name, kind, shape in tensors(c):
            n = int(np.prod(shape))
            if kind == "q":
                nb = math.ceil(n / BLOCK)
                nn = math.ceil(nb / NESTED)
                js = json.dumps({"quant_type": "nf4", "blocksize": BLOCK, "dtype": "bfloat16",
                                 "shape": shape, "nested_blocksize": NESTED,
                                 "nested_dtype": "float32", "nested_offset": off}).encode()
                nested = np.full(nn, 0.25 * ABSMAX_OFFSET, dtype=np.float32).tobytes()
                yield [(name, "U8", [(n + 1) // 2, 1], (n + 1) // 2,
                        lambda f, k=(n + 1) // 2: pool.write(f, pool.raw, k)),
                       (name + ".absmax", "U8", [nb], nb, lambda f, k=nb: pool.write(f, pool.raw, k)),
                       (name + ".nested_absmax", "F32", [nn], 4 * nn, lambda f, b=nested: f.write(b)),
                       (name + ".nested_quant_map", "F32", [256], 1024, lambda f: f.write(dmap)),
                       (name + ".quant_map", "F32", [16], 64, lambda f: f.write(qmap)),
                       (name + ".quant_state.bitsandbytes__nf4", "U8", [len(js)], len(js),
                        lambda f, b=js: f.write(b))]
            elif kind == "norm":
                b = ones.setdefault(n, np.full(n, 0x3F80, dtype=np.uint16).tobytes())
                yield [(name, "BF16", shape, 2 * n, lambda f, b=b: f.write(b))]
            else:
                yield [(name, "BF16", shape, 2 * n, lambda f, k=2 * n: pool.write(f, pool.bf16, k, 2))]

    # shards: a projection's six tensors stay in one shard
    shards, cur, size = [], [], 0
    limit = int(a.shard_gb * 1e9)
    for group in groups():
        gs = sum(x[3] for x in group)
        if cur and size + gs > limit:
            shards.append(cur)
            cur, size = [], 0
        cur += group
        size += gs
    shards.append(cur)

    if a.dry_run:
        total = sum(x[3] for sh in shards for x in sh)
        q = sum(x[3] for sh in shards for x in sh if x[1] == "U8" and "." not in x[0].rsplit("weight", 1)[1])
        print(f"{a.preset}: {sum(len(sh) for sh in shards)} tensors, {total / 1e9:.2f} GB ({total / 2**30:.2f} "
              f"GiB) in {len(shards)} shards; 4-bit codes {q / 1e9:.2f} GB")
        return
    # one process per shard (forked: the random block is shared), each shard from its own offset
    weight_map, total, kids = {}, 0, {}
    for k, shard in enumerate(shards):
        fname = f"model-{k + 1:05d}-of-{len(shards):05d}.safetensors"
        header, o = {"__metadata__": {"format": "pt"}}, 0
        for name, dt, shape, n, _ in shard:
            header[name] = {"dtype": dt, "shape": shape, "data_offsets": [o, o + n]}
            o += n
            weight_map[name] = fname
        total += o
        h = json.dumps(header, separators=(",", ":")).encode()
        h += b" " * (-len(h) % 8)
        path = os.path.join(a.out, fname)
        while len(kids) >= max(1, a.jobs):
            pid, status = os.wait()
            if status:
                sys.exit(f"{kids[pid]}: the writer failed")
            del kids[pid]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                pool.shift = k * 7919 * 4096
                with open(path + ".tmp", "wb", buffering=16 << 20) as f:
                    f.write(struct.pack("<Q", len(h)) + h)
                    for name, dt, shape, n, w in shard:
                        w(f)
                if os.path.getsize(path + ".tmp") != 8 + len(h) + o:
                    print(f"{path}: wrote {os.path.getsize(path + '.tmp')} bytes, expected {8 + len(h) + o}",
                          file=sys.stderr)
                else:
                    os.replace(path + ".tmp", path)
                    code = 0
            except Exception as e:  # noqa: B902 (the parent reports it)
                print(f"{path}: {e}", file=sys.stderr)
            os._exit(code)
        kids[pid] = path
    while kids:
        pid, status = os.wait()
        if status:
            sys.exit(f"{kids[pid]}: the writer failed")
        del kids[pid]
    with open(os.path.join(a.out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    dt = time.time() - t0
    print(f"{a.out}: {len(weight_map)} tensors, {total / 1e9:.2f} GB ({total / 2**30:.2f} GiB) in "
          f"{len(shards)} shards, {dt:.1f} s ({total / 1e9 / max(dt, 1e-9):.2f} GB/s)")


if __name__ == "__main__":
    main()
