// Shared by attention.comp and attention_bwd.comp: the push block, the tile sizes and the mask.
// Tensors (token-major, row-major): q, o, dq [T, H, Dh]; k, v, dk, dv [T, Hkv, Dh]; lse [H, T];
// seg [T] (i32). off[b] is binding b's start in 4-byte words (bindings start aligned).
// A workgroup of 256 invocations works on a BQ x BK tile of queries x keys, invocation
// (r, c) = (t / 16, t % 16); the head dimension goes through shared memory in chunks of DC
// columns, and each invocation keeps the output columns c, c + 16, ... of its row in registers,
// so Dh up to DMAX works with one variant and at most ~22 KiB of shared memory.
#extension GL_EXT_control_flow_attributes : enable

layout(local_size_x = 256) in;

layout(push_constant) uniform Push {
	uint T, H, Hkv, Dh;
	uint window; // 0: none
	float scale;
	uint off[8];
} p;

#define BQ 16u
#define BK 16u
#define DC 64u
#define DMAX 256u
#define NCH (DMAX / DC)   // head-dim chunks
#define NCOL (DC / 16u)   // columns of one chunk per invocation
#define NEG (-1.0e30)     // "no score yet": finite, so exp(NEG - NEG) = 1 and exp(NEG - s) = 0

// Whether query i sees key j (training-math.md: causal, same sample, inside the window).
bool attn_sees(uint i, uint j, int si, int sj)
{
	return i < p.T && j <= i && si == sj && (p.window == 0u || i - j < p.window);
}
