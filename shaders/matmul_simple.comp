#version 450
// Dequant-matmul without shared memory or barriers, for CPU-type Vulkan devices (llvmpipe runs a
// workgroup with barriers as coroutines over its invocations, but vectorises straight-line code
// across 8 invocations). Same contract and push block as matmul.comp:
// Forward (default): y[t, r0+n] = sum_k x[t, k] * W[r0+n, k] over the bound chunk, K = I.
// Backward (-DBWD): dx[t, n] (=|+=) sum_k dy[t, r0+k] * W[r0+k, n] over the chunk, N = I.
// Invocations of a workgroup take TM consecutive tokens each (WG * TM tokens per group); every
// invocation of the group shares the same TN output features (gl_WorkGroupID.x), so the weight
// loads and their dequantisation are uniform across the group and each weight feeds TM
// multiply-adds, each input value TN. (llvmpipe runs every storage-buffer load as a loop over the
// invocations of a SIMD vector, so loads per multiply-add are what count.) Out-of-range tokens and features are clamped, not branched on, so control flow
// stays uniform until the stores.
#extension GL_GOOGLE_include_directive : require

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
	uint T, N, K;
	uint y_off, ldy;
	uint x_off, ldx;
	uint xk0;
	uint r0, I, pos;
	uint absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint accumulate;
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

void main()
{
	uint t0 = (gl_WorkGroupID.y * WG + gl_LocalInvocationID.x) * TM;
	uint n0 = gl_WorkGroupID.x * TN;
	uint xb[TM];
	for (uint i = 0u; i < TM; i++)
		xb[i] = p.x_off + min(t0 + i, p.T - 1u) * p.ldx + p.xk0;
	uint wn[TN];
	for (uint j = 0u; j < TN; j++)
		wn[j] = min(n0 + j, p.N - 1u);
	float acc[TM][TN];
	for (uint i = 0u; i < TM; i++)
		for (uint j = 0u; j < TN; j++)
			acc[i][j] = 0.0;
	for (uint k = 0u; k < p.K; k++) {
		float w[TN];
		for (uint j = 0u; j < TN; j++) {
#ifdef BWD
			w[j] = w_value(p.r0 + k, wn[j]);
#else
			w[j] = w_value(p.r0 + wn[j], k);
#endif
		}
		for (uint i = 0u; i < TM; i++) {
			float a = x[xb[i] + k];
			for (uint j = 0u; j < TN; j++)
				acc[i][j] += a * w[j];
		}
	}
	for (uint i = 0u; i < TM; i++) {
		uint t = t0 + i;
		if (t >= p.T)
			break;
		for (uint j = 0u; j < TN; j++) {
			uint n = n0 + j;
			if (n >= p.N)
				break;
#ifdef BWD
			uint idx = p.y_off + t * p.ldy + n;
			y[idx] = p.accumulate != 0u ? y[idx] + acc[i][j] : acc[i][j];
#else
			y[p.y_off + t * p.ldy + p.r0 + n] = acc[i][j];
#endif
		}
	}
}
