/* The input scale of the half-precision products (backend.h, "Precision"): the power of two
 * that puts the largest magnitude of an operand in [2^target, 2^(target + 1)), computed from its
 * bit pattern exactly as the shaders do (shaders/mm.comp, xscale), so every backend rounds the
 * same values. */
#include "backend/backend.h"
#include "quant/quant.h"

#include <math.h>
#include <string.h>

uint32_t tern_absmax_bits(const float *x, int64_t n)
{
	uint32_t m = 0;
	for (int64_t i = 0; i < n; i++) {
		uint32_t b;
		memcpy(&b, &x[i], 4);
		b &= 0x7fffffffu;
		m = b > m ? b : m; /* NaN (above infinity) wins */
	}
	return m;
}

float tern_prec_scale(uint32_t max_bits, int target)
{
	uint32_t e = (max_bits >> 23) & 0xffu;
	if (max_bits == 0 || e == 0xffu)
		return 1.0f;
	int k = target - ((e > 1 ? (int)e : 1) - 127);
	k = k < -100 ? -100 : k > 100 ? 100 : k;
	return ldexpf(1.0f, k);
}

float tern_prec_round(enum tern_dtype prec, float v)
{
	if (prec == TERN_F16)
		return tern_f16_to_f32(tern_f32_to_f16(v));
	if (prec == TERN_BF16)
		return tern_bf16_to_f32(tern_f32_to_bf16(v));
	return v;
}

void tern_plain_to_f32(enum tern_dtype dt, const void *src, int64_t n, float *out)
{
	const uint8_t *p = src;
	if (dt == TERN_F32) {
		memcpy(out, p, (size_t)n * 4);
		return;
	}
#pragma omp parallel for schedule(static) if (n > (1 << 20))
	for (int64_t i = 0; i < n; i++) {
		uint16_t h;
		memcpy(&h, p + 2 * i, 2);
		out[i] = dt == TERN_F16 ? tern_f16_to_f32(h) : tern_bf16_to_f32(h);
	}
}
