#!/bin/sh
# Layer split over MPI (issue 16 item 2, layer_split): 2 ranks as pipeline stages (stage 0 layers
# 0..k-1, stage 1 the rest with the lm_head and loss) give the one-process adapter, also with one
# stage's layers streamed from host and disk and with 3 stages at given boundaries; checkpoints
# resume across stage counts (2 -> 1, 1 -> 2); `tern plan --stages` shows the split, checked by
# arithmetic; a mixture of experts with its router loss splits exactly too; bad input gets one
# line each.
# Usage: cli_split.sh TERN DATA_DIR BACKEND... (cpu, ref, vulkan). Exits 77 (not run) without
# mpirun or in a build without MPI.
#
# Tolerance: none, the adapters are compared byte for byte. Each stage runs its layers with the
# same ops on the same inputs as one process (the boundary passes the hidden state and its
# gradient bit for bit), and the sum over the stages adds each gradient to exact zeros (every
# stage keeps the whole LoRA block; only its own layers' gradients are nonzero), so the norm,
# clipping and AdamW see the one-process gradient.
tern=$1
data=$2
shift 2
backends="$*"
. "$(dirname "$0")/mpi_common.sh"
mpi_need
tmp=$(mktemp -d)
trap '[ -n "$KEEP" ] || rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
mpi_config "$tmp/c.yaml" "$data" "val_set_size: 0.25"

mpin 2 "$tern" train "$tmp/c.yaml" --set output_dir="$tmp/probe" --set max_steps=0 >"$tmp/probe.log" 2>&1
if grep -q "built without MPI" "$tmp/probe.log"; then
	echo "not run: this tern was built without MPI"
	exit 77
fi

same() { # A B WHAT
	if cmp -s "$1/adapter/adapter_model.safetensors" "$2/adapter/adapter_model.safetensors"; then
		ok
	else
		bad "$3: the adapters differ"
	fi
}

# llama6 (untied): one layer group is 22528 bytes (see cli_stream.sh), the lm_head [256, 64] bf16
# 32768 bytes on the last stage; the embeddings stay in host memory. The auto split minimises the
# largest stage: 4 + 2 layers (90112 and 2 x 22528 + 32768 = 77824 bytes) against 3 + 3 (67584,
# 100352) or 5 + 1 (112640, 55296).
G=22528
H=32768
"$tern" plan "$tmp/c.yaml" --stages 2 --device-memory 1GB --host-memory 4GB >"$tmp/plan2" 2>&1 ||
	bad "tern plan --stages 2: $(tail -3 "$tmp/plan2")"
best=
for k in 1 2 3 4 5; do # every 2-stage split: the largest stage's bytes
	a=$((k * G))
	b=$(((6 - k) * G + H))
	m=$((a > b ? a : b))
	if [ -z "$best" ] || [ $m -lt $best ]; then best=$m bk=$k; fi
done
grep -q "^  0      0-$((bk - 1)) .* ($((bk * G)) bytes)" "$tmp/plan2" &&
	grep -q "^  1      $bk-5 .* ($(((6 - bk) * G + H)) bytes)" "$tmp/plan2" &&
	grep -q "^  total weights $((6 * G + H)) bytes" "$tmp/plan2" && [ $bk = 4 ] && ok ||
	bad "tern plan --stages 2: expected stages 0-$((bk - 1)), $bk-5: $(head -6 "$tmp/plan2")"
# each stage's plan: its own layers, the lm_head on the last stage only
[ "$(grep -c '^== stage ' "$tmp/plan2")" = 2 ] && grep -q "^== stage 1 of 2: layers 4-5 ==" "$tmp/plan2" &&
	[ "$(grep -c '^  lm_head ' "$tmp/plan2")" = 1 ] &&
	grep -q "verdict: fits: all 4 layers on the device" "$tmp/plan2" &&
	grep -q "verdict: fits: all 2 layers on the device" "$tmp/plan2" && ok ||
	bad "tern plan --stages 2: the stages' plans: $(grep -E '^==|verdict|lm_head' "$tmp/plan2")"
# a given split: 3 stages at 2 and 3 (tern plan takes the stage count from the list)
"$tern" plan "$tmp/c.yaml" --set layer_split=2,3 --device-memory 1GB --host-memory 4GB >"$tmp/plan3" 2>&1 ||
	bad "tern plan layer_split=2,3: $(tail -3 "$tmp/plan3")"
grep -q "^layer split over 3 stages" "$tmp/plan3" && grep -q "^  1      2 .* 1 .*($G bytes)" "$tmp/plan3" &&
	grep -q "^  2      3-5 .* 3 .*($((3 * G + H)) bytes)" "$tmp/plan3" && ok ||
	bad "tern plan layer_split=2,3: $(head -6 "$tmp/plan3")"

one_line() { # LOG PATTERN WHAT: a failure, and the pattern on a tern: line
	if grep -q "^tern: .*$2" "$1"; then ok; else bad "$3: $(cat "$1")"; fi
}
# bad input: more stages than layers, a boundary past the model, a list for other ranks, a bad value
"$tern" plan "$tmp/c.yaml" --stages 7 --device-memory 1GB --host-memory 4GB >"$tmp/e1.log" 2>&1 &&
	bad "7 stages for 6 layers did not fail"
one_line "$tmp/e1.log" "layer_split: 7 stages for 6 layers (at most one stage per layer" "7 stages"
mpin 2 "$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/e2" --set layer_split=6 >"$tmp/e2.log" 2>&1 &&
	bad "layer_split=6 did not fail"
one_line "$tmp/e2.log" "layer_split: 6 names layer 6 of a 6-layer model" "a boundary past the model"
mpin 2 "$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/e3" --set layer_split=2,4 >"$tmp/e3.log" 2>&1 &&
	bad "layer_split=2,4 on 2 ranks did not fail"
one_line "$tmp/e3.log" "layer_split: 2,4 gives 3 stages, and there are 2 devices (ranks); give 1 boundaries" "a list for 3 stages on 2 ranks"
"$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/e4" --set layer_split=two >"$tmp/e4.log" 2>&1 &&
	bad "layer_split=two did not fail"
one_line "$tmp/e4.log" "layer_split: 'two' is not false, auto or increasing layer indices" "layer_split=two"
mpin 2 "$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/e5" --set layer_split=auto \
	"--set=eval_prompts=[hello]" >"$tmp/e5.log" 2>&1 && bad "eval_prompts with a split did not fail"
one_line "$tmp/e5.log" "eval_prompts with layer_split: generation runs on one device" "eval_prompts"
[ ! -e "$tmp/e2/adapter" ] && [ ! -e "$tmp/e3/adapter" ] && ok || bad "a failed split run wrote an adapter"

for be in $backends; do
	start=$(date +%s)
	set -- --set backend="$be"
	two() { # OUT SETS...: 2 stages (on vulkan through --devices 0,0: lavapipe has one device)
		o=$1
		shift
		if [ "$be" = vulkan ]; then
			"$tern" train "$tmp/c.yaml" --set output_dir="$o" --devices 0,0 "$@" >"$o.log" 2>&1
		else
			mpin 2 "$tern" train "$tmp/c.yaml" --set output_dir="$o" "$@" >"$o.log" 2>&1
		fi
	}
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-1" >"$tmp/$be-1.log" 2>&1 ||
		bad "$be: one process: $(tail -3 "$tmp/$be-1.log")"
	two "$tmp/$be-2" "$@" --set layer_split=auto || bad "$be: 2 stages: $(tail -3 "$tmp/$be-2.log")"
	grep -q "^  split     layer split over 2 ranks (mpi): stage 0 runs layers 0-3; stages at 0-3 4-5$" "$tmp/$be-2.log" &&
		grep -q "1 × 2 rows/step" "$tmp/$be-2.log" && ok ||
		bad "$be: the banner: $(grep -E 'split|schedule' "$tmp/$be-2.log")"
	# rank 0 alone reports and writes; the evaluation is the last stage's loss
	[ "$(grep -c '^adapter written' "$tmp/$be-2.log")" = 1 ] && [ "$(grep -c '^step 4/4 ' "$tmp/$be-2.log")" = 1 ] &&
		[ -d "$tmp/$be-2/checkpoint-2" ] &&
		[ "$(grep '^eval after' "$tmp/$be-1.log")" = "$(grep '^eval after' "$tmp/$be-2.log")" ] &&
		[ "$(grep '^step 4/4' "$tmp/$be-1.log" | cut -c1-60)" = "$(grep '^step 4/4' "$tmp/$be-2.log" | cut -c1-60)" ] &&
		ok || bad "$be: 2 stages' report: $(grep -E '^(step 4|eval|adapter)' "$tmp/$be-1.log" "$tmp/$be-2.log")"
	same "$tmp/$be-1" "$tmp/$be-2" "$be: 2 stages vs one process"
	# resume across stage counts: 2 -> 1 and 1 -> 2, each to the uninterrupted run (on cpu: the
	# checkpoint is the same file on every backend, and the other backends are slower)
	if [ "$be" != cpu ]; then
		echo "$be: $(($(date +%s) - start)) s"
		continue
	fi
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-21" \
		--set resume_from_checkpoint="$tmp/$be-2/checkpoint-2" >"$tmp/$be-21.log" 2>&1 ||
		bad "$be: resume 2 -> 1: $(tail -3 "$tmp/$be-21.log")"
	grep -q "resuming from .*checkpoint-2 at step 2 of 4" "$tmp/$be-21.log" && ok ||
		bad "$be: 2 -> 1 did not resume at step 2: $(grep -i resum "$tmp/$be-21.log")"
	same "$tmp/$be-1" "$tmp/$be-21" "$be: resumed 2 -> 1"
	two "$tmp/$be-12" "$@" --set layer_split=auto --set resume_from_checkpoint="$tmp/$be-1/checkpoint-2" ||
		bad "$be: resume 1 -> 2: $(tail -3 "$tmp/$be-12.log")"
	same "$tmp/$be-1" "$tmp/$be-12" "$be: resumed 1 -> 2"
	echo "$be: $(($(date +%s) - start)) s"
done

# One stage streamed: layer_split 5 puts layers 0-4 on stage 0, which gets a device budget of its
# smallest (fixed costs + 3 slots, from tern plan) + 1.5 layers and a host budget of the reserve
# + 2.5 layers: 1 device, 2 host, 2 disk layers; stage 1 (layer 5 and the lm_head) fits whole.
# With gradient checkpointing (the recomputation reloads streamed layers) and a 3-stage run at 2,3.
host=$((1073741824 + 24576 * 4 * 3 + 2 * G + G / 2))
for ck in false true; do
	set -- --set backend=cpu --set gradient_checkpointing=$ck
	"$tern" plan "$tmp/c.yaml" "$@" --set layer_split=5 --device-memory 1000000 --host-memory 2GB >"$tmp/plan5" 2>/dev/null
	min=$(sed -n 's/^smallest device budget that works: .* (\([0-9]*\) bytes).*/\1/p' "$tmp/plan5" | head -1)
	[ -n "$min" ] && ok || bad "tern plan layer_split=5 gave no smallest budget: $(cat "$tmp/plan5")"
	# with checkpointing that smallest has the layer inputs offloaded (true does that where they do
	# not fit); with them on the device stage 0 keeps 6 fp32 [64, 64] inputs instead of 2 slots
	[ $ck = false ] || min=$((min + 4 * 64 * 64 * 4))
	dev=$((min + G + G / 2))
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/s1-$ck" >"$tmp/s1-$ck.log" 2>&1 ||
		bad "one process (checkpointing $ck): $(tail -3 "$tmp/s1-$ck.log")"
	mpin 2 "$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/s2-$ck" --set layer_split=5 \
		--set device_memory=$dev --set host_memory=$host >"$tmp/s2-$ck.log" 2>&1 ||
		bad "stage 0 streamed (checkpointing $ck): $(tail -3 "$tmp/s2-$ck.log")"
	grep -q "residency 1 device, 2 host, 2 disk layers; 3 slots" "$tmp/s2-$ck.log" &&
		grep -q "stages at 0-4 5-5" "$tmp/s2-$ck.log" && grep -q "^step 4/4 .* streamed " "$tmp/s2-$ck.log" &&
		grep -q "^            stage 0: layers 0-4; 1 device, 2 host, 2 disk; 3 slots; " "$tmp/s2-$ck.log" &&
		grep -q "^            stage 1: layers 5-5; 1 device, 0 host, 0 disk; 0 slots; " "$tmp/s2-$ck.log" && ok ||
		bad "the stages' placement: $(grep -E 'residency|split|stage [01]:|^step 4' "$tmp/s2-$ck.log")"
	same "$tmp/s1-$ck" "$tmp/s2-$ck" "stage 0 streamed vs one process (checkpointing $ck)"
	mpin 3 "$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/s3-$ck" --set layer_split=2,3 \
		>"$tmp/s3-$ck.log" 2>&1 || bad "3 stages (checkpointing $ck): $(tail -3 "$tmp/s3-$ck.log")"
	same "$tmp/s1-$ck" "$tmp/s3-$ck" "3 stages at 2,3 vs one process (checkpointing $ck)"
done

# A mixture of experts (tools/make_standin_model.py: a 6-layer stand-in of Mixtral-8x7B, 4 experts,
# top 2) with LoRA on q/v, the experts and the router, and the router's load-balancing loss: its
# sums run over every stage's sparse layers (passed along with the hidden state) and d aux / d p
# back with the gradient, so 2 stages still give the one-process adapter and loss byte for byte.
if command -v python3 >/dev/null 2>&1 &&
	python3 "$(dirname "$0")/../tools/make_standin_model.py" \
		"$data/hf_configs/mistralai/Mixtral-8x7B-v0.1/config.json" "$data/tokenizers/llama2" "$tmp/mix" 6 >/dev/null; then
	i=0
	while [ $i -lt 8 ]; do
		i=$((i + 1))
		printf '{"instruction": "Name colour number %d.", "input": "", "output": "Blue %d and green."}\n' $i $i >>"$tmp/m.jsonl"
	done
	cat >"$tmp/m.yaml" <<Y
base_model: $tmp/mix
adapter: qlora
lora_r: 4
lora_alpha: 8
lora_dropout: 0
lora_target_modules: [q_proj, v_proj]
lora_target_parameters: [mlp.experts.gate_up_proj, mlp.experts.down_proj, mlp.gate.weight]
datasets:
  - path: $tmp/m.jsonl
    type: alpaca
sequence_len: 80
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 3
learning_rate: 0.001
logging_steps: 1
backend: cpu
seed: 5
model_config:
  output_router_logits: true
  router_aux_loss_coef: 0.02
Y
	"$tern" train "$tmp/m.yaml" --set output_dir="$tmp/m1" >"$tmp/m1.log" 2>&1 || bad "MoE one process: $(tail -3 "$tmp/m1.log")"
	mpin 2 "$tern" train "$tmp/m.yaml" --set output_dir="$tmp/m2" --set layer_split=auto >"$tmp/m2.log" 2>&1 ||
		bad "MoE 2 stages: $(tail -3 "$tmp/m2.log")"
	same "$tmp/m1" "$tmp/m2" "MoE (experts, router, aux loss): 2 stages vs one process"
	[ "$(grep '^step' "$tmp/m1.log" | cut -c1-60)" = "$(grep '^step' "$tmp/m2.log" | cut -c1-60)" ] && ok ||
		bad "MoE: the step lines' loss and norm differ: $(grep '^step' "$tmp/m1.log" "$tmp/m2.log")"
else
	echo "MoE part not run: python3 or the stand-in model is missing"
fi

# f16 products (the boundary passes the f16 layer input as the stages keep it), and a tied model
# (llama_tied: the embedding table is the lm_head, on the first and the last stage) training
# embed_tokens and lm_head in full (lora_modules_to_save: stage 0 the embeddings' gradient, the
# last stage the lm_head's)
for v in f16 tied; do
	if [ $v = f16 ]; then
		set -- --set backend=cpu --set compute_dtype=f16
	else
		set -- --set backend=cpu --set base_model="$data/models/llama_tied" "--set=lora_modules_to_save=[embed_tokens, lm_head]"
	fi
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$v-1" >"$tmp/$v-1.log" 2>&1 ||
		bad "$v: one process: $(tail -3 "$tmp/$v-1.log")"
	mpin 2 "$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$v-2" --set layer_split=auto >"$tmp/$v-2.log" 2>&1 ||
		bad "$v: 2 stages: $(tail -3 "$tmp/$v-2.log")"
	same "$tmp/$v-1" "$tmp/$v-2" "$v: 2 stages vs one process"
done

# One process with layer_split: a note, and the one-process run
"$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/o1" --set layer_split=auto >"$tmp/o1.log" 2>&1 ||
	bad "one process with layer_split: $(tail -3 "$tmp/o1.log")"
grep -q "^layer_split: one process runs every layer" "$tmp/o1.log" && ok || bad "no one-process note"
same "$tmp/s1-false" "$tmp/o1" "one process with layer_split vs without"

echo "cli_split: $pass passed, $fail failed"
[ $fail -eq 0 ]
