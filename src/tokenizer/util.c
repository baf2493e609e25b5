/* Tokenizer helpers: growable buffers, UTF-8, hash maps, PCRE2 patterns, the ByteLevel table. */
#include "tokenizer/tok.h"

#include <stdlib.h>
#include <string.h>

/* ---- buffers ----------------------------------------------------------------------------- */

static enum tern_status grow(void **p, size_t *cap, size_t need, size_t elem)
{
	if (need <= *cap)
		return TERN_OK;
	size_t c = *cap ? *cap : 16;
	while (c < need) {
		if (c > SIZE_MAX / 2 / elem)
			return tern_fail(TERN_E_NOMEM, "tokenizer: buffer too large");
		c *= 2;
	}
	void *q = realloc(*p, c * elem);
	if (!q)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (%zu bytes)", c * elem);
	*p = q;
	*cap = c;
	return TERN_OK;
}

enum tern_status tok_buf_add(struct tok_buf *b, const void *p, size_t n)
{
	enum tern_status st = grow((void **)&b->p, &b->cap, b->len + n + 1, 1);
	if (st)
		return st;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return TERN_OK;
}

enum tern_status tok_ids_push(struct tok_ids *v, int32_t id)
{
	enum tern_status st = grow((void **)&v->p, &v->cap, v->n + 1, sizeof *v->p);
	if (st)
		return st;
	v->p[v->n++] = id;
	return TERN_OK;
}

enum tern_status tok_pieces_add(struct tok_pieces *l, const char *p, size_t n)
{
	if (l->n + 1 > l->cap) {
		size_t c1 = l->cap, c2 = l->cap;
		enum tern_status st = grow((void **)&l->off, &c1, l->n + 1, sizeof *l->off);
		if (!st)
			st = grow((void **)&l->len, &c2, l->n + 1, sizeof *l->len);
		if (st)
			return st;
		l->cap = c1 < c2 ? c1 : c2;
	}
	size_t off = l->buf.len;
	enum tern_status st = tok_buf_add(&l->buf, p, n);
	if (st)
		return st;
	l->off[l->n] = off;
	l->len[l->n] = n;
	l->n++;
	return TERN_OK;
}

enum tern_status tok_pieces_extend(struct tok_pieces *l, const char *p, size_t n)
{
	/* The last piece is the tail of buf, so appending to buf extends it. */
	enum tern_status st = tok_buf_add(&l->buf, p, n);
	if (st)
		return st;
	l->len[l->n - 1] += n;
	return TERN_OK;
}

void tok_pieces_clear(struct tok_pieces *l)
{
	l->n = 0;
	l->buf.len = 0;
}

void tok_pieces_free(struct tok_pieces *l)
{
	free(l->buf.p);
	free(l->off);
	free(l->len);
	memset(l, 0, sizeof *l);
}

/* ---- UTF-8 ------------------------------------------------------------------------------- */

size_t tok_utf8_len(const unsigned char *s, size_t n)
{
	if (!n)
		return 0;
	unsigned c = s[0];
	if (c < 0x80)
		return 1;
	size_t need;
	unsigned lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf) {
		need = 2;
	} else if (c >= 0xe0 && c <= 0xef) {
		need = 3;
		if (c == 0xe0)
			lo = 0xa0;
		if (c == 0xed)
			hi = 0x9f;
	} else if (c >= 0xf0 && c <= 0xf4) {
		need = 4;
		if (c == 0xf0)
			lo = 0x90;
		if (c == 0xf4)
			hi = 0x8f;
	} else {
		return 0;
	}
	if (n < need || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < need; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return need;
}

bool tok_utf8_valid(const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0;
	while (i < n) {
		if (u[i] < 0x80) {
			i++;
			continue;
		}
		size_t k = tok_utf8_len(u + i, n - i);
		if (!k)
			return false;
		i += k;
	}
	return true;
}

size_t tok_utf8_decode(const unsigned char *s, int32_t *cp)
{
	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if (s[0] < 0xe0) {
		*cp = ((s[0] & 0x1f) << 6) | (s[1] & 0x3f);
		return 2;
	}
	if (s[0] < 0xf0) {
		*cp = ((s[0] & 0x0f) << 12) | ((s[1] & 0x3f) << 6) | (s[2] & 0x3f);
		return 3;
	}
	*cp = ((s[0] & 0x07) << 18) | ((s[1] & 0x3f) << 12) | ((s[2] & 0x3f) << 6) | (s[3] & 0x3f);
	return 4;
}

size_t tok_utf8_encode(int32_t cp, char out[4])
{
	unsigned u = (unsigned)cp;
	if (u < 0x80) {
		out[0] = (char)u;
		return 1;
	}
	if (u < 0x800) {
		out[0] = (char)(0xc0 | (u >> 6));
		out[1] = (char)(0x80 | (u & 0x3f));
		return 2;
	}
	if (u < 0x10000) {
		out[0] = (char)(0xe0 | (u >> 12));
		out[1] = (char)(0x80 | ((u >> 6) & 0x3f));
		out[2] = (char)(0x80 | (u & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | (u >> 18));
	out[1] = (char)(0x80 | ((u >> 12) & 0x3f));
	out[2] = (char)(0x80 | ((u >> 6) & 0x3f));
	out[3] = (char)(0x80 | (u & 0x3f));
	return 4;
}

/* Length of the maximal prefix of a well-formed sequence at s (>= 1 for an invalid start). */
static size_t maximal_subpart(const unsigned char *s, size_t n)
{
	unsigned c = s[0];
	size_t need;
	unsigned lo = 0x80, hi = 0xbf;
	if (c >= 0xc2 && c <= 0xdf)
		need = 2;
	else if (c >= 0xe0 && c <= 0xef)
		need = 3, lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
	else if (c >= 0xf0 && c <= 0xf4)
		need = 4, lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
	else
		return 1;
	size_t i = 1;
	if (i < n && s[1] >= lo && s[1] <= hi) {
		i++;
		while (i < need && i < n && (s[i] & 0xc0) == 0x80)
			i++;
	}
	return i;
}

enum tern_status tok_utf8_lossy(struct tok_buf *out, const char *s, size_t n)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, run = 0;
	enum tern_status st = TERN_OK;
	while (i < n) {
		size_t k = u[i] < 0x80 ? 1 : tok_utf8_len(u + i, n - i);
		if (k) {
			i += k;
			continue;
		}
		if ((st = tok_buf_add(out, s + run, i - run)))
			return st;
		if ((st = tok_buf_add(out, "\xef\xbf\xbd", 3)))
			return st;
		i += maximal_subpart(u + i, n - i);
		run = i;
	}
	return tok_buf_add(out, s + run, n - run);
}

bool tok_is_whitespace(int32_t c)
{
	return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f ||
	       c == 0x3000;
}

/* ---- hash maps --------------------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n)
{
	/* FNV-1a with a final mix; keys are short token strings. */
	const unsigned char *s = p;
	uint64_t h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ s[i]) * 1099511628211ull;
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return h;
}

static enum tern_status strmap_resize(struct tok_strmap *m, size_t cap)
{
	struct tok_strmap_ent *e = calloc(cap, sizeof *e);
	if (!e)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (hash map of %zu)", cap);
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->e[i].key)
			continue;
		size_t j = m->e[i].hash & (cap - 1);
		while (e[j].key)
			j = (j + 1) & (cap - 1);
		e[j] = m->e[i];
	}
	free(m->e);
	m->e = e;
	m->cap = cap;
	return TERN_OK;
}

enum tern_status tok_strmap_put(struct tok_strmap *m, const char *key, size_t len, int32_t val)
{
	if (len > UINT32_MAX)
		return tern_fail(TERN_E_INVALID, "tokenizer: token of %zu bytes is too long", len);
	if ((m->n + 1) * 2 > m->cap) {
		enum tern_status st = strmap_resize(m, m->cap ? m->cap * 2 : 64);
		if (st)
			return st;
	}
	uint64_t h = tok_hash(key, len);
	size_t j = h & (m->cap - 1);
	for (; m->e[j].key; j = (j + 1) & (m->cap - 1)) {
		if (m->e[j].hash == h && m->e[j].len == len && !memcmp(m->e[j].key, key, len)) {
			m->e[j].val = val;
			return TERN_OK;
		}
	}
	char *k = malloc(len + 1);
	if (!k)
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
	memcpy(k, key, len);
	k[len] = 0;
	m->e[j] = (struct tok_strmap_ent){k, (uint32_t)len, val, h};
	m->n++;
	return TERN_OK;
}

int32_t tok_strmap_get(const struct tok_strmap *m, const char *key, size_t len)
{
	if (!m->cap)
		return -1;
	uint64_t h = tok_hash(key, len);
	for (size_t j = h & (m->cap - 1); m->e[j].key; j = (j + 1) & (m->cap - 1))
		if (m->e[j].hash == h && m->e[j].len == len && !memcmp(m->e[j].key, key, len))
			return m->e[j].val;
	return -1;
}

void tok_strmap_free(struct tok_strmap *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->e[i].key);
	free(m->e);
	memset(m, 0, sizeof *m);
}

static uint64_t pair_key(int32_t a, int32_t b) { return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b; }
static uint64_t pair_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

enum tern_status tok_pairmap_put(struct tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id)
{
	if ((m->n + 1) * 2 > m->cap) {
		size_t cap = m->cap ? m->cap * 2 : 64;
		struct tok_pair_ent *e = malloc(cap * sizeof *e);
		if (!e)
			return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (merges)");
		for (size_t i = 0; i < cap; i++)
			e[i].key = UINT64_MAX;
		for (size_t i = 0; i < m->cap; i++) {
			if (m->e[i].key == UINT64_MAX)
				continue;
			size_t j = pair_hash(m->e[i].key) & (cap - 1);
			while (e[j].key != UINT64_MAX)
				j = (j + 1) & (cap - 1);
			e[j] = m->e[i];
		}
		free(m->e);
		m->e = e;
		m->cap = cap;
	}
	uint64_t k = pair_key(a, b);
	size_t j = pair_hash(k) & (m->cap - 1);
	for (; m->e[j].key != UINT64_MAX; j = (j + 1) & (m->cap - 1)) {
		if (m->e[j].key == k) {
			m->e[j].rank = rank;
			m->e[j].id = id;
			return TERN_OK;
		}
	}
	m->e[j] = (struct tok_pair_ent){k, rank, id};
	m->n++;
	return TERN_OK;
}

const struct tok_pair_ent *tok_pairmap_get(const struct tok_pairmap *m, int32_t a, int32_t b)
{
	if (!m->cap)
		return NULL;
	uint64_t k = pair_key(a, b);
	for (size_t j = pair_hash(k) & (m->cap - 1); m->e[j].key != UINT64_MAX; j = (j + 1) & (m->cap - 1))
		if (m->e[j].key == k)
			return &m->e[j];
	return NULL;
}

void tok_pairmap_free(struct tok_pairmap *m)
{
	free(m->e);
	memset(m, 0, sizeof *m);
}

/* ---- patterns ---------------------------------------------------------------------------- */

enum tern_status tok_pattern_compile(struct tok_pattern *p, const char *src, size_t len, bool literal,
				     const char *what)
{
	int err = 0;
	PCRE2_SIZE erroff = 0;
	uint32_t opts = PCRE2_UTF | (literal ? PCRE2_LITERAL : PCRE2_UCP); /* LITERAL refuses UCP */
	p->re = pcre2_compile((PCRE2_SPTR)src, len, opts, &err, &erroff, NULL);
	if (!p->re) {
		PCRE2_UCHAR msg[160];
		pcre2_get_error_message(err, msg, sizeof msg);
		return tern_fail(TERN_E_UNSUPPORTED, "%s: pattern does not compile at offset %zu: %s", what,
				 (size_t)erroff, (const char *)msg);
	}
	pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if absent */
	return TERN_OK;
}

void tok_pattern_free(struct tok_pattern *p)
{
	pcre2_code_free(p->re);
	p->re = NULL;
}

int tok_pattern_find(const struct tok_pattern *p, pcre2_match_data *md, const char *s, size_t len,
		     size_t from, size_t *ms, size_t *me)
{
	while (from <= len) {
		int rc = pcre2_match(p->re, (PCRE2_SPTR)s, len, from, PCRE2_NO_UTF_CHECK, md, NULL);
		if (rc == PCRE2_ERROR_NOMATCH)
			return 0;
		if (rc < 0) {
			PCRE2_UCHAR msg[160];
			pcre2_get_error_message(rc, msg, sizeof msg);
			return -(int)tern_fail(TERN_E_UNSUPPORTED, "tokenizer: regex match failed: %s",
					       (const char *)msg);
		}
		PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
		if (ov[1] > ov[0] && ov[1] <= len) {
			*ms = ov[0];
			*me = ov[1];
			return 1;
		}
		/* An empty match splits nothing: look again one character further. */
		if (ov[0] >= len)
			return 0;
		size_t k = tok_utf8_len((const unsigned char *)s + ov[0], len - ov[0]);
		from = ov[0] + (k ? k : 1);
	}
	return 0;
}

enum tern_status tok_pattern_replace(const struct tok_pattern *p, pcre2_match_data *md, const char *s,
				     size_t len, const char *with, size_t with_len, struct tok_buf *out)
{
	size_t at = 0, ms, me;
	enum tern_status st;
	for (;;) {
		int rc = tok_pattern_find(p, md, s, len, at, &ms, &me);
		if (rc < 0)
			return (enum tern_status) - rc;
		if (!rc)
			break;
		if ((st = tok_buf_add(out, s + at, ms - at)) || (st = tok_buf_add(out, with, with_len)))
			return st;
		at = me;
	}
	return tok_buf_add(out, s + at, len - at);
}

/* ---- ByteLevel --------------------------------------------------------------------------- */

/* GPT-2's table: printable bytes stand for themselves, the other 68 map to U+0100.. in order. */
char tok_byte_char[256][3];
uint8_t tok_byte_char_len[256];
static int16_t char_byte[324];
static pthread_once_t bytelevel_once = PTHREAD_ONCE_INIT;

static void bytelevel_build(void)
{
	int next = 256;
	for (int i = 0; i < 324; i++)
		char_byte[i] = -1;
	for (int b = 0; b < 256; b++) {
		bool keep = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
		int cp = keep ? b : next++;
		char tmp[4];
		size_t n = tok_utf8_encode(cp, tmp);
		memcpy(tok_byte_char[b], tmp, n);
		tok_byte_char_len[b] = (uint8_t)n;
		char_byte[cp] = (int16_t)b;
	}
}

void tok_bytelevel_init(void) { pthread_once(&bytelevel_once, bytelevel_build); }

int tok_char_byte(int32_t cp) { return cp >= 0 && cp < 324 ? char_byte[cp] : -1; }
