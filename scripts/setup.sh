#!/usr/bin/env bash
# Sets tern up on Debian 12: installs the packages it needs (only those missing; run as root or
# with sudo), then configures and builds into build/.
#
#   scripts/setup.sh [extra cmake options, e.g. -DTERN_SANITIZE=ON]
#
# TERN_JOBS sets the build parallelism (default: all cores). .ci/run uses this script too.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
	cmake gcc libc6-dev make pkg-config          # toolchain
	libvulkan-dev glslang-tools spirv-tools       # Vulkan loader + headers, GLSL -> SPIR-V
	mesa-vulkan-drivers                           # lavapipe: Vulkan on the CPU (plus Mesa's GPU drivers)
	vulkan-validationlayers vulkan-tools          # the Khronos validation layer, vulkaninfo
	libyaml-dev                                   # configuration files
	libopenblas-dev                               # the fast CPU backend's GEMM (OpenBLAS)
	libjansson-dev libpcre2-dev libutf8proc-dev   # JSON, pre-tokenizer regexes, Unicode NFC
	libcurl4-openssl-dev                          # base_model Hub ids: downloads into the HF cache
	libopenmpi-dev openmpi-bin                    # data parallel over several processes (mpirun)
	python3                                       # tools/ (golden-vector generators), tests/hub_server.py
)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done

if ((${#missing[@]})); then
	if ! command -v apt-get >/dev/null; then
		echo "setup.sh: missing packages (${missing[*]}) and no apt-get to install them" >&2
		exit 1
	fi
	sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		if ! command -v sudo >/dev/null; then
			echo "setup.sh: run as root to install: ${missing[*]}" >&2
			exit 1
		fi
		sudo=(sudo)
	fi
	echo "setup.sh: installing ${missing[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DTERN_VALIDATE=ON "$@"
cmake --build build -j"${TERN_JOBS:-$(nproc)}"
