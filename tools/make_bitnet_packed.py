#!/usr/bin/env python3
"""Writes tests/data/models/bitnet_packed*/: the golden BitNet model (tests/data/golden/bitnet,
tools/make_golden_bitnet.py, an online AutoBitLinear checkpoint of fp32 master weights) stored the
ways published BitNet checkpoints store it, and what transformers computes on them.

Every projection W is quantized as tern quantizes on load (quant/ternary.c: s = max(mean|W|, 1e-5),
mean accumulated in double and rounded to fp32 once; q = clip(round-half-even(W / s), -1, 1)); the
script checks that transformers' WeightQuant gives the same q. Then:

  bitnet_packed/       quantization_config {quant_method: bitnet, linear_class: bitlinear,
                       quantization_mode: offline}: microsoft/bitnet-b1.58-2B-4T's layout. weight is
                       transformers' pack_weights(q) (uint8 [O/4, I]); weight_scale (F32 [1]) is the
                       fp32 value w with fp32(1 / w) == s, since BitLinear divides by it.
  bitnet_packed_auto/  {linear_class: autobitlinear, quantization_mode: offline}: the same packed
                       weight, weight_scale = s (AutoBitLinear offline multiplies).
  bitnet_unpacked/     autobitlinear offline with the weight unpacked: F32 [O, I] of -1, 0, 1
                       (transformers keeps a stored bf16 weight in bf16 and then fails in an
                       fp32 model, so fp32 here).
  bitnet_packed/golden.json  losses transformers computes on these directories (below).

So tern's load of each equals its load of the online model bit for bit (codes and scale).

transformers (5.25) on them: bitlinear loads as BitLinear modules (uint8 buffers, inference only:
not nn.Linear, PEFT cannot wrap them), so only the base model's loss is a golden; autobitlinear
offline loads as AutoBitLinear (nn.Linear subclasses with frozen weights), which PEFT wraps: the
step-1 loss with the golden's adapter_init is computed there and compared with the golden.

    python3 tools/make_bitnet_packed.py [--golden tests/data/golden/bitnet] [--out tests/data/models]
"""
import argparse
import json
import os
import shutil
import sys

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # BitLinear's @torch.compile: eager on the CPU

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

import peft  # noqa: E402
import transformers as tf  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers.integrations.bitnet import BitLinear, AutoBitLinear, pack_weights, unpack_weights  # noqa: E402

PROJ = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
S = 24


def tern_quantize(w):
    """quant/ternary.c's tern_ternary_quantize: (q int8 [O, I], s float32)."""
    mean = np.float32(np.abs(w.astype(np.float64)).sum() / w.size)
    s = max(mean, np.float32(1e-5))
    q = np.clip(np.rint(w / s), -1, 1).astype(np.int8)  # rint: half to even, like nearbyintf
    return q, np.float32(s)


def recip_preimage(s):
    """An fp32 w with fp32(1 / w) == s (tern's bitlinear scale is 1.0f / weight_scale)."""
    x = np.float32(1) / s
    up = down = x
    for _ in range(64):
        for c in (up, down):
            if np.float32(1) / c == s:
                return c
        up = np.nextafter(up, np.float32(np.inf), dtype=np.float32)
        down = np.nextafter(down, np.float32(0), dtype=np.float32)
    raise SystemExit(f"no fp32 reciprocal preimage of {s!r}")


def step1_rows(gd):
    data = load_file(os.path.join(gd, "data.safetensors"))
    ids, lab, msk = (torch.from_numpy(data[k].astype(np.int64)) for k in ("input_ids", "labels", "attention_mask"))
    return ids[:4], lab[:4], msk[:4]


def step1_loss(model, ids, lab, msk):
    """make_golden's step-1 loss: two micro-batches of 2, summed token losses over the window's
    trained targets."""
    n = int((lab[:, 1:] != -100).sum())
    tot = 0.0
    with torch.no_grad():
        for a in (0, 2):
            b = a + 2
            pos = torch.arange(S).unsqueeze(0).expand(2, S)
            logits = model(input_ids=ids[a:b], attention_mask=msk[a:b], position_ids=pos, use_cache=False).logits
            z = logits[:, :-1].reshape(-1, logits.shape[-1])
            y = lab[a:b, 1:].reshape(-1)
            tot += float(torch.nn.functional.cross_entropy(z, y, ignore_index=-100, reduction="sum"))
    return tot / n


def load(d):
    return tf.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--golden", default=os.path.join(here, "..", "tests", "data", "golden", "bitnet"))
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "data", "models"))
    a = ap.parse_args()
    gd, out = os.path.normpath(a.golden), os.path.normpath(a.out)
    with open(os.path.join(gd, "model", "config.json")) as f:
        cfg = json.load(f)
    assert cfg["quantization_config"]["quantization_mode"] == "online"
    w = load_file(os.path.join(gd, "model", "model.safetensors"))

    variants = {
        "bitnet_packed": ("bitlinear", True),
        "bitnet_packed_auto": ("autobitlinear", True),
        "bitnet_unpacked": ("autobitlinear", False),
    }
    flips = 0
    for name, (lc, packed) in variants.items():
        t = {}
        for k, v in w.items():
            if not any(f".{p}.weight" in k for p in PROJ):
                t[k] = v
                continue
            q, s = tern_quantize(v)
            wt = torch.from_numpy(v)  # transformers' WeightQuant: round(W * (1 / mean)).clamp(-1, 1)
            q_hf = (wt * (1.0 / wt.abs().mean().clamp(min=1e-5))).round().clamp(-1, 1).to(torch.int8).numpy()
            flips += int((q_hf != q).sum())
            if packed:
                p = pack_weights(torch.from_numpy(q.astype(np.int32)).clone())
                assert p.dtype == torch.uint8 and tuple(p.shape) == (q.shape[0] // 4, q.shape[1])
                assert torch.equal(unpack_weights(p, dtype=torch.int32), torch.from_numpy(q.astype(np.int32)))
                t[k] = p
            else:
                t[k] = torch.from_numpy(q.astype(np.float32))
            ws = recip_preimage(s) if lc == "bitlinear" else s
            t[k + "_scale"] = np.array([ws], dtype=np.float32)
        d = os.path.join(out, name)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        c = dict(cfg)
        c["quantization_config"] = {"quant_method": "bitnet", "linear_class": lc, "quantization_mode": "offline"}
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
            f.write("\n")
        save_file({k: v if torch.is_tensor(v) else torch.from_numpy(v) for k, v in t.items()},
                  os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    assert flips == 0, f"transformers' WeightQuant and tern's quantizer differ in {flips} weights"

    ids, lab, msk = step1_rows(gd)
    gold = json.load(open(os.path.join(gd, "golden.json")))
    res = {"golden_step1_loss": gold["trajectory"][0]["loss"]}
    online = load(os.path.join(gd, "model"))
    res["online_base_loss"] = step1_loss(online, ids, lab, msk)
    bl = load(os.path.join(out, "bitnet_packed"))
    assert sum(isinstance(m, BitLinear) for m in bl.modules()) == 14
    res["bitlinear_base_loss"] = step1_loss(bl, ids, lab, msk)
    for name in ("bitnet_packed_auto", "bitnet_unpacked"):
        m = load(os.path.join(out, name))
        abl = [x for x in m.modules() if isinstance(x, AutoBitLinear)]
        assert len(abl) == 14 and not any(x.online_quant for x in abl)
        assert all(set(torch.unique(x.weight).tolist()) <= {-1.0, 0.0, 1.0} for x in abl)
        res[name + "_base_loss"] = step1_loss(m, ids, lab, msk)
        pm = peft.PeftModel.from_pretrained(m, os.path.join(gd, "adapter_init")).eval()
        res[name + "_peft_step1_loss"] = step1_loss(pm, ids, lab, msk)
    res["transformers"] = tf.__version__
    res["peft"] = peft.__version__
    res["torch"] = torch.__version__
    res["command"] = "python3 tools/make_bitnet_packed.py"
    with open(os.path.join(out, "bitnet_packed", "golden.json"), "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    for k, v in res.items():
        print(f"  {k}: {v}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
