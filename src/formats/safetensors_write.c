/* safetensors writer: header with "__metadata__": {"format": "pt"} first, tensors in the order
 * given, header padded with spaces to a multiple of 8, written to <path>.tmp.<pid> then fsync + rename. */
#define _POSIX_C_SOURCE 200809L
#include "formats/safetensors.h"

#include "core/core.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct tern_st_writer {
	char *path;
	char *tmp;
	int fd;
	uint64_t total;   /* data bytes declared by the header */
	uint64_t written; /* data bytes appended so far */
};

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Checks the descriptions and sets nbytes[i]; names are unique and valid. */
static enum tern_status check_descs(const char *path, const struct tern_st_desc *t, size_t n, bool need_data,
				    uint64_t *nbytes, uint64_t *total)
{
	enum tern_status st = TERN_OK;
	const char **names = tern_malloc((n ? n : 1) * sizeof *names);
	if (!names)
		return TERN_E_NOMEM;
	*total = 0;
	for (size_t i = 0; i < n; i++) {
		if (!t[i].name) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor %zu has no name", path, i);
			goto out;
		}
		if (!strcmp(t[i].name, "__metadata__")) {
			st = tern_fail(TERN_E_INVALID, "%s: a tensor may not be named __metadata__", path);
			goto out;
		}
		if ((unsigned)t[i].dtype >= TERN_ST_DTYPE_COUNT) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor \"%s\": bad dtype %d", path, t[i].name,
				       (int)t[i].dtype);
			goto out;
		}
		if (t[i].ndim < 0 || t[i].ndim > TERN_ST_MAX_DIMS) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor \"%s\": ndim %d out of range 0..%d", path,
				       t[i].name, t[i].ndim, TERN_ST_MAX_DIMS);
			goto out;
		}
		uint64_t numel = 1;
		bool overflow = false, zero = false;
		for (int d = 0; d < t[i].ndim; d++) {
			int64_t s = t[i].shape[d];
			if (s < 0) {
				st = tern_fail(TERN_E_INVALID,
					       "%s: tensor \"%s\": shape[%d] = %lld is negative", path,
					       t[i].name, d, (long long)s);
				goto out;
			}
			if (s == 0)
				zero = true;
			else if (!overflow && numel > (uint64_t)INT64_MAX / (uint64_t)s)
				overflow = true;
			else if (!overflow)
				numel *= (uint64_t)s;
		}
		if (zero)
			numel = 0, overflow = false;
		size_t es = tern_st_dtype_size(t[i].dtype);
		if (overflow || numel > (uint64_t)INT64_MAX / es) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor \"%s\": too many elements", path,
				       t[i].name);
			goto out;
		}
		nbytes[i] = numel * es;
		if (need_data && nbytes[i] && !t[i].data) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor \"%s\": no data", path, t[i].name);
			goto out;
		}
		if (*total > (uint64_t)INT64_MAX - nbytes[i]) {
			st = tern_fail(TERN_E_INVALID, "%s: tensors too large", path);
			goto out;
		}
		*total += nbytes[i];
		names[i] = t[i].name;
	}
	qsort(names, n, sizeof *names, cmp_str);
	for (size_t i = 1; i < n; i++)
		if (!strcmp(names[i - 1], names[i])) {
			st = tern_fail(TERN_E_INVALID, "%s: duplicate tensor name \"%s\"", path, names[i]);
			goto out;
		}
out:
	free((void *)names);
	return st;
}

/* The JSON header, padded with spaces so its length is a multiple of 8. */
static enum tern_status make_header(const char *path, const struct tern_st_desc *t, size_t n,
				    const uint64_t *nbytes, const struct tern_st_kv *meta, size_t n_meta,
				    char **out, size_t *out_len)
{
	enum tern_status st = TERN_OK;
	char *text = NULL;
	json_t *root = json_object(), *m = json_object();
	if (!root || !m || json_object_set(root, "__metadata__", m) ||
	    json_object_set_new(m, "format", json_string("pt"))) {
		st = tern_fail(TERN_E_NOMEM, "%s: out of memory building the header", path);
		goto out;
	}
	for (size_t i = 0; i < n_meta; i++) {
		if (!meta[i].key || !meta[i].value) {
			st = tern_fail(TERN_E_INVALID, "%s: metadata entry %zu has a NULL key or value", path,
				       i);
			goto out;
		}
		if (json_object_get(m, meta[i].key)) {
			st = tern_fail(TERN_E_INVALID,
				       "%s: metadata key \"%s\" given twice (\"format\" is always \"pt\")",
				       path, meta[i].key);
			goto out;
		}
		json_t *v = json_string(meta[i].value);
		if (!v || json_object_set_new(m, meta[i].key, v)) {
			st = tern_fail(TERN_E_INVALID,
				       "%s: metadata key \"%s\": key or value is not valid UTF-8", path,
				       meta[i].key);
			goto out;
		}
	}
	uint64_t off = 0;
	for (size_t i = 0; i < n; i++) {
		json_t *e = json_object(), *shape = json_array(), *offs = json_array();
		json_t *dt = json_string(tern_st_dtype_name(t[i].dtype));
		bool bad = !e || !shape || !offs || !dt;
		if (!bad) {
			json_object_set_new(e, "dtype", dt);
			dt = NULL;
			for (int d = 0; d < t[i].ndim && !bad; d++)
				bad = json_array_append_new(shape, json_integer(t[i].shape[d])) != 0;
			bad = bad || json_array_append_new(offs, json_integer((json_int_t)off)) ||
			      json_array_append_new(offs, json_integer((json_int_t)(off + nbytes[i])));
		}
		if (!bad) {
			json_object_set_new(e, "shape", shape);
			json_object_set_new(e, "data_offsets", offs);
			shape = offs = NULL;
		}
		json_decref(shape);
		json_decref(offs);
		json_decref(dt);
		if (bad) {
			json_decref(e);
			st = tern_fail(TERN_E_NOMEM, "%s: out of memory building the header", path);
			goto out;
		}
		if (json_object_set_new(root, t[i].name, e)) {
			st = tern_fail(TERN_E_INVALID, "%s: tensor name \"%s\" is not valid UTF-8", path,
				       t[i].name);
			goto out;
		}
		off += nbytes[i];
	}
	text = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!text) {
		st = tern_fail(TERN_E_NOMEM, "%s: out of memory encoding the header", path);
		goto out;
	}
	size_t len = strlen(text), padded = tern_align_up(len, 8);
	if (padded > TERN_ST_MAX_HEADER) {
		st = tern_fail(TERN_E_INVALID, "%s: header of %zu bytes is over the format's limit of %llu",
			       path, padded, TERN_ST_MAX_HEADER);
		goto out;
	}
	*out = tern_malloc(padded);
	if (!*out) {
		st = TERN_E_NOMEM;
		goto out;
	}
	memcpy(*out, text, len);
	memset(*out + len, ' ', padded - len);
	*out_len = padded;
out:
	free(text);
	json_decref(m);
	json_decref(root);
	return st;
}

static enum tern_status write_all(struct tern_st_writer *w, const void *data, size_t bytes)
{
	const char *p = data;
	while (bytes) {
		size_t chunk = bytes > (1u << 30) ? (1u << 30) : bytes;
		ssize_t r = write(w->fd, p, chunk);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return tern_fail(TERN_E_IO, "%s: write failed: %s", w->tmp,
					 r < 0 ? strerror(errno) : "no progress");
		p += r;
		bytes -= (size_t)r;
	}
	return TERN_OK;
}

void tern_st_writer_abort(struct tern_st_writer *w)
{
	if (!w)
		return;
	if (w->fd >= 0) {
		close(w->fd);
		unlink(w->tmp);
	}
	free(w->path);
	free(w->tmp);
	free(w);
}

static enum tern_status begin(const char *path, const struct tern_st_desc *tensors, size_t n,
			      const struct tern_st_kv *meta, size_t n_meta, bool need_data,
			      struct tern_st_writer **out)
{
	enum tern_status st = TERN_OK;
	uint64_t *nbytes = NULL;
	char *header = NULL;
	size_t hl = 0;
	*out = NULL;
	if (!path || (n && !tensors) || (n_meta && !meta))
		return tern_fail(TERN_E_INVALID, "tern_st_write: NULL argument");
	struct tern_st_writer *w = tern_calloc(1, sizeof *w);
	if (!w)
		return TERN_E_NOMEM;
	w->fd = -1;
	size_t pl = strlen(path);
	w->path = tern_malloc(pl + 1);
	w->tmp = tern_malloc(pl + 32);
	nbytes = tern_malloc((n ? n : 1) * sizeof *nbytes);
	if (!w->path || !w->tmp || !nbytes) {
		st = TERN_E_NOMEM;
		goto out;
	}
	memcpy(w->path, path, pl + 1);
	snprintf(w->tmp, pl + 32, "%s.tmp.%ld", path, (long)getpid());
	if ((st = check_descs(path, tensors, n, need_data, nbytes, &w->total)))
		goto out;
	if ((st = make_header(path, tensors, n, nbytes, meta, n_meta, &header, &hl)))
		goto out;
	w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (w->fd < 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot create: %s", w->tmp, strerror(errno));
		goto out;
	}
	uint8_t len[8];
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)((uint64_t)hl >> (8 * i));
	if ((st = write_all(w, len, 8)) || (st = write_all(w, header, hl)))
		goto out;
out:
	free(nbytes);
	free(header);
	if (st) {
		tern_st_writer_abort(w);
		return st;
	}
	*out = w;
	return TERN_OK;
}

enum tern_status tern_st_writer_begin(const char *path, const struct tern_st_desc *tensors, size_t n,
				      const struct tern_st_kv *meta, size_t n_meta,
				      struct tern_st_writer **out)
{
	return begin(path, tensors, n, meta, n_meta, false, out);
}

enum tern_status tern_st_writer_append(struct tern_st_writer *w, const void *data, size_t bytes)
{
	if (w->fd < 0)
		return tern_fail(TERN_E_INVALID, "%s: writer already failed", w->path);
	if (bytes > w->total - w->written)
		return tern_fail(TERN_E_INVALID, "%s: %llu more data bytes than the header declares", w->path,
				 (unsigned long long)(bytes - (w->total - w->written)));
	enum tern_status st = write_all(w, data, bytes);
	if (st)
		return st;
	w->written += bytes;
	return TERN_OK;
}

/* fsync the directory holding path, so the rename itself is durable. */
static enum tern_status sync_dir(const char *path)
{
	const char *slash = strrchr(path, '/');
	char *dir = NULL;
	if (slash) {
		size_t l = slash == path ? 1 : (size_t)(slash - path);
		if (!(dir = tern_malloc(l + 1)))
			return TERN_E_NOMEM;
		memcpy(dir, path, l);
		dir[l] = 0;
	}
	int fd = open(dir ? dir : ".", O_RDONLY | O_CLOEXEC);
	free(dir);
	if (fd < 0)
		return TERN_OK; /* best effort: the data itself is synced */
	fsync(fd);
	close(fd);
	return TERN_OK;
}

enum tern_status tern_st_writer_finish(struct tern_st_writer *w)
{
	enum tern_status st = TERN_OK;
	if (w->fd < 0) {
		st = tern_fail(TERN_E_INVALID, "%s: writer already failed", w->path);
		goto out;
	}
	if (w->written != w->total) {
		st = tern_fail(TERN_E_INVALID, "%s: %llu data bytes written, the header declares %llu",
			       w->path, (unsigned long long)w->written, (unsigned long long)w->total);
		goto out;
	}
	if (fsync(w->fd)) {
		st = tern_fail(TERN_E_IO, "%s: fsync failed: %s", w->tmp, strerror(errno));
		goto out;
	}
	int fd = w->fd;
	w->fd = -1;
	if (close(fd)) {
		st = tern_fail(TERN_E_IO, "%s: close failed: %s", w->tmp, strerror(errno));
		unlink(w->tmp);
		goto out;
	}
	if (rename(w->tmp, w->path)) {
		st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", w->path, w->tmp,
			       strerror(errno));
		unlink(w->tmp);
		goto out;
	}
	st = sync_dir(w->path);
out:
	tern_st_writer_abort(w);
	return st;
}

enum tern_status tern_st_write(const char *path, const struct tern_st_desc *tensors, size_t n,
			       const struct tern_st_kv *meta, size_t n_meta)
{
	struct tern_st_writer *w;
	enum tern_status st = begin(path, tensors, n, meta, n_meta, true, &w);
	if (st)
		return st;
	for (size_t i = 0; i < n; i++) {
		size_t es = tern_st_dtype_size(tensors[i].dtype);
		uint64_t bytes = es;
		for (int d = 0; d < tensors[i].ndim; d++)
			bytes *= (uint64_t)tensors[i].shape[d];
		if (bytes && (st = tern_st_writer_append(w, tensors[i].data, (size_t)bytes))) {
			tern_st_writer_abort(w);
			return st;
		}
	}
	return tern_st_writer_finish(w);
}
