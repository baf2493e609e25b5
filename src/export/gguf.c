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
	case TERN_GGML_Q4_K: return (uint64_t)(n / TERN_QK_K) * TERN_Q4_K_BYTES;
	case TERN_GGML_Q6_K: return (uint64_t)(n / TERN_QK_K) * TERN_Q6_K_BYTES;
	}
	return 0;
}

static int nearest(float x) { return (int)lrintf(x); }

static void put_f16(uint8_t *p, float v)
{
	uint16_t h = tern_f32_to_f16(v);
	memcpy(p, &h, 2);
}

static void q4_k_block(const float *x, uint8_t *o)
{
	float scale[8], mn[8], max_scale = 0, max_min = 0;
	for (int j = 0; j < 8; j++) {
		float lo = x[32 * j], hi = x[32 * j];
		for (int i = 1; i < 32; i++) {
			lo = fminf(lo, x[32 * j + i]);
			hi = fmaxf(hi, x[32 * j + i]);
		}
		lo = fminf(lo, 0.0f); /* x = scale * q - min with min >= 0 */
		scale[j] = (hi - lo) / 15.0f;
		mn[j] = -lo;
		max_scale = fmaxf(max_scale, scale[j]);
		max_min = fmaxf(max_min, mn[j]);
	}
	float is = max_scale > 0 ? 63.0f / max_scale : 0.0f, im = max_min > 0 ? 63.0f / max_min : 0.0f;
	uint8_t *sc = o + 4, *qs = o + 16, ls[8], lm[8];
	memset(sc, 0, 12);
	for (int j = 0; j < 8; j++) {
		ls[j] = (uint8_t)(nearest(is * scale[j]) > 63 ? 63 : nearest(is * scale[j]));
		lm[j] = (uint8_t)(nearest(im * mn[j]) > 63 ? 63 : nearest(im * mn[j]));
		if (j < 4) {
			sc[j] = ls[j];
			sc[j + 4] = lm[j];
		} else {
			sc[j + 4] = (uint8_t)((ls[j] & 15) | (lm[j] & 15) << 4);
			sc[j - 4] |= (uint8_t)((ls[j] >> 4) << 6);
			sc[j] |= (uint8_t)((lm[j] >> 4) << 6);
		}
	}
	put_f16(o, max_scale / 63.0f);
	put_f16(o + 2, max_min / 63.0f);
	float d = tern_f16_to_f32(tern_f32_to_f16(max_scale / 63.0f)),
	      dmin = tern_f16_to_f32(tern_f32_to_f16(max_min / 63.0f));
	uint8_t L[TERN_QK_K];
	for (int j = 0; j < 8; j++) {
		float dj = d * ls[j], mj = dmin * lm[j];
		for (int i = 0; i < 32; i++) {
			int q = dj > 0 ? nearest((x[32 * j + i] + mj) / dj) : 0;
			L[32 * j + i] = (uint8_t)(q < 0 ? 0 : q > 15 ? 15 : q);
		}
	}
	for (int j = 0; j < TERN_QK_K; j += 64)
		for (int l = 0; l < 32; l++)
			qs[j / 2 + l] = (uint8_t)(L[j + l] | L[j + l + 32] << 4);
}

static void q6_k_block(const float *x, uint8_t *o)
{
	float scale[16], max_scale = 0, amax_s = 0;
	for (int j = 0; j < 16; j++) {
		float m = 0, am = 0;
		for (int i = 0; i < 16; i++)
			if (fabsf(x[16 * j + i]) > am) {
				am = fabsf(x[16 * j + i]);
				m = x[16 * j + i];
			}
		scale[j] = m / -32.0f; /* the largest value maps to -32 */
		if (fabsf(scale[j]) > amax_s) {
			amax_s = fabsf(scale[j]);
			max_scale = scale[j];
		}
	}
	uint8_t *ql = o, *qh = o + 128, L[TERN_QK_K];
	int8_t *sc = (int8_t *)(o + 192);
	if (amax_s == 0) { /* d = 0: every value decodes to 0 */
		memset(o, 0, TERN_Q6_K_BYTES);
		return;
	}
	float iscale = -128.0f / max_scale;
	put_f16(o + 208, 1.0f / iscale);
	float d = tern_f16_to_f32(tern_f32_to_f16(1.0f / iscale));
	for (int j = 0; j < 16; j++) {
		int s = nearest(iscale * scale[j]);
		sc[j] = (int8_t)(s > 127 ? 127 : s < -128 ? -128 : s);
		float dj = d * sc[j];
		for (int i = 0; i < 16; i++) {
			int q = dj != 0 ? nearest(x[16 * j + i] / dj) : 0;
			q = q < -32 ? -32 : q > 31 ? 31 : q;
			L[16 * j + i] = (uint8_t)(q + 32);
		}
	}
	for (int j = 0; j < TERN_QK_K; j += 128) {
		for (int l = 0; l < 32; l++) {
			const uint8_t *q = L + j + l;
			ql[l] = (uint8_t)((q[0] & 15) | (q[64] & 15) << 4);
			ql[l + 32] = (uint8_t)((q[32] & 15) | (q[96] & 15) << 4);
			qh[l] = (uint8_t)((q[0] >> 4) | (q[32] >> 4) << 2 | (q[64] >> 4) << 4 |
					  (q[96] >> 4) << 6);
		}
		ql += 64;
		qh += 32;
	}
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
	case TERN_GGML_Q4_K:
		for (int64_t b = 0; b < n / TERN_QK_K; b++)
			q4_k_block(x + b * TERN_QK_K, d + b * TERN_Q4_K_BYTES);
		return;
	case TERN_GGML_Q6_K:
		for (int64_t b = 0; b < n / TERN_QK_K; b++)
			q6_k_block(x + b * TERN_QK_K, d + b * TERN_Q6_K_BYTES);
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
