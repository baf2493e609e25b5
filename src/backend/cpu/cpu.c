/* The CPU reference backend: host buffers, the device description and the vtable. Ops run
 * synchronously in call order, so synchronize() has nothing to wait for. */
#define _DEFAULT_SOURCE /* sysconf(_SC_PHYS_PAGES), _SC_NPROCESSORS_ONLN */
#include "backend/cpu/cpu.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef _OPENMP
static const char ref_driver[] = "tern reference (plain C, OpenMP)";
#else
static const char ref_driver[] = "tern reference (plain C, single thread)";
#endif

enum tern_status tern_cpu_view(const char *op, const char *what, struct tern_view v, size_t need,
			       size_t align, void **out, const char *fmt, ...)
{
	enum tern_status st = TERN_OK;
	if (need > 0) {
		struct cpu_buffer *b = cpu_buf(v.buf);
		if (!b) /* reachable only from the buffer entries: the ops' front doors check this */
			st = tern_fail(TERN_E_INVALID, "%s: %s view has no buffer, needs %zu bytes", op, what,
				       need);
		else if (v.off > b->size || v.size > b->size - v.off)
			st = tern_fail(TERN_E_INVALID,
				       "%s: %s view [%zu, +%zu) lies outside its %zu-byte buffer", op, what,
				       v.off, v.size, b->size);
		else if (align > 1 && ((uintptr_t)(b->data + v.off) % align) != 0)
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
	/* a zero-byte view may come without a buffer; nothing reads through it */
	*out = need > 0 ? cpu_buf(v.buf)->data + v.off : NULL;
	return TERN_OK;
}

/* ---- the profile: ops run synchronously, so the host clock around an entry is its time ------ */

static void cpu_profile_op(struct tern_backend *be, enum tern_prof_kind kind, double flops, bool begin)
{
	struct cpu_backend *c = cpu_be(be);
	if (begin) {
		c->prof.flops[kind] += flops;
		c->prof.op_calls[be->profile_op]++;
		c->prof_t0 = tern_now();
	} else {
		double ns = (tern_now() - c->prof_t0) * 1e9;
		c->prof.ns[kind] += ns;
		c->prof.op_ns[be->profile_op] += ns;
	}
}

static enum tern_status cpu_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset)
{
	struct cpu_backend *c = cpu_be(be);
	*out = c->prof;
	if (reset)
		memset(&c->prof, 0, sizeof c->prof);
	return TERN_OK;
}

/* A buffer entry that began at t0 counts as a copy while the profile is on, unless an op runs it
 * (then it is part of that op's time). */
static void cpu_copy_time(struct tern_backend *be, double t0)
{
	if (be->profiling && be->profile_depth == 0)
		cpu_be(be)->prof.ns[TERN_PROF_COPIES] += (tern_now() - t0) * 1e9;
}

/* ---- buffers ------------------------------------------------------------------------------ */

static enum tern_status cpu_new_buffer(struct tern_backend *be, size_t size, bool host,
				       struct tern_buffer **out)
{
	struct cpu_buffer *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	b->data = tern_calloc(size ? size : 1, 1); /* zero-filled: the contract callers rely on */
	if (!b->data) {
		free(b);
		return TERN_E_NOMEM;
	}
	b->size = size;
	b->host = host;
	if (!host)
		cpu_be(be)->used += size;
	*out = (struct tern_buffer *)(void *)b;
	return TERN_OK;
}

static enum tern_status cpu_buffer_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out)
{
	return cpu_new_buffer(be, size, false, out);
}

static void cpu_buffer_free(struct tern_backend *be, struct tern_buffer *buf)
{
	struct cpu_buffer *b = cpu_buf(buf);
	if (!b)
		return;
	if (!b->host)
		cpu_be(be)->used -= b->size;
	free(b->data);
	free(b);
}

static enum tern_status cpu_upload(struct tern_backend *be, struct tern_view dst, const void *src)
{
	void *p;
	double t0 = tern_now();
	enum tern_status st = tern_cpu_view("upload", "dst", dst, dst.size, 1, &p, "%zu bytes", dst.size);
	be->counts.uploads++;
	if (st == TERN_OK && dst.size > 0)
		memcpy(p, src, dst.size);
	cpu_copy_time(be, t0);
	return st;
}

static enum tern_status cpu_download(struct tern_backend *be, void *dst, struct tern_view src)
{
	void *p;
	double t0 = tern_now();
	enum tern_status st = tern_cpu_view("download", "src", src, src.size, 1, &p, "%zu bytes", src.size);
	be->counts.downloads++;
	if (st == TERN_OK && src.size > 0)
		memcpy(dst, p, src.size);
	cpu_copy_time(be, t0);
	return st;
}

static enum tern_status cpu_zero(struct tern_backend *be, struct tern_view dst)
{
	void *p;
	double t0 = tern_now();
	enum tern_status st = tern_cpu_view("zero", "dst", dst, dst.size, 1, &p, "%zu bytes", dst.size);
	if (st == TERN_OK && dst.size > 0)
		memset(p, 0, dst.size);
	cpu_copy_time(be, t0);
	return st;
}

static enum tern_status cpu_synchronize(struct tern_backend *be) { return TERN_OK; }

/* ---- streaming: every copy happens at once, so every ticket is complete when issued ---------- */

static enum tern_status cpu_host_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out,
				       void **ptr)
{
	*out = NULL;
	*ptr = NULL;
	if (size == 0)
		return tern_fail(TERN_E_INVALID, "host_alloc: size 0; a host buffer needs at least one byte");
	enum tern_status st = cpu_new_buffer(be, size, true, out);
	if (st == TERN_OK)
		*ptr = cpu_buf(*out)->data;
	return st;
}

static enum tern_status cpu_mark(struct tern_backend *be, uint64_t *mark)
{
	*mark = ++cpu_be(be)->marks;
	return TERN_OK;
}

static enum tern_status cpu_copy_async(struct tern_backend *be, struct tern_view dst, struct tern_view src,
				       uint64_t after, uint64_t *ticket)
{
	struct cpu_backend *c = cpu_be(be);
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
	if (src.buf && dst.buf && cpu_buf(src.buf)->host == cpu_buf(dst.buf)->host)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: src and dst are both %s buffers; one must be a host_alloc "
				 "buffer and the other a device buffer",
				 cpu_buf(src.buf)->host ? "host_alloc" : "device");
	void *d, *s;
	enum tern_status st;
	if ((st = tern_cpu_view("copy_async", "dst", dst, dst.size, 1, &d, "%zu bytes", dst.size)) ||
	    (st = tern_cpu_view("copy_async", "src", src, src.size, 1, &s, "%zu bytes", src.size)))
		return st;
	double t0 = tern_now();
	memcpy(d, s, dst.size);
	cpu_copy_time(be, t0);
	*ticket = ++c->tickets;
	return TERN_OK;
}

static enum tern_status cpu_check_ticket(struct tern_backend *be, const char *what, uint64_t ticket)
{
	if (ticket > cpu_be(be)->tickets)
		return tern_fail(TERN_E_INVALID, "%s: ticket %llu was never issued (the last is %llu)", what,
				 (unsigned long long)ticket, (unsigned long long)cpu_be(be)->tickets);
	return TERN_OK;
}

static enum tern_status cpu_wait_ticket(struct tern_backend *be, uint64_t ticket)
{
	return cpu_check_ticket(be, "wait_ticket", ticket);
}

static enum tern_status cpu_ticket_wait_host(struct tern_backend *be, uint64_t ticket)
{
	return cpu_check_ticket(be, "ticket_wait_host", ticket);
}

/* MemAvailable from /proc/meminfo in bytes; 0 where there is none. */
static uint64_t mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return 0;
	char line[256];
	unsigned long long kb = 0;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return (uint64_t)kb * 1024;
}

static enum tern_status cpu_memory_info(struct tern_backend *be, uint64_t *budget, uint64_t *usage)
{
	uint64_t avail = mem_available();
	if (avail == 0) { /* not Linux: physical memory instead */
		long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
		avail = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
	}
	*usage = cpu_be(be)->used;
	*budget = avail + *usage;
	return TERN_OK;
}

static void cpu_destroy(struct tern_backend *be) { free(be); }

static bool cpu_supports(struct tern_backend *be, enum tern_op op, enum tern_dtype wt)
{
	return tern_backend_has_op(be, op) && (unsigned)wt < TERN_DTYPE_COUNT;
}

/* The reference rounds to every precision of the contract (cpu_ops.c, prec_operand). */
static bool cpu_supports_prec(struct tern_backend *be, enum tern_op op, enum tern_dtype prec)
{
	(void)be;
	if (op == TERN_OP_GEMM) /* the reference's LoRA products stay fp32 */
		return prec == TERN_F32;
	return prec == TERN_F32 || prec == TERN_F16 || prec == TERN_BF16;
}

const struct tern_backend_vtable tern_ref_vtable = {
	.buffer_alloc = cpu_buffer_alloc,
	.buffer_free = cpu_buffer_free,
	.upload = cpu_upload,
	.download = cpu_download,
	.zero = cpu_zero,
	.synchronize = cpu_synchronize,
	.destroy = cpu_destroy,
	.supports = cpu_supports,
	.supports_prec = cpu_supports_prec,
	.host_alloc = cpu_host_alloc,
	.mark = cpu_mark,
	.copy_async = cpu_copy_async,
	.wait_ticket = cpu_wait_ticket,
	.ticket_wait_host = cpu_ticket_wait_host,
	.memory_info = cpu_memory_info,
	.profile_op = cpu_profile_op,
	.profile_read = cpu_profile_read,
	.matmul = tern_cpu_matmul,
	.matmul_bwd = tern_cpu_matmul_bwd,
	.gemm = tern_cpu_gemm,
	.dropout = tern_cpu_dropout,
	.axpy = tern_cpu_axpy,
	.adamw = tern_cpu_adamw,
	.sumsq = tern_cpu_sumsq,
	.scale = tern_cpu_scale,
	.clip = tern_cpu_clip,
	.cast = tern_cpu_cast,
	.attention = tern_cpu_attention,
	.attention_bwd = tern_cpu_attention_bwd,
	.attention_kv = tern_cpu_attention_kv,
	.rmsnorm = tern_cpu_rmsnorm,
	.rmsnorm_bwd = tern_cpu_rmsnorm_bwd,
	.rope = tern_cpu_rope,
	.swiglu = tern_cpu_swiglu,
	.swiglu_bwd = tern_cpu_swiglu_bwd,
	.embed = tern_cpu_embed,
	.embed_bwd = tern_cpu_embed_bwd,
	.ce_loss = tern_cpu_ce_loss,
	.gather_rows = tern_cpu_gather_rows,
	.scatter_add_rows = tern_cpu_scatter_add_rows,
	.rowdot = tern_cpu_rowdot,
	.act_quant8 = tern_cpu_act_quant8,
	.argmax = tern_cpu_argmax,
	.route_topk = tern_cpu_route_topk,
	.route_topk_bwd = tern_cpu_route_topk_bwd,
	.matmul_grouped = tern_cpu_matmul_grouped,
	.matmul_grouped_bwd = tern_cpu_matmul_grouped_bwd,
};

/* ---- the device --------------------------------------------------------------------------- */

/* The "model name" line of /proc/cpuinfo, or a generic name where there is none (not Linux,
 * or an architecture that names it differently). */
static void cpu_model_name(char *out, size_t size)
{
	snprintf(out, size, "unknown CPU");
	FILE *f = fopen("/proc/cpuinfo", "r");
	if (!f)
		return;
	char line[512];
	while (fgets(line, sizeof line, f)) {
		if (strncmp(line, "model name", 10) != 0)
			continue;
		char *colon = strchr(line, ':');
		if (!colon)
			continue;
		char *s = colon + 1;
		while (*s == ' ' || *s == '\t')
			s++;
		size_t len = strcspn(s, "\n");
		snprintf(out, size, "%.*s", (int)len, s);
		break;
	}
	fclose(f);
}

void tern_cpu_describe(struct tern_device_info *d, const char *backend, const char *driver)
{
	char model[200];
	cpu_model_name(model, sizeof model);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
	uint64_t ram = pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;

	memset(d, 0, sizeof *d);
	snprintf(d->backend, sizeof d->backend, "%s", backend);
	d->index = 0;
	snprintf(d->name, sizeof d->name, "%s (%ld cores)", model, cores > 0 ? cores : 1);
	snprintf(d->kind, sizeof d->kind, "cpu");
	snprintf(d->driver, sizeof d->driver, "%s", driver);
	snprintf(d->api, sizeof d->api, "C11");
	d->device_local_bytes = ram;
	d->host_visible_bytes = ram;
	d->max_allocation = ram;
	d->max_storage_range = ram; /* one op may see a whole buffer */
	snprintf(d->heaps, sizeof d->heaps, "system RAM %.1f GiB", (double)ram / (1024.0 * 1024.0 * 1024.0));
}

/* The reference lists no device of its own: it runs on the CPU that `cpu` (the fast backend)
 * lists, and `tern devices` shows each device once. */
enum tern_status tern_ref_devices(struct tern_device_info *out, int max, int *count)
{
	(void)out;
	(void)max;
	*count = 0;
	return TERN_OK;
}

enum tern_status tern_cpu_backend_new(const struct tern_backend_vtable *vt, const char *name,
				      const char *driver, int device, struct tern_backend **out)
{
	if (device != 0)
		return tern_fail(TERN_E_INVALID, "%s: there is one device (0), not %d", name, device);
	struct cpu_backend *c = tern_calloc(1, sizeof *c);
	if (!c)
		return TERN_E_NOMEM;
	struct tern_backend *be = &c->base;
	struct tern_device_info info;
	tern_cpu_describe(&info, name, driver);
	be->vt = vt;
	snprintf(be->name, sizeof be->name, "%s", name);
	snprintf(be->device_name, sizeof be->device_name, "%s", info.name);
	be->device_index = 0;
	be->grouped_fast = true; /* grouped_run: the backend's matmul per expert */
	*out = be;
	return TERN_OK;
}

enum tern_status tern_ref_create(int device, struct tern_backend **out)
{
	return tern_cpu_backend_new(&tern_ref_vtable, "ref", ref_driver, device, out);
}
