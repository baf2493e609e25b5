/* The fast backend's products: matmul, matmul_bwd and gemm as tasks of one GEMM call each.
 *
 * A frozen weight is decoded panel by panel into a task's own f32 block (tern_fast_panel_lines:
 * rows of W for matmul, columns for matmul_bwd), never whole; an f32 weight at F32 precision
 * is read in place. Tasks tile the output: (token chunk) x (panel), each task decodes its panel
 * and runs one GEMM into its own outputs, so no two tasks write one element, no sum is split
 * across tasks, and the tiling depends on the shapes only (not on the thread count). */
#include "backend/cpufast/cpufast.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define T_CHUNK 512          /* token rows of one task, at most */
#define T_CHUNK_MIN 256      /* ... and at least, while T has them */
#define GEMM_TILE 128        /* rows or columns of C one gemm task owns */
#define DIRECT_LINES 256     /* the panel of an f32 weight read in place, at most */
#define DIRECT_LINES_MIN 128 /* ... and at least */
#define MIN_TASKS 6          /* tiles shrink (to the least sizes) until there are these */

/* A panel width (cpufast.h): about TERN_FAST_PANEL_BYTES of f32 for lines `len` long, a multiple
 * of 16, in [TERN_FAST_PANEL_MIN_LINES, total]. The BLAS packs the task's token rows (tc x len)
 * once per call, so a panel of few lines pays that copy for few outputs: at len 8192, 16 lines made
 * 32 MiB of packing traffic per 134 MFLOP, which one core hides and sixteen sharing the memory do
 * not. */
int64_t tern_fast_panel_lines(int64_t len, int64_t total)
{
	int64_t n = TERN_FAST_PANEL_BYTES / (4 * (len > 0 ? len : 1));
	n = n / 16 * 16;
	if (n < TERN_FAST_PANEL_MIN_LINES)
		n = TERN_FAST_PANEL_MIN_LINES;
	return n < total ? n : total;
}

/* The tiles of a product with T token rows and N output columns: *tc rows by *pn columns, the
 * largest (fewer calls: the BLAS packs each operand tile once per call) that still make
 * MIN_TASKS tasks, within [T_CHUNK_MIN, T_CHUNK] and, where the panel is read in place,
 * [DIRECT_LINES_MIN, DIRECT_LINES]; a decoded panel keeps its cache-sized width pn. From the
 * shapes only, never the thread count. On the 2-core EPYC, one thread (GFLOP/s, best of 5,
 * y = x Wᵀ at T 512): 768×768 77.9 → 84.6 and 768×2048 78.0 → 85.4 for 256×128 → 512×256
 * tiles; 512×128 and 256×256 in between. */
static void tiles_of(int64_t T, int64_t N, bool direct, int64_t *tc, int64_t *pn)
{
	int64_t t = T_CHUNK, p = direct ? DIRECT_LINES : *pn;
	while (tern_cdiv(T, t) * tern_cdiv(N, p) < MIN_TASKS) {
		if (direct && p > DIRECT_LINES_MIN)
			p /= 2;
		else if (t > T_CHUNK_MIN)
			t /= 2;
		else
			break;
	}
	*tc = t;
	*pn = p < N ? p : N;
}

enum tern_status tern_fast_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	(void)be;
	const char *op = "matmul";
	struct cpu_weight cw;
	float *xcopy = NULL, *panels = NULL;
	enum tern_status st = tern_cpu_weight_open(op, w, &cw);
	if (st != TERN_OK)
		goto out;
	int64_t O = w->O, I = w->I;
	void *yv, *xv;
	if ((st = tern_cpu_view(op, "y", y, (size_t)(T * O) * 4, 4, &yv, "T=%lld O=%lld f32", (long long)T,
				(long long)O)) != TERN_OK)
		goto out;
	if ((st = tern_cpu_view(op, "x", x, (size_t)(T * I) * 4, 4, &xv, "T=%lld I=%lld f32", (long long)T,
				(long long)I)) != TERN_OK)
		goto out;
	if (T == 0)
		goto out;
	float *yp = yv;
	const float *xp;
	float inv_s;
	if ((st = tern_cpu_prec_operand(prec, xv, T * I, &xp, &xcopy, &inv_s)) != TERN_OK)
		goto out;

	bool direct = w->dtype == TERN_F32 && prec == TERN_F32; /* W's rows are the panel */
	int64_t pb = tern_fast_panel_lines(I, O), tc;
	tiles_of(T, O, direct, &tc, &pb);
	int64_t np = tern_cdiv(O, pb), nt = tern_cdiv(T, tc);
	int nthr = tern_fast_threads();
	if (!direct) {
		panels = tern_malloc((size_t)(nthr * pb * I) * sizeof(float));
		if (!panels) {
			st = TERN_E_NOMEM;
			goto out;
		}
	}
	const float *wf = direct ? (const float *)(const void *)cw.data : NULL;
	/* panel-major task order: consecutive tasks share a panel (decoded again per task: the
	 * decode is 1/(2·tc) of the product's work) */
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < np * nt; k++) {
		int64_t p = k / nt, c = k % nt;
		int64_t o0 = p * pb, on = O - o0 < pb ? O - o0 : pb;
		int64_t t0 = c * tc, tn = T - t0 < tc ? T - t0 : tc;
		const float *wp;
		if (direct) {
			wp = wf + o0 * I;
		} else {
#ifdef _OPENMP
			float *buf = panels + (int64_t)omp_get_thread_num() * pb * I;
#else
			float *buf = panels;
#endif
			for (int64_t o = 0; o < on; o++) {
				tern_fast_weight_row(&cw, o0 + o, 0, I, buf + o * I);
				tern_cpu_prec_round_row(prec, buf + o * I, I);
			}
			wp = buf;
		}
		tern_fast_sgemm(false, true, tn, on, I, inv_s, xp + t0 * I, I, wp, I, 0.0f, yp + t0 * O + o0,
				O);
	}
out:
	free(panels);
	free(xcopy);
	tern_cpu_weight_close(&cw);
	return st;
}

enum tern_status tern_fast_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      const struct tern_weight *w, int64_t T, bool accumulate,
				      enum tern_dtype prec)
{
	(void)be;
	const char *op = "matmul_bwd";
	struct cpu_weight cw;
	float *dycopy = NULL, *panels = NULL;
	enum tern_status st = tern_cpu_weight_open(op, w, &cw);
	if (st != TERN_OK)
		goto out;
	int64_t O = w->O, I = w->I;
	void *dxv, *dyv;
	if ((st = tern_cpu_view(op, "dx", dx, (size_t)(T * I) * 4, 4, &dxv, "T=%lld I=%lld f32", (long long)T,
				(long long)I)) != TERN_OK)
		goto out;
	if ((st = tern_cpu_view(op, "dy", dy, (size_t)(T * O) * 4, 4, &dyv, "T=%lld O=%lld f32", (long long)T,
				(long long)O)) != TERN_OK)
		goto out;
	if (T == 0)
		goto out;
	float *dxp = dxv;
	const float *dyp;
	float inv_s;
	if ((st = tern_cpu_prec_operand(prec, dyv, T * O, &dyp, &dycopy, &inv_s)) != TERN_OK)
		goto out;

	bool direct = w->dtype == TERN_F32 && prec == TERN_F32;
	/* a task owns columns [i0, i0 + ib) of dx for a chunk of tokens: the whole sum over O is
	 * one GEMM (K = O) */
	int64_t ib = tern_fast_panel_lines(O, I), tc;
	tiles_of(T, I, direct, &tc, &ib);
	int64_t np = tern_cdiv(I, ib), nt = tern_cdiv(T, tc);
	int nthr = tern_fast_threads();
	if (!direct) {
		panels = tern_malloc((size_t)(nthr * ib * O) * sizeof(float));
		if (!panels) {
			st = TERN_E_NOMEM;
			goto out;
		}
	}
	const float *wf = direct ? (const float *)(const void *)cw.data : NULL;
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < np * nt; k++) {
		int64_t p = k / nt, c = k % nt;
		int64_t i0 = p * ib, in = I - i0 < ib ? I - i0 : ib;
		int64_t t0 = c * tc, tn = T - t0 < tc ? T - t0 : tc;
		const float *wp;
		int64_t ldw;
		if (direct) {
			wp = wf + i0;
			ldw = I;
		} else {
#ifdef _OPENMP
			float *buf = panels + (int64_t)omp_get_thread_num() * ib * O;
#else
			float *buf = panels;
#endif
			for (int64_t o = 0; o < O; o++) {
				tern_fast_weight_row(&cw, o, i0, in, buf + o * in);
				tern_cpu_prec_round_row(prec, buf + o * in, in);
			}
			wp = buf;
			ldw = in;
		}
		tern_fast_sgemm(false, false, tn, in, O, inv_s, dyp + t0 * O, O, wp, ldw,
				accumulate ? 1.0f : 0.0f, dxp + t0 * I + i0, I);
	}
out:
	free(panels);
	free(dycopy);
	tern_cpu_weight_close(&cw);
	return st;
}

/* C tiles: GEMM_TILE rows of C per task (or columns, when C is wide and short, as dA [R, I] is);
 * every task has the whole K. */
enum tern_status tern_fast_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
				struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
				float alpha, float beta, enum tern_dtype prec)
{
	(void)be;
	(void)prec; /* F32: the only one supports_prec offers here */
	const char *op = "gemm";
	enum tern_status st;
	void *cv, *av, *bv;
	if ((st = tern_cpu_view(op, "C", C, (size_t)(M * N) * 4, 4, &cv, "M=%lld N=%lld f32", (long long)M,
				(long long)N)) != TERN_OK)
		return st;
	if ((st = tern_cpu_view(op, "A", A, (size_t)(M * K) * 4, 4, &av, "%s M=%lld K=%lld f32",
				ta ? "[K,M]" : "[M,K]", (long long)M, (long long)K)) != TERN_OK)
		return st;
	if ((st = tern_cpu_view(op, "B", B, (size_t)(K * N) * 4, 4, &bv, "%s K=%lld N=%lld f32",
				tb ? "[N,K]" : "[K,N]", (long long)K, (long long)N)) != TERN_OK)
		return st;
	if (M * N == 0)
		return TERN_OK;
	float *cp = cv;
	const float *ap = av, *bp = bv;
	int64_t lda = ta ? M : K, ldb = tb ? K : N;
	bool by_rows = M >= N || M > GEMM_TILE;
	int64_t nt = tern_cdiv(by_rows ? M : N, GEMM_TILE);
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < nt; k++) {
		int64_t s0 = k * GEMM_TILE, sn = (by_rows ? M : N) - s0;
		sn = sn < GEMM_TILE ? sn : GEMM_TILE;
		if (by_rows) {
			const float *a = ta ? ap + s0 : ap + s0 * lda;
			tern_fast_sgemm(ta, tb, sn, N, K, alpha, a, lda, bp, ldb, beta, cp + s0 * N, N);
		} else {
			const float *b = tb ? bp + s0 * ldb : bp + s0;
			tern_fast_sgemm(ta, tb, M, sn, K, alpha, ap, lda, b, ldb, beta, cp + s0, N);
		}
	}
	return TERN_OK;
}
