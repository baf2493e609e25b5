#!/usr/bin/env bash
# tools/bench_multi_gpu.sh — issue 16's multi-GPU figures, for a machine with several GPUs:
#
#   dp     data-parallel scaling: a Llama-3-8B-shaped model (tools/make_synthetic_model.py
#          --preset llama3-8b, random bf16, trained as nf4-dq QLoRA r 16 on all 7 projections),
#          8192 tokens per rank and optimizer step (micro-batch 1 x 8192, accumulation 1), on
#          1, 2, 4 (... --gpus) GPUs through `tern train --devices 0,..,N-1` (mpirun, one rank per
#          GPU). tokens/s(N) = the mean of metrics.jsonl's tokens_per_s (every rank's real tokens
#          per second) over the steps after --warm; efficiency(N) = tokens/s(N) / (N x tokens/s(1)).
#          The issue's target: >= 90 % on 2 and 4 GPUs.
#   split  the layer split: a Llama-3-70B-shaped model (--preset llama3-70b: 131 GiB of bf16 on
#          disk, a ~35 GiB nf4-dq pack beside it) across 2 GPUs with a device budget of 24 GB
#          each (`layer_split: auto`, `device_memory: 24GB` per rank), micro-batch 1 x --split-seq
#          tokens; `tern plan --stages 2` first (its output in the log), then the run; with
#          --baseline also one GPU at the same 24 GB budget (streamed) for comparison.
#
#   tools/bench_multi_gpu.sh [--phases dp,split] [--gpus 1,2,4] [--tern BIN] [--backend cuda]
#                            [--out DIR] [--models DIR] [--steps N] [--warm N] [--seq N]
#                            [--split-seq N] [--baseline] [--budget SEC]
#                            [--dp-preset P] [--split-preset P]
#
# (--dp-preset / --split-preset: other make_synthetic_model.py presets, e.g. `--dp-preset tiny
# --split-preset tiny --backend cpu --gpus 1,2 --seq 256 --split-seq 256 --share-device` tries
# the script on a machine without GPUs; --share-device runs every rank on device 0.)
#
# Needs: a tern built with MPI (and -DTERN_CUDA=ON for --backend cuda), OpenMPI's mpirun on the
# machine, python3 with numpy (the synthetic models), and disk: 16 GiB for the 8B model + its
# pack, about 170 GiB for the 70B model + its pack (the x4/x8 machines' 235 GiB disks; an x2
# machine has 128 GiB: run the split phase on a larger one with --gpus naming 2 of its GPUs,
# which the split uses regardless). Models are written once into --models and reused (a file
# .bench-complete marks a finished one); tern's pack files go to each model's offload directory
# and are reused too, so phases can run in separate calls (e.g. under a 10-minute limit: first
# `--phases models`, then `dp`, then `split`).
#
# Writes OUT/logs/*.log, OUT/results.tsv (phase, GPUs, tokens/s, step s, peak device memory per
# rank 0, note) and OUT/table.md. Nothing here has run yet (no multi-GPU machine was lent to the
# work that wrote it, 2026-12-05); docs/PERFORMANCE.md "Several GPUs" says what to record.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PHASES=models,dp,split
GPUS=1,2,4
TERN=$ROOT/build/tern
BACKEND=vulkan
OUT=$ROOT/outputs/bench-multi-gpu
MODELS=/tmp/tern-bench-models
STEPS=8
WARM=2
SEQ=8192
SPLIT_SEQ=2048
BASELINE=0
BUDGET=0
DP_PRESET=llama3-8b
SPLIT_PRESET=llama3-70b
SHARE=0
PY=python3

die() {
	echo "bench_multi_gpu.sh: $*" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	case $1 in
	--phases) PHASES=$2 ;;
	--gpus) GPUS=$2 ;;
	--tern) TERN=$2 ;;
	--backend) BACKEND=$2 ;;
	--out) OUT=$2 ;;
	--models) MODELS=$2 ;;
	--steps) STEPS=$2 ;;
	--warm) WARM=$2 ;;
	--seq) SEQ=$2 ;;
	--split-seq) SPLIT_SEQ=$2 ;;
	--baseline) BASELINE=1; shift; continue ;;
	--share-device) SHARE=1; shift; continue ;;
	--budget) BUDGET=$2 ;;
	--dp-preset) DP_PRESET=$2 ;;
	--split-preset) SPLIT_PRESET=$2 ;;
	--python) PY=$2 ;;
	-h | --help)
		sed -n '2,39p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*) die "unknown option '$1' (--help lists them)" ;;
	esac
	[ $# -ge 2 ] || die "$1 needs a value"
	shift 2
done
[ "$WARM" -lt "$STEPS" ] || die "--warm $WARM must be below --steps $STEPS"
T0=$(date +%s)
say() { printf '[%5d s] %s\n' $(($(date +%s) - T0)) "$*"; }
left() { [ "$BUDGET" = 0 ] && echo 100000 || echo $((BUDGET - ($(date +%s) - T0))); }
has() { case ",$PHASES," in *",$1,"*) return 0 ;; esac; return 1; }

mkdir -p "$OUT/logs" "$OUT/runs" "$OUT/data" "$MODELS" || die "cannot create $OUT or $MODELS"
: >"$OUT/results.tsv"
[ -x "$TERN" ] || die "no tern binary at $TERN (--tern BIN)"
command -v mpirun >/dev/null 2>&1 || say "warning: no mpirun on PATH: runs of more than one GPU will fail (install openmpi-bin)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ "$BACKEND" = vulkan ] && [ -f "$NV_ICD" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$NV_ICD; fi
ngpu=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
say "tern $TERN, backend $BACKEND, $ngpu GPUs (nvidia-smi), phases $PHASES"
"$TERN" devices >"$OUT/logs/devices.log" 2>&1 || true

model() { # PRESET: writes (or reuses) $MODELS/PRESET
	local m=$MODELS/$1
	if [ -f "$m/.bench-complete" ]; then
		say "$1: model $m reused"
		return 0
	fi
	say "$1: writing the synthetic model to $m"
	rm -rf "$m.partial"
	if "$PY" "$ROOT/tools/make_synthetic_model.py" "$m.partial" --preset "$1" >"$OUT/logs/model-$1.log" 2>&1 &&
		echo "$1" >"$m.partial/.bench-complete" && mv "$m.partial" "$m"; then
		say "$1: $(tail -n 1 "$OUT/logs/model-$1.log")"
	else
		say "$1: model not written: $(tail -n 1 "$OUT/logs/model-$1.log")"
		return 1
	fi
}

# config NAME PRESET SEQ ROWS EXTRA...: a QLoRA config of the benchmark in $OUT/runs/NAME.yaml
config() {
	local name=$1 preset=$2 seq=$3 rows=$4
	shift 4
	local data=$OUT/data/$preset-$seq-$rows.jsonl
	local vocab
	vocab=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$MODELS/$preset/config.json") ||
		return 1
	[ -f "$data" ] || "$PY" "$ROOT/tools/bench_util.py" data "$data" --rows "$rows" --seq "$seq" --vocab "$vocab" ||
		return 1
	{
		cat <<EOF
# written by tools/bench_multi_gpu.sh
base_model: $MODELS/$preset
adapter: qlora
base_format: nf4-dq
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
datasets:
  - path: $data
    type: pretokenized
sequence_len: $seq
sample_packing: false
micro_batch_size: 1
gradient_accumulation_steps: 1
max_steps: $STEPS
learning_rate: 0.0001
lr_scheduler: constant
warmup_steps: 0
gradient_checkpointing: true
seed: 0
backend: $BACKEND
output_dir: $OUT/runs/$name
offload_dir: $MODELS/$preset.offload
logging_steps: 1
save_steps: 0
EOF
		for x in "$@"; do printf '%s\n' "$x"; done
	} >"$OUT/runs/$name.yaml"
}

# run NAME PHASE GPUS DEVICES ARGS...: tern train; one results.tsv line
run() {
	local name=$1 phase=$2 n=$3 devs=$4
	shift 4
	local lim
	lim=$(left)
	[ "$lim" -gt 30 ] || { say "$name: skipped (budget)"; printf '%s\t%s\t-\t-\t-\tskipped: budget\n' "$phase" "$n" >>"$OUT/results.tsv"; return; }
	[ "$SHARE" = 1 ] && devs=$(echo "$devs" | sed 's/[0-9]\+/0/g')
	say "$name: tern train on GPUs $devs"
	rm -rf "$OUT/runs/$name"
	timeout "$lim" "$TERN" train "$OUT/runs/$name.yaml" --devices "$devs" "$@" >"$OUT/logs/$name.log" 2>&1
	local rc=$?
	local m=$OUT/runs/$name/metrics.jsonl
	local r
	r=$("$PY" - "$m" "$WARM" <<'PYEOF'
import json, sys
rows = []
try:
    for line in open(sys.argv[1]):
        d = json.loads(line)
        if "tokens_per_s" in d and d["step"] > int(sys.argv[2]):
            rows.append(d)
except OSError:
    pass
if rows:
    tps = sum(r["tokens_per_s"] for r in rows) / len(rows)
    st = sum(r["step_s"] for r in rows) / len(rows)
    pk = max(r.get("peak_device_bytes", 0) for r in rows) / 2**30
    print(f"{tps:.1f}\t{st:.3f}\t{pk:.2f}")
PYEOF
)
	if [ $rc -eq 0 ] && [ -n "$r" ]; then
		printf '%s\t%s\t%s\tok\n' "$phase" "$n" "$r" >>"$OUT/results.tsv"
		say "$name: $(echo "$r" | cut -f1) tokens/s, $(echo "$r" | cut -f2) s/step"
	else
		local why
		why=$(grep -m1 '^tern: ' "$OUT/logs/$name.log" | cut -c1-200)
		printf '%s\t%s\t-\t-\t-\tfailed (exit %s): %s\n' "$phase" "$n" "$rc" "${why:-see $OUT/logs/$name.log}" >>"$OUT/results.tsv"
		say "$name: failed (exit $rc): ${why:-see $OUT/logs/$name.log}"
	fi
}

if has models || has dp; then model "$DP_PRESET" || exit 1; fi
if has models || has split; then model "$SPLIT_PRESET" || exit 1; fi

if has dp; then
	IFS=, read -r -a ns <<<"$GPUS"
	max=1
	for n in "${ns[@]}"; do [ "$n" -gt "$max" ] && max=$n; done
	config dp "$DP_PRESET" "$SEQ" $((STEPS * max)) || die "cannot write the data"
	for n in "${ns[@]}"; do
		devs=$(seq -s, 0 $((n - 1)))
		cp "$OUT/runs/dp.yaml" "$OUT/runs/dp-$n.yaml"
		sed -i "s#^output_dir: .*#output_dir: $OUT/runs/dp-$n#" "$OUT/runs/dp-$n.yaml"
		run "dp-$n" dp "$n" "$devs"
	done
fi

if has split; then
	config split "$SPLIT_PRESET" "$SPLIT_SEQ" "$STEPS" "device_memory: 24GB" "layer_split: auto" ||
		die "cannot write the data"
	say "split: tern plan --stages 2 (log: $OUT/logs/split-plan.log)"
	"$TERN" plan "$OUT/runs/split.yaml" --stages 2 --host-memory auto >"$OUT/logs/split-plan.log" 2>&1
	grep -E '^  [0-9] |^verdict' "$OUT/logs/split-plan.log"
	run split split 2 0,1
	if [ "$BASELINE" = 1 ]; then
		sed -e "s#^layer_split: .*#layer_split: false#" -e "s#^output_dir: .*#output_dir: $OUT/runs/split-1#" \
			"$OUT/runs/split.yaml" >"$OUT/runs/split-1.yaml"
		run split-1 "split-baseline" 1 0
	fi
fi

{
	echo "| phase | GPUs | tokens/s | s/step | peak device GiB (rank 0) | efficiency | note |"
	echo "|---|---|---|---|---|---|---|"
	base=$(awk -F'\t' '$1 == "dp" && $2 == 1 && $3 != "-" {print $3}' "$OUT/results.tsv")
	while IFS=$'\t' read -r ph n tps st pk note; do
		eff=-
		if [ "$ph" = dp ] && [ -n "$base" ] && [ "$tps" != - ]; then
			eff=$(awk -v t="$tps" -v b="$base" -v n="$n" 'BEGIN { printf "%.1f %%", 100 * t / (n * b) }')
		fi
		echo "| $ph | $n | $tps | $st | $pk | $eff | $note |"
	done <"$OUT/results.tsv"
} >"$OUT/table.md"
cat "$OUT/table.md"
