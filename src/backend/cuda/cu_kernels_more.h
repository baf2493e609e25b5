/* The launchers of the CUDA kernels added after the base vtable (k_moe.cu, k_grouped.cu, k_kv.cu,
 * k_bitnet.cu): the mixture-of-experts row ops and router, the grouped matmul, attention over a
 * KV cache and BitNet's activation quantization. Conventions as cu_kernels.h: plain C types,
 * device pointers, element counts, every launcher queues on stream s and returns
 * cudaGetLastError(). */
#ifndef TERN_CU_KERNELS_MORE_H
#define TERN_CU_KERNELS_MORE_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- k_moe.cu (built with --fmad=false: the CPU reference's roundings) ---- */

/* y[i] = x[idx[i]] for i < n (rows of D), a NaN row for an idx outside [0, Tx). */
cudaError_t cuk_gather_rows(cudaStream_t s, float *y, const float *x, const int32_t *idx, int64_t n,
			    int64_t Tx, int64_t D);
/* y[idx[i]] += w[i] · x[i] (w NULL: += x[i]) for i < n; an idx outside [0, Ty) is skipped. */
cudaError_t cuk_scatter_add_rows(cudaStream_t s, float *y, const float *x, const int32_t *idx, const float *w,
				 int64_t n, int64_t Ty, int64_t D);
/* out[i] = Σ_d a[i, d] b[i, d] in double, one block per row in a fixed order. */
cudaError_t cuk_rowdot(cudaStream_t s, float *out, const float *a, const float *b, int64_t n, int64_t D);
/* The router (backend.h route_topk), one thread per token, in double as the CPU reference;
 * counts[E] are zeroed and counted here. */
cudaError_t cuk_route_topk(cudaStream_t s, int32_t *sel, float *w, float *prob, int32_t *counts,
			   const float *logits, int64_t T, int64_t E, int64_t k, bool norm);
/* Its backward (route_topk_bwd), one thread per token, in double; a sel outside [0, E) is
 * skipped. */
cudaError_t cuk_route_topk_bwd(cudaStream_t s, float *dlogits, const float *dw, const float *prob,
			       const int32_t *sel, int64_t T, int64_t E, int64_t k, bool norm);

/* ---- k_grouped.cu ---- */

/* One step of the grouped matmul over the stacked rows [g0, g0 + gn) of a weight [E·O, I]
 * decoded to fp32 (wrows: row g0 first, rows of I). Expert e's token rows are
 * [off[e], off[e+1]) (clamped into [0, T]).
 *   forward (bwd false): out[r, o] = Σ_i a[r, i] W[e·O + o, i] for the o of e inside the step
 *     (out [T, O], a [T, I])
 *   backward: out[r, i] (+)= Σ_o a[r, o] W[e·O + o, i] over the o of e inside the step
 *     (out [T, I], a [T, O]); = where the step holds e's first row and !accumulate, else +=. */
cudaError_t cuk_grouped(cudaStream_t s, bool bwd, float *out, const float *a, const float *wrows,
			const int32_t *off, int64_t T, int64_t O, int64_t I, int64_t g0, int64_t gn,
			bool accumulate);

/* ---- k_kv.cu ---- */

/* attention_kv (backend.h): o [Tq, H, Dh] from q [Tq, H, Dh], k, v [Tk, Hkv, Dh]; Dh <= 512.
 * parts (cuk_attention_kv_parts) splits each row's keys over that many blocks, whose partial
 * softmaxes go to part [Tq·H·parts, Dh + 2] floats (unused when parts is 1); the last block of a
 * row merges them, counting in counts [CUK_KV_BLOCKS] (zeros before the launch, zeros after it),
 * or, counts NULL, a second kernel does. */
/* The split aims at CUK_KV_BLOCKS blocks (about 16 per SM), in parts of at least 16 keys (a
 * warp's keys are scored one after another: short parts keep that chain short), at most
 * CUK_KV_MAX_PARTS of them. */
#define CUK_KV_BLOCKS 2048
#define CUK_KV_MAX_PARTS 128
int cuk_attention_kv_parts(int64_t Tq, int64_t Tk, int64_t H);
cudaError_t cuk_attention_kv(cudaStream_t s, float *o, float *part, unsigned *counts, const float *q,
			     const float *k, const float *v, int64_t Tq, int64_t Tk, int64_t H, int64_t Hkv,
			     int64_t Dh, int64_t window, float scale, int parts);

/* ---- k_bitnet.cu (--fmad=false) ---- */

/* act_quant8 (backend.h): y [T, I] from x [T, I]; y may be x. One block per row. */
cudaError_t cuk_act_quant8(cudaStream_t s, float *y, const float *x, int64_t T, int64_t I);

/* ---- k_sample.cu ---- */

/* argmax (backend.h): out [rows] (i32) from x [rows, n]. A block per row and part of it: few long
 * rows (a decode step's logits) are cut into cuk_argmax_parts(rows, n) parts of about
 * CUK_ARGMAX_PART elements, whose candidates (rows · parts · 8 bytes of scratch) a second kernel
 * merges; scratch is not read at one part. */
#define CUK_ARGMAX_PART 2048
int cuk_argmax_parts(int64_t rows, int64_t n);
cudaError_t cuk_argmax(cudaStream_t s, int32_t *out, void *scratch, const float *x, int64_t rows, int64_t n,
		       int parts);

#ifdef __cplusplus
}
#endif

#endif
