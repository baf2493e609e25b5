#!/usr/bin/env python3
"""QLoRA with transformers + bitsandbytes + accelerate offloading: what Mixtral-on-a-12-GB-card users run.

    tools/bench_hf_offload.py MODEL_DIR --gpu-memory 11.5GB --cpu-memory 12GB --offload-folder DIR
                              [--gpu-weights 9.5GB] [--no-cap] [--batch 1] [--seq 2048] [--accum 1]
                              [--steps 3] [--rank 16] [--data ROWS.jsonl] [--device cuda|cpu]
                              [--json RESULT.json]

MODEL_DIR is a pre-quantized bitsandbytes 4-bit checkpoint (tools/make_bnb_moe_model.py). It is
loaded as such users load it: AutoModelForCausalLM.from_pretrained(device_map="auto",
max_memory={0: --gpu-weights, "cpu": --cpu-memory}, offload_folder=DIR), with
llm_int8_enable_fp32_cpu_offload true in the checkpoint's quantization_config (transformers
refuses cpu/disk placement of 4-bit layers without it, and takes the flag of a pre-quantized
checkpoint from its config.json only: a BitsAndBytesConfig argument is ignored; the edited
config.json goes into DIR/model-view/ beside links to the shards); then
prepare_model_for_kbit_training with non-reentrant gradient checkpointing, LoRA r 16 / alpha 32 /
dropout 0 on q, k, v and o (the attention: what configs/mixtral-8x7b-12gb.yaml trains), torch
AdamW over the LoRA parameters, clipping at 1.0. --gpu-weights is what accelerate may place on
the card (default: --gpu-memory less 2 GiB for activations, LoRA and optimizer state); unless
--no-cap, torch.cuda.set_per_process_memory_fraction caps the whole process at --gpu-memory, so a
run that would need more than the 12 GB card has fails with an out-of-memory error, as it would
there. Sizes are read as tern's config reads them (GB = GiB, MB = MiB), so both stacks get the
same bytes. The capped process's torch.cuda.mem_get_info reports a card of --gpu-memory.

Each optimizer step (accum micro-batches of batch x seq tokens, loss / accum backward) is timed
between two torch.cuda.synchronize() calls and appended to --json at once, so a run stopped by a
time limit keeps the steps it finished. Result fields: status (loading / running / ok / failed),
error, load_s, step_s, tokens_per_s (tokens per step / mean of the steps after the first, or the
first alone), peak_gib (torch.cuda.max_memory_allocated over the run), host_peak_gib (ru_maxrss),
placement (how many parameters accelerate put on the card, in RAM and on disk), versions. Prints
`RESULT {json}` last. Checked on the CPU with transformers 4.57.6 (tiny presets, --device cpu):
with layers placed on disk the first forward fails (`mm: mat1 and mat2 shapes cannot be
multiplied`: a disk-offloaded Linear4bit comes back without its packed shape); with everything in
RAM it trains. transformers 5 cannot load a 4-bit MoE checkpoint (make_bnb_moe_model.py).
"""
import argparse
import json
import os
import re
import resource
import sys
import time
import traceback

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def gbytes(s):
    m = re.fullmatch(r"\s*([0-9.]+)\s*(GB|GiB|MB|MiB)?\s*", s)
    if not m:
        raise argparse.ArgumentTypeError(f"'{s}': expected a size such as 11.5GB, 12GiB or bytes")
    u = {"GB": 2**30, "GiB": 2**30, "MB": 2**20, "MiB": 2**20, None: 1}[m.group(2)]  # as tern's config
    return int(float(m.group(1)) * u)


def versions():
    import importlib.metadata as md
    out = {}
    for n in ["torch", "transformers", "peft", "accelerate", "bitsandbytes"]:
        try:
            out[n] = md.version(n)
        except Exception:
            out[n] = None
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--gpu-memory", type=gbytes, default=gbytes("11.5GB"))
    ap.add_argument("--gpu-weights", type=gbytes, default=None)
    ap.add_argument("--cpu-memory", type=gbytes, default=gbytes("12GB"))
    ap.add_argument("--offload-folder", required=True)
    ap.add_argument("--no-cap", action="store_true")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--data", default=None)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    if a.gpu_weights is None:
        a.gpu_weights = max(a.gpu_memory - 2 * 2**30, 2**30)
    res = dict(stack="hf-offload", model=os.path.abspath(a.model), status="loading",
               gpu_memory=a.gpu_memory, gpu_weights=a.gpu_weights, cpu_memory=a.cpu_memory,
               batch=a.batch, seq=a.seq, accum=a.accum, rank=a.rank, lora_targets=TARGETS,
               tokens_per_step=a.batch * a.seq * a.accum, step_s=[], losses=[])

    def save():
        res["host_peak_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        if a.device == "cuda":
            import torch
            res["peak_gib"] = round(torch.cuda.max_memory_allocated(0) / 2**30, 3)
        t = res["step_s"]
        if t:
            timed = t[1:] if len(t) > 1 else t
            res["s_per_step"] = round(sum(timed) / len(timed), 3)
            res["tokens_per_s"] = round(res["tokens_per_step"] / res["s_per_step"], 2)
        if a.json:
            with open(a.json + ".tmp", "w") as f:
                json.dump(res, f)
            os.replace(a.json + ".tmp", a.json)

    try:
        import torch
        res["versions"] = versions()
        save()
        from transformers import AutoModelForCausalLM
        from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
        cuda = a.device == "cuda"
        if cuda and not torch.cuda.is_available():
            sys.exit("--device cuda: torch sees no CUDA device")
        if cuda and not a.no_cap:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, a.gpu_memory / total), 0)
            res["cap_bytes"] = a.gpu_memory
            # A card of --gpu-memory also reports that much to mem_get_info, which transformers'
            # caching_allocator_warmup clamps its one big allocation with (4.57: free - 1.2 GiB).
            # Left at the big card's free memory, the warmup asks for more than the cap and the
            # load fails, where on a real 12 GB card it would not.
            big_info = torch.cuda.mem_get_info

            def capped_info(device=None):
                free, _ = big_info(device)
                return min(free, max(0, a.gpu_memory - torch.cuda.memory_reserved(device))), a.gpu_memory
            torch.cuda.mem_get_info = capped_info
        torch.manual_seed(a.seed)
        os.makedirs(a.offload_folder, exist_ok=True)
        mem = {"cpu": a.cpu_memory}
        if cuda:
            mem[0] = a.gpu_weights
        view = os.path.join(a.offload_folder, "model-view")
        os.makedirs(view, exist_ok=True)
        src = os.path.abspath(a.model)
        for fn in os.listdir(src):
            if fn != "config.json" and not os.path.lexists(os.path.join(view, fn)):
                os.symlink(os.path.join(src, fn), os.path.join(view, fn))
        with open(os.path.join(src, "config.json")) as f:
            cfg = json.load(f)
        cfg["quantization_config"]["llm_int8_enable_fp32_cpu_offload"] = True
        with open(os.path.join(view, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        print(f"loading {src} (device_map auto, max_memory {mem}, offload_folder {a.offload_folder})", flush=True)
        t0 = time.perf_counter()
        m = AutoModelForCausalLM.from_pretrained(
            view, device_map="auto", max_memory=mem, offload_folder=a.offload_folder,
            dtype=torch.bfloat16, attn_implementation="sdpa")
        res["load_s"] = round(time.perf_counter() - t0, 1)
        dm = getattr(m, "hf_device_map", {}) or {}
        place = {}
        for name, p in m.named_parameters():
            dev = None
            best = ""
            for k, v in dm.items():  # the longest device-map prefix of the parameter's name
                if (k == "" or name == k or name.startswith(k + ".")) and len(k) >= len(best):
                    best, dev = k, v
            key = str(dev if dev is not None else p.device)
            place[key] = place.get(key, 0) + p.numel()
        res["placement_params"] = place
        res["placement_modules"] = {str(v): sum(1 for x in dm.values() if x == v) for v in set(dm.values())}
        res["linear4bit_modules"] = sum(1 for q in m.modules() if type(q).__name__ == "Linear4bit")
        save()
        print(f"loaded in {res['load_s']} s: {res['linear4bit_modules']} Linear4bit, parameters by place "
              f"{place}", flush=True)
        m = prepare_model_for_kbit_training(m, use_gradient_checkpointing=True,
                                            gradient_checkpointing_kwargs={"use_reentrant": False})
        m.config.use_cache = False
        m = get_peft_model(m, LoraConfig(r=a.rank, lora_alpha=2 * a.rank, lora_dropout=0.0, bias="none",
                                         task_type="CAUSAL_LM", target_modules=TARGETS))
        params = [p for p in m.parameters() if p.requires_grad]
        res["trainable_params"] = sum(p.numel() for p in params)
        opt = torch.optim.AdamW(params, lr=1e-4)
        V = m.config.vocab_size
        rows = []
        if a.data:
            with open(a.data) as f:
                rows = [json.loads(l)["input_ids"][:a.seq] for l in f if l.strip()]
        gen = torch.Generator().manual_seed(a.seed)
        dev = torch.device("cuda:0" if cuda else "cpu")
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        m.train()
        res["status"] = "running"
        save()
        print(f"training: {a.steps} steps of {res['tokens_per_step']} tokens, {res['trainable_params']} "
              "LoRA parameters", flush=True)
        cur = 0
        for _ in range(a.steps):
            sync()
            t = time.perf_counter()
            tot = 0.0
            for _ in range(a.accum):
                if rows:
                    x = torch.tensor([rows[(cur + i) % len(rows)] for i in range(a.batch)])
                    cur += a.batch
                else:
                    x = torch.randint(0, V, (a.batch, a.seq), generator=gen)
                x = x.to(dev)
                loss = m(input_ids=x, labels=x).loss
                (loss / a.accum).backward()
                tot += float(loss.detach()) / a.accum
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            sync()
            res["step_s"].append(round(time.perf_counter() - t, 3))
            res["losses"].append(round(tot, 4))
            save()
            print(f"step {len(res['step_s'])}/{a.steps}: {res['step_s'][-1]} s, loss {tot:.4f}", flush=True)
        res["status"] = "ok"
    except BaseException as e:  # noqa: B902 (the result must say why, whatever stopped it)
        res["status"] = "failed"
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        traceback.print_exc()
    save()
    print("RESULT " + json.dumps(res), flush=True)
    sys.exit(0 if res["status"] == "ok" else 1)


if __name__ == "__main__":
    main()
