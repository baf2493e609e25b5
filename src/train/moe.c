/* Mixture-of-experts routing on the host (moe.h). */
#include "train/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int64_t tern_moe_cap(int64_t T, int64_t E, int64_t k, int64_t pad) { return T * k + E * (pad - 1); }

int64_t tern_moe_icap(int64_t T, int64_t E, int64_t k) { return T * k + E * 63; }

int64_t tern_moe_nblk(int64_t T, int64_t E, int64_t k, int64_t pad)
{
	int64_t cap = tern_moe_cap(T, E, k, pad);
	return 2 * ((cap + 63) / 64 * 64) + 2 * ((T * k + 63) / 64 * 64) + E + 1;
}

static int64_t gcd64(int64_t a, int64_t b)
{
	while (b) {
		int64_t t = a % b;
		a = b;
		b = t;
	}
	return a;
}

int64_t tern_moe_pad(const int64_t *w, int n)
{
	int64_t p = 1;
	for (int i = 0; i < n; i++) {
		int64_t need = 64 / gcd64(64, w[i]); /* rows · w · 4 bytes ≡ 0 (mod 256) */
		p = p / gcd64(p, need) * need;
	}
	return p;
}

enum tern_status tern_moe_route_alloc(int64_t T, int64_t E, int64_t k, int64_t pad,
				      struct tern_moe_route **out)
{
	*out = NULL;
	struct tern_moe_route *r = tern_calloc(1, sizeof *r);
	if (!r)
		return tern_fail(TERN_E_NOMEM, "moe: out of host memory");
	r->T = T, r->E = E, r->k = k, r->pad = pad;
	r->cap = tern_moe_cap(T, E, k, pad);
	r->icap = tern_moe_icap(T, E, k);
	r->prob = tern_malloc((size_t)(T * E) * sizeof *r->prob);
	r->sel = tern_malloc((size_t)(T * k) * sizeof *r->sel);
	r->topv = tern_malloc((size_t)(T * k) * sizeof *r->topv);
	r->w = tern_malloc((size_t)(T * k) * sizeof *r->w);
	r->pos = tern_malloc((size_t)(T * k) * sizeof *r->pos);
	r->cnt = tern_calloc((size_t)E, sizeof *r->cnt);
	r->off = tern_calloc((size_t)E, sizeof *r->off);
	r->ioff = tern_calloc((size_t)E, sizeof *r->ioff);
	r->idx = tern_calloc((size_t)r->icap, sizeof *r->idx);
	r->wrow = tern_calloc((size_t)r->icap, sizeof *r->wrow);
	r->dpos = tern_malloc((size_t)(T * k) * sizeof *r->dpos);
	int64_t at = 0;
	r->b_dtok = at, at += (r->cap + 63) / 64 * 64;
	r->b_dwt = at, at += (r->cap + 63) / 64 * 64;
	r->b_srow = at, at += (T * k + 63) / 64 * 64;
	r->b_sw = at, at += (T * k + 63) / 64 * 64;
	r->b_goff = at, at += E + 1;
	r->nblk = at; /* = tern_moe_nblk */
	r->blk = tern_calloc((size_t)at, sizeof *r->blk);
	if (!r->prob || !r->sel || !r->topv || !r->w || !r->pos || !r->cnt || !r->off || !r->ioff ||
	    !r->idx || !r->wrow || !r->dpos || !r->blk) {
		tern_moe_route_free(r);
		return tern_fail(TERN_E_NOMEM, "moe: out of host memory");
	}
	*out = r;
	return TERN_OK;
}

void tern_moe_route_free(struct tern_moe_route *r)
{
	if (!r)
		return;
	free(r->prob);
	free(r->sel);
	free(r->topv);
	free(r->w);
	free(r->pos);
	free(r->cnt);
	free(r->off);
	free(r->ioff);
	free(r->idx);
	free(r->wrow);
	free(r->dpos);
	free(r->blk);
	free(r);
}

void tern_moe_route(struct tern_moe_route *r, const float *logits, int64_t T, bool norm_topk)
{
	int64_t E = r->E, k = r->k;
	memset(r->cnt, 0, (size_t)E * sizeof *r->cnt);
	for (int64_t t = 0; t < T; t++) {
		const float *x = logits + t * E;
		float *p = r->prob + t * E, mx = x[0], sum = 0;
		for (int64_t e = 1; e < E; e++)
			mx = x[e] > mx ? x[e] : mx;
		for (int64_t e = 0; e < E; e++) {
			p[e] = expf(x[e] - mx);
			sum += p[e];
		}
		for (int64_t e = 0; e < E; e++)
			p[e] = p[e] / sum;
		/* top k: the largest, lower index first among equals */
		int32_t *sel = r->sel + t * k;
		float *v = r->topv + t * k, s = 0;
		for (int64_t j = 0; j < k; j++) {
			int32_t best = -1;
			for (int64_t e = 0; e < E; e++) {
				bool taken = false;
				for (int64_t i = 0; i < j; i++)
					taken |= sel[i] == e;
				if (!taken && (best < 0 || p[e] > p[best]))
					best = (int32_t)e;
			}
			sel[j] = best;
			v[j] = p[best];
			s += v[j];
			r->cnt[best]++;
		}
		for (int64_t j = 0; j < k; j++)
			r->w[t * k + j] = norm_topk ? v[j] / s : v[j];
	}
	/* the grouped layout */
	int64_t o = 0, io = 0;
	for (int64_t e = 0; e < E; e++) {
		r->off[e] = o;
		r->ioff[e] = io;
		o += (r->cnt[e] + r->pad - 1) / r->pad * r->pad;
		io += (r->cnt[e] + 63) / 64 * 64;
	}
	memset(r->idx, 0, (size_t)r->icap * sizeof *r->idx);
	memset(r->wrow, 0, (size_t)r->icap * sizeof *r->wrow);
	int64_t *fill = r->cnt; /* counted again while filling: tokens ascending per expert */
	memset(fill, 0, (size_t)E * sizeof *fill);
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; j < k; j++) {
			int32_t e = r->sel[t * k + j];
			int64_t at = r->ioff[e] + fill[e]++;
			r->idx[at] = (int32_t)t;
			r->wrow[at] = r->w[t * k + j];
			r->pos[t * k + j] = (int32_t)at;
		}
	/* the grouped block: data rows, expert offsets, the slots in ascending expert order */
	int32_t *dtok = r->blk + r->b_dtok, *goff = r->blk + r->b_goff, *srow = r->blk + r->b_srow;
	float *dwt = (float *)(void *)(r->blk + r->b_dwt), *sw = (float *)(void *)(r->blk + r->b_sw);
	memset(r->blk, 0, (size_t)r->nblk * sizeof *r->blk);
	for (int64_t e = 0; e < E; e++)
		goff[e] = (int32_t)r->off[e];
	goff[E] = (int32_t)o;
	r->rows = o;
	for (int64_t e = 0; e < E; e++)
		for (int64_t j = 0; j < r->cnt[e]; j++) {
			int32_t t = r->idx[r->ioff[e] + j];
			dtok[r->off[e] + j] = t;
			dwt[r->off[e] + j] = r->wrow[r->ioff[e] + j];
		}
	for (int64_t t = 0; t < T; t++)
		for (int64_t j = 0; j < k; j++) {
			int32_t e = r->sel[t * k + j];
			int64_t row = r->off[e] + (r->pos[t * k + j] - r->ioff[e]), s = 0;
			r->dpos[t * k + j] = (int32_t)row;
			for (int64_t i = 0; i < k; i++) /* the choices of lower experts come first */
				s += r->sel[t * k + i] < e;
			srow[s * T + t] = (int32_t)row;
			sw[s * T + t] = r->w[t * k + j];
		}
}

void tern_moe_route_bwd(const struct tern_moe_route *r, const float *dwrow, bool data_rows, int64_t T,
			bool norm_topk, const double *gp, const int32_t *seg, float *dlogits)
{
	int64_t E = r->E, k = r->k;
	const int32_t *pos = data_rows ? r->dpos : r->pos;
	for (int64_t t = 0; t < T; t++) {
		const float *p = r->prob + t * E, *v = r->topv + t * k;
		float *dl = dlogits + t * E;
		double dp[4096]; /* E <= 4096 (config.c) */
		bool aux = gp && seg[t] >= 0;
		for (int64_t e = 0; e < E; e++)
			dp[e] = aux ? gp[e] : 0.0;
		double s = 0, sdv = 0;
		for (int64_t j = 0; j < k; j++) {
			s += v[j];
			sdv += (double)dwrow[pos[t * k + j]] * v[j];
		}
		for (int64_t j = 0; j < k; j++) {
			double dw = dwrow[pos[t * k + j]];
			/* w_j = v_j / s: dv_j = dw_j / s − Σ_i dw_i v_i / s² */
			dp[r->sel[t * k + j]] += norm_topk ? dw / s - sdv / (s * s) : dw;
		}
		double pdp = 0;
		for (int64_t e = 0; e < E; e++)
			pdp += p[e] * dp[e];
		for (int64_t e = 0; e < E; e++)
			dl[e] = (float)(p[e] * (dp[e] - pdp));
	}
}

void tern_moe_aux_add(const struct tern_moe_route *r, int64_t T, const int32_t *seg, double *cnt,
		      double *prob, double *rows)
{
	int64_t E = r->E, k = r->k;
	for (int64_t t = 0; t < T; t++) {
		if (seg[t] < 0)
			continue;
		*rows += 1;
		for (int64_t e = 0; e < E; e++)
			prob[e] += r->prob[t * E + e];
		for (int64_t j = 0; j < k; j++)
			cnt[r->sel[t * k + j]] += 1;
	}
}

double tern_moe_aux(int64_t E, const double *cnt, const double *prob, double rows, double coef, double *gp)
{
	double s = 0;
	for (int64_t e = 0; e < E; e++) {
		s += cnt[e] * prob[e];
		gp[e] = rows > 0 ? coef * (double)E * cnt[e] / (rows * rows) : 0.0;
	}
	return rows > 0 ? (double)E * s / (rows * rows) : 0.0;
}
