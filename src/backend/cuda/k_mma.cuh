// The m16n8k16 bf16 tensor-core product of one warp (mma.sync, sm_80 and later) and its emulation,
// shared by the tensor-core attention (k_attn.cu) and the small-T NF4 product (k_gemv.cu).
// Included by .cu files only (after emu_device.h in the CUDA emulation).
#ifndef TERN_K_MMA_CUH
#define TERN_K_MMA_CUH

#include <stdint.h>

namespace
{

// d += a · b for one warp: a the 16x16 A fragment (row-major), b0/b1 the 16x8 B fragment, d the
// 16x8 f32 C fragment, in the PTX ISA's m16n8k16 layouts (lane = 4·g + t: a[0] rows g, cols
// 2t..2t+1; a[1] row g+8; a[2], a[3] the same at cols +8; b0 k 2t..2t+1 of col g, b1 k +8; d[0..1]
// row g cols 2t..2t+1, d[2..3] row g+8).
__device__ inline void mma_bf16(float d[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
#if defined(TERN_CUDA_EMU)
	// the emulation: every lane's operands in one round (emu_warp_share), fp32 products in k order;
	// A[r][k] is in lane 4(r % 8) + (k % 8) / 2, register (r / 8) + 2 (k / 8), half k % 2; B[k][n]
	// in lane 4n + (k % 8) / 2, register k / 8 (b0, b1), half k % 2
	struct ops {
		uint32_t a[4], b[2];
	} mine = {{a[0], a[1], a[2], a[3]}, {b0, b1}}, all[32];
	emu_warp_share(&mine, sizeof mine, all);
	int lane = (int)(threadIdx.x & 31), g = lane >> 2, t = lane & 3;
	auto half = [](uint32_t r, int k) {
		return __int_as_float((int)(((r >> ((k & 1) * 16)) & 0xffffu) << 16));
	};
	float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};
	for (int kk = 0; kk < 16; kk++) {
		int q = (kk & 7) >> 1, hi = kk >> 3;
		float A0 = half(all[g * 4 + q].a[2 * hi], kk), A1 = half(all[g * 4 + q].a[2 * hi + 1], kk);
		float B0 = half(all[(2 * t) * 4 + q].b[hi], kk),
		      B1 = half(all[(2 * t + 1) * 4 + q].b[hi], kk);
		s[0] += A0 * B0;
		s[1] += A0 * B1;
		s[2] += A1 * B0;
		s[3] += A1 * B1;
	}
	for (int e = 0; e < 4; e++)
		d[e] += s[e];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
		     "{%8,%9}, {%0,%1,%2,%3};\n"
		     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
		     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
	(void)d, (void)a, (void)b0, (void)b1;
	__trap(); // never launched below compute 8.0 (cu_ops.c checks)
#endif
}

} // namespace

#endif
