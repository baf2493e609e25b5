/* tern generate / tern chat inside the library (include/tern/generate.h): opens a model directory
 * or a training config as the trainer does (hub, config.json, residency plan, pack, net), reads
 * the adapter into the net's LoRA block and generates with src/train/gen.c. */
#define _POSIX_C_SOURCE 200809L /* strdup */
#include "tern/generate.h"

#include "data/chat.h"
#include "model/model.h"
#include "tern/hub.h"
#include "tern/tokenizer.h"
#include "train/adapter.h"
#include "train/config.h"
#include "train/gen.h"
#include "train/net.h"
#include "train/plan.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define MAX_EOS 16

struct tern_generator {
	struct tern_config *cfg;
	char *model_dir;
	struct tern_model_config mc;
	struct tern_model *model;
	struct tern_backend *be;
	struct tern_net *net;
	struct tern_gen *gen;
	struct tern_lora_set *lora;
	struct tern_tokenizer *tok;
	struct tern_chat *chat;
	char chat_err[512];
	struct tern_plan plan;
	int32_t eos[MAX_EOS];
	size_t n_eos;
	char desc[1024];
};

static bool is_dir(const char *p)
{
	struct stat s;
	return stat(p, &s) == 0 && S_ISDIR(s.st_mode);
}

static bool is_file(const char *p)
{
	struct stat s;
	return stat(p, &s) == 0 && S_ISREG(s.st_mode);
}

static bool ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && !strcmp(s + a - b, suf);
}

/* eos_token_id of dir/name (an id or a list of ids), added to g->eos once each. */
static void add_eos(struct tern_generator *g, const char *name)
{
	char *path = tern_path_join(g->model_dir, name);
	json_t *j = path ? json_load_file(path, 0, NULL) : NULL;
	free(path);
	json_t *e = j ? json_object_get(j, "eos_token_id") : NULL;
	size_t n = json_is_array(e) ? json_array_size(e) : e ? 1 : 0;
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_is_array(e) ? json_array_get(e, i) : e;
		if (!json_is_integer(v))
			continue;
		int32_t id = (int32_t)json_integer_value(v);
		bool have = false;
		for (size_t k = 0; k < g->n_eos; k++)
			have |= g->eos[k] == id;
		if (!have && g->n_eos < MAX_EOS)
			g->eos[g->n_eos++] = id;
	}
	json_decref(j);
}

/* The LoRA settings of a model directory's adapter into cfg (r, alpha, rsLoRA, target modules,
 * modules_to_save) from dir/adapter_config.json. */
/* Sets config key `key` to the JSON list of strings arr ("key=[a, b]"). */
static enum tern_status set_list(struct tern_config *cfg, const char *key, const json_t *arr)
{
	char buf[512];
	size_t len = (size_t)snprintf(buf, sizeof buf, "%s=[", key);
	for (size_t i = 0; i < json_array_size(arr) && len < sizeof buf; i++) {
		const char *v = json_string_value(json_array_get(arr, i));
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", v ? v : "?");
	}
	if (len < sizeof buf)
		snprintf(buf + len, sizeof buf - len, "]");
	return tern_config_set(cfg, buf);
}

static enum tern_status adapter_settings(struct tern_config *cfg, const char *dir)
{
	char *path = tern_path_join(dir, "adapter_config.json");
	if (!path)
		return TERN_E_NOMEM;
	json_error_t je;
	json_t *j = json_load_file(path, 0, &je);
	enum tern_status st = TERN_OK;
	if (!j) {
		st = tern_fail(TERN_E_INVALID, "--adapter %s: %s: %s (give a PEFT adapter directory)", dir,
			       path, je.text);
		goto out;
	}
	json_t *r = json_object_get(j, "r"), *a = json_object_get(j, "lora_alpha");
	json_t *tm = json_object_get(j, "target_modules"), *ms = json_object_get(j, "modules_to_save");
	json_t *tp = json_object_get(j, "target_parameters"); /* LoRA on MoE experts */
	if (!json_is_integer(r) || json_integer_value(r) < 1 || !json_is_number(a) || !json_is_array(tm)) {
		st = tern_fail(TERN_E_INVALID,
			       "%s: needs r (an integer >= 1), lora_alpha and a list target_modules", path);
		goto out;
	}
	char set[4][128];
	snprintf(set[0], sizeof set[0], "lora_r=%lld", (long long)json_integer_value(r));
	snprintf(set[1], sizeof set[1], "lora_alpha=%.17g", json_number_value(a));
	snprintf(set[2], sizeof set[2], "use_rslora=%s",
		 json_is_true(json_object_get(j, "use_rslora")) ? "true" : "false");
	snprintf(set[3], sizeof set[3], "lora_target_linear=false");
	for (int i = 0; i < 4 && st == TERN_OK; i++)
		st = tern_config_set(cfg, set[i]);
	if (st == TERN_OK)
		st = set_list(cfg, "lora_target_modules", tm);
	if (st == TERN_OK && json_is_array(ms) && json_array_size(ms))
		st = set_list(cfg, "lora_modules_to_save", ms);
	if (st == TERN_OK && json_is_array(tp) && json_array_size(tp))
		st = set_list(cfg, "lora_target_parameters", tp);
	if (st != TERN_OK)
		st = tern_fail(st, "%s: %s", path, tern_error());
out:
	json_decref(j);
	free(path);
	return st;
}

enum tern_status tern_generator_open(const struct tern_generate_opts *o, struct tern_generator **out)
{
	*out = NULL;
	if (!o || !o->model || !*o->model)
		return tern_fail(TERN_E_INVALID, "generate: no model (give a model directory or a config)");
	struct tern_generator *g = tern_calloc(1, sizeof *g);
	if (!g)
		return TERN_E_NOMEM;
	enum tern_status st;
	bool config = !is_dir(o->model) && (ends_with(o->model, ".yaml") || ends_with(o->model, ".yml"));
	char *adir = NULL;
	bool lora = false;
	if (config) {
		if ((st = tern_config_load(&g->cfg, o->model)))
			goto out;
	} else {
		if ((st = tern_config_defaults(&g->cfg)))
			goto out;
		if (!(g->cfg->base_model = strdup(o->model))) {
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
			goto out;
		}
		g->cfg->sequence_len = 256; /* the plan counts activations; generation needs fewer */
		g->cfg->compute_dtype = TERN_COMPUTE_F32;
		if (o->format && (st = tern_base_format_parse(o->format, &g->cfg->base_format)))
			goto out;
	}
	struct tern_config *c = g->cfg;
	if ((st = tern_hub_resolve(c->base_model, c->revision_of_model, TERN_HUB_ALL, &g->model_dir, NULL)) ||
	    (st = tern_model_config_load(g->model_dir, &g->mc)) ||
	    (st = tern_model_config_check(&g->mc, g->model_dir)))
		goto out;

	/* the adapter */
	if (!o->no_adapter) {
		if (o->adapter) {
			adir = strdup(o->adapter);
		} else if (config && c->output_dir) {
			char *p = tern_path_join(c->output_dir, "adapter");
			if (p && is_file(p) == false && is_dir(p))
				adir = p;
			else
				free(p);
			if (!adir && c->lora_model_dir)
				adir = strdup(c->lora_model_dir);
		}
	}
	if (adir) {
		if (!is_dir(adir)) {
			st = tern_fail(TERN_E_INVALID,
				       "adapter %s: no such directory (give the adapter a run wrote, "
				       "e.g. <output_dir>/adapter)",
				       adir);
			goto out;
		}
		if (!config && (st = adapter_settings(c, adir)))
			goto out;
		lora = true;
	}
	int64_t io[TERN_MOD_COUNT][2];
	tern_net_module_shapes(&g->mc, io);
	unsigned mods = lora ? tern_plan_modules(c) : 1u << TERN_MOD_Q;
	unsigned full = lora ? tern_plan_full(c) | tern_adapter_full(adir) : 0;
	int64_t R = lora ? c->lora_r : 1;
	struct tern_adapter_meta am = {0};
	unsigned experts = lora ? tern_plan_experts(c) : 0;
	if ((st = tern_lora_set_alloc(&g->lora, (int)g->mc.L, R, mods, io, false)) ||
	    (full && (st = tern_lora_set_add_full(g->lora, full, g->mc.V, g->mc.D, false))))
		goto out;
	if (experts && g->mc.E > 0) { /* the experts' LoRA of a mixture of experts */
		uint8_t *sparse = tern_malloc((size_t)g->mc.L);
		if (!sparse) {
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
			goto out;
		}
		for (int64_t l = 0; l < g->mc.L; l++)
			sparse[l] = tern_model_layer_moe(&g->mc, l);
		st = tern_lora_set_add_experts(g->lora, experts, g->mc.E, g->mc.D, g->mc.Fe, sparse, false);
		free(sparse);
		if (st)
			goto out;
	}
	if (lora && (st = tern_adapter_read(adir, g->lora, &am))) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		st = tern_fail(st, "adapter %s does not fit base model %s: %s", adir, c->base_model, msg);
		goto out;
	}

	/* backend, precision, plan, model, net */
	const char *bname = o->backend ? o->backend : tern_backend_kind_name(c->backend);
	if ((st = tern_backend_create(bname, o->device >= 0 ? o->device : (int)c->device, &g->be)))
		goto out;
	enum tern_dtype prec = c->compute_dtype == TERN_COMPUTE_F16    ? TERN_F16
			       : c->compute_dtype == TERN_COMPUTE_BF16 ? TERN_BF16
			       : c->compute_dtype == TERN_COMPUTE_AUTO ? tern_backend_auto_prec(g->be)
								       : TERN_F32;
	if (!tern_backend_supports_prec(g->be, TERN_OP_MATMUL, prec)) {
		st = tern_fail(TERN_E_UNSUPPORTED, "compute_dtype %s is not supported by backend %s",
			       tern_dtype_name(prec), g->be->name);
		goto out;
	}
	int64_t dm = o->device_memory >= 0 ? o->device_memory : c->device_memory;
	int64_t hm = o->host_memory >= 0 ? o->host_memory : c->host_memory;
	uint64_t dev = (uint64_t)dm, host = (uint64_t)hm;
	if (!dev) {
		uint64_t budget = 0, usage = 0;
		if (g->be->vt->memory_info && g->be->vt->memory_info(g->be, &budget, &usage) == TERN_OK)
			dev = tern_plan_device_auto(budget);
		else
			dev = UINT64_MAX / 4;
	}
	if (!host && tern_plan_host_auto(&host) != TERN_OK)
		host = UINT64_MAX / 4;
	g->plan.prec = (int)prec;
	if ((st = tern_plan_make(&g->mc, c, dev, host, &g->plan)))
		goto out;
	enum tern_base_format f = tern_plan_format(&g->mc, c);
	char pack[4200];
	struct tern_model_opts mo = {.format = f, .blocksize = 64};
	if (config) { /* the training run's pack file, when it has one */
		if (c->offload_dir)
			snprintf(pack, sizeof pack, "%s/base-%s.tpack", c->offload_dir,
				 tern_base_format_name(f));
		else
			snprintf(pack, sizeof pack, "%s/offload/base-%s.tpack", c->output_dir,
				 tern_base_format_name(f));
		/* made when missing, as the trainer does, so the next run reuses the pack */
		char *slash = strrchr(pack, '/');
		*slash = '\0';
		if (!c->offload_dir && c->output_dir)
			mkdir(c->output_dir, 0777);
		mkdir(pack, 0777);
		bool have = is_dir(pack);
		*slash = '/';
		if (have)
			mo.pack_path = pack;
	}
	if ((st = tern_model_open(g->model_dir, &mo, &g->model)))
		goto out;
	bool streams = g->plan.n_layers[TERN_PLAN_DEVICE] < g->mc.L;
	double r = (double)R;
	struct tern_net_opts no = {
		.R = R,
		.scale = lora ? (float)(am.rslora ? am.alpha / sqrt(r) : am.alpha / r) : 1.0f,
		.modules = mods,
		.full = full,
		.experts = g->mc.E > 0 ? experts : 0,
		.T = 1,
		.tiers = streams ? g->plan.tier : NULL,
		.slots = streams ? g->plan.n_slots : 0,
		.prec = prec,
	};
	if ((st = tern_net_create(g->be, g->model, &no, &g->net)) ||
	    (lora && (st = tern_net_lora_upload(g->net, g->lora))) ||
	    (st = tern_gen_create(g->net, g->model, lora, &g->gen)))
		goto out;

	/* tokenizer, chat template, eos */
	char *tj = tern_path_join(g->model_dir, "tokenizer.json");
	bool have_tok = tj && is_file(tj);
	free(tj);
	if (have_tok && (st = tern_tokenizer_load_dir(&g->tok, g->model_dir)))
		goto out;
	char *tc = tern_path_join(g->model_dir, "tokenizer_config.json");
	if (tc && is_file(tc) && tern_chat_from_tokenizer_config(&g->chat, tc) != TERN_OK)
		snprintf(g->chat_err, sizeof g->chat_err, "%s", tern_error());
	else if (!g->chat)
		snprintf(g->chat_err, sizeof g->chat_err,
			 "%s has no tokenizer_config.json with a chat_template", g->model_dir);
	free(tc);
	if (g->chat && g->tok) {
		int32_t b = tern_tokenizer_bos(g->tok), e = tern_tokenizer_eos(g->tok);
		tern_chat_set_tokens(g->chat, b >= 0 ? tern_tokenizer_token(g->tok, b) : NULL,
				     e >= 0 ? tern_tokenizer_token(g->tok, e) : NULL, NULL);
	}
	add_eos(g, "generation_config.json");
	add_eos(g, "config.json");
	snprintf(g->desc, sizeof g->desc, "%s (%s%s)%s%s on %s (%s)", c->base_model, tern_base_format_name(f),
		 streams ? ", streamed" : "", lora ? " + adapter " : "", lora ? adir : "", g->be->name,
		 g->be->device_name);
	*out = g;
	g = NULL;
out:
	free(adir);
	tern_generator_free(g);
	return st;
}

void tern_generator_free(struct tern_generator *g)
{
	if (!g)
		return;
	tern_gen_free(g->gen);
	tern_net_free(g->net);
	if (g->be)
		tern_backend_free(g->be);
	tern_model_free(g->model);
	tern_lora_set_free(g->lora);
	tern_tokenizer_free(g->tok);
	tern_chat_free(g->chat);
	tern_config_free(g->cfg);
	free(g->model_dir);
	free(g);
}

const char *tern_generator_describe(const struct tern_generator *g) { return g->desc; }

size_t tern_generator_eos(const struct tern_generator *g, const int32_t **ids)
{
	*ids = g->eos;
	return g->n_eos;
}

static enum tern_status need_tok(const struct tern_generator *g)
{
	if (g->tok)
		return TERN_OK;
	return tern_fail(
		TERN_E_INVALID,
		"%s has no tokenizer.json: a text prompt needs one (give the prompt as ids: --ids 1,2,3)",
		g->model_dir);
}

static enum tern_status encode_messages(const struct tern_generator *g, json_t *msgs, int32_t **ids,
					size_t *n)
{
	enum tern_status st = need_tok(g);
	if (st)
		return st;
	if (!g->chat)
		return tern_fail(TERN_E_INVALID, "no chat template: %s (drop --chat to give a raw prompt)",
				 g->chat_err);
	struct tern_chat_text t = {0};
	if ((st = tern_chat_render(g->chat, msgs, true, false, &t)))
		return st;
	st = tern_tokenizer_encode(g->tok, t.text, t.len, false, ids, n);
	tern_chat_text_free(&t);
	return st;
}

enum tern_status tern_generator_encode(const struct tern_generator *g, const char *text, bool chat,
				       int32_t **ids, size_t *n)
{
	enum tern_status st = need_tok(g);
	if (st)
		return st;
	if (!chat)
		return tern_tokenizer_encode(g->tok, text, strlen(text), true, ids, n);
	json_t *m = json_pack("[{s:s, s:s}]", "role", "user", "content", text);
	if (!m)
		return tern_fail(TERN_E_INVALID, "generate: the prompt is not valid UTF-8");
	st = encode_messages(g, m, ids, n);
	json_decref(m);
	return st;
}

enum tern_status tern_generator_encode_chat(const struct tern_generator *g, const char *messages_json,
					    int32_t **ids, size_t *n)
{
	json_error_t je;
	json_t *m = json_loads(messages_json, 0, &je);
	if (!json_is_array(m)) {
		json_decref(m);
		return tern_fail(TERN_E_INVALID,
				 "generate: messages are not a JSON array of {role, content}");
	}
	enum tern_status st = encode_messages(g, m, ids, n);
	json_decref(m);
	return st;
}

void tern_generation_free(struct tern_generation *r)
{
	free(r->ids);
	free(r->text);
	free(r->profile);
	memset(r, 0, sizeof *r);
}

/* ---- streaming text with stop strings ---- */

struct stream {
	struct tern_generator *g;
	const struct tern_generate_params *p;
	void (*on_text)(void *user, const char *text, size_t len);
	void *user;
	int32_t *ids;
	size_t n, cap, emitted;
	char *text;
	size_t len;
	bool stopped;
	enum tern_status st;
};

/* Bytes at the end of text that may still grow into a stop string or a UTF-8 character. */
static size_t held(const struct stream *s)
{
	size_t h = 0;
	for (int i = 0; i < s->p->n_stop; i++) {
		const char *x = s->p->stop[i];
		size_t xl = strlen(x);
		for (size_t k = xl > 1 ? xl - 1 : 0; k > h; k--)
			if (k <= s->len && !memcmp(s->text + s->len - k, x, k)) {
				h = k;
				break;
			}
	}
	/* an incomplete character decodes to U+FFFD (EF BF BD) at the end */
	if (s->len >= 3 && !memcmp(s->text + s->len - 3, "\xef\xbf\xbd", 3) && h < 3)
		h = 3;
	return h;
}

static bool on_token(void *user, int32_t id)
{
	struct stream *s = user;
	if (s->n == s->cap) {
		size_t cap = s->cap ? 2 * s->cap : 64;
		int32_t *ni = realloc(s->ids, cap * sizeof *ni);
		if (!ni) {
			s->st = tern_fail(TERN_E_NOMEM, "out of host memory");
			return false;
		}
		s->ids = ni;
		s->cap = cap;
	}
	s->ids[s->n++] = id;
	if (!s->g->tok)
		return true;
	free(s->text);
	s->text = NULL;
	if ((s->st = tern_tokenizer_decode(s->g->tok, s->ids, s->n, true, &s->text, &s->len)))
		return false;
	size_t cut = s->len;
	for (int i = 0; i < s->p->n_stop; i++) {
		const char *f = *s->p->stop[i] ? strstr(s->text, s->p->stop[i]) : NULL;
		if (f && (size_t)(f - s->text) < cut)
			cut = (size_t)(f - s->text);
	}
	if (cut < s->len) {
		s->len = cut;
		s->text[cut] = '\0';
		s->stopped = true;
	}
	size_t upto = s->stopped ? s->len : s->len - held(s);
	if (upto > s->emitted && s->on_text) {
		s->on_text(s->user, s->text + s->emitted, upto - s->emitted);
		s->emitted = upto;
	}
	return !s->stopped;
}

static void profile_text(const struct tern_profile *p, double steps, struct tern_generation *out)
{
	size_t cap = 8192;
	char *b = malloc(cap);
	if (!b)
		return;
	tern_profile_ops_line(p, steps, b, cap);
	double ns = 0;
	for (int k = 0; k < TERN_PROF_KIND_COUNT; k++)
		ns += p->ns[k];
	out->profile = b;
	out->profile_ms = ns * 1e-6 / steps;
}

enum tern_status tern_generator_run(struct tern_generator *g, const int32_t *ids, size_t n,
				    const struct tern_generate_params *p,
				    void (*on_text)(void *user, const char *text, size_t len), void *user,
				    struct tern_generation *out)
{
	memset(out, 0, sizeof *out);
	struct stream s = {.g = g, .p = p, .on_text = on_text, .user = user};
	struct tern_gen_request r = {
		.prompt = ids,
		.n_prompt = (int64_t)n,
		.max_new = p->max_new_tokens,
		.eos = g->eos,
		.n_eos = (int)g->n_eos,
		.sample = {p->temperature, p->top_k, p->top_p, p->min_p, p->repetition_penalty, p->seed},
		.on_token = on_token,
		.user = &s,
		.profile = tern_profile_env(), /* TERN_PROFILE=1: the decode steps' ops timed */
	};
	int32_t *gen = NULL;
	int64_t ng = 0;
	enum tern_status st = tern_gen_run(g->gen, &r, &gen, &ng);
	if (st == TERN_OK && s.st)
		st = s.st;
	if (st == TERN_OK) {
		bool eos = false;
		for (size_t e = 0; ng > 0 && e < g->n_eos; e++)
			eos |= gen[ng - 1] == g->eos[e];
		out->finish = s.stopped ? "stop" : eos ? "eos" : "length";
		if (s.text && s.len > s.emitted && on_text)
			on_text(user, s.text + s.emitted, s.len - s.emitted);
		out->ids = gen;
		out->n = (size_t)ng;
		out->prefill_s = r.prefill_s;
		out->decode_s = r.decode_s;
		if (r.decode_steps > 0) {
			const struct tern_backend_counts *c = &r.decode_counts;
			double k = 1.0 / (double)r.decode_steps;
			out->per_step.ops = (double)c->ops * k;
			out->per_step.commands = (double)c->commands * k;
			out->per_step.barriers = (double)c->barriers * k;
			out->per_step.submits = (double)c->submits * k;
			out->per_step.waits = (double)c->waits * k;
			out->per_step.uploads = (double)c->uploads * k;
			out->per_step.downloads = (double)c->downloads * k;
			if (r.profiled) /* optional: without host memory for the line, no line */
				profile_text(&r.decode_profile, (double)r.decode_steps, out);
		}
		out->text = s.text;
		if (!out->text && g->tok)
			out->text = strdup("");
		s.text = NULL;
		gen = NULL;
	}
	free(gen);
	free(s.ids);
	free(s.text);
	return st;
}
