#version 450
// dst[i] = convert(src[i]) among f32 / f16 / bf16 (-DSRC_F32|SRC_F16|SRC_BF16, -DDST_...).
// 16-bit tensors are addressed in 16-bit elements inside uint words; a thread owns one
// destination word, so a 16-bit destination is written without races.
// Bindings: 0 = dst, 1 = src. Offsets are in elements of the tensor's own type.
#extension GL_GOOGLE_include_directive : require
#include "common/half.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n;
	uint dst_off, src_off; // elements
} p;

layout(binding = 0) buffer D { uint d[]; };
layout(binding = 1) readonly buffer S { uint s[]; };

float load(uint i)
{
	uint e = p.src_off + i;
#if defined(SRC_F32)
	return uintBitsToFloat(s[e]);
#else
	uint h = (s[e >> 1] >> ((e & 1u) * 16u)) & 0xffffu;
#if defined(SRC_F16)
	return tern_f16_to_f32(h);
#else
	return tern_bf16_to_f32(h);
#endif
#endif
}

uint to16(float f)
{
#if defined(DST_F16)
	return tern_f32_to_f16(f);
#else
	return tern_f32_to_bf16(f);
#endif
}

void main()
{
	uint stride = gl_NumWorkGroups.x * 256u;
#if defined(DST_F32)
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride)
		d[p.dst_off + i] = floatBitsToUint(load(i));
#else
	// destination words covering elements [dst_off, dst_off + n)
	uint w0 = p.dst_off >> 1, w1 = (p.dst_off + p.n + 1u) >> 1;
	for (uint w = w0 + gl_GlobalInvocationID.x; w < w1; w += stride) {
		uint word = d[w];
		for (uint h = 0u; h < 2u; h++) {
			uint e = w * 2u + h;
			if (e < p.dst_off || e >= p.dst_off + p.n)
				continue;
			uint v = to16(load(e - p.dst_off));
			word = (word & ~(0xffffu << (h * 16u))) | (v << (h * 16u));
		}
		d[w] = word;
	}
#endif
}
