/* test_ops: the mixture-of-experts router (route_topk, route_topk_bwd) on every backend against a
 * double-precision oracle; torch.topk's order on exact ties (lower expert first); finite
 * differences of Σ c·w through the forward op against the backward; a golden made by PyTorch
 * (tools/make_golden_route.py, tests/data/route_topk_golden.txt); bad sel; the front doors.
 * Included by tests/test_ops.c after the harness. */
#ifndef TERN_TEST_OPS_ROUTE_H
#define TERN_TEST_OPS_ROUTE_H

#include "test_ops_harness.h"

/* The oracle: prob in double, the top k of it (descending, lower id first on ties), w, counts. */
static void ref_route(const float *logits, int64_t T, int64_t E, int64_t k, bool norm, double *prob,
		      int32_t *sel, double *w, int32_t *counts)
{
	for (int64_t e = 0; e < E; e++)
		counts[e] = 0;
	for (int64_t t = 0; t < T; t++) {
		const float *l = logits + t * E;
		double *p = prob + t * E, m = -INFINITY, s = 0.0, vs = 0.0;
		for (int64_t e = 0; e < E; e++)
			m = fmax(m, l[e]);
		for (int64_t e = 0; e < E; e++)
			s += exp((double)l[e] - m);
		for (int64_t e = 0; e < E; e++)
			p[e] = exp((double)l[e] - m) / s;
		for (int64_t j = 0; j < k; j++) {
			int64_t best = -1;
			for (int64_t e = 0; e < E; e++) {
				bool taken = false;
				for (int64_t i = 0; i < j; i++)
					taken |= sel[t * k + i] == e;
				if (!taken && (best < 0 || p[e] > p[best]))
					best = e;
			}
			sel[t * k + j] = (int32_t)best;
			w[t * k + j] = p[best];
			vs += p[best];
			counts[best]++;
		}
		for (int64_t j = 0; norm && j < k; j++)
			w[t * k + j] /= vs;
	}
}

/* Router logits for T tokens: rows of well-separated values (gaps >= 0.15, so no backend's
 * rounding can reorder them), and, with ties, every 4th row all equal and every 4th + 2 with the
 * k-th and (k+1)-th largest made exactly equal (torch.topk's order decides); every 4th + 3 is
 * scaled by 30 (the max subtraction). */
static void route_logits(struct rng *r, float *l, int64_t T, int64_t E, int64_t k, bool ties)
{
	int32_t *perm = calloc((size_t)E + 1, 4);
	if (!perm)
		return;
	for (int64_t t = 0; t < T; t++) {
		for (int64_t e = 0; e < E; e++)
			perm[e] = (int32_t)e;
		for (int64_t e = E - 1; e > 0; e--) {
			int64_t j = (int64_t)(rng_u64(r) % (uint64_t)(e + 1));
			int32_t s = perm[e];
			perm[e] = perm[j];
			perm[j] = s;
		}
		float *row = l + t * E;
		double scale = ties && t % 4 == 3 ? 30.0 : 1.0;
		/* rank perm[e] gets 0.25 · rank, jittered by less than 0.05 */
		for (int64_t e = 0; e < E; e++)
			row[e] = (float)(scale *
					 (0.25 * (double)perm[e] - 0.1 * (double)E + rng_sym(r, 0.05)));
		if (ties && t % 4 == 1)
			for (int64_t e = 0; e < E; e++)
				row[e] = 0.75f;
		if (ties && t % 4 == 2 && k < E) {
			int64_t a = -1, b = -1; /* the experts of rank k-1 and k from the top */
			for (int64_t e = 0; e < E; e++) {
				if (perm[e] == E - k)
					a = e;
				if (perm[e] == E - k - 1)
					b = e;
			}
			row[b] = row[a];
		}
	}
	free(perm);
}

/* ---- forward ------------------------------------------------------------------------------ */

static void check_route_topk(struct suite *s, int64_t T, int64_t E, int64_t k, bool norm)
{
	struct chk c;
	chk_begin(&c, s, "route_topk", "T=%lld E=%lld k=%lld%s", (long long)T, (long long)E, (long long)k,
		  norm ? " norm" : "");
	if (skip_unsupported(&c, TERN_OP_ROUTE_TOPK, TERN_F32))
		return;
	float *l = fvec(T * E), *wg = fvec(T * k);
	double *prob = dvec(T * E), *w = dvec(T * k);
	int32_t *sel = calloc((size_t)(T * k) + 1, 4), *cnt = calloc((size_t)E + 1, 4);
	int32_t *gsel = calloc((size_t)(T * k) + 1, 4), *gcnt = calloc((size_t)E + 1, 4);
	if (!l || !wg || !prob || !w || !sel || !cnt || !gsel || !gcnt) {
		fail(&c, "out of host memory");
		goto out;
	}
	route_logits(&c.r, l, T, E, k, true);
	ref_route(l, T, E, k, norm, prob, sel, w, cnt);
	struct dten *dl = dt_new(&c, "logits", (size_t)(T * E) * 4, l);
	struct dten *ds = dt_new(&c, "sel", (size_t)(T * k) * 4, NULL),
		    *dc = dt_new(&c, "counts", (size_t)E * 4, NULL);
	struct dten *dw = dt_nan(&c, "w", T * k), *dp = dt_nan(&c, "prob", T * E);
	if (!dl || !ds || !dc || !dw || !dp)
		goto out;
	if (bad(&c, tern_route_topk(s->be, ds->v, dw->v, dp->v, dc->v, dl->v, T, E, k, norm), "route_topk"))
		goto out;
	expect(&c, dp, prob, T * E, TOL_F32);
	expect(&c, dw, w, T * k, TOL_F32);
	if (dt_get(&c, ds, gsel))
		for (int64_t i = 0; i < T * k; i++)
			if (gsel[i] != sel[i]) {
				fail(&c, "sel[%lld] (t=%lld j=%lld) = %d, want %d", (long long)i,
				     (long long)(i / k), (long long)(i % k), (int)gsel[i], (int)sel[i]);
				c.err = INFINITY;
				break;
			}
	if (dt_get(&c, dc, gcnt) && memcmp(gcnt, cnt, (size_t)E * 4) != 0) {
		fail(&c, "counts differ from the oracle's");
		c.err = INFINITY;
	}
	dt_unchanged(&c, dl, l);
out:
	free(l);
	free(wg);
	free(prob);
	free(w);
	free(sel);
	free(cnt);
	free(gsel);
	free(gcnt);
	chk_end(&c);
}

/* ---- backward ----------------------------------------------------------------------------- */

/* dlogits (double) from dw, prob (as fp32) and sel, as backend.h states it; mag: the magnitudes
 * of the two terms, where they cancel. */
static void ref_route_bwd(const float *dw, const float *prob, const int32_t *sel, int64_t T, int64_t E,
			  int64_t k, bool norm, double *dl, double *mag)
{
	for (int64_t t = 0; t < T; t++) {
		const float *p = prob + t * E, *g = dw + t * k;
		const int32_t *sl = sel + t * k;
		double S = 0.0, gv = 0.0, dvv = 0.0;
		for (int64_t j = 0; j < k; j++) {
			S += p[sl[j]];
			gv += (double)g[j] * p[sl[j]];
		}
		for (int64_t e = 0; e < E; e++) {
			dl[t * E + e] = 0.0;
			mag[t * E + e] = 0.0;
		}
		double mvv = 0.0; /* Σ |dv_j| v_j with |dv_j| bounded by its parts: where they cancel
				   * (k = 1 with norm: exactly 0) fp32 rounding is relative to them */
		for (int64_t j = 0; j < k; j++) {
			double dv = norm ? ((double)g[j] - gv / S) / S : (double)g[j];
			double mv = norm ? (fabs((double)g[j]) + fabs(gv / S)) / S : fabs((double)g[j]);
			dvv += dv * p[sl[j]];
			mvv += mv * p[sl[j]];
			dl[t * E + sl[j]] += dv; /* dp for now */
			mag[t * E + sl[j]] += mv;
		}
		for (int64_t e = 0; e < E; e++) {
			double dp = dl[t * E + e];
			dl[t * E + e] = p[e] * (dp - dvv);
			mag[t * E + e] = p[e] * (mag[t * E + e] + mvv);
		}
	}
}

/* bad_at >= 0: sel[bad_at] = E; the CPU fails naming it and writes nothing, Vulkan skips that
 * choice (the oracle drops it too). */
static void check_route_topk_bwd(struct suite *s, int64_t T, int64_t E, int64_t k, bool norm, int64_t bad_at)
{
	struct chk c;
	chk_begin(&c, s, "route_bwd", "T=%lld E=%lld k=%lld%s%s", (long long)T, (long long)E, (long long)k,
		  norm ? " norm" : "", bad_at >= 0 ? " bad sel" : "");
	if (skip_unsupported(&c, TERN_OP_ROUTE_TOPK_BWD, TERN_F32))
		return;
	float *l = fvec(T * E), *pf = fvec(T * E), *g = fvec(T * k), *got = fvec(T * E);
	double *prob = dvec(T * E), *w = dvec(T * k), *dl = dvec(T * E), *mag = dvec(T * E);
	int32_t *sel = calloc((size_t)(T * k) + 1, 4), *cnt = calloc((size_t)E + 1, 4);
	if (!l || !pf || !g || !got || !prob || !w || !dl || !mag || !sel || !cnt) {
		fail(&c, "out of host memory");
		goto out;
	}
	route_logits(&c.r, l, T, E, k, true);
	ref_route(l, T, E, k, norm, prob, sel, w, cnt);
	for (int64_t i = 0; i < T * E; i++)
		pf[i] = (float)prob[i];
	fill_sym(&c.r, g, T * k, 1.0);
	if (bad_at >= 0) {
		/* the oracle without that choice: its dw is 0 and it is not renormalised over, so only
		 * unnormalised rows make a clean oracle; sel[bad_at] = E */
		g[bad_at] = 0.0f;
	}
	ref_route_bwd(g, pf, sel, T, E, k, norm, dl, mag);
	if (bad_at >= 0)
		sel[bad_at] = (int32_t)E;
	struct dten *dd = dt_nan(&c, "dlogits", T * E), *dg = dt_new(&c, "dw", (size_t)(T * k) * 4, g);
	struct dten *dp = dt_new(&c, "prob", (size_t)(T * E) * 4, pf),
		    *ds = dt_new(&c, "sel", (size_t)(T * k) * 4, sel);
	if (!dd || !dg || !dp || !ds)
		goto out;
	enum tern_status st = tern_route_topk_bwd(s->be, dd->v, dg->v, dp->v, ds->v, T, E, k, norm);
	if (bad_at >= 0 && s->is_cpu) {
		char need[64];
		snprintf(need, sizeof need, "sel[%lld] = %lld", (long long)bad_at, (long long)E);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "route_topk_bwd") ||
		    !strstr(tern_error(), need))
			fail(&c, "bad sel: got %s \"%s\", want invalid naming %s", tern_status_str(st),
			     tern_error(), need);
		if (dt_get(&c, dd, got))
			for (int64_t i = 0; i < T * E; i++)
				if (!isnan(got[i])) {
					fail(&c, "dlogits[%lld] written by a rejected call", (long long)i);
					break;
				}
		goto out;
	}
	if (bad(&c, st, "route_topk_bwd"))
		goto out;
	if (bad_at >= 0) { /* Vulkan: rows other than the bad one's must match */
		int64_t bt = bad_at / k;
		for (int64_t e = 0; e < E; e++)
			dl[bt * E + e] = mag[bt * E + e] = 0.0;
		if (!dt_get(&c, dd, got))
			goto out;
		for (int64_t e = 0; e < E; e++)
			got[bt * E + e] = 0.0f;
		cmp_mag(&c, "dlogits", got, dl, mag, T * E, TOL_F32);
	} else {
		expect_mag(&c, dd, dl, mag, T * E, TOL_F32);
	}
	dt_unchanged(&c, dg, g);
	dt_unchanged(&c, dp, pf);
	dt_unchanged(&c, ds, sel);
out:
	free(l);
	free(pf);
	free(g);
	free(got);
	free(prob);
	free(w);
	free(dl);
	free(mag);
	free(sel);
	free(cnt);
	chk_end(&c);
}

/* ---- finite differences ------------------------------------------------------------------- */

/* L(logits) = Σ c · w(logits) through route_topk; dL/dlogits = route_topk_bwd(dw = c) with the
 * forward's prob and sel. Separated logits (no ties): the selection cannot change within the
 * steps. Richardson-extrapolated central differences (steps h, 2h). */
static void check_fd_route(struct suite *s, int64_t T, int64_t E, int64_t k, bool norm)
{
	struct chk c;
	chk_begin(&c, s, "fd", "route_topk T=%lld E=%lld k=%lld%s", (long long)T, (long long)E, (long long)k,
		  norm ? " norm" : "");
	if (skip_unsupported(&c, TERN_OP_ROUTE_TOPK, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROUTE_TOPK_BWD, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	float *l = fvec(T * E), *cw = fvec(T * k), *wv = fvec(T * k), *grad = fvec(T * E);
	double *fd = dvec(T * E);
	if (!l || !cw || !wv || !grad || !fd) {
		fail(&c, "out of host memory");
		goto out;
	}
	route_logits(&c.r, l, T, E, k, false);
	fill_sym(&c.r, cw, T * k, 1.0);
	struct dten *dl = dt_new(&c, "logits", (size_t)(T * E) * 4, l),
		    *dc = dt_new(&c, "c", (size_t)(T * k) * 4, cw);
	struct dten *ds = dt_new(&c, "sel", (size_t)(T * k) * 4, NULL),
		    *dn = dt_new(&c, "counts", (size_t)E * 4, NULL);
	struct dten *dw = dt_nan(&c, "w", T * k), *dp = dt_nan(&c, "prob", T * E),
		    *dd = dt_nan(&c, "dlogits", T * E);
	if (!dl || !dc || !ds || !dn || !dw || !dp || !dd)
		goto out;
	if (bad(&c, tern_route_topk(be, ds->v, dw->v, dp->v, dn->v, dl->v, T, E, k, norm), "route_topk") ||
	    bad(&c, tern_route_topk_bwd(be, dd->v, dc->v, dp->v, ds->v, T, E, k, norm), "route_topk_bwd") ||
	    !dt_get(&c, dd, grad))
		goto out;
	const double h = 1e-2;
	for (int64_t i = 0; i < T * E; i++) {
		float keep = l[i];
		double L[4];
		static const double steps[4] = {1.0, -1.0, 2.0, -2.0};
		for (int q = 0; q < 4; q++) {
			l[i] = (float)((double)keep + steps[q] * h);
			if (bad(&c, be->vt->upload(be, dl->v, l), "upload") ||
			    bad(&c, tern_route_topk(be, ds->v, dw->v, dp->v, dn->v, dl->v, T, E, k, norm),
				"route_topk") ||
			    !dt_get(&c, dw, wv))
				goto out;
			L[q] = 0.0;
			for (int64_t j = 0; j < T * k; j++)
				L[q] += (double)cw[j] * wv[j];
		}
		l[i] = keep;
		double d1 = (L[0] - L[1]) / (2.0 * h), d2 = (L[2] - L[3]) / (4.0 * h);
		fd[i] = (4.0 * d1 - d2) / 3.0;
	}
	cmp(&c, "dlogits vs finite differences", grad, fd, T * E, 2e-4);
out:
	free(l);
	free(cw);
	free(wv);
	free(grad);
	free(fd);
	chk_end(&c);
}

/* ---- the PyTorch golden ------------------------------------------------------------------- */

/* tests/data/route_topk_golden.txt (tools/make_golden_route.py): per case a line "case T E k norm",
 * then T·E logits, T·k sel, T·k w, T·k dw (the upstream gradient) and T·E dlogits, as transformers
 * computes them (softmax in fp32, torch.topk, renormalisation; autograd into the logits). sel must
 * match exactly except between experts of exactly equal logits (rows with ties on purpose), w and
 * dlogits within fp32 tolerance. */
static void check_route_golden(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "route_topk", "PyTorch golden (route_topk_golden.txt)");
	if (skip_unsupported(&c, TERN_OP_ROUTE_TOPK, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROUTE_TOPK_BWD, TERN_F32))
		return;
	const char *dir = getenv("TERN_TEST_DATA");
	char path[4096];
	snprintf(path, sizeof path, "%s/route_topk_golden.txt", dir ? dir : "tests/data");
	FILE *f = fopen(path, "r");
	if (!f) {
		fail(&c, "cannot open %s (TERN_TEST_DATA)", path);
		chk_end(&c);
		return;
	}
	int ncase = 0, ties = 0;
	long long T, E, k;
	int norm;
	while (!c.why[0] && fscanf(f, " case %lld %lld %lld %d", &T, &E, &k, &norm) == 4) {
		ncase++;
		float *l = fvec(T * E), *sel_f = fvec(T * k), *dw = fvec(T * k), *gw = fvec(T * k);
		double *w = dvec(T * k), *dl = dvec(T * E);
		int32_t *sel = calloc((size_t)(T * k) + 1, 4), *gsel = calloc((size_t)(T * k) + 1, 4);
		bool ok = l && sel_f && dw && gw && w && dl && sel && gsel;
		for (long long i = 0; ok && i < T * E; i++)
			ok = fscanf(f, "%f", &l[i]) == 1;
		for (long long i = 0; ok && i < T * k; i++)
			ok = fscanf(f, "%f", &sel_f[i]) == 1, sel[i] = (int32_t)sel_f[i];
		for (long long i = 0; ok && i < T * k; i++)
			ok = fscanf(f, "%lf", &w[i]) == 1;
		for (long long i = 0; ok && i < T * k; i++)
			ok = fscanf(f, "%f", &dw[i]) == 1;
		for (long long i = 0; ok && i < T * E; i++)
			ok = fscanf(f, "%lf", &dl[i]) == 1;
		if (!ok)
			fail(&c, "%s: case %d is cut short", path, ncase);
		struct dten *dlg = ok ? dt_new(&c, "logits", (size_t)(T * E) * 4, l) : NULL;
		struct dten *ds = ok ? dt_new(&c, "sel", (size_t)(T * k) * 4, NULL) : NULL;
		struct dten *dn = ok ? dt_new(&c, "counts", (size_t)E * 4, NULL) : NULL;
		struct dten *dwt = ok ? dt_nan(&c, "w", T * k) : NULL,
			    *dp = ok ? dt_nan(&c, "prob", T * E) : NULL;
		struct dten *ddw = ok ? dt_new(&c, "dw", (size_t)(T * k) * 4, dw) : NULL;
		struct dten *dd = ok ? dt_nan(&c, "dlogits", T * E) : NULL;
		if (ok && dlg && ds && dn && dwt && dp && ddw && dd &&
		    !bad(&c, tern_route_topk(s->be, ds->v, dwt->v, dp->v, dn->v, dlg->v, T, E, k, norm),
			 "route_topk") &&
		    !bad(&c, tern_route_topk_bwd(s->be, dd->v, ddw->v, dp->v, ds->v, T, E, k, norm),
			 "route_topk_bwd") &&
		    dt_get(&c, ds, gsel)) {
			/* torch.topk leaves the order of equal values unspecified (its CPU kernel picks
			 * [6, 5] from eight equal probabilities); tern takes the lower expert first. A row
			 * may differ only where the two choices have equal logits (so equal weights); its
			 * dlogits then go to other experts and are not compared. */
			for (long long t = 0; t < T && !c.why[0]; t++) {
				bool same = true;
				for (long long j = 0; j < k; j++) {
					long long i = t * k + j;
					if (gsel[i] == sel[i])
						continue;
					same = false;
					if (gsel[i] < 0 || gsel[i] >= E ||
					    l[t * E + gsel[i]] != l[t * E + sel[i]]) {
						fail(&c, "case %d: sel[%lld] = %d, torch.topk %d (not a tie)",
						     ncase, i, (int)gsel[i], (int)sel[i]);
						c.err = INFINITY;
					}
				}
				if (!same) {
					ties++;
					for (long long e = 0; e < E; e++)
						dl[t * E + e] =
							NAN; /* marks the row for the comparison below */
				}
			}
			expect(&c, dwt, w, T * k, TOL_F32);
			float *gd = fvec(T * E);
			if (gd && dt_get(&c, dd, gd)) {
				for (long long i = 0; i < T * E; i++)
					if (isnan(dl[i]))
						dl[i] = gd[i] = 0.0f;
				cmp(&c, "dlogits", gd, dl, T * E, 1e-5);
			}
			free(gd);
		}
		chk_free_tensors(&c);
		free(l);
		free(sel_f);
		free(dw);
		free(gw);
		free(w);
		free(dl);
		free(sel);
		free(gsel);
	}
	fclose(f);
	if (!c.why[0] && ncase < 2)
		fail(&c, "%s: %d cases (want at least 2)", path, ncase);
	size_t dl_ = strlen(c.desc);
	snprintf(c.desc + dl_, sizeof c.desc - dl_, ", %d tie rows in another order", ties);
	chk_end(&c);
}

/* ---- argument errors ---------------------------------------------------------------------- */

static void check_route_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "route_topk, route_topk_bwd arguments");
	if (skip_unsupported(&c, TERN_OP_ROUTE_TOPK, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ROUTE_TOPK_BWD, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	struct dten *a = dt_new(&c, "a", 64 * 4, NULL), *sh = dt_new(&c, "short", 3 * 4, NULL);
	if (!a || !sh)
		goto out;
	struct tern_view v = a->v;
	/* T = 4 tokens, E = 8, k = 2: every full-size view fits in a */
	static const struct {
		int64_t E, k;
		const char *need;
	} shapes[] = {{8, 0, "k=0"}, {8, 9, "k=9"}, {0, 1, "E=0"}};
	for (int i = 0; i < 3; i++) {
		enum tern_status st = tern_route_topk(be, v, v, v, v, v, 4, shapes[i].E, shapes[i].k, true);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "route_topk") ||
		    !strstr(tern_error(), shapes[i].need))
			fail(&c, "route_topk %s: got %s \"%s\"", shapes[i].need, tern_status_str(st),
			     tern_error());
	}
	enum tern_status st = tern_route_topk(be, v, v, v, sh->v, v, 4, 8, 2, true);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "counts view"))
		fail(&c, "route_topk short counts: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_route_topk_bwd(be, v, v, v, sh->v, 4, 8, 2, false);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "route_topk_bwd") ||
	    !strstr(tern_error(), "sel view"))
		fail(&c, "route_topk_bwd short sel: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_route_topk_bwd(be, v, v, v, v, 9, 8, 2, false);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "dlogits view"))
		fail(&c, "route_topk_bwd T=9: got %s \"%s\"", tern_status_str(st), tern_error());
	unsigned char pat[64 * 4];
	memset(pat, GUARD_BYTE, sizeof pat);
	dt_unchanged(&c, a, pat);
	dt_unchanged(&c, sh, pat);
out:
	chk_end(&c);
}

/* ---- the group ---------------------------------------------------------------------------- */

static void check_route_all(struct suite *s)
{
	/* (T, E, k): Mixtral (8, 2), Qwen3-MoE (128, 8), k = E, k = 1, one expert */
	static const int64_t rs[][3] = {{9, 8, 2}, {13, 128, 8}, {5, 4, 4}, {7, 6, 1}, {1, 1, 1}, {0, 8, 2}};
	for (int k = 0; k < 6; k++)
		for (int norm = 0; norm < 2; norm++) {
			check_route_topk(s, rs[k][0], rs[k][1], rs[k][2], norm);
			check_route_topk_bwd(s, rs[k][0], rs[k][1], rs[k][2], norm, -1);
		}
	check_route_topk_bwd(s, 6, 8, 2, false, 5);
	check_fd_route(s, 3, 8, 2, true);
	check_fd_route(s, 3, 6, 3, false);
	check_route_golden(s);
	check_route_errors(s);
}

#endif
