#!/usr/bin/env bash
# The CUDA backend's first runs, for a session with an NVIDIA GPU (the H200 machine of
# /work/shared/reference/gpu-machine.md). The backend was written and compiled on a machine
# without a GPU: nothing of it has run before this script.
#
#   tools/cuda_device_check.sh build   on the build machine (nvcc, no GPU needed): configures and
#                                      builds build-cuda/ for sm_90 (H100/H200) with -Werror
#   tools/cuda_device_check.sh run [TEST...]
#                                      on the GPU machine: tern devices, test_cuda, then test_ops,
#                                      test_golden, test_golden_moe (test_golden's moe cases),
#                                      test_stream and test_generate on the cuda backend only, then
#                                      `tern bench ops --backend cuda` at T=2048 O=I=4096; with
#                                      TEST names, only those tests (no bench)
#
# The run step needs what the build step made, and the Debian libraries of gpu-machine.md (.gl/):
# with the device tool, carry [".gl", "build-cuda/tern", "build-cuda/tests/test_cuda",
# "build-cuda/tests/test_ops", "build-cuda/tests/test_golden", "build-cuda/tests/test_stream",
# "build-cuda/tests/test_generate"]
# (about 20 MiB at one architecture). Logs go to $OUT (else /tmp/tern-cuda-check); each test's
# last line is its summary; each test runs under its own time limit (TEST_TIMEOUT overrides them
# all). TERN_REQUIRE_CUDA=1 makes "cuda: no device" a failure, not "not run".
# ARCH=90 is the default architecture; ARCH=native builds for the card of the machine it runs on.
#
#   tools/cuda_device_check.sh perf [PART...] [-- BENCH_GPU_ARGS...]
#                                      on the GPU machine, the speed of the CUDA step in one call
#                                      (parts, in this order; default all):
#                                      test   test_ops' bf16 attention cases (the tensor-core
#                                             kernels)
#                                      ops    `tern bench ops` at prec bf16: the matmuls at
#                                             T=2048 and the 8B shapes (O=I=4096, 14336x4096,
#                                             4096x14336); the six LoRA products (gemm) at the 1B
#                                             and 8B shapes, --prec f32 and bf16
#                                      lora   the fused LoRA products (cu_lora.c) before/after:
#                                             `tern bench ops --ops lora,matmul,matmul_bwd` at the
#                                             8B shapes, bf16, with TERN_CUDA_LORA_FUSE=0 (rows
#                                             "composed") then on (rows "fused"); then the 8B
#                                             training step, tern only, profiled, both ways
#                                             (BENCH_GPU_ARGS as for train, default --shapes 8b
#                                             --steps 4; logs $OUT/perf-lora-{0,1}). Not part of
#                                             the default set (it repeats train's run).
#                                      train  TERN_PROFILE=1 tools/bench_gpu.sh --stacks
#                                             tern,unsloth with backend cuda; BENCH_GPU_ARGS go to
#                                             bench_gpu.sh (default --shapes 1b,8b --steps 4)
#                                      mem    (not in the default set) the same runs at bf16 with
#                                             gradient_checkpointing: offload beside Unsloth:
#                                             tern's peak device memory against Unsloth's
#                                      mem-base  tern alone with gradient_checkpointing: true
#                                             (the layer inputs on the device), for before/after
#                                      The profiles (ms and TFLOP/s per op kind) are in the runs'
#                                      logs under $OUT/perf-train/logs.
#                                      decode `tern bench ops` at T=1 (and 4, 8) on the 8B decode
#                                             shapes (4096x4096, 14336x4096, 4096x14336, 1024x4096
#                                             and the lm_head 128256x4096) at prec bf16 with a
#                                             "% of bw" column (--bw $BENCH_BW, default 4800; 3350 on
#                                             an H100), four times: the small-T kernels (k_gemv.cu),
#                                             TERN_CUDA_GEMV_MMA=0 (NF4 without gemv_mma_kernel),
#                                             also TERN_CUDA_GEMV_TABLE=0 (nor gemv_nf4_kernel),
#                                             and TERN_CUDA_GEMV=0 (decode + cuBLAS); then tools/bench_generate.sh --preset
#                                             llama3-8b --compare --backend cuda (TERN_DECODE_LEGACY=1
#                                             is the old path: cuBLAS products, host argmax) with
#                                             transformers + bitsandbytes, tern again with
#                                             TERN_CUDA_GEMV_MMA=0, and one TERN_PROFILE=1 run (the
#                                             decode step's device time by op). Not in the default parts.
#                                      Not in the default list (each is one device call of its own):
#                                      ce     tools/bench_gpu.sh --stacks tern,unsloth, tern twice:
#                                             the ce_loss chunk of the rule (512 tokens at D 4096
#                                             since 71304cb) and TERN_CE_CHUNK=128 (the old rule)
#                                             (BENCH_GPU_ARGS as for train, default --shapes 8b
#                                             --steps 4)
#                                      graphs-gen   `tern generate` decode (batch 1, greedy,
#                                             tools/bench_generate.sh --stacks tern, the llama3.2-1b
#                                             and llama3-8b presets, NF4-DQ, 128 + 128 tokens) with
#                                             TERN_CUDA_GRAPHS=0 then 1: decode tok/s of each, and
#                                             the ids must be the same (checked)
#                                      graphs-train tools/bench_gpu.sh --stacks tern with the one
#                                             binary twice, labels graphs-off (TERN_CUDA_GRAPHS=0)
#                                             and graphs-on (=1); BENCH_GPU_ARGS as for train
#                                             (default --shapes 1b,8b --steps 4); the table's ratio
#                                             column is graphs-on / graphs-off; the step losses of
#                                             both are printed side by side (they should agree)
#                                      logs under $OUT/perf-train/logs (perf-mem, perf-mem-base).
set -uo pipefail
cd "$(dirname "$0")/.."

case "${1:-}" in
build)
	nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
	[ -x "$nvcc" ] || {
		echo "cuda_device_check: no nvcc (PATH, /usr/local/cuda/bin)" >&2
		exit 1
	}
	cmake -S . -B build-cuda -DCMAKE_BUILD_TYPE=Release -DTERN_WERROR=ON -DTERN_CUDA=ON \
		-DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES="${ARCH:-90}" >/dev/null || exit 1
	cmake --build build-cuda -j"${TERN_JOBS:-2}" --target tern test_cuda test_ops test_golden test_stream \
		test_generate ||
		exit 1
	ls -la build-cuda/tern build-cuda/tests/test_{cuda,ops,golden,stream,generate}
	;;
run | perf)
	mode=$1
	out=${OUT:-/tmp/tern-cuda-check}
	mkdir -p "$out"
	if [ -d .gl ]; then # gpu-machine.md: tern's shared libraries travel as Debian packages
		mkdir -p /opt/tdeps
		for f in .gl/*.deb .gl/extra/*.deb; do
			[ -e "$f" ] || continue
			case $f in
			*/extra/* | *gomp* | *pcre2*) dpkg -x "$f" /opt/tdeps ;;
			*) dpkg -x "$f" / ;;
			esac
		done
		ldconfig
		export LD_LIBRARY_PATH=/opt/tdeps/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
		export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
	fi
	# libcudart / libcublas of the toolkit the binary was built with (13)
	for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do
		[ -d "$d" ] && export LD_LIBRARY_PATH=$d${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
	done
	export TERN_TEST_DATA=$PWD/tests/data TERN_REQUIRE_CUDA=${TERN_REQUIRE_CUDA:-1} TERN_TEST_BACKEND=cuda
	if [ "$mode" = perf ]; then
		shift
		parts=()
		while [ $# -gt 0 ] && [ "$1" != -- ]; do
			parts+=("$1")
			shift
		done
		[ "${1:-}" != -- ] || shift
		[ ${#parts[@]} -gt 0 ] || parts=(test ops train)
		rc=0
		for part in "${parts[@]}"; do
			case $part in
			test)
				echo "== test_ops attention_bf16"
				TERN_TEST_ONLY=attention_bf16 timeout 300 build-cuda/tests/test_ops \
					>"$out/perf-test.txt" 2>&1 || rc=1
				tail -1 "$out/perf-test.txt"
				grep -E "FAIL|fail " "$out/perf-test.txt" | head -20
				;;
			ops)
				for shape in "4096 4096" "14336 4096" "4096 14336"; do
					read -r O I <<<"$shape"
					echo "== bench ops matmul T=2048 O=$O I=$I bf16"
					build-cuda/tern bench ops --backend cuda --ops matmul,matmul_bwd --T 2048 --O "$O" \
						--I "$I" --prec bf16 --peak 790 --seconds "${BENCH_SECONDS:-1}" 2>&1 |
						tee "$out/perf-ops-$O-$I.txt"
				done
				for shape in "2048 2048 2048" "2048 4096 4096"; do
					read -r T O I <<<"$shape"
					for lora in f32 bf16; do
						echo "== bench ops gemm T=$T O=$O I=$I R=16 (--prec $lora)"
						build-cuda/tern bench ops --backend cuda --ops gemm --prec "$lora" \
							--T "$T" --O "$O" --I "$I" --R 16 --seconds "${BENCH_SECONDS:-1}" 2>&1 |
							tee "$out/perf-gemm-$O-$lora.txt"
					done
				done
				;;
			decode)
				for shape in "1 4096 4096" "1 14336 4096" "1 4096 14336" "1 1024 4096" \
					"1 128256 4096" "2 4096 4096" "2 14336 4096" "4 4096 4096" "8 4096 4096" \
					"8 14336 4096"; do
					read -r T O I <<<"$shape"
					# gemv m0: TERN_CUDA_GEMV_MMA=0 (NF4 on gemv_nf4_kernel, as before
					# gemv_mma_kernel); t0: and TERN_CUDA_GEMV_TABLE=0 (on gemv_kernel)
					for gemv in 1 m0 t0 0; do
						g=1 tb=1 mm=1
						[ "$gemv" = 0 ] && g=0
						[ "$gemv" = m0 ] && mm=0
						[ "$gemv" = t0 ] && tb=0 mm=0
						echo "== bench ops matmul T=$T O=$O I=$I bf16 TERN_CUDA_GEMV=$g TERN_CUDA_GEMV_MMA=$mm TERN_CUDA_GEMV_TABLE=$tb"
						TERN_CUDA_GEMV=$g TERN_CUDA_GEMV_MMA=$mm TERN_CUDA_GEMV_TABLE=$tb build-cuda/tern bench ops \
							--backend cuda --ops matmul --T "$T" --O "$O" --I "$I" --prec bf16 \
							--bw "${BENCH_BW:-4800}" --seconds "${BENCH_SECONDS:-1}" 2>&1 |
							tee "$out/perf-decode-$T-$O-$I-$gemv.txt"
					done
				done
				echo "== tools/bench_generate.sh --preset llama3-8b --compare --backend cuda"
				tools/bench_generate.sh --preset llama3-8b --prompt 128 --new 256 --compare --backend cuda \
					--tern "$PWD/build-cuda/tern" --out "$out/perf-decode-generate" || rc=1
				echo "== the same, TERN_CUDA_GEMV_MMA=0 (tern only), then the decode step's op profile"
				TERN_CUDA_GEMV_MMA=0 tools/bench_generate.sh --preset llama3-8b --prompt 128 --new 256 \
					--backend cuda --stacks tern --tern "$PWD/build-cuda/tern" \
					--out "$out/perf-decode-generate-m0" | grep -E "run [0-9]: prompt" || rc=1
				TERN_PROFILE=1 tools/bench_generate.sh --preset llama3-8b --prompt 128 --new 64 --runs 1 \
					--backend cuda --stacks tern --tern "$PWD/build-cuda/tern" \
					--out "$out/perf-decode-profile" >/dev/null 2>&1 || rc=1
				grep -rh "decode profile" "$out/perf-decode-profile"
				;;
			lora)
				for shape in "4096 4096" "14336 4096" "4096 14336"; do
					read -r O I <<<"$shape"
					for fuse in 0 1; do
						echo "== bench ops lora T=2048 O=$O I=$I R=16 bf16 TERN_CUDA_LORA_FUSE=$fuse"
						TERN_CUDA_LORA_FUSE=$fuse build-cuda/tern bench ops --backend cuda \
							--ops lora,matmul,matmul_bwd --T 2048 --O "$O" --I "$I" --R 16 \
							--prec bf16 --seconds "${BENCH_SECONDS:-1}" 2>&1 |
							grep -E "^(op|lora|matmul +nf4-dq)" | tee "$out/perf-lora-$O-$I-$fuse.txt"
					done
				done
				args=("$@")
				[ ${#args[@]} -gt 0 ] || args=(--shapes 8b --steps 4)
				for fuse in 0 1; do
					echo "== 8B step, tern only, TERN_CUDA_LORA_FUSE=$fuse"
					TERN_CUDA_LORA_FUSE=$fuse TERN_PROFILE=1 tools/bench_gpu.sh --stacks tern \
						--tern "cuda=$PWD/build-cuda/tern" --tern-set backend=cuda \
						--out "$out/perf-lora-$fuse" "${args[@]}" || rc=1
					cat "$out/perf-lora-$fuse/table.md" 2>/dev/null
				done
				;;
			train)
				args=("$@")
				[ ${#args[@]} -gt 0 ] || args=(--shapes 1b,8b --steps 4)
				TERN_PROFILE=1 tools/bench_gpu.sh --stacks tern,unsloth --tern "cuda=$PWD/build-cuda/tern" \
					--tern-set backend=cuda --out "$out/perf-train" "${args[@]}" || rc=1
				;;
			ce)
				# the ce_loss chunk: the rule's (512 tokens at D = 4096) against the old rule's
				# 128 tokens (TERN_CE_CHUNK=128), beside Unsloth
				args=("$@")
				[ ${#args[@]} -gt 0 ] || args=(--shapes 8b --steps 4)
				tools/bench_gpu.sh --stacks tern,unsloth --tern "rule=$PWD/build-cuda/tern" \
					--tern "ce128=$PWD/build-cuda/tern" --tern-env ce128=TERN_CE_CHUNK=128 \
					--tern-set backend=cuda --out "$out/perf-ce" "${args[@]}" || rc=1
				cat "$out/perf-ce/table.md" 2>/dev/null
				;;
			graphs-gen)
				for preset in llama3.2-1b llama3-8b; do
					for g in 0 1; do
						echo "== tern generate decode, $preset, TERN_CUDA_GRAPHS=$g"
						TERN_CUDA_GRAPHS=$g timeout 280 tools/bench_generate.sh --backend cuda \
							--tern "$PWD/build-cuda/tern" --stacks tern --preset "$preset" --prompt 128 \
							--new 128 --runs 2 --out "$out/perf-graphs-gen-$preset-$g" 2>&1 |
							grep -E "run [0-9]|failed" || rc=1
					done
					if cmp -s "$out/perf-graphs-gen-$preset-0/tern.2.ids" \
						"$out/perf-graphs-gen-$preset-1/tern.2.ids"; then
						echo "$preset: the same ids with and without graphs"
					else
						echo "$preset: DIFFERENT ids with and without graphs (or a run failed)"
						rc=1
					fi
				done
				;;
			graphs-train)
				args=("$@")
				[ ${#args[@]} -gt 0 ] || args=(--shapes 1b,8b --steps 4)
				tools/bench_gpu.sh --stacks tern --tern "graphs-off=$PWD/build-cuda/tern" \
					--tern "graphs-on=$PWD/build-cuda/tern" --tern-env graphs-off=TERN_CUDA_GRAPHS=0 \
					--tern-env graphs-on=TERN_CUDA_GRAPHS=1 --tern-set backend=cuda \
					--out "$out/perf-graphs-train" "${args[@]}" || rc=1
				for f in "$out"/perf-graphs-train/logs/*graphs-o*; do
					[ -f "$f" ] || continue
					echo "-- $(basename "$f"): $(grep -a -m1 -o 'CUDA graphs o[nf]*' "$f")"
					grep -a -oE "step [0-9]+/[0-9]+  loss [0-9.]+  lr [^ ]+  grad norm [0-9.]+|[0-9.]+ tok/s" "$f" |
						head -12
				done
				;;
			mem | mem-base)
				# device memory with the layer inputs offloaded (mem, beside Unsloth) and on
				# the device (mem-base, tern alone): the peaks ("mem" of the progress lines, the
				# backend's c->used) against Unsloth's max_memory_allocated, and tokens/s
				args=("$@")
				[ ${#args[@]} -gt 0 ] || args=(--shapes 1b,8b --steps 4)
				gc=offload stacks=tern,unsloth
				[ "$part" = mem ] || gc=true stacks=tern
				TERN_PROFILE=1 tools/bench_gpu.sh --stacks "$stacks" --tern "$gc=$PWD/build-cuda/tern" \
					--tern-set backend=cuda --tern-set compute_dtype=bf16 \
					--tern-set gradient_checkpointing=$gc --out "$out/perf-$part" "${args[@]}" || rc=1
				cat "$out/perf-$part/table.md" 2>/dev/null
				;;
			*)
				echo "cuda_device_check: perf: unknown part '$part' (test, ops, lora, train, mem, mem-base, decode," \
					"ce, graphs-gen, graphs-train)" >&2
				exit 2
				;;
			esac
		done
		exit $rc
	fi
	nvidia-smi -L 2>&1 | tee "$out/nvidia-smi.txt"
	ldd build-cuda/tern | grep -E "cuda|cublas" | tee "$out/ldd.txt"
	build-cuda/tern devices 2>&1 | tee "$out/devices.txt"
	rc=0
	shift
	# name:binary:extra environment:seconds
	tests="test_cuda:test_cuda::120 test_ops:test_ops::900 test_golden:test_golden::900
		test_golden_moe:test_golden:TERN_GOLDEN_CASE=moe:300 test_stream:test_stream::300
		test_generate:test_generate::300"
	for spec in $tests; do
		IFS=: read -r t bin env lim <<<"$spec"
		if [ $# -gt 0 ] && ! printf '%s\n' "$@" | grep -qx "$t"; then
			continue
		fi
		echo "== $t (cuda)"
		start=$(date +%s)
		env $env timeout "${TEST_TIMEOUT:-$lim}" "build-cuda/tests/$bin" >"$out/$t.txt" 2>&1
		r=$?
		echo "$t: exit $r in $(($(date +%s) - start)) s; $(tail -1 "$out/$t.txt")"
		grep -E "FAIL|fail " "$out/$t.txt" | head -40
		[ $r = 0 ] || rc=1
	done
	[ $# -gt 0 ] && exit $rc
	echo "== bench ops (cuda, T=2048 O=I=4096; the H200's dense bf16 peak is about 790 TFLOP/s)"
	for p in f32 f16 bf16; do
		build-cuda/tern bench ops --backend cuda --T 2048 --O 4096 --I 4096 --prec "$p" --peak 790 \
			--seconds "${BENCH_SECONDS:-1}" 2>&1 | tee "$out/bench_$p.txt"
	done
	exit $rc
	;;
*)
	echo "usage: tools/cuda_device_check.sh build|run|perf" >&2
	exit 2
	;;
esac
