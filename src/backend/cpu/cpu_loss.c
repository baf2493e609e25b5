/* The fused lm_head + cross-entropy of training-math.md "Loss" on the CPU reference backend.
 *
 * For token t with labels[t] != -100 (V vocab, D hidden, W [V, D]):
 *   z_t = x_t · Wᵀ                                 [V]   fp32, each dot summed in double
 *   lse = m + log Σ_v exp(z_t[v] − m), m = max z_t       in double
 *   loss[0] += inv_n · (lse − z_t[labels[t]])             terms summed in double in token order
 *   dx[t] = (inv_n · (exp(z_t − lse) − onehot)) · W       dz rounded to fp32, dot summed in double
 * and dx[t] = 0 for untrained tokens; with dW (a trained lm_head, W f32):
 *   dW[v] += Σ_t dz_t[v] · x_t                             per chunk, summed in double in token order
 Tokens go through in chunks of Tc, so only Tc × V logits
 * exist at a time: Tc = min(T, CE_CHUNK_BYTES / (4 V)) (at least 1), i.e. the chunk's logits
 * take at most 64 MiB (Tc = 128 at V = 128256). TERN_CE_CHUNK=<tokens> in the environment
 * forces a smaller Tc (tests use it to exercise chunking at small V). The chunk and the scratch
 * (struct ce_layout) are also what tern_cpu_sizes reports to the residency planner. */
#include "backend/cpu/cpu.h"
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define CE_CHUNK_BYTES ((int64_t)64 << 20) /* logits of one chunk */
#define CE_MAX_TASKS 128
#define CE_T_TILE 64 /* tokens one dx task accumulates at a time (bounds its double scratch) */

/* Tokens per chunk for vocabulary V (see the top of the file). */
static int64_t ce_chunk_tokens(int64_t T, int64_t V)
{
	int64_t tc = CE_CHUNK_BYTES / (4 * (V > 0 ? V : 1));
	const char *env = getenv("TERN_CE_CHUNK");
	if (env) {
		long long f = strtoll(env, NULL, 10);
		if (f > 0 && f < tc)
			tc = f;
	}
	if (tc > T)
		tc = T;
	return tc < 1 ? 1 : tc;
}

/* The chunking and the scratch of one call for T tokens, vocabulary V and hidden size D:
 * tern_cpu_ce_loss allocates by it and tern_cpu_sizes reports it (to the planner). */
struct ce_layout {
	int64_t tc;           /* tokens per chunk */
	int64_t vtask, dtask; /* tasks over vocabulary rows (the logits), over hidden columns (dx) */
	int64_t width;        /* hidden columns of one dx task, at most */
	size_t z, rows, term, live, pieces, accs; /* bytes of each scratch array */
};

static struct ce_layout ce_layout_of(int64_t T, int64_t V, int64_t D)
{
	struct ce_layout l = {.tc = ce_chunk_tokens(T, V), .vtask = V < CE_MAX_TASKS ? V : CE_MAX_TASKS};
	int64_t dtask = tern_cdiv(D, 32);
	l.dtask = dtask < 1 ? 1 : dtask > CE_MAX_TASKS ? CE_MAX_TASKS : dtask;
	l.width = tern_cdiv(D, l.dtask);
	l.z = (size_t)(l.tc * V) * sizeof(float);                          /* [tc, V]: logits, then dz */
	l.rows = (size_t)(l.vtask * D) * sizeof(float);                    /* one W row per task */
	l.term = (size_t)l.tc * sizeof(double);                            /* [tc] */
	l.live = (size_t)l.tc * sizeof(int64_t);                           /* trained tokens of the chunk */
	l.pieces = (size_t)(l.dtask * l.width) * sizeof(float);            /* W[v, i0 .. i1) per task */
	l.accs = (size_t)(l.dtask * l.width * CE_T_TILE) * sizeof(double); /* [CE_T_TILE, width] per task */
	return l;
}

/* Memory the CPU backend takes besides the buffers callers allocate and ce_loss's scratch: an
 * allowance for the other ops' temporary scratch (matmul's row copies and double accumulators,
 * attention's accumulators: a few MiB at 8k features) and malloc's rounding. */
#define CPU_RESERVE ((uint64_t)64 << 20)

enum tern_status tern_ref_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out)
{
	struct ce_layout l = ce_layout_of(T, V, D);
	*out = (struct tern_backend_sizes){
		.ce_chunk = l.tc,
		.ce_scratch = (uint64_t)(l.z + l.rows + l.term + l.live + l.pieces + l.accs),
		.reserve = CPU_RESERVE,
	};
	return TERN_OK;
}

static inline void ce_task_range(int64_t total, int64_t ntask, int64_t k, int64_t *lo, int64_t *hi)
{
	*lo = total * k / ntask;
	*hi = total * (k + 1) / ntask;
}

/* out[n] = W[v, i0 .. i0+n) as fp32 (F32, F16, BF16 only) */
static void ce_weight_row(const struct tern_weight *w, const void *data, int64_t v, int64_t i0, int64_t n,
			  float *out)
{
	int64_t g0 = v * w->I + i0;
	if (w->dtype == TERN_F32) {
		memcpy(out, (const float *)data + g0, (size_t)n * sizeof(float));
		return;
	}
	const uint16_t *h = (const uint16_t *)data + g0;
	if (w->dtype == TERN_F16)
		for (int64_t j = 0; j < n; j++)
			out[j] = tern_f16_to_f32(h[j]);
	else
		for (int64_t j = 0; j < n; j++)
			out[j] = tern_bf16_to_f32(h[j]);
}

enum tern_status tern_cpu_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				  struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				  struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec)
{
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
	const int32_t *lab = labv; /* on the host here, so checked here (the front door cannot) */
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

	struct ce_layout lay = ce_layout_of(T, V, D);
	int64_t tc = lay.tc, vtask = lay.vtask, dtask = lay.dtask, width = lay.width;
	float *z = tern_malloc(lay.z);
	float *rows = tern_malloc(lay.rows);
	double *term = tern_malloc(lay.term);
	int64_t *live = tern_malloc(lay.live);
	float *pieces = tern_malloc(lay.pieces);
	double *accs = tern_malloc(lay.accs);
	if (!z || !rows || !term || !live || !pieces || !accs) {
		st = TERN_E_NOMEM;
		goto out;
	}
	double total = 0.0;
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc, nl = 0;
		for (int64_t j = 0; j < tn; j++)
			if (lab[t0 + j] != -100)
				live[nl++] = j;
		if (nl == 0)
			continue;

		/* z[j, v] = x[t0 + j] · W[v] for trained tokens; tasks own ranges of vocabulary rows */
		CPU_PARALLEL_FOR
		for (int64_t k = 0; k < vtask; k++) {
			float *row = rows + k * D;
			int64_t v0, v1;
			ce_task_range(V, vtask, k, &v0, &v1);
			for (int64_t v = v0; v < v1; v++) {
				ce_weight_row(W, wv, v, 0, D, row);
				for (int64_t l = 0; l < nl; l++) {
					int64_t j = live[l];
					const float *xt = xp + (t0 + j) * D;
					double s = 0.0;
					for (int64_t i = 0; i < D; i++)
						s += (double)xt[i] * (double)row[i];
					z[j * V + v] = (float)s;
				}
			}
		}

		/* per token: log-sum-exp, the loss term, dz = inv_n · (softmax − onehot) in place */
		CPU_PARALLEL_FOR
		for (int64_t l = 0; l < nl; l++) {
			int64_t j = live[l];
			float *zj = z + j * V;
			int32_t y = lab[t0 + j];
			float m = zj[0];
			for (int64_t v = 1; v < V; v++)
				m = zj[v] > m ? zj[v] : m;
			double s = 0.0;
			for (int64_t v = 0; v < V; v++)
				s += exp((double)zj[v] - (double)m);
			double lse = (double)m + log(s);
			term[l] = lse - (double)zj[y];
			for (int64_t v = 0; v < V; v++) {
				double p = exp((double)zj[v] - lse) - (v == y ? 1.0 : 0.0);
				zj[v] = (float)((double)inv_n * p);
			}
		}
		for (int64_t l = 0; l < nl; l++) /* fixed order: token order */
			total += term[l];

		/* dW[v] += Σ_j dz[j, v] x[t0 + j]; tasks own ranges of vocabulary rows */
		if (dwp) {
			CPU_PARALLEL_FOR
			for (int64_t k = 0; k < vtask; k++) {
				int64_t v0, v1;
				ce_task_range(V, vtask, k, &v0, &v1);
				for (int64_t v = v0; v < v1; v++) {
					float *dst = dwp + v * D;
					for (int64_t i = 0; i < D; i++) {
						double s = 0.0;
						for (int64_t l = 0; l < nl; l++)
							s += (double)z[live[l] * V + v] *
							     (double)xp[(t0 + live[l]) * D + i];
						dst[i] = (float)((double)dst[i] + s);
					}
				}
			}
		}

		/* dx[t0 + j] = dz[j] · W; tasks own ranges of hidden columns, CE_T_TILE tokens at a time */
		CPU_PARALLEL_FOR
		for (int64_t k = 0; k < dtask; k++) {
			float *piece = pieces + k * width;          /* W[v, i0 .. i1) */
			double *acc = accs + k * width * CE_T_TILE; /* [ln, n] */
			int64_t i0, i1;
			ce_task_range(D, dtask, k, &i0, &i1);
			int64_t n = i1 - i0;
			for (int64_t l0 = 0; l0 < nl; l0 += CE_T_TILE) {
				int64_t ln = nl - l0 < CE_T_TILE ? nl - l0 : CE_T_TILE;
				memset(acc, 0, (size_t)(ln * n) * sizeof(double));
				for (int64_t v = 0; v < V; v++) {
					ce_weight_row(W, wv, v, i0, n, piece);
					for (int64_t ll = 0; ll < ln; ll++) {
						double d = (double)z[live[l0 + ll] * V + v];
						double *a = acc + ll * n;
						for (int64_t i = 0; i < n; i++)
							a[i] += d * (double)piece[i];
					}
				}
				for (int64_t ll = 0; ll < ln; ll++) {
					float *dst = dxp + (t0 + live[l0 + ll]) * D + i0;
					for (int64_t i = 0; i < n; i++)
						dst[i] = (float)acc[ll * n + i];
				}
			}
		}
	}
	lossp[0] = (float)((double)lossp[0] + (double)inv_n * total);
out:
	free(z);
	free(rows);
	free(term);
	free(live);
	free(pieces);
	free(accs);
	return st;
}
