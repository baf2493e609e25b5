/* Jinja chat templates: loading, rendering and trained spans. Contract in chat.h. */
#define _POSIX_C_SOURCE 200809L
#include "data/chat.h"

#include "data/jinja.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tern_chat {
	struct tern_jinja *t;
	char *bos, *eos;
	const char *const *end_markers;
};

/* tern's qwen3: Qwen3's turns for text messages. The reasoning of an assistant turn (its
 * reasoning_content, or what its content holds between <think> and </think>) is kept in a
 * <think> block for the turns after the last user message (the last turn always gets one, empty
 * if need be) and dropped from earlier turns. enable_thinking: false puts the empty block after
 * the generation prompt. */
static const char qwen3_template[] =
	"{%- set ns = namespace(last_user=messages|length - 1) -%}\n"
	"{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}{%- endif -%}"
	"{%- endfor -%}\n"
	"{%- for m in messages -%}\n"
	"  {%- if m.role == 'assistant' -%}\n"
	"    {%- set content = m.content -%}\n"
	"    {%- set think = m.reasoning_content if m.reasoning_content is string else '' -%}\n"
	"    {%- if m.reasoning_content is not string and '</think>' in content -%}\n"
	"      {%- set think = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') -%}\n"
	"      {%- set content = content.split('</think>')[-1].lstrip('\\n') -%}\n"
	"    {%- endif -%}\n"
	"    {{- '<|im_start|>assistant\\n' -}}\n"
	"    {%- if loop.index0 > ns.last_user and (loop.last or think) -%}\n"
	"      {{- '<think>\\n' + think.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') -}}\n"
	"    {%- else -%}{{- content -}}{%- endif -%}\n"
	"    {{- '<|im_end|>\\n' -}}\n"
	"  {%- else -%}\n"
	"    {{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' -}}\n"
	"  {%- endif -%}\n"
	"{%- endfor -%}\n"
	"{%- if add_generation_prompt -%}\n"
	"  {{- '<|im_start|>assistant\\n' -}}\n"
	"  {%- if enable_thinking is defined and enable_thinking is false -%}{{- '<think>\\n\\n</think>\\n\\n' -}}"
	"{%- endif -%}\n"
	"{%- endif -%}\n";

/* tern's gemma: Gemma 2/3 turns (assistant is "model", contents trimmed); a system message goes
 * in front of the first user turn as Gemma 3 puts it; roles alternate from user. */
static const char gemma_template[] =
	"{{- bos_token -}}\n"
	"{%- set prefix = messages[0].content + '\\n\\n' if messages[0].role == 'system' else '' -%}\n"
	"{%- for m in (messages[1:] if messages[0].role == 'system' else messages) -%}\n"
	"  {%- if (m.role == 'user') != (loop.index0 % 2 == 0) -%}\n"
	"    {{- raise_exception('gemma needs user and assistant turns alternating from user (one system "
	"message first at most)') -}}\n"
	"  {%- endif -%}\n"
	"  {{- '<start_of_turn>' + ('model' if m.role == 'assistant' else m.role) + '\\n' -}}\n"
	"  {{- (prefix if loop.first else '') + m.content | trim + '<end_of_turn>\\n' -}}\n"
	"{%- endfor -%}\n"
	"{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}\n";

/* tern's mistral_v2v3 and mistral_v3_tekken: the turns of Mistral's v3 and Tekken tokenizers'
 * templates (Mistral-7B-Instruct-v0.3, Mistral-Nemo-Instruct-2407) for text chats. As theirs, a
 * system message goes in front of the last message when that is a user turn, and is dropped when
 * the chat ends with an assistant turn; v3 writes "[INST] " and " " before a trimmed answer,
 * Tekken neither. */
#define MISTRAL_TEMPLATE(NAME, INST, ANSWER)                                                                 \
	"{%- set sys = messages[0].content if messages and messages[0].role == 'system' else none -%}\n"     \
	"{%- set turns = messages[1:] if sys is not none else messages -%}\n"                                \
	"{%- for m in turns -%}\n"                                                                           \
	"  {%- if m.role not in ['user', 'assistant'] or (m.role == 'user') != (loop.index0 % 2 == 0) -%}\n" \
	"    {{- raise_exception('" NAME " needs user and assistant turns alternating from user (one "       \
	"system message first at most)') -}}\n"                                                              \
	"  {%- endif -%}\n"                                                                                  \
	"{%- endfor -%}\n"                                                                                   \
	"{{- bos_token -}}\n"                                                                                \
	"{%- for m in turns -%}\n"                                                                           \
	"  {%- if m.role == 'user' -%}\n"                                                                    \
	"    {{- '" INST "' + (sys + '\\n\\n' if sys is not none and loop.last else '') + m.content + "      \
	"'[/INST]' -}}\n"                                                                                    \
	"  {%- else -%}{{- " ANSWER " + eos_token -}}{%- endif -%}\n"                                        \
	"{%- endfor -%}\n"

static const char mistral_v2v3_template[] =
	MISTRAL_TEMPLATE("mistral_v2v3", "[INST] ", "' ' + m.content | trim");
static const char mistral_tekken_template[] = MISTRAL_TEMPLATE("mistral_v3_tekken", "[INST]", "m.content");

/* tern's phi_3 and phi_35: Phi-3-mini's and Phi-3.5-mini's turns, <|role|>\n{content}<|end|>\n,
 * then the generation prompt or EOS; Phi-3.5 leaves out a system message with empty content. */
#define PHI_TEMPLATE(SKIP_EMPTY_SYSTEM)                                                               \
	"{%- for m in messages -%}\n"                                                                 \
	"  {%- if m.role in ['user', 'assistant'] or (m.role == 'system'" SKIP_EMPTY_SYSTEM ") -%}\n" \
	"    {{- '<|' + m.role + '|>\\n' + m.content + '<|end|>\\n' -}}\n"                            \
	"  {%- endif -%}\n"                                                                           \
	"{%- endfor -%}\n"                                                                            \
	"{%- if add_generation_prompt -%}{{- '<|assistant|>\\n' -}}{%- else -%}{{- eos_token -}}{%- endif -%}\n"

static const char phi3_template[] = PHI_TEMPLATE("");
static const char phi35_template[] = PHI_TEMPLATE(" and m.content");

void tern_chat_free(struct tern_chat *c)
{
	if (!c)
		return;
	tern_jinja_free(c->t);
	free(c->bos);
	free(c->eos);
	free(c);
}

enum tern_status tern_chat_from_text(struct tern_chat **out, const char *name, const char *text, size_t len)
{
	*out = NULL;
	struct tern_chat *c = tern_calloc(1, sizeof *c);
	if (!c)
		return TERN_E_NOMEM;
	enum tern_status st = tern_jinja_parse(&c->t, name, text, len);
	if (st) {
		free(c);
		return st;
	}
	*out = c;
	return TERN_OK;
}

enum tern_status tern_chat_builtin(struct tern_chat **out, enum tern_chat_template t)
{
	if (t == TERN_TEMPLATE_QWEN3)
		return tern_chat_from_text(out, "chat_template qwen3 (built in)", qwen3_template,
					   sizeof qwen3_template - 1);
	if (t == TERN_TEMPLATE_GEMMA)
		return tern_chat_from_text(out, "chat_template gemma (built in)", gemma_template,
					   sizeof gemma_template - 1);
	if (t == TERN_TEMPLATE_MISTRAL_V2V3)
		return tern_chat_from_text(out, "chat_template mistral_v2v3 (built in)",
					   mistral_v2v3_template, sizeof mistral_v2v3_template - 1);
	if (t == TERN_TEMPLATE_MISTRAL_V3_TEKKEN)
		return tern_chat_from_text(out, "chat_template mistral_v3_tekken (built in)",
					   mistral_tekken_template, sizeof mistral_tekken_template - 1);
	if (t == TERN_TEMPLATE_PHI_3)
		return tern_chat_from_text(out, "chat_template phi_3 (built in)", phi3_template,
					   sizeof phi3_template - 1);
	if (t == TERN_TEMPLATE_PHI_35)
		return tern_chat_from_text(out, "chat_template phi_35 (built in)", phi35_template,
					   sizeof phi35_template - 1);
	*out = NULL;
	return tern_fail(TERN_E_INVALID, "chat_template: %s is not a built-in Jinja template",
			 tern_chat_template_name(t));
}

static enum tern_status read_text(const char *path, const char *what, char **out, size_t *len)
{
	*out = NULL;
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: cannot open (%s)", path, what);
	char *b = NULL;
	size_t n = 0, cap = 0;
	enum tern_status st = TERN_OK;
	for (;;) {
		if (n + 4096 + 1 > cap) {
			cap = cap ? cap * 2 : 8192;
			char *q = realloc(b, cap);
			if (!q) {
				st = tern_fail(TERN_E_NOMEM, "out of host memory");
				break;
			}
			b = q;
		}
		size_t k = fread(b + n, 1, 4096, f);
		n += k;
		if (n > TERN_JINJA_MAX_SOURCE) {
			st = tern_fail(TERN_E_FORMAT, "%s: more than %u bytes; not a chat template (%s)",
				       path, TERN_JINJA_MAX_SOURCE, what);
			break;
		}
		if (k < 4096) {
			if (ferror(f))
				st = tern_fail(TERN_E_IO, "%s: read error (%s)", path, what);
			break;
		}
	}
	fclose(f);
	if (st) {
		free(b);
		return st;
	}
	b[n] = 0;
	*out = b;
	*len = n;
	return TERN_OK;
}

enum tern_status tern_chat_from_tokenizer_config(struct tern_chat **out, const char *path)
{
	*out = NULL;
	json_error_t err;
	/* model_max_length is often 1e30 written as an integer, too big for json_int_t */
	json_t *root = json_load_file(path, JSON_DECODE_INT_AS_REAL, &err);
	if (!root)
		return err.line > 0
			       ? tern_fail(TERN_E_FORMAT, "%s:%d: invalid JSON: %s", path, err.line, err.text)
			       : tern_fail(TERN_E_IO, "%s", err.text); /* "unable to open PATH: ..." */
	json_t *t = json_object_get(root, "chat_template");
	const char *text = NULL;
	size_t len = 0;
	if (json_is_string(t)) {
		text = json_string_value(t);
		len = json_string_length(t);
	} else if (json_is_array(t)) {
		size_t i;
		json_t *e;
		json_array_foreach(t, i, e)
		{
			json_t *nm = json_object_get(e, "name"), *tp = json_object_get(e, "template");
			if (json_is_string(nm) && json_is_string(tp) &&
			    !strcmp(json_string_value(nm), "default")) {
				text = json_string_value(tp);
				len = json_string_length(tp);
			}
		}
	}
	char name[4200];
	enum tern_status st;
	if (text) {
		snprintf(name, sizeof name, "%s: chat_template", path);
		st = tern_chat_from_text(out, name, text, len);
		json_decref(root);
		return st;
	}
	json_decref(root);
	/* newer transformers save the template beside the config */
	const char *slash = strrchr(path, '/');
	snprintf(name, sizeof name, "%.*schat_template.jinja", slash ? (int)(slash - path + 1) : 0, path);
	FILE *f = fopen(name, "rb");
	if (!f)
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: no chat_template (nor chat_template.jinja beside it); set chat_template: "
			"chatml, llama3, mistral_v1, qwen3, gemma or jinja with chat_template_jinja",
			path);
	fclose(f);
	char *buf;
	if ((st = read_text(name, "the model's chat template", &buf, &len)))
		return st;
	st = tern_chat_from_text(out, name, buf, len);
	free(buf);
	return st;
}

enum tern_status tern_chat_from_config_value(struct tern_chat **out, const char *value)
{
	*out = NULL;
	if (!value || !*value)
		return tern_fail(
			TERN_E_INVALID,
			"chat_template: jinja needs chat_template_jinja (the template text or a .jinja file)");
	bool inline_text = strstr(value, "{{") || strstr(value, "{%");
	if (!inline_text) {
		char *buf;
		size_t len;
		FILE *f = fopen(value, "rb");
		if (!f)
			return tern_fail(
				TERN_E_IO,
				"chat_template_jinja: '%.200s' is neither a template (no {{ or {%%) nor a "
				"readable file",
				value);
		fclose(f);
		enum tern_status st = read_text(value, "chat_template_jinja", &buf, &len);
		if (st)
			return st;
		st = tern_chat_from_text(out, value, buf, len);
		free(buf);
		return st;
	}
	return tern_chat_from_text(out, "chat_template_jinja", value, strlen(value));
}

void tern_chat_set_tokens(struct tern_chat *c, const char *bos, const char *eos,
			  const char *const *end_markers)
{
	free(c->bos);
	free(c->eos);
	c->bos = bos ? strdup(bos) : NULL;
	c->eos = eos ? strdup(eos) : NULL;
	c->end_markers = end_markers;
}

void tern_chat_text_free(struct tern_chat_text *t)
{
	free(t->text);
	free(t->span);
	memset(t, 0, sizeof *t);
}

/* One rendering of messages[0:n] (n = all when n < 0). */
static enum tern_status render_n(const struct tern_chat *c, json_t *messages, long n, bool agp,
				 struct tern_jinja_out *o)
{
	json_t *vars = json_object(), *msgs = n < 0 ? json_incref(messages) : json_array();
	enum tern_status st = TERN_OK;
	if (!vars || !msgs)
		st = tern_fail(TERN_E_NOMEM, "out of host memory");
	for (long i = 0; !st && n >= 0 && i < n; i++)
		if (json_array_append(msgs, json_array_get(messages, (size_t)i)))
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
	if (!st &&
	    (json_object_set(vars, "messages", msgs) || json_object_set_new(vars, "tools", json_null()) ||
	     json_object_set_new(vars, "documents", json_null()) ||
	     json_object_set_new(vars, "add_generation_prompt", json_boolean(agp)) ||
	     (c->bos && json_object_set_new(vars, "bos_token", json_string(c->bos))) ||
	     (c->eos && json_object_set_new(vars, "eos_token", json_string(c->eos)))))
		st = tern_fail(TERN_E_NOMEM, "out of host memory");
	if (!st)
		st = tern_jinja_render(c->t, vars, NULL, o);
	json_decref(msgs);
	json_decref(vars);
	return st;
}

/* The messages with reasoning fields aliased as transformers does. */
static json_t *alias_reasoning(json_t *messages)
{
	static const char *const names[] = {"reasoning_content", "thinking", "reasoning"};
	json_t *out = json_array();
	size_t i;
	json_t *m;
	if (!out)
		return NULL;
	json_array_foreach(messages, i, m)
	{
		json_t *r = NULL;
		for (int k = 0; k < 3 && !r; k++) {
			json_t *v = json_object_get(m, names[k]);
			if (v && !json_is_null(v))
				r = v;
		}
		json_t *copy = r ? json_copy(m) : json_incref(m);
		if (!copy ||
		    (r && (json_object_set(copy, "reasoning_content", r) ||
			   (!json_object_get(copy, "thinking") && json_object_set(copy, "thinking", r))))) {
			json_decref(copy);
			json_decref(out);
			return NULL;
		}
		if (json_array_append_new(out, copy)) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static bool push_span(struct tern_chat_text *o, size_t *cap, size_t a, size_t b)
{
	if (o->n_span * 2 + 2 > *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		size_t *s = realloc(o->span, nc * sizeof *s);
		if (!s)
			return false;
		o->span = s;
		*cap = nc;
	}
	o->span[o->n_span * 2] = a;
	o->span[o->n_span * 2 + 1] = b;
	o->n_span++;
	return true;
}

/* The span of assistant message i in the whole rendering full. */
static enum tern_status find_span(const struct tern_chat *c, json_t *msgs, size_t i,
				  const struct tern_jinja_out *full, size_t *start, size_t *end)
{
	json_t *m = json_array_get(msgs, i);
	json_t *content = json_object_get(m, "content");
	const char *cs = json_is_string(content) ? json_string_value(content) : "";
	size_t cn = json_is_string(content) ? json_string_length(content) : 0;
	/* a sentinel that differs from the content's first and last byte */
	const char *sent = "\x01";
	if (cn && (cs[0] == 1 || cs[cn - 1] == 1))
		sent = (cs[0] == 2 || cs[cn - 1] == 2) ? "\x03" : "\x02";
	/* the whole message is replaced (its tool calls and reasoning with it); when the template
	 * refuses that (it may count tool-call turns apart), only the content */
	struct tern_jinja_out o2 = {0}, pre = {0};
	enum tern_status st = TERN_OK;
	for (int whole = 1; whole >= 0; whole--) {
		json_t *alt = json_copy(msgs);
		json_t *am = whole ? json_pack("{ssss}", "role", "assistant", "content", sent) : json_copy(m);
		if (am && !whole && json_object_set_new(am, "content", json_string(sent))) {
			json_decref(am);
			am = NULL;
		}
		/* json_array_set_new takes am, also when it fails */
		if (!alt || !am || json_array_set_new(alt, i, am)) {
			if (!alt)
				json_decref(am);
			json_decref(alt);
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		}
		st = render_n(c, alt, -1, false, &o2);
		json_decref(alt);
		if (!st)
			break;
	}
	if (st)
		return st;
	size_t p = 0, q = 0, n1 = full->len, n2 = o2.len;
	while (p < n1 && p < n2 && full->text[p] == o2.text[p])
		p++;
	while (q < n1 - p && q < n2 - p && full->text[n1 - 1 - q] == o2.text[n2 - 1 - q])
		q++;
	tern_jinja_out_free(&o2);
	*start = p;
	*end = n1 - q;
	/* back to the end of the generation prompt when the prompt is a prefix of the whole */
	struct tern_jinja_out bare = {0};
	if (!render_n(c, msgs, (long)i, true, &pre) && !render_n(c, msgs, (long)i, false, &bare) &&
	    pre.len > bare.len && pre.len <= *start && !memcmp(pre.text, full->text, pre.len))
		*start = pre.len;
	tern_jinja_out_free(&pre);
	tern_jinja_out_free(&bare);
	tern_clear_error();
	/* the end-of-turn marker after the content */
	size_t e = *end;
	while (e < n1 && full->text[e] == ' ')
		e++;
	size_t best = 0;
	for (const char *const *mk = c->end_markers; mk && *mk; mk++) {
		size_t k = strlen(*mk);
		if (k > best && k <= n1 - e && !memcmp(full->text + e, *mk, k))
			best = k;
	}
	if (best)
		*end = e + best;
	return TERN_OK;
}

enum tern_status tern_chat_render(const struct tern_chat *c, json_t *messages, bool add_generation_prompt,
				  bool spans, struct tern_chat_text *out)
{
	memset(out, 0, sizeof *out);
	json_t *msgs = alias_reasoning(messages);
	if (!msgs)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	struct tern_jinja_out full = {0};
	enum tern_status st = render_n(c, msgs, -1, add_generation_prompt, &full);
	size_t cap = 0;
	if (!st && spans && tern_jinja_has_generation(c->t)) {
		for (size_t k = 0; k < full.n_gen && !st; k++)
			if (full.gen[2 * k + 1] > full.gen[2 * k] &&
			    !push_span(out, &cap, full.gen[2 * k], full.gen[2 * k + 1]))
				st = tern_fail(TERN_E_NOMEM, "out of host memory");
	} else if (!st && spans) {
		size_t i;
		json_t *m;
		size_t last_end = 0;
		json_array_foreach(msgs, i, m)
		{
			json_t *role = json_object_get(m, "role");
			if (!json_is_string(role) || strcmp(json_string_value(role), "assistant"))
				continue;
			size_t a = 0, b = 0;
			if ((st = find_span(c, msgs, i, &full, &a, &b)))
				break;
			if (a < last_end)
				a = last_end;
			if (b > a && !push_span(out, &cap, a, b)) {
				st = tern_fail(TERN_E_NOMEM, "out of host memory");
				break;
			}
			if (b > last_end)
				last_end = b;
		}
	}
	json_decref(msgs);
	if (st) {
		tern_jinja_out_free(&full);
		tern_chat_text_free(out);
		return st;
	}
	out->text = full.text;
	out->len = full.len;
	free(full.gen);
	return TERN_OK;
}
