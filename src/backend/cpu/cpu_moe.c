/* The mixture-of-experts row ops on the CPU reference (backend.h): gather_rows, scatter_add_rows,
 * rowdot. Every idx is checked before anything is written (the front door cannot read them): the
 * first one outside the rows, or (scatter_add_rows) the first repeat, fails the call. */
#include "backend/cpu/cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* idx[i] in [0, T) for every i < n, else fail naming the first bad one. */
static enum tern_status idx_range(const char *op, const char *what, const int32_t *idx, int64_t n, int64_t T,
				  const char *tn)
{
	for (int64_t i = 0; i < n; i++)
		if (idx[i] < 0 || idx[i] >= T)
			return tern_fail(TERN_E_INVALID, "%s: %s[%lld] = %d is outside [0, %s=%lld)", op,
					 what, (long long)i, (int)idx[i], tn, (long long)T);
	return TERN_OK;
}

/* y[i, :] = x[idx[i], :] (=): a copy of each row. */
enum tern_status tern_cpu_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				      struct tern_view idx, int64_t n, int64_t Tx, int64_t D)
{
	const char *op = "gather_rows";
	enum tern_status st;
	void *yv, *xv, *iv;
	long long ln = (long long)n, lT = (long long)Tx, lD = (long long)D;
	(void)be;
	if ((st = tern_cpu_view(op, "y", y, (size_t)(n * D) * 4, 4, &yv, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(Tx * D) * 4, 4, &xv, "Tx=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "idx", idx, (size_t)n * 4, 4, &iv, "n=%lld i32", ln)))
		return st;
	const int32_t *ip = iv;
	if ((st = idx_range(op, "idx", ip, n, Tx, "Tx")))
		return st;
	float *yp = yv;
	const float *xp = xv;
	CPU_PARALLEL_FOR
	for (int64_t i = 0; i < n; i++)
		memmove(yp + i * D, xp + (int64_t)ip[i] * D, (size_t)D * 4);
	return TERN_OK;
}

/* y[idx[i], :] += w[i] · x[i, :] (+=); the idx are distinct, so rows are independent tasks. */
enum tern_status tern_cpu_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					   struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					   int64_t D)
{
	const char *op = "scatter_add_rows";
	enum tern_status st;
	void *yv, *xv, *iv, *wv = NULL;
	long long ln = (long long)n, lT = (long long)Ty, lD = (long long)D;
	(void)be;
	if ((st = tern_cpu_view(op, "y", y, (size_t)(Ty * D) * 4, 4, &yv, "Ty=%lld D=%lld f32", lT, lD)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(n * D) * 4, 4, &xv, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = tern_cpu_view(op, "idx", idx, (size_t)n * 4, 4, &iv, "n=%lld i32", ln)) ||
	    (w.size && (st = tern_cpu_view(op, "w", w, (size_t)n * 4, 4, &wv, "n=%lld f32", ln))))
		return st;
	const int32_t *ip = iv;
	if ((st = idx_range(op, "idx", ip, n, Ty, "Ty")))
		return st;
	/* distinct: first[r] = 1 + the position that first named row r */
	int64_t *first = n > 1 ? calloc((size_t)Ty, sizeof *first) : NULL;
	if (n > 1 && !first)
		return tern_fail(TERN_E_NOMEM, "%s: out of memory for the idx check (Ty=%lld)", op, lT);
	for (int64_t i = 0; n > 1 && i < n; i++) {
		if (first[ip[i]]) {
			st = tern_fail(
				TERN_E_INVALID,
				"%s: idx[%lld] = idx[%lld] = %d (the idx of one call must be distinct)", op,
				(long long)(first[ip[i]] - 1), (long long)i, (int)ip[i]);
			free(first);
			return st;
		}
		first[ip[i]] = i + 1;
	}
	free(first);
	float *yp = yv;
	const float *xp = xv, *wp = wv;
	CPU_PARALLEL_FOR
	for (int64_t i = 0; i < n; i++) {
		float *dst = yp + (int64_t)ip[i] * D;
		const float *src = xp + i * D;
		if (wp) {
			float wi = wp[i];
			for (int64_t j = 0; j < D; j++) {
				float p = wi * src[j];
				dst[j] = dst[j] + p;
			}
		} else {
			for (int64_t j = 0; j < D; j++)
				dst[j] = dst[j] + src[j];
		}
	}
	return TERN_OK;
}

/* out[i] = Σ_d a[i, d] · b[i, d] (=), summed in double in order d = 0 .. D-1. */
enum tern_status tern_cpu_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				 struct tern_view b, int64_t n, int64_t D)
{
	const char *op = "rowdot";
	enum tern_status st;
	void *ov, *av, *bv;
	long long ln = (long long)n, lD = (long long)D;
	(void)be;
	if ((st = tern_cpu_view(op, "out", out, (size_t)n * 4, 4, &ov, "n=%lld f32", ln)) ||
	    (st = tern_cpu_view(op, "a", a, (size_t)(n * D) * 4, 4, &av, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = tern_cpu_view(op, "b", b, (size_t)(n * D) * 4, 4, &bv, "n=%lld D=%lld f32", ln, lD)))
		return st;
	float *op_ = ov;
	const float *ap = av, *bp = bv;
	CPU_PARALLEL_FOR
	for (int64_t i = 0; i < n; i++) {
		double s = 0.0;
		for (int64_t d = 0; d < D; d++)
			s += (double)ap[i * D + d] * (double)bp[i * D + d];
		op_[i] = (float)s;
	}
	return TERN_OK;
}

/* ---- the router --------------------------------------------------------------------------- */

/* The selection key: probabilities are >= 0, so a NaN ranks below all of them as -1. */
static float route_key(float p) { return p == p ? p : -1.0f; }

/* Whether (a, ea) ranks after (b, eb): smaller key, or an equal key and a larger expert id. */
static bool route_after(float a, int64_t ea, float b, int64_t eb) { return a < b || (a == b && ea > eb); }

/* Per token: softmax in double (max subtracted) rounded to fp32, then k passes each taking the
 * best (key, -id) that ranks after the previous pick: descending, ties in ascending id, O(k E)
 * and no scratch. Counts are summed after all tokens. */
enum tern_status tern_cpu_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				     struct tern_view prob, struct tern_view counts, struct tern_view logits,
				     int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk";
	enum tern_status st;
	void *sv, *wv, *pv, *cv, *lv;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	(void)be;
	if ((st = tern_cpu_view(op, "sel", sel, (size_t)(T * k) * 4, 4, &sv, "T=%lld k=%lld i32", lT, lk)) ||
	    (st = tern_cpu_view(op, "w", w, (size_t)(T * k) * 4, 4, &wv, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = tern_cpu_view(op, "prob", prob, (size_t)(T * E) * 4, 4, &pv, "T=%lld E=%lld f32", lT,
				lE)) ||
	    (st = tern_cpu_view(op, "counts", counts, (size_t)E * 4, 4, &cv, "E=%lld i32", lE)) ||
	    (st = tern_cpu_view(op, "logits", logits, (size_t)(T * E) * 4, 4, &lv, "T=%lld E=%lld f32", lT,
				lE)))
		return st;
	int32_t *sp = sv, *cp = cv;
	float *wp = wv, *pp = pv;
	const float *lp = lv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		const float *l = lp + t * E;
		float *p = pp + t * E;
		double m = -INFINITY, s = 0.0;
		for (int64_t e = 0; e < E; e++)
			m = l[e] > m ? l[e] : m;
		for (int64_t e = 0; e < E; e++)
			s += exp((double)l[e] - m);
		for (int64_t e = 0; e < E; e++)
			p[e] = (float)(exp((double)l[e] - m) / s);
		float prev = INFINITY;
		int64_t pe = -1;
		double vs = 0.0;
		for (int64_t j = 0; j < k; j++) {
			int64_t best = -1;
			float bk = 0.0f;
			for (int64_t e = 0; e < E; e++) {
				float q = route_key(p[e]);
				if (pe >= 0 && !route_after(q, e, prev, pe))
					continue; /* already taken (or ranks before the previous pick) */
				if (best < 0 || route_after(bk, best, q, e))
					best = e, bk = q;
			}
			sp[t * k + j] = (int32_t)best;
			wp[t * k + j] = p[best];
			vs += (double)p[best];
			prev = bk;
			pe = best;
		}
		if (norm)
			for (int64_t j = 0; j < k; j++)
				wp[t * k + j] = (float)((double)wp[t * k + j] / vs);
	}
	for (int64_t e = 0; e < E; e++)
		cp[e] = 0;
	for (int64_t i = 0; i < T * k; i++)
		cp[sp[i]]++;
	return TERN_OK;
}

/* dlogits (=) in double per token; every sel is checked before anything is written. */
enum tern_status tern_cpu_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					 struct tern_view dw, struct tern_view prob, struct tern_view sel,
					 int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk_bwd";
	enum tern_status st;
	void *dv, *wv, *pv, *sv;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	(void)be;
	if ((st = tern_cpu_view(op, "dlogits", dlogits, (size_t)(T * E) * 4, 4, &dv, "T=%lld E=%lld f32", lT,
				lE)) ||
	    (st = tern_cpu_view(op, "dw", dw, (size_t)(T * k) * 4, 4, &wv, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = tern_cpu_view(op, "prob", prob, (size_t)(T * E) * 4, 4, &pv, "T=%lld E=%lld f32", lT,
				lE)) ||
	    (st = tern_cpu_view(op, "sel", sel, (size_t)(T * k) * 4, 4, &sv, "T=%lld k=%lld i32", lT, lk)))
		return st;
	const int32_t *sp = sv;
	if ((st = idx_range(op, "sel", sp, T * k, E, "E")))
		return st;
	float *dp = dv;
	const float *gp = wv, *pp = pv;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < T; t++) {
		const int32_t *s = sp + t * k;
		const float *g = gp + t * k, *p = pp + t * E;
		float *d = dp + t * E;
		double S = 0.0, gv = 0.0, dvv = 0.0;
		for (int64_t j = 0; j < k; j++) {
			S += (double)p[s[j]];
			gv += (double)g[j] * (double)p[s[j]];
		}
		for (int64_t j = 0; j < k; j++) {
			double dvj = norm ? ((double)g[j] - gv / S) / S : (double)g[j];
			dvv += dvj * (double)p[s[j]];
		}
		for (int64_t e = 0; e < E; e++) {
			double dpe = 0.0;
			for (int64_t j = 0; j < k; j++)
				if (s[j] == e)
					dpe += norm ? ((double)g[j] - gv / S) / S : (double)g[j];
			d[e] = (float)((double)p[e] * (dpe - dvv));
		}
	}
	return TERN_OK;
}
