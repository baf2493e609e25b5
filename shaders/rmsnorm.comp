#version 450
// RMSNorm over rows of D fp32 values; one workgroup per row (rows strided over the groups).
//   forward:  y[t,j] = (x[t,j] · r) · w[j], rstd[t] = r = 1/sqrt(mean_j x² + eps)   (=)
//             bindings 0 = y, 1 = rstd, 2 = x, 3 = w
//   -DBWD:    dx[t,j] (+)= r w[j] dy[t,j] − x[t,j] · r³/D · Σ_j w dy x
//             bindings 0 = dx, 1 = dy, 2 = x, 3 = w, 4 = rstd
// The row sum is a fixed-order tree over 256 partials (deterministic, no atomics).
// -DSIMPLE (CPU-type devices, ARCHITECTURE §7): one invocation per row, the sum a plain loop, no
// shared memory or barriers; rows strided over the whole grid.
#ifdef SIMPLE
layout(local_size_x = 8) in;
#else
layout(local_size_x = 256) in;
#endif

layout(push_constant) uniform Push {
	uint T, D;
	uint o_off, a_off, x_off, w_off, r_off; // o: y or dx; a: rstd (forward) or dy (backward)
	float eps;
	uint accumulate;
} p;

layout(binding = 0) buffer O { float o[]; };
#ifdef BWD
layout(binding = 1) readonly buffer A { float a[]; };
layout(binding = 4) readonly buffer R { float rs[]; };
#else
layout(binding = 1) buffer A { float a[]; };
#endif
layout(binding = 2) readonly buffer X { float x[]; };
layout(binding = 3) readonly buffer W { float w[]; };

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
		uint row = t * p.D;
		float s = 0.0;
		for (uint j = tid; j < p.D; j += NT) {
			float xv = x[p.x_off + row + j];
#ifdef BWD
			precise float q = w[p.w_off + j] * a[p.a_off + row + j];
			precise float qx = q * xv;
			s += qx;
#else
			s += xv * xv;
#endif
		}
#ifdef SIMPLE
		float sum = s;
#else
		red[tid] = s;
		barrier();
		for (uint h = 128u; h > 0u; h >>= 1) {
			if (tid < h)
				red[tid] += red[tid + h];
			barrier();
		}
		float sum = red[0];
		barrier(); // red is rewritten by the next row
#endif
#ifdef BWD
		float r = rs[p.r_off + t];
		precise float r3 = r * r * r;
		precise float c = r3 * sum / float(p.D);
		for (uint j = tid; j < p.D; j += NT) {
			uint i = row + j;
			precise float g = r * w[p.w_off + j] * a[p.a_off + i] - x[p.x_off + i] * c;
			if (p.accumulate != 0u)
				g = o[p.o_off + i] + g;
			o[p.o_off + i] = g;
		}
#else
		precise float mean = sum / float(p.D);
		precise float r = 1.0 / sqrt(mean + p.eps);
		if (tid == 0u)
			a[p.a_off + t] = r;
		for (uint j = tid; j < p.D; j += NT) {
			precise float n = x[p.x_off + row + j] * r;
			precise float y = n * w[p.w_off + j];
			o[p.o_off + row + j] = y;
		}
#endif
	}
}
