#version 450
// C[m, n] = alpha * sum_k A(m, k) * B(k, n) + beta * C[m, n]   (beta == 0: C is not read)
// A(m, k) = a[a_off + m*sam + k*sak], B(k, n) = b[b_off + k*sbk + n*sbn]; fp32.
// Bindings: 0 = C, 1 = A, 2 = B.
layout(local_size_x = 16, local_size_y = 16) in;

layout(push_constant) uniform Push {
	uint M, N, K;
	uint c_off, ldc;
	uint a_off, sam, sak;
	uint b_off, sbk, sbn;
	float alpha, beta;
} p;

layout(binding = 0) buffer C { float c[]; };
layout(binding = 1) readonly buffer A { float a[]; };
layout(binding = 2) readonly buffer B { float b[]; };

#define BM 32
#define BN 32
#define BK 16

shared float as_[BK][BM + 1];
shared float bs_[BK][BN + 1];

void main()
{
	uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
	uint lid = ty * 16u + tx;
	uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
	float acc[2][2] = float[2][2](float[2](0.0, 0.0), float[2](0.0, 0.0));

	for (uint k0 = 0u; k0 < p.K; k0 += BK) {
		for (uint e = lid; e < BM * BK; e += 256u) {
			uint kk = e % BK, mm = e / BK;
			uint k = k0 + kk, m = m0 + mm, n = n0 + mm;
			as_[kk][mm] = (m < p.M && k < p.K) ? a[p.a_off + m * p.sam + k * p.sak] : 0.0;
			bs_[kk][mm] = (n < p.N && k < p.K) ? b[p.b_off + k * p.sbk + n * p.sbn] : 0.0;
		}
		barrier();
		for (uint kk = 0u; kk < BK; kk++) {
			float a0 = as_[kk][ty], a1 = as_[kk][ty + 16u];
			float b0 = bs_[kk][tx], b1 = bs_[kk][tx + 16u];
			acc[0][0] += a0 * b0;
			acc[0][1] += a0 * b1;
			acc[1][0] += a1 * b0;
			acc[1][1] += a1 * b1;
		}
		barrier();
	}
	for (uint i = 0u; i < 2u; i++) {
		for (uint j = 0u; j < 2u; j++) {
			uint m = m0 + ty + 16u * i, n = n0 + tx + 16u * j;
			if (m >= p.M || n >= p.N)
				continue;
			uint idx = p.c_off + m * p.ldc + n;
			float r = p.alpha * acc[i][j];
			c[idx] = p.beta != 0.0 ? r + p.beta * c[idx] : r;
		}
	}
}
