#!/bin/sh
# Residency end to end (issue 5): `tern train` on the 6-layer fixture with budgets that keep 2
# layers on the device, 2 in host memory and 2 in the pack file on disk gives an adapter
# byte-identical to the all-resident run, streams exactly the bytes the slot schedule implies,
# and stays within its device budget. Usage: cli_stream.sh TERN DATA_DIR BACKEND
# (BACKEND: vulkan, or cpu: the fast CPU backend, where the "device" is host memory too and the
# pack file on disk is the disk tier all the same)
tern=$1
data=$2
backend=${3:-vulkan}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# 24 pretokenized samples of 20..59 ids (a fixed LCG), packed into rows of 64
. "$(dirname "$0")/lcg_data.sh"
lcg_samples "$tmp/d.jsonl" 24
cat >"$tmp/c.yaml" <<Y
base_model: $data/models/llama6
adapter: qlora
lora_r: 4
lora_alpha: 8
lora_dropout: 0.1
lora_target_linear: true
datasets:
  - path: $tmp/d.jsonl
    type: pretokenized
sequence_len: 64
sample_packing: true
micro_batch_size: 2
gradient_accumulation_steps: 2
max_steps: 4
learning_rate: 0.001
logging_steps: 1
seed: 3
backend: $backend
Y

# One layer group of llama6 in nf4-dq (each part 256-aligned, as in the pack): q and o [64, 64]:
# 2048 B codes + 64 B absmax + 4 B nested -> 2048 + 256 + 256; k and v [32, 64]: 1024 + 256 + 256;
# gate, up, down 8192 params: 4096 + 256 + 256; two bf16 norms of 64: 256 each.
G=$((2 * 2560 + 2 * 1536 + 3 * 4608 + 2 * 256))
# The smallest device budget (fixed costs + 3 slots) from the planner's own error line, then room
# for exactly 2 resident layers; the host budget: the planner's reserve (1 GiB + the LoRA host
# copy: parameters and both moments, 24576 x 4 B x 3) + 2 layers.
"$tern" plan "$tmp/c.yaml" --device-memory 1000000 --host-memory 2GB >/dev/null 2>"$tmp/err"
min=$(sed -n 's/.*works, [0-9.]* [KMG]iB (\([0-9]*\) bytes.*/\1/p' "$tmp/err")
[ -n "$min" ] && ok || bad "tern plan gave no smallest budget: $(cat "$tmp/err")"
# (that smallest has the layer inputs offloaded, as gradient_checkpointing: true does where they
# do not fit; with them on the device: 5 fp32 [128, 64] inputs more, 7 instead of 2 slots)
min=$((min + 5 * 128 * 64 * 4))
dev=$((min + 2 * G + G / 2))
host=$((1073741824 + 24576 * 4 * 3 + 2 * G + G / 2))

"$tern" train "$tmp/c.yaml" --set output_dir="$tmp/all" >"$tmp/all.log" 2>&1 || bad "all-resident run: $(tail -3 "$tmp/all.log")"
"$tern" train "$tmp/c.yaml" --set output_dir="$tmp/str" --set device_memory=$dev --set host_memory=$host \
	>"$tmp/str.log" 2>&1 || bad "streaming run: $(tail -3 "$tmp/str.log")"
grep -q "residency 2 device, 2 host, 2 disk layers; 3 slots" "$tmp/str.log" && ok ||
	bad "placement: $(grep residency "$tmp/str.log")"
cmp "$tmp/all/adapter/adapter_model.safetensors" "$tmp/str/adapter/adapter_model.safetensors" && ok ||
	bad "the streamed run's adapter differs from the all-resident one"
# device memory in use (tern's accounting, printed in bytes by the banner's plan) within the budget
used=$(sed -n 's/.*device memory \([0-9.]*\) \([KMG]\)iB of budget.*/\1 \2/p' "$tmp/str.log")
awk -v u="$used" -v b=$dev 'BEGIN { split(u, a, " "); m = a[2] == "K" ? 1024 : a[2] == "M" ? 1048576 : 1073741824;
	exit !(a[1] * m <= b) }' && ok || bad "device memory $used over the budget $dev"
# Bytes per step with 3 slots (prefetch depth 2; layers 2-3 host, 4-5 disk): the first micro-batch
# loads 2, 3, 4, 5 in the forward and 2 again in the backward (5 took its slot); every later
# micro-batch loads 5 in the forward and 2 in the backward. Two micro-batches per step.
want() { # step host disk
	line=$(grep "^{\"step\": $1, \"epoch\"" "$tmp/str/metrics.jsonl")
	h=$(echo "$line" | sed -n 's/.*"stream_host_bytes": \([0-9]*\).*/\1/p')
	d=$(echo "$line" | sed -n 's/.*"stream_disk_bytes": \([0-9]*\).*/\1/p')
	[ "$h" = "$2" ] && [ "$d" = "$3" ] && ok || bad "step $1: host $h disk $d bytes, expected $2 and $3"
}
want 1 $((4 * G)) $((3 * G))
want 2 $((2 * G)) $((2 * G))
want 4 $((2 * G)) $((2 * G))
n=$(grep -c '"stream_host_bytes": 0, "stream_disk_bytes": 0' "$tmp/all/metrics.jsonl")
[ "$n" = 4 ] && ok || bad "the all-resident run streamed ($n of 4 steps without streaming)"
# a device allocation failure at start re-plans with a smaller budget, says so, and trains the same
TERN_FAULT_DEVICE_ALLOC=1 "$tern" train "$tmp/c.yaml" --set output_dir="$tmp/re" --set device_memory=$((dev + 4 * G)) \
	--set host_memory=$host >"$tmp/re.log" 2>&1 &&
	grep -q "^device allocation failed with a .* plan (injected .*); re-planning with " "$tmp/re.log" &&
	cmp "$tmp/all/adapter/adapter_model.safetensors" "$tmp/re/adapter/adapter_model.safetensors" && ok ||
	bad "re-plan after a device allocation failure: $(grep -E 'residency|device allocation|tern:' "$tmp/re.log")"
# an impossible budget is refused before anything is written
"$tern" train "$tmp/c.yaml" --set output_dir="$tmp/no" --set device_memory=1000000 >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "smallest that works" "$tmp/err" && [ ! -e "$tmp/no" ] && ok ||
	bad "impossible budget: exit $rc: $(cat "$tmp/err")"

echo "cli_stream ($backend): $pass passed, $fail failed"
[ "$fail" = 0 ]
