/* test_ops: matmul and matmul_bwd at the half precisions of the contract (backend.h "Precision of
 * the product"). The oracle rounds exactly as the contract says, independently of the backends:
 * x (dy) times the power of two s from frexp of its largest magnitude, rounded to f16 (bf16
 * without a scale), W's dequantized values rounded, the products summed in double and scaled
 * back by 1/s. A backend must then agree to fp32 summation error (TOL_PREC): the rounding is
 * part of the function, not of the tolerance. Inputs of magnitude 1e-6 and 1e6 check the scale
 * (without it f16 would flush the first to subnormals and overflow the second); rows 60 binades
 * apart check it row by row, under either rule the contract allows (one s for the input, or one
 * per row). On Vulkan the decode-first products (vk_mm.c) against decoding in the tiles, bit for
 * bit (group mm_df). Included by test_ops.c. */
#ifndef TERN_TEST_OPS_PREC_H
#define TERN_TEST_OPS_PREC_H

/* fp32 sums of exact f16 products, in any order (tensor cores included) */
#define TOL_PREC 5e-5
/* A bf16 gemm may run its products finer than bf16 (backend.h gemm): cuBLAS's FAST_16BF did on an
 * H100 on 2026-12-05 at the tests' small shapes, 1e-4 to 2.8e-4 from fp32 products where operands
 * rounded to bf16 would be 2e-3 away (tf32's 10-bit mantissas give that), so within TOL_PREC of
 * neither oracle. Such a result is held to fp32 products within what operands rounded to bf16 to
 * nearest leave, in the error normalised by the sum of the products' magnitudes: at most 1.1e-3 at
 * these shapes (numpy, 5 seeds each; K = 3 is the worst; toward zero would be 3.1e-3); a wrong
 * operand, transpose or scale errs by about 1. */
#define TOL_GEMM_BF16 2e-3

static double oracle_scale(const float *x, int64_t n, enum tern_dtype prec)
{
	if (prec != TERN_F16)
		return 1.0;
	double m = 0.0;
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(x[i]))
			return 1.0;
		m = fmax(m, fabs((double)x[i]));
	}
	if (m == 0.0)
		return 1.0;
	int e;
	frexp(m, &e); /* m in [2^(e-1), 2^e) */
	e -= 1;
	e = e < -126 ? -126 : e;
	int k = 14 - e;
	k = k < -100 ? -100 : k > 100 ? 100 : k;
	return ldexp(1.0, k);
}

static double oracle_round(enum tern_dtype prec, double v)
{
	float f = (float)v;
	return prec == TERN_F16 ? tern_f16_to_f32(tern_f32_to_f16(f)) : tern_bf16_to_f32(tern_f32_to_bf16(f));
}

/* The exponent of row t's magnitude in check_mm_prec's spread rows: 2^-36 .. 2^24, 12 binades
 * apart, so that under one scale for the whole input the smallest rows' x s falls 60 binades
 * below the largest, past f16's subnormals (they round to 0), while each row's own scale keeps
 * all 11 bits. */
static int spread_exp(int64_t t) { return -36 + 12 * (int)(t % 6); }

/* want (and mag) of rows t0 .. t1 under input scale sc (the oracle of check_mm_prec) */
static void prec_oracle_rows(const float *in, const double *wr, const float *out0, enum tern_dtype prec,
			     bool bwd, bool acc, int64_t I, int64_t in_cols, int64_t out_cols, int64_t t0,
			     int64_t t1, double sc, double *xr, double *want, double *mag)
{
	for (int64_t i = t0 * in_cols; i < t1 * in_cols; i++)
		xr[i] = oracle_round(prec, (double)in[i] * sc);
	for (int64_t t = t0; t < t1; t++)
		for (int64_t j = 0; j < out_cols; j++) {
			double sum = 0.0, m = 0.0;
			for (int64_t k = 0; k < in_cols; k++) {
				double w = bwd ? wr[k * I + j] : wr[j * I + k];
				sum += xr[t * in_cols + k] * w;
				m += fabs(xr[t * in_cols + k] * w);
			}
			double base = acc ? (double)out0[t * out_cols + j] : 0.0;
			want[t * out_cols + j] = base + sum / sc;
			mag[t * out_cols + j] = fabs(base) + m / sc;
		}
}

/* dir: 0 matmul, 1 matmul_bwd (=), 2 matmul_bwd (+=). variant names the Vulkan shader variant
 * the environment forces (NULL: none). amp 0: spread rows (spread_exp), each held to TOL_PREC of
 * its own magnitude under either scale backend.h allows: one for each row, or one for the whole
 * input (a wrong row's scale fails both). */
static void check_mm_prec(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I,
			  enum tern_dtype prec, int dir, double amp, const char *variant)
{
	struct chk c;
	bool bwd = dir > 0, acc = dir == 2, spread = amp == 0.0;
	enum tern_op op = bwd ? TERN_OP_MATMUL_BWD : TERN_OP_MATMUL;
	chk_begin(&c, s, bwd ? "matmul_bwd" : "matmul", "%-13s %s T=%lld O=%lld I=%lld %s%g%s%s%s",
		  wdesc(f->dt, f->bs), tern_dtype_name(prec), (long long)T, (long long)O, (long long)I,
		  spread ? "rows 2^" : "x", spread ? 24.0 : amp, acc ? " +=" : "", variant ? " " : "",
		  variant ? variant : "");
	if (skip_unsupported_prec(&c, op, f->dt, prec))
		return;
	int64_t in_cols = bwd ? O : I, out_cols = bwd ? I : O;
	struct hweight hw;
	float *in = fvec(T * in_cols), *out0 = fvec(T * out_cols);
	double *xr = dvec(T * in_cols), *wr = dvec(O * I), *want = dvec(T * out_cols),
	       *mag = dvec(T * out_cols), *want_r = dvec(T * out_cols), *mag_r = dvec(T * out_cols);
	float *got = fvec(T * out_cols);
	if (!in || !out0 || !xr || !wr || !want || !mag || !want_r || !mag_r || !got ||
	    !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, in, T * in_cols, spread ? 1.0 : amp);
	fill_sym(&c.r, out0, T * out_cols, spread ? 0.0 : 2.0 * amp);
	for (int64_t t = 0; spread && t < T; t++)
		for (int64_t k = 0; k < in_cols; k++)
			in[t * in_cols + k] = ldexpf(in[t * in_cols + k], spread_exp(t));
	for (int64_t i = 0; i < O * I; i++)
		wr[i] = oracle_round(prec, hw.deq[i]);
	prec_oracle_rows(in, wr, out0, prec, bwd, acc, I, in_cols, out_cols, 0, T,
			 oracle_scale(in, T * in_cols, prec), xr, want, mag);
	for (int64_t t = 0; spread && t < T; t++) /* each row under its own scale */
		prec_oracle_rows(in, wr, out0, prec, bwd, acc, I, in_cols, out_cols, t, t + 1,
				 oracle_scale(in + t * in_cols, in_cols, prec), xr, want_r, mag_r);

	struct tern_weight w;
	struct dten *din = dt_new(&c, bwd ? "dy" : "x", (size_t)(T * in_cols) * 4, in);
	struct dten *dout = acc ? dt_new(&c, "dx", (size_t)(T * out_cols) * 4, out0)
				: dt_nan(&c, bwd ? "dx" : "y", T * out_cols);
	if (!din || !dout || !dweight_make(&c, &hw, &w))
		goto out_w;
	enum tern_status st = bwd ? tern_matmul_bwd(s->be, dout->v, din->v, &w, T, acc, prec)
				  : tern_matmul(s->be, dout->v, din->v, &w, T, prec);
	if (bad(&c, st, c.op))
		goto out_w;
	if (!spread) {
		expect_mag(&c, dout, want, mag, T * out_cols, TOL_PREC);
	} else if (dt_get(&c, dout, got)) {
		for (int64_t t = 0; t < T; t++) {
			int64_t o = t * out_cols;
			double eg = l2_err(got + o, want + o, mag + o, out_cols),
			       er = l2_err(got + o, want_r + o, mag_r + o, out_cols);
			c.err = fmax(c.err, fmin(eg, er));
			if (fmin(eg, er) > TOL_PREC) {
				fail(&c,
				     "row %lld (2^%d): err %.2e under the whole input's scale, %.2e under "
				     "its own > %.0e",
				     (long long)t, spread_exp(t), eg, er, TOL_PREC);
				break;
			}
		}
	}
	dt_unchanged(&c, din, in);
out_w:
	hweight_free(&hw);
out:
	free(in);
	free(out0);
	free(xr);
	free(wr);
	free(want);
	free(mag);
	free(want_r);
	free(mag_r);
	free(got);
	chk_end(&c);
}

/* Shapes (T, O, I) that take every path of the Vulkan half-precision shader (shaders/mm.comp):
 * small and odd (element loads), aligned (16-element runs) over several 128 x 128 tiles with
 * edges, and long reductions with few output tiles (split-K and its reduction); a few tokens with
 * I a multiple of 8 take shaders/matvec.comp instead. */
static const int64_t PREC_SHAPES[][3] = {
	{3, 7, 15},       {17, 33, 64}, {300, 272, 256}, {5, 96, 2048},
	{130, 2048, 160}, {1, 37, 64},  {4, 40, 256}, /* Vulkan's matvec.comp for decoding (T <= 4) */
};
#define NPREC_SHAPES ((int)(sizeof PREC_SHAPES / sizeof PREC_SHAPES[0]))

static void check_prec_set(struct suite *s, const char *variant, bool all)
{
	static const enum tern_dtype precs[] = {TERN_F16, TERN_BF16};
	for (int k = 0; k < NPREC_SHAPES; k++)
		for (int fi = 0; fi < NWFMTS; fi++) {
			/* the big shapes on every format only where the device is fast */
			bool big = PREC_SHAPES[k][0] * PREC_SHAPES[k][1] * PREC_SHAPES[k][2] > 100000;
			if (big && !all && WFMTS[fi].dt != TERN_NF4_DQ && WFMTS[fi].dt != TERN_BF16)
				continue;
			for (int pi = 0; pi < 2; pi++)
				for (int dir = 0; dir < 3; dir++)
					check_mm_prec(s, &WFMTS[fi], PREC_SHAPES[k][0], PREC_SHAPES[k][1],
						      PREC_SHAPES[k][2], precs[pi], dir, 1.0, variant);
		}
	/* the scale: tiny (gradient-like) and huge inputs, and rows 60 binades apart (on Vulkan one
	 * tile of rows, three, and a split reduction) */
	static const struct wfmt nf4dq = {TERN_NF4_DQ, 64};
	for (int dir = 0; dir < 3; dir++) {
		check_mm_prec(s, &nf4dq, 17, 64, 96, TERN_F16, dir, 1e-6, variant);
		check_mm_prec(s, &nf4dq, 17, 64, 96, TERN_F16, dir, 1e6, variant);
		check_mm_prec(s, &nf4dq, 17, 64, 96, TERN_F16, dir, 0.0, variant);
		check_mm_prec(s, &nf4dq, 300, 40, 256, TERN_F16, dir, 0.0, variant);
		check_mm_prec(s, &nf4dq, 5, 96, 2048, TERN_F16, dir, 0.0, variant);
	}
}

/* Vulkan's decode-first products (vk_mm.c: W's rows decoded to f16 by wdec.comp, then mm.comp's
 * f16 variant) against the products that decode W in their tiles (TERN_VK_MM_DF=all against =0),
 * bit for bit: the same rounding of every weight, the same tiles and chunks; and mm.comp's tiles
 * taken in bands of token tiles against the grid's order (TERN_VK_MM_RASTER), and the backward's
 * chunks decoded transposed for the forward variant or not (TERN_VK_MM_DFT), the same bits.
 * rows > 0 caps the W rows a dispatch takes (TERN_VK_MM_ROWS) for both, so several chunks go
 * through the two decode slots in turn: the forward's columns and the backward's reduction in
 * pieces (its partial sums added in order, the same either way). Each decoded chunk is one more
 * command than the in-tile run records, which the check counts (chunks: what a decode-first run
 * must add). */
static void check_mm_df(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, int dir,
			int64_t rows, int64_t chunks, const char *variant)
{
	struct chk c;
	bool bwd = dir > 0, acc = dir == 2;
	enum tern_op op = bwd ? TERN_OP_MATMUL_BWD : TERN_OP_MATMUL;
	chk_begin(&c, s, bwd ? "matmul_bwd" : "matmul", "%-13s T=%lld O=%lld I=%lld%s rows %lld df %s",
		  wdesc(f->dt, f->bs), (long long)T, (long long)O, (long long)I, acc ? " +=" : "",
		  (long long)rows, variant);
	if (skip_unsupported_prec(&c, op, f->dt, TERN_F16))
		return;
	int64_t in_cols = bwd ? O : I, out_cols = bwd ? I : O;
	struct hweight hw;
	float *in = fvec(T * in_cols), *out0 = fvec(T * out_cols), *got = fvec(T * out_cols);
	double *want = dvec(T * out_cols);
	if (!in || !out0 || !got || !want || !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, in, T * in_cols, 1.0);
	fill_sym(&c.r, out0, T * out_cols, 2.0);
	struct tern_weight w;
	struct dten *din = dt_new(&c, bwd ? "dy" : "x", (size_t)(T * in_cols) * 4, in);
	struct dten *dout = dt_new(&c, bwd ? "dx" : "y", (size_t)(T * out_cols) * 4, out0);
	if (!din || !dout || !dweight_make(&c, &hw, &w))
		goto out_w;
	char rv[32];
	snprintf(rv, sizeof rv, "%lld", (long long)rows);
	if (rows > 0)
		setenv("TERN_VK_MM_ROWS", rv, 1);
	/* decode-first twice first (the default order: bands of token tiles), so that both its slots
	 * have grown (a new buffer's fill is a command too), then decoding in the tiles with the tiles
	 * in the grid's order (TERN_VK_MM_RASTER=0), then decode-first again in bands (=auto):
	 * compared and counted; then in bands of 2 (300 tokens: a band of 2 tiles and one of 1);
	 * backward, then the other way of decode-first's two (TERN_VK_MM_DFT; by default the chunks
	 * are decoded transposed and multiplied by the forward variant where O >= I, as at every
	 * shape here): compared, and no command more than the default's */
	uint64_t ncmd[2] = {0, 0}, ntrans = 0;
	for (int pass = 0; pass < (bwd ? 6 : 5) && !c.why[0]; pass++) {
		struct tern_backend *be = s->be;
		int df = pass != 2;
		setenv("TERN_VK_MM_DF", df ? "all" : "0", 1);
		if (pass >= 2 && pass < 5)
			setenv("TERN_VK_MM_RASTER", pass == 2 ? "0" : pass == 3 ? "auto" : "2", 1);
		else
			unsetenv("TERN_VK_MM_RASTER");
		if (pass == 5)
			setenv("TERN_VK_MM_DFT", O >= I ? "0" : "1", 1);
		if (bad(&c, be->vt->upload(be, dout->v, out0), "upload"))
			break;
		uint64_t n0 = be->counts.commands;
		enum tern_status st = bwd ? tern_matmul_bwd(be, dout->v, din->v, &w, T, acc, TERN_F16)
					  : tern_matmul(be, dout->v, din->v, &w, T, TERN_F16);
		if (pass < 4)
			ncmd[df] = be->counts.commands - n0;
		if (pass == 5)
			ntrans = be->counts.commands - n0;
		if (bad(&c, st,
			pass == 5 ? "decode-first transposed"
			: df      ? "decode-first"
				  : "decoding in the tiles"))
			break;
		if (pass == 2 && dt_get(&c, dout, got))
			for (int64_t i = 0; i < T * out_cols; i++)
				want[i] = got[i];
		if (pass >= 3)
			expect(&c, dout, want, T * out_cols, 0.0);
	}
	unsetenv("TERN_VK_MM_DF");
	unsetenv("TERN_VK_MM_RASTER");
	unsetenv("TERN_VK_MM_ROWS");
	unsetenv("TERN_VK_MM_DFT");
	if (!c.why[0] && ncmd[1] != ncmd[0] + (uint64_t)chunks)
		fail(&c, "decode-first recorded %llu commands, decoding in the tiles %llu: want %lld more",
		     (unsigned long long)ncmd[1], (unsigned long long)ncmd[0], (long long)chunks);
	if (!c.why[0] && bwd && ntrans != ncmd[1])
		fail(&c, "decode-first's other way recorded %llu commands, its default %llu: want as many",
		     (unsigned long long)ntrans, (unsigned long long)ncmd[1]);
	dt_unchanged(&c, din, in);
out_w:
	hweight_free(&hw);
out:
	free(in);
	free(out0);
	free(got);
	free(want);
	chk_end(&c);
}

/* Every format with something to decode (f16 weights have none) at shapes that take the fast
 * loads, forward, backward (=) and backward (+=): one chunk (300 x 272 x 256: several tiles with
 * edges), 9 chunks of at most 32 rows (the last of 16), and a long reduction with few output
 * tiles (split-K, backward) in 64-row chunks. */
static void check_mm_df_set(struct suite *s, const char *variant)
{
	for (int fi = 0; fi < NWFMTS; fi++) {
		if (WFMTS[fi].dt == TERN_F16)
			continue;
		for (int dir = 0; dir < 3; dir++) {
			check_mm_df(s, &WFMTS[fi], 300, 272, 256, dir, 0, 1, variant);
			check_mm_df(s, &WFMTS[fi], 300, 272, 256, dir, 32, 9, variant);
			check_mm_df(s, &WFMTS[fi], 17, 2048, 160, dir, 512, 4, variant);
		}
	}
}

/* Every variant the backend has: the CPU reference and backends without variants (CUDA) once; on
 * Vulkan the cooperative-matrix and the register-blocked shader (TERN_VK_MM16 forces one); a
 * variant the device cannot run is listed as not run. */
static void check_prec_all(struct suite *s)
{
	if (s->is_cpu || !s->be->vt->has_variant) {
		check_prec_set(s, NULL, true);
		return;
	}
	static const char *const variants[] = {"coopmat", "regs"};
	/* lavapipe runs the 256-invocation shader with barriers as coroutines: every format on
	 * the small shapes, two on the large ones */
	bool fast_device = !strstr(s->be->device_name, "llvmpipe");
	for (int v = 0; v < 2; v++) {
		setenv("TERN_VK_MM16", variants[v], 1);
		if (!tern_backend_variant_ok(s->be, variants[v])) {
			char desc[64];
			snprintf(desc, sizeof desc, "f16/bf16 %s", variants[v]);
			print_line(s, "matmul", desc, "not run (this device has no such variant)");
			s->skipped++;
			continue;
		}
		check_prec_set(s, variants[v], fast_device);
	}
	unsetenv("TERN_VK_MM16");
}

/* The decode-first products on each variant the device has (Vulkan only: elsewhere not run). */
static void check_mm_df_all(struct suite *s)
{
	if (s->is_cpu || !s->be->vt->has_variant) {
		print_line(s, "matmul", "decode-first (TERN_VK_MM_DF)", "not run (Vulkan's products only)");
		s->skipped++;
		return;
	}
	static const char *const variants[] = {"coopmat", "regs"};
	for (int v = 0; v < 2; v++) {
		if (!tern_backend_variant_ok(s->be, variants[v])) {
			char desc[64];
			snprintf(desc, sizeof desc, "decode-first %s", variants[v]);
			print_line(s, "matmul", desc, "not run (this device has no such variant)");
			s->skipped++;
			continue;
		}
		setenv("TERN_VK_MM16", variants[v], 1);
		check_mm_df_set(s, variants[v]);
	}
	unsetenv("TERN_VK_MM16");
}

#endif
