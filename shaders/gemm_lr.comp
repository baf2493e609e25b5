#version 450
// fp32 GEMM for the shapes of a LoRA linear, where one of M, N, K is the rank (at most 4 RV):
//   C(m, n) = alpha * sum_k A(m, k) B(k, n) + beta * C(m, n)      (beta = 0: C is not read)
// with every operand addressed through strides (A(m, k) at a_off + m sam + k sak, likewise B and
// C), so transposes are free. The rank dimension lives in RV vec4 registers per invocation
// (indexed by constants only: a run-time index would send them to local memory); B's rank
// columns past N are zero in shared memory. The variants, each reading its large operand once,
// coalesced:
//   -DROWK  N <= 4 RV, A's k contiguous (u = x A^T, du = dy B): a group takes 32 rows, 8 lanes
//           per row taking 4 consecutive k at a time (one vec4 load when p.vec, i.e. A's rows and
//           K on 16-byte boundaries); B in shared chunks; the lanes' partial sums are added in a
//           fixed order through shared memory. With p.kc > 0 (a multiple of CK) group (x, z) sums
//           only k in [z kc, z kc + kc) and writes part[z][m][n] for -DREDUCE, as ROWM does: 32
//           rows per group alone leave most multiprocessors idle (M = 2048 is 64 groups).
//   -DROWM  N <= 4 RV, A's m contiguous (dB = dy^T u, dA^T = x^T du): one row per invocation,
//           256 consecutive rows per group, B chunks in shared memory read as broadcasts; with
//           p.kc > 0 group (x, z) sums only k in [z kc, z kc + kc) and writes the raw sums to
//           part[z][m][n] (binding 3), which -DREDUCE adds in the order of z into C.
//   -DWIDE  K <= 4 RV (y += u B^T, dx += du A): a group takes 64 rows x 128 columns; invocation
//           t keeps B's column t % 128 in registers and walks 32 rows of A from shared memory.
//   -DTK    the successor of ROWK (same operands, same split over k and REDUCE pass): 128 rows
//           per group, four k-lanes per row, B transposed in shared memory so that a subgroup's
//           reads of it have no bank conflicts (ROWK's eight lanes of a row read B rows 4 apart,
//           all in one bank: 8-way conflicts); two rows per invocation share each B read.
//   -DTKP   the successor of TK (same operands; the default, TERN_VK_LORA_TK=old keeps TK): TNR rows
//           (4 or 2) per invocation and eight k-lanes per row, so each B read from shared memory
//           feeds 4 TNR multiply-adds; TS steps (4 or 2) of the next chunk of x loaded into
//           registers while the current one is multiplied; a split over k whose partials the
//           last group of each row block adds (an arrival counter, binding 4), no REDUCE pass.
//   -DTM    the successor of ROWM: four consecutive rows per invocation (one vec4 of A's
//           contiguous m when p.vec) and four k-lanes per group, so each broadcast B read feeds
//           16 multiply-adds instead of 4 and each load brings 16 bytes instead of 4; the lanes
//           are added in a fixed order at the end.
//   -DWV    the successor of WIDE: 32 x 256 tiles, four columns per invocation (one vec4 of C when
//           p.vec: C's rows, N and offset on 16-byte boundaries, columns contiguous), B's
//           columns in registers (through shared memory, 16 rows of k a round) and the old C
//           loaded before the first barrier.
// TKP (or TK with TERN_VK_LORA_TK=old), TM and WV are picked by vk_ops.c (pick_gemm_lr) unless
// TERN_VK_LORA=v1 asks for ROWK / ROWM (and WIDE).
// These shapes are bound by memory latency, not arithmetic: every loop issues several
// independent loads before it uses them (unrolled by constants), which is what keeps enough
// bytes in flight. Bindings: 0 = C, 1 = A, 2 = B (f32), 3 = split partials (f32), 4 = TKP's
// arrival counters (u32). Deterministic: no float atomics (TKP counts its groups with a uint one),
// every sum in a fixed order.
#extension GL_EXT_control_flow_attributes : enable

#ifndef RV
#define RV 4u
#endif
#define RMAX (4u * RV)
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint M, N, K;
	uint c_off, scm, scn;
	uint a_off, sam, sak;
	uint b_off, sbk, sbn;
	float alpha, beta;
	uint kc, part_off, splits; // ROWM split over k, REDUCE
	uint vec;                  // ROWK, TK: A's rows and K on 16-byte boundaries; TM: m; WV: C's n
} p;

layout(binding = 0) buffer Cb { float c_[]; };
layout(binding = 0) buffer Cb4 { vec4 c4[]; };
layout(binding = 1) readonly buffer Ab { float a_[]; };
layout(binding = 1) readonly buffer Ab4 { vec4 a4[]; };
layout(binding = 2) readonly buffer Bb { float b_[]; };
layout(binding = 2) readonly buffer Bb4 { vec4 b4[]; };
#if defined(TKP) || defined(LAST)
// the last group of a row block reads what the other groups of the dispatch wrote (device scope)
layout(binding = 3) coherent buffer Pb { float part[]; };
layout(binding = 4) coherent buffer Cn { uint cnt[]; }; // one arrival counter per row block
void last_adds(uint m0); // below: the splits' partials added by the last group of a row block
#else
layout(binding = 3) buffer Pb { float part[]; };
#endif

void store(uint m, uint n, float v)
{
	uint o = p.c_off + m * p.scm + n * p.scn;
	if (p.beta == 0.0)
		c_[o] = p.alpha * v;
	else
		c_[o] = p.alpha * v + p.beta * c_[o];
}

// The split's raw sum to the partials (p.kc > 0, REDUCE adds them), else C(m, n).
void put(uint m, uint n, float v)
{
	if (p.kc > 0u)
		part[p.part_off + (gl_WorkGroupID.y * p.M + m) * p.N + n] = v;
	else
		store(m, n, v);
}

#if defined(ROWK) || defined(ROWM)
#define CK 128u
shared vec4 Bs[CK][RV]; // B(k0 + kk, 4 j .. 4 j + 3) in Bs[kk][j]

// Rows k0 .. k0 + kn of B into Bs (columns past N zero), in address order: k fastest when B's k
// is contiguous (sbk == 1), else the column.
void load_b(uint k0, uint kn)
{
	for (uint e = gl_LocalInvocationID.x; e < kn * RMAX; e += 256u) {
		uint kk = p.sbk == 1u ? e % kn : e / RMAX, r = p.sbk == 1u ? e / kn : e % RMAX;
		float v = 0.0;
		if (r < p.N)
			v = b_[p.b_off + (k0 + kk) * p.sbk + r * p.sbn];
		Bs[kk][r >> 2][r & 3u] = v;
	}
}

void fma_row(inout vec4 acc[RV], float a, uint kk)
{
	[[unroll]] for (uint j = 0u; j < RV; j++)
		acc[j] += a * Bs[kk][j];
}
#endif

#if defined(ROWK)
#define ROWS 32u
#define LANES 8u
shared vec4 red[256][RV];

void main()
{
	uint t = gl_LocalInvocationID.x, row = t / LANES, lane = t % LANES;
	uint m = gl_WorkGroupID.x * ROWS + row;
	bool live = m < p.M;
	vec4 acc[RV];
	[[unroll]] for (uint j = 0u; j < RV; j++)
		acc[j] = vec4(0.0);
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	for (uint k0 = kb; k0 < ke; k0 += CK) {
		uint kn = min(CK, ke - k0);
		barrier(); // the previous chunk is no longer read
		load_b(k0, kn);
		barrier();
		if (live) {
			// lane takes k = 4 lane + 32 s .. + 3: four steps of 4 over the chunk, their loads
			// issued before their products
			vec4 av[CK / (4u * LANES)];
			[[unroll]] for (uint st = 0u; st < CK / (4u * LANES); st++) {
				uint kk = 4u * (lane + LANES * st);
				av[st] = vec4(0.0);
				if (kk < kn) {
					uint o = p.a_off + m * p.sam + (k0 + kk) * p.sak;
					if (p.vec != 0u)
						av[st] = a4[o >> 2];
					else
						for (uint c = 0u; c < 4u && kk + c < kn; c++)
							av[st][c] = a_[o + c * p.sak];
				}
			}
			[[unroll]] for (uint st = 0u; st < CK / (4u * LANES); st++) {
				uint kk = 4u * (lane + LANES * st);
				[[unroll]] for (uint c = 0u; c < 4u; c++)
					if (kk + c < kn) // Bs past kn holds no value of this chunk
						fma_row(acc, av[st][c], kk + c);
			}
		}
	}
	[[unroll]] for (uint j = 0u; j < RV; j++)
		red[t][j] = acc[j];
	barrier();
	// invocation t sums column t % RMAX of row t / RMAX over the lanes, in lane order
	for (uint q = t; q < ROWS * RMAX; q += 256u) {
		uint rr = q / RMAX, r = q % RMAX, mm = gl_WorkGroupID.x * ROWS + rr;
		if (mm >= p.M || r >= p.N)
			continue;
		float s = 0.0;
		for (uint l = 0u; l < LANES; l++)
			s += red[rr * LANES + l][r >> 2][r & 3u];
		if (p.kc > 0u)
			part[p.part_off + (gl_WorkGroupID.y * p.M + mm) * p.N + r] = s;
		else
			store(mm, r, s);
	}
}

#elif defined(ROWM)
void main()
{
	uint t = gl_LocalInvocationID.x;
	uint m = gl_WorkGroupID.x * 256u + t;
	bool live = m < p.M;
	vec4 acc[RV];
	[[unroll]] for (uint j = 0u; j < RV; j++)
		acc[j] = vec4(0.0);
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	for (uint k0 = kb; k0 < ke; k0 += CK) {
		uint kn = min(CK, ke - k0);
		barrier();
		load_b(k0, kn);
		barrier();
		if (live)
			for (uint kb = 0u; kb < kn; kb += 8u) {
				float av[8]; // eight loads in flight before their products
				[[unroll]] for (uint j = 0u; j < 8u; j++) {
					av[j] = 0.0;
					if (kb + j < kn)
						av[j] = a_[p.a_off + m * p.sam + (k0 + kb + j) * p.sak];
				}
				[[unroll]] for (uint j = 0u; j < 8u; j++)
					if (kb + j < kn) // Bs past kn holds no value of this chunk
						fma_row(acc, av[j], kb + j);
			}
	}
	if (!live)
		return;
	[[unroll]] for (uint j = 0u; j < RV; j++)
		[[unroll]] for (uint c = 0u; c < 4u; c++) {
			uint r = 4u * j + c;
			if (r >= p.N)
				continue;
			if (p.kc > 0u)
				part[p.part_off + (gl_WorkGroupID.y * p.M + m) * p.N + r] = acc[j][c];
			else
				store(m, r, acc[j][c]);
		}
}

#elif defined(REDUCE)
void main()
{
	uint total = p.M * p.N;
	for (uint i = gl_GlobalInvocationID.x; i < total; i += gl_NumWorkGroups.x * 256u) {
		float s = 0.0;
		for (uint z = 0u; z < p.splits; z++)
			s += part[p.part_off + z * total + i];
		store(i / p.N, i % p.N, s);
	}
}

#elif defined(TK)
// Invocation t takes rows t / 4 and t / 4 + 64 of the group's 128 and k-lane q = t % 4: in a
// chunk of CK = 128 values of k, vec4 s (0 .. 7) of a row is k = 4 (q + 4 s) .. + 3, so a
// subgroup's loads cover whole 64-byte runs of 8 rows and its four lanes read four consecutive
// vec4 of the transposed B chunk Bt[r][k] (no bank conflicts; the 8 rows' lanes share them as
// broadcasts). Each B vec4 read from shared memory feeds 8 multiply-adds (two rows x four k),
// each x vec4 16 B columns; the 16 x vec4 of a chunk are issued before the chunk's barrier.
#define CK 128u
#define TKR 128u
shared vec4 Bt[RMAX][CK / 4u + 1u]; // Bt[r][kk / 4][kk % 4] = B(k0 + kk, r); padded rows
shared vec4 red[256];

void main()
{
	uint t = gl_LocalInvocationID.x, q = t & 3u, rr = t >> 2;
	uint m0 = gl_WorkGroupID.x * TKR;
	uint mrow[2] = uint[2](m0 + rr, m0 + rr + 64u);
	vec4 acc[2][RV];
	[[unroll]] for (uint i = 0u; i < 2u; i++)
		[[unroll]] for (uint j = 0u; j < RV; j++)
			acc[i][j] = vec4(0.0);
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	for (uint k0 = kb; k0 < ke; k0 += CK) {
		uint kn = min(CK, ke - k0);
		vec4 xv[2][CK / 16u]; // zero past the chunk and past M (Bt is zero there too)
		[[unroll]] for (uint i = 0u; i < 2u; i++)
			[[unroll]] for (uint s = 0u; s < CK / 16u; s++) {
				uint kk = 4u * (q + 4u * s);
				xv[i][s] = vec4(0.0);
				if (mrow[i] < p.M && kk < kn) {
					uint o = p.a_off + mrow[i] * p.sam + (k0 + kk) * p.sak;
					if (p.vec != 0u && kk + 4u <= kn)
						xv[i][s] = a4[o >> 2];
					else
						[[unroll]] for (uint c = 0u; c < 4u; c++) // constant indices: registers
							if (kk + c < kn)
								xv[i][s][c] = a_[o + c * p.sak];
				}
			}
		barrier(); // the previous chunk is no longer read
		for (uint e = t; e < CK * RMAX; e += 256u) {
			uint kk = p.sbk == 1u ? e % CK : e / RMAX, r = p.sbk == 1u ? e / CK : e % RMAX;
			float v = 0.0;
			if (r < p.N && kk < kn)
				v = b_[p.b_off + (k0 + kk) * p.sbk + r * p.sbn];
			Bt[r][kk >> 2][kk & 3u] = v;
		}
		barrier();
		[[unroll]] for (uint s = 0u; s < CK / 16u; s++)
			[[unroll]] for (uint j = 0u; j < RV; j++)
				[[unroll]] for (uint c = 0u; c < 4u; c++) {
					vec4 b = Bt[4u * j + c][q + 4u * s];
					acc[0][j][c] += dot(xv[0][s], b);
					acc[1][j][c] += dot(xv[1][s], b);
				}
	}
	// the four k-lanes of a row added in lane order, one (row half, column quad) at a time
	[[unroll]] for (uint i = 0u; i < 2u; i++)
		[[unroll]] for (uint j = 0u; j < RV; j++) {
			barrier();
			red[t] = acc[i][j];
			barrier();
			uint m = mrow[i];
			if (q == 0u && m < p.M) {
				vec4 sum = ((red[t] + red[t + 1u]) + red[t + 2u]) + red[t + 3u];
				[[unroll]] for (uint c = 0u; c < 4u; c++)
					if (4u * j + c < p.N)
						put(m, 4u * j + c, sum[c]);
			}
		}
}

#elif defined(TKP)
// TK's successor for the same products (1.6-2.0x TK's speed on an H100, docs/PERFORMANCE.md
// 2026-12-06 14:33). Invocation t is k-lane q = t % 8 of row slot s = t / 8 and takes the TNR rows
// m0 + s + 32 i of the group's RB = 32 TNR. A chunk of CK = 32 TS values of k is TS steps: in
// step j the lane multiplies x(m, k .. k + 3), k = k0 + 4 (q + 8 j), of each of its rows (one
// vec4 when p.vec), so a subgroup's load is 4 rows x 128 contiguous bytes. The next chunk's
// TS x TNR vec4 are loaded while this one is multiplied (step j's registers are refilled as soon
// as step j has used them), so 16 TS TNR bytes per invocation are in flight when the loop waits
// for them, 256 times that per group; rows past M load row M - 1 (valid addresses, results
// never stored), so a whole vec4 chunk has no guard. B's chunk sits in shared memory transposed,
// Bt[r][kk], its next chunk loaded into registers during the multiplication; a subgroup's read of
// Bt is 8 consecutive vec4 (no bank conflicts) and each feeds 4 TNR multiply-adds (its 4 k, the
// lane's TNR rows); columns from N on are skipped a vec4 at a time. The 8 k-lanes of a (row,
// column) are added in lane order through shared memory. With p.kc > 0 group (x, z) sums k in
// [z kc, z kc + kc) and writes part[z][m][n]; every group of row block x then adds 1 to cnt[x]
// (a uint atomic), and the one that brings it to p.splits, the last to finish whichever it is,
// adds part[0 .. splits - 1][m][n] in the order of z into C and sets cnt[x] back to 0 for the
// next dispatch (vk_ops.c orders dispatches that bind the counters one after another). No REDUCE
// pass; every sum in a fixed order, whatever the timing; no float atomics.
#ifndef TNR
#define TNR 4u
#endif
#ifndef TS
#define TS 4u
#endif
#define KL 8u                 // k-lanes of a row
#define SLOTS 32u             // 256 / KL row slots
#define RB (TNR * SLOTS)      // rows per group
#define CK (4u * KL * TS)     // k per chunk
#define BTS (CK / 4u + 1u)    // vec4 per row of Bt, one of padding
#define BE (CK * RMAX / 256u) // values of B's chunk an invocation loads
#define RED (16u * 288u / 4u) // vec4 of one pass's lane sums: 16 columns x 32 slots x 9 floats
#define SHV (RMAX * BTS > RED ? RMAX * BTS : RED)
#define LA_ROWS RB            // rows of a row block (last_adds)
shared vec4 sh[SHV];          // Bt[r][kk / 4][kk % 4] = B(k0 + kk, r) at sh[r BTS + kk / 4]

// A(m, k .. k + 3) from the row's start xb = a_off + m sam (A's k is contiguous: TK's shapes
// have sak = 1), zero from ke on
vec4 ldx(uint xb, uint k, uint ke)
{
	if (p.vec != 0u && k + 4u <= ke)
		return a4[(xb + k) >> 2];
	vec4 v = vec4(0.0);
	[[unroll]] for (uint c = 0u; c < 4u; c++) // constant indices: registers
		if (k + c < ke)
			v[c] = a_[xb + k + c];
	return v;
}

void main()
{
	uint t = gl_LocalInvocationID.x, q = t % KL, sl = t / KL;
	uint m0 = gl_WorkGroupID.x * RB;
	uint xb[TNR]; // the rows' starts in A, rows past M at M - 1
	vec4 acc[TNR][RV];
	[[unroll]] for (uint i = 0u; i < TNR; i++) {
		xb[i] = p.a_off + min(m0 + sl + SLOTS * i, p.M - 1u) * p.sam;
		[[unroll]] for (uint j = 0u; j < RV; j++)
			acc[i][j] = vec4(0.0);
	}
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	uint nch = (ke - kb + CK - 1u) / CK;
	// element e = t + 256 u of B's chunk is (kk, r) along B's contiguous dimension
	float bv[BE]; // the next chunk of B, zero past N and ke
	[[unroll]] for (uint u = 0u; u < BE; u++) {
		uint e = t + 256u * u;
		uint kk = p.sbk == 1u ? e % CK : e / RMAX, r = p.sbk == 1u ? e / CK : e % RMAX;
		bv[u] = 0.0;
		if (r < p.N && kb + kk < ke)
			bv[u] = b_[p.b_off + (kb + kk) * p.sbk + r * p.sbn];
	}
	vec4 xs[TS][TNR]; // xs[j][i]: step j of row i, this chunk's until step j is used, then the next's
	[[unroll]] for (uint j = 0u; j < TS; j++)
		[[unroll]] for (uint i = 0u; i < TNR; i++)
			xs[j][i] = ldx(xb[i], kb + 4u * (q + KL * j), ke);
	for (uint c = 0u; c < nch; c++) {
		uint kn = kb + (c + 1u) * CK; // the next chunk
		barrier();                    // the previous chunk's Bt is read
		[[unroll]] for (uint u = 0u; u < BE; u++) {
			uint e = t + 256u * u;
			uint kk = p.sbk == 1u ? e % CK : e / RMAX, r = p.sbk == 1u ? e / CK : e % RMAX;
			sh[r * BTS + (kk >> 2)][kk & 3u] = bv[u];
		}
		barrier();
		bool more = c + 1u < nch, whole = p.vec != 0u && kn + CK <= ke;
		if (more)
			[[unroll]] for (uint u = 0u; u < BE; u++) {
				uint e = t + 256u * u;
				uint kk = p.sbk == 1u ? e % CK : e / RMAX, r = p.sbk == 1u ? e / CK : e % RMAX;
				bv[u] = 0.0;
				if (r < p.N && kn + kk < ke)
					bv[u] = b_[p.b_off + (kn + kk) * p.sbk + r * p.sbn];
			}
		[[unroll]] for (uint j = 0u; j < TS; j++) {
			[[unroll]] for (uint jv = 0u; jv < RV; jv++)
				if (4u * jv < p.N)
					[[unroll]] for (uint cc = 0u; cc < 4u; cc++) {
						vec4 b = sh[(4u * jv + cc) * BTS + q + KL * j];
						[[unroll]] for (uint i = 0u; i < TNR; i++) {
							float a = acc[i][jv][cc];
							a = fma(xs[j][i].x, b.x, a);
							a = fma(xs[j][i].y, b.y, a);
							a = fma(xs[j][i].z, b.z, a);
							a = fma(xs[j][i].w, b.w, a);
							acc[i][jv][cc] = a;
						}
					}
			if (more) {
				uint k = kn + 4u * (q + KL * j);
				if (whole)
					[[unroll]] for (uint i = 0u; i < TNR; i++)
						xs[j][i] = a4[(xb[i] + k) >> 2];
				else
					[[unroll]] for (uint i = 0u; i < TNR; i++)
						xs[j][i] = ldx(xb[i], k, ke);
			}
		}
	}
	// the 8 k-lanes of each (row, column) in lane order, 16 columns of one row i a pass; lane q of
	// slot s puts column c's sum at float c 288 + 9 s + q (no bank conflicts either way)
	[[unroll]] for (uint i = 0u; i < TNR; i++)
		[[unroll]] for (uint jb = 0u; jb < RV; jb += 4u) {
			barrier(); // Bt, or the previous pass, is read
			[[unroll]] for (uint jj = 0u; jj < 4u; jj++)
				[[unroll]] for (uint cc = 0u; cc < 4u; cc++) {
					uint f = (4u * jj + cc) * 288u + 9u * sl + q;
					sh[f >> 2][f & 3u] = acc[i][jb + jj][cc];
				}
			barrier();
			[[unroll]] for (uint h = 0u; h < 2u; h++) { // 32 slots x 16 columns
				uint o = t + 256u * h, s = o & 31u, col = o >> 5;
				uint m = m0 + s + SLOTS * i, n = 4u * jb + col;
				float sum = 0.0;
				[[unroll]] for (uint l = 0u; l < KL; l++) {
					uint f = col * 288u + 9u * s + l;
					sum += sh[f >> 2][f & 3u];
				}
				if (m < p.M && n < p.N)
					put(m, n, sum);
			}
		}
	if (p.kc > 0u)
		last_adds(m0);
}

#elif defined(TM)
// Invocation t takes the 4 consecutive rows m0 + 4 (t % 64) .. + 3 (one vec4 of A's contiguous m)
// and k-lane q = t / 64: in a chunk of CK = 64 values of k it takes k = q + 4 s, s = 0 .. 15, so a
// subgroup loads 32 x 16 consecutive bytes of one row of A and reads the same B row from shared
// memory (a broadcast). Each B vec4 from shared memory feeds 16 multiply-adds (four rows), each
// A vec4 4 RV; the 16 loads of a chunk are issued before its barrier. With -DLAST a split's
// partials are added by the last group of each row block, as TKP's (no REDUCE pass).
#define CK 64u
#define LA_ROWS 256u
shared vec4 Bs[CK][RV]; // Bs[kk][j][c] = B(k0 + kk, 4 j + c), zero past the chunk or N
shared vec4 red[256][4];

void main()
{
	uint t = gl_LocalInvocationID.x, mq = t & 63u, q = t >> 6;
	uint m0 = gl_WorkGroupID.x * 256u, m = m0 + 4u * mq;
	vec4 acc[4][RV]; // acc[i][j][c]: row m + i, column 4 j + c
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint j = 0u; j < RV; j++)
			acc[i][j] = vec4(0.0);
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	for (uint k0 = kb; k0 < ke; k0 += CK) {
		uint kn = min(CK, ke - k0);
		vec4 av[CK / 4u]; // av[s][i] = A(m + i, k0 + q + 4 s), zero past the chunk and M
		[[unroll]] for (uint s = 0u; s < CK / 4u; s++) {
			uint kk = q + 4u * s;
			av[s] = vec4(0.0);
			if (kk < kn && m < p.M) {
				uint o = p.a_off + m * p.sam + (k0 + kk) * p.sak;
				if (p.vec != 0u)
					av[s] = a4[o >> 2];
				else
					[[unroll]] for (uint i = 0u; i < 4u; i++) // constant indices: registers
						if (m + i < p.M)
							av[s][i] = a_[o + i * p.sam];
			}
		}
		barrier(); // the previous chunk is no longer read
		for (uint e = t; e < CK * RMAX; e += 256u) {
			uint kk = p.sbk == 1u ? e % CK : e / RMAX, r = p.sbk == 1u ? e / CK : e % RMAX;
			float v = 0.0;
			if (r < p.N && kk < kn)
				v = b_[p.b_off + (k0 + kk) * p.sbk + r * p.sbn];
			Bs[kk][r >> 2][r & 3u] = v;
		}
		barrier();
		[[unroll]] for (uint s = 0u; s < CK / 4u; s++)
			[[unroll]] for (uint j = 0u; j < RV; j++) {
				vec4 b = Bs[q + 4u * s][j];
				[[unroll]] for (uint i = 0u; i < 4u; i++)
					acc[i][j] += av[s][i] * b;
			}
	}
	// the four k-lanes added in lane order: per row i and block of four column quads, every
	// invocation sums one (row quad, column quad) over invocations mq, mq + 64, mq + 128, mq + 192
	uint sq = t & 63u, sj = t >> 6;
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint jb = 0u; jb < RV; jb += 4u) {
			barrier();
			[[unroll]] for (uint jj = 0u; jj < 4u; jj++)
				red[t][jj] = acc[i][jb + jj];
			barrier();
			uint mm = m0 + 4u * sq + i;
			if (mm < p.M) {
				vec4 sum = ((red[sq][sj] + red[sq + 64u][sj]) + red[sq + 128u][sj]) +
					   red[sq + 192u][sj];
				[[unroll]] for (uint c = 0u; c < 4u; c++)
					if (4u * (jb + sj) + c < p.N)
						put(mm, 4u * (jb + sj) + c, sum[c]);
			}
		}
#ifdef LAST
	if (p.kc > 0u)
		last_adds(m0);
#endif
}

#elif defined(WV)
// Invocation t takes the four consecutive columns n0 + 4 (t % 64) .. + 3 (one vec4 of C when
// p.vec) and the rows m0 + t / 64 + 4 i, i = 0 .. 7, of the group's 32 x 256 tile. The group's
// K x 256 block of B goes through shared memory 16 rows of k at a time (one round at rank 16, two
// at 32), loaded with consecutive invocations on B's contiguous dimension (with B stored [N, K],
// y += s u B^T, each invocation's own four columns had been up to 128 scalar loads 4 K bytes
// apart: every load of a subgroup touched 32 lines, 2.6x slower than the same shape with B [K, N]
// on an H100); each invocation then takes its columns from there as one vec4 per k into
// registers. Its 8 old vec4 of C are loaded before the first barrier (with the A tile and the
// first rows of B), so the latencies overlap; a subgroup's A reads are broadcasts, and each C
// vec4 takes 4 K multiply-adds.
#define BMV 32u
#define BNV 256u
#define BKW 16u
shared vec4 Av[BMV][RV]; // Av[mm][j][c] = A(m0 + mm, 4 j + c), zero past M and K
// Bw[kk][nn / 4][nn % 4] = B(k0 + kk, n0 + nn), zero past K and N; rows of 260 floats: two-way
// store conflicts at most, 16-byte aligned vec4 reads
shared vec4 Bw[BKW][BNV / 4u + 1u];

// Rows k0 .. k0 + 15 of the group's block of B into Bw
void load_bw(uint n0, uint k0)
{
	for (uint e = gl_LocalInvocationID.x; e < BNV * BKW; e += 256u) {
		uint nn = p.sbk == 1u ? e / BKW : e % BNV, kk = p.sbk == 1u ? e % BKW : e / BNV;
		float v = 0.0;
		if (n0 + nn < p.N && k0 + kk < p.K)
			v = b_[p.b_off + (k0 + kk) * p.sbk + (n0 + nn) * p.sbn];
		Bw[kk][nn >> 2][nn & 3u] = v;
	}
}

void main()
{
	uint t = gl_LocalInvocationID.x, nq = t & 63u, rl = t >> 6;
	uint n0 = gl_WorkGroupID.x * BNV, m0 = gl_WorkGroupID.y * BMV, n = n0 + 4u * nq;
	load_bw(n0, 0u);
	vec4 cv[BMV / 4u];
	[[unroll]] for (uint i = 0u; i < BMV / 4u; i++) {
		uint m = m0 + rl + 4u * i;
		cv[i] = vec4(0.0);
		if (p.beta != 0.0 && m < p.M) {
			uint o = p.c_off + m * p.scm + n * p.scn;
			if (p.vec != 0u && n < p.N)
				cv[i] = c4[o >> 2];
			else
				[[unroll]] for (uint c = 0u; c < 4u; c++) // constant indices: registers
					if (n + c < p.N)
						cv[i][c] = c_[o + c * p.scn];
		}
	}
	for (uint e = t; e < BMV * RMAX; e += 256u) {
		uint mm = p.sak == 1u ? e / RMAX : e % BMV, k = p.sak == 1u ? e % RMAX : e / BMV;
		float v = 0.0;
		if (m0 + mm < p.M && k < p.K)
			v = a_[p.a_off + (m0 + mm) * p.sam + k * p.sak];
		Av[mm][k >> 2][k & 3u] = v;
	}
	vec4 b[RMAX]; // b[k][c] = B(k, n + c), zero past K and N
	[[unroll]] for (uint h = 0u; h < RMAX / BKW; h++) {
		if (h > 0u) {
			barrier(); // the previous rows are read
			load_bw(n0, h * BKW);
		}
		barrier();
		[[unroll]] for (uint kk = 0u; kk < BKW; kk++)
			b[h * BKW + kk] = Bw[kk][nq];
	}
	if (n >= p.N)
		return;
	[[unroll]] for (uint i = 0u; i < BMV / 4u; i++) {
		uint m = m0 + rl + 4u * i;
		if (m >= p.M)
			break;
		vec4 acc = vec4(0.0);
		[[unroll]] for (uint j = 0u; j < RV; j++) {
			vec4 a = Av[rl + 4u * i][j];
			acc += a.x * b[4u * j];
			acc += a.y * b[4u * j + 1u];
			acc += a.z * b[4u * j + 2u];
			acc += a.w * b[4u * j + 3u];
		}
		vec4 r = p.alpha * acc + p.beta * cv[i];
		uint o = p.c_off + m * p.scm + n * p.scn;
		if (p.vec != 0u)
			c4[o >> 2] = r;
		else
			[[unroll]] for (uint c = 0u; c < 4u; c++) // constant indices: registers
				if (n + c < p.N)
					c_[o + c * p.scn] = r[c];
	}
}

#else // WIDE
#define BMW 64u
#define BNW 128u
shared vec4 As[BMW][RV];
shared vec4 Bt[BNW][RV];

void main()
{
	uint t = gl_LocalInvocationID.x;
	uint n0 = gl_WorkGroupID.x * BNW, m0 = gl_WorkGroupID.y * BMW;
	for (uint e = t; e < BMW * RMAX; e += 256u) {
		uint mm = p.sak == 1u ? e / RMAX : e % BMW, k = p.sak == 1u ? e % RMAX : e / BMW;
		float v = 0.0;
		if (m0 + mm < p.M && k < p.K)
			v = a_[p.a_off + (m0 + mm) * p.sam + k * p.sak];
		As[mm][k >> 2][k & 3u] = v;
	}
	for (uint e = t; e < BNW * RMAX; e += 256u) {
		uint nn = p.sbk == 1u ? e / RMAX : e % BNW, k = p.sbk == 1u ? e % RMAX : e / BNW;
		float v = 0.0;
		if (n0 + nn < p.N && k < p.K)
			v = b_[p.b_off + k * p.sbk + (n0 + nn) * p.sbn];
		Bt[nn][k >> 2][k & 3u] = v;
	}
	barrier();
	uint nn = t % BNW, n = n0 + nn, mb = (t / BNW) * 32u;
	if (n >= p.N)
		return;
	vec4 b[RV];
	[[unroll]] for (uint j = 0u; j < RV; j++)
		b[j] = Bt[nn][j];
	// the 32 old values of C first (independent loads in flight), then the new ones
	float cv[32];
	[[unroll]] for (uint mm = 0u; mm < 32u; mm++) {
		cv[mm] = 0.0;
		if (p.beta != 0.0 && m0 + mb + mm < p.M)
			cv[mm] = c_[p.c_off + (m0 + mb + mm) * p.scm + n * p.scn];
	}
	[[unroll]] for (uint mm = 0u; mm < 32u; mm++) {
		if (m0 + mb + mm >= p.M)
			break;
		float s = 0.0;
		[[unroll]] for (uint j = 0u; j < RV; j++)
			s += dot(As[mb + mm][j], b[j]);
		c_[p.c_off + (m0 + mb + mm) * p.scm + n * p.scn] = p.alpha * s + p.beta * cv[mm];
	}
}
#endif

#if defined(TKP) || defined(LAST)
shared uint last_;
#define UO (LA_ROWS * RMAX / 256u) // outputs per invocation of the last group

// With a split (p.kc > 0), after this group's partials of rows m0 .. m0 + LA_ROWS are written:
// every group of the row block adds 1 to cnt[x] (a uint atomic), and the one that brings it to
// p.splits, the last to finish whichever it is, adds part[0 .. splits - 1][m][n] in the order of z
// into C and sets cnt[x] back to 0 for the next dispatch (vk_ops.c orders dispatches that bind the
// counters one after another). Every sum in a fixed order, whatever the timing.
void last_adds(uint m0)
{
	uint t = gl_LocalInvocationID.x;
	// this group's partials are written: count it in; the group that completes the row block
	// adds all of them
	memoryBarrierBuffer();
	barrier();
	if (t == 0u) {
		memoryBarrierBuffer();
		last_ = atomicAdd(cnt[gl_WorkGroupID.x], 1u) + 1u == p.splits ? 1u : 0u;
	}
	barrier();
	if (last_ == 0u)
		return;
	memoryBarrierBuffer();
	float s[UO];
	[[unroll]] for (uint u = 0u; u < UO; u++)
		s[u] = 0.0;
	for (uint z0 = 0u; z0 < p.splits; z0 += 4u) {
		float v[4][UO]; // four splits' loads in flight before their sums
		[[unroll]] for (uint zz = 0u; zz < 4u; zz++)
			[[unroll]] for (uint u = 0u; u < UO; u++) {
				uint o = t + 256u * u, m = m0 + o / RMAX, n = o % RMAX;
				v[zz][u] = 0.0;
				if (z0 + zz < p.splits && m < p.M && n < p.N)
					v[zz][u] = part[p.part_off + ((z0 + zz) * p.M + m) * p.N + n];
			}
		[[unroll]] for (uint zz = 0u; zz < 4u; zz++)
			[[unroll]] for (uint u = 0u; u < UO; u++)
				if (z0 + zz < p.splits)
					s[u] += v[zz][u];
	}
	[[unroll]] for (uint u = 0u; u < UO; u++) {
		uint o = t + 256u * u, m = m0 + o / RMAX, n = o % RMAX;
		if (m < p.M && n < p.N)
			store(m, n, s[u]);
	}
	if (t == 0u)
		atomicExchange(cnt[gl_WorkGroupID.x], 0u);
}
#endif
