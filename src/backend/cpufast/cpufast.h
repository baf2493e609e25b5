/* The fast CPU backend ("cpu"): the reference's buffers, streaming entries and profile
 * (src/backend/cpu/), with the heavy ops replaced by blocked, threaded code:
 *   - products through an f32 GEMM (OpenBLAS's sgemm when the build found it, else a plain C
 *     kernel), frozen weights decoded panel by panel into cache-sized f32 blocks, never whole;
 *   - attention in key tiles (flash-style), the fused loss over token chunks;
 *   - element-wise ops vectorised (AVX2/FMA chosen at run time, plain C elsewhere).
 * Work is split into tasks of fixed sizes (never by the thread count), each task one GEMM call
 * over its own outputs, so results are the same at any thread count (OMP_NUM_THREADS) and every
 * run is byte-identical. Sums are fp32 (reassociated against the reference, which sums in
 * double): test_ops holds this backend to the same tolerances as the GPU backends. */
#ifndef TERN_CPUFAST_H
#define TERN_CPUFAST_H

#include "backend/cpu/cpu.h"

/* C[M,N] = alpha · op(A) · op(B) + beta · C, row-major with leading dimensions, on the calling
 * thread (callers split the work). beta == 0: C is not read. */
void tern_fast_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
		     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Which GEMM runs ("OpenBLAS 0.3.21 (single-threaded calls)", "plain C"). */
const char *tern_fast_gemm_name(void);
/* Called once at backend creation: makes the BLAS run each call on its caller's thread. */
void tern_fast_gemm_init(void);

/* Tasks of an op run under OpenMP (schedule(dynamic): which thread takes a task changes
 * nothing in the result). */
#ifdef _OPENMP
#define FAST_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic, 1)")
#else
#define FAST_PARALLEL_FOR
#endif

/* Vector kernels (cpufast_simd.c), AVX2/FMA when the CPU has it:
 * x[i] = e^(x[i] - m) for i < n, returning the sum of the new x (exactly 0 where x was -inf). */
float tern_fast_exp_sub(float *x, int64_t n, float m);
/* The loss's row (n >= 1): *m = max z, z[i] = e^(z[i] - m), returning Σ z[i] summed in double. */
double tern_fast_ce_row(float *z, int64_t n, float *m);
/* x[i] *= r. */
void tern_fast_scale(float *x, int64_t n, float r);
/* Σ a[i] b[i] in fp32. */
float tern_fast_dot(const float *a, const float *b, int64_t n);
/* h = silu(g) · u, silu(g) = g / (1 + e^-g); and its backward dg = dh · u · silu'(g),
 * du = dh · silu(g) (silu' = σ(g)(1 + g(1 − σ(g)))), all in fp32. */
void tern_fast_silu_mul(float *h, const float *g, const float *u, int64_t n);
void tern_fast_silu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, int64_t n);
/* out[n] = W[o, i0 .. i0+n) in fp32: the reference's decoder (tern_cpu_weight_row), the same
 * values, by blocks and with F16C where present. */
void tern_fast_weight_row(const struct cpu_weight *cw, int64_t o, int64_t i0, int64_t n, float *out);
/* Decoded weights and the loss's vocabulary go in panels of lines (rows or columns of W) of about
 * TERN_FAST_PANEL_BYTES of f32 (an L2 cache), at least TERN_FAST_PANEL_MIN_LINES of them:
 * tern_fast_panel_lines(len, total) is that width for lines len long, at most total
 * (cpufast_mm.c). */
#define TERN_FAST_PANEL_BYTES ((int64_t)256 << 10)
#define TERN_FAST_PANEL_MIN_LINES 128
int64_t tern_fast_panel_lines(int64_t len, int64_t total);
/* "AVX2/FMA" or "plain C": what the kernels run. */
const char *tern_fast_simd_name(void);

/* The threads ops may use (omp_get_max_threads, 1 without OpenMP). */
int tern_fast_threads(void);

enum tern_status tern_fast_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  const struct tern_weight *w, int64_t T, enum tern_dtype prec);
enum tern_status tern_fast_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      const struct tern_weight *w, int64_t T, bool accumulate,
				      enum tern_dtype prec);
enum tern_status tern_fast_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
				struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
				float alpha, float beta, enum tern_dtype prec);
enum tern_status tern_fast_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				     struct tern_view q, struct tern_view k, struct tern_view v,
				     struct tern_view seg, const struct tern_attn_args *a);
enum tern_status tern_fast_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
					 struct tern_view dv, struct tern_view dout, struct tern_view q,
					 struct tern_view k, struct tern_view v, struct tern_view o,
					 struct tern_view lse, struct tern_view seg,
					 const struct tern_attn_args *a);
/* cpufast_layers.c */
enum tern_status tern_fast_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
				struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
enum tern_status tern_fast_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				  struct tern_view u, int64_t n, enum tern_act act);
enum tern_status tern_fast_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				      struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				      enum tern_act act);
/* Frees what the fast ops keep between calls (the RoPE table); called by destroy. */
void tern_fast_state_free(struct tern_backend *be);

enum tern_status tern_fast_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				   struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				   struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);

#endif
