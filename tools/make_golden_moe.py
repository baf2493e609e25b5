#!/usr/bin/env python3
"""Writes tests/data/golden/<case>/ for the mixture-of-experts cases (mixtral, qwen3_moe): the same
reference run, files and layout as tools/make_golden.py (whose run_case this reuses), on tiny random
transformers 5 models, float32, eager attention.

  mixtral        2 layers, 4 experts, top 2 (renormalised), LoRA r 8 on q/k/v/o
  qwen3_moe      3 layers, 8 experts, top 3 without norm_topk_prob, layer 1 dense (mlp_only_layers),
                 q/k norms, tied embeddings, LoRA r 8 on q/k/v/o
  mixtral_exp    mixtral's model, LoRA r 4 on q/v and on the experts: PEFT target_parameters
                 [mlp.experts.gate_up_proj, mlp.experts.down_proj] (ParamWrapper: per expert one
                 A/B, gate and up sharing A; file layout A [E*r, I], B [O, r*E])
  qwen3_moe_exp  qwen3_moe's model, LoRA r 4 on q/k/v/o and on mlp.experts.gate_up_proj only

  mixtral_aux    mixtral's weights with output_router_logits true and router_aux_loss_coef 0.1 in
                 config.json: the load-balancing loss on; LoRA r 4 on q/k/v/o and both expert params
  qwen3_moe_aux  qwen3_moe's weights, the same two keys; LoRA r 4 on q/k/v/o and gate_up_proj
  mixtral_router mixtral_aux's model (load-balancing loss on); LoRA r 4 on q/v, both expert params
                 and the router: target_modules "gate" (transformers 5's router keeps a bare weight
                 [E, D]; PEFT wraps it as a ParamWrapper and records target_parameters gate.weight;
                 tensors mlp.gate.lora_A [r, D], lora_B [E, r])
  qwen3_moe_router qwen3_moe's model (no aux); LoRA r 4 on q/k/v/o and the router ("gate")

The *_aux cases train through transformers' own loss, as its Trainer does: each micro-batch calls
the PEFT model with labels, num_items_in_batch = the window's trained targets and
output_router_logits, and backpropagates out.loss = Σ CE / num_items_in_batch + coef · aux (the
aux of that micro-batch's real tokens, attention_mask 1, over every sparse layer; not divided by
the accumulation steps, as the Trainer leaves a loss normalised by num_items_in_batch); the
reported step loss is the sum of the micro-batches' out.loss. Their float64 check keeps the real
attention mask (no sliding window here), so that both runs count the same tokens in aux.

For the *_exp cases run_case's hand-merged check also merges each ParamWrapper's delta into its
expert parameter, golden.json's "lora" gains "target_parameters", and config.yaml
lora_target_parameters.

The routers are drawn 10x larger than the other projections (std 0.5) so that no token's k-th and
(k+1)-th router logits are within 1e-3 of each other (checked over the data's real tokens; the
router seed is advanced until none is): top-k is discontinuous, and a
different choice in tern's fp32 and PyTorch's fp32 would not be a bug of either. run_case's checks
(PEFT vs a hand-merged forward, right padding, float32 vs float64 reference) run unchanged; the
routers' seed is chosen as said above.

    python3 tools/make_golden_moe.py [--out tests/data/golden] [--cases mixtral,qwen3_moe]
"""
import argparse
import json
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
    "mixtral_exp": None,  # filled below: mixtral's model
    "qwen3_moe_exp": None,
    "qwen3_moe": (tf.Qwen3MoeConfig,
                  dict(hidden_size=64, intermediate_size=80, moe_intermediate_size=32, num_hidden_layers=3,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=8,
                       num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[1],
                       vocab_size=g.VOCAB, max_position_embeddings=64, use_sliding_window=False,
                       tie_word_embeddings=True, output_router_logits=False),
                  dict(r=8, alpha=16, rslora=False, targets=ATTN4), "f32"),
}

MOE_CASES["mixtral_exp"] = (MOE_CASES["mixtral"][0], MOE_CASES["mixtral"][1],
                             dict(r=4, alpha=8, rslora=False, targets=["q_proj", "v_proj"],
                                  params=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]), "f32")
MOE_CASES["qwen3_moe_exp"] = (MOE_CASES["qwen3_moe"][0], MOE_CASES["qwen3_moe"][1],
                               dict(r=4, alpha=8, rslora=False, targets=ATTN4,
                                    params=["mlp.experts.gate_up_proj"]), "f32")
AUX = dict(output_router_logits=True, router_aux_loss_coef=0.1)
MOE_CASES["mixtral_aux"] = (MOE_CASES["mixtral"][0], {**MOE_CASES["mixtral"][1], **AUX},
                            dict(r=4, alpha=8, rslora=False, targets=ATTN4,
                                 params=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]), "f32")
MOE_CASES["qwen3_moe_aux"] = (MOE_CASES["qwen3_moe"][0], {**MOE_CASES["qwen3_moe"][1], **AUX},
                              dict(r=4, alpha=8, rslora=False, targets=ATTN4,
                                   params=["mlp.experts.gate_up_proj"]), "f32")
MOE_CASES["mixtral_router"] = (MOE_CASES["mixtral"][0], {**MOE_CASES["mixtral"][1], **AUX},
                               dict(r=4, alpha=8, rslora=False, targets=["q_proj", "v_proj", "gate"],
                                    params=["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]), "f32")
MOE_CASES["qwen3_moe_router"] = (MOE_CASES["qwen3_moe"][0], MOE_CASES["qwen3_moe"][1],
                                 dict(r=4, alpha=8, rslora=False, targets=ATTN4 + ["gate"]), "f32")
SAME_MODEL = {"mixtral_router": "mixtral", "qwen3_moe_router": "qwen3_moe",
              "mixtral_exp": "mixtral", "qwen3_moe_exp": "qwen3_moe",  # seeds of the model
              "mixtral_aux": "mixtral", "qwen3_moe_aux": "qwen3_moe"}

_build = g.build_model
_case_seed = g.case_seed
_current = {"params": None}


def case_seed(name):
    return _case_seed(SAME_MODEL.get(name, name))


class _Peft:
    """peft with LoraConfig taking the current case's target_parameters."""

    def __getattr__(self, name):
        return getattr(_PEFT, name)

    @staticmethod
    def LoraConfig(**kw):
        if _current["params"]:
            kw["target_parameters"] = list(_current["params"])
        return _PEFT.LoraConfig(**kw)


_PEFT = g.peft
_merged = g.merged_forward_check


def merged_forward_check(base_cfg_model, pm, lo, ids, labels, mask):
    """make_golden's check, with every ParamWrapper's delta (PEFT's get_delta_weight) merged into its
    expert parameter as well."""
    if not lo.get("params") and "gate" not in lo["targets"]:
        return _merged(base_cfg_model, pm, lo, ids, labels, mask)
    import copy
    from peft.tuners.lora.layer import ParamWrapper
    base = copy.deepcopy(base_cfg_model)
    with torch.no_grad():
        for name, mod in pm.named_modules():
            if isinstance(mod, ParamWrapper):
                path = name.replace("base_model.model.", "", 1).replace(".base_layer", "")
                getattr(base.get_submodule(path), mod.parameter_name).add_(mod.get_delta_weight("default"))
    return _merged(base, pm, dict(lo), ids, labels, mask)


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


_train = g.train


def train(pm, tid, tlab, tmask, verbose):
    """make_golden's loop; for the aux cases the loss is transformers' own (see the docstring)."""
    if not _current.get("aux"):
        return _train(pm, tid, tlab, tmask, verbose)
    if _current.get("mask") is None:
        _current["mask"] = tmask  # the float32 run's real mask, kept for the float64 run
    tmask = _current["mask"]
    trainable = [p for n, p in pm.named_parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=g.LR, betas=g.BETAS, eps=g.EPS, weight_decay=g.WD)
    sched = tf.get_cosine_schedule_with_warmup(opt, num_warmup_steps=g.WARMUP, num_training_steps=g.STEPS)
    pm.train()
    traj, grads = [], None
    for k in range(g.STEPS):
        lr = sched.get_last_lr()[0]
        wins = g.window_rows(k)
        n_tr = int(sum(int((tlab[a:b, 1:] != -100).sum()) for a, b in wins))
        opt.zero_grad(set_to_none=True)
        loss, aux_sum = 0.0, 0.0
        for a, b in wins:
            pos = torch.arange(g.S, dtype=torch.long).unsqueeze(0).expand(b - a, g.S)
            out = pm(input_ids=tid[a:b], attention_mask=tmask[a:b], position_ids=pos, labels=tlab[a:b],
                     num_items_in_batch=torch.tensor(n_tr), output_router_logits=True, use_cache=False)
            out.loss.backward()
            loss += float(out.loss.detach())
            aux_sum += float(out.aux_loss.detach())
        if k == 0:
            grads = {g.adapter_name(n): p.grad.detach().clone().contiguous() for n, p in pm.named_parameters()
                     if p.requires_grad}
        gn = float(torch.nn.utils.clip_grad_norm_(trainable, max_norm=g.MAX_GRAD_NORM))
        opt.step()
        sched.step()
        traj.append({"step": k + 1, "lr": lr, "loss": loss, "grad_norm": gn, "n_trained": n_tr,
                     "aux_loss_sum": aux_sum})
        if verbose:
            print(f"   step {k + 1:2d} lr {lr:.6e} loss {loss:.8f} (aux {aux_sum:.6f}) grad_norm {gn:.6e}")
    return traj, grads


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "golden"))
    ap.add_argument("--rel", default="tests/data/golden")
    ap.add_argument("--cases", default=",".join(MOE_CASES))
    a = ap.parse_args()
    g.CASES.update(MOE_CASES)
    g.build_model = build_model
    g.case_seed = case_seed
    g.peft = _Peft()
    g.merged_forward_check = merged_forward_check
    g.tf = _TF()
    g.train = train
    for c in a.cases.split(","):
        lo = MOE_CASES[c][2]
        _current["params"] = lo.get("params")
        _current["aux"] = MOE_CASES[c][1].get("output_router_logits", False)
        _current["mask"] = None
        g.run_case(c, os.path.normpath(a.out), a.rel)
        if _current["aux"]:
            gp = os.path.join(os.path.normpath(a.out), c, "golden.json")
            with open(gp) as f:
                gold = json.load(f)
            gold["router_aux_loss_coef"] = MOE_CASES[c][1]["router_aux_loss_coef"]
            gold["output_router_logits"] = True
            with open(gp, "w") as f:
                json.dump(gold, f, indent=1)
                f.write("\n")
        if lo.get("params"):
            d = os.path.join(os.path.normpath(a.out), c)
            gp = os.path.join(d, "golden.json")
            with open(gp) as f:
                gold = json.load(f)
            gold["lora"]["target_parameters"] = lo["params"]
            gold["command"] = "python3 tools/make_golden_moe.py"
            with open(gp, "w") as f:
                json.dump(gold, f, indent=1)
                f.write("\n")
            cp = os.path.join(d, "config.yaml")
            with open(cp) as f:
                text = f.read()
            text = text.replace("lora_target_modules:", "lora_target_parameters: " + g.yaml_list(lo["params"]) +
                                "\nlora_target_modules:", 1)
            with open(cp, "w") as f:
                f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
