#version 450
// Flash-style causal GQA attention backward, deterministic (no atomics on floats), three passes
// that recompute P = exp(scale q.k - lse) in tiles (training-math.md "Attention"):
//   PASS_PREP: scr[2 (h T + i)] = lse[h, i], scr[... + 1] = Dr = rowsum(dO o o). scr is the dq
//              tensor, used as scratch until PASS_Q writes it.
//              Bindings: 0 = scr, 1 = dout, 2 = o, 3 = lse. Groups: (n, 1), grid-stride.
//   PASS_KV:   one workgroup per tile of BK keys of KV head g loops over the query tiles of every
//              head sharing g: dV = P^T dO, dK = scale dS^T Q with dS = P (dO V^T - Dr) (=).
//              Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//              Groups: (ceil(T / BK), Hkv).
//   PASS_Q:    one workgroup per tile of BQ queries of head h loops over key tiles:
//              dQ = scale dS K (=), Dr recomputed from o.
//              Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = o, 6 = lse, 7 = seg.
//              Groups: (ceil(T / BQ), H).
#extension GL_GOOGLE_include_directive : require
#include "common/attention.glsl"

#if defined(PASS_PREP)
layout(binding = 0) writeonly buffer Scr { float scr_[]; };
layout(binding = 1) readonly buffer Gb { float g_[]; };
layout(binding = 2) readonly buffer Ob { float o_[]; };
layout(binding = 3) readonly buffer Lb { float lse_[]; };

void main()
{
	uint n = p.H * p.T, stride = gl_NumWorkGroups.x * 256u;
	for (uint x = gl_GlobalInvocationID.x; x < n; x += stride) {
		uint h = x / p.T, i = x % p.T;
		uint base = (i * p.H + h) * p.Dh;
		float dr = 0.0;
		for (uint d = 0u; d < p.Dh; d++)
			dr += g_[p.off[1] + base + d] * o_[p.off[2] + base + d];
		scr_[p.off[0] + 2u * x] = lse_[p.off[3] + x];
		scr_[p.off[0] + 2u * x + 1u] = dr;
	}
}

#elif defined(PASS_KV)
layout(binding = 0) writeonly buffer DKb { float dk_[]; };
layout(binding = 1) writeonly buffer DVb { float dv_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Gb { float g_[]; };
layout(binding = 6) readonly buffer Sb { int seg_[]; };
layout(binding = 7) readonly buffer Scr { float scr_[]; };

// rows as vec4 (the dot products over the head dimension read four elements a load), padded
shared vec4 Ks[BK][DC / 4u + 1u], Vs[BK][DC / 4u + 1u], Qs[BQ][DC / 4u + 1u], Gs[BQ][DC / 4u + 1u];
shared float Ps[BK][BQ + 1u], Ss[BK][BQ + 1u]; // [key][query]: P and dS
shared float lseq[BQ], drq[BQ];
shared int segq[BQ], segk[BK];
shared uint anyv;

// Loads chunk d0 of the query-side rows (q and dO of queries i0.., head h).
void load_q(uint i0, uint h, uint d0, uint t)
{
	for (uint e = t; e < BQ * DC; e += 256u) {
		uint rr = e / DC, d = e % DC;
		bool in_ = i0 + rr < p.T && d0 + d < p.Dh;
		uint a = ((i0 + rr) * p.H + h) * p.Dh + d0 + d;
		Qs[rr][d >> 2][d & 3u] = in_ ? q_[p.off[2] + a] : 0.0;
		Gs[rr][d >> 2][d & 3u] = in_ ? g_[p.off[5] + a] : 0.0;
	}
}

void main()
{
	uint t = gl_LocalInvocationID.x, r = t >> 4, c = t & 15u;
	uint k0 = gl_WorkGroupID.x * BK, g = gl_WorkGroupID.y;
	uint grp = p.H / p.Hkv;
	uint j = k0 + r; // this invocation's key; c indexes queries

	if (t < BK)
		segk[t] = k0 + t < p.T ? seg_[p.off[6] + k0 + t] : 0;
	float dk[NCH * NCOL], dv[NCH * NCOL];
	[[unroll]] for (uint x = 0u; x < NCH * NCOL; x++) {
		dk[x] = 0.0;
		dv[x] = 0.0;
	}
	uint qend = p.window > 0u ? min(p.T, k0 + BK - 1u + p.window) : p.T;
	for (uint h = g * grp; h < (g + 1u) * grp; h++) {
		for (uint i0 = k0; i0 < qend; i0 += BQ) {
			barrier(); // the previous tile's reads of shared memory are done
			if (t < BQ) {
				uint ii = i0 + t;
				bool in_ = ii < p.T;
				segq[t] = in_ ? seg_[p.off[6] + ii] : 0;
				lseq[t] = in_ ? scr_[p.off[7] + 2u * (h * p.T + ii)] : 0.0;
				drq[t] = in_ ? scr_[p.off[7] + 2u * (h * p.T + ii) + 1u] : 0.0;
			}
			if (t == 0u)
				anyv = 0u;
			barrier();
			uint i = i0 + c;
			bool valid = attn_sees(i, j, segq[c], segk[r]);
			if (valid)
				atomicOr(anyv, 1u);
			barrier();
			if (anyv == 0u)
				continue;

			// s = q_i . k_j, dp = dO_i . v_j
			float s = 0.0, dp = 0.0;
			[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
				uint d0 = ch * DC;
				if (d0 >= p.Dh)
					break;
				barrier();
				for (uint e = t; e < BK * DC; e += 256u) {
					uint rr = e / DC, d = e % DC;
					bool in_ = k0 + rr < p.T && d0 + d < p.Dh;
					uint a = ((k0 + rr) * p.Hkv + g) * p.Dh + d0 + d;
					Ks[rr][d >> 2][d & 3u] = in_ ? k_[p.off[3] + a] : 0.0;
					Vs[rr][d >> 2][d & 3u] = in_ ? v_[p.off[4] + a] : 0.0;
				}
				load_q(i0, h, d0, t);
				barrier();
				uint dn = min(DC, p.Dh - d0);
				for (uint d = 0u; d < dn / 4u; d++) {
					s += dot(Ks[r][d], Qs[c][d]);
					dp += dot(Vs[r][d], Gs[c][d]);
				}
				for (uint d = dn & ~3u; d < dn; d++) { // Dh not a multiple of 4
					s += Ks[r][d >> 2][d & 3u] * Qs[c][d >> 2][d & 3u];
					dp += Vs[r][d >> 2][d & 3u] * Gs[c][d >> 2][d & 3u];
				}
			}
			float pr = valid ? exp(s * p.scale - lseq[c]) : 0.0;
			Ps[r][c] = pr;
			Ss[r][c] = pr * (dp - drq[c]);
			barrier();

			// dV_j += sum_i P_ji dO_i, dK_j += sum_i dS_ji Q_i
			[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
				uint d0 = ch * DC;
				if (d0 >= p.Dh)
					break;
				if (p.Dh > DC) { // else chunk 0 is still loaded
					barrier();
					load_q(i0, h, d0, t);
					barrier();
				}
				[[unroll]] for (uint x = 0u; x < NCOL; x++) {
					uint d = c + 16u * x;
					float a = 0.0, b = 0.0;
					for (uint ii = 0u; ii < BQ; ii++) {
						a += Ps[r][ii] * Gs[ii][d >> 2][d & 3u];
						b += Ss[r][ii] * Qs[ii][d >> 2][d & 3u];
					}
					dv[ch * NCOL + x] += a;
					dk[ch * NCOL + x] += b;
				}
			}
		}
	}

	if (j >= p.T)
		return;
	[[unroll]] for (uint ch = 0u; ch < NCH; ch++)
		[[unroll]] for (uint x = 0u; x < NCOL; x++) {
			uint d = ch * DC + c + 16u * x;
			if (d < p.Dh) {
				uint a = (j * p.Hkv + g) * p.Dh + d;
				dk_[p.off[0] + a] = dk[ch * NCOL + x] * p.scale;
				dv_[p.off[1] + a] = dv[ch * NCOL + x];
			}
		}
}

#else // PASS_Q
layout(binding = 0) writeonly buffer DQb { float dq_[]; };
layout(binding = 1) readonly buffer Gb { float g_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Ob { float o_[]; };
layout(binding = 6) readonly buffer Lb { float lse_[]; };
layout(binding = 7) readonly buffer Sb { int seg_[]; };

// rows as vec4, as in PASS_KV
shared vec4 Qs[BQ][DC / 4u + 1u], Gs[BQ][DC / 4u + 1u], Ks[BK][DC / 4u + 1u], Vs[BK][DC / 4u + 1u];
shared float Ss[BQ][BK + 1u]; // dS [query][key]; first the Dr partial sums
shared float lseq[BQ], drq[BQ];
shared int segq[BQ], segk[BK];
shared uint anyv;

void load_k(uint k0, uint g, uint d0, uint t)
{
	for (uint e = t; e < BK * DC; e += 256u) {
		uint rr = e / DC, d = e % DC;
		bool in_ = k0 + rr < p.T && d0 + d < p.Dh;
		uint a = ((k0 + rr) * p.Hkv + g) * p.Dh + d0 + d;
		Ks[rr][d >> 2][d & 3u] = in_ ? k_[p.off[3] + a] : 0.0;
		Vs[rr][d >> 2][d & 3u] = in_ ? v_[p.off[4] + a] : 0.0;
	}
}

void main()
{
	uint t = gl_LocalInvocationID.x, r = t >> 4, c = t & 15u;
	uint q0 = gl_WorkGroupID.x * BQ, h = gl_WorkGroupID.y;
	uint g = h / (p.H / p.Hkv);
	uint i = q0 + r; // this invocation's query; c indexes keys

	// Dr_i = rowsum(dO_i o o_i): 16 partial sums per row, added in a fixed order
	float part = 0.0;
	if (i < p.T)
		for (uint d = c; d < p.Dh; d += 16u)
			part += g_[p.off[1] + (i * p.H + h) * p.Dh + d] * o_[p.off[5] + (i * p.H + h) * p.Dh + d];
	Ss[r][c] = part;
	if (t < BQ) {
		segq[t] = q0 + t < p.T ? seg_[p.off[7] + q0 + t] : 0;
		lseq[t] = q0 + t < p.T ? lse_[p.off[6] + h * p.T + q0 + t] : 0.0;
	}
	barrier();
	if (t < BQ) {
		float dr = 0.0;
		for (uint x = 0u; x < 16u; x++)
			dr += Ss[t][x];
		drq[t] = dr;
	}

	float dq[NCH * NCOL];
	[[unroll]] for (uint x = 0u; x < NCH * NCOL; x++)
		dq[x] = 0.0;
	uint kstart = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + BQ);
	for (uint k0 = kstart; k0 < kend; k0 += BK) {
		barrier(); // the previous tile's reads (and the Dr sums) are done
		if (t < BK)
			segk[t] = k0 + t < p.T ? seg_[p.off[7] + k0 + t] : 0;
		if (t == 0u)
			anyv = 0u;
		barrier();
		uint j = k0 + c;
		bool valid = attn_sees(i, j, segq[r], segk[c]);
		if (valid)
			atomicOr(anyv, 1u);
		barrier();
		if (anyv == 0u)
			continue;

		float s = 0.0, dp = 0.0;
		[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
			uint d0 = ch * DC;
			if (d0 >= p.Dh)
				break;
			barrier();
			for (uint e = t; e < BQ * DC; e += 256u) {
				uint rr = e / DC, d = e % DC;
				bool in_ = q0 + rr < p.T && d0 + d < p.Dh;
				uint a = ((q0 + rr) * p.H + h) * p.Dh + d0 + d;
				Qs[rr][d >> 2][d & 3u] = in_ ? q_[p.off[2] + a] : 0.0;
				Gs[rr][d >> 2][d & 3u] = in_ ? g_[p.off[1] + a] : 0.0;
			}
			load_k(k0, g, d0, t);
			barrier();
			uint dn = min(DC, p.Dh - d0);
			for (uint d = 0u; d < dn / 4u; d++) {
				s += dot(Qs[r][d], Ks[c][d]);
				dp += dot(Gs[r][d], Vs[c][d]);
			}
			for (uint d = dn & ~3u; d < dn; d++) { // Dh not a multiple of 4
				s += Qs[r][d >> 2][d & 3u] * Ks[c][d >> 2][d & 3u];
				dp += Gs[r][d >> 2][d & 3u] * Vs[c][d >> 2][d & 3u];
			}
		}
		float pr = valid ? exp(s * p.scale - lseq[r]) : 0.0;
		Ss[r][c] = pr * (dp - drq[r]);
		barrier();

		// dQ_i += sum_j dS_ij K_j
		[[unroll]] for (uint ch = 0u; ch < NCH; ch++) {
			uint d0 = ch * DC;
			if (d0 >= p.Dh)
				break;
			if (p.Dh > DC) {
				barrier();
				load_k(k0, g, d0, t);
				barrier();
			}
			[[unroll]] for (uint x = 0u; x < NCOL; x++) {
				float a = 0.0;
				for (uint jj = 0u; jj < BK; jj++)
					a += Ss[r][jj] * Ks[jj][(c + 16u * x) >> 2][c & 3u];
				dq[ch * NCOL + x] += a;
			}
		}
	}

	if (i >= p.T)
		return;
	[[unroll]] for (uint ch = 0u; ch < NCH; ch++)
		[[unroll]] for (uint x = 0u; x < NCOL; x++) {
			uint d = ch * DC + c + 16u * x;
			if (d < p.Dh)
				dq_[p.off[0] + (i * p.H + h) * p.Dh + d] = dq[ch * NCOL + x] * p.scale;
		}
}
#endif
