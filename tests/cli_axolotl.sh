#!/bin/sh
# axolotl's example configs (tests/data/axolotl) through `tern plan` as written, with only
# base_model pointed at a test config.json (tests/data/plan): each plans, and stderr holds only
# one-line notes (and warnings), one note per engine-only key, shown without -v; one of them
# trains a step on the golden tiny llama. Then the CLI side
# of bad input: sizes 0 and hex, non-UTF-8 and malformed --set values, two YAML documents, deep
# nesting: exit 1 or 2 with exactly one line on stderr.
# Usage: cli_axolotl.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
run() {
	"$tern" plan "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
}

for f in "$data"/axolotl/*.y*ml; do
	name=$(basename "$f")
	case $name in
	mistral_mixtral*) model=$data/plan/mixtral-8x7b-v0.1 ;;
	mistral*) model=$data/plan/mistral-7b-v0.1 ;;
	*) model=$data/plan/meta-llama-3-8b ;; # llama-2, llama-3, and a stand-in for qwen
	esac
	run "$f" --set base_model="$model" --device-memory 80GB --host-memory 64GB
	[ $rc = 0 ] && grep -q "^verdict: " "$tmp/out" && ok || bad "$name plans: $rc $(cat "$tmp/err")"
	grep -v "^tern: note: \|^tern: warning: " "$tmp/err" >"$tmp/other"
	[ ! -s "$tmp/other" ] && grep -q "^tern: note: " "$tmp/err" && ok || bad "$name: stderr is notes only: $(cat "$tmp/err")"
	if grep -q "^attn_implementation:" "$f"; then
		[ "$(grep -c ": attn_implementation: tern always runs its own tiled" "$tmp/err")" = 1 ] && ok ||
			bad "$name: one attn_implementation note: $(cat "$tmp/err")"
	fi
	if grep -q "^bf16: auto" "$f"; then
		[ "$(grep -c ": bf16: products run as compute_dtype (default auto" "$tmp/err")" = 1 ] && ok || bad "$name: one bf16 note"
	fi
done

# one example trains a step as written, with only base_model (the golden case's tiny llama), the
# dataset (its pretokenized rows), special_tokens (the tiny vocabulary has no <|end_of_text|>) and
# the run's length and place changed; the CPU backend keeps it quick
g=$data/golden/llama
"$tern" train "$data/axolotl/llama-3_lora-1b.yml" --set base_model="$g/model" \
	--set "datasets.0={path: $g/data.jsonl, type: pretokenized}" --set sequence_len=24 --set max_steps=1 \
	--set special_tokens=null --set backend=cpu --set output_dir="$tmp/train1" >"$tmp/out" 2>"$tmp/err"
rc=$?
grep -v "^tern: note: \|^tern: warning: " "$tmp/err" >"$tmp/other"
[ $rc = 0 ] && [ -f "$tmp/train1/adapter/adapter_model.safetensors" ] && grep -q "^step 1/1 " "$tmp/out" &&
	[ ! -s "$tmp/other" ] && grep -q "^tern: note: .*: attn_implementation: " "$tmp/err" && ok ||
	bad "llama-3_lora-1b.yml trains a step: $rc $(cat "$tmp/err") $(tail -3 "$tmp/out")"

# a config of the test setup
cat >"$tmp/c.yaml" <<EOC
base_model: $data/plan/meta-llama-3-8b
adapter: qlora
datasets:
  - path: nowhere.jsonl
    type: alpaca
EOC
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set deepspeed=zero3.json
[ $rc = 0 ] && [ "$(wc -l <"$tmp/err")" = 1 ] &&
	grep -q "^tern: note: --set: deepspeed: tern trains on one device" "$tmp/err" && ok || bad "--set deepspeed: one note: $(cat "$tmp/err")"

# one line and exit 1 (bad input) or 2 (bad usage)
one_line() { # WANT_RC PATTERN WHAT
	[ $rc = "$1" ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "$2" "$tmp/err" && ok || bad "$3: exit $rc, $(cat "$tmp/err")"
}
run "$tmp/c.yaml" --device-memory 0 --host-memory 16GB
one_line 2 "plan: --device-memory: '0' is no budget (allowed: auto" "--device-memory 0"
run "$tmp/c.yaml" --device-memory AUTO --host-memory 0.0GB
one_line 2 "plan: --host-memory: '0.0GB' is no budget" "--host-memory 0.0GB (after --device-memory AUTO)"
run "$tmp/c.yaml" --device-memory 0x10GB --host-memory 16GB
one_line 2 "plan: --device-memory: '0x10GB' is not a size" "--device-memory 0x10GB"
run "$tmp/c.yaml" --device-memory 24GB --host-memory 1e10
one_line 2 "plan: --host-memory: '1e10' is not a size" "--host-memory 1e10"
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set device_memory=0
one_line 1 "^tern: --set: device_memory: '0' is no budget" "--set device_memory=0"
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set "$(printf 'output_dir=out\377')"
one_line 1 "^tern: --set output_dir: byte 0xff is not UTF-8 text (give the value as UTF-8)$" "--set a non-UTF-8 value"
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set "lora_r=[a"
one_line 1 "^tern: --set lora_r: YAML syntax error: " "--set lora_r=[a names the key, no line"
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set "lora_r=[a"
! grep -q -- "--set lora_r:[-0-9]" "$tmp/err" && ok || bad "--set messages print no line number: $(cat "$tmp/err")"
{ cat "$tmp/c.yaml"; printf -- '---\nlora_r: 3\n'; } >"$tmp/two.yaml"
run "$tmp/two.yaml" --device-memory 24GB
one_line 1 "two.yaml:6: a second YAML document ('---'); a config is one document" "two YAML documents"
{ printf 'base_model: '; head -c 100000 /dev/zero | tr '\0' '['; head -c 100000 /dev/zero | tr '\0' ']'; echo; } >"$tmp/deep.yaml"
start=$(date +%s)
run "$tmp/deep.yaml" --device-memory 24GB
end=$(date +%s)
one_line 1 "deep.yaml:1: lists and maps nested more than 64 levels deep" "100,000 nested lists"
[ $((end - start)) -le 2 ] && ok || bad "100,000 nested lists took $((end - start)) s"
printf 'base_model: m\377\n' >"$tmp/latin1.yaml"
run "$tmp/latin1.yaml" --device-memory 24GB
one_line 1 "latin1.yaml:1: byte 0xff is not UTF-8 text (save the config as UTF-8)" "a non-UTF-8 config"
long=$(head -c 6000 /dev/zero | tr '\0' 'd')
run "$tmp/c.yaml" --device-memory 24GB --host-memory 16GB --set "base_model=/$long"
one_line 1 "^tern: /ddd.*\.\.\.ddd.*: cannot open: " "a 6,000-letter base_model: the reason kept"
[ "$(wc -c <"$tmp/err")" -lt 1100 ] && ok || bad "a 6,000-letter base_model: the message is cut"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
