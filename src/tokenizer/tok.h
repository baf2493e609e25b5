/* Private to src/tokenizer: the parts of a loaded tokenizer.json and the helpers the stages share.
 *
 * Encode pipeline (as HF tokenizers runs it):
 *   text ─► split on added tokens that are not "normalized" (raw text)
 *        ─► normalizers on each remaining piece ─► split on "normalized" added tokens
 *        ─► pre-tokenizers (each piece → words) ─► BPE per word (cached) ─► post-processor ids
 * Decode: ids → token strings (special ones optionally dropped) → decoder chain → UTF-8. */
#ifndef TERN_TOKENIZER_TOK_H
#define TERN_TOKENIZER_TOK_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <pthread.h>

#include "core/core.h"
#include "tern/tokenizer.h"

/* ---- growable buffers -------------------------------------------------------------------- */

struct tok_buf {
	char *p;
	size_t len, cap;
};

struct tok_ids {
	int32_t *p;
	size_t n, cap;
};

/* A list of strings stored back to back: piece i is buf.p[off[i] .. off[i] + len[i]). */
struct tok_pieces {
	struct tok_buf buf;
	size_t *off, *len;
	size_t n, cap;
};

enum tern_status tok_buf_add(struct tok_buf *b, const void *p, size_t n);
enum tern_status tok_ids_push(struct tok_ids *v, int32_t id);
enum tern_status tok_pieces_add(struct tok_pieces *l, const char *p, size_t n);
/* Appends bytes to the last piece (which must exist). */
enum tern_status tok_pieces_extend(struct tok_pieces *l, const char *p, size_t n);
void tok_pieces_clear(struct tok_pieces *l);
void tok_pieces_free(struct tok_pieces *l);

/* ---- UTF-8 ------------------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if s[0..n) does not start with one. */
size_t tok_utf8_len(const unsigned char *s, size_t n);
bool tok_utf8_valid(const char *s, size_t n);
/* Decodes the code point at s (which must be valid); returns its byte length. */
size_t tok_utf8_decode(const unsigned char *s, int32_t *cp);
size_t tok_utf8_encode(int32_t cp, char out[4]);
/* Appends s with each maximal invalid subpart replaced by U+FFFD (Rust's from_utf8_lossy). */
enum tern_status tok_utf8_lossy(struct tok_buf *out, const char *s, size_t n);
bool tok_is_whitespace(int32_t cp); /* Unicode White_Space */

/* ---- hash maps --------------------------------------------------------------------------- */

uint64_t tok_hash(const void *p, size_t n);

/* string → int32, keys copied and owned */
struct tok_strmap_ent {
	char *key; /* NULL = empty slot */
	uint32_t len;
	int32_t val;
	uint64_t hash;
};
struct tok_strmap {
	struct tok_strmap_ent *e;
	size_t cap, n; /* cap a power of two */
};
/* Inserts or overwrites. */
enum tern_status tok_strmap_put(struct tok_strmap *m, const char *key, size_t len, int32_t val);
/* Returns the value, or -1 if absent. */
int32_t tok_strmap_get(const struct tok_strmap *m, const char *key, size_t len);
void tok_strmap_free(struct tok_strmap *m);

/* (left id, right id) → (rank, merged id) */
struct tok_pair_ent {
	uint64_t key; /* UINT64_MAX = empty */
	uint32_t rank;
	int32_t id;
};
struct tok_pairmap {
	struct tok_pair_ent *e;
	size_t cap, n;
};
enum tern_status tok_pairmap_put(struct tok_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t id);
const struct tok_pair_ent *tok_pairmap_get(const struct tok_pairmap *m, int32_t a, int32_t b);
void tok_pairmap_free(struct tok_pairmap *m);

/* word → ids cache, bounded; cleared whole when full */
struct tok_cache_ent {
	char *key;
	uint32_t len, n;
	uint64_t hash;
	int32_t *ids;
};
struct tok_cache {
	struct tok_cache_ent *e;
	size_t cap, n;
};

/* ---- stages ------------------------------------------------------------------------------ */

/* A literal string or a PCRE2 regex (compiled in UTF + UCP mode, JIT when available). */
struct tok_pattern {
	pcre2_code *re;
};
enum tern_status tok_pattern_compile(struct tok_pattern *p, const char *src, size_t len, bool literal,
				     const char *what);
void tok_pattern_free(struct tok_pattern *p);
/* Finds the next non-empty match at or after *from. Returns 1 found, 0 none, or -status. */
int tok_pattern_find(const struct tok_pattern *p, pcre2_match_data *md, const char *s, size_t len,
		     size_t from, size_t *ms, size_t *me);
enum tern_status tok_pattern_replace(const struct tok_pattern *p, pcre2_match_data *md, const char *s,
				     size_t len, const char *with, size_t with_len, struct tok_buf *out);

enum tok_norm_kind {
	TOK_N_NFC,
	TOK_N_NFD,
	TOK_N_NFKC,
	TOK_N_NFKD,
	TOK_N_PREPEND,
	TOK_N_REPLACE,
	TOK_N_LOWER
};
struct tok_norm {
	enum tok_norm_kind kind;
	char *str; /* Prepend text, Replace content */
	size_t str_len;
	struct tok_pattern pat; /* Replace */
};

enum tok_split_behavior {
	TOK_SPLIT_REMOVED,
	TOK_SPLIT_ISOLATED,
	TOK_SPLIT_MERGED_PREV,
	TOK_SPLIT_MERGED_NEXT,
	TOK_SPLIT_CONTIGUOUS,
};
enum tok_pre_kind { TOK_P_SPLIT, TOK_P_BYTELEVEL, TOK_P_METASPACE };
enum tok_prepend { TOK_PREPEND_ALWAYS, TOK_PREPEND_NEVER, TOK_PREPEND_FIRST };
struct tok_pre {
	enum tok_pre_kind kind;
	struct tok_pattern pat; /* Split; ByteLevel with use_regex (the GPT-2 pattern) */
	enum tok_split_behavior behavior;
	bool invert, add_prefix_space, use_regex, split;
	enum tok_prepend prepend;
	char repl[8]; /* Metaspace replacement, UTF-8 */
	size_t repl_len;
};

enum tok_dec_kind {
	TOK_D_BYTELEVEL,
	TOK_D_REPLACE,
	TOK_D_BYTEFALLBACK,
	TOK_D_FUSE,
	TOK_D_STRIP,
	TOK_D_METASPACE
};
struct tok_dec {
	enum tok_dec_kind kind;
	struct tok_pattern pat; /* Replace */
	char *str;              /* Replace content; Strip content (one char) */
	size_t str_len;
	int start, stop; /* Strip */
	enum tok_prepend prepend;
	char repl[8];
	size_t repl_len;
};

struct tok_added {
	char *content; /* as matched: normalized ones are stored normalized */
	size_t len;
	int32_t id;
	bool single_word, lstrip, rstrip, normalized, special;
};

/* Byte trie over added-token contents for leftmost-longest matching. */
struct tok_trie_node {
	int32_t child; /* first child index, -1 none */
	int32_t sibling;
	int32_t added; /* index into tok->added of a token ending here, -1 none */
	unsigned char byte;
};
struct tok_trie {
	struct tok_trie_node *n;
	size_t count, cap;
	bool first[256]; /* bytes a token may start with */
};

struct tok_bpe {
	struct tok_strmap vocab;
	struct tok_pairmap merges;
	int32_t unk; /* -1 none */
	bool fuse_unk, byte_fallback, ignore_merges;
	char *prefix, *suffix; /* continuing_subword_prefix, end_of_word_suffix; NULL = none */
	size_t prefix_len, suffix_len;
	int32_t byte_id[256]; /* <0xNN> tokens for byte fallback, -1 absent */
};

struct tern_tokenizer {
	char name[256];
	struct tok_norm *norm;
	int n_norm;
	struct tok_pre *pre;
	int n_pre;
	struct tok_bpe bpe;
	struct tok_dec *dec;
	int n_dec;
	bool has_decoder;

	struct tok_added *added;
	size_t n_added;
	struct tok_trie trie_raw, trie_norm;
	struct tok_strmap added_map; /* content (original) → id */

	char **id_tok;    /* id → token string (owned), NULL where none */
	uint32_t *id_len; /* its length (a token may hold a NUL) */
	bool *id_special;
	int32_t n_ids;

	int32_t *prefix, *suffix; /* post-processor ids around the sequence */
	size_t n_prefix, n_suffix;
	int32_t bos, eos;

	pthread_mutex_t lock; /* guards cache */
	struct tok_cache cache;
};

/* The GPT-2 byte ↔ unicode table used by ByteLevel. */
void tok_bytelevel_init(void);
extern char tok_byte_char[256][3]; /* UTF-8 of the char for byte b */
extern uint8_t tok_byte_char_len[256];
int tok_char_byte(int32_t cp); /* byte for a mapped code point, -1 if not a mapped char */

/* pretok.c */
enum tern_status tok_normalize(const struct tern_tokenizer *t, const char *s, size_t len,
			       struct tok_buf *out);
/* at_start: s begins the whole text (Metaspace's prepend_scheme "first" prepends only there). */
enum tern_status tok_pretokenize(const struct tern_tokenizer *t, pcre2_match_data *md, const char *s,
				 size_t len, bool at_start, struct tok_pieces *out, struct tok_pieces *tmp);
/* Splits s into segments: added-token matches (id >= 0) and text between (id -1). */
struct tok_seg {
	size_t start, end;
	int32_t id;
};
struct tok_segs {
	struct tok_seg *p;
	size_t n, cap;
};
enum tern_status tok_split_added(const struct tern_tokenizer *t, const struct tok_trie *trie, const char *s,
				 size_t len, struct tok_segs *out);
enum tern_status tok_trie_add(struct tok_trie *tr, const char *s, size_t len, int32_t added_index);
void tok_trie_free(struct tok_trie *tr);

/* bpe.c */
struct tok_bpe_scratch;
enum tern_status tok_bpe_word(struct tern_tokenizer *t, const char *w, size_t len, struct tok_ids *out,
			      struct tok_bpe_scratch **scratch);
void tok_bpe_scratch_free(struct tok_bpe_scratch *s);
void tok_cache_free(struct tok_cache *c);
void tok_bpe_free(struct tok_bpe *b);

/* decode.c */
enum tern_status tok_decode_chain(const struct tern_tokenizer *t, pcre2_match_data *md,
				  struct tok_pieces *toks, struct tok_buf *out);

#endif
