/* The op wrappers: split work so that no binding exceeds maxStorageBufferRange (128 MiB on
 * lavapipe), fill push constants, dispatch. They are called through the front doors
 * (src/backend/ops.c), which checked shapes, counts, scalars, dtypes and view sizes; what is
 * checked here is this backend's own: view starts the shaders can address, device limits.
 * Each push struct mirrors the shader's push_constant block field by field. */
#include "backend/vulkan/vk.h"

#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

static uint32_t groups(int64_t n, int64_t per) { return (uint32_t)((n + per - 1) / per); }
static uint32_t grid(int64_t n) { return tern_vk_grid(n, 256, 4096); }

/* ---- shader variants --------------------------------------------------------------------- */

/* matmul, matmul_bwd, gemm and attention come in two variants: "tiled" (shared-memory tiles and
 * barriers, for GPUs) and "simple" (no shared memory or barriers: each invocation computes a small
 * block of outputs with a plain loop over the reduction; see shaders/matmul_simple.comp), which is
 * what a CPU-type device (lavapipe/llvmpipe) runs fast. TERN_VK_VARIANT=tiled|simple forces one
 * (declared in vk.h). */
enum tern_status tern_vk_simple(struct tern_vk *vk, bool *simple)
{
	const char *env = getenv("TERN_VK_VARIANT");
	if (!env || !*env) {
		*simple = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
		return TERN_OK;
	}
	if (strcmp(env, "tiled") && strcmp(env, "simple"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_VARIANT=%s: must be tiled or simple (or unset)",
				 env);
	*simple = strcmp(env, "simple") == 0;
	return TERN_OK;
}

#define SIMPLE_TM 8 /* rows per invocation: TM in the simple shaders */
#define SIMPLE_TN 8 /* columns per workgroup: TN there */
#define SIMPLE_WG 8 /* invocations per workgroup */

/* ---- matmul ------------------------------------------------------------------------------ */

struct mm_push {
	uint32_t T, N, K;
	uint32_t y_off, ldy;
	uint32_t x_off, ldx, xk0;
	uint32_t r0, I, pos;
	uint32_t absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint32_t accumulate;
	uint32_t f16, xmax_off; /* shaders/matvec.comp only */
};

/* The binding of W rows [r0, r0 + rows) and the element position of row r0 inside it
 * (elements are nibbles for NF4, words for ternary). W's data view starts 4-aligned. */
int64_t tern_vk_weight_row_bytes(const struct tern_weight *w)
{
	int64_t I = w->I;
	switch (w->dtype) {
	case TERN_F32: return 4 * I;
	case TERN_F16:
	case TERN_BF16: return 2 * I;
	case TERN_TERNARY: return 4 * tern_ternary_row_words(I);
	default: return (I + 1) / 2 + 1; /* NF4, NF4_DQ */
	}
}

struct tern_vk_wscales tern_vk_weight_scales(struct tern_vk *vk, const struct tern_weight *w)
{
	struct tern_vk_wscales s = {
		.absmax = w->absmax, .nested = w->nested, .dmap = {vk->consts, 0, 256 * 4}};
	s.absmax_off = s.absmax.buf ? tern_vk_place(vk, &s.absmax) / 4 : 0;
	s.nested_off = s.nested.buf ? tern_vk_place(vk, &s.nested) / 4 : 0;
	s.dmap_off = tern_vk_place(vk, &s.dmap) / 4;
	return s;
}

struct tern_view tern_vk_weight_rows(struct tern_vk *vk, const struct tern_weight *w, int64_t r0,
				     int64_t rows, uint32_t *pos)
{
	int64_t rw = tern_ternary_row_words(w->I);
	int64_t g0 = r0 * w->I, g1 = (r0 + rows) * w->I;
	size_t b0, b1; /* the chunk's bytes */
	switch (w->dtype) {
	case TERN_F32: b0 = (size_t)g0 * 4, b1 = (size_t)g1 * 4; break;
	case TERN_F16:
	case TERN_BF16: b0 = (size_t)g0 * 2, b1 = (size_t)g1 * 2; break;
	case TERN_TERNARY: b0 = (size_t)(r0 * rw) * 4, b1 = (size_t)((r0 + rows) * rw) * 4; break;
	default: b0 = (size_t)g0 / 2, b1 = (size_t)(g1 + 1) / 2; break;
	}
	if (b1 > w->data.size)
		b1 = w->data.size;
	size_t a0 = b0 / 4 * 4;
	struct tern_view v = tern_view_sub(w->data, a0, b1 - a0);
	size_t lead = tern_vk_place(vk, &v) + (b0 - a0); /* bytes from the binding start to b0 */
	switch (w->dtype) {
	case TERN_F32:
	case TERN_TERNARY: *pos = (uint32_t)(lead / 4); break;
	case TERN_F16:
	case TERN_BF16: *pos = (uint32_t)(lead / 2); break;
	default: *pos = (uint32_t)(lead * 2 + (size_t)(g0 & 1)); break;
	}
	return v;
}

#define VEC_TM 8 /* TM in shaders/matmul_vec.comp (its TN is 8, its WG is SIMPLE_WG) */

/* Whether one dispatch can take shaders/matmul_vec.comp: an f32/f16/bf16 weight with every input
 * row, weight row piece and the reduction on 16-byte boundaries in whole 16-byte loads, or an
 * NF4/NF4-DQ weight read a word (8 codes of one absmax block) at a time. */
static bool mm_vec_ok(enum tern_dtype dt, const struct mm_push *p, bool bwd)
{
	bool nf4 = dt == TERN_NF4 || dt == TERN_NF4_DQ;
	if (dt != TERN_F32 && dt != TERN_F16 && dt != TERN_BF16 && !nf4)
		return false;
	if (nf4 && p->blocksize % 8) /* 8 codes at a time share one absmax block */
		return false;
	uint32_t wal = dt == TERN_F32 ? 4 : 8; /* elements per 16 bytes (NF4: per word) of W */
	if (p->x_off % 4 || p->ldx % 4 || p->xk0 % 4 || p->I % 8 || p->pos % wal)
		return false;
	return bwd ? p->K % 4 == 0 : p->K % 8 == 0;
}

/* The pipelines of matmul ([0]) and matmul_bwd ([1]) per weight dtype: tiled (GPUs), simple
 * (CPU-type devices) and vec (simple with 16-byte loads; f32/f16/bf16/nf4/nf4-dq only). */
static const enum tern_vk_pipe mm_tiled[2][TERN_DTYPE_COUNT] = {TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MATMUL),
								TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MATMUL_BWD)};
static const enum tern_vk_pipe mm_simple[2][TERN_DTYPE_COUNT] = {
	TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MATMUL_SIMPLE), TERN_VK_PIPES_BY_DTYPE(TERN_PIPE_MATMUL_BWD_SIMPLE)};
static const enum tern_vk_pipe mm_vec[2][TERN_DTYPE_COUNT] = {
	{[TERN_F32] = TERN_PIPE_MATMUL_VEC_F32,
	 [TERN_F16] = TERN_PIPE_MATMUL_VEC_F16,
	 [TERN_BF16] = TERN_PIPE_MATMUL_VEC_BF16,
	 [TERN_NF4] = TERN_PIPE_MATMUL_VEC_NF4,
	 [TERN_NF4_DQ] = TERN_PIPE_MATMUL_VEC_NF4_DQ,
	 [TERN_TERNARY] = TERN_PIPE_COUNT}, /* none: mm_vec_ok refuses ternary */
	{[TERN_F32] = TERN_PIPE_MATMUL_BWD_VEC_F32,
	 [TERN_F16] = TERN_PIPE_MATMUL_BWD_VEC_F16,
	 [TERN_BF16] = TERN_PIPE_MATMUL_BWD_VEC_BF16,
	 [TERN_NF4] = TERN_PIPE_MATMUL_BWD_VEC_NF4,
	 [TERN_NF4_DQ] = TERN_PIPE_MATMUL_BWD_VEC_NF4_DQ,
	 [TERN_TERNARY] = TERN_PIPE_COUNT},
};

/* shaders/matvec.comp per weight dtype (none for ternary), for the forward of at most MV_TMAX
 * tokens on every device type: its workgroup takes MV_NR features, its invocations split the
 * reduction (vk_matmul). */
#define MV_TMAX 4
#define MV_NR 4
static const enum tern_vk_pipe mm_matvec[TERN_DTYPE_COUNT] = {
	[TERN_F32] = TERN_PIPE_MATVEC_F32,       [TERN_F16] = TERN_PIPE_MATVEC_F16,
	[TERN_BF16] = TERN_PIPE_MATVEC_BF16,     [TERN_NF4] = TERN_PIPE_MATVEC_NF4,
	[TERN_NF4_DQ] = TERN_PIPE_MATVEC_NF4_DQ, [TERN_TERNARY] = TERN_PIPE_COUNT};

/* A matmul pipeline and the block one workgroup computes: wn output features (p->N) x wt tokens. */
struct mm_pick {
	enum tern_vk_pipe pipe;
	uint32_t wn, wt;
};

/* The pipeline for one placed dispatch: on a CPU-type device (tern_vk_simple) the vec variant
 * when the dtype and the placed push block allow 16-byte loads (mm_vec_ok), else the simple one;
 * the tiled one on GPUs. */
static enum tern_status pick_matmul(struct tern_vk *vk, bool bwd, enum tern_dtype dt, const struct mm_push *p,
				    struct mm_pick *out)
{
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	if (st)
		return st;
	if (simple && mm_vec_ok(dt, p, bwd))
		*out = (struct mm_pick){mm_vec[bwd][dt], 8, VEC_TM * SIMPLE_WG};
	else if (simple)
		*out = (struct mm_pick){mm_simple[bwd][dt], SIMPLE_TN, SIMPLE_TM * SIMPLE_WG};
	else
		*out = (struct mm_pick){mm_tiled[bwd][dt], 32, 32};
	return TERN_OK;
}

/* The matmul (bwd: matmul_bwd) in chunks of W rows and tokens that fit the bindings. mv: the
 * forward through shaders/matvec.comp (1: fp32 products; 2: precision F16, the input's max bits
 * in aux word 0), which every chunk must be able to take (mm_vec_ok): with mv_ok non-NULL nothing
 * is recorded and *mv_ok says whether they all can. */
static enum tern_status mm_run(struct tern_vk *vk, bool bwd, struct tern_view out, struct tern_view in,
			       const struct tern_weight *w, int64_t T, bool accumulate, int mv, bool *mv_ok)
{
	const char *op = bwd ? "matmul_bwd" : "matmul";
	enum tern_status st;
	int64_t O = w->O, I = w->I;
	int64_t out_cols = bwd ? I : O, in_cols = bwd ? O : I;
	if (w->data.off % 4 || (w->absmax.buf && w->absmax.off % 4) || (w->nested.buf && w->nested.off % 4))
		return tern_fail(TERN_E_INVALID,
				 "vulkan: %s: weight views must start at a multiple of 4 bytes", op);
	if (T == 0 || O == 0 || I == 0)
		return TERN_OK;

	/* rows of W per chunk and tokens per chunk so every binding fits */
	int64_t rows = tern_vk_fit(vk, tern_vk_weight_row_bytes(w)) - 1,
		tc = tern_vk_fit(vk, 4 * (O > I ? O : I));
	if (rows < 1 || tc < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of W [%lld, %lld] exceeds maxStorageBufferRange", op,
				 (long long)O, (long long)I);
	struct tern_vk_wscales ws = tern_vk_weight_scales(vk, w);
	struct mm_push p = {
		.K = (uint32_t)(bwd ? 0 : I),
		.ldy = (uint32_t)out_cols,
		.ldx = (uint32_t)in_cols,
		.I = (uint32_t)I,
		.blocksize = (uint32_t)w->blocksize,
		.offset = w->offset,
		.scale = w->scale,
		.absmax_off = ws.absmax_off,
		.nested_off = ws.nested_off,
		.dmap_off = ws.dmap_off,
	};
	struct tern_view xmax = {vk->aux, 0, 4};
	p.f16 = mv == 2;
	p.xmax_off = tern_vk_place(vk, &xmax) / 4;
	if (mv_ok)
		*mv_ok = mm_matvec[w->dtype] != TERN_PIPE_COUNT && !bwd && T <= MV_TMAX;
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view y =
			tern_view_sub(out, (size_t)(t0 * out_cols * 4), (size_t)(tn * out_cols * 4));
		struct tern_view x =
			tern_view_sub(in, (size_t)(t0 * in_cols * 4), (size_t)(tn * in_cols * 4));
		p.y_off = tern_vk_place(vk, &y) / 4;
		p.x_off = tern_vk_place(vk, &x) / 4;
		p.T = (uint32_t)tn;
		for (int64_t r0 = 0; r0 < O; r0 += rows) {
			int64_t rn = O - r0 < rows ? O - r0 : rows;
			struct tern_view wd = tern_vk_weight_rows(vk, w, r0, rn, &p.pos);
			p.r0 = (uint32_t)r0;
			if (bwd) {
				p.N = (uint32_t)I;
				p.K = (uint32_t)rn;
				p.xk0 = (uint32_t)r0;
				p.accumulate = accumulate || r0 > 0;
			} else {
				p.N = (uint32_t)rn;
			}
			if (mv_ok) {
				*mv_ok = *mv_ok && mm_vec_ok(w->dtype, &p, false);
				continue;
			}
			if (mv) {
				struct tern_view mb[7] = {y, x, wd, ws.absmax, ws.nested, ws.dmap, xmax};
				uint32_t g = groups(p.N, MV_NR), gx = g < 65535 ? g : 65535;
				if ((st = tern_vk_dispatch(vk, mm_matvec[w->dtype], mb, 7, &p, sizeof p, gx,
							   groups(g, gx), 1)))
					return st;
				continue;
			}
			struct tern_view b[6] = {y, x, wd, ws.absmax, ws.nested, ws.dmap};
			struct mm_pick pk;
			if ((st = pick_matmul(vk, bwd, w->dtype, &p, &pk)) ||
			    (st = tern_vk_dispatch(vk, pk.pipe, b, 6, &p, sizeof p, groups(p.N, pk.wn),
						   groups(tn, pk.wt), 1)))
				return st;
		}
	}
	return TERN_OK;
}

/* prec F32: the fp32 shaders above; F16: vk_mm.c (tensor cores where the device has them). */
static enum tern_status vk_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	struct tern_vk *vk = tern_vk_of(be);
	/* a few tokens (decoding): the matrix-vector shader, which reads W once at full width;
	 * TERN_DECODE_LEGACY=1 keeps the GEMM shaders below (before/after measurements) */
	bool mv = false;
	enum tern_status st;
	if (T > 0 && T <= MV_TMAX && !tern_decode_legacy() && (prec == TERN_F32 || prec == TERN_F16) &&
	    (st = mm_run(vk, false, y, x, w, T, false, 1, &mv)))
		return st;
	if (mv && prec == TERN_F16 && (st = tern_vk_absmax(vk, x, T * w->I, 0)))
		return st;
	if (mv)
		return mm_run(vk, false, y, x, w, T, false, prec == TERN_F16 ? 2 : 1, NULL);
	if (prec == TERN_F16 && T > 0)
		return tern_vk_mm16(vk, false, y, x, w, T, false, NULL);
	return mm_run(vk, false, y, x, w, T, false, 0, NULL);
}

/* matmul_multi (backend.h): at F16 past decoding's few tokens, x's scale pass and f16 copy once
 * for the n products (vk_matmul makes them for each), each with its LoRA term where lt has one;
 * otherwise vk_matmul n times (the front door lets terms through only where vk_lora_fuses does:
 * F16 past decoding). */
static enum tern_status vk_matmul_multi(struct tern_backend *be, const struct tern_view *y,
					struct tern_view x, const struct tern_weight *const *w,
					const struct tern_lora_term *lt, int n, int64_t T,
					enum tern_dtype prec)
{
	if (prec == TERN_F16 && T > MV_TMAX)
		return tern_vk_mm16_multi(tern_vk_of(be), y, x, w, lt, n, T);
	enum tern_status st = TERN_OK;
	for (int i = 0; st == TERN_OK && i < n; i++)
		st = vk_matmul(be, y[i], x, w[i], T, prec);
	return st;
}

static enum tern_status vk_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      const struct tern_weight *w, int64_t T, bool accumulate,
				      enum tern_dtype prec)
{
	struct tern_vk *vk = tern_vk_of(be);
	if (prec == TERN_F16 && T > 0)
		return tern_vk_mm16(vk, true, dx, dy, w, T, accumulate, NULL);
	return mm_run(vk, true, dx, dy, w, T, accumulate, 0, NULL);
}

/* The LoRA linear's rank-R updates inside the F16 products (backend.h matmul_lora): R more steps
 * of the reduction before the main loop (the -DLORA variants of shaders/mm.comp), so the
 * composition's two gemms that read and write the whole output again go. Not for decoding
 * (T <= MV_TMAX: the matrix-vector shader), nor where B [O,R] or A [R,I], one binding each, or a
 * token chunk of u (the products' chunks of [T, max(O, I)]) would pass maxStorageBufferRange.
 * On unless TERN_VK_LORA_FUSE=0: on an H100 the 8B step 1.02x and the 1B 1.045x (docs/PERFORMANCE.md
 * 2026-12-06 20:12); its results are tested (test_ops lora_fused, matmul_multi). */
static bool vk_lora_fuses(struct tern_backend *be, const struct tern_weight *w, int64_t R, int64_t T,
			  enum tern_dtype prec)
{
	const char *e = getenv("TERN_VK_LORA_FUSE");
	struct tern_vk *vk = tern_vk_of(be);
	int64_t P = w->O > w->I ? w->O : w->I;
	return !(e && !strcmp(e, "0")) && prec == TERN_F16 && vk->fp16 && T > MV_TMAX && R >= 1 && R <= P &&
	       (uint64_t)(R * P) * 4 <= vk->max_range;
}

static enum tern_status vk_matmul_lora(struct tern_backend *be, struct tern_view y, struct tern_view x,
				       struct tern_view u, struct tern_view B, const struct tern_weight *w,
				       int64_t R, float scale, int64_t T, enum tern_dtype prec)
{
	(void)prec; /* F16: lora_fuses accepts nothing else */
	struct tern_lora_term lo = {u, B, R, scale};
	return tern_vk_mm16(tern_vk_of(be), false, y, x, w, T, false, &lo);
}

static enum tern_status vk_matmul_lora_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					   struct tern_view du, struct tern_view A,
					   const struct tern_weight *w, int64_t R, int64_t T, bool accumulate,
					   enum tern_dtype prec)
{
	(void)prec;
	struct tern_lora_term lo = {du, A, R, 1.0f}; /* du, A in u, B's places */
	return tern_vk_mm16(tern_vk_of(be), true, dx, dy, w, T, accumulate, &lo);
}

/* F32 everywhere; F16 where the device has 16-bit floats (vk_mm.c); no bf16 products yet (they
 * need GL_EXT_bfloat16, glslang >= 15.3). */
static bool vk_supports_prec(struct tern_backend *be, enum tern_op op, enum tern_dtype prec)
{
	if (op == TERN_OP_GEMM) /* the LoRA kernels are fp32 */
		return prec == TERN_F32;
	return prec == TERN_F32 || (prec == TERN_F16 && tern_vk_of(be)->fp16);
}

/* f16 on GPUs that have it; f32 on CPU-type devices (lavapipe), where it is as fast. */
static enum tern_dtype vk_auto_prec(struct tern_backend *be)
{
	struct tern_vk *vk = tern_vk_of(be);
	return vk->fp16 && vk->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU ? TERN_F16 : TERN_F32;
}

/* ---- gemm -------------------------------------------------------------------------------- */

struct gemm_push {
	uint32_t M, N, K;
	uint32_t c_off, ldc;
	uint32_t a_off, sam, sak;
	uint32_t b_off, sbk, sbn;
	float alpha, beta;
};

/* Mirrors the push block of shaders/gemm_simple.comp (C has a stride per dimension). */
struct gemm_simple_push {
	uint32_t M, N, K;
	uint32_t c_off, scm, scn;
	uint32_t a_off, sam, sak;
	uint32_t b_off, sbk, sbn;
	float alpha, beta;
};

/* The simple variant of one placed gemm: rows of C run across invocations, so when N > M it
 * computes C^T = B^T A^T (A and B swap bindings and roles, C is written transposed). */
static enum tern_status gemm_simple(struct tern_vk *vk, struct tern_view C, struct tern_view A,
				    struct tern_view B, const struct gemm_push *g)
{
	struct gemm_simple_push p = {
		.M = g->M,
		.N = g->N,
		.K = g->K,
		.c_off = g->c_off,
		.scm = g->ldc,
		.scn = 1,
		.a_off = g->a_off,
		.sam = g->sam,
		.sak = g->sak,
		.b_off = g->b_off,
		.sbk = g->sbk,
		.sbn = g->sbn,
		.alpha = g->alpha,
		.beta = g->beta,
	};
	struct tern_view b[3] = {C, A, B};
	if (g->N > g->M) {
		p = (struct gemm_simple_push){
			.M = g->N,
			.N = g->M,
			.K = g->K,
			.c_off = g->c_off,
			.scm = 1,
			.scn = g->ldc,
			.a_off = g->b_off,
			.sam = g->sbn,
			.sak = g->sbk,
			.b_off = g->a_off,
			.sbk = g->sak,
			.sbn = g->sam,
			.alpha = g->alpha,
			.beta = g->beta,
		};
		b[1] = B;
		b[2] = A;
	}
	return tern_vk_dispatch(vk, TERN_PIPE_GEMM_SIMPLE, b, 3, &p, sizeof p, groups(p.N, SIMPLE_TN),
				groups(p.M, SIMPLE_TM * SIMPLE_WG), 1);
}

/* gemm_simple on a CPU-type device (tern_vk_simple), the tiled gemm on GPUs; the shape does not
 * matter (gemm_simple transposes the product itself when N > M). */
static enum tern_status pick_gemm(struct tern_vk *vk, enum tern_vk_pipe *pipe)
{
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	*pipe = simple ? TERN_PIPE_GEMM_SIMPLE : TERN_PIPE_GEMM;
	return st;
}

#define GEMM_LR_RMAX 32 /* 4 RV of the _r32 variants of shaders/gemm_lr.comp (16 for the others) */

/* Mirrors the push block of shaders/gemm_lr.comp. */
struct gemm_lr_push {
	uint32_t M, N, K;
	uint32_t c_off, scm, scn;
	uint32_t a_off, sam, sak;
	uint32_t b_off, sbk, sbn;
	float alpha, beta;
	uint32_t kc, part_off, splits;
	uint32_t vec;
};

/* How a low-rank product (gemm_lr.comp) runs: its pipeline, its rows per group, and for the
 * split-K kinds the groups wanted per multiprocessor and the granule of a split (CK); last_adds:
 * the last group of each row block adds the split partials (TKP) instead of a REDUCE pass. */
struct lr_plan {
	enum tern_vk_pipe pipe;
	uint32_t rows, per_sm, ck; /* WIDE / WV: per_sm is the columns per group */
	bool last_adds;
};

/* TKP's arrival counters: n words, zero when a dispatch starts (each leaves them zero again), in a
 * buffer of the backend grown on first need. Every dispatch that binds them writes them, so
 * tern_vk_dispatch's dependency check puts a barrier between any two: they never run at once. */
static enum tern_status lr_counters(struct tern_vk *vk, uint32_t n, struct tern_view *out)
{
	size_t bytes = (size_t)(n < 1024 ? 1024 : n) * 4;
	if (!vk->lr_cnt || vk->lr_cnt->size < bytes) {
		enum tern_status st = tern_vk_scratch(vk, &vk->lr_cnt, bytes);
		if (!st)
			st = tern_vk_zero(&vk->base, (struct tern_view){vk->lr_cnt, 0, bytes});
		if (st) {
			tern_vk_buffer_free(&vk->base, vk->lr_cnt);
			vk->lr_cnt = NULL;
			return st;
		}
	}
	*out = (struct tern_view){vk->lr_cnt, 0, (size_t)n * 4};
	return TERN_OK;
}

/* A split-K variant of shaders/gemm_lr.comp (ROWK, ROWM, TK, TKP, TM) over `gx` groups of rows,
 * with k split into chunks of a multiple of lp->ck when that brings the groups to lp->per_sm per
 * multiprocessor (these shapes are bound by loads in flight, not arithmetic: rounded up, or down
 * to one wave of groups for TKP); the split partials are added in the order of the chunks, by
 * REDUCE or (lp->last_adds) by the last group of each row block, so the result does not depend
 * on timing. */
static enum tern_status gemm_lr_split(struct tern_vk *vk, const struct lr_plan *lp, struct tern_view C,
				      struct tern_view b[3], struct gemm_lr_push *p, uint32_t gx)
{
	uint64_t slots = (uint64_t)lp->per_sm * vk->sm_count;
	uint32_t want = (uint32_t)(lp->last_adds ? slots / gx : (slots + gx - 1) / gx);
	uint32_t most = p->K / lp->ck, splits = want < most ? want : most;
	splits = splits > 64 ? 64 : splits;
	if (splits < 2 && !lp->last_adds)
		return tern_vk_dispatch(vk, lp->pipe, b, 3, p, sizeof *p, gx, 1, 1);
	if (splits >= 2) /* else TKP unsplit (kc 0): its partials and counters bound, untouched */
		p->kc = (uint32_t)tern_cdiv(tern_cdiv(p->K, splits), lp->ck) * lp->ck;
	splits = p->kc ? (uint32_t)tern_cdiv(p->K, p->kc) : 1;
	p->splits = splits;
	size_t bytes = p->kc ? (size_t)splits * p->M * p->N * 4 : 4;
	enum tern_status st = tern_vk_scratch(vk, &vk->mm_part, bytes);
	if (st)
		return st;
	/* TKP binds real buffers even unsplit: the shader declares both writable, and a dummy
	 * binding would look written by one dispatch and read by the next to the synchronization
	 * checks (test_golden_vk_sync) */
	struct tern_view b5[5] = {C, b[1], b[2], {vk->mm_part, 0, bytes}};
	if (lp->last_adds) {
		if ((st = lr_counters(vk, gx, &b5[4])))
			return st;
		return tern_vk_dispatch(vk, lp->pipe, b5, 5, p, sizeof *p, gx, splits, 1);
	}
	if ((st = tern_vk_dispatch(vk, lp->pipe, b5, 4, p, sizeof *p, gx, splits, 1)))
		return st;
	return tern_vk_dispatch(vk, TERN_PIPE_GEMM_LR_REDUCE, b5, 4, p, sizeof *p,
				tern_vk_grid((int64_t)p->M * p->N, 256, 1024), 1, 1);
}

/* The gemm_lr push block of a placed gemm, or of its transpose C^T = B^T A^T (tr: B's roles as A,
 * A's as B, C written transposed). */
static struct gemm_lr_push lr_push(const struct gemm_push *g, bool tr)
{
	return (struct gemm_lr_push){.M = tr ? g->N : g->M,
				     .N = tr ? g->M : g->N,
				     .K = g->K,
				     .c_off = g->c_off,
				     .scm = tr ? 1 : g->ldc,
				     .scn = tr ? g->ldc : 1,
				     .a_off = tr ? g->b_off : g->a_off,
				     .sam = tr ? g->sbn : g->sam,
				     .sak = tr ? g->sbk : g->sak,
				     .b_off = tr ? g->a_off : g->b_off,
				     .sbk = tr ? g->sak : g->sbk,
				     .sbn = tr ? g->sam : g->sbn,
				     .alpha = g->alpha,
				     .beta = g->beta};
}

enum tern_status tern_vk_gen(const char *var, int *gen)
{
	const char *env = getenv(var);
	*gen = 2;
	if (!env || !*env)
		return TERN_OK;
	if (strcmp(env, "v1") && strcmp(env, "v2"))
		return tern_fail(TERN_E_INVALID, "%s=%s: must be v1 or v2 (or unset)", var, env);
	*gen = env[1] - '0';
	return TERN_OK;
}

enum lr_kind {
	LR_WIDE, /* K <= RMAX: y += u B^T, dx += du A */
	LR_ROWK, /* N <= RMAX, A's k contiguous: u = x A^T, du = dy B (reduction over I or O) */
	LR_ROWM, /* N <= RMAX, A's m contiguous: dB^T-like and dA^T = x^T du (reduction over T) */
};

/* TKP, TK's successor for u = x A^T and du = dy B (gemm_lr.comp -DTKP) at rank r and reduction
 * length len: 128 or 64 rows a group (TNR x 32), 128 or 64 k a chunk (TS x 32), one group per
 * multiprocessor, the split rounded down to one wave (TERN_VK_LR_PER_SM still overrides). At rank
 * <= 16 the 2x4 tile up to K = 8192 and 4x4 above, 4x2 above rank 16. H100, M = 2048, R = 16
 * (docs/PERFORMANCE.md 2026-12-06 14:33): at K = 4096 TK 0.0553 ms, TKP 4x4 0.0347, 4x2 0.0347,
 * 2x4 0.0313; at K = 14336 TK 0.1749, 4x4 0.0855, 4x2 0.0904, 2x4 0.0957; two groups per
 * multiprocessor lost (0.052, 0.115). TERN_VK_LORA_TK=old keeps TK (*out untouched) and
 * TERN_VK_TK_TILE=4x4|4x2|2x4 picks the tile, so that one GPU session can time them; a bad value
 * is refused in one line. */
static enum tern_status pick_tkp(uint32_t r, uint32_t len, struct lr_plan *out)
{
	static const struct {
		const char *name;
		uint32_t nr, ts;
		enum tern_vk_pipe r16, r32;
	} tiles[] = {
		{"4x4", 4, 4, TERN_PIPE_GEMM_LR_TKP_4X4, TERN_PIPE_GEMM_LR_TKP_R32_4X4},
		{"4x2", 4, 2, TERN_PIPE_GEMM_LR_TKP_4X2, TERN_PIPE_GEMM_LR_TKP_R32_4X2},
		{"2x4", 2, 4, TERN_PIPE_GEMM_LR_TKP_2X4, TERN_PIPE_GEMM_LR_TKP_R32_2X4},
	};
	const char *gen = getenv("TERN_VK_LORA_TK"), *tile = getenv("TERN_VK_TK_TILE");
	if (gen && *gen && strcmp(gen, "new")) {
		if (strcmp(gen, "old"))
			return tern_fail(TERN_E_INVALID, "TERN_VK_LORA_TK=%s: must be old or new (or unset)",
					 gen);
		return TERN_OK;
	}
	size_t k = r > 16 ? 1 : len > 8192 ? 0 : 2;
	if (tile && *tile) {
		for (k = 0; k < sizeof tiles / sizeof tiles[0] && strcmp(tile, tiles[k].name); k++)
			;
		if (k == sizeof tiles / sizeof tiles[0])
			return tern_fail(TERN_E_INVALID,
					 "TERN_VK_TK_TILE=%s: must be 4x4, 4x2 or 2x4 (or unset)", tile);
	}
	*out = (struct lr_plan){r <= 16 ? tiles[k].r16 : tiles[k].r32, 32 * tiles[k].nr, 1, 32 * tiles[k].ts,
				true};
	return TERN_OK;
}

/* TM's split partials (dB^T-like and dA^T = x^T du, split over T) added by the REDUCE pass (the
 * default) or, with TERN_VK_LORA_TM=last, by the last group of each row block as TKP's (TML: no
 * second dispatch and its barrier, about 450 of them in an 8B step; the 8B step 0.981x on an H100,
 * docs/PERFORMANCE.md 2026-12-07 07:27); a bad value is refused in one line. */
static enum tern_status pick_tm(struct lr_plan *out)
{
	const char *e = getenv("TERN_VK_LORA_TM");
	if (!e || !*e || !strcmp(e, "reduce"))
		return TERN_OK;
	if (strcmp(e, "last"))
		return tern_fail(TERN_E_INVALID, "TERN_VK_LORA_TM=%s: must be reduce or last (or unset)", e);
	out->pipe = out->pipe == TERN_PIPE_GEMM_LR_TM ? TERN_PIPE_GEMM_LR_TML : TERN_PIPE_GEMM_LR_TML_R32;
	out->last_adds = true;
	return TERN_OK;
}

/* The pipeline for a low-rank product of kind `kind` with `r` columns (or K) of rank; `len` is
 * the long dimension the split-K kinds run over (ROWK: K, the reduction; ROWM: M). */
static enum tern_status pick_gemm_lr(struct tern_vk *vk, enum lr_kind kind, uint32_t r, uint32_t len,
				     struct lr_plan *out)
{
	/* v2 (TK or TKP, TM, WV; the default) or v1 (ROWK, ROWM, WIDE, before): TERN_VK_LORA=v1|v2, so that
	 * one GPU session can time both (tools/bench_gpu.sh --kernels-ab). (A v3, TK without split-K,
	 * lost to TK on the H200: the 8B step 0.967x; docs/PERFORMANCE.md 2026-12-06 09:51.) */
	int gen = 2;
	enum tern_status st = tern_vk_gen("TERN_VK_LORA", &gen);
	if (st)
		return st;
	bool r16 = r <= 16;
	/* v1's ROWK_R32 holds 48 KiB of shared memory (lavapipe has 32) */
	if (gen == 1 && kind == LR_ROWK && !r16 && vk->props.limits.maxComputeSharedMemorySize < 49152)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "TERN_VK_LORA=v1: its rank-32 kernel needs 48 KiB of shared memory, this "
				 "device has %u bytes; use v2",
				 vk->props.limits.maxComputeSharedMemorySize);
	switch (kind) {
	case LR_WIDE:
		/* v1: 64 x 128 tiles, one column an invocation; v2: 32 x 256, four */
		*out = gen == 1 ? (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_WIDE : TERN_PIPE_GEMM_LR_WIDE_R32,
						   64, 128, 0, false}
				: (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_WV : TERN_PIPE_GEMM_LR_WV_R32, 32,
						   256, 0, false};
		break;
	case LR_ROWK:
		/* v1: 32 rows per group, eight groups per multiprocessor; v2: TKP (pick_tkp), or
		 * with TERN_VK_LORA_TK=old TK: 128 rows, one group per multiprocessor up to K = 8192 and two
		 * above (H100, M = 2048: at K = 4096 one gave 0.054 ms against 0.060 with two and 0.072
		 * with four, the rule before; at K = 14336 two gave 0.174 against 0.208 and 0.188;
		 * docs/PERFORMANCE.md 2026-12-06 07:50) */
		*out = gen == 1 ? (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_ROWK : TERN_PIPE_GEMM_LR_ROWK_R32,
						   32, 8, 128, false}
				: (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_TK : TERN_PIPE_GEMM_LR_TK_R32, 128,
						   len > 8192 ? 2 : 1, 128, false};
		if (gen == 2) /* TKP unless TERN_VK_LORA_TK=old */
			return pick_tkp(r, len, out);
		break;
	case LR_ROWM:
		/* 256 rows per group, a long reduction (K = T), two groups per multiprocessor (each
		 * split adds M x N partials to write and read again: at M = 2048 and T = 2048, 32
		 * splits would be half as many bytes as A itself); v1 splits in chunks of 128, v2 of 64,
		 * v2 with one group per multiprocessor up to M = 8192 (H100, T = 2048: at M = 4096
		 * 0.029 ms against 0.041; at M = 14336 two stay, 0.091 against 0.098) */
		*out = gen == 1 ? (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_ROWM : TERN_PIPE_GEMM_LR_ROWM_R32,
						   256, 2, 128, false}
				: (struct lr_plan){r16 ? TERN_PIPE_GEMM_LR_TM : TERN_PIPE_GEMM_LR_TM_R32, 256,
						   len > 8192 ? 2 : 1, 64, false};
		if (gen == 2) /* TM's splits added by a REDUCE pass, or by its last group (TML) */
			return pick_tm(out);
		break;
	}
	return TERN_OK;
}

/* The low-rank variants of shaders/gemm_lr.comp for one placed GPU gemm, when one of M, N, K is
 * at most GEMM_LR_RMAX (a LoRA product; rank 16 or less takes the variants with 16 columns of
 * registers): WIDE when K is, else ROWK / ROWM (TKP or TK / TM) by which of A's dimensions is
 * contiguous; M <= RMAX runs as the transposed product. *done is false when none applies (the
 * tiled gemm runs). */
static enum tern_status gemm_lowrank(struct tern_vk *vk, struct tern_view C, struct tern_view A,
				     struct tern_view B, const struct gemm_push *g, bool *done)
{
	struct lr_plan lp = {TERN_PIPE_COUNT, 0, 0, 0, false};
	enum tern_status st;
	*done = true;
	if (g->K <= GEMM_LR_RMAX) {
		struct gemm_lr_push p = lr_push(g, false);
		struct tern_view b[3] = {C, A, B};
		if ((st = pick_gemm_lr(vk, LR_WIDE, p.K, 0, &lp)))
			return st;
		p.vec = p.scn == 1 && p.c_off % 4 == 0 && p.scm % 4 == 0 && p.N % 4 == 0; /* WV */
		return tern_vk_dispatch(vk, lp.pipe, b, 3, &p, sizeof p, groups(p.N, lp.per_sm),
					groups(p.M, lp.rows), 1);
	}
	bool tr = g->N > GEMM_LR_RMAX && g->M <= GEMM_LR_RMAX;
	struct gemm_lr_push p = lr_push(g, tr);
	struct tern_view b[3] = {C, tr ? B : A, tr ? A : B};
	enum lr_kind kind;
	if (p.N <= GEMM_LR_RMAX && p.sak == 1) {
		kind = LR_ROWK;
		p.vec = p.a_off % 4 == 0 && p.sam % 4 == 0 && p.K % 4 == 0;
	} else if (p.N <= GEMM_LR_RMAX && p.sam == 1) {
		kind = LR_ROWM;
		p.vec = p.a_off % 4 == 0 && p.sak % 4 == 0 && p.M % 4 == 0; /* TM: vec4 along m */
	} else {
		*done = false;
		return TERN_OK;
	}
	if ((st = pick_gemm_lr(vk, kind, p.N, kind == LR_ROWK ? p.K : p.M, &lp)))
		return st;
	/* TERN_VK_LR_PER_SM=N: N groups per multiprocessor for the split-K kinds (timings) */
	const char *env = getenv("TERN_VK_LR_PER_SM");
	if (env && atoi(env) > 0)
		lp.per_sm = (uint32_t)atoi(env);
	return gemm_lr_split(vk, &lp, C, b, &p, groups(p.M, lp.rows));
}

static enum tern_status gemm_one(struct tern_vk *vk, struct tern_view C, struct tern_view A,
				 struct tern_view B, int64_t M, int64_t N, int64_t K, int64_t ldc, bool ta,
				 bool tb, int64_t lda_rows, float alpha, float beta)
{
	struct gemm_push p = {
		.M = (uint32_t)M,
		.N = (uint32_t)N,
		.K = (uint32_t)K,
		.ldc = (uint32_t)ldc,
		/* A(m,k): stored [M,K] -> m*K + k; stored [K,M] (ta) -> k*lda_rows + m */
		.sam = ta ? 1u : (uint32_t)K,
		.sak = ta ? (uint32_t)lda_rows : 1u,
		/* B(k,n): stored [K,N] -> k*N + n; stored [N,K] (tb) -> n*K + k */
		.sbk = tb ? 1u : (uint32_t)N,
		.sbn = tb ? (uint32_t)K : 1u,
		.alpha = alpha,
		.beta = beta,
	};
	p.c_off = tern_vk_place(vk, &C) / 4;
	p.a_off = tern_vk_place(vk, &A) / 4;
	p.b_off = tern_vk_place(vk, &B) / 4;
	enum tern_vk_pipe pipe;
	enum tern_status st = pick_gemm(vk, &pipe);
	if (st)
		return st;
	if (pipe == TERN_PIPE_GEMM_SIMPLE)
		return gemm_simple(vk, C, A, B, &p);
	bool done = false;
	if ((st = gemm_lowrank(vk, C, A, B, &p, &done)) || done)
		return st;
	struct tern_view b[3] = {C, A, B};
	return tern_vk_dispatch(vk, pipe, b, 3, &p, sizeof p, groups(N, 32), groups(M, 32), 1);
}

static enum tern_status vk_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha);

static enum tern_status vk_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
				struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
				float alpha, float beta, enum tern_dtype prec)
{
	(void)prec; /* F32: the only one supports_prec offers here */
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	if (M == 0 || N == 0)
		return TERN_OK;
	if (K == 0)
		return beta == 0 ? tern_vk_zero(be, tern_view_sub(C, 0, (size_t)(M * N * 4)))
				 : vk_scale(be, C, M * N, beta);
	int64_t lim = tern_vk_fit(vk, 1);
	bool fits = M * K * 4 <= lim && K * N * 4 <= lim && M * N * 4 <= lim;
	if (fits)
		return gemm_one(vk, C, A, B, M, N, K, N, ta, tb, M, alpha, beta);
	/* split along M: rows of C and (untransposed) A are contiguous */
	if (!ta && K * N * 4 <= lim) {
		int64_t mc = tern_vk_fit(vk, 4 * (K > N ? K : N));
		for (int64_t m0 = 0; m0 < M && mc > 0; m0 += mc) {
			int64_t mn = M - m0 < mc ? M - m0 : mc;
			st = gemm_one(vk, tern_view_sub(C, (size_t)(m0 * N * 4), (size_t)(mn * N * 4)),
				      tern_view_sub(A, (size_t)(m0 * K * 4), (size_t)(mn * K * 4)), B, mn, N,
				      K, N, ta, tb, mn, alpha, beta);
			if (st)
				return st;
		}
		if (mc > 0)
			return TERN_OK;
	}
	/* split along K: rows of A stored [K,M] and of B stored [K,N] are contiguous */
	if (ta && !tb && M * N * 4 <= lim) {
		int64_t kc = tern_vk_fit(vk, 4 * (M > N ? M : N));
		for (int64_t k0 = 0; k0 < K && kc > 0; k0 += kc) {
			int64_t kn = K - k0 < kc ? K - k0 : kc;
			st = gemm_one(vk, C, tern_view_sub(A, (size_t)(k0 * M * 4), (size_t)(kn * M * 4)),
				      tern_view_sub(B, (size_t)(k0 * N * 4), (size_t)(kn * N * 4)), M, N, kn,
				      N, ta, tb, M, alpha, k0 == 0 ? beta : 1.0f);
			if (st)
				return st;
		}
		if (kc > 0)
			return TERN_OK;
	}
	/* split along M with A stored [K,M]: rows of C are contiguous, A keeps its row stride M and
	 * is bound from column m0 (ce_loss's dW += zᵀ x of a trained lm_head: z and x fit, dW not) */
	if (ta && M * K * 4 <= lim && K * N * 4 <= lim) {
		int64_t mc = tern_vk_fit(vk, 4 * N);
		for (int64_t m0 = 0; m0 < M && mc > 0; m0 += mc) {
			int64_t mn = M - m0 < mc ? M - m0 : mc;
			st = gemm_one(vk, tern_view_sub(C, (size_t)(m0 * N * 4), (size_t)(mn * N * 4)),
				      tern_view_sub(A, (size_t)m0 * 4, (size_t)((K - 1) * M + mn) * 4), B, mn,
				      N, K, N, ta, tb, M, alpha, beta);
			if (st)
				return st;
		}
		if (mc > 0)
			return TERN_OK;
	}
	return tern_fail(
		TERN_E_UNSUPPORTED,
		"vulkan: gemm M=%lld N=%lld K=%lld ta=%d tb=%d: operands exceed maxStorageBufferRange in a "
		"layout tern cannot split",
		(long long)M, (long long)N, (long long)K, ta, tb);
}

/* ---- element-wise ------------------------------------------------------------------------ */

struct ew_push {
	uint32_t n;
	uint32_t y_off, x_off, s_off;
	float alpha;
	uint32_t key_lo, key_hi, threshold;
	uint32_t base;
};

static enum tern_status ew_run(struct tern_vk *vk, enum tern_vk_pipe pipe, struct tern_view y,
			       struct tern_view x, struct tern_view s, int64_t n, struct ew_push p)
{
	int64_t chunk = tern_vk_fit(vk, 4);
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t m = n - i0 < chunk ? n - i0 : chunk;
		struct tern_view yv = tern_view_sub(y, (size_t)i0 * 4, (size_t)m * 4);
		struct tern_view xv = x.buf ? tern_view_sub(x, (size_t)i0 * 4, (size_t)m * 4) : x;
		struct tern_view sv = s;
		p.n = (uint32_t)m;
		p.base = (uint32_t)i0;
		p.y_off = tern_vk_place(vk, &yv) / 4;
		p.x_off = xv.buf ? tern_vk_place(vk, &xv) / 4 : 0;
		p.s_off = sv.buf ? tern_vk_place(vk, &sv) / 4 : 0;
		struct tern_view b[3] = {yv, xv, sv};
		enum tern_status st = tern_vk_dispatch(vk, pipe, b, 3, &p, sizeof p, grid(m), 1, 1);
		if (st)
			return st;
	}
	return TERN_OK;
}

static enum tern_status vk_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				   float p, uint64_t key)
{
	struct ew_push pc = {
		.alpha = 1.0f / (1.0f - p),
		.key_lo = (uint32_t)key,
		.key_hi = (uint32_t)(key >> 32),
		.threshold = tern_dropout_threshold(p),
	};
	return ew_run(tern_vk_of(be), TERN_PIPE_DROPOUT, y, x, (struct tern_view){0}, n, pc);
}

static enum tern_status vk_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				float alpha)
{
	return ew_run(tern_vk_of(be), TERN_PIPE_AXPY, y, x, (struct tern_view){0}, n,
		      (struct ew_push){.alpha = alpha});
}

static enum tern_status vk_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha)
{
	return ew_run(tern_vk_of(be), TERN_PIPE_SCALE, x, (struct tern_view){0}, (struct tern_view){0}, n,
		      (struct ew_push){.alpha = alpha});
}

static enum tern_status vk_clip(struct tern_backend *be, struct tern_view x, int64_t n,
				struct tern_view sumsq, float max_norm)
{
	return ew_run(tern_vk_of(be), TERN_PIPE_CLIP, x, (struct tern_view){0}, tern_view_sub(sumsq, 0, 4), n,
		      (struct ew_push){.alpha = max_norm});
}

/* ---- AdamW ------------------------------------------------------------------------------- */

struct adamw_push {
	uint32_t n;
	uint32_t p_off, g_off, m_off, v_off;
	float decay, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
	uint32_t use_decay;
};

static enum tern_status vk_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
				 struct tern_view m, struct tern_view v, int64_t n,
				 const struct tern_adamw_args *a)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	struct tern_adamw_consts c = tern_adamw_consts(a);
	struct adamw_push p = {
		.decay = c.decay,
		.one_minus_b1 = c.one_minus_b1,
		.b2 = c.b2,
		.one_minus_b2 = c.one_minus_b2,
		.step_size = c.step_size,
		.bc2_sqrt = c.bc2_sqrt,
		.eps = c.eps,
		.use_decay = a->weight_decay != 0.0f,
	};
	int64_t chunk = tern_vk_fit(vk, 4);
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t k = n - i0 < chunk ? n - i0 : chunk;
		struct tern_view b[4] = {tern_view_sub(param, (size_t)i0 * 4, (size_t)k * 4),
					 tern_view_sub(grad, (size_t)i0 * 4, (size_t)k * 4),
					 tern_view_sub(m, (size_t)i0 * 4, (size_t)k * 4),
					 tern_view_sub(v, (size_t)i0 * 4, (size_t)k * 4)};
		p.n = (uint32_t)k;
		p.p_off = tern_vk_place(vk, &b[0]) / 4;
		p.g_off = tern_vk_place(vk, &b[1]) / 4;
		p.m_off = tern_vk_place(vk, &b[2]) / 4;
		p.v_off = tern_vk_place(vk, &b[3]) / 4;
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ADAMW, b, 4, &p, sizeof p, grid(k), 1, 1)))
			return st;
	}
	return TERN_OK;
}

/* ---- sum of squares ---------------------------------------------------------------------- */

struct sumsq_push {
	uint32_t n, out_off, x_off, chunk, accumulate;
};

static enum tern_status vk_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
				 bool accumulate)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	if (n == 0)
		return accumulate ? TERN_OK : tern_vk_zero(be, tern_view_sub(out, 0, 4));
	/* partial sums live in the dummy buffer (1024 floats): fixed order, no atomics */
	struct tern_view part = {vk->dummy, 0, 1024 * 4};
	int64_t chunk = tern_vk_fit(vk, 4);
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t m = n - i0 < chunk ? n - i0 : chunk;
		int64_t g = (m + 255) / 256;
		if (g > 1024)
			g = 1024;
		struct tern_view xv = tern_view_sub(x, (size_t)i0 * 4, (size_t)m * 4);
		struct sumsq_push p0 = {.n = (uint32_t)m, .chunk = (uint32_t)((m + g - 1) / g)};
		p0.x_off = tern_vk_place(vk, &xv) / 4;
		struct tern_view b0[2] = {part, xv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_SUMSQ0, b0, 2, &p0, sizeof p0, (uint32_t)g, 1, 1)))
			return st;
		struct tern_view ov = tern_view_sub(out, 0, 4);
		struct sumsq_push p1 = {.n = (uint32_t)g, .accumulate = accumulate || i0 > 0};
		p1.out_off = tern_vk_place(vk, &ov) / 4;
		struct tern_view b1[2] = {ov, part};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_SUMSQ1, b1, 2, &p1, sizeof p1, 1, 1, 1)))
			return st;
	}
	return TERN_OK;
}

/* ---- casts ------------------------------------------------------------------------------- */

struct cast_push {
	uint32_t n, dst_off, src_off;
};

/* The conversion's pipeline by source and destination dtype (f32, f16, bf16: the front door).
 * Equal dtypes are a buffer copy, no pipeline (TERN_PIPE_COUNT). */
static enum tern_vk_pipe pick_cast(enum tern_dtype src, enum tern_dtype dst)
{
	static const enum tern_vk_pipe pipes[3][3] = {
		[TERN_F32] = {[TERN_F32] = TERN_PIPE_COUNT,
			      [TERN_F16] = TERN_PIPE_CAST_F32_F16,
			      [TERN_BF16] = TERN_PIPE_CAST_F32_BF16},
		[TERN_F16] = {[TERN_F32] = TERN_PIPE_CAST_F16_F32,
			      [TERN_F16] = TERN_PIPE_COUNT,
			      [TERN_BF16] = TERN_PIPE_CAST_F16_BF16},
		[TERN_BF16] = {[TERN_F32] = TERN_PIPE_CAST_BF16_F32,
			       [TERN_F16] = TERN_PIPE_CAST_BF16_F16,
			       [TERN_BF16] = TERN_PIPE_COUNT},
	};
	return pipes[src][dst];
}

static enum tern_status vk_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
				struct tern_view src, enum tern_dtype sdt, int64_t n)
{
	struct tern_vk *vk = tern_vk_of(be);
	size_t ds = tern_dtype_size(dt), ss = tern_dtype_size(sdt); /* plain types: the front door */
	enum tern_status st;
	if (dst.off % ds || src.off % ss)
		return tern_fail(TERN_E_INVALID,
				 "cast: views must start at a multiple of their element size");
	if (n == 0)
		return TERN_OK;
	if (dt == sdt) {
		if ((st = tern_vk_begin(vk)))
			return st;
		VkBufferCopy c = {src.off, dst.off, (VkDeviceSize)n * ds};
		tvk_vkCmdCopyBuffer(vk->cmd, src.buf->buffer, dst.buf->buffer, 1, &c);
		vk->ndispatch++;
		return TERN_OK;
	}
	enum tern_vk_pipe pipe = pick_cast(sdt, dt);
	int64_t chunk = tern_vk_fit(vk, 4); /* elements of up to 4 bytes */
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t m = n - i0 < chunk ? n - i0 : chunk;
		struct tern_view d = tern_view_sub(dst, (size_t)i0 * ds, (size_t)m * ds);
		struct tern_view s = tern_view_sub(src, (size_t)i0 * ss, (size_t)m * ss);
		/* bind from the word that holds the first element */
		size_t dr = d.off % 4, sr = s.off % 4;
		d.off -= dr, d.size += dr;
		s.off -= sr, s.size += sr;
		struct cast_push p = {.n = (uint32_t)m};
		p.dst_off = (uint32_t)((tern_vk_place(vk, &d) + dr) / ds);
		p.src_off = (uint32_t)((tern_vk_place(vk, &s) + sr) / ss);
		struct tern_view b[2] = {d, s};
		if ((st = tern_vk_dispatch(vk, pipe, b, 2, &p, sizeof p, grid(dt == TERN_F32 ? m : m / 2 + 1),
					   1, 1)))
			return st;
	}
	return TERN_OK;
}

static bool vk_supports(struct tern_backend *be, enum tern_op op, enum tern_dtype wt)
{
	if (op == TERN_OP_MATMUL || op == TERN_OP_MATMUL_BWD) /* every format has its pipelines */
		return (unsigned)wt < TERN_DTYPE_COUNT;
	if (op == TERN_OP_MATMUL_GROUPED || op == TERN_OP_MATMUL_GROUPED_BWD) /* no ternary variant */
		return (unsigned)wt < TERN_DTYPE_COUNT && wt != TERN_TERNARY;
	if (op == TERN_OP_CE_LOSS)
		return wt == TERN_F32 || wt == TERN_F16 || wt == TERN_BF16;
	if (op == TERN_OP_EMBED)
		return wt == TERN_F32 || wt == TERN_F16 || wt == TERN_BF16;
	if (op == TERN_OP_CAST)
		return wt == TERN_F32 || wt == TERN_F16 || wt == TERN_BF16;
	return tern_backend_has_op(be, op);
}

const struct tern_backend_vtable tern_vk_vtable = {
	.buffer_alloc = tern_vk_buffer_alloc,
	.buffer_free = tern_vk_buffer_free,
	.upload = tern_vk_upload,
	.download = tern_vk_download,
	.zero = tern_vk_zero,
	.synchronize = tern_vk_synchronize,
	.destroy = tern_vk_destroy,
	.supports = vk_supports,
	.supports_prec = vk_supports_prec,
	.has_variant = tern_vk_has_variant,
	.auto_prec = vk_auto_prec,
	.host_alloc = tern_vk_host_alloc,
	.mark = tern_vk_mark,
	.copy_async = tern_vk_copy_async,
	.wait_ticket = tern_vk_wait_ticket,
	.ticket_wait_host = tern_vk_ticket_wait_host,
	.memory_info = tern_vk_memory_info,
	.profile_set = tern_vk_profile_set,
	.profile_op = tern_vk_profile_op,
	.profile_read = tern_vk_profile_read,
	.matmul = vk_matmul,
	.matmul_multi = vk_matmul_multi,
	.matmul_bwd = vk_matmul_bwd,
	.gemm = vk_gemm,
	.lora_fuses = vk_lora_fuses,
	.matmul_lora = vk_matmul_lora,
	.matmul_lora_bwd = vk_matmul_lora_bwd,
	.dropout = vk_dropout,
	.axpy = vk_axpy,
	.adamw = vk_adamw,
	.sumsq = vk_sumsq,
	.scale = vk_scale,
	.clip = vk_clip,
	.cast = vk_cast,
	.attention = tern_vk_attention,
	.attention_bwd = tern_vk_attention_bwd,
	.attention_kv = tern_vk_attention_kv,
	.ce_loss = tern_vk_ce_loss,
	.rmsnorm = tern_vk_rmsnorm,
	.rmsnorm_bwd = tern_vk_rmsnorm_bwd,
	.rope = tern_vk_rope,
	.swiglu = tern_vk_swiglu,
	.swiglu_bwd = tern_vk_swiglu_bwd,
	.embed = tern_vk_embed,
	.embed_bwd = tern_vk_embed_bwd,
	.gather_rows = tern_vk_gather_rows,
	.scatter_add_rows = tern_vk_scatter_add_rows,
	.rowdot = tern_vk_rowdot,
	.act_quant8 = tern_vk_act_quant8,
	.argmax = tern_vk_argmax,
	.route_topk = tern_vk_route_topk,
	.route_topk_bwd = tern_vk_route_topk_bwd,
	.matmul_grouped = tern_vk_matmul_grouped,
	.matmul_grouped_bwd = tern_vk_matmul_grouped_bwd,
};
