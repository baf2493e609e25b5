/* Ternary (1.58-bit) weights in tern's own 2-bit layout (quant.h), quantized as BitNet b1.58 does
 * (shared reference ternary.md): one fp32 scale per matrix, s = max(mean |W|, 1e-5),
 * q = clip(round(W / s), -1, 1).
 *
 * Rounding: BitNet's reference code uses torch.round, which rounds halves to EVEN (0.5 -> 0,
 * -0.5 -> 0, 1.5 -> 2), unlike C's roundf (halves away from zero). We match torch with
 * nearbyintf under the default rounding mode (round to nearest, ties to even); nothing in tern
 * changes the rounding mode. After the clip the two rules differ only at W / s == +-0.5 exactly.
 *
 * Packed layout, per row o of O rows of I weights: tern_ternary_row_words(I) = ceil(I / 16)
 * uint32 words; weight i in bits 2*(i % 16) .. 2*(i % 16) + 1 of word i / 16, holding q + 1 in
 * {0, 1, 2}; the unused fields of a row's last word hold 1, which dequantizes to 0, so a kernel
 * may process whole words without masking. */
#include "quant/quant.h"

#include <math.h>

/* w[O][I] -> packed[O][row_words]; returns s. mean |W| is accumulated in double and rounded once,
 * so the scale does not depend on the order a backend might sum in. */
float tern_ternary_quantize(const float *w, int64_t O, int64_t I, uint32_t *packed)
{
	int64_t n = O * I, rw = tern_ternary_row_words(I);
	double sum = 0.0;

	for (int64_t i = 0; i < n; i++)
		sum += fabs((double)w[i]);
	float mean = n > 0 ? (float)(sum / (double)n) : 0.0f;
	float s = mean > 1e-5f ? mean : 1e-5f;

	for (int64_t o = 0; o < O; o++) {
		const float *row = w + o * I;
		uint32_t *dst = packed + o * rw;

		for (int64_t k = 0; k < rw; k++)
			dst[k] = 0x55555555u; /* every field 1, i.e. weight 0 */
		for (int64_t i = 0; i < I; i++) {
			float q = nearbyintf(row[i] / s);
			if (q > 1.0f)
				q = 1.0f;
			if (q < -1.0f)
				q = -1.0f;
			/* NaN compares false above and would survive; count it as 0 */
			uint32_t field = q == 1.0f ? 2u : q == -1.0f ? 0u : 1u;
			int shift = (int)(2 * (i % 16));
			dst[i / 16] = (dst[i / 16] & ~(3u << shift)) | field << shift;
		}
	}
	return s;
}

/* packed[O][row_words] -> out[O][I] = (q - 1) * s. A field value of 3 never occurs in data we
 * write; it is read as +1 like any value above 1. */
void tern_ternary_dequantize(const uint32_t *packed, float scale, int64_t O, int64_t I, float *out)
{
	int64_t rw = tern_ternary_row_words(I);

	for (int64_t o = 0; o < O; o++) {
		const uint32_t *src = packed + o * rw;

		for (int64_t i = 0; i < I; i++) {
			uint32_t field = src[i / 16] >> (2 * (i % 16)) & 3u;
			out[o * I + i] = field == 0 ? -scale : field == 1 ? 0.0f : scale;
		}
	}
}
