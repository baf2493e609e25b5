#version 450
// Register-blocked causal GQA attention in fp32, for GPUs without cooperative matrices: the math,
// mask, bindings and push block of attention.comp / attention_bwd.comp (whose prep pass it
// shares), with tiles of ROWS x 32. An invocation (tr, tc) = (t / 16, t % 16) holds the scores of
// rows 4 tr .. 4 tr + 3 against columns tc and tc + 16 (a 4 x 2 block: six vec4 loads of shared
// memory per 32 multiply-adds), and of the accumulated output the same four rows at columns
// 4 tc .. 4 tc + 3 of each 64-wide chunk of the head (4 vec4 registers a chunk). The scores'
// products stage the head dimension through shared memory DC columns at a time; the accumulating
// product stages its right operand CV columns at a time. Dh a multiple of 4 and at most DMAX
// (vk_attention.c pick_attention runs attention.comp's tiles otherwise).
//   PASS_FWD: rows = 64 queries of head h (the last tile first: causal rows get longer),
//             columns = tiles of 32 keys: o (=), lse (=, natural log).
//             Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg. Groups: (ceil(T / 64), H).
//   PASS_KV:  rows = 32 keys of KV head g, columns = tiles of 32 queries of each head sharing g:
//             dV = P^T dO, dK = scale dS^T Q (=), with lse and Dr from the prep pass's scratch.
//             Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//             Groups: (ceil(T / 32), Hkv).
//             With -DSPLIT (grouped heads): one query head h a group, its share of dK and dV
//             written to bindings 0 and 1 as [T, H, Dh] (=) for PASS_SUM. Groups: (ceil(T / 32), H).
//   PASS_SUM: dK, dV [T, Hkv, Dh] (=) the sums of PASS_KV -DSPLIT's shares over the heads of each
//             group, in head order. Bindings: 0 = dk, 1 = dv, 2 = dk's shares, 3 = dv's.
//             Groups: (n, 1), grid-stride.
//   PASS_Q:   rows = 64 queries of head h, columns = tiles of 32 keys: dQ = scale dS K (=), Dr
//             recomputed from o. Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = o, 6 = lse,
//             7 = seg. Groups: (ceil(T / 64), H).
// A tile of columns that no row of the group sees is skipped, as in attention.comp.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require

#if defined(PASS_KV)
#define NR 8u // row groups of 4: ROWS = 32, 128 invocations
#else
#define NR 16u // ROWS = 64, 256 invocations
#endif
#define ROWS (4u * NR)
#define WG (16u * NR)
#define COLS 32u
#define DC 32u             // head-dimension chunk of the scores' products
#define SR (DC / 4u + 1u)  // vec4s of a staged row (one of padding: rows on distinct banks)
#define CV 64u             // head-dimension chunk of the accumulating product: 16 vec4s a row
#ifndef DMAX
#define DMAX 128u // two chunks of CV: the accumulators acc0 and acc1 (named, never indexed)
#endif            // -DDMAX=64u: acc0 only (fewer registers)
#define PS (NR + 1u) // vec4s of a row of Pt (padded: the 16 column writers on distinct banks)
#define NEG (-1.0e30)

layout(local_size_x = WG) in;

layout(push_constant) uniform Push {
	uint T, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[8];
} p;

#if defined(PASS_SUM)
layout(binding = 0) writeonly buffer DKb { float dk_[]; };
layout(binding = 1) writeonly buffer DVb { float dv_[]; };
layout(binding = 2) readonly buffer PKb { float pk_[]; };
layout(binding = 3) readonly buffer PVb { float pv_[]; };

void main()
{
	uint n = p.T * p.Hkv * p.Dh, grp = p.H / p.Hkv, stride = gl_NumWorkGroups.x * WG;
	for (uint e = gl_GlobalInvocationID.x; e < n; e += stride) {
		uint d = e % p.Dh, jg = e / p.Dh, g = jg % p.Hkv, j = jg / p.Hkv;
		uint at = (j * p.H + g * grp) * p.Dh + d;
		float k = 0.0, v = 0.0;
		for (uint x = 0u; x < grp; x++) {
			k += pk_[p.off[2] + at + x * p.Dh];
			v += pv_[p.off[3] + at + x * p.Dh];
		}
		dk_[p.off[0] + e] = k;
		dv_[p.off[1] + e] = v;
	}
}
#else
#if defined(PASS_FWD)
layout(binding = 0) writeonly buffer Ob { float o_[]; };
layout(binding = 1) writeonly buffer Lb { float lse_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };
#define SEG 5u
#elif defined(PASS_KV)
layout(binding = 0) writeonly buffer DKb { float dk_[]; };
layout(binding = 1) writeonly buffer DVb { float dv_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Gb { float g_[]; };
layout(binding = 6) readonly buffer Sb { int seg_[]; };
layout(binding = 7) readonly buffer Scr { float scr_[]; };
#define SEG 6u
#else
layout(binding = 0) writeonly buffer DQb { float dq_[]; };
layout(binding = 1) readonly buffer Gb { float g_[]; };
layout(binding = 2) readonly buffer Qb { float q_[]; };
layout(binding = 3) readonly buffer Kb { float k_[]; };
layout(binding = 4) readonly buffer Vb { float v_[]; };
layout(binding = 5) readonly buffer Ob { float o_[]; };
layout(binding = 6) readonly buffer Lb { float lse_[]; };
layout(binding = 7) readonly buffer Sb { int seg_[]; };
#define SEG 7u
#endif

// The scores' products: chunk rows of the row operand at Sc[0 ..], of the column operand after
// them. The accumulating product: its operand's 32 rows x 16 vec4s at Sc[0 ..] (fits: 512 vec4s).
shared vec4 Sc[(ROWS + COLS) * SR];
shared vec4 Pt[COLS * PS]; // P (PASS_Q: dS) as [column][row group], a group's 4 rows a vec4
#if defined(PASS_KV)
shared vec4 Dt[COLS * PS]; // dS, as Pt
#endif
shared int segr[ROWS], segc[COLS];
shared float ra[ROWS], rb[ROWS]; // per row (PASS_KV: per column) values
shared uint anyv;                // whether any (row, column) pair of the tile is visible

uint t, tr, tc;

// Stages rows tok0 .. tok0 + n - 1 of head hh of a [T, nh, Dh] tensor at word base, head columns
// d0 .. d0 + w - 1, into Sc from vec4 at, rows rs vec4s apart; zeros past T and past Dh.
#define STAGE(buf, base, tok0, n, nh, hh, d0, w, at, rs)                                                  \
	for (uint e_ = t; e_ < (n) * (w); e_ += WG) {                                                       \
		uint r_ = e_ / (w), d_ = e_ % (w), tok_ = (tok0) + r_;                                      \
		Sc[(at) + r_ * (rs) + (d_ >> 2)][d_ & 3u] =                                                 \
			tok_ < p.T && (d0) + d_ < p.Dh ? buf[(base) + (tok_ * (nh) + (hh)) * p.Dh + (d0) + d_] \
						   : 0.0;                                                   \
	}

// s[2 a + b] += row (4 tr + a) . column (tc + 16 b) over one staged chunk
void score(inout float s[8])
{
	[[unroll]] for (uint d4 = 0u; d4 < DC / 4u; d4++) {
		vec4 b0 = Sc[(ROWS + tc) * SR + d4], b1 = Sc[(ROWS + tc + 16u) * SR + d4];
		[[unroll]] for (uint a = 0u; a < 4u; a++) {
			vec4 x = Sc[(4u * tr + a) * SR + d4];
			s[2u * a] += dot(x, b0);
			s[2u * a + 1u] += dot(x, b1);
		}
	}
}

// Whether query i sees key j (training-math.md: causal, same sample, inside the window).
bool sees(uint i, uint j, int si, int sj)
{
	return i < p.T && j <= i && si == sj && (p.window == 0u || i - j < p.window);
}

// Bit 2 a + b: whether the tile's pair (row 4 tr + a, column tc + 16 b) is visible; rows are
// queries from r0 (keys in PASS_KV), columns keys from c0 (queries in PASS_KV).
uint visible(uint r0, uint c0)
{
	uint vis = 0u;
	[[unroll]] for (uint a = 0u; a < 4u; a++)
		[[unroll]] for (uint b = 0u; b < 2u; b++) {
			uint r = 4u * tr + a, c = tc + 16u * b;
#if defined(PASS_KV)
			bool v = sees(c0 + c, r0 + r, segc[c], segr[r]);
#else
			bool v = sees(r0 + r, c0 + c, segr[r], segc[c]);
#endif
			vis |= v ? 1u << (2u * a + b) : 0u;
		}
	return vis;
}

// Pt-like array's entries of this invocation's scores
#define PUT(arr, s)                                                                    \
	[[unroll]] for (uint b_ = 0u; b_ < 2u; b_++) arr[(tc + 16u * b_) * PS + tr] = \
		vec4(s[b_], s[2u + b_], s[4u + b_], s[6u + b_]);

// acc[a] += sum over the 32 columns j of P[4 tr + a][j] * C[j][4 tc ..], C staged at Sc
#define ACCUM(P, acc)                                                \
	for (uint j_ = 0u; j_ < COLS; j_++) {                        \
		vec4 pv_ = P[j_ * PS + tr], cv_ = Sc[j_ * 16u + tc]; \
		acc[0] += pv_.x * cv_;                               \
		acc[1] += pv_.y * cv_;                               \
		acc[2] += pv_.z * cv_;                               \
		acc[3] += pv_.w * cv_;                               \
	}

// Writes the four rows' columns d0 + 4 tc .. of acc (times f) to a [T, nh, Dh] tensor's head hh.
#define STORE(buf, base, r0, nh, hh, acc, d0, f)                                         \
	[[unroll]] for (uint a_ = 0u; a_ < 4u; a_++) {                                   \
		uint i_ = (r0) + 4u * tr + a_;                                           \
		[[unroll]] for (uint e_ = 0u; e_ < 4u; e_++) {                           \
			uint d_ = (d0) + 4u * tc + e_;                                   \
			if (i_ < p.T && d_ < p.Dh)                                       \
				buf[(base) + (i_ * (nh) + (hh)) * p.Dh + d_] = acc[a_][e_] * (f); \
		}                                                                        \
	}

// Marks the tile visible when any of this invocation's pairs is (one atomic a subgroup).
#define MARK(vis)                                   \
	if (subgroupAny((vis) != 0u) && subgroupElect()) \
		atomicOr(anyv, 1u);

void main()
{
	t = gl_LocalInvocationID.x;
	tr = t >> 4;
	tc = t & 15u;
	vec4 acc0[4], acc1[4]; // head columns 0 .. 63 and 64 .. 127
	[[unroll]] for (uint a = 0u; a < 4u; a++) {
		acc0[a] = vec4(0.0);
		acc1[a] = vec4(0.0);
	}
	float s[8];

#if defined(PASS_FWD) || defined(PASS_Q)
	uint ntile = (p.T + ROWS - 1u) / ROWS;
	uint q0 = (ntile - 1u - gl_WorkGroupID.x) * ROWS, h = gl_WorkGroupID.y;
	uint g = h / (p.H / p.Hkv);
	if (t < ROWS)
		segr[t] = q0 + t < p.T ? seg_[p.off[SEG] + q0 + t] : 0;
#if defined(PASS_FWD)
	float m = NEG, l = 0.0, alpha = 1.0; // invocation t < ROWS: row t's running max and sum
#else
	// lse and Dr = rowsum(dO o o) of the rows: four partial sums a row, added in a fixed order
	{
		uint rr = t >> 2, i = q0 + rr;
		float part = 0.0;
		if (i < p.T)
			for (uint d = t & 3u; d < p.Dh; d += 4u)
				part += g_[p.off[1] + (i * p.H + h) * p.Dh + d] *
					o_[p.off[5] + (i * p.H + h) * p.Dh + d];
		Sc[rr][t & 3u] = part;
		barrier();
		if (t < ROWS) {
			vec4 x = Sc[t];
			rb[t] = x.x + x.y + x.z + x.w;
			ra[t] = q0 + t < p.T ? lse_[p.off[6] + h * p.T + q0 + t] : 0.0;
		}
	}
#endif
	uint kstart = p.window > 0u && q0 + 1u > p.window ? q0 + 1u - p.window : 0u;
	uint kend = min(p.T, q0 + ROWS);
	for (uint k0 = kstart; k0 < kend; k0 += COLS) {
		barrier(); // the previous tile's reads of shared memory are done
		if (t < COLS)
			segc[t] = k0 + t < p.T ? seg_[p.off[SEG] + k0 + t] : 0;
		if (t == 0u)
			anyv = 0u;
		barrier();
		uint vis = visible(q0, k0);
		MARK(vis)

		// s = q . k (scaled below)
		[[unroll]] for (uint x = 0u; x < 8u; x++)
			s[x] = 0.0;
		bool skip = false;
		for (uint d0 = 0u; d0 < p.Dh; d0 += DC) {
			if (d0 > 0u)
				barrier();
			STAGE(q_, p.off[2], q0, ROWS, p.H, h, d0, DC, 0u, SR);
			STAGE(k_, p.off[3], k0, COLS, p.Hkv, g, d0, DC, ROWS * SR, SR);
			barrier();
			if (anyv == 0u) { // uniform: read by all before the next tile writes it
				skip = true;
				break;
			}
			score(s);
		}
		if (skip)
			continue;
#if defined(PASS_FWD)
		barrier(); // the chunks' reads are done: Sc takes v's rows below
		[[unroll]] for (uint x = 0u; x < 8u; x++)
			s[x] = (vis >> x & 1u) != 0u ? s[x] * p.scale : NEG;
		PUT(Pt, s)
		barrier();
		// online softmax: row t's new maximum, and the factor for what was summed so far
		if (t < ROWS) {
			float mt = NEG;
			for (uint j = 0u; j < COLS; j++)
				mt = max(mt, Pt[j * PS + (t >> 2)][t & 3u]);
			float mn = max(m, mt);
			alpha = exp(m - mn);
			m = mn;
			ra[t] = mn;
			rb[t] = alpha;
		}
		barrier();
		[[unroll]] for (uint a = 0u; a < 4u; a++) {
			float mn = ra[4u * tr + a], al = rb[4u * tr + a];
			[[unroll]] for (uint b = 0u; b < 2u; b++)
				s[2u * a + b] = (vis >> (2u * a + b) & 1u) != 0u ? exp(s[2u * a + b] - mn) : 0.0;
			acc0[a] *= al;
			acc1[a] *= al;
		}
		PUT(Pt, s)
		// o += P v
		STAGE(v_, p.off[4], k0, COLS, p.Hkv, g, 0u, CV, 0u, 16u);
		barrier();
		if (t < ROWS) {
			float rs = 0.0;
			for (uint j = 0u; j < COLS; j++)
				rs += Pt[j * PS + (t >> 2)][t & 3u];
			l = l * alpha + rs;
		}
		ACCUM(Pt, acc0)
		if (DMAX > CV && p.Dh > CV) { // uniform
			barrier();
			STAGE(v_, p.off[4], k0, COLS, p.Hkv, g, CV, CV, 0u, 16u);
			barrier();
			ACCUM(Pt, acc1)
		}
#else
		// dp = dO . v
		float dp[8];
		[[unroll]] for (uint x = 0u; x < 8u; x++)
			dp[x] = 0.0;
		for (uint d0 = 0u; d0 < p.Dh; d0 += DC) {
			barrier();
			STAGE(g_, p.off[1], q0, ROWS, p.H, h, d0, DC, 0u, SR);
			STAGE(v_, p.off[4], k0, COLS, p.Hkv, g, d0, DC, ROWS * SR, SR);
			barrier();
			score(dp);
		}
		barrier(); // the chunks' reads are done: Sc takes k's rows below
		[[unroll]] for (uint a = 0u; a < 4u; a++) {
			float lr = ra[4u * tr + a], dr = rb[4u * tr + a];
			[[unroll]] for (uint b = 0u; b < 2u; b++) {
				uint x = 2u * a + b;
				s[x] = (vis >> x & 1u) != 0u ? exp(s[x] * p.scale - lr) * (dp[x] - dr) : 0.0;
			}
		}
		PUT(Pt, s)
		// dq += dS k
		STAGE(k_, p.off[3], k0, COLS, p.Hkv, g, 0u, CV, 0u, 16u);
		barrier();
		ACCUM(Pt, acc0)
		if (DMAX > CV && p.Dh > CV) {
			barrier();
			STAGE(k_, p.off[3], k0, COLS, p.Hkv, g, CV, CV, 0u, 16u);
			barrier();
			ACCUM(Pt, acc1)
		}
#endif
	}

#if defined(PASS_FWD)
	barrier();
	if (t < ROWS) {
		ra[t] = 1.0 / l;
		if (q0 + t < p.T)
			lse_[p.off[1] + h * p.T + q0 + t] = m + log(l);
	}
	barrier();
	[[unroll]] for (uint a = 0u; a < 4u; a++) {
		acc0[a] *= ra[4u * tr + a];
		acc1[a] *= ra[4u * tr + a];
	}
	STORE(o_, p.off[0], q0, p.H, h, acc0, 0u, 1.0)
	if (DMAX > CV) {
		STORE(o_, p.off[0], q0, p.H, h, acc1, CV, 1.0)
	}
#else
	STORE(dq_, p.off[0], q0, p.H, h, acc0, 0u, p.scale)
	if (DMAX > CV) {
		STORE(dq_, p.off[0], q0, p.H, h, acc1, CV, p.scale)
	}
#endif

#else // PASS_KV
	uint k0 = gl_WorkGroupID.x * ROWS, grp = p.H / p.Hkv;
#if defined(SPLIT)
	uint h0 = gl_WorkGroupID.y, h1 = h0 + 1u, g = h0 / grp, nho = p.H, ho = h0; // out: head h0
#else
	uint g = gl_WorkGroupID.y, h0 = g * grp, h1 = h0 + grp, nho = p.Hkv, ho = g;
#endif
	if (t < ROWS)
		segr[t] = k0 + t < p.T ? seg_[p.off[SEG] + k0 + t] : 0;
	vec4 dk0[4], dk1[4]; // dv in acc0, acc1
	[[unroll]] for (uint a = 0u; a < 4u; a++) {
		dk0[a] = vec4(0.0);
		dk1[a] = vec4(0.0);
	}
	float dp[8];
	uint qend = p.window > 0u ? min(p.T, k0 + ROWS - 1u + p.window) : p.T;
	for (uint h = h0; h < h1; h++) {
		for (uint i0 = k0; i0 < qend; i0 += COLS) {
			barrier(); // the previous tile's reads of shared memory are done
			if (t < COLS) {
				uint i = i0 + t;
				bool in_ = i < p.T;
				segc[t] = in_ ? seg_[p.off[SEG] + i] : 0;
				ra[t] = in_ ? scr_[p.off[7] + 2u * (h * p.T + i)] : 0.0;
				rb[t] = in_ ? scr_[p.off[7] + 2u * (h * p.T + i) + 1u] : 0.0;
			}
			if (t == 0u)
				anyv = 0u;
			barrier();
			uint vis = visible(k0, i0);
			MARK(vis)

			// s = k . q, dp = v . dO
			[[unroll]] for (uint x = 0u; x < 8u; x++) {
				s[x] = 0.0;
				dp[x] = 0.0;
			}
			bool skip = false;
			for (uint d0 = 0u; d0 < p.Dh; d0 += DC) {
				if (d0 > 0u)
					barrier();
				STAGE(k_, p.off[3], k0, ROWS, p.Hkv, g, d0, DC, 0u, SR);
				STAGE(q_, p.off[2], i0, COLS, p.H, h, d0, DC, ROWS * SR, SR);
				barrier();
				if (anyv == 0u) {
					skip = true;
					break;
				}
				score(s);
			}
			if (skip)
				continue;
			for (uint d0 = 0u; d0 < p.Dh; d0 += DC) {
				barrier();
				STAGE(v_, p.off[4], k0, ROWS, p.Hkv, g, d0, DC, 0u, SR);
				STAGE(g_, p.off[5], i0, COLS, p.H, h, d0, DC, ROWS * SR, SR);
				barrier();
				score(dp);
			}
			barrier(); // the chunks' reads are done: Sc takes dO's and q's rows below
			[[unroll]] for (uint b = 0u; b < 2u; b++) {
				float lq = ra[tc + 16u * b], dr = rb[tc + 16u * b];
				[[unroll]] for (uint a = 0u; a < 4u; a++) {
					uint x = 2u * a + b;
					float pr = (vis >> x & 1u) != 0u ? exp(s[x] * p.scale - lq) : 0.0;
					s[x] = pr;
					dp[x] = pr * (dp[x] - dr);
				}
			}
			PUT(Pt, s)
			PUT(Dt, dp)
			// dv += P dO, dk += dS q
			STAGE(g_, p.off[5], i0, COLS, p.H, h, 0u, CV, 0u, 16u);
			barrier();
			ACCUM(Pt, acc0)
			barrier();
			STAGE(q_, p.off[2], i0, COLS, p.H, h, 0u, CV, 0u, 16u);
			barrier();
			ACCUM(Dt, dk0)
			if (DMAX > CV && p.Dh > CV) {
				barrier();
				STAGE(g_, p.off[5], i0, COLS, p.H, h, CV, CV, 0u, 16u);
				barrier();
				ACCUM(Pt, acc1)
				barrier();
				STAGE(q_, p.off[2], i0, COLS, p.H, h, CV, CV, 0u, 16u);
				barrier();
				ACCUM(Dt, dk1)
			}
		}
	}
	STORE(dk_, p.off[0], k0, nho, ho, dk0, 0u, p.scale)
	if (DMAX > CV) {
		STORE(dk_, p.off[0], k0, nho, ho, dk1, CV, p.scale)
	}
	STORE(dv_, p.off[1], k0, nho, ho, acc0, 0u, 1.0)
	if (DMAX > CV) {
		STORE(dv_, p.off[1], k0, nho, ho, acc1, CV, 1.0)
	}
#endif
}
#endif // PASS_SUM
