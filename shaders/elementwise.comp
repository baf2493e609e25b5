#version 450
// Element-wise fp32 ops, one variant per -D (grid-stride loops: any n with few groups).
//   OP_AXPY:    y[i] += alpha * x[i]            bindings 0 = y, 1 = x
//   OP_SCALE:   y[i] *= alpha                   binding 0 = y
//   OP_DROPOUT: y[i] = keep(i) ? x[i] * alpha : 0, alpha = 1/(1-p)   bindings 0 = y, 1 = x
//   OP_CLIP:    y[i] *= c if c < 1, c = alpha / (sqrt(s[0]) + 1e-6)  bindings 0 = y, 2 = s
#extension GL_GOOGLE_include_directive : require
#include "common/hash.glsl"

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n;
	uint y_off, x_off, s_off;
	float alpha;
	uint key_lo, key_hi, threshold;
	uint base; // element index of this chunk's first element (dropout counter)
} p;

layout(binding = 0) buffer Y { float y[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) readonly buffer S { float s[]; };

void main()
{
	uint stride = gl_NumWorkGroups.x * 256u;
#ifdef OP_CLIP
	float c = p.alpha / (sqrt(s[p.s_off]) + 1e-6);
	if (!(c < 1.0))
		return;
#endif
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
#if defined(OP_AXPY)
		precise float t = p.alpha * x[p.x_off + i];
		precise float r = y[p.y_off + i] + t;
		y[p.y_off + i] = r;
#elif defined(OP_SCALE)
		y[p.y_off + i] *= p.alpha;
#elif defined(OP_DROPOUT)
		bool keep = tern_dropout_hash(p.key_lo, p.key_hi, p.base + i) >= p.threshold;
		y[p.y_off + i] = keep ? x[p.x_off + i] * p.alpha : 0.0;
#elif defined(OP_CLIP)
		y[p.y_off + i] *= c;
#endif
	}
}
