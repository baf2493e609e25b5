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
// 16 x 16 fragments; softmax and masks need individual elements. NV cooperative matrices do not
// promise which of a fragment's elements a lane holds, so by default a fragment goes through a
// 16 x 16 fp32 scratch in shared memory, where lane l takes row l / 2, columns 8 (l % 2) .. + 7,
// and probabilities go back to A operands through f16 tiles in shared memory. With -DFRAG the
// passes read and write the fragments' components in place and convert P and dS to A operands
// directly (no shared memory, no subgroup barriers), assuming the layout that -DPROBE reads back
// (the host picks FRAG only where the probe found it; see ecol below).
//
// The query-tiled passes (FWD, BWD_Q) run groups (H, n) with n = ceil(T / 64) and take query tile
// n - 1 - y, the tiles that see the most keys first; BWD_KV takes key tile y, also the busiest
// first (a dispatch starts its groups in about this order, so the long ones do not start last:
// 1.08x the forward, 1.07x the dQ pass on an H100, docs/PERFORMANCE.md 2026-12-06 16:51).
//
//   -DFWD:    o (=), lse (=). Groups (H, ceil(T / 64)), 4 subgroups x 16 queries; key tiles of 64.
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
//             4 = max|dO| bits. Dh / 4 lanes (16 or 32) a row, 4 columns each; groups: a
//             grid-stride over the H T rows.
//   -DBWD_KV: dk, dv (=). Groups (Hkv, ceil(T / 32)), 2 subgroups x 16 keys; loops over the query
//             tiles (32) of every head sharing the KV head: dV = P^T dO, dK = scale dS^T Q with
//             dS = P (dP - D), dP = dO V^T, all on s dO; the sums are divided by s at the end.
//             Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//   -DBWD_Q:  dq (=). Groups (H, ceil(T / 64)), 4 subgroups x 16 queries, key tiles of 32:
//             dQ = scale dS K / s. Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = seg,
//             6 = scr.
//   -DPROBE:  one subgroup; out[8 l + k] = 16 row + column of component k of lane l's 16 x 16 fp32
//             fragment (-1 past its length), out[256] = its length. Binding 0 = out.
//   -DFRAG:   with FWD, BWD_KV, BWD_Q: the in-place fragment layout (above).
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
#elif defined(PROBE)
#define NSG 1u
layout(local_size_x = 32) in;
#else
layout(local_size_x = 256) in;
#endif

layout(push_constant) uniform Push {
	uint T, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[8];  // binding starts, in 4-byte words
	uint xoff;    // CAST, PREP: the max|dO| bits' word
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
	float sc = p.Dh == 1u ? dout_scale(xmax[p.xoff]) : 1.0;
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
	float s = dout_scale(xmax[p.xoff]);
	// a row's Dh / 4 lanes (a subgroup of 32 for Dh 128, half of one for 64) read 4 of its columns
	// each, side by side; the loop's trip count is the group's, so every lane shuffles
	uint L = p.Dh / 4u, rows = 256u / L, c = 4u * (gl_LocalInvocationID.x % L);
	uint n = p.H * p.T;
	for (uint x0 = gl_WorkGroupID.x * rows; x0 < n; x0 += gl_NumWorkGroups.x * rows) {
		uint x = x0 + gl_LocalInvocationID.x / L;
		float dr = 0.0;
		if (x < n) {
			uint b = (x % p.T * p.H + x / p.T) * p.Dh + c;
			[[unroll]] for (uint d = 0u; d < 4u; d++)
				dr += g_[p.off[1] + b + d] * o_[p.off[2] + b + d];
		}
		for (uint m = L / 2u; m > 0u; m >>= 1)
			dr += subgroupShuffleXor(dr, m);
		if (x < n && c == 0u) {
			scr_[p.off[0] + 2u * x] = lse_[p.off[3] + x];
			scr_[p.off[0] + 2u * x + 1u] = dr * s;
		}
	}
	if (gl_GlobalInvocationID.x == 0u)
		scr_[p.off[0] + 2u * n] = s;
}

#else // the cooperative-matrix passes

uint sg, lane; // subgroup, lane

// A lane holds 8 elements of each 16 x 16 fp32 fragment: element k sits at row erow(k), column
// ecol(k), and values kept per row (maxima, sums, lse) sit at index ri(k) of the lane's NR rows
// (row slot r is element 4 r's row).
// row_max and row_sum combine a row's value over the lanes that hold parts of it.
#if defined(FRAG)
// The fragment's own components, in the layout attn_mma_probe found on this device: lane l holds
// rows l / 4 (elements 0-3) and l / 4 + 8 (4-7), columns 2 (l % 4) + {0, 1} (elements 0, 1 and 4,
// 5) and 8 + 2 (l % 4) + {0, 1} (2, 3 and 6, 7); the 4 lanes of a quad share their rows. (The
// NVIDIA driver 580 on an H100, docs/PERFORMANCE.md 2026-12-06 16:51 and 17:17.)
#define NR 2u
uint ri(uint k) { return k >> 2; }
uint erow(uint k) { return (lane >> 2) + 8u * ri(k); }
uint ecol(uint k) { return 2u * (lane & 3u) + (k & 1u) + 8u * ((k >> 1) & 1u); }

void frag_get(FC f, out float v[8])
{
	[[unroll]] for (uint k = 0u; k < 8u; k++)
		v[k] = f[k];
}

// f's rows times a[row]
void scale_rows(inout FC f, float a[NR])
{
	[[unroll]] for (uint k = 0u; k < 8u; k++)
		f[k] *= a[ri(k)];
}

float row_max(float x)
{
	x = max(x, subgroupShuffleXor(x, 1u));
	return max(x, subgroupShuffleXor(x, 2u));
}

float row_sum(float x)
{
	x += subgroupShuffleXor(x, 1u);
	return x + subgroupShuffleXor(x, 2u);
}
#else
// Through a 16 x 16 fp32 scratch in shared memory (NV cooperative matrices do not promise a
// component layout): lane l takes row l / 2, columns 8 (l % 2) .. + 7.
#define NR 1u
shared uvec4 Sc[NSG * 64u]; // 64 uvec4 a subgroup
uint ri(uint k) { return 0u; }
uint erow(uint k) { return lane >> 1; }
uint ecol(uint k) { return 8u * (lane & 1u) + k; }

void frag_get(FC f, out float v[8])
{
	coopMatStoreNV(f, Sc, sg * 64u, 4u, false);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	uint b = sg * 64u + erow(0u) * 4u + 2u * (lane & 1u);
	uvec4 x = Sc[b], y = Sc[b + 1u];
	v = float[8](uintBitsToFloat(x.x), uintBitsToFloat(x.y), uintBitsToFloat(x.z), uintBitsToFloat(x.w),
		     uintBitsToFloat(y.x), uintBitsToFloat(y.y), uintBitsToFloat(y.z), uintBitsToFloat(y.w));
	subgroupBarrier();
}

void scale_rows(inout FC f, float a[NR])
{
	coopMatStoreNV(f, Sc, sg * 64u, 4u, false);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	uint b = sg * 64u + erow(0u) * 4u + 2u * (lane & 1u);
	Sc[b] = floatBitsToUint(uintBitsToFloat(Sc[b]) * a[0]);
	Sc[b + 1u] = floatBitsToUint(uintBitsToFloat(Sc[b + 1u]) * a[0]);
	subgroupMemoryBarrierShared();
	subgroupBarrier();
	coopMatLoadNV(f, Sc, sg * 64u, 4u, false);
	subgroupBarrier();
}

float row_max(float x) { return max(x, subgroupShuffleXor(x, 1u)); }
float row_sum(float x) { return x + subgroupShuffleXor(x, 1u); }
#endif

// Tiles of rows r0 .. r0 + rows of head hh of a [T, hn, DH] f16 tensor (uvec4 binding, offset
// off in uvec4), rows past T as zeros: TILE_LOADS reads an invocation's TILE_N(rows) uvec4 into
// w (all of them in flight at once), TILE_STORES writes them to a [rows][SK] tile at dst[base].
// Every pass's tiles divide evenly among its invocations.
#define TILE_N(rows) ((rows) * (DH / 8u) / (NSG * 32u))
#define TILE_LOADS(w, src, off, hn, hh, r0, rows)                                                 \
	[[unroll]] for (uint t_ = 0u; t_ < TILE_N(rows); t_++) {                                   \
		uint e_ = gl_LocalInvocationID.x + t_ * NSG * 32u, row_ = e_ / (DH / 8u);             \
		w[t_] = uvec4(0u);                                                                    \
		if ((r0) + row_ < p.T)                                                                \
			w[t_] = src[(off) + (((r0) + row_) * (hn) + (hh)) * (DH / 8u) + e_ % (DH / 8u)]; \
	}
#define TILE_STORES(dst, base, w, rows)                                                            \
	[[unroll]] for (uint t_ = 0u; t_ < TILE_N(rows); t_++) {                                   \
		uint e_ = gl_LocalInvocationID.x + t_ * NSG * 32u;                                    \
		dst[(base) + e_ / (DH / 8u) * SK + e_ % (DH / 8u)] = w[t_];                            \
	}
#define LOAD_TILE(dst, src, off, hn, hh, r0, rows)                                                \
	{                                                                                          \
		uvec4 lw_[TILE_N(rows)];                                                              \
		TILE_LOADS(lw_, src, off, hn, hh, r0, rows)                                           \
		TILE_STORES(dst, 0u, lw_, rows)                                                       \
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
#if !defined(FRAG)
shared uvec4 Ps[NSG * 16u * SP]; // each subgroup's P (f16) for its A operands
#endif
shared int segk[BKV];

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint q0 = (gl_NumWorkGroups.y - 1u - gl_WorkGroupID.y) * BQ, h = gl_WorkGroupID.x;
	uint g = h / (p.H / p.Hkv);
	uint iq[NR]; // the lane's rows (queries) and their samples
	int si[NR];
	[[unroll]] for (uint r = 0u; r < NR; r++) {
		iq[r] = q0 + 16u * sg + erow(4u * r);
		si[r] = iq[r] < p.T ? seg_[p.off[5] + iq[r]] : -2;
	}

	LOAD_TILE(Ks, q4, p.off[2], p.H, h, q0, BQ)
	barrier();
	FA qf[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++)
		coopMatLoadNV(qf[d], Ks, 16u * sg * SK + 2u * d, SK, false);
	FC of[ND];
	[[unroll]] for (uint d = 0u; d < ND; d++)
		of[d] = FC(0.0);
	float m[NR], l[NR]; // per row: reference maximum (scaled scores), sum of p
	[[unroll]] for (uint r = 0u; r < NR; r++) {
		m[r] = NEG;
		l[r] = 0.0;
	}

	uint kbeg = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + BQ);
	for (uint k0 = kbeg; k0 < kend; k0 += BKV) {
		uvec4 wk[TILE_N(BKV)], wv[TILE_N(BKV)];
		TILE_LOADS(wk, k4, p.off[3], p.Hkv, g, k0, BKV)
		TILE_LOADS(wv, v4, p.off[4], p.Hkv, g, k0, BKV)
		int sk = k0 + gl_LocalInvocationID.x < p.T ? seg_[p.off[5] + k0 + gl_LocalInvocationID.x] : -3;
		barrier(); // the previous tile (or the query staging) is no longer read
		TILE_STORES(Ks, 0u, wk, BKV)
		TILE_STORES(Vs, 0u, wv, BKV)
		if (gl_LocalInvocationID.x < BKV)
			segk[gl_LocalInvocationID.x] = sk;
		barrier();
		// bit 8 j + k: element k of score fragment j (key 16 j + ecol(k) of the tile) is seen
		uint vis = 0u;
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			[[unroll]] for (uint k = 0u; k < 8u; k++) {
				uint kk = 16u * j + ecol(k);
				if (sees(iq[ri(k)], k0 + kk, si[ri(k)], segk[kk]))
					vis |= 1u << (8u * j + k);
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
		float sv[32], mx[NR];
		[[unroll]] for (uint r = 0u; r < NR; r++)
			mx[r] = NEG;
		[[unroll]] for (uint j = 0u; j < 4u; j++) {
			float v[8];
			frag_get(sf[j], v);
			[[unroll]] for (uint k = 0u; k < 8u; k++) {
				float x = (vis >> (8u * j + k) & 1u) != 0u ? v[k] * p.scale : NEG;
				sv[8u * j + k] = x;
				mx[ri(k)] = max(mx[ri(k)], x);
			}
		}
		// move a row's reference only when a score exceeds it by more than RESCALE (or at first)
		float alpha[NR], rs[NR];
		bool moved = false;
		[[unroll]] for (uint r = 0u; r < NR; r++) {
			mx[r] = row_max(mx[r]);
			alpha[r] = 1.0;
			if (mx[r] > m[r] + RESCALE || (m[r] == NEG && mx[r] > NEG)) {
				alpha[r] = exp(m[r] - mx[r]);
				m[r] = mx[r];
				moved = true;
			}
			rs[r] = 0.0;
		}
		[[unroll]] for (uint x = 0u; x < 32u; x++) {
			float e = (vis >> x & 1u) != 0u ? exp(sv[x] - m[ri(x % 8u)]) : 0.0;
			sv[x] = e;
			rs[ri(x % 8u)] += e;
		}
		[[unroll]] for (uint r = 0u; r < NR; r++)
			l[r] = l[r] * alpha[r] + row_sum(rs[r]);
		if (subgroupAny(moved))
			[[unroll]] for (uint d = 0u; d < ND; d++)
				scale_rows(of[d], alpha);
		FA pa[4];
#if defined(FRAG)
		[[unroll]] for (uint j = 0u; j < 4u; j++) {
			[[unroll]] for (uint k = 0u; k < 8u; k++)
				sf[j][k] = sv[8u * j + k];
			pa[j] = FA(sf[j]);
		}
#else
		uint pb = sg * 16u * SP + erow(0u) * SP + (lane & 1u);
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			Ps[pb + 2u * j] = pack8(sv[8u * j], sv[8u * j + 1u], sv[8u * j + 2u], sv[8u * j + 3u],
						sv[8u * j + 4u], sv[8u * j + 5u], sv[8u * j + 6u], sv[8u * j + 7u]);
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			coopMatLoadNV(pa[j], Ps, sg * 16u * SP + 2u * j, SP, false);
#endif
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint j = 0u; j < 4u; j++) {
				FA vb;
				coopMatLoadNV(vb, Vs, 16u * j * SK + 2u * d, SK, false); // V: (key, d)
				of[d] = coopMatMulAddNV(pa[j], vb, of[d]);
			}
#if !defined(FRAG)
		subgroupBarrier(); // Ps is rewritten by the next tile
#endif
	}

	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float v[8];
		frag_get(of[d], v);
		[[unroll]] for (uint k = 0u; k < 8u; k++)
			if (iq[ri(k)] < p.T)
				o_[p.off[0] + (iq[ri(k)] * p.H + h) * DH + 16u * d + ecol(k)] = v[k] / l[ri(k)];
	}
	if (ecol(0u) == 0u) // one lane of each row's
		[[unroll]] for (uint r = 0u; r < NR; r++)
			if (iq[r] < p.T)
				lse_[p.off[1] + h * p.T + iq[r]] = m[r] + log(l[r]);
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
#if !defined(FRAG)
shared uvec4 Pt[NSG * 16u * SP], Dt[NSG * 16u * SP]; // P^T and dS^T of each subgroup's keys
#endif
shared float lseq[BQ], dq_[BQ];
shared int segq[BQ];

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint k0 = gl_WorkGroupID.y * BKV, g = gl_WorkGroupID.x, grp = p.H / p.Hkv;
	uint jk[NR]; // the lane's rows (keys) and their samples
	int sj[NR];
	[[unroll]] for (uint x = 0u; x < NR; x++) {
		jk[x] = k0 + 16u * sg + erow(4u * x);
		sj[x] = jk[x] < p.T ? seg_[p.off[6] + jk[x]] : -3;
	}
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
			uvec4 wq[TILE_N(BQ)], wg[TILE_N(BQ)];
			TILE_LOADS(wq, q4, p.off[2], p.H, hq, i0, BQ)
			TILE_LOADS(wg, g4, p.off[5], p.H, hq, i0, BQ)
			uint ii = i0 + gl_LocalInvocationID.x, x = 2u * (hq * p.T + ii);
			bool in_ = gl_LocalInvocationID.x < BQ && ii < p.T;
			float lq = in_ ? scr_[p.off[7] + x] : 0.0, dq = in_ ? scr_[p.off[7] + x + 1u] : 0.0;
			int sq = in_ ? seg_[p.off[6] + ii] : -2;
			barrier(); // the previous query tile is no longer read
			TILE_STORES(Qs, 0u, wq, BQ)
			TILE_STORES(Gs, 0u, wg, BQ)
			if (gl_LocalInvocationID.x < BQ) {
				lseq[gl_LocalInvocationID.x] = lq;
				dq_[gl_LocalInvocationID.x] = dq;
				segq[gl_LocalInvocationID.x] = sq;
			}
			barrier();
			// bit 8 c + e: element e of fragment c (query 16 c + ecol(e) of the tile) sees its key
			uint vis = 0u;
			[[unroll]] for (uint c = 0u; c < 2u; c++)
				[[unroll]] for (uint e = 0u; e < 8u; e++) {
					uint qq = 16u * c + ecol(e);
					if (sees(i0 + qq, jk[ri(e)], segq[qq], sj[ri(e)]))
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
			FA pa[2], da[2]; // P^T and dS^T as A operands
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				float sv[8], dp[8], pv[8], ds[8];
				frag_get(st[c], sv);
				frag_get(pt[c], dp);
				[[unroll]] for (uint e = 0u; e < 8u; e++) {
					uint qq = 16u * c + ecol(e);
					float pr = (vis >> (8u * c + e) & 1u) != 0u ? exp(sv[e] * p.scale - lseq[qq]) : 0.0;
					pv[e] = pr;
					ds[e] = pr * (dp[e] - dq_[qq]);
				}
#if defined(FRAG)
				[[unroll]] for (uint e = 0u; e < 8u; e++) {
					st[c][e] = pv[e];
					pt[c][e] = ds[e];
				}
				pa[c] = FA(st[c]);
				da[c] = FA(pt[c]);
#else
				uint pb = sg * 16u * SP + erow(0u) * SP + 2u * c + (lane & 1u);
				Pt[pb] = pack8(pv[0], pv[1], pv[2], pv[3], pv[4], pv[5], pv[6], pv[7]);
				Dt[pb] = pack8(ds[0], ds[1], ds[2], ds[3], ds[4], ds[5], ds[6], ds[7]);
#endif
			}
#if !defined(FRAG)
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				coopMatLoadNV(pa[c], Pt, sg * 16u * SP + 2u * c, SP, false);
				coopMatLoadNV(da[c], Dt, sg * 16u * SP + 2u * c, SP, false);
			}
#endif
			[[unroll]] for (uint d = 0u; d < ND; d++)
				[[unroll]] for (uint c = 0u; c < 2u; c++) {
					FA gb, qb;
					coopMatLoadNV(gb, Gs, 16u * c * SK + 2u * d, SK, false); // dO: (q, d)
					coopMatLoadNV(qb, Qs, 16u * c * SK + 2u * d, SK, false); // Q: (q, d)
					dvf[d] = coopMatMulAddNV(pa[c], gb, dvf[d]);
					dkf[d] = coopMatMulAddNV(da[c], qb, dkf[d]);
				}
#if !defined(FRAG)
			subgroupBarrier(); // Pt, Dt are rewritten by the next tile
#endif
		}

	float kscale = p.scale / s, vscale = 1.0 / s;
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float a[8], b[8];
		frag_get(dkf[d], a);
		frag_get(dvf[d], b);
		[[unroll]] for (uint e = 0u; e < 8u; e++)
			if (jk[ri(e)] < p.T) {
				uint o = (jk[ri(e)] * p.Hkv + g) * DH + 16u * d + ecol(e);
				dk_[p.off[0] + o] = a[e] * kscale;
				dv_[p.off[1] + o] = b[e] * vscale;
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
#if !defined(FRAG)
shared uvec4 Ds[NSG * 16u * SP];
#endif
shared int segk[BKV];
#define KS 0u
#define VS (BKV * SK)

void main()
{
	sg = gl_SubgroupID, lane = gl_SubgroupInvocationID;
	uint q0 = (gl_NumWorkGroups.y - 1u - gl_WorkGroupID.y) * BQ, h = gl_WorkGroupID.x;
	uint g = h / (p.H / p.Hkv);
	uint iq[NR]; // the lane's rows (queries): samples, lse and s D
	int si[NR];
	float lse[NR], dr[NR];
	[[unroll]] for (uint r = 0u; r < NR; r++) {
		iq[r] = q0 + 16u * sg + erow(4u * r);
		bool in_ = iq[r] < p.T;
		si[r] = in_ ? seg_[p.off[5] + iq[r]] : -2;
		lse[r] = in_ ? scr_[p.off[6] + 2u * (h * p.T + iq[r])] : 0.0;
		dr[r] = in_ ? scr_[p.off[6] + 2u * (h * p.T + iq[r]) + 1u] : 0.0;
	}
	float s = scr_[p.off[6] + 2u * p.H * p.T];

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
		uvec4 wk[TILE_N(BKV)], wv[TILE_N(BKV)];
		TILE_LOADS(wk, k4, p.off[3], p.Hkv, g, k0, BKV)
		TILE_LOADS(wv, v4, p.off[4], p.Hkv, g, k0, BKV)
		int sk = k0 + gl_LocalInvocationID.x < p.T ? seg_[p.off[5] + k0 + gl_LocalInvocationID.x] : -3;
		barrier(); // the previous tiles (or the query-side staging) are no longer read
		TILE_STORES(KV, KS, wk, BKV)
		TILE_STORES(KV, VS, wv, BKV)
		if (gl_LocalInvocationID.x < BKV)
			segk[gl_LocalInvocationID.x] = sk;
		barrier();
		// bit 8 c + e: element e of fragment c (key 16 c + ecol(e) of the tile) is seen
		uint vis = 0u;
		[[unroll]] for (uint c = 0u; c < 2u; c++)
			[[unroll]] for (uint e = 0u; e < 8u; e++) {
				uint kk = 16u * c + ecol(e);
				if (sees(iq[ri(e)], k0 + kk, si[ri(e)], segk[kk]))
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
		FA da[2]; // dS as A operands
		[[unroll]] for (uint c = 0u; c < 2u; c++) {
			float sv[8], dp[8], ds[8];
			frag_get(sf[c], sv);
			frag_get(pf[c], dp);
			[[unroll]] for (uint e = 0u; e < 8u; e++) {
				float pr = (vis >> (8u * c + e) & 1u) != 0u ? exp(sv[e] * p.scale - lse[ri(e)]) : 0.0;
				ds[e] = pr * (dp[e] - dr[ri(e)]);
			}
#if defined(FRAG)
			[[unroll]] for (uint e = 0u; e < 8u; e++)
				sf[c][e] = ds[e];
			da[c] = FA(sf[c]);
#else
			Ds[sg * 16u * SP + erow(0u) * SP + 2u * c + (lane & 1u)] =
				pack8(ds[0], ds[1], ds[2], ds[3], ds[4], ds[5], ds[6], ds[7]);
#endif
		}
#if !defined(FRAG)
		subgroupMemoryBarrierShared();
		subgroupBarrier();
		[[unroll]] for (uint c = 0u; c < 2u; c++)
			coopMatLoadNV(da[c], Ds, sg * 16u * SP + 2u * c, SP, false);
#endif
		[[unroll]] for (uint d = 0u; d < ND; d++)
			[[unroll]] for (uint c = 0u; c < 2u; c++) {
				FA kb;
				coopMatLoadNV(kb, KV, KS + 16u * c * SK + 2u * d, SK, false); // K: (key, d)
				dqf[d] = coopMatMulAddNV(da[c], kb, dqf[d]);
			}
#if !defined(FRAG)
		subgroupBarrier(); // Ds is rewritten by the next tile
#endif
	}

	float qs = p.scale / s;
	[[unroll]] for (uint d = 0u; d < ND; d++) {
		float v[8];
		frag_get(dqf[d], v);
		[[unroll]] for (uint e = 0u; e < 8u; e++)
			if (iq[ri(e)] < p.T)
				dq_[p.off[0] + (iq[ri(e)] * p.H + h) * DH + 16u * d + ecol(e)] = v[e] * qs;
	}
}

#elif defined(PROBE)
// One subgroup: out[8 l + k] = row 16 + column of component k of lane l's fragment of a 16 x 16
// fp32 matrix (-1 past its length), out[256] = the length.
layout(binding = 0) writeonly buffer Ob { float o_[]; };
shared float Mp[256];

void main()
{
	lane = gl_SubgroupInvocationID;
	for (uint x = lane; x < 256u; x += 32u)
		Mp[x] = float(x);
	barrier();
	FC f;
	coopMatLoadNV(f, Mp, 0u, 16u, false);
	[[unroll]] for (uint k = 0u; k < 8u; k++) {
		float v = -1.0;
		if (int(k) < f.length())
			v = f[k];
		o_[p.off[0] + 8u * lane + k] = v;
	}
	if (lane == 0u)
		o_[p.off[0] + 256u] = float(f.length());
}
#endif
#endif
