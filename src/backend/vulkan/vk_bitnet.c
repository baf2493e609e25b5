/* The Vulkan wrapper of BitNet's per-token 8-bit activation fake-quantization (act_quant8,
 * backend.h). The front door (src/backend/ops.c) checked the arguments; this checks the view
 * starts the shader can address, splits the rows so that no binding exceeds
 * maxStorageBufferRange, and dispatches shaders/act_quant8.comp (the _simple variant, a row per
 * invocation, on a CPU-type device). */
#include "backend/vulkan/vk.h"

struct aq_push {
	uint32_t T, I;
	uint32_t y_off, x_off;
};

enum tern_status tern_vk_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				    int64_t T, int64_t I)
{
	const char *op = "act_quant8";
	struct tern_vk *vk = tern_vk_of(be);
	size_t n = (size_t)(T * I) * 4;
	if (n > 0 && (y.off % 4 || x.off % 4))
		return tern_fail(TERN_E_INVALID,
				 "%s: view offsets %zu (y), %zu (x) are not multiples of 4 bytes", op, y.off,
				 x.off);
	if (T == 0)
		return TERN_OK;
	int64_t rows = tern_vk_fit(vk, 4 * I);
	if (rows < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of I=%lld exceeds maxStorageBufferRange", op,
				 (long long)I);
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	if (st)
		return st;
	enum tern_vk_pipe pipe = simple ? TERN_PIPE_ACT_QUANT8_SIMPLE : TERN_PIPE_ACT_QUANT8;
	int64_t per = simple ? 8 : 1;
	struct aq_push p = {.I = (uint32_t)I};
	for (int64_t t0 = 0; t0 < T; t0 += rows) {
		int64_t tn = T - t0 < rows ? T - t0 : rows;
		size_t rb = (size_t)(t0 * I) * 4, rs = (size_t)(tn * I) * 4;
		struct tern_view yv = tern_view_sub(y, rb, rs), xv = tern_view_sub(x, rb, rs);
		p.T = (uint32_t)tn;
		p.y_off = tern_vk_place(vk, &yv) / 4;
		p.x_off = tern_vk_place(vk, &xv) / 4;
		struct tern_view bind[2] = {yv, xv};
		uint32_t groups = tern_vk_grid(tn, per, per > 1 ? 4096 : 65535);
		if ((st = tern_vk_dispatch(vk, pipe, bind, 2, &p, sizeof p, groups, 1, 1)))
			return st;
	}
	return TERN_OK;
}
