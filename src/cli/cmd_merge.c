/* tern merge and tern export gguf: the adapter merged into its base as a Hugging Face directory,
 * and GGUF files for llama.cpp (the merged model, or the adapter as a GGUF LoRA). */
#include "cli.h"
#include "tern/export.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const dtypes[] = {"bf16", "f16", "f32", NULL};
static const char *const gtypes[] = {"f16", "bf16", "q8_0", "q4_k_m", "f32", NULL};
static const char *const formats[] = {"auto", "nf4", "nf4-dq", "ternary", "bf16", "f16", "f32", NULL};

struct merge_args {
	const char *config, *base, *adapter, *out;
	const char *dtype, *type, *format;
	const char *shard;
	bool lora;
};
static struct merge_args args;

static const struct tern_cli_opt merge_opts[] = {
	{"--dtype", "T", TERN_CLI_CHOICE, .choices = dtypes, .dst = &args.dtype,
	 .help = "weights of the merged model: bf16, f16, f32 (default: the base's dtype)"},
	{"--base-format", "F", TERN_CLI_CHOICE, .choices = formats, .dst = &args.format,
	 .help = "the base weights the adapter is added to: auto (a config's base_format,\n"
		 "else as stored; bitsandbytes 4-bit dequantized), nf4, nf4-dq, ternary\n"
		 "(quantized as training did, then dequantized), bf16, f16, f32"},
	{NULL, NULL, TERN_CLI_INT, .help = NULL},
};

static const struct tern_cli_opt gguf_opts[] = {
	{"--type", "T", TERN_CLI_CHOICE, .choices = gtypes, .dst = &args.type,
	 .help = "tensor type: f16, bf16, q8_0, q4_k_m (a model), f32\n(default f16; a LoRA: f32)"},
	{"--base-format", "F", TERN_CLI_CHOICE, .choices = formats, .dst = &args.format,
	 .help = "as for tern merge"},
	{NULL, NULL, TERN_CLI_INT, .help = NULL},
};

void tern_help_merge(void)
{
	printf("usage: tern merge CONFIG --out DIR [--adapter DIR] [--dtype T]\n"
	       "       tern merge [--base MODEL_DIR] --adapter ADAPTER_DIR --out DIR [--dtype T]\n"
	       "\n"
	       "Adds a LoRA adapter (tern's <output_dir>/adapter, or any PEFT LoRA directory) to its\n"
	       "base model: "
	       "W' = W + scale * B A for every targeted projection (scale alpha / r, or alpha / sqrt(r)\n"
	       "with rsLoRA), modules_to_save tensors taken from the adapter, and writes a Hugging Face\n"
	       "model directory (config.json without quantization_config, generation_config.json, the\n"
	       "tokenizer files, safetensors shards with model.safetensors.index.json) that transformers\n"
	       "and vLLM load as a plain model. With CONFIG (a training config) the base is its base_model,\n"
	       "the adapter <output_dir>/adapter, and an NF4 / ternary base is quantized as in training and\n"
	       "dequantized before the adapter is added (as PEFT's merge_and_unload on a bitsandbytes\n"
	       "model). One tensor at a time; written to DIR.tmp.<pid> and renamed: DIR must not exist.\n"
	       "\n"
	       "options:\n");
	printf("  %-18s %s\n", "--base DIR", "the base model directory (instead of CONFIG)");
	printf("  %-18s %s\n", "--adapter DIR",
	       "the adapter directory (with CONFIG: default <output_dir>/adapter)");
	printf("  %-18s %s\n", "--out DIR", "the model directory to write (must not exist)");
	printf("  %-18s %s\n", "--shard-size S",
	       "largest safetensors file: bytes, or with KB, MB, GB (default 5GB)");
	tern_cli_print_opts(merge_opts);
}

void tern_help_export(void)
{
	printf("usage: tern export gguf CONFIG --out FILE [--lora] [--type T]\n"
	       "       tern export gguf --base MODEL_DIR [--adapter DIR] --out FILE [--lora] [--type T]\n"
	       "\n"
	       "Writes a GGUF file for llama.cpp (and Ollama, LM Studio). By default the merged model (base +\n"
	       "adapter as tern merge computes it; the base alone without an adapter) in f16, bf16 or q8_0,\n"
	       "with llama.cpp's architecture metadata, the tokenizer and the chat template. With --lora the\n"
	       "adapter alone, as a GGUF LoRA adapter (llama-cli --lora FILE on the base model's GGUF).\n"
	       "\n"
	       "options:\n");
	printf("  %-18s %s\n", "--base DIR", "the base model directory (instead of CONFIG)");
	printf("  %-18s %s\n", "--adapter DIR",
	       "the adapter directory (with CONFIG: default <output_dir>/adapter)");
	printf("  %-18s %s\n", "--out FILE", "the .gguf file to write (replaced atomically)");
	printf("  %-18s %s\n", "--lora", "write the adapter as a GGUF LoRA instead of the merged model");
	tern_cli_print_opts(gguf_opts);
}

/* Takes the path options and CONFIG out of argv; the rest goes to tern_cli_parse. */
static int split_args(const char *cmd, int argc, char **argv, char **rest, int *nrest, bool gguf)
{
	*nrest = 0;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		const char **dst = !strcmp(a, "--base")      ? &args.base
				   : !strcmp(a, "--adapter") ? &args.adapter
				   : !strcmp(a, "--out")     ? &args.out
							     : NULL;
		if (dst) {
			if (i + 1 >= argc)
				return tern_cli_usage("%s: %s needs a value (a path)", cmd, a);
			*dst = argv[++i];
		} else if (!strncmp(a, "--base=", 7)) {
			args.base = a + 7;
		} else if (!strncmp(a, "--adapter=", 10)) {
			args.adapter = a + 10;
		} else if (!gguf && !strcmp(a, "--shard-size")) {
			if (i + 1 >= argc)
				return tern_cli_usage("%s: %s needs a value (a size: 2GB, 500MB, ...)", cmd,
						      a);
			args.shard = argv[++i];
		} else if (!strncmp(a, "--out=", 6)) {
			args.out = a + 6;
		} else if (gguf && !strcmp(a, "--lora")) {
			args.lora = true;
		} else if (a[0] != '-' && !args.config &&
			   (i == 0 ||
			    (strcmp(argv[i - 1], "--dtype") && strcmp(argv[i - 1], "--type") &&
			     strcmp(argv[i - 1], "--base-format") && strcmp(argv[i - 1], "--shard-size")))) {
			args.config = a;
		} else if (*nrest < 64) {
			rest[(*nrest)++] = argv[i];
		} else {
			return tern_cli_usage("%s: too many arguments", cmd);
		}
	}
	return TERN_EXIT_OK;
}

static int check_inputs(const char *cmd, const char *usage)
{
	if (args.config && args.base)
		return tern_cli_usage("%s: give CONFIG or --base DIR, not both", cmd);
	if (!args.config && !args.base && !args.adapter)
		return tern_cli_usage("%s: missing CONFIG, --base DIR or --adapter DIR (usage: %s)", cmd,
				      usage);
	if (!args.out)
		return tern_cli_usage("%s: missing --out (usage: %s)", cmd, usage);
	return TERN_EXIT_OK;
}

static struct tern_merge_opts opts_of_args(void)
{
	enum tern_base_format f = TERN_FORMAT_AUTO;
	tern_base_format_parse(args.format, &f);
	struct tern_merge_opts o = {
		.config = args.config, .base = args.base, .adapter = args.adapter, .base_format = f};
	return o;
}

int tern_cmd_merge(int argc, char **argv)
{
	bool help = false;
	char *rest[64];
	int nrest;
	args = (struct merge_args){.format = "auto"};
	int rc = split_args("merge", argc, argv, rest, &nrest, false);
	if (rc == TERN_EXIT_OK)
		rc = tern_cli_parse("merge", merge_opts, nrest, rest, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_merge();
		return TERN_EXIT_OK;
	}
	const char *usage = "tern merge CONFIG --out DIR, or tern merge [--base DIR] --adapter DIR --out DIR";
	if ((rc = check_inputs("merge", usage)))
		return rc;
	if (!args.config && !args.adapter)
		return tern_cli_usage("merge: missing --adapter DIR (usage: %s)", usage);
	unsigned long long shard = 0;
	if (args.shard) {
		char *end;
		double v = strtod(args.shard, &end);
		double mul = !strcmp(end, "") || !strcmp(end, "B")      ? 1
			     : !strcmp(end, "KB") || !strcmp(end, "kB") ? 1e3
			     : !strcmp(end, "MB")                       ? 1e6
			     : !strcmp(end, "GB")                       ? 1e9
									: 0;
		if (end == args.shard || !(v * mul >= 1) || v * mul > 1e15)
			return tern_cli_usage(
				"merge: --shard-size: bad value '%s' (allowed: a size such as 5GB, "
				"500MB, 100KB or bytes)",
				args.shard);
		shard = (unsigned long long)(v * mul);
	}
	tern_cli_set_log();
	struct tern_merge_opts o = opts_of_args();
	struct tern_merge_result r;
	enum tern_status st = tern_merge(&o, args.out, args.dtype, shard, &r);
	if (st)
		return tern_cli_fail(st);
	printf("merged %s into %s (base weights %s, scale %g): %lld tensors (%lld merged, %lld from "
	       "modules_to_save), %d file%s, %.1f MiB, in %.2f s -> %s\n",
	       r.adapter_dir, r.base_dir, r.base_format, r.scale, (long long)r.n_tensors,
	       (long long)r.n_merged, (long long)r.n_replaced, r.n_files, r.n_files == 1 ? "" : "s",
	       (double)r.bytes / 1048576.0, r.seconds, args.out);
	return TERN_EXIT_OK;
}

int tern_cmd_export(int argc, char **argv)
{
	bool help = false;
	char *rest[64];
	int nrest;
	if (argc < 1 || (strcmp(argv[0], "gguf") && strcmp(argv[0], "--help") && strcmp(argv[0], "-h")))
		return tern_cli_usage("export: unknown format '%s' (allowed: gguf)", argc ? argv[0] : "");
	if (strcmp(argv[0], "gguf")) {
		tern_help_export();
		return TERN_EXIT_OK;
	}
	args = (struct merge_args){.format = "auto"};
	int rc = split_args("export gguf", argc - 1, argv + 1, rest, &nrest, true);
	if (rc == TERN_EXIT_OK)
		rc = tern_cli_parse("export gguf", gguf_opts, nrest, rest, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_export();
		return TERN_EXIT_OK;
	}
	const char *usage =
		"tern export gguf CONFIG --out FILE, or tern export gguf --base DIR [--adapter DIR] "
		"--out FILE";
	if ((rc = check_inputs("export gguf", usage)))
		return rc;
	if (args.lora && args.base && !args.adapter)
		return tern_cli_usage("export gguf: --lora needs --adapter DIR (usage: %s)", usage);
	enum tern_gguf_type t = args.lora ? TERN_GGUF_F32 : TERN_GGUF_F16;
	if (args.type)
		tern_gguf_type_parse(args.type, &t);
	tern_cli_set_log();
	struct tern_merge_opts o = opts_of_args();
	struct tern_merge_result r;
	enum tern_status st = args.lora ? tern_export_gguf_lora(&o, args.out, t, &r)
					: tern_export_gguf_model(&o, args.out, t, &r);
	if (st)
		return tern_cli_fail(st);
	if (args.lora)
		printf("wrote %s: GGUF LoRA adapter of %s (%lld tensors, %s, scale %g), %.1f MiB, in %.2f s\n",
		       args.out, r.adapter_dir, (long long)r.n_tensors, tern_gguf_type_name(t), r.scale,
		       (double)r.bytes / 1048576.0, r.seconds);
	else
		printf("wrote %s: %s%s%s (base weights %s), %lld tensors in %s, %.1f MiB, in %.2f s\n",
		       args.out, r.base_dir, r.adapter_dir[0] ? " + " : "", r.adapter_dir, r.base_format,
		       (long long)r.n_tensors, tern_gguf_type_name(t), (double)r.bytes / 1048576.0,
		       r.seconds);
	return TERN_EXIT_OK;
}
