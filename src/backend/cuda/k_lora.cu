// The bf16 operands of the fused LoRA products (cu_lora.c): one pass writes a row of an extended
// operand, the fp32 activation (or nothing) rounded to bf16, then a low-rank block scaled and
// rounded, then zeros up to the padded width. Used for both sides of both products:
//   forward   [x | s·u] (T rows) and B's columns after the decoded rows of W
//   backward  [dy | du] (T rows) and A's rows after the decoded window of W (x absent)
// Rows over blockIdx.y, columns over blockIdx.x and the threads: no division per element.
#include "backend/cuda/cu_kernels.h"

#include <cuda_bf16.h>
#include <string.h>

namespace
{

constexpr int kThreads = 256;

// Column j of row r of the extended operand: x's, then the scaled low-rank block's, then zero.
__device__ inline void pack_one(__nv_bfloat16 *out, int64_t ldo, int64_t r, int64_t j, const float *x,
				int64_t ldx, int64_t kx, const float *u, int64_t ldu, int64_t ku,
				int64_t urows, float alpha)
{
	float v = 0.0f;
	if (j < kx)
		v = x[r * ldx + j];
	else if (j < kx + ku && r < urows)
		v = alpha * u[r * ldu + (j - kx)];
	out[r * ldo + j] = __float2bfloat16_rn(v);
}

__global__ void lora_pack_kernel(__nv_bfloat16 *out, int64_t ldo, int64_t rows, int64_t ncols, const float *x,
				 int64_t ldx, int64_t kx, const float *u, int64_t ldu, int64_t ku,
				 int64_t urows, float alpha)
{
	for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
		for (int64_t j = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j < ncols;
		     j += (int64_t)gridDim.x * blockDim.x)
			pack_one(out, ldo, r, j, x, ldx, kx, u, ldu, ku, urows, alpha);
}

// lora_pack_kernel eight columns a thread: two 16-byte loads of x and one 16-byte store where the
// eight lie in x's part and in out (x and out rows 16-byte aligned, the launch checks), else
// column by column as above. The same values.
__global__ void lora_pack8_kernel(__nv_bfloat16 *out, int64_t ldo, int64_t rows, int64_t ncols,
				  const float *x, int64_t ldx, int64_t kx, const float *u, int64_t ldu,
				  int64_t ku, int64_t urows, float alpha)
{
	int64_t n8 = (ncols + 7) / 8;
	for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
		for (int64_t j8 = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; j8 < n8;
		     j8 += (int64_t)gridDim.x * blockDim.x) {
			int64_t j = j8 * 8;
			if (j + 8 <= kx && j + 8 <= ncols) {
				const float4 *p = reinterpret_cast<const float4 *>(x + r * ldx + j);
				float4 a = p[0], b = p[1];
				__nv_bfloat162 h[4] = {
					__floats2bfloat162_rn(a.x, a.y), __floats2bfloat162_rn(a.z, a.w),
					__floats2bfloat162_rn(b.x, b.y), __floats2bfloat162_rn(b.z, b.w)};
				uint4 q;
				memcpy(&q, h, 16);
				*reinterpret_cast<uint4 *>(out + r * ldo + j) = q;
				continue;
			}
			for (int64_t c = j; c < j + 8 && c < ncols; c++)
				pack_one(out, ldo, r, c, x, ldx, kx, u, ldu, ku, urows, alpha);
		}
}

} // namespace

extern "C" cudaError_t cuk_lora_pack(cudaStream_t s, void *out, int64_t ldo, int64_t rows, int64_t ncols,
				     const float *x, int64_t ldx, int64_t kx, const float *u, int64_t ldu,
				     int64_t ku, int64_t urows, float alpha)
{
	if (rows <= 0 || ncols <= 0)
		return cudaSuccess;
	// eight columns a thread where x's part is wide (not B's or A's rows alone: a few columns, where
	// a thread's eight scalar stores took 8.8 us against 5.5 one column a thread, H100)
	if (kx >= 64 && ((uintptr_t)out & 15) == 0 && ldo % 8 == 0 && ((uintptr_t)x & 15) == 0 &&
	    ldx % 4 == 0) {
		int64_t gx = ((ncols + 7) / 8 + kThreads - 1) / kThreads;
		dim3 g((unsigned)(gx > 1024 ? 1024 : gx), (unsigned)(rows > 65535 ? 65535 : rows));
		lora_pack8_kernel<<<g, kThreads, 0, s>>>(static_cast<__nv_bfloat16 *>(out), ldo, rows, ncols,
							 x, ldx, kx, u, ldu, ku, urows, alpha);
		return cudaGetLastError();
	}
	int64_t gx = (ncols + kThreads - 1) / kThreads;
	dim3 g((unsigned)(gx > 1024 ? 1024 : gx), (unsigned)(rows > 65535 ? 65535 : rows));
	lora_pack_kernel<<<g, kThreads, 0, s>>>(static_cast<__nv_bfloat16 *>(out), ldo, rows, ncols, x, ldx,
						kx, u, ldu, ku, urows, alpha);
	return cudaGetLastError();
}
