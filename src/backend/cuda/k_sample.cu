// argmax (backend.h) on CUDA (the reference is src/backend/cpu/cpu_argmax.c): one block per row;
// each thread keeps the first largest non-NaN value of its elements i = tid, tid + 256, ..., then
// a shared-memory tree keeps, of two candidates, the larger value and on equal values the smaller
// index; 0 when x[r, 0] is NaN or the row has no non-NaN value. Comparisons only.
#include "backend/cuda/cu_kernels_more.h"

#include <math.h>

namespace
{

constexpr int kThreads = 256;
constexpr unsigned kNone = 0xffffffffu;

__global__ void argmax_kernel(int32_t *out, const float *x, int64_t rows, int64_t n)
{
	__shared__ float sv[kThreads];
	__shared__ unsigned si[kThreads];
	int tid = threadIdx.x;
	for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
		const float *xr = x + r * n;
		float bv = 0.0f;
		unsigned bi = kNone;
		for (int64_t i = tid; i < n; i += kThreads) {
			float v = xr[i];
			if (!isnan(v) && (bi == kNone || v > bv)) {
				bv = v;
				bi = (unsigned)i;
			}
		}
		sv[tid] = bv;
		si[tid] = bi;
		__syncthreads();
		for (int h = kThreads / 2; h > 0; h >>= 1) {
			if (tid < h) {
				float ov = sv[tid + h];
				unsigned oi = si[tid + h], mi = si[tid];
				if (oi != kNone &&
				    (mi == kNone || ov > sv[tid] || (ov == sv[tid] && oi < mi))) {
					sv[tid] = ov;
					si[tid] = oi;
				}
			}
			__syncthreads();
		}
		if (tid == 0)
			out[r] = isnan(xr[0]) || si[0] == kNone ? 0 : (int32_t)si[0];
		__syncthreads(); // sv, si are rewritten by the next row
	}
}

} // namespace

extern "C" cudaError_t cuk_argmax(cudaStream_t s, int32_t *out, const float *x, int64_t rows, int64_t n)
{
	if (rows > 0)
		argmax_kernel<<<(unsigned)(rows > 65535 ? 65535 : rows), kThreads, 0, s>>>(out, x, rows, n);
	return cudaGetLastError();
}
