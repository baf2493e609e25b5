/* NF4 blockwise quantization and its double ("nested") quantization, bit-exact with bitsandbytes'
 * CUDA kernels (kQuantizeBlockwise with dQuantizeNF4 / dQuantize<0>). See quant.h for the layout
 * and shared reference formats.md §1 for the upstream facts.
 *
 * Everything here is plain fp32 arithmetic in a fixed order; the build passes -ffp-contract=off so
 * that no multiply-add is fused behind our back. The one fused multiply-add that IS wanted (the
 * dynamic map's linspace, see below) is written as an explicit fmaf(). */
#include "quant/quant.h"

#include <math.h>
#include <stdlib.h>

/* formats.md §1.1: bitsandbytes' NF4 quant_map, index = 4-bit code. */
const float tern_nf4_code[16] = {
	-1.0f,
	-0.6961928009986877f,
	-0.5250730514526367f,
	-0.39491748809814453f,
	-0.28444138169288635f,
	-0.18477343022823334f,
	-0.09105003625154495f,
	0.0f,
	0.07958029955625534f,
	0.16093020141124725f,
	0.24611230194568634f,
	0.33791524171829224f,
	0.44070982933044434f,
	0.5626170039176941f,
	0.7229568362236023f,
	1.0f,
};

/* formats.md §1.2: the decision thresholds of dQuantizeNF4, the literals of the CUDA kernel
 * (threshold k separates code k from code k + 1). They must stay float literals: thresholds 0, 8,
 * 12 and 14 are, as doubles, exactly halfway between two floats, and the compiler's direct
 * decimal-to-float rounding (which nvcc shares; checked on an H100 with bitsandbytes 0.50) picks
 * the neighbour on the decimal's side, whereas (float)0.5016634166240692 rounds the tie to even
 * and is one ulp off. */
const float tern_nf4_threshold[15] = {
	-0.8480964004993439f,  -0.6106329262256622f,  -0.4599952697753906f,   -0.33967943489551544f,
	-0.23460740596055984f, -0.13791173323988914f, -0.045525018125772476f, 0.03979014977812767f,
	0.1202552504837513f,   0.2035212516784668f,   0.2920137718319893f,    0.3893125355243683f,
	0.5016634166240692f,   0.6427869200706482f,   0.8614784181118011f,
};

/* torch.linspace(start, end, steps, dtype=float32) as ATen's CPU kernel evaluates it: step =
 * (end - start) / (steps - 1) in fp32, the first half counted up from start and the second half
 * down from end. The kernel's expression `start + step * idx` is compiled with FMA contraction in
 * ATen's AVX2 and AVX512 builds (the capability torch dispatches to on any current x86 CPU, and
 * what bitsandbytes' create_dynamic_map() therefore returns in practice), so it rounds once.
 * ATen's DEFAULT (no-SIMD) build rounds twice and yields a dynamic map that differs in 42 of its
 * 256 entries by one ulp; tools/nf4_golden.py checks this against torch when it is installed. */
static void linspace_f32(float start, float end, int steps, float *out)
{
	float step = (end - start) / (float)(steps - 1);
	int half = steps / 2;

	for (int idx = 0; idx < steps; idx++) {
		if (idx < half)
			out[idx] = fmaf(step, (float)idx, start);
		else
			out[idx] = fmaf(-step, (float)(steps - idx - 1), end);
	}
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;
	return (x > y) - (x < y);
}

/* bitsandbytes create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for exponent
 * i = 0..6, 2^i midpoints of a 2^i + 1 point linspace over [0.1, 1], times 10^(i-6), both signs;
 * then 0 and 1.0; sorted. The scale is a Python float that torch casts to fp32 before the fp32
 * multiply, hence the double literals cast to float. */
void tern_dynamic_map(float map[256])
{
	static const double decade[7] = {1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0};
	float b[65];
	int n = 0;

	for (int i = 0; i < 7; i++) {
		int steps = (1 << i) + 1;
		float scale = (float)decade[i];

		linspace_f32(0.1f, 1.0f, steps, b);
		for (int k = 0; k + 1 < steps; k++) {
			float mid = (b[k] + b[k + 1]) / 2.0f;
			map[n++] = scale * mid;
			map[n++] = -(scale * mid);
		}
	}
	map[n++] = 0.0f;
	map[n++] = 1.0f;
	/* n == 256 here: 2 * (1 + 2 + ... + 64) + 2. */
	qsort(map, (size_t)n, sizeof(float), cmp_float);
}

/* Number of thresholds strictly exceeded: the leaf dQuantizeNF4's decision tree reaches. A NaN
 * exceeds none and codes 0, as on the GPU (an all-zero block scales 0 * inf = NaN). */
uint8_t tern_nf4_code_of(float x)
{
	uint8_t c = 0;
	for (int k = 0; k < 15; k++)
		c += x > tern_nf4_threshold[k];
	return c;
}

/* dQuantize<0> of bitsandbytes' kernels.cu, step for step: a 7-level binary search over the
 * sorted map that ends on an even index e with map[e-1] < x <= map[e+1], then a choice between
 * e and its neighbour by an fp32 midpoint. Ties at a midpoint go to the even index (not always
 * the lower one); NaN ends at index 0. */
uint8_t tern_dynamic_code_of(const float map[256], float x)
{
	int pivot = 127, upper_pivot = 255, lower_pivot = 0;
	float lower = -1.0f, upper = 1.0f;
	float val = map[pivot];

	for (int i = 64; i > 0; i >>= 1) {
		if (x > val) {
			lower_pivot = pivot;
			lower = val;
			pivot += i;
		} else {
			upper_pivot = pivot;
			upper = val;
			pivot -= i;
		}
		val = map[pivot];
	}
	if (upper_pivot == 255)
		upper = map[255];
	if (lower_pivot == 0)
		lower = map[0];

	if (x > val) {
		float mid = (upper + val) * 0.5f;
		return (uint8_t)(x > mid ? upper_pivot : pivot);
	} else {
		float mid = (lower + val) * 0.5f;
		return (uint8_t)(x < mid ? lower_pivot : pivot);
	}
}

/* x[n] -> codes[(n+1)/2], absmax[ceil(n/blocksize)]. The kernel scales by the fp32 reciprocal of
 * absmax (one division per block, then multiplies), which is not always the same as dividing.
 * For odd n the padding nibble is the code of a 0.0 element of the last block, as bitsandbytes'
 * CUDA kernel writes it (7, or 0 when the block is all zero and 0 * (1/0) is NaN), so packed
 * bytes are identical to a CUDA-quantized checkpoint. Where we do not follow CUDA: it flushes
 * fp32 subnormals to zero, so a block whose values are all below 2^-126 comes out differently
 * there. */
void tern_nf4_quantize(const float *x, int64_t n, int blocksize, uint8_t *codes, float *absmax)
{
	int64_t nb = tern_nf4_blocks(n, blocksize);

	for (int64_t b = 0; b < nb; b++) {
		int64_t i0 = b * blocksize;
		int64_t i1 = i0 + blocksize < n ? i0 + blocksize : n;
		float m = 0.0f;

		for (int64_t i = i0; i < i1; i++) {
			float a = fabsf(x[i]);
			if (a > m)
				m = a;
		}
		absmax[b] = m;

		float r = 1.0f / m;
		/* blocksize is even, so blocks start on a byte boundary. */
		for (int64_t i = i0; i < i1; i += 2) {
			uint8_t hi = tern_nf4_code_of(x[i] * r);
			uint8_t lo = tern_nf4_code_of(i + 1 < i1 ? x[i + 1] * r : 0.0f * r);
			codes[i / 2] = (uint8_t)(hi << 4 | lo);
		}
	}
}

/* absmax[nb] -> qabsmax[nb], nested_absmax[ceil(nb/256)], offset. bitsandbytes computes
 * offset = absmax.mean() in torch; we accumulate in double and round once, which is what an
 * exact mean rounded to fp32 gives for any realistic nb (torch's fp32 reduction may differ by an
 * ulp; checkpoints store the offset, so readers are unaffected). */
void tern_nf4_double_quant(const float *absmax, int64_t nb, uint8_t *qabsmax, float *nested_absmax,
			   float *offset)
{
	float map[256];
	double sum = 0.0;

	tern_dynamic_map(map);
	for (int64_t i = 0; i < nb; i++)
		sum += absmax[i];
	float off = nb > 0 ? (float)(sum / (double)nb) : 0.0f;
	*offset = off;

	int64_t nn = tern_nf4_blocks(nb, TERN_NF4_NESTED_BLOCK);
	for (int64_t b = 0; b < nn; b++) {
		int64_t i0 = b * TERN_NF4_NESTED_BLOCK;
		int64_t i1 = i0 + TERN_NF4_NESTED_BLOCK < nb ? i0 + TERN_NF4_NESTED_BLOCK : nb;
		float m = 0.0f;

		for (int64_t i = i0; i < i1; i++) {
			float a = fabsf(absmax[i] - off);
			if (a > m)
				m = a;
		}
		nested_absmax[b] = m;

		/* m == 0 (all absmax equal) gives NaN, code 0, reconstructed as 0 * 0 + offset. */
		float r = 1.0f / m;
		for (int64_t i = i0; i < i1; i++)
			qabsmax[i] = tern_dynamic_code_of(map, (absmax[i] - off) * r);
	}
}

/* absmax[i] = map[qabsmax[i]] * nested_absmax[i / 256] + offset: an fp32 multiply, then an fp32
 * add (bitsandbytes dequantizes blockwise to fp32, then adds the offset tensor). */
void tern_nf4_nested_absmax(const uint8_t *qabsmax, const float *nested_absmax, float offset, int64_t nb,
			    float *absmax)
{
	float map[256];

	tern_dynamic_map(map);
	for (int64_t i = 0; i < nb; i++) {
		float v = map[qabsmax[i]] * nested_absmax[i / TERN_NF4_NESTED_BLOCK];
		absmax[i] = v + offset;
	}
}

void tern_nf4_dequantize(const uint8_t *codes, const float *absmax, int64_t n, int blocksize, float *out)
{
	int64_t nb = tern_nf4_blocks(n, blocksize);

	for (int64_t b = 0; b < nb; b++) {
		int64_t i0 = b * blocksize;
		int64_t i1 = i0 + blocksize < n ? i0 + blocksize : n;
		float m = absmax[b];

		for (int64_t i = i0; i < i1; i++) {
			uint8_t byte = codes[i / 2];
			uint8_t q = (i & 1) ? (byte & 0x0f) : (byte >> 4);
			out[i] = tern_nf4_code[q] * m;
		}
	}
}
