/* test_ops: the ops of a decode step that issue 13's CUDA work changed.
 *
 * matmul at a few tokens (decoding, T = 1..8), every weight format, at the three
 * product precisions, against the oracles of check_matmul (f32) and check_mm_prec (f16, bf16).
 * On CUDA these take k_gemv.cu's small-T kernels (cu_gemv.h): O = 13 and 9 leave a partial block
 * of 8 rows; I = 1088 and 4160 are multiples of every format's chunk but not of a block's step
 * (4 warps x 32 lanes x 32 NF4 weights), and NF4 blocks of 128 straddle rows; I = 100 and 30 are
 * not multiples of the chunk (gemv_any_kernel). On CUDA each small-T product is also compared with
 * the decode + cuBLAS path (TERN_CUDA_GEMV=0) to the same tolerance, and NF4's exactly: at T <= 2
 * the product-table kernel with the code-lookup kernel (TERN_CUDA_GEMV_TABLE=0; at bf16 both with
 * TERN_CUDA_GEMV_MMA=0, the tensor-core kernel off), at bf16 and one token the tensor-core kernel
 * with x staged in shared memory with the one that reads it from global memory
 * (TERN_CUDA_GEMV_XS=0), and at T >= 2 the T-token product with
 * one-token products of each row (bf16: the tensor-core kernel; f32).
 *
 * add_rmsnorm (the residual add fused with the next norm; a front-door composite of axpy and
 * rmsnorm where a backend has no entry) against the double oracle of h + x, then RMSNorm.
 * Included by test_ops.c. */
#ifndef TERN_TEST_OPS_DECODE_H
#define TERN_TEST_OPS_DECODE_H

/* The small-T path against the decode + cuBLAS path (CUDA only: elsewhere TERN_CUDA_GEMV changes
 * nothing): the same inputs, y from both, |y_gemv - y_cublas| normalised by Σ |x_r w_r| (the
 * rounded operands, as check_mm_prec's magnitude). */
static void check_gemv_vs_gemm(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I,
			       enum tern_dtype prec)
{
	struct chk c;
	chk_begin(&c, s, "matmul", "%-13s %s T=%lld O=%lld I=%lld small-T vs cuBLAS", wdesc(f->dt, f->bs),
		  tern_dtype_name(prec), (long long)T, (long long)O, (long long)I);
	if (skip_unsupported_prec(&c, TERN_OP_MATMUL, f->dt, prec))
		return;
	struct hweight hw;
	float *x = fvec(T * I), *got = fvec(T * O);
	double *want = dvec(T * O), *mag = dvec(T * O);
	if (!x || !got || !want || !mag || !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * I, 1.0);
	double sc = oracle_scale(x, T * I, prec);
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double m = 0.0;
			for (int64_t i = 0; i < I; i++) {
				double xr = prec == TERN_F32 ? x[t * I + i]
							     : oracle_round(prec, (double)x[t * I + i] * sc);
				double wr = prec == TERN_F32 ? hw.deq[o * I + i]
							     : oracle_round(prec, hw.deq[o * I + i]);
				m += fabs(xr * wr);
			}
			mag[t * O + o] = m / sc;
		}
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * I) * 4, x);
	struct dten *dy = dt_nan(&c, "y", T * O);
	if (!dx || !dy || !dweight_make(&c, &hw, &w))
		goto out_w;
	setenv("TERN_CUDA_GEMV", "0", 1);
	enum tern_status st = tern_matmul(s->be, dy->v, dx->v, &w, T, prec);
	unsetenv("TERN_CUDA_GEMV");
	if (bad(&c, st, "matmul (decode + cuBLAS)") || !dt_get(&c, dy, got))
		goto out_w;
	for (int64_t i = 0; i < T * O; i++)
		want[i] = got[i];
	if (bad(&c, tern_matmul(s->be, dy->v, dx->v, &w, T, prec), "matmul (small T)"))
		goto out_w;
	expect_mag(&c, dy, want, mag, T * O, prec == TERN_F32 ? TOL_F32 : TOL_PREC);
	if ((f->dt == TERN_NF4 || f->dt == TERN_NF4_DQ) && dt_get(&c, dy, got)) {
		for (int64_t i = 0; i < T * O; i++)
			want[i] = got[i];
		if (prec == TERN_BF16 && T == 1) { /* the tensor-core kernel with x from global memory,
						     * bit for bit (x is staged at one token only) */
			setenv("TERN_CUDA_GEMV_XS", "0", 1);
			st = tern_matmul(s->be, dy->v, dx->v, &w, T, prec);
			unsetenv("TERN_CUDA_GEMV_XS");
			if (!bad(&c, st, "matmul (small T, TERN_CUDA_GEMV_XS=0)"))
				expect(&c, dy, want, T * O, 0.0);
		}
		if (T <= 2) { /* the product-table kernel against the code-lookup one, bit for bit (bf16:
			       * both instead of the tensor-core kernel) */
			setenv("TERN_CUDA_GEMV_MMA", "0", 1);
			st = tern_matmul(s->be, dy->v, dx->v, &w, T, prec);
			float *tab = fvec(T * O);
			if (!bad(&c, st, "matmul (small T, TERN_CUDA_GEMV_MMA=0)") && tab &&
			    dt_get(&c, dy, tab)) {
				double *tw = dvec(T * O);
				for (int64_t i = 0; tw && i < T * O; i++)
					tw[i] = tab[i];
				setenv("TERN_CUDA_GEMV_TABLE", "0", 1);
				st = tern_matmul(s->be, dy->v, dx->v, &w, T, prec);
				unsetenv("TERN_CUDA_GEMV_TABLE");
				if (tw && !bad(&c, st, "matmul (small T, TERN_CUDA_GEMV_TABLE=0)"))
					expect(&c, dy, tw, T * O, 0.0);
				free(tw);
			}
			free(tab);
			unsetenv("TERN_CUDA_GEMV_MMA");
		}
		if (T > 1 && prec != TERN_F16) { /* (f16: the input scale is max |x| over all T rows) */
			/* each token's sums are a one-token product's of its row, bit for bit */
			bool ok = true;
			for (int64_t t = 0; t < T && ok; t++)
				ok = !bad(
					&c,
					tern_matmul(s->be,
						    tern_view_sub(dy->v, (size_t)(t * O) * 4, (size_t)O * 4),
						    tern_view_sub(dx->v, (size_t)(t * I) * 4, (size_t)I * 4),
						    &w, 1, prec),
					"matmul (one row)");
			if (ok)
				expect(&c, dy, want, T * O, 0.0);
		}
	}
	dt_unchanged(&c, dx, x);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(got);
	free(want);
	free(mag);
	chk_end(&c);
}

static void check_gemv_all(struct suite *s)
{
	static const enum tern_dtype precs[] = {TERN_F32, TERN_BF16, TERN_F16};
	bool cuda = !strcmp(s->be->name, "cuda");
	for (int fi = 0; fi < NWFMTS; fi++) {
		const struct wfmt *f = &WFMTS[fi];
		for (int64_t T = 1; T <= 8; T++) /* every T of the small-T path, at every precision */
			for (int p = 0; p < 3; p++) {
				if (precs[p] == TERN_F32)
					check_matmul(s, f, T, 13, 1088);
				else
					check_mm_prec(s, f, T, 13, 1088, precs[p], 0, 1.0, NULL);
				if (cuda && (T <= 3 || T == 8))
					check_gemv_vs_gemm(s, f, T, 13, 1088, precs[p]);
			}
		for (int k = 0; k < 2; k++) { /* a second step of the block; at T = 8 the narrowest loads */
			int64_t T = k ? 8 : 1;
			check_matmul(s, f, T, 9, 4160);
			check_mm_prec(s, f, T, 9, 4160, TERN_BF16, 0, 1.0, NULL);
		}
		/* enough rows that CUDA's one-token tensor-core kernel fits 3 blocks per SM (at least
		 * 3 · 132 blocks of 16 rows on an H100) */
		check_mm_prec(s, f, 1, 6400, 64, TERN_BF16, 0, 1.0, NULL);
		for (int k = 0; k < 2; k++) /* the f16 scale of tiny and huge inputs at a few tokens */
			check_mm_prec(s, f, 3, 9, 96, TERN_F16, 0, k ? 1e6 : 1e-6, NULL);
		for (int k = 0; k < 2; k++) { /* no whole chunks: gemv_any_kernel */
			int64_t T = k ? 5 : 1;
			check_matmul(s, f, T, 5, 100);
			check_mm_prec(s, f, T, 7, 30, TERN_F16, 0, 1.0, NULL);
			if (cuda)
				check_gemv_vs_gemm(s, f, T, 7, 30, TERN_BF16);
		}
	}
}

/* matmul of 1024 x[T, I] with w into tensors of their own (false: the check failed), so that what
 * a backend keeps of its last input (Vulkan: the f16 scale and copy) is not this test's x */
static bool other_product(struct chk *c, struct suite *s, float *x, int64_t T, int64_t I,
			  const struct tern_weight *w, enum tern_dtype prec)
{
	for (int64_t k = 0; k < T * I; k++)
		x[k] *= 1024.0f;
	struct dten *dz = dt_new(c, "another x", (size_t)(T * I) * 4, x), *dzy = NULL;
	for (int64_t k = 0; k < T * I; k++)
		x[k] /= 1024.0f;
	return dz && (dzy = dt_nan(c, "another y", T * w->O)) &&
	       !bad(c, tern_matmul(s->be, dzy->v, dz->v, w, T, prec), "matmul");
}

/* matmul_multi: n products of one x against n matmul calls, bit for bit (backend.h: a backend only
 * merges the work; on CUDA the NF4 formats at bf16 and T <= 8 take one launch of the tensor-core
 * kernel, weights of 40, 13 and 2064 rows: a partial block each, and blocks of 3 weights in one
 * grid); then its refusals: a weight of another I, y over another y, y over x. */
static void check_matmul_multi(struct suite *s, const struct wfmt *f, int n, int64_t T, int64_t I,
			       enum tern_dtype prec)
{
	static const int64_t rows[TERN_MATMUL_MULTI] = {40, 13, 2064};
	struct chk c;
	chk_begin(&c, s, "matmul_multi", "%-13s %s n=%d T=%lld I=%lld", wdesc(f->dt, f->bs),
		  tern_dtype_name(prec), n, (long long)T, (long long)I);
	if (skip_unsupported_prec(&c, TERN_OP_MATMUL, f->dt, prec))
		return;
	struct hweight hw[TERN_MATMUL_MULTI] = {0}, other = {0};
	struct tern_weight w[TERN_MATMUL_MULTI], wo;
	const struct tern_weight *wp[TERN_MATMUL_MULTI];
	struct tern_view yv[TERN_MATMUL_MULTI];
	struct dten *dy[TERN_MATMUL_MULTI];
	double *want[TERN_MATMUL_MULTI] = {0};
	float *x = fvec(T * I), *got = fvec(T * 2064);
	if (!x || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * I, 1.0);
	struct dten *dx = dt_new(&c, "x", (size_t)(T * I) * 4, x);
	if (!dx)
		goto out;
	for (int i = 0; i < n; i++) { /* each weight's own matmul first, into a tensor of its own */
		struct dten *ref;
		if (!hweight_make(&hw[i], f->dt, f->bs, rows[i], I, &c.r) || !(want[i] = dvec(T * rows[i]))) {
			fail(&c, "out of host memory");
			goto out;
		}
		if (!dweight_make(&c, &hw[i], &w[i]) || !(ref = dt_nan(&c, "matmul's y", T * rows[i])) ||
		    bad(&c, tern_matmul(s->be, ref->v, dx->v, &w[i], T, prec), "matmul") ||
		    !dt_get(&c, ref, got) || !(dy[i] = dt_nan(&c, "y", T * rows[i])))
			goto out;
		for (int64_t k = 0; k < T * rows[i]; k++)
			want[i][k] = got[k];
		wp[i] = &w[i];
		yv[i] = dy[i]->v;
	}
	/* another input's product in between: whatever a backend derives from x (its f16 scale and
	 * copy on Vulkan) must come from this call's x */
	if (!other_product(&c, s, x, T, I, &w[0], prec) ||
	    bad(&c, tern_matmul_multi(s->be, yv, dx->v, wp, NULL, n, T, prec), "matmul_multi"))
		goto out;
	for (int i = 0; i < n; i++) /* every element written, with matmul's bits */
		expect(&c, dy[i], want[i], T * rows[i], 0.0);
	dt_unchanged(&c, dx, x);
	/* refusals, each naming the op, writing nothing */
	if (n >= 2) {
		if (!hweight_make(&other, f->dt, f->bs, 8, I + 64, &c.r) || !dweight_make(&c, &other, &wo))
			goto out;
		const struct tern_weight *bad_i[2] = {&w[0], &wo};
		struct tern_view same[2] = {yv[0], yv[0]}, over_x[2] = {dx->v, yv[1]};
		struct {
			const char *what;
			enum tern_status st;
		} r[3] = {
			{"another I", tern_matmul_multi(s->be, yv, dx->v, bad_i, NULL, 2, T, prec)},
			{"y over y", tern_matmul_multi(s->be, same, dx->v, wp, NULL, 2, T, prec)},
			{"y over x", tern_matmul_multi(s->be, over_x, dx->v, wp, NULL, 2, T, prec)},
		};
		for (int k = 0; k < 3; k++)
			if (r[k].st != TERN_E_INVALID || !strstr(tern_error(), "matmul"))
				fail(&c, "%s: got %s \"%s\"", r[k].what, tern_status_str(r[k].st),
				     tern_error());
		expect(&c, dy[0], want[0], T * rows[0], 0.0);
		dt_unchanged(&c, dx, x);
	}
out:
	for (int i = 0; i < TERN_MATMUL_MULTI; i++) {
		hweight_free(&hw[i]);
		free(want[i]);
	}
	hweight_free(&other);
	free(x);
	free(got);
	chk_end(&c);
}

/* matmul_multi with LoRA terms (backend.h: y[i] exactly as matmul_lora gives it where lt[i].R > 0,
 * as matmul where not): three products, terms on the first and last, against matmul_lora and
 * matmul alone, bit for bit, with another input's product in between; where the backend does not
 * fuse these (lora_fuses), the front door must refuse (TERN_E_UNSUPPORTED) writing nothing. Then
 * the refusals of a bad term: u short, a non-finite scale. Vulkan runs its terms only with
 * TERN_VK_LORA_FUSE=1, set here. */
static void check_matmul_multi_lora(struct suite *s, const struct wfmt *f, int64_t T, int64_t I, int64_t R,
				    enum tern_dtype prec)
{
	static const int64_t rows[3] = {40, 13, 130};
	struct chk c;
	chk_begin(&c, s, "matmul_multi", "%-13s %s T=%lld I=%lld LoRA R=%lld on 0, 2", wdesc(f->dt, f->bs),
		  tern_dtype_name(prec), (long long)T, (long long)I, (long long)R);
	if (skip_unsupported_prec(&c, TERN_OP_MATMUL, f->dt, prec))
		return;
	setenv("TERN_VK_LORA_FUSE", "1", 1);
	struct hweight hw[3] = {0};
	struct tern_weight w[3];
	const struct tern_weight *wp[3] = {&w[0], &w[1], &w[2]};
	struct tern_view yv[3];
	struct tern_lora_term lt[3] = {{{0}, {0}, 0, 0.0f}};
	struct dten *dy[3] = {0};
	double *want[3] = {0};
	float *x = fvec(T * I), *u = fvec(T * R), *B = fvec(130 * R), *got = fvec(T * 130);
	if (!x || !u || !B || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * I, 1.0);
	fill_sym(&c.r, u, T * R, 2.0);
	fill_sym(&c.r, B, 130 * R, 0.05);
	struct dten *dx = dt_new(&c, "x", (size_t)(T * I) * 4, x),
		    *du = dt_new(&c, "u", (size_t)(T * R) * 4, u),
		    *dB = dt_new(&c, "B", (size_t)(130 * R) * 4, B);
	if (!dx || !du || !dB)
		goto out;
	bool fuses = true;
	for (int i = 0; i < 3; i++) {
		if (!hweight_make(&hw[i], f->dt, f->bs, rows[i], I, &c.r) || !(want[i] = dvec(T * rows[i]))) {
			fail(&c, "out of host memory");
			goto out;
		}
		if (!dweight_make(&c, &hw[i], &w[i]) || !(dy[i] = dt_nan(&c, "y", T * rows[i])))
			goto out;
		yv[i] = dy[i]->v;
		if (i != 1) { /* B's first rows[i] rows; scales 2 and 0.5 */
			lt[i] = (struct tern_lora_term){du->v,
							tern_view_sub(dB->v, 0, (size_t)(rows[i] * R) * 4), R,
							i ? 0.5f : 2.0f};
			fuses = fuses && s->be->vt->lora_fuses &&
				s->be->vt->lora_fuses(s->be, &w[i], R, T, prec);
		}
	}
	if (!fuses) {
		enum tern_status st = tern_matmul_multi(s->be, yv, dx->v, wp, lt, 3, T, prec);
		if (st != TERN_E_UNSUPPORTED)
			fail(&c, "not fused here, yet matmul_multi gave %s", tern_status_str(st));
		for (int i = 0; i < 3; i++) /* nothing written */
			dt_untouched(&c, dy[i], T * rows[i]);
		snprintf(c.desc + strlen(c.desc), sizeof c.desc - strlen(c.desc), " (not fused: refused)");
		goto out;
	}
	for (int i = 0; i < 3; i++) { /* each product alone first */
		struct dten *ref = dt_nan(&c, "alone", T * rows[i]);
		if (!ref ||
		    bad(&c,
			i != 1 ? tern_matmul_lora(s->be, ref->v, dx->v, lt[i].u, lt[i].B, &w[i], R,
						  lt[i].scale, T, prec)
			       : tern_matmul(s->be, ref->v, dx->v, &w[i], T, prec),
			"alone") ||
		    !dt_get(&c, ref, got))
			goto out;
		for (int64_t k = 0; k < T * rows[i]; k++)
			want[i][k] = got[k];
	}
	if (!other_product(&c, s, x, T, I, &w[0], prec) || /* another input's product in between */
	    bad(&c, tern_matmul_multi(s->be, yv, dx->v, wp, lt, 3, T, prec), "matmul_multi"))
		goto out;
	for (int i = 0; i < 3; i++)
		expect(&c, dy[i], want[i], T * rows[i], 0.0);
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, du, u);
	/* a bad term: refused naming the op, writing nothing (y keeps the results above) */
	struct tern_lora_term bt[2][3] = {{lt[0], lt[1], lt[2]}, {lt[0], lt[1], lt[2]}};
	bt[0][2].u = tern_view_sub(du->v, 0, (size_t)(T * R) * 4 - 4);
	bt[1][2].scale = INFINITY;
	for (int k = 0; k < 2; k++) {
		enum tern_status st = tern_matmul_multi(s->be, yv, dx->v, wp, bt[k], 3, T, prec);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "matmul"))
			fail(&c, "%s: got %s \"%s\"", k ? "scale inf" : "u short", tern_status_str(st),
			     tern_error());
	}
	for (int i = 0; i < 3; i++)
		expect(&c, dy[i], want[i], T * rows[i], 0.0);
out:
	unsetenv("TERN_VK_LORA_FUSE");
	for (int i = 0; i < 3; i++) {
		hweight_free(&hw[i]);
		free(want[i]);
	}
	free(x);
	free(u);
	free(B);
	free(got);
	chk_end(&c);
}

static void check_matmul_multi_all(struct suite *s)
{
	for (int fi = 0; fi < NWFMTS; fi++)
		for (int n = 1; n <= TERN_MATMUL_MULTI; n++) {
			check_matmul_multi(s, &WFMTS[fi], n, 1, 256, TERN_BF16);
			check_matmul_multi(s, &WFMTS[fi], n, 1, 256, TERN_F32);
		}
	for (int fi = 0; fi < NWFMTS; fi++) { /* a few tokens; a partial strip (I = 320) */
		check_matmul_multi(s, &WFMTS[fi], 3, 5, 320, TERN_BF16);
		check_matmul_multi(s, &WFMTS[fi], 2, 12, 64, TERN_BF16); /* past the small-T path */
		/* training's many tokens (one operand copy of x for the products: Vulkan at f16, CUDA
		 * at f16 and bf16) and, at f16, decoding's few */
		check_matmul_multi(s, &WFMTS[fi], 3, 1, 320, TERN_F16);
		check_matmul_multi(s, &WFMTS[fi], 3, 37, 320, TERN_F16);
		check_matmul_multi(s, &WFMTS[fi], 3, 37, 320, TERN_BF16);
		/* with LoRA terms: rank 16, and 5 (padded) */
		check_matmul_multi_lora(s, &WFMTS[fi], 37, 320, 16, TERN_F16);
		check_matmul_multi_lora(s, &WFMTS[fi], 37, 320, 5, TERN_BF16);
	}
}

/* h += x, then y, rstd = rmsnorm(h): h rounded to fp32 after the add, as axpy leaves it */
static void check_add_rmsnorm(struct suite *s, int64_t T, int64_t D, float eps)
{
	struct chk c;
	chk_begin(&c, s, "add_rmsnorm", "T=%lld D=%lld eps=%g", (long long)T, (long long)D, (double)eps);
	float *h = fvec(T * D), *x = fvec(T * D), *w = fvec(D), *hn = fvec(T * D);
	double *want = dvec(T * D), *wh = dvec(T * D), *wr = dvec(T);
	if (!h || !x || !w || !hn || !want || !wh || !wr) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t t = 0; t < T; t++) { /* rows of different scales, as check_rmsnorm */
		fill_sym(&c.r, h + t * D, D, t % 3 == 2 ? 30.0 : t % 3 == 1 ? 0.01 : 1.0);
		fill_sym(&c.r, x + t * D, D, t % 3 == 2 ? 10.0 : t % 3 == 1 ? 0.02 : 0.5);
	}
	for (int64_t j = 0; j < D; j++)
		w[j] = 1.0f + rng_sym(&c.r, 0.5);
	for (int64_t i = 0; i < T * D; i++) {
		hn[i] = h[i] + x[i];
		wh[i] = hn[i];
	}
	for (int64_t t = 0; t < T; t++) {
		wr[t] = ref_rstd(hn + t * D, D, eps);
		for (int64_t j = 0; j < D; j++)
			want[t * D + j] = (double)hn[t * D + j] * wr[t] * w[j];
	}
	struct dten *dh = dt_new(&c, "h", (size_t)(T * D) * 4, h),
		    *dx = dt_new(&c, "x", (size_t)(T * D) * 4, x);
	struct dten *dw = dt_new(&c, "w", (size_t)D * 4, w), *dy = dt_nan(&c, "y", T * D),
		    *dr = dt_nan(&c, "rstd", T);
	if (!dh || !dx || !dw || !dy || !dr)
		goto out;
	if (bad(&c, tern_add_rmsnorm(s->be, dh->v, dy->v, dr->v, dx->v, dw->v, T, D, eps), "add_rmsnorm"))
		goto out;
	expect(&c, dh, wh, T * D, 0.0); /* the add is one fp32 rounding: exact */
	expect(&c, dy, want, T * D, TOL_F32);
	expect(&c, dr, wr, T, TOL_F32);
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, dw, w);
	/* y over h: refused with one line naming the op */
	if (T > 0) {
		enum tern_status st = tern_add_rmsnorm(s->be, dh->v, dh->v, dr->v, dx->v, dw->v, T, D, eps);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "add_rmsnorm"))
			fail(&c, "y over h: got %s \"%s\"", tern_status_str(st), tern_error());
	}
out:
	free(h);
	free(x);
	free(w);
	free(hn);
	free(want);
	free(wh);
	free(wr);
	chk_end(&c);
}

static void check_add_rmsnorm_all(struct suite *s)
{
	static const int64_t shapes[][2] = {{1, 1}, {1, 4096}, {3, 17}, {5, 1000}, {2, 4099}, {3, 4100}};
	for (int k = 0; k < 6; k++)
		check_add_rmsnorm(s, shapes[k][0], shapes[k][1], k == 2 ? 1e-5f : 1e-6f);
	check_add_rmsnorm(s, 4, 33, 0.0f);
}

#endif
