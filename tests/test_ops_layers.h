/* test_ops: the per-layer transformer ops (rmsnorm, rmsnorm_bwd, rope, swiglu, swiglu_bwd,
 * embed) on every backend against double-precision oracles, and finite-difference checks of the
 * backward ops on the CPU backend. Included by tests/test_ops.c after the harness. */
#ifndef TERN_TEST_OPS_LAYERS_H
#define TERN_TEST_OPS_LAYERS_H

#include "test_ops_harness.h"

/* Nonlinear finite differences (rmsnorm, silu): Richardson-extrapolated central differences
 * with steps h and 2h, so the error is O(h⁴) plus rounding of the fp32 forward over 2h. */
#define LAYERS_FD_H 1e-2
#define LAYERS_TOL_FD_NL 2e-4

static const char *act_name(enum tern_act a) { return a == TERN_ACT_SILU ? "silu" : "relu2"; }

/* L = Σ g·y over a device output, in double. */
static bool layers_loss(struct chk *c, struct dten *y, const float *g, int64_t n, double *L)
{
	float *h = fvec(n);
	if (!h) {
		fail(c, "out of host memory");
		return false;
	}
	bool ok = dt_get(c, y, h);
	double s = 0.0;
	for (int64_t i = 0; ok && i < n; i++)
		s += (double)g[i] * h[i];
	free(h);
	*L = s;
	return ok;
}

/* ---- rmsnorm ------------------------------------------------------------------------------ */

/* rstd[t] = 1/sqrt(mean x² + eps) in double */
static double ref_rstd(const float *xt, int64_t D, float eps)
{
	double ss = 0.0;
	for (int64_t j = 0; j < D; j++)
		ss += (double)xt[j] * xt[j];
	return 1.0 / sqrt(ss / (double)D + (double)eps);
}

static void check_rmsnorm(struct suite *s, int64_t T, int64_t D, float eps)
{
	struct chk c;
	chk_begin(&c, s, "rmsnorm", "T=%lld D=%lld eps=%g", (long long)T, (long long)D, (double)eps);
	if (skip_unsupported(&c, TERN_OP_RMSNORM, TERN_F32))
		return;
	float *x = fvec(T * D), *w = fvec(D);
	double *want = dvec(T * D), *wr = dvec(T);
	if (!x || !w || !want || !wr) {
		fail(&c, "out of host memory");
		goto out;
	}
	/* rows of very different scales: rstd must follow each one */
	for (int64_t t = 0; t < T; t++)
		fill_sym(&c.r, x + t * D, D, t % 3 == 2 ? 30.0 : t % 3 == 1 ? 0.01 : 1.0);
	for (int64_t j = 0; j < D; j++)
		w[j] = 1.0f + rng_sym(&c.r, 0.5);
	for (int64_t t = 0; t < T; t++) {
		wr[t] = ref_rstd(x + t * D, D, eps);
		for (int64_t j = 0; j < D; j++)
			want[t * D + j] = (double)x[t * D + j] * wr[t] * w[j];
	}
	struct dten *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x), *dw = dt_new(&c, "w", (size_t)D * 4, w);
	struct dten *dy = dt_nan(&c, "y", T * D), *dr = dt_nan(&c, "rstd", T);
	if (!dx || !dw || !dy || !dr)
		goto out;
	if (bad(&c, tern_rmsnorm(s->be, dy->v, dr->v, dx->v, dw->v, T, D, eps), "rmsnorm"))
		goto out;
	expect(&c, dy, want, T * D, TOL_F32);
	expect(&c, dr, wr, T, TOL_F32);
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, dw, w);
out:
	free(x);
	free(w);
	free(want);
	free(wr);
	chk_end(&c);
}

/* dx[T,D] (+)= r w dy − x r³/D Σ w dy x with r the fp32 rstd handed to the op */
static void ref_rmsnorm_bwd(double *dx, double *mag, const float *dy, const float *x, const float *w,
			    const float *r, int64_t T, int64_t D)
{
	for (int64_t t = 0; t < T; t++) {
		double rt = r[t], sum = 0.0;
		for (int64_t j = 0; j < D; j++)
			sum += (double)w[j] * dy[t * D + j] * x[t * D + j];
		for (int64_t j = 0; j < D; j++) {
			double a = rt * w[j] * dy[t * D + j],
			       b = (double)x[t * D + j] * rt * rt * rt * sum / D;
			dx[t * D + j] += a - b;
			mag[t * D + j] += fabs(a) + fabs(b);
		}
	}
}

static void check_rmsnorm_bwd(struct suite *s, int64_t T, int64_t D, bool acc)
{
	struct chk c;
	chk_begin(&c, s, "rmsnorm_bwd", "T=%lld D=%lld %s", (long long)T, (long long)D, acc ? "+=" : "=");
	if (skip_unsupported(&c, TERN_OP_RMSNORM_BWD, TERN_F32))
		return;
	float *x = fvec(T * D), *w = fvec(D), *dy = fvec(T * D), *r = fvec(T), *dx0 = fvec(T * D);
	double *want = dvec(T * D), *mag = dvec(T * D);
	if (!x || !w || !dy || !r || !dx0 || !want || !mag) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t t = 0; t < T; t++)
		fill_sym(&c.r, x + t * D, D, t % 2 ? 4.0 : 0.5);
	for (int64_t j = 0; j < D; j++)
		w[j] = 1.0f + rng_sym(&c.r, 0.5);
	fill_sym(&c.r, dy, T * D, 1.0);
	fill_sym(&c.r, dx0, T * D, 1.0);
	for (int64_t t = 0; t < T; t++)
		r[t] = (float)ref_rstd(x + t * D, D, 1e-6f);
	if (acc)
		for (int64_t i = 0; i < T * D; i++) {
			want[i] = dx0[i];
			mag[i] = fabs((double)dx0[i]);
		}
	ref_rmsnorm_bwd(want, mag, dy, x, w, r, T, D);
	struct dten *ddx = acc ? dt_new(&c, "dx", (size_t)(T * D) * 4, dx0) : dt_nan(&c, "dx", T * D);
	struct dten *ddy = dt_new(&c, "dy", (size_t)(T * D) * 4, dy),
		    *dxx = dt_new(&c, "x", (size_t)(T * D) * 4, x);
	struct dten *dw = dt_new(&c, "w", (size_t)D * 4, w), *dr = dt_new(&c, "rstd", (size_t)T * 4, r);
	if (!ddx || !ddy || !dxx || !dw || !dr)
		goto out;
	if (bad(&c, tern_rmsnorm_bwd(s->be, ddx->v, ddy->v, dxx->v, dw->v, dr->v, T, D, acc), "rmsnorm_bwd"))
		goto out;
	expect_mag(&c, ddx, want, mag, T * D, TOL_F32);
	dt_unchanged(&c, ddy, dy);
	dt_unchanged(&c, dxx, x);
	dt_unchanged(&c, dw, w);
	dt_unchanged(&c, dr, r);
out:
	free(x);
	free(w);
	free(dy);
	free(r);
	free(dx0);
	free(want);
	free(mag);
	chk_end(&c);
}

/* rmsnorm_bwd(dy = g) against Richardson central differences of L = Σ g·rmsnorm(x). */
static void check_fd_rmsnorm(struct suite *s, int64_t T, int64_t D)
{
	struct chk c;
	chk_begin(&c, s, "fd", "rmsnorm_bwd T=%lld D=%lld", (long long)T, (long long)D);
	if (skip_unsupported(&c, TERN_OP_RMSNORM, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_RMSNORM_BWD, TERN_F32))
		return;
	const float eps = 1e-5f;
	float *x = fvec(T * D), *w = fvec(D), *g = fvec(T * D), *grad = fvec(T * D);
	double *fd = dvec(T * D);
	if (!x || !w || !g || !grad || !fd) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * D, 1.0);
	for (int64_t j = 0; j < D; j++)
		w[j] = 1.0f + rng_sym(&c.r, 0.5);
	fill_sym(&c.r, g, T * D, 1.0);
	struct tern_backend *be = s->be;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x), *dw = dt_new(&c, "w", (size_t)D * 4, w);
	struct dten *dy = dt_nan(&c, "y", T * D), *dr = dt_nan(&c, "rstd", T);
	struct dten *dg = dt_new(&c, "g", (size_t)(T * D) * 4, g), *dgx = dt_nan(&c, "dx", T * D);
	if (!dx || !dw || !dy || !dr || !dg || !dgx)
		goto out;
	if (bad(&c, tern_rmsnorm(be, dy->v, dr->v, dx->v, dw->v, T, D, eps), "rmsnorm") ||
	    bad(&c, tern_rmsnorm_bwd(be, dgx->v, dg->v, dx->v, dw->v, dr->v, T, D, false), "rmsnorm_bwd") ||
	    !dt_get(&c, dgx, grad))
		goto out;
	for (int64_t j = 0; j < T * D; j++) {
		float keep = x[j];
		double d[2];
		for (int k = 0; k < 2; k++) {
			float xp = (float)(keep + LAYERS_FD_H * (k + 1)),
			      xm = (float)(keep - LAYERS_FD_H * (k + 1));
			double Lp, Lm;
			x[j] = xp;
			if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
			    bad(&c, tern_rmsnorm(be, dy->v, dr->v, dx->v, dw->v, T, D, eps), "rmsnorm") ||
			    !layers_loss(&c, dy, g, T * D, &Lp))
				goto out;
			x[j] = xm;
			if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
			    bad(&c, tern_rmsnorm(be, dy->v, dr->v, dx->v, dw->v, T, D, eps), "rmsnorm") ||
			    !layers_loss(&c, dy, g, T * D, &Lm))
				goto out;
			d[k] = (Lp - Lm) / ((double)xp - (double)xm);
		}
		x[j] = keep;
		fd[j] = (4.0 * d[0] - d[1]) / 3.0;
	}
	cmp(&c, "dx vs finite differences", grad, fd, T * D, LAYERS_TOL_FD_NL);
out:
	free(x);
	free(w);
	free(g);
	free(grad);
	free(fd);
	chk_end(&c);
}

/* ---- rope --------------------------------------------------------------------------------- */

/* inv_freq[Dh/2] = 1/theta^(2j/Dh), with llama3 scaling when factor > 0 (formats.md §4), in
 * double, rounded to fp32 once. */
static void ref_inv_freq(float *f, int64_t Dh, double theta, double factor, double low_ff, double high_ff,
			 double old_ctx)
{
	for (int64_t j = 0; j < Dh / 2; j++) {
		double inv = 1.0 / pow(theta, (double)(2 * j) / (double)Dh);
		if (factor > 0) {
			double wavelen = 6.283185307179586 / inv, low_wl = old_ctx / low_ff,
			       high_wl = old_ctx / high_ff;
			if (wavelen > low_wl) {
				inv = inv / factor;
			} else if (wavelen >= high_wl) {
				double smooth = (old_ctx / wavelen - low_ff) / (high_ff - low_ff);
				inv = (1.0 - smooth) * inv / factor + smooth * inv;
			}
		}
		f[j] = (float)inv;
	}
}

/* Positions of a packed row: samples of random lengths, each counting from 0 (or, with big,
 * from a random start below 131000, as a 128k context would). */
static void fill_positions(struct rng *r, int32_t *pos, int64_t T, bool big)
{
	int32_t p = big ? (int32_t)(rng_unif(r) * 131000) : 0;
	for (int64_t t = 0; t < T; t++) {
		if (t > 0 && rng_unif(r) < 0.15)
			p = big ? (int32_t)(rng_unif(r) * 131000) : 0;
		pos[t] = p++;
	}
}

/* y = rotate(x) by ±θ, θ = fp32(fp32(pos) · inv_freq) (the one rounding HF makes) in double */
static void ref_rope(double *y, const float *x, const int32_t *pos, const float *f, int64_t T, int64_t H,
		     int64_t Dh, bool inverse)
{
	int64_t half = Dh / 2;
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i < half; i++) {
			float th = (float)pos[t] * f[i];
			double cs = cos((double)th), sn = (inverse ? -1.0 : 1.0) * sin((double)th);
			for (int64_t h = 0; h < H; h++) {
				const float *xr = x + (t * H + h) * Dh;
				double *yr = y + (t * H + h) * Dh;
				yr[i] = xr[i] * cs - xr[i + half] * sn;
				yr[i + half] = xr[i + half] * cs + xr[i] * sn;
			}
		}
}

static void check_rope(struct suite *s, int64_t T, int64_t H, int64_t Dh, bool inverse, bool llama3, bool big)
{
	struct chk c;
	chk_begin(&c, s, "rope", "T=%lld H=%lld Dh=%lld%s%s%s", (long long)T, (long long)H, (long long)Dh,
		  inverse ? " inverse" : "", llama3 ? " llama3" : "", big ? " long ctx" : "");
	if (skip_unsupported(&c, TERN_OP_ROPE, TERN_F32))
		return;
	int64_t n = T * H * Dh;
	float *x = fvec(n), *f = fvec(Dh / 2);
	int32_t *pos = calloc((size_t)T + 1, 4);
	double *want = dvec(n);
	if (!x || !f || !pos || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	fill_positions(&c.r, pos, T, big);
	if (llama3)
		ref_inv_freq(f, Dh, 500000.0, 8.0, 1.0, 4.0, 8192.0);
	else
		ref_inv_freq(f, Dh, 10000.0, 0, 0, 0, 0);
	ref_rope(want, x, pos, f, T, H, Dh, inverse);
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dp = dt_new(&c, "pos", (size_t)T * 4, pos);
	struct dten *df = dt_new(&c, "inv_freq", (size_t)(Dh / 2) * 4, f);
	if (!dx || !dp || !df)
		goto out;
	if (bad(&c, tern_rope(s->be, dx->v, dp->v, df->v, T, H, Dh, inverse), "rope"))
		goto out;
	expect(&c, dx, want, n, TOL_F32);
	dt_unchanged(&c, dp, pos);
	dt_unchanged(&c, df, f);
out:
	free(x);
	free(f);
	free(pos);
	free(want);
	chk_end(&c);
}

/* rope2 on x [T, H, Dh] and x2 [T, H2, Dh] against rope on each, bit for bit (backend.h: the
 * same values; CUDA: one launch up to 16 tokens, rope twice above), and its refusal of x2 over x. */
static void check_rope2(struct suite *s, int64_t T, int64_t H, int64_t H2, int64_t Dh, bool inverse)
{
	struct chk c;
	chk_begin(&c, s, "rope2", "T=%lld H=%lld H2=%lld Dh=%lld%s", (long long)T, (long long)H,
		  (long long)H2, (long long)Dh, inverse ? " inverse" : "");
	if (skip_unsupported(&c, TERN_OP_ROPE, TERN_F32))
		return;
	int64_t n = T * H * Dh, n2 = T * H2 * Dh;
	float *x = fvec(n), *x2 = fvec(n2), *f = fvec(Dh / 2), *got = fvec(n > n2 ? n : n2);
	int32_t *pos = calloc((size_t)T + 1, 4);
	double *want = dvec(n), *want2 = dvec(n2);
	if (!x || !x2 || !f || !got || !pos || !want || !want2) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	fill_sym(&c.r, x2, n2, 1.0);
	fill_positions(&c.r, pos, T, true);
	ref_inv_freq(f, Dh, 500000.0, 8.0, 1.0, 4.0, 8192.0);
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dx2 = dt_new(&c, "x2", (size_t)n2 * 4, x2);
	struct dten *dp = dt_new(&c, "pos", (size_t)T * 4, pos),
		    *df = dt_new(&c, "inv_freq", (size_t)(Dh / 2) * 4, f);
	if (!dx || !dx2 || !dp || !df)
		goto out;
	/* rope's own results first, then x and x2 afresh */
	if (bad(&c, tern_rope(s->be, dx->v, dp->v, df->v, T, H, Dh, inverse), "rope") || !dt_get(&c, dx, got))
		goto out;
	for (int64_t k = 0; k < n; k++)
		want[k] = got[k];
	if (bad(&c, tern_rope(s->be, dx2->v, dp->v, df->v, T, H2, Dh, inverse), "rope") ||
	    !dt_get(&c, dx2, got))
		goto out;
	for (int64_t k = 0; k < n2; k++)
		want2[k] = got[k];
	if (bad(&c, s->be->vt->upload(s->be, dx->v, x), "upload") ||
	    bad(&c, s->be->vt->upload(s->be, dx2->v, x2), "upload") ||
	    bad(&c, tern_rope2(s->be, dx->v, H, dx2->v, H2, dp->v, df->v, T, Dh, inverse), "rope2"))
		goto out;
	expect(&c, dx, want, n, 0.0);
	expect(&c, dx2, want2, n2, 0.0);
	dt_unchanged(&c, dp, pos);
	/* x2 over x: refused, naming the op, x as rope2 left it */
	enum tern_status st = tern_rope2(s->be, dx->v, H, tern_view_sub(dx->v, 4, (size_t)n2 * 4), H2, dp->v,
					 df->v, T, Dh, inverse);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "rope2"))
		fail(&c, "x2 over x: got %s \"%s\"", tern_status_str(st), tern_error());
	expect(&c, dx, want, n, 0.0);
out:
	free(x);
	free(x2);
	free(f);
	free(got);
	free(pos);
	free(want);
	free(want2);
	chk_end(&c);
}

/* The gradient of L = Σ g·rope(x) with respect to x is rope_inverse(g): against central
 * differences (L is linear in x, so any step is exact up to rounding). */
static void check_fd_rope(struct suite *s, int64_t T, int64_t H, int64_t Dh)
{
	struct chk c;
	chk_begin(&c, s, "fd", "rope inverse T=%lld H=%lld Dh=%lld", (long long)T, (long long)H,
		  (long long)Dh);
	if (skip_unsupported(&c, TERN_OP_ROPE, TERN_F32))
		return;
	int64_t n = T * H * Dh;
	const float step = 0.5f;
	float *x = fvec(n), *f = fvec(Dh / 2), *g = fvec(n), *grad = fvec(n);
	int32_t *pos = calloc((size_t)T + 1, 4);
	double *fd = dvec(n);
	if (!x || !f || !g || !grad || !pos || !fd) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	fill_sym(&c.r, g, n, 1.0);
	fill_positions(&c.r, pos, T, true);
	ref_inv_freq(f, Dh, 500000.0, 8.0, 1.0, 4.0, 8192.0);
	struct tern_backend *be = s->be;
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dg = dt_new(&c, "g", (size_t)n * 4, g);
	struct dten *dp = dt_new(&c, "pos", (size_t)T * 4, pos),
		    *df = dt_new(&c, "inv_freq", (size_t)(Dh / 2) * 4, f);
	if (!dx || !dg || !dp || !df)
		goto out;
	if (bad(&c, tern_rope(be, dg->v, dp->v, df->v, T, H, Dh, true), "rope inverse") ||
	    !dt_get(&c, dg, grad))
		goto out;
	for (int64_t j = 0; j < n; j++) {
		float keep = x[j], xp = keep + step, xm = keep - step;
		double Lp, Lm;
		x[j] = xp;
		if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
		    bad(&c, tern_rope(be, dx->v, dp->v, df->v, T, H, Dh, false), "rope") ||
		    !layers_loss(&c, dx, g, n, &Lp))
			goto out;
		x[j] = xm;
		if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
		    bad(&c, tern_rope(be, dx->v, dp->v, df->v, T, H, Dh, false), "rope") ||
		    !layers_loss(&c, dx, g, n, &Lm))
			goto out;
		x[j] = keep;
		fd[j] = (Lp - Lm) / ((double)xp - (double)xm);
	}
	cmp(&c, "rope_inverse(g) vs finite differences", grad, fd, n, TOL_FD);
out:
	free(x);
	free(f);
	free(g);
	free(grad);
	free(pos);
	free(fd);
	chk_end(&c);
}

/* ---- swiglu ------------------------------------------------------------------------------- */

static double ref_act(double g, enum tern_act a)
{
	if (a == TERN_ACT_RELU2)
		return g > 0 ? g * g : 0.0;
	return g / (1.0 + exp(-g));
}

static double ref_act_grad(double g, enum tern_act a)
{
	if (a == TERN_ACT_RELU2)
		return g > 0 ? 2.0 * g : 0.0;
	double sg = 1.0 / (1.0 + exp(-g));
	return sg * (1.0 + g * (1.0 - sg));
}

/* gate values: wide range, never within 0.05 of 0 (relu² has a kink there), a few large ones
 * (silu saturates; exp(-g) overflows in fp32 below -88) */
static void fill_gate(struct rng *r, float *g, int64_t n)
{
	for (int64_t i = 0; i < n; i++)
		g[i] = rng_nonzero(r, 0.05, rng_unif(r) < 0.05 ? 100.0 : 6.0);
}

static void check_swiglu(struct suite *s, int64_t n, enum tern_act act)
{
	struct chk c;
	chk_begin(&c, s, "swiglu", "n=%lld %s", (long long)n, act_name(act));
	if (skip_unsupported(&c, TERN_OP_SWIGLU, TERN_F32))
		return;
	float *g = fvec(n), *u = fvec(n);
	double *want = dvec(n);
	if (!g || !u || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_gate(&c.r, g, n);
	fill_sym(&c.r, u, n, 2.0);
	for (int64_t i = 0; i < n; i++)
		want[i] = ref_act(g[i], act) * u[i];
	struct dten *dg = dt_new(&c, "g", (size_t)n * 4, g), *du = dt_new(&c, "u", (size_t)n * 4, u);
	struct dten *dh = dt_nan(&c, "h", n);
	if (!dg || !du || !dh || bad(&c, tern_swiglu(s->be, dh->v, dg->v, du->v, n, act), "swiglu"))
		goto out;
	expect(&c, dh, want, n, TOL_F32);
	dt_unchanged(&c, dg, g);
	dt_unchanged(&c, du, u);
out:
	free(g);
	free(u);
	free(want);
	chk_end(&c);
}

/* alias: dg written over g and du over dh, as the net calls it (backend.h allows exactly that) */
static void check_swiglu_bwd(struct suite *s, int64_t n, enum tern_act act, bool alias)
{
	struct chk c;
	chk_begin(&c, s, "swiglu_bwd", "n=%lld %s%s", (long long)n, act_name(act), alias ? " in place" : "");
	if (skip_unsupported(&c, TERN_OP_SWIGLU_BWD, TERN_F32))
		return;
	float *g = fvec(n), *u = fvec(n), *dh = fvec(n);
	double *wg = dvec(n), *wu = dvec(n);
	if (!g || !u || !dh || !wg || !wu) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_gate(&c.r, g, n);
	fill_sym(&c.r, u, n, 2.0);
	fill_sym(&c.r, dh, n, 1.0);
	for (int64_t i = 0; i < n; i++) {
		wg[i] = (double)dh[i] * u[i] * ref_act_grad(g[i], act);
		wu[i] = (double)dh[i] * ref_act(g[i], act);
	}
	struct dten *dg = dt_new(&c, "g", (size_t)n * 4, g), *du = dt_new(&c, "u", (size_t)n * 4, u);
	struct dten *ddh = dt_new(&c, "dh", (size_t)n * 4, dh);
	struct dten *odg = alias ? dg : dt_nan(&c, "dg", n), *odu = alias ? ddh : dt_nan(&c, "du", n);
	if (!dg || !du || !ddh || !odg || !odu ||
	    bad(&c, tern_swiglu_bwd(s->be, odg->v, odu->v, ddh->v, dg->v, du->v, n, act), "swiglu_bwd"))
		goto out;
	expect(&c, odg, wg, n, TOL_F32);
	expect(&c, odu, wu, n, TOL_F32);
	dt_unchanged(&c, du, u);
	if (!alias) {
		dt_unchanged(&c, dg, g);
		dt_unchanged(&c, ddh, dh);
	}
out:
	free(g);
	free(u);
	free(dh);
	free(wg);
	free(wu);
	chk_end(&c);
}

/* swiglu_bwd(dh = w) against central differences of L = Σ w·swiglu(g, u): with respect to u
 * (linear: exact) and g (Richardson; relu² is quadratic away from 0, so exact too). */
static void check_fd_swiglu(struct suite *s, int64_t n, enum tern_act act)
{
	struct chk c;
	chk_begin(&c, s, "fd", "swiglu_bwd n=%lld %s", (long long)n, act_name(act));
	if (skip_unsupported(&c, TERN_OP_SWIGLU, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_SWIGLU_BWD, TERN_F32))
		return;
	float *g = fvec(n), *u = fvec(n), *w = fvec(n), *gg = fvec(n), *gu = fvec(n);
	double *fg = dvec(n), *fu = dvec(n);
	if (!g || !u || !w || !gg || !gu || !fg || !fu) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t i = 0; i < n; i++)
		g[i] = rng_nonzero(&c.r, 0.05, 4.0);
	fill_sym(&c.r, u, n, 2.0);
	fill_sym(&c.r, w, n, 1.0);
	struct tern_backend *be = s->be;
	struct dten *dg = dt_new(&c, "g", (size_t)n * 4, g), *du = dt_new(&c, "u", (size_t)n * 4, u);
	struct dten *dw = dt_new(&c, "dh", (size_t)n * 4, w), *dh = dt_nan(&c, "h", n);
	struct dten *odg = dt_nan(&c, "dg", n), *odu = dt_nan(&c, "du", n);
	if (!dg || !du || !dw || !dh || !odg || !odu)
		goto out;
	if (bad(&c, tern_swiglu_bwd(be, odg->v, odu->v, dw->v, dg->v, du->v, n, act), "swiglu_bwd") ||
	    !dt_get(&c, odg, gg) || !dt_get(&c, odu, gu))
		goto out;
	for (int wrt = 0; wrt < 2; wrt++) {
		float *v = wrt ? u : g;
		struct dten *dv = wrt ? du : dg;
		double *fd = wrt ? fu : fg;
		for (int64_t j = 0; j < n; j++) {
			float keep = v[j];
			double d[2];
			for (int k = 0; k < 2; k++) {
				double hstep = wrt ? 0.5 : LAYERS_FD_H;
				float vp = (float)(keep + hstep * (k + 1)),
				      vm = (float)(keep - hstep * (k + 1));
				double Lp, Lm;
				v[j] = vp;
				if (bad(&c, be->vt->upload(be, dv->v, v), "upload") ||
				    bad(&c, tern_swiglu(be, dh->v, dg->v, du->v, n, act), "swiglu") ||
				    !layers_loss(&c, dh, w, n, &Lp))
					goto out;
				v[j] = vm;
				if (bad(&c, be->vt->upload(be, dv->v, v), "upload") ||
				    bad(&c, tern_swiglu(be, dh->v, dg->v, du->v, n, act), "swiglu") ||
				    !layers_loss(&c, dh, w, n, &Lm))
					goto out;
				d[k] = (Lp - Lm) / ((double)vp - (double)vm);
			}
			v[j] = keep;
			fd[j] = wrt ? d[0] : (4.0 * d[0] - d[1]) / 3.0;
		}
		if (bad(&c, be->vt->upload(be, dv->v, v), "upload"))
			goto out;
	}
	cmp(&c, "dg vs finite differences", gg, fg, n, LAYERS_TOL_FD_NL);
	cmp(&c, "du vs finite differences", gu, fu, n, TOL_FD);
out:
	free(g);
	free(u);
	free(w);
	free(gg);
	free(gu);
	free(fg);
	free(fu);
	chk_end(&c);
}

/* ---- embed -------------------------------------------------------------------------------- */

/* E [V, D] in dt (the values any dtype holds exactly: the oracle is a plain copy) */
static void *embed_table(struct rng *r, enum tern_dtype dt, int64_t V, int64_t D, float **deq)
{
	size_t es = tern_dtype_size(dt);
	unsigned char *E = calloc((size_t)(V * D) * es + 4, 1);
	*deq = fvec(V * D);
	if (!E || !*deq) {
		free(E);
		return NULL;
	}
	for (int64_t i = 0; i < V * D; i++) {
		float v = rng_normal(r);
		if (dt == TERN_F32) {
			memcpy(E + i * 4, &v, 4);
			(*deq)[i] = v;
		} else {
			uint16_t h = dt == TERN_F16 ? tern_f32_to_f16(v) : tern_f32_to_bf16(v);
			memcpy(E + i * 2, &h, 2);
			(*deq)[i] = dt == TERN_F16 ? tern_f16_to_f32(h) : tern_bf16_to_f32(h);
		}
	}
	return E;
}

/* bad_at >= 0: ids[bad_at] (and, when there is room, a later one) is out of range. The CPU
 * must fail with TERN_E_INVALID naming ids[bad_at] and write nothing; Vulkan, which cannot
 * see the ids without a download, writes NaN rows for them and the right rows elsewhere. */
static void check_embed(struct suite *s, enum tern_dtype dt, int64_t T, int64_t V, int64_t D, int64_t bad_at)
{
	struct chk c;
	chk_begin(&c, s, "embed", "%-4s T=%lld V=%lld D=%lld%s", tern_dtype_name(dt), (long long)T,
		  (long long)V, (long long)D, bad_at >= 0 ? " bad id" : "");
	if (skip_unsupported(&c, TERN_OP_EMBED, dt))
		return;
	float *deq = NULL, *got = fvec(T * D);
	void *E = embed_table(&c.r, dt, V, D, &deq);
	int32_t *ids = calloc((size_t)T + 1, 4);
	double *want = dvec(T * D);
	if (!E || !got || !ids || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t t = 0; t < T; t++)
		ids[t] = (int32_t)(rng_u64(&c.r) % (uint64_t)V);
	ids[0] = (int32_t)(V - 1); /* the last row is reachable */
	if (bad_at >= 0) {
		ids[bad_at] = (int32_t)V;
		if (bad_at + 2 < T)
			ids[bad_at + 2] = -1;
	}
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; j < D; j++)
			want[t * D + j] = ids[t] >= 0 && ids[t] < V ? deq[ids[t] * D + j] : NAN;
	size_t ebytes = (size_t)(V * D) * tern_dtype_size(dt);
	struct dten *de = dt_new(&c, "E", ebytes, E), *di = dt_new(&c, "ids", (size_t)T * 4, ids);
	struct dten *dy = dt_nan(&c, "y", T * D);
	if (!de || !di || !dy)
		goto out;
	struct tern_weight w = {.dtype = dt, .O = V, .I = D, .data = de->v};
	enum tern_status st = tern_embed(s->be, dy->v, di->v, &w, T);
	if (bad_at >= 0 && s->is_cpu) {
		char need[64];
		snprintf(need, sizeof need, "ids[%lld] = %lld", (long long)bad_at, (long long)V);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "embed") || !strstr(tern_error(), need))
			fail(&c, "bad id: got %s \"%s\", want invalid naming %s", tern_status_str(st),
			     tern_error(), need);
		/* a rejected call writes nothing: y is still all NaN */
		if (dt_get(&c, dy, got))
			for (int64_t i = 0; i < T * D; i++)
				if (!isnan(got[i])) {
					fail(&c, "y[%lld] written by a rejected call", (long long)i);
					break;
				}
	} else if (!bad(&c, st, "embed") && dt_get(&c, dy, got)) {
		/* a bit-exact copy; NaN where the id is out of range */
		for (int64_t i = 0; i < T * D; i++) {
			bool ok = isnan(want[i]) ? isnan(got[i]) : (double)got[i] == want[i];
			if (!ok) {
				fail(&c, "y[%lld] (t=%lld id=%d) = %g, want %g", (long long)i,
				     (long long)(i / D), (int)ids[i / D], (double)got[i], want[i]);
				c.err = INFINITY;
				break;
			}
		}
	}
	dt_unchanged(&c, de, E);
	dt_unchanged(&c, di, ids);
out:
	free(E);
	free(deq);
	free(got);
	free(ids);
	free(want);
	chk_end(&c);
}

/* embed_bwd: dE[ids[t]] += dy[t] onto a non-zero dE, ids with many repeats (V small against T),
 * the first and last rows, against a double oracle. bad_at >= 0: ids[bad_at] = V; the CPU must
 * fail naming it and leave dE as it was; Vulkan skips that token. fd (CPU): central differences
 * of L(E) = Σ c · embed(E) (the forward op) against embed_bwd of c from a zero dE. */
static void check_embed_bwd(struct suite *s, int64_t T, int64_t V, int64_t D, int64_t bad_at, bool fd)
{
	struct chk c;
	chk_begin(&c, s, fd ? "fd" : "embed_bwd", "%sT=%lld V=%lld D=%lld%s", fd ? "embed_bwd " : "",
		  (long long)T, (long long)V, (long long)D, bad_at >= 0 ? " bad id" : "");
	if (skip_unsupported(&c, TERN_OP_EMBED_BWD, TERN_F32))
		return;
	float *e0 = fvec(V * D), *dy = fvec(T * D), *got = fvec(V * D), *y = fvec(T * D);
	int32_t *ids = calloc((size_t)T + 1, 4);
	double *want = dvec(V * D), *fdv = dvec(V * D);
	if (!e0 || !dy || !got || !y || !ids || !want || !fdv) {
		fail(&c, "out of host memory");
		goto out;
	}
	if (!fd)
		fill_sym(&c.r, e0, V * D, 1.0);
	fill_sym(&c.r, dy, T * D, 1.0);
	for (int64_t t = 0; t < T; t++)
		ids[t] = (int32_t)(rng_u64(&c.r) % (uint64_t)V);
	ids[0] = (int32_t)(V - 1);
	if (T > 2)
		ids[T - 1] = 0;
	if (bad_at >= 0)
		ids[bad_at] = (int32_t)V;
	for (int64_t i = 0; i < V * D; i++)
		want[i] = e0[i];
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; ids[t] >= 0 && ids[t] < V && j < D; j++)
			want[ids[t] * D + j] += dy[t * D + j];
	struct dten *de = dt_new(&c, "dE", (size_t)(V * D) * 4, e0),
		    *ddy = dt_new(&c, "dy", (size_t)(T * D) * 4, dy);
	struct dten *di = dt_new(&c, "ids", (size_t)T * 4, ids);
	if (!de || !ddy || !di)
		goto out;
	struct tern_backend *be = s->be;
	enum tern_status st = tern_embed_bwd(be, de->v, ddy->v, di->v, T, V, D);
	if (bad_at >= 0 && s->is_cpu) {
		char need[64];
		snprintf(need, sizeof need, "ids[%lld] = %lld", (long long)bad_at, (long long)V);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "embed_bwd") || !strstr(tern_error(), need))
			fail(&c, "bad id: got %s \"%s\", want invalid naming %s", tern_status_str(st),
			     tern_error(), need);
		dt_unchanged(&c, de, e0);
		goto out;
	}
	if (bad(&c, st, "embed_bwd"))
		goto out;
	expect(&c, de, want, V * D, 1e-6);
	dt_unchanged(&c, ddy, dy);
	dt_unchanged(&c, di, ids);
	if (!fd || !dt_get(&c, de, got))
		goto out;
	/* L(E) = Σ_t Σ_j dy[t, j] · E[ids[t], j]: the gradient is embed_bwd(dy) from dE = 0 */
	struct dten *dE = dt_new(&c, "E", (size_t)(V * D) * 4, e0), *dyo = dt_nan(&c, "y", T * D);
	if (!dE || !dyo)
		goto out;
	struct tern_weight w = {.dtype = TERN_F32, .O = V, .I = D, .data = dE->v};
	float *E = fvec(V * D);
	if (!E)
		goto out;
	fill_sym(&c.r, E, V * D, 1.0);
	const float h = 1e-2f;
	for (int64_t k = 0; k < V * D; k++) {
		float keep = E[k], es[2] = {keep + h, keep - h};
		double L[2];
		for (int q = 0; q < 2; q++) {
			E[k] = es[q];
			if (bad(&c, be->vt->upload(be, dE->v, E), "upload") ||
			    bad(&c, tern_embed(be, dyo->v, di->v, &w, T), "embed") || !dt_get(&c, dyo, y)) {
				free(E);
				goto out;
			}
			L[q] = 0.0;
			for (int64_t i = 0; i < T * D; i++)
				L[q] += (double)dy[i] * (double)y[i];
		}
		E[k] = keep;
		fdv[k] = (L[0] - L[1]) / ((double)es[0] - (double)es[1]);
	}
	free(E);
	cmp(&c, "dE vs finite differences", got, fdv, V * D, 1e-3);
out:
	free(e0);
	free(dy);
	free(got);
	free(y);
	free(ids);
	free(want);
	free(fdv);
	chk_end(&c);
}

/* An f32 table larger than 128 MiB (lavapipe's maxStorageBufferRange): Vulkan binds it in
 * chunks of rows; ids on both sides of the chunk boundary and the last row. */
static void check_embed_large(struct suite *s)
{
	const int64_t T = 8, V = 8200, D = 4100;
	struct chk c;
	chk_begin(&c, s, "embed", "f32  T=%lld V=%lld D=%lld (%.1f MiB)", (long long)T, (long long)V,
		  (long long)D, (double)(V * D * 4) / 1048576.0);
	if (skip_unsupported(&c, TERN_OP_EMBED, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	float *E = fvec(V * D), *got = fvec(T * D);
	if (!E || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, E, V * D, 1.0);
	int32_t ids[8] = {0, (int32_t)V - 1, 8183, 8184, 8185, 4000, 1, 8100};
	struct tern_buffer *eb = NULL;
	enum tern_status st = be->vt->buffer_alloc(be, (size_t)(V * D) * 4, &eb);
	if (st == TERN_E_DEVICE_MEM || st == TERN_E_NOMEM) {
		char tail[600];
		snprintf(tail, sizeof tail, "skipped (cannot allocate the table: %s)", tern_error());
		print_line(s, c.op, c.desc, tail);
		s->skipped++;
		free(E);
		free(got);
		return;
	}
	if (bad(&c, st, "E alloc"))
		goto out;
	struct tern_weight w = {.dtype = TERN_F32, .O = V, .I = D, .data = {eb, 0, (size_t)(V * D) * 4}};
	struct dten *di = dt_new(&c, "ids", sizeof ids, ids), *dy = dt_nan(&c, "y", T * D);
	if (di && dy && !bad(&c, be->vt->upload(be, w.data, E), "E upload") &&
	    !bad(&c, tern_embed(be, dy->v, di->v, &w, T), "embed") && dt_get(&c, dy, got))
		for (int64_t t = 0; t < T; t++)
			if (memcmp(got + t * D, E + (int64_t)ids[t] * D, (size_t)D * 4) != 0) {
				fail(&c, "row t=%lld (id %d) differs from E", (long long)t, (int)ids[t]);
				c.err = INFINITY;
				break;
			}
	be->vt->buffer_free(be, eb);
out:
	free(E);
	free(got);
	chk_end(&c);
}

/* ---- argument errors ---------------------------------------------------------------------- */

static void check_layers_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "rmsnorm, rope, swiglu, embed arguments");
	if (skip_unsupported(&c, TERN_OP_RMSNORM, TERN_F32) || skip_unsupported(&c, TERN_OP_ROPE, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_SWIGLU, TERN_F32) || skip_unsupported(&c, TERN_OP_EMBED, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	struct dten *a = dt_new(&c, "a", 64 * 4, NULL), *b = dt_new(&c, "b", 64 * 4, NULL);
	struct dten *sh = dt_new(&c, "short", 60 * 4, NULL);
	if (!a || !b || !sh)
		goto out;
	enum tern_status st = tern_rmsnorm(be, a->v, b->v, sh->v, b->v, 4, 16, 1e-6f);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "rmsnorm") || !strstr(tern_error(), "x"))
		fail(&c, "rmsnorm short x: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_rope(be, a->v, b->v, b->v, 4, 2, 7, false);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "rope") || !strstr(tern_error(), "Dh"))
		fail(&c, "rope odd Dh: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_swiglu(be, a->v, sh->v, b->v, 64, TERN_ACT_SILU);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "swiglu") || !strstr(tern_error(), "g"))
		fail(&c, "swiglu short g: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_weight w = {
		.dtype = TERN_NF4, .O = 4, .I = 16, .blocksize = 64, .data = a->v, .absmax = b->v};
	st = tern_embed(be, b->v, a->v, &w, 2);
	if (st == TERN_OK || !strstr(tern_error(), "embed"))
		fail(&c, "embed nf4 table: got %s \"%s\"", tern_status_str(st), tern_error());
	/* rejected calls write nothing */
	dt_get(&c, a, NULL);
	dt_get(&c, b, NULL);
out:
	chk_end(&c);
}

/* ---- the group ---------------------------------------------------------------------------- */

static void check_layers_all(struct suite *s)
{
	/* the multiples of 4 (64, 1000, 2048, 4096, 4100) run CUDA's float4 row kernels (the default;
	 * TERN_CUDA_NORM=row the others) at 1, 1, 2, 4 and 8 float4 a thread (4100: the last lanes
	 * partly idle) */
	static const int64_t rms_shapes[][2] = {{1, 1},    {3, 17},   {17, 64},  {5, 1000},
						{2, 4099}, {2, 2048}, {2, 4096}, {3, 4100}};
	for (int k = 0; k < 8; k++) {
		check_rmsnorm(s, rms_shapes[k][0], rms_shapes[k][1], k == 2 ? 1e-5f : 1e-6f);
		check_rmsnorm_bwd(s, rms_shapes[k][0], rms_shapes[k][1], false);
		check_rmsnorm_bwd(s, rms_shapes[k][0], rms_shapes[k][1], true);
	}
	check_rmsnorm(s, 4, 33, 0.0f);

	/* (T, H, Dh); {1, 32, 128}: a decode step of Llama's q at a far position (CUDA: a thread per
	 * head below 17 tokens); {20, 11, 64}: CUDA's eight-head groups and the three left over */
	static const int64_t rope_shapes[][3] = {{1, 1, 2},    {7, 3, 10},   {33, 4, 64},
						 {19, 2, 128}, {1, 32, 128}, {20, 11, 64}};
	for (int k = 0; k < 6; k++)
		for (int inv = 0; inv < 2; inv++)
			check_rope(s, rope_shapes[k][0], rope_shapes[k][1], rope_shapes[k][2], inv, false,
				   k == 2 || k == 4);
	check_rope(s, 19, 2, 128, false, true, true);
	check_rope(s, 19, 2, 128, true, true, true);
	check_rope(s, 40, 1, 128, false, true, false);
	/* rope2: a decode step's q and k (Llama 3: 32 and 8 heads of 128), a few tokens, and past
	 * CUDA's one-launch path (17 tokens) */
	for (int inv = 0; inv < 2; inv++) {
		check_rope2(s, 1, 32, 8, 128, inv);
		check_rope2(s, 5, 3, 1, 10, inv);
		check_rope2(s, 17, 4, 2, 64, inv);
	}

	/* 4100: a multiple of 4 (CUDA's four-element kernels), the others not */
	static const int64_t mn[] = {1, 17, 4099, 4100};
	for (int a = 0; a < 2; a++)
		for (int k = 0; k < 4; k++) {
			check_swiglu(s, mn[k], a ? TERN_ACT_RELU2 : TERN_ACT_SILU);
			check_swiglu_bwd(s, mn[k], a ? TERN_ACT_RELU2 : TERN_ACT_SILU, false);
			check_swiglu_bwd(s, mn[k], a ? TERN_ACT_RELU2 : TERN_ACT_SILU, true);
		}

	static const enum tern_dtype et[] = {TERN_F32, TERN_F16, TERN_BF16};
	for (int d = 0; d < 3; d++) {
		check_embed(s, et[d], 1, 1, 1, -1);
		check_embed(s, et[d], 17, 50, 33, -1);
		check_embed(s, et[d], 9, 1000, 130, -1);
	}
	check_embed(s, TERN_F32, 9, 50, 16, 3);
	check_embed(s, TERN_BF16, 5, 50, 7, 4);
	check_embed_bwd(s, 1, 1, 1, -1, false);
	check_embed_bwd(s, 40, 7, 33, -1, false);
	check_embed_bwd(s, 300, 50, 300, -1, false);
	check_embed_bwd(s, 9, 20, 16, 3, false);
	if (s->is_cpu)
		check_embed_bwd(s, 6, 4, 5, -1, true);
	const char *large = getenv("TERN_TEST_LARGE");
	if (large && !strcmp(large, "0")) {
		print_line(s, "embed", "f32 > 128 MiB", "skipped (TERN_TEST_LARGE=0)");
		s->skipped++;
	} else {
		check_embed_large(s);
	}

	check_layers_errors(s);

	if (s->is_cpu) {
		check_fd_rmsnorm(s, 3, 17);
		check_fd_rmsnorm(s, 2, 64);
		check_fd_rope(s, 5, 2, 16);
		check_fd_swiglu(s, 33, TERN_ACT_SILU);
		check_fd_swiglu(s, 33, TERN_ACT_RELU2);
	}
}

#endif
