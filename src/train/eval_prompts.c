/* eval_prompts during training (eval_prompts.h). */
#define _POSIX_C_SOURCE 200809L /* fileno, fsync */
#include "train/eval_prompts.h"

#include "data/chat.h"
#include "train/gen.h"
#include "train/outdir.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_EOS 16

struct tern_eval_prompts {
	const struct tern_config *c;
	const struct tern_tokenizer *tok;
	struct tern_gen *gen;
	int n;
	int32_t **ids;
	size_t *len;
	int32_t eos[MAX_EOS];
	int n_eos;
};

void tern_eval_prompts_free(struct tern_eval_prompts *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->n && e->ids; i++)
		free(e->ids[i]);
	free(e->ids);
	free(e->len);
	tern_gen_free(e->gen);
	free(e);
}

/* eos_token_id (an id or a list) of dir/name into e->eos, once each. */
static void read_eos(struct tern_eval_prompts *e, const char *dir, const char *name)
{
	char *path = tern_path_join(dir, name);
	json_t *j = path ? json_load_file(path, 0, NULL) : NULL;
	free(path);
	json_t *v = j ? json_object_get(j, "eos_token_id") : NULL;
	size_t n = json_is_array(v) ? json_array_size(v) : v ? 1 : 0;
	for (size_t i = 0; i < n; i++) {
		json_t *x = json_is_array(v) ? json_array_get(v, i) : v;
		bool have = !json_is_integer(x);
		for (int k = 0; k < e->n_eos && !have; k++)
			have = e->eos[k] == (int32_t)json_integer_value(x);
		if (!have && e->n_eos < MAX_EOS)
			e->eos[e->n_eos++] = (int32_t)json_integer_value(x);
	}
	json_decref(j);
}

static enum tern_status load_chat(const struct tern_config *c, const char *model_dir,
				  const struct tern_tokenizer *tok, struct tern_chat **out)
{
	enum tern_status st;
	if (c->chat_template_jinja) {
		st = tern_chat_from_config_value(out, c->chat_template_jinja);
	} else {
		char *p = tern_path_join(model_dir, "tokenizer_config.json");
		if (!p)
			return TERN_E_NOMEM;
		st = tern_chat_from_tokenizer_config(out, p);
		free(p);
	}
	if (st != TERN_OK)
		return tern_fail(st, "%s: eval_prompts: a message list needs a chat template: %s", c->file,
				 tern_error());
	int32_t b = tern_tokenizer_bos(tok), x = tern_tokenizer_eos(tok);
	tern_chat_set_tokens(*out, b >= 0 ? tern_tokenizer_token(tok, b) : NULL,
			     x >= 0 ? tern_tokenizer_token(tok, x) : NULL, NULL);
	return TERN_OK;
}

enum tern_status tern_eval_prompts_open(const struct tern_config *c, const char *model_dir,
					const struct tern_tokenizer *tok, struct tern_net *net,
					const struct tern_model *m, struct tern_eval_prompts **out)
{
	*out = NULL;
	if (!c->n_eval_prompts)
		return TERN_OK;
	if (!tok)
		return tern_fail(TERN_E_INVALID,
				 "%s: eval_prompts: %s has no tokenizer.json to encode the prompts with",
				 c->file, model_dir);
	struct tern_eval_prompts *e = tern_calloc(1, sizeof *e);
	if (!e)
		return TERN_E_NOMEM;
	e->c = c;
	e->tok = tok;
	e->n = c->n_eval_prompts;
	e->ids = tern_calloc((size_t)e->n, sizeof *e->ids);
	e->len = tern_calloc((size_t)e->n, sizeof *e->len);
	struct tern_chat *chat = NULL;
	enum tern_status st = e->ids && e->len ? TERN_OK : TERN_E_NOMEM;
	for (int i = 0; i < e->n && st == TERN_OK; i++) {
		json_t *j = json_loads(c->eval_prompts[i], JSON_DECODE_ANY, NULL);
		if (json_is_string(j)) {
			st = tern_tokenizer_encode(tok, json_string_value(j), json_string_length(j), true,
						   &e->ids[i], &e->len[i]);
		} else if (json_is_array(j)) {
			struct tern_chat_text t = {0};
			if ((chat || (st = load_chat(c, model_dir, tok, &chat)) == TERN_OK) &&
			    (st = tern_chat_render(chat, j, true, false, &t)) == TERN_OK)
				st = tern_tokenizer_encode(tok, t.text, t.len, false, &e->ids[i], &e->len[i]);
			tern_chat_text_free(&t);
		} else {
			st = tern_fail(TERN_E_INVALID, "%s: eval_prompts[%d] is not a prompt", c->file, i);
		}
		if (st == TERN_OK && e->len[i] == 0)
			st = tern_fail(TERN_E_INVALID, "%s: eval_prompts[%d] encodes to no tokens", c->file,
				       i);
		json_decref(j);
	}
	tern_chat_free(chat);
	read_eos(e, model_dir, "generation_config.json");
	read_eos(e, model_dir, "config.json");
	if (st == TERN_OK)
		st = tern_gen_create(net, m, true, &e->gen);
	if (st != TERN_OK) {
		tern_eval_prompts_free(e);
		return st;
	}
	*out = e;
	return TERN_OK;
}

enum tern_status tern_eval_prompts_run(struct tern_eval_prompts *e, int64_t step, FILE *out)
{
	if (!e)
		return TERN_OK;
	char dir[4200], path[4300];
	snprintf(dir, sizeof dir, "%s/eval_prompts", e->c->output_dir);
	if (mkdir(dir, 0777) != 0 && errno != EEXIST)
		return tern_fail(TERN_E_IO, "%s: %s", dir, strerror(errno));
	snprintf(path, sizeof path, "%s/step_%lld.jsonl", dir, (long long)step);
	char *tmp = tern_tmp_name(path);
	if (!tmp)
		return TERN_E_NOMEM;
	FILE *f = fopen(tmp, "w");
	enum tern_status st = f ? TERN_OK : tern_fail(TERN_E_IO, "%s: %s", tmp, strerror(errno));
	for (int i = 0; i < e->n && st == TERN_OK; i++) {
		struct tern_gen_request r = {.prompt = e->ids[i],
					     .n_prompt = (int64_t)e->len[i],
					     .max_new = e->c->eval_max_new_tokens,
					     .eos = e->eos,
					     .n_eos = e->n_eos,
					     .sample = {.top_p = 1, .repetition_penalty = 1}};
		int32_t *ids = NULL;
		int64_t n = 0;
		char *text = NULL;
		st = tern_gen_run(e->gen, &r, &ids, &n);
		if (st == TERN_OK)
			st = tern_tokenizer_decode(e->tok, ids, (size_t)n, true, &text, NULL);
		if (st == TERN_OK) {
			fprintf(out, "eval prompt %d (step %lld): %s\n", i, (long long)step, text);
			json_t *o = json_object(), *a = json_array();
			for (int64_t k = 0; k < n; k++)
				json_array_append_new(a, json_integer(ids[k]));
			json_object_set_new(o, "step", json_integer(step));
			json_object_set_new(o, "prompt",
					    json_loads(e->c->eval_prompts[i], JSON_DECODE_ANY, NULL));
			json_t *js = json_string(text);
			json_object_set_new(o, "completion", js ? js : json_null());
			json_object_set_new(o, "ids", a);
			char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
			if (!s || fprintf(f, "%s\n", s) < 0)
				st = tern_fail(TERN_E_IO, "%s: write failed", tmp);
			free(s);
			json_decref(o);
		}
		free(text);
		free(ids);
	}
	if (f) {
		if (st == TERN_OK && (fflush(f) != 0 || fsync(fileno(f)) != 0))
			st = tern_fail(TERN_E_IO, "%s: %s", tmp, strerror(errno));
		if (fclose(f) != 0 && st == TERN_OK)
			st = tern_fail(TERN_E_IO, "%s: %s", tmp, strerror(errno));
		if (st == TERN_OK && rename(tmp, path) != 0)
			st = tern_fail(TERN_E_IO, "%s: %s", path, strerror(errno));
		if (st != TERN_OK)
			remove(tmp);
	}
	fflush(out);
	free(tmp);
	return st;
}
