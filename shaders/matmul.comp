#version 450
// Dequant-matmul, tiled. Forward (default): y[t, r0+n] = sum_k x[t, k] * W[r0+n, k]
//   over the bound chunk of W rows [r0, r0+N), K = I.
// Backward (-DBWD): dx[t, n] (=|+=) sum_k dy[t, r0+k] * W[r0+k, n] over the chunk, N = I.
// Bindings: 0 = output (f32), 1 = input (f32), 2..5 = the weight (common/weights.glsl).
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 16, local_size_y = 16) in;

layout(push_constant) uniform Push {
	uint T, N, K;         // this dispatch: T rows, N output columns, K reduction length
	uint y_off, ldy;      // output words offset, row length
	uint x_off, ldx;      // input words offset, row length
	uint xk0;             // BWD: the input column of k = 0 (the chunk's first W row)
	uint r0, I, pos;      // weight chunk: first row, row length, element position in binding
	uint absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint accumulate;      // BWD: 1 = add onto the output
} p;

#define wp_r0 p.r0
#define wp_I p.I
#define wp_pos p.pos
#define wp_absmax_off p.absmax_off
#define wp_nested_off p.nested_off
#define wp_dmap_off p.dmap_off
#define wp_blocksize p.blocksize
#define wp_offset p.offset
#define wp_scale p.scale
#include "common/weights.glsl"

layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer In { float x[]; };

#define BM 32
#define BN 32
#define BK 16

shared float xs[BK][BM + 1];
shared float ws[BK][BN + 1];

void main()
{
	uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
	uint lid = ty * 16u + tx;
	uint m0 = gl_WorkGroupID.y * BM, n0 = gl_WorkGroupID.x * BN;
	float acc[2][2] = float[2][2](float[2](0.0, 0.0), float[2](0.0, 0.0));

	for (uint k0 = 0u; k0 < p.K; k0 += BK) {
		// 512 elements of each tile, two per thread
		for (uint e = lid; e < BM * BK; e += 256u) {
			uint kk = e % BK, mm = e / BK;
			uint m = m0 + mm, k = k0 + kk;
			xs[kk][mm] = (m < p.T && k < p.K) ? x[p.x_off + m * p.ldx + p.xk0 + k] : 0.0;
			uint n = n0 + mm;
			float w = 0.0;
			if (n < p.N && k < p.K) {
#ifdef BWD
				w = w_value(p.r0 + k, n);
#else
				w = w_value(p.r0 + n, k);
#endif
			}
			ws[kk][mm] = w;
		}
		barrier();
		for (uint kk = 0u; kk < BK; kk++) {
			float a0 = xs[kk][ty], a1 = xs[kk][ty + 16u];
			float b0 = ws[kk][tx], b1 = ws[kk][tx + 16u];
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
			if (m >= p.T || n >= p.N)
				continue;
#ifdef BWD
			uint idx = p.y_off + m * p.ldy + n;
			y[idx] = p.accumulate != 0u ? y[idx] + acc[i][j] : acc[i][j];
#else
			y[p.y_off + m * p.ldy + p.r0 + n] = acc[i][j];
#endif
		}
	}
}
