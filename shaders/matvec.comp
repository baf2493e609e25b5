#version 450
// The dequant-matmul for a few tokens (decoding): y[t, r0+n] = sum_k x[t, k] W[r0+n, k] for
// t < T <= TMAX over the bound chunk of W rows [r0, r0+N), K = I. A workgroup of 64 invocations
// takes NR consecutive features; its invocations split the reduction 8 elements at a time (one
// NF4 word, 16 bytes of f16/bf16, 32 of f32), invocation i on pieces i, i+64, ..., so a GPU's
// loads of a row coalesce and every weight is read once; a shared-memory tree adds the 64 partial
// sums in a fixed order. The conditions of matmul_vec.comp hold (the host checks: 16-byte
// aligned rows of x, I and K multiples of 8, an NF4 block size a multiple of 8).
// p.f16 = 1 is backend.h's precision F16: x times s (from the max bits in binding 6) rounded to
// f16, W's values rounded to f16, the fp32 sum times 1/s.
// Bindings: 0 = y (f32), 1 = x (f32), 2..5 = the weight (common/weights.glsl), 6 = max bits.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#include "common/scale.glsl"

#define WG 64
#define NR 4
#define TMAX 4

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
	uint f16, xmax_off;
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
layout(binding = 6) readonly buffer XMax { uint xmax[]; };

#if defined(W_F16) || defined(W_BF16)
#include "common/half.glsl"
#endif

shared float red[WG][NR * TMAX];

// W's elements l .. l+7 of the binding (l a multiple of 8), as matmul_vec.comp reads them
void w8(uint l, out float v[8])
{
#if defined(W_NF4) || defined(W_NF4_DQ)
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

// v rounded to f16 (only where p.f16 = 1). The XOR with p.f16 - 1 (0 then, but not known to the
// compiler) is meant to keep the round trip from being folded away: with a plain unpack(pack(v))
// the H100's Vulkan driver missed the f16-rounding oracle by 5.4e-5 to 8.5e-5 (tolerance 5e-5;
// test_ops prec, T = 1, 2026-12-06), about what unrounded operands would give. The cause is
// inferred, and this remedy not yet run on a GPU.
vec4 round16(vec4 v)
{
	uint z = p.f16 - 1u;
	return vec4(unpackHalf2x16(packHalf2x16(v.xy) ^ z), unpackHalf2x16(packHalf2x16(v.zw) ^ z));
}

void main()
{
	uint lid = gl_LocalInvocationID.x;
	uint n0 = (gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x) * NR;
	if (n0 >= p.N) // the whole workgroup: past the last feature
		return;
	bool h = p.f16 != 0u;
	float s = h ? tern_pow2_scale(xmax[p.xmax_off], 14) : 1.0;
	uint xb[TMAX]; // in vec4 units
	uint wb[NR];
	float acc[NR][TMAX];
	[[unroll]] for (uint i = 0u; i < TMAX; i++)
		xb[i] = (p.x_off + min(i, p.T - 1u) * p.ldx) >> 2;
	[[unroll]] for (uint j = 0u; j < NR; j++) {
		wb[j] = min(n0 + j, p.N - 1u) * p.I + p.pos;
		[[unroll]] for (uint i = 0u; i < TMAX; i++)
			acc[j][i] = 0.0;
	}
	for (uint k = lid * 8u; k < p.K; k += WG * 8u) {
		vec4 a0[TMAX], a1[TMAX];
		[[unroll]] for (uint i = 0u; i < TMAX; i++) {
			if (i >= p.T)
				break;
			a0[i] = x4[xb[i] + (k >> 2)];
			a1[i] = x4[xb[i] + (k >> 2) + 1u];
			if (h) {
				a0[i] = round16(a0[i] * s);
				a1[i] = round16(a1[i] * s);
			}
		}
		[[unroll]] for (uint j = 0u; j < NR; j++) {
			float w[8];
			w8(wb[j] + k, w);
			vec4 w0 = vec4(w[0], w[1], w[2], w[3]), w1 = vec4(w[4], w[5], w[6], w[7]);
			if (h) {
				w0 = round16(w0);
				w1 = round16(w1);
			}
			[[unroll]] for (uint i = 0u; i < TMAX; i++)
				if (i < p.T) // uniform: the tokens past T cost nothing
					acc[j][i] += dot(a0[i], w0) + dot(a1[i], w1);
		}
	}
	[[unroll]] for (uint j = 0u; j < NR; j++)
		[[unroll]] for (uint i = 0u; i < TMAX; i++)
			red[lid][j * TMAX + i] = acc[j][i];
	barrier();
	for (uint half_ = WG / 2u; half_ > 0u; half_ >>= 1) {
		if (lid < half_)
			[[unroll]] for (uint c = 0u; c < NR * TMAX; c++)
				red[lid][c] += red[lid + half_][c];
		barrier();
	}
	if (lid < NR * TMAX) {
		uint j = lid / TMAX, i = lid % TMAX, n = n0 + j;
		if (n < p.N && i < p.T)
			y[p.y_off + i * p.ldy + p.r0 + n] = h ? red[0][lid] / s : red[0][lid];
	}
}
