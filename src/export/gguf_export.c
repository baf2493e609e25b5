/* tern export gguf: the merged model, or the adapter as a GGUF LoRA, in llama.cpp's layout
 * (include/tern/export.h; docs/FORMATS.md "GGUF files written").
 *
 * Facts from llama.cpp's converters (convert_hf_to_gguf.py, convert_lora_to_gguf.py,
 * gguf-py/gguf/constants.py), written here independently:
 *   - architectures: llama and mistral checkpoints are "llama" (mistral's sliding window is not
 *     represented), qwen2 "qwen2", qwen3 "qwen3";
 *   - tensor names: token_embd, output_norm, output, blk.N.{attn_norm, attn_q, attn_k, attn_v,
 *     attn_output, attn_q_norm, attn_k_norm, ffn_norm, ffn_gate, ffn_up, ffn_down}, with .weight /
 *     .bias; rope_freqs.weight for Llama 3 RoPE scaling (the per-frequency divisors);
 *   - "llama" rows of q_proj and k_proj are permuted for ggml's interleaved RoPE: within each head
 *     of Dh rows, row i * Dh/2 + j moves to 2 j + i (i in {0, 1}, j < Dh/2); a LoRA's lora_b rows
 *     the same, lora_a unchanged;
 *   - 1-d tensors (norms, biases) and rope_freqs are F32; matrices take the file type; Q8_0 needs
 *     rows of a multiple of 32 values, else F16;
 *   - a LoRA: general.type "adapter", adapter.type "lora", adapter.lora.alpha (f32), tensors
 *     <base name>.lora_a (ne [in, r]) and .lora_b (ne [r, out]). */
#define _GNU_SOURCE
#include "export/gguf.h"
#include "export/source.h"

#include "quant/quant.h"
#include "tern/export.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *const gtype_names[] = {"f32", "f16", "bf16", "q8_0", "q4_k_m"};

const char *tern_gguf_type_name(enum tern_gguf_type t)
{
	return (unsigned)t < TERN_GGUF_TYPE_COUNT ? gtype_names[t] : "?";
}

enum tern_status tern_gguf_type_parse(const char *s, enum tern_gguf_type *out)
{
	for (int i = 0; i < TERN_GGUF_TYPE_COUNT; i++)
		if (s && !strcmp(s, gtype_names[i])) {
			*out = (enum tern_gguf_type)i;
			return TERN_OK;
		}
	return tern_fail(TERN_E_INVALID, "GGUF type '%s' (allowed: f32, f16, bf16, q8_0, q4_k_m)",
			 s ? s : "");
}

static enum tern_ggml_type ggml_of(enum tern_gguf_type t)
{
	return t == TERN_GGUF_F16      ? TERN_GGML_F16
	       : t == TERN_GGUF_BF16   ? TERN_GGML_BF16
	       : t == TERN_GGUF_Q8_0   ? TERN_GGML_Q8_0
	       : t == TERN_GGUF_Q4_K_M ? TERN_GGML_Q4_K
				       : TERN_GGML_F32;
}

/* llama.cpp's general.file_type (LlamaFileType). */
static uint32_t file_type(enum tern_gguf_type t)
{
	return t == TERN_GGUF_F16      ? 1
	       : t == TERN_GGUF_BF16   ? 32
	       : t == TERN_GGUF_Q8_0   ? 7
	       : t == TERN_GGUF_Q4_K_M ? 15
				       : 0;
}

static const char *gguf_arch(const struct tern_model_config *c)
{
	switch (c->arch) {
	case TERN_ARCH_LLAMA:
	case TERN_ARCH_MISTRAL: return "llama";
	case TERN_ARCH_QWEN2: return "qwen2";
	case TERN_ARCH_QWEN3: return "qwen3";
	default: return NULL;
	}
}

static bool permutes(const struct tern_model_config *c) { return !strcmp(gguf_arch(c), "llama"); }

/* The llama.cpp name of a tensor ("blk.3.attn_q.weight"); false for a role without one. */
static bool gguf_name(const struct tern_msrc_tensor *t, char *buf, size_t cap)
{
	static const char *const names[TERN_ROLE_COUNT] = {
		[TERN_ROLE_EMBED] = "token_embd.weight",   [TERN_ROLE_NORM] = "output_norm.weight",
		[TERN_ROLE_HEAD] = "output.weight",        [TERN_ROLE_ATTN_NORM] = "attn_norm.weight",
		[TERN_ROLE_Q] = "attn_q.weight",           [TERN_ROLE_K] = "attn_k.weight",
		[TERN_ROLE_V] = "attn_v.weight",           [TERN_ROLE_O] = "attn_output.weight",
		[TERN_ROLE_Q_BIAS] = "attn_q.bias",        [TERN_ROLE_K_BIAS] = "attn_k.bias",
		[TERN_ROLE_V_BIAS] = "attn_v.bias",        [TERN_ROLE_O_BIAS] = "attn_output.bias",
		[TERN_ROLE_Q_NORM] = "attn_q_norm.weight", [TERN_ROLE_K_NORM] = "attn_k_norm.weight",
		[TERN_ROLE_MLP_NORM] = "ffn_norm.weight",  [TERN_ROLE_GATE] = "ffn_gate.weight",
		[TERN_ROLE_UP] = "ffn_up.weight",          [TERN_ROLE_DOWN] = "ffn_down.weight",
		[TERN_ROLE_GATE_BIAS] = "ffn_gate.bias",   [TERN_ROLE_UP_BIAS] = "ffn_up.bias",
		[TERN_ROLE_DOWN_BIAS] = "ffn_down.bias",
	};
	const char *n = (unsigned)t->role < TERN_ROLE_COUNT ? names[t->role] : NULL;
	if (!n)
		return false;
	if (t->layer < 0)
		snprintf(buf, cap, "%s", n);
	else
		snprintf(buf, cap, "blk.%d.%s", t->layer, n);
	return true;
}

/* Rows [O, I] of a q or k projection (or bias, I = 1) in llama.cpp's order for n_head heads. */
static void permute_rows(const float *src, float *dst, int64_t O, int64_t I, int64_t n_head)
{
	int64_t dh = O / n_head, half = dh / 2;
	for (int64_t h = 0; h < n_head; h++)
		for (int64_t i = 0; i < 2; i++)
			for (int64_t j = 0; j < half; j++)
				memcpy(dst + (h * dh + 2 * j + i) * I, src + (h * dh + i * half + j) * I,
				       (size_t)I * sizeof(float));
}

/* ---- metadata ---- */

static void put_arch(struct tern_gguf_writer *w, const struct tern_model_config *c, const char *arch)
{
	char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
	tern_gguf_kv_u32(w, KEY("vocab_size"), (uint32_t)c->V);
	tern_gguf_kv_u32(w, KEY("context_length"), (uint32_t)c->max_pos);
	tern_gguf_kv_u32(w, KEY("embedding_length"), (uint32_t)c->D);
	tern_gguf_kv_u32(w, KEY("block_count"), (uint32_t)c->L);
	tern_gguf_kv_u32(w, KEY("feed_forward_length"), (uint32_t)c->F);
	tern_gguf_kv_u32(w, KEY("attention.head_count"), (uint32_t)c->H);
	tern_gguf_kv_u32(w, KEY("attention.head_count_kv"), (uint32_t)c->Hkv);
	tern_gguf_kv_f32(w, KEY("rope.freq_base"), (float)c->rope_theta);
	tern_gguf_kv_f32(w, KEY("attention.layer_norm_rms_epsilon"), (float)c->rms_eps);
	tern_gguf_kv_u32(w, KEY("attention.key_length"), (uint32_t)c->Dh);
	tern_gguf_kv_u32(w, KEY("attention.value_length"), (uint32_t)c->Dh);
	tern_gguf_kv_u32(w, KEY("rope.dimension_count"), (uint32_t)c->Dh);
	if (c->rope_type == TERN_ROPE_LINEAR) {
		tern_gguf_kv_str(w, KEY("rope.scaling.type"), "linear");
		tern_gguf_kv_f32(w, KEY("rope.scaling.factor"), (float)c->rope_factor);
	}
#undef KEY
}

/* Llama 3 RoPE scaling as llama.cpp takes it: rope_freqs[Dh/2], the divisor of each frequency. */
static void llama3_factors(const struct tern_model_config *c, float *f)
{
	double old = (double)c->rope_original_max_pos, lo = c->rope_low_freq_factor,
	       hi = c->rope_high_freq_factor, factor = c->rope_factor;
	double lo_wl = old / lo, hi_wl = old / hi;
	for (int64_t i = 0; i < c->Dh / 2; i++) {
		float freq = 1.0f / powf((float)c->rope_theta, (float)(2 * i) / (float)c->Dh);
		double wl = 2.0 * M_PI / (double)freq;
		if (wl < hi_wl)
			f[i] = 1.0f;
		else if (wl > lo_wl)
			f[i] = (float)factor;
		else {
			double sm = (old / wl - lo) / (hi - lo);
			f[i] = (float)(1.0 / ((1.0 - sm) / factor + sm));
		}
	}
}

enum { TOK_NORMAL = 1, TOK_UNKNOWN = 2, TOK_CONTROL = 3, TOK_USER = 4, TOK_UNUSED = 5, TOK_BYTE = 6 };

static json_t *load_json(const char *dir, const char *name)
{
	char p[8400];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	return json_load_file(p, 0, NULL);
}

static int token_id(json_t *vocab, json_t *added, json_t *v)
{
	const char *s = json_is_string(v) ? json_string_value(v)
			: json_is_string(json_object_get(v, "content"))
				? json_string_value(json_object_get(v, "content"))
				: NULL;
	if (!s)
		return -1;
	size_t i;
	json_t *a;
	json_array_foreach(added, i, a)
	{
		if (json_is_string(json_object_get(a, "content")) &&
		    !strcmp(json_string_value(json_object_get(a, "content")), s))
			return (int)json_integer_value(json_object_get(a, "id"));
	}
	json_t *id = json_object_get(vocab, s);
	return json_is_integer(id) ? (int)json_integer_value(id) : -1;
}

/* The regex of the first Split pre-tokenizer, if any. */
static const char *split_regex(json_t *pre)
{
	if (!pre)
		return NULL;
	json_t *r = json_object_get(json_object_get(pre, "pattern"), "Regex");
	if (json_is_string(r) && !strcmp(json_string_value(json_object_get(pre, "type")), "Split"))
		return json_string_value(r);
	json_t *list = json_object_get(pre, "pretokenizers");
	size_t i;
	json_t *x;
	json_array_foreach(list, i, x)
	{
		const char *s = split_regex(x);
		if (s)
			return s;
	}
	return NULL;
}

/* A ByteLevel pre-tokenizer (alone or in a Sequence) with use_regex: GPT-2's split. */
static bool byte_level_regex(json_t *pre)
{
	if (!pre)
		return false;
	if (!strcmp(json_string_value(json_object_get(pre, "type")) ?: "", "ByteLevel"))
		return !json_is_false(json_object_get(pre, "use_regex"));
	size_t i;
	json_t *x;
	json_array_foreach(json_object_get(pre, "pretokenizers"), i, x) if (byte_level_regex(x)) return true;
	return false;
}

/* tokenizer.ggml.* and tokenizer.chat_template from tokenizer.json, tokenizer_config.json and
 * config.json. A directory without tokenizer.json gets no tokenizer (logged). */
static enum tern_status put_tokenizer(struct tern_gguf_writer *w, const char *dir,
				      const struct tern_model_config *c)
{
	enum tern_status st = TERN_OK;
	json_t *tj = load_json(dir, "tokenizer.json"), *tc = load_json(dir, "tokenizer_config.json"),
	       *cj = load_json(dir, "config.json");
	char **tok = NULL;
	size_t *len = NULL;
	int32_t *type = NULL;
	float *score = NULL;
	char **merges = NULL;
	size_t n_merges = 0;
	int64_t V = c->V;
	if (!tj) {
		tern_log(TERN_LOG_WARN, "%s: no tokenizer.json: the GGUF file has no tokenizer", dir);
		goto out;
	}
	json_t *model = json_object_get(tj, "model"), *vocab = json_object_get(model, "vocab"),
	       *added = json_object_get(tj, "added_tokens"), *jm = json_object_get(model, "merges");
	if (!json_is_object(vocab) ||
	    strcmp(json_string_value(json_object_get(model, "type")) ?: "", "BPE")) {
		st = tern_fail(TERN_E_UNSUPPORTED,
			       "%s/tokenizer.json: model type %s: tern exports BPE tokenizers", dir,
			       json_string_value(json_object_get(model, "type")) ?: "?");
		goto out;
	}
	bool spm = json_is_true(json_object_get(model, "byte_fallback"));
	tok = tern_calloc((size_t)V, sizeof *tok);
	len = tern_calloc((size_t)V, sizeof *len);
	type = tern_calloc((size_t)V, sizeof *type);
	score = tern_calloc((size_t)V, sizeof *score);
	if (!tok || !len || !type || !score) {
		st = TERN_E_NOMEM;
		goto out;
	}
	const char *k;
	json_t *v;
	json_object_foreach(vocab, k, v)
	{
		json_int_t id = json_integer_value(v);
		if (id >= 0 && id < V && !tok[id]) {
			tok[id] = (char *)k;
			len[id] = strlen(k);
			type[id] = spm && strlen(k) == 6 && !strncmp(k, "<0x", 3) && k[5] == '>' ? TOK_BYTE
												 : TOK_NORMAL;
		}
	}
	const char *unk = json_string_value(json_object_get(model, "unk_token"));
	size_t i;
	json_t *a;
	json_array_foreach(added, i, a)
	{
		json_int_t id = json_integer_value(json_object_get(a, "id"));
		const char *s = json_string_value(json_object_get(a, "content"));
		if (!s || id < 0 || id >= V)
			continue;
		tok[id] = (char *)s;
		len[id] = strlen(s);
		type[id] = json_is_true(json_object_get(a, "special")) ? TOK_CONTROL : TOK_USER;
	}
	if (spm && unk) {
		json_t *u = json_object_get(vocab, unk);
		if (json_is_integer(u) && json_integer_value(u) < V)
			type[json_integer_value(u)] = TOK_UNKNOWN;
	}
	char(*pad)[32] = tern_calloc((size_t)V, sizeof *pad);
	if (!pad) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (int64_t id = 0; id < V; id++)
		if (!tok[id]) {
			snprintf(pad[id], sizeof pad[id], "[PAD%lld]", (long long)id);
			tok[id] = pad[id];
			len[id] = strlen(pad[id]);
			type[id] = TOK_UNUSED;
		}
	/* merges: "a b" strings (the array form ["a", "b"] joined) */
	n_merges = json_array_size(jm);
	merges = tern_calloc(n_merges + 1, sizeof *merges);
	if (!merges) {
		free(pad);
		st = TERN_E_NOMEM;
		goto out;
	}
	json_array_foreach(jm, i, a)
	{
		if (json_is_string(a))
			merges[i] = strdup(json_string_value(a));
		else if (json_array_size(a) == 2) {
			const char *l = json_string_value(json_array_get(a, 0)) ?: "",
				   *r = json_string_value(json_array_get(a, 1)) ?: "";
			if (asprintf(&merges[i], "%s %s", l, r) < 0)
				merges[i] = NULL;
		}
		if (!merges[i])
			merges[i] = strdup("");
		if (spm && merges[i]) { /* SentencePiece-style: a token's score is minus its merge rank */
			char *sp = strchr(merges[i], ' ');
			if (sp) {
				*sp = 0;
				char *joined = NULL;
				if (asprintf(&joined, "%s%s", merges[i], sp + 1) >= 0) {
					json_t *id = json_object_get(vocab, joined);
					if (json_is_integer(id) && json_integer_value(id) < V)
						score[json_integer_value(id)] = -(float)(i + 1);
				}
				free(joined);
				*sp = ' ';
			}
		}
	}
	if (spm) {
		tern_gguf_kv_str(w, "tokenizer.ggml.model", "llama");
		tern_gguf_kv_str(w, "tokenizer.ggml.pre", "default");
	} else {
		const char *re = split_regex(json_object_get(tj, "pre_tokenizer"));
		const char *pre = "default";
		if (re && strstr(re, "\\p{N}{1,3}"))
			pre = "llama-bpe";
		else if (re && strstr(re, "[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"))
			pre = "qwen2";
		else if (!re && byte_level_regex(json_object_get(tj, "pre_tokenizer")))
			pre = "gpt-2"; /* ByteLevel with GPT-2's own split */
		tern_gguf_kv_str(w, "tokenizer.ggml.model", "gpt2");
		tern_gguf_kv_str(w, "tokenizer.ggml.pre", pre);
	}
	tern_gguf_kv_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, len, (size_t)V);
	if (spm)
		tern_gguf_kv_arr_f32(w, "tokenizer.ggml.scores", score, (size_t)V);
	tern_gguf_kv_arr_i32(w, "tokenizer.ggml.token_type", type, (size_t)V);
	if (!spm) /* llama.cpp requires the key for gpt2, even empty */
		tern_gguf_kv_arr_str(w, "tokenizer.ggml.merges", (const char *const *)merges, NULL, n_merges);
	free(pad);
	/* special ids: tokenizer_config.json's tokens, else config.json's ids */
	const char *names[] = {"bos_token", "eos_token", "pad_token", "unk_token"};
	const char *keys[] = {"tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
			      "tokenizer.ggml.padding_token_id", "tokenizer.ggml.unknown_token_id"};
	const char *cfg_keys[] = {"bos_token_id", "eos_token_id", "pad_token_id", NULL};
	int bos = -1;
	for (int s = 0; s < 4; s++) {
		int id = token_id(vocab, added, json_object_get(tc, names[s]));
		if (id < 0 && cfg_keys[s]) {
			json_t *x = json_object_get(cj, cfg_keys[s]);
			if (json_is_array(x))
				x = json_array_get(x, 0);
			id = json_is_integer(x) ? (int)json_integer_value(x) : -1;
		}
		if (id >= 0 && id < V) {
			tern_gguf_kv_u32(w, keys[s], (uint32_t)id);
			if (s == 0)
				bos = id;
		}
	}
	json_t *ab = json_object_get(tc, "add_bos_token");
	bool add_bos = json_is_boolean(ab) ? json_is_true(ab) : false;
	if (!json_is_boolean(ab)) { /* a TemplateProcessing post-processor that starts with bos */
		json_t *pp = json_object_get(tj, "post_processor"), *single = json_object_get(pp, "single");
		if (!single) {
			json_t *list = json_object_get(pp, "processors");
			json_array_foreach(list, i, a) if (json_object_get(a, "single")) single =
				json_object_get(a, "single");
		}
		json_t *first = json_object_get(json_array_get(single, 0), "SpecialToken");
		add_bos = first && bos >= 0 && token_id(vocab, added, json_object_get(first, "id")) == bos;
	}
	tern_gguf_kv_bool(w, "tokenizer.ggml.add_bos_token", add_bos);
	tern_gguf_kv_bool(w, "tokenizer.ggml.add_eos_token",
			  json_is_true(json_object_get(tc, "add_eos_token")));
	/* chat template: tokenizer_config.json (a string, or the "default" of a list), else
	 * chat_template.jinja */
	json_t *ct = json_object_get(tc, "chat_template");
	const char *tmpl = json_string_value(ct);
	json_array_foreach(ct, i,
			   a) if (!strcmp(json_string_value(json_object_get(a, "name")) ?: "", "default"))
		tmpl = json_string_value(json_object_get(a, "template"));
	char *jinja = NULL;
	if (!tmpl) {
		char p[8400];
		size_t n;
		snprintf(p, sizeof p, "%s/chat_template.jinja", dir);
		if (access(p, F_OK) == 0 && tern_read_file(p, (size_t)1 << 24, &jinja, &n) == TERN_OK)
			tmpl = jinja;
	}
	if (tmpl)
		tern_gguf_kv_str(w, "tokenizer.chat_template", tmpl);
	free(jinja);
out:
	for (size_t m = 0; merges && m < n_merges; m++)
		free(merges[m]);
	free(merges);
	free(tok);
	free(len);
	free(type);
	free(score);
	json_decref(tj);
	json_decref(tc);
	json_decref(cj);
	return st;
}

static void put_general(struct tern_gguf_writer *w, const char *arch, const char *type, const char *name)
{
	tern_gguf_kv_str(w, "general.architecture", arch);
	tern_gguf_kv_str(w, "general.type", type);
	if (name)
		tern_gguf_kv_str(w, "general.name", name);
}

static const char *base_name(const char *dir)
{
	size_t n = strlen(dir);
	while (n > 1 && dir[n - 1] == '/')
		n--;
	const char *s = dir + n;
	while (s > dir && s[-1] != '/')
		s--;
	return s;
}

/* ---- the merged model ---- */

/* llama-quantize's use_more_bits: the first and last eighth of the layers, every third between. */
static bool more_bits(int64_t i, int64_t n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

/* The ggml type of a matrix for file type t (llama.cpp's choices, fallbacks for short rows). */
static enum tern_ggml_type matrix_type(enum tern_gguf_type t, const struct tern_msrc_tensor *x,
				       const struct tern_model_config *c)
{
	enum tern_ggml_type g = ggml_of(t);
	if (t == TERN_GGUF_Q4_K_M) {
		bool out = x->role == TERN_ROLE_HEAD || (x->role == TERN_ROLE_EMBED && c->tie_embeddings);
		bool more =
			(x->role == TERN_ROLE_V || x->role == TERN_ROLE_DOWN) && more_bits(x->layer, c->L);
		if (out || more)
			g = TERN_GGML_Q6_K;
		if (x->shape[1] % TERN_QK_K)
			g = TERN_GGML_Q8_0;
	}
	if (g == TERN_GGML_Q8_0 && x->shape[1] % TERN_Q8_0_BLOCK)
		g = TERN_GGML_F16;
	return g;
}

enum tern_status tern_export_gguf_model(const struct tern_merge_opts *o, const char *out,
					enum tern_gguf_type type, struct tern_merge_result *res)
{
	double t0 = tern_now();
	struct tern_merge_result r = {0};
	struct tern_msrc *s = NULL;
	struct tern_gguf_writer *w = NULL;
	float *buf = NULL, *perm = NULL;
	void *cvt = NULL;
	enum tern_ggml_type *tt = NULL;
	char pack[4400];
	enum tern_status st;
	if (!out || !*out)
		return tern_fail(TERN_E_INVALID, "export gguf: no output given (--out FILE)");
	snprintf(pack, sizeof pack, "%s.pack.tmp.%ld", out, (long)getpid());
	if ((st = tern_msrc_from_opts(o, pack, 0, &s, &r)))
		goto out;
	const struct tern_model_config *c = &s->cfg;
	const char *arch = gguf_arch(c);
	if (!arch) {
		st = tern_fail(TERN_E_UNSUPPORTED,
			       "%s: model_type %s has no GGUF mapping in tern (allowed: llama, "
			       "mistral, qwen2, qwen3)",
			       s->base, c->model_type);
		goto out;
	}
	if ((st = tern_gguf_begin(out, &w)))
		goto out;
	put_general(w, arch, "model", base_name(s->base));
	put_arch(w, c, arch);
	tern_gguf_kv_u32(w, "general.file_type", file_type(type));
	tern_gguf_kv_u32(w, "general.quantization_version", 2);
	if ((st = put_tokenizer(w, s->base, c)))
		goto out;
	bool rope_freqs = !strcmp(arch, "llama") && c->rope_type == TERN_ROPE_LLAMA3;
	int64_t maxn = c->Dh;
	tt = tern_calloc(s->n + 1, sizeof *tt);
	if (!tt) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if (rope_freqs) {
		int64_t ne[1] = {c->Dh / 2};
		tern_gguf_tensor(w, "rope_freqs.weight", 1, ne, TERN_GGML_F32);
		r.bytes += (uint64_t)ne[0] * 4;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct tern_msrc_tensor *t = &s->t[i];
		char name[160];
		if (!gguf_name(t, name, sizeof name)) {
			st = tern_fail(TERN_E_UNSUPPORTED, "%s: tensor %s has no GGUF name", s->base,
				       t->name);
			goto out;
		}
		int64_t ne[2] = {t->shape[1], t->shape[0]};
		enum tern_ggml_type g = t->ndim == 1 ? TERN_GGML_F32 : matrix_type(type, t, c);
		tt[i] = g;
		if (t->ndim == 1)
			tern_gguf_tensor(w, name, 1, &t->shape[0], g);
		else
			tern_gguf_tensor(w, name, 2, ne, g);
		r.bytes += tern_ggml_row_bytes(g, ne[0]) * (uint64_t)(t->ndim == 1 ? 1 : ne[1]);
		maxn = t->numel > maxn ? t->numel : maxn;
	}
	if (!(buf = tern_malloc((size_t)maxn * 4)) || !(perm = tern_malloc((size_t)maxn * 4)) ||
	    !(cvt = tern_malloc((size_t)maxn * 4))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = tern_gguf_write_header(w)))
		goto out;
	if (rope_freqs) {
		llama3_factors(c, buf);
		if ((st = tern_gguf_append(w, buf, (size_t)(c->Dh / 2) * 4)))
			goto out;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct tern_msrc_tensor *t = &s->t[i];
		if ((st = tern_msrc_read(s, i, buf)))
			goto out;
		const float *x = buf;
		bool q = t->role == TERN_ROLE_Q || t->role == TERN_ROLE_Q_BIAS;
		bool k = t->role == TERN_ROLE_K || t->role == TERN_ROLE_K_BIAS;
		if (permutes(c) && (q || k)) {
			permute_rows(buf, perm, t->shape[0], t->shape[1], q ? c->H : c->Hkv);
			x = perm;
		}
		tern_ggml_from_f32(tt[i], x, t->numel, cvt);
		uint64_t bytes = tern_ggml_row_bytes(tt[i], t->shape[1]) * (uint64_t)t->shape[0];
		if (t->ndim == 1)
			bytes = tern_ggml_row_bytes(tt[i], t->shape[0]);
		if ((st = tern_gguf_append(w, cvt, (size_t)bytes)))
			goto out;
		r.n_merged += t->merged;
		r.n_replaced += t->replaced;
	}
	r.n_tensors = (int64_t)s->n + rope_freqs;
	r.n_files = 1;
	st = tern_gguf_finish(w, &r.bytes);
	w = NULL;
	r.seconds = tern_now() - t0;
	if (st == TERN_OK && res)
		*res = r;
out:
	tern_gguf_abort(w);
	tern_msrc_close(s);
	free(tt);
	free(buf);
	free(perm);
	free(cvt);
	return st;
}

/* ---- the adapter ---- */

enum tern_status tern_export_gguf_lora(const struct tern_merge_opts *o, const char *out,
				       enum tern_gguf_type type, struct tern_merge_result *res)
{
	double t0 = tern_now();
	struct tern_merge_result r = {0};
	struct tern_msrc *s = NULL;
	struct tern_gguf_writer *w = NULL;
	float *perm = NULL;
	void *cvt = NULL;
	char pack[4400];
	enum tern_status st;
	if (!out || !*out)
		return tern_fail(TERN_E_INVALID, "export gguf: no output given (--out FILE)");
	snprintf(pack, sizeof pack, "%s.pack.tmp.%ld", out, (long)getpid());
	if ((st = tern_msrc_from_opts(o, pack, TERN_MSRC_NEED_ADAPTER | TERN_MSRC_NO_WEIGHTS, &s, &r)))
		goto out;
	const struct tern_model_config *c = &s->cfg;
	const char *arch = gguf_arch(c);
	if (!arch) {
		st = tern_fail(TERN_E_UNSUPPORTED, "%s: model_type %s has no GGUF mapping in tern", s->base,
			       c->model_type);
		goto out;
	}
	const struct tern_lora_set *L = s->lora;
	if (L->full_have) {
		st = tern_fail(
			TERN_E_UNSUPPORTED,
			"%s/adapter_config.json: modules_to_save (%s%s%s) are trained in full, and a llama.cpp "
			"LoRA cannot carry them: use `tern export gguf` without --lora (the merged model)",
			s->adapter, (L->full_have & 1u) ? "embed_tokens" : "", L->full_have == 3u ? ", " : "",
			(L->full_have & 2u) ? "lm_head" : "");
		goto out;
	}
	if (type == TERN_GGUF_Q4_K_M) {
		st = tern_fail(TERN_E_UNSUPPORTED,
			       "export gguf --lora: type q4_k_m is for models (allowed for an adapter: "
			       "f32, f16, bf16, q8_0)");
		goto out;
	}
	enum tern_ggml_type g0 = ggml_of(type);
	/* llama.cpp scales by alpha / r; rsLoRA's alpha / sqrt(r) is alpha * sqrt(r) / r */
	double alpha = s->rslora ? s->alpha * sqrt((double)L->R) : s->alpha;
	if ((st = tern_gguf_begin(out, &w)))
		goto out;
	put_general(w, arch, "adapter", base_name(s->adapter));
	tern_gguf_kv_str(w, "adapter.type", "lora");
	tern_gguf_kv_f32(w, "adapter.lora.alpha", (float)alpha);
	tern_gguf_kv_u32(w, "general.file_type", file_type(type));
	tern_gguf_kv_u32(w, "general.quantization_version", 2);
	int64_t maxn = 0;
	/* tensors in the base model's order: for each targeted module, lora_a then lora_b */
	enum tern_ggml_type ta[2 * TERN_MOD_COUNT * 512 + 1];
	size_t nt = 0;
	if ((size_t)L->L * TERN_MOD_COUNT * 2 > sizeof ta / sizeof *ta) {
		st = tern_fail(TERN_E_UNSUPPORTED, "export gguf: more than 512 layers");
		goto out;
	}
	for (size_t i = 0; i < s->n; i++) {
		const struct tern_msrc_tensor *t = &s->t[i];
		if (!t->merged)
			continue;
		const struct tern_lora_tensor *lt = tern_lora_at(
			L, t->layer,
			(enum tern_module)(t->role <= TERN_ROLE_O ? t->role - TERN_ROLE_Q
								  : t->role - TERN_ROLE_GATE + 4));
		char name[200], base[160];
		gguf_name(t, base, sizeof base);
		int64_t nea[2] = {lt->I, L->R}, neb[2] = {L->R, lt->O};
		enum tern_ggml_type ga = g0 == TERN_GGML_Q8_0 && nea[0] % 32 ? TERN_GGML_F16 : g0;
		enum tern_ggml_type gb = g0 == TERN_GGML_Q8_0 && neb[0] % 32 ? TERN_GGML_F16 : g0;
		snprintf(name, sizeof name, "%s.lora_a", base);
		tern_gguf_tensor(w, name, 2, nea, ga);
		snprintf(name, sizeof name, "%s.lora_b", base);
		tern_gguf_tensor(w, name, 2, neb, gb);
		ta[nt++] = ga;
		ta[nt++] = gb;
		maxn = lt->I * L->R > maxn ? lt->I * L->R : maxn;
		maxn = lt->O * L->R > maxn ? lt->O * L->R : maxn;
	}
	if (!(perm = tern_malloc((size_t)maxn * 4)) || !(cvt = tern_malloc((size_t)maxn * 4))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = tern_gguf_write_header(w)))
		goto out;
	nt = 0;
	for (size_t i = 0; i < s->n; i++) {
		const struct tern_msrc_tensor *t = &s->t[i];
		if (!t->merged)
			continue;
		const struct tern_lora_tensor *lt = tern_lora_at(
			L, t->layer,
			(enum tern_module)(t->role <= TERN_ROLE_O ? t->role - TERN_ROLE_Q
								  : t->role - TERN_ROLE_GATE + 4));
		enum tern_ggml_type ga = ta[nt++], gb = ta[nt++];
		tern_ggml_from_f32(ga, lt->A, L->R * lt->I, cvt);
		if ((st = tern_gguf_append(w, cvt,
					   (size_t)(tern_ggml_row_bytes(ga, lt->I) * (uint64_t)L->R))))
			goto out;
		const float *b = lt->B;
		if (permutes(c) && (t->role == TERN_ROLE_Q || t->role == TERN_ROLE_K)) {
			permute_rows(lt->B, perm, lt->O, L->R, t->role == TERN_ROLE_Q ? c->H : c->Hkv);
			b = perm;
		}
		tern_ggml_from_f32(gb, b, lt->O * L->R, cvt);
		if ((st = tern_gguf_append(w, cvt,
					   (size_t)(tern_ggml_row_bytes(gb, L->R) * (uint64_t)lt->O))))
			goto out;
		r.n_tensors += 2;
	}
	st = tern_gguf_finish(w, &r.bytes);
	w = NULL;
	r.scale = alpha / (double)L->R;
	r.seconds = tern_now() - t0;
	if (st == TERN_OK && res)
		*res = r;
out:
	tern_gguf_abort(w);
	tern_msrc_close(s);
	free(perm);
	free(cvt);
	return st;
}
