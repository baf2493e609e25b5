/* The CPU reference ops: plain fp32 C, long sums accumulated in double. Each op gets the host
 * addresses of its views (tern_cpu_view: inside the buffer, aligned; everything else was checked
 * by the front door), then loops; parallel loops split the output into independent ranges ("tasks") so
 * that no two threads write the same element and results do not depend on the thread count. */
#include "backend/cpu/cpu.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Upper bound on tasks per op: enough to balance many cores, few enough that per-task scratch
 * stays small. */
#define MAX_TASKS 128

/* Rows of tokens one matmul_bwd task accumulates at a time (bounds its double scratch). */
#define BWD_T_TILE 64

/* Task k of ntask covers [lo, hi) of total items. */
static inline void task_range(int64_t total, int64_t ntask, int64_t k, int64_t *lo, int64_t *hi)
{
	*lo = total * k / ntask;
	*hi = total * (k + 1) / ntask;
}

/* Tasks for an elementwise loop of n items: about 4096 items each, at most MAX_TASKS. */
static inline int64_t elem_tasks(int64_t n)
{
	int64_t t = tern_cdiv(n, 4096);
	return t < 1 ? 1 : t > MAX_TASKS ? MAX_TASKS : t;
}

/* ---- frozen weights ----------------------------------------------------------------------- */

void tern_cpu_weight_close(struct cpu_weight *cw)
{
	free(cw->absmax_owned);
	cw->absmax_owned = NULL;
}

/* w was checked by the front door (tern_check_weight): its parts hold what its shape needs. */
enum tern_status tern_cpu_weight_open(const char *op, const struct tern_weight *w, struct cpu_weight *cw)
{
	memset(cw, 0, sizeof *cw);
	cw->w = w;
	enum tern_status st;
	const char *dn = tern_dtype_name(w->dtype);
	long long O = (long long)w->O, I = (long long)w->I;
	size_t data_align = w->dtype == TERN_F32 || w->dtype == TERN_TERNARY ? 4
			    : tern_dtype_size(w->dtype)                      ? 2
									     : 1;
	void *p;
	st = tern_cpu_view(op, "W data", w->data, tern_weight_data_bytes(w->dtype, w->O, w->I), data_align,
			   &p, "O=%lld I=%lld %s", O, I, dn);
	if (st != TERN_OK)
		return st;
	cw->data = p;
	if (w->dtype != TERN_NF4 && w->dtype != TERN_NF4_DQ)
		return TERN_OK;

	int64_t nb = tern_nf4_blocks(w->O * w->I, w->blocksize);
	if (w->dtype == TERN_NF4) {
		st = tern_cpu_view(op, "W absmax", w->absmax, (size_t)nb * 4, 4, &p,
				   "O=%lld I=%lld nf4 bs=%d", O, I, w->blocksize);
		cw->absmax = p;
		return st;
	}
	void *q, *nested;
	st = tern_cpu_view(op, "W absmax", w->absmax, (size_t)nb, 1, &q, "O=%lld I=%lld nf4-dq bs=%d", O, I,
			   w->blocksize);
	if (st != TERN_OK)
		return st;
	st = tern_cpu_view(op, "W nested absmax", w->nested, (size_t)tern_cdiv(nb, TERN_NF4_NESTED_BLOCK) * 4,
			   4, &nested, "O=%lld I=%lld nf4-dq bs=%d", O, I, w->blocksize);
	if (st != TERN_OK)
		return st;
	cw->absmax_owned = tern_malloc((size_t)nb * sizeof(float));
	if (!cw->absmax_owned)
		return TERN_E_NOMEM;
	tern_nf4_nested_absmax(q, nested, w->offset, nb, cw->absmax_owned);
	cw->absmax = cw->absmax_owned;
	return TERN_OK;
}

/* out[n] = W[o, i0 .. i0+n) dequantized to fp32 (layouts: quant.h). */
void tern_cpu_weight_row(const struct cpu_weight *cw, int64_t o, int64_t i0, int64_t n, float *out)
{
	const struct tern_weight *w = cw->w;
	int64_t g0 = o * w->I + i0; /* flat index of the first element */
	switch (w->dtype) {
	case TERN_F32:
		memcpy(out, (const float *)(const void *)cw->data + g0, (size_t)n * sizeof(float));
		break;
	case TERN_F16: {
		const uint16_t *h = (const uint16_t *)(const void *)cw->data + g0;
		for (int64_t j = 0; j < n; j++)
			out[j] = tern_f16_to_f32(h[j]);
		break;
	}
	case TERN_BF16: {
		const uint16_t *h = (const uint16_t *)(const void *)cw->data + g0;
		for (int64_t j = 0; j < n; j++)
			out[j] = tern_bf16_to_f32(h[j]);
		break;
	}
	case TERN_NF4:
	case TERN_NF4_DQ:
		/* flat element g: byte g/2, high nibble when g is even; block g / blocksize */
		for (int64_t j = 0; j < n; j++) {
			int64_t g = g0 + j;
			unsigned byte = cw->data[g >> 1];
			unsigned q = (g & 1) ? byte & 15u : byte >> 4;
			out[j] = tern_nf4_code[q] * cw->absmax[g / w->blocksize];
		}
		break;
	case TERN_TERNARY: {
		/* row o starts at word o * row_words; weight i in bits 2(i%16).. of word i/16 */
		const uint32_t *words =
			(const uint32_t *)(const void *)cw->data + o * tern_ternary_row_words(w->I);
		for (int64_t j = 0; j < n; j++) {
			int64_t i = i0 + j;
			int q = (int)((words[i / 16] >> (2 * (i % 16))) & 3u);
			out[j] = (float)(q - 1) * w->scale;
		}
		break;
	}
	case TERN_DTYPE_COUNT: break;
	}
}

/* ---- matmul ------------------------------------------------------------------------------- */

/* The operand of a product at precision prec (backend.h, matmul): x itself for F32, else a copy
 * of x · s rounded to prec (*copy, freed by the caller) with *inv_s = 1/s (s = 1 for BF16). */
enum tern_status tern_cpu_prec_operand(enum tern_dtype prec, const float *x, int64_t n, const float **out,
				       float **copy, float *inv_s)
{
	*copy = NULL;
	*inv_s = 1.0f;
	*out = x;
	if (prec == TERN_F32)
		return TERN_OK;
	float s = prec == TERN_F16 ? tern_prec_scale(tern_absmax_bits(x, n), 14) : 1.0f;
	float *c = tern_malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
	if (!c)
		return TERN_E_NOMEM;
	for (int64_t i = 0; i < n; i++)
		c[i] = tern_prec_round(prec, x[i] * s);
	*copy = c;
	*out = c;
	*inv_s = 1.0f / s;
	return TERN_OK;
}

void tern_cpu_prec_round_row(enum tern_dtype prec, float *row, int64_t n)
{
	if (prec != TERN_F32)
		for (int64_t i = 0; i < n; i++)
			row[i] = tern_prec_round(prec, row[i]);
}

/* y[T,O] = x[T,I] · W[O,I]ᵀ (=). Tasks own ranges of output columns o: each dequantizes a row
 * of W once and dots it with every token row. At F16/BF16 both operands are rounded first
 * (prec_operand, prec_round_row) and the double sum is scaled back by 1/s. */
enum tern_status tern_cpu_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				 const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	const char *op = "matmul";
	struct cpu_weight cw;
	float *rows = NULL, *xcopy = NULL;
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

	int64_t ntask = O < MAX_TASKS ? O : MAX_TASKS;
	rows = tern_malloc((size_t)(ntask * I) * sizeof(float));
	if (!rows) {
		st = TERN_E_NOMEM;
		goto out;
	}
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		float *row = rows + k * I;
		int64_t o0, o1;
		task_range(O, ntask, k, &o0, &o1);
		for (int64_t o = o0; o < o1; o++) {
			tern_cpu_weight_row(&cw, o, 0, I, row);
			tern_cpu_prec_round_row(prec, row, I);
			for (int64_t t = 0; t < T; t++) {
				const float *xt = xp + t * I;
				double s = 0.0;
				for (int64_t i = 0; i < I; i++)
					s += (double)xt[i] * (double)row[i];
				yp[t * O + o] = (float)s * inv_s;
			}
		}
	}
out:
	free(rows);
	free(xcopy);
	tern_cpu_weight_close(&cw);
	return st;
}

/* dx[T,I] = or += dy[T,O] · W[O,I]. Tasks own ranges of input columns i; each walks all rows
 * of W for its columns, accumulating BWD_T_TILE tokens at a time in double. prec as for matmul
 * (dy is the rounded operand). */
enum tern_status tern_cpu_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     const struct tern_weight *w, int64_t T, bool accumulate,
				     enum tern_dtype prec)
{
	const char *op = "matmul_bwd";
	struct cpu_weight cw;
	float *pieces = NULL, *dycopy = NULL;
	double *accs = NULL;
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

	int64_t ntask = tern_cdiv(I, 32);
	ntask = ntask < 1 ? 1 : ntask > MAX_TASKS ? MAX_TASKS : ntask;
	int64_t width = tern_cdiv(I, ntask); /* columns per task, at most */
	pieces = tern_malloc((size_t)(ntask * width) * sizeof(float));
	accs = tern_malloc((size_t)(ntask * width * BWD_T_TILE) * sizeof(double));
	if (!pieces || !accs) {
		st = TERN_E_NOMEM;
		goto out;
	}
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		float *piece = pieces + k * width;           /* W[o, i0 .. i1) */
		double *acc = accs + k * width * BWD_T_TILE; /* [tn, n] */
		int64_t i0, i1;
		task_range(I, ntask, k, &i0, &i1);
		int64_t n = i1 - i0;
		for (int64_t t0 = 0; t0 < T; t0 += BWD_T_TILE) {
			int64_t tn = T - t0 < BWD_T_TILE ? T - t0 : BWD_T_TILE;
			memset(acc, 0, (size_t)(tn * n) * sizeof(double));
			for (int64_t o = 0; o < O; o++) {
				tern_cpu_weight_row(&cw, o, i0, n, piece);
				tern_cpu_prec_round_row(prec, piece, n);
				for (int64_t tt = 0; tt < tn; tt++) {
					double d = (double)dyp[(t0 + tt) * O + o];
					double *a = acc + tt * n;
					for (int64_t j = 0; j < n; j++)
						a[j] += d * (double)piece[j];
				}
			}
			for (int64_t tt = 0; tt < tn; tt++) {
				float *dst = dxp + (t0 + tt) * I + i0;
				const double *a = acc + tt * n;
				for (int64_t j = 0; j < n; j++) {
					float v = (float)a[j] * inv_s;
					dst[j] = accumulate ? (float)((double)dst[j] + v) : v;
				}
			}
		}
	}
out:
	free(accs);
	free(pieces);
	free(dycopy);
	tern_cpu_weight_close(&cw);
	return st;
}

/* ---- gemm --------------------------------------------------------------------------------- */

/* C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C; A stored [M,K] ([K,M] when ta), B stored
 * [K,N] ([N,K] when tb). Each element is one double dot product; beta == 0 never reads C. */
enum tern_status tern_cpu_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			       struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
			       float alpha, float beta, enum tern_dtype prec)
{
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

	int64_t MN = M * N, ntask = elem_tasks(MN);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(MN, ntask, k, &lo, &hi);
		for (int64_t idx = lo; idx < hi; idx++) {
			int64_t m = idx / N, n = idx % N;
			double s = 0.0;
			for (int64_t kk = 0; kk < K; kk++) {
				float a = ta ? ap[kk * M + m] : ap[m * K + kk];
				float b = tb ? bp[n * K + kk] : bp[kk * N + n];
				s += (double)a * (double)b;
			}
			double r = (double)alpha * s;
			if (beta != 0.0f)
				r += (double)beta * (double)cp[idx];
			cp[idx] = (float)r;
		}
	}
	return TERN_OK;
}

/* ---- elementwise -------------------------------------------------------------------------- */

/* Two fp32 vectors of n elements for an elementwise op. */
static enum tern_status elem_views(const char *op, const char *ya, struct tern_view y, float **yp,
				   const char *xa, struct tern_view x, float **xp, int64_t n)
{
	void *p;
	enum tern_status st = tern_cpu_view(op, ya, y, (size_t)n * 4, 4, &p, "n=%lld f32", (long long)n);
	if (st == TERN_OK)
		*yp = p;
	if (st == TERN_OK && xa &&
	    (st = tern_cpu_view(op, xa, x, (size_t)n * 4, 4, &p, "n=%lld f32", (long long)n)) == TERN_OK)
		*xp = p;
	return st;
}

/* y[n] = x[n] · keep / (1 - p) (=; y may alias x). The mask is tern_dropout_hash(key, i) >=
 * tern_dropout_threshold(p); 1/(1 - p) is rounded to fp32 once, as torch's dropout does. */
enum tern_status tern_cpu_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				  float p, uint64_t key)
{
	float *yp = NULL, *xp = NULL;
	enum tern_status st = elem_views("dropout", "y", y, &yp, "x", x, &xp, n);
	if (st != TERN_OK)
		return st;
	uint32_t thr = tern_dropout_threshold(p);
	float scale = (float)(1.0 / (1.0 - (double)p));
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++)
			yp[i] = tern_dropout_hash(key, (uint32_t)i) >= thr ? xp[i] * scale : 0.0f;
	}
	return TERN_OK;
}

/* y[n] += alpha · x[n] */
enum tern_status tern_cpu_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			       float alpha)
{
	float *yp = NULL, *xp = NULL;
	enum tern_status st = elem_views("axpy", "y", y, &yp, "x", x, &xp, n);
	if (st != TERN_OK)
		return st;
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++)
			yp[i] = yp[i] + alpha * xp[i];
	}
	return TERN_OK;
}

/* x[n] *= alpha */
enum tern_status tern_cpu_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha)
{
	float *xp = NULL;
	enum tern_status st = elem_views("scale", "x", x, &xp, NULL, x, NULL, n);
	if (st != TERN_OK)
		return st;
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++)
			xp[i] = xp[i] * alpha;
	}
	return TERN_OK;
}

/* One AdamW step, in place, in the operation order of torch.optim.AdamW's single-tensor fp32 CPU
 * path (each line is one torch call; the scalars come from tern_adamw_consts):
 *   param.mul_(1 - lr*wd)
 *   exp_avg.lerp_(grad, 1 - beta1)            torch's scalar lerp, both of its branches
 *   exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
 *   denom = (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps)
 *   param.addcdiv_(exp_avg, denom, value=-step_size)   ATen evaluates p + (value * m) / denom
 * With wd = 0 the first line multiplies by 1.0f, which changes nothing. Not bit-exact with torch
 * in one respect: ATen's vectorised lerp fuses its multiply-add (its scalar tail does not), so
 * torch's own result depends on an element's position; this reference never fuses. */
enum tern_status tern_cpu_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
				struct tern_view m, struct tern_view v, int64_t n,
				const struct tern_adamw_args *args)
{
	const char *op = "adamw";
	float *pp = NULL, *gp = NULL, *mp = NULL, *vp = NULL;
	enum tern_status st = elem_views(op, "param", param, &pp, "grad", grad, &gp, n);
	if (st == TERN_OK)
		st = elem_views(op, "m", m, &mp, "v", v, &vp, n);
	if (st != TERN_OK)
		return st;
	struct tern_adamw_consts c = tern_adamw_consts(args);
	bool lerp_small = fabsf(c.one_minus_b1) < 0.5f;
	float neg_step = -c.step_size;
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++) {
			float p = pp[i] * c.decay;
			float g = gp[i], mi = mp[i], vi = vp[i];
			mi = lerp_small ? mi + c.one_minus_b1 * (g - mi)
					: g - (g - mi) * (1.0f - c.one_minus_b1);
			vi = vi * c.b2;
			vi = vi + c.one_minus_b2 * g * g;
			float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
			pp[i] = p + neg_step * mi / denom;
			mp[i] = mi;
			vp[i] = vi;
		}
	}
	return TERN_OK;
}

/* out[0] = or += Σ x[i]², summed in double in index order (one thread: the order is fixed). */
enum tern_status tern_cpu_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
				bool accumulate)
{
	float *xp = NULL;
	enum tern_status st = elem_views("sumsq", "x", x, &xp, NULL, x, NULL, n);
	if (st != TERN_OK)
		return st;
	void *p;
	if ((st = tern_cpu_view("sumsq", "out", out, 4, 4, &p, "1 f32")) != TERN_OK)
		return st;
	float *outp = p;
	double s = accumulate ? (double)outp[0] : 0.0;
	for (int64_t i = 0; i < n; i++)
		s += (double)xp[i] * (double)xp[i];
	outp[0] = (float)s;
	return TERN_OK;
}

/* torch clip_grad_norm_: c = max_norm / (‖g‖ + 1e-6) in fp32; x *= c only when c < 1. */
enum tern_status tern_cpu_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			       float max_norm)
{
	float *xp = NULL;
	enum tern_status st = elem_views("clip", "x", x, &xp, NULL, x, NULL, n);
	if (st != TERN_OK)
		return st;
	void *p;
	if ((st = tern_cpu_view("clip", "sumsq", sumsq, 4, 4, &p, "1 f32")) != TERN_OK)
		return st;
	float c = max_norm / (sqrtf(*(const float *)p) + 1e-6f);
	if (!(c < 1.0f))
		return TERN_OK;
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++)
			xp[i] = xp[i] * c;
	}
	return TERN_OK;
}

/* ---- cast --------------------------------------------------------------------------------- */

static float load_elem(const void *p, enum tern_dtype dt, int64_t i)
{
	switch (dt) {
	case TERN_F16: return tern_f16_to_f32(((const uint16_t *)p)[i]);
	case TERN_BF16: return tern_bf16_to_f32(((const uint16_t *)p)[i]);
	default: return ((const float *)p)[i];
	}
}

/* Widening to f32 is exact, so f16 <-> bf16 through f32 rounds once (to nearest even). */
static void store_elem(void *p, enum tern_dtype dt, int64_t i, float f)
{
	switch (dt) {
	case TERN_F16: ((uint16_t *)p)[i] = tern_f32_to_f16(f); break;
	case TERN_BF16: ((uint16_t *)p)[i] = tern_f32_to_bf16(f); break;
	default: ((float *)p)[i] = f; break;
	}
}

/* dst[n] (dtype dt) = src[n] (dtype st) converted; F32, F16, BF16. */
enum tern_status tern_cpu_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			       struct tern_view src, enum tern_dtype st_, int64_t n)
{
	const char *op = "cast";
	enum tern_status st;
	size_t ds = tern_dtype_size(dt), ss = tern_dtype_size(st_); /* plain types: the front door */
	void *d, *s;
	if ((st = tern_cpu_view(op, "dst", dst, (size_t)n * ds, ds, &d, "n=%lld %s", (long long)n,
				tern_dtype_name(dt))) != TERN_OK)
		return st;
	if ((st = tern_cpu_view(op, "src", src, (size_t)n * ss, ss, &s, "n=%lld %s", (long long)n,
				tern_dtype_name(st_))) != TERN_OK)
		return st;
	if (n == 0)
		return TERN_OK;
	if (dt == st_) {
		memmove(d, s, (size_t)n * ds);
		return TERN_OK;
	}
	int64_t ntask = elem_tasks(n);
	CPU_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo, hi;
		task_range(n, ntask, k, &lo, &hi);
		for (int64_t i = lo; i < hi; i++)
			store_elem(d, dt, i, load_elem(s, st_, i));
	}
	return TERN_OK;
}

/* ---- grouped matmul (mixture of experts) -------------------------------------------------- */

/* off i32 [E + 1] read from its view and checked: 0 <= off[0] <= ... <= off[E] <= T. */
static enum tern_status group_offsets(const char *op, struct tern_view off, int64_t E, int64_t T,
				      const int32_t **out)
{
	void *p;
	enum tern_status st =
		tern_cpu_view(op, "off", off, (size_t)(E + 1) * 4, 4, &p, "E+1=%lld i32", (long long)(E + 1));
	if (st != TERN_OK)
		return st;
	const int32_t *o = p;
	for (int64_t e = 0; e <= E; e++)
		if (o[e] < (e ? o[e - 1] : 0) || o[e] > T)
			return tern_fail(TERN_E_INVALID,
					 "%s: off[%lld] = %d breaks 0 <= off[0] <= ... <= off[E] <= T=%lld",
					 op, (long long)e, (int)o[e], (long long)T);
	*out = o;
	return TERN_OK;
}

/* The experts' products, one backend matmul (matmul_bwd) per expert on its rows: ops run
 * synchronously on the host, so off is read at no cost, and the result is that of the loop bit for
 * bit. The vtable's own entries run, so the fast CPU backend (whose vtable starts as a copy of
 * this one) multiplies through its BLAS matmul. Every expert with rows is opened and checked
 * before anything is written. */
static enum tern_status grouped_run(struct tern_backend *be, bool bwd, struct tern_view out,
				    struct tern_view in, const struct tern_experts *x, struct tern_view off,
				    int64_t T, bool accumulate, enum tern_dtype prec)
{
	const char *op = bwd ? "matmul_grouped_bwd" : "matmul_grouped";
	const int32_t *of = NULL;
	const float *eo = NULL;
	int64_t E = x->E, oc = bwd ? x->w.I : x->w.O, ic = bwd ? x->w.O : x->w.I;
	enum tern_status st = group_offsets(op, off, E, T, &of);
	if (st != TERN_OK)
		return st;
	if (x->w.dtype == TERN_NF4_DQ) {
		void *p;
		if ((st = tern_cpu_view(op, "offsets", x->offsets, (size_t)E * 4, 4, &p, "E=%lld f32",
					(long long)E)))
			return st;
		eo = p;
	}
	for (int pass = 0; pass < 2; pass++) /* check every expert's views, then multiply */
		for (int64_t e = 0; e < E; e++) {
			int64_t n = of[e + 1] - of[e];
			if (!n)
				continue;
			struct tern_weight we;
			tern_experts_at(x, e, &we);
			if (eo)
				we.offset = eo[e];
			if (!pass) {
				struct cpu_weight cw;
				st = tern_cpu_weight_open(op, &we, &cw);
				tern_cpu_weight_close(&cw);
				if (st != TERN_OK)
					return st;
				continue;
			}
			struct tern_view ov =
				tern_view_sub(out, (size_t)(of[e] * oc) * 4, (size_t)(n * oc) * 4);
			struct tern_view iv =
				tern_view_sub(in, (size_t)(of[e] * ic) * 4, (size_t)(n * ic) * 4);
			st = bwd ? be->vt->matmul_bwd(be, ov, iv, &we, n, accumulate, prec)
				 : be->vt->matmul(be, ov, iv, &we, n, prec);
			if (st != TERN_OK)
				return st;
		}
	return TERN_OK;
}

enum tern_status tern_cpu_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					 const struct tern_experts *x, struct tern_view off, int64_t T,
					 enum tern_dtype prec)
{
	return grouped_run(be, false, y, in, x, off, T, false, prec);
}

enum tern_status tern_cpu_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx,
					     struct tern_view dy, const struct tern_experts *x,
					     struct tern_view off, int64_t T, bool accumulate,
					     enum tern_dtype prec)
{
	return grouped_run(be, true, dx, dy, x, off, T, accumulate, prec);
}
