#!/bin/sh
# The output directory's safety (docs/ARCHITECTURE.md, "Output directory: lock, atomic writes,
# resume checks"), end to end on the golden llama case (CPU backend): the lock against a second
# run, SIGTERM's exit 143 with a checkpoint, a second Ctrl-C stopping mid-step, a stale lock and
# killed runs' temporaries cleared at the next start, a failed run leaving the previous run's
# config.yaml / metrics.jsonl / adapter as they were, and resume refusing changed data, a data
# position past the data and a damaged file, and continuing to a raised max_steps.
# Usage: cli_safety.sh TERN DATA_DIR
tern=$1
data=$2
tmp=$(mktemp -d)
bg=
trap '[ -n "$bg" ] && kill -9 $bg 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
g=$data/golden/llama
sed -e "s|tests/data/golden/llama|$g|g" "$g/config.yaml" >"$tmp/c.yaml"
cp "$g/data.jsonl" "$tmp/data.jsonl" # the runs' own copy: test 7 changes it
common="--set backend=cpu --set datasets.0.path=$tmp/data.jsonl"
# wait_for FILE PATTERN SECONDS: until FILE has a line matching PATTERN
wait_for() {
	i=0
	while ! grep -q "$2" "$1" 2>/dev/null; do
		i=$((i + 1))
		[ $i -gt $(($3 * 10)) ] && return 1
		sleep 0.1
	done
}
# one_line NAME WANT RC: the last run exited RC with one stderr line holding WANT
one_line() {
	[ -n "$SHOW" ] && echo "$1: $(cat "$tmp/err")"
	lines=$(wc -l <"$tmp/err")
	if [ "$rc" = "$3" ] && [ "$lines" = 1 ] && grep -q "$2" "$tmp/err"; then ok; else
		bad "$1: exit $rc, $lines stderr lines: $(cat "$tmp/err")"
	fi
}

# 1. the reference: 10 steps, a checkpoint every 4; checksums.sha256 is what sha256sum -c reads
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/a" --set save_steps=4 >"$tmp/out" 2>"$tmp/err" && ok ||
	bad "train: $(cat "$tmp/err")"
if command -v sha256sum >/dev/null; then
	(cd "$tmp/a/checkpoint-8" && sha256sum -c --quiet checksums.sha256) && [ "$(wc -l <"$tmp/a/checkpoint-8/checksums.sha256")" = 4 ] &&
		ok || bad "sha256sum -c checkpoint-8/checksums.sha256"
else
	echo "not run: sha256sum -c (no sha256sum here)"
fi
[ -f "$tmp/a/.tern.lock" ] && [ ! -s "$tmp/a/.tern.lock" ] && ok || bad "a finished run leaves an empty lock file"
ls -a "$tmp/a" "$tmp/a/offload" "$tmp/a/adapter" | grep -q '\.tmp\.\|\.old\.' && bad "temporaries left: $(ls -aR "$tmp/a")" || ok

# 2. the lock: a second run into a busy output_dir refuses with one line naming the first; SIGTERM
#    stops the first after its step with a checkpoint and exit 143
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/l" --set max_steps=100000 --set gradient_accumulation_steps=8 \
	>"$tmp/lout" 2>"$tmp/lerr" &
bg=$!
if wait_for "$tmp/lout" "^step 1/" 300; then
	"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/l" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	one_line "second run into a busy output_dir" "in use by another tern train run (pid $bg on .*, started 20" 1
	grep -q "^pid $bg host .* started 20" "$tmp/l/.tern.lock" && ok || bad "lock file: $(cat "$tmp/l/.tern.lock")"
	kill -TERM $bg
	wait $bg
	rc=$?
	bg=
	[ $rc = 143 ] && grep -q "interrupted: checkpoint-[0-9]* written" "$tmp/lout" &&
		grep -q "interrupted at step" "$tmp/lerr" && ls "$tmp/l" | grep -q '^checkpoint-[0-9]*$' && ok ||
		bad "SIGTERM: exit $rc, $(cat "$tmp/lerr") $(tail -2 "$tmp/lout")"
else
	bad "the long run never reached step 1: $(cat "$tmp/lerr")"
fi

# 2b. kill -9 after a checkpoint, then resume_from_checkpoint: auto: the adapter is byte-identical to
#     an uninterrupted run's; the dead run's lock is taken over with a note
kc="--set max_steps=6 --set save_steps=2 --set gradient_accumulation_steps=4"
"$tern" train "$tmp/c.yaml" $common $kc --set output_dir="$tmp/ref" >/dev/null 2>"$tmp/err" && ok || bad "reference: $(cat "$tmp/err")"
"$tern" train "$tmp/c.yaml" $common $kc --set output_dir="$tmp/kill" >"$tmp/kout" 2>&1 &
bg=$!
i=0
while [ ! -e "$tmp/kill/checkpoint-2/checksums.sha256" ] && [ $i -lt 3000 ]; do
	sleep 0.1
	i=$((i + 1))
done
kill -9 $bg 2>/dev/null
{ wait $bg; } 2>/dev/null
bg=
"$tern" train "$tmp/c.yaml" $common $kc --set output_dir="$tmp/kill" --set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err" &&
	grep -q "^resuming from .*checkpoint-[246] at step" "$tmp/out" &&
	cmp -s "$tmp/ref/adapter/adapter_model.safetensors" "$tmp/kill/adapter/adapter_model.safetensors" && ok ||
	bad "resume after kill -9: $(cat "$tmp/err") $(grep -E 'resuming|^step' "$tmp/out" | head -3)"
if grep -q "adapter written" "$tmp/kout"; then
	echo "not run: the take-over note after kill -9 (the run ended before the kill)"
else
	grep -q "^note: .* is gone; taking over its lock" "$tmp/out" && ok || bad "no take-over note after kill -9"
fi

# 3. a second Ctrl-C during a step stops at once: exit 130, no checkpoint of that step, nothing
#    half-written (steps of 512 micro-batches, seconds each, so both signals land mid-step)
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/i" --set max_steps=100000 --set gradient_accumulation_steps=512 \
	>"$tmp/iout" 2>"$tmp/ierr" &
bg=$!
if wait_for "$tmp/iout" "^step 1/" 300; then
	kill -INT $bg
	sleep 0.05
	kill -INT $bg 2>/dev/null
	wait $bg
	rc=$?
	bg=
	if grep -q "second interrupt" "$tmp/ierr"; then
		[ $rc = 130 ] && ! ls "$tmp/i" | grep -q 'checkpoint\|\.tmp\.' && [ -s "$tmp/i/metrics.jsonl" ] && ok ||
			bad "second Ctrl-C: exit $rc, $(ls -a "$tmp/i") $(cat "$tmp/ierr")"
	elif [ $rc = 130 ] && grep -q "interrupted: checkpoint-" "$tmp/iout"; then
		echo "not run: second Ctrl-C mid-step (the step ended before the second signal came)"
	else
		bad "Ctrl-C twice: exit $rc, $(cat "$tmp/ierr")"
	fi
else
	bad "the long run never reached step 1: $(cat "$tmp/ierr")"
fi

# 4. a stale lock is taken over with a note; what killed runs left is removed (pid 999999 is not
#    running), a replace killed between its renames is put back, live and foreign names are kept
k=$tmp/k
mkdir -p "$k/offload" "$k/adapter" "$k/checkpoint-4.tmp.999999" "$k/adapter.tmp.999999"
echo "pid 999999 host elsewhere started 2026-01-01T00:00:00Z" >"$k/.tern.lock"
head -c 1048576 /dev/zero >"$k/offload/base-f32.tpack.tmp.999999"
echo x >"$k/metrics.jsonl.tmp.999999"
echo x >"$k/checkpoint-4.tmp.999999/trainer_state.json"
echo x >"$k/adapter/adapter_model.safetensors.tmp.999999"
cp -r "$tmp/a/checkpoint-8" "$k/checkpoint-8.old.999999"
echo x >"$k/metrics.jsonl.tmp.$$" # a live process's (this shell's)
echo x >"$k/data.tmp"     # not tern's pattern
echo x >"$k/notes.txt.tmp.999999" # not a name tern writes
"$tern" train "$tmp/c.yaml" $common --set output_dir="$k" --set max_steps=2 >"$tmp/out" 2>"$tmp/err" && ok ||
	bad "train into a dir with leftovers: $(cat "$tmp/err")"
grep -q "^note: .*pid 999999 on elsewhere, started 2026-01-01T00:00:00Z) is gone; taking over its lock" "$tmp/out" && ok ||
	bad "no take-over note: $(grep note "$tmp/out")"
grep -q "^note: removed 5 temporary files of killed runs (1.0 MiB)" "$tmp/out" && ok ||
	bad "no removal note: $(grep note "$tmp/out")"
[ ! -e "$k/offload/base-f32.tpack.tmp.999999" ] && [ ! -e "$k/metrics.jsonl.tmp.999999" ] &&
	[ ! -e "$k/checkpoint-4.tmp.999999" ] && [ ! -e "$k/adapter.tmp.999999" ] &&
	[ ! -e "$k/adapter/adapter_model.safetensors.tmp.999999" ] && ok || bad "leftovers: $(ls -aR "$k")"
[ -e "$k/metrics.jsonl.tmp.$$" ] && [ -e "$k/data.tmp" ] && [ -e "$k/notes.txt.tmp.999999" ] && ok ||
	bad "a live process's or a foreign file was removed"
[ -s "$k/checkpoint-8/optimizer.safetensors" ] && [ ! -e "$k/checkpoint-8.old.999999" ] && ok ||
	bad "checkpoint-8.old.999999 was not put back: $(ls "$k")"

# 5. runs that fail leave the previous run's config.yaml, metrics.jsonl and adapter as they were
mkdir "$tmp/keep"
cp "$tmp/a/config.yaml" "$tmp/a/metrics.jsonl" "$tmp/a/adapter/adapter_model.safetensors" "$tmp/keep/"
for s in "resume_from_checkpoint=$tmp/nonexistent" "lora_r=4" "datasets.0.path=$tmp/nonexistent.jsonl"; do
	"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/a" --set "$s" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	one_line "failing run ($s)" "nonexistent\|lora_r\|r " 1
	cmp -s "$tmp/keep/config.yaml" "$tmp/a/config.yaml" && cmp -s "$tmp/keep/metrics.jsonl" "$tmp/a/metrics.jsonl" &&
		cmp -s "$tmp/keep/adapter_model.safetensors" "$tmp/a/adapter/adapter_model.safetensors" &&
		! ls -a "$tmp/a" | grep -q '\.tmp\.' && ok || bad "a failing run ($s) changed the previous outputs: $(ls -a "$tmp/a")"
done

# 6. resume: raised max_steps continues to the new end; a data position past the data and a damaged
#    file are refused with one line
mkdir "$tmp/r"
cp -r "$tmp/a/checkpoint-8" "$tmp/r/"
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/r" --set max_steps=12 --set resume_from_checkpoint=auto \
	>"$tmp/out" 2>"$tmp/err" && grep -q "the schedule now ends at step 12 (the checkpoint's ended at 10)" "$tmp/out" &&
	grep -q "^step 12/12 " "$tmp/out" && [ "$(grep -c '"loss"' "$tmp/r/metrics.jsonl")" = 4 ] && ok ||
	bad "raised max_steps: $(cat "$tmp/err") $(tail -3 "$tmp/out")"
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/r" --set max_steps=6 --set resume_from_checkpoint="$tmp/a/checkpoint-8" \
	>"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "resume past the end" "checkpoint-8 is at step 8, past the 6 steps of this config's schedule" 1
# flips one byte near the end of file $1
flip() {
	n=$(wc -c <"$1")
	b=$(od -An -tu1 -j$((n - 3)) -N1 "$1" | tr -d ' ')
	printf "\\$(printf %03o $(((b + 1) % 256)))" | dd of="$1" bs=1 seek=$((n - 3)) conv=notrunc 2>/dev/null
}
for f in optimizer.safetensors adapter_model.safetensors trainer_state.json; do
	rm -rf "$tmp/d" && mkdir "$tmp/d" && cp -r "$tmp/a/checkpoint-4" "$tmp/d/"
	flip "$tmp/d/checkpoint-4/$f"
	"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/d" --set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err"
	rc=$?
	one_line "flipped bit in $f" "checkpoint-4/$f: checksum mismatch" 1
done
if command -v sha256sum >/dev/null; then
	rm -rf "$tmp/d" && mkdir "$tmp/d" && cp -r "$tmp/a/checkpoint-4" "$tmp/d/"
	sed -i 's/"row": [0-9]*/"row": 1000/' "$tmp/d/checkpoint-4/trainer_state.json"
	(cd "$tmp/d/checkpoint-4" && sha256sum adapter_config.json adapter_model.safetensors optimizer.safetensors \
		trainer_state.json >checksums.sha256)
	"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/d" --set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err"
	rc=$?
	one_line "row past the data" "data position (row 1000 of epoch 0) is past the 40 training rows" 1
else
	echo "not run: a data position past the data (no sha256sum to re-sign the edited state)"
fi

# 7. resume refuses changed data, naming what changed (the rows' tokens; the number of rows)
rm -rf "$tmp/d" && mkdir "$tmp/d" && cp -r "$tmp/a/checkpoint-4" "$tmp/d/"
sed -i '1s/\[[0-9]*,/[7,/' "$tmp/data.jsonl"
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/d" --set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "changed tokens" "checkpoint-4: the training data changed since this checkpoint (same 40 rows, different tokens or labels: .*dataset $tmp/data.jsonl changed" 1
sed -i '$d' "$tmp/data.jsonl"
"$tern" train "$tmp/c.yaml" $common --set output_dir="$tmp/d" --set resume_from_checkpoint=auto >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "fewer rows" "the training data changed since this checkpoint (40 rows then, 39 now; dataset $tmp/data.jsonl changed)" 1
[ ! -e "$tmp/d/metrics.jsonl" ] && [ ! -e "$tmp/d/config.yaml" ] && ok || bad "a refused resume wrote outputs: $(ls -a "$tmp/d")"

# 8. input guards, before anything is allocated or written: a tokenizer past the model's
#    vocabulary (both files named), a dataset with no trained token, a batch past host memory
root=$(cd "$data/../.." && pwd)
cp -r "$root/demo/model" "$tmp/m"
sed -i 's/"vocab_size": [0-9]*/"vocab_size": 1000/' "$tmp/m/config.json"
"$tern" train "$root/configs/demo.yaml" --set backend=cpu --set base_model="$tmp/m" --set datasets.0.path="$root/demo/data/train.jsonl" \
	--set output_dir="$tmp/v" >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "tokenizer past the vocabulary" "$tmp/m/tokenizer.json: token ids reach [0-9]* (.*), past vocab_size 1000 of $tmp/m/config.json" 1
printf '{"input_ids": [1, 2, 3], "labels": [-100, -100, -100]}\n{"input_ids": [4, 5], "labels": [-100, -100]}\n' >"$tmp/masked.jsonl"
"$tern" train "$tmp/c.yaml" --set backend=cpu --set datasets.0.path="$tmp/masked.jsonl" --set output_dir="$tmp/v" >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "no trained token" "datasets: no trained token: every label of the 2 training samples (5 tokens) is masked" 1
"$tern" train "$tmp/c.yaml" $common --set sequence_len=1048576 --set micro_batch_size=65536 --set output_dir="$tmp/v" >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "huge batch" "sequence_len 1048576 × micro_batch_size 65536 = 68719476736 tokens per micro-batch need .* of host memory .*, more than the .* available" 1
"$tern" train "$tmp/c.yaml" $common --set micro_batch_size=2048 --set host_memory=1MiB --set output_dir="$tmp/v" >"$tmp/out" 2>"$tmp/err"
rc=$?
one_line "batch past host_memory" "sequence_len 24 × micro_batch_size 2048 = 49152 tokens per micro-batch need .* more than the 1.0 MiB available (host_memory)" 1
[ ! -e "$tmp/v" ] && ok || bad "a refused run left $tmp/v"
# the Vulkan backend's switches: a bad value is refused in one line (where a Vulkan device exists)
if "$tern" devices 2>/dev/null | grep -q '^vulkan'; then
	for kv in "TERN_VK_LORA_FUSE=yes:TERN_VK_LORA_FUSE=yes: use 1" "TERN_VK_MAX_RANGE=12k:TERN_VK_MAX_RANGE=12k: a number of bytes"; do
		env "${kv%%:*}" "$tern" bench ops --backend vulkan --ops axpy --T 8 --O 16 --I 16 --seconds 0.01 >"$tmp/out" 2>"$tmp/err"
		rc=$?
		one_line "${kv%%=*}" "${kv#*:}" 1
	done
else
	echo "not run: TERN_VK_* refusals (no Vulkan device)"
fi

echo "cli_safety: $pass passed, $fail failed"
[ "$fail" = 0 ]
