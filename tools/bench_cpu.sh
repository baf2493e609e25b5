#!/usr/bin/env bash
# tools/bench_cpu.sh — tern's CPU backend against PyTorch + PEFT on the CPU, side by side, on the
# same model, tokens per step and threads; one table at the end (docs/PERFORMANCE.md).
#
#   tools/bench_cpu.sh [--shapes demo,100m] [--steps 5] [--threads N] [--batch 2] [--seq 256]
#                      [--tern BIN] [--backend cpu] [--out DIR] [--models DIR]
#
# Shapes (each: LoRA r 16 / alpha 32 on all 7 projections, no dropout, gradient checkpointing,
# AdamW, clipping 1.0, the loss of every token, --batch rows of --seq random ids per step):
#   demo        demo/model (the README demo's 2M-parameter Llama), fp32 base and products
#   100m        a ~100M-parameter Llama (tools/make_synthetic_model.py --preset llama-100m), fp32
#   1b-nf4      Llama-3.2-1B shapes (--preset llama3.2-1b), tern with an nf4-dq base; PyTorch
#               with a bf16 base (bitsandbytes' 4-bit layers need a GPU): for the 16-core machine
#   1b-ternary  the same with tern's ternary base
# tern runs `BIN train` with backend --backend (default cpu) under OMP_NUM_THREADS=--threads;
# tokens/s = tokens per step / the mean step_s of metrics.jsonl after the first step. PyTorch runs
# tools/bench_cpu_torch.py with torch.set_num_threads(--threads), one warm-up step, then --steps
# timed ones. Both print their own progress in DIR/logs; DIR/table.md gets the table.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shapes=demo,100m
steps=5
threads=$(nproc)
batch=2
seq=256
tern=$ROOT/build/tern
backend=cpu
out=$ROOT/outputs/bench-cpu
models=/tmp/tern-bench-models
while [ $# -gt 0 ]; do
	case $1 in
	--shapes) shapes=$2; shift 2 ;;
	--steps) steps=$2; shift 2 ;;
	--threads) threads=$2; shift 2 ;;
	--batch) batch=$2; shift 2 ;;
	--seq) seq=$2; shift 2 ;;
	--tern) tern=$2; shift 2 ;;
	--backend) backend=$2; shift 2 ;;
	--out) out=$2; shift 2 ;;
	--models) models=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d'; exit 0 ;;
	*) echo "bench_cpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
mkdir -p "$out/logs" "$models"
table=$out/table.md
{
	echo "date $(date -u '+%Y-%m-%d %H:%M UTC'); $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "threads $threads, $batch x $seq tokens per step, LoRA r 16 all linear, checkpointing, AdamW"
	echo
	echo "| shape | tern base | tern tokens/s | PyTorch base | PyTorch tokens/s | tern / PyTorch |"
	echo "|---|---|---|---|---|---|"
} >"$table"

# model dir for a shape: demo/model, or a synthetic one (written once, reused)
model_of() {
	case $1 in
	demo) echo "$ROOT/demo/model" ;;
	100m) echo "$models/llama-100m" ;;
	1b-*) echo "$models/llama3.2-1b" ;;
	esac
}
preset_of() { case $1 in 100m) echo llama-100m ;; 1b-*) echo llama3.2-1b ;; esac; }

for shape in ${shapes//,/ }; do
	case $shape in
	demo | 100m) tbase=f32 pbase=f32 ;;
	1b-nf4) tbase=nf4-dq pbase=bf16 ;;
	1b-ternary) tbase=ternary pbase=bf16 ;;
	*) echo "bench_cpu.sh: unknown shape $shape (demo, 100m, 1b-nf4, 1b-ternary)" >&2; exit 2 ;;
	esac
	model=$(model_of "$shape")
	if [ ! -f "$model/config.json" ]; then
		python3 "$ROOT/tools/make_synthetic_model.py" "$model" --preset "$(preset_of "$shape")" ||
			{ echo "bench_cpu.sh: could not write $model" >&2; exit 1; }
	fi
	vocab=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['vocab_size'])" "$model/config.json")
	data=$out/data-$shape.jsonl
	python3 "$ROOT/tools/bench_util.py" data "$data" --rows $((batch * (steps + 2))) --seq "$seq" --vocab "$vocab"

	# tern
	tdir=$out/tern-$shape
	rm -rf "$tdir"
	cat >"$out/$shape.yaml" <<Y
base_model: $model
base_format: $tbase
backend: $backend
adapter: lora
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_linear: true
datasets:
  - path: $data
    type: pretokenized
sequence_len: $seq
sample_packing: false
micro_batch_size: $batch
gradient_accumulation_steps: 1
max_steps: $((steps + 1))
learning_rate: 0.0001
weight_decay: 0.0
max_grad_norm: 1.0
gradient_checkpointing: true
logging_steps: 1
save_steps: 0
val_set_size: 0
output_dir: $tdir
Y
	echo "== $shape: tern ($backend, $tbase, $threads threads)" >&2
	OMP_NUM_THREADS=$threads "$tern" train "$out/$shape.yaml" >"$out/logs/tern-$shape.log" 2>&1
	trc=$?
	ttps=$(python3 - "$tdir/metrics.jsonl" <<'P'
import json, sys
try:
    rows = [json.loads(l) for l in open(sys.argv[1]) if '"step_s"' in l]
except OSError:
    rows = []
rows = rows[1:]  # the first step warms up
if rows:
    tok = sum(r["tokens_per_s"] * r["step_s"] for r in rows)
    print(f"{tok / sum(r['step_s'] for r in rows):.0f}")
else:
    print("failed")
P
)
	[ $trc = 0 ] || ttps="failed (rc $trc: $(grep -m1 '^tern:' "$out/logs/tern-$shape.log"))"

	# PyTorch + PEFT
	echo "== $shape: PyTorch + PEFT ($pbase, $threads threads)" >&2
	python3 "$ROOT/tools/bench_cpu_torch.py" --model "$model" --data "$data" --batch "$batch" --seq "$seq" \
		--steps "$steps" --threads "$threads" --base "$pbase" --out "$out/torch-$shape.json" \
		>"$out/logs/torch-$shape.log" 2>&1
	ptps=$(python3 -c "import json,sys; print(f\"{json.load(open(sys.argv[1]))['tokens_per_s']:.0f}\")" \
		"$out/torch-$shape.json" 2>/dev/null || echo failed)
	ratio=$(python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}x')" "$ttps" "$ptps" 2>/dev/null || echo -)
	echo "| $shape | $tbase | $ttps | $pbase | $ptps | $ratio |" >>"$table"
done
echo >>"$table"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg); torch $(python3 -c 'import torch, transformers, peft; print(torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' 2>/dev/null)" >>"$table"
cat "$table"
