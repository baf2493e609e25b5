// The mixture-of-experts row ops and the router on CUDA (backend.h; the CPU reference is
// src/backend/cpu/cpu_moe.c), in its operation order: the combine rounds the product, then the
// sum (built with --fmad=false), rowdot and the router sum and evaluate in double. The idx and sel
// stay on the device, so a bad one cannot fail the call: as on Vulkan, gather writes a NaN row for
// it, scatter_add and the router's backward skip it.
//
// Deliberately simple first versions: gather/scatter one thread per element, rowdot one block
// per row, the router one thread per token (T·E·k work; fine for the E and k of today's models).
#include "backend/cuda/cu_kernels_more.h"

#include <math.h>

namespace
{

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n)
{
	int64_t b = (n + kThreads - 1) / kThreads;
	return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

#define GRID_STRIDE(i, n)                                                         \
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < (n); \
	     i += (int64_t)gridDim.x * blockDim.x)

__global__ void gather_kernel(float *y, const float *x, const int32_t *idx, int64_t n, int64_t Tx, int64_t D)
{
	GRID_STRIDE(i, n * D)
	{
		int64_t r = i / D, d = i - r * D;
		int64_t s = idx[r];
		y[i] = s >= 0 && s < Tx ? x[s * D + d] : __int_as_float(0x7fc00000);
	}
}

__global__ void scatter_kernel(float *y, const float *x, const int32_t *idx, const float *w, int64_t n,
			       int64_t Ty, int64_t D)
{
	GRID_STRIDE(i, n * D)
	{
		int64_t r = i / D, d = i - r * D;
		int64_t s = idx[r];
		if (s < 0 || s >= Ty)
			continue;
		float v = w ? w[r] * x[i] : x[i];
		float *dst = y + s * D + d;
		*dst = *dst + v;
	}
}

// One block per row: thread t sums d = t, t + blockDim, ... in double, then a fixed tree.
__global__ void rowdot_kernel(float *out, const float *a, const float *b, int64_t n, int64_t D)
{
	__shared__ double sh[kThreads];
	for (int64_t r = blockIdx.x; r < n; r += gridDim.x) {
		const float *ar = a + r * D, *br = b + r * D;
		double v = 0.0;
		for (int64_t d = threadIdx.x; d < D; d += blockDim.x)
			v += (double)ar[d] * (double)br[d];
		sh[threadIdx.x] = v;
		__syncthreads();
		for (int h = kThreads / 2; h > 0; h >>= 1) {
			if ((int)threadIdx.x < h)
				sh[threadIdx.x] += sh[threadIdx.x + h];
			__syncthreads();
		}
		if (threadIdx.x == 0)
			out[r] = (float)sh[0];
		__syncthreads(); // sh[0] read before the next row overwrites it
	}
}

// The selection key: probabilities are >= 0, so a NaN ranks below all of them as -1.
__device__ inline float route_key(float p) { return p == p ? p : -1.0f; }

// Whether (a, ea) ranks after (b, eb): smaller key, or an equal key and a larger expert id.
__device__ inline bool route_after(float a, int64_t ea, float b, int64_t eb)
{
	return a < b || (a == b && ea > eb);
}

// As tern_cpu_route_topk, per token: softmax in double (max subtracted) rounded to fp32, then k
// passes each taking the best (key, -id) that ranks after the previous pick.
__global__ void route_kernel(int32_t *sel, float *w, float *prob, const float *logits, int64_t T, int64_t E,
			     int64_t k, bool norm)
{
	GRID_STRIDE(t, T)
	{
		const float *l = logits + t * E;
		float *p = prob + t * E;
		double m = -INFINITY, s = 0.0;
		for (int64_t e = 0; e < E; e++)
			m = l[e] > m ? l[e] : m;
		for (int64_t e = 0; e < E; e++)
			s += exp((double)l[e] - m);
		for (int64_t e = 0; e < E; e++)
			p[e] = (float)(exp((double)l[e] - m) / s);
		float prev = INFINITY;
		int64_t pe = -1;
		double vs = 0.0;
		for (int64_t j = 0; j < k; j++) {
			int64_t best = -1;
			float bk = 0.0f;
			for (int64_t e = 0; e < E; e++) {
				float q = route_key(p[e]);
				if (pe >= 0 && !route_after(q, e, prev, pe))
					continue;
				if (best < 0 || route_after(bk, best, q, e))
					best = e, bk = q;
			}
			sel[t * k + j] = (int32_t)best;
			w[t * k + j] = p[best];
			vs += (double)p[best];
			prev = bk;
			pe = best;
		}
		if (norm)
			for (int64_t j = 0; j < k; j++)
				w[t * k + j] = (float)((double)w[t * k + j] / vs);
	}
}

__global__ void count_kernel(int32_t *counts, const int32_t *sel, int64_t n, int64_t E)
{
	GRID_STRIDE(i, n)
	{
		int32_t e = sel[i];
		if (e >= 0 && e < E)
			atomicAdd(&counts[e], 1); // integer adds: the same counts in any order
	}
}

// As tern_cpu_route_topk_bwd, per token in double; choices with a sel outside [0, E) are skipped.
__global__ void route_bwd_kernel(float *dlogits, const float *dw, const float *prob, const int32_t *sel,
				 int64_t T, int64_t E, int64_t k, bool norm)
{
	GRID_STRIDE(t, T)
	{
		const int32_t *s = sel + t * k;
		const float *g = dw + t * k, *p = prob + t * E;
		float *d = dlogits + t * E;
		double S = 0.0, gv = 0.0, dvv = 0.0;
		for (int64_t j = 0; j < k; j++) {
			if (s[j] < 0 || s[j] >= E)
				continue;
			S += (double)p[s[j]];
			gv += (double)g[j] * (double)p[s[j]];
		}
		for (int64_t j = 0; j < k; j++) {
			if (s[j] < 0 || s[j] >= E)
				continue;
			double dvj = norm ? ((double)g[j] - gv / S) / S : (double)g[j];
			dvv += dvj * (double)p[s[j]];
		}
		for (int64_t e = 0; e < E; e++) {
			double dpe = 0.0;
			for (int64_t j = 0; j < k; j++)
				if (s[j] == e)
					dpe += norm ? ((double)g[j] - gv / S) / S : (double)g[j];
			d[e] = (float)((double)p[e] * (dpe - dvv));
		}
	}
}

} // namespace

extern "C" cudaError_t cuk_gather_rows(cudaStream_t s, float *y, const float *x, const int32_t *idx,
				       int64_t n, int64_t Tx, int64_t D)
{
	if (n * D > 0)
		gather_kernel<<<grid_for(n * D), kThreads, 0, s>>>(y, x, idx, n, Tx, D);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_scatter_add_rows(cudaStream_t s, float *y, const float *x, const int32_t *idx,
					    const float *w, int64_t n, int64_t Ty, int64_t D)
{
	if (n * D > 0)
		scatter_kernel<<<grid_for(n * D), kThreads, 0, s>>>(y, x, idx, w, n, Ty, D);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_rowdot(cudaStream_t s, float *out, const float *a, const float *b, int64_t n,
				  int64_t D)
{
	if (n > 0)
		rowdot_kernel<<<(unsigned)(n > 65535 * 8 ? 65535 * 8 : n), kThreads, 0, s>>>(out, a, b, n, D);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_route_topk(cudaStream_t s, int32_t *sel, float *w, float *prob, int32_t *counts,
				      const float *logits, int64_t T, int64_t E, int64_t k, bool norm)
{
	cudaError_t e = cudaMemsetAsync(counts, 0, (size_t)E * 4, s);
	if (e != cudaSuccess || T == 0)
		return e;
	route_kernel<<<grid_for(T), kThreads, 0, s>>>(sel, w, prob, logits, T, E, k, norm);
	count_kernel<<<grid_for(T * k), kThreads, 0, s>>>(counts, sel, T * k, E);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_route_topk_bwd(cudaStream_t s, float *dlogits, const float *dw, const float *prob,
					  const int32_t *sel, int64_t T, int64_t E, int64_t k, bool norm)
{
	if (T > 0)
		route_bwd_kernel<<<grid_for(T), kThreads, 0, s>>>(dlogits, dw, prob, sel, T, E, k, norm);
	return cudaGetLastError();
}
