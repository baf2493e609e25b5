/* A Jinja subset for chat templates. The subset, its semantics and limits: jinja.h.
 *
 * Three stages: the lexer cuts the source into text and tag tokens, applying whitespace control
 * (trim_blocks, lstrip_blocks, -, +) as Jinja's lexer does; a recursive-descent parser builds a
 * tree of nodes with Jinja's operator precedence; the renderer walks the tree over jansson values
 * (NULL = undefined) with a stack of variable frames. Nodes and strings live in one arena freed
 * with the template. */
#define _POSIX_C_SOURCE 200809L
#include "data/jinja.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

static void *arena_alloc(struct arena_block **a, size_t n)
{
	n = (n + sizeof(max_align_t) - 1) / sizeof(max_align_t) * sizeof(max_align_t);
	if (!*a || (*a)->used + n > (*a)->cap) {
		size_t cap = n > 65536 ? n : 65536;
		struct arena_block *b = malloc(sizeof *b + cap);
		if (!b)
			return NULL;
		b->next = *a;
		b->used = 0;
		b->cap = cap;
		*a = b;
	}
	void *p = (char *)(*a)->data + (*a)->used;
	(*a)->used += n;
	memset(p, 0, n);
	return p;
}

/* ---- tokens ---- */

enum tk { T_EOF, T_TEXT, T_VBEG, T_VEND, T_BBEG, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP };

struct tok {
	enum tk k;
	int line;
	const char *p; /* T_TEXT, T_NAME, T_OP: slice of the source; T_STR: decoded (arena) */
	size_t n;
	long long iv;
	double fv;
};

/* ---- nodes ---- */

enum nk {
	/* expressions */
	N_CONST,
	N_NAME,
	N_LIST,
	N_DICT,
	N_ATTR,
	N_ITEM,
	N_SLICE,
	N_CALL,
	N_FILTER,
	N_TEST,
	N_NEG,
	N_POS,
	N_NOT,
	N_AND,
	N_OR,
	N_BIN,
	N_COND,
	/* statements */
	S_TEXT,
	S_OUT,
	S_IF,
	S_FOR,
	S_SET,
	S_SETBLOCK,
	S_MACRO,
	S_BREAK,
	S_CONTINUE,
	S_GEN
};

enum binop {
	OP_ADD,
	OP_SUB,
	OP_MUL,
	OP_DIV,
	OP_FDIV,
	OP_MOD,
	OP_POW,
	OP_CAT,
	OP_EQ,
	OP_NE,
	OP_LT,
	OP_LE,
	OP_GT,
	OP_GE,
	OP_IN,
	OP_NOTIN
};

struct node {
	enum nk k;
	int line;
	int op;           /* N_BIN: enum binop; N_TEST: negated */
	const char *s;    /* name, attribute, filter, test, text; S_SET: variable */
	size_t sn;        /* S_TEXT length */
	const char *attr; /* S_SET: namespace attribute */
	json_t *v;        /* N_CONST */
	struct node *a, *b, *c;
	struct node **l1; /* args, items, keys, body */
	int n1;
	struct node **l2; /* kwarg values, dict values, else body, macro defaults */
	int n2;
	const char **names; /* kwarg names, for targets, macro parameters */
	int nn;
};

struct macro {
	const char *name;
	struct node *n;
};

struct tern_jinja {
	char *name;
	struct arena_block *arena;
	struct node **body;
	int nbody;
	json_t **consts;
	size_t nconsts, cconsts;
	struct macro *macros;
	int nmacros;
	bool has_gen;
};

/* Messages echo template text and values: control characters become spaces so that an error
 * stays one line. */
static void one_line(char *msg)
{
	for (; *msg; msg++)
		if ((unsigned char)*msg < 0x20)
			*msg = ' ';
}

/* ---- lexer ---- */

struct lexer {
	struct tern_jinja *t;
	const char *src;
	size_t len, pos;
	int line;
	struct tok *v;
	size_t n, cap;
	enum tern_status st;
};

static enum tern_status lex_fail(struct lexer *L, int line, const char *fmt, ...) TERN_PRINTF(3, 4);
static enum tern_status lex_fail(struct lexer *L, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	one_line(msg);
	return L->st = tern_fail(TERN_E_FORMAT, "%s:%d: %s", L->t->name, line, msg);
}

static struct tok *lex_push(struct lexer *L, enum tk k, int line, const char *p, size_t n)
{
	if (L->n == L->cap) {
		size_t nc = L->cap ? L->cap * 2 : 256;
		struct tok *v = realloc(L->v, nc * sizeof *v);
		if (!v) {
			L->st = tern_fail(TERN_E_NOMEM, "out of host memory");
			return NULL;
		}
		L->v = v;
		L->cap = nc;
	}
	struct tok *t = &L->v[L->n++];
	memset(t, 0, sizeof *t);
	t->k = k;
	t->line = line;
	t->p = p;
	t->n = n;
	return t;
}

static bool is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static int count_nl(const char *p, size_t n)
{
	int k = 0;
	for (size_t i = 0; i < n; i++)
		k += p[i] == '\n';
	return k;
}

static void put_utf8(char *o, size_t *k, uint32_t c)
{
	if (c < 0x80) {
		o[(*k)++] = (char)c;
	} else if (c < 0x800) {
		o[(*k)++] = (char)(0xC0 | c >> 6);
		o[(*k)++] = (char)(0x80 | (c & 0x3F));
	} else if (c < 0x10000) {
		o[(*k)++] = (char)(0xE0 | c >> 12);
		o[(*k)++] = (char)(0x80 | (c >> 6 & 0x3F));
		o[(*k)++] = (char)(0x80 | (c & 0x3F));
	} else {
		o[(*k)++] = (char)(0xF0 | c >> 18);
		o[(*k)++] = (char)(0x80 | (c >> 12 & 0x3F));
		o[(*k)++] = (char)(0x80 | (c >> 6 & 0x3F));
		o[(*k)++] = (char)(0x80 | (c & 0x3F));
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A string literal at L->pos (the quote): Python escapes. */
static bool lex_string(struct lexer *L)
{
	const char *s = L->src;
	char q = s[L->pos];
	int line = L->line;
	size_t i = L->pos + 1, start = i;
	while (i < L->len && s[i] != q) {
		if (s[i] == '\\')
			i++;
		i++;
	}
	if (i >= L->len) {
		lex_fail(L, line, "unterminated string");
		return false;
	}
	char *o = arena_alloc(&L->t->arena, i - start + 1);
	if (!o) {
		L->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return false;
	}
	size_t k = 0;
	for (size_t j = start; j < i; j++) {
		char c = s[j];
		if (c == '\n')
			L->line++;
		if (c != '\\') {
			o[k++] = c;
			continue;
		}
		c = s[++j];
		int nhex = c == 'x' ? 2 : c == 'u' ? 4 : c == 'U' ? 8 : 0;
		if (nhex) {
			uint32_t cp = 0;
			int d = 0;
			for (; d < nhex && j + 1 < i && hexval(s[j + 1]) >= 0; d++)
				cp = cp * 16 + (uint32_t)hexval(s[++j]);
			if (d < nhex || cp > 0x10FFFF || (cp >= 0xD800 && cp < 0xE000)) {
				lex_fail(L, line, "bad \\%c escape in a string", c);
				return false;
			}
			put_utf8(o, &k, cp);
			continue;
		}
		switch (c) {
		case 'n': o[k++] = '\n'; break;
		case 't': o[k++] = '\t'; break;
		case 'r': o[k++] = '\r'; break;
		case '0': o[k++] = '\0'; break;
		case 'a': o[k++] = '\a'; break;
		case 'b': o[k++] = '\b'; break;
		case 'f': o[k++] = '\f'; break;
		case 'v': o[k++] = '\v'; break;
		case '\\': o[k++] = '\\'; break;
		case '\'': o[k++] = '\''; break;
		case '"': o[k++] = '"'; break;
		case '\n': L->line++; break;
		default: o[k++] = '\\'; o[k++] = c;
		}
	}
	struct tok *t = lex_push(L, T_STR, line, o, k);
	if (!t)
		return false;
	L->pos = i + 1;
	return true;
}

static bool name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

/* Tokens inside a tag up to and including its end, with the end's whitespace control applied;
 * *nl tells whether the end consumed a newline (then the next text starts a line). */
static bool lex_tag(struct lexer *L, bool block, bool *nl)
{
	const char *s = L->src;
	int depth = 0, open_line = L->line;
	*nl = false;
	for (;;) {
		while (L->pos < L->len && is_ws(s[L->pos]))
			L->line += s[L->pos++] == '\n';
		if (L->pos >= L->len) {
			lex_fail(L, open_line, "unterminated %s (no %s)", block ? "{% tag" : "{{ expression",
				 block ? "%}" : "}}");
			return false;
		}
		size_t p = L->pos, rest = L->len - p;
		char c = s[p];
		const char *end = block ? "%}" : "}}";
		if (depth == 0) {
			bool minus = c == '-' && rest >= 3 && !memcmp(s + p + 1, end, 2);
			bool plus = block && c == '+' && rest >= 3 && !memcmp(s + p + 1, end, 2);
			if (minus || plus || (rest >= 2 && !memcmp(s + p, end, 2))) {
				if (!lex_push(L, block ? T_BEND : T_VEND, L->line, s + p, 0))
					return false;
				L->pos = p + 2 + (minus || plus);
				if (minus) {
					while (L->pos < L->len && is_ws(s[L->pos])) {
						*nl = s[L->pos] == '\n';
						L->line += s[L->pos++] == '\n';
					}
				} else if (block && !plus && L->pos < L->len && s[L->pos] == '\n') {
					L->pos++;
					L->line++;
					*nl = true;
				}
				return true;
			}
		}
		if (c == '\'' || c == '"') {
			if (!lex_string(L))
				return false;
			continue;
		}
		if (name_start(c)) {
			size_t e = p;
			while (e < L->len && name_char(s[e]))
				e++;
			if (!lex_push(L, T_NAME, L->line, s + p, e - p))
				return false;
			L->pos = e;
			continue;
		}
		if (c >= '0' && c <= '9') {
			size_t e = p;
			bool flt = false;
			while (e < L->len && ((s[e] >= '0' && s[e] <= '9') || s[e] == '_'))
				e++;
			if (e + 1 < L->len && s[e] == '.' && s[e + 1] >= '0' && s[e + 1] <= '9') {
				flt = true;
				e++;
				while (e < L->len && ((s[e] >= '0' && s[e] <= '9') || s[e] == '_'))
					e++;
			}
			if (e < L->len && (s[e] == 'e' || s[e] == 'E')) {
				size_t f = e + 1;
				if (f < L->len && (s[f] == '+' || s[f] == '-'))
					f++;
				if (f < L->len && s[f] >= '0' && s[f] <= '9') {
					flt = true;
					e = f;
					while (e < L->len && s[e] >= '0' && s[e] <= '9')
						e++;
				}
			}
			char buf[64];
			size_t k = 0;
			for (size_t j = p; j < e && k + 1 < sizeof buf; j++)
				if (s[j] != '_')
					buf[k++] = s[j];
			buf[k] = 0;
			struct tok *t = lex_push(L, flt ? T_FLOAT : T_INT, L->line, s + p, e - p);
			if (!t)
				return false;
			if (flt) {
				t->fv = strtod(buf, NULL);
			} else {
				errno = 0;
				t->iv = strtoll(buf, NULL, 10);
				if (errno) {
					lex_fail(L, L->line, "integer %s is too large", buf);
					return false;
				}
			}
			L->pos = e;
			continue;
		}
		static const char *const two[] = {"**", "//", "==", "!=", "<=", ">=", NULL};
		size_t n = 0;
		for (int i = 0; two[i]; i++)
			if (rest >= 2 && !memcmp(s + p, two[i], 2))
				n = 2;
		if (!n && strchr("+-*/%~<>=()[]{},.:|", c) && c)
			n = 1;
		if (!n) {
			lex_fail(L, L->line, "unexpected character '%c' in a tag", c);
			return false;
		}
		if (c == '(' || c == '[' || c == '{')
			depth++;
		else if ((c == ')' || c == ']' || c == '}') && depth > 0)
			depth--;
		if (!lex_push(L, T_OP, L->line, s + p, n))
			return false;
		L->pos += n;
	}
}

static bool lex(struct lexer *L)
{
	const char *s = L->src;
	bool strip_next = false, line_start = true;
	while (L->pos <= L->len) {
		size_t q = L->pos;
		while (q + 1 < L->len &&
		       !(s[q] == '{' && (s[q + 1] == '{' || s[q + 1] == '%' || s[q + 1] == '#')))
			q++;
		if (q + 1 >= L->len)
			q = L->len;
		size_t a = L->pos, b = q;
		int text_line = L->line;
		if (strip_next)
			while (a < b && is_ws(s[a]))
				a++;
		text_line += count_nl(s + L->pos, a - L->pos);
		L->line += count_nl(s + L->pos, q - L->pos);
		char kind = q < L->len ? s[q + 1] : 0;
		char ctl = q + 2 < L->len ? s[q + 2] : 0;
		if (kind && ctl == '-') {
			while (b > a && is_ws(s[b - 1]))
				b--;
		} else if ((kind == '%' || kind == '#') && ctl != '+') {
			/* lstrip_blocks: spaces and tabs between a line start and the tag */
			size_t l = b;
			while (l > a && (s[l - 1] == ' ' || s[l - 1] == '\t'))
				l--;
			if ((l > a && s[l - 1] == '\n') || (l == a && line_start && a == L->pos))
				b = l;
		}
		if (b > a && !lex_push(L, T_TEXT, text_line, s + a, b - a))
			return false;
		if (!kind)
			break;
		L->pos = q + 2 + (ctl == '-' || ctl == '+');
		strip_next = false;
		bool nl = false;
		if (kind == '#') {
			int open = L->line;
			size_t e = L->pos;
			while (e + 1 < L->len && !(s[e] == '#' && s[e + 1] == '}'))
				e++;
			if (e + 1 >= L->len)
				return lex_fail(L, open, "unterminated comment (no #})"), false;
			bool minus = e > L->pos && s[e - 1] == '-';
			L->line += count_nl(s + L->pos, e - L->pos);
			L->pos = e + 2;
			if (minus) {
				while (L->pos < L->len && is_ws(s[L->pos])) {
					nl = s[L->pos] == '\n';
					L->line += s[L->pos++] == '\n';
				}
			} else if (!(e > L->pos && s[e - 1] == '+') && L->pos < L->len && s[L->pos] == '\n') {
				L->pos++;
				L->line++;
				nl = true;
			}
		} else {
			if (!lex_push(L, kind == '%' ? T_BBEG : T_VBEG, L->line, s + q, 0))
				return false;
			if (!lex_tag(L, kind == '%', &nl))
				return false;
		}
		line_start = nl;
		(void)strip_next;
	}
	return lex_push(L, T_EOF, L->line, s + L->len, 0) != NULL;
}

/* ---- parser ---- */

struct parser {
	struct tern_jinja *t;
	struct tok *v;
	size_t i, n;
	int depth;
	enum tern_status st;
};

static enum tern_status perr(struct parser *P, int line, const char *fmt, ...) TERN_PRINTF(3, 4);
static enum tern_status perr(struct parser *P, int line, const char *fmt, ...)
{
	if (P->st)
		return P->st;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	one_line(msg);
	return P->st = tern_fail(TERN_E_FORMAT, "%s:%d: %s", P->t->name, line, msg);
}

static struct tok *cur(struct parser *P) { return &P->v[P->i]; }

static bool is_op(struct parser *P, const char *op)
{
	struct tok *t = cur(P);
	return t->k == T_OP && t->n == strlen(op) && !memcmp(t->p, op, t->n);
}

static bool is_name(struct parser *P, const char *nm)
{
	struct tok *t = cur(P);
	return t->k == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n);
}

static bool is_name_at(struct parser *P, size_t i, const char *nm)
{
	if (i >= P->n)
		return false;
	struct tok *t = &P->v[i];
	return t->k == T_NAME && t->n == strlen(nm) && !memcmp(t->p, nm, t->n);
}

static bool accept_op(struct parser *P, const char *op)
{
	if (!is_op(P, op))
		return false;
	P->i++;
	return true;
}

static bool accept_name(struct parser *P, const char *nm)
{
	if (!is_name(P, nm))
		return false;
	P->i++;
	return true;
}

static const char *tok_desc(struct tok *t, char *buf, size_t n)
{
	switch (t->k) {
	case T_EOF: return "the end of the template";
	case T_TEXT: return "text";
	case T_VBEG: return "'{{'";
	case T_VEND: return "'}}'";
	case T_BBEG: return "'{%'";
	case T_BEND: return "'%}'";
	case T_STR: return "a string";
	case T_INT:
	case T_FLOAT: return "a number";
	default: snprintf(buf, n, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p); return buf;
	}
}

static bool expect_op(struct parser *P, const char *op)
{
	if (accept_op(P, op))
		return true;
	char b[64];
	perr(P, cur(P)->line, "expected '%s', found %s", op, tok_desc(cur(P), b, sizeof b));
	return false;
}

static struct node *new_node(struct parser *P, enum nk k, int line)
{
	struct node *n = arena_alloc(&P->t->arena, sizeof *n);
	if (!n) {
		P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return NULL;
	}
	n->k = k;
	n->line = line;
	return n;
}

static const char *tok_str(struct parser *P, struct tok *t)
{
	char *s = arena_alloc(&P->t->arena, t->n + 1);
	if (!s) {
		P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return NULL;
	}
	memcpy(s, t->p, t->n);
	s[t->n] = 0;
	return s;
}

static bool keep_const(struct parser *P, json_t *v)
{
	struct tern_jinja *t = P->t;
	if (!v || (t->nconsts == t->cconsts && !(t->cconsts = t->cconsts ? t->cconsts * 2 : 32))) {
		json_decref(v);
		P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return false;
	}
	json_t **c = realloc(t->consts, t->cconsts * sizeof *c);
	if (!c) {
		json_decref(v);
		P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return false;
	}
	t->consts = c;
	t->consts[t->nconsts++] = v;
	return true;
}

static struct node *new_const(struct parser *P, int line, json_t *v)
{
	if (!keep_const(P, v))
		return NULL;
	struct node *n = new_node(P, N_CONST, line);
	if (n)
		n->v = v;
	return n;
}

/* A growable list of nodes (copied into the arena when done). */
struct nlist {
	struct node **v;
	const char **names;
	int n, cap;
};

static bool nl_push(struct parser *P, struct nlist *l, struct node *x, const char *name)
{
	if (l->n == l->cap) {
		int nc = l->cap ? l->cap * 2 : 8;
		struct node **v = realloc(l->v, (size_t)nc * sizeof *v);
		if (v)
			l->v = v;
		const char **nm = v ? realloc(l->names, (size_t)nc * sizeof *nm) : NULL;
		if (!nm) {
			P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
			return false;
		}
		l->names = nm;
		l->cap = nc;
	}
	l->v[l->n] = x;
	l->names[l->n++] = name;
	return true;
}

static bool nl_done(struct parser *P, struct nlist *l, struct node ***v, const char ***names, int *n)
{
	*n = l->n;
	*v = NULL;
	if (names)
		*names = NULL;
	if (l->n) {
		*v = arena_alloc(&P->t->arena, (size_t)l->n * sizeof **v);
		if (names)
			*names = arena_alloc(&P->t->arena, (size_t)l->n * sizeof **names);
		if (!*v || (names && !*names)) {
			P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		} else {
			memcpy(*v, l->v, (size_t)l->n * sizeof **v);
			if (names)
				memcpy(*names, l->names, (size_t)l->n * sizeof **names);
		}
	}
	free(l->v);
	free(l->names);
	memset(l, 0, sizeof *l);
	return !P->st;
}

static struct node *parse_expr(struct parser *P);
static struct node *parse_or(struct parser *P);
static struct node *parse_unary(struct parser *P, bool with_filter);
static struct node *parse_primary(struct parser *P);
static struct node *parse_postfix(struct parser *P, struct node *n);

static bool enter(struct parser *P)
{
	if (++P->depth > TERN_JINJA_MAX_NEST) {
		perr(P, cur(P)->line, "nesting deeper than %d", TERN_JINJA_MAX_NEST);
		return false;
	}
	return true;
}

/* (args, name=value) after '(' was consumed; fills l1/l2/names of n */
static bool parse_args(struct parser *P, struct node *n)
{
	struct nlist pos = {0}, kw = {0};
	bool ok = true;
	while (ok && !is_op(P, ")")) {
		if (pos.n + kw.n && !expect_op(P, ",")) {
			ok = false;
			break;
		}
		if (is_op(P, ")"))
			break;
		if (cur(P)->k == T_NAME && P->i + 1 < P->n && P->v[P->i + 1].k == T_OP &&
		    P->v[P->i + 1].n == 1 && P->v[P->i + 1].p[0] == '=') {
			const char *nm = tok_str(P, cur(P));
			P->i += 2;
			struct node *x = nm ? parse_expr(P) : NULL;
			ok = x && nl_push(P, &kw, x, nm);
		} else {
			if (kw.n) {
				perr(P, cur(P)->line, "a positional argument after a keyword argument");
				ok = false;
				break;
			}
			struct node *x = parse_expr(P);
			ok = x && nl_push(P, &pos, x, NULL);
		}
	}
	ok = ok && expect_op(P, ")");
	const char **unused;
	ok = nl_done(P, &pos, &n->l1, &unused, &n->n1) && ok;
	ok = nl_done(P, &kw, &n->l2, &n->names, &n->n2) && ok;
	n->nn = n->n2;
	return ok;
}

static struct node *parse_primary(struct parser *P)
{
	struct tok *t = cur(P);
	char b[64];
	if (!enter(P))
		return NULL;
	struct node *n = NULL;
	switch (t->k) {
	case T_NAME: {
		P->i++;
		if ((t->n == 4 && (!memcmp(t->p, "true", 4) || !memcmp(t->p, "True", 4))))
			n = new_const(P, t->line, json_true());
		else if (t->n == 5 && (!memcmp(t->p, "false", 5) || !memcmp(t->p, "False", 5)))
			n = new_const(P, t->line, json_false());
		else if (t->n == 4 && (!memcmp(t->p, "none", 4) || !memcmp(t->p, "None", 4)))
			n = new_const(P, t->line, json_null());
		else if ((n = new_node(P, N_NAME, t->line)))
			n->s = tok_str(P, t);
		break;
	}
	case T_STR: {
		/* adjacent literals concatenate */
		size_t total = 0, j = P->i;
		for (; j < P->n && P->v[j].k == T_STR; j++)
			total += P->v[j].n;
		char *s = malloc(total + 1);
		if (!s) {
			P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
			break;
		}
		size_t k = 0;
		for (; P->i < j; P->i++) {
			memcpy(s + k, P->v[P->i].p, P->v[P->i].n);
			k += P->v[P->i].n;
		}
		json_t *v = json_stringn(s, k);
		free(s);
		if (!v) {
			perr(P, t->line, "a string that is not valid UTF-8");
			break;
		}
		n = new_const(P, t->line, v);
		break;
	}
	case T_INT:
		P->i++;
		n = new_const(P, t->line, json_integer(t->iv));
		break;
	case T_FLOAT:
		P->i++;
		n = new_const(P, t->line, json_real(t->fv));
		break;
	case T_OP:
		if (accept_op(P, "(")) {
			/* (expr) or a tuple (a list here) */
			struct node *x = is_op(P, ")") ? NULL : parse_expr(P);
			if (!x && !is_op(P, ")"))
				break;
			if (x && accept_op(P, ")")) {
				n = x;
				break;
			}
			struct nlist l = {0};
			bool ok = !x || nl_push(P, &l, x, NULL);
			while (ok && accept_op(P, ",") && !is_op(P, ")")) {
				struct node *y = parse_expr(P);
				ok = y && nl_push(P, &l, y, NULL);
			}
			ok = ok && expect_op(P, ")");
			n = new_node(P, N_LIST, t->line);
			if (!n) {
				free(l.v);
				free(l.names);
				break;
			}
			if (!nl_done(P, &l, &n->l1, NULL, &n->n1) || !ok)
				n = NULL;
			break;
		}
		if (accept_op(P, "[")) {
			struct nlist l = {0};
			bool ok = true;
			while (ok && !is_op(P, "]")) {
				if (l.n && !(ok = expect_op(P, ",")))
					break;
				if (is_op(P, "]"))
					break;
				struct node *y = parse_expr(P);
				ok = y && nl_push(P, &l, y, NULL);
			}
			ok = ok && expect_op(P, "]");
			n = new_node(P, N_LIST, t->line);
			if (!n || !nl_done(P, &l, &n->l1, NULL, &n->n1) || !ok)
				n = NULL;
			break;
		}
		if (accept_op(P, "{")) {
			struct nlist keys = {0}, vals = {0};
			bool ok = true;
			while (ok && !is_op(P, "}")) {
				if (keys.n && !(ok = expect_op(P, ",")))
					break;
				if (is_op(P, "}"))
					break;
				struct node *k = parse_expr(P);
				ok = k && expect_op(P, ":");
				struct node *v = ok ? parse_expr(P) : NULL;
				ok = v && nl_push(P, &keys, k, NULL) && nl_push(P, &vals, v, NULL);
			}
			ok = ok && expect_op(P, "}");
			n = new_node(P, N_DICT, t->line);
			bool d1 = n && nl_done(P, &keys, &n->l1, NULL, &n->n1);
			bool d2 = n && nl_done(P, &vals, &n->l2, NULL, &n->n2);
			if (!n) {
				free(keys.v);
				free(keys.names);
				free(vals.v);
				free(vals.names);
			}
			if (!d1 || !d2 || !ok)
				n = NULL;
			break;
		}
		/* fallthrough */
	default: perr(P, t->line, "unexpected %s in an expression", tok_desc(t, b, sizeof b));
	}
	P->depth--;
	return P->st ? NULL : n;
}

static struct node *parse_postfix(struct parser *P, struct node *n)
{
	while (n) {
		int line = cur(P)->line;
		if (accept_op(P, ".")) {
			struct tok *t = cur(P);
			if (t->k == T_NAME) {
				struct node *x = new_node(P, N_ATTR, line);
				if (!x)
					return NULL;
				x->a = n;
				x->s = tok_str(P, t);
				P->i++;
				n = x;
			} else if (t->k == T_INT) {
				struct node *x = new_node(P, N_ITEM, line);
				if (!x)
					return NULL;
				x->a = n;
				x->b = new_const(P, line, json_integer(t->iv));
				P->i++;
				n = x->b ? x : NULL;
			} else {
				char b[64];
				perr(P, line, "expected a name after '.', found %s",
				     tok_desc(t, b, sizeof b));
				return NULL;
			}
		} else if (accept_op(P, "[")) {
			struct node *lo = NULL, *hi = NULL, *step = NULL;
			bool slice = false;
			if (!is_op(P, ":") && !(lo = parse_expr(P)))
				return NULL;
			if (accept_op(P, ":")) {
				slice = true;
				if (!is_op(P, ":") && !is_op(P, "]") && !(hi = parse_expr(P)))
					return NULL;
				if (accept_op(P, ":") && !is_op(P, "]") && !(step = parse_expr(P)))
					return NULL;
			}
			if (!expect_op(P, "]"))
				return NULL;
			struct node *x = new_node(P, slice ? N_SLICE : N_ITEM, line);
			if (!x)
				return NULL;
			x->a = n;
			x->b = lo;
			if (slice) {
				x->c = hi;
				x->l1 = arena_alloc(&P->t->arena, sizeof *x->l1);
				if (!x->l1)
					return NULL;
				x->l1[0] = step;
				x->n1 = 1;
			}
			n = x;
		} else if (accept_op(P, "(")) {
			struct node *x = new_node(P, N_CALL, line);
			if (!x)
				return NULL;
			x->a = n;
			if (!parse_args(P, x))
				return NULL;
			n = x;
		} else {
			break;
		}
	}
	return n;
}

static const char *const known_filters[] = {
	"length", "count",      "trim",       "tojson", "upper",  "lower",   "capitalize", "title",
	"first",  "last",       "default",    "d",      "join",   "replace", "string",     "items",
	"list",   "selectattr", "rejectattr", "select", "reject", "map",     "reverse",    "sort",
	"int",    "float",      "abs",        "safe",   "escape", "e",       "indent",     "max",
	"min",    "sum",        "unique",     NULL};
static const char *const known_tests[] = {
	"defined", "undefined", "none",    "string",   "mapping",     "iterable",    "sequence", "number",
	"integer", "float",     "boolean", "true",     "false",       "callable",    "equalto",  "eq",
	"ne",      "lt",        "le",      "gt",       "ge",          "==",          "!=",       "<",
	"<=",      ">",         ">=",      "lessthan", "greaterthan", "divisibleby", "even",     "odd",
	"in",      "sameas",    "lower",   "upper",    NULL};

static bool known(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (!strcmp(*list, s))
			return true;
	return false;
}

static struct node *parse_filter_expr(struct parser *P, struct node *n)
{
	while (n) {
		int line = cur(P)->line;
		if (accept_op(P, "|")) {
			struct tok *t = cur(P);
			if (t->k != T_NAME) {
				char b[64];
				perr(P, line, "expected a filter name after '|', found %s",
				     tok_desc(t, b, sizeof b));
				return NULL;
			}
			struct node *x = new_node(P, N_FILTER, line);
			if (!x)
				return NULL;
			x->a = n;
			if (!(x->s = tok_str(P, t)))
				return NULL;
			if (!known(known_filters, x->s)) {
				perr(P, line, "unknown filter '%s'", x->s);
				return NULL;
			}
			P->i++;
			if (accept_op(P, "(") && !parse_args(P, x))
				return NULL;
			n = x;
		} else if (accept_name(P, "is")) {
			struct node *x = new_node(P, N_TEST, line);
			if (!x)
				return NULL;
			x->a = n;
			x->op = accept_name(P, "not");
			struct tok *t = cur(P);
			if (t->k == T_NAME) {
				x->s = tok_str(P, t);
			} else if (t->k == T_OP && (is_op(P, "==") || is_op(P, "!=") || is_op(P, "<") ||
						    is_op(P, "<=") || is_op(P, ">") || is_op(P, ">="))) {
				x->s = tok_str(P, t);
			} else {
				char b[64];
				perr(P, line, "expected a test name after 'is', found %s",
				     tok_desc(t, b, sizeof b));
				return NULL;
			}
			if (!x->s)
				return NULL;
			if (!known(known_tests, x->s)) {
				perr(P, line, "unknown test '%s'", x->s);
				return NULL;
			}
			P->i++;
			if (accept_op(P, "(")) {
				if (!parse_args(P, x))
					return NULL;
			} else {
				struct tok *a = cur(P);
				bool arg = (a->k == T_NAME || a->k == T_STR || a->k == T_INT ||
					    a->k == T_FLOAT || is_op(P, "(") || is_op(P, "[") ||
					    is_op(P, "{")) &&
					   !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and") &&
					   !is_name(P, "if") && !is_name(P, "is");
				if (arg) {
					struct node *y = parse_postfix(P, parse_primary(P));
					if (!y)
						return NULL;
					x->l1 = arena_alloc(&P->t->arena, sizeof *x->l1);
					if (!x->l1)
						return NULL;
					x->l1[0] = y;
					x->n1 = 1;
				}
			}
			n = x;
		} else if (accept_op(P, "(")) {
			struct node *x = new_node(P, N_CALL, line);
			if (!x)
				return NULL;
			x->a = n;
			if (!parse_args(P, x))
				return NULL;
			n = x;
		} else {
			break;
		}
	}
	return n;
}

static struct node *parse_unary(struct parser *P, bool with_filter)
{
	int line = cur(P)->line;
	struct node *n;
	if (!enter(P))
		return NULL;
	if (is_op(P, "-") || is_op(P, "+")) {
		bool neg = is_op(P, "-");
		P->i++;
		n = new_node(P, neg ? N_NEG : N_POS, line);
		if (n && !(n->a = parse_unary(P, false)))
			n = NULL;
	} else {
		n = parse_primary(P);
	}
	n = parse_postfix(P, n);
	if (with_filter)
		n = parse_filter_expr(P, n);
	P->depth--;
	return n;
}

static struct node *bin(struct parser *P, int line, int op, struct node *a, struct node *b)
{
	if (!a || !b)
		return NULL;
	struct node *n = new_node(P, N_BIN, line);
	if (n) {
		n->op = op;
		n->a = a;
		n->b = b;
	}
	return n;
}

static struct node *parse_pow(struct parser *P)
{
	struct node *n = parse_unary(P, true);
	while (n && is_op(P, "**")) {
		int line = cur(P)->line;
		P->i++;
		n = bin(P, line, OP_POW, n, parse_unary(P, true));
	}
	return n;
}

static struct node *parse_math2(struct parser *P)
{
	struct node *n = parse_pow(P);
	for (;;) {
		int line = cur(P)->line, op;
		if (is_op(P, "*"))
			op = OP_MUL;
		else if (is_op(P, "/"))
			op = OP_DIV;
		else if (is_op(P, "//"))
			op = OP_FDIV;
		else if (is_op(P, "%"))
			op = OP_MOD;
		else
			return n;
		if (!n)
			return NULL;
		P->i++;
		n = bin(P, line, op, n, parse_pow(P));
	}
}

static struct node *parse_concat(struct parser *P)
{
	struct node *n = parse_math2(P);
	while (n && is_op(P, "~")) {
		int line = cur(P)->line;
		P->i++;
		n = bin(P, line, OP_CAT, n, parse_math2(P));
	}
	return n;
}

static struct node *parse_math1(struct parser *P)
{
	struct node *n = parse_concat(P);
	while (n && (is_op(P, "+") || is_op(P, "-"))) {
		int line = cur(P)->line, op = is_op(P, "+") ? OP_ADD : OP_SUB;
		P->i++;
		n = bin(P, line, op, n, parse_concat(P));
	}
	return n;
}

static struct node *parse_compare(struct parser *P)
{
	struct node *n = parse_math1(P);
	for (;;) {
		int line = cur(P)->line, op;
		if (is_op(P, "=="))
			op = OP_EQ;
		else if (is_op(P, "!="))
			op = OP_NE;
		else if (is_op(P, "<"))
			op = OP_LT;
		else if (is_op(P, "<="))
			op = OP_LE;
		else if (is_op(P, ">"))
			op = OP_GT;
		else if (is_op(P, ">="))
			op = OP_GE;
		else if (is_name(P, "in"))
			op = OP_IN;
		else if (is_name(P, "not") && is_name_at(P, P->i + 1, "in"))
			op = OP_NOTIN;
		else
			return n;
		if (!n)
			return NULL;
		P->i += op == OP_NOTIN ? 2 : 1;
		n = bin(P, line, op, n, parse_math1(P));
	}
}

static struct node *parse_not(struct parser *P)
{
	int line = cur(P)->line;
	if (accept_name(P, "not")) {
		if (!enter(P))
			return NULL;
		struct node *n = new_node(P, N_NOT, line);
		if (n && !(n->a = parse_not(P)))
			n = NULL;
		P->depth--;
		return n;
	}
	return parse_compare(P);
}

static struct node *parse_and(struct parser *P)
{
	struct node *n = parse_not(P);
	while (n && is_name(P, "and")) {
		int line = cur(P)->line;
		P->i++;
		struct node *x = new_node(P, N_AND, line);
		if (!x)
			return NULL;
		x->a = n;
		if (!(x->b = parse_not(P)))
			return NULL;
		n = x;
	}
	return n;
}

static struct node *parse_or(struct parser *P)
{
	struct node *n = parse_and(P);
	while (n && is_name(P, "or")) {
		int line = cur(P)->line;
		P->i++;
		struct node *x = new_node(P, N_OR, line);
		if (!x)
			return NULL;
		x->a = n;
		if (!(x->b = parse_and(P)))
			return NULL;
		n = x;
	}
	return n;
}

static struct node *parse_expr(struct parser *P)
{
	if (!enter(P))
		return NULL;
	struct node *n = parse_or(P);
	while (n && is_name(P, "if")) {
		int line = cur(P)->line;
		P->i++;
		struct node *x = new_node(P, N_COND, line);
		if (!x || !(x->b = parse_or(P))) {
			n = NULL;
			break;
		}
		x->a = n;
		if (accept_name(P, "else") && !(x->c = parse_expr(P))) {
			n = NULL;
			break;
		}
		n = x;
	}
	P->depth--;
	return n;
}

/* ---- statements ---- */

static bool parse_body(struct parser *P, const char *const *ends, struct node ***body, int *n,
		       const char **end);

static bool expect_bend(struct parser *P)
{
	if (cur(P)->k == T_BEND) {
		P->i++;
		return true;
	}
	char b[64];
	perr(P, cur(P)->line, "expected '%%}', found %s", tok_desc(cur(P), b, sizeof b));
	return false;
}

static struct node *parse_if(struct parser *P, int line)
{
	struct node *n = new_node(P, S_IF, line);
	if (!n || !(n->a = parse_expr(P)) || !expect_bend(P))
		return NULL;
	static const char *const ends[] = {"elif", "else", "endif", NULL};
	const char *end = NULL;
	if (!parse_body(P, ends, &n->l1, &n->n1, &end))
		return NULL;
	if (!strcmp(end, "elif")) {
		int l2 = P->v[P->i - 1].line;
		struct node *e = parse_if(P, l2);
		if (!e)
			return NULL;
		n->l2 = arena_alloc(&P->t->arena, sizeof *n->l2);
		if (!n->l2)
			return NULL;
		n->l2[0] = e;
		n->n2 = 1;
		return n;
	}
	if (!strcmp(end, "else")) {
		static const char *const ends2[] = {"endif", NULL};
		if (!expect_bend(P) || !parse_body(P, ends2, &n->l2, &n->n2, &end))
			return NULL;
	}
	return expect_bend(P) ? n : NULL;
}

static struct node *parse_for(struct parser *P, int line)
{
	struct node *n = new_node(P, S_FOR, line);
	if (!n)
		return NULL;
	struct nlist tg = {0};
	bool paren = accept_op(P, "(");
	bool ok = true;
	do {
		struct tok *t = cur(P);
		if (t->k != T_NAME) {
			char b[64];
			perr(P, t->line, "expected a loop variable, found %s", tok_desc(t, b, sizeof b));
			ok = false;
			break;
		}
		P->i++;
		ok = nl_push(P, &tg, NULL, tok_str(P, t));
	} while (ok && accept_op(P, ","));
	if (ok && paren)
		ok = expect_op(P, ")");
	struct node **unused;
	if (!nl_done(P, &tg, &unused, &n->names, &n->nn) || !ok)
		return NULL;
	if (!accept_name(P, "in")) {
		char b[64];
		perr(P, cur(P)->line, "expected 'in' in a for loop, found %s", tok_desc(cur(P), b, sizeof b));
		return NULL;
	}
	if (!(n->a = parse_or(P)))
		return NULL;
	if (accept_name(P, "if") && !(n->b = parse_or(P)))
		return NULL;
	if (is_name(P, "recursive")) {
		perr(P, cur(P)->line, "recursive loops are not supported");
		return NULL;
	}
	if (!expect_bend(P))
		return NULL;
	static const char *const ends[] = {"else", "endfor", NULL};
	const char *end = NULL;
	if (!parse_body(P, ends, &n->l1, &n->n1, &end))
		return NULL;
	if (!strcmp(end, "else")) {
		static const char *const ends2[] = {"endfor", NULL};
		if (!expect_bend(P) || !parse_body(P, ends2, &n->l2, &n->n2, &end))
			return NULL;
	}
	return expect_bend(P) ? n : NULL;
}

static struct node *parse_set(struct parser *P, int line)
{
	struct tok *t = cur(P);
	if (t->k != T_NAME) {
		char b[64];
		perr(P, t->line, "expected a variable after 'set', found %s", tok_desc(t, b, sizeof b));
		return NULL;
	}
	P->i++;
	struct node *n = new_node(P, S_SET, line);
	if (!n || !(n->s = tok_str(P, t)))
		return NULL;
	if (accept_op(P, ".")) {
		struct tok *a = cur(P);
		if (a->k != T_NAME) {
			perr(P, a->line, "expected an attribute name after '%s.'", n->s);
			return NULL;
		}
		P->i++;
		if (!(n->attr = tok_str(P, a)))
			return NULL;
	}
	if (accept_op(P, "=")) {
		if (!(n->a = parse_expr(P)))
			return NULL;
		return expect_bend(P) ? n : NULL;
	}
	if (n->attr || cur(P)->k != T_BEND) {
		char b[64];
		perr(P, cur(P)->line, "expected '=' in set, found %s", tok_desc(cur(P), b, sizeof b));
		return NULL;
	}
	P->i++;
	n->k = S_SETBLOCK;
	static const char *const ends[] = {"endset", NULL};
	const char *end;
	if (!parse_body(P, ends, &n->l1, &n->n1, &end))
		return NULL;
	return expect_bend(P) ? n : NULL;
}

static struct node *parse_macro(struct parser *P, int line)
{
	struct tok *t = cur(P);
	if (t->k != T_NAME) {
		perr(P, t->line, "expected a macro name");
		return NULL;
	}
	P->i++;
	struct node *n = new_node(P, S_MACRO, line);
	if (!n || !(n->s = tok_str(P, t)) || !expect_op(P, "("))
		return NULL;
	struct nlist params = {0};
	bool ok = true;
	while (ok && !is_op(P, ")")) {
		if (params.n && !(ok = expect_op(P, ",")))
			break;
		struct tok *p = cur(P);
		if (p->k != T_NAME) {
			perr(P, p->line, "expected a parameter name in macro %s", n->s);
			ok = false;
			break;
		}
		P->i++;
		const char *nm = tok_str(P, p);
		struct node *def = NULL;
		if (accept_op(P, "=") && !(def = parse_expr(P))) {
			ok = false;
			break;
		}
		ok = nm && nl_push(P, &params, def, nm);
	}
	ok = ok && expect_op(P, ")");
	if (!nl_done(P, &params, &n->l2, &n->names, &n->n2) || !ok)
		return NULL;
	n->nn = n->n2;
	if (!expect_bend(P))
		return NULL;
	static const char *const ends[] = {"endmacro", NULL};
	const char *end;
	if (!parse_body(P, ends, &n->l1, &n->n1, &end) || !expect_bend(P))
		return NULL;
	struct tern_jinja *tj = P->t;
	struct macro *m = realloc(tj->macros, (size_t)(tj->nmacros + 1) * sizeof *m);
	if (!m) {
		P->st = tern_fail(TERN_E_NOMEM, "out of host memory");
		return NULL;
	}
	tj->macros = m;
	m[tj->nmacros].name = n->s;
	m[tj->nmacros++].n = n;
	return n;
}

/* Statements up to a block tag named in ends (NULL: up to the end of the template); *end gets
 * the name found, the parser stands after it. */
static bool parse_body(struct parser *P, const char *const *ends, struct node ***body, int *nbody,
		       const char **end)
{
	struct nlist l = {0};
	bool ok = true;
	int open_line = P->i ? P->v[P->i - 1].line : 1;
	if (!enter(P))
		return false;
	while (ok) {
		struct tok *t = cur(P);
		struct node *n = NULL;
		if (t->k == T_EOF) {
			if (ends) {
				const char *want = ends[0];
				for (int i = 0; ends[i]; i++)
					if (!strncmp(ends[i], "end", 3))
						want = ends[i];
				perr(P, open_line,
				     "unterminated block: no {%% %s %%} before the end of the template",
				     want);
				ok = false;
			}
			break;
		}
		if (t->k == T_TEXT) {
			P->i++;
			if ((n = new_node(P, S_TEXT, t->line))) {
				n->s = t->p;
				n->sn = t->n;
			}
		} else if (t->k == T_VBEG) {
			P->i++;
			n = new_node(P, S_OUT, t->line);
			if (n && !(n->a = parse_expr(P)))
				n = NULL;
			if (n && cur(P)->k != T_VEND) {
				char b[64];
				perr(P, cur(P)->line, "expected '}}', found %s",
				     tok_desc(cur(P), b, sizeof b));
				n = NULL;
			}
			P->i += n != NULL;
		} else if (t->k == T_BBEG) {
			P->i++;
			struct tok *kw = cur(P);
			if (kw->k != T_NAME) {
				char b[64];
				perr(P, kw->line, "expected a tag name after '{%%', found %s",
				     tok_desc(kw, b, sizeof b));
				ok = false;
				break;
			}
			const char *name = tok_str(P, kw);
			if (!name) {
				ok = false;
				break;
			}
			bool is_end = false;
			for (int i = 0; ends && ends[i]; i++)
				if (!strcmp(name, ends[i])) {
					P->i++;
					*end = ends[i];
					is_end = true;
				}
			if (is_end)
				break;
			P->i++;
			int line = kw->line;
			if (!strcmp(name, "if"))
				n = parse_if(P, line);
			else if (!strcmp(name, "for"))
				n = parse_for(P, line);
			else if (!strcmp(name, "set"))
				n = parse_set(P, line);
			else if (!strcmp(name, "macro"))
				n = parse_macro(P, line);
			else if (!strcmp(name, "break") || !strcmp(name, "continue")) {
				n = new_node(P, name[0] == 'b' ? S_BREAK : S_CONTINUE, line);
				if (n && !expect_bend(P))
					n = NULL;
			} else if (!strcmp(name, "generation")) {
				static const char *const e2[] = {"endgeneration", NULL};
				const char *e;
				n = new_node(P, S_GEN, line);
				P->t->has_gen = true;
				if (n && (!expect_bend(P) || !parse_body(P, e2, &n->l1, &n->n1, &e) ||
					  !expect_bend(P)))
					n = NULL;
			} else {
				bool stray = !strncmp(name, "end", 3) || !strcmp(name, "else") ||
					     !strcmp(name, "elif");
				perr(P, line,
				     stray ? "unexpected {%% %s %%} (no open block it closes)"
					   : "unknown tag '%s' (supported: if, for, set, macro, break, continue, "
					     "generation)",
				     name);
			}
		} else {
			char b[64];
			perr(P, t->line, "unexpected %s", tok_desc(t, b, sizeof b));
		}
		ok = n && nl_push(P, &l, n, NULL);
	}
	P->depth--;
	return nl_done(P, &l, body, NULL, nbody) && ok && !P->st;
}

void tern_jinja_free(struct tern_jinja *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->nconsts; i++)
		json_decref(t->consts[i]);
	free(t->consts);
	free(t->macros);
	while (t->arena) {
		struct arena_block *b = t->arena->next;
		free(t->arena);
		t->arena = b;
	}
	free(t->name);
	free(t);
}

bool tern_jinja_has_generation(const struct tern_jinja *t) { return t->has_gen; }

enum tern_status tern_jinja_parse(struct tern_jinja **out, const char *name, const char *src, size_t len)
{
	*out = NULL;
	struct tern_jinja *t = tern_calloc(1, sizeof *t);
	if (!t)
		return TERN_E_NOMEM;
	if (!(t->name = strdup(name))) {
		free(t);
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	}
	if (len > TERN_JINJA_MAX_SOURCE) {
		enum tern_status st = tern_fail(TERN_E_FORMAT, "%s: the template is %zu bytes (at most %u)",
						name, len, TERN_JINJA_MAX_SOURCE);
		tern_jinja_free(t);
		return st;
	}
	/* the source is kept: text nodes point into it */
	char *copy = arena_alloc(&t->arena, len + 1);
	if (!copy) {
		tern_jinja_free(t);
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	}
	/* as Jinja's lexer: \r\n and \r read as \n, and one newline at the very end is dropped */
	size_t k = 0;
	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\r') {
			copy[k++] = '\n';
			i += i + 1 < len && src[i + 1] == '\n';
		} else {
			copy[k++] = src[i];
		}
	}
	if (k && copy[k - 1] == '\n')
		k--;
	copy[k] = 0;
	struct lexer L = {t, copy, k, 0, 1, NULL, 0, 0, TERN_OK};
	enum tern_status st = TERN_OK;
	if (!lex(&L)) {
		st = L.st ? L.st : TERN_E_FORMAT;
	} else {
		struct parser P = {t, L.v, 0, L.n, 0, TERN_OK};
		const char *end = NULL;
		if (!parse_body(&P, NULL, &t->body, &t->nbody, &end))
			st = P.st ? P.st : tern_fail(TERN_E_FORMAT, "%s: does not parse", name);
	}
	free(L.v);
	if (st) {
		tern_jinja_free(t);
		return st;
	}
	*out = t;
	return TERN_OK;
}

/* ---- values ---- */

struct buf {
	char *p;
	size_t n, cap;
};

struct ctx {
	const struct tern_jinja *t;
	json_t **frames;
	int nframes, cframes, base;
	struct buf out;
	size_t max_output;
	long long steps, max_steps;
	int calls;
	int ctl; /* 1 break, 2 continue */
	size_t *gen;
	size_t ngen, cgen;
	json_t **ns; /* namespace objects (the only ones `set x.attr` may change) */
	size_t nns, cns;
	enum tern_status st;
};

static enum tern_status rfail(struct ctx *c, int line, const char *fmt, ...) TERN_PRINTF(3, 4);
static enum tern_status rfail(struct ctx *c, int line, const char *fmt, ...)
{
	if (c->st)
		return c->st;
	char msg[600];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	one_line(msg);
	return c->st = tern_fail(TERN_E_INVALID, "%s:%d: %s", c->t->name, line, msg);
}

static enum tern_status nomem(struct ctx *c)
{
	if (!c->st)
		c->st = tern_fail(TERN_E_NOMEM, "out of host memory");
	return c->st;
}

static bool buf_add(struct ctx *c, struct buf *b, const char *p, size_t n, int line)
{
	if (c->st)
		return false;
	if (b->n + n > c->max_output) {
		rfail(c, line, "output longer than %zu bytes", c->max_output);
		return false;
	}
	if (b->n + n + 1 > b->cap) {
		size_t nc = b->cap ? b->cap : 256;
		while (nc < b->n + n + 1)
			nc *= 2;
		char *q = realloc(b->p, nc);
		if (!q) {
			nomem(c);
			return false;
		}
		b->p = q;
		b->cap = nc;
	}
	if (n)
		memcpy(b->p + b->n, p, n);
	b->n += n;
	b->p[b->n] = 0;
	return true;
}

static bool buf_str(struct ctx *c, struct buf *b, const char *s, int line)
{
	return buf_add(c, b, s, strlen(s), line);
}

static const char *type_name(const json_t *v)
{
	if (!v)
		return "undefined";
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "dict";
	case JSON_ARRAY: return "list";
	case JSON_STRING: return "str";
	case JSON_INTEGER: return "int";
	case JSON_REAL: return "float";
	case JSON_TRUE:
	case JSON_FALSE: return "bool";
	default: return "NoneType";
	}
}

static bool truthy(const json_t *v)
{
	if (!v)
		return false;
	switch (json_typeof(v)) {
	case JSON_OBJECT: return json_object_size(v) > 0;
	case JSON_ARRAY: return json_array_size(v) > 0;
	case JSON_STRING: return json_string_length(v) > 0;
	case JSON_INTEGER: return json_integer_value(v) != 0;
	case JSON_REAL: return json_real_value(v) != 0;
	case JSON_TRUE: return true;
	default: return false;
	}
}

static bool is_num(const json_t *v) { return v && (json_is_number(v) || json_is_boolean(v)); }
static bool is_int(const json_t *v) { return v && (json_is_integer(v) || json_is_boolean(v)); }
static long long ival(const json_t *v)
{
	return json_is_integer(v) ? json_integer_value(v) : json_is_true(v);
}
static double fval(const json_t *v) { return json_is_real(v) ? json_real_value(v) : (double)ival(v); }

/* Python's repr of a float: the shortest form that reads back. */
static void py_float(double x, char *o, size_t n)
{
	if (isnan(x)) {
		snprintf(o, n, "nan");
		return;
	}
	if (isinf(x)) {
		snprintf(o, n, x < 0 ? "-inf" : "inf");
		return;
	}
	for (int p = 1; p <= 17; p++) {
		snprintf(o, n, "%.*g", p, x);
		if (strtod(o, NULL) == x)
			break;
	}
	char *e = strchr(o, 'e');
	if (e) {
		/* Python: 1e+16, 1e-05; C: 1e+16, 1e-05 -- the same, but repr keeps exponents from 16 */
		int ex = atoi(e + 1);
		if (ex >= -4 && ex < 16) {
			snprintf(o, n, "%.17f", x);
			/* trim to the shortest that reads back */
			char t[64];
			for (int p = 0; p <= 17; p++) {
				snprintf(t, sizeof t, "%.*f", p, x);
				if (strtod(t, NULL) == x)
					break;
			}
			snprintf(o, n, "%s", t);
		}
	}
	if (!strpbrk(o, ".e"))
		strncat(o, ".0", n - strlen(o) - 1);
}

static bool py_repr(struct ctx *c, struct buf *b, const json_t *v, int depth, int line);

/* Python str() of a value onto b. */
static bool py_str(struct ctx *c, struct buf *b, const json_t *v, int depth, int line)
{
	char num[64];
	if (!v)
		return true;
	switch (json_typeof(v)) {
	case JSON_STRING: return buf_add(c, b, json_string_value(v), json_string_length(v), line);
	case JSON_INTEGER:
		snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
		return buf_str(c, b, num, line);
	case JSON_REAL: py_float(json_real_value(v), num, sizeof num); return buf_str(c, b, num, line);
	case JSON_TRUE: return buf_str(c, b, "True", line);
	case JSON_FALSE: return buf_str(c, b, "False", line);
	case JSON_NULL: return buf_str(c, b, "None", line);
	default: return py_repr(c, b, v, depth, line);
	}
}

static bool py_repr(struct ctx *c, struct buf *b, const json_t *v, int depth, int line)
{
	if (depth > 64) {
		rfail(c, line, "a value nested deeper than 64 levels");
		return false;
	}
	if (!v)
		return buf_str(c, b, "Undefined", line);
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		bool sq = memchr(s, '\'', n) && !memchr(s, '"', n);
		char q = sq ? '"' : '\'';
		if (!buf_add(c, b, &q, 1, line))
			return false;
		for (size_t i = 0; i < n; i++) {
			unsigned char ch = (unsigned char)s[i];
			char e[8];
			if (ch == '\\' || ch == (unsigned char)q)
				snprintf(e, sizeof e, "\\%c", ch);
			else if (ch == '\n')
				snprintf(e, sizeof e, "\\n");
			else if (ch == '\r')
				snprintf(e, sizeof e, "\\r");
			else if (ch == '\t')
				snprintf(e, sizeof e, "\\t");
			else if (ch < 0x20 || ch == 0x7f)
				snprintf(e, sizeof e, "\\x%02x", ch);
			else {
				e[0] = (char)ch;
				e[1] = 0;
			}
			if (!buf_str(c, b, e, line))
				return false;
		}
		return buf_add(c, b, &q, 1, line);
	}
	if (json_is_array(v)) {
		if (!buf_str(c, b, "[", line))
			return false;
		for (size_t i = 0; i < json_array_size(v); i++)
			if ((i && !buf_str(c, b, ", ", line)) ||
			    !py_repr(c, b, json_array_get(v, i), depth + 1, line))
				return false;
		return buf_str(c, b, "]", line);
	}
	if (json_is_object(v)) {
		if (!buf_str(c, b, "{", line))
			return false;
		const char *k;
		json_t *x;
		bool first = true;
		json_object_foreach((json_t *)v, k, x)
		{
			json_t *ks = json_string(k);
			bool ok = ks && (first || buf_str(c, b, ", ", line)) &&
				  py_repr(c, b, ks, depth + 1, line) && buf_str(c, b, ": ", line) &&
				  py_repr(c, b, x, depth + 1, line);
			json_decref(ks);
			if (!ok)
				return ks ? false : (nomem(c), false);
			first = false;
		}
		return buf_str(c, b, "}", line);
	}
	return py_str(c, b, v, depth, line);
}

/* A new string value of str(v) (NULL with c->st set on failure). */
static json_t *to_string(struct ctx *c, const json_t *v, int line)
{
	if (v && json_is_string(v))
		return json_incref((json_t *)v);
	struct buf b = {0};
	if (!py_str(c, &b, v, 0, line)) {
		free(b.p);
		return NULL;
	}
	json_t *s = json_stringn_nocheck(b.p ? b.p : "", b.n);
	free(b.p);
	if (!s)
		nomem(c);
	return s;
}

static bool values_eq(const json_t *a, const json_t *b, int depth)
{
	if (!a || !b)
		return !a && !b;
	if (is_num(a) && is_num(b)) {
		if (is_int(a) && is_int(b))
			return ival(a) == ival(b);
		return fval(a) == fval(b);
	}
	if (json_typeof(a) != json_typeof(b) || depth > 64)
		return false;
	if (json_is_string(a))
		return json_string_length(a) == json_string_length(b) &&
		       !memcmp(json_string_value(a), json_string_value(b), json_string_length(a));
	if (json_is_array(a)) {
		if (json_array_size(a) != json_array_size(b))
			return false;
		for (size_t i = 0; i < json_array_size(a); i++)
			if (!values_eq(json_array_get(a, i), json_array_get(b, i), depth + 1))
				return false;
		return true;
	}
	if (json_is_object(a)) {
		if (json_object_size(a) != json_object_size(b))
			return false;
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)a, k, x)
		{
			if (!values_eq(x, json_object_get(b, k), depth + 1))
				return false;
		}
		return true;
	}
	return true; /* null */
}

/* a <op> b for < <= > >=: numbers, strings, lists */
static bool compare(struct ctx *c, const json_t *a, const json_t *b, int *res, int line)
{
	if (is_num(a) && is_num(b)) {
		if (is_int(a) && is_int(b))
			*res = ival(a) < ival(b) ? -1 : ival(a) > ival(b);
		else
			*res = fval(a) < fval(b) ? -1 : fval(a) > fval(b);
		return true;
	}
	if (a && b && json_is_string(a) && json_is_string(b)) {
		size_t na = json_string_length(a), nb = json_string_length(b);
		int r = memcmp(json_string_value(a), json_string_value(b), na < nb ? na : nb);
		*res = r ? (r < 0 ? -1 : 1) : na < nb ? -1 : na > nb;
		return true;
	}
	rfail(c, line, "cannot compare %s with %s", type_name(a), type_name(b));
	return false;
}

/* ---- UTF-8 ---- */

static size_t u8_count(const char *s, size_t n)
{
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		k += ((unsigned char)s[i] & 0xC0) != 0x80;
	return k;
}

/* byte offset of code point i (i <= count) */
static size_t u8_offset(const char *s, size_t n, size_t i)
{
	size_t k = 0, p = 0;
	while (p < n) {
		if (((unsigned char)s[p] & 0xC0) != 0x80) {
			if (k == i)
				return p;
			k++;
		}
		p++;
	}
	return n;
}

static size_t u8_next(const char *s, size_t n, size_t p)
{
	p++;
	while (p < n && ((unsigned char)s[p] & 0xC0) == 0x80)
		p++;
	return p;
}

/* Python's str.isspace for a code point starting at s[p]; *len gets its byte length */
static bool u8_space(const char *s, size_t n, size_t p, size_t *len)
{
	unsigned char ch = (unsigned char)s[p];
	*len = u8_next(s, n, p) - p;
	if (ch < 0x80)
		return ch == ' ' || (ch >= 0x09 && ch <= 0x0d) || (ch >= 0x1c && ch <= 0x1f);
	const unsigned char *u = (const unsigned char *)s + p;
	if (*len == 2)
		return (u[0] == 0xC2 && (u[1] == 0x85 || u[1] == 0xA0));
	if (*len == 3) {
		if (u[0] == 0xE1 && u[1] == 0x9A && u[2] == 0x80)
			return true;
		if (u[0] == 0xE2 && u[1] == 0x80 &&
		    ((u[2] >= 0x80 && u[2] <= 0x8A) || u[2] == 0xA8 || u[2] == 0xA9 || u[2] == 0xAF))
			return true;
		if (u[0] == 0xE2 && u[1] == 0x81 && u[2] == 0x9F)
			return true;
		if (u[0] == 0xE3 && u[1] == 0x80 && u[2] == 0x80)
			return true;
	}
	return false;
}

static json_t *new_str(struct ctx *c, const char *s, size_t n, int line)
{
	if (n > c->max_output) {
		rfail(c, line, "a string longer than %zu bytes", c->max_output);
		return NULL;
	}
	json_t *v = json_stringn_nocheck(n ? s : "", n);
	if (!v)
		nomem(c);
	return v;
}

/* strip/lstrip/rstrip with optional chars (a string of code points) */
static json_t *str_strip(struct ctx *c, const json_t *v, const json_t *chars, bool left, bool right, int line)
{
	const char *s = json_string_value(v);
	size_t n = json_string_length(v), a = 0, b = n;
	const char *cs = chars ? json_string_value(chars) : NULL;
	size_t cn = chars ? json_string_length(chars) : 0;
	while (left && a < b) {
		size_t len;
		bool hit = cs ? false : u8_space(s, n, a, &len);
		if (cs) {
			len = u8_next(s, n, a) - a;
			for (size_t j = 0; j < cn && !hit; j = u8_next(cs, cn, j))
				hit = u8_next(cs, cn, j) - j == len && !memcmp(cs + j, s + a, len);
		}
		if (!hit)
			break;
		a += len;
	}
	while (right && b > a) {
		size_t p = b - 1, len;
		while (p > a && ((unsigned char)s[p] & 0xC0) == 0x80)
			p--;
		bool hit = cs ? false : u8_space(s, n, p, &len);
		if (cs) {
			len = b - p;
			for (size_t j = 0; j < cn && !hit; j = u8_next(cs, cn, j))
				hit = u8_next(cs, cn, j) - j == len && !memcmp(cs + j, s + p, len);
		}
		if (!hit)
			break;
		b = p;
	}
	return new_str(c, s + a, b - a, line);
}

static const char *memmem_(const char *h, size_t hn, const char *n, size_t nn)
{
	if (!nn)
		return h;
	for (size_t i = 0; i + nn <= hn; i++)
		if (h[i] == n[0] && !memcmp(h + i, n, nn))
			return h + i;
	return NULL;
}

static json_t *str_split(struct ctx *c, const json_t *v, const json_t *sep, long long maxsplit, int line)
{
	const char *s = json_string_value(v);
	size_t n = json_string_length(v);
	json_t *out = json_array();
	if (!out)
		return nomem(c), NULL;
	if (sep && json_is_string(sep)) {
		const char *sp = json_string_value(sep);
		size_t sn = json_string_length(sep);
		if (!sn) {
			json_decref(out);
			rfail(c, line, "split: empty separator");
			return NULL;
		}
		size_t p = 0;
		for (;;) {
			const char *q = maxsplit != 0 ? memmem_(s + p, n - p, sp, sn) : NULL;
			size_t e = q ? (size_t)(q - s) : n;
			if (json_array_append_new(out, new_str(c, s + p, e - p, line)) || c->st) {
				json_decref(out);
				return c->st ? NULL : (nomem(c), NULL);
			}
			if (!q)
				break;
			p = e + sn;
			if (maxsplit > 0)
				maxsplit--;
			if (++c->steps > c->max_steps) {
				json_decref(out);
				rfail(c, line, "more than %lld steps", c->max_steps);
				return NULL;
			}
		}
		return out;
	}
	size_t p = 0;
	for (;;) {
		size_t len;
		while (p < n && u8_space(s, n, p, &len))
			p += len;
		if (p >= n)
			break;
		size_t e = p;
		if (maxsplit == 0)
			e = n;
		else
			while (e < n && !u8_space(s, n, e, &len))
				e = u8_next(s, n, e);
		size_t we = e;
		if (json_array_append_new(out, new_str(c, s + p, we - p, line)) || c->st) {
			json_decref(out);
			return c->st ? NULL : (nomem(c), NULL);
		}
		p = e;
		if (maxsplit > 0)
			maxsplit--;
		if (++c->steps > c->max_steps) {
			json_decref(out);
			rfail(c, line, "more than %lld steps", c->max_steps);
			return NULL;
		}
	}
	return out;
}

static json_t *str_case(struct ctx *c, const json_t *v, int mode, int line)
{
	/* mode 0 lower, 1 upper, 2 title, 3 capitalize (ASCII letters) */
	size_t n = json_string_length(v);
	char *s = malloc(n + 1);
	if (!s)
		return nomem(c), NULL;
	memcpy(s, json_string_value(v), n + 1);
	bool word = false;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		bool alpha = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
		bool up = mode == 1 || (mode == 2 && !word) || (mode == 3 && i == 0);
		if (alpha)
			s[i] = up ? (ch >= 'a' && ch <= 'z' ? ch - 32 : ch)
				  : (ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
		word = alpha || ((unsigned char)ch >= 0x80) || (ch >= '0' && ch <= '9');
	}
	json_t *r = new_str(c, s, n, line);
	free(s);
	return r;
}

static json_t *str_replace(struct ctx *c, const json_t *v, const json_t *old, const json_t *new_,
			   long long count, int line)
{
	const char *s = json_string_value(v), *o = json_string_value(old), *w = json_string_value(new_);
	size_t n = json_string_length(v), on = json_string_length(old), wn = json_string_length(new_);
	struct buf b = {0};
	size_t p = 0;
	bool ok = true;
	if (!on) {
		/* Python inserts new between every character */
		for (size_t i = 0; ok && i <= n; i = u8_next(s, n, i)) {
			if (count != 0) {
				ok = buf_add(c, &b, w, wn, line);
				count -= count > 0;
			}
			if (i < n)
				ok = ok && buf_add(c, &b, s + i, u8_next(s, n, i) - i, line);
			if (i >= n)
				break;
		}
	} else {
		while (ok) {
			const char *q = count != 0 ? memmem_(s + p, n - p, o, on) : NULL;
			if (!q) {
				ok = buf_add(c, &b, s + p, n - p, line);
				break;
			}
			ok = buf_add(c, &b, s + p, (size_t)(q - s) - p, line) && buf_add(c, &b, w, wn, line);
			p = (size_t)(q - s) + on;
			count -= count > 0;
		}
	}
	json_t *r = ok ? new_str(c, b.p ? b.p : "", b.n, line) : NULL;
	free(b.p);
	return r;
}

/* ---- rendering ---- */

static enum tern_status eval(struct ctx *c, struct node *n, json_t **out);
static enum tern_status exec_body(struct ctx *c, struct node **body, int n);

static json_t *lookup(struct ctx *c, const char *name)
{
	for (int i = c->nframes - 1; i >= c->base; i--) {
		json_t *v = json_object_get(c->frames[i], name);
		if (v)
			return v;
	}
	for (int i = c->base - 1 < 1 ? c->base - 1 : 1; i >= 0; i--) {
		json_t *v = json_object_get(c->frames[i], name);
		if (v)
			return v;
	}
	return NULL;
}

static enum tern_status push_frame(struct ctx *c)
{
	if (c->nframes == c->cframes) {
		int nc = c->cframes ? c->cframes * 2 : 16;
		json_t **f = realloc(c->frames, (size_t)nc * sizeof *f);
		if (!f)
			return nomem(c);
		c->frames = f;
		c->cframes = nc;
	}
	if (!(c->frames[c->nframes] = json_object()))
		return nomem(c);
	c->nframes++;
	return TERN_OK;
}

static void pop_frame(struct ctx *c) { json_decref(c->frames[--c->nframes]); }

static bool step(struct ctx *c, int line)
{
	if (++c->steps > c->max_steps) {
		rfail(c, line, "more than %lld steps (a loop that does not end?)", c->max_steps);
		return false;
	}
	return true;
}

static bool is_namespace(struct ctx *c, const json_t *v)
{
	for (size_t i = 0; i < c->nns; i++)
		if (c->ns[i] == v)
			return true;
	return false;
}

static bool holds_namespace(struct ctx *c, const json_t *v, int depth)
{
	if (!v || depth > 64)
		return depth > 64;
	if (is_namespace(c, v))
		return true;
	if (json_is_array(v)) {
		for (size_t i = 0; i < json_array_size(v); i++)
			if (holds_namespace(c, json_array_get(v, i), depth + 1))
				return true;
	} else if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach((json_t *)v, k, x)
		{
			if (holds_namespace(c, x, depth + 1))
				return true;
		}
	}
	return false;
}

/* Evaluated call arguments. */
struct args {
	json_t *pos[8];
	int npos;
	const char *kwn[8];
	json_t *kwv[8];
	int nkw;
};

static void args_free(struct args *a)
{
	for (int i = 0; i < a->npos; i++)
		json_decref(a->pos[i]);
	for (int i = 0; i < a->nkw; i++)
		json_decref(a->kwv[i]);
	memset(a, 0, sizeof *a);
}

static enum tern_status eval_args(struct ctx *c, struct node *n, struct args *a)
{
	memset(a, 0, sizeof *a);
	if (n->n1 > 8 || n->n2 > 8)
		return rfail(c, n->line, "more than 8 arguments");
	for (int i = 0; i < n->n1; i++) {
		if (eval(c, n->l1[i], &a->pos[i]))
			return args_free(a), c->st;
		a->npos++;
	}
	for (int i = 0; i < n->n2; i++) {
		if (eval(c, n->l2[i], &a->kwv[i]))
			return args_free(a), c->st;
		a->kwn[i] = n->names[i];
		a->nkw++;
	}
	return TERN_OK;
}

/* argument i or keyword name (borrowed; NULL when absent) */
static json_t *arg(const struct args *a, int i, const char *name, bool *given)
{
	if (given)
		*given = true;
	if (i >= 0 && i < a->npos)
		return a->pos[i];
	for (int k = 0; name && k < a->nkw; k++)
		if (!strcmp(a->kwn[k], name))
			return a->kwv[k];
	if (given)
		*given = false;
	return NULL;
}

static bool want_str(struct ctx *c, const json_t *v, const char *what, int line)
{
	if (v && json_is_string(v))
		return true;
	rfail(c, line, "%s needs a string, not %s", what, type_name(v));
	return false;
}

static bool want_int(struct ctx *c, const json_t *v, const char *what, int line)
{
	if (is_int(v))
		return true;
	rfail(c, line, "%s needs an integer, not %s", what, type_name(v));
	return false;
}

/* The items a for loop or a filter iterates: a new list. */
static json_t *iter_items(struct ctx *c, json_t *v, int line)
{
	json_t *l = json_array();
	if (!l)
		return nomem(c), NULL;
	if (!v)
		return l;
	if (json_is_array(v)) {
		json_array_extend(l, v);
	} else if (json_is_object(v)) {
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x)
		{
			if (json_array_append_new(l, json_string(k))) {
				json_decref(l);
				return nomem(c), NULL;
			}
		}
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		for (size_t p = 0; p < n; p = u8_next(s, n, p))
			if (json_array_append_new(l, json_stringn_nocheck(s + p, u8_next(s, n, p) - p))) {
				json_decref(l);
				return nomem(c), NULL;
			}
	} else {
		json_decref(l);
		rfail(c, line, "'%s' object is not iterable", type_name(v));
		return NULL;
	}
	return l;
}

static json_t *dict_items(struct ctx *c, json_t *v)
{
	json_t *l = json_array();
	const char *k;
	json_t *x;
	if (!l)
		return nomem(c), NULL;
	json_object_foreach(v, k, x)
	{
		if (json_array_append_new(l, json_pack("[sO]", k, x))) {
			json_decref(l);
			return nomem(c), NULL;
		}
	}
	return l;
}

/* v.attr or v[key] for a getattr-style lookup; NULL = undefined */
static json_t *get_item(const json_t *v, const json_t *key)
{
	if (!v || !key)
		return NULL;
	if (json_is_object(v) && json_is_string(key))
		return json_incref(json_object_get(v, json_string_value(key)));
	if ((json_is_array(v) || json_is_string(v)) && is_int(key)) {
		long long i = ival(key);
		if (json_is_array(v)) {
			long long n = (long long)json_array_size(v);
			if (i < 0)
				i += n;
			return i >= 0 && i < n ? json_incref(json_array_get(v, (size_t)i)) : NULL;
		}
		const char *s = json_string_value(v);
		size_t n = json_string_length(v);
		long long cnt = (long long)u8_count(s, n);
		if (i < 0)
			i += cnt;
		if (i < 0 || i >= cnt)
			return NULL;
		size_t p = u8_offset(s, n, (size_t)i);
		return json_stringn_nocheck(s + p, u8_next(s, n, p) - p);
	}
	return NULL;
}

static enum tern_status do_test(struct ctx *c, struct node *n, json_t *v, const struct args *a, bool *res);

/* selectattr/rejectattr/select/reject */
static enum tern_status filter_select(struct ctx *c, struct node *n, json_t *v, const struct args *a,
				      bool attr, bool keep, json_t **out)
{
	json_t *items = iter_items(c, v, n->line), *res = json_array();
	if (!items || !res) {
		json_decref(items);
		json_decref(res);
		return c->st ? c->st : nomem(c);
	}
	int first = attr ? 1 : 0;
	json_t *an = attr ? arg(a, 0, NULL, NULL) : NULL;
	if (attr && !want_str(c, an, "selectattr", n->line))
		goto fail;
	json_t *tn = arg(a, first, NULL, NULL);
	if (tn && !want_str(c, tn, "the test name", n->line))
		goto fail;
	struct node tnode = *n;
	tnode.s = tn ? json_string_value(tn) : NULL;
	struct args ta = {0};
	for (int i = first + 1; i < a->npos && ta.npos < 8; i++)
		ta.pos[ta.npos++] = a->pos[i];
	size_t i;
	json_t *x;
	json_array_foreach(items, i, x)
	{
		if (!step(c, n->line))
			goto fail;
		json_t *key = attr ? json_incref(an) : NULL;
		json_t *val = attr ? get_item(x, key) : json_incref(x);
		json_decref(key);
		bool r;
		if (tnode.s) {
			if (do_test(c, &tnode, val, &ta, &r)) {
				json_decref(val);
				goto fail;
			}
		} else {
			r = truthy(val);
		}
		json_decref(val);
		if (r == keep && json_array_append(res, x)) {
			nomem(c);
			goto fail;
		}
	}
	json_decref(items);
	*out = res;
	return TERN_OK;
fail:
	json_decref(items);
	json_decref(res);
	return c->st;
}

static int cmp_for_sort(struct ctx *c, const json_t *a, const json_t *b, int line)
{
	int r = 0;
	compare(c, a, b, &r, line);
	return r;
}

/* Python's json.dumps: separators, indent, ensure_ascii, sort_keys; floats as repr. */
struct json_style {
	bool ascii;
	int indent; /* -1: one line */
	const char *item_sep, *key_sep;
	bool sort_keys;
};

static bool json_str(struct ctx *c, struct buf *b, const char *s, size_t n, bool ascii, int line)
{
	bool ok = buf_add(c, b, "\"", 1, line);
	for (size_t i = 0; ok && i < n;) {
		unsigned char ch = (unsigned char)s[i];
		char e[16];
		if (ch == '"' || ch == '\\') {
			snprintf(e, sizeof e, "\\%c", ch);
		} else if (ch == '\n' || ch == '\r' || ch == '\t' || ch == '\b' || ch == '\f') {
			snprintf(e, sizeof e, "\\%c",
				 ch == '\n'   ? 'n'
				 : ch == '\r' ? 'r'
				 : ch == '\t' ? 't'
				 : ch == '\b' ? 'b'
					      : 'f');
		} else if (ch < 0x20 || (ascii && ch == 0x7f)) {
			snprintf(e, sizeof e, "\\u%04x", ch);
		} else if (ascii && ch >= 0x80) {
			size_t k = u8_next(s, n, i) - i;
			uint32_t cp = k == 2 ? ch & 0x1F : k == 3 ? ch & 0x0F : ch & 0x07;
			for (size_t j = 1; j < k; j++)
				cp = cp << 6 | ((unsigned char)s[i + j] & 0x3F);
			if (cp >= 0x10000)
				snprintf(e, sizeof e, "\\u%04x\\u%04x", 0xD800 + ((cp - 0x10000) >> 10),
					 0xDC00 + ((cp - 0x10000) & 0x3FF));
			else
				snprintf(e, sizeof e, "\\u%04x", cp);
			ok = buf_str(c, b, e, line);
			i += k;
			continue;
		} else {
			ok = buf_add(c, b, s + i, 1, line);
			i++;
			continue;
		}
		ok = buf_str(c, b, e, line);
		i++;
	}
	return ok && buf_add(c, b, "\"", 1, line);
}

static bool json_newline(struct ctx *c, struct buf *b, const struct json_style *js, int level, int line)
{
	if (js->indent < 0)
		return true;
	bool ok = buf_add(c, b, "\n", 1, line);
	for (int i = 0; ok && i < js->indent * level; i++)
		ok = buf_add(c, b, " ", 1, line);
	return ok;
}

static int cmp_keys(const void *x, const void *y)
{
	return strcmp(*(const char *const *)x, *(const char *const *)y);
}

static bool json_write(struct ctx *c, struct buf *b, const json_t *v, const struct json_style *js, int level,
		       int line)
{
	char num[64];
	if (level > 64) {
		rfail(c, line, "tojson of a value nested deeper than 64 levels");
		return false;
	}
	switch (json_typeof(v)) {
	case JSON_NULL: return buf_str(c, b, "null", line);
	case JSON_TRUE: return buf_str(c, b, "true", line);
	case JSON_FALSE: return buf_str(c, b, "false", line);
	case JSON_INTEGER:
		snprintf(num, sizeof num, "%lld", (long long)json_integer_value(v));
		return buf_str(c, b, num, line);
	case JSON_REAL: {
		double x = json_real_value(v);
		if (isnan(x))
			return buf_str(c, b, "NaN", line);
		if (isinf(x))
			return buf_str(c, b, x < 0 ? "-Infinity" : "Infinity", line);
		py_float(x, num, sizeof num);
		return buf_str(c, b, num, line);
	}
	case JSON_STRING: return json_str(c, b, json_string_value(v), json_string_length(v), js->ascii, line);
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		if (!n)
			return buf_str(c, b, "[]", line);
		bool ok = buf_str(c, b, "[", line);
		for (size_t i = 0; ok && i < n; i++)
			ok = (!i || buf_str(c, b, js->item_sep, line)) &&
			     json_newline(c, b, js, level + 1, line) &&
			     json_write(c, b, json_array_get(v, i), js, level + 1, line);
		return ok && json_newline(c, b, js, level, line) && buf_str(c, b, "]", line);
	}
	default: {
		size_t n = json_object_size(v), k = 0;
		if (!n)
			return buf_str(c, b, "{}", line);
		const char **keys = malloc(n * sizeof *keys);
		if (!keys)
			return nomem(c), false;
		const char *key;
		json_t *x;
		json_object_foreach((json_t *)v, key, x) { keys[k++] = key; }
		if (js->sort_keys)
			qsort(keys, n, sizeof *keys, cmp_keys);
		bool ok = buf_str(c, b, "{", line);
		for (size_t i = 0; ok && i < n; i++)
			ok = (!i || buf_str(c, b, js->item_sep, line)) &&
			     json_newline(c, b, js, level + 1, line) &&
			     json_str(c, b, keys[i], strlen(keys[i]), js->ascii, line) &&
			     buf_str(c, b, js->key_sep, line) &&
			     json_write(c, b, json_object_get(v, keys[i]), js, level + 1, line);
		free(keys);
		return ok && json_newline(c, b, js, level, line) && buf_str(c, b, "}", line);
	}
	}
}

static enum tern_status apply_filter(struct ctx *c, struct node *n, json_t *v, const struct args *a,
				     json_t **out)
{
	const char *f = n->s;
	int line = n->line;
	*out = NULL;
	bool given;
	if (!strcmp(f, "length") || !strcmp(f, "count")) {
		long long len = 0;
		if (v && json_is_string(v))
			len = (long long)u8_count(json_string_value(v), json_string_length(v));
		else if (v && json_is_array(v))
			len = (long long)json_array_size(v);
		else if (v && json_is_object(v))
			len = (long long)json_object_size(v);
		else if (v)
			return rfail(c, line, "object of type '%s' has no len()", type_name(v));
		return (*out = json_integer(len)) ? TERN_OK : nomem(c);
	}
	if (!strcmp(f, "default") || !strcmp(f, "d")) {
		json_t *d = arg(a, 0, "default_value", NULL), *bo = arg(a, 1, "boolean", NULL);
		bool use = !v || (truthy(bo) && !truthy(v));
		*out = use ? (d ? json_incref(d) : json_string("")) : json_incref(v);
		return *out ? TERN_OK : nomem(c);
	}
	if (!strcmp(f, "safe")) {
		*out = json_incref(v);
		return TERN_OK;
	}
	if (!strcmp(f, "string")) {
		*out = to_string(c, v, line);
		return c->st;
	}
	if (!strcmp(f, "tojson")) {
		/* transformers' tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False) */
		if (!v)
			return rfail(c, line, "tojson of an undefined value");
		struct json_style js = {truthy(arg(a, 0, "ensure_ascii", NULL)), -1, ", ", ": ",
					truthy(arg(a, 3, "sort_keys", NULL))};
		json_t *ind = arg(a, 1, "indent", &given), *sep = arg(a, 2, "separators", NULL);
		if (ind && !json_is_null(ind)) {
			if (!want_int(c, ind, "tojson indent", line))
				return c->st;
			js.indent = ival(ind) < 0 ? 0 : ival(ind) > 64 ? 64 : (int)ival(ind);
			js.item_sep = ",";
		}
		if (sep && !json_is_null(sep)) {
			if (!json_is_array(sep) || json_array_size(sep) != 2 ||
			    !json_is_string(json_array_get(sep, 0)) ||
			    !json_is_string(json_array_get(sep, 1)))
				return rfail(c, line, "tojson separators must be two strings");
			js.item_sep = json_string_value(json_array_get(sep, 0));
			js.key_sep = json_string_value(json_array_get(sep, 1));
		}
		struct buf b = {0};
		if (json_write(c, &b, v, &js, 0, line))
			*out = new_str(c, b.p ? b.p : "", b.n, line);
		free(b.p);
		return c->st;
	}
	if (!strcmp(f, "items")) {
		if (!v)
			return (*out = json_array()) ? TERN_OK : nomem(c);
		if (!json_is_object(v))
			return rfail(c, line, "items needs a dict, not %s", type_name(v));
		*out = dict_items(c, v);
		return c->st;
	}
	if (!strcmp(f, "list")) {
		*out = iter_items(c, v, line);
		return c->st;
	}
	if (!strcmp(f, "selectattr") || !strcmp(f, "rejectattr"))
		return filter_select(c, n, v, a, true, f[0] == 's', out);
	if (!strcmp(f, "select") || !strcmp(f, "reject"))
		return filter_select(c, n, v, a, false, f[0] == 's', out);
	if (!strcmp(f, "first") || !strcmp(f, "last")) {
		json_t *items = iter_items(c, v, line);
		if (!items)
			return c->st;
		size_t k = json_array_size(items);
		*out = k ? json_incref(json_array_get(items, f[0] == 'f' ? 0 : k - 1)) : NULL;
		json_decref(items);
		return TERN_OK;
	}
	if (!strcmp(f, "reverse")) {
		if (v && json_is_string(v)) {
			const char *s = json_string_value(v);
			size_t len = json_string_length(v);
			char *r = malloc(len + 1);
			if (!r)
				return nomem(c);
			size_t k = len;
			for (size_t p = 0; p < len;) {
				size_t q = u8_next(s, len, p);
				k -= q - p;
				memcpy(r + k, s + p, q - p);
				p = q;
			}
			*out = new_str(c, r, len, line);
			free(r);
			return c->st;
		}
		json_t *items = iter_items(c, v, line), *r = json_array();
		if (!items || !r) {
			json_decref(items);
			json_decref(r);
			return c->st ? c->st : nomem(c);
		}
		for (size_t i = json_array_size(items); i-- > 0;)
			json_array_append(r, json_array_get(items, i));
		json_decref(items);
		*out = r;
		return TERN_OK;
	}
	if (!strcmp(f, "join")) {
		json_t *sep = arg(a, 0, "d", NULL), *attr = arg(a, 1, "attribute", NULL);
		if (sep && !want_str(c, sep, "join", line))
			return c->st;
		json_t *items = iter_items(c, v, line);
		if (!items)
			return c->st;
		struct buf b = {0};
		size_t i;
		json_t *x;
		bool ok = true;
		json_array_foreach(items, i, x)
		{
			json_t *y = attr ? get_item(x, attr) : json_incref(x);
			ok = (!i || !sep ||
			      buf_add(c, &b, json_string_value(sep), json_string_length(sep), line)) &&
			     py_str(c, &b, y, 0, line);
			json_decref(y);
			if (!ok)
				break;
		}
		json_decref(items);
		if (ok)
			*out = new_str(c, b.p ? b.p : "", b.n, line);
		free(b.p);
		return c->st;
	}
	if (!strcmp(f, "map")) {
		json_t *attr = arg(a, -1, "attribute", NULL), *fname = arg(a, 0, NULL, NULL);
		json_t *dflt = arg(a, -1, "default", NULL);
		if (!attr && !want_str(c, fname, "map", line))
			return c->st;
		json_t *items = iter_items(c, v, line), *r = json_array();
		if (!items || !r) {
			json_decref(items);
			json_decref(r);
			return c->st ? c->st : nomem(c);
		}
		size_t i;
		json_t *x;
		json_array_foreach(items, i, x)
		{
			json_t *y = NULL;
			if (attr) {
				y = get_item(x, attr);
				if (!y && dflt)
					y = json_incref(dflt);
			} else {
				struct node fn = *n;
				fn.s = json_string_value(fname);
				struct args fa = {0};
				for (int k = 1; k < a->npos; k++)
					fa.pos[fa.npos++] = a->pos[k];
				if (!strcmp(fn.s, "map") || apply_filter(c, &fn, x, &fa, &y)) {
					json_decref(items);
					json_decref(r);
					return c->st ? c->st : rfail(c, line, "map: a filter cannot be map");
				}
			}
			if (json_array_append_new(r, y ? y : json_null())) {
				json_decref(items);
				json_decref(r);
				return nomem(c);
			}
		}
		json_decref(items);
		*out = r;
		return TERN_OK;
	}
	if (!strcmp(f, "sort") || !strcmp(f, "unique") || !strcmp(f, "min") || !strcmp(f, "max") ||
	    !strcmp(f, "sum")) {
		json_t *items = iter_items(c, v, line);
		if (!items)
			return c->st;
		json_t *attr = arg(a, -1, "attribute", NULL);
		size_t k = json_array_size(items);
		if (!strcmp(f, "sum")) {
			long long si = 0;
			double sf = 0;
			bool flt = false;
			for (size_t i = 0; i < k; i++) {
				json_t *x = attr ? get_item(json_array_get(items, i), attr)
						 : json_incref(json_array_get(items, i));
				if (!is_num(x)) {
					json_decref(x);
					json_decref(items);
					return rfail(c, line, "sum of a %s", type_name(x));
				}
				flt |= json_is_real(x);
				si += ival(x);
				sf += fval(x);
				json_decref(x);
			}
			json_decref(items);
			*out = flt ? json_real(sf) : json_integer(si);
			return *out ? TERN_OK : nomem(c);
		}
		/* insertion sort over keys (lists here are short; steps bound the work) */
		json_t **e = calloc(k ? k : 1, sizeof *e);
		if (!e) {
			json_decref(items);
			return nomem(c);
		}
		for (size_t i = 0; i < k; i++)
			e[i] = json_array_get(items, i);
		bool rev = truthy(arg(a, 0, "reverse", NULL)) && !strcmp(f, "sort");
		for (size_t i = 1; i < k && !c->st; i++) {
			json_t *x = e[i];
			size_t j = i;
			while (j > 0 && !c->st && step(c, line)) {
				json_t *ka =
					attr ? json_object_get(e[j - 1], json_string_value(attr)) : e[j - 1];
				json_t *kb = attr ? json_object_get(x, json_string_value(attr)) : x;
				if (attr && !json_is_string(attr))
					ka = kb = NULL;
				int r = cmp_for_sort(c, ka, kb, line);
				if (rev ? r >= 0 : r <= 0)
					break;
				e[j] = e[j - 1];
				j--;
			}
			e[j] = x;
		}
		if (!c->st) {
			if (!strcmp(f, "min") || !strcmp(f, "max")) {
				*out = k ? json_incref(e[f[1] == 'i' ? 0 : k - 1]) : NULL;
			} else if (f[0] == 'u') {
				/* unique keeps the first occurrence in input order */
				json_t *r = json_array();
				for (size_t i = 0; r && i < k && step(c, line); i++) {
					json_t *x = json_array_get(items, i);
					bool dup = false;
					for (size_t j = 0; j < i && !dup; j++)
						dup = values_eq(x, json_array_get(items, j), 0);
					if (!dup && json_array_append(r, x))
						r = (json_decref(r), NULL);
				}
				if (!(*out = r) && !c->st)
					nomem(c);
			} else {
				json_t *r = json_array();
				for (size_t i = 0; r && i < k; i++)
					if (json_array_append(r, e[i]))
						r = (json_decref(r), NULL);
				if (!(*out = r))
					nomem(c);
			}
		}
		free(e);
		json_decref(items);
		return c->st;
	}
	if (!strcmp(f, "int") || !strcmp(f, "float") || !strcmp(f, "abs")) {
		if (!strcmp(f, "abs")) {
			if (!is_num(v))
				return rfail(c, line, "abs of a %s", type_name(v));
			*out = is_int(v) ? json_integer(ival(v) == LLONG_MIN ? ival(v) : llabs(ival(v)))
					 : json_real(fabs(fval(v)));
			return *out ? TERN_OK : nomem(c);
		}
		json_t *d = arg(a, 0, "default", NULL);
		double x = 0;
		bool ok = true;
		if (is_num(v)) {
			x = fval(v);
		} else if (v && json_is_string(v)) {
			char *e;
			x = strtod(json_string_value(v), &e);
			ok = e != json_string_value(v) && !*e;
		} else {
			ok = false;
		}
		if (f[0] == 'i') {
			if (is_int(v))
				*out = json_integer(ival(v));
			else if (ok && x > -9e18 && x < 9e18)
				*out = json_integer((long long)x);
			else
				*out = d ? json_incref(d) : json_integer(0);
		} else {
			*out = ok ? json_real(x) : d ? json_incref(d) : json_real(0);
		}
		return *out ? TERN_OK : nomem(c);
	}
	/* string filters */
	if (!strcmp(f, "trim") || !strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") ||
	    !strcmp(f, "title") || !strcmp(f, "replace") || !strcmp(f, "indent") || !strcmp(f, "escape") ||
	    !strcmp(f, "e")) {
		json_t *s = to_string(c, v, line);
		if (!s)
			return c->st;
		if (!strcmp(f, "trim")) {
			json_t *chars = arg(a, 0, "chars", NULL);
			*out = chars && !json_is_null(chars) && !want_str(c, chars, "trim", line)
				       ? NULL
				       : str_strip(c, s, chars && json_is_string(chars) ? chars : NULL, true,
						   true, line);
		} else if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") ||
			   !strcmp(f, "title")) {
			int mode = f[0] == 'l' ? 0 : f[0] == 'u' ? 1 : f[0] == 't' ? 2 : 3;
			json_t *lo = mode == 3 ? str_case(c, s, 0, line) : json_incref(s);
			*out = lo ? str_case(c, lo, mode, line) : NULL;
			json_decref(lo);
		} else if (!strcmp(f, "replace")) {
			json_t *o = arg(a, 0, "old", NULL), *w = arg(a, 1, "new", NULL),
			       *cn = arg(a, 2, "count", NULL);
			if (want_str(c, o, "replace", line) && want_str(c, w, "replace", line) &&
			    (!cn || want_int(c, cn, "replace count", line)))
				*out = str_replace(c, s, o, w, cn ? ival(cn) : -1, line);
		} else if (!strcmp(f, "indent")) {
			json_t *w = arg(a, 0, "width", NULL);
			bool first = truthy(arg(a, 1, "first", NULL)),
			     blank = truthy(arg(a, 2, "blank", NULL));
			struct buf pad = {0}, b = {0};
			bool ok = true;
			if (w && json_is_string(w))
				ok = buf_add(c, &pad, json_string_value(w), json_string_length(w), line);
			else
				for (long long i = 0; ok && i < (w && is_int(w) ? ival(w) : 4) && i < 256;
				     i++)
					ok = buf_add(c, &pad, " ", 1, line);
			const char *p = json_string_value(s);
			size_t len = json_string_length(s);
			bool at_start = true;
			for (size_t i = 0; ok && i < len; i++) {
				if (at_start) {
					bool empty = p[i] == '\n';
					if ((i > 0 || first) && (blank || !empty))
						ok = buf_add(c, &b, pad.p ? pad.p : "", pad.n, line);
				}
				ok = ok && buf_add(c, &b, p + i, 1, line);
				at_start = p[i] == '\n';
			}
			if (ok)
				*out = new_str(c, b.p ? b.p : "", b.n, line);
			free(pad.p);
			free(b.p);
		} else {
			struct buf b = {0};
			const char *p = json_string_value(s);
			bool ok = true;
			for (size_t i = 0; ok && i < json_string_length(s); i++) {
				const char *r = p[i] == '&'    ? "&amp;"
						: p[i] == '<'  ? "&lt;"
						: p[i] == '>'  ? "&gt;"
						: p[i] == '"'  ? "&#34;"
						: p[i] == '\'' ? "&#39;"
							       : NULL;
				ok = r ? buf_str(c, &b, r, line) : buf_add(c, &b, p + i, 1, line);
			}
			if (ok)
				*out = new_str(c, b.p ? b.p : "", b.n, line);
			free(b.p);
		}
		json_decref(s);
		return c->st;
	}
	return rfail(c, line, "unknown filter '%.60s'", f);
}

static enum tern_status do_test(struct ctx *c, struct node *n, json_t *v, const struct args *a, bool *res)
{
	const char *t = n->s;
	json_t *x = arg(a, 0, NULL, NULL);
	int line = n->line, r;
	if (!strcmp(t, "defined"))
		*res = v != NULL;
	else if (!strcmp(t, "undefined"))
		*res = v == NULL;
	else if (!strcmp(t, "none"))
		*res = v && json_is_null(v);
	else if (!strcmp(t, "string"))
		*res = v && json_is_string(v);
	else if (!strcmp(t, "mapping"))
		*res = v && json_is_object(v);
	else if (!strcmp(t, "iterable"))
		*res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
	else if (!strcmp(t, "sequence"))
		*res = v && (json_is_array(v) || json_is_object(v) || json_is_string(v));
	else if (!strcmp(t, "number"))
		*res = v && (json_is_number(v) || json_is_boolean(v));
	else if (!strcmp(t, "integer"))
		*res = v && json_is_integer(v);
	else if (!strcmp(t, "float"))
		*res = v && json_is_real(v);
	else if (!strcmp(t, "boolean"))
		*res = v && json_is_boolean(v);
	else if (!strcmp(t, "true"))
		*res = v && json_is_true(v);
	else if (!strcmp(t, "false"))
		*res = v && json_is_false(v);
	else if (!strcmp(t, "callable"))
		*res = false;
	else if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
		*res = v && json_is_string(v);
		for (const char *p = *res ? json_string_value(v) : ""; *p; p++)
			if (t[0] == 'l' ? (*p >= 'A' && *p <= 'Z') : (*p >= 'a' && *p <= 'z'))
				*res = false;
	} else if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==") || !strcmp(t, "sameas"))
		*res = values_eq(v, x, 0) && (t[0] != 's' || !v || !x || json_typeof(v) == json_typeof(x));
	else if (!strcmp(t, "ne") || !strcmp(t, "!="))
		*res = !values_eq(v, x, 0);
	else if (!strcmp(t, "lt") || !strcmp(t, "<") || !strcmp(t, "le") || !strcmp(t, "<=") ||
		 !strcmp(t, "gt") || !strcmp(t, ">") || !strcmp(t, "ge") || !strcmp(t, ">=") ||
		 !strcmp(t, "lessthan") || !strcmp(t, "greaterthan")) {
		if (!compare(c, v, x, &r, line))
			return c->st;
		bool lt = t[0] == 'l' || t[0] == '<', eq = t[1] == 'e' || t[1] == '=';
		*res = lt ? (eq ? r <= 0 : r < 0) : (eq ? r >= 0 : r > 0);
	} else if (!strcmp(t, "divisibleby") || !strcmp(t, "even") || !strcmp(t, "odd")) {
		long long d = t[0] == 'd' ? (is_int(x) ? ival(x) : 0) : 2;
		if (!is_int(v) || d == 0)
			return rfail(c, line, "test %s needs integers", t);
		long long m = d == -1 ? 0 : ival(v) % d;
		*res = t[0] == 'o' ? m != 0 : m == 0;
	} else if (!strcmp(t, "in")) {
		*res = false;
		if (x && json_is_string(x) && v && json_is_string(v))
			*res = memmem_(json_string_value(x), json_string_length(x), json_string_value(v),
				       json_string_length(v)) != NULL;
		else if (x && json_is_array(x))
			for (size_t i = 0; i < json_array_size(x) && !*res; i++)
				*res = values_eq(v, json_array_get(x, i), 0);
		else if (x && json_is_object(x) && v && json_is_string(v))
			*res = json_object_get(x, json_string_value(v)) != NULL;
	} else
		return rfail(c, line, "unknown test '%.60s'", t);
	return TERN_OK;
}

static json_t *slice(struct ctx *c, json_t *v, json_t *lo, json_t *hi, json_t *st, int line)
{
	if ((lo && !json_is_null(lo) && !is_int(lo)) || (hi && !json_is_null(hi) && !is_int(hi)) ||
	    (st && !json_is_null(st) && !is_int(st))) {
		rfail(c, line, "slice bounds must be integers");
		return NULL;
	}
	bool str = v && json_is_string(v);
	if (!v || !(str || json_is_array(v))) {
		rfail(c, line, "cannot slice %s", type_name(v));
		return NULL;
	}
	const char *s = str ? json_string_value(v) : NULL;
	size_t sn = str ? json_string_length(v) : 0;
	long long n = str ? (long long)u8_count(s, sn) : (long long)json_array_size(v);
	long long k = st && !json_is_null(st) ? ival(st) : 1;
	if (k == 0) {
		rfail(c, line, "slice step cannot be zero");
		return NULL;
	}
	/* a step longer than the sequence takes one item either way; clamped, i += k cannot overflow */
	if (k > n + 1)
		k = n + 1;
	if (k < -n - 1)
		k = -n - 1;
	long long a, b;
	bool ha = lo && !json_is_null(lo), hb = hi && !json_is_null(hi);
	if (k > 0) {
		a = ha ? ival(lo) : 0;
		b = hb ? ival(hi) : n;
		if (a < 0)
			a = a + n < 0 ? 0 : a + n;
		if (b < 0)
			b = b + n < 0 ? 0 : b + n;
		if (a > n)
			a = n;
		if (b > n)
			b = n;
	} else {
		a = ha ? ival(lo) : n - 1;
		b = hb ? ival(hi) : -1 - n;
		if (a < 0)
			a = a + n < 0 ? -1 : a + n;
		else if (a >= n)
			a = n - 1;
		if (b < 0)
			b = b + n < 0 ? -1 : b + n;
		else if (b >= n)
			b = n - 1;
	}
	if (str && k == 1) {
		size_t pa = u8_offset(s, sn, (size_t)a), pb = b > a ? u8_offset(s, sn, (size_t)b) : pa;
		return new_str(c, s + pa, pb - pa, line);
	}
	json_t *r = json_array();
	if (!r)
		return nomem(c), NULL;
	struct buf b2 = {0};
	for (long long i = a; k > 0 ? i < b : i > b; i += k) {
		if (!step(c, line))
			break;
		if (str) {
			size_t p = u8_offset(s, sn, (size_t)i);
			if (!buf_add(c, &b2, s + p, u8_next(s, sn, p) - p, line))
				break;
		} else if (json_array_append(r, json_array_get(v, (size_t)i))) {
			nomem(c);
			break;
		}
	}
	if (c->st) {
		free(b2.p);
		json_decref(r);
		return NULL;
	}
	if (str) {
		json_decref(r);
		r = new_str(c, b2.p ? b2.p : "", b2.n, line);
		free(b2.p);
	}
	return r;
}

static enum tern_status call_macro(struct ctx *c, struct node *m, struct node *call, const struct args *a,
				   json_t **out)
{
	if (c->calls >= TERN_JINJA_MAX_CALLS)
		return rfail(c, call->line, "macro calls nested deeper than %d", TERN_JINJA_MAX_CALLS);
	if (a->npos > m->nn)
		return rfail(c, call->line, "macro %s takes %d arguments, got %d", m->s, m->nn, a->npos);
	int saved_base = c->base;
	if (push_frame(c))
		return c->st;
	json_t *fr = c->frames[c->nframes - 1];
	for (int i = 0; i < m->nn && !c->st; i++) {
		bool given;
		json_t *v = arg(a, i, m->names[i], &given);
		if (given) {
			json_object_set(fr, m->names[i], v ? v : json_null());
		} else if (m->l2[i]) {
			json_t *d = NULL;
			if (!eval(c, m->l2[i], &d) && d)
				json_object_set_new(fr, m->names[i], d);
		}
	}
	for (int k = 0; k < a->nkw && !c->st; k++) {
		bool known = false;
		for (int i = 0; i < m->nn; i++)
			known |= !strcmp(a->kwn[k], m->names[i]);
		if (!known)
			rfail(c, call->line, "macro %s has no parameter '%s'", m->s, a->kwn[k]);
	}
	size_t start = c->out.n;
	if (!c->st) {
		c->base = c->nframes - 1;
		c->calls++;
		exec_body(c, m->l1, m->n1);
		c->calls--;
		c->ctl = 0;
	}
	c->base = saved_base;
	pop_frame(c);
	if (c->st)
		return c->st;
	*out = new_str(c, c->out.p ? c->out.p + start : "", c->out.n - start, call->line);
	c->out.n = start;
	if (c->out.p)
		c->out.p[start] = 0;
	return c->st;
}

static enum tern_status call_method(struct ctx *c, struct node *n, json_t *obj, const char *m,
				    const struct args *a, json_t **out)
{
	int line = n->line;
	json_t *x0 = arg(a, 0, NULL, NULL), *x1 = arg(a, 1, NULL, NULL);
	if (obj && json_is_string(obj)) {
		if (!strcmp(m, "strip") || !strcmp(m, "lstrip") || !strcmp(m, "rstrip")) {
			if (x0 && !json_is_null(x0) && !want_str(c, x0, m, line))
				return c->st;
			*out = str_strip(c, obj, x0 && json_is_string(x0) ? x0 : NULL, m[0] != 'r',
					 m[0] != 'l', line);
			return c->st;
		}
		if (!strcmp(m, "split")) {
			json_t *mx = arg(a, 1, "maxsplit", NULL), *sep = arg(a, 0, "sep", NULL);
			if ((sep && !json_is_null(sep) && !want_str(c, sep, "split", line)) ||
			    (mx && !want_int(c, mx, "split maxsplit", line)))
				return c->st;
			*out = str_split(c, obj, sep, mx ? ival(mx) : -1, line);
			return c->st;
		}
		if (!strcmp(m, "startswith") || !strcmp(m, "endswith")) {
			const char *s = json_string_value(obj);
			size_t sn = json_string_length(obj);
			bool r = false;
			json_t *alts = x0 && json_is_array(x0) ? x0 : NULL;
			size_t na = alts ? json_array_size(alts) : 1;
			for (size_t i = 0; i < na && !r; i++) {
				json_t *p = alts ? json_array_get(alts, i) : x0;
				if (!want_str(c, p, m, line))
					return c->st;
				size_t pn = json_string_length(p);
				r = pn <= sn &&
				    !memcmp(m[0] == 's' ? s : s + sn - pn, json_string_value(p), pn);
			}
			*out = json_boolean(r);
			return TERN_OK;
		}
		if (!strcmp(m, "upper") || !strcmp(m, "lower") || !strcmp(m, "title") ||
		    !strcmp(m, "capitalize")) {
			int mode = m[0] == 'l' ? 0 : m[0] == 'u' ? 1 : m[0] == 't' ? 2 : 3;
			json_t *lo = mode == 3 ? str_case(c, obj, 0, line) : json_incref(obj);
			*out = lo ? str_case(c, lo, mode, line) : NULL;
			json_decref(lo);
			return c->st;
		}
		if (!strcmp(m, "replace")) {
			json_t *cn = arg(a, 2, NULL, NULL);
			if (want_str(c, x0, "replace", line) && want_str(c, x1, "replace", line) &&
			    (!cn || want_int(c, cn, "replace count", line)))
				*out = str_replace(c, obj, x0, x1, cn ? ival(cn) : -1, line);
			return c->st;
		}
		if (!strcmp(m, "find") || !strcmp(m, "count")) {
			if (!want_str(c, x0, m, line))
				return c->st;
			const char *s = json_string_value(obj), *p = json_string_value(x0);
			size_t sn = json_string_length(obj), pn = json_string_length(x0);
			if (m[0] == 'f') {
				const char *q = memmem_(s, sn, p, pn);
				*out = json_integer(q ? (long long)u8_count(s, (size_t)(q - s)) : -1);
			} else {
				long long k = 0;
				for (size_t i = 0; pn && i + pn <= sn;) {
					const char *q = memmem_(s + i, sn - i, p, pn);
					if (!q)
						break;
					k++;
					i = (size_t)(q - s) + pn;
				}
				*out = json_integer(pn ? k : (long long)u8_count(s, sn) + 1);
			}
			return *out ? TERN_OK : nomem(c);
		}
		if (!strcmp(m, "join")) {
			json_t *items = iter_items(c, x0, line);
			if (!items)
				return c->st;
			struct buf b = {0};
			size_t i;
			json_t *x;
			bool ok = true;
			json_array_foreach(items, i, x)
			{
				if (!x || !json_is_string(x)) {
					rfail(c, line, "join: item %zu is %s, not a string", i, type_name(x));
					ok = false;
					break;
				}
				ok = (!i || buf_add(c, &b, json_string_value(obj), json_string_length(obj),
						    line)) &&
				     buf_add(c, &b, json_string_value(x), json_string_length(x), line);
				if (!ok)
					break;
			}
			json_decref(items);
			if (ok)
				*out = new_str(c, b.p ? b.p : "", b.n, line);
			free(b.p);
			return c->st;
		}
	}
	if (obj && json_is_object(obj)) {
		if (!strcmp(m, "items")) {
			*out = dict_items(c, obj);
			return c->st;
		}
		if (!strcmp(m, "keys") || !strcmp(m, "values")) {
			json_t *r = json_array();
			const char *k;
			json_t *x;
			json_object_foreach(obj, k, x)
			{
				if (r &&
				    json_array_append_new(r, m[0] == 'k' ? json_string(k) : json_incref(x)))
					r = (json_decref(r), NULL);
			}
			return (*out = r) ? TERN_OK : nomem(c);
		}
		if (!strcmp(m, "get")) {
			if (!want_str(c, x0, "get", line))
				return c->st;
			json_t *v = json_object_get(obj, json_string_value(x0));
			*out = v ? json_incref(v) : x1 ? json_incref(x1) : json_null();
			return *out ? TERN_OK : nomem(c);
		}
	}
	return rfail(c, line, "'%s' object has no method '%s'", type_name(obj), m);
}

static enum tern_status eval_call(struct ctx *c, struct node *n, json_t **out)
{
	struct node *f = n->a;
	struct args a;
	int line = n->line;
	if (f->k == N_NAME) {
		const char *name = f->s;
		struct node *m = NULL;
		for (int i = 0; i < c->t->nmacros && !m; i++)
			if (!strcmp(c->t->macros[i].name, name))
				m = c->t->macros[i].n;
		if (!m && strcmp(name, "range") && strcmp(name, "raise_exception") &&
		    strcmp(name, "namespace") && strcmp(name, "dict"))
			return rfail(c, line, lookup(c, name) ? "'%s' is not callable" : "'%s' is undefined",
				     name);
		if (eval_args(c, n, &a))
			return c->st;
		if (m) {
			call_macro(c, m, n, &a, out);
		} else if (!strcmp(name, "raise_exception")) {
			json_t *msg = to_string(c, arg(&a, 0, NULL, NULL), line);
			if (msg) {
				/* one line: the message's control characters become spaces */
				char text[401];
				snprintf(text, sizeof text, "%s", json_string_value(msg));
				for (char *p = text; *p; p++)
					if ((unsigned char)*p < 0x20)
						*p = ' ';
				rfail(c, line, "raised: %s", text);
			}
			json_decref(msg);
		} else if (!strcmp(name, "range")) {
			long long lo = 0, hi = 0, st = 1;
			for (int i = 0; i < a.npos; i++)
				if (!want_int(c, a.pos[i], "range", line))
					break;
			if (!c->st) {
				if (a.npos == 1)
					hi = ival(a.pos[0]);
				else if (a.npos >= 2) {
					lo = ival(a.pos[0]);
					hi = ival(a.pos[1]);
					st = a.npos > 2 ? ival(a.pos[2]) : 1;
				}
				if (st == 0)
					rfail(c, line, "range step cannot be zero");
			}
			json_t *r = c->st ? NULL : json_array();
			for (long long i = lo; r && !c->st && (st > 0 ? i < hi : i > hi);) {
				if (step(c, line) && json_array_append_new(r, json_integer(i)))
					nomem(c);
				if (__builtin_add_overflow(i, st, &i))
					break;
			}
			if (c->st)
				json_decref(r);
			else if (!(*out = r))
				nomem(c);
		} else {
			/* namespace(...) / dict(...) */
			json_t *d = json_object();
			if (!d) {
				nomem(c);
			} else {
				json_t *init = arg(&a, 0, NULL, NULL);
				if (init && json_is_object(init))
					json_object_update(d, init);
				for (int i = 0; i < a.nkw; i++)
					json_object_set(d, a.kwn[i], a.kwv[i] ? a.kwv[i] : json_null());
				if (name[0] == 'n') {
					if (c->nns == c->cns) {
						size_t nc = c->cns ? c->cns * 2 : 8;
						json_t **v = realloc(c->ns, nc * sizeof *v);
						if (!v) {
							json_decref(d);
							d = NULL;
							nomem(c);
						} else {
							c->ns = v;
							c->cns = nc;
						}
					}
					if (d && holds_namespace(c, d, 0)) {
						json_decref(d);
						d = NULL;
						rfail(c, line, "a namespace cannot hold a namespace");
					}
					if (d)
						c->ns[c->nns++] = json_incref(d);
				}
				*out = d;
			}
		}
		args_free(&a);
		return c->st;
	}
	if (f->k == N_ATTR) {
		json_t *obj = NULL;
		if (eval(c, f->a, &obj))
			return c->st;
		if (!obj) {
			return rfail(c, line, "cannot call '%s' on an undefined value", f->s);
		}
		if (!eval_args(c, n, &a)) {
			call_method(c, n, obj, f->s, &a, out);
			args_free(&a);
		}
		json_decref(obj);
		return c->st;
	}
	return rfail(c, line, "this expression is not callable");
}

static enum tern_status arith(struct ctx *c, int op, json_t *a, json_t *b, json_t **out, int line)
{
	static const char *const names[] = {"+", "-", "*", "/", "//", "%", "**"};
	if (op == OP_ADD && a && b && json_is_string(a) && json_is_string(b)) {
		size_t na = json_string_length(a), nb = json_string_length(b);
		if (na + nb > c->max_output)
			return rfail(c, line, "a string longer than %zu bytes", c->max_output);
		char *s = malloc(na + nb + 1);
		if (!s)
			return nomem(c);
		memcpy(s, json_string_value(a), na);
		memcpy(s + na, json_string_value(b), nb);
		*out = new_str(c, s, na + nb, line);
		free(s);
		return c->st;
	}
	if (op == OP_ADD && a && b && json_is_array(a) && json_is_array(b)) {
		*out = json_copy(a);
		if (!*out || json_array_extend(*out, b))
			return nomem(c);
		return TERN_OK;
	}
	if (op == OP_MUL &&
	    ((a && json_is_string(a) && is_int(b)) || (b && json_is_string(b) && is_int(a)))) {
		json_t *s = json_is_string(a) ? a : b;
		long long k = json_is_string(a) ? ival(b) : ival(a);
		size_t sn = json_string_length(s);
		if (k > 0 && sn && (size_t)k > c->max_output / sn)
			return rfail(c, line, "a string longer than %zu bytes", c->max_output);
		struct buf bb = {0};
		for (long long i = 0; i < k; i++)
			if (!buf_add(c, &bb, json_string_value(s), sn, line))
				break;
		if (!c->st)
			*out = new_str(c, bb.p ? bb.p : "", bb.n, line);
		free(bb.p);
		return c->st;
	}
	if (!is_num(a) || !is_num(b))
		return rfail(c, line, "unsupported operand types for %s: '%s' and '%s'", names[op],
			     type_name(a), type_name(b));
	if (is_int(a) && is_int(b) && op != OP_DIV) {
		long long x = ival(a), y = ival(b), r = 0;
		bool ovf = false;
		switch (op) {
		case OP_ADD: ovf = __builtin_add_overflow(x, y, &r); break;
		case OP_SUB: ovf = __builtin_sub_overflow(x, y, &r); break;
		case OP_MUL: ovf = __builtin_mul_overflow(x, y, &r); break;
		case OP_FDIV:
		case OP_MOD:
			if (y == 0)
				return rfail(c, line, "integer division or modulo by zero");
			if (x == LLONG_MIN && y == -1) {
				ovf = true;
				break;
			}
			r = op == OP_FDIV ? x / y : x % y;
			if (op == OP_FDIV && (x % y != 0) && ((x < 0) != (y < 0)))
				r--;
			if (op == OP_MOD && r != 0 && ((r < 0) != (y < 0)))
				r += y;
			break;
		case OP_POW:
			if (y < 0) {
				*out = json_real(pow((double)x, (double)y));
				return *out ? TERN_OK : nomem(c);
			}
			/* by squaring: |x| <= 1 with a huge y must not loop y times */
			r = 1;
			for (long long base = x, e = y; e > 0 && !ovf; e >>= 1) {
				if (e & 1)
					ovf = __builtin_mul_overflow(r, base, &r);
				if (e > 1 && !ovf)
					ovf = __builtin_mul_overflow(base, base, &base);
			}
			break;
		default: break;
		}
		if (ovf)
			return rfail(c, line, "integer overflow in %s", names[op]);
		*out = json_integer(r);
		return *out ? TERN_OK : nomem(c);
	}
	double x = fval(a), y = fval(b), r = 0;
	switch (op) {
	case OP_ADD: r = x + y; break;
	case OP_SUB: r = x - y; break;
	case OP_MUL: r = x * y; break;
	case OP_DIV:
		if (y == 0)
			return rfail(c, line, "division by zero");
		r = x / y;
		break;
	case OP_FDIV:
	case OP_MOD:
		if (y == 0)
			return rfail(c, line, "float division or modulo by zero");
		r = op == OP_FDIV ? floor(x / y) : x - floor(x / y) * y;
		break;
	case OP_POW: r = pow(x, y); break;
	default: break;
	}
	*out = json_real(r);
	return *out ? TERN_OK : nomem(c);
}

static enum tern_status eval(struct ctx *c, struct node *n, json_t **out)
{
	*out = NULL;
	if (c->st)
		return c->st;
	if (!step(c, n->line))
		return c->st;
	json_t *a = NULL, *b = NULL;
	switch (n->k) {
	case N_CONST: *out = json_incref(n->v); return TERN_OK;
	case N_NAME: *out = json_incref(lookup(c, n->s)); return TERN_OK;
	case N_LIST: {
		json_t *l = json_array();
		if (!l)
			return nomem(c);
		for (int i = 0; i < n->n1; i++) {
			if (eval(c, n->l1[i], &a))
				break;
			if (json_array_append_new(l, a ? a : json_null())) {
				nomem(c);
				break;
			}
		}
		if (c->st)
			json_decref(l);
		else
			*out = l;
		return c->st;
	}
	case N_DICT: {
		json_t *d = json_object();
		if (!d)
			return nomem(c);
		for (int i = 0; i < n->n1 && !c->st; i++) {
			if (eval(c, n->l1[i], &a) || eval(c, n->l2[i], &b))
				break;
			json_t *ks = to_string(c, a, n->line);
			if (ks && json_object_set(d, json_string_value(ks), b ? b : json_null()))
				nomem(c);
			json_decref(ks);
			json_decref(a);
			json_decref(b);
			a = b = NULL;
		}
		json_decref(a);
		if (c->st)
			json_decref(d);
		else
			*out = d;
		return c->st;
	}
	case N_ATTR:
		if (eval(c, n->a, &a))
			return c->st;
		if (!a) {
			const char *what = n->a->k == N_NAME   ? n->a->s
					   : n->a->k == N_ATTR ? n->a->s
							       : "the value";
			return rfail(c, n->line, "'%s' is undefined (reading .%s)", what, n->s);
		}
		if (json_is_object(a))
			*out = json_incref(json_object_get(a, n->s));
		json_decref(a);
		return TERN_OK;
	case N_ITEM:
		if (eval(c, n->a, &a) || eval(c, n->b, &b)) {
			json_decref(a);
			return c->st;
		}
		if (!a) {
			json_decref(b);
			const char *what = n->a->k == N_NAME   ? n->a->s
					   : n->a->k == N_ATTR ? n->a->s
							       : "the value";
			return rfail(c, n->line, "'%s' is undefined (reading an item)", what);
		}
		*out = get_item(a, b);
		json_decref(a);
		json_decref(b);
		return TERN_OK;
	case N_SLICE: {
		json_t *s = NULL;
		if (!eval(c, n->a, &a) && (!n->b || !eval(c, n->b, &b)) && (!n->c || !eval(c, n->c, &s))) {
			json_t *st = NULL;
			if (!n->l1[0] || !eval(c, n->l1[0], &st))
				*out = slice(c, a, b, s, st, n->line);
			json_decref(st);
		}
		json_decref(a);
		json_decref(b);
		json_decref(s);
		return c->st;
	}
	case N_CALL: return eval_call(c, n, out);
	case N_FILTER: {
		struct args ar;
		if (eval(c, n->a, &a))
			return c->st;
		if (!eval_args(c, n, &ar)) {
			apply_filter(c, n, a, &ar, out);
			args_free(&ar);
		}
		json_decref(a);
		return c->st;
	}
	case N_TEST: {
		struct args ar;
		bool r = false;
		if (eval(c, n->a, &a))
			return c->st;
		if (!eval_args(c, n, &ar)) {
			do_test(c, n, a, &ar, &r);
			args_free(&ar);
		}
		json_decref(a);
		if (!c->st && !(*out = json_boolean(r != (bool)n->op)))
			nomem(c);
		return c->st;
	}
	case N_NEG:
	case N_POS:
		if (eval(c, n->a, &a))
			return c->st;
		if (!is_num(a)) {
			rfail(c, n->line, "bad operand type for unary %c: '%s'", n->k == N_NEG ? '-' : '+',
			      type_name(a));
		} else if (n->k == N_POS) {
			*out = json_incref(a);
		} else if (is_int(a)) {
			if (ival(a) == LLONG_MIN)
				rfail(c, n->line, "integer overflow in unary -");
			else
				*out = json_integer(-ival(a));
		} else {
			*out = json_real(-fval(a));
		}
		json_decref(a);
		return c->st;
	case N_NOT:
		if (eval(c, n->a, &a))
			return c->st;
		*out = json_boolean(!truthy(a));
		json_decref(a);
		return TERN_OK;
	case N_AND:
	case N_OR:
		if (eval(c, n->a, &a))
			return c->st;
		if (truthy(a) == (n->k == N_OR)) {
			*out = a;
			return TERN_OK;
		}
		json_decref(a);
		return eval(c, n->b, out);
	case N_COND:
		if (eval(c, n->b, &a))
			return c->st;
		bool t = truthy(a);
		json_decref(a);
		if (t)
			return eval(c, n->a, out);
		return n->c ? eval(c, n->c, out) : TERN_OK;
	case N_BIN: {
		if (eval(c, n->a, &a) || eval(c, n->b, &b)) {
			json_decref(a);
			return c->st;
		}
		int r;
		switch (n->op) {
		case OP_CAT: {
			struct buf bb = {0};
			if (py_str(c, &bb, a, 0, n->line) && py_str(c, &bb, b, 0, n->line))
				*out = new_str(c, bb.p ? bb.p : "", bb.n, n->line);
			free(bb.p);
			break;
		}
		case OP_EQ: *out = json_boolean(values_eq(a, b, 0)); break;
		case OP_NE: *out = json_boolean(!values_eq(a, b, 0)); break;
		case OP_LT:
		case OP_LE:
		case OP_GT:
		case OP_GE:
			if (compare(c, a, b, &r, n->line))
				*out = json_boolean(n->op == OP_LT   ? r < 0
						    : n->op == OP_LE ? r <= 0
						    : n->op == OP_GT ? r > 0
								     : r >= 0);
			break;
		case OP_IN:
		case OP_NOTIN: {
			bool res = false;
			if (b && json_is_string(b)) {
				if (!a || !json_is_string(a))
					rfail(c, n->line, "'in <string>' needs a string on the left, not %s",
					      type_name(a));
				else
					res = memmem_(json_string_value(b), json_string_length(b),
						      json_string_value(a), json_string_length(a)) != NULL;
			} else if (b && json_is_array(b)) {
				for (size_t i = 0; i < json_array_size(b) && !res; i++)
					res = values_eq(a, json_array_get(b, i), 0);
			} else if (b && json_is_object(b)) {
				res = a && json_is_string(a) && json_object_get(b, json_string_value(a));
			} else if (b) {
				rfail(c, n->line, "argument of type '%s' is not iterable", type_name(b));
			}
			if (!c->st)
				*out = json_boolean(res != (n->op == OP_NOTIN));
			break;
		}
		default: arith(c, n->op, a, b, out, n->line);
		}
		json_decref(a);
		json_decref(b);
		return c->st;
	}
	default: return rfail(c, n->line, "internal: not an expression");
	}
}

static enum tern_status set_var(struct ctx *c, const char *name, json_t *v)
{
	if (json_object_set(c->frames[c->nframes - 1], name, v ? v : json_null()))
		return nomem(c);
	return TERN_OK;
}

static enum tern_status exec_for(struct ctx *c, struct node *n)
{
	json_t *it = NULL, *items = NULL;
	if (eval(c, n->a, &it))
		return c->st;
	if (it && json_is_null(it)) {
		json_decref(it);
		return rfail(c, n->line, "'NoneType' object is not iterable");
	}
	items = iter_items(c, it, n->line);
	json_decref(it);
	if (!items || push_frame(c)) {
		json_decref(items);
		return c->st;
	}
	/* bind the targets of one item */
	size_t i;
	json_t *x;
	json_t *kept = n->b ? json_array() : json_incref(items);
	if (!kept)
		nomem(c);
#define BIND(x_)                                                                                            \
	do {                                                                                                \
		if (n->nn == 1) {                                                                           \
			set_var(c, n->names[0], (x_));                                                      \
		} else {                                                                                    \
			json_t *seq_ = (x_) && json_is_array(x_) ? (x_) : NULL;                             \
			if (!seq_ || (int)json_array_size(seq_) != n->nn)                                   \
				rfail(c, n->line, "cannot unpack %s into %d loop variables", type_name(x_), \
				      n->nn);                                                               \
			for (int k_ = 0; k_ < n->nn && !c->st; k_++)                                        \
				set_var(c, n->names[k_], json_array_get(seq_, (size_t)k_));                 \
		}                                                                                           \
	} while (0)
	if (n->b && kept) {
		json_array_foreach(items, i, x)
		{
			json_t *cond = NULL;
			BIND(x);
			if (c->st || eval(c, n->b, &cond))
				break;
			if (truthy(cond) && json_array_append(kept, x))
				nomem(c);
			json_decref(cond);
		}
	}
	json_decref(items);
	size_t len = kept ? json_array_size(kept) : 0;
	for (i = 0; i < len && !c->st; i++) {
		if (!step(c, n->line))
			break;
		x = json_array_get(kept, i);
		json_t *loop =
			json_pack("{sIsIsIsIsbsbsIsIsI}", "index", (json_int_t)i + 1, "index0", (json_int_t)i,
				  "revindex", (json_int_t)(len - i), "revindex0", (json_int_t)(len - i - 1),
				  "first", i == 0, "last", i + 1 == len, "length", (json_int_t)len, "depth",
				  (json_int_t)1, "depth0", (json_int_t)0);
		if (!loop) {
			nomem(c);
			break;
		}
		if (i > 0)
			json_object_set(loop, "previtem", json_array_get(kept, i - 1));
		if (i + 1 < len)
			json_object_set(loop, "nextitem", json_array_get(kept, i + 1));
		json_object_set_new(c->frames[c->nframes - 1], "loop", loop);
		BIND(x);
		if (c->st)
			break;
		exec_body(c, n->l1, n->n1);
		if (c->ctl == 1) {
			c->ctl = 0;
			break;
		}
		c->ctl = 0;
	}
#undef BIND
	json_decref(kept);
	pop_frame(c);
	if (!c->st && len == 0 && n->n2)
		exec_body(c, n->l2, n->n2);
	return c->st;
}

static enum tern_status exec_stmt(struct ctx *c, struct node *n)
{
	if (!step(c, n->line))
		return c->st;
	json_t *v = NULL;
	switch (n->k) {
	case S_TEXT: buf_add(c, &c->out, n->s, n->sn, n->line); return c->st;
	case S_OUT:
		if (!eval(c, n->a, &v))
			py_str(c, &c->out, v, 0, n->line);
		json_decref(v);
		return c->st;
	case S_IF:
		if (eval(c, n->a, &v))
			return c->st;
		bool t = truthy(v);
		json_decref(v);
		return t ? exec_body(c, n->l1, n->n1) : exec_body(c, n->l2, n->n2);
	case S_FOR: return exec_for(c, n);
	case S_SET:
		if (eval(c, n->a, &v))
			return c->st;
		if (n->attr) {
			json_t *ns = lookup(c, n->s);
			if (!ns || !is_namespace(c, ns))
				rfail(c, n->line, "cannot set '%s.%s': '%s' is not a namespace()", n->s,
				      n->attr, n->s);
			else if (holds_namespace(c, v, 0))
				rfail(c, n->line, "a namespace cannot hold a namespace");
			else if (json_object_set(ns, n->attr, v ? v : json_null()))
				nomem(c);
		} else {
			set_var(c, n->s, v);
		}
		json_decref(v);
		return c->st;
	case S_SETBLOCK: {
		size_t start = c->out.n;
		if (exec_body(c, n->l1, n->n1))
			return c->st;
		v = new_str(c, c->out.p ? c->out.p + start : "", c->out.n - start, n->line);
		c->out.n = start;
		if (c->out.p)
			c->out.p[start] = 0;
		if (v)
			set_var(c, n->s, v);
		json_decref(v);
		return c->st;
	}
	case S_MACRO: return TERN_OK; /* registered at parse time */
	case S_BREAK:
	case S_CONTINUE: c->ctl = n->k == S_BREAK ? 1 : 2; return TERN_OK;
	case S_GEN: {
		size_t start = c->out.n;
		if (exec_body(c, n->l1, n->n1))
			return c->st;
		if (c->ngen + 2 > c->cgen) {
			size_t nc = c->cgen ? c->cgen * 2 : 16;
			size_t *g = realloc(c->gen, nc * sizeof *g);
			if (!g)
				return nomem(c);
			c->gen = g;
			c->cgen = nc;
		}
		c->gen[c->ngen++] = start;
		c->gen[c->ngen++] = c->out.n;
		return TERN_OK;
	}
	default: return rfail(c, n->line, "internal: not a statement");
	}
}

static enum tern_status exec_body(struct ctx *c, struct node **body, int n)
{
	for (int i = 0; i < n && !c->st && !c->ctl; i++)
		exec_stmt(c, body[i]);
	return c->st;
}

void tern_jinja_out_free(struct tern_jinja_out *o)
{
	free(o->text);
	free(o->gen);
	memset(o, 0, sizeof *o);
}

enum tern_status tern_jinja_render(const struct tern_jinja *t, json_t *vars,
				   const struct tern_jinja_limits *lim, struct tern_jinja_out *out)
{
	memset(out, 0, sizeof *out);
	struct ctx c = {0};
	c.t = t;
	c.max_output = lim && lim->max_output ? lim->max_output : (size_t)16 << 20;
	c.max_steps = lim && lim->max_steps ? lim->max_steps : 10000000;
	c.base = 1;
	if (!json_is_object(vars))
		return tern_fail(TERN_E_INVALID, "%s: the variables must be a JSON object", t->name);
	if (push_frame(&c) == TERN_OK) {
		json_decref(c.frames[0]);
		c.frames[0] = json_incref(vars);
		if (push_frame(&c) == TERN_OK)
			exec_body(&c, t->body, t->nbody);
	}
	while (c.nframes)
		pop_frame(&c);
	free(c.frames);
	for (size_t i = 0; i < c.nns; i++) {
		/* break namespace self-references before the last reference goes */
		json_object_clear(c.ns[i]);
		json_decref(c.ns[i]);
	}
	free(c.ns);
	if (c.st) {
		free(c.out.p);
		free(c.gen);
		return c.st;
	}
	if (!c.out.p && !(c.out.p = calloc(1, 1))) {
		free(c.gen);
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	}
	out->text = c.out.p;
	out->len = c.out.n;
	out->gen = c.gen;
	out->n_gen = c.ngen / 2;
	return TERN_OK;
}
