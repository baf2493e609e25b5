#!/usr/bin/env python3
"""Writes tests/data/golden/<case>/: golden LoRA training references from plain PyTorch + PEFT.

For each case (llama, mistral, qwen2, qwen3, llama_nf4) this builds a small random model with
transformers, an initial PEFT adapter whose lora_A and lora_B are all non-zero, 40 pre-tokenized
rows of 24 tokens (masked prompts, right padding), and runs 10 optimizer steps of a plain PyTorch
loop: micro-batch 2, gradient accumulation 2, the loss of a step normalised over the trained targets
of the whole accumulation window, torch AdamW, global-norm clipping at 1.0, warmup + cosine
(transformers.get_cosine_schedule_with_warmup, stepped after each optimizer step). Everything is
float32 with attn_implementation="eager", deterministic algorithms, one thread, fixed seeds.

Per case it writes (layout and meaning: tests/data/golden/README.md):
  model/               config.json + model.safetensors (float32, save_pretrained) + tokenizer.json
  adapter_init/        the starting adapter (PEFT save_pretrained)
  adapter_final/       the adapter after the 10 steps
  data.safetensors     input_ids, labels, attention_mask: I32 [40, 24], in training order
  data.jsonl           the same rows unpadded, in the order that tern's two seed-1 shuffles turn
                       into training order (see tern_row_order())
  grads.safetensors    the accumulated LoRA gradients of the first optimizer step (before clipping)
  golden.json          hyper-parameters, the 10-step trajectory (lr, loss, grad norm, n_trained)
  config.yaml          a tern config for the same run

llama_save, qwen3_save: PEFT modules_to_save ["embed_tokens", "lm_head"] on top of LoRA (q_proj,
v_proj): both modules are trained in full (PEFT's ModulesToSaveWrapper copies; with qwen3's tied
embeddings the two copies are independent, PEFT's default ensure_weight_tying=False), their
gradients are in grads.safetensors and their weights in the adapters under PEFT's saved names
(base_model.model.model.embed_tokens.weight, base_model.model.lm_head.weight).

llama_nf4: the reference replaces the base projection weights (q/k/v/o/gate/up/down) by
dequantize(quantize_nf4(W)) with bitsandbytes' algorithm (double quantization, blocksize 64), using
tools/nf4_golden.py; model/ keeps the original fp32 weights (tern quantizes them on load).

    pip install torch transformers peft safetensors numpy tokenizers
    python3 tools/make_golden.py [--out tests/data/golden] [--cases llama,mistral]
"""
import argparse
import copy
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import safetensors  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nf4_golden  # noqa: E402

S = 24
N_ROWS = 40
MICRO = 2
ACCUM = 2
STEPS = 10
LR = 2e-3
WARMUP = 3
WD = 0.01
MAX_GRAD_NORM = 1.0
BETAS = (0.9, 0.999)
EPS = 1e-8
SEED = 1  # tern's config seed; the data.jsonl order depends on it
PAD_TOL = 1e-5  # padded vs unpadded logits (make_golden_bitnet.py: quantization levels may flip)
VOCAB = 128
PAD, BOS, EOS = 0, 1, 2
ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

LLAMA_KW = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64,
                rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                tie_word_embeddings=False)

CASES = {
    # name: (config class, kwargs, lora dict, base_format)
    "llama": (tf.LlamaConfig, LLAMA_KW, dict(r=8, alpha=16, rslora=False, targets=ALL7), "f32"),
    "mistral": (tf.MistralConfig,
                dict(hidden_size=64, intermediate_size=80, num_hidden_layers=2, num_attention_heads=4,
                     num_key_value_heads=2, vocab_size=VOCAB, sliding_window=8, max_position_embeddings=64,
                     tie_word_embeddings=False),
                dict(r=4, alpha=8, rslora=False, targets=["q_proj", "v_proj"]), "f32"),
    "qwen2": (tf.Qwen2Config,
              dict(hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64, use_sliding_window=False,
                   tie_word_embeddings=False),
              dict(r=8, alpha=16, rslora=True, targets=["q_proj", "k_proj", "v_proj", "o_proj"]), "f32"),
    "qwen3": (tf.Qwen3Config,
              dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                   num_key_value_heads=2, head_dim=32, vocab_size=VOCAB, max_position_embeddings=64,
                   use_sliding_window=False, tie_word_embeddings=True),
              dict(r=8, alpha=16, rslora=False, targets=ALL7), "f32"),
    "llama_nf4": (tf.LlamaConfig, LLAMA_KW, dict(r=8, alpha=16, rslora=False, targets=ALL7), "nf4-dq"),
    "llama_save": (tf.LlamaConfig, LLAMA_KW,
                   dict(r=8, alpha=16, rslora=False, targets=["q_proj", "v_proj"],
                        save=["embed_tokens", "lm_head"]), "f32"),
    "qwen3_save": (tf.Qwen3Config,
                   dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=2, head_dim=32, vocab_size=VOCAB, max_position_embeddings=64,
                        use_sliding_window=False, tie_word_embeddings=True),
                   dict(r=8, alpha=16, rslora=False, targets=["q_proj", "v_proj"],
                        save=["embed_tokens", "lm_head"]), "f32"),
}


def case_seed(name):
    return 1000 + sum((i + 1) * ord(c) for i, c in enumerate(name))


# ---------------------------------------------------------------------------------------------
# model, adapter, data

def build_model(name, cls, kw):
    cfg = cls(**kw, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, rms_norm_eps=1e-6,
              attn_implementation="eager")
    torch.manual_seed(case_seed(name))
    model = tf.AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").float()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:  # input/post-attention/final norms, q_norm/k_norm
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif "lm_head" in pname:
                p.normal_(0.0, 0.1)
            else:  # projections and the embedding (tied with the lm_head for qwen3)
                p.normal_(0.0, 0.05)
    model.eval()  # no dropout anywhere (attention_dropout is 0 anyway)
    return model


def make_data(rng):
    """40 rows: random length 6..24 (some full), prompt 1..len-2 tokens masked, right padding."""
    ids = np.full((N_ROWS, S), PAD, dtype=np.int32)
    labels = np.full((N_ROWS, S), -100, dtype=np.int32)
    mask = np.zeros((N_ROWS, S), dtype=np.int32)
    for r in range(N_ROWS):
        L = S if r % 7 == 3 else int(rng.integers(6, S + 1))
        P = int(rng.integers(1, L - 1))
        ids[r, :L] = rng.integers(3, VOCAB, size=L)
        labels[r, P:L] = ids[r, P:L]
        mask[r, :L] = 1
    return ids, labels, mask


def splitmix64(state):
    state = (state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return state, z ^ (z >> 31)


def fisher_yates(n, state):
    v = list(range(n))
    for i in range(n - 1, 0, -1):
        state, z = splitmix64(state)
        j = z % (i + 1)
        v[i], v[j] = v[j], v[i]
    return v


def tern_row_order(n, seed):
    """Which data.jsonl line `tern train` (sample_packing false, val_set_size 0, seed) uses as its
    i-th training row in the first epoch. Two shuffles, both Fisher-Yates from the last index over
    splitmix64: the data loader's (src/data/data.c, state = seed; row p = file sample d[p]), then the
    trainer's epoch order (src/train/trainer.c epoch_order, state = seed * 0x9e3779b97f4a7c15 ^ epoch
    ^ 0x65706f6368; i-th row used = row e[i]). Returns line[i] = d[e[i]]."""
    d = fisher_yates(n, seed)
    e = fisher_yates(n, ((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF) ^ 0 ^ 0x65706F6368)
    return [d[e[i]] for i in range(n)]


def lora_scale(lo):
    return lo["alpha"] / math.sqrt(lo["r"]) if lo["rslora"] else lo["alpha"] / lo["r"]


def adapter_name(pname):
    """PEFT parameter name -> adapter file tensor name (modules_to_save copies lose
    ".modules_to_save.default", as get_peft_model_state_dict strips it)."""
    return (pname.replace(".lora_A.default.", ".lora_A.").replace(".lora_B.default.", ".lora_B.")
            .replace(".modules_to_save.default.", "."))


def save_adapter(pm, d):
    """save_pretrained, then target_modules sorted (PEFT writes a set's order, which varies per run);
    PEFT's model-card README.md is dropped."""
    pm.save_pretrained(d, safe_serialization=True)
    if os.path.exists(os.path.join(d, "README.md")):
        os.remove(os.path.join(d, "README.md"))
    p = os.path.join(d, "adapter_config.json")
    with open(p) as f:
        c = json.load(f)
    c["target_modules"] = sorted(c["target_modules"])
    with open(p, "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
        f.write("\n")


def lora_params(pm):
    """The trainable parameters as the adapter file names them: LoRA A/B and modules_to_save."""
    return [(adapter_name(n), p) for n, p in pm.named_parameters() if p.requires_grad]


def quantize_nf4_dq(w):
    """dequantize(quantize_nf4(W)), bitsandbytes' algorithm with double quantization, blocksize 64."""
    x = w.detach().cpu().numpy().astype(np.float32).reshape(-1)
    packed, absmax = nf4_golden.nf4_quantize(x, 64)
    _qabs, _nested, _offset, rec = nf4_golden.double_quant(absmax, nf4_golden.dynamic_map(fused=True))
    codes = np.stack([packed >> 4, packed & 15], axis=1).reshape(-1)[:x.size]
    deq = (nf4_golden.NF4_CODE[codes] * np.repeat(rec, 64)[:x.size]).astype(np.float32)
    return torch.from_numpy(deq.reshape(w.shape))


# ---------------------------------------------------------------------------------------------
# reference computations

def micro_loss_sum(model, ids, labels, mask):
    """Summed token cross-entropy (targets = labels shifted by one, -100 ignored) and the count."""
    b = ids.shape[0]
    pos = torch.arange(S, dtype=torch.long).unsqueeze(0).expand(b, S)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    z = logits[:, :-1, :].reshape(-1, logits.shape[-1])
    y = labels[:, 1:].reshape(-1)
    return torch.nn.functional.cross_entropy(z, y, ignore_index=-100, reduction="sum"), int((y != -100).sum())


def window_rows(k):
    return [(k * MICRO * ACCUM + MICRO * j, k * MICRO * ACCUM + MICRO * j + MICRO) for j in range(ACCUM)]


def check_sliding_window(model, ids, mask, W):
    """transformers' eager sliding window vs a hand-made additive 4-D mask (key j visible from query
    i when j <= i, i - j < W and j is a real token)."""
    b = ids.shape[0]
    pos = torch.arange(S).unsqueeze(0).expand(b, S)
    i = torch.arange(S).view(S, 1)
    j = torch.arange(S).view(1, S)
    neg = torch.finfo(torch.float32).min
    with torch.no_grad():
        out = {}
        for name, win in (("window", W), ("window+1", W + 1), ("none", 10 ** 9)):
            allowed = (j <= i) & (i - j < win)
            allowed = allowed.unsqueeze(0) & (mask.bool().view(b, 1, S))
            m4 = torch.where(allowed, 0.0, neg).view(b, 1, S, S).float()
            out[name] = model(input_ids=ids, attention_mask=m4, position_ids=pos, use_cache=False).logits
        ref = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    real = mask.bool()
    diffs = {k: float((v - ref).abs()[real].max()) for k, v in out.items()}
    return diffs


def merged_forward_check(base_cfg_model, pm, lo, ids, labels, mask):
    """PEFT forward == forward of a copy of the base with W + s * B @ A merged by hand."""
    s = lora_scale(lo)
    merged = copy.deepcopy(base_cfg_model)
    sd = {n: p for n, p in pm.named_parameters()}
    with torch.no_grad():
        for name, mod in merged.named_modules():
            if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in lo["targets"]:
                a = sd[f"base_model.model.{name}.lora_A.default.weight"]
                bb = sd[f"base_model.model.{name}.lora_B.default.weight"]
                mod.weight += s * (bb @ a)
        l1, n1 = micro_loss_sum(pm, ids, labels, mask)
        l2, n2 = micro_loss_sum(merged, ids, labels, mask)
        pos = torch.arange(S).unsqueeze(0).expand(ids.shape[0], S)
        z1 = pm(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
        z2 = merged(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits
    return float((z1 - z2).abs().max()), float(l1 / n1), float(l2 / n2)


def train(pm, tid, tlab, tmask, verbose):
    """The reference loop. Returns the trajectory and the first step's accumulated gradients.

    tmask is the attention mask passed to the model. (The float64 check passes all ones: with right
    padding and causal attention that changes nothing for the real tokens, while transformers' eager
    float64 path turns the fully masked rows of padding queries that a sliding window produces into
    NaN, which then reaches the real tokens through masked keys; float32 stays finite.)"""
    trainable = [p for n, p in pm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n or ".modules_to_save." in n
                             for n, p in pm.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(trainable, lr=LR, betas=BETAS, eps=EPS, weight_decay=WD)
    sched = tf.get_cosine_schedule_with_warmup(opt, num_warmup_steps=WARMUP, num_training_steps=STEPS)
    pm.train()  # lora_dropout is 0 and the base has no dropout: train() changes nothing numerically
    traj, grads = [], None
    for k in range(STEPS):
        lr = sched.get_last_lr()[0]
        wins = window_rows(k)
        n_tr = int(sum(int((tlab[a:b, 1:] != -100).sum()) for a, b in wins))
        opt.zero_grad(set_to_none=True)
        loss = 0.0
        for a, b in wins:
            ls, _n = micro_loss_sum(pm, tid[a:b], tlab[a:b], tmask[a:b])
            l = ls / n_tr
            l.backward()
            loss += float(l.detach())
        if k == 0:
            grads = {adapter_name(n): p.grad.detach().clone().contiguous() for n, p in pm.named_parameters()
                     if p.requires_grad}
        gn = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm=MAX_GRAD_NORM))
        opt.step()
        sched.step()
        traj.append({"step": k + 1, "lr": lr, "loss": loss, "grad_norm": gn, "n_trained": n_tr})
        if verbose:
            print(f"   step {k + 1:2d} lr {lr:.6e} loss {loss:.8f} grad_norm {gn:.6e} n_trained {n_tr}")
    return traj, grads


# ---------------------------------------------------------------------------------------------

def write_tokenizer(d):
    """A 128-id tokenizer.json (tern train loads the model's tokenizer; pretokenized data never
    encodes text with it): BPE without merges over single printable ASCII characters, plus the
    special tokens <pad> 0, <s> 1, </s> 2 and unreachable fillers up to id 127."""
    from tokenizers import AddedToken, Tokenizer, models
    vocab = {"<pad>": PAD, "<s>": BOS, "</s>": EOS}
    for i in range(3, VOCAB):
        vocab[chr(0x20 + i - 3) if i - 3 < 95 else f"<extra_{i}>"] = i
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<pad>"))
    tok.add_special_tokens([AddedToken(t, special=True) for t in ("<pad>", "<s>", "</s>")])
    tok.save(os.path.join(d, "tokenizer.json"))
    assert Tokenizer.from_file(os.path.join(d, "tokenizer.json")).get_vocab_size() == VOCAB


def yaml_list(xs):
    return "[" + ", ".join(xs) + "]"


def write_config_yaml(path, case, rel, lo, base_format):
    text = f"""# tern config for the golden case '{case}' (tools/make_golden.py). Paths are relative to the
# repository root: run `tern train {rel}/config.yaml` from there.
base_model: {rel}/model
lora_model_dir: {rel}/adapter_init
adapter: lora
base_format: {base_format}
lora_r: {lo['r']}
lora_alpha: {lo['alpha']}
lora_dropout: 0.0
use_rslora: {'true' if lo['rslora'] else 'false'}
lora_target_modules: {yaml_list(lo['targets'])}
{"lora_modules_to_save: " + yaml_list(lo["save"]) + chr(10) if lo.get("save") else ""}datasets:
  - path: {rel}/data.jsonl
    type: pretokenized
sequence_len: {S}
sample_packing: false
val_set_size: 0
micro_batch_size: {MICRO}
gradient_accumulation_steps: {ACCUM}
num_epochs: 1
max_steps: {STEPS}
learning_rate: {LR!r}
lr_scheduler: cosine
warmup_steps: {WARMUP}
optimizer: adamw_torch
weight_decay: {WD!r}
max_grad_norm: {MAX_GRAD_NORM!r}
adam_beta1: {BETAS[0]!r}
adam_beta2: {BETAS[1]!r}
adam_epsilon: {EPS!r}
seed: {SEED}
logging_steps: 1
output_dir: /tmp/tern-golden-{case}
"""
    with open(path, "w") as f:
        f.write(text)


def run_case(case, out_root, rel_root):
    cls, kw, lo, base_format = CASES[case]
    d = os.path.join(out_root, case)
    rel = f"{rel_root}/{case}"
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    print(f"== {case}")

    model = build_model(case, cls, kw)
    mdir = os.path.join(d, "model")
    model.config._name_or_path = f"{rel}/model"
    model.save_pretrained(mdir, safe_serialization=True)
    for f in os.listdir(mdir):
        if f not in ("config.json", "model.safetensors"):
            os.remove(os.path.join(mdir, f))
    write_tokenizer(mdir)
    # reload what was written so the reference runs exactly on the saved weights
    model = tf.AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    assert model.config._attn_implementation == "eager"

    if base_format == "nf4-dq":
        worst = 0.0
        with torch.no_grad():
            for name, mod in model.named_modules():
                if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in ALL7:
                    w = mod.weight.data.clone()
                    dq = quantize_nf4_dq(w)
                    err = (dq - w).abs()
                    rel_err = float(err.norm() / w.norm())
                    worst = max(worst, float(err.max()))
                    print(f"   nf4-dq {name:32s} max |dq - W| = {float(err.max()):.3e} (|W|max "
                          f"{float(w.abs().max()):.3e}), relative Frobenius error {rel_err:.4f}")
                    mod.weight.data.copy_(dq)
        print(f"   nf4-dq: largest elementwise error {worst:.3e}")

    base_copy = copy.deepcopy(model)

    # adapter
    torch.manual_seed(case_seed(case) + 1)
    lcfg = peft.LoraConfig(task_type="CAUSAL_LM", r=lo["r"], lora_alpha=lo["alpha"], lora_dropout=0.0,
                           bias="none", target_modules=lo["targets"], use_rslora=lo["rslora"],
                           modules_to_save=lo.get("save"))
    pm = peft.get_peft_model(model, lcfg)
    with torch.no_grad():
        for n, p in pm.named_parameters():
            if ".lora_A." in n:
                bound = 1.0 / math.sqrt(p.shape[1])
                p.uniform_(-bound, bound)
            elif ".lora_B." in n:
                p.normal_(0.0, 0.02)
    pm.peft_config["default"].base_model_name_or_path = f"{rel}/model"
    save_adapter(pm, os.path.join(d, "adapter_init"))
    saved = load_file(os.path.join(d, "adapter_init", "adapter_model.safetensors"))
    names = [n for n, _ in lora_params(pm)]
    assert sorted(saved) == sorted(names), (sorted(saved)[:3], sorted(names)[:3])
    with open(os.path.join(d, "adapter_init", "adapter_config.json")) as f:
        acfg = json.load(f)
    n_modules = len([n for n in names if ".lora_" in n]) // 2
    print(f"   adapter: {n_modules} LoRA modules, r={lo['r']}, alpha={lo['alpha']}, rslora={lo['rslora']}, "
          f"scale {lora_scale(lo)!r}")

    # data (same for every case up to the seed)
    rng = np.random.default_rng(case_seed(case) + 2)
    ids, labels, mask = make_data(rng)
    save_file({"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
               "attention_mask": torch.from_numpy(mask)}, os.path.join(d, "data.safetensors"))
    line_of = tern_row_order(N_ROWS, SEED)
    file_rows = [None] * N_ROWS
    for i, line in enumerate(line_of):
        file_rows[line] = i  # data.jsonl line line_of[i] holds training row i
    with open(os.path.join(d, "data.jsonl"), "w") as f:
        for line in range(N_ROWS):
            r = file_rows[line]
            L = int(mask[r].sum())
            f.write(json.dumps({"input_ids": ids[r, :L].tolist(), "labels": labels[r, :L].tolist()}) + "\n")
    tid, tlab, tmask = (torch.from_numpy(a).long() for a in (ids, labels, mask))

    # checks: manual merge, sliding window
    zdiff, l_peft, l_merged = merged_forward_check(base_copy, pm, lo, tid[:4], tlab[:4], tmask[:4])
    print(f"   PEFT vs hand-merged W + s*B@A: max |logits diff| {zdiff:.3e}; loss {l_peft!r} vs {l_merged!r}")
    assert zdiff < 1e-5, "PEFT forward differs from the manual merge"
    checks = {"peft_vs_manual_merge_max_logit_diff": zdiff}
    pad_diff = 0.0
    with torch.no_grad():
        pos = torch.arange(S).unsqueeze(0).expand(4, S)
        zp = pm(input_ids=tid[:4], attention_mask=tmask[:4], position_ids=pos, use_cache=False).logits
        z1 = pm(input_ids=tid[:4], attention_mask=torch.ones_like(tmask[:4]), position_ids=pos,
                use_cache=False).logits
        for r in range(4):
            L = int(tmask[r].sum())
            zr = pm(input_ids=tid[r:r + 1, :L], position_ids=pos[:1, :L], use_cache=False).logits[0]
            pad_diff = max(pad_diff, float((zp[r, :L] - zr).abs().max()), float((z1[r, :L] - zr).abs().max()))
    print(f"   right padding: padded rows (2-D mask or all ones) vs the unpadded sample, max |logits diff| "
          f"{pad_diff:.3e}")
    assert pad_diff < PAD_TOL
    checks["right_padding_max_logit_diff"] = pad_diff
    if kw.get("sliding_window"):
        sw = check_sliding_window(pm, tid[:8], tmask[:8], kw["sliding_window"])
        print(f"   sliding window: transformers' eager vs hand-made 4-D masks, max |logits diff| over real tokens: "
              + ", ".join(f"{k} {v:.3e}" for k, v in sw.items()))
        assert sw["window"] < 1e-5, "transformers does not apply the sliding window as i - j < W"
        assert sw["window+1"] > 1e-4 and sw["none"] > 1e-4, "the window does not change the result"
        checks["sliding_window_vs_manual_mask_max_logit_diff"] = sw

    # training
    traj, grads = train(pm, tid, tlab, tmask, verbose=True)
    save_file(grads, os.path.join(d, "grads.safetensors"))
    save_adapter(pm, os.path.join(d, "adapter_final"))

    # how exact is the float32 reference itself: the same run in float64
    m64 = tf.AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager")
    if base_format == "nf4-dq":
        with torch.no_grad():
            for name, mod in m64.named_modules():
                if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in ALL7:
                    mod.weight.copy_(quantize_nf4_dq(mod.weight.data))
    pm64 = peft.PeftModel.from_pretrained(m64, os.path.join(d, "adapter_init"), is_trainable=True).double()
    traj64, grads64 = train(pm64, tid, tlab, torch.ones_like(tmask), verbose=False)
    assert all(math.isfinite(t["loss"]) and math.isfinite(t["grad_norm"]) for t in traj64)
    num = math.sqrt(sum(float(((grads[k].double() - grads64[k]) ** 2).sum()) for k in grads))
    den = math.sqrt(sum(float((grads64[k] ** 2).sum()) for k in grads))
    worst_t = max(float((grads[k].double() - grads64[k]).norm() / grads64[k].norm()) for k in grads)
    dl = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(traj, traj64))
    dg = max(abs(a["grad_norm"] - b["grad_norm"]) / b["grad_norm"] for a, b in zip(traj, traj64))
    fin = load_file(os.path.join(d, "adapter_final", "adapter_model.safetensors"))
    sd64 = {adapter_name(n): p.detach() for n, p in pm64.named_parameters() if p.requires_grad}
    dw = max(float((fin[k].double() - sd64[k]).norm() / sd64[k].norm()) for k in fin)
    print(f"   float32 vs float64 reference: step-1 gradients relative norm error {num / den:.3e} (worst tensor "
          f"{worst_t:.3e}); losses max relative difference {dl:.3e}, grad norms {dg:.3e}; final adapter worst "
          f"tensor relative norm error {dw:.3e}")
    checks["f32_vs_f64"] = {"grads_rel_norm_error": num / den, "grads_worst_tensor_rel_norm_error": worst_t,
                            "loss_max_rel_diff": dl, "grad_norm_max_rel_diff": dg,
                            "final_adapter_worst_tensor_rel_norm_error": dw,
                            "losses_f64": [t["loss"] for t in traj64]}

    golden = {
        "case": case, "model_type": model.config.model_type, "base_format": base_format, "S": S,
        "micro_batch_size": MICRO, "gradient_accumulation_steps": ACCUM, "steps": STEPS, "learning_rate": LR,
        "warmup_steps": WARMUP, "lr_scheduler": "cosine", "weight_decay": WD, "max_grad_norm": MAX_GRAD_NORM,
        "adam_beta1": BETAS[0], "adam_beta2": BETAS[1], "adam_epsilon": EPS,
        "lora": {"r": lo["r"], "alpha": lo["alpha"], "rslora": lo["rslora"], "target_modules": lo["targets"],
                 "scale": lora_scale(lo), "dropout": 0.0, "modules_to_save": lo.get("save", [])},
        "sliding_window": kw.get("sliding_window"),
        "n_rows": N_ROWS, "seed": SEED,
        "trajectory": traj,
        "checks": checks,
        "versions": {"torch": torch.__version__, "transformers": tf.__version__, "peft": peft.__version__,
                     "safetensors": safetensors.__version__, "numpy": np.__version__},
        "command": "python3 tools/make_golden.py",
    }
    with open(os.path.join(d, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
        f.write("\n")
    write_config_yaml(os.path.join(d, "config.yaml"), case, rel, lo, base_format)
    assert acfg["r"] == lo["r"]
    size = sum(os.path.getsize(os.path.join(dp, f)) for dp, _, fs in os.walk(d) for f in fs)
    print(f"   wrote {d}: {size} bytes")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "golden"))
    ap.add_argument("--rel", default="tests/data/golden",
                    help="the output directory as seen from where tern runs (written into config.yaml and "
                         "adapter_config.json)")
    ap.add_argument("--cases", default=",".join(CASES))
    a = ap.parse_args()
    for c in a.cases.split(","):
        run_case(c, os.path.normpath(a.out), a.rel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
