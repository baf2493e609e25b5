/* Tokenizer parity: every string of tests/data/tokenizer_strings.jsonl must encode (with and without
 * special tokens) to exactly the ids HF `tokenizers` gave (tests/data/tokenizer_ref_<name>.jsonl,
 * written by tools/tokenizer_ref.py) and decode back to HF's text, for each real tokenizer.
 * Plus a few API checks: BOS/EOS, lookups, errors for bad input and unsupported components.
 *
 * Environment: TERN_TEST_DATA (tests/data), TERN_TOKENIZERS (build dir holding <name>/tokenizer.json
 * and <name>/tokenizer_config.json, decompressed by the build). */
#define _POSIX_C_SOURCE 200809L /* getline */
#include "tern/tokenizer.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SHOW_MISMATCHES 3

static int passed, failed;

static void check(bool ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s\n", what);
	}
}

static json_t *read_jsonl(const char *path, size_t *n)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		printf("cannot open %s\n", path);
		return NULL;
	}
	json_t *arr = json_array();
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	while ((len = getline(&line, &cap, f)) > 0) {
		json_error_t err;
		json_t *v = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &err);
		if (!v) {
			printf("%s: bad line: %s\n", path, err.text);
			continue;
		}
		json_array_append_new(arr, v);
	}
	free(line);
	fclose(f);
	*n = json_array_size(arr);
	return arr;
}

static bool ids_equal(const int32_t *a, size_t na, const json_t *ref)
{
	if (na != json_array_size(ref))
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i] != json_integer_value(json_array_get(ref, i)))
			return false;
	return true;
}

static void print_ids(const char *label, const int32_t *a, size_t n)
{
	printf("    %s [", label);
	for (size_t i = 0; i < n; i++)
		printf("%s%d", i ? ", " : "", a[i]);
	printf("]\n");
}

static void print_ref(const char *label, const json_t *ref)
{
	printf("    %s [", label);
	for (size_t i = 0; i < json_array_size(ref); i++)
		printf("%s%lld", i ? ", " : "", (long long)json_integer_value(json_array_get(ref, i)));
	printf("]\n");
}

static void print_str(const char *label, const char *s, size_t n)
{
	printf("    %s \"", label);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20 || c == 0x7f || c == '"' || c == '\\')
			printf("\\x%02x", c);
		else
			putchar(c);
	}
	printf("\"\n");
}

static bool str_equal(const char *s, size_t n, const json_t *ref)
{
	return json_is_string(ref) && json_string_length(ref) == n && !memcmp(s, json_string_value(ref), n);
}

/* Runs one tokenizer over all strings; returns the number of strings that failed. */
static int parity(const char *name, const char *tokdir, const char *data, const json_t *texts)
{
	char dir[4096], ref_path[4096];
	snprintf(dir, sizeof dir, "%s/%s", tokdir, name);
	snprintf(ref_path, sizeof ref_path, "%s/tokenizer_ref_%s.jsonl", data, name);
	struct tern_tokenizer *tok = NULL;
	if (tern_tokenizer_load_dir(&tok, dir)) {
		printf("%s: load failed: %s\n", name, tern_error());
		failed++;
		return 1;
	}
	size_t nref = 0;
	json_t *refs = read_jsonl(ref_path, &nref);
	if (!refs || nref != json_array_size(texts)) {
		printf("%s: %zu reference lines for %zu strings\n", name, nref, json_array_size(texts));
		failed++;
		json_decref(refs);
		tern_tokenizer_free(tok);
		return 1;
	}
	int ids_ok = 0, dec_ok = 0, bad = 0, shown = 0;
	for (size_t i = 0; i < nref; i++) {
		const json_t *tj = json_object_get(json_array_get(texts, i), "text");
		const json_t *r = json_array_get(refs, i);
		const char *text = json_string_value(tj);
		size_t tlen = json_string_length(tj);
		int32_t *a = NULL, *b = NULL;
		size_t na = 0, nb = 0, l1 = 0, l2 = 0;
		char *d1 = NULL, *d2 = NULL;
		bool ok_ids = !tern_tokenizer_encode(tok, text, tlen, false, &a, &na) &&
			      !tern_tokenizer_encode(tok, text, tlen, true, &b, &nb) &&
			      ids_equal(a, na, json_object_get(r, "ids")) &&
			      ids_equal(b, nb, json_object_get(r, "ids_special"));
		/* Decode HF's ids, so a decode check does not depend on the encode result. */
		const json_t *rs = json_object_get(r, "ids_special");
		size_t nr = json_array_size(rs);
		int32_t *rid = malloc((nr ? nr : 1) * sizeof *rid);
		for (size_t k = 0; k < nr; k++)
			rid[k] = (int32_t)json_integer_value(json_array_get(rs, k));
		bool ok_dec = !tern_tokenizer_decode(tok, rid, nr, false, &d1, &l1) &&
			      !tern_tokenizer_decode(tok, rid, nr, true, &d2, &l2) &&
			      str_equal(d1, l1, json_object_get(r, "decoded")) &&
			      str_equal(d2, l2, json_object_get(r, "decoded_skip"));
		ids_ok += ok_ids;
		dec_ok += ok_dec;
		if (!ok_ids || !ok_dec) {
			bad++;
			if (shown++ < SHOW_MISMATCHES) {
				printf("  %s: string %zu mismatch (%s%s)%s%s\n", name, i,
				       ok_ids ? "" : "ids ", ok_dec ? "" : "decode",
				       *tern_error() ? ": " : "", tern_error());
				print_str("text       ", text, tlen);
				print_ids("tern       ", a, na);
				print_ref("hf         ", json_object_get(r, "ids"));
				print_ids("tern +spec ", b, nb);
				print_ref("hf   +spec ", json_object_get(r, "ids_special"));
				if (!ok_dec) {
					print_str("tern decode", d1 ? d1 : "", l1);
					print_str("hf   decode",
						  json_string_value(json_object_get(r, "decoded")),
						  json_string_length(json_object_get(r, "decoded")));
					print_str("tern skip  ", d2 ? d2 : "", l2);
					print_str("hf   skip  ",
						  json_string_value(json_object_get(r, "decoded_skip")),
						  json_string_length(json_object_get(r, "decoded_skip")));
				}
			}
		}
		free(a);
		free(b);
		free(rid);
		free(d1);
		free(d2);
	}
	printf("%-8s strings %4zu   ids matched %4d   decode matched %4d   %s\n", name, nref, ids_ok, dec_ok,
	       bad ? "MISMATCH" : "ok");
	passed += (int)nref - bad;
	failed += bad;
	json_decref(refs);
	tern_tokenizer_free(tok);
	return bad;
}

static struct tern_tokenizer *load_text(const char *json)
{
	struct tern_tokenizer *t = NULL;
	if (tern_tokenizer_load_mem(&t, "test.json", json, strlen(json), NULL, 0))
		return NULL;
	return t;
}

static void api_checks(const char *tokdir)
{
	char dir[4096];
	struct tern_tokenizer *t = NULL;
	snprintf(dir, sizeof dir, "%s/llama3", tokdir);
	check(!tern_tokenizer_load_dir(&t, dir), "llama3 loads");
	if (t) {
		check(tern_tokenizer_bos(t) == 128000, "llama3 bos = 128000");
		check(tern_tokenizer_eos(t) == 128001, "llama3 eos = 128001");
		check(tern_tokenizer_vocab_size(t) == 128256, "llama3 vocab size = 128256");
		check(tern_tokenizer_token_id(t, "<|eot_id|>") == 128009, "llama3 <|eot_id|> = 128009");
		check(tern_tokenizer_token_id(t, "Hello") == 9906, "llama3 Hello = 9906");
		const char *s = tern_tokenizer_token(t, 9906);
		check(s && !strcmp(s, "Hello"), "llama3 token 9906 = Hello");
		check(tern_tokenizer_is_special(t, 128000) && !tern_tokenizer_is_special(t, 9906),
		      "special flags");
		int32_t *ids = NULL;
		size_t n = 0;
		check(tern_tokenizer_encode(t, "\xff", 1, false, &ids, &n) == TERN_E_INVALID &&
			      strstr(tern_error(), "UTF-8"),
		      "invalid UTF-8 is refused");
		int32_t bad = 999999;
		char *txt = NULL;
		check(tern_tokenizer_decode(t, &bad, 1, false, &txt, NULL) == TERN_E_INVALID,
		      "bad id refused");
		tern_tokenizer_free(t);
	}
	t = NULL;
	snprintf(dir, sizeof dir, "%s/llama2", tokdir);
	if (!tern_tokenizer_load_dir(&t, dir)) {
		check(tern_tokenizer_bos(t) == 1 && tern_tokenizer_eos(t) == 2, "llama2 bos 1, eos 2");
		tern_tokenizer_free(t);
	} else {
		check(false, "llama2 loads");
	}
	t = NULL;
	snprintf(dir, sizeof dir, "%s/qwen3", tokdir);
	if (!tern_tokenizer_load_dir(&t, dir)) {
		check(tern_tokenizer_bos(t) == -1 && tern_tokenizer_eos(t) == 151645,
		      "qwen3 no bos, eos 151645");
		tern_tokenizer_free(t);
	} else {
		check(false, "qwen3 loads");
	}

	/* Unsupported components are named. */
	t = load_text("{\"model\": {\"type\": \"WordPiece\", \"vocab\": {}}}");
	check(!t && strstr(tern_error(), "WordPiece"), "unsupported model named");
	t = load_text("{\"normalizer\": {\"type\": \"BertNormalizer\"}, \"model\": {\"vocab\": {}}}");
	check(!t && strstr(tern_error(), "BertNormalizer"), "unsupported normalizer named");
	t = load_text("{\"pre_tokenizer\": {\"type\": \"Whitespace\"}, \"model\": {\"vocab\": {}}}");
	check(!t && strstr(tern_error(), "Whitespace"), "unsupported pre_tokenizer named");
	t = load_text("{\"decoder\": {\"type\": \"WordPiece\"}, \"model\": {\"vocab\": {}}}");
	check(!t && strstr(tern_error(), "WordPiece"), "unsupported decoder named");
	t = load_text("{\"model\": {\"vocab\": {\"a\": 0}, \"merges\": [\"a b\"]}}");
	check(!t && strstr(tern_error(), "merges[0]"), "merge with unknown token refused");
	t = load_text("{\"model\": {\"vocab\": {\"a\": 0}}");
	check(!t && strstr(tern_error(), "test.json:"), "truncated JSON refused");

	/* A tiny byte-level tokenizer with a single_word / lstrip / rstrip added token. */
	t = load_text("{\"added_tokens\": [{\"id\": 3, \"content\": \"<x>\", \"single_word\": true, "
		      "\"lstrip\": true, \"rstrip\": true, \"normalized\": false, \"special\": true}],"
		      "\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \" \": 4},"
		      "\"merges\": [[\"a\", \"b\"]]}}");
	check(t != NULL, "tiny tokenizer loads");
	if (t) {
		int32_t *ids = NULL;
		size_t n = 0;
		check(!tern_tokenizer_encode(t, "ab <x> ab", 9, false, &ids, &n) && n == 3 && ids[0] == 2 &&
			      ids[1] == 3 && ids[2] == 2,
		      "lstrip/rstrip absorb spaces around <x>");
		free(ids);
		check(!tern_tokenizer_encode(t, "a<x>b", 5, false, &ids, &n) && n == 1 && ids[0] == 2,
		      "single_word refuses a<x>b (unknown chars dropped, a+b merged)");
		free(ids);
		tern_tokenizer_free(t);
	}

	/* Metaspace as tokenizers 0.23 does (ids from tokenizers.Tokenizer for the same JSON): no
	 * second \u2581 before a piece that starts with a space; prepend_scheme "first" only at the
	 * start of the text, not after an added token (Mistral v3: "[INST] What", "[/INST]It"). */
	static const struct {
		const char *scheme, *text;
		int32_t want[3];
		size_t n;
	} ms[] = {
		{"first", "a", {2}, 1},           {"first", " a", {2}, 1},
		{"first", "<x>a", {3, 1}, 2},     {"first", "<x> a", {3, 2}, 2},
		{"first", "a<x>a", {2, 3, 1}, 3}, {"always", " a", {2}, 1},
		{"always", "<x>a", {3, 2}, 2},    {"always", "a<x>a", {2, 3, 2}, 3},
	};
	for (size_t i = 0; i < sizeof ms / sizeof *ms; i++) {
		char json[1024];
		snprintf(json, sizeof json,
			 "{\"added_tokens\": [{\"id\": 3, \"content\": \"<x>\", \"special\": true}], "
			 "\"pre_tokenizer\": {\"type\": \"Metaspace\", \"replacement\": \"\\u2581\", "
			 "\"prepend_scheme\": \"%s\", \"split\": false}, \"model\": {\"type\": \"BPE\", "
			 "\"vocab\": {\"\\u2581\": 0, \"a\": 1, \"\\u2581a\": 2, \"<x>\": 3}, \"merges\": "
			 "[[\"\\u2581\", \"a\"]]}}",
			 ms[i].scheme);
		t = load_text(json);
		int32_t *ids = NULL;
		size_t n = 0;
		bool ok = t && !tern_tokenizer_encode(t, ms[i].text, strlen(ms[i].text), false, &ids, &n) &&
			  n == ms[i].n && !memcmp(ids, ms[i].want, n * sizeof *ids);
		char what[128];
		snprintf(what, sizeof what, "Metaspace prepend_scheme %s: '%s'", ms[i].scheme, ms[i].text);
		check(ok, what);
		free(ids);
		tern_tokenizer_free(t);
	}
}

int main(void)
{
	const char *data = getenv("TERN_TEST_DATA"), *tokdir = getenv("TERN_TOKENIZERS");
	if (!data || !tokdir) {
		printf("TERN_TEST_DATA and TERN_TOKENIZERS must be set (ctest sets them)\n");
		return 1;
	}
	char path[4096];
	snprintf(path, sizeof path, "%s/tokenizer_strings.jsonl", data);
	size_t n = 0;
	json_t *texts = read_jsonl(path, &n);
	if (!texts || n < 300) {
		printf("%s: %zu strings, expected at least 300\n", path, n);
		return 1;
	}
	static const char *const names[] = {"llama2", "llama3", "qwen3"};
	for (int i = 0; i < 3; i++)
		parity(names[i], tokdir, data, texts);
	json_decref(texts);
	api_checks(tokdir);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
