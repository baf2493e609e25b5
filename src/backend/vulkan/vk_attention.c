/* Causal GQA attention on Vulkan: flash-style shaders that stream tiles of queries x keys through
 * shared memory with an online softmax (fp32: attention_rb.comp's register-blocked tiles on GPUs
 * where Dh allows, attention.comp / attention_bwd.comp's 16 x 16 ones elsewhere, pick_attention;
 * f16: attn_mma.comp on cooperative matrices); only lse [H, T] is kept between forward and
 * backward, and the backward is deterministic (no float atomics): a pass per key tile for dK/dV and
 * a pass per query tile for dQ. */
#include "backend/vulkan/vk.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ATTN_TILE 16   /* BQ = BK in shaders/common/attention.glsl */
#define ATTN_DMAX 256  /* DMAX there */
#define ATTN_GRID 4096 /* groups of the grid-stride prep pass */

/* Mirrors the push block of shaders/common/attention.glsl. */
struct attn_push {
	uint32_t T, H, Hkv, Dh;
	uint32_t window;
	float scale;
	uint32_t off[8];
};

struct attn_bind {
	const char *what;
	struct tern_view v;
	int64_t n; /* 4-byte elements */
};

/* What the shaders need beyond the front door's checks: Dh and T*H*Dh within their limits, 4-byte
 * view starts, every tensor in one binding. */
static enum tern_status attn_check(struct tern_vk *vk, const char *op, const struct tern_attn_args *a,
				   struct attn_bind *b, int nb)
{
	if (a->Dh > ATTN_DMAX || a->T > UINT32_MAX / 2 / a->H / a->Dh || a->window > UINT32_MAX)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: T=%lld H=%lld Dh=%lld: the shaders take Dh <= %d and "
				 "T*H*Dh < 2^31",
				 op, (long long)a->T, (long long)a->H, (long long)a->Dh, ATTN_DMAX);
	for (int i = 0; i < nb; i++) {
		if (b[i].v.off % 4)
			return tern_fail(TERN_E_INVALID,
					 "vulkan: %s: %s view offset %zu is not a multiple of 4", op,
					 b[i].what, b[i].v.off);
		/* whole tensors are bound: every key tile meets every query tile */
		if ((VkDeviceSize)b[i].n * 4 + vk->align > vk->max_range)
			return tern_fail(TERN_E_UNSUPPORTED,
					 "vulkan: %s: %s is %lld bytes, more than maxStorageBufferRange %llu "
					 "(T=%lld H=%lld Hkv=%lld Dh=%lld)",
					 op, b[i].what, (long long)b[i].n * 4,
					 (unsigned long long)vk->max_range, (long long)a->T, (long long)a->H,
					 (long long)a->Hkv, (long long)a->Dh);
	}
	return TERN_OK;
}

/* The push block for the given views, placed (bindings moved to aligned starts). */
static struct attn_push attn_place(struct tern_vk *vk, const struct tern_attn_args *a, struct tern_view *v,
				   int nv)
{
	struct attn_push p = {
		.T = (uint32_t)a->T,
		.H = (uint32_t)a->H,
		.Hkv = (uint32_t)a->Hkv,
		.Dh = (uint32_t)a->Dh,
		.window = (uint32_t)a->window,
		.scale = a->scale,
	};
	for (int i = 0; i < nv; i++)
		p.off[i] = tern_vk_place(vk, &v[i]) / 4;
	return p;
}

#define ATTN_SIMPLE_WG 32    /* rows per workgroup: WG * TQ in shaders/attention_simple.comp */
#define ATTN_SIMPLE_DMAX 128 /* 4 * DV4 there */

/* The passes with several variants (simple and tiled; tensor-core with and without -DFRAG): the
 * forward, the backward's dK/dV and dQ passes (its prep pass has one pipeline). */
enum attn_pass { ATTN_FWD, ATTN_BWD_KV, ATTN_BWD_Q };

#define ATTN_RB_DMAX 128 /* DMAX in shaders/attention_rb.comp; its -DDMAX=64u variants take Dh <= 64 */

/* The pipeline of one pass and the rows (queries, or keys for dK/dV) a workgroup takes:
 * shaders/attention_simple.comp when the simple variants are chosen (tern_vk_simple), Dh fits its
 * registers in whole vec4s and the vec4-bound views of the placed push block (the forward's o, q,
 * k, v; the backward's first six bindings) start on 16-byte boundaries; else the register-blocked
 * shaders/attention_rb.comp where Dh is a multiple of 4 up to ATTN_RB_DMAX and the views it reads
 * as vec4s (q, k, v; dO; the dQ pass's o) start on 16-byte boundaries, its variants with one
 * chunk of accumulators where Dh <= 64 (TERN_VK_ATTN_D64=0: the two-chunk ones), and with
 * TERN_VK_ATTN_RB=0 attention.comp's 16 x 16 tiles (both read at each call, for before/after
 * timings and tests); else those. */
static enum tern_status pick_attention(struct tern_vk *vk, enum attn_pass pass, const struct attn_push *p,
				       enum tern_vk_pipe *pipe, uint32_t *rows)
{
	static const enum tern_vk_pipe tiled[] = {TERN_PIPE_ATTENTION, TERN_PIPE_ATTENTION_BWD_KV,
						  TERN_PIPE_ATTENTION_BWD_Q};
	static const enum tern_vk_pipe rb_pipes[][2] = {
		{TERN_PIPE_ATTENTION_RB, TERN_PIPE_ATTENTION_RB_D64},
		{TERN_PIPE_ATTENTION_RB_KV, TERN_PIPE_ATTENTION_RB_KV_D64},
		{TERN_PIPE_ATTENTION_RB_Q, TERN_PIPE_ATTENTION_RB_Q_D64}};
	static const uint32_t rb_rows[] = {64, 64, 64}; /* ROWS there */
	static const enum tern_vk_pipe simple_pipes[] = {TERN_PIPE_ATTENTION_SIMPLE,
							 TERN_PIPE_ATTENTION_BWD_KV_SIMPLE,
							 TERN_PIPE_ATTENTION_BWD_Q_SIMPLE};
	/* bit b: binding b is read (or written) as vec4s */
	static const unsigned simple_vec4[] = {0x1du, 0x3fu, 0x3fu}, rb_vec4[] = {0x1cu, 0x3cu, 0x3eu};
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	if (st)
		return st;
	/* both need subgroup vote (vk->vote); attention.comp takes every device */
	bool fits = vk->vote && p->Dh % 4 == 0 && p->Dh <= (simple ? ATTN_SIMPLE_DMAX : ATTN_RB_DMAX);
	unsigned vec4 = simple ? simple_vec4[pass] : rb_vec4[pass];
	for (int b = 0; b < 8; b++)
		if ((vec4 >> b & 1u) && p->off[b] % 4)
			fits = false;
	const char *rb = getenv("TERN_VK_ATTN_RB"), *d64 = getenv("TERN_VK_ATTN_D64");
	if (rb && strcmp(rb, "0") && strcmp(rb, "1"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_ATTN_RB=%s: must be 0 or 1 (or unset)", rb);
	if (d64 && strcmp(d64, "0") && strcmp(d64, "1"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_ATTN_D64=%s: must be 0 or 1 (or unset)", d64);
	if (fits && simple) {
		*pipe = simple_pipes[pass];
		*rows = ATTN_SIMPLE_WG;
	} else if (fits && !(rb && !strcmp(rb, "0"))) {
		*pipe = rb_pipes[pass][p->Dh <= 64 && !(d64 && !strcmp(d64, "0"))];
		*rows = rb_rows[pass];
	} else {
		*pipe = tiled[pass];
		*rows = ATTN_TILE;
	}
	return TERN_OK;
}

static struct tern_view sized(struct tern_view v, int64_t n) { return tern_view_sub(v, 0, (size_t)n * 4); }

/* Whether attention_rb.comp's dK/dV pass splits grouped heads (H > Hkv): a group per query head,
 * so a key tile's queries of the group's heads run side by side instead of one after another (the
 * long key tiles of the causal mask set the pass's time otherwise); TERN_VK_ATTN_SPLIT=0 (read at
 * each call): one group per KV head, for before/after timings and tests. */
static enum tern_status rb_split(const struct tern_attn_args *a, bool *split)
{
	const char *env = getenv("TERN_VK_ATTN_SPLIT");
	if (env && strcmp(env, "0") && strcmp(env, "1"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_ATTN_SPLIT=%s: must be 0 or 1 (or unset)", env);
	*split = a->H > a->Hkv && !(env && !strcmp(env, "0"));
	return TERN_OK;
}

/* The split dK/dV pass: each query head's share of dK and dV [T, H, Dh] into the two slots of
 * vk->mm_w16 (the decode-first products' scratch, free between products; tern_vulkan_sizes_for
 * counts the larger of the two needs), then their sums over each group in head order (b1: the
 * unsplit pass's bindings, whose first two the shares replace; d64: the -DDMAX=64u variant). */
static enum tern_status rb_kv_split(struct tern_vk *vk, const struct tern_attn_args *a, struct tern_view DK,
				    struct tern_view DV, struct tern_view *b1, uint32_t rows, bool d64)
{
	size_t bytes = (size_t)(a->T * a->H * a->Dh) * 4;
	enum tern_status st;
	if ((st = tern_vk_scratch(vk, &vk->mm_w16[0], bytes)) ||
	    (st = tern_vk_scratch(vk, &vk->mm_w16[1], bytes)))
		return st;
	struct tern_view pk = {vk->mm_w16[0], 0, bytes}, pv = {vk->mm_w16[1], 0, bytes};
	b1[0] = pk;
	b1[1] = pv;
	struct attn_push p = attn_place(vk, a, b1, 8);
	if ((st = tern_vk_dispatch(vk, d64 ? TERN_PIPE_ATTENTION_RB_KVH_D64 : TERN_PIPE_ATTENTION_RB_KVH, b1,
				   8, &p, sizeof p, (uint32_t)tern_cdiv(a->T, rows), (uint32_t)a->H, 1)))
		return st;
	struct tern_view b[4] = {DK, DV, pk, pv};
	p = attn_place(vk, a, b, 4);
	return tern_vk_dispatch(vk, TERN_PIPE_ATTENTION_RB_SUM, b, 4, &p, sizeof p,
				tern_vk_grid(a->T * a->Hkv * a->Dh, 256, ATTN_GRID), 1, 1);
}

/* ---- f16 on cooperative matrices (shaders/attn_mma.comp) ----------------------------------- */

#define MMA_BQ 64  /* queries per workgroup: forward and dQ pass */
#define MMA_BKV 32 /* keys per workgroup: dK/dV pass */

/* Mirrors the push block of shaders/attn_mma.comp. */
struct attn_mma_push {
	struct attn_push a;
	uint32_t xoff; /* CAST, PREP: the max|dO| word */
};

/* Whether the tensor-core shaders take this call: prec F16, the device has them, Dh 64 or 128,
 * and the query tiles fit the grid's second dimension (the passes run groups (H, tiles)). */
static bool mma_ok(struct tern_vk *vk, const struct tern_attn_args *a)
{
	return a->prec == TERN_F16 && vk->coopmat && (a->Dh == 64 || a->Dh == 128) &&
	       tern_cdiv(a->T, MMA_BKV) <= vk->props.limits.maxComputeWorkGroupCount[1];
}

/* Whether the -DFRAG passes of shaders/attn_mma.comp run here: the first call asks -DPROBE for
 * the lanes' elements of a 16 x 16 fp32 fragment (one dispatch and a download, which waits for
 * the commands recorded so far) and takes them when each lane l holds exactly the 8 elements
 * rows l / 4 (+ 8), columns 2 (l % 4) + {0, 1} (+ 8) in the order the shader names them (erow,
 * ecol there).
 * TERN_VK_ATTN_FRAG=0 keeps the passes through shared memory. */
static enum tern_status mma_frag(struct tern_vk *vk, bool *out)
{
	*out = false;
	if (vk->attn_frag == 0) {
		const char *e = getenv("TERN_VK_ATTN_FRAG");
		if (e && *e && strcmp(e, "0") && strcmp(e, "1"))
			return tern_fail(TERN_E_INVALID, "TERN_VK_ATTN_FRAG=%s: must be 0 or 1 (or unset: 1)",
					 e);
		vk->attn_frag = -1;
		if (!e || strcmp(e, "0")) {
			enum tern_status st = tern_vk_scratch(vk, &vk->attn_scr, 257 * 4);
			if (st)
				return st;
			struct tern_view b = {vk->attn_scr, 0, 257 * 4};
			struct attn_mma_push p = {{0}, 0};
			float got[257];
			uint64_t downloads = vk->base.counts.downloads;
			if ((st = tern_vk_dispatch(vk, TERN_PIPE_ATTN_MMA_PROBE, &b, 1, &p, sizeof p, 1, 1,
						   1)) ||
			    (st = tern_vk_download(&vk->base, got, b)))
				return st;
			vk->base.counts.downloads = downloads; /* not the caller's */
			bool ok = got[256] == 8.0f;
			for (int l = 0; ok && l < 32; l++)
				for (int k = 0; k < 8; k++) {
					int row = l / 4 + 8 * (k >> 2),
					    col = 2 * (l % 4) + (k & 1) + 8 * (k >> 1 & 1);
					ok = ok && got[8 * l + k] == (float)(16 * row + col);
				}
			vk->attn_frag = ok ? 1 : -1;
			char seen[1400];
			size_t len = 0;
			for (int i = 0; !ok && i < 257 && len < sizeof seen; i++)
				len += (size_t)snprintf(seen + len, sizeof seen - len, " %g", (double)got[i]);
			tern_log(TERN_LOG_INFO, "vulkan: attention fragments %s%s",
				 ok ? "in place (-DFRAG)" : "through shared memory; the probe read",
				 ok ? "" : seen);
		}
	}
	*out = vk->attn_frag > 0;
	return TERN_OK;
}

/* The tensor-core pipeline of one pass at head size Dh (64 or 128): the -DFRAG variant where
 * mma_frag says so. */
static enum tern_status pick_mma(struct tern_vk *vk, enum attn_pass pass, int64_t Dh, enum tern_vk_pipe *pipe)
{
	static const enum tern_vk_pipe pipes[3][2][2] = {
		/* [pass][frag][Dh 128] */
		[ATTN_FWD] = {{TERN_PIPE_ATTN_MMA_FWD_D64, TERN_PIPE_ATTN_MMA_FWD_D128},
			      {TERN_PIPE_ATTN_MMA_FWDF_D64, TERN_PIPE_ATTN_MMA_FWDF_D128}},
		[ATTN_BWD_KV] = {{TERN_PIPE_ATTN_MMA_KV_D64, TERN_PIPE_ATTN_MMA_KV_D128},
				 {TERN_PIPE_ATTN_MMA_KVF_D64, TERN_PIPE_ATTN_MMA_KVF_D128}},
		[ATTN_BWD_Q] = {{TERN_PIPE_ATTN_MMA_Q_D64, TERN_PIPE_ATTN_MMA_Q_D128},
				{TERN_PIPE_ATTN_MMA_QF_D64, TERN_PIPE_ATTN_MMA_QF_D128}},
	};
	bool frag;
	enum tern_status st = mma_frag(vk, &frag);
	*pipe = pipes[pass][frag][Dh == 128];
	return st;
}

/* The f16 operand copies in vk->attn_h: q, k, v and (backward) s dO, each 256-aligned. */
struct mma_h {
	struct tern_view q, k, v, g;
};

static enum tern_status mma_h_make(struct tern_vk *vk, const struct tern_attn_args *a, struct mma_h *h)
{
	size_t nq = tern_align_up((size_t)(a->T * a->H * a->Dh) * 2, 256);
	size_t nk = tern_align_up((size_t)(a->T * a->Hkv * a->Dh) * 2, 256);
	size_t need = 2 * nq + 2 * nk;
	enum tern_status st = tern_vk_scratch(vk, &vk->attn_h, need);
	if (st)
		return st;
	h->q = (struct tern_view){vk->attn_h, 0, nq};
	h->k = (struct tern_view){vk->attn_h, nq, nk};
	h->v = (struct tern_view){vk->attn_h, nq + nk, nk};
	h->g = (struct tern_view){vk->attn_h, nq + 2 * nk, nq};
	return TERN_OK;
}

/* dst (f16) = src (fp32, n elements, a multiple of 8), times the dO scale of aux word 1 when
 * scaled. */
static enum tern_status mma_cast(struct tern_vk *vk, struct tern_view dst, struct tern_view src, int64_t n,
				 bool scaled)
{
	struct tern_view d = tern_view_sub(dst, 0, (size_t)n * 2), sv = tern_view_sub(src, 0, (size_t)n * 4);
	struct tern_view xmax = {vk->aux, 4, 4};
	struct attn_mma_push p = {.a = {.T = (uint32_t)n, .Dh = scaled ? 1u : 0u}};
	p.a.off[0] = tern_vk_place(vk, &d) / 16;
	p.a.off[1] = tern_vk_place(vk, &sv) / 4;
	p.xoff = tern_vk_place(vk, &xmax) / 4;
	struct tern_view b[3] = {d, sv, xmax};
	return tern_vk_dispatch(vk, TERN_PIPE_ATTN_MMA_CAST, b, 3, &p, sizeof p,
				tern_vk_grid(n / 8, 256, 4096), 1, 1);
}

/* The push block with the f16 views at bindings fb (mask bit b) addressed in uvec4. */
static struct attn_mma_push mma_place(struct tern_vk *vk, const struct tern_attn_args *a, struct tern_view *v,
				      int nv, unsigned f16_mask)
{
	struct attn_mma_push p = {attn_place(vk, a, v, nv), 0};
	for (int i = 0; i < nv; i++)
		if (f16_mask >> i & 1u)
			p.a.off[i] /= 4; /* words -> uvec4 (the views start 256-aligned) */
	return p;
}

static enum tern_status mma_forward(struct tern_vk *vk, const struct tern_attn_args *a, struct tern_view o,
				    struct tern_view lse, struct tern_view q, struct tern_view k,
				    struct tern_view v, struct tern_view seg)
{
	int64_t nq = a->T * a->H * a->Dh, nk = a->T * a->Hkv * a->Dh;
	struct mma_h h;
	enum tern_status st;
	if ((st = mma_h_make(vk, a, &h)) || (st = mma_cast(vk, h.q, q, nq, false)) ||
	    (st = mma_cast(vk, h.k, k, nk, false)) || (st = mma_cast(vk, h.v, v, nk, false)))
		return st;
	enum tern_vk_pipe pipe;
	if ((st = pick_mma(vk, ATTN_FWD, a->Dh, &pipe)))
		return st;
	struct tern_view b[6] = {o, lse, h.q, h.k, h.v, seg};
	struct attn_mma_push mp = mma_place(vk, a, b, 6, 0x1cu);
	return tern_vk_dispatch(vk, pipe, b, 6, &mp, sizeof mp, (uint32_t)a->H,
				(uint32_t)tern_cdiv(a->T, MMA_BQ), 1);
}

/* dout's scale (aux word 1), the f16 copies, the (lse, s D) rows, then the dK/dV and dQ passes
 * (which do not depend on each other). */
static enum tern_status mma_backward(struct tern_vk *vk, const struct tern_attn_args *a, struct tern_view DQ,
				     struct tern_view DK, struct tern_view DV, struct tern_view G,
				     struct tern_view Q, struct tern_view K, struct tern_view V,
				     struct tern_view O, struct tern_view L, struct tern_view S)
{
	int64_t T = a->T, H = a->H, nscr = 2 * H * T + 1;
	int64_t nq = T * H * a->Dh, nk = T * a->Hkv * a->Dh;
	enum tern_status st = tern_vk_scratch(vk, &vk->attn_scr, (size_t)nscr * 4);
	if (st)
		return st;
	enum tern_vk_pipe kv, qp;
	if ((st = pick_mma(vk, ATTN_BWD_KV, a->Dh, &kv)) || (st = pick_mma(vk, ATTN_BWD_Q, a->Dh, &qp)))
		return st;
	struct mma_h h;
	struct tern_view scr = {vk->attn_scr, 0, (size_t)nscr * 4}, xmax = {vk->aux, 4, 4};
	if ((st = tern_vk_absmax(vk, G, nq, 1)) || (st = mma_h_make(vk, a, &h)) ||
	    (st = mma_cast(vk, h.q, Q, nq, false)) || (st = mma_cast(vk, h.k, K, nk, false)) ||
	    (st = mma_cast(vk, h.v, V, nk, false)) || (st = mma_cast(vk, h.g, G, nq, true)))
		return st;
	struct tern_view b0[5] = {scr, G, O, L, xmax};
	struct attn_mma_push mp = {attn_place(vk, a, b0, 5), 0};
	mp.xoff = mp.a.off[4];
	int64_t g0 = tern_cdiv(H * T * a->Dh / 4, 256); /* Dh / 4 invocations a row */
	if ((st = tern_vk_dispatch(vk, TERN_PIPE_ATTN_MMA_PREP, b0, 5, &mp, sizeof mp,
				   (uint32_t)(g0 < ATTN_GRID ? g0 : ATTN_GRID), 1, 1)))
		return st;
	struct tern_view b1[8] = {DK, DV, h.q, h.k, h.v, h.g, S, scr};
	mp = mma_place(vk, a, b1, 8, 0x3cu);
	if ((st = tern_vk_dispatch(vk, kv, b1, 8, &mp, sizeof mp, (uint32_t)a->Hkv,
				   (uint32_t)tern_cdiv(T, MMA_BKV), 1)))
		return st;
	struct tern_view b2[7] = {DQ, h.g, h.q, h.k, h.v, S, scr};
	mp = mma_place(vk, a, b2, 7, 0x1eu);
	return tern_vk_dispatch(vk, qp, b2, 7, &mp, sizeof mp, (uint32_t)H, (uint32_t)tern_cdiv(T, MMA_BQ),
				1);
}

enum tern_status tern_vk_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				   struct tern_view q, struct tern_view k, struct tern_view v,
				   struct tern_view seg, const struct tern_attn_args *a)
{
	struct tern_vk *vk = tern_vk_of(be);
	int64_t T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh;
	struct attn_bind b[6] = {
		{"o", o, T * H * Dh},   {"lse", lse, H * T},    {"q", q, T * H * Dh},
		{"k", k, T * Hkv * Dh}, {"v", v, T * Hkv * Dh}, {"seg", seg, T},
	};
	enum tern_status st = attn_check(vk, "attention", a, b, 6);
	if (st || T == 0)
		return st;
	struct tern_view bv[6];
	for (int i = 0; i < 6; i++)
		bv[i] = sized(b[i].v, b[i].n);
	if (mma_ok(vk, a))
		return mma_forward(vk, a, bv[0], bv[1], bv[2], bv[3], bv[4], bv[5]);
	struct attn_push p = attn_place(vk, a, bv, 6);
	enum tern_vk_pipe pipe;
	uint32_t rows;
	if ((st = pick_attention(vk, ATTN_FWD, &p, &pipe, &rows)))
		return st;
	return tern_vk_dispatch(vk, pipe, bv, 6, &p, sizeof p, (uint32_t)tern_cdiv(T, rows), (uint32_t)H, 1);
}

enum tern_status tern_vk_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				       struct tern_view dv, struct tern_view dout, struct tern_view q,
				       struct tern_view k, struct tern_view v, struct tern_view o,
				       struct tern_view lse, struct tern_view seg,
				       const struct tern_attn_args *a)
{
	struct tern_vk *vk = tern_vk_of(be);
	const char *op = "attention_bwd";
	int64_t T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh;
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	struct attn_bind b[10] = {
		{"dq", dq, nq}, {"dk", dk, nk}, {"dv", dv, nk}, {"dout", dout, nq},  {"q", q, nq},
		{"k", k, nk},   {"v", v, nk},   {"o", o, nq},   {"lse", lse, H * T}, {"seg", seg, T},
	};
	enum tern_status st = attn_check(vk, op, a, b, 10);
	if (st || T == 0)
		return st;
	/* the prep pass parks (lse, Dr) pairs in dq until the dQ pass writes it */
	if (Dh < 2)
		return tern_fail(TERN_E_UNSUPPORTED, "vulkan: %s: Dh=%lld, the shaders need Dh >= 2", op,
				 (long long)Dh);
	struct tern_view DQ = sized(dq, nq), DK = sized(dk, nk), DV = sized(dv, nk), G = sized(dout, nq);
	struct tern_view Q = sized(q, nq), K = sized(k, nk), V = sized(v, nk), O = sized(o, nq);
	struct tern_view L = sized(lse, H * T), S = sized(seg, T);

	if (mma_ok(vk, a))
		return mma_backward(vk, a, DQ, DK, DV, G, Q, K, V, O, L, S);
	struct tern_view b0[4] = {sized(dq, 2 * H * T), G, O, L};
	struct attn_push p = attn_place(vk, a, b0, 4);
	int64_t g0 = tern_cdiv(H * T, 256);
	if ((st = tern_vk_dispatch(vk, TERN_PIPE_ATTENTION_BWD_PREP, b0, 4, &p, sizeof p,
				   (uint32_t)(g0 < ATTN_GRID ? g0 : ATTN_GRID), 1, 1)))
		return st;

	struct tern_view b1[8] = {DK, DV, Q, K, V, G, S, sized(dq, 2 * H * T)};
	p = attn_place(vk, a, b1, 8);
	enum tern_vk_pipe pipe;
	uint32_t rows;
	bool split = false;
	if ((st = pick_attention(vk, ATTN_BWD_KV, &p, &pipe, &rows)) ||
	    ((pipe == TERN_PIPE_ATTENTION_RB_KV || pipe == TERN_PIPE_ATTENTION_RB_KV_D64) &&
	     (st = rb_split(a, &split))))
		return st;
	if (split)
		st = rb_kv_split(vk, a, DK, DV, b1, rows, pipe == TERN_PIPE_ATTENTION_RB_KV_D64);
	else
		st = tern_vk_dispatch(vk, pipe, b1, 8, &p, sizeof p, (uint32_t)tern_cdiv(T, rows),
				      (uint32_t)Hkv, 1);
	if (st)
		return st;

	struct tern_view b2[8] = {DQ, G, Q, K, V, O, L, S};
	p = attn_place(vk, a, b2, 8);
	if ((st = pick_attention(vk, ATTN_BWD_Q, &p, &pipe, &rows)))
		return st;
	return tern_vk_dispatch(vk, pipe, b2, 8, &p, sizeof p, (uint32_t)tern_cdiv(T, rows), (uint32_t)H, 1);
}

/* ---- attention over a KV cache (shaders/attention_kv.comp) --------------------------------- */

#define ATTN_KV_DMAX 256 /* WG * DX there */

/* Mirrors the push block of shaders/attention_kv.comp. */
struct attn_kv_push {
	uint32_t Tq, Tk, H, Hkv, Dh;
	uint32_t window;
	float scale;
	uint32_t off[4];
};

/* The one pipeline of attention_kv, with the limits its push block and shared memory set. */
static enum tern_status pick_attention_kv(const struct tern_attn_kv_args *a, enum tern_vk_pipe *pipe)
{
	if (a->Dh > ATTN_KV_DMAX || a->Tk > UINT32_MAX / 2 / a->H / a->Dh || a->window > UINT32_MAX)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: attention_kv: Tk=%lld H=%lld Dh=%lld: the shader takes Dh <= %d "
				 "and Tk*H*Dh < 2^31",
				 (long long)a->Tk, (long long)a->H, (long long)a->Dh, ATTN_KV_DMAX);
	*pipe = TERN_PIPE_ATTENTION_KV;
	return TERN_OK;
}

enum tern_status tern_vk_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				      struct tern_view k, struct tern_view v,
				      const struct tern_attn_kv_args *a)
{
	struct tern_vk *vk = tern_vk_of(be);
	int64_t nq = a->Tq * a->H * a->Dh, nk = a->Tk * a->Hkv * a->Dh;
	struct attn_bind b[4] = {{"o", o, nq}, {"q", q, nq}, {"k", k, nk}, {"v", v, nk}};
	enum tern_vk_pipe pipe;
	enum tern_status st = pick_attention_kv(a, &pipe);
	for (int i = 0; i < 4 && st == TERN_OK; i++) {
		if (b[i].v.off % 4)
			st = tern_fail(TERN_E_INVALID,
				       "vulkan: attention_kv: %s view offset %zu is not a multiple of 4",
				       b[i].what, b[i].v.off);
		else if ((VkDeviceSize)b[i].n * 4 + vk->align > vk->max_range)
			st = tern_fail(
				TERN_E_UNSUPPORTED,
				"vulkan: attention_kv: %s is %lld bytes, more than maxStorageBufferRange %llu",
				b[i].what, (long long)b[i].n * 4, (unsigned long long)vk->max_range);
	}
	if (st || a->Tq == 0)
		return st;
	struct tern_view bv[4];
	struct attn_kv_push p = {
		.Tq = (uint32_t)a->Tq,
		.Tk = (uint32_t)a->Tk,
		.H = (uint32_t)a->H,
		.Hkv = (uint32_t)a->Hkv,
		.Dh = (uint32_t)a->Dh,
		.window = (uint32_t)a->window,
		.scale = a->scale,
	};
	for (int i = 0; i < 4; i++) {
		bv[i] = sized(b[i].v, b[i].n);
		p.off[i] = tern_vk_place(vk, &bv[i]) / 4;
	}
	return tern_vk_dispatch(vk, pipe, bv, 4, &p, sizeof p, (uint32_t)a->Tq, (uint32_t)a->H, 1);
}
