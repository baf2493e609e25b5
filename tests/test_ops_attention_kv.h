/* test_ops: attention over a KV cache (backend.h, attention_kv) against a double-precision oracle
 * that builds each query row's softmax explicitly. The cache views are longer than Tk rows and
 * the rows past Tk hold NaN, so a backend reading beyond the cache's filled part fails. Included
 * by tests/test_ops.c. */
#ifndef TERN_TEST_OPS_ATTENTION_KV_H
#define TERN_TEST_OPS_ATTENTION_KV_H

#include "test_ops_harness.h"

/* o[Tq,H,Dh] in double: query i (token Tk - Tq + i) over the keys it sees. */
static void attn_kv_oracle(const struct tern_attn_kv_args *a, const float *q, const float *k, const float *v,
			   double *o, double *p)
{
	int64_t grp = a->H / a->Hkv, Dh = a->Dh;
	for (int64_t i = 0; i < a->Tq; i++)
		for (int64_t h = 0; h < a->H; h++) {
			int64_t pos = a->Tk - a->Tq + i, g = h / grp;
			double mx = -INFINITY, sum = 0.0;
			for (int64_t j = 0; j <= pos; j++) {
				p[j] = -INFINITY;
				if (a->window > 0 && pos - j >= a->window)
					continue;
				double s = 0.0;
				for (int64_t d = 0; d < Dh; d++)
					s += (double)q[(i * a->H + h) * Dh + d] *
					     (double)k[(j * a->Hkv + g) * Dh + d];
				p[j] = s * (double)a->scale;
				mx = p[j] > mx ? p[j] : mx;
			}
			for (int64_t j = 0; j <= pos; j++)
				sum += p[j] = exp(p[j] - mx);
			for (int64_t d = 0; d < Dh; d++) {
				double acc = 0.0;
				for (int64_t j = 0; j <= pos; j++)
					acc += p[j] * (double)v[(j * a->Hkv + g) * Dh + d];
				o[(i * a->H + h) * Dh + d] = acc / sum;
			}
		}
}

static void check_attention_kv(struct suite *s, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv, int64_t Dh,
			       int64_t window)
{
	struct chk c;
	chk_begin(&c, s, "attention_kv", "Tq=%lld Tk=%lld H=%lld Hkv=%lld Dh=%lld%s%.0lld", (long long)Tq,
		  (long long)Tk, (long long)H, (long long)Hkv, (long long)Dh, window ? " window=" : "",
		  (long long)window);
	if (skip_unsupported(&c, TERN_OP_ATTENTION_KV, TERN_F32))
		return;
	struct tern_attn_kv_args a = {Tq, Tk, H, Hkv, Dh, window, (float)(1.0 / sqrt((double)Dh))};
	int64_t cap = Tk + 3, nq = Tq * H * Dh, nk = cap * Hkv * Dh;
	float *q = fvec(nq), *k = fvec(nk), *v = fvec(nk);
	double *o = dvec(nq), *p = dvec(Tk);
	bool not_run = false;
	if (!q || !k || !v || !o || !p) {
		fail(&c, "out of host memory");
		goto out;
	}
	fill_sym(&c.r, q, nq, 2.0);
	fill_sym(&c.r, k, nk, 2.0);
	fill_sym(&c.r, v, nk, 1.0);
	for (int64_t i = Tk * Hkv * Dh; i < nk; i++) /* the cache's empty rows */
		k[i] = v[i] = NAN;
	attn_kv_oracle(&a, q, k, v, o, p);
	struct dten *dq = dt_new(&c, "q", (size_t)nq * 4, q), *dk = dt_new(&c, "k", (size_t)nk * 4, k);
	struct dten *dv = dt_new(&c, "v", (size_t)nk * 4, v), *dout = dt_nan(&c, "o", nq);
	if (!dq || !dk || !dv || !dout)
		goto out;
	enum tern_status st = tern_attention_kv(s->be, dout->v, dq->v, dk->v, dv->v, &a);
	not_run = st == TERN_E_UNSUPPORTED && Dh > 256; /* Vulkan's shader takes heads up to 256 */
	if (not_run || bad(&c, st, "attention_kv"))
		goto out;
	expect(&c, dout, o, nq, TOL_F32);
	dt_unchanged(&c, dq, q);
	dt_unchanged(&c, dk, k);
	dt_unchanged(&c, dv, v);
out:
	free(q);
	free(k);
	free(v);
	free(o);
	free(p);
	if (not_run)
		chk_not_run(&c, "the backend takes Dh <= 256");
	else
		chk_end(&c);
}

/* Bad arguments fail with the op and what is wrong named, and write nothing. */
static void check_attention_kv_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "errors", "attention_kv: Tk < Tq, short k");
	if (skip_unsupported(&c, TERN_OP_ATTENTION_KV, TERN_F32))
		return;
	const int64_t H = 2, Dh = 4;
	struct dten *o = dt_nan(&c, "o", 3 * H * Dh), *q = dt_new(&c, "q", (size_t)(3 * H * Dh) * 4, NULL);
	if (!o || !q)
		goto out;
	struct tern_attn_kv_args a = {3, 2, H, H, Dh, 0, 0.5f};
	enum tern_status st = tern_attention_kv(s->be, o->v, q->v, q->v, q->v, &a);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "attention_kv") || !strstr(tern_error(), "Tq=3"))
		fail(&c, "Tk=2 < Tq=3: got %s \"%s\"", tern_status_str(st), tern_error());
	a.Tq = 1, a.Tk = 4; /* k needs 4 rows of H*Dh floats: q's 3 are short */
	st = tern_attention_kv(s->be, o->v, q->v, q->v, q->v, &a);
	if (st != TERN_E_INVALID || !strstr(tern_error(), "attention_kv") || !strstr(tern_error(), "k view"))
		fail(&c, "short k: got %s \"%s\"", tern_status_str(st), tern_error());
	float *h = fvec(3 * H * Dh);
	if (h && dt_get(&c, o, h) && !isnan(h[0]))
		fail(&c, "o was written by a failed call");
	free(h);
out:
	chk_end(&c);
}

static void check_attention_kv_all(struct suite *s)
{
	/* Tq, Tk, H, Hkv, Dh, window: a decode step (Tq 1) at several cache lengths, prefill
	 * (Tq = Tk), a chunk after a prefix; GQA 1, 2, 4; tiles of 64 keys with edges; windows; Dh
	 * from 4 to 320 */
	static const int64_t shapes[][6] = {
		{1, 1, 1, 1, 8, 0},
		{1, 37, 4, 2, 16, 0},
		{5, 5, 2, 1, 64, 0},
		{3, 70, 4, 4, 32, 20},
		{1, 129, 8, 2, 128, 0},
		{7, 130, 2, 1, 256, 9},
		{64, 64, 2, 2, 4, 0},
		{0, 4, 2, 1, 8, 0},
		{2, 200, 4, 1, 80, 65},
		/* a decode step split over many parts of the keys (CUDA: 44), and parts left empty by a
		 * window shorter than the parts */
		{1, 700, 4, 2, 64, 0},
		{1, 300, 2, 1, 32, 7},
		/* CUDA: a head of 320 (16 column groups a lane, 3 per thread in the v sums); 2,048 rows
		 * of one part each, walking 300 keys in three chunks */
		{1, 40, 2, 1, 320, 0},
		{16, 300, 128, 128, 8, 0},
	};
	for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
		check_attention_kv(s, shapes[i][0], shapes[i][1], shapes[i][2], shapes[i][3], shapes[i][4],
				   shapes[i][5]);
	check_attention_kv_errors(s);
}

#endif
