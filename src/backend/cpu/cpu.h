/* The CPU reference backend: private pieces shared by cpu.c (buffers, registry entry) and
 * cpu_ops.c (the ops). Everything is plain fp32 C with fp64 accumulation for long sums; this
 * backend is the specification every other backend is tested against. */
#ifndef TERN_CPU_H
#define TERN_CPU_H

#include "backend/backend.h"

/* A host buffer. Kept under its own tag (not struct tern_buffer) so that each backend's private
 * layout has a distinct type; the vtable hands out struct tern_buffer pointers to these. */
struct cpu_buffer {
	size_t size;
	unsigned char *data;
	bool host; /* made by host_alloc: a copy_async source */
};

/* The backend: the interface plus the counters of the streaming entries. */
struct cpu_backend {
	struct tern_backend base;
	uint64_t used;    /* bytes of live (non-host) buffers, for memory_info */
	uint64_t marks;   /* the last mark handed out */
	uint64_t tickets; /* the last ticket handed out */
	/* the profile (backend.h): totals since the last reset, and when the open op began */
	struct tern_profile prof;
	double prof_t0;
	void *ext; /* what a backend built on this one keeps (the fast backend's RoPE table) */
};

static inline struct cpu_backend *cpu_be(struct tern_backend *be) { return (struct cpu_backend *)(void *)be; }

/* The reference's vtable (cpu.c): the fast backend (src/backend/fastcpu/) starts from a copy of
 * it, so both share buffers, streaming, the profile and every op it does not replace. */
extern const struct tern_backend_vtable tern_ref_vtable;
/* A CPU backend named `name` (its banner's driver line `driver`) with vtable vt on device 0:
 * the reference ("ref") and the fast backend ("cpu") are both made here. */
enum tern_status tern_cpu_backend_new(const struct tern_backend_vtable *vt, const char *name,
				      const char *driver, int device, struct tern_backend **out);
/* The machine as one device of backend `backend`. */
void tern_cpu_describe(struct tern_device_info *d, const char *backend, const char *driver);

static inline struct cpu_buffer *cpu_buf(struct tern_buffer *b) { return (struct cpu_buffer *)(void *)b; }

/* Loops over independent rows run in parallel under OpenMP. Spelled through _Pragma so that a
 * build without OpenMP sees no unknown pragma (which -Wall -Werror would reject). */
#ifdef _OPENMP
#define CPU_PARALLEL_FOR _Pragma("omp parallel for schedule(dynamic)")
#else
#define CPU_PARALLEL_FOR
#endif

/* The host address of view v, which holds `need` bytes (the ops' front doors checked that, the
 * buffer entries pass need = v.size), after checking what only this backend can: that it has a
 * buffer, lies inside it and starts at a multiple of `align` bytes. On failure the message ends
 * with the shape given by fmt, e.g. "matmul: x view offset 2 is not a multiple of 4 bytes (T=2
 * I=16 f32)". */
enum tern_status tern_cpu_view(const char *op, const char *what, struct tern_view v, size_t need,
			       size_t align, void **out, const char *fmt, ...) TERN_PRINTF(7, 8);

/* A weight opened for reading: host addresses of its parts, and for NF4_DQ the block scales
 * reconstructed once per op (tern_nf4_nested_absmax) instead of once per element. */
struct cpu_weight {
	const struct tern_weight *w;
	const unsigned char *data;
	const float *absmax; /* NF4, NF4_DQ: f32 [nb] */
	float *absmax_owned; /* NF4_DQ: what absmax points to */
};

enum tern_status tern_cpu_weight_open(const char *op, const struct tern_weight *w, struct cpu_weight *cw);
void tern_cpu_weight_close(struct cpu_weight *cw);
/* out[n] = W[o, i0 .. i0+n) dequantized to fp32 (layouts: quant.h). */
void tern_cpu_weight_row(const struct cpu_weight *cw, int64_t o, int64_t i0, int64_t n, float *out);
/* The operand of a product at precision prec (backend.h, matmul): x itself for F32, else a copy
 * of x · s rounded to prec (*copy, freed by the caller) with *inv_s = 1/s (s = 1 for BF16). */
enum tern_status tern_cpu_prec_operand(enum tern_dtype prec, const float *x, int64_t n, const float **out,
				       float **copy, float *inv_s);
/* row[n] rounded to prec in place (nothing for F32). */
void tern_cpu_prec_round_row(enum tern_dtype prec, float *row, int64_t n);

/* The ops (cpu_ops.c); signatures and =/+= rules as in struct tern_backend_vtable. Called
 * through the front doors (src/backend/ops.c), so shapes, counts, scalars, dtypes and view sizes
 * are already checked. */
enum tern_status tern_cpu_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				 const struct tern_weight *w, int64_t T, enum tern_dtype prec);
enum tern_status tern_cpu_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     const struct tern_weight *w, int64_t T, bool accumulate,
				     enum tern_dtype prec);
enum tern_status tern_cpu_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			       struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
			       float alpha, float beta, enum tern_dtype prec);
enum tern_status tern_cpu_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				  float p, uint64_t key);
enum tern_status tern_cpu_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			       float alpha);
enum tern_status tern_cpu_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
				struct tern_view m, struct tern_view v, int64_t n,
				const struct tern_adamw_args *args);
enum tern_status tern_cpu_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
				bool accumulate);
enum tern_status tern_cpu_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha);
enum tern_status tern_cpu_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			       float max_norm);
enum tern_status tern_cpu_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			       struct tern_view src, enum tern_dtype st, int64_t n);

/* cpu_ops.c: the grouped matmul of the experts (contract in backend.h) */
enum tern_status tern_cpu_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					 const struct tern_experts *x, struct tern_view off, int64_t T,
					 enum tern_dtype prec);
enum tern_status tern_cpu_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx,
					     struct tern_view dy, const struct tern_experts *x,
					     struct tern_view off, int64_t T, bool accumulate,
					     enum tern_dtype prec);

/* cpu_loss.c: the fused lm_head + cross-entropy */
enum tern_status tern_cpu_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				  struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				  struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);

/* The per-layer transformer ops (cpu_layers.c): rmsnorm, rope, swiglu, embed. */
enum tern_status tern_cpu_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				  struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps);
enum tern_status tern_cpu_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      struct tern_view x, struct tern_view w, struct tern_view rstd,
				      int64_t T, int64_t D, bool accumulate);
enum tern_status tern_cpu_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			       struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
enum tern_status tern_cpu_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				 struct tern_view u, int64_t n, enum tern_act act);
enum tern_status tern_cpu_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				     struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				     enum tern_act act);
enum tern_status tern_cpu_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
				const struct tern_weight *E, int64_t T);
enum tern_status tern_cpu_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				    struct tern_view ids, int64_t T, int64_t V, int64_t D);

/* cpu_attention_kv.c */
enum tern_status tern_cpu_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				       struct tern_view k, struct tern_view v,
				       const struct tern_attn_kv_args *a);

/* cpu_moe.c: the mixture-of-experts row ops */
enum tern_status tern_cpu_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				      struct tern_view idx, int64_t n, int64_t Tx, int64_t D);
enum tern_status tern_cpu_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					   struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					   int64_t D);
enum tern_status tern_cpu_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				 struct tern_view b, int64_t n, int64_t D);
/* cpu_bitnet.c: BitNet's per-token 8-bit activation fake-quantization */
/* argmax (backend.h), cpu_argmax.c */
enum tern_status tern_cpu_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				 int64_t rows, int64_t n);
enum tern_status tern_cpu_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     int64_t T, int64_t I);
enum tern_status tern_cpu_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				     struct tern_view prob, struct tern_view counts, struct tern_view logits,
				     int64_t T, int64_t E, int64_t k, bool norm);
enum tern_status tern_cpu_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					 struct tern_view dw, struct tern_view prob, struct tern_view sel,
					 int64_t T, int64_t E, int64_t k, bool norm);

/* cpu_attention.c */
enum tern_status tern_cpu_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				    struct tern_view q, struct tern_view k, struct tern_view v,
				    struct tern_view seg, const struct tern_attn_args *a);
enum tern_status tern_cpu_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
					struct tern_view dv, struct tern_view dout, struct tern_view q,
					struct tern_view k, struct tern_view v, struct tern_view o,
					struct tern_view lse, struct tern_view seg,
					const struct tern_attn_args *a);

#endif
