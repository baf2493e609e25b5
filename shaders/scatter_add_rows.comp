#version 450
// Mixture of experts, the weighted combine: y[idx[i], j] += w[i] · x[i, j] (+=) for the rows
// i < n of this dispatch, for the rows [r0, r0 + rn) of y that are bound (y is bound in chunks of
// rows when it exceeds one binding). -DUNIT: every weight is 1 (y += x, no multiply, w unbound).
// The idx of one call are distinct (backend.h), so no two invocations write one element: no
// atomics. The product and the sum are rounded separately (precise: no fused multiply-add), as
// the CPU reference does. An idx outside [0, T) is skipped (the device cannot report it).
// bindings 0 = y rows, 1 = x, 2 = idx (i32), 3 = w

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n, D, T;
	uint r0, rn;
	uint y_off, x_off, idx_off, w_off;
} p;

layout(binding = 0) buffer Y { float y[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) readonly buffer I { int idx[]; };
#ifndef UNIT
layout(binding = 3) readonly buffer W { float w[]; };
#endif

void main()
{
	uint total = p.n * p.D;
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint k = gl_GlobalInvocationID.x; k < total; k += stride) {
		uint i = k / p.D, j = k % p.D;
		int id = idx[p.idx_off + i];
		if (id < 0 || uint(id) >= p.T || uint(id) < p.r0 || uint(id) - p.r0 >= p.rn)
			continue;
		uint l = p.y_off + (uint(id) - p.r0) * p.D + j;
#ifdef UNIT
		precise float v = y[l] + x[p.x_off + k];
#else
		precise float prod = w[p.w_off + i] * x[p.x_off + k];
		precise float v = y[l] + prod;
#endif
		y[l] = v;
	}
}
