#!/usr/bin/env python3
"""Loads bitsandbytes model directories written by `tern quantize --bnb-out` with transformers +
bitsandbytes and compares each Linear4bit's dequantized weight with a plain decode of the file
(code[q] * absmax, nested statistics rebuilt). Usage: check_bnb_export.py DIR...

Note: bitsandbytes' CPU dequantize disagrees with its own CPU quantize when in_features is not a
multiple of the block size (its CPU path assumes row-aligned blocks); such modules differ here for
bitsandbytes' own checkpoints as well."""
import sys

import torch
import transformers as tf
import bitsandbytes.functional as F
from safetensors import safe_open

for d in sys.argv[1:]:
    m = tf.AutoModelForCausalLM.from_pretrained(d, device_map="cpu")
    f = safe_open(d + "/model.safetensors", "pt")
    worst = 0
    for name, mod in m.named_modules():
        if type(mod).__name__ != "Linear4bit": continue
        qs = mod.weight.quant_state
        w = F.dequantize_4bit(mod.weight.data, qs).float()
        k = name + ".weight"
        codes = f.get_tensor(k).flatten()
        q = torch.stack([codes >> 4, codes & 15], 1).flatten().long()
        n = w.numel(); q = q[:n]
        am = f.get_tensor(k + ".absmax")
        if am.dtype == torch.uint8:
            nm = f.get_tensor(k + ".nested_quant_map"); na = f.get_tensor(k + ".nested_absmax")
            off = qs.offset.item()
            am = nm[am.long()] * na.repeat_interleave(256)[:am.numel()] + off
        code = f.get_tensor(k + ".quant_map")
        man = (code[q] * am.repeat_interleave(qs.blocksize)[:n]).to(torch.bfloat16).float().reshape(w.shape)
        dd = (man - w).abs().max().item(); worst = max(worst, dd)
        if dd: print(name, tuple(w.shape), dd, qs.blocksize)
    print(d, "Linear4bit modules dequantized by bitsandbytes vs the file's own decode: max diff", worst)
