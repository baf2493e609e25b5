/* The CUDA backend: device discovery, buffers, the streaming entries (a copy stream ordered
 * against the compute stream with events), memory_info, the profile (event pairs per front-door
 * op) and the vtable. The ops are in cu_ops.c and cu_mm.c, their kernels in k_*.cu. */
#include "backend/cuda/cu.h"
#include "backend/cuda/cu_more.h"
#include "backend/cuda/cu_kernels_gemv.h"
#include "quant/quant.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- errors and views ------------------------------------------------------------------------ */

enum tern_status tern_cu_check(cudaError_t e, const char *what)
{
	if (e == cudaSuccess)
		return TERN_OK;
	return tern_fail(e == cudaErrorMemoryAllocation ? TERN_E_DEVICE_MEM : TERN_E_DEVICE,
			 "cuda: %s: %s (%s)", what, cudaGetErrorString(e), cudaGetErrorName(e));
}

enum tern_status tern_cu_check_blas(cublasStatus_t e, const char *what)
{
	if (e == CUBLAS_STATUS_SUCCESS)
		return TERN_OK;
	return tern_fail(e == CUBLAS_STATUS_ALLOC_FAILED ? TERN_E_DEVICE_MEM : TERN_E_DEVICE,
			 "cuda: %s: cuBLAS %s", what, cublasGetStatusString(e));
}

enum tern_status tern_cu_view(const char *op, const char *what, struct tern_view v, size_t need, size_t align,
			      void **out, const char *fmt, ...)
{
	enum tern_status st = TERN_OK;
	if (need > 0) {
		struct cu_buffer *b = cu_buf(v.buf);
		if (!b)
			st = tern_fail(TERN_E_INVALID, "%s: %s view has no buffer, needs %zu bytes", op, what,
				       need);
		else if (b->host)
			st = tern_fail(TERN_E_INVALID,
				       "%s: %s view is of a host_alloc buffer (only copy_async reads those)",
				       op, what);
		else if (v.off > b->size || v.size > b->size - v.off || need > b->size - v.off)
			st = tern_fail(TERN_E_INVALID,
				       "%s: %s view [%zu, +%zu) lies outside its %zu-byte buffer", op, what,
				       v.off, v.size, b->size);
		else if (align > 1 && v.off % align != 0) /* cudaMalloc returns 256-byte aligned memory */
			st = tern_fail(TERN_E_INVALID,
				       "%s: %s view offset %zu is not a multiple of %zu bytes", op, what,
				       v.off, align);
	}
	if (st != TERN_OK) {
		va_list ap;
		va_start(ap, fmt);
		st = tern_vfail_suffix(st, fmt, ap);
		va_end(ap);
		return st;
	}
	*out = need > 0 ? (char *)cu_buf(v.buf)->ptr + v.off : NULL;
	return TERN_OK;
}

cudaStream_t tern_cu_stream(struct cu_backend *c)
{
	c->ops++;
	if (c->graph.on)
		tern_cu_graph_enter(c);
	return c->s;
}

/* The compute stream for a copy that must not be captured (upload, download: the caller's
 * pageable memory), after tern_cu_flush. */
static cudaStream_t cu_stream_live(struct cu_backend *c)
{
	c->ops++;
	return c->s;
}

enum tern_status tern_cu_scratch(struct cu_backend *c, size_t size, void **out)
{
	if (size <= c->scratch_size) {
		*out = c->scratch;
		return TERN_OK;
	}
	enum tern_status st;
	if ((st = tern_cu_flush(c, true))) /* cudaMalloc (and cudaFree) end any capture */
		return st;
	if (c->scratch) { /* queued kernels may still read it */
		if ((st = tern_cu_check(cudaStreamSynchronize(c->s), "scratch: synchronize")))
			return st;
		cudaFree(c->scratch);
		c->used -= c->scratch_size;
		c->scratch = NULL;
		c->scratch_size = 0;
	}
	size = (size + ((size_t)1 << 20) - 1) & ~(((size_t)1 << 20) - 1); /* whole MiB */
	if ((st = tern_cu_check(cudaMalloc(&c->scratch, size), "scratch")))
		return tern_fail(st, "cuda: out of device memory for %zu bytes of scratch (%s)", size,
				 tern_error());
	c->scratch_size = size;
	c->used += size;
	*out = c->scratch;
	return TERN_OK;
}

enum tern_status tern_cu_terms(struct cu_backend *c, int64_t n, double **out)
{
	if (n <= c->term_n) {
		*out = c->term;
		return TERN_OK;
	}
	enum tern_status st;
	if ((st = tern_cu_flush(c, true)))
		return st;
	if (c->term) {
		if ((st = tern_cu_check(cudaStreamSynchronize(c->s), "ce_loss: synchronize")))
			return st;
		cudaFree(c->term);
		c->used -= (uint64_t)c->term_n * 8;
		c->term = NULL;
		c->term_n = 0;
	}
	if ((st = tern_cu_check(cudaMalloc((void **)&c->term, (size_t)n * 8), "ce_loss terms")))
		return st;
	c->term_n = n;
	c->used += (uint64_t)n * 8;
	*out = c->term;
	return TERN_OK;
}

/* ---- the profile ------------------------------------------------------------------------------ */

/* Opens a record of `kind` on stream st (the compute stream for ops and plain copies, the copy
 * stream for copy_async). Events are made on demand and kept for reuse. */
static void prof_begin(struct cu_backend *c, enum tern_prof_kind kind, int op, cudaStream_t st)
{
	if (c->prof_n == c->prof_cap) {
		int cap = c->prof_cap ? 2 * c->prof_cap : 256;
		struct cu_prof_rec *p = realloc(c->prof, (size_t)cap * sizeof *p);
		if (!p)
			return; /* not timed: the totals lack this op */
		memset(p + c->prof_cap, 0, (size_t)(cap - c->prof_cap) * sizeof *p);
		c->prof = p;
		c->prof_cap = cap;
	}
	struct cu_prof_rec *r = &c->prof[c->prof_n];
	if (!r->a && (cudaEventCreate(&r->a) != cudaSuccess || cudaEventCreate(&r->b) != cudaSuccess))
		return;
	r->kind = kind;
	r->op = op;
	cudaEventRecord(r->a, st);
	c->prof_open = c->prof_n;
}

static void prof_end(struct cu_backend *c, cudaStream_t st)
{
	if (c->prof_open < 0)
		return;
	cudaEventRecord(c->prof[c->prof_open].b, st);
	c->prof_n = c->prof_open + 1;
	c->prof_open = -1;
}

static void cu_profile_op(struct tern_backend *be, enum tern_prof_kind kind, double flops, bool begin)
{
	struct cu_backend *c = cu_be(be);
	if (begin) {
		c->totals.flops[kind] += flops;
		c->totals.op_calls[be->profile_op]++;
		prof_begin(c, kind, (int)be->profile_op, c->s);
	} else {
		prof_end(c, c->s);
	}
}

/* Sums the recorded pairs into the totals (waits for them). */
static enum tern_status prof_collect(struct cu_backend *c)
{
	enum tern_status st = TERN_OK;
	for (int i = 0; i < c->prof_n; i++) {
		struct cu_prof_rec *r = &c->prof[i];
		float ms = 0.0f;
		cudaError_t e = cudaEventSynchronize(r->b);
		if (e == cudaSuccess)
			e = cudaEventElapsedTime(&ms, r->a, r->b);
		if (e != cudaSuccess && st == TERN_OK)
			st = tern_cu_check(e, "profile: event time");
		c->totals.ns[r->kind] += (double)ms * 1e6;
		if (r->op >= 0)
			c->totals.op_ns[r->op] += (double)ms * 1e6;
	}
	c->prof_n = 0;
	c->prof_open = -1;
	return st;
}

static enum tern_status cu_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset)
{
	struct cu_backend *c = cu_be(be);
	enum tern_status st = tern_cu_flush(c, true);
	if (st == TERN_OK)
		st = prof_collect(c);
	*out = c->totals;
	if (reset)
		memset(&c->totals, 0, sizeof c->totals);
	return st;
}

static enum tern_status cu_profile_set(struct tern_backend *be, bool on)
{
	struct cu_backend *c = cu_be(be);
	(void)on; /* on: nothing is captured while be->profiling (tern_cu_graph_enter) */
	enum tern_status st = tern_cu_flush(c, true);
	if (st == TERN_OK)
		st = prof_collect(c);
	memset(&c->totals, 0, sizeof c->totals);
	return st;
}

/* Plain copies (upload, download, zero) count as TERN_PROF_COPIES outside any op. */
static bool copy_timed(struct tern_backend *be) { return be->profiling && be->profile_depth == 0; }

/* ---- buffers ------------------------------------------------------------------------------ */

/* Waits for every op and copy queued (or captured) so far. */
static enum tern_status cu_wait_all(struct cu_backend *c, const char *what)
{
	enum tern_status st = tern_cu_flush(c, true);
	if (st)
		return st;
	st = tern_cu_check(cudaStreamSynchronize(c->cs), what);
	return st ? st : tern_cu_check(cudaStreamSynchronize(c->s), what);
}

static enum tern_status cu_buffer_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out)
{
	struct cu_backend *c = cu_be(be);
	*out = NULL;
	enum tern_status st = tern_cu_flush(c, true); /* cudaMalloc is not allowed during a capture */
	if (st)
		return st;
	struct cu_buffer *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	cudaError_t e = cudaMalloc(&b->ptr, size ? size : 1);
	if (e != cudaSuccess) {
		free(b);
		cudaGetLastError(); /* clear the sticky-free allocation error */
		return tern_fail(e == cudaErrorMemoryAllocation ? TERN_E_DEVICE_MEM : TERN_E_DEVICE,
				 "cuda: out of device memory for a %zu-byte buffer (%s)", size,
				 cudaGetErrorString(e));
	}
	/* zero-filled, as the contract promises, and finished before it returns: a copy_async into
	 * the new buffer (on the copy stream) must not race the zeroing */
	st = tern_cu_check(cudaMemsetAsync(b->ptr, 0, size ? size : 1, c->s), "buffer zero");
	if (st == TERN_OK)
		st = tern_cu_check(cudaStreamSynchronize(c->s), "buffer zero");
	if (st) {
		cudaFree(b->ptr);
		free(b);
		return st;
	}
	b->size = size;
	c->used += size;
	*out = (struct tern_buffer *)(void *)b;
	return TERN_OK;
}

static void cu_buffer_free(struct tern_backend *be, struct tern_buffer *buf)
{
	struct cu_backend *c = cu_be(be);
	struct cu_buffer *b = cu_buf(buf);
	if (!b)
		return;
	cu_wait_all(c, "buffer_free"); /* nothing queued may still read or write it */
	if (b->host) {
		cudaFreeHost(b->ptr);
	} else {
		cudaFree(b->ptr);
		c->used -= b->size;
	}
	free(b);
}

static enum tern_status cu_upload(struct tern_backend *be, struct tern_view dst, const void *src)
{
	struct cu_backend *c = cu_be(be);
	void *p;
	enum tern_status st = tern_cu_view("upload", "dst", dst, dst.size, 1, &p, "%zu bytes", dst.size);
	if (st || dst.size == 0)
		return st;
	be->counts.uploads++;
	be->counts.waits += 2; /* the two stream synchronizations below */
	if ((st = tern_cu_flush(c, true)) ||
	    (st = tern_cu_check(cudaStreamSynchronize(c->cs), "upload: wait for copies")))
		return st;
	bool timed = copy_timed(be);
	if (timed)
		prof_begin(c, TERN_PROF_COPIES, -1, c->s);
	st = tern_cu_check(cudaMemcpyAsync(p, src, dst.size, cudaMemcpyHostToDevice, cu_stream_live(c)),
			   "upload");
	if (timed)
		prof_end(c, c->s);
	/* src is the caller's (pageable) memory: it may be reused when upload returns */
	return st ? st : tern_cu_check(cudaStreamSynchronize(c->s), "upload");
}

static enum tern_status cu_download(struct tern_backend *be, void *dst, struct tern_view src)
{
	struct cu_backend *c = cu_be(be);
	void *p;
	enum tern_status st = tern_cu_view("download", "src", src, src.size, 1, &p, "%zu bytes", src.size);
	if (st || src.size == 0)
		return st;
	be->counts.downloads++;
	be->counts.waits += 2; /* the two stream synchronizations below */
	if ((st = tern_cu_flush(c, true)) ||
	    (st = tern_cu_check(cudaStreamSynchronize(c->cs), "download: wait for copies")))
		return st;
	bool timed = copy_timed(be);
	if (timed)
		prof_begin(c, TERN_PROF_COPIES, -1, c->s);
	st = tern_cu_check(cudaMemcpyAsync(dst, p, src.size, cudaMemcpyDeviceToHost, cu_stream_live(c)),
			   "download");
	if (timed)
		prof_end(c, c->s);
	return st ? st : tern_cu_check(cudaStreamSynchronize(c->s), "download");
}

static enum tern_status cu_zero(struct tern_backend *be, struct tern_view dst)
{
	struct cu_backend *c = cu_be(be);
	void *p;
	enum tern_status st = tern_cu_view("zero", "dst", dst, dst.size, 1, &p, "%zu bytes", dst.size);
	if (st || dst.size == 0)
		return st;
	bool timed = copy_timed(be);
	if (timed)
		prof_begin(c, TERN_PROF_COPIES, -1, c->s);
	st = tern_cu_check(cudaMemsetAsync(p, 0, dst.size, tern_cu_stream(c)), "zero");
	if (timed)
		prof_end(c, c->s);
	return st;
}

static enum tern_status cu_synchronize(struct tern_backend *be)
{
	return cu_wait_all(cu_be(be), "synchronize");
}

/* ---- streaming ------------------------------------------------------------------------------ */

static enum tern_status cu_host_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out,
				      void **ptr)
{
	*out = NULL;
	*ptr = NULL;
	if (size == 0)
		return tern_fail(TERN_E_INVALID, "host_alloc: size 0; a host buffer needs at least one byte");
	enum tern_status st = tern_cu_flush(cu_be(be), false); /* cudaHostAlloc: not during a capture */
	if (st)
		return st;
	struct cu_buffer *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	cudaError_t e = cudaHostAlloc(&b->ptr, size, cudaHostAllocDefault); /* pinned */
	if (e != cudaSuccess) {
		free(b);
		cudaGetLastError();
		return tern_fail(TERN_E_NOMEM, "cuda: host_alloc: no %zu bytes of pinned host memory (%s)",
				 size, cudaGetErrorString(e));
	}
	memset(b->ptr, 0, size);
	b->size = size;
	b->host = true;
	*out = (struct tern_buffer *)(void *)b;
	*ptr = b->ptr;
	return TERN_OK;
}

static enum tern_status cu_mark(struct tern_backend *be, uint64_t *mark)
{
	struct cu_backend *c = cu_be(be);
	*mark = 0;
	if (c->marks == 0 || c->ops != c->ops_at_mark) {
		uint64_t m = c->marks + 1;
		/* the copy stream waits for this event: it must follow the captured work on the live
		 * stream, not be recorded inside a capture */
		enum tern_status st = tern_cu_flush(c, false);
		if (st == TERN_OK)
			st = tern_cu_check(cudaEventRecord(c->mark_ev[m % CU_RING], c->s),
					   "mark: event record");
		if (st)
			return st;
		c->marks = m;
		c->ops_at_mark = c->ops;
	}
	*mark = c->marks;
	return TERN_OK;
}

static enum tern_status cu_copy_async(struct tern_backend *be, struct tern_view dst, struct tern_view src,
				      uint64_t after, uint64_t *ticket)
{
	struct cu_backend *c = cu_be(be);
	*ticket = 0;
	if (dst.size == 0 || src.size != dst.size)
		return tern_fail(
			TERN_E_INVALID,
			"copy_async: dst is %zu bytes and src %zu; both must be the same nonzero size",
			dst.size, src.size);
	if (after > c->marks)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: after = %llu, but the last mark is %llu (pass 0 or a mark())",
				 (unsigned long long)after, (unsigned long long)c->marks);
	struct cu_buffer *sb = cu_buf(src.buf), *db = cu_buf(dst.buf);
	if (!sb || !db || sb->host == db->host)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: one of src and dst must be a view of a host_alloc buffer and "
				 "the other of a device buffer");
	/* host -> device (weights into a slot) or device -> host (an offloaded checkpoint) */
	bool out = db->host;
	struct cu_buffer *hb = out ? db : sb;
	struct tern_view hv = out ? dst : src;
	if (hv.off > hb->size || hv.size > hb->size - hv.off)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: %s view [%zu, +%zu) lies outside its %zu-byte buffer",
				 out ? "dst" : "src", hv.off, hv.size, hb->size);
	void *d;
	enum tern_status st = tern_cu_view("copy_async", out ? "src" : "dst", out ? src : dst, dst.size, 1,
					   &d, "%zu bytes", dst.size);
	if (st)
		return st;
	void *h = (char *)hb->ptr + hv.off;
	if (after && (st = tern_cu_check(cudaStreamWaitEvent(c->cs, c->mark_ev[after % CU_RING], 0),
					 "copy_async: wait for mark")))
		return st;
	bool timed = be->profiling;
	if (timed)
		prof_begin(c, TERN_PROF_COPIES, -1, c->cs);
	st = tern_cu_check(out ? cudaMemcpyAsync(h, d, dst.size, cudaMemcpyDeviceToHost, c->cs)
			       : cudaMemcpyAsync(d, h, dst.size, cudaMemcpyHostToDevice, c->cs),
			   "copy_async");
	if (timed)
		prof_end(c, c->cs);
	if (st)
		return st;
	uint64_t t = c->tickets + 1;
	if ((st = tern_cu_check(cudaEventRecord(c->ticket_ev[t % CU_RING], c->cs), "copy_async: event")))
		return st;
	c->tickets = t;
	*ticket = t;
	return TERN_OK;
}

static enum tern_status cu_check_ticket(struct cu_backend *c, const char *what, uint64_t ticket)
{
	if (ticket > c->tickets)
		return tern_fail(TERN_E_INVALID, "%s: ticket %llu was never issued (the last is %llu)", what,
				 (unsigned long long)ticket, (unsigned long long)c->tickets);
	return TERN_OK;
}

static enum tern_status cu_wait_ticket(struct tern_backend *be, uint64_t ticket)
{
	struct cu_backend *c = cu_be(be);
	enum tern_status st = cu_check_ticket(c, "wait_ticket", ticket);
	if (st || ticket == 0)
		return st;
	/* an event of the copy stream cannot be waited for inside a capture */
	if ((st = tern_cu_flush(c, false)))
		return st;
	/* the copy stream runs its copies in order: ticket's event covers every earlier ticket */
	return tern_cu_check(cudaStreamWaitEvent(c->s, c->ticket_ev[ticket % CU_RING], 0), "wait_ticket");
}

static enum tern_status cu_ticket_wait_host(struct tern_backend *be, uint64_t ticket)
{
	struct cu_backend *c = cu_be(be);
	enum tern_status st = cu_check_ticket(c, "ticket_wait_host", ticket);
	if (st || ticket == 0)
		return st;
	/* the host waits: the captured work runs meanwhile */
	if ((st = tern_cu_flush(c, true)))
		return st;
	return tern_cu_check(cudaEventSynchronize(c->ticket_ev[ticket % CU_RING]), "ticket_wait_host");
}

static enum tern_status cu_memory_info(struct tern_backend *be, uint64_t *budget, uint64_t *usage)
{
	struct cu_backend *c = cu_be(be);
	size_t free_b = 0, total = 0;
	enum tern_status st = tern_cu_flush(c, false);
	if (st == TERN_OK)
		st = tern_cu_check(cudaMemGetInfo(&free_b, &total), "memory_info");
	if (st)
		return st;
	/* the driver's free memory is what anyone may still take; ours is on top of it */
	*usage = c->used;
	*budget = (uint64_t)free_b + c->used;
	if (*budget > total)
		*budget = total;
	return TERN_OK;
}

/* ---- capabilities ---------------------------------------------------------------------------- */

static bool cu_supports(struct tern_backend *be, enum tern_op op, enum tern_dtype wt)
{
	if (wt == TERN_TERNARY && (op == TERN_OP_MATMUL_GROUPED || op == TERN_OP_MATMUL_GROUPED_BWD))
		return false; /* one scale per matrix, not per expert (the front door refuses it) */
	return tern_backend_has_op(be, op) && (unsigned)wt < TERN_DTYPE_COUNT;
}

/* cuBLAS multiplies f16 on every architecture built for (sm_75+), bf16 on sm_80+. */
static bool cu_supports_prec(struct tern_backend *be, enum tern_op op, enum tern_dtype prec)
{
	if (prec == TERN_BF16)
		return cu_be(be)->cc_major >= 8;
	if (op == TERN_OP_GEMM) /* f16 would need matmul's scale pass */
		return prec == TERN_F32;
	return prec == TERN_F32 || prec == TERN_F16;
}

static enum tern_dtype cu_auto_prec(struct tern_backend *be)
{
	return cu_be(be)->cc_major >= 8 ? TERN_BF16 : TERN_F16;
}

static void cu_destroy(struct tern_backend *be)
{
	struct cu_backend *c = cu_be(be);
	cudaSetDevice(c->dev);
	if (c->s)
		cu_wait_all(c, "destroy");
	tern_cu_graphs_free(c);
	for (int i = 0; i < CU_RING; i++) {
		if (c->mark_ev[i])
			cudaEventDestroy(c->mark_ev[i]);
		if (c->ticket_ev[i])
			cudaEventDestroy(c->ticket_ev[i]);
	}
	for (int i = 0; i < c->prof_cap; i++)
		if (c->prof[i].a) {
			cudaEventDestroy(c->prof[i].a);
			cudaEventDestroy(c->prof[i].b);
		}
	free(c->prof);
	if (c->blas)
		cublasDestroy(c->blas);
	cudaFree(c->blas_ws);
	cudaFree(c->scratch);
	cudaFree(c->consts);
	cudaFree(c->absmax);
	cudaFree(c->sumsq_part);
	cudaFree(c->kv_count);
	cudaFree(c->term);
	if (c->cs)
		cudaStreamDestroy(c->cs);
	if (c->s)
		cudaStreamDestroy(c->s);
	free(c);
}

static const struct tern_backend_vtable cu_vtable = {
	.buffer_alloc = cu_buffer_alloc,
	.buffer_free = cu_buffer_free,
	.upload = cu_upload,
	.download = cu_download,
	.zero = cu_zero,
	.synchronize = cu_synchronize,
	.destroy = cu_destroy,
	.supports = cu_supports,
	.supports_prec = cu_supports_prec,
	.auto_prec = cu_auto_prec,
	.host_alloc = cu_host_alloc,
	.mark = cu_mark,
	.copy_async = cu_copy_async,
	.wait_ticket = cu_wait_ticket,
	.ticket_wait_host = cu_ticket_wait_host,
	.memory_info = cu_memory_info,
	.profile_set = cu_profile_set,
	.profile_op = cu_profile_op,
	.profile_read = cu_profile_read,
	.matmul = tern_cu_matmul,
	.matmul_multi = tern_cu_matmul_multi,
	.matmul_bwd = tern_cu_matmul_bwd,
	.gemm = tern_cu_gemm,
	.lora_fuses = tern_cu_lora_fuses,
	.matmul_lora = tern_cu_matmul_lora,
	.matmul_lora_bwd = tern_cu_matmul_lora_bwd,
	.dropout = tern_cu_dropout,
	.axpy = tern_cu_axpy,
	.adamw = tern_cu_adamw,
	.sumsq = tern_cu_sumsq,
	.scale = tern_cu_scale,
	.clip = tern_cu_clip,
	.cast = tern_cu_cast,
	.rmsnorm = tern_cu_rmsnorm,
	.rmsnorm_bwd = tern_cu_rmsnorm_bwd,
	.add_rmsnorm = tern_cu_add_rmsnorm,
	.rope = tern_cu_rope,
	.rope2 = tern_cu_rope2,
	.swiglu = tern_cu_swiglu,
	.swiglu_bwd = tern_cu_swiglu_bwd,
	.embed = tern_cu_embed,
	.embed_bwd = tern_cu_embed_bwd,
	.attention = tern_cu_attention,
	.attention_bwd = tern_cu_attention_bwd,
	.ce_loss = tern_cu_ce_loss,
	/* cu_more.h */
	.attention_kv = tern_cu_attention_kv,
	.gather_rows = tern_cu_gather_rows,
	.scatter_add_rows = tern_cu_scatter_add_rows,
	.rowdot = tern_cu_rowdot,
	.act_quant8 = tern_cu_act_quant8,
	.argmax = tern_cu_argmax,
	.route_topk = tern_cu_route_topk,
	.route_topk_bwd = tern_cu_route_topk_bwd,
	.matmul_grouped = tern_cu_matmul_grouped,
	.matmul_grouped_bwd = tern_cu_matmul_grouped_bwd,
};

/* ---- devices ---------------------------------------------------------------------------------- */

/* The number of CUDA devices; TERN_E_UNAVAILABLE "cuda: no device (...)" when there is none or
 * the driver is missing or too old for this runtime. */
static enum tern_status cu_count(int *n)
{
	*n = 0;
	cudaError_t e = cudaGetDeviceCount(n);
	if (e != cudaSuccess) {
		cudaGetLastError();
		*n = 0;
		return tern_fail(TERN_E_UNAVAILABLE, "cuda: no device (%s: %s)", cudaGetErrorName(e),
				 cudaGetErrorString(e));
	}
	if (*n <= 0)
		return tern_fail(TERN_E_UNAVAILABLE, "cuda: no device (the driver reports none)");
	return TERN_OK;
}

static void cu_describe(int i, const struct cudaDeviceProp *p, bool graphs, struct tern_device_info *d)
{
	int drv = 0, rt = 0;
	cudaDriverGetVersion(&drv);
	cudaRuntimeGetVersion(&rt);
	memset(d, 0, sizeof *d);
	snprintf(d->backend, sizeof d->backend, "cuda");
	d->index = i;
	snprintf(d->name, sizeof d->name, "%s", p->name);
	snprintf(d->kind, sizeof d->kind, "%s", p->integrated ? "integrated-gpu" : "discrete-gpu");
	snprintf(d->driver, sizeof d->driver, "CUDA driver %d.%d, runtime %d.%d", drv / 1000, drv % 1000 / 10,
		 rt / 1000, rt % 1000 / 10);
	snprintf(d->api, sizeof d->api, "CUDA, compute %d.%d, graphs %s", p->major, p->minor,
		 graphs ? "on" : "off");
	d->device_local_bytes = p->totalGlobalMem;
	d->host_visible_bytes = 0;
	d->max_allocation = p->totalGlobalMem;
	d->max_storage_range = p->totalGlobalMem;
	d->max_shared_memory = (uint32_t)p->sharedMemPerBlockOptin;
	d->max_workgroup_invocations = (uint32_t)p->maxThreadsPerBlock;
	d->subgroup_size = (uint32_t)p->warpSize;
	d->fp16 = d->storage16 = d->int8 = d->subgroup_arithmetic = true;
	d->transfer_queue = p->asyncEngineCount > 0;
	d->timestamps = true;
	d->memory_budget = true;
	d->timeline_semaphores = true; /* asynchronous copies: events on a copy stream */
	snprintf(d->coopmat, sizeof d->coopmat, "tensor cores (cuBLAS): f16%s; bf16 %s",
		 p->major >= 8 ? ", bf16, tf32" : "", p->major >= 8 ? "yes" : "no (compute < 8.0)");
	snprintf(d->heaps, sizeof d->heaps, "device %.1f GiB, L2 %d KiB, %d SMs",
		 (double)p->totalGlobalMem / (1024.0 * 1024.0 * 1024.0), p->l2CacheSize / 1024,
		 p->multiProcessorCount);
}

enum tern_status tern_cuda_devices(struct tern_device_info *out, int max, int *count)
{
	int n;
	*count = 0;
	enum tern_status st = cu_count(&n);
	if (st)
		return st;
	for (int i = 0; i < n && *count < max; i++) {
		struct cudaDeviceProp p;
		if ((st = tern_cu_check(cudaGetDeviceProperties(&p, i), "device properties")))
			return st;
		cu_describe(i, &p, tern_cu_graphs_wanted(), &out[(*count)++]);
	}
	return TERN_OK;
}

/* What the shared scratch (cu.h) grows to, from the figures the ops take it by. */

static uint64_t u64_min(uint64_t a, uint64_t b) { return a < b ? a : b; }
static uint64_t u64_max(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* A layer product (cu_mm.c mm_plan_of): W decoded in the product's dtype, at most CU_DECODE_BYTES a
 * step and none where W is stored in it; at F16/BF16 the activation rows rounded, at most
 * CU_OPERAND_BYTES. Over a layer's projections: bounded by the largest O·I (W) and the widest
 * operand (K); 0 means unknown (the limits then). */
static uint64_t mm_need(int64_t T, int64_t K, int64_t W, enum tern_dtype proj, enum tern_dtype prec)
{
	uint64_t es = prec == TERN_F32 ? 4 : 2;
	uint64_t w = proj == prec ? 0 : W ? u64_min(CU_DECODE_BYTES, (uint64_t)W * es) : CU_DECODE_BYTES;
	uint64_t o = prec == TERN_F32 ? 0
		     : K              ? u64_min(CU_OPERAND_BYTES, (uint64_t)T * (uint64_t)K * 2)
				      : CU_OPERAND_BYTES;
	return w + o;
}

/* ce_loss (cu_mm.c tern_cu_ce_loss): a chunk's logits, the lm_head rows it decodes (none where the
 * head is stored in the products' dtype: bf16 at BF16 unless it is trained, then fp32) and the
 * chunk's rows in bf16. */
static uint64_t ce_need(int64_t T, int64_t V, int64_t D, enum tern_dtype head, enum tern_dtype prec)
{
	int64_t tc = tern_cu_ce_chunk(T, V, D);
	bool bf = prec == TERN_BF16 && head != TERN_F32;
	enum tern_dtype pp = bf ? TERN_BF16 : TERN_F32;
	uint64_t es = bf ? 2 : 4, w = 0;
	if (head != pp) {
		int64_t n = (int64_t)(CU_DECODE_BYTES / ((uint64_t)D * es));
		w = (uint64_t)(n < 1 ? 1 : n > V ? V : n) * (uint64_t)D * es;
	}
	return (uint64_t)(tc * V) * 4 + w + (bf ? (uint64_t)(tc * D) * 2 : 0);
}

static uint64_t whole_mib(uint64_t b) { return (b + ((uint64_t)1 << 20) - 1) & ~(((uint64_t)1 << 20) - 1); }

enum tern_status tern_cuda_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out)
{
	/* without the model's other shapes: the limits of every product, ce_loss with an lm_head it
	 * decodes at bf16 products; the per-token loss terms, the cuBLAS workspace and rounding are in
	 * the reserve */
	uint64_t need = u64_max(ce_need(T, V, D, TERN_F16, TERN_BF16), mm_need(T, 0, 0, TERN_NF4, TERN_BF16));
	*out = (struct tern_backend_sizes){
		.ce_chunk = tern_cu_ce_chunk(T, V, D),
		.ce_scratch = whole_mib(need),
		.reserve = CU_RESERVE,
		.shared = true,
	};
	return TERN_OK;
}

enum tern_status tern_cuda_sizes_for(const struct tern_size_shapes *s, struct tern_backend_sizes *out)
{
	uint64_t need = u64_max(ce_need(s->T, s->V, s->D, s->head, s->prec),
				mm_need(s->T, s->K, s->W, s->proj, s->prec));
	if (s->H && s->Hkv && s->Dh) { /* attention's backward (its forward takes less) */
		struct cuk_attn ka = {
			.T = s->T, .H = s->H, .Hkv = s->Hkv, .Dh = s->Dh, .bf16 = s->prec == TERN_BF16};
		need = u64_max(need, cuk_attention_scratch(&ka, true));
	}
	out->ce_scratch = whole_mib(need);
	out->shared = true;
	return TERN_OK;
}

enum tern_status tern_cuda_create(int device, struct tern_backend **out)
{
	*out = NULL;
	int n;
	enum tern_status st = cu_count(&n);
	if (st)
		return st;
	if (device >= n)
		return tern_fail(TERN_E_INVALID,
				 "cuda: device %d does not exist (%d device%s: 0..%d; see `tern devices`)",
				 device, n, n == 1 ? "" : "s", n - 1);
	struct cudaDeviceProp p;
	if ((st = tern_cu_check(cudaSetDevice(device), "set device")) ||
	    (st = tern_cu_check(cudaGetDeviceProperties(&p, device), "device properties")))
		return st;
	if (p.major < 7 || (p.major == 7 && p.minor < 5))
		return tern_fail(
			TERN_E_UNAVAILABLE,
			"cuda: device %d (%s) has compute capability %d.%d; tern's CUDA build needs 7.5 "
			"(Turing) or newer",
			device, p.name, p.major, p.minor);
	/* TERN_CUDA_PDL=0|1: programmatic dependent launches of the decode kernels (k_pdl.cuh), on by
	 * default where the device has them (9.0 and later) */
	const char *pe = getenv("TERN_CUDA_PDL");
	if (pe && *pe && strcmp(pe, "0") && strcmp(pe, "1"))
		return tern_fail(
			TERN_E_INVALID,
			"cuda: TERN_CUDA_PDL=%s: use 1 (programmatic dependent launches, compute 9.0 "
			"and later) or 0 (plain launches)",
			pe);
	bool pdl = p.major >= 9 && !(pe && !strcmp(pe, "0"));
	/* TERN_CUDA_FA=1|2: the tensor-core attention's kernel family for all three kernels
	 * (k_attn.cu, fa_family); unset, the measured mix */
	const char *fe = getenv("TERN_CUDA_FA");
	bool fa_digits = fe && strlen(fe) == 3 && strspn(fe, "12") == 3;
	if (fe && *fe && strcmp(fe, "1") && strcmp(fe, "2") && !fa_digits)
		return tern_fail(
			TERN_E_INVALID,
			"cuda: TERN_CUDA_FA=%s: use 1 (every attention kernel with 16 query rows per "
			"warp), 2 (32 rows per warp at head sizes 64 and 128), three digits 1|2 for "
			"the forward, dQ and dK/dV (211, the default) or leave it unset",
			fe);
	/* TERN_CUDA_DECODE=co|32|8: the NF4 decode kernel (k_quant.cu, decode_form), for timing */
	const char *de = getenv("TERN_CUDA_DECODE");
	if (de && *de && strcmp(de, "32") && strcmp(de, "8") && strcmp(de, "co"))
		return tern_fail(TERN_E_INVALID,
				 "cuda: TERN_CUDA_DECODE=%s: use co (warp-contiguous 8-weight chunks, the "
				 "default), 32 or 8 (weights a thread)",
				 de);
#ifdef TERN_CUDA_EMU
	pdl = false; /* the emulation launches plainly (k_pdl.cuh) */
#endif
	struct cu_backend *c = tern_calloc(1, sizeof *c);
	if (!c)
		return TERN_E_NOMEM;
	c->dev = device;
	c->cc_major = p.major;
	c->sms = p.multiProcessorCount;
	c->cc_minor = p.minor;
	c->prof_open = -1;
	struct tern_backend *be = &c->base;
	be->vt = &cu_vtable;
	snprintf(be->name, sizeof be->name, "cuda");
	be->device_index = device;

	float nf4[16], dmap[256], consts[3] = {1.0f, 0.0f, 1.0f};
	memcpy(nf4, tern_nf4_code, sizeof nf4);
	tern_dynamic_map(dmap);
	size_t ws = (size_t)32 << 20; /* cuBLAS workspace: what Hopper's kernels ask for */
	if ((st = tern_cu_check(cudaStreamCreateWithFlags(&c->s, cudaStreamNonBlocking), "compute stream")) ||
	    (st = tern_cu_check(cudaStreamCreateWithFlags(&c->cs, cudaStreamNonBlocking), "copy stream")) ||
	    (st = tern_cu_check(cuk_set_tables(nf4, dmap), "decode tables")) ||
	    (st = tern_cu_check(cuk_gemv_set_tables(nf4, dmap), "decode tables")) ||
	    (st = tern_cu_check(cudaMalloc((void **)&c->consts, sizeof consts), "constants")) ||
	    (st = tern_cu_check(cudaMalloc((void **)&c->absmax, 4), "constants")) ||
	    (st = tern_cu_check(cudaMalloc((void **)&c->sumsq_part, CUK_SUMSQ_PARTS * sizeof(double)),
				"constants")) ||
	    (st = tern_cu_check(cudaMemcpy(c->consts, consts, sizeof consts, cudaMemcpyHostToDevice),
				"constants")) ||
	    (st = tern_cu_check(cudaMalloc((void **)&c->kv_count, CUK_KV_BLOCKS * sizeof(unsigned)),
				"attention_kv counters")) ||
	    (st = tern_cu_check(cudaMemsetAsync(c->kv_count, 0, CUK_KV_BLOCKS * sizeof(unsigned), c->s),
				"attention_kv counters")) ||
	    (st = tern_cu_check(cudaMalloc(&c->blas_ws, ws), "cuBLAS workspace")) ||
	    (st = tern_cu_check_blas(cublasCreate(&c->blas), "cublasCreate")) ||
	    (st = tern_cu_check_blas(cublasSetStream(c->blas, c->s), "cublasSetStream")) ||
	    (st = tern_cu_check_blas(cublasSetWorkspace(c->blas, c->blas_ws, ws), "cublasSetWorkspace")) ||
	    /* no TF32 (that needs CUBLAS_TF32_TENSOR_OP_MATH): fp32 products stay fp32, the 1e-5 of
	     * the contract; f16/bf16 products still run on tensor cores */
	    (st = tern_cu_check_blas(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode")) ||
	    (st = tern_cu_graphs_init(c)))
		goto fail;
	for (int i = 0; i < CU_RING; i++)
		if ((st = tern_cu_check(cudaEventCreateWithFlags(&c->mark_ev[i], cudaEventDisableTiming),
					"events")) ||
		    (st = tern_cu_check(cudaEventCreateWithFlags(&c->ticket_ev[i], cudaEventDisableTiming),
					"events")))
			goto fail;
	c->used =
		sizeof consts + 4 + CUK_SUMSQ_PARTS * sizeof(double) + CUK_KV_BLOCKS * sizeof(unsigned) + ws;
	cuk_set_pdl(pdl);
	snprintf(be->device_name, sizeof be->device_name, "%.200s (compute %d.%d, CUDA graphs %s%s)", p.name,
		 p.major, p.minor, c->graph.on ? "on" : "off", pdl ? ", PDL" : "");
	*out = be;
	return TERN_OK;
fail:
	cu_destroy(be);
	return st;
}
