/* The CUDA backend's mixture-of-experts ops (backend.h): gather_rows, scatter_add_rows, rowdot,
 * the router (route_topk, route_topk_bwd) and the grouped matmul (matmul_grouped(_bwd)). Kernels
 * in k_moe.cu and k_grouped.cu.
 *
 * Like Vulkan, and unlike the CPU, nothing here reads the idx, sel or off on the host (that would
 * wait for the queued work): gather writes a NaN row for an idx outside the rows, scatter_add and
 * the router's backward skip it, and the grouped matmul clamps each expert's offsets into [0, T].
 *
 * The grouped matmul runs in fp32 (the only precision the front door passes today): a weight
 * stored in f32 is read in place; any other format is decoded to fp32 by cuk_decode (the decoder
 * of matmul) in steps of whole rows of the stacked weight, at most CU_DECODE_BYTES each, and each
 * step's rows are multiplied by a tiled kernel that finds each expert's token rows on the device.
 * Quantization blocks run over the whole stacked tensor, which the decoder handles (it indexes
 * the flat element g·I + i), so an expert may start inside a block. */
#include "backend/cuda/cu_more.h"

#define F32V(op, what, v, n, p, ...) tern_cu_view(op, what, v, (size_t)(n)*4, 4, (void **)(p), __VA_ARGS__)

static enum tern_status launched(cudaError_t e, const char *op) { return tern_cu_check(e, op); }

enum tern_status tern_cu_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view idx, int64_t n, int64_t Tx, int64_t D)
{
	const char *op = "gather_rows";
	enum tern_status st;
	float *yp, *xp;
	int32_t *ip;
	long long ln = (long long)n, lT = (long long)Tx, lD = (long long)D;
	if ((st = F32V(op, "y", y, n * D, &yp, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = F32V(op, "x", x, Tx * D, &xp, "Tx=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "idx", idx, n, &ip, "n=%lld i32", ln)))
		return st;
	if (n == 0)
		return TERN_OK;
	return launched(cuk_gather_rows(tern_cu_stream(cu_be(be)), yp, xp, ip, n, Tx, D), op);
}

enum tern_status tern_cu_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					  struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					  int64_t D)
{
	const char *op = "scatter_add_rows";
	enum tern_status st;
	float *yp, *xp, *wp = NULL;
	int32_t *ip;
	long long ln = (long long)n, lT = (long long)Ty, lD = (long long)D;
	if ((st = F32V(op, "y", y, Ty * D, &yp, "Ty=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "x", x, n * D, &xp, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = F32V(op, "idx", idx, n, &ip, "n=%lld i32", ln)) ||
	    (w.size && (st = F32V(op, "w", w, n, &wp, "n=%lld f32", ln))))
		return st;
	if (n == 0)
		return TERN_OK;
	return launched(cuk_scatter_add_rows(tern_cu_stream(cu_be(be)), yp, xp, ip, wp, n, Ty, D), op);
}

enum tern_status tern_cu_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				struct tern_view b, int64_t n, int64_t D)
{
	const char *op = "rowdot";
	enum tern_status st;
	float *op_, *ap, *bp;
	long long ln = (long long)n, lD = (long long)D;
	if ((st = F32V(op, "out", out, n, &op_, "n=%lld f32", ln)) ||
	    (st = F32V(op, "a", a, n * D, &ap, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = F32V(op, "b", b, n * D, &bp, "n=%lld D=%lld f32", ln, lD)))
		return st;
	if (n == 0)
		return TERN_OK;
	return launched(cuk_rowdot(tern_cu_stream(cu_be(be)), op_, ap, bp, n, D), op);
}

/* ---- the router ---- */

enum tern_status tern_cu_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				    struct tern_view prob, struct tern_view counts, struct tern_view logits,
				    int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk";
	enum tern_status st;
	int32_t *sp, *cp;
	float *wp, *pp, *lp;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	if ((st = F32V(op, "sel", sel, T * k, &sp, "T=%lld k=%lld i32", lT, lk)) ||
	    (st = F32V(op, "w", w, T * k, &wp, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = F32V(op, "prob", prob, T * E, &pp, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = F32V(op, "counts", counts, E, &cp, "E=%lld i32", lE)) ||
	    (st = F32V(op, "logits", logits, T * E, &lp, "T=%lld E=%lld f32", lT, lE)))
		return st;
	return launched(cuk_route_topk(tern_cu_stream(cu_be(be)), sp, wp, pp, cp, lp, T, E, k, norm), op);
}

enum tern_status tern_cu_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					struct tern_view dw, struct tern_view prob, struct tern_view sel,
					int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk_bwd";
	enum tern_status st;
	float *dp, *wp, *pp;
	int32_t *sp;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	if ((st = F32V(op, "dlogits", dlogits, T * E, &dp, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = F32V(op, "dw", dw, T * k, &wp, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = F32V(op, "prob", prob, T * E, &pp, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = F32V(op, "sel", sel, T * k, &sp, "T=%lld k=%lld i32", lT, lk)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_route_topk_bwd(tern_cu_stream(cu_be(be)), dp, wp, pp, sp, T, E, k, norm), op);
}

/* ---- the grouped matmul ---- */

/* out [T, N] from in [T, K]: forward N = O, K = I; backward N = I, K = O. The experts are decoded
 * to fp32 as one stacked weight [E·O, I] in steps of rows (each expert with its own weight and,
 * NF4_DQ, its nested offset read on the device), or read in place when they are f32 and back to
 * back. */
static enum tern_status grouped(struct tern_backend *be, bool bwd, struct tern_view out, struct tern_view in,
				const struct tern_experts *x, struct tern_view off, int64_t T,
				bool accumulate)
{
	const char *op = bwd ? "matmul_grouped_bwd" : "matmul_grouped";
	struct cu_backend *c = cu_be(be);
	const struct tern_weight *w = &x->w;
	enum tern_status st;
	int64_t E = x->E, O = w->O, I = w->I, G = E * O, N = bwd ? I : O, K = bwd ? O : I;
	float *outp, *inp, *eop = NULL;
	int32_t *offp;
	long long lT = (long long)T;
	if ((st = F32V(op, bwd ? "dx" : "y", out, T * N, &outp, "T=%lld %s=%lld f32", lT, bwd ? "I" : "O",
		       (long long)N)) ||
	    (st = F32V(op, bwd ? "dy" : "x", in, T * K, &inp, "T=%lld %s=%lld f32", lT, bwd ? "O" : "I",
		       (long long)K)) ||
	    (st = F32V(op, "off", off, E + 1, &offp, "E+1=%lld i32", (long long)(E + 1))))
		return st;
	if (w->dtype == TERN_NF4_DQ &&
	    (st = F32V(op, "offsets", x->offsets, E, &eop, "E=%lld f32", (long long)E)))
		return st;
	for (int64_t e = 0; e < E; e++) { /* every expert's views, before anything runs */
		struct tern_weight we;
		struct cuk_weight kw;
		tern_experts_at(x, e, &we);
		if ((st = tern_cu_weight_open(op, &we, &kw)))
			return st;
	}
	if (T == 0)
		return TERN_OK;
	bool direct = w->dtype == TERN_F32 && x->stride[0] == (uint64_t)(O * I) * 4;
	int64_t rows = direct ? G : (int64_t)(CU_DECODE_BYTES / ((size_t)I * 4));
	rows = rows < 1 ? 1 : rows > G ? G : rows;
	void *scr = NULL;
	struct cuk_weight k0;
	if ((st = tern_cu_weight_open(op, w, &k0)))
		return st;
	if (!direct && (st = tern_cu_scratch(c, (size_t)(rows * I) * 4, &scr)))
		return st;
	for (int64_t g0 = 0; g0 < G; g0 += rows) {
		int64_t gn = G - g0 < rows ? G - g0 : rows;
		const float *wr = direct ? (const float *)k0.data : scr;
		for (int64_t e = g0 / O; !direct && e < E && e * O < g0 + gn; e++) {
			int64_t r0 = g0 > e * O ? g0 - e * O : 0,
				r1 = g0 + gn - e * O < O ? g0 + gn - e * O : O;
			struct tern_weight we;
			struct cuk_weight kw;
			tern_experts_at(x, e, &we);
			if ((st = tern_cu_weight_open(op, &we, &kw)))
				return st;
			kw.offset_dev = eop ? eop + e : NULL;
			float *dst = (float *)scr + (e * O + r0 - g0) * I;
			if ((st = launched(cuk_decode(tern_cu_stream(c), dst, 0, &kw, r0, r1 - r0), op)))
				return st;
		}
		if ((st = launched(cuk_grouped(tern_cu_stream(c), bwd, outp, inp, wr, offp, T, O, I, g0, gn,
					       accumulate),
				   op)))
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_cu_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					const struct tern_experts *x, struct tern_view off, int64_t T,
					enum tern_dtype prec)
{
	(void)prec; /* F32: the front door */
	return grouped(be, false, y, in, x, off, T, false);
}

enum tern_status tern_cu_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					    const struct tern_experts *x, struct tern_view off, int64_t T,
					    bool accumulate, enum tern_dtype prec)
{
	(void)prec;
	return grouped(be, true, dx, dy, x, off, T, accumulate);
}
