#!/bin/sh
# axolotl's example configs (tests/data/axolotl) as a user runs them: base_model is the config's
# own Hub id, found in a Hugging Face cache (HF_HUB_CACHE, offline, built by
# tools/make_hf_cache.sh), and only the dataset's path is changed (--set datasets.0.path=, to a
# small local file in the format of the config's own `type`: alpaca rows, or messages).
#  1. `tern plan` on the real config.json of each base model: exit 0, a verdict, and stderr only
#     one-line `tern: note:` / `tern: warning:` lines. --device-memory 80GB --host-memory 64GB
#     describe the machine (an 80 GB GPU), not the config.
#  2. `tern train` one step on a tiny stand-in of each base model (tools/make_standin_model.py:
#     the same model_type, vocabulary and special tokens, the family's real tokenizer, hidden 64,
#     2 layers, random bf16 weights), in a scratch working directory so the config's relative
#     output_dir lands there: exit 0, 'step 1/1', an adapter, notes only on stderr, none twice
#     (tern checks the config again after --set).
#     Overrides besides the dataset path, the same for every config, for a quick CPU step:
#       max_steps=1      one step
#       sequence_len=64  the configs' 1024..8192 with sample packing pad every row to that
#                        length: minutes per step on 2 CPU cores with 32k..152k-token vocabularies
#       backend=cpu      lavapipe would first compile its shaders (about 50 s on 2 cores)
#     Mixtral (MoE, issue 12) trains like the others: lora_target_linear there means LoRA on
#     q/k/v/o_proj (a one-line note says so; the experts would take lora_target_parameters).
# Exits 77 (not run) without python3 (the stand-ins are written by a python3 script).
# Usage: cli_axolotl_cache.sh TERN SOURCE_DIR
tern=$(cd "$(dirname "$1")" && pwd)/$(basename "$1") # absolute: train runs in scratch directories
src=$(cd "$2" && pwd)
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
export HF_HUB_OFFLINE=1
unset HF_HOME HF_TOKEN
notes_only() { # NAME WHAT: stderr holds only one-line notes and warnings
	grep -v "^tern: note: \|^tern: warning: " "$tmp/err" >"$tmp/other"
	[ ! -s "$tmp/other" ] && ok || bad "$1 $2: stderr is one-line notes only: $(cat "$tmp/other")"
	[ -z "$(sort "$tmp/err" | uniq -d)" ] && ok || bad "$1 $2: a note twice: $(sort "$tmp/err" | uniq -d)"
}

# local data in the formats the configs' types read: two rows (one for training, one for a
# val_set_size fraction); five of the FineTome-like rows, since qwen3_32b-qlora.yaml keeps
# split: train[:20%] (one row)
i=0
while [ $i -lt 5 ]; do
	i=$((i + 1))
	if [ $i -le 2 ]; then
		printf '{"instruction": "Name a colour %d.", "input": "", "output": "Blue %d."}\n' $i $i >>"$tmp/alpaca.jsonl"
		printf '{"messages": [{"role": "user", "content": "Name a colour %d."}, {"role": "assistant", "content": "Blue %d."}]}\n' $i $i >>"$tmp/messages.jsonl"
	fi
	printf '{"conversations": [{"from": "human", "value": "Name a colour %d."}, {"from": "gpt", "value": "Blue %d."}]}\n' $i $i >>"$tmp/conversations.jsonl"
done
data_for() { # CONFIG: the local file for its datasets.0
	if grep -q "field_messages: conversations" "$1"; then
		echo "$tmp/conversations.jsonl"
	elif grep -q "^ *type: chat_template" "$1"; then
		echo "$tmp/messages.jsonl"
	else
		echo "$tmp/alpaca.jsonl"
	fi
}

# 1. plan with the real config.json of each base model
tools=$src/tools
sh "$tools/make_hf_cache.sh" "$tmp/hub" >/dev/null || { echo "FAIL: make_hf_cache.sh"; exit 1; }
export HF_HUB_CACHE="$tmp/hub"
for f in "$src"/tests/data/axolotl/*.y*ml; do
	name=$(basename "$f")
	"$tern" plan "$f" --set datasets.0.path="$(data_for "$f")" --device-memory 80GB --host-memory 64GB \
		>"$tmp/out" 2>"$tmp/err"
	rc=$?
	[ $rc = 0 ] && grep -q "^verdict: " "$tmp/out" && ok || bad "$name plans: exit $rc, $(cat "$tmp/err")"
	# the real config.json from the cache: its layer count
	id=$(sed -n 's/^base_model: *//p' "$f")
	layers=$(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$src/tests/data/hf_configs/$id/config.json")
	grep -q "^model .*, $layers layers" "$tmp/out" && ok || bad "$name plans $id's $layers layers: $(grep "^model" "$tmp/out")"
	notes_only "$name" plans
done

# 2. train a step on a stand-in of each base model, in a second cache
for f in "$src"/tests/data/axolotl/*.y*ml; do
	id=$(sed -n 's/^base_model: *//p' "$f")
	[ -d "$tmp/standin/$id" ] && continue
	case $id in
	*Llama-3*) tok=llama3 ;;
	*Llama-2* | mistralai/*) tok=llama2 ;; # Mistral and Mixtral: Llama 2's 32000-token BPE
	Qwen/*) tok=qwen3 ;;                   # Qwen2 and Qwen3 share one tokenizer
	*) bad "$id: no tokenizer for a stand-in" && continue ;;
	esac
	python3 "$tools/make_standin_model.py" "$src/tests/data/hf_configs/$id/config.json" \
		"$src/tests/data/tokenizers/$tok" "$tmp/standin/$id" >/dev/null || bad "stand-in of $id"
done
sh "$tools/make_hf_cache.sh" "$tmp/hub2" "$tmp/standin" >/dev/null || { echo "FAIL: make_hf_cache.sh"; exit 1; }
export HF_HUB_CACHE="$tmp/hub2"
for f in "$src"/tests/data/axolotl/*.y*ml; do
	name=$(basename "$f")
	mkdir -p "$tmp/run/$name"
	(cd "$tmp/run/$name" && exec "$tern" train "$f" --set datasets.0.path="$(data_for "$f")" \
		--set max_steps=1 --set sequence_len=64 --set backend=cpu) >"$tmp/out" 2>"$tmp/err"
	rc=$?
	out=$(sed -n 's/^output_dir: *//p' "$f")
	# the stand-in from the cache: the Hub id, hidden 64, the real vocabulary
	id=$(sed -n 's/^base_model: *//p' "$f")
	vocab=$(sed -n 's/.*"vocab_size": *\([0-9]*\).*/\1/p' "$src/tests/data/hf_configs/$id/config.json")
	grep -q "^  model  *$id (.* D=64 .* V=$vocab)" "$tmp/out" && ok || bad "$name trains $id: $(grep "^  model" "$tmp/out")"
	[ $rc = 0 ] && grep -q "^step 1/1 " "$tmp/out" &&
		[ -f "$tmp/run/$name/$out/adapter/adapter_model.safetensors" ] && ok ||
		bad "$name trains a step: exit $rc, $(grep -v "^tern: note: " "$tmp/err") $(tail -2 "$tmp/out")"
	notes_only "$name" trains
done
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
