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

// ---- the tensor-core kernels (cuk_attn.bf16): bf16 operands, fp32 accumulation, sm_80 and later --
//
// The same three passes as above (forward; dQ by query rows; dK/dV by key rows), each over tiles
// of kMT rows: a block of kMW warps takes kMT rows of one head (16 per warp), the rows it pairs
// them with pass through shared memory as bf16 in tiles of kMT, and each warp computes its 16 x 32
// score blocks with mma.sync m16n8k16 (bf16 x bf16 -> f32). Score accumulators are laid out as the
// A operand of the next product (the C fragment of two adjacent n8 tiles is the A fragment of one
// k16 step), so P and dS go from registers into the second product without shared memory. Every
// output element is written by one thread after sums in a fixed order: results do not depend on
// scheduling. The softmax runs in base 2 (scores times scale·log2 e); lse is stored in base e.
namespace
{

constexpr int kMW = 4;        // warps per block
constexpr int kMT = kMW * 16; // rows per block and per shared tile
constexpr int kMC = 32;       // paired rows per score block (4 n8 tiles)
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ inline uint32_t bf16_bits(float x)
{
	uint32_t u = __float_as_uint(x);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (u >> 16) | 0x40u; // a NaN stays a NaN
	return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

__device__ inline uint32_t pack2(float lo, float hi) { return bf16_bits(lo) | (bf16_bits(hi) << 16); }

// two bf16 at p (p even-aligned): the low half is p[0]
__device__ inline uint32_t ld_pair(const uint16_t *p)
{
#ifdef TERN_CUDA_EMU
	uint32_t u;
	memcpy(&u, p, 4);
	return u;
#else
	return *(const uint32_t *)p;
#endif
}

// p[0] and p[stride] (two rows of one column)
__device__ inline uint32_t ld_col(const uint16_t *p, int stride)
{
	return (uint32_t)p[0] | ((uint32_t)p[stride] << 16);
}

// d += a · b for one warp: a the 16x16 A fragment (row-major), b0/b1 the 16x8 B fragment, d the
// 16x8 f32 C fragment, in the PTX ISA's m16n8k16 layouts (lane = 4·g + t: a[0] rows g, cols
// 2t..2t+1; a[1] row g+8; a[2], a[3] the same at cols +8; b0 k 2t..2t+1 of col g, b1 k +8; d[0..1]
// row g cols 2t..2t+1, d[2..3] row g+8).
__device__ inline void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if defined(TERN_CUDA_EMU)
	// the emulation: gather the operands through lane exchanges, fp32 products
	int lane = (int)(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
	float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
	for (int kk = 0; kk < 16; kk++) {
		int hi = kk >> 3, q = (kk & 7) >> 1, sh = (kk & 1) * 16;
		uint32_t ra = (uint32_t)emu_warp_exchange(a[2 * hi], g * 4 + q);
		uint32_t rb = (uint32_t)emu_warp_exchange(a[2 * hi + 1], g * 4 + q);
		uint32_t b = hi ? b1 : b0;
		uint32_t c0 = (uint32_t)emu_warp_exchange(b, (2 * t) * 4 + q);
		uint32_t c1 = (uint32_t)emu_warp_exchange(b, (2 * t + 1) * 4 + q);
		float A0 = __int_as_float((int)(((ra >> sh) & 0xffffu) << 16));
		float A1 = __int_as_float((int)(((rb >> sh) & 0xffffu) << 16));
		float B0 = __int_as_float((int)(((c0 >> sh) & 0xffffu) << 16));
		float B1 = __int_as_float((int)(((c1 >> sh) & 0xffffu) << 16));
		s[0] += A0 * B0;
		s[1] += A0 * B1;
		s[2] += A1 * B0;
		s[3] += A1 * B1;
	}
	for (int e = 0; e < 4; e++)
		d[e] += s[e];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
		     "{%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	(void)d, (void)a, (void)b0, (void)b1;
	__trap(); // never launched below compute 8.0 (cu_ops.c checks)
#endif
}

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

// Rows r0 .. r0+kMT of head hd of a [T, heads, DH] f32 tensor into tile [kMT][DH + 8] as bf16
// (zeros past T). The 8 extra columns keep a warp's fragment reads on distinct banks.
template <int DH>
__device__ inline void load_bf16(uint16_t *tile, const float *src, int64_t r0, int64_t T, int64_t heads,
				 int64_t hd)
{
	constexpr int S = DH + 8;
	for (int k = threadIdx.x; k < kMT * DH; k += kMW * 32) {
		int r = k / DH, d = k % DH;
		int64_t row = r0 + r;
		tile[r * S + d] = (uint16_t)bf16_bits(row < T ? src[(row * heads + hd) * DH + d] : 0.0f);
	}
}

// The A fragments of rows [r, r+16) of a bf16 tile, k step ks.
template <int DH>
__device__ inline void a_frag(uint32_t f[4], const uint16_t *tile, int r, int ks, int g, int t)
{
	constexpr int S = DH + 8;
	const uint16_t *p = tile + (r + g) * S + ks * 16 + 2 * t;
	f[0] = ld_pair(p);
	f[1] = ld_pair(p + 8 * S);
	f[2] = ld_pair(p + 8);
	f[3] = ld_pair(p + 8 * S + 8);
}

// Query i sees key j (backend.h): a real query row (then j <= i is a real key too), one segment,
// inside the window.
__device__ inline bool sees(const cuk_attn &a, int64_t i, int64_t j, int32_t si, int32_t sj)
{
	return i < a.T && j <= i && si == sj && (a.window <= 0 || i - j < a.window);
}

// The key tile j0 .. j0+kMT of KV head gh into shared memory: K and V as bf16, the keys' segments.
// Between two barriers: every warp has finished with the previous tile, and sees all of this one.
template <int DH>
__device__ inline void load_keys(uint16_t *Ks, uint16_t *Vs, int32_t *Sg, const float *k, const float *v,
				 const int32_t *seg, int64_t j0, const cuk_attn &a, int64_t gh)
{
	__syncthreads();
	load_bf16<DH>(Ks, k, j0, a.T, a.Hkv, gh);
	load_bf16<DH>(Vs, v, j0, a.T, a.Hkv, gh);
	for (int r = threadIdx.x; r < kMT; r += kMW * 32)
		Sg[r] = j0 + r < a.T ? seg[j0 + r] : 0;
	__syncthreads();
}

// Whether no query row wlo .. wlo+15 of a warp sees a key of the tile at j0 (rows past T, or every
// key of the tile before their window); keys after the rows end the walk instead.
__device__ inline bool tile_unseen(const cuk_attn &a, int64_t j0, int64_t wlo)
{
	return wlo >= a.T || (a.window > 0 && j0 + kMT - 1 < wlo - a.window + 1);
}

// s[4][4] (16 x 32) = the 16 rows of fragments fa (registers, KS k steps) times rows c0 .. c0+32
// of tile B (each row one column of the product).
template <int DH>
__device__ inline void scores(float s[4][4], const uint32_t (*fa)[4], const uint16_t *B, int c0, int g, int t)
{
	constexpr int S = DH + 8, KS = DH / 16;
	for (int nt = 0; nt < 4; nt++)
		for (int e = 0; e < 4; e++)
			s[nt][e] = 0.0f;
	for (int ks = 0; ks < KS; ks++)
		for (int nt = 0; nt < 4; nt++) {
			const uint16_t *p = B + (c0 + nt * 8 + g) * S + ks * 16 + 2 * t;
			mma_bf16(s[nt], fa[ks], ld_pair(p), ld_pair(p + 8));
		}
}

// acc[DH/8][4] += (the 16 x 32 block x as bf16 A fragments) times rows c0 .. c0+32 of tile B.
template <int DH>
__device__ inline void accumulate(float (*acc)[4], float x[4][4], const uint16_t *B, int c0, int g, int t)
{
	constexpr int S = DH + 8, NO = DH / 8;
	for (int kk = 0; kk < 2; kk++) {
		uint32_t f[4] = {pack2(x[2 * kk][0], x[2 * kk][1]), pack2(x[2 * kk][2], x[2 * kk][3]),
				 pack2(x[2 * kk + 1][0], x[2 * kk + 1][1]),
				 pack2(x[2 * kk + 1][2], x[2 * kk + 1][3])};
		for (int n = 0; n < NO; n++) {
			const uint16_t *p = B + (c0 + kk * 16 + 2 * t) * S + n * 8 + g;
			mma_bf16(acc[n], f, ld_col(p, S), ld_col(p + 8 * S, S));
		}
	}
}

template <int DH>
__global__ void mma_fwd_kernel(float *o, float *lse, const float *q, const float *k, const float *v,
			       const int32_t *seg, cuk_attn a)
{
	constexpr int S = DH + 8, KS = DH / 16, NO = DH / 8;
	extern __shared__ float sm[];
	uint16_t *Ks = (uint16_t *)sm, *Vs = Ks + kMT * S;
	int32_t *Sg = (int32_t *)(Vs + kMT * S);
	int64_t nb = (a.T + kMT - 1) / kMT;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kMT; // the longest rows first
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int64_t wlo = i0 + warp * 16, ia = wlo + g, ib = ia + 8;

	load_bf16<DH>(Ks, q, i0, a.T, a.H, h); // Q passes through Ks into registers
	__syncthreads();
	uint32_t qf[KS][4];
	for (int ks = 0; ks < KS; ks++)
		a_frag<DH>(qf[ks], Ks, warp * 16, ks, g, t);
	int32_t sa = ia < a.T ? seg[ia] : 0, sb = ib < a.T ? seg[ib] : 0;
	float ma = -INFINITY, mb = -INFINITY, la = 0.0f, lb = 0.0f, c2 = a.scale * kLog2e;
	float acc[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			acc[n][e] = 0.0f;
	int64_t last = i0 + kMT - 1 < a.T - 1 ? i0 + kMT - 1 : a.T - 1;
	for (int64_t j0 = first_key(a, i0); j0 <= last; j0 += kMT) {
		load_keys<DH>(Ks, Vs, Sg, k, v, seg, j0, a, gh);
		if (tile_unseen(a, j0, wlo))
			continue;
		for (int c0 = 0; c0 < kMT && j0 + c0 <= wlo + 15; c0 += kMC) {
			float s[4][4];
			scores<DH>(s, qf, Ks, c0, g, t);
			float xa = -INFINITY, xb = -INFINITY;
			for (int nt = 0; nt < 4; nt++)
				for (int e = 0; e < 4; e++) {
					int c = c0 + nt * 8 + 2 * t + (e & 1);
					bool ok = e < 2 ? sees(a, ia, j0 + c, sa, Sg[c])
							: sees(a, ib, j0 + c, sb, Sg[c]);
					float x = ok ? s[nt][e] * c2 : -INFINITY;
					s[nt][e] = x;
					if (e < 2)
						xa = fmaxf(xa, x);
					else
						xb = fmaxf(xb, x);
				}
			float na = fmaxf(ma, quad_max(xa)), nbm = fmaxf(mb, quad_max(xb));
			float ca = na == -INFINITY ? 1.0f : exp2f(ma - na);
			float cb = nbm == -INFINITY ? 1.0f : exp2f(mb - nbm);
			ma = na, mb = nbm;
			float pa = 0.0f, pb = 0.0f;
			for (int nt = 0; nt < 4; nt++)
				for (int e = 0; e < 4; e++) {
					float m = e < 2 ? ma : mb;
					float p = s[nt][e] == -INFINITY ? 0.0f : exp2f(s[nt][e] - m);
					s[nt][e] = p;
					if (e < 2)
						pa += p;
					else
						pb += p;
				}
			la = la * ca + pa, lb = lb * cb + pb;
			for (int n = 0; n < NO; n++) {
				acc[n][0] *= ca, acc[n][1] *= ca;
				acc[n][2] *= cb, acc[n][3] *= cb;
			}
			accumulate<DH>(acc, s, Vs, c0, g, t);
		}
	}
	la = quad_sum(la), lb = quad_sum(lb);
	for (int half = 0; half < 2; half++) {
		int64_t i = half ? ib : ia;
		float l = half ? lb : la, m = half ? mb : ma;
		if (i >= a.T)
			continue;
		float *oi = o + (i * a.H + h) * DH;
		for (int n = 0; n < NO; n++) {
			oi[n * 8 + 2 * t] = acc[n][2 * half] / l;
			oi[n * 8 + 2 * t + 1] = acc[n][2 * half + 1] / l;
		}
		if (t == 0)
			lse[h * a.T + i] = m * kLn2 + logf(l);
	}
}

// dQ_i = scale · Σ_j dS_ij K_j, dS = P ∘ (dO V^T − Dr): query rows, K/V tiles.
template <int DH>
__global__ void mma_dq_kernel(float *dq, const float *dout, const float *q, const float *k, const float *v,
			      const float *lse, const float *Dr, const int32_t *seg, cuk_attn a)
{
	constexpr int S = DH + 8, KS = DH / 16, NO = DH / 8;
	extern __shared__ float sm[];
	uint16_t *Ks = (uint16_t *)sm, *Vs = Ks + kMT * S;
	int32_t *Sg = (int32_t *)(Vs + kMT * S);
	int64_t nb = (a.T + kMT - 1) / kMT;
	int64_t h = blockIdx.x % a.H, i0 = (nb - 1 - blockIdx.x / a.H) * kMT;
	int64_t gh = h / (a.H / a.Hkv);
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int64_t wlo = i0 + warp * 16, ia = wlo + g, ib = ia + 8;

	load_bf16<DH>(Ks, q, i0, a.T, a.H, h);
	load_bf16<DH>(Vs, dout, i0, a.T, a.H, h);
	__syncthreads();
	uint32_t qf[KS][4], gf[KS][4];
	for (int ks = 0; ks < KS; ks++) {
		a_frag<DH>(qf[ks], Ks, warp * 16, ks, g, t);
		a_frag<DH>(gf[ks], Vs, warp * 16, ks, g, t);
	}
	int32_t sa = ia < a.T ? seg[ia] : 0, sb = ib < a.T ? seg[ib] : 0;
	float c2 = a.scale * kLog2e;
	float La = ia < a.T ? lse[h * a.T + ia] * kLog2e : 0.0f,
	      Lb = ib < a.T ? lse[h * a.T + ib] * kLog2e : 0.0f;
	float Da = ia < a.T ? Dr[h * a.T + ia] : 0.0f, Db = ib < a.T ? Dr[h * a.T + ib] : 0.0f;
	float acc[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			acc[n][e] = 0.0f;
	int64_t last = i0 + kMT - 1 < a.T - 1 ? i0 + kMT - 1 : a.T - 1;
	for (int64_t j0 = first_key(a, i0); j0 <= last; j0 += kMT) {
		load_keys<DH>(Ks, Vs, Sg, k, v, seg, j0, a, gh);
		if (tile_unseen(a, j0, wlo))
			continue;
		for (int c0 = 0; c0 < kMT && j0 + c0 <= wlo + 15; c0 += kMC) {
			float s[4][4], dp[4][4];
			scores<DH>(s, qf, Ks, c0, g, t);
			scores<DH>(dp, gf, Vs, c0, g, t);
			for (int nt = 0; nt < 4; nt++)
				for (int e = 0; e < 4; e++) {
					int c = c0 + nt * 8 + 2 * t + (e & 1);
					bool ok = e < 2 ? sees(a, ia, j0 + c, sa, Sg[c])
							: sees(a, ib, j0 + c, sb, Sg[c]);
					float p = ok ? exp2f(s[nt][e] * c2 - (e < 2 ? La : Lb)) : 0.0f;
					s[nt][e] = p * (dp[nt][e] - (e < 2 ? Da : Db));
				}
			accumulate<DH>(acc, s, Ks, c0, g, t);
		}
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

// dV_j = Σ_i P_ij dO_i and dK_j = scale · Σ_i dS_ij Q_i over the query rows of every head of KV
// head g: key rows, Q/dO tiles (with lse, Dr and the segments).
template <int DH>
__global__ void mma_dkv_kernel(float *dk, float *dv, const float *dout, const float *q, const float *k,
			       const float *v, const float *lse, const float *Dr, const int32_t *seg,
			       cuk_attn a)
{
	constexpr int S = DH + 8, KS = DH / 16, NO = DH / 8;
	extern __shared__ float sm[];
	uint16_t *Ks = (uint16_t *)sm, *Vs = Ks + kMT * S, *Qs = Vs + kMT * S, *Gs = Qs + kMT * S;
	float *Ls = (float *)(Gs + kMT * S), *Ds = Ls + kMT;
	int32_t *Sq = (int32_t *)(Ds + kMT);
	int64_t gh = blockIdx.x % a.Hkv, j0 = (blockIdx.x / a.Hkv) * kMT; // the longest columns first
	int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	int64_t wlo = j0 + warp * 16, ja = wlo + g, jb = ja + 8;

	load_bf16<DH>(Ks, k, j0, a.T, a.Hkv, gh);
	load_bf16<DH>(Vs, v, j0, a.T, a.Hkv, gh);
	int32_t sa = ja < a.T ? seg[ja] : 0, sb = jb < a.T ? seg[jb] : 0;
	float c2 = a.scale * kLog2e;
	float dK[NO][4], dV[NO][4];
	for (int n = 0; n < NO; n++)
		for (int e = 0; e < 4; e++)
			dK[n][e] = dV[n][e] = 0.0f;
	int64_t last = j0 + kMT - 1 < a.T - 1 ? j0 + kMT - 1 : a.T - 1;
	int64_t end = query_end(a, last);
	int64_t group = a.H / a.Hkv;
	for (int64_t h = gh * group; h < (gh + 1) * group; h++)
		for (int64_t i0 = j0; i0 < end; i0 += kMT) {
			__syncthreads();
			load_bf16<DH>(Qs, q, i0, a.T, a.H, h);
			load_bf16<DH>(Gs, dout, i0, a.T, a.H, h);
			for (int r = threadIdx.x; r < kMT; r += kMW * 32) {
				bool in = i0 + r < a.T;
				Ls[r] = in ? lse[h * a.T + i0 + r] * kLog2e : 0.0f;
				Ds[r] = in ? Dr[h * a.T + i0 + r] : 0.0f;
				Sq[r] = in ? seg[i0 + r] : 0;
			}
			__syncthreads();
			if (wlo >= a.T)
				continue;
			for (int c0 = 0; c0 < kMT; c0 += kMC) {
				if (i0 + c0 + kMC - 1 < wlo)
					continue; // every query before the warp's keys
				if (a.window > 0 && i0 + c0 > wlo + 15 + a.window - 1)
					break; // every query past the window
				float s[4][4], dp[4][4];
				for (int nt = 0; nt < 4; nt++)
					for (int e = 0; e < 4; e++)
						s[nt][e] = dp[nt][e] = 0.0f;
				for (int ks = 0; ks < KS; ks++) {
					uint32_t kf[4], vf[4];
					a_frag<DH>(kf, Ks, warp * 16, ks, g, t);
					a_frag<DH>(vf, Vs, warp * 16, ks, g, t);
					for (int nt = 0; nt < 4; nt++) {
						const uint16_t *pq =
							Qs + (c0 + nt * 8 + g) * S + ks * 16 + 2 * t;
						const uint16_t *pg =
							Gs + (c0 + nt * 8 + g) * S + ks * 16 + 2 * t;
						mma_bf16(s[nt], kf, ld_pair(pq), ld_pair(pq + 8));
						mma_bf16(dp[nt], vf, ld_pair(pg), ld_pair(pg + 8));
					}
				}
				for (int nt = 0; nt < 4; nt++)
					for (int e = 0; e < 4; e++) {
						int c = c0 + nt * 8 + 2 * t + (e & 1);
						int64_t i = i0 + c, j = e < 2 ? ja : jb;
						bool ok = sees(a, i, j, Sq[c], e < 2 ? sa : sb);
						float p = ok ? exp2f(s[nt][e] * c2 - Ls[c]) : 0.0f;
						s[nt][e] = p;
						dp[nt][e] = p * (dp[nt][e] - Ds[c]);
					}
				accumulate<DH>(dV, s, Gs, c0, g, t);
				accumulate<DH>(dK, dp, Qs, c0, g, t);
			}
		}
	for (int half = 0; half < 2; half++) {
		int64_t j = half ? jb : ja;
		if (j >= a.T)
			continue;
		float *kj = dk + (j * a.Hkv + gh) * DH, *vj = dv + (j * a.Hkv + gh) * DH;
		for (int n = 0; n < NO; n++)
			for (int e = 0; e < 2; e++) {
				kj[n * 8 + 2 * t + e] = a.scale * dK[n][2 * half + e];
				vj[n * 8 + 2 * t + e] = dV[n][2 * half + e];
			}
	}
}

template <int DH> size_t mma_smem_rows(int tiles) { return (size_t)tiles * kMT * (DH + 8) * 2; }

template <int DH>
cudaError_t mma_fwd_as(cudaStream_t s, float *o, float *lse, const float *q, const float *k, const float *v,
		       const int32_t *seg, const cuk_attn &a)
{
	size_t smem = mma_smem_rows<DH>(2) + kMT * 4;
	int64_t blocks = a.H * ((a.T + kMT - 1) / kMT);
	cudaError_t e = cudaFuncSetAttribute((const void *)mma_fwd_kernel<DH>,
					     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
	if (e != cudaSuccess)
		return e;
	mma_fwd_kernel<DH><<<(unsigned)blocks, kMW * 32, smem, s>>>(o, lse, q, k, v, seg, a);
	return cudaGetLastError();
}

template <int DH>
cudaError_t mma_bwd_as(cudaStream_t s, float *dq, float *dk, float *dv, const float *dout, const float *q,
		       const float *k, const float *v, const float *lse, const int32_t *seg, float *Dr,
		       const cuk_attn &a)
{
	int64_t rb = (a.T + kMT - 1) / kMT;
	size_t smem_q = mma_smem_rows<DH>(2) + kMT * 4, smem_kv = mma_smem_rows<DH>(4) + 3 * kMT * 4;
	cudaError_t e = cudaFuncSetAttribute((const void *)mma_dq_kernel<DH>,
					     cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_q);
	if (e == cudaSuccess)
		e = cudaFuncSetAttribute((const void *)mma_dkv_kernel<DH>,
					 cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem_kv);
	if (e != cudaSuccess)
		return e;
	mma_dq_kernel<DH><<<(unsigned)(a.H * rb), kMW * 32, smem_q, s>>>(dq, dout, q, k, v, lse, Dr, seg, a);
	mma_dkv_kernel<DH>
		<<<(unsigned)(a.Hkv * rb), kMW * 32, smem_kv, s>>>(dk, dv, dout, q, k, v, lse, Dr, seg, a);
	return cudaGetLastError();
}

} // namespace

extern "C" bool cuk_attention_mma_dh(int64_t Dh)
{
	return Dh == 16 || Dh == 32 || Dh == 64 || Dh == 96 || Dh == 128;
}

extern "C" cudaError_t cuk_attention(cudaStream_t s, float *o, float *lse, const float *q, const float *k,
				     const float *v, const int32_t *seg, const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	if (a->bf16 && cuk_attention_mma_dh(a->Dh))
		switch (a->Dh) {
		case 16: return mma_fwd_as<16>(s, o, lse, q, k, v, seg, *a);
		case 32: return mma_fwd_as<32>(s, o, lse, q, k, v, seg, *a);
		case 64: return mma_fwd_as<64>(s, o, lse, q, k, v, seg, *a);
		case 96: return mma_fwd_as<96>(s, o, lse, q, k, v, seg, *a);
		default: return mma_fwd_as<128>(s, o, lse, q, k, v, seg, *a);
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
					 const float *lse, const int32_t *seg, float *Dr,
					 const struct cuk_attn *a)
{
	if (a->T == 0)
		return cudaSuccess;
	int64_t rows = a->H * a->T;
	attn_dr_kernel<<<(unsigned)((rows + kWarps - 1) / kWarps), kThreads, 0, s>>>(Dr, dout, o, *a);
	if (a->bf16 && cuk_attention_mma_dh(a->Dh))
		switch (a->Dh) {
		case 16: return mma_bwd_as<16>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
		case 32: return mma_bwd_as<32>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
		case 64: return mma_bwd_as<64>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
		case 96: return mma_bwd_as<96>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
		default: return mma_bwd_as<128>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
		}
	switch (chunks_of(a->Dh)) {
	case 1: return bwd_as<1>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 2: return bwd_as<2>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 4: return bwd_as<4>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	case 8: return bwd_as<8>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	default: return bwd_as<16>(s, dq, dk, dv, dout, q, k, v, lse, seg, Dr, *a);
	}
}
