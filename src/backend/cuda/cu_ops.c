/* The CUDA backend's elementwise, optimizer, layer and attention ops: each checks what only it
 * can (its views lie inside their buffers, alignment; tern_cu_view), then queues its kernel
 * (k_elem.cu, k_attn.cu) on the compute stream. The front doors (ops.c) checked everything else.
 *
 * Like Vulkan, and unlike the CPU, the ops cannot read ids or labels on the host without waiting:
 * embed writes a NaN row for an id outside [0, V), embed_bwd skips that token. */
#include "backend/cuda/cu.h"

#include <stdlib.h>
#include <string.h>

#define F32V(op, what, v, n, p, ...) tern_cu_view(op, what, v, (size_t)(n)*4, 4, (void **)(p), __VA_ARGS__)

static enum tern_status launched(cudaError_t e, const char *op) { return tern_cu_check(e, op); }

/* Two fp32 vectors of n elements (ya and, when xa, xa). */
static enum tern_status elem_views(const char *op, const char *ya, struct tern_view y, float **yp,
				   const char *xa, struct tern_view x, float **xp, int64_t n)
{
	enum tern_status st = F32V(op, ya, y, n, yp, "n=%lld f32", (long long)n);
	if (st == TERN_OK && xa)
		st = F32V(op, xa, x, n, xp, "n=%lld f32", (long long)n);
	return st;
}

enum tern_status tern_cu_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				 float p, uint64_t key)
{
	float *yp = NULL, *xp = NULL;
	enum tern_status st = elem_views("dropout", "y", y, &yp, "x", x, &xp, n);
	if (st || n == 0)
		return st;
	float scale = (float)(1.0 / (1.0 - (double)p)); /* rounded to fp32 once, as torch */
	return launched(
		cuk_dropout(tern_cu_stream(cu_be(be)), yp, xp, n, tern_dropout_threshold(p), scale, key),
		"dropout");
}

enum tern_status tern_cu_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			      float alpha)
{
	float *yp = NULL, *xp = NULL;
	enum tern_status st = elem_views("axpy", "y", y, &yp, "x", x, &xp, n);
	if (st || n == 0)
		return st;
	return launched(cuk_axpy(tern_cu_stream(cu_be(be)), yp, xp, n, alpha), "axpy");
}

enum tern_status tern_cu_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha)
{
	float *xp = NULL;
	enum tern_status st = elem_views("scale", "x", x, &xp, NULL, x, NULL, n);
	if (st || n == 0)
		return st;
	return launched(cuk_scale(tern_cu_stream(cu_be(be)), xp, n, alpha), "scale");
}

enum tern_status tern_cu_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
			       struct tern_view m, struct tern_view v, int64_t n,
			       const struct tern_adamw_args *args)
{
	const char *op = "adamw";
	float *pp = NULL, *gp = NULL, *mp = NULL, *vp = NULL;
	enum tern_status st = elem_views(op, "param", param, &pp, "grad", grad, &gp, n);
	if (st == TERN_OK)
		st = elem_views(op, "m", m, &mp, "v", v, &vp, n);
	if (st || n == 0)
		return st;
	struct tern_adamw_consts k = tern_adamw_consts(args);
	struct cuk_adamw_c c = {
		.decay = k.decay,
		.one_minus_b1 = k.one_minus_b1,
		.b2 = k.b2,
		.one_minus_b2 = k.one_minus_b2,
		.neg_step = -k.step_size,
		.bc2_sqrt = k.bc2_sqrt,
		.eps = k.eps,
		.lerp_small = k.one_minus_b1 < 0.5f && k.one_minus_b1 > -0.5f,
	};
	return launched(cuk_adamw(tern_cu_stream(cu_be(be)), pp, gp, mp, vp, n, &c), op);
}

enum tern_status tern_cu_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
			       bool accumulate)
{
	float *xp = NULL, *op_ = NULL;
	enum tern_status st = elem_views("sumsq", "x", x, &xp, NULL, x, NULL, n);
	if (st == TERN_OK)
		st = F32V("sumsq", "out", out, 1, &op_, "1 f32");
	if (st)
		return st;
	struct cu_backend *c = cu_be(be);
	return launched(cuk_sumsq(tern_cu_stream(c), op_, xp, n, accumulate, c->sumsq_part), "sumsq");
}

enum tern_status tern_cu_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			      float max_norm)
{
	float *xp = NULL, *sp = NULL;
	enum tern_status st = elem_views("clip", "x", x, &xp, NULL, x, NULL, n);
	if (st == TERN_OK)
		st = F32V("clip", "sumsq", sumsq, 1, &sp, "1 f32");
	if (st || n == 0)
		return st;
	return launched(cuk_clip(tern_cu_stream(cu_be(be)), xp, n, sp, max_norm), "clip");
}

enum tern_status tern_cu_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			      struct tern_view src, enum tern_dtype st_, int64_t n)
{
	const char *op = "cast";
	enum tern_status st;
	size_t ds = tern_dtype_size(dt), ss = tern_dtype_size(st_); /* plain types: the front door */
	void *d, *s;
	if ((st = tern_cu_view(op, "dst", dst, (size_t)n * ds, ds, &d, "n=%lld %s", (long long)n,
			       tern_dtype_name(dt))) ||
	    (st = tern_cu_view(op, "src", src, (size_t)n * ss, ss, &s, "n=%lld %s", (long long)n,
			       tern_dtype_name(st_))))
		return st;
	if (n == 0 || (dt == st_ && d == s))
		return TERN_OK;
	struct cu_backend *c = cu_be(be);
	if (dt == st_)
		return launched(
			cudaMemcpyAsync(d, s, (size_t)n * ds, cudaMemcpyDeviceToDevice, tern_cu_stream(c)),
			op);
	return launched(cuk_cast(tern_cu_stream(c), d, (int)dt, s, (int)st_, n), op);
}

/* ---- layers ---- */

enum tern_status tern_cu_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				 struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps)
{
	const char *op = "rmsnorm";
	enum tern_status st;
	float *yp, *rp, *xp, *wp;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = F32V(op, "y", y, T * D, &yp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "rstd", rstd, T, &rp, "T=%lld f32", lT)) ||
	    (st = F32V(op, "x", x, T * D, &xp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "w", w, D, &wp, "D=%lld f32", lD)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_rmsnorm(tern_cu_stream(cu_be(be)), yp, rp, xp, wp, T, D, eps), op);
}

enum tern_status tern_cu_add_rmsnorm(struct tern_backend *be, struct tern_view h, struct tern_view y,
				     struct tern_view rstd, struct tern_view x, struct tern_view w, int64_t T,
				     int64_t D, float eps)
{
	const char *op = "add_rmsnorm";
	enum tern_status st;
	float *hp, *yp, *rp, *xp, *wp;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = F32V(op, "h", h, T * D, &hp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "y", y, T * D, &yp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "rstd", rstd, T, &rp, "T=%lld f32", lT)) ||
	    (st = F32V(op, "x", x, T * D, &xp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "w", w, D, &wp, "D=%lld f32", lD)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_add_rmsnorm(tern_cu_stream(cu_be(be)), hp, yp, rp, xp, wp, T, D, eps), op);
}

enum tern_status tern_cu_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				     int64_t D, bool accumulate)
{
	const char *op = "rmsnorm_bwd";
	enum tern_status st;
	float *dxp, *dyp, *xp, *wp, *rp;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = F32V(op, "dx", dx, T * D, &dxp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "dy", dy, T * D, &dyp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "x", x, T * D, &xp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "w", w, D, &wp, "D=%lld f32", lD)) ||
	    (st = F32V(op, "rstd", rstd, T, &rp, "T=%lld f32", lT)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_rmsnorm_bwd(tern_cu_stream(cu_be(be)), dxp, dyp, xp, wp, rp, T, D, accumulate),
			op);
}

enum tern_status tern_cu_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			      struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	const char *op = "rope";
	enum tern_status st;
	float *xp, *fp;
	int32_t *pp;
	long long lT = (long long)T, lH = (long long)H, lDh = (long long)Dh;
	if ((st = F32V(op, "x", x, T * H * Dh, &xp, "T=%lld H=%lld Dh=%lld f32", lT, lH, lDh)) ||
	    (st = F32V(op, "pos", pos, T, &pp, "T=%lld i32", lT)) ||
	    (st = F32V(op, "inv_freq", inv_freq, Dh / 2, &fp, "Dh/2=%lld f32", lDh / 2)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_rope(tern_cu_stream(cu_be(be)), xp, pp, fp, T, H, Dh, inverse), op);
}

enum tern_status tern_cu_rope2(struct tern_backend *be, struct tern_view x, int64_t H, struct tern_view x2,
			       int64_t H2, struct tern_view pos, struct tern_view inv_freq, int64_t T,
			       int64_t Dh, bool inverse)
{
	const char *op = "rope2";
	enum tern_status st;
	float *xp, *x2p, *fp;
	int32_t *pp;
	long long lT = (long long)T, lH = (long long)H, lH2 = (long long)H2, lDh = (long long)Dh;
	if ((st = F32V(op, "x", x, T * H * Dh, &xp, "T=%lld H=%lld Dh=%lld f32", lT, lH, lDh)) ||
	    (st = F32V(op, "x2", x2, T * H2 * Dh, &x2p, "T=%lld H2=%lld Dh=%lld f32", lT, lH2, lDh)) ||
	    (st = F32V(op, "pos", pos, T, &pp, "T=%lld i32", lT)) ||
	    (st = F32V(op, "inv_freq", inv_freq, Dh / 2, &fp, "Dh/2=%lld f32", lDh / 2)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_rope2(tern_cu_stream(cu_be(be)), xp, H, x2p, H2, pp, fp, T, Dh, inverse), op);
}

enum tern_status tern_cu_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				struct tern_view u, int64_t n, enum tern_act act)
{
	const char *op = "swiglu";
	enum tern_status st;
	float *hp, *gp, *up;
	if ((st = F32V(op, "h", h, n, &hp, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "g", g, n, &gp, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "u", u, n, &up, "n=%lld f32", (long long)n)))
		return st;
	if (n == 0)
		return TERN_OK;
	return launched(cuk_swiglu(tern_cu_stream(cu_be(be)), hp, gp, up, n, act == TERN_ACT_RELU2), op);
}

enum tern_status tern_cu_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				    struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				    enum tern_act act)
{
	const char *op = "swiglu_bwd";
	enum tern_status st;
	float *dgp, *dup, *dhp, *gp, *up;
	if ((st = F32V(op, "dg", dg, n, &dgp, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "du", du, n, &dup, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "dh", dh, n, &dhp, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "g", g, n, &gp, "n=%lld f32", (long long)n)) ||
	    (st = F32V(op, "u", u, n, &up, "n=%lld f32", (long long)n)))
		return st;
	if (n == 0)
		return TERN_OK;
	return launched(
		cuk_swiglu_bwd(tern_cu_stream(cu_be(be)), dgp, dup, dhp, gp, up, n, act == TERN_ACT_RELU2),
		op);
}

enum tern_status tern_cu_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			       const struct tern_weight *E, int64_t T)
{
	const char *op = "embed";
	enum tern_status st;
	size_t es = tern_dtype_size(E->dtype); /* F32/F16/BF16: the front door */
	int64_t V = E->O, D = E->I;
	float *yp;
	int32_t *ip;
	void *ep;
	long long lT = (long long)T, lD = (long long)D, lV = (long long)V;
	if ((st = F32V(op, "y", y, T * D, &yp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "ids", ids, T, &ip, "T=%lld i32", lT)) ||
	    (st = tern_cu_view(op, "E", E->data, (size_t)(V * D) * es, es, &ep, "V=%lld D=%lld %s", lV, lD,
			       tern_dtype_name(E->dtype))))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_embed(tern_cu_stream(cu_be(be)), yp, ip, ep, (int)E->dtype, V, D, T), op);
}

enum tern_status tern_cu_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				   struct tern_view ids, int64_t T, int64_t V, int64_t D)
{
	const char *op = "embed_bwd";
	enum tern_status st;
	float *ep, *yp;
	int32_t *ip;
	long long lT = (long long)T, lD = (long long)D, lV = (long long)V;
	if ((st = F32V(op, "dE", dE, V * D, &ep, "V=%lld D=%lld f32", lV, lD)) ||
	    (st = F32V(op, "dy", dy, T * D, &yp, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = F32V(op, "ids", ids, T, &ip, "T=%lld i32", lT)))
		return st;
	if (T == 0)
		return TERN_OK;
	return launched(cuk_embed_bwd(tern_cu_stream(cu_be(be)), ep, yp, ip, T, V, D), op);
}

/* ---- attention ---- */

static enum tern_status attn_view(const char *op, const char *what, struct tern_view v, int64_t n, float **p,
				  const struct tern_attn_args *a)
{
	return F32V(op, what, v, n, p, "T=%lld H=%lld Hkv=%lld Dh=%lld", (long long)a->T, (long long)a->H,
		    (long long)a->Hkv, (long long)a->Dh);
}

static enum tern_status attn_dh(const char *op, const struct tern_attn_args *a)
{
	if (a->Dh > CUK_ATTN_MAX_DH)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "cuda: %s: head size Dh=%lld is above the %d the kernels take", op,
				 (long long)a->Dh, CUK_ATTN_MAX_DH);
	return TERN_OK;
}

/* bf16 operands on the tensor cores where the caller allows them (prec BF16) and the device
 * has bf16 MMA (compute 8.0 and later); fp32 otherwise, as backend.h lets a backend do. */
static struct cuk_attn attn_of(struct cu_backend *c, const struct tern_attn_args *a)
{
	int bf16 = a->prec == TERN_BF16 && c->cc_major >= 8; /* the launcher checks the head size */
	return (struct cuk_attn){a->T, a->H, a->Hkv, a->Dh, a->window, a->scale, bf16};
}

enum tern_status tern_cu_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				   struct tern_view q, struct tern_view k, struct tern_view v,
				   struct tern_view seg, const struct tern_attn_args *a)
{
	const char *op = "attention";
	enum tern_status st;
	int64_t T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh;
	float *op_, *lp, *qp, *kp, *vp, *sp;
	if ((st = attn_dh(op, a)) || (st = attn_view(op, "o", o, T * H * Dh, &op_, a)) ||
	    (st = attn_view(op, "lse", lse, H * T, &lp, a)) ||
	    (st = attn_view(op, "q", q, T * H * Dh, &qp, a)) ||
	    (st = attn_view(op, "k", k, T * Hkv * Dh, &kp, a)) ||
	    (st = attn_view(op, "v", v, T * Hkv * Dh, &vp, a)) || (st = attn_view(op, "seg", seg, T, &sp, a)))
		return st;
	if (T == 0)
		return TERN_OK;
	struct cu_backend *c = cu_be(be);
	struct cuk_attn ka = attn_of(c, a);
	size_t sbytes = cuk_attention_scratch(&ka, false);
	void *scr = NULL;
	if (sbytes && (st = tern_cu_scratch(c, sbytes, &scr)))
		return st;
	return launched(cuk_attention(tern_cu_stream(c), op_, lp, qp, kp, vp, (const int32_t *)sp, scr, &ka),
			op);
}

enum tern_status tern_cu_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				       struct tern_view dv, struct tern_view dout, struct tern_view q,
				       struct tern_view k, struct tern_view v, struct tern_view o,
				       struct tern_view lse, struct tern_view seg,
				       const struct tern_attn_args *a)
{
	const char *op = "attention_bwd";
	enum tern_status st;
	int64_t T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh;
	float *dqp, *dkp, *dvp, *gp, *qp, *kp, *vp, *op_, *lp, *sp;
	if ((st = attn_dh(op, a)) || (st = attn_view(op, "dq", dq, T * H * Dh, &dqp, a)) ||
	    (st = attn_view(op, "dk", dk, T * Hkv * Dh, &dkp, a)) ||
	    (st = attn_view(op, "dv", dv, T * Hkv * Dh, &dvp, a)) ||
	    (st = attn_view(op, "dout", dout, T * H * Dh, &gp, a)) ||
	    (st = attn_view(op, "q", q, T * H * Dh, &qp, a)) ||
	    (st = attn_view(op, "k", k, T * Hkv * Dh, &kp, a)) ||
	    (st = attn_view(op, "v", v, T * Hkv * Dh, &vp, a)) ||
	    (st = attn_view(op, "o", o, T * H * Dh, &op_, a)) ||
	    (st = attn_view(op, "lse", lse, H * T, &lp, a)) || (st = attn_view(op, "seg", seg, T, &sp, a)))
		return st;
	if (T == 0)
		return TERN_OK;
	struct cu_backend *c = cu_be(be);
	struct cuk_attn ka = attn_of(c, a);
	void *scr;
	if ((st = tern_cu_scratch(c, cuk_attention_scratch(&ka, true), &scr)))
		return st;
	return launched(cuk_attention_bwd(tern_cu_stream(c), dqp, dkp, dvp, gp, qp, kp, vp, op_, lp,
					  (const int32_t *)sp, scr, &ka),
			op);
}
