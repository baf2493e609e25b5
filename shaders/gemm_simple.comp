#version 450
// gemm without shared memory or barriers, for CPU-type Vulkan devices (see matmul_simple.comp):
// C(m, n) = alpha * sum_k A(m, k) * B(k, n) + beta * C(m, n)   (beta == 0: C is not read)
// A(m, k) = a[a_off + m*sam + k*sak], B(k, n) = b[b_off + k*sbk + n*sbn],
// C(m, n) = c[c_off + m*scm + n*scn]; fp32. Bindings: 0 = C, 1 = A, 2 = B.
// Each invocation computes TM consecutive rows m for the workgroup's TN columns n, so the loads
// of B are uniform across the group. The host swaps the operands (C^T = B^T A^T) when N > M so
// that the longer dimension runs across invocations.
#ifndef TM
#define TM 8
#endif
#ifndef TN
#define TN 8
#endif

#ifndef WG
#define WG 8
#endif
layout(local_size_x = WG) in;

layout(push_constant) uniform Push {
	uint M, N, K;
	uint c_off, scm, scn;
	uint a_off, sam, sak;
	uint b_off, sbk, sbn;
	float alpha, beta;
} p;

layout(binding = 0) buffer C { float c[]; };
layout(binding = 1) readonly buffer A { float a[]; };
layout(binding = 2) readonly buffer B { float b[]; };

void main()
{
	uint m0 = (gl_WorkGroupID.y * WG + gl_LocalInvocationID.x) * TM;
	uint n0 = gl_WorkGroupID.x * TN;
	uint ab[TM];
	for (uint i = 0u; i < TM; i++)
		ab[i] = p.a_off + min(m0 + i, p.M - 1u) * p.sam;
	uint bb[TN];
	for (uint j = 0u; j < TN; j++)
		bb[j] = p.b_off + min(n0 + j, p.N - 1u) * p.sbn;
	float acc[TM][TN];
	for (uint i = 0u; i < TM; i++)
		for (uint j = 0u; j < TN; j++)
			acc[i][j] = 0.0;
	for (uint k = 0u; k < p.K; k++) {
		float bv[TN];
		for (uint j = 0u; j < TN; j++)
			bv[j] = b[bb[j] + k * p.sbk];
		for (uint i = 0u; i < TM; i++) {
			float av = a[ab[i] + k * p.sak];
			for (uint j = 0u; j < TN; j++)
				acc[i][j] += av * bv[j];
		}
	}
	for (uint i = 0u; i < TM; i++) {
		uint m = m0 + i;
		if (m >= p.M)
			break;
		for (uint j = 0u; j < TN; j++) {
			uint n = n0 + j;
			if (n >= p.N)
				break;
			uint idx = p.c_off + m * p.scm + n * p.scn;
			float r = p.alpha * acc[i][j];
			c[idx] = p.beta != 0.0 ? r + p.beta * c[idx] : r;
		}
	}
}
