/* The fused lm_head + cross-entropy (training-math.md "Loss") on Vulkan. Tokens go through in
 * chunks of Tc; per chunk, with z the chunk's logits [Tc, V] in a scratch buffer:
 *   matmul      z = x[chunk] · Wᵀ                          (the matmul pipelines, any W split)
 *   ce_loss     per row: lse, term = lse − z[y], z ← inv_n · (softmax − onehot) in place
 *               (ce_loss_2p: max and sum of exp in one read, TERN_VK_LOSS=v1 the three-pass one)
 *   matmul_bwd  dx[chunk] = z · W   (=)                    (rows of untrained tokens are 0)
 *   ce_loss_sum loss[0] += inv_n · Σ term, in a fixed order
 *   gemm        dW += zᵀ · x[chunk]    (only with dW: a trained lm_head, W f32; fp32 products)
 * Tc = min(T, 64 MiB / (4 V) rounded down to a multiple of 128 when above 128, 4096)
 * (TERN_CE_CHUNK=<tokens> forces fewer; TERN_VK_LOSS=v1 does not round), so the scratch holds at
 * most 64 MiB of logits (Tc = 128 at V = 128256, 130 with v1) plus Tc terms; it is allocated on first use,
 * grown when a larger vocabulary needs it, and freed with the backend. Tc and the scratch's size
 * come from tern_vulkan_sizes, the figures the residency planner counts.
 *
 * Labels live on the device, so they are not checked on the host as the CPU backend does: a
 * label outside [0, V) other than -100 makes that token's term NaN (so the loss is NaN, never
 * silently wrong) and its dx 0. Every chunk runs even when all its tokens are untrained. */
#include "backend/vulkan/vk.h"

#include <stdlib.h>

#define CE_CHUNK_BYTES ((int64_t)64 << 20)
#define CE_MAX_CHUNK 4096 /* one workgroup per token row: far below any group-count limit */
#define CE_ALIGN_MAX 256  /* the largest minStorageBufferOffsetAlignment Vulkan allows */

/* Device memory the backend takes besides the buffers callers allocate and ce_loss's scratch: an
 * allowance for its own buffers (the dummy binding, the dynamic map) and for the rounding of
 * allocations into its memory blocks. */
#define VK_RESERVE ((uint64_t)64 << 20)

#define CE_TILE 128 /* rows of mm.comp's output tiles (vk_mm.c MM_TILE) */

struct ce_push {
	uint32_t V, n;
	uint32_t z_off, lab_off, term_off;
	float inv_n;
	uint32_t vec;
};

/* The loss kernel generation (TERN_VK_LOSS, tern_vk_gen): v2 (the default: chunks of whole
 * 128-row tiles, the two-pass ce_loss_2p) or v1 (the chunk as many rows as 64 MiB holds, the
 * three-pass ce_loss), so that one GPU session can time both (tools/bench_gpu.sh --kernels-ab).
 * The row pass of one chunk: ce_loss_2p (v2) or ce_loss (v1). */
static enum tern_vk_pipe pick_ce_loss(int gen) { return gen == 1 ? TERN_PIPE_CE_LOSS : TERN_PIPE_CE_LOSS_2P; }

static int64_t ce_chunk_tokens(int64_t T, int64_t V, int gen)
{
	int64_t tc = CE_CHUNK_BYTES / (4 * (V > 0 ? V : 1));
	/* v2: whole output tiles of the lm_head products (at V = 128256, 130 rows would run as two
	 * 128-row tiles, the second with 2 live rows: half the product's work wasted) */
	if (gen == 2 && tc > CE_TILE)
		tc = tc / CE_TILE * CE_TILE;
	const char *env = getenv("TERN_CE_CHUNK");
	if (env) {
		long long f = strtoll(env, NULL, 10);
		if (f > 0 && f < tc)
			tc = f;
	}
	tc = tc > CE_MAX_CHUNK ? CE_MAX_CHUNK : tc;
	tc = tc > T ? T : tc;
	return tc < 1 ? 1 : tc;
}

/* The scratch holds the logits of a chunk, then the chunk's terms at the next binding-aligned
 * offset: CE_ALIGN_MAX covers that on any device, so the figure needs none. */
enum tern_status tern_vulkan_sizes(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out)
{
	int gen = 2;
	enum tern_status st = tern_vk_gen("TERN_VK_LOSS", &gen);
	if (st)
		return st;
	int64_t tc = ce_chunk_tokens(T, V, gen);
	*out = (struct tern_backend_sizes){
		.ce_chunk = tc,
		.ce_scratch = (uint64_t)(tc * V) * 4 + CE_ALIGN_MAX + (uint64_t)tc * 4,
		.reserve = VK_RESERVE,
	};
	return TERN_OK;
}

enum tern_status tern_vk_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				 struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				 struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t V = W->O, D = W->I;
	/* the shader's 32-bit counters (the front door checked the rest) */
	if (V > UINT32_MAX / 2 || T > (int64_t)UINT32_MAX)
		return tern_fail(TERN_E_INVALID, "ce_loss: T=%lld V=%lld is out of range", (long long)T,
				 (long long)V);
	if (loss.off % 4 || labels.off % 4)
		return tern_fail(
			TERN_E_INVALID,
			"vulkan: ce_loss: loss and labels views must start at a multiple of 4 bytes");
	if (T == 0)
		return TERN_OK;

	struct tern_backend_sizes sz;
	int gen = 2;
	if ((st = tern_vk_gen("TERN_VK_LOSS", &gen)) || (st = tern_vulkan_sizes(T, V, D, &sz)))
		return st;
	int64_t tc = sz.ce_chunk;
	/* the products at F16 where the device has 16-bit floats (vk_mm.c), else fp32 */
	enum tern_dtype mp = prec == TERN_F16 && vk->fp16 ? TERN_F16 : TERN_F32;
	size_t zbytes = (size_t)(tc * V) * 4, need = (size_t)sz.ce_scratch; /* align <= CE_ALIGN_MAX */
	if ((st = tern_vk_scratch(vk, &vk->ce_scratch, need)))
		return st;
	size_t term_at = (zbytes + (size_t)vk->align - 1) / (size_t)vk->align * (size_t)vk->align;
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view z = {vk->ce_scratch, 0, (size_t)(tn * V) * 4};
		struct tern_view term = {vk->ce_scratch, term_at, (size_t)tn * 4};
		struct tern_view xs = tern_view_sub(x, (size_t)(t0 * D) * 4, (size_t)(tn * D) * 4);
		struct tern_view dxs = tern_view_sub(dx, (size_t)(t0 * D) * 4, (size_t)(tn * D) * 4);
		struct tern_view lab = tern_view_sub(labels, (size_t)t0 * 4, (size_t)tn * 4);
		if ((st = tern_vk_vtable.matmul(be, z, xs, W, tn, mp)))
			return st;
		struct ce_push p = {.V = (uint32_t)V, .n = (uint32_t)tn, .inv_n = inv_n};
		p.z_off = tern_vk_place(vk, &z) / 4;
		p.lab_off = tern_vk_place(vk, &lab) / 4;
		p.term_off = tern_vk_place(vk, &term) / 4;
		p.vec = p.z_off % 4 == 0 && V % 4 == 0;
		struct tern_view b[3] = {z, lab, term};
		if ((st = tern_vk_dispatch(vk, pick_ce_loss(gen), b, 3, &p, sizeof p, (uint32_t)tn, 1, 1)))
			return st;
		z = (struct tern_view){vk->ce_scratch, 0, (size_t)(tn * V) * 4};
		if ((st = tern_vk_vtable.matmul_bwd(be, dxs, z, W, tn, false, mp)))
			return st;
		struct tern_view lv = tern_view_sub(loss, 0, 4);
		struct ce_push ps = {.V = (uint32_t)V, .n = (uint32_t)tn, .inv_n = inv_n};
		ps.z_off = tern_vk_place(vk, &lv) / 4;
		ps.term_off = p.term_off;
		struct tern_view bs[3] = {lv, {0}, term};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_CE_LOSS_SUM, bs, 3, &ps, sizeof ps, 1, 1, 1)))
			return st;
		/* dW[V,D] += z[tn,V]ᵀ · x[tn,D] */
		if (dW.size &&
		    (st = tern_vk_vtable.gemm(be, dW, z, xs, V, D, tn, true, false, 1.0f, 1.0f, TERN_F32)))
			return st;
	}
	return TERN_OK;
}
