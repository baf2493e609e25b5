/* safetensors: read (mmap, fully validated), sharded model directories, atomic write.
 *
 * File layout (shared reference formats.md §2):
 *
 *	offset     size  meaning
 *	0          8     N, u64 little-endian, N <= 100,000,000
 *	8          N     UTF-8 JSON object: {"name": {"dtype": "F16", "shape": [..],
 *	                 "data_offsets": [begin, end]}, ..., "__metadata__": {"k": "v"}};
 *	                 starts with '{', may be padded at the end with spaces
 *	8 + N      ...   data section; tensor bytes at [begin, end) relative to 8 + N,
 *	                 little-endian, C order (shape[0] outermost, shape[ndim-1] fastest)
 *
 * A reader enforces every rule: no duplicate names; dtype known and supported; shape entries
 * non-negative integers; end - begin == numel x element size; tensors sorted by offset cover the
 * data section exactly from 0 (no hole, no overlap); 8 + N + last_end == file size; 0-d and empty
 * tensors are legal; __metadata__ maps strings to strings. Unknown keys inside a tensor entry are
 * ignored (as the reference Rust reader does). A failure is one line naming the file, the tensor
 * or key, the offending value and what was expected: TERN_E_FORMAT for a malformed file,
 * TERN_E_UNSUPPORTED for a valid file with a dtype tern does not handle (or more than
 * TERN_ST_MAX_DIMS dimensions), TERN_E_IO when the file cannot be opened or mapped.
 *
 * Tensor data pointers point into the read-only mapping; they are 8-aligned when the file was
 * written with a padded header (tern, the official library) but need not be for other writers,
 * so callers that care memcpy or check. Everything a file or model returns stays valid until it
 * is closed. */
#ifndef TERN_FORMATS_SAFETENSORS_H
#define TERN_FORMATS_SAFETENSORS_H

#include "tern/tern.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_ST_MAX_HEADER 100000000ull /* largest N a reader accepts */
#define TERN_ST_MAX_DIMS 8              /* tern's limit on dimensions per tensor */

/* The dtypes tern reads and writes. Known but unsupported names (C64, F8_E5M2, F8_E4M3,
 * F8_E8M0, F6_E2M3, F6_E3M2, F4) are rejected with "unsupported dtype X", others with
 * "unknown dtype X". */
enum tern_st_dtype {
	TERN_ST_BOOL,
	TERN_ST_U8,
	TERN_ST_I8,
	TERN_ST_I16,
	TERN_ST_U16,
	TERN_ST_F16,
	TERN_ST_BF16,
	TERN_ST_I32,
	TERN_ST_U32,
	TERN_ST_F32,
	TERN_ST_I64,
	TERN_ST_U64,
	TERN_ST_F64,
	TERN_ST_DTYPE_COUNT
};

/* The file's spelling ("F16", "BF16", ...); "?" for an out-of-range value. */
const char *tern_st_dtype_name(enum tern_st_dtype dt);
/* Bytes per element (BOOL is 1); 0 for an out-of-range value. */
size_t tern_st_dtype_size(enum tern_st_dtype dt);
/* Parses a dtype string. TERN_E_UNSUPPORTED for known-but-unsupported names, TERN_E_FORMAT
 * for unknown ones; the message names the string (no file: callers add context). */
enum tern_status tern_st_dtype_parse(const char *s, enum tern_st_dtype *out);

struct tern_st_file;
struct tern_st_model;

/* One tensor of a file (read side). All pointers are owned by the file. */
struct tern_st_tensor {
	const char *name;
	enum tern_st_dtype dtype;
	int ndim;                        /* 0..TERN_ST_MAX_DIMS; 0 = scalar (numel 1) */
	int64_t shape[TERN_ST_MAX_DIMS]; /* file order: shape[0] outermost; unused entries 0 */
	int64_t numel;                   /* product of shape (1 for 0-d, 0 if any dim is 0) */
	uint64_t nbytes;                 /* numel x element size == end - begin */
	uint64_t offset;                 /* absolute byte offset in the file: 8 + N + begin */
	const void *data;                /* nbytes bytes in the mapping (or the parsed buffer) */
	const struct tern_st_file *file; /* the file it came from (tern_st_file_path) */
};

/* ---- one file ------------------------------------------------------------------------- */

/* Maps `path` read-only and validates it. *out is NULL on failure. */
enum tern_status tern_st_open(const char *path, struct tern_st_file **out);

/* Validates a file image held in memory (tests, fuzzing). Nothing is copied: tensor data points
 * into buf, which must outlive the file object. `label` names it in messages (NULL: "<memory>"). */
enum tern_status tern_st_parse(const void *buf, size_t size, const char *label, struct tern_st_file **out);

/* Unmaps and frees; NULL is fine. */
void tern_st_close(struct tern_st_file *f);

const char *tern_st_file_path(const struct tern_st_file *f); /* as given (or the label) */
uint64_t tern_st_file_size(const struct tern_st_file *f);
uint64_t tern_st_file_header_len(const struct tern_st_file *f); /* N */

/* Tensors in data-offset order, i = 0..count-1. */
size_t tern_st_file_count(const struct tern_st_file *f);
const struct tern_st_tensor *tern_st_file_tensor(const struct tern_st_file *f, size_t i);
/* By exact name; NULL if absent (no error is set). */
const struct tern_st_tensor *tern_st_file_find(const struct tern_st_file *f, const char *name);

/* __metadata__: the value for key or NULL; and iteration in file order. */
const char *tern_st_file_metadata(const struct tern_st_file *f, const char *key);
size_t tern_st_file_metadata_count(const struct tern_st_file *f);
void tern_st_file_metadata_at(const struct tern_st_file *f, size_t i, const char **key, const char **value);

/* ---- a model directory ---------------------------------------------------------------- */

/* Opens the tensors of a Hugging Face model directory:
 *   1. `model.safetensors.index.json` if present: {"metadata": {"total_size": N}, "weight_map":
 *      {name: shard}}; each shard named there is opened once (a shard name must be a plain file
 *      name in `dir`); every listed tensor must be in its shard and every tensor of a shard must
 *      be listed for that shard;
 *   2. else `model.safetensors`;
 *   3. else every `*.safetensors` in dir (sorted by file name).
 * `path` may also be a single .safetensors file. A tensor name found in two files is an error
 * naming both. total_size is not enforced (HF writers disagree on it); a mismatch is logged at
 * debug level. */
enum tern_status tern_st_model_open(const char *path, struct tern_st_model **out);
void tern_st_model_close(struct tern_st_model *m);

/* Tensors across all files, sorted by name (strcmp), i = 0..count-1. */
size_t tern_st_model_count(const struct tern_st_model *m);
const struct tern_st_tensor *tern_st_model_tensor(const struct tern_st_model *m, size_t i);
/* By exact name (binary search); NULL if absent (no error is set). */
const struct tern_st_tensor *tern_st_model_find(const struct tern_st_model *m, const char *name);
/* Same, but a missing tensor fails with TERN_E_FORMAT "<dir>: tensor NAME not found". */
enum tern_status tern_st_model_get(const struct tern_st_model *m, const char *name,
				   const struct tern_st_tensor **out);

/* The files opened, in the order above; the directory (or file) given to open. */
size_t tern_st_model_file_count(const struct tern_st_model *m);
const struct tern_st_file *tern_st_model_file(const struct tern_st_model *m, size_t i);
const char *tern_st_model_path(const struct tern_st_model *m);
/* Sum of nbytes over all tensors. */
uint64_t tern_st_model_data_bytes(const struct tern_st_model *m);

/* ---- writing -------------------------------------------------------------------------- */

/* One tensor to write. data: numel x element size bytes (may be NULL when that is 0; ignored by
 * the streaming writer). */
struct tern_st_desc {
	const char *name;
	enum tern_st_dtype dtype;
	int ndim;
	int64_t shape[TERN_ST_MAX_DIMS]; /* shape[0] outermost */
	const void *data;
};

/* Extra __metadata__ entries (string to string). */
struct tern_st_kv {
	const char *key;
	const char *value;
};

/* Writes a complete file. Header: "__metadata__" first with "format": "pt" (always; an extra
 * entry may not use the key "format"), then the tensors in the order given; data in the same
 * order, back to back from offset 0; the header is padded with spaces so N % 8 == 0 (data starts
 * 8-aligned). Written to "<path>.tmp.<pid>", fsynced, renamed over path, directory fsynced: a failure
 * leaves no partial file at path (and removes the temporary). Errors name the path and the cause
 * (TERN_E_IO with strerror, e.g. "No space left on device"); bad descriptions (duplicate or
 * empty-pointer name, negative dim, bad dtype) are TERN_E_INVALID naming the tensor. */
enum tern_status tern_st_write(const char *path, const struct tern_st_desc *tensors, size_t n,
			       const struct tern_st_kv *meta, size_t n_meta);

/* Streaming form for data produced on the fly (e.g. quantizing a large model): begin writes the
 * header, append adds data bytes in tensor order (any chunking), finish checks that exactly the
 * declared number of bytes came, then syncs and renames. abort (or any failed call) removes the
 * temporary; after a failure only tern_st_writer_abort may be called. Both finish and abort free w. */
struct tern_st_writer;
enum tern_status tern_st_writer_begin(const char *path, const struct tern_st_desc *tensors, size_t n,
				      const struct tern_st_kv *meta, size_t n_meta,
				      struct tern_st_writer **out);
enum tern_status tern_st_writer_append(struct tern_st_writer *w, const void *data, size_t bytes);
enum tern_status tern_st_writer_finish(struct tern_st_writer *w);
void tern_st_writer_abort(struct tern_st_writer *w);

#endif
