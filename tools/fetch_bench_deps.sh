#!/bin/sh
# Recreates the git-ignored folders that tools/bench_gpu.sh puts on PYTHONPATH on the GPU
# machine (which has torch, transformers, peft and accelerate but no network):
#   .bnb/      bitsandbytes 0.50.2, only its CUDA 13.0 and CPU libraries (about 5 MB of 43)
#   .unsloth/  unsloth and unsloth_zoo 2026.10.9 (without unsloth's 82 MB studio folder), trl 1.15.0,
#              datasets 4.8.5, dill 0.4.1, multiprocess 0.70.19, cut_cross_entropy 25.1.1
#   .hf4/      transformers 4.57.6, huggingface_hub 0.36.2, tokenizers 0.22.2 (69 MB), and the same
#              as .hf4.tgz (14 MB: carry this one; tools/bench_moe_12gb.sh unpacks it), for
#              tools/bench_moe_12gb.sh: transformers 5 cannot load a bitsandbytes 4-bit MoE
#              checkpoint (its fused experts are no nn.Linear), 4.57 loads the per-expert one
# Run it here, where PyPI is reachable, from anywhere in the repository. Needs pip and unzip.
# Everything else these wheels require is already on the GPU machine or is imported only on
# paths the benchmark does not take, inside try/except (xformers, torchao, msgspec, pydantic,
# tyro, nest_asyncio, hf_transfer, diffusers).
set -eu
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

dl() { # dl DEST SPEC... : wheels for CPython 3.12 on x86-64 Linux, no dependencies
	d=$1
	shift
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
		--implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
		--platform manylinux_2_17_x86_64 -d "$d" "$@"
}

dl "$tmp/bnb" bitsandbytes==0.50.2
dl "$tmp/us" unsloth==2026.10.9 unsloth_zoo==2026.10.9 trl==1.15.0 datasets==4.8.5 dill==0.4.1 \
	multiprocess==0.70.19 cut_cross_entropy==25.1.1

dl "$tmp/hf4" transformers==4.57.6 huggingface_hub==0.36.2 tokenizers==0.22.2

rm -rf .bnb .unsloth .hf4 .hf4.tgz
mkdir -p .bnb .unsloth .hf4
unzip -q "$tmp"/bnb/bitsandbytes-*.whl -d .bnb -x 'bitsandbytes/libbitsandbytes_cuda1[12]*' \
	'bitsandbytes/libbitsandbytes_cuda132.so' 'bitsandbytes/libbitsandbytes_rocm*' \
	'bitsandbytes/libbitsandbytes_xpu*'
for w in "$tmp"/us/*.whl; do
	case $w in
	*/unsloth-2*) unzip -q -o "$w" -d .unsloth -x 'studio/*' ;;
	*) unzip -q -o "$w" -d .unsloth ;;
	esac
done

for w in "$tmp"/hf4/*.whl; do unzip -q -o "$w" -d .hf4; done
tar -czf .hf4.tgz .hf4

ex=.git/info/exclude
[ -d .git ] || ex=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$ex")"
for p in /.bnb/ /.unsloth/ /.gl/ /.hf4/ /.hf4.tgz; do
	grep -qxF "$p" "$ex" 2>/dev/null || echo "$p" >>"$ex"
done
du -sh .bnb .unsloth .hf4 .hf4.tgz
