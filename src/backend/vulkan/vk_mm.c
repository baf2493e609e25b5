/* matmul and matmul_bwd at precision F16 (backend.h "Precision"): shaders/mm.comp on f16 tiles,
 * on cooperative matrices where the device has them (NV, subgroups of 32), else the
 * register-blocked variant of the same shader. Sequence per call:
 *   the f16 copy of the input, scaled row by row, with each row's max|x| (shaders/castx.comp, one
 *   pass; the rows' scales s_t), then per chunk of W rows and tokens (maxStorageBufferRange) one
 *   mm dispatch of 128 x 128 output tiles; when the tiles cannot fill the device (few tokens, few
 *   outputs, a long reduction: ce_loss's dx = z W over the vocabulary), the reduction is split
 *   over gl_WorkGroupID.z into fp32 partials that mm_reduce.comp adds in a fixed order.
 * The partials live in a scratch buffer of the backend (mm_part), grown on first need.
 * With a LoRA term (matmul_lora, matmul_lora_bwd) mm.comp's -DLORA twin runs the rank-R term as
 * R more steps of the reduction (in split 0's partials after a split); the backward adds it with
 * the first chunk of W's rows only (the later chunks add onto it).
 * Decode-first (from MM_DF_TOKENS tokens a call on tensor cores; TERN_VK_MM_DF): a quantized or
 * bf16/f32 W's rows are decoded to f16 once per chunk (shaders/wdec.comp, into one of two slots of
 * vk->mm_w16, so the next chunk's decode may overlap this chunk's product) and multiplied by
 * mm.comp's f16 variant: the same bits as decoding in the tiles, where a 2048-token product would
 * decode each weight 16 times over (once per 128-row tile of tokens). Token chunks (past
 * maxStorageBufferRange) decode W again each. The backward of a W with O >= I decodes its chunks
 * transposed (wdec.comp -DTRANS) and runs dx = dy W with the forward variant (mm_dft_on). */
#include "backend/vulkan/vk.h"

#include "backend/vulkan/spirv.h"

#include <stdlib.h>
#include <string.h>

#define MM_TILE 128               /* BM = BN in mm.comp */
#define MM_BK_COOPMAT 64          /* BK of the cooperative-matrix variants (variants.cmake) */
#define MM_BK 32                  /* BK of the register-blocked variants */
#define MM_PART_MAX (64ull << 20) /* bytes of split-K partials at most */
#define MM_DF_TOKENS 512          /* decode-first from this many tokens a call */
#define MM_DF_SLOT (64ull << 20)  /* bytes of one slot of decoded W rows at most */

/* Mirrors the push block of shaders/mm.comp. */
struct mm16_push {
	uint32_t T, N, K;
	uint32_t y_off, ldy;
	uint32_t x_off, ldx, xk0;
	uint32_t r0, I, pos;
	uint32_t absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint32_t accumulate, xmax_off, kc, part_off, fast;
	uint32_t lora_r, lu_off, lp_off, lp_cs, lp_rs;
	float lora_scale;
	uint32_t raster;
};

/* Mirrors shaders/wdec.comp. */
struct wdec_push {
	uint32_t R, I, r0, pos;
	uint32_t absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint32_t out_off;
};

/* Mirrors shaders/mm_reduce.comp. */
struct mm_reduce_push {
	uint32_t T, N, y_off, ldy, c0, splits, part_off, accumulate, xmax_off;
};

struct absmax_push {
	uint32_t n, x_off, out_off;
};

/* Mirrors shaders/castx.comp. */
struct castx_push {
	uint32_t T, n, ldd, dst_off, src_off, rmax_off;
};

/* Halves a row of the f16 input of cols elements (vk->mm_x16): a multiple of 8, so every row
 * starts on 16 bytes and mm.comp's runs stay aligned at any width. */
static int64_t x16_ld(int64_t cols) { return (cols + 7) / 8 * 8; }

/* The f16 input of the products from x [T, cols]: vk->mm_x16 row t = f16(x[t] s_t) (x16_ld(cols)
 * halves a row) and vk->mm_rmax[t] = the bits of row t's largest |x| (castx.comp: one pass). */
static enum tern_status mm16_input(struct tern_vk *vk, struct tern_view x, int64_t T, int64_t cols)
{
	int64_t ld = x16_ld(cols);
	enum tern_status st = tern_vk_scratch(vk, &vk->mm_x16, (size_t)(T * ld) * 2 + 16);
	if (st || (st = tern_vk_scratch(vk, &vk->mm_rmax, (size_t)T * 4 + 16)))
		return st;
	/* rows a dispatch, each binding inside maxStorageBufferRange */
	int64_t chunk = tern_vk_fit(vk, 4 * cols > 2 * ld ? 4 * cols : 2 * ld);
	if (chunk < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: f16 products: a row of %lld inputs exceeds maxStorageBufferRange",
				 (long long)cols);
	for (int64_t t0 = 0; t0 < T; t0 += chunk) {
		int64_t m = T - t0 < chunk ? T - t0 : chunk;
		struct tern_view d = {vk->mm_x16, (size_t)(t0 * ld) * 2, (size_t)(m * ld) * 2},
				 r = {vk->mm_rmax, (size_t)t0 * 4, (size_t)m * 4},
				 sv = tern_view_sub(x, (size_t)(t0 * cols) * 4, (size_t)(m * cols) * 4);
		struct castx_push p = {.T = (uint32_t)m, .n = (uint32_t)cols, .ldd = (uint32_t)ld};
		p.dst_off = tern_vk_place(vk, &d) / 4;
		p.src_off = tern_vk_place(vk, &sv) / 4;
		p.rmax_off = tern_vk_place(vk, &r) / 4;
		struct tern_view b[3] = {d, sv, r};
		uint32_t groups = (uint32_t)(m < 65535 ? m : 65535); /* castx loops over the rest */
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_CASTX, b, 3, &p, sizeof p, groups, 1, 1)))
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_vk_absmax(struct tern_vk *vk, struct tern_view x, int64_t n, uint32_t slot)
{
	struct tern_view out = {vk->aux, (size_t)slot * 4, 4};
	enum tern_status st = tern_vk_zero(&vk->base, out);
	if (st)
		return st;
	int64_t chunk = tern_vk_fit(vk, 4);
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t m = n - i0 < chunk ? n - i0 : chunk;
		struct tern_view xv = tern_view_sub(x, (size_t)i0 * 4, (size_t)m * 4), ov = out;
		struct absmax_push p = {.n = (uint32_t)m};
		p.x_off = tern_vk_place(vk, &xv) / 4;
		p.out_off = tern_vk_place(vk, &ov) / 4;
		struct tern_view b[2] = {ov, xv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ABSMAX, b, 2, &p, sizeof p,
					   tern_vk_grid(m, 2048, 1024), 1, 1)))
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_vk_scratch(struct tern_vk *vk, struct tern_buffer **buf, size_t bytes)
{
	if (*buf && (*buf)->size >= bytes)
		return TERN_OK;
	tern_vk_buffer_free(&vk->base, *buf);
	*buf = NULL;
	return tern_vk_buffer_alloc(&vk->base, bytes, buf);
}

/* Whether the 16-element runs of mm.comp's fast loads hold for this dispatch. */
static bool mm_fast_ok(enum tern_dtype dt, const struct mm16_push *p, bool bwd)
{
	if (p->K % 16 || p->I % 16 || p->x_off % 8 || p->ldx % 8 || p->xk0 % 8)
		return false;
	if (bwd && p->N % 16)
		return false;
	switch (dt) {
	case TERN_F32: return p->pos % 4 == 0;
	case TERN_F16:
	case TERN_BF16: return p->pos % 8 == 0;
	case TERN_NF4:
	case TERN_NF4_DQ: return p->pos % 16 == 0 && p->blocksize % 16 == 0;
	case TERN_TERNARY: return true;
	default: return false;
	}
}

/* [LoRA term][coopmat][bwd][weight dtype] */
static const enum tern_vk_pipe mm16_pipes[2][2][2][TERN_DTYPE_COUNT] = {
	{{TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_RB), TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_RB_BWD)},
	 {TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_CM), TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_CM_BWD)}},
	{{TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_RB_LORA), TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_RB_LORA_BWD)},
	 {TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_CM_LORA), TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MM_CM_LORA_BWD)}},
};

bool tern_vk_built(const enum tern_vk_pipe *pipes, int n)
{
	for (int i = 0; i < n; i++)
		if (!tern_spirv_table[pipes[i]].words)
			return false;
	return true;
}

bool tern_vk_has_variant(struct tern_backend *be, const char *variant)
{
	struct tern_vk *vk = tern_vk_of(be);
	if (!strcmp(variant, "coopmat"))
		return vk->coopmat;
	if (!strcmp(variant, "regs"))
		return vk->fp16;
	return false;
}

/* The tensor-core variant where the device has it, else the register-blocked one, with the LoRA
 * term (-DLORA) when lora; TERN_VK_MM16=coopmat|regs forces one (tests and benchmarks). */
static enum tern_status pick_mm16(struct tern_vk *vk, bool bwd, bool lora, enum tern_dtype dt, bool *cm,
				  enum tern_vk_pipe *pipe)
{
	const char *env = getenv("TERN_VK_MM16");
	*cm = vk->coopmat;
	if (env && *env) {
		if (strcmp(env, "coopmat") && strcmp(env, "regs"))
			return tern_fail(TERN_E_INVALID,
					 "TERN_VK_MM16=%s: must be coopmat or regs (or unset)", env);
		*cm = !strcmp(env, "coopmat");
		if (*cm && !vk->coopmat)
			return tern_fail(TERN_E_UNSUPPORTED,
					 "TERN_VK_MM16=coopmat: this device or build has no NV cooperative "
					 "matrices");
	}
	*pipe = mm16_pipes[lora][*cm][bwd][dt];
	return TERN_OK;
}

/* wdec.comp by the weight's dtype (f16 has nothing to decode) */
static const enum tern_vk_pipe wdec_pipes[TERN_DTYPE_COUNT] = {
	[TERN_F32] = TERN_PIPE_WDEC_F32,       [TERN_F16] = TERN_PIPE_COUNT,
	[TERN_BF16] = TERN_PIPE_WDEC_BF16,     [TERN_NF4] = TERN_PIPE_WDEC_NF4,
	[TERN_NF4_DQ] = TERN_PIPE_WDEC_NF4_DQ, [TERN_TERNARY] = TERN_PIPE_WDEC_TERNARY,
};

/* Rows of W a decode-first chunk takes (a multiple of 16), 0 where the products decode W in their
 * tiles: from MM_DF_TOKENS tokens a call on tensor cores (cm; the register-blocked NF4-DQ products
 * ran 0.97-0.99x decoding in the tiles on an H100, lavapipe's 0.88x, before their forward's bank
 * fix; not measured since), for a weight whose dtype has
 * a wdec variant and whose 16 rows fit a slot. TERN_VK_MM_DF=0: never; =1: from MM_DF_TOKENS
 * tokens on any variant and device; =all: at any T (tests). */
static enum tern_status pick_mm_df(const struct tern_weight *w, int64_t T, bool cm, int64_t *rows)
{
	const char *env = getenv("TERN_VK_MM_DF");
	bool on = T >= MM_DF_TOKENS && cm;
	*rows = 0;
	if (env && *env) {
		if (strcmp(env, "0") && strcmp(env, "1") && strcmp(env, "all"))
			return tern_fail(TERN_E_INVALID, "TERN_VK_MM_DF=%s: must be 0, 1 or all (or unset)",
					 env);
		on = env[0] == 'a' || (env[0] == '1' && T >= MM_DF_TOKENS);
	}
	enum tern_vk_pipe pipe = wdec_pipes[w->dtype];
	int64_t r = (int64_t)(MM_DF_SLOT / (uint64_t)(2 * w->I)) / 16 * 16;
	if (on && pipe != TERN_PIPE_COUNT && tern_vk_built(&pipe, 1) && r >= 16)
		*rows = r;
	return TERN_OK;
}

/* TERN_VK_MM_ROWS=<n> (a positive multiple of 16): at most n rows of W a dispatch, decoding first
 * or not, so that tests compare the two on the same chunks (the backward's chunks add up in
 * order); unset: *rows unchanged. */
static enum tern_status mm_rows_env(int64_t *rows)
{
	const char *env = getenv("TERN_VK_MM_ROWS");
	if (!env || !*env)
		return TERN_OK;
	char *end = NULL;
	long long n = strtoll(env, &end, 10);
	if (*end || n < 16 || n % 16)
		return tern_fail(TERN_E_INVALID,
				 "TERN_VK_MM_ROWS=%s: must be a positive multiple of 16 (or unset)", env);
	*rows = n < *rows ? n : *rows;
	return TERN_OK;
}

/* wdec.comp -DTRANS by the weight's dtype */
static const enum tern_vk_pipe wdect_pipes[TERN_DTYPE_COUNT] = {
	[TERN_F32] = TERN_PIPE_WDECT_F32,       [TERN_F16] = TERN_PIPE_COUNT,
	[TERN_BF16] = TERN_PIPE_WDECT_BF16,     [TERN_NF4] = TERN_PIPE_WDECT_NF4,
	[TERN_NF4_DQ] = TERN_PIPE_WDECT_NF4_DQ, [TERN_TERNARY] = TERN_PIPE_WDECT_TERNARY,
};

/* Whether a decode-first backward of W [O, I] decodes its chunks transposed and multiplies them
 * with the forward variant (dx = dy W as y = x (W^T)^T): by default where O >= I (on an H100 the
 * NF4-DQ backward at T 2048 went 1.10x at 4096 x 4096 and 1.14x at 14336 x 4096, the down
 * projection's 4096 x 14336 0.98x; the 8B step 1.013x; docs/PERFORMANCE.md 2026-12-07 07:27);
 * TERN_VK_MM_DFT=0: never, =1: every shape (tests). */
static enum tern_status mm_dft_on(const struct tern_weight *w, bool *on)
{
	const char *env = getenv("TERN_VK_MM_DFT");
	*on = w->O >= w->I;
	if (!env || !*env)
		return TERN_OK;
	if (strcmp(env, "0") && strcmp(env, "1"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_MM_DFT=%s: must be 0 or 1 (or unset)", env);
	*on = env[0] == '1';
	return TERN_OK;
}

/* W rows [r0, r0 + rn) (bound as wd, element position pos; its scales as ws placed them) decoded to
 * f16 into the next slot of vk->mm_w16, as *out: rn x I halves from its start, or with trans their
 * transpose, I x rn (rn a multiple of 8). */
static enum tern_status mm_df_decode(struct tern_vk *vk, const struct tern_weight *w,
				     const struct tern_vk_wscales *ws, struct tern_view wd, uint32_t pos,
				     int64_t r0, int64_t rn, bool trans, struct tern_view *out)
{
	int slot = vk->mm_w16_next;
	size_t bytes = (size_t)(rn * w->I) * 2;
	enum tern_status st = tern_vk_scratch(vk, &vk->mm_w16[slot], bytes);
	if (st)
		return st;
	vk->mm_w16_next ^= 1;
	struct tern_view o = {vk->mm_w16[slot], 0, bytes};
	struct wdec_push p = {
		.R = (uint32_t)rn,
		.I = (uint32_t)w->I,
		.r0 = (uint32_t)r0,
		.pos = pos,
		.absmax_off = ws->absmax_off,
		.nested_off = ws->nested_off,
		.dmap_off = ws->dmap_off,
		.blocksize = (uint32_t)w->blocksize,
		.offset = w->offset,
		.scale = w->scale,
	};
	*out = o;
	p.out_off = tern_vk_place(vk, &o) / 16;
	struct tern_view b[6] = {o, {0}, wd, ws->absmax, ws->nested, ws->dmap};
	if (trans) /* one group a tile of 64 x 64 */
		return tern_vk_dispatch(vk, wdect_pipes[w->dtype], b, 6, &p, sizeof p,
					tern_vk_grid(tern_cdiv(rn, 64) * tern_cdiv(w->I, 64), 1, 65535), 1,
					1);
	return tern_vk_dispatch(vk, wdec_pipes[w->dtype], b, 6, &p, sizeof p,
				tern_vk_grid(rn * w->I / 8, 256, 65535), 1, 1);
}

/* backend.h tern_backend_sizes_for: the reserve grows by the two decode-first slots the products
 * fill (F16 products from MM_DF_TOKENS tokens, weights with something to decode; counted whether or
 * not the device has tensor cores: the planner runs without one): each the largest projection in
 * f16, at most MM_DF_SLOT. */
enum tern_status tern_vulkan_sizes_for(const struct tern_size_shapes *s, struct tern_backend_sizes *out)
{
	uint64_t slot = 0;
	if (s->prec == TERN_F16 && s->T >= MM_DF_TOKENS && s->proj != TERN_F16) {
		slot = s->W > 0 ? (uint64_t)s->W * 2 : MM_DF_SLOT;
		slot = slot < MM_DF_SLOT ? slot : MM_DF_SLOT;
	}
	/* the same two buffers hold the split dK/dV shares of the fp32 attention (vk_attention.c
	 * rb_kv_split) where heads are grouped: T x H x Dh floats each (unknown heads: 32 x 128) */
	int64_t hd = s->H > 0 && s->Dh > 0 ? s->H * s->Dh : 32 * 128;
	uint64_t share = s->H > 0 && s->Hkv >= s->H ? 0 : (uint64_t)(s->T * hd) * 4;
	out->reserve += 2 * (slot > share ? slot : share);
	return TERN_OK;
}

/* mm.comp's raster: bands of G token tiles walked one column tile after another (the default,
 * =auto: on an H100 the down projection's backward 1.13x, the other NF4-DQ products within 1 %, the
 * 8B step 1.014x; docs/PERFORMANCE.md 2026-12-07 06:35), G as many as keep the band's f16 rows of
 * x (128 G K halves) within MM_RASTER_X bytes (of an H100's 50 MiB of L2, beside the W column
 * tiles being read), at most 16 (2048 tokens); TERN_VK_MM_RASTER=0: the grid's own order; =<G>:
 * that band. 0 for one token tile either way. */
#define MM_RASTER_X (24ll << 20)
static enum tern_status mm_raster(int64_t tn, int64_t K, uint32_t *g)
{
	const char *env = getenv("TERN_VK_MM_RASTER");
	int64_t m = tern_cdiv(tn, MM_TILE), G = 0;
	if (!env || !*env || !strcmp(env, "auto")) {
		G = MM_RASTER_X / (MM_TILE * 2 * (K > 0 ? K : 1));
		G = G > 16 ? 16 : G < 1 ? 1 : G;
	} else {
		char *end = NULL;
		long long v = strtoll(env, &end, 10);
		if (*end || v < 0 || v > 65535)
			return tern_fail(TERN_E_INVALID,
					 "TERN_VK_MM_RASTER=%s: must be auto or a band of 0 to 65535 token "
					 "tiles (or unset)",
					 env);
		G = v;
	}
	*g = m > 1 ? (uint32_t)G : 0;
	return TERN_OK;
}

/* Reduction splits of an mm dispatch of `tiles` output tiles over K (at least two BK steps a
 * split). v2 (the default): as many as fill one wave of the groups the multiprocessors hold at
 * once (one tensor-core group each, about 160 registers x 256 invocations; two register-blocked
 * ones), rounded down: a wave and a few groups more would take two waves' time (ce_loss's
 * dx = z W at 128 tokens: 16 tiles x 9 splits = 144 groups on 132 multiprocessors ran as two
 * waves of K/9, 8 splits run as one of K/8). v1 (TERN_VK_SPLITK=v1): the rounded-up count of
 * before. */
static int64_t mm_splits(struct tern_vk *vk, int gen, bool cm, int64_t tiles, int64_t K, int64_t bk)
{
	int64_t sms = (int64_t)vk->sm_count, most = K / (2 * bk), splits;
	if (tiles >= sms || K < 4 * bk)
		return 1;
	if (gen == 1)
		splits = tern_cdiv(sms, tiles);
	else
		splits = (cm ? 1 : 2) * sms / tiles;
	splits = splits > most ? most : splits;
	return splits < 1 ? 1 : splits;
}

/* The products of tern_vk_mm16 from the f16 input mm16_input left in vk->mm_x16 (its rows'
 * scales in vk->mm_rmax). */
static enum tern_status mm16_products(struct tern_vk *vk, bool bwd, struct tern_view out,
				      const struct tern_weight *w, int64_t T, bool accumulate,
				      const struct tern_lora_term *lora)
{
	int64_t O = w->O, I = w->I;
	int64_t out_cols = bwd ? I : O, in_cols = bwd ? O : I;
	bool cm = false;
	int gen = 2;
	int64_t df_rows = 0;
	enum tern_vk_pipe pipe = TERN_PIPE_COUNT, pipe16 = TERN_PIPE_COUNT, pipe16f = TERN_PIPE_COUNT;
	bool dft = false;
	enum tern_status st = pick_mm16(vk, bwd, lora != NULL, w->dtype, &cm, &pipe);
	if (st || (st = tern_vk_gen("TERN_VK_SPLITK", &gen)) || (st = pick_mm_df(w, T, cm, &df_rows)) ||
	    (st = mm_dft_on(w, &dft)))
		return st;
	/* decode-first multiplies with the same variant's f16 twin; transposed, with the forward's */
	pipe16 = mm16_pipes[lora != NULL][cm][bwd][TERN_F16];
	pipe16f = mm16_pipes[lora != NULL][cm][false][TERN_F16];
	dft = dft && bwd && wdect_pipes[w->dtype] != TERN_PIPE_COUNT &&
	      tern_vk_built(&wdect_pipes[w->dtype], 1);
	struct tern_view in16 = {vk->mm_x16, 0, vk->mm_x16->size};
	int64_t ld = x16_ld(in_cols), wide = 4 * (O > I ? O : I); /* the widest fp32 row's bytes */
	int64_t bk = cm ? MM_BK_COOPMAT : MM_BK;

	/* rows of W per chunk (a multiple of 16, so chunk starts keep the fast loads aligned) and
	 * tokens per chunk so every binding fits */
	int64_t rows = tern_vk_fit(vk, tern_vk_weight_row_bytes(w)) - 1,
		tc = tern_vk_fit(vk, wide > 2 * ld ? wide : 2 * ld);
	if (rows > 16)
		rows = rows / 16 * 16;
	if (df_rows && df_rows < rows)
		rows = df_rows;
	if ((st = mm_rows_env(&rows)))
		return st;
	if (rows < 1 || tc < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of W [%lld, %lld] exceeds maxStorageBufferRange",
				 bwd ? "matmul_bwd" : "matmul", (long long)O, (long long)I);
	struct tern_vk_wscales ws = tern_vk_weight_scales(vk, w);
	struct mm16_push p = {
		.ldy = (uint32_t)out_cols,
		.ldx = (uint32_t)ld,
		.I = (uint32_t)I,
		.absmax_off = ws.absmax_off,
		.nested_off = ws.nested_off,
		.dmap_off = ws.dmap_off,
		.blocksize = (uint32_t)w->blocksize,
		.offset = w->offset,
		.scale = w->scale,
	};
	/* lp(n, r): B[r0 + n, r] forward (r0 folded into lp_off per chunk), A[r, n] backward */
	struct tern_view lp = lora ? lora->B : (struct tern_view){0};
	uint32_t lp0 = lora ? (uint32_t)(tern_vk_place(vk, &lp) / 4) : 0;
	if (lora) {
		p.lora_scale = lora->scale;
		p.lp_cs = bwd ? 1u : (uint32_t)lora->R;
		p.lp_rs = bwd ? (uint32_t)I : 1u;
	}
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view y =
			tern_view_sub(out, (size_t)(t0 * out_cols * 4), (size_t)(tn * out_cols * 4));
		/* the f16 copy's rows t0 .. (x_off counts halves) and their max|x| bits */
		struct tern_view x = tern_view_sub(in16, (size_t)(t0 * ld) * 2, (size_t)(tn * ld) * 2),
				 xmax = {vk->mm_rmax, (size_t)t0 * 4, (size_t)tn * 4};
		p.y_off = tern_vk_place(vk, &y) / 4;
		p.x_off = (uint32_t)(tern_vk_place(vk, &x) / 2);
		p.xmax_off = tern_vk_place(vk, &xmax) / 4;
		p.T = (uint32_t)tn;
		uint32_t x_off = p.x_off;
		struct tern_view lu = {0};
		if (lora) {
			lu = tern_view_sub(lora->u, (size_t)(t0 * lora->R) * 4, (size_t)(tn * lora->R) * 4);
			p.lu_off = tern_vk_place(vk, &lu) / 4;
		}
		for (int64_t r0 = 0; r0 < O; r0 += rows) {
			int64_t rn = O - r0 < rows ? O - r0 : rows;
			struct tern_view wd = tern_vk_weight_rows(vk, w, r0, rn, &p.pos);
			p.r0 = (uint32_t)r0;
			p.N = (uint32_t)(bwd ? I : rn);
			p.K = (uint32_t)(bwd ? rn : I);
			p.I = (uint32_t)I;
			p.x_off = x_off;
			p.xk0 = (uint32_t)(bwd ? r0 : 0);
			p.accumulate = accumulate || (bwd && r0 > 0);
			p.fast = mm_fast_ok(w->dtype, &p, bwd);
			if ((st = mm_raster(tn, p.K, &p.raster)))
				return st;
			/* decode-first where the runs the decode reads are aligned (p.fast: the f16
			 * product's loads, from the slot's start, then are too) */
			bool df = df_rows && p.fast;
			/* transposed: the forward product of x's columns r0 .. with the I x rn chunk as
			 * its weight (rows of rn halves), into all of dx's columns */
			struct mm16_push pt = p;
			pt.r0 = 0;
			pt.I = (uint32_t)rn;
			pt.pos = 0;
			pt.x_off = x_off + (uint32_t)r0;
			pt.xk0 = 0;
			bool trans = df && dft && mm_fast_ok(TERN_F16, &pt, false);
			if (df && (st = mm_df_decode(vk, w, &ws, wd, p.pos, r0, rn, trans, &wd)))
				return st;
			if (df)
				p.pos = 0;
			if (trans)
				p = pt;
			/* the LoRA term: every chunk of y's columns; dx's first chunk of the reduction */
			p.lora_r = lora && (!bwd || r0 == 0) ? (uint32_t)lora->R : 0;
			p.lp_off = lp0 + (lora && !bwd ? (uint32_t)(r0 * lora->R) : 0);
			/* split the reduction when the output tiles leave most of the device idle */
			int64_t tiles = tern_cdiv(tn, MM_TILE) * tern_cdiv(p.N, MM_TILE);
			int64_t splits = mm_splits(vk, gen, cm, tiles, p.K, bk);
			/* the partials within the scratch's cap and one binding */
			uint64_t part_max = (uint64_t)tern_vk_fit(vk, 4) * 4;
			part_max = part_max < MM_PART_MAX ? part_max : MM_PART_MAX;
			while (splits > 1 && (uint64_t)(splits * tn * p.N) * 4 > part_max)
				splits--;
			p.kc = 0;
			p.part_off = 0;
			struct tern_view part = {0};
			if (splits > 1) {
				int64_t kc = tern_cdiv(tern_cdiv(p.K, splits), bk) * bk;
				splits = tern_cdiv(p.K, kc);
				p.kc = (uint32_t)kc;
				if ((st = tern_vk_scratch(vk, &vk->mm_part, (size_t)(splits * tn * p.N) * 4)))
					return st;
				part = (struct tern_view){vk->mm_part, 0, (size_t)(splits * tn * p.N) * 4};
			}
			struct tern_view b[10] = {y,       x,    wd,   ws.absmax, ws.nested,
						  ws.dmap, xmax, part, lu,        lp};
			enum tern_vk_pipe use = trans ? pipe16f : df ? pipe16 : pipe;
			if ((st = tern_vk_dispatch(vk, use, b, 10, &p, sizeof p,
						   (uint32_t)tern_cdiv(p.N, MM_TILE),
						   (uint32_t)tern_cdiv(tn, MM_TILE), (uint32_t)splits)))
				return st;
			if (splits > 1) {
				struct mm_reduce_push rp = {
					.T = (uint32_t)tn,
					.N = p.N,
					.y_off = p.y_off,
					.ldy = p.ldy,
					.c0 = bwd ? 0 : (uint32_t)r0,
					.splits = (uint32_t)splits,
					.part_off = 0,
					.accumulate = p.accumulate,
					.xmax_off = p.xmax_off,
				};
				struct tern_view rb[8] = {y, {0}, {0}, {0}, {0}, {0}, xmax, part};
				if ((st = tern_vk_dispatch(vk, TERN_PIPE_MM_REDUCE, rb, 8, &rp, sizeof rp,
							   tern_vk_grid(tn * p.N, 256, 4096), 1, 1)))
					return st;
			}
		}
	}
	return TERN_OK;
}

enum tern_status tern_vk_mm16(struct tern_vk *vk, bool bwd, struct tern_view out, struct tern_view in,
			      const struct tern_weight *w, int64_t T, bool accumulate,
			      const struct tern_lora_term *lora)
{
	enum tern_status st = mm16_input(vk, in, T, bwd ? w->O : w->I);
	return st ? st : mm16_products(vk, bwd, out, w, T, accumulate, lora);
}

enum tern_status tern_vk_mm16_multi(struct tern_vk *vk, const struct tern_view *y, struct tern_view x,
				    const struct tern_weight *const *w, const struct tern_lora_term *lt,
				    int n, int64_t T)
{
	enum tern_status st = mm16_input(vk, x, T, w[0]->I);
	for (int i = 0; st == TERN_OK && i < n; i++)
		st = mm16_products(vk, false, y[i], w[i], T, false, lt && lt[i].R ? &lt[i] : NULL);
	return st;
}
