/* Every op on every backend against an independent double-precision oracle (after ggml's
 * test-backend-ops), plus finite-difference checks of the backward ops on the CPU backends.
 *
 * For each backend tern_backend_create() can make ("ref" and "cpu" always; "vulkan" and "cuda"
 * device 0 when present; an absent GPU backend prints "not run" and counts as skipped, never as
 * passed),
 * every op runs on fresh random inputs of several shapes, odd sizes included. Each output sits
 * between two guard regions that must come back untouched; outputs are checked for NaN/Inf and
 * compared with the oracle by the normalised error ||got - want|| / max(||want||, tiny). Weights
 * are compared against the matrix the src/quant functions dequantize, so quantized matmuls are
 * held to fp32 tolerances too; casts must match the quant.h conversions bit for bit.
 *
 * Environment: TERN_TEST_SEED (default 20240601) seeds everything; TERN_REQUIRE_VULKAN=1
 * (TERN_REQUIRE_CUDA=1) turns an unavailable Vulkan (CUDA) backend into a failure;
 * TERN_TEST_LARGE=0 skips the >128 MiB weight case; TERN_TEST_BACKEND=NAME runs that backend only.
 * One line per check; the last line is "N passed, M failed[, K skipped]"; exit 1 on failure. */
#include "test_ops_harness.h"
#include "test_ops_layers.h"
#include "test_ops_attention.h"
#include "test_ops_attention_kv.h"
#include "test_ops_loss.h"
#include "test_ops_stream.h"
#include "test_ops_moe.h"
#include "test_ops_route.h"
#include "test_ops_bitnet.h"
#include "test_ops_argmax.h"

/* The weight formats every matmul check runs. */
struct wfmt {
	enum tern_dtype dt;
	int bs;
};
static const struct wfmt WFMTS[] = {
	{TERN_F32, 0},   {TERN_F16, 0},     {TERN_BF16, 0},     {TERN_NF4, 64},
	{TERN_NF4, 128}, {TERN_NF4_DQ, 64}, {TERN_NF4_DQ, 128}, {TERN_TERNARY, 0},
};
#define NWFMTS ((int)(sizeof WFMTS / sizeof WFMTS[0]))

/* (T, O, I): every T in {1, 3, 17}, I in {1, 15, 64, 97, 200}, O in {1, 7, 33, 130} occurs;
 * {300, 40, 72} takes the Vulkan 16-byte-load variant forward and backward (rows and the
 * reduction multiples of 8) over more tokens than one workgroup of the CPU-device variants; the
 * last two take Vulkan's decoding shader, matvec.comp (T <= 4, I a multiple of 8) */
static const int64_t MM_SHAPES[][3] = {
	{1, 1, 1},   {3, 7, 15},    {17, 33, 64}, {3, 130, 97},  {17, 7, 200},
	{1, 33, 97}, {300, 40, 72}, {1, 37, 64},  {4, 130, 256},
};
#define NMM_SHAPES ((int)(sizeof MM_SHAPES / sizeof MM_SHAPES[0]))

#include "test_ops_prec.h"
#include "test_ops_grouped.h"

/* ---- oracles ----------------------------------------------------------------------------- */

/* y[T,O] = x[T,I] · W[O,I]ᵀ */
static void ref_matmul(double *y, const float *x, const float *W, int64_t T, int64_t O, int64_t I)
{
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double s = 0.0;
			for (int64_t i = 0; i < I; i++)
				s += (double)x[t * I + i] * (double)W[o * I + i];
			y[t * O + o] = s;
		}
}

/* dx[T,I] += dy[T,O] · W[O,I] */
static void ref_matmul_bwd(double *dx, const float *dy, const float *W, int64_t T, int64_t O, int64_t I)
{
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double d = dy[t * O + o];
			for (int64_t i = 0; i < I; i++)
				dx[t * I + i] += d * (double)W[o * I + i];
		}
}

static bool ref_keep(uint64_t key, int64_t i, float p)
{
	return tern_dropout_hash(key, (uint32_t)i) >= tern_dropout_threshold(p);
}

/* ---- matmul and matmul_bwd ---------------------------------------------------------------- */

static void check_matmul(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I)
{
	struct chk c;
	chk_begin(&c, s, "matmul", "%-13s T=%lld O=%lld I=%lld", wdesc(f->dt, f->bs), (long long)T,
		  (long long)O, (long long)I);
	if (skip_unsupported(&c, TERN_OP_MATMUL, f->dt))
		return;
	struct hweight hw;
	float *x = fvec(T * I);
	double *want = dvec(T * O);
	if (!x || !want || !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * I, 1.0);
	ref_matmul(want, x, hw.deq, T, O, I);

	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * I) * 4, x);
	struct dten *dy = dt_nan(&c, "y", T * O);
	if (!dx || !dy || !dweight_make(&c, &hw, &w))
		goto out_w;
	if (bad(&c, tern_matmul(s->be, dy->v, dx->v, &w, T, TERN_F32), "matmul"))
		goto out_w;
	expect(&c, dy, want, T * O, TOL_F32);
	dt_unchanged(&c, dx, x);
	dt_unchanged(&c, dt_find(&c, "W data"), hw.data);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(want);
	chk_end(&c);
}

static void check_matmul_bwd(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, bool acc)
{
	struct chk c;
	chk_begin(&c, s, "matmul_bwd", "%-13s T=%lld O=%lld I=%lld %s", wdesc(f->dt, f->bs), (long long)T,
		  (long long)O, (long long)I, acc ? "+=" : "=");
	if (skip_unsupported(&c, TERN_OP_MATMUL_BWD, f->dt))
		return;
	struct hweight hw;
	float *dyh = fvec(T * O), *dx0 = fvec(T * I);
	double *want = dvec(T * I), *mag = dvec(T * I);
	if (!dyh || !dx0 || !want || !mag || !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, dyh, T * O, 1.0);
	fill_sym(&c.r, dx0, T * I, 2.0);
	ref_matmul_bwd(want, dyh, hw.deq, T, O, I);
	for (int64_t i = 0; i < T * I; i++) {
		mag[i] = fabs(want[i]) + (acc ? fabs((double)dx0[i]) : 0.0);
		want[i] += acc ? (double)dx0[i] : 0.0;
	}

	struct tern_weight w;
	struct dten *ddy = dt_new(&c, "dy", (size_t)(T * O) * 4, dyh);
	struct dten *ddx = acc ? dt_new(&c, "dx", (size_t)(T * I) * 4, dx0) : dt_nan(&c, "dx", T * I);
	if (!ddy || !ddx || !dweight_make(&c, &hw, &w))
		goto out_w;
	if (bad(&c, tern_matmul_bwd(s->be, ddx->v, ddy->v, &w, T, acc, TERN_F32), "matmul_bwd"))
		goto out_w;
	expect_mag(&c, ddx, want, mag, T * I, TOL_F32);
	dt_unchanged(&c, ddy, dyh);
out_w:
	hweight_free(&hw);
out:
	free(dyh);
	free(dx0);
	free(want);
	free(mag);
	chk_end(&c);
}

/* One f32 weight whose data exceeds 128 MiB (lavapipe's maxStorageBufferRange): a backend has
 * to split it across bindings. The oracle is the full double product, cheap at T=2. */
static void check_large(struct suite *s, bool bwd)
{
	const int64_t T = 2, O = 8200, I = 4100;
	struct chk c;
	chk_begin(&c, s, bwd ? "matmul_bwd" : "matmul", "%-13s T=%lld O=%lld I=%lld (%.1f MiB)", "f32",
		  (long long)T, (long long)O, (long long)I, (double)(O * I * 4) / 1048576.0);
	if (skip_unsupported(&c, bwd ? TERN_OP_MATMUL_BWD : TERN_OP_MATMUL, TERN_F32))
		return;
	float *W = fvec(O * I), *in = fvec(T * (bwd ? O : I));
	double *want = dvec(T * (bwd ? I : O));
	if (!W || !in || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, W, O * I, 0.05);
	fill_sym(&c.r, in, T * (bwd ? O : I), 1.0);
	if (bwd)
		ref_matmul_bwd(want, in, W, T, O, I);
	else
		ref_matmul(want, in, W, T, O, I);

	struct tern_backend *be = s->be;
	struct tern_buffer *wb = NULL;
	enum tern_status st = be->vt->buffer_alloc(be, (size_t)(O * I) * 4, &wb);
	if (st == TERN_E_DEVICE_MEM || st == TERN_E_NOMEM) {
		/* a device too small for the case is not a failure of the op */
		char tail[600];
		snprintf(tail, sizeof tail, "skipped (cannot allocate the weight: %s)", tern_error());
		print_line(s, c.op, c.desc, tail);
		s->skipped++;
		free(W);
		free(in);
		free(want);
		return;
	}
	if (bad(&c, st, "W alloc"))
		goto out;
	struct tern_weight w = {.dtype = TERN_F32, .O = O, .I = I, .data = {wb, 0, (size_t)(O * I) * 4}};
	struct dten *din = dt_new(&c, bwd ? "dy" : "x", (size_t)(T * (bwd ? O : I)) * 4, in);
	struct dten *dout = dt_nan(&c, bwd ? "dx" : "y", T * (bwd ? I : O));
	if (!din || !dout || bad(&c, be->vt->upload(be, w.data, W), "W upload"))
		goto out_b;
	st = bwd ? tern_matmul_bwd(be, dout->v, din->v, &w, T, false, TERN_F32)
		 : tern_matmul(be, dout->v, din->v, &w, T, TERN_F32);
	if (!bad(&c, st, c.op))
		expect(&c, dout, want, T * (bwd ? I : O), TOL_F32);
out_b:
	be->vt->buffer_free(be, wb);
out:
	free(W);
	free(in);
	free(want);
	chk_end(&c);
}

/* ---- gemm --------------------------------------------------------------------------------- */

/* prec BF16: the oracle multiplies A and B rounded to bf16 (to nearest even) and sums in double;
 * what is left is fp32 summation error (TOL_PREC, as the bf16 matmuls). backend.h also allows
 * finer products (cuBLAS's FAST_16BF ran them at these shapes on an H100): a result within TOL_PREC
 * of fp32 products is held to them, and one within neither is held to fp32 products at
 * TOL_GEMM_BF16; the line says which. The error is normalised by the sum of the products'
 * magnitudes (plus |beta · C|). */
static void check_gemm(struct suite *s, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
		       float beta, enum tern_dtype prec)
{
	struct chk c;
	chk_begin(&c, s, "gemm", "%c%c M=%lld N=%lld K=%lld a=%g b=%g%s", ta ? 'T' : 'N', tb ? 'T' : 'N',
		  (long long)M, (long long)N, (long long)K, (double)alpha, (double)beta,
		  prec == TERN_BF16 ? " bf16" : "");
	if (skip_unsupported(&c, TERN_OP_GEMM, TERN_F32))
		return;
	if (!tern_backend_supports_prec(s->be, TERN_OP_GEMM, prec)) {
		print_line(s, "gemm", c.desc, "not run (no bf16 gemm on this backend)");
		s->skipped++;
		return;
	}
	float *A = fvec(M * K), *B = fvec(K * N), *C0 = fvec(M * N);
	double *want = dvec(M * N), *mag = dvec(M * N), *want_f = dvec(M * N);
	float *got = fvec(M * N);
	if (!A || !B || !C0 || !want || !mag || !want_f || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, A, M * K, 1.0);
	fill_sym(&c.r, B, K * N, 1.0);
	fill_sym(&c.r, C0, M * N, 1.0);
	for (int64_t m = 0; m < M; m++)
		for (int64_t n = 0; n < N; n++) {
			double acc = 0.0, acc_f = 0.0, am = 0.0;
			for (int64_t k = 0; k < K; k++) {
				float a = ta ? A[k * M + m] : A[m * K + k],
				      b = tb ? B[n * K + k] : B[k * N + n];
				acc += (double)tern_prec_round(prec, a) * (double)tern_prec_round(prec, b);
				acc_f += (double)a * (double)b;
				am += fabs((double)a * (double)b);
			}
			double bc = beta != 0.0f ? (double)beta * C0[m * N + n] : 0.0;
			want[m * N + n] = (double)alpha * acc + bc;
			want_f[m * N + n] = (double)alpha * acc_f + bc;
			mag[m * N + n] = fabs((double)alpha) * am + fabs(bc);
		}
	struct dten *dA = dt_new(&c, "A", (size_t)(M * K) * 4, A);
	struct dten *dB = dt_new(&c, "B", (size_t)(K * N) * 4, B);
	/* beta == 0: C starts as NaN, which proves it is not read */
	struct dten *dC = beta == 0.0f ? dt_nan(&c, "C", M * N) : dt_new(&c, "C", (size_t)(M * N) * 4, C0);
	if (!dA || !dB || !dC)
		goto out;
	if (bad(&c, tern_gemm(s->be, dC->v, dA->v, dB->v, M, N, K, ta, tb, alpha, beta, prec), "gemm"))
		goto out;
	const double *oracle = want;
	double tol = prec == TERN_F32 ? TOL_F32 : TOL_PREC;
	if (prec == TERN_BF16 && dt_get(&c, dC, got) && l2_err(got, want, mag, M * N) > TOL_PREC) {
		oracle = want_f;
		bool f32 = l2_err(got, want_f, mag, M * N) <= TOL_PREC;
		tol = f32 ? TOL_PREC : TOL_GEMM_BF16;
		snprintf(c.desc + strlen(c.desc), sizeof c.desc - strlen(c.desc),
			 f32 ? " (fp32 products)" : " (finer than bf16)");
	}
	expect_mag(&c, dC, oracle, mag, M * N, tol);
	dt_unchanged(&c, dA, A);
	dt_unchanged(&c, dB, B);
out:
	free(want_f);
	free(got);
	free(A);
	free(B);
	free(C0);
	free(want);
	free(mag);
	chk_end(&c);
}

/* The same gemm three times into three outputs gives the same bits: on Vulkan a split TKP's
 * partials are added by whichever group of a row block finishes last, in the order of the splits,
 * and lavapipe runs groups on several threads, so the last one varies from run to run. */
static void check_gemm_same(struct suite *s, int64_t M, int64_t N, int64_t K)
{
	struct chk c;
	chk_begin(&c, s, "gemm", "NT M=%lld N=%lld K=%lld same bits 3 runs", (long long)M, (long long)N,
		  (long long)K);
	if (skip_unsupported(&c, TERN_OP_GEMM, TERN_F32))
		return;
	float *A = fvec(M * K), *B = fvec(N * K), *got[3] = {fvec(M * N), fvec(M * N), fvec(M * N)};
	if (!A || !B || !got[0] || !got[1] || !got[2]) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, A, M * K, 1.0);
	fill_sym(&c.r, B, N * K, 1.0);
	struct dten *dA = dt_new(&c, "A", (size_t)(M * K) * 4, A);
	struct dten *dB = dt_new(&c, "B", (size_t)(N * K) * 4, B);
	if (!dA || !dB)
		goto out;
	for (int r = 0; r < 3; r++) {
		struct dten *dC = dt_nan(&c, "C", M * N);
		if (!dC ||
		    bad(&c, tern_gemm(s->be, dC->v, dA->v, dB->v, M, N, K, false, true, 1.0f, 0.0f, TERN_F32),
			"gemm") ||
		    !dt_get(&c, dC, got[r]))
			goto out;
		if (r > 0 && memcmp(got[r], got[0], (size_t)(M * N) * 4))
			fail(&c, "run %d differs from run 0 in its bits", r);
	}
out:
	free(A);
	free(B);
	for (int r = 0; r < 3; r++)
		free(got[r]);
	chk_end(&c);
}

/* (M, N, K): LoRA-like shapes (T×R from T×I, R×I from T×R...) and odd ones; {300, 20, 9} and
 * {5, 270, 3} span several workgroups of the Vulkan CPU-device variant along M, and along N
 * (swapped); from {40, 16, 300} on the shapes take several K chunks of the GPU low-rank variants
 * (shaders/gemm_lr.comp: N <= 32, and M <= 32 as the transposed product), split over groups
 * with a short last split; K = 1030 is not a multiple of 4 (no vector loads); {260, 16, 800}
 * spans several row groups of TK and TM with vector loads, {200, 24, 300} takes the r32 kernels,
 * {70, 520, 16} several row and column groups of WV with vector loads, {70, 520, 24} the same with
 * WV's rank-32 variant (B's rows through shared memory in two rounds). The rest cross TKP's edges
 * (lavapipe: 64 multiprocessors assumed, so a row block splits K up to K / CK ways): rows one past
 * a block of 128 and of 64 and one short of 128, one row (a split of 4 k at the end), K not a
 * multiple of 4 with ranks 17 and 32, rank 1, K of two chunks of 64 plus 8, and {17, 7, 33} and
 * {3, 16, 97} run unsplit (K under two chunks).
 * On Vulkan the GPU kernels run too (TERN_VK_VARIANT=tiled), every LoRA generation
 * (TERN_VK_LORA=v1|v2, vk_ops.c pick_gemm_lr), v2 with TK and with TKP (TERN_VK_LORA_TK=old|new)
 * in each of its tiles (TERN_VK_TK_TILE; unset: by rank and K, vk_ops.c pick_tkp). */
static void check_gemm_all(struct suite *s)
{
	static const int64_t gemm_shapes[][3] = {
		{1, 1, 1},      {3, 16, 97},   {17, 7, 33},    {33, 130, 17},   {300, 20, 9},
		{5, 270, 3},    {40, 16, 300}, {16, 300, 520}, {70, 16, 1030},  {260, 16, 800},
		{200, 24, 300}, {70, 520, 16}, {70, 520, 24},  {129, 16, 600},  {65, 12, 264},
		{127, 32, 520}, {1, 16, 4100}, {1, 32, 1030},  {130, 17, 1031}, {66, 32, 777},
		{300, 1, 520},  {129, 16, 136}};
	static const int nshapes = (int)(sizeof gemm_shapes / sizeof gemm_shapes[0]);
	static const float ab[][2] = {{1.0f, 0.0f}, {0.5f, 1.0f}, {-1.25f, 0.75f}};
	static const struct {
		const char *lora, *tk, *tile;
	} gens[] = {{NULL, NULL, NULL},   {"v1", NULL, NULL},   {"v2", "old", NULL}, {"v2", "new", NULL},
		    {"v2", "new", "4x4"}, {"v2", "new", "4x2"}, {"v2", "new", "2x4"}};
	for (int g = 0; g < (s->is_cpu ? 1 : (int)(sizeof gens / sizeof gens[0])); g++) {
		if (gens[g].lora) {
			setenv("TERN_VK_VARIANT", "tiled", 1);
			setenv("TERN_VK_LORA", gens[g].lora, 1);
			if (gens[g].tk)
				setenv("TERN_VK_LORA_TK", gens[g].tk, 1);
			else
				unsetenv("TERN_VK_LORA_TK");
			if (gens[g].tile)
				setenv("TERN_VK_TK_TILE", gens[g].tile, 1);
			else
				unsetenv("TERN_VK_TK_TILE");
			printf("-- gemm: TERN_VK_VARIANT=tiled TERN_VK_LORA=%s TERN_VK_LORA_TK=%s "
			       "TERN_VK_TK_TILE=%s\n",
			       gens[g].lora, gens[g].tk ? gens[g].tk : "(unset)",
			       gens[g].tile ? gens[g].tile : "(unset)");
		}
		bool v1 = gens[g].lora && !strcmp(gens[g].lora, "v1");
		for (int k = 0; k < nshapes; k++) {
			if (v1 && gemm_shapes[k][1] > 16 && gemm_shapes[k][1] <= 32 &&
			    gemm_shapes[k][2] > 32) {
				/* v1's rank-32 ROWK needs 48 KiB of shared memory; the backend refuses it
				 * on smaller devices (lavapipe: 32 KiB) */
				print_line(s, "gemm", "v1 rank-32 kernels",
					   "not run (v1 needs 48 KiB shared)");
				s->skipped++;
				continue;
			}
			for (int t = 0; t < 4; t++)
				for (int j = 0; j < 3; j++)
					check_gemm(s, gemm_shapes[k][0], gemm_shapes[k][1], gemm_shapes[k][2],
						   t & 1, t >> 1, ab[j][0], ab[j][1], TERN_F32);
			/* bf16 products where gemm runs them (not run elsewhere), every transpose */
			for (int t = 0; g == 0 && t < 4; t++)
				check_gemm(s, gemm_shapes[k][0], gemm_shapes[k][1], gemm_shapes[k][2], t & 1,
					   t >> 1, ab[2][0], ab[2][1], TERN_BF16);
		}
		/* split TKP on lavapipe: 3 row blocks x 8 splits (4x4, 2x4: 5 x 8), 4x2 3 x 16; rank
		 * 32: 2 x 32 (4x2), 2 x 16 (4x4), 3 x 16 (2x4) */
		check_gemm_same(s, 300, 16, 1024);
		if (!v1) /* v1's rank-32 ROWK: see above */
			check_gemm_same(s, 130, 32, 2048);
	}
	unsetenv("TERN_VK_VARIANT");
	unsetenv("TERN_VK_LORA");
	unsetenv("TERN_VK_LORA_TK");
	unsetenv("TERN_VK_TK_TILE");
}

/* ---- dropout ------------------------------------------------------------------------------ */

static void check_dropout(struct suite *s, int64_t n, float p, bool alias)
{
	struct chk c;
	chk_begin(&c, s, "dropout", "n=%lld p=%g%s", (long long)n, (double)p, alias ? " in-place" : "");
	if (skip_unsupported(&c, TERN_OP_DROPOUT, TERN_F32))
		return;
	uint64_t key = rng_u64(&c.r);
	float *x = fvec(n), *got = fvec(n);
	double *want = dvec(n);
	if (!x || !got || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	for (int64_t i = 0; i < n; i++)
		x[i] = rng_nonzero(&c.r, 0.1, 2.0);
	int64_t kept = 0;
	for (int64_t i = 0; i < n; i++) {
		bool k = ref_keep(key, i, p);
		kept += k;
		want[i] = k ? (double)x[i] / (1.0 - (double)p) : 0.0;
	}
	struct dten *dx = dt_new(&c, alias ? "x=y" : "x", (size_t)n * 4, x);
	struct dten *dy = alias ? dx : dt_nan(&c, "y", n);
	if (!dx || !dy)
		goto out;
	if (bad(&c, tern_dropout(s->be, dy->v, dx->v, n, p, key), "dropout"))
		goto out;
	if (!dt_get(&c, dy, got))
		goto out;
	cmp(&c, dy->name, got, want, n, 1e-6);
	for (int64_t i = 0; i < n; i++)
		if ((got[i] != 0.0f) != ref_keep(key, i, p)) {
			fail(&c, "mask differs from tern_dropout_hash at i=%lld", (long long)i);
			break;
		}
	if (!alias)
		dt_unchanged(&c, dx, x);
	/* the fraction kept: within 5 standard deviations of 1 - p */
	double frac = (double)kept / (double)n, sd = sqrt((double)p * (1.0 - (double)p) / (double)n);
	if (n >= 1000 && fabs(frac - (1.0 - (double)p)) > 5.0 * sd + 1e-12)
		fail(&c, "kept %.4f of the elements, expected %.4f", frac, 1.0 - (double)p);
out:
	free(x);
	free(got);
	free(want);
	chk_end(&c);
}

/* ---- axpy, scale -------------------------------------------------------------------------- */

static void check_axpy(struct suite *s, int64_t n, float alpha)
{
	struct chk c;
	chk_begin(&c, s, "axpy", "n=%lld alpha=%g", (long long)n, (double)alpha);
	if (skip_unsupported(&c, TERN_OP_AXPY, TERN_F32))
		return;
	float *x = fvec(n), *y = fvec(n);
	double *want = dvec(n);
	if (!x || !y || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	fill_sym(&c.r, y, n, 1.0);
	for (int64_t i = 0; i < n; i++)
		want[i] = (double)y[i] + (double)alpha * x[i];
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dy = dt_new(&c, "y", (size_t)n * 4, y);
	if (!dx || !dy || bad(&c, tern_axpy(s->be, dy->v, dx->v, n, alpha), "axpy"))
		goto out;
	expect(&c, dy, want, n, TOL_F32);
	dt_unchanged(&c, dx, x);
out:
	free(x);
	free(y);
	free(want);
	chk_end(&c);
}

static void check_scale(struct suite *s, int64_t n, float alpha)
{
	struct chk c;
	chk_begin(&c, s, "scale", "n=%lld alpha=%g", (long long)n, (double)alpha);
	if (skip_unsupported(&c, TERN_OP_SCALE, TERN_F32))
		return;
	float *x = fvec(n);
	double *want = dvec(n);
	if (!x || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	for (int64_t i = 0; i < n; i++)
		want[i] = (double)alpha * x[i];
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x);
	if (!dx || bad(&c, tern_scale(s->be, dx->v, n, alpha), "scale"))
		goto out;
	expect(&c, dx, want, n, TOL_F32);
out:
	free(x);
	free(want);
	chk_end(&c);
}

/* ---- adamw -------------------------------------------------------------------------------- */

/* The textbook AdamW of training-math.md, in double from the same fp32 hyperparameters. */
static void ref_adamw(double *p, double *m, double *v, const float *g, int64_t n,
		      const struct tern_adamw_args *a)
{
	double lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay,
	       t = (double)a->step;
	double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
	for (int64_t i = 0; i < n; i++) {
		p[i] -= lr * wd * p[i];
		m[i] = b1 * m[i] + (1.0 - b1) * g[i];
		v[i] = b2 * v[i] + (1.0 - b2) * (double)g[i] * g[i];
		p[i] -= lr * (m[i] / bc1) / (sqrt(v[i] / bc2) + eps);
	}
}

/* Magnitudes for cmp_mag, updated before each ref_adamw step with the same arguments:
 * magu[i] sums the sizes of the updates of param[i]; magp[i] adds them to the largest |param|;
 * magm[i] follows the sizes of the parts of m's lerp (an earlier error decays by beta1 a step).
 * v needs none: its parts are never negative. */
static void ref_adamw_mag(double *magp, double *magu, double *magm, const double *p, const double *m,
			  const double *v, const float *g, int64_t n, const struct tern_adamw_args *a)
{
	double lr = a->lr, b1 = a->beta1, b2 = a->beta2, eps = a->eps, wd = a->weight_decay,
	       t = (double)a->step;
	double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
	for (int64_t i = 0; i < n; i++) {
		double mi = b1 * m[i] + (1.0 - b1) * g[i], vi = b2 * v[i] + (1.0 - b2) * (double)g[i] * g[i];
		double u = lr * wd * fabs(p[i]) + lr * fabs(mi / bc1) / (sqrt(vi / bc2) + eps);
		magu[i] += u;
		magp[i] = fmax(magp[i], fabs(p[i])) + u;
		magm[i] = b1 * magm[i] + fabs(m[i]) + (1.0 - b1) * fabs(g[i] - m[i]);
	}
}

/* `steps` AdamW steps from step `first` on (moments zero when first == 1, random otherwise: a
 * resumed run), each with fresh gradients; parameters and both moments compared at the end. */
static void check_adamw(struct suite *s, int64_t n, float wd, int64_t first, int steps)
{
	struct chk c;
	chk_begin(&c, s, "adamw", "n=%lld wd=%g steps %lld..%lld", (long long)n, (double)wd, (long long)first,
		  (long long)(first + steps - 1));
	if (skip_unsupported(&c, TERN_OP_ADAMW, TERN_F32))
		return;
	float *p = fvec(n), *m = fvec(n), *v = fvec(n), *g = fvec(n);
	double *rp = dvec(n), *rm = dvec(n), *rv = dvec(n), *delta = dvec(n);
	double *magp = dvec(n), *magu = dvec(n), *magm = dvec(n);
	float *got = fvec(n);
	if (!p || !m || !v || !g || !rp || !rm || !rv || !delta || !magp || !magu || !magm || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, p, n, 1.0);
	for (int64_t i = 0; i < n; i++) {
		m[i] = first == 1 ? 0.0f : rng_sym(&c.r, 0.1);
		v[i] = first == 1 ? 0.0f : (float)(0.01 * rng_unif(&c.r));
		rp[i] = p[i];
		rm[i] = m[i];
		rv[i] = v[i];
	}
	struct dten *dp = dt_new(&c, "param", (size_t)n * 4, p),
		    *dg = dt_new(&c, "grad", (size_t)n * 4, NULL);
	struct dten *dm = dt_new(&c, "m", (size_t)n * 4, m), *dv = dt_new(&c, "v", (size_t)n * 4, v);
	if (!dp || !dg || !dm || !dv)
		goto out;
	struct tern_adamw_args a = {
		.lr = 1e-2f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = wd};
	for (int k = 0; k < steps; k++) {
		/* about 5% exact zeros: the eps-only denominator of an untouched moment */
		for (int64_t i = 0; i < n; i++)
			g[i] = rng_unif(&c.r) < 0.05 ? 0.0f : rng_sym(&c.r, 1.0);
		a.step = first + k;
		ref_adamw_mag(magp, magu, magm, rp, rm, rv, g, n, &a);
		ref_adamw(rp, rm, rv, g, n, &a);
		if (bad(&c, s->be->vt->upload(s->be, dg->v, g), "grad upload") ||
		    bad(&c, tern_adamw(s->be, dp->v, dg->v, dm->v, dv->v, n, &a), "adamw"))
			goto out;
	}
	expect_mag(&c, dp, rp, magp, n, TOL_F32);
	expect_mag(&c, dm, rm, magm, n, TOL_F32);
	expect(&c, dv, rv, n, TOL_F32);
	/* the update itself, not diluted by |param| ~ 1; fp32 rounding of p bounds it near 1e-6 */
	if (dt_get(&c, dp, got)) {
		for (int64_t i = 0; i < n; i++) {
			delta[i] = rp[i] - (double)p[i];
			got[i] = (float)((double)got[i] - (double)p[i]);
		}
		cmp_mag(&c, "param update", got, delta, magu, n, 1e-4);
	}
out:
	free(p);
	free(m);
	free(v);
	free(g);
	free(rp);
	free(rm);
	free(rv);
	free(delta);
	free(magp);
	free(magu);
	free(magm);
	free(got);
	chk_end(&c);
}

/* ---- sumsq, clip -------------------------------------------------------------------------- */

static void check_sumsq(struct suite *s, int64_t n, bool acc)
{
	struct chk c;
	chk_begin(&c, s, "sumsq", "n=%lld %s", (long long)n, acc ? "+=" : "=");
	if (skip_unsupported(&c, TERN_OP_SUMSQ, TERN_F32))
		return;
	float *x = fvec(n), start = 3.5f;
	if (!x) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	double want = acc ? start : 0.0;
	for (int64_t i = 0; i < n; i++)
		want += (double)x[i] * x[i];
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x);
	struct dten *dout = acc ? dt_new(&c, "out", 4, &start) : dt_nan(&c, "out", 1);
	if (!dx || !dout || bad(&c, tern_sumsq(s->be, dout->v, dx->v, n, acc), "sumsq"))
		goto out;
	expect(&c, dout, &want, 1, TOL_F32);
	dt_unchanged(&c, dx, x);
out:
	free(x);
	chk_end(&c);
}

/* max_norm = ratio · ‖x‖: ratio < 1 clips, ratio > 1 must leave x bit-identical. */
static void check_clip(struct suite *s, int64_t n, double ratio)
{
	struct chk c;
	chk_begin(&c, s, "clip", "n=%lld max_norm=%g*norm (%s)", (long long)n, ratio,
		  ratio < 1 ? "clips" : "no clip");
	if (skip_unsupported(&c, TERN_OP_CLIP, TERN_F32))
		return;
	float *x = fvec(n), *got = fvec(n);
	double *want = dvec(n);
	if (!x || !got || !want) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, n, 1.0);
	double ss = 0.0;
	for (int64_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	float ssf = (float)ss, max_norm = (float)(ratio * sqrt(ss));
	double cl = (double)max_norm / (sqrt((double)ssf) + 1e-6);
	for (int64_t i = 0; i < n; i++)
		want[i] = cl < 1.0 ? (double)x[i] * cl : (double)x[i];
	struct dten *dx = dt_new(&c, "x", (size_t)n * 4, x), *dss = dt_new(&c, "sumsq", 4, &ssf);
	if (!dx || !dss || bad(&c, tern_clip(s->be, dx->v, n, dss->v, max_norm), "clip"))
		goto out;
	if (!dt_get(&c, dx, got))
		goto out;
	cmp(&c, "x", got, want, n, TOL_F32);
	if (cl >= 1.0 && memcmp(got, x, (size_t)n * 4) != 0)
		fail(&c, "x changed although the norm is below max_norm");
	dt_unchanged(&c, dss, &ssf);
out:
	free(x);
	free(got);
	free(want);
	chk_end(&c);
}

/* ---- cast --------------------------------------------------------------------------------- */

static float f32_of_bits(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* Element i of a source of dtype dt: specials first (zeros, infinities, NaN, rounding ties,
 * f16 overflow and subnormals), then random bit patterns and random values of wide range. */
static void cast_source(struct rng *r, enum tern_dtype dt, void *src, int64_t n)
{
	static const uint32_t f32_special[] = {
		0x00000000, 0x80000000, 0x3f800000, 0xbf800000,
		0x7f800000, 0xff800000, 0x7fc00000, 0x477fe000, /* 65504: largest f16 */
		0x477fefff,                                     /* just below the f16 overflow tie */
		0x477ff000,                                     /* 65520: ties to infinity in f16 */
		0x33800000,                                     /* 2^-24: smallest f16 subnormal */
		0x33000000,                                     /* 2^-25: ties to zero in f16 */
		0x33400000, /* 1.5 * 2^-25: rounds up to the smallest subnormal */
		0x3f808000, /* bf16 tie, even below: rounds down */
		0x3f818000, /* bf16 tie, odd below: rounds up */
		0x3f801000, /* f16 tie (bit 12), even below */
		0x3f803000, /* f16 tie, odd below */
		0x7f7fffff, /* largest f32: infinity in bf16 (rounds up) */
		0x00000001, /* smallest f32 subnormal */
		0x387fc000, /* f16 subnormal/normal boundary neighbourhood */
	};
	static const uint16_t h16_special[] = {0x0000, 0x8000, 0x3c00, 0x7c00, 0xfc00, 0x7e00,
					       0x0001, 0x03ff, 0x7bff, 0x7f80, 0xff80, 0x7fc0,
					       0x0080, 0x007f, 0x4780, 0x477f};
	size_t nsf = sizeof f32_special / sizeof f32_special[0],
	       nsh = sizeof h16_special / sizeof h16_special[0];
	for (int64_t i = 0; i < n; i++) {
		if (dt == TERN_F32) {
			uint32_t u;
			if ((size_t)i < nsf)
				u = f32_special[i];
			else if (i % 2)
				u = (uint32_t)rng_u64(r);
			else {
				float f = (float)(rng_normal(r) * pow(2.0, 40.0 * rng_unif(r) - 26.0));
				memcpy(&u, &f, 4);
			}
			memcpy((char *)src + 4 * i, &u, 4);
		} else {
			uint16_t h = (size_t)i < nsh ? h16_special[i] : (uint16_t)rng_u64(r);
			memcpy((char *)src + 2 * i, &h, 2);
		}
	}
}

/* The expected bits of element i converted from st to dt, by the quant.h functions. */
static uint32_t cast_expect(const void *src, enum tern_dtype st, enum tern_dtype dt, int64_t i)
{
	float f;
	uint16_t h;
	uint32_t u;
	if (st == TERN_F32) {
		memcpy(&f, (const char *)src + 4 * i, 4);
	} else {
		memcpy(&h, (const char *)src + 2 * i, 2);
		if (st == dt)
			return h;
		f = st == TERN_F16 ? tern_f16_to_f32(h) : tern_bf16_to_f32(h);
	}
	switch (dt) {
	case TERN_F16: return tern_f32_to_f16(f);
	case TERN_BF16: return tern_f32_to_bf16(f);
	default: memcpy(&u, &f, 4); return u;
	}
}

static bool bits_nan(uint32_t u, enum tern_dtype dt)
{
	switch (dt) {
	case TERN_F16: return (u & 0x7c00) == 0x7c00 && (u & 0x03ff);
	case TERN_BF16: return (u & 0x7f80) == 0x7f80 && (u & 0x007f);
	default: return isnan(f32_of_bits(u));
	}
}

/* Bit-exact against quant.h; a NaN only has to stay a NaN (payloads may differ by device). */
static void check_cast(struct suite *s, enum tern_dtype st, enum tern_dtype dt, int64_t n)
{
	struct chk c;
	chk_begin(&c, s, "cast", "%s -> %s n=%lld", tern_dtype_name(st), tern_dtype_name(dt), (long long)n);
	if (skip_unsupported(&c, TERN_OP_CAST, dt))
		return;
	size_t ss = tern_dtype_size(st), ds = tern_dtype_size(dt);
	void *src = calloc((size_t)n + 1, ss), *got = calloc((size_t)n + 1, ds);
	if (!src || !got) {
		fail(&c, "out of host memory");
		goto out;
	}
	cast_source(&c.r, st, src, n);
	struct dten *dsrc = dt_new(&c, "src", (size_t)n * ss, src),
		    *ddst = dt_new(&c, "dst", (size_t)n * ds, NULL);
	if (!dsrc || !ddst || bad(&c, tern_cast(s->be, ddst->v, dt, dsrc->v, st, n), "cast"))
		goto out;
	if (!dt_get(&c, ddst, got))
		goto out;
	int64_t wrong = 0;
	for (int64_t i = 0; i < n; i++) {
		uint32_t want = cast_expect(src, st, dt, i), g = 0;
		memcpy(&g, (char *)got + (size_t)i * ds, ds);
		bool ok = bits_nan(want, dt) ? bits_nan(g, dt) : g == want;
		if (!ok && wrong++ == 0) {
			uint32_t in = 0;
			memcpy(&in, (char *)src + (size_t)i * ss, ss);
			fail(&c, "[%lld] 0x%0*x -> 0x%0*x, want 0x%0*x", (long long)i, (int)ss * 2, in,
			     (int)ds * 2, g, (int)ds * 2, want);
		}
	}
	c.err = (double)wrong / (double)(n ? n : 1);
	dt_unchanged(&c, dsrc, src);
out:
	free(src);
	free(got);
	chk_end(&c);
}

/* ---- LoRA --------------------------------------------------------------------------------- */

/* Host side of one LoRA linear: inputs, parameters and the double oracle of forward and
 * backward (training-math.md). */
struct lora_case {
	int64_t T, O, I, R;
	float p, s;
	uint64_t key;
	struct hweight hw;
	float *x, *A, *B, *dy, *dA0, *dB0, *dx0;
	double *xd, *u, *y, *du, *dA, *dB, *dx;
	double *ym, *dAm, *dBm, *dxm; /* magnitudes of the separately rounded parts (cmp_mag) */
};

static void lora_case_free(struct lora_case *lc)
{
	hweight_free(&lc->hw);
	void *ps[] = {lc->x, lc->A,  lc->B,  lc->dy, lc->dA0, lc->dB0, lc->dx0, lc->xd,  lc->u,
		      lc->y, lc->du, lc->dA, lc->dB, lc->dx,  lc->ym,  lc->dAm, lc->dBm, lc->dxm};
	for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++)
		free(ps[i]);
	memset(lc, 0, sizeof *lc);
}

/* want = start + part, mag = |start| + |part| */
static void add_part(double *want, double *mag, double start, double part)
{
	*want = start + part;
	*mag = fabs(start) + fabs(part);
}

/* The double oracle of forward and backward, straight from training-math.md. */
static void lora_oracle(struct lora_case *lc, bool acc)
{
	int64_t T = lc->T, O = lc->O, I = lc->I, R = lc->R;
	double inv = 1.0 / (1.0 - (double)lc->p);
	/* xd = drop(x); u = xd Aᵀ */
	for (int64_t j = 0; j < T * I; j++)
		lc->xd[j] = lc->p > 0 ? (ref_keep(lc->key, j, lc->p) ? lc->x[j] * inv : 0.0) : lc->x[j];
	for (int64_t t = 0; t < T; t++)
		for (int64_t r = 0; r < R; r++) {
			double a = 0.0;
			for (int64_t i = 0; i < I; i++)
				a += lc->xd[t * I + i] * lc->A[r * I + i];
			lc->u[t * R + r] = a;
		}
	/* y = x Wᵀ + s u Bᵀ */
	ref_matmul(lc->y, lc->x, lc->hw.deq, T, O, I);
	for (int64_t t = 0; t < T; t++)
		for (int64_t o = 0; o < O; o++) {
			double a = 0.0;
			for (int64_t r = 0; r < R; r++)
				a += lc->u[t * R + r] * lc->B[o * R + r];
			int64_t j = t * O + o;
			add_part(&lc->y[j], &lc->ym[j], lc->y[j], lc->s * a);
		}
	/* dB = dB0 + s dyᵀ u; du = s dy B; dA = dA0 + duᵀ xd */
	for (int64_t o = 0; o < O; o++)
		for (int64_t r = 0; r < R; r++) {
			double a = 0.0;
			for (int64_t t = 0; t < T; t++)
				a += (double)lc->dy[t * O + o] * lc->u[t * R + r];
			add_part(&lc->dB[o * R + r], &lc->dBm[o * R + r], lc->dB0[o * R + r], lc->s * a);
		}
	for (int64_t t = 0; t < T; t++)
		for (int64_t r = 0; r < R; r++) {
			double a = 0.0;
			for (int64_t o = 0; o < O; o++)
				a += (double)lc->dy[t * O + o] * lc->B[o * R + r];
			lc->du[t * R + r] = lc->s * a;
		}
	for (int64_t r = 0; r < R; r++)
		for (int64_t i = 0; i < I; i++) {
			double a = 0.0;
			for (int64_t t = 0; t < T; t++)
				a += lc->du[t * R + r] * lc->xd[t * I + i];
			add_part(&lc->dA[r * I + i], &lc->dAm[r * I + i], lc->dA0[r * I + i], a);
		}
	/* dx = (dx0 +) dy W + (du A) ∘ keep / (1 - p): three separately rounded parts */
	memset(lc->dx, 0, (size_t)(T * I) * sizeof(double));
	ref_matmul_bwd(lc->dx, lc->dy, lc->hw.deq, T, O, I);
	for (int64_t t = 0; t < T; t++)
		for (int64_t i = 0; i < I; i++) {
			double a = 0.0;
			for (int64_t r = 0; r < R; r++)
				a += lc->du[t * R + r] * lc->A[r * I + i];
			int64_t j = t * I + i;
			double lo = lc->p > 0 ? (ref_keep(lc->key, j, lc->p) ? a * inv : 0.0) : a;
			double start = acc ? (double)lc->dx0[j] : 0.0;
			lc->dxm[j] = fabs(start) + fabs(lc->dx[j]) + fabs(lo);
			lc->dx[j] = start + lc->dx[j] + lo;
		}
}

static bool lora_case_make(struct lora_case *lc, struct rng *r, const struct wfmt *f, int64_t T, int64_t O,
			   int64_t I, int64_t R, float p)
{
	memset(lc, 0, sizeof *lc);
	lc->T = T, lc->O = O, lc->I = I, lc->R = R, lc->p = p;
	lc->s = 2.0f / (float)R; /* alpha = 2r */
	lc->key = tern_dropout_key(rng_u64(r), 7, 1, 3, 2);
	lc->x = fvec(T * I), lc->A = fvec(R * I), lc->B = fvec(O * R), lc->dy = fvec(T * O);
	lc->dA0 = fvec(R * I), lc->dB0 = fvec(O * R), lc->dx0 = fvec(T * I);
	lc->xd = dvec(T * I), lc->u = dvec(T * R), lc->y = dvec(T * O), lc->du = dvec(T * R);
	lc->dA = dvec(R * I), lc->dB = dvec(O * R), lc->dx = dvec(T * I);
	lc->ym = dvec(T * O), lc->dAm = dvec(R * I), lc->dBm = dvec(O * R), lc->dxm = dvec(T * I);
	if (!lc->x || !lc->A || !lc->B || !lc->dy || !lc->dA0 || !lc->dB0 || !lc->dx0 || !lc->xd || !lc->u ||
	    !lc->y || !lc->du || !lc->dA || !lc->dB || !lc->dx || !lc->ym || !lc->dAm || !lc->dBm ||
	    !lc->dxm || !hweight_make(&lc->hw, f->dt, f->bs, O, I, r)) {
		lora_case_free(lc);
		return false;
	}
	fill_sym(r, lc->x, T * I, 1.0);
	fill_sym(r, lc->A, R * I, 1.0 / sqrt((double)I)); /* PEFT's init range */
	fill_sym(r, lc->B, O * R, 0.5);                   /* nonzero, else dA would be 0 */
	fill_sym(r, lc->dy, T * O, 1.0);
	fill_sym(r, lc->dA0, R * I, 0.5);
	fill_sym(r, lc->dB0, O * R, 0.5);
	fill_sym(r, lc->dx0, T * I, 0.5);
	return true;
}

/* Device tensors of one LoRA linear; scratch and "=" outputs start as NaN. */
struct lora_dev {
	struct tern_weight w;
	struct tern_lora lora;
	struct dten *x, *A, *B, *y, *u, *xd, *dy, *dx, *dA, *dB, *du, *tmp;
};

static bool lora_dev_make(struct chk *c, const struct lora_case *lc, struct lora_dev *d, bool acc)
{
	int64_t T = lc->T, O = lc->O, I = lc->I, R = lc->R;
	memset(d, 0, sizeof *d);
	if (!dweight_make(c, &lc->hw, &d->w))
		return false;
	d->x = dt_new(c, "x", (size_t)(T * I) * 4, lc->x);
	d->A = dt_new(c, "A", (size_t)(R * I) * 4, lc->A);
	d->B = dt_new(c, "B", (size_t)(O * R) * 4, lc->B);
	d->dy = dt_new(c, "dy", (size_t)(T * O) * 4, lc->dy);
	d->y = dt_nan(c, "y", T * O);
	d->u = dt_nan(c, "u", T * R);
	d->xd = dt_nan(c, "xd", T * I);
	d->du = dt_nan(c, "du", T * R);
	d->tmp = dt_nan(c, "tmp", T * I);
	d->dA = dt_new(c, "dA", (size_t)(R * I) * 4, lc->dA0);
	d->dB = dt_new(c, "dB", (size_t)(O * R) * 4, lc->dB0);
	d->dx = acc ? dt_new(c, "dx", (size_t)(T * I) * 4, lc->dx0) : dt_nan(c, "dx", T * I);
	if (!d->x || !d->A || !d->B || !d->dy || !d->y || !d->u || !d->xd || !d->du || !d->tmp || !d->dA ||
	    !d->dB || !d->dx)
		return false;
	d->lora = (struct tern_lora){
		.A = d->A->v, .B = d->B->v, .R = R, .scale = lc->s, .dropout = lc->p, .key = lc->key};
	return true;
}

static enum tern_status lora_fwd(struct suite *s, struct lora_dev *d, int64_t T)
{
	return tern_lora_forward(s->be, d->y->v, d->u->v, d->xd->v, d->x->v, &d->w, &d->lora, T);
}

/* alias: dx written over x (backend.h allows it; the net does it for the down projection) */
static enum tern_status lora_bwd(struct suite *s, struct lora_dev *d, int64_t T, bool acc, bool alias)
{
	return tern_lora_backward(s->be, alias ? d->x->v : d->dx->v, d->dA->v, d->dB->v, d->du->v, d->tmp->v,
				  d->dy->v, d->x->v, d->xd->v, d->u->v, &d->w, &d->lora, T, acc);
}

/* Whether every op the LoRA composition uses runs here; reports it when not. */
static bool lora_skip(struct chk *c, enum tern_dtype wt)
{
	static const enum tern_op ops[] = {TERN_OP_MATMUL, TERN_OP_MATMUL_BWD, TERN_OP_GEMM, TERN_OP_DROPOUT,
					   TERN_OP_AXPY};
	for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++)
		if (skip_unsupported(c, ops[i], wt))
			return true;
	return false;
}

/* tern_lora_add after matmul gives lora_forward's y and u bit for bit (the same calls, backend.h)
 * where it applies (unfused; with dropout given xd, which it rewrites with the same mask); with
 * dropout and no xd it is refused, naming it, writing nothing. d's y and u hold lora_forward's
 * results on entry and again on return. */
static bool lora_add_same(struct chk *c, struct suite *s, struct lora_dev *d, int64_t T, float p)
{
	int64_t O = d->w.O, R = d->lora.R;
	float *y = fvec(T * O), *u = fvec(T * R);
	double *wy = dvec(T * O), *wu = dvec(T * R);
	bool ok = false;
	if (!y || !u || !wy || !wu) {
		fail(c, "out of host memory");
		goto out;
	}
	if (!dt_get(c, d->y, y) || !dt_get(c, d->u, u))
		goto out;
	for (int64_t i = 0; i < T * O; i++)
		wy[i] = y[i];
	for (int64_t i = 0; i < T * R; i++)
		wu[i] = u[i];
	struct tern_view none = {0};
	if (p > 0) {
		enum tern_status st =
			tern_lora_add(s->be, d->y->v, d->u->v, none, d->x->v, &d->w, &d->lora, T);
		if (st != TERN_E_INVALID || !strstr(tern_error(), "lora_add"))
			fail(c, "lora_add with dropout, no xd: got %s \"%s\"", tern_status_str(st),
			     tern_error());
		expect(c, d->y, wy, T * O, 0.0); /* nothing written */
		expect(c, d->u, wu, T * R, 0.0);
	}
	if (!tern_lora_fused(s->be, &d->w, &d->lora, T) &&
	    (bad(c, tern_matmul(s->be, d->y->v, d->x->v, &d->w, T, d->lora.prec), "matmul") ||
	     bad(c,
		 tern_lora_add(s->be, d->y->v, d->u->v, p > 0 ? d->xd->v : none, d->x->v, &d->w, &d->lora, T),
		 "lora_add")))
		goto out;
	expect(c, d->y, wy, T * O, 0.0);
	expect(c, d->u, wu, T * R, 0.0);
	ok = true;
out:
	free(y);
	free(u);
	free(wy);
	free(wu);
	return ok;
}

/* the LoRA linear at half-precision products, on lora_case and lora_dev */
#include "test_ops_lorafuse.h"

static void check_lora(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, int64_t R,
		       float p, bool acc, bool alias)
{
	struct chk c;
	chk_begin(&c, s, "lora", "%-13s T=%lld O=%lld I=%lld R=%lld p=%g %s", wdesc(f->dt, f->bs),
		  (long long)T, (long long)O, (long long)I, (long long)R, (double)p,
		  alias ? "= over x"
		  : acc ? "+="
			: "=");
	if (lora_skip(&c, f->dt))
		return;
	struct lora_case lc;
	struct lora_dev d;
	if (!lora_case_make(&lc, &c.r, f, T, O, I, R, p)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	lora_oracle(&lc, acc);
	if (!lora_dev_make(&c, &lc, &d, acc))
		goto out;
	if (bad(&c, lora_fwd(s, &d, T), "lora_forward"))
		goto out;
	expect_mag(&c, d.y, lc.y, lc.ym, T * O, TOL_F32);
	expect(&c, d.u, lc.u, T * R, TOL_F32);
	if (p > 0)
		expect(&c, d.xd, lc.xd, T * I, TOL_F32);
	if (!lora_add_same(&c, s, &d, T, p))
		goto out;
	if (bad(&c, lora_bwd(s, &d, T, acc, alias), "lora_backward"))
		goto out;
	expect_mag(&c, alias ? d.x : d.dx, lc.dx, lc.dxm, T * I, TOL_F32);
	expect_mag(&c, d.dA, lc.dA, lc.dAm, R * I, TOL_F32);
	expect_mag(&c, d.dB, lc.dB, lc.dBm, O * R, TOL_F32);
	if (!alias)
		dt_unchanged(&c, d.x, lc.x);
	dt_unchanged(&c, d.A, lc.A);
	dt_unchanged(&c, d.B, lc.B);
out:
	lora_case_free(&lc);
	chk_end(&c);
}

/* ---- finite differences (CPU backend) ------------------------------------------------------ */

/* L = Σ g·y over an output downloaded from the device, in double. */
static bool loss_of(struct chk *c, struct dten *y, const float *g, int64_t n, double *L)
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

/* The losses checked here are linear in the perturbed input (the dropout mask is fixed by its
 * key), so a central difference has no truncation error at any step: a large step h only makes
 * the rounding of y matter less. The step actually taken is (float)(v+h) - (float)(v-h). */
#define FD_H 0.5f

/* dL/dx of L = Σ g·matmul(x) by central differences vs matmul_bwd(dy = g). */
static void check_fd_matmul(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I)
{
	struct chk c;
	chk_begin(&c, s, "fd", "matmul_bwd %-13s T=%lld O=%lld I=%lld", wdesc(f->dt, f->bs), (long long)T,
		  (long long)O, (long long)I);
	if (skip_unsupported(&c, TERN_OP_MATMUL, f->dt) || skip_unsupported(&c, TERN_OP_MATMUL_BWD, f->dt))
		return;
	struct hweight hw;
	float *x = fvec(T * I), *g = fvec(T * O), *grad = fvec(T * I);
	double *fd = dvec(T * I);
	if (!x || !g || !grad || !fd || !hweight_make(&hw, f->dt, f->bs, O, I, &c.r)) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, x, T * I, 1.0);
	fill_sym(&c.r, g, T * O, 1.0);
	struct tern_weight w;
	struct dten *dx = dt_new(&c, "x", (size_t)(T * I) * 4, x), *dy = dt_nan(&c, "y", T * O);
	struct dten *dg = dt_new(&c, "g", (size_t)(T * O) * 4, g), *dgx = dt_nan(&c, "dx", T * I);
	if (!dx || !dy || !dg || !dgx || !dweight_make(&c, &hw, &w))
		goto out_w;
	struct tern_backend *be = s->be;
	if (bad(&c, tern_matmul_bwd(be, dgx->v, dg->v, &w, T, false, TERN_F32), "matmul_bwd") ||
	    !dt_get(&c, dgx, grad))
		goto out_w;
	for (int64_t j = 0; j < T * I; j++) {
		float keep = x[j], xp = keep + FD_H, xm = keep - FD_H;
		double Lp, Lm;
		x[j] = xp;
		if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
		    bad(&c, tern_matmul(be, dy->v, dx->v, &w, T, TERN_F32), "matmul") ||
		    !loss_of(&c, dy, g, T * O, &Lp))
			goto out_w;
		x[j] = xm;
		if (bad(&c, be->vt->upload(be, dx->v, x), "upload") ||
		    bad(&c, tern_matmul(be, dy->v, dx->v, &w, T, TERN_F32), "matmul") ||
		    !loss_of(&c, dy, g, T * O, &Lm))
			goto out_w;
		x[j] = keep;
		fd[j] = (Lp - Lm) / ((double)xp - (double)xm);
	}
	cmp(&c, "dx vs finite differences", grad, fd, T * I, TOL_FD);
out_w:
	hweight_free(&hw);
out:
	free(x);
	free(g);
	free(grad);
	free(fd);
	chk_end(&c);
}

/* Central differences of L = Σ g·lora_forward(x, A, B) with respect to every element of one of
 * x, A, B (host array v[n], device tensor dv), into fd[n]. */
static bool fd_lora_wrt(struct chk *c, struct suite *s, struct lora_dev *d, struct lora_case *lc, float *v,
			struct dten *dv, int64_t n, double *fd)
{
	struct tern_backend *be = s->be;
	for (int64_t j = 0; j < n; j++) {
		float keep = v[j], vp = keep + FD_H, vm = keep - FD_H;
		double Lp, Lm;
		v[j] = vp;
		if (bad(c, be->vt->upload(be, dv->v, v), "upload") ||
		    bad(c, lora_fwd(s, d, lc->T), "lora_forward") ||
		    !loss_of(c, d->y, lc->dy, lc->T * lc->O, &Lp))
			return false;
		v[j] = vm;
		if (bad(c, be->vt->upload(be, dv->v, v), "upload") ||
		    bad(c, lora_fwd(s, d, lc->T), "lora_forward") ||
		    !loss_of(c, d->y, lc->dy, lc->T * lc->O, &Lm))
			return false;
		v[j] = keep;
		fd[j] = (Lp - Lm) / ((double)vp - (double)vm);
	}
	return !bad(c, be->vt->upload(be, dv->v, v), "upload");
}

/* tern_lora_backward's dx, dA, dB (from zero, dy = g) against central differences of the
 * forward: checks the backward composition against the forward one. */
static void check_fd_lora(struct suite *s, const struct wfmt *f, int64_t T, int64_t O, int64_t I, int64_t R,
			  float p)
{
	struct chk c;
	chk_begin(&c, s, "fd", "lora %-13s T=%lld O=%lld I=%lld R=%lld p=%g", wdesc(f->dt, f->bs),
		  (long long)T, (long long)O, (long long)I, (long long)R, (double)p);
	if (lora_skip(&c, f->dt))
		return;
	struct lora_case lc;
	struct lora_dev d;
	if (!lora_case_make(&lc, &c.r, f, T, O, I, R, p)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	memset(lc.dA0, 0, (size_t)(R * I) * 4);
	memset(lc.dB0, 0, (size_t)(O * R) * 4);
	float *gx = fvec(T * I), *gA = fvec(R * I), *gB = fvec(O * R);
	double *fx = dvec(T * I), *fA = dvec(R * I), *fB = dvec(O * R);
	if (!gx || !gA || !gB || !fx || !fA || !fB) {
		fail(&c, "out of host memory");
		goto out;
	}
	if (!lora_dev_make(&c, &lc, &d, false))
		goto out;
	if (bad(&c, lora_fwd(s, &d, T), "lora_forward") ||
	    bad(&c, lora_bwd(s, &d, T, false, false), "lora_backward") || !dt_get(&c, d.dx, gx) ||
	    !dt_get(&c, d.dA, gA) || !dt_get(&c, d.dB, gB))
		goto out;
	if (!fd_lora_wrt(&c, s, &d, &lc, lc.x, d.x, T * I, fx) ||
	    !fd_lora_wrt(&c, s, &d, &lc, lc.A, d.A, R * I, fA) ||
	    !fd_lora_wrt(&c, s, &d, &lc, lc.B, d.B, O * R, fB))
		goto out;
	cmp(&c, "dx vs finite differences", gx, fx, T * I, TOL_FD);
	cmp(&c, "dA vs finite differences", gA, fA, R * I, TOL_FD);
	cmp(&c, "dB vs finite differences", gB, fB, O * R, TOL_FD);
out:
	free(gx);
	free(gA);
	free(gB);
	free(fx);
	free(fA);
	free(fB);
	lora_case_free(&lc);
	chk_end(&c);
}

/* ---- argument errors ---------------------------------------------------------------------- */

/* Bad arguments fail with TERN_E_INVALID and a message naming the op and the tensor. */
static void check_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "short views, bad blocksize");
	if (skip_unsupported(&c, TERN_OP_MATMUL, TERN_NF4))
		return;
	const int64_t T = 2, O = 4, I = 16;
	struct hweight hw;
	if (!hweight_make(&hw, TERN_NF4, 64, O, I, &c.r)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	struct tern_weight w;
	struct dten *xs = dt_new(&c, "x short", (size_t)(T * I) * 4 - 4, NULL);
	struct dten *x = dt_new(&c, "x", (size_t)(T * I) * 4, NULL);
	struct dten *y = dt_new(&c, "y", (size_t)(T * O) * 4, NULL);
	if (!xs || !x || !y || !dweight_make(&c, &hw, &w))
		goto out;
	enum tern_status st = tern_matmul(s->be, y->v, xs->v, &w, T, TERN_F32);
	char want_shape[64]; /* the front door appends the shape to the view check's message */
	snprintf(want_shape, sizeof want_shape, "(T=%lld I=%lld f32)", (long long)T, (long long)I);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "matmul: x") || !strstr(tern_error(), want_shape))
		fail(&c, "short x: got %s \"%s\"", tern_status_str(st), tern_error());
	struct tern_weight wb = w;
	wb.blocksize = 48;
	st = tern_matmul(s->be, y->v, x->v, &wb, T, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "blocksize"))
		fail(&c, "blocksize 48: got %s \"%s\"", tern_status_str(st), tern_error());
	wb = w;
	wb.absmax.size -= 1;
	st = tern_matmul_bwd(s->be, x->v, y->v, &wb, T, false, TERN_F32);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "matmul_bwd") || !strstr(tern_error(), "absmax"))
		fail(&c, "short absmax: got %s \"%s\"", tern_status_str(st), tern_error());
	/* a rejected call writes nothing */
	dt_get(&c, y, NULL);
	dt_get(&c, x, NULL);
out:
	hweight_free(&hw);
	chk_end(&c);
}

/* The front doors: a product precision the backend does not run, one that is no plain dtype, and
 * a NULL vtable entry each fail with one line before the backend is called. */
static void check_front_doors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "front doors: matmul precision, missing entry");
	if (skip_unsupported(&c, TERN_OP_MATMUL, TERN_F32))
		return;
	const int64_t T = 2, O = 4, I = 16;
	struct hweight hw;
	if (!hweight_make(&hw, TERN_F32, 0, O, I, &c.r)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	struct tern_backend *be = s->be;
	struct tern_weight w;
	struct dten *x = dt_new(&c, "x", (size_t)(T * I) * 4, NULL);
	struct dten *y = dt_new(&c, "y", (size_t)(T * O) * 4, NULL);
	if (!x || !y || !dweight_make(&c, &hw, &w))
		goto out;
	if (!tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_F32) ||
	    tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_NF4) ||
	    tern_backend_supports_prec(be, TERN_OP_GEMM, TERN_F16))
		fail(&c,
		     "tern_backend_supports_prec: F32 matmul must run, nf4 and a gemm precision must not");
	static const enum tern_dtype precs[] = {TERN_F16, TERN_BF16};
	for (int k = 0; k < 2; k++) {
		if (tern_backend_supports_prec(be, TERN_OP_MATMUL, precs[k]))
			continue; /* runs here: its numerics are the matmul checks' business */
		char want[64];
		snprintf(want, sizeof want, "matmul precision %s is not supported",
			 tern_dtype_name(precs[k]));
		enum tern_status st = tern_matmul(be, y->v, x->v, &w, T, precs[k]);
		if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), be->name) ||
		    !strstr(tern_error(), want))
			fail(&c, "precision %s: got %s \"%s\"", tern_dtype_name(precs[k]),
			     tern_status_str(st), tern_error());
	}
	enum tern_status st = tern_matmul_bwd(be, x->v, y->v, &w, T, false, TERN_NF4);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "matmul_bwd: precision nf4"))
		fail(&c, "precision nf4: got %s \"%s\"", tern_status_str(st), tern_error());
	/* a NULL entry: a copy of the backend's handle whose vtable lacks matmul (never called into) */
	struct tern_backend_vtable vt = *be->vt;
	vt.matmul = NULL;
	struct tern_backend fake = *be;
	fake.vt = &vt;
	st = tern_matmul(&fake, y->v, x->v, &w, T, TERN_F32);
	if (st != TERN_E_UNSUPPORTED || !strstr(tern_error(), be->name) || !strstr(tern_error(), "matmul") ||
	    strchr(tern_error(), '\n'))
		fail(&c, "NULL matmul entry: got %s \"%s\"", tern_status_str(st), tern_error());
	/* rejected calls write nothing */
	dt_get(&c, y, NULL);
	dt_get(&c, x, NULL);
out:
	hweight_free(&hw);
	chk_end(&c);
}

/* ---- backend-independent helpers ----------------------------------------------------------- */

static void check_host(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "host", "names, dropout key, adamw consts, devices");
	for (int d = 0; d < TERN_DTYPE_COUNT; d++)
		if (!strcmp(tern_dtype_name((enum tern_dtype)d), "?"))
			fail(&c, "dtype %d has no name", d);
	for (int o = 0; o < TERN_OP_COUNT; o++)
		if (!strcmp(tern_op_name((enum tern_op)o), "?"))
			fail(&c, "op %d has no name", o);
	/* every field changes the key, and keys of neighbouring fields do not collide */
	uint64_t base = tern_dropout_key(1, 2, 3, 4, 5);
	uint64_t vary[] = {tern_dropout_key(2, 2, 3, 4, 5), tern_dropout_key(1, 3, 3, 4, 5),
			   tern_dropout_key(1, 2, 4, 4, 5), tern_dropout_key(1, 2, 3, 5, 5),
			   tern_dropout_key(1, 2, 3, 4, 6), tern_dropout_key(1, 2, 4, 3, 5)};
	for (size_t i = 0; i < sizeof vary / sizeof vary[0]; i++)
		if (vary[i] == base)
			fail(&c, "tern_dropout_key ignores a field (variant %zu)", i);
	/* torch's scalars for lr 1e-3, wd 0.1, step 10, in double then rounded once */
	struct tern_adamw_args a = {
		.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.1f, .step = 10};
	struct tern_adamw_consts k = tern_adamw_consts(&a);
	double lr = (double)a.lr, b1 = (double)a.beta1, b2 = (double)a.beta2;
	if (k.decay != (float)(1.0 - lr * (double)a.weight_decay) ||
	    k.step_size != (float)(lr / (1.0 - pow(b1, 10))) ||
	    k.bc2_sqrt != (float)sqrt(1.0 - pow(b2, 10)) || k.one_minus_b1 != (float)(1.0 - b1) ||
	    k.one_minus_b2 != (float)(1.0 - b2) || k.b2 != a.beta2 || k.eps != a.eps)
		fail(&c, "tern_adamw_consts differs from torch's scalars");
	struct tern_device_info info[16];
	int n = 0;
	enum tern_status st = tern_devices(info, 16, &n);
	bool has_cpu = false;
	for (int i = 0; i < n; i++)
		has_cpu |= !strcmp(info[i].backend, "cpu");
	if (st != TERN_OK || !has_cpu)
		fail(&c, "tern_devices: %s, %d devices, cpu %s", tern_status_str(st), n,
		     has_cpu ? "listed" : "missing");
	struct tern_backend *be = NULL;
	st = tern_backend_create("no-such-backend", 0, &be);
	if (st != TERN_E_INVALID || be)
		fail(&c, "unknown backend name: got %s", tern_status_str(st));
	/* auto always gives something: the GPU when there is one (CUDA first, in a build that has
	 * it), else the fast CPU backend; a Vulkan device 0 that is a CPU (lavapipe) is passed over
	 * for it */
	bool vk0_cpu = false, vk0_gpu = false, cuda = false;
	for (int i = 0; i < n; i++) {
		if (!strcmp(info[i].backend, "vulkan") && info[i].index == 0) {
			vk0_cpu = !strcmp(info[i].kind, "cpu");
			vk0_gpu = !vk0_cpu;
		}
		cuda |= !strcmp(info[i].backend, "cuda");
	}
	st = tern_backend_create("auto", 0, &be);
	if (st != TERN_OK || !be)
		fail(&c, "auto: %s: %s", tern_status_str(st), tern_error());
	else if (cuda && strcmp(be->name, "cuda") != 0)
		fail(&c, "auto with a CUDA device listed gave %s, want cuda", be->name);
	else if (!cuda && !vk0_gpu && strcmp(be->name, "cpu") != 0)
		fail(&c, "auto without a GPU%s gave %s, want cpu",
		     vk0_cpu ? " (Vulkan device 0 is a CPU)" : "", be->name);
	else
		printf("auto -> %s: %s\n", be->name, be->device_name);
	tern_backend_free(be);
	be = NULL;
	/* ref: the reference by name, listing no device of its own */
	st = tern_backend_create("ref", 0, &be);
	if (st != TERN_OK || !be || strcmp(be->name, "ref") != 0)
		fail(&c, "ref: %s: %s", tern_status_str(st), tern_error());
	tern_backend_free(be);
	chk_end(&c);
}

#include "test_ops_decode.h" /* uses check_matmul, ref_rstd */

/* ---- the run ------------------------------------------------------------------------------- */

static void check_matmul_all(struct suite *s)
{
	for (int k = 0; k < NMM_SHAPES; k++)
		for (int f = 0; f < NWFMTS; f++)
			check_matmul(s, &WFMTS[f], MM_SHAPES[k][0], MM_SHAPES[k][1], MM_SHAPES[k][2]);
}

/* adamw, sumsq (slices and parts on CUDA: 100003 takes several), clip */
static void check_optim_all(struct suite *s)
{
	static const int64_t an[] = {1, 33, 1001};
	for (int k = 0; k < 3; k++) {
		check_adamw(s, an[k], 0.0f, 1, 4);
		check_adamw(s, an[k], 0.01f, 1, 4);
	}
	check_adamw(s, 1001, 0.01f, 100, 3);

	static const int64_t sn[] = {1, 17, 1000, 100003};
	for (int k = 0; k < 4; k++) {
		check_sumsq(s, sn[k], false);
		check_sumsq(s, sn[k], true);
	}
	check_clip(s, 1000, 0.25);
	check_clip(s, 1000, 4.0);
	check_clip(s, 1, 0.5);
}

static void run_backend(struct suite *s)
{
	/* TERN_TEST_ONLY=attention,loss,...: only those groups (a quick look at one op family, e.g.
	 * on the CUDA emulation, which is slow); the full run is the test */
	const char *only = getenv("TERN_TEST_ONLY");
	if (only && *only) {
		static const struct {
			const char *name;
			void (*run)(struct suite *);
		} groups[] = {{"prec", check_prec_all},
			      {"mm_df", check_mm_df_all},
			      {"attention", check_attention_all},
			      {"attention_bf16", check_attention_bf16},
			      {"attention_kv", check_attention_kv_all},
			      {"loss", check_loss_all},
			      {"layers", check_layers_all},
			      {"stream", check_stream_all},
			      {"moe", check_moe_all},
			      {"bitnet", check_bitnet_all},
			      {"route", check_route_all},
			      {"grouped", check_grouped_all},
			      {"gemm", check_gemm_all},
			      {"lora_fused", check_lora_fused_all},
			      {"matmul", check_matmul_all},
			      {"gemv", check_gemv_all},
			      {"matmul_multi", check_matmul_multi_all},
			      {"add_rmsnorm", check_add_rmsnorm_all},
			      {"argmax", check_argmax_all},
			      {"optim", check_optim_all}};
		for (size_t g = 0; g < sizeof groups / sizeof groups[0]; g++) {
			char key[64];
			snprintf(key, sizeof key, ",%s,", groups[g].name);
			char list[256];
			snprintf(list, sizeof list, ",%s,", only);
			if (strstr(list, key))
				groups[g].run(s);
		}
		return;
	}

	struct tern_backend *be = s->be;
	printf("== %s: %s (device %d)\n", s->bname, be->device_name, be->device_index);

	check_matmul_all(s);
	for (int k = 0; k < NMM_SHAPES; k++)
		for (int f = 0; f < NWFMTS; f++)
			for (int acc = 0; acc < 2; acc++)
				check_matmul_bwd(s, &WFMTS[f], MM_SHAPES[k][0], MM_SHAPES[k][1],
						 MM_SHAPES[k][2], acc);

	check_gemm_all(s);

	static const float ps[] = {0.0f, 0.1f, 0.5f};
	static const int64_t dn[] = {1, 17, 1000, 65537};
	for (int i = 0; i < 3; i++)
		for (int k = 0; k < 4; k++)
			check_dropout(s, dn[k], ps[i], false);
	check_dropout(s, 1000, 0.5f, true);

	static const int64_t en[] = {1, 17, 4099};
	for (int k = 0; k < 3; k++) {
		check_axpy(s, en[k], 1.0f);
		check_axpy(s, en[k], -0.37f);
		check_scale(s, en[k], 0.5f);
		check_scale(s, en[k], -3.0f);
	}

	check_optim_all(s);

	static const enum tern_dtype ct[] = {TERN_F32, TERN_F16, TERN_BF16};
	static const int64_t cn[] = {1, 17, 1001};
	for (int a = 0; a < 3; a++)
		for (int b = 0; b < 3; b++)
			for (int k = 0; k < 3; k++)
				check_cast(s, ct[a], ct[b], cn[k]);

	static const struct wfmt lora_fmts[] = {
		{TERN_F32, 0}, {TERN_BF16, 0}, {TERN_NF4, 64}, {TERN_NF4_DQ, 128}, {TERN_TERNARY, 0},
	};
	static const int64_t lora_shapes[][4] = {{3, 33, 64, 4}, {17, 7, 97, 8}};
	for (int p = 0; p < 2; p++)
		for (int acc = 0; acc < 2; acc++) {
			check_lora(s, &lora_fmts[0], 1, 1, 1, 1, p ? 0.1f : 0.0f, acc, false);
			for (int f = 0; f < 5; f++)
				for (int k = 0; k < 2; k++)
					check_lora(s, &lora_fmts[f], lora_shapes[k][0], lora_shapes[k][1],
						   lora_shapes[k][2], lora_shapes[k][3], p ? 0.1f : 0.0f, acc,
						   false);
		}
	for (int p = 0; p < 2; p++) /* dx over x, with and without the dropout mask */
		for (int f = 0; f < 5; f += 2)
			check_lora(s, &lora_fmts[f], lora_shapes[1][0], lora_shapes[1][1], lora_shapes[1][2],
				   lora_shapes[1][3], p ? 0.1f : 0.0f, false, true);
	check_lora_fused_all(s); /* at bf16 products: fused where the backend fuses */

	check_errors(s);
	check_front_doors(s);

	if (s->is_cpu) {
		static const struct wfmt fd_fmts[] = {{TERN_F32, 0}, {TERN_NF4, 64}, {TERN_TERNARY, 0}};
		for (int f = 0; f < 3; f++) {
			check_fd_matmul(s, &fd_fmts[f], 3, 7, 15);
			check_fd_lora(s, &fd_fmts[f], 3, 7, 15, 4, 0.0f);
			check_fd_lora(s, &fd_fmts[f], 3, 7, 15, 4, 0.1f);
		}
	}

	const char *large = getenv("TERN_TEST_LARGE");
	if (large && !strcmp(large, "0")) {
		print_line(s, "matmul", "f32 > 128 MiB", "skipped (TERN_TEST_LARGE=0)");
		s->skipped++;
	} else {
		check_large(s, false);
		check_large(s, true);
		/* C [M,N] of 128.3 MiB with A stored [K,M] (ce_loss's dW of a trained lm_head): Vulkan
		 * splits C's rows and binds A from a column with its full row stride */
		check_gemm(s, 8200, 4100, 3, true, false, 1.0f, 1.0f, TERN_F32);
	}
	check_prec_all(s);
	check_mm_df_all(s);
	check_gemv_all(s);
	check_matmul_multi_all(s);
	check_add_rmsnorm_all(s);
	check_attention_all(s);
	check_attention_kv_all(s);
	check_loss_all(s);
	check_layers_all(s);
	check_stream_all(s);
	check_moe_all(s);
	check_bitnet_all(s);
	check_argmax_all(s);
	check_route_all(s);
	check_grouped_all(s);
}

int main(void)
{
	struct suite total = {0};
	const char *seed_env = getenv("TERN_TEST_SEED");
	uint64_t seed = seed_env ? strtoull(seed_env, NULL, 0) : 20240601;
	const char *req = getenv("TERN_REQUIRE_VULKAN");
	bool require_vulkan = req && !strcmp(req, "1");
	const char *reqc = getenv("TERN_REQUIRE_CUDA");
	bool require_cuda = reqc && !strcmp(reqc, "1");
	printf("test_ops: seed %" PRIu64 " (TERN_TEST_SEED overrides)\n", seed);

	/* ref: the CPU reference; cpu: the fast CPU backend (both on the host, so both take the
	 * finite differences and the host-side checks); vulkan; cuda */
	static const char *const names[] = {"ref", "cpu", "vulkan", "cuda"};
	const char *only = getenv("TERN_TEST_BACKEND");
	for (int b = 0; b < 4; b++) {
		if (only && strcmp(only, names[b]))
			continue;
		struct suite s = {.bname = names[b], .is_cpu = b < 2, .seed = seed};
		enum tern_status st = tern_backend_create(names[b], 0, &s.be);
		if (st != TERN_OK) {
			bool required = b < 2 || (b == 2 && require_vulkan) || (b == 3 && require_cuda);
			/* the CPU backends must always exist; a missing GPU driver is a failure only
			 * when asked for (TERN_REQUIRE_VULKAN / TERN_REQUIRE_CUDA), but a device that
			 * exists and fails (validation included) is one */
			if (required || st != TERN_E_UNAVAILABLE) {
				printf("%s: unavailable (%s)\n", names[b], tern_error());
				total.failed++;
			} else {
				printf("%s: unavailable (%s) — not run\n", names[b], tern_error());
				total.skipped++;
			}
			continue;
		}
		if (b == 0)
			check_host(&s);
		run_backend(&s);
		tern_backend_free(s.be);
		total.passed += s.passed;
		total.failed += s.failed;
		total.skipped += s.skipped;
	}

	if (total.skipped)
		printf("%d passed, %d failed, %d skipped\n", total.passed, total.failed, total.skipped);
	else
		printf("%d passed, %d failed\n", total.passed, total.failed);
	return total.failed ? 1 : 0;
}
