/* test_export: tern merge and tern export gguf (src/export/).
 *
 * - merge of every golden case (tests/data/golden/<case>: model + adapter_final) equals PEFT's
 *   merge_and_unload (tests/data/merge/<case>.safetensors, tools/make_golden_merge.py): the changed
 *   tensors within 2e-7 absolute (fp32 rounding of the delta), every other tensor bit-identical to
 *   the base, config.json without quantization_config (mixtral_exp and qwen3_moe_exp: LoRA on
 *   the experts, PEFT target_parameters); llama_nf4 merges into the NF4-DQ
 *   dequantized base (--base-format nf4-dq) as PEFT does on a bitsandbytes model;
 * - a sharded bf16 merge: the index and every shard read back, each value the bf16 rounding of the
 *   f32 merge; bad inputs one line each, and nothing left under the output name or a temporary;
 * - GGUF: a small independent reader (below) parses every file written (header, every key/value
 *   type, tensor infos, alignment, offsets inside the file, no overlap) and the tensors round-trip:
 *   f32 exactly the merged weights (Q/K rows in llama.cpp's permuted order for llama), f16 / bf16
 *   exactly their rounding, Q8_0 within half a step of its block; the LoRA's lora_a / lora_b equal
 *   the adapter's A and (permuted) B, alpha and the adapter keys present; qwen3 (tied, q/k norms).
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed at the end. */
#define _POSIX_C_SOURCE 200809L
#include "core/core.h"
#include "export/gguf.h"
#include "export/source.h"
#include "formats/safetensors.h"
#include "model/config.h"
#include "quant/quant.h"
#include "tern/export.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_pass, n_fail;
static char tmp[4096];
static const char *data;

static void check(bool ok, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		n_pass++;
	else
		n_fail++;
}

/* ---- a GGUF reader, independent of the writer ---- */

struct gkv {
	char key[256];
	uint32_t type;
	const uint8_t *val; /* the value's bytes */
	uint32_t atype;     /* array element type */
	uint64_t alen;
};
struct gten {
	char name[256];
	uint32_t nd, type;
	uint64_t ne[4], off, bytes;
	const uint8_t *data;
};
struct gfile {
	uint8_t *buf;
	size_t size;
	uint64_t nt, nkv;
	struct gkv *kv;
	struct gten *t;
};

static bool rd(const uint8_t **p, const uint8_t *end, void *dst, size_t n)
{
	if ((size_t)(end - *p) < n)
		return false;
	memcpy(dst, *p, n);
	*p += n;
	return true;
}

static bool rd_str(const uint8_t **p, const uint8_t *end, char *dst, size_t cap)
{
	uint64_t n;
	if (!rd(p, end, &n, 8) || n > (uint64_t)(end - *p))
		return false;
	if (dst) {
		size_t k = n < cap - 1 ? (size_t)n : cap - 1;
		memcpy(dst, *p, k);
		dst[k] = 0;
	}
	*p += n;
	return true;
}

static size_t scalar_size(uint32_t t)
{
	static const size_t s[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
	return t < 13 ? s[t] : 0;
}

static bool skip_value(const uint8_t **p, const uint8_t *end, uint32_t t, struct gkv *kv)
{
	if (t == 8)
		return rd_str(p, end, NULL, 0);
	if (t == 9) {
		uint32_t at;
		uint64_t n;
		if (!rd(p, end, &at, 4) || !rd(p, end, &n, 8) || at == 9 || at > 12)
			return false;
		if (kv) {
			kv->atype = at;
			kv->alen = n;
		}
		for (uint64_t i = 0; i < n; i++)
			if (!skip_value(p, end, at, NULL))
				return false;
		return true;
	}
	size_t s = scalar_size(t);
	if (!s || (size_t)(end - *p) < s)
		return false;
	*p += s;
	return true;
}

static uint64_t type_bytes(uint32_t type, uint64_t n)
{
	return type == 0                 ? n * 4
	       : type == 1 || type == 30 ? n * 2
	       : type == 8               ? n / 32 * 34
	       : type == 12              ? n / 256 * 144
	       : type == 14              ? n / 256 * 210
					 : 0;
}

/* Parses and validates a whole file; returns NULL with a reason printed. */
static struct gfile *gguf_read(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return NULL;
	struct gfile *g = calloc(1, sizeof *g);
	fseek(f, 0, SEEK_END);
	g->size = (size_t)ftell(f);
	fseek(f, 0, SEEK_SET);
	g->buf = malloc(g->size);
	bool ok = fread(g->buf, 1, g->size, f) == g->size;
	fclose(f);
	const uint8_t *p = g->buf, *end = g->buf + g->size;
	uint32_t magic = 0, version = 0;
	ok = ok && rd(&p, end, &magic, 4) && rd(&p, end, &version, 4) && rd(&p, end, &g->nt, 8) &&
	     rd(&p, end, &g->nkv, 8) && magic == 0x46554747u && version == 3 && g->nt < 100000 &&
	     g->nkv < 100000;
	if (!ok)
		goto bad;
	g->kv = calloc(g->nkv + 1, sizeof *g->kv);
	g->t = calloc(g->nt + 1, sizeof *g->t);
	for (uint64_t i = 0; i < g->nkv; i++) {
		struct gkv *kv = &g->kv[i];
		if (!rd_str(&p, end, kv->key, sizeof kv->key) || !rd(&p, end, &kv->type, 4))
			goto bad;
		kv->val = p;
		if (!skip_value(&p, end, kv->type, kv))
			goto bad;
		for (uint64_t j = 0; j < i; j++)
			if (!strcmp(g->kv[j].key, kv->key))
				goto bad; /* duplicate key */
	}
	for (uint64_t i = 0; i < g->nt; i++) {
		struct gten *t = &g->t[i];
		if (!rd_str(&p, end, t->name, sizeof t->name) || !rd(&p, end, &t->nd, 4) || t->nd < 1 ||
		    t->nd > 4)
			goto bad;
		uint64_t n = 1;
		for (uint32_t d = 0; d < t->nd; d++) {
			if (!rd(&p, end, &t->ne[d], 8))
				goto bad;
			n *= t->ne[d];
		}
		if (!rd(&p, end, &t->type, 4) || !rd(&p, end, &t->off, 8))
			goto bad;
		if ((t->type == 8 && t->ne[0] % 32) || ((t->type == 12 || t->type == 14) && t->ne[0] % 256))
			goto bad;
		t->bytes = type_bytes(t->type, n);
		if (!t->bytes || t->off % 32)
			goto bad;
	}
	size_t data_start = ((size_t)(p - g->buf) + 31) / 32 * 32;
	for (size_t k = (size_t)(p - g->buf); k < data_start && k < g->size; k++)
		if (g->buf[k])
			goto bad; /* padding is zero */
	for (uint64_t i = 0; i < g->nt; i++) {
		struct gten *t = &g->t[i];
		if (data_start + t->off + t->bytes > g->size)
			goto bad;
		t->data = g->buf + data_start + t->off;
		for (uint64_t j = 0; j < i; j++) /* no overlap */
			if (t->off < g->t[j].off + g->t[j].bytes && g->t[j].off < t->off + t->bytes)
				goto bad;
	}
	return g;
bad:
	free(g->buf);
	free(g->kv);
	free(g->t);
	free(g);
	return NULL;
}

static void gguf_free(struct gfile *g)
{
	if (!g)
		return;
	free(g->buf);
	free(g->kv);
	free(g->t);
	free(g);
}

static const struct gkv *kv_get(const struct gfile *g, const char *k)
{
	for (uint64_t i = 0; i < g->nkv; i++)
		if (!strcmp(g->kv[i].key, k))
			return &g->kv[i];
	return NULL;
}

static bool kv_str_is(const struct gfile *g, const char *k, const char *v)
{
	const struct gkv *x = kv_get(g, k);
	uint64_t n;
	if (!x || x->type != 8)
		return false;
	memcpy(&n, x->val, 8);
	return n == strlen(v) && !memcmp(x->val + 8, v, n);
}

static int64_t kv_u32(const struct gfile *g, const char *k)
{
	const struct gkv *x = kv_get(g, k);
	uint32_t v;
	if (!x || x->type != 4)
		return -1;
	memcpy(&v, x->val, 4);
	return v;
}

static double kv_f32(const struct gfile *g, const char *k)
{
	const struct gkv *x = kv_get(g, k);
	float v;
	if (!x || x->type != 6)
		return NAN;
	memcpy(&v, x->val, 4);
	return v;
}

static float f16(const uint8_t *p)
{
	uint16_t h;
	memcpy(&h, p, 2);
	return tern_f16_to_f32(h);
}

/* k-quant decoders, written from ggml's block layouts (gguf.h describes them). */
static void deq_q4_k(const uint8_t *b, float *y)
{
	float d = f16(b), dmin = f16(b + 2);
	const uint8_t *s = b + 4, *q = b + 16;
	for (int j = 0; j < 8; j++) {
		int sc = j < 4 ? s[j] & 63 : (s[j + 4] & 15) | (s[j - 4] >> 6) << 4;
		int m = j < 4 ? s[j + 4] & 63 : (s[j + 4] >> 4) | (s[j] >> 6) << 4;
		for (int i = 0; i < 32; i++) {
			const uint8_t *byte = q + (j / 2) * 32 + i;
			int v = j % 2 ? *byte >> 4 : *byte & 15;
			y[32 * j + i] = d * (float)sc * (float)v - dmin * (float)m;
		}
	}
}

static void deq_q6_k(const uint8_t *b, float *y)
{
	const uint8_t *ql = b, *qh = b + 128;
	const int8_t *sc = (const int8_t *)(b + 192);
	float d = f16(b + 208);
	for (int n = 0; n < 256; n += 128) {
		for (int l = 0; l < 32; l++) {
			int is = l / 16;
			int q1 = ((ql[l] & 15) | ((qh[l] >> 0) & 3) << 4) - 32;
			int q2 = ((ql[l + 32] & 15) | ((qh[l] >> 2) & 3) << 4) - 32;
			int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
			int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
			y[n + l] = d * sc[is] * q1;
			y[n + l + 32] = d * sc[is + 2] * q2;
			y[n + l + 64] = d * sc[is + 4] * q3;
			y[n + l + 96] = d * sc[is + 6] * q4;
		}
		ql += 64;
		qh += 32;
		sc += 8;
	}
}

/* Dequantizes tensor t; n values. */
static void deq(const struct gten *t, float *out, int64_t n)
{
	if (t->type == 12 || t->type == 14) {
		for (int64_t b = 0; b < n / 256; b++)
			(t->type == 12 ? deq_q4_k : deq_q6_k)(t->data + b * (t->type == 12 ? 144 : 210),
							      out + b * 256);
		return;
	}
	for (int64_t i = 0; i < n; i++) {
		uint16_t h;
		switch (t->type) {
		case 0: memcpy(&out[i], t->data + 4 * i, 4); break;
		case 1: out[i] = f16(t->data + 2 * i); break;
		case 30:
			memcpy(&h, t->data + 2 * i, 2);
			out[i] = tern_bf16_to_f32(h);
			break;
		case 8: {
			const uint8_t *b = t->data + (i / 32) * 34;
			out[i] = f16(b) * (float)(int8_t)b[2 + i % 32];
			break;
		}
		}
	}
}

/* ---- helpers ---- */

static char *pj(const char *a, const char *b)
{
	static char buf[8][9000];
	static int k;
	char *s = buf[k++ % 8];
	size_t n = strlen(a);
	if (n + strlen(b) + 2 > sizeof buf[0])
		n = 0;
	memcpy(s, a, n);
	s[n] = '/';
	strcpy(s + n + 1, b);
	return s;
}

static void rm_tree(const char *dir)
{
	DIR *d = opendir(dir);
	if (!d) {
		unlink(dir);
		return;
	}
	struct dirent *e;
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			rm_tree(pj(dir, e->d_name));
	closedir(d);
	rmdir(dir);
}

static float *st_f32(const struct tern_st_tensor *t)
{
	float *x = malloc((size_t)t->numel * 4);
	tern_st_tensor_f32(t, x);
	return x;
}

static bool no_leftovers(const char *out)
{
	struct stat sb;
	if (stat(out, &sb) == 0)
		return false;
	DIR *d = opendir(tmp);
	const char *base = strrchr(out, '/') + 1;
	bool ok = true;
	struct dirent *e;
	while (d && (e = readdir(d)))
		if (!strncmp(e->d_name, base, strlen(base)) && strstr(e->d_name, ".tmp."))
			ok = false;
	if (d)
		closedir(d);
	return ok;
}

/* ---- merge against PEFT ---- */

static void merge_case(const char *name, enum tern_base_format fmt)
{
	char mdir[4400], adir[4400], out[4400], ref[4400];
	snprintf(mdir, sizeof mdir, "%s/golden/%s/model", data, name);
	snprintf(adir, sizeof adir, "%s/golden/%s/adapter_final", data, name);
	snprintf(out, sizeof out, "%s/merged-%s", tmp, name);
	snprintf(ref, sizeof ref, "%s/merge/%s.safetensors", data, name);
	struct tern_merge_opts o = {.base = mdir, .adapter = adir, .base_format = fmt};
	struct tern_merge_result r;
	enum tern_status st = tern_merge(&o, out, "f32", 0, &r);
	check(st == TERN_OK, "merge %s: %s", name, st ? tern_error() : "written");
	if (st)
		return;
	struct tern_st_model *m = NULL, *b = NULL;
	struct tern_st_file *e = NULL;
	if (tern_st_model_open(out, &m) || tern_st_model_open(mdir, &b) || tern_st_open(ref, &e)) {
		check(false, "merge %s: open the result, the base and %s: %s", name, ref, tern_error());
		goto out;
	}
	size_t n_ref = 0, n_same = 0, bad = 0;
	double worst = 0;
	for (size_t i = 0; i < tern_st_model_count(m); i++) {
		const struct tern_st_tensor *t = tern_st_model_tensor(m, i);
		const struct tern_st_tensor *x = tern_st_file_find(e, t->name),
					    *y = tern_st_model_find(b, t->name);
		if (t->dtype != TERN_ST_F32) {
			bad++;
			continue;
		}
		if (x) {
			n_ref++;
			float *a = st_f32(t), *c = st_f32(x);
			for (int64_t k = 0; k < t->numel && x->numel == t->numel; k++)
				worst = fmax(worst, fabs((double)a[k] - (double)c[k]));
			bad += x->numel != t->numel;
			free(a);
			free(c);
		} else if (y && y->nbytes == t->nbytes && !memcmp(y->data, t->data, t->nbytes)) {
			n_same++;
		} else {
			bad++;
		}
	}
	/* a tied base whose lm_head the adapter trained gets its own lm_head.weight */
	bool untied = !tern_st_model_find(b, "lm_head.weight") && tern_st_model_find(m, "lm_head.weight");
	check(!bad && n_ref == tern_st_file_count(e) &&
		      tern_st_model_count(m) == tern_st_model_count(b) + untied && worst <= 2e-7,
	      "merge %s = PEFT merge_and_unload: %zu changed tensors within %.2g (<= 2e-7), %zu unchanged "
	      "bit-identical, %zu of %zu tensors (%zu bad)",
	      name, n_ref, worst, n_same, n_ref + n_same, tern_st_model_count(b), bad);
	char *cfg = NULL;
	size_t len;
	bool cfg_ok = tern_read_file(pj(out, "config.json"), 1 << 20, &cfg, &len) == TERN_OK &&
		      !strstr(cfg, "quantization_config") && strstr(cfg, "\"float32\"");
	check(cfg_ok && access(pj(out, "generation_config.json"), F_OK) == 0 &&
		      access(pj(out, "tokenizer.json"), F_OK) == 0,
	      "merge %s: config.json (no quantization_config, dtype float32), generation_config.json, "
	      "tokenizer.json",
	      name);
	free(cfg);
out:
	tern_st_model_close(m);
	tern_st_model_close(b);
	tern_st_close(e);
}

static void merge_sharded(void)
{
	char mdir[4400], adir[4400], out[4400], f32dir[4400];
	snprintf(mdir, sizeof mdir, "%s/golden/llama/model", data);
	snprintf(adir, sizeof adir, "%s/golden/llama/adapter_final", data);
	snprintf(out, sizeof out, "%s/sharded", tmp);
	snprintf(f32dir, sizeof f32dir, "%s/merged-llama", tmp);
	struct tern_merge_opts o = {.base = mdir, .adapter = adir};
	struct tern_merge_result r;
	enum tern_status st = tern_merge(&o, out, "bf16", 40000, &r);
	check(st == TERN_OK && r.n_files > 1 && access(pj(out, "model.safetensors.index.json"), F_OK) == 0,
	      "merge bf16 with 40 kB shards: %d files and model.safetensors.index.json", r.n_files);
	struct tern_st_model *m = NULL, *f = NULL;
	if (st || tern_st_model_open(out, &m) || tern_st_model_open(f32dir, &f)) {
		check(false, "sharded: open: %s", tern_error());
		goto done;
	}
	size_t bad = 0;
	for (size_t i = 0; i < tern_st_model_count(f); i++) {
		const struct tern_st_tensor *a = tern_st_model_tensor(f, i),
					    *b = tern_st_model_find(m, a->name);
		if (!b || b->dtype != TERN_ST_BF16 || b->numel != a->numel) {
			bad++;
			continue;
		}
		const float *x = a->data;
		const uint16_t *h = b->data;
		for (int64_t k = 0; k < a->numel; k++)
			bad += h[k] != tern_f32_to_bf16(x[k]);
	}
	check(!bad && tern_st_model_count(m) == tern_st_model_count(f),
	      "sharded bf16 merge reads back through the index: every value the bf16 rounding of the f32 "
	      "merge (%zu differ)",
	      bad);
done:
	tern_st_model_close(m);
	tern_st_model_close(f);
}

static void merge_errors(void)
{
	char mdir[4400], qdir[4400], adir[4400], out[4400], bad[4400];
	snprintf(mdir, sizeof mdir, "%s/golden/llama/model", data);
	snprintf(qdir, sizeof qdir, "%s/golden/qwen2/model", data);
	snprintf(adir, sizeof adir, "%s/golden/llama/adapter_final", data);
	snprintf(out, sizeof out, "%s/err-out", tmp);
	struct tern_merge_opts o = {.base = qdir, .adapter = adir};
	enum tern_status st = tern_merge(&o, out, NULL, 0, NULL);
	check(st != TERN_OK && strstr(tern_error(), "expected [") &&
		      strstr(tern_error(), "for the base model") && !strchr(tern_error(), '\n') &&
		      no_leftovers(out),
	      "adapter for another base: one line, nothing left: %s", tern_error());
	/* rank mismatch: adapter_config.json says r 4, the tensors have rank 8 */
	snprintf(bad, sizeof bad, "%s/adapter-r4", tmp);
	mkdir(bad, 0755);
	char *cfg = NULL;
	size_t len;
	tern_read_file(pj(adir, "adapter_config.json"), 1 << 20, &cfg, &len);
	char *r = strstr(cfg, "\"r\": 8");
	if (r)
		r[5] = '4';
	FILE *f = fopen(pj(bad, "adapter_config.json"), "w");
	fputs(cfg, f);
	fclose(f);
	free(cfg);
	char *st_bytes = NULL;
	tern_read_file(pj(adir, "adapter_model.safetensors"), 1 << 24, &st_bytes, &len);
	f = fopen(pj(bad, "adapter_model.safetensors"), "wb");
	fwrite(st_bytes, 1, len, f);
	fclose(f);
	free(st_bytes);
	o.base = mdir;
	o.adapter = bad;
	st = tern_merge(&o, out, NULL, 0, NULL);
	check(st != TERN_OK && strstr(tern_error(), "rank 4") && no_leftovers(out),
	      "rank mismatch: one line, nothing left: %s", tern_error());
	o.adapter = pj(tmp, "no-such-adapter");
	st = tern_merge(&o, out, NULL, 0, NULL);
	check(st != TERN_OK && strstr(tern_error(), "adapter_config.json: not found") && no_leftovers(out),
	      "missing adapter: %s", tern_error());
	o.adapter = adir;
	mkdir(out, 0755);
	st = tern_merge(&o, out, NULL, 0, NULL);
	check(st != TERN_OK && strstr(tern_error(), "already exists"), "output exists: %s", tern_error());
	rmdir(out);
	st = tern_merge(&o, out, "f8", 0, NULL);
	check(st != TERN_OK && strstr(tern_error(), "allowed: bf16, f16, f32"), "bad dtype: %s",
	      tern_error());
	/* a LoRA GGUF of an adapter with modules_to_save is refused */
	char sdir[4400], sa[4400];
	snprintf(sdir, sizeof sdir, "%s/golden/llama_save/model", data);
	snprintf(sa, sizeof sa, "%s/golden/llama_save/adapter_final", data);
	struct tern_merge_opts s = {.base = sdir, .adapter = sa};
	st = tern_export_gguf_lora(&s, pj(tmp, "save.gguf"), TERN_GGUF_F32, NULL);
	check(st == TERN_E_UNSUPPORTED && strstr(tern_error(), "modules_to_save") &&
		      access(pj(tmp, "save.gguf"), F_OK) != 0,
	      "GGUF LoRA with modules_to_save refused: %s", tern_error());
}

/* ---- GGUF ---- */

/* The f32 merged tensor name in llama.cpp's order (rows of q/k permuted for llama). */
static void permute(const float *src, float *dst, int64_t O, int64_t I, int64_t nh)
{
	int64_t dh = O / nh, half = dh / 2;
	for (int64_t h = 0; h < nh; h++)
		for (int64_t i = 0; i < 2; i++)
			for (int64_t j = 0; j < half; j++)
				memcpy(dst + (h * dh + 2 * j + i) * I, src + (h * dh + i * half + j) * I,
				       (size_t)I * 4);
}

static const char *hf_of(const char *g, char *buf, size_t cap)
{
	static const char *const map[][2] = {{"attn_norm.weight", "input_layernorm.weight"},
					     {"attn_q.weight", "self_attn.q_proj.weight"},
					     {"attn_k.weight", "self_attn.k_proj.weight"},
					     {"attn_v.weight", "self_attn.v_proj.weight"},
					     {"attn_output.weight", "self_attn.o_proj.weight"},
					     {"attn_q.bias", "self_attn.q_proj.bias"},
					     {"attn_k.bias", "self_attn.k_proj.bias"},
					     {"attn_v.bias", "self_attn.v_proj.bias"},
					     {"attn_q_norm.weight", "self_attn.q_norm.weight"},
					     {"attn_k_norm.weight", "self_attn.k_norm.weight"},
					     {"ffn_norm.weight", "post_attention_layernorm.weight"},
					     {"ffn_gate.weight", "mlp.gate_proj.weight"},
					     {"ffn_up.weight", "mlp.up_proj.weight"},
					     {"ffn_down.weight", "mlp.down_proj.weight"}};
	if (!strcmp(g, "token_embd.weight"))
		return "model.embed_tokens.weight";
	if (!strcmp(g, "output_norm.weight"))
		return "model.norm.weight";
	if (!strcmp(g, "output.weight"))
		return "lm_head.weight";
	int l;
	char rest[200];
	if (sscanf(g, "blk.%d.%199s", &l, rest) != 2)
		return NULL;
	for (size_t k = 0; k < sizeof map / sizeof *map; k++)
		if (!strcmp(rest, map[k][0])) {
			snprintf(buf, cap, "model.layers.%d.%s", l, map[k][1]);
			return buf;
		}
	return NULL;
}

static void gguf_case(const char *name, bool llama_perm)
{
	char mdir[4400], adir[4400], merged[4400];
	snprintf(mdir, sizeof mdir, "%s/golden/%s/model", data, name);
	snprintf(adir, sizeof adir, "%s/golden/%s/adapter_final", data, name);
	snprintf(merged, sizeof merged, "%s/merged-%s", tmp, name);
	struct tern_model_config cfg;
	tern_model_config_load(mdir, &cfg);
	struct tern_st_model *ref = NULL;
	if (tern_st_model_open(merged, &ref)) {
		check(false, "gguf %s: the f32 merge to compare with: %s", name, tern_error());
		return;
	}
	/* q4_k_m on these small models: rows of 64 / 96 fall back to Q8_0, of 80 to F16 */
	static const enum tern_gguf_type types[] = {TERN_GGUF_F32, TERN_GGUF_F16, TERN_GGUF_BF16,
						    TERN_GGUF_Q8_0, TERN_GGUF_Q4_K_M};
	static const uint32_t ggml[] = {0, 1, 30, 8, 8};
	static const uint32_t ftype[] = {0, 1, 32, 7, 15};
	for (int ti = 0; ti < 5; ti++) {
		char out[4400];
		snprintf(out, sizeof out, "%s/%s-%s.gguf", tmp, name, tern_gguf_type_name(types[ti]));
		struct tern_merge_opts o = {.base = mdir, .adapter = adir};
		struct tern_merge_result r;
		enum tern_status st = tern_export_gguf_model(&o, out, types[ti], &r);
		struct gfile *g = st ? NULL : gguf_read(out);
		check(g != NULL, "gguf %s %s: written and parsed (%s)", name, tern_gguf_type_name(types[ti]),
		      st  ? tern_error()
		      : g ? "ok"
			  : "malformed");
		if (!g)
			continue;
		const char *arch = llama_perm ? "llama" : cfg.model_type;
		char k[128];
		snprintf(k, sizeof k, "%s.block_count", arch);
		int64_t bc = kv_u32(g, k);
		snprintf(k, sizeof k, "%s.attention.head_count_kv", arch);
		int64_t hkv = kv_u32(g, k);
		snprintf(k, sizeof k, "%s.attention.key_length", arch);
		int64_t kl = kv_u32(g, k);
		const struct gkv *tok = kv_get(g, "tokenizer.ggml.tokens");
		check(kv_str_is(g, "general.architecture", arch) && kv_str_is(g, "general.type", "model") &&
			      bc == cfg.L && hkv == cfg.Hkv && kl == cfg.Dh &&
			      kv_u32(g, "general.file_type") == ftype[ti] && tok && tok->atype == 8 &&
			      tok->alen == (uint64_t)cfg.V && kv_str_is(g, "tokenizer.ggml.model", "gpt2") &&
			      kv_u32(g, "tokenizer.ggml.bos_token_id") == 1 &&
			      kv_u32(g, "tokenizer.ggml.eos_token_id") == 2 &&
			      kv_get(g, "tokenizer.ggml.token_type"),
		      "gguf %s %s: metadata (%s, %lld blocks, %lld kv heads, key length %lld, file type, %llu "
		      "tokens, bos/eos)",
		      name, tern_gguf_type_name(types[ti]), arch, (long long)bc, (long long)hkv,
		      (long long)kl, tok ? (unsigned long long)tok->alen : 0ull);
		/* every tensor against the f32 merge */
		size_t bad = 0, n = 0;
		double worst = 0;
		for (uint64_t i = 0; i < g->nt; i++) {
			const struct gten *t = &g->t[i];
			char buf[256];
			if (!strcmp(t->name, "rope_freqs.weight")) {
				bad += !(cfg.rope_type == TERN_ROPE_LLAMA3 && t->type == 0 &&
					 t->ne[0] == (uint64_t)cfg.Dh / 2);
				continue;
			}
			const char *hf = hf_of(t->name, buf, sizeof buf);
			const struct tern_st_tensor *x = hf ? tern_st_model_find(ref, hf) : NULL;
			uint64_t numel = t->ne[0] * (t->nd > 1 ? t->ne[1] : 1);
			if (!x || (uint64_t)x->numel != numel ||
			    (x->ndim == 2 &&
			     (t->ne[0] != (uint64_t)x->shape[1] || t->ne[1] != (uint64_t)x->shape[0]))) {
				bad++;
				continue;
			}
			float *w = st_f32(x), *p = malloc(numel * 4), *got = malloc(numel * 4);
			memcpy(p, w, numel * 4);
			bool q = strstr(t->name, "attn_q.") != NULL, kk = strstr(t->name, "attn_k.") != NULL;
			if (llama_perm && (q || kk))
				permute(w, p, x->shape[0], x->ndim == 2 ? x->shape[1] : 1,
					q ? cfg.H : cfg.Hkv);
			deq(t, got, (int64_t)numel);
			/* Q8_0 falls back to F16 for rows that are not a multiple of 32 (as llama.cpp's
			 * converter does) */
			uint32_t want = t->nd == 1 ? 0 : ggml[ti] == 8 && t->ne[0] % 32 ? 1 : ggml[ti];
			bad += t->type != want;
			for (uint64_t e = 0; e < numel; e++) {
				double err = fabs((double)got[e] - p[e]);
				if (t->type == 0)
					bad += got[e] != p[e];
				else if (t->type == 1)
					bad += got[e] != tern_f16_to_f32(tern_f32_to_f16(p[e]));
				else if (t->type == 30)
					bad += got[e] != tern_bf16_to_f32(tern_f32_to_bf16(p[e]));
				else {
					float amax = 0;
					for (int j = 0; j < 32; j++)
						amax = fmaxf(amax, fabsf(p[e / 32 * 32 + j]));
					/* the code is ggml's: d = amax / 127 stored as f16, q = round(x / d) with
					 * the fp32 d; so the error is at most half a step plus 127 times d's f16
					 * rounding (2^-11 relative) */
					float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
					int8_t qv = (int8_t)t->data[(e / 32) * 34 + 2 + e % 32];
					double step = f16(t->data + (e / 32) * 34);
					bad += qv != (int8_t)roundf(p[e] * id) ||
					       step != tern_f16_to_f32(tern_f32_to_f16(d)) ||
					       err > step * (0.5 + 127.0 / 2048.0) * (1 + 1e-6);
					worst = fmax(worst, err / step);
				}
			}
			n++;
			free(w);
			free(p);
			free(got);
		}
		check(!bad &&
			      n + (kv_get(g, "llama.rope.freq_base") && cfg.rope_type == TERN_ROPE_LLAMA3) ==
				      g->nt &&
			      n == tern_st_model_count(ref),
		      "gguf %s %s: %zu tensors round-trip (%s)%s%.3g", name, tern_gguf_type_name(types[ti]),
		      n,
		      ti == 0   ? "exact"
		      : ti < 3  ? "exact rounding"
		      : ti == 3 ? "ggml's codes; error <= (0.5 + 127/2048) step"
				: "Q8_0 / F16 fallbacks for rows not a multiple of 256",
		      ti >= 3 ? ", worst error in steps " : "", ti >= 3 ? worst : 0.0);
		(void)worst;
		gguf_free(g);
	}
	tern_st_model_close(ref);

	/* the LoRA */
	char out[4400];
	snprintf(out, sizeof out, "%s/%s-lora.gguf", tmp, name);
	struct tern_merge_opts o = {.base = mdir, .adapter = adir};
	enum tern_status st = tern_export_gguf_lora(&o, out, TERN_GGUF_F32, NULL);
	struct gfile *g = st ? NULL : gguf_read(out);
	struct tern_st_file *a = NULL;
	tern_st_open(pj(adir, "adapter_model.safetensors"), &a);
	int64_t r;
	double alpha;
	bool rs;
	unsigned mods;
	tern_adapter_config_peek(adir, &r, &alpha, &rs, &mods);
	check(g && a && kv_str_is(g, "general.type", "adapter") && kv_str_is(g, "adapter.type", "lora") &&
		      fabs(kv_f32(g, "adapter.lora.alpha") - (rs ? alpha * sqrt((double)r) : alpha)) < 1e-4 &&
		      g->nt == tern_st_file_count(a),
	      "gguf %s lora: parsed, general.type adapter, adapter.type lora, alpha %g%s, %llu tensors (%s)",
	      name, g ? kv_f32(g, "adapter.lora.alpha") : 0.0, rs ? " (rsLoRA: alpha sqrt(r))" : "",
	      g ? (unsigned long long)g->nt : 0ull, st ? tern_error() : "ok");
	size_t bad = 0;
	for (uint64_t i = 0; g && a && i < g->nt; i++) {
		const struct gten *t = &g->t[i];
		char base[300], hfb[256], name2[320];
		snprintf(base, sizeof base, "%s", t->name);
		char *dot = strstr(base, ".weight.lora_");
		bool isb = dot && dot[13] == 'b';
		if (!dot) {
			bad++;
			continue;
		}
		dot[7] = 0;
		const char *hf = hf_of(base, hfb, sizeof hfb);
		snprintf(name2, sizeof name2, "base_model.model.%.*s.lora_%c.weight",
			 hf ? (int)(strlen(hf) - 7) : 0, hf ? hf : "", isb ? 'B' : 'A');
		const struct tern_st_tensor *x = tern_st_file_find(a, name2);
		if (!x || t->type != 0 || t->ne[0] != (uint64_t)x->shape[1] ||
		    t->ne[1] != (uint64_t)x->shape[0]) {
			bad++;
			continue;
		}
		float *w = st_f32(x), *p = malloc((size_t)x->numel * 4);
		memcpy(p, w, (size_t)x->numel * 4);
		bool q = strstr(t->name, "attn_q.") != NULL, kk = strstr(t->name, "attn_k.") != NULL;
		if (isb && llama_perm && (q || kk))
			permute(w, p, x->shape[0], x->shape[1], q ? cfg.H : cfg.Hkv);
		bad += memcmp(p, t->data, (size_t)x->numel * 4) != 0;
		free(w);
		free(p);
	}
	check(g && !bad, "gguf %s lora: lora_a = A [r, in], lora_b = B [out, r]%s, exact (%zu differ)", name,
	      llama_perm ? " (q/k rows permuted)" : "", bad);
	gguf_free(g);
	tern_st_close(a);
}

/* Q4_K and Q6_K: the writer's blocks decoded by the decoders above. */
static void kquants(void)
{
	enum { N = 4 * 256 };
	static float x[N], y[N];
	static uint8_t buf[N];
	uint64_t r = 12345;
	for (int i = 0; i < N; i++) { /* a sum of uniforms (roughly normal), some blocks special */
		double v = 0;
		for (int k = 0; k < 4; k++) {
			r = r * 6364136223846793005ull + 1442695040888963407ull;
			v += (double)(r >> 11) / 9007199254740992.0 - 0.5;
		}
		x[i] = i < 256 ? 0.0f : i < 512 ? (float)(0.05 * v + 0.02) : (float)(0.05 * v);
	}
	x[700] = 0.9f; /* an outlier */
	static const uint32_t types[] = {12, 14};
	static const double limit[] = {0.12, 0.03};
	for (int k = 0; k < 2; k++) {
		struct gten t = {.type = types[k], .data = buf};
		tern_ggml_from_f32((enum tern_ggml_type)types[k], x, N, buf);
		deq(&t, y, N);
		double e2 = 0, x2 = 0;
		bool zero = true;
		for (int i = 0; i < N; i++) {
			if (i < 256)
				zero = zero && y[i] == 0.0f;
			else {
				e2 += (double)(y[i] - x[i]) * (y[i] - x[i]);
				x2 += (double)x[i] * x[i];
			}
		}
		double rel = sqrt(e2 / x2);
		check(zero && rel < limit[k] && fabs(y[700] - x[700]) < 0.06,
		      "%s: an all-zero block decodes to 0, relative error %.4f (< %.2f), outlier %.3f -> %.3f",
		      k ? "Q6_K" : "Q4_K", rel, limit[k], x[700], y[700]);
	}
}

/* The demo model's real byte-level BPE tokenizer in the metadata. */
static void gguf_tokenizer(void)
{
	char mdir[4400], out[4400];
	snprintf(mdir, sizeof mdir, "%s/../../demo/model", data);
	snprintf(out, sizeof out, "%s/demo.gguf", tmp);
	if (access(pj(mdir, "model.safetensors"), F_OK) != 0) {
		printf("not run: gguf tokenizer (no %s)\n", mdir);
		return;
	}
	struct tern_merge_opts o = {.base = mdir};
	enum tern_status st = tern_export_gguf_model(&o, out, TERN_GGUF_F16, NULL);
	struct gfile *g = st ? NULL : gguf_read(out);
	json_t *tj = json_load_file(pj(mdir, "tokenizer.json"), 0, NULL);
	size_t n_merges = json_array_size(json_object_get(json_object_get(tj, "model"), "merges"));
	const struct gkv *m = g ? kv_get(g, "tokenizer.ggml.merges") : NULL,
			 *t = g ? kv_get(g, "tokenizer.ggml.tokens") : NULL;
	const struct gkv *ab = g ? kv_get(g, "tokenizer.ggml.add_bos_token") : NULL;
	/* the first merge string, as tokenizer.json has it */
	bool first = false;
	if (m && n_merges) {
		const uint8_t *p = m->val + 12;
		uint64_t n;
		memcpy(&n, p, 8);
		json_t *m0 = json_array_get(json_object_get(json_object_get(tj, "model"), "merges"), 0);
		char want[256] = "";
		if (json_is_string(m0))
			snprintf(want, sizeof want, "%s", json_string_value(m0));
		else /* the list form ["a", "b"] */
			snprintf(want, sizeof want, "%s %s", json_string_value(json_array_get(m0, 0)),
				 json_string_value(json_array_get(m0, 1)));
		first = n == strlen(want) && !memcmp(p + 8, want, n);
	}
	check(g && kv_str_is(g, "tokenizer.ggml.model", "gpt2") &&
		      kv_str_is(g, "tokenizer.ggml.pre", "gpt-2") && t && t->alen == 1936 && m &&
		      m->alen == n_merges && first && kv_u32(g, "tokenizer.ggml.bos_token_id") == 0 &&
		      kv_u32(g, "tokenizer.ggml.eos_token_id") == 1 && ab && ab->type == 7 && ab->val[0] == 1,
	      "gguf demo model: tokenizer gpt2 / gpt-2, %llu tokens, %llu merges (tokenizer.json %zu, first equal), bos 0, eos "
	      "1, add_bos (%s)",
	      t ? (unsigned long long)t->alen : 0ull, m ? (unsigned long long)m->alen : 0ull, n_merges,
	      st ? tern_error() : "ok");
	json_decref(tj);
	gguf_free(g);
}

int main(void)
{
	data = getenv("TERN_TEST_DATA");
	if (!data) {
		printf("TERN_TEST_DATA must be set (ctest sets it)\n");
		return 1;
	}
	const char *t = getenv("TMPDIR");
	snprintf(tmp, sizeof tmp, "%s/tern-export-XXXXXX", t ? t : "/tmp");
	if (!mkdtemp(tmp)) {
		printf("cannot create a temporary directory\n");
		return 1;
	}
	merge_case("llama", TERN_FORMAT_AUTO);
	merge_case("qwen2", TERN_FORMAT_AUTO);
	merge_case("qwen3", TERN_FORMAT_AUTO);
	merge_case("mistral", TERN_FORMAT_AUTO);
	merge_case("llama_save", TERN_FORMAT_AUTO);
	merge_case("qwen3_save", TERN_FORMAT_AUTO);
	merge_case("llama_nf4", TERN_FORMAT_NF4_DQ);
	merge_case("mixtral_exp", TERN_FORMAT_AUTO); /* LoRA on the experts (target_parameters) */
	merge_case("qwen3_moe_exp", TERN_FORMAT_AUTO);
	merge_case("mixtral_router", TERN_FORMAT_AUTO); /* + the router (mlp.gate) */
	merge_sharded();
	merge_errors();
	gguf_case("llama", true);
	gguf_case("mistral", true);
	gguf_case("qwen2", false);
	gguf_case("qwen3", false);
	gguf_tokenizer();
	kquants();
	rm_tree(tmp);
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
