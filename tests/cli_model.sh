#!/bin/sh
# tern info / tern quantize on a fixture (exit 0, files written) and on bad directories (exit 1,
# exactly one line on stderr). Usage: cli_model.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

"$tern" info "$data/models/llama" >"$tmp/out" 2>"$tmp/err" && grep -q "L 2, D 64, F 160, H 4, Hkv 2, Dh 16, V 256" "$tmp/out" &&
	grep -q "nf4+dq" "$tmp/out" && grep -q "^weights  *21 tensors in 1 file, .*every tensor present" "$tmp/out" && ok || bad "info llama"
"$tern" quantize "$data/models/qwen2" --format nf4 --blocksize 128 --out "$tmp/q.tpack" --bnb-out "$tmp/bnb" >"$tmp/out" 2>"$tmp/err" &&
	test -s "$tmp/q.tpack" && test -s "$tmp/bnb/model.safetensors" && grep -q '"quant_method": "bitsandbytes"' "$tmp/bnb/config.json" &&
	ok || bad "quantize qwen2: $(cat "$tmp/err")"
"$tern" quantize "$data/models/llama" --format ternary --out "$tmp/t.tpack" >"$tmp/out" 2>"$tmp/err" && ok || bad "quantize ternary"
# an up-to-date pack is reused; another format or --force rebuilds it
"$tern" quantize "$data/models/llama" --format ternary --out "$tmp/t.tpack" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "is up to date" "$tmp/out" && ok || bad "second quantize reuses: $(cat "$tmp/out" "$tmp/err")"
"$tern" quantize "$data/models/llama" --format nf4 --out "$tmp/t.tpack" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^wrote .*format" "$tmp/out" && ok || bad "a format change rebuilds: $(cat "$tmp/out" "$tmp/err")"
"$tern" quantize "$data/models/llama" --format nf4 --out "$tmp/t.tpack" --force >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^wrote " "$tmp/out" && ok || bad "--force rebuilds: $(cat "$tmp/out" "$tmp/err")"
"$tern" info "$tmp/bnb" >"$tmp/out" 2>"$tmp/err" && grep -q "bitsandbytes nf4" "$tmp/out" && ok || bad "info of the bnb export"

# bad directories: exit 1 and one line on stderr
mkdir -p "$tmp/empty" "$tmp/badjson"
cp -r "$data/models/llama" "$tmp/trunc"
head -c 1000 "$data/models/llama/model.safetensors" >"$tmp/trunc/model.safetensors"
printf '{"model_type": "llama", "hidden_size": "big"}' >"$tmp/badjson/config.json"
# tern info checks the weights: a truncated file, a shape config.json does not imply
cp -r "$data/models/llama" "$tmp/shape"
sed 's/"intermediate_size": 160/"intermediate_size": 128/' "$data/models/llama/config.json" >"$tmp/shape/config.json"
"$tern" info "$tmp/shape" >"$tmp/out" 2>"$tmp/err"
[ $? = 1 ] && grep -q "mlp.*has shape \[160, 64\], expected \[128, 64\]\|has shape \[64, 160\], expected \[64, 128\]" "$tmp/err" && ok ||
	bad "info with a wrong shape: $(cat "$tmp/err")"
"$tern" info "$tmp/trunc" >"$tmp/out" 2>"$tmp/err"
[ $? = 1 ] && grep -q "model.safetensors" "$tmp/err" && ok || bad "info of a truncated model.safetensors: $(cat "$tmp/err")"
for args in "info $tmp/empty" "info $tmp/badjson" "info $tmp/trunc" "info $tmp/shape" "quantize $tmp/empty --out $tmp/x.tpack" \
	"quantize $data/models/mixtral --out $tmp/x.tpack" "quantize $tmp/trunc --out $tmp/x.tpack" \
	"quantize /nonexistent --out $tmp/x.tpack"; do
	# shellcheck disable=SC2086
	"$tern" $args >"$tmp/out" 2>"$tmp/err"
	rc=$?
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" = 1 ] && [ "$lines" = 1 ]; then ok; else bad "tern $args: exit $rc, $lines stderr lines: $(cat "$tmp/err")"; fi
done
test ! -e "$tmp/x.tpack" && ok || bad "a failed quantize left a pack file"
"$tern" quantize "$data/models/llama" >"$tmp/out" 2>"$tmp/err"
[ $? = 2 ] && ok || bad "quantize without --out: usage error"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
