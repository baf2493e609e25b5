/* The CUDA backend's ops added after the base vtable (the kernels: cu_kernels_more.h):
 * cu_moe.c: the mixture-of-experts row ops, the router and the grouped matmul; cu_kv.c: attention
 * over a KV cache (generation); cu_bitnet.c: BitNet's activation quantization. Contracts in
 * backend.h; the front doors (ops.c) checked the arguments, these check what only this backend can
 * (tern_cu_view: views inside their buffers, alignment) and queue the kernels on the compute
 * stream. */
#ifndef TERN_CU_MORE_H
#define TERN_CU_MORE_H

#include "backend/cuda/cu.h"
#include "backend/cuda/cu_kernels_more.h"

/* cu_mm.c: the weight's parts as device addresses (checked views) for the decode kernels. */
enum tern_status tern_cu_weight_open(const char *op, const struct tern_weight *w, struct cuk_weight *kw);

/* cu_moe.c */
enum tern_status tern_cu_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view idx, int64_t n, int64_t Tx, int64_t D);
enum tern_status tern_cu_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					  struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					  int64_t D);
enum tern_status tern_cu_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				struct tern_view b, int64_t n, int64_t D);
enum tern_status tern_cu_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				    struct tern_view prob, struct tern_view counts, struct tern_view logits,
				    int64_t T, int64_t E, int64_t k, bool norm);
enum tern_status tern_cu_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					struct tern_view dw, struct tern_view prob, struct tern_view sel,
					int64_t T, int64_t E, int64_t k, bool norm);
enum tern_status tern_cu_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					const struct tern_experts *x, struct tern_view off, int64_t T,
					enum tern_dtype prec);
enum tern_status tern_cu_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					    const struct tern_experts *x, struct tern_view off, int64_t T,
					    bool accumulate, enum tern_dtype prec);

/* cu_kv.c */
enum tern_status tern_cu_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				      struct tern_view k, struct tern_view v,
				      const struct tern_attn_kv_args *a);

/* cu_bitnet.c */
enum tern_status tern_cu_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				    int64_t T, int64_t I);

/* cu_sample.c */
enum tern_status tern_cu_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				int64_t rows, int64_t n);

#endif
