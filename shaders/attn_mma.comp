#version 450
// Flash attention on cooperative matrices (GL_NV_cooperative_matrix, subgroups of 32): causal GQA
// attention with sliding window and packed-sample masks, f16 operands, fp32 accumulation and
// softmax (attention precision TERN_F16, backend.h). Head dimension DH (64 or 128) is a
// compile-time constant. The outputs are fp32: o, dq [T, H, DH]; dk, dv [T, Hkv, DH]; lse [H, T];
// the operands are f16 copies (-DCAST) of q [T, H, DH], k, v [T, Hkv, DH] and of dO times s,
// read 8 halves per load; seg [T] (i32). Query i sees key j when j <= i, seg[j] == seg[i] and,
// with a window, i - j < window (common/attention.glsl's rule).
//
// Each subgroup owns 16 rows (queries, or keys in the dK/dV pass) and keeps its products in
// 16 x 16 fragments; softmax and masks need individual elements, which NV cooperative matrices
// do not expose, so a fragment goes through a 16 x 16 fp32 scratch in shared memory and lane l
// takes row l / 2, columns 8 (l % 2) .. + 7 of it ("the lane's row").
//
//   -DFWD:    o (=), lse (=). Groups (ceil(T / 64), H), 4 subgroups x 16 queries; key tiles of 64.
//             The running output stays in fragments: a row's probabilities are taken relative to
//             a reference maximum that moves (rescaling the fragments through shared memory)
//             only when a score exceeds it by more than RESCALE (p <= e^8 stays in f16 range).
//             Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg.
//   -DCAST:   dst (f16, 8 to a uvec4) = src (f32) times s (when p.Dh is 1: the dO scale
//             2^(4 - e) from the max bits in binding 2), n = p.T elements, a multiple of 8.
//             Bindings: 0 = dst, 1 = src, 2 = max bits; off[0], off[1] in uvec4 / words.
//   -DPREP:   scr[2 (h T + i)] = lse[h, i], scr[2 (h T + i) + 1] = s rowsum(dO o o)[i, h],
//             scr[2 H T] = s, where s = 2^(4 - e), e the exponent of max|dO| (so dP = s dO V^T
//             stays far inside f16 range). Bindings: 0 = scr, 1 = dout, 2 = o, 3 = lse,
//             4 = max|dO| bits. Groups: grid-stride over H T.
//   -DBWD_KV: dk, dv (=). Groups (ceil(T / 32), Hkv), 2 subgroups x 16 keys; loops over the query
//             tiles (32) of every head sharing the KV head: dV = P^T dO, dK = scale dS^T Q with
//             dS = P (dP - D), dP = dO V^T, all on s dO; the sums are divided by s at the end.
//             Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//   -DBWD_Q:  dq (=). Groups (ceil(T / 64), H), 4 subgroups x 16 queries, key tiles of 32:
//             dQ = scale dS K / s. Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = seg,
//             6 = scr.
// Deterministic: no atomics; every output element is written by one invocation.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require
#extension GL_KHR_shader_subgroup_shuffle : require

#ifndef DH
#define DH 128u
#endif
#define ND (DH / 16u)    // fragments along the head dimension
#define SK (DH / 8u + 1u) // row stride (uvec4 of 8 halves) of a [rows][DH] tile
#define NEG (-1.0e30)

#if defined(FWD) || defined(BWD_Q)
#define NSG 4u
layout(local_size_x = 128) in;
#elif defined(BWD_KV)
#define NSG 2u
layout(local_size_x = 64) in;
#else
layout(local_size_x = 256) in;
#endif

layout(push_constant) uniform Push {
	uint T, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[8]; // binding starts, in 4-byte words
	uint xmax_off;
} p;

#define FA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>

bool sees(uint i, uint j, int si, int sj)
{
	return i < p.T && j < p.T && j <= i && si == sj && (p.window == 0u || i - j < p.window);
}

uvec4 pack8(float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
{
	return uvec4(packHalf2x16(vec2(v0, v1)), packHalf2x16(vec2(v2, v3)), packHalf2x16(vec2(v4, v5)),
		     packHalf2x16(vec2(v6, v7)));
}

#include "common/scale.glsl"

// dO's scale: its largest magnitude near 2^4, so that dP = s dO V^T stays far inside f16
float dout_scale(uint b) { return tern_pow2_scale(b, 4); }

#if defined(CAST)
layout(binding = 0) writeonly buffer Db { uvec4 d4[]; };
layout(binding = 1) readonly buffer Sb { float s_[]; };
layout(binding = 2) readonly buffer XMax { uint xmax[]; };

void main()
{
	float sc = p.Dh == 1u ? dout_scale(xmax[p.xmax_off]) : 1.0;
	uint n8 = p.T / 8u;
	for (uint i = gl_GlobalInvocationID.x; i < n8; i += gl_NumWorkGroups.x * 256u) {
		uint a = p.off[1] + 8u * i;
		d4[p.off[0] + i] = pack8(s_[a] * sc, s_[a + 1u] * sc, s_[a + 2u] * sc, s_[a + 3u] * sc,
					 s_[a + 4u] * sc, s_[a + 5u] * sc, s_[a + 6u] * sc, s_[a + 7u] * sc);
	}
}

#elif defined(PREP)
layout(binding = 0) writeonly buffer Scr { float scr_[]; };
layout(binding = 1) readonly buffer Gb { float g_[]; };
layout(binding = 2) readonly buffer Ob { float o_[]; };
layout(binding = 3) readonly buffer Lb { float lse_[]; };
layout(binding = 4) readonly buffer XMax { uint xmax[]; };

void main()
{
	float s = dout_scale(xmax[p.xmax_off]);
	uint n = p.H * p.T, stride = gl_NumWorkGroups.x * 256u;
	for (uint x = gl_GlobalInvocationID.x; x < n; x += stride) {
		uint h = x / p.T, i = x % p.T;
		uint base = (i * p.H + h) * p.Dh;
		float dr = 0.0;
		for (uint d = 0u; d < p.Dh; d++)
			dr += g_[p.off[1] + base + d] * o_[p.off[2] + base + d];
		scr_[p.off[0] + 2u * x] = lse_[p.off[3] + x];
		scr_[p.off[0] + 2u * x + 1u] = dr * s;
	}
	if (gl_GlobalInvocationID.x == 0u)
		scr_[p.off[0] + 2u * n] = s;
}

#else // the cooperative-matrix passes

// 16 x 16 fp32 scratch per subgroup (64 uvec4)
shared uvec4 Sc[NSG * 64u];

uint sg, lane, lr, lh; // subgroup, lane, the lane's row (0..15) and half (0, 1)

// Stages fragment f through the scratch; v = the lane's row, columns 8 lh .. 8 lh + 7.
void frag_get(FC f, out float v[8])
{
	coopMatStoreNV(f, Sc, sg * 64u, 4u, false);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	uvec4 a = Sc[sg * 64u + lr * 4u + 2u * lh], b = Sc[sg * 64u + lr * 4u + 2u * lh + 1u];
	v = float[8](uintBitsToFloat(a.x), uintBitsToFloat(a.y), uintBitsToFloat(a.z), uintBitsToFloat(a.w),
		     uintBitsToFloat(b.x), uintBitsToFloat(b.y), uintBitsToFloat(b.z), uintBitsToFloat(b.w));
	subgroupBarrier();
}

// Copies rows r0 .. r0 + rows of head hh of a [T, hn, DH] f16 tensor (uvec4 binding, offset
// off in uvec4) into a [rows][SK] tile; rows past T load as zeros.
#define LOAD_TILE(dst, src, off, hn, hh, r0, rows)                                                \
	for (uint e_ = gl_LocalInvocationID.x; e_ < (rows) * (DH / 8u); e_ += NSG * 32u) {         \
		uint row_ = e_ / (DH / 8u), c_ = e_ % (DH / 8u);                                      \
		uvec4 w_ = uvec4(0u);                                                                 \
		if ((r0) + row_ < p.T)                                                                \
			w_ = src[(off) + (((r0) + row_) * (hn) + (hh)) * (DH / 8u) + c_];              \
		dst[row_ * SK + c_] = w_;                                                             \
	}

#if defined(FWD)
#define BQ 64u
#define BKV 64u
#define SP (BKV / 8u + 1u)
#define RESCALE 8.0
layout(binding = 0) writeonly buffer Ob { float o_[]; };
layout(binding = 1) writeonly buffer Lb { float lse_[]; };
layout(binding = 2) readonly buffer Qb { uvec4 q4[]; };
layout(binding = 3) readonly buffer Kb { uvec4 k4[]; };
layout(binding = 4) readonly buffer Vb { uvec4 v4[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };

shared uvec4 Ks[BKV * SK], Vs[BKV * SK];
shared uvec4 Ps[NSG * 16u * SP];
shared int segk[BKV];

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, lr = lane >> 1, lh = lane & 1u;
	uint q0 = gl_WorkGroupID.x * BQ, h = gl_WorkGroupID.y, g = h / (p.H / p.Hkv);
	uint i = q0 + 16u * sg + lr;
	int si = i < p.T ? seg_[p.off[5] + i] : -2;

	LOAD_TILE(Ks, q4, p.off[2], p.H, h, q0, BQ)
	barrier();
	FA qf[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++)
		coopMatLoadNV(qf[d], Ks, 16u * sg * SK + 2u * d, SK, false);
	FC of[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++)
		of[d] = FC(0.0);
	float m = NEG, l = 0.0; // the lane's row: reference maximum (scaled scores), sum of p

	uint kbeg = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + BQ);
	for (uint k0 = kbeg; k0 < kend; k0 += BKV) {
		barrier(); // the previous tile (or the query staging) is no longer read
		LOAD_TILE(Ks, k4, p.off[3], p.Hkv, g, k0, BKV)
		LOAD_TILE(Vs, v4, p.off[4], p.Hkv, g, k0, BKV)
		if (gl_LocalInvocationID.x < BKV)
			segk[gl_LocalInvocationID.x] =
				k0 + gl_LocalInvocationID.x < p.T ? seg_[p.off[5] + k0 + gl_LocalInvocationID.x] : -3;
		barrier();
		// the lane's 32 keys: 16 j + 8 lh + c of the tile
		uint vis = 0u;
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			[[unroll]] for (uint c = 0u; c < 8u; c++) {
				uint kk = 16u * j + 8u * lh + c;
				if (sees(i, k0 + kk, si, segk[kk]))
					vis |= 1u << (8u * j + c);
			}
		if (!subgroupAny(vis != 0u))
			continue; // nothing this subgroup's rows see in this tile
		FC sf[4];
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			sf[j] = FC(0.0);
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint j = 0u; j < 4u; j++) {
				FA kb;
				coopMatLoadNV(kb, Ks, 16u * j * SK + 2u * d, SK, true); // K^T: (d, key)
				sf[j] = coopMatMulAddNV(qf[d], kb, sf[j]);
			}
		float sv[32];
		float mx = NEG;
		[[unroll]] for (uint j = 0u; j < 4u; j++) {
			float v[8];
			frag_get(sf[j], v);
			[[unroll]] for (uint c = 0u; c < 8u; c++) {
				float x = (vis >> (8u * j + c) & 1u) != 0u ? v[c] * p.scale : NEG;
				sv[8u * j + c] = x;
				mx = max(mx, x);
			}
		}
		mx = max(mx, subgroupShuffleXor(mx, 1u));
		// move the reference only when a score exceeds it by more than RESCALE (or at first)
		bool move = mx > m + RESCALE || (m == NEG && mx > NEG);
		float alpha = 1.0;
		if (move) {
			alpha = exp(m - mx);
			m = mx;
		}
		float rs = 0.0;
		[[unroll]] for (uint x = 0u; x < 32u; x++) {
			float e = (vis >> x & 1u) != 0u ? exp(sv[x] - m) : 0.0;
			sv[x] = e;
			rs += e;
		}
		rs += subgroupShuffleXor(rs, 1u);
		l = l * alpha + rs;
		if (subgroupAny(alpha != 1.0)) {
			// rescale the output rows through the scratch
			[[unroll]] for (uint d = 0u; d < ND; d++) {
				coopMatStoreNV(of[d], Sc, sg * 64u, 4u, false);
				subgroupMemoryBarrierShared();
				subgroupBarrier();
				uint b = sg * 64u + lr * 4u + 2u * lh;
				Sc[b] = floatBitsToUint(uintBitsToFloat(Sc[b]) * alpha);
				Sc[b + 1u] = floatBitsToUint(uintBitsToFloat(Sc[b + 1u]) * alpha);
				subgroupMemoryBarrierShared();
				subgroupBarrier();
				coopMatLoadNV(of[d], Sc, sg * 64u, 4u, false);
				subgroupBarrier();
			}
		}
		uint pb = sg * 16u * SP + lr * SP;
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			Ps[pb + 2u * j + lh] = pack8(sv[8u * j], sv[8u * j + 1u], sv[8u * j + 2u], sv[8u * j + 3u],
						     sv[8u * j + 4u], sv[8u * j + 5u], sv[8u * j + 6u], sv[8u * j + 7u]);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		FA pa[4];
		[[unroll]] for (uint kk = 0u; kk < 4u; kk++)
			coopMatLoadNV(pa[kk], Ps, sg * 16u * SP + 2u * kk, SP, false);
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint kk = 0u; kk < 4u; kk++) {
				FA vb;
				coopMatLoadNV(vb, Vs, 16u * kk * SK + 2u * d, SK, false); // V: (key, d)
				of[d] = coopMatMulAddNV(pa[kk], vb, of[d]);
			}
		subgroupBarrier(); // Ps is rewritten by the next tile
	}

	float inv = 1.0 / l;
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float v[8];
		frag_get(of[d], v);
		if (i < p.T) {
			uint b = p.off[0] + (i * p.H + h) * DH + 16u * d + 8u * lh;
			[[unroll]] for (uint c = 0u; c < 8u; c++)
				o_[b + c] = v[c] * inv;
		}
	}
	if (i < p.T && lh == 0u)
		lse_[p.off[1] + h * p.T + i] = m + log(l);
}

#elif defined(BWD_KV)
#define BKV 32u
#define BQ 32u
#define SP (BQ / 8u + 1u)
layout(binding = 0) writeonly buffer DKb { float dk_[]; };
layout(binding = 1) writeonly buffer DVb { float dv_[]; };
layout(binding = 2) readonly buffer Qb { uvec4 q4[]; };
layout(binding = 3) readonly buffer Kb { uvec4 k4[]; };
layout(binding = 4) readonly buffer Vb { uvec4 v4[]; };
layout(binding = 5) readonly buffer Gb { uvec4 g4[]; };
layout(binding = 6) readonly buffer Sb { int seg_[]; };
layout(binding = 7) readonly buffer Scr { float scr_[]; };

shared uvec4 Ks[BKV * SK], Vs[BKV * SK], Qs[BQ * SK], Gs[BQ * SK];
shared uvec4 Pt[NSG * 16u * SP], Dt[NSG * 16u * SP]; // P^T and dS^T of each subgroup's keys
shared float lseq[BQ], dq_[BQ];
shared int segq[BQ];

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, lr = lane >> 1, lh = lane & 1u;
	uint k0 = gl_WorkGroupID.x * BKV, g = gl_WorkGroupID.y, grp = p.H / p.Hkv;
	uint j = k0 + 16u * sg + lr; // the lane's key
	int sj = j < p.T ? seg_[p.off[6] + j] : -3;
	float s = scr_[p.off[7] + 2u * p.H * p.T];

	LOAD_TILE(Ks, k4, p.off[3], p.Hkv, g, k0, BKV)
	LOAD_TILE(Vs, v4, p.off[4], p.Hkv, g, k0, BKV)
	FC dkf[ND], dvf[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		dkf[d] = FC(0.0);
		dvf[d] = FC(0.0);
	}
	uint qend = p.window > 0u ? min(p.T, k0 + BKV - 1u + p.window) : p.T;
	for (uint hq = g * grp; hq < g * grp + grp; hq++)
		for (uint i0 = k0; i0 < qend; i0 += BQ) {
			barrier(); // the previous query tile is no longer read
			LOAD_TILE(Qs, q4, p.off[2], p.H, hq, i0, BQ)
			LOAD_TILE(Gs, g4, p.off[5], p.H, hq, i0, BQ)
			if (gl_LocalInvocationID.x < BQ) {
				uint ii = i0 + gl_LocalInvocationID.x, x = 2u * (hq * p.T + ii);
				bool in_ = ii < p.T;
				lseq[gl_LocalInvocationID.x] = in_ ? scr_[p.off[7] + x] : 0.0;
				dq_[gl_LocalInvocationID.x] = in_ ? scr_[p.off[7] + x + 1u] : 0.0;
				segq[gl_LocalInvocationID.x] = in_ ? seg_[p.off[6] + ii] : -2;
			}
			barrier();
			// the lane's key row against queries 16 c + 8 lh + e of the tile
			uint vis = 0u;
			[[unroll]] for (uint c = 0u; c < 2u; c++)
				[[unroll]] for (uint e = 0u; e < 8u; e++) {
					uint qq = 16u * c + 8u * lh + e;
					if (sees(i0 + qq, j, segq[qq], sj))
						vis |= 1u << (8u * c + e);
				}
			if (!subgroupAny(vis != 0u))
				continue;
			// S^T = K Q^T and dP^T = V (s dO)^T: 16 keys x 32 queries
			FC st[2], pt[2];
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				st[c] = FC(0.0);
				pt[c] = FC(0.0);
			}
			[[unroll]] for (uint d = 0u; d < ND; d++) {
				FA ka, va;
				coopMatLoadNV(ka, Ks, 16u * sg * SK + 2u * d, SK, false);
				coopMatLoadNV(va, Vs, 16u * sg * SK + 2u * d, SK, false);
				[[unroll]] for (uint c = 0u; c < 2u; c++) {
					FA qb, gb;
					coopMatLoadNV(qb, Qs, 16u * c * SK + 2u * d, SK, true); // Q^T: (d, q)
					coopMatLoadNV(gb, Gs, 16u * c * SK + 2u * d, SK, true);
					st[c] = coopMatMulAddNV(ka, qb, st[c]);
					pt[c] = coopMatMulAddNV(va, gb, pt[c]);
				}
			}
			uint pb = sg * 16u * SP + lr * SP;
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				float sv[8], dp[8], pv[8], ds[8];
				frag_get(st[c], sv);
				frag_get(pt[c], dp);
				[[unroll]] for (uint e = 0u; e < 8u; e++) {
					uint qq = 16u * c + 8u * lh + e;
					float pr = (vis >> (8u * c + e) & 1u) != 0u ? exp(sv[e] * p.scale - lseq[qq]) : 0.0;
					pv[e] = pr;
					ds[e] = pr * (dp[e] - dq_[qq]);
				}
				Pt[pb + 2u * c + lh] = pack8(pv[0], pv[1], pv[2], pv[3], pv[4], pv[5], pv[6], pv[7]);
				Dt[pb + 2u * c + lh] = pack8(ds[0], ds[1], ds[2], ds[3], ds[4], ds[5], ds[6], ds[7]);
			}
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			FA pa[2], da[2];
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				coopMatLoadNV(pa[c], Pt, sg * 16u * SP + 2u * c, SP, false);
				coopMatLoadNV(da[c], Dt, sg * 16u * SP + 2u * c, SP, false);
			}
			[[unroll]] for (uint d = 0u; d < ND; d++)
				[[unroll]] for (uint c = 0u; c < 2u; c++) {
					FA gb, qb;
					coopMatLoadNV(gb, Gs, 16u * c * SK + 2u * d, SK, false); // dO: (q, d)
					coopMatLoadNV(qb, Qs, 16u * c * SK + 2u * d, SK, false); // Q: (q, d)
					dvf[d] = coopMatMulAddNV(pa[c], gb, dvf[d]);
					dkf[d] = coopMatMulAddNV(da[c], qb, dkf[d]);
				}
			subgroupBarrier(); // Pt, Dt are rewritten by the next tile
		}

	float kscale = p.scale / s, vscale = 1.0 / s;
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float a[8], b[8];
		frag_get(dkf[d], a);
		frag_get(dvf[d], b);
		if (j < p.T) {
			uint o = (j * p.Hkv + g) * DH + 16u * d + 8u * lh;
			[[unroll]] for (uint c = 0u; c < 8u; c++) {
				dk_[p.off[0] + o + c] = a[c] * kscale;
				dv_[p.off[1] + o + c] = b[c] * vscale;
			}
		}
	}
}

#elif defined(BWD_Q)
#define BQ 64u
#define BKV 32u
#define SP (BKV / 8u + 1u)
layout(binding = 0) writeonly buffer DQb { float dq_[]; };
layout(binding = 1) readonly buffer Gb { uvec4 g4[]; };
layout(binding = 2) readonly buffer Qb { uvec4 q4[]; };
layout(binding = 3) readonly buffer Kb { uvec4 k4[]; };
layout(binding = 4) readonly buffer Vb { uvec4 v4[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };
layout(binding = 6) readonly buffer Scr { float scr_[]; };

shared uvec4 KV[2u * BKV * SK]; // K tile then V tile; first the query-side staging (64 rows)
shared uvec4 Ds[NSG * 16u * SP];
shared int segk[BKV];
#define KS 0u
#define VS (BKV * SK)

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID, lr = lane >> 1, lh = lane & 1u;
	uint q0 = gl_WorkGroupID.x * BQ, h = gl_WorkGroupID.y, g = h / (p.H / p.Hkv);
	uint i = q0 + 16u * sg + lr;
	bool iin = i < p.T;
	int si = iin ? seg_[p.off[5] + i] : -2;
	float s = scr_[p.off[6] + 2u * p.H * p.T];
	float lse = iin ? scr_[p.off[6] + 2u * (h * p.T + i)] : 0.0;
	float dr = iin ? scr_[p.off[6] + 2u * (h * p.T + i) + 1u] : 0.0;

	FA qf[ND], gf[ND];
	LOAD_TILE(KV, q4, p.off[2], p.H, h, q0, BQ)
	barrier();
	[[unroll]] for (uint d = 0u; d < ND; d++)
		coopMatLoadNV(qf[d], KV, 16u * sg * SK + 2u * d, SK, false);
	barrier();
	LOAD_TILE(KV, g4, p.off[1], p.H, h, q0, BQ)
	barrier();
	[[unroll]] for (uint d = 0u; d < ND; d++)
		coopMatLoadNV(gf[d], KV, 16u * sg * SK + 2u * d, SK, false);
	FC dqf[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++)
		dqf[d] = FC(0.0);

	uint kbeg = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + BQ);
	for (uint k0 = kbeg; k0 < kend; k0 += BKV) {
		barrier();
		LOAD_TILE(KV, k4, p.off[3], p.Hkv, g, k0, BKV)
		for (uint e_ = gl_LocalInvocationID.x; e_ < BKV * (DH / 8u); e_ += NSG * 32u) {
			// the V tile behind the K tile (LOAD_TILE writes from index 0)
			uint row_ = e_ / (DH / 8u), c_ = e_ % (DH / 8u);
			uvec4 w_ = uvec4(0u);
			if (k0 + row_ < p.T)
				w_ = v4[p.off[4] + ((k0 + row_) * p.Hkv + g) * (DH / 8u) + c_];
			KV[VS + row_ * SK + c_] = w_;
		}
		if (gl_LocalInvocationID.x < BKV)
			segk[gl_LocalInvocationID.x] =
				k0 + gl_LocalInvocationID.x < p.T ? seg_[p.off[5] + k0 + gl_LocalInvocationID.x] : -3;
		barrier();
		uint vis = 0u;
		[[unroll]] for (uint c = 0u; c < 2u; c++)
			[[unroll]] for (uint e = 0u; e < 8u; e++) {
				uint kk = 16u * c + 8u * lh + e;
				if (sees(i, k0 + kk, si, segk[kk]))
					vis |= 1u << (8u * c + e);
			}
		if (!subgroupAny(vis != 0u))
			continue;
		FC sf[2], pf[2];
		[[unroll]] for (uint c = 0u; c < 2u; c++) {
			sf[c] = FC(0.0);
			pf[c] = FC(0.0);
		}
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				FA kb, vb;
				coopMatLoadNV(kb, KV, KS + 16u * c * SK + 2u * d, SK, true); // K^T
				coopMatLoadNV(vb, KV, VS + 16u * c * SK + 2u * d, SK, true); // V^T
				sf[c] = coopMatMulAddNV(qf[d], kb, sf[c]);
				pf[c] = coopMatMulAddNV(gf[d], vb, pf[c]);
			}
		uint db = sg * 16u * SP + lr * SP;
		[[unroll]] for (uint c = 0u; c < 2u; c++) {
			float sv[8], dp[8], ds[8];
			frag_get(sf[c], sv);
			frag_get(pf[c], dp);
			[[unroll]] for (uint e = 0u; e < 8u; e++) {
				float pr = (vis >> (8u * c + e) & 1u) != 0u ? exp(sv[e] * p.scale - lse) : 0.0;
				ds[e] = pr * (dp[e] - dr);
			}
			Ds[db + 2u * c + lh] = pack8(ds[0], ds[1], ds[2], ds[3], ds[4], ds[5], ds[6], ds[7]);
		}
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		FA da[2];
		[[unroll]] for (uint c = 0u; c < 2u; c++)
			coopMatLoadNV(da[c], Ds, sg * 16u * SP + 2u * c, SP, false);
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				FA kb;
				coopMatLoadNV(kb, KV, KS + 16u * c * SK + 2u * d, SK, false); // K: (key, d)
				dqf[d] = coopMatMulAddNV(da[c], kb, dqf[d]);
			}
		subgroupBarrier();
	}

	float qs = p.scale / s;
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float v[8];
		frag_get(dqf[d], v);
		if (iin) {
			uint b = p.off[0] + (i * p.H + h) * DH + 16u * d + 8u * lh;
			[[unroll]] for (uint c = 0u; c < 8u; c++)
				dq_[b + c] = v[c] * qs;
		}
	}
}
#endif
#endif
