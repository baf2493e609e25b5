// The small-T products (decoding): y[T,O] = x[T,I] · W[O,I]ᵀ for T <= CUK_GEMV_MAX_T, reading W in
// its stored format (f32, f16, bf16, NF4, NF4-DQ, ternary; the layouts of src/quant/quant.h and
// k_quant.cu's wvalue) once for all T rows: no decoded copy of W, no cuBLAS.
//
// gemv_kernel (the fast path): a block of kWarps warps owns kRows rows of W. Each lane owns chunks
// of CH consecutive columns (one LB-byte load of W per row: 16 bytes where the registers allow),
// the warps split a row's chunks (chunk c to warp (c / 32) % kWarps), so a warp reads kRows
// coalesced runs of 32 · LB bytes per step. A lane loads its chunk of x (T rows, rounded to the
// product's precision) once and uses it for all kRows rows; the kRows · T partial sums are
// reduced over the lanes by shuffles, then over the warps in shared memory in warp order (a
// fixed order: the same result every run). Needs I a multiple of CH, W's rows and data aligned to
// LB bytes and x to 16 (cuk_gemv checks; gemv_any_kernel takes every other shape, slowly).
//
// gemv_nf4_kernel (NF4 / NF4-DQ, every T; the decode step's products): a lane owns 32-weight
// chunks of kRows rows and first writes the 16 values its chunk's weights can take (code × block
// scale, rounded) into its own column of a shared table, then spends one byte permute, one shared
// load and T fused multiply-adds per weight (no per-weight multiply or rounding, no bank
// conflicts). At 1 and 2 tokens the same layout and bits as gemv_kernel. TERN_CUDA_GEMV_TABLE=0
// (read at each call) keeps NF4 on gemv_kernel, for before/after timings and test_ops' exact
// comparison.
//
// The numbers are those of backend.h's product precision, as the decode + cuBLAS path computes
// them: the dequantized value (NF4: code × absmax; NF4-DQ: dmap[q] × nested + offset, two
// roundings, no fused multiply-add) rounded to f16/bf16, x (× the f16 scale) rounded, products of
// two rounded values (exact in fp32) summed in fp32 by fmaf. Ternary sums ±x and multiplies by the
// rounded scale once. Only the summation order differs from cuBLAS.
#include "backend/cuda/cu_kernels_gemv.h"
#include "backend/cuda/k_mma.cuh"
#include "backend/cuda/k_pdl.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

namespace
{

__constant__ float g_nf4[16];
__constant__ float g_dmap[256];

constexpr int kWarps = 4; // warps per block (they split each row's chunks)
constexpr int kRows = 8;  // rows of W per block (x's chunk is reused for all of them)
// Blocks per SM the one- and two-token kernels are built for (at most 128 registers a thread):
// 4 x 132 SMs hold the 512 blocks of a 4096-row product in one wave (3 would leave a second,
// quarter-full one).
constexpr int kMinBlocks = 4;

// Bytes of W one lane loads per row and step: 16 where x's chunk (CH · TT floats) fits 64
// registers, else less (NF4 and ternary at more tokens).
constexpr int lane_bytes(int wdt, int tt)
{
	return wdt <= 2   ? 16
	       : wdt <= 4 ? (tt <= 2   ? 16
			     : tt == 4 ? 8
				       : 4)
			  : (tt == 1   ? 16
			     : tt == 2 ? 8
			     : tt == 4 ? 4
				       : 2);
}
// Weights in lb bytes.
constexpr int chunk_weights(int wdt, int lb)
{
	return wdt == 0 ? lb / 4 : wdt <= 2 ? lb / 2 : wdt <= 4 ? lb * 2 : lb * 4;
}

__device__ inline float u2f(uint32_t u)
{
	float f;
	memcpy(&f, &u, 4);
	return f;
}

// a · b and a + b rounded on their own (never contracted into a fused multiply-add)
__device__ inline float mul_rn(float a, float b)
{
#ifdef TERN_CUDA_EMU
	return a * b;
#else
	return __fmul_rn(a, b);
#endif
}
__device__ inline float add_rn(float a, float b)
{
#ifdef TERN_CUDA_EMU
	return a + b;
#else
	return __fadd_rn(a, b);
#endif
}

// v rounded to the product precision P (0 f32: unchanged, 1 f16, 2 bf16; nearest even)
template <int P> __device__ inline float round1(float v)
{
	if (P == 1)
		return __half2float(__float2half_rn(v));
	if (P == 2)
		return __bfloat162float(__float2bfloat16_rn(v));
	return v;
}
template <int P> __device__ inline void round2(float &a, float &b)
{
	if (P == 1) {
		__half2 h = __floats2half2_rn(a, b);
		a = __low2float(h);
		b = __high2float(h);
	} else if (P == 2) {
		__nv_bfloat162 h = __floats2bfloat162_rn(a, b);
		a = __low2float(h);
		b = __high2float(h);
	}
}

// tern_prec_scale(bits, 14) (src/backend/prec.c; as k_quant.cu's operand scale)
__device__ inline float prec_scale(uint32_t max_bits)
{
	uint32_t e = (max_bits >> 23) & 0xffu;
	if (max_bits == 0 || e == 0xffu)
		return 1.0f;
	int k = 14 - ((e > 1 ? (int)e : 1) - 127);
	k = k < -100 ? -100 : k > 100 ? 100 : k;
	return ldexpf(1.0f, k);
}

// lb bytes of W at p (aligned to lb) as little-endian words; streamed (read once: evict first)
template <int LB> __device__ inline void load_w(uint32_t *r, const unsigned char *p)
{
#ifdef TERN_CUDA_EMU
	memcpy(r, p, LB);
	if (LB == 2)
		r[0] &= 0xffffu;
#else
	if (LB == 16) {
		uint4 u = __ldcs(reinterpret_cast<const uint4 *>(p));
		r[0] = u.x, r[1] = u.y, r[2] = u.z, r[3] = u.w;
	} else if (LB == 8) {
		uint2 u = __ldcs(reinterpret_cast<const uint2 *>(p));
		r[0] = u.x, r[1] = u.y;
	} else if (LB == 4) {
		r[0] = __ldcs(reinterpret_cast<const unsigned int *>(p));
	} else {
		r[0] = __ldcs(reinterpret_cast<const unsigned short *>(p));
	}
#endif
}

// byte_perm(a, b, s): the bytes of b:a (b high) that s's four low selector nibbles name, lowest
// first. The PRMT instruction itself: each nibble must be 0-7 (its bit 3 would ask PRMT to
// replicate the byte's sign), and no mask is spent on it (__byte_perm masks every call).
__device__ inline uint32_t byte_perm(uint32_t a, uint32_t b, uint32_t s)
{
#ifdef TERN_CUDA_EMU
	uint64_t v = (uint64_t)b << 32 | a;
	uint32_t r = 0;
	for (int i = 0; i < 4; i++)
		r |= (uint32_t)((v >> (8 * ((s >> (4 * i)) & 7u))) & 255u) << (8 * i);
	return r;
#else
	uint32_t r;
	asm("prmt.b32 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(s));
	return r;
#endif
}

// Weights k and k + 1 of a chunk (k even) from its raw words: the stored value widened to fp32
// (f32/f16/bf16), code × absmax (NF4), or q - 1 (ternary: the scale comes at the end).
template <int WDT>
__device__ inline void pair_of(const uint32_t *raw, int k, float am, const float2 *pair, float &a, float &b)
{
	if (WDT == 0) {
		a = u2f(raw[k]);
		b = u2f(raw[k + 1]);
	} else if (WDT == 1) {
		uint32_t u = raw[k / 2];
		__half2 h;
		memcpy(&h, &u, 4);
		a = __low2float(h);
		b = __high2float(h);
	} else if (WDT == 2) {
		uint32_t u = raw[k / 2];
		a = u2f(u << 16);
		b = u2f(u & 0xffff0000u);
	} else if (WDT == 3 || WDT == 4) {
		// byte k/2: weight k in the high nibble, k + 1 in the low (quant.h)
		unsigned byte = (raw[k / 8] >> (8 * ((k / 2) & 3))) & 255u;
		float2 p = pair[byte];
		a = mul_rn(p.x, am);
		b = mul_rn(p.y, am);
	} else {
		uint32_t u = raw[k / 16] >> (2 * (k & 15));
		a = (float)((int)(u & 3u) - 1);
		b = (float)((int)((u >> 2) & 3u) - 1);
	}
}

// The block scale of flat weight g (NF4: f32 absmax; NF4-DQ: dmap[q] × nested + offset)
// (off: NF4-DQ's nested offset, read once by the caller)
template <int WDT>
__device__ inline float block_scale(const cuk_weight &w, int64_t g, int bs_shift, const float *dmap,
				    float off)
{
	int64_t b = g >> bs_shift;
	if (WDT == 3)
		return static_cast<const float *>(w.absmax)[b];
	return add_rn(mul_rn(dmap[static_cast<const unsigned char *>(w.absmax)[b]], w.nested[b >> 8]), off);
}
template <int WDT>
__device__ inline float block_scale(const cuk_weight &w, int64_t g, int bs_shift, const float *dmap)
{
	return block_scale<WDT>(w, g, bs_shift, dmap,
				WDT == 4 ? (w.offset_dev ? *w.offset_dev : w.offset) : 0.0f);
}

// The end of both small-T kernels: each warp's lanes summed by shuffles, the NW warps' partials in
// warp order (a fixed order: the same result every run), times ws (ternary's rounded scale, else 1:
// exact) and 1/sc, into y rows o0 .. o0 + kRows (those under O) of the T tokens.
template <int TT, int NW>
__device__ inline void reduce_store(const float (&acc)[kRows][TT], float (*red)[kRows * TT], float *y,
				    int64_t O, int64_t o0, int64_t T, float ws, float sc)
{
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	for (int r = 0; r < kRows; r++)
		for (int t = 0; t < TT; t++) {
			float v = acc[r][t];
			for (int o = 16; o > 0; o >>= 1)
				v += __shfl_xor_sync(0xffffffffu, v, o);
			if (lane == 0)
				red[warp][r * TT + t] = v;
		}
	__syncthreads();
	const int j = threadIdx.x;
	if (j < kRows * TT) {
		int r = j / TT, t = j % TT;
		if (o0 + r < O && t < T) {
			float s = red[0][j];
			for (int k = 1; k < NW; k++)
				s += red[k][j];
			y[t * O + o0 + r] = s * ws * (1.0f / sc);
		}
	}
}

template <int WDT, int P, int TT, int LB>
__global__ void __launch_bounds__(kWarps * 32, TT <= 2 ? kMinBlocks : 1)
	gemv_kernel(float *__restrict__ y, const float *__restrict__ x, cuk_weight w, int64_t T,
		    int64_t rowbytes, int bs_shift, const uint32_t *bits)
{
	constexpr int CH = chunk_weights(WDT, LB), NW = LB >= 4 ? LB / 4 : 1;
	constexpr bool NF4 = WDT == 3 || WDT == 4;
	// W's values need rounding to the product precision unless they are that dtype already
	constexpr bool RW = P != 0 && WDT != P && WDT != 5;
	__shared__ float2 pair[NF4 ? 256 : 1];
	__shared__ float dmap[WDT == 4 ? 256 : 1];
	__shared__ float red[kWarps][kRows * TT];
	if (NF4) {
		for (int k = threadIdx.x; k < 256; k += blockDim.x) {
			pair[k] = make_float2(g_nf4[k >> 4], g_nf4[k & 15]);
			if (WDT == 4)
				dmap[k] = g_dmap[k];
		}
		__syncthreads();
	}
	pdl_wait(); // k_pdl.cuh: x and bits are the kernel before's
	pdl_trigger();
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int64_t O = w.O, I = w.I, o0 = (int64_t)blockIdx.x * kRows, nch = I / CH;
	const float sc = P == 1 ? prec_scale(*bits) : 1.0f;
	const unsigned char *wd = static_cast<const unsigned char *>(w.data);
	float acc[kRows][TT];
	for (int r = 0; r < kRows; r++)
		for (int t = 0; t < TT; t++)
			acc[r][t] = 0.0f;
	for (int64_t c = (int64_t)warp * 32 + lane; c < nch; c += kWarps * 32) {
		// W first (the loads in flight while x's chunk is read and rounded)
		uint32_t raw[kRows][NW];
		for (int r = 0; r < kRows; r++) {
			if (o0 + r < O)
				load_w<LB>(raw[r], wd + (o0 + r) * rowbytes + c * LB);
			else
				for (int j = 0; j < NW; j++)
					raw[r][j] = 0;
		}
		float xv[TT][CH];
		for (int t = 0; t < TT; t++) {
			if (t < T) {
				const float4 *xp = reinterpret_cast<const float4 *>(x + t * I + c * CH);
				for (int j = 0; j < CH / 4; j++) {
					float4 q = xp[j];
					float v0 = q.x * sc, v1 = q.y * sc, v2 = q.z * sc, v3 = q.w * sc;
					round2<P>(v0, v1);
					round2<P>(v2, v3);
					xv[t][4 * j] = v0, xv[t][4 * j + 1] = v1, xv[t][4 * j + 2] = v2,
						  xv[t][4 * j + 3] = v3;
				}
			} else {
				for (int j = 0; j < CH; j++)
					xv[t][j] = 0.0f;
			}
		}
		for (int r = 0; r < kRows; r++) {
			if (o0 + r >= O)
				break;
			float am = NF4 ? block_scale<WDT>(w, (o0 + r) * I + c * CH, bs_shift, dmap) : 0.0f;
			for (int k = 0; k < CH; k += 2) {
				float a, b;
				pair_of<WDT>(raw[r], k, am, pair, a, b);
				if (RW)
					round2<P>(a, b);
				for (int t = 0; t < TT; t++) {
					acc[r][t] = fmaf(xv[t][k], a, acc[r][t]);
					acc[r][t] = fmaf(xv[t][k + 1], b, acc[r][t]);
				}
			}
		}
	}
	reduce_store<TT, kWarps>(acc, red, y, O, o0, T, WDT == 5 ? round1<P>(w.scale) : 1.0f, sc);
}

// v rounded to the product precision P as gemv_kernel's round2 rounds it (bf16: one cvt whose
// other half is zero, the rounded value already in the high half)
template <int P> __device__ inline float round_one(float v)
{
	if (P == 2) {
		__nv_bfloat162 h = __floats2bfloat162_rn(0.0f, v);
		uint32_t u;
		memcpy(&u, &h, 4);
		return u2f(u);
	}
	return round1<P>(v);
}

// gemv_nf4_kernel: NF4 / NF4-DQ at 1..8 tokens (decoding), from a product table instead of a code
// lookup, two multiplies and a rounding per byte. A lane owns chunks of 32 weights (one 16-byte
// load per row) for kRows rows, as gemv_kernel at one token; a chunk lies inside one block of the
// block scale, so its 32 weights take only 16 values: P[q] = code[q] × scale rounded to the
// product precision, exactly the value gemv_kernel (and the decode + cuBLAS path) computes for a
// weight of code q. Each lane computes its row's 16 P[q] (16 multiplies by the code book in
// constant memory, 16 roundings) into its own column of a shared table (entry q of lane l in bank
// l: the 32 lanes' lookups never conflict, whatever their codes); each weight is then one byte
// permute that makes the entry's address from the nibble, one shared load and the T fused
// multiply-adds. Per row and chunk the table costs 16 FMUL + 16 cvt + 16 STS, about 1.5
// instructions a weight; per weight gemv_kernel spends an extract, a bank-conflicted 8-byte
// table load, a multiply, half a cvt and an unpack before its T fused multiply-adds.
//   At 1 and 2 tokens (NW = kWarps warps, x's whole chunk in registers) the rows take turns in two
// tables and the lane sums its chunk's products in gemv_kernel's order: the results are
// gemv_kernel's bit for bit (TERN_CUDA_GEMV_TABLE=0 takes gemv_kernel; test_ops compares them).
// From 3 tokens on x's chunk does not fit the registers: the kRows tables are built first, then
// x is read in pieces of PW columns, each used for all kRows rows (2 warps a block: 8 tables of
// 2 KB a warp), and gemv_kernel's narrower chunks (8 or 4 bytes a lane there) sum in another
// order. Every T: the lane's sum for token t is the same as at one token (test_ops compares).
template <int TT> struct nf4_shape {
	static constexpr int NW = TT <= 2 ? kWarps : 2;    // warps a block
	static constexpr int PW = TT <= 2 ? 32 : 32 / TT;  // x's columns in registers at a time
	static constexpr int NT = TT <= 2 ? 2 : kRows;     // tables a warp
	static constexpr int BYTES = NW * (NT / 2) * 4096; // all of them
	// blocks per SM it is built for: at 1 token kMinBlocks (128 registers); at 2, 4 and 8 tokens
	// 3, 6 and 4 (168, 168 and 255 registers: the T sums of 8 rows, the 8 rows' chunks and x's
	// piece, no spills)
	static constexpr int MINB = TT == 1 ? kMinBlocks : TT == 2 ? 3 : TT == 4 ? 6 : 4;
};

// acc[t] += x[t][k] · P[code of weight k0 + k] for k < PW: raw the chunk's 4 words, tb the row's
// table at this lane (the byte offsets from byte_perm land on its column)
template <int TT, int PW>
__device__ inline void nf4_row(float (&acc)[TT], const uint32_t (&raw)[4], int k0, const float (&xv)[TT][PW],
			       const char *tb, uint32_t wrep, uint32_t lane4)
{
#pragma unroll
	for (int k = 0; k < PW; k += 2) {
		// byte (k0 + k) / 2: weight k0 + k in the high nibble, k0 + k + 1 in the low (quant.h)
		const int kk = k0 + k, j = kk / 8, i = (kk / 2) & 3;
		uint32_t hi = ((raw[j] >> 4) & 0x0f0f0f0fu) | wrep, lo = (raw[j] & 0x0f0f0f0fu) | wrep;
		// the selector: byte 0 of the offset lane · 4, byte 1 byte i of hi / lo (q | warp << 4)
		const uint32_t s = 0x5504u | (uint32_t)i << 4;
		float a = *reinterpret_cast<const float *>(tb + byte_perm(hi, lane4, s));
		float e = *reinterpret_cast<const float *>(tb + byte_perm(lo, lane4, s));
		for (int t = 0; t < TT; t++) {
			acc[t] = fmaf(xv[t][k], a, acc[t]);
			acc[t] = fmaf(xv[t][k + 1], e, acc[t]);
		}
	}
}

// x[t, c · 32 + k0 .. + PW) for t < TT (zero past T), times sc, rounded to P
template <int P, int TT, int PW>
__device__ inline void nf4_x(float (&xv)[TT][PW], const float *x, int64_t T, int64_t I, int64_t col, float sc)
{
	for (int t = 0; t < TT; t++) {
		if (t < T) {
			const float4 *xp = reinterpret_cast<const float4 *>(x + t * I + col);
			for (int j = 0; j < PW / 4; j++) {
				float4 q = xp[j];
				float v0 = q.x * sc, v1 = q.y * sc, v2 = q.z * sc, v3 = q.w * sc;
				round2<P>(v0, v1);
				round2<P>(v2, v3);
				xv[t][4 * j] = v0, xv[t][4 * j + 1] = v1, xv[t][4 * j + 2] = v2,
					  xv[t][4 * j + 3] = v3;
			}
		} else {
			for (int j = 0; j < PW; j++)
				xv[t][j] = 0.0f;
		}
	}
}

template <int WDT, int P, int TT>
__global__ void __launch_bounds__(nf4_shape<TT>::NW * 32, nf4_shape<TT>::MINB)
	gemv_nf4_kernel(float *__restrict__ y, const float *__restrict__ x, cuk_weight w, int64_t T,
			int64_t rowbytes, int bs_shift, const uint32_t *bits)
{
	using S = nf4_shape<TT>;
	constexpr int CH = 32, NW = S::NW, PW = S::PW; // CH: weights per lane and row (16 bytes)
	__shared__ float dmap[WDT == 4 ? 256 : 1];
	__shared__ float red[NW][kRows * TT];
	// The product tables: table n (row r's: n = r at 3+ tokens, r & 1 below) of warp v at
	// (n / 2) · NW · 4096 + v · 4096 + (n & 1) · 128 bytes, its entry q of lane l q · 256 + l · 4
	// further on, so that the offset inside a pair of tables is one byte permute of (q | v << 4)
	// into byte 1 and l · 4 into byte 0.
	__shared__ __align__(16) float tbl[S::BYTES / 4];
	if (WDT == 4) {
		for (int k = threadIdx.x; k < 256; k += blockDim.x)
			dmap[k] = g_dmap[k];
		__syncthreads();
	}
	pdl_wait(); // k_pdl.cuh
	pdl_trigger();
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
	const int64_t O = w.O, I = w.I, o0 = (int64_t)blockIdx.x * kRows, nch = I / CH;
	const float sc = P == 1 ? prec_scale(*bits) : 1.0f;
	const float off = WDT == 4 ? (w.offset_dev ? *w.offset_dev : w.offset) : 0.0f;
	const unsigned char *wd = static_cast<const unsigned char *>(w.data);
	const uint32_t wrep = (uint32_t)warp * 0x10101010u; // warp << 4 in every byte
	const uint32_t lane4 = (uint32_t)lane * 4u;
	float *mine = tbl + warp * 1024 + lane; // this lane's column (entry q of table n: below)
	const char *tb = reinterpret_cast<const char *>(tbl);
	float acc[kRows][TT];
	for (int r = 0; r < kRows; r++)
		for (int t = 0; t < TT; t++)
			acc[r][t] = 0.0f;
	for (int64_t c = (int64_t)warp * 32 + lane; c < nch; c += NW * 32) {
		// W first (the loads in flight while x's chunk is read and rounded). The rows past O of the
		// last block repeat row O - 1 (no branch in the row loop: the compiler hoists every load of
		// the step, the block scales' too), their sums are not written.
		uint32_t raw[kRows][4];
		for (int r = 0; r < kRows; r++)
			load_w<16>(raw[r], wd + (o0 + r < O ? o0 + r : O - 1) * rowbytes + c * 16);
		// row r's table: its 16 values at this lane's column
		auto build = [&](int r) {
			const int n = S::NT == 2 ? r & 1 : r;
			float am = block_scale<WDT>(w, (o0 + r < O ? o0 + r : O - 1) * I + c * CH, bs_shift,
						    dmap, off);
			for (int q = 0; q < 16; q++) // g_nf4[q]: a constant-bank operand of the FMUL
				mine[(n / 2) * NW * 1024 + q * 64 + (n & 1) * 32] =
					round_one<P>(mul_rn(g_nf4[q], am));
		};
		auto table = [&](int r) {
			const int n = S::NT == 2 ? r & 1 : r;
			return tb + (n / 2) * NW * 4096 + (n & 1) * 128;
		};
		if constexpr (PW == CH) {
			float xv[TT][PW];
			nf4_x<P, TT, PW>(xv, x, T, I, c * CH, sc);
#pragma unroll // (all of it: raw and acc stay in registers)
			for (int r = 0; r < kRows; r++) {
				build(r);
				nf4_row<TT, PW>(acc[r], raw[r], 0, xv, table(r), wrep, lane4);
			}
		} else {
#pragma unroll
			for (int r = 0; r < kRows; r++)
				build(r);
#pragma unroll
			for (int k0 = 0; k0 < CH; k0 += PW) {
				float xv[TT][PW];
				nf4_x<P, TT, PW>(xv, x, T, I, c * CH + k0, sc);
#pragma unroll
				for (int r = 0; r < kRows; r++)
					nf4_row<TT, PW>(acc[r], raw[r], k0, xv, table(r), wrep, lane4);
			}
		}
	}
	reduce_store<TT, NW>(acc, red, y, O, o0, T, 1.0f, sc);
}

// gemv_mma_kernel: NF4 / NF4-DQ at bf16, 1..8 tokens, on the tensor cores. The m16n8k16 product's
// A is 16 rows of W and its B the tokens (column n = token n; zeros past T), so every T up to 8
// costs the same. The product's k order is free (the sum runs over it), so each lane decodes whole
// 16-byte runs of its rows: a block owns 16 rows, its warps take strips of 256 columns in turn, and
// in a strip lane 4g + t owns columns 64t .. 64t + 64 of rows g and g + 8, inside one block of the
// scale (I and the blocksize multiples of 64). Per row and strip the lane makes the 16 values its
// weights can take (code × scale rounded to bf16: gemv_nf4_kernel's values) and splits them into a
// low-byte and a high-byte table of 16 bytes each (4 registers apiece); a 32-bit word of codes (8
// weights) then becomes 4 bf16 pairs by byte permutes alone: the 3 low bits of each code pick a byte
// in entries 0-7 and in 8-15, the fourth picks between the two (12 PRMT), 4 PRMT pair the bytes. A
// word's pairs are the A registers of two products, whose B registers are x's columns in the same
// order (code nibble 0 is column 1 of the byte pair: quant.h), rounded to bf16. The 8 warps' C
// fragments are summed in warp order in shared memory. The SASS of the loop (nvcc 13, sm_90, per
// strip: 128 weights a lane) had 741 instructions, 5.8 a weight: 272 PRMT, and about 250 for x
// (below) and for addresses recomputed in 64 bits at each strip; now 551 with XS (4.3 a weight),
// the strip's addresses from 32-bit flat indices and no masks around the permutes (byte_perm).
// Measured, 1.10-1.20x gemv_nf4_kernel at one token, 2.6x at eight (before XS). The sums' order
// is the tensor cores' (the tolerance of the decode + cuBLAS path, not gemv_nf4_kernel's bits);
// each token's result is the same at every T.
// TERN_CUDA_GEMV_MMA=0 (read at each call) keeps these products on gemv_nf4_kernel.
//
// XS (one token, the decode step): each warp rounds its strip's 256 columns of x to bf16 pairs
// once, lane l the 8 columns 8l .. 8l + 8, into its own 576 bytes of shared memory in the B
// registers' order (each pair's columns swapped), and a lane's two B registers of a product come
// from one 16-byte shared load at a fixed offset; x's floats for the next strip are loaded with
// it, one strip ahead. Without XS every lane loads its 64 columns' floats from global memory and
// rounds them per product (addresses, predicates, zeroing, packing). A first XS staged all of x
// per block (one barrier before any product): slower where a block has little else to do (H100,
// 2026-12-06: 25.0 against 21.1 µs at 4096 x 14336). Layout: 64 columns in 9 chunks of 16 bytes
// (8 with data, one unused), so the 4 lanes of a group, 64 columns apart, read distinct banks.
// Blocks per SM: 3 (at most 85 registers: 24 bytes spill with nvcc 13) where the grid has at
// least 3 blocks for each SM, else 2 (101 registers): on the H100 3 gave 17.9 against 18.9 µs at
// 14336 x 4096 (896 blocks) and 145 against 164 at 128256 x 4096, 2 gave 6.0 against 7.5 at
// 4096 x 4096 and 18.4 against 26.4 at 4096 x 14336 (256 blocks: at 3 per SM a third of the SMs
// idle).
//
// XS's loads: 16 bytes at a shared-window address computed once (a generic pointer to shared
// memory made nvcc 13 rebuild the window base before each load)
#ifdef TERN_CUDA_EMU
using xs_addr = const uint4 *;
__device__ inline xs_addr xs_at(const uint4 *p, int64_t chunk) { return p + chunk; }
__device__ inline uint4 xs_load(xs_addr a, int chunk) { return a[chunk]; }
#else
using xs_addr = uint32_t;
__device__ inline xs_addr xs_at(const uint4 *p, int64_t chunk)
{
	return (uint32_t)__cvta_generic_to_shared(p + chunk);
}
__device__ inline uint4 xs_load(xs_addr a, int chunk)
{
	uint4 v;
	asm volatile("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
		     : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
		     : "r"(a + 16u * (uint32_t)chunk)
		     : "memory");
	return v;
}
#endif

constexpr int kMmaWarps = 8;

// two fp32 as a bf16 pair (lo in the low half), rounded to nearest even
__device__ inline uint32_t bf16_pair(float lo, float hi)
{
	__nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
	uint32_t u;
	memcpy(&u, &h, 4);
	return u;
}

// The low-byte (lo) and high-byte (hi) tables of the 16 values code[q] × am rounded to bf16: byte q
// % 4 of register q / 4
__device__ inline void mma_tables(uint32_t lo[4], uint32_t hi[4], float am)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		uint32_t p[2];
#pragma unroll
		for (int j = 0; j < 2; j++)
			p[j] = bf16_pair(mul_rn(g_nf4[4 * i + 2 * j], am),
					 mul_rn(g_nf4[4 * i + 2 * j + 1], am));
		lo[i] = byte_perm(p[0], p[1], 0x6420u);
		hi[i] = byte_perm(p[0], p[1], 0x7531u);
	}
}

// The 8 weights of code word q as 4 bf16 pairs: r[j] holds nibbles 2j (low half) and 2j + 1
__device__ inline void mma_decode(uint32_t r[4], uint32_t q, const uint32_t lo[4], const uint32_t hi[4])
{
	// each code's low 3 bits pick a byte of entries 0-7 and of 8-15; bit 3 the set (byte i of
	// the low or high lookup)
	const uint32_t low = q & 0x77777777u, pick = 0x32103210u | ((q & 0x88888888u) >> 1);
#pragma unroll
	for (int h = 0; h < 2; h++) {
		const uint32_t c = low >> (16 * h), k = pick >> (16 * h);
		uint32_t l = byte_perm(byte_perm(lo[0], lo[1], c), byte_perm(lo[2], lo[3], c), k);
		uint32_t u = byte_perm(byte_perm(hi[0], hi[1], c), byte_perm(hi[2], hi[3], c), k);
		r[2 * h] = byte_perm(l, u, 0x5140u);
		r[2 * h + 1] = byte_perm(l, u, 0x7362u);
	}
}

// Up to CUK_GEMV_MULTI products of one x in one launch (cuk_gemv_multi: a decode step's q, k and v
// products): weight i's 16-row blocks are blocks first[i] .. first[i + 1] of the grid, its result
// y[i]; each block computes exactly what a launch of its weight alone would.
struct mma_set {
	cuk_weight w[CUK_GEMV_MULTI];
	float *y[CUK_GEMV_MULTI];
	int shift[CUK_GEMV_MULTI]; // log2 of each weight's blocksize
	unsigned first[CUK_GEMV_MULTI + 1];
};

template <int WDT, bool XS, int MINB>
__global__ void __launch_bounds__(kMmaWarps * 32, MINB)
	gemv_mma_kernel(const float *__restrict__ x, const mma_set set, int64_t T)
{
	// this block's weight (a select per field, not an indexed copy of the set)
	const unsigned bi = blockIdx.x;
	const int wi = bi >= set.first[2] ? 2 : bi >= set.first[1] ? 1 : 0;
	const cuk_weight w = wi == 2 ? set.w[2] : wi == 1 ? set.w[1] : set.w[0];
	float *const y = wi == 2 ? set.y[2] : wi == 1 ? set.y[1] : set.y[0];
	const int bs_shift = wi == 2 ? set.shift[2] : wi == 1 ? set.shift[1] : set.shift[0];
	__shared__ float dmap[WDT == 4 ? 256 : 1];
	__shared__ float red[kMmaWarps][16 * 8];
	__shared__ uint4 xs[XS ? kMmaWarps : 1][4 * 9]; // XS: each warp's strip of x as bf16 pairs
	if (WDT == 4) {
		for (int k = threadIdx.x; k < 256; k += blockDim.x)
			dmap[k] = g_dmap[k];
		__syncthreads();
	}
	const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
	const int64_t O = w.O, I = w.I, o0 = (int64_t)(bi - set.first[wi]) * 16;
	// rows past O (the last block) repeat row O - 1; their sums are not written
	const int64_t ra = o0 + g < O ? o0 + g : O - 1, rb = o0 + g + 8 < O ? o0 + g + 8 : O - 1;
	const float off = WDT == 4 ? (w.offset_dev ? *w.offset_dev : w.offset) : 0.0f;
	const bool xon = g < T; // lane 4g + t holds token g's columns of B (zeros past T; XS: token 0's)
	const float *xg = x + (xon ? g : 0) * I;
	// XS: where this lane stores its 8 columns of x and where it reads its group's 64
	uint4 *const xst = &xs[XS ? warp : 0][(lane >> 3) * 9 + (lane & 7)];
	const xs_addr xa = XS ? xs_at(xs[XS ? warp : 0], t * 9) : xs_addr{};
	float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
	// One strip ahead: the next strip's codes and raw block scales are loaded while this one is
	// decoded and multiplied (a decode step is latency-bound: each warp has few strips).
	struct strip {
		uint32_t qa[8], qb[8];
		float sa, sb;    // NF4: the absmax; NF4-DQ: the nested scale
		uint32_t ca, cb; // NF4-DQ: the quantized absmax (dmap index)
	};
	// A strip's loads: this lane's 64 columns (the last 64 of the row where a partial strip's lane
	// is past I: its tables' scale and its x are zero there, so valid codes add nothing), found
	// from the flat index of their first weight in rows a and b (32-bit: O·I < 2^32, the launch
	// checks), which also gives the block of the scale.
	const uint32_t fa = (uint32_t)(ra * I), fb = (uint32_t)(rb * I), ilast = (uint32_t)I - 64;
	const unsigned char *codes = static_cast<const unsigned char *>(w.data);
	auto fetch = [&](strip &f, int64_t c0) {
		const uint32_t want = (uint32_t)c0 + 64u * t, col = want < ilast ? want : ilast;
		const uint32_t ia = fa + col, ib = fb + col;
		load_w<16>(f.qa, codes + ia / 2);
		load_w<16>(f.qa + 4, codes + ia / 2 + 16);
		load_w<16>(f.qb, codes + ib / 2);
		load_w<16>(f.qb + 4, codes + ib / 2 + 16);
		const uint32_t ba = ia >> bs_shift, bb = ib >> bs_shift;
		if (WDT == 3) {
			f.sa = static_cast<const float *>(w.absmax)[ba];
			f.sb = static_cast<const float *>(w.absmax)[bb];
			f.ca = f.cb = 0u;
		} else {
			f.ca = static_cast<const unsigned char *>(w.absmax)[ba];
			f.cb = static_cast<const unsigned char *>(w.absmax)[bb];
			f.sa = w.nested[ba >> 8];
			f.sb = w.nested[bb >> 8];
		}
	};
	// the block scale from its raw parts (block_scale's arithmetic)
	auto scale = [&](float s, uint32_t c) { return WDT == 3 ? s : add_rn(mul_rn(dmap[c], s), off); };
	// The first two strips are the weights' alone: loaded before pdl_wait (k_pdl.cuh), while the
	// kernel before this one ends; x and y only after it.
	strip cur, nxt;
	int64_t c0 = (int64_t)warp * 256;
	if (c0 < I) // (warp-uniform: a warp without strips loads nothing)
		fetch(cur, c0);
	if (c0 + kMmaWarps * 256 < I)
		fetch(nxt, c0 + kMmaWarps * 256);
	pdl_wait();
	pdl_trigger();
	// XS: this lane's 8 floats of x for the strip at c0 (past I the row's last 8: finite, and
	// they meet only zero weights)
	float4 xv0, xv1;
	auto xfetch = [&](int64_t c0) {
		const int64_t c = c0 + 8 * lane < I ? c0 + 8 * lane : I - 8;
		xv0 = reinterpret_cast<const float4 *>(x + c)[0];
		xv1 = reinterpret_cast<const float4 *>(x + c)[1];
	};
	if (XS && c0 < I)
		xfetch(c0);
	for (; c0 < I; c0 += kMmaWarps * 256) {
		if (c0 > (int64_t)warp * 256 && c0 + kMmaWarps * 256 < I)
			fetch(nxt, c0 + kMmaWarps * 256);
		if constexpr (XS) {
			__syncwarp(); // the warp's reads of the strip before are done
			*xst = make_uint4(bf16_pair(xv0.y, xv0.x), bf16_pair(xv0.w, xv0.z),
					  bf16_pair(xv1.y, xv1.x), bf16_pair(xv1.w, xv1.z));
			__syncwarp();
			if (c0 + kMmaWarps * 256 < I)
				xfetch(c0 + kMmaWarps * 256);
		}
		const int64_t col = c0 + t * 64; // this lane's 64 columns
		const bool on = col < I;
		uint32_t la[4], ha[4], lb[4], hb[4];
		// a lane past I: a zero scale (its codes are the row's last 64) and zero x (XS: finite x
		// times the zero weights)
		mma_tables(la, ha, on ? scale(cur.sa, cur.ca) : 0.0f);
		mma_tables(lb, hb, on ? scale(cur.sb, cur.cb) : 0.0f);
#pragma unroll
		for (int j = 0; j < 8; j++) { // columns col + 8j .. col + 8j + 8
			uint32_t A[4], B[4];
			mma_decode(A, cur.qa[j], la, ha);
			mma_decode(B, cur.qb[j], lb, hb);
			// nibble 0 of a byte pair is its second column (quant.h: the first weight is high)
			const uint32_t f0[4] = {A[0], B[0], A[1], B[1]}, f1[4] = {A[2], B[2], A[3], B[3]};
			if constexpr (XS) {
				const uint4 b = xs_load(xa, j);
				mma_bf16(d, f0, b.x, b.y);
				mma_bf16(d, f1, b.z, b.w);
			} else {
				float4 x0 = make_float4(0.0f, 0.0f, 0.0f, 0.0f), x1 = x0;
				if (xon && on) {
					const float4 *xp = reinterpret_cast<const float4 *>(xg + col + 8 * j);
					x0 = xp[0];
					x1 = xp[1];
				}
				mma_bf16(d, f0, bf16_pair(x0.y, x0.x), bf16_pair(x0.w, x0.z));
				mma_bf16(d, f1, bf16_pair(x1.y, x1.x), bf16_pair(x1.w, x1.z));
			}
		}
		cur = nxt;
	}
	// d: rows g (d[0], d[1]) and g + 8 (d[2], d[3]), tokens 2t and 2t + 1
	red[warp][g * 8 + 2 * t] = d[0];
	red[warp][g * 8 + 2 * t + 1] = d[1];
	red[warp][(g + 8) * 8 + 2 * t] = d[2];
	red[warp][(g + 8) * 8 + 2 * t + 1] = d[3];
	__syncthreads();
	const int j = threadIdx.x, r = j / 8, tok = j % 8;
	if (j < 128 && o0 + r < O && tok < T) {
		float v = red[0][j];
		for (int k = 1; k < kMmaWarps; k++)
			v += red[k][j];
		y[tok * O + o0 + r] = v;
	}
}

// W[o, i] as the CPU reference's fp32 value (k_quant.cu's wvalue)
template <int WDT>
__device__ inline float wvalue(const cuk_weight &w, int64_t o, int64_t i, int bs_shift, const float *nf4,
			       const float *dmap)
{
	int64_t g = o * w.I + i;
	if (WDT == 0)
		return static_cast<const float *>(w.data)[g];
	if (WDT == 1)
		return __half2float(static_cast<const __half *>(w.data)[g]);
	if (WDT == 2)
		return __bfloat162float(static_cast<const __nv_bfloat16 *>(w.data)[g]);
	if (WDT == 3 || WDT == 4) {
		unsigned byte = static_cast<const unsigned char *>(w.data)[g >> 1];
		unsigned q = (g & 1) ? byte & 15u : byte >> 4;
		return mul_rn(nf4[q], block_scale<WDT>(w, g, bs_shift, dmap));
	}
	const uint32_t *words = static_cast<const uint32_t *>(w.data) + o * ((w.I + 15) / 16);
	int q = (int)((words[i / 16] >> (2 * (i % 16))) & 3u);
	return mul_rn((float)(q - 1), w.scale);
}

// Every shape and alignment: a warp per row, a lane per column (stride 32), one element at a time.
template <int WDT, int P>
__global__ void __launch_bounds__(kWarps * 32)
	gemv_any_kernel(float *__restrict__ y, const float *__restrict__ x, cuk_weight w, int64_t T,
			int bs_shift, const uint32_t *bits)
{
	__shared__ float nf4[16], dmap[256];
	for (int k = threadIdx.x; k < 256; k += blockDim.x) {
		if (k < 16)
			nf4[k] = g_nf4[k];
		dmap[k] = g_dmap[k];
	}
	__syncthreads();
	pdl_wait(); // k_pdl.cuh (before the early return: see there)
	pdl_trigger();
	const int lane = threadIdx.x & 31;
	const int64_t O = w.O, I = w.I, o = (int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5);
	if (o >= O)
		return; // the whole warp: no shuffle waits for it
	const float sc = P == 1 ? prec_scale(*bits) : 1.0f;
	float acc[CUK_GEMV_MAX_T];
	for (int t = 0; t < CUK_GEMV_MAX_T; t++)
		acc[t] = 0.0f;
	for (int64_t i = lane; i < I; i += 32) {
		float v = round1<P>(wvalue<WDT>(w, o, i, bs_shift, nf4, dmap));
		for (int t = 0; t < CUK_GEMV_MAX_T; t++)
			if (t < T)
				acc[t] = fmaf(round1<P>(x[t * I + i] * sc), v, acc[t]);
	}
	for (int t = 0; t < CUK_GEMV_MAX_T; t++) {
		float v = acc[t];
		for (int k = 16; k > 0; k >>= 1)
			v += __shfl_xor_sync(0xffffffffu, v, k);
		if (lane == 0 && t < T)
			y[t * O + o] = v * (1.0f / sc);
	}
}

// Whether environment variable var is "0" (the before/after switches, read at each call).
inline bool env_zero(const char *var)
{
	const char *e = getenv(var);
	return e && strcmp(e, "0") == 0;
}

// log2 of an NF4 blocksize (a power of two: the front door)
inline int blocksize_shift(int blocksize)
{
	int shift = 0;
	while (shift < 30 && (1 << shift) < blocksize)
		shift++;
	return shift;
}

// Whether gemv_mma_kernel takes weight w with x: 64-weight runs of a row inside one block of the
// scale, 16-byte alignment, 32-bit flat indices
inline bool mma_takes(const cuk_weight &w, const float *x)
{
	return w.I > 0 && w.I % 64 == 0 && ((uintptr_t)w.data % 16) == 0 && ((uintptr_t)x & 15) == 0 &&
	       w.blocksize >= 64 && (uint64_t)w.O * (uint64_t)w.I < ((uint64_t)1 << 32);
}

// gemv_mma_kernel over the set's blocks (every T): at one token with x staged per warp (unless
// TERN_CUDA_GEMV_XS=0, read at each call: before/after timings) and 3 blocks per SM where the grid
// has that many (see kMmaWarps)
template <int WDT>
cudaError_t launch_mma(cudaStream_t s, const float *x, const mma_set &set, int64_t T, int sms)
{
	const unsigned blocks = set.first[CUK_GEMV_MULTI];
	const dim3 grid(blocks), block(kMmaWarps * 32);
	if (T == 1 && !env_zero("TERN_CUDA_GEMV_XS")) {
		if ((int64_t)blocks >= 3 * (int64_t)sms)
			return pdl_launch(gemv_mma_kernel<WDT, true, 3>, grid, block, 0, s, x, set, T);
		return pdl_launch(gemv_mma_kernel<WDT, true, 2>, grid, block, 0, s, x, set, T);
	}
	return pdl_launch(gemv_mma_kernel<WDT, false, 2>, grid, block, 0, s, x, set, T);
}

// The set of the n weights w[i] (results y[i]): their blocks one after another.
inline mma_set mma_set_of(float *const *y, const cuk_weight *w, int n)
{
	mma_set set = {};
	unsigned at = 0;
	for (int i = 0; i < CUK_GEMV_MULTI; i++) {
		set.first[i] = at;
		if (i < n) {
			set.w[i] = w[i];
			set.y[i] = y[i];
			set.shift[i] = blocksize_shift(w[i].blocksize);
			at += (unsigned)((w[i].O + 15) / 16);
		}
	}
	set.first[CUK_GEMV_MULTI] = at;
	return set;
}

template <int WDT, int P, int TT>
cudaError_t launch_tt(cudaStream_t s, float *y, const float *x, const cuk_weight &w, int64_t T, int shift,
		      const uint32_t *bits, bool table, bool mma, int sms)
{
	constexpr int LB = lane_bytes(WDT, TT), CH = chunk_weights(WDT, LB);
	int64_t I = w.I;
	int64_t rowbytes = WDT == 5 ? 4 * ((I + 15) / 16) : WDT >= 3 ? I / 2 : I * (WDT == 0 ? 4 : 2);
	bool fast = I > 0 && I % CH == 0 && rowbytes % LB == 0 && ((uintptr_t)w.data % LB) == 0 &&
		    ((uintptr_t)x & 15) == 0 && (!(WDT == 3 || WDT == 4) || w.blocksize >= CH);
	if constexpr ((WDT == 3 || WDT == 4) && P == 2) {
		if (mma && mma_takes(w, x))
			return launch_mma<WDT>(s, x, mma_set_of(&y, &w, 1), T, sms);
	}
	if constexpr (WDT == 3 || WDT == 4) {
		// gemv_nf4_kernel: 32-weight chunks (16 bytes), inside one block of the scale
		if (table && I % 32 == 0 && ((uintptr_t)w.data % 16) == 0 && ((uintptr_t)x & 15) == 0 &&
		    w.blocksize >= 32) {
			unsigned blocks = (unsigned)((w.O + kRows - 1) / kRows);
			return pdl_launch(gemv_nf4_kernel<WDT, P, TT>, dim3(blocks),
					  dim3(nf4_shape<TT>::NW * 32), 0, s, y, x, w, T, I / 2, shift, bits);
		}
	}
	if (fast)
		return pdl_launch(gemv_kernel<WDT, P, TT, LB>, dim3((unsigned)((w.O + kRows - 1) / kRows)),
				  dim3(kWarps * 32), 0, s, y, x, w, T, rowbytes, shift, bits);
	return pdl_launch(gemv_any_kernel<WDT, P>, dim3((unsigned)((w.O + kWarps - 1) / kWarps)),
			  dim3(kWarps * 32), 0, s, y, x, w, T, shift, bits);
}

template <int WDT, int P>
cudaError_t launch_p(cudaStream_t s, float *y, const float *x, const cuk_weight &w, int64_t T, int shift,
		     const uint32_t *bits, bool table, bool mma, int sms)
{
	if (T <= 1)
		return launch_tt<WDT, P, 1>(s, y, x, w, T, shift, bits, table, mma, sms);
	if (T <= 2)
		return launch_tt<WDT, P, 2>(s, y, x, w, T, shift, bits, table, mma, sms);
	if (T <= 4)
		return launch_tt<WDT, P, 4>(s, y, x, w, T, shift, bits, table, mma, sms);
	return launch_tt<WDT, P, 8>(s, y, x, w, T, shift, bits, table, mma, sms);
}

template <int WDT>
cudaError_t launch_w(cudaStream_t s, float *y, const float *x, const cuk_weight &w, int64_t T, int prec,
		     int shift, const uint32_t *bits, bool table, bool mma, int sms)
{
	if (prec == 1)
		return launch_p<WDT, 1>(s, y, x, w, T, shift, bits, table, mma, sms);
	if (prec == 2)
		return launch_p<WDT, 2>(s, y, x, w, T, shift, bits, table, mma, sms);
	return launch_p<WDT, 0>(s, y, x, w, T, shift, bits, table, mma, sms);
}

} // namespace

int cuk_pdl_flag = 0;

extern "C" void cuk_set_pdl(int on) { cuk_pdl_flag = on ? 1 : 0; }

extern "C" cudaError_t cuk_gemv_set_tables(const float nf4[16], const float dmap[256])
{
	cudaError_t e = cudaMemcpyToSymbol(g_nf4, nf4, 16 * sizeof(float));
	return e != cudaSuccess ? e : cudaMemcpyToSymbol(g_dmap, dmap, 256 * sizeof(float));
}

extern "C" cudaError_t cuk_gemv(cudaStream_t s, float *y, const float *x, const struct cuk_weight *w,
				int64_t T, int prec, const uint32_t *bits, int sms)
{
	if (T <= 0 || T > CUK_GEMV_MAX_T)
		return T == 0 ? cudaSuccess : cudaErrorInvalidValue;
	if (w->O <= 0)
		return cudaSuccess;
	// TERN_CUDA_GEMV_TABLE=0: NF4 on gemv_kernel, not gemv_nf4_kernel (before/after timings; at 1
	// and 2 tokens the same bits); TERN_CUDA_GEMV_MMA=0: NF4 at bf16 on gemv_nf4_kernel, not
	// gemv_mma_kernel
	bool table = !env_zero("TERN_CUDA_GEMV_TABLE"), mma = !env_zero("TERN_CUDA_GEMV_MMA");
	int shift = blocksize_shift(w->blocksize);
	switch (w->dtype) {
	case 0: return launch_w<0>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	case 1: return launch_w<1>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	case 2: return launch_w<2>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	case 3: return launch_w<3>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	case 4: return launch_w<4>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	default: return launch_w<5>(s, y, x, *w, T, prec, shift, bits, table, mma, sms);
	}
}

extern "C" cudaError_t cuk_gemv_multi(cudaStream_t s, float *const *y, const float *x,
				      const struct cuk_weight *w, int n, int64_t T, int prec, int sms)
{
	if (n < 1 || n > CUK_GEMV_MULTI || T < 1 || T > CUK_GEMV_MAX_T || prec != 2)
		return cudaErrorNotSupported;
	if (env_zero("TERN_CUDA_GEMV_MMA"))
		return cudaErrorNotSupported;
	for (int i = 0; i < n; i++)
		if (w[i].dtype != w[0].dtype || w[i].I != w[0].I || w[i].O <= 0 || !mma_takes(w[i], x))
			return cudaErrorNotSupported;
	if (w[0].dtype == 3)
		return launch_mma<3>(s, x, mma_set_of(y, w, n), T, sms);
	if (w[0].dtype == 4)
		return launch_mma<4>(s, x, mma_set_of(y, w, n), T, sms);
	return cudaErrorNotSupported;
}
