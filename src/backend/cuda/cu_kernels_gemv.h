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

#ifdef __cplusplus
}
#endif

#endif
