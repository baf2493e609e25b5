/* tern: the command-line program. Dispatches subcommands and owns option parsing, logging and
 * exit codes (see cli.h). */
#include "cli.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int tern_cli_verbose;

static const char *const log_tag[] = {"error", "warning", "info", "debug"};

static void log_stderr(int level, const char *msg, void *user)
{
	(void)user;
	if (level == TERN_LOG_NOTE_LEVEL && !strncmp(msg, "note: ", 6)) {
		fprintf(stderr, "tern: %s\n", msg); /* what tern does instead of an accepted key */
		return;
	}
	fprintf(stderr, "tern: %s: %s\n", log_tag[level < 0 ? 0 : level > 3 ? 3 : level], msg);
}

void tern_cli_set_log(void)
{
	int level = 1 + tern_cli_verbose; /* 1 warnings, 2 info, 3 debug */
	tern_set_log(log_stderr, NULL, level > 3 ? 3 : level);
}

int tern_cli_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("tern: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return TERN_EXIT_USAGE;
}

int tern_cli_fail(enum tern_status st)
{
	const char *msg = tern_error();
	tern_cli_progress_break();
	fprintf(stderr, "tern: %s\n", msg && *msg ? msg : tern_status_str(st));
	return TERN_EXIT_FAIL;
}

/* ---- option parsing ---- */

static bool is_help(const char *a) { return !strcmp(a, "-h") || !strcmp(a, "--help"); }
static bool is_verbose(const char *a) { return !strcmp(a, "-v") || !strcmp(a, "--verbose"); }

/* "an integer from 1 to 16777216", "one of cpu, vulkan, auto", ... */
static void describe(const struct tern_cli_opt *o, char *buf, size_t size)
{
	size_t len = 0;
	switch (o->kind) {
	case TERN_CLI_INT: snprintf(buf, size, "an integer from %lld to %lld", o->lo, o->hi); return;
	case TERN_CLI_NUM: snprintf(buf, size, "a number from %g to %g", o->dlo, o->dhi); return;
	case TERN_CLI_CHOICE:
	case TERN_CLI_LIST:
		len = (size_t)snprintf(buf, size, "%s",
				       o->kind == TERN_CLI_CHOICE ? "one of " : "a comma-separated list of ");
		for (int i = 0; o->choices[i] && len < size; i++)
			len += (size_t)snprintf(buf + len, size - len, "%s%s", i ? ", " : "", o->choices[i]);
		return;
	}
}

static bool in_choices(const char *const *choices, const char *s, size_t len)
{
	for (int i = 0; choices[i]; i++)
		if (strlen(choices[i]) == len && !strncmp(choices[i], s, len))
			return true;
	return false;
}

static int set_value(const char *cmd, const struct tern_cli_opt *o, const char *v)
{
	char allowed[512];
	describe(o, allowed, sizeof allowed);
	switch (o->kind) {
	case TERN_CLI_INT: {
		char *end;
		errno = 0;
		long long x = strtoll(v, &end, 10);
		if (!*v || *end || errno || x < o->lo || x > o->hi)
			return tern_cli_usage("%s: %s: bad value '%s' (allowed: %s)", cmd, o->name, v,
					      allowed);
		*(long long *)o->dst = x;
		return TERN_EXIT_OK;
	}
	case TERN_CLI_NUM: {
		char *end;
		errno = 0;
		double x = strtod(v, &end);
		if (!*v || *end || errno || !isfinite(x) || x < o->dlo || x > o->dhi)
			return tern_cli_usage("%s: %s: bad value '%s' (allowed: %s)", cmd, o->name, v,
					      allowed);
		*(double *)o->dst = x;
		return TERN_EXIT_OK;
	}
	case TERN_CLI_CHOICE:
		if (!in_choices(o->choices, v, strlen(v)))
			return tern_cli_usage("%s: %s: bad value '%s' (allowed: %s)", cmd, o->name, v,
					      allowed);
		*(const char **)o->dst = v;
		return TERN_EXIT_OK;
	case TERN_CLI_LIST: {
		const char *p = v;
		if (!*v)
			return tern_cli_usage("%s: %s: empty value (allowed: %s)", cmd, o->name, allowed);
		for (;;) {
			size_t len = strcspn(p, ",");
			if (!in_choices(o->choices, p, len))
				return tern_cli_usage("%s: %s: bad value '%.*s' in '%s' (allowed: %s)", cmd,
						      o->name, (int)len, p, v, allowed);
			if (!p[len])
				break;
			p += len + 1;
		}
		*(const char **)o->dst = v;
		return TERN_EXIT_OK;
	}
	}
	return TERN_EXIT_USAGE;
}

int tern_cli_parse(const char *cmd, const struct tern_cli_opt *opts, int argc, char **argv, bool *help)
{
	*help = false;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (is_help(a)) {
			*help = true;
			continue;
		}
		if (is_verbose(a)) {
			tern_cli_verbose++;
			continue;
		}
		const struct tern_cli_opt *o = NULL;
		const char *value = NULL;
		for (int k = 0; opts && opts[k].name && !o; k++) {
			size_t n = strlen(opts[k].name);
			if (!strncmp(a, opts[k].name, n) && (a[n] == 0 || a[n] == '=')) {
				o = &opts[k];
				value = a[n] == '=' ? a + n + 1 : NULL;
			}
		}
		if (!o) {
			char allowed[512];
			size_t len = 0;
			for (int k = 0; opts && opts[k].name && len < sizeof allowed; k++)
				len += (size_t)snprintf(allowed + len, sizeof allowed - len, "%s, ",
							opts[k].name);
			if (len < sizeof allowed)
				snprintf(allowed + len, sizeof allowed - len, "-v, --help");
			if (a[0] == '-')
				return tern_cli_usage("%s: unknown option '%s' (allowed: %s)", cmd, a,
						      allowed);
			return tern_cli_usage("%s: unexpected argument '%s' (allowed: %s)", cmd, a, allowed);
		}
		if (!value) {
			if (i + 1 >= argc) {
				char allowed[512];
				describe(o, allowed, sizeof allowed);
				return tern_cli_usage("%s: %s needs a value (allowed: %s)", cmd, o->name,
						      allowed);
			}
			value = argv[++i];
		}
		int rc = set_value(cmd, o, value);
		if (rc)
			return rc;
	}
	return TERN_EXIT_OK;
}

void tern_cli_print_opts(const struct tern_cli_opt *opts)
{
	for (int k = 0; opts && opts[k].name; k++) {
		char left[64];
		snprintf(left, sizeof left, "%s %s", opts[k].name, opts[k].meta ? opts[k].meta : "");
		/* A '\n' in the help continues it under the help column. */
		const char *h = opts[k].help;
		size_t len = strcspn(h, "\n");
		printf("  %-18s %.*s\n", left, (int)len, h);
		while (h[len]) {
			h += len + 1;
			len = strcspn(h, "\n");
			printf("  %-18s %.*s\n", "", (int)len, h);
		}
	}
	printf("  %-18s %s\n", "-v, --verbose", "more log output on stderr (info; twice: debug)");
	printf("  %-18s %s\n", "-h, --help", "this help");
}

/* ---- commands ---- */

/* `tern bench ops`: the one benchmark so far, named after the command. */
static int cmd_bench(int argc, char **argv)
{
	if (argc < 1)
		return tern_cli_usage("bench: missing what to benchmark (allowed: ops)");
	if (is_help(argv[0])) {
		tern_help_bench_ops();
		return TERN_EXIT_OK;
	}
	if (strcmp(argv[0], "ops"))
		return tern_cli_usage("bench: unknown benchmark '%s' (allowed: ops)", argv[0]);
	return tern_cmd_bench_ops(argc - 1, argv + 1);
}

/* Every command: its name, how its usage line starts, what it does, and its two entry points
 * (run gets the arguments after the name; help prints `tern <name> --help`). The usage text, the
 * dispatch and the lists of allowed names all come from this table. */
static const struct command {
	const char *name;
	const char *synopsis;
	const char *summary;
	int (*run)(int argc, char **argv);
	void (*help)(void);
} commands[] = {
	{"devices", "devices", "list backends and devices with the capabilities that matter",
	 tern_cmd_devices, tern_help_devices},
	{"bench", "bench ops", "time every op at one shape; prints ms, GFLOP/s and GB/s", cmd_bench,
	 tern_help_bench_ops},
	{"info", "info DIR|ORG/NAME", "a model directory or Hub id: architecture, sizes, parameters, memory",
	 tern_cmd_info, tern_help_info},
	{"quantize", "quantize DIR",
	 "convert a model into a pack file (--out) or bitsandbytes dir (--bnb-out)", tern_cmd_quantize,
	 tern_help_quantize},
	{"train", "train CONFIG", "fine-tune a LoRA/QLoRA adapter as a YAML config says", tern_cmd_train,
	 tern_help_train},
	{"eval", "eval CONFIG", "loss and perplexity of the base model and of base + adapter", tern_cmd_eval,
	 tern_help_eval},
	{"plan", "plan CONFIG", "where each layer would live (device, host, disk) under memory budgets",
	 tern_cmd_plan, tern_help_plan},
	{"report", "report DIR", "charts of a run's metrics.jsonl as one HTML page (DIR/report.html)",
	 tern_cmd_report, tern_help_report},
	{"generate", "generate MODEL", "continue a prompt with a model (+ adapter), streamed as it comes",
	 tern_cmd_generate, tern_help_generate},
	{"chat", "chat MODEL", "talk with a model (+ adapter) through its chat template", tern_cmd_chat,
	 tern_help_chat},
	{"tokenize", "tokenize", "encode text with a model's tokenizer.json (ids as JSON), or --decode",
	 tern_cmd_tokenize, tern_help_tokenize},
	{"merge", "merge CONFIG", "merge the adapter into its base: a Hugging Face model directory",
	 tern_cmd_merge, tern_help_merge},
	{"export", "export gguf CONFIG", "the merged model or the adapter as GGUF for llama.cpp",
	 tern_cmd_export, tern_help_export},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static const struct command *find_command(const char *name)
{
	for (size_t i = 0; i < N_COMMANDS; i++)
		if (!strcmp(commands[i].name, name))
			return &commands[i];
	return NULL;
}

/* "devices, bench, ..." for the error lines that list what is allowed. */
static const char *command_names(void)
{
	static char buf[512];
	size_t len = 0;
	for (size_t i = 0; i < N_COMMANDS && len < sizeof buf; i++)
		len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", commands[i].name);
	return buf;
}

static void print_usage(FILE *f)
{
	fprintf(f, "usage: tern [-v] <command> [options]\n\ncommands:\n");
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(f, "  %-18s %s\n", commands[i].synopsis, commands[i].summary);
	fprintf(f, "\n"
		   "options:\n"
		   "  -v, --verbose      more log output on stderr (info; twice: debug)\n"
		   "  -h, --help         this help; `tern <command> --help` for a command's options\n"
		   "  --version          print the version and the backends built in\n");
}

static void print_help(void)
{
	printf("tern %s - LoRA/QLoRA fine-tuning on Vulkan GPUs and a plain-C reference backend\n\n",
	       TERN_VERSION);
	print_usage(stdout);
}

static void print_version(void)
{
	printf("tern %s (backends: ref, cpu%s%s)\n", TERN_VERSION,
#ifdef TERN_HAVE_VULKAN
	       ", vulkan",
#else
	       "",
#endif
#ifdef TERN_HAVE_CUDA
	       ", cuda"
#else
	       ""
#endif
	);
}

/* `tern help [command...]` and `tern <command> --help` show the same text. */
static int help_for(int argc, char **argv)
{
	if (argc == 0) {
		print_help();
		return TERN_EXIT_OK;
	}
	const struct command *c = find_command(argv[0]);
	if (!c)
		return tern_cli_usage("help: unknown command '%s' (allowed: %s)", argv[0], command_names());
	c->help();
	return TERN_EXIT_OK;
}

int main(int argc, char **argv)
{
	int i = 1;
	tern_cli_set_log();
	tern_cli_set_progress();
	/* Global options before the command. */
	for (; i < argc && argv[i][0] == '-'; i++) {
		const char *a = argv[i];
		if (is_verbose(a)) {
			tern_cli_verbose++;
		} else if (is_help(a)) {
			print_help();
			return TERN_EXIT_OK;
		} else if (!strcmp(a, "--version")) {
			print_version();
			return TERN_EXIT_OK;
		} else {
			return tern_cli_usage("unknown option '%s' (allowed: -v, --help, --version, or a "
					      "command: %s)",
					      a, command_names());
		}
	}
	tern_cli_set_log(); /* the -v given before the command */
	if (i >= argc) {
		print_usage(stderr);
		return TERN_EXIT_USAGE;
	}
	const char *cmd = argv[i++];
	if (!strcmp(cmd, "help"))
		return help_for(argc - i, argv + i);
	const struct command *c = find_command(cmd);
	if (!c)
		return tern_cli_usage("unknown command '%s' (allowed: %s, help)", cmd, command_names());
	return c->run(argc - i, argv + i);
}
