/* tern train CONFIG and tern eval CONFIG: the trainer's commands (include/tern/train.h).
 * Several processes: `mpirun -n N tern train CONFIG`, or `tern train CONFIG --devices 0,1`, which
 * starts mpirun itself (include/tern/dist.h). */
#define _POSIX_C_SOURCE 200809L /* setenv, execv, readlink */
#include "cli.h"
#include "tern/dist.h"
#include "tern/train.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tern_help_train(void)
{
	printf("usage: tern train CONFIG.yaml [--set KEY=VALUE]... [--profile] [--devices LIST]\n"
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
	       "                     steps (docs/PERFORMANCE.md). TERN_PROFILE=1 does the same\n"
	       "  --devices LIST     data parallel: one process per device of LIST (e.g. 0,1), started\n"
	       "                     with mpirun; each step takes micro_batch_size x\n"
	       "                     gradient_accumulation_steps rows per device (docs/CONFIG.md,\n"
	       "                     \"Several devices\"). `mpirun -n N tern train CONFIG` does the same\n"
	       "                     with devices device..device+N-1. With layer_split: auto (or\n"
	       "                     --set layer_split=auto) the processes split the layers instead:\n"
	       "                     a model across devices (docs/CONFIG.md, \"layer split\")\n");
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
		 const char **adapter, bool *profile, const char **devices, bool *help)
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
		} else if (devices && (!strcmp(a, "--devices") || !strncmp(a, "--devices=", 10))) {
			const char *v = a[9] == '=' ? a + 10 : (i + 1 < argc ? argv[++i] : NULL);
			if (!v || !*v || strspn(v, "0123456789,") != strlen(v) || v[0] == ',' ||
			    v[strlen(v) - 1] == ',' || strstr(v, ",,"))
				return tern_cli_usage("%s: --devices needs a comma list of device indices "
						      "(e.g. 0,1; tern devices lists them)",
						      cmd);
			*devices = v;
		} else if (a[0] == '-') {
			return tern_cli_usage("%s: unknown option '%s' (allowed: --set KEY=VALUE%s, --help)",
					      cmd, a,
					      adapter   ? ", --adapter DIR"
					      : profile ? ", --profile, --devices LIST"
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

/* Whether the program prog is on PATH (or, with a slash, that file) and executable. */
static bool on_path(const char *prog, char *full, size_t cap)
{
	if (strchr(prog, '/')) {
		snprintf(full, cap, "%s", prog);
		return access(full, X_OK) == 0;
	}
	const char *p = getenv("PATH");
	while (p && *p) {
		size_t n = strcspn(p, ":");
		snprintf(full, cap, "%.*s/%s", (int)n, p, prog);
		if (n && access(full, X_OK) == 0)
			return true;
		p += n + (p[n] == ':');
	}
	return false;
}

/* --devices with several entries, not under a launcher yet: replaces this process with OpenMPI's
 * `mpirun -n N --bind-to none --oversubscribe -x TERN_DEVICES <this tern> train ARGS` (the same
 * arguments less --devices; TERN_DEVICES says each rank's device). TERN_MPIRUN names another
 * mpirun. Returns only on failure, after one line. */
static int launch(const char *devices, int argc, char **argv)
{
	int n = 1;
	for (const char *p = devices; *p; p++)
		n += *p == ',';
	if (!tern_dist_mpi_built())
		return tern_cli_usage("train: --devices %s needs %d processes, but this tern was built "
				      "without MPI (TERN_MPI=OFF); install libopenmpi-dev and rebuild, or "
				      "give one device",
				      devices, n);
	const char *mpirun = getenv("TERN_MPIRUN");
	char full[4096], self[4096];
	if (!mpirun || !*mpirun)
		mpirun = "mpirun";
	if (!on_path(mpirun, full, sizeof full))
		return tern_cli_usage("train: --devices %s starts %d processes with mpirun, which is not "
				      "on PATH (apt-get install openmpi-bin); or start them yourself: "
				      "mpirun -n %d tern train CONFIG ...",
				      devices, n, n);
	ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
	if (len <= 0)
		return tern_cli_usage("train: cannot find this program (/proc/self/exe) to start it "
				      "%d times; run mpirun -n %d tern train CONFIG ...",
				      n, n);
	self[len] = 0;
	char np[16];
	snprintf(np, sizeof np, "%d", n);
	char **av = calloc((size_t)argc + 12, sizeof *av);
	if (!av)
		return tern_cli_usage("train: out of memory");
	int k = 0;
	av[k++] = full;
	av[k++] = "-n";
	av[k++] = np;
	av[k++] = "--bind-to"; /* each rank's OpenMP and streaming threads may use every core */
	av[k++] = "none";
	av[k++] = "--oversubscribe"; /* one rank per device, however many cores the host shows */
	av[k++] = "-x";
	av[k++] = "TERN_DEVICES";
	av[k++] = self;
	av[k++] = "train";
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--devices")) {
			i++;
			continue;
		}
		if (!strncmp(argv[i], "--devices=", 10))
			continue;
		av[k++] = argv[i];
	}
	av[k] = NULL;
	fflush(stdout);
	execv(full, av);
	int e = errno;
	free(av);
	return tern_cli_usage("train: cannot start %s: %s", full, strerror(e));
}

int tern_cmd_train(int argc, char **argv)
{
	const char *config = NULL, *sets[256];
	int n_sets = 0;
	bool help = false;
	struct tern_train_opts opts = {0};
	const char *devices = NULL;
	int rc = parse("train", argc, argv, &config, sets, &n_sets, NULL, &opts.profile, &devices, &help);
	if (help) {
		tern_help_train();
		return TERN_EXIT_OK;
	}
	if (rc != TERN_EXIT_OK)
		return rc;
	if (devices) {
		/* TERN_DEVICES: the device of each rank (the trainer reads it) */
		if (setenv("TERN_DEVICES", devices, 1) != 0)
			return tern_cli_usage("train: cannot set TERN_DEVICES");
		if (strchr(devices, ',') && !tern_dist_launched())
			return launch(devices, argc, argv);
	}
	enum tern_status st = tern_dist_init(NULL, NULL);
	if (st != TERN_OK)
		return tern_cli_fail(st);
	int rank = tern_dist_rank(), size = tern_dist_size();
	FILE *out = stdout;
	if (rank > 0) { /* rank 0 reports for all; the others only fail */
		tern_cli_verbose = -1;
		tern_cli_set_log();
		if (!(out = fopen("/dev/null", "w")))
			out = stdout;
	}
	struct tern_train_result res;
	st = tern_train(config, sets, n_sets, &opts, out, &res);
	fflush(out);
	if (out != stdout)
		fclose(out);
	if (st == TERN_E_INTERRUPTED) { /* 128 + the signal, as the shell reports a signal's end */
		if (rank == 0)
			fprintf(stderr, "tern: %s\n", tern_error());
		tern_dist_finalize();
		return 128 + (res.interrupted > 0 ? res.interrupted : SIGINT);
	}
	if (st != TERN_OK) {
		if (size > 1) { /* the other ranks would wait for this one: end them */
			fprintf(stderr, "tern: rank %d of %d: %s\n", rank, size, tern_error());
			fflush(stderr);
			tern_dist_abort(TERN_EXIT_FAIL);
		}
		return tern_cli_fail(st);
	}
	tern_dist_finalize();
	return TERN_EXIT_OK;
}

int tern_cmd_eval(int argc, char **argv)
{
	const char *config = NULL, *sets[256], *adapter = NULL;
	int n_sets = 0;
	bool help = false;
	int rc = parse("eval", argc, argv, &config, sets, &n_sets, &adapter, NULL, NULL, &help);
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
