#version 450
// Embedding gather y[t, j] = E[ids[t], j] (=), for the rows [r0, r0 + rn) of E that are bound;
// E in F32 / F16 / BF16 (-DE_F32 / -DE_F16 / -DE_BF16), widened exactly.
// An id outside [0, V) cannot be reported without a download, so the dispatch with first != 0
// writes NaN into that token's row: the loss turns NaN and the step is visibly wrong, instead of
// training on some other token. Callers validate ids on the host (the CPU backend fails).
// bindings 0 = y, 1 = ids (i32), 2 = E rows (uint words)
#extension GL_GOOGLE_include_directive : require
#include "common/half.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, D, V;
	uint r0, rn;
	uint y_off, ids_off, e_pos; // e_pos: E's element index of row r0 inside its binding
	uint first;
} p;

layout(binding = 0) buffer Y { float y[]; };
layout(binding = 1) readonly buffer I { int ids[]; };
layout(binding = 2) readonly buffer E { uint e[]; };

void main()
{
	uint n = p.T * p.D;
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint k = gl_GlobalInvocationID.x; k < n; k += stride) {
		uint t = k / p.D, j = k % p.D;
		int id = ids[p.ids_off + t];
		if (id < 0 || uint(id) >= p.V) {
			if (p.first != 0u)
				y[p.y_off + k] = uintBitsToFloat(0x7fc00000u);
			continue;
		}
		if (uint(id) < p.r0 || uint(id) - p.r0 >= p.rn)
			continue;
		uint l = (uint(id) - p.r0) * p.D + j + p.e_pos;
#if defined(E_F32)
		y[p.y_off + k] = uintBitsToFloat(e[l]);
#else
		uint h = (e[l >> 1] >> ((l & 1u) * 16u)) & 0xffffu;
#if defined(E_F16)
		y[p.y_off + k] = tern_f16_to_f32(h);
#else
		y[p.y_off + k] = tern_bf16_to_f32(h);
#endif
#endif
	}
}
