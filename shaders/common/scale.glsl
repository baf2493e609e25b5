// The power-of-two input scale of the half-precision products (backend.h "Precision of the
// product"; tern_prec_scale in src/backend/prec.c is the same rule): from the bits of the largest
// |x| (absmax.comp), 2^clamp(target - e, -100, 100) with e its binary exponent (at least -126);
// 1 for 0, infinity and NaN. target 14 puts the largest |x s| in [2^14, 2^15).
// tern_pow2_exp is that power's exponent (0 for 0, infinity and NaN).
int tern_pow2_exp(uint max_bits, int target)
{
	uint e = (max_bits >> 23) & 0xffu;
	if (max_bits == 0u || e == 0xffu)
		return 0;
	return clamp(target - (max(int(e), 1) - 127), -100, 100);
}

float tern_pow2_scale(uint max_bits, int target) { return exp2(float(tern_pow2_exp(max_bits, target))); }
