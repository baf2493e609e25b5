#!/bin/sh
# pad_to_sequence_len on the golden llama case (rows of 6..24 real tokens, S = 24): a run with
# micro-batches padded only to their longest row gives the same losses, and here the same adapter
# bytes, as one padded to sequence_len (pad tokens carry no target and no sample attends to them);
# tokens/s and input_tokens count the real tokens only (665 in the epoch, not 40 x 24 = 960); the
# default follows axolotl (false, true with sample_packing). The CPU reference (ref), the fast CPU
# backend (cpu: the same losses, but not the same adapter bytes: its BLAS rounds a row's products
# differently with the number of rows in the call), and Vulkan when a device is there or
# TERN_REQUIRE_VULKAN=1.
# Usage: cli_pad.sh TERN DATA_DIR
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

# losses FILE: the loss of every step line of a metrics.jsonl, one a line
losses() { grep '"loss"' "$1" | sed 's/.*"loss": \([^,]*\),.*/\1/'; }
# last FILE KEY: KEY of the last step line
last() { grep '"loss"' "$1" | tail -1 | sed "s/.*\"$2\": \([^,}]*\).*/\1/"; }

backends="ref cpu"
if [ "$TERN_REQUIRE_VULKAN" = 1 ] || "$tern" devices 2>/dev/null | grep -qi vulkan; then
	backends="ref cpu vulkan"
fi
for b in $backends; do
	for p in true false; do
		"$tern" train "$tmp/c.yaml" --set backend=$b --set pad_to_sequence_len=$p --set output_dir="$tmp/$b-$p" \
			>"$tmp/out-$b-$p" 2>"$tmp/err" && ok || bad "$b pad $p: $(cat "$tmp/err")"
	done
	grep -q "micro-batches padded to sequence_len" "$tmp/out-$b-true" &&
		grep -q "micro-batches padded to their longest row" "$tmp/out-$b-false" && ok || bad "$b: the banner does not say how batches are padded"
	losses "$tmp/$b-true/metrics.jsonl" >"$tmp/l1"
	losses "$tmp/$b-false/metrics.jsonl" >"$tmp/l2"
	[ "$(wc -l <"$tmp/l1")" = 10 ] && paste "$tmp/l1" "$tmp/l2" |
		awk '{ d = $1 - $2; if (d < 0) d = -d; if (d > 1e-6 * ($1 < 0 ? -$1 : $1)) exit 1 }' && ok ||
		bad "$b: losses differ: $(paste "$tmp/l1" "$tmp/l2" | tr '\n' ' ')"
	if [ "$b" != cpu ]; then
		cmp -s "$tmp/$b-true/adapter/adapter_model.safetensors" "$tmp/$b-false/adapter/adapter_model.safetensors" && ok ||
			bad "$b: the adapters of the padded and unpadded runs differ"
	fi
	for p in true false; do
		m=$tmp/$b-$p/metrics.jsonl
		n=$(last "$m" input_tokens)
		[ "$n" = 665 ] && ok || bad "$b pad $p: input_tokens $n after the epoch, want 665 (real tokens only)"
		# tokens/s over the run times its seconds is the real tokens (not the 960 padded).
		# elapsed_s has two decimals: the product lies in r·(e ± 0.005), widened by 10 % for the
		# timer; a run so short that the range holds both 665 and 960 cannot tell them apart
		r=$(last "$m" tokens_per_s) e=$(last "$m" elapsed_s)
		v=$(awk -v r="$r" -v e="$e" 'BEGIN { lo = r * (e - 0.005) * 0.9; hi = r * (e + 0.005) * 1.1
			real = lo < 665 && 665 < hi; pad = lo < 960 && 960 < hi
			print (real && pad) ? "short" : (real ? "ok" : "bad") }')
		case $v in
		ok) ok ;;
		short) echo "not run: $b pad $p: the run took ${e} s, too short to tell 665 tokens from 960" ;;
		*) bad "$b pad $p: tokens_per_s $r x elapsed_s $e is not about 665" ;;
		esac
	done
done

# the default: false without sample_packing, padded with it (axolotl's behaviour)
"$tern" train "$tmp/c.yaml" --set backend=cpu --set max_steps=1 --set output_dir="$tmp/d" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "micro-batches padded to their longest row" "$tmp/out" && ok || bad "default: $(cat "$tmp/err") $(grep data "$tmp/out")"
grep -q "^pad_to_sequence_len: false" "$tmp/d/config.yaml" && ok || bad "config.yaml: $(grep pad_to "$tmp/d/config.yaml")"
"$tern" train "$tmp/c.yaml" --set backend=cpu --set max_steps=1 --set sample_packing=true --set output_dir="$tmp/e" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "micro-batches padded to sequence_len" "$tmp/out" && ok || bad "packed: $(cat "$tmp/err") $(grep data "$tmp/out")"

echo "cli_pad: $pass passed, $fail failed"
[ "$fail" = 0 ]
