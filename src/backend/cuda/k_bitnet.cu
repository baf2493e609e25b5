// BitNet b1.58's per-token 8-bit activation fake-quantization on CUDA (backend.h act_quant8; the
// CPU reference is src/backend/cpu/cpu_bitnet.c): one block per row takes the row's max |x|
// (exact, so the order of the reduction does not matter), then s = 127 / max(m, 1e-5) and
// y = clamp(rint(x · s), -128, 127) / s per element, each one fp32 operation as on the CPU
// (built with --fmad=false; rintf rounds halves to even). In place (y = x) is safe: every thread
// has read its elements for the max before the barrier, and each element is then rewritten only
// by the thread that reads it.
#include "backend/cuda/cu_kernels_more.h"

#include <math.h>

namespace
{

constexpr int kThreads = 256;

__global__ void act_quant8_kernel(float *y, const float *x, int64_t T, int64_t I)
{
	__shared__ float red[kThreads / 32];
	int tid = threadIdx.x;
	for (int64_t t = blockIdx.x; t < T; t += gridDim.x) {
		const float *xt = x + t * I;
		float *yt = y + t * I;
		float m = 0.0f;
		for (int64_t i = tid; i < I; i += kThreads) {
			float a = fabsf(xt[i]);
			m = a > m ? a : m;
		}
		for (int off = 16; off > 0; off >>= 1) {
			float o = __shfl_xor_sync(0xffffffffu, m, off);
			m = o > m ? o : m;
		}
		if ((tid & 31) == 0)
			red[tid >> 5] = m;
		__syncthreads();
		m = red[0];
		for (int w = 1; w < kThreads / 32; w++)
			m = red[w] > m ? red[w] : m;
		float s = 127.0f / (m > 1e-5f ? m : 1e-5f);
		for (int64_t i = tid; i < I; i += kThreads) {
			float q = rintf(xt[i] * s);
			q = q < -128.0f ? -128.0f : q > 127.0f ? 127.0f : q;
			yt[i] = q / s;
		}
		__syncthreads(); // red is rewritten by the next row
	}
}

} // namespace

extern "C" cudaError_t cuk_act_quant8(cudaStream_t s, float *y, const float *x, int64_t T, int64_t I)
{
	if (T > 0)
		act_quant8_kernel<<<(unsigned)(T > 65535 * 8 ? 65535 * 8 : T), kThreads, 0, s>>>(y, x, T, I);
	return cudaGetLastError();
}
