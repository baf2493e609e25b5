/* The fast backend's causal GQA attention (contract: backend.h; the math as the reference's
 * src/backend/cpu/cpu_attention.c) in tiles of rows, each product one GEMM:
 *
 *   forward, a task per (head h, query tile of ATT_TILE rows [i0, i1)):
 *     keys [klo, i1), klo the first key any query of the tile may see (its sample's first token,
 *     or the window's start);
 *     S = scale · Q_tile K_keysᵀ, masked (-inf) where the query may not see the key;
 *     m = max, p = exp(S − m), l = Σ p, lse = m + log l;  O_tile = (p / l) V_keys
 *   backward, Dr_i = rowsum(dO_i ∘ O_i), then
 *     a task per (head h, query tile):  P = exp(S − lse), dP = dO V_keysᵀ,
 *                                      dS = P ∘ (dP − Dr),  dQ_tile = scale · dS K_keys
 *     a task per (KV head g, key tile [j0, j1)), queries [j0, qhi) (the last query that may see
 *     a key of the tile), over the group's heads in order:
 *                                      dV_tile += Pᵀ dO,  dK_tile += scale · dSᵀ Q
 *     with P and dS gathered from what the dQ tasks saved when all heads' fit ATT_SAVE_BYTES
 *     (else computed again as in the dQ tasks)
 * So a task holds ATT_TILE × (keys of one sample) scores, never H×T×T; each output element is
 * written by one task, in a fixed order. */
#include "backend/cpufast/cpufast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define ATT_TILE 64
#define ATT_SAVE_BYTES ((int64_t)32 << 20) /* the backward's saved P and dS, at most (in the reserve) */

struct fattn {
	int64_t T, H, Hkv, Dh, window, group;
	float scale;
	const int32_t *seg;
	int64_t *kfirst; /* [T] the first key query i may see */
	int64_t *qlast;  /* [T] the last query that may see key j */
	bool *dense;     /* [T] query i sees every key in [kfirst[i], i] (no other sample between) */
};

static enum tern_status fview(const char *op, const char *what, struct tern_view v, int64_t n, void **p,
			      const struct fattn *a)
{
	return tern_cpu_view(op, what, v, (size_t)n * 4, 4, p, "T=%lld H=%lld Hkv=%lld Dh=%lld",
			     (long long)a->T, (long long)a->H, (long long)a->Hkv, (long long)a->Dh);
}

/* kfirst and qlast from the segments (runs of equal ids; an id that comes back after another
 * joins its earlier run, as the mask says) and the window. */
static enum tern_status fattn_bounds(struct fattn *a)
{
	int64_t T = a->T;
	const int32_t *S = a->seg;
	a->kfirst = tern_malloc((size_t)T * sizeof(int64_t));
	a->qlast = tern_malloc((size_t)T * sizeof(int64_t));
	a->dense = tern_malloc((size_t)T * sizeof(bool));
	int64_t *rs = tern_malloc((size_t)T * sizeof(int64_t)); /* run starts */
	if (!a->kfirst || !a->qlast || !a->dense || !rs) {
		free(rs);
		return TERN_E_NOMEM;
	}
	int64_t nr = 0;
	for (int64_t i = 0; i < T; i++)
		if (i == 0 || S[i] != S[i - 1])
			rs[nr++] = i;
	for (int64_t r = 0; r < nr; r++) {
		int64_t s0 = rs[r], s1 = r + 1 < nr ? rs[r + 1] : T;
		int64_t first = s0, last = s1 - 1;
		for (int64_t q = 0; q < nr; q++) {
			int64_t t0 = rs[q], t1 = q + 1 < nr ? rs[q + 1] : T;
			if (S[t0] != S[s0])
				continue;
			first = t0 < first ? t0 : first;
			last = t1 - 1 > last ? t1 - 1 : last;
		}
		for (int64_t i = s0; i < s1; i++) {
			int64_t f = first, l = last;
			if (a->window > 0) {
				if (i - a->window + 1 > f)
					f = i - a->window + 1;
				if (i + a->window - 1 < l)
					l = i + a->window - 1;
			}
			a->kfirst[i] = f;
			a->qlast[i] = l;
			a->dense[i] = f >= s0; /* the keys [f, i] lie in i's own run */
		}
	}
	free(rs);
	return TERN_OK;
}

static void fattn_free(struct fattn *a)
{
	free(a->kfirst);
	free(a->qlast);
	free(a->dense);
}

/* Whether query i sees key j. */
static inline bool sees(const struct fattn *a, int64_t i, int64_t j)
{
	return j <= i && a->seg[j] == a->seg[i] && (a->window <= 0 || i - j < a->window);
}

/* row[nk] holds scores of query i against keys klo ..: -inf where i may not see the key. */
static void mask_row(const struct fattn *a, int64_t i, int64_t klo, int64_t nk, float *row)
{
	int64_t lo = a->kfirst[i] - klo, hi = i - klo; /* the visible keys lie in [lo, hi] */
	if (a->dense[i]) {                             /* all of them visible: mask the two ends only */
		for (int64_t c = 0; c < lo && c < nk; c++)
			row[c] = -INFINITY;
		for (int64_t c = hi + 1 > 0 ? hi + 1 : 0; c < nk; c++)
			row[c] = -INFINITY;
		return;
	}
	for (int64_t c = 0; c < nk; c++)
		if (c < lo || c > hi || !sees(a, i, klo + c))
			row[c] = -INFINITY;
}

/* The backward's saved P (and, ds floats on, dS) rows of queries j0 .. j0+nq-1 at keys
 * [j0, j0+nk) into S and dP [nq, nk]: query tile t holds its rows over keys [tlo[t], its end)
 * at head offset hoff + toff[t]; keys before tlo[t] are masked for the tile (0). */
static void gather_saved(const float *save, int64_t ds, int64_t hoff, const int64_t *tlo, const int64_t *toff,
			 int64_t T, int64_t j0, int64_t nq, int64_t nk, float *S, float *dP)
{
	for (int64_t r = 0; r < nq; r++) {
		int64_t i = j0 + r, t = i / ATT_TILE;
		int64_t end = (t + 1) * ATT_TILE < T ? (t + 1) * ATT_TILE : T, nkt = end - tlo[t];
		int64_t c0 = j0 - tlo[t], lead = c0 < 0 ? -c0 : 0;
		if (lead > nk)
			lead = nk;
		const float *ps = save + hoff + toff[t] + (i - t * ATT_TILE) * nkt + c0;
		for (int64_t c = 0; c < lead; c++)
			S[r * nk + c] = dP[r * nk + c] = 0.0f;
		memcpy(S + r * nk + lead, ps + lead, (size_t)(nk - lead) * sizeof(float));
		memcpy(dP + r * nk + lead, ps + ds + lead, (size_t)(nk - lead) * sizeof(float));
	}
}

static inline int thread_no(void)
{
#ifdef _OPENMP
	return omp_get_thread_num();
#else
	return 0;
#endif
}

static struct fattn fattn_of(const struct tern_attn_args *x)
{
	return (struct fattn){.T = x->T,
			      .H = x->H,
			      .Hkv = x->Hkv,
			      .Dh = x->Dh,
			      .window = x->window,
			      .group = x->H / x->Hkv,
			      .scale = x->scale};
}

enum tern_status tern_fast_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				     struct tern_view q, struct tern_view k, struct tern_view v,
				     struct tern_view seg, const struct tern_attn_args *args)
{
	(void)be;
	const char *op = "attention";
	struct fattn a = fattn_of(args);
	enum tern_status st;
	int64_t T = a.T, H = a.H, Hkv = a.Hkv, Dh = a.Dh;
	void *op_, *lp, *qp, *kp, *vp, *sp;
	if ((st = fview(op, "o", o, T * H * Dh, &op_, &a)) || (st = fview(op, "lse", lse, H * T, &lp, &a)) ||
	    (st = fview(op, "q", q, T * H * Dh, &qp, &a)) ||
	    (st = fview(op, "k", k, T * Hkv * Dh, &kp, &a)) ||
	    (st = fview(op, "v", v, T * Hkv * Dh, &vp, &a)) || (st = fview(op, "seg", seg, T, &sp, &a)))
		return st;
	if (T == 0)
		return TERN_OK;
	a.seg = sp;
	float *O = op_, *L = lp, *sbuf = NULL;
	const float *Q = qp, *K = kp, *V = vp;
	if ((st = fattn_bounds(&a)) != TERN_OK)
		goto out;
	sbuf = tern_malloc((size_t)(tern_fast_threads() * ATT_TILE * T) * sizeof(float));
	if (!sbuf) {
		st = TERN_E_NOMEM;
		goto out;
	}
	int64_t nt = tern_cdiv(T, ATT_TILE);
	FAST_PARALLEL_FOR
	for (int64_t task = 0; task < H * nt; task++) {
		int64_t h = task / nt, g = h / a.group;
		int64_t i0 = task % nt * ATT_TILE, i1 = i0 + ATT_TILE < T ? i0 + ATT_TILE : T, nq = i1 - i0;
		int64_t klo = i0;
		for (int64_t i = i0; i < i1; i++)
			klo = a.kfirst[i] < klo ? a.kfirst[i] : klo;
		int64_t nk = i1 - klo;
		float *S = sbuf + (int64_t)thread_no() * ATT_TILE * T;
		tern_fast_sgemm(false, true, nq, nk, Dh, a.scale, Q + (i0 * H + h) * Dh, H * Dh,
				K + (klo * Hkv + g) * Dh, Hkv * Dh, 0.0f, S, nk);
		for (int64_t r = 0; r < nq; r++) {
			float *row = S + r * nk;
			mask_row(&a, i0 + r, klo, nk, row);
			float m = -INFINITY;
			for (int64_t c = 0; c < nk; c++)
				m = row[c] > m ? row[c] : m;
			float l = tern_fast_exp_sub(row, nk, m);
			L[h * T + i0 + r] = m + logf(l);
			float inv = 1.0f / l;
			for (int64_t c = 0; c < nk; c++)
				row[c] *= inv;
		}
		tern_fast_sgemm(false, false, nq, Dh, nk, 1.0f, S, nk, V + (klo * Hkv + g) * Dh, Hkv * Dh,
				0.0f, O + (i0 * H + h) * Dh, H * Dh);
	}
out:
	free(sbuf);
	fattn_free(&a);
	return st;
}

enum tern_status tern_fast_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
					 struct tern_view dv, struct tern_view dout, struct tern_view q,
					 struct tern_view k, struct tern_view v, struct tern_view o,
					 struct tern_view lse, struct tern_view seg,
					 const struct tern_attn_args *args)
{
	(void)be;
	const char *op = "attention_bwd";
	struct fattn a = fattn_of(args);
	enum tern_status st;
	int64_t T = a.T, H = a.H, Hkv = a.Hkv, Dh = a.Dh;
	void *dqp, *dkp, *dvp, *gp, *qp, *kp, *vp, *op_, *lp, *sp;
	if ((st = fview(op, "dq", dq, T * H * Dh, &dqp, &a)) ||
	    (st = fview(op, "dk", dk, T * Hkv * Dh, &dkp, &a)) ||
	    (st = fview(op, "dv", dv, T * Hkv * Dh, &dvp, &a)) ||
	    (st = fview(op, "dout", dout, T * H * Dh, &gp, &a)) ||
	    (st = fview(op, "q", q, T * H * Dh, &qp, &a)) ||
	    (st = fview(op, "k", k, T * Hkv * Dh, &kp, &a)) ||
	    (st = fview(op, "v", v, T * Hkv * Dh, &vp, &a)) ||
	    (st = fview(op, "o", o, T * H * Dh, &op_, &a)) || (st = fview(op, "lse", lse, H * T, &lp, &a)) ||
	    (st = fview(op, "seg", seg, T, &sp, &a)))
		return st;
	if (T == 0)
		return TERN_OK;
	a.seg = sp;
	float *DQ = dqp, *DK = dkp, *DV = dvp, *Dr = NULL, *sbuf = NULL, *save = NULL;
	int64_t *tlo = NULL, *toff = NULL;
	const float *G = gp, *Q = qp, *K = kp, *V = vp, *O = op_, *L = lp;
	if ((st = fattn_bounds(&a)) != TERN_OK)
		goto out;
	Dr = tern_malloc((size_t)(H * T) * sizeof(float));
	sbuf = tern_malloc((size_t)(tern_fast_threads() * 2 * ATT_TILE * T) * sizeof(float));
	if (!Dr || !sbuf) {
		st = TERN_E_NOMEM;
		goto out;
	}
	FAST_PARALLEL_FOR
	for (int64_t i = 0; i < T; i++)
		for (int64_t h = 0; h < H; h++)
			Dr[h * T + i] = tern_fast_dot(G + (i * H + h) * Dh, O + (i * H + h) * Dh, Dh);

	int64_t nt = tern_cdiv(T, ATT_TILE);
	/* Each query tile's keys [tlo, i1) and the offset of its nq x nk scores in a head's share
	 * of `save`: where all heads' P and dS fit ATT_SAVE_BYTES, the dQ tasks keep them there and
	 * the dK, dV tasks gather their rows from it instead of computing S and dP again (the dQ
	 * pass's values; computed again by GEMMs of other shapes they may round differently, so
	 * the two ways agree to fp32 rounding, each deterministic). */
	tlo = tern_malloc((size_t)nt * sizeof(int64_t));
	toff = tern_malloc((size_t)(nt + 1) * sizeof(int64_t));
	if (!tlo || !toff) {
		st = TERN_E_NOMEM;
		goto out;
	}
	toff[0] = 0;
	for (int64_t t = 0; t < nt; t++) {
		int64_t i0 = t * ATT_TILE, i1 = i0 + ATT_TILE < T ? i0 + ATT_TILE : T;
		tlo[t] = i0;
		for (int64_t i = i0; i < i1; i++)
			tlo[t] = a.kfirst[i] < tlo[t] ? a.kfirst[i] : tlo[t];
		toff[t + 1] = toff[t] + (i1 - i0) * (i1 - tlo[t]);
	}
	int64_t tot = toff[nt]; /* scores of one head */
	if (2 * H * tot * (int64_t)sizeof(float) <= ATT_SAVE_BYTES)
		save = tern_malloc((size_t)(2 * H * tot) * sizeof(float)); /* NULL: computed again */

	/* dQ: tasks over (head, query tile) */
	FAST_PARALLEL_FOR
	for (int64_t task = 0; task < H * nt; task++) {
		int64_t h = task / nt, g = h / a.group;
		int64_t i0 = task % nt * ATT_TILE, i1 = i0 + ATT_TILE < T ? i0 + ATT_TILE : T, nq = i1 - i0;
		int64_t klo = tlo[task % nt];
		int64_t nk = i1 - klo;
		float *S = sbuf + (int64_t)thread_no() * 2 * ATT_TILE * T, *dP = S + ATT_TILE * T;
		if (save) { /* P and dS stay in this head's share */
			S = save + h * tot + toff[task % nt];
			dP = S + H * tot;
		}
		const float *Kk = K + (klo * Hkv + g) * Dh, *Vk = V + (klo * Hkv + g) * Dh;
		tern_fast_sgemm(false, true, nq, nk, Dh, a.scale, Q + (i0 * H + h) * Dh, H * Dh, Kk, Hkv * Dh,
				0.0f, S, nk);
		tern_fast_sgemm(false, true, nq, nk, Dh, 1.0f, G + (i0 * H + h) * Dh, H * Dh, Vk, Hkv * Dh,
				0.0f, dP, nk);
		for (int64_t r = 0; r < nq; r++) {
			int64_t i = i0 + r;
			float *row = S + r * nk, *drow = dP + r * nk;
			mask_row(&a, i, klo, nk, row);
			tern_fast_exp_sub(row, nk, L[h * T + i]);
			float d = Dr[h * T + i];
			for (int64_t c = 0; c < nk; c++) /* dS into dP's place, P kept */
				drow[c] = row[c] * (drow[c] - d);
		}
		tern_fast_sgemm(false, false, nq, Dh, nk, a.scale, dP, nk, Kk, Hkv * Dh, 0.0f,
				DQ + (i0 * H + h) * Dh, H * Dh);
	}

	/* dK, dV: tasks over (KV head, key tile), the group's query heads summed in order */
	FAST_PARALLEL_FOR
	for (int64_t task = 0; task < Hkv * nt; task++) {
		int64_t g = task / nt;
		int64_t j0 = task % nt * ATT_TILE, j1 = j0 + ATT_TILE < T ? j0 + ATT_TILE : T, nk = j1 - j0;
		int64_t qhi = j1 - 1;
		for (int64_t j = j0; j < j1; j++)
			qhi = a.qlast[j] > qhi ? a.qlast[j] : qhi;
		int64_t nq = qhi + 1 - j0;
		float *S = sbuf + (int64_t)thread_no() * 2 * ATT_TILE * T, *dP = S + ATT_TILE * T;
		const float *Kk = K + (j0 * Hkv + g) * Dh, *Vk = V + (j0 * Hkv + g) * Dh;
		float *dKk = DK + (j0 * Hkv + g) * Dh, *dVk = DV + (j0 * Hkv + g) * Dh;
		for (int64_t hh = 0; hh < a.group; hh++) {
			int64_t h = g * a.group + hh;
			const float *Qq = Q + (j0 * H + h) * Dh, *Gq = G + (j0 * H + h) * Dh;
			float beta = hh == 0 ? 0.0f : 1.0f;
			if (save) {
				gather_saved(save, H * tot, h * tot, tlo, toff, T, j0, nq, nk, S, dP);
			} else {
				/* S [nq, nk]: queries j0 .. qhi against the tile's keys */
				tern_fast_sgemm(false, true, nq, nk, Dh, a.scale, Qq, H * Dh, Kk, Hkv * Dh,
						0.0f, S, nk);
				tern_fast_sgemm(false, true, nq, nk, Dh, 1.0f, Gq, H * Dh, Vk, Hkv * Dh, 0.0f,
						dP, nk);
				for (int64_t r = 0; r < nq; r++) {
					int64_t i = j0 + r;
					float *row = S + r * nk, *drow = dP + r * nk;
					mask_row(&a, i, j0, nk, row);
					tern_fast_exp_sub(row, nk, L[h * T + i]);
					float d = Dr[h * T + i];
					for (int64_t c = 0; c < nk; c++)
						drow[c] = row[c] * (drow[c] - d);
				}
			}
			tern_fast_sgemm(true, false, nk, Dh, nq, 1.0f, S, nk, Gq, H * Dh, beta, dVk,
					Hkv * Dh);
			tern_fast_sgemm(true, false, nk, Dh, nq, a.scale, dP, nk, Qq, H * Dh, beta, dKk,
					Hkv * Dh);
		}
	}
out:
	free(save);
	free(tlo);
	free(toff);
	free(Dr);
	free(sbuf);
	fattn_free(&a);
	return st;
}
