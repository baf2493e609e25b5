/* safetensors reader: one file (mmap + validation) and model directories (shards, index.json).
 * The layout and the rules enforced are in safetensors.h. */
#define _POSIX_C_SOURCE 200809L
#include "formats/safetensors.h"

#include "core/core.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"
#define MAX_INDEX_BYTES (64u << 20)

struct kv {
	char *key;
	char *value;
};

struct tern_st_file {
	char *path;
	const uint8_t *base; /* the whole file image */
	uint64_t size;
	void *map; /* non-NULL when tern_st_open mapped it */
	uint64_t header_len;
	size_t n;
	struct tern_st_tensor *t;              /* data-offset order */
	const struct tern_st_tensor **by_name; /* strcmp order */
	size_t n_meta;
	struct kv *meta;
};

struct tern_st_model {
	char *path;
	size_t n_files;
	struct tern_st_file **files;
	size_t n;
	const struct tern_st_tensor **by_name;
	uint64_t data_bytes;
};

/* ---- dtypes --------------------------------------------------------------------------- */

static const struct {
	const char *name;
	size_t size;
} dtypes[TERN_ST_DTYPE_COUNT] = {
	[TERN_ST_BOOL] = {"BOOL", 1}, [TERN_ST_U8] = {"U8", 1},   [TERN_ST_I8] = {"I8", 1},
	[TERN_ST_I16] = {"I16", 2},   [TERN_ST_U16] = {"U16", 2}, [TERN_ST_F16] = {"F16", 2},
	[TERN_ST_BF16] = {"BF16", 2}, [TERN_ST_I32] = {"I32", 4}, [TERN_ST_U32] = {"U32", 4},
	[TERN_ST_F32] = {"F32", 4},   [TERN_ST_I64] = {"I64", 8}, [TERN_ST_U64] = {"U64", 8},
	[TERN_ST_F64] = {"F64", 8},
};

/* Names the format knows that tern does not handle. */
static const char *const unsupported_dtypes[] = {"C64",         "F8_E5M2",     "F8_E4M3", "F8_E4M3FN",
						 "F8_E4M3FNUZ", "F8_E5M2FNUZ", "F8_E8M0", "F6_E2M3",
						 "F6_E3M2",     "F4"};

const char *tern_st_dtype_name(enum tern_st_dtype dt)
{
	return (unsigned)dt < TERN_ST_DTYPE_COUNT ? dtypes[dt].name : "?";
}

size_t tern_st_dtype_size(enum tern_st_dtype dt)
{
	return (unsigned)dt < TERN_ST_DTYPE_COUNT ? dtypes[dt].size : 0;
}

/* Copies s into buf for a one-line message: control bytes become '?', long strings are cut. */
static const char *show(const char *s, char *buf, size_t size)
{
	size_t j = 0, limit = size - 4;
	for (size_t i = 0; s[i] && j < limit; i++)
		buf[j++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	if (j == limit && s[j])
		memcpy(buf + j, "...", 3), j += 3;
	buf[j] = 0;
	return buf;
}

enum tern_status tern_st_dtype_parse(const char *s, enum tern_st_dtype *out)
{
	char b[80];
	for (int i = 0; i < TERN_ST_DTYPE_COUNT; i++)
		if (!strcmp(s, dtypes[i].name)) {
			*out = (enum tern_st_dtype)i;
			return TERN_OK;
		}
	for (size_t i = 0; i < sizeof unsupported_dtypes / sizeof unsupported_dtypes[0]; i++)
		if (!strcmp(s, unsupported_dtypes[i]))
			return tern_fail(
				TERN_E_UNSUPPORTED,
				"unsupported dtype %s (tern reads BOOL, U8, I8, I16, U16, I32, U32, I64, "
				"U64, F16, BF16, F32, F64)",
				s);
	return tern_fail(TERN_E_FORMAT, "unknown dtype \"%s\"", show(s, b, sizeof b));
}

/* ---- one file ------------------------------------------------------------------------- */

static const char *json_kind(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

static int cmp_name(const void *a, const void *b)
{
	const struct tern_st_tensor *x = *(const struct tern_st_tensor *const *)a;
	const struct tern_st_tensor *y = *(const struct tern_st_tensor *const *)b;
	return strcmp(x->name, y->name);
}

static int cmp_offset(const void *a, const void *b)
{
	const struct tern_st_tensor *x = a, *y = b;
	if (x->offset != y->offset)
		return x->offset < y->offset ? -1 : 1;
	if (x->nbytes != y->nbytes)
		return x->nbytes < y->nbytes ? -1 : 1;
	return strcmp(x->name, y->name);
}

static const struct tern_st_tensor *find_sorted(const struct tern_st_tensor *const *v, size_t n,
						const char *name)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(v[mid]->name, name);
		if (c == 0)
			return v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static char *dup_str(const char *s)
{
	size_t n = strlen(s) + 1;
	char *p = tern_malloc(n);
	if (p)
		memcpy(p, s, n);
	return p;
}

static enum tern_status parse_metadata(struct tern_st_file *f, json_t *meta)
{
	char b[128];
	if (!json_is_object(meta))
		return tern_fail(TERN_E_FORMAT, "%s: __metadata__ must be an object of strings, got %s",
				 f->path, json_kind(meta));
	size_t n = json_object_size(meta);
	f->meta = tern_calloc(n ? n : 1, sizeof *f->meta);
	if (!f->meta)
		return TERN_E_NOMEM;
	const char *key;
	json_t *v;
	json_object_foreach(meta, key, v)
	{
		if (!json_is_string(v))
			return tern_fail(TERN_E_FORMAT,
					 "%s: __metadata__ key \"%s\": values must be strings, got %s",
					 f->path, show(key, b, sizeof b), json_kind(v));
		struct kv *e = &f->meta[f->n_meta];
		e->key = dup_str(key);
		e->value = dup_str(json_string_value(v));
		if (!e->key || !e->value) {
			free(e->key);
			free(e->value);
			return TERN_E_NOMEM;
		}
		f->n_meta++;
	}
	return TERN_OK;
}

/* Reads a non-negative integer JSON value into *out. */
static bool get_uint(const json_t *v, uint64_t *out)
{
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return false;
	*out = (uint64_t)json_integer_value(v);
	return true;
}

/* Validates one tensor entry; t->offset holds `begin` (relative) until the caller rebases it. */
static enum tern_status parse_entry(const struct tern_st_file *f, const char *name, json_t *e,
				    uint64_t data_size, struct tern_st_tensor *t)
{
	char b[128];
	const char *nm = show(name, b, sizeof b);
	if (!json_is_object(e))
		return tern_fail(
			TERN_E_FORMAT,
			"%s: tensor \"%s\": entry must be an object with dtype, shape and data_offsets, "
			"got %s",
			f->path, nm, json_kind(e));

	json_t *dt = json_object_get(e, "dtype");
	if (!dt)
		return tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\": missing key \"dtype\"", f->path, nm);
	if (!json_is_string(dt))
		return tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\": dtype must be a string, got %s", f->path,
				 nm, json_kind(dt));
	enum tern_status st = tern_st_dtype_parse(json_string_value(dt), &t->dtype);
	if (st) {
		char msg[256];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st, "%s: tensor \"%s\": %s", f->path, nm, msg);
	}

	json_t *shape = json_object_get(e, "shape");
	if (!shape)
		return tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\": missing key \"shape\"", f->path, nm);
	if (!json_is_array(shape))
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor \"%s\": shape must be an array of integers, got %s", f->path, nm,
				 json_kind(shape));
	size_t nd = json_array_size(shape);
	if (nd > TERN_ST_MAX_DIMS)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: tensor \"%s\": %zu dimensions; tern supports at most %d", f->path, nm,
				 nd, TERN_ST_MAX_DIMS);
	t->ndim = (int)nd;
	uint64_t numel = 1;
	bool overflow = false, zero = false;
	for (size_t i = 0; i < nd; i++) {
		uint64_t d;
		json_t *v = json_array_get(shape, i);
		if (!get_uint(v, &d))
			return tern_fail(
				TERN_E_FORMAT,
				"%s: tensor \"%s\": shape[%zu] must be a non-negative integer, got %s",
				f->path, nm, i, json_is_integer(v) ? "a negative integer" : json_kind(v));
		t->shape[i] = (int64_t)d;
		if (d == 0)
			zero = true;
		else if (!overflow && numel > (uint64_t)INT64_MAX / d)
			overflow = true;
		else if (!overflow)
			numel *= d;
	}
	/* A zero dimension makes the tensor empty whatever the other dimensions are. */
	if (zero) {
		numel = 0;
		overflow = false;
	}
	size_t es = tern_st_dtype_size(t->dtype);
	if (overflow || numel > UINT64_MAX / es)
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor \"%s\": shape has too many elements (size overflows 64 bits)",
				 f->path, nm);
	t->numel = (int64_t)numel;
	t->nbytes = numel * es;

	json_t *off = json_object_get(e, "data_offsets");
	if (!off)
		return tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\": missing key \"data_offsets\"", f->path,
				 nm);
	uint64_t begin, end;
	if (!json_is_array(off) || json_array_size(off) != 2 || !get_uint(json_array_get(off, 0), &begin) ||
	    !get_uint(json_array_get(off, 1), &end))
		return tern_fail(
			TERN_E_FORMAT,
			"%s: tensor \"%s\": data_offsets must be [begin, end] with non-negative integers",
			f->path, nm);
	if (begin > end)
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor \"%s\": data_offsets [%llu, %llu]: begin is greater than end",
				 f->path, nm, (unsigned long long)begin, (unsigned long long)end);
	if (end - begin != t->nbytes)
		return tern_fail(
			TERN_E_FORMAT,
			"%s: tensor \"%s\": data_offsets [%llu, %llu] span %llu bytes, but %s shape of "
			"%lld elements needs %llu",
			f->path, nm, (unsigned long long)begin, (unsigned long long)end,
			(unsigned long long)(end - begin), tern_st_dtype_name(t->dtype), (long long)t->numel,
			(unsigned long long)t->nbytes);
	if (end > data_size)
		return tern_fail(TERN_E_FORMAT,
				 "%s: tensor \"%s\": data_offsets [%llu, %llu] run past the end of the data "
				 "section (%llu bytes; file truncated?)",
				 f->path, nm, (unsigned long long)begin, (unsigned long long)end,
				 (unsigned long long)data_size);
	t->offset = begin;
	return TERN_OK;
}

static enum tern_status parse_header(struct tern_st_file *f)
{
	enum tern_status st = TERN_OK;
	json_t *root = NULL;
	char b[128], b2[128];
	if (f->size < 8)
		return tern_fail(
			TERN_E_FORMAT,
			"%s: file is %llu bytes; a safetensors file starts with an 8-byte header length "
			"(truncated?)",
			f->path, (unsigned long long)f->size);
	uint64_t hl = 0;
	for (int i = 7; i >= 0; i--)
		hl = hl << 8 | f->base[i];
	if (hl > TERN_ST_MAX_HEADER)
		return tern_fail(
			TERN_E_FORMAT,
			"%s: header length %llu is over the limit of %llu bytes (not a safetensors file?)",
			f->path, (unsigned long long)hl, TERN_ST_MAX_HEADER);
	if (8 + hl > f->size)
		return tern_fail(TERN_E_FORMAT,
				 "%s: header length %llu needs %llu bytes but the file has %llu (truncated?)",
				 f->path, (unsigned long long)hl, (unsigned long long)(8 + hl),
				 (unsigned long long)f->size);
	if (hl < 2 || f->base[8] != '{')
		return tern_fail(TERN_E_FORMAT,
				 "%s: header does not start with '{' (not a safetensors file?)", f->path);
	f->header_len = hl;
	uint64_t data_size = f->size - 8 - hl;

	json_error_t err;
	root = json_loadb((const char *)f->base + 8, (size_t)hl, JSON_REJECT_DUPLICATES, &err);
	if (!root) {
		if (json_error_code(&err) == json_error_duplicate_key)
			st = tern_fail(TERN_E_FORMAT,
				       "%s: header: duplicate tensor name or key (%s, at byte %d)", f->path,
				       show(err.text, b, sizeof b), err.position);
		else
			st = tern_fail(TERN_E_FORMAT, "%s: header is not valid UTF-8 JSON: %s (at byte %d)",
				       f->path, show(err.text, b, sizeof b), err.position);
		goto out;
	}
	if (!json_is_object(root)) {
		st = tern_fail(TERN_E_FORMAT, "%s: header must be a JSON object", f->path);
		goto out;
	}

	size_t n = json_object_size(root);
	f->t = tern_calloc(n ? n : 1, sizeof *f->t);
	if (!f->t) {
		st = TERN_E_NOMEM;
		goto out;
	}
	const char *key;
	json_t *v;
	json_object_foreach(root, key, v)
	{
		if (!strcmp(key, "__metadata__")) {
			if ((st = parse_metadata(f, v)))
				goto out;
			continue;
		}
		struct tern_st_tensor *t = &f->t[f->n];
		if ((st = parse_entry(f, key, v, data_size, t)))
			goto out;
		t->name = dup_str(key);
		if (!t->name) {
			st = TERN_E_NOMEM;
			goto out;
		}
		t->file = f;
		f->n++;
	}

	/* Sorted by (begin, end), tensors must tile [0, data_size) exactly. */
	qsort(f->t, f->n, sizeof *f->t, cmp_offset);
	uint64_t expect = 0;
	for (size_t i = 0; i < f->n; i++) {
		struct tern_st_tensor *t = &f->t[i];
		if (t->offset > expect) {
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: hole in the data section: bytes [%llu, %llu) before tensor \"%s\" belong "
				"to no tensor",
				f->path, (unsigned long long)expect, (unsigned long long)t->offset,
				show(t->name, b, sizeof b));
			goto out;
		}
		if (t->offset < expect) {
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: tensor \"%s\" data_offsets [%llu, %llu] overlap tensor \"%s\" (which ends "
				"at %llu)",
				f->path, show(t->name, b, sizeof b), (unsigned long long)t->offset,
				(unsigned long long)(t->offset + t->nbytes),
				show(f->t[i - 1].name, b2, sizeof b2), (unsigned long long)expect);
			goto out;
		}
		expect = t->offset + t->nbytes;
		t->data = f->base + 8 + hl + t->offset;
		t->offset += 8 + hl;
	}
	if (expect != data_size) {
		st = tern_fail(
			TERN_E_FORMAT,
			"%s: file is %llu bytes but its tensors end at %llu (8 + header %llu + data %llu): "
			"%llu unclaimed bytes at the end",
			f->path, (unsigned long long)f->size, (unsigned long long)(8 + hl + expect),
			(unsigned long long)hl, (unsigned long long)expect,
			(unsigned long long)(data_size - expect));
		goto out;
	}

	f->by_name = tern_malloc((f->n ? f->n : 1) * sizeof *f->by_name);
	if (!f->by_name) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < f->n; i++)
		f->by_name[i] = &f->t[i];
	qsort(f->by_name, f->n, sizeof *f->by_name, cmp_name);
out:
	json_decref(root);
	return st;
}

void tern_st_close(struct tern_st_file *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++)
		free((char *)f->t[i].name);
	for (size_t i = 0; i < f->n_meta; i++) {
		free(f->meta[i].key);
		free(f->meta[i].value);
	}
	free(f->t);
	free(f->by_name);
	free(f->meta);
	if (f->map)
		munmap(f->map, (size_t)f->size);
	free(f->path);
	free(f);
}

static struct tern_st_file *file_new(const char *path)
{
	struct tern_st_file *f = tern_calloc(1, sizeof *f);
	if (!f)
		return NULL;
	f->path = dup_str(path);
	if (!f->path) {
		free(f);
		return NULL;
	}
	return f;
}

enum tern_status tern_st_parse(const void *buf, size_t size, const char *label, struct tern_st_file **out)
{
	*out = NULL;
	if (!buf && size)
		return tern_fail(TERN_E_INVALID, "tern_st_parse: NULL buffer");
	struct tern_st_file *f = file_new(label ? label : "<memory>");
	if (!f)
		return TERN_E_NOMEM;
	f->base = buf;
	f->size = size;
	enum tern_status st = parse_header(f);
	if (st) {
		tern_st_close(f);
		return st;
	}
	*out = f;
	return TERN_OK;
}

enum tern_status tern_st_open(const char *path, struct tern_st_file **out)
{
	enum tern_status st = TERN_OK;
	struct tern_st_file *f = NULL;
	struct stat sb;
	*out = NULL;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fd, &sb)) {
		st = tern_fail(TERN_E_IO, "%s: cannot stat: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(sb.st_mode)) {
		st = tern_fail(TERN_E_IO, "%s: not a regular file", path);
		goto out;
	}
	f = file_new(path);
	if (!f) {
		st = TERN_E_NOMEM;
		goto out;
	}
	f->size = (uint64_t)sb.st_size;
	if (f->size >= 8) {
		if ((uint64_t)(size_t)f->size != f->size) {
			st = tern_fail(TERN_E_UNSUPPORTED, "%s: file too large to map", path);
			goto out;
		}
		void *p = mmap(NULL, (size_t)f->size, PROT_READ, MAP_PRIVATE, fd, 0);
		if (p == MAP_FAILED) {
			st = tern_fail(TERN_E_IO, "%s: cannot map %llu bytes: %s", path,
				       (unsigned long long)f->size, strerror(errno));
			goto out;
		}
		f->map = p;
		f->base = p;
	}
	st = parse_header(f);
out:
	close(fd);
	if (st) {
		tern_st_close(f);
		return st;
	}
	*out = f;
	return TERN_OK;
}

const char *tern_st_file_path(const struct tern_st_file *f) { return f->path; }
uint64_t tern_st_file_size(const struct tern_st_file *f) { return f->size; }
uint64_t tern_st_file_header_len(const struct tern_st_file *f) { return f->header_len; }
size_t tern_st_file_count(const struct tern_st_file *f) { return f->n; }

const struct tern_st_tensor *tern_st_file_tensor(const struct tern_st_file *f, size_t i)
{
	return i < f->n ? &f->t[i] : NULL;
}

const struct tern_st_tensor *tern_st_file_find(const struct tern_st_file *f, const char *name)
{
	return find_sorted(f->by_name, f->n, name);
}

const char *tern_st_file_metadata(const struct tern_st_file *f, const char *key)
{
	for (size_t i = 0; i < f->n_meta; i++)
		if (!strcmp(f->meta[i].key, key))
			return f->meta[i].value;
	return NULL;
}

size_t tern_st_file_metadata_count(const struct tern_st_file *f) { return f->n_meta; }

void tern_st_file_metadata_at(const struct tern_st_file *f, size_t i, const char **key, const char **value)
{
	*key = i < f->n_meta ? f->meta[i].key : NULL;
	*value = i < f->n_meta ? f->meta[i].value : NULL;
}

/* ---- model directories ---------------------------------------------------------------- */

static bool is_file(const char *path)
{
	struct stat sb;
	return !stat(path, &sb) && S_ISREG(sb.st_mode);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void free_names(char **v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

/* Appends a file opened from dir/name to m. */
static enum tern_status model_add_file(struct tern_st_model *m, const char *dir, const char *name)
{
	char *p = dir ? tern_path_join(dir, name) : dup_str(name);
	if (!p)
		return TERN_E_NOMEM;
	struct tern_st_file *f;
	enum tern_status st = tern_st_open(p, &f);
	free(p);
	if (st)
		return st;
	m->files[m->n_files++] = f;
	return TERN_OK;
}

static size_t model_file_index(const struct tern_st_model *m, const char *dir, const char *shard)
{
	size_t dl = strlen(dir);
	for (size_t i = 0; i < m->n_files; i++) {
		const char *p = m->files[i]->path;
		if (!strncmp(p, dir, dl) && p[dl] == '/' && !strcmp(p + dl + 1, shard))
			return i;
	}
	return (size_t)-1;
}

static const char *base_name(const char *path)
{
	const char *s = strrchr(path, '/');
	return s ? s + 1 : path;
}

/* Opens the shards named in index.json and checks both directions of the mapping. */
static enum tern_status open_indexed(struct tern_st_model *m, const char *dir, const char *index_path)
{
	enum tern_status st = TERN_OK;
	json_t *root = NULL;
	char **shards = NULL;
	size_t n_shards = 0;
	char *text = NULL;
	char b[128], b2[128], b3[128];
	FILE *fp = fopen(index_path, "rb");
	if (!fp)
		return tern_fail(TERN_E_IO, "%s: cannot open: %s", index_path, strerror(errno));
	struct stat sb;
	if (fstat(fileno(fp), &sb) || sb.st_size > MAX_INDEX_BYTES) {
		st = tern_fail(TERN_E_FORMAT, "%s: cannot stat, or larger than %u bytes", index_path,
			       MAX_INDEX_BYTES);
		goto out;
	}
	size_t len = (size_t)sb.st_size;
	text = tern_malloc(len ? len : 1);
	if (!text) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if (fread(text, 1, len, fp) != len) {
		st = tern_fail(TERN_E_IO, "%s: read failed", index_path);
		goto out;
	}
	json_error_t err;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
	if (!root) {
		st = tern_fail(TERN_E_FORMAT, "%s: not valid JSON: %s (line %d, column %d)", index_path,
			       show(err.text, b, sizeof b), err.line, err.column);
		goto out;
	}
	json_t *wm = json_object_get(root, "weight_map");
	if (!json_is_object(root) || !json_is_object(wm)) {
		st = tern_fail(TERN_E_FORMAT,
			       "%s: missing object \"weight_map\" ({\"tensor name\": \"shard file\"})",
			       index_path);
		goto out;
	}

	/* Distinct shard names, sorted. */
	size_t n_map = json_object_size(wm);
	shards = tern_calloc(n_map ? n_map : 1, sizeof *shards);
	if (!shards) {
		st = TERN_E_NOMEM;
		goto out;
	}
	const char *key;
	json_t *v;
	json_object_foreach(wm, key, v)
	{
		if (!json_is_string(v)) {
			st = tern_fail(TERN_E_FORMAT,
				       "%s: weight_map[\"%s\"] must be a file name string, got %s",
				       index_path, show(key, b, sizeof b), json_kind(v));
			goto out;
		}
		const char *s = json_string_value(v);
		if (!*s || strchr(s, '/') || !strcmp(s, ".") || !strcmp(s, "..")) {
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: weight_map[\"%s\"] = \"%s\": a shard must be a plain file name in the "
				"model directory",
				index_path, show(key, b, sizeof b), show(s, b2, sizeof b2));
			goto out;
		}
		bool seen = false;
		for (size_t i = 0; i < n_shards && !seen; i++)
			seen = !strcmp(shards[i], s);
		if (!seen) {
			if (!(shards[n_shards] = dup_str(s))) {
				st = TERN_E_NOMEM;
				goto out;
			}
			n_shards++;
		}
	}
	qsort(shards, n_shards, sizeof *shards, cmp_str);

	m->files = tern_calloc(n_shards ? n_shards : 1, sizeof *m->files);
	if (!m->files) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n_shards; i++) {
		char *p = tern_path_join(dir, shards[i]);
		if (!p) {
			st = TERN_E_NOMEM;
			goto out;
		}
		bool ok = is_file(p);
		free(p);
		if (!ok) {
			st = tern_fail(TERN_E_IO, "%s: names shard %s, which is missing from %s", index_path,
				       show(shards[i], b, sizeof b), dir);
			goto out;
		}
		if ((st = model_add_file(m, dir, shards[i])))
			goto out;
	}

	/* Every listed tensor is in its shard. */
	json_object_foreach(wm, key, v)
	{
		const char *s = json_string_value(v);
		size_t fi = model_file_index(m, dir, s);
		if (fi == (size_t)-1 || !tern_st_file_find(m->files[fi], key)) {
			st = tern_fail(TERN_E_FORMAT,
				       "%s: lists tensor \"%s\" in shard %s, which has no such tensor",
				       index_path, show(key, b, sizeof b), show(s, b2, sizeof b2));
			goto out;
		}
	}
	/* Every tensor of a shard is listed for that shard. */
	for (size_t i = 0; i < m->n_files; i++) {
		const struct tern_st_file *f = m->files[i];
		const char *fname = base_name(f->path);
		for (size_t j = 0; j < f->n; j++) {
			json_t *s = json_object_get(wm, f->t[j].name);
			if (!s) {
				st = tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\" in %s is not listed in %s",
					       f->path, show(f->t[j].name, b, sizeof b), fname, INDEX_NAME);
				goto out;
			}
			if (strcmp(json_string_value(s), fname)) {
				st = tern_fail(
					TERN_E_FORMAT,
					"%s: tensor \"%s\" appears in both %s and %s (the index maps it to %s)",
					dir, show(f->t[j].name, b, sizeof b),
					show(json_string_value(s), b2, sizeof b2), fname,
					show(json_string_value(s), b3, sizeof b3));
				goto out;
			}
		}
	}

	json_t *meta = json_object_get(root, "metadata");
	json_t *ts = json_is_object(meta) ? json_object_get(meta, "total_size") : NULL;
	if (ts) {
		uint64_t total = 0;
		for (size_t i = 0; i < m->n_files; i++)
			for (size_t j = 0; j < m->files[i]->n; j++)
				total += m->files[i]->t[j].nbytes;
		if (!json_is_integer(ts) || json_integer_value(ts) < 0 ||
		    (uint64_t)json_integer_value(ts) != total)
			tern_log(TERN_LOG_DEBUG,
				 "%s: metadata.total_size differs from the tensors' %llu bytes", index_path,
				 (unsigned long long)total);
	}
out:
	if (fp)
		fclose(fp);
	free(text);
	json_decref(root);
	free_names(shards, n_shards);
	return st;
}

/* Every *.safetensors in dir, sorted by name. */
static enum tern_status open_all(struct tern_st_model *m, const char *dir)
{
	enum tern_status st = TERN_OK;
	char **names = NULL;
	size_t n = 0, cap = 0;
	DIR *d = opendir(dir);
	if (!d)
		return tern_fail(TERN_E_IO, "%s: cannot open directory: %s", dir, strerror(errno));
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (l <= 12 || strcmp(de->d_name + l - 12, ".safetensors"))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 8;
			char **nv = realloc(names, cap * sizeof *names);
			if (!nv) {
				st = tern_fail(TERN_E_NOMEM, "out of host memory listing %s", dir);
				goto out;
			}
			names = nv;
		}
		if (!(names[n] = dup_str(de->d_name))) {
			st = TERN_E_NOMEM;
			goto out;
		}
		n++;
	}
	if (!n) {
		st = tern_fail(TERN_E_IO, "%s: no %s, %s or *.safetensors file", dir, INDEX_NAME,
			       SINGLE_NAME);
		goto out;
	}
	qsort(names, n, sizeof *names, cmp_str);
	m->files = tern_calloc(n, sizeof *m->files);
	if (!m->files) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		if ((st = model_add_file(m, dir, names[i])))
			goto out;
out:
	closedir(d);
	free_names(names, n);
	return st;
}

enum tern_status tern_st_model_open(const char *path, struct tern_st_model **out)
{
	enum tern_status st = TERN_OK;
	char *p = NULL;
	char b[128], b2[128], b3[128];
	*out = NULL;
	struct tern_st_model *m = tern_calloc(1, sizeof *m);
	if (!m)
		return TERN_E_NOMEM;
	/* Without trailing slashes, so that shard paths read dir/name. */
	size_t pl = strlen(path);
	while (pl > 1 && path[pl - 1] == '/')
		pl--;
	m->path = tern_malloc(pl + 1);
	if (!m->path) {
		st = TERN_E_NOMEM;
		goto out;
	}
	memcpy(m->path, path, pl);
	m->path[pl] = 0;

	struct stat sb;
	if (stat(m->path, &sb)) {
		st = tern_fail(TERN_E_IO, "%s: %s", m->path, strerror(errno));
		goto out;
	}
	if (S_ISREG(sb.st_mode)) {
		if (!(m->files = tern_calloc(1, sizeof *m->files))) {
			st = TERN_E_NOMEM;
			goto out;
		}
		st = model_add_file(m, NULL, m->path);
	} else {
		if (!(p = tern_path_join(m->path, INDEX_NAME))) {
			st = TERN_E_NOMEM;
			goto out;
		}
		if (is_file(p)) {
			st = open_indexed(m, m->path, p);
		} else {
			free(p);
			if (!(p = tern_path_join(m->path, SINGLE_NAME))) {
				st = TERN_E_NOMEM;
				goto out;
			}
			if (is_file(p)) {
				if (!(m->files = tern_calloc(1, sizeof *m->files))) {
					st = TERN_E_NOMEM;
					goto out;
				}
				st = model_add_file(m, m->path, SINGLE_NAME);
			} else {
				st = open_all(m, m->path);
			}
		}
	}
	if (st)
		goto out;

	size_t n = 0;
	for (size_t i = 0; i < m->n_files; i++)
		n += m->files[i]->n;
	m->by_name = tern_malloc((n ? n : 1) * sizeof *m->by_name);
	if (!m->by_name) {
		st = TERN_E_NOMEM;
		goto out;
	}
	for (size_t i = 0; i < m->n_files; i++)
		for (size_t j = 0; j < m->files[i]->n; j++) {
			m->by_name[m->n++] = &m->files[i]->t[j];
			m->data_bytes += m->files[i]->t[j].nbytes;
		}
	qsort(m->by_name, m->n, sizeof *m->by_name, cmp_name);
	for (size_t i = 1; i < m->n; i++)
		if (!strcmp(m->by_name[i - 1]->name, m->by_name[i]->name)) {
			st = tern_fail(TERN_E_FORMAT, "%s: tensor \"%s\" appears in both %s and %s", m->path,
				       show(m->by_name[i]->name, b, sizeof b),
				       show(base_name(m->by_name[i - 1]->file->path), b2, sizeof b2),
				       show(base_name(m->by_name[i]->file->path), b3, sizeof b3));
			goto out;
		}
out:
	free(p);
	if (st) {
		tern_st_model_close(m);
		return st;
	}
	*out = m;
	return TERN_OK;
}

void tern_st_model_close(struct tern_st_model *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_files; i++)
		tern_st_close(m->files[i]);
	free(m->files);
	free(m->by_name);
	free(m->path);
	free(m);
}

size_t tern_st_model_count(const struct tern_st_model *m) { return m->n; }

const struct tern_st_tensor *tern_st_model_tensor(const struct tern_st_model *m, size_t i)
{
	return i < m->n ? m->by_name[i] : NULL;
}

const struct tern_st_tensor *tern_st_model_find(const struct tern_st_model *m, const char *name)
{
	return find_sorted(m->by_name, m->n, name);
}

enum tern_status tern_st_model_get(const struct tern_st_model *m, const char *name,
				   const struct tern_st_tensor **out)
{
	char b[128];
	*out = tern_st_model_find(m, name);
	if (!*out)
		return tern_fail(TERN_E_FORMAT, "%s: tensor %s not found", m->path, show(name, b, sizeof b));
	return TERN_OK;
}

size_t tern_st_model_file_count(const struct tern_st_model *m) { return m->n_files; }

const struct tern_st_file *tern_st_model_file(const struct tern_st_model *m, size_t i)
{
	return i < m->n_files ? m->files[i] : NULL;
}

const char *tern_st_model_path(const struct tern_st_model *m) { return m->path; }
uint64_t tern_st_model_data_bytes(const struct tern_st_model *m) { return m->data_bytes; }
