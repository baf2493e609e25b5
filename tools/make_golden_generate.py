#!/usr/bin/env python3
"""Greedy continuations from transformers (+ PEFT) for tern generate's tests.

Writes tests/data/generate/expected.jsonl: one line per case, {"name", "model", "adapter" (or
null), "prompt_ids" or "prompt" (text, tokenized here with the model's tokenizer.json and
add_special_tokens=True, as `tern generate --prompt` does), "max_new_tokens", "ids"} where ids are
what `model.generate(do_sample=False)` appends to the prompt (an EOS that stops it included).
Everything runs in float32 with attn_implementation="eager" (bf16 checkpoints are upcast, as tern
computes in fp32), on the CPU, one thread, so the output is deterministic.

Usage (from the repository root): python3 tools/make_golden_generate.py
Versions used for the committed file are recorded in its first line ("_versions")."""
import json
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

try:
    import peft
    from peft import PeftModel
except ImportError:  # pragma: no cover
    peft = None

G = "tests/data/golden"
M = "tests/data/models"
IDS = [1, 5, 17, 99, 3, 42, 7]

# name, model dir, adapter dir (or None), prompt ids or text, max_new_tokens
CASES = [
    ("llama", f"{G}/llama/model", None, IDS, 20),
    ("llama+adapter", f"{G}/llama/model", f"{G}/llama/adapter_final", IDS, 20),
    ("llama+adapter text", f"{G}/llama/model", f"{G}/llama/adapter_final", "hello world", 16),
    ("mistral", f"{G}/mistral/model", None, IDS, 20),
    ("mistral+adapter", f"{G}/mistral/model", f"{G}/mistral/adapter_final", IDS, 20),
    ("qwen2", f"{G}/qwen2/model", None, IDS, 20),
    ("qwen2+adapter", f"{G}/qwen2/model", f"{G}/qwen2/adapter_final", IDS, 20),
    ("qwen3", f"{G}/qwen3/model", None, IDS, 20),
    ("qwen3+adapter", f"{G}/qwen3/model", f"{G}/qwen3/adapter_final", IDS, 20),
    ("llama_save+adapter", f"{G}/llama_save/model", f"{G}/llama_save/adapter_final", IDS, 20),
    ("qwen3_save+adapter", f"{G}/qwen3_save/model", f"{G}/qwen3_save/adapter_final", IDS, 20),
    ("models/llama6", f"{M}/llama6", None, IDS, 24),
    ("models/llama_tied", f"{M}/llama_tied", None, IDS, 20),
    ("models/mistral window", f"{M}/mistral", None, IDS, 34),
    ("models/qwen2", f"{M}/qwen2", None, IDS, 20),
    ("models/qwen3", f"{M}/qwen3", None, IDS, 20),
    ("mixtral", f"{G}/mixtral/model", None, IDS, 20),
    ("mixtral+adapter", f"{G}/mixtral/model", f"{G}/mixtral/adapter_final", IDS, 20),
    ("mixtral_exp+adapter", f"{G}/mixtral_exp/model", f"{G}/mixtral_exp/adapter_final", IDS, 20),
    ("qwen3_moe_exp+adapter", f"{G}/qwen3_moe_exp/model", f"{G}/qwen3_moe_exp/adapter_final",
     IDS, 20),
    ("mixtral_router+adapter", f"{G}/mixtral_router/model", f"{G}/mixtral_router/adapter_final", IDS, 20),
    ("qwen3_moe_router+adapter", f"{G}/qwen3_moe_router/model", f"{G}/qwen3_moe_router/adapter_final",
     IDS, 20),
    # BitNet b1.58 (AutoBitLinear online: ternary weights, 8-bit activations per token)
    ("bitnet", f"{G}/bitnet/model", None, IDS, 20),
    ("bitnet+adapter", f"{G}/bitnet/model", f"{G}/bitnet/adapter_final", IDS, 20),
]


def main():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    out = [json.dumps({"_versions": {"torch": torch.__version__,
                                     "transformers": transformers.__version__,
                                     "peft": peft.__version__ if peft else None}})]
    for name, mdir, adir, prompt, n in CASES:
        model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32,
                                                     attn_implementation="eager")
        if adir:
            model = PeftModel.from_pretrained(model, adir)
        model.eval()
        rec = {"name": name, "model": mdir, "adapter": adir, "max_new_tokens": n}
        if isinstance(prompt, str):
            tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(mdir, "tokenizer.json"))
            ids = tok(prompt, add_special_tokens=True)["input_ids"]
            rec["prompt"] = prompt
        else:
            ids = list(prompt)
            rec["prompt_ids"] = ids
        x = torch.tensor([ids])
        with torch.no_grad():
            y = model.generate(x, attention_mask=torch.ones_like(x), do_sample=False,
                               max_new_tokens=n, pad_token_id=0)
            # the margin of every greedy choice (top-1 minus top-2 logit), to catch near-ties
            logits = model(y[:, :-1]).logits[0, len(ids) - 1:]
        top2 = torch.topk(logits, 2, dim=-1).values
        rec["ids"] = y[0, len(ids):].tolist()
        rec["min_margin"] = float((top2[:, 0] - top2[:, 1]).min())
        out.append(json.dumps(rec))
        print(f"{name}: {rec['ids']} (smallest top-2 margin {rec['min_margin']:.2e})",
              file=sys.stderr)
    with open("tests/data/generate/expected.jsonl", "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
