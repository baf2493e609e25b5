#!/bin/sh
# tern generate and tern chat from the command line (issue 13): --print-ids gives the ids
# transformers generates (one JSON array), a text prompt streams text, --prompts FILE.jsonl gives
# one JSON line per prompt, --stop cuts the text, --chat and `tern chat` go through a chat
# template, and bad input (--ids, a missing adapter, a text prompt without a tokenizer) fails with
# one line. Usage: cli_generate.sh TERN DATA_DIR
tern=$1
data=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama
# expected ids of "llama+adapter" (tests/data/generate/expected.jsonl)
want='[57, 59, 126, 126, 126, 52, 52, 52, 52, 52, 52, 52, 119, 52, 11, 23, 9, 11, 23, 19]'

got=$("$tern" generate "$g/model" --adapter "$g/adapter_final" --ids 1,5,17,99,3,42,7 --max-new-tokens 20 \
	--print-ids --backend cpu 2>"$tmp/err")
[ "$got" = "$want" ] && ok || bad "--print-ids: got '$got' want '$want' ($(cat "$tmp/err"))"
grep -q "generating with .* + adapter" "$tmp/err" && ok || bad "banner: $(cat "$tmp/err")"

# a text prompt streams text (one line of it here) and exits 0
"$tern" generate "$g/model" --prompt "hello world" --max-new-tokens 8 --backend cpu >"$tmp/out" 2>"$tmp/err" &&
	[ -s "$tmp/out" ] && ok || bad "--prompt: $(cat "$tmp/err")"

# --stop: the text ends before the stop string; the text without it is a prefix of the full one
full=$("$tern" generate "$g/model" --adapter "$g/adapter_final" --prompt "hello world" --max-new-tokens 16 \
	--backend cpu 2>/dev/null)
stop=$(printf '%s' "$full" | cut -c3-4)
cut=$("$tern" generate "$g/model" --adapter "$g/adapter_final" --prompt "hello world" --max-new-tokens 16 \
	--stop "$stop" --backend cpu 2>/dev/null)
case "$full" in
"$cut"*) [ ${#cut} -lt ${#full} ] && case "$cut" in *"$stop"*) bad "--stop '$stop': '$cut' holds it" ;; *) ok ;; esac ||
	bad "--stop '$stop': '$cut' not shorter than '$full'" ;;
*) bad "--stop '$stop': '$cut' is not a prefix of '$full'" ;;
esac

# --prompts: one JSON line per prompt, ids as with --ids
printf '{"input_ids": [1, 5, 17, 99, 3, 42, 7]}\n\n{"prompt": "hello world"}\n' >"$tmp/p.jsonl"
"$tern" generate "$g/model" --adapter "$g/adapter_final" --prompts "$tmp/p.jsonl" --max-new-tokens 20 \
	--backend cpu >"$tmp/out" 2>"$tmp/err" || bad "--prompts: $(cat "$tmp/err")"
[ "$(wc -l <"$tmp/out")" -eq 2 ] && ok || bad "--prompts: $(wc -l <"$tmp/out") lines"
head -1 "$tmp/out" | grep -q "\"ids\":\[$(echo "$want" | tr -d '[] ')\]" && ok || bad "--prompts line 1: $(head -1 "$tmp/out")"
sed -n 2p "$tmp/out" | grep -q '^{"line":3,"completion":".*","ids":\[[0-9,]*\],"finish":"length"}$' && ok ||
	bad "--prompts line 2: $(sed -n 2p "$tmp/out")"

# a chat template: the golden llama with a small Jinja template beside its tokenizer
mkdir "$tmp/m"
for f in config.json model.safetensors tokenizer.json; do ln -s "$g/model/$f" "$tmp/m/$f"; done
cat >"$tmp/m/tokenizer_config.json" <<'J'
{"chat_template": "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"}
J
"$tern" generate "$tmp/m" --adapter "$g/adapter_final" --prompt "hi" --chat --max-new-tokens 4 --print-ids \
	--backend cpu >"$tmp/out" 2>"$tmp/err" && grep -q '^\[[0-9, ]*\]$' "$tmp/out" && ok ||
	bad "--chat: $(cat "$tmp/out" "$tmp/err")"
printf 'hi\n/reset\nhow are you\n' | "$tern" chat "$tmp/m" --system "be brief" --max-new-tokens 4 \
	--backend cpu >"$tmp/out" 2>"$tmp/err" && [ "$(wc -l <"$tmp/out")" -eq 2 ] && ok ||
	bad "chat: $(cat "$tmp/out" "$tmp/err")"
# without a template: --chat says so in one line
"$tern" generate "$g/model" --prompt "hi" --chat --backend cpu >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "no chat template" "$tmp/err" && [ "$(grep -vc 'generating with' "$tmp/err")" -eq 1 ] && ok ||
	bad "--chat without a template: $(cat "$tmp/err")"

# bad input: one line each (exit 2 for usage, 1 for the library's refusals)
"$tern" generate "$g/model" --ids 5,x,9 --backend cpu >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "not a comma-separated list of token ids" "$tmp/err" && ok ||
	bad "--ids 5,x,9: $(cat "$tmp/err")"
"$tern" generate "$g/model" --ids 5 --prompt hi >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "exactly one of" "$tmp/err" && ok || bad "--ids and --prompt: $(cat "$tmp/err")"
"$tern" generate "$g/model" --adapter "$tmp/nope" --ids 5 --backend cpu >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && [ "$(wc -l <"$tmp/err")" -eq 1 ] && grep -q "no such directory" "$tmp/err" && ok ||
	bad "missing adapter: $(cat "$tmp/err")"
"$tern" generate "$data/models/llama6" --prompt hi --backend cpu >/dev/null 2>"$tmp/err"
[ $? -eq 1 ] && grep -q "no tokenizer.json" "$tmp/err" && [ "$(grep -vc 'generating with' "$tmp/err")" -eq 1 ] && ok ||
	bad "no tokenizer: $(cat "$tmp/err")"
"$tern" generate "$g/model" --ids 5 --temperature -1 >/dev/null 2>"$tmp/err"
[ $? -eq 2 ] && grep -q "temperature needs a number" "$tmp/err" && ok || bad "--temperature -1: $(cat "$tmp/err")"

# eval_prompts during training: completions at steps 0, 2 and 4 in <output_dir>/eval_prompts, the
# last equal to tern generate with the adapter the run wrote, the first to the starting adapter
sed "s#tests/data/#$data/#; s#output_dir: .*#output_dir: $tmp/run#" "$g/config.yaml" >"$tmp/c.yaml"
cat >>"$tmp/c.yaml" <<'Y'
max_steps: 4
eval_steps: 2
eval_max_new_tokens: 6
eval_prompts:
  - hello world
  - [{role: user, content: hi}]
chat_template: jinja
chat_template_jinja: "{% for m in messages %}<{{ m.role }}>{{ m.content }}\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
backend: cpu
Y
sed -i 's/^max_steps: 10$//' "$tmp/c.yaml"
if "$tern" train "$tmp/c.yaml" >"$tmp/train.out" 2>&1; then
	for s in 0 2 4; do
		[ "$(wc -l <"$tmp/run/eval_prompts/step_$s.jsonl")" -eq 2 ] && ok || bad "eval_prompts/step_$s.jsonl"
	done
	grep -q '^eval prompt 1 (step 2): ' "$tmp/train.out" && ok || bad "eval prompt lines: $(cat "$tmp/train.out")"
	last=$(head -1 "$tmp/run/eval_prompts/step_4.jsonl" | sed 's/.*"ids":\(\[[0-9,]*\]\).*/\1/')
	gen=$("$tern" generate "$g/model" --adapter "$tmp/run/adapter" --prompt "hello world" --max-new-tokens 6 \
		--print-ids --backend cpu 2>/dev/null | tr -d ' ')
	[ "$last" = "$gen" ] && ok || bad "eval_prompts at the last step $last, tern generate with the adapter $gen"
	first=$(head -1 "$tmp/run/eval_prompts/step_0.jsonl" | sed 's/.*"ids":\(\[[0-9,]*\]\).*/\1/')
	gen=$("$tern" generate "$g/model" --adapter "$g/adapter_init" --prompt "hello world" --max-new-tokens 6 \
		--print-ids --backend cpu 2>/dev/null | tr -d ' ')
	[ "$first" = "$gen" ] && ok || bad "eval_prompts at step 0 $first, tern generate with adapter_init $gen"
	ls "$tmp/run/eval_prompts" | grep -q tmp && bad "a temporary file left in eval_prompts" || ok
else
	bad "train with eval_prompts: $(tail -3 "$tmp/train.out")"
fi

echo "cli_generate: $pass passed, $fail failed"
[ $fail -eq 0 ]
