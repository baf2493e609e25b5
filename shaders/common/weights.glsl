// Reading one element of a frozen weight W [rows, I] in any base format, dequantized to fp32.
// Define one of W_F32 W_F16 W_BF16 W_NF4 W_NF4_DQ W_TERNARY before including.
// Bindings: 2 = weight data (uint words), 3 = absmax (f32, or u8 codes for NF4_DQ),
// 4 = nested absmax (f32), 5 = the 256-entry dynamic map (f32).
// The chunk of W that is bound starts at global row wp_r0; W's element (row, col) has global
// flat index g = row * I + col; inside the binding it sits at (g - wp_r0 * I) + wp_pos, counted in
// elements (nibbles for NF4, 2-bit fields per row word for ternary: see w_value()).

layout(binding = 2) readonly buffer WData { uint w_data[]; };
layout(binding = 3) readonly buffer WAbsmax { uint w_absmax[]; };
layout(binding = 4) readonly buffer WNested { float w_nested[]; };
layout(binding = 5) readonly buffer WDmap { float w_dmap[]; };

#if defined(W_NF4) || defined(W_NF4_DQ)
// the 16 NF4 code values as exact fp32 bit patterns (formats.md §1.1)
const uint NF4_CODE_BITS[16] = uint[16](
	0xbf800000u, 0xbf3239b1u, 0xbf066b30u, 0xbeca32a0u, 0xbe91a24du, 0xbe3d353fu, 0xbdba7871u, 0x00000000u,
	0x3da2faffu, 0x3e24cae3u, 0x3e7c04ddu, 0x3ead033au, 0x3ee1a4b8u, 0x3f1007abu, 0x3f3913b3u, 0x3f800000u);

float w_block_absmax(uint b)
{
#if defined(W_NF4_DQ)
	uint q = (w_absmax[wp_absmax_off + (b >> 2)] >> ((b & 3u) * 8u)) & 0xffu;
	// precise: the CPU reference computes this without a fused multiply-add
	precise float a = w_dmap[wp_dmap_off + q] * w_nested[wp_nested_off + (b >> 8)];
	precise float r = a + wp_offset;
	return r;
#else
	return uintBitsToFloat(w_absmax[wp_absmax_off + b]);
#endif
}
#endif

// W_SHARED_TABLES (shaders that decode many NF4 weights a group: mm.comp, wdec.comp): the code
// values, and NF4-DQ's map, in shared memory (a constant array indexed by each lane's code may be
// placed in local memory by the compiler). Every invocation of a group of at least 256 calls
// w_tables_load(), then a barrier; w_run_absmax(b) is w_block_absmax(b) on them, the same
// arithmetic.
#if defined(W_SHARED_TABLES) && (defined(W_NF4) || defined(W_NF4_DQ))
shared float w_nf4[16];
#if defined(W_NF4_DQ)
shared float w_dmap_s[256];
#endif
void w_tables_load()
{
	uint i = gl_LocalInvocationID.x;
	if (i < 16u)
		w_nf4[i] = uintBitsToFloat(NF4_CODE_BITS[i]);
#if defined(W_NF4_DQ)
	if (i < 256u)
		w_dmap_s[i] = w_dmap[wp_dmap_off + i];
#endif
}

float w_run_absmax(uint b)
{
#if defined(W_NF4_DQ)
	uint q = (w_absmax[wp_absmax_off + (b >> 2)] >> ((b & 3u) * 8u)) & 0xffu;
	precise float a = w_dmap_s[q] * w_nested[wp_nested_off + (b >> 8)];
	precise float r = a + wp_offset;
	return r;
#else
	return w_block_absmax(b);
#endif
}
#endif

#if defined(W_F16) || defined(W_BF16)
#include "common/half.glsl"
#endif

float w_value(uint row, uint col)
{
#if defined(W_TERNARY)
	uint word = w_data[(row - wp_r0) * ((wp_I + 15u) >> 4) + wp_pos + (col >> 4)];
	uint q = (word >> ((col & 15u) * 2u)) & 3u;
	return (float(q) - 1.0) * wp_scale;
#else
	uint g = row * wp_I + col;
	uint l = g - wp_r0 * wp_I + wp_pos;
#if defined(W_F32)
	return uintBitsToFloat(w_data[l]);
#elif defined(W_F16) || defined(W_BF16)
	uint h = (w_data[l >> 1] >> ((l & 1u) * 16u)) & 0xffffu;
#if defined(W_F16)
	return tern_f16_to_f32(h);
#else
	return tern_bf16_to_f32(h);
#endif
#else // NF4: two codes per byte, the even flat element in the high nibble
	uint byte_ = (w_data[l >> 3] >> (((l >> 1) & 3u) * 8u)) & 0xffu;
	uint q = (l & 1u) == 0u ? (byte_ >> 4) : (byte_ & 15u);
	return uintBitsToFloat(NF4_CODE_BITS[q]) * w_block_absmax(g / wp_blocksize);
#endif
#endif
}
