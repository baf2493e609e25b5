/* The training configuration: YAML (libyaml document API) with axolotl's keys plus tern's own.
 * One table lists every key with its kind, range and field; parse, --set, reset-to-default and
 * the writer all walk it, so a key added here is parsed, overridable, written and documented
 * (docs/CONFIG.md) in one place. */
#define _POSIX_C_SOURCE 200809L
#include "train/config.h"
#include "train/config_keys.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <jansson.h>
#include <yaml.h>

enum kind {
	K_STR,      /* char *; null or "" = unset (NULL) */
	K_BOOL,     /* bool */
	K_BOOLX,    /* int: 0 false, 1 true, 2 + i for names[i] (a boolean, or a word besides) */
	K_INT,      /* int64_t in [lo, hi] */
	K_FLOAT,    /* double in [lo, hi] (lo_open: lo excluded; hi_open: hi excluded) */
	K_ENUM,     /* int (enum) indexing names[] */
	K_SIZE,     /* int64_t bytes, "auto" = 0 */
	K_DURATION, /* int64_t seconds, 0 = none */
	K_LIST,     /* char ** + int count (the count follows the pointer in the struct) */
	K_DATASETS, /* datasets */
	K_PROMPTS,  /* eval_prompts: char ** of JSON texts + int count (as K_LIST) */
	K_SPECIAL,  /* special_tokens: {bos_token, eos_token, pad_token, unk_token} */
	K_MODELCFG, /* model_config: {output_router_logits, router_aux_loss_coef} applied, others noted */
	K_OPTIM,    /* optimizer: adamw_torch, or a noted alias */
	K_NOTE,     /* accepted, ignored with a note */
	K_REJECT,   /* false/null accepted; anything else rejected with msg */
};

struct key {
	const char *name;
	enum kind kind;
	size_t off;
	double lo, hi;
	const char *const *names; /* K_ENUM */
	const char *allowed;      /* for messages and docs */
	const char *msg;          /* K_NOTE / K_REJECT */
	bool lo_open, hi_open;
};

static const char *const adapter_names[] = {"lora", "qlora", NULL};
static const char *const ckpt_names[] = {"offload", NULL}; /* TERN_CKPT_OFFLOAD = 2 + 0 */
static const char *const ds_type_names[] = {"alpaca", "chat_template", "completion", "pretokenized", NULL};
static const char *const template_names[] = {
	"tokenizer_default", "chatml", "llama3", "mistral_v1", "jinja", "qwen3", "gemma", "mistral_v2v3",
	"mistral_v3_tekken", "phi_3",  "phi_35", NULL};
static const char *const sched_names[] = {
	"cosine", "linear", "constant", "constant_with_warmup", "cosine_with_min_lr", NULL};
static const char *const base_names[] = {"auto", "nf4", "nf4-dq", "ternary", "bf16", "f16", "f32", NULL};
static const char *const backend_names[] = {"auto", "vulkan", "cuda", "cpu", "ref", NULL};

const char *tern_backend_kind_name(enum tern_backend_kind k)
{
	return k >= TERN_BACKEND_AUTO && k <= TERN_BACKEND_REF ? backend_names[k] : "auto";
}
static const char *const compute_names[] = {"auto", "f32", "f16", "bf16", NULL};
/* "all-linear" (PEFT's value) stands alone and means lora_target_linear: true */
/* "gate": the router of a mixture of experts (PEFT wraps its bare weight as a target parameter) */
static const char *const module_names[] = {"q_proj",  "k_proj",    "v_proj",     "o_proj", "gate_proj",
					   "up_proj", "down_proj", "all-linear", "gate",   NULL};
static const char *const save_names[] = {"embed_tokens", "lm_head", NULL};
/* PEFT target_parameters on transformers 5's fused experts (mixtral, qwen3_moe) */
static const char *const param_names[] = {"mlp.experts.gate_up_proj", "mlp.experts.down_proj",
					  "mlp.gate.weight", "gate.weight", NULL};
static const char *const layout_names[] = {"peft", "per_expert", NULL};

#define F(field) offsetof(struct tern_config, field)
/* a K_LIST's count: the int right after its pointer */
#define list_count(p) ((int *)((char *)(p) + sizeof(char **)))
#define NOTE_AUTO                                                                                        \
	"products run as compute_dtype (default auto: bf16 on CUDA cards of compute 8.0 and later, f16 " \
	"with power-of-two scaling on other GPUs, f32 on CPUs; "
#define NOTE_BF16 \
	NOTE_AUTO "compute_dtype: bf16 forces bf16); LoRA weights, gradients and AdamW state stay f32"
#define NOTE_FP16 NOTE_AUTO "compute_dtype: f16 forces f16); LoRA weights, gradients and AdamW state stay f32"
#define NOTE_TF32 "tf32 is a CUDA matmul mode; tern's f32 products (compute_dtype: f32) are full f32"
#define NOTE_ARCH "tern reads the architecture from config.json and the tokenizer from tokenizer.json"
#define NOTE_INT8                                                                                             \
	"tern has no LLM.int8 base; the base stays in the checkpoint's dtype (base_format: auto), or nf4-dq " \
	"with load_in_4bit: true"

static const struct key keys[] = {
	{"base_model", K_STR, F(base_model), 0, 0, NULL, "a model directory or a Hub id", NULL, 0, 0},
	{"revision_of_model", K_STR, F(revision_of_model), 0, 0, NULL, "a branch, tag or commit", NULL, 0, 0},
	{"load_in_4bit", K_BOOL, F(load_in_4bit), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"adapter", K_ENUM, F(adapter), 0, 0, adapter_names, NULL, NULL, 0, 0},
	{"lora_r", K_INT, F(lora_r), 1, 4096, NULL, "1..4096", NULL, 0, 0},
	{"lora_alpha", K_FLOAT, F(lora_alpha), 0, 1e6, NULL, "> 0", NULL, 1, 0},
	{"lora_dropout", K_FLOAT, F(lora_dropout), 0, 1, NULL, "0 <= p < 1", NULL, 0, 1},
	{"lora_target_modules", K_LIST, F(lora_target_modules), 0, 0, module_names, NULL, NULL, 0, 0},
	{"lora_target_parameters", K_LIST, F(lora_target_parameters), 0, 0, param_names, NULL, NULL, 0, 0},
	{"lora_expert_layout", K_ENUM, F(lora_expert_layout), 0, 0, layout_names, NULL, NULL, 0, 0},
	{"lora_target_linear", K_BOOL, F(lora_target_linear), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"lora_modules_to_save", K_LIST, F(lora_modules_to_save), 0, 0, save_names, NULL, NULL, 0, 0},
	{"lora_model_dir", K_STR, F(lora_model_dir), 0, 0, NULL, "a PEFT adapter directory", NULL, 0, 0},
	{"use_rslora", K_BOOL, F(use_rslora), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"model_config", K_MODELCFG, 0, 0, 0, NULL, "a mapping of config.json keys", NULL, 0, 0},
	{"overrides_of_model_config", K_MODELCFG, 0, 0, 0, NULL, "a mapping of config.json keys", NULL, 0, 0},
	{"datasets", K_DATASETS, F(datasets), 0, 0, NULL, "a list of {path, type}", NULL, 0, 0},
	{"chat_template", K_ENUM, F(chat_template), 0, 0, template_names, NULL, NULL, 0, 0},
	{"chat_template_jinja", K_STR, F(chat_template_jinja), 0, 0, NULL, "Jinja text or a .jinja file",
	 NULL, 0, 0},
	{"val_set_size", K_FLOAT, F(val_set_size), 0, 1e15, NULL, "a fraction < 1 or a count >= 1", NULL, 0,
	 0},
	{"sequence_len", K_INT, F(sequence_len), 2, 1048576, NULL, "2..1048576", NULL, 0, 0},
	{"sample_packing", K_BOOL, F(sample_packing), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"pad_to_sequence_len", K_BOOL, F(pad_to_sequence_len), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"train_on_inputs", K_BOOL, F(train_on_inputs), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"special_tokens", K_SPECIAL, F(bos_token), 0, 0, NULL, "bos_token, eos_token, pad_token, unk_token",
	 NULL, 0, 0},
	{"micro_batch_size", K_INT, F(micro_batch_size), 1, 65536, NULL, "1..65536", NULL, 0, 0},
	{"gradient_accumulation_steps", K_INT, F(gradient_accumulation_steps), 1, 65536, NULL, "1..65536",
	 NULL, 0, 0},
	{"num_epochs", K_FLOAT, F(num_epochs), 0, 1e6, NULL, "> 0", NULL, 1, 0},
	{"max_steps", K_INT, F(max_steps), 0, 1e12, NULL, "0 (use num_epochs) or more", NULL, 0, 0},
	{"max_time", K_DURATION, F(max_time), 0, 0, NULL, "a duration like 8h, 90m, 1h30m, 45s", NULL, 0, 0},
	{"learning_rate", K_FLOAT, F(learning_rate), 0, 10, NULL, "0 < lr <= 10", NULL, 1, 0},
	{"lr_scheduler", K_ENUM, F(lr_scheduler), 0, 0, sched_names, NULL, NULL, 0, 0},
	{"warmup_steps", K_INT, F(warmup_steps), 0, 1e12, NULL, "0 or more", NULL, 0, 0},
	{"warmup_ratio", K_FLOAT, F(warmup_ratio), 0, 1, NULL, "0..1", NULL, 0, 0},
	{"cosine_min_lr_ratio", K_FLOAT, F(cosine_min_lr_ratio), 0, 1, NULL,
	 "0..1 (the floor of the cosine schedules, as a fraction of learning_rate)", NULL, 0, 0},
	{"optimizer", K_OPTIM, 0, 0, 0, NULL, "adamw_torch (or an adamw variant, run as fp32 AdamW)", NULL, 0,
	 0},
	{"weight_decay", K_FLOAT, F(weight_decay), 0, 1e3, NULL, "0 or more", NULL, 0, 0},
	{"max_grad_norm", K_FLOAT, F(max_grad_norm), 0, 1e12, NULL, "0 (no clipping) or more", NULL, 0, 0},
	{"adam_beta1", K_FLOAT, F(adam_beta1), 0, 1, NULL, "0 <= b < 1", NULL, 0, 1},
	{"adam_beta2", K_FLOAT, F(adam_beta2), 0, 1, NULL, "0 <= b < 1", NULL, 0, 1},
	{"adam_epsilon", K_FLOAT, F(adam_epsilon), 0, 1, NULL, "0 < eps <= 1", NULL, 1, 0},
	{"gradient_checkpointing", K_BOOLX, F(gradient_checkpointing), 0, 0, ckpt_names,
	 "true, false, offload", NULL, 0, 0},
	{"tiled_mlp", K_BOOL, F(tiled_mlp), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"tiled_mlp_num_shards", K_INT, F(tiled_mlp_num_shards), 0, 65536, NULL,
	 "0 (auto: tokens of a micro-batch / hidden_size) or 1..65536", NULL, 0, 0},
	{"seed", K_INT, F(seed), 0, 9.2e18, NULL, "0 or more", NULL, 0, 0},
	{"output_dir", K_STR, F(output_dir), 0, 0, NULL, "a directory", NULL, 0, 0},
	{"save_steps", K_INT, F(save_steps), 0, 1e12, NULL, "0 (off) or more", NULL, 0, 0},
	{"saves_per_epoch", K_INT, F(saves_per_epoch), 0, 1e6, NULL, "0 (off) or more", NULL, 0, 0},
	{"save_total_limit", K_INT, F(save_total_limit), 0, 1e6, NULL, "0 (unlimited) or more", NULL, 0, 0},
	{"eval_steps", K_INT, F(eval_steps), 0, 1e12, NULL, "0 (off) or more", NULL, 0, 0},
	{"evals_per_epoch", K_INT, F(evals_per_epoch), 0, 1e6, NULL, "0 (off) or more", NULL, 0, 0},
	{"eval_prompts", K_PROMPTS, F(eval_prompts), 0, 0, NULL,
	 "a list of prompts: strings, or lists of {role, content} messages", NULL, 0, 0},
	{"eval_max_new_tokens", K_INT, F(eval_max_new_tokens), 1, 65536, NULL, "1..65536", NULL, 0, 0},
	{"logging_steps", K_INT, F(logging_steps), 1, 1e12, NULL, "1 or more", NULL, 0, 0},
	{"use_tensorboard", K_BOOL, F(use_tensorboard), 0, 0, NULL, "true, false", NULL, 0, 0},
	{"resume_from_checkpoint", K_STR, F(resume_from_checkpoint), 0, 0, NULL,
	 "auto or a checkpoint directory", NULL, 0, 0},
	{"base_format", K_ENUM, F(base_format), 0, 0, base_names, NULL, NULL, 0, 0},
	{"backend", K_ENUM, F(backend), 0, 0, backend_names, NULL, NULL, 0, 0},
	{"device", K_INT, F(device), 0, 1024, NULL, "0..1024", NULL, 0, 0},
	{"device_memory", K_SIZE, F(device_memory), 0, 0, NULL, "auto or a size like 11.5GB, 512MB", NULL, 0,
	 0},
	{"host_memory", K_SIZE, F(host_memory), 0, 0, NULL, "auto or a size like 48GB", NULL, 0, 0},
	{"offload_dir", K_STR, F(offload_dir), 0, 0, NULL, "a directory", NULL, 0, 0},
	{"compute_dtype", K_ENUM, F(compute_dtype), 0, 0, compute_names, NULL, NULL, 0, 0},
	{"layer_split", K_STR, F(layer_split), 0, 0, NULL,
	 "false, auto, or the first layer of each stage after the first, e.g. 16 or 10,20,30", NULL, 0, 0},
	/* axolotl keys tern accepts with a note; engine-only keys are in config_keys.c */
	{"bf16", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_BF16, 0, 0},
	{"fp16", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_FP16, 0, 0},
	{"tf32", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_TF32, 0, 0},
	{"is_llama_derived_model", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_ARCH, 0, 0},
	{"is_mistral_derived_model", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_ARCH, 0, 0},
	{"is_qwen_derived_model", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_ARCH, 0, 0},
	{"dataset_prepared_path", K_NOTE, 0, 0, 0, NULL, NULL,
	 "tern tokenizes the datasets at start; no cache", 0, 0},
	{"eval_sample_packing", K_NOTE, 0, 0, 0, NULL, NULL, "evaluation rows follow sample_packing", 0, 0},
	{"load_in_8bit", K_NOTE, 0, 0, 0, NULL, NULL, NOTE_INT8, 0, 0},
	{"gptq", K_REJECT, 0, 0, 0, NULL, NULL, "tern cannot read GPTQ checkpoints; use an unquantized base",
	 0, 0},
};
#define NKEYS ((int)(sizeof keys / sizeof keys[0]))
_Static_assert(sizeof keys / sizeof keys[0] <= TERN_CONFIG_MAX_KEYS, "raise TERN_CONFIG_MAX_KEYS");

const char *tern_ds_type_name(enum tern_ds_type t) { return ds_type_names[t]; }
const char *tern_chat_template_name(enum tern_chat_template t) { return template_names[t]; }
const char *tern_lr_sched_name(enum tern_lr_sched s) { return sched_names[s]; }

/* ---- small helpers ---- */

static char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = tern_malloc(n);
	if (d)
		memcpy(d, s, n);
	return d;
}

static int levenshtein(const char *a, const char *b)
{
	size_t na = strlen(a), nb = strlen(b);
	if (na > 63 || nb > 63)
		return 99;
	int row[64];
	for (size_t j = 0; j <= nb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= na; i++) {
		int diag = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= nb; j++) {
			int up = row[j];
			int c = diag + (a[i - 1] != b[j - 1]);
			if (row[j] + 1 < c)
				c = row[j] + 1;
			if (row[j - 1] + 1 < c)
				c = row[j - 1] + 1;
			row[j] = c;
			diag = up;
		}
	}
	return row[nb];
}

/* The closest of names (NULL-terminated, or the key table when names is NULL), or NULL. */
static const char *suggest(const char *word, const char *const *names)
{
	const char *best = NULL;
	int bestd = 99;
	for (int i = 0; names ? names[i] != NULL : i < NKEYS; i++) {
		const char *cand = names ? names[i] : keys[i].name;
		int d = levenshtein(word, cand);
		if (d < bestd) {
			bestd = d;
			best = cand;
		}
	}
	/* a typo is a few edits relative to the word: 1 up to 4 letters, 2 up to 8, then a quarter
	 * ("model_config" is no typo of "fsdp_config": 4 edits in 12 letters) */
	size_t len = strlen(word);
	int limit = len <= 4 ? 1 : len <= 8 ? 2 : (int)(len / 4);
	if (bestd <= limit)
		return best;
	/* a word cut short or extended: "pad" -> "pad_token", "lora_rank" -> "lora_r" */
	const char *pre = NULL;
	for (int i = 0; names ? names[i] != NULL : i < NKEYS; i++) {
		const char *cand = names ? names[i] : keys[i].name;
		size_t cl = strlen(cand);
		bool hit = (len >= 3 && cl > len && !strncmp(cand, word, len)) ||
			   (cl >= 5 && len > cl && !strncmp(cand, word, cl));
		if (hit && (!pre || cl > strlen(pre)))
			pre = cand;
	}
	if (pre || names)
		return pre;
	/* last, the engine-only keys of config_keys.c (not their '*' patterns) */
	const char *e;
	for (size_t i = 0; (e = tern_config_engine_key(i)) != NULL; i++) {
		int d = strchr(e, '*') ? 99 : levenshtein(word, e);
		if (d < bestd) {
			bestd = d;
			best = e;
		}
	}
	return bestd <= limit ? best : NULL;
}

static void join_names(char *buf, size_t cap, const char *const *names)
{
	size_t n = 0;
	buf[0] = 0;
	for (int i = 0; names[i]; i++)
		n += (size_t)snprintf(buf + (n < cap ? n : cap - 1), n < cap ? cap - n : 1, "%s%s",
				      i ? ", " : "", names[i]);
}

/* s as shown in a message: cut to fit cap with "..." so that the reason after it survives. */
static const char *cut(const char *s, char *buf, size_t cap)
{
	size_t n = strlen(s);
	if (n < cap) {
		memcpy(buf, s, n + 1);
		return buf;
	}
	size_t k = cap - 4;
	while (k > 0 && ((unsigned char)s[k] & 0xc0) == 0x80) /* not inside a UTF-8 character */
		k--;
	snprintf(buf, cap, "%.*s...", (int)k, s);
	return buf;
}

struct ctx {
	struct tern_config *cfg;
	const char *file;
	yaml_document_t *doc;
	bool noline;           /* --set: values have no line in a file */
	const yaml_node_t *kn; /* the top-level key being applied (notes name its line), or NULL */
};

/* "file:line" or "--set" */
static const char *where(const struct ctx *c, int line, char *buf, size_t cap)
{
	char f[220];
	cut(c->file, f, sizeof f);
	if (line > 0 && !c->noline)
		snprintf(buf, cap, "%s:%d", f, line);
	else
		snprintf(buf, cap, "%s", f);
	return buf;
}

static int node_line(const yaml_node_t *n) { return n ? (int)n->start_mark.line + 1 : 0; }

/* The value as shown in messages: the scalar (control characters escaped, long text cut), or a
 * stand-in for a list/map. */
static const char *shown(const yaml_node_t *n, char *buf, size_t cap)
{
	if (n->type == YAML_SEQUENCE_NODE)
		return "[a list]";
	if (n->type == YAML_MAPPING_NODE)
		return "{a mapping}";
	size_t o = 0;
	const unsigned char *s = n->data.scalar.value;
	for (size_t i = 0; i < n->data.scalar.length && o + 8 < cap; i++) {
		if (i >= 60) {
			memcpy(buf + o, "...", 3);
			o += 3;
			break;
		}
		if (s[i] < 0x20 || s[i] == 0x7f)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", s[i]);
		else
			buf[o++] = (char)s[i];
	}
	buf[o] = 0;
	return buf;
}

static const char *scalar(const yaml_node_t *n) { return (const char *)n->data.scalar.value; }

static bool is_null(const yaml_node_t *n)
{
	if (n->type != YAML_SCALAR_NODE || n->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
		return false;
	const char *s = scalar(n);
	return !*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL");
}

static bool parse_bool(const char *s, bool *v)
{
	static const char *const t[] = {"true", "yes", "on"}, *const f[] = {"false", "no", "off"};
	for (int i = 0; i < 3; i++) {
		if (!strcasecmp(s, t[i]))
			return *v = true, true;
		if (!strcasecmp(s, f[i]))
			return *v = false, true;
	}
	return false;
}

static bool parse_int(const char *s, int64_t *v)
{
	if (!*s || isspace((unsigned char)*s))
		return false;
	char *end;
	errno = 0;
	long long x = strtoll(s, &end, 10);
	if (errno || *end)
		return false;
	*v = x;
	return true;
}

static bool parse_float(const char *s, double *v)
{
	if (!*s || isspace((unsigned char)*s))
		return false;
	char *end;
	errno = 0;
	double x = strtod(s, &end);
	if (errno || *end || !isfinite(x))
		return false;
	*v = x;
	return true;
}

bool tern_parse_size(const char *s, int64_t *bytes)
{
	if (!strcasecmp(s, "auto")) {
		*bytes = 0;
		return true;
	}
	/* decimal digits with an optional fraction: no sign, hex (0x10), exponent or inf */
	size_t nd = strspn(s, "0123456789");
	if (!nd)
		return false;
	if (s[nd] == '.' && !strspn(s + nd + 1, "0123456789"))
		return false;
	char *end;
	errno = 0;
	double x = strtod(s, &end);
	const char *odd = strpbrk(s, "xXeEpP+-");
	if (end == s || errno || !isfinite(x) || x < 0 || (odd && odd < end))
		return false;
	while (*end == ' ')
		end++;
	static const struct {
		const char *unit;
		double mul;
	} units[] = {{"", 1},
		     {"b", 1},
		     {"kb", 1024.0},
		     {"kib", 1024.0},
		     {"k", 1024.0},
		     {"mb", 1048576.0},
		     {"mib", 1048576.0},
		     {"m", 1048576.0},
		     {"gb", 1073741824.0},
		     {"gib", 1073741824.0},
		     {"g", 1073741824.0},
		     {"tb", 1099511627776.0},
		     {"tib", 1099511627776.0},
		     {"t", 1099511627776.0}};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (!strcasecmp(end, units[i].unit)) {
			double b = x * units[i].mul;
			if (b > 9.0e18 || b != floor(b))
				return false;
			*bytes = (int64_t)b;
			return true;
		}
	}
	return false;
}

bool tern_parse_duration(const char *s, int64_t *seconds)
{
	const char *p = s;
	double total = 0;
	bool any = false;
	while (*p) {
		char *end;
		errno = 0;
		double x = strtod(p, &end);
		if (end == p || errno || !isfinite(x) || x < 0)
			return false;
		double mul = 1;
		switch (*end) {
		case 'd':
			mul = 86400;
			end++;
			break;
		case 'h':
			mul = 3600;
			end++;
			break;
		case 'm':
			mul = 60;
			end++;
			break;
		case 's': end++; break;
		case 0:
			if (any)
				return false; /* "1h30" is ambiguous */
			break;
		default: return false;
		}
		total += x * mul;
		any = true;
		p = end;
	}
	if (!any || total > 1e12)
		return false;
	*seconds = (int64_t)llround(total);
	return true;
}

static void free_list(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void ds_clear(struct tern_dataset_cfg *d)
{
	free(d->path);
	free(d->split);
	free_list(d->data_files, d->n_data_files);
	free(d->field_messages);
	free(d->role_key);
	free(d->content_key);
	free(d->field);
	memset(d, 0, sizeof *d);
}

static void free_datasets(struct tern_dataset_cfg *d, int n)
{
	for (int i = 0; i < n; i++)
		ds_clear(&d[i]);
	free(d);
}

static bool dup_opt(char **dst, const char *src) { return !src || (*dst = xstrdup(src)) != NULL; }

/* A deep copy of src into *dst (zeroed first); false when out of memory (*dst is then cleared). */
static bool ds_copy(struct tern_dataset_cfg *dst, const struct tern_dataset_cfg *src)
{
	memset(dst, 0, sizeof *dst);
	dst->type = src->type;
	bool ok = dup_opt(&dst->path, src->path) && dup_opt(&dst->split, src->split) &&
		  dup_opt(&dst->field_messages, src->field_messages) &&
		  dup_opt(&dst->role_key, src->role_key) && dup_opt(&dst->content_key, src->content_key) &&
		  dup_opt(&dst->field, src->field);
	if (ok && src->n_data_files) {
		ok = (dst->data_files = tern_calloc((size_t)src->n_data_files, sizeof(char *))) != NULL;
		for (int i = 0; ok && i < src->n_data_files; i++, dst->n_data_files++)
			ok = (dst->data_files[i] = xstrdup(src->data_files[i])) != NULL;
	}
	if (!ok)
		ds_clear(dst);
	return ok;
}

static enum tern_status add_note(struct tern_config *cfg, const char *fmt, ...) TERN_PRINTF(2, 3);
static enum tern_status add_note(struct tern_config *cfg, const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	for (char *q = buf; *q; q++) /* a note is one line */
		if ((unsigned char)*q < 0x20)
			*q = ' ';
	char **n = realloc(cfg->notes, (size_t)(cfg->n_notes + 1) * sizeof *n);
	if (!n)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	cfg->notes = n;
	if (!(n[cfg->n_notes] = xstrdup(buf)))
		return TERN_E_NOMEM;
	cfg->n_notes++;
	tern_log(TERN_LOG_NOTE_LEVEL, "note: %s", buf); /* shown at the default level: "tern: note: ..." */
	return TERN_OK;
}

/* ---- defaults ---- */

static void set_defaults(struct tern_config *c)
{
	c->adapter = TERN_ADAPTER_LORA;
	c->lora_r = 8;
	c->lora_alpha = 16;
	c->lora_dropout = 0.0;
	c->chat_template = TERN_TEMPLATE_TOKENIZER_DEFAULT;
	c->val_set_size = 0;
	c->sequence_len = 2048;
	c->sample_packing = false;
	c->train_on_inputs = false;
	c->micro_batch_size = 1;
	c->gradient_accumulation_steps = 1;
	c->num_epochs = 1;
	c->max_steps = 0;
	c->learning_rate = 2e-4;
	c->lr_scheduler = TERN_SCHED_COSINE;
	c->weight_decay = 0;
	c->max_grad_norm = 1.0;
	c->adam_beta1 = 0.9;
	c->adam_beta2 = 0.999;
	c->adam_epsilon = 1e-8;
	c->gradient_checkpointing = TERN_CKPT_ON;
	c->seed = 42;
	c->logging_steps = 1;
	c->eval_max_new_tokens = 64;
	c->base_format = TERN_FORMAT_AUTO;
	c->backend = TERN_BACKEND_AUTO;
	c->compute_dtype = TERN_COMPUTE_AUTO;
	c->output_router_logits = -1;
	c->router_aux_loss_coef = -1;
}

static enum tern_status reset_key(struct tern_config *cfg, const struct key *k)
{
	struct tern_config d = {0};
	set_defaults(&d);
	char *p = (char *)cfg + k->off, *q = (char *)&d + k->off;
	switch (k->kind) {
	case K_STR:
		free(*(char **)p);
		*(char **)p = NULL;
		break;
	case K_BOOL: *(bool *)p = *(bool *)q; break;
	case K_INT:
	case K_SIZE:
	case K_DURATION: *(int64_t *)p = *(int64_t *)q; break;
	case K_FLOAT: *(double *)p = *(double *)q; break;
	case K_ENUM:
	case K_BOOLX: memcpy(p, q, sizeof(int)); break;
	case K_LIST:
	case K_PROMPTS:
		free_list(*(char ***)p, *list_count(p));
		*(char ***)p = NULL;
		*list_count(p) = 0;
		break;
	case K_DATASETS:
		free_datasets(cfg->datasets, cfg->n_datasets);
		cfg->datasets = NULL;
		cfg->n_datasets = 0;
		break;
	case K_SPECIAL:
		for (char **t = &cfg->bos_token; t <= &cfg->unk_token; t++) {
			free(*t);
			*t = NULL;
		}
		break;
	case K_MODELCFG:
		cfg->output_router_logits = -1;
		cfg->router_aux_loss_coef = -1;
		break;
	case K_OPTIM:
	case K_NOTE:
	case K_REJECT: break;
	}
	return TERN_OK;
}

/* ---- applying values ---- */

static enum tern_status bad(const struct ctx *c, const yaml_node_t *n, const char *key, const char *what,
			    const char *allowed)
{
	char w[600], v[256];
	return tern_fail(TERN_E_INVALID, "%s: %s: '%s' %s (allowed: %s)", where(c, node_line(n), w, sizeof w),
			 key, shown(n, v, sizeof v), what, allowed);
}

static enum tern_status need_scalar(const struct ctx *c, const yaml_node_t *n, const char *key,
				    const char *allowed)
{
	if (n->type == YAML_SCALAR_NODE)
		return TERN_OK;
	return bad(c, n, key, "is not a single value", allowed);
}

static int enum_index(const char *const *names, const char *s)
{
	for (int i = 0; names[i]; i++)
		if (!strcmp(names[i], s))
			return i;
	return -1;
}

static enum tern_status bad_enum(const struct ctx *c, const yaml_node_t *n, const char *key,
				 const char *const *names)
{
	char all[512], w[600], v[256], hint[160] = "";
	join_names(all, sizeof all, names);
	const char *s = suggest(scalar(n), names);
	if (s)
		snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
	return tern_fail(TERN_E_INVALID, "%s: %s: '%s' is not allowed (allowed: %s)%s",
			 where(c, node_line(n), w, sizeof w), key, shown(n, v, sizeof v), all, hint);
}

static enum tern_status set_str(char **dst, const char *s)
{
	char *d = xstrdup(s);
	if (!d)
		return TERN_E_NOMEM;
	free(*dst);
	*dst = d;
	return TERN_OK;
}

/* null, false, "" or an empty list/map: the key asks for nothing */
static bool asks_nothing(const yaml_node_t *v)
{
	bool b;
	if (v->type == YAML_SEQUENCE_NODE)
		return v->data.sequence.items.top == v->data.sequence.items.start;
	if (v->type == YAML_MAPPING_NODE)
		return v->data.mapping.pairs.top == v->data.mapping.pairs.start;
	return is_null(v) || !*scalar(v) || (parse_bool(scalar(v), &b) && !b);
}

/* One note for an accepted key that tern does not follow ("file:line: key: what tern does
 * instead"); none when the value asks for nothing ("flash_attention: false", "wandb_project:"). */
static enum tern_status note_key(const struct ctx *c, const char *name, const yaml_node_t *v, const char *msg)
{
	char w[600], nb[72];
	if (asks_nothing(v))
		return TERN_OK;
	return add_note(c->cfg, "%s: %s: %s", where(c, node_line(c->kn ? c->kn : v), w, sizeof w),
			cut(name, nb, sizeof nb), msg);
}

/* datasets[].data_files: a file or a list of files */
static enum tern_status apply_ds_files(const struct ctx *c, struct tern_dataset_cfg *ds, const char *path,
				       const yaml_node_t *v)
{
	static const char ok[] = "a file or a list of files";
	if (is_null(v)) {
		free_list(ds->data_files, ds->n_data_files);
		ds->data_files = NULL;
		ds->n_data_files = 0;
		return TERN_OK;
	}
	if (v->type == YAML_MAPPING_NODE)
		return bad(c, v, path, "is a mapping of splits; tern reads one list of files", ok);
	int n = v->type == YAML_SEQUENCE_NODE
			? (int)(v->data.sequence.items.top - v->data.sequence.items.start)
			: 1;
	if (n == 0)
		return bad(c, v, path, "is empty", ok);
	char **f = tern_calloc((size_t)n, sizeof *f);
	if (!f)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	int i = 0;
	for (; i < n && !st; i++) {
		const yaml_node_t *e =
			v->type == YAML_SEQUENCE_NODE
				? yaml_document_get_node(c->doc, v->data.sequence.items.start[i])
				: v;
		if (e->type != YAML_SCALAR_NODE || is_null(e) || !*scalar(e))
			st = bad(c, e, path, "is not a file name", ok);
		else if (!(f[i] = xstrdup(scalar(e))))
			st = TERN_E_NOMEM;
	}
	if (st) {
		free_list(f, n);
		return st;
	}
	free_list(ds->data_files, ds->n_data_files);
	ds->data_files = f;
	ds->n_data_files = n;
	return TERN_OK;
}

/* datasets[].message_property_mappings: {role: FIELD, content: FIELD} */
static enum tern_status apply_ds_mappings(const struct ctx *c, struct tern_dataset_cfg *ds, const char *path,
					  const yaml_node_t *v)
{
	static const char ok[] = "{role: FIELD, content: FIELD}";
	if (is_null(v)) {
		free(ds->role_key);
		free(ds->content_key);
		ds->role_key = ds->content_key = NULL;
		return TERN_OK;
	}
	if (v->type != YAML_MAPPING_NODE)
		return bad(c, v, path, "is not a mapping", ok);
	char *role = NULL, *content = NULL;
	enum tern_status st = TERN_OK;
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top && !st; p++) {
		yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
		yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
		char **dst = kn->type != YAML_SCALAR_NODE     ? NULL
			     : !strcmp(scalar(kn), "role")    ? &role
			     : !strcmp(scalar(kn), "content") ? &content
							      : NULL;
		if (!dst)
			st = bad(c, kn, path, "is not a message property tern reads", "role, content");
		else if (vn->type != YAML_SCALAR_NODE || is_null(vn) || !*scalar(vn))
			st = bad(c, vn, path, "is not a field name", ok);
		else if (set_str(dst, scalar(vn)))
			st = TERN_E_NOMEM;
	}
	if (st) {
		free(role);
		free(content);
		return st;
	}
	if (role) {
		free(ds->role_key);
		ds->role_key = role;
	}
	if (content) {
		free(ds->content_key);
		ds->content_key = content;
	}
	return TERN_OK;
}

static enum tern_status apply_ds_field(const struct ctx *c, struct tern_dataset_cfg *ds, const char *field,
				       const char *path, const yaml_node_t *kn, const yaml_node_t *v)
{
	static const char *const fields[] = {"path",
					     "type",
					     "split",
					     "data_files",
					     "ds_type",
					     "field",
					     "field_messages",
					     "message_property_mappings",
					     "message_field_role",
					     "message_field_content",
					     NULL};
	char w[600], all[256];
	enum tern_status st;
	static const char split_ok[] = "train, or a slice of it like train[:20%], train[100:200]";
	if (!strcmp(field, "split")) {
		struct tern_split sp;
		if ((st = need_scalar(c, v, path, split_ok)))
			return st;
		if (is_null(v)) {
			free(ds->split);
			ds->split = NULL;
			return TERN_OK;
		}
		if (!tern_split_parse(scalar(v), &sp))
			return bad(c, v, path, "is not a split", split_ok);
		if (strcmp(sp.name, "train"))
			return bad(c, v, path, "is not a split of a local file (its rows are all 'train')",
				   split_ok);
		return set_str(&ds->split, scalar(v));
	}
	if (!strcmp(field, "ds_type")) {
		if ((st = need_scalar(c, v, path, "json")))
			return st;
		if (is_null(v) || !strcmp(scalar(v), "json") || !strcmp(scalar(v), "jsonl"))
			return TERN_OK; /* tern reads JSON Lines and JSON arrays */
		return bad(c, v, path, "is not a format tern reads (convert the file to JSON Lines)", "json");
	}
	if (!strcmp(field, "data_files"))
		return apply_ds_files(c, ds, path, v);
	if (!strcmp(field, "message_property_mappings"))
		return apply_ds_mappings(c, ds, path, v);
	char **dst = !strcmp(field, "field")                   ? &ds->field
		     : !strcmp(field, "field_messages")        ? &ds->field_messages
		     : !strcmp(field, "message_field_role")    ? &ds->role_key
		     : !strcmp(field, "message_field_content") ? &ds->content_key
							       : NULL;
	if (dst) {
		if ((st = need_scalar(c, v, path, "a field name")))
			return st;
		if (is_null(v)) {
			free(*dst);
			*dst = NULL;
			return TERN_OK;
		}
		if (!*scalar(v))
			return bad(c, v, path, "is empty", "a field name");
		return set_str(dst, scalar(v));
	}
	if (!strcmp(field, "path")) {
		st = need_scalar(c, v, path, "a JSONL file");
		if (st)
			return st;
		if (is_null(v) || !*scalar(v))
			return bad(c, v, path, "is empty", "a JSONL file");
		return set_str(&ds->path, scalar(v));
	}
	if (!strcmp(field, "type")) {
		st = need_scalar(c, v, path, "alpaca, chat_template, completion, pretokenized");
		if (st)
			return st;
		int i = enum_index(ds_type_names, scalar(v));
		if (i < 0 && (!strcmp(scalar(v), "sharegpt") || !strcmp(scalar(v), "messages"))) {
			char ww[600];
			i = TERN_DS_CHAT;
			if (add_note(c->cfg,
				     "%s: %s: '%s' is read as chat_template (messages or conversations)",
				     where(c, node_line(v), ww, sizeof ww), path, scalar(v)))
				return TERN_E_NOMEM;
		}
		if (i < 0)
			return bad_enum(c, v, path, ds_type_names);
		ds->type = (enum tern_ds_type)i;
		return TERN_OK;
	}
	join_names(all, sizeof all, fields);
	const char *s = suggest(field, fields);
	char hint[160] = "", pb[100];
	if (s)
		snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
	return tern_fail(TERN_E_INVALID, "%s: %s: unknown dataset key (allowed: %s)%s",
			 where(c, node_line(kn ? kn : v), w, sizeof w), cut(path, pb, sizeof pb), all, hint);
}

/* One datasets entry from a mapping node. */
static enum tern_status apply_ds_entry(const struct ctx *c, struct tern_dataset_cfg *ds, int idx,
				       const yaml_node_t *v)
{
	char path[64];
	snprintf(path, sizeof path, "datasets.%d", idx);
	if (v->type != YAML_MAPPING_NODE)
		return bad(c, v, path, "is not a mapping", "{path: FILE.jsonl, type: TYPE}");
	bool have_type = false, have_path = false;
	for (yaml_node_pair_t *p = v->data.mapping.pairs.start; p < v->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
		yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
		if (kn->type != YAML_SCALAR_NODE)
			return bad(c, kn, path, "has a key that is not a name", "path, type");
		char fp[128];
		snprintf(fp, sizeof fp, "%s.%s", path, scalar(kn));
		enum tern_status st = apply_ds_field(c, ds, scalar(kn), fp, kn, vn);
		if (st)
			return st;
		have_type |= !strcmp(scalar(kn), "type");
		have_path |= !strcmp(scalar(kn), "path");
	}
	char w[600];
	if (!have_path)
		return tern_fail(TERN_E_INVALID, "%s: %s.path: missing (allowed: a JSONL file)",
				 where(c, node_line(v), w, sizeof w), path);
	if (!have_type)
		return tern_fail(
			TERN_E_INVALID,
			"%s: %s.type: missing (allowed: alpaca, chat_template, completion, pretokenized)",
			where(c, node_line(v), w, sizeof w), path);
	return TERN_OK;
}

static enum tern_status apply_datasets(const struct ctx *c, const yaml_node_t *v)
{
	if (v->type != YAML_SEQUENCE_NODE)
		return bad(c, v, "datasets", "is not a list", "a list of {path, type}");
	int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
	struct tern_dataset_cfg *d = tern_calloc((size_t)n + 1, sizeof *d);
	if (!d)
		return TERN_E_NOMEM;
	for (int i = 0; i < n; i++) {
		yaml_node_t *e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
		enum tern_status st = apply_ds_entry(c, &d[i], i, e);
		if (st) {
			free_datasets(d, n);
			return st;
		}
	}
	free_datasets(c->cfg->datasets, c->cfg->n_datasets);
	c->cfg->datasets = d;
	c->cfg->n_datasets = n;
	return TERN_OK;
}

static enum tern_status apply_special(const struct ctx *c, const char *tok, const char *path,
				      const yaml_node_t *kn, const yaml_node_t *v)
{
	static const char *const names[] = {"bos_token", "eos_token", "pad_token", "unk_token", NULL};
	/* the tokenizer's other special tokens (transformers' names) */
	static const char *const others[] = {"sep_token", "cls_token", "mask_token",
					     "additional_special_tokens", NULL};
	int i = enum_index(names, tok);
	if (i < 0 && enum_index(others, tok) >= 0)
		return note_key(c, path, v,
				"tern keeps the checkpoint's vocabulary and uses only bos_token, eos_token, "
				"pad_token and unk_token; this one is not used");
	if (i < 0) {
		char w[600], hint[160] = "";
		const char *s = suggest(tok, names);
		if (s)
			snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
		return tern_fail(TERN_E_INVALID, "%s: %s: unknown special token (allowed: %s)%s",
				 where(c, node_line(kn ? kn : v), w, sizeof w), path,
				 "bos_token, eos_token, pad_token, unk_token", hint);
	}
	enum tern_status st = need_scalar(c, v, path, "a token string");
	if (st)
		return st;
	char **dst = &c->cfg->bos_token + i;
	if (is_null(v)) {
		free(*dst);
		*dst = NULL;
		return TERN_OK;
	}
	return set_str(dst, scalar(v));
}

/* eval_prompts: a list whose items are strings or lists of {role, content} mappings, each kept as
 * its JSON text (a string, or an array of {"role", "content"} objects). */
static enum tern_status apply_prompts(const struct ctx *c, const struct key *k, const yaml_node_t *v)
{
	if (v->type != YAML_SEQUENCE_NODE)
		return bad(c, v, k->name, "is not a list", k->allowed);
	int n = (int)(v->data.sequence.items.top - v->data.sequence.items.start);
	char **out = tern_calloc((size_t)n + 1, sizeof *out);
	if (!out)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	for (int i = 0; i < n && st == TERN_OK; i++) {
		const yaml_node_t *e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
		json_t *j = NULL;
		if (e->type == YAML_SCALAR_NODE) {
			j = json_string(scalar(e));
		} else if (e->type == YAML_SEQUENCE_NODE &&
			   e->data.sequence.items.top > e->data.sequence.items.start) {
			j = json_array();
			for (yaml_node_item_t *it = e->data.sequence.items.start;
			     j && it < e->data.sequence.items.top; it++) {
				const yaml_node_t *m = yaml_document_get_node(c->doc, *it);
				json_t *o = m->type == YAML_MAPPING_NODE ? json_object() : NULL;
				for (yaml_node_pair_t *pr = o ? m->data.mapping.pairs.start : NULL;
				     pr && pr < m->data.mapping.pairs.top; pr++) {
					const yaml_node_t *pk = yaml_document_get_node(c->doc, pr->key);
					const yaml_node_t *pv = yaml_document_get_node(c->doc, pr->value);
					if (pk->type == YAML_SCALAR_NODE && pv->type == YAML_SCALAR_NODE &&
					    (!strcmp(scalar(pk), "role") || !strcmp(scalar(pk), "content")))
						json_object_set_new(o, scalar(pk), json_string(scalar(pv)));
				}
				if (!o || !json_is_string(json_object_get(o, "role")) ||
				    !json_is_string(json_object_get(o, "content"))) {
					json_decref(o);
					st = bad(c, m, k->name, "is not a {role, content} message",
						 k->allowed);
					break;
				}
				json_array_append_new(j, o);
			}
		} else {
			st = bad(c, e, k->name, "is neither a string nor a list of messages", k->allowed);
		}
		if (st == TERN_OK && !j)
			st = bad(c, e, k->name, "is not valid UTF-8", k->allowed);
		if (st == TERN_OK && !(out[i] = json_dumps(j, JSON_ENCODE_ANY | JSON_ENSURE_ASCII)))
			st = TERN_E_NOMEM;
		json_decref(j);
	}
	if (st != TERN_OK) {
		free_list(out, n);
		return st;
	}
	char *p = (char *)c->cfg + k->off;
	free_list(*(char ***)p, *list_count(p));
	*(char ***)p = out;
	*list_count(p) = n;
	return TERN_OK;
}

static enum tern_status apply_list(const struct ctx *c, const struct key *k, const yaml_node_t *v)
{
	char **out = NULL;
	int n = 0;
	enum tern_status st = TERN_OK;
	char allowed[256];
	join_names(allowed, sizeof allowed, k->names);
	if (v->type == YAML_MAPPING_NODE)
		return bad(c, v, k->name, "is not a list", allowed);
	/* a scalar is a comma-separated list (handy with --set) */
	size_t cap = v->type == YAML_SEQUENCE_NODE
			     ? (size_t)(v->data.sequence.items.top - v->data.sequence.items.start)
			     : v->data.scalar.length / 2 + 1;
	out = tern_calloc(cap + 1, sizeof *out);
	if (!out)
		return TERN_E_NOMEM;
	for (size_t i = 0; i < cap; i++) {
		const yaml_node_t *e = v;
		char item[128];
		if (v->type == YAML_SEQUENCE_NODE) {
			e = yaml_document_get_node(c->doc, v->data.sequence.items.start[i]);
			if (e->type != YAML_SCALAR_NODE) {
				st = bad(c, e, k->name, "is not a module name", allowed);
				goto out;
			}
			snprintf(item, sizeof item, "%s", scalar(e));
		} else {
			/* i-th comma-separated field */
			const char *s = scalar(v);
			for (size_t j = 0; j < i && s; j++)
				s = strchr(s, ',') ? strchr(s, ',') + 1 : NULL;
			if (!s)
				break;
			while (*s == ' ')
				s++;
			size_t len = strcspn(s, ",");
			while (len && s[len - 1] == ' ')
				len--;
			if (!len)
				continue;
			snprintf(item, sizeof item, "%.*s", (int)(len < 127 ? len : 127), s);
		}
		if (enum_index(k->names, item) < 0) {
			char w[600], hint[160] = "";
			const char *s = suggest(item, k->names);
			if (s)
				snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
			st = tern_fail(TERN_E_INVALID,
				       "%s: %s: '%s' is not a module tern can %s (allowed: %s)%s",
				       where(c, node_line(e), w, sizeof w), k->name, item,
				       k->names == save_names ? "train in full" : "adapt", allowed, hint);
			goto out;
		}
		if (!(out[n++] = xstrdup(item))) {
			st = TERN_E_NOMEM;
			goto out;
		}
	}
	for (int i = 0; i < n && n > 1; i++)
		if (!strcmp(out[i], "all-linear")) {
			char w[600];
			st = tern_fail(
				TERN_E_INVALID,
				"%s: %s: 'all-linear' stands alone (write lora_target_modules: all-linear, "
				"or list the modules)",
				where(c, node_line(v), w, sizeof w), k->name);
			goto out;
		}
	char *p = (char *)c->cfg + k->off;
	free_list(*(char ***)p, *list_count(p));
	*(char ***)p = out;
	*list_count(p) = n;
	return TERN_OK;
out:
	free_list(out, n);
	return st;
}

/* model_config / overrides_of_model_config: the mixture-of-experts loss keys override
 * config.json; any other key is noted as not applied (tern reads the rest from config.json). */
static enum tern_status apply_model_cfg(const struct ctx *c, const struct key *k, const yaml_node_t *v)
{
	struct tern_config *cfg = c->cfg;
	char w[600];
	if (v->type != YAML_MAPPING_NODE)
		return bad(c, v, k->name, "is not a mapping", k->allowed);
	for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top; pr++) {
		yaml_node_t *kn = yaml_document_get_node(c->doc, pr->key);
		yaml_node_t *vn = yaml_document_get_node(c->doc, pr->value);
		char path[160];
		if (kn->type != YAML_SCALAR_NODE)
			return bad(c, kn, k->name, "has a key that is not a name", k->allowed);
		snprintf(path, sizeof path, "%s.%s", k->name, scalar(kn));
		enum tern_status st;
		if (!strcmp(scalar(kn), "output_router_logits")) {
			bool b;
			if ((st = need_scalar(c, vn, path, "true, false")))
				return st;
			if (!parse_bool(scalar(vn), &b))
				return bad(c, vn, path, "is not a boolean", "true, false");
			cfg->output_router_logits = b;
		} else if (!strcmp(scalar(kn), "router_aux_loss_coef")) {
			double x;
			if ((st = need_scalar(c, vn, path, "a number >= 0")))
				return st;
			if (!parse_float(scalar(vn), &x) || !(x >= 0) || x > 1e6)
				return bad(c, vn, path, "is not a number in 0..1e6", "a number >= 0");
			cfg->router_aux_loss_coef = x;
		} else if ((st = add_note(cfg,
					  "%s: %s: not applied (tern reads the model from config.json; of "
					  "%s it applies output_router_logits and router_aux_loss_coef)",
					  where(c, node_line(kn), w, sizeof w), path, k->name))) {
			return st;
		}
	}
	return TERN_OK;
}

static enum tern_status apply_key(const struct ctx *c, const struct key *k, const yaml_node_t *v)
{
	struct tern_config *cfg = c->cfg;
	char *p = (char *)cfg + k->off;
	char w[600], vb[256];
	enum tern_status st;
	const char *allowed = k->allowed;
	char all[512];
	if (k->names && k->kind == K_ENUM) {
		join_names(all, sizeof all, k->names);
		allowed = all;
	}

	if (k->kind == K_NOTE)
		return note_key(c, k->name, v, k->msg);
	if (k->kind == K_REJECT) {
		bool b;
		if (v->type == YAML_SCALAR_NODE && (is_null(v) || (parse_bool(scalar(v), &b) && !b)))
			return TERN_OK;
		return tern_fail(TERN_E_UNSUPPORTED, "%s: %s: '%s' is not supported: %s",
				 where(c, node_line(v), w, sizeof w), k->name, shown(v, vb, sizeof vb),
				 k->msg);
	}
	if (is_null(v))
		return reset_key(cfg, k);

	switch (k->kind) {
	case K_DATASETS: return apply_datasets(c, v);
	case K_LIST: return apply_list(c, k, v);
	case K_PROMPTS: return apply_prompts(c, k, v);
	case K_SPECIAL: {
		if (v->type != YAML_MAPPING_NODE)
			return bad(c, v, k->name, "is not a mapping", k->allowed);
		char *save[4];
		for (int i = 0; i < 4; i++) {
			char *const *t = &cfg->bos_token + i;
			save[i] = *t ? xstrdup(*t) : NULL;
		}
		for (yaml_node_pair_t *pr = v->data.mapping.pairs.start; pr < v->data.mapping.pairs.top;
		     pr++) {
			yaml_node_t *kn = yaml_document_get_node(c->doc, pr->key);
			yaml_node_t *vn = yaml_document_get_node(c->doc, pr->value);
			if (kn->type != YAML_SCALAR_NODE) {
				st = bad(c, kn, k->name, "has a key that is not a name", k->allowed);
			} else {
				char path[160];
				snprintf(path, sizeof path, "special_tokens.%s", scalar(kn));
				st = apply_special(c, scalar(kn), path, kn, vn);
			}
			if (st) {
				for (int i = 0; i < 4; i++) {
					free((&cfg->bos_token)[i]);
					(&cfg->bos_token)[i] = save[i];
				}
				return st;
			}
		}
		for (int i = 0; i < 4; i++)
			free(save[i]);
		return TERN_OK;
	}
	case K_MODELCFG: return apply_model_cfg(c, k, v);
	default: break;
	}

	if ((st = need_scalar(c, v, k->name, allowed)))
		return st;
	const char *s = scalar(v);
	switch (k->kind) {
	case K_STR: return set_str((char **)p, s);
	case K_BOOL:
	case K_BOOLX: {
		bool b;
		int word = k->kind == K_BOOLX ? enum_index(k->names, s) : -1;
		if (word < 0 && !parse_bool(s, &b))
			return bad(c, v, k->name, "is not a boolean", allowed);
		if (k->kind == K_BOOL)
			*(bool *)p = b;
		else
			*(int *)p = word >= 0 ? 2 + word : b;
		return TERN_OK;
	}
	case K_INT: {
		int64_t x;
		if (!parse_int(s, &x))
			return bad(c, v, k->name, "is not an integer", allowed);
		if ((double)x < k->lo || (double)x > k->hi)
			return bad(c, v, k->name, "is out of range", allowed);
		*(int64_t *)p = x;
		return TERN_OK;
	}
	case K_FLOAT: {
		double x;
		if (!parse_float(s, &x))
			return bad(c, v, k->name, "is not a number", allowed);
		if (x < k->lo || x > k->hi || (k->lo_open && x == k->lo) || (k->hi_open && x == k->hi))
			return bad(c, v, k->name, "is out of range", allowed);
		*(double *)p = x;
		return TERN_OK;
	}
	case K_ENUM: {
		int i = enum_index(k->names, s);
		if (i < 0 && k->names == template_names && !strcmp(s, "mistral"))
			i = TERN_TEMPLATE_MISTRAL_V1;
		if (i < 0 && k->names == template_names && !strcmp(s, "gemma3"))
			i = TERN_TEMPLATE_GEMMA; /* tern's gemma is Gemma 3's */
		if (i < 0)
			return bad_enum(c, v, k->name, k->names);
		memcpy(p, &i, sizeof i);
		return TERN_OK;
	}
	case K_SIZE: {
		int64_t x;
		if (!tern_parse_size(s, &x))
			return bad(c, v, k->name, "is not a size", allowed);
		if (x == 0 && strcasecmp(s, "auto"))
			return bad(c, v, k->name, "is no budget", allowed);
		*(int64_t *)p = x;
		return TERN_OK;
	}
	case K_DURATION: {
		int64_t x;
		if (!tern_parse_duration(s, &x))
			return bad(c, v, k->name, "is not a duration", allowed);
		*(int64_t *)p = x;
		return TERN_OK;
	}
	case K_OPTIM: {
		const char *note = tern_config_optimizer_note(s);
		if (!note)
			return bad(c, v, k->name, "is not an AdamW variant tern can run",
				   tern_config_optimizer_names());
		if (!*note)
			return TERN_OK;
		return add_note(cfg, "%s: optimizer: '%s' %s", where(c, node_line(v), w, sizeof w), s, note);
	}
	default: break;
	}
	return tern_fail(TERN_E_INVALID, "config: internal: unhandled key kind");
}

static const struct key *find_key(const char *name)
{
	for (int i = 0; i < NKEYS; i++)
		if (!strcmp(keys[i].name, name))
			return &keys[i];
	return NULL;
}

static enum tern_status unknown_key(const struct ctx *c, const yaml_node_t *kn, const yaml_node_t *v,
				    const char *name)
{
	char w[600], hint[160] = "", nb[72];
	const char *note = tern_config_engine_note(name);
	if (note)
		return note_key(c, name, v, note);
	const char *s = suggest(name, NULL);
	if (s)
		snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
	return tern_fail(TERN_E_INVALID, "%s: %s: unknown key (see docs/CONFIG.md)%s",
			 where(c, node_line(kn), w, sizeof w), cut(name, nb, sizeof nb), hint);
}

static enum tern_status apply_root(const struct ctx *c, const yaml_node_t *root)
{
	char w[600];
	if (root->type != YAML_MAPPING_NODE)
		return tern_fail(TERN_E_INVALID, "%s: the config is not a mapping of keys to values",
				 where(c, node_line(root), w, sizeof w));
	struct ctx kc = *c;
	for (yaml_node_pair_t *p = root->data.mapping.pairs.start; p < root->data.mapping.pairs.top; p++) {
		yaml_node_t *kn = yaml_document_get_node(c->doc, p->key);
		yaml_node_t *vn = yaml_document_get_node(c->doc, p->value);
		if (kn->type != YAML_SCALAR_NODE)
			return tern_fail(TERN_E_INVALID, "%s: a key is not a name",
					 where(c, node_line(kn), w, sizeof w));
		const char *name = scalar(kn);
		const struct key *k = find_key(name);
		kc.kn = kn;
		if (!k) {
			enum tern_status st = unknown_key(&kc, kn, vn, name);
			if (st)
				return st;
			continue;
		}
		int ki = (int)(k - keys);
		if (c->cfg->set_line[ki] > 0)
			return tern_fail(TERN_E_INVALID, "%s: %s: duplicate key (first set on line %d)",
					 where(c, node_line(kn), w, sizeof w), name, c->cfg->set_line[ki]);
		enum tern_status st = apply_key(&kc, k, vn);
		if (st)
			return st;
		c->cfg->set_line[ki] = node_line(kn);
	}
	/* axolotl reads a config without `adapter` as a full fine-tune */
	const struct key *ak = find_key("adapter");
	if (!c->cfg->set_line[ak - keys])
		return add_note(
			c->cfg,
			"%s: adapter: not set, which axolotl runs as a full fine-tune of every weight; "
			"tern trains LoRA adapters only: adapter: lora with the lora_* keys (r %lld)",
			c->cfg->file, (long long)c->cfg->lora_r);
	return TERN_OK;
}

/* ---- public API ---- */

enum tern_status tern_config_defaults(struct tern_config **out)
{
	*out = NULL;
	struct tern_config *c = tern_calloc(1, sizeof *c);
	if (!c)
		return TERN_E_NOMEM;
	set_defaults(c);
	if (!(c->file = xstrdup("(defaults)"))) {
		free(c);
		return TERN_E_NOMEM;
	}
	*out = c;
	return TERN_OK;
}

void tern_config_free(struct tern_config *cfg)
{
	if (!cfg)
		return;
	free(cfg->file);
	free(cfg->base_model);
	free(cfg->revision_of_model);
	free_list(cfg->lora_target_modules, cfg->n_target_modules);
	free_list(cfg->eval_prompts, cfg->n_eval_prompts);
	free_list(cfg->lora_target_parameters, cfg->n_target_parameters);
	free_list(cfg->lora_modules_to_save, cfg->n_modules_to_save);
	free(cfg->lora_model_dir);
	free(cfg->chat_template_jinja);
	free_datasets(cfg->datasets, cfg->n_datasets);
	free(cfg->bos_token);
	free(cfg->eos_token);
	free(cfg->pad_token);
	free(cfg->unk_token);
	free(cfg->output_dir);
	free(cfg->resume_from_checkpoint);
	free(cfg->offload_dir);
	free(cfg->layer_split);
	free_list(cfg->notes, cfg->n_notes);
	free(cfg);
}

#define MAX_DEPTH 64 /* lists and maps nested deeper than this are no config */

/* "name:line: YAML syntax error: ..." from a parser that failed ("name: ..." for --set). */
static enum tern_status syntax_error(const yaml_parser_t *parser, const char *name, bool noline)
{
	char prob[200], at[40] = "";
	snprintf(prob, sizeof prob, "%s%s%s", parser->context ? parser->context : "",
		 parser->context ? ": " : "", parser->problem ? parser->problem : "syntax error");
	for (char *q = prob; *q; q++)
		if ((unsigned char)*q < 0x20)
			*q = ' ';
	if (!noline)
		snprintf(at, sizeof at, ":%d", (int)parser->problem_mark.line + 1);
	char nb[220];
	return tern_fail(TERN_E_FORMAT, "%s%s: YAML syntax error: %s", cut(name, nb, sizeof nb), at, prob);
}

/* Byte offset of the first byte that is not UTF-8 (overlong forms, surrogates and NUL included),
 * or len. */
static size_t utf8_bad(const unsigned char *s, size_t len)
{
	size_t i = 0;
	while (i < len) {
		unsigned c = s[i];
		size_t n = c < 0x80             ? 1
			   : (c & 0xe0) == 0xc0 ? 2
			   : (c & 0xf0) == 0xe0 ? 3
			   : (c & 0xf8) == 0xf0 ? 4
						: 0;
		if (!n || c == 0 || c == 0xc0 || c == 0xc1 || c > 0xf4 || i + n > len)
			return i;
		uint32_t cp = n == 1 ? c : c & (0x7fu >> n);
		for (size_t j = 1; j < n; j++) {
			if ((s[i + j] & 0xc0) != 0x80)
				return i;
			cp = cp << 6 | (s[i + j] & 0x3fu);
		}
		if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
		    (cp >= 0xd800 && cp <= 0xdfff))
			return i;
		i += n;
	}
	return len;
}

/* Refuses, before any document is built, what is no config: text that is not UTF-8, more than one
 * YAML document, nesting deeper than MAX_DEPTH (libyaml's loader takes minutes on 100,000 nested
 * lists; the event parser stops at level 65 at once). */
static enum tern_status prescan(const char *name_in, bool noline, const char *text, size_t len)
{
	char name[220];
	cut(name_in, name, sizeof name);
	size_t bad_at = utf8_bad((const unsigned char *)text, len);
	if (bad_at < len) {
		int line = 1;
		for (size_t i = 0; i < bad_at; i++)
			line += text[i] == '\n';
		char at[40] = "";
		if (!noline)
			snprintf(at, sizeof at, ":%d", line);
		return tern_fail(TERN_E_FORMAT, "%s%s: byte 0x%02x is not UTF-8 text (%s)", name, at,
				 (unsigned char)text[bad_at],
				 noline ? "give the value as UTF-8" : "save the config as UTF-8");
	}
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser))
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	enum tern_status st = TERN_OK;
	int depth = 0, docs = 0;
	for (bool done = false; !done && !st;) {
		yaml_event_t e;
		if (!yaml_parser_parse(&parser, &e)) {
			st = syntax_error(&parser, name, noline);
			break;
		}
		char at[40] = "";
		if (!noline)
			snprintf(at, sizeof at, ":%d", (int)e.start_mark.line + 1);
		switch (e.type) {
		case YAML_DOCUMENT_START_EVENT:
			if (++docs > 1)
				st = tern_fail(
					TERN_E_FORMAT,
					"%s%s: a second YAML document ('---'); a config is one document "
					"(keep one, or split them into two files)",
					name, at);
			break;
		case YAML_SEQUENCE_START_EVENT:
		case YAML_MAPPING_START_EVENT:
			if (++depth > MAX_DEPTH)
				st = tern_fail(
					TERN_E_FORMAT,
					"%s%s: lists and maps nested more than %d levels deep; a config "
					"needs 3",
					name, at, MAX_DEPTH);
			break;
		case YAML_SEQUENCE_END_EVENT:
		case YAML_MAPPING_END_EVENT: depth--; break;
		case YAML_STREAM_END_EVENT: done = true; break;
		default: break;
		}
		yaml_event_delete(&e);
	}
	yaml_parser_delete(&parser);
	return st;
}

/* Loads one YAML document from text; *doc must be deleted by the caller on TERN_OK. noline: the
 * text is a --set value (messages name no line). */
static enum tern_status load_doc(yaml_document_t *doc, const char *name, bool noline, const char *text,
				 size_t len)
{
	enum tern_status st = prescan(name, noline, text, len);
	if (st)
		return st;
	yaml_parser_t parser;
	if (!yaml_parser_initialize(&parser))
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
	yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);
	if (!yaml_parser_load(&parser, doc)) {
		st = syntax_error(&parser, name, noline);
		yaml_parser_delete(&parser);
		return st;
	}
	yaml_parser_delete(&parser);
	return TERN_OK;
}

enum tern_status tern_config_parse(struct tern_config **out, const char *name, const char *text, size_t len)
{
	*out = NULL;
	struct tern_config *cfg;
	enum tern_status st = tern_config_defaults(&cfg);
	if (st)
		return st;
	free(cfg->file);
	if (!(cfg->file = xstrdup(name))) {
		tern_config_free(cfg);
		return TERN_E_NOMEM;
	}
	yaml_document_t doc;
	if ((st = load_doc(&doc, name, false, text, len))) {
		tern_config_free(cfg);
		return st;
	}
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	struct ctx c = {cfg, name, &doc, false, NULL};
	if (!root)
		st = tern_fail(TERN_E_INVALID, "%s: the config is empty", name);
	else
		st = apply_root(&c, root);
	yaml_document_delete(&doc);
	if (!st)
		st = tern_config_check(cfg);
	if (st) {
		tern_config_free(cfg);
		return st;
	}
	*out = cfg;
	return TERN_OK;
}

enum tern_status tern_config_load(struct tern_config **out, const char *path)
{
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	char *buf = NULL;
	size_t len = 0, cap = 0;
	errno = 0;
	for (;;) {
		if (len + 4096 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *nb = realloc(buf, cap);
			if (!nb) {
				free(buf);
				fclose(f);
				return tern_fail(TERN_E_NOMEM, "out of host memory reading %s", path);
			}
			buf = nb;
		}
		size_t r = fread(buf + len, 1, cap - len, f);
		len += r;
		if (r == 0)
			break;
		if (len > ((size_t)16 << 20)) {
			free(buf);
			fclose(f);
			return tern_fail(TERN_E_FORMAT, "%s: larger than 16 MiB; not a config file", path);
		}
	}
	int err = ferror(f) ? (errno ? errno : EIO) : 0;
	fclose(f);
	if (err) {
		free(buf);
		return tern_fail(TERN_E_IO, "%s: cannot read: %s%s", path, strerror(err),
				 err == EISDIR ? " (give the config file, e.g. configs/demo.yaml)" : "");
	}
	enum tern_status st = tern_config_parse(out, path, buf, len);
	free(buf);
	return st;
}

enum tern_status tern_config_set(struct tern_config *cfg, const char *assignment)
{
	const char *eq = strchr(assignment, '=');
	char nb[72];
	if (!eq || eq == assignment)
		return tern_fail(TERN_E_INVALID, "--set: %s: expected key=value",
				 cut(assignment, nb, sizeof nb));
	char keyp[256];
	size_t kl = (size_t)(eq - assignment);
	if (utf8_bad((const unsigned char *)assignment, kl) < kl)
		return tern_fail(TERN_E_INVALID, "--set: the key is not UTF-8 text");
	if (kl >= sizeof keyp)
		return tern_fail(TERN_E_INVALID, "--set: %s: key too long (no key is longer than 64 letters)",
				 cut(assignment, nb, sizeof nb));
	memcpy(keyp, assignment, kl);
	keyp[kl] = 0;
	const char *value = eq + 1;
	char file[300];
	snprintf(file, sizeof file, "--set %s", keyp);

	/* split "a.b.c" */
	char *parts[4] = {0};
	int np = 0;
	for (char *s = keyp; s && np < 4;) {
		parts[np++] = s;
		char *d = strchr(s, '.');
		if (d)
			*d++ = 0;
		s = d;
	}
	const struct key *k = find_key(parts[0]);
	const char *note = k ? NULL : tern_config_engine_note(parts[0]);
	if (note) { /* fsdp_config.x=... is a note about fsdp_config too */
		yaml_document_t doc;
		enum tern_status st = load_doc(&doc, file, true, value, strlen(value));
		if (st)
			return st;
		yaml_node_t *root = yaml_document_get_root_node(&doc);
		struct ctx c = {cfg, "--set", &doc, true, NULL};
		if (root)
			st = note_key(&c, parts[0], root, note);
		yaml_document_delete(&doc);
		return st;
	}
	if (!k) {
		const char *s = suggest(parts[0], NULL);
		char hint[160] = "";
		if (s)
			snprintf(hint, sizeof hint, "; did you mean '%s'?", s);
		return tern_fail(TERN_E_INVALID, "--set: %s: unknown key (see docs/CONFIG.md)%s",
				 cut(parts[0], nb, sizeof nb), hint);
	}
	int maxparts = k->kind == K_DATASETS ? 3 : k->kind == K_SPECIAL ? 2 : 1;
	if (np > maxparts)
		return tern_fail(TERN_E_INVALID, "--set: %.200s: %s has no sub-key %s", assignment, parts[0],
				 parts[maxparts]);

	yaml_document_t doc;
	enum tern_status st = load_doc(&doc, file, true, value, strlen(value));
	if (st)
		return st;
	yaml_node_t *root = yaml_document_get_root_node(&doc);
	yaml_node_t empty = {0};
	if (!root) {
		empty.type = YAML_SCALAR_NODE;
		empty.data.scalar.value = (yaml_char_t *)"";
		empty.data.scalar.style = YAML_PLAIN_SCALAR_STYLE;
		root = &empty;
	}
	struct ctx c = {cfg, "--set", &doc, true, NULL};
	int ki = (int)(k - keys);
	if (np == 1) {
		st = apply_key(&c, k, root);
	} else if (k->kind == K_SPECIAL) {
		char path[160];
		snprintf(path, sizeof path, "special_tokens.%s", parts[1]);
		st = apply_special(&c, parts[1], path, NULL, root);
	} else {
		/* datasets.N[.field]; N == count appends an entry */
		int64_t idx;
		if (!parse_int(parts[1], &idx) || idx < 0 || idx > cfg->n_datasets) {
			st = tern_fail(TERN_E_INVALID, "--set: datasets.%s: no such dataset (allowed: 0..%d)",
				       parts[1], cfg->n_datasets);
			goto out;
		}
		struct tern_dataset_cfg tmp = {0};
		/* datasets.N.field changes one field of entry N; datasets.N={...} replaces it */
		if (np == 3 && idx < cfg->n_datasets && !ds_copy(&tmp, &cfg->datasets[idx])) {
			st = TERN_E_NOMEM;
			goto out;
		}
		char path[160];
		if (np == 2) {
			st = apply_ds_entry(&c, &tmp, (int)idx, root);
		} else {
			snprintf(path, sizeof path, "datasets.%d.%s", (int)idx, parts[2]);
			st = apply_ds_field(&c, &tmp, parts[2], path, NULL, root);
		}
		if (!st && idx == cfg->n_datasets) {
			if (np == 3 && !tmp.path) {
				st = tern_fail(TERN_E_INVALID,
					       "--set: datasets.%d.%s: a new dataset needs its path first "
					       "(datasets.%d.path=FILE)",
					       (int)idx, parts[2], (int)idx);
			} else {
				struct tern_dataset_cfg *nd =
					realloc(cfg->datasets, (size_t)(cfg->n_datasets + 1) * sizeof *nd);
				if (!nd) {
					st = tern_fail(TERN_E_NOMEM, "out of host memory");
				} else {
					cfg->datasets = nd;
					nd[cfg->n_datasets++] = tmp;
					memset(&tmp, 0, sizeof tmp);
				}
			}
		} else if (!st) {
			ds_clear(&cfg->datasets[idx]);
			cfg->datasets[idx] = tmp;
			memset(&tmp, 0, sizeof tmp);
		}
		ds_clear(&tmp);
	}
	if (!st)
		cfg->set_line[ki] = -1;
out:
	yaml_document_delete(&doc);
	return st;
}

static int key_line(const struct tern_config *cfg, const char *name)
{
	const struct key *k = find_key(name);
	return k ? cfg->set_line[k - keys] : 0;
}

/* "file:line: name" for check() messages */
static const char *kloc(const struct tern_config *cfg, const char *name, char *buf, size_t cap)
{
	int line = key_line(cfg, name);
	if (line > 0)
		snprintf(buf, cap, "%s:%d: %s", cfg->file, line, name);
	else if (line < 0)
		snprintf(buf, cap, "--set: %s", name);
	else
		snprintf(buf, cap, "%s: %s", cfg->file, name);
	return buf;
}

enum tern_status tern_config_check(struct tern_config *cfg)
{
	char a[400], b[400];
	if (!cfg->base_model || !*cfg->base_model)
		return tern_fail(TERN_E_INVALID,
				 "%s: base_model: missing (allowed: a model directory or a Hub id)",
				 cfg->file);
	if (cfg->n_datasets == 0)
		return tern_fail(TERN_E_INVALID, "%s: datasets: missing (allowed: a list of {path, type})",
				 cfg->file);
	for (int i = 0; i < cfg->n_datasets; i++) {
		const struct tern_dataset_cfg *d = &cfg->datasets[i];
		if (!d->path)
			return tern_fail(TERN_E_INVALID, "%s: datasets.%d.path: missing", cfg->file, i);
		if (d->field && d->type != TERN_DS_COMPLETION)
			return tern_fail(
				TERN_E_INVALID,
				"%s: datasets.%d.field: only type completion reads a text field (this "
				"dataset is %s)",
				cfg->file, i, ds_type_names[d->type]);
		if ((d->field_messages || d->role_key || d->content_key) && d->type != TERN_DS_CHAT)
			return tern_fail(TERN_E_INVALID,
					 "%s: datasets.%d.%s: only type chat_template reads messages (this "
					 "dataset is %s)",
					 cfg->file, i,
					 d->field_messages ? "field_messages" : "message_property_mappings",
					 ds_type_names[d->type]);
	}
	if (cfg->cosine_min_lr_ratio > 0 && cfg->lr_scheduler != TERN_SCHED_COSINE &&
	    cfg->lr_scheduler != TERN_SCHED_COSINE_MIN_LR)
		return tern_fail(TERN_E_INVALID, "%s: applies to the cosine schedules, not %s",
				 kloc(cfg, "cosine_min_lr_ratio", a, sizeof a),
				 sched_names[cfg->lr_scheduler]);
	if (cfg->lr_scheduler == TERN_SCHED_COSINE_MIN_LR && cfg->cosine_min_lr_ratio == 0)
		return tern_fail(TERN_E_INVALID,
				 "%s: 'cosine_with_min_lr' needs its floor: cosine_min_lr_ratio (e.g. 0.1)",
				 kloc(cfg, "lr_scheduler", a, sizeof a));
	if (cfg->warmup_steps > 0 && cfg->warmup_ratio > 0)
		return tern_fail(TERN_E_INVALID, "%s: conflicts with %s: set one of them",
				 kloc(cfg, "warmup_steps", a, sizeof a),
				 kloc(cfg, "warmup_ratio", b, sizeof b));
	if (cfg->save_steps > 0 && cfg->saves_per_epoch > 0)
		return tern_fail(TERN_E_INVALID, "%s: conflicts with %s: set one of them",
				 kloc(cfg, "save_steps", a, sizeof a),
				 kloc(cfg, "saves_per_epoch", b, sizeof b));
	if (cfg->eval_steps > 0 && cfg->evals_per_epoch > 0)
		return tern_fail(TERN_E_INVALID, "%s: conflicts with %s: set one of them",
				 kloc(cfg, "eval_steps", a, sizeof a),
				 kloc(cfg, "evals_per_epoch", b, sizeof b));
	if (cfg->val_set_size >= 1 && cfg->val_set_size != floor(cfg->val_set_size))
		return tern_fail(
			TERN_E_INVALID,
			"%s: '%g' is neither a fraction nor a count (allowed: a fraction < 1 or a count >= 1)",
			kloc(cfg, "val_set_size", a, sizeof a), cfg->val_set_size);
	if ((cfg->eval_steps > 0 || cfg->evals_per_epoch > 0) && cfg->val_set_size == 0 &&
	    !cfg->n_eval_prompts && !cfg->warned_no_eval) {
		cfg->warned_no_eval = true;
		tern_log(TERN_LOG_WARN, "%s: there is no validation set (val_set_size: 0); no eval will run",
			 kloc(cfg, cfg->eval_steps > 0 ? "eval_steps" : "evals_per_epoch", a, sizeof a));
	}
	bool four = cfg->load_in_4bit || cfg->adapter == TERN_ADAPTER_QLORA;
	if (four && cfg->base_format != TERN_FORMAT_AUTO && cfg->base_format != TERN_FORMAT_NF4 &&
	    cfg->base_format != TERN_FORMAT_NF4_DQ)
		return tern_fail(TERN_E_INVALID,
				 "%s: '%s' conflicts with %s (allowed with a 4-bit base: nf4, nf4-dq)",
				 kloc(cfg, "base_format", a, sizeof a), base_names[cfg->base_format],
				 kloc(cfg, cfg->load_in_4bit ? "load_in_4bit" : "adapter", b, sizeof b));
	if (four && cfg->base_format == TERN_FORMAT_AUTO)
		cfg->base_format = TERN_FORMAT_NF4_DQ;
	if (cfg->n_target_modules == 1 && !strcmp(cfg->lora_target_modules[0], "all-linear"))
		cfg->lora_target_linear = true; /* PEFT: every linear layer but the output head */
	if (!cfg->lora_target_linear && cfg->n_target_modules == 0) {
		/* PEFT's default for llama/mistral/qwen: q_proj and v_proj */
		const char *def[] = {"q_proj", "v_proj"};
		char **m = tern_calloc(2, sizeof *m);
		if (!m)
			return TERN_E_NOMEM;
		for (int i = 0; i < 2; i++)
			if (!(m[i] = xstrdup(def[i]))) {
				free_list(m, i);
				return TERN_E_NOMEM;
			}
		cfg->lora_target_modules = m;
		cfg->n_target_modules = 2;
	}
	if (!cfg->output_dir && !(cfg->output_dir = xstrdup("./outputs/tern-out")))
		return TERN_E_NOMEM;
	return TERN_OK;
}

/* ---- writer ---- */

struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *fmt, ...) TERN_PRINTF(2, 3);
static void sb_add(struct sbuf *b, const char *fmt, ...)
{
	if (b->oom)
		return;
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int r = vsnprintf(b->p ? b->p + b->n : NULL, b->p ? b->cap - b->n : 0, fmt, ap);
		va_end(ap);
		if (r < 0) {
			b->oom = true;
			return;
		}
		if (b->p && b->n + (size_t)r < b->cap) {
			b->n += (size_t)r;
			return;
		}
		size_t nc = (b->cap ? b->cap * 2 : 4096) + (size_t)r;
		char *np = realloc(b->p, nc);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
}

static void sb_quoted(struct sbuf *b, const char *s)
{
	sb_add(b, "\"");
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			sb_add(b, "\\%c", ch);
		else if (ch == '\n')
			sb_add(b, "\\n");
		else if (ch == '\t')
			sb_add(b, "\\t");
		else if (ch < 0x20 || ch == 0x7f)
			sb_add(b, "\\x%02x", ch);
		else
			sb_add(b, "%c", ch);
	}
	sb_add(b, "\"");
}

/* the shortest %g that reads back as x */
static void sb_double(struct sbuf *b, double x)
{
	char buf[40];
	for (int prec = 1; prec <= 17; prec++) {
		snprintf(buf, sizeof buf, "%.*g", prec, x);
		if (strtod(buf, NULL) == x)
			break;
	}
	/* keep it a float to YAML readers: 16 -> 16.0 */
	if (!strpbrk(buf, ".eEni"))
		strcat(buf, ".0");
	sb_add(b, "%s", buf);
}

enum tern_status tern_config_write(const struct tern_config *cfg, char **yaml)
{
	*yaml = NULL;
	struct sbuf b = {0};
	sb_add(&b, "# tern resolved config\n");
	for (int i = 0; i < NKEYS; i++) {
		const struct key *k = &keys[i];
		const char *p = (const char *)cfg + k->off;
		if (k->kind == K_NOTE || k->kind == K_REJECT ||
		    (k->kind == K_MODELCFG && strcmp(k->name, "model_config")))
			continue; /* the overrides are written once, as model_config */
		sb_add(&b, "%s:", k->name);
		switch (k->kind) {
		case K_STR:
			if (*(char *const *)p) {
				sb_add(&b, " ");
				sb_quoted(&b, *(char *const *)p);
			} else {
				sb_add(&b, " null");
			}
			break;
		case K_BOOL: sb_add(&b, " %s", *(const bool *)p ? "true" : "false"); break;
		case K_BOOLX: {
			int x = *(const int *)p;
			sb_add(&b, " %s", x >= 2 ? k->names[x - 2] : x ? "true" : "false");
			break;
		}
		case K_INT: sb_add(&b, " %lld", (long long)*(const int64_t *)p); break;
		case K_FLOAT:
			sb_add(&b, " ");
			sb_double(&b, *(const double *)p);
			break;
		case K_ENUM: {
			int e;
			memcpy(&e, p, sizeof e);
			sb_add(&b, " %s", k->names[e]);
			break;
		}
		case K_SIZE: {
			int64_t x = *(const int64_t *)p;
			static const char *const u[] = {"TB", "GB", "MB", "KB"};
			int64_t m = (int64_t)1 << 40;
			if (x == 0) {
				sb_add(&b, " auto");
				break;
			}
			int j = 0;
			for (; j < 4; j++, m >>= 10)
				if (x % m == 0)
					break;
			if (j < 4)
				sb_add(&b, " %lld%s", (long long)(x / m), u[j]);
			else
				sb_add(&b, " %lldB", (long long)x);
			break;
		}
		case K_DURATION: {
			int64_t x = *(const int64_t *)p;
			if (x == 0)
				sb_add(&b, " null");
			else if (x % 3600 == 0)
				sb_add(&b, " %lldh", (long long)(x / 3600));
			else if (x % 60 == 0)
				sb_add(&b, " %lldm", (long long)(x / 60));
			else
				sb_add(&b, " %llds", (long long)x);
			break;
		}
		case K_PROMPTS: /* JSON texts, which YAML reads as flow scalars and sequences */
		case K_LIST: {
			char *const *l = *(char *const *const *)p;
			sb_add(&b, " [");
			for (int j = 0; j < *(const int *)(p + sizeof(char **)); j++)
				sb_add(&b, "%s%s", j ? ", " : "", l[j]);
			sb_add(&b, "]");
			break;
		}
		case K_DATASETS:
			if (!cfg->n_datasets)
				sb_add(&b, " []");
			for (int j = 0; j < cfg->n_datasets; j++) {
				sb_add(&b, "\n  - path: ");
				sb_quoted(&b, cfg->datasets[j].path ? cfg->datasets[j].path : "");
				const struct tern_dataset_cfg *e = &cfg->datasets[j];
				sb_add(&b, "\n    type: %s", ds_type_names[e->type]);
				const char *opt[] = {e->split, e->field_messages, e->field};
				const char *optn[] = {"split", "field_messages", "field"};
				for (int q = 0; q < 3; q++)
					if (opt[q]) {
						sb_add(&b, "\n    %s: ", optn[q]);
						sb_quoted(&b, opt[q]);
					}
				if (e->n_data_files) {
					sb_add(&b, "\n    data_files: [");
					for (int q = 0; q < e->n_data_files; q++) {
						sb_add(&b, "%s", q ? ", " : "");
						sb_quoted(&b, e->data_files[q]);
					}
					sb_add(&b, "]");
				}
				if (e->role_key || e->content_key) {
					sb_add(&b, "\n    message_property_mappings: {");
					if (e->role_key) {
						sb_add(&b, "role: ");
						sb_quoted(&b, e->role_key);
					}
					if (e->content_key) {
						sb_add(&b, "%scontent: ", e->role_key ? ", " : "");
						sb_quoted(&b, e->content_key);
					}
					sb_add(&b, "}");
				}
			}
			break;
		case K_SPECIAL: {
			static const char *const tn[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
			int any = 0;
			for (int j = 0; j < 4; j++) {
				const char *t = (&cfg->bos_token)[j];
				if (!t)
					continue;
				sb_add(&b, "\n  %s: ", tn[j]);
				sb_quoted(&b, t);
				any++;
			}
			if (!any)
				sb_add(&b, " {}");
			break;
		}
		case K_OPTIM: sb_add(&b, " adamw_torch"); break;
		case K_MODELCFG:
			if (cfg->output_router_logits >= 0)
				sb_add(&b, "\n  output_router_logits: %s",
				       cfg->output_router_logits ? "true" : "false");
			if (cfg->router_aux_loss_coef >= 0)
				sb_add(&b, "\n  router_aux_loss_coef: %.17g", cfg->router_aux_loss_coef);
			if (cfg->output_router_logits < 0 && cfg->router_aux_loss_coef < 0)
				sb_add(&b, " {}");
			break;
		default: break;
		}
		sb_add(&b, "\n");
	}
	if (b.oom) {
		free(b.p);
		return tern_fail(TERN_E_NOMEM, "out of host memory writing the config");
	}
	*yaml = b.p;
	return TERN_OK;
}

enum tern_status tern_config_save(const struct tern_config *cfg, const char *path)
{
	char *text;
	enum tern_status st = tern_config_write(cfg, &text);
	if (st)
		return st;
	size_t pl = strlen(path);
	char *tmp = tern_malloc(pl + 32);
	if (!tmp) {
		free(text);
		return TERN_E_NOMEM;
	}
	snprintf(tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid()); /* the one temporary-name pattern */
	FILE *f = fopen(tmp, "wb");
	if (!f) {
		st = tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
		goto out;
	}
	size_t len = strlen(text);
	bool ok = fwrite(text, 1, len, f) == len;
	ok &= fclose(f) == 0;
	if (!ok) {
		remove(tmp);
		st = tern_fail(TERN_E_IO, "%s: write error", tmp);
		goto out;
	}
	if (rename(tmp, path) != 0) {
		remove(tmp);
		st = tern_fail(TERN_E_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
	}
out:
	free(tmp);
	free(text);
	return st;
}
