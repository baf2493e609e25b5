#version 450
// The embedding gather's backward, a scatter-add: dE[ids[t], j] += dy[t, j] (+=) for the tokens
// [0, T) of this dispatch in token order, for the rows [r0, r0 + rn) of dE that are bound.
// One invocation owns one column j and walks the tokens in order, so repeated ids accumulate
// without atomics and in the same order on every run (and as the CPU reference does). Ids
// outside [0, V) are skipped (the forward wrote NaN rows for them).
// bindings 0 = dE rows (f32), 1 = dy (f32), 2 = ids (i32)

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, D, V;
	uint r0, rn;
	uint e_off, dy_off, ids_off;
} p;

layout(binding = 0) buffer E { float de[]; };
layout(binding = 1) readonly buffer Y { float dy[]; };
layout(binding = 2) readonly buffer I { int ids[]; };

void main()
{
	uint stride = gl_NumWorkGroups.x * 256u;
	for (uint j = gl_GlobalInvocationID.x; j < p.D; j += stride) {
		for (uint t = 0u; t < p.T; t++) {
			int id = ids[p.ids_off + t];
			if (id < 0 || uint(id) >= p.V || uint(id) < p.r0 || uint(id) - p.r0 >= p.rn)
				continue;
			uint l = p.e_off + (uint(id) - p.r0) * p.D + j;
			de[l] += dy[p.dy_off + t * p.D + j];
		}
	}
}
