/* Hugging Face config.json of a causal LM: every field that changes the math, with the defaults
 * of shared reference formats.md §4 when a field is absent.
 *
 * Supported for loading: model_type llama, mistral, qwen2, qwen3 and the mixtures of experts
 * mixtral and qwen3_moe, and bitnet: with quantization_config {quant_method: bitnet} in any of
 * transformers' modes (linear_class bitlinear: packed 2-bit weights + weight_scale; autobitlinear
 * offline: packed or -1/0/1 weights + weight_scale; autobitlinear online: master weights), or
 * without one (master weights, quantized on load). 1bitLLM-style llama configs (weight_bits,
 * input_bits) are refused in one line.
 * Any other model_type is rejected naming it and the supported list.
 *
 * Errors are one line naming the file, the key, the value and what was expected, e.g.
 *	"m/config.json: num_attention_heads = 0: expected an integer from 1 to 65536".
 *
 * Shape letters: D hidden, F FFN, L layers, H heads, Hkv KV heads, Dh head dim, V vocab,
 * E experts. */
#ifndef TERN_MODEL_CONFIG_H
#define TERN_MODEL_CONFIG_H

#include "backend/backend.h"
#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum tern_arch {
	TERN_ARCH_LLAMA,
	TERN_ARCH_MISTRAL,
	TERN_ARCH_QWEN2,
	TERN_ARCH_QWEN3,
	TERN_ARCH_MIXTRAL,   /* MoE: block_sparse_moe.gate, experts.<e>.w1/w3/w2 */
	TERN_ARCH_BITNET,    /* BitNet b1.58: sub-norms, relu², ternary + 8-bit activations */
	TERN_ARCH_QWEN3_MOE, /* MoE: q/k norms, mlp.gate, mlp.experts.<e>.gate/up/down_proj */
	TERN_ARCH_COUNT
};

enum tern_rope_type {
	TERN_ROPE_DEFAULT, /* inv_freq[j] = 1 / theta^(2j/Dh) */
	TERN_ROPE_LINEAR,  /* positions divided by factor */
	TERN_ROPE_LLAMA3,  /* formats.md §4: factor, low/high_freq_factor, original_max_pos */
};

/* quantization_config of the checkpoint. */
enum tern_qmethod {
	TERN_QMETHOD_NONE,
	TERN_QMETHOD_BNB_4BIT, /* bitsandbytes load_in_4bit, nf4 */
	TERN_QMETHOD_BITNET,   /* BitNet packed or online (bitnet only) */
};

struct tern_model_config {
	enum tern_arch arch;
	char model_type[32];
	int64_t D, F, L, H, Hkv, Dh, V;
	int64_t max_pos;   /* max_position_embeddings */
	double rms_eps;    /* rms_norm_eps */
	double rope_theta; /* from rope_theta or rope_parameters.rope_theta */
	enum tern_rope_type rope_type;
	double rope_factor;                                 /* linear, llama3 */
	double rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
	int64_t rope_original_max_pos;                      /* llama3 */
	bool qkv_bias;             /* q/k/v projections have a bias (Qwen2 always; attention_bias) */
	bool o_bias;               /* o_proj has a bias (attention_bias of Llama/Qwen3) */
	bool mlp_bias;             /* Llama's mlp_bias */
	bool qk_norm;              /* Qwen3: RMSNorm over Dh on q and k before RoPE */
	int64_t sliding_window;    /* 0 = full attention */
	int64_t max_window_layers; /* Qwen2/3: layers >= this use the window (when windowed) */
	bool tie_embeddings;       /* tie_word_embeddings: no lm_head.weight */
	enum tern_act act;         /* hidden_act */
	enum tern_dtype dtype;     /* torch_dtype / dtype (F32, F16 or BF16); BF16 when absent */
	/* mixtures of experts (mixtral, qwen3_moe; E = 0 otherwise). A sparse layer replaces the MLP
	 * by a router [E, D] and E SwiGLU experts of width Fe; the token's top_k experts by softmax
	 * probability (renormalised over the k when norm_topk) are summed, weighted. */
	int64_t E, top_k;       /* num_local_experts (qwen3_moe: num_experts), num_experts_per_tok */
	int64_t Fe;             /* expert width: Mixtral intermediate_size; qwen3_moe moe_intermediate_size */
	bool norm_topk;         /* Mixtral always; qwen3_moe norm_topk_prob */
	int64_t sparse_step;    /* qwen3_moe decoder_sparse_step: layer l is sparse when (l+1) % step == 0 */
	uint64_t mlp_only[64];  /* qwen3_moe mlp_only_layers as a bit set (dense layers) */
	bool router_logits;     /* output_router_logits: add the load-balancing loss */
	double router_aux_coef; /* router_aux_loss_coef */
	/* quantization_config */
	enum tern_qmethod qmethod;
	bool bnb_double_quant;        /* bnb_4bit_use_double_quant */
	enum tern_dtype bnb_compute;  /* bnb_4bit_compute_dtype */
	char bitnet_linear_class[32]; /* "autobitlinear" or "bitlinear" */
	char bitnet_mode[16];         /* "offline" (packed) or "online" */
	bool bitnet_rms_norm;         /* use_rms_norm (refused) */
};

/* Whether a bitnet checkpoint stores its projections quantized (a weight_scale per projection;
 * bitlinear: packed 2-bit; autobitlinear offline: packed or unpacked -1/0/1) rather than as master
 * weights quantized on load (autobitlinear online, or no quantization_config). */
static inline bool tern_bitnet_offline(const struct tern_model_config *c)
{
	return c->arch == TERN_ARCH_BITNET && c->qmethod == TERN_QMETHOD_BITNET &&
	       (!strcmp(c->bitnet_linear_class, "bitlinear") || !strcmp(c->bitnet_mode, "offline"));
}

/* Parses config.json text (json[len], not necessarily NUL-terminated). path names the file in
 * messages. Fills *cfg on success; on failure *cfg is unspecified. */
enum tern_status tern_model_config_parse(const char *json, size_t len, const char *path,
					 struct tern_model_config *cfg);

/* Reads <dir>/config.json and parses it. */
enum tern_status tern_model_config_load(const char *dir, struct tern_model_config *cfg);

/* TERN_OK for the architectures tern can load; TERN_E_UNSUPPORTED with
 * "<path>: model_type mixtral is not supported yet (...)" otherwise. */
enum tern_status tern_model_config_check(const struct tern_model_config *cfg, const char *path);

const char *tern_arch_name(enum tern_arch a);

/* Whether layer l of a MoE config is sparse (router + experts); false for dense models. */
bool tern_model_layer_moe(const struct tern_model_config *cfg, int64_t l);

/* Reads a whole small file (≤ max bytes) into a NUL-terminated malloc'ed buffer. */
enum tern_status tern_read_file(const char *path, size_t max, char **out, size_t *len);

#endif
