/* The small-T matmul on CUDA (cu_gemv.h): k_gemv.cu's kernels read W in its stored format once
 * for all T tokens, where the decode + cuBLAS path (cu_mm.c) writes and reads a decoded copy. */
#include "backend/cuda/cu_gemv.h"

#include <stdlib.h>
#include <string.h>

bool tern_cu_gemv_takes(int64_t T)
{
	if (T < 1 || T > CU_GEMV_MAX_T || tern_decode_legacy())
		return false;
	const char *e = getenv("TERN_CUDA_GEMV");
	return !(e && strcmp(e, "0") == 0);
}

enum tern_status tern_cu_gemv(struct cu_backend *c, float *y, const float *x, const struct cuk_weight *kw,
			      int64_t T, enum tern_dtype prec)
{
	cudaStream_t s = tern_cu_stream(c);
	if (prec == TERN_F16) { /* the input scale of backend.h: max |x| over all T rows */
		enum tern_status st = tern_cu_check(cudaMemsetAsync(c->absmax, 0, 4, s), "absmax");
		if (st || (st = tern_cu_check(cuk_absmax_bits(s, x, T * kw->I, c->absmax), "absmax")))
			return st;
	}
	return tern_cu_check(cuk_gemv(s, y, x, kw, T, (int)prec, c->absmax, c->sms), "matmul");
}
