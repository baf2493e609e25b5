#version 450
// Split-K epilogue of mm.comp: y[t, c0 + n] (=|+=) (1/s) sum_z part[z][t][n] over the splits in
// order (deterministic), for t < T, n < N; s_t as in mm.comp (from row t's max|x| bits).
// (mm.comp's LoRA term is in the partials of split 0.)
// Bindings: 0 = output (f32), 6 = the rows' max|x| bits (u32, row t at xmax_off + t),
// 7 = partials [splits][T][N] (f32).
#extension GL_GOOGLE_include_directive : require
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, N;
	uint y_off, ldy, c0; // output offset, row length, first column
	uint splits, part_off;
	uint accumulate;
	uint xmax_off;
} p;

layout(binding = 0) buffer Out { float y[]; };
layout(binding = 6) readonly buffer XMax { uint xmax[]; };
layout(binding = 7) readonly buffer Part { float part[]; };

#include "common/scale.glsl"

void main()
{
	uint total = p.T * p.N, stride = gl_NumWorkGroups.x * 256u;
	for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
		uint t = i / p.N, n = i % p.N;
		float v = 0.0;
		for (uint z = 0u; z < p.splits; z++)
			v += part[p.part_off + z * total + i];
		uint o = p.y_off + t * p.ldy + p.c0 + n;
		float r = v * exp2(float(-tern_pow2_exp(xmax[p.xmax_off + t], 14)));
		y[o] = p.accumulate != 0u ? y[o] + r : r;
	}
}
