#version 450
// Sum of squares in a fixed order (deterministic, no atomics), two passes:
//   pass 0 (-DPASS0): group j sums x[j*chunk .. (j+1)*chunk) -> part[j]   bindings 0 = part, 1 = x
//   pass 1: one group sums part[0 .. groups) -> out[0] (= or +=)          bindings 0 = out, 1 = part
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n;          // PASS0: elements; pass 1: partials
	uint out_off, x_off;
	uint chunk;      // PASS0: elements per group
	uint accumulate; // pass 1
} p;

layout(binding = 0) buffer O { float o[]; };
layout(binding = 1) readonly buffer X { float x[]; };

shared float red[256];

void main()
{
	uint t = gl_LocalInvocationID.x;
#ifdef PASS0
	uint begin = gl_WorkGroupID.x * p.chunk;
	uint end = min(begin + p.chunk, p.n);
#else
	uint begin = 0u, end = p.n;
#endif
	float s = 0.0;
	for (uint i = begin + t; i < end; i += 256u) {
#ifdef PASS0
		float v = x[p.x_off + i];
		s += v * v;
#else
		s += x[p.x_off + i];
#endif
	}
	red[t] = s;
	barrier();
	for (uint w = 128u; w > 0u; w >>= 1) {
		if (t < w)
			red[t] += red[t + w];
		barrier();
	}
	if (t == 0u) {
#ifdef PASS0
		o[p.out_off + gl_WorkGroupID.x] = red[0];
#else
		o[p.out_off] = p.accumulate != 0u ? o[p.out_off] + red[0] : red[0];
#endif
	}
}
