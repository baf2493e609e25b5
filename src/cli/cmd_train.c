/* tern train CONFIG and tern eval CONFIG: the trainer's commands (include/tern/train.h). */
#include "cli.h"
#include "tern/train.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

void tern_help_train(void)
{
	printf("usage: tern train CONFIG.yaml [--set KEY=VALUE]... [--profile]\n"
	       "\n"
	       "Fine-tunes a LoRA/QLoRA adapter as the YAML config says (axolotl's keys plus tern's own;\n"
	       "docs/CONFIG.md). Prints the resolved config, a banner and a progress line; writes\n"
	       "<output_dir>/config.yaml, metrics.jsonl, checkpoint-N/ (save_steps) and the PEFT adapter\n"
	       "<output_dir>/adapter. Ctrl-C (or SIGTERM) stops after the current step and writes a\n"
	       "checkpoint that `resume_from_checkpoint: auto` continues (exit 130, SIGTERM 143); a\n"
	       "second Ctrl-C stops at once, losing only the step in progress. One run at a time per\n"
	       "output_dir (<output_dir>/.tern.lock).\n"
	       "\n"
	       "options:\n"
	       "  --set KEY=VALUE    override a config key (YAML value; dotted keys reach into lists:\n"
	       "                     datasets.0.path=x.jsonl); repeatable\n"
	       "  --profile          after every step, a line with the device time per op kind and the\n"
	       "                     TFLOP/s achieved, also in metrics.jsonl (profile_*); may slow the\n"
	       "                     steps (docs/PERFORMANCE.md). TERN_PROFILE=1 does the same\n");
}

void tern_help_eval(void)
{
	printf("usage: tern eval CONFIG.yaml [--adapter DIR] [--set KEY=VALUE]...\n"
	       "\n"
	       "Loss and perplexity of the base model, and of base + adapter, on the config's validation\n"
	       "split (all of its data when val_set_size is 0). The adapter is DIR, else\n"
	       "<output_dir>/adapter when it exists, else lora_model_dir.\n"
	       "\n"
	       "options:\n"
	       "  --adapter DIR      the PEFT adapter directory to evaluate\n"
	       "  --set KEY=VALUE    override a config key; repeatable\n");
}

/* CONFIG, --set KEY=VALUE (or --set=KEY=VALUE), --adapter DIR for eval and --profile for train
 * (adapter, profile: NULL where the command has no such option). */
static int parse(const char *cmd, int argc, char **argv, const char **config, const char **sets, int *n_sets,
		 const char **adapter, bool *profile, bool *help)
{
	*n_sets = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
			*help = true;
			return TERN_EXIT_OK;
		} else if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) {
			tern_cli_verbose++;
			tern_cli_set_log();
		} else if (!strcmp(a, "--set") || !strncmp(a, "--set=", 6)) {
			const char *v = a[5] == '=' ? a + 6 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v || !strchr(v, '='))
				return tern_cli_usage("%s: --set needs KEY=VALUE (e.g. --set lora_r=16)",
						      cmd);
			if (*n_sets >= 256)
				return tern_cli_usage("%s: more than 256 --set options", cmd);
			sets[(*n_sets)++] = v;
		} else if (adapter && (!strcmp(a, "--adapter") || !strncmp(a, "--adapter=", 10))) {
			const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v || !*v)
				return tern_cli_usage("%s: --adapter needs a directory", cmd);
			*adapter = v;
		} else if (profile && !strcmp(a, "--profile")) {
			*profile = true;
		} else if (a[0] == '-') {
			return tern_cli_usage("%s: unknown option '%s' (allowed: --set KEY=VALUE%s, --help)",
					      cmd, a,
					      adapter   ? ", --adapter DIR"
					      : profile ? ", --profile"
							: "");
		} else if (*config) {
			return tern_cli_usage("%s: more than one config file ('%s' and '%s')", cmd, *config,
					      a);
		} else {
			*config = a;
		}
	}
	if (!*config)
		return tern_cli_usage("%s: missing the config file (tern %s CONFIG.yaml)", cmd, cmd);
	return TERN_EXIT_OK;
}

int tern_cmd_train(int argc, char **argv)
{
	const char *config = NULL, *sets[256];
	int n_sets = 0;
	bool help = false;
	struct tern_train_opts opts = {0};
	int rc = parse("train", argc, argv, &config, sets, &n_sets, NULL, &opts.profile, &help);
	if (help) {
		tern_help_train();
		return TERN_EXIT_OK;
	}
	if (rc != TERN_EXIT_OK)
		return rc;
	struct tern_train_result res;
	enum tern_status st = tern_train(config, sets, n_sets, &opts, stdout, &res);
	fflush(stdout);
	if (st == TERN_E_INTERRUPTED) { /* 128 + the signal, as the shell reports a signal's end */
		fprintf(stderr, "tern: %s\n", tern_error());
		return 128 + (res.interrupted > 0 ? res.interrupted : SIGINT);
	}
	return st == TERN_OK ? TERN_EXIT_OK : tern_cli_fail(st);
}

int tern_cmd_eval(int argc, char **argv)
{
	const char *config = NULL, *sets[256], *adapter = NULL;
	int n_sets = 0;
	bool help = false;
	int rc = parse("eval", argc, argv, &config, sets, &n_sets, &adapter, NULL, &help);
	if (help) {
		tern_help_eval();
		return TERN_EXIT_OK;
	}
	if (rc != TERN_EXIT_OK)
		return rc;
	struct tern_eval_result res;
	enum tern_status st = tern_eval(config, sets, n_sets, adapter, stdout, &res);
	return st == TERN_OK ? TERN_EXIT_OK : tern_cli_fail(st);
}
