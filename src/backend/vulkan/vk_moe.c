/* The Vulkan wrappers of the mixture-of-experts row ops (contracts in backend.h): gather_rows,
 * scatter_add_rows, rowdot. The front doors (src/backend/ops.c) checked the arguments; each
 * wrapper checks the view starts its shader can address, binds the work in chunks so that no
 * binding exceeds maxStorageBufferRange (rows of the output, and rows of the indexed tensor, as
 * embed does), fills the push constants (mirroring the shader's block) and dispatches.
 * Shaders: shaders/{gather_rows,scatter_add_rows,rowdot}.comp. The idx stay on the device: an idx
 * outside the rows makes gather write a NaN row and scatter skip the row. */
#include "backend/vulkan/vk.h"

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

/* Rows of D floats one binding holds; fails when not even one does, or when T rows would not
 * index in 32 bits (the shaders compare idx against T as uint). */
static enum tern_status rows_fit(struct tern_vk *vk, const char *op, int64_t T, int64_t D, int64_t *rows)
{
	*rows = tern_vk_fit(vk, 4 * D);
	if (*rows < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of D=%lld exceeds maxStorageBufferRange", op,
				 (long long)D);
	if (T > INT32_MAX)
		return tern_fail(TERN_E_UNSUPPORTED, "vulkan: %s: %lld rows exceed the i32 idx", op,
				 (long long)T);
	return TERN_OK;
}

/* ---- gather_rows -------------------------------------------------------------------------- */

struct gather_push {
	uint32_t n, D, T;
	uint32_t r0, rn;
	uint32_t y_off, x_off, idx_off;
	uint32_t first;
};

/* y[i] = x[idx[i]] (=): chunks of the rows of y (with their idx), and for each, x in chunks of
 * rows; the first chunk of x writes NaN rows for idx outside [0, Tx). */
enum tern_status tern_vk_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view idx, int64_t n, int64_t Tx, int64_t D)
{
	const char *op = "gather_rows";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t rows;
	if ((st = check_view4(op, "y", y, (size_t)(n * D) * 4)) ||
	    (st = check_view4(op, "x", x, (size_t)(Tx * D) * 4)) ||
	    (st = check_view4(op, "idx", idx, (size_t)n * 4)))
		return st;
	if (n == 0)
		return TERN_OK;
	if ((st = rows_fit(vk, op, Tx, D, &rows)))
		return st;
	struct gather_push p = {.D = (uint32_t)D, .T = (uint32_t)Tx};
	for (int64_t i0 = 0; i0 < n; i0 += rows) {
		int64_t in = n - i0 < rows ? n - i0 : rows;
		struct tern_view yv = tern_view_sub(y, (size_t)(i0 * D) * 4, (size_t)(in * D) * 4);
		struct tern_view iv = tern_view_sub(idx, (size_t)i0 * 4, (size_t)in * 4);
		p.n = (uint32_t)in;
		p.y_off = place_words(vk, &yv);
		p.idx_off = place_words(vk, &iv);
		int64_t r0 = 0;
		do { /* at least once: with Tx = 0 every row is NaN */
			int64_t rn = Tx - r0 < rows ? Tx - r0 : rows;
			struct tern_view xv =
				rn ? tern_view_sub(x, (size_t)(r0 * D) * 4, (size_t)(rn * D) * 4)
				   : (struct tern_view){0};
			p.r0 = (uint32_t)r0;
			p.rn = (uint32_t)rn;
			p.x_off = xv.buf ? place_words(vk, &xv) : 0;
			p.first = r0 == 0;
			struct tern_view b[3] = {yv, xv, iv};
			if ((st = tern_vk_dispatch(vk, TERN_PIPE_GATHER_ROWS, b, 3, &p, sizeof p,
						   grid256(in * D), 1, 1)))
				return st;
			r0 += rn;
		} while (r0 < Tx);
	}
	return TERN_OK;
}

/* ---- scatter_add_rows --------------------------------------------------------------------- */

struct scatter_push {
	uint32_t n, D, T;
	uint32_t r0, rn;
	uint32_t y_off, x_off, idx_off, w_off;
};

/* The combine's pipeline: with weights, or unit weights (no multiply, w unbound). */
static enum tern_vk_pipe pick_scatter(bool unit)
{
	return unit ? TERN_PIPE_SCATTER_ADD_ROWS_UNIT : TERN_PIPE_SCATTER_ADD_ROWS;
}

/* y[idx[i]] += w[i] x[i] (+=), w.size == 0: unit weights (the UNIT variant). Chunks of the rows
 * of x (with their idx and w), and for each, y in chunks of rows. */
enum tern_status tern_vk_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					  struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					  int64_t D)
{
	const char *op = "scatter_add_rows";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t rows;
	bool unit = w.size == 0;
	if ((st = check_view4(op, "y", y, (size_t)(Ty * D) * 4)) ||
	    (st = check_view4(op, "x", x, (size_t)(n * D) * 4)) ||
	    (st = check_view4(op, "idx", idx, (size_t)n * 4)) ||
	    (!unit && (st = check_view4(op, "w", w, (size_t)n * 4))))
		return st;
	if (n == 0 || Ty == 0) /* Ty = 0: every idx is out of range, every row skipped */
		return TERN_OK;
	if ((st = rows_fit(vk, op, Ty, D, &rows)))
		return st;
	enum tern_vk_pipe pipe = pick_scatter(unit);
	struct scatter_push p = {.D = (uint32_t)D, .T = (uint32_t)Ty};
	for (int64_t i0 = 0; i0 < n; i0 += rows) {
		int64_t in = n - i0 < rows ? n - i0 : rows;
		struct tern_view xv = tern_view_sub(x, (size_t)(i0 * D) * 4, (size_t)(in * D) * 4);
		struct tern_view iv = tern_view_sub(idx, (size_t)i0 * 4, (size_t)in * 4);
		struct tern_view wv =
			unit ? (struct tern_view){0} : tern_view_sub(w, (size_t)i0 * 4, (size_t)in * 4);
		p.n = (uint32_t)in;
		p.x_off = place_words(vk, &xv);
		p.idx_off = place_words(vk, &iv);
		p.w_off = unit ? 0 : place_words(vk, &wv);
		for (int64_t r0 = 0; r0 < Ty; r0 += rows) {
			int64_t rn = Ty - r0 < rows ? Ty - r0 : rows;
			struct tern_view yv = tern_view_sub(y, (size_t)(r0 * D) * 4, (size_t)(rn * D) * 4);
			p.r0 = (uint32_t)r0;
			p.rn = (uint32_t)rn;
			p.y_off = place_words(vk, &yv);
			struct tern_view b[4] = {yv, xv, iv, wv};
			if ((st = tern_vk_dispatch(vk, pipe, b, 4, &p, sizeof p, grid256(in * D), 1, 1)))
				return st;
		}
	}
	return TERN_OK;
}

/* ---- rowdot ------------------------------------------------------------------------------- */

struct rowdot_push {
	uint32_t n, D;
	uint32_t o_off, a_off, b_off;
};

/* rowdot_simple (a row per invocation, 8 rows per workgroup) on a CPU-type device
 * (tern_vk_simple), else the tree-sum one (a row per workgroup); *per: rows per workgroup. */
static enum tern_status pick_rowdot(struct tern_vk *vk, enum tern_vk_pipe *pipe, int64_t *per)
{
	bool simple = false;
	enum tern_status st = tern_vk_simple(vk, &simple);
	*pipe = simple ? TERN_PIPE_ROWDOT_SIMPLE : TERN_PIPE_ROWDOT;
	*per = simple ? 8 : 1;
	return st;
}

/* out[i] = Σ_j a[i, j] b[i, j] (=): rowdot_simple (a row per invocation, 8 per workgroup) on a
 * CPU-type device (tern_vk_simple), else a row per workgroup with a tree sum; chunks of rows. */
enum tern_status tern_vk_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				struct tern_view b, int64_t n, int64_t D)
{
	const char *op = "rowdot";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t rows;
	if ((st = check_view4(op, "out", out, (size_t)n * 4)) ||
	    (st = check_view4(op, "a", a, (size_t)(n * D) * 4)) ||
	    (st = check_view4(op, "b", b, (size_t)(n * D) * 4)))
		return st;
	if (n == 0)
		return TERN_OK;
	if ((st = rows_fit(vk, op, 0, D, &rows)))
		return st;
	enum tern_vk_pipe pipe;
	int64_t per;
	if ((st = pick_rowdot(vk, &pipe, &per)))
		return st;
	struct rowdot_push p = {.D = (uint32_t)D};
	for (int64_t i0 = 0; i0 < n; i0 += rows) {
		int64_t in = n - i0 < rows ? n - i0 : rows;
		struct tern_view ov = tern_view_sub(out, (size_t)i0 * 4, (size_t)in * 4);
		struct tern_view av = tern_view_sub(a, (size_t)(i0 * D) * 4, (size_t)(in * D) * 4);
		struct tern_view bv = tern_view_sub(b, (size_t)(i0 * D) * 4, (size_t)(in * D) * 4);
		p.n = (uint32_t)in;
		p.o_off = place_words(vk, &ov);
		p.a_off = place_words(vk, &av);
		p.b_off = place_words(vk, &bv);
		struct tern_view bind[3] = {ov, av, bv};
		uint32_t groups = tern_vk_grid(in, per, per > 1 ? 4096 : 65535);
		if ((st = tern_vk_dispatch(vk, pipe, bind, 3, &p, sizeof p, groups, 1, 1)))
			return st;
	}
	return TERN_OK;
}

/* ---- the router --------------------------------------------------------------------------- */

struct route_push {
	uint32_t T, E, k, norm, acc;
	uint32_t s_off, w_off, p_off, c_off, l_off, d_off;
};

/* Chunks of tokens whose [tc, E] rows fit one binding. */
static enum tern_status route_chunk(struct tern_vk *vk, const char *op, int64_t E, int64_t *tc)
{
	*tc = tern_vk_fit(vk, 4 * E);
	if (*tc < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one row of E=%lld exceeds maxStorageBufferRange", op,
				 (long long)E);
	return TERN_OK;
}

/* shaders/route.comp: per chunk of tokens, the top-k pass (an invocation per token), then the
 * count pass over that chunk's sel (an invocation per expert; = for the first chunk, += after). */
enum tern_status tern_vk_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				    struct tern_view prob, struct tern_view counts, struct tern_view logits,
				    int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t tc;
	if ((st = check_view4(op, "sel", sel, (size_t)(T * k) * 4)) ||
	    (st = check_view4(op, "w", w, (size_t)(T * k) * 4)) ||
	    (st = check_view4(op, "prob", prob, (size_t)(T * E) * 4)) ||
	    (st = check_view4(op, "counts", counts, (size_t)E * 4)) ||
	    (st = check_view4(op, "logits", logits, (size_t)(T * E) * 4)) ||
	    (st = route_chunk(vk, op, E, &tc)))
		return st;
	struct tern_view cv = tern_view_sub(counts, 0, (size_t)E * 4);
	struct route_push p = {.E = (uint32_t)E, .k = (uint32_t)k, .norm = norm};
	p.c_off = place_words(vk, &cv);
	if (T == 0) { /* no tokens: every count is 0 */
		struct tern_view none = {0};
		struct tern_view b[4] = {none, none, none, cv};
		return tern_vk_dispatch(vk, TERN_PIPE_ROUTE_COUNT, b, 4, &p, sizeof p,
					tern_vk_grid(E, 64, 4096), 1, 1);
	}
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view sv = tern_view_sub(sel, (size_t)(t0 * k) * 4, (size_t)(tn * k) * 4);
		struct tern_view wv = tern_view_sub(w, (size_t)(t0 * k) * 4, (size_t)(tn * k) * 4);
		struct tern_view pv = tern_view_sub(prob, (size_t)(t0 * E) * 4, (size_t)(tn * E) * 4);
		struct tern_view lv = tern_view_sub(logits, (size_t)(t0 * E) * 4, (size_t)(tn * E) * 4);
		p.T = (uint32_t)tn;
		p.acc = t0 > 0;
		p.s_off = place_words(vk, &sv);
		p.w_off = place_words(vk, &wv);
		p.p_off = place_words(vk, &pv);
		p.l_off = place_words(vk, &lv);
		struct tern_view b[5] = {sv, wv, pv, cv, lv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ROUTE_TOPK, b, 5, &p, sizeof p,
					   tern_vk_grid(tn, 64, 4096), 1, 1)) ||
		    (st = tern_vk_dispatch(vk, TERN_PIPE_ROUTE_COUNT, b, 5, &p, sizeof p,
					   tern_vk_grid(E, 64, 4096), 1, 1)))
			return st;
	}
	return TERN_OK;
}

/* dlogits (=) per token (shaders/route.comp -DBWD); chunks of tokens; a bad sel is skipped. */
enum tern_status tern_vk_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					struct tern_view dw, struct tern_view prob, struct tern_view sel,
					int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk_bwd";
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st;
	int64_t tc;
	if ((st = check_view4(op, "dlogits", dlogits, (size_t)(T * E) * 4)) ||
	    (st = check_view4(op, "dw", dw, (size_t)(T * k) * 4)) ||
	    (st = check_view4(op, "prob", prob, (size_t)(T * E) * 4)) ||
	    (st = check_view4(op, "sel", sel, (size_t)(T * k) * 4)) || (st = route_chunk(vk, op, E, &tc)))
		return st;
	struct route_push p = {.E = (uint32_t)E, .k = (uint32_t)k, .norm = norm};
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view sv = tern_view_sub(sel, (size_t)(t0 * k) * 4, (size_t)(tn * k) * 4);
		struct tern_view gv = tern_view_sub(dw, (size_t)(t0 * k) * 4, (size_t)(tn * k) * 4);
		struct tern_view pv = tern_view_sub(prob, (size_t)(t0 * E) * 4, (size_t)(tn * E) * 4);
		struct tern_view dv = tern_view_sub(dlogits, (size_t)(t0 * E) * 4, (size_t)(tn * E) * 4);
		struct tern_view none = {0};
		p.T = (uint32_t)tn;
		p.s_off = place_words(vk, &sv);
		p.w_off = place_words(vk, &gv);
		p.p_off = place_words(vk, &pv);
		p.d_off = place_words(vk, &dv);
		struct tern_view b[6] = {sv, gv, pv, none, none, dv};
		if ((st = tern_vk_dispatch(vk, TERN_PIPE_ROUTE_TOPK_BWD, b, 6, &p, sizeof p,
					   tern_vk_grid(tn, 64, 4096), 1, 1)))
			return st;
	}
	return TERN_OK;
}

/* ---- grouped matmul ----------------------------------------------------------------------- */

struct mmg_push {
	uint32_t T, N, K;
	uint32_t y_off, x_off, t0;
	uint32_t E, O, e0, e1, off_off;
	uint32_t I, pos, dstride;
	uint32_t absmax_off, astride, nested_off, nstride, dmap_off, blocksize;
	uint32_t eoff_off;
	float scale;
	uint32_t accumulate;
};

/* The grouped pipelines by weight dtype ([0] forward, [1] backward); ternary has none (the front
 * door refuses it). */
static enum tern_vk_pipe pick_grouped(bool bwd, enum tern_dtype dt)
{
	static const enum tern_vk_pipe p[2][TERN_DTYPE_COUNT] = {
		{[TERN_F32] = TERN_PIPE_MATMUL_GROUPED_F32,
		 [TERN_F16] = TERN_PIPE_MATMUL_GROUPED_F16,
		 [TERN_BF16] = TERN_PIPE_MATMUL_GROUPED_BF16,
		 [TERN_NF4] = TERN_PIPE_MATMUL_GROUPED_NF4,
		 [TERN_NF4_DQ] = TERN_PIPE_MATMUL_GROUPED_NF4_DQ,
		 [TERN_TERNARY] = TERN_PIPE_COUNT},
		{[TERN_F32] = TERN_PIPE_MATMUL_GROUPED_BWD_F32,
		 [TERN_F16] = TERN_PIPE_MATMUL_GROUPED_BWD_F16,
		 [TERN_BF16] = TERN_PIPE_MATMUL_GROUPED_BWD_BF16,
		 [TERN_NF4] = TERN_PIPE_MATMUL_GROUPED_BWD_NF4,
		 [TERN_NF4_DQ] = TERN_PIPE_MATMUL_GROUPED_BWD_NF4_DQ,
		 [TERN_TERNARY] = TERN_PIPE_COUNT},
	};
	return p[bwd][dt];
}

/* The experts a binding of part v (stride bytes apart, expert e0 first) holds: n experts span
 * (n - 1)·stride + v.size bytes, kept inside one binding and, for the nibble and word indices of
 * the shader, inside 2^30 bytes. */
static int64_t experts_fit(struct tern_vk *vk, struct tern_view v, uint64_t stride, int64_t E)
{
	if (!v.buf || !stride)
		return E;
	int64_t room = tern_vk_fit(vk, 1);
	room = room < (INT64_C(1) << 30) ? room : (INT64_C(1) << 30);
	if ((int64_t)v.size + 4 > room)
		return 0;
	int64_t n = 1 + (room - (int64_t)v.size - 4) / (int64_t)stride;
	return n < E ? n : E;
}

/* Part v of experts e0 .. e0 + n - 1 as one binding from an aligned start; *first = the word of
 * expert e0's part inside it (v's offset is a multiple of 4). */
static struct tern_view experts_span(struct tern_vk *vk, struct tern_view v, uint64_t stride, int64_t e0,
				     int64_t n, uint32_t *first)
{
	if (!v.buf) {
		*first = 0;
		return v;
	}
	struct tern_view s = {v.buf, v.off + (size_t)((uint64_t)e0 * stride),
			      (size_t)((uint64_t)(n - 1) * stride) + v.size};
	*first = tern_vk_place(vk, &s) / 4;
	return s;
}

/* shaders/matmul_grouped.comp: one dispatch for all experts where their parts fit one binding
 * each; else chunks of whole experts (and, past a binding, chunks of token rows), each dispatch
 * computing only the rows of its experts. */
static enum tern_status mmg_run(struct tern_vk *vk, bool bwd, struct tern_view out, struct tern_view in,
				const struct tern_experts *xp, struct tern_view off, int64_t T,
				bool accumulate)
{
	const char *op = bwd ? "matmul_grouped_bwd" : "matmul_grouped";
	const struct tern_weight *w = &xp->w;
	enum tern_status st;
	int64_t E = xp->E, O = w->O, I = w->I;
	int64_t out_c = bwd ? I : O, in_c = bwd ? O : I;
	if (w->data.off % 4 || (w->absmax.buf && w->absmax.off % 4) || (w->nested.buf && w->nested.off % 4))
		return tern_fail(TERN_E_INVALID,
				 "vulkan: %s: weight views must start at a multiple of 4 bytes", op);
	if ((st = check_view4(op, bwd ? "dx" : "y", out, (size_t)(T * out_c) * 4)) ||
	    (st = check_view4(op, bwd ? "dy" : "x", in, (size_t)(T * in_c) * 4)) ||
	    (st = check_view4(op, "off", off, (size_t)(E + 1) * 4)))
		return st;
	bool dq = w->dtype == TERN_NF4_DQ;
	if (dq && (st = check_view4(op, "offsets", xp->offsets, (size_t)E * 4)))
		return st;
	if (T == 0)
		return TERN_OK;
	int64_t per = experts_fit(vk, w->data, xp->stride[0], E),
		pa = experts_fit(vk, w->absmax, xp->stride[1], E),
		pn = experts_fit(vk, w->nested, xp->stride[2], E), tc = tern_vk_fit(vk, 4 * (O > I ? O : I));
	per = pa < per ? pa : per;
	per = pn < per ? pn : per;
	if (per < 1 || tc < 1)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: one expert's W [%lld, %lld] exceeds maxStorageBufferRange", op,
				 (long long)O, (long long)I);
	/* the data stride in the shader's units: floats, halves, nibbles */
	uint64_t du = w->dtype == TERN_F32                            ? xp->stride[0] / 4
		      : w->dtype == TERN_F16 || w->dtype == TERN_BF16 ? xp->stride[0] / 2
								      : xp->stride[0] * 2;
	struct tern_view dmap = {vk->consts, 0, 256 * 4};
	struct tern_view ov = tern_view_sub(off, 0, (size_t)(E + 1) * 4);
	struct tern_view eo = dq ? tern_view_sub(xp->offsets, 0, (size_t)E * 4) : (struct tern_view){0};
	struct mmg_push p = {
		.N = (uint32_t)out_c,
		.K = (uint32_t)in_c,
		.E = (uint32_t)E,
		.O = (uint32_t)O,
		.I = (uint32_t)I,
		.dstride = (uint32_t)du,
		.astride = (uint32_t)(xp->stride[1] / 4),
		.nstride = (uint32_t)(xp->stride[2] / 4),
		.blocksize = (uint32_t)w->blocksize,
		.scale = w->scale,
		.accumulate = accumulate,
	};
	p.dmap_off = tern_vk_place(vk, &dmap) / 4;
	p.off_off = place_words(vk, &ov);
	p.eoff_off = dq ? place_words(vk, &eo) : 0;
	enum tern_vk_pipe pipe = pick_grouped(bwd, w->dtype);
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		struct tern_view y = tern_view_sub(out, (size_t)(t0 * out_c) * 4, (size_t)(tn * out_c) * 4);
		struct tern_view x = tern_view_sub(in, (size_t)(t0 * in_c) * 4, (size_t)(tn * in_c) * 4);
		p.T = (uint32_t)tn;
		p.t0 = (uint32_t)t0;
		p.y_off = place_words(vk, &y);
		p.x_off = place_words(vk, &x);
		for (int64_t e0 = 0; e0 < E; e0 += per) {
			int64_t en = E - e0 < per ? E - e0 : per;
			uint32_t dw;
			struct tern_view wd = experts_span(vk, w->data, xp->stride[0], e0, en, &dw);
			struct tern_view ab =
				experts_span(vk, w->absmax, xp->stride[1], e0, en, &p.absmax_off);
			struct tern_view ne =
				experts_span(vk, w->nested, xp->stride[2], e0, en, &p.nested_off);
			/* pos: expert e0's first element inside the data binding, in the shader's units */
			p.pos = w->dtype == TERN_F32                            ? dw
				: w->dtype == TERN_F16 || w->dtype == TERN_BF16 ? 2 * dw
										: 8 * dw;
			p.e0 = (uint32_t)e0;
			p.e1 = (uint32_t)(e0 + en);
			struct tern_view b[8] = {y, x, wd, ab, ne, dmap, ov, eo};
			if ((st = tern_vk_dispatch(vk, pipe, b, 8, &p, sizeof p,
						   tern_vk_grid(tn * out_c, 64, 65535), 1, 1)))
				return st;
		}
	}
	return TERN_OK;
}

enum tern_status tern_vk_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					const struct tern_experts *x, struct tern_view off, int64_t T,
					enum tern_dtype prec)
{
	(void)prec; /* F32: the front door */
	return mmg_run(tern_vk_of(be), false, y, in, x, off, T, false);
}

enum tern_status tern_vk_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					    const struct tern_experts *x, struct tern_view off, int64_t T,
					    bool accumulate, enum tern_dtype prec)
{
	(void)prec;
	return mmg_run(tern_vk_of(be), true, dx, dy, x, off, T, accumulate);
}
