/* tern generate (issue 13): greedy continuations equal transformers' generate(do_sample=False)
 * token for token (tests/data/generate/expected.jsonl, tools/make_golden_generate.py) on the golden
 * models with and without their adapters, on cpu (every case), vulkan (lavapipe in CI) and cuda
 * where present (the adapters' cases, the sliding window and tied embeddings; TERN_TEST_FULL=1:
 * all; TERN_TEST_BACKEND=NAME: that backend only); a streamed model
 * (layers in host memory and on disk) gives the same ids as resident; sampling is reproducible by
 * seed and differs across seeds; the sampler's filters; bad inputs fail with one line. */
#include "backend/backend.h"
#include "model/model.h"
#include "tern/generate.h"
#include "train/gen.h"
#include "train/net.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int passed, failed, skipped;

static void check(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s  ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		passed++;
	else
		failed++;
}

static const char *root;

/* "tests/data/x" of expected.jsonl -> "<TERN_TEST_DATA>/x" */
static void data_path(char *buf, size_t cap, const char *p)
{
	const char *pre = "tests/data/";
	snprintf(buf, cap, "%s/%s", root, strncmp(p, pre, strlen(pre)) ? p : p + strlen(pre));
}

static bool same_ids(const int32_t *a, size_t na, json_t *b)
{
	if (na != json_array_size(b))
		return false;
	for (size_t i = 0; i < na; i++)
		if (a[i] != (int32_t)json_integer_value(json_array_get(b, i)))
			return false;
	return true;
}

static void fmt_ids(char *buf, size_t cap, const int32_t *ids, size_t n)
{
	size_t len = 0;
	for (size_t i = 0; i < n && len + 12 < cap; i++)
		len += (size_t)snprintf(buf + len, cap - len, "%s%d", i ? "," : "", ids[i]);
	if (!n)
		snprintf(buf, cap, "(none)");
}

static bool backend_ok(const char *bname)
{
	struct tern_backend *be = NULL;
	enum tern_status st = tern_backend_create(bname, 0, &be);
	if (be)
		tern_backend_free(be);
	if (st == TERN_OK)
		return true;
	const char *req = getenv(strcmp(bname, "cuda") ? "TERN_REQUIRE_VULKAN" : "TERN_REQUIRE_CUDA");
	if (req && !strcmp(req, "1"))
		check(false, "%s: backend unavailable: %s", bname, tern_error());
	else
		printf("not run  %s: backend unavailable\n", bname), skipped++;
	return false;
}

/* Every case of expected.jsonl on one backend. */
static void golden(const char *bname, json_t *cases)
{
	for (size_t i = 0; i < json_array_size(cases); i++) {
		json_t *c = json_array_get(cases, i);
		const char *name = json_string_value(json_object_get(c, "name"));
		/* other backends than the CPU: the adapters' cases and the fixtures with a window and tied
		 * embeddings (every architecture feature; the validation layer makes each call slow) */
		bool full = getenv("TERN_TEST_FULL") && !strcmp(getenv("TERN_TEST_FULL"), "1");
		if (strcmp(bname, "cpu") && !full &&
		    !((strstr(name, "+adapter") && !strstr(name, "text")) || strstr(name, "window") ||
		      strstr(name, "tied")))
			continue;
		json_t *ad = json_object_get(c, "adapter"), *pt = json_object_get(c, "prompt");
		char model[4200], adapter[4200];
		data_path(model, sizeof model, json_string_value(json_object_get(c, "model")));
		if (json_is_string(ad))
			data_path(adapter, sizeof adapter, json_string_value(ad));
		struct tern_generate_opts o = {.model = model,
					       .adapter = json_is_string(ad) ? adapter : NULL,
					       .backend = bname,
					       .device = -1,
					       .device_memory = -1,
					       .host_memory = -1};
		struct tern_generate_params p = {
			.max_new_tokens = json_integer_value(json_object_get(c, "max_new_tokens")),
			.top_p = 1,
			.repetition_penalty = 1};
		struct tern_generator *g = NULL;
		struct tern_generation r = {0};
		int32_t *ids = NULL;
		size_t n = 0;
		enum tern_status st = tern_generator_open(&o, &g);
		if (st == TERN_OK && json_is_string(pt)) {
			st = tern_generator_encode(g, json_string_value(pt), false, &ids, &n);
		} else if (st == TERN_OK) {
			json_t *pi = json_object_get(c, "prompt_ids");
			n = json_array_size(pi);
			ids = malloc(n * sizeof *ids);
			for (size_t k = 0; ids && k < n; k++)
				ids[k] = (int32_t)json_integer_value(json_array_get(pi, k));
		}
		if (st == TERN_OK)
			st = tern_generator_run(g, ids, n, &p, NULL, NULL, &r);
		char got[1024];
		fmt_ids(got, sizeof got, r.ids, r.n);
		if (st != TERN_OK)
			check(false, "%s: %s: %s", bname, name, tern_error());
		else
			check(same_ids(r.ids, r.n, json_object_get(c, "ids")),
			      "%s: %s: greedy ids as transformers (%s)", bname, name, got);
		tern_generation_free(&r);
		free(ids);
		tern_generator_free(g);
	}
}

static const int32_t PROMPT[] = {1, 5, 17, 99, 3, 42, 7};
#define NP ((int64_t)(sizeof PROMPT / sizeof PROMPT[0]))

/* llama6 through the net directly: greedy ids with the given tiers (NULL: resident). */
static enum tern_status run_tiers(struct tern_backend *be, struct tern_model *m, const uint8_t *tiers,
				  int64_t n, int32_t **out, int64_t *n_out,
				  struct tern_residency_stats *stats)
{
	struct tern_net_opts no = {.R = 1, .scale = 1, .modules = 1u, .T = 1, .tiers = tiers, .slots = 2};
	struct tern_net *net = NULL;
	struct tern_gen *g = NULL;
	enum tern_status st = tern_net_create(be, m, &no, &net);
	if (st == TERN_OK)
		st = tern_gen_create(net, m, false, &g);
	struct tern_gen_request r = {.prompt = PROMPT, .n_prompt = NP, .max_new = n};
	if (st == TERN_OK)
		st = tern_gen_run(g, &r, out, n_out);
	if (st == TERN_OK)
		tern_net_stream_stats(net, stats, true);
	tern_gen_free(g);
	tern_net_free(net);
	return st;
}

static void streamed(const char *bname, json_t *want)
{
	struct tern_backend *be = NULL;
	struct tern_model *m = NULL;
	char path[4200], pack[4200];
	snprintf(path, sizeof path, "%s/models/llama6", root);
	snprintf(pack, sizeof pack, "/tmp/tern_test_generate_%d.tpack", (int)getpid());
	struct tern_model_opts mo = {.format = TERN_FORMAT_BF16, .blocksize = 64, .pack_path = pack};
	enum tern_status st = tern_backend_create(bname, 0, &be);
	if (st == TERN_OK)
		st = tern_model_open(path, &mo, &m);
	const uint8_t tiers[6] = {TERN_TIER_DISK, TERN_TIER_HOST,   TERN_TIER_DISK,
				  TERN_TIER_HOST, TERN_TIER_DEVICE, TERN_TIER_DISK};
	int32_t *a = NULL, *b = NULL;
	int64_t na = 0, nb = 0;
	struct tern_residency_stats sa, sb;
	int64_t n = (int64_t)json_array_size(want);
	if (st == TERN_OK)
		st = run_tiers(be, m, NULL, n, &a, &na, &sa);
	if (st == TERN_OK)
		st = run_tiers(be, m, tiers, n, &b, &nb, &sb);
	if (st != TERN_OK) {
		check(false, "%s: streamed llama6: %s", bname, tern_error());
	} else {
		check(same_ids(a, (size_t)na, want), "%s: models/llama6 resident: ids as transformers",
		      bname);
		check(na == nb && !memcmp(a, b, (size_t)na * 4),
		      "%s: llama6 with layers on disk and in host memory: the resident ids", bname);
		/* every streamed layer (5 of 6) loaded at least once per token */
		check(sb.loads >= (uint64_t)(5 * nb) && sb.bytes[TERN_TIER_DISK] > 0 &&
			      sb.bytes[TERN_TIER_HOST] > 0,
		      "%s: llama6 streamed: %llu slot loads, %llu bytes from disk, %llu from host", bname,
		      (unsigned long long)sb.loads, (unsigned long long)sb.bytes[TERN_TIER_DISK],
		      (unsigned long long)sb.bytes[TERN_TIER_HOST]);
	}
	free(a);
	free(b);
	tern_model_free(m);
	if (be)
		tern_backend_free(be);
	unlink(pack);
}

/* Sampled generation on llama6: the same seed, the same ids; another seed, other ids. */
static void sampling(const char *bname)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/models/llama6", root);
	struct tern_generate_opts o = {
		.model = path, .backend = bname, .device = -1, .device_memory = -1, .host_memory = -1};
	struct tern_generator *g = NULL;
	struct tern_generation r[3] = {0};
	enum tern_status st = tern_generator_open(&o, &g);
	for (int k = 0; k < 3 && st == TERN_OK; k++) {
		struct tern_generate_params p = {.max_new_tokens = 24,
						 .temperature = 1.0,
						 .top_k = 100,
						 .top_p = 0.95,
						 .min_p = 0.01,
						 .repetition_penalty = 1.1,
						 .seed = k == 2 ? 8 : 7};
		st = tern_generator_run(g, PROMPT, NP, &p, NULL, NULL, &r[k]);
	}
	if (st != TERN_OK) {
		check(false, "%s: sampling: %s", bname, tern_error());
	} else {
		char a[512], b[512];
		fmt_ids(a, sizeof a, r[0].ids, r[0].n);
		fmt_ids(b, sizeof b, r[2].ids, r[2].n);
		check(r[0].n == r[1].n && !memcmp(r[0].ids, r[1].ids, r[0].n * 4),
		      "%s: sampled twice with seed 7: the same ids (%s)", bname, a);
		check(r[0].n != r[2].n || memcmp(r[0].ids, r[2].ids, r[0].n * 4),
		      "%s: seed 8 gives other ids (%s)", bname, b);
	}
	for (int k = 0; k < 3; k++)
		tern_generation_free(&r[k]);
	tern_generator_free(g);
}

/* The sampler's filters on logits with known probabilities. */
static void sampler(void)
{
	struct tern_sample_opts o = {.temperature = 1, .top_p = 1, .repetition_penalty = 1};
	float l[4];
	int hits[4] = {0};
	/* top_k 1: the argmax whatever the seed */
	bool ok = true;
	for (uint64_t s = 0; s < 200; s++) {
		uint64_t state = s;
		memcpy(l, (float[]){0.1f, 2.0f, 1.9f, -1.0f}, sizeof l);
		o.top_k = 1;
		ok &= tern_gen_sample(l, 4, NULL, 0, &o, &state) == 1;
	}
	check(ok, "sampler: top_k 1 always takes the largest logit");
	/* min_p 0.5 over p = (.5, .3, .2, 0): 0.2 < 0.25 is out; 0 and 1 both come */
	o.top_k = 0;
	o.min_p = 0.5;
	for (uint64_t s = 0; s < 400; s++) {
		uint64_t state = s * 7919;
		memcpy(l, (float[]){logf(0.5f), logf(0.3f), logf(0.2f), -1e30f}, sizeof l);
		hits[tern_gen_sample(l, 4, NULL, 0, &o, &state)]++;
	}
	check(hits[2] == 0 && hits[3] == 0 && hits[0] > 120 && hits[1] > 60,
	      "sampler: min_p 0.5 keeps tokens 0 and 1 only (%d, %d, %d, %d of 400)", hits[0], hits[1],
	      hits[2], hits[3]);
	/* top_p 0.6 over the same: 0.5 < 0.6, so 0 and 1 (0.8) */
	memset(hits, 0, sizeof hits);
	o.min_p = 0;
	o.top_p = 0.6;
	for (uint64_t s = 0; s < 400; s++) {
		uint64_t state = s * 104729;
		memcpy(l, (float[]){logf(0.5f), logf(0.3f), logf(0.2f), -1e30f}, sizeof l);
		hits[tern_gen_sample(l, 4, NULL, 0, &o, &state)]++;
	}
	check(hits[2] == 0 && hits[3] == 0 && hits[0] > 150 && hits[1] > 80,
	      "sampler: top_p 0.6 keeps tokens 0 and 1 only (%d, %d, %d, %d of 400)", hits[0], hits[1],
	      hits[2], hits[3]);
	/* repetition penalty 1.2, greedy: a positive logit seen before is divided, a negative multiplied */
	struct tern_sample_opts gr = {.top_p = 1, .repetition_penalty = 1.2};
	uint64_t state = 0;
	int32_t hist[] = {0, 0};
	float p1[2] = {2.0f, 1.9f}, p2[2] = {-1.0f, -1.1f};
	int32_t a = tern_gen_sample(p1, 2, hist, 2, &gr, &state),
		b = tern_gen_sample(p2, 2, hist, 2, &gr, &state);
	check(a == 1 && b == 1 && fabsf(p1[0] - 2.0f / 1.2f) < 1e-6f,
	      "sampler: repetition penalty 1.2 (2.0 -> %g, -1.0 -> %g, once for a token seen twice)",
	      (double)p1[0], (double)p2[0]);
}

/* One line naming the problem: contains `want`, no newline. */
static void one_line(enum tern_status st, const char *what, const char *want)
{
	const char *e = tern_error();
	check(st != TERN_OK && strstr(e, want) && !strchr(e, '\n'), "%s: one line naming it: %s", what, e);
}

static void errors(void)
{
	char model[4200], adapter[4200], other[22000], tmp[256];
	snprintf(model, sizeof model, "%s/golden/qwen2/model", root);
	snprintf(adapter, sizeof adapter, "%s/golden/llama/adapter_final", root);
	struct tern_generate_opts o = {.model = model,
				       .adapter = adapter,
				       .backend = "cpu",
				       .device = -1,
				       .device_memory = -1,
				       .host_memory = -1};
	struct tern_generator *g = NULL;
	enum tern_status st = tern_generator_open(&o, &g);
	one_line(st, "llama's adapter on qwen2", "does not fit base model");
	tern_generator_free(g);
	g = NULL;

	/* the llama adapter with r 4 in its config: the tensors (rank 8) do not fit */
	snprintf(tmp, sizeof tmp, "/tmp/tern_test_generate_adapter_%d", (int)getpid());
	snprintf(other, sizeof other,
		 "mkdir -p %s && cp %s/adapter_model.safetensors %s/ && sed 's/\"r\": 8/\"r\": 4/' "
		 "%s/adapter_config.json > %s/adapter_config.json",
		 tmp, adapter, tmp, adapter, tmp);
	if (system(other) != 0) {
		check(false, "setup: %s", other);
	} else {
		snprintf(model, sizeof model, "%s/golden/llama/model", root);
		o.adapter = tmp;
		st = tern_generator_open(&o, &g);
		one_line(st, "an adapter whose r differs from its tensors' rank", "does not fit base model");
		tern_generator_free(g);
		g = NULL;
	}
	snprintf(other, sizeof other, "rm -rf %s", tmp);
	if (system(other) != 0)
		printf("warning: could not remove %s\n", tmp);

	/* a text prompt for a model without tokenizer.json */
	snprintf(model, sizeof model, "%s/models/llama6", root);
	o.adapter = NULL;
	st = tern_generator_open(&o, &g);
	if (st != TERN_OK) {
		check(false, "llama6: %s", tern_error());
	} else {
		int32_t *ids = NULL;
		size_t n = 0;
		st = tern_generator_encode(g, "hello", false, &ids, &n);
		one_line(st, "a text prompt without a tokenizer", "no tokenizer.json");
		free(ids);
		/* a prompt id outside the vocabulary */
		int32_t bad[2] = {5, 100000};
		struct tern_generate_params p = {.max_new_tokens = 2, .top_p = 1, .repetition_penalty = 1};
		struct tern_generation r = {0};
		st = tern_generator_run(g, bad, 2, &p, NULL, NULL, &r);
		one_line(st, "prompt id 100000 of a 256-token vocabulary", "outside the vocabulary");
		tern_generation_free(&r);
	}
	tern_generator_free(g);
}

int main(void)
{
	root = getenv("TERN_TEST_DATA");
	if (!root) {
		fprintf(stderr, "test_generate: TERN_TEST_DATA is not set (run through ctest)\n");
		return 1;
	}
	tern_set_log(NULL, NULL, 0);
	char path[4200];
	snprintf(path, sizeof path, "%s/generate/expected.jsonl", root);
	FILE *f = fopen(path, "r");
	json_t *cases = json_array(), *llama6 = NULL;
	char line[8192];
	while (f && fgets(line, sizeof line, f)) {
		json_t *j = json_loads(line, 0, NULL);
		if (!j || json_object_get(j, "_versions")) {
			json_decref(j);
			continue;
		}
		if (!strcmp(json_string_value(json_object_get(j, "name")), "models/llama6"))
			llama6 = json_object_get(j, "ids");
		json_array_append_new(cases, j);
	}
	if (f)
		fclose(f);
	check(json_array_size(cases) >= 10 && llama6, "%s: %zu cases", path, json_array_size(cases));
	sampler();
	errors();
	const char *bs[] = {"cpu", "vulkan", "cuda"}, *only = getenv("TERN_TEST_BACKEND");
	for (int b = 0; b < 3; b++) {
		if ((only && strcmp(only, bs[b])) || !backend_ok(bs[b]))
			continue;
		golden(bs[b], cases);
		if (llama6)
			streamed(bs[b], llama6);
		sampling(bs[b]);
	}
	json_decref(cases);
	printf("%d passed, %d failed, %d not run\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
