/* The CUDA backend's small-T matmul (decoding): cu_gemv.c's glue around k_gemv.cu. cu_mm.c's
 * matmul hands a product of at most CU_GEMV_MAX_T tokens to tern_cu_gemv once it has checked the
 * views; everything else stays on the decode + cuBLAS path. */
#ifndef TERN_CU_GEMV_H
#define TERN_CU_GEMV_H

#include "backend/cuda/cu.h"
#include "backend/cuda/cu_kernels_gemv.h"

/* The most tokens the small-T path takes. On paper (docs/PERFORMANCE.md): the decode + GEMM path
 * moves about 9x the NF4 bytes of W per call (codes in, bf16 out, bf16 in again), the small-T
 * kernel 1x plus T fused multiply-adds per weight, so it stays ahead up to about 8 tokens; past
 * that the T partial sums per row no longer fit the registers. */
#define CU_GEMV_MAX_T CUK_GEMV_MAX_T

/* Whether matmul takes the small-T path for T tokens: 1 <= T <= CU_GEMV_MAX_T, unless
 * TERN_CUDA_GEMV=0 (read at every call: the tests compare both paths in one process) or
 * TERN_DECODE_LEGACY=1 (tools/bench_generate.sh --compare). */
bool tern_cu_gemv_takes(int64_t T);

/* y[T, O] = x[T, I] · Wᵀ at product precision prec on the device addresses the caller checked
 * (mm_run: y and x fp32, kw from weight_open): for f16 the max |x| first (the scale), then one
 * k_gemv.cu kernel. */
enum tern_status tern_cu_gemv(struct cu_backend *c, float *y, const float *x, const struct cuk_weight *kw,
			      int64_t T, enum tern_dtype prec);

#endif
