#version 450
// Attention of Tq new queries over a KV cache (backend.h, attention_kv): one workgroup per
// (query i, head h), WG threads. Keys are taken in tiles of WG: each thread scores one key of the
// tile (q in shared memory), the tile's maximum and probabilities go through shared memory, and
// each thread accumulates the output dimensions d = t, t + WG, ... with an online softmax across
// tiles. Query i is token p0 + i, p0 = Tk - Tq; it sees keys j <= p0 + i (and, with window > 0,
// p0 + i - j < window). Dh <= WG * DX (the host checks).
//   Bindings: 0 = o [Tq,H,Dh], 1 = q [Tq,H,Dh], 2 = k [Tk,Hkv,Dh], 3 = v [Tk,Hkv,Dh] (floats).
//   Groups: (Tq, H).
#extension GL_EXT_control_flow_attributes : enable

#define WG 64
#define DX 4 // output dimensions per thread: Dh <= 256
#define NEG (-1.0e30)

layout(local_size_x = WG) in;

layout(push_constant) uniform Push {
	uint Tq, Tk, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[4];
} p;

layout(binding = 0) writeonly buffer Ob { float o_[]; };
layout(binding = 1) readonly buffer Qb { float q_[]; };
layout(binding = 2) readonly buffer Kb { float k_[]; };
layout(binding = 3) readonly buffer Vb { float v_[]; };

shared float qs[WG * DX];
shared float ps[WG];
shared float red[WG];

void main()
{
	uint i = gl_WorkGroupID.x, h = gl_WorkGroupID.y, t = gl_LocalInvocationID.x;
	uint g = h / (p.H / p.Hkv), Dh = p.Dh;
	uint pos = p.Tk - p.Tq + i;
	uint j0 = p.window > 0u && pos + 1u > p.window ? pos + 1u - p.window : 0u;
	uint qb = p.off[1] + (i * p.H + h) * Dh;
	for (uint d = t; d < Dh; d += WG)
		qs[d] = q_[qb + d];
	barrier();
	float m = NEG, l = 0.0;
	float acc[DX];
	[[unroll]] for (int x = 0; x < DX; x++)
		acc[x] = 0.0;
	for (uint base = j0; base <= pos; base += WG) {
		uint j = base + t;
		float s = NEG;
		if (j <= pos) {
			uint kb = p.off[2] + (j * p.Hkv + g) * Dh;
			float dot = 0.0;
			for (uint d = 0u; d < Dh; d++)
				dot += qs[d] * k_[kb + d];
			s = dot * p.scale;
		}
		red[t] = s;
		barrier();
		[[unroll]] for (uint w = WG / 2u; w > 0u; w >>= 1u) {
			if (t < w)
				red[t] = max(red[t], red[t + w]);
			barrier();
		}
		float mn = max(m, red[0]);
		ps[t] = j <= pos ? exp(s - mn) : 0.0;
		barrier();
		float c = exp(m - mn);
		uint n = min(uint(WG), pos + 1u - base);
		float sum = 0.0;
		for (uint jj = 0u; jj < n; jj++)
			sum += ps[jj];
		l = l * c + sum;
		[[unroll]] for (uint x = 0u; x < uint(DX); x++) {
			uint d = t + x * WG;
			if (d < Dh) {
				float a = acc[x] * c;
				uint vb = p.off[3] + (base * p.Hkv + g) * Dh + d;
				for (uint jj = 0u; jj < n; jj++)
					a += ps[jj] * v_[vb + jj * p.Hkv * Dh];
				acc[x] = a;
			}
		}
		m = mn;
		barrier(); // ps and red are rewritten by the next tile
	}
	uint ob = p.off[0] + (i * p.H + h) * Dh;
	[[unroll]] for (uint x = 0u; x < uint(DX); x++) {
		uint d = t + x * WG;
		if (d < Dh)
			o_[ob + d] = acc[x] / l;
	}
}
