/* argmax (backend.h) on Vulkan: shaders/argmax.comp, a workgroup per row, in chunks of rows that
 * keep the binding of x inside maxStorageBufferRange. The front door checked the arguments. */
#include "backend/vulkan/vk.h"

struct argmax_push {
	uint32_t rows, n, out_off, x_off;
};

enum tern_status tern_vk_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				int64_t rows, int64_t n)
{
	const char *op = "argmax";
	struct tern_vk *vk = tern_vk_of(be);
	if (out.off % 4 || x.off % 4)
		return tern_fail(TERN_E_INVALID,
				 "%s: view offsets %zu (out), %zu (x) are not multiples of 4 bytes", op,
				 out.off, x.off);
	int64_t per = tern_vk_fit(vk, 4 * n);
	if (per < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of n=%lld exceeds maxStorageBufferRange", op,
				 (long long)n);
	enum tern_status st;
	for (int64_t r0 = 0; r0 < rows; r0 += per) {
		int64_t rn = rows - r0 < per ? rows - r0 : per;
		struct tern_view ov = tern_view_sub(out, (size_t)r0 * 4, (size_t)rn * 4),
				 xv = tern_view_sub(x, (size_t)(r0 * n) * 4, (size_t)(rn * n) * 4);
		struct argmax_push p = {.rows = (uint32_t)rn, .n = (uint32_t)n};
		p.out_off = tern_vk_place(vk, &ov) / 4;
		p.x_off = tern_vk_place(vk, &xv) / 4;
		struct tern_view b[2] = {ov, xv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ARGMAX, b, 2, &p, sizeof p,
					   tern_vk_grid(rn, 1, 65535), 1, 1)))
			return st;
	}
	return TERN_OK;
}
