// The bf16 operands of the fused LoRA products (cu_lora.c): one pass writes a row of an extended
// operand, the fp32 activation (or nothing) rounded to bf16, then a low-rank block scaled and
// rounded, then zeros up to the padded width. Used for both sides of both products:
//   forward   [x | s·u] (T rows) and B's columns after the decoded rows of W
//   backward  [dy | du] (T rows) and A's rows after the decoded window of W (x absent)
// Rows over blockIdx.y, columns over blockIdx.x and the threads: no division per element.
#include "backend/cuda/cu_kernels.h"

#include <cuda_bf16.h>
#include <string.h>

#include "backend/cuda/k_mma.cuh"

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

// lora_pack_kernel's [x | s·u] with u = x·Aᵀ computed on the way (cuk_lora_pack_u): a block takes
// 16 rows, each of its 8 warps a contiguous eighth of the columns in steps of 16, two steps' loads
// issued before their products. In a step a lane loads its four pairs of x (the m16n8k16 A fragment: rows g and g + 8, columns 2t, 2t + 1 and
// the same 8 further), rounds them to bf16, stores them into the operand and multiplies them by
// the matching bf16 pairs of A (two products: ranks 0-7 and 8-15) on the tensor cores with fp32
// sums. The warps' 16 x 16 partial sums are added in warp order through shared memory; u (fp32)
// and alpha·u (bf16, then zeros up to ncols) are written once. out NULL: u alone, the same bits. Needs R <= 16, x rows 8-byte aligned
// (ldx even) and out rows 4-byte aligned (ldo even): the launch checks.
constexpr int kPackUWarps = 8;

__device__ inline float ld_or0(const float *p, int64_t i, bool on) { return on ? p[i] : 0.0f; }

__device__ inline uint32_t bf16x2(float lo, float hi)
{
	__nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
	uint32_t v;
	memcpy(&v, &h, 4);
	return v;
}

__global__ void __launch_bounds__(kPackUWarps * 32)
	lora_pack_u_kernel(__nv_bfloat16 *out, int64_t ldo, int64_t rows, int64_t ncols, const float *x,
			   int64_t ldx, int64_t kx, const float *A, int64_t R, float *u, int64_t ldu,
			   float alpha)
{
	__shared__ float part[kPackUWarps][16][16];
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	const int64_t r0 = (int64_t)blockIdx.x * 16, ra = r0 + g, rb = r0 + g + 8;
	const bool va = ra < rows, vb = rb < rows;
	const int64_t steps = (kx + 15) / 16, per = (steps + kPackUWarps - 1) / kPackUWarps;
	const int64_t s0 = warp * per, s1 = s0 + per < steps ? s0 + per : steps;
	float d[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
	// x's pairs of step st: xv[2h + i] = row (ra, rb)[i], columns k, k + 1 with k = 16 st + 8h + 2t
	auto load = [&](int64_t st, float2 xv[4]) {
		for (int h = 0; h < 2; h++) {
			const int64_t k = st * 16 + 8 * h + 2 * t;
			const int64_t rr[2] = {ra, rb};
			const bool vr[2] = {va, vb};
			for (int i = 0; i < 2; i++) {
				if (st < s1 && vr[i] && k + 1 < kx)
					xv[2 * h + i] =
						*reinterpret_cast<const float2 *>(x + rr[i] * ldx + k);
				else
					xv[2 * h + i] = make_float2(
						ld_or0(x, rr[i] * ldx + k, st < s1 && vr[i] && k < kx), 0.0f);
			}
		}
	};
	// step st: the pairs rounded to bf16 into the operand, then the products with A's pairs
	auto step = [&](int64_t st, const float2 xv[4]) {
		uint32_t a[4];
		for (int h = 0; h < 2; h++) {
			const int64_t k = st * 16 + 8 * h + 2 * t;
			const int64_t rr[2] = {ra, rb};
			const bool vr[2] = {va, vb};
			for (int i = 0; i < 2; i++) {
				a[2 * h + i] = bf16x2(xv[2 * h + i].x, xv[2 * h + i].y);
				if (!out) // u alone (cuk_lora_u)
					continue;
				if (vr[i] && k + 1 < kx)
					*reinterpret_cast<uint32_t *>(out + rr[i] * ldo + k) = a[2 * h + i];
				else if (vr[i] && k < kx)
					out[rr[i] * ldo + k] = __float2bfloat16_rn(xv[2 * h + i].x);
			}
		}
		for (int h = 0; h < 2; h++) { // ranks 8h .. 8h + 7: B(k, n) = A[n][k], n = 8h + g
			const int64_t n = 8 * h + g, k = st * 16 + 2 * t;
			const bool vn = n < R;
			const float *an = A + (vn ? n : 0) * kx;
			const uint32_t b0 =
				bf16x2(ld_or0(an, k, vn && k < kx), ld_or0(an, k + 1, vn && k + 1 < kx));
			const uint32_t b1 = bf16x2(ld_or0(an, k + 8, vn && k + 8 < kx),
						   ld_or0(an, k + 9, vn && k + 9 < kx));
			mma_bf16(d[h], a, b0, b1);
		}
	};
	// two steps at a time, both steps' loads issued first (more bytes in flight per lane)
	for (int64_t st = s0; st < s1; st += 2) {
		float2 x0[4], x1[4];
		load(st, x0);
		load(st + 1, x1);
		step(st, x0);
		if (st + 1 < s1)
			step(st + 1, x1);
	}
	for (int h = 0; h < 2; h++) { // d[h]: rows g (0, 1) and g + 8 (2, 3), ranks 8h + 2t, + 1
		part[warp][g][8 * h + 2 * t] = d[h][0];
		part[warp][g][8 * h + 2 * t + 1] = d[h][1];
		part[warp][g + 8][8 * h + 2 * t] = d[h][2];
		part[warp][g + 8][8 * h + 2 * t + 1] = d[h][3];
	}
	__syncthreads();
	const int rr = threadIdx.x >> 4, n = threadIdx.x & 15;
	const int64_t r = r0 + rr;
	if (r >= rows)
		return;
	float v = 0.0f;
	for (int w = 0; w < kPackUWarps; w++)
		v += part[w][rr][n];
	if (n < R)
		u[r * ldu + n] = v;
	for (int64_t j = kx + n; out && j < ncols; j += 16) // alpha·u, then the padding's zeros
		out[r * ldo + j] = __float2bfloat16_rn(j - kx < R ? alpha * v : 0.0f);
}

} // namespace

extern "C" cudaError_t cuk_lora_pack_u(cudaStream_t s, void *out, int64_t ldo, int64_t rows, int64_t ncols,
				       const float *x, int64_t ldx, int64_t kx, const float *A, int64_t R,
				       float *u, int64_t ldu, float alpha)
{
	if (rows <= 0 || (out && ncols <= 0))
		return cudaSuccess;
	if (R < 1 || R > 16 || ldx % 2 || (out && ldo % 2) || ((uintptr_t)x & 7) || ((uintptr_t)out & 3) ||
	    kx < 1)
		return cudaErrorInvalidValue;
	int64_t blocks = (rows + 15) / 16;
	lora_pack_u_kernel<<<(unsigned)blocks, kPackUWarps * 32, 0, s>>>(
		static_cast<__nv_bfloat16 *>(out), ldo, rows, ncols, x, ldx, kx, A, R, u, ldu, alpha);
	return cudaGetLastError();
}

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
