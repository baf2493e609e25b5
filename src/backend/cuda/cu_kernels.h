/* The CUDA kernels' launchers (k_*.cu), called by the C glue (cu_*.c). Plain C types only, so
 * that both the C compiler and nvcc read this header. Every launcher queues its kernels on stream
 * s and returns cudaGetLastError() (launch errors only: faults surface at the next
 * synchronisation). Pointers are device addresses; counts are elements. dtype codes are
 * enum tern_dtype's values: 0 f32, 1 f16, 2 bf16, 3 nf4, 4 nf4-dq, 5 ternary. */
#ifndef TERN_CU_KERNELS_H
#define TERN_CU_KERNELS_H

#include <cuda_runtime_api.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- k_quant.cu: weight decode and the half-precision operands ---- */

/* The NF4 code book and the signed dynamic map of the NF4-DQ block scales, copied into constant
 * memory of the current device (once per device, at create). */
cudaError_t cuk_set_tables(const float nf4[16], const float dmap[256]);

/* A frozen weight W [O, I] on the device (the parts of struct tern_weight). */
struct cuk_weight {
	int dtype;
	int64_t O, I;
	const void *data;
	const void *absmax; /* nf4: f32 [nb]; nf4-dq: u8 [nb] */
	const float *nested;
	int blocksize;
	float offset, scale;
	const float *offset_dev; /* nf4-dq: when set, the nested offset is *offset_dev (device memory;
				  * an expert's of the grouped matmul), not offset */
};

/* out[r, i] = W[row0 + r, i] dequantized (the CPU reference's fp32 value), then rounded to
 * out_dt (0 f32, 1 f16, 2 bf16; round to nearest even), for r < nrows. */
cudaError_t cuk_decode(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w, int64_t row0,
		       int64_t nrows);
/* out[r, j] = W[row0 + r, i0 + j] as cuk_decode, for r < nrows, j < ic (out [nrows, ic]). */
cudaError_t cuk_decode_window(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w, int64_t row0,
			      int64_t nrows, int64_t i0, int64_t ic);
/* The same window with out's rows ldo >= ic elements apart (the fused LoRA products, cu_lora.c,
 * leave room after each row for B's columns). */
cudaError_t cuk_decode_window_ld(cudaStream_t s, void *out, int out_dt, const struct cuk_weight *w,
				 int64_t row0, int64_t nrows, int64_t i0, int64_t ic, int64_t ldo);
/* k_lora.cu: out[r, j] (bf16, rows ldo apart) for r < rows, j < ncols, =
 *   bf16(x[r, j])                     j < kx        (x rows ldx apart)
 *   bf16(alpha · u[r, j - kx])        kx <= j < kx + ku, r < urows   (u rows ldu apart)
 *   0                                 otherwise (the padding of the extended reduction)
 * rounded to nearest even; x may be NULL when kx = 0. */
cudaError_t cuk_lora_pack(cudaStream_t s, void *out, int64_t ldo, int64_t rows, int64_t ncols, const float *x,
			  int64_t ldx, int64_t kx, const float *u, int64_t ldu, int64_t ku, int64_t urows,
			  float alpha);
/* *bits = max(*bits, the largest |x[i]|'s bit pattern) (*bits zeroed by the caller). */
cudaError_t cuk_absmax_bits(cudaStream_t s, const float *x, int64_t n, uint32_t *bits);
/* out[i] = x[i] · sc rounded to out_dt (1 f16, 2 bf16), where for f16 sc = the input scale of
 * backend.h (2^(14 - e) from *bits) and for bf16 sc = 1; when inv_s is not NULL, inv_s[0] = 1/sc. */
cudaError_t cuk_prec_operand(cudaStream_t s, void *out, int out_dt, const float *x, int64_t n,
			     const uint32_t *bits, float *inv_s);

/* ---- k_elem.cu: elementwise, optimizer, norms, RoPE, MLP activation, embedding ---- */

cudaError_t cuk_dropout(cudaStream_t s, float *y, const float *x, int64_t n, uint32_t thr, float scale,
			uint64_t key);
cudaError_t cuk_axpy(cudaStream_t s, float *y, const float *x, int64_t n, float alpha);
cudaError_t cuk_scale(cudaStream_t s, float *x, int64_t n, float alpha);
/* y[n] *= a[0] (a device scalar) */
cudaError_t cuk_scale_dev(cudaStream_t s, float *y, int64_t n, const float *a);
struct cuk_adamw_c {
	float decay, one_minus_b1, b2, one_minus_b2, neg_step, bc2_sqrt, eps;
	bool lerp_small;
};
cudaError_t cuk_adamw(cudaStream_t s, float *p, const float *g, float *m, float *v, int64_t n,
		      const struct cuk_adamw_c *c);
/* The number of partial sums of cuk_sumsq (its part: that many doubles of device memory). */
#define CUK_SUMSQ_PARTS 256
/* out[0] = or += Σ x² in double, in one fixed order that depends on n alone: up to
 * CUK_SUMSQ_PARTS blocks sum slices into part, one block adds the parts */
cudaError_t cuk_sumsq(cudaStream_t s, float *out, const float *x, int64_t n, bool accumulate, double *part);
cudaError_t cuk_clip(cudaStream_t s, float *x, int64_t n, const float *sumsq, float max_norm);
cudaError_t cuk_cast(cudaStream_t s, void *dst, int dt, const void *src, int st, int64_t n);
cudaError_t cuk_swiglu(cudaStream_t s, float *h, const float *g, const float *u, int64_t n, int relu2);
cudaError_t cuk_swiglu_bwd(cudaStream_t s, float *dg, float *du, const float *dh, const float *g,
			   const float *u, int64_t n, int relu2);
cudaError_t cuk_rmsnorm(cudaStream_t s, float *y, float *rstd, const float *x, const float *w, int64_t T,
			int64_t D, float eps);
/* h[T,D] += x, then y, rstd = rmsnorm(h) (backend.h add_rmsnorm: cuk_rmsnorm's values) */
cudaError_t cuk_add_rmsnorm(cudaStream_t s, float *h, float *y, float *rstd, const float *x, const float *w,
			    int64_t T, int64_t D, float eps);
cudaError_t cuk_rmsnorm_bwd(cudaStream_t s, float *dx, const float *dy, const float *x, const float *w,
			    const float *rstd, int64_t T, int64_t D, bool accumulate);
cudaError_t cuk_rope(cudaStream_t s, float *x, const int32_t *pos, const float *inv_freq, int64_t T,
		     int64_t H, int64_t Dh, bool inverse);
/* rope2 (backend.h): x [T, H, Dh] and x2 [T, H2, Dh], one launch where T <= 16 */
cudaError_t cuk_rope2(cudaStream_t s, float *x, int64_t H, float *x2, int64_t H2, const int32_t *pos,
		      const float *inv_freq, int64_t T, int64_t Dh, bool inverse);
/* y[t] = E[ids[t]] widened to f32 (dt 0/1/2); an id outside [0, V) writes a NaN row. */
cudaError_t cuk_embed(cudaStream_t s, float *y, const int32_t *ids, const void *E, int dt, int64_t V,
		      int64_t D, int64_t T);
/* dE[ids[t]] += dy[t] in token order (one thread per column); ids outside [0, V) are skipped. */
cudaError_t cuk_embed_bwd(cudaStream_t s, float *dE, const float *dy, const int32_t *ids, int64_t T,
			  int64_t V, int64_t D);

/* ---- k_attn.cu: flash-style attention (online softmax, no T×T) ---- */

struct cuk_attn {
	int64_t T, H, Hkv, Dh, window;
	float scale;
	/* 1 (compute 8.0 and later only): q, k, v, P, dO and dS rounded to bf16 for the tensor
	 * cores (backend.h's TERN_BF16), softmax, lse and sums in fp32, for the head sizes
	 * cuk_attention_mma_dh takes; the launchers run the fp32 kernels for the others. */
	int bf16;
};
/* Whether the tensor-core kernels take head size Dh (16, 32, 64, 96, 128). */
bool cuk_attention_mma_dh(int64_t Dh);
/* The largest head size the kernels take. */
#define CUK_ATTN_MAX_DH 512
/* Bytes of device scratch cuk_attention (bwd false) or cuk_attention_bwd (bwd true) needs: the
 * backward's f32 rowsum(dO ∘ O) [H * T]; the second version's bf16 copies of q, k, v (and dO) and
 * dV's partial sums (k_attn.cu). */
size_t cuk_attention_scratch(const struct cuk_attn *a, bool bwd);
cudaError_t cuk_attention(cudaStream_t s, float *o, float *lse, const float *q, const float *k,
			  const float *v, const int32_t *seg, void *scratch, const struct cuk_attn *a);
cudaError_t cuk_attention_bwd(cudaStream_t s, float *dq, float *dk, float *dv, const float *dout,
			      const float *q, const float *k, const float *v, const float *o,
			      const float *lse, const int32_t *seg, void *scratch, const struct cuk_attn *a);

/* ---- k_loss.cu: the cross-entropy rows of the fused lm_head ---- */

/* For each of tn rows of logits z [tn, V] (labels lab[tn]): term[r] = lse − z[label] (0 for
 * label −100, NaN for a label outside [0, V)), and the row replaced by inv_n · (softmax −
 * onehot) (zeros for an untrained or bad row). bf16: the replacement is V bf16 values at the
 * start of the row (row stride still V floats, i.e. 2V bf16); an untrained row is all zero bits. */
cudaError_t cuk_ce_rows(cudaStream_t s, float *z, int64_t tn, int64_t V, const int32_t *lab, float inv_n,
			double *term, bool bf16);
/* loss[0] = (float)(loss[0] + inv_n · Σ term[t]), the sum in double in token order. */
cudaError_t cuk_ce_total(cudaStream_t s, float *loss, const double *term, int64_t T, float inv_n);

#ifdef __cplusplus
}
#endif

#endif
