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
#include "backend/cuda/k_mma.cuh"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

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

// ---- the tensor-core pieces (cuk_attn.bf16): bf16 operands, fp32 accumulation, sm_80 and later --
//
// The bf16 rounding, the m16n8k16 MMA (and its emulation), the quad reductions, the mask and the
// online softmax shared by the kernels of the next section. Score accumulators are laid out as
// the A operand of the next product (the C fragment of two adjacent n8 tiles is the A fragment of
// one k16 step), so P and dS go from registers into the second product without shared memory.
// Every output element is written by one thread after sums in a fixed order: results do not
// depend on scheduling. The softmax runs in base 2 (scores times scale·log2 e); lse is stored in
// base e.
namespace
{

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// bf16 rounding by hand: the emulation's and the pre-sm_80 path of pack2_fast (sm_80+ has cvt)
#if defined(TERN_CUDA_EMU) || !defined(__CUDA_ARCH__) || __CUDA_ARCH__ < 800
__device__ inline uint32_t bf16_bits(float x)
{
	uint32_t u = __float_as_uint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (u >> 16) | 0x40u; // a NaN stays a NaN
	return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

__device__ inline uint32_t pack2(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }
#endif

#if defined(TERN_CUDA_EMU) // the emulated ldmatrix's loads
// two bf16 at p (p even-aligned): the low half is p[0]
__device__ inline uint32_t ld_pair(const uint16_t *p)
{
	uint32_t u;
	memcpy(&u, p, 4);
	return u;
}
#endif

// 2^x by the special-function unit alone (ex2.approx.ftz): exp2f's own path is the same MUFU.EX2
// with a range fix-up for results below 2^-126 (about seven more instructions a call); here those
// flush to 0, as −∞ gives 0. The emulation keeps exp2f (the same values outside that range).
__device__ inline float exp2_fast(float x)
{
#if defined(TERN_CUDA_EMU) || !defined(__CUDA_ARCH__)
	return exp2f(x);
#else
	float y;
	asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
	return y;
#endif
}

// Whether p holds in every lane of the warp; in some lane.
__device__ inline bool warp_all(bool p)
{
#if defined(TERN_CUDA_EMU)
	bool all[32];
	emu_warp_share(&p, sizeof p, all);
	for (int l = 0; l < 32; l++)
		if (!all[l])
			return false;
	return true;
#else
	return __all_sync(0xffffffffu, p) != 0;
#endif
}

__device__ inline bool warp_any(bool p) { return !warp_all(!p); }

__device__ inline float quad_max(float v)
{
	v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
	return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}

__device__ inline float quad_sum(float v)
{
	v += __shfl_xor_sync(0xffffffffu, v, 1);
	return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// Query i sees key j (backend.h): a real query row (then j <= i is a real key too), one segment,
// inside the window.
__device__ inline bool sees(const cuk_attn &a, int64_t i, int64_t j, int32_t si, int32_t sj)
{
	return i < a.T && j <= i && si == sj && (a.window <= 0 || i - j < a.window);
}

// Whether no query row wlo .. wlo+15 of a warp sees a key of the n-key tile at j0 (rows past T,
// or every key of the tile before their window); keys after the rows end the walk instead.
__device__ inline bool tile_unseen(const cuk_attn &a, int64_t j0, int n, int64_t wlo)
{
	return wlo >= a.T || (a.window > 0 && j0 + n - 1 < wlo - a.window + 1);
}

// The online softmax of a warp's two rows (a: ia, b: ib) over one step of NT key columns: s holds
// the scores before the scale c2 = scale·log2 e (−∞ where unseen), xa/xb their lane's maxima; the
// running maxima m (in units of c2: max(s)·c2 is max(s·c2), the rounding being monotonic), sums l
// and the output rows acc are rescaled to the new maxima and s becomes p = 2^(s·c2 − m), one fused
// multiply-add and one exp2_fast a score (a row that has seen no key yet, m = −∞, subtracts −FLT_MAX
// instead: its scores are −∞ and give 0).
template <int NT, int NO>
__device__ inline void online_softmax(float s[NT][4], float (*acc)[4], float xa, float xb, float c2,
				      float &ma, float &mb, float &la, float &lb)
{
	float na = fmaxf(ma, quad_max(xa) * c2), nbm = fmaxf(mb, quad_max(xb) * c2);
	float ca = na == -INFINITY ? 1.0f : exp2_fast(ma - na);
	float cb = nbm == -INFINITY ? 1.0f : exp2_fast(mb - nbm);
	ma = na, mb = nbm;
	float za = -fmaxf(na, -FLT_MAX), zb = -fmaxf(nbm, -FLT_MAX);
	float pa = 0.0f, pb = 0.0f;
	for (int nt = 0; nt < NT; nt++)
		for (int e = 0; e < 4; e++) {
			float p = exp2_fast(fmaf(s[nt][e], c2, e < 2 ? za : zb));
			s[nt][e] = p;
			if (e < 2)
				pa += p;
			else
				pb += p;
		}
	la = la * ca + pa, lb = lb * cb + pb;
	// Where no row of the warp has a new maximum (every factor is exactly 1, as later in a long
	// row), the rescale would leave acc as it is: skipped, with the same bits either way.
	if (warp_any(ca != 1.0f || cb != 1.0f))
		for (int n = 0; n < NO; n++) {
			acc[n][0] *= ca, acc[n][1] *= ca;
			acc[n][2] *= cb, acc[n][3] *= cb;
		}
}

// The forward's end: o = acc · (1 / l) for the warp's rows ia, ib (those below T) of head h,
// lse = m ln 2 + ln l (the maxima m are in base-2 units).
template <int DH>
__device__ inline void store_rows(float *o, float *lse, const float (*acc)[4], float la, float lb, float ma,
				  float mb, int64_t ia, int64_t ib, int64_t h, int t, const cuk_attn &a)
{
	constexpr int NO = DH / 8;
	la = quad_sum(la), lb = quad_sum(lb);
	for (int half = 0; half < 2; half++) {
		int64_t i = half ? ib : ia;
		float l = half ? lb : la, m = half ? mb : ma;
		if (i >= a.T)
			continue;
		float *oi = o + (i * a.H + h) * DH, r = 1.0f / l; // one division a row, not DH / 4
		for (int n = 0; n < NO; n++) {
			oi[n * 8 + 2 * t] = acc[n][2 * half] * r;
			oi[n * 8 + 2 * t + 1] = acc[n][2 * half + 1] * r;
		}
		if (t == 0)
			lse[h * a.T + i] = m * kLn2 + logf(l);
	}
}

} // namespace

// ---- the tensor-core kernels -------------------------------------------------------------------
//
// They replaced a first version (scalar f32 -> bf16 tile conversion between barriers, 16/32-bit
// fragment loads, the mask per score, 256 dK/dV blocks at T=2048) that reached 26.9 TFLOP/s on
// the H100 against these kernels' 82-104 (docs/PERFORMANCE.md, 2026-12-05 09:03).
//
// q, k, v (and dO) are cast to bf16 once per call into the scratch (16-byte loads);
// the tiles the rows pair with stream through two shared stages with cp.async (16 bytes per
// copy), the next tile loading while the current one is multiplied; fragments come from shared
// memory by ldmatrix (.trans for the operands read along their rows); a tile that every row of a
// warp sees whole (the causal interior, one segment, inside the window) skips the mask; and dK/dV
// runs one block per 64 keys per query head chunk (nsplit chunks of a KV head's group), the chunks'
// partial sums (f32, in dq's memory and the scratch) added in chunk order by a last pass before dQ,
// so results stay deterministic. The masks of the fp32 kernels; q, k, v, P, dO, dS rounded to bf16,
// fp32 sums.
namespace
{

constexpr int kFW = 4;        // warps per block
constexpr int kFR = kFW * 16; // rows per block
constexpr int kFN = 64;       // paired rows per shared stage

__device__ inline uint32_t pack2_fast(float lo, float hi)
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	uint32_t r;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
#else
	return pack2(lo, hi);
#endif
}

// 16 bytes global -> shared without a register round trip (sm_80+); a plain copy elsewhere.
__device__ inline void cp_async16(void *smem, const void *gmem)
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
#else
	memcpy(smem, gmem, 16);
#endif
}

__device__ inline void cp_async4(void *smem, const void *gmem)
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	unsigned s = (unsigned)__cvta_generic_to_shared(smem);
	asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(s), "l"(gmem));
#else
	memcpy(smem, gmem, 4);
#endif
}

__device__ inline void cp_commit()
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ inline void cp_wait()
{
#if !defined(TERN_CUDA_EMU) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// ldmatrix .x4: lane l gives the address of row l % 8 of 8x8 matrix l / 8 (16 bytes); r[m] gets
// matrix m's row l / 4, columns 2(l % 4) and 2(l % 4) + 1 (with trans: rows 2(l % 4), 2(l % 4) + 1
// of column l / 4).
__device__ inline void ldsm4(uint32_t r[4], const uint16_t *p)
{
#if defined(TERN_CUDA_EMU)
	int lane = (int)(threadIdx.x & 31);
	const uint16_t *rows[32];
	emu_warp_share(&p, sizeof p, rows);
	for (int m = 0; m < 4; m++)
		r[m] = ld_pair(rows[m * 8 + (lane >> 2)] + 2 * (lane & 3));
#else
	unsigned s = (unsigned)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(s));
#endif
}

__device__ inline void ldsm4t(uint32_t r[4], const uint16_t *p)
{
#if defined(TERN_CUDA_EMU)
	int lane = (int)(threadIdx.x & 31);
	const uint16_t *rows[32];
	emu_warp_share(&p, sizeof p, rows);
	for (int m = 0; m < 4; m++)
		r[m] = (uint32_t)rows[m * 8 + 2 * (lane & 3)][lane >> 2] |
		       ((uint32_t)rows[m * 8 + 2 * (lane & 3) + 1][lane >> 2] << 16);
#else
	unsigned s = (unsigned)__cvta_generic_to_shared(p);
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
		     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
		     : "r"(s));
#endif
}

// dst[i] = bf16(src[i]) for n elements (n a multiple of 4: head sizes are multiples of 16).
__global__ void cast_bf16_kernel(uint16_t *dst, const float *src, int64_t n)
{
	int64_t stride = (int64_t)gridDim.x * blockDim.x;
	if (((uintptr_t)src & 15) == 0)
		for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n / 4; i += stride) {
			float4 x = ((const float4 *)src)[i];
			uint2 y;
			y.x = pack2_fast(x.x, x.y);
			y.y = pack2_fast(x.z, x.w);
			((uint2 *)dst)[i] = y;
		}
	else
		for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n / 2; i += stride)
			((uint32_t *)dst)[i] = pack2_fast(src[2 * i], src[2 * i + 1]);
}

cudaError_t cast_bf16(cudaStream_t s, uint16_t *dst, const float *src, int64_t n)
{
	int64_t blocks = (n / 4 + 255) / 256;
	cast_bf16_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, s>>>(dst, src, n);
	return cudaGetLastError();
}

// Rows r0 .. r0+R of head hd of a bf16 [T, heads, DH] tensor into tile [R][DH + 8] by cp.async
// (zeros past T: a plain store). The 8 extra columns put ldmatrix's 8 row addresses on distinct
// banks.
// Thread x copies chunks x, x + kFW·32, ... of the R·C 16-byte chunks (row k / C, column k % C)
// from one base pointer and a row stride (the chunk's row index in 64 bits, row · heads + hd, was
// about 20 instructions a copy).
template <int DH, int R = kFN>
__device__ inline void tile_async(uint16_t *tile, const uint16_t *src, int64_t r0, int64_t T, int64_t heads,
				  int64_t hd)
{
	constexpr int S = DH + 8, C = DH / 8, NTH = kFW * 32, N = (R * C + NTH - 1) / NTH;
	const uint16_t *base = src + (r0 * heads + hd) * DH; // row r0 of head hd
	int64_t stride = heads * DH, left = T - r0;          // elements a row; rows before T
#pragma unroll 1 // (unrolled, the copies' addresses took registers the products need: spills)
	for (int i = 0; i < N; i++) {
		int k = (int)threadIdx.x + i * NTH;
		if (R * C % NTH != 0 && k >= R * C)
			break;
		int r = k / C, c = k % C;
		uint16_t *d = tile + r * S + c * 8;
		if (r < left)
			cp_async16(d, base + r * stride + c * 8);
		else
			*(uint4 *)d = make_uint4(0u, 0u, 0u, 0u);
	}
}

// R 4-byte values src[r0 + r] into dst[r] for the rows below T (0 past T).
template <int R = kFN> __device__ inline void vals_async(void *dst, const void *src, int64_t r0, int64_t T)
{
	for (int r = threadIdx.x; r < R; r += kFW * 32)
		if (r0 + r < T)
			cp_async4((uint32_t *)dst + r, (const uint32_t *)src + r0 + r);
		else
			((uint32_t *)dst)[r] = 0u;
}

// The pipeline step of the forward's and dQ's walks over key tiles: the next tile (K, V, the
// keys' segments) starts loading into stage nxt while the current one's copies are waited for
// (more: whether there is a next), then the block syncs. R keys per tile: stage x's K at st +
// 2x·R·S, V after it, segments at sg + x·R.
template <int DH, int R = kFN>
__device__ inline void kv_stage(uint16_t *st, int32_t *sg, const uint16_t *k, const uint16_t *v,
				const int32_t *seg, int64_t j0, bool more, int nxt, const cuk_attn &a,
				int64_t gh)
{
	constexpr int S = DH + 8;
	if (more) {
		tile_async<DH, R>(st + 2 * nxt * R * S, k, j0 + R, a.T, a.Hkv, gh);
		tile_async<DH, R>(st + (2 * nxt + 1) * R * S, v, j0 + R, a.T, a.Hkv, gh);
		vals_async<R>(sg + nxt * R, seg, j0 + R, a.T);
		cp_commit();
		cp_wait<1>();
	} else {
		cp_wait<0>();
	}
	__syncthreads();
}

// The dK/dV walks' query tiles: stage x of Q and dO at st + 2x·kFN·S (dO after Q) and of lse,
// Dr and the queries' segments at fl + 3x·kFN, for query rows i0 .. i0 + kFN of head h.
template <int DH>
__device__ inline void qdo_load(uint16_t *st, float *fl, int x, const uint16_t *q, const uint16_t *dout,
				const float *lse, const float *Dr, const int32_t *seg, int64_t i0, int64_t h,
				const cuk_attn &a)
{
	constexpr int S = DH + 8;
	tile_async<DH>(st + 2 * x * kFN * S, q, i0, a.T, a.H, h);
	tile_async<DH>(st + (2 * x + 1) * kFN * S, dout, i0, a.T, a.H, h);
	vals_async(fl + 3 * x * kFN, lse + h * a.T, i0, a.T);
	vals_async(fl + (3 * x + 1) * kFN, Dr + h * a.T, i0, a.T);
	vals_async(fl + (3 * x + 2) * kFN, seg, i0, a.T);
	cp_commit();
}

// The dK/dV walks' pipeline step over (head, query tile) it of ntiles (nq query tiles per head from
// j0, heads from h0): the next one starts loading into stage cur ^ 1 while stage cur's copies are
// waited for, then the block syncs.
template <int DH>
__device__ inline void qdo_stage(uint16_t *st, float *fl, int it, int ntiles, int nq, int64_t j0, int64_t h0,
				 const uint16_t *q, const uint16_t *dout, const float *lse, const float *Dr,
				 const int32_t *seg, const cuk_attn &a)
{
	if (it + 1 < ntiles) {
		qdo_load<DH>(st, fl, (it & 1) ^ 1, q, dout, lse, Dr, seg, j0 + (int64_t)((it + 1) % nq) * kFN,
			     h0 + (it + 1) / nq, a);
		cp_wait<1>();
	} else {
		cp_wait<0>();
	}
	__syncthreads();
}

// The A fragments of rows r .. r+16, columns 16 ks .. 16 ks + 16 of a tile.
template <int DH>
__device__ inline void a_frag_ld(uint32_t f[4], const uint16_t *tile, int r, int ks, int lane)
{
	ldsm4(f, tile + (r + (lane & 7) + ((lane >> 3) & 1) * 8) * (DH + 8) + ks * 16 + (lane >> 4) * 8);
}

// s[NT][4] (16 x 8NT) = the fragments fa (KS k steps) times rows c0 .. c0 + 8NT of tile B (each row
// one column of the product).
template <int DH, int NT>
__device__ inline void scores_ld(float s[NT][4], const uint32_t (*fa)[4], const uint16_t *B, int c0, int lane)
{
	constexpr int S = DH + 8, KS = DH / 16;
	for (int nt = 0; nt < NT; nt++)
		for (int e = 0; e < 4; e++)
			s[nt][e] = 0.0f;
	const uint16_t *p = B + (c0 + (lane & 7) + (lane >> 4) * 8) * S + ((lane >> 3) & 1) * 8;
	for (int ks = 0; ks < KS; ks++)
		for (int np = 0; np < NT / 2; np++) {
			uint32_t b[4];
			ldsm4(b, p + np * 16 * S + ks * 16);
			mma_bf16(s[2 * np], fa[ks], b[0], b[1]);
			mma_bf16(s[2 * np + 1], fa[ks], b[2], b[3]);
		}
}

// The same with the A fragments read from rows r .. r+16 of tile A (fragments of two tiles).
template <int DH, int NT>
__device__ inline void scores2_ld(float s[NT][4], float d[NT][4], const uint16_t *A1, const uint16_t *A2,
				  int r, const uint16_t *B1, const uint16_t *B2, int c0, int lane)
{
	constexpr int S = DH + 8, KS = DH / 16;
	for (int nt = 0; nt < NT; nt++)
		for (int e = 0; e < 4; e++)
			s[nt][e] = d[nt][e] = 0.0f;
	int off = (c0 + (lane & 7) + (lane >> 4) * 8) * S + ((lane >> 3) & 1) * 8;
	for (int ks = 0; ks < KS; ks++) {
		uint32_t f1[4], f2[4];
		a_frag_ld<DH>(f1, A1, r, ks, lane);
		a_frag_ld<DH>(f2, A2, r, ks, lane);
		for (int np = 0; np < NT / 2; np++) {
			uint32_t b[4], c[4];
			ldsm4(b, B1 + off + np * 16 * S + ks * 16);
			ldsm4(c, B2 + off + np * 16 * S + ks * 16);
			mma_bf16(s[2 * np], f1, b[0], b[1]);
			mma_bf16(s[2 * np + 1], f1, b[2], b[3]);
			mma_bf16(d[2 * np], f2, c[0], c[1]);
			mma_bf16(d[2 * np + 1], f2, c[2], c[3]);
		}
	}
}

// acc[DH/8][4] += (the 16 x 8NT block x as bf16 A fragments) times rows c0 .. c0 + 8NT of tile B
// (B read along its rows: ldmatrix .trans).
template <int DH, int NT>
__device__ inline void accumulate_ld(float (*acc)[4], const float x[NT][4], const uint16_t *B, int c0,
				     int lane)
{
	constexpr int S = DH + 8, NO = DH / 8;
	const uint16_t *p = B + (c0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + (lane >> 4) * 8;
	for (int kk = 0; kk < NT / 2; kk++) {
		uint32_t f[4] = {pack2_fast(x[2 * kk][0], x[2 * kk][1]),
				 pack2_fast(x[2 * kk][2], x[2 * kk][3]),
				 pack2_fast(x[2 * kk + 1][0], x[2 * kk + 1][1]),
				 pack2_fast(x[2 * kk + 1][2], x[2 * kk + 1][3])};
		for (int np = 0; np < NO / 2; np++) {
			uint32_t b[4];
			ldsm4t(b, p + kk * 16 * S + np * 16);
			mma_bf16(acc[2 * np], f, b[0], b[1]);
			mma_bf16(acc[2 * np + 1], f, b[2], b[3]);
		}
	}
}

// The two-row-group forms of the second kernel family (32 rows per warp): s[2][NT][4] = rows r ..
// r+32 of tile A (re-read from shared memory at each k step: holding them would take 64 registers
// at DH 128) times rows c0 .. c0 + 8NT of tile B. Each B fragment that ldmatrix loads feeds both
// row groups' products, where the 16-row kernels' feeds one: half the shared-memory reads per MMA.
template <int DH, int NT>
__device__ inline void scores32_ld(float (*s)[NT][4], const uint16_t *A, int r, const uint16_t *B, int c0,
				   int lane)
{
	constexpr int S = DH + 8, KS = DH / 16;
	for (int g = 0; g < 2; g++)
		for (int nt = 0; nt < NT; nt++)
			for (int e = 0; e < 4; e++)
				s[g][nt][e] = 0.0f;
	const uint16_t *p = B + (c0 + (lane & 7) + (lane >> 4) * 8) * S + ((lane >> 3) & 1) * 8;
	for (int ks = 0; ks < KS; ks++) {
		uint32_t f0[4], f1[4];
		a_frag_ld<DH>(f0, A, r, ks, lane);
		a_frag_ld<DH>(f1, A, r + 16, ks, lane);
		for (int np = 0; np < NT / 2; np++) {
			uint32_t b[4];
			ldsm4(b, p + np * 16 * S + ks * 16);
			mma_bf16(s[0][2 * np], f0, b[0], b[1]);
			mma_bf16(s[0][2 * np + 1], f0, b[2], b[3]);
			mma_bf16(s[1][2 * np], f1, b[0], b[1]);
			mma_bf16(s[1][2 * np + 1], f1, b[2], b[3]);
		}
	}
}

// acc[2][DH/8][4] += (the two 16 x 8NT blocks x[g] as bf16 A fragments) times rows c0 .. c0 + 8NT
// of tile B (read along its rows: ldmatrix .trans), each B fragment serving both row groups.
template <int DH, int NT>
__device__ inline void accumulate32_ld(float (*acc)[DH / 8][4], const float (*x)[NT][4], const uint16_t *B,
				       int c0, int lane)
{
	constexpr int S = DH + 8, NO = DH / 8;
	const uint16_t *p = B + (c0 + (lane & 7) + ((lane >> 3) & 1) * 8) * S + (lane >> 4) * 8;
	for (int kk = 0; kk < NT / 2; kk++) {
		uint32_t f[2][4];
		for (int g = 0; g < 2; g++) {
			f[g][0] = pack2_fast(x[g][2 * kk][0], x[g][2 * kk][1]);
			f[g][1] = pack2_fast(x[g][2 * kk][2], x[g][2 * kk][3]);
			f[g][2] = pack2_fast(x[g][2 * kk + 1][0], x[g][2 * kk + 1][1]);
			f[g][3] = pack2_fast(x[g][2 * kk + 1][2], x[g][2 * kk + 1][3]);
		}
		for (int np = 0; np < NO / 2; np++) {
			uint32_t b[4];
			ldsm4t(b, p + kk * 16 * S + np * 16);
			mma_bf16(acc[0][2 * np], f[0], b[0], b[1]);
			mma_bf16(acc[0][2 * np + 1], f[0], b[2], b[3]);
			mma_bf16(acc[1][2 * np], f[1], b[0], b[1]);
			mma_bf16(acc[1][2 * np + 1], f[1], b[2], b[3]);
		}
	}
}

// Whether every row of a warp's nr (rows lo .. lo+nr-1, their segment sr where uniform) sees each
// of n keys k0 .. k0+n, keys' segments ks[0 .. n) (n <= 64): no mask needed.
__device__ inline bool tile_whole(const cuk_attn &a, int64_t lo, int nr, int64_t k0, int n, bool rows_one,
				  int32_t sr, const int32_t *ks, int lane)
{
	if (!rows_one || lo + nr - 1 >= a.T || k0 + n - 1 > lo ||
	    (a.window > 0 && lo + nr - 1 - k0 >= a.window))
		return false;
	return warp_all(ks[lane % n] == sr && ks[(lane + 32) % n] == sr);
}

// Segment bounds of the 64-token tiles (kFR = kFN: a block's rows are one tile, and so are its
// columns). A micro-batch's rows are concatenated with globally unique segment ids (the trainer's
// samples), so a row's tiles pair only with the tiles of the same row: without bounds the causal
// walk would multiply every earlier row's tiles only to mask them (4x the work of 4 rows). tlo/thi
// [nt]: the least and greatest segment of each tile; kfirst[b]: the first tile c <= b whose range
// meets tile b's, qlast[b]: the last tile c >= b whose range meets it. A tile whose range does not
// meet b's holds no key (query) any row of b sees, so skipping it leaves every score and sum as
// it was (its scores would be masked to -inf, adding 0). Any segments are allowed: the ranges are
// a conservative test, padding (-1) included.
__global__ void fa_range_kernel(int32_t *tlo, int32_t *thi, const int32_t *seg, int64_t T)
{
	int64_t nt = (T + kFN - 1) / kFN;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nt;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int64_t e = (b + 1) * kFN < T ? (b + 1) * kFN : T;
		int32_t lo = seg[b * kFN], hi = lo;
		for (int64_t i = b * kFN + 1; i < e; i++) {
			int32_t v = seg[i];
			lo = v < lo ? v : lo, hi = v > hi ? v : hi;
		}
		tlo[b] = lo, thi[b] = hi;
	}
}

__global__ void fa_bounds_kernel(int32_t *kfirst, int32_t *qlast, const int32_t *tlo, const int32_t *thi,
				 int64_t T)
{
	int64_t nt = (T + kFN - 1) / kFN;
	for (int64_t b = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; b < nt;
	     b += (int64_t)gridDim.x * blockDim.x) {
		int32_t lo = tlo[b], hi = thi[b];
		int64_t f = 0, l = nt - 1;
		while (f < b && (thi[f] < lo || tlo[f] > hi))
			f++;
		while (l > b && (thi[l] < lo || tlo[l] > hi))
			l--;
		kfirst[b] = (int32_t)f, qlast[b] = (int32_t)l;
	}
}

// The first key of query block i0 (a multiple of kFR): the window's, or the first tile whose
// segments meet the block's (kfirst; null: none computed).
__device__ inline int64_t fa_first(const cuk_attn &a, int64_t i0, const int32_t *kfirst)
{
	int64_t j = first_key(a, i0), f = kfirst ? (int64_t)kfirst[i0 / kFR] * kFN : 0;
	return j > f ? j : f;
}

// One past the last query of key block j0 (a multiple of kFR) whose tile ends at last.
__device__ inline int64_t fa_end(const cuk_attn &a, int64_t j0, int64_t last, const int32_t *qlast)
{
	int64_t e = query_end(a, last);
	if (qlast) {
		int64_t q = ((int64_t)qlast[j0 / kFR] + 1) * kFN;
		e = q < e ? q : e;
	}
	return e;
}

// What a dK/dV block (either family) works on: KV head gh, chunk `chunk` of its group's query
// heads (hn heads from h0), keys [j0, j0 + kFR) (the longest columns first), the query walk up to
// end in nq tiles of kFN per head, ntiles in all.
struct fa_dkv_at {
	int64_t gh, chunk, h0, hn, j0, end;
	int nq, ntiles;
};

__device__ inline fa_dkv_at fa_dkv_place(const cuk_attn &a, int nsplit, const int32_t *qlast)
{
	fa_dkv_at p;
	int64_t per = a.Hkv * nsplit, group = a.H / a.Hkv;
	p.gh = blockIdx.x % per / nsplit;
	p.chunk = blockIdx.x % nsplit;
	p.j0 = (blockIdx.x / per) * kFR;
	p.hn = group / nsplit;
	p.h0 = p.gh * group + p.chunk * p.hn;
	int64_t last = p.j0 + kFR - 1 < a.T - 1 ? p.j0 + kFR - 1 : a.T - 1;
	p.end = fa_end(a, p.j0, last, qlast);
	p.nq = (int)((p.end - p.j0 + kFN - 1) / kFN);
	p.ntiles = (int)(p.nq * p.hn);
	return p;
}

template <int DH>
__global__ void __launch_bounds__(kFW * 32, 3)
	fa_fwd_kernel(float *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
		      const int32_t *seg, const int32_t *kfirst, cuk_attn a)
{
	// 64 keys per softmax step; 32 at DH 128, where 64 would need more registers than 3 blocks
	// per SM leave (170)
	constexpr int S = DH + 8, KS = DH / 16, NO = DH / 8, NT = DH >= 128 ? 4 : 8;
	extern __shared__ float sm[];
	uint16_t *const st = (uint16_t *)sm;               // stage x: K at st + 2x·kFN·S, V after it
	int32_t *const sg = (int32_t *)(st + 4 * kFN * S); // stage x: segments at sg + x·kFN
	int64_t nb = (a.T + kFR - 1) / kFR;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kFR; // the longest rows first
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
	int64_t wlo = i0 + warp * 16, ia = wlo + (lane >> 2), ib = ia + 8;
	int64_t last = i0 + kFR - 1 < a.T - 1 ? i0 + kFR - 1 : a.T - 1, jfirst = fa_first(a, i0, kfirst);
	int ntiles = (int)((last - jfirst) / kFN + 1);

	tile_async<DH>(st + 2 * kFN * S, q, i0, a.T, a.H, h); // Q passes through stage 1 into registers
	cp_commit();
	tile_async<DH>(st, k, jfirst, a.T, a.Hkv, gh);
	tile_async<DH>(st + kFN * S, v, jfirst, a.T, a.Hkv, gh);
	vals_async(sg, seg, jfirst, a.T);
	cp_commit();
	cp_wait<1>();
	__syncthreads();
	uint32_t qf[KS][4];
	for (int ks = 0; ks < KS; ks++)
		a_frag_ld<DH>(qf[ks], st + 2 * kFN * S, warp * 16, ks, lane);
	int32_t sa = ia < a.T ? seg[ia] : 0, sb = ib < a.T ? seg[ib] : 0;
	int32_t s0 = wlo < a.T ? seg[wlo] : 0;
	bool rows_one = warp_all(sa == s0 && sb == s0);
	float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f, c2 = a.scale * kLog2e;
	float acc[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			acc[n][e] = 0.0f;
	__syncthreads(); // every warp has its Q fragments: stage 1 is free
	for (int it = 0; it < ntiles; it++) {
		int64_t j0 = jfirst + (int64_t)it * kFN;
		int cur = it & 1;
		kv_stage<DH>(st, sg, k, v, seg, j0, it + 1 < ntiles, cur ^ 1, a, gh);
		const uint16_t *Ks = st + 2 * cur * kFN * S, *Vs = st + (2 * cur + 1) * kFN * S;
		const int32_t *Sg = sg + cur * kFN;
		if (!tile_unseen(a, j0, kFN, wlo))
			for (int c0 = 0; c0 < kFN && j0 + c0 <= wlo + 15; c0 += 8 * NT) {
				float s[NT][4];
				scores_ld<DH, NT>(s, qf, Ks, c0, lane);
				bool whole =
					tile_whole(a, wlo, 16, j0 + c0, 8 * NT, rows_one, s0, Sg + c0, lane);
				float xa = -INFINITY, xb = -INFINITY;
				for (int nt = 0; nt < NT; nt++)
					for (int e = 0; e < 4; e++) {
						int c = c0 + nt * 8 + 2 * t + (e & 1);
						bool ok = whole || (e < 2 ? sees(a, ia, j0 + c, sa, Sg[c])
									  : sees(a, ib, j0 + c, sb, Sg[c]));
						float x = ok ? s[nt][e] : -INFINITY;
						s[nt][e] = x;
						if (e < 2)
							xa = fmaxf(xa, x);
						else
							xb = fmaxf(xb, x);
					}
				online_softmax<NT, NO>(s, acc, xa, xb, c2, ma, mb, la, lb);
				accumulate_ld<DH, NT>(acc, s, Vs, c0, lane);
			}
		__syncthreads(); // every warp is done with this stage before the next load refills it
	}
	store_rows<DH>(o, lse, acc, la, lb, ma, mb, ia, ib, h, t, a);
}

// dQ_i = scale · Σ_j dS_ij K_j, dS = P ∘ (dO V^T − Dr): query rows, K/V stages, 32 keys at a time.
template <int DH>
__global__ void __launch_bounds__(kFW * 32)
	fa_dq_kernel(float *dq, const uint16_t *dout, const uint16_t *q, const uint16_t *k, const uint16_t *v,
		     const float *lse, const float *Dr, const int32_t *seg, const int32_t *kfirst, cuk_attn a)
{
	constexpr int S = DH + 8, KS = DH / 16, NO = DH / 8, NT = 4;
	extern __shared__ float sm[];
	uint16_t *const st = (uint16_t *)sm;               // stage x: K at st + 2x·kFN·S, V after it
	int32_t *const sg = (int32_t *)(st + 4 * kFN * S); // stage x: segments at sg + x·kFN
	int64_t nb = (a.T + kFR - 1) / kFR;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kFR;
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
	int64_t wlo = i0 + warp * 16, ia = wlo + (lane >> 2), ib = ia + 8;
	int64_t last = i0 + kFR - 1 < a.T - 1 ? i0 + kFR - 1 : a.T - 1, jfirst = fa_first(a, i0, kfirst);
	int ntiles = (int)((last - jfirst) / kFN + 1);

	tile_async<DH>(st + 2 * kFN * S, q, i0, a.T, a.H, h);
	tile_async<DH>(st + 3 * kFN * S, dout, i0, a.T, a.H, h);
	cp_commit();
	tile_async<DH>(st, k, jfirst, a.T, a.Hkv, gh);
	tile_async<DH>(st + kFN * S, v, jfirst, a.T, a.Hkv, gh);
	vals_async(sg, seg, jfirst, a.T);
	cp_commit();
	cp_wait<1>();
	__syncthreads();
	uint32_t qf[KS][4], gf[KS][4];
	for (int ks = 0; ks < KS; ks++) {
		a_frag_ld<DH>(qf[ks], st + 2 * kFN * S, warp * 16, ks, lane);
		a_frag_ld<DH>(gf[ks], st + 3 * kFN * S, warp * 16, ks, lane);
	}
	int32_t sa = ia < a.T ? seg[ia] : 0, sb = ib < a.T ? seg[ib] : 0;
	int32_t s0 = wlo < a.T ? seg[wlo] : 0;
	bool rows_one = warp_all(sa == s0 && sb == s0);
	float c2 = a.scale * kLog2e;
	float La = ia < a.T ? lse[h * a.T + ia] * kLog2e : 0.0f,
	      Lb = ib < a.T ? lse[h * a.T + ib] * kLog2e : 0.0f;
	float Da = ia < a.T ? Dr[h * a.T + ia] : 0.0f, Db = ib < a.T ? Dr[h * a.T + ib] : 0.0f;
	float acc[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			acc[n][e] = 0.0f;
	__syncthreads();
	for (int it = 0; it < ntiles; it++) {
		int64_t j0 = jfirst + (int64_t)it * kFN;
		int cur = it & 1;
		kv_stage<DH>(st, sg, k, v, seg, j0, it + 1 < ntiles, cur ^ 1, a, gh);
		const uint16_t *Ks = st + 2 * cur * kFN * S, *Vs = st + (2 * cur + 1) * kFN * S;
		const int32_t *Sg = sg + cur * kFN;
		if (!tile_unseen(a, j0, kFN, wlo))
			for (int c0 = 0; c0 < kFN && j0 + c0 <= wlo + 15; c0 += 8 * NT) {
				float s[NT][4], dp[NT][4];
				scores_ld<DH, NT>(s, qf, Ks, c0, lane);
				scores_ld<DH, NT>(dp, gf, Vs, c0, lane);
				bool whole =
					tile_whole(a, wlo, 16, j0 + c0, 8 * NT, rows_one, s0, Sg + c0, lane);
				// dS = P ∘ (dP − Dr), P = 2^(S·c2 − lse·log2 e); the mask's test outside the
				// scores' loop, so that a whole tile's (the causal interior's) has none
				for (int nt = 0; nt < NT; nt++)
					for (int e = 0; e < 4; e++)
						s[nt][e] = exp2_fast(fmaf(s[nt][e], c2, e < 2 ? -La : -Lb)) *
							   (dp[nt][e] - (e < 2 ? Da : Db));
				if (!whole)
					for (int nt = 0; nt < NT; nt++)
						for (int e = 0; e < 4; e++) {
							int c = c0 + nt * 8 + 2 * t + (e & 1);
							if (!(e < 2 ? sees(a, ia, j0 + c, sa, Sg[c])
								    : sees(a, ib, j0 + c, sb, Sg[c])))
								s[nt][e] = 0.0f;
						}
				accumulate_ld<DH, NT>(acc, s, Ks, c0, lane);
			}
		__syncthreads();
	}
	for (int half = 0; half < 2; half++) {
		int64_t i = half ? ib : ia;
		if (i >= a.T)
			continue;
		float *di = dq + (i * a.H + h) * DH;
		for (int n = 0; n < NO; n++) {
			di[n * 8 + 2 * t] = a.scale * acc[n][2 * half];
			di[n * 8 + 2 * t + 1] = a.scale * acc[n][2 * half + 1];
		}
	}
}

// dV_j = Σ_i P_ij dO_i and dK_j = scale · Σ_i dS_ij Q_i for 64 keys of KV head gh over the query
// rows of the heads of one chunk (group / nsplit heads) of gh's group: key rows in registers'
// reach (K, V in shared memory), Q/dO stages with lse, Dr and segments. Writes dk/dv (nsplit 1)
// or the chunk's partial sums pk/pv [T, Hkv, nsplit, DH].
template <int DH>
__global__ void __launch_bounds__(kFW * 32)
	fa_dkv_kernel(float *dk, float *dv, const uint16_t *dout, const uint16_t *q, const uint16_t *k,
		      const uint16_t *v, const float *lse, const float *Dr, const int32_t *seg,
		      const int32_t *qlast, cuk_attn a, int nsplit)
{
	constexpr int S = DH + 8, NO = DH / 8, NT = 4;
	extern __shared__ float sm[];
	uint16_t *Ks = (uint16_t *)sm, *Vs = Ks + kFN * S;
	uint16_t *const st = Vs + kFN * S;             // stage x: Q at st + 2x·kFN·S, dO after it
	float *const fl = (float *)(st + 4 * kFN * S); // stage x: lse, Dr, segments at fl + 3x·kFN
	const fa_dkv_at at = fa_dkv_place(a, nsplit, qlast);
	const int64_t gh = at.gh, chunk = at.chunk, h0 = at.h0, j0 = at.j0;
	const int nq = at.nq, ntiles = at.ntiles;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
	int64_t wlo = j0 + warp * 16, ja = wlo + (lane >> 2), jb = ja + 8;

	tile_async<DH>(Ks, k, j0, a.T, a.Hkv, gh);
	tile_async<DH>(Vs, v, j0, a.T, a.Hkv, gh);
	qdo_load<DH>(st, fl, 0, q, dout, lse, Dr, seg, j0, h0, a);
	int32_t sa = ja < a.T ? seg[ja] : 0, sb = jb < a.T ? seg[jb] : 0;
	int32_t s0 = wlo < a.T ? seg[wlo] : 0;
	bool keys_one = warp_all(sa == s0 && sb == s0);
	float c2 = a.scale * kLog2e;
	float dK[NO][4], dV[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			dK[n][e] = dV[n][e] = 0.0f;
	for (int it = 0; it < ntiles; it++) {
		int64_t i0 = j0 + (int64_t)(it % nq) * kFN;
		int cur = it & 1;
		qdo_stage<DH>(st, fl, it, ntiles, nq, j0, h0, q, dout, lse, Dr, seg, a);
		const uint16_t *Qs = st + 2 * cur * kFN * S, *Gs = st + (2 * cur + 1) * kFN * S;
		const float *L = fl + 3 * cur * kFN, *D = fl + 3 * cur * kFN + kFN;
		const int32_t *Sg = (const int32_t *)(fl + 3 * cur * kFN + 2 * kFN);
		if (wlo < a.T)
			for (int c0 = 0; c0 < kFN; c0 += 8 * NT) {
				if (i0 + c0 + 8 * NT - 1 < wlo)
					continue; // every query before the warp's keys
				if (a.window > 0 && i0 + c0 > wlo + 15 + a.window - 1)
					break; // every query past the window
				float s[NT][4], dp[NT][4];
				scores2_ld<DH, NT>(s, dp, Ks, Vs, warp * 16, Qs, Gs, c0, lane);
				// whole: every query c0 .. c0+32 sees every key of the warp
				int64_t qlo = i0 + c0;
				bool whole = keys_one && qlo >= wlo + 15 && qlo + 8 * NT - 1 < a.T &&
					     (a.window <= 0 || qlo + 8 * NT - 1 - wlo < a.window) &&
					     warp_all(Sg[c0 + lane] == s0);
				// P = 2^(S·c2 − lse·log2 e), dS = P ∘ (dP − Dr); the mask's test outside the
				// scores' loop, so that a whole tile's (the causal interior's) has none
				for (int nt = 0; nt < NT; nt++)
					for (int e = 0; e < 4; e++) {
						int c = c0 + nt * 8 + 2 * t + (e & 1);
						s[nt][e] = exp2_fast(fmaf(s[nt][e], c2, -L[c] * kLog2e));
					}
				if (!whole)
					for (int nt = 0; nt < NT; nt++)
						for (int e = 0; e < 4; e++) {
							int c = c0 + nt * 8 + 2 * t + (e & 1);
							if (!sees(a, i0 + c, e < 2 ? ja : jb, Sg[c],
								  e < 2 ? sa : sb))
								s[nt][e] = 0.0f;
						}
				for (int nt = 0; nt < NT; nt++)
					for (int e = 0; e < 4; e++) {
						int c = c0 + nt * 8 + 2 * t + (e & 1);
						dp[nt][e] = s[nt][e] * (dp[nt][e] - D[c]);
					}
				accumulate_ld<DH, NT>(dV, s, Gs, c0, lane);
				accumulate_ld<DH, NT>(dK, dp, Qs, c0, lane);
			}
		__syncthreads();
	}
	for (int half = 0; half < 2; half++) {
		int64_t j = half ? jb : ja;
		if (j >= a.T)
			continue;
		int64_t row = nsplit == 1 ? j * a.Hkv + gh : (j * a.Hkv + gh) * nsplit + chunk;
		float *kj = dk + row * DH, *vj = dv + row * DH;
		for (int n = 0; n < NO; n++)
			for (int e = 0; e < 2; e++) {
				kj[n * 8 + 2 * t + e] = a.scale * dK[n][2 * half + e];
				vj[n * 8 + 2 * t + e] = dV[n][2 * half + e];
			}
	}
}

// dk[j, g] = Σ_c pk[j, g, c] (c = 0 .. nsplit in order), the same for dv.
__global__ void fa_reduce_kernel(float *dk, float *dv, const float *pk, const float *pv, int64_t rows,
				 int64_t Dh, int nsplit)
{
	int64_t n = rows * Dh;
	for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n;
	     x += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = x / Dh, d = x % Dh;
		float sk = 0.0f, sv = 0.0f;
		for (int c = 0; c < nsplit; c++) {
			sk += pk[(r * nsplit + c) * Dh + d];
			sv += pv[(r * nsplit + c) * Dh + d];
		}
		dk[x] = sk;
		dv[x] = sv;
	}
}

// ---- the second tensor-core family (DH 64 and 128; the forward by default, all with TERN_CUDA_FA=2) --
//
// FlashAttention-2's shape: a block of kFW warps takes kF2R = 128 query rows, 32 per warp (two m16
// row groups g = 0, 1: rows wlo + 16g + lane/4 and + 8), so every K/V fragment ldmatrix reads
// serves two MMAs, and each K/V tile that the block streams through shared memory serves twice the
// rows. The registers pay for it: O's accumulators are 2·DH/2 per thread (128 at DH 128), so Q
// (and dO) stay in shared memory and their fragments are re-read at each k step. Shared memory:
// Q (and dO for dQ) 128 rows, two K/V stages; about 104 KB at DH 128, two blocks per SM. The
// masks, the bounds (kfirst per 64-key tile: a block spans two tiles and takes the lesser), the
// pipeline and the fixed summation order are the first family's. dK/dV (fa2_dkv_kernel) gives each
// warp 32 key rows too, but splits each pair of warps by product (32 key rows of dK and dV in one
// warp would need 256 accumulator registers at DH 128).
constexpr int kF2R = kFW * 32; // query rows per block
constexpr int kF2K = 32;       // keys per dQ stage (its Q and dO tiles take the room of larger ones)

// The first key of query block i0 (a multiple of kF2R): the window's, or the first tile whose
// segments meet either of the block's two 64-row tiles.
__device__ inline int64_t fa2_first(const cuk_attn &a, int64_t i0, const int32_t *kfirst)
{
	int64_t j = first_key(a, i0), b = i0 / kFN, nt = (a.T + kFN - 1) / kFN;
	int64_t f = kfirst[b];
	if (b + 1 < nt && kfirst[b + 1] < f)
		f = kfirst[b + 1];
	f *= kFN;
	return j > f ? j : f;
}

// A warp's four row indices (ia[g], ib[g]), their segments, and whether all 32 rows are in one
// segment (s0 the first row's).
__device__ inline bool fa2_rows(const cuk_attn &a, const int32_t *seg, int64_t wlo, int lane, int64_t ia[2],
				int64_t ib[2], int32_t sa[2], int32_t sb[2], int32_t &s0)
{
	bool same = true;
	s0 = wlo < a.T ? seg[wlo] : 0;
#pragma unroll
	for (int g = 0; g < 2; g++) {
		ia[g] = wlo + 16 * g + (lane >> 2), ib[g] = ia[g] + 8;
		sa[g] = ia[g] < a.T ? seg[ia[g]] : 0, sb[g] = ib[g] < a.T ? seg[ib[g]] : 0;
		same = same && sa[g] == s0 && sb[g] == s0;
	}
	return warp_all(same);
}

// s[g][nt][e] = -inf where row ia[g] (e < 2) or ib[g] does not see key k0 + c (segments ks[c]),
// c = 8nt + 2t + e % 2: the scores of a step that is not whole.
template <int NT>
__device__ inline void fa2_mask(float (*s)[NT][4], const cuk_attn &a, const int64_t ia[2],
				const int64_t ib[2], const int32_t sa[2], const int32_t sb[2], int64_t k0,
				const int32_t *ks, int t)
{
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int nt = 0; nt < NT; nt++)
			for (int e = 0; e < 4; e++) {
				int c = nt * 8 + 2 * t + (e & 1);
				bool ok = e < 2 ? sees(a, ia[g], k0 + c, sa[g], ks[c])
						: sees(a, ib[g], k0 + c, sb[g], ks[c]);
				if (!ok)
					s[g][nt][e] = -INFINITY;
			}
}

// The forward: 64 keys per stage, 64 per softmax step; 32 at DH 128, where 64 spill (255 registers
// and 48 bytes of spills with nvcc 13: O's 128 accumulators and the scores' 64).
template <int DH>
__global__ void __launch_bounds__(kFW * 32, 2)
	fa2_fwd_kernel(float *o, float *lse, const uint16_t *q, const uint16_t *k, const uint16_t *v,
		       const int32_t *seg, const int32_t *kfirst, cuk_attn a)
{
	constexpr int S = DH + 8, NO = DH / 8, NT = DH >= 128 ? 4 : 8;
	extern __shared__ float sm[];
	uint16_t *const Qs = (uint16_t *)sm;               // the block's kF2R query rows
	uint16_t *const st = Qs + kF2R * S;                // stage x: K at st + 2x·kFN·S, V after it
	int32_t *const sg = (int32_t *)(st + 4 * kFN * S); // stage x: segments at sg + x·kFN
	int64_t nb = (a.T + kF2R - 1) / kF2R;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kF2R; // the longest rows first
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
	int64_t wlo = i0 + warp * 32, ia[2], ib[2];
	int64_t last = i0 + kF2R - 1 < a.T - 1 ? i0 + kF2R - 1 : a.T - 1, jfirst = fa2_first(a, i0, kfirst);
	int ntiles = (int)((last - jfirst) / kFN + 1);

	tile_async<DH, kF2R>(Qs, q, i0, a.T, a.H, h);
	tile_async<DH>(st, k, jfirst, a.T, a.Hkv, gh);
	tile_async<DH>(st + kFN * S, v, jfirst, a.T, a.Hkv, gh);
	vals_async(sg, seg, jfirst, a.T);
	cp_commit();
	int32_t sa[2], sb[2], s0;
	bool rows_one = fa2_rows(a, seg, wlo, lane, ia, ib, sa, sb, s0);
	float ma[2], mb[2], la[2], lb[2], c2 = a.scale * kLog2e;
	float acc[2][NO][4];
#pragma unroll
	for (int g = 0; g < 2; g++) {
		ma[g] = mb[g] = -INFINITY, la[g] = lb[g] = 0.0f;
		for (int n = 0; n < NO; n++)
			for (int e = 0; e < 4; e++)
				acc[g][n][e] = 0.0f;
	}
	for (int it = 0; it < ntiles; it++) {
		int64_t j0 = jfirst + (int64_t)it * kFN;
		int cur = it & 1;
		kv_stage<DH>(st, sg, k, v, seg, j0, it + 1 < ntiles, cur ^ 1, a, gh);
		const uint16_t *Ks = st + 2 * cur * kFN * S, *Vs = st + (2 * cur + 1) * kFN * S;
		const int32_t *Sg = sg + cur * kFN;
		if (!tile_unseen(a, j0, kFN, wlo))
			for (int c0 = 0; c0 < kFN && j0 + c0 <= wlo + 31; c0 += 8 * NT) {
				float s[2][NT][4];
				scores32_ld<DH, NT>(s, Qs, warp * 32, Ks, c0, lane);
				bool whole =
					tile_whole(a, wlo, 32, j0 + c0, 8 * NT, rows_one, s0, Sg + c0, lane);
				if (!whole)
					fa2_mask<NT>(s, a, ia, ib, sa, sb, j0 + c0, Sg + c0, t);
#pragma unroll // (s, acc indexed by constants: registers, not local memory)
				for (int g = 0; g < 2; g++) {
					float xa = -INFINITY, xb = -INFINITY;
					for (int nt = 0; nt < NT; nt++)
						for (int e = 0; e < 4; e++) {
							if (e < 2)
								xa = fmaxf(xa, s[g][nt][e]);
							else
								xb = fmaxf(xb, s[g][nt][e]);
						}
					online_softmax<NT, NO>(s[g], acc[g], xa, xb, c2, ma[g], mb[g], la[g],
							       lb[g]);
				}
				accumulate32_ld<DH, NT>(acc, s, Vs, c0, lane);
			}
		__syncthreads(); // every warp is done with this stage before the next load refills it
	}
#pragma unroll
	for (int g = 0; g < 2; g++)
		store_rows<DH>(o, lse, acc[g], la[g], lb[g], ma[g], mb[g], ia[g], ib[g], h, t, a);
}

// dQ: 128 query rows per block (Q and dO tiles in shared memory), K/V stages of kF2K keys.
template <int DH>
__global__ void __launch_bounds__(kFW * 32, 2)
	fa2_dq_kernel(float *dq, const uint16_t *dout, const uint16_t *q, const uint16_t *k,
		      const uint16_t *v, const float *lse, const float *Dr, const int32_t *seg,
		      const int32_t *kfirst, cuk_attn a)
{
	constexpr int S = DH + 8, NO = DH / 8, NT = kF2K / 8;
	extern __shared__ float sm[];
	uint16_t *const Qs = (uint16_t *)sm, *const Gs = Qs + kF2R * S; // the block's Q and dO rows
	uint16_t *const st = Gs + kF2R * S;                 // stage x: K at st + 2x·kF2K·S, V after it
	int32_t *const sg = (int32_t *)(st + 4 * kF2K * S); // stage x: segments at sg + x·kF2K
	int64_t nb = (a.T + kF2R - 1) / kF2R;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kF2R;
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3;
	int64_t wlo = i0 + warp * 32, ia[2], ib[2];
	int64_t last = i0 + kF2R - 1 < a.T - 1 ? i0 + kF2R - 1 : a.T - 1, jfirst = fa2_first(a, i0, kfirst);
	int ntiles = (int)((last - jfirst) / kF2K + 1);

	tile_async<DH, kF2R>(Qs, q, i0, a.T, a.H, h);
	tile_async<DH, kF2R>(Gs, dout, i0, a.T, a.H, h);
	tile_async<DH, kF2K>(st, k, jfirst, a.T, a.Hkv, gh);
	tile_async<DH, kF2K>(st + kF2K * S, v, jfirst, a.T, a.Hkv, gh);
	vals_async<kF2K>(sg, seg, jfirst, a.T);
	cp_commit();
	int32_t sa[2], sb[2], s0;
	bool rows_one = fa2_rows(a, seg, wlo, lane, ia, ib, sa, sb, s0);
	float c2 = a.scale * kLog2e, La[2], Lb[2], Da[2], Db[2];
#pragma unroll
	for (int g = 0; g < 2; g++) {
		La[g] = ia[g] < a.T ? lse[h * a.T + ia[g]] * kLog2e : 0.0f;
		Lb[g] = ib[g] < a.T ? lse[h * a.T + ib[g]] * kLog2e : 0.0f;
		Da[g] = ia[g] < a.T ? Dr[h * a.T + ia[g]] : 0.0f;
		Db[g] = ib[g] < a.T ? Dr[h * a.T + ib[g]] : 0.0f;
	}
	float acc[2][NO][4];
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int n = 0; n < NO; n++)
			for (int e = 0; e < 4; e++)
				acc[g][n][e] = 0.0f;
	for (int it = 0; it < ntiles; it++) {
		int64_t j0 = jfirst + (int64_t)it * kF2K;
		int cur = it & 1;
		kv_stage<DH, kF2K>(st, sg, k, v, seg, j0, it + 1 < ntiles, cur ^ 1, a, gh);
		const uint16_t *Ks = st + 2 * cur * kF2K * S, *Vs = st + (2 * cur + 1) * kF2K * S;
		const int32_t *Sg = sg + cur * kF2K;
		if (!tile_unseen(a, j0, kF2K, wlo) && j0 <= wlo + 31) {
			float s[2][NT][4], dp[2][NT][4];
			scores32_ld<DH, NT>(s, Qs, warp * 32, Ks, 0, lane);
			scores32_ld<DH, NT>(dp, Gs, warp * 32, Vs, 0, lane);
			bool whole = tile_whole(a, wlo, 32, j0, kF2K, rows_one, s0, Sg, lane);
			// dS = P ∘ (dP − Dr); the mask's test outside the scores' loop (as fa_dq_kernel's)
#pragma unroll
			for (int g = 0; g < 2; g++)
				for (int nt = 0; nt < NT; nt++)
					for (int e = 0; e < 4; e++)
						s[g][nt][e] = exp2_fast(fmaf(s[g][nt][e], c2,
									     e < 2 ? -La[g] : -Lb[g])) *
							      (dp[g][nt][e] - (e < 2 ? Da[g] : Db[g]));
			if (!whole)
#pragma unroll
				for (int g = 0; g < 2; g++)
					for (int nt = 0; nt < NT; nt++)
						for (int e = 0; e < 4; e++) {
							int c = nt * 8 + 2 * t + (e & 1);
							if (!(e < 2 ? sees(a, ia[g], j0 + c, sa[g], Sg[c])
								    : sees(a, ib[g], j0 + c, sb[g], Sg[c])))
								s[g][nt][e] = 0.0f;
						}
			accumulate32_ld<DH, NT>(acc, s, Ks, 0, lane);
		}
		__syncthreads();
	}
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int half = 0; half < 2; half++) {
			int64_t i = half ? ib[g] : ia[g];
			if (i >= a.T)
				continue;
			float *di = dq + (i * a.H + h) * DH;
			for (int n = 0; n < NO; n++) {
				di[n * 8 + 2 * t] = a.scale * acc[g][n][2 * half];
				di[n * 8 + 2 * t + 1] = a.scale * acc[g][n][2 * half + 1];
			}
		}
}

// The dK/dV P warp's step over queries qlo .. qlo + 8NT (segments sg, lse ls) for keys wlo .. wlo+32
// (segments sa[g], sb[g] of rows wlo + 16g + lane/4 and + 8): s (S) becomes P, 0 where unseen, and
// its bf16 A fragments (those accumulate32_ld builds) go to the dS warp: px[32x], x = g·NT/2 + kk.
template <int NT>
__device__ inline void fa2_p(float (*s)[NT][4], uint4 *px, const cuk_attn &a, int64_t qlo, int64_t wlo,
			     int lane, bool keys_one, int32_t s0, const int32_t sa[2], const int32_t sb[2],
			     const int32_t *sg, const float *ls, float c2)
{
	constexpr int W = 8 * NT;
	int t = lane & 3;
	// whole: every query sees every key of the pair
	bool whole = keys_one && qlo >= wlo + 31 && qlo + W - 1 < a.T &&
		     (a.window <= 0 || qlo + W - 1 - wlo < a.window) &&
		     warp_all(sg[lane % W] == s0 && sg[(lane + 32) % W] == s0);
	// sees() in 32 bits: query qlo + c and key wlo + r (r = 16g + lane/4, + 8) differ by dq + c - r
	int qn = (int)(a.T - qlo < W ? a.T - qlo : W), dq = (int)(qlo - wlo) - (lane >> 2);
	int win = a.window > 0 && a.window < (int64_t)1 << 30 ? (int)a.window : 1 << 30;
#pragma unroll
	for (int g = 0; g < 2; g++) {
		for (int nt = 0; nt < NT; nt++)
			for (int e = 0; e < 4; e++) {
				int c = nt * 8 + 2 * t + (e & 1);
				s[g][nt][e] = exp2_fast(fmaf(s[g][nt][e], c2, -ls[c] * kLog2e));
			}
		if (!whole) // the mask's test outside the scores' loop
			for (int nt = 0; nt < NT; nt++)
				for (int e = 0; e < 4; e++) {
					int c = nt * 8 + 2 * t + (e & 1),
					    d = dq + c - 16 * g - (e < 2 ? 0 : 8);
					if (!(c < qn && d >= 0 && d < win &&
					      sg[c] == (e < 2 ? sa[g] : sb[g])))
						s[g][nt][e] = 0.0f;
				}
		for (int kk = 0; kk < NT / 2; kk++)
			px[32 * (g * NT / 2 + kk)] =
				make_uint4(pack2_fast(s[g][2 * kk][0], s[g][2 * kk][1]),
					   pack2_fast(s[g][2 * kk][2], s[g][2 * kk][3]),
					   pack2_fast(s[g][2 * kk + 1][0], s[g][2 * kk + 1][1]),
					   pack2_fast(s[g][2 * kk + 1][2], s[g][2 * kk + 1][3]));
	}
}

// The dS warp's: s (dP) becomes dS = P ∘ (dP − Dr) with P from px (fa2_p's layout), Dr dr.
template <int NT> __device__ inline void fa2_ds(float (*s)[NT][4], const uint4 *px, const float *dr, int lane)
{
	int t = lane & 3;
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int kk = 0; kk < NT / 2; kk++) {
			uint4 f = px[32 * (g * NT / 2 + kk)];
			// (nt, e) = (2kk, 0..1), (2kk, 2..3), (2kk + 1, 0..1), (2kk + 1, 2..3)
			uint32_t u[4] = {f.x, f.y, f.z, f.w};
			for (int r = 0; r < 4; r++) {
				float *x = s[g][2 * kk + (r >> 1)] + 2 * (r & 1);
				int c = (2 * kk + (r >> 1)) * 8 + 2 * t;
				x[0] = __int_as_float((int)(u[r] << 16)) * (x[0] - dr[c]);
				x[1] = __int_as_float((int)(u[r] & 0xffff0000u)) * (x[1] - dr[c + 1]);
			}
		}
}

// dK/dV: 64 keys of KV head gh per block over the query rows of one chunk of gh's group: the grid,
// the chunks (nsplit), the qlast bounds, the pipeline of Q/dO stages and the partials of
// fa_dkv_kernel (so fa_layout and fa_reduce_kernel serve both). Its 4 warps are two pairs; pair p
// takes keys j0 + 32p .. + 32 (two m16 groups: each Q or dO fragment that ldmatrix reads serves two
// MMAs), and the pair's warps split the products, not the rows: the P warp (2p) computes S = K Q^T,
// P (mask, exp) and dV += P^T dO; the dS warp (2p + 1) dP = V dO^T and, with its partner's P, dS =
// P ∘ (dP − Dr) and dK += dS^T Q. Why this layout: dK and dV of 32 rows would be 256 accumulator
// registers at DH 128; split by product each warp holds one 32 x DH accumulator (128) besides 8NT
// score registers for 8NT queries at a time (NT is 4 at DH 128, where 8 spills 300 bytes with nvcc
// 13, and 8 at DH 64), and nothing is computed twice (halves of DH per pass would recompute S and
// dP; FA2's split of DH across warps computes S/dP once per block but passes both P and dS through
// shared memory and reads them back by ldmatrix). Here only P crosses, as the bf16 A fragments the
// P warp builds for its own dV product: 16 bytes per lane, row group and 16 queries, stored and
// loaded at the same lane index (no ldmatrix, no bank conflicts), so the dS warp's product sees the
// same rounded P as dV's (the first family's dS uses P in fp32: this adds a relative 2^-9 to each
// dS, which is rounded to bf16 for its product anyway; an fp32 P would take 16 KB, past the 113 KB
// at which two blocks share an SM). Each warp's second product takes its A fragments from its own
// registers (the C fragment of two n8 tiles is the A fragment of a k16 step), as everywhere here.
//
// Shared-memory reads at DH 128, per warp and 32 queries (128 MMAs): 48 ldmatrix (K or V 16, Q or
// dO 16, dO or Q 16) and 4 16-byte P stores or loads, against fa_dkv_kernel's 80 ldmatrix per 128
// MMAs (its Q/dO fragments feed one MMA each). Shared memory: K, V, two Q/dO stages of 64 queries,
// lse/Dr/segments, P (4 KB per pair): 111.5 KB at DH 128, two blocks (8 warps) per SM as
// fa_dkv_kernel (250 and 253 registers with nvcc 13). At DH 64 (63.5 KB, 246 registers) also two,
// where fa_dkv_kernel's 166 registers allow three: capped at 168, this kernel spills (664 bytes at
// NT 8, 32 at NT 4). Barriers per stage: ready, P written (one per 8NT queries), stage done; every
// warp passes each one (a pair whose keys no query of a step sees skips the products, not the
// barriers).
template <int DH>
__global__ void __launch_bounds__(kFW * 32, 2)
	fa2_dkv_kernel(float *dk, float *dv, const uint16_t *dout, const uint16_t *q, const uint16_t *k,
		       const uint16_t *v, const float *lse, const float *Dr, const int32_t *seg,
		       const int32_t *qlast, cuk_attn a, int nsplit)
{
	constexpr int S = DH + 8, NO = DH / 8, NT = DH >= 128 ? 4 : 8;
	extern __shared__ float sm[];
	uint16_t *Ks = (uint16_t *)sm, *Vs = Ks + kFN * S;
	uint16_t *const st = Vs + kFN * S;             // stage x: Q at st + 2x·kFN·S, dO after it
	float *const fl = (float *)(st + 4 * kFN * S); // stage x: lse, Dr, segments at fl + 3x·kFN
	uint4 *const px = (uint4 *)(fl + 6 * kFN);     // pair p's P: px + 256p + 32(c0/8 + x) + lane
	const fa_dkv_at at = fa_dkv_place(a, nsplit, qlast);
	const int64_t gh = at.gh, chunk = at.chunk, h0 = at.h0, j0 = at.j0;
	const int nq = at.nq, ntiles = at.ntiles;
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, t = lane & 3, pair = warp >> 1;
	bool pw = (warp & 1) == 0; // the P warp (S, P, dV); else the dS warp (dP, dS, dK)
	int64_t wlo = j0 + 32 * pair;

	tile_async<DH>(Ks, k, j0, a.T, a.Hkv, gh);
	tile_async<DH>(Vs, v, j0, a.T, a.Hkv, gh);
	qdo_load<DH>(st, fl, 0, q, dout, lse, Dr, seg, j0, h0, a);
	int64_t ja[2], jb[2]; // (fa2_p and the end recompute them: fewer registers across the walk)
	int32_t sa[2], sb[2], s0;
	bool keys_one = fa2_rows(a, seg, wlo, lane, ja, jb, sa, sb, s0);
	float c2 = a.scale * kLog2e;
	float acc[2][NO][4]; // dV (the P warp) or dK / scale (the dS warp) of the pair's 32 keys
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int n = 0; n < NO; n++)
			for (int e = 0; e < 4; e++)
				acc[g][n][e] = 0.0f;
	uint4 *const pp = px + 32 * (kFN / 8) * pair + lane;
	const uint16_t *const Ar = pw ? Ks : Vs; // the A rows of the first product
	for (int it = 0; it < ntiles; it++) {
		int64_t i0 = j0 + (int64_t)(it % nq) * kFN;
		int cur = it & 1;
		qdo_stage<DH>(st, fl, it, ntiles, nq, j0, h0, q, dout, lse, Dr, seg, a);
		const uint16_t *Qs = st + 2 * cur * kFN * S, *Gs = st + (2 * cur + 1) * kFN * S;
		const float *L = fl + 3 * cur * kFN, *D = fl + 3 * cur * kFN + kFN;
		const int32_t *Sg = (const int32_t *)(fl + 3 * cur * kFN + 2 * kFN);
		for (int c0 = 0; c0 < kFN; c0 += 8 * NT) {
			int64_t qlo = i0 + c0;
			// whether a query qlo .. qlo + 8NT sees a key of the pair (the same in both warps):
			// not when every query is before the keys, or past every key's window
			bool act = wlo < a.T && qlo + 8 * NT - 1 >= wlo &&
				   (a.window <= 0 || qlo <= wlo + 31 + a.window - 1);
			float s[2][NT][4]; // S, then P (the P warp); dP, then dS (the dS warp)
			if (act) {
				scores32_ld<DH, NT>(s, Ar, 32 * pair, pw ? Qs : Gs, c0, lane);
				if (pw)
					fa2_p<NT>(s, pp + 32 * (c0 / 8), a, qlo, wlo, lane, keys_one, s0, sa,
						  sb, Sg + c0, L + c0, c2);
			}
			__syncthreads(); // P is written
			if (act) {
				if (!pw)
					fa2_ds<NT>(s, pp + 32 * (c0 / 8), D + c0, lane);
				accumulate32_ld<DH, NT>(acc, s, pw ? Gs : Qs, c0, lane);
			}
		}
		__syncthreads(); // every warp is done with this stage before the next load refills it
	}
	float *out = pw ? dv : dk, sc = pw ? 1.0f : a.scale;
#pragma unroll
	for (int g = 0; g < 2; g++)
		for (int half = 0; half < 2; half++) {
			int64_t j = wlo + 16 * g + 8 * half + (lane >> 2);
			if (j >= a.T)
				continue;
			int64_t row = nsplit == 1 ? j * a.Hkv + gh : (j * a.Hkv + gh) * nsplit + chunk;
			float *oj = out + row * DH;
			for (int n = 0; n < NO; n++)
				for (int e = 0; e < 2; e++)
					oj[n * 8 + 2 * t + e] = sc * acc[g][n][2 * half + e];
		}
}

// The scratch of the tensor-core kernels (cuk_attention_scratch): Dr, the bf16 copies, dV's partials.
struct fa_scratch {
	size_t dr, qb, kb, vb, gb, bd, pv, total;
	int nsplit;
};

inline size_t fa_align(size_t x) { return (x + 255) & ~(size_t)255; }

// How many chunks dK/dV splits a KV head's group into: enough blocks to fill the card (4 waves of
// 132 SMs at 2 blocks each is about 1000), while the partials fit the products' scratch budget.
inline fa_scratch fa_layout(const cuk_attn &a, bool bwd)
{
	fa_scratch l = {};
	size_t n = (size_t)(a.T * a.H * a.Dh), nk = (size_t)(a.T * a.Hkv * a.Dh);
	l.dr = 0;
	l.qb = l.dr + (bwd ? fa_align((size_t)(a.H * a.T) * 4) : 0);
	l.kb = l.qb + fa_align(n * 2);
	l.vb = l.kb + fa_align(nk * 2);
	l.gb = l.vb + fa_align(nk * 2);
	l.bd = l.gb + (bwd ? fa_align(n * 2) : 0);
	l.pv = l.bd + fa_align((size_t)(4 * ((a.T + kFN - 1) / kFN)) * 4); // tlo, thi, kfirst, qlast
	l.total = l.pv;
	l.nsplit = 1;
	if (!bwd)
		return l;
	int64_t group = a.H / a.Hkv, blocks = a.Hkv * ((a.T + kFR - 1) / kFR);
	int ns = 1;
	while (group % (2 * ns) == 0 && blocks * ns < 1024 &&
	       l.pv + fa_align(nk * 4 * (size_t)(2 * ns)) <= ((size_t)64 << 20))
		ns *= 2;
	l.nsplit = ns;
	if (ns > 1)
		l.total = l.pv + fa_align(nk * 4 * (size_t)ns);
	return l;
}

// The tiles' segment bounds into the scratch at l.bd: kfirst, qlast (then tlo, thi).
inline cudaError_t fa_bounds(cudaStream_t s, int32_t *bd, const int32_t *seg, int64_t T)
{
	int64_t nt = (T + kFN - 1) / kFN, blocks = (nt + 127) / 128;
	unsigned g = (unsigned)(blocks < 1024 ? blocks : 1024);
	fa_range_kernel<<<g, 128, 0, s>>>(bd + 2 * nt, bd + 3 * nt, seg, T);
	fa_bounds_kernel<<<g, 128, 0, s>>>(bd, bd + nt, bd + 2 * nt, bd + 3 * nt, T);
	return cudaGetLastError();
}

template <int DH> size_t fa_smem(int tiles) { return (size_t)tiles * kFN * (DH + 8) * 2; }

// Which tensor-core family runs each kernel where it has the head size (64 and 128): 1 (16 query
// rows per warp, the first) or 2 (32 rows per warp). Unset: the forward from family 2, dQ and dK/dV
// from family 1, as measured on the 8B step (H100, 2026-12-06: the forward 19.2 -> 15.5 ms a
// step, the backward 29.5 -> 31.9 with both of its kernels from family 2). TERN_CUDA_FA=1 or 2
// runs every kernel from that family; three digits name the forward's, dQ's and dK/dV's (211 is
// the default), for timing them one by one. Read once; cu_device.c refuses other values at create.
enum fa_kernel { FA_FWD, FA_DQ, FA_DKV };

inline int fa_family(fa_kernel k)
{
	static char f[3] = {0, 0, 0};
	if (!f[0]) {
		const char *e = getenv("TERN_CUDA_FA");
		const char *d = !e || !*e ? "211" : !strcmp(e, "1") ? "111" : !strcmp(e, "2") ? "222" : e;
		for (int i = 0; i < 3; i++)
			f[i] = strlen(d) == 3 && d[i] == '2' ? 2 : 1;
	}
	return f[k];
}

template <int DH> bool fa2_takes(fa_kernel k) { return (DH == 64 || DH == 128) && fa_family(k) == 2; }

template <typename K> cudaError_t fa_attr(K kernel, size_t smem)
{
	return cudaFuncSetAttribute((const void *)kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
				    (int)smem);
}

template <int DH>
cudaError_t fa_fwd_as(cudaStream_t s, float *o, float *lse, const float *q, const float *k, const float *v,
		      const int32_t *seg, void *scr, const cuk_attn &a)
{
	fa_scratch l = fa_layout(a, false);
	uint16_t *qb = (uint16_t *)((char *)scr + l.qb), *kb = (uint16_t *)((char *)scr + l.kb),
		 *vb = (uint16_t *)((char *)scr + l.vb);
	cudaError_t e;
	if ((e = cast_bf16(s, qb, q, a.T * a.H * DH)) || (e = cast_bf16(s, kb, k, a.T * a.Hkv * DH)) ||
	    (e = cast_bf16(s, vb, v, a.T * a.Hkv * DH)))
		return e;
	int32_t *bd = (int32_t *)((char *)scr + l.bd);
	if ((e = fa_bounds(s, bd, seg, a.T)))
		return e;
	if constexpr (DH == 64 || DH == 128)
		if (fa2_takes<DH>(FA_FWD)) {
			size_t smem = (size_t)(kF2R + 4 * kFN) * (DH + 8) * 2 + 2 * kFN * 4;
			if ((e = fa_attr(fa2_fwd_kernel<DH>, smem)))
				return e;
			int64_t blocks = a.H * ((a.T + kF2R - 1) / kF2R);
			fa2_fwd_kernel<DH>
				<<<(unsigned)blocks, kFW * 32, smem, s>>>(o, lse, qb, kb, vb, seg, bd, a);
			return cudaGetLastError();
		}
	size_t smem = fa_smem<DH>(4) + 2 * kFN * 4;
	if ((e = fa_attr(fa_fwd_kernel<DH>, smem)))
		return e;
	int64_t blocks = a.H * ((a.T + kFR - 1) / kFR);
	fa_fwd_kernel<DH><<<(unsigned)blocks, kFW * 32, smem, s>>>(o, lse, qb, kb, vb, seg, bd, a);
	return cudaGetLastError();
}

template <int DH>
cudaError_t fa_bwd_as(cudaStream_t s, float *dq, float *dk, float *dv, const float *dout, const float *q,
		      const float *k, const float *v, const float *lse, const int32_t *seg, void *scr,
		      const cuk_attn &a)
{
	fa_scratch l = fa_layout(a, true);
	char *b = (char *)scr;
	float *Dr = (float *)(b + l.dr);
	uint16_t *qb = (uint16_t *)(b + l.qb), *kb = (uint16_t *)(b + l.kb), *vb = (uint16_t *)(b + l.vb),
		 *gb = (uint16_t *)(b + l.gb);
	cudaError_t e;
	if ((e = cast_bf16(s, qb, q, a.T * a.H * DH)) || (e = cast_bf16(s, kb, k, a.T * a.Hkv * DH)) ||
	    (e = cast_bf16(s, vb, v, a.T * a.Hkv * DH)) || (e = cast_bf16(s, gb, dout, a.T * a.H * DH)))
		return e;
	int32_t *bd = (int32_t *)(b + l.bd);
	if ((e = fa_bounds(s, bd, seg, a.T)))
		return e;
	size_t smem_q = fa_smem<DH>(4) + 2 * kFN * 4, smem_kv = fa_smem<DH>(6) + 6 * kFN * 4;
	if ((e = fa_attr(fa_dq_kernel<DH>, smem_q)) || (e = fa_attr(fa_dkv_kernel<DH>, smem_kv)))
		return e;
	int64_t rb = (a.T + kFR - 1) / kFR;
	int ns = l.nsplit;
	// dK/dV first: with nsplit > 1 its dK partials live in dq's memory until dQ overwrites them
	float *pk = ns > 1 ? dq : dk, *pv = ns > 1 ? (float *)(b + l.pv) : dv;
	bool two = false; // the second family's dK/dV (DH 64 and 128): P's exchange after smem_kv
	if constexpr (DH == 64 || DH == 128)
		if ((two = fa2_takes<DH>(FA_DKV))) {
			size_t smem = smem_kv + (size_t)2 * kFN * 32 * 2;
			if ((e = fa_attr(fa2_dkv_kernel<DH>, smem)))
				return e;
			fa2_dkv_kernel<DH><<<(unsigned)(a.Hkv * ns * rb), kFW * 32, smem, s>>>(
				pk, pv, gb, qb, kb, vb, lse, Dr, seg, bd + rb, a, ns);
		}
	if (!two)
		fa_dkv_kernel<DH><<<(unsigned)(a.Hkv * ns * rb), kFW * 32, smem_kv, s>>>(
			pk, pv, gb, qb, kb, vb, lse, Dr, seg, bd + rb, a, ns);
	if (ns > 1) {
		int64_t n = a.T * a.Hkv * DH, blocks = (n + 255) / 256;
		fa_reduce_kernel<<<(unsigned)(blocks < 4096 ? blocks : 4096), 256, 0, s>>>(
			dk, dv, pk, pv, a.T * a.Hkv, DH, ns);
	}
	if constexpr (DH == 64 || DH == 128)
		if (fa2_takes<DH>(FA_DQ)) {
			size_t smem = (size_t)(2 * kF2R + 4 * kF2K) * (DH + 8) * 2 + 2 * kF2K * 4;
			if ((e = fa_attr(fa2_dq_kernel<DH>, smem)))
				return e;
			int64_t blocks = a.H * ((a.T + kF2R - 1) / kF2R);
			fa2_dq_kernel<DH><<<(unsigned)blocks, kFW * 32, smem, s>>>(dq, gb, qb, kb, vb, lse,
										   Dr, seg, bd, a);
			return cudaGetLastError();
		}
	fa_dq_kernel<DH>
		<<<(unsigned)(a.H * rb), kFW * 32, smem_q, s>>>(dq, gb, qb, kb, vb, lse, Dr, seg, bd, a);
	return cudaGetLastError();
}

} // namespace

extern "C" bool cuk_attention_mma_dh(int64_t Dh)
{
	return Dh == 16 || Dh == 32 || Dh == 64 || Dh == 96 || Dh == 128;
}

static bool fa_takes(const struct cuk_attn *a) { return a->bf16 && cuk_attention_mma_dh(a->Dh); }

extern "C" size_t cuk_attention_scratch(const struct cuk_attn *a, bool bwd)
{
	if (fa_takes(a))
		return fa_layout(*a, bwd).total;
	return bwd ? (size_t)(a->H * a->T) * 4 : 0;
}

extern "C" cudaError_t cuk_attention(cudaStream_t s, float *o, float *lse, const float *q, const float *k,
				     const float *v, const int32_t *seg, void *scratch,
				     const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	if (fa_takes(a))
		switch (a->Dh) {
		case 16: return fa_fwd_as<16>(s, o, lse, q, k, v, seg, scratch, *a);
		case 32: return fa_fwd_as<32>(s, o, lse, q, k, v, seg, scratch, *a);
		case 64: return fa_fwd_as<64>(s, o, lse, q, k, v, seg, scratch, *a);
		case 96: return fa_fwd_as<96>(s, o, lse, q, k, v, seg, scratch, *a);
		default: return fa_fwd_as<128>(s, o, lse, q, k, v, seg, scratch, *a);
		}
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
					 const float *lse, const int32_t *seg, void *scratch,
					 const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	int64_t rows = a->H * a->T;
	float *Dr = (float *)scratch; // the scratch of both kernel families starts with Dr
	attn_dr_kernel<<<(unsigned)((rows + kWarps - 1) / kWarps), kThreads, 0, s>>>(Dr, dout, o, *a);
	if (fa_takes(a))
		switch (a->Dh) {
		case 16: return fa_bwd_as<16>(s, dq, dk, dv, dout, q, k, v, lse, seg, scratch, *a);
		case 32: return fa_bwd_as<32>(s, dq, dk, dv, dout, q, k, v, lse, seg, scratch, *a);
		case 64: return fa_bwd_as<64>(s, dq, dk, dv, dout, q, k, v, lse, seg, scratch, *a);
		case 96: return fa_bwd_as<96>(s, dq, dk, dv, dout, q, k, v, lse, seg, scratch, *a);
		default: return fa_bwd_as<128>(s, dq, dk, dv, dout, q, k, v, lse, seg, scratch, *a);
		}
	switch (chunks_of(a->Dh)) {
	case 1: return bwd_as<1>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 2: return bwd_as<2>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 4: return bwd_as<4>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 8: return bwd_as<8>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	default: return bwd_as<16>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	}
}
