/* The training configuration: one YAML file with axolotl's keys plus tern's own (docs/CONFIG.md).
 *
 * Parsed with libyaml's document API. Every error is one line naming the file, the line, the key,
 * the value and what is allowed:
 *	"configs/x.yaml:12: lora_r: 'abc' is not an integer (allowed: 1..4096)"
 * Unknown keys are rejected with a did-you-mean suggestion (typos only). Axolotl keys that only
 * steer its Python engine (deepspeed, attn_implementation, wandb_*, bf16, ...: the table in
 * config_keys.c) are accepted with one one-line note each that says what tern does instead (logged
 * at TERN_LOG_NOTE_LEVEL as "note: ...", shown by default, and kept in cfg->notes) or rejected with
 * a reason; none is silently ignored. The text must be one UTF-8 YAML document nested at most 64
 * levels deep; anything else is refused before libyaml builds the document.
 *
 * Life cycle: tern_config_load() (or _parse() on text) fills defaults, applies the file and
 * checks the keys together; tern_config_set() applies one `--set key=value` override (dotted keys
 * reach into lists and maps: datasets.0.path, special_tokens.pad_token); tern_config_check()
 * re-checks the keys together after overrides; tern_config_write() renders the resolved config
 * as YAML that parses back to the same config. */
#ifndef TERN_TRAIN_CONFIG_H
#define TERN_TRAIN_CONFIG_H

#include "core/core.h"
#include "tern/model.h" /* enum tern_base_format */

#include <stdbool.h>
#include <stdint.h>

enum tern_adapter { TERN_ADAPTER_LORA, TERN_ADAPTER_QLORA };

/* datasets[].type */
enum tern_ds_type {
	TERN_DS_ALPACA,       /* {"instruction", "input", "output"} */
	TERN_DS_CHAT,         /* chat_template: {"messages": [...]} or sharegpt {"conversations": [...]} */
	TERN_DS_COMPLETION,   /* {"text"} */
	TERN_DS_PRETOKENIZED, /* {"input_ids", optional "labels"} */
};

/* chat_template */
enum tern_chat_template {
	TERN_TEMPLATE_TOKENIZER_DEFAULT, /* render tokenizer_config.json's Jinja template */
	TERN_TEMPLATE_CHATML,
	TERN_TEMPLATE_LLAMA3,
	TERN_TEMPLATE_MISTRAL_V1,
	TERN_TEMPLATE_JINJA, /* chat_template_jinja: template text or a .jinja file */
	TERN_TEMPLATE_QWEN3, /* built-in Jinja (data/chat.c) */
	TERN_TEMPLATE_GEMMA, /* built-in Jinja (data/chat.c) */
	/* built-in Jinja: the turns of Mistral v0.3, Mistral Nemo, Phi-3-mini, Phi-3.5-mini */
	TERN_TEMPLATE_MISTRAL_V2V3,
	TERN_TEMPLATE_MISTRAL_V3_TEKKEN,
	TERN_TEMPLATE_PHI_3,
	TERN_TEMPLATE_PHI_35,
};

/* gradient_checkpointing: off, on (the layer inputs kept on the device where they fit), offload
 * (kept in host memory) */
enum tern_ckpt { TERN_CKPT_OFF, TERN_CKPT_ON, TERN_CKPT_OFFLOAD };

enum tern_lr_sched {
	TERN_SCHED_COSINE,
	TERN_SCHED_LINEAR,
	TERN_SCHED_CONSTANT,
	TERN_SCHED_CONSTANT_WARMUP, /* constant_with_warmup */
	TERN_SCHED_COSINE_MIN_LR,   /* cosine_with_min_lr */
};

/* λ(k) of optimizer step k (0-based) with W warmup steps and K steps in all, as transformers'
 * get_{cosine,linear,constant}_schedule_with_warmup and get_cosine_with_min_lr_schedule_with_warmup
 * compute it (trainer.c). min_ratio: the cosine floor (cosine_min_lr_ratio; axolotl applies it to
 * plain cosine too, with the same formula); 0 for the others. */
double tern_lr_lambda(enum tern_lr_sched s, int64_t k, int64_t W, int64_t K, double min_ratio);

enum tern_backend_kind {
	TERN_BACKEND_AUTO,
	TERN_BACKEND_VULKAN,
	TERN_BACKEND_CUDA,
	TERN_BACKEND_CPU, /* the fast CPU backend */
	TERN_BACKEND_REF  /* the CPU reference (tests, checks) */
};
/* "auto", "vulkan", "cuda", "cpu", "ref": the name tern_backend_create takes. */
const char *tern_backend_kind_name(enum tern_backend_kind k);

enum tern_compute_dtype { TERN_COMPUTE_AUTO, TERN_COMPUTE_F32, TERN_COMPUTE_F16, TERN_COMPUTE_BF16 };

/* One datasets[] entry. Optional keys are NULL/0 when not given. */
struct tern_dataset_cfg {
	char *path; /* a JSONL or JSON-array file, or a directory holding data_files */
	enum tern_ds_type type;
	char *split;       /* "train" or a slice of it ("train[:20%]"); NULL = all rows */
	char **data_files; /* files to read instead of path (relative ones: under path) */
	int n_data_files;
	char *field_messages; /* chat: the key of the message list (NULL: messages/conversations) */
	char *role_key;       /* chat: message_property_mappings.role (NULL: role/from) */
	char *content_key;    /* chat: message_property_mappings.content (NULL: content/value) */
	char *field;          /* completion: the text field (NULL: text) */
};

/* datasets[].split as the datasets library reads it: a split name and an optional slice
 * [from:to] of rows, each bound an integer (negative: from the end) or a percentage. */
struct tern_split {
	char name[32];
	bool has_from, has_to, pct; /* pct: both bounds are percentages */
	int64_t from, to;
};

/* Parses "train", "train[:20%]", "train[10:]", "train[-100:]"; false when it is none of them. */
bool tern_split_parse(const char *s, struct tern_split *out);

/* The rows [*a, *b) of n that the slice selects (the datasets library's rounding: percentages to
 * the closest row, halves to even). */
void tern_split_rows(const struct tern_split *sp, int64_t n, int64_t *a, int64_t *b);

#define TERN_CONFIG_MAX_KEYS 96

struct tern_config {
	char *file; /* name used in messages ("configs/x.yaml") */

	/* model and adapter */
	char *base_model;        /* a directory or a Hub id (include/tern/hub.h) */
	char *revision_of_model; /* of a Hub id; NULL = main */
	bool load_in_4bit;
	enum tern_adapter adapter;
	int64_t lora_r;
	double lora_alpha, lora_dropout;
	char **lora_target_modules; /* NULL-free array of n_target_modules strings */
	int n_target_modules;
	char **lora_target_parameters; /* mixtures of experts: mlp.experts.gate_up_proj / down_proj */
	int n_target_parameters;
	int lora_expert_layout; /* the final adapter's experts: 0 peft (target_parameters), 1 per_expert
				 * (the older per-expert module layout) */
	bool lora_target_linear;
	char **lora_modules_to_save; /* PEFT modules_to_save: embed_tokens, lm_head (trained in full) */
	int n_modules_to_save;
	char *lora_model_dir; /* NULL = none */
	bool use_rslora;
	/* model_config / overrides_of_model_config (axolotl): mixture-of-experts overrides of
	 * config.json; -1 = as config.json says */
	int output_router_logits;    /* 0, 1 */
	double router_aux_loss_coef; /* >= 0 */

	/* data */
	struct tern_dataset_cfg *datasets;
	int n_datasets;
	enum tern_chat_template chat_template;
	char *chat_template_jinja; /* chat_template: jinja (NULL = unset) */
	double val_set_size;       /* < 1: fraction of the samples; >= 1: a count */
	int64_t sequence_len;
	bool sample_packing;
	bool pad_to_sequence_len; /* pad each micro-batch to sequence_len (always with sample_packing);
				   * false: only to its longest row */
	bool train_on_inputs;
	char *bos_token, *eos_token, *pad_token, *unk_token; /* special_tokens; NULL = tokenizer's */

	/* schedule */
	int64_t micro_batch_size, gradient_accumulation_steps;
	double num_epochs;
	int64_t max_steps; /* 0 = from num_epochs */
	double learning_rate;
	enum tern_lr_sched lr_scheduler;
	int64_t warmup_steps;
	double warmup_ratio;
	double cosine_min_lr_ratio; /* floor of the cosine schedules (fraction of learning_rate) */
	double weight_decay, max_grad_norm, adam_beta1, adam_beta2, adam_epsilon;
	/* TERN_CKPT_OFF, ON, or OFFLOAD (the layer inputs in host memory): true where tested as a
	 * boolean */
	enum tern_ckpt gradient_checkpointing;
	/* tiled_mlp: the dense MLP in token shards (tern_net_opts mlp_shards), with checkpointing;
	 * tiled_mlp_num_shards 0 = ceil(tokens of a micro-batch / hidden_size), as axolotl's ALST
	 * (tern_plan_mlp_shards) */
	bool tiled_mlp;
	int64_t tiled_mlp_num_shards;
	int64_t seed;
	int64_t max_time; /* seconds; 0 = no time budget */

	/* outputs */
	char *output_dir;
	int64_t save_steps, saves_per_epoch, save_total_limit; /* 0 = off / unlimited */
	int64_t eval_steps, evals_per_epoch;
	int64_t logging_steps;
	char **eval_prompts;          /* each a JSON text: a string (raw prompt) or a list of messages */
	int n_eval_prompts;           /* (the count follows the pointer, as a list key's) */
	int64_t eval_max_new_tokens;  /* greedy tokens per eval prompt */
	bool use_tensorboard;         /* TensorBoard event files under <output_dir>/runs/ */
	char *resume_from_checkpoint; /* NULL, "auto" or a checkpoint directory */

	/* placement */
	enum tern_base_format
		base_format; /* auto: qlora/load_in_4bit -> nf4-dq; else the checkpoint's dtype */
	enum tern_backend_kind backend;
	int64_t device;
	int64_t device_memory, host_memory; /* bytes; 0 = auto */
	char *offload_dir;                  /* NULL = <output_dir>/offload */
	enum tern_compute_dtype compute_dtype;
	char *layer_split; /* NULL: several ranks split the data; "auto" or "k1,k2,...": they split the
			    * layers (pipeline stages; train/plan.h tern_plan_split) */

	/* one-line notes about accepted keys tern ignores or reinterprets */
	char **notes;
	int n_notes;

	/* private: line where each key was set (0 = default, -1 = --set) */
	int set_line[TERN_CONFIG_MAX_KEYS];
	bool warned_no_eval; /* private: tern_config_check runs again after --set; warn once */
};

/* Reads and parses a YAML file; *out is freed with tern_config_free. */
enum tern_status tern_config_load(struct tern_config **out, const char *path);

/* Parses YAML text (len bytes); name is the file name used in messages. */
enum tern_status tern_config_parse(struct tern_config **out, const char *name, const char *text, size_t len);

/* A config holding only defaults (base_model and datasets unset: check() fails until set). */
enum tern_status tern_config_defaults(struct tern_config **out);

void tern_config_free(struct tern_config *cfg);

/* Applies one override "key=value"; value is YAML ("[q_proj, v_proj]", "{path: a, type: alpaca}",
 * "null" resets to the default). Messages read "--set lora_r: ...". Call tern_config_check after
 * the last override. On failure cfg keeps its previous value for that key. */
enum tern_status tern_config_set(struct tern_config *cfg, const char *assignment);

/* Checks the keys together (required keys, conflicting keys, adapter vs base format) and resolves
 * derived values (qlora/load_in_4bit -> base_format nf4-dq). Called by load/parse. */
enum tern_status tern_config_check(struct tern_config *cfg);

/* The resolved config as YAML (malloc'd, NUL-terminated); parses back to an equal config. */
enum tern_status tern_config_write(const struct tern_config *cfg, char **yaml);

/* Writes tern_config_write's text to path (through a temporary file renamed into place). */
enum tern_status tern_config_save(const struct tern_config *cfg, const char *path);

/* Names of enum values as written in YAML. */
const char *tern_ds_type_name(enum tern_ds_type t);
const char *tern_chat_template_name(enum tern_chat_template t);
const char *tern_lr_sched_name(enum tern_lr_sched s);

/* Parses "11.5GB", "512MB", "1024" (bytes), "auto" (0). KB/MB/GB/TB and KiB/MiB/GiB/TiB are all
 * powers of 1024. Returns false when the text is not a size. */
bool tern_parse_size(const char *s, int64_t *bytes);

/* Parses "8h", "90m", "1h30m", "45s", "2d" or a plain number of seconds. */
bool tern_parse_duration(const char *s, int64_t *seconds);

#endif
