/* The pack file: layout in pack.h. */
#define _GNU_SOURCE
#include "model/pack.h"

#include "quant/quant.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

uint64_t tern_fnv1a(uint64_t h, const void *data, size_t n)
{
	const uint8_t *p = data;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}
static void wr64(uint8_t *p, uint64_t v)
{
	wr32(p, (uint32_t)v);
	wr32(p + 4, (uint32_t)(v >> 32));
}
static float rdf(const uint8_t *p)
{
	uint32_t u = rd32(p);
	float f;
	memcpy(&f, &u, 4);
	return f;
}
static void wrf(uint8_t *p, float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	wr32(p, u);
}

/* Checksum of the metadata with the checksum field (bytes 24..31) read as zero. */
static uint64_t meta_checksum(const uint8_t *base, uint64_t meta_size)
{
	static const uint8_t zero[8];
	uint64_t h = tern_fnv1a(TERN_FNV_INIT, base, 24);
	h = tern_fnv1a(h, zero, 8);
	return tern_fnv1a(h, base + 32, meta_size - 32);
}

void tern_pack_part_sizes(enum tern_dtype dt, int64_t O, int64_t I, int blocksize, uint64_t size[3])
{
	uint64_t n = (uint64_t)O * (uint64_t)I;
	size[0] = size[1] = size[2] = 0;
	switch (dt) {
	case TERN_F32: size[0] = n * 4; break;
	case TERN_F16:
	case TERN_BF16: size[0] = n * 2; break;
	case TERN_NF4:
	case TERN_NF4_DQ: {
		uint64_t nb = (n + (uint64_t)blocksize - 1) / (uint64_t)blocksize;
		size[0] = (n + 1) / 2;
		size[1] = dt == TERN_NF4 ? nb * 4 : nb;
		size[2] = dt == TERN_NF4 ? 0 : (nb + TERN_NF4_NESTED_BLOCK - 1) / TERN_NF4_NESTED_BLOCK * 4;
		break;
	}
	case TERN_TERNARY: size[0] = (uint64_t)O * (uint64_t)tern_ternary_row_words(I) * 4; break;
	case TERN_DTYPE_COUNT: break;
	}
}

void tern_pack_free(struct tern_pack *p)
{
	if (!p)
		return;
	if (p->owner == 1 && p->base)
		munmap((void *)p->base, p->size);
	else if (p->owner == 2)
		free((void *)p->base);
	free(p->t);
	free(p->groups);
	free(p->key);
	free(p);
}

/* ---- reading ---- */

struct range {
	uint64_t off, end;
	uint32_t tensor; /* UINT32_MAX: a group */
	int part;
};

static int cmp_range(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off ? 1 : 0;
}

static int cmp_name(const void *a, const void *b)
{
	const struct tern_pack_tensor *const *x = a, *const *y = b;
	return strcmp((*x)->name, (*y)->name);
}

static const char *const part_name[3] = {"data", "absmax", "nested"};

#define REGEN "delete it, or run `tern quantize MODEL_DIR --format F --out FILE` to regenerate it"

static enum tern_status parse_tensor(const struct tern_pack *p, const uint8_t *r, uint32_t i,
				     struct tern_pack_tensor *t)
{
	const char *lb = p->path;
	memcpy(t->name, r, TERN_PACK_NAME);
	if (!memchr(t->name, 0, TERN_PACK_NAME) || !t->name[0])
		return tern_fail(TERN_E_FORMAT, "%s: tensor %u: name empty or not NUL-terminated; %s", lb, i,
				 REGEN);
	for (const char *c = t->name; *c; c++)
		if ((unsigned char)*c < 0x20)
			return tern_fail(TERN_E_FORMAT, "%s: tensor %u: control character in name; %s", lb, i,
					 REGEN);
	uint32_t dt = rd32(r + 128), ndim = rd32(r + 132), src = rd32(r + 172);
	if (dt >= TERN_DTYPE_COUNT)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: dtype %u unknown; %s", lb, t->name, dt,
				 REGEN);
	if (src > TERN_BF16)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: source dtype %u not f32/f16/bf16; %s", lb,
				 t->name, src, REGEN);
	if (ndim < 1 || ndim > 2)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: ndim %u, expected 1 or 2; %s", lb, t->name,
				 ndim, REGEN);
	t->dtype = (enum tern_dtype)dt;
	t->src_dtype = (enum tern_dtype)src;
	t->ndim = (int)ndim;
	t->shape[0] = (int64_t)rd64(r + 136);
	t->shape[1] = (int64_t)rd64(r + 144);
	if (t->shape[0] < 1 || t->shape[1] < 1 || t->shape[0] > ((int64_t)1 << 32) ||
	    t->shape[1] > ((int64_t)1 << 32) ||
	    (uint64_t)t->shape[0] * (uint64_t)t->shape[1] > ((uint64_t)1 << 42) ||
	    (ndim == 1 && t->shape[1] != 1))
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: bad shape [%lld, %lld]; %s", lb, t->name,
				 (long long)t->shape[0], (long long)t->shape[1], REGEN);
	t->layer = (int32_t)rd32(r + 152);
	if (t->layer < -1 || t->layer >= (int64_t)p->n_groups - 1)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: layer %d out of range (%u layers); %s", lb,
				 t->name, t->layer, p->n_groups - 1, REGEN);
	t->role = rd32(r + 156);
	uint32_t bs = rd32(r + 160);
	t->offset = rdf(r + 164);
	t->scale = rdf(r + 168);
	bool nf4 = t->dtype == TERN_NF4 || t->dtype == TERN_NF4_DQ;
	if (nf4 ? (bs < 32 || bs > 4096 || (bs & (bs - 1))) : bs != 0)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: blocksize %u invalid for %s; %s", lb, t->name,
				 bs, tern_dtype_name(t->dtype), REGEN);
	t->blocksize = (int)bs;
	if (!isfinite(t->offset) || !isfinite(t->scale) || (t->dtype == TERN_TERNARY && ndim != 2))
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s: bad scale/offset or shape for %s; %s", lb,
				 t->name, tern_dtype_name(t->dtype), REGEN);
	uint64_t want[3];
	tern_pack_part_sizes(t->dtype, t->shape[0], t->shape[1], t->blocksize ? t->blocksize : 64, want);
	for (int k = 0; k < 3; k++) {
		t->off[k] = rd64(r + 176 + 16 * k);
		t->size[k] = rd64(r + 184 + 16 * k);
		if (t->size[k] != want[k])
			return tern_fail(TERN_E_FORMAT, "%s: tensor %s: %s is %llu bytes, expected %llu; %s",
					 lb, t->name, part_name[k], (unsigned long long)t->size[k],
					 (unsigned long long)want[k], REGEN);
		if (!want[k] && t->off[k])
			return tern_fail(TERN_E_FORMAT, "%s: tensor %s: unused %s has offset %llu; %s", lb,
					 t->name, part_name[k], (unsigned long long)t->off[k], REGEN);
		if (!want[k])
			continue;
		const struct tern_pack_group *g =
			&p->groups[t->layer < 0 ? p->n_groups - 1 : (uint32_t)t->layer];
		if (t->off[k] % TERN_PACK_ALIGN || t->off[k] < g->off || t->off[k] > g->off + g->size ||
		    t->size[k] > g->off + g->size - t->off[k])
			return tern_fail(
				TERN_E_FORMAT,
				"%s: tensor %s: %s [%llu, +%llu) is not a 256-aligned range inside its "
				"group [%llu, +%llu); %s",
				lb, t->name, part_name[k], (unsigned long long)t->off[k],
				(unsigned long long)t->size[k], (unsigned long long)g->off,
				(unsigned long long)g->size, REGEN);
	}
	return TERN_OK;
}

static enum tern_status validate(struct tern_pack *p)
{
	enum tern_status st = TERN_OK;
	const uint8_t *b = p->base;
	const char *lb = p->path;
	struct range *rg = NULL;
	const struct tern_pack_tensor **names = NULL;

	if (p->size < TERN_PACK_HEADER || memcmp(b, TERN_PACK_MAGIC, 8))
		return tern_fail(TERN_E_FORMAT, "%s: not a tern pack file (bad magic); %s", lb, REGEN);
	uint32_t version = rd32(b + 8);
	if (version != TERN_PACK_VERSION)
		return tern_fail(TERN_E_FORMAT, "%s: pack file version %u, this tern reads version %u; %s",
				 lb, version, TERN_PACK_VERSION, REGEN);
	uint64_t fsize = rd64(b + 16), meta = rd64(b + 32);
	if (rd32(b + 12) != TERN_PACK_HEADER || fsize != p->size)
		return tern_fail(TERN_E_FORMAT,
				 "%s: file is %llu bytes, the header says %llu (truncated?); %s", lb,
				 (unsigned long long)p->size, (unsigned long long)fsize, REGEN);
	if (meta < TERN_PACK_HEADER || meta > p->size)
		return tern_fail(TERN_E_FORMAT, "%s: metadata size %llu out of range; %s", lb,
				 (unsigned long long)meta, REGEN);
	if (meta_checksum(b, meta) != rd64(b + 24))
		return tern_fail(TERN_E_FORMAT, "%s: metadata checksum mismatch (file corrupted); %s", lb,
				 REGEN);
	p->n_tensors = rd32(b + 40);
	p->n_groups = rd32(b + 44);
	uint64_t toc = rd64(b + 48), gt = rd64(b + 56), ko = rd64(b + 64), ks = rd64(b + 72);
	if (p->n_tensors > TERN_PACK_MAX_TENSORS || p->n_groups < 1 || p->n_groups > TERN_PACK_MAX_GROUPS)
		return tern_fail(TERN_E_FORMAT, "%s: %u tensors in %u groups is out of range; %s", lb,
				 p->n_tensors, p->n_groups, REGEN);
	uint64_t toc_end = toc + (uint64_t)p->n_tensors * TERN_PACK_RECORD, gt_end = gt + 16ull * p->n_groups;
	if (toc != TERN_PACK_HEADER || gt != toc_end || ko != gt_end || ks > meta || ko + ks != meta)
		return tern_fail(TERN_E_FORMAT, "%s: TOC, group table and key do not tile the metadata; %s",
				 lb, REGEN);
	uint64_t data0 = tern_align_up(meta, TERN_PACK_PAGE);

	p->key = tern_malloc(ks + 1);
	p->groups = tern_calloc(p->n_groups, sizeof *p->groups);
	p->t = tern_calloc(p->n_tensors ? p->n_tensors : 1, sizeof *p->t);
	rg = tern_calloc((size_t)p->n_groups + 3ull * p->n_tensors, sizeof *rg);
	names = tern_calloc(p->n_tensors ? p->n_tensors : 1, sizeof *names);
	if (!p->key || !p->groups || !p->t || !rg || !names) {
		st = TERN_E_NOMEM;
		goto out;
	}
	memcpy(p->key, b + ko, ks);
	p->key[ks] = 0;
	if (strlen(p->key) != ks) {
		st = tern_fail(TERN_E_FORMAT, "%s: NUL byte inside the key; %s", lb, REGEN);
		goto out;
	}

	size_t nr = 0;
	for (uint32_t g = 0; g < p->n_groups; g++) {
		struct tern_pack_group *gr = &p->groups[g];
		gr->off = rd64(b + gt + 16ull * g);
		gr->size = rd64(b + gt + 16ull * g + 8);
		if (gr->off % TERN_PACK_PAGE || gr->off < data0 || gr->off > p->size ||
		    gr->size > p->size - gr->off) {
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: group %u [%llu, +%llu) is not a page-aligned range of the data; %s", lb,
				g, (unsigned long long)gr->off, (unsigned long long)gr->size, REGEN);
			goto out;
		}
		if (gr->size)
			rg[nr++] = (struct range){gr->off, gr->off + gr->size, UINT32_MAX, g};
	}
	qsort(rg, nr, sizeof *rg, cmp_range);
	for (size_t i = 1; i < nr; i++)
		if (rg[i].off < rg[i - 1].end) {
			st = tern_fail(TERN_E_FORMAT, "%s: groups %d and %d overlap; %s", lb, rg[i - 1].part,
				       rg[i].part, REGEN);
			goto out;
		}

	nr = 0;
	for (uint32_t i = 0; i < p->n_tensors; i++) {
		struct tern_pack_tensor *t = &p->t[i];
		if ((st = parse_tensor(p, b + toc + (uint64_t)i * TERN_PACK_RECORD, i, t)))
			goto out;
		names[i] = t;
		for (int k = 0; k < 3; k++)
			if (t->size[k])
				rg[nr++] = (struct range){t->off[k], t->off[k] + t->size[k], i, k};
	}
	qsort(rg, nr, sizeof *rg, cmp_range);
	for (size_t i = 1; i < nr; i++)
		if (rg[i].off < rg[i - 1].end) {
			st = tern_fail(TERN_E_FORMAT, "%s: %s of %s overlaps %s of %s; %s", lb,
				       part_name[rg[i].part], p->t[rg[i].tensor].name,
				       part_name[rg[i - 1].part], p->t[rg[i - 1].tensor].name, REGEN);
			goto out;
		}
	qsort(names, p->n_tensors, sizeof *names, cmp_name);
	for (uint32_t i = 1; i < p->n_tensors; i++)
		if (!strcmp(names[i]->name, names[i - 1]->name)) {
			st = tern_fail(TERN_E_FORMAT, "%s: tensor %s appears twice; %s", lb, names[i]->name,
				       REGEN);
			goto out;
		}
out:
	free(rg);
	free(names);
	return st;
}

enum tern_status tern_pack_parse(const void *buf, size_t size, const char *label, struct tern_pack **out)
{
	*out = NULL;
	struct tern_pack *p = tern_calloc(1, sizeof *p);
	if (!p)
		return TERN_E_NOMEM;
	snprintf(p->path, sizeof p->path, "%s", label ? label : "<memory>");
	p->base = buf;
	p->size = size;
	enum tern_status st = validate(p);
	if (st) {
		tern_pack_free(p);
		return st;
	}
	*out = p;
	return TERN_OK;
}

enum tern_status tern_pack_open(const char *path, struct tern_pack **out)
{
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	struct stat sb;
	if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
		close(fd);
		return tern_fail(TERN_E_IO, "%s: not a regular file", path);
	}
	if (sb.st_size < TERN_PACK_HEADER) {
		close(fd);
		return tern_fail(TERN_E_FORMAT, "%s: %lld bytes, too short for a pack file; %s", path,
				 (long long)sb.st_size, REGEN);
	}
	void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED)
		return tern_fail(TERN_E_IO, "%s: mmap failed: %s", path, strerror(errno));
	struct tern_pack *p = tern_calloc(1, sizeof *p);
	if (!p) {
		munmap(m, (size_t)sb.st_size);
		return TERN_E_NOMEM;
	}
	snprintf(p->path, sizeof p->path, "%s", path);
	p->base = m;
	p->size = (uint64_t)sb.st_size;
	p->owner = 1;
	enum tern_status st = validate(p);
	if (st) {
		tern_pack_free(p);
		return st;
	}
	*out = p;
	return TERN_OK;
}

void tern_pack_weight(const struct tern_pack *p, const struct tern_pack_tensor *t, struct tern_view group,
		      struct tern_weight *w)
{
	const struct tern_pack_group *g = &p->groups[t->layer < 0 ? p->n_groups - 1 : (uint32_t)t->layer];
	memset(w, 0, sizeof *w);
	w->dtype = t->dtype;
	w->O = t->shape[0];
	w->I = t->shape[1];
	struct tern_view *v[3] = {&w->data, &w->absmax, &w->nested};
	for (int k = 0; k < 3; k++)
		if (t->size[k])
			*v[k] = tern_view_sub(group, t->off[k] - g->off, t->size[k]);
	w->blocksize = t->blocksize;
	w->offset = t->offset;
	w->scale = t->scale;
}

/* ---- writing ---- */

struct tern_pack_builder {
	char path[4096], tmp[4160];
	int fd;
	uint8_t *base;
	uint64_t size, meta;
	struct tern_pack_tensor *t;
	uint32_t n, n_groups;
	struct tern_pack_group *groups;
};

void tern_pack_build_abort(struct tern_pack_builder *b)
{
	if (!b)
		return;
	if (b->fd >= 0) {
		if (b->base)
			munmap(b->base, b->size);
		close(b->fd);
		unlink(b->tmp);
	} else {
		free(b->base);
	}
	free(b->groups);
	free(b);
}

enum tern_status tern_pack_build_begin(const char *path, struct tern_pack_tensor *t, uint32_t n,
				       uint32_t n_groups, const char *key, struct tern_pack_builder **out,
				       uint8_t **data)
{
	enum tern_status st = TERN_OK;
	*out = NULL;
	*data = NULL;
	if (n > TERN_PACK_MAX_TENSORS || n_groups < 1 || n_groups > TERN_PACK_MAX_GROUPS)
		return tern_fail(TERN_E_INVALID, "pack: %u tensors in %u groups is out of range", n,
				 n_groups);
	struct tern_pack_builder *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	b->fd = -1;
	b->t = t;
	b->n = n;
	b->n_groups = n_groups;
	b->groups = tern_calloc(n_groups, sizeof *b->groups);
	if (!b->groups) {
		st = TERN_E_NOMEM;
		goto out;
	}
	size_t ks = strlen(key);
	b->meta = TERN_PACK_HEADER + (uint64_t)n * TERN_PACK_RECORD + 16ull * n_groups + ks;
	/* Layout: groups in order L (globals), 0..L-1; inside a group, tensors in the order given. */
	uint64_t pos = tern_align_up(b->meta, TERN_PACK_PAGE);
	for (uint32_t gi = 0; gi < n_groups; gi++) {
		uint32_t g = gi == 0 ? n_groups - 1 : gi - 1;
		b->groups[g].off = pos;
		for (uint32_t i = 0; i < n; i++) {
			uint32_t tg = t[i].layer < 0 ? n_groups - 1 : (uint32_t)t[i].layer;
			if (tg != g)
				continue;
			tern_pack_part_sizes(t[i].dtype, t[i].shape[0], t[i].shape[1], t[i].blocksize,
					     t[i].size);
			for (int k = 0; k < 3; k++) {
				t[i].off[k] = t[i].size[k] ? pos : 0;
				pos = tern_align_up(pos + t[i].size[k], TERN_PACK_ALIGN);
			}
		}
		b->groups[g].size = pos - b->groups[g].off;
		pos = tern_align_up(pos, TERN_PACK_PAGE);
	}
	b->size = pos;

	if (path) {
		snprintf(b->path, sizeof b->path, "%s", path);
		snprintf(b->tmp, sizeof b->tmp, "%s.tmp.%ld", path, (long)getpid());
		b->fd = open(b->tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (b->fd < 0) {
			st = tern_fail(TERN_E_IO, "%s: cannot create: %s", b->tmp, strerror(errno));
			goto out;
		}
		int e = posix_fallocate(b->fd, 0, (off_t)b->size);
		if (e == EINVAL || e == EOPNOTSUPP)
			e = ftruncate(b->fd, (off_t)b->size) ? errno : 0;
		if (e) {
			st = tern_fail(TERN_E_IO, "%s: cannot reserve %llu bytes for the pack file: %s", path,
				       (unsigned long long)b->size, strerror(e));
			goto out;
		}
		void *m = mmap(NULL, b->size, PROT_READ | PROT_WRITE, MAP_SHARED, b->fd, 0);
		if (m == MAP_FAILED) {
			st = tern_fail(TERN_E_IO, "%s: mmap failed: %s", b->tmp, strerror(errno));
			goto out;
		}
		b->base = m;
	} else {
		snprintf(b->path, sizeof b->path, "<memory>");
		b->base = calloc(1, b->size);
		if (!b->base) {
			st = tern_fail(TERN_E_NOMEM, "out of host memory for a %llu-byte model image",
				       (unsigned long long)b->size);
			goto out;
		}
	}
	memcpy(b->base + b->meta - ks, key, ks);
	*out = b;
	*data = b->base;
	b = NULL;
out:
	tern_pack_build_abort(b);
	return st;
}

enum tern_status tern_pack_build_finish(struct tern_pack_builder *b, struct tern_pack **out)
{
	enum tern_status st = TERN_OK;
	uint8_t *h = b->base;
	*out = NULL;
	memcpy(h, TERN_PACK_MAGIC, 8);
	wr32(h + 8, TERN_PACK_VERSION);
	wr32(h + 12, TERN_PACK_HEADER);
	wr64(h + 16, b->size);
	wr64(h + 32, b->meta);
	wr32(h + 40, b->n);
	wr32(h + 44, b->n_groups);
	uint64_t toc = TERN_PACK_HEADER, gt = toc + (uint64_t)b->n * TERN_PACK_RECORD;
	wr64(h + 48, toc);
	wr64(h + 56, gt);
	wr64(h + 64, gt + 16ull * b->n_groups);
	wr64(h + 72, b->meta - (gt + 16ull * b->n_groups));
	for (uint32_t i = 0; i < b->n; i++) {
		const struct tern_pack_tensor *t = &b->t[i];
		uint8_t *r = h + toc + (uint64_t)i * TERN_PACK_RECORD;
		memset(r, 0, TERN_PACK_RECORD);
		snprintf((char *)r, TERN_PACK_NAME, "%s", t->name);
		wr32(r + 128, (uint32_t)t->dtype);
		wr32(r + 132, (uint32_t)t->ndim);
		wr64(r + 136, (uint64_t)t->shape[0]);
		wr64(r + 144, (uint64_t)t->shape[1]);
		wr32(r + 152, (uint32_t)t->layer);
		wr32(r + 156, t->role);
		wr32(r + 160, (uint32_t)t->blocksize);
		wrf(r + 164, t->offset);
		wrf(r + 168, t->scale);
		wr32(r + 172, (uint32_t)t->src_dtype);
		for (int k = 0; k < 3; k++) {
			wr64(r + 176 + 16 * k, t->off[k]);
			wr64(r + 184 + 16 * k, t->size[k]);
		}
	}
	for (uint32_t g = 0; g < b->n_groups; g++) {
		wr64(h + gt + 16ull * g, b->groups[g].off);
		wr64(h + gt + 16ull * g + 8, b->groups[g].size);
	}
	wr64(h + 24, meta_checksum(h, b->meta));

	if (b->fd < 0) {
		st = tern_pack_parse(b->base, b->size, "<memory>", out);
		if (st == TERN_OK) {
			(*out)->owner = 2;
			b->base = NULL;
		}
		goto out;
	}
	if (msync(b->base, b->size, MS_SYNC) || fsync(b->fd)) {
		st = tern_fail(TERN_E_IO, "%s: cannot write the pack file: %s", b->tmp, strerror(errno));
		goto out;
	}
	munmap(b->base, b->size);
	b->base = NULL;
	if (close(b->fd)) {
		b->fd = -1;
		st = tern_fail(TERN_E_IO, "%s: cannot write the pack file: %s", b->tmp, strerror(errno));
		unlink(b->tmp);
		goto out_free;
	}
	b->fd = -1;
	if (rename(b->tmp, b->path)) {
		st = tern_fail(TERN_E_IO, "%s: cannot rename to %s: %s", b->tmp, b->path, strerror(errno));
		unlink(b->tmp);
		goto out_free;
	}
	{ /* make the rename durable */
		char dir[4096];
		snprintf(dir, sizeof dir, "%s", b->path);
		int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	st = tern_pack_open(b->path, out);
	goto out_free;
out:
	tern_pack_build_abort(b);
	return st;
out_free:
	free(b->groups);
	free(b);
	return st;
}
