/* JSONL datasets -> samples (templates, masks) -> rows. Contract in data.h. */
#define _POSIX_C_SOURCE 200809L /* getline */
#include "data/data.h"

#include "data/chat.h"

#include <errno.h>
#include <jansson.h>
#include <sys/stat.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IGNORE (-100)

/* One tokenized sample: ids and transformers-style labels (IGNORE = not trained). */
struct sample {
	int32_t *ids, *labels;
	int64_t n, cap;
};

struct samples {
	struct sample *v;
	int64_t n, cap;
};

struct reader {
	const struct tern_data_opts *o;
	const struct tern_tokenizer *tok; /* NULL: pretokenized datasets only */
	enum tern_chat_template tmpl;
	int32_t eos;
	int32_t *prefix; /* what the tokenizer adds in front of a text (BOS) */
	size_t n_prefix;
	const char *file;
	int64_t line;
	const struct tern_dataset_cfg *ds; /* the dataset being read (field names) */
	struct tern_chat *chat;            /* Jinja templates (tokenizer_default, jinja, qwen3, gemma) */
};

/* A sample rendered as one text made of spans, each trained or not. The text is tokenized whole,
 * so the ids are those HF gives for the rendered string (apply_chat_template(tokenize=True) for
 * chats); a span boundary then falls after the tokens that the text before it encodes to (the
 * longest common prefix), so a token that straddles a boundary belongs to the span it ends in. */
struct render {
	char *text;
	size_t len, cap;
	size_t *at; /* span i starts at byte at[i]; adjacent spans differ in trained */
	bool *trained;
	size_t n, ncap;
	bool nomem;
};

static void render_free(struct render *rd)
{
	free(rd->text);
	free(rd->at);
	free(rd->trained);
	memset(rd, 0, sizeof *rd);
}

static void render_add(struct render *rd, const char *p, size_t n, bool trained)
{
	if (!n || rd->nomem)
		return;
	if (rd->len + n + 1 > rd->cap) {
		size_t nc = rd->cap ? rd->cap : 256;
		while (nc < rd->len + n + 1)
			nc *= 2;
		char *t = realloc(rd->text, nc);
		if (!t) {
			rd->nomem = true;
			return;
		}
		rd->text = t;
		rd->cap = nc;
	}
	if (!rd->n || rd->trained[rd->n - 1] != trained) {
		if (rd->n == rd->ncap) {
			size_t nc = rd->ncap ? rd->ncap * 2 : 16;
			size_t *a = realloc(rd->at, nc * sizeof *a);
			if (a)
				rd->at = a;
			bool *b = a ? realloc(rd->trained, nc * sizeof *b) : NULL;
			if (!b) {
				rd->nomem = true;
				return;
			}
			rd->trained = b;
			rd->ncap = nc;
		}
		rd->at[rd->n] = rd->len;
		rd->trained[rd->n++] = trained;
	}
	memcpy(rd->text + rd->len, p, n);
	rd->len += n;
	rd->text[rd->len] = 0;
}

static void render_str(struct render *rd, const char *s, bool trained)
{
	render_add(rd, s, strlen(s), trained);
}

static void sample_free(struct sample *s)
{
	free(s->ids);
	free(s->labels);
	memset(s, 0, sizeof *s);
}

static enum tern_status push_id(struct sample *s, int32_t id, bool trained)
{
	if (s->n == s->cap) {
		int64_t nc = s->cap ? s->cap * 2 : 256;
		int32_t *a = realloc(s->ids, (size_t)nc * sizeof *a);
		if (!a)
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		s->ids = a;
		int32_t *b = realloc(s->labels, (size_t)nc * sizeof *b);
		if (!b)
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		s->labels = b;
		s->cap = nc;
	}
	s->ids[s->n] = id;
	s->labels[s->n] = trained ? id : IGNORE;
	s->n++;
	return TERN_OK;
}

static enum tern_status encode(struct reader *r, const char *text, size_t len, int32_t **ids, size_t *n)
{
	*ids = NULL;
	*n = 0;
	enum tern_status st = tern_tokenizer_encode(r->tok, text, len, false, ids, n);
	if (st) {
		char msg[600];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st, "%s:%lld: %s", r->file, (long long)r->line, msg);
	}
	return TERN_OK;
}

static size_t common_prefix(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
	size_t k = 0;
	while (k < na && k < nb && a[k] == b[k])
		k++;
	return k;
}

/* Tokenizes a rendered sample onto s: the tokenizer's prefix (BOS) first when bos, then the text
 * as one string, labelled span by span. The tokens before boundary b are those that text[0:b]
 * encodes to, as far as they agree with the whole. To stay linear in the number of turns,
 * text[c:b] is encoded instead from an earlier boundary c where the split was clean (text[0:c]
 * encodes to a prefix of the whole); when its tokens continue the whole exactly up to b, b is
 * clean too. A c from which that failed (a normalizer that prepends "▁" to every text, say) is not
 * tried again, and c = 0 is the plain definition. */
static enum tern_status push_render(struct reader *r, struct render *rd, bool bos, struct sample *s)
{
	if (rd->nomem)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	enum tern_status st = TERN_OK;
	for (size_t i = 0; bos && i < r->n_prefix && !st; i++)
		st = push_id(s, r->prefix[i], rd->n ? rd->trained[0] : true);
	if (st || !rd->n)
		return st;
	int32_t *full = NULL, *left = NULL;
	size_t nfull = 0, nleft = 0, done = 0, nclean = 1;
	/* clean boundaries: byte offset, tokens before it, and whether encoding from it failed */
	size_t *cb = tern_calloc(rd->n + 1, sizeof *cb), *ck = tern_calloc(rd->n + 1, sizeof *ck);
	bool *bad = tern_calloc(rd->n + 1, sizeof *bad);
	if (!cb || !ck || !bad)
		st = TERN_E_NOMEM;
	if (!st)
		st = encode(r, rd->text, rd->len, &full, &nfull);
	for (size_t i = 0; i < rd->n && !st; i++) {
		size_t k = nfull;
		if (i + 1 < rd->n) {
			size_t b = rd->at[i + 1];
			bool clean = false;
			for (size_t j = nclean - 1;; j--) {
				if (j > 0 && bad[j])
					continue;
				if ((st = encode(r, rd->text + cb[j], b - cb[j], &left, &nleft)))
					break;
				k = ck[j] + common_prefix(left, nleft, full + ck[j], nfull - ck[j]);
				clean = k == ck[j] + nleft;
				free(left);
				left = NULL;
				if (clean || j == 0)
					break;
				bad[j] = true;
			}
			if (st)
				break;
			if (clean) {
				cb[nclean] = b;
				ck[nclean++] = k;
			}
			if (k < done)
				k = done;
		}
		for (; done < k && !st; done++)
			st = push_id(s, full[done], rd->trained[i]);
	}
	free(full);
	free(cb);
	free(ck);
	free(bad);
	return st;
}

static enum tern_status need_eos(struct reader *r)
{
	if (r->eos >= 0)
		return TERN_OK;
	return tern_fail(TERN_E_INVALID,
			 "%s:%lld: the tokenizer has no EOS token; set special_tokens.eos_token", r->file,
			 (long long)r->line);
}

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "a list";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	default: return "null";
	}
}

/* field of obj as a string; required fields fail with file:line */
static enum tern_status get_str(struct reader *r, json_t *obj, const char *key, bool required,
				const char **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (!required)
			return TERN_OK;
		return tern_fail(TERN_E_FORMAT, "%s:%lld: missing field \"%s\"", r->file, (long long)r->line,
				 key);
	}
	if (!json_is_string(v))
		return tern_fail(TERN_E_FORMAT, "%s:%lld: \"%s\" is %s, not a string", r->file,
				 (long long)r->line, key, json_kind(v));
	*out = json_string_value(v);
	return TERN_OK;
}

static const char alpaca_with_input[] =
	"Below is an instruction that describes a task, paired with an input that provides further context. "
	"Write a response that appropriately completes the request.\n\n### Instruction:\n";
static const char alpaca_no_input[] = "Below is an instruction that describes a task. Write a response that "
				      "appropriately completes the request.\n\n### Instruction:\n";

static enum tern_status read_alpaca(struct reader *r, json_t *obj, struct sample *s)
{
	const char *ins, *inp, *outp;
	enum tern_status st;
	if ((st = get_str(r, obj, "instruction", true, &ins)) ||
	    (st = get_str(r, obj, "input", false, &inp)) || (st = get_str(r, obj, "output", true, &outp)) ||
	    (st = need_eos(r)))
		return st;
	bool p = r->o->train_on_inputs;
	struct render rd = {0};
	if (inp && *inp) {
		render_str(&rd, alpaca_with_input, p);
		render_str(&rd, ins, p);
		render_str(&rd, "\n\n### Input:\n", p);
		render_str(&rd, inp, p);
	} else {
		render_str(&rd, alpaca_no_input, p);
		render_str(&rd, ins, p);
	}
	render_str(&rd, "\n\n### Response:\n", p);
	render_str(&rd, outp, true);
	st = push_render(r, &rd, true, s);
	render_free(&rd);
	return st ? st : push_id(s, r->eos, true);
}

static enum tern_status read_completion(struct reader *r, json_t *obj, struct sample *s)
{
	const char *text;
	enum tern_status st;
	const char *key = r->ds && r->ds->field ? r->ds->field : "text"; /* datasets[].field */
	if ((st = get_str(r, obj, key, true, &text)) || (st = need_eos(r)))
		return st;
	struct render rd = {0};
	render_str(&rd, text, true);
	st = push_render(r, &rd, true, s);
	render_free(&rd);
	return st ? st : push_id(s, r->eos, true);
}

static enum tern_status get_int_array(struct reader *r, json_t *obj, const char *key, bool required,
				      json_t **out)
{
	json_t *v = json_object_get(obj, key);
	*out = NULL;
	if (!v || json_is_null(v)) {
		if (!required)
			return TERN_OK;
		return tern_fail(TERN_E_FORMAT, "%s:%lld: missing field \"%s\"", r->file, (long long)r->line,
				 key);
	}
	if (!json_is_array(v))
		return tern_fail(TERN_E_FORMAT, "%s:%lld: \"%s\" is %s, not a list of integers", r->file,
				 (long long)r->line, key, json_kind(v));
	size_t i;
	json_t *e;
	json_array_foreach(v, i, e)
	{
		if (!json_is_integer(e))
			return tern_fail(TERN_E_FORMAT, "%s:%lld: %s[%zu] is %s, not an integer", r->file,
					 (long long)r->line, key, i, json_kind(e));
	}
	*out = v;
	return TERN_OK;
}

static enum tern_status read_pretokenized(struct reader *r, json_t *obj, struct sample *s)
{
	json_t *ids, *labels;
	enum tern_status st;
	if ((st = get_int_array(r, obj, "input_ids", true, &ids)) ||
	    (st = get_int_array(r, obj, "labels", false, &labels)))
		return st;
	size_t n = json_array_size(ids);
	if (labels && json_array_size(labels) != n)
		return tern_fail(
			TERN_E_FORMAT,
			"%s:%lld: \"labels\" has %zu entries and \"input_ids\" %zu; they must align one to one",
			r->file, (long long)r->line, json_array_size(labels), n);
	/* without a tokenizer the model's vocabulary bounds the ids later (the embedding rejects them) */
	json_int_t V = r->tok ? tern_tokenizer_vocab_size(r->tok) : (json_int_t)INT32_MAX + 1;
	for (size_t i = 0; i < n; i++) {
		json_int_t id = json_integer_value(json_array_get(ids, i));
		if (id < 0 || id >= V)
			return tern_fail(TERN_E_FORMAT,
					 "%s:%lld: input_ids[%zu] = %lld is outside the vocabulary (0..%lld)",
					 r->file, (long long)r->line, i, (long long)id, (long long)V - 1);
		json_int_t lab = labels ? json_integer_value(json_array_get(labels, i)) : id;
		if (lab != IGNORE && (lab < 0 || lab >= V))
			return tern_fail(
				TERN_E_FORMAT,
				"%s:%lld: labels[%zu] = %lld is neither -100 nor a token id (0..%lld)",
				r->file, (long long)r->line, i, (long long)lab, (long long)V - 1);
		if ((st = push_id(s, (int32_t)id, true)))
			return st;
		s->labels[s->n - 1] = (int32_t)lab;
	}
	return TERN_OK;
}

enum role { ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL };
static const char *const role_names[] = {"system", "user", "assistant", "tool"};

struct msg {
	enum role role;
	const char *content;
	json_t *src;     /* the message object as the row has it (its other fields reach Jinja templates) */
	bool no_content; /* an assistant turn with tool_calls and a null or missing content */
};

static enum tern_status parse_messages(struct reader *r, json_t *obj, struct msg **out, size_t *n)
{
	/* datasets[].field_messages names the list; message_property_mappings the role and content
	 * fields (else role/content, or sharegpt's from/value) */
	const char *fm = r->ds ? r->ds->field_messages : NULL;
	const char *mrk = r->ds ? r->ds->role_key : NULL, *mck = r->ds ? r->ds->content_key : NULL;
	const char *listkey = fm ? fm : "messages", *rk = "role", *ck = "content";
	json_t *list = json_object_get(obj, listkey);
	if (!list && !fm) {
		list = json_object_get(obj, "conversations");
		listkey = "conversations";
	}
	if (!list && fm)
		return tern_fail(TERN_E_FORMAT,
				 "%s:%lld: missing field \"%.60s\" (datasets[].field_messages)", r->file,
				 (long long)r->line, fm);
	if (!list)
		return tern_fail(TERN_E_FORMAT,
				 "%s:%lld: missing field \"messages\" (or sharegpt \"conversations\")",
				 r->file, (long long)r->line);
	if (json_is_array(list) && json_array_size(list) > 0) {
		json_t *e0 = json_array_get(list, 0);
		bool sharegpt =
			json_is_object(e0) && !json_object_get(e0, "role") && json_object_get(e0, "from");
		rk = mrk ? mrk : sharegpt ? "from" : "role";
		ck = mck ? mck : sharegpt ? "value" : "content";
	}
	if (!json_is_array(list) || json_array_size(list) == 0)
		return tern_fail(TERN_E_FORMAT, "%s:%lld: \"%s\" is %s, not a non-empty list of messages",
				 r->file, (long long)r->line, listkey,
				 json_is_array(list) ? "empty" : json_kind(list));
	size_t cnt = json_array_size(list);
	struct msg *m = tern_calloc(cnt, sizeof *m);
	if (!m)
		return TERN_E_NOMEM;
	for (size_t i = 0; i < cnt; i++) {
		json_t *e = json_array_get(list, i);
		json_t *role = json_is_object(e) ? json_object_get(e, rk) : NULL;
		json_t *content = json_is_object(e) ? json_object_get(e, ck) : NULL;
		/* an assistant turn that only calls tools may have no content (null or missing) */
		bool calls = json_is_object(e) && json_is_array(json_object_get(e, "tool_calls")) &&
			     (!content || json_is_null(content));
		if (!json_is_object(e) || !json_is_string(role) || (!json_is_string(content) && !calls)) {
			free(m);
			return tern_fail(TERN_E_FORMAT,
					 "%s:%lld: %s[%zu] needs string fields \"%s\" and \"%s\"", r->file,
					 (long long)r->line, listkey, i, rk, ck);
		}
		const char *rs = json_string_value(role);
		if (!strcmp(rs, "system"))
			m[i].role = ROLE_SYSTEM;
		else if (!strcmp(rs, "user") || !strcmp(rs, "human"))
			m[i].role = ROLE_USER;
		else if (!strcmp(rs, "assistant") || !strcmp(rs, "gpt"))
			m[i].role = ROLE_ASSISTANT;
		else if (!strcmp(rs, "tool") && r->chat)
			m[i].role = ROLE_TOOL;
		else {
			free(m);
			if (!strcmp(rs, "tool"))
				return tern_fail(
					TERN_E_FORMAT,
					"%s:%lld: %s[%zu]: a 'tool' message needs the model's own chat "
					"template (chat_template: tokenizer_default, or jinja), not %s",
					r->file, (long long)r->line, listkey, i,
					tern_chat_template_name(r->tmpl));
			return tern_fail(
				TERN_E_FORMAT,
				"%s:%lld: %s[%zu].%s: '%.60s' is not a role (allowed: system, user, assistant, "
				"tool; sharegpt: system, human, gpt)",
				r->file, (long long)r->line, listkey, i, rk, rs);
		}
		m[i].content = json_is_string(content) ? json_string_value(content) : "";
		m[i].no_content = !json_is_string(content);
		m[i].src = e;
	}
	*out = m;
	*n = cnt;
	return TERN_OK;
}

/* Exact strings (ecosystem.md):
 *   ChatML   per message "<|im_start|>{role}\n{content}<|im_end|>\n"
 *   Llama 3  "<|begin_of_text|>" then "<|start_header_id|>{role}<|end_header_id|>\n\n{content}<|eot_id|>"
 *   Mistral  "<s>" then " [INST] {user} [/INST]" and " {assistant}</s>"; a system message is prepended
 *            to the first user turn ("{system}\n\n{user}"); roles must alternate from user.
 * Trained (train_on_inputs: false): assistant contents and their end-of-turn token only. */
static enum tern_status render_chat(struct reader *r, const struct msg *m, size_t n, struct render *rd)
{
	bool all = r->o->train_on_inputs;
	switch (r->tmpl) {
	case TERN_TEMPLATE_CHATML:
		for (size_t i = 0; i < n; i++) {
			bool t = all || m[i].role == ROLE_ASSISTANT;
			render_str(rd, "<|im_start|>", all);
			render_str(rd, role_names[m[i].role], all);
			render_str(rd, "\n", all);
			render_str(rd, m[i].content, t);
			render_str(rd, "<|im_end|>", t);
			render_str(rd, "\n", all);
		}
		return TERN_OK;
	case TERN_TEMPLATE_LLAMA3:
		render_str(rd, "<|begin_of_text|>", all);
		for (size_t i = 0; i < n; i++) {
			bool t = all || m[i].role == ROLE_ASSISTANT;
			render_str(rd, "<|start_header_id|>", all);
			render_str(rd, role_names[m[i].role], all);
			render_str(rd, "<|end_header_id|>\n\n", all);
			render_str(rd, m[i].content, t);
			render_str(rd, "<|eot_id|>", t);
		}
		return TERN_OK;
	case TERN_TEMPLATE_MISTRAL_V1: {
		size_t i = 0;
		const char *system = NULL;
		if (n && m[0].role == ROLE_SYSTEM)
			system = m[i++].content;
		render_str(rd, "<s>", all);
		for (size_t k = 0; i < n; i++, k++) {
			enum role want = k % 2 == 0 ? ROLE_USER : ROLE_ASSISTANT;
			if (m[i].role != want)
				return tern_fail(
					TERN_E_FORMAT,
					"%s:%lld: message %zu is '%s' but mistral_v1 needs user and assistant "
					"turns alternating from user (one system message first at most)",
					r->file, (long long)r->line, i, role_names[m[i].role]);
			if (want == ROLE_USER) {
				render_str(rd, " [INST] ", all);
				if (system && k == 0) {
					render_str(rd, system, all);
					render_str(rd, "\n\n", all);
				}
				render_str(rd, m[i].content, all);
				render_str(rd, " [/INST]", all);
			} else {
				render_str(rd, " ", true);
				render_str(rd, m[i].content, true);
				render_str(rd, "</s>", true);
			}
		}
		return TERN_OK;
	}
	default: return tern_fail(TERN_E_INVALID, "%s: internal: chat template not resolved", r->file);
	}
}

/* The messages as the Jinja template sees them: {role, content} as parsed (sharegpt's human/gpt
 * named user/assistant; message_property_mappings applied), each message's other fields kept. */
static json_t *jinja_messages(const struct msg *m, size_t n)
{
	json_t *out = json_array();
	for (size_t i = 0; out && i < n; i++) {
		json_t *e = json_copy(m[i].src);
		if (!e || json_object_set_new(e, "role", json_string(role_names[m[i].role])) ||
		    json_object_set_new(e, "content",
					m[i].no_content ? json_null() : json_string(m[i].content)) ||
		    json_array_append_new(out, e)) {
			json_decref(out);
			out = NULL;
		}
	}
	return out;
}

/* A chat rendered by a Jinja template: the trained spans (train_on_inputs: false) or all. */
static enum tern_status render_jinja(struct reader *r, const struct msg *m, size_t n, struct render *rd)
{
	bool all = r->o->train_on_inputs;
	json_t *msgs = jinja_messages(m, n);
	if (!msgs)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	struct tern_chat_text ct;
	enum tern_status st = tern_chat_render(r->chat, msgs, false, !all, &ct);
	json_decref(msgs);
	if (st) {
		char msg[700];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st, "%s:%lld: %s", r->file, (long long)r->line, msg);
	}
	size_t at = 0;
	for (size_t k = 0; k < ct.n_span; k++) {
		render_add(rd, ct.text + at, ct.span[2 * k] - at, false);
		render_add(rd, ct.text + ct.span[2 * k], ct.span[2 * k + 1] - ct.span[2 * k], true);
		at = ct.span[2 * k + 1];
	}
	render_add(rd, ct.text + at, ct.len - at, all);
	tern_chat_text_free(&ct);
	return TERN_OK;
}

static enum tern_status read_chat(struct reader *r, json_t *obj, struct sample *s)
{
	struct msg *m = NULL;
	size_t n = 0;
	struct render rd = {0};
	enum tern_status st = parse_messages(r, obj, &m, &n);
	if (!st)
		st = r->chat ? render_jinja(r, m, n, &rd) : render_chat(r, m, n, &rd);
	if (!st)
		st = push_render(r, &rd, false, s);
	render_free(&rd);
	free(m);
	return st;
}

static enum tern_status samples_push(struct samples *ss, struct sample *s)
{
	if (ss->n == ss->cap) {
		int64_t nc = ss->cap ? ss->cap * 2 : 1024;
		struct sample *v = realloc(ss->v, (size_t)nc * sizeof *v);
		if (!v)
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		ss->v = v;
		ss->cap = nc;
	}
	ss->v[ss->n++] = *s;
	memset(s, 0, sizeof *s);
	return TERN_OK;
}

/* One JSON object of a dataset (a JSONL line or a JSON array element) -> a sample in ss. */
static enum tern_status read_object(struct reader *r, json_t *obj, struct samples *ss)
{
	if (!json_is_object(obj))
		return tern_fail(TERN_E_FORMAT, "%s:%lld: the row is %s, not a JSON object", r->file,
				 (long long)r->line, json_kind(obj));
	struct sample s = {0};
	enum tern_status st = TERN_OK;
	switch (r->ds->type) {
	case TERN_DS_ALPACA: st = read_alpaca(r, obj, &s); break;
	case TERN_DS_CHAT: st = read_chat(r, obj, &s); break;
	case TERN_DS_COMPLETION: st = read_completion(r, obj, &s); break;
	case TERN_DS_PRETOKENIZED: st = read_pretokenized(r, obj, &s); break;
	}
	if (!st && s.n == 0)
		st = tern_fail(TERN_E_FORMAT, "%s:%lld: the sample has no tokens", r->file,
			       (long long)r->line);
	if (!st)
		st = samples_push(ss, &s);
	sample_free(&s);
	return st;
}

static void json_err_text(json_error_t *err)
{
	for (char *q = err->text; *q; q++)
		if ((unsigned char)*q < 0x20)
			*q = ' ';
}

/* A JSON array of objects ("[{...}, {...}]", the datasets library's other JSON form); text holds
 * the whole file. Each element's messages name the line it starts on. */
static enum tern_status read_array(struct reader *r, const char *text, size_t len, struct samples *ss)
{
	size_t i = 0;
	r->line = 1;
#define SKIP_WS()                                                                                    \
	while (i < len && (text[i] == ' ' || text[i] == '\t' || text[i] == '\r' || text[i] == '\n')) \
	r->line += text[i++] == '\n'
	SKIP_WS();
	i++; /* '[' */
	SKIP_WS();
	if (i < len && text[i] == ']') {
		i++;
	} else {
		for (;;) {
			SKIP_WS();
			json_error_t err;
			json_t *obj =
				json_loadb(text + i, len - i, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &err);
			if (!obj) {
				json_err_text(&err);
				return tern_fail(TERN_E_FORMAT, "%s:%lld: invalid JSON: %s", r->file,
						 (long long)(r->line + (err.line > 1 ? err.line - 1 : 0)),
						 err.text);
			}
			enum tern_status st = read_object(r, obj, ss);
			json_decref(obj);
			if (st)
				return st;
			for (size_t e = i + (size_t)err.position; i < e; i++)
				r->line += text[i] == '\n';
			SKIP_WS();
			if (i < len && text[i] == ',') {
				i++;
				continue;
			}
			if (i < len && text[i] == ']') {
				i++;
				break;
			}
			return tern_fail(TERN_E_FORMAT,
					 "%s:%lld: invalid JSON: expected ',' or ']' in the array", r->file,
					 (long long)r->line);
		}
	}
	SKIP_WS();
#undef SKIP_WS
	if (i < len)
		return tern_fail(TERN_E_FORMAT, "%s:%lld: invalid JSON: text after the array's closing ']'",
				 r->file, (long long)r->line);
	return TERN_OK;
}

/* One file: JSON Lines (one object a line; blank lines skipped) or a JSON array of objects. */
static enum tern_status read_file(struct reader *r, const char *path, int index, struct samples *ss)
{
	struct stat sb;
	if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode))
		return tern_fail(
			TERN_E_INVALID,
			"%s: is a directory (datasets[%d]); name its files with data_files: [a.jsonl, ...]",
			path, index);
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s (datasets[%d].path)", path, strerror(errno),
				 index);
	r->file = path;
	r->line = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	enum tern_status st = TERN_OK;
	int64_t before = ss->n;
	int c;
	while ((c = getc(f)) == ' ' || c == '\t' || c == '\r' || c == '\n')
		;
	if (c == '[') {
		/* a JSON array: the whole file at once */
		rewind(f);
		char *text = NULL;
		size_t n = 0, tcap = 0;
		for (;;) {
			if (n + 65536 > tcap) {
				tcap = tcap ? tcap * 2 : 1 << 20;
				char *t = realloc(text, tcap);
				if (!t) {
					st = tern_fail(TERN_E_NOMEM, "out of host memory reading %s", path);
					break;
				}
				text = t;
			}
			size_t got = fread(text + n, 1, tcap - n, f);
			n += got;
			if (!got)
				break;
		}
		if (!st && !ferror(f))
			st = read_array(r, text, n, ss);
		free(text);
	} else {
		rewind(f); /* JSON Lines */
	}
	while (c != '[' && !st && (len = getline(&line, &cap, f)) >= 0) {
		r->line++;
		size_t sp = strspn(line, " \t\r\n");
		if (sp == (size_t)len)
			continue;
		json_error_t err;
		json_t *obj = json_loadb(line, (size_t)len, 0, &err);
		if (!obj) {
			json_err_text(&err);
			st = tern_fail(TERN_E_FORMAT, "%s:%lld: invalid JSON: %s", r->file,
				       (long long)r->line, err.text);
			break;
		}
		if (!json_is_object(obj)) {
			st = tern_fail(TERN_E_FORMAT, "%s:%lld: the line is %s, not a JSON object", r->file,
				       (long long)r->line, json_kind(obj));
			json_decref(obj);
			break;
		}
		st = read_object(r, obj, ss);
		json_decref(obj);
	}
	if (!st && ferror(f))
		st = tern_fail(TERN_E_IO, "%s: read error", path);
	if (!st && ss->n == before)
		st = tern_fail(TERN_E_FORMAT,
			       "%s: no samples (the file is empty, holds only blank lines or an empty array)",
			       path);
	free(line);
	fclose(f);
	return st;
}

/* One datasets[] entry: its file, or its data_files (under path when path is a directory), then
 * its split's slice of the rows. */
static enum tern_status read_dataset(struct reader *r, const struct tern_dataset_cfg *ds, int index,
				     struct samples *ss)
{
	enum tern_status st = TERN_OK;
	int64_t before = ss->n;
	r->ds = ds;
	if (!ds->n_data_files) {
		st = read_file(r, ds->path, index, ss);
	} else {
		struct stat sb;
		bool dir = stat(ds->path, &sb) == 0 && S_ISDIR(sb.st_mode);
		for (int i = 0; i < ds->n_data_files && !st; i++) {
			const char *f = ds->data_files[i];
			size_t n = strlen(ds->path) + strlen(f) + 2;
			char *p = tern_malloc(n);
			if (!p)
				return TERN_E_NOMEM;
			if (dir && f[0] != '/')
				snprintf(p, n, "%s/%s", ds->path, f);
			else
				snprintf(p, n, "%s", f);
			st = read_file(r, p, index, ss);
			r->file = NULL;
			free(p);
		}
	}
	if (st || !ds->split)
		return st;
	struct tern_split sp;
	if (!tern_split_parse(ds->split, &sp))
		return tern_fail(TERN_E_INVALID, "datasets[%d].split: '%.60s' is not a split", index,
				 ds->split);
	int64_t n = ss->n - before, a, b;
	tern_split_rows(&sp, n, &a, &b);
	if (a == b)
		return tern_fail(
			TERN_E_INVALID,
			"datasets[%d].split: '%.60s' selects none of the %lld rows of %s; widen the slice",
			index, ds->split, (long long)n, ds->path);
	for (int64_t i = 0; i < n; i++)
		if (i < a || i >= b)
			sample_free(&ss->v[before + i]);
	memmove(ss->v + before, ss->v + before + a, (size_t)(b - a) * sizeof *ss->v);
	ss->n = before + (b - a);
	return TERN_OK;
}

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Lays out samples v[0..n) into rows. */
static enum tern_status layout(const struct tern_data_opts *o, const struct sample *v, int64_t n, int32_t pad,
			       struct tern_rows *rows, struct tern_data_stats *stats)
{
	int64_t S = o->sequence_len;
	memset(stats, 0, sizeof *stats);
	stats->samples = n;
	/* count rows */
	int64_t nrows = 0, fill = S;
	for (int64_t i = 0; i < n; i++) {
		int64_t len = v[i].n < S ? v[i].n : S;
		if (!o->sample_packing || fill + len > S) {
			nrows++;
			fill = 0;
		}
		fill += len;
	}
	rows->S = S;
	rows->n_rows = nrows;
	size_t cells = (size_t)(nrows * S);
	rows->tokens = tern_malloc(cells * sizeof(int32_t) + 1);
	rows->targets = tern_malloc(cells * sizeof(int32_t) + 1);
	rows->positions = tern_malloc(cells * sizeof(int32_t) + 1);
	rows->segments = tern_malloc(cells * sizeof(int32_t) + 1);
	if (!rows->tokens || !rows->targets || !rows->positions || !rows->segments)
		return TERN_E_NOMEM;
	for (size_t c = 0; c < cells; c++) {
		rows->tokens[c] = pad;
		rows->targets[c] = IGNORE;
		rows->positions[c] = 0;
		rows->segments[c] = -1;
	}
	int64_t row = -1;
	fill = S;
	for (int64_t i = 0; i < n; i++) {
		int64_t len = v[i].n < S ? v[i].n : S;
		if (v[i].n > S)
			stats->truncated++;
		if (!o->sample_packing || fill + len > S) {
			row++;
			fill = 0;
		}
		int64_t base = row * S + fill;
		for (int64_t t = 0; t < len; t++) {
			int32_t tg = t + 1 < len ? v[i].labels[t + 1] : IGNORE;
			rows->tokens[base + t] = v[i].ids[t];
			rows->targets[base + t] = tg;
			rows->positions[base + t] = (int32_t)t;
			rows->segments[base + t] = (int32_t)i;
			stats->trained += tg != IGNORE;
		}
		stats->tokens += len;
		fill += len;
	}
	stats->rows = nrows;
	stats->padding = nrows * S - stats->tokens;
	return TERN_OK;
}

static void rows_free(struct tern_rows *r)
{
	free(r->tokens);
	free(r->targets);
	free(r->positions);
	free(r->segments);
	memset(r, 0, sizeof *r);
}

void tern_data_free(struct tern_data *d)
{
	if (!d)
		return;
	rows_free(&d->train);
	rows_free(&d->val);
	free(d);
}

void tern_data_opts_from_config(struct tern_data_opts *o, const struct tern_config *cfg)
{
	memset(o, 0, sizeof *o);
	o->datasets = cfg->datasets;
	o->n_datasets = cfg->n_datasets;
	o->sequence_len = cfg->sequence_len;
	o->sample_packing = cfg->sample_packing;
	o->train_on_inputs = cfg->train_on_inputs;
	o->chat_template = cfg->chat_template;
	o->chat_template_jinja = cfg->chat_template_jinja;
	/* as axolotl: a chat_template_jinja without a chat_template is used */
	if (cfg->chat_template_jinja && cfg->chat_template == TERN_TEMPLATE_TOKENIZER_DEFAULT)
		o->chat_template = TERN_TEMPLATE_JINJA;
	o->val_set_size = cfg->val_set_size;
	o->seed = (uint64_t)cfg->seed;
	o->eos_token = cfg->eos_token;
	o->pad_token = cfg->pad_token;
}

static enum tern_status token_id(const struct tern_tokenizer *tok, const char *s, const char *key,
				 int32_t *out)
{
	*out = tern_tokenizer_token_id(tok, s);
	if (*out < 0)
		return tern_fail(TERN_E_INVALID, "special_tokens.%s: '%.60s' is not a token of the tokenizer",
				 key, s);
	return TERN_OK;
}

/* The template's marker strings must be single tokens of the tokenizer, or the rendering would be
 * tokenized as plain text. */
static enum tern_status check_template_tokens(const struct tern_tokenizer *tok, enum tern_chat_template t)
{
	static const char *const chatml[] = {"<|im_start|>", "<|im_end|>", NULL};
	static const char *const llama3[] = {"<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
					     "<|eot_id|>", NULL};
	static const char *const mistral[] = {"<s>", "</s>", NULL};
	static const char *const gemma[] = {"<start_of_turn>", "<end_of_turn>", NULL};
	static const char *const phi3[] = {"<|user|>", "<|assistant|>", "<|end|>", NULL};
	static const char *const none[] = {NULL};
	const char *const *need = t == TERN_TEMPLATE_CHATML || t == TERN_TEMPLATE_QWEN3 ? chatml
				  : t == TERN_TEMPLATE_LLAMA3                           ? llama3
				  : t == TERN_TEMPLATE_MISTRAL_V1 || t == TERN_TEMPLATE_MISTRAL_V2V3 ||
						  t == TERN_TEMPLATE_MISTRAL_V3_TEKKEN
					  ? mistral
				  : t == TERN_TEMPLATE_PHI_3 || t == TERN_TEMPLATE_PHI_35 ? phi3
				  : t == TERN_TEMPLATE_GEMMA                              ? gemma
											  : none;
	for (; *need; need++)
		if (tern_tokenizer_token_id(tok, *need) < 0)
			return tern_fail(
				TERN_E_INVALID,
				"chat_template: %s needs the token %s, which the tokenizer does not have; set "
				"chat_template to the model's family (chatml, llama3, mistral_v1, qwen3 or gemma) "
				"or tokenizer_default",
				tern_chat_template_name(t), *need);
	return TERN_OK;
}

/* The strings that close a trained assistant turn: the tokenizer's special tokens and EOS. */
static enum tern_status end_markers(const struct tern_tokenizer *tok, int32_t eos, const char ***out)
{
	int32_t V = tern_tokenizer_vocab_size(tok);
	size_t n = 0, cap = 16;
	const char **v = tern_calloc(cap, sizeof *v);
	if (!v)
		return TERN_E_NOMEM;
	for (int32_t id = 0; id < V; id++) {
		const char *s = tern_tokenizer_token(tok, id);
		if (!s || !*s || !(id == eos || tern_tokenizer_is_special(tok, id)))
			continue;
		if (n + 2 > cap) {
			const char **w = realloc(v, cap * 2 * sizeof *w);
			if (!w) {
				free(v);
				return tern_fail(TERN_E_NOMEM, "out of host memory");
			}
			v = w;
			cap *= 2;
		}
		v[n++] = s;
	}
	v[n] = NULL;
	*out = v;
	return TERN_OK;
}

/* Loads the Jinja template the options ask for into r->chat (NULL for the C-rendered ones). */
static enum tern_status open_chat(struct reader *r, const struct tern_data_opts *o,
				  const struct tern_tokenizer *tok, const char ***markers)
{
	enum tern_status st = TERN_OK;
	switch (r->tmpl) {
	case TERN_TEMPLATE_TOKENIZER_DEFAULT:
		if (!o->tokenizer_config)
			return tern_fail(TERN_E_UNSUPPORTED,
					 "chat_template: tokenizer_default needs tokenizer_config.json; "
					 "set chat_template: chatml, llama3, mistral_v1, qwen3 or gemma");
		st = tern_chat_from_tokenizer_config(&r->chat, o->tokenizer_config);
		break;
	case TERN_TEMPLATE_JINJA: st = tern_chat_from_config_value(&r->chat, o->chat_template_jinja); break;
	case TERN_TEMPLATE_QWEN3:
	case TERN_TEMPLATE_GEMMA:
	case TERN_TEMPLATE_MISTRAL_V2V3:
	case TERN_TEMPLATE_MISTRAL_V3_TEKKEN:
	case TERN_TEMPLATE_PHI_3:
	case TERN_TEMPLATE_PHI_35: st = tern_chat_builtin(&r->chat, r->tmpl); break;
	default: return TERN_OK;
	}
	if (st || (st = end_markers(tok, r->eos, markers)))
		return st;
	int32_t bos = tern_tokenizer_bos(tok);
	tern_chat_set_tokens(r->chat, bos >= 0 ? tern_tokenizer_token(tok, bos) : NULL,
			     r->eos >= 0 ? tern_tokenizer_token(tok, r->eos) : NULL, *markers);
	return TERN_OK;
}

enum tern_status tern_data_load(struct tern_data **out, const struct tern_data_opts *o,
				const struct tern_tokenizer *tok)
{
	*out = NULL;
	struct samples ss = {0};
	struct reader r = {o,    tok, o->chat_template, tok ? tern_tokenizer_eos(tok) : -1, NULL, 0, NULL, 0,
			   NULL, NULL};
	const char **markers = NULL;
	struct tern_data *d = NULL;
	int32_t pad = 0;
	enum tern_status st = TERN_OK;
	if (o->sequence_len < 2)
		return tern_fail(TERN_E_INVALID, "sequence_len: %lld is too short (at least 2)",
				 (long long)o->sequence_len);
	if (o->n_datasets < 1 || !o->datasets)
		return tern_fail(TERN_E_INVALID, "datasets: none given; add at least one {path, type}");
	bool chat = false;
	for (int i = 0; i < o->n_datasets; i++) {
		chat |= o->datasets[i].type == TERN_DS_CHAT;
		if (!tok && o->datasets[i].type != TERN_DS_PRETOKENIZED)
			return tern_fail(
				TERN_E_INVALID,
				"datasets[%d] (%s): type %s needs a tokenizer (tokenizer.json of base_model); "
				"only pretokenized datasets load without one",
				i, o->datasets[i].path, tern_ds_type_name(o->datasets[i].type));
	}
	if (tok) {
		if (o->eos_token && (st = token_id(tok, o->eos_token, "eos_token", &r.eos)))
			return st;
		if (o->pad_token) {
			if ((st = token_id(tok, o->pad_token, "pad_token", &pad)))
				return st;
		} else {
			pad = r.eos >= 0 ? r.eos : 0;
		}
	} else if (o->pad_token) {
		tern_log(TERN_LOG_WARN,
			 "special_tokens.pad_token: no tokenizer to resolve '%.60s'; padding uses id 0 "
			 "(padding is never attended to nor trained)",
			 o->pad_token);
	}
	if (chat && ((st = check_template_tokens(tok, r.tmpl)) || (st = open_chat(&r, o, tok, &markers))))
		goto out;
	if (tok) {
		/* what add_special puts in front of a text: BOS, not a trailing EOS (added once below) */
		if ((st = tern_tokenizer_encode(tok, "", 0, true, &r.prefix, &r.n_prefix)))
			goto out;
		if (r.n_prefix && r.prefix[r.n_prefix - 1] == tern_tokenizer_eos(tok))
			r.n_prefix--;
	}

	for (int i = 0; i < o->n_datasets && !st; i++)
		st = read_dataset(&r, &o->datasets[i], i, &ss);
	if (st)
		goto out;

	/* shuffle, then split off the validation samples */
	uint64_t state = o->seed;
	for (int64_t i = ss.n - 1; i > 0; i--) {
		int64_t j = (int64_t)(splitmix64(&state) % (uint64_t)(i + 1));
		struct sample t = ss.v[i];
		ss.v[i] = ss.v[j];
		ss.v[j] = t;
	}
	int64_t n_val = o->val_set_size < 1 ? (int64_t)ceil(o->val_set_size * (double)ss.n)
					    : (int64_t)o->val_set_size;
	if (o->val_set_size < 0 || n_val >= ss.n) {
		st = tern_fail(
			TERN_E_INVALID,
			"val_set_size: %g leaves no training samples (the datasets hold %lld samples); use a "
			"fraction below 1 or a smaller count",
			o->val_set_size, (long long)ss.n);
		goto out;
	}
	if (!(d = tern_calloc(1, sizeof *d))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	d->template = chat ? r.tmpl : o->chat_template;
	if ((st = layout(o, ss.v, n_val, pad, &d->val, &d->val_stats)) ||
	    (st = layout(o, ss.v + n_val, ss.n - n_val, pad, &d->train, &d->train_stats)))
		goto out;
	if (d->train_stats.truncated + d->val_stats.truncated)
		tern_log(TERN_LOG_WARN, "data: %lld samples longer than sequence_len %lld were truncated",
			 (long long)(d->train_stats.truncated + d->val_stats.truncated),
			 (long long)o->sequence_len);
	*out = d;
	d = NULL;
out:
	if (st == TERN_E_NOMEM && !tern_error()[0])
		tern_fail(st, "out of host memory");
	tern_data_free(d);
	for (int64_t i = 0; i < ss.n; i++)
		sample_free(&ss.v[i]);
	free(ss.v);
	free(r.prefix);
	tern_chat_free(r.chat);
	free(markers);
	return st;
}
