/* The merged model as a stream of fp32 tensors: base weights (dequantized when the base format is
 * NF4 / NF4-DQ / ternary or the checkpoint is bitsandbytes 4-bit) plus a PEFT LoRA adapter,
 * W' = W + scale * B A for every targeted projection, and the adapter's modules_to_save tensors in
 * place of the base's. Used by `tern merge` (Hugging Face directory) and `tern export gguf`.
 *
 * One tensor is produced at a time (the caller's buffer, numel floats): the base is read from the
 * mmapped safetensors (float checkpoints, format auto or the checkpoint's dtype or f32) or from a
 * pack file (quantized formats, bitsandbytes checkpoints), never loaded whole. */
#ifndef TERN_EXPORT_SOURCE_H
#define TERN_EXPORT_SOURCE_H

#include "model/config.h"
#include "model/model.h"
#include "train/adapter.h"

struct tern_msrc_opts {
	const char *base;             /* model directory */
	const char *adapter;          /* PEFT adapter directory, or NULL (the base alone) */
	enum tern_base_format format; /* AUTO: as stored (bitsandbytes 4-bit dequantized) */
	const char *pack_path;        /* where a pack is built or reused when one is needed */
	bool keep_pack;               /* false: the pack file is removed by tern_msrc_close */
	bool no_weights;              /* config and adapter only (tern_msrc_read not used) */
};

struct tern_msrc_tensor {
	char name[TERN_PACK_NAME]; /* Hugging Face name */
	int layer;                 /* -1: global */
	enum tern_role role;
	int expert;       /* MoE expert roles: 0 .. E-1; -1 otherwise */
	int ndim;         /* 1 or 2 */
	int64_t shape[2]; /* [O, I]; vectors [n, 1] */
	int64_t numel;
	bool merged;     /* W + scale B A */
	bool replaced;   /* taken from the adapter's modules_to_save */
	bool from_embed; /* lm_head of an untied base: the base's embed_tokens */
};

struct tern_msrc {
	char base[4096], adapter[4096];
	struct tern_model_config cfg;
	enum tern_base_format format; /* effective */
	struct tern_msrc_tensor *t;
	size_t n;
	struct tern_lora_set *lora; /* NULL without adapter */
	double alpha, scale;        /* from adapter_config.json: scale = alpha / r or alpha / sqrt(r) */
	bool rslora;
	bool untied;              /* tied base, lm_head written from the adapter */
	struct tern_st_model *st; /* direct reads */
	struct tern_model *model; /* pack reads */
	char pack_path[4200];
	bool keep_pack;
};

/* Opens base (config.json checked), the adapter (validated against the base: names, shapes, rank,
 * options; one line naming the file and the difference) and the weights. */
enum tern_status tern_msrc_open(const struct tern_msrc_opts *o, struct tern_msrc **out);
/* Tensor i (numel floats) into out, merged. */
enum tern_status tern_msrc_read(struct tern_msrc *s, size_t i, float *out);
void tern_msrc_close(struct tern_msrc *s);

/* Reads r, lora_alpha, use_rslora, target_modules (as enum tern_module bits) of
 * dir/adapter_config.json. */
enum tern_status tern_adapter_config_peek(const char *dir, int64_t *r, double *alpha, bool *rslora,
					  unsigned *modules);

#endif

struct tern_merge_opts;
struct tern_merge_result;
/* Resolves the public options (a config's base_model, output_dir and base_format, or base +
 * adapter) and opens the source; a pack, when one is needed and the config names none, goes to
 * tmp_pack (removed on close). Fills res's base_dir, adapter_dir, base_format and scale. */
enum { TERN_MSRC_NEED_ADAPTER = 1, TERN_MSRC_NO_WEIGHTS = 2 };
enum tern_status tern_msrc_from_opts(const struct tern_merge_opts *o, const char *tmp_pack, unsigned flags,
				     struct tern_msrc **out, struct tern_merge_result *res);
