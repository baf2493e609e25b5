#!/usr/bin/env bash
# tools/bench_ternary_8gb.sh — issue 15's claim on the GPU machine: a Llama-2-7B-shaped model trains
# with LoRA under device_memory 8GB over a ternary base, next to the same run over an NF4 base.
#
#   tools/bench_ternary_8gb.sh [--preset llama2-7b] [--steps 4] [--seq 2048] [--device-memory 8GB]
#                              [--formats ternary,nf4-dq] [--backend vulkan] [--tern BIN]
#                              [--out DIR] [--models DIR] [--timeout SEC] [--tern-set KEY=VAL]...
#
# Writes (or reuses) a synthetic model with random bf16 weights and the real shapes
# (tools/make_synthetic_model.py --preset), random token ids (tools/bench_util.py data), then per
# base format one `tern train`: LoRA r 16 / alpha 32 on all 7 projections, micro-batch 1 x seq,
# no accumulation, gradient checkpointing, AdamW, device_memory as given (the planner keeps every
# layer it can on the device and streams the rest), logging every step. Per run: tokens/s = tokens
# per step / mean step_s of metrics.jsonl after the first (warm-up) step; peak = the largest "mem"
# of tern's progress lines (device memory tern allocated); smi = nvidia-smi's peak when present;
# the plan's verdict line. One table at the end, also in OUT/table.md; logs in OUT/logs.
#
# On the H200 (one GPU, no network) the default run takes about 2-3 minutes: the 13.5 GB model is
# written once (reused from --models afterwards), each format builds its pack file once. With
# .gl/*.deb present and the NVIDIA Vulkan ICD there it sets up tern's libraries as tools/bench_gpu.sh
# does. Tried here on the tiny preset with lavapipe: --preset tiny --seq 128.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
PRESET=llama2-7b STEPS=4 SEQ=2048 DEVMEM=8GB FORMATS=ternary,nf4-dq BACKEND=vulkan
TERN=$ROOT/build/tern OUT_DIR=$ROOT/outputs/bench-ternary-8gb MODELS=${TMPDIR:-/tmp}/tern-bench-models
TIMEOUT=150 PY=python3
SETS=()

die() {
	echo "bench_ternary_8gb.sh: $*" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	opt=$1 val=
	case $opt in
	-h | --help)
		sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	--*=*) val=${opt#*=} opt=${opt%%=*} ;;
	--*)
		[ $# -ge 2 ] || die "$opt needs a value (--help)"
		val=$2
		shift
		;;
	*) die "unexpected argument '$opt' (--help)" ;;
	esac
	shift
	case $opt in
	--preset) PRESET=$val ;;
	--steps) STEPS=$val ;;
	--seq) SEQ=$val ;;
	--device-memory) DEVMEM=$val ;;
	--formats) FORMATS=$val ;;
	--backend) BACKEND=$val ;;
	--tern) TERN=$val ;;
	--out) OUT_DIR=$val ;;
	--models) MODELS=$val ;;
	--timeout) TIMEOUT=$val ;;
	--tern-set) SETS+=(--set "$val") ;;
	--python) PY=$val ;;
	*) die "unknown option $opt (--help)" ;;
	esac
done
for v in STEPS SEQ TIMEOUT; do
	case ${!v} in '' | *[!0-9]*) die "--$(echo "$v" | tr '[:upper:]' '[:lower:]'): '${!v}' is not a whole number" ;; esac
done
[ "$STEPS" -ge 2 ] || die "--steps must be >= 2 (the first step is the warm-up)"
case $TERN in /*) ;; *) TERN=$PWD/$TERN ;; esac
case $OUT_DIR in /*) ;; *) OUT_DIR=$PWD/$OUT_DIR ;; esac
case $MODELS in /*) ;; *) MODELS=$PWD/$MODELS ;; esac
[ -x "$TERN" ] || die "$TERN is not an executable (build tern first, or give --tern BIN)"
IFS=, read -r -a fmt_list <<<"$FORMATS"
for f in "${fmt_list[@]}"; do
	case $f in ternary | nf4 | nf4-dq | bf16 | f16 | f32) ;; *) die "--formats: unknown base format '$f'" ;; esac
done

T0=$(date +%s)
say() { printf '[%4d s] %s\n' $(($(date +%s) - T0)) "$*"; }
mkdir -p "$MODELS" || die "cannot create $MODELS"
rm -rf "${OUT_DIR:?}"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/runs" "$OUT_DIR/configs" || die "cannot create $OUT_DIR"

# the GPU machine: tern's libraries from .gl (as tools/bench_gpu.sh), the NVIDIA Vulkan ICD
PREFIX=()
shopt -s nullglob
debs=("$ROOT"/.gl/*.deb "$ROOT"/.gl/extra/*.deb)
shopt -u nullglob
if [ -f "$NV_ICD" ] && [ ${#debs[@]} -gt 0 ] && [ "$(id -u)" -eq 0 ]; then
	mkdir -p /opt/tdeps
	for f in "${debs[@]}"; do
		case $f in
		*/extra/* | *gomp* | *pcre2*) dpkg -x "$f" /opt/tdeps ;;
		*) dpkg -x "$f" / ;;
		esac
	done
	ldconfig
	PREFIX=(env LD_LIBRARY_PATH="/opt/tdeps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
	say "unpacked ${#debs[@]} packages of .gl"
fi
if [ -f "$NV_ICD" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$NV_ICD; fi

# the model and the data
model=$MODELS/$PRESET
if [ -f "$model/.bench-complete" ] && [ "$(cat "$model/.bench-complete")" = "$PRESET" ]; then
	say "$PRESET: model $model reused"
elif [ -e "$model" ]; then
	die "$model exists but was not written by a bench script; remove it or choose another --models"
else
	say "$PRESET: writing the synthetic model to $model"
	rm -rf "$model.partial"
	"$PY" "$ROOT/tools/make_synthetic_model.py" "$model.partial" --preset "$PRESET" >"$OUT_DIR/logs/model.log" 2>&1 &&
		echo "$PRESET" >"$model.partial/.bench-complete" && mv "$model.partial" "$model" ||
		die "model not written: $(tail -n 1 "$OUT_DIR/logs/model.log")"
	say "$PRESET: $(tail -n 1 "$OUT_DIR/logs/model.log")"
fi
vocab=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json") ||
	die "cannot read $model/config.json"
data=$OUT_DIR/data.jsonl
"$PY" "$ROOT/tools/bench_util.py" data "$data" --rows "$STEPS" --seq "$SEQ" --vocab "$vocab" || die "cannot write $data"
"${PREFIX[@]}" "$TERN" --version >"$OUT_DIR/logs/devices.txt" 2>&1
"${PREFIX[@]}" "$TERN" devices >>"$OUT_DIR/logs/devices.txt" 2>&1
say "$(head -n 1 "$OUT_DIR/logs/devices.txt"); $PRESET, $STEPS steps of 1 x $SEQ tokens, device_memory $DEVMEM, backend $BACKEND"

SMI_PID=
trap '[ -z "$SMI_PID" ] || kill "$SMI_PID" 2>/dev/null' EXIT
for fmt in "${fmt_list[@]}"; do
	adapter=lora
	case $fmt in nf4 | nf4-dq) adapter=qlora ;; esac
	cfg=$OUT_DIR/configs/$fmt.yaml dir=$OUT_DIR/tern-$fmt log=$OUT_DIR/logs/$fmt.log
	cat >"$cfg" <<EOF
# written by tools/bench_ternary_8gb.sh
base_model: '${model//\'/\'\'}'
adapter: $adapter
base_format: $fmt
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
datasets:
  - path: '${data//\'/\'\'}'
    type: pretokenized
sequence_len: $SEQ
sample_packing: false
micro_batch_size: 1
gradient_accumulation_steps: 1
max_steps: $STEPS
learning_rate: 0.0001
lr_scheduler: constant
warmup_steps: 0
max_grad_norm: 1.0
gradient_checkpointing: true
seed: 0
backend: $BACKEND
device_memory: $DEVMEM
host_memory: auto
output_dir: '${dir//\'/\'\'}'
offload_dir: '${model//\'/\'\'}.offload-$fmt'
logging_steps: 1
save_steps: 0
EOF
	"${PREFIX[@]}" "$TERN" plan "$cfg" "${SETS[@]}" >"$OUT_DIR/logs/$fmt-plan.txt" 2>&1
	say "$fmt: $(grep '^verdict' "$OUT_DIR/logs/$fmt-plan.txt" || tail -n 1 "$OUT_DIR/logs/$fmt-plan.txt")"
	smi=$OUT_DIR/logs/$fmt-smi.txt smiarg=()
	if command -v nvidia-smi >/dev/null 2>&1; then
		nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$smi" 2>/dev/null &
		SMI_PID=$!
	fi
	t1=$(date +%s)
	timeout -s TERM -k 20 "$TIMEOUT" "${PREFIX[@]}" "$TERN" train "$cfg" "${SETS[@]}" >"$log" 2>&1
	rc=$?
	if [ -n "$SMI_PID" ]; then
		kill "$SMI_PID" 2>/dev/null
		wait "$SMI_PID" 2>/dev/null
		SMI_PID=
		smiarg=(--smi "$smi")
	fi
	"$PY" "$ROOT/tools/bench_util.py" record --out "$OUT_DIR/runs/$fmt.json" --stack "tern $fmt" --shape "$PRESET" \
		--log "$log" --rc "$rc" --wall $(($(date +%s) - t1)) --tokens-per-step "$SEQ" --timeout "$TIMEOUT" \
		--label "$fmt" --kind tern --tern-dir "$dir" "${smiarg[@]}" |
		while IFS= read -r l; do say "$l (rc $rc, $(($(date +%s) - t1)) s)"; done
done

# the table
"$PY" - "$OUT_DIR" "$DEVMEM" <<'EOF' | tee "$OUT_DIR/table.md"
import glob, json, os, sys
out, devmem = sys.argv[1], sys.argv[2]
print(f"| base | status | tokens/s | s/step | peak (tern) GiB | peak (nvidia-smi) GiB | loss first → last | plan ({devmem}) |")
print("|---|---|---|---|---|---|---|---|")
for p in sorted(glob.glob(os.path.join(out, "runs", "*.json"))):
    r = json.load(open(p))
    fmt = r["label"]
    plan = ""
    try:
        plan = next(l.strip() for l in open(os.path.join(out, "logs", fmt + "-plan.txt")) if l.startswith("verdict"))
    except (OSError, StopIteration):
        pass
    f = lambda v, s="{:.2f}": "—" if v is None else s.format(v)
    if r["status"] in ("ok", "partial"):
        print(f"| {fmt} | {r['status']} | {r['tokens_per_s']:,.1f} | {f(r.get('s_per_step'), '{:.3f}')} | "
              f"{f(r.get('peak_gib'), '{:.3f}')} | {f(r.get('smi_peak_gib'), '{:.3f}')} | "
              f"{f(r.get('loss_first'), '{:.4f}')} → {f(r.get('loss_last'), '{:.4f}')} | {plan} |")
    else:
        print(f"| {fmt} | {r['status']}: {r.get('error', '')} | — | — | — | — | — | {plan} |")
EOF
