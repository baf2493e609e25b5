/* The pack file: a converted model (quantized projections + everything else) in one versioned,
 * mmappable file, written once to the offload directory and reused while its key matches.
 *
 * All integers little-endian. Version 1:
 *
 *	offset  size  meaning
 *	---- header (128 bytes) ----
 *	0       8     magic "TERNPACK"
 *	8       4     u32 version = 1
 *	12      4     u32 header size = 128
 *	16      8     u64 file size
 *	24      8     u64 checksum: FNV-1a 64 of bytes [0, meta_size) with this field read as 0
 *	32      8     u64 meta_size: bytes of header + TOC + group table + key
 *	40      4     u32 n_tensors
 *	44      4     u32 n_groups = L + 1 (group g < L: layer g; group L: embeddings, final norm,
 *	              lm_head)
 *	48      8     u64 TOC offset (128)
 *	56      8     u64 group table offset
 *	64      8     u64 key offset
 *	72      8     u64 key size
 *	80      48    reserved, 0
 *	---- TOC: n_tensors records of 256 bytes ----
 *	+0      128   name, UTF-8, NUL-terminated and NUL-padded (the Hugging Face tensor name)
 *	+128    4     u32 dtype (enum tern_dtype: 0 f32, 1 f16, 2 bf16, 3 nf4, 4 nf4-dq, 5 ternary)
 *	+132    4     u32 ndim (1 or 2)
 *	+136    16    i64 shape[2], torch order: [O, I] for matrices, [n, 1] for vectors
 *	+152    4     i32 layer (-1: global)
 *	+156    4     u32 role (enum tern_role)
 *	+160    4     u32 blocksize (nf4, nf4-dq), else 0
 *	+164    4     f32 nested offset (nf4-dq), else 0
 *	+168    4     f32 scale (ternary), else 0
 *	+172    4     u32 source dtype (f32, f16, bf16: what the checkpoint had)
 *	+176    48    u64 offset, u64 size of the three parts: data, absmax, nested (absolute file
 *	              offsets; unused parts 0, 0). Parts by dtype as struct tern_weight describes
 *	              them (src/backend/backend.h): nf4 data (n+1)/2 B, absmax f32 [nb]; nf4-dq
 *	              absmax u8 [nb], nested f32 [ceil(nb/256)]; ternary data O*ceil(I/16) u32.
 *	+224    32    reserved, 0
 *	---- group table: n_groups records of 16 bytes ----
 *	+0      8     u64 offset (a multiple of 4096)
 *	+8      8     u64 size
 *	---- key: key size bytes of JSON text (what the pack was made from; see model.c) ----
 *	---- data: from align_up(meta_size, 4096) ----
 *	each group contiguous and page-aligned; each part inside its tensor's group, 256-aligned.
 *
 * A reader validates everything before any use: magic, version (a mismatch says how to
 * regenerate), sizes, checksum, every offset and size in bounds, part sizes against dtype and
 * shape, parts inside their group, no two ranges overlapping, unique names. The checksum covers
 * the metadata only (hashing gigabytes of weights on each load would cost seconds). */
#ifndef TERN_MODEL_PACK_H
#define TERN_MODEL_PACK_H

#include "backend/backend.h"
#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_PACK_MAGIC "TERNPACK"
#define TERN_PACK_VERSION 1
#define TERN_PACK_HEADER 128
#define TERN_PACK_RECORD 256
#define TERN_PACK_NAME 128
#define TERN_PACK_PAGE 4096
#define TERN_PACK_ALIGN 256
#define TERN_PACK_MAX_TENSORS 1000000
#define TERN_PACK_MAX_GROUPS 4097

enum { TERN_PART_DATA, TERN_PART_ABSMAX, TERN_PART_NESTED, TERN_PART_COUNT };

struct tern_pack_tensor {
	char name[TERN_PACK_NAME];
	enum tern_dtype dtype;
	enum tern_dtype src_dtype;
	int ndim;
	int64_t shape[2]; /* [O, I]; vectors [n, 1] */
	int layer;        /* -1: global */
	uint32_t role;
	int blocksize;
	float offset, scale;
	uint64_t off[TERN_PART_COUNT], size[TERN_PART_COUNT];
};

struct tern_pack_group {
	uint64_t off, size;
};

struct tern_pack {
	char path[4096]; /* file path or label */
	const uint8_t *base;
	uint64_t size;
	int owner; /* 0: borrowed buffer, 1: mmap, 2: malloc */
	uint32_t n_tensors, n_groups;
	struct tern_pack_tensor *t;
	struct tern_pack_group *groups;
	char *key; /* NUL-terminated copy */
};

/* Validates a pack image in memory (nothing copied: the pack borrows buf). */
enum tern_status tern_pack_parse(const void *buf, size_t size, const char *label, struct tern_pack **out);
/* Maps path read-only and validates it. */
enum tern_status tern_pack_open(const char *path, struct tern_pack **out);
void tern_pack_free(struct tern_pack *p);

/* Byte sizes of the parts of a tensor of dtype dt, shape [O, I] (vectors: I = 1). */
void tern_pack_part_sizes(enum tern_dtype dt, int64_t O, int64_t I, int blocksize, uint64_t size[3]);

/* ---- writing ----
 * 1. fill t[] (name, dtype, src_dtype, ndim, shape, layer, role, blocksize) for every tensor;
 * 2. tern_pack_build_begin computes the layout (off/size), creates "<path>.tmp.<pid>" with its
 *    full size reserved (ENOSPC is a clear error) or, with path NULL, a memory image, and writes
 *    the header; *data receives the writable image;
 * 3. the caller writes each part at data + t[i].off[k] and sets offset/scale;
 * 4. tern_pack_build_finish writes the TOC and checksum, syncs, renames over path and returns
 *    the validated read-only pack. tern_pack_build_abort removes the temporary file. */
struct tern_pack_builder;
enum tern_status tern_pack_build_begin(const char *path, struct tern_pack_tensor *t, uint32_t n,
				       uint32_t n_groups, const char *key, struct tern_pack_builder **out,
				       uint8_t **data);
enum tern_status tern_pack_build_finish(struct tern_pack_builder *b, struct tern_pack **out);
void tern_pack_build_abort(struct tern_pack_builder *b);

/* The part k of tensor t as a pointer into the image. */
static inline const uint8_t *tern_pack_part(const struct tern_pack *p, const struct tern_pack_tensor *t,
					    int k)
{
	return p->base + t->off[k];
}

/* A struct tern_weight for tensor t (2-d) whose group was uploaded whole to `group` (views are
 * relative to the group's first byte). */
void tern_pack_weight(const struct tern_pack *p, const struct tern_pack_tensor *t, struct tern_view group,
		      struct tern_weight *w);

/* FNV-1a 64. */
uint64_t tern_fnv1a(uint64_t h, const void *data, size_t n);
#define TERN_FNV_INIT 0xcbf29ce484222325ull

#endif
