#!/bin/sh
# tern train / tern eval end to end on the golden llama case (CPU backend: small and quick):
# outputs, checkpoints and save_total_limit, a resumed run whose adapter is byte-identical to the
# uninterrupted one, max_time, bad configs/datasets failing with one line and no output dir, and
# --profile (CPU, and Vulkan when a device is there or TERN_REQUIRE_VULKAN=1).
# Usage: cli_train.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama
# the golden config names paths from the repository root; rewrite them for this run
sed -e "s|tests/data/golden/llama|$g|g" "$g/config.yaml" >"$tmp/c.yaml"
set_common="--set backend=cpu"

# 1. a full run with checkpoints every 4 steps, keeping the last one
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/a" --set save_steps=4 --set save_total_limit=1 \
	>"$tmp/out" 2>"$tmp/err" && ok || bad "train: $(cat "$tmp/err")"
test -s "$tmp/a/adapter/adapter_model.safetensors" && test -s "$tmp/a/adapter/adapter_config.json" && ok ||
	bad "no adapter in $tmp/a/adapter"
test -s "$tmp/a/config.yaml" && ok || bad "no resolved config.yaml"
n=$(grep -c '"loss"' "$tmp/a/metrics.jsonl")
[ "$n" = 10 ] && ok || bad "metrics.jsonl has $n step lines, expected 10"
ls "$tmp/a" | grep -q '^checkpoint-8$' && ! ls "$tmp/a" | grep -q '^checkpoint-4$' && ok ||
	bad "save_total_limit 1: $(ls "$tmp/a")"
grep -q "^step 10/10  loss" "$tmp/out" && ok || bad "no progress lines: $(head -c 2000 "$tmp/out")"
grep -q "lr 0.000e+00" "$tmp/out" && ok || bad "warmup step 1 should use lr 0"
! grep -q "^profile" "$tmp/out" && ! grep -q '"profile_' "$tmp/a/metrics.jsonl" && ok ||
	bad "a run without --profile printed or logged a profile"

# 2. resume: a run that stopped after checkpoint-4 continues to the same bytes (with LoRA dropout:
#    the masks of the remaining steps must be the same too)
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/full" --set save_steps=4 --set lora_dropout=0.1 >/dev/null 2>"$tmp/err" &&
	ok || bad "train full: $(cat "$tmp/err")"
mkdir -p "$tmp/b" && cp -r "$tmp/full/checkpoint-4" "$tmp/b/" && ok || bad "copy checkpoint-4"
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/b" --set save_steps=4 --set lora_dropout=0.1 --set resume_from_checkpoint=auto \
	>"$tmp/out" 2>"$tmp/err" && grep -q "resuming from .*checkpoint-4 at step 4 of 10" "$tmp/out" && ok ||
	bad "resume: $(cat "$tmp/err") $(head -c 1500 "$tmp/out")"
cmp "$tmp/full/adapter/adapter_model.safetensors" "$tmp/b/adapter/adapter_model.safetensors" && ok ||
	bad "the resumed adapter differs from the uninterrupted one"
cmp "$tmp/full/checkpoint-8/optimizer.safetensors" "$tmp/b/checkpoint-8/optimizer.safetensors" && ok ||
	bad "the resumed run's checkpoint-8 moments differ"

# 3. max_time: the schedule is planned for what fits and the run stops cleanly
#    (normally the plan line after 3 steps; on a machine so loaded that the first steps take the
#    whole budget, the stop line alone)
"$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/t" --set max_steps=100000 --set max_time=6s \
	>"$tmp/out" 2>"$tmp/err" && grep -q "^max_time 6s: .* s/step, planning [0-9]* steps instead of 100000\|^max_time reached" "$tmp/out" &&
	test -s "$tmp/t/adapter/adapter_model.safetensors" && ! grep -q "^step 100000/" "$tmp/out" && ok ||
	bad "max_time: $(cat "$tmp/err") $(tail -5 "$tmp/out")"

# 4. tern eval: base and base + adapter on the data
"$tern" eval "$tmp/c.yaml" $set_common --set output_dir="$tmp/a" >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^  base  *loss [0-9.]*  perplexity" "$tmp/out" && grep -q "^  + adapter  *loss" "$tmp/out" && ok ||
	bad "eval: $(cat "$tmp/err" "$tmp/out")"

# 5. bad input: exit 1, one line on stderr naming the problem, no output directory
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [1, "x"]}\n' >"$tmp/bad.jsonl"
check_bad() { # name, expected text, args...
	name=$1
	want=$2
	shift 2
	rm -rf "$tmp/o"
	"$tern" train "$@" $set_common --set output_dir="$tmp/o" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" = 1 ] && [ "$lines" = 1 ] && grep -q "$want" "$tmp/err" && [ ! -e "$tmp/o" ]; then ok; else
		bad "$name: exit $rc, $lines stderr lines, output dir $(test -e "$tmp/o" && echo exists || echo absent): $(cat "$tmp/err")"
	fi
}
check_bad "unknown key" "lora_rank" "$tmp/c.yaml" --set lora_rank=8
check_bad "bad value" "lora_r" "$tmp/c.yaml" --set lora_r=abc
check_bad "bad dataset line" "bad.jsonl:2" "$tmp/c.yaml" --set "datasets.0.path=$tmp/bad.jsonl"
check_bad "missing model" "nonexistent" "$tmp/c.yaml" --set base_model=/nonexistent
check_bad "wrong adapter rank" "lora_r\|r " "$tmp/c.yaml" --set lora_r=4
"$tern" train >/dev/null 2>"$tmp/err"
[ $? = 2 ] && ok || bad "train without a config should exit 2"

# 6. the shipped configs parse and plan (paths in them are relative to the repository root)
root=$(cd "$data/../.." && pwd)
(cd "$root" && "$tern" plan configs/demo.yaml >"$tmp/out" 2>"$tmp/err") && grep -q "^verdict: fits" "$tmp/out" && ok ||
	bad "plan configs/demo.yaml: $(cat "$tmp/err")"
for c in "mistral-7b-12gb mistral-7b-v0.1" "llama3-70b-24gb meta-llama-3-70b"; do
	set -- $c
	(cd "$root" && "$tern" plan "configs/$1.yaml" --set base_model="$data/plan/$2" >"$tmp/out" 2>"$tmp/err") &&
		grep -q "^verdict: " "$tmp/out" && ok || bad "plan configs/$1.yaml: $(cat "$tmp/err")"
done

# 7. --profile: after every step one line with the device time of each op kind, which add up to no
#    more than the step's wall time, a line with the same time by op, and the same figures in every step's metrics.jsonl line (even
#    with logging_steps 2); TERN_PROFILE=1 does the same
kinds="matmul fwd|matmul bwd|LoRA|attention|loss|norms/elementwise|optimizer|copies|idle|step"
# checks the profile lines of $1 for steps 1..$2; prints what is wrong
check_profile() {
	awk -v want="$kinds" -v steps="$2" '
	/^profile step / {
		n++
		split($3, num, ":")
		if (num[1] != n) { print "line " n " is for step " num[1]; bad = 1 }
		sub(/^profile step [0-9]+: /, "")
		np = split($0, part, / \| /)
		names = ""; sum = 0; step = -1
		for (i = 1; i <= np; i++) {
			if (!match(part[i], / -?[0-9.]+ ms/)) { print "no time in \"" part[i] "\""; bad = 1; continue }
			name = substr(part[i], 1, RSTART - 1)
			v = substr(part[i], RSTART + 1, RLENGTH - 4) + 0
			names = names (i > 1 ? "|" : "") name
			if (name == "step") step = v
			else if (name != "idle") { sum += v; if (v < 0) { print name " " v " ms"; bad = 1 } }
		}
		if (names != want) { print "kinds: " names; bad = 1 }
		if (!(step > 0) || sum > step + 0.5) { print "step " n ": kinds add up to " sum " ms, step " step " ms"; bad = 1 }
	}
	END { if (n != steps) { print n " profile lines, expected " steps; bad = 1 } exit bad }' "$1" || return 1
	# each step's "profile ops" line splits the same time by op: "name T ms xN", longest first,
	# adding up to the kinds less the copies (each figure rounded to 0.1 ms)
	awk -v steps="$2" '
	/^profile step / {
		sub(/^profile step [0-9]+: /, ""); np = split($0, part, / \| /); kinds = 0
		for (i = 1; i <= np; i++)
			if (match(part[i], / -?[0-9.]+ ms/)) {
				name = substr(part[i], 1, RSTART - 1)
				if (name != "idle" && name != "step" && name != "copies")
					kinds += substr(part[i], RSTART + 1, RLENGTH - 4)
			}
	}
	/^profile ops step / {
		n++; sub(/^profile ops step [0-9]+: /, ""); np = split($0, part, / \| /); sum = 0; last = 1e30
		for (i = 1; i <= np; i++) {
			if (split(part[i], f, " ") != 4 || f[3] != "ms" || f[4] !~ /^x[1-9][0-9]*$/) {
				print "op entry \"" part[i] "\""; bad = 1; continue
			}
			if (f[2] > last) { print "ops not longest first at " f[1]; bad = 1 }
			last = f[2]; sum += f[2]
		}
		if (np < 5 || sum < kinds - 0.1 * np - 0.2 || sum > kinds + 0.1 * np + 0.2) {
			print "step " n ": ops add up to " sum " ms, the kinds less copies to " kinds " ms"; bad = 1
		}
	}
	END { if (n != steps) { print n " profile ops lines, expected " steps; bad = 1 } exit bad }' "$1"
}
backends=cpu
if "$tern" devices 2>/dev/null | grep -q "^vulkan [0-9]"; then
	backends="cpu vulkan"
elif [ "${TERN_REQUIRE_VULKAN:-0}" = 1 ]; then
	bad "--profile: no Vulkan device, and TERN_REQUIRE_VULKAN=1"
fi
for b in $backends; do
	"$tern" train "$tmp/c.yaml" --set backend=$b --set output_dir="$tmp/p$b" --set max_steps=3 --set logging_steps=2 \
		--profile >"$tmp/out" 2>"$tmp/err" && ok || bad "train --profile ($b): $(cat "$tmp/err")"
	msg=$(check_profile "$tmp/out" 3) && ok || bad "--profile ($b): $msg: $(grep '^profile' "$tmp/out" | head -3)"
	m="$tmp/p$b/metrics.jsonl"
	for k in matmul_fwd_ms matmul_bwd_ms lora_ms attention_ms loss_ms elementwise_ms optimizer_ms copies_ms \
		idle_ms step_ms tflops matmul_fwd_tflops loss_tflops; do
		n=$(grep -c "\"profile_$k\": [-0-9.e]*[,}]" "$m")
		[ "$n" = 3 ] || { bad "--profile ($b): profile_$k in $n of metrics.jsonl's lines, expected 3"; break; }
	done
	[ "$n" = 3 ] && ok
done
TERN_PROFILE=1 "$tern" train "$tmp/c.yaml" $set_common --set output_dir="$tmp/penv" --set max_steps=2 \
	>"$tmp/out" 2>"$tmp/err" && msg=$(check_profile "$tmp/out" 2) && ok || bad "TERN_PROFILE=1: $(cat "$tmp/err") $msg"
# Vulkan with early submissions (every 4 dispatches: each frame of the ring holds its own
# timestamps, read when it is reused or flushed): the same lines, and the kinds of steps 2 and 3
# (step 1 creates the pipelines) add up to at least half of what they add up to without early
# submissions (TERN_VK_SUBMIT_EVERY=0: the frames are read at the step's flush), the same commands
# timed either way (frames whose timestamps went unread would leave their time to idle; on a loaded
# CPU lavapipe's idle share moves too much for a bound against the step itself)
kinds_sum() {
	awk '/^profile step [2-9]/ { sub(/^profile step [0-9]+: /, ""); n = split($0, part, / \| /)
		for (i = 1; i <= n; i++) if (match(part[i], / -?[0-9.]+ ms/)) {
			name = substr(part[i], 1, RSTART - 1)
			if (name != "step" && name != "idle") sum += substr(part[i], RSTART + 1, RLENGTH - 4) } }
		END { printf "%.1f\n", sum }' "$1"
}
if [ "$backends" = "cpu vulkan" ]; then
	for e in 0 4; do
		TERN_VK_SUBMIT_EVERY=$e "$tern" train "$tmp/c.yaml" --set backend=vulkan --set output_dir="$tmp/pe$e" \
			--set max_steps=3 --profile >"$tmp/out$e" 2>"$tmp/err" && msg=$(check_profile "$tmp/out$e" 3) &&
			ok || bad "--profile (vulkan, TERN_VK_SUBMIT_EVERY=$e): $(cat "$tmp/err") $msg"
	done
	k0=$(kinds_sum "$tmp/out0") k4=$(kinds_sum "$tmp/out4")
	awk -v a="$k4" -v b="$k0" 'BEGIN { exit !(a >= 0.5 * b && b > 0) }' && ok ||
		bad "--profile (vulkan): steps 2-3's kinds $k4 ms with early submissions, $k0 ms without"
fi

echo "cli_train: $pass passed, $fail failed"
[ "$fail" = 0 ]
