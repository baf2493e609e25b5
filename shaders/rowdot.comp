#version 450
// out[i] = Σ_j a[i, j] · b[i, j] (=) over rows of D fp32 values (the routing weight's gradient
// in a mixture of experts). One workgroup per row (rows strided over the groups): 256 strided
// partial sums, then a fixed-order tree (deterministic, no atomics).
// -DSIMPLE (CPU-type devices, ARCHITECTURE §7): one invocation per row, the sum a plain loop in
// j order, no shared memory or barriers; rows strided over the whole grid.
// bindings 0 = out, 1 = a, 2 = b
#ifdef SIMPLE
layout(local_size_x = 8) in;
#else
layout(local_size_x = 256) in;
#endif

layout(push_constant) uniform Push {
	uint n, D;
	uint o_off, a_off, b_off;
} p;

layout(binding = 0) buffer O { float o[]; };
layout(binding = 1) readonly buffer A { float a[]; };
layout(binding = 2) readonly buffer B { float b[]; };

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
	for (uint i = gl_GlobalInvocationID.x; i < p.n; i += gl_NumWorkGroups.x * 8u) {
#else
	uint tid = gl_LocalInvocationID.x;
	for (uint i = gl_WorkGroupID.x; i < p.n; i += gl_NumWorkGroups.x) {
#endif
		uint row = i * p.D;
		precise float s = 0.0;
		for (uint j = tid; j < p.D; j += NT) {
			precise float q = a[p.a_off + row + j] * b[p.b_off + row + j];
			s += q;
		}
#ifdef SIMPLE
		o[p.o_off + i] = s;
#else
		red[tid] = s;
		barrier();
		for (uint h = 128u; h > 0u; h >>= 1) {
			if (tid < h)
				red[tid] += red[tid + h];
			barrier();
		}
		if (tid == 0u)
			o[p.o_off + i] = red[0];
		barrier(); // red is rewritten by the next row
#endif
	}
}
