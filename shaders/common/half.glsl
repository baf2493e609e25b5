// fp16 / bf16 <-> fp32 in integer math so every device rounds the same way as the CPU
// reference (round to nearest, ties to even; NaN stays a quiet NaN; overflow to infinity).

float tern_f16_to_f32(uint h)
{
	uint s = (h & 0x8000u) << 16;
	uint e = (h >> 10) & 0x1fu;
	uint m = h & 0x3ffu;
	if (e == 0u) {
		if (m == 0u)
			return uintBitsToFloat(s);
		// subnormal: value = m * 2^-24, exact in fp32
		float v = float(m) * (1.0 / 16777216.0);
		return uintBitsToFloat(s | floatBitsToUint(v));
	}
	if (e == 31u)
		return uintBitsToFloat(s | 0x7f800000u | (m << 13) | (m != 0u ? 0x400000u : 0u));
	return uintBitsToFloat(s | ((e + 112u) << 23) | (m << 13));
}

uint tern_f32_to_f16(float f)
{
	uint x = floatBitsToUint(f);
	uint s = (x >> 16) & 0x8000u;
	uint a = x & 0x7fffffffu;
	if (a > 0x7f800000u)
		return s | 0x7e00u | ((a >> 13) & 0x3ffu);
	if (a >= 0x477ff000u) // rounds to >= 65520: infinity
		return s | 0x7c00u;
	if (a < 0x38800000u) { // below the smallest normal f16 (2^-14)
		if (a < 0x33000000u) // below half the smallest subnormal: zero
			return s;
		uint e = a >> 23;
		uint m = (a & 0x7fffffu) | 0x800000u;
		uint shift = 126u - e; // 14..24
		uint q = m >> shift;
		uint rem = m & ((1u << shift) - 1u);
		uint half_ = 1u << (shift - 1u);
		if (rem > half_ || (rem == half_ && (q & 1u) != 0u))
			q += 1u;
		return s | q;
	}
	uint r = a + 0xfffu + ((a >> 13) & 1u) - (112u << 23);
	return s | (r >> 13);
}

float tern_bf16_to_f32(uint h) { return uintBitsToFloat(h << 16); }

uint tern_f32_to_bf16(float f)
{
	uint x = floatBitsToUint(f);
	if ((x & 0x7fffffffu) > 0x7f800000u)
		return (x >> 16) | 0x40u;
	return (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
}
