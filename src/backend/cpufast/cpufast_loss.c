/* The fast backend's fused lm_head + cross-entropy (contract: backend.h, ce_loss; the math:
 * training-math.md "Loss", as the reference computes it in src/backend/cpu/cpu_loss.c).
 *
 * Tokens go through in chunks of tc (fast_ce_layout); a chunk's trained tokens are gathered
 * into xs [nl, D], then, each step split into tasks of one GEMM over disjoint outputs:
 *   z [nl, V]  = xs · Wᵀ            tasks over vocabulary panels (W rows decoded per panel)
 *   per token:  m = max z, p = exp(z − m) (the vector exp), s = Σ p (double), lse = m + log s,
 *               term = lse − z[label], dz = inv_n · (p / s − onehot)     (z overwritten)
 *   dW [V, D] += dzᵀ · xs           tasks over vocabulary panels (a trained lm_head only)
 *   dx rows   = dz · W              16 tasks, task k summing the vocabulary panels k, k + 16, ...
 *                                   in order into its own rows; the 16 partial sums are then
 *                                   added in order (W rows decoded per panel)
 * The loss terms are summed in double in token order. */
#include "backend/cpufast/cpufast.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define CE_Z_BYTES ((int64_t)128 << 20) /* logits of one chunk, at most */
#define CE_DX_GROUPS 16 /* dx partial sums: group k takes the vocabulary panels p with p % 16 == k */

struct fast_ce_layout {
	int64_t tc;                             /* tokens per chunk */
	int64_t vb;                             /* vocabulary rows of a panel */
	size_t z, xs, term, live, vpanels, dxg; /* bytes of each scratch array */
};

static struct fast_ce_layout fast_ce_layout_of(int64_t T, int64_t V, int64_t D, int nthr)
{
	struct fast_ce_layout l = {0};
	int64_t tc = CE_Z_BYTES / (4 * (V > 0 ? V : 1));
	if (tc < T && tc > 0) /* equal chunks: T 512, V 32000 as 2 x 256 rows, not 262 + 250 */
		tc = tern_cdiv(T, tern_cdiv(T, tc));
	const char *env = getenv("TERN_CE_CHUNK");
	if (env) {
		long long f = strtoll(env, NULL, 10);
		if (f > 0 && f < tc)
			tc = f;
	}
	if (tc > T)
		tc = T;
	l.tc = tc < 1 ? 1 : tc;
	l.vb = tern_fast_panel_lines(D, V); /* as the products' panels */
	l.z = (size_t)(l.tc * V) * sizeof(float);
	l.xs = (size_t)(l.tc * D) * sizeof(float);
	l.term = (size_t)T * sizeof(double);
	l.live = (size_t)l.tc * sizeof(int64_t);
	l.vpanels = (size_t)(nthr * l.vb * D) * sizeof(float);
	l.dxg = (size_t)(CE_DX_GROUPS * l.tc * D) * sizeof(float);
	return l;
}

/* Besides ce_loss's scratch: the matmuls' decoded panels (one per thread), attention_bwd's saved
 * P and dS (32 MiB at most) and malloc's rounding. */
#define FAST_RESERVE ((uint64_t)64 << 20)

enum tern_status tern_cpu_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out)
{
	struct fast_ce_layout l = fast_ce_layout_of(T, V, D, tern_fast_threads());
	*out = (struct tern_backend_sizes){
		.ce_chunk = l.tc,
		.ce_scratch = (uint64_t)(l.z + l.xs + l.term + l.live + l.vpanels + l.dxg),
		.reserve = FAST_RESERVE,
	};
	return TERN_OK;
}

static inline int fast_thread(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

enum tern_status tern_fast_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				   struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				   struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec)
{
	(void)be;
	(void)prec; /* fp32 products at every precision (the contract allows it) */
	const char *op = "ce_loss";
	enum tern_status st = TERN_OK;
	int64_t V = W->O, D = W->I;
	void *lv, *dxv, *xv, *labv, *wv;
	const char *wn = tern_dtype_name(W->dtype);
	if ((st = tern_cpu_view(op, "W data", W->data, tern_weight_data_bytes(W->dtype, V, D),
				tern_dtype_size(W->dtype), &wv, "V=%lld D=%lld %s", (long long)V,
				(long long)D, wn)) != TERN_OK ||
	    (st = tern_cpu_view(op, "loss", loss, 4, 4, &lv, "1 f32")) != TERN_OK ||
	    (st = tern_cpu_view(op, "dx", dx, (size_t)(T * D) * 4, 4, &dxv, "T=%lld D=%lld f32", (long long)T,
				(long long)D)) != TERN_OK ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(T * D) * 4, 4, &xv, "T=%lld D=%lld f32", (long long)T,
				(long long)D)) != TERN_OK ||
	    (st = tern_cpu_view(op, "labels", labels, (size_t)T * 4, 4, &labv, "T=%lld i32", (long long)T)) !=
		    TERN_OK)
		return st;
	float *dwp = NULL;
	if (dW.size) {
		void *dwv;
		if ((st = tern_cpu_view(op, "dW", dW, (size_t)(V * D) * 4, 4, &dwv, "V=%lld D=%lld f32",
					(long long)V, (long long)D)) != TERN_OK)
			return st;
		dwp = dwv;
	}
	const int32_t *lab = labv;
	for (int64_t t = 0; t < T; t++)
		if (lab[t] != -100 && (lab[t] < 0 || lab[t] >= V))
			return tern_fail(TERN_E_INVALID,
					 "ce_loss: labels[%lld] = %d is outside [0, V=%lld) and not -100",
					 (long long)t, (int)lab[t], (long long)V);
	if (T == 0)
		return TERN_OK;
	float *dxp = dxv, *lossp = lv;
	const float *xp = xv;
	memset(dxp, 0, (size_t)(T * D) * 4); /* untrained tokens keep dx = 0 */

	bool direct = W->dtype == TERN_F32;
	int nthr = tern_fast_threads();
	struct fast_ce_layout lay = fast_ce_layout_of(T, V, D, nthr);
	int64_t tc = lay.tc, vb = lay.vb;
	int64_t nvp = tern_cdiv(V, vb), ngr = nvp < CE_DX_GROUPS ? nvp : CE_DX_GROUPS;
	float *z = tern_malloc(lay.z), *xs = tern_malloc(lay.xs), *dxg = tern_malloc(lay.dxg);
	double *term = tern_malloc(lay.term);
	int64_t *live = tern_malloc(lay.live);
	float *vpanels = direct ? NULL : tern_malloc(lay.vpanels);
	if (!z || !xs || !dxg || !term || !live || (!direct && !vpanels)) {
		st = TERN_E_NOMEM;
		goto out;
	}
	const float *wf = wv;
	struct cpu_weight cw = {.w = W, .data = wv}; /* a plain dtype: no block scales */
	int64_t nterm = 0;
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc, nl = 0;
		for (int64_t j = 0; j < tn; j++)
			if (lab[t0 + j] != -100)
				live[nl++] = t0 + j;
		if (nl == 0)
			continue;
		for (int64_t l = 0; l < nl; l++)
			memcpy(xs + l * D, xp + live[l] * D, (size_t)D * sizeof(float));

		FAST_PARALLEL_FOR
		for (int64_t p = 0; p < nvp; p++) {
			int64_t v0 = p * vb, vn = V - v0 < vb ? V - v0 : vb;
			const float *wp = direct ? wf + v0 * D : NULL;
			if (!direct) {
				float *buf = vpanels + (int64_t)fast_thread() * vb * D;
				for (int64_t v = 0; v < vn; v++)
					tern_fast_weight_row(&cw, v0 + v, 0, D, buf + v * D);
				wp = buf;
			}
			tern_fast_sgemm(false, true, nl, vn, D, 1.0f, xs, D, wp, D, 0.0f, z + v0, V);
		}

		FAST_PARALLEL_FOR
		for (int64_t l = 0; l < nl; l++) {
			float *zl = z + l * V;
			int32_t y = lab[live[l]];
			float m, zy = zl[y];
			double s = tern_fast_ce_row(zl, V, &m);
			term[nterm + l] = (double)m + log(s) - (double)zy;
			tern_fast_scale(zl, V, (float)((double)inv_n / s));
			zl[y] -= inv_n;
		}
		nterm += nl;

		if (dwp) {
			FAST_PARALLEL_FOR
			for (int64_t p = 0; p < nvp; p++) {
				int64_t v0 = p * vb, vn = V - v0 < vb ? V - v0 : vb;
				tern_fast_sgemm(true, false, vn, D, nl, 1.0f, z + v0, V, xs, D, 1.0f,
						dwp + v0 * D, D);
			}
		}

		/* dx rows = Σ over vocabulary panels dz[:, panel] · W[panel]: group k sums its panels
		 * (p = k, k + 16, ...) in order into its own rows, then the groups are added in order */
		FAST_PARALLEL_FOR
		for (int64_t k = 0; k < ngr; k++) {
			float *acc = dxg + k * tc * D;
			for (int64_t p = k, first = 1; p < nvp; p += CE_DX_GROUPS, first = 0) {
				int64_t v0 = p * vb, vn = V - v0 < vb ? V - v0 : vb;
				const float *wp = direct ? wf + v0 * D : NULL;
				if (!direct) {
					float *buf = vpanels + (int64_t)fast_thread() * vb * D;
					for (int64_t v = 0; v < vn; v++)
						tern_fast_weight_row(&cw, v0 + v, 0, D, buf + v * D);
					wp = buf;
				}
				tern_fast_sgemm(false, false, nl, D, vn, 1.0f, z + v0, V, wp, D,
						first ? 0.0f : 1.0f, acc, D);
			}
		}
		FAST_PARALLEL_FOR
		for (int64_t l = 0; l < nl; l++) {
			float *dst = dxp + live[l] * D;
			memcpy(dst, dxg + l * D, (size_t)D * sizeof(float));
			for (int64_t k = 1; k < ngr; k++) {
				const float *src = dxg + (k * tc + l) * D;
				for (int64_t i = 0; i < D; i++)
					dst[i] += src[i];
			}
		}
	}
	double total = 0.0;
	for (int64_t l = 0; l < nterm; l++) /* fixed order: token order */
		total += term[l];
	lossp[0] = (float)((double)lossp[0] + (double)inv_n * total);
out:
	free(z);
	free(xs);
	free(dxg);
	free(term);
	free(live);
	free(vpanels);
	return st;
}
