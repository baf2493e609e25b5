/* Jinja chat templates (data/jinja.c, data/chat.c).
 *
 * - The interpreter, construct by construct: each case's expected output is what Jinja2 renders
 *   in transformers' environment (trim_blocks, lstrip_blocks) for the same template.
 * - Errors: one line "<name>:<line>: reason" for unknown filters and tests, unterminated tags,
 *   blocks and strings, raise_exception, nesting, macro recursion, output size, steps.
 * - Goldens (tools/make_chat_golden.py, tests/data/chat/golden.jsonl): the real templates of
 *   Llama 3 / 3.2, Qwen2.5 / 3, Mistral v0.1 / v0.2 / v0.3 / Nemo, Gemma 2 / 3, Phi-3 / 3.5 / 4 render
 *   byte for byte the text transformers renders (or raise the same message, in one line); the ids
 *   of the text and the rows of tern_data_load (chat_template tokenizer_default where the template
 *   is the tokenizer's own, else jinja) are apply_chat_template's, with each family's real tokenizer:
 *   Llama 3, Qwen3, Phi-3 as published, and Mistral v1 / v3 / Tekken, Gemma 2 / 3 and Phi-4 converted
 *   from the models' own tokenizer files (tools/make_chat_tokenizers.py; Mistral v3, Gemma 2 and 3
 *   byte for byte the Hub's tokenizer.json; Tekken, Gemma and Phi-4 pruned to the strings tokenized
 *   here, with the same ids; tests/data/chat/README.md); for Llama 3 and
 *   Qwen3 with train_on_inputs false exactly the assistant turns and their end-of-turn tokens are
 *   trained, and for every family the trained text spans are the assistant turns and their ends.
 * - Ids published for the real tokenizers by others (reference_ids.json: Gemma 2 and 3, Tekken, Phi-4):
 *   tern's are the same.
 * - The built-in (named) templates render what the real ones render, chat by chat, or raise as they
 *   do: qwen3 (Qwen3), gemma (Gemma 3; Gemma 2 without a system message), mistral_v2v3 (Mistral
 *   v0.3), mistral_v3_tekken (Nemo), phi_3 (Phi-3-mini), phi_35 (Phi-3.5-mini); loaded by name
 *   they give the goldens' ids.
 * - {% generation %} spans, chat_template_jinja as text and as a file, tokenizer_config.json's list
 *   form and chat_template.jinja beside it.
 *
 * Environment: TERN_TEST_DATA (tests/data), TERN_TOKENIZERS (the build's unpacked tokenizers). */
#define _POSIX_C_SOURCE 200809L
#include "data/chat.h"
#include "data/data.h"
#include "data/jinja.h"
#include "train/config.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;
static const char *data_dir, *tok_dir;

static void check(bool ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s\n", what);
	}
}

static void checkf(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void checkf(bool ok, const char *fmt, ...)
{
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	check(ok, buf);
}

/* Renders src with vars (JSON text); returns the output (malloc'd) or NULL with tern_error(). */
static char *render(const char *src, const char *vars_json, const struct tern_jinja_limits *lim)
{
	json_error_t e;
	json_t *vars = json_loads(vars_json ? vars_json : "{}", 0, &e);
	struct tern_jinja *t = NULL;
	struct tern_jinja_out o = {0};
	char *r = NULL;
	if (vars && tern_jinja_parse(&t, "t", src, strlen(src)) == TERN_OK &&
	    tern_jinja_render(t, vars, lim, &o) == TERN_OK) {
		r = o.text;
		o.text = NULL;
	}
	tern_jinja_out_free(&o);
	tern_jinja_free(t);
	json_decref(vars);
	return r;
}

static const char msgs_vars[] =
	"{\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}, {\"role\": \"assistant\", \"content\": \"yo\"}]}";

/* ---- constructs ---- */

static void constructs(void)
{
	static const struct {
		const char *src, *want;
	} cases[] = {
		{"{{ 1 + 2 * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 2 ** 10 }}|{{ 7 / 2 }}|{{ 1.5 + 1 }}",
		 "7|3|-4|1|2|1024|3.5|2.5"},
		{"{{ 'a' ~ 1 ~ none ~ true }}|{{ [1, 'b', none, true, 1.5] }}|{{ {'a': 1, 'b': [2]} }}|{{ \"it's\" }}",
		 "a1NoneTrue|[1, 'b', None, True, 1.5]|{'a': 1, 'b': [2]}|it's"},
		{"{% for x in [1,2,3] %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}"
		 "{{ loop.revindex }}{% if not loop.last %},{% endif %}{% endfor %}",
		 "10TrueFalse33,21FalseFalse32,32FalseTrue31"},
		{"{% for x in [] %}a{% else %}empty{% endfor %}|{% for x in [1,2,3,4] if x is even %}{{ x }}{% endfor %}|"
		 "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}",
		 "empty|24|a=1;b=2;"},
		{"{% set ns = namespace(n=0) %}{% for x in range(5) %}{% set ns.n = ns.n + x %}{% endfor %}{{ ns.n }}|"
		 "{% set y = 1 %}{% for x in [1] %}{% set y = 2 %}{% endfor %}{{ y }}",
		 "10|1"},
		{"{{ messages[::-1] | map(attribute='role') | join(',') }}|{{ messages[1:] | length }}|"
		 "{{ messages[-1].content }}|{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ 'h\xc3\xa9llo'[1] }}",
		 "assistant,user|1|yo|el|olleh|\xc3\xa9"},
		{"{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n\\na\\n'.lstrip('\\n') }}|{{ 'a,b,,c'.split(',') }}|"
		 "{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith(('x', 'c')) }}",
		 "a b|a|a\n|['a', 'b', '', 'c']|['a', 'b']|['a', 'b c']|True|True"},
		{"{{ 'Hello World'|upper }}|{{ 'Hello'|lower }}|{{ 'hello world'|title }}|{{ 'hELLO'|capitalize }}|"
		 "{{ '  t  '|trim }}|{{ 'aXbX'|replace('X', '-') }}",
		 "HELLO WORLD|hello|Hello World|Hello|t|a-b-"},
		{"{{ x | default('d') }}|{{ '' | default('d', true) }}|{{ [3,1,2] | sort }}|{{ [3,1,2] | first }}|"
		 "{{ [3,1,2] | last }}|{{ [1,2,2,1] | unique | list }}|{{ [1,2] | reverse | list }}",
		 "d|d|[1, 2, 3]|3|2|[1, 2]|[2, 1]"},
		{"{{ {'a': 1} | tojson }}|{{ [1, '\xc3\xa9', none, true] | tojson }}|{{ {'a': [1]} | tojson(indent=2) }}",
		 "{\"a\": 1}|[1, \"\xc3\xa9\", null, true]|{\n  \"a\": [\n    1\n  ]\n}"},
		{"{{ x is defined }}|{{ none is none }}|{{ 'a' is string }}|{{ {} is mapping }}|{{ [] is iterable }}|"
		 "{{ 1 is number }}|{{ 3 is divisibleby 3 }}|{{ 2 is equalto 2 }}|{{ 1 is odd }}|{{ x is not defined }}",
		 "False|True|True|True|True|True|True|True|True|True"},
		{"{{ 'a' in 'cat' }}|{{ 2 in [1,2] }}|{{ 'k' in {'k':1} }}|{{ 3 not in [1] }}|{{ 1 == 1.0 }}|"
		 "{{ 'a' < 'b' }}|{{ not 0 }}|{{ 0 or 'x' }}|{{ 1 and 'y' }}|{{ 'y' if 0 else 'n' }}|{{ 'y' if 1 }}",
		 "True|True|True|True|True|True|True|x|y|n|y"},
		{"{%- macro greet(name, punct='!') -%}Hi {{ name }}{{ punct }}{%- endmacro -%}"
		 "{{ greet('a') }} {{ greet('b', punct='?') }}",
		 "Hi a! Hi b?"},
		{"a\n  {% if true %}\n    b\n  {% endif %}\nc\n{# comment #}\nd {%- if true -%} e {%- endif -%} f\n"
		 "{{- ' g ' -}}\n h",
		 "a\n    b\nc\ndef g h"},
		{"{% set x %}inner {{ 1 }}{% endset %}[{{ x }}]|{% for i in range(10) %}{% if i == 3 %}{% break %}{% endif %}"
		 "{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
		 "[inner 1]|02"},
		{"{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|"
		 "{{ messages | rejectattr('role', 'equalto', 'user') | map(attribute='content') | join('+') }}|"
		 "{{ messages[0].get('role') }}|{{ messages[0].get('nope', 'dflt') }}",
		 "1|yo|user|dflt"},
		{"{{ 3.0 }}|{{ 0.1 + 0.2 }}|{{ 1/3 }}|{{ 100.0 }}|{{ [1.0, 2] }}|{{ 'ab' * 3 }}|{{ [1] + [2] }}",
		 "3.0|0.30000000000000004|0.3333333333333333|100.0|[1.0, 2]|ababab|[1, 2]"},
		{"{%+ if true %}  x{% endif %}\n   {%+ if true %}y{% endif %}\n  {{ 'z' }}", "  x   y  z"},
		{"{{ 'a' 'b' }}|{{ '\\u00e9\\x41\\t' }}|{{ [1,2,3][1:] }}|{{ [1,2,3][-2:] }}|{{ [1,2,3][::2] }}",
		 "ab|\xc3\xa9"
		 "A\t|[2, 3]|[2, 3]|[1, 3]"},
		{"{{ (messages | length - 1) }}|{{ -2 ** 2 }}|{{ 1 + ('2' ~ 3) | length }}|{{ 'a' ~ 1 * 2 }}",
		 "1|4|3|a2"},
		{"{{ {'b': '\\u001f\\u00e9/', 'a': [1.5, 1e20, 0.1, 100.0]} | tojson }}|{{ '\\U0001F600' | tojson(true) }}|{{ [1,2] | tojson(separators=(',', ':')) }}|{{ {'z': 1, 'a': 2} | tojson(sort_keys=true) }}",
		 "{\"b\": \"\\u001f\xc3\xa9/\", \"a\": [1.5, 1e+20, 0.1, 100.0]}|\"\\ud83d\\ude00\"|[1,2]|{\"a\": 2, \"z\": 1}"},
		{"a\r\nb\rc{% if true %}\r\nd{% endif %}\n", "a\nb\ncd"},
		{"{% generation %}g{% endgeneration %}", "g"},
	};
	for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
		char *got = render(cases[i].src, msgs_vars, NULL);
		bool ok = got && !strcmp(got, cases[i].want);
		if (!ok)
			printf("  case %zu\n  want %s\n  got  %s\n", i, cases[i].want,
			       got ? got : tern_error());
		checkf(ok, "construct %zu renders as Jinja2 does", i);
		free(got);
	}
}

/* ---- errors ---- */

static void error_is(const char *src, const struct tern_jinja_limits *lim, const char *want)
{
	char *got = render(src, msgs_vars, lim);
	bool ok = !got && !strcmp(tern_error(), want) && !strchr(tern_error(), '\n');
	if (!ok)
		printf("  want %s\n  got  %s\n", want, got ? got : tern_error());
	checkf(ok, "error: %s", want);
	free(got);
}

static void errors(void)
{
	error_is("line 1\n{{ x | frobnicate }}", NULL, "t:2: unknown filter 'frobnicate'");
	error_is("{{ x is frob }}", NULL, "t:1: unknown test 'frob'");
	error_is("a\n{% if true %}\nb", NULL,
		 "t:2: unterminated block: no {% endif %} before the end of the template");
	error_is("a\n\n{{ x ", NULL, "t:3: unterminated {{ expression (no }})");
	error_is("{% if x\n", NULL, "t:1: unterminated {% tag (no %})");
	error_is("{# never closed", NULL, "t:1: unterminated comment (no #})");
	error_is("{{ 'abc }}", NULL, "t:1: unterminated string");
	error_is("{% endfor %}", NULL, "t:1: unexpected {% endfor %} (no open block it closes)");
	error_is("{% include 'x' %}", NULL,
		 "t:1: unknown tag 'include' (supported: if, for, set, macro, break, continue, generation)");
	error_is(
		"{% for m in messages %}\n{% if m.role == 'assistant' %}{{ raise_exception('roles must alternate') }}"
		"{% endif %}{% endfor %}",
		NULL, "t:2: raised: roles must alternate");
	error_is("{{ nope.attr }}", NULL, "t:1: 'nope' is undefined (reading .attr)");
	error_is("{{ 1 + 'a' }}", NULL, "t:1: unsupported operand types for +: 'int' and 'str'");
	error_is("{% macro f(n) %}{{ f(n) }}{% endmacro %}\n{{ f(1) }}", NULL,
		 "t:1: macro calls nested deeper than 64");
	struct tern_jinja_limits small = {64, 0};
	error_is("{% for i in range(100) %}0123456789{% endfor %}", &small,
		 "t:1: output longer than 64 bytes");
	struct tern_jinja_limits steps = {0, 1000};
	error_is("{% for i in range(50) %}{% for j in range(50) %}{% endfor %}{% endfor %}", &steps,
		 "t:1: more than 1000 steps (a loop that does not end?)");
	/* nesting: 300 parentheses */
	char deep[700];
	size_t k = 0;
	k += (size_t)snprintf(deep + k, sizeof deep - k, "{{ ");
	for (int i = 0; i < 300; i++)
		deep[k++] = '(';
	deep[k++] = '1';
	for (int i = 0; i < 300; i++)
		deep[k++] = ')';
	snprintf(deep + k, sizeof deep - k, " }}");
	char *got = render(deep, NULL, NULL);
	check(!got && strstr(tern_error(), "nesting deeper than 200") && !strncmp(tern_error(), "t:1: ", 5),
	      "error: 300 nested parentheses stop at the nesting limit");
	free(got);
	/* a namespace cannot hold itself (no reference cycle to leak or print forever) */
	error_is("{% set ns = namespace(a=1) %}{% set ns.self = ns %}", NULL,
		 "t:1: a namespace cannot hold a namespace");
}

/* ---- goldens ---- */

/* Tokenizers by name: TERN_TOKENIZERS/<name> (the build unpacks tests/data/tokenizers/). */
#define MAX_TOKS 16
static struct {
	char name[32];
	char dir[4096];
	struct tern_tokenizer *t;
} toks[MAX_TOKS];
static int n_toks;

static char *template_path(const char *file);

/* The tokenizer named name (NULL when it cannot be loaded); its directory in *dir. */
static const struct tern_tokenizer *tok_of(const char *name, const char **dir)
{
	if (!name)
		return NULL;
	for (int i = 0; i < n_toks; i++)
		if (!strcmp(toks[i].name, name)) {
			if (dir)
				*dir = toks[i].dir;
			return toks[i].t;
		}
	if (n_toks == MAX_TOKS || strlen(name) >= sizeof toks[0].name)
		return NULL;
	int i = n_toks++;
	snprintf(toks[i].name, sizeof toks[i].name, "%s", name);
	snprintf(toks[i].dir, sizeof toks[i].dir, "%s/%s", tok_dir, name);
	if (tern_tokenizer_load_dir(&toks[i].t, toks[i].dir) != TERN_OK)
		printf("cannot load %s: %s\n", toks[i].dir, tern_error());
	if (dir)
		*dir = toks[i].dir;
	return toks[i].t;
}

static void free_toks(void)
{
	for (int i = 0; i < n_toks; i++)
		tern_tokenizer_free(toks[i].t);
}

static char *template_path(const char *file)
{
	static char p[4096];
	snprintf(p, sizeof p, "%s/chat/templates/%s", data_dir, file);
	return p;
}

static struct tern_chat *open_template(const char *file)
{
	struct tern_chat *c = NULL;
	if (tern_chat_from_config_value(&c, template_path(file)) != TERN_OK)
		printf("  %s: %s\n", file, tern_error());
	return c;
}

static bool ids_equal(const int32_t *a, size_t n, json_t *ids)
{
	if (!json_is_array(ids) || json_array_size(ids) != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (json_integer_value(json_array_get(ids, i)) != a[i])
			return false;
	return true;
}

/* Loads one record's messages as a chat dataset; checks ids and (train_on_inputs false) the
 * decoded trained runs. */
static void golden_load(json_t *rec, const struct tern_tokenizer *tok, int k)
{
	const char *file = json_string_value(json_object_get(rec, "template"));
	char path[64];
	snprintf(path, sizeof path, "/tmp/tern_chat_%d.jsonl", (int)getpid());
	FILE *f = fopen(path, "w");
	json_t *line = json_pack("{sO}", "messages", json_object_get(rec, "messages"));
	char *s = json_dumps(line, 0);
	fprintf(f, "%s\n", s);
	fclose(f);
	free(s);
	json_decref(line);
	for (int toi = 0; toi < 2; toi++) {
		struct tern_dataset_cfg ds = {.path = path, .type = TERN_DS_CHAT};
		struct tern_data_opts o = {0};
		char cfg[4096];
		o.datasets = &ds;
		o.n_datasets = 1;
		o.sequence_len = 1024;
		o.seed = 1;
		o.train_on_inputs = toi;
		/* the model's own template through tokenizer_default; the others as chat_template: jinja */
		bool own = json_is_true(json_object_get(rec, "tokenizer_default"));
		if (own) {
			const char *dir = NULL;
			tok_of(json_string_value(json_object_get(rec, "tokenizer")), &dir);
			snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
			o.chat_template = TERN_TEMPLATE_TOKENIZER_DEFAULT;
			o.tokenizer_config = cfg;
		} else {
			o.chat_template = TERN_TEMPLATE_JINJA;
			o.chat_template_jinja = template_path(file);
		}
		struct tern_data *d = NULL;
		if (tern_data_load(&d, &o, tok) != TERN_OK) {
			checkf(false, "golden %d (%s): loads: %s", k, file, tern_error());
			continue;
		}
		const struct tern_rows *r = &d->train;
		size_t n = 0;
		while (n < (size_t)r->S && r->segments[n] >= 0)
			n++;
		checkf(r->n_rows == 1 && ids_equal(r->tokens, n, json_object_get(rec, "ids")),
		       "golden %d (%s%s): the rows hold apply_chat_template's ids", k, file,
		       own ? ", tokenizer_default" : ", chat_template: jinja");
		json_t *want = json_object_get(rec, "trained");
		if (!toi && want) {
			/* runs of trained tokens (token t+1 is trained when targets[t] != -100), decoded */
			json_t *runs = json_array();
			for (size_t t = 0; t + 1 < n;) {
				if (r->targets[t] == -100) {
					t++;
					continue;
				}
				size_t a = t + 1;
				while (t + 1 < n && r->targets[t] != -100)
					t++;
				char *txt = NULL;
				size_t len = 0;
				if (tern_tokenizer_decode(tok, r->tokens + a, t + 1 - a, false, &txt, &len) ==
				    TERN_OK)
					json_array_append_new(runs, json_stringn(txt, len));
				free(txt);
			}
			bool ok = json_equal(runs, want);
			if (!ok) {
				char *a = json_dumps(runs, 0), *b = json_dumps(want, 0);
				printf("  trained %s\n  want    %s\n", a, b);
				free(a);
				free(b);
			}
			checkf(ok, "golden %d (%s): train_on_inputs false trains the assistant turns only", k,
			       file);
			json_decref(runs);
		} else if (toi) {
			bool all = true;
			for (size_t t = 0; t + 1 < n; t++)
				all &= r->targets[t] == r->tokens[t + 1];
			checkf(all, "golden %d (%s): train_on_inputs true trains every token", k, file);
		}
		tern_data_free(d);
	}
	/* the named template of the family (chat_template: phi_3, ...) loads the same ids */
	static const struct {
		const char *file;
		enum tern_chat_template t;
	} named[] = {
		{"qwen3.jinja", TERN_TEMPLATE_QWEN3},
		{"mistral-v0.2.jinja", TERN_TEMPLATE_MISTRAL_V1},
		{"gemma3.jinja", TERN_TEMPLATE_GEMMA},
		{"gemma2.jinja", TERN_TEMPLATE_GEMMA},
		{"mistral-v0.3.jinja", TERN_TEMPLATE_MISTRAL_V2V3},
		{"mistral-nemo.jinja", TERN_TEMPLATE_MISTRAL_V3_TEKKEN},
		{"phi3.jinja", TERN_TEMPLATE_PHI_3},
		{"phi3.5.jinja", TERN_TEMPLATE_PHI_35},
	};
	bool tools = false;
	size_t mi;
	json_t *msg;
	json_array_foreach(json_object_get(rec, "messages"), mi, msg) tools |=
		json_object_get(msg, "tool_calls") != NULL;
	for (size_t i = 0; i < sizeof named / sizeof *named && !tools; i++) {
		if (strcmp(file, named[i].file))
			continue;
		struct tern_dataset_cfg ds = {.path = path, .type = TERN_DS_CHAT};
		struct tern_data_opts o = {0};
		o.datasets = &ds;
		o.n_datasets = 1;
		o.sequence_len = 1024;
		o.seed = 1;
		o.train_on_inputs = true;
		o.chat_template = named[i].t;
		struct tern_data *d = NULL;
		bool ok = tern_data_load(&d, &o, tok) == TERN_OK;
		if (!ok)
			printf("  %s\n", tern_error());
		size_t n = 0;
		while (ok && n < (size_t)d->train.S && d->train.segments[n] >= 0)
			n++;
		checkf(ok && d->train.n_rows == 1 &&
			       ids_equal(d->train.tokens, n, json_object_get(rec, "ids")),
		       "golden %d (%s): chat_template: %s loads apply_chat_template's ids", k, file,
		       tern_chat_template_name(named[i].t));
		tern_data_free(d);
	}
	remove(path);
}

/* A record the template refuses: loading it as a dataset fails with one line naming the dataset
 * line and quoting the template's message. */
static void golden_load_error(json_t *rec, const char *want, int k)
{
	const char *file = json_string_value(json_object_get(rec, "template"));
	const struct tern_tokenizer *tok = tok_of(json_string_value(json_object_get(rec, "tokenizer")), NULL);
	if (!tok)
		return;
	char path[64];
	snprintf(path, sizeof path, "/tmp/tern_chat_%d.jsonl", (int)getpid());
	FILE *f = fopen(path, "w");
	json_t *line = json_pack("{sO}", "messages", json_object_get(rec, "messages"));
	char *s = json_dumps(line, 0);
	fprintf(f, "%s\n", s);
	fclose(f);
	free(s);
	json_decref(line);
	struct tern_dataset_cfg ds = {.path = path, .type = TERN_DS_CHAT};
	struct tern_data_opts o = {0};
	o.datasets = &ds;
	o.n_datasets = 1;
	o.sequence_len = 1024;
	o.seed = 1;
	o.chat_template = TERN_TEMPLATE_JINJA;
	o.chat_template_jinja = template_path(file);
	struct tern_data *d = NULL;
	char head[128];
	snprintf(head, sizeof head, "%s:1: ", path);
	bool ok = tern_data_load(&d, &o, tok) != TERN_OK && !strncmp(tern_error(), head, strlen(head)) &&
		  strstr(tern_error(), want) && !strchr(tern_error(), '\n');
	if (!ok)
		printf("  got %s\n", d ? "success" : tern_error());
	checkf(ok, "golden %d (%s): the dataset line the template refuses is one error line quoting it", k,
	       file);
	tern_data_free(d);
	remove(path);
}

static void goldens(void)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/chat/golden.jsonl", data_dir);
	FILE *f = fopen(path, "r");
	checkf(f != NULL, "%s: present", path);
	if (!f)
		return;
	char *buf = NULL;
	size_t cap = 0;
	int k = 0, text_ok = 0, ids_ok = 0, n_ids = 0, n_auto = 0, with_ids = 0;
	while (getline(&buf, &cap, f) > 0) {
		json_error_t e;
		json_t *rec = json_loads(buf, 0, &e);
		const char *file = json_string_value(json_object_get(rec, "template"));
		struct tern_chat *c = file ? open_template(file) : NULL;
		n_auto += json_object_get(rec, "ids_autotokenizer") != NULL;
		with_ids += json_object_get(rec, "ids") != NULL;
		checkf(c != NULL, "golden %d: template %s parses", k, file ? file : "?");
		if (c) {
			json_t *bos = json_object_get(rec, "bos_token"),
			       *eos = json_object_get(rec, "eos_token");
			tern_chat_set_tokens(c, json_string_value(bos), json_string_value(eos), NULL);
			struct tern_chat_text ct;
			bool agp = json_is_true(json_object_get(rec, "add_generation_prompt"));
			enum tern_status st =
				tern_chat_render(c, json_object_get(rec, "messages"), agp, false, &ct);
			json_t *text = json_object_get(rec, "text"), *err = json_object_get(rec, "error");
			bool ok;
			if (err) {
				char want[600];
				snprintf(want, sizeof want, "raised: %s", json_string_value(err));
				ok = st != TERN_OK && strstr(tern_error(), want) &&
				     !strchr(tern_error(), '\n');
				if (!ok)
					printf("  golden %d (%s): want an error with '%s', got %s\n", k, file,
					       want, st ? tern_error() : "success");
				else
					golden_load_error(rec, want, k);
			} else {
				ok = st == TERN_OK && ct.len == json_string_length(text) &&
				     !memcmp(ct.text, json_string_value(text), ct.len);
				if (!ok)
					printf("  golden %d (%s)\n  want %s\n  got  %s\n", k, file,
					       json_string_value(text), st ? tern_error() : ct.text);
			}
			text_ok += ok;
			json_t *tt = json_object_get(rec, "trained_text");
			if (ok && !err && tt) {
				/* the trained spans at the text level, for every family */
				static const char *const ends[] = {"</s>",       "<end_of_turn>", "<|end|>",
								   "<|im_end|>", "<|eot_id|>",    NULL};
				struct tern_chat_text sp;
				tern_chat_set_tokens(c, json_string_value(bos), json_string_value(eos), ends);
				bool sok = tern_chat_render(c, json_object_get(rec, "messages"), false, true,
							    &sp) == TERN_OK;
				sok = sok && sp.n_span == json_array_size(tt);
				for (size_t q = 0; sok && q < sp.n_span; q++) {
					json_t *w = json_array_get(tt, q);
					size_t a = sp.span[2 * q], b = sp.span[2 * q + 1];
					sok = b - a == json_string_length(w) &&
					      !memcmp(sp.text + a, json_string_value(w), b - a);
					if (!sok)
						printf("  span %zu: '%.*s', want '%s'\n", q, (int)(b - a),
						       sp.text + a, json_string_value(w));
				}
				checkf(sok,
				       "golden %d (%s): the trained spans are the assistant turns and their ends",
				       k, file);
				if (sok || sp.text)
					tern_chat_text_free(&sp);
			}
			checkf(ok, "golden %d (%s, add_generation_prompt %d): the text of transformers", k,
			       file, agp);
			const struct tern_tokenizer *tok =
				tok_of(json_string_value(json_object_get(rec, "tokenizer")), NULL);
			if (ok && !err && tok && json_object_get(rec, "ids")) {
				int32_t *ids = NULL;
				size_t n = 0;
				n_ids++;
				bool idok = tern_tokenizer_encode(tok, ct.text, ct.len, false, &ids, &n) ==
						    TERN_OK &&
					    ids_equal(ids, n, json_object_get(rec, "ids"));
				ids_ok += idok;
				checkf(idok, "golden %d (%s): the ids of apply_chat_template(tokenize=True)",
				       k, file);
				free(ids);
				if (!agp)
					golden_load(rec, tok, k);
			}
			if (!st)
				tern_chat_text_free(&ct);
		}
		tern_chat_free(c);
		json_decref(rec);
		k++;
	}
	free(buf);
	fclose(f);
	printf("goldens: %d records, %d texts equal, %d of %d id sequences equal\n", k, text_ok, ids_ok,
	       n_ids);
	check(k >= 70 && n_ids >= 60, "goldens: every family has texts and ids");
	checkf(n_ids == with_ids, "goldens: all %d records with ids compared (each family's tokenizer loads)",
	       with_ids);
	if (n_auto)
		printf("goldens: %d records hold transformers 5 AutoTokenizer ids that differ from "
		       "tokenizer.json's (Phi-3's legacy: false): not compared\n",
		       n_auto);
}

/* Ids published by others for the real tokenizers (reference_ids.json): tern encodes each text (special
 * tokens split out, no bos added) to them. */
static void reference_ids(void)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/chat/reference_ids.json", data_dir);
	json_error_t e;
	json_t *ref = json_load_file(path, 0, &e);
	json_t *cases = json_object_get(ref, "cases");
	checkf(json_array_size(cases) >= 7, "%s: the reference cases load (%s)", path, ref ? "" : e.text);
	size_t i;
	json_t *c;
	int ok_n = 0;
	json_array_foreach(cases, i, c)
	{
		const char *name = json_string_value(json_object_get(c, "tokenizer"));
		json_t *text = json_object_get(c, "text");
		const struct tern_tokenizer *tok = tok_of(name, NULL);
		int32_t *ids = NULL;
		size_t n = 0;
		bool ok = tok && json_is_string(text) &&
			  tern_tokenizer_encode(tok, json_string_value(text), json_string_length(text), false,
						&ids, &n) == TERN_OK &&
			  ids_equal(ids, n, json_object_get(c, "ids"));
		if (!ok && ids) {
			printf("  got");
			for (size_t k = 0; k < n; k++)
				printf(" %d", ids[k]);
			printf("\n");
		}
		ok_n += ok;
		checkf(ok, "reference %zu (%s): tern's ids are the published ones", i, name ? name : "?");
		free(ids);
	}
	printf("reference ids: %d of %zu equal\n", ok_n, json_array_size(cases));
	json_decref(ref);
}

/* ---- built-in templates against the real ones ---- */

static void builtins(void)
{
	static const char *const chats[] = {
		"[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, "
		"{\"role\": \"assistant\", \"content\": \" Hello \"}]",
		"[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"assistant\", \"content\": "
		"\"<think>\\nx\\n</think>\\n\\nb\"}, {\"role\": \"user\", \"content\": \"c\"}, {\"role\": \"assistant\", "
		"\"content\": \"<think>\\ny\\n</think>\\n\\nd\"}]",
		"[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"r\", "
		"\"reasoning_content\": \"why\"}]",
		"[{\"role\": \"user\", \"content\": \"only\"}]",
		/* a system message before a chat that ends with a user turn (Mistral puts it there) */
		"[{\"role\": \"system\", \"content\": \"S\"}, {\"role\": \"user\", \"content\": \"u1\"}, {\"role\": "
		"\"assistant\", \"content\": \"a1\\n\"}, {\"role\": \"user\", \"content\": \" u2 \"}]",
		/* an empty system message (Phi-3.5 leaves it out, Phi-3 does not) */
		"[{\"role\": \"system\", \"content\": \"\"}, {\"role\": \"user\", \"content\": \"x\"}]",
		/* roles that do not alternate: both raise */
		"[{\"role\": \"user\", \"content\": \"a\"}, {\"role\": \"user\", \"content\": \"b\"}]",
	};
	static const struct {
		enum tern_chat_template t;
		const char *file, *bos, *eos;
		unsigned skip; /* chats (bits) the real template is not compared on */
	} cases[] = {
		{TERN_TEMPLATE_QWEN3, "qwen3.jinja", NULL, "<|im_end|>", 7u << 4},
		{TERN_TEMPLATE_GEMMA, "gemma3.jinja", "<bos>", "<eos>", 0},
		/* Gemma 2 refuses a system message, tern's gemma (Gemma 3's) takes it */
		{TERN_TEMPLATE_GEMMA, "gemma2.jinja", "<bos>", "<eos>", 1u | 1u << 4 | 1u << 5},
		{TERN_TEMPLATE_MISTRAL_V2V3, "mistral-v0.3.jinja", "<s>", "</s>", 0},
		{TERN_TEMPLATE_MISTRAL_V3_TEKKEN, "mistral-nemo.jinja", "<s>", "</s>", 0},
		{TERN_TEMPLATE_PHI_3, "phi3.jinja", "<s>", "<|endoftext|>", 0},
		{TERN_TEMPLATE_PHI_35, "phi3.5.jinja", "<s>", "<|endoftext|>", 0},
	};
	const int n_chats = (int)(sizeof chats / sizeof *chats);
	for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
		struct tern_chat *mine = NULL, *real = NULL;
		enum tern_chat_template t = cases[ci].t;
		const char *file = cases[ci].file;
		if (tern_chat_builtin(&mine, t) != TERN_OK || !(real = open_template(file))) {
			checkf(false, "built-in %s: %s", tern_chat_template_name(t), tern_error());
			tern_chat_free(mine);
			continue;
		}
		tern_chat_set_tokens(mine, cases[ci].bos, cases[ci].eos, NULL);
		tern_chat_set_tokens(real, cases[ci].bos, cases[ci].eos, NULL);
		for (int i = 0; i < n_chats; i++)
			for (int agp = 0; agp < 2; agp++) {
				if (cases[ci].skip >> i & 1)
					continue;
				json_t *m = json_loads(chats[i], 0, NULL);
				struct tern_chat_text a, b;
				enum tern_status sa = tern_chat_render(mine, m, agp, false, &a);
				char ea[512];
				snprintf(ea, sizeof ea, "%s", sa ? tern_error() : "");
				enum tern_status sb = tern_chat_render(real, m, agp, false, &b);
				/* both render the same text, or both raise (tern's with one line naming it) */
				bool ok = (!sa && !sb && a.len == b.len && !memcmp(a.text, b.text, a.len)) ||
					  (sa && sb && strstr(ea, "raised: ") && !strchr(ea, '\n') &&
					   strstr(ea, tern_chat_template_name(t)));
				if (!ok)
					printf("  %s chat %d\n  mine %s\n  real %s\n", file, i,
					       sa ? ea : a.text, sb ? tern_error() : b.text);
				checkf(ok,
				       "built-in %s renders chat %d (add_generation_prompt %d) as %s does",
				       tern_chat_template_name(t), i, agp, file);
				if (!sa)
					tern_chat_text_free(&a);
				if (!sb)
					tern_chat_text_free(&b);
				json_decref(m);
			}
		tern_chat_free(mine);
		tern_chat_free(real);
	}
}

/* ---- generation spans, config values, tokenizer_config forms ---- */

static void spans_and_sources(void)
{
	/* {% generation %}: the trained spans are the blocks */
	static const char gen[] =
		"{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}"
		"{{ m.content }}</a>{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}";
	struct tern_chat *c = NULL;
	json_t *m = json_loads(msgs_vars, 0, NULL);
	struct tern_chat_text ct;
	bool ok = tern_chat_from_text(&c, "gen", gen, sizeof gen - 1) == TERN_OK &&
		  tern_chat_render(c, json_object_get(m, "messages"), false, true, &ct) == TERN_OK;
	ok = ok && !strcmp(ct.text, "<user>hi<assistant>yo</a>") && ct.n_span == 1 &&
	     !strncmp(ct.text + ct.span[0], "yo</a>", ct.span[1] - ct.span[0]) && ct.span[1] == ct.len;
	check(ok, "{% generation %} blocks are the trained spans");
	if (ok)
		tern_chat_text_free(&ct);
	tern_chat_free(c);
	/* without blocks: the content and the end marker after it, not the header */
	static const char plain[] =
		"{% for m in messages %}[{{ m.role }}]\n{{ m.content | trim }}<END>\n{% endfor %}";
	static const char *const markers[] = {"<END>", NULL};
	c = NULL;
	ok = tern_chat_from_text(&c, "plain", plain, sizeof plain - 1) == TERN_OK;
	if (ok)
		tern_chat_set_tokens(c, NULL, NULL, markers);
	ok = ok && tern_chat_render(c, json_object_get(m, "messages"), false, true, &ct) == TERN_OK;
	ok = ok && ct.n_span == 1 && ct.span[1] - ct.span[0] == 7 &&
	     !strncmp(ct.text + ct.span[0], "yo<END>", 7);
	check(ok, "a turn's span is its content and the end marker after it");
	if (ok)
		tern_chat_text_free(&ct);
	tern_chat_free(c);
	json_decref(m);

	/* a template that needs a field of the assistant message: the span is found with only the
	 * content replaced */
	static const char tagged[] =
		"{% for m in messages %}{% if m.role == 'assistant' and m.tag is not defined %}"
		"{{ raise_exception('no tag') }}{% endif %}<{{ m.role }}>{{ m.content }}<END>{% endfor %}";
	json_t *tm = json_loads("[{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", "
				"\"content\": \"a\", \"tag\": 1}]",
				0, NULL);
	c = NULL;
	ok = tern_chat_from_text(&c, "tagged", tagged, sizeof tagged - 1) == TERN_OK;
	if (ok)
		tern_chat_set_tokens(c, NULL, NULL, markers);
	ok = ok && tern_chat_render(c, tm, false, true, &ct) == TERN_OK;
	ok = ok && ct.n_span == 1 && ct.span[1] - ct.span[0] == 6 &&
	     !strncmp(ct.text + ct.span[0], "a<END>", 6);
	check(ok, "a span is found when the template refuses the message without its other fields");
	if (ok)
		tern_chat_text_free(&ct);
	tern_chat_free(c);
	json_decref(tm);

	/* chat_template_jinja: inline text, a file, neither */
	c = NULL;
	check(tern_chat_from_config_value(&c, "{{ messages | length }}") == TERN_OK && c,
	      "chat_template_jinja as text");
	tern_chat_free(c);
	c = NULL;
	check(tern_chat_from_config_value(&c, template_path("phi4.jinja")) == TERN_OK && c,
	      "chat_template_jinja as a file");
	tern_chat_free(c);
	c = NULL;
	check(tern_chat_from_config_value(&c, "no/such/file.jinja") == TERN_E_IO &&
		      !strcmp(tern_error(),
			      "chat_template_jinja: 'no/such/file.jinja' is neither a template (no {{ or "
			      "{%) nor a readable file"),
	      "chat_template_jinja naming no file: one-line error");
	check(tern_chat_from_config_value(&c, NULL) == TERN_E_INVALID &&
		      strstr(tern_error(), "chat_template: jinja needs chat_template_jinja"),
	      "chat_template: jinja without chat_template_jinja: one-line error");

	/* tokenizer_config.json: the list form's default entry; chat_template.jinja beside it */
	char dir[] = "/tmp/tern_chat_XXXXXX";
	if (!mkdtemp(dir)) {
		check(false, "mkdtemp");
		return;
	}
	char cfg[128], side[128];
	snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir);
	snprintf(side, sizeof side, "%s/chat_template.jinja", dir);
	FILE *f = fopen(cfg, "w");
	fputs("{\"chat_template\": [{\"name\": \"tool_use\", \"template\": \"T\"}, {\"name\": \"default\", "
	      "\"template\": \"D{{ messages | length }}\"}]}",
	      f);
	fclose(f);
	m = json_loads("[]", 0, NULL);
	c = NULL;
	ok = tern_chat_from_tokenizer_config(&c, cfg) == TERN_OK &&
	     tern_chat_render(c, m, false, false, &ct) == TERN_OK;
	ok = ok && !strcmp(ct.text, "D0");
	check(ok, "tokenizer_config.json's list form: the default template");
	if (ok)
		tern_chat_text_free(&ct);
	tern_chat_free(c);
	f = fopen(cfg, "w");
	fputs("{\"eos_token\": \"</s>\"}", f);
	fclose(f);
	c = NULL;
	char want[512];
	snprintf(
		want, sizeof want,
		"%s: no chat_template (nor chat_template.jinja beside it); set chat_template: chatml, llama3, "
		"mistral_v1, qwen3, gemma or jinja with chat_template_jinja",
		cfg);
	check(tern_chat_from_tokenizer_config(&c, cfg) == TERN_E_UNSUPPORTED && !strcmp(tern_error(), want),
	      "tokenizer_config.json without a template: one-line error");
	f = fopen(side, "w");
	fputs("S{{ messages | length }}", f);
	fclose(f);
	ok = tern_chat_from_tokenizer_config(&c, cfg) == TERN_OK &&
	     tern_chat_render(c, m, false, false, &ct) == TERN_OK;
	ok = ok && !strcmp(ct.text, "S0");
	check(ok, "chat_template.jinja beside tokenizer_config.json");
	if (ok)
		tern_chat_text_free(&ct);
	tern_chat_free(c);
	json_decref(m);
	remove(side);
	remove(cfg);
	rmdir(dir);
}

/* ---- config keys ---- */

static struct tern_config *parse(const char *text)
{
	struct tern_config *cfg = NULL;
	if (tern_config_parse(&cfg, "configs/x.yaml", text, strlen(text)) != TERN_OK)
		printf("  parse: %s\n", tern_error());
	return cfg;
}

#define HEAD "base_model: m\ndatasets:\n  - path: d.jsonl\n    type: chat_template\n"

static void config_keys(void)
{
	struct tern_config *cfg =
		parse(HEAD "chat_template: jinja\nchat_template_jinja: |\n  {{ bos_token }}{% for m in "
			   "messages %}{{ m.content }}{% endfor %}\n");
	struct tern_data_opts o;
	check(cfg && cfg->chat_template == TERN_TEMPLATE_JINJA && cfg->chat_template_jinja &&
		      !strcmp(cfg->chat_template_jinja,
			      "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}\n"),
	      "config: chat_template: jinja with a block-scalar chat_template_jinja");
	tern_config_free(cfg);
	cfg = parse(HEAD "chat_template_jinja: templates/mine.jinja\n");
	if (cfg)
		tern_data_opts_from_config(&o, cfg);
	check(cfg && cfg->chat_template == TERN_TEMPLATE_TOKENIZER_DEFAULT &&
		      o.chat_template == TERN_TEMPLATE_JINJA &&
		      !strcmp(o.chat_template_jinja, "templates/mine.jinja"),
	      "config: chat_template_jinja without chat_template implies jinja");
	tern_config_free(cfg);
	cfg = parse(HEAD "chat_template: qwen3\n");
	check(cfg && cfg->chat_template == TERN_TEMPLATE_QWEN3, "config: chat_template: qwen3");
	tern_config_free(cfg);
	cfg = parse(HEAD "chat_template: gemma\n");
	check(cfg && cfg->chat_template == TERN_TEMPLATE_GEMMA, "config: chat_template: gemma");
	tern_config_free(cfg);
	static const struct {
		const char *name;
		enum tern_chat_template t;
	} names[] = {{"gemma3", TERN_TEMPLATE_GEMMA},
		     {"mistral_v2v3", TERN_TEMPLATE_MISTRAL_V2V3},
		     {"mistral_v3_tekken", TERN_TEMPLATE_MISTRAL_V3_TEKKEN},
		     {"phi_3", TERN_TEMPLATE_PHI_3},
		     {"phi_35", TERN_TEMPLATE_PHI_35}};
	for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
		char text[256];
		snprintf(text, sizeof text, HEAD "chat_template: %s\n", names[i].name);
		cfg = parse(text);
		checkf(cfg && cfg->chat_template == names[i].t, "config: chat_template: %s (axolotl's name)",
		       names[i].name);
		tern_config_free(cfg);
	}
	cfg = NULL;
	const char *bad = HEAD "chat_template: gemma9\n";
	enum tern_status st = tern_config_parse(&cfg, "configs/x.yaml", bad, strlen(bad));
	check(st != TERN_OK && strstr(tern_error(), "chat_template") && strstr(tern_error(), "qwen3") &&
		      strstr(tern_error(), "jinja") && !strchr(tern_error(), '\n'),
	      "config: an unknown chat_template lists the values, qwen3, gemma and jinja among them");
	tern_config_free(cfg);
}

int main(void)
{
	data_dir = getenv("TERN_TEST_DATA");
	tok_dir = getenv("TERN_TOKENIZERS");
	if (!data_dir || !tok_dir) {
		printf("TERN_TEST_DATA and TERN_TOKENIZERS must be set (ctest sets them)\n");
		return 1;
	}
	tern_set_log(NULL, NULL, TERN_LOG_ERROR);
	constructs();
	errors();
	goldens();
	reference_ids();
	builtins();
	spans_and_sources();
	config_keys();
	free_toks();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
