#version 450
// The f16 input of the half-precision matmuls (mm.comp): dst[i] = f16(src[i] s) for i < n, two
// halves per word (a trailing odd element pairs with 0), with s the power of two that puts the
// largest |src| in [2^14, 2^15) (the max bits the absmax pass left in binding 2; 1 for 0, inf,
// NaN). Bindings: 0 = dst (u32), 1 = src (f32), 2 = max bits (u32).
#extension GL_GOOGLE_include_directive : require
#include "common/scale.glsl"
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n, dst_off, src_off, xmax_off;
} p;

layout(binding = 0) writeonly buffer D { uint d_[]; };
layout(binding = 1) readonly buffer S { float s_[]; };
layout(binding = 2) readonly buffer XMax { uint xmax[]; };

void main()
{
	float s = tern_pow2_scale(xmax[p.xmax_off], 14);
	uint n2 = (p.n + 1u) / 2u;
	for (uint i = gl_GlobalInvocationID.x; i < n2; i += gl_NumWorkGroups.x * 256u) {
		float a = s_[p.src_off + 2u * i] * s;
		float c = 2u * i + 1u < p.n ? s_[p.src_off + 2u * i + 1u] * s : 0.0;
		d_[p.dst_off + i] = packHalf2x16(vec2(a, c));
	}
}
