/* test_ops group "loss": the fused lm_head + cross-entropy (ce_loss) against a double oracle on
 * every backend, chunking forced through TERN_CE_CHUNK, masked tokens, bad labels, and central
 * finite differences of the loss with respect to x on the CPU backend. Included by test_ops.c. */
#ifndef TERN_TEST_OPS_LOSS_H
#define TERN_TEST_OPS_LOSS_H

#include "test_ops_harness.h"

/* POSIX, not declared by <stdlib.h> in strict C11 mode */
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);

#define TOL_CE 2e-5 /* loss and dx: fp32 logits, exp and log */

/* loss_add = inv_n · Σ_t (lse(z_t) − z_t[y_t]) and dx[T,D] = inv_n · (softmax(z_t) − onehot) · W,
 * both in double, over trained tokens (dx = 0 elsewhere). W deq [V, D]. */
static void ref_ce_loss(double *loss_add, double *dx, const float *x, const float *W, const int32_t *lab,
			int64_t T, int64_t V, int64_t D, double inv_n)
{
	double *z = dvec(V);
	double total = 0.0;
	for (int64_t t = 0; t < T; t++) {
		double *dxt = dx + t * D;
		for (int64_t i = 0; i < D; i++)
			dxt[i] = 0.0;
		if (lab[t] == -100 || !z)
			continue;
		double m = -INFINITY;
		for (int64_t v = 0; v < V; v++) {
			double s = 0.0;
			for (int64_t i = 0; i < D; i++)
				s += (double)x[t * D + i] * (double)W[v * D + i];
			z[v] = s;
			m = s > m ? s : m;
		}
		double se = 0.0;
		for (int64_t v = 0; v < V; v++)
			se += exp(z[v] - m);
		double lse = m + log(se);
		total += lse - z[lab[t]];
		for (int64_t v = 0; v < V; v++) {
			double g = inv_n * (exp(z[v] - lse) - (v == lab[t] ? 1.0 : 0.0));
			for (int64_t i = 0; i < D; i++)
				dxt[i] += g * (double)W[v * D + i];
		}
	}
	*loss_add = inv_n * total;
	free(z);
}

/* Runs ce_loss with TERN_CE_CHUNK = chunk (0: the backend's own chunk). */
static enum tern_status ce_call(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				struct tern_view x, const struct tern_weight *w, struct tern_view lab,
				int64_t T, float inv_n, int64_t chunk, enum tern_dtype prec)
{
	char buf[32];
	if (chunk > 0) {
		snprintf(buf, sizeof buf, "%lld", (long long)chunk);
		setenv("TERN_CE_CHUNK", buf, 1);
	}
	enum tern_status st = tern_ce_loss(be, loss, dx, (struct tern_view){0}, x, w, lab, T, inv_n, prec);
	if (chunk > 0)
		unsetenv("TERN_CE_CHUNK");
	return st;
}

static void check_ce_loss_prec(struct suite *s, enum tern_dtype dt, int64_t T, int64_t D, int64_t V, int mask,
			       int64_t chunk, enum tern_dtype prec);
static void check_ce_loss(struct suite *s, enum tern_dtype dt, int64_t T, int64_t D, int64_t V, int mask,
			  int64_t chunk)
{
	check_ce_loss_prec(s, dt, T, D, V, mask, chunk, TERN_F32);
}

/* F16 products (x, W and the probabilities rounded to f16 around an fp32 softmax, logits of a
 * few units): about 1e-3 normwise, held to 5e-3; a wrong tile or scale is off by O(1). */
#define TOL_CE_F16 5e-3
/* BF16 products: the same roundings at 2^-8 relative (eight times F16's bound). */
#define TOL_CE_BF16 4e-2

/* mask: 0 about a quarter of the tokens untrained, 1 all untrained, 2 none. */
static void check_ce_loss_prec(struct suite *s, enum tern_dtype dt, int64_t T, int64_t D, int64_t V, int mask,
			       int64_t chunk, enum tern_dtype prec)
{
	static const char *const mnames[] = {"some masked", "all masked", "none masked"};
	struct chk c;
	double tol = prec == TERN_F16 ? TOL_CE_F16 : prec == TERN_BF16 ? TOL_CE_BF16 : TOL_CE;
	chk_begin(&c, s, "ce_loss", "%-4s T=%lld D=%lld V=%lld %s chunk=%lld%s", tern_dtype_name(dt),
		  (long long)T, (long long)D, (long long)V, mnames[mask], (long long)chunk,
		  prec == TERN_F16    ? " f16"
		  : prec == TERN_BF16 ? " bf16"
				      : "");
	if (skip_unsupported(&c, TERN_OP_CE_LOSS, dt))
		return;
	struct hweight hw;
	float *x = fvec(T * D), *dxg = fvec(T * D);
	int32_t *lab = calloc((size_t)T + 1, sizeof(int32_t));
	double *want = dvec(T * D);
	if (!x || !dxg || !lab || !want || !hweight_make(&hw, dt, 0, V, D, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * D, 3.0);
	int64_t n = 0;
	for (int64_t t = 0; t < T; t++) {
		bool masked = mask == 1 || (mask == 0 && rng_unif(&c.r) < 0.25);
		/* the first and last vocabulary rows as targets too */
		lab[t] = masked   ? -100
			 : t == 0 ? 0
			 : t == 1 ? (int32_t)(V - 1)
				  : (int32_t)(rng_u64(&c.r) % (uint64_t)V);
		n += !masked;
	}
	/* normalised over a window larger than this micro-batch, as with gradient accumulation */
	float inv_n = n ? 1.0f / (float)(n + 2) : 0.5f;
	float loss0 = 0.75f;
	double add;
	ref_ce_loss(&add, want, x, hw.deq, lab, T, V, D, inv_n);

	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x);
	struct dten *dl = dt_new(&c, "labels", (size_t)T * 4, lab);
	struct dten *dloss = dt_new(&c, "loss", 4, &loss0);
	struct dten *ddx = dt_nan(&c, "dx", T * D);
	if (!dx || !dl || !dloss || !ddx || !dweight_make(&c, &hw, &w))
		goto out_w;
	if (bad(&c, ce_call(s->be, dloss->v, ddx->v, dx->v, &w, dl->v, T, inv_n, chunk, prec), "ce_loss"))
		goto out_w;
	double wl = (double)loss0 + add, ml = fabs((double)loss0) + fabs(add);
	expect_mag(&c, dloss, &wl, &ml, 1, tol);
	expect(&c, ddx, want, T * D, tol);
	if (dt_get(&c, ddx, dxg))
		for (int64_t t = 0; t < T; t++)
			for (int64_t i = 0; lab[t] == -100 && i < D; i++)
				if (dxg[t * D + i] != 0.0f) {
					fail(&c, "dx[%lld][%lld] = %g for an untrained token", (long long)t,
					     (long long)i, (double)dxg[t * D + i]);
					t = T;
					break;
				}
	if (n == 0) {
		float got;
		if (dt_get(&c, dloss, &got) && got != loss0)
			fail(&c, "loss changed with every token masked: %.9g -> %.9g", (double)loss0,
			     (double)got);
	}
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, dl, lab);
	dt_unchanged(&c, dt_find(&c, "W data"), hw.data);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(dxg);
	free(lab);
	free(want);
	chk_end(&c);
}

/* A label outside [0, V) that is not -100: the CPU rejects the call (TERN_E_INVALID naming
 * ce_loss and labels, nothing written); the Vulkan backend cannot see labels without a host
 * round trip, so it makes the loss NaN (and that token's dx 0) instead. */
static void check_ce_loss_bad_label(struct suite *s, int32_t badv)
{
	struct chk c;
	chk_begin(&c, s, "ce_loss", "bad label %d", (int)badv);
	if (skip_unsupported(&c, TERN_OP_CE_LOSS, TERN_F32))
		return;
	const int64_t T = 3, D = 8, V = 10;
	struct hweight hw;
	float x[3 * 8], loss0 = 1.5f, got, dxg[3 * 8];
	int32_t lab[3] = {2, badv, 5};
	if (!hweight_make(&hw, TERN_F32, 0, V, D, &c.r)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	fill_sym(&c.r, x, T * D, 1.0);
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", sizeof x, x), *dl = dt_new(&c, "labels", sizeof lab, lab);
	struct dten *dloss = dt_new(&c, "loss", 4, &loss0), *ddx = dt_new(&c, "dx", sizeof x, x);
	if (!dx || !dl || !dloss || !ddx || !dweight_make(&c, &hw, &w))
		goto out;
	enum tern_status st = tern_ce_loss(s->be, dloss->v, ddx->v, (struct tern_view){0}, dx->v, &w, dl->v,
					   T, 0.5f, TERN_F32);
	if (s->is_cpu) {
		if (st != TERN_E_INVALID || !strstr(tern_error(), "ce_loss") ||
		    !strstr(tern_error(), "labels"))
			fail(&c, "got %s \"%s\"", tern_status_str(st), tern_error());
		if (dt_get(&c, dloss, &got) && got != loss0)
			fail(&c, "a rejected call changed the loss");
		dt_unchanged(&c, ddx, x);
	} else if (!bad(&c, st, "ce_loss") && dt_get(&c, dloss, &got) && dt_get(&c, ddx, dxg)) {
		if (!isnan(got))
			fail(&c, "loss = %g, want NaN", (double)got);
		for (int64_t i = 0; i < D; i++)
			if (dxg[D + i] != 0.0f) {
				fail(&c, "dx of the bad token is not 0");
				break;
			}
	}
out:
	hweight_free(&hw);
	chk_end(&c);
}

/* Central differences of L(x) = ce_loss (from loss = 0, inv_n = 1) against dx, on the CPU. The
 * loss is smooth, so the step h = 1e-2 leaves a truncation error of order h² · |L'''| (tiny for
 * these small logits) and a rounding error of about ulp(L) / 2h ≈ 3e-5 per element. */
static void check_fd_ce_loss(struct suite *s, int64_t T, int64_t D, int64_t V, int64_t chunk)
{
	struct chk c;
	chk_begin(&c, s, "fd", "ce_loss T=%lld D=%lld V=%lld chunk=%lld", (long long)T, (long long)D,
		  (long long)V, (long long)chunk);
	if (skip_unsupported(&c, TERN_OP_CE_LOSS, TERN_F32))
		return;
	struct hweight hw;
	float *x = fvec(T * D), *grad = fvec(T * D), zero = 0.0f;
	int32_t *lab = calloc((size_t)T + 1, sizeof(int32_t));
	double *fd = dvec(T * D);
	if (!x || !grad || !lab || !fd || !hweight_make(&hw, TERN_F32, 0, V, D, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	/* larger weights than hweight_make's, so the softmax is far from uniform */
	for (int64_t i = 0; i < V * D; i++)
		hw.deq[i] *= 8.0f;
	memcpy(hw.data, hw.deq, (size_t)(V * D) * 4);
	fill_sym(&c.r, x, T * D, 1.0);
	for (int64_t t = 0; t < T; t++)
		lab[t] = t == 1 ? -100 : (int32_t)(rng_u64(&c.r) % (uint64_t)V);
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x),
		    *dl = dt_new(&c, "labels", (size_t)T * 4, lab);
	struct dten *dloss = dt_new(&c, "loss", 4, &zero), *dg = dt_nan(&c, "dx", T * D);
	if (!dx || !dl || !dloss || !dg || !dweight_make(&c, &hw, &w))
		goto out_w;
	struct tern_backend *be = s->be;
	if (bad(&c, ce_call(be, dloss->v, dg->v, dx->v, &w, dl->v, T, 1.0f, chunk, TERN_F32), "ce_loss") ||
	    !dt_get(&c, dg, grad))
		goto out_w;
	const float h = 1e-2f;
	for (int64_t j = 0; j < T * D; j++) {
		float keep = x[j], xs[2] = {keep + h, keep - h};
		double L[2];
		for (int k = 0; k < 2; k++) {
			float l;
			x[j] = xs[k];
			if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
			    bad(&c, be->vt->upload(be, dloss->v, &zero), "upload") ||
			    bad(&c, ce_call(be, dloss->v, dg->v, dx->v, &w, dl->v, T, 1.0f, chunk, TERN_F32),
				"ce_loss") ||
			    !dt_get(&c, dloss, &l))
				goto out_w;
			L[k] = l;
		}
		x[j] = keep;
		fd[j] = (L[0] - L[1]) / ((double)xs[0] - (double)xs[1]);
	}
	cmp(&c, "dx vs finite differences", grad, fd, T * D, 2e-3);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(grad);
	free(lab);
	free(fd);
	chk_end(&c);
}

/* ce_loss with dW (a trained lm_head, modules_to_save): dW += Σ_t dz_tᵀ x_t onto a dW that
 * starts non-zero (the += of accumulation), against the double oracle, with chunking forced;
 * on the CPU also central differences of the loss with respect to W. */
static void check_ce_loss_dw(struct suite *s, int64_t T, int64_t D, int64_t V, int64_t chunk, bool fd)
{
	struct chk c;
	chk_begin(&c, s, fd ? "fd" : "ce_loss", "%sdW T=%lld D=%lld V=%lld chunk=%lld", fd ? "ce_loss " : "",
		  (long long)T, (long long)D, (long long)V, (long long)chunk);
	if (skip_unsupported(&c, TERN_OP_CE_LOSS, TERN_F32))
		return;
	struct hweight hw;
	float *x = fvec(T * D), *dw0 = fvec(V * D), *got = fvec(V * D), zero = 0.0f;
	int32_t *lab = calloc((size_t)T + 1, sizeof(int32_t));
	double *want = dvec(V * D), *dxw = dvec(T * D), *fdv = dvec(V * D), *z = dvec(V);
	if (!x || !dw0 || !got || !lab || !want || !dxw || !fdv || !z ||
	    !hweight_make(&hw, TERN_F32, 0, V, D, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t i = 0; i < V * D; i++)
		hw.deq[i] *= 8.0f;
	memcpy(hw.data, hw.deq, (size_t)(V * D) * 4);
	fill_sym(&c.r, x, T * D, 1.0);
	fill_sym(&c.r, dw0, V * D, 0.5);
	for (int64_t t = 0; t < T; t++)
		lab[t] = t == 1 ? -100 : (int32_t)(rng_u64(&c.r) % (uint64_t)V);
	float inv_n = 1.0f / (float)(T + 1);
	/* the oracle: want = dW0 + Σ_t inv_n (softmax(z_t) − onehot)ᵀ x_t */
	for (int64_t i = 0; i < V * D; i++)
		want[i] = dw0[i];
	for (int64_t t = 0; t < T; t++) {
		if (lab[t] == -100)
			continue;
		double m = -INFINITY, se = 0.0;
		for (int64_t v = 0; v < V; v++) {
			double a = 0.0;
			for (int64_t i = 0; i < D; i++)
				a += (double)x[t * D + i] * (double)hw.deq[v * D + i];
			z[v] = a;
			m = a > m ? a : m;
		}
		for (int64_t v = 0; v < V; v++)
			se += exp(z[v] - m);
		double lse = m + log(se);
		for (int64_t v = 0; v < V; v++) {
			double g = (double)inv_n * (exp(z[v] - lse) - (v == lab[t] ? 1.0 : 0.0));
			for (int64_t i = 0; i < D; i++)
				want[v * D + i] += g * (double)x[t * D + i];
		}
	}
	double add;
	ref_ce_loss(&add, dxw, x, hw.deq, lab, T, V, D, inv_n);
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x),
		    *dl = dt_new(&c, "labels", (size_t)T * 4, lab);
	struct dten *dloss = dt_new(&c, "loss", 4, &zero), *ddx = dt_nan(&c, "dx", T * D);
	struct dten *ddw = dt_new(&c, "dW", (size_t)(V * D) * 4, dw0);
	if (!dx || !dl || !dloss || !ddx || !ddw || !dweight_make(&c, &hw, &w))
		goto out_w;
	struct tern_backend *be = s->be;
	char buf[32];
	snprintf(buf, sizeof buf, "%lld", (long long)chunk);
	if (chunk > 0)
		setenv("TERN_CE_CHUNK", buf, 1);
	enum tern_status st =
		tern_ce_loss(be, dloss->v, ddx->v, ddw->v, dx->v, &w, dl->v, T, inv_n, TERN_F32);
	if (chunk > 0)
		unsetenv("TERN_CE_CHUNK");
	if (bad(&c, st, "ce_loss"))
		goto out_w;
	expect(&c, ddw, want, V * D, TOL_CE);
	expect(&c, ddx, dxw, T * D, TOL_CE); /* dx as without dW */
	dt_unchanged(&c, dt_find(&c, "W data"), hw.data);
	/* a dW with a non-f32 W is refused by the front door */
	struct tern_weight wb = w;
	wb.dtype = TERN_BF16;
	if (tern_ce_loss(be, dloss->v, ddx->v, ddw->v, dx->v, &wb, dl->v, T, inv_n, TERN_F32) !=
		    TERN_E_UNSUPPORTED ||
	    !strstr(tern_error(), "dW"))
		fail(&c, "dW with a bf16 W: got \"%s\"", tern_error());
	if (!fd)
		goto out_w;
	/* dL/dW by central differences (L = the loss of one call from 0, inv_n as above) against
	 * dW − dW0 */
	if (!dt_get(&c, ddw, got))
		goto out_w;
	for (int64_t i = 0; i < V * D; i++)
		got[i] -= dw0[i];
	const float h = 1e-2f;
	for (int64_t j = 0; j < V * D; j++) {
		float keep = hw.deq[j], ws[2] = {keep + h, keep - h};
		double L[2];
		for (int k = 0; k < 2; k++) {
			float l;
			hw.deq[j] = ws[k];
			if (bad(&c, be->vt->upload(be, w.data, hw.deq), "upload") ||
			    bad(&c, be->vt->upload(be, dloss->v, &zero), "upload") ||
			    bad(&c,
				tern_ce_loss(be, dloss->v, ddx->v, (struct tern_view){0}, dx->v, &w, dl->v, T,
					     inv_n, TERN_F32),
				"ce_loss") ||
			    !dt_get(&c, dloss, &l))
				goto out_w;
			L[k] = l;
		}
		hw.deq[j] = keep;
		fdv[j] = (L[0] - L[1]) / ((double)ws[0] - (double)ws[1]);
	}
	cmp(&c, "dW vs finite differences", got, fdv, V * D, 2e-3);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(dw0);
	free(got);
	free(lab);
	free(want);
	free(dxw);
	free(fdv);
	free(z);
	chk_end(&c);
}

static void check_loss_all(struct suite *s)
{
	static const enum tern_dtype dts[] = {TERN_F32, TERN_F16, TERN_BF16};
	/* (T, D, V, mask, chunk): V not a multiple of any tile; chunks of 1, 4, 8 tokens with a
	 * partial last chunk; V = 5000 split into chunks */
	static const int64_t shapes[][5] = {
		{1, 1, 1, 2, 0},     {5, 16, 7, 0, 0},    {17, 64, 130, 0, 0}, {17, 64, 130, 2, 4},
		{9, 33, 5000, 0, 4}, {33, 97, 301, 0, 8}, {6, 16, 50, 1, 0},   {7, 24, 257, 0, 1},
	};
	for (int k = 0; k < (int)(sizeof shapes / sizeof shapes[0]); k++)
		for (int d = 0; d < 3; d++) {
			if (d > 0 && (k == 0 || k == 6))
				continue;
			check_ce_loss(s, dts[d], shapes[k][0], shapes[k][1], shapes[k][2], (int)shapes[k][3],
				      shapes[k][4]);
		}
	/* F16 products; the last takes the split-K reduction of dx = z W over the vocabulary */
	static const int64_t hshapes[][5] = {
		{17, 64, 130, 0, 0}, {9, 33, 5000, 0, 4}, {33, 97, 301, 0, 8}, {5, 128, 8192, 2, 0}};
	for (int k = 0; k < 4; k++)
		check_ce_loss_prec(s, TERN_BF16, hshapes[k][0], hshapes[k][1], hshapes[k][2],
				   (int)hshapes[k][3], hshapes[k][4], TERN_F16);
	/* BF16 products (CUDA's tensor-core path), over bf16 and f32 lm_heads */
	for (int k = 0; k < 4; k++) {
		check_ce_loss_prec(s, TERN_BF16, hshapes[k][0], hshapes[k][1], hshapes[k][2],
				   (int)hshapes[k][3], hshapes[k][4], TERN_BF16);
		check_ce_loss_prec(s, TERN_F32, hshapes[k][0], hshapes[k][1], hshapes[k][2],
				   (int)hshapes[k][3], hshapes[k][4], TERN_BF16);
	}
	if (!s->is_cpu) { /* Vulkan's three-pass ce_loss and unrounded chunks (TERN_VK_LOSS=v1) */
		setenv("TERN_VK_LOSS", "v1", 1);
		for (int k = 2; k < 5; k++)
			check_ce_loss(s, TERN_F32, shapes[k][0], shapes[k][1], shapes[k][2],
				      (int)shapes[k][3], shapes[k][4]);
		check_ce_loss_prec(s, TERN_BF16, hshapes[3][0], hshapes[3][1], hshapes[3][2],
				   (int)hshapes[3][3], hshapes[3][4], TERN_F16);
		unsetenv("TERN_VK_LOSS");
	}
	check_ce_loss_bad_label(s, 10);
	check_ce_loss_bad_label(s, -1);
	check_ce_loss_dw(s, 5, 16, 7, 0, false);
	check_ce_loss_dw(s, 17, 64, 130, 4, false);
	check_ce_loss_dw(s, 9, 33, 301, 0, false);
	if (s->is_cpu) {
		check_fd_ce_loss(s, 4, 6, 11, 0);
		check_fd_ce_loss(s, 5, 9, 37, 2);
		check_ce_loss_dw(s, 4, 6, 11, 2, true);
	}
}

#endif
