/* config.json parsing: see config.h. */
#define _POSIX_C_SOURCE 200809L
#include "model/config.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_DIM (1 << 20) /* D, F, Dh: far above any real model */
#define MAX_VOCAB (1 << 24)
#define MAX_LAYERS 4096
#define MAX_HEADS 65536
#define MAX_POS ((int64_t)1 << 32)

static const char *const arch_names[TERN_ARCH_COUNT] = {"llama",   "mistral", "qwen2",    "qwen3",
							"mixtral", "bitnet",  "qwen3_moe"};

const char *tern_arch_name(enum tern_arch a) { return a < TERN_ARCH_COUNT ? arch_names[a] : "?"; }

bool tern_model_layer_moe(const struct tern_model_config *c, int64_t l)
{
	if (c->E <= 0 || l < 0 || l >= c->L)
		return false;
	if (c->arch == TERN_ARCH_MIXTRAL)
		return true;
	if ((c->mlp_only[l / 64] >> (l % 64)) & 1u)
		return false;
	return (l + 1) % c->sparse_step == 0;
}

enum tern_status tern_read_file(const char *path, size_t max, char **out, size_t *len)
{
	enum tern_status st = TERN_OK;
	char *buf = NULL;
	FILE *f = fopen(path, "rb");
	*out = NULL;
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
		st = tern_fail(TERN_E_IO, "%s: not a regular file", path);
		goto out;
	}
	if ((uint64_t)sb.st_size > max) {
		st = tern_fail(TERN_E_FORMAT, "%s: %lld bytes, more than the %zu this file may have", path,
			       (long long)sb.st_size, max);
		goto out;
	}
	buf = tern_malloc((size_t)sb.st_size + 1);
	if (!buf) {
		st = TERN_E_NOMEM;
		goto out;
	}
	size_t n = fread(buf, 1, (size_t)sb.st_size, f);
	if (n != (size_t)sb.st_size) {
		st = tern_fail(TERN_E_IO, "%s: short read (%zu of %lld bytes)", path, n,
			       (long long)sb.st_size);
		goto out;
	}
	buf[n] = 0;
	*len = n;
	*out = buf;
	buf = NULL;
out:
	free(buf);
	fclose(f);
	return st;
}

/* ---- typed field access; null counts as absent ---- */

struct ctx {
	const char *path;
	const char *prefix; /* "" or "rope_scaling." for nested objects */
};

/* Short rendering of a JSON value for messages. */
static void show(const json_t *v, char *buf, size_t size)
{
	char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	if (!s) {
		snprintf(buf, size, "?");
		return;
	}
	if (strlen(s) > 60)
		snprintf(buf, size, "%.57s...", s);
	else
		snprintf(buf, size, "%s", s);
	free(s);
}

static enum tern_status bad(const struct ctx *c, const char *key, const json_t *v, const char *expected)
{
	char val[80];
	show(v, val, sizeof val);
	return tern_fail(TERN_E_FORMAT, "%s: %s%s = %s: expected %s", c->path, c->prefix, key, val, expected);
}

static const json_t *field(const json_t *obj, const char *key)
{
	const json_t *v = json_object_get(obj, key);
	return v && !json_is_null(v) ? v : NULL;
}

/* *out = integer in [lo, hi]; absent: def, or an error when required. */
static enum tern_status get_int(const struct ctx *c, const json_t *obj, const char *key, bool required,
				int64_t def, int64_t lo, int64_t hi, int64_t *out)
{
	const json_t *v = field(obj, key);
	if (!v) {
		if (required)
			return tern_fail(TERN_E_FORMAT, "%s: missing key %s%s", c->path, c->prefix, key);
		*out = def;
		return TERN_OK;
	}
	json_int_t x;
	if (json_is_integer(v)) {
		x = json_integer_value(v);
	} else if (json_is_real(v) && json_real_value(v) == floor(json_real_value(v)) &&
		   fabs(json_real_value(v)) < 9e15) {
		x = (json_int_t)json_real_value(v); /* 4096.0 */
	} else {
		x = lo - 1;
	}
	if (x < lo || x > hi) {
		char exp[96];
		snprintf(exp, sizeof exp, "an integer from %lld to %lld", (long long)lo, (long long)hi);
		return bad(c, key, v, exp);
	}
	*out = x;
	return TERN_OK;
}

/* *out = finite number in (lo, hi] (lo exclusive when lo_open). */
static enum tern_status get_num(const struct ctx *c, const json_t *obj, const char *key, double def,
				double lo, double hi, double *out)
{
	const json_t *v = field(obj, key);
	if (!v) {
		*out = def;
		return TERN_OK;
	}
	double x = json_is_number(v) ? json_number_value(v) : NAN;
	if (!(x > lo && x <= hi)) {
		char exp[96];
		snprintf(exp, sizeof exp, "a number greater than %g and at most %g", lo, hi);
		return bad(c, key, v, exp);
	}
	*out = x;
	return TERN_OK;
}

static enum tern_status get_bool(const struct ctx *c, const json_t *obj, const char *key, bool def, bool *out)
{
	const json_t *v = field(obj, key);
	if (!v) {
		*out = def;
		return TERN_OK;
	}
	if (!json_is_boolean(v))
		return bad(c, key, v, "true or false");
	*out = json_is_true(v);
	return TERN_OK;
}

/* *out = the string or def (may be NULL) when absent. */
static enum tern_status get_str(const struct ctx *c, const json_t *obj, const char *key, const char *def,
				const char **out)
{
	const json_t *v = field(obj, key);
	if (!v) {
		*out = def;
		return TERN_OK;
	}
	if (!json_is_string(v))
		return bad(c, key, v, "a string");
	*out = json_string_value(v);
	return TERN_OK;
}

static enum tern_status parse_dtype(const struct ctx *c, const json_t *obj, const char *key,
				    enum tern_dtype *dt)
{
	const char *s = NULL;
	enum tern_status st = get_str(c, obj, key, NULL, &s);
	if (st || !s)
		return st;
	if (!strncmp(s, "torch.", 6))
		s += 6;
	if (!strcmp(s, "float32") || !strcmp(s, "float"))
		*dt = TERN_F32;
	else if (!strcmp(s, "float16") || !strcmp(s, "half"))
		*dt = TERN_F16;
	else if (!strcmp(s, "bfloat16"))
		*dt = TERN_BF16;
	else
		return bad(c, key, field(obj, key), "one of float32, float16, bfloat16");
	return TERN_OK;
}

/* rope_scaling (old spelling) or rope_parameters (new): type and its fields. */
static enum tern_status parse_rope(const struct ctx *c0, const json_t *obj, const char *name,
				   struct tern_model_config *cfg)
{
	enum tern_status st;
	char prefix[48];
	snprintf(prefix, sizeof prefix, "%s.", name);
	struct ctx c = {c0->path, prefix};
	const json_t *r = field(obj, name);
	if (!r)
		return TERN_OK;
	if (!json_is_object(r))
		return bad(c0, name, r, "an object or null");
	if (field(r, "rope_theta") &&
	    (st = get_num(&c, r, "rope_theta", cfg->rope_theta, 0, 1e12, &cfg->rope_theta)))
		return st;
	const char *type = NULL;
	if ((st = get_str(&c, r, "rope_type", NULL, &type)))
		return st;
	if (!type && (st = get_str(&c, r, "type", "default", &type)))
		return st;
	if (!strcmp(type, "default")) {
		cfg->rope_type = TERN_ROPE_DEFAULT;
		return TERN_OK;
	}
	if (!strcmp(type, "linear")) {
		cfg->rope_type = TERN_ROPE_LINEAR;
		if (!field(r, "factor"))
			return tern_fail(TERN_E_FORMAT, "%s: missing key %sfactor", c.path, prefix);
		return get_num(&c, r, "factor", 1, 0, 1e6, &cfg->rope_factor);
	}
	if (!strcmp(type, "llama3")) {
		cfg->rope_type = TERN_ROPE_LLAMA3;
		static const char *const need[] = {"factor", "low_freq_factor", "high_freq_factor",
						   "original_max_position_embeddings"};
		for (int i = 0; i < 4; i++)
			if (!field(r, need[i]))
				return tern_fail(TERN_E_FORMAT, "%s: missing key %s%s (llama3 rope scaling)",
						 c.path, prefix, need[i]);
		if ((st = get_num(&c, r, "factor", 1, 0, 1e6, &cfg->rope_factor)) ||
		    (st = get_num(&c, r, "low_freq_factor", 1, 0, 1e6, &cfg->rope_low_freq_factor)) ||
		    (st = get_num(&c, r, "high_freq_factor", 4, 0, 1e6, &cfg->rope_high_freq_factor)) ||
		    (st = get_int(&c, r, "original_max_position_embeddings", true, 0, 1, MAX_POS,
				  &cfg->rope_original_max_pos)))
			return st;
		if (cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor)
			return bad(&c, "high_freq_factor", field(r, "high_freq_factor"),
				   "a number greater than low_freq_factor");
		return TERN_OK;
	}
	return tern_fail(TERN_E_UNSUPPORTED,
			 "%s: %srope_type %s is not supported (supported: default, linear, llama3)", c.path,
			 prefix, type);
}

static enum tern_status parse_quant(const struct ctx *c0, const json_t *root, struct tern_model_config *cfg)
{
	enum tern_status st;
	struct ctx c = {c0->path, "quantization_config."};
	const json_t *q = field(root, "quantization_config");
	if (!q)
		return TERN_OK;
	if (!json_is_object(q))
		return bad(c0, "quantization_config", q, "an object or null");
	const char *method = NULL;
	if ((st = get_str(&c, q, "quant_method", NULL, &method)))
		return st;
	if (!method)
		return tern_fail(TERN_E_FORMAT, "%s: missing key quantization_config.quant_method", c.path);
	if (!strcmp(method, "bitsandbytes")) {
		bool l4 = false, l8 = false;
		const char *qt = NULL;
		if ((st = get_bool(&c, q, "load_in_4bit", false, &l4)) ||
		    (st = get_bool(&c, q, "load_in_8bit", false, &l8)) ||
		    (st = get_str(&c, q, "bnb_4bit_quant_type", "fp4", &qt)) ||
		    (st = get_bool(&c, q, "bnb_4bit_use_double_quant", false, &cfg->bnb_double_quant)))
			return st;
		if (l8 || !l4)
			return tern_fail(
				TERN_E_UNSUPPORTED,
				"%s: quantization_config: bitsandbytes 8-bit checkpoints are not supported "
				"(supported: load_in_4bit with bnb_4bit_quant_type nf4)",
				c.path);
		if (strcmp(qt, "nf4"))
			return tern_fail(TERN_E_UNSUPPORTED,
					 "%s: quantization_config.bnb_4bit_quant_type %s is not supported "
					 "(supported: nf4)",
					 c.path, qt);
		cfg->bnb_compute = TERN_BF16;
		if ((st = parse_dtype(&c, q, "bnb_4bit_compute_dtype", &cfg->bnb_compute)))
			return st;
		cfg->qmethod = TERN_QMETHOD_BNB_4BIT;
		return TERN_OK;
	}
	if (!strcmp(method, "bitnet")) {
		const char *lc = NULL, *mode = NULL;
		/* transformers' BitNetQuantConfig defaults: bitlinear, offline */
		if ((st = get_str(&c, q, "linear_class", "bitlinear", &lc)) ||
		    (st = get_str(&c, q, "quantization_mode", "offline", &mode)) ||
		    (st = get_bool(&c, q, "use_rms_norm", false, &cfg->bitnet_rms_norm)))
			return st;
		if (strcmp(lc, "autobitlinear") && strcmp(lc, "bitlinear"))
			return bad(&c, "linear_class", field(q, "linear_class"),
				   "autobitlinear or bitlinear");
		if (strcmp(mode, "offline") && strcmp(mode, "online"))
			return bad(&c, "quantization_mode", field(q, "quantization_mode"),
				   "offline or online");
		snprintf(cfg->bitnet_linear_class, sizeof cfg->bitnet_linear_class, "%s", lc);
		snprintf(cfg->bitnet_mode, sizeof cfg->bitnet_mode, "%s", mode);
		cfg->qmethod = TERN_QMETHOD_BITNET;
		return TERN_OK;
	}
	return tern_fail(
		TERN_E_UNSUPPORTED,
		"%s: quantization_config.quant_method %.40s is not supported (supported: bitsandbytes "
		"4-bit nf4, bitnet)",
		c.path, method);
}

static enum tern_status parse_moe(const struct ctx *c, const json_t *root, struct tern_model_config *cfg);

static enum tern_status parse(const json_t *root, const char *path, struct tern_model_config *cfg)
{
	enum tern_status st;
	struct ctx c = {path, ""};
	memset(cfg, 0, sizeof *cfg);
	if (!json_is_object(root))
		return tern_fail(TERN_E_FORMAT, "%s: expected a JSON object at the top level", path);

	const char *type = NULL;
	if ((st = get_str(&c, root, "model_type", NULL, &type)))
		return st;
	if (!type)
		return tern_fail(TERN_E_FORMAT, "%s: missing key model_type", path);
	int a = 0;
	while (a < TERN_ARCH_COUNT && strcmp(type, arch_names[a]))
		a++;
	if (a == TERN_ARCH_COUNT)
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: model_type %.40s is not supported (supported: llama, mistral, qwen2, qwen3, "
			"mixtral, qwen3_moe, bitnet)",
			path, type);
	cfg->arch = (enum tern_arch)a;
	snprintf(cfg->model_type, sizeof cfg->model_type, "%s", type);
	bool mix = cfg->arch == TERN_ARCH_MIXTRAL, bitnet = cfg->arch == TERN_ARCH_BITNET;
	bool q3m = cfg->arch == TERN_ARCH_QWEN3_MOE, qwen3 = cfg->arch == TERN_ARCH_QWEN3 || q3m;

	if ((st = get_int(&c, root, "hidden_size", true, 0, 1, MAX_DIM, &cfg->D)) ||
	    (st = get_int(&c, root, "intermediate_size", true, 0, 1, MAX_DIM, &cfg->F)) ||
	    (st = get_int(&c, root, "num_hidden_layers", true, 0, 1, MAX_LAYERS, &cfg->L)) ||
	    (st = get_int(&c, root, "num_attention_heads", true, 0, 1, MAX_HEADS, &cfg->H)) ||
	    (st = get_int(&c, root, "vocab_size", true, 0, 1, MAX_VOCAB, &cfg->V)))
		return st;
	int64_t kv_def = (cfg->arch == TERN_ARCH_MISTRAL || mix) ? 8 : cfg->H;
	if ((st = get_int(&c, root, "num_key_value_heads", false, kv_def, 1, cfg->H, &cfg->Hkv)))
		return st;
	if (cfg->H % cfg->Hkv)
		return bad(&c, "num_key_value_heads", field(root, "num_key_value_heads"),
			   "a divisor of num_attention_heads");
	bool has_dh = field(root, "head_dim") != NULL;
	if (!has_dh && !qwen3 && cfg->D % cfg->H)
		return bad(&c, "hidden_size", field(root, "hidden_size"),
			   "a multiple of num_attention_heads (or give head_dim)");
	int64_t dh_def = qwen3 ? 128 : cfg->D / cfg->H;
	if ((st = get_int(&c, root, "head_dim", false, dh_def, 2, MAX_DIM, &cfg->Dh)))
		return st;
	if (cfg->Dh % 2)
		return bad(&c, "head_dim",
			   field(root, "head_dim") ? field(root, "head_dim") : field(root, "hidden_size"),
			   "an even head dimension (RoPE rotates pairs)");
	if (cfg->H * cfg->Dh > MAX_DIM)
		return bad(&c, "head_dim", field(root, "head_dim"),
			   "num_attention_heads * head_dim <= 1048576");

	int64_t pos_def = cfg->arch == TERN_ARCH_LLAMA            ? 2048
			  : cfg->arch == TERN_ARCH_MISTRAL || mix ? 131072
								  : 32768;
	double eps_def = mix || bitnet ? 1e-5 : 1e-6;
	double theta_def = mix ? 1e6 : bitnet ? 500000 : 10000;
	if ((st = get_int(&c, root, "max_position_embeddings", false, pos_def, 1, MAX_POS, &cfg->max_pos)) ||
	    (st = get_num(&c, root, "rms_norm_eps", eps_def, 0, 1, &cfg->rms_eps)) ||
	    (st = get_num(&c, root, "rope_theta", theta_def, 0, 1e12, &cfg->rope_theta)))
		return st;
	cfg->rope_type = TERN_ROPE_DEFAULT;
	if ((st = parse_rope(&c, root, "rope_scaling", cfg)) ||
	    (st = parse_rope(&c, root, "rope_parameters", cfg)))
		return st;

	/* Biases and norms by architecture (formats.md §4). */
	bool ab = false;
	switch (cfg->arch) {
	case TERN_ARCH_LLAMA:
	case TERN_ARCH_BITNET:
		if ((st = get_bool(&c, root, "attention_bias", false, &ab)) ||
		    (st = get_bool(&c, root, "mlp_bias", false, &cfg->mlp_bias)))
			return st;
		cfg->qkv_bias = cfg->o_bias = ab;
		break;
	case TERN_ARCH_QWEN2: cfg->qkv_bias = true; break;
	case TERN_ARCH_QWEN3:
	case TERN_ARCH_QWEN3_MOE:
		if ((st = get_bool(&c, root, "attention_bias", false, &ab)))
			return st;
		cfg->qkv_bias = cfg->o_bias = ab;
		cfg->qk_norm = true;
		break;
	default: break;
	}

	/* Sliding window. */
	if (cfg->arch == TERN_ARCH_MISTRAL || mix) {
		const json_t *sw = json_object_get(root, "sliding_window");
		if (!sw) /* absent: Mistral's default 4096; null: full attention */
			cfg->sliding_window = mix ? 0 : 4096;
		else if ((st = get_int(&c, root, "sliding_window", false, 0, 1, MAX_POS,
				       &cfg->sliding_window)))
			return st;
	} else if (cfg->arch == TERN_ARCH_QWEN2 || qwen3) {
		bool use = false;
		int64_t sw = 0;
		if ((st = get_bool(&c, root, "use_sliding_window", false, &use)) ||
		    (st = get_int(&c, root, "sliding_window", false, 4096, 1, MAX_POS, &sw)) ||
		    (st = get_int(&c, root, "max_window_layers", false, 28, 0, MAX_LAYERS,
				  &cfg->max_window_layers)))
			return st;
		cfg->sliding_window = use ? sw : 0;
	}

	if ((st = get_bool(&c, root, "tie_word_embeddings", false, &cfg->tie_embeddings)))
		return st;

	const char *act = NULL;
	if ((st = get_str(&c, root, "hidden_act", bitnet ? "relu2" : "silu", &act)))
		return st;
	if (!strcmp(act, "silu") || !strcmp(act, "swish"))
		cfg->act = TERN_ACT_SILU;
	else if (!strcmp(act, "relu2") && bitnet)
		cfg->act = TERN_ACT_RELU2;
	else
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: hidden_act %.40s is not supported for %s (supported: %s)", path, act,
				 type, bitnet ? "relu2" : "silu");

	cfg->dtype = TERN_BF16;
	if (field(root, "dtype")) {
		if ((st = parse_dtype(&c, root, "dtype", &cfg->dtype)))
			return st;
	} else if ((st = parse_dtype(&c, root, "torch_dtype", &cfg->dtype))) {
		return st;
	}

	if ((st = parse_moe(&c, root, cfg)))
		return st;

	/* 1bitLLM's BitNet b1.58 reproductions: model_type llama with custom code whose BitLinear
	 * quantizes weights to ternary and activations to 8 bits on the fly, SiLU, no sub-norms */
	if (!bitnet && (field(root, "weight_bits") || field(root, "input_bits")))
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: weight_bits/input_bits: a 1bitLLM-style BitNet (%s layers with "
				 "BitLinear, 8-bit activations) is not supported (supported: model_type "
				 "bitnet); to fine-tune it as a plain %s over ternary weights without "
				 "8-bit activations, remove both keys and set base_format: ternary",
				 path, type, type);

	if ((st = parse_quant(&c, root, cfg)))
		return st;
	if (cfg->qmethod == TERN_QMETHOD_BITNET && !bitnet)
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: quantization_config.quant_method bitnet needs model_type bitnet, not %s", path,
			type);
	return TERN_OK;
}

/* The mixture-of-experts keys of mixtral and qwen3_moe (transformers' defaults when absent). */
static enum tern_status parse_moe(const struct ctx *c, const json_t *root, struct tern_model_config *cfg)
{
	bool mix = cfg->arch == TERN_ARCH_MIXTRAL, q3m = cfg->arch == TERN_ARCH_QWEN3_MOE;
	enum tern_status st;
	cfg->sparse_step = 1;
	if (!mix && !q3m)
		return TERN_OK;
	/* qwen3_moe: num_experts (transformers 5 writes num_local_experts, its attribute_map alias) */
	const char *ek = mix || !field(root, "num_experts") ? "num_local_experts" : "num_experts";
	if ((st = get_int(c, root, ek, false, mix ? 8 : 128, 1, 4096, &cfg->E)) ||
	    (st = get_int(c, root, "num_experts_per_tok", false, mix ? 2 : 8, 1, cfg->E, &cfg->top_k)) ||
	    (st = get_bool(c, root, "output_router_logits", false, &cfg->router_logits)) ||
	    (st = get_num(c, root, "router_aux_loss_coef", mix ? 0.02 : 0.001, -1, 1e6,
			  &cfg->router_aux_coef)))
		return st;
	if (cfg->router_aux_coef < 0)
		return bad(c, "router_aux_loss_coef", field(root, "router_aux_loss_coef"), "a number >= 0");
	if (mix) {
		double jitter = 0;
		if ((st = get_num(c, root, "router_jitter_noise", 0, -1, 1, &jitter)))
			return st;
		if (jitter != 0)
			return bad(c, "router_jitter_noise", field(root, "router_jitter_noise"),
				   "0 (tern does not train with router jitter)");
		cfg->Fe = cfg->F;
		cfg->norm_topk = true;
		return TERN_OK;
	}
	if ((st = get_int(c, root, "moe_intermediate_size", false, 768, 1, MAX_DIM, &cfg->Fe)) ||
	    (st = get_bool(c, root, "norm_topk_prob", false, &cfg->norm_topk)) ||
	    (st = get_int(c, root, "decoder_sparse_step", false, 1, 1, MAX_LAYERS, &cfg->sparse_step)))
		return st;
	const json_t *mo = field(root, "mlp_only_layers");
	if (mo && !json_is_array(mo))
		return bad(c, "mlp_only_layers", mo, "a list of layer indices");
	size_t i;
	const json_t *x;
	json_array_foreach(mo, i, x)
	{
		json_int_t l = json_is_integer(x) ? json_integer_value(x) : -1;
		if (l < 0 || l >= cfg->L || l >= 64 * 64)
			return bad(c, "mlp_only_layers", mo, "layer indices from 0 to num_hidden_layers - 1");
		cfg->mlp_only[l / 64] |= (uint64_t)1 << (l % 64);
	}
	return TERN_OK;
}

enum tern_status tern_model_config_parse(const char *json, size_t len, const char *path,
					 struct tern_model_config *cfg)
{
	json_error_t err;
	enum tern_status st;
	json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &err);
	if (!root) {
		st = tern_fail(TERN_E_FORMAT, "%s: line %d column %d: %s", path, err.line, err.column,
			       err.text);
	} else {
		st = parse(root, path, cfg);
		json_decref(root);
	}
	if (st != TERN_OK) {
		/* Values quoted from the file may hold control characters: keep the message one line. */
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		for (char *c = msg; *c; c++)
			if ((unsigned char)*c < 0x20 || *c == 0x7f)
				*c = '?';
		tern_fail(st, "%s", msg);
	}
	return st;
}

enum tern_status tern_model_config_load(const char *dir, struct tern_model_config *cfg)
{
	char path[4096];
	char *text = NULL;
	size_t len = 0;
	snprintf(path, sizeof path, "%s/config.json", dir);
	enum tern_status st = tern_read_file(path, 16 << 20, &text, &len);
	if (st == TERN_OK)
		st = tern_model_config_parse(text, len, path, cfg);
	free(text);
	return st;
}

enum tern_status tern_model_config_check(const struct tern_model_config *cfg, const char *path)
{
	/* bitnet without a quantization_config: master weights (microsoft's -bf16 variant),
	 * quantized on load like quantization_mode online */
	if (cfg->arch == TERN_ARCH_BITNET && cfg->bitnet_rms_norm)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: quantization_config.use_rms_norm = true (an RMSNorm inside every "
				 "BitLinear) is not supported (supported: use_rms_norm false or absent)",
				 path);
	if (cfg->arch == TERN_ARCH_BITNET && cfg->H * cfg->Dh != cfg->D)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: bitnet with num_attention_heads * head_dim = %lld != hidden_size %lld "
				 "(attn_sub_norm has hidden_size weights)",
				 path, (long long)(cfg->H * cfg->Dh), (long long)cfg->D);
	return TERN_OK;
}
