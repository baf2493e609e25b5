/* tern — model directories: information, loading (quantize on load or load a bitsandbytes 4-bit
 * checkpoint as stored), the pack file and bitsandbytes export. Opaque handles only.
 *
 * A model directory is what Hugging Face save_pretrained writes: config.json and
 * model.safetensors (or shards with model.safetensors.index.json); tokenizer files optional.
 * Supported architectures: llama, mistral, qwen2, qwen3 (mixtral and bitnet: later issues). */
#ifndef TERN_MODEL_H
#define TERN_MODEL_H

#include "tern/tern.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The format of the projection weights (q, k, v, o, gate, up, down). Embeddings, norms, biases
 * and lm_head keep the checkpoint's 16/32-bit dtype. */
enum tern_base_format {
	TERN_FORMAT_AUTO,    /* bitsandbytes checkpoint: as stored; otherwise nf4-dq */
	TERN_FORMAT_NF4,     /* bitsandbytes NF4, fp32 absmax */
	TERN_FORMAT_NF4_DQ,  /* NF4 with double quantization */
	TERN_FORMAT_TERNARY, /* 2-bit absmean ternary */
	TERN_FORMAT_BF16,
	TERN_FORMAT_F16,
	TERN_FORMAT_F32,
	TERN_FORMAT_COUNT
};

/* "auto", "nf4", "nf4-dq", "ternary", "bf16", "f16", "f32". */
const char *tern_base_format_name(enum tern_base_format f);
/* Parses a name above; TERN_E_INVALID otherwise. */
enum tern_status tern_base_format_parse(const char *s, enum tern_base_format *out);

struct tern_model_info {
	char model_type[32];   /* "llama", ... */
	char dtype[16];        /* torch_dtype */
	char quantization[64]; /* "none", "bitsandbytes nf4", "bitsandbytes nf4 + double quant", ... */
	bool supported;        /* tern can load it (mixtral, bitnet: not yet) */
	int64_t L, D, F, H, Hkv, Dh, V, max_pos, E, top_k, sliding_window;
	double rms_eps, rope_theta;
	char rope[96]; /* "default", "llama3 factor 8 ..." */
	bool qkv_bias, o_bias, qk_norm, tied;
	/* Parameter counts. */
	uint64_t params_total, params_layer, params_proj_layer, params_embed, params_head;
	/* Bytes of the whole model with the projections in each format (index enum
	 * tern_base_format; [AUTO] unused); other tensors at 2 bytes, or 4 for f32. */
	uint64_t bytes[TERN_FORMAT_COUNT];
};

/* Reads <dir>/config.json (only) and fills *info. Fails for unknown or malformed configs; for
 * mixtral and bitnet it succeeds with supported = false. */
enum tern_status tern_model_info(const char *dir, struct tern_model_info *info);

struct tern_model_opts {
	enum tern_base_format format;
	int blocksize;         /* NF4 block size (power of two 32..4096); 0: 64 */
	const char *pack_path; /* NULL: convert into memory; else the pack file to reuse or (re)build */
	bool rebuild;          /* rebuild the pack file even when it is up to date */
};

/* What tern_model_check_weights found. */
struct tern_model_weights {
	bool present;     /* the directory holds safetensors weights (else nothing was checked) */
	size_t n_files;   /* safetensors files opened (shards) */
	size_t n_tensors; /* tensors across them */
	uint64_t bytes;   /* their data bytes */
	bool bnb;         /* bitsandbytes 4-bit projections */
};

/* Checks a model directory's weight files without converting anything: every safetensors header
 * (and the shard index), every tensor's data within its file, every tensor the architecture needs
 * present with the shape config.json implies and a float dtype (or a complete bitsandbytes 4-bit
 * set), nothing unexpected. A directory without safetensors files passes with present = false.
 * Fails with one line naming the file or tensor. */
enum tern_status tern_model_check_weights(const char *dir, struct tern_model_weights *out);

struct tern_model;

/* Opens a model directory: validates config.json and every tensor against the architecture, then
 * reuses opts->pack_path when its key (source files' paths, sizes, mtimes; format; blocksize;
 * pack version) matches, else converts (quantizing the projections, or taking a bitsandbytes
 * checkpoint's 4-bit tensors as stored) and writes it atomically. */
enum tern_status tern_model_open(const char *dir, const struct tern_model_opts *opts,
				 struct tern_model **out);
void tern_model_free(struct tern_model *m);

struct tern_model_load_report {
	bool reused;    /* the pack file was up to date */
	char why[512];  /* why it was (re)built: "no pack file", "model.safetensors changed", ... */
	double seconds; /* tern_model_open's wall time */
	uint64_t pack_bytes;
	uint32_t n_tensors;
	char format[16]; /* effective projection format ("nf4-dq", "mixed" for a mixed checkpoint) */
};
void tern_model_report(const struct tern_model *m, struct tern_model_load_report *out);

/* Writes a bitsandbytes-compatible 4-bit model directory (config.json with quantization_config,
 * model.safetensors with the packed 4-bit tensors and their quant_state, the rest copied, tokenizer
 * files copied). The model's projections must be nf4 or nf4-dq. out_dir is created if absent;
 * existing files of the same names are replaced atomically. */
enum tern_status tern_model_write_bnb(const struct tern_model *m, const char *out_dir);

#ifdef __cplusplus
}
#endif
#endif
