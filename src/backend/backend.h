/* The backend interface: a small vtable of buffer functions and ops.
 *
 * A backend owns device buffers and runs ops on byte ranges of them (views). Ops are queued in
 * call order and may run asynchronously; tern_backend.synchronize() waits for all of them;
 * download() waits for pending work before it reads; upload() is ordered after queued ops.
 *
 * Shapes use the letters of DESIGN.md: T tokens, I in features, O out features, R LoRA rank.
 * All matrices are row-major, ne[0] fastest: x [T, I] means T rows of I floats.
 * Every op says whether it writes its output (=) or accumulates into it (+=).
 *
 * Activations, LoRA parameters, gradients and optimizer moments are fp32. Frozen weights come in
 * the formats of struct tern_weight (layouts in src/quant/quant.h). */
#ifndef TERN_BACKEND_H
#define TERN_BACKEND_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tern_dtype {
	TERN_F32,
	TERN_F16,
	TERN_BF16,
	TERN_NF4,     /* bitsandbytes NF4, fp32 absmax */
	TERN_NF4_DQ,  /* bitsandbytes NF4 with double quantization (u8 absmax + nested) */
	TERN_TERNARY, /* 2-bit ternary, one scale per matrix */
	TERN_DTYPE_COUNT
};

const char *tern_dtype_name(enum tern_dtype dt);
/* Bytes per element of the plain types (F32/F16/BF16), 0 for block formats. */
size_t tern_dtype_size(enum tern_dtype dt);

enum tern_op {
	TERN_OP_MATMUL,     /* y = x Wᵀ */
	TERN_OP_MATMUL_BWD, /* dx (+)= dy W */
	TERN_OP_GEMM,       /* C = alpha op(A) op(B) + beta C */
	TERN_OP_DROPOUT,
	TERN_OP_AXPY,
	TERN_OP_ADAMW,
	TERN_OP_SUMSQ,
	TERN_OP_SCALE,
	TERN_OP_CLIP,
	TERN_OP_CAST,
	TERN_OP_RMSNORM,
	TERN_OP_RMSNORM_BWD,
	TERN_OP_ROPE,
	TERN_OP_SWIGLU,
	TERN_OP_SWIGLU_BWD,
	TERN_OP_EMBED,
	TERN_OP_ATTENTION,
	TERN_OP_ATTENTION_BWD,
	TERN_OP_CE_LOSS,
	TERN_OP_EMBED_BWD,
	TERN_OP_ATTENTION_KV,
	TERN_OP_GATHER_ROWS,        /* mixture of experts: tokens grouped by expert */
	TERN_OP_SCATTER_ADD_ROWS,   /* the weighted combine back into token order */
	TERN_OP_ROWDOT,             /* per-row dot products (the routing weights' gradient) */
	TERN_OP_ROUTE_TOPK,         /* router softmax -> top-k -> weights, per-expert counts */
	TERN_OP_ROUTE_TOPK_BWD,     /* its backward into the router logits */
	TERN_OP_MATMUL_GROUPED,     /* per-expert matmuls over contiguous row groups, one op */
	TERN_OP_MATMUL_GROUPED_BWD, /* and their input gradient */
	TERN_OP_ACT_QUANT8,         /* BitNet's per-token 8-bit activation fake-quantization */
	TERN_OP_ARGMAX,             /* per-row index of the largest value (greedy decoding) */
	TERN_OP_MATMUL_LORA,        /* optional: matmul with the LoRA update in its product */
	TERN_OP_MATMUL_LORA_BWD,    /* optional: its input gradient */
	TERN_OP_ADD_RMSNORM,        /* optional: h += x, then rmsnorm of h */
	TERN_OP_COUNT
};
const char *tern_op_name(enum tern_op op);

struct tern_buffer; /* backend-private */

/* A byte range of a buffer. Views handed to ops must lie inside their buffer. */
struct tern_view {
	struct tern_buffer *buf;
	size_t off;
	size_t size;
};

static inline struct tern_view tern_view_sub(struct tern_view v, size_t off, size_t size)
{
	struct tern_view s = {v.buf, v.off + off, size};
	return s;
}

/* A frozen weight W [O, I].
 *   F32/F16/BF16: data = O*I elements, row-major.
 *   NF4:     data = ceil(O*I/2) bytes of packed codes; absmax = f32 [nb], nb = ceil(O*I/blocksize).
 *   NF4_DQ:  data as NF4; absmax = u8 [nb] (dynamic-map codes); nested = f32 [ceil(nb/256)];
 *            offset = the nested offset.
 *   TERNARY: data = O * ceil(I/16) u32 words; scale = per-matrix scale.
 * Views of byte sizes that are not a multiple of 4 are read as if zero-padded to one. */
struct tern_weight {
	enum tern_dtype dtype;
	int64_t O, I;
	struct tern_view data;
	struct tern_view absmax;
	struct tern_view nested;
	int blocksize;
	float offset;
	float scale;
};

/* The rank-R term of one product of matmul_multi: y += scale · u[T,R] · B[O,R]ᵀ inside the
 * product, as matmul_lora adds it (u, B fp32); R = 0: none (u and B not read). */
struct tern_lora_term {
	struct tern_view u, B;
	int64_t R;
	float scale;
};

/* The E experts of one projection for the grouped matmul: E weights [O, I] of w's dtype and
 * blocksize, uniformly strided part by part. Expert 0 is w itself; expert e's data, absmax and
 * nested are w's views moved e·stride[0], e·stride[1], e·stride[2] bytes on in the same buffers,
 * of the same sizes. So the layouts experts come in are described without a copy: the pack's
 * (each expert's tensor after the previous one's: one stride for all parts) and a fused
 * parameter quantized as one tensor (a part's experts back to back), where its quantization
 * blocks do not straddle experts. Strides are multiples of 4 bytes (0: the experts share the
 * bytes). NF4_DQ: expert e's nested offset is offsets[e] (f32 [E] on the device; w.offset is not
 * read), as each expert quantized on its own has its own; other dtypes do not read offsets (a
 * view of size 0 will do). 1 <= E <= 2^31 - 1; TERNARY is refused (one scale per matrix). */
struct tern_experts {
	struct tern_weight w;
	int64_t E;
	uint64_t stride[3];
	struct tern_view offsets;
};

/* Expert e's weight (views moved; offset left as x->w.offset: the caller reads offsets[e]). */
void tern_experts_at(const struct tern_experts *x, int64_t e, struct tern_weight *out);

struct tern_adamw_args {
	double lr, beta1, beta2, eps, weight_decay; /* as PyTorch holds them (Python floats) */
	int64_t step; /* 1-based step count after this update (bias correction uses it) */
};

/* The MLP activation of swiglu: SwiGLU (Llama, Mistral, Qwen) or ReLU² (BitNet). */
enum tern_act { TERN_ACT_SILU, TERN_ACT_RELU2 };

/* Attention masking for one micro-batch of T token rows (B packed rows of S, flattened).
 * Query i sees key j when j <= i, seg[j] == seg[i] (same sample: positions restart, no
 * attention across samples or rows) and, with window > 0, i - j < window. */
struct tern_attn_args {
	int64_t T, H, Hkv, Dh;
	int64_t window; /* sliding window in tokens; 0: none */
	float scale;    /* usually 1 / sqrt(Dh) */
	/* TERN_F16 lets a backend round q, k, v, the probabilities P, dO (scaled by a power of
	 * two) and dS to f16, with the softmax, lse and every sum in fp32; TERN_BF16 likewise to
	 * bf16 (no scaling); TERN_F32 (0) computes in fp32. A backend without a half-precision
	 * attention computes in fp32 at any prec (ref, cpu; Vulkan at BF16; CUDA at F16). */
	enum tern_dtype prec;
	/* The (query, key) pairs the masks leave, for the profiler's FLOP count only (packed samples
	 * and micro-batches of several rows are segments: a fraction of T·(T+1)/2); 0: T·(T+1)/2. */
	double pairs;
};

/* Attention of Tq new queries against a KV cache (generation, src/train/gen.c). The cache holds
 * the keys and values of tokens 0 .. Tk-1 of one sequence, the Tq new ones last: query i is token
 * p0 + i with p0 = Tk - Tq, and sees key j when j <= p0 + i and, with window > 0,
 * p0 + i - j < window. No segments (one sample), no lse (nothing goes backward). */
struct tern_attn_kv_args {
	int64_t Tq, Tk, H, Hkv, Dh;
	int64_t window; /* sliding window in tokens; 0: none */
	float scale;    /* usually 1 / sqrt(Dh) */
};

/* What the profile sorts device time into (tern_backend_profile): the front door of each op names
 * its kind, and an op run inside another op counts as the outer op's kind. */
enum tern_prof_kind {
	TERN_PROF_MATMUL_FWD,  /* matmul, matmul_grouped */
	TERN_PROF_MATMUL_BWD,  /* matmul_bwd, matmul_grouped_bwd */
	TERN_PROF_LORA,        /* gemm (the LoRA products, and the bias products) */
	TERN_PROF_ATTENTION,   /* attention, attention_bwd */
	TERN_PROF_LOSS,        /* ce_loss, with the products it runs inside */
	TERN_PROF_ELEMENTWISE, /* rmsnorm(_bwd), rope, swiglu(_bwd), embed(_bwd), axpy, dropout, cast,
				* scale, gather_rows, scatter_add_rows, rowdot, route_topk(_bwd) */
	TERN_PROF_OPTIMIZER,   /* adamw, sumsq, clip */
	TERN_PROF_COPIES,      /* upload, download, zero, copy_async where the device timeline shows them */
	TERN_PROF_KIND_COUNT
};
/* "matmul fwd", ..., for the profile line; tern_prof_kind_key: "matmul_fwd", ..., for field names. */
const char *tern_prof_kind_name(enum tern_prof_kind k);
const char *tern_prof_kind_key(enum tern_prof_kind k);

/* Totals per kind since the last reset: device time in ns and the ops' nominal FLOPs (2 per
 * multiply-add, counted once per front-door call; 0 for kinds without products); and the same
 * time split by the op the outermost front door ran (op_ns sums to ns less the copies) with the
 * number of those calls. */
struct tern_profile {
	double ns[TERN_PROF_KIND_COUNT];
	double flops[TERN_PROF_KIND_COUNT];
	double op_ns[TERN_OP_COUNT];
	uint64_t op_calls[TERN_OP_COUNT];
};
/* The op split of a profile as one line, longest first: "name T ms xN | ..." with T and N divided
 * by per (steps: per-step figures; 1 for totals). Truncated to cap (NUL-terminated, cap > 0). */
void tern_profile_ops_line(const struct tern_profile *p, double per, char *buf, size_t cap);
/* Whether TERN_PROFILE in the environment asks for the profile (set, not empty, not "0"): training's
 * profile lines and generation's decode profile. */
bool tern_profile_env(void);

struct tern_backend;

/* Largest element count of any tensor an op takes (2^40): keeps every byte count far inside
 * size_t and int64. */
#define TERN_MAX_ELEMS (INT64_C(1) << 40)

/* The entries below are a backend's side of the contract. Callers do not call the op entries
 * directly: they call the front doors declared after struct tern_backend (tern_matmul(be, ...),
 * ..., src/backend/ops.c), which check, once for every backend, everything the contract states
 * (view sizes against the shapes, the weight, counts <= TERN_MAX_ELEMS and the other ranges of
 * sizes and scalars, the dtypes an op takes) and fail with one line naming the op, the tensor and
 * the shape. An op entry may therefore assume checked arguments; it checks only what is its own:
 * that a view lies inside its buffer, alignment, device limits, and data only it can read
 * (embed's ids, ce_loss's labels, the MoE ops' idx, sel and off). A NULL op entry makes the front
 * door fail with TERN_E_UNSUPPORTED. */
struct tern_backend_vtable {
	/* ---- buffers ---- */
	enum tern_status (*buffer_alloc)(struct tern_backend *be, size_t size, struct tern_buffer **out);
	void (*buffer_free)(struct tern_backend *be, struct tern_buffer *buf);
	enum tern_status (*upload)(struct tern_backend *be, struct tern_view dst, const void *src);
	enum tern_status (*download)(struct tern_backend *be, void *dst, struct tern_view src);
	/* dst bytes = 0 */
	enum tern_status (*zero)(struct tern_backend *be, struct tern_view dst);
	enum tern_status (*synchronize)(struct tern_backend *be);
	void (*destroy)(struct tern_backend *be);

	/* Whether op runs here with weight dtype wt (ignored by ops without a weight). */
	bool (*supports)(struct tern_backend *be, enum tern_op op, enum tern_dtype wt);
	/* Whether matmul / matmul_bwd (op) run here at product precision prec (F32, F16 or BF16;
	 * see matmul). NULL means F32 only. Callers ask tern_backend_supports_prec(). */
	bool (*supports_prec)(struct tern_backend *be, enum tern_op op, enum tern_dtype prec);
	/* Whether shader variant `variant`, which the environment can force for tests and benchmarks
	 * (Vulkan: TERN_VK_MM16=coopmat|regs), runs on this device. NULL: the backend has none.
	 * Callers ask tern_backend_variant_ok(). */
	bool (*has_variant)(struct tern_backend *be, const char *variant);
	/* The product precision `compute_dtype: auto` picks: the fastest this device runs with fp32
	 * accumulation (NULL: F32). Callers ask tern_backend_auto_prec(). */
	enum tern_dtype (*auto_prec)(struct tern_backend *be);

	/* ---- streaming: asynchronous copies between host and device (layer weights through device
	 * slots, host -> device; offloaded checkpoints, the layer inputs out to the host and back) ----
	 *
	 * Two counters order copies against ops. A mark is a point in the op stream (every op queued
	 * before it); marks never decrease. A ticket is one copy; tickets start at 1 and increase
	 * with every copy. 0 means "none" where a mark or ticket is taken. Ordering rules:
	 *  - copy_async(dst, src, after) writes dst only once every op queued before mark `after`
	 *    has finished (so it may overwrite a slot those ops read); it is NOT ordered after ops
	 *    queued after that mark, nor after other copies (copies may overlap each other and
	 *    later ops: a copy's dst must not be read or written by anything until it is waited for).
	 *  - Ops see the copied bytes only when queued after wait_ticket(ticket): waiting is on the
	 *    device; the host returns at once. Ops queued before the wait_ticket call do not wait.
	 *  - src (a host_alloc view) may be rewritten by the host only after ticket_wait_host(ticket)
	 *    (or synchronize()) has returned.
	 *  - Device -> host (src a device view, dst a host_alloc view): the copy reads src only once
	 *    every op queued before mark `after` has finished (so it sees what they wrote); ops that
	 *    write src again must be queued after wait_ticket(ticket); the host may read dst, and a
	 *    later copy may take dst as its src, only after ticket_wait_host(ticket) has returned
	 *    (copies are not ordered against each other).
	 *  - synchronize(), download(), upload() and buffer_free() also wait for every copy issued
	 *    so far (they may then read or reuse any buffer).
	 * Views: one a device buffer view, the other a view of a host_alloc buffer (either
	 * direction), equal nonzero sizes; anything else fails with TERN_E_INVALID and one line. A
	 * backend without asynchronous
	 * transfers (CPU; Vulkan without timeline semaphores) performs the copy at once, in order,
	 * and reports tickets as complete: the same rules then hold trivially. wait_ticket and
	 * ticket_wait_host take 0 (nothing to wait for) or an issued ticket; a larger value, or an
	 * `after` larger than the last mark, fails with TERN_E_INVALID. */

	/* A host buffer of size bytes (> 0) the backend copies from directly; *ptr is its host
	 * mapping, valid until buffer_free (Vulkan: HOST_VISIBLE|HOST_COHERENT memory, mapped,
	 * preferably not device-local). Contents start at zero. Only copy_async's src and
	 * buffer_free take it; it does not count in memory_info's usage. */
	enum tern_status (*host_alloc)(struct tern_backend *be, size_t size, struct tern_buffer **out,
				       void **ptr);
	/* *mark = a mark for every op queued so far (submitting recorded work if needed, without
	 * waiting for it). The same value when no op was queued since the last mark. */
	enum tern_status (*mark)(struct tern_backend *be, uint64_t *mark);
	/* dst bytes = src bytes, after the ops up to mark `after` (0: none) have finished; host ->
	 * device or device -> host (one view of each kind); on the transfer queue when the device
	 * has a separate one; never waits on the host for the copy (it may wait for a copy issued
	 * long before, to reuse its command buffer).
	 * *ticket = the copy's ticket. `after` must be 0 or a value mark() returned. */
	enum tern_status (*copy_async)(struct tern_backend *be, struct tern_view dst, struct tern_view src,
				       uint64_t after, uint64_t *ticket);
	/* Ops queued after this call wait (on the device) for copy `ticket` (and every earlier
	 * ticket) to finish and see its bytes. Returns at once. */
	enum tern_status (*wait_ticket)(struct tern_backend *be, uint64_t ticket);
	/* The host waits until copy `ticket` (and every earlier ticket) has finished. */
	enum tern_status (*ticket_wait_host)(struct tern_backend *be, uint64_t ticket);
	/* Device memory this process may use in all (*budget, including what it uses) and uses now
	 * (*usage), in bytes, for the heap tern's device buffers live in. Vulkan: the driver's
	 * VK_EXT_memory_budget figures where present (usage less the free space inside tern's own
	 * memory blocks, which tern reuses), else the heap size and the bytes of tern's live device
	 * buffers. CPU: MemAvailable (/proc/meminfo) + usage, and the bytes of live buffers. */
	enum tern_status (*memory_info)(struct tern_backend *be, uint64_t *budget, uint64_t *usage);

	/* ---- profiling (tern_backend_profile); profile_op and profile_read NULL: cannot profile ----
	 *
	 * While be->profiling is set, every front door brackets its op entry with
	 * profile_op(kind, flops, true) before and profile_op(kind, 0, false) after; only the outermost
	 * front door does (be->profile_depth), so an op that runs others through their front doors is
	 * timed as one op of its own kind. A backend times what runs between the two calls as `kind`
	 * (the CPU: host time, the ops being synchronous; Vulkan: the timestamps of the dispatches
	 * recorded in between) and adds flops to the kind once. be->profile_op names the op of the
	 * bracket (the front door sets it before the opening call): the backend adds the same time to
	 * op_ns[that op] and counts the call in op_calls. Work outside any op (upload, download,
	 * zero, copy_async) counts as TERN_PROF_COPIES where the backend can time it. */

	/* Prepares for profiling (on) or stops it; called by tern_backend_profile, which sets
	 * be->profiling after it succeeds. May wait for queued work. NULL: nothing to prepare. */
	enum tern_status (*profile_set)(struct tern_backend *be, bool on);
	void (*profile_op)(struct tern_backend *be, enum tern_prof_kind kind, double flops, bool begin);
	/* Waits for every queued op, then *out = the totals since the last reset (zero them when
	 * reset). */
	enum tern_status (*profile_read)(struct tern_backend *be, struct tern_profile *out, bool reset);

	/* ---- ops: outputs, inputs, sizes ---- */

	/* y[T,O] = x[T,I] · W[O,I]ᵀ   (=), W dequantized.
	 *
	 * Precision of the product (prec): the dtype its operands are rounded to before they are
	 * multiplied; products are accumulated in fp32, x/dy and y/dx stay fp32 in memory.
	 *   TERN_F32:  no rounding (the reference numerics, today's behaviour).
	 *   TERN_F16:  x (dy for matmul_bwd) is multiplied by s = 2^(14 - e), e the binary exponent
	 *              of max|x| over the whole input (s = 1 when that maximum is 0 or not finite),
	 *              rounded to f16 (nearest even), W's dequantized values are rounded to f16, and
	 *              the fp32 sum is multiplied by 1/s (powers of two: exact), so no finite input
	 *              overflows or underflows. A backend may take s for each row of x instead (s_t
	 *              from row t's maximum, row t's sums times 1/s_t; Vulkan's products past
	 *              decoding do, in one pass over x): a power of two commutes with rounding, so the
	 *              two agree except on elements whose x s falls below f16's normal range (2^-14,
	 *              28 binades under the input's largest |x|), which a row's own scale may keep
	 *              with more bits.
	 *   TERN_BF16: x and W rounded to bf16, no scale.
	 * (The CPU reference accumulates its F32 products in double, which is at least fp32.) Only
	 * the precisions supports_prec accepts reach the entry; the front door refuses the others
	 * with TERN_E_UNSUPPORTED. */
	enum tern_status (*matmul)(struct tern_backend *be, struct tern_view y, struct tern_view x,
				   const struct tern_weight *w, int64_t T, enum tern_dtype prec);
	/* y[i][T,O_i] = x[T,I] · W_i[O_i,I]ᵀ for i < n (1 <= n <= TERN_MATMUL_MULTI), every W_i of
	 * x's I: each y[i] exactly as matmul(y[i], x, w[i], T, prec) gives it (bits included); a
	 * backend only merges the work (CUDA: a decode step's q, k and v products in one launch;
	 * Vulkan: x's scale and f16 copy made once). With lt (NULL: none) and lt[i].R > 0, y[i]
	 * exactly as matmul_lora(y[i], x, lt[i].u, lt[i].B, w[i], lt[i].R, lt[i].scale, T, prec)
	 * gives it (the front door has checked each such term as matmul_lora does, lora_fuses
	 * included). The y[i] overlap neither x nor each other. Optional (NULL: the front door runs
	 * matmul or matmul_lora n times). */
	enum tern_status (*matmul_multi)(struct tern_backend *be, const struct tern_view *y,
					 struct tern_view x, const struct tern_weight *const *w,
					 const struct tern_lora_term *lt, int n, int64_t T,
					 enum tern_dtype prec);
	/* dx[T,I] = or += dy[T,O] · W[O,I]   (accumulate selects +=); prec as for matmul, with dy
	 * in the place of x. */
	enum tern_status (*matmul_bwd)(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				       const struct tern_weight *w, int64_t T, bool accumulate,
				       enum tern_dtype prec);
	/* C[M,N] = alpha · op(A)[M,K] · op(B)[K,N] + beta · C   (beta = 0: C is not read)
	 * A is stored [M,K], or [K,M] when ta; B is stored [K,N], or [N,K] when tb. A, B, C fp32.
	 * prec: TERN_F32, the products in fp32; TERN_BF16 where supports_prec(TERN_OP_GEMM, BF16)
	 * says so (CUDA from compute 8.0), A and B rounded to bf16 (to nearest even) and the products
	 * summed in fp32, alpha and beta · C applied in fp32; a backend may also run such a product
	 * finer, up to fp32 (cuBLAS's FAST_16BF did at small shapes on an H100: tf32-like errors, 8×
	 * below bf16's). F16 is never offered (it would need matmul's scale pass). The front door
	 * refuses a prec the backend does not run. */
	enum tern_status (*gemm)(struct tern_backend *be, struct tern_view C, struct tern_view A,
				 struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
				 float alpha, float beta, enum tern_dtype prec);
	/* The LoRA linear's base products with its two rank-R updates inside them (optional: NULL,
	 * and the LoRA linear is composed from matmul, matmul_bwd and gemm alone). The rank-R update
	 * rides in the reduction, extended by R: y = [x | scale·u] · [W | B]ᵀ, dx = [dy | du] · [W ; A],
	 * so neither y [T,O] nor dx [T,I] is read and written again by a gemm. tern_lora_forward and
	 * tern_lora_backward call them (through tern_matmul_lora(_bwd)) only where tern_lora_fused
	 * says so; the rest of the linear (u = x Aᵀ, dB, du, dA) stays gemm.
	 *
	 * Whether matmul_lora and matmul_lora_bwd run weight w with rank R for T tokens at precision
	 * prec (NULL: never). A backend may decline few tokens where its plain matmul reads W in place
	 * (CUDA's small-T kernels: decoding with an adapter). The front doors refuse what it
	 * refuses. */
	bool (*lora_fuses)(struct tern_backend *be, const struct tern_weight *w, int64_t R, int64_t T,
			   enum tern_dtype prec);
	/* y[T,O] = x[T,I] · W[O,I]ᵀ + scale · u[T,R] · B[O,R]ᵀ   (=), one product of the extended
	 * reduction. prec as matmul: at BF16, x, W, B and scale·u (formed in fp32) are rounded to bf16
	 * and every product is summed in fp32 (the composition rounds u and applies scale to the sum:
	 * the low-rank parts differ by one bf16 rounding). At F16 (Vulkan) x and W as matmul's F16
	 * rule; u and B rounded to f16's 11-bit significand (each under a power of two of the
	 * backend's choosing that keeps its largest values normal: Vulkan's B per 128-column tile,
	 * u per row, its row's x scale times one for the 128-row tile), every
	 * product summed in fp32, the term scaled by scale. u, B fp32; R >= 1; scale finite. */
	enum tern_status (*matmul_lora)(struct tern_backend *be, struct tern_view y, struct tern_view x,
					struct tern_view u, struct tern_view B, const struct tern_weight *w,
					int64_t R, float scale, int64_t T, enum tern_dtype prec);
	/* dx[T,I] = or += (accumulate) dy[T,O] · W[O,I] + du[T,R] · A[R,I], one product of the
	 * extended reduction; prec as matmul_bwd (at BF16 dy, W, du and A rounded to bf16; at F16 dy
	 * and W as matmul_bwd's F16 rule, du and A rounded to f16's significand as matmul_lora's u
	 * and B). du, A fp32. dx may not overlap dy, du or A (it may be
	 * the linear's input x: nothing here reads x). */
	enum tern_status (*matmul_lora_bwd)(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					    struct tern_view du, struct tern_view A,
					    const struct tern_weight *w, int64_t R, int64_t T,
					    bool accumulate, enum tern_dtype prec);
	/* y[n] = x[n] · keep(key, i) / (1 - p)   (=; y may alias x). keep: tern_dropout_keep().
	 * p in [0, 1); n <= 2^32 (the hash takes a 32-bit index). */
	enum tern_status (*dropout)(struct tern_backend *be, struct tern_view y, struct tern_view x,
				    int64_t n, float p, uint64_t key);
	/* y[n] += alpha · x[n] */
	enum tern_status (*axpy)(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
				 float alpha);
	/* One AdamW step on param[n] with grad[n], moments m[n], v[n] (PyTorch semantics, in place).
	 * args->step >= 1; lr, eps, weight_decay finite; beta1, beta2 in [0, 1). */
	enum tern_status (*adamw)(struct tern_backend *be, struct tern_view param, struct tern_view grad,
				  struct tern_view m, struct tern_view v, int64_t n,
				  const struct tern_adamw_args *args);
	/* out[0] = or += Σ x[i]²   (one fp32; accumulate selects +=; fixed summation order) */
	enum tern_status (*sumsq)(struct tern_backend *be, struct tern_view out, struct tern_view x,
				  int64_t n, bool accumulate);
	/* x[n] *= alpha */
	enum tern_status (*scale)(struct tern_backend *be, struct tern_view x, int64_t n, float alpha);
	/* torch clip_grad_norm_: c = max_norm / (sqrt(sumsq[0]) + 1e-6); if c < 1, x[n] *= c.
	 * The squared norm stays on the device. */
	enum tern_status (*clip)(struct tern_backend *be, struct tern_view x, int64_t n,
				 struct tern_view sumsq, float max_norm);
	/* dst[n] = src[n] converted (F32, F16, BF16; round to nearest even) */
	enum tern_status (*cast)(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
				 struct tern_view src, enum tern_dtype st, int64_t n);

	/* ---- transformer ops (training-math.md); NULL until a backend implements them ---- */

	/* y[T,D] = x · rstd[t] · w[D] (=), rstd[T] = 1/sqrt(mean(x²) + eps) saved (=). D >= 1, eps
	 * finite and >= 0. */
	enum tern_status (*rmsnorm)(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				    struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps);
	/* dx[T,D] = or += (accumulate) the RMSNorm input gradient; w frozen. D >= 1. */
	enum tern_status (*rmsnorm_bwd)(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					struct tern_view x, struct tern_view w, struct tern_view rstd,
					int64_t T, int64_t D, bool accumulate);
	/* The residual add and the next RMSNorm in one op (a decoder layer's h = x + o; xn = norm(h)):
	 * h[T,D] += x[T,D] (as axpy with alpha 1), then y[T,D] and rstd[T] = rmsnorm of the updated h
	 * with w[D] (=): the values of axpy(h, x, 1) followed by rmsnorm(y, rstd, h, w). y and rstd
	 * overlap neither h nor x; x does not overlap h. D >= 1, eps as rmsnorm. NULL: the front door
	 * runs axpy then rmsnorm (two ops; CUDA fuses them: one launch per call in decoding). */
	enum tern_status (*add_rmsnorm)(struct tern_backend *be, struct tern_view h, struct tern_view y,
					struct tern_view rstd, struct tern_view x, struct tern_view w,
					int64_t T, int64_t D, float eps);
	/* In place on x [T, H, Dh]: HF rotate_half RoPE at positions pos[T] (i32) with
	 * inv_freq[Dh/2] (f32, llama3 scaling already applied by the caller); inverse rotates by
	 * -θ (the backward of the forward rotation). H >= 1, Dh even and >= 2. */
	enum tern_status (*rope)(struct tern_backend *be, struct tern_view x, struct tern_view pos,
				 struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
	/* rope on two tensors in one op (a decode step's q and k): x [T, H, Dh] and x2 [T, H2, Dh]
	 * become what rope(x, pos, inv_freq, T, H, Dh, inverse) and rope(x2, ..., T, H2, Dh, inverse)
	 * make of them, bits included; x and x2 do not overlap. Optional (NULL: the front door runs
	 * rope twice; CUDA: one launch where T <= 16). */
	enum tern_status (*rope2)(struct tern_backend *be, struct tern_view x, int64_t H, struct tern_view x2,
				  int64_t H2, struct tern_view pos, struct tern_view inv_freq, int64_t T,
				  int64_t Dh, bool inverse);
	/* h[n] = act(g[n]) · u[n]   (=) */
	enum tern_status (*swiglu)(struct tern_backend *be, struct tern_view h, struct tern_view g,
				   struct tern_view u, int64_t n, enum tern_act act);
	/* dg[n], du[n] (=) from dh, g, u. dg may be g and du may be dh (the same views: each
	 * element is read before either output is written); no other overlap. */
	enum tern_status (*swiglu_bwd)(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				       struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				       enum tern_act act);
	/* y[T,D] = E[ids[t]] (=); E is a weight [V, D] in F32/F16/BF16 (O = V, I = D); ids i32. */
	enum tern_status (*embed)(struct tern_backend *be, struct tern_view y, struct tern_view ids,
				  const struct tern_weight *E, int64_t T);
	/* The embedding gather's backward, a scatter-add over the ids:
	 *   dE[ids[t], :] += dy[t, :]   for t = 0 .. T-1 in token order   (+=)
	 * dE f32 [V, D], dy f32 [T, D], ids i32 [T]; V, D >= 1, T >= 0. Rows of ids that repeat
	 * accumulate in token order, so the result does not depend on scheduling (no atomics). An id
	 * outside [0, V): the CPU fails before writing anything; Vulkan, which cannot read the ids
	 * without a download, skips that token (its forward already wrote a NaN row). */
	enum tern_status (*embed_bwd)(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				      struct tern_view ids, int64_t T, int64_t V, int64_t D);
	/* Flash-style causal GQA attention: o[T,H,Dh] (=), lse[H,T] (=, the per-row log-sum-exp,
	 * natural log) from q[T,H,Dh], k[T,Hkv,Dh], v[T,Hkv,Dh], seg[T] (i32); never H×T×T.
	 * H, Hkv, Dh >= 1, H a multiple of Hkv, window >= 0, finite scale. */
	enum tern_status (*attention)(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				      struct tern_view q, struct tern_view k, struct tern_view v,
				      struct tern_view seg, const struct tern_attn_args *a);
	/* Attention over a KV cache (struct tern_attn_kv_args): o[Tq,H,Dh] (=) with
	 *   o[i,h] = Σ_j softmax_j(scale · q[i,h] · k[j,g]) v[j,g]   g = h / (H / Hkv)
	 * over the keys query i sees; q [Tq,H,Dh], k, v [Tk,Hkv,Dh] (fp32; their views may be longer,
	 * a cache allocated for more tokens: rows from Tk on are not read). Tq >= 0, Tk >= Tq,
	 * Tk >= 1, H, Hkv, Dh >= 1, H a multiple of Hkv, window >= 0, finite scale; fp32 throughout.
	 * Every query sees its own key, so no row is empty. */
	enum tern_status (*attention_kv)(struct tern_backend *be, struct tern_view o, struct tern_view q,
					 struct tern_view k, struct tern_view v,
					 const struct tern_attn_kv_args *a);
	/* dq, dk, dv (=) from dout, q, k, v, o, lse (recomputing P in tiles). */
	enum tern_status (*attention_bwd)(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
					  struct tern_view dv, struct tern_view dout, struct tern_view q,
					  struct tern_view k, struct tern_view v, struct tern_view o,
					  struct tern_view lse, struct tern_view seg,
					  const struct tern_attn_args *a);
	/* Fused lm_head + cross-entropy over token chunks (never T×V logits): z_t = x_t · Wᵀ with
	 * W [V, D] (F32/F16/BF16); for t with labels[t] != -100 (i32):
	 *   loss[0] += inv_n · (logsumexp(z_t) − z_t[labels[t]])
	 *   dx[t]    = inv_n · (softmax(z_t) − onehot(labels[t])) · W    (=; 0 for untrained t)
	 *   dW      += Σ_t (inv_n · (softmax(z_t) − onehot(labels[t])))ᵀ x_t   [V, D] f32 (+=), only
	 *              when dW.size > 0, and then W must be F32 (a trained lm_head, modules_to_save);
	 *              dW.size == 0: not computed (a frozen lm_head). The products of dW are fp32.
	 * labels are already shifted (labels[t] is token t's target). inv_n finite. prec: the
	 * precision of the two products (x Wᵀ and (softmax − onehot) W) as for matmul; a backend
	 * that has no half-precision path computes them in fp32 (the CPU reference does). */
	enum tern_status (*ce_loss)(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				    struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				    struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);

	/* ---- mixture-of-experts row ops (tokens grouped by expert and back) ----
	 * gather is the forward of grouping (and the transpose of scatter_add with unit weights),
	 * scatter_add with the router weights the weighted combine, rowdot the routing weight's
	 * gradient dw_i = <dy[idx_i], h_i>. D >= 1; n, Tx, Ty >= 0; n·D, Tx·D, Ty·D <= TERN_MAX_ELEMS.
	 * The idx live on the device, so the front door cannot check them: an idx outside the rows
	 * makes the CPU fail before writing anything, naming the first such idx[i]; Vulkan, as embed,
	 * writes a NaN row for it (gather) or skips that row (scatter_add). */

	/* y[i, :] = x[idx[i], :]   (=) for i < n: a bit-exact copy. idx i32 [n], each in [0, Tx);
	 * x f32 [Tx, D]; y f32 [n, D]. idx may repeat. */
	enum tern_status (*gather_rows)(struct tern_backend *be, struct tern_view y, struct tern_view x,
					struct tern_view idx, int64_t n, int64_t Tx, int64_t D);
	/* y[idx[i], :] += w[i] · x[i, :]   (+=) for i < n; x f32 [n, D]; y f32 [Ty, D]; idx i32 [n],
	 * each in [0, Ty); w f32 [n], or a view of size 0: every weight 1 (then y += x exactly, no
	 * multiply); y + w·x in fp32 per element (the CPU rounds the product, then the sum; a
	 * backend may fuse the two).
	 * The idx of one call are distinct (one token reaches an expert once), so rows never collide
	 * and no atomics are needed: the CPU fails on a repeated idx before writing, naming both
	 * positions; on Vulkan the rows a repeat hits are unspecified. */
	enum tern_status (*scatter_add_rows)(struct tern_backend *be, struct tern_view y, struct tern_view x,
					     struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					     int64_t D);
	/* out[i] = Σ_d a[i, d] · b[i, d]   (=) for i < n; a, b f32 [n, D]; out f32 [n]. The sum is
	 * accumulated in at least fp32 in an order fixed by D alone (no atomics), so repeated calls
	 * give the same bits. */
	enum tern_status (*rowdot)(struct tern_backend *be, struct tern_view out, struct tern_view a,
				   struct tern_view b, int64_t n, int64_t D);
	/* BitNet b1.58's activation fake-quantization (transformers' ActQuant, AutoBitLinear online),
	 * per token t < T over the I values of row t, all in fp32:
	 *   s_t = 127 / max(max_i |x[t, i]|, 1e-5)
	 *   y[t, i] = clamp(rint(x[t, i] · s_t), -128, 127) / s_t   (=)
	 * rint rounds halves to even (torch.round). x, y f32 [T, I]; y may be x itself (in place,
	 * the same view) but may not otherwise overlap it; I >= 1. The max is exact, so the result
	 * depends on no summation order. Its backward is the straight-through estimator dx = dy, which
	 * needs no op. */
	enum tern_status (*act_quant8)(struct tern_backend *be, struct tern_view y, struct tern_view x,
				       int64_t T, int64_t I);
	/* out[r] = the index of the largest value of row r of x [rows, n] f32, for r < rows (i32,
	 * =): the first index of the largest non-NaN value, and 0 when x[r, 0] is NaN or the row
	 * holds no other value — exactly what `best = 0; for i < n: if (x[i] > x[best]) best = i`
	 * picks (equal maxima: the first, as torch.argmax; unlike torch, a NaN elsewhere never wins).
	 * n >= 1; no summation, so the result depends on no order. Greedy decoding: 4 bytes per
	 * token come back to the host instead of the [V] logits. */
	enum tern_status (*argmax)(struct tern_backend *be, struct tern_view out, struct tern_view x,
				   int64_t rows, int64_t n);
	/* The router of a mixture of experts, as transformers computes it (Mixtral, Qwen3-MoE), for
	 * each token t < T:
	 *   prob[t, :] = softmax(logits[t, :])                   f32 [T, E] (=), saved for the backward
	 *   sel[t, j]  = the j-th largest prob[t, :], j < k      i32 [T, k] (=), descending; equal
	 *                probabilities in ascending expert order (deterministic; torch.topk leaves
	 *                the order of equal values unspecified, so on exact ties transformers may
	 *                pick another of the tied experts, with the same weight)
	 *   w[t, j]    = prob[t, sel[t, j]], divided by Σ_j of them when norm (norm_topk_prob;
	 *                Mixtral always)                           f32 [T, k] (=)
	 *   counts[e]  = the tokens that chose expert e            i32 [E] (=)
	 * logits f32 [T, E]; E >= 1, 1 <= k <= E, T >= 0, E <= 2^31 - 1. The softmax subtracts the row
	 * max (CPU: in double, rounded to fp32; Vulkan: fp32), so probabilities that are not exactly
	 * equal may order differently across backends only where they differ by rounding. A NaN
	 * probability ranks below every other (the ids stay distinct and in [0, E)). */
	enum tern_status (*route_topk)(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				       struct tern_view prob, struct tern_view counts,
				       struct tern_view logits, int64_t T, int64_t E, int64_t k, bool norm);
	/* Its backward: dlogits[T, E] (=) from dw[T, k] (the gradient of each routing weight), with
	 * prob and sel as the forward wrote them. v_j = prob[t, sel[t, j]], S = Σ_j v_j:
	 *   dv_j = norm ? (dw_j − Σ_i dw_i v_i / S) / S : dw_j
	 *   dlogits[t, e] = prob[t, e] · (Σ_{j: sel_j = e} dv_j − Σ_j dv_j v_j)
	 * Sums in a fixed order (CPU: double). Shapes as route_topk; sel entries outside [0, E): the
	 * CPU fails before writing, Vulkan skips that choice. */
	enum tern_status (*route_topk_bwd)(struct tern_backend *be, struct tern_view dlogits,
					   struct tern_view dw, struct tern_view prob, struct tern_view sel,
					   int64_t T, int64_t E, int64_t k, bool norm);
	/* Grouped dequant-matmul, the experts' products in one op. x (struct tern_experts) holds the
	 * E experts of one projection, each its own weight W_e [O, I], uniformly strided. off i32
	 * [E + 1] on the device: the rows of x that go to expert e are [off[e], off[e+1]), with
	 * 0 <= off[0] <= ... <= off[E] <= T. For each e and such r:
	 *   y[r, :] = in[r, :] · W_eᵀ   (=)   y f32 [T, O], in f32 [T, I]
	 * Rows outside [off[0], off[E]) are not written. The result equals tern_matmul(rows r of y,
	 * rows r of in, W_e, off[e+1] - off[e]) per expert, at precision prec (F32 only today: other
	 * precisions fail with TERN_E_UNSUPPORTED). Offsets that break the rule: the CPU fails
	 * before writing; Vulkan computes each row with the expert a binary search of off names. */
	enum tern_status (*matmul_grouped)(struct tern_backend *be, struct tern_view y, struct tern_view in,
					   const struct tern_experts *x, struct tern_view off, int64_t T,
					   enum tern_dtype prec);
	/* dx[r, :] = or += (accumulate) dy[r, :] · W_e for r in [off[e], off[e+1]); dx f32 [T, I], dy
	 * f32 [T, O]; rows outside [off[0], off[E]) untouched. = tern_matmul_bwd per expert. */
	enum tern_status (*matmul_grouped_bwd)(struct tern_backend *be, struct tern_view dx,
					       struct tern_view dy, const struct tern_experts *x,
					       struct tern_view off, int64_t T, bool accumulate,
					       enum tern_dtype prec);
};

struct tern_backend {
	const struct tern_backend_vtable *vt;
	char name[16];         /* "cpu", "ref", "vulkan" */
	char device_name[256]; /* what was chosen, for banners */
	int device_index;
	/* matmul_grouped(_bwd) run here at least as fast as matmul per expert, so the net groups a
	 * sparse layer's experts by default (ref, cpu: true, their op is that loop; Vulkan and CUDA:
	 * false while their grouped kernels are untiled and unmeasured; TERN_MOE_GROUPED=1 or 0
	 * overrides, src/train/net.c) */
	bool grouped_fast;
	bool profiling;          /* set by tern_backend_profile: the front doors call profile_op */
	int profile_depth;       /* front doors open (the outermost one names the kind) */
	enum tern_op profile_op; /* the op the outermost open front door runs (profile_op reads it) */
	/* Vulkan's on-disk pipeline cache: its path ("" when off, or another backend) and whether a
	 * valid one was loaded (false: this run compiles its shaders from scratch) */
	char pipeline_cache[4096];
	bool pipeline_cache_loaded;
	/* What the ops cost in host-device traffic, counted for the decode analysis (tern generate
	 * prints them per decode step): front-door op calls (nested ones included), device commands
	 * recorded (Vulkan: dispatches and transfer commands), pipeline barriers, queue submissions,
	 * host waits for the device (Vulkan: fence waits and timeline waits for a value not yet
	 * reached; CUDA: stream synchronizations),
	 * and upload/download calls. Only ever incremented; a backend leaves what it has not (0). */
	struct tern_backend_counts {
		uint64_t ops, commands, barriers, submits, waits, uploads, downloads;
	} counts;
};

/* ---- the ops' front doors (ops.c) ----
 * One per op entry of the vtable, with the same arguments after `be` and the contract written
 * at the entry: check the arguments (see above the vtable), then run the backend's entry. Every
 * caller runs ops through these. */
enum tern_status tern_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
			     const struct tern_weight *w, int64_t T, enum tern_dtype prec);
/* The most weights of one matmul_multi. */
#define TERN_MATMUL_MULTI 3
enum tern_status tern_matmul_multi(struct tern_backend *be, const struct tern_view *y, struct tern_view x,
				   const struct tern_weight *const *w, const struct tern_lora_term *lt, int n,
				   int64_t T, enum tern_dtype prec);
enum tern_status tern_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				 const struct tern_weight *w, int64_t T, bool accumulate,
				 enum tern_dtype prec);
enum tern_status tern_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			   struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
			   float beta, enum tern_dtype prec);
enum tern_status tern_matmul_lora(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  struct tern_view u, struct tern_view B, const struct tern_weight *w,
				  int64_t R, float scale, int64_t T, enum tern_dtype prec);
enum tern_status tern_matmul_lora_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      struct tern_view du, struct tern_view A, const struct tern_weight *w,
				      int64_t R, int64_t T, bool accumulate, enum tern_dtype prec);
enum tern_status tern_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			      float p, uint64_t key);
enum tern_status tern_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			   float alpha);
enum tern_status tern_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
			    struct tern_view m, struct tern_view v, int64_t n,
			    const struct tern_adamw_args *args);
enum tern_status tern_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
			    bool accumulate);
enum tern_status tern_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha);
enum tern_status tern_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			   float max_norm);
enum tern_status tern_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			   struct tern_view src, enum tern_dtype st, int64_t n);
enum tern_status tern_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
			      struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps);
enum tern_status tern_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				  struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				  int64_t D, bool accumulate);
enum tern_status tern_add_rmsnorm(struct tern_backend *be, struct tern_view h, struct tern_view y,
				  struct tern_view rstd, struct tern_view x, struct tern_view w, int64_t T,
				  int64_t D, float eps);
enum tern_status tern_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			   struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
enum tern_status tern_rope2(struct tern_backend *be, struct tern_view x, int64_t H, struct tern_view x2,
			    int64_t H2, struct tern_view pos, struct tern_view inv_freq, int64_t T,
			    int64_t Dh, bool inverse);
enum tern_status tern_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
			     struct tern_view u, int64_t n, enum tern_act act);
enum tern_status tern_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				 struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				 enum tern_act act);
enum tern_status tern_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			    const struct tern_weight *E, int64_t T);
enum tern_status tern_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				struct tern_view ids, int64_t T, int64_t V, int64_t D);
enum tern_status tern_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				struct tern_view q, struct tern_view k, struct tern_view v,
				struct tern_view seg, const struct tern_attn_args *a);
enum tern_status tern_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				   struct tern_view k, struct tern_view v, const struct tern_attn_kv_args *a);
enum tern_status tern_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				    struct tern_view dv, struct tern_view dout, struct tern_view q,
				    struct tern_view k, struct tern_view v, struct tern_view o,
				    struct tern_view lse, struct tern_view seg,
				    const struct tern_attn_args *a);
enum tern_status tern_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
			      struct tern_view dW, struct tern_view x, const struct tern_weight *W,
			      struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);
enum tern_status tern_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  struct tern_view idx, int64_t n, int64_t Tx, int64_t D);
enum tern_status tern_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				       struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
				       int64_t D);
enum tern_status tern_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
			     struct tern_view b, int64_t n, int64_t D);
enum tern_status tern_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t T,
				 int64_t I);
enum tern_status tern_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t rows,
			     int64_t n);
enum tern_status tern_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				 struct tern_view prob, struct tern_view counts, struct tern_view logits,
				 int64_t T, int64_t E, int64_t k, bool norm);
enum tern_status tern_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits, struct tern_view dw,
				     struct tern_view prob, struct tern_view sel, int64_t T, int64_t E,
				     int64_t k, bool norm);
enum tern_status tern_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
				     const struct tern_experts *x, struct tern_view off, int64_t T,
				     enum tern_dtype prec);
enum tern_status tern_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					 const struct tern_experts *x, struct tern_view off, int64_t T,
					 bool accumulate, enum tern_dtype prec);

/* Turns the profile on or off: on, every op's device time is summed per kind (enum
 * tern_prof_kind) until tern_backend_profile_read. Fails with TERN_E_UNSUPPORTED where the backend
 * cannot time ops (Vulkan: a device without compute timestamps). Profiling may serialize the
 * backend's work (Vulkan waits for each submission to read its timestamps). */
enum tern_status tern_backend_profile(struct tern_backend *be, bool on);
/* Waits for the queued ops, then *out = the totals per kind since the last reset (reset: start
 * new totals). Profiling must be on. */
enum tern_status tern_backend_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset);

/* ---- registry ---- */

/* Creates backend `name` ("cpu": the fast CPU backend, "ref": the CPU reference, "vulkan", "cuda",
 * or "auto": the first GPU backend that has a device that is not a CPU, cuda before vulkan, else
 * cpu) on device index.
 * Fails softly (TERN_E_UNAVAILABLE with a reason) when the driver is missing. */
enum tern_status tern_backend_create(const char *name, int device, struct tern_backend **out);
void tern_backend_free(struct tern_backend *be);

/* Sizes a backend allocates for itself, which callers cannot see in the ops' shapes, for a
 * micro-batch of T tokens, vocabulary V and hidden size D. The backend allocates by these
 * figures, and the residency planner (src/train/plan.c) counts them, so they live in one place. */
struct tern_backend_sizes {
	int64_t ce_chunk;    /* ce_loss: tokens per chunk (TERN_CE_CHUNK=<tokens> forces fewer) */
	uint64_t ce_scratch; /* ce_loss: bytes of its scratch for one call (logits of a chunk, ...) */
	uint64_t reserve;    /* device bytes the backend keeps for its own buffers and rounding */
	/* ce_scratch is one scratch the products and attention use too (CUDA: the largest of the
	 * three needs, not their sum) */
	bool shared;
};

/* The shapes of a training run that a backend's own scratch may depend on besides T, V and D:
 * the widest activation operand of a layer product K (max of D, F, H·Dh and the experts' width),
 * the largest projection O·I (W), the attention's heads H, Hkv and head size Dh, the product
 * precision prec (F32, F16, BF16), the projections' dtype proj and the lm_head's head (F32 where
 * it is trained in full). */
struct tern_size_shapes {
	int64_t T, V, D;
	int64_t K, W;
	int64_t H, Hkv, Dh;
	enum tern_dtype prec, proj, head;
};

/* The sizes of backend `name` ("cpu", "vulkan", "cuda", or "auto": the first GPU backend compiled in,
 * else cpu), without creating a device (tern plan runs on machines without a GPU). T >= 0,
 * V, D >= 1. A backend not compiled in fails with TERN_E_UNAVAILABLE. */
enum tern_status tern_backend_sizes(const char *name, int64_t T, int64_t V, int64_t D,
				    struct tern_backend_sizes *out);
/* The same for a run's shapes: a backend whose scratch depends on more than T, V and D sizes it
 * from them (CUDA: the products' decoded weights and half-precision operands, attention's and
 * ce_loss's needs, the largest of them: what its shared scratch grows to; Vulkan: the reserve
 * plus the decode-first products' two slots of decoded W), the others answer as
 * tern_backend_sizes. Shapes >= 1 (T >= 0; K, W, H, Hkv, Dh: 0 means unknown, the largest
 * figure then). */
enum tern_status tern_backend_sizes_for(const char *name, const struct tern_size_shapes *s,
					struct tern_backend_sizes *out);

/* Each backend's entry points for the registry table in backend.c. create fails with
 * TERN_E_UNAVAILABLE (and a reason) when the driver or device is missing; devices fills up to
 * max entries and sets *count to the number written; sizes is tern_backend_sizes for that
 * backend (arguments checked), needs no device and is what the backend allocates by. */
enum tern_status tern_cpu_create(int device, struct tern_backend **out);
enum tern_status tern_cpu_devices(struct tern_device_info *out, int max, int *count);
enum tern_status tern_cpu_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out);
enum tern_status tern_ref_create(int device, struct tern_backend **out);
enum tern_status tern_ref_devices(struct tern_device_info *out, int max, int *count);
enum tern_status tern_ref_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out);
enum tern_status tern_vulkan_create(int device, struct tern_backend **out);
enum tern_status tern_vulkan_devices(struct tern_device_info *out, int max, int *count);
enum tern_status tern_vulkan_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out);
enum tern_status tern_vulkan_sizes_for(const struct tern_size_shapes *s, struct tern_backend_sizes *out);
enum tern_status tern_cuda_create(int device, struct tern_backend **out);
enum tern_status tern_cuda_devices(struct tern_device_info *out, int max, int *count);
enum tern_status tern_cuda_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out);
enum tern_status tern_cuda_sizes_for(const struct tern_size_shapes *s, struct tern_backend_sizes *out);

/* ---- helpers shared by every backend and by callers ---- */

/* Whether the backend's vtable has an entry for op (backends' supports() start here). */
bool tern_backend_has_op(const struct tern_backend *be, enum tern_op op);

/* Whether op runs here at product precision prec: for matmul and matmul_bwd the backend's
 * supports_prec (F32 only when it has none); for gemm F32, and BF16 where supports_prec says so;
 * other ops have no precision argument, so only TERN_F32. False for an op the backend lacks and
 * for a prec other than F32, F16, BF16. */
bool tern_backend_supports_prec(struct tern_backend *be, enum tern_op op, enum tern_dtype prec);

/* Whether the backend has shader variant `variant` on this device (vtable has_variant; false
 * without one), and the precision `compute_dtype: auto` picks (vtable auto_prec; F32 without). */
bool tern_backend_variant_ok(struct tern_backend *be, const char *variant);
enum tern_dtype tern_backend_auto_prec(struct tern_backend *be);

/* TERN_DECODE_LEGACY=1: decoding runs as before issue 13's speed work (Vulkan's GEMM shaders for
 * one token, the logits downloaded and the greedy pick on the host), for before/after timings
 * (tools/bench_generate.sh --compare). Read once. */
bool tern_decode_legacy(void);

/* The half-precision input scale (matmul's TERN_F16): max_bits is the largest |x| as its bit
 * pattern (tern_absmax_bits: non-negative floats order like their bits, NaN above infinity);
 * the result is 2^clamp(target - e, -100, 100), e the binary exponent of that maximum (at least
 * -126), and 1 when the maximum is 0, infinite or NaN. matmul uses target 14, so the largest
 * |x s| lies in [2^14, 2^15); the shaders compute the same (shaders/mm.comp, xscale). */
uint32_t tern_absmax_bits(const float *x, int64_t n);
float tern_prec_scale(uint32_t max_bits, int target);
/* v rounded to prec (F32: v; F16, BF16: to nearest even, back in fp32). */
float tern_prec_round(enum tern_dtype prec, float v);
/* out[n] = src[n] widened to fp32; dt is TERN_F32, TERN_F16 or TERN_BF16 (src needs no alignment). */
void tern_plain_to_f32(enum tern_dtype dt, const void *src, int64_t n, float *out);

/* The counter-based dropout generator: a 32-bit hash of (key, i). Element i is kept when
 * tern_dropout_hash(key, i) >= tern_dropout_threshold(p). The same integer math is in
 * shaders/common/hash.glsl. */
static inline uint32_t tern_hash_mix(uint32_t x)
{
	x ^= x >> 16;
	x *= 0x7feb352dU;
	x ^= x >> 15;
	x *= 0x846ca68bU;
	x ^= x >> 16;
	return x;
}
static inline uint32_t tern_dropout_hash(uint64_t key, uint32_t i)
{
	uint32_t h = tern_hash_mix(i ^ (uint32_t)key);
	return tern_hash_mix(h ^ (uint32_t)(key >> 32) ^ 0x9e3779b9U);
}
static inline uint32_t tern_dropout_threshold(float p)
{
	double t = (double)p * 4294967296.0;
	return t <= 0 ? 0 : t >= 4294967295.0 ? 0xffffffffU : (uint32_t)t;
}
/* Combines the fields that identify one dropout mask into a key. */
uint64_t tern_dropout_key(uint64_t seed, uint64_t step, uint32_t micro, uint32_t layer, uint32_t module);

/* AdamW scalars as PyTorch computes them (in double, then used as fp32). */
struct tern_adamw_consts {
	float decay;        /* 1 - lr * weight_decay */
	float one_minus_b1; /* lerp weight */
	float b2, one_minus_b2;
	float step_size; /* lr / (1 - beta1^t) */
	float bc2_sqrt;  /* sqrt(1 - beta2^t) */
	float eps;
};
struct tern_adamw_consts tern_adamw_consts(const struct tern_adamw_args *a);

/* Checks common to every backend (the front doors use them; so do ops composed from others, such
 * as the LoRA linear): view sizes against shapes, a weight against its dtype and shape. */
enum tern_status tern_check_view(const char *op, const char *what, struct tern_view v, size_t need);
size_t tern_weight_data_bytes(enum tern_dtype dt, int64_t O, int64_t I);
enum tern_status tern_check_weight(const char *op, const struct tern_weight *w);

/* ---- LoRA linear, composed from the ops above (backend independent) ----
 * y = x Wᵀ + s · (drop(x) Aᵀ) Bᵀ, training-math.md. A [R, I], B [O, R]. */
struct tern_lora {
	struct tern_view A, B; /* fp32 parameters */
	int64_t R;
	float scale;           /* alpha / r, or alpha / sqrt(r) with rsLoRA */
	float dropout;         /* p */
	uint64_t key;          /* dropout mask key (tern_dropout_key) */
	enum tern_dtype prec;  /* precision of the base product x Wᵀ (matmul) */
	enum tern_dtype lprec; /* precision of the LoRA products (gemm's prec; F32 unless the
				* backend's gemm runs another, tern_backend_supports_prec) */
	/* the base product's input when it is not x (BitNet: act_quant8(x), [T,I] f32); size 0:
	 * x. The backward is unchanged (straight-through: dx takes dy W as for x). */
	struct tern_view xbase;
};

/* Whether tern_lora_forward / tern_lora_backward run the base products with the rank-R updates
 * inside them (vtable matmul_lora, matmul_lora_bwd) rather than as separate gemms: where the
 * backend has them and lora_fuses accepts w, R, T and prec, dropout is 0, there is no xbase and
 * the fused low-rank term is as fine as the LoRA products (lprec == prec, CUDA: BF16; or the F16
 * products' fp32 term with lprec F32, Vulkan). Same =/+=
 * rules, the same u, the same order of reads (x for dA before dx is written). A forward and its
 * backward at the same T take the same path. */
bool tern_lora_fused(struct tern_backend *be, const struct tern_weight *w, const struct tern_lora *lora,
		     int64_t T);

/* Forward. y[T,O] (=); saves u[T,R] = drop(x) Aᵀ and, when p > 0, xd[T,I] = drop(x)
 * (xd is unused when p == 0). */
enum tern_status tern_lora_forward(struct tern_backend *be, struct tern_view y, struct tern_view u,
				   struct tern_view xd, struct tern_view x, const struct tern_weight *w,
				   const struct tern_lora *lora, int64_t T);

/* u[T,R] alone as tern_lora_forward computes it (the same calls; xd[T,I] = drop(x) as well when
 * p > 0): a checkpointing recomputation whose output nothing reads. */
enum tern_status tern_lora_u(struct tern_backend *be, struct tern_view u, struct tern_view xd,
			     struct tern_view x, const struct tern_weight *w, const struct tern_lora *lora,
			     int64_t T);

/* The low-rank half alone, for a y that already holds x Wᵀ: u[T,R] = drop(x) Aᵀ (xd[T,I] =
 * drop(x) written first where p > 0, as tern_lora_forward writes it), y[T,O] += s · u Bᵀ. Where
 * tern_lora_fused says no and there is no xbase, matmul(y) then this gives tern_lora_forward's
 * values (the same calls); elsewhere, or with p > 0 and no xd, it is refused (TERN_E_INVALID). */
enum tern_status tern_lora_add(struct tern_backend *be, struct tern_view y, struct tern_view u,
			       struct tern_view xd, struct tern_view x, const struct tern_weight *w,
			       const struct tern_lora *lora, int64_t T);

/* Backward. dA[R,I] +=, dB[O,R] +=, dx[T,I] = or += (accumulate). du[T,R] and, when p > 0,
 * tmp[T,I] are scratch. x, xd, u as saved by the forward. With accumulate false dx may be x
 * (the same view): x (or xd) is read for dA before dx is written. */
enum tern_status tern_lora_backward(struct tern_backend *be, struct tern_view dx, struct tern_view dA,
				    struct tern_view dB, struct tern_view du, struct tern_view tmp,
				    struct tern_view dy, struct tern_view x, struct tern_view xd,
				    struct tern_view u, const struct tern_weight *w,
				    const struct tern_lora *lora, int64_t T, bool accumulate);

#endif
