/* BitNet b1.58 checkpoints whose projections are stored quantized (quantization_config
 * {quant_method: bitnet} with linear_class bitlinear, or autobitlinear in quantization_mode
 * offline; tern_bitnet_offline()), converted straight into tern's ternary layout (quant.h,
 * docs/FORMATS.md) without an fp32 or 16-bit copy on the host.
 *
 * transformers' layout (integrations/bitnet.py): a projection's weight [O, I] is ternary q in
 * {-1, 0, 1}, stored as q + 1 in 2-bit fields of a uint8 tensor [O / 4, I]: stored row r holds
 * rows r, r + O/4, r + 2·O/4, r + 3·O/4 in its bits 0-1, 2-3, 4-5, 6-7. Beside it <name>_scale
 * (weight_scale, one element). linear_class bitlinear divides by it (BitLinear: y = x qᵀ /
 * weight_scale), autobitlinear offline multiplies (y = x qᵀ · weight_scale) and also accepts the
 * weight unpacked, a float [O, I] of -1/0/1. tern's scale is then 1 / weight_scale (bitlinear,
 * rounded once in fp32) or weight_scale. */
#ifndef TERN_MODEL_BITNET_PACKED_H
#define TERN_MODEL_BITNET_PACKED_H

#include "formats/safetensors.h"
#include "model/config.h"

struct tern_bitnet_src {
	const struct tern_st_tensor *w;     /* U8 [O/4, I] (packed) or F32/F16/BF16 [O, I] of -1/0/1 */
	const struct tern_st_tensor *scale; /* <name>_scale: one F32/F16/BF16 element */
	bool packed;
	float s;               /* tern's scale: 1 / weight_scale (bitlinear) or weight_scale */
	enum tern_dtype dtype; /* weight_scale's dtype (the model's compute dtype) */
};

/* Finds and checks projection `name` [O, I] and its weight_scale in st: dtypes, shapes, and every
 * stored value (no 2-bit code 3; unpacked values exactly -1, 0 or 1), so that the conversion
 * cannot fail. Errors are one line naming dir, the tensor and the fix. */
enum tern_status tern_bitnet_src_find(const char *dir, const struct tern_model_config *cfg,
				      const struct tern_st_model *st, const char *name, int64_t O, int64_t I,
				      struct tern_bitnet_src *out);

/* Writes tern's ternary words for the checked source: words[O][tern_ternary_row_words(I)]. */
void tern_bitnet_fill(const struct tern_bitnet_src *s, int64_t O, int64_t I, uint32_t *words);

#endif
