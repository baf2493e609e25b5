/* tern info DIR: what a model directory holds (from config.json): architecture, sizes, parameter
 * counts and the memory each base format would take. */
#include "cli.h"
#include "tern/hub.h"
#include "tern/model.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void tern_help_info(void)
{
	printf("usage: tern info MODEL_DIR|ORG/NAME\n"
	       "\n"
	       "Reads MODEL_DIR/config.json (a Hugging Face model directory; for a Hub id, config.json in\n"
	       "the Hugging Face cache, downloaded when missing) and prints the architecture, its sizes\n"
	       "(L layers, D hidden, F FFN, H heads, Hkv KV heads, Dh head dim, V vocab), the\n"
	       "settings that change the math, parameter counts, and the memory the weights take with the\n"
	       "projections in each base format (embeddings, norms and lm_head 16-bit; all 32-bit for f32).\n"
	       "Then checks the weight files (safetensors headers and shard index, every tensor the\n"
	       "architecture needs present with the shape config.json implies, its data within its file)\n"
	       "and fails with one line naming what is wrong; a directory with config.json only passes.\n"
	       "\n"
	       "options:\n");
	tern_cli_print_opts(NULL);
}

/* "1.5 GiB" / "240.0 KiB" / "512 bytes" */
static void fmt_size(char *buf, size_t size, uint64_t b)
{
	static const char *const unit[] = {"bytes", "KiB", "MiB", "GiB", "TiB"};
	double d = (double)b;
	int u = 0;
	while (u < 4 && d >= 1024) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, size, "%" PRIu64 " bytes", b);
	else
		snprintf(buf, size, "%.1f %s", d, unit[u]);
}

/* 118784 -> "118,784" */
static void fmt_count(char *buf, size_t size, uint64_t v)
{
	char raw[32];
	snprintf(raw, sizeof raw, "%" PRIu64, v);
	size_t n = strlen(raw), k = 0;
	for (size_t i = 0; i < n && k + 2 < size; i++) {
		if (i && (n - i) % 3 == 0)
			buf[k++] = ',';
		buf[k++] = raw[i];
	}
	buf[k] = 0;
}

static const char *yn(bool b) { return b ? "yes" : "no"; }

int tern_cmd_info(int argc, char **argv)
{
	bool help;
	if (argc > 0 && argv[0][0] != '-') {
		const char *dir = argv[0];
		int rc = tern_cli_parse("info", NULL, argc - 1, argv + 1, &help);
		if (rc)
			return rc;
		if (help) {
			tern_help_info();
			return TERN_EXIT_OK;
		}
		tern_cli_set_log();
		struct tern_model_info in;
		char *path = NULL;
		enum tern_status st = tern_hub_resolve(dir, NULL, TERN_HUB_CONFIG, &path, NULL);
		if (st == TERN_OK)
			st = tern_model_info(path, &in);
		if (st) {
			free(path);
			return tern_cli_fail(st);
		}
		char a[64], b[64], c[64];
		printf("model          %s\n", dir);
		printf("architecture   %s%s\n", in.model_type,
		       in.supported ? "" : " (parsed; not supported yet for loading)");
		printf("dtype          %s\n", in.dtype);
		printf("quantization   %s\n", in.quantization);
		printf("sizes          L %" PRId64 ", D %" PRId64 ", F %" PRId64 ", H %" PRId64
		       ", Hkv %" PRId64 ", Dh %" PRId64 ", V %" PRId64 "\n",
		       in.L, in.D, in.F, in.H, in.Hkv, in.Dh, in.V);
		if (in.E)
			printf("experts        E %" PRId64 ", top-k %" PRId64 "\n", in.E, in.top_k);
		printf("context        %" PRId64 " positions", in.max_pos);
		if (in.sliding_window)
			printf(", sliding window %" PRId64, in.sliding_window);
		printf("\n");
		printf("rope           theta %g, %s\n", in.rope_theta, in.rope);
		printf("rms_norm_eps   %g\n", in.rms_eps);
		printf("attention      q/k/v bias %s, o bias %s, q/k norm %s\n", yn(in.qkv_bias),
		       yn(in.o_bias), yn(in.qk_norm));
		printf("embeddings     tied %s\n", yn(in.tied));
		fmt_count(a, sizeof a, in.params_total);
		printf("parameters     %s total\n", a);
		fmt_count(a, sizeof a, in.params_layer);
		fmt_count(b, sizeof b, in.params_proj_layer);
		printf("  per layer    %s (projections %s)\n", a, b);
		fmt_count(a, sizeof a, in.params_embed);
		fmt_count(b, sizeof b, in.params_head);
		printf("  embeddings   %s, lm_head %s\n", a, in.tied ? "tied" : b);
		printf("memory by base format of the projections:\n");
		static const struct {
			enum tern_base_format f;
			const char *label;
		} rows[] = {{TERN_FORMAT_F32, "f32"},
			    {TERN_FORMAT_BF16, "bf16/f16"},
			    {TERN_FORMAT_NF4, "nf4"},
			    {TERN_FORMAT_NF4_DQ, "nf4+dq"},
			    {TERN_FORMAT_TERNARY, "ternary"}};
		for (size_t i = 0; i < sizeof rows / sizeof *rows; i++) {
			fmt_size(c, sizeof c, in.bytes[rows[i].f]);
			printf("  %-12s %s\n", rows[i].label, c);
		}
		/* the weight files: headers, every needed tensor present, its shape, within its file */
		if (!in.supported) {
			printf("weights        not checked (%s is not supported for loading yet)\n",
			       in.model_type);
			free(path);
			return TERN_EXIT_OK;
		}
		struct tern_model_weights w;
		fflush(stdout);
		st = tern_model_check_weights(path, &w); /* the directory a Hub id resolved to */
		free(path);
		if (st)
			return tern_cli_fail(st);
		if (!w.present) {
			printf("weights        none (no *.safetensors in %s; config.json only)\n", dir);
			return TERN_EXIT_OK;
		}
		fmt_size(c, sizeof c, w.bytes);
		printf("weights        %zu tensors in %zu file%s, %s%s: every tensor present, shaped as "
		       "config.json says, within its file\n",
		       w.n_tensors, w.n_files, w.n_files == 1 ? "" : "s", c,
		       w.bnb ? ", bitsandbytes 4-bit" : "");
		return TERN_EXIT_OK;
	}
	int rc = tern_cli_parse("info", NULL, argc, argv, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_info();
		return TERN_EXIT_OK;
	}
	return tern_cli_usage("info: missing MODEL_DIR (usage: tern info MODEL_DIR)");
}
