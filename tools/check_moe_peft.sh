#!/bin/sh
# PEFT loads tern's MoE adapters and gives tern's eval loss (issue 12). For each golden MoE case
# (tests/data/golden/mixtral, qwen3_moe: LoRA on the attention; mixtral_exp, qwen3_moe_exp: also on
# the experts, PEFT target_parameters; tools/make_golden_moe.py): `tern train` its config.yaml (10
# steps), `tern eval` base and adapter on the 40 rows, then
# tools/check_adapter.py (transformers 5 + PeftModel.from_pretrained, float32) on the same rows;
# prints both losses and their relative difference, fails when it exceeds 1e-5.
# Usage: tools/check_moe_peft.sh [TERN] (default build/tern), from the repository root.
tern=${1:-build/tern}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
rc=0
for c in mixtral qwen3_moe mixtral_exp qwen3_moe_exp mixtral_aux qwen3_moe_aux mixtral_router qwen3_moe_router; do
	d=tests/data/golden/$c
	"$tern" train "$d/config.yaml" --set output_dir="$tmp/$c" --set backend=cpu >"$tmp/train.log" 2>&1 ||
		{ echo "$c: tern train failed: $(tail -2 "$tmp/train.log")"; rc=1; continue; }
	t=$("$tern" eval "$d/config.yaml" --adapter "$tmp/$c/adapter" --set backend=cpu 2>/dev/null |
		sed -n 's/^  + adapter *loss \([0-9.]*\).*/\1/p')
	p=$(python3 tools/check_adapter.py --model "$d/model" --adapter "$tmp/$c/adapter" \
		--data "$d/data.safetensors" --rows 0:40 2>/dev/null | sed -n 's/^ *"loss": \([0-9.]*\),*/\1/p')
	echo "$c: tern eval loss $t, PEFT (PeftModel.from_pretrained on tern's adapter) $p" \
		"$(python3 -c "import sys; t, p = float(sys.argv[1]), float(sys.argv[2]); print('rel %.2e' % (abs(t - p) / p)); sys.exit(abs(t - p) / p > 1e-5)" "$t" "$p")" ||
		rc=1
done
exit $rc
