#version 450
// argmax (backend.h): out[r] = the first index of the largest non-NaN value of row r of x [rows, n],
// 0 when x[r, 0] is NaN or the row has no non-NaN value. A workgroup per row (grid-stride over
// rows): each invocation keeps the first largest of its elements i = lid, lid + 256, ..., then a
// shared-memory tree keeps, of two candidates, the larger value and on equal values the smaller
// index. Comparisons only: the result depends on no order.
// Bindings: 0 = out (i32), 1 = x (f32).
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint rows, n, out_off, x_off;
} p;

layout(binding = 0) writeonly buffer Out { int o[]; };
layout(binding = 1) readonly buffer X { float x[]; };

const uint NONE = 0xffffffffu;
shared float sv[256];
shared uint si[256];

void main()
{
	uint lid = gl_LocalInvocationID.x;
	for (uint r = gl_WorkGroupID.x; r < p.rows; r += gl_NumWorkGroups.x) {
		uint base = p.x_off + r * p.n;
		float bv = 0.0;
		uint bi = NONE;
		for (uint i = lid; i < p.n; i += 256u) {
			float v = x[base + i];
			if (!isnan(v) && (bi == NONE || v > bv)) {
				bv = v;
				bi = i;
			}
		}
		sv[lid] = bv;
		si[lid] = bi;
		barrier();
		for (uint h = 128u; h > 0u; h >>= 1) {
			if (lid < h) {
				float ov = sv[lid + h];
				uint oi = si[lid + h], mi = si[lid];
				if (oi != NONE && (mi == NONE || ov > sv[lid] || (ov == sv[lid] && oi < mi))) {
					sv[lid] = ov;
					si[lid] = oi;
				}
			}
			barrier();
		}
		if (lid == 0u)
			o[p.out_off + r] = isnan(x[base]) || si[0] == NONE ? 0 : int(si[0]);
		barrier(); // sv, si are rewritten by the next row
	}
}
