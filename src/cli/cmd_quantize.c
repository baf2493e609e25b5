/* tern quantize DIR: converts a model directory into a pack file (the projections in a base
 * format) and/or a bitsandbytes 4-bit model directory. */
#include "cli.h"
#include "tern/model.h"

#include <stdio.h>
#include <string.h>

static const char *const formats[] = {"auto", "nf4", "nf4-dq", "ternary", "bf16", "f16", "f32", NULL};

struct quantize_args {
	const char *format, *out, *bnb_out;
	long long blocksize;
	bool force;
};
static struct quantize_args args;

/* --out and --bnb-out take any path: a choice list of NULL accepts nothing, so they are parsed
 * by hand before the table. */
static const struct tern_cli_opt quantize_opts[] = {
	{"--format", "F", TERN_CLI_CHOICE, .choices = formats, .dst = &args.format,
	 .help = "projection format: nf4, nf4-dq, ternary, bf16, f16, f32, or auto\n"
		 "(default auto: a bitsandbytes checkpoint as stored, else nf4-dq)"},
	{"--blocksize", "N", TERN_CLI_INT, 32, 4096, .dst = &args.blocksize,
	 .help = "NF4 block size, a power of two (default 64; a bitsandbytes input: its own)"},
	{NULL, NULL, TERN_CLI_INT, .help = NULL},
};

void tern_help_quantize(void)
{
	printf("usage: tern quantize MODEL_DIR [--format F] [--blocksize N] --out PACKFILE [--force]\n"
	       "                     [--bnb-out DIR]\n"
	       "\n"
	       "Converts a Hugging Face model directory (or a bitsandbytes 4-bit one) once: the projection\n"
	       "weights (q, k, v, o, gate, up, down) in the base format, embeddings, norms, biases and\n"
	       "lm_head as stored. The pack file is what training mmaps; it is written atomically, and an\n"
	       "up-to-date one (same source files, format and block size) is reused unless --force.\n"
	       "--bnb-out also writes a bitsandbytes-compatible model directory (nf4 or nf4-dq only)\n"
	       "that transformers + bitsandbytes load with from_pretrained.\n"
	       "\n"
	       "options:\n");
	printf("  %-18s %s\n", "--out PACKFILE", "the pack file to write");
	printf("  %-18s %s\n", "--bnb-out DIR", "also write a bitsandbytes 4-bit model directory");
	printf("  %-18s %s\n", "--force", "rebuild the pack file even when it is up to date");
	tern_cli_print_opts(quantize_opts);
}

int tern_cmd_quantize(int argc, char **argv)
{
	bool help = false;
	const char *dir = NULL;
	char *rest[64];
	int nrest = 0;
	args = (struct quantize_args){.format = "auto"};
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = !strcmp(a, "--out")       ? &args.out
				   : !strcmp(a, "--bnb-out") ? &args.bnb_out
							     : NULL;
		if (!strcmp(a, "--force")) {
			args.force = true;
		} else if (dst) {
			if (i + 1 >= argc)
				return tern_cli_usage("quantize: %s needs a value (a path)", a);
			*dst = argv[++i];
		} else if (!strncmp(a, "--out=", 6)) {
			args.out = a + 6;
		} else if (!strncmp(a, "--bnb-out=", 10)) {
			args.bnb_out = a + 10;
		} else if (a[0] != '-' && !dir &&
			   (i == 0 ||
			    (strcmp(argv[i - 1], "--format") && strcmp(argv[i - 1], "--blocksize")))) {
			dir = a;
		} else if (nrest < 64) {
			rest[nrest++] = argv[i];
		} else {
			return tern_cli_usage("quantize: too many arguments");
		}
	}
	int rc = tern_cli_parse("quantize", quantize_opts, nrest, rest, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_quantize();
		return TERN_EXIT_OK;
	}
	if (!dir)
		return tern_cli_usage(
			"quantize: missing MODEL_DIR (usage: tern quantize MODEL_DIR --out PACKFILE)");
	if (!args.out && !args.bnb_out)
		return tern_cli_usage(
			"quantize: nothing to write (allowed: --out PACKFILE, --bnb-out DIR, or both)");
	if (args.blocksize && (args.blocksize & (args.blocksize - 1)))
		return tern_cli_usage(
			"quantize: --blocksize: bad value '%lld' (allowed: a power of two from 32 to 4096)",
			args.blocksize);
	enum tern_base_format fmt = TERN_FORMAT_AUTO;
	tern_base_format_parse(args.format, &fmt);
	if (args.bnb_out && fmt != TERN_FORMAT_AUTO && fmt != TERN_FORMAT_NF4 && fmt != TERN_FORMAT_NF4_DQ)
		return tern_cli_usage("quantize: --bnb-out needs --format nf4, nf4-dq or auto (got %s)",
				      args.format);
	tern_cli_set_log();

	struct tern_model_opts o = {.format = fmt,
				    .blocksize = (int)args.blocksize,
				    .pack_path = args.out,
				    .rebuild = args.force};
	struct tern_model *m = NULL;
	enum tern_status st = tern_model_open(dir, &o, &m);
	if (st)
		return tern_cli_fail(st);
	struct tern_model_load_report r;
	tern_model_report(m, &r);
	if (args.out && r.reused)
		printf("%s is up to date: %u tensors, %.1f MiB, projections %s, opened in %.2f s\n", args.out,
		       r.n_tensors, (double)r.pack_bytes / 1048576.0, r.format, r.seconds);
	else if (args.out)
		printf("wrote %s (%s): %u tensors, %.1f MiB, projections %s, in %.2f s\n", args.out, r.why,
		       r.n_tensors, (double)r.pack_bytes / 1048576.0, r.format, r.seconds);
	if (args.bnb_out) {
		st = tern_model_write_bnb(m, args.bnb_out);
		if (st) {
			tern_model_free(m);
			return tern_cli_fail(st);
		}
		printf("wrote %s: bitsandbytes 4-bit model directory (%s)\n", args.bnb_out, r.format);
	}
	tern_model_free(m);
	return TERN_EXIT_OK;
}
