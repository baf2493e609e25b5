/* GGUF writer (gguf.h). */
#define _GNU_SOURCE
#include "export/gguf.h"

#include "quant/quant.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint64_t tern_ggml_row_bytes(enum tern_ggml_type t, int64_t n)
{
	switch (t) {
	case TERN_GGML_F32: return (uint64_t)n * 4;
	case TERN_GGML_F16:
	case TERN_GGML_BF16: return (uint64_t)n * 2;
	case TERN_GGML_Q8_0: return (uint64_t)(n / TERN_Q8_0_BLOCK) * TERN_Q8_0_BYTES;
	}
	return 0;
}

void tern_ggml_from_f32(enum tern_ggml_type t, const float *x, int64_t n, void *dst)
{
	uint8_t *d = dst;
	switch (t) {
	case TERN_GGML_F32: memcpy(d, x, (size_t)n * 4); return;
	case TERN_GGML_F16:
	case TERN_GGML_BF16:
		for (int64_t i = 0; i < n; i++) {
			uint16_t h = t == TERN_GGML_F16 ? tern_f32_to_f16(x[i]) : tern_f32_to_bf16(x[i]);
			memcpy(d + 2 * i, &h, 2);
		}
		return;
	case TERN_GGML_Q8_0:
		for (int64_t b = 0; b < n / TERN_Q8_0_BLOCK; b++) {
			const float *v = x + b * TERN_Q8_0_BLOCK;
			uint8_t *o = d + b * TERN_Q8_0_BYTES;
			float amax = 0;
			for (int j = 0; j < TERN_Q8_0_BLOCK; j++)
				amax = fmaxf(amax, fabsf(v[j]));
			float s = amax / 127.0f, id = s != 0.0f ? 1.0f / s : 0.0f;
			uint16_t h = tern_f32_to_f16(s);
			memcpy(o, &h, 2);
			for (int j = 0; j < TERN_Q8_0_BLOCK; j++)
				o[2 + j] = (uint8_t)(int8_t)roundf(v[j] * id);
		}
		return;
	}
}

struct buf {
	uint8_t *p;
	size_t n, cap;
	bool oom;
};

static void put(struct buf *b, const void *p, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->n + n)
			cap *= 2;
		uint8_t *q = realloc(b->p, cap);
		if (!q) {
			b->oom = true;
			return;
		}
		b->p = q;
		b->cap = cap;
	}
	memcpy(b->p + b->n, p, n);
	b->n += n;
}
static void put_u32(struct buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(struct buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(struct buf *b, const char *s, size_t n)
{
	put_u64(b, n);
	put(b, s, n);
}

struct tern_gguf_writer {
	char path[4096], tmp[4200];
	FILE *f;
	struct buf kv, ti;
	uint64_t n_kv, n_t;
	uint64_t data_size; /* declared, with padding */
	uint64_t *tsize;    /* bytes of each tensor */
	size_t tcap;
	uint64_t cur, written; /* tensor being filled, its bytes so far */
	uint64_t pos;          /* bytes of the data section written */
	bool failed;
};

enum tern_status tern_gguf_begin(const char *path, struct tern_gguf_writer **out)
{
	*out = NULL;
	struct tern_gguf_writer *w = tern_calloc(1, sizeof *w);
	if (!w)
		return TERN_E_NOMEM;
	snprintf(w->path, sizeof w->path, "%s", path);
	snprintf(w->tmp, sizeof w->tmp, "%s.tmp.%ld", path, (long)getpid());
	*out = w;
	return TERN_OK;
}

static void key(struct tern_gguf_writer *w, const char *k, enum tern_gguf_vtype t)
{
	put_str(&w->kv, k, strlen(k));
	put_u32(&w->kv, (uint32_t)t);
	w->n_kv++;
}

void tern_gguf_kv_str(struct tern_gguf_writer *w, const char *k, const char *v)
{
	key(w, k, TERN_GV_STRING);
	put_str(&w->kv, v, strlen(v));
}
void tern_gguf_kv_u32(struct tern_gguf_writer *w, const char *k, uint32_t v)
{
	key(w, k, TERN_GV_U32);
	put_u32(&w->kv, v);
}
void tern_gguf_kv_i32(struct tern_gguf_writer *w, const char *k, int32_t v)
{
	key(w, k, TERN_GV_I32);
	put(&w->kv, &v, 4);
}
void tern_gguf_kv_f32(struct tern_gguf_writer *w, const char *k, float v)
{
	key(w, k, TERN_GV_F32);
	put(&w->kv, &v, 4);
}
void tern_gguf_kv_bool(struct tern_gguf_writer *w, const char *k, bool v)
{
	key(w, k, TERN_GV_BOOL);
	uint8_t b = v;
	put(&w->kv, &b, 1);
}
void tern_gguf_kv_arr_str(struct tern_gguf_writer *w, const char *k, const char *const *v, const size_t *len,
			  size_t n)
{
	key(w, k, TERN_GV_ARRAY);
	put_u32(&w->kv, TERN_GV_STRING);
	put_u64(&w->kv, n);
	for (size_t i = 0; i < n; i++)
		put_str(&w->kv, v[i], len ? len[i] : strlen(v[i]));
}
static void arr32(struct tern_gguf_writer *w, const char *k, enum tern_gguf_vtype t, const void *v, size_t n)
{
	key(w, k, TERN_GV_ARRAY);
	put_u32(&w->kv, t);
	put_u64(&w->kv, n);
	put(&w->kv, v, n * 4);
}
void tern_gguf_kv_arr_i32(struct tern_gguf_writer *w, const char *k, const int32_t *v, size_t n)
{
	arr32(w, k, TERN_GV_I32, v, n);
}
void tern_gguf_kv_arr_f32(struct tern_gguf_writer *w, const char *k, const float *v, size_t n)
{
	arr32(w, k, TERN_GV_F32, v, n);
}

void tern_gguf_tensor(struct tern_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
		      enum tern_ggml_type type)
{
	if (w->n_t == w->tcap) {
		size_t cap = w->tcap ? w->tcap * 2 : 256;
		uint64_t *q = realloc(w->tsize, cap * sizeof *q);
		if (!q) {
			w->ti.oom = true;
			return;
		}
		w->tsize = q;
		w->tcap = cap;
	}
	uint64_t bytes = tern_ggml_row_bytes(type, ne[0]);
	for (int d = 1; d < n_dims; d++)
		bytes *= (uint64_t)ne[d];
	put_str(&w->ti, name, strlen(name));
	put_u32(&w->ti, (uint32_t)n_dims);
	for (int d = 0; d < n_dims; d++)
		put_u64(&w->ti, (uint64_t)ne[d]);
	put_u32(&w->ti, (uint32_t)type);
	put_u64(&w->ti, w->data_size);
	w->tsize[w->n_t++] = bytes;
	w->data_size += tern_align_up(bytes, TERN_GGUF_ALIGN);
}

static enum tern_status wfail(struct tern_gguf_writer *w)
{
	w->failed = true;
	return tern_fail(TERN_E_IO, "%s: cannot write: %s", w->tmp, strerror(errno));
}

static enum tern_status wr(struct tern_gguf_writer *w, const void *p, size_t n)
{
	if (n && fwrite(p, 1, n, w->f) != n)
		return wfail(w);
	return TERN_OK;
}

enum tern_status tern_gguf_write_header(struct tern_gguf_writer *w)
{
	if (w->kv.oom || w->ti.oom)
		return tern_fail(TERN_E_NOMEM, "%s: out of host memory building the GGUF header", w->path);
	if (!(w->f = fopen(w->tmp, "wb")))
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
	struct buf h = {0};
	put_u32(&h, TERN_GGUF_MAGIC);
	put_u32(&h, TERN_GGUF_VERSION);
	put_u64(&h, w->n_t);
	put_u64(&h, w->n_kv);
	if (h.oom)
		return TERN_E_NOMEM;
	enum tern_status st = wr(w, h.p, h.n);
	free(h.p);
	if (!st)
		st = wr(w, w->kv.p, w->kv.n);
	if (!st)
		st = wr(w, w->ti.p, w->ti.n);
	uint64_t hdr = 24 + w->kv.n + w->ti.n;
	static const uint8_t zero[TERN_GGUF_ALIGN];
	if (!st)
		st = wr(w, zero, tern_align_up(hdr, TERN_GGUF_ALIGN) - hdr);
	return st;
}

enum tern_status tern_gguf_append(struct tern_gguf_writer *w, const void *data, size_t bytes)
{
	static const uint8_t zero[TERN_GGUF_ALIGN];
	const uint8_t *p = data;
	while (bytes) {
		if (w->cur >= w->n_t)
			return tern_fail(TERN_E_INVALID, "%s: more tensor data than declared", w->path);
		uint64_t left = w->tsize[w->cur] - w->written;
		size_t n = bytes < left ? bytes : (size_t)left;
		enum tern_status st = wr(w, p, n);
		if (st)
			return st;
		p += n;
		bytes -= n;
		w->written += n;
		if (w->written == w->tsize[w->cur]) {
			size_t pad = tern_align_up(w->written, TERN_GGUF_ALIGN) - w->written;
			if ((st = wr(w, zero, pad)))
				return st;
			w->cur++;
			w->written = 0;
		}
	}
	return TERN_OK;
}

static void free_w(struct tern_gguf_writer *w)
{
	free(w->kv.p);
	free(w->ti.p);
	free(w->tsize);
	free(w);
}

enum tern_status tern_gguf_finish(struct tern_gguf_writer *w, uint64_t *file_bytes)
{
	enum tern_status st = TERN_OK;
	/* tensors of 0 bytes need no append */
	while (w->cur < w->n_t && w->tsize[w->cur] == 0)
		w->cur++;
	if (w->cur != w->n_t) {
		st = tern_fail(TERN_E_INVALID, "%s: tensor %llu of %llu got no data", w->path,
			       (unsigned long long)w->cur, (unsigned long long)w->n_t);
		goto fail;
	}
	long size = ftell(w->f);
	if (fflush(w->f) || fsync(fileno(w->f))) {
		st = wfail(w);
		goto fail;
	}
	int rc = fclose(w->f);
	w->f = NULL;
	if (rc || rename(w->tmp, w->path)) {
		st = tern_fail(TERN_E_IO, "%s: cannot write: %s", w->path, strerror(errno));
		goto fail;
	}
	if (file_bytes)
		*file_bytes = (uint64_t)size;
	free_w(w);
	return TERN_OK;
fail:
	tern_gguf_abort(w);
	return st;
}

void tern_gguf_abort(struct tern_gguf_writer *w)
{
	if (!w)
		return;
	if (w->f)
		fclose(w->f);
	unlink(w->tmp);
	free_w(w);
}
