/* fp16 (IEEE binary16) and bf16 conversions on the bit patterns, independent of the compiler's
 * _Float16 support and of the FPU's rounding mode: round to nearest, ties to even; overflow
 * gives infinity; NaN stays NaN with the quiet bit set and the top payload bits kept; fp16
 * subnormals are produced and read exactly. */
#include "quant/quant.h"

#include <string.h>

static uint32_t f32_bits(float f)
{
	uint32_t u;
	memcpy(&u, &f, sizeof u);
	return u;
}

static float bits_f32(uint32_t u)
{
	float f;
	memcpy(&f, &u, sizeof f);
	return f;
}

uint16_t tern_f32_to_f16(float f)
{
	uint32_t x = f32_bits(f);
	uint16_t sign = (uint16_t)(x >> 16 & 0x8000u);
	uint32_t ax = x & 0x7fffffffu;

	if (ax > 0x7f800000u) /* NaN: quiet, keep the top 9 payload bits */
		return (uint16_t)(sign | 0x7e00u | (ax >> 13 & 0x03ffu));
	if (ax >= 0x477ff000u) /* >= 65520 (the tie above 65504 goes to even = inf), and inf */
		return (uint16_t)(sign | 0x7c00u);
	if (ax >= 0x38800000u) { /* >= 2^-14: normal fp16 */
		/* Rebias the exponent (127 - 15 = 112) and round the 13 dropped mantissa bits to
		 * nearest even; a carry out of the mantissa correctly bumps the exponent. */
		uint32_t r = ax + 0x0fffu + (ax >> 13 & 1u) - (112u << 23);
		return (uint16_t)(sign | r >> 13);
	}
	/* Subnormal fp16 (or zero): the result is ax's value in units of 2^-24, rounded. With
	 * e = biased fp32 exponent and m the 24-bit significand, value = m * 2^(e - 150), so the
	 * count is m >> (126 - e). Below 2^-25 (e < 102) everything rounds to zero. */
	uint32_t e = ax >> 23;
	if (e < 102)
		return sign;
	uint32_t m = (ax & 0x007fffffu) | 0x00800000u;
	uint32_t shift = 126 - e; /* 14 .. 24 */
	uint32_t q = m >> shift;
	uint32_t rem = m & ((1u << shift) - 1);
	uint32_t half = 1u << (shift - 1);
	if (rem > half || (rem == half && (q & 1u)))
		q++; /* may carry into 0x0400, the smallest normal: still the right pattern */
	return (uint16_t)(sign | q);
}

float tern_f16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
	uint32_t e = h >> 10 & 0x1fu;
	uint32_t m = h & 0x03ffu;

	if (e == 0) {
		/* zero or subnormal m * 2^-24: exact in fp32 */
		float v = (float)m * 0x1p-24f;
		return sign ? -v : v;
	}
	if (e == 31)
		return bits_f32(sign | 0x7f800000u | (m ? 0x00400000u | m << 13 : 0u));
	return bits_f32(sign | (e + 112u) << 23 | m << 13);
}

uint16_t tern_f32_to_bf16(float f)
{
	uint32_t x = f32_bits(f);

	if ((x & 0x7fffffffu) > 0x7f800000u) /* NaN: truncate the payload, force quiet */
		return (uint16_t)(x >> 16 | 0x0040u);
	/* Round to nearest even on the dropped 16 bits; overflow of the largest finite values
	 * carries into the exponent and gives infinity, as it should. */
	return (uint16_t)((x + 0x7fffu + (x >> 16 & 1u)) >> 16);
}

float tern_bf16_to_f32(uint16_t h)
{
	uint32_t x = (uint32_t)h << 16;

	if ((x & 0x7fffffffu) > 0x7f800000u)
		x |= 0x00400000u;
	return bits_f32(x);
}
