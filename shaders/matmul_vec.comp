#version 450
// matmul_simple.comp with 16-byte loads, for f32/f16/bf16 weights whose rows, the input rows and
// the reduction are multiples of 8 elements and 16-byte aligned, and NF4 / NF4-DQ weights read 8
// codes (one word, one absmax block) at a time (the host checks; otherwise it runs
// matmul_simple). Each load of llvmpipe is a loop over the invocations of a subgroup, so
// loading four floats (or eight halves) at a time cuts most of that cost.
// Forward: each invocation takes TM tokens, the group 8 features, the loop 8 k at a time.
// Backward (-DBWD): the group takes 8 consecutive features n (one 16-byte row piece of W per k),
// the loop 4 k at a time. Same push block as matmul.comp.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable

#ifndef TM
#define TM 8
#endif
#ifndef WG
#define WG 8
#endif
#define TN 8

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

layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer In { vec4 x4[]; };
#if defined(W_NF4) || defined(W_NF4_DQ)
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
#else
layout(binding = 2) readonly buffer WData { uvec4 w4[]; };
#endif

#if defined(W_F16) || defined(W_BF16)
#include "common/half.glsl"
#endif

// W's elements l .. l+7 of the binding (l a multiple of 8)
void w8(uint l, out float v[8])
{
#if defined(W_NF4) || defined(W_NF4_DQ)
	// one word holds the 8 codes (the even element in each byte's high nibble) and, with the
	// block size a multiple of 8, all 8 share one block
	uint word = w_data[l >> 3];
	float am = w_block_absmax((l - p.pos + p.r0 * p.I) / p.blocksize);
	[[unroll]] for (uint i = 0u; i < 4u; i++) {
		uint byte_ = (word >> (8u * i)) & 0xffu;
		v[2u * i] = uintBitsToFloat(NF4_CODE_BITS[byte_ >> 4]) * am;
		v[2u * i + 1u] = uintBitsToFloat(NF4_CODE_BITS[byte_ & 15u]) * am;
	}
#elif defined(W_F32)
	uvec4 a = w4[l >> 2], b = w4[(l >> 2) + 1u];
	v[0] = uintBitsToFloat(a.x), v[1] = uintBitsToFloat(a.y), v[2] = uintBitsToFloat(a.z);
	v[3] = uintBitsToFloat(a.w), v[4] = uintBitsToFloat(b.x), v[5] = uintBitsToFloat(b.y);
	v[6] = uintBitsToFloat(b.z), v[7] = uintBitsToFloat(b.w);
#else
	uvec4 a = w4[l >> 3];
	[[unroll]] for (uint i = 0u; i < 4u; i++) {
#if defined(W_F16)
		v[2u * i] = tern_f16_to_f32(a[i] & 0xffffu);
		v[2u * i + 1u] = tern_f16_to_f32(a[i] >> 16);
#else
		v[2u * i] = tern_bf16_to_f32(a[i] & 0xffffu);
		v[2u * i + 1u] = tern_bf16_to_f32(a[i] >> 16);
#endif
	}
#endif
}

void main()
{
	uint t0 = (gl_WorkGroupID.y * WG + gl_LocalInvocationID.x) * TM;
	uint n0 = gl_WorkGroupID.x * TN;
	uint xb[TM]; // in vec4 units
	for (uint i = 0u; i < TM; i++)
		xb[i] = (p.x_off + min(t0 + i, p.T - 1u) * p.ldx + p.xk0) >> 2;
	float acc[TM][TN];
	for (uint i = 0u; i < TM; i++)
		for (uint j = 0u; j < TN; j++)
			acc[i][j] = 0.0;
#ifdef BWD
	// dx[t, n0+j] += dy[t, r0+k] * W[r0+k, n0+j]; W row k of the chunk at element k*I + pos
	for (uint k = 0u; k < p.K; k += 4u) {
		vec4 a[TM];
		for (uint i = 0u; i < TM; i++)
			a[i] = x4[xb[i] + (k >> 2)];
		for (uint c = 0u; c < 4u; c++) {
			float w[8];
			w8((k + c) * p.I + p.pos + n0, w);
			for (uint i = 0u; i < TM; i++)
				for (uint j = 0u; j < TN; j++)
					acc[i][j] += a[i][c] * w[j];
		}
	}
#else
	// y[t, r0+n0+j] = x[t, k] * W[r0+n0+j, k]; W row n of the chunk at element n*I + pos
	uint wb[TN];
	for (uint j = 0u; j < TN; j++)
		wb[j] = min(n0 + j, p.N - 1u) * p.I + p.pos;
	for (uint k = 0u; k < p.K; k += 8u) {
		vec4 a0[TM], a1[TM];
		for (uint i = 0u; i < TM; i++) {
			a0[i] = x4[xb[i] + (k >> 2)];
			a1[i] = x4[xb[i] + (k >> 2) + 1u];
		}
		for (uint j = 0u; j < TN; j++) {
			float w[8];
			w8(wb[j] + k, w);
			for (uint i = 0u; i < TM; i++) {
				acc[i][j] += a0[i].x * w[0] + a0[i].y * w[1] + a0[i].z * w[2] + a0[i].w * w[3] +
					     a1[i].x * w[4] + a1[i].y * w[5] + a1[i].z * w[6] + a1[i].w * w[7];
			}
		}
	}
#endif
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
