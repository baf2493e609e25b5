/* test_ops: the grouped dequant-matmul of the experts (matmul_grouped, matmul_grouped_bwd) on
 * every backend: experts each quantized on their own (NF4_DQ: each its own nested offset), laid
 * out as the pack stores them and part by part, with gaps of guard bytes between the parts;
 * against the double-precision oracle of each expert's product, against a loop of tern_matmul /
 * tern_matmul_bwd over the experts' own weights (bit for bit on the CPU backends), rows outside
 * the groups untouched, the experts unchanged, empty experts, bad offsets and the front doors. Included by
 * tests/test_ops.c after the harness. */
#ifndef TERN_TEST_OPS_GROUPED_H
#define TERN_TEST_OPS_GROUPED_H

#include "test_ops_harness.h"

/* E experts' host weights laid out in one device tensor, as struct tern_experts describes them:
 * layout 0 as the pack stores them (each expert's data, absmax, nested, then the next expert's:
 * one stride), layout 1 part by part (every expert's data, then every absmax, then every nested:
 * a stride per part). Each part is followed by a gap of GUARD_BYTE that no expert may read. */
#define XGAP 12
static size_t up4(size_t n) { return (n + 3) / 4 * 4; }

static bool experts_make(struct chk *c, const struct hweight *hw, int64_t E, int layout,
			 struct tern_experts *x, struct dten **dev, struct dten **offs, unsigned char **image)
{
	size_t sz[3] = {up4(hw[0].data_bytes) + XGAP, hw[0].absmax ? up4(hw[0].absmax_bytes) + XGAP : 0,
			hw[0].nested ? up4(hw[0].nested_bytes) + XGAP : 0};
	size_t total = (size_t)E * (sz[0] + sz[1] + sz[2]), start[3];
	uint64_t stride[3];
	for (int k = 0; k < 3; k++) {
		stride[k] = layout == 0 ? sz[0] + sz[1] + sz[2] : sz[k];
		start[k] = layout == 0 ? (k ? start[k - 1] + sz[k - 1] : 0)
				       : (k ? start[k - 1] + (size_t)E * sz[k - 1] : 0);
	}
	unsigned char *img = malloc(total);
	float *eo = fvec(E);
	if (!img || !eo) {
		free(img);
		free(eo);
		fail(c, "out of host memory");
		return false;
	}
	memset(img, GUARD_BYTE, total);
	for (int64_t e = 0; e < E; e++) {
		const void *src[3] = {hw[e].data, hw[e].absmax, hw[e].nested};
		size_t n[3] = {hw[e].data_bytes, hw[e].absmax_bytes, hw[e].nested_bytes};
		for (int k = 0; k < 3; k++)
			if (src[k])
				memcpy(img + start[k] + (size_t)e * stride[k], src[k], n[k]);
		eo[e] = hw[e].offset;
	}
	*dev = dt_new(c, "experts", total, img);
	*offs = dt_new(c, "offsets", (size_t)E * 4, eo);
	*image = img; /* the caller checks the experts unchanged */
	free(eo);
	if (!*dev || !*offs)
		return false;
	memset(x, 0, sizeof *x);
	x->w.dtype = hw[0].dt;
	x->w.O = hw[0].O;
	x->w.I = hw[0].I;
	x->w.blocksize = hw[0].bs;
	x->w.offset = 1000.0f; /* no expert's: the op reads offsets[e] */
	x->w.data = tern_view_sub((*dev)->v, start[0], hw[0].data_bytes);
	if (hw[0].absmax)
		x->w.absmax = tern_view_sub((*dev)->v, start[1], hw[0].absmax_bytes);
	if (hw[0].nested)
		x->w.nested = tern_view_sub((*dev)->v, start[2], hw[0].nested_bytes);
	x->E = E;
	memcpy(x->stride, stride, sizeof stride);
	x->offsets = (*offs)->v;
	return true;
}

/* Expert e as a weight of its own (tern_matmul runs on it). */
static void expert_weight(const struct tern_experts *x, const struct hweight *hw, int64_t e,
			  struct tern_weight *out)
{
	tern_experts_at(x, e, out);
	out->offset = hw[e].offset;
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
				 int64_t T, bool bwd, bool acc, int layout)
{
	struct chk c;
	const char *op = bwd ? "mm_grp_bwd" : "mm_grouped";
	chk_begin(&c, s, op, "%-12s E=%lld O=%lld I=%lld T=%lld%s%s", wdesc(f->dt, f->bs), (long long)E,
		  (long long)O, (long long)I, (long long)T, acc ? " +=" : "", layout ? " by part" : "");
	if (skip_unsupported(&c, bwd ? TERN_OP_MATMUL_GROUPED_BWD : TERN_OP_MATMUL_GROUPED, f->dt))
		return;
	struct tern_backend *be = s->be;
	int64_t in_c = bwd ? O : I, out_c = bwd ? I : O, made = 0;
	struct hweight *hw = calloc((size_t)E, sizeof *hw);
	float *x = fvec(T * in_c), *y0 = fvec(T * out_c), *got = fvec(T * out_c), *loop = fvec(T * out_c);
	double *want = dvec(T * out_c), *mag = dvec(T * out_c), *ld = dvec(T * out_c);
	int32_t *off = calloc((size_t)E + 2, 4);
	unsigned char *img = NULL;
	if (!hw || !x || !y0 || !got || !loop || !want || !mag || !ld || !off) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (; made < E; made++)
		if (!hweight_make(&hw[made], f->dt, f->bs, O, I, &c.r)) {
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
					double wv = bwd ? hw[e].deq[k * I + o] : hw[e].deq[o * I + k];
					sum += (double)x[t * in_c + k] * wv;
					m += fabs((double)x[t * in_c + k] * wv);
				}
				want[t * out_c + o] = (acc ? (double)y0[t * out_c + o] : 0.0) + sum;
				mag[t * out_c + o] += m;
			}
	struct tern_experts xs;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * in_c) * 4, x),
		    *dy = dt_new(&c, "y", (size_t)(T * out_c) * 4, y0);
	struct dten *doff = dt_new(&c, "off", (size_t)(E + 1) * 4, off), *dw = NULL, *deo = NULL;
	if (!dx || !dy || !doff || !experts_make(&c, hw, E, layout, &xs, &dw, &deo, &img))
		goto out;
	enum tern_status st = bwd ? tern_matmul_grouped_bwd(be, dy->v, dx->v, &xs, doff->v, T, acc, TERN_F32)
				  : tern_matmul_grouped(be, dy->v, dx->v, &xs, doff->v, T, TERN_F32);
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
	/* a loop of tern_matmul(_bwd) over the experts' own weights */
	if (bad(&c, be->vt->upload(be, dy->v, y0), "upload"))
		goto out;
	for (int64_t e = 0; e < E; e++) {
		struct tern_weight we;
		int64_t n = off[e + 1] - off[e];
		expert_weight(&xs, hw, e, &we);
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
	if (s->is_cpu) { /* the CPU backends run their own matmul per expert: bit for bit */
		if (memcmp(loop, got, (size_t)(T * out_c) * 4) != 0) {
			fail(&c, "differs from the loop of %s per expert (bit for bit on the CPU)",
			     bwd ? "matmul_bwd" : "matmul");
			c.err = INFINITY;
		}
	} else {
		for (int64_t i = 0; i < T * out_c; i++)
			ld[i] = loop[i];
		cmp_mag(&c, "y vs the loop of matmul per expert", got, ld, mag, T * out_c, TOL_F32);
	}
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, doff, off);
	dt_unchanged(&c, dw, img);
out:
	free(img);
	for (int64_t e = 0; e < made; e++)
		hweight_free(&hw[e]);
	free(hw);
	free(x);
	free(y0);
	free(got);
	free(loop);
	free(want);
	free(mag);
	free(ld);
	free(off);
	chk_end(&c);
}

/* Offsets that break 0 <= off[0] <= ... <= off[E] <= T (the CPU fails, writing nothing), a
 * ternary weight, E out of range, a stride not a multiple of 4, a half precision, short off and
 * offsets views, an expert past its buffer. */
static void check_grouped_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "matmul_grouped arguments");
	if (skip_unsupported(&c, TERN_OP_MATMUL_GROUPED, TERN_F32))
		return;
	struct tern_backend *be = s->be;
	const int64_t E = 2, O = 4, I = 16, T = 5;
	struct hweight hw[2];
	int nh = 0;
	unsigned char *img = NULL;
	for (; nh < 2; nh++)
		if (!hweight_make(&hw[nh], TERN_NF4_DQ, 64, O, I, &c.r)) {
			fail(&c, "out of host memory");
			goto out;
		}
	struct tern_experts xs;
	struct dten *x = dt_new(&c, "x", (size_t)(T * I) * 4, NULL), *y = dt_nan(&c, "y", T * O), *dw, *deo;
	int32_t bad_off[3] = {0, 4, 3};
	struct dten *off = dt_new(&c, "off", sizeof bad_off, bad_off);
	if (!x || !y || !off || !experts_make(&c, hw, E, 0, &xs, &dw, &deo, &img))
		goto out;
	enum tern_status st;
	if (s->is_cpu) {
		st = tern_matmul_grouped(be, y->v, x->v, &xs, off->v, T, TERN_F32);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "off[2] = 3"))
			fail(&c, "decreasing offsets: got %s \"%s\"", tern_status_str(st), tern_error());
		float got[20]; /* T * O */
		if (dt_get(&c, y, got))
			for (int64_t i = 0; i < T * O; i++)
				if (!isnan(got[i])) {
					fail(&c, "y[%lld] written by a rejected call", (long long)i);
					break;
				}
		/* the second expert past the buffer: refused before anything is written */
		int32_t ok_off[3] = {0, 2, 5};
		if (bad(&c, be->vt->upload(be, off->v, ok_off), "upload"))
			goto out;
		struct tern_experts far = xs;
		far.stride[0] = far.stride[1] = far.stride[2] = (uint64_t)1 << 20;
		st = tern_matmul_grouped(be, y->v, x->v, &far, off->v, T, TERN_F32);
		if (st != TERN_E_INVALID || (dt_get(&c, y, got) && !isnan(got[0])))
			fail(&c, "an expert past its buffer: got %s \"%s\"", tern_status_str(st),
			     tern_error());
	}
	struct tern_experts e0 = xs;
	e0.E = 0;
	st = tern_matmul_grouped(be, y->v, x->v, &e0, off->v, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "E=0 is outside"))
		fail(&c, "E=0: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_experts odd = xs;
	odd.stride[1] = 6;
	st = tern_matmul_grouped(be, y->v, x->v, &odd, off->v, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "absmax stride 6 bytes"))
		fail(&c, "stride 6: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_matmul_grouped_bwd(be, x->v, y->v, &xs, off->v, T, false, TERN_F16);
	if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), "matmul_grouped_bwd precision f16"))
		fail(&c, "f16: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_experts short_eo = xs;
	short_eo.offsets = tern_view_sub(deo->v, 0, 4);
	st = tern_matmul_grouped(be, y->v, x->v, &short_eo, off->v, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "offsets view"))
		fail(&c, "short offsets: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_experts wt = xs;
	wt.w.dtype = TERN_TERNARY;
	wt.w.data.size = tern_weight_data_bytes(TERN_TERNARY, O, I);
	st = tern_matmul_grouped(be, y->v, x->v, &wt, off->v, T, TERN_F32);
	if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), "one scale per matrix"))
		fail(&c, "ternary: got %s \"%s\"", tern_status_str(st), tern_error());
	st = tern_matmul_grouped(be, y->v, x->v, &xs, tern_view_sub(off->v, 0, 8), T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "off view"))
		fail(&c, "short off: got %s \"%s\"", tern_status_str(st), tern_error());
out:
	free(img);
	for (int i = 0; i < nh; i++)
		hweight_free(&hw[i]);
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
		{{TERN_NF4_DQ, 64}, 5, 96, 200, 14},  {{TERN_F32, 0}, 1, 3, 5, 1},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
		for (int bwd = 0; bwd < 2; bwd++)
			for (int acc = 0; acc <= bwd; acc++)
				for (int layout = 0; layout < 2; layout++)
					check_matmul_grouped(s, &cases[k].f, cases[k].E, cases[k].O,
							     cases[k].I, cases[k].T, bwd, acc, layout);
	check_grouped_errors(s);
	/* two f32 experts of 64.1 MiB each, 128.3 MiB together, past lavapipe's 128 MiB
	 * maxStorageBufferRange: Vulkan binds one expert at a time (chunks of whole experts; the
	 * backward shares that code). The CPU has no bindings to split: not run there (it costs
	 * seconds). */
	const char *large = getenv("TERN_TEST_LARGE");
	if (s->is_cpu)
		return;
	if (large && !strcmp(large, "0")) {
		print_line(s, "mm_grouped", "f32 > 128 MiB", "skipped (TERN_TEST_LARGE=0)");
		s->skipped++;
	} else {
		static const struct wfmt f32 = {TERN_F32, 0};
		check_matmul_grouped(s, &f32, 2, 4100, 4100, 3, false, false, 0);
	}
}

#endif
