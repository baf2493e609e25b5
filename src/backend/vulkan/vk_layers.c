/* The Vulkan wrappers of the per-layer transformer ops: rmsnorm (+ bwd), rope, swiglu (+ bwd),
 * embed. The front doors (src/backend/ops.c) checked the arguments; each wrapper checks the view
 * starts its shader can address, splits the work so that no binding exceeds
 * maxStorageBufferRange (by rows of tokens, or elements), fills the push constants (mirroring the
 * shader's block) and dispatches. Shaders: shaders/{rmsnorm,rope,swiglu,embed,embed_bwd}.comp. */
#include "backend/vulkan/vk.h"

#include <stdio.h>
#include <string.h>

/* Workgroups of 256 for a grid-stride loop over n items. */
static uint32_t grid256(int64_t n) { return tern_vk_grid(n, 256, 4096); }

/* The 4-byte start every fp32/i32 view of `need` bytes needs here (the shaders address words). */
static enum tern_status check_view4(const char *op, const char *what, struct tern_view v, size_t need)
{
	if (need > 0 && v.off % 4)
		return tern_fail(TERN_E_INVALID, "%s: %s view offset %zu is not a multiple of 4 bytes", op,
				 what, v.off);
	return TERN_OK;
}

/* Binds v from an aligned start; the word offset of v's first element inside the binding. */
static uint32_t place_words(struct tern_vk *vk, struct tern_view *v) { return tern_vk_place(vk, v) / 4; }

/* ---- RMSNorm ------------------------------------------------------------------------------ */

struct rms_push {
	uint32_t T, D;
	uint32_t o_off, a_off, x_off, w_off, r_off;
	float eps;
	uint32_t accumulate;
};

/* rmsnorm_simple / rmsnorm_bwd_simple (a row per invocation, 8 rows per workgroup, ARCHITECTURE
 * §7) on a CPU-type device (tern_vk_simple), else the tree-reduction ones (a row per workgroup).
 * *rows: token rows per workgroup. */
static enum tern_status pick_rmsnorm(struct tern_vk *vk, bool bwd, enum tern_vk_pipe *pipe, int64_t *rows)
{
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	*pipe = bwd ? (simple ? TERN_PIPE_RMSNORM_BWD_SIMPLE : TERN_PIPE_RMSNORM_BWD)
		    : (simple ? TERN_PIPE_RMSNORM_SIMPLE : TERN_PIPE_RMSNORM);
	*rows = simple ? 8 : 1;
	return st;
}

/* Forward (dy, rstd_in unused) or backward (rstd_out unused); chunks of tc token rows. */
static enum tern_status rms_run(struct tern_vk *vk, bool bwd, struct tern_view o, struct tern_view a,
				struct tern_view x, struct tern_view w, struct tern_view r, int64_t T,
				int64_t D, float eps, bool accumulate)
{
	int64_t tc = tern_vk_fit(vk, 4 * D);
	if (tc < 1 || D * 4 > tern_vk_fit(vk, 1))
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of D=%lld exceeds maxStorageBufferRange",
				 bwd ? "rmsnorm_bwd" : "rmsnorm", (long long)D);
	enum tern_vk_pipe pipe;
	int64_t per_group;
	enum tern_status st = pick_rmsnorm(vk, bwd, &pipe, &per_group);
	if (st)
		return st;
	struct rms_push p = {.D = (uint32_t)D, .eps = eps, .accumulate = accumulate};
	struct tern_view wv = tern_view_sub(w, 0, (size_t)D * 4);
	p.w_off = place_words(vk, &wv);
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		size_t rb = (size_t)(t0 * D) * 4, rs = (size_t)(tn * D) * 4;
		struct tern_view ov = tern_view_sub(o, rb, rs), xv = tern_view_sub(x, rb, rs);
		struct tern_view av =
			bwd ? tern_view_sub(a, rb, rs) : tern_view_sub(a, (size_t)t0 * 4, (size_t)tn * 4);
		struct tern_view rv =
			bwd ? tern_view_sub(r, (size_t)t0 * 4, (size_t)tn * 4) : (struct tern_view){0};
		p.T = (uint32_t)tn;
		p.o_off = place_words(vk, &ov);
		p.a_off = place_words(vk, &av);
		p.x_off = place_words(vk, &xv);
		p.r_off = rv.buf ? place_words(vk, &rv) : 0;
		struct tern_view b[5] = {ov, av, xv, wv, rv};
		int64_t gn = tern_cdiv(tn, per_group);
		uint32_t g = (uint32_t)(gn > 65535 ? 65535 : gn);
		st = tern_vk_dispatch(vk, pipe, b, 5, &p, sizeof p, g, 1, 1);
		if (st)
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_vk_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				 struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps)
{
	const char *op = "rmsnorm";
	enum tern_status st;
	if ((st = check_view4(op, "y", y, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "rstd", rstd, (size_t)T * 4)) ||
	    (st = check_view4(op, "x", x, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "w", w, (size_t)D * 4)))
		return st;
	if (T == 0)
		return TERN_OK;
	return rms_run(tern_vk_of(be), false, y, rstd, x, w, (struct tern_view){0}, T, D, eps, false);
}

enum tern_status tern_vk_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				     int64_t D, bool accumulate)
{
	const char *op = "rmsnorm_bwd";
	enum tern_status st;
	if ((st = check_view4(op, "dx", dx, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "dy", dy, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "x", x, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "w", w, (size_t)D * 4)) ||
	    (st = check_view4(op, "rstd", rstd, (size_t)T * 4)))
		return st;
	if (T == 0)
		return TERN_OK;
	return rms_run(tern_vk_of(be), true, dx, dy, x, w, rstd, T, D, 0.0f, accumulate);
}

/* ---- RoPE --------------------------------------------------------------------------------- */

struct rope_push {
	uint32_t T, H, half, x_off, pos_off, f_off;
	uint32_t inverse;
};

enum tern_status tern_vk_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			      struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	const char *op = "rope";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	if ((st = check_view4(op, "x", x, (size_t)(T * H * Dh) * 4)) ||
	    (st = check_view4(op, "pos", pos, (size_t)T * 4)) ||
	    (st = check_view4(op, "inv_freq", inv_freq, (size_t)(Dh / 2) * 4)))
		return st;
	if (T == 0)
		return TERN_OK;
	int64_t tc = tern_vk_fit(vk, 4 * H * Dh);
	if (tc < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: rope: one row of H=%lld Dh=%lld exceeds "
				 "maxStorageBufferRange",
				 (long long)H, (long long)Dh);
	struct rope_push p = {.H = (uint32_t)H, .half = (uint32_t)(Dh / 2), .inverse = inverse};
	struct tern_view fv = tern_view_sub(inv_freq, 0, (size_t)(Dh / 2) * 4);
	p.f_off = place_words(vk, &fv);
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view xv = tern_view_sub(x, (size_t)(t0 * H * Dh) * 4, (size_t)(tn * H * Dh) * 4);
		struct tern_view pv = tern_view_sub(pos, (size_t)t0 * 4, (size_t)tn * 4);
		p.T = (uint32_t)tn;
		p.x_off = place_words(vk, &xv);
		p.pos_off = place_words(vk, &pv);
		struct tern_view b[3] = {xv, pv, fv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ROPE, b, 3, &p, sizeof p, grid256(tn * H * (Dh / 2)),
					   1, 1)))
			return st;
	}
	return TERN_OK;
}

/* ---- SwiGLU / ReLU² ----------------------------------------------------------------------- */

struct swiglu_push {
	uint32_t n;
	uint32_t o0_off, o1_off, a_off, g_off, u_off;
};

/* One pipeline per direction and activation (SiLU or ReLU², the front door checked which). */
static enum tern_vk_pipe pick_swiglu(bool bwd, enum tern_act act)
{
	bool relu2 = act == TERN_ACT_RELU2;
	return bwd ? (relu2 ? TERN_PIPE_SWIGLU_BWD_RELU2 : TERN_PIPE_SWIGLU_BWD_SILU)
		   : (relu2 ? TERN_PIPE_SWIGLU_RELU2 : TERN_PIPE_SWIGLU_SILU);
}

/* Forward: outs {h}, ins {g, u}; backward: outs {dg, du}, ins {dh, g, u}. */
static enum tern_status swiglu_run(struct tern_vk *vk, bool bwd, struct tern_view o0, struct tern_view o1,
				   struct tern_view a, struct tern_view g, struct tern_view u, int64_t n,
				   enum tern_act act)
{
	enum tern_vk_pipe pipe = pick_swiglu(bwd, act);
	int64_t chunk = tern_vk_fit(vk, 4);
	for (int64_t i0 = 0; i0 < n; i0 += chunk) {
		int64_t m = n - i0 < chunk ? n - i0 : chunk;
		size_t b0 = (size_t)i0 * 4, bs = (size_t)m * 4;
		struct tern_view b[5] = {tern_view_sub(o0, b0, bs), bwd ? tern_view_sub(o1, b0, bs) : o1,
					 bwd ? tern_view_sub(a, b0, bs) : a, tern_view_sub(g, b0, bs),
					 tern_view_sub(u, b0, bs)};
		struct swiglu_push p = {.n = (uint32_t)m};
		p.o0_off = place_words(vk, &b[0]);
		p.o1_off = bwd ? place_words(vk, &b[1]) : 0;
		p.a_off = bwd ? place_words(vk, &b[2]) : 0;
		p.g_off = place_words(vk, &b[3]);
		p.u_off = place_words(vk, &b[4]);
		enum tern_status st = tern_vk_dispatch(vk, pipe, b, 5, &p, sizeof p, grid256(m), 1, 1);
		if (st)
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_vk_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				struct tern_view u, int64_t n, enum tern_act act)
{
	const char *op = "swiglu";
	enum tern_status st;
	if ((st = check_view4(op, "h", h, (size_t)n * 4)) || (st = check_view4(op, "g", g, (size_t)n * 4)) ||
	    (st = check_view4(op, "u", u, (size_t)n * 4)))
		return st;
	if (n == 0)
		return TERN_OK;
	struct tern_view none = {0};
	return swiglu_run(tern_vk_of(be), false, h, none, none, g, u, n, act);
}

enum tern_status tern_vk_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				    struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				    enum tern_act act)
{
	const char *op = "swiglu_bwd";
	enum tern_status st;
	if ((st = check_view4(op, "dg", dg, (size_t)n * 4)) ||
	    (st = check_view4(op, "du", du, (size_t)n * 4)) ||
	    (st = check_view4(op, "dh", dh, (size_t)n * 4)) ||
	    (st = check_view4(op, "g", g, (size_t)n * 4)) || (st = check_view4(op, "u", u, (size_t)n * 4)))
		return st;
	if (n == 0)
		return TERN_OK;
	return swiglu_run(tern_vk_of(be), true, dg, du, dh, g, u, n, act);
}

/* ---- embedding gather --------------------------------------------------------------------- */

struct embed_push {
	uint32_t T, D, V;
	uint32_t r0, rn;
	uint32_t y_off, ids_off, e_pos;
	uint32_t first;
};

/* The gather's pipeline by table dtype (f32, f16, bf16: the front door). */
static enum tern_vk_pipe pick_embed(enum tern_dtype dt)
{
	return dt == TERN_F32   ? TERN_PIPE_EMBED_F32
	       : dt == TERN_F16 ? TERN_PIPE_EMBED_F16
				: TERN_PIPE_EMBED_BF16;
}

/* y[T,D] = E[ids[t]] (=). The ids stay on the device, so an id outside [0, V) cannot fail the
 * call: its row of y is written as NaN (see shaders/embed.comp). E is bound in chunks of rows
 * when it exceeds one binding (a 128k × 4096 bf16 table is 1 GiB); every chunk scans all ids. */
enum tern_status tern_vk_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			       const struct tern_weight *E, int64_t T)
{
	const char *op = "embed";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	size_t es = tern_dtype_size(E->dtype); /* F32/F16/BF16: the front door */
	int64_t V = E->O, D = E->I;
	if ((st = check_view4(op, "y", y, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "ids", ids, (size_t)T * 4)))
		return st;
	if (E->data.off % es)
		return tern_fail(TERN_E_INVALID, "embed: E view offset %zu is not a multiple of %zu bytes",
				 E->data.off, es);
	if (T == 0)
		return TERN_OK;
	enum tern_vk_pipe pipe = pick_embed(E->dtype);
	int64_t tc = tern_vk_fit(vk, 4 * D), rows = tern_vk_fit(vk, (int64_t)es * D) - 1;
	if (tc < 1 || rows < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: embed: one row of D=%lld exceeds maxStorageBufferRange",
				 (long long)D);
	struct embed_push p = {.D = (uint32_t)D, .V = (uint32_t)V};
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view yv = tern_view_sub(y, (size_t)(t0 * D) * 4, (size_t)(tn * D) * 4);
		struct tern_view iv = tern_view_sub(ids, (size_t)t0 * 4, (size_t)tn * 4);
		p.T = (uint32_t)tn;
		p.y_off = place_words(vk, &yv);
		p.ids_off = place_words(vk, &iv);
		for (int64_t r0 = 0; r0 < V; r0 += rows) {
			int64_t rn = V - r0 < rows ? V - r0 : rows;
			/* rows [r0, r0 + rn) bound from the word that holds their first element */
			size_t b0 = (size_t)(r0 * D) * es, b1 = (size_t)((r0 + rn) * D) * es;
			size_t a0 = b0 / 4 * 4;
			struct tern_view ev = tern_view_sub(E->data, a0, b1 - a0);
			size_t lead = tern_vk_place(vk, &ev) + (b0 - a0);
			p.r0 = (uint32_t)r0;
			p.rn = (uint32_t)rn;
			p.e_pos = (uint32_t)(lead / es);
			p.first = r0 == 0;
			struct tern_view b[3] = {yv, iv, ev};
			if ((st = tern_vk_dispatch(vk, pipe, b, 3, &p, sizeof p, grid256(tn * D), 1, 1)))
				return st;
		}
	}
	return TERN_OK;
}

/* ---- embedding scatter-add (the gather's backward) ----------------------------------------- */

struct embed_bwd_push {
	uint32_t T, D, V;
	uint32_t r0, rn;
	uint32_t e_off, dy_off, ids_off;
};

/* dE[ids[t]] += dy[t] (+=), tokens in order (shaders/embed_bwd.comp). Bound in chunks of tokens
 * and of dE's rows, as the gather is; the chunks of tokens run in order, so repeated ids still
 * accumulate in token order. Ids outside [0, V) are skipped (the device cannot report them). */
enum tern_status tern_vk_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				   struct tern_view ids, int64_t T, int64_t V, int64_t D)
{
	const char *op = "embed_bwd";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	if ((st = check_view4(op, "dE", dE, (size_t)(V * D) * 4)) ||
	    (st = check_view4(op, "dy", dy, (size_t)(T * D) * 4)) ||
	    (st = check_view4(op, "ids", ids, (size_t)T * 4)))
		return st;
	if (T == 0)
		return TERN_OK;
	if (V > UINT32_MAX / 2 || D > UINT32_MAX / 2)
		return tern_fail(TERN_E_INVALID, "embed_bwd: V=%lld D=%lld is out of range", (long long)V,
				 (long long)D);
	int64_t tc = tern_vk_fit(vk, 4 * D), rows = tern_vk_fit(vk, 4 * D) - 1;
	if (tc < 1 || rows < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: embed_bwd: one row of D=%lld exceeds maxStorageBufferRange",
				 (long long)D);
	struct embed_bwd_push p = {.D = (uint32_t)D, .V = (uint32_t)V};
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view yv = tern_view_sub(dy, (size_t)(t0 * D) * 4, (size_t)(tn * D) * 4);
		struct tern_view iv = tern_view_sub(ids, (size_t)t0 * 4, (size_t)tn * 4);
		p.T = (uint32_t)tn;
		p.dy_off = place_words(vk, &yv);
		p.ids_off = place_words(vk, &iv);
		for (int64_t r0 = 0; r0 < V; r0 += rows) {
			int64_t rn = V - r0 < rows ? V - r0 : rows;
			struct tern_view ev = tern_view_sub(dE, (size_t)(r0 * D) * 4, (size_t)(rn * D) * 4);
			p.r0 = (uint32_t)r0;
			p.rn = (uint32_t)rn;
			p.e_off = place_words(vk, &ev);
			struct tern_view b[3] = {ev, yv, iv};
			if ((st = tern_vk_dispatch(vk, TERN_PIPE_EMBED_BWD, b, 3, &p, sizeof p, grid256(D), 1,
						   1)))
				return st;
		}
	}
	return TERN_OK;
}
