#version 450
// Causal GQA attention without shared memory or barriers, for CPU-type Vulkan devices (see
// matmul_simple.comp): one invocation per row, the head dimension in vec4 registers (Dh a
// multiple of 4, at most 4 * DV4; q, k, v, o, dout bound on 16-byte boundaries: the host checks
// and otherwise runs the tiled attention*.comp). Same bindings, push block, mask and math as
// attention.comp / attention_bwd.comp; the softmax is online one key at a time.
//   (default)  forward: invocation = query i of head h: o (=), lse (=).
//              Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg. Groups: (ceil(T / WG), H).
//   PASS_KV:   invocation = key j of KV head g, over the queries of every head sharing g:
//              dV = P^T dO, dK = scale dS^T Q (=), lse and Dr from the prep pass's scratch.
//              Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//              Groups: (ceil(T / WG), Hkv).
//   PASS_Q:    invocation = query i of head h: dQ = scale dS K (=), Dr recomputed from o.
//              Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = o, 6 = lse, 7 = seg.
//              Groups: (ceil(T / WG), H).
// A key (query) that no invocation of the subgroup sees is skipped (subgroupAny).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_vote : require

#define WG 8
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
	uint r0 = gl_WorkGroupID.x * WG, r = r0 + gl_LocalInvocationID.x;
	uint rc = min(r, p.T - 1u); // clamped: loads stay in range, stores are skipped
	uint nd = p.Dh >> 2;
	int sr = seg_[p.off[SEG] + rc];
#if !defined(PASS_KV)
	// a query row: i = r of head h, seeing keys [kstart, kend)
	uint h = gl_WorkGroupID.y, g = h / (p.H / p.Hkv);
	uint qa = (p.off[2] >> 2) + (rc * p.H + h) * nd;
	vec4 q[DV4], acc[DV4];
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		q[c] = q_[qa + c];
		acc[c] = vec4(0.0);
	}
	uint kstart = p.window > 0u && r0 + 1u > p.window ? r0 + 1u - p.window : 0u;
	uint kend = min(p.T, r0 + WG);
#if defined(PASS_Q)
	vec4 go[DV4];
	float dr = 0.0;
	uint ga = (p.off[1] >> 2) + (rc * p.H + h) * nd, oa = (p.off[5] >> 2) + (rc * p.H + h) * nd;
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		go[c] = g_[ga + c];
		dr = dot4(dr, go[c], o_[oa + c]);
	}
	float lse = lse_[p.off[6] + h * p.T + rc];
#else
	float m = NEG, l = 0.0;
#endif
	for (uint j = kstart; j < kend; j++) {
		bool valid = attn_sees(r, j, sr, seg_[p.off[SEG] + j]);
		if (!subgroupAny(valid))
			continue;
		uint ka = (p.off[3] >> 2) + (j * p.Hkv + g) * nd, va = (p.off[4] >> 2) + (j * p.Hkv + g) * nd;
		float s = 0.0;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			s += dot(q[c], k_[ka + c]);
		}
		s *= p.scale;
#if defined(PASS_Q)
		float dp = 0.0;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			dp = dot4(dp, go[c], v_[va + c]);
		}
		float pr = valid ? exp(s - lse) : 0.0;
		float ds = pr * (dp - dr);
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			acc[c] += ds * k_[ka + c];
		}
#else
		float mn = valid ? max(m, s) : m;
		float alpha = exp(m - mn), pr = valid ? exp(s - mn) : 0.0;
		l = l * alpha + pr;
		m = mn;
		[[unroll]] for (uint c = 0u; c < DV4; c++) {
			if (c >= nd)
				break;
			acc[c] = acc[c] * alpha + pr * v_[va + c];
		}
#endif
	}
	if (r >= p.T)
		return;
#if defined(PASS_Q)
	uint da = (p.off[0] >> 2) + (r * p.H + h) * nd;
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		dq_[da + c] = acc[c] * p.scale;
	}
#else
	uint oo = (p.off[0] >> 2) + (r * p.H + h) * nd;
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		o_[oo + c] = acc[c] / l;
	}
	lse_[p.off[1] + h * p.T + r] = m + log(l);
#endif

#else // PASS_KV: a key row j = r of KV head g
	uint g = gl_WorkGroupID.y, hper = p.H / p.Hkv;
	uint ka = (p.off[3] >> 2) + (rc * p.Hkv + g) * nd;
	vec4 k[DV4], v[DV4], dk[DV4], dv[DV4];
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		k[c] = k_[ka + c];
		v[c] = v_[(p.off[4] >> 2) + (rc * p.Hkv + g) * nd + c];
		dk[c] = vec4(0.0);
		dv[c] = vec4(0.0);
	}
	uint qend = p.window > 0u ? min(p.T, r0 + WG - 1u + p.window) : p.T;
	for (uint hh = 0u; hh < hper; hh++) {
		uint h = g * hper + hh;
		for (uint i = r0; i < qend; i++) {
			bool valid = attn_sees(i, r, seg_[p.off[SEG] + i], sr) && r < p.T;
			if (!subgroupAny(valid))
				continue;
			uint qa = (p.off[2] >> 2) + (i * p.H + h) * nd, ga = (p.off[5] >> 2) + (i * p.H + h) * nd;
			float s = 0.0, dp = 0.0;
			[[unroll]] for (uint c = 0u; c < DV4; c++) {
				if (c >= nd)
					break;
				s += dot(k[c], q_[qa + c]);
				dp = dot4(dp, g_[ga + c], v[c]);
			}
			uint x = p.off[7] + 2u * (h * p.T + i);
			float pr = valid ? exp(s * p.scale - scr_[x]) : 0.0;
			float ds = pr * (dp - scr_[x + 1u]);
			[[unroll]] for (uint c = 0u; c < DV4; c++) {
				if (c >= nd)
					break;
				dv[c] += pr * g_[ga + c];
				dk[c] += ds * q_[qa + c];
			}
		}
	}
	if (r >= p.T)
		return;
	uint da = (p.off[0] >> 2) + (r * p.Hkv + g) * nd, va = (p.off[1] >> 2) + (r * p.Hkv + g) * nd;
	[[unroll]] for (uint c = 0u; c < DV4; c++) {
		if (c >= nd)
			break;
		dk_[da + c] = dk[c] * p.scale;
		dv_[va + c] = dv[c];
	}
#endif
}
