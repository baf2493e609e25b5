#!/bin/sh
# Mixtures of experts through the CLI, on a 6-layer stand-in of Mixtral-8x7B (tools/
# make_standin_model.py: hidden 64, 4 experts of width 128, top 2, Llama 2's tokenizer, bf16),
# LoRA on q/v and on the experts (lora_target_parameters), cpu backend, 2 steps:
#  1. a bitsandbytes 4-bit checkpoint of it (tern quantize --bnb-out: every expert with its
#     quant_state, the routers as stored) trains byte for byte like the bf16 model at nf4-dq;
#  2. streamed = resident byte for byte: every layer (with its experts) streamed from host memory,
#     then from the pack file on disk (device budget = the planner's smallest, host budget below or
#     above the layers), and the adapter equals the all-resident run's;
#  3. residency per expert: a 4-layer stand-in with 64 experts (top 2) trained all-resident, then
#     streamed from host and from disk, micro-batches of one row (~47 tokens: about 49 of 64
#     experts expected, below the 7/8 from which a layer loads whole): the adapters are equal, and
#     metrics.jsonl shows fewer expert bytes copied than whole-layer streaming would, none from
#     the all-resident run; the 4-expert runs of 2. (every expert expected) load layers whole.
# Exits 77 (not run) without python3 (the stand-in is written by a python3 script).
# Usage: cli_moe.sh TERN SOURCE_DIR
tern=$1
src=$2
if ! command -v python3 >/dev/null 2>&1; then
	echo "not run: python3 is missing (tools/make_standin_model.py)"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

python3 "$src/tools/make_standin_model.py" "$src/tests/data/hf_configs/mistralai/Mixtral-8x7B-v0.1/config.json" \
	"$src/tests/data/tokenizers/llama2" "$tmp/mix" 6 >/dev/null || { echo "FAIL: stand-in"; exit 1; }
i=0
while [ $i -lt 8 ]; do
	i=$((i + 1))
	printf '{"instruction": "Name colour number %d.", "input": "", "output": "Blue %d and green."}\n' $i $i >>"$tmp/d.jsonl"
done
cat >"$tmp/c.yaml" <<Y
base_model: $tmp/mix
adapter: qlora
lora_r: 4
lora_alpha: 8
lora_dropout: 0
lora_target_modules: [q_proj, v_proj]
lora_target_parameters: [mlp.experts.gate_up_proj, mlp.experts.down_proj]
datasets:
  - path: $tmp/d.jsonl
    type: alpaca
sequence_len: 80
micro_batch_size: 2
gradient_accumulation_steps: 1
max_steps: 2
learning_rate: 0.001
logging_steps: 1
backend: cpu
seed: 5
Y
train() { # NAME ARGS...: trains into $tmp/NAME
	name=$1
	shift
	"$tern" train "$tmp/c.yaml" --set output_dir="$tmp/$name" "$@" >"$tmp/$name.log" 2>&1 ||
		bad "$name: $(tail -3 "$tmp/$name.log")"
}
train all
grep -q "^step 2/2 " "$tmp/all.log" && ok || bad "all-resident run: $(tail -2 "$tmp/all.log")"

# 1. bitsandbytes 4-bit checkpoint
"$tern" quantize "$tmp/mix" --format nf4-dq --out "$tmp/q.pack" --bnb-out "$tmp/bnb" >/dev/null 2>"$tmp/err" ||
	bad "quantize --bnb-out: $(cat "$tmp/err")"
grep -q '"quant_method": "bitsandbytes"' "$tmp/bnb/config.json" && ok || bad "no quantization_config in the bnb directory"
train bnb --set base_model="$tmp/bnb" --set base_format=auto
cmp "$tmp/all/adapter/adapter_model.safetensors" "$tmp/bnb/adapter/adapter_model.safetensors" && ok ||
	bad "the bitsandbytes checkpoint trains differently from the nf4-dq run"

# 2. streaming: the smallest device budget (every layer streamed), host layers, then disk layers
"$tern" plan "$tmp/c.yaml" --device-memory 1000000 --host-memory 2GB >/dev/null 2>"$tmp/err"
min=$(sed -n 's/.*works, [0-9.]* [KMG]iB (\([0-9]*\) bytes.*/\1/p' "$tmp/err")
[ -n "$min" ] && ok || bad "tern plan gave no smallest budget: $(cat "$tmp/err")"
train host --set device_memory="$min" --set host_memory=2GB
grep -q "residency 0 device, 6 host, 0 disk layers" "$tmp/host.log" && ok || bad "host placement: $(grep residency "$tmp/host.log")"
train disk --set device_memory="$min" --set host_memory=1073800000
grep -q "residency 0 device, 0 host, 6 disk layers" "$tmp/disk.log" && ok || bad "disk placement: $(grep residency "$tmp/disk.log")"
for r in host disk; do
	cmp "$tmp/all/adapter/adapter_model.safetensors" "$tmp/$r/adapter/adapter_model.safetensors" && ok ||
		bad "experts streamed from $r: the adapter differs from the all-resident run's"
	python3 -c 'import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if "\"loss\"" in l]
assert rows and all(0 < r["stream_expert_bytes"] == r["stream_expert_whole_bytes"] for r in rows), rows' \
		"$tmp/$r/metrics.jsonl" && ok || bad "$r: 4 experts of top 2 should load whole: $(grep -o '"stream_expert[^,]*' "$tmp/$r/metrics.jsonl" | head -4)"
done

# 3. residency per expert
python3 "$src/tools/make_standin_model.py" "$src/tests/data/hf_configs/mistralai/Mixtral-8x7B-v0.1/config.json" \
	"$src/tests/data/tokenizers/llama2" "$tmp/x64" 4 64 >/dev/null ||
	bad "64-expert stand-in"
sed "s|^base_model: .*|base_model: $tmp/x64|; s|^micro_batch_size: .*|micro_batch_size: 1|" "$tmp/c.yaml" >"$tmp/x.yaml"
"$tern" plan "$tmp/x.yaml" --device-memory 1000000 --host-memory 2GB >"$tmp/xplan" 2>"$tmp/err"
xmin=$(sed -n 's/.*works, [0-9.]* [KMG]iB (\([0-9]*\) bytes.*/\1/p' "$tmp/err")
[ -n "$xmin" ] && ok || bad "tern plan gave no smallest budget for the 64-expert stand-in: $(cat "$tmp/err")"
"$tern" plan "$tmp/x.yaml" --device-memory "$xmin" --host-memory 2GB >"$tmp/xplan" 2>&1
grep -q "of 64 experts hit per layer and micro-batch" "$tmp/xplan" && ok || bad "tern plan shows no expected experts per step: $(cat "$tmp/xplan")"
for r in xall xhost xdisk; do
	case $r in
	xall) set -- ;;
	xhost) set -- --set device_memory="$xmin" --set host_memory=2GB ;;
	xdisk) set -- --set device_memory="$xmin" --set host_memory=1073800000 ;;
	esac
	"$tern" train "$tmp/x.yaml" --set output_dir="$tmp/$r" "$@" >"$tmp/$r.log" 2>&1 || bad "$r: $(tail -3 "$tmp/$r.log")"
done
grep -q "0 device, 4 host, 0 disk layers" "$tmp/xhost.log" && ok || bad "x64 host placement: $(grep residency "$tmp/xhost.log")"
grep -q "0 device, 0 host, 4 disk layers" "$tmp/xdisk.log" && ok || bad "x64 disk placement: $(grep residency "$tmp/xdisk.log")"
for r in xhost xdisk; do
	cmp "$tmp/xall/adapter/adapter_model.safetensors" "$tmp/$r/adapter/adapter_model.safetensors" && ok ||
		bad "experts streamed per expert from $r: the adapter differs from the all-resident run's"
	# every step: 0 < expert bytes < whole-layer expert bytes, and some experts hit in their slot
	python3 - "$tmp/$r/metrics.jsonl" <<'P' && ok || bad "$r: expert counters: $(grep stream_expert "$tmp/$r/metrics.jsonl" | head -2)"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"loss"' in l]
assert rows and all(0 < r["stream_expert_bytes"] < r["stream_expert_whole_bytes"] for r in rows), rows
assert all(r["stream_expert_loads"] > 0 and r["stream_expert_hits"] > 0 for r in rows), rows
print("%s: experts %d of %d bytes per step" % (sys.argv[1].split("/")[-2], rows[-1]["stream_expert_bytes"], rows[-1]["stream_expert_whole_bytes"]))
P
	grep -q "experts .* of .* hits)" "$tmp/$r.log" && ok || bad "$r: no expert figures in the progress line: $(grep '^step' "$tmp/$r.log")"
done
grep -q '"stream_expert_bytes": 0, "stream_expert_whole_bytes": 0' "$tmp/xall/metrics.jsonl" && ok ||
	bad "all-resident run counts streamed experts"
# LoRA on the router (lora_target_modules: gate): the requests tern cannot honour fail in one line
g=$src/tests/data/golden
refused() { # name, expected text, tern train arguments...
	n=$1 want=$2
	shift 2
	(cd "$src" && "$tern" train "$@" --set output_dir="$tmp/r_$n" --set backend=cpu) >/dev/null 2>"$tmp/r_$n.log" &&
		{ bad "router $n: accepted"; return; }
	[ "$(grep -c . "$tmp/r_$n.log")" = 1 ] && grep -q "$want" "$tmp/r_$n.log" && ok ||
		bad "router $n: $(cat "$tmp/r_$n.log")"
}
refused per_expert "writes the router's LoRA only in PEFT's layout" tests/data/golden/mixtral_router/config.yaml \
	--set lora_expert_layout=per_expert
refused dropout "without dropout (set lora_dropout: 0)" tests/data/golden/mixtral_router/config.yaml \
	--set lora_dropout=0.1
refused dense "is not a mixture of experts" tests/data/golden/llama/config.yaml \
	--set "lora_target_modules=[q_proj, gate]"
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
