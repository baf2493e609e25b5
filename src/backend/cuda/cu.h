/* The CUDA backend: private pieces shared by the C glue (cu_device.c: device, buffers,
 * streaming, profile, vtable; cu_ops.c: elementwise, layer and attention ops; cu_mm.c: the
 * products through cuBLAS and the fused loss). The kernels are in k_*.cu (cu_kernels.h).
 *
 * Streams: every op, upload, download and zero runs on one compute stream in call order; copy_async
 * runs on a second (copy) stream, ordered against compute with events (backend.h "streaming").
 * With CUDA graphs on (cu_graph.h) the compute stream's launches are captured and replayed as
 * graphs: anything that meets the world outside the stream calls tern_cu_flush first.
 * Scratch: one device buffer the ops share (decoded weights, half-precision operands, logits),
 * grown on demand and used only by work queued on the compute stream, so reuse is ordered. */
#ifndef TERN_CU_H
#define TERN_CU_H

#include "backend/backend.h"
#include "backend/cuda/cu_graph.h"
#include "backend/cuda/cu_kernels.h"

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

/* Events kept for marks and tickets: mark m and ticket t live in slot m (t) % CU_RING. A slot
 * reused by a later mark (ticket) is a later point of the same stream, so waiting on it is
 * waiting for at least as much: always correct, only later. */
#define CU_RING 256

/* Bytes of decoded weight one product step takes (the weight is decoded in chunks of rows or
 * columns of at most this many bytes), and of the half-precision copy of its activations (token
 * chunks: 64 MiB hold a whole micro-batch of 2048 tokens at 14336 columns, so it is rounded once).
 * TERN_CUDA_DECODE_BYTES / TERN_CUDA_OPERAND_BYTES lower them (the tests' chunked paths). */
#define CU_DECODE_BYTES ((size_t)32 << 20)
#define CU_OPERAND_BYTES ((size_t)64 << 20)
/* Logits of one ce_loss token chunk, and the device bytes the backend keeps besides the
 * buffers callers allocate and the scratch above (the 32 MiB cuBLAS workspace, ce_loss's
 * per-token terms, constants, allocation rounding). The scratch is one buffer: it grows to the
 * largest of the products', attention's and ce_loss's needs (tern_cuda_sizes_for). */
#define CU_CE_CHUNK_BYTES ((int64_t)64 << 20)
#define CU_CE_CHUNK_MAX ((int64_t)256 << 20) /* the chunk's logits at most (large micro-batches) */
#define CU_CE_TOKEN_TILE 128
#define CU_RESERVE ((uint64_t)64 << 20)

struct cu_buffer {
	size_t size;
	void *ptr; /* device memory, or pinned host memory when host */
	bool host; /* made by host_alloc: a copy_async source */
};

static inline struct cu_buffer *cu_buf(struct tern_buffer *b) { return (struct cu_buffer *)(void *)b; }

/* One profiled op: events around it and its kind. */
struct cu_prof_rec {
	cudaEvent_t a, b;
	enum tern_prof_kind kind;
	int op; /* enum tern_op of the bracket; -1 for a copy outside any op */
};

struct cu_backend {
	struct tern_backend base;
	int dev;
	int cc_major, cc_minor;
	int sms;         /* streaming multiprocessors */
	cudaStream_t s;  /* compute */
	cudaStream_t cs; /* copies (copy_async) */
	cublasHandle_t blas;
	void *blas_ws; /* cuBLAS workspace (set on the handle) */
	uint64_t used; /* bytes of live device buffers (and the scratch), for memory_info */

	uint64_t marks, tickets; /* the last mark and ticket handed out */
	uint64_t ops;            /* launches since create: a mark is new only when it moved */
	uint64_t ops_at_mark;
	cudaEvent_t mark_ev[CU_RING], ticket_ev[CU_RING];

	/* the shared scratch (see above) and the small device scalars of the products */
	void *scratch;
	size_t scratch_size;
	float *consts;      /* [0] the inverse input scale of the last f16 product, [1] 0, [2] 1 */
	uint32_t *absmax;   /* [1]: the max |x| bits of the last f16 operand */
	double *sumsq_part; /* [CUK_SUMSQ_PARTS]: sumsq's partial sums */
	unsigned *kv_count; /* [CUK_KV_BLOCKS]: attention_kv's parts per row (zeros between launches) */
	double *term;       /* ce_loss: [term_n] per-token loss terms */
	int64_t term_n;

	/* the profile: records of the ops since the last read */
	struct cu_prof_rec *prof;
	int prof_n, prof_cap, prof_open; /* prof_open: index of the open record, -1 none */
	struct tern_profile totals;

	struct cu_graphs graph; /* cu_graph.h */
};

static inline struct cu_backend *cu_be(struct tern_backend *be) { return (struct cu_backend *)(void *)be; }

/* Fails with "cuda: <what>: <the CUDA error string>" (TERN_E_DEVICE; TERN_E_DEVICE_MEM for out of
 * memory). TERN_OK for cudaSuccess. */
enum tern_status tern_cu_check(cudaError_t e, const char *what);
enum tern_status tern_cu_check_blas(cublasStatus_t e, const char *what);

/* The device address of view v, which holds `need` bytes, after checking what only this backend
 * can: that it has a device buffer, lies inside it and starts at a multiple of `align` bytes. On
 * failure the message ends with the shape given by fmt (as tern_cpu_view). */
enum tern_status tern_cu_view(const char *op, const char *what, struct tern_view v, size_t need, size_t align,
			      void **out, const char *fmt, ...) TERN_PRINTF(7, 8);

/* The compute stream, counting one more queued op (mark() returns a new mark after it); with
 * graphs on, the launches that follow are captured (cu_graph.h). */
cudaStream_t tern_cu_stream(struct cu_backend *c);
/* A scratch of at least size bytes (the shared one, grown: waits for queued work first). */
enum tern_status tern_cu_scratch(struct cu_backend *c, size_t size, void **out);
/* term[] of at least n doubles */
enum tern_status tern_cu_terms(struct cu_backend *c, int64_t n, double **out);

/* cu_ops.c */
enum tern_status tern_cu_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				 float p, uint64_t key);
enum tern_status tern_cu_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			      float alpha);
enum tern_status tern_cu_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
			       struct tern_view m, struct tern_view v, int64_t n,
			       const struct tern_adamw_args *args);
enum tern_status tern_cu_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
			       bool accumulate);
enum tern_status tern_cu_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha);
enum tern_status tern_cu_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			      float max_norm);
enum tern_status tern_cu_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			      struct tern_view src, enum tern_dtype st, int64_t n);
enum tern_status tern_cu_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				 struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps);
enum tern_status tern_cu_add_rmsnorm(struct tern_backend *be, struct tern_view h, struct tern_view y,
				     struct tern_view rstd, struct tern_view x, struct tern_view w, int64_t T,
				     int64_t D, float eps);
enum tern_status tern_cu_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				     int64_t D, bool accumulate);
enum tern_status tern_cu_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			      struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
enum tern_status tern_cu_rope2(struct tern_backend *be, struct tern_view x, int64_t H, struct tern_view x2,
			       int64_t H2, struct tern_view pos, struct tern_view inv_freq, int64_t T,
			       int64_t Dh, bool inverse);
enum tern_status tern_cu_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				struct tern_view u, int64_t n, enum tern_act act);
enum tern_status tern_cu_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				    struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				    enum tern_act act);
enum tern_status tern_cu_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			       const struct tern_weight *E, int64_t T);
enum tern_status tern_cu_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				   struct tern_view ids, int64_t T, int64_t V, int64_t D);
enum tern_status tern_cu_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				   struct tern_view q, struct tern_view k, struct tern_view v,
				   struct tern_view seg, const struct tern_attn_args *a);
enum tern_status tern_cu_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				       struct tern_view dv, struct tern_view dout, struct tern_view q,
				       struct tern_view k, struct tern_view v, struct tern_view o,
				       struct tern_view lse, struct tern_view seg,
				       const struct tern_attn_args *a);

/* cu_mm.c */
enum tern_status tern_cu_matmul_multi(struct tern_backend *be, const struct tern_view *y, struct tern_view x,
				      const struct tern_weight *const *w, const struct tern_lora_term *lt,
				      int n, int64_t T, enum tern_dtype prec);
enum tern_status tern_cu_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				const struct tern_weight *w, int64_t T, enum tern_dtype prec);
enum tern_status tern_cu_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				    const struct tern_weight *w, int64_t T, bool accumulate,
				    enum tern_dtype prec);
enum tern_status tern_cu_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			      struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
			      float alpha, float beta, enum tern_dtype prec);
enum tern_status tern_cu_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				 struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				 struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);
/* ce_loss's tokens per chunk for T tokens, vocabulary V and hidden size D (TERN_CE_CHUNK=N sets it). */
int64_t tern_cu_ce_chunk(int64_t T, int64_t V, int64_t D);
/* cu_mm.c's GEMM (C col-major m×n = alpha · op(A) · op(B) + beta · C, operands of type ab, fp32
 * accumulation; alpha/beta device pointers when dev) and its scratch budgets, for cu_lora.c. */
enum tern_status tern_cu_gemm_ex(struct cu_backend *c, const char *op, bool ta, bool tb, int64_t m, int64_t n,
				 int64_t k, const void *alpha, const void *A, int64_t lda, const void *B,
				 int64_t ldb, const void *beta, float *C, int64_t ldc, cudaDataType ab,
				 bool dev);
void tern_cu_mm_budget(size_t *decode_bytes, size_t *operand_bytes);
/* The part size that splits total into the fewest parts of at most most, as even as align
 * (a power of two) allows: 4096 rows under a 4080-row budget are two parts of 2048, not 4080 + 16
 * (a last product of 16 rows ran at a fraction of the first one's rate). total when most >= total;
 * most when most < align. */
int64_t tern_cu_split(int64_t total, int64_t most, int64_t align);

/* cu_lora.c: the LoRA linear's products with the rank-R updates inside (backend.h matmul_lora) */
bool tern_cu_lora_fuses(struct tern_backend *be, const struct tern_weight *w, int64_t R, int64_t T,
			enum tern_dtype prec);
enum tern_status tern_cu_matmul_lora(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view u, struct tern_view B, const struct tern_weight *w,
				     int64_t R, float scale, int64_t T, enum tern_dtype prec);
enum tern_status tern_cu_matmul_lora_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					 struct tern_view du, struct tern_view A, const struct tern_weight *w,
					 int64_t R, int64_t T, bool accumulate, enum tern_dtype prec);

#endif
