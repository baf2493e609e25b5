#version 450
// Register-blocked causal GQA attention in fp32, for GPUs without cooperative matrices: the math,
// mask, bindings and push block of attention.comp / attention_bwd.comp (whose prep pass it
// shares), with tiles of ROWS x 32. An invocation (tr, tc) = (t / 16, t % 16) holds the scores of
// rows 4 tr .. 4 tr + 3 against columns tc and tc + 16 (a 4 x 2 block: six vec4 loads of shared
// memory per 32 multiply-adds), and of the accumulated output the same four rows at columns
// 4 tc .. 4 tc + 3 of each 64-wide chunk of the head (4 vec4 registers a chunk). The scores'
// products stage the head dimension through shared memory DC columns at a time; the accumulating
// product stages its right operand CV columns at a time. A tile's stages (its chunks of both) go
// through registers one stage ahead: the loads of the next stage (the next tile's first one after
// the last) are in flight while the current one is computed. Dh a multiple of 4 and at most DMAX
// (vk_attention.c pick_attention runs attention.comp's tiles otherwise).
//   PASS_FWD: rows = 64 queries of head h (the last tile first: causal rows get longer),
//             columns = tiles of 32 keys: o (=), lse (=, natural log).
//             Bindings: 0 = o, 1 = lse, 2 = q, 3 = k, 4 = v, 5 = seg. Groups: (ceil(T / 64), H).
//   PASS_KV:  rows = 64 keys of KV head g, columns = tiles of 32 queries of each head sharing g:
//             dV = P^T dO, dK = scale dS^T Q (=), with lse and Dr from the prep pass's scratch.
//             Bindings: 0 = dk, 1 = dv, 2 = q, 3 = k, 4 = v, 5 = dout, 6 = seg, 7 = scr.
//             Groups: (ceil(T / 64), Hkv).
//             With -DSPLIT (grouped heads): one query head h a group, its share of dK and dV
//             written to bindings 0 and 1 as [T, H, Dh] (=) for PASS_SUM. Groups: (ceil(T / 64), H).
//   PASS_SUM: dK, dV [T, Hkv, Dh] (=) the sums of PASS_KV -DSPLIT's shares over the heads of each
//             group, in head order. Bindings: 0 = dk, 1 = dv, 2 = dk's shares, 3 = dv's.
//             Groups: (n, 1), grid-stride.
//   PASS_Q:   rows = 64 queries of head h, columns = tiles of 32 keys: dQ = scale dS K (=), Dr
//             recomputed from o. Bindings: 0 = dq, 1 = dout, 2 = q, 3 = k, 4 = v, 5 = o, 6 = lse,
//             7 = seg. Groups: (ceil(T / 64), H).
// A tile of columns that no row of the group sees is skipped, as in attention.comp. The forward's
// online softmax: four invocations a row take its maximum over a tile, each keeps a quarter of its
// sum (added in order at the end), the score holders keep their rows' running maxima.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_vote : require

#define NR 16u // row groups of 4: ROWS = 64, 256 invocations (dK/dV: 32 keys, 128, ran 0.96-0.98x)
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
layout(binding = 2) readonly buffer Qb { vec4 q4_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k4_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v4_[]; };
layout(binding = 5) readonly buffer Sb { int seg_[]; };
#define SEG 5u
#elif defined(PASS_KV)
layout(binding = 0) writeonly buffer DKb { float dk_[]; };
layout(binding = 1) writeonly buffer DVb { float dv_[]; };
layout(binding = 2) readonly buffer Qb { vec4 q4_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k4_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v4_[]; };
layout(binding = 5) readonly buffer Gb { vec4 g4_[]; };
layout(binding = 6) readonly buffer Sb { int seg_[]; };
layout(binding = 7) readonly buffer Scr { float scr_[]; };
#define SEG 6u
#else
layout(binding = 0) writeonly buffer DQb { float dq_[]; };
layout(binding = 1) readonly buffer Gb { vec4 g4_[]; };
layout(binding = 2) readonly buffer Qb { vec4 q4_[]; };
layout(binding = 3) readonly buffer Kb { vec4 k4_[]; };
layout(binding = 4) readonly buffer Vb { vec4 v4_[]; };
layout(binding = 5) readonly buffer Ob { vec4 o4_[]; };
layout(binding = 6) readonly buffer Lb { float lse_[]; };
layout(binding = 7) readonly buffer Sb { int seg_[]; };
#define SEG 7u
#endif

// The scores' products: chunk rows of the row operand at Sc[0 ..], of the column operand after
// them. The accumulating product: its operand's 32 rows x 16 vec4s at Sc[0 ..] (fits: 512 vec4s).
// The forward's softmax: a row's four partial maxima as Sc[row] (the scores' reads done by then).
shared vec4 Sc[(ROWS + COLS) * SR];
shared vec4 Pt[COLS * PS]; // P (PASS_Q: dS) as [column][row group], a group's 4 rows a vec4
#if defined(PASS_KV)
shared vec4 Dt[COLS * PS]; // dS, as Pt
#endif
shared int segr[ROWS], segc[COLS];
shared float ra[ROWS], rb[ROWS]; // per row (PASS_KV: per column) values
shared uint anyv;                // whether any (row, column) pair of the tile is visible
// (the dK/dV pass: 32,132 bytes in all, inside the 32 KiB some devices give, lavapipe's among them)

uint t, tr, tc;

// ---- stages through registers: FETCH loads this invocation's vec4s of a stage (rows tok0 ..
// tok0 + n - 1 of head hh of a [T, nh, Dh] tensor at word base, head columns d0 .. d0 + w - 1;
// zeros past T and Dh), vec4 e = t + WG i into pre[o + i]; PUT writes them to Sc from vec4 at,
// rows rs vec4s apart. n w / 4 is a multiple of WG for every stage below (at most NPRE a stage).
// Dh and d0 are multiples of 4 and the bindings' word offsets too (vk_attention.c checks), so a
// vec4 is all inside the head or all past it.
#define NPRE_S ((ROWS + COLS) * DC / (4u * WG)) // a scores' stage
#define NPRE_A (COLS * CV / (4u * WG))          // an accumulating stage
#define NPRE (NPRE_S > NPRE_A ? NPRE_S : NPRE_A)
vec4 pre[NPRE];

#define FETCH(buf, base, tok0, n, nh, hh, d0, w, o)                                                    \
	[[unroll]] for (uint i_ = 0u; i_ < (n) * (w) / (4u * WG); i_++) {                               \
		uint e_ = t + WG * i_, r_ = e_ / ((w) / 4u), d_ = 4u * (e_ % ((w) / 4u)), tok_ = (tok0) + r_; \
		pre[(o) + i_] = tok_ < p.T && (d0) + d_ < p.Dh                                          \
					? buf[((base) + (tok_ * (nh) + (hh)) * p.Dh + (d0) + d_) >> 2]  \
					: vec4(0.0);                                                    \
	}
#define PUT(n, w, at, rs, o)                                                         \
	[[unroll]] for (uint i_ = 0u; i_ < (n) * (w) / (4u * WG); i_++) {               \
		uint e_ = t + WG * i_, r_ = e_ / ((w) / 4u), d4_ = e_ % ((w) / 4u);     \
		Sc[(at) + r_ * (rs) + d4_] = pre[(o) + i_];                             \
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
#define PUTP(arr, s)                                                                   \
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

// ---- the stages of a tile. nch chunks of DC for each score product, ncv chunks of CV for each
// accumulating one:
//   PASS_FWD: q k (nch), then v (ncv)                       rows: queries r0 .., columns: keys c0 ..
//   PASS_Q:   q k (nch), dO v (nch), then k (ncv)
//   PASS_KV:  k q (nch), v dO (nch), then dO, q (ncv pairs)  rows: keys r0 .., columns: queries c0 ..
#if defined(PASS_KV)
#define ACCS 2u // accumulating stages a chunk
#else
#define ACCS 1u
#endif
uint nch, ncv, nst;
uint r0, hr; // the rows' first token and head (fixed for a workgroup)

void fetch(uint st, uint c0, uint hc)
{
	bool acc_ = st >= (nst - ncv * ACCS);
#if defined(PASS_FWD)
	if (!acc_) {
		FETCH(q4_, p.off[2], r0, ROWS, p.H, hr, st * DC, DC, 0u)
		FETCH(k4_, p.off[3], c0, COLS, p.Hkv, hc, st * DC, DC, ROWS * DC / (4u * WG))
	} else {
		FETCH(v4_, p.off[4], c0, COLS, p.Hkv, hc, (st - nch) * CV, CV, 0u)
	}
#elif defined(PASS_Q)
	if (st < nch) {
		FETCH(q4_, p.off[2], r0, ROWS, p.H, hr, st * DC, DC, 0u)
		FETCH(k4_, p.off[3], c0, COLS, p.Hkv, hc, st * DC, DC, ROWS * DC / (4u * WG))
	} else if (!acc_) {
		FETCH(g4_, p.off[1], r0, ROWS, p.H, hr, (st - nch) * DC, DC, 0u)
		FETCH(v4_, p.off[4], c0, COLS, p.Hkv, hc, (st - nch) * DC, DC, ROWS * DC / (4u * WG))
	} else {
		FETCH(k4_, p.off[3], c0, COLS, p.Hkv, hc, (st - 2u * nch) * CV, CV, 0u)
	}
#else
	// hr = the KV head g (the rows' head), hc = the query head h (the columns')
	if (st < nch) {
		FETCH(k4_, p.off[3], r0, ROWS, p.Hkv, hr, st * DC, DC, 0u)
		FETCH(q4_, p.off[2], c0, COLS, p.H, hc, st * DC, DC, ROWS * DC / (4u * WG))
	} else if (!acc_) {
		FETCH(v4_, p.off[4], r0, ROWS, p.Hkv, hr, (st - nch) * DC, DC, 0u)
		FETCH(g4_, p.off[5], c0, COLS, p.H, hc, (st - nch) * DC, DC, ROWS * DC / (4u * WG))
	} else if ((st - 2u * nch) % 2u == 0u) {
		FETCH(g4_, p.off[5], c0, COLS, p.H, hc, (st - 2u * nch) / 2u * CV, CV, 0u)
	} else {
		FETCH(q4_, p.off[2], c0, COLS, p.H, hc, (st - 2u * nch) / 2u * CV, CV, 0u)
	}
#endif
}

void put(uint st)
{
	if (st < nst - ncv * ACCS) {
		PUT(ROWS, DC, 0u, SR, 0u)
		PUT(COLS, DC, ROWS * SR, SR, ROWS * DC / (4u * WG))
	} else {
		PUT(COLS, CV, 0u, 16u, 0u)
	}
}

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
	float s[8], dp[8];
	nch = (p.Dh + DC - 1u) / DC;
	ncv = (p.Dh + CV - 1u) / CV;

#if defined(PASS_FWD) || defined(PASS_Q)
	uint ntile = (p.T + ROWS - 1u) / ROWS;
	r0 = (ntile - 1u - gl_WorkGroupID.x) * ROWS;
	hr = gl_WorkGroupID.y;
	uint hc = hr / (p.H / p.Hkv), hc1 = hc + 1u; // the columns' (KV) head, one
	if (t < ROWS)
		segr[t] = r0 + t < p.T ? seg_[p.off[SEG] + r0 + t] : 0;
	uint cstart = p.window > 0u && r0 + 1u > p.window ? r0 + 1u - p.window : 0u;
	uint cend = min(p.T, r0 + ROWS);
#if defined(PASS_FWD)
	nst = nch + ncv;
	// the score holders' running maxima of rows 4 tr + a; invocation t's row t / 4: its running
	// maximum and the sum over its columns t % 4, t % 4 + 4, ...
	float m4[4] = {NEG, NEG, NEG, NEG};
	float mr = NEG, lq = 0.0;
#else
	nst = 2u * nch + ncv;
	// lse and Dr = rowsum(dO o o) of the rows: four partial sums a row, added in a fixed order
	{
		uint rr = t >> 2, i = r0 + rr;
		float part = 0.0;
		if (i < p.T)
			for (uint d = 4u * (t & 3u); d < p.Dh; d += 16u)
				part += dot(g4_[(p.off[1] + (i * p.H + hr) * p.Dh + d) >> 2],
					    o4_[(p.off[5] + (i * p.H + hr) * p.Dh + d) >> 2]);
		Sc[rr][t & 3u] = part;
		barrier();
		if (t < ROWS) {
			vec4 x = Sc[t];
			rb[t] = x.x + x.y + x.z + x.w;
			ra[t] = r0 + t < p.T ? lse_[p.off[6] + hr * p.T + r0 + t] : 0.0;
		}
	}
#endif
#else // PASS_KV
	uint grp = p.H / p.Hkv;
	r0 = gl_WorkGroupID.x * ROWS;
#if defined(SPLIT)
	uint hc = gl_WorkGroupID.y, hc1 = hc + 1u; // one query head
	hr = hc / grp;
	uint nho = p.H, ho = hc; // where dK and dV go: head hc's shares
#else
	hr = gl_WorkGroupID.y;
	uint hc = hr * grp, hc1 = hc + grp;
	uint nho = p.Hkv, ho = hr;
#endif
	nst = 2u * nch + 2u * ncv;
	if (t < ROWS)
		segr[t] = r0 + t < p.T ? seg_[p.off[SEG] + r0 + t] : 0;
	uint cstart = r0; // queries from the tile's first key on
	uint cend = p.window > 0u ? min(p.T, r0 + ROWS - 1u + p.window) : p.T;
	vec4 dk0[4], dk1[4]; // dv in acc0, acc1
	[[unroll]] for (uint a = 0u; a < 4u; a++) {
		dk0[a] = vec4(0.0);
		dk1[a] = vec4(0.0);
	}
#endif

	// tiles (hc, c0): columns c0 .. c0 + 31 of head hc, hc from hc to hc1 - 1
	uint c0 = cstart;
	if (c0 >= cend)
		hc = hc1;
	bool have = false; // pre[] holds stage 0 of tile (hc, c0)
	int sg = 0;        // invocation t < COLS: the segment of column c0 + t
	if (hc < hc1) {
		fetch(0u, c0, hc);
		have = true;
		sg = t < COLS && c0 + t < p.T ? seg_[p.off[SEG] + c0 + t] : 0;
	}
	while (hc < hc1) {
		barrier(); // the previous tile's reads of shared memory are done
		if (t < COLS) {
			segc[t] = sg;
#if defined(PASS_KV)
			uint i = c0 + t;
			bool in_ = i < p.T;
			ra[t] = in_ ? scr_[p.off[7] + 2u * (hc * p.T + i)] : 0.0;
			rb[t] = in_ ? scr_[p.off[7] + 2u * (hc * p.T + i) + 1u] : 0.0;
#endif
		}
		if (t == 0u)
			anyv = 0u;
		barrier();
		uint vis = visible(r0, c0);
		MARK(vis)
		// the next tile
		uint nc0 = c0 + COLS, nhc = hc;
		if (nc0 >= cend) {
			nc0 = cstart;
			nhc++;
		}
		if (nhc < hc1)
			sg = t < COLS && nc0 + t < p.T ? seg_[p.off[SEG] + nc0 + t] : 0;
		if (!have)
			fetch(0u, c0, hc);
		[[unroll]] for (uint x = 0u; x < 8u; x++) {
			s[x] = 0.0;
			dp[x] = 0.0;
		}
		for (uint st = 0u; st < nst; st++) {
			if (st > 0u)
				barrier(); // the previous stage's reads of Sc are done
			put(st);
			barrier();
			if (st == 0u && anyv == 0u) { // uniform: read by all before the next tile writes it
				have = false;
				break;
			}
			have = st + 1u < nst || nhc < hc1;
			if (st + 1u < nst)
				fetch(st + 1u, c0, hc);
			else if (nhc < hc1)
				fetch(0u, nc0, nhc);

#if defined(PASS_FWD)
			if (st < nch) {
				score(s);
				if (st + 1u < nch)
					continue;
				// the online softmax: the tile's row maxima, four invocations a row
				[[unroll]] for (uint x = 0u; x < 8u; x++)
					s[x] = (vis >> x & 1u) != 0u ? s[x] * p.scale : NEG;
				PUTP(Pt, s)
				barrier(); // the scores' reads of Sc are done too: Sc takes the partial maxima
				uint row = t >> 2, qq = t & 3u;
				float pm = NEG;
				for (uint j = qq; j < COLS; j += 4u)
					pm = max(pm, Pt[j * PS + (row >> 2)][row & 3u]);
				Sc[row][qq] = pm;
				barrier();
				vec4 x = Sc[row];
				float mn = max(mr, max(max(x.x, x.y), max(x.z, x.w)));
				lq *= exp(mr - mn);
				mr = mn;
				[[unroll]] for (uint a = 0u; a < 4u; a++) {
					vec4 y = Sc[4u * tr + a];
					float mt = max(m4[a], max(max(y.x, y.y), max(y.z, y.w)));
					float al = exp(m4[a] - mt);
					m4[a] = mt;
					[[unroll]] for (uint b = 0u; b < 2u; b++) {
						uint z = 2u * a + b;
						s[z] = (vis >> z & 1u) != 0u ? exp(s[z] - mt) : 0.0;
					}
					acc0[a] *= al;
					acc1[a] *= al;
				}
				PUTP(Pt, s) // read after the next stage's barriers
			} else if (st == nch) {
				uint row = t >> 2, qq = t & 3u;
				for (uint j = qq; j < COLS; j += 4u)
					lq += Pt[j * PS + (row >> 2)][row & 3u];
				ACCUM(Pt, acc0)
			} else if (DMAX > CV) {
				ACCUM(Pt, acc1)
			}
#elif defined(PASS_Q)
			if (st < nch) {
				score(s);
			} else if (st < 2u * nch) {
				score(dp);
				if (st + 1u < 2u * nch)
					continue;
				[[unroll]] for (uint a = 0u; a < 4u; a++) {
					float lr = ra[4u * tr + a], dr = rb[4u * tr + a];
					[[unroll]] for (uint b = 0u; b < 2u; b++) {
						uint z = 2u * a + b;
						s[z] = (vis >> z & 1u) != 0u ? exp(s[z] * p.scale - lr) * (dp[z] - dr) : 0.0;
					}
				}
				PUTP(Pt, s) // read after the next stage's barriers
			} else if (st == 2u * nch) {
				ACCUM(Pt, acc0)
			} else if (DMAX > CV) {
				ACCUM(Pt, acc1)
			}
#else
			if (st < nch) {
				score(s);
			} else if (st < 2u * nch) {
				score(dp);
				if (st + 1u < 2u * nch)
					continue;
				[[unroll]] for (uint b = 0u; b < 2u; b++) {
					float lq = ra[tc + 16u * b], dr = rb[tc + 16u * b];
					[[unroll]] for (uint a = 0u; a < 4u; a++) {
						uint z = 2u * a + b;
						float pr = (vis >> z & 1u) != 0u ? exp(s[z] * p.scale - lq) : 0.0;
						s[z] = pr;
						dp[z] = pr * (dp[z] - dr);
					}
				}
				PUTP(Pt, s)
				PUTP(Dt, dp)
			} else {
				uint k = st - 2u * nch;
				if (k == 0u) {
					ACCUM(Pt, acc0)
				} else if (k == 1u) {
					ACCUM(Dt, dk0)
				} else if (DMAX > CV && k == 2u) {
					ACCUM(Pt, acc1)
				} else if (DMAX > CV) {
					ACCUM(Dt, dk1)
				}
			}
#endif
		}
		c0 = nc0;
		hc = nhc;
	}

#if defined(PASS_FWD)
	// the rows' sums, their quarters added in order
	barrier();
	Sc[t >> 2][t & 3u] = lq;
	if ((t & 3u) == 0u)
		rb[t >> 2] = mr;
	barrier();
	if (t < ROWS) {
		vec4 x = Sc[t];
		float l = ((x.x + x.y) + x.z) + x.w;
		ra[t] = 1.0 / l;
		if (r0 + t < p.T)
			lse_[p.off[1] + hr * p.T + r0 + t] = rb[t] + log(l);
	}
	barrier();
	[[unroll]] for (uint a = 0u; a < 4u; a++) {
		acc0[a] *= ra[4u * tr + a];
		acc1[a] *= ra[4u * tr + a];
	}
	STORE(o_, p.off[0], r0, p.H, hr, acc0, 0u, 1.0)
	if (DMAX > CV) {
		STORE(o_, p.off[0], r0, p.H, hr, acc1, CV, 1.0)
	}
#elif defined(PASS_Q)
	STORE(dq_, p.off[0], r0, p.H, hr, acc0, 0u, p.scale)
	if (DMAX > CV) {
		STORE(dq_, p.off[0], r0, p.H, hr, acc1, CV, p.scale)
	}
#else
	STORE(dk_, p.off[0], r0, nho, ho, dk0, 0u, p.scale)
	STORE(dv_, p.off[1], r0, nho, ho, acc0, 0u, 1.0)
	if (DMAX > CV) {
		STORE(dk_, p.off[0], r0, nho, ho, dk1, CV, p.scale)
		STORE(dv_, p.off[1], r0, nho, ho, acc1, CV, 1.0)
	}
#endif
}
#endif // PASS_SUM
