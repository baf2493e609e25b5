// Attention of a few new queries over a KV cache on CUDA (backend.h attention_kv; the CPU
// reference is src/backend/cpu/cpu_attention_kv.c), fp32. One block per (query, head) row and
// part of its keys (below): the keys the part holds pass in chunks of kThreads; a warp scores keys
// w, w + 4, ... of the chunk (its lanes over the head dimension: coalesced reads of the cached key
// rows, the dot summed by shuffles in a fixed order; one thread per key walking its own row would
// make every load of a warp touch 32 cache lines), into shared memory, where thread j takes key
// j's score; the chunk's max updates the row's running max, and each thread rescales and
// accumulates its own elements d = tid + kThreads·u of the output over the chunk's keys in key
// order. A decode step's block is a chain of dependent loads, so they are issued in batches: a
// warp loads the rows of 16/NC keys before its first multiply, a thread 16 rows of v before its
// first add (one at a time, 16.2 µs a call on an H100: docs/PERFORMANCE.md 2026-12-06 12:37).
// Every thread keeps the same running max and sum (the same operations on the same values), so no
// further exchange is needed and results do not depend on scheduling. Masks as the CPU: query i
// is token p0 + i (p0 = Tk - Tq) and sees key j when j <= p0 + i and, with window > 0,
// p0 + i - j < window.
//
// Split over the keys (flash decoding): a decode step has Tq = 1, so H rows alone would leave most
// of the card idle while each walks the whole cache. With S > 1 splits, block b takes row b / S and
// the S-th part b % S of the row's visible keys (parts of ceil(n / S) keys, in key order), and
// writes the part's running max m, sum l and unnormalised output acc to part[b]; a row's parts are
// then merged in part order (o = Σ_s acc_s e^(m_s − M) / Σ_s l_s e^(m_s − M), M the largest m_s):
// results do not depend on scheduling. The merge runs in the same launch: each part's block counts
// itself in counts[row] (an atomic add on a uint after a fence), and the block that counts last merges
// the row and sets the count back to 0, so a decode step's attention is one launch, not two (a
// second merge launch timed the same on an H100, docs/PERFORMANCE.md 2026-12-06 16:51, and went).
// S = 1 writes o directly (prefill's many rows).
#include "backend/cuda/cu_kernels_more.h"
#include "backend/cuda/k_pdl.cuh"

#include <math.h>

namespace
{

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxDh = 512; // CUK_ATTN_MAX_DH
constexpr int kPer = kMaxDh / kThreads;
constexpr int kVB = 16; // rows of v whose loads a thread issues before it adds them

// o[r] from the S parts of row r (attn_kv_kernel), merged in part order by the block's threads.
// The parts were written by other blocks of the running launch: loads through L2 (__ldcg).
__device__ inline void kv_merge_row(float *o, const float *pr, int64_t Dh, int S)
{
	float M = -INFINITY;
	for (int s = 0; s < S; s++) {
		float m = __ldcg(pr + s * (Dh + 2) + Dh);
		M = m > M ? m : M;
	}
	float L = 0.0f;
	for (int s = 0; s < S; s++) {
		const float *ps = pr + s * (Dh + 2);
		float l = __ldcg(ps + Dh + 1);
		if (l > 0.0f)
			L += l * expf(__ldcg(ps + Dh) - M);
	}
	for (int64_t d = threadIdx.x; d < Dh; d += blockDim.x) {
		float a = 0.0f;
		for (int s = 0; s < S; s++) {
			const float *ps = pr + s * (Dh + 2);
			if (__ldcg(ps + Dh + 1) > 0.0f)
				a += __ldcg(ps + d) * expf(__ldcg(ps + Dh) - M);
		}
		o[d] = a / L;
	}
}

// NC: 32-column groups of a key row a lane holds (Dh <= 32 NC); KPW keys a warp scores at once
template <int NC>
__global__ void attn_kv_kernel(float *o, float *part, unsigned *counts, const float *q, const float *k,
			       const float *v, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv, int64_t Dh,
			       int64_t window, float scale, int S)
{
	constexpr int KPW = NC >= 16 ? 1 : 16 / NC;
	const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
	__shared__ float qs[kMaxDh];
	__shared__ bool merge; // this block counted its row's last part
	__shared__ float ps[kThreads];
	__shared__ float red[kWarps];
	pdl_wait(); // launched by pdl_launch (k_pdl.cuh)
	pdl_trigger();
	int tid = threadIdx.x;
	int64_t grp = H / Hkv, p0 = Tk - Tq;
	for (int64_t b = blockIdx.x; b < Tq * H * S; b += gridDim.x) {
		int64_t r = b / S, sp = b - r * S;
		int64_t i = r / H, h = r - i * H, g = h / grp, pos = p0 + i;
		int64_t j0 = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
		// this part's keys j0 .. last (none when the row has fewer keys than parts)
		int64_t len = (pos + 1 - j0 + S - 1) / S, last = j0 + (sp + 1) * len - 1;
		j0 += sp * len;
		last = last < pos ? last : pos;
		for (int64_t d = tid; d < Dh; d += kThreads)
			qs[d] = q[r * Dh + d];
		__syncthreads();
		float acc[kPer];
		for (int u = 0; u < kPer; u++)
			acc[u] = 0.0f;
		float m = -INFINITY, l = 0.0f;
		for (int64_t jb = j0; jb <= last; jb += kThreads) {
			int64_t j = jb + tid, cnt = last + 1 - jb < kThreads ? last + 1 - jb : kThreads;
			// a warp per key (keys warp, warp + 4, ...), KPW of them at once: their NC loads a
			// lane are all issued before the first multiply
			for (int64_t jw = warp; jw < cnt; jw += kWarps * KPW) {
				float kv[KPW][NC];
#pragma unroll
				for (int e = 0; e < KPW; e++) {
					const int64_t jj = jw + kWarps * e;
					const float *kj = k + ((jb + (jj < cnt ? jj : 0)) * Hkv + g) * Dh;
#pragma unroll
					for (int c = 0; c < NC; c++)
						kv[e][c] = jj < cnt && lane + 32 * c < Dh ? kj[lane + 32 * c]
											  : 0.0f;
				}
#pragma unroll
				for (int e = 0; e < KPW; e++) {
					float dot = 0.0f;
#pragma unroll
					for (int c = 0; c < NC; c++)
						if (lane + 32 * c < Dh)
							dot += qs[lane + 32 * c] * kv[e][c];
					for (int off = 16; off > 0; off >>= 1)
						dot += __shfl_xor_sync(0xffffffffu, dot, off);
					if (lane == 0 && jw + kWarps * e < cnt)
						ps[jw + kWarps * e] = dot * scale;
				}
			}
			__syncthreads();
			float s = j <= last ? ps[tid] : -INFINITY;
			float cm = s; // the chunk's max: a warp, then the warps
			for (int off = 16; off > 0; off >>= 1) {
				float t = __shfl_xor_sync(0xffffffffu, cm, off);
				cm = t > cm ? t : cm;
			}
			if ((tid & 31) == 0)
				red[tid >> 5] = cm;
			__syncthreads();
			cm = red[0];
			for (int w = 1; w < kWarps; w++)
				cm = red[w] > cm ? red[w] : cm;
			float nm = cm > m ? cm : m;
			float c = expf(m - nm); // 0 on the first chunk (m = -inf)
			ps[tid] = j <= last ? expf(s - nm) : 0.0f;
			__syncthreads();
			float cs = 0.0f;
#pragma unroll 8
			for (int64_t jj = 0; jj < cnt; jj++)
				cs += ps[jj];
			l = l * c + cs;
			for (int u = 0; u < kPer; u++) {
				int64_t d = tid + (int64_t)kThreads * u;
				if (d >= Dh)
					break;
				float a = 0.0f;
				for (int64_t j1 = 0; j1 < cnt;
				     j1 += kVB) { // kVB rows of v loaded, then added
					float vv[kVB];
#pragma unroll
					for (int e = 0; e < kVB; e++)
						vv[e] = j1 + e < cnt ? v[((jb + j1 + e) * Hkv + g) * Dh + d]
								     : 0.0f;
#pragma unroll
					for (int e = 0; e < kVB; e++)
						if (j1 + e < cnt)
							a += ps[j1 + e] * vv[e];
				}
				acc[u] = acc[u] * c + a;
			}
			m = nm;
			__syncthreads(); // ps and red are rewritten by the next chunk
		}
		float *pb = part + b * (Dh + 2); // acc [Dh], m, l (S > 1)
		for (int u = 0; u < kPer; u++) {
			int64_t d = tid + (int64_t)kThreads * u;
			if (d < Dh) {
				if (S == 1)
					o[r * Dh + d] = acc[u] / l;
				else
					pb[d] = acc[u];
			}
		}
		if (S > 1 && tid == 0)
			pb[Dh] = m, pb[Dh + 1] = l; // an empty part: m = -inf, l = 0
		if (S > 1 && counts) {              // the row's last part to end merges it
			__threadfence();            // this part's writes before its count
			__syncthreads();
			if (tid == 0)
				merge = atomicAdd(&counts[r], 1u) == (unsigned)S - 1u;
			__syncthreads();
			if (merge) {
				__threadfence(); // the other parts' writes, counted before ours
				kv_merge_row(o + r * Dh, part + r * S * (Dh + 2), Dh, S);
				if (tid == 0)
					counts[r] = 0u; // every part has counted: ready for the next launch
			}
		}
		__syncthreads(); // qs and merge are rewritten by the next row
	}
}

} // namespace

extern "C" int cuk_attention_kv_parts(int64_t Tq, int64_t Tk, int64_t H)
{
	int64_t rows = Tq * H, keys = Tk - Tq + 1; // the first row's keys (the fewest, no window)
	int64_t s = rows >= CUK_KV_BLOCKS ? 1 : CUK_KV_BLOCKS / rows, most = (keys + 15) / 16;
	s = s < most ? s : most;
	return s < 1 ? 1 : s > CUK_KV_MAX_PARTS ? CUK_KV_MAX_PARTS : (int)s;
}

extern "C" cudaError_t cuk_attention_kv(cudaStream_t s, float *o, float *part, unsigned *counts,
					const float *q, const float *k, const float *v, int64_t Tq,
					int64_t Tk, int64_t H, int64_t Hkv, int64_t Dh, int64_t window,
					float scale, int parts)
{
	int64_t rows = Tq * H, blocks = rows * parts, cap = 65535 * 8;
	if (rows == 0)
		return cudaSuccess;
	if (rows > CUK_KV_BLOCKS)
		counts = NULL; // (parts is 1 there)
	void (*kern)(float *, float *, unsigned *, const float *, const float *, const float *, int64_t,
		     int64_t, int64_t, int64_t, int64_t, int64_t, float, int) =
		Dh <= 32    ? attn_kv_kernel<1>
		: Dh <= 64  ? attn_kv_kernel<2>
		: Dh <= 128 ? attn_kv_kernel<4>
		: Dh <= 256 ? attn_kv_kernel<8>
			    : attn_kv_kernel<16>;
	return pdl_launch(kern, dim3((unsigned)(blocks > cap ? cap : blocks)), dim3(kThreads), 0, s, o, part,
			  counts, q, k, v, Tq, Tk, H, Hkv, Dh, window, scale, parts);
}
