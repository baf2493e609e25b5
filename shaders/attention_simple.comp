#version 450
// Causal GQA attention without shared memory or barriers, for CPU-type Vulkan devices (see
// matmul_simple.comp): TQ rows per invocation (r0 + lane + WG * x, so every key or query read
// serves TQ rows), the head dimension in vec4 registers (Dh a
// multiple of 4, at most 4 * DV4; q, k, v, o, dout bound on 16-byte boundaries: the host checks
// and otherwise runs the tiled attention*.comp). Same bindings, push block, mask and math as
// attention.comp / attention_bwd.comp; the softmax is online one key at a time.
//   (default)  forward: rows = queries i of head h: o (=), lse (=).
//              Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg.
//              Groups: (ceil(T / (WG * TQ)), H).
//   PASS_KV:   rows = keys j of KV head g, over the queries of every head sharing g:
//              dV = P^T dO, dK = scale dS^T Q (=), lse and Dr from the prep pass's scratch.
//              Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//              Groups: (ceil(T / (WG * TQ)), Hkv).
//   PASS_Q:    rows = queries i of head h: dQ = scale dS K (=), Dr recomputed from o.
//              Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = o, 6 = lse, 7 = seg.
//              Groups: (ceil(T / (WG * TQ)), H).
// A key (query) that no row of the subgroup sees is skipped (subgroupAny).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_vote : require

#define WG 8
#ifndef TQ
#define TQ 4 // rows per invocation: r0 + lane + WG * x
#endif
#define DV4 32 // vec4s of the longest head (Dh <= 128)
#define NEG (-1.0e30)

layout(local_size_x = WG) in;

layout(push_constant) uniform Push {
	uint T, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[8];
} p;

bool attn_sees(uint i, uint j, int si, int sj)
{
	return i < p.T && j <= i && si == sj && (p.window == 0u || i - j < p.window);
}

// acc + a . b summed one term at a time, in the order of the prep pass's Dr (so that a row whose
// dO . v equals its Dr exactly, as with a single visible key, gives dS = 0 exactly)
float dot4(float acc, vec4 a, vec4 b)
{
	acc += a.x * b.x;
	acc += a.y * b.y;
	acc += a.z * b.z;
	acc += a.w * b.w;
	return acc;
}

#if !defined(PASS_KV) && !defined(PASS_Q)
layout(binding = 0) writeonly buffer Ob { vec4 o_[]; };
layout(binding = 1) writeonly buffer Lb { float lse_[]; };
layout(binding = 2) readonly buffer Qb { vec4 q_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v_[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };
#define SEG 5
#elif defined(PASS_KV)
layout(binding = 0) writeonly buffer DKb { vec4 dk_[]; };
layout(binding = 1) writeonly buffer DVb { vec4 dv_[]; };
layout(binding = 2) readonly buffer Qb { vec4 q_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v_[]; };
layout(binding = 5) readonly buffer Gb { vec4 g_[]; };
layout(binding = 6) readonly buffer Sb { int seg_[]; };
layout(binding = 7) readonly buffer Scr { float scr_[]; };
#define SEG 6
#else
layout(binding = 0) writeonly buffer DQb { vec4 dq_[]; };
layout(binding = 1) readonly buffer Gb { vec4 g_[]; };
layout(binding = 2) readonly buffer Qb { vec4 q_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v_[]; };
layout(binding = 5) readonly buffer Ob { vec4 o_[]; };
layout(binding = 6) readonly buffer Lb { float lse_[]; };
layout(binding = 7) readonly buffer Sb { int seg_[]; };
#define SEG 7
#endif

void main()
{
	uint r0 = gl_WorkGroupID.x * (WG * TQ), lane = gl_LocalInvocationID.x;
	uint nd = p.Dh >> 2;
	uint rr[TQ];  // this invocation's rows: r0 + lane + WG * x
	uint rc[TQ];  // clamped: loads stay in range, stores are skipped
	int sr[TQ];
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		rr[x] = r0 + lane + WG * x;
		rc[x] = min(rr[x], p.T - 1u);
		sr[x] = seg_[p.off[SEG] + rc[x]];
	}
#if !defined(PASS_KV)
	// query rows of head h, seeing keys [kstart, kend)
	uint h = gl_WorkGroupID.y, g = h / (p.H / p.Hkv);
	vec4 q[TQ][DV4], acc[TQ][DV4];
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		uint qa = (p.off[2] >> 2) + (rc[x] * p.H + h) * nd;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			q[x][c] = q_[qa + c];
			acc[x][c] = vec4(0.0);
		}
	}
	uint kstart = p.window > 0u && r0 + 1u > p.window ? r0 + 1u - p.window : 0u;
	uint kend = min(p.T, r0 + WG * TQ);
#if defined(PASS_Q)
	vec4 go[TQ][DV4];
	float dr[TQ], lse[TQ];
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		uint ga = (p.off[1] >> 2) + (rc[x] * p.H + h) * nd;
		uint oa = (p.off[5] >> 2) + (rc[x] * p.H + h) * nd;
		dr[x] = 0.0;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			go[x][c] = g_[ga + c];
			dr[x] = dot4(dr[x], go[x][c], o_[oa + c]);
		}
		lse[x] = lse_[p.off[6] + h * p.T + rc[x]];
	}
#else
	float m[TQ], l[TQ];
	[[unroll]] for (uint x = 0u; x < TQ; x++)
		m[x] = NEG, l[x] = 0.0;
#endif
	for (uint j = kstart; j < kend; j++) {
		int sj = seg_[p.off[SEG] + j];
		bool valid[TQ], any_ = false;
		[[unroll]] for (uint x = 0u; x < TQ; x++) {
			valid[x] = attn_sees(rr[x], j, sr[x], sj);
			any_ = any_ || valid[x];
		}
		if (!subgroupAny(any_))
			continue;
		uint ka = (p.off[3] >> 2) + (j * p.Hkv + g) * nd, va = (p.off[4] >> 2) + (j * p.Hkv + g) * nd;
		float s[TQ];
		[[unroll]] for (uint x = 0u; x < TQ; x++)
			s[x] = 0.0;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			vec4 kc = k_[ka + c];
			[[unroll]] for (uint x = 0u; x < TQ; x++)
				s[x] += dot(q[x][c], kc);
		}
#if defined(PASS_Q)
		float dp[TQ], ds[TQ];
		[[unroll]] for (uint x = 0u; x < TQ; x++)
			dp[x] = 0.0;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			vec4 vc = v_[va + c];
			[[unroll]] for (uint x = 0u; x < TQ; x++)
				dp[x] = dot4(dp[x], go[x][c], vc);
		}
		[[unroll]] for (uint x = 0u; x < TQ; x++) {
			float pr = valid[x] ? exp(s[x] * p.scale - lse[x]) : 0.0;
			ds[x] = pr * (dp[x] - dr[x]);
		}
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			vec4 kc = k_[ka + c];
			[[unroll]] for (uint x = 0u; x < TQ; x++)
				acc[x][c] += ds[x] * kc;
		}
#else
		float alpha[TQ], pr[TQ];
		[[unroll]] for (uint x = 0u; x < TQ; x++) {
			float sc = s[x] * p.scale;
			float mn = valid[x] ? max(m[x], sc) : m[x];
			alpha[x] = exp(m[x] - mn);
			pr[x] = valid[x] ? exp(sc - mn) : 0.0;
			l[x] = l[x] * alpha[x] + pr[x];
			m[x] = mn;
		}
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			vec4 vc = v_[va + c];
			[[unroll]] for (uint x = 0u; x < TQ; x++)
				acc[x][c] = acc[x][c] * alpha[x] + pr[x] * vc;
		}
#endif
	}
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		if (rr[x] >= p.T)
			break;
		uint oo = (p.off[0] >> 2) + (rr[x] * p.H + h) * nd;
#if defined(PASS_Q)
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			dq_[oo + c] = acc[x][c] * p.scale;
		}
#else
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			o_[oo + c] = acc[x][c] / l[x];
		}
		lse_[p.off[1] + h * p.T + rr[x]] = m[x] + log(l[x]);
#endif
	}

#else // PASS_KV: key rows of KV head g
	uint g = gl_WorkGroupID.y, hper = p.H / p.Hkv;
	vec4 k[TQ][DV4], v[TQ][DV4], dk[TQ][DV4], dv[TQ][DV4];
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		uint ka = (p.off[3] >> 2) + (rc[x] * p.Hkv + g) * nd;
		uint va = (p.off[4] >> 2) + (rc[x] * p.Hkv + g) * nd;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			k[x][c] = k_[ka + c];
			v[x][c] = v_[va + c];
			dk[x][c] = vec4(0.0);
			dv[x][c] = vec4(0.0);
		}
	}
	uint qend = p.window > 0u ? min(p.T, r0 + WG * TQ - 1u + p.window) : p.T;
	for (uint hh = 0u; hh < hper; hh++) {
		uint h = g * hper + hh;
		for (uint i = r0; i < qend; i++) {
			int si = seg_[p.off[SEG] + i];
			bool valid[TQ], any_ = false;
			[[unroll]] for (uint x = 0u; x < TQ; x++) {
				valid[x] = attn_sees(i, rr[x], si, sr[x]) && rr[x] < p.T;
				any_ = any_ || valid[x];
			}
			if (!subgroupAny(any_))
				continue;
			uint qa = (p.off[2] >> 2) + (i * p.H + h) * nd, ga = (p.off[5] >> 2) + (i * p.H + h) * nd;
			float s[TQ], dp[TQ];
			[[unroll]] for (uint x = 0u; x < TQ; x++)
				s[x] = 0.0, dp[x] = 0.0;
			[[unroll]] for (uint c = 0u; c < DV4; c++) {
				if (c >= nd)
					break;
				vec4 qc = q_[qa + c], gc = g_[ga + c];
				[[unroll]] for (uint x = 0u; x < TQ; x++) {
					s[x] += dot(k[x][c], qc);
					dp[x] = dot4(dp[x], gc, v[x][c]);
				}
			}
			uint sx = p.off[7] + 2u * (h * p.T + i);
			float lse = scr_[sx], dr = scr_[sx + 1u];
			float pr[TQ], ds[TQ];
			[[unroll]] for (uint x = 0u; x < TQ; x++) {
				pr[x] = valid[x] ? exp(s[x] * p.scale - lse) : 0.0;
				ds[x] = pr[x] * (dp[x] - dr);
			}
			[[unroll]] for (uint c = 0u; c < DV4; c++) {
				if (c >= nd)
					break;
				vec4 qc = q_[qa + c], gc = g_[ga + c];
				[[unroll]] for (uint x = 0u; x < TQ; x++) {
					dv[x][c] += pr[x] * gc;
					dk[x][c] += ds[x] * qc;
				}
			}
		}
	}
	[[unroll]] for (uint x = 0u; x < TQ; x++) {
		if (rr[x] >= p.T)
			break;
		uint da = (p.off[0] >> 2) + (rr[x] * p.Hkv + g) * nd;
		uint va = (p.off[1] >> 2) + (rr[x] * p.Hkv + g) * nd;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			dk_[da + c] = dk[x][c] * p.scale;
			dv_[va + c] = dv[x][c];
		}
	}
#endif
}
