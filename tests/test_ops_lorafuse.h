/* test_ops: the LoRA linear at bf16 products (lprec = prec = BF16), where a backend may run the
 * two rank-R updates inside the base products (backend.h matmul_lora, matmul_lora_bwd; CUDA) or
 * compose them from gemms (the rest, and CUDA with TERN_CUDA_LORA_FUSE=0 or a bf16 weight). The
 * oracle rounds as the path taken says (tern_lora_fused): fused, y's low-rank operand is
 * bf16(s·u); composed, s · Σ bf16(u) bf16(B). Every operand is rounded to bf16 (a gemm's may
 * instead stay fp32 where the case's u says the gemm ran fp32 products, or finer than bf16 products,
 * then at TOL_GEMM_BF16: backend.h) and summed in double, from the u and du the device produced (downloaded: their own fp32 summation order
 * would otherwise flip bf16 roundings), so what is left is fp32 summation error (TOL_PREC). On
 * CUDA a decoded weight must take the fused path unless TERN_CUDA_LORA_FUSE=0, and must not at
 * T <= 8 (the small-T kernels). A backend without
 * bf16 gemm reports the checks as not run. Group "lora_fused" of TERN_TEST_ONLY; included by
 * test_ops.c after its LoRA case (lora_case, lora_dev), with test_ops_prec.h before it. */
#ifndef TERN_TEST_OPS_LORAFUSE_H
#define TERN_TEST_OPS_LORAFUSE_H

static double bfr(double v) { return oracle_round(TERN_BF16, v); }
static double id(double v) { return v; }

/* The gemms' inputs: rounded to bf16, or not (backend.h lets a bf16 gemm run fp32 products, as
 * cuBLAS's FAST_16BF did at these shapes on the GPUs); chosen per case by u, the first gemm. */
static bool gemm_f32;
static double bgr(double v) { return gemm_f32 ? v : bfr(v); }

/* Σ_k rnd(a[k·sa]) · rnd(b[k·sb]) over n terms in double; the sum of the terms' magnitudes is
 * added to *mag */
static double rdot(const float *a, int64_t sa, const float *b, int64_t sb, int64_t n, double (*rnd)(double),
		   double *mag)
{
	double s = 0.0;
	for (int64_t k = 0; k < n; k++) {
		double p = rnd(a[k * sa]) * rnd(b[k * sb]);
		s += p, *mag += fabs(p);
	}
	return s;
}

/* One LoRA linear case (test_ops.c's lora_case and lora_dev, dropout 0) at products of precision
 * prec and LoRA products of lprec, and the u and du the device produced (downloaded after the
 * run: the oracles below start from them). */
struct lora_fx {
	struct lora_case lc;
	struct lora_dev d;
	float *u, *du;
};

static void lora_fx_free(struct lora_fx *fx)
{
	lora_case_free(&fx->lc);
	free(fx->u);
	free(fx->du);
}

/* false (the check failed, fx to be freed) when memory runs out or a tensor cannot be made */
static bool lora_fx_make(struct chk *c, struct lora_fx *fx, const struct wfmt *f, int64_t T, int64_t O,
			 int64_t I, int64_t R, bool acc, enum tern_dtype prec, enum tern_dtype lprec,
			 bool spread)
{
	memset(fx, 0, sizeof *fx);
	fx->u = fvec(T * R), fx->du = fvec(T * R);
	if (!fx->u || !fx->du || !lora_case_make(&fx->lc, &c->r, f, T, O, I, R, 0.0f)) {
		fail(c, "out of host memory");
		return false;
	}
	/* spread: rows of x and dy 2^-12, 1, 2^12 in turn (a scale per row and one for the whole
	 * input then agree: nothing falls below f16's normal range) */
	for (int64_t t = 0; spread && t < T; t++) {
		int e = 12 * (int)(t % 3) - 12;
		for (int64_t k = 0; k < I; k++)
			fx->lc.x[t * I + k] = ldexpf(fx->lc.x[t * I + k], e);
		for (int64_t o = 0; o < O; o++)
			fx->lc.dy[t * O + o] = ldexpf(fx->lc.dy[t * O + o], e);
	}
	if (!lora_dev_make(c, &fx->lc, &fx->d, acc))
		return false;
	fx->d.lora.prec = prec, fx->d.lora.lprec = lprec;
	return true;
}

/* The forward, then the backward (dx over x with alias), then u and du downloaded. */
static bool lora_fx_run(struct chk *c, struct suite *s, struct lora_fx *fx, int64_t T, bool acc, bool alias)
{
	return !bad(c, lora_fwd(s, &fx->d, T), "lora_forward") &&
	       !bad(c, lora_bwd(s, &fx->d, T, acc, alias), "lora_backward") && dt_get(c, fx->d.u, fx->u) &&
	       dt_get(c, fx->d.du, fx->du);
}

/* The inputs the case must leave as they were. */
static void lora_fx_unchanged(struct chk *c, const struct lora_fx *fx, bool alias)
{
	if (!alias)
		dt_unchanged(c, fx->d.x, fx->lc.x);
	dt_unchanged(c, fx->d.A, fx->lc.A);
	dt_unchanged(c, fx->d.B, fx->lc.B);
	dt_unchanged(c, fx->d.dy, fx->lc.dy);
}

/* The LoRA gemms' results after a backward, against the oracle with operands rounded by rnd:
 * dB = dB0 + s Σ dy u, du = s Σ dy B, dA = dA0 + Σ du x (u and du as the device produced them).
 * w, m: scratch of (max(O, I) + T) · R doubles. */
static void expect_lora_grads(struct chk *c, const struct lora_fx *fx, int64_t T, int64_t O, int64_t I,
			      int64_t R, float sc, double (*rnd)(double), double tol, double *w, double *m)
{
	const float *dy = fx->lc.dy, *u = fx->u, *du = fx->du, *B = fx->lc.B, *x = fx->lc.x,
		    *dB0 = fx->lc.dB0, *dA0 = fx->lc.dA0;
	for (int64_t o = 0; o < O; o++)
		for (int64_t r = 0; r < R; r++) {
			double g = 0.0, a = rdot(dy + o, O, u + r, R, T, rnd, &g);
			w[o * R + r] = dB0[o * R + r] + sc * a, m[o * R + r] = fabs(dB0[o * R + r]) + sc * g;
		}
	expect_mag(c, fx->d.dB, w, m, O * R, tol);
	for (int64_t t = 0; t < T; t++)
		for (int64_t r = 0; r < R; r++) {
			double g = 0.0, a = rdot(dy + t * O, 1, B + r, R, O, rnd, &g);
			w[t * R + r] = sc * a, m[t * R + r] = sc * g;
		}
	cmp_mag(c, "du", du, w, m, T * R, tol);
	for (int64_t r = 0; r < R; r++)
		for (int64_t i = 0; i < I; i++) {
			double g = 0.0, a = rdot(du + r, R, x + i, I, T, rnd, &g);
			w[r * I + i] = dA0[r * I + i] + a, m[r * I + i] = fabs(dA0[r * I + i]) + g;
		}
	expect_mag(c, fx->d.dA, w, m, R * I, tol);
}

/* How check_lora_bf16 lowers the CUDA budgets: not; the windows and the token chunks (several of
 * each); the windows alone, to 8 or 2 KiB of decoded weight (several windows, one token chunk) */
enum { LORA_WHOLE, LORA_CHUNKED, LORA_WINDOWED_8K, LORA_WINDOWED_2K };

/* dx over x: alias; chunked: LORA_* */
static void check_lora_bf16(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, int64_t R,
			    bool acc, bool alias, int chunked)
{
	struct chk c;
	chk_begin(&c, s, "lora", "%-13s bf16 T=%lld O=%lld I=%lld R=%lld %s%s", wdesc(f->dt, f->bs),
		  (long long)T, (long long)O, (long long)I, (long long)R,
		  alias ? "= over x"
		  : acc ? "+="
			: "=",
		  chunked == LORA_CHUNKED       ? " chunked"
		  : chunked == LORA_WINDOWED_8K ? " windowed 8K"
		  : chunked == LORA_WINDOWED_2K ? " windowed 2K"
						: "");
	if (skip_unsupported(&c, TERN_OP_MATMUL, f->dt) || skip_unsupported(&c, TERN_OP_MATMUL_BWD, f->dt))
		return;
	if (!tern_backend_supports_prec(s->be, TERN_OP_GEMM, TERN_BF16) ||
	    !tern_backend_supports_prec(s->be, TERN_OP_MATMUL, TERN_BF16)) {
		print_line(s, c.op, c.desc, "not run (no bf16 gemm on this backend)");
		s->skipped++;
		return;
	}
	struct lora_fx fx;
	int64_t P = (O > I ? O : I) + T;
	double *want = dvec(T * P), *mag = dvec(T * P), *pw = dvec(R * P), *pm = dvec(R * P),
	       *ur = dvec(T * R);
	if (!lora_fx_make(&c, &fx, f, T, O, I, R, acc, TERN_BF16, TERN_BF16, false))
		goto out;
	if (!want || !mag || !pw || !pm || !ur) {
		fail(&c, "out of host memory");
		goto out;
	}
	float sc = fx.lc.s;
	const float *x = fx.lc.x, *A = fx.lc.A, *B = fx.lc.B, *dy = fx.lc.dy, *dx0 = fx.lc.dx0, *u = fx.u,
		    *du = fx.du;
	const struct hweight *hw = &fx.lc.hw;
	bool fused = tern_lora_fused(s->be, &fx.d.w, &fx.d.lora, T);
	/* CUDA fuses a decoded weight, but not T <= 8 tokens (CU_GEMV_MAX_T), which its small-T
	 * kernels take in the plain matmul, unless TERN_CUDA_GEMV=0 or TERN_DECODE_LEGACY is set */
	const char *off = getenv("TERN_CUDA_LORA_FUSE"), *gv = getenv("TERN_CUDA_GEMV"),
		   *leg = getenv("TERN_DECODE_LEGACY");
	bool small = T <= 8 && !(gv && !strcmp(gv, "0")) && !(leg && *leg && strcmp(leg, "0"));
	if (!strcmp(s->bname, "cuda") && f->dt != TERN_BF16 && !(off && !strcmp(off, "0")) &&
	    fused == small) {
		fail(&c, "cuda %s the fused path at T=%lld (tern_lora_fused)",
		     fused ? "took" : "did not take", (long long)T);
		goto out;
	}
	if (chunked == LORA_CHUNKED) {
		setenv("TERN_CUDA_DECODE_BYTES", "4096", 1);
		setenv("TERN_CUDA_OPERAND_BYTES", "2048", 1);
	} else if (chunked != LORA_WHOLE) {
		setenv("TERN_CUDA_DECODE_BYTES", chunked == LORA_WINDOWED_8K ? "8192" : "2048", 1);
	}
	bool ran = lora_fx_run(&c, s, &fx, T, acc, alias);
	if (chunked != LORA_WHOLE) {
		unsetenv("TERN_CUDA_DECODE_BYTES");
		unsetenv("TERN_CUDA_OPERAND_BYTES");
	}
	if (!ran)
		goto out;

	/* u = Σ bf16(x) bf16(A) to TOL_PREC; where not (the gemm ran finer products), every gemm of
	 * the case is held to fp32 products at TOL_GEMM_BF16 (cuBLAS ran u in fp32 and dB finer than
	 * bf16 but not fp32 in one case on an H100) */
	for (int64_t t = 0; t < T; t++)
		for (int64_t r = 0; r < R; r++) {
			double m = 0.0, mb = 0.0;
			want[t * R + r] = rdot(x + t * I, 1, A + r * I, 1, I, bfr, &mb);
			pw[t * R + r] = rdot(x + t * I, 1, A + r * I, 1, I, id, &m);
			mag[t * R + r] = m;
		}
	double eu = l2_err(u, want, mag, T * R), eu_f = l2_err(u, pw, mag, T * R);
	gemm_f32 = eu > TOL_PREC;
	double tol_g = gemm_f32 ? TOL_GEMM_BF16 : TOL_PREC;
	if (gemm_f32)
		snprintf(c.desc + strlen(c.desc), sizeof c.desc - strlen(c.desc), "%s",
			 eu_f <= TOL_PREC ? " (gemm fp32 products)" : " (gemm finer than bf16)");
	cmp_mag(&c, "u", u, gemm_f32 ? pw : want, mag, T * R, tol_g);
	/* y = Σ bf16(x) bf16(W) + (fused: Σ bf16(s·u) bf16(B); composed: s · Σ bf16(u) bf16(B)) */
	for (int64_t t = 0; t < T * R; t++)
		ur[t] = fused ? bfr((double)(float)(sc * u[t])) : bgr(u[t]);
	double ls = fused ? 1.0 : (double)sc;
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double m = 0.0, l = 0.0, lm = 0.0;
			double a = rdot(x + t * I, 1, hw->deq + o * I, 1, I, bfr, &m);
			for (int64_t r = 0; r < R; r++) {
				double p = ur[t * R + r] * (fused ? bfr(B[o * R + r]) : bgr(B[o * R + r]));
				l += p, lm += fabs(p);
			}
			want[t * O + o] = a + ls * l, mag[t * O + o] = m + ls * lm;
		}
	expect_mag(&c, fx.d.y, want, mag, T * O, fused ? TOL_PREC : tol_g);
	/* dB, du, dA: Σ over bf16(operands) */
	expect_lora_grads(&c, &fx, T, O, I, R, sc, bgr, tol_g, pw, pm);
	/* dx = (dx0 +) Σ bf16(dy) bf16(W) + Σ bf16(du) bf16(A) (x as the forward read it) */
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i < I; i++) {
			double a = acc ? (double)dx0[t * I + i] : 0.0, m = fabs(a);
			a += rdot(dy + t * O, 1, hw->deq + i, I, O, bfr, &m);
			a += rdot(du + t * R, 1, A + i, I, R, fused ? bfr : bgr, &m);
			want[t * I + i] = a, mag[t * I + i] = m;
		}
	expect_mag(&c, alias ? fx.d.x : fx.d.dx, want, mag, T * I, fused ? TOL_PREC : tol_g);
	lora_fx_unchanged(&c, &fx, alias);
out:
	lora_fx_free(&fx);
	void *ps[] = {want, mag, pw, pm, ur};
	for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
		free(ps[i]);
	chk_end(&c);
}

/* The front doors tern_matmul_lora(_bwd): a backend without the entries refuses with
 * TERN_E_UNSUPPORTED; one with them refuses R = 0 and a short u/du view (TERN_E_INVALID) and a case
 * its lora_fuses declines (TERN_E_UNSUPPORTED), writing nothing. */
static void check_matmul_lora_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "lora", "matmul_lora front doors refuse");
	struct tern_backend *be = s->be;
	const int64_t T = 12, O = 16, I = 24, R = 4; /* T > 8: CUDA fuses the NF4 weight */
	struct hweight hw, hb;
	memset(&hw, 0, sizeof hw);
	memset(&hb, 0, sizeof hb);
	float *z = fvec(T * (O + I) + (O + I) * R);
	if (!z || !hweight_make(&hw, TERN_NF4, 64, O, I, &c.r) ||
	    !hweight_make(&hb, TERN_BF16, 0, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	struct tern_weight w, wb;
	struct dten *x = dt_new(&c, "x", (size_t)(T * I) * 4, z),
		    *u = dt_new(&c, "u", (size_t)(T * R) * 4, z),
		    *B = dt_new(&c, "B", (size_t)(O * R) * 4, z),
		    *A = dt_new(&c, "A", (size_t)(R * I) * 4, z), *y = dt_nan(&c, "y", T * O);
	if (!x || !u || !B || !A || !y || !dweight_make(&c, &hw, &w) || !dweight_make(&c, &hb, &wb))
		goto out;
	enum tern_dtype prec = tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_BF16)  ? TERN_BF16
			       : tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_F16) ? TERN_F16
											  : TERN_F32;
	struct {
		const struct tern_weight *w;
		int64_t R;
		struct tern_view u;
		enum tern_status want;
		const char *what;
	} cases[] = {
		{&w, 0, u->v, TERN_E_INVALID, "R=0"},
		{&w, R, tern_view_sub(u->v, 0, (size_t)(T * R) * 4 - 4), TERN_E_INVALID, "u short"},
		{&wb, R, u->v, TERN_E_UNSUPPORTED, "a bf16 weight (CUDA: no window to extend)"},
	};
	for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
		/* without the entries every call is TERN_E_UNSUPPORTED; the bf16 weight only where
		 * the backend declines it (CUDA; Vulkan's f16 products run it: not a refusal) */
		enum tern_status want = !be->vt->matmul_lora ? TERN_E_UNSUPPORTED : cases[k].want;
		bool decl = cases[k].want != TERN_E_UNSUPPORTED || !be->vt->lora_fuses ||
			    !be->vt->lora_fuses(be, cases[k].w, R, T, prec);
		if (!decl)
			continue;
		enum tern_status st = tern_matmul_lora(be, y->v, x->v, cases[k].u, B->v, cases[k].w,
						       cases[k].R, 1.0f, T, prec);
		enum tern_status sb = tern_matmul_lora_bwd(be, x->v, y->v, cases[k].u, A->v, cases[k].w,
							   cases[k].R, T, false, prec);
		if (st != want || sb != want)
			fail(&c, "%s: matmul_lora %s, matmul_lora_bwd %s, want %s", cases[k].what,
			     tern_status_str(st), tern_status_str(sb), tern_status_str(want));
	}
	float *got = fvec(T * O);
	if (got && dt_get(&c, y, got))
		for (int64_t i = 0; i < T * O; i++)
			if (!isnan(got[i])) {
				fail(&c, "y[%lld] was written by a refused call", (long long)i);
				break;
			}
	free(got);
	dt_unchanged(&c, x, z);
out:
	hweight_free(&hw);
	hweight_free(&hb);
	free(z);
	chk_end(&c);
}

/* f16's significand: v rounded to 11 significant bits, whatever its exponent (what a power-of-two
 * scale into f16's normal range, f16 rounding and the scale undone give) */
static double sig11(double v)
{
	int e;
	double m = frexp(v, &e); /* |m| in [0.5, 1): normal in f16 */
	return v == 0.0 || !isfinite(v) ? v : ldexp(oracle_round(TERN_F16, m), e);
}

/* The LoRA linear at f16 products (prec F16, lprec F32): Vulkan runs the rank-R updates as R more
 * steps of the products' reduction (shaders/mm.comp -DLORA), the rest compose them with fp32 gemms.
 * The oracle: x (dy) scaled by its power of two and rounded to f16, W rounded to f16; the low-rank
 * terms in double from the u and du the device produced, fused with u, B (du, A) rounded to f16's
 * 11-bit significand (backend.h matmul_lora at F16: the tile's own power-of-two scales keep them in
 * f16's normal range), composed as they are; to fp32 summation error (TOL_PREC). On Vulkan
 * (unless TERN_VK_LORA_FUSE=0) at T > 4 the fused path must be taken (a test that could not see
 * the term would pass on the composition). variant: the Vulkan shader TERN_VK_MM16 forces. */
static void check_lora_f16(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, int64_t R,
			   bool acc, bool alias, bool spread, const char *variant)
{
	struct chk c;
	chk_begin(&c, s, "lora", "%-13s f16 T=%lld O=%lld I=%lld R=%lld %s%s%s%s", wdesc(f->dt, f->bs),
		  (long long)T, (long long)O, (long long)I, (long long)R,
		  alias ? "= over x"
		  : acc ? "+="
			: "=",
		  spread ? " rows 2^+-12" : "", variant ? " " : "", variant ? variant : "");
	if (skip_unsupported(&c, TERN_OP_MATMUL, f->dt) || skip_unsupported(&c, TERN_OP_MATMUL_BWD, f->dt))
		return;
	if (!tern_backend_supports_prec(s->be, TERN_OP_MATMUL, TERN_F16)) {
		print_line(s, c.op, c.desc, "not run (no f16 products on this backend)");
		s->skipped++;
		return;
	}
	struct lora_fx fx;
	int64_t P = (O > I ? O : I) + T;
	double *want = dvec(T * P + R * P), *mag = dvec(T * P + R * P), *xr = dvec(T * P), *wr = dvec(O * I);
	if (!lora_fx_make(&c, &fx, f, T, O, I, R, acc, TERN_F16, TERN_F32, spread))
		goto out;
	if (!want || !mag || !xr || !wr) {
		fail(&c, "out of host memory");
		goto out;
	}
	float sc = fx.lc.s;
	const float *x = fx.lc.x, *A = fx.lc.A, *B = fx.lc.B, *dy = fx.lc.dy, *dx0 = fx.lc.dx0, *u = fx.u,
		    *du = fx.du;
	for (int64_t i = 0; i < O * I; i++)
		wr[i] = oracle_round(TERN_F16, fx.lc.hw.deq[i]);
	bool fused = tern_lora_fused(s->be, &fx.d.w, &fx.d.lora, T);
	/* Vulkan declines where B or A would pass maxStorageBufferRange (TERN_VK_MAX_RANGE: tests) */
	const char *on = getenv("TERN_VK_LORA_FUSE"), *mr = getenv("TERN_VK_MAX_RANGE");
	bool fits = !mr || !*mr || (double)R * (double)(O > I ? O : I) * 4.0 <= strtod(mr, NULL);
	if (!strcmp(s->bname, "vulkan") && T > 4 && !(on && !strcmp(on, "0")) && fits && !fused) {
		fail(&c, "vulkan did not take the fused path at T=%lld (tern_lora_fused)", (long long)T);
		goto out;
	}
	if (fused)
		snprintf(c.desc + strlen(c.desc), sizeof c.desc - strlen(c.desc), " fused");
	if (!lora_fx_run(&c, s, &fx, T, acc, alias))
		goto out;
	/* u = x Aᵀ (fp32 gemm) */
	for (int64_t t = 0; t < T; t++)
		for (int64_t r = 0; r < R; r++) {
			double m = 0.0;
			want[t * R + r] = rdot(x + t * I, 1, A + r * I, 1, I, id, &m), mag[t * R + r] = m;
		}
	cmp_mag(&c, "u", u, want, mag, T * R, TOL_PREC);
	/* y = Σ f16(σx) f16(W) / σ + s Σ u B */
	double sx = oracle_scale(x, T * I, TERN_F16);
	for (int64_t i = 0; i < T * I; i++)
		xr[i] = oracle_round(TERN_F16, (double)x[i] * sx);
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double a = 0.0, m = 0.0, lm = 0.0;
			for (int64_t k = 0; k < I; k++) {
				double p = xr[t * I + k] * wr[o * I + k];
				a += p, m += fabs(p);
			}
			double l = rdot(u + t * R, 1, B + o * R, 1, R, fused ? sig11 : id, &lm);
			want[t * O + o] = a / sx + sc * l, mag[t * O + o] = m / sx + sc * lm;
		}
	expect_mag(&c, fx.d.y, want, mag, T * O, TOL_PREC);
	/* dB, du, dA (fp32 gemms) */
	expect_lora_grads(&c, &fx, T, O, I, R, sc, id, TOL_PREC, want, mag);
	/* dx = (dx0 +) Σ f16(σdy) f16(W) / σ + Σ du A (x as the forward read it) */
	double sy = oracle_scale(dy, T * O, TERN_F16);
	for (int64_t i = 0; i < T * O; i++)
		xr[i] = oracle_round(TERN_F16, (double)dy[i] * sy);
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i < I; i++) {
			double a = 0.0, m = 0.0, lm = 0.0, b = acc ? (double)dx0[t * I + i] : 0.0;
			for (int64_t o = 0; o < O; o++) {
				double p = xr[t * O + o] * wr[o * I + i];
				a += p, m += fabs(p);
			}
			double l = rdot(du + t * R, 1, A + i, I, R, fused ? sig11 : id, &lm);
			want[t * I + i] = b + a / sy + l, mag[t * I + i] = fabs(b) + m / sy + lm;
		}
	expect_mag(&c, alias ? fx.d.x : fx.d.dx, want, mag, T * I, TOL_PREC);
	lora_fx_unchanged(&c, &fx, alias);
out:
	lora_fx_free(&fx);
	void *ps[] = {want, mag, xr, wr};
	for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
		free(ps[i]);
	chk_end(&c);
}

/* f16 cases: (T, O, I, R) over one tile and several with edges, R of one round of 16 rank columns
 * (16, and 3 and 5 with zero padding) and of several (40, 72: the second pass over u and B),
 * few output tiles with a long reduction (split-K: the term in split 0's partials), the element
 * loads (odd I); on Vulkan each shader variant the device has. */
static void check_lora_f16_set(struct suite *s, const char *variant)
{
	static const struct wfmt fmts[] = {
		{TERN_NF4_DQ, 64}, {TERN_NF4, 64}, {TERN_BF16, 0}, {TERN_F32, 0}, {TERN_TERNARY, 0}};
	static const int64_t shapes[][4] = {{17, 33, 64, 16}, {130, 160, 144, 40}, {9, 48, 1024, 3},
					    {12, 37, 97, 5},  {140, 272, 256, 16}, {20, 100, 96, 72}};
	for (int k = 0; k < 6; k++)
		for (int fi = 0; fi < (k == 0 ? 5 : 2); fi++)
			for (int acc = 0; acc < 2; acc++)
				check_lora_f16(s, &fmts[fi], shapes[k][0], shapes[k][1], shapes[k][2],
					       shapes[k][3], acc, k == 1 && !acc, false, variant);
	/* rows of x and dy 24 binades apart: Vulkan's term folds each row's input scale into u's
	 * rounding (over two tiles of rows; and a second round of rank columns) */
	for (int acc = 0; acc < 2; acc++) {
		check_lora_f16(s, &fmts[0], 140, 272, 256, 16, acc, false, true, variant);
		check_lora_f16(s, &fmts[0], 20, 100, 96, 72, acc, false, true, variant);
	}
}

static void check_lora_f16_all(struct suite *s)
{
	if (s->is_cpu || !s->be->vt->has_variant) {
		check_lora_f16_set(s, NULL);
		return;
	}
	setenv("TERN_VK_LORA_FUSE", "1", 1); /* the default, whatever the environment says */
	static const char *const variants[] = {"coopmat", "regs"};
	for (int v = 0; v < 2; v++) {
		setenv("TERN_VK_MM16", variants[v], 1);
		if (!tern_backend_variant_ok(s->be, variants[v])) {
			char desc[64];
			snprintf(desc, sizeof desc, "f16 %s", variants[v]);
			print_line(s, "lora", desc, "not run (this device has no such variant)");
			s->skipped++;
			continue;
		}
		check_lora_f16_set(s, variants[v]);
	}
	unsetenv("TERN_VK_MM16");
	setenv("TERN_VK_LORA_FUSE", "0", 1); /* the composition from gemms at f16 products */
	check_lora_f16_set(s, "composed");
	unsetenv("TERN_VK_LORA_FUSE");
}

/* (T, O, I, R): R not a multiple of 8 (the padding of the extended reduction), I not a multiple
 * of 8 (the element decode, odd leading dimensions), O and I over several windows of the chunked
 * cases with a short last one, a single token */
static void check_lora_fused_all(struct suite *s)
{
	static const struct wfmt fmts[] = {{TERN_F32, 0},    {TERN_F16, 0},      {TERN_BF16, 0},
					   {TERN_NF4, 64},   {TERN_NF4_DQ, 128}, {TERN_TERNARY, 0},
					   {TERN_NF4_DQ, 64}};
	static const int64_t shapes[][4] = {
		{3, 33, 64, 4}, {17, 7, 97, 5}, {1, 40, 72, 16}, {9, 130, 256, 12}};
	for (int k = 0; k < 4; k++)
		for (int f = 0; f < 6; f++)
			for (int acc = 0; acc < 2; acc++)
				check_lora_bf16(s, &fmts[f], shapes[k][0], shapes[k][1], shapes[k][2],
						shapes[k][3], acc, false, LORA_WHOLE);
	check_matmul_lora_errors(s);
	check_lora_f16_all(s);
	for (int f = 0; f < 7; f++) /* dx over x; chunked */
		check_lora_bf16(s, &fmts[f], 17, 7, 97, 5, false, true, LORA_WHOLE);
	for (int f = 3; f < 7; f++)
		for (int acc = 0; acc < 2; acc++) {
			check_lora_bf16(s, &fmts[f], 17, 130, 256, 12, acc, false, LORA_CHUNKED);
			check_lora_bf16(s, &fmts[f], 10, 37, 97, 3, acc, !acc, LORA_CHUNKED);
			/* windows: forward 9 of 15 rows, backward 11 of 24 columns; odd I: forward 5 of
			 * 9 rows, backward 5 of 24 columns, the last window of one row (column) */
			check_lora_bf16(s, &fmts[f], 17, 130, 256, 12, acc, false, LORA_WINDOWED_8K);
			check_lora_bf16(s, &fmts[f], 10, 37, 97, 3, acc, !acc, LORA_WINDOWED_2K);
		}
}

#endif
