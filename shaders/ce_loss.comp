#version 450
// Cross-entropy over one chunk of logits (the lm_head matmul runs before, matmul_bwd after).
// Default: one group per token row j of z [n, V] (in place):
//   y = labels[j]; y == -100: term[j] = 0, z[j] = 0 (dx of the token becomes 0)
//   y outside [0, V): term[j] = NaN, z[j] = 0 (the loss turns NaN: a bad label is never silent)
//   else m = max z, s = sum exp(z - m), lse = m + log s, term[j] = lse - z[y],
//        z[j][v] = inv_n * (exp(z[j][v] - lse) - (v == y))
//   bindings 0 = z, 1 = labels (i32), 2 = term
// -DTWO_PASS: the same result in two passes over the row instead of three: one read for the max
//   and the sum of exp together (each invocation keeps a running pair (m, s), s rescaled by
//   exp(m_old - m_new) when its max grows; the pairs merged in a fixed tree), then one read and
//   write for the gradient; with p.vec (V and z_off multiples of 4) vec4 accesses, four loads in
//   flight per invocation. The sum is reassociated (fp32 rounding differs from the default's).
// -DSUM: one group: loss[0] += inv_n * sum_j term[j], summed in a fixed order (no atomics)
//   bindings 0 = loss, 2 = term
#extension GL_EXT_control_flow_attributes : enable
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint V, n;
	uint z_off, lab_off, term_off; // SUM: z_off is the loss offset
	float inv_n;
	uint vec; // TWO_PASS: rows on 16-byte boundaries
} p;

layout(binding = 0) buffer Z { float z[]; };
layout(binding = 0) buffer Z4 { vec4 z4[]; };
layout(binding = 1) readonly buffer L { int lab[]; };
layout(binding = 2) buffer TM { float term[]; };

shared float red[256];

// the sum (or max) of red[0..256) into red[0]; every invocation calls it
void reduce_sum(uint t)
{
	barrier();
	for (uint w = 128u; w > 0u; w >>= 1) {
		if (t < w)
			red[t] += red[t + w];
		barrier();
	}
}

void reduce_max(uint t)
{
	barrier();
	for (uint w = 128u; w > 0u; w >>= 1) {
		if (t < w)
			red[t] = max(red[t], red[t + w]);
		barrier();
	}
}

#ifdef TWO_PASS
shared float redm[256];

// the running (max, sum of exp) pair of an invocation, four more values in
void upd4(inout float m, inout float s, vec4 a)
{
	float mx = max(max(a.x, a.y), max(a.z, a.w));
	if (mx > m) {
		s *= exp(m - mx);
		m = mx;
	}
	s += (exp(a.x - m) + exp(a.y - m)) + (exp(a.z - m) + exp(a.w - m));
}
#endif

void main()
{
	uint t = gl_LocalInvocationID.x;
#ifdef SUM
	float s = 0.0;
	for (uint i = t; i < p.n; i += 256u)
		s += term[p.term_off + i];
	red[t] = s;
	reduce_sum(t);
	if (t == 0u) {
		precise float add = p.inv_n * red[0];
		precise float r = z[p.z_off] + add;
		z[p.z_off] = r;
	}
#elif defined(TWO_PASS)
	uint j = gl_WorkGroupID.x;
	uint row = p.z_off + j * p.V;
	int y = lab[p.lab_off + j];
	if (y < 0 || uint(y) >= p.V) {
		for (uint v = t; v < p.V; v += 256u)
			z[row + v] = 0.0;
		if (t == 0u)
			term[p.term_off + j] = y == -100 ? 0.0 : uintBitsToFloat(0x7fc00000u);
		return;
	}
	float m = -3.402823466e38, s = 0.0;
	uint V4 = p.V >> 2, r4 = row >> 2;
	if (p.vec != 0u) {
		for (uint v = t; v < V4; v += 1024u) {
			vec4 a[4];
			[[unroll]] for (uint u = 0u; u < 4u; u++)
				if (v + 256u * u < V4)
					a[u] = z4[r4 + v + 256u * u];
			[[unroll]] for (uint u = 0u; u < 4u; u++)
				if (v + 256u * u < V4)
					upd4(m, s, a[u]);
		}
	} else {
		for (uint v = t; v < p.V; v += 256u) {
			float a = z[row + v];
			if (a > m) {
				s *= exp(m - a);
				m = a;
			}
			s += exp(a - m);
		}
	}
	redm[t] = m;
	red[t] = s;
	barrier();
	for (uint w = 128u; w > 0u; w >>= 1) {
		if (t < w) {
			float m1 = redm[t], m2 = redm[t + w], mm = max(m1, m2);
			red[t] = red[t] * exp(m1 - mm) + red[t + w] * exp(m2 - mm);
			redm[t] = mm;
		}
		barrier();
	}
	precise float lse = redm[0] + log(red[0]);
	if (t == 0u) {
		precise float tm = lse - z[row + uint(y)];
		term[p.term_off + j] = tm;
	}
	memoryBarrierBuffer();
	barrier(); // z[y] is read before any invocation overwrites the row
	if (p.vec != 0u) {
		for (uint v = t; v < V4; v += 1024u) {
			vec4 a[4];
			[[unroll]] for (uint u = 0u; u < 4u; u++)
				if (v + 256u * u < V4)
					a[u] = z4[r4 + v + 256u * u];
			[[unroll]] for (uint u = 0u; u < 4u; u++) {
				uint i = v + 256u * u;
				if (i >= V4)
					continue;
				vec4 hot = vec4(equal(uvec4(4u * i) + uvec4(0u, 1u, 2u, 3u), uvec4(uint(y))));
				z4[r4 + i] = p.inv_n * (exp(a[u] - lse) - hot);
			}
		}
	} else {
		for (uint v = t; v < p.V; v += 256u) {
			precise float q = exp(z[row + v] - lse) - (v == uint(y) ? 1.0 : 0.0);
			z[row + v] = p.inv_n * q;
		}
	}
#else
	uint j = gl_WorkGroupID.x;
	uint row = p.z_off + j * p.V;
	int y = lab[p.lab_off + j];
	if (y < 0 || uint(y) >= p.V) {
		for (uint v = t; v < p.V; v += 256u)
			z[row + v] = 0.0;
		if (t == 0u)
			term[p.term_off + j] = y == -100 ? 0.0 : uintBitsToFloat(0x7fc00000u);
		return;
	}
	float m = -3.402823466e38;
	for (uint v = t; v < p.V; v += 256u)
		m = max(m, z[row + v]);
	red[t] = m;
	reduce_max(t);
	m = red[0];
	barrier(); // everyone has read red[0] before it is reused
	float s = 0.0;
	for (uint v = t; v < p.V; v += 256u)
		s += exp(z[row + v] - m);
	red[t] = s;
	reduce_sum(t);
	precise float lse = m + log(red[0]);
	if (t == 0u) {
		precise float tm = lse - z[row + uint(y)];
		term[p.term_off + j] = tm;
	}
	memoryBarrierBuffer();
	barrier(); // z[y] is read before any invocation overwrites the row
	for (uint v = t; v < p.V; v += 256u) {
		precise float q = exp(z[row + v] - lse) - (v == uint(y) ? 1.0 : 0.0);
		z[row + v] = p.inv_n * q;
	}
#endif
}
