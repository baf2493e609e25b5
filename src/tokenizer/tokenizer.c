/* tokenizer.json loading and the encode / decode pipelines (public API in tern/tokenizer.h). */
#include "tokenizer/tok.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ID (1 << 24) /* ids beyond this are refused: a vocabulary never gets near it */
#define MAX_STAGES 64    /* normalizers / pre-tokenizers / decoders after flattening Sequence */
#define MAX_NESTING 8    /* Sequence inside Sequence */
#define MAX_FILE (1u << 30)

/* The pre-tokenizer regex of GPT-2's ByteLevel (use_regex: true). */
static const char gpt2_pattern[] =
	"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

struct loader {
	struct tern_tokenizer *t;
	const char *name;
};

/* ---- small JSON helpers ------------------------------------------------------------------ */

static const char *type_of(const json_t *o)
{
	const json_t *ty = json_object_get(o, "type");
	return json_is_string(ty) ? json_string_value(ty) : NULL;
}

static enum tern_status get_bool(struct loader *L, const json_t *o, const char *key, bool def, bool *out,
				 const char *what)
{
	const json_t *v = json_object_get(o, key);
	if (!v || json_is_null(v)) {
		*out = def;
		return TERN_OK;
	}
	if (!json_is_boolean(v))
		return tern_fail(TERN_E_FORMAT, "%s: %s: '%s' must be true or false", L->name, what, key);
	*out = json_is_true(v);
	return TERN_OK;
}

static enum tern_status get_str(struct loader *L, const json_t *o, const char *key, const char **s, size_t *n,
				const char *what)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_string(v))
		return tern_fail(TERN_E_FORMAT, "%s: %s: missing string '%s'", L->name, what, key);
	*s = json_string_value(v);
	*n = json_string_length(v);
	return TERN_OK;
}

static enum tern_status dup_str(const char *s, size_t n, char **out)
{
	*out = malloc(n + 1);
	if (!*out)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
	memcpy(*out, s, n);
	(*out)[n] = 0;
	return TERN_OK;
}

/* {"String": "x"} or {"Regex": "x"} */
static enum tern_status get_pattern(struct loader *L, const json_t *o, struct tok_pattern *p,
				    const char *what)
{
	const json_t *pat = json_object_get(o, "pattern");
	const json_t *s = json_object_get(pat, "String"), *r = json_object_get(pat, "Regex");
	char where[128];
	snprintf(where, sizeof where, "%s: %s pattern", L->name, what);
	if (json_is_string(s))
		return tok_pattern_compile(p, json_string_value(s), json_string_length(s), true, where);
	if (json_is_string(r))
		return tok_pattern_compile(p, json_string_value(r), json_string_length(r), false, where);
	return tern_fail(TERN_E_FORMAT, "%s: %s: 'pattern' must be {\"String\": ...} or {\"Regex\": ...}",
			 L->name, what);
}

static enum tern_status get_prepend_scheme(struct loader *L, const json_t *o, enum tok_prepend *out,
					   const char *what)
{
	const json_t *ps = json_object_get(o, "prepend_scheme");
	if (json_is_string(ps)) {
		const char *v = json_string_value(ps);
		if (!strcmp(v, "always"))
			*out = TOK_PREPEND_ALWAYS;
		else if (!strcmp(v, "never"))
			*out = TOK_PREPEND_NEVER;
		else if (!strcmp(v, "first"))
			*out = TOK_PREPEND_FIRST;
		else
			return tern_fail(TERN_E_UNSUPPORTED, "%s: %s: prepend_scheme '%s' is not supported",
					 L->name, what, v);
		return TERN_OK;
	}
	bool aps = true;
	enum tern_status st = get_bool(L, o, "add_prefix_space", true, &aps, what);
	*out = aps ? TOK_PREPEND_ALWAYS : TOK_PREPEND_NEVER;
	return st;
}

static enum tern_status get_replacement(struct loader *L, const json_t *o, char repl[8], size_t *len,
					const char *what)
{
	const json_t *r = json_object_get(o, "replacement");
	const char *s = "\xe2\x96\x81"; /* ▁ */
	size_t n = 3;
	if (r) {
		if (!json_is_string(r) || json_string_length(r) == 0 || json_string_length(r) > 4)
			return tern_fail(TERN_E_FORMAT, "%s: %s: 'replacement' must be one character",
					 L->name, what);
		s = json_string_value(r);
		n = json_string_length(r);
	}
	memcpy(repl, s, n);
	*len = n;
	return TERN_OK;
}

static enum tern_status stage_room(struct loader *L, int n, const char *what)
{
	if (n >= MAX_STAGES)
		return tern_fail(TERN_E_UNSUPPORTED, "%s: more than %d %s steps", L->name, MAX_STAGES, what);
	return TERN_OK;
}

/* ---- normalizer -------------------------------------------------------------------------- */

static enum tern_status load_normalizer(struct loader *L, const json_t *o, int depth)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st;
	if (!o || json_is_null(o))
		return TERN_OK;
	const char *ty = type_of(o);
	if (!json_is_object(o) || !ty)
		return tern_fail(TERN_E_FORMAT, "%s: normalizer without a 'type'", L->name);
	if (!strcmp(ty, "Sequence")) {
		const json_t *list = json_object_get(o, "normalizers");
		if (!json_is_array(list))
			return tern_fail(TERN_E_FORMAT, "%s: Sequence normalizer without 'normalizers'",
					 L->name);
		if (depth >= MAX_NESTING)
			return tern_fail(TERN_E_UNSUPPORTED, "%s: normalizer Sequence nested too deeply",
					 L->name);
		for (size_t i = 0; i < json_array_size(list); i++)
			if ((st = load_normalizer(L, json_array_get(list, i), depth + 1)))
				return st;
		return TERN_OK;
	}
	if ((st = stage_room(L, t->n_norm, "normalizer")))
		return st;
	struct tok_norm *n = &t->norm[t->n_norm];
	memset(n, 0, sizeof *n);
	const char *s = NULL;
	size_t len = 0;
	if (!strcmp(ty, "NFC")) {
		n->kind = TOK_N_NFC;
	} else if (!strcmp(ty, "NFD")) {
		n->kind = TOK_N_NFD;
	} else if (!strcmp(ty, "NFKC")) {
		n->kind = TOK_N_NFKC;
	} else if (!strcmp(ty, "NFKD")) {
		n->kind = TOK_N_NFKD;
	} else if (!strcmp(ty, "Lowercase")) {
		n->kind = TOK_N_LOWER;
	} else if (!strcmp(ty, "Prepend")) {
		n->kind = TOK_N_PREPEND;
		if ((st = get_str(L, o, "prepend", &s, &len, "Prepend normalizer")) ||
		    (st = dup_str(s, len, &n->str)))
			return st;
		n->str_len = len;
	} else if (!strcmp(ty, "Replace")) {
		n->kind = TOK_N_REPLACE;
		if ((st = get_str(L, o, "content", &s, &len, "Replace normalizer")) ||
		    (st = dup_str(s, len, &n->str)))
			return st;
		n->str_len = len;
		t->n_norm++; /* counted now so that free() sees the string */
		return get_pattern(L, o, &n->pat, "Replace normalizer");
	} else {
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: normalizer type '%s' is not supported (supported: Sequence, NFC, NFD, NFKC, "
			"NFKD, Prepend, Replace, Lowercase)",
			L->name, ty);
	}
	t->n_norm++;
	return TERN_OK;
}

/* ---- pre-tokenizer ----------------------------------------------------------------------- */

static enum tern_status load_pretok(struct loader *L, const json_t *o, int depth)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st;
	if (!o || json_is_null(o))
		return TERN_OK;
	const char *ty = type_of(o);
	if (!json_is_object(o) || !ty)
		return tern_fail(TERN_E_FORMAT, "%s: pre_tokenizer without a 'type'", L->name);
	if (!strcmp(ty, "Sequence")) {
		const json_t *list = json_object_get(o, "pretokenizers");
		if (!json_is_array(list))
			return tern_fail(TERN_E_FORMAT, "%s: Sequence pre_tokenizer without 'pretokenizers'",
					 L->name);
		if (depth >= MAX_NESTING)
			return tern_fail(TERN_E_UNSUPPORTED, "%s: pre_tokenizer Sequence nested too deeply",
					 L->name);
		for (size_t i = 0; i < json_array_size(list); i++)
			if ((st = load_pretok(L, json_array_get(list, i), depth + 1)))
				return st;
		return TERN_OK;
	}
	if ((st = stage_room(L, t->n_pre, "pre_tokenizer")))
		return st;
	struct tok_pre *p = &t->pre[t->n_pre];
	memset(p, 0, sizeof *p);
	if (!strcmp(ty, "Split")) {
		p->kind = TOK_P_SPLIT;
		t->n_pre++;
		const json_t *b = json_object_get(o, "behavior");
		const char *bs = json_is_string(b) ? json_string_value(b) : "";
		static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
						    "MergedWithNext", "Contiguous"};
		int k = 0;
		while (k < 5 && strcmp(bs, names[k]))
			k++;
		if (k == 5)
			return tern_fail(
				TERN_E_UNSUPPORTED,
				"%s: Split pre_tokenizer behavior '%s' is not supported (supported: Removed, "
				"Isolated, MergedWithPrevious, MergedWithNext, Contiguous)",
				L->name, bs);
		p->behavior = (enum tok_split_behavior)k;
		if ((st = get_bool(L, o, "invert", false, &p->invert, "Split pre_tokenizer")))
			return st;
		return get_pattern(L, o, &p->pat, "Split pre_tokenizer");
	}
	if (!strcmp(ty, "ByteLevel")) {
		p->kind = TOK_P_BYTELEVEL;
		t->n_pre++;
		if ((st = get_bool(L, o, "add_prefix_space", true, &p->add_prefix_space,
				   "ByteLevel pre_tokenizer")) ||
		    (st = get_bool(L, o, "use_regex", true, &p->use_regex, "ByteLevel pre_tokenizer")))
			return st;
		p->behavior = TOK_SPLIT_ISOLATED;
		if (p->use_regex)
			return tok_pattern_compile(&p->pat, gpt2_pattern, sizeof gpt2_pattern - 1, false,
						   "ByteLevel pre_tokenizer");
		return TERN_OK;
	}
	if (!strcmp(ty, "Metaspace")) {
		p->kind = TOK_P_METASPACE;
		t->n_pre++;
		if ((st = get_replacement(L, o, p->repl, &p->repl_len, "Metaspace pre_tokenizer")) ||
		    (st = get_prepend_scheme(L, o, &p->prepend, "Metaspace pre_tokenizer")))
			return st;
		return get_bool(L, o, "split", true, &p->split, "Metaspace pre_tokenizer");
	}
	return tern_fail(
		TERN_E_UNSUPPORTED,
		"%s: pre_tokenizer type '%s' is not supported (supported: Sequence, Split, ByteLevel, "
		"Metaspace)",
		L->name, ty);
}

/* ---- decoder ----------------------------------------------------------------------------- */

static enum tern_status load_decoder(struct loader *L, const json_t *o, int depth)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st;
	if (!o || json_is_null(o))
		return TERN_OK;
	t->has_decoder = true;
	const char *ty = type_of(o);
	if (!json_is_object(o) || !ty)
		return tern_fail(TERN_E_FORMAT, "%s: decoder without a 'type'", L->name);
	if (!strcmp(ty, "Sequence")) {
		const json_t *list = json_object_get(o, "decoders");
		if (!json_is_array(list))
			return tern_fail(TERN_E_FORMAT, "%s: Sequence decoder without 'decoders'", L->name);
		if (depth >= MAX_NESTING)
			return tern_fail(TERN_E_UNSUPPORTED, "%s: decoder Sequence nested too deeply",
					 L->name);
		for (size_t i = 0; i < json_array_size(list); i++)
			if ((st = load_decoder(L, json_array_get(list, i), depth + 1)))
				return st;
		return TERN_OK;
	}
	if ((st = stage_room(L, t->n_dec, "decoder")))
		return st;
	struct tok_dec *d = &t->dec[t->n_dec];
	memset(d, 0, sizeof *d);
	const char *s = NULL;
	size_t len = 0;
	if (!strcmp(ty, "ByteLevel")) {
		d->kind = TOK_D_BYTELEVEL;
	} else if (!strcmp(ty, "ByteFallback")) {
		d->kind = TOK_D_BYTEFALLBACK;
	} else if (!strcmp(ty, "Fuse")) {
		d->kind = TOK_D_FUSE;
	} else if (!strcmp(ty, "Replace")) {
		d->kind = TOK_D_REPLACE;
		if ((st = get_str(L, o, "content", &s, &len, "Replace decoder")) ||
		    (st = dup_str(s, len, &d->str)))
			return st;
		d->str_len = len;
		t->n_dec++;
		return get_pattern(L, o, &d->pat, "Replace decoder");
	} else if (!strcmp(ty, "Strip")) {
		d->kind = TOK_D_STRIP;
		const json_t *a = json_object_get(o, "start"), *b = json_object_get(o, "stop");
		if ((st = get_str(L, o, "content", &s, &len, "Strip decoder")))
			return st;
		if (!json_is_integer(a) || !json_is_integer(b) || json_integer_value(a) < 0 ||
		    json_integer_value(a) > 1000000 || json_integer_value(b) < 0 ||
		    json_integer_value(b) > 1000000)
			return tern_fail(TERN_E_FORMAT,
					 "%s: Strip decoder: 'start' and 'stop' must be counts", L->name);
		if ((st = dup_str(s, len, &d->str)))
			return st;
		d->str_len = len;
		d->start = (int)json_integer_value(a);
		d->stop = (int)json_integer_value(b);
	} else if (!strcmp(ty, "Metaspace")) {
		d->kind = TOK_D_METASPACE;
		if ((st = get_replacement(L, o, d->repl, &d->repl_len, "Metaspace decoder")) ||
		    (st = get_prepend_scheme(L, o, &d->prepend, "Metaspace decoder")))
			return st;
	} else {
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: decoder type '%s' is not supported (supported: Sequence, ByteLevel, Replace, "
			"ByteFallback, Fuse, Strip, Metaspace)",
			L->name, ty);
	}
	t->n_dec++;
	return TERN_OK;
}

/* ---- model ------------------------------------------------------------------------------- */

static enum tern_status set_token(struct loader *L, int32_t id, const char *s, size_t n)
{
	struct tern_tokenizer *t = L->t;
	if (id < 0 || id >= t->n_ids)
		return tern_fail(TERN_E_FORMAT, "%s: token id %d out of range", L->name, id);
	free(t->id_tok[id]);
	t->id_tok[id] = NULL;
	t->id_len[id] = (uint32_t)n; /* n < 4 GiB: the file is smaller */
	return dup_str(s, n, &t->id_tok[id]);
}

static enum tern_status get_id(struct loader *L, const json_t *v, int32_t *id, const char *what)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_ID)
		return tern_fail(TERN_E_FORMAT, "%s: %s: id must be an integer from 0 to %d", L->name, what,
				 MAX_ID - 1);
	*id = (int32_t)json_integer_value(v);
	return TERN_OK;
}

static enum tern_status load_model(struct loader *L, const json_t *m, const json_t *added)
{
	struct tern_tokenizer *t = L->t;
	struct tok_bpe *b = &t->bpe;
	enum tern_status st;
	if (!json_is_object(m))
		return tern_fail(TERN_E_FORMAT, "%s: missing 'model'", L->name);
	const char *ty = type_of(m);
	if (ty && strcmp(ty, "BPE"))
		return tern_fail(TERN_E_UNSUPPORTED, "%s: model type '%s' is not supported (supported: BPE)",
				 L->name, ty);
	const json_t *vocab = json_object_get(m, "vocab"), *merges = json_object_get(m, "merges");
	if (!json_is_object(vocab))
		return tern_fail(TERN_E_FORMAT, "%s: model: 'vocab' must be an object of token: id", L->name);
	if (merges && !json_is_array(merges) && !json_is_null(merges))
		return tern_fail(TERN_E_FORMAT, "%s: model: 'merges' must be an array", L->name);
	const json_t *dropout = json_object_get(m, "dropout");
	if (json_is_number(dropout) && json_number_value(dropout) > 0)
		return tern_fail(TERN_E_UNSUPPORTED, "%s: BPE dropout is not supported", L->name);

	/* Ids: the vocabulary and the added tokens together decide the size. */
	int32_t max_id = -1, id = -1;
	const char *key;
	size_t klen;
	json_t *v;
	json_object_keylen_foreach((json_t *)vocab, key, klen, v)
	{
		if ((st = get_id(L, v, &id, "model.vocab")))
			return st;
		if (id > max_id)
			max_id = id;
		if ((st = tok_strmap_put(&b->vocab, key, klen, id)))
			return st;
	}
	for (size_t i = 0; i < json_array_size(added); i++) {
		if ((st = get_id(L, json_object_get(json_array_get(added, i), "id"), &id, "added_tokens")))
			return st;
		if (id > max_id)
			max_id = id;
	}
	t->n_ids = max_id + 1;
	t->id_tok = calloc((size_t)t->n_ids + 1, sizeof *t->id_tok);
	t->id_len = calloc((size_t)t->n_ids + 1, sizeof *t->id_len);
	t->id_special = calloc((size_t)t->n_ids + 1, sizeof *t->id_special);
	if (!t->id_tok || !t->id_len || !t->id_special)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (%d ids)", t->n_ids);
	for (size_t i = 0; i < b->vocab.cap; i++)
		if (b->vocab.e[i].key &&
		    (st = set_token(L, b->vocab.e[i].val, b->vocab.e[i].key, b->vocab.e[i].len)))
			return st;

	/* Options */
	const char *s = NULL;
	size_t n = 0;
	b->unk = -1;
	const json_t *unk = json_object_get(m, "unk_token");
	if (json_is_string(unk)) {
		b->unk = tok_strmap_get(&b->vocab, json_string_value(unk), json_string_length(unk));
		if (b->unk < 0)
			return tern_fail(TERN_E_FORMAT, "%s: model: unk_token '%s' is not in the vocabulary",
					 L->name, json_string_value(unk));
	}
	if ((st = get_bool(L, m, "fuse_unk", false, &b->fuse_unk, "model")) ||
	    (st = get_bool(L, m, "byte_fallback", false, &b->byte_fallback, "model")) ||
	    (st = get_bool(L, m, "ignore_merges", false, &b->ignore_merges, "model")))
		return st;
	if (json_is_string(json_object_get(m, "continuing_subword_prefix"))) {
		if ((st = get_str(L, m, "continuing_subword_prefix", &s, &n, "model")) ||
		    (st = dup_str(s, n, &b->prefix)))
			return st;
		b->prefix_len = n;
		if (!n) {
			free(b->prefix);
			b->prefix = NULL;
		}
	}
	if (json_is_string(json_object_get(m, "end_of_word_suffix"))) {
		if ((st = get_str(L, m, "end_of_word_suffix", &s, &n, "model")) ||
		    (st = dup_str(s, n, &b->suffix)))
			return st;
		b->suffix_len = n;
		if (!n) {
			free(b->suffix);
			b->suffix = NULL;
		}
	}
	for (int c = 0; c < 256; c++) {
		char name[8];
		snprintf(name, sizeof name, "<0x%02X>", c);
		b->byte_id[c] = tok_strmap_get(&b->vocab, name, 6);
	}

	/* Merges: "a b" or ["a", "b"]; rank = position (a repeated pair keeps its last rank, as in HF). */
	struct tok_buf joined = {0};
	st = TERN_OK;
	for (size_t i = 0; i < json_array_size(merges) && !st; i++) {
		const json_t *e = json_array_get(merges, i);
		const char *a, *c;
		size_t al, cl;
		if (json_is_string(e)) {
			const char *sp = memchr(json_string_value(e), ' ', json_string_length(e));
			a = json_string_value(e);
			if (!sp || memchr(sp + 1, ' ', json_string_length(e) - (size_t)(sp + 1 - a))) {
				st = tern_fail(TERN_E_FORMAT,
					       "%s: merges[%zu]: expected \"a b\" with one space", L->name,
					       i);
				break;
			}
			al = (size_t)(sp - a);
			c = sp + 1;
			cl = json_string_length(e) - al - 1;
		} else if (json_is_array(e) && json_array_size(e) == 2 &&
			   json_is_string(json_array_get(e, 0)) && json_is_string(json_array_get(e, 1))) {
			a = json_string_value(json_array_get(e, 0));
			al = json_string_length(json_array_get(e, 0));
			c = json_string_value(json_array_get(e, 1));
			cl = json_string_length(json_array_get(e, 1));
		} else {
			st = tern_fail(TERN_E_FORMAT, "%s: merges[%zu]: expected \"a b\" or [\"a\", \"b\"]",
				       L->name, i);
			break;
		}
		int32_t ia = tok_strmap_get(&b->vocab, a, al), ic = tok_strmap_get(&b->vocab, c, cl);
		if (ia < 0 || ic < 0) {
			st = tern_fail(TERN_E_FORMAT, "%s: merges[%zu]: '%.*s' is not in the vocabulary",
				       L->name, i, (int)(ia < 0 ? al : cl), ia < 0 ? a : c);
			break;
		}
		/* The merged token drops the right side's continuing-subword prefix. */
		size_t skip = b->prefix && cl >= b->prefix_len && !memcmp(c, b->prefix, b->prefix_len)
				      ? b->prefix_len
				      : 0;
		joined.len = 0;
		if ((st = tok_buf_add(&joined, a, al)) || (st = tok_buf_add(&joined, c + skip, cl - skip)))
			break;
		int32_t im = tok_strmap_get(&b->vocab, joined.p, joined.len);
		if (im < 0) {
			st = tern_fail(TERN_E_FORMAT,
				       "%s: merges[%zu]: the merged token '%s' is not in the vocabulary",
				       L->name, i, joined.p);
			break;
		}
		if (i > UINT32_MAX - 1) {
			st = tern_fail(TERN_E_FORMAT, "%s: too many merges", L->name);
			break;
		}
		st = tok_pairmap_put(&b->merges, ia, ic, (uint32_t)i, im);
	}
	free(joined.p);
	return st;
}

/* ---- added tokens ------------------------------------------------------------------------ */

static enum tern_status load_added(struct loader *L, const json_t *list)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st;
	if (list && !json_is_array(list) && !json_is_null(list))
		return tern_fail(TERN_E_FORMAT, "%s: 'added_tokens' must be an array", L->name);
	size_t n = json_array_size(list);
	if (!n)
		return TERN_OK;
	t->added = calloc(n, sizeof *t->added);
	if (!t->added)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
	for (size_t i = 0; i < n; i++) {
		const json_t *o = json_array_get(list, i);
		struct tok_added *a = &t->added[t->n_added];
		const char *s = NULL;
		size_t len = 0;
		char what[48];
		snprintf(what, sizeof what, "added_tokens[%zu]", i);
		if (!json_is_object(o))
			return tern_fail(TERN_E_FORMAT, "%s: %s must be an object", L->name, what);
		if ((st = get_id(L, json_object_get(o, "id"), &a->id, what)) ||
		    (st = get_str(L, o, "content", &s, &len, what)) ||
		    (st = get_bool(L, o, "special", false, &a->special, what)) ||
		    (st = get_bool(L, o, "single_word", false, &a->single_word, what)) ||
		    (st = get_bool(L, o, "lstrip", false, &a->lstrip, what)) ||
		    (st = get_bool(L, o, "rstrip", false, &a->rstrip, what)) ||
		    (st = get_bool(L, o, "normalized", !a->special, &a->normalized, what)))
			return st;
		if ((st = set_token(L, a->id, s, len)) || (st = tok_strmap_put(&t->added_map, s, len, a->id)))
			return st;
		t->id_special[a->id] = a->special;
		/* A normalized token is matched in normalized text, so it is stored normalized. */
		if (a->normalized && t->n_norm) {
			struct tok_buf nb = {0};
			if (!tok_utf8_valid(s, len))
				return tern_fail(TERN_E_FORMAT, "%s: %s: content is not valid UTF-8", L->name,
						 what);
			st = tok_normalize(t, s, len, &nb);
			if (!st)
				st = dup_str(nb.p ? nb.p : "", nb.len, &a->content);
			a->len = nb.len;
			free(nb.p);
			if (st)
				return st;
		} else {
			if ((st = dup_str(s, len, &a->content)))
				return st;
			a->len = len;
		}
		t->n_added++;
		struct tok_trie *tr = a->normalized && t->n_norm ? &t->trie_norm : &t->trie_raw;
		if ((st = tok_trie_add(tr, a->content, a->len, (int32_t)(t->n_added - 1))))
			return st;
	}
	return TERN_OK;
}

/* ---- post-processor ---------------------------------------------------------------------- */

static enum tern_status push_id(int32_t **arr, size_t *n, int32_t id)
{
	int32_t *p = realloc(*arr, (*n + 1) * sizeof *p);
	if (!p)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
	p[(*n)++] = id;
	*arr = p;
	return TERN_OK;
}

static enum tern_status pair_token(struct loader *L, const json_t *o, const char *key, int32_t *id)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_array(v) || json_array_size(v) != 2)
		return tern_fail(TERN_E_FORMAT, "%s: post_processor: '%s' must be [token, id]", L->name, key);
	return get_id(L, json_array_get(v, 1), id, "post_processor");
}

static enum tern_status load_post(struct loader *L, const json_t *o, int depth)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st;
	if (!o || json_is_null(o))
		return TERN_OK;
	const char *ty = type_of(o);
	if (!json_is_object(o) || !ty)
		return tern_fail(TERN_E_FORMAT, "%s: post_processor without a 'type'", L->name);
	if (!strcmp(ty, "ByteLevel"))
		return TERN_OK; /* only moves offsets */
	if (!strcmp(ty, "Sequence")) {
		const json_t *list = json_object_get(o, "processors");
		if (!json_is_array(list))
			return tern_fail(TERN_E_FORMAT, "%s: Sequence post_processor without 'processors'",
					 L->name);
		if (depth >= MAX_NESTING)
			return tern_fail(TERN_E_UNSUPPORTED, "%s: post_processor Sequence nested too deeply",
					 L->name);
		for (size_t i = 0; i < json_array_size(list); i++)
			if ((st = load_post(L, json_array_get(list, i), depth + 1)))
				return st;
		return TERN_OK;
	}
	if (!strcmp(ty, "BertProcessing") || !strcmp(ty, "RobertaProcessing")) {
		int32_t cls = -1, sep = -1;
		if ((st = pair_token(L, o, "cls", &cls)) || (st = pair_token(L, o, "sep", &sep)) ||
		    (st = push_id(&t->prefix, &t->n_prefix, cls)) ||
		    (st = push_id(&t->suffix, &t->n_suffix, sep)))
			return st;
		return TERN_OK;
	}
	if (strcmp(ty, "TemplateProcessing"))
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: post_processor type '%s' is not supported (supported: TemplateProcessing, "
			"ByteLevel, BertProcessing, RobertaProcessing, Sequence)",
			L->name, ty);
	const json_t *single = json_object_get(o, "single"), *specials = json_object_get(o, "special_tokens");
	if (!json_is_array(single))
		return tern_fail(TERN_E_FORMAT, "%s: TemplateProcessing without a 'single' template",
				 L->name);
	bool seen_seq = false;
	for (size_t i = 0; i < json_array_size(single); i++) {
		const json_t *item = json_array_get(single, i);
		const json_t *sp = json_object_get(item, "SpecialToken");
		if (json_object_get(item, "Sequence")) {
			if (seen_seq)
				return tern_fail(TERN_E_UNSUPPORTED,
						 "%s: TemplateProcessing: 'single' names more than "
						 "one sequence",
						 L->name);
			seen_seq = true;
			continue;
		}
		const json_t *name = json_object_get(sp, "id");
		if (!json_is_string(name))
			return tern_fail(TERN_E_FORMAT,
					 "%s: TemplateProcessing: single[%zu] is neither "
					 "SpecialToken nor Sequence",
					 L->name, i);
		const json_t *def = json_object_get(specials, json_string_value(name));
		const json_t *ids = json_object_get(def, "ids");
		if (!json_is_array(ids))
			return tern_fail(TERN_E_FORMAT,
					 "%s: TemplateProcessing: special token '%s' has no 'ids'", L->name,
					 json_string_value(name));
		for (size_t k = 0; k < json_array_size(ids); k++) {
			int32_t id = -1;
			if ((st = get_id(L, json_array_get(ids, k), &id, "TemplateProcessing")) ||
			    (st = seen_seq ? push_id(&t->suffix, &t->n_suffix, id)
					   : push_id(&t->prefix, &t->n_prefix, id)))
				return st;
		}
	}
	return TERN_OK;
}

/* ---- tokenizer_config.json --------------------------------------------------------------- */

static int32_t config_token(const struct tern_tokenizer *t, const json_t *v)
{
	if (json_is_object(v))
		v = json_object_get(v, "content");
	if (!json_is_string(v))
		return -1;
	return tern_tokenizer_token_id(t, json_string_value(v));
}

static enum tern_status remove_at(int32_t *arr, size_t *n, size_t i)
{
	memmove(arr + i, arr + i + 1, (*n - i - 1) * sizeof *arr);
	(*n)--;
	return TERN_OK;
}

/* bos_token / eos_token name the ids; add_bos_token / add_eos_token, where given, decide whether
 * they surround the sequence (as transformers' Llama tokenizers rebuild the template). */
static enum tern_status load_config(struct loader *L, const json_t *cfg)
{
	struct tern_tokenizer *t = L->t;
	enum tern_status st = TERN_OK;
	t->bos = t->n_prefix ? t->prefix[0] : -1;
	t->eos = t->n_suffix ? t->suffix[t->n_suffix - 1] : -1;
	if (!cfg)
		return TERN_OK;
	if (!json_is_object(cfg))
		return tern_fail(TERN_E_FORMAT, "%s: tokenizer_config.json must be an object", L->name);
	const json_t *bt = json_object_get(cfg, "bos_token"), *et = json_object_get(cfg, "eos_token");
	if (bt)
		t->bos = config_token(t, bt);
	if (et)
		t->eos = config_token(t, et);
	const json_t *ab = json_object_get(cfg, "add_bos_token"), *ae = json_object_get(cfg, "add_eos_token");
	if (json_is_boolean(ab) && t->bos >= 0) {
		bool has = t->n_prefix && t->prefix[0] == t->bos;
		if (json_is_true(ab) && !has) {
			if ((st = push_id(&t->prefix, &t->n_prefix, t->bos)))
				return st;
			memmove(t->prefix + 1, t->prefix, (t->n_prefix - 1) * sizeof *t->prefix);
			t->prefix[0] = t->bos;
		} else if (json_is_false(ab) && has) {
			remove_at(t->prefix, &t->n_prefix, 0);
		}
	}
	if (json_is_boolean(ae) && t->eos >= 0) {
		bool has = t->n_suffix && t->suffix[t->n_suffix - 1] == t->eos;
		if (json_is_true(ae) && !has)
			st = push_id(&t->suffix, &t->n_suffix, t->eos);
		else if (json_is_false(ae) && has)
			remove_at(t->suffix, &t->n_suffix, t->n_suffix - 1);
	}
	return st;
}

/* ---- load / free ------------------------------------------------------------------------- */

void tern_tokenizer_free(struct tern_tokenizer *t)
{
	if (!t)
		return;
	for (int i = 0; i < t->n_norm; i++) {
		free(t->norm[i].str);
		tok_pattern_free(&t->norm[i].pat);
	}
	for (int i = 0; i < t->n_pre; i++)
		tok_pattern_free(&t->pre[i].pat);
	for (int i = 0; i < t->n_dec; i++) {
		free(t->dec[i].str);
		tok_pattern_free(&t->dec[i].pat);
	}
	free(t->norm);
	free(t->pre);
	free(t->dec);
	tok_bpe_free(&t->bpe);
	for (size_t i = 0; i < t->n_added; i++)
		free(t->added[i].content);
	free(t->added);
	tok_trie_free(&t->trie_raw);
	tok_trie_free(&t->trie_norm);
	tok_strmap_free(&t->added_map);
	if (t->id_tok)
		for (int32_t i = 0; i < t->n_ids; i++)
			free(t->id_tok[i]);
	free(t->id_tok);
	free(t->id_len);
	free(t->id_special);
	free(t->prefix);
	free(t->suffix);
	tok_cache_free(&t->cache);
	pthread_mutex_destroy(&t->lock);
	free(t);
}

enum tern_status tern_tokenizer_load_mem(struct tern_tokenizer **out, const char *name, const char *json,
					 size_t len, const char *config_text, size_t config_len)
{
	enum tern_status st;
	json_t *root = NULL, *cfg = NULL;
	json_error_t err;
	struct tern_tokenizer *t = NULL;
	if (!out || !json)
		return tern_fail(TERN_E_INVALID, "tern_tokenizer_load_mem: NULL argument");
	*out = NULL;
	if (!name)
		name = "tokenizer.json";
	tok_bytelevel_init();
	root = json_loadb(json, len, JSON_ALLOW_NUL, &err);
	if (!root) {
		st = tern_fail(TERN_E_FORMAT, "%s:%d: %s", name, err.line, err.text);
		goto out;
	}
	if (!json_is_object(root)) {
		st = tern_fail(TERN_E_FORMAT, "%s: not a JSON object", name);
		goto out;
	}
	if (config_text) {
		/* model_max_length is often 1e30 written as an integer: read numbers as reals. */
		cfg = json_loadb(config_text, config_len, JSON_ALLOW_NUL | JSON_DECODE_INT_AS_REAL, &err);
		if (!cfg) {
			st = tern_fail(TERN_E_FORMAT, "tokenizer_config.json:%d: %s", err.line, err.text);
			goto out;
		}
	}
	t = calloc(1, sizeof *t);
	if (!t) {
		st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	pthread_mutex_init(&t->lock, NULL);
	snprintf(t->name, sizeof t->name, "%s", name);
	t->norm = calloc(MAX_STAGES, sizeof *t->norm);
	t->pre = calloc(MAX_STAGES, sizeof *t->pre);
	t->dec = calloc(MAX_STAGES, sizeof *t->dec);
	if (!t->norm || !t->pre || !t->dec) {
		st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	struct loader L = {t, t->name};
	const json_t *added = json_object_get(root, "added_tokens");
	if ((st = load_normalizer(&L, json_object_get(root, "normalizer"), 0)) ||
	    (st = load_pretok(&L, json_object_get(root, "pre_tokenizer"), 0)) ||
	    (st = load_model(&L, json_object_get(root, "model"), json_is_array(added) ? added : NULL)) ||
	    (st = load_added(&L, added)) ||
	    (st = load_post(&L, json_object_get(root, "post_processor"), 0)) ||
	    (st = load_decoder(&L, json_object_get(root, "decoder"), 0)) || (st = load_config(&L, cfg)))
		goto out;
	*out = t;
	t = NULL;
out:
	tern_tokenizer_free(t);
	json_decref(root);
	json_decref(cfg);
	return st;
}

static enum tern_status read_file(const char *path, char **buf, size_t *len)
{
	enum tern_status st = TERN_OK;
	FILE *f = fopen(path, "rb");
	*buf = NULL;
	if (!f)
		return tern_fail(TERN_E_IO, "%s: %s", path, strerror(errno));
	struct tok_buf b = {0};
	char chunk[65536];
	size_t n = 0;
	while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
		if (b.len + n > MAX_FILE) {
			st = tern_fail(TERN_E_FORMAT, "%s: larger than %u bytes", path, MAX_FILE);
			goto out;
		}
		if ((st = tok_buf_add(&b, chunk, n)))
			goto out;
	}
	if (ferror(f)) {
		st = tern_fail(TERN_E_IO, "%s: read error", path);
		goto out;
	}
	if (!b.p && (st = tok_buf_add(&b, "", 0)))
		goto out;
	*buf = b.p;
	*len = b.len;
	b.p = NULL;
out:
	free(b.p);
	fclose(f);
	return st;
}

enum tern_status tern_tokenizer_load(struct tern_tokenizer **out, const char *json_path,
				     const char *config_path)
{
	char *json = NULL, *cfg = NULL;
	size_t jl = 0, cl = 0;
	enum tern_status st;
	if (!out || !json_path)
		return tern_fail(TERN_E_INVALID, "tern_tokenizer_load: NULL argument");
	*out = NULL;
	if ((st = read_file(json_path, &json, &jl)))
		goto out;
	if (config_path && (st = read_file(config_path, &cfg, &cl)))
		goto out;
	st = tern_tokenizer_load_mem(out, json_path, json, jl, cfg, cl);
	if (st && config_path && strstr(tern_error(), "tokenizer_config.json:") == tern_error()) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", tern_error() + strlen("tokenizer_config.json"));
		tern_fail(st, "%s%s", config_path, msg);
	}
out:
	free(json);
	free(cfg);
	return st;
}

enum tern_status tern_tokenizer_load_dir(struct tern_tokenizer **out, const char *dir)
{
	if (!out || !dir)
		return tern_fail(TERN_E_INVALID, "tern_tokenizer_load_dir: NULL argument");
	size_t n = strlen(dir) + 32;
	char *jp = malloc(n), *cp = malloc(n);
	enum tern_status st;
	if (!jp || !cp) {
		st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	snprintf(jp, n, "%s/tokenizer.json", dir);
	snprintf(cp, n, "%s/tokenizer_config.json", dir);
	FILE *f = fopen(cp, "rb");
	if (f)
		fclose(f);
	st = tern_tokenizer_load(out, jp, f ? cp : NULL);
out:
	free(jp);
	free(cp);
	return st;
}

/* ---- encode / decode --------------------------------------------------------------------- */

enum tern_status tern_tokenizer_encode(const struct tern_tokenizer *tok, const char *text, size_t len,
				       bool add_special, int32_t **ids, size_t *n)
{
	/* The word cache is the one mutable part; it has its own lock. */
	struct tern_tokenizer *t = (struct tern_tokenizer *)tok;
	enum tern_status st = TERN_OK;
	struct tok_ids out = {0};
	struct tok_segs raw = {0}, sub = {0};
	struct tok_buf norm = {0};
	struct tok_pieces words = {0}, tmp = {0};
	struct tok_bpe_scratch *scratch = NULL;
	pcre2_match_data *md = NULL;
	if (!t || (!text && len) || !ids || !n)
		return tern_fail(TERN_E_INVALID, "tern_tokenizer_encode: NULL argument");
	*ids = NULL;
	*n = 0;
	if (!text)
		text = "";
	if (!tok_utf8_valid(text, len))
		return tern_fail(TERN_E_INVALID, "tokenizer: the text is not valid UTF-8");
	if (!(md = pcre2_match_data_create(1, NULL))) {
		st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	for (size_t i = 0; add_special && i < t->n_prefix && !st; i++)
		st = tok_ids_push(&out, t->prefix[i]);
	if (st || (st = tok_split_added(t, &t->trie_raw, text, len, &raw)))
		goto out;
	for (size_t i = 0; i < raw.n; i++) {
		if (raw.p[i].id >= 0) {
			if ((st = tok_ids_push(&out, raw.p[i].id)))
				goto out;
			continue;
		}
		const char *s = text + raw.p[i].start;
		size_t sl = raw.p[i].end - raw.p[i].start;
		if (t->n_norm) {
			if ((st = tok_normalize(t, s, sl, &norm)))
				goto out;
			s = norm.p ? norm.p : "";
			sl = norm.len;
		}
		if ((st = tok_split_added(t, &t->trie_norm, s, sl, &sub)))
			goto out;
		for (size_t k = 0; k < sub.n; k++) {
			if (sub.p[k].id >= 0) {
				if ((st = tok_ids_push(&out, sub.p[k].id)))
					goto out;
				continue;
			}
			if ((st = tok_pretokenize(t, md, s + sub.p[k].start, sub.p[k].end - sub.p[k].start,
						  raw.p[i].start == 0 && sub.p[k].start == 0, &words, &tmp)))
				goto out;
			for (size_t w = 0; w < words.n; w++)
				if ((st = tok_bpe_word(t, words.buf.p + words.off[w], words.len[w], &out,
						       &scratch)))
					goto out;
		}
	}
	for (size_t i = 0; add_special && i < t->n_suffix && !st; i++)
		st = tok_ids_push(&out, t->suffix[i]);
	if (st)
		goto out;
	*ids = out.p;
	*n = out.n;
	out.p = NULL;
out:
	free(out.p);
	free(raw.p);
	free(sub.p);
	free(norm.p);
	tok_pieces_free(&words);
	tok_pieces_free(&tmp);
	tok_bpe_scratch_free(scratch);
	pcre2_match_data_free(md);
	return st;
}

enum tern_status tern_tokenizer_decode(const struct tern_tokenizer *t, const int32_t *ids, size_t n,
				       bool skip_special, char **text, size_t *len)
{
	enum tern_status st = TERN_OK;
	struct tok_pieces toks = {0};
	struct tok_buf out = {0};
	pcre2_match_data *md = NULL;
	if (!t || (!ids && n) || !text)
		return tern_fail(TERN_E_INVALID, "tern_tokenizer_decode: NULL argument");
	*text = NULL;
	for (size_t i = 0; i < n; i++) {
		int32_t id = ids[i];
		if (id < 0 || id >= t->n_ids || !t->id_tok[id]) {
			st = tern_fail(TERN_E_INVALID,
				       "tokenizer: id %d (position %zu) is not in the vocabulary of %d", id,
				       i, t->n_ids);
			goto out;
		}
		if (skip_special && t->id_special[id])
			continue;
		if ((st = tok_pieces_add(&toks, t->id_tok[id], t->id_len[id])))
			goto out;
	}
	if (!(md = pcre2_match_data_create(1, NULL))) {
		st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		goto out;
	}
	if ((st = tok_decode_chain(t, md, &toks, &out)))
		goto out;
	*text = out.p;
	if (len)
		*len = out.len;
	out.p = NULL;
out:
	tok_pieces_free(&toks);
	free(out.p);
	pcre2_match_data_free(md);
	return st;
}

int32_t tern_tokenizer_token_id(const struct tern_tokenizer *t, const char *token)
{
	if (!t || !token)
		return -1;
	size_t n = strlen(token);
	int32_t id = tok_strmap_get(&t->added_map, token, n);
	return id >= 0 ? id : tok_strmap_get(&t->bpe.vocab, token, n);
}

const char *tern_tokenizer_token(const struct tern_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids ? t->id_tok[id] : NULL;
}

int32_t tern_tokenizer_vocab_size(const struct tern_tokenizer *t) { return t ? t->n_ids : 0; }
int32_t tern_tokenizer_bos(const struct tern_tokenizer *t) { return t ? t->bos : -1; }
int32_t tern_tokenizer_eos(const struct tern_tokenizer *t) { return t ? t->eos : -1; }

bool tern_tokenizer_is_special(const struct tern_tokenizer *t, int32_t id)
{
	return t && id >= 0 && id < t->n_ids && t->id_special[id];
}
