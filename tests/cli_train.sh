#!/bin/sh
# tern train / tern eval end to end on the golden llama case (CPU backend: small and quick):
# outputs, checkpoints and save_total_limit, a resumed run whose adapter is byte-identical to the
# uninterrupted one, max_time, and bad configs/datasets failing with one line and no output dir.
# Usage: cli_train.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama
# the golden config names paths from the repository root; rewrite them for this run
sed -e "s|tests/data/golden/llama|$g|g" "$g/config.yaml" >"$tmp/c.yaml"
set_common="--set backend=cpu"

# 1. a full run with checkpoints every 4 steps, keeping the last one
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/a" --set save_steps=4 --set save_total_limit=1 \
	>"$tmp/out" 2>"$tmp/err" && ok || bad "train: $(cat "$tmp/err")"
test -s "$tmp/a/adapter/adapter_model.safetensors" && test -s "$tmp/a/adapter/adapter_config.json" && ok ||
	bad "no adapter in $tmp/a/adapter"
test -s "$tmp/a/config.yaml" && ok || bad "no resolved config.yaml"
n=$(grep -c '"loss"' "$tmp/a/metrics.jsonl")
[ "$n" = 10 ] && ok || bad "metrics.jsonl has $n step lines, expected 10"
ls "$tmp/a" | grep -q '^checkpoint-8$' && ! ls "$tmp/a" | grep -q '^checkpoint-4$' && ok ||
	bad "save_total_limit 1: $(ls "$tmp/a")"
grep -q "^step 10/10  loss" "$tmp/out" && ok || bad "no progress lines: $(head -c 2000 "$tmp/out")"
grep -q "lr 0.000e+00" "$tmp/out" && ok || bad "warmup step 1 should use lr 0"

# 2. resume: a run that stopped after checkpoint-4 continues to the same bytes (with LoRA dropout:
#    the masks of the remaining steps must be the same too)
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/full" --set save_steps=4 --set lora_dropout=0.1 >/dev/null 2>"$tmp/err" &&
	ok || bad "train full: $(cat "$tmp/err")"
mkdir -p "$tmp/b" && cp -r "$tmp/full/checkpoint-4" "$tmp/b/" && ok || bad "copy checkpoint-4"
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/b" --set save_steps=4 --set lora_dropout=0.1 --set resume_from_checkpoint=auto \
	>"$tmp/out" 2>"$tmp/err" && grep -q "resuming from .*checkpoint-4 at step 4 of 10" "$tmp/out" && ok ||
	bad "resume: $(cat "$tmp/err") $(head -c 1500 "$tmp/out")"
cmp "$tmp/full/adapter/adapter_model.safetensors" "$tmp/b/adapter/adapter_model.safetensors" && ok ||
	bad "the resumed adapter differs from the uninterrupted one"
cmp "$tmp/full/checkpoint-8/optimizer.safetensors" "$tmp/b/checkpoint-8/optimizer.safetensors" && ok ||
	bad "the resumed run's checkpoint-8 moments differ"

# 3. max_time: the schedule is planned for what fits and the run stops cleanly
#    (normally the plan line after 3 steps; on a machine so loaded that the first steps take the
#    whole budget, the stop line alone)
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/t" --set max_steps=100000 --set max_time=6s \
	>"$tmp/out" 2>"$tmp/err" && grep -q "^max_time 6s: .* s/step, planning [0-9]* steps instead of 100000\|^max_time reached" "$tmp/out" &&
	test -s "$tmp/t/adapter/adapter_model.safetensors" && ! grep -q "^step 100000/" "$tmp/out" && ok ||
	bad "max_time: $(cat "$tmp/err") $(tail -5 "$tmp/out")"

# 4. tern eval: base and base + adapter on the data
"$tern" eval "$tmp/c.yaml" $set_common --set output_dir="$tmp/a" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^  base  *loss [0-9.]*  perplexity" "$tmp/out" && grep -q "^  + adapter  *loss" "$tmp/out" && ok ||
	bad "eval: $(cat "$tmp/err" "$tmp/out")"

# 5. bad input: exit 1, one line on stderr naming the problem, no output directory
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, "x"]}\n' >"$tmp/bad.jsonl"
check_bad() { # name, expected text, args...
	name=$1
	want=$2
	shift 2
	rm -rf "$tmp/o"
	"$tern" train "$@" $set_common --set output_dir="$tmp/o" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" = 1 ] && [ "$lines" = 1 ] && grep -q "$want" "$tmp/err" && [ ! -e "$tmp/o" ]; then ok; else
		bad "$name: exit $rc, $lines stderr lines, output dir $(test -e "$tmp/o" && echo exists || echo absent): $(cat "$tmp/err")"
	fi
}
check_bad "unknown key" "lora_rank" "$tmp/c.yaml" --set lora_rank=8
check_bad "bad value" "lora_r" "$tmp/c.yaml" --set lora_r=abc
check_bad "bad dataset line" "bad.jsonl:2" "$tmp/c.yaml" --set "datasets.0.path=$tmp/bad.jsonl"
check_bad "missing model" "nonexistent" "$tmp/c.yaml" --set base_model=/nonexistent
check_bad "wrong adapter rank" "lora_r\|r " "$tmp/c.yaml" --set lora_r=4
"$tern" train >/dev/null 2>"$tmp/err"
[ $? = 2 ] && ok || bad "train without a config should exit 2"

# 6. the shipped configs parse and plan (paths in them are relative to the repository root)
root=$(cd "$data/../.." && pwd)
(cd "$root" && "$tern" plan configs/demo.yaml >"$tmp/out" 2>"$tmp/err") && grep -q "^verdict: fits" "$tmp/out" && ok ||
	bad "plan configs/demo.yaml: $(cat "$tmp/err")"
for c in "mistral-7b-12gb mistral-7b-v0.1" "llama3-70b-24gb meta-llama-3-70b"; do
	set -- $c
	(cd "$root" && "$tern" plan "configs/$1.yaml" --set base_model="$data/plan/$2" >"$tmp/out" 2>"$tmp/err") &&
		grep -q "^verdict: " "$tmp/out" && ok || bad "plan configs/$1.yaml: $(cat "$tmp/err")"
done

echo "cli_train: $pass passed, $fail failed"
[ "$fail" = 0 ]
