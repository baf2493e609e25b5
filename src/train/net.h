/* The trainable network on a backend: a loaded model's frozen weights on the device, the LoRA
 * parameters, their gradients and AdamW moments, and the activations of one micro-batch, all
 * allocated once from the config; forward and backward of a micro-batch of T = rows · S tokens.
 *
 * Letters: T tokens of a micro-batch, D hidden, F intermediate, H query heads, Hkv key/value heads,
 * Dh head dim, V vocabulary, L layers, R LoRA rank.
 *
 * Decoder layer l (x = input [T,D], Llama/Mistral/Qwen2/Qwen3):
 *	xn1 = rmsnorm(x)                         rstd1 saved
 *	qr, kr, v = lin_q/k/v(xn1) (+ bias)       LoRA where targeted
 *	q, k = rmsnorm_Dh(qr), rmsnorm_Dh(kr)     Qwen3 only (rstd_q, rstd_k saved); else q = qr
 *	q, k = rope(q), rope(k)                   positions restart per sample
 *	ao = attention(q, k, v)                   lse saved; window per layer
 *	h1 = x + lin_o(ao)
 *	xn2 = rmsnorm(h1)
 *	g, u = lin_gate(xn2), lin_up(xn2);  a = act(g) · u
 *	out = h1 + lin_down(a)
 * The final norm, then lm_head + cross-entropy fused in chunks (ce_loss). The backward mirrors it in
 * reverse; with gradient checkpointing only each layer's input is kept and the layer is recomputed
 * (with the same dropout masks: keys from seed, step, micro-batch, layer, module) just before its
 * backward.
 *
 * LoRA parameters live in one block [A, B of each targeted (layer, module)], gradients and both
 * moments in blocks of the same layout, so that the norm, clipping and AdamW are one call each.
 *
 * Modules trained in full (PEFT modules_to_save, o.full): an fp32 copy [V, D] of embed_tokens
 * and/or lm_head in buffers of their own (weights, gradient, two moments; a Llama-3-8B copy is
 * 2 GiB, so one block with the LoRA would reach maxMemoryAllocationSize sooner), made from the
 * base weights at creation; the norm, clipping and AdamW cover them with the LoRA block (one
 * global norm). The frozen copy stays where it was. A trained embed_tokens is gathered from its
 * copy (embed) and gets dE += scatter of the layer-0 input gradient (embed_bwd); a trained lm_head
 * is the loss's W and gets ce_loss's dW.
 * With tied embeddings the two copies are independent, as in PEFT. */
#ifndef TERN_TRAIN_NET_H
#define TERN_TRAIN_NET_H

#include "backend/backend.h"
#include "model/model.h"
#include "residency/residency.h" /* enum tern_tier, struct tern_residency_stats */
#include "train/adapter.h"

struct tern_net;

struct tern_net_opts {
	int64_t R;        /* LoRA rank */
	float scale;      /* alpha / R, or alpha / sqrt(R) with rsLoRA */
	float dropout;    /* LoRA dropout p */
	unsigned modules; /* bit (1u << enum tern_module) per targeted module */
	unsigned experts; /* LoRA on the experts of sparse layers: bit 0 gate_up, bit 1 down (adapter.h
			   * TERN_LORA_EXP_*; no dropout there, as PEFT's target_parameters) */
	unsigned full;    /* bit (1u << enum tern_full) per module trained in full (modules_to_save) */
	int64_t T;        /* tokens of one micro-batch (micro_batch_size · sequence_len) */
	bool checkpointing;
	/* with checkpointing, offloaded checkpoints (gradient_checkpointing: offload): the layer
	 * inputs live in host memory (host_alloc), each copied out (copy_async, device -> host) as
	 * the forward writes it and back ahead of its layer's backward; the device keeps two [T, D]
	 * slots. The results are the same bytes as with the inputs on the device. */
	bool offload;
	/* tiled_mlp: with checkpointing and no sparse layer, the dense MLP (gate, up, act, down)
	 * runs in this many token shards of ceil(T / mlp_shards) rows: its three [T, F] activation
	 * buffers shrink to a shard's rows, and the backward recomputes each shard's gate and up
	 * before its gradient (the products of a shard are those of its rows: the same values up to
	 * the LoRA gradients' summation order). 0 or 1: whole. Dropout masks are keyed per shard. */
	int64_t mlp_shards;
	uint64_t seed;        /* dropout keys */
	const uint8_t *tiers; /* [L] enum tern_tier of each layer; NULL: every layer on the device */
	int slots;            /* device slots for streamed layers (>= 2 when one streams; 0: 2) */
	enum tern_dtype prec; /* product precision of the base matmuls, attention and lm_head
			       * (compute_dtype; TERN_F32 = 0 by default) */
	double aux_coef;      /* > 0: each trained micro-batch adds aux_coef · the load-balancing loss
			       * of its sparse layers (moe.h) to the loss and its gradient */
	/* A layer split (a pipeline stage): this net runs layers [l0, l1) of L (l1 = 0: all; the
	 * embedding only where l0 = 0, the final norm, lm_head and loss only where l1 = L) and holds
	 * those layers' weights and activations alone; the LoRA block stays whole (the other layers'
	 * gradients stay zero here). link passes the boundary: tern_net_micro receives layer l0's
	 * input from the previous stage and sends layer l1's input (the output) to the next; with
	 * backward it then receives dL/d(output) and sends dL/d(input) back. */
	int64_t l0, l1;
	const struct tern_net_link *link;
};

/* The boundary of a layer split, through host memory: buf holds `bytes` of a [T, D] hidden state
 * (layer inputs as the net keeps them: fp32, or f16 at F16 products) or of its fp32 gradient.
 * peer -1 is the previous stage, +1 the next. Every send is matched by the peer's recv of the
 * same size, in order. */
struct tern_net_link {
	void *ctx;
	enum tern_status (*send)(void *ctx, int peer, const void *buf, size_t bytes);
	enum tern_status (*recv)(void *ctx, int peer, void *buf, size_t bytes);
	/* optional (NULL: the hidden state and its gradient through host memory as above): the same
	 * between device buffers, the first `bytes` of view v, queued after the ops before (NCCL) */
	enum tern_status (*send_dev)(void *ctx, int peer, struct tern_view v, size_t bytes);
	enum tern_status (*recv_dev)(void *ctx, int peer, struct tern_view v, size_t bytes);
};

/* The residency manager's streaming counters since the last reset (residency.h); reset: zeroes
 * them. */
void tern_net_stream_stats(struct tern_net *n, struct tern_residency_stats *out, bool reset);

struct tern_net;

/* Uploads the model's weights (projections as they are in the model's pack; embeddings and lm_head
 * as stored; norms and biases converted to fp32), allocates parameters (zero), gradients, moments
 * and activations. */
enum tern_status tern_net_create(struct tern_backend *be, const struct tern_model *m,
				 const struct tern_net_opts *o, struct tern_net **out);
void tern_net_free(struct tern_net *n);

/* Shapes of the LoRA modules: io[m][0] = in features, io[m][1] = out features. */
void tern_net_module_shapes(const struct tern_model_config *cfg, int64_t io[TERN_MOD_COUNT][2]);

/* Bytes of device memory the net allocated: weights (device-tier layers, streaming slots, globals,
 * the fp32 block), LoRA (params, grads, moments), activations. */
void tern_net_memory(const struct tern_net *n, uint64_t *weights, uint64_t *lora, uint64_t *act);

/* Copies A, B (and the moments when s has them) to the device / from the device. */
enum tern_status tern_net_lora_upload(struct tern_net *n, const struct tern_lora_set *s);
enum tern_status tern_net_lora_download(struct tern_net *n, struct tern_lora_set *s);

/* Device bytes the net would allocate for a model config and options, without a backend: the
 * LoRA block ×4 (params, grads, two moments) and the activation block (weights not included). */
struct tern_net_sizes {
	uint64_t lora, act;
	int64_t params;
	uint64_t offload_host; /* o.offload: host bytes of the offloaded layer inputs (else 0) */
	int offload_slots;     /* and the device slots they pass through */
	int64_t mlp_shards;    /* the dense MLP's shards of a micro-batch of o.T tokens (1: untiled) */
};
enum tern_status tern_net_sizes(const struct tern_model_config *c, const struct tern_net_opts *o,
				struct tern_net_sizes *out);

/* Trainable parameter count. */
int64_t tern_net_params(const struct tern_net *n);

/* The tokens of the next micro-batches: 1 <= T <= o.T (the allocation is for o.T; a micro-batch
 * padded only to its longest row runs with fewer). tern_net_micro reads T values of each array.
 * The net starts with T = o.T. */
enum tern_status tern_net_tokens(struct tern_net *n, int64_t T);

/* Zeroes the gradients and the loss accumulator (start of an accumulation window). */
enum tern_status tern_net_zero(struct tern_net *n);

/* One micro-batch of T tokens (i32 each: tokens, shifted targets (-100: not trained), positions,
 * segments). loss += inv_n · Σ CE over trained targets; with backward, every LoRA gradient +=.
 * With backward and o.aux_coef > 0 also loss += aux_coef · aux of this micro-batch (not scaled by
 * inv_n: transformers adds it to each forward's loss, and its Trainer does not divide a loss
 * normalised by num_items_in_batch by the accumulation steps), and its gradient.
 * step and micro select the dropout masks. */
enum tern_status tern_net_micro(struct tern_net *n, const int32_t *tokens, const int32_t *targets,
				const int32_t *positions, const int32_t *segments, float inv_n, bool backward,
				uint64_t step, uint32_t micro);

/* The accumulated loss (waits for the device). */
enum tern_status tern_net_loss(struct tern_net *n, double *loss);

/* Global L2 norm of the gradients (before clipping) into *norm, then torch clip_grad_norm_ with
 * max_norm (max_norm <= 0: no clipping). */
enum tern_status tern_net_clip(struct tern_net *n, float max_norm, double *norm);

/* The gradients and the loss as one host array of tern_net_grad_floats(n) floats (the LoRA
 * block, each module trained in full, then the accumulated loss): _get downloads them (waits for
 * the device), _put uploads them back. A data-parallel step sums them over the ranks in between. */
int64_t tern_net_grad_floats(const struct tern_net *n);
/* The same floats as device views, in that order (fp32 each; the last is the loss, 4 bytes):
 * returns their number, at most TERN_NET_GRAD_VIEWS. */
#define TERN_NET_GRAD_VIEWS (2 + TERN_FULL_COUNT)
int tern_net_grad_views(const struct tern_net *n, struct tern_view v[TERN_NET_GRAD_VIEWS]);
enum tern_status tern_net_grads_get(struct tern_net *n, float *h);
enum tern_status tern_net_grads_put(struct tern_net *n, const float *h);

/* One AdamW step over every LoRA parameter. */
enum tern_status tern_net_adamw(struct tern_net *n, const struct tern_adamw_args *a);

/* Downloads the accumulated gradient of module f trained in full into dW [V, D] (tests). */
enum tern_status tern_net_full_grad(struct tern_net *n, enum tern_full f, float *dW);

/* Downloads the accumulated gradients of expert slot k (0 gate_up, 1 down) of sparse layer l in
 * PEFT's file layout: dA [E·R, I], dB [O, R·E] (tests). */
enum tern_status tern_net_expert_grad(struct tern_net *n, int l, int k, float *dA, float *dB);

/* Downloads the accumulated gradients of module m of layer l into dA [R,I], dB [O,R] (tests). */
enum tern_status tern_net_grad(struct tern_net *n, int l, enum tern_module m, float *dA, float *dB);

/* ---- pieces for generation (src/train/gen.c): the net's own weights, LoRA and residency, so a
 * model that trains streamed also generates streamed. Ops are queued on the net's backend. ---- */

/* Layer l's vectors: norms (fp32 [D]; q_norm, k_norm [Dh], size 0 without qk_norm) and window. */
struct tern_net_layer_info {
	struct tern_view attn_norm, mlp_norm, q_norm, k_norm;
	struct tern_view attn_sub; /* BitNet's attn_sub_norm [H·Dh] (before o_proj), else size 0 */
	int64_t window;
};
/* Makes layer l's frozen weights usable by the ops queued next, as the forward does (a streamed
 * layer through the device slots, the next layers of the sequence 0 .. L-1 prefetched), and
 * fills *info. Call it for l = 0 .. L-1 in order; later calls of the same layer need no new one
 * until another layer was used. */
enum tern_status tern_net_use_layer(struct tern_net *n, int l, struct tern_net_layer_info *info);
/* Scratch of the pieces below for up to T tokens: u [T,R] (the LoRA products), ones [T] fp32
 * ones (bias rows), g, up, a [T,F] (the MLP). */
struct tern_net_scratch {
	struct tern_view u, ones, g, up, a;
	/* BitNet only (size 0 otherwise): the 8-bit-quantized input of a projection [T, max(D, H·Dh, F)],
	 * the MLP's sub-normed a [T, F] and its rstd [T] */
	struct tern_view xq, an, rstd;
};
/* y[T,O] (=) = x Wᵀ + s (x Aᵀ) Bᵀ + bias of module mo of layer l (after tern_net_use_layer), the
 * LoRA without dropout; lora false: the base linear alone (+ bias). */
enum tern_status tern_net_linear(struct tern_net *n, int l, enum tern_module mo, struct tern_view y,
				 struct tern_view x, const struct tern_net_scratch *s, int64_t T, bool lora);
/* y[i] = tern_net_linear of module mo[i] of layer l (i < cnt), all of the one input x: where none
 * has a bias or a LoRA the backend fuses into its product (tern_lora_fused), the model is not
 * BitNet and cnt <= TERN_MATMUL_MULTI, the base products go to the backend together
 * (tern_matmul_multi: one launch on CUDA's small-T path), then each LoRA's low-rank half
 * (tern_lora_add): the same values; else one tern_net_linear each. */
enum tern_status tern_net_linears(struct tern_net *n, int l, const enum tern_module *mo,
				  const struct tern_view *y, int cnt, struct tern_view x,
				  const struct tern_net_scratch *s, int64_t T, bool lora);
/* out[T,D] (=) = the MLP of layer l on the normed xn[T,D]: down(act(gate(xn)) · up(xn)), or on a
 * sparse (MoE) layer the routed experts, run over pieces of at most the net's T tokens. */
enum tern_status tern_net_mlp(struct tern_net *n, int l, struct tern_view out, struct tern_view xn,
			      const struct tern_net_scratch *s, int64_t T, bool lora);
/* out[T,D] (=) fp32 = the embedding rows of ids (host ids[T], and the same on the device in
 * ids_dev i32 [T]), from the trained copy where embed_tokens is trained in full. */
enum tern_status tern_net_embed(struct tern_net *n, const int32_t *ids, struct tern_view ids_dev,
				struct tern_view out, int64_t T);
/* The final norm (fp32 [D]), RoPE's inv_freq (fp32 [Dh/2]), the lm_head (the trained copy where
 * it is trained in full) and the product precision. */
void tern_net_globals(const struct tern_net *n, struct tern_view *norm, struct tern_view *inv_freq,
		      struct tern_weight *head, enum tern_dtype *prec);
/* The backend the net runs on, and its LoRA rank. */
struct tern_backend *tern_net_backend(const struct tern_net *n);
int64_t tern_net_rank(const struct tern_net *n);

#endif
