/* test_ops: the grouped dequant-matmul of the experts (matmul_grouped, matmul_grouped_bwd) on
 * every backend: against the double-precision oracle of each expert's product, against a loop of
 * tern_matmul / tern_matmul_bwd over the experts' own weights (bit for bit on the CPU), rows
 * outside the groups untouched, empty experts, bad offsets and the front doors. Included by
 * tests/test_ops.c after the harness. */
#ifndef TERN_TEST_OPS_GROUPED_H
#define TERN_TEST_OPS_GROUPED_H

#include "test_ops_harness.h"

/* Expert e's own weight inside the stacked one, where its parts start on 4-byte boundaries and,
 * for NF4_DQ, on a nested block: then tern_matmul can run on it. False where they do not. */
static bool grouped_sub(const struct tern_weight *w, int64_t E, int64_t e, struct tern_weight *out)
{
	int64_t O = w->O / E, n = O * w->I, g0 = e * n;
	*out = *w;
	out->O = O;
	switch (w->dtype) {
	case TERN_F32: out->data = tern_view_sub(w->data, (size_t)g0 * 4, (size_t)n * 4); return true;
	case TERN_F16:
	case TERN_BF16: out->data = tern_view_sub(w->data, (size_t)g0 * 2, (size_t)n * 2); return n % 2 == 0;
	case TERN_NF4:
	case TERN_NF4_DQ: {
		int64_t nb = n / w->blocksize;
		if (n % w->blocksize || n % 8)
			return false;
		out->data = tern_view_sub(w->data, (size_t)g0 / 2, (size_t)n / 2);
		if (w->dtype == TERN_NF4) {
			out->absmax = tern_view_sub(w->absmax, (size_t)(e * nb) * 4, (size_t)nb * 4);
			return true;
		}
		if (nb % TERN_NF4_NESTED_BLOCK)
			return false;
		out->absmax = tern_view_sub(w->absmax, (size_t)(e * nb), (size_t)nb);
		out->nested = tern_view_sub(w->nested, (size_t)(e * nb / TERN_NF4_NESTED_BLOCK) * 4,
					    (size_t)(nb / TERN_NF4_NESTED_BLOCK) * 4);
		return true;
	}
	default: return false;
	}
}

/* off[E + 1]: a random split of the rows [lead, T - tail) with empty experts (every third). */
static void grouped_offsets(struct rng *r, int32_t *off, int64_t E, int64_t T)
{
	int64_t lead = T > 4 ? 1 : 0, tail = T > 4 ? 2 : 0, left = T - lead - tail;
	off[0] = (int32_t)lead;
	for (int64_t e = 0; e < E; e++) {
		int64_t n = e % 3 == 1 || e == E - 1 ? 0 : (int64_t)(rng_u64(r) % (uint64_t)(left + 1));
		if (e == E - 1)
			n = left;
		if (e % 3 == 1 && e != E - 1)
			n = 0;
		off[e + 1] = (int32_t)(off[e] + n);
		left -= n;
	}
}

/* bwd: dx (+)= dy · W_e; else y = x · W_eᵀ. */
static void check_matmul_grouped(struct suite *s, const struct wfmt *f, int64_t E, int64_t O, int64_t I,
				 int64_t T, bool bwd, bool acc)
{
	struct chk c;
	const char *op = bwd ? "mm_grp_bwd" : "mm_grouped";
	chk_begin(&c, s, op, "%-12s E=%lld O=%lld I=%lld T=%lld%s", wdesc(f->dt, f->bs), (long long)E,
		  (long long)O, (long long)I, (long long)T, acc ? " +=" : "");
	if (skip_unsupported(&c, bwd ? TERN_OP_MATMUL_GROUPED_BWD : TERN_OP_MATMUL_GROUPED, f->dt))
		return;
	struct tern_backend *be = s->be;
	int64_t in_c = bwd ? O : I, out_c = bwd ? I : O;
	struct hweight hw;
	bool have_hw = hweight_make(&hw, f->dt, f->bs, E * O, I, &c.r);
	float *x = fvec(T * in_c), *y0 = fvec(T * out_c), *got = fvec(T * out_c), *loop = fvec(T * out_c);
	double *want = dvec(T * out_c), *mag = dvec(T * out_c);
	int32_t *off = calloc((size_t)E + 2, 4);
	if (!have_hw || !x || !y0 || !got || !loop || !want || !mag || !off) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * in_c, 1.0);
	for (int64_t i = 0; i < T * out_c; i++)
		y0[i] = acc ? rng_sym(&c.r, 1.0) : NAN;
	grouped_offsets(&c.r, off, E, T);
	for (int64_t i = 0; i < T * out_c; i++) {
		want[i] = y0[i];
		mag[i] = acc ? fabs((double)y0[i]) : 0.0;
	}
	for (int64_t e = 0; e < E; e++)
		for (int64_t t = off[e]; t < off[e + 1]; t++)
			for (int64_t o = 0; o < out_c; o++) {
				double sum = 0.0, m = 0.0;
				for (int64_t k = 0; k < in_c; k++) {
					double wv = bwd ? hw.deq[(e * O + k) * I + o]
							: hw.deq[(e * O + o) * I + k];
					sum += (double)x[t * in_c + k] * wv;
					m += fabs((double)x[t * in_c + k] * wv);
				}
				want[t * out_c + o] = (acc ? (double)y0[t * out_c + o] : 0.0) + sum;
				mag[t * out_c + o] += m;
			}
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * in_c) * 4, x),
		    *dy = dt_new(&c, "y", (size_t)(T * out_c) * 4, y0);
	struct dten *doff = dt_new(&c, "off", (size_t)(E + 1) * 4, off);
	if (!dx || !dy || !doff || !dweight_make(&c, &hw, &w))
		goto out;
	enum tern_status st =
		bwd ? tern_matmul_grouped_bwd(be, dy->v, dx->v, &w, doff->v, E, T, acc, TERN_F32)
		    : tern_matmul_grouped(be, dy->v, dx->v, &w, doff->v, E, T, TERN_F32);
	if (bad(&c, st, op) || !dt_get(&c, dy, got))
		goto out;
	/* rows outside the groups: untouched (NaN for the = forms) */
	for (int64_t t = 0; t < T; t++) {
		if (t >= off[0] && t < off[E])
			continue;
		if (memcmp(got + t * out_c, y0 + t * out_c, (size_t)out_c * 4) != 0) {
			fail(&c, "row %lld, outside the groups [%d, %d), was written", (long long)t,
			     (int)off[0], (int)off[E]);
			break;
		}
	}
	/* the oracle on the grouped rows (outside rows compared as equal) */
	for (int64_t t = 0; t < T; t++)
		if (t < off[0] || t >= off[E])
			for (int64_t o = 0; o < out_c; o++)
				got[t * out_c + o] = (float)(want[t * out_c + o] = 0.0);
	cmp_mag(&c, "y", got, want, mag, T * out_c, TOL_F32);
	/* a loop of tern_matmul(_bwd) over the experts' own weights, where they can be cut out */
	bool split = true;
	for (int64_t e = 0; e < E && split; e++) {
		struct tern_weight we;
		split = grouped_sub(&w, E, e, &we);
	}
	if (split) {
		if (bad(&c, be->vt->upload(be, dy->v, y0), "upload"))
			goto out;
		for (int64_t e = 0; e < E; e++) {
			struct tern_weight we;
			int64_t n = off[e + 1] - off[e];
			grouped_sub(&w, E, e, &we);
			struct tern_view yv =
				tern_view_sub(dy->v, (size_t)(off[e] * out_c) * 4, (size_t)(n * out_c) * 4);
			struct tern_view xv =
				tern_view_sub(dx->v, (size_t)(off[e] * in_c) * 4, (size_t)(n * in_c) * 4);
			st = bwd ? tern_matmul_bwd(be, yv, xv, &we, n, acc, TERN_F32)
				 : tern_matmul(be, yv, xv, &we, n, TERN_F32);
			if (bad(&c, st, bwd ? "matmul_bwd" : "matmul"))
				goto out;
		}
		if (!dt_get(&c, dy, loop))
			goto out;
		for (int64_t t = 0; t < T; t++)
			if (t < off[0] || t >= off[E])
				for (int64_t o = 0; o < out_c; o++)
					loop[t * out_c + o] = 0.0f;
		if (s->is_cpu) {
			if (memcmp(loop, got, (size_t)(T * out_c) * 4) != 0) {
				fail(&c, "differs from the loop of %s per expert (bit for bit on the CPU)",
				     bwd ? "matmul_bwd" : "matmul");
				c.err = INFINITY;
			}
		} else {
			double *ld = dvec(T * out_c);
			if (!ld) {
				fail(&c, "out of host memory");
				goto out;
			}
			for (int64_t i = 0; i < T * out_c; i++)
				ld[i] = loop[i];
			cmp_mag(&c, "y vs the loop of matmul per expert", got, ld, mag, T * out_c, TOL_F32);
			free(ld);
		}
	}
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, doff, off);
	if (!split) {
		size_t dl = strlen(c.desc);
		snprintf(c.desc + dl, sizeof c.desc - dl, " no split");
	}
out:
	if (have_hw)
		hweight_free(&hw);
	free(x);
	free(y0);
	free(got);
	free(loop);
	free(want);
	free(mag);
	free(off);
	chk_end(&c);
}

/* Offsets that break 0 <= off[0] <= ... <= off[E] <= T (the CPU fails, writing nothing), a
 * ternary weight, an E that does not divide O, a half precision. */
static void check_grouped_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "matmul_grouped arguments");
	if (skip_unsupported(&c, TERN_OP_MATMUL_GROUPED, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	const int64_t E = 2, O = 4, I = 8, T = 5;
	struct hweight hw;
	if (!hweight_make(&hw, TERN_F32, 0, E * O, I, &c.r)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	struct tern_weight w;
	struct dten *x = dt_new(&c, "x", (size_t)(T * I) * 4, NULL), *y = dt_nan(&c, "y", T * O);
	int32_t bad_off[3] = {0, 4, 3};
	struct dten *off = dt_new(&c, "off", sizeof bad_off, bad_off);
	if (!x || !y || !off || !dweight_make(&c, &hw, &w))
		goto out;
	enum tern_status st;
	if (s->is_cpu) {
		st = tern_matmul_grouped(be, y->v, x->v, &w, off->v, E, T, TERN_F32);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "off[2] = 3"))
			fail(&c, "decreasing offsets: got %s \"%s\"", tern_status_str(st), tern_error());
		float got[20]; /* T * O */
		if (dt_get(&c, y, got))
			for (int64_t i = 0; i < T * O; i++)
				if (!isnan(got[i])) {
					fail(&c, "y[%lld] written by a rejected call", (long long)i);
					break;
				}
	}
	st = tern_matmul_grouped(be, y->v, x->v, &w, off->v, 3, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "E=3 does not divide"))
		fail(&c, "E=3: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_matmul_grouped_bwd(be, x->v, y->v, &w, off->v, E, T, false, TERN_F16);
	if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), "matmul_grouped_bwd precision f16"))
		fail(&c, "f16: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_weight wt = w;
	wt.dtype = TERN_TERNARY;
	wt.data.size = tern_weight_data_bytes(TERN_TERNARY, E * O, I);
	st = tern_matmul_grouped(be, y->v, x->v, &wt, off->v, E, T, TERN_F32);
	if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), "one scale per matrix"))
		fail(&c, "ternary: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_matmul_grouped(be, y->v, x->v, &w, tern_view_sub(off->v, 0, 8), E, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "off view"))
		fail(&c, "short off: got %s \"%s\"", tern_status_str(st), tern_error());
out:
	hweight_free(&hw);
	chk_end(&c);
}

static void check_grouped_all(struct suite *s)
{
	static const struct {
		struct wfmt f;
		int64_t E, O, I, T;
	} cases[] = {
		{{TERN_F32, 0}, 4, 7, 15, 20},        {{TERN_F16, 0}, 4, 8, 16, 9},
		{{TERN_BF16, 0}, 3, 33, 64, 17},      {{TERN_NF4, 64}, 4, 16, 64, 21},
		{{TERN_NF4, 64}, 3, 5, 10, 12},       {{TERN_NF4, 128}, 8, 4, 32, 30},
		{{TERN_NF4_DQ, 64}, 2, 128, 128, 10}, {{TERN_NF4_DQ, 64}, 3, 7, 33, 11},
		{{TERN_F32, 0}, 1, 3, 5, 1},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
		for (int bwd = 0; bwd < 2; bwd++)
			for (int acc = 0; acc <= bwd; acc++)
				check_matmul_grouped(s, &cases[k].f, cases[k].E, cases[k].O, cases[k].I,
						     cases[k].T, bwd, acc);
	check_grouped_errors(s);
	/* a stacked f32 weight of 128.3 MiB, past lavapipe's 128 MiB maxStorageBufferRange: Vulkan
	 * binds one expert at a time (chunks of whole experts; the backward shares that code). The
	 * CPU has no bindings to split: not run there (it costs seconds). */
	const char *large = getenv("TERN_TEST_LARGE");
	if (s->is_cpu)
		return;
	if (large && !strcmp(large, "0")) {
		print_line(s, "mm_grouped", "f32 > 128 MiB", "skipped (TERN_TEST_LARGE=0)");
		s->skipped++;
	} else {
		static const struct wfmt f32 = {TERN_F32, 0};
		check_matmul_grouped(s, &f32, 2, 4100, 4100, 3, false, false);
	}
}

#endif
