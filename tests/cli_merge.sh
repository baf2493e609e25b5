#!/bin/sh
# tern merge / tern export gguf from the command line: a merge through a training config (base
# format nf4-dq from the config, adapter <output_dir>/adapter) equals the explicit form byte for
# byte; export gguf writes a GGUF file; every bad input gets exactly one line on stderr and the
# usual exit code (1 a failure, 2 bad usage) and leaves nothing under the output name.
# The numbers (PEFT parity, GGUF round trips) are test_export's. Usage: cli_merge.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama_nf4
# one_line RC CMD...: runs CMD, expects exit code RC and exactly one line on stderr
one_line() {
	want=$1
	shift
	"$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	n=$(wc -l <"$tmp/err")
	if [ "$rc" = "$want" ] && [ "$n" = 1 ]; then
		ok
		echo "ok   ($rc) $(cat "$tmp/err")"
	else
		bad "$* -> exit $rc (want $want), $n lines: $(cat "$tmp/err")"
	fi
}

# 1. config form: the config's base_model and base_format, the adapter in <output_dir>/adapter
mkdir -p "$tmp/run" && cp -r "$g/adapter_final" "$tmp/run/adapter"
sed -e "s|tests/data/golden/llama_nf4|$g|g" -e "s|^output_dir:.*|output_dir: $tmp/run|" "$g/config.yaml" >"$tmp/c.yaml"
"$tern" merge "$tmp/c.yaml" --out "$tmp/m1" --dtype f32 >"$tmp/out" 2>"$tmp/err" && grep -q "base weights nf4-dq" "$tmp/out" &&
	ok || bad "merge CONFIG: $(cat "$tmp/out" "$tmp/err")"
"$tern" merge --base "$g/model" --adapter "$g/adapter_final" --base-format nf4-dq --out "$tmp/m2" --dtype f32 \
	>"$tmp/out" 2>"$tmp/err" && ok || bad "merge --base: $(cat "$tmp/err")"
cmp -s "$tmp/m1/model.safetensors" "$tmp/m2/model.safetensors" && ok || bad "config and explicit merges differ"
ls "$tmp/run" | grep -q tpack && bad "a temporary pack was left in the run directory" || ok

# the base an adapter names (base_model_name_or_path, relative to the repository root here)
(cd "$data/../.." && "$tern" merge --adapter tests/data/golden/llama/adapter_final --out "$tmp/m3" --dtype f32) \
	>"$tmp/out" 2>"$tmp/err" && grep -q "into tests/data/golden/llama/model" "$tmp/out" && ok ||
	bad "merge --adapter alone: $(cat "$tmp/out" "$tmp/err")"

# 2. export gguf: the merged model and the LoRA
"$tern" export gguf --base "$g/model" --adapter "$g/adapter_final" --out "$tmp/m.gguf" --type q8_0 >"$tmp/out" 2>"$tmp/err" &&
	[ "$(head -c 4 "$tmp/m.gguf")" = GGUF ] && ok || bad "export gguf: $(cat "$tmp/err")"
"$tern" export gguf "$tmp/c.yaml" --lora --out "$tmp/l.gguf" >"$tmp/out" 2>"$tmp/err" &&
	[ "$(head -c 4 "$tmp/l.gguf")" = GGUF ] && ok || bad "export gguf --lora: $(cat "$tmp/err")"
ls "$tmp" | grep -q "tmp\." && bad "temporary files left: $(ls "$tmp")" || ok

# 3. bad inputs: one line each
one_line 1 "$tern" merge --base "$data/golden/qwen2/model" --adapter "$g/adapter_final" --out "$tmp/x"
[ -e "$tmp/x" ] && bad "a failed merge left $tmp/x" || ok
one_line 1 "$tern" merge --base "$g/model" --adapter "$tmp/nothing" --out "$tmp/x"
one_line 1 "$tern" merge --base "$g/model" --adapter "$g/adapter_final" --out "$tmp/m1"
one_line 1 "$tern" merge --base "$tmp/nothing" --adapter "$g/adapter_final" --out "$tmp/x"
one_line 2 "$tern" merge --base "$g/model" --adapter "$g/adapter_final"
one_line 2 "$tern" merge --base "$g/model" --out "$tmp/x"
one_line 2 "$tern" merge --base "$g/model" --adapter "$g/adapter_final" --out "$tmp/x" --dtype f8
one_line 2 "$tern" merge --base "$g/model" --adapter "$g/adapter_final" --out "$tmp/x" --shard-size lots
one_line 2 "$tern" export onnx --base "$g/model"
one_line 2 "$tern" export gguf --base "$g/model" --out "$tmp/x.gguf" --type q4_0
one_line 1 "$tern" export gguf --base "$data/golden/llama_save/model" --adapter "$data/golden/llama_save/adapter_final" \
	--lora --out "$tmp/x.gguf"
[ -e "$tmp/x" ] || [ -e "$tmp/x.gguf" ] && bad "a failed command left output" || ok

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
