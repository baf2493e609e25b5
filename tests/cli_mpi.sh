#!/bin/sh
# Data parallel over MPI (issue 16): 2 ranks over mpirun give the adapter of one process over the
# same global batch (micro_batch_size 1 x gradient_accumulation_steps 2 x 2 ranks = 1 x 4 x 1)
# within the reduction-order tolerance, and a checkpoint resumes across rank counts (2 -> 1 and
# 1 -> 2) to the uninterrupted result. Usage: cli_mpi.sh TERN DATA_DIR BACKEND... (cpu, ref, vulkan).
# Exits 77 (not run) without mpirun, or when tern was built without MPI (after checking that a
# 2-rank launch then fails with one line).
#
# Tolerance: max |a - b| <= 1e-4 x max |a| over every adapter tensor. The sum over ranks adds the
# ranks' partial sums, one process adds the micro-batches one after the other: the same terms in
# another order, a few float roundings apart (4.5e-6 measured on cpu after 4 steps); AdamW passes
# such differences on at about their size.
tern=$1
data=$2
shift 2
backends="$*"
here=$(dirname "$0")
. "$here/mpi_common.sh"
mpi_need
if ! command -v python3 >/dev/null 2>&1; then
	echo "not run: python3 is missing (tests/st_compare.py compares the adapters)"
	exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }
mpi2() { mpin 2 "$@"; }
mpi_config "$tmp/c.yaml" "$data"

# A build without MPI: a 2-rank launch fails on every rank with one line, and nothing else runs.
mpi2 "$tern" train "$tmp/c.yaml" --set output_dir="$tmp/probe" --set max_steps=0 >"$tmp/probe.log" 2>&1
if grep -q "built without MPI" "$tmp/probe.log"; then
	[ "$(grep -c '^tern: .*built without MPI (TERN_MPI=OFF)' "$tmp/probe.log")" -ge 1 ] && ok ||
		bad "no-MPI error line: $(cat "$tmp/probe.log")"
	echo "not run: this tern was built without MPI ($pass checks passed: the one-line error)"
	[ $fail -eq 0 ] && exit 77 || exit 1
fi

cmp_adapters() { # A B WHAT
	if r=$(python3 "$here/st_compare.py" "$1/adapter/adapter_model.safetensors" \
		"$2/adapter/adapter_model.safetensors" 1e-4 2>&1); then
		ok
		echo "  $3: $r"
	else
		bad "$3: $r"
	fi
}

for be in $backends; do
	start=$(date +%s)
	set -- --set backend="$be"
	# one process over the global batch (1 x 4), checkpoint-2 on the way
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-1" --set gradient_accumulation_steps=4 \
		>"$tmp/$be-1.log" 2>&1 || bad "$be: one process: $(tail -3 "$tmp/$be-1.log")"
	# 2 ranks (1 x 2 each); on vulkan through the convenience (lavapipe has one device: --devices 0,0)
	if [ "$be" = vulkan ]; then
		"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-2" --devices 0,0 \
			>"$tmp/$be-2.log" 2>&1 || bad "$be: --devices 0,0: $(tail -3 "$tmp/$be-2.log")"
	else
		mpi2 "$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-2" \
			>"$tmp/$be-2.log" 2>&1 || bad "$be: 2 ranks: $(tail -3 "$tmp/$be-2.log")"
	fi
	grep -q "1 × 2 × 2 ranks (mpi) rows/step" "$tmp/$be-2.log" && ok ||
		bad "$be: the banner does not show 2 ranks: $(grep schedule "$tmp/$be-2.log")"
	# rank 0 alone reports and writes
	[ "$(grep -c '^tern train ' "$tmp/$be-2.log")" = 1 ] && [ "$(grep -c '^adapter written' "$tmp/$be-2.log")" = 1 ] &&
		[ "$(grep -c '^step 4/4 ' "$tmp/$be-2.log")" = 1 ] && ok ||
		bad "$be: expected one banner, one step 4 line, one adapter line: $(cat "$tmp/$be-2.log")"
	[ -d "$tmp/$be-2/checkpoint-2" ] && [ "$(grep -c '"step": ' "$tmp/$be-2/metrics.jsonl")" = 4 ] && ok ||
		bad "$be: rank 0's checkpoint-2 or its 4 metrics lines are missing"
	cmp_adapters "$tmp/$be-1" "$tmp/$be-2" "$be: 2 ranks vs one process"
	if [ "$be" = cpu ]; then # the fixed reduction order: the same 2-rank run twice, the same bytes
		mpi2 "$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-2b" >"$tmp/$be-2b.log" 2>&1 ||
			bad "$be: 2 ranks again: $(tail -3 "$tmp/$be-2b.log")"
		cmp -s "$tmp/$be-2/adapter/adapter_model.safetensors" "$tmp/$be-2b/adapter/adapter_model.safetensors" &&
			ok || bad "$be: two 2-rank runs gave different adapters"
	fi
	# resume across rank counts: 2 -> 1 (accumulation 4) and 1 -> 2, each to the uninterrupted run
	"$tern" train "$tmp/c.yaml" "$@" --set output_dir="$tmp/$be-21" --set gradient_accumulation_steps=4 \
		--set resume_from_checkpoint="$tmp/$be-2/checkpoint-2" >"$tmp/$be-21.log" 2>&1 ||
		bad "$be: resume 2 -> 1: $(tail -3 "$tmp/$be-21.log")"
	grep -q "resuming from .*checkpoint-2 at step 2 of 4" "$tmp/$be-21.log" && ok ||
		bad "$be: 2 -> 1 did not resume at step 2: $(grep -i resum "$tmp/$be-21.log")"
	cmp_adapters "$tmp/$be-2" "$tmp/$be-21" "$be: resumed 2 -> 1 vs 2 ranks throughout"
	# (mpirun itself with --devices: each rank's device from the list)
	devs=
	[ "$be" = vulkan ] && devs="--devices 0,0"
	mpi2 "$tern" train "$tmp/c.yaml" "$@" $devs --set output_dir="$tmp/$be-12" \
		--set resume_from_checkpoint="$tmp/$be-1/checkpoint-2" >"$tmp/$be-12.log" 2>&1 ||
		bad "$be: resume 1 -> 2: $(tail -3 "$tmp/$be-12.log")"
	cmp_adapters "$tmp/$be-1" "$tmp/$be-12" "$be: resumed 1 -> 2 vs one process throughout"
	echo "$be: $(($(date +%s) - start)) s"
done

# A stop signal to mpirun (SIGTERM here: a background job of a script ignores SIGINT; Ctrl-C in a
# terminal works alike): mpirun passes it to the ranks, the stop reaches every rank through the
# step's sum, all stop after the same step and rank 0 writes that step's checkpoint.
mpirun -n 2 --bind-to none "$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/int" --set max_steps=100000 \
	--set save_steps=0 >"$tmp/int.log" 2>&1 &
pid=$! # mpirun's own (not a shell function's subshell)
n=0
while [ $n -lt 300 ] && ! grep -q "^step 2/" "$tmp/int.log"; do
	sleep 0.1
	n=$((n + 1))
done
kill -TERM $pid
wait $pid
k=$(sed -n 's/^interrupted: checkpoint-\([0-9]*\) written.*/\1/p' "$tmp/int.log")
[ -n "$k" ] && [ -f "$tmp/int/checkpoint-$k/trainer_state.json" ] &&
	[ "$(grep -c '^interrupted: ' "$tmp/int.log")" = 1 ] && ok ||
	bad "SIGTERM to mpirun: no single checkpoint line or no checkpoint-$k: $(tail -5 "$tmp/int.log")"

# A device list that does not match the ranks: one line naming TERN_DEVICES, a non-zero exit;
# on vulkan (lavapipe: one device) 2 ranks without --devices take devices 0 and 1: one line
# saying how to share device 0.
case " $backends " in
*" vulkan "*)
	mpi2 "$tern" train "$tmp/c.yaml" --set backend=vulkan --set output_dir="$tmp/bad1" >"$tmp/bad1.log" 2>&1 &&
		bad "rank 1 on lavapipe's missing device 1 did not fail"
	grep -q "^tern: rank 1 of 2: .*device 1 = device + its rank on this host; .*--devices 0,0" "$tmp/bad1.log" && ok ||
		bad "device 1 of lavapipe: $(cat "$tmp/bad1.log")"
	;;
esac
mpi2 "$tern" train "$tmp/c.yaml" --set backend=cpu --set output_dir="$tmp/bad" --devices 0,0,0 \
	>"$tmp/bad.log" 2>&1 && bad "3 devices for 2 ranks did not fail"
grep -q "TERN_DEVICES=0,0,0 (--devices) names 3 devices for 2 ranks" "$tmp/bad.log" && ok ||
	bad "3 devices for 2 ranks: $(cat "$tmp/bad.log")"

echo "cli_mpi: $pass passed, $fail failed"
[ $fail -eq 0 ]
