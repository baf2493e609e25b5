/* tern — after training: merge an adapter into its base (a Hugging Face model directory) and
 * export GGUF files for llama.cpp (the adapter as a GGUF LoRA, or the merged model).
 *
 * The base is a model directory; an adapter is a PEFT LoRA directory (what `tern train` writes).
 * With a config (a tern training YAML) the base is its base_model (a directory or a cached Hub
 * id), the adapter <output_dir>/adapter and the base format its base_format, so the merge adds the
 * adapter to exactly the weights it was trained against (an NF4 or ternary base dequantized). */
#ifndef TERN_EXPORT_H
#define TERN_EXPORT_H

#include "tern/model.h"
#include "tern/tern.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What to merge. A config, or a base, or neither (then the base is the adapter's
 * base_model_name_or_path, a directory or a Hub id); adapter may be NULL with a config
 * (<output_dir>/adapter, the adapter tern train writes). */
struct tern_merge_opts {
	const char *config;  /* a tern training config, or NULL */
	const char *base;    /* a model directory, or NULL */
	const char *adapter; /* a PEFT adapter directory (NULL with config: <output_dir>/adapter) */
	enum tern_base_format base_format; /* AUTO: the config's, else as stored (bitsandbytes
					    * 4-bit dequantized); nf4, nf4-dq, ternary: quantize the
					    * base as training did, then dequantize */
};

/* What a merge or export did. */
struct tern_merge_result {
	char base_dir[4096], adapter_dir[4096];
	char base_format[16]; /* the weights merged into: "bf16", "nf4-dq", ... */
	int64_t n_tensors, n_merged, n_replaced;
	int n_files; /* shards */
	uint64_t bytes;
	double scale; /* the LoRA scale applied */
	double seconds;
};

/* Writes base + adapter as a Hugging Face model directory `out`: config.json (quantization_config
 * removed, dtype set), generation_config.json, the tokenizer files, model.safetensors or shards
 * of at most shard_bytes (0: 5 GB) with model.safetensors.index.json. dtype: "bf16", "f16", "f32"
 * or NULL (the base's torch dtype; a bitsandbytes base: its compute dtype). out must not exist;
 * everything is written under "<out>.tmp.<pid>" and renamed at the end (nothing is left under
 * out on failure). */
enum tern_status tern_merge(const struct tern_merge_opts *o, const char *out, const char *dtype,
			    uint64_t shard_bytes, struct tern_merge_result *res);

/* GGUF outputs. */
enum tern_gguf_type {
	TERN_GGUF_F32,
	TERN_GGUF_F16,
	TERN_GGUF_BF16,
	TERN_GGUF_Q8_0,
	TERN_GGUF_Q4_K_M, /* llama-quantize's mix: Q4_K, Q6_K for output (a tied token_embd) and for
			   * attn_v / ffn_down of the first and last eighth of layers and every third
			   * between; a row not a multiple of 256 falls back to Q8_0 (llama.cpp: Q5_0 /
			   * Q8_0), not a multiple of 32 to F16. Merged model only. */
	TERN_GGUF_TYPE_COUNT
};
/* "f32", "f16", "bf16", "q8_0", "q4_k_m"; parse answers TERN_E_INVALID for other names. */
const char *tern_gguf_type_name(enum tern_gguf_type t);
enum tern_status tern_gguf_type_parse(const char *s, enum tern_gguf_type *out);

/* The merged model (or the base alone when there is no adapter) as one GGUF file for llama.cpp:
 * its architecture metadata, the tokenizer and chat template, tensors in llama.cpp's names
 * (norms, biases and rope_freqs F32; matrices in `type`, Q8_0 falling back to F16 for a row
 * length not a multiple of 32). Written atomically. */
enum tern_status tern_export_gguf_model(const struct tern_merge_opts *o, const char *out,
					enum tern_gguf_type type, struct tern_merge_result *res);

/* The adapter as a GGUF LoRA (llama.cpp's adapter format, as its convert_lora_to_gguf.py writes
 * it): general.type "adapter", adapter.type "lora", adapter.lora.alpha, tensors
 * blk.N.<name>.weight.lora_a [r, in] and .lora_b [out, r] (torch order) in `type` (f32 or f16,
 * bf16, q8_0). An rsLoRA adapter is written with alpha * sqrt(r) (llama.cpp scales by alpha / r).
 * An adapter with modules_to_save (embed_tokens, lm_head trained in full) is refused: llama.cpp
 * adapters cannot carry them; merge and export the model instead. */
enum tern_status tern_export_gguf_lora(const struct tern_merge_opts *o, const char *out,
				       enum tern_gguf_type type, struct tern_merge_result *res);

#ifdef __cplusplus
}
#endif
#endif
