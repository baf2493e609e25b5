#!/usr/bin/env python3
"""Checks the GGUF files `tern export gguf` writes, independently of tern's own reader:

  1. with the `gguf` package (PyPI, llama.cpp's gguf-py): every file parses; the metadata
     (architecture keys, file type, tokenizer arrays, special ids, chat template where the base has
     one, adapter keys) holds what the model's config.json / tokenizer say; every tensor, dequantized
     by gguf-py, equals PEFT's merged model (merge_and_unload, float32) in llama.cpp's layout (Q/K
     rows permuted for the llama architecture; rope_freqs for Llama 3 RoPE) within the type's step:
     f32 1e-6, f16 and bf16 their rounding, Q8_0 half a quantisation step of the block; the LoRA
     file's lora_a / lora_b equal the adapter's A and (permuted) B exactly in f32;
  2. when llama-cpp-python is importable (built from its sdist; not needed otherwise): llama.cpp
     loads the merged f32 GGUF and its logits match transformers on PEFT's merged model within
     1e-4, and the base f32 GGUF + the GGUF LoRA matches PEFT's unmerged model (Mistral: the
     positions inside its sliding window, which llama.cpp's llama architecture does not have);
     the demo model's GGUF tokenizes prompts as transformers does and continues them greedily
     token for token; the Q4_K_M file loads and its logits are printed next to f32's.

    python3 tools/check_gguf.py build/tern
"""
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers as tf
import peft
import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLD = os.path.join(ROOT, "tests", "data", "golden")
CASES = ["llama", "qwen2", "qwen3", "mistral"]
ROLE = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
        "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"}
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def gname(hf):
    if hf == "model.embed_tokens.weight":
        return "token_embd.weight"
    if hf == "model.norm.weight":
        return "output_norm.weight"
    if hf == "lm_head.weight":
        return "output.weight"
    p = hf.split(".")
    assert p[0] == "model" and p[1] == "layers"
    rest = ".".join(p[3:-1])
    return f"blk.{p[2]}.{ROLE[rest]}.{p[-1]}"


def permute(w, n_head):
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def field(r, key):
    f = r.fields.get(key)
    return None if f is None else f.contents()


def peft_models(case):
    mdir = os.path.join(GOLD, case, "model")
    base = tf.AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    pm = peft.PeftModel.from_pretrained(base, os.path.join(GOLD, case, "adapter_final"))
    return pm


def tern(binary, *args):
    subprocess.run([binary, *args], check=True, stdout=subprocess.DEVNULL)


def check_model_file(path, case, typ, merged_sd, cfg):
    r = gguf.GGUFReader(path)
    arch = "llama" if cfg.model_type in ("llama", "mistral") else cfg.model_type
    want = {"general.architecture": arch, "general.type": "model",
            f"{arch}.block_count": cfg.num_hidden_layers, f"{arch}.embedding_length": cfg.hidden_size,
            f"{arch}.feed_forward_length": cfg.intermediate_size,
            f"{arch}.attention.head_count": cfg.num_attention_heads,
            f"{arch}.attention.head_count_kv": cfg.num_key_value_heads,
            f"{arch}.context_length": cfg.max_position_embeddings,
            f"{arch}.attention.key_length": getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads,
            "general.file_type": {"f32": 0, "f16": 1, "bf16": 32, "q8_0": 7}[typ],
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    for k, v in want.items():
        got = field(r, k)
        if got != v:
            fail(f"{case} {typ}: {k} = {got!r}, expected {v!r}")
    eps = field(r, f"{arch}.attention.layer_norm_rms_epsilon")
    if not math.isclose(eps, cfg.rms_norm_eps, rel_tol=1e-6):
        fail(f"{case} {typ}: rms eps {eps}")
    toks = field(r, "tokenizer.ggml.tokens")
    vocab = tf.PreTrainedTokenizerFast(tokenizer_file=os.path.join(GOLD, case, "model", "tokenizer.json")).get_vocab()
    if len(toks) != cfg.vocab_size or any(toks[i] != t for t, i in vocab.items()):
        fail(f"{case} {typ}: tokens {len(toks)} {toks[:3]} differ from tokenizer.json")
    tensors = {t.name: t for t in r.tensors}
    expect = {}
    for k, v in merged_sd.items():
        w = v.detach().float().numpy()
        if arch == "llama" and (".q_proj." in k or ".k_proj." in k):
            w = permute(w, cfg.num_attention_heads if ".q_proj." in k else cfg.num_key_value_heads)
        expect[gname(k)] = w
    if getattr(cfg, "rope_parameters", None) and cfg.rope_parameters.get("rope_type") == "llama3" and arch == "llama":
        rp = cfg.rope_parameters
        dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        freqs = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        old, lo, hi, fac = rp["original_max_position_embeddings"], rp["low_freq_factor"], rp["high_freq_factor"], rp["factor"]
        f = []
        for fr in freqs.tolist():
            wl = 2 * math.pi / fr
            if wl < old / hi:
                f.append(1.0)
            elif wl > old / lo:
                f.append(fac)
            else:
                s = (old / wl - lo) / (hi - lo)
                f.append(1 / ((1 - s) / fac + s))
        expect["rope_freqs.weight"] = np.array(f, dtype=np.float32)
    if set(expect) != set(tensors):
        fail(f"{case} {typ}: tensor names differ: missing {sorted(set(expect) - set(tensors))[:4]}, "
             f"extra {sorted(set(tensors) - set(expect))[:4]}")
    worst = 0.0
    for name, w in expect.items():
        t = tensors.get(name)
        if t is None:
            continue
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        if w.ndim == 1 or name == "rope_freqs.weight":
            tol = np.full(w.shape, 1e-6 * max(1.0, float(np.abs(w).max())))
            if t.tensor_type != gguf.GGMLQuantizationType.F32:
                fail(f"{case} {typ}: {name} is {t.tensor_type.name}, expected F32")
        elif typ == "f32":
            tol = np.full(w.shape, 1e-6)
        elif typ == "f16":
            tol = np.abs(w) * 2.0 ** -11 + 2.0 ** -25
        elif typ == "bf16":
            tol = np.abs(w) * 2.0 ** -8
        else:
            blocks = np.abs(w.reshape(-1, 32)).max(axis=1) / 127.0
            # half a step of the block's f16 scale d, plus 127 times d's own f16 rounding
            tol = np.repeat(blocks, 32).reshape(w.shape) * (0.5 + 127 * 2.0 ** -11) + 1e-12
        err = np.abs(got - w)
        worst = max(worst, float((err / np.maximum(tol, 1e-30)).max()))
        if (err > tol).any():
            fail(f"{case} {typ}: {name} differs by up to {err.max():.3g} (allowed {tol.max():.3g})")
    return worst


def check_lora_file(path, case, pm, cfg):
    r = gguf.GGUFReader(path)
    arch = "llama" if cfg.model_type in ("llama", "mistral") else cfg.model_type
    lc = pm.peft_config["default"]
    alpha = lc.lora_alpha * (math.sqrt(lc.r) if lc.use_rslora else 1.0)
    for k, v in {"general.type": "adapter", "adapter.type": "lora", "general.architecture": arch}.items():
        if field(r, k) != v:
            fail(f"{case} lora: {k} = {field(r, k)!r}, expected {v!r}")
    if not math.isclose(field(r, "adapter.lora.alpha"), alpha, rel_tol=1e-6):
        fail(f"{case} lora: alpha {field(r, 'adapter.lora.alpha')} expected {alpha}")
    tensors = {t.name: t for t in r.tensors}
    n = 0
    for name, p in pm.named_parameters():
        if "lora_A" not in name and "lora_B" not in name:
            continue
        hf = name.replace("base_model.model.", "").replace(".lora_A.default", "").replace(".lora_B.default", "")
        g = gname(hf) + (".lora_a" if "lora_A" in name else ".lora_b")
        w = p.detach().float().numpy()
        if "lora_B" in name and arch == "llama" and (".q_proj." in hf or ".k_proj." in hf):
            w = permute(w, cfg.num_attention_heads if ".q_proj." in hf else cfg.num_key_value_heads)
        t = tensors.get(g)
        if t is None:
            fail(f"{case} lora: {g} missing")
            continue
        if list(t.shape) != [w.shape[1], w.shape[0]]:
            fail(f"{case} lora: {g} ne {list(t.shape)}, expected {[w.shape[1], w.shape[0]]}")
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        if not np.array_equal(got, w):
            fail(f"{case} lora: {g} differs by {np.abs(got - w).max():.3g}")
        n += 1
    if n != len(tensors):
        fail(f"{case} lora: {len(tensors)} tensors in the file, {n} in the adapter")


def llama_cpp_logits(path, ids, lora=None):
    from llama_cpp import Llama
    # f32 KV cache (the default f16 cache alone moves logits by ~1e-3)
    kw = dict(model_path=path, n_ctx=64, logits_all=True, verbose=False, n_threads=1, type_k=0, type_v=0)
    if lora:
        kw["lora_path"] = lora
    m = Llama(**kw)
    m.reset()
    m.eval(ids)
    out = np.array(m.scores[: len(ids)], dtype=np.float32)
    return out


def check_q4_k_m(binary, d):
    """A random llama with rows of 256 (the k-quants' super-block): the Q4_K_M type choices and
    gguf-py's decode of tern's Q4_K / Q6_K blocks against the source weights."""
    mdir = os.path.join(d, "k-model")
    cfg = tf.LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=8, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = tf.LlamaForCausalLM(cfg).float()
    model.save_pretrained(mdir)
    import shutil
    shutil.copy(os.path.join(GOLD, "llama", "model", "tokenizer.json"), mdir)
    out = os.path.join(d, "k.gguf")
    tern(binary, "export", "gguf", "--base", mdir, "--out", out, "--type", "q4_k_m")
    r = gguf.GGUFReader(out)
    if field(r, "general.file_type") != 15:
        fail(f"q4_k_m: general.file_type {field(r, 'general.file_type')}")
    sd = model.state_dict()
    T = gguf.GGMLQuantizationType
    worst = {T.Q4_K: 0.0, T.Q6_K: 0.0}
    for t in r.tensors:
        if t.name.endswith("norm.weight"):
            continue
        hf = [k for k in sd if gname(k) == t.name][0]
        w = sd[hf].float().numpy()
        if ".q_proj." in hf or ".k_proj." in hf:
            w = permute(w, 4 if ".q_proj." in hf else 2)
        layer = int(t.name.split(".")[1]) if t.name.startswith("blk.") else -1
        more = layer >= 0 and (layer < 1 or layer >= 7 or (layer - 1) % 3 == 2)
        want = T.Q6_K if t.name == "output.weight" or (more and (".attn_v." in t.name or ".ffn_down." in t.name)) else T.Q4_K
        if t.tensor_type != want:
            fail(f"q4_k_m: {t.name} is {t.tensor_type.name}, expected {want.name}")
            continue
        got = gguf.quants.dequantize(t.data, t.tensor_type).reshape(w.shape)
        rel = float(np.linalg.norm(got - w) / np.linalg.norm(w))
        worst[want] = max(worst[want], rel)
    print(f"q4_k_m   model: {len(r.tensors)} tensors, gguf-py decodes them; relative error Q4_K {worst[T.Q4_K]:.4f}, "
          f"Q6_K {worst[T.Q6_K]:.4f}")
    if worst[T.Q4_K] > 0.12 or worst[T.Q6_K] > 0.03:
        fail("q4_k_m: error too large")
    return mdir, out


def check_demo(binary, d):
    """llama.cpp on the demo model's f32 GGUF (a real byte-level BPE tokenizer): tokenization of
    five alpaca prompts equal to transformers', greedy continuations equal token for token."""
    import json
    from llama_cpp import Llama
    mdir = os.path.join(ROOT, "demo", "model")
    out = os.path.join(d, "demo.gguf")
    tern(binary, "export", "gguf", "--base", mdir, "--out", out, "--type", "f32")
    tok = tf.AutoTokenizer.from_pretrained(mdir)
    m = tf.AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32)
    L = Llama(model_path=out, n_ctx=256, verbose=False, n_threads=1, type_k=0, type_v=0, logits_all=True)
    rows = [json.loads(x) for x in open(os.path.join(ROOT, "demo", "data", "train.jsonl"))][:5]
    n_ok = 0
    for r in rows:
        text = ("Below is an instruction that describes a task. Write a response that appropriately completes "
                "the request.\n\n### Instruction:\n" + r["instruction"] + "\n\n### Response:\n")
        hf_ids = tok(text)["input_ids"]
        lc_ids = L.tokenize(text.encode(), add_bos=True, special=False)
        with torch.no_grad():
            ref = m.generate(torch.tensor([hf_ids]), max_new_tokens=24, do_sample=False)[0][len(hf_ids):].tolist()
        L.reset()
        L.eval(lc_ids)
        gen = []
        for _ in range(24):
            t = int(np.argmax(L.scores[L.n_tokens - 1]))
            gen.append(t)
            if t == tok.eos_token_id:
                break
            L.eval([t])
        ok = hf_ids == lc_ids and ref == gen
        n_ok += ok
        if not ok:
            fail(f"demo: prompt {r['instruction']!r}: tokens equal {hf_ids == lc_ids}, greedy {ref} vs {gen}")
    print(f"demo     llama.cpp: {n_ok} of {len(rows)} prompts tokenized as transformers does and continued "
          f"greedily token for token")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build", "tern")
    torch.set_num_threads(1)
    try:
        import llama_cpp  # noqa: F401
        have_lcpp = True
    except ImportError:
        have_lcpp = False
        print("llama-cpp-python not importable: the llama.cpp load check is not run")
    ids = [1] + list(range(3, 40, 2)) + [5, 9, 17, 33, 65, 127]
    with tempfile.TemporaryDirectory() as d:
        for case in CASES:
            mdir = os.path.join(GOLD, case, "model")
            adir = os.path.join(GOLD, case, "adapter_final")
            cfg = tf.AutoConfig.from_pretrained(mdir)
            pm = peft_models(case)
            lora = os.path.join(d, f"{case}-lora.gguf")
            tern(binary, "export", "gguf", "--base", mdir, "--adapter", adir, "--out", lora, "--lora")
            check_lora_file(lora, case, pm, cfg)
            print(f"{case:8s} lora: checked")
            with torch.no_grad():
                unmerged = pm(input_ids=torch.tensor([ids])).logits[0].numpy()
            merged = pm.merge_and_unload()
            with torch.no_grad():
                ref = merged(input_ids=torch.tensor([ids])).logits[0].numpy()
            sd = merged.state_dict()
            if cfg.tie_word_embeddings:
                sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
            for typ in ("f32", "f16", "bf16", "q8_0"):
                out = os.path.join(d, f"{case}-{typ}.gguf")
                tern(binary, "export", "gguf", "--base", mdir, "--adapter", adir, "--out", out, "--type", typ)
                worst = check_model_file(out, case, typ, sd, cfg)
                print(f"{case:8s} {typ:5s} model: {len(gguf.GGUFReader(out).tensors)} tensors, worst error "
                      f"{worst:.2f} of the type's step")
            if have_lcpp:
                base = os.path.join(d, f"{case}-base.gguf")
                tern(binary, "export", "gguf", "--base", mdir, "--out", base, "--type", "f32")
                # llama.cpp's llama architecture has no sliding window: Mistral's positions are
                # compared up to the window (where it changes nothing)
                n = min(len(ids), getattr(cfg, "sliding_window", None) or len(ids))
                got = llama_cpp_logits(os.path.join(d, f"{case}-f32.gguf"), ids)[:n]
                e1 = float(np.abs(got - ref[:n]).max())
                g1 = (got.argmax(-1) == ref[:n].argmax(-1)).all()
                got2 = llama_cpp_logits(base, ids, lora=lora)[:n]
                e2 = float(np.abs(got2 - unmerged[:n]).max())
                g2 = (got2.argmax(-1) == unmerged[:n].argmax(-1)).all()
                print(f"{case:8s} llama.cpp ({n} positions): merged f32 max |logits - transformers| {e1:.3g}, "
                      f"argmax equal {g1}; base + GGUF LoRA vs PEFT {e2:.3g}, argmax equal {g2}")
                if e1 > 1e-4 or e2 > 1e-4 or not g1 or not g2:
                    fail(f"{case}: llama.cpp logits differ ({e1:.3g}, {e2:.3g})")
        if have_lcpp:
            check_demo(binary, d)
        kdir, kfile = check_q4_k_m(binary, d)
        if have_lcpp:
            m = tf.AutoModelForCausalLM.from_pretrained(kdir, dtype=torch.float32, attn_implementation="eager")
            with torch.no_grad():
                ref = m(input_ids=torch.tensor([ids])).logits[0].numpy()
            got = llama_cpp_logits(kfile, ids)
            agree = float((got.argmax(-1) == ref.argmax(-1)).mean())
            print(f"q4_k_m   llama.cpp: max |logits - transformers (f32)| {np.abs(got - ref).max():.3g}, "
                  f"argmax agreement {agree:.2f}")
    print("FAILED" if failures else "all GGUF checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
