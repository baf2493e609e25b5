/* BitNet b1.58's activation fake-quantization on CUDA (backend.h act_quant8): checks the views
 * (fp32 [T, I]; y may be x itself, the front door refused other overlaps), then queues
 * k_bitnet.cu's kernel (one block per token row). */
#include "backend/cuda/cu_more.h"

enum tern_status tern_cu_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				    int64_t T, int64_t I)
{
	const char *op = "act_quant8";
	long long lT = (long long)T, lI = (long long)I;
	float *yp, *xp;
	enum tern_status st;
	if ((st = tern_cu_view(op, "y", y, (size_t)(T * I) * 4, 4, (void **)&yp, "T=%lld I=%lld f32", lT,
			       lI)) ||
	    (st = tern_cu_view(op, "x", x, (size_t)(T * I) * 4, 4, (void **)&xp, "T=%lld I=%lld f32", lT,
			       lI)))
		return st;
	if (T == 0)
		return TERN_OK;
	return tern_cu_check(cuk_act_quant8(tern_cu_stream(cu_be(be)), yp, xp, T, I), op);
}
