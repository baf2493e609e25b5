// Weight decode (one kernel per format, into an f32/f16/bf16 scratch the cuBLAS products read) and
// the half-precision operands of matmul (backend.h, "Precision"). Built with --fmad=false: the
// decoded values are the CPU reference's fp32 values bit for bit (src/quant/quant.h layouts).
#include "backend/cuda/cu_kernels.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>
#include <string.h>

namespace
{

__constant__ float c_nf4[16];
__constant__ float c_dmap[256];
// The same tables in global memory, for decode_nf4_co_kernel: lookups by code (distinct per lane)
// go through L1 there, where constant memory serialises them.
__device__ float g_nf4[16];
__device__ float g_dmap[256];

constexpr int kThreads = 256;

inline unsigned grid_for(int64_t n)
{
	int64_t b = (n + kThreads - 1) / kThreads;
	return (unsigned)(b < 1 ? 1 : b > 65535 * 8 ? 65535 * 8 : b);
}

template <int DT> __device__ inline void store(void *out, int64_t i, float v)
{
	if (DT == 0)
		static_cast<float *>(out)[i] = v;
	else if (DT == 1)
		static_cast<__half *>(out)[i] = __float2half_rn(v);
	else
		static_cast<__nv_bfloat16 *>(out)[i] = __float2bfloat16_rn(v);
}

// One element of W: flat index g = row * I + i (the layouts of quant.h).
template <int WDT> __device__ inline float wvalue(const cuk_weight &w, int64_t row, int64_t i, int bs_shift)
{
	int64_t g = row * w.I + i;
	if (WDT == 0)
		return static_cast<const float *>(w.data)[g];
	if (WDT == 1)
		return __half2float(static_cast<const __half *>(w.data)[g]);
	if (WDT == 2)
		return __bfloat162float(static_cast<const __nv_bfloat16 *>(w.data)[g]);
	if (WDT == 3 || WDT == 4) {
		unsigned byte = static_cast<const unsigned char *>(w.data)[g >> 1];
		unsigned q = (g & 1) ? byte & 15u : byte >> 4;
		int64_t b = g >> bs_shift; // blocksize: a power of two (the front door)
		float am;
		if (WDT == 3) {
			am = static_cast<const float *>(w.absmax)[b];
		} else {
			unsigned char qa = static_cast<const unsigned char *>(w.absmax)[b];
			float off = w.offset_dev ? *w.offset_dev : w.offset; // an expert's: on the device
			am = c_dmap[qa] * w.nested[b / 256] + off;           // two roundings, as nf4.c
		}
		return c_nf4[q] * am;
	}
	// ternary: row words ceil(I/16); weight i in bits 2(i%16) of word i/16
	const uint32_t *words = static_cast<const uint32_t *>(w.data) + row * ((w.I + 15) / 16);
	int q = (int)((words[i / 16] >> (2 * (i % 16))) & 3u);
	return (float)(q - 1) * w.scale;
}

// The window [row0, row0 + nrows) x [i0, i0 + ic) of W into out [nrows, ic] with rows ldo
// elements apart (ldo >= ic). Rows over blockIdx.y, columns over blockIdx.x: no division per
// element.
template <int WDT, int DT>
__global__ void decode_kernel(void *out, cuk_weight w, int64_t row0, int64_t nrows, int64_t i0, int64_t ic,
			      int64_t ldo, int bs_shift)
{
	for (int64_t r = blockIdx.y; r < nrows; r += gridDim.y)
		for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < ic;
		     i += (int64_t)gridDim.x * blockDim.x)
			store<DT>(out, r * ldo + i, wvalue<WDT>(w, row0 + r, i0 + i, bs_shift));
}

// Eight decoded weights v at out + o (16-byte aligned): one 16-byte store (two for f32).
template <int DT> __device__ inline void store8(void *out, int64_t o, const float v[8])
{
	if (DT == 0) {
		float4 *f = reinterpret_cast<float4 *>(static_cast<float *>(out) + o);
		f[0] = make_float4(v[0], v[1], v[2], v[3]);
		f[1] = make_float4(v[4], v[5], v[6], v[7]);
	} else {
		uint16_t h[8];
		for (int k = 0; k < 8; k++) {
			if (DT == 1) {
				__half y = __float2half_rn(v[k]);
				memcpy(&h[k], &y, 2);
			} else {
				__nv_bfloat16 y = __float2bfloat16_rn(v[k]);
				memcpy(&h[k], &y, 2);
			}
		}
		uint4 u;
		memcpy(&u, h, 16);
		*reinterpret_cast<uint4 *>(static_cast<uint16_t *>(out) + o) = u;
	}
}

// NF4 / NF4-DQ, WPT (8 or 32) weights per thread (the fast paths of decode_as): one load of WPT/2
// bytes of codes (4 or 16), the block's scale once, the code tables in shared memory (a lookup by
// code from constant memory serialises over the distinct codes of a warp), one 16-byte store per
// eight weights (two for f32). Needs I, i0 and ic multiples of WPT, a blocksize >= WPT (a thread's
// weights in one block), codes aligned to WPT/2 bytes and a 16-byte aligned out with ldo a
// multiple of 8. 32 weights a thread: a quarter of the threads and of the blocks' table copies,
// loads of 16 bytes instead of 4. The same products as wvalue (built with --fmad=false), so the
// same values. The window as decode_kernel's.
template <int WDT, int DT, int WPT>
__global__ void decode_nf4_kernel(void *out, cuk_weight w, int64_t row0, int64_t nrows, int64_t i0,
				  int64_t ic, int64_t ldo, int bs_shift)
{
	__shared__ float nf4[16], dmap[256];
	for (int k = threadIdx.x; k < 256; k += blockDim.x) {
		if (k < 16)
			nf4[k] = c_nf4[k];
		dmap[k] = c_dmap[k];
	}
	__syncthreads();
	int64_t cw = ic / WPT, n = nrows * cw;
	bool flat = cw == w.I / WPT && ldo == ic; // whole rows, packed: x * WPT is both offsets already
	for (int64_t x = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; x < n;
	     x += (int64_t)gridDim.x * blockDim.x) {
		int64_t r = flat ? 0 : n <= INT32_MAX ? (int64_t)((uint32_t)x / (uint32_t)cw) : x / cw;
		int64_t c = x - r * cw, o = r * ldo + c * WPT; // o: out's element of the thread's first
		int64_t g = (row0 + r) * w.I + i0 + c * WPT;   // the flat index of the thread's first
		const unsigned char *codes = static_cast<const unsigned char *>(w.data) + (g >> 1);
		uint32_t words[WPT / 8];
		if (WPT == 32) {
			uint4 q = *reinterpret_cast<const uint4 *>(codes);
			memcpy(words, &q, 16);
		} else {
			words[0] = *reinterpret_cast<const uint32_t *>(codes);
		}
		int64_t b = g >> bs_shift;
		float am;
		if (WDT == 3)
			am = static_cast<const float *>(w.absmax)[b];
		else
			am = dmap[static_cast<const unsigned char *>(w.absmax)[b]] * w.nested[b / 256] +
			     (w.offset_dev ? *w.offset_dev : w.offset); // an expert's: on the device
#pragma unroll
		for (int k8 = 0; k8 < WPT / 8; k8++) {
			float v[8];
#pragma unroll
			for (int k = 0; k < 4; k++) {
				unsigned byte = (words[k8] >> (8 * k)) & 255u; // weights 8·k8 + 2k, + 1
				v[2 * k] = nf4[byte >> 4] * am;
				v[2 * k + 1] = nf4[byte & 15u] * am;
			}
			store8<DT>(out, o + 8 * k8, v);
		}
	}
}

// NF4 / NF4-DQ in chunks of eight weights, four chunks a thread, a warp's lanes on consecutive
// chunks: each of a warp's four 16-byte stores covers 512 contiguous bytes of out (the kernel above
// gives a lane 64 contiguous bytes, so a warp's store is spread over 2 KiB), and its four code loads
// and scale lookups are independent. The block scale table is read from global memory (g_dmap,
// through L1) rather than copied into shared memory from constant memory by every block. The same
// products as wvalue (built with --fmad=false), so the same values. Needs what the 8-weight form
// of the kernel above needs.
template <int WDT, int DT>
__global__ void decode_nf4_co_kernel(void *out, cuk_weight w, int64_t row0, int64_t nrows, int64_t i0,
				     int64_t ic, int64_t ldo, int bs_shift)
{
	__shared__ float nf4[16];
	if (threadIdx.x < 16)
		nf4[threadIdx.x] = g_nf4[threadIdx.x];
	__syncthreads();
	const int64_t cw = ic / 8, n = nrows * cw, span = 4 * (int64_t)blockDim.x;
	const bool flat = cw == w.I / 8 && ldo == ic;
	float off = 0.0f;
	if (WDT == 4)
		off = w.offset_dev ? *w.offset_dev : w.offset; // an expert's: on the device
	for (int64_t x0 = blockIdx.x * span + threadIdx.x; x0 < n; x0 += (int64_t)gridDim.x * span) {
		uint32_t word[4];
		float am[4];
		int64_t o[4];
#pragma unroll
		for (int k = 0; k < 4; k++) {
			int64_t x = x0 + k * (int64_t)blockDim.x;
			o[k] = -1;
			if (x >= n)
				continue;
			int64_t r = flat             ? 0
				    : n <= INT32_MAX ? (int64_t)((uint32_t)x / (uint32_t)cw)
						     : x / cw;
			int64_t c = x - r * cw, g = (row0 + r) * w.I + i0 + c * 8;
			o[k] = r * ldo + c * 8;
			word[k] = *reinterpret_cast<const uint32_t *>(
				static_cast<const unsigned char *>(w.data) + (g >> 1));
			int64_t b = g >> bs_shift;
			if (WDT == 3)
				am[k] = static_cast<const float *>(w.absmax)[b];
			else
				am[k] = g_dmap[static_cast<const unsigned char *>(w.absmax)[b]] *
						w.nested[b / 256] +
					off;
		}
#pragma unroll
		for (int k = 0; k < 4; k++) {
			if (o[k] < 0)
				continue;
			float v[8];
#pragma unroll
			for (int e = 0; e < 4; e++) {
				unsigned byte = (word[k] >> (8 * e)) & 255u; // weights 2e, 2e + 1
				v[2 * e] = nf4[byte >> 4] * am[k];
				v[2 * e + 1] = nf4[byte & 15u] * am[k];
			}
			store8<DT>(out, o[k], v);
		}
	}
}

// wpt 32 or 8 weights a thread; co: decode_nf4_co_kernel (eight-weight chunks, four a thread)
template <int WDT, int DT>
void launch_nf4(cudaStream_t s, int wpt, bool co, void *out, const cuk_weight &w, int64_t row0, int64_t nrows,
		int64_t i0, int64_t ic, int64_t ldo, int shift)
{
	int64_t n = nrows * (ic / wpt), per = co ? 4 * kThreads : kThreads, blocks = (n + per - 1) / per;
	unsigned gb = (unsigned)(blocks > 65535 * 8 ? 65535 * 8 : blocks);
	if (co)
		decode_nf4_co_kernel<WDT, DT>
			<<<gb, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
	else if (wpt == 32)
		decode_nf4_kernel<WDT, DT, 32>
			<<<gb, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
	else
		decode_nf4_kernel<WDT, DT, 8>
			<<<gb, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
}

// TERN_CUDA_DECODE=co|32|8: which NF4 decode runs where its alignment allows (for timing them side
// by side): decode_nf4_co_kernel (co, the default: a 3584 x 4096 NF4-DQ window in 16.1 us against
// 27.4 with 32 weights a thread, H100, 2026-12-06), 32 or 8 weights a thread. Read once;
// cu_device.c refuses other values at create.
int decode_form()
{
	static int f = 0;
	if (!f) {
		const char *e = getenv("TERN_CUDA_DECODE");
		f = e && !strcmp(e, "8") ? 8 : e && !strcmp(e, "32") ? 32 : 1; // 1: co
	}
	return f;
}

template <int WDT>
cudaError_t decode_as(cudaStream_t s, void *out, int out_dt, const cuk_weight &w, int64_t row0, int64_t nrows,
		      int64_t i0, int64_t ic, int64_t ldo)
{
	int64_t gx = (ic + kThreads - 1) / kThreads;
	dim3 g((unsigned)(gx > 1024 ? 1024 : gx), (unsigned)(nrows > 65535 ? 65535 : nrows));
	int shift = 0; // log2 of the NF4 blocksize (unused by the other formats)
	while (shift < 30 && (1 << shift) < w.blocksize)
		shift++;
	bool nf4 = WDT == 3 || WDT == 4, aligned = ((uintptr_t)out & 15) == 0 && ldo % 8 == 0;
	int form = decode_form();
	int wpt = nf4 && aligned && w.I % 32 == 0 && i0 % 32 == 0 && ic % 32 == 0 && w.blocksize >= 32 &&
				  ((uintptr_t)w.data & 15) == 0 && form == 32
			  ? 32
		  : nf4 && aligned && w.I > 0 && w.I % 8 == 0 && i0 % 8 == 0 && ic % 8 == 0 &&
				  w.blocksize >= 8 && ((uintptr_t)w.data & 3) == 0
			  ? 8
			  : 0;
	bool co = wpt == 8 && form == 1;
	if constexpr (WDT == 3 || WDT == 4) // the NF4 kernels exist for the NF4 formats only
		if (wpt) {
			if (out_dt == 0)
				launch_nf4<WDT, 0>(s, wpt, co, out, w, row0, nrows, i0, ic, ldo, shift);
			else if (out_dt == 1)
				launch_nf4<WDT, 1>(s, wpt, co, out, w, row0, nrows, i0, ic, ldo, shift);
			else
				launch_nf4<WDT, 2>(s, wpt, co, out, w, row0, nrows, i0, ic, ldo, shift);
			return cudaGetLastError();
		}
	if (out_dt == 0)
		decode_kernel<WDT, 0><<<g, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
	else if (out_dt == 1)
		decode_kernel<WDT, 1><<<g, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
	else
		decode_kernel<WDT, 2><<<g, kThreads, 0, s>>>(out, w, row0, nrows, i0, ic, ldo, shift);
	return cudaGetLastError();
}

__global__ void absmax_kernel(const float *x, int64_t n, uint32_t *bits)
{
	uint32_t m = 0;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x) {
		uint32_t b = __float_as_uint(x[i]) & 0x7fffffffu;
		m = b > m ? b : m; // NaN (above infinity) wins
	}
	for (int o = 16; o > 0; o >>= 1) {
		uint32_t t = __shfl_xor_sync(0xffffffffu, m, o);
		m = t > m ? t : m;
	}
	if ((threadIdx.x & 31) == 0 && m)
		atomicMax(bits, m); // max is exact: the order does not matter
}

// tern_prec_scale(bits, 14) (src/backend/prec.c)
__device__ inline float prec_scale(uint32_t max_bits)
{
	uint32_t e = (max_bits >> 23) & 0xffu;
	if (max_bits == 0 || e == 0xffu)
		return 1.0f;
	int k = 14 - ((e > 1 ? (int)e : 1) - 127);
	k = k < -100 ? -100 : k > 100 ? 100 : k;
	return ldexpf(1.0f, k);
}

template <int DT>
__global__ void operand_kernel(void *out, const float *x, int64_t n, const uint32_t *bits, float *inv_s)
{
	float sc = DT == 1 ? prec_scale(*bits) : 1.0f;
	if (inv_s && blockIdx.x == 0 && threadIdx.x == 0)
		inv_s[0] = 1.0f / sc;
	for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
	     i += (int64_t)gridDim.x * blockDim.x)
		store<DT>(out, i, x[i] * sc);
}

} // namespace

extern "C" cudaError_t cuk_set_tables(const float nf4[16], const float dmap[256])
{
	cudaError_t e = cudaMemcpyToSymbol(c_nf4, nf4, 16 * sizeof(float));
	if (e == cudaSuccess)
		e = cudaMemcpyToSymbol(c_dmap, dmap, 256 * sizeof(float));
	if (e == cudaSuccess)
		e = cudaMemcpyToSymbol(g_nf4, nf4, 16 * sizeof(float));
	return e != cudaSuccess ? e : cudaMemcpyToSymbol(g_dmap, dmap, 256 * sizeof(float));
}

extern "C" cudaError_t cuk_decode_window_ld(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w,
					    int64_t row0, int64_t nrows, int64_t i0, int64_t ic, int64_t ldo)
{
	if (nrows <= 0 || ic <= 0)
		return cudaSuccess;
	switch (w->dtype) {
	case 0: return decode_as<0>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	case 1: return decode_as<1>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	case 2: return decode_as<2>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	case 3: return decode_as<3>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	case 4: return decode_as<4>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	default: return decode_as<5>(s, out, out_dt, *w, row0, nrows, i0, ic, ldo);
	}
}

extern "C" cudaError_t cuk_decode_window(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w,
					 int64_t row0, int64_t nrows, int64_t i0, int64_t ic)
{
	return cuk_decode_window_ld(s, out, out_dt, w, row0, nrows, i0, ic, ic);
}

extern "C" cudaError_t cuk_decode(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w,
				  int64_t row0, int64_t nrows)
{
	return cuk_decode_window(s, out, out_dt, w, row0, nrows, 0, w->I);
}

extern "C" cudaError_t cuk_absmax_bits(cudaStream_t s, const float *x, int64_t n, uint32_t *bits)
{
	if (n > 0)
		absmax_kernel<<<grid_for(n), kThreads, 0, s>>>(x, n, bits);
	return cudaGetLastError();
}

extern "C" cudaError_t cuk_prec_operand(cudaStream_t s, void *out, int out_dt, const float *x, int64_t n,
					const uint32_t *bits, float *inv_s)
{
	if (out_dt == 1)
		operand_kernel<1><<<grid_for(n), kThreads, 0, s>>>(out, x, n, bits, inv_s);
	else
		operand_kernel<2><<<grid_for(n), kThreads, 0, s>>>(out, x, n, bits, inv_s);
	return cudaGetLastError();
}
