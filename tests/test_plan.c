/* The residency planner on the published config.json of Mistral-7B-v0.1, Meta-Llama-3-8B,
 * Mixtral-8x7B-v0.1 and Meta-Llama-3-70B (tests/data/plan) with one QLoRA setup (nf4-dq, r 16 on
 * every linear, micro_batch 1, sequence_len 2048, checkpointing, 4 micro-batches per step) under
 * device budgets 8/12/24 GiB × host 16/32/64 GiB: every size is checked against arithmetic written
 * here from the shapes (not copied outputs), device totals against the budget, the layer order of
 * the tiers, the smallest budget of refused plans, and the answers to issue 5's questions; and
 * issue 15's: Llama-2-7B (13B) with a ternary base and LoRA on 8 GB (24 GB), all layers resident,
 * checked the same way, next to the same model with an NF4 base. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "train/plan.h"

#include "backend/backend.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

static void check(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void check(bool ok, const char *fmt, ...)
{
	if (ok) {
		passed++;
		return;
	}
	failed++;
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
}

#define GiB ((uint64_t)1 << 30)
#define MiB ((uint64_t)1 << 20)

static uint64_t al(uint64_t x) { return (x + 255) / 256 * 256; } /* pack parts, fp32 views */

/* NF4 with double quantization, blocks of 64: 4-bit codes, one u8 absmax per block, one f32
 * nested scale per 256 blocks (plus the nested offset in the TOC, not in the data). */
static uint64_t nf4dq(uint64_t n)
{
	return al(n / 2) + al((n + 63) / 64) + al(((n + 63) / 64 + 255) / 256 * 4);
}

struct model {
	const char *dir;
	int64_t D, F, L, H, Hkv, V, E, top_k;
	int64_t Dh, Fe; /* 0: D / H, F (Qwen3: head_dim 128; Qwen3-MoE: moe_intermediate_size) */
	bool qk_norm;
};

/* The published shapes (Hugging Face config.json of each model). */
static const struct model models[] = {
	{"mistral-7b-v0.1", 4096, 14336, 32, 32, 8, 32000, 0, 0, 0, 0, false},
	{"meta-llama-3-8b", 4096, 14336, 32, 32, 8, 128256, 0, 0, 0, 0, false},
	{"mixtral-8x7b-v0.1", 4096, 14336, 32, 32, 8, 32000, 8, 2, 0, 0, false},
	{"meta-llama-3-70b", 8192, 28672, 80, 64, 8, 128256, 0, 0, 0, 0, false},
	{"qwen3-30b-a3b", 2048, 6144, 48, 32, 4, 151936, 128, 8, 128, 768, true},
};
#define N_MODELS (int)(sizeof models / sizeof models[0])

enum { M_MISTRAL, M_LLAMA8, M_MIXTRAL, M_LLAMA70, M_QWEN3MOE };

static const int64_t R = 16, T = 2048, ACCUM = 4;

struct expect {
	uint64_t layer, global, fixed, lora_params;
	/* the fixed costs with the layer inputs offloaded (two [T, D] slots instead of L + 1), and
	 * the host bytes of the L - 1 inputs that leave the device */
	uint64_t fixed_off, off_host;
};

/* The config's backend's own bytes (ce_loss's scratch and the reserve) for model m at product
 * precision prec: the backend is auto, so CUDA's where it is built (it comes first), else Vulkan's,
 * else the CPU's. */
static uint64_t backend_bytes(const struct model *m, enum tern_dtype prec)
{
	uint64_t D = (uint64_t)m->D, V = (uint64_t)m->V, Tu = (uint64_t)T;
	(void)D;
#if defined(TERN_HAVE_CUDA)
	/* one scratch the products, attention and ce_loss share, grown to the largest need: ce_loss
	 * min(T, max(T / 16, 64 MiB / (4 V), 128 (D / 2048)^2 for D > 2048), 256 MiB / (4 V)) rows of fp32
	 * logits (whole tiles of 128), the lm_head rows it decodes (32 MiB of them in
	 * fp32; none at bf16, the bf16 head used in place) and at bf16 the chunk's rows in bf16; a
	 * product the largest projection decoded (at most 32 MiB) and at bf16 the widest operand's T
	 * rows in bf16 (at most 64 MiB); attention needs less at these shapes. The whole MiB above;
	 * a reserve of 64 MiB (the 32 MiB cuBLAS workspace, loss terms, rounding) */
	uint64_t Dh = m->Dh ? (uint64_t)m->Dh : D / (uint64_t)m->H, q = (uint64_t)m->H * Dh;
	uint64_t Fx = m->Fe > m->F ? (uint64_t)m->Fe : (uint64_t)m->F, K = D > Fx ? D : Fx;
	K = q > K ? q : K;
	uint64_t W = (q > Fx ? q : Fx) * D, es = prec == TERN_F32 ? 4 : 2;
	uint64_t tc = 64 * MiB / (4 * V), wide = D * D / 32768; /* 128 (D / 2048)^2 */
	tc = Tu / 16 > tc ? Tu / 16 : tc; /* a sixteenth of the logits, when that is more (V > 131072) */
	tc = D > 2048 && wide > tc ? wide : tc; /* at least 128 (D / 2048)^2 tokens (wide models) */
	tc = tc > 256 * MiB / (4 * V) ? 256 * MiB / (4 * V) : tc;
	tc = tc > 128 ? tc / 128 * 128 : tc; /* whole tiles of 128 tokens */
	tc = tc > Tu ? Tu : tc;
	uint64_t rows = 32 * MiB / (D * 4) < V ? 32 * MiB / (D * 4) : V;
	uint64_t ce = tc * V * 4 + (prec == TERN_BF16 ? tc * D * 2 : rows * D * 4);
	uint64_t mm = (W * es < 32 * MiB ? W * es : 32 * MiB) + (prec == TERN_F32        ? 0
								 : Tu * K * 2 < 64 * MiB ? Tu * K * 2
											 : 64 * MiB);
	return ((ce > mm ? ce : mm) + MiB - 1) / MiB * MiB + 64 * MiB;
#elif defined(TERN_HAVE_VULKAN)
	/* Vulkan's figures. ce_loss: min(T, 64 MiB / (4 V) rounded down to a multiple of 128 above
	 * 128, 4096) rows of V fp32 logits + alignment + terms; a 64 MiB reserve; where heads are
	 * grouped, the fp32 attention's dK/dV shares, two of T x H x Dh floats (no decode-first slots
	 * at these precisions) */
	(void)prec;
	uint64_t tc = 64 * MiB / (4 * V);
	tc = tc > 128 ? tc / 128 * 128 : tc;
	tc = tc > 4096 ? 4096 : tc > Tu ? Tu : tc;
	uint64_t Dh = m->Dh ? (uint64_t)m->Dh : D / (uint64_t)m->H;
	uint64_t share = m->Hkv < m->H ? 2 * Tu * (uint64_t)m->H * Dh * 4 : 0;
	return tc * V * 4 + 256 + tc * 4 + 64 * MiB + share;
#else
	/* the CPU's. ce_loss: min(T, 64 MiB / (4 V)) rows of V fp32 logits, a W row per task (min(V,
	 * 128) tasks), a double term and a token index per row, a piece of a W row and 64 rows of
	 * double accumulators per dx task (ceil(D / 32) tasks, at most 128); a 64 MiB reserve */
	(void)prec;
	uint64_t tc = 64 * MiB / (4 * V);
	tc = tc > Tu ? Tu : tc;
	uint64_t vtask = V < 128 ? V : 128, dtask = (D + 31) / 32 > 128 ? 128 : (D + 31) / 32;
	uint64_t width = (D + dtask - 1) / dtask;
	return tc * V * 4 + vtask * D * 4 + tc * 8 + tc * 8 + dtask * width * (4 + 64 * 8) + 64 * MiB;
#endif
}

/* Sizes from first principles for the setup above. */
static struct expect by_hand(const struct model *m)
{
	struct expect e;
	uint64_t D = (uint64_t)m->D, F = (uint64_t)m->F, L = (uint64_t)m->L,
		 Dh = m->Dh ? (uint64_t)m->Dh : D / (uint64_t)m->H, Fe = m->Fe ? (uint64_t)m->Fe : F;
	uint64_t q = (uint64_t)m->H * Dh, kv = (uint64_t)m->Hkv * Dh, V = (uint64_t)m->V;
	uint64_t E = m->E ? (uint64_t)m->E : 1, Tu = (uint64_t)T, Ru = (uint64_t)R;
	/* layer: q, k, v, o and E × (gate, up, down) (width Fe) in nf4-dq; two RMSNorm weights [D]
	 * bf16; MoE: the router [E, D] bf16; Qwen3: q and k norms [Dh] bf16 */
	e.layer = nf4dq(q * D) + 2 * nf4dq(kv * D) + nf4dq(D * q) + E * 3 * nf4dq(Fe * D) + 2 * al(D * 2) +
		  (m->E ? al(E * D * 2) : 0) + (m->qk_norm ? 2 * al(Dh * 2) : 0);
	/* globals: embed_tokens [V, D] and lm_head [V, D] bf16 (untied), final norm [D] bf16 */
	e.global = 2 * al(V * D * 2) + al(D * 2);
	/* LoRA (lora_target_linear): A [R, I] and B [O, R] per module; on a MoE model the attention
	 * only (the experts take lora_target_parameters, not set here) */
	uint64_t lora_layer = Ru * ((D + q) + 2 * (D + kv) + (q + D)) + (m->E ? 0 : Ru * 3 * (D + F));
	e.lora_params = lora_layer * L;
	uint64_t lora_block = e.lora_params * 4 * 4; /* fp32 params, grads, m, v */
	/* the fp32 block: per layer 2 norms [D]; final norm [D], inv_freq [Dh/2], ones [T] */
	uint64_t small = L * 2 * al(D * 4) + (m->qk_norm ? L * 2 * al(Dh * 4) : 0) + al(D * 4) +
			 al(Dh / 2 * 4) + al(Tu * 4);
	/* activations with checkpointing (net.c plan_act): L + 1 layer inputs; one saved set;
	 * io and backward scratch. Mixtral (every layer sparse): no dense g, u, a; the router logits
	 * [T, E]; the experts' rows (cap = T·k + E·(pad − 1), pad 4 rows for R 16 with D and F
	 * multiples of 64): inputs and outputs [cap, D], g, u, a [cap, F]; the rows' token idx and
	 * weights [icap = T·k + E·63] and the grouped block (moe.h); (an empty view still takes 256
	 * bytes) scratch d(logits) [T, E], gathered dy [cap, D], scaled dy and expert dx [T, D],
	 * weight gradients [icap], iota [cap]; d(act) [cap, Fe] where that is more than [T, F]. */
	uint64_t Fd = m->E ? 0 : F, maxI = D > F ? D : F;
	maxI = q > maxI ? q : maxI;
	uint64_t TD = al(Tu * D * 4), Tq = al(Tu * q * 4), Tkv = al(Tu * kv * 4), TF = al(Tu * F * 4),
		 TFd = al(Tu * Fd * 4), T1 = al(Tu * 4), TR = al(Tu * Ru * 4);
	uint64_t act = (L + 1) * TD;
	uint64_t nlu = m->E ? 4 : 7; /* lu [T, R] per targeted module */
	act += TD + T1 + Tq + 2 * Tkv + al((uint64_t)m->H * Tu * 4) + Tq + 2 * TD + T1 +
	       3 * (Fd ? TFd : 256) + nlu * TR;
	/* a dense model's attention backward buffers (dao, dq, dk, dv; Qwen3 dqr, dkr) live inside the
	 * set's g, u, a (net.c: dead once the MLP backward has run); Mixtral's have their own */
	uint64_t own = m->E ? 1 : 0;
	if (m->qk_norm) /* qr, kr, rstdq, rstdk; scratch dqr, dkr */
		act += Tq + Tkv + al(Tu * (uint64_t)m->H * 4) + al(Tu * (uint64_t)m->Hkv * 4) +
		       own * (Tq + Tkv);
	uint64_t da = 256; /* d(act): over a in a dense layer (an empty view); the grouped experts'
			    * backward writes cap rows of Fe */
	if (m->E) {
		uint64_t K = (uint64_t)m->top_k, cap = Tu * K + E * 3, icap = Tu * K + E * 63;
		/* the grouped block: tokens and weights of the cap rows, the k slots of T, off [E + 1]
		 * (moe.h), each array at a multiple of 64 entries */
		uint64_t nblk = 2 * ((cap + 63) / 64 * 64) + 2 * ((Tu * K + 63) / 64 * 64) + E + 1;
		act += al(Tu * E * 4) + 2 * al(cap * D * 4) + 3 * al(cap * Fe * 4) + 2 * al(icap * 4) +
		       al(nblk * 4);
		/* d(logits), dye, dys and dxe, dwrow [max(icap, cap)], iota [max(T, cap)] */
		act += al(Tu * E * 4) + al(cap * D * 4) + 2 * TD + al(icap * 4) + al(cap * 4);
		da = cap * Fe > Tu * F ? al(cap * Fe * 4) : TF;
	}
	/* (no LoRA dropout: drop(x) and its masked dx term take no room; du shares da's memory) */
	(void)maxI;
	/* dL/dg: over g in a dense layer (an empty view), its own [T, F] for the experts; the head's
	 * xf and dxf share dxn's and tmpD's memory (only rstdf [T] of its own) */
	act += 4 * T1 + 2 * al(4) + TR + 3 * TD + T1 + own * (2 * Tq + 2 * Tkv) + da + (m->E ? TF : 256) +
	       2 * al(4);
	/* on the device: the lm_head (the embeddings of an untied model stay in host memory) */
	e.fixed = al(V * D * 2) + small + lora_block + act + backend_bytes(m, TERN_F32);
	e.fixed_off = e.fixed - (L + 1) * TD + 2 * TD;
	e.off_host = (L - 1) * Tu * D * 4;
	return e;
}

static struct tern_config *setup(const char *adapter, const char *extra)
{
	char text[2048];
	snprintf(text, sizeof text,
		 "base_model: x\nadapter: %s\nlora_r: %lld\nlora_alpha: 32\nlora_target_linear: true\n"
		 "datasets:\n  - path: d.jsonl\n    type: alpaca\nsequence_len: %lld\nmicro_batch_size: 1\n"
		 "gradient_accumulation_steps: %lld\ngradient_checkpointing: true\n%s",
		 adapter, (long long)R, (long long)T, (long long)ACCUM, extra ? extra : "");
	struct tern_config *cfg = NULL;
	if (tern_config_parse(&cfg, "plan.yaml", text, strlen(text)) != TERN_OK)
		printf("config: %s\n", tern_error());
	return cfg;
}

static bool load(const struct model *m, struct tern_model_config *mc)
{
	const char *data = getenv("TERN_TEST_DATA");
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/plan/%s", data ? data : "tests/data", m->dir);
	if (tern_model_config_load(dir, mc) != TERN_OK) {
		printf("%s: %s\n", dir, tern_error());
		return false;
	}
	return true;
}

/* Invariants of any plan, and the placement the rules give, for one budget pair. */
static void check_plan(const struct model *m, const struct expect *e, const struct tern_plan *p,
		       enum tern_status st, uint64_t dev, uint64_t host, int depth)
{
	const char *n = m->dir;
	uint64_t L = (uint64_t)m->L, lb = e->layer, slots = (uint64_t)depth + 1;
	uint64_t fixed = e->fixed, all = fixed + L * lb, least = fixed + slots * lb;
	if (least > all)
		least = all;
	/* gradient_checkpointing: true offloads the layer inputs where on the device nothing fits */
	bool off = dev < least;
	if (off) {
		fixed = e->fixed_off;
		all = fixed + L * lb;
		least = fixed + slots * lb < all ? fixed + slots * lb : all;
	}
	check(p->offload == off && p->offload_host == (off ? e->off_host : 0) &&
		      (!off || !p->ok || strstr(p->verdict, "(layer inputs offloaded to the host")),
	      "%s dev %llu: layer inputs %s", n, (unsigned long long)dev,
	      off ? "offloaded" : "on the device");
	check(p->min_device == least && p->all_device == all,
	      "%s: min_device %llu (want %llu), all %llu (want %llu)", n, (unsigned long long)p->min_device,
	      (unsigned long long)least, (unsigned long long)p->all_device, (unsigned long long)all);
	if (dev < least) {
		char want[32];
		snprintf(want, sizeof want, "(%llu bytes", (unsigned long long)least);
		check(st == TERN_E_DEVICE_MEM && !p->ok && strstr(tern_error(), "smallest that works") &&
			      strstr(tern_error(), want) && !strchr(tern_error(), '\n'),
		      "%s dev %llu: refused with the smallest budget %llu: st %d, '%s'", n,
		      (unsigned long long)dev, (unsigned long long)least, st, tern_error());
		return;
	}
	check(st == TERN_OK && p->ok, "%s dev %llu host %llu: plan works (%s)", n, (unsigned long long)dev,
	      (unsigned long long)host, st ? tern_error() : "");
	int64_t nd = p->n_layers[TERN_PLAN_DEVICE], nh = p->n_layers[TERN_PLAN_HOST],
		nk = p->n_layers[TERN_PLAN_DISK];
	check(nd + nh + nk == m->L && nd >= 0 && nh >= 0 && nk >= 0, "%s: tiers add up to L", n);
	/* device total: fixed + slots + resident layers, within the budget */
	uint64_t used = fixed + (nd < m->L ? slots * lb : 0) + (uint64_t)nd * lb;
	check(p->used[TERN_PLAN_DEVICE] == used && used <= dev,
	      "%s: device used %llu (want %llu) <= budget %llu", n,
	      (unsigned long long)p->used[TERN_PLAN_DEVICE], (unsigned long long)used,
	      (unsigned long long)dev);
	check(p->n_slots == (nd < m->L ? depth + 1 : 0), "%s: %d slots", n, p->n_slots);
	/* as many as fit: one more layer would exceed the device budget */
	check(nd == m->L || used + lb > dev, "%s: device holds as many layers as fit (%lld)", n,
	      (long long)nd);
	/* host: the reserve (1 GiB + LoRA parameters and moments) + host layers; as many as fit */
	uint64_t reserve = GiB + e->lora_params * 4 * 3 + (off ? e->off_host : 0),
		 hused = reserve + (uint64_t)nh * lb;
	check(p->used[TERN_PLAN_HOST] == hused && (nh == 0 || hused <= host),
	      "%s: host used %llu (want %llu)", n, (unsigned long long)p->used[TERN_PLAN_HOST],
	      (unsigned long long)hused);
	check(nk == 0 || hused + lb > host, "%s: host holds as many layers as fit (%lld)", n, (long long)nh);
	check(p->used[TERN_PLAN_DISK] == (uint64_t)nk * lb, "%s: disk bytes", n);
	/* layer order: device first, then host, then disk */
	bool order = true;
	for (int64_t l = 0; l < m->L; l++)
		order &= p->tier[l] == (l < nd        ? TERN_PLAN_DEVICE
					: l < nd + nh ? TERN_PLAN_HOST
						      : TERN_PLAN_DISK);
	check(order, "%s: layers placed device, host, disk in layer order", n);
	/* traffic: each streamed layer loaded twice per micro-batch (forward; recompute + backward) */
	check(p->streamed[TERN_PLAN_DEVICE] == 0 &&
		      p->streamed[TERN_PLAN_HOST] == 2 * (uint64_t)nh * lb * ACCUM &&
		      p->streamed[TERN_PLAN_DISK] == 2 * (uint64_t)nk * lb * ACCUM,
	      "%s: bytes streamed per step", n);
	/* MoE: experts stream one by one; the expected distinct experts of T·k uniform draws,
	 * E·(1 − (1 − k/E)^T), replace all E in each load (Mixtral, T 2048: 8 of 8; Qwen3-30B-A3B:
	 * 128·(1 − (15/16)^2048), all 128 to 1e-57) */
	if (m->E) {
		uint64_t Fe = m->Fe ? (uint64_t)m->Fe : (uint64_t)m->F, xb = 3 * nf4dq(Fe * (uint64_t)m->D);
		double hit = (double)m->E * (1.0 - pow(1.0 - (double)m->top_k / (double)m->E, (double)T));
		double per = hit >= 0.875 * (double)m->E
				     ? (double)lb
				     : (double)(lb - (uint64_t)m->E * xb) + hit * (double)xb;
		uint64_t wh = (uint64_t)(2.0 * (double)nh * per * (double)ACCUM),
			 wk = (uint64_t)(2.0 * (double)nk * per * (double)ACCUM);
		check(p->expert_bytes == xb && fabs(p->experts_hit - hit) < 1e-9 &&
			      p->streamed_est[TERN_PLAN_HOST] == wh &&
			      p->streamed_est[TERN_PLAN_DISK] == wk && wh <= p->streamed[TERN_PLAN_HOST] &&
			      wk <= p->streamed[TERN_PLAN_DISK],
		      "%s: expert %llu bytes (by hand %llu), %.3f hit (%.3f), estimate host %llu (%llu), "
		      "disk %llu (%llu)",
		      n, (unsigned long long)p->expert_bytes, (unsigned long long)xb, p->experts_hit, hit,
		      (unsigned long long)p->streamed_est[TERN_PLAN_HOST], (unsigned long long)wh,
		      (unsigned long long)p->streamed_est[TERN_PLAN_DISK], (unsigned long long)wk);
	}
}

/* Issue 11's shapes: Llama-3.2-1B (tied embeddings; accumulation 4) and Llama-3-8B (1), sequence
 * 2048, micro-batch 1, nf4-dq, LoRA r16 on all 7 linears, bf16 products, checkpointing, on an 80 GB
 * device: the plan's device total by hand, with the layer inputs on the device and offloaded
 * (two bf16 [T, D] slots instead of L + 1; L - 1 inputs in host memory). With CUDA built these
 * are CUDA's figures, against Unsloth's measured peaks (1.51 / 6.51 GiB). */
static void issue11(void)
{
	static const struct model m1b = {"llama-3.2-1b", 2048, 8192, 16, 32, 8, 128256, 0, 0, 64, 0, false};
	const struct model *ms[2] = {&m1b, &models[M_LLAMA8]};
	static struct tern_plan p;
	for (int i = 0; i < 2; i++) {
		const struct model *m = ms[i];
		struct tern_model_config mc;
		struct tern_config *cfg = setup("qlora", "compute_dtype: bf16\n");
		if (!cfg || !load(m, &mc) ||
		    (i == 1 && tern_config_set(cfg, "gradient_accumulation_steps=1") != TERN_OK)) {
			check(false, "%s: setup", m->dir);
			tern_config_free(cfg);
			continue;
		}
		bool tied = i == 0;
		check(mc.tie_embeddings == tied && mc.D == m->D && mc.L == m->L && mc.V == m->V,
		      "%s: config.json has the published shapes", m->dir);
		struct expect e = by_hand(m);
		uint64_t D = (uint64_t)m->D, L = (uint64_t)m->L, Tu = (uint64_t)T;
		uint64_t TD = al(Tu * D * 4), TD2 = al(Tu * D * 2);
		/* at bf16: L + 1 inputs of 2 bytes a value and the fp32 copy of the one at work; the
		 * backend's bf16 figures; tied: the final norm [D] bf16 beside the embeddings */
		uint64_t dev = e.fixed - (L + 1) * TD + (L + 1) * TD2 + TD - backend_bytes(m, TERN_F32) +
			       backend_bytes(m, TERN_BF16) + (tied ? al(D * 2) : 0);
		uint64_t off = dev - (L + 1) * TD2 + 2 * TD2;
		uint64_t got[2] = {0, 0};
		for (int o = 0; o < 2; o++) {
			if (o && tern_config_set(cfg, "gradient_checkpointing=offload") != TERN_OK)
				check(false, "%s: set offload: %s", m->dir, tern_error());
			memset(&p, 0, sizeof p);
			p.prec = TERN_BF16;
			enum tern_status st = tern_plan_make(&mc, cfg, 80 * GiB, 64 * GiB, &p);
			uint64_t want = o ? off : dev;
			got[o] = p.used[TERN_PLAN_DEVICE];
			check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] == m->L &&
				      p.offload == (o == 1) && p.fixed_bytes == want &&
				      got[o] == want + L * e.layer &&
				      p.offload_host == (o ? (L - 1) * Tu * D * 2 : 0),
			      "%s, bf16, inputs %s: fixed %llu (by hand %llu), device in all %.3f GiB, host %llu",
			      m->dir, o ? "offloaded" : "on the device", (unsigned long long)p.fixed_bytes,
			      (unsigned long long)want, (double)got[o] / (double)GiB,
			      (unsigned long long)p.offload_host);
		}
		tern_config_free(cfg);
#if defined(TERN_HAVE_CUDA)
		/* the targets: Llama-3-8B under 6.2 GiB with the inputs offloaded (Unsloth 6.51);
		 * Llama-3.2-1B's 1.45 GiB (Unsloth 1.51) is not reached: the line says by how much */
		if (i == 1)
			check(got[1] <= (uint64_t)(6.2 * (double)GiB),
			      "Llama-3-8B offloaded: %.3f GiB <= 6.2 GiB", (double)got[1] / (double)GiB);
		else
			printf("note  Llama-3.2-1B offloaded: %.3f GiB, %.1f MiB above the 1.45 GiB target\n",
			       (double)got[1] / (double)GiB,
			       ((double)got[1] - 1.45 * (double)GiB) / (double)MiB);
#endif
	}
}

int main(void)
{
	struct tern_config *cfg = setup("qlora", NULL);
	if (!cfg)
		return 1;
	static const uint64_t devs[] = {8 * GiB, 12 * GiB, 24 * GiB},
			      hosts[] = {16 * GiB, 32 * GiB, 64 * GiB};
	static struct tern_plan p; /* large: keep it off the stack */
	struct tern_model_config mc[N_MODELS];
	struct expect e[N_MODELS];
	for (int i = 0; i < N_MODELS; i++) {
		const struct model *m = &models[i];
		if (!load(m, &mc[i])) {
			failed++;
			continue;
		}
		check(mc[i].D == m->D && mc[i].F == m->F && mc[i].L == m->L && mc[i].H == m->H &&
			      mc[i].Hkv == m->Hkv && mc[i].V == m->V && mc[i].E == m->E &&
			      mc[i].top_k == m->top_k && !mc[i].tie_embeddings && mc[i].dtype == TERN_BF16 &&
			      mc[i].Dh == (m->Dh ? m->Dh : m->D / m->H) &&
			      (!m->E || mc[i].Fe == (m->Fe ? m->Fe : m->F)),
		      "%s: config.json has the published shapes", m->dir);
		e[i] = by_hand(m);
		for (int d = 0; d < 3; d++)
			for (int h = 0; h < 3; h++) {
				memset(&p, 0, sizeof p);
				enum tern_status st = tern_plan_make(&mc[i], cfg, devs[d], hosts[h], &p);
				check(p.layer_bytes == e[i].layer && p.global_bytes == e[i].global &&
					      p.fixed_bytes == (p.offload ? e[i].fixed_off : e[i].fixed) &&
					      (uint64_t)p.lora_params == e[i].lora_params,
				      "%s: layer %llu (want %llu), global %llu (%llu), fixed %llu (%llu), lora %lld (%llu)",
				      m->dir, (unsigned long long)p.layer_bytes,
				      (unsigned long long)e[i].layer, (unsigned long long)p.global_bytes,
				      (unsigned long long)e[i].global, (unsigned long long)p.fixed_bytes,
				      (unsigned long long)(p.offload ? e[i].fixed_off : e[i].fixed),
				      (long long)p.lora_params, (unsigned long long)e[i].lora_params);
				check(!strcmp(p.format, "nf4-dq"), "%s: format %s", m->dir, p.format);
				check_plan(m, &e[i], &p, st, devs[d], hosts[h], TERN_PLAN_DEFAULT_DEPTH);
			}
	}

	/* ---- parameter totals of the MoE models, by hand (published: 46.7B and 30.5B) ---- */
	{
		struct tern_model_info info;
		char dir[4096];
		const char *data = getenv("TERN_TEST_DATA");
		/* Mixtral-8x7B: embeddings and lm_head 32000 x 4096 each, final norm 4096; per layer q, o
		 * 4096 x 4096, k, v 1024 x 4096, router 8 x 4096, 8 experts x 3 x 14336 x 4096, 2 norms */
		uint64_t mix = 2ull * 32000 * 4096 + 4096 +
			       32ull * (2ull * 4096 * 4096 + 2ull * 1024 * 4096 + 8ull * 4096 +
					8ull * 3 * 14336 * 4096 + 2ull * 4096);
		/* Qwen3-30B-A3B: 151936 x 2048 twice, final norm; per layer q 4096 x 2048, k, v 512 x 2048,
		 * o 2048 x 4096, router 128 x 2048, 128 experts x 3 x 768 x 2048, 2 norms [2048], q/k
		 * norms [128] */
		uint64_t q3 = 2ull * 151936 * 2048 + 2048 +
			      48ull * (2ull * 4096 * 2048 + 2ull * 512 * 2048 + 128ull * 2048 +
				       128ull * 3 * 768 * 2048 + 2ull * 2048 + 2ull * 128);
		snprintf(dir, sizeof dir, "%s/plan/mixtral-8x7b-v0.1", data ? data : "tests/data");
		check(tern_model_info(dir, &info) == TERN_OK && info.params_total == mix &&
			      mix == 46702792704ull,
		      "Mixtral-8x7B: %llu parameters (by hand %llu)", (unsigned long long)info.params_total,
		      (unsigned long long)mix);
		snprintf(dir, sizeof dir, "%s/plan/qwen3-30b-a3b", data ? data : "tests/data");
		check(tern_model_info(dir, &info) == TERN_OK && info.params_total == q3 &&
			      q3 == 30532122624ull,
		      "Qwen3-30B-A3B: %llu parameters (by hand %llu)", (unsigned long long)info.params_total,
		      (unsigned long long)q3);
	}

	/* ---- the questions of issue 5 ---- */
	if (failed == 0) {
		enum tern_status st;
		/* Mistral-7B on a 12 GB card: every layer stays on the device, nothing streams */
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_MISTRAL], cfg, 12 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] == 32 && p.n_slots == 0 &&
			      p.streamed[TERN_PLAN_HOST] + p.streamed[TERN_PLAN_DISK] == 0,
		      "Mistral-7B on 12 GB: all on the device");
		/* Llama-3-8B on 8 GB: every layer on the device (its embeddings stay in host memory);
		 * on 6 GB most layers on the device, the rest streamed from host memory */
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA8], cfg, 8 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] == 32 && p.n_slots == 0,
		      "Llama-3-8B on 8 GB + 16 GB: all on the device (%lld/%lld/%lld)",
		      (long long)p.n_layers[0], (long long)p.n_layers[1], (long long)p.n_layers[2]);
		/* at bf16 (or f16) products the L+1 layer inputs take 2 bytes a value, plus the fp32
		 * copy of the layer at work: the plan's fixed costs fall by exactly that */
		uint64_t f32_fixed = p.fixed_bytes;
		memset(&p, 0, sizeof p);
		p.prec = TERN_BF16;
		st = tern_plan_make(&mc[M_LLAMA8], cfg, 8 * GiB, 16 * GiB, &p);
		uint64_t TD = (uint64_t)p.T * (uint64_t)mc[M_LLAMA8].D;
		/* (and the backend's scratch as it sizes it at bf16: CUDA's depends on the precision) */
		uint64_t want = (uint64_t)(mc[M_LLAMA8].L + 1) * TD * 2 - TD * 4 +
				backend_bytes(&models[M_LLAMA8], TERN_F32) -
				backend_bytes(&models[M_LLAMA8], TERN_BF16);
		check(st == TERN_OK && f32_fixed - p.fixed_bytes == want,
		      "Llama-3-8B at bf16: fixed costs %llu less than at fp32 (want %llu)",
		      (unsigned long long)(f32_fixed - p.fixed_bytes), (unsigned long long)want);
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA8], cfg, 6 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] > 16 && p.n_layers[TERN_PLAN_HOST] > 0 &&
			      p.n_layers[TERN_PLAN_DISK] == 0,
		      "Llama-3-8B on 6 GB + 16 GB: device and host (%lld/%lld/%lld)",
		      (long long)p.n_layers[0], (long long)p.n_layers[1], (long long)p.n_layers[2]);
		/* Mixtral 8x7B (~23 GiB of nf4-dq weights) on 12 GB + 16 GB: fits, with layers split over
		 * host memory and disk */
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_MIXTRAL], cfg, 12 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_HOST] > 0 && p.n_layers[TERN_PLAN_DISK] > 0 &&
			      p.used[TERN_PLAN_DEVICE] <= 12 * GiB && p.used[TERN_PLAN_HOST] <= 16 * GiB,
		      "Mixtral 8x7B on 12 GB + 16 GB: host and disk (%lld/%lld/%lld)",
		      (long long)p.n_layers[0], (long long)p.n_layers[1], (long long)p.n_layers[2]);
		check(p.layer_bytes > 8 * 3 * 4096 * 14336 / 2 && p.pack_bytes > 22 * GiB &&
			      p.pack_bytes < 24 * GiB,
		      "Mixtral: the planner knows the expert sizes (pack about 23 GiB)");
		/* Llama-3-70B on 24 GB + 64 GB: device + host, nothing from disk; with 16 GB of host
		 * memory the disk tier takes the rest; on 8 GB of device memory the layer inputs go to
		 * the host (gradient_checkpointing: true, where on the device they would not fit), on
		 * 6 GB even that is refused */
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] > 0 && p.n_layers[TERN_PLAN_HOST] > 0 &&
			      p.n_layers[TERN_PLAN_DISK] == 0,
		      "Llama-3-70B on 24 GB + 64 GB: device and host");
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, 24 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DISK] > 0,
		      "Llama-3-70B on 24 GB + 16 GB: disk tier used");
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, 8 * GiB, 64 * GiB, &p);
		check(st == TERN_OK && p.offload && p.n_layers[TERN_PLAN_DEVICE] == 0,
		      "Llama-3-70B on 8 GB: works with the layer inputs offloaded");
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, 6 * GiB, 64 * GiB, &p);
		check(st == TERN_E_DEVICE_MEM && p.min_device > 6 * GiB && p.min_device < 8 * GiB &&
			      p.min_device == e[M_LLAMA70].fixed_off + 3 * e[M_LLAMA70].layer,
		      "Llama-3-70B on 6 GB: refused, naming the smallest budget with the inputs offloaded");

		/* a deeper prefetch: depth + 1 slots, and a smallest budget that grows by one layer each */
		memset(&p, 0, sizeof p);
		p.prefetch_depth = 4;
		st = tern_plan_make(&mc[M_LLAMA8], cfg, 6 * GiB, 16 * GiB, &p);
		check(st == TERN_OK && p.n_slots == 5, "prefetch depth 4: 5 slots");
		check_plan(&models[M_LLAMA8], &e[M_LLAMA8], &p, st, 6 * GiB, 16 * GiB, 4);
		/* a budget exactly at the smallest works, one byte less offloads the inputs; the same
		 * at the smallest with them offloaded, and one byte less is refused */
		uint64_t least = e[M_LLAMA70].fixed + 3 * e[M_LLAMA70].layer;
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, least, 64 * GiB, &p);
		check(st == TERN_OK && p.n_layers[TERN_PLAN_DEVICE] == 0 &&
			      p.used[TERN_PLAN_DEVICE] == least && !p.offload,
		      "Llama-3-70B at exactly the smallest budget: 0 layers resident, 3 slots");
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, least - 1, 64 * GiB, &p);
		check(st == TERN_OK && p.offload, "one byte less: the layer inputs offloaded");
		least = e[M_LLAMA70].fixed_off + 3 * e[M_LLAMA70].layer;
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, least, 64 * GiB, &p);
		check(st == TERN_OK && p.offload && p.used[TERN_PLAN_DEVICE] == least,
		      "Llama-3-70B at exactly the smallest budget with offloaded inputs");
		memset(&p, 0, sizeof p);
		st = tern_plan_make(&mc[M_LLAMA70], cfg, least - 1, 64 * GiB, &p);
		check(st == TERN_E_DEVICE_MEM, "one byte less is refused");
	}

	/* ---- the layer split (issue 16): stages of Llama-3-70B on 24 GiB each ---- */
	if (failed == 0) {
		const struct model *m = &models[M_LLAMA70];
		uint64_t lb = e[M_LLAMA70].layer, head = al((uint64_t)m->V * (uint64_t)m->D * 2);
		uint64_t TD = al((uint64_t)T * (uint64_t)m->D * 4);
		/* the best 2-stage split by hand: the first k layers on stage 0 (the embeddings stay in
		 * host memory), the rest and the lm_head on stage 1; the largest stage as small as can be */
		int64_t bk = 0;
		uint64_t best = UINT64_MAX;
		for (int64_t k = 1; k < m->L; k++) {
			uint64_t a = (uint64_t)k * lb, b = (uint64_t)(m->L - k) * lb + head;
			uint64_t mx = a > b ? a : b;
			if (mx < best)
				best = mx, bk = k;
		}
		struct tern_plan ps[2];
		for (int sg = 0; sg < 2; sg++) {
			memset(&ps[sg], 0, sizeof ps[sg]);
			ps[sg].stages = 2;
			ps[sg].stage = sg;
			enum tern_status st =
				tern_plan_make(&mc[M_LLAMA70], cfg, 24 * GiB, 64 * GiB, &ps[sg]);
			int64_t own = ps[sg].l1 - ps[sg].l0;
			check(st == TERN_OK && ps[sg].split[0] == 0 && ps[sg].split[1] == bk &&
				      ps[sg].split[2] == 80 && ps[sg].l0 == (sg ? bk : 0) &&
				      ps[sg].l1 == (sg ? 80 : bk) &&
				      ps[sg].n_layers[0] + ps[sg].n_layers[1] + ps[sg].n_layers[2] == own &&
				      ps[sg].used[TERN_PLAN_DEVICE] <= 24 * GiB,
			      "70B stage %d of 2: layers [%lld, %lld) of split at %lld (by hand %lld), %lld/%lld/%lld",
			      sg, (long long)ps[sg].l0, (long long)ps[sg].l1, (long long)ps[sg].split[1],
			      (long long)bk, (long long)ps[sg].n_layers[0], (long long)ps[sg].n_layers[1],
			      (long long)ps[sg].n_layers[2]);
			/* the other stage's layers are in no tier of this one */
			bool other = true;
			for (int64_t l = 0; l < 80; l++)
				other &= (l >= ps[sg].l0 && l < ps[sg].l1) ==
					 (ps[sg].tier[l] != TERN_PLAN_TIERS);
			check(other, "70B stage %d: tier[] marks the other stage's layers", sg);
		}
		check(ps[0].stage_weights[0] == (uint64_t)bk * lb &&
			      ps[0].stage_weights[1] == (uint64_t)(80 - bk) * lb + head &&
			      ps[0].stage_weights[0] + ps[0].stage_weights[1] == 80 * lb + head,
		      "70B split: stage weights %llu + %llu = 80 layers + the lm_head",
		      (unsigned long long)ps[0].stage_weights[0], (unsigned long long)ps[0].stage_weights[1]);
		/* fixed costs: one process's, less the lm_head on stage 0, less the layer inputs of the
		 * other stage's layers (each then an empty 256-byte view); the LoRA block whole on both */
		uint64_t f0 = e[M_LLAMA70].fixed - head - (uint64_t)(80 - bk) * (TD - 256);
		uint64_t f1 = e[M_LLAMA70].fixed - (uint64_t)bk * (TD - 256);
		check(ps[0].fixed_bytes == f0 && ps[1].fixed_bytes == f1,
		      "70B split fixed costs %llu, %llu (by hand %llu, %llu)",
		      (unsigned long long)ps[0].fixed_bytes, (unsigned long long)ps[1].fixed_bytes,
		      (unsigned long long)f0, (unsigned long long)f1);
		/* three 24 GiB cards hold it whole: no stage streams */
		bool whole = true;
		for (int sg = 0; sg < 3; sg++) {
			struct tern_plan q;
			memset(&q, 0, sizeof q);
			q.stages = 3;
			q.stage = sg;
			whole &= tern_plan_make(&mc[M_LLAMA70], cfg, 24 * GiB, 64 * GiB, &q) == TERN_OK &&
				 q.n_layers[TERN_PLAN_DEVICE] == q.l1 - q.l0 && q.n_slots == 0;
		}
		check(whole, "70B over 3 stages of 24 GiB: every layer resident");
		/* given boundaries; a list for another number of stages, a boundary past the model and
		 * more stages than layers are refused */
		struct tern_config *cs = setup("qlora", "layer_split: 20,50\n");
		if (!cs)
			return 1;
		memset(&p, 0, sizeof p);
		p.stages = 3;
		p.stage = 1;
		enum tern_status st = tern_plan_make(&mc[M_LLAMA70], cs, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_OK && p.l0 == 20 && p.l1 == 50 && p.split[3] == 80,
		      "layer_split 20,50: stage 1 runs [%lld, %lld)", (long long)p.l0, (long long)p.l1);
		memset(&p, 0, sizeof p); /* stages 0: the list's */
		st = tern_plan_make(&mc[M_LLAMA70], cs, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_OK && p.stages == 3 && p.l0 == 0 && p.l1 == 20,
		      "layer_split 20,50: 3 stages");
		memset(&p, 0, sizeof p); /* stages 1: one device, no split */
		p.stages = 1;
		st = tern_plan_make(&mc[M_LLAMA70], cs, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_OK && p.stages == 1 && p.l0 == 0 && p.l1 == 80, "one stage: every layer");
		memset(&p, 0, sizeof p);
		p.stages = 2;
		st = tern_plan_make(&mc[M_LLAMA70], cs, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_E_INVALID && strstr(tern_error(), "gives 3 stages, and there are 2 devices"),
		      "layer_split 20,50 on 2 stages refused");
		tern_config_free(cs);
		cs = setup("qlora", "layer_split: 80\n");
		memset(&p, 0, sizeof p);
		st = cs ? tern_plan_make(&mc[M_LLAMA70], cs, 24 * GiB, 64 * GiB, &p) : TERN_E_NOMEM;
		check(st == TERN_E_INVALID && strstr(tern_error(), "names layer 80 of a 80-layer model"),
		      "layer_split 80 refused");
		tern_config_free(cs);
		memset(&p, 0, sizeof p);
		p.stages = 33;
		st = tern_plan_make(&mc[M_LLAMA8], cfg, 24 * GiB, 64 * GiB, &p);
		check(st == TERN_E_INVALID && strstr(tern_error(), "33 stages for 32 layers"),
		      "33 stages of a 32-layer model refused");
		tern_clear_error();
	}

	/* LoRA on a bf16 base: projections at 2 bytes per parameter */
	{
		struct tern_config *c2 = setup("lora", "base_format: bf16\n");
		if (!c2)
			return 1;
		memset(&p, 0, sizeof p);
		const struct model *m = &models[M_LLAMA8];
		uint64_t D = 4096, F = 14336, kv = 1024;
		enum tern_status st = tern_plan_make(&mc[M_LLAMA8], c2, 24 * GiB, 16 * GiB, &p);
		check(st == TERN_OK &&
			      p.layer_bytes == 2 * (2 * D * D + 2 * kv * D + 3 * F * D) + 2 * al(D * 2) &&
			      !strcmp(p.format, "bf16"),
		      "%s bf16: layer %llu", m->dir, (unsigned long long)p.layer_bytes);
		tern_config_free(c2);
	}

	/* ---- ternary bases (issue 15): Llama-2-7B on an 8 GB card, Llama-2-13B on 24 GB, LoRA r 16
	 * on every linear over base_format ternary; the published config.json (float16, untied) ----
	 * A ternary projection [O, I]: ceil(I / 16) uint32 words per row (2 bits a weight), the scale
	 * in the TOC. Everything else as by_hand (the lm_head f16 = 2 bytes like bf16). */
	{
		struct tern_config *c3 = setup("lora", "base_format: ternary\n");
		struct tern_config *c4 = setup("qlora", NULL);
		if (!c3 || !c4)
			return 1;
		static const struct model l2[] = {
			{"llama-2-7b-hf", 4096, 11008, 32, 32, 32, 32000, 0, 0, 0, 0, false},
			{"llama-2-13b-hf", 5120, 13824, 40, 40, 40, 32000, 0, 0, 0, 0, false},
		};
		static const uint64_t budget[] = {8 * GiB, 24 * GiB};
		for (int i = 0; i < 2; i++) {
			const struct model *m = &l2[i];
			struct tern_model_config c;
			if (!load(m, &c)) {
				failed++;
				continue;
			}
			check(c.D == m->D && c.F == m->F && c.L == m->L && c.H == m->H && c.Hkv == m->Hkv &&
				      c.V == m->V && !c.tie_embeddings && c.dtype == TERN_F16,
			      "%s: config.json has the published shapes", m->dir);
			struct expect te = by_hand(m);
			uint64_t D = (uint64_t)m->D, F = (uint64_t)m->F, L = (uint64_t)m->L;
			uint64_t nf4_layer = te.layer;
			/* q, k, v, o [D, D]: D/16 words a row; gate, up [F, D]: D/16; down [D, F]: F/16 */
			te.layer = 4 * al(D * ((D + 15) / 16) * 4) + 2 * al(F * ((D + 15) / 16) * 4) +
				   al(D * ((F + 15) / 16) * 4) + 2 * al(D * 2);
			memset(&p, 0, sizeof p);
			enum tern_status st = tern_plan_make(&c, c3, budget[i], 16 * GiB, &p);
			check(p.layer_bytes == te.layer && p.global_bytes == te.global &&
				      p.fixed_bytes == te.fixed &&
				      (uint64_t)p.lora_params == te.lora_params &&
				      !strcmp(p.format, "ternary"),
			      "%s ternary: layer %llu (by hand %llu), global %llu (%llu), fixed %llu (%llu), "
			      "lora %lld (%llu), format %s",
			      m->dir, (unsigned long long)p.layer_bytes, (unsigned long long)te.layer,
			      (unsigned long long)p.global_bytes, (unsigned long long)te.global,
			      (unsigned long long)p.fixed_bytes, (unsigned long long)te.fixed,
			      (long long)p.lora_params, (unsigned long long)te.lora_params, p.format);
			/* the claim: every layer resident, nothing streamed, within the budget */
			uint64_t all = te.fixed + L * te.layer;
			check(st == TERN_OK && p.ok && p.n_layers[TERN_PLAN_DEVICE] == m->L &&
				      p.n_slots == 0 && p.used[TERN_PLAN_DEVICE] == all && all <= budget[i] &&
				      p.streamed[TERN_PLAN_HOST] + p.streamed[TERN_PLAN_DISK] == 0,
			      "%s ternary on %llu GiB: all %lld layers on the device, %llu bytes (by hand %llu) "
			      "(%s)",
			      m->dir, (unsigned long long)(budget[i] / GiB), (long long)p.n_layers[0],
			      (unsigned long long)p.used[TERN_PLAN_DEVICE], (unsigned long long)all,
			      st ? tern_error() : "fits");
			check_plan(m, &te, &p, st, budget[i], 16 * GiB, TERN_PLAN_DEFAULT_DEPTH);
			/* the same model with an NF4 (double-quant) base: each layer takes
			 * nf4_layer - layer more (4.5 vs 2 bits a weight) */
			memset(&p, 0, sizeof p);
			tern_plan_make(&c, c4, budget[i], 16 * GiB, &p);
			check(p.layer_bytes == nf4_layer && p.all_device == all + L * (nf4_layer - te.layer),
			      "%s nf4-dq: layer %llu (by hand %llu), all-resident %llu = ternary + %llu",
			      m->dir, (unsigned long long)p.layer_bytes, (unsigned long long)nf4_layer,
			      (unsigned long long)p.all_device,
			      (unsigned long long)(L * (nf4_layer - te.layer)));
		}
		tern_config_free(c3);
		tern_config_free(c4);
	}

	/* auto budgets: max(10 %, 512 MiB) off the device, max(10 %, 1 GiB) off MemAvailable */
	check(tern_plan_device_auto(80 * GiB) == 72 * GiB, "device auto 80 GiB -> 72 GiB");
	check(tern_plan_device_auto(4 * GiB) == 4 * GiB - 512 * MiB, "device auto 4 GiB -> 3.5 GiB");
	check(tern_plan_device_auto(256 * MiB) == 0, "device auto below the margin -> 0");
	check(tern_plan_host_auto_from(64 * GiB) == 64 * GiB - 64 * GiB / 10, "host auto 64 GiB");
	check(tern_plan_host_auto_from(4 * GiB) == 3 * GiB, "host auto 4 GiB -> 3 GiB");
	uint64_t h = 0;
	check(tern_plan_host_auto(&h) == TERN_OK, "host auto reads /proc/meminfo");

	/* the backends' own sizes, asked without a device (the plans above count them) */
	{
		struct tern_backend_sizes s, a;
		/* ref (the CPU reference) at T 100, V 1000, D 40: all 100 tokens in one chunk, 128 tasks
		 * over the vocabulary, 2 dx tasks of 20 columns */
		check(tern_backend_sizes("ref", 100, 1000, 40, &s) == TERN_OK && s.ce_chunk == 100 &&
			      s.ce_scratch ==
				      100 * 1000 * 4 + 128 * 40 * 4 + 100 * 16 + 2 * 20 * (4 + 64 * 8) &&
			      s.reserve == 64 * MiB,
		      "ref sizes: chunk %lld scratch %llu", (long long)s.ce_chunk,
		      (unsigned long long)s.ce_scratch);
		check(tern_backend_sizes("ref", 9000, 128256, 4096, &s) == TERN_OK && s.ce_chunk == 130,
		      "ref chunk at V 128256: %lld (64 MiB of logits)", (long long)s.ce_chunk);
		/* cpu (the fast backend): up to 128 MiB of logits per chunk, T split into equal chunks
		 * (9000 tokens at V 128256: 35 chunks of 258 or fewer, not 34 of 261 and a short one);
		 * the scratch holds at least the logits, the gathered x and dx rows and a double per token, plus one decoded W panel
		 * per thread (f32 W included: the figure does not depend on W's dtype) */
		check(tern_backend_sizes("cpu", 100, 1000, 40, &s) == TERN_OK && s.ce_chunk == 100 &&
			      s.ce_scratch >= 100 * 1000 * 4 + 2 * 100 * 40 * 4 + 100 * 16 + 1000 * 40 * 4 &&
			      s.reserve == 64 * MiB,
		      "cpu sizes: chunk %lld scratch %llu", (long long)s.ce_chunk,
		      (unsigned long long)s.ce_scratch);
		enum tern_status st = tern_backend_sizes("cpu", 9000, 128256, 4096, &s);
		check(st == TERN_OK && s.ce_chunk == 258,
		      "cpu chunk at V 128256: %lld (128 MiB of logits, equal chunks)", (long long)s.ce_chunk);
		st = tern_backend_sizes("cpu", 512, 32000, 768, &s);
		check(st == TERN_OK && s.ce_chunk == 512, "cpu chunk at T 512, V 32000: %lld (one chunk)",
		      (long long)s.ce_chunk);
		setenv("TERN_CE_CHUNK", "7", 1);
		check(tern_backend_sizes("cpu", 100, 1000, 40, &s) == TERN_OK && s.ce_chunk == 7 &&
			      tern_backend_sizes("ref", 100, 1000, 40, &a) == TERN_OK && a.ce_chunk == 7,
		      "TERN_CE_CHUNK=7: chunk %lld", (long long)s.ce_chunk);
		unsetenv("TERN_CE_CHUNK");
#ifdef TERN_HAVE_VULKAN
		/* 64 MiB / (4 V) = 524 rows, rounded down to whole 128-row tiles (TERN_VK_LOSS=v1: 524) */
		check(tern_backend_sizes("vulkan", 9000, 32000, 4096, &s) == TERN_OK && s.ce_chunk == 512 &&
			      s.ce_scratch == 512 * 32000 * 4 + 256 + 512 * 4 && s.reserve == 64 * MiB,
		      "vulkan sizes: chunk %lld scratch %llu", (long long)s.ce_chunk,
		      (unsigned long long)s.ce_scratch);
		check(tern_backend_sizes("vulkan", 9000, 1000, 64, &s) == TERN_OK && s.ce_chunk == 4096,
		      "vulkan chunk capped at 4096: %lld", (long long)s.ce_chunk);
		/* the decode-first products' two slots of f16 W rows join the reserve (F16 products from
		 * 512 tokens, weights with something to decode): 8B's largest projection (112 MiB in f16)
		 * fills two 64 MiB slots, a 4096 x 4096 one two of 32 MiB; none for f16 weights, fp32
		 * products or 511 tokens. The same two buffers hold the fp32 attention's dK/dV shares of
		 * grouped heads, T x H x Dh floats each (32 MiB at 2048 x 32 x 128): those set the two
		 * buffers' size where no slots are (f16 weights, fp32 products, 511 tokens), and nothing
		 * is added without grouped heads (Hkv = H) */
		{
			struct tern_size_shapes vs = {2048, 128256, 4096,     14336,       14336 * 4096, 32,
						      8,    128,    TERN_F16, TERN_NF4_DQ, TERN_BF16};
			uint64_t r[6];
			enum tern_status vst = tern_backend_sizes_for("vulkan", &vs, &s);
			r[0] = s.reserve;
			vs.W = 4096 * 4096;
			vst |= tern_backend_sizes_for("vulkan", &vs, &s);
			r[1] = s.reserve;
			vs.proj = TERN_F16;
			vst |= tern_backend_sizes_for("vulkan", &vs, &s);
			r[2] = s.reserve;
			vs.proj = TERN_NF4_DQ;
			vs.prec = TERN_F32;
			vst |= tern_backend_sizes_for("vulkan", &vs, &s);
			r[3] = s.reserve;
			vs.prec = TERN_F16;
			vs.T = 511;
			vst |= tern_backend_sizes_for("vulkan", &vs, &s);
			r[4] = s.reserve;
			vs.Hkv = 32;
			vst |= tern_backend_sizes_for("vulkan", &vs, &s);
			r[5] = s.reserve;
			check(vst == TERN_OK && r[0] == 192 * MiB && r[1] == 128 * MiB && r[2] == 128 * MiB &&
				      r[3] == 128 * MiB && r[4] == 64 * MiB + 2 * 511 * 4096 * 4 &&
				      r[5] == 64 * MiB,
			      "vulkan reserve with the decode-first slots: %llu %llu %llu %llu %llu %llu B",
			      (unsigned long long)r[0], (unsigned long long)r[1], (unsigned long long)r[2],
			      (unsigned long long)r[3], (unsigned long long)r[4], (unsigned long long)r[5]);
		}
		tern_backend_sizes("vulkan", 300, 5000, 64, &s);
#else
		tern_backend_sizes("cpu", 300, 5000, 64, &s);
#endif
#ifdef TERN_HAVE_CUDA
		enum tern_status cst = tern_backend_sizes("cuda", 9000, 32000, 4096, &s);
		/* without the other shapes: the shared scratch is the larger of ce_loss's (logits, 32 MiB
		 * of decoded lm_head rows, the chunk in bf16) and a product's limits (32 + 64 MiB), in
		 * whole MiB; the reserve 64 MiB. The chunk: 64 MiB of logits (524 tokens, 512 in whole
		 * tiles), also the floor of 128 · (D / 2048)² = 512 tokens at D = 4096 */
		uint64_t ce = 512ull * 32000 * 4 + 32 * MiB + 512ull * 4096 * 2;
		check(cst == TERN_OK && s.ce_chunk == 512 && s.shared &&
			      s.ce_scratch == (ce > 96 * MiB ? (ce + MiB - 1) / MiB * MiB : 96 * MiB) &&
			      s.reserve == 64 * MiB,
		      "cuda sizes: chunk %lld scratch %llu reserve %llu", (long long)s.ce_chunk,
		      (unsigned long long)s.ce_scratch, (unsigned long long)s.reserve);
		/* with Llama-3-8B's shapes at bf16 (a bf16 lm_head used in place): the loss's 512-token
		 * chunk (250.5 MiB of logits and its rows in bf16) is the most, above the down
		 * projection's 32 MiB of decoded weight and 2048 x 14336 bf16 operand (88 MiB); at fp32
		 * the logits and decoded rows; at bf16 with a bf16 projection (used in place) the
		 * logits and rows as at bf16 */
		struct tern_size_shapes sh = {2048, 128256, 4096,      14336,       14336 * 4096, 32,
					      8,    128,    TERN_BF16, TERN_NF4_DQ, TERN_BF16};
		uint64_t want = 512ull * 128256 * 4 + 512ull * 4096 * 2;
		check(tern_backend_sizes_for("cuda", &sh, &s) == TERN_OK &&
			      s.ce_scratch == (want + MiB - 1) / MiB * MiB && s.reserve == 64 * MiB,
		      "cuda sizes for 8B at bf16: scratch %llu (want %llu)", (unsigned long long)s.ce_scratch,
		      (unsigned long long)(want + MiB - 1) / MiB * MiB);
		sh.prec = TERN_F32;
		want = 512ull * 128256 * 4 + 2048ull * 4096 * 4;
		check(tern_backend_sizes_for("cuda", &sh, &s) == TERN_OK &&
			      s.ce_scratch == (want + MiB - 1) / MiB * MiB,
		      "cuda sizes for 8B at fp32: scratch %llu (want %llu)", (unsigned long long)s.ce_scratch,
		      (unsigned long long)(want + MiB - 1) / MiB * MiB);
		sh.prec = TERN_BF16;
		sh.proj = TERN_BF16;
		want = 512ull * 128256 * 4 + 512ull * 4096 * 2;
		check(tern_backend_sizes_for("cuda", &sh, &s) == TERN_OK &&
			      s.ce_scratch == (want + MiB - 1) / MiB * MiB,
		      "cuda sizes for 8B at bf16, bf16 projections: scratch %llu (want %llu)",
		      (unsigned long long)s.ce_scratch, (unsigned long long)(want + MiB - 1) / MiB * MiB);
		tern_backend_sizes("cuda", 300, 5000, 64, &s); /* auto's: cuda comes first */
#else
		check(tern_backend_sizes("cuda", 1, 1, 1, &s) == TERN_E_UNAVAILABLE,
		      "cuda sizes: unavailable");
#endif
		check(tern_backend_sizes("auto", 300, 5000, 64, &a) == TERN_OK && a.ce_chunk == s.ce_chunk &&
			      a.ce_scratch == s.ce_scratch && a.reserve == s.reserve,
		      "auto sizes are the first GPU backend's, else the CPU's");
		check(tern_backend_sizes("tpu", 1, 1, 1, &s) == TERN_E_INVALID, "unknown backend's sizes");
		check(tern_backend_sizes("cpu", -1, 1, 1, &s) == TERN_E_INVALID &&
			      tern_backend_sizes("cpu", 1, 0, 1, &s) == TERN_E_INVALID,
		      "bad sizes: %s", tern_error());
	}

	tern_config_free(cfg);
	issue11();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
