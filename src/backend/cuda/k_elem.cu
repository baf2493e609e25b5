// Elementwise ops, the optimizer, RMSNorm, RoPE, the MLP activation and the embedding on CUDA, in
// the operation order of the CPU reference (src/backend/cpu/cpu_ops.c, cpu_layers.c): fp32 where
// it computes in fp32, double where it sums or evaluates in double. Built with --fmad=false so that
// no multiply-add is fused (the reference builds with -ffp-contract=off). Row reductions run in
// one block per row in a fixed tree order: results do not depend on scheduling.
#include "backend/cuda/cu_kernels.h"
#include "backend/cuda/k_pdl.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <initializer_list>
#include <stdlib.h>
#include <string.h>

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

// The sum of v over the block (blockDim.x a multiple of 32, at most 1024), in a fixed order;
// every thread gets it. sh: 32 doubles of shared memory.
__device__ double block_sum(double v, double *sh)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
	__syncthreads(); // sh may still be read by a previous call
	if (lane == 0)
		sh[warp] = v;
	__syncthreads();
	double t = 0.0;
	for (int k = 0; k < nw; k++)
		t += sh[k];
	return t;
}

__device__ inline uint32_t hash_mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}

// tern_dropout_hash (backend.h)
__device__ inline uint32_t dropout_hash(uint64_t key, uint32_t i)
{
	uint32_t h = hash_mix(i ^ (uint32_t)key);
	return hash_mix(h ^ (uint32_t)(key >> 32) ^ 0x9e3779b9U);
}

__global__ void dropout_kernel(float *y, const float *x, int64_t n, uint32_t thr, float scale, uint64_t key)
{
	GRID_STRIDE(i, n)
	y[i] = dropout_hash(key, (uint32_t)i) >= thr ? x[i] * scale : 0.0f;
}

__global__ void axpy_kernel(float *y, const float *x, int64_t n, float alpha)
{
	GRID_STRIDE(i, n)
	y[i] = y[i] + alpha * x[i];
}

__global__ void scale_kernel(float *x, int64_t n, float alpha)
{
	GRID_STRIDE(i, n)
	x[i] = x[i] * alpha;
}

__global__ void scale_dev_kernel(float *x, int64_t n, const float *a)
{
	float alpha = a[0];
	GRID_STRIDE(i, n)
	x[i] = x[i] * alpha;
}

__global__ void adamw_kernel(float *pp, const float *gp, float *mp, float *vp, int64_t n, cuk_adamw_c c)
{
	GRID_STRIDE(i, n)
	{
		float p = pp[i] * c.decay;
		float g = gp[i], mi = mp[i], vi = vp[i];
		mi = c.lerp_small ? mi + c.one_minus_b1 * (g - mi) : g - (g - mi) * (1.0f - c.one_minus_b1);
		vi = vi * c.b2;
		vi = vi + c.one_minus_b2 * g * g;
		float denom = sqrtf(vi) / c.bc2_sqrt + c.eps;
		pp[i] = p + c.neg_step * mi / denom;
		mp[i] = mi;
		vp[i] = vi;
	}
}

// Pass one: block b sums its slice [b·chunk, (b+1)·chunk) of x (thread k: k, k + 1024, ... of it)
// in double, then the fixed tree; part[b] = the block's sum. The slices depend on n alone, so the
// result does not depend on the device.
__global__ void sumsq_part_kernel(double *part, const float *x, int64_t n, int64_t chunk)
{
	__shared__ double sh[32];
	int64_t i0 = blockIdx.x * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
	double s = 0.0;
	for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x)
		s += (double)x[i] * (double)x[i];
	s = block_sum(s, sh);
	if (threadIdx.x == 0)
		part[blockIdx.x] = s;
}

// Pass two, one block: the parts in the fixed tree.
__global__ void sumsq_final_kernel(float *out, const double *part, int nparts, bool accumulate)
{
	__shared__ double sh[32];
	double s = threadIdx.x < nparts ? part[threadIdx.x] : 0.0;
	s = block_sum(s, sh);
	if (threadIdx.x == 0)
		out[0] = (float)(accumulate ? (double)out[0] + s : s);
}

__global__ void clip_kernel(float *x, int64_t n, const float *sumsq, float max_norm)
{
	float c = max_norm / (sqrtf(sumsq[0]) + 1e-6f);
	if (!(c < 1.0f))
		return;
	GRID_STRIDE(i, n)
	x[i] = x[i] * c;
}

__device__ inline float load_any(const void *p, int dt, int64_t i)
{
	if (dt == 1)
		return __half2float(static_cast<const __half *>(p)[i]);
	if (dt == 2)
		return __bfloat162float(static_cast<const __nv_bfloat16 *>(p)[i]);
	return static_cast<const float *>(p)[i];
}

__device__ inline void store_any(void *p, int dt, int64_t i, float v)
{
	if (dt == 1)
		static_cast<__half *>(p)[i] = __float2half_rn(v);
	else if (dt == 2)
		static_cast<__nv_bfloat16 *>(p)[i] = __float2bfloat16_rn(v);
	else
		static_cast<float *>(p)[i] = v;
}

__global__ void cast_kernel(void *dst, int dt, const void *src, int st, int64_t n)
{
	GRID_STRIDE(i, n)
	store_any(dst, dt, i, load_any(src, st, i));
}

__device__ inline double act_value(double g, int relu2)
{
	if (relu2)
		return g > 0.0 ? g * g : 0.0;
	return g / (1.0 + exp(-g));
}

__global__ void swiglu_kernel(float *h, const float *g, const float *u, int64_t n, int relu2)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	GRID_STRIDE(i, n)
	{
		float a = (float)act_value((double)g[i], relu2);
		h[i] = a * u[i];
	}
}

// dg, du of one element (the reference's order, in double)
__device__ inline void swiglu_grad(float &dg, float &du, float dh, float g, float u, int relu2)
{
	double gi = g, d;
	if (relu2) {
		d = gi > 0.0 ? 2.0 * gi : 0.0;
	} else {
		double sg = 1.0 / (1.0 + exp(-gi));
		d = sg * (1.0 + gi * (1.0 - sg));
	}
	dg = (float)((double)dh * (double)u * d);
	du = (float)((double)dh * act_value(gi, relu2));
}

__global__ void swiglu_bwd_kernel(float *dg, float *du, const float *dh, const float *g, const float *u,
				  int64_t n, int relu2)
{
	GRID_STRIDE(i, n)
	swiglu_grad(dg[i], du[i], dh[i], g[i], u[i], relu2);
}

// The same four elements per thread with 16-byte loads and stores (n4 = n / 4, every pointer
// 16-byte aligned): the scalar kernels moved 1.4-2.1 TB/s on an H100. Each thread reads its
// elements before it writes them, so the outputs may be the inputs as backend.h allows.
__global__ void swiglu4_kernel(float4 *h, const float4 *g, const float4 *u, int64_t n4, int relu2)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	GRID_STRIDE(i, n4)
	{
		float4 a = g[i], b = u[i], r;
		r.x = (float)act_value((double)a.x, relu2) * b.x;
		r.y = (float)act_value((double)a.y, relu2) * b.y;
		r.z = (float)act_value((double)a.z, relu2) * b.z;
		r.w = (float)act_value((double)a.w, relu2) * b.w;
		h[i] = r;
	}
}

__global__ void swiglu_bwd4_kernel(float4 *dg, float4 *du, const float4 *dh, const float4 *g, const float4 *u,
				   int64_t n4, int relu2)
{
	GRID_STRIDE(i, n4)
	{
		float4 d = dh[i], a = g[i], b = u[i], rg, ru;
		swiglu_grad(rg.x, ru.x, d.x, a.x, b.x, relu2);
		swiglu_grad(rg.y, ru.y, d.y, a.y, b.y, relu2);
		swiglu_grad(rg.z, ru.z, d.z, a.z, b.z, relu2);
		swiglu_grad(rg.w, ru.w, d.w, a.w, b.w, relu2);
		dg[i] = rg;
		du[i] = ru;
	}
}

inline bool al16(const void *p) { return ((uintptr_t)p & 15) == 0; }

// One block per row.
// ADD (add_rmsnorm): first x[t] += add[t] (each thread its own columns, read back below), so the
// values of axpy then rmsnorm.
template <bool ADD>
__global__ void rmsnorm_kernel(float *y, float *rstd, float *x, const float *add, const float *w, int64_t D,
			       float eps)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	__shared__ double sh[32];
	int64_t t = blockIdx.x;
	float *xt = x + t * D;
	float *yt = y + t * D;
	double ss = 0.0;
	for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
		if (ADD)
			xt[j] = xt[j] + add[t * D + j];
		ss += (double)xt[j] * (double)xt[j];
	}
	ss = block_sum(ss, sh);
	float r = (float)(1.0 / sqrt((double)(float)(ss / (double)D) + (double)eps));
	if (threadIdx.x == 0)
		rstd[t] = r;
	for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
		float nv = xt[j] * r;
		yt[j] = nv * w[j];
	}
}

// One element of the RMSNorm input gradient: r·w·dy − x·c, c = r³ · Σ w·dy·x / D (fp64)
__device__ inline double norm_grad(float w, float dy, float x, double r, double c)
{
	return r * (double)w * (double)dy - (double)x * c;
}

__global__ void rmsnorm_bwd_kernel(float *dx, const float *dy, const float *x, const float *w,
				   const float *rstd, int64_t D, bool accumulate)
{
	__shared__ double sh[32];
	int64_t t = blockIdx.x;
	const float *xt = x + t * D, *dyt = dy + t * D;
	float *dxt = dx + t * D;
	double r = (double)rstd[t], s = 0.0;
	for (int64_t j = threadIdx.x; j < D; j += blockDim.x)
		s += (double)w[j] * (double)dyt[j] * (double)xt[j];
	s = block_sum(s, sh);
	double c = r * r * r * s / (double)D;
	for (int64_t j = threadIdx.x; j < D; j += blockDim.x) {
		double gv = norm_grad(w[j], dyt[j], xt[j], r, c);
		dxt[j] = accumulate ? (float)((double)dxt[j] + gv) : (float)gv;
	}
}

// rmsnorm_kernel and rmsnorm_bwd_kernel with the row in registers (the default since the 8B step
// timed them on an H100: rmsnorm 6.5 -> 3.2 ms, the step 1.014-1.015x; TERN_CUDA_NORM=row keeps the
// kernels above): 256 threads a row, VPT float4 a thread (D % 4 == 0, D <= 1024 VPT, every
// pointer 16-byte aligned: the launch checks), each element read once with 16-byte loads and
// written once. The same products; the fp64 row sum adds the elements in another order (each
// thread its four-element groups, then block_sum), which moves the float result by at most an ulp.
template <bool ADD, int VPT>
__global__ void rmsnorm4_kernel(float *y, float *rstd, float *x, const float *add, const float *w, int64_t D,
				float eps)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	__shared__ double sh[32];
	int64_t t = blockIdx.x, d4 = D / 4;
	float4 *xt = reinterpret_cast<float4 *>(x + t * D);
	float4 v[VPT], g[VPT];
	double ss = 0.0;
#pragma unroll
	for (int k = 0; k < VPT; k++) { // w's loads first: they land during the row's sum
		int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
		if (j < d4)
			g[k] = reinterpret_cast<const float4 *>(w)[j];
	}
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
		if (j >= d4)
			continue;
		v[k] = xt[j];
		if (ADD) {
			float4 a = reinterpret_cast<const float4 *>(add + t * D)[j];
			v[k].x = v[k].x + a.x;
			v[k].y = v[k].y + a.y;
			v[k].z = v[k].z + a.z;
			v[k].w = v[k].w + a.w;
			xt[j] = v[k];
		}
		ss += (double)v[k].x * (double)v[k].x;
		ss += (double)v[k].y * (double)v[k].y;
		ss += (double)v[k].z * (double)v[k].z;
		ss += (double)v[k].w * (double)v[k].w;
	}
	ss = block_sum(ss, sh);
	float r = (float)(1.0 / sqrt((double)(float)(ss / (double)D) + (double)eps));
	if (threadIdx.x == 0)
		rstd[t] = r;
	float4 *yt = reinterpret_cast<float4 *>(y + t * D);
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
		if (j >= d4)
			continue;
		float4 o;
		o.x = (v[k].x * r) * g[k].x;
		o.y = (v[k].y * r) * g[k].y;
		o.z = (v[k].z * r) * g[k].z;
		o.w = (v[k].w * r) * g[k].w;
		yt[j] = o;
	}
}

template <int VPT>
__global__ void rmsnorm_bwd4_kernel(float *dx, const float *dy, const float *x, const float *w,
				    const float *rstd, int64_t D, bool accumulate)
{
	__shared__ double sh[32];
	int64_t t = blockIdx.x, d4 = D / 4;
	const float4 *xt = reinterpret_cast<const float4 *>(x + t * D),
		     *dyt = reinterpret_cast<const float4 *>(dy + t * D),
		     *w4 = reinterpret_cast<const float4 *>(w);
	float4 xv[VPT], dv[VPT], wv[VPT];
	double r = (double)rstd[t], s = 0.0;
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
		if (j >= d4)
			continue;
		xv[k] = xt[j];
		dv[k] = dyt[j];
		wv[k] = w4[j];
		s += (double)wv[k].x * (double)dv[k].x * (double)xv[k].x;
		s += (double)wv[k].y * (double)dv[k].y * (double)xv[k].y;
		s += (double)wv[k].z * (double)dv[k].z * (double)xv[k].z;
		s += (double)wv[k].w * (double)dv[k].w * (double)xv[k].w;
	}
	s = block_sum(s, sh);
	double c = r * r * r * s / (double)D;
	float4 *dxt = reinterpret_cast<float4 *>(dx + t * D);
#pragma unroll
	for (int k = 0; k < VPT; k++) {
		int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
		if (j >= d4)
			continue;
		double gx = norm_grad(wv[k].x, dv[k].x, xv[k].x, r, c),
		       gy = norm_grad(wv[k].y, dv[k].y, xv[k].y, r, c),
		       gz = norm_grad(wv[k].z, dv[k].z, xv[k].z, r, c),
		       gw = norm_grad(wv[k].w, dv[k].w, xv[k].w, r, c);
		float4 o;
		if (accumulate) {
			float4 p = dxt[j];
			o = make_float4((float)((double)p.x + gx), (float)((double)p.y + gy),
					(float)((double)p.z + gz), (float)((double)p.w + gw));
		} else {
			o = make_float4((float)gx, (float)gy, (float)gz, (float)gw);
		}
		dxt[j] = o;
	}
}

// The rotation of one pair (x0, x1) of a head's row at xr.
__device__ inline void rope_pair(float *xr, int64_t i, int64_t half, float x0, float x1, float c, float s)
{
	float a = x0 * c, b = x1 * s, d = x1 * c, e = x0 * s;
	xr[i] = a - b;
	xr[i + half] = d + e;
}

// One thread per (t, i < Dh/2), looping over heads eight at a time: the sixteen loads of a group
// are issued before its stores (one head at a time, each store had to land before the next load:
// the 8B profile of 2026-12-06: rope 4.3 ms for 190 calls, about 1.9 TB/s). The same values.
__global__ void rope_kernel(float *x, const int32_t *pos, const float *fr, int64_t T, int64_t H, int64_t Dh,
			    float sign)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	int64_t half = Dh / 2;
	GRID_STRIDE(k, T * half)
	{
		int64_t t = k / half, i = k % half;
		float th = (float)pos[t] * fr[i];
		float c = (float)cos((double)th), s = sign * (float)sin((double)th);
		float *row = x + t * H * Dh;
		int64_t h = 0;
		for (; h + 8 <= H; h += 8) {
			float x0[8], x1[8];
#pragma unroll
			for (int q = 0; q < 8; q++) {
				x0[q] = row[(h + q) * Dh + i];
				x1[q] = row[(h + q) * Dh + i + half];
			}
#pragma unroll
			for (int q = 0; q < 8; q++)
				rope_pair(row + (h + q) * Dh, i, half, x0[q], x1[q], c, s);
		}
		for (; h < H; h++)
			rope_pair(row + h * Dh, i, half, row[h * Dh + i], row[h * Dh + i + half], c, s);
	}
}

// One thread per (t, h, i < Dh/2): for a few tokens (decoding), where rope_kernel would run Dh/2
// threads per token, each through the H heads one after another (a dependent round trip to memory
// per head: H of them for the whole launch). The same operations per element, so the same values.
// Heads H .. H + H2 of token t are heads 0 .. H2 of x2 (rope2: a decode step's q and k; H2 = 0:
// x alone).
__global__ void rope_heads_kernel(float *x, int64_t H, float *x2, int64_t H2, const int32_t *pos,
				  const float *fr, int64_t T, int64_t Dh, float sign)
{
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	int64_t half = Dh / 2, HH = H + H2;
	GRID_STRIDE(k, T * HH * half)
	{
		int64_t row = k / half, i = k % half, t = row / HH, h = row - t * HH; // row: (t, h)
		float th = (float)pos[t] * fr[i];
		float c = (float)cos((double)th), s = sign * (float)sin((double)th);
		float *xr = h < H ? x + (t * H + h) * Dh : x2 + (t * H2 + h - H) * Dh;
		rope_pair(xr, i, half, xr[i], xr[i + half], c, s);
	}
}

__global__ void embed_kernel(float *y, const int32_t *ids, const void *E, int dt, int64_t V, int64_t D,
			     int64_t T)
{
	GRID_STRIDE(k, T * D)
	{
		int64_t t = k / D, j = k % D;
		int32_t id = ids[t];
		y[k] = id >= 0 && id < V ? load_any(E, dt, (int64_t)id * D + j) : __int_as_float(0x7fc00000);
	}
}

// Thread j owns column j of dE: tokens in order, so repeated ids add in token order.
__global__ void embed_bwd_kernel(float *dE, const float *dy, const int32_t *ids, int64_t T, int64_t V,
				 int64_t D)
{
	GRID_STRIDE(j, D)
	for (int64_t t = 0; t < T; t++) {
		int32_t id = ids[t];
		if (id < 0 || id >= V)
			continue;
		float *dst = dE + (int64_t)id * D + j;
		*dst = *dst + dy[t * D + j];
	}
}

unsigned row_threads(int64_t D) { return D >= 1024 ? 1024 : D >= 256 ? 256 : 64; }

// The float4 row kernels' float4 per thread at 256 threads (1, 2, 4 or 8), or 0 where they do not
// apply (TERN_CUDA_NORM=row, D % 4, D > 8192, a pointer off 16 bytes).
int norm_vpt(int64_t D, std::initializer_list<const void *> ptrs)
{
	static int on = -1;
	if (on < 0) {
		const char *e = getenv("TERN_CUDA_NORM");
		on = !e || strcmp(e, "row");
	}
	if (!on || D % 4 || D > 8192)
		return 0;
	for (const void *p : ptrs)
		if (p && !al16(p))
			return 0;
	int64_t per = (D / 4 + 255) / 256;
	return per <= 1 ? 1 : per <= 2 ? 2 : per <= 4 ? 4 : 8;
}

template <bool ADD>
cudaError_t launch_rmsnorm4(int vpt, cudaStream_t s, unsigned rows, float *y, float *rstd, float *x,
			    const float *add, const float *w, int64_t D, float eps)
{
	switch (vpt) {
	case 1:
		return pdl_launch(rmsnorm4_kernel<ADD, 1>, dim3(rows), dim3(256), 0, s, y, rstd, x, add, w, D,
				  eps);
	case 2:
		return pdl_launch(rmsnorm4_kernel<ADD, 2>, dim3(rows), dim3(256), 0, s, y, rstd, x, add, w, D,
				  eps);
	case 4:
		return pdl_launch(rmsnorm4_kernel<ADD, 4>, dim3(rows), dim3(256), 0, s, y, rstd, x, add, w, D,
				  eps);
	default:
		return pdl_launch(rmsnorm4_kernel<ADD, 8>, dim3(rows), dim3(256), 0, s, y, rstd, x, add, w, D,
				  eps);
	}
}

} // namespace

extern "C" cudaError_t cuk_dropout(cudaStream_t s, float *y, const float *x, int64_t n, uint32_t thr,
				   float scale, uint64_t key)
{
	dropout_kernel<<<grid_for(n), kThreads, 0, s>>>(y, x, n, thr, scale, key);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_axpy(cudaStream_t s, float *y, const float *x, int64_t n, float alpha)
{
	axpy_kernel<<<grid_for(n), kThreads, 0, s>>>(y, x, n, alpha);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_scale(cudaStream_t s, float *x, int64_t n, float alpha)
{
	scale_kernel<<<grid_for(n), kThreads, 0, s>>>(x, n, alpha);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_scale_dev(cudaStream_t s, float *y, int64_t n, const float *a)
{
	scale_dev_kernel<<<grid_for(n), kThreads, 0, s>>>(y, n, a);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v, int64_t n,
				 const struct cuk_adamw_c *c)
{
	adamw_kernel<<<grid_for(n), kThreads, 0, s>>>(p, g, m, v, n, *c);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_sumsq(cudaStream_t s, float *out, const float *x, int64_t n, bool accumulate,
				 double *part)
{
	int64_t per = 1024 * 16; // at least 16 elements a thread before a slice of its own
	int64_t nb = (n + per - 1) / per;
	nb = nb < 1 ? 1 : nb > CUK_SUMSQ_PARTS ? CUK_SUMSQ_PARTS : nb;
	int64_t chunk = (n + nb - 1) / nb;
	sumsq_part_kernel<<<(unsigned)nb, 1024, 0, s>>>(part, x, n, chunk);
	sumsq_final_kernel<<<1, CUK_SUMSQ_PARTS, 0, s>>>(out, part, (int)nb, accumulate);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_clip(cudaStream_t s, float *x, int64_t n, const float *sumsq, float max_norm)
{
	clip_kernel<<<grid_for(n), kThreads, 0, s>>>(x, n, sumsq, max_norm);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_cast(cudaStream_t s, void *dst, int dt, const void *src, int st, int64_t n)
{
	cast_kernel<<<grid_for(n), kThreads, 0, s>>>(dst, dt, src, st, n);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_swiglu(cudaStream_t s, float *h, const float *g, const float *u, int64_t n,
				  int relu2)
{
	if (n % 4 == 0 && al16(h) && al16(g) && al16(u))
		return pdl_launch(swiglu4_kernel, dim3(grid_for(n / 4)), dim3(kThreads), 0, s, (float4 *)h,
				  (const float4 *)g, (const float4 *)u, n / 4, relu2);
	return pdl_launch(swiglu_kernel, dim3(grid_for(n)), dim3(kThreads), 0, s, h, g, u, n, relu2);
}

extern "C" cudaError_t cuk_swiglu_bwd(cudaStream_t s, float *dg, float *du, const float *dh, const float *g,
				      const float *u, int64_t n, int relu2)
{
	if (n % 4 == 0 && al16(dg) && al16(du) && al16(dh) && al16(g) && al16(u))
		swiglu_bwd4_kernel<<<grid_for(n / 4), kThreads, 0, s>>>((float4 *)dg, (float4 *)du,
									(const float4 *)dh, (const float4 *)g,
									(const float4 *)u, n / 4, relu2);
	else
		swiglu_bwd_kernel<<<grid_for(n), kThreads, 0, s>>>(dg, du, dh, g, u, n, relu2);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_rmsnorm(cudaStream_t s, float *y, float *rstd, const float *x, const float *w,
				   int64_t T, int64_t D, float eps)
{
	int vpt = norm_vpt(D, {y, x, w});
	for (int64_t t0 = 0; t0 < T; t0 += 65535) { // grid.x rows per launch
		int64_t tn = T - t0 < 65535 ? T - t0 : 65535;
		cudaError_t e =
			vpt ? launch_rmsnorm4<false>(vpt, s, (unsigned)tn, y + t0 * D, rstd + t0,
						     const_cast<float *>(x + t0 * D), nullptr, w, D, eps)
			    : pdl_launch(rmsnorm_kernel<false>, dim3((unsigned)tn), dim3(row_threads(D)), 0,
					 s, y + t0 * D, rstd + t0, const_cast<float *>(x + t0 * D),
					 (const float *)nullptr, w, D, eps);
		if (e != cudaSuccess)
			return e;
	}
	return cudaSuccess;
}

extern "C" cudaError_t cuk_add_rmsnorm(cudaStream_t s, float *h, float *y, float *rstd, const float *x,
				       const float *w, int64_t T, int64_t D, float eps)
{
	int vpt = norm_vpt(D, {h, y, x, w});
	for (int64_t t0 = 0; t0 < T; t0 += 65535) { // grid.x rows per launch
		int64_t tn = T - t0 < 65535 ? T - t0 : 65535;
		cudaError_t e =
			vpt ? launch_rmsnorm4<true>(vpt, s, (unsigned)tn, y + t0 * D, rstd + t0, h + t0 * D,
						    x + t0 * D, w, D, eps)
			    : pdl_launch(rmsnorm_kernel<true>, dim3((unsigned)tn), dim3(row_threads(D)), 0, s,
					 y + t0 * D, rstd + t0, h + t0 * D, x + t0 * D, w, D, eps);
		if (e != cudaSuccess)
			return e;
	}
	return cudaSuccess;
}

extern "C" cudaError_t cuk_rmsnorm_bwd(cudaStream_t s, float *dx, const float *dy, const float *x,
				       const float *w, const float *rstd, int64_t T, int64_t D,
				       bool accumulate)
{
	int vpt = norm_vpt(D, {dx, dy, x, w});
	for (int64_t t0 = 0; t0 < T; t0 += 65535) {
		int64_t tn = T - t0 < 65535 ? T - t0 : 65535;
		float *o = dx + t0 * D;
		const float *g = dy + t0 * D, *v = x + t0 * D, *r = rstd + t0;
		switch (vpt) {
		case 0:
			rmsnorm_bwd_kernel<<<(unsigned)tn, row_threads(D), 0, s>>>(o, g, v, w, r, D,
										   accumulate);
			break;
		case 1:
			rmsnorm_bwd4_kernel<1><<<(unsigned)tn, 256, 0, s>>>(o, g, v, w, r, D, accumulate);
			break;
		case 2:
			rmsnorm_bwd4_kernel<2><<<(unsigned)tn, 256, 0, s>>>(o, g, v, w, r, D, accumulate);
			break;
		case 4:
			rmsnorm_bwd4_kernel<4><<<(unsigned)tn, 256, 0, s>>>(o, g, v, w, r, D, accumulate);
			break;
		default: rmsnorm_bwd4_kernel<8><<<(unsigned)tn, 256, 0, s>>>(o, g, v, w, r, D, accumulate);
		}
	}
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_rope(cudaStream_t s, float *x, const int32_t *pos, const float *inv_freq,
				int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	if (T <= 16) // a few tokens: a thread per head too (rope_heads_kernel, through cuk_rope2)
		return cuk_rope2(s, x, H, NULL, 0, pos, inv_freq, T, Dh, inverse);
	return pdl_launch(rope_kernel, dim3(grid_for(T * (Dh / 2))), dim3(kThreads), 0, s, x, pos, inv_freq,
			  T, H, Dh, inverse ? -1.0f : 1.0f);
}

extern "C" cudaError_t cuk_rope2(cudaStream_t s, float *x, int64_t H, float *x2, int64_t H2,
				 const int32_t *pos, const float *inv_freq, int64_t T, int64_t Dh,
				 bool inverse)
{
	if (T > 16) { // rope_kernel's walk over the heads: one tensor at a time
		cudaError_t e = cuk_rope(s, x, pos, inv_freq, T, H, Dh, inverse);
		return e != cudaSuccess ? e : cuk_rope(s, x2, pos, inv_freq, T, H2, Dh, inverse);
	}
	return pdl_launch(rope_heads_kernel, dim3(grid_for(T * (H + H2) * (Dh / 2))), dim3(kThreads), 0, s, x,
			  H, x2, H2, pos, inv_freq, T, Dh, inverse ? -1.0f : 1.0f);
}

extern "C" cudaError_t cuk_embed(cudaStream_t s, float *y, const int32_t *ids, const void *E, int dt,
				 int64_t V, int64_t D, int64_t T)
{
	embed_kernel<<<grid_for(T * D), kThreads, 0, s>>>(y, ids, E, dt, V, D, T);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_embed_bwd(cudaStream_t s, float *dE, const float *dy, const int32_t *ids,
				     int64_t T, int64_t V, int64_t D)
{
	embed_bwd_kernel<<<grid_for(D), kThreads, 0, s>>>(dE, dy, ids, T, V, D);
	return cudaGetLastError();
}
