/* LoRA parameters on the host, the PEFT adapter directory and training checkpoints.
 *
 * A struct tern_lora_set holds one A [R, I] and B [O, R] (fp32, row-major, torch order) per
 * (layer, module) that LoRA targets. It is what the trainer downloads from the device to save
 * and uploads after loading (lora_model_dir, resume).
 *
 * Adapter directory (shared reference formats.md §3): adapter_config.json (keys sorted, 2-space
 * indent, as PEFT writes it) and adapter_model.safetensors (metadata {"format": "pt"}), tensors
 * base_model.model.model.layers.<l>.<self_attn|mlp>.<module>.lora_<A|B>.weight.
 *
 * Modules trained in full (PEFT's modules_to_save: embed_tokens, lm_head) are whole fp32 copies
 * [V, D] kept beside the LoRA tensors, saved as PEFT saves them: adapter_model.safetensors holds
 * base_model.model.model.embed_tokens.weight / base_model.model.lm_head.weight and
 * adapter_config.json lists them in modules_to_save (optimizer.safetensors: the same names with
 * ".exp_avg" / ".exp_avg_sq").
 *
 * Checkpoint directory <output_dir>/checkpoint-<step>: the adapter files, optimizer.safetensors
 * (AdamW exp_avg / exp_avg_sq of each LoRA tensor, named like the adapter tensor with the suffix
 * ".exp_avg" / ".exp_avg_sq") and trainer_state.json (struct tern_train_state).
 *
 * Every directory is written under a temporary name in the same parent and renamed into place, so
 * a crash never leaves a half-written adapter or checkpoint under the final name. */
#ifndef TERN_TRAIN_ADAPTER_H
#define TERN_TRAIN_ADAPTER_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>

/* The modules LoRA can target, in PEFT's names. */
enum tern_module {
	TERN_MOD_Q,
	TERN_MOD_K,
	TERN_MOD_V,
	TERN_MOD_O,
	TERN_MOD_GATE,
	TERN_MOD_UP,
	TERN_MOD_DOWN,
	TERN_MOD_COUNT
};

/* LoRA on the experts of sparse (MoE) layers: two slots after the modules, as PEFT's
 * target_parameters on transformers 5's fused expert parameters mlp.experts.gate_up_proj
 * [E, 2Fe, D] (gate rows first) and mlp.experts.down_proj [E, D, Fe]. Each slot's tensors are kept
 * in PEFT's file layout: A [E·R, I] (expert e's A_e = rows e·R .. e·R + R − 1), B [O, R·E] (expert
 * e's B_e[o, j] = B[o, j·E + e]); ΔW_e = s · B_e A_e. Bits TERN_LORA_EXP_* of `modules`. */
#define TERN_LORA_EXP_GATE_UP TERN_MOD_COUNT
#define TERN_LORA_EXP_DOWN (TERN_MOD_COUNT + 1)
/* LoRA on the router of sparse layers (transformers 5's MixtralTopKRouter / Qwen3MoeTopKRouter
 * mlp.gate, a bare weight [E, D]; PEFT wraps it as a ParamWrapper whether asked by
 * target_modules "gate" or target_parameters "mlp.gate.weight"): A [R, D], B [E, R], ΔW = s·B A,
 * tensors base_model.model.model.layers.<l>.mlp.gate.lora_A/B.weight. The third expert bit. */
#define TERN_LORA_ROUTER (TERN_MOD_COUNT + 2)
#define TERN_LORA_SLOTS (TERN_MOD_COUNT + 3)

/* The expert slot bit a PEFT target_parameters name selects: 1 for "mlp.experts.gate_up_proj",
 * 2 for "mlp.experts.down_proj", 4 for the router ("mlp.gate.weight", or "gate.weight" as PEFT
 * records target_modules "gate"), 0 for anything else (NULL included). */
unsigned tern_expert_param_bit(const char *name);

/* "q_proj", ... */
const char *tern_module_name(enum tern_module m);
/* "self_attn.q_proj", ..., "mlp.down_proj" */
const char *tern_module_path(enum tern_module m);
/* Parses a PEFT module name ("q_proj"); false when unknown. */
bool tern_module_parse(const char *s, enum tern_module *out);

/* Modules trained in full (PEFT modules_to_save). */
enum tern_full { TERN_FULL_EMBED, TERN_FULL_HEAD, TERN_FULL_COUNT };
/* "embed_tokens", "lm_head" */
const char *tern_full_name(enum tern_full f);
/* Parses a modules_to_save entry: "embed_tokens", "lm_head", or a dotted path ending in one
 * ("model.embed_tokens"), as PEFT matches them; false otherwise. */
bool tern_full_parse(const char *s, enum tern_full *out);

/* A module trained in full: W [O, I] fp32 (embed_tokens and lm_head: [V, D]). */
struct tern_full_tensor {
	int64_t O, I;
	float *W, *m, *v; /* m, v: AdamW moments (with moments only) */
};

struct tern_lora_tensor {
	int64_t I, O;             /* in and out features of the base linear (0: absent in this layer) */
	int64_t r;                /* rows of A, columns of B: R, or E·R for an expert slot */
	float *A, *B;             /* [R, I], [O, R]; NULL when the module is not targeted */
	float *mA, *vA, *mB, *vB; /* AdamW moments (checkpoints only; NULL otherwise) */
};

struct tern_lora_set {
	int L;                      /* layers */
	int64_t R;                  /* rank */
	unsigned modules;           /* bit m set: module m is targeted in every layer (bits
				     * TERN_LORA_EXP_*: the experts of every sparse layer) */
	int64_t E;                  /* experts of a sparse layer (expert slots only) */
	struct tern_lora_tensor *t; /* [L * TERN_LORA_SLOTS], index l * TERN_LORA_SLOTS + m */
	unsigned full;              /* bit f: module f (enum tern_full) is trained in full */
	unsigned full_have;         /* bits of full whose W holds values (read, downloaded); the others
				     * start from the base model's weights (the net initialises them) */
	struct tern_full_tensor f[TERN_FULL_COUNT];
};

static inline struct tern_lora_tensor *tern_lora_at(const struct tern_lora_set *s, int l, enum tern_module m)
{
	return &s->t[l * TERN_LORA_SLOTS + (int)m];
}

/* Allocates a set for L layers, rank R, the modules bit set, with the per-module shapes io[m][0]
 * = I, io[m][1] = O; A and B zeroed; with moments when `moments`. */
enum tern_status tern_lora_set_alloc(struct tern_lora_set **out, int L, int64_t R, unsigned modules,
				     const int64_t io[TERN_MOD_COUNT][2], bool moments);
void tern_lora_set_free(struct tern_lora_set *s);

/* Adds LoRA on the experts: bits 1 (gate_up) and 2 (down) of `experts`, E experts of width Fe and
 * hidden size D in the layers l with sparse[l] (other layers hold no expert tensors), and bit 4 the
 * router [E, D] of those layers; zeroed, with moments when `moments`. */
enum tern_status tern_lora_set_add_experts(struct tern_lora_set *s, unsigned experts, int64_t E, int64_t D,
					   int64_t Fe, const uint8_t *sparse, bool moments);

/* Adds the modules of bit set `full` (enum tern_full), each [V, D], zeroed (full_have 0), with
 * moments when `moments`. */
enum tern_status tern_lora_set_add_full(struct tern_lora_set *s, unsigned full, int64_t V, int64_t D,
					bool moments);

/* The modules_to_save of dir/adapter_config.json as enum tern_full bits: 0 when there are none or
 * the file cannot be read (tern_adapter_read reports those errors). */
unsigned tern_adapter_full(const char *dir);

/* What adapter_config.json records besides the tensors. */
struct tern_adapter_meta {
	const char *base_model; /* base_model_name_or_path: the path or id the config named */
	double alpha, dropout;
	bool rslora;
	/* tern_adapter_write only: the experts' LoRA in the older per-expert module layout
	 * (transformers 4.x + PEFT): per sparse layer l and expert e, gate_up's pair as two modules
	 * with the same A (Mixtral block_sparse_moe.experts.<e>.w1 and w3, Qwen3-MoE
	 * mlp.experts.<e>.gate_proj and up_proj: A_e [R, D], B rows of gate / up [Fe, R]) and down's as
	 * w2 / down_proj (A_e [R, Fe], B_e [D, R]); target_modules lists those modules, no
	 * target_parameters. model_type picks the names ("mixtral", else Qwen3-MoE's). */
	bool per_expert;
	const char *model_type;
};

/* Writes dir/adapter_config.json and dir/adapter_model.safetensors (dir replaced atomically:
 * written as "<dir>.tmp.<pid>" then renamed; an existing dir of that name is moved aside to
 * "<dir>.old.<pid>", the new one renamed in, the old one removed; on any failure nothing is left
 * under the final name but the old directory, and no temporary). An existing dir that holds
 * anything besides adapter_config.json, adapter_model.safetensors and README.md (e.g. an
 * output_dir with checkpoints and metrics.jsonl) is never removed: the two files are replaced in
 * it, each atomically (temporary file, fsync, rename), the tensors first. alpha > 0 and finite,
 * dropout in [0, 1); base_model may be NULL (written as null). adapter_config.json carries the
 * keys PEFT 0.21 writes, sorted, 2-space indent; lora_alpha is an integer when integral;
 * target_modules is a list in enum order. */
enum tern_status tern_adapter_write(const char *dir, const struct tern_lora_set *s,
				    const struct tern_adapter_meta *meta);

/* Reads a PEFT adapter directory into s (experts: PEFT's target_parameters layout, or the older
 * per-expert module layout when the file has per-expert names; its gate and up A must agree) (already allocated with the expected layers, rank, modules
 * and shapes). Fails with one line naming the file and what differs when its peft_type is not
 * LORA, r or target_modules differ from s (compared as sets; a string target_modules, PEFT's
 * regular-expression form, is refused), it uses options tern does not implement (use_dora,
 * fan_in_fan_out, rank_pattern, alpha_pattern, layers_to_transform, bias), a tensor is missing,
 * extra, or has the wrong shape or dtype (F32, F16 and BF16 are accepted and converted). Nothing
 * is stored into s unless everything is valid. *meta_out (optional) receives alpha, dropout and
 * rslora from the file (base_model is not kept: NULL). modules_to_save must name modules of s->full
 * (embed_tokens, lm_head); their tensors are read and their bits set in s->full_have; modules of
 * s->full the adapter does not list keep their bit clear (they start from the base model). */
enum tern_status tern_adapter_read(const char *dir, struct tern_lora_set *s,
				   struct tern_adapter_meta *meta_out);

#define TERN_STATE_FILES 8

/* Everything a resumed run needs besides the LoRA tensors and moments. */
struct tern_train_state {
	int64_t step;        /* optimizer steps done */
	int64_t total_steps; /* the schedule's K */
	int64_t warmup_steps;
	int64_t epoch;  /* epochs completed */
	int64_t row;    /* next row (index into the epoch's order) to read */
	uint64_t seed;  /* config seed */
	int64_t tokens; /* trained tokens so far */
	double elapsed; /* seconds trained so far (for max_time) */
	double last_loss;
	char config_hash[17]; /* hex FNV-1a of the resolved config text, minus output keys */
	/* What the run trained on (version 2; a version 1 state has data_rows 0 and empty strings):
	 * the training rows' count and length, a fingerprint of their tokens, targets, positions and
	 * segments, and one of each dataset file's bytes (the first TERN_STATE_FILES datasets). */
	int64_t schedule_steps; /* the config's total (max_steps or num_epochs) before max_time planned
				 * it down; 0 in a version 1 state */
	int64_t data_rows, data_seq_len;
	char data_fingerprint[17];
	int n_data_files;
	struct {
		char path[512];
		char fingerprint[17];
	} data_files[TERN_STATE_FILES];
	int version; /* of the file read (1 or 2); written as 2 */
};

/* Writes <output_dir>/checkpoint-<state->step> (atomically: temporary name, rename; an existing
 * checkpoint of that step is replaced as in tern_adapter_write; output_dir is created when
 * missing, one level) holding the adapter, the AdamW moments (s->t[].mA... must be non-NULL for
 * targeted modules) and the state; then, when save_total_limit > 0, removes the checkpoint-<n>
 * directories with the smallest n beyond the limit, never the one just written (a removal that
 * fails is logged as a warning; the new checkpoint stands). trainer_state.json: the fields of
 * struct tern_train_state by name plus "format": "tern-trainer-state", "version": 2; seed
 * as a decimal string, doubles in the shortest form that reads back exactly ("nan"/"inf" strings
 * when not finite), so a read restores every field bit for bit. */
enum tern_status tern_checkpoint_write(const char *output_dir, const struct tern_lora_set *s,
				       const struct tern_adapter_meta *meta,
				       const struct tern_train_state *state, int64_t save_total_limit);

/* Reads a checkpoint directory into s (allocated with moments) and *state. Everything is
 * validated before anything is stored (s and *state are unchanged on failure): the adapter as in
 * tern_adapter_read, optimizer.safetensors (exactly the F32 moments of every tensor), and
 * trainer_state.json (format, version 1 or 2, every field; step equal to the n of a
 * checkpoint-<n> directory name), then the checksums of a version-2 checkpoint (a file whose
 * SHA-256 differs from checksums.sha256 fails with one line naming it; version 1 had none).
 * Checkpoint tensors must be F32. */
enum tern_status tern_checkpoint_read(const char *dir, struct tern_lora_set *s,
				      struct tern_train_state *state);

/* The latest complete checkpoint-<n> directory in output_dir (largest n among directories named
 * exactly checkpoint-<digits> holding all four files; temporary "*.tmp.*" / "*.old.*" names are
 * ignored) into path[cap] as "<output_dir>/checkpoint-<n>"; false when there is none, the
 * directory cannot be listed, or the path does not fit in cap. */
bool tern_checkpoint_latest(const char *output_dir, char *path, size_t cap);

#endif
