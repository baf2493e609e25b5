#!/usr/bin/env python3
"""Unsloth FastLanguageModel LoRA/QLoRA training throughput: the fastest peer, same loop as bench_hf.py.

    tools/bench_unsloth.py MODEL_DIR [--quant nf4|bf16] [--ckpt unsloth|true|false] [--batch 1]
                           [--seq 2048] [--accum 4] [--steps 3] [--warmup 1] [--rank 16]
                           [--data ROWS.jsonl] [--json RESULT.json]

FastLanguageModel.from_pretrained(load_in_4bit: bitsandbytes nf4 with double quant, bf16 compute)
and get_peft_model with LoRA r 16 / alpha 32 / dropout 0 on q, k, v, o, gate, up and down and
gradient checkpointing "unsloth" (checkpointed activations kept in host memory, which the device
peak does not count), then tools/bench_ref_common.py's loop (torch AdamW, clipping at 1.0).
Unsloth compiles each decoder block on the first step (about 30 s): keep --warmup at 1 or more.
The model directory needs a tokenizer (tools/bench_gpu.sh gunzips tests/data/tokenizers/llama3-*
into it). Needs unsloth, unsloth_zoo, trl, datasets, bitsandbytes... on PYTHONPATH
(tools/fetch_bench_deps.sh) and runs offline (HF_HUB_OFFLINE=1 is set here if unset).
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ref_common as common  # noqa: E402


def main():
    ap = common.parser(__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="unsloth", choices=["unsloth", "true", "false"],
                    help="use_gradient_checkpointing (default unsloth)")
    a = common.check_args(ap.parse_args())
    if a.quant == "f32":
        sys.exit("--quant f32: Unsloth trains nf4 or bf16 bases")
    for k, v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"), ("HF_DATASETS_OFFLINE", "1"),
                 ("UNSLOTH_DISABLE_STATISTICS", "1")):
        os.environ.setdefault(k, v)
    if not os.path.isfile(os.path.join(a.model, "tokenizer.json")) and \
            not os.path.isfile(os.path.join(a.model, "tokenizer.model")):
        sys.exit(f"{a.model}: no tokenizer.json (Unsloth loads the tokenizer with the model)")
    t0 = time.perf_counter()
    import unsloth  # noqa: F401  (before transformers and peft, so that its patches apply)
    from unsloth import FastLanguageModel
    import torch
    import_s = time.perf_counter() - t0

    if a.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: torch sees no CUDA device")
    torch.manual_seed(a.seed)
    ckpt = {"unsloth": "unsloth", "true": True, "false": False}[a.ckpt]
    t0 = time.perf_counter()
    m, _tok = FastLanguageModel.from_pretrained(
        a.model, max_seq_length=a.seq, dtype=torch.bfloat16, load_in_4bit=(a.quant == "nf4"),
        use_gradient_checkpointing=ckpt, local_files_only=True)
    load_s = time.perf_counter() - t0
    m = FastLanguageModel.get_peft_model(
        m, r=a.rank, lora_alpha=a.alpha, lora_dropout=0.0, bias="none", target_modules=common.TARGETS,
        use_gradient_checkpointing=ckpt, random_state=a.seed, max_seq_length=a.seq)
    FastLanguageModel.for_training(m, use_gradient_checkpointing=ckpt)
    n4 = sum(1 for q in m.modules() if type(q).__module__.startswith("bitsandbytes"))
    res = common.train(m, a, "unsloth", load_s, extra=dict(
        ckpt=a.ckpt, import_s=round(import_s, 1), linear4bit_modules=n4,
        compile_disabled=os.environ.get("UNSLOTH_COMPILE_DISABLE", "0"),
        versions=dict(torch=torch.__version__, **common.versions(
            ["unsloth", "unsloth_zoo", "transformers", "peft", "bitsandbytes", "trl", "triton",
             "xformers"]))))
    common.emit(res, a)


if __name__ == "__main__":
    main()
