/* The small-T products of the CUDA backend (k_gemv.cu): y[T,O] = x[T,I] · W[O,I]ᵀ for a few
 * tokens, reading W in its stored format once for all T rows (no decoded copy, no cuBLAS). Plain
 * C types, as cu_kernels.h. */
#ifndef TERN_CU_KERNELS_GEMV_H
#define TERN_CU_KERNELS_GEMV_H

#include "backend/cuda/cu_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The most tokens one launch of cuk_gemv takes (the kernels keep T partial sums per row). */
#define CUK_GEMV_MAX_T 8

/* The NF4 code book and the dynamic map of the NF4-DQ block scales into k_gemv.cu's constant
 * memory (once per device, at create, next to cuk_set_tables). */
cudaError_t cuk_gemv_set_tables(const float nf4[16], const float dmap[256]);

/* Whether the decode step's kernels (the small-T products, rmsnorm and add_rmsnorm, rope, swiglu,
 * attention_kv, argmax) are launched with programmatic stream serialization (k_pdl.cuh): on (1)
 * only for devices of compute capability 9.0 and later. Process-wide; set at create. */
void cuk_set_pdl(int on);

/* y[t, o] = Σ_i x[t, i] · W[o, i] for t < T (1 <= T <= CUK_GEMV_MAX_T), o < O, with backend.h's
 * product precision prec (0 f32, 1 f16, 2 bf16): W's dequantized value (the CPU reference's fp32
 * value) and x rounded to prec (x times the f16 input scale 2^(14 - e) from *bits, the bits of
 * max|x| that cuk_absmax_bits wrote, for f16; bits is read only then), the products summed in
 * fp32 in a fixed order and the sum times 1/scale. y must not overlap x or W. sms: the device's
 * multiprocessors (how many blocks the one-token tensor-core kernel should fit on each). */
cudaError_t cuk_gemv(cudaStream_t s, float *y, const float *x, const struct cuk_weight *w, int64_t T,
		     int prec, const uint32_t *bits, int sms);

/* The most weights cuk_gemv_multi takes in one launch. */
#define CUK_GEMV_MULTI 3

/* y[i] = cuk_gemv(y[i], x, &w[i], T, prec = 2) for i < n (1 <= n <= CUK_GEMV_MULTI), every y[i]
 * with the bits that call would give, in one launch of the tensor-core kernel: every w[i] NF4 or
 * every one NF4-DQ, of one I, each as that kernel takes it (I a multiple of 64, 16-byte aligned
 * codes and x, blocksize >= 64, O·I < 2^32). cudaErrorNotSupported, launching nothing, where that
 * does not hold (or TERN_CUDA_GEMV_MMA=0): the caller then runs the products one by one. */
cudaError_t cuk_gemv_multi(cudaStream_t s, float *const *y, const float *x, const struct cuk_weight *w, int n,
			   int64_t T, int prec, int sms);

#ifdef __cplusplus
}
#endif

#endif
