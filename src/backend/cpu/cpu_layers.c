/* The CPU reference of the per-layer transformer ops (training-math.md): RMSNorm, RoPE (HF
 * rotate_half), SwiGLU / ReLU², embedding gather. Plain fp32 with the row sums in double; every
 * output is a function of its own row (or element), so rows run in parallel. */
#include "backend/cpu/cpu.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- RMSNorm ------------------------------------------------------------------------------ */

/* y[T,D] = (x · rstd[t]) · w (=), rstd[t] = 1/sqrt(mean_j x² + eps) (=): HF LlamaRMSNorm in fp32,
 * the mean of squares in double, rstd rounded to fp32 once, then two fp32 products. */
enum tern_status tern_cpu_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				  struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps)
{
	const char *op = "rmsnorm";
	enum tern_status st;
	void *yv, *rv, *xv, *wv;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = tern_cpu_view(op, "y", y, (size_t)(T * D) * 4, 4, &yv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "rstd", rstd, (size_t)T * 4, 4, &rv, "T=%lld f32", lT)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(T * D) * 4, 4, &xv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "w", w, (size_t)D * 4, 4, &wv, "D=%lld f32", lD)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *yp = yv, *rp = rv;
	const float *xp = xv, *wp = wv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		const float *xt = xp + t * D;
		float *yt = yp + t * D;
		double ss = 0.0;
		for (int64_t j = 0; j < D; j++)
			ss += (double)xt[j] * (double)xt[j];
		float r = (float)(1.0 / sqrt((double)(float)(ss / (double)D) + (double)eps));
		rp[t] = r;
		for (int64_t j = 0; j < D; j++) {
			float n = xt[j] * r;
			yt[j] = n * wp[j];
		}
	}
	return TERN_OK;
}

/* dx[T,D] = or += r·w_i·dy_i − x_i·r³/D · Σ_j w_j dy_j x_j, with r = the saved rstd[t]; w frozen.
 * The row sum in double; each element in double, rounded (and accumulated) once. */
enum tern_status tern_cpu_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      struct tern_view x, struct tern_view w, struct tern_view rstd,
				      int64_t T, int64_t D, bool accumulate)
{
	const char *op = "rmsnorm_bwd";
	enum tern_status st;
	void *dxv, *dyv, *xv, *wv, *rv;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = tern_cpu_view(op, "dx", dx, (size_t)(T * D) * 4, 4, &dxv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "dy", dy, (size_t)(T * D) * 4, 4, &dyv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(T * D) * 4, 4, &xv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "w", w, (size_t)D * 4, 4, &wv, "D=%lld f32", lD)) ||
	    (st = tern_cpu_view(op, "rstd", rstd, (size_t)T * 4, 4, &rv, "T=%lld f32", lT)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *dxp = dxv;
	const float *dyp = dyv, *xp = xv, *wp = wv, *rp = rv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		const float *xt = xp + t * D, *dyt = dyp + t * D;
		float *dxt = dxp + t * D;
		double r = (double)rp[t], s = 0.0;
		for (int64_t j = 0; j < D; j++)
			s += (double)wp[j] * (double)dyt[j] * (double)xt[j];
		double c = r * r * r * s / (double)D;
		for (int64_t j = 0; j < D; j++) {
			double g = r * (double)wp[j] * (double)dyt[j] - (double)xt[j] * c;
			dxt[j] = accumulate ? (float)((double)dxt[j] + g) : (float)g;
		}
	}
	return TERN_OK;
}

/* ---- RoPE --------------------------------------------------------------------------------- */

/* In place on x[T,H,Dh]: for i < Dh/2, θ = fp32(pos[t]) · inv_freq[i] (one fp32 product, as
 * HF's fp32 inv_freq @ position_ids), c, s = cos θ, sin θ rounded to fp32 from double, then
 *   forward: y_i = x_i c − x_{i+h} s,  y_{i+h} = x_{i+h} c + x_i s   (HF q·cos + rotate_half(q)·sin)
 *   inverse: y_i = x_i c + x_{i+h} s,  y_{i+h} = x_{i+h} c − x_i s   (rotation by −θ: the backward)
 * Positions may be any i32 (they restart per sample in a packed row). */
enum tern_status tern_cpu_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			       struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	const char *op = "rope";
	enum tern_status st;
	void *xv, *pv, *fv;
	long long lT = (long long)T, lH = (long long)H, lDh = (long long)Dh;
	if ((st = tern_cpu_view(op, "x", x, (size_t)(T * H * Dh) * 4, 4, &xv, "T=%lld H=%lld Dh=%lld f32", lT,
				lH, lDh)) ||
	    (st = tern_cpu_view(op, "pos", pos, (size_t)T * 4, 4, &pv, "T=%lld i32", lT)) ||
	    (st = tern_cpu_view(op, "inv_freq", inv_freq, (size_t)(Dh / 2) * 4, 4, &fv, "Dh/2=%lld f32",
				lDh / 2)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *xp = xv;
	const int32_t *pp = pv;
	const float *fp = fv;
	int64_t half = Dh / 2;
	float sign = inverse ? -1.0f : 1.0f;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		float p = (float)pp[t];
		for (int64_t i = 0; i < half; i++) {
			float th = p * fp[i];
			float c = (float)cos((double)th), s = sign * (float)sin((double)th);
			for (int64_t h = 0; h < H; h++) {
				float *xr = xp + (t * H + h) * Dh;
				float x0 = xr[i], x1 = xr[i + half];
				float a = x0 * c, b = x1 * s, d = x1 * c, e = x0 * s;
				xr[i] = a - b;
				xr[i + half] = d + e;
			}
		}
	}
	return TERN_OK;
}

/* ---- SwiGLU / ReLU² ----------------------------------------------------------------------- */

static enum tern_status mlp_views(const char *op, int64_t n, const char **names, const struct tern_view *v,
				  float **p, int nv)
{
	enum tern_status st;
	for (int k = 0; k < nv; k++) {
		void *q;
		if ((st = tern_cpu_view(op, names[k], v[k], (size_t)n * 4, 4, &q, "n=%lld f32",
					(long long)n)))
			return st;
		p[k] = q;
	}
	return TERN_OK;
}

/* act(g) in double: silu g·σ(g) = g / (1 + e^−g) (torch's form), or relu(g)². */
static inline double act_value(double g, enum tern_act act)
{
	if (act == TERN_ACT_RELU2)
		return g > 0.0 ? g * g : 0.0;
	return g / (1.0 + exp(-g));
}

/* h[n] = act(g[n]) · u[n] (=): act rounded to fp32 once, then one fp32 product (torch:
 * act_fn(gate) * up). */
enum tern_status tern_cpu_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				 struct tern_view u, int64_t n, enum tern_act act)
{
	static const char *names[] = {"h", "g", "u"};
	struct tern_view v[3] = {h, g, u};
	float *p[3];
	enum tern_status st = mlp_views("swiglu", n, names, v, p, 3);
	if (st != TERN_OK)
		return st;
	float *hp = p[0];
	const float *gp = p[1], *up = p[2];
	int64_t ntask = n / 4096 + 1;
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo = n * k / ntask, hi = n * (k + 1) / ntask;
		for (int64_t i = lo; i < hi; i++) {
			float a = (float)act_value((double)gp[i], act);
			hp[i] = a * up[i];
		}
	}
	return TERN_OK;
}

/* dg[n] = dh · u · act'(g), du[n] = dh · act(g) (=), each in double and rounded once:
 *   silu:  act' = σ(g)(1 + g(1 − σ(g)))
 *   relu²: act' = 2 relu(g) */
enum tern_status tern_cpu_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				     struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				     enum tern_act act)
{
	static const char *names[] = {"dg", "du", "dh", "g", "u"};
	struct tern_view v[5] = {dg, du, dh, g, u};
	float *p[5];
	enum tern_status st = mlp_views("swiglu_bwd", n, names, v, p, 5);
	if (st != TERN_OK)
		return st;
	float *dgp = p[0], *dup = p[1];
	const float *dhp = p[2], *gp = p[3], *up = p[4];
	int64_t ntask = n / 4096 + 1;
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo = n * k / ntask, hi = n * (k + 1) / ntask;
		for (int64_t i = lo; i < hi; i++) {
			double gi = gp[i], d;
			if (act == TERN_ACT_RELU2) {
				d = gi > 0.0 ? 2.0 * gi : 0.0;
			} else {
				double sg = 1.0 / (1.0 + exp(-gi));
				d = sg * (1.0 + gi * (1.0 - sg));
			}
			dgp[i] = (float)((double)dhp[i] * (double)up[i] * d);
			dup[i] = (float)((double)dhp[i] * act_value(gi, act));
		}
	}
	return TERN_OK;
}

/* ---- embedding gather --------------------------------------------------------------------- */

/* y[T,D] = E[ids[t]] (=), E [V, D] in F32/F16/BF16 widened exactly to fp32. Every id is checked
 * before anything is written (here: the front door cannot read them): one outside [0, V) fails the
 * call, naming the first such id. */
enum tern_status tern_cpu_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
				const struct tern_weight *E, int64_t T)
{
	const char *op = "embed";
	enum tern_status st;
	size_t es = tern_dtype_size(E->dtype); /* F32/F16/BF16: the front door */
	int64_t V = E->O, D = E->I;
	void *yv, *iv, *ev;
	long long lT = (long long)T, lD = (long long)D, lV = (long long)V;
	const char *dn = tern_dtype_name(E->dtype);
	if ((st = tern_cpu_view(op, "y", y, (size_t)(T * D) * 4, 4, &yv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "ids", ids, (size_t)T * 4, 4, &iv, "T=%lld i32", lT)) ||
	    (st = tern_cpu_view(op, "E", E->data, (size_t)(V * D) * es, es, &ev, "V=%lld D=%lld %s", lV, lD,
				dn)))
		return st;
	const int32_t *ip = iv;
	for (int64_t t = 0; t < T; t++)
		if (ip[t] < 0 || ip[t] >= V)
			return tern_fail(TERN_E_INVALID, "embed: ids[%lld] = %d is outside [0, V=%lld)",
					 (long long)t, (int)ip[t], lV);
	float *yp = yv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		tern_plain_to_f32(E->dtype, (const uint8_t *)ev + (size_t)ip[t] * (size_t)D * es, D,
				  yp + t * D);
	}
	return TERN_OK;
}

/* dE[ids[t]] += dy[t] (+=) in token order; tasks own ranges of columns, so repeated ids never
 * race and the sums do not depend on the schedule. Every id is checked before anything is
 * written: one outside [0, V) fails the call, naming the first. */
enum tern_status tern_cpu_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				    struct tern_view ids, int64_t T, int64_t V, int64_t D)
{
	const char *op = "embed_bwd";
	enum tern_status st;
	void *ev, *yv, *iv;
	long long lT = (long long)T, lD = (long long)D, lV = (long long)V;
	(void)be;
	if ((st = tern_cpu_view(op, "dE", dE, (size_t)(V * D) * 4, 4, &ev, "V=%lld D=%lld f32", lV, lD)) ||
	    (st = tern_cpu_view(op, "dy", dy, (size_t)(T * D) * 4, 4, &yv, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "ids", ids, (size_t)T * 4, 4, &iv, "T=%lld i32", lT)))
		return st;
	const int32_t *ip = iv;
	for (int64_t t = 0; t < T; t++)
		if (ip[t] < 0 || ip[t] >= V)
			return tern_fail(TERN_E_INVALID, "embed_bwd: ids[%lld] = %d is outside [0, V=%lld)",
					 (long long)t, (int)ip[t], lV);
	float *ep = ev;
	const float *yp = yv;
	int64_t ntask = tern_cdiv(D, 64);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t j0 = k * 64, j1 = j0 + 64 < D ? j0 + 64 : D;
		for (int64_t t = 0; t < T; t++) {
			float *dst = ep + (size_t)ip[t] * (size_t)D;
			const float *src = yp + t * D;
			for (int64_t j = j0; j < j1; j++)
				dst[j] += src[j];
		}
	}
	return TERN_OK;
}
