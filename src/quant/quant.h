/* CPU-side quantization and float conversions: the bit-level definitions every backend matches.
 *
 * NF4 follows bitsandbytes exactly (shared reference formats.md §1):
 *   - flat row-major element order, blocks of `blocksize` consecutive elements (may span rows),
 *     the last block may be partial; n_blocks = ceil(n / blocksize);
 *   - absmax[b] = max |x| over the block (fp32); each element is multiplied by 1/absmax[b] (fp32
 *     reciprocal, as the CUDA kernel does) and coded by the 15 decision thresholds
 *     (strictly greater -> upper code); an all-zero block gives NaN there, which codes 0;
 *   - two elements per byte: element 2j in the HIGH nibble, 2j+1 in the LOW nibble; for odd n the
 *     padding nibble codes a 0.0 element (7; 0 in an all-zero block), as bitsandbytes' CUDA
 *     kernel writes it: codes has (n + 1) / 2 bytes;
 *   - dequantize: w = code_value[q] * absmax[block], fp32.
 * Double quantization ("nested"): offset = mean(absmax) (accumulated in double, rounded to
 * fp32); absmax - offset is quantized in blocks of 256 against the signed 8-bit dynamic map with
 * bitsandbytes' binary search; absmax' = dmap[q] * nested_absmax[b / 256] + offset.
 *
 * Ternary (tern's layout, shared reference ternary.md for the quantizer): one fp32 scale per
 * matrix, s = max(mean |W|, 1e-5); q = clip(round(W / s), -1, 1) stored as q + 1 in 2 bits.
 * Each row of I weights takes tern_ternary_row_words(I) = ceil(I / 16) uint32 words; weight i of
 * a row sits in bits 2*(i % 16) .. 2*(i % 16) + 1 of word i / 16; padding fields are 1 (zero).
 * Dequantized value (q - 1) * s.
 *
 * fp16 and bf16 conversions round to nearest, ties to even; NaN stays NaN (quiet), overflow
 * gives infinity. */
#ifndef TERN_QUANT_H
#define TERN_QUANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TERN_NF4_NESTED_BLOCK 256

extern const float tern_nf4_code[16];      /* formats.md §1.1 */
extern const float tern_nf4_threshold[15]; /* formats.md §1.2 */

/* The 256-entry signed dynamic map of bitsandbytes' create_dynamic_map(signed=True), fp32. */
void tern_dynamic_map(float map[256]);

/* Number of blocks for n elements. */
static inline int64_t tern_nf4_blocks(int64_t n, int blocksize) { return (n + blocksize - 1) / blocksize; }

/* Quantize n fp32 values: codes[(n+1)/2], absmax[n_blocks]. blocksize: power of two 32..4096. */
void tern_nf4_quantize(const float *x, int64_t n, int blocksize, uint8_t *codes, float *absmax);

/* 4-bit code of one scaled value (x already multiplied by 1/absmax). */
uint8_t tern_nf4_code_of(float x);

/* bitsandbytes' 8-bit blockwise quantizer index of a scaled value against a sorted 256-map. */
uint8_t tern_dynamic_code_of(const float map[256], float x);

/* Double-quantize absmax[nb]: qabsmax[nb], nested_absmax[ceil(nb/256)], *offset. */
void tern_nf4_double_quant(const float *absmax, int64_t nb, uint8_t *qabsmax, float *nested_absmax,
			   float *offset);

/* Reconstruct absmax from the nested form (what a reader of a double-quant weight uses). */
void tern_nf4_nested_absmax(const uint8_t *qabsmax, const float *nested_absmax, float offset, int64_t nb,
			    float *absmax);

/* out[n] = code[q] * absmax[i / blocksize]. */
void tern_nf4_dequantize(const uint8_t *codes, const float *absmax, int64_t n, int blocksize, float *out);

/* Ternary. */
static inline int64_t tern_ternary_row_words(int64_t I) { return (I + 15) / 16; }
/* Returns the scale; packed holds O * row_words words. */
float tern_ternary_quantize(const float *w, int64_t O, int64_t I, uint32_t *packed);
void tern_ternary_dequantize(const uint32_t *packed, float scale, int64_t O, int64_t I, float *out);

/* Half floats. */
uint16_t tern_f32_to_f16(float f);
float tern_f16_to_f32(uint16_t h);
uint16_t tern_f32_to_bf16(float f);
float tern_bf16_to_f32(uint16_t h);

#endif
