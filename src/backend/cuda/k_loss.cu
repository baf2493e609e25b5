// The cross-entropy rows of the fused lm_head + loss on CUDA (backend.h "ce_loss"; the CPU
// reference is src/backend/cpu/cpu_loss.c). The products run in cuBLAS (cu_loss.c); here, per
// token row of logits: the log-sum-exp, the loss term and dz = inv_n · (softmax − onehot) in
// place, one block per row, every sum in double in a fixed order.
#include "backend/cuda/cu_kernels.h"

#include <cuda_bf16.h>
#include <math.h>

namespace
{

constexpr int kThreads = 256;

__device__ double block_sum(double v, double *sh)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	double t = 0.0;
	for (int k = 0; k < nw; k++)
		t += sh[k];
	return t;
}

__device__ float block_max(float v, float *sh)
{
	for (int o = 16; o > 0; o >>= 1)
		v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads();
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	float t = sh[0];
	for (int k = 1; k < nw; k++)
		t = fmaxf(t, sh[k]);
	return t;
}

// bf16: the gradient row is written as bf16 over the front half of its own f32 row (the operand
// of the bf16 product dx = dz W): chunk k of blockDim elements writes the bytes of f32 elements
// [k·B/2, (k+1)·B/2), all read by chunks <= k, so a barrier between each chunk's reads and writes
// is all the aliasing needs.
__global__ void ce_rows_kernel(float *z, int64_t V, const int32_t *lab, float inv_n, double *term, int bf16)
{
	__shared__ double shd[32];
	__shared__ float shf[32];
	int64_t r = blockIdx.x;
	float *zr = z + r * V;
	int32_t y = lab[r];
	if (y < 0 || y >= V) { // untrained (-100), or a label outside [0, V): NaN term, never a silent 0
		for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
			zr[v] = 0.0f;
		if (threadIdx.x == 0)
			term[r] = y == -100 ? 0.0 : (double)NAN;
		return;
	}
	float m = -INFINITY;
	for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
		m = fmaxf(m, zr[v]);
	m = block_max(m, shf);
	double s = 0.0;
	for (int64_t v = threadIdx.x; v < V; v += blockDim.x)
		s += exp((double)zr[v] - (double)m);
	s = block_sum(s, shd);
	double lse = (double)m + log(s);
	double zy = (double)zr[y];
	__syncthreads(); // every thread has read z[y] before it is overwritten
	if (threadIdx.x == 0)
		term[r] = lse - zy;
	if (!bf16) {
		for (int64_t v = threadIdx.x; v < V; v += blockDim.x) {
			double p = exp((double)zr[v] - lse) - (v == y ? 1.0 : 0.0);
			zr[v] = (float)((double)inv_n * p);
		}
		return;
	}
	__nv_bfloat16 *zb = (__nv_bfloat16 *)zr;
	for (int64_t v0 = 0; v0 < V; v0 += blockDim.x) {
		int64_t v = v0 + threadIdx.x;
		float d = 0.0f;
		if (v < V)
			d = (float)((double)inv_n * (exp((double)zr[v] - lse) - (v == y ? 1.0 : 0.0)));
		__syncthreads(); // this chunk's reads before its writes
		if (v < V)
			zb[v] = __float2bfloat16_rn(d);
	}
}

__global__ void ce_total_kernel(float *loss, const double *term, int64_t T, float inv_n)
{
	double total = 0.0;
	for (int64_t t = 0; t < T; t++) // token order, as the CPU
		total += term[t];
	loss[0] = (float)((double)loss[0] + (double)inv_n * total);
}

} // namespace

extern "C" cudaError_t cuk_ce_rows(cudaStream_t s, float *z, int64_t tn, int64_t V, const int32_t *lab,
				   float inv_n, double *term, bool bf16)
{
	for (int64_t r0 = 0; r0 < tn; r0 += 65535) {
		int64_t n = tn - r0 < 65535 ? tn - r0 : 65535;
		ce_rows_kernel<<<(unsigned)n, kThreads, 0, s>>>(z + r0 * V, V, lab + r0, inv_n, term + r0,
								bf16 ? 1 : 0);
	}
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_ce_total(cudaStream_t s, float *loss, const double *term, int64_t T, float inv_n)
{
	ce_total_kernel<<<1, 1, 0, s>>>(loss, term, T, inv_n);
	return cudaGetLastError();
}
