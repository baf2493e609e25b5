/* The host side of the CUDA backend, checkable on a machine without an NVIDIA GPU (CI builds the
 * backend but has no device; test_ops and test_golden run its ops where there is one):
 *   - "cuda" is a known backend: a build without it says "not compiled into this build", a CUDA
 *     build without a device or driver fails softly with TERN_E_UNAVAILABLE and a line starting
 *     "cuda: no device", and with a device creates a backend named "cuda" whose device and
 *     product precisions are what the contract says;
 *   - tern_backend_probe("cuda") agrees with tern_backend_create;
 *   - auto never fails for want of CUDA: it picks cuda exactly when cuda can be created, else
 *     vulkan or cpu;
 *   - tern_backend_sizes("cuda", ...): the figures the planner counts (chunk from the 64 MiB of
 *     logits, TERN_CE_CHUNK forcing fewer, the scratch covering the chunk's logits).
 * What runs on a device is not checked here: this program passes without one, and says so. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "backend/backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed;

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

#ifdef TERN_HAVE_CUDA
static bool starts(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }
#endif

/* create / probe / auto */
static void check_create(void)
{
	struct tern_backend *be = NULL;
	enum tern_status st = tern_backend_create("cuda", 0, &be);
	char msg[512];
	snprintf(msg, sizeof msg, "%s", st ? tern_error() : "");
	bool created = st == TERN_OK;
	(void)created; /* read only in CUDA builds */
#ifdef TERN_HAVE_CUDA
	if (st == TERN_OK) {
		check(!strcmp(be->name, "cuda"), "cuda: created, named '%s'", be->name);
		check(tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_F16), "cuda: matmul at f16");
		enum tern_dtype ap = tern_backend_auto_prec(be);
		check(ap == TERN_BF16 || ap == TERN_F16, "cuda: auto precision %s is a half type",
		      tern_dtype_name(ap));
		check(tern_backend_supports_prec(be, TERN_OP_MATMUL, ap), "cuda: runs its auto precision");
		check(!tern_backend_supports_prec(be, TERN_OP_GEMM, TERN_F16), "cuda: gemm is fp32 only");
		uint64_t budget = 0, usage = 0;
		st = be->vt->memory_info(be, &budget, &usage);
		check(st == TERN_OK && budget > 0 && usage <= budget,
		      "cuda: memory_info budget %llu usage %llu", (unsigned long long)budget,
		      (unsigned long long)usage);
		check(tern_backend_probe("cuda") == TERN_OK, "cuda: probe finds the device create used");
		st = tern_backend_create("cuda", 4096, &(struct tern_backend *){NULL});
		check(st == TERN_E_INVALID, "cuda: device 4096 is refused (%s)",
		      st ? tern_error() : "created");
		tern_backend_free(be);
	} else {
		/* no device or driver; or a card older than Turing, listed but refused */
		bool nodev = starts(msg, "cuda: no device");
		check(st == TERN_E_UNAVAILABLE && (nodev || strstr(msg, "compute capability")),
		      "cuda: without a usable device: unavailable, '%s'", msg);
		check(be == NULL, "cuda: no backend handed out");
		st = tern_backend_probe("cuda");
		if (nodev)
			check(st == TERN_E_UNAVAILABLE && starts(tern_error(), "cuda: no device"),
			      "cuda: probe says the same: '%s'", tern_error());
		else
			check(st == TERN_OK, "cuda: probe lists the refused device");
		printf("cuda: no device — the ops are not run here (test_ops, test_golden run them on one)\n");
	}
#else
	check(st == TERN_E_UNAVAILABLE && strstr(msg, "not compiled"), "cuda: not in this build: '%s'", msg);
	check(tern_backend_probe("cuda") == TERN_E_UNAVAILABLE, "cuda: probe: not in this build");
#endif
	be = NULL;
	st = tern_backend_create("auto", 0, &be);
	check(st == TERN_OK && be, "auto: creates a backend (%s)", be ? be->name : tern_error());
	if (be) {
#ifdef TERN_HAVE_CUDA
		check(created == !strcmp(be->name, "cuda"),
		      "auto: picks cuda exactly when cuda can be created (%s)", be->name);
#endif
		tern_backend_free(be);
	}
	check(tern_backend_create("cuda", -1, &be) == TERN_E_INVALID, "cuda: device -1 is refused");
}

/* tern_backend_sizes("cuda", ...) */
static void check_sizes(void)
{
	struct tern_backend_sizes z;
	enum tern_status st = tern_backend_sizes("cuda", 2048, 128256, 4096, &z);
#ifdef TERN_HAVE_CUDA
	/* 64 MiB of fp32 logits per chunk: 67108864 / (4 * 128256) = 130 tokens, in whole tiles of
	 * 128 */
	check(st == TERN_OK && z.ce_chunk == 128, "sizes: T=2048 V=128256: chunk %lld (128)",
	      (long long)z.ce_chunk);
	check(z.ce_scratch >= (uint64_t)128 * 128256 * 4, "sizes: scratch %llu holds the chunk's logits",
	      (unsigned long long)z.ce_scratch);
	check(z.reserve >= ((uint64_t)64 << 20), "sizes: reserve %llu covers the products' 64 MiB of scratch",
	      (unsigned long long)z.reserve);
	st = tern_backend_sizes("cuda", 100, 32000, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 100, "sizes: chunk at most T (%lld)", (long long)z.ce_chunk);
	setenv("TERN_CE_CHUNK", "7", 1);
	st = tern_backend_sizes("cuda", 2048, 128256, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 7, "sizes: TERN_CE_CHUNK=7 gives %lld", (long long)z.ce_chunk);
	unsetenv("TERN_CE_CHUNK");
	st = tern_backend_sizes("auto", 2048, 128256, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 128, "sizes: auto counts cuda's figures in a CUDA build (%lld)",
	      (long long)z.ce_chunk);
	check(tern_backend_sizes("cuda", -1, 10, 10, &z) == TERN_E_INVALID, "sizes: T=-1 refused");
#else
	check(st == TERN_E_UNAVAILABLE, "sizes: cuda not in this build (%s)", tern_error());
#endif
}

int main(void)
{
	check_create();
	check_sizes();
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
