/* test_ops: the mixture-of-experts row ops (gather_rows, scatter_add_rows, rowdot) on every
 * backend against double-precision oracles; the adjoint identities that tie them together
 * (<scatter(x, w), c> = Σ_i w_i · rowdot(x, gather(c))_i, and with unit weights = <x, gather(c)>);
 * finite differences of the linear losses they make; bad and repeated idx; the front doors.
 * Included by tests/test_ops.c after the harness. */
#ifndef TERN_TEST_OPS_MOE_H
#define TERN_TEST_OPS_MOE_H

#include "test_ops_harness.h"

/* n distinct rows of [0, T) in random order (n <= T): a partial Fisher-Yates shuffle. */
static bool moe_distinct(struct rng *r, int32_t *idx, int64_t n, int64_t T)
{
	int32_t *p = calloc((size_t)T + 1, 4);
	if (!p)
		return false;
	for (int64_t t = 0; t < T; t++)
		p[t] = (int32_t)t;
	for (int64_t i = 0; i < n; i++) {
		int64_t j = i + (int64_t)(rng_u64(r) % (uint64_t)(T - i));
		int32_t s = p[i];
		p[i] = p[j];
		p[j] = s;
		idx[i] = p[i];
	}
	free(p);
	return true;
}

/* Checks that a rejected call failed with TERN_E_INVALID naming op and `need`. */
static void moe_rejected(struct chk *c, enum tern_status st, const char *op, const char *need)
{
	if (st != TERN_E_INVALID || !strstr(tern_error(), op) || !strstr(tern_error(), need))
		fail(c, "got %s \"%s\", want invalid naming %s and %s", tern_status_str(st), tern_error(), op,
		     need);
}

/* ---- gather_rows ------------------------------------------------------------------------- */

/* y = x[idx] bit for bit onto a NaN y, idx with repeats, the first and last rows. bad_at >= 0:
 * idx[bad_at] = Tx (and, with room, a later -1): the CPU fails naming it and writes nothing;
 * Vulkan writes NaN rows there and the right rows elsewhere. */
static void check_gather_rows(struct suite *s, int64_t n, int64_t Tx, int64_t D, int64_t bad_at)
{
	struct chk c;
	chk_begin(&c, s, "gather_rows", "n=%lld Tx=%lld D=%lld%s", (long long)n, (long long)Tx, (long long)D,
		  bad_at >= 0 ? " bad idx" : "");
	if (skip_unsupported(&c, TERN_OP_GATHER_ROWS, TERN_F32))
		return;
	float *x = fvec(Tx * D), *got = fvec(n * D);
	int32_t *idx = calloc((size_t)n + 1, 4);
	if (!x || !got || !idx) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, Tx * D, 1.0);
	for (int64_t i = 0; i < n; i++)
		idx[i] = (int32_t)(rng_u64(&c.r) % (uint64_t)Tx);
	if (n > 0)
		idx[0] = (int32_t)(Tx - 1);
	if (n > 2)
		idx[n - 1] = 0;
	if (bad_at >= 0) {
		idx[bad_at] = (int32_t)Tx;
		if (bad_at + 2 < n)
			idx[bad_at + 2] = -1;
	}
	struct dten *dx = dt_new(&c, "x", (size_t)(Tx * D) * 4, x),
		    *di = dt_new(&c, "idx", (size_t)n * 4, idx);
	struct dten *dy = dt_nan(&c, "y", n * D);
	if (!dx || !di || !dy)
		goto out;
	enum tern_status st = tern_gather_rows(s->be, dy->v, dx->v, di->v, n, Tx, D);
	if (bad_at >= 0 && s->is_cpu) {
		char need[64];
		snprintf(need, sizeof need, "idx[%lld] = %lld", (long long)bad_at, (long long)Tx);
		moe_rejected(&c, st, "gather_rows", need);
		if (dt_get(&c, dy, got)) /* a rejected call writes nothing: y is still all NaN */
			for (int64_t i = 0; i < n * D; i++)
				if (!isnan(got[i])) {
					fail(&c, "y[%lld] written by a rejected call", (long long)i);
					break;
				}
	} else if (!bad(&c, st, "gather_rows") && dt_get(&c, dy, got)) {
		for (int64_t i = 0; i < n * D; i++) {
			int32_t r = idx[i / D];
			bool in = r >= 0 && r < Tx;
			if (in ? memcmp(&got[i], &x[(int64_t)r * D + i % D], 4) != 0 : !isnan(got[i])) {
				fail(&c, "y[%lld] (i=%lld idx=%d) = %g, want %g", (long long)i,
				     (long long)(i / D), (int)r, (double)got[i],
				     in ? (double)x[(int64_t)r * D + i % D] : NAN);
				c.err = INFINITY;
				break;
			}
		}
	}
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, di, idx);
out:
	free(x);
	free(got);
	free(idx);
	chk_end(&c);
}

/* ---- scatter_add_rows -------------------------------------------------------------------- */

/* y[idx[i]] += w[i] x[i] onto a non-zero y, distinct idx (a random subset of the rows, in random
 * order), with weights or with a size-0 w (unit weights: one fp32 add per element).
 * Rows no idx names must come back bit for bit. badk: 1 = idx out of range at position n/2, 2 = a
 * repeated idx; the CPU must fail naming it and leave y as it was; Vulkan (badk == 1 only) skips
 * that row. */
static void check_scatter_add_rows(struct suite *s, int64_t n, int64_t Ty, int64_t D, bool weighted, int badk)
{
	struct chk c;
	chk_begin(&c, s, "scatter_add", "n=%lld Ty=%lld D=%lld %s%s", (long long)n, (long long)Ty,
		  (long long)D, weighted ? "w" : "unit w",
		  badk == 1   ? " bad idx"
		  : badk == 2 ? " repeat"
			      : "");
	if (skip_unsupported(&c, TERN_OP_SCATTER_ADD_ROWS, TERN_F32))
		return;
	float *y0 = fvec(Ty * D), *x = fvec(n * D), *w = fvec(n), *got = fvec(Ty * D);
	int32_t *idx = calloc((size_t)n + 1, 4);
	double *want = dvec(Ty * D), *mag = dvec(Ty * D);
	if (!y0 || !x || !w || !got || !idx || !want || !mag || !moe_distinct(&c.r, idx, n, Ty)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, y0, Ty * D, 1.0);
	fill_sym(&c.r, x, n * D, 1.0);
	for (int64_t i = 0; i < n; i++)
		w[i] = weighted ? (float)rng_unif(&c.r) : 1.0f; /* router weights lie in [0, 1] */
	int64_t at = n / 2;
	if (badk == 1)
		idx[at] = (int32_t)Ty;
	if (badk == 2)
		idx[at] = idx[0];
	for (int64_t k = 0; k < Ty * D; k++) {
		want[k] = y0[k];
		mag[k] = fabs((double)y0[k]);
	}
	for (int64_t i = 0; i < n; i++)
		for (int64_t j = 0; idx[i] >= 0 && idx[i] < Ty && j < D; j++) {
			double p = (double)w[i] * (double)x[i * D + j];
			want[(int64_t)idx[i] * D + j] += p;
			mag[(int64_t)idx[i] * D + j] += fabs(p);
		}
	struct dten *dy = dt_new(&c, "y", (size_t)(Ty * D) * 4, y0),
		    *dx = dt_new(&c, "x", (size_t)(n * D) * 4, x);
	struct dten *di = dt_new(&c, "idx", (size_t)n * 4, idx), *dw = dt_new(&c, "w", (size_t)n * 4, w);
	if (!dy || !dx || !di || !dw)
		goto out;
	struct tern_view wv = weighted ? dw->v : (struct tern_view){0};
	enum tern_status st = tern_scatter_add_rows(s->be, dy->v, dx->v, di->v, wv, n, Ty, D);
	if (badk && s->is_cpu) {
		char need[96];
		if (badk == 1)
			snprintf(need, sizeof need, "idx[%lld] = %lld", (long long)at, (long long)Ty);
		else
			snprintf(need, sizeof need, "idx[0] = idx[%lld] = %d", (long long)at, (int)idx[0]);
		moe_rejected(&c, st, "scatter_add_rows", need);
		dt_unchanged(&c, dy, y0);
		goto out;
	}
	if (bad(&c, st, "scatter_add_rows") || !dt_get(&c, dy, got))
		goto out;
	cmp_mag(&c, "y", got, want, mag, Ty * D, 1e-6);
	/* rows no idx names: untouched, bit for bit */
	for (int64_t t = 0; t < Ty; t++) {
		bool hit = false;
		for (int64_t i = 0; i < n && !hit; i++)
			hit = idx[i] == t;
		if (!hit && memcmp(got + t * D, y0 + t * D, (size_t)D * 4) != 0) {
			fail(&c, "row %lld, named by no idx, was changed", (long long)t);
			break;
		}
	}
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, di, idx);
	dt_unchanged(&c, dw, w);
out:
	free(y0);
	free(x);
	free(w);
	free(got);
	free(idx);
	free(want);
	free(mag);
	chk_end(&c);
}

/* ---- rowdot ------------------------------------------------------------------------------ */

/* out = row sums of a·b onto a NaN out against the double sums (mag: Σ|a b| per row, where the
 * terms cancel); twice, the same bits both times (the fixed summation order). */
static void check_rowdot(struct suite *s, int64_t n, int64_t D)
{
	struct chk c;
	const char *var = getenv("TERN_VK_VARIANT");
	chk_begin(&c, s, "rowdot", "n=%lld D=%lld%s%s", (long long)n, (long long)D, var ? " " : "",
		  var ? var : "");
	if (skip_unsupported(&c, TERN_OP_ROWDOT, TERN_F32))
		return;
	float *a = fvec(n * D), *b = fvec(n * D), *g1 = fvec(n), *g2 = fvec(n);
	double *want = dvec(n), *mag = dvec(n);
	if (!a || !b || !g1 || !g2 || !want || !mag) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, a, n * D, 1.0);
	fill_sym(&c.r, b, n * D, 1.0);
	for (int64_t i = 0; i < n; i++)
		for (int64_t d = 0; d < D; d++) {
			double p = (double)a[i * D + d] * (double)b[i * D + d];
			want[i] += p;
			mag[i] += fabs(p);
		}
	struct dten *da = dt_new(&c, "a", (size_t)(n * D) * 4, a),
		    *db = dt_new(&c, "b", (size_t)(n * D) * 4, b);
	struct dten *dout = dt_nan(&c, "out", n);
	if (!da || !db || !dout)
		goto out;
	if (bad(&c, tern_rowdot(s->be, dout->v, da->v, db->v, n, D), "rowdot") || !dt_get(&c, dout, g1))
		goto out;
	cmp_mag(&c, "out", g1, want, mag, n, TOL_F32);
	if (bad(&c, tern_rowdot(s->be, dout->v, da->v, db->v, n, D), "rowdot again") || !dt_get(&c, dout, g2))
		goto out;
	if (memcmp(g1, g2, (size_t)n * 4) != 0)
		fail(&c, "a second call gave different bits");
	dt_unchanged(&c, da, a);
	dt_unchanged(&c, db, b);
out:
	free(a);
	free(b);
	free(g1);
	free(g2);
	free(want);
	free(mag);
	chk_end(&c);
}

/* ---- the adjoint identities and finite differences ----------------------------------------- */

/* With x [n, D], c [Ty, D], w [n] and distinct idx, all through the ops:
 *   z = scatter_add_rows(0, x, w), g = gather_rows(c), r = rowdot(g, x):
 *   <z, c> = Σ_i w_i r_i                       (scatter with weights is gather's transpose)
 *   z1 = scatter_add_rows(0, x, unit): <z1, c> = <x, g>
 * and central differences of the linear losses, against gradients the ops make:
 *   L(w) = <c, scatter(x, w)>   dL/dw_i = r_i                  (the routing weight's gradient)
 *   L(x) = <c, scatter(x, w)>   dL/dx_i = w_i g_i
 *   L(x) = <e, gather(x)>       dL/dx   = scatter(0, e, unit)  (gather's backward), e [n, D] */
static void check_moe_adjoint(struct suite *s, int64_t n, int64_t Ty, int64_t D)
{
	struct chk c;
	chk_begin(&c, s, "fd", "moe rows adjoint n=%lld Ty=%lld D=%lld", (long long)n, (long long)Ty,
		  (long long)D);
	if (skip_unsupported(&c, TERN_OP_GATHER_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_SCATTER_ADD_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROWDOT, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	float *x = fvec(n * D), *cc = fvec(Ty * D), *w = fvec(n), *e = fvec(n * D);
	float *z = fvec(Ty * D), *z1 = fvec(Ty * D), *g = fvec(n * D), *r = fvec(n), *xt = fvec(Ty * D);
	float *zero = fvec(Ty * D), *xp = fvec(n * D), *wp = fvec(n), *gx = fvec(Ty * D), *ge = fvec(n * D);
	int32_t *idx = calloc((size_t)n + 1, 4);
	double *fw = dvec(n), *fx = dvec(n * D), *fg = dvec(Ty * D);
	if (!x || !cc || !w || !e || !z || !z1 || !g || !r || !xt || !zero || !xp || !wp || !gx || !ge ||
	    !idx || !fw || !fx || !fg || !moe_distinct(&c.r, idx, n, Ty)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n * D, 1.0);
	fill_sym(&c.r, cc, Ty * D, 1.0);
	fill_sym(&c.r, e, n * D, 1.0);
	for (int64_t i = 0; i < n; i++)
		w[i] = (float)rng_unif(&c.r);
	struct dten *dx = dt_new(&c, "x", (size_t)(n * D) * 4, x),
		    *dc = dt_new(&c, "c", (size_t)(Ty * D) * 4, cc);
	struct dten *dw = dt_new(&c, "w", (size_t)n * 4, w), *di = dt_new(&c, "idx", (size_t)n * 4, idx);
	struct dten *dz = dt_new(&c, "z", (size_t)(Ty * D) * 4, zero), *dg = dt_nan(&c, "g", n * D);
	struct dten *dr = dt_nan(&c, "r", n);
	struct dten *de = dt_new(&c, "e", (size_t)(n * D) * 4, e), *dgx = dt_nan(&c, "gx", n * D);
	if (!dx || !dc || !dw || !di || !dz || !dg || !dr || !de || !dgx)
		goto out;
	struct tern_view unit = {0};
	/* the identities */
	if (bad(&c, tern_scatter_add_rows(be, dz->v, dx->v, di->v, dw->v, n, Ty, D), "scatter") ||
	    !dt_get(&c, dz, z) || bad(&c, be->vt->upload(be, dz->v, zero), "upload") ||
	    bad(&c, tern_scatter_add_rows(be, dz->v, dx->v, di->v, unit, n, Ty, D), "scatter unit") ||
	    !dt_get(&c, dz, z1) || bad(&c, tern_gather_rows(be, dg->v, dc->v, di->v, n, Ty, D), "gather") ||
	    !dt_get(&c, dg, g) || bad(&c, tern_rowdot(be, dr->v, dg->v, dx->v, n, D), "rowdot") ||
	    !dt_get(&c, dr, r))
		goto out;
	double zc = 0.0, z1c = 0.0, xg = 0.0, wr = 0.0, m = 0.0;
	for (int64_t k = 0; k < Ty * D; k++) {
		zc += (double)z[k] * cc[k];
		z1c += (double)z1[k] * cc[k];
	}
	for (int64_t i = 0; i < n; i++) {
		wr += (double)w[i] * r[i];
		for (int64_t d = 0; d < D; d++) {
			xg += (double)x[i * D + d] * g[i * D + d];
			m += fabs((double)x[i * D + d] * g[i * D + d]);
		}
	}
	m = fmax(m, 1e-30);
	if (fabs(zc - wr) / m > 1e-6 || fabs(z1c - xg) / m > 1e-6)
		fail(&c,
		     "adjoint: <scatter(x,w),c> = %.9g vs Σ w·rowdot = %.9g; <scatter(x),c> = %.9g vs "
		     "<x,gather(c)> = %.9g",
		     zc, wr, z1c, xg);
	if (fabs(zc - wr) / m > c.err)
		c.err = fabs(zc - wr) / m;
	/* finite differences; every loss is linear, so the step only sets the rounding */
	const float h = 0.25f;
	memcpy(wp, w, (size_t)n * 4);
	memcpy(xp, x, (size_t)(n * D) * 4);
	for (int64_t k = 0; k < n + n * D; k++) {
		bool onw = k < n;
		float *v = onw ? wp : xp;
		int64_t at = onw ? k : k - n;
		float keep = v[at], vs[2] = {keep + h, keep - h};
		double L[2];
		for (int q = 0; q < 2; q++) {
			v[at] = vs[q];
			if (bad(&c, be->vt->upload(be, onw ? dw->v : dx->v, v), "upload") ||
			    bad(&c, be->vt->upload(be, dz->v, zero), "upload") ||
			    bad(&c, tern_scatter_add_rows(be, dz->v, dx->v, di->v, dw->v, n, Ty, D),
				"scatter") ||
			    !dt_get(&c, dz, xt))
				goto out;
			L[q] = 0.0;
			for (int64_t i = 0; i < Ty * D; i++)
				L[q] += (double)cc[i] * xt[i];
		}
		v[at] = keep;
		if (bad(&c, be->vt->upload(be, onw ? dw->v : dx->v, v), "upload"))
			goto out;
		double d = (L[0] - L[1]) / ((double)vs[0] - (double)vs[1]);
		if (onw)
			fw[at] = d;
		else
			fx[at] = d;
	}
	float *gw = fvec(n * D);
	if (!gw) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t i = 0; i < n * D; i++)
		gw[i] = w[i / D] * g[i];
	cmp(&c, "dL/dw (rowdot) vs finite differences", r, fw, n, 1e-4);
	cmp(&c, "dL/dx (w·gather) vs finite differences", gw, fx, n * D, 1e-4);
	free(gw);
	/* gather's backward: L(x) = <e, gather(x)> over x [Ty, D] (c's tensor as x) */
	if (bad(&c, be->vt->upload(be, dz->v, zero), "upload") ||
	    bad(&c, tern_scatter_add_rows(be, dz->v, de->v, di->v, unit, n, Ty, D), "scatter unit") ||
	    !dt_get(&c, dz, gx))
		goto out;
	memcpy(xt, cc, (size_t)(Ty * D) * 4);
	for (int64_t k = 0; k < Ty * D; k++) {
		float keep = xt[k], vs[2] = {keep + h, keep - h};
		double L[2];
		for (int q = 0; q < 2; q++) {
			xt[k] = vs[q];
			if (bad(&c, be->vt->upload(be, dc->v, xt), "upload") ||
			    bad(&c, tern_gather_rows(be, dgx->v, dc->v, di->v, n, Ty, D), "gather") ||
			    !dt_get(&c, dgx, ge))
				goto out;
			L[q] = 0.0;
			for (int64_t i = 0; i < n * D; i++)
				L[q] += (double)e[i] * ge[i];
		}
		xt[k] = keep;
		fg[k] = (L[0] - L[1]) / ((double)vs[0] - (double)vs[1]);
	}
	cmp(&c, "gather backward (scatter) vs finite differences", gx, fg, Ty * D, 1e-4);
out:
	free(x);
	free(cc);
	free(w);
	free(e);
	free(z);
	free(z1);
	free(g);
	free(r);
	free(xt);
	free(zero);
	free(xp);
	free(wp);
	free(gx);
	free(ge);
	free(idx);
	free(fw);
	free(fx);
	free(fg);
	chk_end(&c);
}

/* ---- argument errors --------------------------------------------------------------------- */

static void check_moe_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "gather_rows, scatter_add_rows, rowdot arguments");
	if (skip_unsupported(&c, TERN_OP_GATHER_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_SCATTER_ADD_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROWDOT, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	struct dten *a = dt_new(&c, "a", 64 * 4, NULL), *b = dt_new(&c, "b", 64 * 4, NULL);
	struct dten *sh = dt_new(&c, "short", 3 * 4, NULL);
	if (!a || !b || !sh)
		goto out;
	/* n = 4 rows of D = 16 from Tx = 4: a, b hold 64 floats; "short" 3 */
	moe_rejected(&c, tern_gather_rows(be, a->v, b->v, sh->v, 4, 4, 16), "gather_rows",
		     "idx view is 12 bytes");
	moe_rejected(&c, tern_gather_rows(be, a->v, b->v, b->v, 4, 5, 16), "gather_rows", "x view");
	moe_rejected(&c, tern_gather_rows(be, sh->v, b->v, b->v, 4, 4, 16), "gather_rows", "y view");
	moe_rejected(&c, tern_gather_rows(be, a->v, b->v, b->v, 4, 4, 0), "gather_rows", "D=0");
	moe_rejected(&c, tern_gather_rows(be, a->v, b->v, b->v, -1, 4, 16), "gather_rows", "n=-1");
	moe_rejected(&c, tern_scatter_add_rows(be, a->v, b->v, b->v, sh->v, 4, 4, 16), "scatter_add_rows",
		     "w view is 12 bytes");
	moe_rejected(&c, tern_scatter_add_rows(be, a->v, b->v, b->v, b->v, 4, 5, 16), "scatter_add_rows",
		     "y view");
	moe_rejected(&c, tern_scatter_add_rows(be, a->v, b->v, b->v, b->v, 4, -2, 16), "scatter_add_rows",
		     "Ty=-2");
	moe_rejected(&c, tern_scatter_add_rows(be, a->v, b->v, b->v, b->v, INT64_C(1) << 40, 4, 16),
		     "scatter_add_rows", "out of range");
	moe_rejected(&c, tern_rowdot(be, a->v, b->v, sh->v, 4, 16), "rowdot", "b view");
	moe_rejected(&c, tern_rowdot(be, sh->v, b->v, b->v, 4, 16), "rowdot", "out view");
	moe_rejected(&c, tern_rowdot(be, a->v, b->v, b->v, 4, 0), "rowdot", "D=0");
	/* n = 0: nothing to do, and nothing written */
	if (bad(&c, tern_gather_rows(be, a->v, b->v, b->v, 0, 4, 16), "gather_rows n=0") ||
	    bad(&c, tern_scatter_add_rows(be, a->v, b->v, b->v, (struct tern_view){0}, 0, 4, 16),
		"scatter_add_rows n=0") ||
	    bad(&c, tern_rowdot(be, a->v, b->v, b->v, 0, 16), "rowdot n=0"))
		goto out;
	unsigned char pat[64 * 4];
	memset(pat, GUARD_BYTE, sizeof pat);
	dt_unchanged(&c, a, pat);
	dt_unchanged(&c, b, pat);
	dt_unchanged(&c, sh, pat);
out:
	chk_end(&c);
}

/* ---- larger than one binding ------------------------------------------------------------- */

/* x [8200, 4100] f32 (128.3 MiB, past lavapipe's 128 MiB maxStorageBufferRange): Vulkan binds it
 * in chunks of rows. gather rows on both sides of the chunk boundary (and the last row), scatter
 * them back with weights, and rowdot over all of x against itself. */
static void check_moe_large(struct suite *s)
{
	const int64_t T = 8200, D = 4100, n = 8;
	struct chk c;
	chk_begin(&c, s, "moe rows", "f32 T=%lld D=%lld (%.1f MiB)", (long long)T, (long long)D,
		  (double)(T * D * 4) / 1048576.0);
	if (skip_unsupported(&c, TERN_OP_GATHER_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_SCATTER_ADD_ROWS, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROWDOT, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	float *x = fvec(T * D), *got = fvec(T * D), *g = fvec(n * D), *r = fvec(T);
	double *want = dvec(T), *mag = dvec(T);
	struct tern_buffer *xb = NULL;
	if (!x || !got || !g || !r || !want || !mag) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * D, 1.0);
	enum tern_status st = be->vt->buffer_alloc(be, (size_t)(T * D) * 4, &xb);
	if (st == TERN_E_DEVICE_MEM || st == TERN_E_NOMEM) {
		char tail[600];
		snprintf(tail, sizeof tail, "skipped (cannot allocate x: %s)", tern_error());
		print_line(s, c.op, c.desc, tail);
		s->skipped++;
		goto done;
	}
	if (bad(&c, st, "x alloc"))
		goto out;
	struct tern_view xv = {xb, 0, (size_t)(T * D) * 4};
	int32_t idx[8] = {0, (int32_t)T - 1, 8182, 8183, 8184, 4000, 1, 8100};
	float w[8] = {0.5f, 0.25f, 1.0f, 0.125f, 2.0f, 0.0625f, 4.0f, 0.5f}; /* exact products */
	struct dten *di = dt_new(&c, "idx", sizeof idx, idx), *dw = dt_new(&c, "w", sizeof w, w);
	struct dten *dg = dt_nan(&c, "g", n * D), *dr = dt_nan(&c, "r", T);
	if (!di || !dw || !dg || !dr || bad(&c, be->vt->upload(be, xv, x), "x upload") ||
	    bad(&c, tern_gather_rows(be, dg->v, xv, di->v, n, T, D), "gather_rows") || !dt_get(&c, dg, g))
		goto out;
	for (int64_t i = 0; i < n; i++)
		if (memcmp(g + i * D, x + (int64_t)idx[i] * D, (size_t)D * 4) != 0) {
			fail(&c, "gather: row %lld (idx %d) differs from x", (long long)i, (int)idx[i]);
			c.err = INFINITY;
			goto out;
		}
	/* rowdot over all of x against itself */
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; j < D; j++) {
			double q = (double)x[t * D + j] * x[t * D + j];
			want[t] += q;
			mag[t] += q;
		}
	if (bad(&c, tern_rowdot(be, dr->v, xv, xv, T, D), "rowdot") || !dt_get(&c, dr, r))
		goto out;
	cmp_mag(&c, "rowdot", r, want, mag, T, TOL_F32);
	/* x[idx[i]] += w[i] g[i]: powers of two make each product exact, so fused or not, each
	 * element is one fp32 add and must match bit for bit */
	if (bad(&c, tern_scatter_add_rows(be, xv, dg->v, di->v, dw->v, n, T, D), "scatter_add_rows") ||
	    bad(&c, be->vt->download(be, got, xv), "x download"))
		goto out;
	for (int64_t i = 0; i < n; i++) {
		float *row = x + (int64_t)idx[i] * D;
		for (int64_t j = 0; j < D; j++)
			row[j] = row[j] + w[i] * row[j];
	}
	if (memcmp(got, x, (size_t)(T * D) * 4) != 0) {
		fail(&c, "scatter_add_rows: x differs from x + w·gather(x) on the gathered rows");
		c.err = INFINITY;
	}
out:
	chk_end(&c);
done:
	if (xb)
		be->vt->buffer_free(be, xb);
	free(x);
	free(got);
	free(g);
	free(r);
	free(want);
	free(mag);
}

/* ---- the group ---------------------------------------------------------------------------- */

static void check_moe_all(struct suite *s)
{
	/* (n, T, D): single rows, odd sizes, n > T (gather repeats), D past one workgroup, and a
	 * Mixtral-like group (a few hundred tokens of D = 4096 would be slow here: D = 1030) */
	static const int64_t gs[][3] = {{1, 1, 1}, {17, 5, 33}, {40, 300, 7}, {3, 9, 1030}, {257, 64, 20}};
	for (int k = 0; k < 5; k++)
		check_gather_rows(s, gs[k][0], gs[k][1], gs[k][2], -1);
	check_gather_rows(s, 0, 4, 8, -1);
	check_gather_rows(s, 9, 20, 16, 3);
	/* scatter: n <= Ty (distinct) */
	static const int64_t ss[][3] = {{1, 1, 1}, {5, 17, 33}, {300, 300, 7}, {3, 9, 1030}, {64, 257, 20}};
	for (int k = 0; k < 5; k++)
		for (int wt = 0; wt < 2; wt++)
			check_scatter_add_rows(s, ss[k][0], ss[k][1], ss[k][2], wt, 0);
	check_scatter_add_rows(s, 0, 4, 8, true, 0);
	check_scatter_add_rows(s, 9, 20, 16, true, 1);
	check_scatter_add_rows(s, 9, 20, 16, false, 1);
	if (s->is_cpu)
		check_scatter_add_rows(s, 9, 20, 16, true, 2);
	static const int64_t rs[][2] = {{1, 1}, {17, 33}, {5, 1030}, {300, 64}, {2, 4099}, {0, 8}};
	for (int k = 0; k < 6; k++)
		check_rowdot(s, rs[k][0], rs[k][1]);
	if (!s->is_cpu) { /* the tree-sum variant, which GPUs run, on lavapipe too */
		setenv("TERN_VK_VARIANT", "tiled", 1);
		for (int k = 0; k < 6; k++)
			check_rowdot(s, rs[k][0], rs[k][1]);
		unsetenv("TERN_VK_VARIANT");
	}
	check_moe_adjoint(s, 1, 1, 1);
	check_moe_adjoint(s, 5, 7, 6);
	check_moe_errors(s);
	const char *large = getenv("TERN_TEST_LARGE");
	if (large && !strcmp(large, "0")) {
		print_line(s, "moe rows", "f32 > 128 MiB", "skipped (TERN_TEST_LARGE=0)");
		s->skipped++;
	} else {
		check_moe_large(s);
	}
}

#endif
