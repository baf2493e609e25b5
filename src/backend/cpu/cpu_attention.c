/* Causal GQA attention on the CPU (training-math.md "Attention"), the reference the shaders are
 * held to. One query row at a time with an online softmax in double; only the per-row
 * log-sum-exp is kept, and the backward recomputes P from it, so nothing of size H×T×T exists.
 *
 *   q, o, dq [T, H, Dh]   k, v, dk, dv [T, Hkv, Dh]   (token-major, row-major)
 *   lse [H, T]            seg [T] i32
 * Query head h reads KV head h / (H / Hkv). Query i sees key j when j <= i, seg[j] == seg[i] and,
 * with window > 0, i - j < window; every query sees itself, so no row is empty. */
#include "backend/cpu/cpu.h"

#include <math.h>
#include <stdlib.h>

/* Tasks per parallel loop: rows are independent, so the split only balances threads. */
#define ATTN_MAX_TASKS 128

struct attn_shape {
	int64_t T, H, Hkv, Dh, window, group; /* group = H / Hkv query heads per KV head */
	double scale;
};

/* The shape of checked arguments (the front door: sizes >= 1, H a multiple of Hkv, finite scale). */
static struct attn_shape attn_shape_of(const struct tern_attn_args *a)
{
	return (struct attn_shape){a->T, a->H, a->Hkv, a->Dh, a->window, a->H / a->Hkv, (double)a->scale};
}

/* The host address of an fp32 (or i32) tensor of n elements, with the shape in any message. */
static enum tern_status attn_view(const char *op, const char *what, struct tern_view v, int64_t n, void **p,
				  const struct attn_shape *sh)
{
	return tern_cpu_view(op, what, v, (size_t)n * 4, 4, p, "T=%lld H=%lld Hkv=%lld Dh=%lld",
			     (long long)sh->T, (long long)sh->H, (long long)sh->Hkv, (long long)sh->Dh);
}

static inline double dot(const float *a, const float *b, int64_t n)
{
	double s = 0.0;
	for (int64_t d = 0; d < n; d++)
		s += (double)a[d] * (double)b[d];
	return s;
}

/* The first key query i may see (the causal end is i itself). */
static inline int64_t first_key(const struct attn_shape *sh, int64_t i)
{
	return sh->window > 0 && i - sh->window + 1 > 0 ? i - sh->window + 1 : 0;
}

/* One past the last query that may see key j. */
static inline int64_t query_end(const struct attn_shape *sh, int64_t j)
{
	return sh->window > 0 && j + sh->window < sh->T ? j + sh->window : sh->T;
}

static int64_t ntasks(int64_t rows) { return rows < ATTN_MAX_TASKS ? (rows > 0 ? rows : 1) : ATTN_MAX_TASKS; }

/* o[T,H,Dh] (=), lse[H,T] (=). */
enum tern_status tern_cpu_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				    struct tern_view q, struct tern_view k, struct tern_view v,
				    struct tern_view seg, const struct tern_attn_args *a)
{
	const char *op = "attention";
	struct attn_shape sh = attn_shape_of(a);
	enum tern_status st;
	int64_t T = sh.T, H = sh.H, Hkv = sh.Hkv, Dh = sh.Dh;
	void *op_, *lp, *qp, *kp, *vp, *sp;
	if ((st = attn_view(op, "o", o, T * H * Dh, &op_, &sh)) ||
	    (st = attn_view(op, "lse", lse, H * T, &lp, &sh)) ||
	    (st = attn_view(op, "q", q, T * H * Dh, &qp, &sh)) ||
	    (st = attn_view(op, "k", k, T * Hkv * Dh, &kp, &sh)) ||
	    (st = attn_view(op, "v", v, T * Hkv * Dh, &vp, &sh)) ||
	    (st = attn_view(op, "seg", seg, T, &sp, &sh)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *O = op_, *L = lp;
	const float *Q = qp, *K = kp, *V = vp;
	const int32_t *S = sp;

	int64_t rows = H * T, ntask = ntasks(rows);
	double *acc = tern_malloc((size_t)(ntask * Dh) * sizeof(double));
	if (!acc)
		return TERN_E_NOMEM;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < ntask; t++) {
		double *ac = acc + t * Dh;
		int64_t lo = rows * t / ntask, hi = rows * (t + 1) / ntask;
		for (int64_t r = lo; r < hi; r++) {
			int64_t h = r / T, i = r % T, g = h / sh.group;
			const float *qi = Q + (i * H + h) * Dh;
			double m = -INFINITY, l = 0.0;
			for (int64_t d = 0; d < Dh; d++)
				ac[d] = 0.0;
			for (int64_t j = first_key(&sh, i); j <= i; j++) {
				if (S[j] != S[i])
					continue;
				const float *vj = V + (j * Hkv + g) * Dh;
				double s = sh.scale * dot(qi, K + (j * Hkv + g) * Dh, Dh);
				if (s > m) { /* new maximum: rescale what was summed so far */
					double c = exp(m - s);
					l = l * c + 1.0;
					for (int64_t d = 0; d < Dh; d++)
						ac[d] = ac[d] * c + vj[d];
					m = s;
				} else {
					double p = exp(s - m);
					l += p;
					for (int64_t d = 0; d < Dh; d++)
						ac[d] += p * vj[d];
				}
			}
			float *oi = O + (i * H + h) * Dh;
			for (int64_t d = 0; d < Dh; d++)
				oi[d] = (float)(ac[d] / l);
			L[h * T + i] = (float)(m + log(l));
		}
	}
	free(acc);
	return TERN_OK;
}

/* dq[T,H,Dh], dk, dv[T,Hkv,Dh] (=) from dout, q, k, v, o, lse; P recomputed from lse. */
enum tern_status tern_cpu_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
					struct tern_view dv, struct tern_view dout, struct tern_view q,
					struct tern_view k, struct tern_view v, struct tern_view o,
					struct tern_view lse, struct tern_view seg,
					const struct tern_attn_args *a)
{
	const char *op = "attention_bwd";
	struct attn_shape sh = attn_shape_of(a);
	enum tern_status st;
	int64_t T = sh.T, H = sh.H, Hkv = sh.Hkv, Dh = sh.Dh;
	void *dqp, *dkp, *dvp, *gp, *qp, *kp, *vp, *op_, *lp, *sp;
	if ((st = attn_view(op, "dq", dq, T * H * Dh, &dqp, &sh)) ||
	    (st = attn_view(op, "dk", dk, T * Hkv * Dh, &dkp, &sh)) ||
	    (st = attn_view(op, "dv", dv, T * Hkv * Dh, &dvp, &sh)) ||
	    (st = attn_view(op, "dout", dout, T * H * Dh, &gp, &sh)) ||
	    (st = attn_view(op, "q", q, T * H * Dh, &qp, &sh)) ||
	    (st = attn_view(op, "k", k, T * Hkv * Dh, &kp, &sh)) ||
	    (st = attn_view(op, "v", v, T * Hkv * Dh, &vp, &sh)) ||
	    (st = attn_view(op, "o", o, T * H * Dh, &op_, &sh)) ||
	    (st = attn_view(op, "lse", lse, H * T, &lp, &sh)) ||
	    (st = attn_view(op, "seg", seg, T, &sp, &sh)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *DQ = dqp, *DK = dkp, *DV = dvp;
	const float *G = gp, *Q = qp, *K = kp, *V = vp, *O = op_, *L = lp;
	const int32_t *S = sp;

	int64_t qrows = H * T, krows = Hkv * T;
	int64_t nq = ntasks(qrows), nk = ntasks(krows), nmax = nq > nk ? nq : nk;
	double *Dr = tern_malloc((size_t)qrows * sizeof(double));            /* [H, T]: rowsum(dO ∘ O) */
	double *acc = tern_malloc((size_t)(nmax * 2 * Dh) * sizeof(double)); /* per task */
	if (!Dr || !acc) {
		free(Dr);
		free(acc);
		return TERN_E_NOMEM;
	}
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < nq; t++)
		for (int64_t r = qrows * t / nq; r < qrows * (t + 1) / nq; r++) {
			int64_t h = r / T, i = r % T;
			Dr[r] = dot(G + (i * H + h) * Dh, O + (i * H + h) * Dh, Dh);
		}

	/* dQ_i = scale · Σ_j dS_ij K_j, one query row at a time */
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < nq; t++) {
		double *ac = acc + t * 2 * Dh;
		for (int64_t r = qrows * t / nq; r < qrows * (t + 1) / nq; r++) {
			int64_t h = r / T, i = r % T, g = h / sh.group;
			const float *qi = Q + (i * H + h) * Dh, *gi = G + (i * H + h) * Dh;
			for (int64_t d = 0; d < Dh; d++)
				ac[d] = 0.0;
			for (int64_t j = first_key(&sh, i); j <= i; j++) {
				if (S[j] != S[i])
					continue;
				const float *kj = K + (j * Hkv + g) * Dh;
				double p = exp(sh.scale * dot(qi, kj, Dh) - (double)L[r]);
				double ds = p * (dot(gi, V + (j * Hkv + g) * Dh, Dh) - Dr[r]);
				for (int64_t d = 0; d < Dh; d++)
					ac[d] += ds * kj[d];
			}
			float *dqi = DQ + (i * H + h) * Dh;
			for (int64_t d = 0; d < Dh; d++)
				dqi[d] = (float)(sh.scale * ac[d]);
		}
	}

	/* dV_j = Σ P_ij dO_i, dK_j = scale · Σ dS_ij Q_i over the queries of every head sharing j */
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < nk; t++) {
		double *av = acc + t * 2 * Dh, *ak = av + Dh;
		for (int64_t r = krows * t / nk; r < krows * (t + 1) / nk; r++) {
			int64_t g = r / T, j = r % T;
			const float *kj = K + (j * Hkv + g) * Dh, *vj = V + (j * Hkv + g) * Dh;
			for (int64_t d = 0; d < Dh; d++)
				av[d] = ak[d] = 0.0;
			for (int64_t h = g * sh.group; h < (g + 1) * sh.group; h++)
				for (int64_t i = j; i < query_end(&sh, j); i++) {
					if (S[j] != S[i])
						continue;
					const float *qi = Q + (i * H + h) * Dh, *gi = G + (i * H + h) * Dh;
					double p = exp(sh.scale * dot(qi, kj, Dh) - (double)L[h * T + i]);
					double ds = p * (dot(gi, vj, Dh) - Dr[h * T + i]);
					for (int64_t d = 0; d < Dh; d++) {
						av[d] += p * gi[d];
						ak[d] += ds * qi[d];
					}
				}
			float *dkj = DK + (j * Hkv + g) * Dh, *dvj = DV + (j * Hkv + g) * Dh;
			for (int64_t d = 0; d < Dh; d++) {
				dkj[d] = (float)(sh.scale * ak[d]);
				dvj[d] = (float)av[d];
			}
		}
	}
	free(Dr);
	free(acc);
	return TERN_OK;
}
