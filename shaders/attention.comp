#version 450
// Flash-style causal GQA attention forward: o (=) and lse (=, natural log) for one tile of BQ
// queries of head h per workgroup, streaming key tiles with an online softmax in fp32; only
// lse [H, T] leaves the shader, never a T x T score matrix.
// Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg. Groups: (ceil(T / BQ), H).
#extension GL_GOOGLE_include_directive : require
#include "common/attention.glsl"

layout(binding = 0) writeonly buffer Ob { float o_[]; };
layout(binding = 1) writeonly buffer Lb { float lse_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };

// Rows as vec4 (so the scores' dot products read four elements a load), padded by one vec4
shared vec4 Qs[BQ][DMAX / 4u + 1u]; // the query tile, whole rows
shared vec4 KVs[BK][DC / 4u + 1u];  // one chunk of the key (then value) tile
shared float Ps[BQ][BK + 1u];   // scores, then probabilities
shared int segq[BQ], segk[BK];
shared uint anyv; // whether any (query, key) pair of the tile is visible

void main()
{
	uint t = gl_LocalInvocationID.x, r = t >> 4, c = t & 15u;
	uint q0 = gl_WorkGroupID.x * BQ, h = gl_WorkGroupID.y;
	uint g = h / (p.H / p.Hkv);
	uint i = q0 + r;

	for (uint e = t; e < BQ * p.Dh; e += 256u) {
		uint rr = e / p.Dh, d = e % p.Dh;
		Qs[rr][d >> 2][d & 3u] = q0 + rr < p.T ? q_[p.off[2] + ((q0 + rr) * p.H + h) * p.Dh + d] : 0.0;
	}
	if (t < BQ)
		segq[t] = q0 + t < p.T ? seg_[p.off[5] + q0 + t] : 0;

	float m = NEG, l = 0.0;
	float acc[NCH * NCOL];
	[[unroll]] for (uint x = 0u; x < NCH * NCOL; x++)
		acc[x] = 0.0;

	uint kstart = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + BQ);
	for (uint k0 = kstart; k0 < kend; k0 += BK) {
		barrier(); // the previous tile's reads of Ps, KVs, segk are done
		if (t < BK)
			segk[t] = k0 + t < p.T ? seg_[p.off[5] + k0 + t] : 0;
		if (t == 0u)
			anyv = 0u;
		barrier();
		uint j = k0 + c;
		bool valid = attn_sees(i, j, segq[r], segk[c]);
		if (valid)
			atomicOr(anyv, 1u);
		barrier();
		if (anyv == 0u)
			continue; // uniform: every invocation read anyv before the next write

		// s = scale * q_i . k_j
		float s = 0.0;
		[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
			uint d0 = ch * DC;
			if (d0 >= p.Dh)
				break;
			barrier();
			for (uint e = t; e < BK * DC; e += 256u) {
				uint rr = e / DC, d = e % DC;
				KVs[rr][d >> 2][d & 3u] = k0 + rr < p.T && d0 + d < p.Dh
								  ? k_[p.off[3] + ((k0 + rr) * p.Hkv + g) * p.Dh + d0 + d]
								  : 0.0;
			}
			barrier();
			uint dn = min(DC, p.Dh - d0);
			for (uint d = 0u; d < dn / 4u; d++)
				s += dot(Qs[r][d0 / 4u + d], KVs[c][d]);
			for (uint d = dn & ~3u; d < dn; d++) // Dh not a multiple of 4
				s += Qs[r][(d0 + d) >> 2][d & 3u] * KVs[c][d >> 2][d & 3u];
		}
		s *= p.scale;

		// online softmax: new row maximum, rescale what was summed so far
		Ps[r][c] = valid ? s : NEG;
		barrier();
		float mt = NEG;
		for (uint jj = 0u; jj < BK; jj++)
			mt = max(mt, Ps[r][jj]);
		float mn = max(m, mt);
		barrier();
		Ps[r][c] = valid ? exp(s - mn) : 0.0;
		barrier();
		float rs = 0.0;
		for (uint jj = 0u; jj < BK; jj++)
			rs += Ps[r][jj];
		float alpha = exp(m - mn);
		l = l * alpha + rs;
		m = mn;
		[[unroll]] for (uint x = 0u; x < NCH * NCOL; x++)
			acc[x] *= alpha;

		// acc += P V
		[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
			uint d0 = ch * DC;
			if (d0 >= p.Dh)
				break;
			barrier();
			for (uint e = t; e < BK * DC; e += 256u) {
				uint rr = e / DC, d = e % DC;
				KVs[rr][d >> 2][d & 3u] = k0 + rr < p.T && d0 + d < p.Dh
								  ? v_[p.off[4] + ((k0 + rr) * p.Hkv + g) * p.Dh + d0 + d]
								  : 0.0;
			}
			barrier();
			[[unroll]] for (uint x = 0u; x < NCOL; x++) {
				float a = 0.0;
				for (uint jj = 0u; jj < BK; jj++)
					a += Ps[r][jj] * KVs[jj][(c + 16u * x) >> 2][c & 3u];
				acc[ch * NCOL + x] += a;
			}
		}
	}

	if (i >= p.T)
		return;
	[[unroll]] for (uint ch = 0u; ch < NCH; ch++)
		[[unroll]] for (uint x = 0u; x < NCOL; x++) {
			uint d = ch * DC + c + 16u * x;
			if (d < p.Dh)
				o_[p.off[0] + (i * p.H + h) * p.Dh + d] = acc[ch * NCOL + x] / l;
		}
	if (c == 0u)
		lse_[p.off[1] + h * p.T + i] = m + log(l);
}
