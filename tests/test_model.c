/* Model loading: config.json parsing, the tensor map, quantize-on-load against the quantizers,
 * bitsandbytes checkpoints (real and written by tern), the pack file (round trip, reuse, stale,
 * corruption) and bad model directories. Fixtures: tests/data/models (tools/make_model_fixtures.py).
 * Prints one line per failure and ends with "N passed, M failed". */
#define _GNU_SOURCE
#include "backend/backend.h"
#include "formats/safetensors.h"
#include "model/model.h"
#include "quant/quant.h"

#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

static int passed, failed;
static char data_dir[2048], tmp_root[2048];

static bool check(bool ok, const char *fmt, ...)
{
	if (ok) {
		passed++;
		return true;
	}
	va_list ap;
	va_start(ap, fmt);
	printf("FAIL: ");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	failed++;
	return false;
}

/* A failure: non-OK status and one line of error that contains want. */
static void check_error(enum tern_status st, const char *want, const char *what)
{
	const char *e = tern_error();
	check(st != TERN_OK && e[0] && !strchr(e, '\n') && strstr(e, want),
	      "%s: status %d, error '%s' (want '%s')", what, (int)st, e, want);
}

static void fixture(char *buf, size_t size, const char *name)
{
	snprintf(buf, size, "%s/models/%s", data_dir, name);
}

/* ---- config.json ---- */

static enum tern_status cfg_parse(const char *json, struct tern_model_config *c)
{
	return tern_model_config_parse(json, strlen(json), "m/config.json", c);
}

#define BASE "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2, \"vocab_size\": 256"
#define BASE4 "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 4, \"vocab_size\": 256"

static void test_config(void)
{
	struct tern_model_config c;
	enum tern_status st =
		cfg_parse("{\"model_type\": \"mistral\", " BASE ", \"num_attention_heads\": 16}", &c);
	check(st == TERN_OK && c.Hkv == 8 && c.Dh == 4 && c.sliding_window == 4096 && c.rms_eps == 1e-6 &&
		      c.rope_theta == 10000 && !c.qkv_bias && c.dtype == TERN_BF16,
	      "mistral defaults (st %d: %s)", (int)st, tern_error());
	st = cfg_parse("{\"model_type\": \"mistral\", " BASE
		       ", \"num_attention_heads\": 16, \"sliding_window\": null}",
		       &c);
	check(st == TERN_OK && c.sliding_window == 0, "mistral sliding_window null = full attention");
	st = cfg_parse("{\"model_type\": \"qwen3\", " BASE ", \"num_attention_heads\": 4}", &c);
	check(st == TERN_OK && c.Dh == 128 && c.Hkv == 4 && c.qk_norm && !c.qkv_bias && c.sliding_window == 0,
	      "qwen3 defaults");
	st = cfg_parse("{\"model_type\": \"qwen2\", " BASE
		       ", \"num_attention_heads\": 4, \"use_sliding_window\": true, "
		       "\"sliding_window\": 128, \"torch_dtype\": \"float16\"}",
		       &c);
	check(st == TERN_OK && c.qkv_bias && !c.o_bias && c.sliding_window == 128 && c.dtype == TERN_F16,
	      "qwen2 biases, window, torch_dtype");
	st = cfg_parse(
		"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"rope_theta\": 500000, "
		"\"rope_scaling\": {\"type\": \"llama3\", \"factor\": 8, \"low_freq_factor\": 1, "
		"\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}, \"attention_bias\": true}",
		&c);
	check(st == TERN_OK && c.rope_type == TERN_ROPE_LLAMA3 && c.rope_factor == 8 &&
		      c.rope_theta == 500000 && c.rope_original_max_pos == 8192 && c.qkv_bias && c.o_bias,
	      "llama3 rope_scaling (old spelling) (%s)", tern_error());
	st = cfg_parse(
		"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"rope_parameters\": "
		"{\"rope_type\": \"llama3\", \"rope_theta\": 250000.0, \"factor\": 32, \"low_freq_factor\": 1, "
		"\"high_freq_factor\": 4, \"original_max_position_embeddings\": 8192}}",
		&c);
	check(st == TERN_OK && c.rope_type == TERN_ROPE_LLAMA3 && c.rope_factor == 32 &&
		      c.rope_theta == 250000,
	      "llama3 rope_parameters (new spelling)");
	st = cfg_parse("{\"model_type\": \"mixtral\", " BASE
		       ", \"num_attention_heads\": 4, \"num_key_value_heads\": 2}",
		       &c);
	check(st == TERN_OK && c.E == 8 && c.top_k == 2 && c.rms_eps == 1e-5 && c.rope_theta == 1e6,
	      "mixtral parses");
	check(tern_model_config_check(&c, "m/config.json") == TERN_OK && c.Fe == 160 && c.norm_topk &&
		      tern_model_layer_moe(&c, 0) && tern_model_layer_moe(&c, 1),
	      "mixtral: every layer sparse, experts of intermediate_size, renormalised top-k");
	st = cfg_parse(
		"{\"model_type\": \"mixtral\", " BASE
		", \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"router_jitter_noise\": 0.1}",
		&c);
	check_error(st, "expected 0 (tern does not train with router jitter)", "mixtral jitter refused");
	st = cfg_parse(
		"{\"model_type\": \"mixtral\", " BASE
		", \"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"output_router_logits\": true}",
		&c);
	check(st == TERN_OK && c.router_logits && c.router_aux_coef == 0.02, "mixtral router keys");
	check(tern_model_config_check(&c, "m/config.json") == TERN_OK, "load-balancing loss accepted");
	st = cfg_parse("{\"model_type\": \"qwen3_moe\", " BASE4
		       ", \"num_attention_heads\": 4, \"num_experts\": 16, "
		       "\"num_experts_per_tok\": 4, \"moe_intermediate_size\": 32, \"norm_topk_prob\": true, "
		       "\"decoder_sparse_step\": 2, \"mlp_only_layers\": [3]}",
		       &c);
	check(st == TERN_OK && tern_model_config_check(&c, "m") == TERN_OK && c.E == 16 && c.top_k == 4 &&
		      c.Fe == 32 && c.norm_topk && c.qk_norm && c.Dh == 128 && !tern_model_layer_moe(&c, 0) &&
		      tern_model_layer_moe(&c, 1) && !tern_model_layer_moe(&c, 2) &&
		      !tern_model_layer_moe(&c, 3),
	      "qwen3_moe: experts, sparse step, mlp_only_layers (%s)", tern_error());
	st = cfg_parse("{\"model_type\": \"qwen3_moe\", " BASE
		       ", \"num_attention_heads\": 4, \"num_local_experts\": 8}",
		       &c);
	check(st == TERN_OK && c.E == 8 && c.top_k == 8 && c.Fe == 768 && !c.norm_topk &&
		      tern_model_layer_moe(&c, 0),
	      "qwen3_moe: transformers 5's num_local_experts, defaults");
	st = cfg_parse("{\"model_type\": \"qwen3_moe\", " BASE
		       ", \"num_attention_heads\": 4, \"mlp_only_layers\": [2]}",
		       &c);
	check_error(
		st,
		"m/config.json: mlp_only_layers = [2]: expected layer indices from 0 to num_hidden_layers - 1",
		"qwen3_moe: mlp_only_layers out of range");

	static const struct {
		const char *json, *want;
	} bad[] = {
		{"{\"model_type\": \"gpt2\"}",
		 "model_type gpt2 is not supported (supported: llama, mistral, qwen2, qwen3"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": \"four\"}",
		 "m/config.json: num_attention_heads = \"four\": expected an integer from 1 to 65536"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 0}",
		 "num_attention_heads = 0"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"num_key_value_heads\": 3}",
		 "num_key_value_heads = 3: expected a divisor of num_attention_heads"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 5}",
		 "hidden_size = 64: expected a multiple"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"rms_norm_eps\": -1}",
		 "rms_norm_eps = -1"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"tie_word_embeddings\": 1}",
		 "tie_word_embeddings = 1: expected true or false"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}",
		 "rope_scaling.rope_type yarn is not supported"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"llama3\", \"factor\": 4}}",
		 "missing key rope_scaling.low_freq_factor"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"hidden_act\": \"gelu\"}",
		 "hidden_act gelu is not supported"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"torch_dtype\": \"int8\"}",
		 "torch_dtype = \"int8\": expected one of float32, float16, bfloat16"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"quantization_config\": {\"quant_method\": \"gptq\"}}",
		 "quant_method gptq is not supported"},
		{"{\"model_type\": \"llama\", " BASE
		 ", \"num_attention_heads\": 4, \"quantization_config\": {\"quant_method\": \"bitsandbytes\", \"load_in_4bit\": true, \"bnb_4bit_quant_type\": \"fp4\"}}",
		 "bnb_4bit_quant_type fp4 is not supported"},
		{"{\"model_type\": \"llama\", \"hidden_size\": 64}", "missing key intermediate_size"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4,}",
		 "m/config.json: line 1"},
		{"[1, 2]", "expected a JSON object"},
		{"{\"model_type\": \"llama\", " BASE ", \"num_attention_heads\": 4, \"head_dim\": 7}",
		 "head_dim = 7"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
		check_error(cfg_parse(bad[i].json, &c), bad[i].want, bad[i].json);
}

/* ---- loading and conversion ---- */

static bool same_bytes(const void *a, const void *b, size_t n) { return memcmp(a, b, n) == 0; }

/* Checks every tensor of m against the safetensors source in dir, for base format fmt. */
static void check_loaded(const char *dir, const struct tern_model *m, enum tern_base_format fmt,
			 const char *what)
{
	struct tern_st_model *st = NULL;
	if (!check(tern_st_model_open(dir, &st) == TERN_OK, "%s: open safetensors: %s", what, tern_error()))
		return;
	const struct tern_pack *p = m->pack;
	int bad = 0;
	for (uint32_t i = 0; i < p->n_tensors && bad < 3; i++) {
		const struct tern_pack_tensor *t = &p->t[i];
		const struct tern_st_tensor *s = tern_st_model_find(st, t->name);
		if (!s) {
			bad += !check(false, "%s: %s not in source", what, t->name);
			continue;
		}
		int64_t n = t->shape[0] * t->shape[1];
		const uint8_t *d = tern_pack_part(p, t, TERN_PART_DATA);
		if (tern_model_tensor(m, t->layer, (enum tern_role)t->role) != t)
			bad += !check(false, "%s: %s not indexed at its layer/role", what, t->name);
		if (!tern_role_is_proj((int)t->role) ||
		    (fmt != TERN_FORMAT_F32 && fmt != TERN_FORMAT_NF4 && fmt != TERN_FORMAT_NF4_DQ &&
		     fmt != TERN_FORMAT_TERNARY && fmt != TERN_FORMAT_F16 && fmt != TERN_FORMAT_BF16)) {
			if (!same_bytes(d, s->data, s->nbytes) || t->size[0] != s->nbytes)
				bad += !check(false, "%s: %s bytes differ from the source", what, t->name);
			continue;
		}
		float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
		tern_st_tensor_f32(s, x);
		if (fmt == TERN_FORMAT_NF4 || fmt == TERN_FORMAT_NF4_DQ) {
			int64_t nb = tern_nf4_blocks(n, t->blocksize);
			uint8_t *codes = malloc((size_t)(n + 1) / 2);
			float *am = malloc((size_t)nb * 4);
			tern_nf4_quantize(x, n, t->blocksize, codes, am);
			bool ok = same_bytes(codes, d, (size_t)(n + 1) / 2);
			if (fmt == TERN_FORMAT_NF4) {
				ok = ok && t->dtype == TERN_NF4 &&
				     same_bytes(am, tern_pack_part(p, t, TERN_PART_ABSMAX), (size_t)nb * 4);
			} else {
				uint8_t *qa = malloc((size_t)nb);
				float *ne = malloc((size_t)tern_cdiv(nb, 256) * 4), off;
				tern_nf4_double_quant(am, nb, qa, ne, &off);
				ok = ok && t->dtype == TERN_NF4_DQ &&
				     same_bytes(qa, tern_pack_part(p, t, TERN_PART_ABSMAX), (size_t)nb) &&
				     same_bytes(ne, tern_pack_part(p, t, TERN_PART_NESTED),
						(size_t)tern_cdiv(nb, 256) * 4) &&
				     off == t->offset;
				free(qa);
				free(ne);
			}
			if (!ok)
				bad += !check(false, "%s: %s differs from tern_nf4_quantize of the source",
					      what, t->name);
			free(codes);
			free(am);
		} else if (fmt == TERN_FORMAT_TERNARY) {
			uint32_t *pk =
				malloc((size_t)t->shape[0] * (size_t)tern_ternary_row_words(t->shape[1]) * 4);
			float sc = tern_ternary_quantize(x, t->shape[0], t->shape[1], pk);
			if (t->dtype != TERN_TERNARY || sc != t->scale || !same_bytes(pk, d, t->size[0]))
				bad += !check(false, "%s: %s differs from tern_ternary_quantize", what,
					      t->name);
			free(pk);
		} else {
			tern_pack_tensor_f32(p, t, y);
			for (int64_t k = 0; k < n; k++) {
				float want = x[k];
				if (fmt == TERN_FORMAT_BF16)
					want = tern_bf16_to_f32(tern_f32_to_bf16(x[k]));
				if (fmt == TERN_FORMAT_F16)
					want = tern_f16_to_f32(tern_f32_to_f16(x[k]));
				if (want != y[k]) {
					bad += !check(false, "%s: %s[%lld] = %g, want %g", what, t->name,
						      (long long)k, y[k], want);
					break;
				}
			}
		}
		free(x);
		free(y);
	}
	check(bad == 0, "%s: every tensor where it belongs", what);
	tern_st_model_close(st);
}

/* The layer-1 projections as struct tern_weight over the uploaded group, through the CPU backend's
 * matmul, against the dequantized weights: the host structures are ready for the backends. */
static void check_matmul(const struct tern_model *m, const char *what)
{
	struct tern_backend *be = NULL;
	struct tern_buffer *gb = NULL, *xb = NULL, *yb = NULL;
	if (!check(tern_backend_create("cpu", 0, &be) == TERN_OK, "%s: cpu backend: %s", what, tern_error()))
		return;
	const struct tern_pack_group *g = &m->pack->groups[1];
	enum tern_role r[7] = {TERN_ROLE_Q,    TERN_ROLE_K,  TERN_ROLE_V,   TERN_ROLE_O,
			       TERN_ROLE_GATE, TERN_ROLE_UP, TERN_ROLE_DOWN};
	const int64_t T = 3;
	be->vt->buffer_alloc(be, g->size, &gb);
	be->vt->upload(be, (struct tern_view){gb, 0, g->size}, m->pack->base + g->off);
	int bad = 0;
	for (int i = 0; i < 7; i++) {
		const struct tern_pack_tensor *t = tern_model_tensor(m, 1, r[i]);
		struct tern_weight w;
		tern_pack_weight(m->pack, t, (struct tern_view){gb, 0, g->size}, &w);
		if (tern_check_weight("test", &w) != TERN_OK) {
			bad += !check(false, "%s: %s: %s", what, t->name, tern_error());
			continue;
		}
		int64_t O = w.O, I = w.I;
		float *W = malloc((size_t)(O * I) * 4), *x = malloc((size_t)(T * I) * 4),
		      *y = malloc((size_t)(T * O) * 4);
		tern_pack_tensor_f32(m->pack, t, W);
		for (int64_t k = 0; k < T * I; k++)
			x[k] = (float)((k * 37 % 101) - 50) / 50.0f;
		be->vt->buffer_alloc(be, (size_t)(T * I) * 4, &xb);
		be->vt->buffer_alloc(be, (size_t)(T * O) * 4, &yb);
		be->vt->upload(be, (struct tern_view){xb, 0, (size_t)(T * I) * 4}, x);
		tern_matmul(be, (struct tern_view){yb, 0, (size_t)(T * O) * 4},
			    (struct tern_view){xb, 0, (size_t)(T * I) * 4}, &w, T, TERN_F32);
		be->vt->download(be, y, (struct tern_view){yb, 0, (size_t)(T * O) * 4});
		double err = 0, mag = 0;
		for (int64_t a = 0; a < T; a++)
			for (int64_t o = 0; o < O; o++) {
				double ref = 0;
				for (int64_t k = 0; k < I; k++)
					ref += (double)x[a * I + k] * W[o * I + k];
				err = fmax(err, fabs(ref - y[a * O + o]));
				mag = fmax(mag, fabs(ref));
			}
		if (err > 1e-4 * (mag + 1))
			bad += !check(false, "%s: %s: matmul error %g (magnitude %g)", what, t->name, err,
				      mag);
		be->vt->buffer_free(be, xb);
		be->vt->buffer_free(be, yb);
		free(W);
		free(x);
		free(y);
	}
	check(bad == 0, "%s: layer-1 projections as tern_weight through the cpu matmul", what);
	be->vt->buffer_free(be, gb);
	tern_backend_free(be);
}

static void test_fixtures(void)
{
	static const char *const names[] = {"llama", "mistral", "qwen2", "qwen3", "llama_tied"};
	static const enum tern_base_format fmts[] = {TERN_FORMAT_NF4_DQ, TERN_FORMAT_NF4, TERN_FORMAT_TERNARY,
						     TERN_FORMAT_BF16,   TERN_FORMAT_F16, TERN_FORMAT_F32};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		char dir[2200];
		fixture(dir, sizeof dir, names[i]);
		for (size_t f = 0; f < sizeof fmts / sizeof *fmts; f++) {
			struct tern_model_opts o = {.format = fmts[f], .blocksize = f == 1 ? 128 : 0};
			struct tern_model *m = NULL;
			char what[256];
			snprintf(what, sizeof what, "%s %s", names[i], tern_base_format_name(fmts[f]));
			if (!check(tern_model_open(dir, &o, &m) == TERN_OK, "%s: open: %s", what,
				   tern_error()))
				continue;
			check_loaded(dir, m, fmts[f], what);
			const struct tern_model_config *c = &m->cfg;
			check(m->pack->n_groups == (uint32_t)c->L + 1, "%s: one group per layer + globals",
			      what);
			bool tied = c->tie_embeddings;
			check((tern_model_tensor(m, -1, TERN_ROLE_HEAD) == NULL) == tied,
			      "%s: lm_head iff not tied", what);
			check((tern_model_tensor(m, 0, TERN_ROLE_Q_BIAS) != NULL) == c->qkv_bias,
			      "%s: q bias", what);
			check((tern_model_tensor(m, 1, TERN_ROLE_K_NORM) != NULL) == c->qk_norm, "%s: k norm",
			      what);
			check_matmul(m, what);
			tern_model_free(m);
		}
	}
	/* architecture specifics */
	char dir[2200];
	struct tern_model *m = NULL;
	fixture(dir, sizeof dir, "qwen3");
	if (check(tern_model_open(dir, NULL, &m) == TERN_OK, "qwen3 default open: %s", tern_error())) {
		check(m->cfg.Dh == 10 && m->cfg.H * m->cfg.Dh != m->cfg.D, "qwen3 head_dim != D/H");
		check(tern_model_tensor(m, 0, TERN_ROLE_Q)->dtype == TERN_NF4_DQ &&
			      tern_model_tensor(m, 0, TERN_ROLE_GATE)->shape[0] *
					      tern_model_tensor(m, 0, TERN_ROLE_GATE)->shape[1] % 2 ==
				      1,
		      "qwen3: default nf4-dq, odd element count");
		tern_model_free(m);
	}
	fixture(dir, sizeof dir, "mistral");
	if (check(tern_model_open(dir, NULL, &m) == TERN_OK, "mistral open: %s", tern_error())) {
		check(m->cfg.sliding_window == 32 && m->cfg.Hkv == 1, "mistral window and kv heads");
		tern_model_free(m);
	}
}

/* ---- bitsandbytes ---- */

static void compare_packs(const struct tern_model *a, const struct tern_model *b, const char *what)
{
	int bad = 0;
	if (!check(a->pack->n_tensors == b->pack->n_tensors, "%s: tensor counts", what))
		return;
	for (uint32_t i = 0; i < a->pack->n_tensors && bad < 3; i++) {
		const struct tern_pack_tensor *x = &a->pack->t[i], *y = &b->pack->t[i];
		bool ok = !strcmp(x->name, y->name) && x->dtype == y->dtype && x->blocksize == y->blocksize &&
			  x->offset == y->offset && x->scale == y->scale;
		for (int k = 0; k < 3 && ok; k++)
			ok = x->size[k] == y->size[k] &&
			     same_bytes(tern_pack_part(a->pack, x, k), tern_pack_part(b->pack, y, k),
					x->size[k]);
		int64_t n = x->shape[0] * x->shape[1];
		float *fx = malloc((size_t)n * 4), *fy = malloc((size_t)n * 4);
		if (ok) {
			tern_pack_tensor_f32(a->pack, x, fx);
			tern_pack_tensor_f32(b->pack, y, fy);
			ok = same_bytes(fx, fy, (size_t)n * 4);
		}
		free(fx);
		free(fy);
		if (!ok)
			bad += !check(false, "%s: %s differs", what, x->name);
	}
	check(bad == 0, "%s: bit-exact", what);
}

static void test_bnb(void)
{
	char dir[2200], out[2200];
	struct tern_model *m = NULL, *r = NULL;
	/* A checkpoint written by transformers + bitsandbytes: taken as stored. */
	fixture(dir, sizeof dir, "llama_bnb");
	struct stat sb;
	if (stat(dir, &sb) == 0 &&
	    check(tern_model_open(dir, NULL, &m) == TERN_OK, "llama_bnb open: %s", tern_error())) {
		struct tern_st_model *st = NULL;
		tern_st_model_open(dir, &st);
		int bad = 0;
		for (uint32_t i = 0; i < m->pack->n_tensors; i++) {
			const struct tern_pack_tensor *t = &m->pack->t[i];
			const struct tern_st_tensor *s = tern_st_model_find(st, t->name);
			if (!tern_role_is_proj((int)t->role)) {
				bad += !same_bytes(tern_pack_part(m->pack, t, 0), s->data, s->nbytes);
				continue;
			}
			char nm[256];
			snprintf(nm, sizeof nm, "%s.absmax", t->name);
			const struct tern_st_tensor *a = tern_st_model_find(st, nm);
			snprintf(nm, sizeof nm, "%s.nested_absmax", t->name);
			const struct tern_st_tensor *ne = tern_st_model_find(st, nm);
			bad += !(t->dtype == TERN_NF4_DQ && t->blocksize == 64 && s && a && ne &&
				 same_bytes(tern_pack_part(m->pack, t, 0), s->data, s->nbytes) &&
				 same_bytes(tern_pack_part(m->pack, t, 1), a->data, a->nbytes) &&
				 same_bytes(tern_pack_part(m->pack, t, 2), ne->data, ne->nbytes));
		}
		check(bad == 0, "llama_bnb: 4-bit tensors loaded byte for byte (%d differ)", bad);
		tern_st_model_close(st);
		/* against the bf16 source: within NF4's error */
		char src[2200];
		struct tern_model *f = NULL;
		fixture(src, sizeof src, "llama");
		struct tern_model_opts o = {.format = TERN_FORMAT_F32};
		if (tern_model_open(src, &o, &f) == TERN_OK) {
			const struct tern_pack_tensor *x = tern_model_tensor(m, 0, TERN_ROLE_UP),
						      *y = tern_model_tensor(f, 0, TERN_ROLE_UP);
			int64_t n = x->shape[0] * x->shape[1];
			float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), mx = 0, err = 0;
			tern_pack_tensor_f32(m->pack, x, a);
			tern_pack_tensor_f32(f->pack, y, b);
			for (int64_t k = 0; k < n; k++) {
				mx = fmaxf(mx, fabsf(b[k]));
				err = fmaxf(err, fabsf(a[k] - b[k]));
			}
			check(err < 0.25f * mx, "llama_bnb dequantized near the source (err %g, max %g)", err,
			      mx);
			free(a);
			free(b);
			tern_model_free(f);
		}
		tern_model_free(m);
		m = NULL;
	}

	/* Written by tern, read back: bit-exact with quantize-on-load (nf4-dq and nf4). */
	static const enum tern_base_format fmts[] = {TERN_FORMAT_NF4_DQ, TERN_FORMAT_NF4};
	static const char *const names[] = {"llama", "qwen2", "qwen3", "llama_tied"};
	for (size_t i = 0; i < 4; i++)
		for (int f = 0; f < 2; f++) {
			char what[128];
			snprintf(what, sizeof what, "bnb round trip %s %s", names[i],
				 tern_base_format_name(fmts[f]));
			fixture(dir, sizeof dir, names[i]);
			snprintf(out, sizeof out, "%s/bnb_%s_%d", tmp_root, names[i], f);
			struct tern_model_opts o = {.format = fmts[f], .blocksize = f ? 128 : 64};
			if (!check(tern_model_open(dir, &o, &m) == TERN_OK, "%s: open: %s", what,
				   tern_error()))
				continue;
			if (check(tern_model_write_bnb(m, out) == TERN_OK, "%s: write: %s", what,
				  tern_error()) &&
			    check(tern_model_open(out, NULL, &r) == TERN_OK, "%s: reopen: %s", what,
				  tern_error())) {
				compare_packs(m, r, what);
				check(r->cfg.qmethod == TERN_QMETHOD_BNB_4BIT &&
					      r->cfg.bnb_double_quant == (f == 0),
				      "%s: quantization_config", what);
				tern_model_free(r);
				r = NULL;
			}
			tern_model_free(m);
			m = NULL;
		}
	/* A ternary model cannot be written as bitsandbytes. */
	fixture(dir, sizeof dir, "llama");
	struct tern_model_opts o = {.format = TERN_FORMAT_TERNARY};
	if (tern_model_open(dir, &o, &m) == TERN_OK) {
		snprintf(out, sizeof out, "%s/bnb_ternary", tmp_root);
		check_error(tern_model_write_bnb(m, out), "needs nf4 or nf4-dq", "bnb from ternary");
		tern_model_free(m);
	}
}

/* ---- pack file ---- */

static void touch(const char *path, int dt)
{
	struct stat sb;
	stat(path, &sb);
	struct timeval tv[2] = {{sb.st_atime, 0}, {sb.st_mtime + dt, 0}};
	utimes(path, tv);
}

static enum tern_status open_pack(const char *dir, const char *pack, enum tern_base_format fmt,
				  struct tern_model **m)
{
	struct tern_model_opts o = {.format = fmt, .pack_path = pack};
	return tern_model_open(dir, &o, m);
}

static void flip_byte(const char *path, long off)
{
	int fd = open(path, O_RDWR);
	uint8_t b;
	pread(fd, &b, 1, off);
	b ^= 0x5a;
	pwrite(fd, &b, 1, off);
	close(fd);
}

static void test_pack(void)
{
	char src[2200], dir[2200], pack[2300], cmd[8000];
	struct tern_model *a = NULL, *b = NULL, *mem = NULL;
	struct tern_model_load_report ra, rb;
	fixture(src, sizeof src, "qwen2");
	snprintf(dir, sizeof dir, "%s/qwen2", tmp_root);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, src, dir);
	if (!check(system(cmd) == 0, "copy fixture"))
		return;
	snprintf(pack, sizeof pack, "%s/qwen2.tpack", tmp_root);
	unlink(pack);

	if (!check(open_pack(dir, pack, TERN_FORMAT_NF4_DQ, &a) == TERN_OK, "pack build: %s", tern_error()))
		return;
	tern_model_report(a, &ra);
	check(!ra.reused && strstr(ra.why, "no pack file yet"), "first load builds (%s)", ra.why);
	if (check(open_pack(dir, pack, TERN_FORMAT_NF4_DQ, &b) == TERN_OK, "pack reuse: %s", tern_error())) {
		tern_model_report(b, &rb);
		check(rb.reused, "second load reuses the pack file (%s)", rb.why);
		printf("pack file %llu bytes: build %.2f ms, reuse %.2f ms\n",
		       (unsigned long long)ra.pack_bytes, 1e3 * ra.seconds, 1e3 * rb.seconds);
		compare_packs(a, b, "pack round trip");
		for (uint32_t g = 0; g < b->pack->n_groups; g++)
			check(b->pack->groups[g].off % 4096 == 0, "group %u page-aligned", g);
		tern_model_free(b);
	}
	/* the in-memory image equals the file */
	struct tern_model_opts o = {.format = TERN_FORMAT_NF4_DQ};
	if (check(tern_model_open(dir, &o, &mem) == TERN_OK, "in-memory open: %s", tern_error())) {
		compare_packs(a, mem, "memory vs file");
		tern_model_free(mem);
	}
	tern_model_free(a);

	/* stale: source touched, format changed */
	char st_path[2300];
	snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
	touch(st_path, 10);
	if (check(open_pack(dir, pack, TERN_FORMAT_NF4_DQ, &a) == TERN_OK, "stale reopen: %s",
		  tern_error())) {
		tern_model_report(a, &ra);
		check(!ra.reused && strstr(ra.why, "model.safetensors changed"),
		      "touched source is stale: %s", ra.why);
		tern_model_free(a);
	}
	if (check(open_pack(dir, pack, TERN_FORMAT_TERNARY, &a) == TERN_OK, "format change: %s",
		  tern_error())) {
		tern_model_report(a, &ra);
		check(!ra.reused && strstr(ra.why, "format was \"nf4-dq\", now \"ternary\""),
		      "format change is stale: %s", ra.why);
		tern_model_free(a);
	}
	/* auto means nf4-dq for a 16-bit checkpoint: the same pack */
	struct tern_model *c = NULL;
	if (check(open_pack(dir, pack, TERN_FORMAT_NF4_DQ, &a) == TERN_OK, "nf4-dq again: %s",
		  tern_error()) &&
	    check(open_pack(dir, pack, TERN_FORMAT_AUTO, &c) == TERN_OK, "auto: %s", tern_error())) {
		tern_model_report(c, &ra);
		check(ra.reused, "auto reuses the nf4-dq pack (%s)", ra.why);
	}
	tern_model_free(a);
	tern_model_free(c);
	if (check(open_pack(dir, pack, TERN_FORMAT_TERNARY, &a) == TERN_OK, "ternary again: %s",
		  tern_error()))
		tern_model_free(a);
	/* corruption */
	struct tern_pack *p = NULL;
	flip_byte(pack, 128 + 10); /* inside the first TOC name */
	check_error(tern_pack_open(pack, &p), "checksum mismatch", "corrupted TOC");
	if (check(open_pack(dir, pack, TERN_FORMAT_TERNARY, &a) == TERN_OK, "rebuild after corruption: %s",
		  tern_error())) {
		tern_model_report(a, &ra);
		check(!ra.reused && strstr(ra.why, "pack file unusable"), "corrupt pack rebuilt: %s", ra.why);
		tern_model_free(a);
	}
	flip_byte(pack, 8); /* version */
	check_error(tern_pack_open(pack, &p), "regenerate", "version mismatch");
	flip_byte(pack, 8);
	check(tern_pack_open(pack, &p) == TERN_OK, "restored pack opens: %s", tern_error());
	tern_pack_free(p);
	p = NULL;
	if (truncate(pack, 8192) == 0)
		check_error(tern_pack_open(pack, &p), "truncated", "truncated pack");
	check_error(tern_pack_open(st_path, &p), "not a tern pack file", "not a pack");
	/* out of space / unwritable location: a clear error, nothing left behind */
	struct tern_model_opts bad = {.format = TERN_FORMAT_NF4, .pack_path = "/nonexistent-dir/x.tpack"};
	check_error(tern_model_open(dir, &bad, &a), "/nonexistent-dir/x.tpack",
		    "pack in a missing directory");
}

/* ---- bad model directories ---- */

static void make_dir(const char *name, char *dir, size_t size)
{
	char cmd[8000], src[2200];
	fixture(src, sizeof src, "llama");
	snprintf(dir, size, "%s/%s", tmp_root, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && cp -r '%s' '%s'", dir, src, dir);
	if (system(cmd))
		check(false, "cp %s", dir);
}

/* Rewrites dir/model.safetensors with tensor `drop` left out or its shape changed. */
static void rewrite_st(const char *dir, const char *target, bool drop)
{
	char path[2300];
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	struct tern_st_file *f = NULL;
	if (tern_st_open(path, &f))
		return;
	size_t n = tern_st_file_count(f), k = 0;
	struct tern_st_desc *d = calloc(n, sizeof *d);
	uint8_t *copy = NULL;
	for (size_t i = 0; i < n; i++) {
		const struct tern_st_tensor *t = tern_st_file_tensor(f, i);
		if (drop && !strcmp(t->name, target))
			continue;
		d[k] = (struct tern_st_desc){t->name, t->dtype, t->ndim, {0}, t->data};
		memcpy(d[k].shape, t->shape, sizeof d[k].shape);
		if (!drop && !strcmp(t->name, target)) { /* [V, D] -> [V/2, 2D] */
			d[k].shape[0] /= 2;
			d[k].shape[1] *= 2;
		}
		k++;
	}
	char out[2300];
	snprintf(out, sizeof out, "%s/model2.safetensors", dir);
	tern_st_write(out, d, k, NULL, 0);
	tern_st_close(f);
	rename(out, path);
	free(d);
	free(copy);
}

/* The llama fixture split into two shards + model.safetensors.index.json loads like the original. */
static void test_sharded(void)
{
	char src[2200], dir[2300], path[2400];
	struct tern_st_file *f = NULL;
	struct tern_model *a = NULL, *b = NULL;
	fixture(src, sizeof src, "llama");
	snprintf(dir, sizeof dir, "%s/sharded", tmp_root);
	mkdir(dir, 0755);
	snprintf(path, sizeof path, "%s/model.safetensors", src);
	if (!check(tern_st_open(path, &f) == TERN_OK, "open llama safetensors: %s", tern_error()))
		return;
	size_t n = tern_st_file_count(f), half = n / 2;
	struct tern_st_desc *d = calloc(n, sizeof *d);
	FILE *idx;
	snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
	idx = fopen(path, "w");
	fprintf(idx, "{\"metadata\": {\"total_size\": 0}, \"weight_map\": {");
	for (size_t i = 0; i < n; i++) {
		const struct tern_st_tensor *t = tern_st_file_tensor(f, i);
		d[i] = (struct tern_st_desc){t->name, t->dtype, t->ndim, {0}, t->data};
		memcpy(d[i].shape, t->shape, sizeof d[i].shape);
		fprintf(idx, "%s\"%s\": \"model-0000%d-of-00002.safetensors\"", i ? ", " : "", t->name,
			i < half ? 1 : 2);
	}
	fprintf(idx, "}}\n");
	fclose(idx);
	snprintf(path, sizeof path, "%s/model-00001-of-00002.safetensors", dir);
	tern_st_write(path, d, half, NULL, 0);
	snprintf(path, sizeof path, "%s/model-00002-of-00002.safetensors", dir);
	tern_st_write(path, d + half, n - half, NULL, 0);
	free(d);
	tern_st_close(f);
	char cmd[8000];
	snprintf(cmd, sizeof cmd, "cp '%s/config.json' '%s/'", src, dir);
	if (system(cmd))
		return;
	struct tern_model_opts o = {.format = TERN_FORMAT_NF4_DQ};
	if (check(tern_model_open(src, &o, &a) == TERN_OK, "open llama") &&
	    check(tern_model_open(dir, &o, &b) == TERN_OK, "open sharded llama: %s", tern_error()))
		compare_packs(a, b, "sharded vs single file");
	tern_model_free(a);
	tern_model_free(b);
}

/* Copies llama_bnb to tmp_root/name with the data of tensor `target` replaced by repl. */
static void bnb_variant(const char *name, const char *target, const void *repl, char *dir, size_t size)
{
	char src[2200], path[2400], cmd[8000];
	struct tern_st_file *f = NULL;
	fixture(src, sizeof src, "llama_bnb");
	snprintf(dir, size, "%s/%s", tmp_root, name);
	snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s' && cp '%s/config.json' '%s/'", dir, dir, src,
		 dir);
	if (system(cmd))
		return;
	snprintf(path, sizeof path, "%s/model.safetensors", src);
	if (tern_st_open(path, &f))
		return;
	size_t n = tern_st_file_count(f);
	struct tern_st_desc *d = calloc(n, sizeof *d);
	for (size_t i = 0; i < n; i++) {
		const struct tern_st_tensor *t = tern_st_file_tensor(f, i);
		d[i] = (struct tern_st_desc){
			t->name, t->dtype, t->ndim, {0}, strcmp(t->name, target) ? t->data : repl};
		memcpy(d[i].shape, t->shape, sizeof d[i].shape);
	}
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	tern_st_write(path, d, n, NULL, 0);
	free(d);
	tern_st_close(f);
}

static void test_bnb_variants(void)
{
	char dir[2300], src[2200];
	struct tern_model *a = NULL, *b = NULL;
	fixture(src, sizeof src, "llama_bnb");
	struct stat sb;
	if (stat(src, &sb) || tern_model_open(src, NULL, &a) != TERN_OK)
		return;
	/* quant_map that is not NF4 */
	float qm[16];
	memcpy(qm, tern_nf4_code, sizeof qm);
	qm[3] = -0.4f;
	bnb_variant("bnb_qmap", "model.layers.1.self_attn.k_proj.weight.quant_map", qm, dir, sizeof dir);
	check_error(tern_model_open(dir, NULL, &b),
		    "model.layers.1.self_attn.k_proj.weight.quant_map is not the NF4 table",
		    "bnb custom quant_map");
	/* a nested map that differs in an entry no absmax code uses: stored as nf4 with the same values */
	const struct tern_pack_tensor *t = tern_model_tensor(a, 0, TERN_ROLE_V);
	bool used[256] = {0};
	const uint8_t *qa = tern_pack_part(a->pack, t, TERN_PART_ABSMAX);
	for (uint64_t i = 0; i < t->size[TERN_PART_ABSMAX]; i++)
		used[qa[i]] = true;
	int unused = 0;
	while (unused < 255 && used[unused])
		unused++;
	float map[256];
	tern_dynamic_map(map);
	map[unused] += 0.001f;
	bnb_variant("bnb_nmap", "model.layers.0.self_attn.v_proj.weight.nested_quant_map", map, dir,
		    sizeof dir);
	if (check(tern_model_open(dir, NULL, &b) == TERN_OK, "bnb with another nested map: %s",
		  tern_error())) {
		const struct tern_pack_tensor *u = tern_model_tensor(b, 0, TERN_ROLE_V);
		int64_t n = t->shape[0] * t->shape[1];
		float *x = malloc((size_t)n * 4), *y = malloc((size_t)n * 4);
		tern_pack_tensor_f32(a->pack, t, x);
		tern_pack_tensor_f32(b->pack, u, y);
		check(u->dtype == TERN_NF4 && same_bytes(x, y, (size_t)n * 4) &&
			      same_bytes(tern_pack_part(a->pack, t, 0), tern_pack_part(b->pack, u, 0),
					 t->size[0]),
		      "another nested map: stored as nf4, same codes, same values");
		free(x);
		free(y);
		tern_model_free(b);
	}
	/* a quant_state with another shape */
	const char *js =
		"{\"quant_type\": \"nf4\", \"blocksize\": 64, \"dtype\": \"bfloat16\", \"shape\": [64, 64], "
		"\"nested_blocksize\": 256, \"nested_dtype\": \"float32\", \"nested_offset\": 1.0}";
	/* padded with spaces to the original length */
	char buf[512];
	struct tern_st_model *stm = NULL;
	tern_st_model_open(src, &stm);
	const struct tern_st_tensor *qs =
		tern_st_model_find(stm, "model.layers.0.mlp.gate_proj.weight.quant_state.bitsandbytes__nf4");
	if (qs && qs->nbytes < sizeof buf && strlen(js) <= qs->nbytes) {
		memset(buf, ' ', sizeof buf);
		memcpy(buf, js, strlen(js));
		bnb_variant("bnb_shape", qs->name, buf, dir, sizeof dir);
		check_error(tern_model_open(dir, NULL, &b),
			    "quant_state shape differs from the expected [160, 64]", "bnb quant_state shape");
	}
	tern_st_model_close(stm);
	tern_model_free(a);
}

static void test_bad_dirs(void)
{
	char dir[2300], path[2400], cmd[8000];
	struct tern_model *m = NULL;
	make_dir("bad_noconfig", dir, sizeof dir);
	snprintf(path, sizeof path, "%s/config.json", dir);
	unlink(path);
	check_error(tern_model_open(dir, NULL, &m), "config.json: cannot open", "missing config.json");

	make_dir("bad_missing", dir, sizeof dir);
	rewrite_st(dir, "model.layers.1.mlp.up_proj.weight", true);
	check_error(tern_model_open(dir, NULL, &m),
		    "tensor model.layers.1.mlp.up_proj.weight missing (expected [160, 64]", "missing tensor");

	make_dir("bad_shape", dir, sizeof dir);
	rewrite_st(dir, "model.embed_tokens.weight", false);
	check_error(tern_model_open(dir, NULL, &m),
		    "model.embed_tokens.weight has shape [128, 128], expected [256, 64]", "wrong shape");

	make_dir("bad_truncated", dir, sizeof dir);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	if (truncate(path, 100000) == 0)
		check_error(tern_model_open(dir, NULL, &m), "model.safetensors", "truncated safetensors");

	make_dir("bad_value", dir, sizeof dir);
	snprintf(cmd, sizeof cmd,
		 "sed -i 's/\"num_attention_heads\": 4/\"num_attention_heads\": -4/' '%s/config.json'", dir);
	if (system(cmd) == 0)
		check_error(tern_model_open(dir, NULL, &m), "num_attention_heads = -4: expected an integer",
			    "bad value");

	make_dir("bad_layers", dir, sizeof dir);
	snprintf(cmd, sizeof cmd,
		 "sed -i 's/\"num_hidden_layers\": 2/\"num_hidden_layers\": 1/' '%s/config.json'", dir);
	if (system(cmd) == 0)
		check_error(tern_model_open(dir, NULL, &m), "unexpected tensor model.layers.1.",
			    "extra layer");

	make_dir("bad_nosafetensors", dir, sizeof dir);
	snprintf(path, sizeof path, "%s/model.safetensors", dir);
	unlink(path);
	check_error(tern_model_open(dir, NULL, &m), dir, "no safetensors");

	char mix[2200];
	fixture(mix, sizeof mix, "mixtral");
	check_error(tern_model_open(mix, NULL, &m), "no model.safetensors.index.json",
		    "mixtral: config only (loads as far as the weights)");
	fixture(mix, sizeof mix, "bitnet");
	check_error(tern_model_open(mix, NULL, &m), "no model.safetensors.index.json",
		    "bitnet without a quantization_config (master weights): config only (loads as far as "
		    "the weights)");
	check_error(tern_model_open("/nonexistent/model", NULL, &m), "/nonexistent/model/config.json",
		    "no directory");
	check(m == NULL, "failed opens leave *out NULL");

	struct tern_model_info info;
	fixture(mix, sizeof mix, "mixtral");
	check(tern_model_info(mix, &info) == TERN_OK && info.supported && info.E == 4 &&
		      info.params_total ==
			      2 * 256 * 64 + 64 + 2 * (3 * 64 * 64 + 4 * 64 + 4 * 3 * 96 * 64 + 2 * 64),
	      "info of mixtral: experts and router counted (%llu)", (unsigned long long)info.params_total);
	fixture(mix, sizeof mix, "llama");
	check(tern_model_info(mix, &info) == TERN_OK && info.supported && info.L == 2 && info.D == 64 &&
		      info.params_total ==
			      2 * (64 * 64 * 2 + 32 * 64 * 2 + 160 * 64 * 3 + 128) + 256 * 64 * 2 + 64,
	      "info of llama (params %llu)", (unsigned long long)info.params_total);
}

int main(void)
{
	const char *d = getenv("TERN_TEST_DATA");
	snprintf(data_dir, sizeof data_dir, "%s", d ? d : "tests/data");
	snprintf(tmp_root, sizeof tmp_root, "%s/tern_test_model.XXXXXX",
		 getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
	if (!mkdtemp(tmp_root)) {
		printf("cannot create a temporary directory\n");
		return 1;
	}
	test_config();
	test_fixtures();
	test_bnb();
	test_pack();
	test_sharded();
	test_bnb_variants();
	test_bad_dirs();
	char cmd[2200];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_root);
	if (system(cmd))
		printf("could not remove %s\n", tmp_root);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
