/* test_ops: causal GQA attention forward/backward (training-math.md "Attention") against a
 * double-precision oracle that builds each row's softmax explicitly, and, on the CPU backend,
 * the backward against central finite differences of L = Σ g·o. Included by tests/test_ops.c. */
#ifndef TERN_TEST_OPS_ATTENTION_H
#define TERN_TEST_OPS_ATTENTION_H

#include "test_ops_harness.h"

/* One attention case: inputs, and the oracle's outputs and gradients in double. */
struct attn_case {
	struct tern_attn_args a;
	float *q, *k, *v, *g; /* g: dL/do of the linear loss L = Σ g·o */
	int32_t *seg;
	float *of, *lsef;     /* the oracle's o and lse rounded to fp32: inputs of the backward */
	double *o, *lse;      /* oracle forward */
	double *dq, *dk, *dv; /* oracle backward with dout = g */
	double *dqm, *dkm;    /* magnitudes of the terms dS = P (dP - Dr) cancels (see cmp_mag) */
};

static void attn_case_free(struct attn_case *ac)
{
	free(ac->q);
	free(ac->k);
	free(ac->v);
	free(ac->g);
	free(ac->seg);
	free(ac->of);
	free(ac->lsef);
	free(ac->o);
	free(ac->lse);
	free(ac->dq);
	free(ac->dqm);
	free(ac->dkm);
	free(ac->dk);
	free(ac->dv);
	memset(ac, 0, sizeof *ac);
}

static bool attn_sees(const struct attn_case *ac, int64_t i, int64_t j)
{
	return j <= i && ac->seg[j] == ac->seg[i] && (ac->a.window == 0 || i - j < ac->a.window);
}

/* The oracle: for each query row the full probability row p[T] (double), then o, lse and the
 * gradients by the textbook formulas (Dr from the fp32 o the backends get). */
static bool attn_oracle(struct attn_case *ac)
{
	const struct tern_attn_args *a = &ac->a;
	int64_t T = a->T, H = a->H, Hkv = a->Hkv, Dh = a->Dh, grp = H / Hkv;
	double *p = dvec(T), *dp = dvec(T), *dpm = dvec(T);
	if (!p || !dp || !dpm) {
		free(p);
		free(dp);
		free(dpm);
		return false;
	}
	memset(ac->dk, 0, (size_t)(T * Hkv * Dh) * sizeof(double));
	memset(ac->dkm, 0, (size_t)(T * Hkv * Dh) * sizeof(double));
	memset(ac->dv, 0, (size_t)(T * Hkv * Dh) * sizeof(double));
	for (int64_t h = 0; h < H; h++) {
		int64_t gk = h / grp;
		for (int64_t i = 0; i < T; i++) {
			const float *qi = ac->q + (i * H + h) * Dh;
			double m = -INFINITY, l = 0.0;
			for (int64_t j = 0; j < T; j++) {
				p[j] = -INFINITY;
				if (!attn_sees(ac, i, j))
					continue;
				double s = 0.0;
				for (int64_t d = 0; d < Dh; d++)
					s += (double)qi[d] * ac->k[(j * Hkv + gk) * Dh + d];
				p[j] = s * (double)a->scale;
				m = fmax(m, p[j]);
			}
			for (int64_t j = 0; j < T; j++) {
				p[j] = p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
				l += p[j];
			}
			ac->lse[h * T + i] = m + log(l);
			ac->lsef[h * T + i] = (float)ac->lse[h * T + i];
			double *oi = ac->o + (i * H + h) * Dh;
			for (int64_t d = 0; d < Dh; d++) {
				double s = 0.0;
				for (int64_t j = 0; j < T; j++)
					s += p[j] / l * ac->v[(j * Hkv + gk) * Dh + d];
				oi[d] = s;
				ac->of[(i * H + h) * Dh + d] = (float)s;
			}
			/* backward of this row */
			const float *gi = ac->g + (i * H + h) * Dh;
			double Dr = 0.0;
			for (int64_t d = 0; d < Dh; d++)
				Dr += (double)gi[d] * ac->of[(i * H + h) * Dh + d];
			for (int64_t j = 0; j < T; j++) {
				p[j] /= l;
				double s = 0.0;
				for (int64_t d = 0; d < Dh; d++)
					s += (double)gi[d] * ac->v[(j * Hkv + gk) * Dh + d];
				dp[j] = p[j] * (s - Dr); /* dS */
				dpm[j] = p[j] * (fabs(s) + fabs(Dr));
			}
			for (int64_t d = 0; d < Dh; d++) {
				double s = 0.0, sm = 0.0;
				for (int64_t j = 0; j < T; j++) {
					s += dp[j] * ac->k[(j * Hkv + gk) * Dh + d];
					sm += dpm[j] * fabs((double)ac->k[(j * Hkv + gk) * Dh + d]);
				}
				ac->dq[(i * H + h) * Dh + d] = s * (double)a->scale;
				ac->dqm[(i * H + h) * Dh + d] = sm * (double)a->scale;
			}
			for (int64_t j = 0; j < T; j++)
				for (int64_t d = 0; d < Dh; d++) {
					ac->dv[(j * Hkv + gk) * Dh + d] += p[j] * gi[d];
					ac->dk[(j * Hkv + gk) * Dh + d] += dp[j] * qi[d] * (double)a->scale;
					ac->dkm[(j * Hkv + gk) * Dh + d] +=
						dpm[j] * fabs((double)qi[d]) * (double)a->scale;
				}
		}
	}
	free(p);
	free(dp);
	free(dpm);
	return true;
}

/* Random inputs; packed 1: segments of 1..6 tokens (seg = 0,0,0,1,1,2,...); 2: a micro-batch's rows
 * (below); 0: one segment. */
static bool attn_case_make_prec(struct attn_case *ac, struct rng *r, int64_t T, int64_t H, int64_t Hkv,
				int64_t Dh, int64_t window, int packed, enum tern_dtype prec, double gamp)
{
	memset(ac, 0, sizeof *ac);
	ac->a = (struct tern_attn_args){T, H, Hkv, Dh, window, (float)(1.0 / sqrt((double)Dh)), prec, 0.0};
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	ac->q = fvec(nq), ac->k = fvec(nk), ac->v = fvec(nk), ac->g = fvec(nq);
	ac->seg = calloc((size_t)T + 1, sizeof(int32_t));
	ac->of = fvec(nq), ac->lsef = fvec(H * T);
	ac->o = dvec(nq), ac->lse = dvec(H * T), ac->dq = dvec(nq), ac->dk = dvec(nk), ac->dv = dvec(nk);
	ac->dqm = dvec(nq), ac->dkm = dvec(nk);
	if (!ac->q || !ac->k || !ac->v || !ac->g || !ac->seg || !ac->of || !ac->lsef || !ac->o || !ac->lse ||
	    !ac->dqm || !ac->dkm || !ac->dq || !ac->dk || !ac->dv) {
		attn_case_free(ac);
		return false;
	}
	/* scores of a few units, so the softmax is neither flat nor one-hot */
	fill_sym(r, ac->q, nq, 2.0);
	fill_sym(r, ac->k, nk, 2.0);
	fill_sym(r, ac->v, nk, 1.0);
	fill_sym(r, ac->g, nq, gamp);
	int32_t s = 0;
	if (packed == 2) {
		/* a micro-batch: 4 rows of T/4 tokens, each of samples of 10..60 tokens with ids
		 * unique across rows but rows in a shuffled order (as the trainer stages them), the last
		 * row's second half padding (-1) */
		int64_t S = T / 4;
		static const int32_t order[4] = {2, 0, 3, 1};
		for (int64_t i = 0, left = 0; i < T; i++) {
			int64_t row = i / S < 3 ? i / S : 3, at = i - row * S;
			if (at == 0)
				s = order[row] * 1000, left = 0;
			if (left == 0)
				left = 10 + (int64_t)(rng_unif(r) * 51.0), s++;
			left--;
			ac->seg[i] = row == 3 && at >= (T - 3 * S) / 2 ? -1 : s;
		}
	} else
		for (int64_t i = 0, left = 0; i < T; i++) {
			if (packed && left == 0) {
				left = 1 + (int64_t)(rng_unif(r) * 6.0);
				s += i > 0;
			}
			left -= packed != 0;
			ac->seg[i] = s;
		}
	if (!attn_oracle(ac)) {
		attn_case_free(ac);
		return false;
	}
	return true;
}

static bool attn_case_make(struct attn_case *ac, struct rng *r, int64_t T, int64_t H, int64_t Hkv, int64_t Dh,
			   int64_t window, int packed)
{
	return attn_case_make_prec(ac, r, T, H, Hkv, Dh, window, packed, TERN_F32, 1.0);
}

static const char *attn_desc(char *buf, size_t n, int64_t T, int64_t H, int64_t Hkv, int64_t Dh,
			     int64_t window, int packed)
{
	snprintf(buf, n, "T=%lld H=%lld/%lld Dh=%lld w=%lld%s", (long long)T, (long long)H, (long long)Hkv,
		 (long long)Dh, (long long)window,
		 packed == 2 ? " rows"
		 : packed    ? " packed"
			     : "");
	return buf;
}

/* The tolerance at precision prec. F16: q, k, v, P, dO and dS rounded to f16 (relative 2^-11
 * each) around an fp32 softmax of scores of a few units: about 1e-3 normwise, held to 5e-3; a
 * wrong tile, mask or scale is off by O(1). */
#define TOL_ATTN_F16 5e-3
/* BF16: the same roundings at 2^-8 relative each (8 bits of mantissa against f16's 11): eight
 * times F16's bound. */
#define TOL_ATTN_BF16 4e-2
static double attn_tol(enum tern_dtype prec)
{
	return prec == TERN_F16 ? TOL_ATTN_F16 : prec == TERN_BF16 ? TOL_ATTN_BF16 : TOL_F32;
}
static const char *attn_prec_name(enum tern_dtype prec)
{
	return prec == TERN_F16 ? " f16" : prec == TERN_BF16 ? " bf16" : "";
}

static void check_attention_prec(struct suite *s, int64_t T, int64_t H, int64_t Hkv, int64_t Dh,
				 int64_t window, int packed, enum tern_dtype prec)
{
	struct chk c;
	char desc[96];
	chk_begin(&c, s, "attention", "%s%s", attn_desc(desc, sizeof desc, T, H, Hkv, Dh, window, packed),
		  attn_prec_name(prec));
	if (skip_unsupported(&c, TERN_OP_ATTENTION, TERN_F32))
		return;
	struct attn_case ac;
	if (!attn_case_make_prec(&ac, &c.r, T, H, Hkv, Dh, window, packed, prec, 1.0)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	struct dten *q = dt_new(&c, "q", (size_t)nq * 4, ac.q), *k = dt_new(&c, "k", (size_t)nk * 4, ac.k);
	struct dten *v = dt_new(&c, "v", (size_t)nk * 4, ac.v),
		    *sg = dt_new(&c, "seg", (size_t)T * 4, ac.seg);
	struct dten *o = dt_nan(&c, "o", nq), *lse = dt_nan(&c, "lse", H * T);
	if (!q || !k || !v || !sg || !o || !lse)
		goto out;
	struct tern_backend *be = s->be;
	if (bad(&c, tern_attention(be, o->v, lse->v, q->v, k->v, v->v, sg->v, &ac.a), "attention"))
		goto out;
	expect(&c, o, ac.o, nq, attn_tol(prec));
	expect(&c, lse, ac.lse, H * T, attn_tol(prec));
	dt_unchanged(&c, q, ac.q);
	dt_unchanged(&c, k, ac.k);
	dt_unchanged(&c, v, ac.v);
	dt_unchanged(&c, sg, ac.seg);
out:
	attn_case_free(&ac);
	chk_end(&c);
}

static void check_attention(struct suite *s, int64_t T, int64_t H, int64_t Hkv, int64_t Dh, int64_t window,
			    int packed)
{
	check_attention_prec(s, T, H, Hkv, Dh, window, packed, TERN_F32);
}

/* gamp: the magnitude of dout (1e-6 is a gradient's: the f16 path must scale it) */
static void check_attention_bwd_prec(struct suite *s, int64_t T, int64_t H, int64_t Hkv, int64_t Dh,
				     int64_t window, int packed, enum tern_dtype prec, double gamp)
{
	struct chk c;
	char desc[96];
	chk_begin(&c, s, "attn_bwd", "%s%s dout x%g",
		  attn_desc(desc, sizeof desc, T, H, Hkv, Dh, window, packed), attn_prec_name(prec), gamp);
	if (skip_unsupported(&c, TERN_OP_ATTENTION_BWD, TERN_F32))
		return;
	struct attn_case ac;
	if (!attn_case_make_prec(&ac, &c.r, T, H, Hkv, Dh, window, packed, prec, gamp)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	struct dten *q = dt_new(&c, "q", (size_t)nq * 4, ac.q), *k = dt_new(&c, "k", (size_t)nk * 4, ac.k);
	struct dten *v = dt_new(&c, "v", (size_t)nk * 4, ac.v),
		    *sg = dt_new(&c, "seg", (size_t)T * 4, ac.seg);
	struct dten *o = dt_new(&c, "o", (size_t)nq * 4, ac.of),
		    *lse = dt_new(&c, "lse", (size_t)(H * T) * 4, ac.lsef);
	struct dten *dout = dt_new(&c, "dout", (size_t)nq * 4, ac.g);
	struct dten *dq = dt_nan(&c, "dq", nq), *dk = dt_nan(&c, "dk", nk), *dv = dt_nan(&c, "dv", nk);
	if (!q || !k || !v || !sg || !o || !lse || !dout || !dq || !dk || !dv)
		goto out;
	struct tern_backend *be = s->be;
	if (bad(&c,
		tern_attention_bwd(be, dq->v, dk->v, dv->v, dout->v, q->v, k->v, v->v, o->v, lse->v, sg->v,
				   &ac.a),
		"attention_bwd"))
		goto out;
	expect_mag(&c, dq, ac.dq, ac.dqm, nq, attn_tol(prec));
	expect_mag(&c, dk, ac.dk, ac.dkm, nk, attn_tol(prec));
	expect(&c, dv, ac.dv, nk, attn_tol(prec));
	dt_unchanged(&c, q, ac.q);
	dt_unchanged(&c, k, ac.k);
	dt_unchanged(&c, v, ac.v);
	dt_unchanged(&c, o, ac.of);
	dt_unchanged(&c, lse, ac.lsef);
	dt_unchanged(&c, dout, ac.g);
	dt_unchanged(&c, sg, ac.seg);
out:
	attn_case_free(&ac);
	chk_end(&c);
}

static void check_attention_bwd(struct suite *s, int64_t T, int64_t H, int64_t Hkv, int64_t Dh,
				int64_t window, int packed)
{
	check_attention_bwd_prec(s, T, H, Hkv, Dh, window, packed, TERN_F32, 1.0);
}

/* L = Σ g·o after uploading x (one of q, k, v) to t. */
static bool attn_loss(struct chk *c, struct dten *t, const float *x, struct dten *o, struct dten *lse,
		      struct dten *q, struct dten *k, struct dten *v, struct dten *sg,
		      const struct attn_case *ac, double *L)
{
	struct tern_backend *be = c->s->be;
	int64_t n = ac->a.T * ac->a.H * ac->a.Dh;
	float *h = fvec(n);
	if (!h) {
		fail(c, "out of host memory");
		return false;
	}
	bool ok = !bad(c, be->vt->upload(be, t->v, x), "upload") &&
		  !bad(c, tern_attention(be, o->v, lse->v, q->v, k->v, v->v, sg->v, &ac->a), "attention") &&
		  dt_get(c, o, h);
	double s = 0.0;
	for (int64_t i = 0; ok && i < n; i++)
		s += (double)ac->g[i] * h[i];
	free(h);
	*L = s;
	return ok;
}

/* Central differences of L w.r.t. x[n] into fd. L is linear in v (exact at any step) but not in
 * q and k: there a Richardson step, (4 D(h/2) − D(h)) / 3, cancels the h² term. */
static bool attn_fd(struct chk *c, struct dten *t, float *x, int64_t n, bool linear, struct dten *o,
		    struct dten *lse, struct dten *q, struct dten *k, struct dten *v, struct dten *sg,
		    const struct attn_case *ac, double *fd)
{
	const float hs[2] = {linear ? 0.5f : 0.0625f, 0.03125f};
	for (int64_t j = 0; j < n; j++) {
		float keep = x[j];
		double D[2];
		for (int e = 0; e < (linear ? 1 : 2); e++) {
			float xp = keep + hs[e], xm = keep - hs[e];
			double Lp, Lm;
			x[j] = xp;
			if (!attn_loss(c, t, x, o, lse, q, k, v, sg, ac, &Lp))
				return false;
			x[j] = xm;
			if (!attn_loss(c, t, x, o, lse, q, k, v, sg, ac, &Lm))
				return false;
			D[e] = (Lp - Lm) / ((double)xp - (double)xm);
		}
		x[j] = keep;
		fd[j] = linear ? D[0] : (4.0 * D[1] - D[0]) / 3.0;
	}
	return !bad(c, c->s->be->vt->upload(c->s->be, t->v, x), "upload");
}

/* attention_bwd(dout = g) against finite differences of the CPU forward. */
static void check_fd_attention(struct suite *s, int64_t T, int64_t H, int64_t Hkv, int64_t Dh, int64_t window,
			       int packed)
{
	struct chk c;
	char desc[96];
	chk_begin(&c, s, "fd", "attn_bwd %s", attn_desc(desc, sizeof desc, T, H, Hkv, Dh, window, packed));
	if (skip_unsupported(&c, TERN_OP_ATTENTION, TERN_F32) ||
	    skip_unsupported(&c, TERN_OP_ATTENTION_BWD, TERN_F32))
		return;
	struct attn_case ac;
	if (!attn_case_make(&ac, &c.r, T, H, Hkv, Dh, window, packed)) {
		fail(&c, "out of host memory");
		chk_end(&c);
		return;
	}
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	float *gq = fvec(nq), *gk = fvec(nk), *gv = fvec(nk);
	double *fq = dvec(nq), *fk = dvec(nk), *fv = dvec(nk);
	if (!gq || !gk || !gv || !fq || !fk || !fv) {
		fail(&c, "out of host memory");
		goto out;
	}
	struct dten *q = dt_new(&c, "q", (size_t)nq * 4, ac.q), *k = dt_new(&c, "k", (size_t)nk * 4, ac.k);
	struct dten *v = dt_new(&c, "v", (size_t)nk * 4, ac.v),
		    *sg = dt_new(&c, "seg", (size_t)T * 4, ac.seg);
	struct dten *o = dt_nan(&c, "o", nq), *lse = dt_nan(&c, "lse", H * T);
	struct dten *dout = dt_new(&c, "dout", (size_t)nq * 4, ac.g);
	struct dten *dq = dt_nan(&c, "dq", nq), *dk = dt_nan(&c, "dk", nk), *dv = dt_nan(&c, "dv", nk);
	if (!q || !k || !v || !sg || !o || !lse || !dout || !dq || !dk || !dv)
		goto out;
	struct tern_backend *be = s->be;
	if (bad(&c, tern_attention(be, o->v, lse->v, q->v, k->v, v->v, sg->v, &ac.a), "attention") ||
	    bad(&c,
		tern_attention_bwd(be, dq->v, dk->v, dv->v, dout->v, q->v, k->v, v->v, o->v, lse->v, sg->v,
				   &ac.a),
		"attention_bwd") ||
	    !dt_get(&c, dq, gq) || !dt_get(&c, dk, gk) || !dt_get(&c, dv, gv))
		goto out;
	if (!attn_fd(&c, q, ac.q, nq, false, o, lse, q, k, v, sg, &ac, fq) ||
	    !attn_fd(&c, k, ac.k, nk, false, o, lse, q, k, v, sg, &ac, fk) ||
	    !attn_fd(&c, v, ac.v, nk, true, o, lse, q, k, v, sg, &ac, fv))
		goto out;
	cmp(&c, "dq vs finite differences", gq, fq, nq, TOL_FD);
	cmp(&c, "dk vs finite differences", gk, fk, nk, TOL_FD);
	cmp(&c, "dv vs finite differences", gv, fv, nk, TOL_FD);
out:
	free(gq);
	free(gk);
	free(gv);
	free(fq);
	free(fk);
	free(fv);
	attn_case_free(&ac);
	chk_end(&c);
}

/* Bad arguments fail with the op and the tensor or size named, and write nothing. */
static void check_attention_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "attention: short seg, H %% Hkv");
	if (skip_unsupported(&c, TERN_OP_ATTENTION, TERN_F32))
		return;
	const int64_t T = 5, H = 3, Hkv = 3, Dh = 4;
	struct dten *q = dt_new(&c, "q", (size_t)(T * H * Dh) * 4, NULL);
	struct dten *o = dt_new(&c, "o", (size_t)(T * H * Dh) * 4, NULL);
	struct dten *lse = dt_new(&c, "lse", (size_t)(H * T) * 4, NULL);
	struct dten *sg = dt_new(&c, "seg", (size_t)(T - 1) * 4, NULL);
	if (!q || !o || !lse || !sg)
		goto out;
	struct tern_backend *be = s->be;
	struct tern_attn_args a = {T, H, Hkv, Dh, 0, 0.5f, TERN_F32, 0.0};
	enum tern_status st = tern_attention(be, o->v, lse->v, q->v, q->v, q->v, sg->v, &a);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "attention") || !strstr(tern_error(), "seg"))
		fail(&c, "short seg: got %s \"%s\"", tern_status_str(st), tern_error());
	a.Hkv = 2;
	st = tern_attention(be, o->v, lse->v, q->v, q->v, q->v, q->v, &a);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "attention") || !strstr(tern_error(), "Hkv"))
		fail(&c, "H=3 Hkv=2: got %s \"%s\"", tern_status_str(st), tern_error());
	dt_get(&c, o, NULL);
	dt_get(&c, lse, NULL);
out:
	chk_end(&c);
}

/* bf16 (CUDA's tensor-core kernels take Dh 16, 32, 64, 96 and 128; the others compute in fp32 at
 * bf16): the f16 cases, the other head sizes, tiny gradients; causal interiors of whole 64-key
 * tiles without and with a window longer than a tile (CUDA skips their mask), GQA groups of 2
 * and 4 (CUDA splits dK/dV over a group's heads); a micro-batch's rows (packed 2: CUDA skips the
 * tiles of other rows by their segment bounds), with a window too; at Dh 128 (CUDA's default
 * kernels take 128 query rows per block, 32 per warp) one segment with a ragged last block, and
 * rows of 120 and 83 tokens, whose ends fall inside a block and inside a warp's 32 rows; windows
 * shorter than the 32 key rows of TERN_CUDA_FA=2's dK/dV warps (at Dh 128 with packed samples; at
 * Dh 64 with a group of 3, one chunk: dK/dV written without partials) */
static void check_attention_bf16(struct suite *s)
{
	static const int64_t bshapes[][6] = {
		{33, 4, 1, 64, 0, 0},   {19, 3, 3, 128, 0, 0},    {130, 4, 2, 64, 0, 1},
		{300, 4, 1, 128, 0, 1}, {200, 2, 2, 64, 50, 0},   {257, 8, 2, 128, 70, 1},
		{70, 2, 1, 32, 20, 1},  {100, 2, 1, 16, 37, 0},   {90, 3, 1, 96, 0, 1},
		{256, 4, 2, 64, 0, 0},  {200, 4, 1, 128, 150, 0}, {320, 4, 2, 64, 0, 2},
		{512, 2, 1, 128, 0, 2}, {400, 4, 2, 64, 90, 2},   {300, 4, 2, 128, 0, 0},
		{480, 4, 1, 128, 0, 2}, {333, 2, 1, 128, 100, 2}, {150, 4, 2, 128, 20, 1},
		{180, 6, 2, 64, 12, 0},
	};
	for (size_t i = 0; i < sizeof bshapes / sizeof bshapes[0]; i++) {
		const int64_t *h = bshapes[i];
		check_attention_prec(s, h[0], h[1], h[2], h[3], h[4], (int)h[5], TERN_BF16);
		check_attention_bwd_prec(s, h[0], h[1], h[2], h[3], h[4], (int)h[5], TERN_BF16, 1.0);
	}
	check_attention_bwd_prec(s, 130, 4, 2, 64, 0, true, TERN_BF16, 1e-6);
}

static void check_attention_all(struct suite *s)
{
	/* T, H, Hkv, Dh, window, packed: GQA ratios 1, 2, 4; T not a multiple of any tile; windows
	 * shorter and longer than a tile; packed samples (1), a micro-batch's rows (2); Dh from 6 to
	 * 256, two not multiples of 4 (the fp32 shaders' dot products take four elements at a time,
	 * the rest one by one: 6 in one chunk, 70 the second chunk's 6) */
	static const int64_t shapes[][6] = {
		{1, 1, 1, 8, 0, 0},    {7, 2, 2, 16, 0, 0},   {33, 4, 1, 64, 0, 0},   {40, 4, 4, 80, 5, 0},
		{50, 8, 2, 16, 0, 1},  {45, 4, 1, 8, 3, 1},   {70, 2, 1, 32, 20, 1},  {20, 2, 1, 256, 0, 1},
		{19, 3, 3, 128, 0, 0}, {130, 4, 2, 64, 0, 1}, {100, 2, 1, 16, 37, 0}, {260, 2, 1, 16, 0, 2},
		{23, 2, 1, 6, 0, 1},   {37, 4, 2, 70, 9, 0},
	};
	/* Vulkan's fp32 shaders, each on every shape it takes (vk_attention.c pick_attention): the
	 * device's default (lavapipe: attention_simple.comp), then with TERN_VK_VARIANT=tiled the
	 * register-blocked attention_rb.comp (Dh a multiple of 4 up to 128; 64-row tiles, so T = 130
	 * and 260 end in partial ones), its dK/dV pass with grouped heads split (the default: a head's
	 * shares, then their sums) and not (TERN_VK_ATTN_SPLIT=0), its two-chunk variants where
	 * Dh <= 64 (TERN_VK_ATTN_D64=0), and attention.comp's 16 x 16 tiles (TERN_VK_ATTN_RB=0) */
	static const char *const rb[][3] = {
		{NULL, NULL, NULL}, {"1", "1", "1"}, {"1", "0", "1"}, {"1", "1", "0"}, {"0", "1", "1"}};
	for (int v = 0; v < (s->is_cpu || strcmp(s->bname, "vulkan") ? 1 : 5); v++) {
		if (rb[v][0]) {
			setenv("TERN_VK_VARIANT", "tiled", 1);
			setenv("TERN_VK_ATTN_RB", rb[v][0], 1);
			setenv("TERN_VK_ATTN_SPLIT", rb[v][1], 1);
			setenv("TERN_VK_ATTN_D64", rb[v][2], 1);
			printf("-- attention: TERN_VK_VARIANT=tiled TERN_VK_ATTN_RB=%s TERN_VK_ATTN_SPLIT=%s "
			       "TERN_VK_ATTN_D64=%s\n",
			       rb[v][0], rb[v][1], rb[v][2]);
		}
		for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
			check_attention(s, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3],
					shapes[i][4], (int)shapes[i][5]);
		for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
			check_attention_bwd(s, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3],
					    shapes[i][4], (int)shapes[i][5]);
	}
	/* views on words but not on 16 bytes: the fp32 shaders that stage q, k, v, dO (and o) as
	 * vec4 must not take them (pick_attention: attention.comp's tiles instead) */
	if (!s->is_cpu && !strcmp(s->bname, "vulkan")) {
		static const int64_t sshapes[][6] = {
			{33, 4, 1, 64, 0, 0}, {130, 4, 2, 64, 0, 1}, {19, 3, 3, 128, 0, 0}};
		setenv("TERN_VK_VARIANT", "tiled", 1);
		unsetenv("TERN_VK_ATTN_RB");
		printf("-- attention: TERN_VK_VARIANT=tiled, views 4 bytes past a 16-byte boundary\n");
		dt_shift = 4;
		for (size_t i = 0; i < sizeof sshapes / sizeof sshapes[0]; i++) {
			const int64_t *h = sshapes[i];
			check_attention(s, h[0], h[1], h[2], h[3], h[4], (int)h[5]);
			check_attention_bwd(s, h[0], h[1], h[2], h[3], h[4], (int)h[5]);
		}
		dt_shift = 0;
	}
	unsetenv("TERN_VK_VARIANT");
	unsetenv("TERN_VK_ATTN_RB");
	unsetenv("TERN_VK_ATTN_SPLIT");
	unsetenv("TERN_VK_ATTN_D64");
	/* f16 (the tensor-core shaders take Dh 64 and 128): tiles with edges, GQA, windows, packed
	 * samples, a gradient-sized dout */
	static const int64_t hshapes[][6] = {
		{33, 4, 1, 64, 0, 0},   {19, 3, 3, 128, 0, 0},  {130, 4, 2, 64, 0, 1},
		{300, 4, 1, 128, 0, 1}, {200, 2, 2, 64, 50, 0}, {257, 8, 2, 128, 70, 1},
		{320, 4, 2, 64, 0, 2},
	};
	for (size_t i = 0; i < sizeof hshapes / sizeof hshapes[0]; i++) {
		const int64_t *h = hshapes[i];
		check_attention_prec(s, h[0], h[1], h[2], h[3], h[4], (int)h[5], TERN_F16);
		check_attention_bwd_prec(s, h[0], h[1], h[2], h[3], h[4], (int)h[5], TERN_F16, 1.0);
	}
	check_attention_bwd_prec(s, 130, 4, 2, 64, 0, true, TERN_F16, 1e-6);
	check_attention_bf16(s);
	check_attention_errors(s);
	if (s->is_cpu) {
		check_fd_attention(s, 6, 2, 1, 4, 0, false);
		check_fd_attention(s, 9, 4, 1, 3, 3, true);
		check_fd_attention(s, 7, 2, 2, 5, 0, true);
	}
}

#endif
