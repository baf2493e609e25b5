#!/usr/bin/env bash
# tools/bench_generate.sh — decode speed of `tern generate` (batch 1, greedy) against transformers +
# bitsandbytes `generate` on the same synthetic model, and as a fraction of the memory-bandwidth
# bound (weight bytes read per token / bandwidth). Issue 13's target on an H200 with Llama-3-8B
# shapes in NF4-DQ: >= 5x transformers + bitsandbytes and >= 50 % of the bound.
#
#   tools/bench_generate.sh [--preset llama3-8b] [--prompt 128] [--new 256] [--bandwidth 4.8e12]
#                           [--tern BIN] [--out DIR] [--models DIR] [--stacks tern,hf]
#                           [--backend vulkan|cuda|cpu|ref] [--runs 3] [--compare]
#                           [--compute-dtype auto|f32|f16|bf16]
#
# Meant for the GPU machine (docs/PERFORMANCE.md, "How to run the GPU benchmark"; it has not been
# run yet: no GPU was lent in the session that wrote it). It writes (or reuses) the synthetic
# model with tools/make_synthetic_model.py, a tern config (base_format nf4-dq, backend vulkan) so
# that the pack file is built once and reused, then:
#   tern  BIN generate CONFIG --ids <prompt> --max-new-tokens N --print-ids, --runs times (the first
#         compiles the shaders and may build the pack); decode tok/s from its stderr line
#         ("decode X tok/s": the tokens after the first over the decode steps' wall time), and what
#         one decode step costs the backend (op calls, device commands, barriers, submissions, host
#         waits, uploads, downloads: its "per decode step" line). With --compare, each run is done
#         twice: with TERN_DECODE_LEGACY=1 (the decode path before issue 13's speed work: logits
#         downloaded and sampled on the host, the GEMM shaders for one token) and without; both
#         must give the same ids (checked), and the table gets a "legacy" row.
#   hf    transformers + bitsandbytes nf4 with double quantization, bf16 compute, sdpa attention:
#         generate(do_sample=False, min_new_tokens=N) timed with N and with 1 new token
#         (torch.cuda.synchronize around each); decode tok/s = (N - 1) / (t_N - t_1).
# The bound: bytes of every projection in NF4-DQ (0.5 B per weight + 1 B absmax per 64 + 4 B per
# 256 blocks), the lm_head and the norms in bf16, per token; bound tok/s = bandwidth / bytes.
# Results: OUT/results.json and a table on stdout.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
NV_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
PRESET=llama3-8b
PROMPT=128
NEW=256
BW=4.8e12 # H200 HBM3e, bytes/s
TERN=$ROOT/build/tern
OUT=$ROOT/outputs/bench-generate
MODELS=/tmp/tern-bench-models
STACKS=tern,hf
BACKEND=vulkan
RUNS=3
COMPARE=0
COMPUTE=auto
PY=${PYTHON:-python3}

while [ $# -gt 0 ]; do
	case $1 in
	--preset) PRESET=$2; shift 2 ;;
	--prompt) PROMPT=$2; shift 2 ;;
	--new) NEW=$2; shift 2 ;;
	--bandwidth) BW=$2; shift 2 ;;
	--tern) TERN=$2; shift 2 ;;
	--out) OUT=$2; shift 2 ;;
	--models) MODELS=$2; shift 2 ;;
	--stacks) STACKS=$2; shift 2 ;;
	--backend) BACKEND=$2; shift 2 ;;
	--runs) RUNS=$2; shift 2 ;;
	--compare) COMPARE=1; shift ;;
	--compute-dtype) COMPUTE=$2; shift 2 ;;
	-h | --help) sed -n '2,34p' "$0"; exit 0 ;;
	*) echo "bench_generate: unknown option $1 (see --help)" >&2; exit 2 ;;
	esac
done
[ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$NV_ICD" ] && export VK_DRIVER_FILES=$NV_ICD
for d in "$ROOT/.bnb" "$ROOT/.unsloth"; do [ -d "$d" ] && export PYTHONPATH="$d${PYTHONPATH:+:$PYTHONPATH}"; done
mkdir -p "$OUT" "$MODELS"
model=$MODELS/$PRESET
if [ ! -f "$model/config.json" ]; then
	echo "writing the synthetic $PRESET model to $model"
	"$PY" "$ROOT/tools/make_synthetic_model.py" "$model.partial" --preset "$PRESET" && mv "$model.partial" "$model" || exit 1
fi
ids=$("$PY" -c "import json, random; v=json.load(open('$model/config.json'))['vocab_size']; r=random.Random(1); print(','.join(str(r.randrange(10, min(v, 30000))) for _ in range($PROMPT)))")

# weight bytes per token and the bound
read -r bytes bound <<<"$("$PY" - "$model/config.json" "$BW" <<'P'
import json, sys
c = json.load(open(sys.argv[1])); bw = float(sys.argv[2])
D, F, L, V = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
H, Hkv = c["num_attention_heads"], c["num_key_value_heads"]
Dh = c.get("head_dim") or D // H
proj = L * (2 * D * H * Dh + 2 * D * Hkv * Dh + 3 * D * F)
nf4 = proj * 0.5 + proj / 64 + proj / 64 / 256 * 4
b = nf4 + V * D * 2 * (0 if c.get("tie_word_embeddings") else 1) + (2 * L + 1) * D * 2
print(int(b), bw / b)
P
)"
echo "weights read per token: $bytes bytes; bound at $BW B/s: $bound tok/s"

tern_tps=
legacy_tps=
# run_tern TAG ENV...: RUNS runs; the last run's tok/s into the variable named TAG_tps
run_tern() {
	local tag=$1 i tps=
	shift
	for i in $(seq 1 "$RUNS"); do
		env "$@" "$TERN" generate "$OUT/gen.yaml" --no-adapter --ids "$ids" --max-new-tokens "$NEW" --print-ids \
			>"$OUT/$tag.$i.ids" 2>"$OUT/$tag.$i.log" || { echo "$tag failed: $(tail -1 "$OUT/$tag.$i.log")"; return 1; }
		tps=$(sed -n 's/.*decode \([0-9.]*\) tok\/s.*/\1/p' "$OUT/$tag.$i.log")
		echo "$tag run $i: $(grep 'tok/s' "$OUT/$tag.$i.log" | sed 's/^tern: //')"
		grep 'per decode step' "$OUT/$tag.$i.log" | sed "s/^tern: /$tag run $i: /"
	done
	printf -v "${tag}_tps" %s "$tps"
}
if [[ ,$STACKS, == *,tern,* ]]; then
	cat >"$OUT/gen.yaml" <<Y
base_model: $model
adapter: qlora
base_format: nf4-dq
backend: $BACKEND
compute_dtype: $COMPUTE
output_dir: $OUT/tern
datasets:
  - path: /dev/null
    type: completion
Y
	if [ "$COMPARE" = 1 ]; then
		run_tern legacy TERN_DECODE_LEGACY=1
		run_tern tern TERN_DECODE_LEGACY=0
		if [ -n "$legacy_tps" ] && [ -n "$tern_tps" ] && ! cmp -s "$OUT/legacy.1.ids" "$OUT/tern.1.ids"; then
			echo "bench_generate: the legacy and the new decode gave different ids:" >&2
			cat "$OUT/legacy.1.ids" "$OUT/tern.1.ids" >&2
		fi
	else
		run_tern tern
	fi
fi

hf_tps=
if [[ ,$STACKS, == *,hf,* ]]; then
	"$PY" - "$model" "$ids" "$NEW" >"$OUT/hf.log" 2>&1 <<'P'
import sys, time, torch
from transformers import AutoModelForCausalLM, BitsAndBytesConfig
path, ids, n = sys.argv[1], [int(x) for x in sys.argv[2].split(",")], int(sys.argv[3])
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.bfloat16)
m = AutoModelForCausalLM.from_pretrained(path, quantization_config=q, dtype=torch.bfloat16,
                                         attn_implementation="sdpa", device_map="cuda:0")
x = torch.tensor([ids], device="cuda:0")
def run(k):
    torch.cuda.synchronize(); t = time.perf_counter()
    m.generate(x, attention_mask=torch.ones_like(x), do_sample=False, max_new_tokens=k, min_new_tokens=k,
               pad_token_id=0)
    torch.cuda.synchronize(); return time.perf_counter() - t
run(8)  # warm-up
t1, tn = run(1), run(n)
print(f"hf decode {(n - 1) / (tn - t1):.1f} tok/s (prefill+1 {t1:.3f} s, {n} tokens {tn:.3f} s)")
P
	hf_tps=$(sed -n 's/^hf decode \([0-9.]*\) tok\/s.*/\1/p' "$OUT/hf.log")
	echo "${hf_tps:+hf: $(grep '^hf decode' "$OUT/hf.log")}${hf_tps:-hf failed: $(tail -1 "$OUT/hf.log")}"
fi

"$PY" - "$OUT/results.json" "$PRESET" "$PROMPT" "$NEW" "$bytes" "$bound" "${tern_tps:-0}" "${hf_tps:-0}" \
	"${legacy_tps:-0}" "$BACKEND" <<'P'
import json, sys
out, preset, prompt, new, b, bound, t, h, lg, backend = sys.argv[1:]
b, bound, t, h, lg = float(b), float(bound), float(t), float(h), float(lg)
r = dict(preset=preset, backend=backend, prompt=int(prompt), new=int(new), weight_bytes_per_token=b,
         bound_tok_s=bound, tern_tok_s=t or None, legacy_tok_s=lg or None, hf_bnb_tok_s=h or None,
         tern_vs_hf=(t / h) if t and h else None, tern_of_bound=(t / bound) if t else None)
json.dump(r, open(out, "w"), indent=2)
print("| preset | path | tern tok/s | hf+bnb tok/s | tern / hf | bound tok/s | tern / bound |")
print("|---|---|---|---|---|---|---|")
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
rows = ([("legacy", lg or None)] if lg else []) + [("new" if lg else backend, t or None)]
for name, v in rows:
    print(f"| {preset} | {name} | {f(v)} | {f(r['hf_bnb_tok_s'])} | {f(v / h if v and h else None, 2)} | "
          f"{bound:.1f} | {f(v / bound if v else None, 3)} |")
P
