#!/bin/sh
# Seeing training (issue 10): a CPU run of the golden llama config with use_tensorboard: true
# writes runs/<Mon>DD_HH-MM-SS_<host>/events.out.tfevents.* and a progress line with the epoch and
# peak memory; `tern report` turns its metrics.jsonl into one self-contained HTML page; a
# cut-off last line is tolerated, a damaged or missing metrics.jsonl fails with one line.
# Usage: cli_observe.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama
sed -e "s|tests/data/golden/llama|$g|g" "$g/config.yaml" >"$tmp/c.yaml"

# 1. a run with TensorBoard event files and an eval split
"$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/a" --set use_tensorboard=true \
	--set val_set_size=2 --set eval_steps=5 >"$tmp/out" 2>"$tmp/err" && ok || bad "train: $(cat "$tmp/err")"
ev=$(ls "$tmp"/a/runs/*_*/events.out.tfevents.* 2>/dev/null | head -1)
[ -n "$ev" ] && [ "$(od -An -c -j12 -N16 "$ev" | tr -d ' \n')" != "" ] && ok || bad "no event file under $tmp/a/runs"
case "$ev" in */runs/[A-Z][a-z][a-z][0-3][0-9]_[0-2][0-9]-[0-5][0-9]-[0-5][0-9]_*/events.out.tfevents.[0-9]*.*.[0-9]*.0) ok ;;
*) bad "event file path not as transformers names it: $ev" ;; esac
grep -q "brain.Event:2" "$ev" && grep -q "train/loss" "$ev" && grep -q "eval/loss" "$ev" && ok ||
	bad "event file lacks file_version or the train/eval tags"
grep -q "^tensorboard: $ev\$" "$tmp/out" && ok || bad "no 'tensorboard: PATH' line"
grep -q "^step 10/10  loss [0-9.]*  lr .*  epoch 1.00  .* tok/s  .*mem .* (peak device .*, host [0-9.]* [KMG]i\?B)$" "$tmp/out" && ok ||
	bad "progress line without epoch / peak memory: $(grep '^step 10/' "$tmp/out")"
grep -q '"peak_device_bytes": [1-9][0-9]*, "peak_host_bytes": [1-9]' "$tmp/a/metrics.jsonl" && ok ||
	bad "metrics.jsonl lacks the peak memory fields"

# 2. tern report on that run
"$tern" report "$tmp/a" >"$tmp/out" 2>"$tmp/err" && grep -q "report.html: 10 steps, 3 evals$" "$tmp/out" && ok ||
	bad "report: $(cat "$tmp/err" "$tmp/out")"
h=$tmp/a/report.html
[ "$(grep -c '<svg' "$h")" = 5 ] && ! grep -qi '<script\|src=\|href=\|@import' "$h" && grep -q 'eval loss' "$h" &&
	grep -q '<th>lora_r</th><td> 8</td>' "$h" && grep -q 'polyline' "$h" && ok ||
	bad "report.html: 5 inline charts, no scripts or links, the config: $(head -c 600 "$h")"

# 3. a killed run: the cut-off last line is left out, with a note
mkdir -p "$tmp/k"
head -n 4 "$tmp/a/metrics.jsonl" >"$tmp/k/metrics.jsonl"
printf '{"step": 5, "epoch": 0.5, "lo' >>"$tmp/k/metrics.jsonl"
"$tern" report "$tmp/k" >"$tmp/out" 2>"$tmp/err" && grep -q "cut-off last line" "$tmp/out" &&
	grep -q "no config.yaml" "$tmp/k/report.html" && ok || bad "truncated: $(cat "$tmp/err" "$tmp/out")"

# 4. a damaged line in the middle, an empty file, no directory: exit 1, one line naming the file
printf '{"step": 1, "loss": 2}\nnot json\n{"step": 2, "loss": 1}\n' >"$tmp/k/metrics.jsonl"
check_bad() { # name, expected text, dir
	"$tern" report "$3" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "$2" "$tmp/err" && ok ||
		bad "$1: rc $rc, stderr: $(cat "$tmp/err")"
}
check_bad damaged "metrics.jsonl:2: not a metrics line" "$tmp/k"
: >"$tmp/k/metrics.jsonl"
check_bad empty "metrics.jsonl has no metrics lines" "$tmp/k"
check_bad missing "cannot read .*/nothere/metrics.jsonl" "$tmp/nothere"
"$tern" report >/dev/null 2>"$tmp/err"
[ $? = 2 ] && grep -q "missing OUTPUT_DIR" "$tmp/err" && ok || bad "no argument: $(cat "$tmp/err")"

# a cold pipeline cache says so once: the first Vulkan run prints 'compiling shaders', the next
# (same cache file, TERN_PIPELINE_CACHE) does not, and the cache file it names is there
if [ "$TERN_REQUIRE_VULKAN" = 1 ] || "$tern" devices 2>/dev/null | grep -qi vulkan; then
	for run in cold warm; do
		TERN_PIPELINE_CACHE="$tmp/pc.bin" "$tern" train "$tmp/c.yaml" --set backend=vulkan \
			--set max_steps=1 --set output_dir="$tmp/pc_$run" >"$tmp/pc_$run.out" 2>"$tmp/err" ||
			bad "$run vulkan run: $(cat "$tmp/err")"
	done
	pc=$(sed -n 's/^compiling shaders (first run: no pipeline cache at \(.*\) yet)$/\1/p' "$tmp/pc_cold.out")
	[ "$pc" = "$tmp/pc.bin" ] && [ -s "$pc" ] && ! grep -q "^compiling shaders" "$tmp/pc_warm.out" && ok ||
		bad "compiling shaders once: cold '$(grep compiling "$tmp/pc_cold.out")' warm '$(grep compiling "$tmp/pc_warm.out")'"
else
	echo "not run: the compiling-shaders line (no Vulkan device)"
fi


# 5. tern bench ops times attention forward and backward (a row each, with the shape and a rate);
# heads that do not group are refused in one line
"$tern" bench ops --backend cpu --ops attention,attention_bwd --T 33 --heads 4 --kv-heads 2 --head-dim 16 \
	--seconds 0 >"$tmp/bench" 2>"$tmp/err" && ok || bad "bench ops attention: $(cat "$tmp/err")"
for op in attention attention_bwd; do
	awk -v op=$op '$1 == op && $3 == "T=33" && $4 == "H=4" && $5 == "Hkv=2" && $6 == "Dh=16" && $8 > 0 { f = 1 }
		END { exit !f }' "$tmp/bench" && ok || bad "no $op row with a rate: $(cat "$tmp/bench")"
done
"$tern" bench ops --backend cpu --ops attention --heads 6 --kv-heads 4 --seconds 0 >"$tmp/bench" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] &&
	grep -q "T=512 H=6 Hkv=4 Dh=128 .*H a multiple of Hkv" "$tmp/err" && ok ||
	bad "heads 6 over 4: exit $rc, $(cat "$tmp/err")"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
