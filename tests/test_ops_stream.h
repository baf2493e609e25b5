/* test_ops group "stream": the streaming entries of the vtable (host_alloc, mark, copy_async,
 * wait_ticket, ticket_wait_host, memory_info) on every backend. Values are small integers, so
 * every expected result is exact: a copy that lands too late or too early shows up as a wrong
 * value, not as rounding. (Under lavapipe a missing device-side wait shows only sometimes; run
 * with TERN_VALIDATE=1 TERN_VALIDATE_SYNC=1 to have the validation layer's synchronization
 * checks look for it too.) Included by test_ops.c. */
#ifndef TERN_TEST_OPS_STREAM_H
#define TERN_TEST_OPS_STREAM_H

#include "test_ops_harness.h"

/* A host buffer of n floats, or NULL (and the reason recorded). */
static struct tern_buffer *stream_host(struct chk *c, int64_t n, float **ptr)
{
	struct tern_backend *be = c->s->be;
	struct tern_buffer *b = NULL;
	void *p = NULL;
	if (bad(c, be->vt->host_alloc(be, (size_t)n * 4, &b, &p), "host_alloc"))
		return NULL;
	*ptr = p;
	for (int64_t i = 0; i < n; i++)
		if ((*ptr)[i] != 0.0f) {
			fail(c, "host_alloc: element %lld is %g, not 0", (long long)i, (double)(*ptr)[i]);
			break;
		}
	return b;
}

/* The value element j of streamed "layer" i holds: a small integer, different per layer. */
static float stream_val(uint64_t seed, int i, int64_t j)
{
	return (float)((int64_t)(mix64(seed ^ ((uint64_t)i << 32) ^ (uint64_t)j) % 41) - 20);
}

/* Exact comparison of n floats downloaded from t against want. */
static void stream_expect(struct chk *c, struct dten *t, const double *want, int64_t n)
{
	float *got = fvec(n);
	if (!got) {
		fail(c, "out of host memory");
		return;
	}
	if (dt_get(c, t, got))
		for (int64_t i = 0; i < n; i++)
			if ((double)got[i] != want[i]) {
				fail(c, "%s[%lld] = %g, want %g", t->name, (long long)i, (double)got[i],
				     want[i]);
				break;
			}
	free(got);
}

/* One copy overlapping a long chain of ops on other buffers, then an op that reads the copy;
 * and one copy read by the very next op (a device that starts that op before the copy has
 * landed reads stale bytes: on a GPU with a transfer queue, with large sizes, this shows a
 * compute submission that does not wait for its ticket). */
static void check_stream_overlap(struct suite *s, int64_t n, int chain)
{
	struct chk c;
	chk_begin(&c, s, "copy_async", "n=%lld under %d queued axpys", (long long)n, chain);
	struct tern_backend *be = s->be;
	float *h = NULL, *a = fvec(n);
	double *wd = dvec(n), *wb = dvec(n), *wd2 = dvec(n);
	struct tern_buffer *hb = stream_host(&c, 2 * n, &h);
	if (!hb || !a || !wd || !wb || !wd2) {
		fail(&c, "setup failed");
		goto out;
	}
	for (int64_t i = 0; i < n; i++) {
		a[i] = stream_val(c.seed, 0, i);
		h[i] = stream_val(c.seed, 1, i);
		wd[i] = h[i];
		wb[i] = (double)chain * a[i];
		h[n + i] = stream_val(c.seed, 2, i);
		wd2[i] = h[n + i];
	}
	struct dten *A = dt_new(&c, "a", (size_t)n * 4, a);
	struct dten *B = dt_new(&c, "b", (size_t)n * 4, NULL);
	struct dten *D = dt_new(&c, "d", (size_t)n * 4, NULL);
	struct dten *Y = dt_new(&c, "y", (size_t)n * 4, NULL);
	struct dten *D2 = dt_new(&c, "d2", (size_t)n * 4, NULL);
	struct dten *Y2 = dt_new(&c, "y2", (size_t)n * 4, NULL);
	if (!A || !B || !D || !Y || !D2 || !Y2 || bad(&c, be->vt->zero(be, B->v), "zero") ||
	    bad(&c, be->vt->zero(be, Y->v), "zero") || bad(&c, be->vt->zero(be, Y2->v), "zero"))
		goto out;
	uint64_t m0 = 0, m1 = 0, t = 0;
	if (bad(&c, be->vt->mark(be, &m0), "mark"))
		goto out;
	for (int k = 0; k < chain / 2; k++)
		if (bad(&c, tern_axpy(be, B->v, A->v, n, 1.0f), "axpy"))
			goto out;
	/* issued while ops are queued (and, on a GPU, running): it waits for none of them */
	if (bad(&c, be->vt->copy_async(be, D->v, (struct tern_view){hb, 0, (size_t)n * 4}, m0, &t),
		"copy_async"))
		goto out;
	for (int k = chain / 2; k < chain; k++)
		if (bad(&c, tern_axpy(be, B->v, A->v, n, 1.0f), "axpy"))
			goto out;
	if (bad(&c, be->vt->mark(be, &m1), "mark"))
		goto out;
	if (m1 < m0 || t == 0)
		fail(&c, "marks %llu then %llu, ticket %llu: marks never decrease, tickets start at 1",
		     (unsigned long long)m0, (unsigned long long)m1, (unsigned long long)t);
	if (bad(&c, be->vt->wait_ticket(be, t), "wait_ticket") ||
	    bad(&c, tern_axpy(be, Y->v, D->v, n, 1.0f), "axpy after wait_ticket"))
		goto out;
	/* the device idle first: nothing queued ahead of the reader hides the copy's latency */
	uint64_t t2 = 0;
	if (bad(&c, be->vt->synchronize(be), "synchronize") ||
	    bad(&c,
		be->vt->copy_async(be, D2->v, (struct tern_view){hb, (size_t)n * 4, (size_t)n * 4}, 0, &t2),
		"copy_async") ||
	    bad(&c, be->vt->wait_ticket(be, t2), "wait_ticket") ||
	    bad(&c, tern_axpy(be, Y2->v, D2->v, n, 1.0f), "axpy right after the copy"))
		goto out;
	stream_expect(&c, Y2, wd2, n);
	stream_expect(&c, Y, wd, n);
	stream_expect(&c, D, wd, n);
	stream_expect(&c, B, wb, n);
out:
	if (hb)
		be->vt->buffer_free(be, hb);
	free(a);
	free(wd);
	free(wb);
	free(wd2);
	chk_end(&c);
}

/* A ring of 3 device slots fed `layers` times, two copies ahead of use: the copy into a slot
 * waits (through a mark) for the ops that read its previous layer, the ops wait (through
 * wait_ticket) for the copy, and the host rewrites a staging region only after
 * ticket_wait_host says its last copy has finished. Every layer is copied out by an op into a
 * row of `out` and summed into `acc` by several more, so a copy that overtakes a reader or a
 * reader that overtakes a copy gives wrong values. */
#define STREAM_SLOTS 3
#define STREAM_AHEAD 2
static void check_stream_ring(struct suite *s, int64_t n, int layers)
{
	struct chk c;
	chk_begin(&c, s, "copy_async", "ring of %d slots x %lld, %d layers", STREAM_SLOTS, (long long)n,
		  layers);
	struct tern_backend *be = s->be;
	float *h = NULL;
	uint64_t *ticket = calloc((size_t)layers, sizeof *ticket),
		 *mark = calloc((size_t)layers, sizeof *mark);
	double *wout = dvec(n * layers), *wacc = dvec(n);
	struct tern_buffer *hb = stream_host(&c, n * STREAM_SLOTS, &h);
	if (!hb || !ticket || !mark || !wout || !wacc) {
		fail(&c, "setup failed");
		goto out;
	}
	const int reads = 3; /* axpys per layer besides the copy-out */
	for (int i = 0; i < layers; i++)
		for (int64_t j = 0; j < n; j++) {
			double v = stream_val(c.seed, i, j);
			wout[i * n + j] = v;
			wacc[j] += reads * v;
		}
	struct dten *S = dt_new(&c, "slots", (size_t)(n * STREAM_SLOTS) * 4, NULL);
	struct dten *O = dt_new(&c, "out", (size_t)(n * layers) * 4, NULL);
	struct dten *acc = dt_new(&c, "acc", (size_t)n * 4, NULL);
	if (!S || !O || !acc || bad(&c, be->vt->zero(be, acc->v), "zero"))
		goto out;
	size_t row = (size_t)n * 4;
	/* prefetch(j): stage layer j and copy it into slot j % 3 after the readers of layer j - 3 */
	for (int j = 0, i = 0; i < layers; i++) {
		for (; j < layers && j <= i + STREAM_AHEAD; j++) {
			int k = j % STREAM_SLOTS;
			if (j >= STREAM_SLOTS &&
			    bad(&c, be->vt->ticket_wait_host(be, ticket[j - STREAM_SLOTS]),
				"ticket_wait_host"))
				goto out;
			for (int64_t e = 0; e < n; e++)
				h[k * n + e] = stream_val(c.seed, j, e);
			uint64_t after = j >= STREAM_SLOTS ? mark[j - STREAM_SLOTS] : 0;
			struct tern_view dst = tern_view_sub(S->v, k * row, row);
			struct tern_view src = {hb, k * row, row};
			if (bad(&c, be->vt->copy_async(be, dst, src, after, &ticket[j]), "copy_async"))
				goto out;
			if (j > 0 && ticket[j] <= ticket[j - 1]) {
				fail(&c, "ticket %llu after %llu: tickets must increase",
				     (unsigned long long)ticket[j], (unsigned long long)ticket[j - 1]);
				goto out;
			}
		}
		struct tern_view slot = tern_view_sub(S->v, (size_t)(i % STREAM_SLOTS) * row, row);
		if (bad(&c, be->vt->wait_ticket(be, ticket[i]), "wait_ticket") ||
		    bad(&c,
			tern_cast(be, tern_view_sub(O->v, (size_t)i * row, row), TERN_F32, slot, TERN_F32, n),
			"cast"))
			goto out;
		for (int r = 0; r < reads; r++)
			if (bad(&c, tern_axpy(be, acc->v, slot, n, 1.0f), "axpy"))
				goto out;
		if (bad(&c, be->vt->mark(be, &mark[i]), "mark"))
			goto out;
	}
	stream_expect(&c, O, wout, n * layers);
	stream_expect(&c, acc, wacc, n);
out:
	if (hb)
		be->vt->buffer_free(be, hb);
	free(ticket);
	free(mark);
	free(wout);
	free(wacc);
	chk_end(&c);
}

/* A rejected call returns TERN_E_INVALID with one line that names the entry point. */
static void stream_reject(struct chk *c, enum tern_status st, const char *what, const char *name)
{
	const char *e = tern_error();
	if (st != TERN_E_INVALID || !strstr(e, name) || strchr(e, '\n'))
		fail(c, "%s: got %s \"%s\", want invalid naming %s on one line", what, tern_status_str(st), e,
		     name);
}

static void check_stream_errors(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "copy_async", "zero size, bad views, bad marks/tickets");
	struct tern_backend *be = s->be;
	const int64_t n = 64;
	float *h = NULL;
	struct tern_buffer *hb = stream_host(&c, n, &h), *hz = NULL;
	struct dten *D = dt_new(&c, "d", (size_t)n * 4, NULL);
	if (!hb || !D)
		goto out;
	for (int64_t i = 0; i < n; i++)
		h[i] = (float)i;
	struct tern_view src = {hb, 0, (size_t)n * 4};
	uint64_t t = 7, m = 0;
	void *p = NULL;
	stream_reject(&c, be->vt->host_alloc(be, 0, &hz, &p), "host_alloc(0)", "host_alloc");
	if (hz || p)
		fail(&c, "host_alloc(0) returned a buffer");
	stream_reject(&c, be->vt->copy_async(be, tern_view_sub(D->v, 0, 0), tern_view_sub(src, 0, 0), 0, &t),
		      "zero-size copy", "copy_async");
	if (t != 0)
		fail(&c, "a rejected copy_async left ticket %llu", (unsigned long long)t);
	stream_reject(&c, be->vt->copy_async(be, D->v, tern_view_sub(src, 0, src.size - 4), 0, &t),
		      "size mismatch", "copy_async");
	stream_reject(&c,
		      be->vt->copy_async(be, (struct tern_view){D->buf, 2 * GUARD + 4, src.size}, src, 0, &t),
		      "dst past its buffer", "copy_async");
	stream_reject(&c, be->vt->copy_async(be, D->v, (struct tern_view){hb, 4, src.size}, 0, &t),
		      "src past its buffer", "copy_async");
	stream_reject(&c, be->vt->copy_async(be, D->v, D->v, 0, &t), "device src", "copy_async");
	stream_reject(&c, be->vt->copy_async(be, src, src, 0, &t), "host dst", "copy_async");
	if (bad(&c, be->vt->mark(be, &m), "mark"))
		goto out;
	stream_reject(&c, be->vt->copy_async(be, D->v, src, m + 1, &t), "after a future mark", "copy_async");
	/* a good copy, then tickets past it */
	if (bad(&c, be->vt->copy_async(be, D->v, src, m, &t), "copy_async"))
		goto out;
	stream_reject(&c, be->vt->wait_ticket(be, t + 1), "unissued ticket", "wait_ticket");
	stream_reject(&c, be->vt->ticket_wait_host(be, t + 1), "unissued ticket", "ticket_wait_host");
	if (bad(&c, be->vt->wait_ticket(be, 0), "wait_ticket(0)") ||
	    bad(&c, be->vt->ticket_wait_host(be, 0), "ticket_wait_host(0)") ||
	    bad(&c, be->vt->ticket_wait_host(be, t), "ticket_wait_host"))
		goto out;
	/* the rejected calls wrote nothing; the good one landed (download waits for copies) */
	double want[64];
	for (int64_t i = 0; i < n; i++)
		want[i] = (double)i;
	stream_expect(&c, D, want, n);
out:
	if (hb)
		be->vt->buffer_free(be, hb);
	chk_end(&c);
}

static void check_stream_memory(struct suite *s)
{
	struct chk c;
	chk_begin(&c, s, "memory_info", "budget, usage around 4 MiB");
	struct tern_backend *be = s->be;
	const size_t size = 4u << 20;
	uint64_t b0 = 0, u0 = 0, b1 = 0, u1 = 0, b2 = 0, u2 = 0;
	struct tern_buffer *buf = NULL;
	if (bad(&c, be->vt->memory_info(be, &b0, &u0), "memory_info") ||
	    bad(&c, be->vt->buffer_alloc(be, size, &buf), "buffer_alloc") ||
	    bad(&c, be->vt->memory_info(be, &b1, &u1), "memory_info"))
		goto out;
	be->vt->buffer_free(be, buf);
	buf = NULL;
	if (bad(&c, be->vt->memory_info(be, &b2, &u2), "memory_info"))
		goto out;
	printf("%-7s %-11s budget %.1f MiB, usage %.1f -> %.1f -> %.1f MiB\n", s->bname, "memory_info",
	       (double)b0 / (1 << 20), (double)u0 / (1 << 20), (double)u1 / (1 << 20),
	       (double)u2 / (1 << 20));
	if (b0 == 0 || u0 > b0 || u1 > b1)
		fail(&c, "budget %llu, usage %llu then %llu: want 0 < usage <= budget",
		     (unsigned long long)b0, (unsigned long long)u0, (unsigned long long)u1);
	/* allocation noise aside (another thread, a driver's own allocations), the buffer shows */
	if (u1 < u0 + size / 2)
		fail(&c, "usage %llu -> %llu after allocating %zu bytes", (unsigned long long)u0,
		     (unsigned long long)u1, size);
	if (u2 + size / 2 > u1)
		fail(&c, "usage %llu -> %llu after freeing %zu bytes", (unsigned long long)u1,
		     (unsigned long long)u2, size);
out:
	if (buf)
		be->vt->buffer_free(be, buf);
	chk_end(&c);
}

static void check_stream_all(struct suite *s)
{
	/* TERN_TEST_STREAM_SCALE=k multiplies the sizes (on a GPU with a transfer queue, large
	 * copies make a missing wait show) */
	const char *env = getenv("TERN_TEST_STREAM_SCALE");
	int64_t k = env ? strtoll(env, NULL, 10) : 1;
	if (k < 1)
		k = 1;
	check_stream_overlap(s, 4099 * k, 64);
	check_stream_ring(s, 1000 * k, 20);
	check_stream_errors(s);
	check_stream_memory(s);
}

#endif
