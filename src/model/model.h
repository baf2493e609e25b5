/* Model loading inside the library: the tensor map of an architecture (names and shapes from
 * the config, shared reference formats.md §4), the loaded model (config + pack image) and the
 * per-layer index the compute code uses to build struct tern_weight.
 *
 * Roles are the tensors a decoder layer (or the model around it) may have. Projections (q, k, v,
 * o, gate, up, down) take the base format; everything else keeps the checkpoint's dtype. */
#ifndef TERN_MODEL_MODEL_H
#define TERN_MODEL_MODEL_H

#include "formats/safetensors.h"
#include "model/config.h"
#include "model/pack.h"
#include "tern/model.h"

enum tern_role {
	/* globals */
	TERN_ROLE_EMBED, /* model.embed_tokens.weight [V, D] */
	TERN_ROLE_NORM,  /* model.norm.weight [D] */
	TERN_ROLE_HEAD,  /* lm_head.weight [V, D] (absent when tied) */
	/* per layer */
	TERN_ROLE_ATTN_NORM, /* input_layernorm [D] */
	TERN_ROLE_Q,         /* [H*Dh, D] */
	TERN_ROLE_K,         /* [Hkv*Dh, D] */
	TERN_ROLE_V,         /* [Hkv*Dh, D] */
	TERN_ROLE_O,         /* [D, H*Dh] */
	TERN_ROLE_Q_BIAS,
	TERN_ROLE_K_BIAS,
	TERN_ROLE_V_BIAS,
	TERN_ROLE_O_BIAS,
	TERN_ROLE_Q_NORM,   /* [Dh] */
	TERN_ROLE_K_NORM,   /* [Dh] */
	TERN_ROLE_MLP_NORM, /* post_attention_layernorm [D] */
	TERN_ROLE_GATE,     /* [F, D] */
	TERN_ROLE_UP,       /* [F, D] */
	TERN_ROLE_DOWN,     /* [D, F] */
	TERN_ROLE_GATE_BIAS,
	TERN_ROLE_UP_BIAS,
	TERN_ROLE_DOWN_BIAS,
	/* sparse (MoE) layers, instead of gate/up/down */
	TERN_ROLE_ROUTER,   /* [E, D]: Mixtral block_sparse_moe.gate, Qwen3-MoE mlp.gate; kept as stored */
	TERN_ROLE_EXP_GATE, /* [Fe, D] per expert: Mixtral experts.<e>.w1, Qwen3-MoE gate_proj */
	TERN_ROLE_EXP_UP,   /* [Fe, D]: w3, up_proj */
	TERN_ROLE_EXP_DOWN, /* [D, Fe]: w2, down_proj */
	/* BitNet b1.58: RMSNorms inside the blocks */
	TERN_ROLE_ATTN_SUB_NORM, /* self_attn.attn_sub_norm [D] (= H*Dh), before o_proj */
	TERN_ROLE_FFN_SUB_NORM,  /* mlp.ffn_sub_norm [F], before down_proj */
	TERN_ROLE_COUNT
};

/* A pack record's role field: the role in the low 8 bits, expert + 1 above (0: not an expert). */
static inline uint32_t tern_pack_role(int role, int expert)
{
	return (uint32_t)role | (uint32_t)(expert + 1) << 8;
}
static inline int tern_pack_role_expert(uint32_t r) { return (int)(r >> 8) - 1; }

/* r: an enum tern_role or a pack record's role field. */
static inline bool tern_role_is_proj(int r)
{
	r &= 0xff;
	return (r >= TERN_ROLE_Q && r <= TERN_ROLE_O) || (r >= TERN_ROLE_GATE && r <= TERN_ROLE_DOWN) ||
	       (r >= TERN_ROLE_EXP_GATE && r <= TERN_ROLE_EXP_DOWN);
}

/* One expected tensor. */
struct tern_tensor_spec {
	char name[TERN_PACK_NAME];
	int layer; /* -1 global */
	enum tern_role role;
	int expert; /* expert roles: 0..E-1; -1 otherwise */
	int ndim;
	int64_t shape[2]; /* vectors: [n, 1] */
};

/* The tensors a config implies, in pack order (globals, then layer by layer). *out is malloc'ed. */
enum tern_status tern_model_tensor_map(const struct tern_model_config *cfg, struct tern_tensor_spec **out,
				       size_t *n);

struct tern_model {
	char dir[4096];
	struct tern_model_config cfg;
	struct tern_pack *pack;
	int (*layer)[TERN_ROLE_COUNT]; /* [L][role]: index into pack->t, or -1 */
	int global[3];                 /* embed, norm, head (-1 when tied) */
	int *expert;                   /* [L][E][3] MoE: gate, up, down of each expert (-1: dense layer) */
	struct tern_model_load_report report;
};

/* The pack tensor of a role (NULL when the model has none). */
const struct tern_pack_tensor *tern_model_tensor(const struct tern_model *m, int layer, enum tern_role role);

/* The pack tensor of expert e's k-th projection (0 gate, 1 up, 2 down) in layer l; NULL when the
 * layer is dense. */
const struct tern_pack_tensor *tern_model_expert(const struct tern_model *m, int layer, int e, int k);

/* Dequantizes (or converts) a pack tensor to fp32: out[shape[0] * shape[1]]. */
enum tern_status tern_pack_tensor_f32(const struct tern_pack *p, const struct tern_pack_tensor *t,
				      float *out);

/* Converts a safetensors F32/F16/BF16 tensor to fp32: out[numel]. */
enum tern_status tern_st_tensor_f32(const struct tern_st_tensor *t, float *out);

#endif
