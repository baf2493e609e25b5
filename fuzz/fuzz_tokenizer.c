/* libFuzzer harness for tokenizer.json loading, encode and decode.
 *
 * Input: tokenizer.json text, optionally followed by a NUL byte and a text to encode (without
 * one, a few fixed strings are encoded). A tokenizer that loads must then encode (with and without
 * special tokens) and decode the ids back (with and without special tokens), and decode ids taken
 * from the input bytes, without crashing; errors are fine. Seeds: fuzz/corpus/tokenizer. */
#include "tern/tokenizer.h"

#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(struct tern_tokenizer *t, const char *text, size_t len)
{
	for (int special = 0; special < 2; special++) {
		int32_t *ids = NULL;
		size_t n = 0;
		if (tern_tokenizer_encode(t, text, len, special, &ids, &n) == TERN_OK) {
			for (int skip = 0; skip < 2; skip++) {
				char *s = NULL;
				size_t sl = 0;
				if (tern_tokenizer_decode(t, ids, n, skip, &s, &sl) == TERN_OK &&
				    strlen(s) > sl)
					__builtin_trap(); /* NUL-terminated at sl */
				free(s);
			}
		}
		free(ids);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	const char *p = (const char *)data;
	const char *nul = memchr(p, 0, size);
	size_t json_len = nul ? (size_t)(nul - p) : size;
	struct tern_tokenizer *t = NULL;
	if (tern_tokenizer_load_mem(&t, "fuzz.json", p, json_len, NULL, 0) != TERN_OK)
		return 0;
	if (nul) {
		exercise(t, nul + 1, size - json_len - 1);
	} else {
		static const char *const fixed[] = {"",
						    " ",
						    "Hello world",
						    "it's 12345 cafe\xcc\x81\r\n\t x",
						    "<s>a</s><|x|>",
						    "\xe4\xbd\xa0\xe5\xa5\xbd \xf0\x9f\x98\x80"};
		for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
			exercise(t, fixed[i], strlen(fixed[i]));
	}
	/* Arbitrary ids, in range or not. */
	int32_t ids[16];
	size_t n = 0;
	int32_t v = tern_tokenizer_vocab_size(t);
	for (size_t i = 0; i + 1 < json_len && n < 16; i += 97)
		ids[n++] = v > 0 ? (int32_t)((((unsigned)data[i] << 8) | data[i + 1]) % (unsigned)v) : 0;
	char *s = NULL;
	tern_tokenizer_decode(t, ids, n, false, &s, NULL);
	free(s);
	tern_tokenizer_token_id(t, "<s>");
	tern_tokenizer_token(t, v - 1);
	tern_tokenizer_free(t);
	return 0;
}
