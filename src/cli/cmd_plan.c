/* tern plan CONFIG: where each layer of the model would live under the memory budgets, from
 * config.json alone (include/tern/plan.h). */
#include "cli.h"
#include "tern/plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void tern_help_plan(void)
{
	printf("usage: tern plan CONFIG.yaml [--set KEY=VALUE]... [--device-memory SIZE] [--host-memory SIZE]\n"
	       "                 [--stages N]\n"
	       "\n"
	       "Plans where the frozen layers of the config's base_model live during training: device\n"
	       "memory, pinned host memory or the pack file on disk (streamed through prefetch slots).\n"
	       "Needs only the model's config.json (no weights; of a Hub id base_model, only config.json is\n"
	       "downloaded into the Hugging Face cache). Prints the fixed device costs, the\n"
	       "placement per tier, the memory per tier, the bytes streamed per optimizer step and a\n"
	       "verdict; exits 1 with the smallest device budget that works when the plan cannot work.\n"
	       "\n"
	       "options:\n"
	       "  --set KEY=VALUE        override a config key (YAML value); repeatable\n"
	       "  --device-memory SIZE   device budget (\"auto\", 12GB, 11.5GiB, ...); default: device_memory\n"
	       "                         of the config; auto = the GPU's memory less max(10 %%, 512 MiB)\n"
	       "  --host-memory SIZE     host budget (\"auto\", 32GB, ...); default: host_memory of the\n"
	       "                         config; auto = MemAvailable less max(10 %%, 1 GiB)\n"
	       "  --prefetch-depth N     layers prefetched ahead when streaming (1..64, default 2)\n"
	       "  --stages N             a layer split over N devices (layer_split: auto, or the config's\n"
	       "                         list): the split, then each stage's plan with its own budgets\n"
	       "                         (as each rank of `mpirun -n N tern train` plans); default: the\n"
	       "                         stages of a layer_split list, else none\n"
	       "  -v, --verbose          more log output on stderr\n"
	       "  -h, --help             this help\n");
}

static void fmt(char *buf, size_t size, uint64_t b)
{
	if (b >= ((uint64_t)1 << 30))
		snprintf(buf, size, "%.2f GiB", (double)b / (double)((uint64_t)1 << 30));
	else if (b >= ((uint64_t)1 << 20))
		snprintf(buf, size, "%.1f MiB", (double)b / (double)((uint64_t)1 << 20));
	else if (b >= 1024)
		snprintf(buf, size, "%.1f KiB", (double)b / 1024.0);
	else
		snprintf(buf, size, "%" PRIu64 " B", b);
}

static void row(const char *name, uint64_t bytes)
{
	char b[32];
	fmt(b, sizeof b, bytes);
	printf("  %-52s %12s\n", name, b);
}

/* "3-17", "5" or "-" */
static void layers_of(char *buf, size_t size, const struct tern_plan *p, enum tern_plan_tier t)
{
	int64_t first = -1, last = -1;
	for (int64_t l = 0; l < p->L; l++)
		if (p->tier[l] == t) {
			if (first < 0)
				first = l;
			last = l;
		}
	if (first < 0)
		snprintf(buf, size, "-");
	else if (first == last)
		snprintf(buf, size, "%" PRId64, first);
	else
		snprintf(buf, size, "%" PRId64 "-%" PRId64, first, last);
}

static void print_plan(const struct tern_plan *p, const char *dev_src, const char *host_src)
{
	char a[32], b[32], c[32];
	fmt(a, sizeof a, p->layer_bytes);
	fmt(b, sizeof b, p->pack_bytes);
	printf("model     %s, %" PRId64 " layers", p->model_type, p->L);
	if (p->E)
		printf(" (%" PRId64 " experts, top %" PRId64 ")", p->E, p->top_k);
	printf(", projections %s; one layer %s; pack file about %s\n", p->format, a, b);
	printf("training  %" PRId64 " tokens per micro-batch x %" PRId64 " micro-batches per step; %" PRId64
	       " LoRA parameters\n",
	       p->T, p->accum, p->lora_params);
	fmt(a, sizeof a, p->device_budget);
	fmt(b, sizeof b, p->host_budget);
	printf("budgets   device %s (%s), host %s (%s)\n", a, dev_src, b, host_src);
	if (p->device_auto) {
		fmt(c, sizeof c, p->device_detected);
		printf("          device %s: %s of device memory, less max(10 %%, 512 MiB)\n", p->device_name,
		       c);
	}

	printf("\nfixed device costs\n");
	for (int i = 0; i < p->n_fixed; i++)
		row(p->fixed[i].name, p->fixed[i].bytes);
	row("total", p->fixed_bytes);
	if (p->n_slots) {
		char name[96];
		fmt(a, sizeof a, p->layer_bytes);
		snprintf(name, sizeof name, "streaming slots (%d x %s, prefetch depth %d)", p->n_slots, a,
			 p->prefetch_depth);
		row(name, p->slot_bytes);
	}
	printf("host reserve\n");
	for (int i = 0; i < p->n_host_reserve; i++)
		row(p->host_reserve[i].name, p->host_reserve[i].bytes);
	if (!p->ok) {
		fmt(a, sizeof a, p->min_device);
		fmt(b, sizeof b, p->all_device);
		printf("\nsmallest device budget that works: %s (%" PRIu64
		       " bytes); every layer resident: %s\n",
		       a, p->min_device, b);
		printf("verdict: %s\n", p->verdict);
		return;
	}

	printf("\nplacement (layer order: device, then host, then disk)\n");
	printf("  %-8s %-12s %8s %14s %24s\n", "tier", "layers", "count", "weights", "streamed per step");
	for (int t = 0; t < TERN_PLAN_TIERS; t++) {
		char r[48];
		layers_of(r, sizeof r, p, (enum tern_plan_tier)t);
		fmt(a, sizeof a, (uint64_t)p->n_layers[t] * p->layer_bytes);
		fmt(b, sizeof b, p->streamed[t]);
		printf("  %-8s %-12s %8" PRId64 " %14s %24s\n", tern_plan_tier_name((enum tern_plan_tier)t),
		       r, p->n_layers[t], a, t == TERN_PLAN_DEVICE ? "-" : b);
	}
	printf("\nmemory per tier\n");
	fmt(a, sizeof a, p->used[TERN_PLAN_DEVICE]);
	fmt(b, sizeof b, p->device_budget);
	printf("  device  %s of %s (fixed costs + slots + resident layers)\n", a, b);
	fmt(a, sizeof a, p->used[TERN_PLAN_HOST]);
	fmt(b, sizeof b, p->host_budget);
	printf("  host    %s of %s (reserve + host layers)%s\n", a, b,
	       p->host_reserve_bytes > p->host_budget ? "; the budget is below the host reserve" : "");
	fmt(a, sizeof a, p->used[TERN_PLAN_DISK]);
	fmt(b, sizeof b, p->pack_bytes);
	printf("  disk    %s read from the pack file (about %s in offload_dir)\n", a, b);
	fmt(a, sizeof a, p->streamed[TERN_PLAN_HOST] + p->streamed[TERN_PLAN_DISK]);
	printf("\nstreamed per step  %s (%d loads of each streamed layer per micro-batch: forward, then\n"
	       "                   recompute + backward from one load)\n",
	       a, p->loads_per_micro);
	if (p->E > 0 && p->n_layers[TERN_PLAN_DEVICE] < p->L) {
		char w[32];
		fmt(a, sizeof a, p->streamed_est[TERN_PLAN_HOST] + p->streamed_est[TERN_PLAN_DISK]);
		fmt(b, sizeof b, p->expert_bytes);
		fmt(w, sizeof w, p->streamed[TERN_PLAN_HOST] + p->streamed[TERN_PLAN_DISK]);
		printf("experts           about %.1f of %" PRId64
		       " experts hit per layer and micro-batch (estimate\n"
		       "                   for %" PRId64 " tokens x top %" PRId64
		       " drawn uniformly: E(1-(1-k/E)^T)); only those stream\n"
		       "                   (a layer loads whole from 7/8 of E): about %s per step, every\n"
		       "                   expert: %s\n",
		       p->experts_hit, p->E, p->T, p->top_k, a, w);
		(void)b;
	}
	printf("verdict: %s\n", p->verdict);
}

/* The split of the layers over the stages (p: any stage's plan; each holds the whole split). */
static void print_split(const struct tern_plan *p)
{
	printf("layer split over %d stages (one device, one rank each; %s)\n", p->stages,
	       "balanced by weight bytes unless layer_split lists the boundaries");
	printf("  %-6s %-10s %6s %26s\n", "stage", "layers", "count", "weights (layers + globals)");
	uint64_t total = 0;
	for (int s = 0; s < p->stages; s++) {
		char a[32], r[48];
		int64_t l0 = p->split[s], l1 = p->split[s + 1];
		if (l1 - l0 == 1)
			snprintf(r, sizeof r, "%" PRId64, l0);
		else
			snprintf(r, sizeof r, "%" PRId64 "-%" PRId64, l0, l1 - 1);
		fmt(a, sizeof a, p->stage_weights[s]);
		printf("  %-6d %-10s %6" PRId64 " %12s (%" PRIu64 " bytes)\n", s, r, l1 - l0, a,
		       p->stage_weights[s]);
		total += p->stage_weights[s];
	}
	printf("  total weights %" PRIu64 " bytes\n", total);
}

static int size_arg(const char *flag, const char *v, const char **dst)
{
	int64_t b;
	if (!v || !tern_plan_parse_size(v, &b) || b < 0)
		return tern_cli_usage(
			"plan: %s: '%.60s' is not a size (allowed: auto, or a size like 12GB, 11.5GiB, "
			"512MB)",
			flag, v ? v : "");
	if (b == 0 && strcasecmp(v, "auto"))
		return tern_cli_usage("plan: %s: '%.60s' is no budget (allowed: auto, or a size like 12GB, "
				      "11.5GiB, 512MB)",
				      flag, v);
	*dst = v;
	return TERN_EXIT_OK;
}

int tern_cmd_plan(int argc, char **argv)
{
	const char *config = NULL, *sets[256], *dev = NULL, *host = NULL;
	int n_sets = 0, rc;
	long long depth = 0, stages = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char *eq = strchr(a, '=');
		const char *v = eq ? eq + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
		size_t kl = eq ? (size_t)(eq - a) : strlen(a);
#define IS(f) (kl == strlen(f) && !strncmp(a, f, kl))
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			tern_help_plan();
			return TERN_EXIT_OK;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			tern_cli_verbose++;
			tern_cli_set_log();
		} else if (a[0] == '-' && IS("--set")) {
			if (!v || !strchr(v, '='))
				return tern_cli_usage("plan: --set needs KEY=VALUE (e.g. --set lora_r=16)");
			if (n_sets >= 256)
				return tern_cli_usage("plan: more than 256 --set options");
			sets[n_sets++] = v;
			i += !eq;
		} else if (a[0] == '-' && IS("--device-memory")) {
			if ((rc = size_arg("--device-memory", v, &dev)))
				return rc;
			i += !eq;
		} else if (a[0] == '-' && IS("--host-memory")) {
			if ((rc = size_arg("--host-memory", v, &host)))
				return rc;
			i += !eq;
		} else if (a[0] == '-' && IS("--prefetch-depth")) {
			char *end = NULL;
			depth = v ? strtoll(v, &end, 10) : 0;
			if (!v || !*v || *end || depth < 1 || depth > 64)
				return tern_cli_usage(
					"plan: --prefetch-depth: '%s' is not an integer from 1 to 64",
					v ? v : "");
			i += !eq;
		} else if (a[0] == '-' && IS("--stages")) {
			char *end = NULL;
			stages = v ? strtoll(v, &end, 10) : 0;
			if (!v || !*v || *end || stages < 1 || stages > TERN_PLAN_MAX_STAGES)
				return tern_cli_usage("plan: --stages: '%s' is not an integer from 1 to %d",
						      v ? v : "", TERN_PLAN_MAX_STAGES);
			i += !eq;
		} else if (a[0] == '-') {
			return tern_cli_usage(
				"plan: unknown option '%s' (allowed: --set KEY=VALUE, --device-memory SIZE, "
				"--host-memory SIZE, --prefetch-depth N, --stages N, --help)",
				a);
		} else if (config) {
			return tern_cli_usage("plan: more than one config file ('%s' and '%s')", config, a);
		} else {
			config = a;
		}
#undef IS
	}
	if (!config)
		return tern_cli_usage("plan: missing the config file (tern plan CONFIG.yaml)");
	int64_t dm = -1, hm = -1;
	if (dev)
		tern_plan_parse_size(dev, &dm);
	if (host)
		tern_plan_parse_size(host, &hm);
	struct tern_plan *p = calloc(1, sizeof *p);
	if (!p)
		return tern_cli_fail(TERN_E_NOMEM);
	enum tern_status st = TERN_OK;
	/* one plan, or one per stage of a layer split (stage 0's tells how many) */
	for (int s = 0, n = 1; s < n; s++) {
		p->prefetch_depth = (int)depth;
		p->stages = (int)stages;
		p->stage = s;
		enum tern_status ss = tern_plan_config(config, sets, n_sets, dm, hm, p);
		if (s == 0 && p->L > 0 && p->stages > 1) {
			n = p->stages;
			stages = n;
			print_split(p);
		}
		char ds[64], hs[64];
		snprintf(ds, sizeof ds, "%s",
			 p->device_auto ? "auto"
			 : dev          ? "--device-memory"
					: "device_memory");
		snprintf(hs, sizeof hs, "%s",
			 p->host_auto ? "auto: MemAvailable less max(10 %, 1 GiB)"
			 : host       ? "--host-memory"
				      : "host_memory");
		if (n > 1 && p->L > 0)
			printf("\n== stage %d of %d: layers %" PRId64 "-%" PRId64 " ==\n", s, n, p->l0,
			       p->l1 - 1);
		if (p->L > 0)
			print_plan(p, ds, hs);
		fflush(stdout);
		if (ss != TERN_OK && st == TERN_OK)
			st = ss;
		if (ss != TERN_OK && p->L == 0)
			break; /* bad input: nothing planned */
	}
	free(p);
	return st ? tern_cli_fail(st) : TERN_EXIT_OK;
}
