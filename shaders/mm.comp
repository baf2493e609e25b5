#version 450
// Dequant-matmul with f16 operands and fp32 accumulation (matmul precision TERN_F16, backend.h):
// Forward (default): y[t, r0+n] = (1/s_t) sum_k xh[t, k] f16(W[r0+n, k]),   K = I.
// Backward (-DBWD):  dx[t, n] (=|+=) (1/s_t) sum_k xh[t, r0+k] f16(W[r0+k, n]),   N = I.
// xh = f16(s_t x) is the input already scaled and rounded by castx.comp, row by row; s_t is the
// power of two that puts the largest |x| of row t in [2^14, 2^15) (row_exp below, from the max
// bits castx.comp left in binding 6), so no finite input overflows or underflows f16.
//
// One workgroup of 256 invocations computes a BM x BN = 128 x 128 tile of the output, walking K
// in steps of BK through one shared-memory stage: every invocation loads the next step's x and W
// pieces from global memory into registers while the tile computes on the current step, then
// (after a barrier) decodes them to f16 into shared memory. Each invocation loads whole runs of
// 16 consecutive elements of one row (16-byte loads; NF4: 8 bytes and one absmax, which needs the
// block size to be a multiple of 16).
//   -DCOOPMAT (GL_NV_cooperative_matrix, 8 subgroups of 32): subgroup g owns the 64 x 32 block
//     (g / 4, g % 4) as 4 x 2 fragments of 16 x 16 fp32 accumulators.
//   otherwise (any device with shaderFloat16): invocation t owns 8 x 8 fp32 accumulators, rows
//     8 (t / 16) .. + 7 by columns 8 (t % 16) .. + 7 backward, columns t % 16 + 16 j (j < 8)
//     forward, fed from the same shared tiles (the fast path without tensor cores). Forward, the
//     columns are rows of the [n][k] W tile: 8 apart, the 16 invocations of a half warp would read
//     rows on the same banks; one apart they meet distinct banks. Forward, the W tile holds the
//     fp32 values of its f16 roundings (the same numbers; Bf below), so the tile step converts only
//     x's halves: 64 conversions fewer per 512 multiply-adds for 8 more 16-byte loads (H100: the
//     NF4-DQ forward 1.055x; the same form backward moved nothing, so the backward keeps f16).
// Split-K (p.kc > 0, gl_WorkGroupID.z = split): the group sums K range [z kc, z kc + kc) and
// writes the raw partial sums to binding 7 as [splits][T][N]; mm_reduce.comp adds them in order.
//
// With p.fast the host has checked what the run loads assume (vk_mm.c, mm_fast_ok): K and the
// W rows (backward) or columns that runs cross are multiples of 16; x_off, ldx, xk0 multiples
// of 8; the weight's rows start on 16-byte (f16/bf16/f32), 8-byte (NF4) or word (ternary)
// boundaries. Otherwise every element is loaded on its own (any shape). Rows of x past T and
// rows (forward) or columns (backward) of W past N load as zeros and are not stored.
// The LoRA term (-DLORA, p.lora_r = R > 0; backend.h matmul_lora / matmul_lora_bwd): the output gets
// lora_scale sum_r lu[t, r] lp(n, r) as R more steps of the reduction, before the main loop: forward
// lu = u [T, R] and lp(n, r) = B[r0 + n, r], backward lu = du and lp(n, r) = A[r, n] (lp_off, lp_cs,
// lp_rs locate it; the host folds r0 and the chunk's first token into the offsets). The group takes
// the largest |lu s_t| over its BM rows and |lp| over its BN columns (all R), rounds both to f16
// scaled by the powers of two that put those in [2^14, 2^15) (as x's s_t), multiplies them on the
// same tiles (16 rank columns a round, zeros past R) and scales the fp32 sums by lora_scale / (their
// scales): so the term, in the row's units of s_t like the products, is sum_r f16(lu) f16(lp) with
// 11-bit significands and no overflow or underflow of the largest, summed in fp32 (the output's
// 1/s_t takes s_t off both). With split-K the z = 0 split adds it.
// The W tile in shared memory is [k][n] backward (the runs' rows as loaded) and [n][k] forward.
// (Transposing the backward's into [n][k] on its way in, so B loads as the forward's, ran slower:
// 0.87x the NF4-DQ product on an H100, docs/PERFORMANCE.md 2026-12-06 23:13.)
// Bindings: 0 = output (f32), 1 = input (f16, scaled), 2..5 = the weight (common/weights.glsl),
// 6 = the rows' max|x| bits (u32, row t of this dispatch at xmax_off + t), 7 = split-K partials
// (f32), 8 = lu (f32), 9 = lp (f32).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef COOPMAT
#extension GL_NV_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#endif

#define BM 128u
#define BN 128u
#ifndef BK
#define BK 32u
#endif
#define NT 256u
layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, N, K;        // rows, output columns, reduction length of this dispatch
	uint y_off, ldy;     // output offset and row length (floats)
	uint x_off, ldx;     // input (f16) offset and row length (elements)
	uint xk0;            // BWD: the input column of k = 0 (the chunk's first W row)
	uint r0, I, pos;     // weight chunk: first row, row length, element position in binding
	uint absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint accumulate;     // add onto the output (not with split-K)
	uint xmax_off;       // binding 6's word of row 0's max|x| bits
	uint kc;             // split-K: reduction length of one split (a multiple of BK); 0: none
	uint part_off;       // split-K: the partials' offset in binding 7 (floats)
	uint fast;           // 1: the 16-element runs are aligned (mm_fast_ok); 0: scalar loads
	uint lora_r;         // the LoRA term's rank R (0: none)
	uint lu_off;         // lu row t of this dispatch at lu_off + t R (binding 8, floats)
	uint lp_off, lp_cs, lp_rs; // lp(n, r) at lp_off + n lp_cs + r lp_rs (binding 9, floats)
	float lora_scale;
	uint raster;         // > 0: output tiles in bands of this many token tiles (main() below)
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
#define W_SHARED_TABLES
#include "common/weights.glsl"

layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer In { uvec4 x8[]; };   // 8 halves a load
layout(binding = 1) readonly buffer In1 { uint x2[]; };    // 2 halves a load
layout(binding = 2) readonly buffer WData4 { uvec4 w4[]; };
layout(binding = 2) readonly buffer WData2 { uvec2 w2[]; };
layout(binding = 6) readonly buffer XMax { uint xmax[]; };
layout(binding = 7) writeonly buffer Part { float part[]; };
#ifdef LORA
layout(binding = 8) readonly buffer LoraL { float lu[]; };
layout(binding = 9) readonly buffer LoraP { float lp[]; };
shared uint lmax[2]; // the bits of the largest |lu| over the group's rows, |lp| over its columns
#endif

// Shared tiles of f16, 8 to a uvec4, rows padded by one uvec4 against bank conflicts.
#define SA (BK / 8u + 1u) // row stride of As and of the forward Bs [n][k], in uvec4
shared uvec4 As[BM * SA]; // x tile [m][k]
#ifdef BWD
#define SB (BN / 8u + 1u)
shared uvec4 Bs[BK * SB]; // W tile [k][n]
#elif !defined(COOPMAT)
// the register-blocked forward: the W tile as fp32 values (already rounded to f16), so the tile
// step converts only x; rows of BK / 4 + 1 vec4 (one of padding: rows on distinct banks)
#define SF (BK / 4u + 1u)
shared vec4 Bf[BN * SF]; // W tile [n][k]

// eight f16 values as fp32 at Bf[at], Bf[at + 1]
void bf_put8(uint at, uvec4 h)
{
	Bf[at] = vec4(unpackHalf2x16(h.x), unpackHalf2x16(h.y));
	Bf[at + 1u] = vec4(unpackHalf2x16(h.z), unpackHalf2x16(h.w));
}
#else
shared uvec4 Bs[BN * SA]; // W tile [n][k]
#endif

#define RA (BK / 16u)       // runs of 16 per row of the x tile
#define NRA (BM * RA / NT)  // x runs per invocation
#ifdef BWD
#define NRB (BK * (BN / 16u) / NT)
#else
#define NRB (BN * RA / NT)
#endif

#include "common/scale.glsl"

// The exponent of s_t for row t of this dispatch (t < T)
int row_exp(uint t) { return tern_pow2_exp(xmax[p.xmax_off + t], 14); }

// ---- loads: global -> registers (the next step) ---------------------------------------------

uvec4 xr[NRA][2]; // x runs (16 halves each)
#if defined(W_F32)
uvec4 wr[NRB][4];
#elif defined(W_F16) || defined(W_BF16)
uvec4 wr[NRB][2];
#elif defined(W_TERNARY)
uint wr[NRB];
#else
uvec2 wr[NRB];
float wa[NRB]; // the run's absmax
#endif

// x run i of this invocation in the tile at (m0, k0): row m, columns kr .. kr+15
void x_run(uint i, out uint m, out uint kr)
{
	uint q = gl_LocalInvocationID.x + i * NT;
	m = q / RA;
	kr = (q % RA) * 16u;
}

// W run i: forward row n (of the tile's N) and columns kr..; backward row k and columns nr..
void w_run(uint i, out uint r, out uint c)
{
	uint q = gl_LocalInvocationID.x + i * NT;
#ifdef BWD
	r = q / (BN / 16u);
	c = (q % (BN / 16u)) * 16u;
#else
	r = q / RA;
	c = (q % RA) * 16u;
#endif
}

void load_step(uint m0, uint n0, uint k0, uint ke)
{
	[[unroll]] for (uint i = 0u; i < NRA; i++) {
		uint m, kr;
		x_run(i, m, kr);
		uint b = (p.x_off + (m0 + m) * p.ldx + p.xk0 + k0 + kr) >> 3;
		xr[i][0] = xr[i][1] = uvec4(0u);
		if (m0 + m < p.T && k0 + kr < ke) {
			xr[i][0] = x8[b];
			xr[i][1] = x8[b + 1u];
		}
	}
	[[unroll]] for (uint i = 0u; i < NRB; i++) {
		uint r, c;
		w_run(i, r, c);
#ifdef BWD
		bool in_ = k0 + r < ke && n0 + c < p.N;
		uint row = p.r0 + k0 + r, col = n0 + c; // global row of W, column
#else
		bool in_ = n0 + r < p.N && k0 + c < ke;
		uint row = p.r0 + n0 + r, col = k0 + c;
#endif
		uint lr = row - p.r0; // row inside the bound chunk
#if defined(W_F32)
		uint l = (lr * p.I + col + p.pos) >> 2;
		[[unroll]] for (uint j = 0u; j < 4u; j++)
			wr[i][j] = uvec4(0u);
		if (in_) {
			[[unroll]] for (uint j = 0u; j < 4u; j++)
				wr[i][j] = w4[l + j];
		}
#elif defined(W_F16) || defined(W_BF16)
		uint l = (lr * p.I + col + p.pos) >> 3;
		wr[i][0] = wr[i][1] = uvec4(0u);
		if (in_) {
			wr[i][0] = w4[l];
			wr[i][1] = w4[l + 1u];
		}
#elif defined(W_TERNARY)
		wr[i] = 0x55555555u; // code 1 (zero) outside
		if (in_)
			wr[i] = w_data[lr * ((p.I + 15u) >> 4) + p.pos + (col >> 4)];
#else
		wr[i] = uvec2(0x77777777u); // code 7 (zero) outside
		wa[i] = 0.0;
		if (in_) {
			wr[i] = w2[(lr * p.I + col + p.pos) >> 4];
			wa[i] = w_run_absmax((row * p.I + col) / p.blocksize);
		}
#endif
	}
}

// ---- stores: registers -> shared f16 ---------------------------------------------------------

uvec4 pack8(float v0, float v1, float v2, float v3, float v4, float v5, float v6, float v7)
{
	return uvec4(packHalf2x16(vec2(v0, v1)), packHalf2x16(vec2(v2, v3)), packHalf2x16(vec2(v4, v5)),
		     packHalf2x16(vec2(v6, v7)));
}

// 16 weights of run i as two uvec4 of f16
void w_decode(uint i, out uvec4 lo, out uvec4 hi)
{
#if defined(W_F32)
	vec4 a = uintBitsToFloat(wr[i][0]), b = uintBitsToFloat(wr[i][1]);
	vec4 c = uintBitsToFloat(wr[i][2]), d = uintBitsToFloat(wr[i][3]);
	lo = pack8(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
	hi = pack8(c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w);
#elif defined(W_F16)
	lo = wr[i][0];
	hi = wr[i][1];
#elif defined(W_BF16)
	float v[16];
	[[unroll]] for (uint j = 0u; j < 8u; j++) {
		uint u = wr[i][j >> 2][j & 3u];
		v[2u * j] = uintBitsToFloat(u << 16);
		v[2u * j + 1u] = uintBitsToFloat(u & 0xffff0000u);
	}
	lo = pack8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
	hi = pack8(v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
#elif defined(W_TERNARY)
	float v[16];
	[[unroll]] for (uint j = 0u; j < 16u; j++)
		v[j] = (float((wr[i] >> (2u * j)) & 3u) - 1.0) * p.scale;
	lo = pack8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
	hi = pack8(v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
#else
	// two codes per byte, the even element in the high nibble; one absmax for the 16
	float v[16];
	[[unroll]] for (uint j = 0u; j < 8u; j++) {
		uint byte_ = (wr[i][j >> 2] >> ((j & 3u) * 8u)) & 0xffu;
		v[2u * j] = w_nf4[byte_ >> 4] * wa[i];
		v[2u * j + 1u] = w_nf4[byte_ & 15u] * wa[i];
	}
	lo = pack8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
	hi = pack8(v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
#endif
}

// The invocation's W runs (16 f16 each, as lo and hi) into the tile
void w_store(uvec4 lo[NRB], uvec4 hi[NRB])
{
	[[unroll]] for (uint i = 0u; i < NRB; i++) {
		uint r, c;
		w_run(i, r, c);
#ifdef BWD
		// A row's eight runs are eight consecutive invocations, whose 16-byte stores go to
		// shared memory together: lo then hi for all, the upper four's words would fall on the
		// lower four's banks (2-way conflicts); the upper four store hi first, so each store of
		// the eight meets eight distinct groups of banks
		bool sw = c >= 64u;
		Bs[r * SB + (c >> 3) + (sw ? 1u : 0u)] = sw ? hi[i] : lo[i];
		Bs[r * SB + (c >> 3) + (sw ? 0u : 1u)] = sw ? lo[i] : hi[i];
#elif !defined(COOPMAT)
		bf_put8(r * SF + (c >> 2), lo[i]);
		bf_put8(r * SF + (c >> 2) + 2u, hi[i]);
#else
		Bs[r * SA + (c >> 3)] = lo[i];
		Bs[r * SA + (c >> 3) + 1u] = hi[i];
#endif
	}
}

// Any shape or alignment: element by element, straight into shared memory (no prefetch).
void store_step_scalar(uint m0, uint n0, uint k0, uint ke)
{
	[[unroll]] for (uint i = 0u; i < NRA; i++) {
		uint m, kr;
		x_run(i, m, kr);
		float v[16];
		[[unroll]] for (uint j = 0u; j < 16u; j++) {
			uint k = k0 + kr + j;
			v[j] = 0.0;
			if (m0 + m < p.T && k < ke) {
				uint e = p.x_off + (m0 + m) * p.ldx + p.xk0 + k;
				v[j] = unpackHalf2x16(x2[e >> 1] >> (16u * (e & 1u))).x;
			}
		}
		As[m * SA + (kr >> 3)] = pack8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
		As[m * SA + (kr >> 3) + 1u] = pack8(v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
	}
	uvec4 lo[NRB], hi[NRB];
	[[unroll]] for (uint i = 0u; i < NRB; i++) {
		uint r, c;
		w_run(i, r, c);
		float v[16];
		[[unroll]] for (uint j = 0u; j < 16u; j++) {
			v[j] = 0.0;
#ifdef BWD
			if (k0 + r < ke && n0 + c + j < p.N)
				v[j] = w_value(p.r0 + k0 + r, n0 + c + j);
#else
			if (n0 + r < p.N && k0 + c + j < ke)
				v[j] = w_value(p.r0 + n0 + r, k0 + c + j);
#endif
		}
		lo[i] = pack8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
		hi[i] = pack8(v[8], v[9], v[10], v[11], v[12], v[13], v[14], v[15]);
	}
	w_store(lo, hi);
}

void store_step()
{
	[[unroll]] for (uint i = 0u; i < NRA; i++) {
		uint m, kr;
		x_run(i, m, kr);
		As[m * SA + (kr >> 3)] = xr[i][0];
		As[m * SA + (kr >> 3) + 1u] = xr[i][1];
	}
	uvec4 lo[NRB], hi[NRB];
	[[unroll]] for (uint i = 0u; i < NRB; i++)
		w_decode(i, lo[i], hi[i]);
	w_store(lo, hi);
}

// ---- the output --------------------------------------------------------------------------------

// v[0..8) are the sums of row m, columns n + step j of the tile at (m0, n0)
void write8(uint m0, uint n0, uint m, uint n, uint step, float v[8])
{
	uint t = m0 + m, c = n0 + n;
	if (t >= p.T)
		return;
	if (p.kc > 0u) {
		uint b = p.part_off + (gl_WorkGroupID.z * p.T + t) * p.N + c;
		[[unroll]] for (uint j = 0u; j < 8u; j++)
			if (c + step * j < p.N)
				part[b + step * j] = v[j];
		return;
	}
#ifdef BWD
	uint b = p.y_off + t * p.ldy + c;
#else
	uint b = p.y_off + t * p.ldy + p.r0 + c;
#endif
	float inv_s = exp2(float(-row_exp(t)));
	[[unroll]] for (uint j = 0u; j < 8u; j++) {
		uint e = b + step * j;
		if (c + step * j >= p.N)
			break;
		float r = v[j] * inv_s;
		y[e] = p.accumulate != 0u ? y[e] + r : r;
	}
}

// ---- the tile's products -----------------------------------------------------------------------

#ifdef COOPMAT
#define FA fcoopmatNV<16, gl_ScopeSubgroup, 16, 16>
#define FC fcoopmatNV<32, gl_ScopeSubgroup, 16, 16>
FC acc[4][2]; // subgroup g's 64 x 32 block at (wm, wn)
uint wm, wn;

// acc += the tile's columns 16 kk .. 16 kk + 15 of As times those rows of Bs
void tile_k16(uint kk)
{
	FA a[4], b[2];
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		coopMatLoadNV(a[i], As, (wm + 16u * i) * SA + 2u * kk, SA, false);
	[[unroll]] for (uint j = 0u; j < 2u; j++)
#ifdef BWD
		coopMatLoadNV(b[j], Bs, 16u * kk * SB + ((wn + 16u * j) >> 3), SB, false);
#else
		coopMatLoadNV(b[j], Bs, (wn + 16u * j) * SA + 2u * kk, SA, true);
#endif
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint j = 0u; j < 2u; j++)
			acc[i][j] = coopMatMulAddNV(a[i], b[j], acc[i][j]);
}
#else
float acc[8][8]; // the invocation's rows tm + i by columns tn + j (backward), tn + 16 j (forward)
uint tm, tn;

// acc += the tile's columns 8 kg .. 8 kg + 7 of As times those rows of Bs
void tile_k8(uint kg)
{
	float b[8][8]; // b[k][j]: the invocation's column j, k = 8 kg + k
	[[unroll]] for (uint j = 0u; j < 8u; j++) {
#ifdef BWD
		uvec4 w = Bs[(8u * kg + j) * SB + (tn >> 3)]; // row k = 8 kg + j, columns tn..
		[[unroll]] for (uint q = 0u; q < 4u; q++) {
			vec2 f = unpackHalf2x16(w[q]);
			b[j][2u * q] = f.x;
			b[j][2u * q + 1u] = f.y;
		}
#else
		vec4 w0 = Bf[(tn + 16u * j) * SF + 2u * kg], w1 = Bf[(tn + 16u * j) * SF + 2u * kg + 1u];
		[[unroll]] for (uint q = 0u; q < 4u; q++) { // row n = tn + 16 j, k = 8 kg ..
			b[q][j] = w0[q];
			b[4u + q][j] = w1[q];
		}
#endif
	}
	[[unroll]] for (uint i = 0u; i < 8u; i++) {
		uvec4 w = As[(tm + i) * SA + kg];
		[[unroll]] for (uint q = 0u; q < 4u; q++) {
			vec2 f = unpackHalf2x16(w[q]);
			[[unroll]] for (uint j = 0u; j < 8u; j++) { // two fused multiply-adds
				acc[i][j] = fma(f.x, b[2u * q][j], acc[i][j]);
				acc[i][j] = fma(f.y, b[2u * q + 1u][j], acc[i][j]);
			}
		}
	}
}
#endif

#ifdef LORA
// ---- the LoRA term ----------------------------------------------------------------------------

float lu_at(uint m0, uint m, uint r)
{
	return m0 + m < p.T && r < p.lora_r ? lu[p.lu_off + (m0 + m) * p.lora_r + r] : 0.0;
}

float lp_at(uint n0, uint n, uint r)
{
	return n0 + n < p.N && r < p.lora_r ? lp[p.lp_off + (n0 + n) * p.lp_cs + r * p.lp_rs] : 0.0;
}

// Rank columns rc .. rc + 15 of the group's rows of lu and columns of lp: invocation t's eight
// values of each (zeros past R, T and N), all loads issued together. lu: row t / 2, columns
// 8 (t % 2) ..; lp forward: row n = t / 2 likewise; backward: rank column t / 16,
// columns n = 8 (t % 16) .. (BM = BN = 128 rows by 16 columns is 8 values for each of the 256).
void lora_load16(uint m0, uint n0, uint rc, out float a[8], out float b[8])
{
	uint t = gl_LocalInvocationID.x, k = rc + (t & 1u) * 8u;
	[[unroll]] for (uint j = 0u; j < 8u; j++)
		a[j] = lu_at(m0, t >> 1, k + j);
	[[unroll]] for (uint j = 0u; j < 8u; j++)
#ifdef BWD
		b[j] = lp_at(n0, (t & 15u) * 8u + j, rc + (t >> 4));
#else
		b[j] = lp_at(n0, t >> 1, k + j);
#endif
}

// Those values, scaled, as the f16 tiles' rank columns 0 .. 15 (As [m][k], Bs [n][k] or [k][n]).
void lora_store16(float a[8], float b[8], float su, float sb)
{
	uint t = gl_LocalInvocationID.x;
	As[(t >> 1) * SA + (t & 1u)] = pack8(a[0] * su, a[1] * su, a[2] * su, a[3] * su, a[4] * su, a[5] * su,
					     a[6] * su, a[7] * su);
	uvec4 q = pack8(b[0] * sb, b[1] * sb, b[2] * sb, b[3] * sb, b[4] * sb, b[5] * sb, b[6] * sb, b[7] * sb);
#ifdef BWD
	Bs[(t >> 4) * SB + (t & 15u)] = q;
#elif !defined(COOPMAT)
	bf_put8((t >> 1) * SF + (t & 1u) * 2u, q);
#else
	Bs[(t >> 1) * SA + (t & 1u)] = q;
#endif
}

// acc = lora_scale s_m sum_r lu(m, r) lp(n, r) through f16 tiles (the header's rule), 16 rank
// columns a round. A first pass over lu and lp takes their largest magnitudes (with R <= 16 its
// loads are the only ones): lu's as the exponent of max |lu| s_m over the rows, worked out in
// exponents so that no s_m overflows a product in fp32 (lmax[0] = 512 + the largest e(max_r |lu(m,
// r)|) + log2 s_m, 0 for none finite and nonzero). Leaves As and Bs free (a barrier at the end).
void lora_term(uint m0, uint n0)
{
	if (gl_LocalInvocationID.x < 2u)
		lmax[gl_LocalInvocationID.x] = 0u;
	float a[8], b[8];
	uint am = 0u, bm = 0u, m = m0 + (gl_LocalInvocationID.x >> 1); // the row of a
	for (uint rc = 0u; rc < p.lora_r; rc += 16u) {
		lora_load16(m0, n0, rc, a, b);
		[[unroll]] for (uint j = 0u; j < 8u; j++) {
			am = max(am, floatBitsToUint(abs(a[j])));
			bm = max(bm, floatBitsToUint(abs(b[j])));
		}
	}
	int et = m < p.T ? row_exp(m) : 0;
	uint ea = (am >> 23) & 0xffu;
	barrier(); // lmax zeroed
	if (am != 0u && ea != 0xffu)
		atomicMax(lmax[0], uint(512 + max(int(ea), 1) - 127 + et));
	atomicMax(lmax[1], bm);
	barrier();
	int q = lmax[0] == 0u ? 0 : 14 - (int(lmax[0]) - 512), eb = tern_pow2_exp(lmax[1], 14);
	float su = exp2(float(clamp(et + q, -126, 127))), sb = exp2(float(eb));
	for (uint rc = 0u; rc < p.lora_r; rc += 16u) {
		if (p.lora_r > 16u)
			lora_load16(m0, n0, rc, a, b);
		lora_store16(a, b, su, sb);
		barrier();
#ifdef COOPMAT
		tile_k16(0u);
#elif defined(BWD)
		tile_k8(0u);
		tile_k8(1u);
#else
		[[dont_unroll]] for (uint kg = 0u; kg < 2u; kg++) // as the main loop's (fewer registers)
			tile_k8(kg);
#endif
		barrier();
	}
	float f = p.lora_scale * exp2(float(clamp(-q - eb, -126, 127)));
#ifdef COOPMAT
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint j = 0u; j < 2u; j++)
			acc[i][j] = acc[i][j] * f;
#else
	[[unroll]] for (uint i = 0u; i < 8u; i++)
		[[unroll]] for (uint j = 0u; j < 8u; j++)
			acc[i][j] *= f;
#endif
}
#endif

void main()
{
	// The grid is (N tiles, token tiles); groups start in the order of their linear index, x
	// fastest. With p.raster = G > 0 that index walks bands of G token tiles, the G tiles of one
	// column tile after another, so the groups running at once share a few W column tiles (each
	// read from memory about once) and the band's rows of x (kept in L2 by the host's choice of
	// G), instead of one or two token tiles against all of W.
	uint tx = gl_WorkGroupID.x, ty = gl_WorkGroupID.y;
	if (p.raster > 0u) {
		uint nx = gl_NumWorkGroups.x, id = ty * nx + tx, per = p.raster * nx;
		uint first = (id / per) * p.raster, rows = min(gl_NumWorkGroups.y - first, p.raster);
		uint r = id % per;
		ty = first + r % rows;
		tx = r / rows;
	}
	uint m0 = ty * BM, n0 = tx * BN;
	uint kb = 0u, ke = p.K;
	if (p.kc > 0u) {
		kb = gl_WorkGroupID.z * p.kc;
		ke = min(p.K, kb + p.kc);
	}
#if defined(W_NF4) || defined(W_NF4_DQ)
	w_tables_load();
	barrier();
#endif

#ifdef COOPMAT
	uint g = gl_SubgroupID;
	wm = (g / 4u) * 64u;
	wn = (g % 4u) * 32u;
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint j = 0u; j < 2u; j++)
			acc[i][j] = FC(0.0);
#else
	tm = (gl_LocalInvocationID.x / 16u) * 8u;
#ifdef BWD
	tn = (gl_LocalInvocationID.x % 16u) * 8u;
#else
	tn = gl_LocalInvocationID.x % 16u;
#endif
	[[unroll]] for (uint i = 0u; i < 8u; i++)
		[[unroll]] for (uint j = 0u; j < 8u; j++)
			acc[i][j] = 0.0;
#endif

	bool fast = p.fast != 0u;
	if (fast)
		load_step(m0, n0, kb, ke);
#ifdef LORA
	// while the first step's loads are on their way
	if (p.lora_r > 0u && (p.kc == 0u || gl_WorkGroupID.z == 0u))
		lora_term(m0, n0);
#endif
	if (fast)
		store_step();
	else
		store_step_scalar(m0, n0, kb, ke);
	barrier();
	for (uint k0 = kb; k0 < ke; k0 += BK) {
		bool more = k0 + BK < ke;
		if (more && fast)
			load_step(m0, n0, k0 + BK, ke);
#ifdef COOPMAT
		[[unroll]] for (uint kk = 0u; kk < BK / 16u; kk++)
			tile_k16(kk);
#elif defined(BWD)
		[[unroll]] for (uint kg = 0u; kg < BK / 8u; kg++)
			tile_k8(kg);
#else
		// not unrolled: 1.076x the forward (mm_rb_nf4_dq, 168 registers an invocation; H100,
		// 2026-12-07); the backward stays unrolled (0.98x not)
		[[dont_unroll]] for (uint kg = 0u; kg < BK / 8u; kg++)
			tile_k8(kg);
#endif
		barrier();
		if (more && fast)
			store_step();
		else if (more)
			store_step_scalar(m0, n0, k0 + BK, ke);
		barrier();
	}

#ifdef COOPMAT
	// each subgroup stages one 16 x 16 accumulator at a time through its 64 uvec4 of As
	uint lane = gl_SubgroupInvocationID, sbase = g * 64u;
	[[unroll]] for (uint i = 0u; i < 4u; i++)
		[[unroll]] for (uint j = 0u; j < 2u; j++) {
			coopMatStoreNV(acc[i][j], As, sbase, 4u, false);
			subgroupMemoryBarrierShared();
			subgroupBarrier();
			uint r = lane >> 1, c = (lane & 1u) * 8u;
			uvec4 lo = As[sbase + r * 4u + (c >> 2)], hi = As[sbase + r * 4u + (c >> 2) + 1u];
			float v[8] = float[8](uintBitsToFloat(lo.x), uintBitsToFloat(lo.y), uintBitsToFloat(lo.z),
					      uintBitsToFloat(lo.w), uintBitsToFloat(hi.x), uintBitsToFloat(hi.y),
					      uintBitsToFloat(hi.z), uintBitsToFloat(hi.w));
			write8(m0, n0, wm + 16u * i + r, wn + 16u * j + c, 1u, v);
			subgroupBarrier();
		}
#else
#ifdef BWD
	const uint step = 1u;
#else
	const uint step = 16u;
#endif
	[[unroll]] for (uint i = 0u; i < 8u; i++)
		write8(m0, n0, tm + i, tn, step, acc[i]);
#endif
}
