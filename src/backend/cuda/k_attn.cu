// Flash-style causal GQA attention on CUDA, fp32 (backend.h "attention"; the CPU reference is
// src/backend/cpu/cpu_attention.c). Nothing of size H×T×T exists: the forward keeps an online
// softmax per query row and saves the row's log-sum-exp; the backward recomputes P from it.
//
// Layout of the work: a block of kWarps warps takes kWarps consecutive rows of one head (query
// rows for the forward and dQ, key rows for dK/dV), one row per warp. The rows the block pairs
// them with (keys, or queries) pass through shared memory in tiles of kt rows that every warp of
// the block reads, so each K/V (Q/dO) row is read from memory once per block, not once per row.
// In a warp, lane l holds elements d = l + 32c (c < NC) of its row's vectors; dot products are
// reduced with shuffles in a fixed order, and every sum runs in key (query) order, so results do
// not depend on scheduling. Masks as the CPU: query i sees key j when j <= i, seg[j] == seg[i]
// and, with window > 0, i - j < window.
//
// Deliberately simple (fp32 CUDA cores, no tensor cores): the first version, to be measured and
// replaced by an MMA kernel (bf16/f16 operands, the prec argument) where it pays.
#include "backend/cuda/cu_kernels.h"

#include <math.h>

namespace
{

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * 32;

// Rows per shared-memory tile: two tiles of kt × Dh floats stay within 16 KiB.
inline int tile_rows(int64_t Dh)
{
	int64_t kt = 2048 / Dh;
	return (int)(kt < 1 ? 1 : kt > 32 ? 32 : kt);
}

__device__ inline float warp_sum(float v)
{
	for (int o = 16; o > 0; o >>= 1)
		v += __shfl_xor_sync(0xffffffffu, v, o);
	return v;
}

__device__ inline int64_t first_key(const cuk_attn &a, int64_t i)
{
	return a.window > 0 && i - a.window + 1 > 0 ? i - a.window + 1 : 0;
}

__device__ inline int64_t query_end(const cuk_attn &a, int64_t j)
{
	return a.window > 0 && j + a.window < a.T ? j + a.window : a.T;
}

// Loads rows r0 .. r0+n of a [T, heads, Dh] tensor's head hd into tile [kt][Dh] (zeros past n).
__device__ inline void load_tile(float *tile, const float *src, int64_t r0, int n, int kt, int64_t heads,
				 int64_t hd, int64_t Dh)
{
	for (int64_t k = threadIdx.x; k < (int64_t)kt * Dh; k += blockDim.x) {
		int64_t r = k / Dh, d = k % Dh;
		tile[k] = r < n ? src[((r0 + r) * heads + hd) * Dh + d] : 0.0f;
	}
}

template <int NC>
__global__ void attn_fwd_kernel(float *o, float *lse, const float *q, const float *k, const float *v,
				const int32_t *seg, cuk_attn a, int kt)
{
	extern __shared__ float sm[];
	float *Ks = sm, *Vs = sm + (int64_t)kt * a.Dh;
	int *Ss = (int *)(Vs + (int64_t)kt * a.Dh);
	int64_t nrb = (a.T + kWarps - 1) / kWarps;
	int64_t h = blockIdx.x / nrb, i0 = (blockIdx.x % nrb) * kWarps;
	int64_t g = h / (a.H / a.Hkv), Dh = a.Dh;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t i = i0 + warp;
	bool live = i < a.T;
	int64_t ilast = i0 + kWarps - 1 < a.T - 1 ? i0 + kWarps - 1 : a.T - 1;

	float qr[NC], acc[NC];
	int32_t si = live ? seg[i] : 0;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		qr[c] = live && d < Dh ? q[(i * a.H + h) * Dh + d] : 0.0f;
		acc[c] = 0.0f;
	}
	float m = -INFINITY, l = 0.0f;
	int64_t jlo = live ? first_key(a, i) : 0;
	for (int64_t j0 = first_key(a, i0); j0 <= ilast; j0 += kt) {
		int n = (int)(ilast + 1 - j0 < kt ? ilast + 1 - j0 : kt);
		__syncthreads();
		load_tile(Ks, k, j0, n, kt, a.Hkv, g, Dh);
		load_tile(Vs, v, j0, n, kt, a.Hkv, g, Dh);
		for (int r = threadIdx.x; r < n; r += blockDim.x)
			Ss[r] = seg[j0 + r];
		__syncthreads();
		if (!live)
			continue;
		for (int r = 0; r < n; r++) {
			int64_t j = j0 + r;
			if (j < jlo || j > i || Ss[r] != si)
				continue;
			float part = 0.0f;
			for (int c = 0; c < NC; c++) {
				int64_t d = lane + 32 * c;
				if (d < Dh)
					part += qr[c] * Ks[r * Dh + d];
			}
			float s = a.scale * warp_sum(part);
			if (s > m) {                    // a new maximum: rescale what was summed so far
				float cr = expf(m - s); // 0 for the first key (m = -inf)
				l = l * cr + 1.0f;
				for (int c = 0; c < NC; c++) {
					int64_t d = lane + 32 * c;
					acc[c] = acc[c] * cr + (d < Dh ? Vs[r * Dh + d] : 0.0f);
				}
				m = s;
			} else {
				float p = expf(s - m);
				l += p;
				for (int c = 0; c < NC; c++) {
					int64_t d = lane + 32 * c;
					acc[c] += p * (d < Dh ? Vs[r * Dh + d] : 0.0f);
				}
			}
		}
	}
	if (!live)
		return;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		if (d < Dh)
			o[(i * a.H + h) * Dh + d] = acc[c] / l;
	}
	if (lane == 0)
		lse[h * a.T + i] = m + logf(l);
}

// Dr[h, i] = dO_i · O_i, one warp per row.
__global__ void attn_dr_kernel(float *Dr, const float *dout, const float *o, cuk_attn a)
{
	int64_t r = blockIdx.x * (int64_t)kWarps + (threadIdx.x >> 5);
	int lane = threadIdx.x & 31;
	if (r >= a.H * a.T)
		return;
	int64_t h = r / a.T, i = r % a.T;
	const float *gi = dout + (i * a.H + h) * a.Dh, *oi = o + (i * a.H + h) * a.Dh;
	float part = 0.0f;
	for (int64_t d = lane; d < a.Dh; d += 32)
		part += gi[d] * oi[d];
	part = warp_sum(part);
	if (lane == 0)
		Dr[r] = part;
}

// dQ_i = scale · Σ_j P_ij (dO_i · V_j − Dr_i) K_j, warp per query row, K/V tiles shared.
template <int NC>
__global__ void attn_dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v,
			       const float *lse, const float *Dr, const int32_t *seg, cuk_attn a, int kt)
{
	extern __shared__ float sm[];
	float *Ks = sm, *Vs = sm + (int64_t)kt * a.Dh;
	int *Ss = (int *)(Vs + (int64_t)kt * a.Dh);
	int64_t nrb = (a.T + kWarps - 1) / kWarps;
	int64_t h = blockIdx.x / nrb, i0 = (blockIdx.x % nrb) * kWarps;
	int64_t g = h / (a.H / a.Hkv), Dh = a.Dh;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t i = i0 + warp;
	bool live = i < a.T;
	int64_t ilast = i0 + kWarps - 1 < a.T - 1 ? i0 + kWarps - 1 : a.T - 1;

	float qr[NC], gr[NC], acc[NC];
	int32_t si = live ? seg[i] : 0;
	float L = live ? lse[h * a.T + i] : 0.0f, D = live ? Dr[h * a.T + i] : 0.0f;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		bool in = live && d < Dh;
		qr[c] = in ? q[(i * a.H + h) * Dh + d] : 0.0f;
		gr[c] = in ? dout[(i * a.H + h) * Dh + d] : 0.0f;
		acc[c] = 0.0f;
	}
	int64_t jlo = live ? first_key(a, i) : 0;
	for (int64_t j0 = first_key(a, i0); j0 <= ilast; j0 += kt) {
		int n = (int)(ilast + 1 - j0 < kt ? ilast + 1 - j0 : kt);
		__syncthreads();
		load_tile(Ks, k, j0, n, kt, a.Hkv, g, Dh);
		load_tile(Vs, v, j0, n, kt, a.Hkv, g, Dh);
		for (int r = threadIdx.x; r < n; r += blockDim.x)
			Ss[r] = seg[j0 + r];
		__syncthreads();
		if (!live)
			continue;
		for (int r = 0; r < n; r++) {
			int64_t j = j0 + r;
			if (j < jlo || j > i || Ss[r] != si)
				continue;
			float pq = 0.0f, pv = 0.0f;
			for (int c = 0; c < NC; c++) {
				int64_t d = lane + 32 * c;
				if (d < Dh) {
					pq += qr[c] * Ks[r * Dh + d];
					pv += gr[c] * Vs[r * Dh + d];
				}
			}
			float p = expf(a.scale * warp_sum(pq) - L);
			float ds = p * (warp_sum(pv) - D);
			for (int c = 0; c < NC; c++) {
				int64_t d = lane + 32 * c;
				if (d < Dh)
					acc[c] += ds * Ks[r * Dh + d];
			}
		}
	}
	if (!live)
		return;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		if (d < Dh)
			dq[(i * a.H + h) * Dh + d] = a.scale * acc[c];
	}
}

// dV_j = Σ P_ij dO_i, dK_j = scale · Σ dS_ij Q_i over the queries of every head sharing KV head g:
// warp per key row, Q/dO tiles (with lse, Dr, seg) shared.
template <int NC>
__global__ void attn_dkv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k,
				const float *v, const float *lse, const float *Dr, const int32_t *seg,
				cuk_attn a, int kt)
{
	extern __shared__ float sm[];
	float *Qs = sm, *Gs = sm + (int64_t)kt * a.Dh;
	float *Ls = Gs + (int64_t)kt * a.Dh, *Ds = Ls + kt;
	int *Ss = (int *)(Ds + kt);
	int64_t nrb = (a.T + kWarps - 1) / kWarps;
	int64_t g = blockIdx.x / nrb, j0b = (blockIdx.x % nrb) * kWarps;
	int64_t group = a.H / a.Hkv, Dh = a.Dh;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	int64_t j = j0b + warp;
	bool live = j < a.T;
	int64_t jlast = j0b + kWarps - 1 < a.T - 1 ? j0b + kWarps - 1 : a.T - 1;

	float kr[NC], vr[NC], ak[NC], av[NC];
	int32_t sj = live ? seg[j] : 0;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		bool in = live && d < Dh;
		kr[c] = in ? k[(j * a.Hkv + g) * Dh + d] : 0.0f;
		vr[c] = in ? v[(j * a.Hkv + g) * Dh + d] : 0.0f;
		ak[c] = av[c] = 0.0f;
	}
	int64_t iend = live ? query_end(a, j) : 0, qend = query_end(a, jlast);
	for (int64_t h = g * group; h < (g + 1) * group; h++)
		for (int64_t q0 = j0b; q0 < qend; q0 += kt) {
			int n = (int)(qend - q0 < kt ? qend - q0 : kt);
			__syncthreads();
			load_tile(Qs, q, q0, n, kt, a.H, h, Dh);
			load_tile(Gs, dout, q0, n, kt, a.H, h, Dh);
			for (int r = threadIdx.x; r < n; r += blockDim.x) {
				Ls[r] = lse[h * a.T + q0 + r];
				Ds[r] = Dr[h * a.T + q0 + r];
				Ss[r] = seg[q0 + r];
			}
			__syncthreads();
			if (!live)
				continue;
			for (int r = 0; r < n; r++) {
				int64_t i = q0 + r;
				if (i < j || i >= iend || Ss[r] != sj)
					continue;
				float pq = 0.0f, pv = 0.0f;
				for (int c = 0; c < NC; c++) {
					int64_t d = lane + 32 * c;
					if (d < Dh) {
						pq += Qs[r * Dh + d] * kr[c];
						pv += Gs[r * Dh + d] * vr[c];
					}
				}
				float p = expf(a.scale * warp_sum(pq) - Ls[r]);
				float ds = p * (warp_sum(pv) - Ds[r]);
				for (int c = 0; c < NC; c++) {
					int64_t d = lane + 32 * c;
					if (d < Dh) {
						av[c] += p * Gs[r * Dh + d];
						ak[c] += ds * Qs[r * Dh + d];
					}
				}
			}
		}
	if (!live)
		return;
	for (int c = 0; c < NC; c++) {
		int64_t d = lane + 32 * c;
		if (d < Dh) {
			dk[(j * a.Hkv + g) * Dh + d] = a.scale * ak[c];
			dv[(j * a.Hkv + g) * Dh + d] = av[c];
		}
	}
}

inline int chunks_of(int64_t Dh) { return Dh <= 32 ? 1 : Dh <= 64 ? 2 : Dh <= 128 ? 4 : Dh <= 256 ? 8 : 16; }

template <int NC>
cudaError_t fwd_as(cudaStream_t s, float *o, float *lse, const float *q, const float *k, const float *v,
		   const int32_t *seg, const cuk_attn &a)
{
	int kt = tile_rows(a.Dh);
	size_t smem = (size_t)(2 * kt * a.Dh) * sizeof(float) + (size_t)kt * sizeof(int);
	int64_t blocks = a.H * ((a.T + kWarps - 1) / kWarps);
	attn_fwd_kernel<NC><<<(unsigned)blocks, kThreads, smem, s>>>(o, lse, q, k, v, seg, a, kt);
	return cudaGetLastError();
}

template <int NC>
cudaError_t bwd_as(cudaStream_t s, float *dq, float *dk, float *dv, const float *dout, const float *q,
		   const float *k, const float *v, const float *lse, const int32_t *seg, float *Dr,
		   const cuk_attn &a)
{
	int kt = tile_rows(a.Dh);
	int64_t rb = (a.T + kWarps - 1) / kWarps;
	size_t smem_q = (size_t)(2 * kt * a.Dh) * sizeof(float) + (size_t)kt * sizeof(int);
	attn_dq_kernel<NC>
		<<<(unsigned)(a.H * rb), kThreads, smem_q, s>>>(dq, dout, q, k, v, lse, Dr, seg, a, kt);
	size_t smem_kv = (size_t)(2 * kt * a.Dh + 2 * kt) * sizeof(float) + (size_t)kt * sizeof(int);
	attn_dkv_kernel<NC><<<(unsigned)(a.Hkv * rb), kThreads, smem_kv, s>>>(dk, dv, dout, q, k, v, lse, Dr,
									      seg, a, kt);
	return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t cuk_attention(cudaStream_t s, float *o, float *lse, const float *q, const float *k,
				     const float *v, const int32_t *seg, const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	switch (chunks_of(a->Dh)) {
	case 1: return fwd_as<1>(s, o, lse, q, k, v, seg, *a);
	case 2: return fwd_as<2>(s, o, lse, q, k, v, seg, *a);
	case 4: return fwd_as<4>(s, o, lse, q, k, v, seg, *a);
	case 8: return fwd_as<8>(s, o, lse, q, k, v, seg, *a);
	default: return fwd_as<16>(s, o, lse, q, k, v, seg, *a);
	}
}

extern "C" cudaError_t cuk_attention_bwd(cudaStream_t s, float *dq, float *dk, float *dv, const float *dout,
					 const float *q, const float *k, const float *v, const float *o,
					 const float *lse, const int32_t *seg, float *Dr,
					 const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	int64_t rows = a->H * a->T;
	attn_dr_kernel<<<(unsigned)((rows + kWarps - 1) / kWarps), kThreads, 0, s>>>(Dr, dout, o, *a);
	switch (chunks_of(a->Dh)) {
	case 1: return bwd_as<1>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 2: return bwd_as<2>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 4: return bwd_as<4>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 8: return bwd_as<8>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	default: return bwd_as<16>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	}
}
