/* Before the model: added-token matching, normalizers and pre-tokenizers. */
#include "tokenizer/tok.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* ---- added tokens ------------------------------------------------------------------------ */

static enum tern_status trie_node(struct tok_trie *tr, unsigned char byte, int32_t *idx)
{
	if (tr->count == tr->cap) {
		size_t cap = tr->cap ? tr->cap * 2 : 64;
		struct tok_trie_node *n = realloc(tr->n, cap * sizeof *n);
		if (!n)
			return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (added tokens)");
		tr->n = n;
		tr->cap = cap;
	}
	tr->n[tr->count] = (struct tok_trie_node){-1, -1, -1, byte};
	*idx = (int32_t)tr->count++;
	return TERN_OK;
}

enum tern_status tok_trie_add(struct tok_trie *tr, const char *s, size_t len, int32_t added_index)
{
	enum tern_status st;
	int32_t cur;
	if (!len)
		return TERN_OK;
	if (!tr->count && (st = trie_node(tr, 0, &cur)))
		return st;
	cur = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char b = (unsigned char)s[i];
		int32_t c = tr->n[cur].child;
		while (c >= 0 && tr->n[c].byte != b)
			c = tr->n[c].sibling;
		if (c < 0) {
			if ((st = trie_node(tr, b, &c)))
				return st;
			tr->n[c].sibling = tr->n[cur].child;
			tr->n[cur].child = c;
		}
		cur = c;
	}
	/* A later token with the same content replaces the earlier one, as in HF. */
	tr->n[cur].added = added_index;
	tr->first[(unsigned char)s[0]] = true;
	return TERN_OK;
}

void tok_trie_free(struct tok_trie *tr)
{
	free(tr->n);
	memset(tr, 0, sizeof *tr);
}

/* Longest token starting at s[0..n); returns its added index and sets *mlen, or -1. */
static int32_t trie_longest(const struct tok_trie *tr, const char *s, size_t n, size_t *mlen)
{
	int32_t cur = 0, best = -1;
	for (size_t i = 0; i < n; i++) {
		int32_t c = tr->n[cur].child;
		while (c >= 0 && tr->n[c].byte != (unsigned char)s[i])
			c = tr->n[c].sibling;
		if (c < 0)
			break;
		cur = c;
		if (tr->n[cur].added >= 0) {
			best = tr->n[cur].added;
			*mlen = i + 1;
		}
	}
	return best;
}

static bool is_word_char(int32_t cp)
{
	if (cp == '_')
		return true;
	utf8proc_category_t c = utf8proc_category(cp);
	return (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
	       (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO);
}

/* Code point that ends s[0..n) (valid UTF-8, n > 0). */
static int32_t last_cp(const char *s, size_t n, size_t *start)
{
	size_t i = n - 1;
	while (i > 0 && ((unsigned char)s[i] & 0xc0) == 0x80)
		i--;
	int32_t cp;
	tok_utf8_decode((const unsigned char *)s + i, &cp);
	if (start)
		*start = i;
	return cp;
}

static enum tern_status segs_push(struct tok_segs *o, size_t a, size_t b, int32_t id)
{
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 16;
		struct tok_seg *p = realloc(o->p, cap * sizeof *p);
		if (!p)
			return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
		o->p = p;
		o->cap = cap;
	}
	o->p[o->n++] = (struct tok_seg){a, b, id};
	return TERN_OK;
}

enum tern_status tok_split_added(const struct tern_tokenizer *t, const struct tok_trie *tr, const char *s,
				 size_t len, struct tok_segs *out)
{
	enum tern_status st;
	size_t start_off = 0, pos = 0;
	out->n = 0;
	if (!tr->count)
		return segs_push(out, 0, len, -1);
	/* Leftmost-longest, non-overlapping: a match refused by single_word still consumes its span. */
	while (pos < len) {
		if (!tr->first[(unsigned char)s[pos]]) {
			pos++;
			continue;
		}
		size_t mlen = 0;
		int32_t ai = trie_longest(tr, s + pos, len - pos, &mlen);
		if (ai < 0) {
			pos++;
			continue;
		}
		const struct tok_added *a = &t->added[ai];
		size_t ms = pos, me = pos + mlen;
		pos = me;
		if (a->single_word) {
			bool left = ms == 0 || !is_word_char(last_cp(s, ms, NULL));
			int32_t cp = 0;
			bool right = me == len;
			if (!right) {
				tok_utf8_decode((const unsigned char *)s + me, &cp);
				right = !is_word_char(cp);
			}
			if (!left || !right)
				continue;
		}
		if (a->lstrip) {
			size_t ns = ms, cs;
			while (ns > start_off && tok_is_whitespace(last_cp(s, ns, &cs)))
				ns = cs;
			ms = ns;
		}
		if (a->rstrip) {
			while (me < len) {
				int32_t cp;
				size_t k = tok_utf8_decode((const unsigned char *)s + me, &cp);
				if (!tok_is_whitespace(cp))
					break;
				me += k;
			}
			pos = me;
		}
		if (ms < start_off)
			ms = start_off;
		if (start_off < ms && (st = segs_push(out, start_off, ms, -1)))
			return st;
		if ((st = segs_push(out, ms, me, a->id)))
			return st;
		start_off = me;
	}
	if (start_off < len || out->n == 0)
		return segs_push(out, start_off, len, -1);
	return TERN_OK;
}

/* ---- normalizers ------------------------------------------------------------------------- */

static enum tern_status unicode_norm(const char *s, size_t len, int options, struct tok_buf *out)
{
	/* ASCII is stable under every normalization form: skip utf8proc (and its allocation). */
	size_t i = 0;
	while (i < len && !((unsigned char)s[i] & 0x80))
		i++;
	if (i == len)
		return tok_buf_add(out, s, len);
	utf8proc_uint8_t *dst = NULL;
	utf8proc_ssize_t n = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
					  (utf8proc_option_t)(UTF8PROC_STABLE | options));
	if (n < 0)
		return tern_fail(TERN_E_INVALID, "tokenizer: normalization failed: %s", utf8proc_errmsg(n));
	enum tern_status st = tok_buf_add(out, dst, (size_t)n);
	free(dst);
	return st;
}

static enum tern_status lowercase(const char *s, size_t len, struct tok_buf *out)
{
	size_t i = 0;
	enum tern_status st;
	while (i < len) {
		int32_t cp;
		i += tok_utf8_decode((const unsigned char *)s + i, &cp);
		char e[4];
		if ((st = tok_buf_add(out, e, tok_utf8_encode(utf8proc_tolower(cp), e))))
			return st;
	}
	return TERN_OK;
}

enum tern_status tok_normalize(const struct tern_tokenizer *t, const char *s, size_t len, struct tok_buf *out)
{
	struct tok_buf a = {0}, b = {0};
	pcre2_match_data *md = NULL;
	enum tern_status st = TERN_OK;
	out->len = 0;
	if ((st = tok_buf_add(&a, s, len)))
		goto out;
	for (int i = 0; i < t->n_norm; i++) {
		const struct tok_norm *n = &t->norm[i];
		b.len = 0;
		switch (n->kind) {
		case TOK_N_NFC: st = unicode_norm(a.p, a.len, UTF8PROC_COMPOSE, &b); break;
		case TOK_N_NFD: st = unicode_norm(a.p, a.len, UTF8PROC_DECOMPOSE, &b); break;
		case TOK_N_NFKC: st = unicode_norm(a.p, a.len, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, &b); break;
		case TOK_N_NFKD:
			st = unicode_norm(a.p, a.len, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, &b);
			break;
		case TOK_N_LOWER: st = lowercase(a.p, a.len, &b); break;
		case TOK_N_PREPEND:
			/* Only a non-empty string gets the prefix. */
			if (a.len && (st = tok_buf_add(&b, n->str, n->str_len)))
				break;
			st = tok_buf_add(&b, a.p, a.len);
			break;
		case TOK_N_REPLACE:
			if (!md && !(md = pcre2_match_data_create(1, NULL))) {
				st = tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
				break;
			}
			st = tok_pattern_replace(&n->pat, md, a.p, a.len, n->str, n->str_len, &b);
			break;
		}
		if (st)
			goto out;
		struct tok_buf tmp = a;
		a = b;
		b = tmp;
	}
	st = tok_buf_add(out, a.p, a.len);
out:
	free(a.p);
	free(b.p);
	pcre2_match_data_free(md);
	return st;
}

/* ---- pre-tokenizers ---------------------------------------------------------------------- */

/* Splits one piece by a pattern according to behavior; appends the results to out. */
static enum tern_status split_piece(const struct tok_pre *p, pcre2_match_data *md, const char *s, size_t len,
				    struct tok_pieces *out)
{
	enum tern_status st = TERN_OK;
	size_t at = 0, ms, me;
	/* Spans of the piece, each flagged as a match or not (inverted when invert is set). */
	bool pending_next = false; /* MergedWithNext: a match waiting for the next span */
	size_t pend_a = 0, pend_b = 0;
	bool last_was_match = false;
	size_t first_new = out->n;
	for (;;) {
		int rc = at <= len ? tok_pattern_find(&p->pat, md, s, len, at, &ms, &me) : 0;
		if (rc < 0)
			return (enum tern_status) - rc;
		size_t spans[2][2];
		bool is_match[2];
		int k = 0;
		if (!rc) {
			if (at < len) {
				spans[k][0] = at, spans[k][1] = len, is_match[k++] = false;
			}
		} else {
			if (ms > at)
				spans[k][0] = at, spans[k][1] = ms, is_match[k++] = false;
			spans[k][0] = ms, spans[k][1] = me, is_match[k++] = true;
		}
		for (int j = 0; j < k; j++) {
			size_t a = spans[j][0], b = spans[j][1];
			bool m = is_match[j] != p->invert; /* the delimiter */
			switch (p->behavior) {
			case TOK_SPLIT_REMOVED:
				if (!m)
					st = tok_pieces_add(out, s + a, b - a);
				break;
			case TOK_SPLIT_ISOLATED: st = tok_pieces_add(out, s + a, b - a); break;
			case TOK_SPLIT_MERGED_PREV:
				if (m && out->n > first_new && !last_was_match)
					st = tok_pieces_extend(out, s + a, b - a);
				else
					st = tok_pieces_add(out, s + a, b - a);
				break;
			case TOK_SPLIT_MERGED_NEXT:
				if (m) {
					if (pending_next) {
						if ((st = tok_pieces_add(out, s + pend_a, pend_b - pend_a)))
							return st;
					}
					pending_next = true, pend_a = a, pend_b = b;
				} else if (pending_next) {
					st = tok_pieces_add(out, s + pend_a, b - pend_a);
					pending_next = false;
				} else {
					st = tok_pieces_add(out, s + a, b - a);
				}
				break;
			case TOK_SPLIT_CONTIGUOUS:
				if (m && last_was_match && out->n > first_new)
					st = tok_pieces_extend(out, s + a, b - a);
				else
					st = tok_pieces_add(out, s + a, b - a);
				break;
			}
			if (st)
				return st;
			last_was_match = m;
		}
		if (!rc)
			break;
		at = me;
	}
	if (pending_next)
		st = tok_pieces_add(out, s + pend_a, pend_b - pend_a);
	return st;
}

static enum tern_status bytelevel_map(const char *s, size_t len, struct tok_pieces *out)
{
	enum tern_status st = tok_pieces_add(out, "", 0);
	for (size_t i = 0; i < len && !st; i++) {
		unsigned char b = (unsigned char)s[i];
		st = tok_pieces_extend(out, tok_byte_char[b], tok_byte_char_len[b]);
	}
	return st;
}

static enum tern_status metaspace_piece(const struct tok_pre *p, const char *s, size_t len, bool first,
					struct tok_pieces *out)
{
	struct tok_buf r = {0};
	enum tern_status st = TERN_OK;
	/* as tokenizers does: prepend unless the piece starts with the replacement once spaces are
	 * replaced; "first" only for the piece at the start of the whole text */
	bool prepend = p->prepend == TOK_PREPEND_ALWAYS || (p->prepend == TOK_PREPEND_FIRST && first);
	if (prepend && len && s[0] != ' ' && !(len >= p->repl_len && !memcmp(s, p->repl, p->repl_len)))
		st = tok_buf_add(&r, p->repl, p->repl_len);
	for (size_t i = 0; i < len && !st; i++)
		st = s[i] == ' ' ? tok_buf_add(&r, p->repl, p->repl_len) : tok_buf_add(&r, s + i, 1);
	if (st)
		goto out;
	if (!p->split) {
		st = r.len ? tok_pieces_add(out, r.p, r.len) : TERN_OK;
		goto out;
	}
	/* Split before each replacement char, keeping it at the start of the next word. */
	size_t start = 0;
	for (size_t i = 0; i + p->repl_len <= r.len; i++) {
		if (i > start && !memcmp(r.p + i, p->repl, p->repl_len)) {
			if ((st = tok_pieces_add(out, r.p + start, i - start)))
				goto out;
			start = i;
		}
	}
	if (start < r.len)
		st = tok_pieces_add(out, r.p + start, r.len - start);
out:
	free(r.p);
	return st;
}

enum tern_status tok_pretokenize(const struct tern_tokenizer *t, pcre2_match_data *md, const char *s,
				 size_t len, bool at_start, struct tok_pieces *out, struct tok_pieces *tmp)
{
	enum tern_status st;
	tok_pieces_clear(out);
	if (!len)
		return TERN_OK;
	if ((st = tok_pieces_add(out, s, len)))
		return st;
	for (int i = 0; i < t->n_pre; i++) {
		const struct tok_pre *p = &t->pre[i];
		tok_pieces_clear(tmp);
		for (size_t k = 0; k < out->n; k++) {
			const char *ps = out->buf.p + out->off[k];
			size_t pl = out->len[k];
			switch (p->kind) {
			case TOK_P_SPLIT: st = split_piece(p, md, ps, pl, tmp); break;
			case TOK_P_METASPACE: st = metaspace_piece(p, ps, pl, at_start && k == 0, tmp); break;
			case TOK_P_BYTELEVEL: {
				struct tok_pieces words = {0};
				const char *src = ps;
				struct tok_buf pre = {0};
				st = TERN_OK;
				if (p->add_prefix_space && (pl == 0 || ps[0] != ' ')) {
					if ((st = tok_buf_add(&pre, " ", 1)) ||
					    (st = tok_buf_add(&pre, ps, pl))) {
						free(pre.p);
						break;
					}
					src = pre.p;
					pl = pre.len;
				}
				if (p->use_regex) {
					st = split_piece(p, md, src, pl, &words);
					for (size_t w = 0; w < words.n && !st; w++)
						st = bytelevel_map(words.buf.p + words.off[w], words.len[w],
								   tmp);
				} else if (pl) {
					st = bytelevel_map(src, pl, tmp);
				}
				tok_pieces_free(&words);
				free(pre.p);
				break;
			}
			}
			if (st)
				return st;
		}
		struct tok_pieces x = *out;
		*out = *tmp;
		*tmp = x;
	}
	return TERN_OK;
}
