#version 450
// Grouped dequant-matmul of the experts (backend.h, matmul_grouped), one dispatch for all experts:
// expert e is its own weight W_e [O, I], its parts p.dstride, p.astride, p.nstride units after
// expert e - 1's (struct tern_experts); the bindings start at expert e0's parts. off[E + 1] (i32)
// groups the rows: row t (global index t0 + t) goes to the expert e with off[e] <= t < off[e + 1]
// (a binary search of off), and is skipped outside [off[0], off[E]) or when e lies outside the
// bound chunk of experts [e0, e1).
// Forward (default): y[t, n] = Σ_k x[t, k] · W_e[n, k]   (N = O, K = I)
// Backward (-DBWD):  dx[t, n] (=|+=) Σ_k dy[t, k] · W_e[k, n]   (N = I, K = O)
// One invocation per output element, a plain loop over k (simple; no shared memory), weights
// read through common/weights.glsl (any of F32, F16, BF16, NF4, NF4_DQ by -DW_*).
// bindings 0 = y / dx, 1 = x / dy, 2-5 = the weight (weights.glsl), 6 = off (i32),
// 7 = the experts' nested offsets (NF4_DQ, f32 [E])
#extension GL_GOOGLE_include_directive : require

layout(local_size_x = 64) in;

layout(push_constant) uniform Push {
	uint T, N, K;
	uint y_off, x_off, t0;
	uint E, O, e0, e1, off_off;
	uint I, pos, dstride;
	uint absmax_off, astride, nested_off, nstride, dmap_off, blocksize;
	uint eoff_off;
	float scale;
	uint accumulate;
} p;

layout(binding = 7) readonly buffer EOff { float w_eoff[]; };

uint g_e; // the expert whose weight w_value reads (relative to the bound chunk: g_e - e0)

#define wp_r0 0u
#define wp_I p.I
#define wp_pos (p.pos + (g_e - p.e0) * p.dstride)
#define wp_absmax_off (p.absmax_off + (g_e - p.e0) * p.astride)
#define wp_nested_off (p.nested_off + (g_e - p.e0) * p.nstride)
#define wp_dmap_off p.dmap_off
#define wp_blocksize p.blocksize
#define wp_offset w_eoff[p.eoff_off + g_e]
#define wp_scale p.scale
#include "common/weights.glsl"

layout(binding = 0) buffer Out { float y[]; };
layout(binding = 1) readonly buffer In { float x[]; };
layout(binding = 6) readonly buffer Off { int off[]; };

void main()
{
	uint total = p.T * p.N;
	uint stride = gl_NumWorkGroups.x * 64u;
	int first = off[p.off_off], last = off[p.off_off + p.E];
	for (uint i = gl_GlobalInvocationID.x; i < total; i += stride) {
		uint t = i / p.N, n = i % p.N;
		int tg = int(p.t0 + t);
		if (tg < first || tg >= last)
			continue;
		uint lo = 0u, hi = p.E; // off[lo] <= tg < off[hi] when off is ordered
		while (hi - lo > 1u) {
			uint mid = (lo + hi) >> 1;
			if (off[p.off_off + mid] <= tg)
				lo = mid;
			else
				hi = mid;
		}
		if (lo < p.e0 || lo >= p.e1)
			continue;
		g_e = lo;
		uint xb = p.x_off + t * p.K;
		float s = 0.0;
		for (uint k = 0u; k < p.K; k++) {
#ifdef BWD
			s += x[xb + k] * w_value(k, n);
#else
			s += x[xb + k] * w_value(n, k);
#endif
		}
		uint l = p.y_off + t * p.N + n;
		y[l] = p.accumulate != 0u ? y[l] + s : s;
	}
}
