/* tern bench ops: times each op of one backend at one shape and prints a table (one row per op
 * and weight dtype: ms per call, GFLOP/s, GB/s). Rows are printed as they are measured. */
#include "cli.h"

#include <stdio.h>
#include <string.h>

static const char *const backends[] = {"auto", "cpu", "ref", "vulkan", "cuda", NULL};
/* The op names tern_bench_ops accepts in its filter (src/backend/bench.c). */
static const char *const precs[] = {"f32", "f16", "bf16", NULL};
static const char *const bench_ops[] = {"matmul",    "matmul_bwd",    "gemm", "lora", "adamw",
					"sumsq",     "scale",         "axpy", "cast", "dropout",
					"attention", "attention_bwd", NULL};

struct bench_args {
	const char *backend;
	long long device, T, O, I, R, heads, kv_heads, head_dim;
	const char *ops;
	double seconds;
	const char *prec;
	double peak;
	double bw;
};

static struct bench_args args;

static const struct tern_cli_opt bench_opts[] = {
	{"--backend", "NAME", TERN_CLI_CHOICE, .choices = backends, .dst = &args.backend,
	 .help = "auto, cpu, ref, vulkan or cuda (default auto: the first GPU, else cpu)"},
	{"--device", "N", TERN_CLI_INT, 0, 1023, .dst = &args.device,
	 .help = "device index within the backend (default 0; see `tern devices`)"},
	{"--T", "N", TERN_CLI_INT, 1, 1 << 24, .dst = &args.T, .help = "tokens per call (default 512)"},
	{"--O", "N", TERN_CLI_INT, 1, 1 << 24, .dst = &args.O,
	 .help = "out features of W [O, I] (default 4096)"},
	{"--I", "N", TERN_CLI_INT, 1, 1 << 24, .dst = &args.I,
	 .help = "in features of W [O, I] (default 4096)"},
	{"--R", "N", TERN_CLI_INT, 1, 1 << 16, .dst = &args.R,
	 .help = "LoRA rank for the gemm and lora rows (default 16)"},
	{"--heads", "N", TERN_CLI_INT, 1, 65536, .dst = &args.heads,
	 .help = "query heads of the attention rows (default 32)"},
	{"--kv-heads", "N", TERN_CLI_INT, 1, 65536, .dst = &args.kv_heads,
	 .help = "key/value heads of the attention rows, dividing --heads (default 8)"},
	{"--head-dim", "N", TERN_CLI_INT, 1, 65536, .dst = &args.head_dim,
	 .help = "head dimension of the attention rows (default 128)"},
	{"--ops", "LIST", TERN_CLI_LIST, .choices = bench_ops, .dst = &args.ops,
	 .help = "comma-separated ops to time (default all) from: matmul, matmul_bwd,\n"
		 "gemm, lora (the whole LoRA linear), adamw, sumsq, scale, axpy, cast, dropout,\n"
		 "attention, attention_bwd (causal, one sample of T tokens)"},
	{"--seconds", "S", TERN_CLI_NUM, .dlo = 0, .dhi = 3600, .dst = &args.seconds,
	 .help = "time each op for at least S seconds, at least 3 calls (default 0.5)"},
	{"--prec", "P", TERN_CLI_CHOICE, .choices = precs, .dst = &args.prec,
	 .help = "matmul product precision: f32 (default), f16 or bf16 (compute_dtype)"},
	{"--peak", "TFLOPS", TERN_CLI_NUM, .dlo = 0, .dhi = 1e6, .dst = &args.peak,
	 .help = "the device's peak rate: adds a column with each matmul's share of it"},
	{"--bw", "GB/s", TERN_CLI_NUM, .dlo = 0, .dhi = 1e7, .dst = &args.bw,
	 .help = "the device's memory bandwidth (H200: 4800): adds a column with each\n"
		 "row's GB/s as a share of it (small T: the matmuls are bound by W's bytes)"},
	{NULL, NULL, TERN_CLI_INT, .help = NULL},
};

void tern_help_bench_ops(void)
{
	printf("usage: tern bench ops [--backend auto|cpu|ref|vulkan|cuda] [--device N] [--T N] [--O N]\n"
	       "                      [--I N] [--R N] [--ops LIST] [--seconds S] [--prec f32|f16|bf16]\n"
	       "                      [--peak TFLOPS] [--bw GB/s]\n"
	       "\n"
	       "Times each op on one device: matmul (y = x W^T) and matmul_bwd (dx = dy W) for every weight\n"
	       "dtype the backend supports (f32, f16, bf16, nf4, nf4-dq, ternary), the six fp32 products of\n"
	       "a LoRA linear of rank R, AdamW, sum of squares, scale and axpy on the LoRA parameters of one\n"
	       "layer (7 modules, n = 7 R (I + O)), casts and dropout on x [T, I], and causal attention\n"
	       "forward and backward over T tokens (--heads, --kv-heads, --head-dim).\n"
	       "ms is the mean time of a call with the queue kept busy (after one warm-up call);\n"
	       "GFLOP/s counts 2 flops per multiply-add; GB/s counts the bytes an op must read and write\n"
	       "once (weights in their storage format).\n"
	       "\n"
	       "options:\n");
	tern_cli_print_opts(bench_opts);
}

struct table {
	const char *device; /* filled by tern_bench_ops before the first row */
	const struct bench_args *a;
	int rows;
};

static void print_header(struct table *t)
{
	printf("tern bench ops: %s\n", t->device[0] ? t->device : "(no device)");
	printf("shape T=%lld O=%lld I=%lld R=%lld, matmul products %s, at least %g s per op\n\n", t->a->T,
	       t->a->O, t->a->I, t->a->R, t->a->prec, t->a->seconds);
	printf("%-13s %-9s %-32s %11s %10s %9s %7s%s%s\n", "op", "dtype", "shape", "ms", "GFLOP/s", "GB/s",
	       "reps", t->a->peak > 0 ? "  % of peak" : "", t->a->bw > 0 ? "  % of bw" : "");
	fflush(stdout);
}

/* At least three significant digits, so that small rates do not print as 0.0; "-" for none. */
static void fmt_rate(char *buf, size_t size, double v)
{
	if (!(v > 0))
		snprintf(buf, size, "-");
	else if (v >= 100)
		snprintf(buf, size, "%.0f", v);
	else if (v >= 1)
		snprintf(buf, size, "%.2f", v);
	else
		snprintf(buf, size, "%.3g", v);
}

static void on_row(const struct tern_bench_row *r, void *user)
{
	struct table *t = user;
	if (!t->rows++)
		print_header(t);
	char gf[32], gb[32];
	fmt_rate(gf, sizeof gf, r->gflops);
	fmt_rate(gb, sizeof gb, r->gbs);
	printf("%-13s %-9s %-32s %11.4f %10s %9s %7d", r->op, r->dtype, r->shape, r->ms, gf, gb, r->reps);
	if (t->a->peak > 0 && r->gflops > 0 &&
	    (!strncmp(r->op, "matmul", 6) || !strncmp(r->op, "attention", 9)))
		printf("  %9.1f", 100.0 * r->gflops / (t->a->peak * 1000.0));
	else if (t->a->peak > 0)
		printf("  %9s", "-");
	if (t->a->bw > 0)
		printf("  %7.1f", 100.0 * r->gbs / t->a->bw);
	printf("\n");
	fflush(stdout);
}

int tern_cmd_bench_ops(int argc, char **argv)
{
	args = (struct bench_args){.backend = "auto",
				   .device = 0,
				   .T = 512,
				   .O = 4096,
				   .I = 4096,
				   .R = 16,
				   .heads = 0, /* 0: tern_bench_ops' defaults (the help's) */
				   .kv_heads = 0,
				   .head_dim = 0,
				   .ops = NULL,
				   .seconds = 0.5,
				   .prec = "f32",
				   .peak = 0,
				   .bw = 0};
	bool help;
	int rc = tern_cli_parse("bench ops", bench_opts, argc, argv, &help);
	if (rc)
		return rc;
	if (help) {
		tern_help_bench_ops();
		return TERN_EXIT_OK;
	}
	tern_cli_set_log();

	struct tern_bench_opts o = {
		.backend = args.backend,
		.device = (int)args.device,
		.T = args.T,
		.O = args.O,
		.I = args.I,
		.R = args.R,
		.heads = args.heads,
		.kv_heads = args.kv_heads,
		.head_dim = args.head_dim,
		.ops = args.ops,
		.min_seconds = args.seconds,
		.prec = args.prec,
	};
	char device[512] = "";
	struct table t = {device, &args, 0};
	enum tern_status st = tern_bench_ops(&o, on_row, &t, device, sizeof device);
	if (st)
		return tern_cli_fail(st);
	if (!t.rows) {
		print_header(&t);
		printf("(no op in the selection is supported on this device)\n");
	}
	return TERN_EXIT_OK;
}
