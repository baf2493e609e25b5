/* The BPE model: one pre-tokenized word → ids.
 *
 * The word is cut into characters (each looked up in the vocabulary, with byte fallback or the
 * unknown token when absent), then adjacent pairs are merged lowest rank first, leftmost first
 * among equal ranks, with a binary heap of candidate merges over a linked list of symbols. Results
 * for words up to CACHE_WORD_MAX bytes are cached. */
#include "tokenizer/tok.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CACHE_WORD_MAX 256
#define CACHE_MAX_ENTRIES 65536

struct sym {
	int32_t id;
	int32_t prev, next; /* -1 at the ends */
	bool dead;
};

struct cand {
	uint32_t rank;
	int32_t pos; /* left symbol */
	int32_t id;  /* merged token */
};

struct tok_bpe_scratch {
	struct sym *s;
	size_t s_cap;
	struct cand *h;
	size_t h_n, h_cap;
	struct tok_buf tmp;
};

void tok_bpe_scratch_free(struct tok_bpe_scratch *s)
{
	if (!s)
		return;
	free(s->s);
	free(s->h);
	free(s->tmp.p);
	free(s);
}

static bool cand_less(const struct cand *a, const struct cand *b)
{
	return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static enum tern_status heap_push(struct tok_bpe_scratch *x, struct cand c)
{
	if (x->h_n == x->h_cap) {
		size_t cap = x->h_cap ? x->h_cap * 2 : 64;
		struct cand *h = realloc(x->h, cap * sizeof *h);
		if (!h)
			return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (BPE)");
		x->h = h;
		x->h_cap = cap;
	}
	size_t i = x->h_n++;
	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (!cand_less(&c, &x->h[p]))
			break;
		x->h[i] = x->h[p];
		i = p;
	}
	x->h[i] = c;
	return TERN_OK;
}

static struct cand heap_pop(struct tok_bpe_scratch *x)
{
	struct cand top = x->h[0], last = x->h[--x->h_n];
	size_t i = 0, n = x->h_n;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && cand_less(&x->h[c + 1], &x->h[c]))
			c++;
		if (!cand_less(&x->h[c], &last))
			break;
		x->h[i] = x->h[c];
		i = c;
	}
	if (n)
		x->h[i] = last;
	return top;
}

static enum tern_status push_pair(const struct tok_bpe *b, struct tok_bpe_scratch *x, int32_t left)
{
	int32_t right = x->s[left].next;
	if (right < 0)
		return TERN_OK;
	const struct tok_pair_ent *e = tok_pairmap_get(&b->merges, x->s[left].id, x->s[right].id);
	if (!e)
		return TERN_OK;
	return heap_push(x, (struct cand){e->rank, left, e->id});
}

/* Looks up one character (with the subword prefix / end-of-word suffix where configured). */
static int32_t char_id(const struct tok_bpe *b, struct tok_bpe_scratch *x, const char *c, size_t n,
		       bool first, bool last)
{
	if ((!b->prefix || first) && (!b->suffix || !last))
		return tok_strmap_get(&b->vocab, c, n);
	x->tmp.len = 0;
	if (b->prefix && !first && tok_buf_add(&x->tmp, b->prefix, b->prefix_len))
		return -1;
	if (tok_buf_add(&x->tmp, c, n))
		return -1;
	if (b->suffix && last && tok_buf_add(&x->tmp, b->suffix, b->suffix_len))
		return -1;
	return tok_strmap_get(&b->vocab, x->tmp.p, x->tmp.len);
}

static enum tern_status bpe_merge(const struct tok_bpe *b, const char *w, size_t len, struct tok_ids *out,
				  struct tok_bpe_scratch *x)
{
	enum tern_status st;
	if (b->ignore_merges) {
		int32_t id = tok_strmap_get(&b->vocab, w, len);
		if (id >= 0)
			return tok_ids_push(out, id);
	}
	/* At most one symbol per byte (byte fallback gives one per byte of a character). */
	if (len + 1 > x->s_cap) {
		struct sym *s = realloc(x->s, (len + 1) * sizeof *s);
		if (!s)
			return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory (BPE word of %zu bytes)",
					 len);
		x->s = s;
		x->s_cap = len + 1;
	}
	int32_t n = 0;
	bool last_unk = false;
	for (size_t i = 0; i < len;) {
		size_t k = tok_utf8_len((const unsigned char *)w + i, len - i);
		if (!k)
			k = 1; /* not reached for valid input */
		int32_t id = char_id(b, x, w + i, k, i == 0, i + k == len);
		if (id >= 0) {
			x->s[n++] = (struct sym){id, 0, 0, false};
			last_unk = false;
		} else {
			bool done = false;
			if (b->byte_fallback) {
				done = true;
				for (size_t j = 0; j < k; j++)
					done = done && b->byte_id[(unsigned char)w[i + j]] >= 0;
				for (size_t j = 0; done && j < k; j++)
					x->s[n++] = (struct sym){b->byte_id[(unsigned char)w[i + j]], 0, 0,
								 false};
				if (done)
					last_unk = false;
			}
			if (!done && b->unk >= 0) {
				if (!(b->fuse_unk && last_unk))
					x->s[n++] = (struct sym){b->unk, 0, 0, false};
				last_unk = true;
			}
			/* Without byte fallback or an unknown token, HF drops the character. */
		}
		i += k;
	}
	for (int32_t i = 0; i < n; i++) {
		x->s[i].prev = i - 1;
		x->s[i].next = i + 1 < n ? i + 1 : -1;
	}
	x->h_n = 0;
	for (int32_t i = 0; i + 1 < n; i++)
		if ((st = push_pair(b, x, i)))
			return st;
	while (x->h_n) {
		struct cand c = heap_pop(x);
		struct sym *l = &x->s[c.pos];
		if (l->dead || l->next < 0)
			continue;
		struct sym *r = &x->s[l->next];
		const struct tok_pair_ent *e = tok_pairmap_get(&b->merges, l->id, r->id);
		if (!e || e->rank != c.rank || e->id != c.id)
			continue; /* stale: one side was merged since */
		l->id = c.id;
		r->dead = true;
		l->next = r->next;
		if (r->next >= 0)
			x->s[r->next].prev = c.pos;
		if (l->prev >= 0 && (st = push_pair(b, x, l->prev)))
			return st;
		if ((st = push_pair(b, x, c.pos)))
			return st;
	}
	for (int32_t i = n ? 0 : -1; i >= 0; i = x->s[i].next)
		if ((st = tok_ids_push(out, x->s[i].id)))
			return st;
	return TERN_OK;
}

/* ---- cache ------------------------------------------------------------------------------- */

void tok_cache_free(struct tok_cache *c)
{
	for (size_t i = 0; i < c->cap; i++) {
		free(c->e[i].key);
		free(c->e[i].ids);
	}
	free(c->e);
	memset(c, 0, sizeof *c);
}

static bool cache_get(const struct tok_cache *c, uint64_t h, const char *w, size_t len, struct tok_ids *out,
		      enum tern_status *st)
{
	if (!c->cap)
		return false;
	for (size_t j = h & (c->cap - 1); c->e[j].key; j = (j + 1) & (c->cap - 1)) {
		const struct tok_cache_ent *e = &c->e[j];
		if (e->hash == h && e->len == len && !memcmp(e->key, w, len)) {
			for (uint32_t i = 0; i < e->n && !*st; i++)
				*st = tok_ids_push(out, e->ids[i]);
			return true;
		}
	}
	return false;
}

/* Best effort: a failed allocation just leaves the word uncached. */
static void cache_put(struct tok_cache *c, uint64_t h, const char *w, size_t len, const int32_t *ids,
		      size_t n)
{
	if (c->n >= CACHE_MAX_ENTRIES)
		tok_cache_free(c);
	if (!c->cap) {
		c->e = calloc(2 * CACHE_MAX_ENTRIES, sizeof *c->e);
		if (!c->e)
			return;
		c->cap = 2 * CACHE_MAX_ENTRIES;
	}
	size_t j = h & (c->cap - 1);
	for (; c->e[j].key; j = (j + 1) & (c->cap - 1))
		if (c->e[j].hash == h && c->e[j].len == len && !memcmp(c->e[j].key, w, len))
			return;
	char *k = malloc(len + 1);
	int32_t *v = malloc((n ? n : 1) * sizeof *v);
	if (!k || !v) {
		free(k);
		free(v);
		return;
	}
	memcpy(k, w, len);
	k[len] = 0;
	if (n)
		memcpy(v, ids, n * sizeof *v);
	c->e[j] = (struct tok_cache_ent){k, (uint32_t)len, (uint32_t)n, h, v};
	c->n++;
}

enum tern_status tok_bpe_word(struct tern_tokenizer *t, const char *w, size_t len, struct tok_ids *out,
			      struct tok_bpe_scratch **scratch)
{
	enum tern_status st = TERN_OK;
	if (!len)
		return TERN_OK;
	bool cacheable = len <= CACHE_WORD_MAX;
	uint64_t h = 0;
	if (cacheable) {
		h = tok_hash(w, len);
		pthread_mutex_lock(&t->lock);
		bool hit = cache_get(&t->cache, h, w, len, out, &st);
		pthread_mutex_unlock(&t->lock);
		if (hit)
			return st;
	}
	if (!*scratch && !(*scratch = calloc(1, sizeof **scratch)))
		return tern_fail(TERN_E_NOMEM, "tokenizer: out of memory");
	size_t before = out->n;
	if ((st = bpe_merge(&t->bpe, w, len, out, *scratch)))
		return st;
	if (cacheable) {
		pthread_mutex_lock(&t->lock);
		cache_put(&t->cache, h, w, len, out->p ? out->p + before : NULL, out->n - before);
		pthread_mutex_unlock(&t->lock);
	}
	return TERN_OK;
}

void tok_bpe_free(struct tok_bpe *b)
{
	tok_strmap_free(&b->vocab);
	tok_pairmap_free(&b->merges);
	free(b->prefix);
	free(b->suffix);
}
