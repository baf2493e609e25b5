#!/usr/bin/env bash
# tools/bench_gpu.sh — tern against transformers + PEFT + bitsandbytes QLoRA and Unsloth, side by
# side, on the same random model shapes and tokens per step; one table at the end.
#
#   tools/bench_gpu.sh [--shapes 1b,8b] [--stacks tern,hf,unsloth] [--steps 4] [--tern BIN]...
#                      [--tern-set KEY=VALUE]... [--out DIR] [--archive FILE] [options]
#
# Meant for the GPU machine (one H200, no network; docs/PERFORMANCE.md, "How to run the GPU
# benchmark"), where the whole default run takes under 9 minutes. Per shape it writes (or reuses)
# a synthetic model with tools/make_synthetic_model.py and a pre-tokenized JSONL of random ids,
# then runs each stack on them, one after the other:
#   tern     BIN train on a YAML written here: qlora (nf4-dq), LoRA r 16 / alpha 32 on all 7
#            projections, micro-batch 1 x seq, accumulation as the shape says, gradient
#            checkpointing, AdamW, clipping 1.0, backend vulkan. tokens/s = tokens per step / mean
#            step_s of metrics.jsonl over the steps after the first; peak = the largest "peak
#            device" of its progress lines (all device memory the backend allocated, its scratch
#            and workspaces included; binaries before 2026-12-05 print only the net's "mem").
#   hf       tools/bench_hf.py: transformers + PEFT + bitsandbytes nf4 (double quant, bf16
#            compute), prepare_model_for_kbit_training with gradient checkpointing, same LoRA.
#   unsloth  tools/bench_unsloth.py: FastLanguageModel, nf4, checkpointing "unsloth".
# The Python stacks run 1 warm-up step then --ref-steps timed ones (torch.cuda.synchronize around
# each; peak = torch.cuda.max_memory_allocated). Every log lands in OUT/logs, each run's result in
# OUT/runs, all of them in OUT/results.json, the table in OUT/table.md. A stack that fails gets its
# error line in the table and the script goes on; each runs under a time limit (--stack-timeout,
# and what is left of --budget).
#
# On the GPU machine it also does the set-up of ../shared/reference/gpu-machine.md itself: when
# .gl/*.deb exist and the NVIDIA Vulkan ICD is there, it unpacks the packages (libgomp and libpcre2
# beside the machine's own, in /opt/tdeps, for tern only) and sets VK_DRIVER_FILES. .bnb/ and
# .unsloth/ (tools/fetch_bench_deps.sh) go in front of PYTHONPATH when present.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json

usage() {
	cat <<'EOF'
usage: tools/bench_gpu.sh [options]

  --shapes LIST        shapes to run, in order (default 1b,8b):
                         1b    Llama-3.2-1B (--preset llama3.2-1b), 1 x 2048 x accumulation 4
                         8b    Llama-3-8B (--preset llama3-8b), 1 x 2048 x accumulation 1
                         tiny  the 2-layer test preset, accumulation 2 (for trying the script)
  --stacks LIST        tern,hf,unsloth (default all three; "tern" = every --tern binary)
  --steps N            tern's optimizer steps; the first is the warm-up (default 4)
  --ref-steps N        timed steps of hf and unsloth, after one warm-up step (default 3)
  --seq N              tokens per row (default 2048)
  --batch N            micro-batch rows (default 1)
  --accum N            gradient accumulation for every shape (default: the shape's)
  --tern [LABEL=]BIN   a tern binary (default build/tern); repeat to time several builds side
                       by side (labels default to tern, tern2, ...); ratios are against the first
  --tern-set KEY=VAL   passed to tern train as --set KEY=VAL (repeatable), e.g. backend=cpu
  --tern-env LABEL=VAR=VAL
                       an environment variable for the runs of the --tern binary LABEL only
                       (repeatable), e.g. --tern-env old=TERN_VK_LORA=v1
  --kernels-ab         time the Vulkan kernel generations side by side with the one --tern
                       binary (or build/tern): LABEL-v1 (TERN_VK_LORA=v1 TERN_VK_LOSS=v1
                       TERN_VK_SPLITK=v1: the LoRA kernels, loss chunking and split-K rule
                       before issue 9's second pass) first, then LABEL-v2 (the defaults, set
                       explicitly); also runs `bench ops --ops gemm` for both at each shape's
                       LoRA sizes (logs/LABEL-gemm-SHAPE.txt, printed)
  --out DIR            logs, runs, results.json, table.md, tern's output dirs
                       (default outputs/bench-gpu; its logs/ runs/ tern/ configs/ are cleared)
  --models DIR         synthetic models, reused when complete; tern's pack files
                       (default /tmp/tern-bench-models)
  --archive FILE       also write a .tar.gz of DIR (without adapters or packs) after every run,
                       e.g. $OUT/bench.tgz on the device machine
  --budget SEC         wall-time budget of the whole script, 0 = none (default 540); a stack
                       starts only with 30 s left and never runs past it
  --stack-timeout SEC  time limit of one stack, 0 = none but the budget (default 300)
  --python PY          the Python of the reference stacks (default python3)
  --ref-device DEV     cuda (default) or cpu for hf/unsloth (cpu: smoke tests only)
  --hf-quant Q         nf4 (default), bf16 or f32 (f32 with --ref-device cpu runs without a GPU)
  --unsloth-ckpt C     unsloth (default), true or false
  --gl auto|yes|no     unpack .gl/*.deb as gpu-machine.md says (auto: when the NVIDIA ICD exists)
  -h, --help           this text
EOF
}

die() {
	echo "bench_gpu.sh: $*" >&2
	exit 2
}

now_ms() { echo $(($(date +%s%N) / 1000000)); }
secs() { printf '%d.%d' $(($1 / 1000)) $((($1 % 1000) / 100)); } # ms -> "12.3"
T0=$(now_ms)
say() { printf '[%7s s] %s\n' "$(secs $(($(now_ms) - T0)))" "$*"; }

SHAPES=1b,8b
STACKS=tern,hf,unsloth
STEPS=4
REF_STEPS=3
SEQ=2048
BATCH=1
ACCUM=
TERNS=()
TERN_SETS=()
# TERN_PROFILE=1 in the environment: tern train -v, so that each log ends with the Vulkan
# per-pipeline times (the profile lines per step come either way)
TERN_V=()
case ${TERN_PROFILE:-0} in 0 | '') ;; *) TERN_V=(-v) ;; esac
TERN_ENVS=()
KERNELS_AB=0
OUT_DIR=$ROOT/outputs/bench-gpu
MODELS=${TMPDIR:-/tmp}/tern-bench-models
ARCHIVE=
BUDGET=540
STACK_TIMEOUT=300
PY=python3
REF_DEVICE=cuda
HF_QUANT=nf4
UNSLOTH_CKPT=unsloth
GL=auto

while [ $# -gt 0 ]; do
	opt=$1
	val=
	case $opt in
	--*=*)
		val=${opt#*=}
		opt=${opt%%=*}
		;;
	-h | --help)
		usage
		exit 0
		;;
	--kernels-ab)
		KERNELS_AB=1
		shift
		continue
		;;
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
	--steps) STEPS=$val ;;
	--ref-steps) REF_STEPS=$val ;;
	--seq) SEQ=$val ;;
	--batch) BATCH=$val ;;
	--accum) ACCUM=$val ;;
	--tern) TERNS+=("$val") ;;
	--tern-set) TERN_SETS+=(--set "$val") ;;
	--tern-env) TERN_ENVS+=("$val") ;;
	--out) OUT_DIR=$val ;;
	--models) MODELS=$val ;;
	--archive) ARCHIVE=$val ;;
	--budget) BUDGET=$val ;;
	--stack-timeout) STACK_TIMEOUT=$val ;;
	--python) PY=$val ;;
	--ref-device) REF_DEVICE=$val ;;
	--hf-quant) HF_QUANT=$val ;;
	--unsloth-ckpt) UNSLOTH_CKPT=$val ;;
	--gl) GL=$val ;;
	*) die "unknown option $opt (--help)" ;;
	esac
done

isnum() { case $1 in '' | *[!0-9]*) return 1 ;; esac }
for v in STEPS REF_STEPS SEQ BATCH BUDGET STACK_TIMEOUT; do
	isnum "${!v}" || die "--$(echo "$v" | tr 'A-Z_' 'a-z-'): '${!v}' is not a whole number"
done
[ -z "$ACCUM" ] || isnum "$ACCUM" || die "--accum: '$ACCUM' is not a whole number"
if [ "$STEPS" -lt 1 ] || [ "$REF_STEPS" -lt 1 ] || [ "$SEQ" -lt 2 ] || [ "$BATCH" -lt 1 ]; then
	die "--steps, --ref-steps and --batch must be >= 1, --seq >= 2"
fi
case $GL in auto | yes | no) ;; *) die "--gl: '$GL' (allowed: auto, yes, no)" ;; esac
case $REF_DEVICE in cuda | cpu) ;; *) die "--ref-device: '$REF_DEVICE' (allowed: cuda, cpu)" ;; esac

# tern binaries: LABEL=BIN or BIN
[ ${#TERNS[@]} -gt 0 ] || TERNS=("$ROOT/build/tern")
TERN_LABELS=()
TERN_BINS=()
for i in "${!TERNS[@]}"; do
	t=${TERNS[$i]}
	if [[ $t == *=* && ${t%%=*} != */* ]]; then
		label=${t%%=*}
		bin=${t#*=}
	else
		label=tern
		[ "$i" -eq 0 ] || label=tern$((i + 1))
		bin=$t
	fi
	[[ $label =~ ^[A-Za-z0-9_.-]+$ ]] || die "--tern: label '$label' (letters, digits, . _ - only)"
	for l in "${TERN_LABELS[@]}"; do [ "$l" != "$label" ] || die "--tern: label '$label' given twice"; done
	case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
	TERN_LABELS+=("$label")
	TERN_BINS+=("$bin")
done
# --kernels-ab: the one binary twice, the kernels of before (v1) first so ratios read v2 / v1
if [ "$KERNELS_AB" = 1 ]; then
	[ ${#TERN_BINS[@]} = 1 ] || die "--kernels-ab takes one --tern binary"
	l0=${TERN_LABELS[0]} b0=${TERN_BINS[0]}
	TERN_LABELS=("$l0-v1" "$l0-v2")
	TERN_BINS=("$b0" "$b0")
	for g in v1 v2; do
		TERN_ENVS+=("$l0-$g=TERN_VK_LORA=$g" "$l0-$g=TERN_VK_LOSS=$g" "$l0-$g=TERN_VK_SPLITK=$g")
	done
fi
# tern_env LABEL: "env VAR=VAL ..." for that label's --tern-env entries (empty when none)
tern_env() {
	local e out=()
	for e in "${TERN_ENVS[@]}"; do
		if [ "${e%%=*}" = "$1" ]; then out+=("${e#*=}"); fi
	done
	[ ${#out[@]} = 0 ] || printf '%s\n' env "${out[@]}"
}
for e in "${TERN_ENVS[@]}"; do
	[[ $e =~ ^[A-Za-z0-9_.-]+=[A-Za-z_][A-Za-z0-9_]*= ]] || die "--tern-env: '$e' (LABEL=VAR=VALUE)"
	found=0
	for l in "${TERN_LABELS[@]}"; do [ "$l" != "${e%%=*}" ] || found=1; done
	[ $found = 1 ] || die "--tern-env: no --tern binary is labelled '${e%%=*}'"
done

RUN_TERN=0 RUN_HF=0 RUN_UNSLOTH=0
IFS=, read -r -a stack_list <<<"$STACKS"
for s in "${stack_list[@]}"; do
	case $s in
	tern) RUN_TERN=1 ;;
	hf) RUN_HF=1 ;;
	unsloth) RUN_UNSLOTH=1 ;;
	*) die "--stacks: unknown stack '$s' (allowed: tern, hf, unsloth)" ;;
	esac
done
IFS=, read -r -a shape_list <<<"$SHAPES"
[ ${#shape_list[@]} -gt 0 ] || die "--shapes: empty"
shape_info() { # sets PRESET, SHAPE_ACCUM and the hidden / MLP sizes SHAPE_D, SHAPE_F
	case $1 in
	1b | llama3.2-1b) PRESET=llama3.2-1b SHAPE_ACCUM=4 SHAPE_D=2048 SHAPE_F=8192 ;;
	8b | llama3-8b) PRESET=llama3-8b SHAPE_ACCUM=1 SHAPE_D=4096 SHAPE_F=14336 ;;
	tiny) PRESET=tiny SHAPE_ACCUM=2 SHAPE_D=256 SHAPE_F=704 ;;
	*) return 1 ;;
	esac
	[ -z "$ACCUM" ] || SHAPE_ACCUM=$ACCUM
}
for s in "${shape_list[@]}"; do shape_info "$s" || die "--shapes: unknown shape '$s' (allowed: 1b, 8b, tiny)"; done

case $OUT_DIR in /*) ;; *) OUT_DIR=$PWD/$OUT_DIR ;; esac
case $MODELS in /*) ;; *) MODELS=$PWD/$MODELS ;; esac
if [ -n "$ARCHIVE" ]; then case $ARCHIVE in /*) ;; *) ARCHIVE=$PWD/$ARCHIVE ;; esac; fi
mkdir -p "$OUT_DIR" "$MODELS" || die "cannot create $OUT_DIR or $MODELS"
rm -rf "${OUT_DIR:?}/logs" "$OUT_DIR/runs" "$OUT_DIR/tern" "$OUT_DIR/configs" "$OUT_DIR/data" \
	"$OUT_DIR/smi" "$OUT_DIR/ref" "$OUT_DIR/results.json" "$OUT_DIR/table.md" "$OUT_DIR/meta.json"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/runs" "$OUT_DIR/tern" "$OUT_DIR/configs" "$OUT_DIR/data" "$OUT_DIR/smi" "$OUT_DIR/ref"
UTIL=("$PY" "$ROOT/tools/bench_util.py")

# ---- the machine: Vulkan loader and tern's libraries (gpu-machine.md), Python path -------------
TERN_PREFIX=() # env LD_LIBRARY_PATH=... when the packages are unpacked
shopt -s nullglob
debs=("$ROOT"/.gl/*.deb "$ROOT"/.gl/extra/*.deb) # extra/: libcurl, libopenblas and what they need
shopt -u nullglob
if [ "$GL" = yes ] || { [ "$GL" = auto ] && [ -f "$NV_ICD" ]; }; then
	if [ ${#debs[@]} = 0 ]; then
		say "no .gl/*.deb to unpack (gpu-machine.md says how to download them)"
	elif [ "$(id -u)" -ne 0 ]; then
		say "not root: .gl/*.deb not unpacked"
	else
		mkdir -p /opt/tdeps
		for f in "${debs[@]}"; do
			case $f in
			*/extra/* | *gomp* | *pcre2*) dpkg -x "$f" /opt/tdeps ;;
			*) dpkg -x "$f" / ;;
			esac
		done
		ldconfig
		lp=/opt/tdeps/usr/lib/x86_64-linux-gnu
		for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do # a CUDA build's cuBLAS
			if [ -d "$d" ]; then lp=$lp:$d; fi
		done
		TERN_PREFIX=(env LD_LIBRARY_PATH="$lp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}")
		say "unpacked ${#debs[@]} packages of .gl (libgomp, libpcre2 in /opt/tdeps for tern only)"
	fi
fi
if [ -f "$NV_ICD" ] && [ -z "${VK_DRIVER_FILES:-}" ]; then export VK_DRIVER_FILES=$NV_ICD; fi
for d in .unsloth .bnb; do
	if [ -d "$ROOT/$d" ]; then export PYTHONPATH="$ROOT/$d${PYTHONPATH:+:$PYTHONPATH}"; fi
done
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1
export PYTHONUNBUFFERED=1 # (Unsloth writes unsloth_compiled_cache/ into the cwd: the runs start in MODELS)
export TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1

# ---- bookkeeping --------------------------------------------------------------------------------
SMI_PID=
smi_start() { # smi_start FILE: sample GPU 0's used memory every 200 ms
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
cleanup() { smi_stop; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM

archive() {
	[ -n "$ARCHIVE" ] || return 0
	mkdir -p "$(dirname "$ARCHIVE")"
	tar -czf "$ARCHIVE.tmp" -C "$(dirname "$OUT_DIR")" --exclude='*.safetensors' \
		--exclude='checkpoint-*' --exclude='offload' "$(basename "$OUT_DIR")" 2>/dev/null &&
		mv -f "$ARCHIVE.tmp" "$ARCHIVE"
}

left_s() { # seconds of the budget left (a large number without one)
	if [ "$BUDGET" -eq 0 ]; then echo 999999; else echo $((BUDGET - ($(now_ms) - T0) / 1000)); fi
}

RUN_NO=0
# run_stack SHAPE STACK LABEL KIND CMD...: runs CMD (cwd MODELS) under the time limit, logs it,
# records its result (bench_util.py record; KIND tern reads TERN_DIR, otherwise RESULT_JSON).
run_stack() {
	local shape=$1 stack=$2 label=$3 kind=$4
	shift 4
	RUN_NO=$((RUN_NO + 1))
	local tag
	tag=$(printf '%02d-%s-%s' "$RUN_NO" "$shape" "$stack")
	local log=$OUT_DIR/logs/$tag.log rec=$OUT_DIR/runs/$tag.json smi=$OUT_DIR/smi/$tag.txt
	local left lim rc t1 extra=()
	left=$(($(left_s) - 10))
	lim=$STACK_TIMEOUT
	if [ "$lim" -eq 0 ] || [ "$left" -lt "$lim" ]; then lim=$left; fi
	if [ -n "$MODEL_ERR" ] || [ "$left" -lt 30 ]; then # not run: say why in its log and the table
		if [ -n "$MODEL_ERR" ]; then
			echo "error: $MODEL_ERR" >"$log"
		else
			echo "skipped: the budget of $BUDGET s is spent" >"$log"
		fi
		"${UTIL[@]}" record --out "$rec" --stack "$stack" --shape "$shape" --log "$log" --rc 125 \
			--wall 0 --tokens-per-step "$TOKENS" --label "$label" --kind "$kind" >/dev/null
		say "$shape $stack: not run: $(cat "$log")"
		return
	fi
	say "$shape $stack: start (limit $lim s) -> logs/$tag.log"
	{
		printf '# %s\n# cwd %s, limit %s s\n' "$*" "$MODELS" "$lim"
		printf '# PYTHONPATH=%s VK_DRIVER_FILES=%s\n' "${PYTHONPATH:-}" "${VK_DRIVER_FILES:-}"
	} >"$log"
	t1=$(now_ms)
	smi_start "$smi"
	(cd "$MODELS" && exec timeout -s TERM -k 20 "$lim" "$@") >>"$log" 2>&1
	rc=$?
	smi_stop
	local wall=$(($(now_ms) - t1))
	if [ "$kind" = tern ]; then extra=(--tern-dir "$TERN_DIR"); else extra=(--result "$RESULT_JSON"); fi
	[ -s "$smi" ] && extra+=(--smi "$smi")
	"${UTIL[@]}" record --out "$rec" --stack "$stack" --shape "$shape" --log "$log" --rc "$rc" \
		--wall "$(secs "$wall")" --tokens-per-step "$TOKENS" --timeout "$lim" --label "$label" \
		--kind "$kind" "${extra[@]}" | while IFS= read -r l; do say "$l (rc $rc, $(secs "$wall") s)"; done
	archive
}

# ---- what runs here ---------------------------------------------------------------------------
say "tools/bench_gpu.sh: shapes $SHAPES, stacks $STACKS, tern steps $STEPS, ref steps $REF_STEPS, seq $SEQ, out $OUT_DIR"
meta=(date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" host="$(hostname)" commit="$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null)"
	dirty="$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | wc -l | tr -d ' ') files"
	args="shapes=$SHAPES stacks=$STACKS steps=$STEPS ref_steps=$REF_STEPS seq=$SEQ batch=$BATCH accum=${ACCUM:-shape} tern_set=${TERN_SETS[*]:-}")
if command -v nvidia-smi >/dev/null 2>&1; then
	meta+=(gpu="$(nvidia-smi -i 0 --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null)")
fi
if [ "$RUN_TERN" = 1 ]; then
	for i in "${!TERN_BINS[@]}"; do
		l=${TERN_LABELS[$i]} b=${TERN_BINS[$i]}
		if [ -x "$b" ]; then
			"${TERN_PREFIX[@]}" "$b" --version >"$OUT_DIR/logs/$l-devices.txt" 2>&1
			"${TERN_PREFIX[@]}" "$b" devices >>"$OUT_DIR/logs/$l-devices.txt" 2>&1
			meta+=("tern_$l=$b: $(head -n 1 "$OUT_DIR/logs/$l-devices.txt")")
			say "$l: $b, $(head -n 1 "$OUT_DIR/logs/$l-devices.txt"); devices:"
			sed -n '2,$p' "$OUT_DIR/logs/$l-devices.txt" | head -n 8 | sed 's/^/    /'
		else
			meta+=("tern_$l=$b: not found")
			say "$l: $b is not an executable file (its runs will fail)"
		fi
	done
fi
"${UTIL[@]}" meta "$OUT_DIR/meta.json" "${meta[@]}" \
	--versions torch,transformers,peft,accelerate,bitsandbytes,unsloth,unsloth_zoo,trl,triton |
	while IFS= read -r l; do say "$l"; done

# ---- the shapes ---------------------------------------------------------------------------------
for shape in "${shape_list[@]}"; do
	shape_info "$shape"
	model=$MODELS/$PRESET
	TOKENS=$((BATCH * SEQ * SHAPE_ACCUM))
	t1=$(now_ms)
	if [ -f "$model/.bench-complete" ] && [ "$(cat "$model/.bench-complete")" = "$PRESET" ]; then
		say "$PRESET: model $model reused"
		MODEL_ERR=
	elif [ -e "$model" ]; then
		MODEL_ERR="$model exists but was not written by bench_gpu.sh; remove it or choose another --models"
		say "$PRESET: $MODEL_ERR"
	else
		say "$PRESET: writing the synthetic model to $model"
		rm -rf "$model.partial"
		if "$PY" "$ROOT/tools/make_synthetic_model.py" "$model.partial" --preset "$PRESET" \
			>"$OUT_DIR/logs/model-$PRESET.log" 2>&1 && echo "$PRESET" >"$model.partial/.bench-complete" &&
			mv "$model.partial" "$model"; then
			MODEL_ERR=
			say "$PRESET: $(tail -n 1 "$OUT_DIR/logs/model-$PRESET.log" | sed 's/.*: //') ($(secs $(($(now_ms) - t1))) s)"
		else
			MODEL_ERR="model not written: $(tail -n 1 "$OUT_DIR/logs/model-$PRESET.log")"
			say "$PRESET: $MODEL_ERR"
		fi
	fi
	vocab=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["vocab_size"])' "$model/config.json" 2>/dev/null)
	# Unsloth loads a tokenizer with the model: Llama 3's (128256 ids, the Llama presets' vocabulary;
	# the tiny preset's 1000 ids are a subset of them)
	if [ "$RUN_UNSLOTH" = 1 ] && [ -z "$MODEL_ERR" ] && [ ! -f "$model/tokenizer.json" ]; then
		gzip -dc "$ROOT/tests/data/tokenizers/llama3-tokenizer.json.gz" >"$model/tokenizer.json.tmp" &&
			gzip -dc "$ROOT/tests/data/tokenizers/llama3-tokenizer_config.json.gz" >"$model/tokenizer_config.json" &&
			mv "$model/tokenizer.json.tmp" "$model/tokenizer.json"
	fi
	data=$OUT_DIR/data/$PRESET-$SEQ.jsonl
	rows=$((STEPS * SHAPE_ACCUM * BATCH))
	[ "$rows" -ge $(((REF_STEPS + 1) * SHAPE_ACCUM * BATCH)) ] || rows=$(((REF_STEPS + 1) * SHAPE_ACCUM * BATCH))
	if [ -z "$MODEL_ERR" ] && ! "${UTIL[@]}" data "$data" --rows "$rows" --seq "$SEQ" --vocab "$vocab"; then
		MODEL_ERR="cannot write $data"
	fi
	say "$PRESET: $TOKENS tokens/step ($BATCH x $SEQ x $SHAPE_ACCUM), $rows rows of random ids in $data"

	if [ "$RUN_TERN" = 1 ]; then
		for i in "${!TERN_BINS[@]}"; do
			label=${TERN_LABELS[$i]} bin=${TERN_BINS[$i]}
			TERN_DIR=$OUT_DIR/tern/$PRESET-$label
			cfg=$OUT_DIR/configs/$PRESET-$label.yaml
			cat >"$cfg" <<EOF
# written by tools/bench_gpu.sh
base_model: '${model//\'/\'\'}'
adapter: qlora
load_in_4bit: true
base_format: nf4-dq
lora_r: 16
lora_alpha: 32
lora_dropout: 0.0
lora_target_modules: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
datasets:
  - path: '${data//\'/\'\'}'
    type: pretokenized
sequence_len: $SEQ
sample_packing: false
micro_batch_size: $BATCH
gradient_accumulation_steps: $SHAPE_ACCUM
max_steps: $STEPS
learning_rate: 0.0001
lr_scheduler: constant
warmup_steps: 0
max_grad_norm: 1.0
gradient_checkpointing: true
seed: 0
backend: vulkan
output_dir: '${TERN_DIR//\'/\'\'}'
offload_dir: '${model//\'/\'\'}.offload-$label'
logging_steps: 1
save_steps: 0
EOF
			mapfile -t tenv < <(tern_env "$label")
			[ ${#tenv[@]} = 0 ] || say "$label: ${tenv[*]:1}"
			if [ "$KERNELS_AB" = 1 ]; then
				# the six LoRA products at this shape's sizes (O I: q/o D D, gate/up F D, down D F)
				for io in "$SHAPE_D:$SHAPE_D" "$SHAPE_F:$SHAPE_D" "$SHAPE_D:$SHAPE_F"; do
					"${tenv[@]}" "${TERN_PREFIX[@]}" "$bin" bench ops --backend vulkan --T $((SEQ * BATCH)) \
						--O "${io%:*}" --I "${io#*:}" --ops gemm --seconds 0.2 >>"$OUT_DIR/logs/$label-gemm-$PRESET.txt" 2>&1
				done
				grep -E '^gemm' "$OUT_DIR/logs/$label-gemm-$PRESET.txt" | sed "s/^/    $label  /"
			fi
			run_stack "$PRESET" "$label" "$bin" tern "${tenv[@]}" "${TERN_PREFIX[@]}" "$bin" train "$cfg" "${TERN_V[@]}" "${TERN_SETS[@]}"
		done
	fi
	if [ "$RUN_HF" = 1 ]; then
		RESULT_JSON=$OUT_DIR/ref/$PRESET-hf.json
		run_stack "$PRESET" hf "$HF_QUANT" ref "$PY" "$ROOT/tools/bench_hf.py" "$model" --quant "$HF_QUANT" \
			--batch "$BATCH" --seq "$SEQ" --accum "$SHAPE_ACCUM" --steps "$REF_STEPS" --warmup 1 \
			--data "$data" --device "$REF_DEVICE" --json "$RESULT_JSON"
	fi
	if [ "$RUN_UNSLOTH" = 1 ]; then
		RESULT_JSON=$OUT_DIR/ref/$PRESET-unsloth.json
		run_stack "$PRESET" unsloth "nf4, checkpointing $UNSLOTH_CKPT" ref "$PY" "$ROOT/tools/bench_unsloth.py" \
			"$model" --quant nf4 --ckpt "$UNSLOTH_CKPT" --batch "$BATCH" --seq "$SEQ" \
			--accum "$SHAPE_ACCUM" --steps "$REF_STEPS" --warmup 1 --data "$data" \
			--device "$REF_DEVICE" --json "$RESULT_JSON"
	fi
done

say "done; results in $OUT_DIR/results.json${ARCHIVE:+, archive $ARCHIVE}"
echo
"${UTIL[@]}" table "$OUT_DIR" --meta "$OUT_DIR/meta.json" | tee "$OUT_DIR/table.md"
archive
