#!/usr/bin/env bash
# tools/bench_moe_12gb.sh — issue 12's acceptance run: MoE QLoRA on the user's machine (a 12 GB card,
# 16 GB of RAM, an SSD), tern against transformers + bitsandbytes + accelerate offloading.
#
#   tools/bench_moe_12gb.sh [--shapes mixtral] [--stacks tern,hf] [--backend vulkan|cuda|cpu]
#                           [--steps 3] [--hf-steps 2] [--seq 2048] [--batch 1] [--accum 1]
#                           [--device-memory 11.5GB] [--host-memory 12GB] [--ram-limit 16G]
#                           [--tern BIN] [--tern-set KEY=VAL]... [--out DIR] [--models DIR]
#                           [--budget 560] [--tern-timeout 300] [--hf-timeout 240] [--keep]
#                           [--hf-variants auto|budget|ram|budget,ram] [--archive FILE]
#
# Per shape (mixtral = Mixtral-8x7B, qwen3 = Qwen3-30B-A3B; tiny-mixtral, tiny-qwen3 to try the
# script on a CPU):
#  1. writes the model: tools/make_bnb_moe_model.py, a random bitsandbytes 4-bit checkpoint (NF4,
#     double quant, per-expert names, sharded; Mixtral 24.4 GB, Qwen3 16.7 GB), and random
#     pre-tokenized rows (tools/bench_util.py data);
#  2. measures the machine's rates once: disk read (dd iflag=direct of 4 GiB of a shard, after
#     dropping the page cache) and host→device copies (bench_moe_util.py h2d, torch; pinned and
#     pageable);
#  3. tern: builds the pack file (offload_dir/base-auto.tpack) with a one-step run of one short row,
#     outside the RAM limit; then, page cache dropped, `tern train` inside it: qlora, LoRA r 16 /
#     alpha 32 / dropout 0 on q, k, v, o (configs/mixtral-8x7b-12gb.yaml's targets), micro-batch
#     --batch x --seq, --accum micro-batches per step, gradient checkpointing, AdamW, clipping 1.0,
#     device_memory / host_memory as given, the rest of the layers read from the pack on disk.
#     tokens/s = tokens per step / mean step_s after the first step (metrics.jsonl); stream bytes
#     per tier and step, residency (device/host/disk layers), peak device bytes from its metrics,
#     nvidia-smi's peak beside; then the pack is deleted (disk space for the reference stack);
#  4. hf: tools/bench_hf_offload.py with transformers 4.57.6 from .hf4/ (transformers 5 cannot
#     load a 4-bit MoE checkpoint; tools/fetch_bench_deps.sh brings .hf4 and .bnb): device_map
#     "auto", max_memory {0: device budget - 2 GiB, cpu: --host-memory}, offload_folder, the same
#     LoRA, rows and tokens per step, the process capped at the device budget (a 12 GB card),
#     inside the RAM limit; if that run fails before its first step, once more without the RAM
#     limit and with 64 GB of max_memory "cpu" (no disk tier: over the user's budget, labelled so)
#     when a minute is left (--hf-variants auto; "budget" and "ram" run one of them, "budget,ram"
#     both);
#  5. deletes the model unless --keep, prints the table (OUT/table.md, OUT/results.json).
# The RAM limit (--ram-limit, the user's 16 GB; 0 = none) is a memory cgroup (v2 or v1) around a
# stack: it bounds the page cache, so disk-tier reads come from the disk after the first pass as on
# the user's machine, not from the GPU machine's 128 GiB of cache. Without a writable cgroup the
# runs go on unlimited and the table says so. Root drops the page cache before each run.
#
# Disk (the GPU machine has 64 GiB): Mixtral's checkpoint 24.4 GB + tern's pack 24.4 GB during
# tern's run (45.5 GiB), then the checkpoint + HF's offload folder (accelerate reads disk-tier
# weights from the safetensors; the folder stays small unless it writes copies: at most the disk
# tier, ~14 GB): under 39 GiB. Qwen3: 16.7 + 16.7 GB (31 GiB). The script checks the free space
# before writing (checkpoint + pack + 2 GiB) and stops the reference stack when less than 2 GiB
# are left.
#
# Time on the H200 (estimates: the write and read rates of its disk are measured by this script):
# Mixtral write 25-50 s, rates 15 s, pack build 30-60 s, tern 3 steps of 2048 tokens ~60-120 s,
# HF load 60-120 s + steps (limit 240 s): one device call per shape, --budget 560 (each stage
# starts only when its limit fits in what is left). Carry .gl, .bnb, .hf4.tgz, build/tern (and
# build-cuda/tern); run from the repository root (docs/PERFORMANCE.md, issue 12's acceptance run):
#   tools/bench_moe_12gb.sh --shapes mixtral --backend cuda --archive $OUT/moe-mixtral.tgz
#   tools/bench_moe_12gb.sh --shapes qwen3 --backend cuda --archive $OUT/moe-qwen3.tgz
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
SHAPES=mixtral STACKS=tern,hf BACKEND=vulkan STEPS=3 HF_STEPS=2 SEQ=2048 BATCH=1 ACCUM=1
DEVMEM=11.5GB HOSTMEM=12GB RAM_LIMIT=16G TERN='' OUT_DIR=$ROOT/outputs/bench-moe-12gb
MODELS=${TMPDIR:-/tmp}/tern-moe-bench BUDGET=560 TERN_TIMEOUT=300 HF_TIMEOUT=240 KEEP=0 ARCHIVE=
PY=python3 HF_VARIANTS=auto
SETS=()

die() {
	echo "bench_moe_12gb.sh: $*" >&2
	exit 2
}
while [ $# -gt 0 ]; do
	opt=$1 val=
	case $opt in
	-h | --help)
		sed -n '2,55p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	--keep)
		KEEP=1
		shift
		continue
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
	--shapes) SHAPES=$val ;;
	--stacks) STACKS=$val ;;
	--backend) BACKEND=$val ;;
	--steps) STEPS=$val ;;
	--hf-steps) HF_STEPS=$val ;;
	--seq) SEQ=$val ;;
	--batch) BATCH=$val ;;
	--accum) ACCUM=$val ;;
	--device-memory) DEVMEM=$val ;;
	--host-memory) HOSTMEM=$val ;;
	--ram-limit) RAM_LIMIT=$val ;;
	--tern) TERN=$val ;;
	--tern-set) SETS+=(--set "$val") ;;
	--out) OUT_DIR=$val ;;
	--models) MODELS=$val ;;
	--budget) BUDGET=$val ;;
	--tern-timeout) TERN_TIMEOUT=$val ;;
	--hf-timeout) HF_TIMEOUT=$val ;;
	--archive) ARCHIVE=$val ;;
	--python) PY=$val ;;
	--hf-variants) HF_VARIANTS=$val ;;
	*) die "unknown option $opt (--help)" ;;
	esac
done
for v in STEPS HF_STEPS SEQ BATCH ACCUM BUDGET TERN_TIMEOUT HF_TIMEOUT; do
	case ${!v} in '' | *[!0-9]*) die "--$(echo "$v" | tr 'A-Z_' 'a-z-'): '${!v}' is not a whole number" ;; esac
done
[ "$STEPS" -ge 2 ] || die "--steps must be >= 2 (the first step is the warm-up)"
[ "$HF_STEPS" -ge 1 ] && [ "$SEQ" -ge 8 ] && [ "$BATCH" -ge 1 ] && [ "$ACCUM" -ge 1 ] ||
	die "--hf-steps, --batch and --accum must be >= 1, --seq >= 8"
for v in ${HF_VARIANTS//,/ }; do case $v in auto | budget | ram) ;; *) die "--hf-variants: '$v' (allowed: auto, budget, ram)" ;; esac; done
case $BACKEND in vulkan | cuda | cpu) ;; *) die "--backend: '$BACKEND' (allowed: vulkan, cuda, cpu)" ;; esac
[ -n "$TERN" ] || { if [ "$BACKEND" = cuda ] && [ -x "$ROOT/build-cuda/tern" ]; then TERN=$ROOT/build-cuda/tern; else TERN=$ROOT/build/tern; fi; }
case $TERN in /*) ;; *) TERN=$PWD/$TERN ;; esac
case $OUT_DIR in /*) ;; *) OUT_DIR=$PWD/$OUT_DIR ;; esac
case $MODELS in /*) ;; *) MODELS=$PWD/$MODELS ;; esac
if [ -n "$ARCHIVE" ]; then case $ARCHIVE in /*) ;; *) ARCHIVE=$PWD/$ARCHIVE ;; esac; fi
RUN_TERN=0 RUN_HF=0
IFS=, read -r -a stack_list <<<"$STACKS"
for s in "${stack_list[@]}"; do
	case $s in tern) RUN_TERN=1 ;; hf) RUN_HF=1 ;; *) die "--stacks: unknown stack '$s' (allowed: tern, hf)" ;; esac
done
[ "$RUN_TERN" = 0 ] || [ -x "$TERN" ] || die "$TERN is not an executable (build tern, or give --tern BIN)"
IFS=, read -r -a shape_list <<<"$SHAPES"
shape_info() { # sets PRESET
	case $1 in
	mixtral) PRESET=mixtral-8x7b ;;
	qwen3) PRESET=qwen3-30b-a3b ;;
	tiny-mixtral) PRESET=tiny-mixtral ;;
	tiny-qwen3) PRESET=tiny-qwen3-moe ;;
	*) return 1 ;;
	esac
}
for s in "${shape_list[@]}"; do shape_info "$s" || die "--shapes: unknown shape '$s' (allowed: mixtral, qwen3, tiny-mixtral, tiny-qwen3)"; done
bytes_of() { # 11.5GB / 12GiB / 16G / 500MB / 1234 -> bytes; GB = GiB as tern's config reads it, so both stacks get the same budget
	"$PY" -c 'import re,sys
m = re.fullmatch(r"([0-9.]+)\s*(GB|GiB|G|MB|MiB|M|KB|KiB|K)?", sys.argv[1].strip())
u = {"GB": 2**30, "GiB": 2**30, "G": 2**30, "MB": 2**20, "MiB": 2**20, "M": 2**20, "KB": 1024, "KiB": 1024, "K": 1024, None: 1}
print(int(float(m.group(1)) * u[m.group(2)]) if m else sys.exit(1))' "$1"
}
DEVMEM_B=$(bytes_of "$DEVMEM") || die "--device-memory: '$DEVMEM' is not a size"
HOSTMEM_B=$(bytes_of "$HOSTMEM") || die "--host-memory: '$HOSTMEM' is not a size"
RAM_B=0
[ "$RAM_LIMIT" = 0 ] || RAM_B=$(bytes_of "$RAM_LIMIT") || die "--ram-limit: '$RAM_LIMIT' is not a size"

T0=$(date +%s)
say() { printf '[%4d s] %s\n' $(($(date +%s) - T0)) "$*"; }
left() { echo $((BUDGET - ($(date +%s) - T0))); }
mkdir -p "$MODELS" || die "cannot create $MODELS"
if [ "$(stat -f -c %T "$MODELS" 2>/dev/null)" = tmpfs ]; then # a RAM disk is no disk tier
	alt=$ROOT/outputs/moe-models
	mkdir -p "$alt" || die "$MODELS is a tmpfs and $alt cannot be created: give --models DIR on a disk"
	[ "$(stat -f -c %T "$alt" 2>/dev/null)" != tmpfs ] || die "$MODELS and $alt are tmpfs: give --models DIR on a disk"
	say "$MODELS is a tmpfs (RAM): the models go to $alt"
	MODELS=$alt
fi
rm -rf "${OUT_DIR:?}"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/runs" "$OUT_DIR/ref" "$OUT_DIR/configs" "$OUT_DIR/data" || die "cannot create $OUT_DIR"
archive() {
	[ -n "$ARCHIVE" ] || return 0
	mkdir -p "$(dirname "$ARCHIVE")"
	tar -czf "$ARCHIVE.tmp" -C "$(dirname "$OUT_DIR")" --exclude='*.safetensors' --exclude='*.tpack' \
		--exclude='offload*' "$(basename "$OUT_DIR")" 2>/dev/null && mv -f "$ARCHIVE.tmp" "$ARCHIVE"
}

# ---- the machine: tern's libraries from .gl (as tools/bench_gpu.sh), Vulkan ICD, Python path ----
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
	lp=/opt/tdeps/usr/lib/x86_64-linux-gnu
	for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ ! -d "$d" ] || lp=$lp:$d; done
	PREFIX=(env LD_LIBRARY_PATH="$lp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
	say "unpacked ${#debs[@]} packages of .gl"
fi
if [ -f "$NV_ICD" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$NV_ICD; fi
HF_PATH=
if [ -d "$ROOT/.hf4" ]; then
	HF_PATH=$ROOT/.hf4
elif [ -f "$ROOT/.hf4.tgz" ]; then # what travels to the GPU machine (tools/fetch_bench_deps.sh)
	mkdir -p "$MODELS/hf4" && tar -xzf "$ROOT/.hf4.tgz" -C "$MODELS/hf4" && HF_PATH=$MODELS/hf4/.hf4
	say "unpacked .hf4.tgz into $MODELS/hf4"
fi
[ ! -d "$ROOT/.bnb" ] || HF_PATH=$HF_PATH${HF_PATH:+:}$ROOT/.bnb
[ -n "$HF_PATH" ] && [ -d "$ROOT/.bnb" ] || [ "$RUN_HF" = 0 ] ||
	say "WARNING: .hf4(.tgz) or .bnb missing (tools/fetch_bench_deps.sh): the reference stack uses the machine's transformers"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TOKENIZERS_PARALLELISM=false
REF_DEV=cuda
command -v nvidia-smi >/dev/null 2>&1 || REF_DEV=cpu

# ---- the RAM limit: a memory cgroup (v2, else v1) that runs a command -----------------------------
CG='' CGV=''
setup_cgroup() {
	[ "$RAM_B" -gt 0 ] || return 0
	local name=tern-moe-bench-$$
	if [ -f /sys/fs/cgroup/cgroup.controllers ] && grep -qw memory /sys/fs/cgroup/cgroup.controllers; then
		echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
		if mkdir -p "/sys/fs/cgroup/$name" 2>/dev/null && echo "$RAM_B" >"/sys/fs/cgroup/$name/memory.max" 2>/dev/null; then
			echo 0 >"/sys/fs/cgroup/$name/memory.swap.max" 2>/dev/null
			CG=/sys/fs/cgroup/$name CGV=2
		fi
	elif [ -d /sys/fs/cgroup/memory ]; then
		if mkdir -p "/sys/fs/cgroup/memory/$name" 2>/dev/null &&
			echo "$RAM_B" >"/sys/fs/cgroup/memory/$name/memory.limit_in_bytes" 2>/dev/null; then
			echo "$RAM_B" >"/sys/fs/cgroup/memory/$name/memory.memsw.limit_in_bytes" 2>/dev/null
			CG=/sys/fs/cgroup/memory/$name CGV=1
		fi
	fi
}
cg_reset() { # the peak counter of the cgroup back to 0 (v1; v2's memory.peak accepts a write on newer kernels)
	[ -n "$CG" ] || return 0
	if [ "$CGV" = 1 ]; then echo 0 >"$CG/memory.max_usage_in_bytes" 2>/dev/null; else echo 0 >"$CG/memory.peak" 2>/dev/null; fi
	return 0
}
cg_peak() {
	[ -n "$CG" ] || return 0
	if [ "$CGV" = 1 ]; then cat "$CG/memory.max_usage_in_bytes" 2>/dev/null; else cat "$CG/memory.peak" 2>/dev/null; fi
}
in_ram_limit() { # CMD... inside the cgroup when there is one
	if [ -n "$CG" ]; then
		sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"' "$CG" "$@"
	else
		"$@"
	fi
}
drop_caches() {
	sync
	[ ! -w /proc/sys/vm/drop_caches ] || echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
}
SMI_PID=
smi_start() {
	SMI_PID=
	if command -v nvidia-smi >/dev/null 2>&1; then
		nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
		SMI_PID=$!
	fi
}
smi_stop() {
	if [ -n "$SMI_PID" ]; then
		kill "$SMI_PID" 2>/dev/null
		wait "$SMI_PID" 2>/dev/null
		SMI_PID=
	fi
}
WATCH_PID=
cleanup() {
	smi_stop
	[ -z "$WATCH_PID" ] || kill "$WATCH_PID" 2>/dev/null
	if [ -n "$CG" ]; then rmdir "$CG" 2>/dev/null; fi
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
setup_cgroup
if [ "$RAM_B" -gt 0 ] && [ -n "$CG" ]; then
	RAM_NOTE="limited to $RAM_LIMIT (cgroup v$CGV)"
elif [ "$RAM_B" -gt 0 ]; then
	RAM_NOTE="NOT limited (no writable memory cgroup: disk-tier reads may come from the page cache)"
else
	RAM_NOTE="not limited (--ram-limit 0)"
fi
say "RAM for the stacks: $RAM_NOTE"
free_gib() { df -Pk "$1" | awk 'NR == 2 { printf "%.1f", $4 / 1048576 }'; }

{
	echo "date $(date -u +%Y-%m-%dT%H:%M:%SZ) commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null) host $(hostname)"
	echo "args shapes=$SHAPES stacks=$STACKS backend=$BACKEND steps=$STEPS hf_steps=$HF_STEPS seq=$SEQ batch=$BATCH accum=$ACCUM device_memory=$DEVMEM host_memory=$HOSTMEM ram_limit=$RAM_LIMIT sets=${SETS[*]:-}"
	command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -i 0 --query-gpu=name,driver_version,memory.total --format=csv,noheader
	nproc
	free -g | sed -n 2p
	df -hT "$MODELS" | tail -n 1
	"${PREFIX[@]}" "$TERN" --version 2>&1 | head -n 1
} >"$OUT_DIR/logs/machine.txt" 2>&1
sed 's/^/    /' "$OUT_DIR/logs/machine.txt"

RATES=$OUT_DIR/rates.json
rates_done=0
measure_rates() { # FILE: a big file of the model, read with O_DIRECT after dropping the cache
	local f=$1 n mb t1 t2 gbs
	drop_caches
	n=$(($(stat -c %s "$f") / 67108864))
	[ "$n" -le 64 ] || n=64 # 4 GiB at most
	[ "$n" -ge 1 ] || n=1
	t1=$(date +%s%N)
	if dd if="$f" of=/dev/null bs=64M count="$n" iflag=direct 2>"$OUT_DIR/logs/dd.txt"; then how="dd iflag=direct, $n x 64 MiB"; else
		drop_caches
		t1=$(date +%s%N)
		dd if="$f" of=/dev/null bs=64M count="$n" 2>"$OUT_DIR/logs/dd.txt"
		how="dd after drop_caches, $n x 64 MiB"
	fi
	t2=$(date +%s%N)
	mb=$((n * 64))
	gbs=$("$PY" -c "print(round($mb * 2**20 / (($t2 - $t1) / 1e9) / 1e9, 2))")
	say "disk read: $gbs GB/s ($how)"
	if [ "$REF_DEV" = cuda ]; then
		PYTHONPATH=${HF_PATH} "$PY" "$ROOT/tools/bench_moe_util.py" h2d "$OUT_DIR/h2d.json" >"$OUT_DIR/logs/h2d.txt" 2>&1
		say "host->device: $(tail -n 1 "$OUT_DIR/logs/h2d.txt")"
	fi
	"$PY" - "$RATES" "$gbs" "$how" "$OUT_DIR/h2d.json" "$RAM_NOTE" <<'EOF'
import json, os, sys
out, gbs, how, h2d, ram = sys.argv[1:6]
r = {"disk_read_gbs": float(gbs), "disk_how": how, "ram_limit": ram}
if os.path.isfile(h2d):
    r.update(json.load(open(h2d)))
json.dump(r, open(out, "w"))
EOF
	rates_done=1
}

for shape in "${shape_list[@]}"; do
	shape_info "$shape"
	model=$MODELS/$PRESET
	say "== $PRESET =="
	if [ -f "$model/.bench-complete" ] && [ "$(cat "$model/.bench-complete")" = "$PRESET" ]; then
		say "$PRESET: model $model reused"
	else
		[ ! -e "$model" ] || rm -rf "$model"
		need=$("$PY" -c 'import sys; print({"mixtral-8x7b": 49, "qwen3-30b-a3b": 34}.get(sys.argv[1], 1))' "$PRESET")
		have=$(free_gib "$MODELS")
		say "$PRESET: writing the checkpoint to $model (free: $have GiB; checkpoint + pack need ~$need GiB)"
		"$PY" -c "import sys; sys.exit(float('$have') < $need)" || say "WARNING: less free disk than the run needs"
		rm -rf "$model.partial"
		"$PY" "$ROOT/tools/make_bnb_moe_model.py" "$model.partial" --preset "$PRESET" >"$OUT_DIR/logs/model-$PRESET.log" 2>&1 &&
			echo "$PRESET" >"$model.partial/.bench-complete" && mv "$model.partial" "$model" ||
			die "model not written: $(tail -n 1 "$OUT_DIR/logs/model-$PRESET.log")"
		say "$PRESET: $(tail -n 1 "$OUT_DIR/logs/model-$PRESET.log")"
	fi
	vocab=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json") ||
		die "cannot read $model/config.json"
	data=$OUT_DIR/data/$PRESET-$SEQ.jsonl
	rows=$((STEPS * ACCUM * BATCH))
	[ "$rows" -ge $((HF_STEPS * ACCUM * BATCH)) ] || rows=$((HF_STEPS * ACCUM * BATCH))
	"$PY" "$ROOT/tools/bench_util.py" data "$data" --rows "$rows" --seq "$SEQ" --vocab "$vocab" || die "cannot write $data"
	"$PY" "$ROOT/tools/bench_util.py" data "$OUT_DIR/data/short.jsonl" --rows 1 --seq 16 --vocab "$vocab" || die "cannot write data"
	TOKENS=$((BATCH * SEQ * ACCUM))
	if [ "$rates_done" = 0 ]; then
		big=$(ls -S "$model"/*.safetensors | head -n 1)
		measure_rates "$big"
	fi

	if [ "$RUN_TERN" = 1 ]; then
		tdir=$OUT_DIR/tern-$PRESET cfg=$OUT_DIR/configs/$PRESET.yaml log=$OUT_DIR/logs/$PRESET-tern.log
		offl=$MODELS/$PRESET.offload
		cat >"$cfg" <<EOF
# written by tools/bench_moe_12gb.sh (configs/mixtral-8x7b-12gb.yaml's recipe on random rows)
base_model: '${model//\'/\'\'}'
adapter: qlora
base_format: auto
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj]
datasets:
  - path: '${data//\'/\'\'}'
    type: pretokenized
sequence_len: $SEQ
sample_packing: false
micro_batch_size: $BATCH
gradient_accumulation_steps: $ACCUM
max_steps: $STEPS
learning_rate: 0.0001
lr_scheduler: constant
warmup_steps: 0
max_grad_norm: 1.0
gradient_checkpointing: true
seed: 0
backend: $BACKEND
device_memory: $DEVMEM
host_memory: $HOSTMEM
output_dir: '${tdir//\'/\'\'}'
offload_dir: '${offl//\'/\'\'}'
logging_steps: 1
save_steps: 0
EOF
		"${PREFIX[@]}" "$TERN" plan "$cfg" "${SETS[@]}" >"$OUT_DIR/logs/$PRESET-plan.txt" 2>&1
		say "tern plan: $(grep -E '^verdict' "$OUT_DIR/logs/$PRESET-plan.txt" || tail -n 1 "$OUT_DIR/logs/$PRESET-plan.txt")"
		lim=$TERN_TIMEOUT
		[ "$(left)" -gt $((lim + 30)) ] || lim=$(($(left) - 30))
		if [ "$lim" -lt 60 ]; then
			echo "skipped: the budget of $BUDGET s is spent" >"$log"
			rc=125 wall=0
		else
			# the pack file, outside the RAM limit: one step of one 16-token row
			t1=$(date +%s)
			timeout -s TERM -k 20 "$lim" "${PREFIX[@]}" "$TERN" train "$cfg" "${SETS[@]}" --set max_steps=1 \
				--set datasets.0.path="$OUT_DIR/data/short.jsonl" --set sequence_len=16 --set micro_batch_size=1 \
				--set gradient_accumulation_steps=1 --set output_dir="$tdir-pack" >"$OUT_DIR/logs/$PRESET-tern-pack.log" 2>&1
			rc=$?
			say "tern: pack built in $(($(date +%s) - t1)) s (rc $rc): $(find "$offl" -name '*.tpack' 2>/dev/null | wc -l) pack file(s), $(du -sh "$offl" 2>/dev/null | cut -f1); free $(free_gib "$MODELS") GiB"
			rm -rf "$tdir-pack"
			lim=$TERN_TIMEOUT
			[ "$(left)" -gt $((lim + 30)) ] || lim=$(($(left) - 30))
			if [ "$lim" -lt 30 ]; then
				echo "skipped: the pack build spent the budget of $BUDGET s (rerun: the pack is kept with --keep)" >"$log"
				rc=125 wall=0
			else
				drop_caches
				cg_reset
				smi_start "$OUT_DIR/logs/$PRESET-tern-smi.txt"
				t1=$(date +%s)
				say "tern: train ($STEPS steps of $TOKENS tokens, backend $BACKEND, limit $lim s) -> logs/$PRESET-tern.log"
				in_ram_limit timeout -s TERM -k 20 "$lim" "${PREFIX[@]}" "$TERN" train "$cfg" "${SETS[@]}" >"$log" 2>&1
				rc=$?
				wall=$(($(date +%s) - t1))
				smi_stop
			fi
		fi
		peak=$(cg_peak)
		smiarg=()
		[ ! -s "$OUT_DIR/logs/$PRESET-tern-smi.txt" ] || smiarg=(--smi "$OUT_DIR/logs/$PRESET-tern-smi.txt")
		run=$OUT_DIR/runs/$PRESET-1-tern.json
		"$PY" "$ROOT/tools/bench_util.py" record --out "$run" --stack tern --shape "$PRESET" --log "$log" --rc "$rc" \
			--wall "$wall" --tokens-per-step "$TOKENS" --timeout "$lim" --label "tern $BACKEND" --kind tern \
			--tern-dir "$tdir" "${smiarg[@]}" | while IFS= read -r l; do say "$l (rc $rc, $wall s)"; done
		"$PY" "$ROOT/tools/bench_moe_util.py" tern --tern-dir "$tdir" --log "$log" --run "$run"
		[ -z "$peak" ] || "$PY" -c 'import json,sys; p=sys.argv[1]; r=json.load(open(p)); r["cgroup_peak_gib"]=round(int(sys.argv[2])/2**30,3); json.dump(r,open(p,"w"))' "$run" "$peak"
		say "tern: $(grep -m1 residency "$log" | sed 's/^ *//'); last: $(grep '^step ' "$log" | tail -n 1 | cut -c1-200)"
		[ "$KEEP" = 1 ] || rm -rf "$offl"
		archive
	fi

	if [ "$RUN_HF" = 1 ]; then
		hfo=$MODELS/$PRESET.hf-offload
		hf_run() { # LABEL CPU_MEM LIMITED
			local label=$1 cpumem=$2 limited=$3 tag res log lim rc t1 wall peak
			tag=$(echo "$label" | tr -c 'A-Za-z0-9\n' '-')
			res=$OUT_DIR/ref/$PRESET-$tag.json log=$OUT_DIR/logs/$PRESET-$tag.log
			lim=$HF_TIMEOUT
			[ "$(left)" -gt $((lim + 20)) ] || lim=$(($(left) - 20))
			if [ "$lim" -lt 60 ]; then
				say "$label: skipped (budget spent)"
				echo "skipped: the budget of $BUDGET s is spent" >"$log"
				"$PY" "$ROOT/tools/bench_moe_util.py" ref --out "$OUT_DIR/runs/$PRESET-2-$tag.json" --result /nonexistent \
					--log "$log" --rc 125 --wall 0 --shape "$PRESET" --label "$label" >/dev/null
				return 1
			fi
			rm -rf "$hfo"
			drop_caches
			cg_reset
			say "$label: start (limit $lim s, PYTHONPATH ${HF_PATH:-none}) -> logs/$PRESET-$tag.log"
			smi_start "$OUT_DIR/logs/$PRESET-$tag-smi.txt"
			t1=$(date +%s)
			local run=(timeout -s TERM -k 20 "$lim" env PYTHONPATH="$HF_PATH" "$PY" "$ROOT/tools/bench_hf_offload.py"
				"$model" --gpu-memory "$DEVMEM_B" --cpu-memory "$cpumem" --offload-folder "$hfo" --batch "$BATCH"
				--seq "$SEQ" --accum "$ACCUM" --steps "$HF_STEPS" --data "$data" --device "$REF_DEV" --json "$res")
			if [ "$limited" = 1 ]; then in_ram_limit "${run[@]}" >>"$log" 2>&1 & else "${run[@]}" >>"$log" 2>&1 & fi
			local pid=$!
			# stop it (its timeout process passes the signal on) when the disk runs low (offload copies)
			(while sleep 2; do
				if [ "$(df -Pk "$MODELS" | awk 'NR == 2 { print $4 }')" -lt 2097152 ]; then
					echo "bench_moe_12gb.sh: less than 2 GiB of disk left: stopping" >>"$log"
					kill -TERM "$pid" 2>/dev/null
					break
				fi
			done) &
			WATCH_PID=$!
			wait "$pid"
			rc=$?
			wall=$(($(date +%s) - t1))
			smi_stop
			kill "$WATCH_PID" 2>/dev/null
			wait "$WATCH_PID" 2>/dev/null
			WATCH_PID=
			peak=
			[ "$limited" != 1 ] || peak=$(cg_peak)
			"$PY" "$ROOT/tools/bench_moe_util.py" ref --out "$OUT_DIR/runs/$PRESET-2-$tag.json" --result "$res" \
				--log "$log" --rc "$rc" --wall "$wall" --timeout "$lim" --shape "$PRESET" --label "$label" \
				${peak:+--cgroup-peak "$peak"} | while IFS= read -r l; do say "$l (rc $rc, $wall s)"; done
			rm -rf "$hfo"
			archive
			"$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r.get("step_s") else 1)' "$res" 2>/dev/null
		}
		ok=1
		case ,$HF_VARIANTS, in *,budget,* | ,auto,) hf_run "hf 4-bit offload (RAM $RAM_LIMIT)" "$HOSTMEM_B" 1 || ok=0 ;; esac
		case ,$HF_VARIANTS, in
		*,ram,*) hf_run "hf 4-bit, RAM 64 GB, no disk (over budget)" 64000000000 0 ;;
		,auto,) [ "$ok" = 1 ] || hf_run "hf 4-bit, RAM 64 GB, no disk (over budget)" 64000000000 0 ;;
		esac
	fi
	[ "$KEEP" = 1 ] || rm -rf "$model"
done

say "done"
echo
"$PY" "$ROOT/tools/bench_moe_util.py" table "$OUT_DIR" --rates "$RATES" --device-budget "$DEVMEM_B" | tee "$OUT_DIR/table.md"
archive
