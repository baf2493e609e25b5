/* Attention over a KV cache on CUDA (backend.h attention_kv, generation's decode and prefill
 * steps): checks the views, then queues k_kv.cu's kernel (a block per query row, head and part of
 * the keys; the parts' partial softmaxes merged in the scratch by each row's last block). */
#include "backend/cuda/cu_more.h"

enum tern_status tern_cu_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				      struct tern_view k, struct tern_view v,
				      const struct tern_attn_kv_args *a)
{
	const char *op = "attention_kv";
	int64_t Tq = a->Tq, Tk = a->Tk, H = a->H, Hkv = a->Hkv, Dh = a->Dh;
	const char *fmt = "Tq=%lld Tk=%lld H=%lld Hkv=%lld Dh=%lld";
	long long lq = (long long)Tq, lk = (long long)Tk, lH = (long long)H, lg = (long long)Hkv,
		  ld = (long long)Dh;
	float *op_, *qp, *kp, *vp;
	enum tern_status st;
	if (Dh > CUK_ATTN_MAX_DH)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "cuda: %s: head size Dh=%lld is above the %d the kernel takes", op, ld,
				 CUK_ATTN_MAX_DH);
	if ((st = tern_cu_view(op, "o", o, (size_t)(Tq * H * Dh) * 4, 4, (void **)&op_, fmt, lq, lk, lH, lg,
			       ld)) ||
	    (st = tern_cu_view(op, "q", q, (size_t)(Tq * H * Dh) * 4, 4, (void **)&qp, fmt, lq, lk, lH, lg,
			       ld)) ||
	    (st = tern_cu_view(op, "k", k, (size_t)(Tk * Hkv * Dh) * 4, 4, (void **)&kp, fmt, lq, lk, lH, lg,
			       ld)) ||
	    (st = tern_cu_view(op, "v", v, (size_t)(Tk * Hkv * Dh) * 4, 4, (void **)&vp, fmt, lq, lk, lH, lg,
			       ld)))
		return st;
	if (Tq == 0)
		return TERN_OK;
	struct cu_backend *c = cu_be(be);
	int parts = cuk_attention_kv_parts(Tq, Tk, H);
	void *part = NULL;
	if (parts > 1 && (st = tern_cu_scratch(c, (size_t)(Tq * H * parts * (Dh + 2)) * 4, &part)))
		return st;
	return tern_cu_check(cuk_attention_kv(tern_cu_stream(c), op_, part, c->kv_count, qp, kp, vp, Tq, Tk,
					      H, Hkv, Dh, a->window, a->scale, parts),
			     op);
}
