#!/bin/sh
# lora_modules_to_save end to end on the golden llama_save case (CPU backend): the adapter carries
# the modules trained in full as PEFT saves them, checkpoints carry their AdamW moments and a
# resumed run ends byte-identical to the uninterrupted one, an adapter's own modules_to_save
# (lora_model_dir) is trained without the key, a checkpoint that does not match the run is refused
# with one line, tern eval reads such an adapter, and tern plan counts the fp32 copies.
# Usage: cli_modsave.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama_save
sed -e "s|tests/data/golden/llama_save|$g|g" "$g/config.yaml" >"$tmp/c.yaml"
set_common="--set backend=cpu --set max_steps=6"
E=base_model.model.model.embed_tokens.weight
H=base_model.model.lm_head.weight
# has FILE NAME: the safetensors header (JSON at the start of the file) names tensor NAME
has() { head -c 65536 "$1" | grep -a -q "\"$2\""; }

# 1. the run: both modules in the adapter (weights) and in checkpoint-4 (weights, moments)
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/full" --set save_steps=4 >"$tmp/out" 2>"$tmp/err" &&
	ok || bad "train: $(cat "$tmp/err")"
a=$tmp/full/adapter
has "$a/adapter_model.safetensors" "$E" && has "$a/adapter_model.safetensors" "$H" && ok ||
	bad "the adapter lacks $E / $H"
tr -d ' \n' <"$a/adapter_config.json" | grep -q '"modules_to_save":\["embed_tokens","lm_head"\]' && ok ||
	bad "adapter_config.json: $(grep -A3 modules_to_save "$a/adapter_config.json")"
o=$tmp/full/checkpoint-4/optimizer.safetensors
has "$o" "$E.exp_avg" && has "$o" "$E.exp_avg_sq" && has "$o" "$H.exp_avg" && has "$o" "$H.exp_avg_sq" && ok ||
	bad "checkpoint-4's optimizer.safetensors lacks the moments of the modules trained in full"
! cmp -s "$a/adapter_model.safetensors" "$g/adapter_init/adapter_model.safetensors" && ok || bad "nothing trained"

# 2. resume from checkpoint-4: the same bytes as the uninterrupted run
mkdir -p "$tmp/b" && cp -r "$tmp/full/checkpoint-4" "$tmp/b/" && ok || bad "copy checkpoint-4"
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/b" --set save_steps=4 --set resume_from_checkpoint=auto \
	>"$tmp/out" 2>"$tmp/err" && grep -q "resuming from .*checkpoint-4 at step 4 of 6" "$tmp/out" && ok ||
	bad "resume: $(cat "$tmp/err") $(head -c 1500 "$tmp/out")"
cmp "$tmp/full/adapter/adapter_model.safetensors" "$tmp/b/adapter/adapter_model.safetensors" && ok ||
	bad "the resumed adapter differs from the uninterrupted one"

# 3. the adapter's modules_to_save without the key: trained all the same, and written into the
#    resolved config
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/n" --set lora_modules_to_save=null >"$tmp/out" 2>"$tmp/err" &&
	ok || bad "train without the key: $(cat "$tmp/err")"
cmp "$tmp/full/adapter/adapter_model.safetensors" "$tmp/n/adapter/adapter_model.safetensors" && ok ||
	bad "the adapter's modules_to_save did not give the same run as the key"
grep -q "^lora_modules_to_save: \[embed_tokens, lm_head\]" "$tmp/n/config.yaml" && ok ||
	bad "config.yaml: $(grep lora_modules_to_save "$tmp/n/config.yaml")"

# 4. a checkpoint with modules_to_save resumed by a run without them: one line, exit 1
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/b" --set lora_modules_to_save=null --set lora_model_dir=null \
	--set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err"
rc=$?
[ $rc = 1 ] && [ "$(wc -l <"$tmp/err")" = 1 ] && grep -q "modules_to_save has embed_tokens but the run does not train it" "$tmp/err" &&
	ok || bad "mismatched checkpoint: rc $rc: $(cat "$tmp/err")"

# 5. tern eval of the adapter (modules_to_save read back) differs from the base
"$tern" eval "$tmp/c.yaml" $set_common --set output_dir="$tmp/full" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^  + adapter  *loss" "$tmp/out" && ok || bad "eval: $(cat "$tmp/err" "$tmp/out")"

# 6. tern plan: the fp32 copies of a Llama-3-8B embed_tokens and lm_head with grads and AdamW:
#    2 x 128256 x 4096 x 4 bytes x 4 = 15.66 GiB, and a total that includes them
{
	printf 'base_model: %s\nadapter: qlora\nlora_r: 16\nlora_alpha: 32\nlora_target_linear: true\n' "$data/plan/meta-llama-3-8b"
	printf 'datasets:\n  - path: nowhere.jsonl\n    type: alpaca\nsequence_len: 2048\nmicro_batch_size: 1\n'
	printf 'gradient_checkpointing: true\ndevice_memory: 24GB\nhost_memory: 64GB\n'
} >"$tmp/p.yaml"
"$tern" plan "$tmp/p.yaml" >"$tmp/p0" 2>"$tmp/err" && ok || bad "plan: $(cat "$tmp/err")"
"$tern" plan "$tmp/p.yaml" --set "lora_modules_to_save=[embed_tokens, lm_head]" >"$tmp/p1" 2>"$tmp/err" && ok ||
	bad "plan with modules_to_save: $(cat "$tmp/err")"
grep -q "^  embed_tokens, lm_head in full (f32, grads, AdamW) *15.66 GiB$" "$tmp/p1" && ok ||
	bad "plan: $(cat "$tmp/p1")"
t0=$(grep "^  total" "$tmp/p0" | awk '{print $2}')
t1=$(grep "^  total" "$tmp/p1" | awk '{print $2}')
awk -v a="$t0" -v b="$t1" 'BEGIN { exit !(b - a > 15.6 && b - a < 15.7) }' && ok || bad "plan totals $t0 -> $t1 GiB"
"$tern" plan "$tmp/p.yaml" --set "lora_modules_to_save=[lm_head]" >"$tmp/p2" 2>"$tmp/err" &&
	grep -q "^  lm_head in full (f32, grads, AdamW) *7.83 GiB$" "$tmp/p2" && ok || bad "plan lm_head: $(cat "$tmp/err" "$tmp/p2")"

echo "cli_modsave: $pass passed, $fail failed"
[ "$fail" = 0 ]
