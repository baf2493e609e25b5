/* tern generate and tern chat: completions from a model (and an adapter) as they come
 * (include/tern/generate.h). */
#define _POSIX_C_SOURCE 200809L /* getline, fileno */
#include "cli.h"
#include "tern/generate.h"
#include "tern/plan.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_STOP 16

struct gen_args {
	struct tern_generate_opts o;
	struct tern_generate_params p;
	const char *prompt, *ids, *prompts, *system;
	const char *stop[MAX_STOP];
	bool chat, print_ids;
};

static const char *const sampling_help =
	"  --max-new-tokens N       tokens to generate at most (default 256)\n"
	"  --temperature X          0 (default): greedy; > 0: sampled\n"
	"  --top-k N                sample among the N most likely tokens (0: all)\n"
	"  --top-p X                ... among the smallest set holding probability X (1: all)\n"
	"  --min-p X                ... among tokens at least X times the most likely one's probability\n"
	"  --repetition-penalty X   divide the logits of tokens already seen by X (1: off)\n"
	"  --seed N                 the sampling seed: the same seed gives the same tokens (default 0)\n"
	"  --stop TEXT              stop before TEXT (repeatable, up to 16)\n"
	"  --adapter DIR            a PEFT adapter (tern's <output_dir>/adapter); a config's own\n"
	"                           adapter is <output_dir>/adapter when present\n"
	"  --no-adapter             the base model alone\n"
	"  --backend auto|cpu|vulkan, --device N\n"
	"  --device-memory SIZE, --host-memory SIZE   budgets of the residency plan (as in the\n"
	"                           config; layers that do not fit stream from host memory or disk)\n"
	"  --format F               a model directory's projection format: f32, bf16, f16, nf4,\n"
	"                           nf4-dq, ternary (default: as stored)\n";

void tern_help_generate(void)
{
	printf("usage: tern generate MODEL_DIR|CONFIG.yaml (--prompt TEXT | --ids 5,17,99 |\n"
	       "                     --prompts FILE.jsonl) [--chat] [--print-ids] [options]\n"
	       "\n"
	       "Continues a prompt with the model (a directory, or a training config: its base_model and\n"
	       "the adapter the run wrote), printing the text to stdout as it comes. Greedy by default;\n"
	       "stops at an end-of-sequence id (generation_config.json, config.json), a --stop string or\n"
	       "--max-new-tokens. docs/ARCHITECTURE.md \"Generation\".\n"
	       "\n"
	       "options:\n"
	       "  --prompt TEXT            the prompt (with the tokenizer's special tokens, e.g. BOS)\n"
	       "  --chat                   TEXT is a user message: the model's chat template is applied\n"
	       "  --ids LIST               the prompt as token ids (no tokenizer needed)\n"
	       "  --print-ids              print the generated ids (without the prompt) as one JSON array\n"
	       "                           instead of the text\n"
	       "  --prompts FILE.jsonl     one prompt per line: {\"prompt\": TEXT} or {\"messages\": [...]}\n"
	       "                           (or {\"input_ids\": [...]}); prints one JSON line each:\n"
	       "                           {\"completion\", \"ids\", \"finish\"}\n"
	       "%s",
	       sampling_help);
}

void tern_help_chat(void)
{
	printf("usage: tern chat MODEL_DIR|CONFIG.yaml [--system TEXT] [options]\n"
	       "\n"
	       "Talks with the model on stdin/stdout: each line is a user message, the answer streams\n"
	       "back through the model's chat template (multi-turn). /reset forgets the conversation,\n"
	       "/exit (or end of input) quits.\n"
	       "\n"
	       "options:\n"
	       "  --system TEXT            a system message first\n"
	       "%s",
	       sampling_help);
}

static int num(const char *cmd, const char *flag, const char *v, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double d = v ? strtod(v, &end) : 0;
	if (!v || !*v || *end || errno || !(d >= lo && d <= hi))
		return tern_cli_usage("%s: %s needs a number from %g to %g (got '%s')", cmd, flag, lo, hi,
				      v ? v : "");
	*out = d;
	return TERN_EXIT_OK;
}

static int parse(const char *cmd, int argc, char **argv, struct gen_args *a, bool *help)
{
	int n_stop = 0;
	a->o.device = -1;
	a->o.device_memory = a->o.host_memory = -1;
	a->p.max_new_tokens = 256;
	a->p.top_p = 1.0;
	a->p.repetition_penalty = 1.0;
	bool gen = !strcmp(cmd, "generate");
	for (int i = 0; i < argc; i++) {
		const char *f = argv[i];
		char *eq = NULL;
		char flag[64];
		snprintf(flag, sizeof flag, "%s", f);
		if (f[0] == '-' && f[1] == '-' && (eq = strchr(flag, '=')))
			*eq = '\0';
		const char *v = eq ? f + (eq - flag) + 1 : (i + 1 < argc ? argv[i + 1] : NULL);
#define VAL() (eq ? v : (i++, v))
		double d = 0;
		int rc = TERN_EXIT_OK;
		if (!strcmp(f, "-h") || !strcmp(f, "--help")) {
			*help = true;
			return TERN_EXIT_OK;
		} else if (!strcmp(f, "-v") || !strcmp(f, "--verbose")) {
			tern_cli_verbose++;
			tern_cli_set_log();
		} else if (!strcmp(flag, "--adapter")) {
			a->o.adapter = VAL();
		} else if (!strcmp(flag, "--no-adapter")) {
			a->o.no_adapter = true;
		} else if (gen && !strcmp(flag, "--prompt")) {
			a->prompt = VAL();
		} else if (gen && !strcmp(flag, "--ids")) {
			a->ids = VAL();
		} else if (gen && !strcmp(flag, "--prompts")) {
			a->prompts = VAL();
		} else if (gen && !strcmp(flag, "--chat")) {
			a->chat = true;
		} else if (gen && !strcmp(flag, "--print-ids")) {
			a->print_ids = true;
		} else if (!gen && !strcmp(flag, "--system")) {
			a->system = VAL();
		} else if (!strcmp(flag, "--stop")) {
			if (n_stop == MAX_STOP)
				return tern_cli_usage("%s: more than %d --stop strings", cmd, MAX_STOP);
			a->stop[n_stop++] = VAL();
		} else if (!strcmp(flag, "--max-new-tokens")) {
			rc = num(cmd, flag, VAL(), 0, 1e7, &d);
			a->p.max_new_tokens = (int64_t)d;
		} else if (!strcmp(flag, "--temperature")) {
			rc = num(cmd, flag, VAL(), 0, 100, &a->p.temperature);
		} else if (!strcmp(flag, "--top-k")) {
			rc = num(cmd, flag, VAL(), 0, 1e9, &d);
			a->p.top_k = (int64_t)d;
		} else if (!strcmp(flag, "--top-p")) {
			rc = num(cmd, flag, VAL(), 0, 1, &a->p.top_p);
		} else if (!strcmp(flag, "--min-p")) {
			rc = num(cmd, flag, VAL(), 0, 1, &a->p.min_p);
		} else if (!strcmp(flag, "--repetition-penalty")) {
			rc = num(cmd, flag, VAL(), 1e-3, 1e3, &a->p.repetition_penalty);
		} else if (!strcmp(flag, "--seed")) {
			rc = num(cmd, flag, VAL(), 0, 9007199254740992.0, &d);
			a->p.seed = (uint64_t)d;
		} else if (!strcmp(flag, "--backend")) {
			a->o.backend = VAL();
			if (!a->o.backend || (strcmp(a->o.backend, "auto") && strcmp(a->o.backend, "cpu") &&
					      strcmp(a->o.backend, "vulkan")))
				return tern_cli_usage("%s: --backend needs one of auto, cpu, vulkan", cmd);
		} else if (!strcmp(flag, "--device")) {
			rc = num(cmd, flag, VAL(), 0, 1024, &d);
			a->o.device = (int)d;
		} else if (!strcmp(flag, "--device-memory") || !strcmp(flag, "--host-memory")) {
			const char *s = VAL();
			int64_t *dst = flag[2] == 'd' ? &a->o.device_memory : &a->o.host_memory;
			if (!s || !tern_plan_parse_size(s, dst))
				return tern_cli_usage("%s: %s needs a size (12GB, 512MB, auto)", cmd, flag);
		} else if (!strcmp(flag, "--format")) {
			a->o.format = VAL();
		} else if (f[0] == '-') {
			return tern_cli_usage("%s: unknown option '%s' (see tern %s --help)", cmd, f, cmd);
		} else if (a->o.model) {
			return tern_cli_usage("%s: more than one model ('%s' and '%s')", cmd, a->o.model, f);
		} else {
			a->o.model = f;
		}
#undef VAL
		if (rc != TERN_EXIT_OK)
			return rc;
		const char *takes[] = {"--adapter", "--prompt", "--ids",     "--prompts",
				       "--system",  "--stop",   "--backend", "--format"};
		for (size_t k = 0; k < sizeof takes / sizeof takes[0]; k++)
			if (!strcmp(flag, takes[k]) && (!v || (!eq && i >= argc)))
				return tern_cli_usage("%s: %s needs a value", cmd, flag);
	}
	a->p.stop = a->stop;
	a->p.n_stop = n_stop;
	if (!a->o.model)
		return tern_cli_usage("%s: missing the model (tern %s MODEL_DIR|CONFIG.yaml)", cmd, cmd);
	if (gen && !!a->prompt + !!a->ids + !!a->prompts != 1)
		return tern_cli_usage(
			"generate: give exactly one of --prompt TEXT, --ids LIST, --prompts FILE");
	if (gen && a->ids && a->chat)
		return tern_cli_usage("generate: --chat applies to text prompts, not to --ids");
	return TERN_EXIT_OK;
}

/* "5,17,99" -> ids; one usage line when it is not a list of non-negative integers. */
static int parse_ids(const char *s, int32_t **ids, size_t *n)
{
	size_t cap = 1;
	for (const char *p = s; *p; p++)
		cap += *p == ',';
	*ids = malloc(cap * sizeof **ids);
	*n = 0;
	if (!*ids)
		return tern_cli_fail(TERN_E_NOMEM);
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		while (*p == ' ')
			p++;
		long long v = strtoll(p, &end, 10);
		if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',' && *end != ' ')) {
			free(*ids);
			*ids = NULL;
			return tern_cli_usage(
				"generate: --ids '%s' is not a comma-separated list of token ids "
				"(e.g. --ids 5,17,99)",
				s);
		}
		(*ids)[(*n)++] = (int32_t)v;
		p = end;
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		p++; /* ',' */
	}
	return TERN_EXIT_OK;
}

static void put_text(void *user, const char *text, size_t len)
{
	(void)user;
	fwrite(text, 1, len, stdout);
	fflush(stdout);
}

static void print_ids(const int32_t *ids, size_t n)
{
	putchar('[');
	for (size_t i = 0; i < n; i++)
		printf("%s%d", i ? ", " : "", ids[i]);
	puts("]");
}

/* One line of --prompts: its ids (messages, or prompt with --chat, through the template). */
static enum tern_status line_ids(struct tern_generator *g, json_t *j, bool chat, int32_t **ids, size_t *n,
				 int64_t lineno, const char *file)
{
	json_t *pr = json_object_get(j, "prompt"), *ms = json_object_get(j, "messages"),
	       *ii = json_object_get(j, "input_ids");
	if (json_is_string(pr))
		return tern_generator_encode(g, json_string_value(pr), chat, ids, n);
	if (json_is_array(ms)) {
		char *t = json_dumps(ms, 0);
		enum tern_status st = t ? tern_generator_encode_chat(g, t, ids, n) : TERN_E_NOMEM;
		free(t);
		return st;
	}
	if (json_is_array(ii) && json_array_size(ii) > 0) {
		*n = json_array_size(ii);
		*ids = malloc(*n * sizeof **ids);
		if (!*ids)
			return TERN_E_NOMEM;
		for (size_t i = 0; i < *n; i++)
			(*ids)[i] = (int32_t)json_integer_value(json_array_get(ii, i));
		return TERN_OK;
	}
	(void)tern_cli_usage("%s:%lld: a line needs \"prompt\" (a string), \"messages\" (a list) or "
			     "\"input_ids\"",
			     file, (long long)lineno);
	return TERN_E_INVALID;
}

static int run_prompts(struct tern_generator *g, const struct gen_args *a)
{
	FILE *f = fopen(a->prompts, "r");
	if (!f) {
		fprintf(stderr, "tern: %s: %s\n", a->prompts, strerror(errno));
		return TERN_EXIT_FAIL;
	}
	char *line = NULL;
	size_t cap = 0;
	int64_t lineno = 0;
	int rc = TERN_EXIT_OK;
	while (rc == TERN_EXIT_OK && getline(&line, &cap, f) > 0) {
		lineno++;
		if (strspn(line, " \t\r\n") == strlen(line))
			continue;
		json_error_t je;
		json_t *j = json_loads(line, 0, &je);
		if (!json_is_object(j)) {
			json_decref(j);
			rc = tern_cli_usage("%s:%lld: not a JSON object (%s)", a->prompts, (long long)lineno,
					    je.text);
			break;
		}
		int32_t *ids = NULL;
		size_t n = 0;
		struct tern_generation r = {0};
		enum tern_status st = line_ids(g, j, a->chat, &ids, &n, lineno, a->prompts);
		if (st == TERN_E_INVALID && !ids && !*tern_error())
			rc = TERN_EXIT_USAGE;
		else if (st == TERN_OK)
			st = tern_generator_run(g, ids, n, &a->p, NULL, NULL, &r);
		if (st != TERN_OK && rc == TERN_EXIT_OK)
			rc = tern_cli_fail(st);
		if (rc == TERN_EXIT_OK) {
			json_t *o = json_object();
			json_t *ja = json_array();
			for (size_t i = 0; i < r.n; i++)
				json_array_append_new(ja, json_integer(r.ids[i]));
			json_object_set_new(o, "line", json_integer(lineno));
			json_object_set_new(o, "completion", r.text ? json_string(r.text) : json_null());
			json_object_set_new(o, "ids", ja);
			json_object_set_new(o, "finish", json_string(r.finish));
			char *s = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
			if (s)
				puts(s);
			fflush(stdout);
			free(s);
			json_decref(o);
		}
		tern_generation_free(&r);
		free(ids);
		json_decref(j);
	}
	free(line);
	fclose(f);
	return rc;
}

int tern_cmd_generate(int argc, char **argv)
{
	struct gen_args a = {0};
	bool help = false;
	int rc = parse("generate", argc, argv, &a, &help);
	if (help) {
		tern_help_generate();
		return TERN_EXIT_OK;
	}
	if (rc != TERN_EXIT_OK)
		return rc;
	int32_t *ids = NULL;
	size_t n = 0;
	if (a.ids && (rc = parse_ids(a.ids, &ids, &n)) != TERN_EXIT_OK)
		return rc;
	struct tern_generator *g = NULL;
	enum tern_status st = tern_generator_open(&a.o, &g);
	if (st != TERN_OK) {
		free(ids);
		return tern_cli_fail(st);
	}
	fprintf(stderr, "tern: generating with %s\n", tern_generator_describe(g));
	if (a.prompts) {
		rc = run_prompts(g, &a);
	} else {
		if (a.prompt)
			st = tern_generator_encode(g, a.prompt, a.chat, &ids, &n);
		struct tern_generation r = {0};
		if (st == TERN_OK)
			st = tern_generator_run(g, ids, n, &a.p, a.print_ids ? NULL : put_text, NULL, &r);
		if (st == TERN_OK) {
			/* the decode rate counts the tokens after the first (each one decode step) */
			fprintf(stderr,
				"tern: prompt %zu tokens in %.3f s (%.1f tok/s); %zu new tokens, decode %.1f tok/s\n",
				n, r.prefill_s, r.prefill_s > 0 ? (double)n / r.prefill_s : 0.0, r.n,
				r.decode_s > 0 && r.n > 1 ? (double)(r.n - 1) / r.decode_s : 0.0);
			if (r.n > 1)
				fprintf(stderr,
					"tern: per decode step: %.1f op calls, %.1f device commands, %.1f barriers, "
					"%.1f submissions, %.1f host waits, %.1f uploads, %.1f downloads\n",
					r.per_step.ops, r.per_step.commands, r.per_step.barriers,
					r.per_step.submits, r.per_step.waits, r.per_step.uploads,
					r.per_step.downloads);
			if (r.profile) /* TERN_PROFILE=1 */
				fprintf(stderr,
					"tern: decode profile, device ms per step: %.3f of %.3f wall: %s\n",
					r.profile_ms, r.n > 1 ? r.decode_s * 1e3 / (double)(r.n - 1) : 0.0,
					r.profile);
			if (a.print_ids)
				print_ids(r.ids, r.n);
			else if (r.text)
				putchar('\n');
			else /* no tokenizer: the ids are all there is to show */
				print_ids(r.ids, r.n);
		}
		tern_generation_free(&r);
		rc = st == TERN_OK ? TERN_EXIT_OK : tern_cli_fail(st);
	}
	fflush(stdout);
	free(ids);
	tern_generator_free(g);
	return rc;
}

int tern_cmd_chat(int argc, char **argv)
{
	struct gen_args a = {0};
	bool help = false;
	int rc = parse("chat", argc, argv, &a, &help);
	if (help) {
		tern_help_chat();
		return TERN_EXIT_OK;
	}
	if (rc != TERN_EXIT_OK)
		return rc;
	struct tern_generator *g = NULL;
	enum tern_status st = tern_generator_open(&a.o, &g);
	if (st != TERN_OK)
		return tern_cli_fail(st);
	bool tty = isatty(fileno(stdin));
	fprintf(stderr, "tern: chatting with %s%s\n", tern_generator_describe(g),
		tty ? " (/reset forgets, /exit quits)" : "");
	json_t *msgs = json_array();
	if (a.system)
		json_array_append_new(msgs, json_pack("{s:s, s:s}", "role", "system", "content", a.system));
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	for (;;) {
		if (tty) {
			fputs("> ", stdout);
			fflush(stdout);
		}
		if ((len = getline(&line, &cap, stdin)) <= 0)
			break;
		while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
			line[--len] = '\0';
		if (!strcmp(line, "/exit"))
			break;
		if (!strcmp(line, "/reset")) {
			json_array_clear(msgs);
			if (a.system)
				json_array_append_new(
					msgs, json_pack("{s:s, s:s}", "role", "system", "content", a.system));
			continue;
		}
		if (!len)
			continue;
		json_t *um = json_pack("{s:s, s:s}", "role", "user", "content", line);
		if (!um) {
			fprintf(stderr, "tern: the message is not valid UTF-8\n");
			continue;
		}
		json_array_append_new(msgs, um);
		char *t = json_dumps(msgs, 0);
		int32_t *ids = NULL;
		size_t n = 0;
		struct tern_generation r = {0};
		st = t ? tern_generator_encode_chat(g, t, &ids, &n) : TERN_E_NOMEM;
		free(t);
		if (st == TERN_OK)
			st = tern_generator_run(g, ids, n, &a.p, put_text, NULL, &r);
		free(ids);
		if (st != TERN_OK) {
			tern_generation_free(&r);
			rc = tern_cli_fail(st);
			break;
		}
		putchar('\n');
		fflush(stdout);
		json_array_append_new(
			msgs, json_pack("{s:s, s:s}", "role", "assistant", "content", r.text ? r.text : ""));
		tern_generation_free(&r);
	}
	free(line);
	json_decref(msgs);
	tern_generator_free(g);
	return rc;
}
