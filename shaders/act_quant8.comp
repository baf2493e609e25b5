#version 450
// BitNet b1.58's per-token 8-bit activation fake-quantization (backend.h, act_quant8):
//   s_t = 127 / max(max_i |x[t, i]|, 1e-5),  y[t, i] = clamp(round_even(x[t, i] · s_t), -128, 127) / s_t
// over rows of I fp32 values; one workgroup per row (rows strided over the groups), the max a
// fixed tree over 256 partials (exact in any order). y may be x itself: every element is read and
// written by the same invocation.
// -DSIMPLE (CPU-type devices, ARCHITECTURE §7): one invocation per row, plain loops, no shared
// memory or barriers; rows strided over the whole grid.
// bindings 0 = y, 1 = x
#ifdef SIMPLE
layout(local_size_x = 8) in;
#else
layout(local_size_x = 256) in;
#endif

layout(push_constant) uniform Push {
	uint T, I;
	uint y_off, x_off;
} p;

layout(binding = 0) buffer Y { float y[]; };
layout(binding = 1) buffer X { float x[]; };

#ifdef SIMPLE
#define NT 1u
#else
#define NT 256u
shared float red[256];
#endif

void main()
{
#ifdef SIMPLE
	uint tid = 0u;
	for (uint t = gl_GlobalInvocationID.x; t < p.T; t += gl_NumWorkGroups.x * 8u) {
#else
	uint tid = gl_LocalInvocationID.x;
	for (uint t = gl_WorkGroupID.x; t < p.T; t += gl_NumWorkGroups.x) {
#endif
		uint row = t * p.I;
		float m = 0.0;
		for (uint i = tid; i < p.I; i += NT)
			m = max(m, abs(x[p.x_off + row + i]));
#ifndef SIMPLE
		red[tid] = m;
		barrier();
		for (uint h = 128u; h > 0u; h >>= 1) {
			if (tid < h)
				red[tid] = max(red[tid], red[tid + h]);
			barrier();
		}
		m = red[0];
		barrier(); // red is rewritten by the next row
#endif
		precise float s = 127.0 / max(m, 1e-5);
		for (uint i = tid; i < p.I; i += NT) {
			precise float v = x[p.x_off + row + i] * s;
			float q = clamp(roundEven(v), -128.0, 127.0);
			precise float o = q / s;
			y[p.y_off + row + i] = o;
		}
	}
}
