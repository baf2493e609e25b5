#!/bin/sh
# base_model as a Hub id against a local stand-in for the Hub (tests/hub_server.py, offline):
# tern plan fetches only config.json into the HF cache layout; tern train fetches the tokenizer
# files and every shard of an index (LFS files through a CDN redirect, checked against their
# sha256), resumes a dropped download in the same run and in the next one, refuses a corrupt
# one, and answers 401 / 403 / 404 / offline with one line each. Exits 77 (not run) without python3.
# Usage: cli_hub.sh TERN SOURCE_DIR
tern=$1
src=$2
if ! command -v python3 >/dev/null 2>&1; then
	echo "not run: python3 is missing (tests/hub_server.py)"
	exit 77
fi
tmp=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$tmp"' EXIT
fail=0
pass=0
ok() { pass=$((pass + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

py=$src/tests/hub_server.py
python3 "$py" split "$src/demo/model" "$tmp/sharded" || { echo "FAIL: split"; exit 1; }
# the shards' sha256 as the Hub names their blobs
sha1=$(python3 -c "import hashlib,sys;print(hashlib.sha256(open(sys.argv[1],'rb').read()).hexdigest())" "$tmp/sharded/model-00001-of-00002.safetensors")
mkdir -p "$tmp/nomodel" && cp "$src/demo/model/"*.json "$tmp/nomodel/"
python3 "$py" serve --port-file "$tmp/port" --log "$tmp/log" \
	--repo "test/demo=$src/demo/model" --repo "test/sharded=$tmp/sharded" \
	--repo "test/gated=$src/demo/model,gated" --repo "test/drop1=$tmp/sharded,drops=1" \
	--repo "test/flaky=$tmp/sharded,drops=5" --repo "test/corrupt=$tmp/sharded,corrupt" \
	--repo "test/nomodel=$tmp/nomodel" &
server=$!
i=0
while [ ! -s "$tmp/port" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
[ -s "$tmp/port" ] || { echo "FAIL: the server did not start"; exit 1; }

export HF_ENDPOINT="http://127.0.0.1:$(cat "$tmp/port")"
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost # libcurl honours *_proxy
export HF_HOME="$tmp/home"
unset HF_HUB_CACHE HUGGINGFACE_HUB_CACHE HF_TOKEN HUGGING_FACE_HUB_TOKEN HF_TOKEN_PATH HF_HUB_OFFLINE TRANSFORMERS_OFFLINE
cache=$HF_HOME/hub

# cfg ID [EXTRA...]: the demo config on a Hub id and 16 of its rows
head -n 16 "$src/demo/data/train.jsonl" >"$tmp/rows.jsonl"
cfg() {
	id=$1
	shift
	sed -e "s|^base_model: .*|base_model: $id|" -e "s|demo/data/train.jsonl|$tmp/rows.jsonl|" "$src/configs/demo.yaml" >"$tmp/c.yaml"
	for x in "$@"; do printf '%s\n' "$x" >>"$tmp/c.yaml"; done
}
# train: one small step on the CPU
train() {
	"$tern" train "$tmp/c.yaml" --set backend=cpu --set max_steps=1 --set val_set_size=0 --set eval_steps=0 \
		--set sequence_len=64 --set micro_batch_size=1 --set sample_packing=false \
		--set output_dir="$tmp/out" --set max_time=0 "$@" >"$tmp/out.txt" 2>"$tmp/err"
	rc=$?
}
plan() { # explicit budgets: no device needed
	"$tern" plan "$tmp/c.yaml" --device-memory 4GB --host-memory 8GB "$@" >"$tmp/out.txt" 2>"$tmp/err"
	rc=$?
}
# one_line WANT: exit 1 with one stderr line holding WANT
one_line() {
	[ "$rc" = 1 ] && [ "$(grep -c . "$tmp/err")" = 1 ] && grep -q -- "$1" "$tmp/err"
}

# 1. plan: only config.json, into the cache's layout
cfg test/sharded
: >"$tmp/log"
plan
[ $rc = 0 ] && grep -q "^verdict: fits" "$tmp/out.txt" && ok || bad "plan test/sharded: $(cat "$tmp/err")"
[ "$(grep -c . "$tmp/log")" = 2 ] && grep -q "^HEAD /test/sharded/resolve/main/config.json" "$tmp/log" &&
	grep -q "^GET /test/sharded/resolve/main/config.json" "$tmp/log" && ok ||
	bad "plan asked for more than config.json: $(cat "$tmp/log")"
r=$cache/models--test--sharded
commit=$(cat "$r/refs/main" 2>/dev/null)
[ ${#commit} = 40 ] && [ -L "$r/snapshots/$commit/config.json" ] &&
	cmp -s "$r/snapshots/$commit/config.json" "$src/demo/model/config.json" &&
	[ "$(ls "$r/snapshots/$commit")" = config.json ] && ok || bad "cache layout after plan: $(find "$r")"
# again, offline: from the cache, no request
: >"$tmp/log"
HF_HUB_OFFLINE=1 plan
[ $rc = 0 ] && [ ! -s "$tmp/log" ] && ok || bad "offline plan from the cache: $(cat "$tmp/err" "$tmp/log")"
# tern info with a Hub id reads the same cache
HF_HUB_OFFLINE=1 "$tern" info test/sharded >"$tmp/out.txt" 2>"$tmp/err" && grep -q "^architecture   llama" "$tmp/out.txt" &&
	ok || bad "info test/sharded: $(cat "$tmp/err")"

# 2. offline and not cached: one line naming the cache path
cfg test/demo
HF_HUB_OFFLINE=1 train
one_line "test/demo: not a directory, and not in the Hugging Face cache (no $cache/models--test--demo/refs/main) while HF_HUB_OFFLINE is set" &&
	[ ! -e "$tmp/out" ] && ok || bad "offline refusal: rc $rc: $(cat "$tmp/err")"
TRANSFORMERS_OFFLINE=1 plan
one_line "while TRANSFORMERS_OFFLINE is set" && ok || bad "TRANSFORMERS_OFFLINE: $(cat "$tmp/err")"

# 3. train on a sharded repository: every shard, the tokenizer files, checksums; the adapter
#    names the Hub id
cfg test/sharded
: >"$tmp/log"
train
[ $rc = 0 ] && grep -q "^step 1/1" "$tmp/out.txt" && ok || bad "train test/sharded: $(cat "$tmp/err")"
for f in tokenizer.json tokenizer_config.json special_tokens_map.json generation_config.json \
	model.safetensors.index.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors; do
	cmp -s "$r/snapshots/$commit/$f" "$tmp/sharded/$f" && ok || bad "train did not fetch $f"
done
[ "$(readlink "$r/snapshots/$commit/model-00001-of-00002.safetensors")" = "../../blobs/$sha1" ] && ok ||
	bad "an LFS file's blob is named by its sha256: $(ls -l "$r/snapshots/$commit")"
grep -q "^GET /cdn/test/sharded/$sha1" "$tmp/log" && ok || bad "the shard did not come through the CDN redirect"
! grep -q "^GET .*/config.json " "$tmp/log" && ok || bad "config.json fetched again though cached: $(cat "$tmp/log")"
grep -q '"base_model_name_or_path": "test/sharded"' "$tmp/out/adapter/adapter_config.json" && ok ||
	bad "adapter_config.json: $(grep base_model "$tmp/out/adapter/adapter_config.json")"
[ ! -s "$tmp/err" ] && ok || bad "small downloads are quiet off a terminal: $(cat "$tmp/err")"
# a second run downloads nothing
: >"$tmp/log"
rm -rf "$tmp/out"
train
[ $rc = 0 ] && [ ! -s "$tmp/log" ] && ok || bad "second train asked the Hub: $(cat "$tmp/log" "$tmp/err")"

# without a network, a snapshot that lacks only optional files is used, with a warning
rm -f "$r/snapshots/$commit/generation_config.json"
rm -rf "$tmp/out"
HF_ENDPOINT=http://127.0.0.1:1 train
[ $rc = 0 ] && grep -q "warning: test/sharded: the Hub at http://127.0.0.1:1 cannot be reached (.*); using the cached snapshot $commit$" "$tmp/err" &&
	ok || bad "no network, cache enough: rc $rc: $(cat "$tmp/err")"

# 4. a connection dropped mid-file: resumed with a Range request in the same run
cfg test/drop1
: >"$tmp/log"
rm -rf "$tmp/out"
train
[ $rc = 0 ] && grep -q "^GET /cdn/test/drop1/$sha1 bytes=100000-" "$tmp/log" && ok ||
	bad "resume in the same run: $(cat "$tmp/err" "$tmp/log")"
cmp -s "$cache/models--test--drop1/blobs/$sha1" "$tmp/sharded/model-00001-of-00002.safetensors" && ok ||
	bad "the resumed shard differs"

# 5. dropped more often than tern retries: the run stops with one line, keeps the partial file,
#    and the next run resumes it from where it stopped
cfg test/flaky
rm -rf "$tmp/out"
train
inc=$cache/models--test--flaky/blobs/$sha1.incomplete
one_line "test/flaky: model-00001-of-00002.safetensors: the connection dropped 5 times" && [ -s "$inc" ] && ok ||
	bad "flaky first run: rc $rc: $(cat "$tmp/err")"
kept=$(wc -c <"$inc")
: >"$tmp/log"
train
[ $rc = 0 ] && grep -q "^GET /cdn/test/flaky/$sha1 bytes=$kept-" "$tmp/log" && [ ! -e "$inc" ] && ok ||
	bad "flaky second run did not resume at $kept: $(cat "$tmp/err") $(grep cdn "$tmp/log")"
cmp -s "$cache/models--test--flaky/blobs/$sha1" "$tmp/sharded/model-00001-of-00002.safetensors" && ok ||
	bad "the shard resumed across runs differs"

# 6. a corrupt download (right ETag, a flipped byte): refused, nothing kept
cfg test/corrupt
rm -rf "$tmp/out"
train
one_line "test/corrupt: model-00001-of-00002.safetensors: sha256 [0-9a-f]* differs from the Hub's $sha1" &&
	[ ! -e "$cache/models--test--corrupt/blobs/$sha1" ] && [ ! -e "$cache/models--test--corrupt/blobs/$sha1.incomplete" ] &&
	[ ! -e "$cache/models--test--corrupt/snapshots/$(cat "$cache/models--test--corrupt/refs/main")/model-00001-of-00002.safetensors" ] &&
	ok || bad "corrupt download: rc $rc: $(cat "$tmp/err")"

# 7. gated: 401 without a token, 403 with another token's account, fine with HF_TOKEN or the token file
cfg test/gated
plan
one_line "test/gated: 401 from the Hub (a gated model): set HF_TOKEN to a token with access (https://huggingface.co/settings/tokens)" &&
	ok || bad "gated without a token: rc $rc: $(cat "$tmp/err")"
HF_TOKEN=wrong plan
one_line "test/gated: 403 from the Hub: the model is gated" && ok || bad "gated, wrong token: $(cat "$tmp/err")"
: >"$tmp/log"
HF_TOKEN=test-token plan
[ $rc = 0 ] && grep -q " Bearer_test-token$" "$tmp/log" && ok ||
	bad "gated with HF_TOKEN: $(cat "$tmp/err")"
rm -rf "$cache/models--test--gated"
mkdir -p "$HF_HOME" && echo test-token >"$HF_HOME/token"
plan
[ $rc = 0 ] && ok || bad "gated with \$HF_HOME/token: $(cat "$tmp/err")"
rm -f "$HF_HOME/token"

# 8. 404s: no such repository (a typo of a local path reads the same), no such revision, no weights
cfg test/nothere
plan
one_line "test/nothere: not a directory, and 401 from the Hub: no public model of that name (check the path or the id" && ok ||
	bad "401 RepoNotFound: $(cat "$tmp/err")"
HF_TOKEN=test-token plan
one_line "test/nothere: not a directory, and 404 from the Hub: no model of that name" && ok ||
	bad "404 repo: $(cat "$tmp/err")"
cfg test/demo "revision_of_model: v9"
plan
one_line "test/demo: 404 from the Hub: no revision 'v9'" && ok || bad "404 revision: $(cat "$tmp/err")"
cfg test/nomodel
rm -rf "$tmp/out"
train
one_line "test/nomodel: 404 from the Hub: the repository has no model.safetensors" && [ ! -e "$tmp/out/adapter" ] && ok ||
	bad "404 weights: rc $rc: $(cat "$tmp/err")"
# a commit hash as revision_of_model: snapshots/<commit>, no refs/<commit>
c=$(python3 -c "import hashlib;print(hashlib.sha1(b'test/demo').hexdigest())")
cfg test/demo "revision_of_model: $c"
plan
[ $rc = 0 ] && [ -e "$cache/models--test--demo/snapshots/$c/config.json" ] && [ ! -e "$cache/models--test--demo/refs/$c" ] &&
	ok || bad "revision_of_model: commit: $(cat "$tmp/err")"

# 9. no network: one line naming the endpoint and the cache
cfg test/other
HF_ENDPOINT=http://127.0.0.1:1 plan
one_line "test/other: not a directory, and the Hub at http://127.0.0.1:1 cannot be reached (.*): check the path, the network or HF_ENDPOINT; HF_HUB_OFFLINE=1 uses only the Hugging Face cache ($cache/models--test--other)" &&
	ok || bad "no network: $(cat "$tmp/err")"

# 10. tools/make_hf_cache.sh: the base models of axolotl's examples in a cache, offline; their
#     published sizes; a plan on a Hub id prints what the plan on the same directory prints
sh "$src/tools/make_hf_cache.sh" "$tmp/hfc" >/dev/null || bad "make_hf_cache.sh failed"
while read -r id want; do
	HF_HUB_CACHE="$tmp/hfc" HF_HUB_OFFLINE=1 "$tern" info "$id" >"$tmp/out.txt" 2>"$tmp/err"
	grep -q "^sizes          $want\$" "$tmp/out.txt" && ok || bad "info $id: $(cat "$tmp/err") $(grep sizes "$tmp/out.txt")"
done <<'LIST'
mistralai/Mistral-7B-v0.1 L 32, D 4096, F 14336, H 32, Hkv 8, Dh 128, V 32000
mistralai/Mixtral-8x7B-v0.1 L 32, D 4096, F 14336, H 32, Hkv 8, Dh 128, V 32000
NousResearch/Llama-2-7b-hf L 32, D 4096, F 11008, H 32, Hkv 32, Dh 128, V 32000
NousResearch/Meta-Llama-3-8B L 32, D 4096, F 14336, H 32, Hkv 8, Dh 128, V 128256
NousResearch/Meta-Llama-3-8B-Instruct L 32, D 4096, F 14336, H 32, Hkv 8, Dh 128, V 128256
NousResearch/Llama-3.2-1B L 16, D 2048, F 8192, H 32, Hkv 8, Dh 64, V 128256
Qwen/Qwen2-7B L 28, D 3584, F 18944, H 28, Hkv 4, Dh 128, V 152064
Qwen/Qwen2.5-0.5B L 24, D 896, F 4864, H 14, Hkv 2, Dh 64, V 151936
Qwen/Qwen3-8B L 36, D 4096, F 12288, H 32, Hkv 8, Dh 128, V 151936
Qwen/Qwen3-32B L 64, D 5120, F 25600, H 64, Hkv 8, Dh 128, V 151936
LIST
printf 'base_model: %s\nadapter: qlora\nlora_r: 16\nlora_alpha: 32\nlora_target_linear: true\ndatasets:\n  - path: x.jsonl\n    type: alpaca\nsequence_len: 2048\nmicro_batch_size: 1\ndevice_memory: 12GB\nhost_memory: 16GB\n' \
	mistralai/Mistral-7B-v0.1 >"$tmp/m.yaml"
HF_HUB_CACHE="$tmp/hfc" HF_HUB_OFFLINE=1 "$tern" plan "$tmp/m.yaml" >"$tmp/hub.txt" 2>"$tmp/err" &&
	"$tern" plan "$tmp/m.yaml" --set base_model="$src/tests/data/hf_configs/mistralai/Mistral-7B-v0.1" >"$tmp/dir.txt" 2>>"$tmp/err" &&
	cmp -s "$tmp/hub.txt" "$tmp/dir.txt" && grep -q "^verdict: fits" "$tmp/hub.txt" && ok ||
	bad "plan on a Hub id differs from the plan on its directory: $(cat "$tmp/err") $(diff "$tmp/hub.txt" "$tmp/dir.txt")"

# 11. with huggingface_hub installed (not needed otherwise): it reads what tern downloaded, and
#     tern reads what it downloaded, without a request
if python3 -c "import huggingface_hub" 2>/dev/null; then
	HF_HUB_OFFLINE=1 python3 - "$commit" >"$tmp/py.txt" 2>&1 <<'PY'
import sys
from huggingface_hub import scan_cache_dir, try_to_load_from_cache
info = scan_cache_dir()
repo = [r for r in info.repos if r.repo_id == "test/sharded"][0]
revs = {r.commit_hash: r for r in repo.revisions}
assert not info.warnings, info.warnings
assert sys.argv[1] in revs and "main" in revs[sys.argv[1]].refs, revs
assert try_to_load_from_cache("test/sharded", "model-00002-of-00002.safetensors").endswith(sys.argv[1] + "/model-00002-of-00002.safetensors")
print("ok")
PY
	grep -q "^ok$" "$tmp/py.txt" && ok || bad "huggingface_hub reading tern's cache: $(cat "$tmp/py.txt")"
	HF_HOME="$tmp/hfhome" HF_HUB_DISABLE_TELEMETRY=1 HF_HUB_DISABLE_XET=1 python3 - >"$tmp/py.txt" 2>&1 <<'PY'
from huggingface_hub import hf_hub_download
for f in ["config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
          "generation_config.json", "model.safetensors.index.json", "model-00001-of-00002.safetensors",
          "model-00002-of-00002.safetensors"]:
    hf_hub_download("test/sharded", f)
print("ok")
PY
	cfg test/sharded
	rm -rf "$tmp/out"
	: >"$tmp/log"
	HF_HOME="$tmp/hfhome" train
	grep -q "^ok$" "$tmp/py.txt" && [ $rc = 0 ] && [ ! -s "$tmp/log" ] && ok ||
		bad "tern reading huggingface_hub's cache: rc $rc $(cat "$tmp/py.txt" "$tmp/err" "$tmp/log")"
else
	echo "not run: the huggingface_hub cross-check (python3 -m pip install huggingface_hub to run it)"
fi

echo "cli_hub: $pass passed, $fail failed"
[ $fail = 0 ]
