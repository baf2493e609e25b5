/* argmax (backend.h) on CUDA: checks the views, then queues k_sample.cu's kernels (a block per row
 * and part of it; the parts' candidates in the scratch). */
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
	struct cu_backend *c = cu_be(be);
	int parts = cuk_argmax_parts(rows, n);
	void *scr = NULL;
	if (parts > 1 && (st = tern_cu_scratch(c, (size_t)(rows * parts) * 8, &scr)))
		return st;
	return tern_cu_check(cuk_argmax(tern_cu_stream(c), op_, scr, xp, rows, n, parts), op);
}
