/* argmax (backend.h) on CUDA: checks the views, then queues k_sample.cu's kernel (one block per
 * row). */
#include "backend/cuda/cu_more.h"

enum tern_status tern_cu_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				int64_t rows, int64_t n)
{
	const char *op = "argmax";
	long long lr = (long long)rows, ln = (long long)n;
	int32_t *op_;
	float *xp;
	enum tern_status st;
	if ((st = tern_cu_view(op, "out", out, (size_t)rows * 4, 4, (void **)&op_, "rows=%lld i32", lr)) ||
	    (st = tern_cu_view(op, "x", x, (size_t)(rows * n) * 4, 4, (void **)&xp, "rows=%lld n=%lld f32",
			       lr, ln)))
		return st;
	if (rows == 0)
		return TERN_OK;
	return tern_cu_check(cuk_argmax(tern_cu_stream(cu_be(be)), op_, xp, rows, n), op);
}
