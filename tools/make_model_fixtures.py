#!/usr/bin/env python3
"""Writes the tiny model fixtures of tests/data/models/ with transformers' save_pretrained.

Each model has random weights (every parameter, norms and biases included, so that a tensor that
lands in the wrong place shows) and odd sizes where the architecture allows them (NF4 blocks that
span rows, an odd element count with a padding nibble, head_dim != D/H). Also writes config.json
files only for mixtral and bitnet (the "not supported yet" path) and, when bitsandbytes imports,
a real bitsandbytes 4-bit checkpoint of the llama fixture (bitsandbytes' CPU quantizer: the
files are loaded as given, so any quantizer differences do not matter).

    pip install torch transformers bitsandbytes
    python3 tools/make_model_fixtures.py [--out tests/data/models]
"""
import argparse
import json
import os
import shutil

import torch
import transformers as tf

MODELS = {
    # name: (config class, kwargs, dtype)
    "llama": (tf.LlamaConfig, dict(hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=256,
                                  rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                                "high_freq_factor": 4.0,
                                                "original_max_position_embeddings": 64},
                                  max_position_embeddings=512), torch.bfloat16),
    "mistral": (tf.MistralConfig, dict(hidden_size=48, intermediate_size=112, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=1, vocab_size=200,
                                      sliding_window=32), torch.float16),
    "qwen2": (tf.Qwen2Config, dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=200,
                                  tie_word_embeddings=False), torch.float32),
    "qwen3": (tf.Qwen3Config, dict(hidden_size=63, intermediate_size=97, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=10, vocab_size=251,
                                  tie_word_embeddings=False), torch.bfloat16),
    "llama_tied": (tf.LlamaConfig, dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3,
                                       num_attention_heads=8, num_key_value_heads=8, vocab_size=300,
                                       tie_word_embeddings=True, attention_bias=True), torch.bfloat16),
}


OLD_SPELLING = ("mistral", "qwen2")


def build(name, cls, kw, dtype, out):
    torch.manual_seed(sum(map(ord, name)))
    cfg = cls(**kw, bos_token_id=1, eos_token_id=2)
    model = tf.AutoModelForCausalLM.from_config(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model = model.to(dtype)
    d = os.path.join(out, name)
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)
    return d, model


def write_bnb(src, out):
    import bitsandbytes  # noqa: F401
    q = tf.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)
    model = tf.AutoModelForCausalLM.from_pretrained(src, quantization_config=q, device_map="cpu")
    d = os.path.join(out, "llama_bnb")
    shutil.rmtree(d, ignore_errors=True)
    model.save_pretrained(d, safe_serialization=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "models"))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for name, (cls, kw, dtype) in MODELS.items():
        d, _ = build(name, cls, kw, dtype, a.out)
        for f in os.listdir(d):
            if f == "generation_config.json":
                os.remove(os.path.join(d, f))
        if name in OLD_SPELLING:  # rope_theta / torch_dtype as transformers 4.x wrote them
            p = os.path.join(d, "config.json")
            c = json.load(open(p))
            rp = c.pop("rope_parameters")
            c["rope_theta"] = rp.pop("rope_theta")
            c["rope_scaling"] = None if rp.get("rope_type") == "default" else rp
            c["torch_dtype"] = c.pop("dtype")
            with open(p, "w") as f:
                json.dump(c, f, indent=2, sort_keys=True)
        print(name, sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d)), "bytes")
    # config.json only: parsed, answered "not supported yet".
    cfgs = {
        "mixtral": tf.MixtralConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                                    num_key_value_heads=2, vocab_size=256, num_local_experts=4,
                                    num_experts_per_tok=2),
    }
    try:
        cfgs["bitnet"] = tf.BitNetConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
    except AttributeError:
        pass
    for name, c in cfgs.items():
        d = os.path.join(a.out, name)
        shutil.rmtree(d, ignore_errors=True)
        c.bos_token_id, c.eos_token_id = 1, 2
        c.save_pretrained(d)
    try:
        write_bnb(os.path.join(a.out, "llama"), a.out)
        print("llama_bnb written")
    except Exception as e:  # bitsandbytes missing or its CPU path unavailable
        print("no bitsandbytes checkpoint:", e)


if __name__ == "__main__":
    main()
