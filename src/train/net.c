/* The trainable network: forward and backward of the decoder over backend ops (net.h). */
#include "train/net.h"

#include "quant/quant.h"
#include "train/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ALIGN 256

/* Saved activations of one layer (views into the activation block). */
struct layer_act {
	struct tern_view xn1, rstd1;         /* [T,D], [T] */
	struct tern_view qr, kr;             /* [T,H*Dh], [T,Hkv*Dh]: projections before q/k norm (Qwen3) */
	struct tern_view rstdq, rstdk;       /* [T*H], [T*Hkv] */
	struct tern_view q, k, v;            /* after norm and rope; v [T,Hkv*Dh] */
	struct tern_view lse, ao;            /* [H,T], [T,H*Dh] */
	struct tern_view h1, xn2, rstd2;     /* [T,D], [T,D], [T] */
	struct tern_view g, u, a;            /* [T,F] */
	struct tern_view aon, rstdo;         /* BitNet: attn_sub_norm(ao) [T,H*Dh], [T] */
	struct tern_view an, rstda;          /* BitNet: ffn_sub_norm(a) [T,F], [T] */
	struct tern_view lu[TERN_MOD_COUNT]; /* LoRA u = drop(x) Aᵀ [T,R] per targeted module */
	/* sparse (MoE) layers: router logits [T,E]; the experts' rows in the grouped layout (moe.h,
	 * cap rows): inputs xe and outputs ey [cap,D], eg, eu, ea [cap,Fe]; the rows' token idx (i32)
	 * and weights rw [icap]; the host routing they came from */
	struct tern_view logits, xe, eg, eu, ea, ey, ridx, rw;
	struct tern_view elu[2]; /* expert LoRA u [cap,R]: gate_up (shared by gate and up), down */
	struct tern_view rlu;    /* router LoRA u [T,R] */
	struct tern_view groute; /* the routing's grouped block (moe.h blk), uploaded in one copy */
	struct tern_moe_route *route;
};

struct layer_w {
	struct tern_buffer *buf; /* the layer's pack group (device tier), else NULL */
	enum tern_tier tier;     /* host, disk: streamed by the residency manager (n->res) */
	uint64_t bytes;          /* group size */
	struct tern_weight w[TERN_MOD_COUNT];
	struct tern_view attn_norm, mlp_norm, q_norm, k_norm; /* f32 */
	struct tern_view attn_sub, ffn_sub;                   /* BitNet sub-norms, f32 */
	struct tern_view bias[TERN_MOD_COUNT];                /* f32 [O], size 0 when absent */
	int64_t window;
	bool moe;                  /* sparse: router + experts instead of gate/up/down */
	struct tern_weight router; /* [E, D] as stored */
	struct tern_weight *ew;    /* [E * 3]: gate, up, down of each expert */
	/* the experts of each projection (gate, up, down) for the grouped matmul, where the pack
	 * strides them uniformly (grouped; else the per-expert loop); xoff f32 [3][E] their NF4_DQ
	 * nested offsets, in the small block */
	struct tern_experts xg[3];
	bool grouped;
	struct tern_view xoff;
};

struct lora_slot {
	size_t offA, offB; /* bytes into the parameter block */
	int64_t I, O;
};

struct tern_net {
	struct tern_backend *be;
	const struct tern_model *m;
	struct tern_net_opts o;
	enum tern_dtype lprec; /* the dense LoRA products': BF16 at bf16 products where gemm runs it */
	int64_t T, D, F, H, Hkv, Dh, V, L, R; /* T: tokens of the micro-batch at work (tern_net_tokens) */
	int64_t Tmax;                         /* tokens the activations are allocated for (o.T) */
	int64_t mlp_rows; /* tokens of one dense-MLP shard (tiled_mlp; Tmax when untiled): mlp_rows_of */
	int64_t l0, l1;   /* the layers this net runs (a layer split's stage) */
	float *xb;        /* [Tmax, D] fp32: the boundary's host staging */
	float eps;

	struct tern_buffer *gbuf; /* tied: the global pack group (embeddings = lm_head, final norm);
				   * untied: the lm_head only */
	struct tern_weight embed, head;
	/* untied models keep the embedding table in host memory (the pack's mapping): only the T rows
	 * of a micro-batch are read, gathered and converted to fp32 in xh, and uploaded */
	const uint8_t *embed_host; /* the table [V, D] in embed_dt, or NULL (on the device) */
	enum tern_dtype embed_dt;
	float *xh;                 /* [T, D] */
	struct tern_buffer *small; /* f32 norms, biases, inv_freq, ones */
	struct tern_view norm, inv_freq, ones;
	struct layer_w *lw;

	struct lora_slot *slot; /* [L * TERN_MOD_COUNT]; offA == SIZE_MAX when not targeted */
	/* modules trained in full: their own buffers (a Llama-3-8B copy is 2 GiB; one block with the
	 * LoRA would pass maxMemoryAllocationSize sooner): [f][FB_PARAM..FB_M2], NULL when not */
	struct tern_buffer *fb[TERN_FULL_COUNT][4];
	struct tern_weight embed_t, head_t; /* the trained copies as weights (fb[f][FB_PARAM]) */
	size_t lora_bytes;
	int64_t lora_n;
	struct tern_buffer *params, *grads, *m1, *m2;

	/* streaming: the streamed layers' groups, through device slots filled ahead of use (NULL: every
	 * layer on the device) */
	struct tern_residency *res;

	struct tern_buffer *act;
	size_t act_bytes;
	struct layer_act *la;  /* [L] with checkpointing all alias one set */
	struct tern_view *xin; /* [L+1] layer inputs [T,D]: fp32, or f16 at F16 products */
	/* offloaded checkpoints (o.offload): xin[l] is slot xs[l % 2]; inputs l0 .. l1 - 2 are
	 * copied out to xhost (their slot is overwritten two layers on) and back in the backward.
	 * xout[l], xback[l]: the tickets of those copies; xbusy[s]: the copy out of slot s that
	 * ops writing it must wait for (0: none) */
	bool off;
	struct tern_view xs[2];
	struct tern_buffer *xhost;
	size_t xhost_bytes;
	uint64_t *xout, *xback, xbusy[2];
	struct tern_view xcur; /* [T,D] fp32: the f16/bf16 layer input at work (F16, BF16 products) */
	struct tern_view xq;   /* BitNet: act_quant8 of a projection's input [T,maxI] */
	bool bitnet;           /* model_type bitnet */
	/* io */
	struct tern_view tokens, targets, pos, seg; /* i32 [T] */
	/* backward scratch */
	struct tern_view xd, tmp, dul;                    /* [T,maxI], [T,maxI], [T,R] */
	struct tern_view dres, dxn, tmpD, xf, rstdf, dxf; /* [T,D] ... */
	struct tern_view dao, dq, dk, dv, dqr, dkr;
	struct tern_view da, dg; /* [T,F]: BitNet's and the experts' d(act) and dL/dg (a dense layer
				  * writes them over a and g); dL/du shares da's memory */
	struct tern_view loss, sumsq;
	uint64_t weight_bytes;
	/* mixtures of experts (E > 0): top K of E experts of width Fe; expert rows aligned to pad;
	 * host copies of a layer's logits / d(logits) [T,E] and of the rows' weight gradients [icap];
	 * backward scratch: d(logits) [T,E], gathered dy [cap,D], scaled dy and expert dx [T,D], the
	 * weight gradients [max(icap, cap)], iota i32 [max(T, cap)] */
	int64_t E, K, Fe, pad, cap, icap;
	bool any_moe, any_dense;
	bool grouped; /* sparse layers group their experts: F32 products, and the backend's grouped op
		       * is fast (be->grouped_fast) or TERN_MOE_GROUPED=1 asks for it; =0 forces the
		       * per-expert loop (for comparisons) */
	float *hlog, *hdw;
	struct tern_moe_route **routes; /* [L] (one with checkpointing) */
	/* expert LoRA of sparse layer l, slot k (0 gate_up: A [R,D], B [2Fe,R] per expert, gate rows
	 * first; 1 down: A [R,Fe], B [D,R]): xslot[l*XS+k], the E experts' A then their B, each
	 * expert's block contiguous (B is PEFT's interleaved [O, R·E] only on the host); slot 2 the
	 * router's LoRA, one A [R,D] and B [E,R] */
	struct lora_slot *xslot;
	struct tern_view dlogits, dye, dys, dxe, dwrow, iota;
	/* the load-balancing loss (o.aux_coef > 0): this micro-batch's sums over the sparse layers
	 * (choices, probabilities [E], rows), d aux / d p [E] (moe.h), the window's aux_coef · aux;
	 * aux_on while the micro-batch's first forward runs (not a recomputation), hseg its segments */
	double *aux_cnt, *aux_prob, *aux_gp, aux_rows, aux_sum;
	double aux_term; /* this micro-batch's aux_coef · aux (a layer split passes it and aux_gp back) */
	bool aux_on;
	const int32_t *hseg;
	double pairs; /* the micro-batch's causal (query, key) pairs without a window (the profile) */
};

#define XS 3 /* expert LoRA slots per layer: gate_up, down, router */

static const enum tern_role mod_role[TERN_MOD_COUNT] = {
	TERN_ROLE_Q, TERN_ROLE_K, TERN_ROLE_V, TERN_ROLE_O, TERN_ROLE_GATE, TERN_ROLE_UP, TERN_ROLE_DOWN};
static const enum tern_role bias_role[TERN_MOD_COUNT] = {
	TERN_ROLE_Q_BIAS,    TERN_ROLE_K_BIAS,  TERN_ROLE_V_BIAS,   TERN_ROLE_O_BIAS,
	TERN_ROLE_GATE_BIAS, TERN_ROLE_UP_BIAS, TERN_ROLE_DOWN_BIAS};

static size_t align_up(size_t x) { return (x + ALIGN - 1) / ALIGN * ALIGN; }

/* A bump allocator of views inside one future buffer: offsets first, the buffer afterwards. */
struct plan {
	size_t size;
	struct tern_view **v;
	int n, cap;
	bool oom;
};

static void take(struct plan *p, struct tern_view *v, size_t bytes)
{
	v->buf = NULL;
	v->off = p->size;
	v->size = bytes;
	p->size += align_up(bytes ? bytes : 4);
	if (p->n == p->cap) {
		int cap = p->cap ? 2 * p->cap : 64;
		struct tern_view **nv = realloc(p->v, (size_t)cap * sizeof *nv);
		if (!nv) {
			p->oom = true;
			return;
		}
		p->v = nv;
		p->cap = cap;
	}
	p->v[p->n++] = v;
}

/* v = bytes at off into base, a view taken before (a union: buffers of phases that never overlap
 * share memory; the caller says why they do not). */
static void alias(struct plan *p, struct tern_view *v, const struct tern_view *base, size_t off, size_t bytes)
{
	size_t keep = p->size;
	take(p, v, bytes);
	p->size = keep;
	v->off = base->off + off;
}

static void bind(struct plan *p, struct tern_buffer *b)
{
	for (int i = 0; i < p->n; i++)
		p->v[i]->buf = b;
}

void tern_net_module_shapes(const struct tern_model_config *c, int64_t io[TERN_MOD_COUNT][2])
{
	int64_t q = c->H * c->Dh, kv = c->Hkv * c->Dh;
	int64_t s[TERN_MOD_COUNT][2] = {{c->D, q},    {c->D, kv},   {c->D, kv},  {q, c->D},
					{c->D, c->F}, {c->D, c->F}, {c->F, c->D}};
	memcpy(io, s, sizeof s);
}

/* inv_freq[Dh/2] as transformers computes it in fp32 (default, linear, llama3). */
static void rope_inv_freq(const struct tern_model_config *c, float *f)
{
	int64_t half = c->Dh / 2;
	for (int64_t i = 0; i < half; i++) {
		float e = (float)(2 * i) / (float)c->Dh;
		f[i] = 1.0f / powf((float)c->rope_theta, e);
	}
	if (c->rope_type == TERN_ROPE_LINEAR) {
		for (int64_t i = 0; i < half; i++)
			f[i] = f[i] / (float)c->rope_factor;
	} else if (c->rope_type == TERN_ROPE_LLAMA3) {
		float factor = (float)c->rope_factor, lo = (float)c->rope_low_freq_factor,
		      hi = (float)c->rope_high_freq_factor, old = (float)c->rope_original_max_pos;
		float lo_wl = old / lo, hi_wl = old / hi;
		for (int64_t i = 0; i < half; i++) {
			float wl = (float)(2.0 * 3.14159265358979323846) /
				   f[i]; /* python 2 * math.pi, then fp32 */
			float v = wl > lo_wl ? f[i] / factor : f[i];
			if (!(wl < hi_wl) && !(wl > lo_wl)) {
				float sm = (old / wl - lo) / (hi - lo);
				v = (1.0f - sm) * v / factor + sm * v;
			}
			f[i] = v;
		}
	}
}

static bool targeted(const struct tern_net *n, int m) { return (n->o.modules >> m) & 1u; }

static struct lora_slot *slot_at(const struct tern_net *n, int l, int m)
{
	return &n->slot[l * TERN_MOD_COUNT + m];
}

/* The LoRA of module m of layer l; part: the MLP shard (tiled_mlp) whose dropout mask this is (0
 * for everything else, and for the whole MLP: the untiled keys). */
static struct tern_lora lora_of(const struct tern_net *n, int l, int m, uint64_t step, uint32_t micro,
				uint32_t part)
{
	const struct lora_slot *s = slot_at(n, l, m);
	struct tern_lora lo = {
		.A = {n->params, s->offA, (size_t)(n->R * s->I) * 4},
		.B = {n->params, s->offB, (size_t)(s->O * n->R) * 4},
		.R = n->R,
		.scale = n->o.scale,
		.dropout = n->o.dropout,
		.key = tern_dropout_key(n->o.seed, step, micro, (uint32_t)l,
					(uint32_t)m + (uint32_t)TERN_MOD_COUNT * part),
		.prec = n->o.prec,
		.lprec = n->lprec,
	};
	return lo;
}

static struct tern_view gview(const struct tern_net *n, struct tern_buffer *b, size_t off, size_t size)
{
	(void)n;
	struct tern_view v = {b, off, size};
	return v;
}

/* ---- creation ---- */

/* The LoRA block: A then B of each targeted (layer, module), layer-major. */
static void plan_lora(struct tern_net *n, const struct tern_model_config *c,
		      const int64_t io[TERN_MOD_COUNT][2])
{
	int64_t L = n->L, R = n->R;
	size_t off = 0;
	for (int l = 0; l < L; l++)
		for (int mo = 0; mo < TERN_MOD_COUNT; mo++) {
			struct lora_slot *s = slot_at(n, l, mo);
			s->I = io[mo][0];
			s->O = io[mo][1];
			if (!targeted(n, mo)) {
				s->offA = s->offB = SIZE_MAX;
				continue;
			}
			s->offA = off;
			off += (size_t)(R * s->I) * 4;
			s->offB = off;
			off += (size_t)(s->O * R) * 4;
		}
	for (int l = 0; l < L && n->xslot; l++)
		for (int k = 0; k < XS; k++) {
			struct lora_slot *s = &n->xslot[l * XS + k];
			int64_t ne = k == 2 ? 1 : n->E; /* the router has one A/B */
			s->I = k == 1 ? n->Fe : n->D;
			s->O = k == 2 ? n->E : k ? n->D : 2 * n->Fe;
			if (!((n->o.experts >> k) & 1u) || !tern_model_layer_moe(c, l)) {
				s->offA = s->offB = SIZE_MAX;
				continue;
			}
			s->offA = off;
			off += (size_t)(ne * R * s->I) * 4;
			s->offB = off;
			off += (size_t)(ne * s->O * R) * 4;
		}
	n->lora_bytes = off;
	n->lora_n = (int64_t)(off / 4);
}

static bool trained_full(const struct tern_net *n, enum tern_full f) { return (n->o.full >> f) & 1u; }

enum { FB_PARAM, FB_GRAD, FB_M1, FB_M2 };

static size_t full_bytes(const struct tern_net *n) { return (size_t)(n->V * n->D) * 4; }

/* How many modules are trained in full (each [V, D] f32 in 4 buffers of full_bytes). */
static int full_count(const struct tern_net *n)
{
	int c = 0;
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		c += (n->o.full >> f) & 1u;
	return c;
}

/* Block k (FB_PARAM, FB_GRAD, FB_M1, FB_M2) of module f trained in full. */
static struct tern_view full_view(const struct tern_net *n, int k, enum tern_full f)
{
	struct tern_view v = {n->fb[f][k], 0, full_bytes(n)};
	return v;
}

/* The mixture-of-experts sizes of a config (nothing for dense models). */
static void moe_dims(struct tern_net *n, const struct tern_model_config *c)
{
	n->E = c->E;
	n->K = c->top_k;
	n->Fe = c->Fe;
	n->any_dense = true;
	if (c->E <= 0)
		return;
	n->any_dense = false;
	for (int64_t l = 0; l < c->L; l++) {
		bool m = tern_model_layer_moe(c, l);
		n->any_moe |= m;
		n->any_dense |= !m;
	}
	int64_t w[3] = {c->D, c->Fe, n->R};
	n->pad = tern_moe_pad(w, 3);
	n->cap = tern_moe_cap(n->T, n->E, n->K, n->pad);
	n->icap = tern_moe_icap(n->T, n->E, n->K);
}

/* The activation block of one micro-batch: layer inputs, one saved set per layer (one in all
 * with checkpointing), io and backward scratch. */
/* Whether the layer inputs (the residual stream between layers) are kept in half precision:
 * at F16 and BF16 products. */
static bool half_stream(const struct tern_net *n) { return n->o.prec == TERN_F16 || n->o.prec == TERN_BF16; }

/* Whether the layer inputs are offloaded: asked for, with checkpointing, and a stage of at least
 * three layers (with fewer every input stays in one of the two slots). */
static bool offload_on(const struct tern_net *n)
{
	return n->o.offload && n->o.checkpointing && n->l1 - n->l0 >= 3;
}

/* tiled_mlp (o.mlp_shards > 1): the dense MLP of a checkpointed model without sparse layers runs in
 * shards of mlp_rows tokens (the last shorter), so its gate, up and act activations take
 * [mlp_rows, F] instead of [T, F] each; the backward recomputes each shard before its gradient.
 * Tmax otherwise (one shard: the untiled ops). */
static int64_t mlp_rows_of(const struct tern_net *n)
{
	int64_t s = n->o.mlp_shards;
	if (s <= 1 || !n->o.checkpointing || n->any_moe)
		return n->Tmax;
	return s >= n->Tmax ? 1 : (n->Tmax + s - 1) / s;
}

/* The dense MLP's shards of the micro-batch at work (1: untiled), and whether there are several. */
static int64_t mlp_parts(const struct tern_net *n) { return (n->T + n->mlp_rows - 1) / n->mlp_rows; }
static bool mlp_tiled(const struct tern_net *n) { return n->T > n->mlp_rows; }

/* Offloaded: the inputs the host keeps (l0 .. l1 - 2) and their bytes each (Tmax rows). */
static int64_t offload_count(const struct tern_net *n) { return n->off ? n->l1 - n->l0 - 1 : 0; }
static size_t offload_each(const struct tern_net *n)
{
	return (size_t)(n->Tmax * n->D) * (half_stream(n) ? 2 : 4);
}

static void plan_act(struct tern_net *n, const struct tern_model_config *c, struct plan *ap_)
{
	struct plan ap = *ap_;
	int64_t T = n->T, D = n->D, F = n->F, H = n->H, Hkv = n->Hkv, Dh = n->Dh, L = n->L, R = n->R;
	int64_t Fd = n->any_dense ? F : 0, E = n->E;
	if (n->any_moe && n->Fe > F) /* expert scratch (da, dg) holds at most T rows of Fe */
		F = n->Fe;
	int64_t maxI = D > F ? D : F;
	if (H * Dh > maxI)
		maxI = H * Dh;
	int64_t Tm = n->mlp_rows; /* the dense MLP's rows: a shard's with tiled_mlp */
	/* the attention backward's buffers (dao, dq, dk, dv, and qk-norm's dqr, dkr; placed below) */
	struct tern_view *ab[6] = {&n->dao, &n->dq, &n->dk, &n->dv, &n->dqr, &n->dkr};
	size_t abytes[6] = {(size_t)(T * H * Dh) * 4,
			    (size_t)(T * H * Dh) * 4,
			    (size_t)(T * Hkv * Dh) * 4,
			    (size_t)(T * Hkv * Dh) * 4,
			    c->qk_norm ? (size_t)(T * H * Dh) * 4 : 0,
			    c->qk_norm ? (size_t)(T * Hkv * Dh) * 4 : 0};
	size_t need = 0;
	for (int i = 0; i < 6; i++)
		need += abytes[i] ? align_up(abytes[i]) : 0;
	bool in_set = n->o.checkpointing && !n->any_moe && Fd > 0;
	/* a stage keeps the sets and inputs of its own layers [l0, l1] */
	int s0 = n->o.checkpointing ? 0 : (int)n->l0, s1 = n->o.checkpointing ? 1 : (int)n->l1;
	/* at F16 and BF16 products the layer inputs are kept in that dtype (the residual stream is
	 * rounded between layers, as a model run in f16/bf16 holds it; the forward and its
	 * recomputation see the same values); the layer at work reads an fp32 copy in xcur */
	bool x16 = half_stream(n);
	if (n->off) { /* two slots the stage's inputs take turns in (offload_on) */
		take(&ap, &n->xs[0], (size_t)(T * D) * (x16 ? 2 : 4));
		take(&ap, &n->xs[1], (size_t)(T * D) * (x16 ? 2 : 4));
	}
	for (int l = 0; l <= L; l++)
		if (!n->off)
			take(&ap, &n->xin[l], l >= n->l0 && l <= n->l1 ? (size_t)(T * D) * (x16 ? 2 : 4) : 0);
	if (x16)
		take(&ap, &n->xcur, (size_t)(T * D) * 4);
	for (int sidx = s0; sidx < s1; sidx++) {
		struct layer_act *a = &n->la[sidx];
		take(&ap, &a->xn1, (size_t)(T * D) * 4);
		take(&ap, &a->rstd1, (size_t)T * 4);
		take(&ap, &a->q, (size_t)(T * H * Dh) * 4);
		take(&ap, &a->k, (size_t)(T * Hkv * Dh) * 4);
		take(&ap, &a->v, (size_t)(T * Hkv * Dh) * 4);
		if (c->qk_norm) {
			take(&ap, &a->qr, (size_t)(T * H * Dh) * 4);
			take(&ap, &a->kr, (size_t)(T * Hkv * Dh) * 4);
			take(&ap, &a->rstdq, (size_t)(T * H) * 4);
			take(&ap, &a->rstdk, (size_t)(T * Hkv) * 4);
		}
		take(&ap, &a->lse, (size_t)(H * T) * 4);
		take(&ap, &a->ao, (size_t)(T * H * Dh) * 4);
		take(&ap, &a->h1, (size_t)(T * D) * 4);
		take(&ap, &a->xn2, (size_t)(T * D) * 4);
		take(&ap, &a->rstd2, (size_t)T * 4);
		take(&ap, &a->g, (size_t)(Tm * Fd) * 4);
		take(&ap, &a->u, (size_t)(Tm * Fd) * 4);
		take(&ap, &a->a, (size_t)(Tm * Fd) * 4);
		size_t span = a->a.off + (size_t)(Tm * Fd) * 4 - a->g.off;
		if (in_set && need > span) /* a shard's g, u, a may be smaller than what aliases them */
			ap.size += align_up(need - span);
		if (c->arch == TERN_ARCH_BITNET) {
			take(&ap, &a->aon, (size_t)(T * H * Dh) * 4);
			take(&ap, &a->rstdo, (size_t)T * 4);
			take(&ap, &a->an, (size_t)(Tm * Fd) * 4);
			take(&ap, &a->rstda, (size_t)T * 4);
		}
		if (n->any_moe) {
			take(&ap, &a->logits, (size_t)(T * E) * 4);
			take(&ap, &a->xe, (size_t)(n->cap * D) * 4);
			take(&ap, &a->eg, (size_t)(n->cap * n->Fe) * 4);
			take(&ap, &a->eu, (size_t)(n->cap * n->Fe) * 4);
			take(&ap, &a->ea, (size_t)(n->cap * n->Fe) * 4);
			take(&ap, &a->ey, (size_t)(n->cap * D) * 4);
			take(&ap, &a->ridx, (size_t)n->icap * 4);
			take(&ap, &a->rw, (size_t)n->icap * 4);
			if (n->o.prec == TERN_F32) /* the grouped experts' block */
				take(&ap, &a->groute, (size_t)tern_moe_nblk(T, E, n->K, n->pad) * 4);
			for (int k = 0; k < 2; k++)
				if ((n->o.experts >> k) & 1u)
					take(&ap, &a->elu[k], (size_t)(n->cap * R) * 4);
			if ((n->o.experts >> 2) & 1u)
				take(&ap, &a->rlu, (size_t)(T * R) * 4);
		}
		for (int mo = 0; mo < TERN_MOD_COUNT; mo++)
			if (targeted(n, mo))
				take(&ap, &a->lu[mo], (size_t)(T * R) * 4);
	}
	take(&ap, &n->tokens, (size_t)T * 4);
	take(&ap, &n->targets, (size_t)T * 4);
	take(&ap, &n->pos, (size_t)T * 4);
	take(&ap, &n->seg, (size_t)T * 4);
	/* drop(x) and the masked dx term exist only with LoRA dropout */
	size_t xdb = n->o.dropout > 0.0f ? (size_t)(T * maxI) * 4 : 0;
	take(&ap, &n->xd, xdb);
	take(&ap, &n->tmp, xdb);
	take(&ap, &n->dul, (size_t)(T * R) * 4);
	if (c->arch == TERN_ARCH_BITNET)
		take(&ap, &n->xq, (size_t)(T * maxI) * 4);
	take(&ap, &n->dres, (size_t)(T * D) * 4);
	take(&ap, &n->dxn, (size_t)(T * D) * 4);
	take(&ap, &n->tmpD, (size_t)(T * D) * 4);
	/* the head's input and its gradient live only while the loss runs, when no layer works: they
	 * share dxn's and tmpD's memory (a layer's backward scratch and output; the forward's last
	 * write to tmpD was cast into the loss's input before) */
	alias(&ap, &n->xf, &n->dxn, 0, (size_t)(T * D) * 4);
	take(&ap, &n->rstdf, (size_t)T * 4);
	alias(&ap, &n->dxf, &n->tmpD, 0, (size_t)(T * D) * 4);
	/* the attention backward's buffers: with checkpointing, inside the one set's g, u, a of a dense
	 * layer (made at least as large as they need above), which are dead once the MLP backward (the
	 * first half of layer_bwd) has read them and written again only by the next layer's
	 * recomputation, or its shards' (union_attn) */
	const struct layer_act *a0 = &n->la[0];
	size_t at = 0;
	for (int i = 0; i < 6; i++) {
		if (!abytes[i] && i >= 4)
			continue;
		if (in_set)
			alias(&ap, ab[i], &a0->g, at, abytes[i]);
		else
			take(&ap, ab[i], abytes[i]);
		at += align_up(abytes[i]);
	}
	/* the grouped experts (fp32 products only) write d(act) of every data row: cap rows of Fe */
	bool grp = n->any_moe && n->o.prec == TERN_F32;
	int64_t da_n = grp && n->cap * n->Fe > T * F ? n->cap * n->Fe : n->any_moe ? T * F : Tm * F;
	take(&ap, &n->da, n->any_moe || c->arch == TERN_ARCH_BITNET ? (size_t)da_n * 4 : 0);
	/* the dense MLP backward writes dL/da over a and dL/dg over g; BitNet (d(an) first) and the
	 * experts need buffers */
	take(&ap, &n->dg,
	     n->any_moe                    ? (size_t)(T * F) * 4
	     : c->arch == TERN_ARCH_BITNET ? (size_t)(Tm * F) * 4
					   : 0);
	if (n->any_moe) {
		take(&ap, &n->dlogits, (size_t)(T * E) * 4);
		take(&ap, &n->dye, (size_t)(n->cap * D) * 4);
		take(&ap, &n->dys, (size_t)(T * D) * 4);
		take(&ap, &n->dxe, (size_t)(T * D) * 4);
		take(&ap, &n->dwrow, (size_t)(grp && n->cap > n->icap ? n->cap : n->icap) * 4);
		take(&ap, &n->iota, (size_t)(grp && n->cap > T ? n->cap : T) * 4);
	}
	take(&ap, &n->loss, 4);
	take(&ap, &n->sumsq, 4);
	*ap_ = ap;
}

/* Rows r0 .. r0 + nr of a [rows, width] fp32 view (i32 alike). */
static struct tern_view rows(struct tern_view v, int64_t r0, int64_t nr, int64_t width)
{
	return tern_view_sub(v, (size_t)(r0 * width) * 4, (size_t)(nr * width) * 4);
}

/* Layer l's weights as views of its group at v (its device buffer or a streaming slot). */
static void bind_layer(struct tern_net *n, int l, struct tern_view v)
{
	struct layer_w *w = &n->lw[l];
	for (int mo = 0; mo < TERN_MOD_COUNT; mo++) {
		const struct tern_pack_tensor *t = tern_model_tensor(n->m, l, mod_role[mo]);
		if (t)
			tern_pack_weight(n->m->pack, t, v, &w->w[mo]);
	}
	if (!w->moe)
		return;
	tern_pack_weight(n->m->pack, tern_model_tensor(n->m, l, TERN_ROLE_ROUTER), v, &w->router);
	for (int e = 0; e < 3 * n->E; e++)
		tern_pack_weight(n->m->pack, tern_model_expert(n->m, l, e / 3, e % 3), v, &w->ew[e]);
	/* the grouped experts: the pack writes a projection's experts one after another (model.c's
	 * tensor order), so expert e's parts sit e strides after expert 0's; checked, else the loop */
	w->grouped = n->grouped;
	for (int k = 0; k < 3; k++) {
		enum tern_dtype dt = w->ew[k].dtype;
		w->grouped = w->grouped && dt != TERN_TERNARY &&
			     n->be->vt->supports(n->be, TERN_OP_MATMUL_GROUPED, dt) &&
			     n->be->vt->supports(n->be, TERN_OP_MATMUL_GROUPED_BWD, dt);
		struct tern_experts *x = &w->xg[k];
		const struct tern_weight *w0 = &w->ew[k], *w1 = &w->ew[n->E > 1 ? 3 + k : k];
		const struct tern_view *p0[3] = {&w0->data, &w0->absmax, &w0->nested},
				       *p1[3] = {&w1->data, &w1->absmax, &w1->nested};
		*x = (struct tern_experts){.w = *w0, .E = n->E, .offsets = rows(w->xoff, k * n->E, n->E, 1)};
		for (int p = 0; p < 3; p++)
			x->stride[p] = p0[p]->buf && p1[p]->off >= p0[p]->off ? p1[p]->off - p0[p]->off : 0;
		for (int64_t e = 0; e < n->E && w->grouped; e++) {
			struct tern_weight we;
			const struct tern_weight *wt = &w->ew[3 * e + k];
			tern_experts_at(x, e, &we);
			w->grouped = wt->dtype == we.dtype && wt->O == we.O && wt->I == we.I &&
				     wt->blocksize == we.blocksize && wt->data.off == we.data.off &&
				     wt->data.size == we.data.size && wt->absmax.off == we.absmax.off &&
				     wt->absmax.size == we.absmax.size && wt->nested.off == we.nested.off &&
				     wt->nested.size == we.nested.size && x->stride[0] % 4 == 0 &&
				     x->stride[1] % 4 == 0 && x->stride[2] % 4 == 0;
		}
	}
}

/* The residency manager of the streamed layers (n->lw[].tier set): their groups in the pack's
 * mapping, a streamed sparse layer's experts' parts (it streams per expert), and the sequence of
 * ensure_layer calls of a micro-batch. */
static enum tern_status residency_create(struct tern_net *n)
{
	const struct tern_model *m = n->m;
	int64_t L = n->L, E = n->any_moe ? n->E : 0;
	enum tern_status st = TERN_OK;
	struct tern_residency_layer *ly = tern_calloc((size_t)L, sizeof *ly);
	/* ensure_layer calls of a micro-batch: forward 0..L-1, then backward L-1, and with
	 * checkpointing two calls (recompute, backward) for each lower layer */
	int *seq = tern_calloc((size_t)(4 * L), sizeof *seq);
	if (!ly || !seq) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		goto out;
	}
	for (int l = (int)n->l0; l < n->l1; l++) {
		const struct layer_w *w = &n->lw[l];
		const struct tern_pack_group *g = &m->pack->groups[l];
		ly[l] = (struct tern_residency_layer){w->tier, m->pack->base + g->off, w->bytes, NULL, NULL};
		if (!w->moe || w->tier == TERN_TIER_DEVICE)
			continue;
		struct tern_residency_range *parts =
			tern_calloc((size_t)(E * TERN_RESIDENCY_XPARTS), sizeof *parts);
		int *nparts = tern_calloc((size_t)E, sizeof *nparts);
		ly[l].parts = parts;
		ly[l].nparts = nparts;
		if (!parts || !nparts) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		for (int64_t e = 0; e < E; e++) {
			struct tern_residency_range *r = &parts[TERN_RESIDENCY_XPARTS * e];
			int k = 0;
			for (int j = 0; j < 3; j++) {
				const struct tern_pack_tensor *t = tern_model_expert(m, l, (int)e, j);
				for (int p = 0; t && p < TERN_PART_COUNT; p++)
					if (t->size[p])
						r[k++] = (struct tern_residency_range){t->off[p] - g->off,
										       t->size[p]};
			}
			nparts[e] = k;
		}
	}
	int k = 0;
	for (int l = (int)n->l0; l < n->l1; l++)
		seq[k++] = l;
	int seq_eval = k;
	for (int l = (int)n->l1 - 1; l >= n->l0; l--) {
		if (n->o.checkpointing && l != n->l1 - 1)
			seq[k++] = l;
		seq[k++] = l;
	}
	struct tern_residency_opts ro = {.layers = ly,
					 .L = L,
					 .slots = n->o.slots,
					 .seq = seq,
					 .seq_eval = seq_eval,
					 .seq_train = k,
					 .E = E,
					 .K = n->K};
	st = tern_residency_create(n->be, &ro, &n->res);
out:
	for (int64_t l = 0; ly && l < L; l++) {
		free((void *)ly[l].parts);
		free((void *)ly[l].nparts);
	}
	free(ly);
	free(seq);
	return st;
}

static enum tern_status upload_group(struct tern_net *n, uint32_t g, struct tern_buffer **out)
{
	const struct tern_pack *p = n->m->pack;
	const struct tern_pack_group *gr = &p->groups[g];
	enum tern_status st = n->be->vt->buffer_alloc(n->be, gr->size, out);
	if (st != TERN_OK)
		return st;
	n->weight_bytes += gr->size;
	struct tern_view v = {*out, 0, gr->size};
	return n->be->vt->upload(n->be, v, p->base + gr->off);
}

/* The NF4_DQ nested offsets of sparse layer l's experts, f32 [3][E] (gate, up, down), into its
 * xoff (the grouped matmul reads them on the device; other dtypes do not read them). */
static enum tern_status upload_expert_offsets(struct tern_net *n, int l)
{
	float *h = tern_malloc((size_t)(3 * n->E) * 4);
	if (!h)
		return tern_fail(TERN_E_NOMEM, "net: out of host memory");
	for (int k = 0; k < 3; k++)
		for (int64_t e = 0; e < n->E; e++)
			h[k * n->E + e] = tern_model_expert(n->m, l, (int)e, k)->offset;
	enum tern_status st = n->be->vt->upload(n->be, n->lw[l].xoff, h);
	free(h);
	return st;
}

/* Uploads a vector tensor (norm, bias) as fp32 into the small block at v. */
static enum tern_status upload_vec(struct tern_net *n, const struct tern_pack_tensor *t, struct tern_view v)
{
	size_t cnt = (size_t)(t->shape[0] * t->shape[1]);
	float *h = tern_malloc(cnt * 4);
	if (!h)
		return TERN_E_NOMEM;
	enum tern_status st = tern_pack_tensor_f32(n->m->pack, t, h);
	if (st == TERN_OK)
		st = n->be->vt->upload(n->be, v, h);
	free(h);
	return st;
}

static enum tern_status need_op(struct tern_backend *be, enum tern_op op, enum tern_dtype dt,
				const char *what)
{
	if (be->vt->supports(be, op, dt))
		return TERN_OK;
	return tern_fail(TERN_E_UNSUPPORTED, "backend %s: op %s does not support %s (%s)", be->name,
			 tern_op_name(op), tern_dtype_name(dt), what);
}

enum tern_status tern_net_create(struct tern_backend *be, const struct tern_model *m,
				 const struct tern_net_opts *o, struct tern_net **out)
{
	const struct tern_model_config *c = &m->cfg;
	enum tern_status st = TERN_OK;
	struct plan sp = {0}, ap = {0};
	*out = NULL;
	if (o->T <= 0 || o->R <= 0 || o->modules == 0 || o->modules >= (1u << TERN_MOD_COUNT) ||
	    o->full >= (1u << TERN_FULL_COUNT))
		return tern_fail(TERN_E_INVALID, "net: bad options T=%lld R=%lld modules=0x%x",
				 (long long)o->T, (long long)o->R, o->modules);
	if (c->Dh % 2)
		return tern_fail(TERN_E_UNSUPPORTED, "net: head_dim %lld is odd (RoPE needs pairs)",
				 (long long)c->Dh);
	struct tern_net *n = tern_calloc(1, sizeof *n);
	if (!n)
		return tern_fail(TERN_E_NOMEM, "net: out of host memory");
	n->be = be;
	n->m = m;
	n->o = *o;
	n->lprec = o->prec == TERN_BF16 && tern_backend_supports_prec(be, TERN_OP_GEMM, TERN_BF16) ? TERN_BF16
												   : TERN_F32;
	n->T = n->Tmax = o->T;
	n->D = c->D, n->F = c->F, n->H = c->H, n->Hkv = c->Hkv, n->Dh = c->Dh, n->V = c->V, n->L = c->L;
	n->R = o->R;
	n->eps = (float)c->rms_eps;
	n->bitnet = c->arch == TERN_ARCH_BITNET;
	n->l0 = o->l0;
	n->l1 = o->l1 ? o->l1 : c->L;
	moe_dims(n, c);
	n->mlp_rows = mlp_rows_of(n);
	{ /* TERN_MOE_GROUPED=1 groups where the backend's grouped op is slow, =0 never */
		const char *g = getenv("TERN_MOE_GROUPED");
		bool want = g && !strcmp(g, "1") ? true : g && !strcmp(g, "0") ? false : be->grouped_fast;
		n->grouped = n->any_moe && o->prec == TERN_F32 && want;
	}
	int64_t T = n->T, D = n->D, Dh = n->Dh, L = n->L;
	bool first = n->l0 == 0, last = n->l1 == L;
	if (n->l0 < 0 || n->l0 >= n->l1 || n->l1 > L || ((!first || !last) && !o->link)) {
		st = tern_fail(TERN_E_INVALID, "net: layers [%lld, %lld) of %lld%s", (long long)n->l0,
			       (long long)n->l1, (long long)L,
			       (!first || !last) && !o->link ? " without a link to the other stages" : "");
		goto out;
	}
	if ((!first || !last) && !(n->xb = tern_malloc((size_t)(T * D) * sizeof(float)))) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		goto out;
	}
	int64_t io[TERN_MOD_COUNT][2];
	tern_net_module_shapes(c, io);

	/* every op the forward and backward use */
	static const enum tern_op ops[] = {
		TERN_OP_GEMM,       TERN_OP_AXPY,      TERN_OP_ADAMW,        TERN_OP_SUMSQ, TERN_OP_CLIP,
		TERN_OP_DROPOUT,    TERN_OP_RMSNORM,   TERN_OP_RMSNORM_BWD,  TERN_OP_ROPE,  TERN_OP_SWIGLU,
		TERN_OP_SWIGLU_BWD, TERN_OP_ATTENTION, TERN_OP_ATTENTION_BWD};
	for (size_t i = 0; i < sizeof ops / sizeof ops[0] && st == TERN_OK; i++)
		st = need_op(be, ops[i], TERN_F32, "fp32 activations");
	if (st != TERN_OK)
		goto out;
	static const enum tern_op moe_ops[] = {TERN_OP_GATHER_ROWS, TERN_OP_SCATTER_ADD_ROWS, TERN_OP_ROWDOT};
	for (size_t i = 0; n->any_moe && i < sizeof moe_ops / sizeof moe_ops[0] && st == TERN_OK; i++)
		st = need_op(be, moe_ops[i], TERN_F32, "mixture of experts");
	if (st == TERN_OK && n->bitnet)
		st = need_op(be, TERN_OP_ACT_QUANT8, TERN_F32, "BitNet activations");
	if (st != TERN_OK)
		goto out;
	if (o->experts && (!n->any_moe || (o->experts >> 3) || o->dropout > 0.0f)) {
		st = tern_fail(
			TERN_E_INVALID,
			"net: LoRA on experts 0x%x needs a mixture-of-experts model and lora_dropout 0 "
			"(PEFT's target_parameters have no dropout)",
			o->experts);
		goto out;
	}
	unsigned mlp_mods = (1u << TERN_MOD_GATE) | (1u << TERN_MOD_UP) | (1u << TERN_MOD_DOWN);
	if (n->any_moe && (o->modules & mlp_mods)) {
		st = tern_fail(TERN_E_UNSUPPORTED,
			       "net: %s: LoRA on gate_proj/up_proj/down_proj of a mixture-of-experts model "
			       "(its experts take LoRA through opts.experts)",
			       c->model_type);
		goto out;
	}
	if (!tern_backend_supports_prec(be, TERN_OP_MATMUL, o->prec) ||
	    !tern_backend_supports_prec(be, TERN_OP_MATMUL_BWD, o->prec)) {
		st = tern_fail(TERN_E_UNSUPPORTED, "backend %s: matmul precision %s is not supported",
			       be->name, tern_dtype_name(o->prec));
		goto out;
	}

	/* ---- globals ---- */
	const struct tern_pack_tensor *te = tern_model_tensor(m, -1, TERN_ROLE_EMBED);
	const struct tern_pack_tensor *th = tern_model_tensor(m, -1, TERN_ROLE_HEAD);
	const struct tern_pack_tensor *tn = tern_model_tensor(m, -1, TERN_ROLE_NORM);
	if (!te || !tn) {
		st = tern_fail(TERN_E_INVALID, "net: model has no embeddings or final norm");
		goto out;
	}
	if (!th)
		th = te; /* tied */
	if ((st = need_op(be, TERN_OP_EMBED, te->dtype, "embed_tokens")) ||
	    (st = need_op(be, TERN_OP_CE_LOSS, th->dtype, "lm_head")))
		goto out;
	if ((o->full >> TERN_FULL_EMBED) & 1u) {
		if ((st = need_op(be, TERN_OP_EMBED, TERN_F32, "embed_tokens trained in full")) ||
		    (st = need_op(be, TERN_OP_EMBED_BWD, TERN_F32, "embed_tokens trained in full")))
			goto out;
	}
	if (((o->full >> TERN_FULL_HEAD) & 1u) &&
	    (st = need_op(be, TERN_OP_CE_LOSS, TERN_F32, "lm_head trained in full")))
		goto out;
	if (th == te && !first && !last) {
		/* a middle stage: neither the embeddings nor the lm_head */
	} else if (th == te) {
		if ((st = upload_group(n, m->pack->n_groups - 1, &n->gbuf)))
			goto out;
		struct tern_view gv = {n->gbuf, 0, m->pack->groups[m->pack->n_groups - 1].size};
		tern_pack_weight(m->pack, te, gv, &n->embed);
		tern_pack_weight(m->pack, th, gv, &n->head);
	} else {
		/* the lm_head (one plain-dtype part) on the device (of the last stage), the embeddings
		 * on the host */
		uint64_t hb = th->size[TERN_PART_DATA];
		if (last) {
			if ((st = be->vt->buffer_alloc(be, hb, &n->gbuf)))
				goto out;
			n->weight_bytes += hb;
			struct tern_view hv = {n->gbuf, 0, hb};
			if ((st = be->vt->upload(be, hv, m->pack->base + th->off[TERN_PART_DATA])))
				goto out;
			n->head = (struct tern_weight){
				.dtype = th->dtype, .O = th->shape[0], .I = th->shape[1], .data = hv};
		}
		n->embed_host = m->pack->base + te->off[TERN_PART_DATA];
		n->embed_dt = te->dtype;
		if (!(n->xh = tern_malloc((size_t)(T * c->D) * sizeof(float)))) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
	}

	/* ---- per-layer weights and the small fp32 block ---- */
	n->lw = tern_calloc((size_t)L, sizeof *n->lw);
	n->slot = tern_calloc((size_t)(L * TERN_MOD_COUNT), sizeof *n->slot);
	n->la = tern_calloc((size_t)L, sizeof *n->la);
	n->xin = tern_calloc((size_t)(L + 1), sizeof *n->xin);
	if (o->experts)
		n->xslot = tern_calloc((size_t)(XS * L), sizeof *n->xslot);
	if (!n->lw || !n->slot || !n->la || !n->xin || (o->experts && !n->xslot)) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		goto out;
	}
	take(&sp, &n->norm, (size_t)D * 4);
	take(&sp, &n->inv_freq, (size_t)(Dh / 2) * 4);
	take(&sp, &n->ones, (size_t)T * 4);
	for (int l = 0; l < L; l++) {
		struct layer_w *w = &n->lw[l];
		w->moe = tern_model_layer_moe(c, l);
		if (w->moe && !(w->ew = tern_calloc((size_t)(3 * n->E), sizeof *w->ew))) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		if (w->moe)
			take(&sp, &w->xoff, (size_t)(3 * n->E) * 4);
		take(&sp, &w->attn_norm, (size_t)D * 4);
		take(&sp, &w->mlp_norm, (size_t)D * 4);
		if (c->qk_norm) {
			take(&sp, &w->q_norm, (size_t)Dh * 4);
			take(&sp, &w->k_norm, (size_t)Dh * 4);
		}
		if (c->arch == TERN_ARCH_BITNET) {
			take(&sp, &w->attn_sub, (size_t)(n->H * Dh) * 4);
			take(&sp, &w->ffn_sub, (size_t)n->F * 4);
		}
		for (int mo = 0; mo < TERN_MOD_COUNT; mo++)
			if (tern_model_tensor(m, l, bias_role[mo]))
				take(&sp, &w->bias[mo], (size_t)io[mo][1] * 4);
		w->window = c->sliding_window > 0 && l >= c->max_window_layers ? c->sliding_window : 0;
	}
	if (sp.oom) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		goto out;
	}
	if ((st = be->vt->buffer_alloc(be, sp.size, &n->small)))
		goto out;
	bind(&sp, n->small);
	n->weight_bytes += sp.size;
	{
		float *f = tern_malloc((size_t)(T > Dh ? T : Dh) * 4);
		if (!f) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		rope_inv_freq(c, f);
		st = be->vt->upload(be, n->inv_freq, f);
		for (int64_t i = 0; i < T; i++)
			f[i] = 1.0f;
		if (st == TERN_OK)
			st = be->vt->upload(be, n->ones, f);
		free(f);
		if (st || (st = upload_vec(n, tn, n->norm)))
			goto out;
	}
	bool streamed = false;
	for (int l = (int)n->l0; l < n->l1; l++) {
		struct layer_w *w = &n->lw[l];
		w->tier = o->tiers ? (enum tern_tier)o->tiers[l] : TERN_TIER_DEVICE;
		w->bytes = m->pack->groups[l].size;
		streamed |= w->tier != TERN_TIER_DEVICE && w->bytes > 0;
	}
	if (streamed) {
		if ((st = residency_create(n)))
			goto out;
		n->weight_bytes += tern_residency_device_bytes(n->res);
	}
	for (int l = (int)n->l0; l < n->l1; l++) { /* another stage's layers: nothing here */
		struct layer_w *w = &n->lw[l];
		struct tern_view lv = {NULL, 0, w->bytes}; /* streamed: bound to a slot by ensure_layer */
		if (w->tier == TERN_TIER_DEVICE) {
			if ((st = upload_group(n, (uint32_t)l, &w->buf)))
				goto out;
			lv.buf = w->buf;
		}
		for (int mo = 0; mo < TERN_MOD_COUNT; mo++) {
			const struct tern_pack_tensor *t = tern_model_tensor(m, l, mod_role[mo]);
			if (!t && w->moe && mo >= TERN_MOD_GATE)
				continue; /* the experts instead */
			if (!t) {
				st = tern_fail(TERN_E_INVALID, "net: layer %d has no %s", l,
					       tern_module_name((enum tern_module)mo));
				goto out;
			}
			if ((st = need_op(be, TERN_OP_MATMUL, t->dtype, t->name)) ||
			    (st = need_op(be, TERN_OP_MATMUL_BWD, t->dtype, t->name)))
				goto out;
			tern_pack_weight(m->pack, t, lv, &w->w[mo]);
			const struct tern_pack_tensor *b = tern_model_tensor(m, l, bias_role[mo]);
			if (b && (st = upload_vec(n, b, w->bias[mo])))
				goto out;
		}
		for (int e = 0; w->moe && e <= 3 * n->E; e++) {
			const struct tern_pack_tensor *t = e == 3 * n->E
								   ? tern_model_tensor(m, l, TERN_ROLE_ROUTER)
								   : tern_model_expert(m, l, e / 3, e % 3);
			if (!t) {
				st = tern_fail(TERN_E_INVALID, "net: layer %d has no %s %d", l,
					       e == 3 * n->E ? "router" : "expert", e / 3);
				goto out;
			}
			if ((st = need_op(be, TERN_OP_MATMUL, t->dtype, t->name)) ||
			    (st = need_op(be, TERN_OP_MATMUL_BWD, t->dtype, t->name)))
				goto out;
		}
		if (w->moe && (st = upload_expert_offsets(n, l)))
			goto out;
		bind_layer(n, l, lv);
		if ((st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_ATTN_NORM), w->attn_norm)) ||
		    (st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_MLP_NORM), w->mlp_norm)))
			goto out;
		if (c->qk_norm &&
		    ((st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_Q_NORM), w->q_norm)) ||
		     (st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_K_NORM), w->k_norm))))
			goto out;
		if (n->bitnet &&
		    ((st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_ATTN_SUB_NORM), w->attn_sub)) ||
		     (st = upload_vec(n, tern_model_tensor(m, l, TERN_ROLE_FFN_SUB_NORM), w->ffn_sub))))
			goto out;
	}

	plan_lora(n, c, io);
	size_t off = n->lora_bytes;
	struct tern_buffer **lb[4] = {&n->params, &n->grads, &n->m1, &n->m2};
	for (int i = 0; i < 4; i++) {
		if ((st = be->vt->buffer_alloc(be, off, lb[i])))
			goto out;
		struct tern_view v = {*lb[i], 0, off};
		if ((st = be->vt->zero(be, v)))
			goto out;
	}
	/* the copies trained in full start as the base weights (tied: both from embed_tokens) */
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		if (!trained_full(n, (enum tern_full)f))
			continue;
		for (int k = 0; k < 4; k++)
			if ((st = be->vt->buffer_alloc(be, full_bytes(n), &n->fb[f][k])) ||
			    (st = be->vt->zero(be, full_view(n, k, (enum tern_full)f))))
				goto out;
		const struct tern_pack_tensor *src = f == TERN_FULL_EMBED ? te : th;
		float *h = tern_malloc((size_t)(n->V * D) * 4);
		if (!h) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		st = tern_pack_tensor_f32(m->pack, src, h);
		if (st == TERN_OK)
			st = be->vt->upload(be, full_view(n, FB_PARAM, (enum tern_full)f), h);
		free(h);
		if (st)
			goto out;
		struct tern_weight *w = f == TERN_FULL_EMBED ? &n->embed_t : &n->head_t;
		*w = (struct tern_weight){.dtype = TERN_F32,
					  .O = n->V,
					  .I = D,
					  .data = full_view(n, FB_PARAM, (enum tern_full)f)};
	}

	n->off = offload_on(n);
	plan_act(n, c, &ap);
	if (ap.oom) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		goto out;
	}
	if ((st = be->vt->buffer_alloc(be, ap.size, &n->act)))
		goto out;
	bind(&ap, n->act);
	n->act_bytes = ap.size;
	if (n->off) {
		for (int64_t l = n->l0; l <= n->l1; l++)
			n->xin[l] = n->xs[l % 2];
		void *hp;
		n->xhost_bytes = (size_t)offload_count(n) * offload_each(n);
		n->xout = tern_calloc((size_t)(L + 1), sizeof *n->xout);
		n->xback = tern_calloc((size_t)(L + 1), sizeof *n->xback);
		if (!n->xout || !n->xback) {
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		if (!be->vt->host_alloc || !be->vt->copy_async) {
			st = tern_fail(
				TERN_E_UNSUPPORTED,
				"net: gradient_checkpointing: offload needs asynchronous copies, which "
				"the %s backend has not; use gradient_checkpointing: true",
				be->name);
			goto out;
		}
		if ((st = be->vt->host_alloc(be, n->xhost_bytes, &n->xhost, &hp)))
			goto out;
	}
	if (n->any_moe) {
		int nsets = o->checkpointing ? 1 : (int)L;
		n->routes = tern_calloc((size_t)L, sizeof *n->routes);
		n->hlog = tern_malloc((size_t)(T * n->E) * 4);
		int64_t ni = (int64_t)(n->iota.size / 4); /* T, or cap rows for the grouped experts */
		n->hdw = tern_malloc((size_t)(n->icap > n->cap ? n->icap : n->cap) * 4);
		int32_t *iota = tern_malloc((size_t)ni * 4);
		if (o->aux_coef > 0)
			n->aux_cnt = tern_calloc((size_t)(3 * n->E), sizeof *n->aux_cnt);
		n->aux_prob = n->aux_cnt ? n->aux_cnt + n->E : NULL;
		n->aux_gp = n->aux_cnt ? n->aux_cnt + 2 * n->E : NULL;
		if (!n->routes || !n->hlog || !n->hdw || !iota || (o->aux_coef > 0 && !n->aux_cnt)) {
			free(iota);
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
			goto out;
		}
		for (int64_t i = 0; i < ni; i++)
			iota[i] = (int32_t)i;
		st = be->vt->upload(be, n->iota, iota);
		free(iota);
		for (int i = 0; i < nsets && st == TERN_OK; i++)
			if ((st = tern_moe_route_alloc(T, n->E, n->K, n->pad, &n->routes[i])) == TERN_OK)
				n->la[i].route = n->routes[i];
		if (st)
			goto out;
	}
	if (o->checkpointing)
		for (int l = 1; l < L; l++)
			n->la[l] = n->la[0];
	*out = n;
	n = NULL;
out:
	free(sp.v);
	free(ap.v);
	tern_net_free(n);
	return st;
}

void tern_net_free(struct tern_net *n)
{
	if (!n)
		return;
	struct tern_backend *be = n->be;
	struct tern_buffer *bufs[] = {n->gbuf, n->small, n->params, n->grads, n->m1, n->m2, n->act, n->xhost};
	for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
		if (bufs[i])
			be->vt->buffer_free(be, bufs[i]);
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		for (int k = 0; k < 4; k++)
			if (n->fb[f][k])
				be->vt->buffer_free(be, n->fb[f][k]);
	if (n->lw)
		for (int64_t l = 0; l < n->L; l++)
			if (n->lw[l].buf)
				be->vt->buffer_free(be, n->lw[l].buf);
	tern_residency_free(n->res);
	if (n->routes)
		for (int64_t l = 0; l < n->L; l++)
			tern_moe_route_free(n->routes[l]);
	free(n->routes);
	free(n->hlog);
	free(n->hdw);
	free(n->aux_cnt);
	if (n->lw)
		for (int64_t l = 0; l < n->L; l++)
			free(n->lw[l].ew);
	free(n->xh);
	free(n->xb);
	free(n->lw);
	free(n->slot);
	free(n->xslot);
	free(n->la);
	free(n->xin);
	free(n->xout);
	free(n->xback);
	free(n);
}

void tern_net_memory(const struct tern_net *n, uint64_t *weights, uint64_t *lora, uint64_t *act)
{
	*weights = n->weight_bytes;
	*lora = (uint64_t)n->lora_bytes * 4 + (uint64_t)full_count(n) * full_bytes(n) * 4;
	*act = n->act_bytes;
}

int64_t tern_net_params(const struct tern_net *n) { return n->lora_n + (int64_t)full_count(n) * n->V * n->D; }

/* ---- LoRA parameters ---- */

static enum tern_status expert_copy(struct tern_net *n, struct tern_lora_set *s, bool up);

static enum tern_status lora_copy(struct tern_net *n, struct tern_lora_set *s, bool up)
{
	unsigned mods = n->o.modules | n->o.experts << TERN_MOD_COUNT;
	if (s->L != n->L || s->R != n->R || s->modules != mods || s->full != n->o.full ||
	    (n->o.experts && s->E != n->E))
		return tern_fail(TERN_E_INVALID,
				 "net: LoRA set L=%d R=%lld modules=0x%x full=0x%x differs from the net's "
				 "L=%lld R=%lld modules=0x%x full=0x%x",
				 s->L, (long long)s->R, s->modules, s->full, (long long)n->L, (long long)n->R,
				 mods, n->o.full);
	const struct tern_backend_vtable *vt = n->be->vt;
	enum tern_status st = TERN_OK;
	for (int f = 0; f < TERN_FULL_COUNT && st == TERN_OK; f++) {
		const struct tern_full_tensor *t = &s->f[f];
		if (!trained_full(n, (enum tern_full)f))
			continue;
		if (t->O != n->V || t->I != n->D)
			return tern_fail(TERN_E_INVALID, "net: %s is [%lld, %lld], expected [%lld, %lld]",
					 tern_full_name((enum tern_full)f), (long long)t->O, (long long)t->I,
					 (long long)n->V, (long long)n->D);
		/* up: only what the set holds (a module it has no values for keeps the base copy) */
		if (up && !((s->full_have >> f) & 1u))
			continue;
		static const int blk[3] = {FB_PARAM, FB_M1, FB_M2};
		float *h[3] = {t->W, t->m, t->v};
		for (int k = 0; k < 3 && st == TERN_OK; k++) {
			if (!h[k])
				continue;
			struct tern_view v = full_view(n, blk[k], (enum tern_full)f);
			st = up ? vt->upload(n->be, v, h[k]) : vt->download(n->be, h[k], v);
		}
		if (st == TERN_OK && !up)
			s->full_have |= 1u << f;
	}
	for (int l = 0; l < n->L && st == TERN_OK; l++)
		for (int mo = 0; mo < TERN_MOD_COUNT && st == TERN_OK; mo++) {
			if (!targeted(n, mo))
				continue;
			const struct lora_slot *sl = slot_at(n, l, mo);
			struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)mo);
			if (t->I != sl->I || t->O != sl->O)
				return tern_fail(
					TERN_E_INVALID,
					"net: LoRA layer %d %s is [%lld, %lld], expected [%lld, %lld]", l,
					tern_module_name((enum tern_module)mo), (long long)t->I,
					(long long)t->O, (long long)sl->I, (long long)sl->O);
			size_t na = (size_t)(n->R * sl->I) * 4, nb = (size_t)(sl->O * n->R) * 4;
			struct tern_buffer *bufs[3] = {n->params, n->m1, n->m2};
			float *ha[3] = {t->A, t->mA, t->vA}, *hb[3] = {t->B, t->mB, t->vB};
			for (int k = 0; k < 3 && st == TERN_OK; k++) {
				if (!ha[k] || !hb[k])
					continue;
				struct tern_view va = gview(n, bufs[k], sl->offA, na),
						 vb = gview(n, bufs[k], sl->offB, nb);
				if (up) {
					st = vt->upload(n->be, va, ha[k]);
					if (st == TERN_OK)
						st = vt->upload(n->be, vb, hb[k]);
				} else {
					st = vt->download(n->be, ha[k], va);
					if (st == TERN_OK)
						st = vt->download(n->be, hb[k], vb);
				}
			}
		}
	if (st == TERN_OK)
		st = expert_copy(n, s, up);
	return st;
}

/* B [O, R·E] (PEFT, host) <-> E blocks [O, R] (the net): to_net or back. */
static void permute_b(float *dst, const float *src, int64_t O, int64_t R, int64_t E, bool to_net)
{
	for (int64_t e = 0; e < E; e++)
		for (int64_t o = 0; o < O; o++)
			for (int64_t j = 0; j < R; j++) {
				size_t peft = (size_t)(o * R * E + j * E + e),
				       net = (size_t)((e * O + o) * R + j);
				if (to_net)
					dst[net] = src[peft];
				else
					dst[peft] = src[net];
			}
}

/* The expert slots of s to the device (up) or from it. */
static enum tern_status expert_copy(struct tern_net *n, struct tern_lora_set *s, bool up)
{
	const struct tern_backend_vtable *vt = n->be->vt;
	enum tern_status st = TERN_OK;
	float *tmp = NULL;
	for (int l = 0; l < n->L && st == TERN_OK && n->xslot; l++)
		for (int k = 0; k < XS && st == TERN_OK; k++) {
			const struct lora_slot *sl = &n->xslot[l * XS + k];
			if (sl->offA == SIZE_MAX)
				continue;
			struct tern_lora_tensor *t =
				tern_lora_at(s, l, (enum tern_module)(TERN_LORA_EXP_GATE_UP + k));
			int64_t ne = k == 2 ? 1 : n->E; /* the router: one A/B, B as PEFT stores it */
			if (t->I != sl->I || t->O != sl->O || t->r != ne * n->R)
				return tern_fail(TERN_E_INVALID,
						 "net: expert LoRA of layer %d differs in shape", l);
			size_t na = (size_t)(ne * n->R * sl->I) * 4, nb = (size_t)(ne * sl->O * n->R) * 4;
			free(tmp); /* B's permutation, per slot (gate_up and down differ in size) */
			if (!(tmp = tern_malloc(nb)))
				return tern_fail(TERN_E_NOMEM, "net: out of host memory");
			struct tern_buffer *bufs[3] = {n->params, n->m1, n->m2};
			float *ha[3] = {t->A, t->mA, t->vA}, *hb[3] = {t->B, t->mB, t->vB};
			for (int q = 0; q < 3 && st == TERN_OK; q++) {
				if (!ha[q] || !hb[q])
					continue;
				struct tern_view va = gview(n, bufs[q], sl->offA, na),
						 vb = gview(n, bufs[q], sl->offB, nb);
				if (up) {
					permute_b(tmp, hb[q], sl->O, n->R, ne, true);
					st = vt->upload(n->be, va, ha[q]);
					if (st == TERN_OK)
						st = vt->upload(n->be, vb, tmp);
				} else {
					st = vt->download(n->be, ha[q], va);
					if (st == TERN_OK)
						st = vt->download(n->be, tmp, vb);
					if (st == TERN_OK)
						permute_b(hb[q], tmp, sl->O, n->R, ne, false);
				}
			}
		}
	free(tmp);
	return st;
}

enum tern_status tern_net_expert_grad(struct tern_net *n, int l, int k, float *dA, float *dB)
{
	if (l < 0 || l >= n->L || k < 0 || k >= XS || !n->xslot || n->xslot[l * XS + k].offA == SIZE_MAX)
		return tern_fail(TERN_E_INVALID, "net: layer %d has no expert LoRA slot %d", l, k);
	const struct lora_slot *sl = &n->xslot[l * XS + k];
	int64_t ne = k == 2 ? 1 : n->E;
	size_t na = (size_t)(ne * n->R * sl->I) * 4, nb = (size_t)(ne * sl->O * n->R) * 4;
	float *tmp = tern_malloc(nb);
	if (!tmp)
		return tern_fail(TERN_E_NOMEM, "net: out of host memory");
	enum tern_status st = n->be->vt->download(n->be, dA, gview(n, n->grads, sl->offA, na));
	if (st == TERN_OK)
		st = n->be->vt->download(n->be, tmp, gview(n, n->grads, sl->offB, nb));
	if (st == TERN_OK)
		permute_b(dB, tmp, sl->O, n->R, ne, false);
	free(tmp);
	return st;
}

enum tern_status tern_net_lora_upload(struct tern_net *n, const struct tern_lora_set *s)
{
	return lora_copy(n, (struct tern_lora_set *)s, true); /* up writes nothing into s */
}

enum tern_status tern_net_full_grad(struct tern_net *n, enum tern_full f, float *dW)
{
	if ((unsigned)f >= TERN_FULL_COUNT || !trained_full(n, f))
		return tern_fail(TERN_E_INVALID, "net: %s is not trained in full", tern_full_name(f));
	return n->be->vt->download(n->be, dW, full_view(n, FB_GRAD, f));
}
enum tern_status tern_net_lora_download(struct tern_net *n, struct tern_lora_set *s)
{
	return lora_copy(n, s, false);
}

enum tern_status tern_net_grad(struct tern_net *n, int l, enum tern_module mo, float *dA, float *dB)
{
	if (l < 0 || l >= n->L || !targeted(n, mo))
		return tern_fail(TERN_E_INVALID, "net: layer %d %s is not trained", l, tern_module_name(mo));
	const struct lora_slot *sl = slot_at(n, l, mo);
	enum tern_status st =
		n->be->vt->download(n->be, dA, gview(n, n->grads, sl->offA, (size_t)(n->R * sl->I) * 4));
	if (st == TERN_OK)
		st = n->be->vt->download(n->be, dB, gview(n, n->grads, sl->offB, (size_t)(sl->O * n->R) * 4));
	return st;
}

/* ---- forward and backward ---- */

#define TRY(x)                             \
	do {                               \
		if ((st = (x)) != TERN_OK) \
			return st;         \
	} while (0)

/* The rows a linear module works on: rows r0 .. r0 + T of the micro-batch, part the MLP shard they
 * are (tiled_mlp; 0 elsewhere). x, y, dx and dy views passed with a part start at its first row;
 * the saved LoRA product u (a->lu, [T, R] of the micro-batch) is cut here. */
struct part {
	int64_t r0, T;
	uint32_t idx;
};

static struct part whole(const struct tern_net *n) { return (struct part){0, n->T, 0}; }

/* Shard k of the dense MLP (mlp_parts; shard 0 of an untiled micro-batch is whole(n)). */
static struct part mlp_part(const struct tern_net *n, int64_t k)
{
	int64_t r0 = k * n->mlp_rows;
	return (struct part){r0, n->T - r0 < n->mlp_rows ? n->T - r0 : n->mlp_rows, (uint32_t)k};
}

/* y[T,O] += ones[T,1] · b[1,O] where module mo of layer l has a bias, over part p */
static enum tern_status lin_bias(struct tern_net *n, int l, int mo, struct tern_view y, struct part p)
{
	const struct layer_w *w = &n->lw[l];
	if (!w->bias[mo].size)
		return TERN_OK;
	return tern_gemm(n->be, y, n->ones, w->bias[mo], p.T, w->w[mo].O, 1, false, false, 1.0f, 1.0f,
			 TERN_F32);
}

/* y[T,O] = x Wᵀ (+ LoRA) (+ bias) for module mo of layer l, over part p. */
static enum tern_status lin_fwd(struct tern_net *n, int l, int mo, struct tern_view y, struct tern_view x,
				struct layer_act *a, struct part p, uint64_t step, uint32_t micro)
{
	struct layer_w *w = &n->lw[l];
	enum tern_status st;
	struct tern_view xb = x; /* BitNet: the base product reads x quantized to 8 bits per token */
	if (n->bitnet) {
		xb = tern_view_sub(n->xq, 0, (size_t)(p.T * w->w[mo].I) * 4);
		TRY(tern_act_quant8(n->be, xb, x, p.T, w->w[mo].I));
	}
	if (targeted(n, mo)) {
		struct tern_lora lo = lora_of(n, l, mo, step, micro, p.idx);
		lo.xbase = n->bitnet ? xb : (struct tern_view){0};
		TRY(tern_lora_forward(n->be, y, rows(a->lu[mo], p.r0, p.T, n->R), n->xd, x, &w->w[mo], &lo,
				      p.T));
	} else {
		TRY(tern_matmul(n->be, y, xb, &w->w[mo], p.T, n->o.prec));
	}
	return lin_bias(n, l, mo, y, p);
}

/* lin_fwd for modules mo[0..cnt) of layer l that read the same x (q, k, v; gate, up), with their
 * products in one matmul_multi (the backend may share work on x: Vulkan's f16 scale and copy):
 * where every LoRA takes the fused path, each u first and the products with their rank-R terms;
 * where none does, the base products and then each LoRA's low-rank half as tern_lora_forward
 * computes it; lin_fwd one by one where some do and some do not, and for BitNet. The same values
 * as lin_fwd's, bits included. */
static enum tern_status lins_fwd(struct tern_net *n, int l, const enum tern_module *mo,
				 const struct tern_view *y, int cnt, struct tern_view x, struct layer_act *a,
				 struct part p, uint64_t step, uint32_t micro)
{
	struct layer_w *w = &n->lw[l];
	const struct tern_weight *ws[TERN_MATMUL_MULTI];
	struct tern_lora lo[TERN_MATMUL_MULTI];
	struct tern_lora_term lt[TERN_MATMUL_MULTI];
	bool together = !n->bitnet && cnt <= TERN_MATMUL_MULTI;
	int with = 0, fused = 0;
	enum tern_status st;
	for (int i = 0; i < cnt && together; i++) {
		ws[i] = &w->w[mo[i]];
		lt[i] = (struct tern_lora_term){0};
		if (targeted(n, mo[i])) {
			lo[i] = lora_of(n, l, mo[i], step, micro, p.idx);
			with++;
			fused += tern_lora_fused(n->be, ws[i], &lo[i], p.T);
		}
	}
	if (!together || (fused && fused < with)) {
		for (int i = 0; i < cnt; i++)
			TRY(lin_fwd(n, l, mo[i], y[i], x, a, p, step, micro));
		return TERN_OK;
	}
	/* fused: each u = x Aᵀ first, then the products with their rank-R terms (tern_lora_forward's
	 * calls); else the base products, then each LoRA's low-rank half (tern_lora_add) */
	for (int i = 0; i < cnt && fused; i++)
		if (targeted(n, mo[i])) {
			struct tern_view u = rows(a->lu[mo[i]], p.r0, p.T, n->R);
			TRY(tern_lora_u(n->be, u, n->xd, x, ws[i], &lo[i], p.T));
			lt[i] = (struct tern_lora_term){u, lo[i].B, lo[i].R, lo[i].scale};
		}
	TRY(tern_matmul_multi(n->be, y, x, ws, fused ? lt : NULL, cnt, p.T, n->o.prec));
	for (int i = 0; i < cnt; i++) {
		if (targeted(n, mo[i]) && !fused)
			TRY(tern_lora_add(n->be, y[i], rows(a->lu[mo[i]], p.r0, p.T, n->R), n->xd, x, ws[i],
					  &lo[i], p.T));
		TRY(lin_bias(n, l, mo[i], y[i], p));
	}
	return TERN_OK;
}

/* dx (=, or += when acc) = dy W + LoRA path over part p; LoRA gradients +=. x is the module's
 * forward input. */
static enum tern_status lin_bwd(struct tern_net *n, int l, int mo, struct tern_view dx, struct tern_view dy,
				struct tern_view x, struct layer_act *a, bool acc, struct part p,
				uint64_t step, uint32_t micro)
{
	struct layer_w *w = &n->lw[l];
	enum tern_status st;
	if (!targeted(n, mo))
		return tern_matmul_bwd(n->be, dx, dy, &w->w[mo], p.T, acc, n->o.prec);
	struct tern_lora lo = lora_of(n, l, mo, step, micro, p.idx);
	const struct lora_slot *sl = slot_at(n, l, mo);
	struct tern_view dA = gview(n, n->grads, sl->offA, (size_t)(n->R * sl->I) * 4);
	struct tern_view dB = gview(n, n->grads, sl->offB, (size_t)(sl->O * n->R) * 4);
	if (lo.dropout > 0.0f) /* the forward's mask again (same key) */
		TRY(tern_dropout(n->be, n->xd, x, p.T * sl->I, lo.dropout, lo.key));
	return tern_lora_backward(n->be, dx, dA, dB, n->dul, n->tmp, dy, x, n->xd,
				  rows(a->lu[mo], p.r0, p.T, n->R), &w->w[mo], &lo, p.T, acc);
}

/* The recomputation (checkpointing) of a module whose output nothing reads: only what its
 * backward needs, the LoRA product u = drop(x) Aᵀ, as tern_lora_forward computes it (tern_lora_u:
 * the same calls, so the same values); the base product and B are skipped. */
static enum tern_status lin_fwd_saved(struct tern_net *n, int l, int mo, struct tern_view x,
				      struct layer_act *a, struct part p, uint64_t step, uint32_t micro)
{
	if (!targeted(n, mo))
		return TERN_OK;
	struct tern_lora lo = lora_of(n, l, mo, step, micro, p.idx);
	return tern_lora_u(n->be, rows(a->lu[mo], p.r0, p.T, n->R), n->xd, x, &n->lw[l].w[mo], &lo, p.T);
}

/* Makes layer l's weights usable by the ops queued next (tern_residency_acquire): device-tier
 * layers always are; a streamed layer's weights are bound to its slot. */
static enum tern_status ensure_layer(struct tern_net *n, int l)
{
	if (!n->res)
		return TERN_OK;
	struct tern_view v;
	enum tern_status st = tern_residency_acquire(n->res, l, n->T, &v);
	if (st == TERN_OK && v.buf)
		bind_layer(n, l, v);
	return st;
}

/* Makes the experts of streamed sparse layer l that routing r gives tokens usable by the ops
 * queued next (tern_residency_acquire_experts). Layers on the device have all their experts. */
static enum tern_status ensure_experts(struct tern_net *n, int l, const struct tern_moe_route *r)
{
	return n->res ? tern_residency_acquire_experts(n->res, l, r->cnt) : TERN_OK;
}

void tern_net_stream_stats(struct tern_net *n, struct tern_residency_stats *out, bool reset)
{
	if (n->res)
		tern_residency_stats(n->res, out, reset);
	else
		memset(out, 0, sizeof *out);
}

/* Expert e's LoRA of slot k in layer l, in buffer b (params or grads): A [R,I], B [O,R]; false when
 * the slot is not trained. */
static bool xlora(const struct tern_net *n, int l, int k, int64_t e, struct tern_buffer *b,
		  struct tern_view *A, struct tern_view *B)
{
	if (!n->xslot || n->xslot[l * XS + k].offA == SIZE_MAX)
		return false;
	const struct lora_slot *sl = &n->xslot[l * XS + k];
	size_t na = (size_t)(n->R * sl->I) * 4, nb = (size_t)(sl->O * n->R) * 4;
	*A = gview(n, b, sl->offA + (size_t)e * na, na);
	*B = gview(n, b, sl->offB + (size_t)e * nb, nb);
	return true;
}

/* The experts of moe_fwd, one op per projection: every data row of the grouped layout gathered
 * from xn (moe.h: a gap row reads token 0, which nothing reads back), gate and up as two grouped
 * matmuls, the activation over all rows, down as one grouped matmul; expert LoRA as per-expert
 * products on each expert's rows (they add to the grouped products, as tern_lora_forward adds to
 * its matmul); then the combine one slot at a time: slot s gathers each token's s-th expert row
 * (in ascending expert order) and adds it weighted, so a token sums its experts in expert order,
 * as the loop over experts did. Ops: 1 gather + 3 grouped matmuls + 1 swiglu + 2k (gather and
 * scatter_add per slot), whatever E is. */
static enum tern_status experts_fwd_grouped(struct tern_net *n, int l, struct tern_view out,
					    struct tern_view xn, struct layer_act *a, int64_t T, bool lora)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	const struct tern_moe_route *r = a->route;
	int64_t D = n->D, E = n->E, Fe = n->Fe, NR = r->rows, K = n->K;
	enum tern_status st;
	struct tern_view A, B;
	float sc = n->o.scale;
	struct tern_view goff = rows(a->groute, r->b_goff, E + 1, 1);
	struct tern_view xe = rows(a->xe, 0, NR, D), g = rows(a->eg, 0, NR, Fe), u = rows(a->eu, 0, NR, Fe),
			 h = rows(a->ea, 0, NR, Fe), ye = rows(a->ey, 0, NR, D);
	TRY(be->vt->upload(be, a->groute, r->blk));
	TRY(tern_gather_rows(be, xe, rows(xn, 0, T, D), rows(a->groute, r->b_dtok, NR, 1), NR, T, D));
	TRY(tern_matmul_grouped(be, g, xe, &w->xg[0], goff, NR, TERN_F32));
	TRY(tern_matmul_grouped(be, u, xe, &w->xg[1], goff, NR, TERN_F32));
	for (int64_t e = 0; lora && e < E; e++) { /* gate and up share A: [g u] += s·(xe Aᵀ) Bᵀ */
		int64_t ne = r->cnt[e], o = r->off[e];
		if (!ne || !xlora(n, l, 0, e, n->params, &A, &B))
			continue;
		struct tern_view t = rows(a->elu[0], o, ne, n->R);
		TRY(tern_gemm(be, t, rows(a->xe, o, ne, D), A, ne, n->R, D, false, true, 1.0f, 0.0f,
			      TERN_F32));
		TRY(tern_gemm(be, rows(a->eg, o, ne, Fe), t, tern_view_sub(B, 0, B.size / 2), ne, Fe, n->R,
			      false, true, sc, 1.0f, TERN_F32));
		TRY(tern_gemm(be, rows(a->eu, o, ne, Fe), t, tern_view_sub(B, B.size / 2, B.size / 2), ne, Fe,
			      n->R, false, true, sc, 1.0f, TERN_F32));
	}
	TRY(tern_swiglu(be, h, g, u, NR * Fe, n->m->cfg.act));
	TRY(tern_matmul_grouped(be, ye, h, &w->xg[2], goff, NR, TERN_F32));
	for (int64_t e = 0; lora && e < E; e++) { /* ye += s·(h Aᵀ) Bᵀ */
		int64_t ne = r->cnt[e], o = r->off[e];
		if (!ne || !xlora(n, l, 1, e, n->params, &A, &B))
			continue;
		struct tern_view t = rows(a->elu[1], o, ne, n->R);
		TRY(tern_gemm(be, t, rows(a->ea, o, ne, Fe), A, ne, n->R, Fe, false, true, 1.0f, 0.0f,
			      TERN_F32));
		TRY(tern_gemm(be, rows(a->ey, o, ne, D), t, B, ne, D, n->R, false, true, sc, 1.0f, TERN_F32));
	}
	TRY(be->vt->zero(be, rows(out, 0, T, D)));
	struct tern_view tmp = rows(n->dys, 0, T, D);
	for (int64_t k = 0; k < K; k++) {
		TRY(tern_gather_rows(be, tmp, ye, rows(a->groute, r->b_srow + k * T, T, 1), T, NR, D));
		TRY(tern_scatter_add_rows(be, out, tmp, rows(n->iota, 0, T, 1),
					  rows(a->groute, r->b_sw + k * T, T, 1), T, T, D));
	}
	return TERN_OK;
}

/* The sparse MLP of layer l: out[T,D] (=) = Σ over each token's top-k experts e of
 * w_e · down_e(act(gate_e(xn)) · up_e(xn)), in expert order, as transformers sums them. The
 * routing is computed on the host from the downloaded logits (moe.h) and uploaded as each
 * expert's token rows (idx) and weights. The experts run grouped (experts_fwd_grouped: one op per
 * projection) where the layer's experts are (w->grouped), else here one expert at a time, those
 * nobody chose skipped. A recomputation (checkpointing) routes identically. */
static enum tern_status moe_fwd(struct tern_net *n, int l, struct tern_view out, struct tern_view xn,
				struct layer_act *a, int64_t T, bool lora)
{
	struct tern_backend *be = n->be;
	const struct tern_backend_vtable *vt = be->vt;
	struct layer_w *w = &n->lw[l];
	struct tern_moe_route *r = a->route;
	int64_t D = n->D, E = n->E, Fe = n->Fe;
	enum tern_status st;
	struct tern_view A, B;
	if (lora && xlora(n, l, 2, 0, n->params, &A, &B)) { /* the router's LoRA */
		struct tern_lora lo = {.A = A, .B = B, .R = n->R, .scale = n->o.scale, .prec = TERN_F32};
		TRY(tern_lora_forward(be, rows(a->logits, 0, T, E), rows(a->rlu, 0, T, n->R), n->xd,
				      rows(xn, 0, T, D), &w->router, &lo, T));
	} else {
		TRY(tern_matmul(be, rows(a->logits, 0, T, E), rows(xn, 0, T, D), &w->router, T, TERN_F32));
	}
	TRY(vt->download(be, n->hlog, rows(a->logits, 0, T, E)));
	tern_moe_route(r, n->hlog, T, n->m->cfg.norm_topk);
	if (n->aux_on)
		tern_moe_aux_add(r, T, n->hseg, n->aux_cnt, n->aux_prob, &n->aux_rows);
	TRY(ensure_experts(n, l, r));
	if (w->grouped)
		return experts_fwd_grouped(n, l, out, xn, a, T, lora);
	TRY(vt->upload(be, a->ridx, r->idx));
	TRY(vt->upload(be, a->rw, r->wrow));
	TRY(vt->zero(be, rows(out, 0, T, D)));
	for (int64_t e = 0; e < E; e++) {
		int64_t ne = r->cnt[e], o = r->off[e], io = r->ioff[e];
		if (!ne)
			continue;
		struct tern_view idx = rows(a->ridx, io, ne, 1), wr = rows(a->rw, io, ne, 1);
		struct tern_view xe = rows(a->xe, o, ne, D), ye = rows(a->ey, o, ne, D);
		struct tern_view g = rows(a->eg, o, ne, Fe), u = rows(a->eu, o, ne, Fe),
				 h = rows(a->ea, o, ne, Fe);
		struct tern_view t = rows(a->elu[0], o, ne, n->R);
		float sc = n->o.scale;
		TRY(tern_gather_rows(be, xe, xn, idx, ne, T, D));
		TRY(tern_matmul(be, g, xe, &w->ew[3 * e], ne, n->o.prec));
		TRY(tern_matmul(be, u, xe, &w->ew[3 * e + 1], ne, n->o.prec));
		if (lora &&
		    xlora(n, l, 0, e, n->params, &A, &B)) { /* gate and up share A: [g u] += s·(xe Aᵀ) Bᵀ */
			TRY(tern_gemm(be, t, xe, A, ne, n->R, D, false, true, 1.0f, 0.0f, TERN_F32));
			TRY(tern_gemm(be, g, t, tern_view_sub(B, 0, B.size / 2), ne, Fe, n->R, false, true,
				      sc, 1.0f, TERN_F32));
			TRY(tern_gemm(be, u, t, tern_view_sub(B, B.size / 2, B.size / 2), ne, Fe, n->R, false,
				      true, sc, 1.0f, TERN_F32));
		}
		TRY(tern_swiglu(be, h, g, u, ne * Fe, n->m->cfg.act));
		if (lora && xlora(n, l, 1, e, n->params, &A, &B)) {
			struct tern_lora lo = {.A = A, .B = B, .R = n->R, .scale = sc, .prec = n->o.prec};
			TRY(tern_lora_forward(be, ye, rows(a->elu[1], o, ne, n->R), n->xd, h,
					      &w->ew[3 * e + 2], &lo, ne));
		} else {
			TRY(tern_matmul(be, ye, h, &w->ew[3 * e + 2], ne, n->o.prec));
		}
		TRY(tern_scatter_add_rows(be, out, ye, idx, wr, ne, T, D));
	}
	return TERN_OK;
}

/* The experts of moe_bwd after the router's part, grouped (mirroring experts_fwd_grouped): on
 * entry n->dye holds dy of every data row. dys = w · dy rows (into a->ey, which the routing
 * weights' gradient has read), d(act) by one grouped down backward (+ per-expert LoRA), the
 * activation's backward over all rows (dg into a->ea, read by the down LoRA just before), dx of the
 * rows by two grouped backwards (+ per-expert gate/up LoRA) into n->dye, and then added into each
 * token's row one slot at a time, in ascending expert order. */
static enum tern_status experts_bwd_grouped(struct tern_net *n, int l, struct tern_view dxn,
					    struct layer_act *a)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	const struct tern_moe_route *r = a->route;
	int64_t T = n->T, D = n->D, E = n->E, Fe = n->Fe, NR = r->rows, K = n->K, R = n->R;
	enum tern_status st;
	struct tern_view A, B, dA, dB;
	float sc = n->o.scale;
	struct tern_view goff = rows(a->groute, r->b_goff, E + 1, 1);
	struct tern_view dys = rows(a->ey, 0, NR, D), da = rows(n->da, 0, NR, Fe),
			 dg = rows(a->ea, 0, NR, Fe), dxe = rows(n->dye, 0, NR, D);
	TRY(be->vt->zero(be, dys));
	TRY(tern_scatter_add_rows(be, dys, dxe, rows(n->iota, 0, NR, 1), rows(a->groute, r->b_dwt, NR, 1), NR,
				  NR, D)); /* dys = w · dy rows */
	TRY(tern_matmul_grouped_bwd(be, da, dys, &w->xg[2], goff, NR, false, TERN_F32));
	for (int64_t e = 0; e < E;
	     e++) { /* the down LoRA: dB += s·dysᵀ u, du = s·dys B, dA += duᵀ h, da += du A */
		int64_t ne = r->cnt[e], o = r->off[e];
		if (!ne || !xlora(n, l, 1, e, n->params, &A, &B))
			continue;
		xlora(n, l, 1, e, n->grads, &dA, &dB);
		struct tern_view dyse = rows(a->ey, o, ne, D), dt = rows(n->dul, 0, ne, R);
		TRY(tern_gemm(be, dB, dyse, rows(a->elu[1], o, ne, R), D, R, ne, true, false, sc, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, dt, dyse, B, ne, R, D, false, false, sc, 0.0f, TERN_F32));
		TRY(tern_gemm(be, dA, dt, rows(a->ea, o, ne, Fe), R, Fe, ne, true, false, 1.0f, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, rows(n->da, o, ne, Fe), dt, A, ne, Fe, R, false, false, 1.0f, 1.0f,
			      TERN_F32));
	}
	TRY(tern_swiglu_bwd(be, dg, da, da, rows(a->eg, 0, NR, Fe), rows(a->eu, 0, NR, Fe), NR * Fe,
			    n->m->cfg.act)); /* du into da */
	TRY(tern_matmul_grouped_bwd(be, dxe, dg, &w->xg[0], goff, NR, false, TERN_F32));
	TRY(tern_matmul_grouped_bwd(be, dxe, da, &w->xg[1], goff, NR, true, TERN_F32));
	for (int64_t e = 0; e < E; e++) {
		int64_t ne = r->cnt[e], o = r->off[e];
		if (!ne || !xlora(n, l, 0, e, n->params, &A, &B))
			continue;
		struct tern_view t = rows(a->elu[0], o, ne, R), dt = rows(n->dul, 0, ne, R);
		struct tern_view dge = rows(a->ea, o, ne, Fe), due = rows(n->da, o, ne, Fe);
		size_t hb = B.size / 2;
		xlora(n, l, 0, e, n->grads, &dA, &dB);
		/* dB_gate += s·dgᵀ t, dB_up += s·duᵀ t; dt = s·(dg B_gate + du B_up); dA += dtᵀ xe;
		 * dxe += dt A */
		TRY(tern_gemm(be, tern_view_sub(dB, 0, hb), dge, t, Fe, R, ne, true, false, sc, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, tern_view_sub(dB, hb, hb), due, t, Fe, R, ne, true, false, sc, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, dt, dge, tern_view_sub(B, 0, hb), ne, R, Fe, false, false, sc, 0.0f,
			      TERN_F32));
		TRY(tern_gemm(be, dt, due, tern_view_sub(B, hb, hb), ne, R, Fe, false, false, sc, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, dA, dt, rows(a->xe, o, ne, D), R, D, ne, true, false, 1.0f, 1.0f,
			      TERN_F32));
		TRY(tern_gemm(be, rows(n->dye, o, ne, D), dt, A, ne, D, R, false, false, 1.0f, 1.0f,
			      TERN_F32));
	}
	struct tern_view tmp = rows(n->dys, 0, T, D);
	for (int64_t k = 0; k < K; k++) {
		TRY(tern_gather_rows(be, tmp, dxe, rows(a->groute, r->b_srow + k * T, T, 1), T, NR, D));
		TRY(tern_scatter_add_rows(be, dxn, tmp, rows(n->iota, 0, T, 1), (struct tern_view){0}, T, T,
					  D));
	}
	return TERN_OK;
}

/* Backward of moe_fwd: dxn[T,D] (=) from dy[T,D] = d(out). Each expert's rows of dy are gathered;
 * their dot with the expert's output is the gradient of the row's routing weight, which the host
 * takes back through renormalisation, top-k and softmax to d(logits); the router's dx first, then
 * the experts' backward on their weighted rows, scattered back into the tokens' rows: grouped
 * (experts_bwd_grouped) where the forward was, else one expert at a time here. */
static enum tern_status moe_bwd(struct tern_net *n, int l, struct tern_view dxn, struct tern_view dy,
				struct layer_act *a)
{
	struct tern_backend *be = n->be;
	const struct tern_backend_vtable *vt = be->vt;
	struct layer_w *w = &n->lw[l];
	const struct tern_moe_route *r = a->route;
	int64_t T = n->T, D = n->D, E = n->E, Fe = n->Fe;
	enum tern_status st;
	TRY(ensure_experts(n, l, r));
	bool grouped = w->grouped;
	if (grouped) { /* every data row's dy, and the routing weights' gradient in one op each */
		int64_t NR = r->rows;
		struct tern_view dye = rows(n->dye, 0, NR, D);
		TRY(tern_gather_rows(be, dye, dy, rows(a->groute, r->b_dtok, NR, 1), NR, T, D));
		TRY(tern_rowdot(be, rows(n->dwrow, 0, NR, 1), dye, rows(a->ey, 0, NR, D), NR, D));
	} else {
		TRY(vt->zero(be, n->dwrow));
	}
	for (int64_t e = 0; !grouped && e < E; e++) {
		int64_t ne = r->cnt[e], o = r->off[e], io = r->ioff[e];
		if (!ne)
			continue;
		struct tern_view idx = rows(a->ridx, io, ne, 1), dye = rows(n->dye, o, ne, D);
		TRY(tern_gather_rows(be, dye, dy, idx, ne, T, D));
		TRY(tern_rowdot(be, rows(n->dwrow, io, ne, 1), dye, rows(a->ey, o, ne, D), ne, D));
	}
	TRY(vt->download(be, n->hdw,
			 grouped ? rows(n->dwrow, 0, r->rows, 1) : rows(n->dwrow, 0, n->icap, 1)));
	tern_moe_route_bwd(r, n->hdw, grouped, T, n->m->cfg.norm_topk, n->aux_cnt ? n->aux_gp : NULL, n->hseg,
			   n->hlog);
	TRY(vt->upload(be, rows(n->dlogits, 0, T, E), n->hlog));
	struct tern_view A, B, dA, dB;
	if (xlora(n, l, 2, 0, n->params, &A, &B)) { /* the router's LoRA */
		struct tern_lora lo = {.A = A, .B = B, .R = n->R, .scale = n->o.scale, .prec = TERN_F32};
		xlora(n, l, 2, 0, n->grads, &dA, &dB);
		TRY(tern_lora_backward(be, dxn, dA, dB, rows(n->dul, 0, T, n->R), n->tmp,
				       rows(n->dlogits, 0, T, E), rows(a->xn2, 0, T, D), n->xd,
				       rows(a->rlu, 0, T, n->R), &w->router, &lo, T, false));
	} else {
		TRY(tern_matmul_bwd(be, dxn, rows(n->dlogits, 0, T, E), &w->router, T, false, TERN_F32));
	}
	if (grouped)
		return experts_bwd_grouped(n, l, dxn, a);
	for (int64_t e = 0; e < E; e++) {
		int64_t ne = r->cnt[e], o = r->off[e], io = r->ioff[e];
		if (!ne)
			continue;
		struct tern_view idx = rows(a->ridx, io, ne, 1), wr = rows(a->rw, io, ne, 1);
		struct tern_view dys = rows(n->dys, 0, ne, D), dxe = rows(n->dxe, 0, ne, D);
		struct tern_view da = rows(n->da, 0, ne, Fe), dg = rows(n->dg, 0, ne, Fe), du = da;
		struct tern_view g = rows(a->eg, o, ne, Fe), u = rows(a->eu, o, ne, Fe);
		TRY(vt->zero(be, dys));
		TRY(tern_scatter_add_rows(be, dys, rows(n->dye, o, ne, D), rows(n->iota, 0, ne, 1), wr, ne,
					  ne, D)); /* dys = w · dy rows */
		struct tern_view xe = rows(a->xe, o, ne, D), dt = rows(n->dul, 0, ne, n->R);
		float sc = n->o.scale;
		if (xlora(n, l, 1, e, n->params, &A, &B)) {
			struct tern_lora lo = {.A = A, .B = B, .R = n->R, .scale = sc, .prec = n->o.prec};
			xlora(n, l, 1, e, n->grads, &dA, &dB);
			TRY(tern_lora_backward(be, da, dA, dB, dt, n->tmp, dys, rows(a->ea, o, ne, Fe), n->xd,
					       rows(a->elu[1], o, ne, n->R), &w->ew[3 * e + 2], &lo, ne,
					       false));
		} else {
			TRY(tern_matmul_bwd(be, da, dys, &w->ew[3 * e + 2], ne, false, n->o.prec));
		}
		TRY(tern_swiglu_bwd(be, dg, du, da, g, u, ne * Fe, n->m->cfg.act));
		TRY(tern_matmul_bwd(be, dxe, dg, &w->ew[3 * e], ne, false, n->o.prec));
		TRY(tern_matmul_bwd(be, dxe, du, &w->ew[3 * e + 1], ne, true, n->o.prec));
		if (xlora(n, l, 0, e, n->params, &A, &B)) {
			struct tern_view t = rows(a->elu[0], o, ne, n->R);
			size_t hb = B.size / 2;
			xlora(n, l, 0, e, n->grads, &dA, &dB);
			/* dB_gate += s·dgᵀ t, dB_up += s·duᵀ t; dt = s·(dg B_gate + du B_up); dA += dtᵀ xe;
			 * dxe += dt A */
			TRY(tern_gemm(be, tern_view_sub(dB, 0, hb), dg, t, Fe, n->R, ne, true, false, sc,
				      1.0f, TERN_F32));
			TRY(tern_gemm(be, tern_view_sub(dB, hb, hb), du, t, Fe, n->R, ne, true, false, sc,
				      1.0f, TERN_F32));
			TRY(tern_gemm(be, dt, dg, tern_view_sub(B, 0, hb), ne, n->R, Fe, false, false, sc,
				      0.0f, TERN_F32));
			TRY(tern_gemm(be, dt, du, tern_view_sub(B, hb, hb), ne, n->R, Fe, false, false, sc,
				      1.0f, TERN_F32));
			TRY(tern_gemm(be, dA, dt, xe, n->R, D, ne, true, false, 1.0f, 1.0f, TERN_F32));
			TRY(tern_gemm(be, dxe, dt, A, ne, D, n->R, false, false, 1.0f, 1.0f, TERN_F32));
		}
		TRY(tern_scatter_add_rows(be, dxn, dxe, idx, (struct tern_view){0}, ne, T, D));
	}
	return TERN_OK;
}

/* The (query, key) pairs a causal attention over segments seg[T] (runs of one id; NULL: one
 * sequence) with a sliding window (0: none) computes: the profiler's FLOP count (backend.h). */
static double attn_pairs(const int32_t *seg, int64_t T, int64_t window)
{
	double pairs = 0.0;
	for (int64_t i = 0, run = 0; i < T; i++) {
		run = i > 0 && seg && seg[i] == seg[i - 1] ? run + 1 : !seg ? i + 1 : 1;
		pairs += (double)(window > 0 && run > window ? window : run);
	}
	return pairs;
}

/* The attention arguments of a layer with weights w (the forward's and the backward's). */
static struct tern_attn_args attn_args(const struct tern_net *n, const struct layer_w *w)
{
	return (struct tern_attn_args){.T = n->T,
				       .H = n->H,
				       .Hkv = n->Hkv,
				       .Dh = n->Dh,
				       .window = w->window,
				       .scale = 1.0f / sqrtf((float)n->Dh),
				       .prec = n->o.prec,
				       .pairs = w->window ? attn_pairs(n->hseg, n->T, w->window) : n->pairs};
}

/* The dense MLP of layer l over part p: y (p's rows of the layer's MLP output) = down(act(gate(xn)) ·
 * up(xn)), xn p's rows of the normed input; g, u, a (and BitNet's an, rstda) hold p's rows from
 * their first. only_saved (recompute): what the backward reads, the down projection's LoRA product
 * and no output (y unused). */
static enum tern_status mlp_fwd(struct tern_net *n, int l, struct tern_view y, struct tern_view xn,
				struct layer_act *a, struct part p, bool only_saved, uint64_t step,
				uint32_t micro)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	bool bn = n->bitnet;
	enum tern_status st;
	static const enum tern_module gu[2] = {TERN_MOD_GATE, TERN_MOD_UP};
	TRY(lins_fwd(n, l, gu, (struct tern_view[2]){a->g, a->u}, 2, xn, a, p, step, micro));
	TRY(tern_swiglu(be, a->a, a->g, a->u, p.T * n->F, n->m->cfg.act));
	if (bn)
		TRY(tern_rmsnorm(be, a->an, a->rstda, a->a, w->ffn_sub, p.T, n->F, n->eps));
	if (only_saved)
		return lin_fwd_saved(n, l, TERN_MOD_DOWN, bn ? a->an : a->a, a, p, step, micro);
	return lin_fwd(n, l, TERN_MOD_DOWN, y, bn ? a->an : a->a, a, p, step, micro);
}

/* mlp_fwd's backward: dxn (p's rows) = dL/dxn from dy (p's rows of dL/d(MLP output)); the LoRA
 * gradients +=. dL/da over a (the down projection's input, read for dA before dx is written), then
 * dL/dg over g and dL/du over dL/da (backend.h allows both; neither is read again): no [T, F]
 * buffers of their own. BitNet normalises a first and keeps n->da, n->dg. */
static enum tern_status mlp_bwd(struct tern_net *n, int l, struct tern_view dxn, struct tern_view dy,
				struct tern_view xn, struct layer_act *a, struct part p, uint64_t step,
				uint32_t micro)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	bool bn = n->bitnet;
	enum tern_status st;
	struct tern_view da = bn ? n->da : a->a, dg = bn ? n->dg : a->g;
	TRY(lin_bwd(n, l, TERN_MOD_DOWN, bn ? n->dg : da, dy, bn ? a->an : a->a, a, false, p, step, micro));
	if (bn) /* dg holds d(an) until swiglu_bwd writes it */
		TRY(tern_rmsnorm_bwd(be, n->da, n->dg, a->a, w->ffn_sub, a->rstda, p.T, n->F, false));
	TRY(tern_swiglu_bwd(be, dg, da, da, a->g, a->u, p.T * n->F, n->m->cfg.act));
	TRY(lin_bwd(n, l, TERN_MOD_GATE, dxn, dg, xn, a, false, p, step, micro));
	return lin_bwd(n, l, TERN_MOD_UP, dxn, da, xn, a, true, p, step, micro);
}

/* recompute: the checkpointed forward again before layer_bwd, whose output (out) nothing reads:
 * the dense MLP's down projection then keeps only its LoRA product (lin_fwd_saved). */
static enum tern_status layer_fwd(struct tern_net *n, int l, struct tern_view x, struct tern_view out,
				  bool recompute, uint64_t step, uint32_t micro)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	struct layer_act *a = &n->la[l];
	int64_t T = n->T, D = n->D, H = n->H, Hkv = n->Hkv, Dh = n->Dh;
	bool qkn = n->m->cfg.qk_norm, bn = n->bitnet;
	enum tern_status st;

	TRY(ensure_layer(n, l));
	TRY(tern_rmsnorm(be, a->xn1, a->rstd1, x, w->attn_norm, T, D, n->eps));
	static const enum tern_module qkv[3] = {TERN_MOD_Q, TERN_MOD_K, TERN_MOD_V};
	TRY(lins_fwd(n, l, qkv, (struct tern_view[3]){qkn ? a->qr : a->q, qkn ? a->kr : a->k, a->v}, 3,
		     a->xn1, a, whole(n), step, micro));
	if (qkn) {
		TRY(tern_rmsnorm(be, a->q, a->rstdq, a->qr, w->q_norm, T * H, Dh, n->eps));
		TRY(tern_rmsnorm(be, a->k, a->rstdk, a->kr, w->k_norm, T * Hkv, Dh, n->eps));
	}
	TRY(tern_rope(be, a->q, n->pos, n->inv_freq, T, H, Dh, false));
	TRY(tern_rope(be, a->k, n->pos, n->inv_freq, T, Hkv, Dh, false));
	struct tern_attn_args aa = attn_args(n, w);
	TRY(tern_attention(be, a->ao, a->lse, a->q, a->k, a->v, n->seg, &aa));
	if (bn)
		TRY(tern_rmsnorm(be, a->aon, a->rstdo, a->ao, w->attn_sub, T, H * Dh, n->eps));
	TRY(lin_fwd(n, l, TERN_MOD_O, a->h1, bn ? a->aon : a->ao, a, whole(n), step, micro));
	TRY(tern_add_rmsnorm(be, a->h1, a->xn2, a->rstd2, x, w->mlp_norm, T, D, n->eps)); /* h1 = x + o */
	if (w->moe) {
		TRY(moe_fwd(n, l, out, a->xn2, a, n->T, true));
	} else if (recompute) { /* tiled: layer_bwd recomputes each shard right before its gradient */
		return mlp_tiled(n) ? TERN_OK : mlp_fwd(n, l, out, a->xn2, a, whole(n), true, step, micro);
	} else {
		for (int64_t k = 0; k < mlp_parts(n); k++) {
			struct part p = mlp_part(n, k);
			TRY(mlp_fwd(n, l, rows(out, p.r0, p.T, D), rows(a->xn2, p.r0, p.T, D), a, p, false,
				    step, micro));
		}
	}
	TRY(tern_axpy(be, out, a->h1, T * D, 1.0f)); /* out = h1 + mlp */
	return TERN_OK;
}

/* n->dres holds dL/d(out) on entry and dL/dx on return. */
static enum tern_status layer_bwd(struct tern_net *n, int l, struct tern_view x, uint64_t step,
				  uint32_t micro)
{
	struct tern_backend *be = n->be;
	struct layer_w *w = &n->lw[l];
	struct layer_act *a = &n->la[l];
	int64_t T = n->T, D = n->D, H = n->H, Hkv = n->Hkv, Dh = n->Dh;
	bool qkn = n->m->cfg.qk_norm, bn = n->bitnet;
	enum tern_status st;

	TRY(ensure_layer(n, l));
	/* MLP */
	if (w->moe) {
		TRY(moe_bwd(n, l, n->dxn, n->dres, a));
	} else { /* tiled: each shard's activations again, then its gradient */
		for (int64_t k = 0; k < mlp_parts(n); k++) {
			struct part p = mlp_part(n, k);
			struct tern_view xn = rows(a->xn2, p.r0, p.T, D);
			if (mlp_tiled(n))
				TRY(mlp_fwd(n, l, (struct tern_view){0}, xn, a, p, true, step, micro));
			TRY(mlp_bwd(n, l, rows(n->dxn, p.r0, p.T, D), rows(n->dres, p.r0, p.T, D), xn, a, p,
				    step, micro));
		}
	}
	TRY(tern_rmsnorm_bwd(be, n->dres, n->dxn, a->h1, w->mlp_norm, a->rstd2, T, D, true)); /* dres = dh1 */
	/* attention */
	TRY(lin_bwd(n, l, TERN_MOD_O, bn ? n->dq : n->dao, n->dres, bn ? a->aon : a->ao, a, false, whole(n),
		    step, micro));
	if (bn) /* dq holds d(aon) until attention_bwd writes it */
		TRY(tern_rmsnorm_bwd(be, n->dao, n->dq, a->ao, w->attn_sub, a->rstdo, T, H * Dh, false));
	struct tern_attn_args aa = attn_args(n, w);
	TRY(tern_attention_bwd(be, n->dq, n->dk, n->dv, n->dao, a->q, a->k, a->v, a->ao, a->lse, n->seg,
			       &aa));
	TRY(tern_rope(be, n->dq, n->pos, n->inv_freq, T, H, Dh, true));
	TRY(tern_rope(be, n->dk, n->pos, n->inv_freq, T, Hkv, Dh, true));
	struct tern_view dq = n->dq, dk = n->dk;
	if (qkn) {
		TRY(tern_rmsnorm_bwd(be, n->dqr, n->dq, a->qr, w->q_norm, a->rstdq, T * H, Dh, false));
		TRY(tern_rmsnorm_bwd(be, n->dkr, n->dk, a->kr, w->k_norm, a->rstdk, T * Hkv, Dh, false));
		dq = n->dqr;
		dk = n->dkr;
	}
	TRY(lin_bwd(n, l, TERN_MOD_Q, n->dxn, dq, a->xn1, a, false, whole(n), step, micro));
	TRY(lin_bwd(n, l, TERN_MOD_K, n->dxn, dk, a->xn1, a, true, whole(n), step, micro));
	TRY(lin_bwd(n, l, TERN_MOD_V, n->dxn, n->dv, a->xn1, a, true, whole(n), step, micro));
	TRY(tern_rmsnorm_bwd(be, n->dres, n->dxn, x, w->attn_norm, a->rstd1, T, D, true)); /* dres = dx */
	return TERN_OK;
}

enum tern_status tern_net_tokens(struct tern_net *n, int64_t T)
{
	if (T < 1 || T > n->Tmax)
		return tern_fail(TERN_E_INVALID, "net: a micro-batch of %lld tokens (allocated for 1..%lld)",
				 (long long)T, (long long)n->Tmax);
	n->T = T;
	return TERN_OK;
}

enum tern_status tern_net_zero(struct tern_net *n)
{
	const struct tern_backend_vtable *vt = n->be->vt;
	struct tern_view g = {n->grads, 0, n->lora_bytes};
	enum tern_status st = vt->zero(n->be, g);
	for (int f = 0; f < TERN_FULL_COUNT && st == TERN_OK; f++)
		if (trained_full(n, (enum tern_full)f))
			st = vt->zero(n->be, full_view(n, FB_GRAD, (enum tern_full)f));
	if (st == TERN_OK)
		st = vt->zero(n->be, n->loss);
	n->aux_sum = 0;
	return st;
}

/* The fp32 input of layer l (l = L: of the final norm): xin[l], or its f16/bf16 copy widened
 * into xcur. */
static enum tern_status layer_input(struct tern_net *n, int l, struct tern_view *x)
{
	if (!half_stream(n)) {
		*x = n->xin[l];
		return TERN_OK;
	}
	*x = n->xcur;
	return tern_cast(n->be, n->xcur, TERN_F32, n->xin[l], n->o.prec, n->T * n->D);
}

/* ---- offloaded checkpoints (o.offload): the layer inputs through two device slots ---- */

/* xin[l], just written, out to the host where the backward needs it after its slot has been
 * overwritten (l0 .. l1 - 2); the copy starts once the ops that wrote it have finished. */
static enum tern_status offload_out(struct tern_net *n, int l)
{
	if (!n->off || l > n->l1 - 2)
		return TERN_OK;
	const struct tern_backend_vtable *vt = n->be->vt;
	size_t bytes = (size_t)(n->T * n->D) * (half_stream(n) ? 2 : 4);
	struct tern_view h = {n->xhost, (size_t)(l - n->l0) * offload_each(n), bytes};
	uint64_t m, t;
	enum tern_status st;
	if ((st = vt->mark(n->be, &m)) ||
	    (st = vt->copy_async(n->be, h, tern_view_sub(n->xin[l], 0, bytes), m, &t)))
		return st;
	n->xout[l] = t;
	n->xbusy[l % 2] = t;
	return TERN_OK;
}

/* Before the ops that write xin[l]'s slot: the copy out of what it held has finished. */
static enum tern_status offload_claim(struct tern_net *n, int l)
{
	uint64_t t = n->off ? n->xbusy[l % 2] : 0;
	if (!t)
		return TERN_OK;
	n->xbusy[l % 2] = 0;
	return n->be->vt->wait_ticket(n->be, t);
}

/* Backward, before layer j + 1's ops: xin[j] back into its slot, which held xin[j + 2] (every op
 * reading that is queued), so the copy runs while layer j + 1 works. The host waits for the
 * copies out first (long finished: they ran during the forward). */
static enum tern_status offload_prefetch(struct tern_net *n, int j)
{
	if (!n->off || j < n->l0 || j > n->l1 - 2)
		return TERN_OK;
	const struct tern_backend_vtable *vt = n->be->vt;
	size_t bytes = (size_t)(n->T * n->D) * (half_stream(n) ? 2 : 4);
	struct tern_view h = {n->xhost, (size_t)(j - n->l0) * offload_each(n), bytes};
	uint64_t w = n->xout[j] > n->xbusy[j % 2] ? n->xout[j] : n->xbusy[j % 2], m, t;
	enum tern_status st;
	if ((st = vt->ticket_wait_host(n->be, w)) || (st = vt->mark(n->be, &m)) ||
	    (st = vt->copy_async(n->be, tern_view_sub(n->xin[j], 0, bytes), h, m, &t)))
		return st;
	n->xbusy[j % 2] = 0;
	n->xback[j] = t;
	return TERN_OK;
}

/* Before layer l's backward reads xin[l]: its copy back has arrived (ops wait on the device). */
static enum tern_status offload_ready(struct tern_net *n, int l)
{
	uint64_t t = n->off ? n->xback[l] : 0;
	if (!t)
		return TERN_OK;
	n->xback[l] = 0;
	return n->be->vt->wait_ticket(n->be, t);
}

/* out = the embedding rows of tokens, gathered from the host table (embed's contract). */
static enum tern_status embed_rows(struct tern_net *n, const int32_t *tokens, struct tern_view out)
{
	int64_t D = n->D, V = n->V;
	size_t es = tern_dtype_size(n->embed_dt);
	for (int64_t t = 0; t < n->T; t++) {
		int32_t id = tokens[t];
		if (id < 0 || id >= V)
			return tern_fail(TERN_E_INVALID, "embed: ids[%lld] = %d is outside [0, V=%lld)",
					 (long long)t, id, (long long)V);
		tern_plain_to_f32(n->embed_dt, n->embed_host + (size_t)id * (size_t)D * es, D, n->xh + t * D);
	}
	return n->be->vt->upload(n->be, tern_view_sub(out, 0, (size_t)(n->T * D) * 4), n->xh);
}

/* The boundary of a layer split: v (its first bytes bytes) to / from stage peer (-1, +1), between
 * device buffers where the link can (NCCL), else through the host staging buffer. */
static enum tern_status boundary(struct tern_net *n, int peer, struct tern_view v, size_t bytes, bool send)
{
	const struct tern_net_link *k = n->o.link;
	if (k->send_dev && k->recv_dev)
		return send ? k->send_dev(k->ctx, peer, v, bytes) : k->recv_dev(k->ctx, peer, v, bytes);
	v = tern_view_sub(v, 0, bytes);
	enum tern_status st;
	if (send)
		return (st = n->be->vt->download(n->be, n->xb, v)) ? st : k->send(k->ctx, peer, n->xb, bytes);
	return (st = k->recv(k->ctx, peer, n->xb, bytes)) ? st : n->be->vt->upload(n->be, v, n->xb);
}

enum tern_status tern_net_micro(struct tern_net *n, const int32_t *tokens, const int32_t *targets,
				const int32_t *positions, const int32_t *segments, float inv_n, bool backward,
				uint64_t step, uint32_t micro)
{
	const struct tern_backend_vtable *vt = n->be->vt;
	struct tern_backend *be = n->be;
	int64_t T = n->T, D = n->D, L = n->L;
	enum tern_status st;
	if (n->res)
		tern_residency_order(n->res, backward);
	/* T values of each (the views hold Tmax) */
	TRY(vt->upload(be, tern_view_sub(n->tokens, 0, (size_t)T * 4), tokens));
	TRY(vt->upload(be, tern_view_sub(n->targets, 0, (size_t)T * 4), targets));
	TRY(vt->upload(be, tern_view_sub(n->pos, 0, (size_t)T * 4), positions));
	TRY(vt->upload(be, tern_view_sub(n->seg, 0, (size_t)T * 4), segments));

	bool x16 = half_stream(n);
	struct tern_view x0 = x16 ? n->xcur : n->xin[0], x;
	/* a layer split's stage: layer l0's input (as the previous stage keeps it) and dL/d(output) */
	size_t xbytes = (size_t)(T * D) * (x16 ? 2 : 4), dbytes = (size_t)(T * D) * 4;
	TRY(offload_claim(n, (int)n->l0));
	if (n->l0 > 0)
		TRY(boundary(n, -1, n->xin[n->l0], xbytes, false));
	else if (trained_full(n, TERN_FULL_EMBED))
		TRY(tern_embed(be, x0, n->tokens, &n->embed_t, T));
	else if (n->embed_host)
		TRY(embed_rows(n, tokens, x0));
	else
		TRY(tern_embed(be, x0, n->tokens, &n->embed, T));
	if (x16 && n->l0 == 0)
		TRY(tern_cast(be, n->xin[0], n->o.prec, x0, TERN_F32, T * D));
	if (backward)
		TRY(offload_out(n, (int)n->l0));
	n->hseg = segments;
	n->pairs = attn_pairs(segments, T, 0);
	bool aux = n->aux_cnt && backward;
	n->aux_on = aux;
	if (aux) {
		memset(n->aux_cnt, 0, (size_t)(2 * n->E) * sizeof *n->aux_cnt);
		n->aux_rows = 0;
	}
	/* a layer split: the load-balancing sums run over every stage's sparse layers, in layer order
	 * as one process adds them (the previous stage's partial sums follow its hidden state) */
	size_t abytes = (size_t)(2 * n->E) * sizeof(double);
	const struct tern_net_link *k = n->o.link;
	if (aux && n->l0 > 0 &&
	    ((st = k->recv(k->ctx, -1, n->aux_cnt, abytes)) ||
	     (st = k->recv(k->ctx, -1, &n->aux_rows, sizeof n->aux_rows)))) {
		n->aux_on = false;
		return st;
	}
	for (int l = (int)n->l0; l < n->l1; l++) {
		TRY(offload_claim(n, l + 1));
		TRY(layer_input(n, l, &x));
		st = layer_fwd(n, l, x, x16 ? n->tmpD : n->xin[l + 1], false, step, micro);
		if (st) {
			n->aux_on = false;
			return st;
		}
		if (x16)
			TRY(tern_cast(be, n->xin[l + 1], n->o.prec, n->tmpD, TERN_F32, T * D));
		if (backward)
			TRY(offload_out(n, l + 1));
	}
	n->aux_on = false;
	if (aux && n->l1 == L) { /* the sums are complete: the loss, and d aux / d p for the backward */
		n->aux_term = n->o.aux_coef * tern_moe_aux(n->E, n->aux_cnt, n->aux_prob, n->aux_rows,
							   n->o.aux_coef, n->aux_gp);
		n->aux_sum += n->aux_term;
	}
	if (n->l1 < L) { /* the next stage runs the rest and sends dL/d(output) back */
		TRY(boundary(n, +1, n->xin[n->l1], xbytes, true));
		if (aux) {
			TRY(k->send(k->ctx, +1, n->aux_cnt, abytes));
			TRY(k->send(k->ctx, +1, &n->aux_rows, sizeof n->aux_rows));
		}
		if (!backward)
			return TERN_OK;
		TRY(boundary(n, +1, n->dres, dbytes, false));
		if (aux) { /* the last stage's d aux / d p and the term (counted by every stage's loss) */
			TRY(k->recv(k->ctx, +1, n->aux_gp, (size_t)n->E * sizeof(double)));
			TRY(k->recv(k->ctx, +1, &n->aux_term, sizeof n->aux_term));
			n->aux_sum += n->aux_term;
		}
	} else {
		TRY(layer_input(n, (int)L, &x));
		TRY(tern_rmsnorm(be, n->xf, n->rstdf, x, n->norm, T, D, n->eps));
		bool head_t = trained_full(n, TERN_FULL_HEAD);
		struct tern_view dW =
			head_t && backward ? full_view(n, FB_GRAD, TERN_FULL_HEAD) : (struct tern_view){0};
		TRY(tern_ce_loss(be, n->loss, n->dxf, dW, n->xf, head_t ? &n->head_t : &n->head, n->targets,
				 T, inv_n, n->o.prec));
		if (!backward)
			return TERN_OK;
		TRY(tern_rmsnorm_bwd(be, n->dres, n->dxf, x, n->norm, n->rstdf, T, D, false));
	}
	for (int l = (int)n->l1 - 1; l >= n->l0; l--) {
		TRY(offload_prefetch(n, l - 1));
		TRY(offload_ready(n, l));
		TRY(layer_input(n, l, &x));
		/* recompute the saved set (the stage's last layer's is live) */
		if (n->o.checkpointing && l != n->l1 - 1)
			TRY(layer_fwd(n, l, x, n->tmpD, true, step, micro));
		TRY(layer_bwd(n, l, x, step, micro));
	}
	/* dres = dL/d(layer l0's input): the previous stage's, or the embedding rows' gradient */
	if (n->l0 > 0) {
		TRY(boundary(n, -1, n->dres, dbytes, true));
		if (aux) {
			TRY(k->send(k->ctx, -1, n->aux_gp, (size_t)n->E * sizeof(double)));
			TRY(k->send(k->ctx, -1, &n->aux_term, sizeof n->aux_term));
		}
	} else if (trained_full(n, TERN_FULL_EMBED))
		TRY(tern_embed_bwd(be, full_view(n, FB_GRAD, TERN_FULL_EMBED), n->dres, n->tokens, T, n->V,
				   D));
	return TERN_OK;
}

enum tern_status tern_net_loss(struct tern_net *n, double *loss)
{
	float f = 0;
	enum tern_status st = n->be->vt->download(n->be, &f, n->loss);
	*loss = f + n->aux_sum;
	return st;
}

enum tern_status tern_net_clip(struct tern_net *n, float max_norm, double *norm)
{
	const struct tern_backend_vtable *vt = n->be->vt;
	struct tern_view g = {n->grads, 0, n->lora_bytes};
	int64_t VD = n->V * n->D;
	/* one global norm over the LoRA block and the modules trained in full */
	enum tern_status st = tern_sumsq(n->be, n->sumsq, g, n->lora_n, false);
	for (int f = 0; f < TERN_FULL_COUNT && st == TERN_OK; f++)
		if (trained_full(n, (enum tern_full)f))
			st = tern_sumsq(n->be, n->sumsq, full_view(n, FB_GRAD, (enum tern_full)f), VD, true);
	float ss = 0;
	if (st == TERN_OK)
		st = vt->download(n->be, &ss, n->sumsq);
	*norm = sqrt((double)ss);
	if (st == TERN_OK && max_norm > 0)
		st = tern_clip(n->be, g, n->lora_n, n->sumsq, max_norm);
	for (int f = 0; f < TERN_FULL_COUNT && st == TERN_OK && max_norm > 0; f++)
		if (trained_full(n, (enum tern_full)f))
			st = tern_clip(n->be, full_view(n, FB_GRAD, (enum tern_full)f), VD, n->sumsq,
				       max_norm);
	return st;
}

int64_t tern_net_grad_floats(const struct tern_net *n)
{
	return n->lora_n + (int64_t)full_count(n) * n->V * n->D + 1;
}

int tern_net_grad_views(const struct tern_net *n, struct tern_view v[TERN_NET_GRAD_VIEWS])
{
	int k = 0;
	v[k++] = (struct tern_view){n->grads, 0, n->lora_bytes};
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		if (trained_full(n, (enum tern_full)f))
			v[k++] = full_view(n, FB_GRAD, (enum tern_full)f);
	v[k++] = tern_view_sub(n->loss, 0, 4);
	return k;
}

static enum tern_status grads_move(struct tern_net *n, float *h, bool put)
{
	const struct tern_backend_vtable *vt = n->be->vt;
	struct tern_view v[TERN_NET_GRAD_VIEWS];
	int k = tern_net_grad_views(n, v);
	enum tern_status st = TERN_OK;
	for (int i = 0; i < k && st == TERN_OK; i++) {
		if (v[i].size == 0)
			continue;
		st = put ? vt->upload(n->be, v[i], h) : vt->download(n->be, h, v[i]);
		h += v[i].size / 4;
	}
	return st;
}

enum tern_status tern_net_grads_get(struct tern_net *n, float *h) { return grads_move(n, h, false); }
enum tern_status tern_net_grads_put(struct tern_net *n, const float *h)
{
	return grads_move(n, (float *)h, true);
}

enum tern_status tern_net_adamw(struct tern_net *n, const struct tern_adamw_args *a)
{
	struct tern_view p = {n->params, 0, n->lora_bytes}, g = {n->grads, 0, n->lora_bytes};
	struct tern_view m1 = {n->m1, 0, n->lora_bytes}, m2 = {n->m2, 0, n->lora_bytes};
	enum tern_status st = tern_adamw(n->be, p, g, m1, m2, n->lora_n, a);
	for (int f = 0; f < TERN_FULL_COUNT && st == TERN_OK; f++) {
		enum tern_full e = (enum tern_full)f;
		if (trained_full(n, e))
			st = tern_adamw(n->be, full_view(n, FB_PARAM, e), full_view(n, FB_GRAD, e),
					full_view(n, FB_M1, e), full_view(n, FB_M2, e), n->V * n->D, a);
	}
	return st;
}

enum tern_status tern_net_sizes(const struct tern_model_config *c, const struct tern_net_opts *o,
				struct tern_net_sizes *out)
{
	struct tern_net n = {.o = *o,
			     .T = o->T,
			     .Tmax = o->T,
			     .D = c->D,
			     .F = c->F,
			     .H = c->H,
			     .Hkv = c->Hkv,
			     .Dh = c->Dh,
			     .V = c->V,
			     .L = c->L,
			     .R = o->R,
			     .l0 = o->l0,
			     .l1 = o->l1 ? o->l1 : c->L};
	moe_dims(&n, c);
	n.mlp_rows = mlp_rows_of(&n);
	struct plan ap = {0};
	int64_t io[TERN_MOD_COUNT][2];
	tern_net_module_shapes(c, io);
	n.slot = tern_calloc((size_t)(c->L * TERN_MOD_COUNT), sizeof *n.slot);
	n.la = tern_calloc((size_t)c->L, sizeof *n.la);
	n.xin = tern_calloc((size_t)(c->L + 1), sizeof *n.xin);
	if (o->experts && n.any_moe)
		n.xslot = tern_calloc((size_t)(XS * c->L), sizeof *n.xslot);
	enum tern_status st = TERN_OK;
	if (!n.slot || !n.la || !n.xin || (o->experts && n.any_moe && !n.xslot)) {
		st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
	} else {
		plan_lora(&n, c, io);
		n.off = offload_on(&n);
		plan_act(&n, c, &ap);
		if (ap.oom)
			st = tern_fail(TERN_E_NOMEM, "net: out of host memory");
		out->lora = (uint64_t)n.lora_bytes * 4 + (uint64_t)full_count(&n) * full_bytes(&n) * 4;
		out->act = ap.size;
		out->params = tern_net_params(&n);
		out->offload_host = (uint64_t)offload_count(&n) * offload_each(&n);
		out->offload_slots = n.off ? 2 : 0;
		out->mlp_shards = mlp_parts(&n);
	}
	free(ap.v);
	free(n.slot);
	free(n.xslot);
	free(n.la);
	free(n.xin);
	return st;
}

/* ---- pieces for generation (net.h; src/train/gen.c runs them over its KV cache) ---- */

enum tern_status tern_net_use_layer(struct tern_net *n, int l, struct tern_net_layer_info *info)
{
	if (l < 0 || l >= n->L)
		return tern_fail(TERN_E_INVALID, "net: layer %d of %lld", l, (long long)n->L);
	if (n->res) /* the forward's sequence: 0 .. L-1, again */
		tern_residency_order(n->res, false);
	enum tern_status st = ensure_layer(n, l);
	const struct layer_w *w = &n->lw[l];
	*info = (struct tern_net_layer_info){w->attn_norm, w->mlp_norm, w->q_norm,
					     w->k_norm,    w->attn_sub, w->window};
	return st;
}

/* Module mo's LoRA of layer l for inference (no dropout) */
static struct tern_lora lora_infer(const struct tern_net *n, int l, enum tern_module mo)
{
	struct tern_lora lo = lora_of(n, l, mo, 0, 0, 0);
	lo.dropout = 0.0f;
	return lo;
}

enum tern_status tern_net_linear(struct tern_net *n, int l, enum tern_module mo, struct tern_view y,
				 struct tern_view x, const struct tern_net_scratch *s, int64_t T, bool lora)
{
	struct layer_w *w = &n->lw[l];
	enum tern_status st;
	struct tern_view xb = x; /* BitNet: the base product reads x quantized to 8 bits per token */
	if (n->bitnet) {
		xb = tern_view_sub(s->xq, 0, (size_t)(T * w->w[mo].I) * 4);
		TRY(tern_act_quant8(n->be, xb, x, T, w->w[mo].I));
	}
	if (lora && targeted(n, mo)) {
		struct tern_lora lo = lora_infer(n, l, mo);
		lo.xbase = n->bitnet ? xb : (struct tern_view){0};
		TRY(tern_lora_forward(n->be, y, s->u, (struct tern_view){0}, x, &w->w[mo], &lo, T));
	} else {
		TRY(tern_matmul(n->be, y, xb, &w->w[mo], T, n->o.prec));
	}
	if (w->bias[mo].size) /* y[T,O] += ones[T,1] · b[1,O] */
		TRY(tern_gemm(n->be, y, s->ones, w->bias[mo], T, w->w[mo].O, 1, false, false, 1.0f, 1.0f,
			      TERN_F32));
	return TERN_OK;
}

enum tern_status tern_net_linears(struct tern_net *n, int l, const enum tern_module *mo,
				  const struct tern_view *y, int cnt, struct tern_view x,
				  const struct tern_net_scratch *s, int64_t T, bool lora)
{
	struct layer_w *w = &n->lw[l];
	const struct tern_weight *ws[TERN_MATMUL_MULTI];
	struct tern_lora lo[TERN_MATMUL_MULTI];
	bool with[TERN_MATMUL_MULTI], together = !n->bitnet && cnt <= TERN_MATMUL_MULTI;
	enum tern_status st;
	for (int i = 0; i < cnt && together; i++) {
		ws[i] = &w->w[mo[i]];
		with[i] = lora && targeted(n, mo[i]);
		if (with[i]) /* a LoRA the backend fuses keeps its own product */
			lo[i] = lora_infer(n, l, mo[i]);
		together = !w->bias[mo[i]].size && !(with[i] && tern_lora_fused(n->be, ws[i], &lo[i], T));
	}
	if (!together) {
		for (int i = 0; i < cnt; i++)
			TRY(tern_net_linear(n, l, mo[i], y[i], x, s, T, lora));
		return TERN_OK;
	}
	/* the base products together, then each LoRA's low-rank half: tern_lora_forward's calls */
	TRY(tern_matmul_multi(n->be, y, x, ws, NULL, cnt, T, n->o.prec));
	for (int i = 0; i < cnt; i++)
		if (with[i])
			TRY(tern_lora_add(n->be, y[i], s->u, (struct tern_view){0}, x, ws[i], &lo[i], T));
	return TERN_OK;
}

enum tern_status tern_net_mlp(struct tern_net *n, int l, struct tern_view out, struct tern_view xn,
			      const struct tern_net_scratch *s, int64_t T, bool lora)
{
	enum tern_status st;
	if (n->lw[l].moe) { /* in pieces of the net's T tokens (routing is per token: exact) */
		for (int64_t t0 = 0; t0 < T; t0 += n->T) {
			int64_t nt = T - t0 < n->T ? T - t0 : n->T;
			TRY(moe_fwd(n, l, rows(out, t0, nt, n->D), rows(xn, t0, nt, n->D), &n->la[l], nt,
				    lora));
		}
		return TERN_OK;
	}
	static const enum tern_module gu[2] = {TERN_MOD_GATE, TERN_MOD_UP};
	TRY(tern_net_linears(n, l, gu, (struct tern_view[2]){s->g, s->up}, 2, xn, s, T, lora));
	TRY(tern_swiglu(n->be, s->a, s->g, s->up, T * n->F, n->m->cfg.act));
	if (n->bitnet)
		TRY(tern_rmsnorm(n->be, s->an, s->rstd, s->a, n->lw[l].ffn_sub, T, n->F, n->eps));
	return tern_net_linear(n, l, TERN_MOD_DOWN, out, n->bitnet ? s->an : s->a, s, T, lora);
}

enum tern_status tern_net_embed(struct tern_net *n, const int32_t *ids, struct tern_view ids_dev,
				struct tern_view out, int64_t T)
{
	if (trained_full(n, TERN_FULL_EMBED))
		return tern_embed(n->be, out, ids_dev, &n->embed_t, T);
	if (!n->embed_host)
		return tern_embed(n->be, out, ids_dev, &n->embed, T);
	int64_t D = n->D, V = n->V;
	size_t es = tern_dtype_size(n->embed_dt);
	float *h = tern_malloc((size_t)(T * D) * 4);
	if (!h)
		return tern_fail(TERN_E_NOMEM, "net: out of host memory");
	enum tern_status st = TERN_OK;
	for (int64_t t = 0; t < T && st == TERN_OK; t++) {
		if (ids[t] < 0 || ids[t] >= V)
			st = tern_fail(TERN_E_INVALID, "embed: ids[%lld] = %d is outside [0, V=%lld)",
				       (long long)t, ids[t], (long long)V);
		else
			tern_plain_to_f32(n->embed_dt, n->embed_host + (size_t)ids[t] * (size_t)D * es, D,
					  h + t * D);
	}
	if (st == TERN_OK)
		st = n->be->vt->upload(n->be, tern_view_sub(out, 0, (size_t)(T * D) * 4), h);
	free(h);
	return st;
}

void tern_net_globals(const struct tern_net *n, struct tern_view *norm, struct tern_view *inv_freq,
		      struct tern_weight *head, enum tern_dtype *prec)
{
	*norm = n->norm;
	*inv_freq = n->inv_freq;
	*head = trained_full(n, TERN_FULL_HEAD) ? n->head_t : n->head;
	*prec = n->o.prec;
}

struct tern_backend *tern_net_backend(const struct tern_net *n) { return n->be; }
int64_t tern_net_rank(const struct tern_net *n) { return n->R; }
