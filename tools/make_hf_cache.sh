#!/bin/sh
# Builds a Hugging Face cache (huggingface_hub's layout) from model directories, so that configs
# naming Hub ids (`base_model: mistralai/Mistral-7B-v0.1`) resolve without a network:
#
#   tools/make_hf_cache.sh CACHE_DIR [SRC_DIR]
#   HF_HUB_CACHE=CACHE_DIR HF_HUB_OFFLINE=1 tern plan config.yaml
#
# SRC_DIR (default tests/data/hf_configs: the published config.json of the base models of
# axolotl's example configs) holds ORG/NAME/ directories; each becomes
#   CACHE_DIR/models--ORG--NAME/refs/main                  a commit (sha1 of "ORG/NAME")
#   CACHE_DIR/models--ORG--NAME/snapshots/<commit>/<file>  -> ../../blobs/<git blob sha1 of file>
# Existing entries are replaced; other repositories in CACHE_DIR are left alone.
# To train a step of such a config on a small stand-in, give SRC_DIR an ORG/NAME that links to a
# small model directory (ln -s .../tests/data/models/mistral SRC/mistralai/Mistral-7B-v0.1).
set -eu
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: tools/make_hf_cache.sh CACHE_DIR [SRC_DIR]" >&2
	exit 2
fi
cache=$1
src=${2:-$(dirname "$0")/../tests/data/hf_configs}
[ -d "$src" ] || { echo "make_hf_cache.sh: $src: no such directory" >&2; exit 1; }
sha1() { sha1sum | cut -d' ' -f1; }
n=0
for dir in "$src"/*/*/; do
	[ -d "$dir" ] || continue
	name=$(basename "$dir")
	org=$(basename "$(dirname "$dir")")
	repo=$cache/models--$org--$name
	commit=$(printf '%s' "$org/$name" | sha1)
	rm -rf "$repo"
	mkdir -p "$repo/blobs" "$repo/refs" "$repo/snapshots/$commit"
	printf '%s' "$commit" >"$repo/refs/main"
	for f in "$dir"*; do
		[ -f "$f" ] || continue
		blob=$( { printf 'blob %s\0' "$(wc -c <"$f" | tr -d ' ')"; cat "$f"; } | sha1)
		cp "$f" "$repo/blobs/$blob"
		ln -s "../../blobs/$blob" "$repo/snapshots/$commit/$(basename "$f")"
	done
	n=$((n + 1))
done
echo "make_hf_cache.sh: $n models in $cache"
