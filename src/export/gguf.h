/* GGUF writer (version 3, little-endian), the file format of llama.cpp / ggml.
 *
 *	u32 magic "GGUF" (bytes 47 47 55 46), u32 version = 3, u64 n_tensors, u64 n_kv
 *	n_kv x { string key, u32 value type, value }
 *	n_tensors x { string name, u32 n_dims, u64 ne[n_dims] (ne[0] the fastest dimension, i.e.
 *	              torch shape reversed), u32 ggml type, u64 offset (from the data section) }
 *	zero padding to general.alignment (32 unless the key says otherwise)
 *	data section: each tensor at its offset, a multiple of the alignment, zero padding between
 * A string is u64 length + bytes (no NUL). An array value is u32 element type, u64 count, the
 * elements. Value types: u8 0, i8 1, u16 2, i16 3, u32 4, i32 5, f32 6, bool 7 (one byte),
 * string 8, array 9, u64 10, i64 11, f64 12. ggml types used: F32 0, F16 1, Q8_0 8, BF16 30;
 * Q8_0 blocks of 32 values: f16 d = max|x| / 127, then 32 int8 q = round(x / d).
 *
 * The header (metadata + tensor infos) is built in memory; tensor data is streamed in the order
 * the tensors were declared. The file is written as "<path>.tmp.<pid>", synced and renamed. */
#ifndef TERN_EXPORT_GGUF_H
#define TERN_EXPORT_GGUF_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_GGUF_MAGIC 0x46554747u
#define TERN_GGUF_VERSION 3
#define TERN_GGUF_ALIGN 32

enum tern_gguf_vtype {
	TERN_GV_U8 = 0,
	TERN_GV_I8 = 1,
	TERN_GV_U16 = 2,
	TERN_GV_I16 = 3,
	TERN_GV_U32 = 4,
	TERN_GV_I32 = 5,
	TERN_GV_F32 = 6,
	TERN_GV_BOOL = 7,
	TERN_GV_STRING = 8,
	TERN_GV_ARRAY = 9,
	TERN_GV_U64 = 10,
	TERN_GV_I64 = 11,
	TERN_GV_F64 = 12,
};

enum tern_ggml_type {
	TERN_GGML_F32 = 0,
	TERN_GGML_F16 = 1,
	TERN_GGML_Q8_0 = 8,
	TERN_GGML_Q4_K = 12,
	TERN_GGML_Q6_K = 14,
	TERN_GGML_BF16 = 30
};

#define TERN_Q8_0_BLOCK 32
#define TERN_Q8_0_BYTES 34
/* k-quants: super-blocks of 256 values.
 * Q4_K (144 bytes): f16 d, f16 dmin, u8 scales[12] (eight 6-bit scales and eight 6-bit mins of
 *   the 32-value sub-blocks: sub-block j < 4 scale = s[j] & 63, min = s[j + 4] & 63; j >= 4 scale
 *   = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4, min = (s[j + 4] >> 4) | (s[j] >> 6) << 4), u8 qs[128]
 *   (for each 64 values: 32 bytes, low nibbles the first 32, high nibbles the next 32);
 *   x = d * scale * q - dmin * min, q in 0..15.
 * Q6_K (210 bytes): u8 ql[128], u8 qh[64], i8 scales[16] (one per 16 values), f16 d; for each
 *   128 values (ql += 64, qh += 32, scales += 8), l < 32: q of value l is ql[l] & 15 | (qh[l] & 3)
 *   << 4, of l + 32 ql[l + 32] & 15 | (qh[l] >> 2 & 3) << 4, of l + 64 ql[l] >> 4 | (qh[l] >> 4 &
 *   3) << 4, of l + 96 ql[l + 32] >> 4 | (qh[l] >> 6) << 4; x = d * scales[k] * (q - 32).
 * tern picks each sub-block's scale and minimum from its range (min/max, not ggml's iterative
 * search): a valid encoding every reader decodes, a little less precise than llama-quantize's. */
#define TERN_QK_K 256
#define TERN_Q4_K_BYTES 144
#define TERN_Q6_K_BYTES 210

/* Bytes of a row of n values (n a multiple of 32 for Q8_0, of 256 for Q4_K and Q6_K). */
uint64_t tern_ggml_row_bytes(enum tern_ggml_type t, int64_t n);
/* Converts n fp32 values (n a multiple of 32 for Q8_0) to type t into dst. */
void tern_ggml_from_f32(enum tern_ggml_type t, const float *x, int64_t n, void *dst);

struct tern_gguf_writer;

enum tern_status tern_gguf_begin(const char *path, struct tern_gguf_writer **out);
void tern_gguf_kv_str(struct tern_gguf_writer *w, const char *key, const char *v);
void tern_gguf_kv_u32(struct tern_gguf_writer *w, const char *key, uint32_t v);
void tern_gguf_kv_i32(struct tern_gguf_writer *w, const char *key, int32_t v);
void tern_gguf_kv_f32(struct tern_gguf_writer *w, const char *key, float v);
void tern_gguf_kv_bool(struct tern_gguf_writer *w, const char *key, bool v);
/* Arrays: strings (len[i] bytes each; len NULL: NUL-terminated), i32, f32, u32. */
void tern_gguf_kv_arr_str(struct tern_gguf_writer *w, const char *key, const char *const *v,
			  const size_t *len, size_t n);
void tern_gguf_kv_arr_i32(struct tern_gguf_writer *w, const char *key, const int32_t *v, size_t n);
void tern_gguf_kv_arr_f32(struct tern_gguf_writer *w, const char *key, const float *v, size_t n);
/* Declares a tensor; ne in ggml order (ne[0] fastest). */
void tern_gguf_tensor(struct tern_gguf_writer *w, const char *name, int n_dims, const int64_t *ne,
		      enum tern_ggml_type type);
/* Writes the header; then each declared tensor's bytes are appended in order (any chunking). */
enum tern_status tern_gguf_write_header(struct tern_gguf_writer *w);
enum tern_status tern_gguf_append(struct tern_gguf_writer *w, const void *data, size_t bytes);
/* Checks that every tensor got its bytes, syncs, renames; frees w. */
enum tern_status tern_gguf_finish(struct tern_gguf_writer *w, uint64_t *file_bytes);
/* Removes the temporary file; frees w. NULL is fine. */
void tern_gguf_abort(struct tern_gguf_writer *w);

#endif
