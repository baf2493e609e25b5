#version 450
// The decode-first half-precision products' first pass (matmul precision TERN_F16, vk_mm.c):
// rows [r0, r0 + R) of a frozen weight W [rows, I] decoded to f16,
//   out[(row - r0) I + col] (=) f16(w(row, col)),
// with mm.comp's arithmetic (w_decode: the code's value times its block's absmax in fp32, one
// rounding to f16; bf16 and f32 rounded to f16 once), so a product that multiplies these rows
// with mm.comp's f16 variant gives the very bits of mm.comp decoding W in its tiles.
// Each invocation decodes a run of 8 consecutive elements of one row. The host has checked what
// the runs assume (vk_mm.c, mm_fast_ok): I a multiple of 16; pos a multiple of 16 (NF4: and the
// block size), of 8 (bf16) or of 4 (f32); ternary rows are whole words.
// -DTRANS: the chunk transposed, out[col R + (row - r0)] (=) f16(w(row, col)): W's rows become
// the columns of an [I, R] matrix, so that the backward's dx = dy W runs as mm.comp's forward
// product with this as its weight (vk_mm.c). A group decodes a tile of 64 rows x 64 columns into
// shared memory and writes it by columns, 8 rows a uvec4 (R a multiple of 8).
// Bindings: 0 = out (f16 pairs, 8 halves a uvec4, from out_off uvec4s on), 2..5 = the weight
// (common/weights.glsl).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint R, I;      // rows, row length
	uint r0, pos;   // first row of the chunk (global), its element position in binding 2
	uint absmax_off, nested_off, dmap_off, blocksize;
	float offset, scale;
	uint out_off;   // binding 0's uvec4 of element (r0, 0)
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

layout(binding = 0) writeonly buffer Out { uvec4 out4[]; };

uvec4 pack8(float v[8])
{
	return uvec4(packHalf2x16(vec2(v[0], v[1])), packHalf2x16(vec2(v[2], v[3])),
		     packHalf2x16(vec2(v[4], v[5])), packHalf2x16(vec2(v[6], v[7])));
}

// the 8 elements of row lr (inside the chunk), columns col .. col + 7
void run8(uint lr, uint col, out float v[8])
{
	uint l = lr * p.I + col + p.pos; // element position in binding 2
#if defined(W_F32)
	[[unroll]] for (uint j = 0u; j < 8u; j++)
		v[j] = uintBitsToFloat(w_data[l + j]);
#elif defined(W_BF16)
	[[unroll]] for (uint j = 0u; j < 4u; j++) {
		uint u = w_data[(l >> 1) + j];
		v[2u * j] = uintBitsToFloat(u << 16);
		v[2u * j + 1u] = uintBitsToFloat(u & 0xffff0000u);
	}
#elif defined(W_TERNARY)
	uint word = w_data[lr * ((p.I + 15u) >> 4) + p.pos + (col >> 4)], sh = (col & 15u) * 2u;
	[[unroll]] for (uint j = 0u; j < 8u; j++)
		v[j] = (float((word >> (sh + 2u * j)) & 3u) - 1.0) * p.scale;
#elif defined(W_NF4) || defined(W_NF4_DQ)
	// two codes per byte, the even element in the high nibble; one absmax for the 8
	uint word = w_data[l >> 3];
	float a = w_run_absmax(((p.r0 + lr) * p.I + col) / p.blocksize);
	[[unroll]] for (uint j = 0u; j < 4u; j++) {
		uint byte_ = (word >> (8u * j)) & 0xffu;
		v[2u * j] = w_nf4[byte_ >> 4] * a;
		v[2u * j + 1u] = w_nf4[byte_ & 15u] * a;
	}
#else
#error wdec.comp: define one of W_F32 W_BF16 W_NF4 W_NF4_DQ W_TERNARY
#endif
}

#ifdef TRANS
#define TT 64u
shared float tt[TT][TT + 1u]; // [column][row] of the tile

void main()
{
#if defined(W_NF4) || defined(W_NF4_DQ)
	w_tables_load();
	barrier();
#endif
	uint tc = (p.I + TT - 1u) / TT, n = (p.R + TT - 1u) / TT * tc, t = gl_LocalInvocationID.x;
	for (uint tile = gl_WorkGroupID.x; tile < n; tile += gl_NumWorkGroups.x) {
		uint rt = (tile / tc) * TT, ct = (tile % tc) * TT; // the tile's first row, column
		// the tile's 64 rows as runs of 8 columns (two an invocation), into tt by column
		[[unroll]] for (uint h = 0u; h < 2u; h++) {
			uint q = t + h * 256u, lr = q / 8u, cr = (q % 8u) * 8u;
			float v[8];
			if (rt + lr < p.R && ct + cr < p.I)
				run8(rt + lr, ct + cr, v);
			else
				[[unroll]] for (uint j = 0u; j < 8u; j++)
					v[j] = 0.0;
			[[unroll]] for (uint j = 0u; j < 8u; j++)
				tt[cr + j][lr] = v[j];
		}
		barrier();
		// its 64 columns as runs of 8 rows
		[[unroll]] for (uint h = 0u; h < 2u; h++) {
			uint q = t + h * 256u, c = q / 8u, rr = (q % 8u) * 8u;
			float v[8];
			[[unroll]] for (uint j = 0u; j < 8u; j++)
				v[j] = tt[c][rr + j];
			if (ct + c < p.I && rt + rr < p.R)
				out4[p.out_off + ((ct + c) * p.R + rt + rr) / 8u] = pack8(v);
		}
		barrier();
	}
}
#else
void main()
{
#if defined(W_NF4) || defined(W_NF4_DQ)
	w_tables_load(); // common/weights.glsl: the code values (and map) in shared memory
	barrier();
#endif
	uint per_row = p.I >> 3, n = p.R * per_row;
	for (uint q = gl_GlobalInvocationID.x; q < n; q += gl_NumWorkGroups.x * 256u) {
		uint lr = q / per_row, col = (q % per_row) * 8u;
		float v[8];
		run8(lr, col, v);
		out4[p.out_off + q] = pack8(v);
	}
}
#endif
