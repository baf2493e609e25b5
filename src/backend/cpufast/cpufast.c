/* The fast CPU backend's vtable, device and sizes, and its GEMM (cpufast.h). */
#include "backend/cpufast/cpufast.h"

#include <stdio.h>
#include <stdlib.h>

#ifdef _OPENMP
#include <omp.h>
#endif

int tern_fast_threads(void)
{
#ifdef _OPENMP
	return omp_get_max_threads();
#else
	return 1;
#endif
}

/* ---- the GEMM ----------------------------------------------------------------------------- */

#ifdef TERN_HAVE_OPENBLAS
/* The CBLAS entry and OpenBLAS's thread control, declared here (the standard C ABI) so that the
 * build does not depend on which cblas.h the system's alternatives point at. */
enum { FAST_ROW_MAJOR = 101, FAST_NO_TRANS = 111, FAST_TRANS = 112 };
void cblas_sgemm(int order, int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		 const float *B, int ldb, float beta, float *C, int ldc);
void openblas_set_num_threads(int n);
char *openblas_get_config(void);

void tern_fast_gemm_init(void) { openblas_set_num_threads(1); }

const char *tern_fast_gemm_name(void) { return "OpenBLAS sgemm"; }

void tern_fast_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
		     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
	if (M <= 0 || N <= 0)
		return;
	if (K <= 0) { /* BLAS leaves C alone at K = 0 only when beta = 1; the contract says beta C */
		for (int64_t i = 0; i < M; i++)
			for (int64_t j = 0; j < N; j++)
				C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
		return;
	}
	/* each call's sizes fit int: tasks are bounded by the callers (a few MiB of operands) and
	 * leading dimensions by the tensors' widths */
	cblas_sgemm(FAST_ROW_MAJOR, ta ? FAST_TRANS : FAST_NO_TRANS, tb ? FAST_TRANS : FAST_NO_TRANS, (int)M,
		    (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}
#else
void tern_fast_gemm_init(void) {}

const char *tern_fast_gemm_name(void) { return "plain C"; }

/* A plain kernel for builds without OpenBLAS: rows of C accumulated over k with B's rows
 * contiguous (the compiler vectorises the inner loop). */
void tern_fast_sgemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
		     int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
	float *row = tern_malloc((size_t)(N > 0 ? N : 1) * sizeof(float));
	float *bt = NULL;
	if (tb && K > 0 && N > 0) /* B stored [N, K]: transpose once so rows of op(B) are contiguous */
		bt = tern_malloc((size_t)(K * N) * sizeof(float));
	for (int64_t i = 0; i < M; i++) {
		for (int64_t j = 0; j < N; j++)
			row[j] = 0.0f;
		for (int64_t k = 0; k < K; k++) {
			float a = ta ? A[k * lda + i] : A[i * lda + k];
			const float *b;
			if (tb) {
				if (i == 0)
					for (int64_t j = 0; j < N; j++)
						bt[k * N + j] = B[j * ldb + k];
				b = bt + k * N;
			} else {
				b = B + k * ldb;
			}
			for (int64_t j = 0; j < N; j++)
				row[j] += a * b[j];
		}
		for (int64_t j = 0; j < N; j++)
			C[i * ldc + j] = alpha * row[j] + (beta == 0.0f ? 0.0f : beta * C[i * ldc + j]);
	}
	free(bt);
	free(row);
}
#endif

/* ---- the backend -------------------------------------------------------------------------- */

static struct tern_backend_vtable fast_vtable;
static char fast_driver[128];

enum tern_status tern_cpu_devices(struct tern_device_info *out, int max, int *count)
{
	*count = 0;
	if (max < 1)
		return TERN_OK;
	snprintf(fast_driver, sizeof fast_driver, "tern fast CPU (%s, %s, %d threads)", tern_fast_gemm_name(),
		 tern_fast_simd_name(), tern_fast_threads());
	tern_cpu_describe(&out[0], "cpu", fast_driver);
	*count = 1;
	return TERN_OK;
}

static void fast_destroy(struct tern_backend *be)
{
	tern_fast_state_free(be);
	tern_ref_vtable.destroy(be);
}

enum tern_status tern_cpu_create(int device, struct tern_backend **out)
{
	tern_fast_gemm_init();
	fast_vtable = tern_ref_vtable;
	fast_vtable.matmul = tern_fast_matmul;
	fast_vtable.matmul_bwd = tern_fast_matmul_bwd;
	fast_vtable.gemm = tern_fast_gemm;
	fast_vtable.ce_loss = tern_fast_ce_loss;
	fast_vtable.attention = tern_fast_attention;
	fast_vtable.attention_bwd = tern_fast_attention_bwd;
	fast_vtable.rope = tern_fast_rope;
	fast_vtable.swiglu = tern_fast_swiglu;
	fast_vtable.swiglu_bwd = tern_fast_swiglu_bwd;
	fast_vtable.destroy = fast_destroy;
	snprintf(fast_driver, sizeof fast_driver, "tern fast CPU (%s, %s, %d threads)", tern_fast_gemm_name(),
		 tern_fast_simd_name(), tern_fast_threads());
	return tern_cpu_backend_new(&fast_vtable, "cpu", fast_driver, device, out);
}
