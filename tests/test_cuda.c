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
 *     logits, TERN_CE_CHUNK forcing fewer, the scratch covering the chunk's logits);
 *   - CUDA graphs (with a device, or the emulation): the capture logic (check_graphs).
 * The ops themselves are not checked here: this program passes without a device, and says so. */
#define _POSIX_C_SOURCE 200809L /* setenv */
#include "backend/backend.h"
#ifdef TERN_HAVE_CUDA
#include "backend/cuda/cu_graph.h"
#include "dist/dist.h"
#endif

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
	/* at D = 4096 at least 128 · (4096 / 2048)² = 512 tokens (250.5 MiB of fp32 logits, under the
	 * 256 MiB cap) */
	check(st == TERN_OK && z.ce_chunk == 512, "sizes: T=2048 V=128256 D=4096: chunk %lld (512)",
	      (long long)z.ce_chunk);
	check(z.ce_scratch >= (uint64_t)512 * 128256 * 4, "sizes: scratch %llu holds the chunk's logits",
	      (unsigned long long)z.ce_scratch);
	/* at D = 2048 64 MiB of fp32 logits per chunk: 67108864 / (4 * 128256) = 130 tokens, in whole
	 * tiles of 128 */
	st = tern_backend_sizes("cuda", 2048, 128256, 2048, &z);
	check(st == TERN_OK && z.ce_chunk == 128, "sizes: T=2048 V=128256 D=2048: chunk %lld (128)",
	      (long long)z.ce_chunk);
	st = tern_backend_sizes("cuda", 2048, 128256, 4096, &z);
	check(z.reserve >= ((uint64_t)64 << 20), "sizes: reserve %llu covers the products' 64 MiB of scratch",
	      (unsigned long long)z.reserve);
	st = tern_backend_sizes("cuda", 100, 32000, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 100, "sizes: chunk at most T (%lld)", (long long)z.ce_chunk);
	setenv("TERN_CE_CHUNK", "7", 1);
	st = tern_backend_sizes("cuda", 2048, 128256, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 7, "sizes: TERN_CE_CHUNK=7 gives %lld", (long long)z.ce_chunk);
	unsetenv("TERN_CE_CHUNK");
	st = tern_backend_sizes("auto", 2048, 128256, 4096, &z);
	check(st == TERN_OK && z.ce_chunk == 512, "sizes: auto counts cuda's figures in a CUDA build (%lld)",
	      (long long)z.ce_chunk);
	check(tern_backend_sizes("cuda", -1, 10, 10, &z) == TERN_E_INVALID, "sizes: T=-1 refused");
#else
	check(st == TERN_E_UNAVAILABLE, "sizes: cuda not in this build (%s)", tern_error());
#endif
}

#ifdef TERN_HAVE_CUDA
/* ---- CUDA graphs (src/backend/cuda/cu_graph.h) ---- */

static struct tern_cu_graph_stats gstats(struct tern_backend *be)
{
	struct tern_cu_graph_stats s;
	memset(&s, 0, sizeof s);
	tern_cu_graph_stats(be, &s);
	return s;
}

/* x *= 2 on the device (captured) and in hx */
static bool g_op(struct tern_backend *be, struct tern_view x, float *hx, int n)
{
	for (int i = 0; i < n; i++)
		hx[i] *= 2.0f;
	return tern_scale(be, x, n, 2.0f) == TERN_OK;
}

static bool g_same(struct tern_backend *be, struct tern_view v, const float *want, int n)
{
	float got[256];
	if (n > 256 || be->vt->download(be, got, v) != TERN_OK)
		return false;
	return memcmp(got, want, (size_t)n * 4) == 0;
}

/* An op is captured; the boundary `call` ends the capture and launches it. */
#define BOUNDARY(name, call)                                                                                \
	do {                                                                                                \
		bool cap = g_op(be, X, hx, n) && gstats(be).capturing;                                      \
		uint64_t f = gstats(be).flushes;                                                            \
		enum tern_status bst = (call);                                                              \
		check(cap &&bst == TERN_OK && !gstats(be).capturing && gstats(be).flushes == f + 1,         \
		      "graphs: %s ends the capture and launches it (%s)", name, bst ? tern_error() : "ok"); \
	} while (0)

/* With TERN_CUDA_GRAPHS=1: the ops are captured, not run, until a boundary; each kind of
 * boundary ends the capture (on a GPU and in the emulation a missed one fails: the call is
 * refused during a capture); the same sequence again updates the cached graph with the new
 * scalars, another shape, a changed node type or other kernels instantiates one; segments are cut at
 * TERN_CUDA_GRAPH_MAX launches; results are those of plain launches, bit for bit. */
/* A backend switch with a bad value: refused at create with one line naming it (no device: the
 * create fails before the switches are read, and nothing is checked). */
static void check_refused(const char *what, const char *var, const char *val)
{
	char want[96];
	snprintf(want, sizeof want, "%s=%s", var, val);
	setenv(var, val, 1);
	struct tern_backend *be = NULL;
	enum tern_status st = tern_backend_create("cuda", 0, &be);
	unsetenv(var);
	if (st != TERN_E_UNAVAILABLE)
		check(st == TERN_E_INVALID && strstr(tern_error(), want), "%s: %s is refused (%s)", what,
		      want, st ? tern_error() : "created");
	if (be)
		tern_backend_free(be);
}

static void check_graphs(void)
{
	check_refused("graphs", "TERN_CUDA_GRAPHS", "yes");
	struct tern_backend *be = NULL;
	enum tern_status st;
	setenv("TERN_CUDA_GRAPHS", "1", 1);
	st = tern_backend_create("cuda", 0, &be);
	unsetenv("TERN_CUDA_GRAPHS");
	if (st) {
		printf("graphs: not run (%s)\n", tern_error());
		return;
	}
	const struct tern_backend_vtable *vt = be->vt;
	enum { n = 256 };
	float hx[n], hy[n], hz[n];
	struct tern_buffer *bx = NULL, *by = NULL, *bz = NULL, *bh = NULL, *bt = NULL;
	void *hp = NULL;
	if (vt->buffer_alloc(be, n * 4, &bx) || vt->buffer_alloc(be, n * 4, &by) ||
	    vt->buffer_alloc(be, n * 4, &bz) || vt->host_alloc(be, n * 4, &bh, &hp)) {
		check(false, "graphs: buffers (%s)", tern_error());
		goto out;
	}
	struct tern_view X = {bx, 0, n * 4}, Y = {by, 0, n * 4}, Z = {bz, 0, n * 4}, H = {bh, 0, n * 4};
	for (int i = 0; i < n; i++) {
		hx[i] = (float)(i % 17) - 8.0f;
		hy[i] = 1.0f;
		hz[i] = (float)i;
	}
	memcpy(hp, hz, sizeof hz);
	check(vt->upload(be, X, hx) == TERN_OK && vt->upload(be, Y, hy) == TERN_OK, "graphs: upload");
	struct tern_cu_graph_stats g0 = gstats(be), g;
	check(g0.on && strstr(be->device_name, "CUDA graphs on"), "graphs: on, the device says so (%s)",
	      be->device_name);

	/* captured, not launched; a download launches a new graph */
	bool ok = tern_scale(be, X, n, 2.0f) == TERN_OK && tern_axpy(be, Y, X, n, 0.5f) == TERN_OK;
	g = gstats(be);
	check(ok && g.capturing && g.segments == g0.segments && g.launches == g0.launches,
	      "graphs: two ops are captured, nothing launched yet");
	for (int i = 0; i < n; i++) {
		hx[i] *= 2.0f;
		hy[i] += 0.5f * hx[i];
	}
	check(g_same(be, Y, hy, n), "graphs: the download launches them: y as plain launches give");
	g = gstats(be);
	check(g.segments == g0.segments + 1 && g.instantiated == g0.instantiated + 1 &&
		      g.launches == g0.launches + 2 && g.updates == g0.updates,
	      "graphs: one segment of 2 launches, instantiated (%llu segments, %llu instantiated)",
	      (unsigned long long)g.segments, (unsigned long long)g.instantiated);

	/* the same shape with other scalars: the cached graph is updated, the new scalars run */
	g0 = g;
	ok = tern_scale(be, X, n, 3.0f) == TERN_OK && tern_axpy(be, Y, X, n, -1.0f) == TERN_OK;
	for (int i = 0; i < n; i++) {
		hx[i] *= 3.0f;
		hy[i] -= hx[i];
	}
	check(ok && g_same(be, Y, hy, n), "graphs: the same ops with other scalars: the new ones ran");
	g = gstats(be);
	check(g.updates == g0.updates + 1 && g.instantiated == g0.instantiated,
	      "graphs: the same shape updates the cached graph (cudaGraphExecUpdate), no instantiation");

	/* the same node count and types but other kernels (axpy, then scale): never updated into
	 * the cached graph (cu_graph.c graph_sig; on an H100 such updates reported success and ran
	 * the cached graph's kernels) */
	g0 = g;
	ok = tern_axpy(be, Y, X, n, 1.0f) == TERN_OK && tern_scale(be, X, n, 0.5f) == TERN_OK;
	for (int i = 0; i < n; i++) {
		hy[i] += hx[i];
		hx[i] *= 0.5f;
	}
	check(ok && g_same(be, Y, hy, n) && g_same(be, X, hx, n), "graphs: axpy then scale: y and x right");
	g = gstats(be);
	check(g.instantiated == g0.instantiated + 1 && g.updates == g0.updates,
	      "graphs: other kernels in the same node count and types: instantiated, not updated");

	/* another node count: a new graph; a changed node type (memset for a kernel): instantiated */
	g0 = g;
	ok = tern_scale(be, X, n, 0.5f) == TERN_OK && tern_scale(be, X, n, 2.0f) == TERN_OK &&
	     tern_axpy(be, Y, X, n, 1.0f) == TERN_OK;
	for (int i = 0; i < n; i++)
		hy[i] += hx[i];
	check(ok && g_same(be, Y, hy, n), "graphs: three ops: y right");
	g = gstats(be);
	check(g.instantiated == g0.instantiated + 1 && g.updates == g0.updates && g.cached == g0.cached + 1,
	      "graphs: a new node count instantiates a second graph (%d cached)", g.cached);
	g0 = g;
	ok = vt->zero(be, Y) == TERN_OK && tern_axpy(be, Y, X, n, 1.0f) == TERN_OK;
	for (int i = 0; i < n; i++)
		hy[i] = hx[i];
	check(ok && g_same(be, Y, hy, n), "graphs: zero (a memset node) + axpy: y right");
	g = gstats(be);
	check(g.instantiated == g0.instantiated + 1 && g.updates == g0.updates,
	      "graphs: a changed node type cannot be updated: instantiated again");

	/* every kind of boundary ends the capture */
	BOUNDARY("synchronize", vt->synchronize(be));
	uint64_t mark = 0, ticket = 0;
	BOUNDARY("mark", vt->mark(be, &mark));
	st = vt->copy_async(be, Z, H, mark, &ticket);
	check(st == TERN_OK && ticket > 0 && !gstats(be).capturing, "graphs: copy_async after the mark");
	BOUNDARY("wait_ticket", vt->wait_ticket(be, ticket));
	ok = tern_axpy(be, Y, Z, n, 1.0f) == TERN_OK; /* reads the copied bytes: after wait_ticket */
	for (int i = 0; i < n; i++)
		hy[i] += hz[i];
	BOUNDARY("ticket_wait_host", vt->ticket_wait_host(be, ticket));
	check(ok && g_same(be, Y, hy, n), "graphs: an op after wait_ticket sees the copied bytes");
	uint64_t budget, usage;
	BOUNDARY("memory_info", vt->memory_info(be, &budget, &usage));
	BOUNDARY("buffer_alloc", vt->buffer_alloc(be, 64, &bt));
	BOUNDARY("buffer_free", (vt->buffer_free(be, bt), bt = NULL, TERN_OK));
	struct tern_buffer *bh2 = NULL;
	void *hp2;
	BOUNDARY("host_alloc", vt->host_alloc(be, 64, &bh2, &hp2));
	vt->buffer_free(be, bh2);
	BOUNDARY("upload", vt->upload(be, Z, hz));
	void *dp, *ds;
	BOUNDARY("the NCCL address", tern_dist_cuda_address(be, Z, &dp, &ds));
	BOUNDARY("profile on", tern_backend_profile(be, true));
	ok = g_op(be, X, hx, n);
	check(ok && !gstats(be).capturing, "graphs: nothing is captured while the profile is on");
	st = tern_backend_profile(be, false);
	ok = g_op(be, X, hx, n);
	check(!st && ok && gstats(be).capturing, "graphs: with the profile off again, ops are captured");
	BOUNDARY("download", vt->download(be, hy, Y));
	check(g_same(be, X, hx, n), "graphs: x after the boundaries as plain launches give (%llu segments)",
	      (unsigned long long)gstats(be).segments);

	/* the scratch grows inside an op (matmul's f16 operand; T > 8, since a few tokens take the
	 * small-T kernels, which need no scratch): a flush there, then the rest */
	{
		enum { T = 16, I = 8, O = 8 };
		float w[O * I], x[T * I], y[T * O];
		for (int i = 0; i < O * I; i++)
			w[i] = (float)((i * 7) % 5) - 2.0f;
		for (int i = 0; i < T * I; i++)
			x[i] = (float)(i % 3) + 0.25f;
		struct tern_buffer *bw = NULL, *bxx = NULL, *byy = NULL;
		st = vt->buffer_alloc(be, sizeof w, &bw);
		if (!st)
			st = vt->buffer_alloc(be, sizeof x, &bxx);
		if (!st)
			st = vt->buffer_alloc(be, sizeof y, &byy);
		struct tern_view Wv = {bw, 0, sizeof w}, Xv = {bxx, 0, sizeof x}, Yv = {byy, 0, sizeof y};
		if (!st)
			st = vt->upload(be, Wv, w);
		if (!st)
			st = vt->upload(be, Xv, x);
		struct tern_weight W = {.dtype = TERN_F32, .O = O, .I = I, .data = Wv};
		bool cap = !st && g_op(be, X, hx, n) && gstats(be).capturing;
		uint64_t f = gstats(be).flushes;
		if (!st)
			st = tern_matmul(be, Yv, Xv, &W, T, TERN_F16);
		bool flushed = gstats(be).flushes > f;
		if (!st)
			st = vt->download(be, y, Yv);
		double err = 0;
		for (int t = 0; t < T && !st; t++)
			for (int o = 0; o < O; o++) {
				double r = 0;
				for (int i = 0; i < I; i++)
					r += (double)x[t * I + i] * w[o * I + i];
				double e = y[t * O + o] - r;
				err = e * e > err ? e * e : err;
			}
		check(!st && cap && flushed && err < 1e-4 && g_same(be, X, hx, n),
		      "graphs: the scratch grown inside a matmul flushes there; y right (%s)",
		      st ? tern_error() : "ok");
		vt->buffer_free(be, bw);
		vt->buffer_free(be, bxx);
		vt->buffer_free(be, byy);
	}
out:
	vt->buffer_free(be, bx);
	vt->buffer_free(be, by);
	vt->buffer_free(be, bz);
	vt->buffer_free(be, bh);
	tern_backend_free(be);

	/* segments: TERN_CUDA_GRAPH_MAX=2 cuts 7 launches into 4 graphs */
	setenv("TERN_CUDA_GRAPHS", "1", 1);
	setenv("TERN_CUDA_GRAPH_MAX", "2", 1);
	be = NULL;
	st = tern_backend_create("cuda", 0, &be);
	unsetenv("TERN_CUDA_GRAPHS");
	unsetenv("TERN_CUDA_GRAPH_MAX");
	if (st) {
		check(false, "graphs: a backend with TERN_CUDA_GRAPH_MAX=2 (%s)", tern_error());
		return;
	}
	vt = be->vt;
	bx = NULL;
	for (int i = 0; i < n; i++)
		hx[i] = (float)i;
	if (vt->buffer_alloc(be, n * 4, &bx) == TERN_OK) {
		X = (struct tern_view){bx, 0, n * 4};
		ok = vt->upload(be, X, hx) == TERN_OK;
		struct tern_cu_graph_stats s0 = gstats(be);
		for (int k = 0; k < 7; k++)
			ok = ok && g_op(be, X, hx, n);
		ok = ok && g_same(be, X, hx, n);
		struct tern_cu_graph_stats s1 = gstats(be);
		check(ok && s1.segments == s0.segments + 4 && s1.launches == s0.launches + 7 &&
			      s1.flushes == s0.flushes + 1,
		      "graphs: 7 launches at TERN_CUDA_GRAPH_MAX=2: 4 segments, one flush (%llu, %llu)",
		      (unsigned long long)(s1.segments - s0.segments),
		      (unsigned long long)(s1.flushes - s0.flushes));
		vt->buffer_free(be, bx);
	}
	tern_backend_free(be);
	setenv("TERN_CUDA_GRAPH_MAX", "0", 1);
	be = NULL;
	setenv("TERN_CUDA_GRAPHS", "1", 1);
	st = tern_backend_create("cuda", 0, &be);
	unsetenv("TERN_CUDA_GRAPHS");
	unsetenv("TERN_CUDA_GRAPH_MAX");
	check(st == TERN_E_INVALID && strstr(tern_error(), "TERN_CUDA_GRAPH_MAX=0"),
	      "graphs: TERN_CUDA_GRAPH_MAX=0 is refused (%s)", st ? tern_error() : "created");
	if (be)
		tern_backend_free(be);

	/* bad switches are refused at create: programmatic dependent launches, the attention family,
	 * the NF4 decode kernel */
	check_refused("pdl", "TERN_CUDA_PDL", "yes");
	check_refused("attention", "TERN_CUDA_FA", "3");
	check_refused("attention", "TERN_CUDA_FA", "213");
	check_refused("decode", "TERN_CUDA_DECODE", "16");

	/* off: nothing captured */
	setenv("TERN_CUDA_GRAPHS", "0", 1);
	be = NULL;
	st = tern_backend_create("cuda", 0, &be);
	unsetenv("TERN_CUDA_GRAPHS");
	if (st == TERN_OK) {
		struct tern_buffer *b = NULL;
		if (be->vt->buffer_alloc(be, 64, &b) == TERN_OK) {
			ok = tern_scale(be, (struct tern_view){b, 0, 64}, 16, 2.0f) == TERN_OK;
			struct tern_cu_graph_stats s = gstats(be);
			check(ok && !s.on && !s.capturing && s.segments == 0 &&
				      strstr(be->device_name, "CUDA graphs off"),
			      "graphs: TERN_CUDA_GRAPHS=0: plain launches (%s)", be->device_name);
			be->vt->buffer_free(be, b);
		}
		tern_backend_free(be);
	}
}

#endif

int main(void)
{
	check_create();
	check_sizes();
#ifdef TERN_HAVE_CUDA
	check_graphs();
#endif
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
