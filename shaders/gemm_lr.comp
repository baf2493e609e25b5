#version 450
// fp32 GEMM for the shapes of a LoRA linear, where one of M, N, K is the rank (at most RMAX):
//   C(m, n) = alpha * sum_k A(m, k) B(k, n) + beta * C(m, n)      (beta = 0: C is not read)
// with every operand addressed through strides (A(m, k) at a_off + m sam + k sak, likewise B and
// C), so transposes are free. Three variants; each reads its large operand once, coalesced:
//   -DROWK  N <= RMAX, A's k contiguous (u = x A^T, du = dy B): 8 rows per group, 32 lanes per
//           row striding over k; B in shared chunks; the 32 partial sums of each output added
//           in a fixed order through shared memory.
//   -DROWM  N <= RMAX, A's m contiguous (dB = dy^T u, dA^T = x^T du): one row per invocation,
//           256 consecutive rows per group, B chunks in shared memory read as broadcasts; with
//           p.kc > 0 group (x, z) sums only k in [z kc, z kc + kc) and writes the raw sums to
//           part[z][m][n] (binding 3), which -DREDUCE adds in the order of z into C.
//   -DWIDE  K <= RMAX (y += u B^T, dx += du A): a group takes 64 rows x 128 columns, A's rows
//           and B's columns staged in shared memory, one column of 32 rows per invocation.
// Bindings: 0 = C, 1 = A, 2 = B (f32). Deterministic: no atomics.
#extension GL_EXT_control_flow_attributes : enable

#define RMAX 32u
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint M, N, K;
	uint c_off, scm, scn;
	uint a_off, sam, sak;
	uint b_off, sbk, sbn;
	float alpha, beta;
	uint kc, part_off, splits; // ROWM split over k, REDUCE
} p;

layout(binding = 0) buffer Cb { float c_[]; };
layout(binding = 1) readonly buffer Ab { float a_[]; };
layout(binding = 2) readonly buffer Bb { float b_[]; };
layout(binding = 3) buffer Pb { float part[]; };

// B(k0 + kk, r) for kk < kn, r < N into Bs[kk][r], walking the addresses in order: k fastest
// when B's k is contiguous (sbk == 1), else r.
#define LOAD_B_CHUNK(Bs, k0, kn)                                                                   \
	for (uint e = gl_LocalInvocationID.x; e < (kn) * p.N; e += 256u) {                         \
		uint kk = p.sbk == 1u ? e % (kn) : e / p.N, r = p.sbk == 1u ? e / (kn) : e % p.N;  \
		Bs[kk][r] = b_[p.b_off + ((k0) + kk) * p.sbk + r * p.sbn];                         \
	}

void store(uint m, uint n, float v)
{
	uint o = p.c_off + m * p.scm + n * p.scn;
	c_[o] = p.beta == 0.0 ? p.alpha * v : p.alpha * v + p.beta * c_[o];
}

#if defined(ROWK)
#define CK 128u
shared float Bs[CK][RMAX + 1u];
shared float red[256];

void main()
{
	uint t = gl_LocalInvocationID.x, row = t / 32u, lane = t % 32u;
	uint m = gl_WorkGroupID.x * 8u + row;
	bool live = m < p.M;
	float acc[RMAX];
	[[unroll]] for (uint r = 0u; r < RMAX; r++)
		acc[r] = 0.0;
	for (uint k0 = 0u; k0 < p.K; k0 += CK) {
		uint kn = min(CK, p.K - k0);
		barrier(); // the previous chunk is no longer read
		LOAD_B_CHUNK(Bs, k0, kn)
		barrier();
		if (live)
			for (uint kk = lane; kk < kn; kk += 32u) {
				float a = a_[p.a_off + m * p.sam + (k0 + kk) * p.sak];
				[[unroll]] for (uint r = 0u; r < RMAX; r++)
					if (r < p.N)
						acc[r] += a * Bs[kk][r];
			}
	}
	// sum the 32 lanes of each row, column by column, in a fixed order (unrolled: acc stays in
	// registers, which a loop with a run-time index would send to local memory)
	[[unroll]] for (uint r = 0u; r < RMAX; r++) {
		if (r >= p.N)
			break;
		barrier();
		red[t] = acc[r];
		barrier();
		if (lane == 0u && live) {
			float s = 0.0;
			for (uint l = 0u; l < 32u; l++)
				s += red[row * 32u + l];
			store(m, r, s);
		}
	}
}

#elif defined(ROWM)
#define CK 128u
shared float Bs[CK][RMAX];

void main()
{
	uint t = gl_LocalInvocationID.x;
	uint m = gl_WorkGroupID.x * 256u + t;
	bool live = m < p.M;
	float acc[RMAX];
	[[unroll]] for (uint r = 0u; r < RMAX; r++)
		acc[r] = 0.0;
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.y * p.kc;
		ke = min(p.K, kb + p.kc);
	}
	for (uint k0 = kb; k0 < ke; k0 += CK) {
		uint kn = min(CK, ke - k0);
		barrier();
		LOAD_B_CHUNK(Bs, k0, kn)
		barrier();
		if (live)
			for (uint kk = 0u; kk < kn; kk++) {
				float a = a_[p.a_off + m * p.sam + (k0 + kk) * p.sak];
				[[unroll]] for (uint r = 0u; r < RMAX; r++)
					if (r < p.N)
						acc[r] += a * Bs[kk][r];
			}
	}
	if (!live)
		return;
	[[unroll]] for (uint r = 0u; r < RMAX; r++) {
		if (r >= p.N)
			break;
		if (p.kc > 0u)
			part[p.part_off + (gl_WorkGroupID.y * p.M + m) * p.N + r] = acc[r];
		else
			store(m, r, acc[r]);
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

#else // WIDE
// 64 rows x 128 columns per group; invocation t takes column t % 128 of rows 32 (t / 128) .. +32,
// its column of B in registers, the rows of A from shared memory (broadcast)
#define BMW 64u
#define BNW 128u
shared float As[BMW][RMAX];
shared float Bs[BNW][RMAX + 1u];

void main()
{
	uint t = gl_LocalInvocationID.x;
	uint n0 = gl_WorkGroupID.x * BNW, m0 = gl_WorkGroupID.y * BMW;
	for (uint e = t; e < BMW * p.K; e += 256u) {
		uint mm = p.sak == 1u ? e / p.K : e % BMW, k = p.sak == 1u ? e % p.K : e / BMW;
		As[mm][k] = m0 + mm < p.M ? a_[p.a_off + (m0 + mm) * p.sam + k * p.sak] : 0.0;
	}
	for (uint e = t; e < BNW * p.K; e += 256u) {
		uint nn = p.sbk == 1u ? e / p.K : e % BNW, k = p.sbk == 1u ? e % p.K : e / BNW;
		Bs[nn][k] = n0 + nn < p.N ? b_[p.b_off + k * p.sbk + (n0 + nn) * p.sbn] : 0.0;
	}
	barrier();
	uint nn = t % BNW, n = n0 + nn, mb = (t / BNW) * 32u;
	if (n >= p.N)
		return;
	float b[RMAX];
	[[unroll]] for (uint k = 0u; k < RMAX; k++)
		b[k] = k < p.K ? Bs[nn][k] : 0.0;
	for (uint mm = mb; mm < mb + 32u && m0 + mm < p.M; mm++) {
		float s = 0.0;
		[[unroll]] for (uint k = 0u; k < RMAX; k++)
			s += As[mm][k] * b[k];
		store(m0 + mm, n, s);
	}
}
#endif
