/* The index of each row's largest value (backend.h argmax), the reference: the loop the contract
 * states, one row after another. */
#include "backend/cpu/cpu.h"

enum tern_status tern_cpu_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				 int64_t rows, int64_t n)
{
	(void)be;
	const char *op = "argmax";
	enum tern_status st;
	void *ov, *xv;
	long long lr = (long long)rows, ln = (long long)n;
	if ((st = tern_cpu_view(op, "out", out, (size_t)rows * 4, 4, &ov, "rows=%lld i32", lr)) ||
	    (st = tern_cpu_view(op, "x", x, (size_t)(rows * n) * 4, 4, &xv, "rows=%lld n=%lld f32", lr, ln)))
		return st;
	int32_t *o = ov;
	const float *xp = xv;
	for (int64_t r = 0; r < rows; r++) {
		const float *xr = xp + r * n;
		int64_t best = 0;
		for (int64_t i = 1; i < n; i++)
			if (xr[i] > xr[best])
				best = i;
		o[r] = (int32_t)best;
	}
	return TERN_OK;
}
