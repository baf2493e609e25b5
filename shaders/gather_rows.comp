#version 450
// Mixture of experts, tokens grouped by expert: y[i, j] = x[idx[i], j] (=) for the rows i < n of
// this dispatch, for the rows [r0, r0 + rn) of x that are bound (x is bound in chunks of rows
// when it exceeds one binding; every chunk scans all idx). A bit-exact copy.
// An idx outside [0, T) cannot be reported without a download, so the dispatch with first != 0
// writes NaN into that row of y (as embed does): the loss turns NaN instead of training on some
// other token. The CPU reference fails such a call.
// bindings 0 = y, 1 = x rows, 2 = idx (i32)

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint n, D, T;
	uint r0, rn;
	uint y_off, x_off, idx_off;
	uint first;
} p;

layout(binding = 0) buffer Y { float y[]; };
layout(binding = 1) readonly buffer X { float x[]; };
layout(binding = 2) readonly buffer I { int idx[]; };

void main()
{
	uint total = p.n * p.D;
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint k = gl_GlobalInvocationID.x; k < total; k += stride) {
		uint i = k / p.D, j = k % p.D;
		int id = idx[p.idx_off + i];
		if (id < 0 || uint(id) >= p.T) {
			if (p.first != 0u)
				y[p.y_off + k] = uintBitsToFloat(0x7fc00000u);
			continue;
		}
		if (uint(id) < p.r0 || uint(id) - p.r0 >= p.rn)
			continue;
		y[p.y_off + k] = x[p.x_off + (uint(id) - p.r0) * p.D + j];
	}
}
