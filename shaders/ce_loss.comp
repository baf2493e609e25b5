#version 450
// Cross-entropy over one chunk of logits (the lm_head matmul runs before, matmul_bwd after).
// Default: one group per token row j of z [n, V] (in place):
//   y = labels[j]; y == -100: term[j] = 0, z[j] = 0 (dx of the token becomes 0)
//   y outside [0, V): term[j] = NaN, z[j] = 0 (the loss turns NaN: a bad label is never silent)
//   else m = max z, s = sum exp(z - m), lse = m + log s, term[j] = lse - z[y],
//        z[j][v] = inv_n * (exp(z[j][v] - lse) - (v == y))
//   bindings 0 = z, 1 = labels (i32), 2 = term
// -DSUM: one group: loss[0] += inv_n * sum_j term[j], summed in a fixed order (no atomics)
//   bindings 0 = loss, 2 = term
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint V, n;
	uint z_off, lab_off, term_off; // SUM: z_off is the loss offset
	float inv_n;
} p;

layout(binding = 0) buffer Z { float z[]; };
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
