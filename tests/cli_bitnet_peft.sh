#!/bin/sh
# PEFT loads tern's BitNet adapter on transformers' BitNet model with the loss tern gives it
# (issue 15). On the golden BitNet model (tests/data/golden/bitnet/model: config.json's
# quantization_config {quant_method: bitnet, linear_class: autobitlinear, quantization_mode: online},
# base_format ternary) `tern train` (cpu) writes two adapters: the golden config's 10 steps from
# PEFT's adapter_init, and 20 steps from tern's own initialisation (no lora_model_dir). Asserted
# without Python:
#   - each adapter_model.safetensors header (tensor names, dtypes, shapes, offsets, metadata) is
#     byte-identical to the one PEFT's save_pretrained wrote for this model (golden adapter_final);
#   - each adapter_config.json holds PEFT's lines (keys and values; target_modules as a set);
#   - `tern eval` (cpu, ref, and vulkan where a device is) prints a base loss and an adapter loss
#     for the 40 rows.
# With python3 + torch + transformers + peft (tools/check_adapter.py: AutoModelForCausalLM makes the
# 14 projections AutoBitLinear online, PeftModel.from_pretrained wraps all 14): the losses of the base
# and of both adapters on the same 40 rows against tern eval's, relative difference at most 1e-3.
# They are not bit-equal: an 8-bit activation level flips where x · 127 / absmax lies within fp32
# rounding of a half, and tern's fp32 sums differ from PyTorch's in the last bits (PyTorch's own
# float64 run flips the same rows; tests/data/golden/README.md, "PEFT on tern's BitNet adapter").
# Without those Python packages that part prints "not run". Usage: cli_bitnet_peft.sh TERN SOURCE_DIR
tern=$1
src=$2
cd "$src" || exit 1
# a model of 53 KiB: one thread, so that OpenMP's spinning on a busy 2-core machine does not turn
# 0.1 s of training into 5 s (the result is the same)
export OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=tests/data/golden/bitnet
cfg=$g/config.yaml

# the safetensors header: 8 bytes of little-endian length, then that many bytes of JSON
header() {
	n=$(od -An -t u8 -N8 "$1" | tr -d ' ')
	tail -c +9 "$1" | head -c "$n"
}
# adapter_config.json as a set of lines (target_modules' order is free: PEFT keeps a set)
config_lines() { sed 's/,$//' "$1" | sort; }
# tern eval's losses: "BASE ADAPTER"
eval_losses() {
	"$tern" eval "$cfg" --adapter "$1" --set backend="$2" 2>"$tmp/eval.err" |
		sed -n 's/^  base *loss \([0-9.]*\).*/\1/p;s/^  + adapter *loss \([0-9.]*\).*/\1/p' | tr '\n' ' '
}
rel() { awk -v a="$1" -v b="$2" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; printf "%.1e", d }'; }
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN { d = (a - b) / b; if (d < 0) d = -d; exit !(d <= t) }'; }

backends="cpu ref"
if "$tern" devices 2>/dev/null | grep -q '^vulkan 0:'; then
	backends="$backends vulkan"
else
	echo "tern eval on vulkan: not run (no Vulkan device)"
fi

header "$g/adapter_final/adapter_model.safetensors" >"$tmp/peft.hdr"
config_lines "$g/adapter_final/adapter_config.json" >"$tmp/peft.cfg"
for a in init own; do
	if [ $a = init ]; then
		set -- --set max_steps=10
	else
		set -- --set lora_model_dir= --set max_steps=20
	fi
	if ! "$tern" train "$cfg" --set output_dir="$tmp/$a" --set backend=cpu "$@" >"$tmp/train.log" 2>&1; then
		bad "$a: tern train: $(tail -2 "$tmp/train.log")"
		continue
	fi
	ad=$tmp/$a/adapter
	header "$ad/adapter_model.safetensors" | cmp -s - "$tmp/peft.hdr" && ok ||
		bad "$a: adapter_model.safetensors header differs from PEFT's ($g/adapter_final)"
	config_lines "$ad/adapter_config.json" | cmp -s - "$tmp/peft.cfg" && ok ||
		bad "$a: adapter_config.json differs from PEFT's: $(config_lines "$ad/adapter_config.json" | diff - "$tmp/peft.cfg" | tr '\n' ' ')"
	for b in $backends; do
		l=$(eval_losses "$ad" $b)
		set -- $l
		if [ $# = 2 ]; then
			ok
			echo "$a: tern eval ($b): base $1, + adapter $2"
			echo "$1 $2" >"$tmp/$a.$b"
		else
			bad "$a: tern eval ($b) printed no losses: $(tail -2 "$tmp/eval.err")"
		fi
	done
done

if ! python3 -c "import torch, transformers, peft, safetensors" >/dev/null 2>&1; then
	echo "PEFT on tern's adapters: not run (python3 with torch, transformers, peft, safetensors is missing)"
else
	# PEFT's loss of base (--no-adapter) and of each adapter, on the 40 rows
	peft_loss() {
		python3 tools/check_adapter.py --model "$g/model" --data "$g/data.safetensors" --rows 0:40 "$@" \
			2>"$tmp/py.err" >"$tmp/py.json"
		# no loss (a failure below) unless all 14 projections are online AutoBitLinears and,
		# with an adapter, PEFT wrapped all 14
		grep -q '"autobitlinear_online": 14' "$tmp/py.json" || return
		grep -q '"lora_wrapped": 14' "$tmp/py.json" || grep -q '"adapter": null' "$tmp/py.json" || return
		sed -n 's/^ *"loss": \([0-9.]*\),*/\1/p' "$tmp/py.json"
	}
	pb=$(peft_loss --adapter none --no-adapter)
	for a in init own; do
		[ -f "$tmp/$a.cpu" ] || continue
		pa=$(peft_loss --adapter "$tmp/$a/adapter")
		if [ -z "$pb" ] || [ -z "$pa" ]; then
			bad "$a: tools/check_adapter.py gave no loss (or not on 14 AutoBitLinears wrapped by PEFT): $(tail -3 "$tmp/py.err" "$tmp/py.json")"
			continue
		fi
		for b in $backends; do
			[ -f "$tmp/$a.$b" ] || continue
			set -- $(cat "$tmp/$a.$b")
			echo "$a ($b): base tern $1 PEFT $pb rel $(rel "$1" "$pb"); + adapter tern $2 PEFT $pa rel $(rel "$2" "$pa")"
			within "$1" "$pb" 1e-3 && within "$2" "$pa" 1e-3 && ok ||
				bad "$a ($b): tern's loss differs from PEFT's by more than 1e-3 relative"
		done
	done
fi
echo "cli_bitnet_peft: $pass passed, $fail failed"
[ $fail = 0 ]
