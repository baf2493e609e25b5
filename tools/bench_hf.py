#!/usr/bin/env python3
"""transformers + PEFT (+ bitsandbytes) LoRA/QLoRA training throughput: the stack tern's users leave.

    tools/bench_hf.py MODEL_DIR [--quant nf4|bf16|f32] [--batch 1] [--seq 2048] [--accum 4]
                      [--steps 3] [--warmup 1] [--rank 16] [--data ROWS.jsonl] [--device cuda|cpu]
                      [--json RESULT.json]

nf4 (the default) is the usual QLoRA recipe: BitsAndBytesConfig(load_in_4bit, nf4, double quant,
bf16 compute), prepare_model_for_kbit_training with non-reentrant gradient checkpointing, SDPA
attention, LoRA r 16 / alpha 32 / dropout 0 on q, k, v, o, gate, up and down, torch AdamW,
clipping at 1.0. bf16 and f32 load the base in that dtype with the same checkpointing and LoRA
(f32 on --device cpu is the smoke test that runs without a GPU or bitsandbytes). The timed loop
is tools/bench_ref_common.py's. Prints `RESULT {json}` as its last line; tools/bench_gpu.sh
runs it on the same model directory and rows as tern.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ref_common as common  # noqa: E402


def main():
    a = common.check_args(common.parser(__doc__.splitlines()[0]).parse_args())
    import torch
    from transformers import AutoModelForCausalLM
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    torch.manual_seed(a.seed)
    dtype = {"nf4": torch.bfloat16, "bf16": torch.bfloat16, "f32": torch.float32}[a.quant]
    kw = dict(dtype=dtype, attn_implementation="sdpa",
              device_map={"": 0} if a.device == "cuda" else {"": "cpu"})
    if a.quant == "nf4":
        from transformers import BitsAndBytesConfig
        kw["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16)
    t0 = time.perf_counter()
    m = AutoModelForCausalLM.from_pretrained(a.model, **kw)
    load_s = time.perf_counter() - t0
    ckpt_kw = {"use_reentrant": False}
    if a.quant == "nf4":
        m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs=ckpt_kw)
    else:
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs=ckpt_kw)
        m.enable_input_require_grads()
    m.config.use_cache = False
    m = get_peft_model(m, LoraConfig(r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, bias="none",
                                     task_type="CAUSAL_LM", target_modules=common.TARGETS))
    n4 = sum(1 for q in m.modules() if type(q).__module__.startswith("bitsandbytes"))
    res = common.train(m, a, "hf", load_s, extra=dict(
        linear4bit_modules=n4,
        versions=dict(torch=torch.__version__, **common.versions(
            ["transformers", "peft", "accelerate", "bitsandbytes"]))))
    common.emit(res, a)


if __name__ == "__main__":
    main()
