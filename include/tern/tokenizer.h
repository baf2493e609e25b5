/* tern tokenizer: Hugging Face tokenizer.json (BPE, byte-level and sentencepiece-style).
 *
 * What is supported (anything else fails to load with a message naming the component type):
 *   normalizers     Sequence, NFC, NFD, NFKC, NFKD, Prepend, Replace, Lowercase
 *   pre-tokenizers  Sequence, Split (String or Regex pattern, every behavior, invert), ByteLevel,
 *                   Metaspace
 *   model           BPE (vocab, merges in "a b" or [a, b] form, ignore_merges, byte_fallback,
 *                   unk_token + fuse_unk, continuing_subword_prefix, end_of_word_suffix)
 *   post-processors TemplateProcessing (single template), ByteLevel, BertProcessing,
 *                   RobertaProcessing, Sequence
 *   decoders        Sequence, ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace
 * Added tokens are matched in the raw text before the normalizer (normalized ones after it), with
 * their single_word, lstrip, rstrip, normalized and special flags. The ids equal those of HF
 * `tokenizers` (tests/test_tokenizer.c checks this on three real tokenizers).
 *
 * A loaded tokenizer is read-only apart from an internal word cache guarded by a mutex: encode and
 * decode may be called from several threads on one handle. */
#ifndef TERN_TOKENIZER_H
#define TERN_TOKENIZER_H

#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tern_tokenizer;

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json. */
enum tern_status tern_tokenizer_load_dir(struct tern_tokenizer **out, const char *dir);

/* Loads from explicit paths; config_path may be NULL. */
enum tern_status tern_tokenizer_load(struct tern_tokenizer **out, const char *json_path,
				     const char *config_path);

/* Loads from tokenizer.json text in memory (len bytes); config_text may be NULL. name is used in
 * messages ("tokenizer.json"). */
enum tern_status tern_tokenizer_load_mem(struct tern_tokenizer **out, const char *name, const char *json,
					 size_t len, const char *config_text, size_t config_len);

void tern_tokenizer_free(struct tern_tokenizer *tok);

/* Encodes len bytes of UTF-8 text. add_special adds what the post-processor (and
 * tokenizer_config's add_bos_token / add_eos_token) say, e.g. BOS. Special tokens written in the
 * text are always recognised. *ids receives a malloc'd array the caller frees (may be NULL when
 * *n is 0). Invalid UTF-8 is TERN_E_INVALID. */
enum tern_status tern_tokenizer_encode(const struct tern_tokenizer *tok, const char *text, size_t len,
				       bool add_special, int32_t **ids, size_t *n);

/* Decodes ids to UTF-8 (malloc'd, NUL-terminated; *len without the NUL, may be NULL).
 * skip_special drops added tokens marked special. An id outside the vocabulary is TERN_E_INVALID. */
enum tern_status tern_tokenizer_decode(const struct tern_tokenizer *tok, const int32_t *ids, size_t n,
				       bool skip_special, char **text, size_t *len);

/* Id of a token string (added tokens first, then the model vocabulary); -1 if none. */
int32_t tern_tokenizer_token_id(const struct tern_tokenizer *tok, const char *token);

/* Token string of an id, or NULL if the id has none. Valid while tok lives. */
const char *tern_tokenizer_token(const struct tern_tokenizer *tok, int32_t id);

/* Vocabulary size including added tokens (largest id + 1). */
int32_t tern_tokenizer_vocab_size(const struct tern_tokenizer *tok);

/* BOS / EOS ids from tokenizer_config (bos_token, eos_token), else from the post-processor
 * template; -1 when there is none. */
int32_t tern_tokenizer_bos(const struct tern_tokenizer *tok);
int32_t tern_tokenizer_eos(const struct tern_tokenizer *tok);

/* True when the id is an added token marked special. */
bool tern_tokenizer_is_special(const struct tern_tokenizer *tok, int32_t id);

#ifdef __cplusplus
}
#endif
#endif
