/* tern tokenize: encode text with a model directory's tokenizer.json and print the ids as a JSON
 * array; --decode goes back; --jsonl encodes a file of {"text": ...} lines; --bench measures the
 * encode speed on one core. */
#define _POSIX_C_SOURCE 200809L /* getline, clock_gettime */
#include "cli.h"
#include "tern/tokenizer.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct tokenize_args {
	const char *model, *text, *jsonl, *decode, *bench;
	bool special, skip_special;
	double seconds;
};

/* For the help text only: tokenize parses its own arguments (it takes a positional text). */
static const struct tern_cli_opt tokenize_opts[] = {
	{"--model", "DIR", TERN_CLI_CHOICE,
	 .help = "model directory with tokenizer.json (+ tokenizer_config.json)"},
	{"--special", "", TERN_CLI_CHOICE,
	 .help = "add BOS/EOS as the post-processor and tokenizer_config say"},
	{"--decode", "IDS", TERN_CLI_CHOICE,
	 .help = "decode a JSON array of ids, e.g. '[9906, 1917]', and print the text"},
	{"--skip-special", "", TERN_CLI_CHOICE, .help = "with --decode: leave special tokens out"},
	{"--jsonl", "FILE", TERN_CLI_CHOICE,
	 .help = "encode each {\"text\": ...} line of FILE ('-' = stdin);\none JSON array per line"},
	{"--bench", "FILE", TERN_CLI_CHOICE,
	 .help = "encode every line of the text FILE repeatedly on one core\nand print MB/s"},
	{"--seconds", "S", TERN_CLI_NUM, .help = "with --bench: run at least S seconds (default 3)"},
	{NULL, NULL, TERN_CLI_INT, .help = NULL},
};

void tern_help_tokenize(void)
{
	printf("usage: tern tokenize --model DIR [--special] TEXT\n"
	       "       tern tokenize --model DIR --decode '[ids]' [--skip-special]\n"
	       "       tern tokenize --model DIR [--special] --jsonl FILE\n"
	       "       tern tokenize --model DIR --bench FILE [--seconds S]\n"
	       "\n"
	       "Encodes TEXT with DIR/tokenizer.json (byte-level or sentencepiece-style BPE, as Hugging Face\n"
	       "tokenizers does) and prints the ids as a JSON array. Special tokens written in the text\n"
	       "(<|im_start|>, <s>, ...) are always recognised; --special also adds BOS/EOS.\n"
	       "\n"
	       "options:\n");
	tern_cli_print_opts(tokenize_opts);
}

static void print_ids(const int32_t *ids, size_t n)
{
	putchar('[');
	for (size_t i = 0; i < n; i++)
		printf(i ? ", %d" : "%d", ids[i]);
	puts("]");
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int do_decode(const struct tern_tokenizer *tok, const char *arg, bool skip)
{
	json_error_t err;
	json_t *arr = json_loads(arg, JSON_DECODE_ANY, &err);
	int rc = TERN_EXIT_OK;
	int32_t *ids = NULL;
	char *text = NULL;
	size_t len = 0;
	if (!json_is_array(arr)) {
		rc = tern_cli_usage("tokenize: --decode needs a JSON array of ids, e.g. '[9906, 1917]'");
		goto out;
	}
	size_t n = json_array_size(arr);
	ids = malloc((n ? n : 1) * sizeof *ids);
	if (!ids) {
		rc = tern_cli_usage("tokenize: out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *v = json_array_get(arr, i);
		if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
			rc = tern_cli_usage("tokenize: --decode: element %zu is not a token id", i);
			goto out;
		}
		ids[i] = (int32_t)json_integer_value(v);
	}
	enum tern_status st = tern_tokenizer_decode(tok, ids, n, skip, &text, &len);
	if (st) {
		rc = tern_cli_fail(st);
		goto out;
	}
	fwrite(text, 1, len, stdout);
	putchar('\n');
out:
	json_decref(arr);
	free(ids);
	free(text);
	return rc;
}

static int do_jsonl(const struct tern_tokenizer *tok, const char *path, bool special)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
	if (!f) {
		fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
		return TERN_EXIT_FAIL;
	}
	int rc = TERN_EXIT_OK;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	for (long lineno = 1; (len = getline(&line, &cap, f)) > 0; lineno++) {
		if (strspn(line, " \t\r\n") == (size_t)len)
			continue; /* blank line */
		json_error_t err;
		json_t *o = json_loadb(line, (size_t)len, JSON_ALLOW_NUL, &err);
		json_t *t = json_object_get(o, "text");
		if (!o || !json_is_string(t)) {
			fprintf(stderr, "tern: %s:%ld: %s\n", path, lineno,
				!o ? err.text : "expected an object with a string \"text\"");
			json_decref(o);
			rc = TERN_EXIT_FAIL;
			break;
		}
		int32_t *ids = NULL;
		size_t n = 0;
		enum tern_status st = tern_tokenizer_encode(tok, json_string_value(t), json_string_length(t),
							    special, &ids, &n);
		json_decref(o);
		if (st) {
			fprintf(stderr, "tern: %s:%ld: %s\n", path, lineno, tern_error());
			rc = TERN_EXIT_FAIL;
			break;
		}
		print_ids(ids, n);
		free(ids);
	}
	if (rc == TERN_EXIT_OK && ferror(f)) {
		fprintf(stderr, "tern: %s: read error\n", path);
		rc = TERN_EXIT_FAIL;
	}
	free(line);
	if (f != stdin)
		fclose(f);
	return rc;
}

/* Encodes every line of FILE, first once (cold word cache), then again and again until the time is
 * up, and prints both rates. One thread. */
static int do_bench(const struct tern_tokenizer *tok, const char *model, const char *path, double seconds)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "tern: %s: %s\n", path, strerror(errno));
		return TERN_EXIT_FAIL;
	}
	char **lines = NULL;
	size_t *lens = NULL, nlines = 0, bytes = 0;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = TERN_EXIT_OK;
	while ((len = getline(&line, &cap, f)) > 0) {
		char **nl = realloc(lines, (nlines + 1) * sizeof *nl);
		size_t *nz = realloc(lens, (nlines + 1) * sizeof *nz);
		if (nl)
			lines = nl;
		if (nz)
			lens = nz;
		if (!nl || !nz || !(lines[nlines] = malloc((size_t)len))) {
			rc = tern_cli_usage("tokenize: out of memory");
			goto out;
		}
		memcpy(lines[nlines], line, (size_t)len);
		lens[nlines++] = (size_t)len;
		bytes += (size_t)len;
	}
	if (!bytes) {
		rc = tern_cli_usage("tokenize: --bench: %s is empty", path);
		goto out;
	}
	double cold = 0, warm = 0;
	size_t tokens = 0, passes = 0;
	double t0 = now();
	while (passes < 2 || now() - t0 < seconds) {
		double ts = now();
		for (size_t i = 0; i < nlines; i++) {
			int32_t *ids = NULL;
			size_t n = 0;
			enum tern_status st = tern_tokenizer_encode(tok, lines[i], lens[i], false, &ids, &n);
			if (st) {
				fprintf(stderr, "tern: %s:%zu: %s\n", path, i + 1, tern_error());
				rc = TERN_EXIT_FAIL;
				goto out;
			}
			free(ids);
			if (!passes)
				tokens += n;
		}
		double dt = now() - ts;
		if (!passes)
			cold = dt;
		else
			warm += dt;
		passes++;
	}
	double mb = (double)bytes / 1e6;
	printf("tokenize bench: %s on %s (%.2f MB, %zu lines, %zu tokens, 1 thread)\n", model, path, mb,
	       nlines, tokens);
	printf("  first pass (cold word cache) %8.2f MB/s  %8.3f M tokens/s\n", mb / cold,
	       (double)tokens / cold / 1e6);
	printf("  %3zu more passes (warm)       %8.2f MB/s  %8.3f M tokens/s\n", passes - 1,
	       mb * (double)(passes - 1) / warm, (double)tokens * (double)(passes - 1) / warm / 1e6);
out:
	for (size_t i = 0; i < nlines; i++)
		free(lines[i]);
	free(lines);
	free(lens);
	free(line);
	fclose(f);
	return rc;
}

static int need_value(int argc, char **argv, int *i, const char **dst)
{
	const char *a = argv[*i], *eq = strchr(a, '=');
	if (eq) {
		*dst = eq + 1;
		return TERN_EXIT_OK;
	}
	if (*i + 1 >= argc)
		return tern_cli_usage("tokenize: %s needs a value", a);
	*dst = argv[++*i];
	return TERN_EXIT_OK;
}

static bool is_opt(const char *a, const char *name)
{
	size_t n = strlen(name);
	return !strncmp(a, name, n) && (a[n] == 0 || a[n] == '=');
}

int tern_cmd_tokenize(int argc, char **argv)
{
	struct tokenize_args args = {.seconds = 3};
	int rc = TERN_EXIT_OK;
	for (int i = 0; i < argc && !rc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			tern_help_tokenize();
			return TERN_EXIT_OK;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			tern_cli_verbose++;
		} else if (!strcmp(a, "--special")) {
			args.special = true;
		} else if (!strcmp(a, "--skip-special")) {
			args.skip_special = true;
		} else if (is_opt(a, "--model")) {
			rc = need_value(argc, argv, &i, &args.model);
		} else if (is_opt(a, "--decode")) {
			rc = need_value(argc, argv, &i, &args.decode);
		} else if (is_opt(a, "--jsonl")) {
			rc = need_value(argc, argv, &i, &args.jsonl);
		} else if (is_opt(a, "--bench")) {
			rc = need_value(argc, argv, &i, &args.bench);
		} else if (is_opt(a, "--seconds")) {
			const char *v = NULL;
			char *end;
			if (!(rc = need_value(argc, argv, &i, &v))) {
				args.seconds = strtod(v, &end);
				if (!*v || *end || !(args.seconds >= 0 && args.seconds <= 3600))
					rc = tern_cli_usage(
						"tokenize: --seconds: bad value '%s' (allowed: a number "
						"from 0 to 3600)",
						v);
			}
		} else if (a[0] == '-' && a[1] == '-' && strcmp(a, "--")) {
			rc = tern_cli_usage(
				"tokenize: unknown option '%s' (allowed: --model, --special, --decode, "
				"--skip-special, --jsonl, --bench, --seconds, -v, --help)",
				a);
		} else {
			if (!strcmp(a, "--") && i + 1 < argc)
				a = argv[++i];
			if (args.text)
				rc = tern_cli_usage(
					"tokenize: more than one text (quote it: tern tokenize --model DIR "
					"\"some text\")");
			args.text = a;
		}
	}
	if (rc)
		return rc;
	tern_cli_set_log();
	if (!args.model)
		return tern_cli_usage("tokenize: --model DIR is required");
	int modes = !!args.text + !!args.decode + !!args.jsonl + !!args.bench;
	if (modes != 1)
		return tern_cli_usage(
			"tokenize: give exactly one of TEXT, --decode IDS, --jsonl FILE, --bench FILE");
	struct tern_tokenizer *tok = NULL;
	enum tern_status st = tern_tokenizer_load_dir(&tok, args.model);
	if (st)
		return tern_cli_fail(st);
	if (args.decode) {
		rc = do_decode(tok, args.decode, args.skip_special);
	} else if (args.jsonl) {
		rc = do_jsonl(tok, args.jsonl, args.special);
	} else if (args.bench) {
		rc = do_bench(tok, args.model, args.bench, args.seconds);
	} else {
		int32_t *ids = NULL;
		size_t n = 0;
		st = tern_tokenizer_encode(tok, args.text, strlen(args.text), args.special, &ids, &n);
		if (st)
			rc = tern_cli_fail(st);
		else
			print_ids(ids, n);
		free(ids);
	}
	tern_tokenizer_free(tok);
	return rc;
}
