// Attention of a few new queries over a KV cache on CUDA (backend.h attention_kv; the CPU
// reference is src/backend/cpu/cpu_attention_kv.c), fp32. One block per (query, head) row: the
// keys the query sees pass in chunks of kThreads; a warp scores keys w, w + 4, ... of the chunk
// (its lanes over the head dimension: coalesced reads of the cached key rows, the dot summed by
// shuffles in a fixed order; one thread per key walking its own row would make every load of a
// warp touch 32 cache lines), into shared memory, where thread j takes key j's score; the chunk's
// max updates the row's running max, and
// each thread rescales and accumulates its own elements d = tid + kThreads·u of the output over
// the chunk's keys in key order. Every thread keeps the same running max and sum (the same
// operations on the same values), so no further exchange is needed and results do not depend on
// scheduling. Masks as the CPU: query i is token p0 + i (p0 = Tk - Tq) and sees key j when
// j <= p0 + i and, with window > 0, p0 + i - j < window.
//
// Deliberately simple: generation's decode step has Tq = 1, so H blocks each walk the whole cache;
// splitting the keys over blocks (and combining their partial softmaxes) is the next step where
// long contexts make it pay.
#include "backend/cuda/cu_kernels_more.h"

#include <math.h>

namespace
{

constexpr int kThreads = 128;
constexpr int kMaxDh = 512; // CUK_ATTN_MAX_DH
constexpr int kPer = kMaxDh / kThreads;

__global__ void attn_kv_kernel(float *o, const float *q, const float *k, const float *v, int64_t Tq,
			       int64_t Tk, int64_t H, int64_t Hkv, int64_t Dh, int64_t window, float scale)
{
	__shared__ float qs[kMaxDh];
	__shared__ float ps[kThreads];
	__shared__ float red[kThreads / 32];
	int tid = threadIdx.x;
	int64_t grp = H / Hkv, p0 = Tk - Tq;
	for (int64_t r = blockIdx.x; r < Tq * H; r += gridDim.x) {
		int64_t i = r / H, h = r - i * H, g = h / grp, pos = p0 + i;
		int64_t j0 = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
		for (int64_t d = tid; d < Dh; d += kThreads)
			qs[d] = q[r * Dh + d];
		__syncthreads();
		float acc[kPer];
		for (int u = 0; u < kPer; u++)
			acc[u] = 0.0f;
		float m = -INFINITY, l = 0.0f;
		for (int64_t jb = j0; jb <= pos; jb += kThreads) {
			int64_t j = jb + tid, cnt = pos + 1 - jb < kThreads ? pos + 1 - jb : kThreads;
			for (int64_t jj = tid >> 5; jj < cnt; jj += kThreads / 32) { // a warp per key
				const float *kj = k + ((jb + jj) * Hkv + g) * Dh;
				float dot = 0.0f;
				for (int64_t d = tid & 31; d < Dh; d += 32)
					dot += qs[d] * kj[d];
				for (int off = 16; off > 0; off >>= 1)
					dot += __shfl_xor_sync(0xffffffffu, dot, off);
				if ((tid & 31) == 0)
					ps[jj] = dot * scale;
			}
			__syncthreads();
			float s = j <= pos ? ps[tid] : -INFINITY;
			float cm = s; // the chunk's max: a warp, then the warps
			for (int off = 16; off > 0; off >>= 1) {
				float t = __shfl_xor_sync(0xffffffffu, cm, off);
				cm = t > cm ? t : cm;
			}
			if ((tid & 31) == 0)
				red[tid >> 5] = cm;
			__syncthreads();
			cm = red[0];
			for (int w = 1; w < kThreads / 32; w++)
				cm = red[w] > cm ? red[w] : cm;
			float nm = cm > m ? cm : m;
			float c = expf(m - nm); // 0 on the first chunk (m = -inf)
			ps[tid] = j <= pos ? expf(s - nm) : 0.0f;
			__syncthreads();
			float cs = 0.0f;
			for (int64_t jj = 0; jj < cnt; jj++)
				cs += ps[jj];
			l = l * c + cs;
			for (int u = 0; u < kPer; u++) {
				int64_t d = tid + (int64_t)kThreads * u;
				if (d >= Dh)
					break;
				float a = 0.0f;
				for (int64_t jj = 0; jj < cnt; jj++)
					a += ps[jj] * v[((jb + jj) * Hkv + g) * Dh + d];
				acc[u] = acc[u] * c + a;
			}
			m = nm;
			__syncthreads(); // ps and red are rewritten by the next chunk
		}
		for (int u = 0; u < kPer; u++) {
			int64_t d = tid + (int64_t)kThreads * u;
			if (d < Dh)
				o[r * Dh + d] = acc[u] / l;
		}
		__syncthreads(); // qs is rewritten by the next row
	}
}

} // namespace

extern "C" cudaError_t cuk_attention_kv(cudaStream_t s, float *o, const float *q, const float *k,
					const float *v, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv,
					int64_t Dh, int64_t window, float scale)
{
	int64_t rows = Tq * H;
	if (rows > 0)
		attn_kv_kernel<<<(unsigned)(rows > 65535 * 8 ? 65535 * 8 : rows), kThreads, 0, s>>>(
			o, q, k, v, Tq, Tk, H, Hkv, Dh, window, scale);
	return cudaGetLastError();
}
