/* The data module: JSONL datasets -> rows of tokens, shifted targets, positions and segments.
 *
 * - Parity: the ids of chats rendered with ChatML (Qwen3's tokenizer and template), Llama 3 and
 *   Mistral v1, of alpaca records and of raw text equal those that tools/data_ref.py recorded with
 *   transformers' apply_chat_template and HF tokenizers (tests/data/datasets/ref/), and exactly the
 *   tokens listed there are trained.
 * - The exact strings of ecosystem.md, built here from literals, for alpaca and each chat template.
 * - Row invariants on every load: targets = labels shifted by one inside each sample, -100 at each
 *   sample's last token and on padding; positions restart per sample; segments unique per sample,
 *   -1 on padding; stats agree with the rows.
 * - Packing, truncation, validation split, seeds, tok == NULL, and the one-line
 *   error of every bad input.
 *
 * Environment: TERN_TEST_DATA (tests/data), TERN_TOKENIZERS (the build's unpacked tokenizers). */
#define _POSIX_C_SOURCE 200809L /* getline */
#include "data/data.h"
#include "data/chat.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed;
static const char *data_dir, *tok_dir;

static void check(bool ok, const char *what)
{
	if (ok) {
		passed++;
	} else {
		failed++;
		printf("FAIL: %s\n", what);
	}
}

static void checkf(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void checkf(bool ok, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	check(ok, buf);
}

static struct tern_tokenizer *load_tok(const char *name)
{
	char dir[4096];
	snprintf(dir, sizeof dir, "%s/%s", tok_dir, name);
	struct tern_tokenizer *tok = NULL;
	if (tern_tokenizer_load_dir(&tok, dir) != TERN_OK)
		printf("cannot load tokenizer %s: %s\n", dir, tern_error());
	return tok;
}

/* ---- loading one dataset ---- */

struct load {
	char path[4096];
	char config[4096]; /* tokenizer_config.json, "" = none */
	struct tern_dataset_cfg ds;
	struct tern_data_opts o;
};

/* Defaults: no packing, train_on_inputs false, S = 512, no validation, seed 1. */
static void load_init(struct load *l, const char *rel, enum tern_ds_type type)
{
	memset(l, 0, sizeof *l);
	if (rel[0] == '/')
		snprintf(l->path, sizeof l->path, "%s", rel);
	else
		snprintf(l->path, sizeof l->path, "%s/datasets/%s", data_dir, rel);
	l->ds.path = l->path;
	l->ds.type = type;
	l->o.datasets = &l->ds;
	l->o.n_datasets = 1;
	l->o.sequence_len = 512;
	l->o.seed = 1;
	l->o.chat_template = TERN_TEMPLATE_CHATML;
}

static struct tern_data *load_run(struct load *l, const struct tern_tokenizer *tok)
{
	l->o.tokenizer_config = l->config[0] ? l->config : NULL;
	struct tern_data *d = NULL;
	if (tern_data_load(&d, &l->o, tok) != TERN_OK) {
		printf("  load %s: %s\n", l->path, tern_error());
		return NULL;
	}
	return d;
}

/* ---- rows back into samples ---- */

struct got {
	int64_t row, start, n;
	int32_t seg;
};

/* Every sample of rows (maximal runs of one segment), and checks the row invariants against the
 * stats: positions 0..n-1 per sample, targets[t] == -100 or the next token of the same sample,
 * -100 at the last token, padding = pad/-100/0/-1 and only after the samples of a row, segment ids
 * appearing in one run only. */
static struct got *samples_of(const struct tern_rows *r, const struct tern_data_stats *st, int32_t pad,
			      int64_t *n_out, const char *what)
{
	int64_t S = r->S, n = 0;
	struct got *g = calloc((size_t)(r->n_rows * S + 1), sizeof *g);
	bool pos_ok = true, tgt_ok = true, pad_ok = true, seg_ok = true;
	int64_t tokens = 0, trained = 0, padding = 0;
	for (int64_t row = 0; row < r->n_rows; row++) {
		bool in_pad = false;
		for (int64_t t = 0; t < S; t++) {
			int64_t c = row * S + t;
			int32_t seg = r->segments[c];
			if (seg < 0) {
				in_pad = true;
				padding++;
				pad_ok &= seg == -1 && r->tokens[c] == pad && r->targets[c] == -100 &&
					  r->positions[c] == 0;
				continue;
			}
			pad_ok &= !in_pad; /* next-fit packing leaves padding at the end of a row only */
			tokens++;
			if (t == 0 || r->segments[c - 1] != seg) {
				for (int64_t k = 0; k < n; k++)
					seg_ok &= g[k].seg != seg;
				g[n++] = (struct got){row, t, 0, seg};
			}
			struct got *s = &g[n - 1];
			pos_ok &= r->positions[c] == (int32_t)s->n;
			s->n++;
			bool last = t + 1 == S || r->segments[c + 1] != seg;
			if (last)
				tgt_ok &= r->targets[c] == -100;
			else
				tgt_ok &= r->targets[c] == -100 || r->targets[c] == r->tokens[c + 1];
			trained += r->targets[c] != -100;
		}
	}
	checkf(pos_ok, "%s: positions restart at 0 in every sample", what);
	checkf(tgt_ok, "%s: targets are the next token of the same sample or -100, -100 at its end", what);
	checkf(pad_ok, "%s: padding is pad id / -100 / position 0 / segment -1, at row ends only", what);
	checkf(seg_ok, "%s: each segment id names one sample", what);
	checkf(st->samples == n && st->tokens == tokens && st->trained == trained && st->padding == padding &&
		       st->rows == r->n_rows,
	       "%s: stats agree with the rows (samples %lld/%lld tokens %lld/%lld trained %lld/%lld padding "
	       "%lld/%lld)",
	       what, (long long)st->samples, (long long)n, (long long)st->tokens, (long long)tokens,
	       (long long)st->trained, (long long)trained, (long long)st->padding, (long long)padding);
	*n_out = n;
	return g;
}

static const int32_t *tokens_of(const struct tern_rows *r, const struct got *g)
{
	return r->tokens + g->row * r->S + g->start;
}

static bool ids_eq(const int32_t *a, int64_t n, const json_t *ref)
{
	if ((size_t)n != json_array_size(ref))
		return false;
	for (int64_t i = 0; i < n; i++)
		if (a[i] != (int32_t)json_integer_value(json_array_get(ref, (size_t)i)))
			return false;
	return true;
}

static json_t *read_jsonl(const char *path)
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
		json_t *v = json_loadb(line, (size_t)len, 0, &err);
		if (v)
			json_array_append_new(arr, v);
		else
			printf("%s: bad line: %s\n", path, err.text);
	}
	free(line);
	fclose(f);
	return arr;
}

/* Decodes each maximal run of trained tokens of one sample (labels[t] = targets[t - 1]). */
static json_t *trained_runs(const struct tern_tokenizer *tok, const struct tern_rows *r, const struct got *g)
{
	json_t *runs = json_array();
	const int32_t *ids = tokens_of(r, g), *tg = r->targets + g->row * r->S + g->start;
	for (int64_t t = 1; t < g->n;) {
		if (tg[t - 1] == -100) {
			t++;
			continue;
		}
		int64_t a = t;
		while (t < g->n && tg[t - 1] != -100)
			t++;
		char *text = NULL;
		if (tern_tokenizer_decode(tok, ids + a, (size_t)(t - a), false, &text, NULL) == TERN_OK)
			json_array_append_new(runs, json_string(text));
		free(text);
	}
	return runs;
}

/* ---- parity with tools/data_ref.py ---- */

/* Loads datasets/ref/<input> and compares every sample with ref/<refname>: ids equal, and with
 * train_on_inputs false exactly the "trained" texts (chats) or the tokens after "n_prompt"
 * (alpaca) or all tokens (completion) are trained; with train_on_inputs true every token is. */
static void parity(const struct tern_tokenizer *tok, const char *input, enum tern_ds_type type,
		   enum tern_chat_template tmpl, const char *config, enum tern_chat_template resolved,
		   const char *refname)
{
	char path[4096], rel[512];
	snprintf(path, sizeof path, "%s/datasets/ref/%s", data_dir, refname);
	json_t *ref = read_jsonl(path);
	size_t nref = ref ? json_array_size(ref) : 0;
	checkf(nref >= 3, "%s: at least 3 references", refname);
	for (int toi = 0; toi < 2 && nref; toi++) {
		struct load l;
		snprintf(rel, sizeof rel, "ref/%s", input);
		load_init(&l, rel, type);
		l.o.chat_template = tmpl;
		l.o.train_on_inputs = toi;
		if (config)
			snprintf(l.config, sizeof l.config, "%s/%s", tok_dir, config);
		struct tern_data *d = load_run(&l, tok);
		checkf(d != NULL, "%s: loads (train_on_inputs %d)", input, toi);
		if (!d)
			continue;
		int64_t ng = 0;
		struct got *g = samples_of(&d->train, &d->train_stats, tern_tokenizer_eos(tok), &ng, refname);
		checkf(ng == (int64_t)nref, "%s: %lld samples, %zu references", refname, (long long)ng, nref);
		int matched = 0;
		for (size_t k = 0; k < nref; k++) {
			json_t *e = json_array_get(ref, k), *ids = json_object_get(e, "ids");
			const struct got *s = NULL;
			for (int64_t i = 0; i < ng && !s; i++)
				if (ids_eq(tokens_of(&d->train, &g[i]), g[i].n, ids))
					s = &g[i];
			if (!s) {
				printf("  %s[%zu]: no sample has HF's ids for %s\n", refname, k,
				       json_string_value(json_object_get(e, "text")));
				continue;
			}
			matched++;
			const int32_t *tg = d->train.targets + s->row * d->train.S + s->start;
			bool ok = true;
			if (toi) {
				for (int64_t t = 0; t + 1 < s->n; t++)
					ok &= tg[t] == tokens_of(&d->train, s)[t + 1];
			} else if (json_object_get(e, "n_prompt")) {
				int64_t np = json_integer_value(json_object_get(e, "n_prompt"));
				for (int64_t t = 1; t < s->n; t++)
					ok &= (tg[t - 1] != -100) == (t >= np);
			} else if (json_object_get(e, "trained")) {
				json_t *runs = trained_runs(tok, &d->train, s);
				ok = json_equal(runs, json_object_get(e, "trained"));
				if (!ok) {
					char *a = json_dumps(runs, 0),
					     *b = json_dumps(json_object_get(e, "trained"), 0);
					printf("  trained %s\n  want    %s\n", a, b);
					free(a);
					free(b);
				}
				json_decref(runs);
			} else {
				for (int64_t t = 0; t + 1 < s->n; t++)
					ok &= tg[t] != -100;
			}
			checkf(ok, "%s[%zu]: trained tokens (train_on_inputs %d)", refname, k, toi);
		}
		checkf(matched == (int)nref, "%s: every sample has HF's ids exactly (%d of %zu)", refname,
		       matched, nref);
		if (type == TERN_DS_CHAT)
			checkf(d->template == resolved, "%s: template %s", refname,
			       tern_chat_template_name(resolved));
		free(g);
		tern_data_free(d);
	}
	json_decref(ref);
}

/* ---- exact strings of ecosystem.md ---- */

/* Writes text to a new temporary file; path receives its name. */
static void temp_file(char path[64], const char *text)
{
	snprintf(path, 64, "/tmp/tern_test_data_XXXXXX");
	int fd = mkstemp(path);
	FILE *f = fd >= 0 ? fdopen(fd, "wb") : NULL;
	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

/* The single sample of a one-line dataset equals encode(want, add_special = bos) [+ eos]. */
static void exact(const struct tern_tokenizer *tok, const char *line, enum tern_ds_type type,
		  enum tern_chat_template tmpl, const char *want, bool bos, bool eos, const char *what)
{
	char path[64];
	temp_file(path, line);
	struct load l;
	load_init(&l, path, type);
	l.o.chat_template = tmpl;
	struct tern_data *d = load_run(&l, tok);
	remove(path);
	int32_t *ids = NULL;
	size_t n = 0;
	tern_tokenizer_encode(tok, want, strlen(want), bos, &ids, &n);
	bool ok = d && d->train.n_rows == 1 && d->train_stats.tokens == (int64_t)n + eos;
	for (size_t i = 0; ok && i < n; i++)
		ok = d->train.tokens[i] == ids[i];
	if (ok && eos)
		ok = d->train.tokens[n] == tern_tokenizer_eos(tok);
	checkf(ok, "%s: the exact string of ecosystem.md", what);
	free(ids);
	tern_data_free(d);
}

static const char *alpaca_in =
	"Below is an instruction that describes a task, paired with an input that provides "
	"further context. Write a response that appropriately completes the request.\n\n"
	"### Instruction:\nAdd the numbers.\n\n### Input:\n2 and 3\n\n### Response:\n5";
static const char *alpaca_no =
	"Below is an instruction that describes a task. Write a response that "
	"appropriately completes the request.\n\n### Instruction:\nSay hi.\n\n### Response:\nHi!";

static const char *chat_line =
	"{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": "
	"\"user\", \"content\": \"Hi?\"}, {\"role\": \"assistant\", \"content\": \"Hello.\"}]}";
static const char *sharegpt_line =
	"{\"conversations\": [{\"from\": \"human\", \"value\": \"2+2?\"}, {\"from\": "
	"\"gpt\", \"value\": \"4\"}, {\"from\": \"human\", \"value\": \"3+3?\"}, "
	"{\"from\": \"gpt\", \"value\": \"6\"}]}";

static void exact_strings(const struct tern_tokenizer *l2, const struct tern_tokenizer *l3,
			  const struct tern_tokenizer *q3)
{
	const struct tern_tokenizer *all[] = {l2, l3, q3};
	for (int i = 0; i < 3; i++) {
		exact(all[i],
		      "{\"instruction\": \"Add the numbers.\", \"input\": \"2 and 3\", \"output\": \"5\"}\n",
		      TERN_DS_ALPACA, TERN_TEMPLATE_CHATML, alpaca_in, true, true, "alpaca with input");
		exact(all[i], "{\"instruction\": \"Say hi.\", \"input\": \"\", \"output\": \"Hi!\"}\n",
		      TERN_DS_ALPACA, TERN_TEMPLATE_CHATML, alpaca_no, true, true,
		      "alpaca with an empty input");
		exact(all[i], "{\"instruction\": \"Say hi.\", \"output\": \"Hi!\"}\n", TERN_DS_ALPACA,
		      TERN_TEMPLATE_CHATML, alpaca_no, true, true, "alpaca without input");
		exact(all[i], "{\"text\": \"One two three.\"}\n", TERN_DS_COMPLETION, TERN_TEMPLATE_CHATML,
		      "One two three.", true, true, "completion");
	}
	exact(q3, chat_line, TERN_DS_CHAT, TERN_TEMPLATE_CHATML,
	      "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
	      "Hello.<|im_end|>\n",
	      false, false, "chatml messages");
	exact(q3, sharegpt_line, TERN_DS_CHAT, TERN_TEMPLATE_CHATML,
	      "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n4<|im_end|>\n<|im_start|>user\n3+3?<|im_end|>"
	      "\n<|im_start|>assistant\n6<|im_end|>\n",
	      false, false, "chatml sharegpt");
	exact(l3, chat_line, TERN_DS_CHAT, TERN_TEMPLATE_LLAMA3,
	      "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>"
	      "user<|end_header_id|>\n\nHi?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>",
	      false, false, "llama3 messages");
	exact(l3, sharegpt_line, TERN_DS_CHAT, TERN_TEMPLATE_LLAMA3,
	      "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n2+2?<|eot_id|><|start_header_id|>"
	      "assistant<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n3+3?<|eot_id|>"
	      "<|start_header_id|>assistant<|end_header_id|>\n\n6<|eot_id|>",
	      false, false, "llama3 sharegpt");
	exact(l2, chat_line, TERN_DS_CHAT, TERN_TEMPLATE_MISTRAL_V1,
	      "<s> [INST] Be brief.\n\nHi? [/INST] Hello.</s>", false, false, "mistral_v1 messages");
	exact(l2, sharegpt_line, TERN_DS_CHAT, TERN_TEMPLATE_MISTRAL_V1,
	      "<s> [INST] 2+2? [/INST] 4</s> [INST] 3+3? [/INST] 6</s>", false, false, "mistral_v1 sharegpt");
}

/* A token that straddles a prompt/response boundary belongs to the part it ends in: Qwen's
 * pre-tokenizer joins "assistant\n" + "\nParis." into "\n\n", which is trained. */
static void straddle(const struct tern_tokenizer *q3)
{
	char path[64];
	temp_file(
		path,
		"{\"messages\": [{\"role\": \"user\", \"content\": \"Capital?\"}, {\"role\": \"assistant\", "
		"\"content\": \"\\nParis.\"}]}\n");
	struct load l;
	load_init(&l, path, TERN_DS_CHAT);
	struct tern_data *d = load_run(&l, q3);
	remove(path);
	if (!d) {
		check(false, "straddle: loads");
		return;
	}
	const char *text =
		"<|im_start|>user\nCapital?<|im_end|>\n<|im_start|>assistant\n\nParis.<|im_end|>\n";
	int32_t *ids = NULL;
	size_t n = 0;
	tern_tokenizer_encode(q3, text, strlen(text), false, &ids, &n);
	int64_t ng = 0;
	struct got *g = samples_of(&d->train, &d->train_stats, tern_tokenizer_eos(q3), &ng, "straddle");
	bool same = ng == 1 && g[0].n == (int64_t)n && !memcmp(tokens_of(&d->train, g), ids, n * sizeof *ids);
	check(same, "straddle: the rendered chat is tokenized as one text");
	json_t *runs = same ? trained_runs(q3, &d->train, g) : NULL;
	json_t *want = json_pack("[s]", "\n\nParis.<|im_end|>");
	check(runs && json_equal(runs, want), "straddle: the boundary token \\n\\n is trained");
	json_decref(runs);
	json_decref(want);
	free(ids);
	free(g);
	tern_data_free(d);
}

/* ---- packing, truncation, split, seeds ---- */

static bool same_sample(const struct tern_rows *a, const struct got *ga, const struct tern_rows *b,
			const struct got *gb)
{
	return ga->n == gb->n &&
	       !memcmp(tokens_of(a, ga), tokens_of(b, gb), (size_t)ga->n * sizeof(int32_t)) &&
	       !memcmp(a->targets + ga->row * a->S + ga->start, b->targets + gb->row * b->S + gb->start,
		       (size_t)ga->n * sizeof(int32_t));
}

/* Each sample of a appears in b exactly once (same tokens and targets), and the counts agree. */
static bool same_samples(const struct tern_rows *a, const struct got *ga, int64_t na,
			 const struct tern_rows *b, const struct got *gb, int64_t nb)
{
	if (na != nb)
		return false;
	bool *used = calloc((size_t)nb + 1, 1);
	bool ok = true;
	for (int64_t i = 0; i < na && ok; i++) {
		bool found = false;
		for (int64_t j = 0; j < nb && !found; j++)
			if (!used[j] && same_sample(a, &ga[i], b, &gb[j]))
				found = used[j] = true;
		ok = found;
	}
	free(used);
	return ok;
}

static void packing(const struct tern_tokenizer *tok)
{
	struct load l;
	load_init(&l, "completion.jsonl", TERN_DS_COMPLETION);
	l.o.sequence_len = 24;
	struct tern_data *one = load_run(&l, tok);
	l.o.sample_packing = true;
	struct tern_data *packed = load_run(&l, tok);
	if (!one || !packed) {
		check(false, "packing: loads");
		return;
	}
	int32_t pad = tern_tokenizer_eos(tok);
	int64_t n1 = 0, n2 = 0;
	struct got *g1 = samples_of(&one->train, &one->train_stats, pad, &n1, "one sample per row");
	struct got *g2 = samples_of(&packed->train, &packed->train_stats, pad, &n2, "packed");
	check(n1 == 10 && one->train.n_rows == 10, "one sample per row: 10 rows for 10 samples");
	checkf(packed->train.n_rows < one->train.n_rows && packed->train.n_rows >= 2,
	       "packing: fewer rows (%lld) than samples", (long long)packed->train.n_rows);
	check(same_samples(&one->train, g1, n1, &packed->train, g2, n2),
	      "packing: every sample appears exactly once, whole, with the same targets");
	/* more than one sample in some row, and positions restart there */
	bool multi = false;
	for (int64_t i = 1; i < n2; i++)
		multi |= g2[i].row == g2[i - 1].row && g2[i].start > 0 &&
			 packed->train.positions[g2[i].row * 24 + g2[i].start] == 0;
	check(multi, "packing: a row holds several samples, positions restarting at each");
	check(one->train_stats.tokens == packed->train_stats.tokens &&
		      one->train_stats.trained == packed->train_stats.trained &&
		      packed->train_stats.padding < one->train_stats.padding,
	      "packing: same tokens and trained tokens, less padding");
	/* next-fit: a row is closed only when the next sample does not fit */
	bool nextfit = true;
	for (int64_t i = 1; i < n2; i++)
		if (g2[i].row != g2[i - 1].row)
			nextfit &= g2[i - 1].start + g2[i - 1].n + g2[i].n > 24;
	check(nextfit, "packing: next-fit (a new row only when the next sample does not fit)");
	free(g1);
	free(g2);
	tern_data_free(one);
	tern_data_free(packed);
}

static void truncation(const struct tern_tokenizer *tok)
{
	struct load l;
	load_init(&l, "long.jsonl", TERN_DS_COMPLETION);
	l.o.sequence_len = 16;
	for (int pack = 0; pack < 2; pack++) {
		l.o.sample_packing = pack;
		struct tern_data *d = load_run(&l, tok);
		if (!d) {
			check(false, "truncation: loads");
			continue;
		}
		int64_t ng = 0;
		struct got *g =
			samples_of(&d->train, &d->train_stats, tern_tokenizer_eos(tok), &ng, "truncation");
		const char *tiny = "Tiny.";
		int32_t *ids = NULL;
		size_t n = 0;
		tern_tokenizer_encode(tok, tiny, strlen(tiny), true, &ids, &n);
		int64_t longest = 0;
		for (int64_t i = 0; i < ng; i++)
			longest = g[i].n > longest ? g[i].n : longest;
		checkf(d->train_stats.truncated == 1 && longest == 16 &&
			       d->train_stats.tokens == 16 + (int64_t)n + 1,
		       "truncation (packing %d): one sample cut to 16 tokens and counted", pack);
		checkf(d->train.n_rows == 2, "truncation (packing %d): the cut sample fills its own row",
		       pack);
		free(ids);
		free(g);
		tern_data_free(d);
	}
}

static void split(const struct tern_tokenizer *tok)
{
	static const struct {
		double v;
		int64_t n_val;
	} cases[] = {{0, 0}, {0.3, 3}, {0.05, 1}, {2, 2}, {9, 9}};
	struct load l;
	load_init(&l, "completion.jsonl", TERN_DS_COMPLETION);
	l.o.sequence_len = 32;
	l.o.sample_packing = false;
	struct tern_data *all = load_run(&l, tok);
	int64_t na = 0;
	struct got *ga =
		all ? samples_of(&all->train, &all->train_stats, tern_tokenizer_eos(tok), &na, "split all")
		    : NULL;
	for (size_t c = 0; c < sizeof cases / sizeof *cases && all; c++) {
		l.o.val_set_size = cases[c].v;
		struct tern_data *d = load_run(&l, tok);
		if (!d) {
			checkf(false, "val_set_size %g: loads", cases[c].v);
			continue;
		}
		int64_t nt = 0, nv = 0;
		struct got *gt =
			samples_of(&d->train, &d->train_stats, tern_tokenizer_eos(tok), &nt, "split train");
		struct got *gv =
			samples_of(&d->val, &d->val_stats, tern_tokenizer_eos(tok), &nv, "split val");
		checkf(nv == cases[c].n_val && nt == 10 - cases[c].n_val,
		       "val_set_size %g: %lld val, %lld train", cases[c].v, (long long)nv, (long long)nt);
		/* train + val = all samples, each once */
		struct tern_rows both = {0};
		both.S = 32;
		both.n_rows = d->train.n_rows + d->val.n_rows;
		size_t cells = (size_t)(both.n_rows * 32);
		both.tokens = malloc(cells * 4 + 4);
		both.targets = malloc(cells * 4 + 4);
		memcpy(both.tokens, d->train.tokens, (size_t)(d->train.n_rows * 32) * 4);
		memcpy(both.tokens + d->train.n_rows * 32, d->val.tokens, (size_t)(d->val.n_rows * 32) * 4);
		memcpy(both.targets, d->train.targets, (size_t)(d->train.n_rows * 32) * 4);
		memcpy(both.targets + d->train.n_rows * 32, d->val.targets, (size_t)(d->val.n_rows * 32) * 4);
		struct got *gb = calloc((size_t)(nt + nv + 1), sizeof *gb);
		memcpy(gb, gt, (size_t)nt * sizeof *gb);
		for (int64_t i = 0; i < nv; i++) {
			gb[nt + i] = gv[i];
			gb[nt + i].row += d->train.n_rows;
		}
		checkf(same_samples(&all->train, ga, na, &both, gb, nt + nv),
		       "val_set_size %g: train and val together hold every sample once", cases[c].v);
		free(both.tokens);
		free(both.targets);
		free(gb);
		free(gt);
		free(gv);
		tern_data_free(d);
	}
	l.o.val_set_size = 10;
	struct tern_data *d = NULL;
	enum tern_status st = tern_data_load(&d, &l.o, tok);
	check(st == TERN_E_INVALID && !d &&
		      !strcmp(tern_error(),
			      "val_set_size: 10 leaves no training samples (the datasets hold 10 "
			      "samples); use a fraction below 1 or a smaller count"),
	      "val_set_size 10 of 10: one-line error");
	free(ga);
	tern_data_free(all);
}

static bool rows_equal(const struct tern_rows *a, const struct tern_rows *b)
{
	size_t n = (size_t)(a->n_rows * a->S) * sizeof(int32_t);
	return a->n_rows == b->n_rows && a->S == b->S && !memcmp(a->tokens, b->tokens, n) &&
	       !memcmp(a->targets, b->targets, n) && !memcmp(a->positions, b->positions, n) &&
	       !memcmp(a->segments, b->segments, n);
}

static void seeds(const struct tern_tokenizer *tok)
{
	struct load l;
	load_init(&l, "completion.jsonl", TERN_DS_COMPLETION);
	l.o.sequence_len = 24;
	l.o.sample_packing = true;
	l.o.val_set_size = 0.2;
	l.o.seed = 7;
	struct tern_data *a = load_run(&l, tok), *b = load_run(&l, tok);
	l.o.seed = 8;
	struct tern_data *c = load_run(&l, tok);
	if (a && b && c) {
		check(rows_equal(&a->train, &b->train) && rows_equal(&a->val, &b->val),
		      "seed 7 twice: identical rows");
		check(!rows_equal(&a->train, &c->train), "seed 7 vs 8: a different order");
		int64_t na = 0, nc = 0;
		struct got *ga =
			samples_of(&a->train, &a->train_stats, tern_tokenizer_eos(tok), &na, "seed 7");
		struct got *gc =
			samples_of(&c->train, &c->train_stats, tern_tokenizer_eos(tok), &nc, "seed 8");
		free(ga);
		free(gc);
	} else {
		check(false, "seeds: loads");
	}
	tern_data_free(a);
	tern_data_free(b);
	tern_data_free(c);
}

/* ---- pretokenized, with and without a tokenizer ---- */

static void pretokenized(const struct tern_tokenizer *tok)
{
	for (int with = 0; with < 2; with++) {
		struct load l;
		load_init(&l, "pretok.jsonl", TERN_DS_PRETOKENIZED);
		l.o.sequence_len = 10;
		l.o.sample_packing = true;
		struct tern_data *d = load_run(&l, with ? tok : NULL);
		if (!d) {
			checkf(false, "pretokenized (tokenizer %d): loads", with);
			continue;
		}
		int32_t pad = with ? tern_tokenizer_eos(tok) : 0;
		int64_t ng = 0;
		struct got *g = samples_of(&d->train, &d->train_stats, pad, &ng, "pretokenized");
		static const int32_t want_a[] = {-100, 30, 40, 50, -100}, want_b[] = {8, 9, -100};
		bool ok = ng == 2 && d->train.n_rows == 1;
		for (int64_t i = 0; ok && i < ng; i++) {
			const int32_t *tg = d->train.targets + g[i].start;
			if (tokens_of(&d->train, &g[i])[0] == 10)
				ok = g[i].n == 5 && !memcmp(tg, want_a, sizeof want_a);
			else
				ok = g[i].n == 3 && !memcmp(tg, want_b, sizeof want_b);
		}
		checkf(ok,
		       "pretokenized (tokenizer %d): labels shifted into targets, no labels = all trained",
		       with);
		checkf(d->train.tokens[9] == pad && d->train_stats.padding == 2,
		       "pretokenized (tokenizer %d): pad id %d", with, pad);
		free(g);
		tern_data_free(d);
	}
}

/* ---- datasets[] keys: JSON arrays, split, data_files, field, field_messages, mappings ---- */

/* Lines [a, b) of a test dataset, joined (each with its '\n'); "" when the file is missing. */
static char *lines_of(const char *rel, int a, int b)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/datasets/%s", data_dir, rel);
	FILE *f = fopen(path, "rb");
	char *out = calloc(1, 1 << 16), *line = NULL;
	size_t cap = 0, n = 0;
	for (int i = 0; f && out && getline(&line, &cap, f) >= 0; i++)
		if (i >= a && i < b && n + strlen(line) < (1 << 16) - 1) {
			memcpy(out + n, line, strlen(line) + 1);
			n += strlen(line);
		}
	free(line);
	if (f)
		fclose(f);
	return out;
}

/* Loads text as a one-file dataset of type (ds tweaks applied by the caller through l). */
static struct tern_data *load_text(struct load *l, const struct tern_tokenizer *tok, const char *text,
				   enum tern_ds_type type, const char *suffix)
{
	char path[64], named[80];
	temp_file(path, text);
	snprintf(named, sizeof named, "%s%s", path, suffix);
	rename(path, named);
	struct tern_dataset_cfg keep = l->ds;
	enum tern_chat_template tmpl = l->o.chat_template;
	const char *jinja = l->o.chat_template_jinja;
	load_init(l, named, type);
	if (tmpl == TERN_TEMPLATE_JINJA) { /* a caller's Jinja template stays */
		l->o.chat_template = tmpl;
		l->o.chat_template_jinja = jinja;
	}
	l->ds.split = keep.split;
	l->ds.field = keep.field;
	l->ds.field_messages = keep.field_messages;
	l->ds.role_key = keep.role_key;
	l->ds.content_key = keep.content_key;
	l->o.sequence_len = 64;
	struct tern_data *d = load_run(l, tok);
	remove(named);
	return d;
}

/* A load that must fail with exactly path + tail (one line). */
static void bad_text(const struct tern_tokenizer *tok, const char *text, enum tern_ds_type type,
		     const char *split, const char *tail)
{
	char path[64], named[80];
	temp_file(path, text);
	snprintf(named, sizeof named, "%s.json", path);
	rename(path, named);
	struct load l;
	load_init(&l, named, type);
	l.ds.split = (char *)split;
	struct tern_data *d = NULL;
	enum tern_status st = tern_data_load(&d, &l.o, tok);
	char want[8192];
	const char *at = strstr(tail, "%s"); /* the path inside the message, else in front */
	if (at)
		snprintf(want, sizeof want, "%.*s%s%s", (int)(at - tail), tail, named, at + 2);
	else
		snprintf(want, sizeof want, "%s%s", named, tail);
	bool ok = st != TERN_OK && !d && !strcmp(tern_error(), want) && !strchr(tern_error(), '\n');
	if (!ok)
		printf("  want: %s\n  got:  %s\n", want, st ? tern_error() : "(success)");
	checkf(ok, "bad dataset: %s", tail);
	remove(named);
	tern_data_free(d);
}

static void dataset_keys(const struct tern_tokenizer *tok)
{
	struct load l;
	memset(&l, 0, sizeof l);
	/* a JSON array (pretty-printed over several lines) gives the rows of the same JSONL */
	char *jsonl = lines_of("alpaca.jsonl", 0, 100);
	char arr[1 << 16] = "[\n";
	for (char *p = jsonl, *e; p && *p; p = e + 1) {
		if (!(e = strchr(p, '\n')))
			break;
		if (e > p)
			snprintf(arr + strlen(arr), sizeof arr - strlen(arr), "%s  %.*s", arr[2] ? ",\n" : "",
				 (int)(e - p), p);
	}
	strcat(arr, "\n]\n");
	struct tern_data *a = load_text(&l, tok, jsonl, TERN_DS_ALPACA, ".jsonl");
	struct tern_data *b = load_text(&l, tok, arr, TERN_DS_ALPACA, ".json");
	check(a && b && a->train_stats.samples == 3 && rows_equal(&a->train, &b->train),
	      "a JSON array file gives the rows of the JSONL file");
	tern_data_free(b);
	b = load_text(&l, tok, "[]", TERN_DS_ALPACA, ".json");
	check(!b && strstr(tern_error(), "no samples"), "an empty JSON array: no samples");

	/* split: train[1:3] = lines 2 and 3; train[:50%] of 10 = 5 rows; train[-20%:] = last 2 */
	char *all10 = lines_of("completion.jsonl", 0, 10), *two = lines_of("completion.jsonl", 1, 3);
	char *half = lines_of("completion.jsonl", 0, 5), *last2 = lines_of("completion.jsonl", 8, 10);
	const struct {
		const char *split;
		char **want;
		int64_t n;
	} sl[] = {{"train[1:3]", &two, 2},
		  {"train[:50%]", &half, 5},
		  {"train[-20%:]", &last2, 2},
		  {"train", &all10, 10}};
	for (size_t i = 0; i < sizeof sl / sizeof sl[0]; i++) {
		l.ds.split = (char *)sl[i].split;
		struct tern_data *s = load_text(&l, tok, all10, TERN_DS_COMPLETION, ".jsonl");
		l.ds.split = NULL;
		struct tern_data *w = load_text(&l, tok, *sl[i].want, TERN_DS_COMPLETION, ".jsonl");
		checkf(s && w && s->train_stats.samples == sl[i].n && rows_equal(&s->train, &w->train),
		       "split %s: the rows of exactly those lines", sl[i].split);
		tern_data_free(s);
		tern_data_free(w);
	}
	/* the datasets library's rounding: 25% of 10 = round(2.5) = 2 (halves to even) */
	struct tern_split sp;
	int64_t ra, rb;
	check(tern_split_parse("train[:25%]", &sp) &&
		      (tern_split_rows(&sp, 10, &ra, &rb), ra == 0 && rb == 2),
	      "split train[:25%] of 10 rows: 2 (round half to even)");
	check(tern_split_parse("train[10:-1]", &sp) &&
		      (tern_split_rows(&sp, 5, &ra, &rb), ra == 5 && rb == 5),
	      "split bounds clamp to the rows");
	check(!tern_split_parse("train[1]", &sp) && !tern_split_parse("train[:200%]", &sp) &&
		      !tern_split_parse("train[a:]", &sp) && !tern_split_parse("train[:5", &sp) &&
		      !tern_split_parse("", &sp),
	      "malformed splits are refused");

	/* field: the completion text under another name */
	l.ds.field = "body";
	struct tern_data *f = load_text(&l, tok, "{\"body\": \"One two.\"}\n{\"body\": \"Three.\"}\n",
					TERN_DS_COMPLETION, ".jsonl");
	l.ds.field = NULL;
	struct tern_data *t = load_text(&l, tok, "{\"text\": \"One two.\"}\n{\"text\": \"Three.\"}\n",
					TERN_DS_COMPLETION, ".jsonl");
	check(f && t && rows_equal(&f->train, &t->train), "datasets[].field: the text field renamed");
	tern_data_free(f);
	tern_data_free(t);

	/* field_messages + message_property_mappings: the chat under other names */
	l.ds.field_messages = "turns";
	l.ds.role_key = "speaker";
	l.ds.content_key = "said";
	f = load_text(&l, tok,
		      "{\"turns\": [{\"speaker\": \"user\", \"said\": \"Hi?\"}, {\"speaker\": \"assistant\", "
		      "\"said\": \"Hello.\"}]}\n",
		      TERN_DS_CHAT, ".jsonl");
	l.ds.field_messages = l.ds.role_key = l.ds.content_key = NULL;
	t = load_text(&l, tok,
		      "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi?\"}, {\"role\": \"assistant\", "
		      "\"content\": \"Hello.\"}]}\n",
		      TERN_DS_CHAT, ".jsonl");
	check(f && t && rows_equal(&f->train, &t->train),
	      "field_messages and message_property_mappings: the same rows as messages/role/content");
	tern_data_free(f);
	/* axolotl's FineTome example: field_messages conversations, from/value */
	l.ds.field_messages = "conversations";
	l.ds.role_key = "from";
	l.ds.content_key = "value";
	f = load_text(&l, tok,
		      "{\"conversations\": [{\"from\": \"human\", \"value\": \"Hi?\"}, {\"from\": \"gpt\", "
		      "\"value\": \"Hello.\"}]}\n",
		      TERN_DS_CHAT, ".jsonl");
	l.ds.field_messages = l.ds.role_key = l.ds.content_key = NULL;
	check(f && t && rows_equal(&f->train, &t->train), "conversations with from/value mapped");
	tern_data_free(f);
	/* the same through a Jinja template (chatml written out), which also sees a message's other
	 * fields: the mappings apply before the template renders */
	l.o.chat_template = TERN_TEMPLATE_JINJA;
	l.o.chat_template_jinja = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
				  "{{ m.mood | default('') }}<|im_end|>\n{% endfor %}";
	l.ds.field_messages = "turns";
	l.ds.role_key = "speaker";
	l.ds.content_key = "said";
	f = load_text(&l, tok,
		      "{\"turns\": [{\"speaker\": \"user\", \"said\": \"Hi?\"}, {\"speaker\": \"assistant\", "
		      "\"said\": \"Hello\", \"mood\": \".\"}]}\n",
		      TERN_DS_CHAT, ".jsonl");
	l.ds.field_messages = l.ds.role_key = l.ds.content_key = NULL;
	l.o.chat_template = TERN_TEMPLATE_CHATML;
	l.o.chat_template_jinja = NULL;
	check(f && t && rows_equal(&f->train, &t->train),
	      "field_messages and message_property_mappings through a Jinja template (other fields seen)");
	tern_data_free(f);
	/* tool calling: an assistant turn with tool_calls and content null, then a 'tool' message; the
	 * call is trained, the tool's answer is not; the C-rendered templates refuse a tool message */
	const char *tool_chat =
		"{\"messages\": [{\"role\": \"user\", \"content\": \"Weather?\"}, {\"role\": "
		"\"assistant\", \"content\": null, \"tool_calls\": [{\"name\": \"wx\"}]}, {\"role\": "
		"\"tool\", \"content\": \"sun\"}, {\"role\": \"assistant\", \"content\": \"Sunny.\"}]}\n";
	l.o.chat_template = TERN_TEMPLATE_JINJA;
	l.o.chat_template_jinja = "{% for m in messages %}<|im_start|>{{ m.role }}\n"
				  "{% if m.content is none %}{{ m.tool_calls[0].name }}(){% else %}"
				  "{{ m.content }}{% endif %}<|im_end|>\n{% endfor %}";
	f = load_text(&l, tok, tool_chat, TERN_DS_CHAT, ".jsonl");
	int64_t ng = 0;
	struct got *g =
		f ? samples_of(&f->train, &f->train_stats, tern_tokenizer_eos(tok), &ng, "tool") : NULL;
	json_t *runs = g && ng == 1 ? trained_runs(tok, &f->train, g) : NULL;
	char *runs_s = runs ? json_dumps(runs, JSON_COMPACT) : NULL;
	check(runs_s && strstr(runs_s, "wx()") && strstr(runs_s, "Sunny.") && !strstr(runs_s, "sun<"),
	      "a tool call is trained, the tool's answer is not (Jinja template)");
	free(runs_s);
	json_decref(runs);
	free(g);
	tern_data_free(f);
	l.o.chat_template = TERN_TEMPLATE_CHATML;
	l.o.chat_template_jinja = NULL;
	f = load_text(&l, tok, tool_chat, TERN_DS_CHAT, ".jsonl");
	check(!f && strstr(tern_error(), ":1: messages[2]: a 'tool' message needs the model's own chat "
					 "template (chat_template: tokenizer_default, or jinja), not chatml"),
	      "a tool message with a C-rendered template: one-line refusal");
	l.ds.field_messages = "turns";
	f = load_text(&l, tok, "{\"messages\": []}\n", TERN_DS_CHAT, ".jsonl");
	l.ds.field_messages = NULL;
	check(!f && strstr(tern_error(), ":1: missing field \"turns\" (datasets[].field_messages)"),
	      "field_messages missing in a row: one-line error");
	tern_data_free(t);

	/* data_files: files of a directory, read in order, as one dataset */
	char dir[] = "/tmp/tern_test_files_XXXXXX";
	if (mkdtemp(dir)) {
		char p1[4200], p2[4200];
		snprintf(p1, sizeof p1, "%s/a.jsonl", dir);
		snprintf(p2, sizeof p2, "%s/b.json", dir);
		FILE *fa = fopen(p1, "wb"), *fb = fopen(p2, "wb");
		if (fa && fb) {
			fputs(half, fa);
			char *rest = lines_of("completion.jsonl", 5, 10), barr[1 << 15] = "[";
			for (char *p = rest, *e; (e = strchr(p, '\n')); p = e + 1)
				snprintf(barr + strlen(barr), sizeof barr - strlen(barr), "%s%.*s",
					 barr[1] ? ",\n" : "", (int)(e - p), p);
			strcat(barr, "]");
			fputs(barr, fb);
			free(rest);
		}
		if (fa)
			fclose(fa);
		if (fb)
			fclose(fb);
		char *files[] = {"a.jsonl", "b.json"};
		load_init(&l, dir, TERN_DS_COMPLETION);
		l.ds.data_files = files;
		l.ds.n_data_files = 2;
		l.o.sequence_len = 64;
		struct tern_data *df = load_run(&l, tok);
		memset(&l.ds, 0, sizeof l.ds);
		struct tern_data *one = load_text(&l, tok, all10, TERN_DS_COMPLETION, ".jsonl");
		check(df && one && df->train_stats.samples == 10 && rows_equal(&df->train, &one->train),
		      "data_files: a JSONL and a JSON-array file of a directory read as one dataset");
		tern_data_free(df);
		tern_data_free(one);
		/* a directory without data_files */
		load_init(&l, dir, TERN_DS_COMPLETION);
		df = NULL;
		enum tern_status st = tern_data_load(&df, &l.o, tok);
		char want[4400];
		snprintf(want, sizeof want,
			 "%s: is a directory (datasets[0]); name its files with data_files: [a.jsonl, ...]",
			 dir);
		check(st != TERN_OK && !df && !strcmp(tern_error(), want), "a directory without data_files");
		remove(p1);
		remove(p2);
		rmdir(dir);
	}

	/* a tokenizer_config.json that is not there: the file and the reason, no line (was ":-1:") */
	struct tern_chat *tt = NULL;
	check(tern_chat_from_tokenizer_config(&tt, "/nonexistent/tokenizer_config.json") == TERN_E_IO &&
		      !tt &&
		      !strcmp(tern_error(),
			      "unable to open /nonexistent/tokenizer_config.json: No such file or directory"),
	      "missing tokenizer_config.json: no ':-1:'");

	/* bad JSON arrays and splits: one line naming the file and the element's line */
	bad_text(tok, "[\n  {\"text\": \"a\"},\n  5\n]\n", TERN_DS_COMPLETION, NULL,
		 ":3: the row is an integer, not a JSON object");
	bad_text(tok, "[\n  {\"text\": \"a\"},\n\n  {\"text\": \"b\",\n   \"x\": }\n]\n", TERN_DS_COMPLETION,
		 NULL, ":5: invalid JSON: unexpected token near '}'");
	bad_text(tok, "[{\"text\": \"a\"} {\"text\": \"b\"}]", TERN_DS_COMPLETION, NULL,
		 ":1: invalid JSON: expected ',' or ']' in the array");
	bad_text(tok, "[{\"text\": \"a\"}]\n[]", TERN_DS_COMPLETION, NULL,
		 ":2: invalid JSON: text after the array's closing ']'");
	bad_text(tok, "[\n{\"tex\": \"a\"}]", TERN_DS_COMPLETION, NULL, ":2: missing field \"text\"");
	bad_text(tok, "{\"text\": \"a\"}\n[1]\n", TERN_DS_COMPLETION, NULL,
		 ":2: the line is a list, not a JSON object");
	bad_text(tok, "{\"text\": \"a\"}\n{\"text\": \"b\"}\n", TERN_DS_COMPLETION, "train[2:]",
		 "datasets[0].split: 'train[2:]' selects none of the 2 rows of %s; widen the slice");
	free(jsonl);
	free(all10);
	free(two);
	free(half);
	free(last2);
	tern_data_free(a);
}

/* special_tokens.eos_token / pad_token override the tokenizer's; an unknown one is an error. */
static void special_tokens(const struct tern_tokenizer *q3)
{
	int32_t eot = tern_tokenizer_token_id(q3, "<|endoftext|>");
	struct load l;
	load_init(&l, "long.jsonl", TERN_DS_COMPLETION);
	l.o.sequence_len = 64;
	l.o.eos_token = "<|endoftext|>";
	l.o.pad_token = "<|endoftext|>";
	struct tern_data *d = load_run(&l, q3);
	bool ok = d != NULL && eot >= 0 && eot != tern_tokenizer_eos(q3);
	for (int64_t r = 0; ok && r < d->train.n_rows; r++) {
		int64_t n = 0;
		while (n < 64 && d->train.segments[r * 64 + n] >= 0)
			n++;
		ok = n < 64 && d->train.tokens[r * 64 + n - 1] == eot && d->train.tokens[r * 64 + 63] == eot;
	}
	check(ok, "special_tokens: eos_token ends every sample, pad_token pads");
	tern_data_free(d);
	l.o.pad_token = "<nope>";
	d = NULL;
	enum tern_status st = tern_data_load(&d, &l.o, q3);
	check(st == TERN_E_INVALID && !d &&
		      !strcmp(tern_error(),
			      "special_tokens.pad_token: '<nope>' is not a token of the tokenizer"),
	      "special_tokens: an unknown pad_token is a one-line error");
}

/* ---- bad input ---- */

/* Loading rel (type) fails with exactly "<path>" + tail, one line. */
static void bad(const struct tern_tokenizer *tok, const char *rel, enum tern_ds_type type, const char *tail)
{
	struct load l;
	load_init(&l, rel, type);
	struct tern_data *d = NULL;
	enum tern_status st = tern_data_load(&d, &l.o, tok);
	char want[8192];
	snprintf(want, sizeof want, "%s%s", l.path, tail);
	bool ok = st != TERN_OK && !d && !strcmp(tern_error(), want) && !strchr(tern_error(), '\n');
	if (!ok)
		printf("  want: %s\n  got:  %s\n", want, st ? tern_error() : "(success)");
	checkf(ok, "bad input %s: %s", rel, tail);
	tern_data_free(d);
}

static void bad_inputs(const struct tern_tokenizer *l2, const struct tern_tokenizer *q3)
{
	bad(q3, "bad_json.jsonl", TERN_DS_COMPLETION, ":2: invalid JSON: unexpected newline near '\"broken'");
	bad(q3, "bad_missing.jsonl", TERN_DS_ALPACA, ":3: missing field \"output\"");
	bad(q3, "bad_type.jsonl", TERN_DS_ALPACA, ":1: \"instruction\" is an integer, not a string");
	bad(q3, "bad_object.jsonl", TERN_DS_COMPLETION, ":1: the row is an integer, not a JSON object");
	bad(q3, "bad_role.jsonl", TERN_DS_CHAT,
	    ":1: messages[1].role: 'bot' is not a role (allowed: system, user, assistant, tool; sharegpt: system, human, "
	    "gpt)");
	bad(q3, "bad_labels.jsonl", TERN_DS_PRETOKENIZED,
	    ":1: \"labels\" has 2 entries and \"input_ids\" 3; they must align one to one");
	bad(q3, "bad_empty.jsonl", TERN_DS_COMPLETION,
	    ": no samples (the file is empty, holds only blank lines or an empty array)");
	bad(q3, "no_such_file.jsonl", TERN_DS_COMPLETION,
	    ": cannot open: No such file or directory (datasets[0].path)");
	bad(q3, "bad_chat_type.jsonl", TERN_DS_CHAT,
	    ":2: \"messages\" is a string, not a non-empty list of messages");
	bad(q3, "bad_pretok_id.jsonl", TERN_DS_PRETOKENIZED,
	    ":1: input_ids[1] = 151669 is outside the vocabulary (0..151668)");
	bad(q3, "bad_pretok_type.jsonl", TERN_DS_PRETOKENIZED,
	    ":1: input_ids[2] is a string, not an integer");
	/* the Mistral check runs only under mistral_v1 */
	struct load l;
	load_init(&l, "bad_alternation.jsonl", TERN_DS_CHAT);
	l.o.chat_template = TERN_TEMPLATE_MISTRAL_V1;
	struct tern_data *d = NULL;
	enum tern_status st = tern_data_load(&d, &l.o, l2);
	char want[8192];
	snprintf(
		want, sizeof want,
		"%s:1: message 2 is 'user' but mistral_v1 needs user and assistant turns alternating from user (one "
		"system message first at most)",
		l.path);
	check(st == TERN_E_FORMAT && !strcmp(tern_error(), want), "mistral_v1: roles must alternate");
	tern_data_free(d);
	/* a template whose markers the tokenizer lacks */
	load_init(&l, "chat.jsonl", TERN_DS_CHAT);
	st = tern_data_load(&d, &l.o, l2);
	check(st == TERN_E_INVALID &&
		      !strcmp(tern_error(), "chat_template: chatml needs the token <|im_start|>, which "
					    "the tokenizer does not have; set chat_template to the "
					    "model's family (chatml, llama3, mistral_v1, qwen3 or gemma) "
					    "or tokenizer_default"),
	      "chatml with a tokenizer without <|im_start|>: one-line error");
	/* text without a tokenizer */
	load_init(&l, "alpaca.jsonl", TERN_DS_ALPACA);
	st = tern_data_load(&d, &l.o, NULL);
	snprintf(
		want, sizeof want,
		"datasets[0] (%s): type alpaca needs a tokenizer (tokenizer.json of base_model); only pretokenized "
		"datasets load without one",
		l.path);
	check(st == TERN_E_INVALID && !d && !strcmp(tern_error(), want),
	      "alpaca without a tokenizer: one-line error");
	/* tokenizer_default without a tokenizer_config.json, and one without a template */
	load_init(&l, "chat.jsonl", TERN_DS_CHAT);
	l.o.chat_template = TERN_TEMPLATE_TOKENIZER_DEFAULT;
	st = tern_data_load(&d, &l.o, q3);
	check(st == TERN_E_UNSUPPORTED && !d &&
		      strstr(tern_error(), "tokenizer_default needs tokenizer_config.json"),
	      "tokenizer_default without tokenizer_config.json: one-line error");
	snprintf(l.config, sizeof l.config, "%s/llama2/tokenizer_config.json", tok_dir);
	l.o.tokenizer_config = l.config;
	st = tern_data_load(&d, &l.o, l2);
	check(st == TERN_E_UNSUPPORTED && !d &&
		      strstr(tern_error(), "llama2/tokenizer_config.json: no chat_template"),
	      "tokenizer_default with a config without template: one-line error");
}

int main(void)
{
	data_dir = getenv("TERN_TEST_DATA");
	tok_dir = getenv("TERN_TOKENIZERS");
	if (!data_dir || !tok_dir) {
		printf("TERN_TEST_DATA and TERN_TOKENIZERS must be set (ctest sets them)\n");
		return 1;
	}
	tern_set_log(NULL, NULL, TERN_LOG_ERROR);
	struct tern_tokenizer *l2 = load_tok("llama2"), *l3 = load_tok("llama3"), *q3 = load_tok("qwen3");
	if (!l2 || !l3 || !q3)
		return 1;

	/* Qwen3's own Jinja template (tokenizer_default) and the same chats under tern's chatml; Llama 3's
	 * built-in strings (its Jinja template, which always appends the generation prompt: test_chat) */
	parity(q3, "chat_chatml.jsonl", TERN_DS_CHAT, TERN_TEMPLATE_TOKENIZER_DEFAULT,
	       "qwen3/tokenizer_config.json", TERN_TEMPLATE_TOKENIZER_DEFAULT, "chat_chatml.qwen3.ref.jsonl");
	parity(q3, "chat_chatml.jsonl", TERN_DS_CHAT, TERN_TEMPLATE_CHATML, NULL, TERN_TEMPLATE_CHATML,
	       "chat_chatml.qwen3.ref.jsonl");
	parity(l3, "chat_llama3.jsonl", TERN_DS_CHAT, TERN_TEMPLATE_LLAMA3, NULL, TERN_TEMPLATE_LLAMA3,
	       "chat_llama3.llama3.ref.jsonl");
	parity(l2, "chat_mistral.jsonl", TERN_DS_CHAT, TERN_TEMPLATE_MISTRAL_V1, NULL,
	       TERN_TEMPLATE_MISTRAL_V1, "chat_mistral.llama2.ref.jsonl");
	static const char *const names[] = {"llama2", "llama3", "qwen3"};
	const struct tern_tokenizer *toks[] = {l2, l3, q3};
	for (int i = 0; i < 3; i++) {
		char ref[256];
		snprintf(ref, sizeof ref, "alpaca.%s.ref.jsonl", names[i]);
		parity(toks[i], "alpaca.jsonl", TERN_DS_ALPACA, TERN_TEMPLATE_CHATML, NULL,
		       TERN_TEMPLATE_CHATML, ref);
		snprintf(ref, sizeof ref, "completion.%s.ref.jsonl", names[i]);
		parity(toks[i], "completion.jsonl", TERN_DS_COMPLETION, TERN_TEMPLATE_CHATML, NULL,
		       TERN_TEMPLATE_CHATML, ref);
	}
	exact_strings(l2, l3, q3);
	straddle(q3);
	packing(q3);
	packing(l2);
	truncation(l3);
	split(q3);
	seeds(q3);
	pretokenized(q3);
	special_tokens(q3);
	bad_inputs(l2, q3);
	dataset_keys(q3);

	tern_tokenizer_free(l2);
	tern_tokenizer_free(l3);
	tern_tokenizer_free(q3);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
