/* A Jinja subset for chat templates: enough of Jinja2 as transformers runs it
 * (ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the loopcontrols extension)
 * for the templates of Llama 3.x, Qwen2.5/Qwen3, Mistral, Gemma 2/3 and Phi-3/3.5/4.
 *
 * Statements  if/elif/else, for (loop.*, else, `for x in xs if c`, `for k, v in d.items()`),
 *             break, continue, set (`set x = e`, `set ns.attr = e`, `set x %}..{% endset`),
 *             macro (top level, positional and keyword arguments with defaults),
 *             generation (transformers' assistant-span marker), comments; whitespace control
 *             {%- -%} {{- -}} {#- -#} and {%+.
 * Expressions literals (strings, ints, floats, true/false/none, lists, tuples, dicts), names,
 *             .attr, [key], [a:b:c], calls, filters, `is` tests, not/and/or, in/not in,
 *             == != < <= > >=, + - * / // % **, ~, `a if c else b`.
 * Filters     length count trim tojson upper lower capitalize title first last default d join
 *             replace string items list selectattr rejectattr select reject map reverse sort int
 *             float abs safe escape e indent max min sum unique (tojson: transformers' arguments
 *             and Python json.dumps's output)
 * Tests       defined undefined none string mapping iterable sequence number integer float
 *             boolean true false callable equalto eq ne lt le gt ge == != < <= > >= divisibleby
 *             even odd in sameas lower upper
 * Methods     str: strip lstrip rstrip split startswith endswith upper lower title capitalize
 *             replace find count join; dict: items keys values get
 * Globals     range, namespace, dict, raise_exception (an error "raised: <message>"); no
 *             strftime_now, so a template's date falls back to its own default (reproducible).
 * Values are jansson values (NULL is Jinja's undefined). upper/lower/title change ASCII letters
 * only; str() of a float is Python's shortest repr.
 *
 * Every error is one line "<name>:<line>: <reason>" (TERN_E_FORMAT for a template that does not
 * parse, TERN_E_INVALID for one that fails while rendering). A hostile template cannot hang or
 * exhaust memory: nesting, macro recursion, output size and steps are bounded (limits below). */
#ifndef TERN_JINJA_H
#define TERN_JINJA_H

#include "core/core.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#define TERN_JINJA_MAX_SOURCE (1u << 20) /* template bytes */
#define TERN_JINJA_MAX_NEST 200          /* nesting of statements and expressions */
#define TERN_JINJA_MAX_CALLS 64          /* macro call depth */

struct tern_jinja_limits {
	size_t max_output;   /* bytes of output and of any string built (0: 16 MiB) */
	long long max_steps; /* statements, loop iterations and expression nodes (0: 10 million) */
};

struct tern_jinja;

/* Parses len bytes of template text. name is used in messages ("x/tokenizer_config.json"). */
enum tern_status tern_jinja_parse(struct tern_jinja **out, const char *name, const char *src, size_t len);

void tern_jinja_free(struct tern_jinja *t);

/* True when the template marks assistant output with {% generation %}. */
bool tern_jinja_has_generation(const struct tern_jinja *t);

struct tern_jinja_out {
	char *text; /* malloc'd, NUL-terminated */
	size_t len;
	size_t *gen; /* n_gen [start, end) byte ranges produced inside {% generation %}, 2 per range */
	size_t n_gen;
};

/* Renders with the variables of the JSON object vars (borrowed, not changed). lim may be NULL. On
 * failure out is left empty. */
enum tern_status tern_jinja_render(const struct tern_jinja *t, json_t *vars,
				   const struct tern_jinja_limits *lim, struct tern_jinja_out *out);

void tern_jinja_out_free(struct tern_jinja_out *o);

#endif
