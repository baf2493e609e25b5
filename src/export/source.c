/* The merged model as a stream of fp32 tensors (source.h). */
#define _GNU_SOURCE
#include "export/source.h"

#include "quant/quant.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum tern_status tern_adapter_config_peek(const char *dir, int64_t *r, double *alpha, bool *rslora,
					  unsigned *modules)
{
	enum tern_status st = TERN_OK;
	char *path = tern_path_join(dir, "adapter_config.json");
	if (!path)
		return TERN_E_NOMEM;
	json_error_t e;
	json_t *root = NULL;
	if (access(path, F_OK) != 0) {
		st = tern_fail(TERN_E_IO,
			       "%s: not found (an adapter directory holds adapter_config.json and "
			       "adapter_model.safetensors, as tern train or PEFT save them)",
			       path);
		goto out;
	}
	if (!(root = json_load_file(path, 0, &e))) {
		st = tern_fail(TERN_E_FORMAT, "%s: line %d: %s", path, e.line, e.text);
		goto out;
	}
	json_t *jr = json_object_get(root, "r"), *ja = json_object_get(root, "lora_alpha"),
	       *jt = json_object_get(root, "target_modules"), *jrs = json_object_get(root, "use_rslora");
	if (!json_is_integer(jr) || json_integer_value(jr) <= 0) {
		st = tern_fail(TERN_E_FORMAT, "%s: r: expected a positive integer", path);
		goto out;
	}
	if (!json_is_number(ja) || !(json_number_value(ja) > 0)) {
		st = tern_fail(TERN_E_FORMAT, "%s: lora_alpha: expected a positive number", path);
		goto out;
	}
	*r = json_integer_value(jr);
	*alpha = json_number_value(ja);
	*rslora = json_is_true(jrs);
	*modules = 0;
	if (!json_is_array(jt)) {
		st = tern_fail(TERN_E_FORMAT,
			       "%s: target_modules: expected a list of module names (q_proj, ..., down_proj)",
			       path);
		goto out;
	}
	size_t i;
	json_t *x;
	json_array_foreach(jt, i, x)
	{
		enum tern_module m;
		if (!json_is_string(x) || !tern_module_parse(json_string_value(x), &m)) {
			st = tern_fail(TERN_E_UNSUPPORTED,
				       "%s: target_modules: '%s' is not a module tern can merge (allowed: "
				       "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)",
				       path, json_is_string(x) ? json_string_value(x) : "?");
			goto out;
		}
		*modules |= 1u << m;
	}
out:
	json_decref(root);
	free(path);
	return st;
}

static int role_module(enum tern_role r)
{
	switch (r) {
	case TERN_ROLE_Q: return TERN_MOD_Q;
	case TERN_ROLE_K: return TERN_MOD_K;
	case TERN_ROLE_V: return TERN_MOD_V;
	case TERN_ROLE_O: return TERN_MOD_O;
	case TERN_ROLE_GATE: return TERN_MOD_GATE;
	case TERN_ROLE_UP: return TERN_MOD_UP;
	case TERN_ROLE_DOWN: return TERN_MOD_DOWN;
	default: return -1;
	}
}

static enum tern_base_format dtype_format(enum tern_dtype d)
{
	return d == TERN_F32 ? TERN_FORMAT_F32 : d == TERN_F16 ? TERN_FORMAT_F16 : TERN_FORMAT_BF16;
}

/* The expert slots (bit 1 gate_up, bit 2 down, 4 the router: tern_plan_experts' bits) that adapter_config.json's
 * target_parameters names; the names themselves are checked by tern_adapter_read. */
static unsigned peek_experts(const char *dir)
{
	unsigned experts = 0;
	char *path = tern_path_join(dir, "adapter_config.json");
	if (!path)
		return 0;
	json_error_t e;
	json_t *root = json_load_file(path, 0, &e);
	free(path);
	json_t *tp = root ? json_object_get(root, "target_parameters") : NULL;
	size_t i;
	json_t *x;
	if (json_is_array(tp))
		json_array_foreach(tp, i, x) experts |= tern_expert_param_bit(json_string_value(x));
	json_decref(root);
	return experts;
}

/* Expert slot (TERN_LORA_EXP_*) and the first row of B for an expert role; -1 for other roles. */
static int expert_slot(const struct tern_msrc *s, enum tern_role r, int64_t *row0)
{
	*row0 = r == TERN_ROLE_EXP_UP ? s->cfg.Fe : 0; /* gate_up's B: gate rows, then up rows */
	return r == TERN_ROLE_EXP_GATE || r == TERN_ROLE_EXP_UP ? TERN_LORA_EXP_GATE_UP
	       : r == TERN_ROLE_EXP_DOWN                        ? TERN_LORA_EXP_DOWN
								: -1;
}

static enum tern_status open_adapter(struct tern_msrc *s, const char *dir)
{
	int64_t r;
	unsigned modules;
	enum tern_status st = tern_adapter_config_peek(dir, &r, &s->alpha, &s->rslora, &modules);
	if (st)
		return st;
	unsigned experts = peek_experts(dir);
	if (!modules && !experts)
		return tern_fail(TERN_E_FORMAT, "%s/adapter_config.json: target_modules is empty", dir);
	if (experts && s->cfg.E <= 0)
		return tern_fail(TERN_E_FORMAT,
				 "%s/adapter_config.json: target_parameters names expert parameters, but "
				 "the base model %s (%s) has no experts",
				 dir, s->base, s->cfg.model_type);
	int64_t io[TERN_MOD_COUNT][2];
	int64_t q = s->cfg.H * s->cfg.Dh, kv = s->cfg.Hkv * s->cfg.Dh;
	int64_t shapes[TERN_MOD_COUNT][2] = {{s->cfg.D, q},       {s->cfg.D, kv},       {s->cfg.D, kv},
					     {q, s->cfg.D},       {s->cfg.D, s->cfg.F}, {s->cfg.D, s->cfg.F},
					     {s->cfg.F, s->cfg.D}};
	memcpy(io, shapes, sizeof io);
	unsigned full = tern_adapter_full(dir);
	if ((st = tern_lora_set_alloc(&s->lora, (int)s->cfg.L, r, modules, io, false)) ||
	    (full && (st = tern_lora_set_add_full(s->lora, full, s->cfg.V, s->cfg.D, false))))
		return st;
	if (experts) {
		uint8_t *sparse = tern_malloc((size_t)s->cfg.L);
		if (!sparse)
			return TERN_E_NOMEM;
		for (int64_t l = 0; l < s->cfg.L; l++)
			sparse[l] = tern_model_layer_moe(&s->cfg, l);
		st = tern_lora_set_add_experts(s->lora, experts, s->cfg.E, s->cfg.D, s->cfg.Fe, sparse,
					       false);
		free(sparse);
		if (st)
			return st;
	}
	struct tern_adapter_meta meta;
	if ((st = tern_adapter_read(dir, s->lora, &meta))) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st, "%s (is this adapter for the base model %s?)", msg, s->base);
	}
	s->scale = s->rslora ? s->alpha / sqrt((double)r) : s->alpha / (double)r;
	return TERN_OK;
}

enum tern_status tern_msrc_open(const struct tern_msrc_opts *o, struct tern_msrc **out)
{
	*out = NULL;
	enum tern_status st;
	struct tern_tensor_spec *spec = NULL;
	size_t ns = 0;
	struct tern_msrc *s = tern_calloc(1, sizeof *s);
	if (!s)
		return TERN_E_NOMEM;
	snprintf(s->base, sizeof s->base, "%s", o->base);
	if (o->adapter)
		snprintf(s->adapter, sizeof s->adapter, "%s", o->adapter);
	s->keep_pack = o->keep_pack;
	if ((st = tern_model_config_load(o->base, &s->cfg)) ||
	    (st = tern_model_config_check(&s->cfg, o->base)))
		goto out;
	if (o->adapter && (st = open_adapter(s, o->adapter)))
		goto out;
	if ((st = tern_model_tensor_map(&s->cfg, &spec, &ns)))
		goto out;
	bool head_full = s->lora && ((s->lora->full_have >> TERN_FULL_HEAD) & 1u);
	bool embed_full = s->lora && ((s->lora->full_have >> TERN_FULL_EMBED) & 1u);
	/* PEFT's merge unties a tied model whose embed_tokens or lm_head were trained in full: lm_head
	 * is then the adapter's own copy, or the base embedding the model was tied to */
	s->untied = s->cfg.tie_embeddings && (head_full || embed_full);
	s->t = tern_calloc(ns + 1, sizeof *s->t);
	if (!s->t) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < ns; i++) {
		struct tern_msrc_tensor *t = &s->t[s->n++];
		snprintf(t->name, sizeof t->name, "%s", spec[i].name);
		t->layer = spec[i].layer;
		t->role = spec[i].role;
		t->ndim = spec[i].ndim;
		t->shape[0] = spec[i].shape[0];
		t->shape[1] = spec[i].ndim == 2 ? spec[i].shape[1] : 1;
		t->numel = t->shape[0] * t->shape[1];
		t->expert = spec[i].expert;
		int m = role_module(t->role);
		int64_t row0;
		int xs = expert_slot(s, t->role, &row0);
		t->merged =
			s->lora && ((m >= 0 && ((s->lora->modules >> m) & 1u)) ||
				    (xs >= 0 && tern_lora_at(s->lora, t->layer, (enum tern_module)xs)->A) ||
				    (t->role == TERN_ROLE_ROUTER &&
				     tern_lora_at(s->lora, t->layer, (enum tern_module)TERN_LORA_ROUTER)->A));
		t->replaced =
			s->lora &&
			((t->role == TERN_ROLE_EMBED && ((s->lora->full_have >> TERN_FULL_EMBED) & 1u)) ||
			 (t->role == TERN_ROLE_HEAD && head_full));
		if (s->untied && t->role == TERN_ROLE_NORM) { /* lm_head after the final norm */
			struct tern_msrc_tensor *h = &s->t[s->n++];
			*h = (struct tern_msrc_tensor){.name = "lm_head.weight",
						       .layer = -1,
						       .role = TERN_ROLE_HEAD,
						       .ndim = 2,
						       .shape = {s->cfg.V, s->cfg.D},
						       .numel = s->cfg.V * s->cfg.D,
						       .replaced = head_full,
						       .from_embed = !head_full};
		}
	}
	/* Weights: the safetensors as stored when no conversion is asked, else a pack. */
	enum tern_base_format f = o->format;
	/* quantized checkpoints (bitsandbytes, BitNet's packed / offline) go through a pack */
	bool bnb = s->cfg.qmethod == TERN_QMETHOD_BNB_4BIT || tern_bitnet_offline(&s->cfg);
	bool direct =
		!bnb && (f == TERN_FORMAT_AUTO || f == TERN_FORMAT_F32 || f == dtype_format(s->cfg.dtype));
	s->format = direct ? (f == TERN_FORMAT_AUTO ? dtype_format(s->cfg.dtype) : f) : f;
	if (o->no_weights) {
		/* nothing to open */
	} else if (direct) {
		if ((st = tern_st_model_open(o->base, &s->st)))
			goto out;
		for (size_t i = 0; i < s->n; i++)
			if (!(s->untied && s->t[i].role == TERN_ROLE_HEAD)) { /* not in the checkpoint */
				const struct tern_st_tensor *t;
				if ((st = tern_st_model_get(s->st, s->t[i].name, &t)))
					goto out;
				if (t->numel != s->t[i].numel) {
					st = tern_fail(
						TERN_E_FORMAT,
						"%s: tensor %s has %lld elements; config.json implies %lld",
						o->base, t->name, (long long)t->numel,
						(long long)s->t[i].numel);
					goto out;
				}
			}
	} else {
		if (!o->pack_path) {
			st = tern_fail(TERN_E_INVALID, "merge: a pack path is needed for base format %s",
				       tern_base_format_name(f));
			goto out;
		}
		snprintf(s->pack_path, sizeof s->pack_path, "%s", o->pack_path);
		struct tern_model_opts mo = {.format = f, .blocksize = 64, .pack_path = o->pack_path};
		if ((st = tern_model_open(o->base, &mo, &s->model)))
			goto out;
		struct tern_model_load_report rep;
		tern_model_report(s->model, &rep);
		if (!strcmp(rep.format, "nf4"))
			s->format = TERN_FORMAT_NF4;
		else if (!strcmp(rep.format, "nf4-dq"))
			s->format = TERN_FORMAT_NF4_DQ;
		else if (!strcmp(rep.format, "ternary"))
			s->format = TERN_FORMAT_TERNARY;
	}
	*out = s;
	s = NULL;
out:
	free(spec);
	tern_msrc_close(s);
	return st;
}

static const float *full_of(const struct tern_msrc *s, enum tern_role r)
{
	if (!s->lora)
		return NULL;
	int f = r == TERN_ROLE_EMBED ? TERN_FULL_EMBED : r == TERN_ROLE_HEAD ? TERN_FULL_HEAD : -1;
	if (f < 0 || !((s->lora->full_have >> f) & 1u))
		return NULL;
	return s->lora->f[f].W;
}

enum tern_status tern_msrc_read(struct tern_msrc *s, size_t i, float *out)
{
	const struct tern_msrc_tensor *t = &s->t[i];
	enum tern_status st;
	if (t->replaced) {
		memcpy(out, full_of(s, t->role), (size_t)t->numel * sizeof(float));
		return TERN_OK;
	}
	if (s->st) {
		const struct tern_st_tensor *x;
		if ((st = tern_st_model_get(s->st, t->from_embed ? "model.embed_tokens.weight" : t->name,
					    &x)) ||
		    (st = tern_st_tensor_f32(x, out)))
			return st;
	} else {
		int64_t row0;
		int xs = expert_slot(s, t->role, &row0);
		const struct tern_pack_tensor *p =
			xs >= 0 ? tern_model_expert(s->model, t->layer, t->expert,
						    t->role == TERN_ROLE_EXP_GATE ? 0
						    : t->role == TERN_ROLE_EXP_UP ? 1
										  : 2)
				: tern_model_tensor(s->model, t->layer,
						    t->from_embed ? TERN_ROLE_EMBED : t->role);
		if (!p)
			return tern_fail(TERN_E_FORMAT, "%s: tensor %s not in the pack", s->pack_path,
					 t->name);
		if ((st = tern_pack_tensor_f32(s->model->pack, p, out)))
			return st;
	}
	if (!t->merged)
		return TERN_OK;
	int64_t row0;
	int xs = expert_slot(s, t->role, &row0);
	if (xs >= 0) {
		/* expert e of PEFT's target_parameters layout (adapter.h): A_e = rows e·R .. of A
		 * [E·R, I], B_e[o, j] = B[row0 + o, j·E + e]; W_e += scale · B_e A_e, summed as below */
		const struct tern_lora_tensor *x = tern_lora_at(s->lora, t->layer, (enum tern_module)xs);
		int64_t O = t->shape[0], I = t->shape[1], R = s->lora->R, E = s->lora->E, e = t->expert;
		float scale = (float)s->scale;
		for (int64_t o = 0; o < O; o++)
			for (int64_t c = 0; c < I; c++) {
				double acc = 0;
				for (int64_t r = 0; r < R; r++)
					acc += (double)x->B[(row0 + o) * R * E + r * E + e] *
					       (double)x->A[(e * R + r) * I + c];
				out[o * I + c] += (float)acc * scale;
			}
		return TERN_OK;
	}
	/* W += scale * B A, as PEFT's merge: delta = (B @ A) * scale in fp32, then W + delta. Each
	 * dot product is summed in double and rounded once. (The router's LoRA: the same, [E, D].) */
	const struct tern_lora_tensor *lt = tern_lora_at(
		s->lora, t->layer,
		(enum tern_module)(t->role == TERN_ROLE_ROUTER ? TERN_LORA_ROUTER : role_module(t->role)));
	int64_t O = lt->O, I = lt->I, R = s->lora->R;
	float scale = (float)s->scale;
#pragma omp parallel for schedule(static) if (O * I * R > (1 << 22))
	for (int64_t o = 0; o < O; o++) {
		const float *b = lt->B + o * R;
		float *w = out + o * I;
		for (int64_t c = 0; c < I; c++) {
			double acc = 0;
			for (int64_t r = 0; r < R; r++)
				acc += (double)b[r] * (double)lt->A[r * I + c];
			w[c] += (float)acc * scale;
		}
	}
	return TERN_OK;
}

void tern_msrc_close(struct tern_msrc *s)
{
	if (!s)
		return;
	tern_st_model_close(s->st);
	tern_model_free(s->model);
	if (s->pack_path[0] && !s->keep_pack)
		unlink(s->pack_path);
	tern_lora_set_free(s->lora);
	free(s->t);
	free(s);
}
