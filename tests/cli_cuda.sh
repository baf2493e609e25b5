#!/bin/sh
# A CUDA build's CLI on any machine: `tern devices` exits 0 and either lists CUDA devices
# ("cuda 0: NAME" with its compute capability and bf16 line) or says "cuda: no device (...)";
# `tern --version` names the cuda backend; `tern bench ops --backend cuda` either runs or fails
# softly with one line naming cuda (exit 1, not a crash); with a device of compute 8.0 or later,
# `tern plan --device-memory auto` counts compute_dtype auto as the bf16 the trainer would run.
# Usage: cli_cuda.sh TERN
tern=$1
data=$(dirname "$0")/data
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$tern" --version >"$tmp/ver" 2>&1
grep -q "backends: .*cuda" "$tmp/ver" && ok || bad "tern --version does not name cuda: $(cat "$tmp/ver")"

"$tern" devices >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 0 ] && ok || bad "tern devices exited $rc: $(cat "$tmp/err")"
if grep -q "^cuda 0: " "$tmp/out"; then
	grep -q "compute [0-9]" "$tmp/out" && grep -q "bf16 " "$tmp/out" && ok ||
		bad "a CUDA device without its compute capability or bf16 line"
	echo "cuda device present: $(grep '^cuda 0: ' "$tmp/out")"
	device=1
else
	grep -q "^cuda: no device" "$tmp/out" && ok || bad "no CUDA device listed and no 'cuda: no device' line"
	echo "$(grep '^cuda: no device' "$tmp/out")"
	device=0
fi

"$tern" bench ops --backend cuda --T 8 --O 16 --I 16 --R 2 --ops axpy --seconds 0 >"$tmp/b" 2>"$tmp/be"
rc=$?
if [ $device = 1 ]; then
	[ $rc = 0 ] && ok || bad "bench ops --backend cuda exited $rc: $(cat "$tmp/be")"
else
	[ $rc = 1 ] && [ "$(wc -l <"$tmp/be")" = 1 ] && grep -q "cuda" "$tmp/be" && ok ||
		bad "bench ops --backend cuda without a device: exit $rc, stderr: $(cat "$tmp/be")"
fi

if [ $device = 1 ] && grep -q "^cuda 0: .*compute \([89]\|1[0-9]\)\." "$tmp/out"; then
	printf 'base_model: %s\nadapter: qlora\nlora_r: 16\nlora_alpha: 32\nlora_target_linear: true\n' \
		"$data/plan/llama-3.2-1b" >"$tmp/p.yaml"
	printf 'datasets:\n  - path: nowhere.jsonl\n    type: alpaca\nsequence_len: 2048\n' >>"$tmp/p.yaml"
	printf 'gradient_checkpointing: true\nbackend: cuda\nhost_memory: 16GB\n' >>"$tmp/p.yaml"
	"$tern" plan "$tmp/p.yaml" --device-memory auto >"$tmp/pl" 2>&1
	grep -q "activations (.*bf16" "$tmp/pl" && ok || bad "plan on cuda, compute_dtype auto: not bf16: $(cat "$tmp/pl")"
else
	echo "plan on cuda at compute_dtype auto: not run (no CUDA device of compute 8.0+)"
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
