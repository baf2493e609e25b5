#version 450
// The f16 input of the half-precision matmuls (mm.comp), one row at a time: for each row t < T of
// src [T][n], rmax[t] = the bits of the row's largest |src| (non-negative floats order like their
// bits; NaN sorts above infinity) and dst row t (ldd halves, two a word) = f16(src[t][i] s_t) for
// i < n, zeros up to ldd, s_t the power of two that puts that largest |src| in [2^14, 2^15) (1 for
// 0, infinity, NaN: common/scale.glsl). One pass for both: a workgroup reads its row twice, the
// second time from the cache. ldd is even (the host makes it a multiple of 8).
// Bindings: 0 = dst (u32), 1 = src (f32), 2 = rmax (u32).
#extension GL_GOOGLE_include_directive : require
#include "common/scale.glsl"
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, n, ldd;                 // rows, elements a row, dst row length in halves
	uint dst_off, src_off, rmax_off; // in words
} p;

layout(binding = 0) writeonly buffer D { uint d_[]; };
layout(binding = 1) readonly buffer S { float s_[]; };
layout(binding = 2) writeonly buffer RMax { uint rmax[]; };

shared uint red[256];

void main()
{
	uint l = gl_LocalInvocationID.x, h = p.ldd / 2u;
	for (uint t = gl_WorkGroupID.x; t < p.T; t += gl_NumWorkGroups.x) {
		uint src = p.src_off + t * p.n, m = 0u;
		for (uint i = l; i < p.n; i += 256u)
			m = max(m, floatBitsToUint(s_[src + i]) & 0x7fffffffu);
		red[l] = m;
		barrier();
		for (uint w = 128u; w > 0u; w >>= 1) {
			if (l < w)
				red[l] = max(red[l], red[l + w]);
			barrier();
		}
		m = red[0];
		barrier(); // red is free for the next row
		if (l == 0u)
			rmax[p.rmax_off + t] = m;
		float s = tern_pow2_scale(m, 14);
		uint dst = p.dst_off + t * h;
		for (uint i = l; i < h; i += 256u) {
			float a = 2u * i < p.n ? s_[src + 2u * i] * s : 0.0;
			float c = 2u * i + 1u < p.n ? s_[src + 2u * i + 1u] * s : 0.0;
			d_[dst + i] = packHalf2x16(vec2(a, c));
		}
	}
}
