#version 450
// out[0] = max(out[0], max_i bits(|x[i]|)) over n floats: the largest magnitude as its bit
// pattern (non-negative floats order like their bits; NaN sorts above infinity), which the
// f16 matmuls turn into their input scale (mm.comp, xscale). The caller zeroes out[0] first.
// Bindings: 0 = out (u32), 1 = x (f32).
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n, x_off, out_off;
} p;

layout(binding = 0) buffer O { uint o[]; };
layout(binding = 1) readonly buffer X { uint x[]; };

shared uint red[256];

void main()
{
	uint t = gl_LocalInvocationID.x, m = 0u;
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 256u)
		m = max(m, x[p.x_off + i] & 0x7fffffffu);
	red[t] = m;
	barrier();
	for (uint w = 128u; w > 0u; w >>= 1) {
		if (t < w)
			red[t] = max(red[t], red[t + w]);
		barrier();
	}
	if (t == 0u)
		atomicMax(o[p.out_off], red[0]);
}
