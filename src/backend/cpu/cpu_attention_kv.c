/* Attention over a KV cache on the CPU (backend.h, attention_kv), the reference the shader is held
 * to: one query row at a time with an online softmax in double, as cpu_attention.c.
 *
 *   q, o [Tq, H, Dh]   k, v [Tk, Hkv, Dh] (the cache; rows from Tk on are not read)
 * Query i is token p0 + i, p0 = Tk - Tq; it sees key j when j <= p0 + i and, with window > 0,
 * p0 + i - j < window. Query head h reads KV head h / (H / Hkv). */
#include "backend/cpu/cpu.h"

#include <math.h>
#include <stdlib.h>

#define KV_MAX_TASKS 128

enum tern_status tern_cpu_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				       struct tern_view k, struct tern_view v,
				       const struct tern_attn_kv_args *a)
{
	(void)be;
	const char *op = "attention_kv";
	int64_t Tq = a->Tq, Tk = a->Tk, H = a->H, Hkv = a->Hkv, Dh = a->Dh, grp = a->H / a->Hkv;
	int64_t p0 = Tk - Tq;
	void *op_, *qp, *kp, *vp;
	enum tern_status st;
	const char *fmt = "Tq=%lld Tk=%lld H=%lld Dh=%lld";
	if ((st = tern_cpu_view(op, "o", o, (size_t)(Tq * H * Dh) * 4, 4, &op_, fmt, (long long)Tq,
				(long long)Tk, (long long)H, (long long)Dh)) ||
	    (st = tern_cpu_view(op, "q", q, (size_t)(Tq * H * Dh) * 4, 4, &qp, fmt, (long long)Tq,
				(long long)Tk, (long long)H, (long long)Dh)) ||
	    (st = tern_cpu_view(op, "k", k, (size_t)(Tk * Hkv * Dh) * 4, 4, &kp, fmt, (long long)Tq,
				(long long)Tk, (long long)H, (long long)Dh)) ||
	    (st = tern_cpu_view(op, "v", v, (size_t)(Tk * Hkv * Dh) * 4, 4, &vp, fmt, (long long)Tq,
				(long long)Tk, (long long)H, (long long)Dh)))
		return st;
	if (Tq == 0)
		return TERN_OK;
	float *O = op_;
	const float *Q = qp, *K = kp, *V = vp;
	int64_t rows = Tq * H, ntask = rows < KV_MAX_TASKS ? rows : KV_MAX_TASKS;
	double *acc = tern_malloc((size_t)(ntask * Dh) * sizeof(double));
	if (!acc)
		return TERN_E_NOMEM;
	CPU_PARALLEL_FOR
	for (int64_t t = 0; t < ntask; t++) {
		double *ac = acc + t * Dh;
		for (int64_t r = rows * t / ntask; r < rows * (t + 1) / ntask; r++) {
			int64_t i = r / H, h = r % H, g = h / grp, pos = p0 + i;
			int64_t j0 = a->window > 0 && pos + 1 > a->window ? pos + 1 - a->window : 0;
			const float *qi = Q + (i * H + h) * Dh;
			double m = -INFINITY, l = 0.0;
			for (int64_t d = 0; d < Dh; d++)
				ac[d] = 0.0;
			for (int64_t j = j0; j <= pos; j++) {
				const float *kj = K + (j * Hkv + g) * Dh, *vj = V + (j * Hkv + g) * Dh;
				double s = 0.0;
				for (int64_t d = 0; d < Dh; d++)
					s += (double)qi[d] * (double)kj[d];
				s *= (double)a->scale;
				double c = s > m ? exp(m - s) : 1.0, p = s > m ? 1.0 : exp(s - m);
				if (s > m)
					m = s;
				l = l * c + p;
				for (int64_t d = 0; d < Dh; d++)
					ac[d] = ac[d] * c + p * vj[d];
			}
			float *oi = O + (i * H + h) * Dh;
			for (int64_t d = 0; d < Dh; d++)
				oi[d] = (float)(ac[d] / l);
		}
	}
	free(acc);
	return TERN_OK;
}
