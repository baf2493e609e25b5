// argmax (backend.h) on CUDA (the reference is src/backend/cpu/cpu_argmax.c). A row's elements are
// cut into parts of consecutive elements (one part, the whole row, when rows are many or short);
// a block per (row, part): each thread keeps the first largest non-NaN value of its elements
// i = tid, tid + 256, ... of the part, then a shared-memory tree keeps, of two candidates, the
// larger value and on equal values the smaller index. With parts, a second kernel merges a row's
// part candidates by the same rule (the first largest of the row: parts are in element order).
// 0 when x[r, 0] is NaN or the row has no non-NaN value. Comparisons only. A decode step's one
// row of 128k logits took 38 us in one block (the H100 profile of 2026-12-05); in parts of 2,048
// elements the row is read by 63 blocks at once.
#include "backend/cuda/cu_kernels_more.h"
#include "backend/cuda/k_pdl.cuh"

#include <math.h>

namespace
{

constexpr int kThreads = 256;
constexpr unsigned kNone = 0xffffffffu;

// The tree of both kernels: candidate (sv[0], si[0]) of the block's (sv, si) (kNone: no value).
__device__ inline void argmax_tree(float *sv, unsigned *si, int tid)
{
	__syncthreads();
	for (int h = kThreads / 2; h > 0; h >>= 1) {
		if (tid < h) {
			float ov = sv[tid + h];
			unsigned oi = si[tid + h], mi = si[tid];
			if (oi != kNone && (mi == kNone || ov > sv[tid] || (ov == sv[tid] && oi < mi))) {
				sv[tid] = ov;
				si[tid] = oi;
			}
		}
		__syncthreads();
	}
}

// Row r = b / P, elements [p·len, min((p + 1)·len, n)) for p = b % P. P = 1: the answer into out;
// else the part's candidate into pv[b], pi[b].
__global__ void argmax_kernel(int32_t *out, float *pv, unsigned *pi, const float *x, int64_t rows, int64_t n,
			      int P, int64_t len)
{
	__shared__ float sv[kThreads];
	__shared__ unsigned si[kThreads];
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	int tid = threadIdx.x;
	for (int64_t b = blockIdx.x; b < rows * P; b += gridDim.x) {
		int64_t r = b / P, i0 = (b % P) * len, i1 = i0 + len < n ? i0 + len : n;
		const float *xr = x + r * n;
		float bv = 0.0f;
		unsigned bi = kNone;
		for (int64_t i = i0 + tid; i < i1; i += kThreads) {
			float v = xr[i];
			if (!isnan(v) && (bi == kNone || v > bv)) {
				bv = v;
				bi = (unsigned)i;
			}
		}
		sv[tid] = bv;
		si[tid] = bi;
		argmax_tree(sv, si, tid);
		if (tid == 0) {
			if (P == 1)
				out[r] = isnan(xr[0]) || si[0] == kNone ? 0 : (int32_t)si[0];
			else
				pv[b] = sv[0], pi[b] = si[0];
		}
		__syncthreads(); // sv, si are rewritten by the next row
	}
}

// out[r] from the P part candidates of row r (P <= kThreads).
__global__ void argmax_merge(int32_t *out, const float *pv, const unsigned *pi, const float *x, int64_t rows,
			     int64_t n, int P)
{
	__shared__ float sv[kThreads];
	__shared__ unsigned si[kThreads];
	pdl_wait();
	pdl_trigger();
	int tid = threadIdx.x;
	for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
		sv[tid] = tid < P ? pv[r * P + tid] : 0.0f;
		si[tid] = tid < P ? pi[r * P + tid] : kNone;
		argmax_tree(sv, si, tid);
		if (tid == 0)
			out[r] = isnan(x[r * n]) || si[0] == kNone ? 0 : (int32_t)si[0];
		__syncthreads();
	}
}

} // namespace

extern "C" int cuk_argmax_parts(int64_t rows, int64_t n)
{
	if (rows >= 64) // enough blocks already
		return 1;
	int64_t p = n / CUK_ARGMAX_PART;
	return p < 1 ? 1 : p > kThreads ? kThreads : (int)p;
}

extern "C" cudaError_t cuk_argmax(cudaStream_t s, int32_t *out, void *scratch, const float *x, int64_t rows,
				  int64_t n, int parts)
{
	if (rows <= 0)
		return cudaSuccess;
	int64_t len = (n + parts - 1) / parts, blocks = rows * parts;
	float *pv = (float *)scratch;
	unsigned *pi = parts > 1 ? (unsigned *)(pv + blocks) : nullptr;
	cudaError_t e = pdl_launch(argmax_kernel, dim3((unsigned)(blocks > 65535 ? 65535 : blocks)),
				   dim3(kThreads), 0, s, out, pv, pi, x, rows, n, parts, len);
	if (e == cudaSuccess && parts > 1)
		e = pdl_launch(argmax_merge, dim3((unsigned)(rows > 65535 ? 65535 : rows)), dim3(kThreads), 0,
			       s, out, (const float *)pv, (const unsigned *)pi, x, rows, n, parts);
	return e;
}
