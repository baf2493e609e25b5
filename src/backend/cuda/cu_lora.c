/* The LoRA linear's base products with its two rank-R updates inside them (backend.h
 * matmul_lora, matmul_lora_bwd) on cuBLAS, bf16 operands, fp32 accumulation.
 *
 * The composition (src/backend/lora.c) adds s·u Bᵀ into y [T,O] and du A into dx [T,I] with two
 * gemms of rank R, each reading and writing the whole fp32 output once more: memory-bound passes
 * that cost as much as the big products' own output. Here the reduction is extended instead:
 *
 *   forward   yᵀ (O×T) = [W | B] (O×K') · [x | s·u]ᵀ (K'×T)       K' = I + R'
 *   backward  dxᵀ (I×T) (+)= [W ; A]ᵀ (I×K') · [dy | du]ᵀ (K'×T)    K' = O + R'
 *
 * with R' = R padded so that K' is a multiple of 8 (16-byte rows for the tensor cores; the pad is
 * zero in both operands). The pieces are cu_mm.c's decode-then-GEMM ones: the weight decoded to
 * bf16 into the scratch (forward: rows of W with ld K', B's row appended after each; backward:
 * windows of W's columns, A's columns of the window appended as R' more rows), the activation
 * rounded to bf16 once per chunk of tokens with the low-rank block after each row (k_lora.cu
 * cuk_lora_pack, which writes the decoded window's appendix too), one GEMM per chunk. Only
 * decoded weights take this path: a bf16 weight at bf16 is cu_mm.c's operand in place, with no
 * window to extend (lora_fuses says no and lora.c composes). TERN_CUDA_LORA_FUSE=0 turns the
 * path off (before/after timings); TERN_CUDA_DECODE_BYTES / TERN_CUDA_OPERAND_BYTES lower the
 * chunks as for matmul.
 *
 * A decode of the next window on a second stream during each GEMM was tried (12-06, H100) and
 * made the 8B step 0.915x: the decode took SMs from the GEMM. It was removed. */
#include "backend/cuda/cu.h"
#include "backend/cuda/cu_gemv.h"
#include "backend/cuda/cu_more.h"

#include <stdlib.h>
#include <string.h>

/* TERN_CUDA_LORA_FUSE=0: never (read once) */
static bool fuse_on(void)
{
	static int on = -1;
	if (on < 0) {
		const char *e = getenv("TERN_CUDA_LORA_FUSE");
		on = !(e && !strcmp(e, "0"));
	}
	return on;
}

bool tern_cu_lora_fuses(struct tern_backend *be, const struct tern_weight *w, int64_t R, int64_t T,
			enum tern_dtype prec)
{
	(void)be;
	/* a few tokens: the plain matmul's small-T kernels read W in its stored format once, where
	 * the extended product writes and reads a decoded bf16 window (decoding with an adapter) */
	return fuse_on() && prec == TERN_BF16 && w->dtype != TERN_BF16 && R >= 1 && !tern_cu_gemv_takes(T);
}

/* K + R rounded up to a multiple of 8: the extended reduction */
static int64_t ext8(int64_t K, int64_t R) { return (K + R + 7) & ~(int64_t)7; }

static int64_t clamp64(int64_t v, int64_t lo, int64_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* The scratch: the decoded window (wbytes, rounded to 256 so that the operand is aligned), then
 * the bf16 activation rows of one chunk of tokens. */
static enum tern_status lora_scratch(struct cu_backend *c, size_t wbytes, size_t obytes, void **wscr,
				     void **oscr)
{
	wbytes = (wbytes + 255) & ~(size_t)255;
	void *scr;
	enum tern_status st = tern_cu_scratch(c, wbytes + obytes, &scr);
	if (st)
		return st;
	*wscr = scr;
	*oscr = (char *)scr + wbytes;
	return TERN_OK;
}

/* Rows of [W | B] per forward window, for a decode budget of dec bytes */
static int64_t fwd_rows(size_t dec, int64_t Kp, int64_t O)
{
	return tern_cu_split(O, clamp64((int64_t)(dec / ((size_t)Kp * 2)), 1, O), 64);
}

/* Columns of [W ; A] per backward window: windows start at multiples of 8 (the eight-weight
 * decode), as matmul_bwd's */
static int64_t bwd_cols(size_t dec, int64_t Kp, int64_t I)
{
	int64_t n = (int64_t)(dec / ((size_t)Kp * 2));
	if (n < I)
		n &= ~(int64_t)7;
	int64_t wn = n < 8 ? 8 : tern_cu_split(I, n, 64);
	return wn > I ? I : wn;
}

/* [W | B] rows [o0, o0 + on) into wscr [on, Kp] on stream s: W decoded to bf16, then B's R
 * columns, then 0 */
static enum tern_status fwd_window(cudaStream_t s, const struct cuk_weight *kw, const float *B, int64_t R,
				   int64_t Kp, void *wscr, int64_t o0, int64_t on)
{
	int64_t I = kw->I;
	enum tern_status st =
		tern_cu_check(cuk_decode_window_ld(s, wscr, TERN_BF16, kw, o0, on, 0, I, Kp), "decode");
	if (st)
		return st;
	return tern_cu_check(cuk_lora_pack(s, (uint16_t *)wscr + I, Kp, on, Kp - I, NULL, 0, 0, B + o0 * R, R,
					   R, on, 1.0f),
			     "lora pack");
}

/* [W ; A] columns [i0, i0 + in) into wscr [Kp, in] on stream s: W's O rows decoded to bf16, then
 * A's R rows, then zero rows */
static enum tern_status bwd_window(cudaStream_t s, const struct cuk_weight *kw, const float *A, int64_t R,
				   int64_t Kp, void *wscr, int64_t i0, int64_t in)
{
	int64_t O = kw->O, I = kw->I;
	enum tern_status st =
		tern_cu_check(cuk_decode_window(s, wscr, TERN_BF16, kw, 0, O, i0, in), "decode");
	if (st)
		return st;
	return tern_cu_check(cuk_lora_pack(s, (uint16_t *)wscr + O * in, in, Kp - O, in, NULL, 0, 0, A + i0,
					   I, in, R, 1.0f),
			     "lora pack");
}

/* One side of the fused product: forward y = [x | s·u] · [W | B]ᵀ in windows of W's rows,
 * backward dx (+)= [dy | du] · [W ; A] in windows of W's columns. */
struct lora_side {
	bool bwd;
	const float *act, *low, *ab; /* x or dy [T, K]; u or du [T, R]; B [O, R] or A [R, I] */
	int64_t K, R, Kp, all;       /* the activation's width (I or O), the rank, K' and O or I */
	float alpha;                 /* the low-rank block's scale: s forward, 1 backward */
	float *out;                  /* y [T, O] or dx [T, I] */
	const float *beta;           /* 0, or 1 for a backward that accumulates */
};

/* Window [w0, w0 + n) of [W | B] (forward) or [W ; A] (backward) into buf on stream s */
static enum tern_status fill_window(cudaStream_t s, const struct cuk_weight *kw, const struct lora_side *p,
				    void *buf, int64_t w0, int64_t n)
{
	return p->bwd ? bwd_window(s, kw, p->ab, p->R, p->Kp, buf, w0, n)
		      : fwd_window(s, kw, p->ab, p->R, p->Kp, buf, w0, n);
}

/* [act | alpha·low] rows [t0, t0 + tn) into oscr [tn, Kp] */
static enum tern_status pack_tokens(struct cu_backend *c, const struct lora_side *p, void *oscr, int64_t t0,
				    int64_t tn)
{
	return tern_cu_check(cuk_lora_pack(tern_cu_stream(c), oscr, p->Kp, tn, p->Kp, p->act + t0 * p->K,
					   p->K, p->K, p->low + t0 * p->R, p->R, p->R, tn, p->alpha),
			     "lora pack");
}

/* forward  yᵀ[w0.., t0..] (n×tn) = [W | B] rows (n×Kp) · [x | s·u]ᵀ (Kp×tn);
 * backward dxᵀ[w0.., t0..] (n×tn) (+)= [W ; A][:, w0..]ᵀ (n×Kp) · [dy | du]ᵀ (Kp×tn) */
static enum tern_status window_gemm(struct cu_backend *c, const char *op, const struct lora_side *p,
				    const void *buf, const void *oscr, int64_t w0, int64_t n, int64_t t0,
				    int64_t tn)
{
	const float one = 1.0f;
	return tern_cu_gemm_ex(c, op, !p->bwd, false, n, tn, p->Kp, &one, buf, p->bwd ? n : p->Kp, oscr,
			       p->Kp, p->beta, p->out + t0 * p->all + w0, p->all, CUDA_R_16BF, false);
}

/* Windows of wn rows (forward) or columns (backward) for a decode budget of dec bytes */
static int64_t window_span(const struct lora_side *p, size_t dec)
{
	return p->bwd ? bwd_cols(dec, p->Kp, p->all) : fwd_rows(dec, p->Kp, p->all);
}

/* The whole product of one side: the windows decoded once when they fit the budget, else per
 * chunk of tokens. */
static enum tern_status lora_product(struct cu_backend *c, const char *op, const struct cuk_weight *kw,
				     const struct lora_side *p, int64_t T)
{
	int64_t Kp = p->Kp, all = p->all;
	size_t dec, opd;
	tern_cu_mm_budget(&dec, &opd);
	int64_t wn = window_span(p, dec);
	int64_t toks = tern_cu_split(T, clamp64((int64_t)(opd / ((size_t)Kp * 2)), 1, T), 128);
	bool once = wn >= all;
	void *wscr, *oscr;
	enum tern_status st = lora_scratch(c, (size_t)(wn * Kp) * 2, (size_t)(toks * Kp) * 2, &wscr, &oscr);
	if (st)
		return st;
	if (once && (st = fill_window(tern_cu_stream(c), kw, p, wscr, 0, all)))
		return st;
	for (int64_t t0 = 0; t0 < T; t0 += toks) {
		int64_t tn = T - t0 < toks ? T - t0 : toks;
		if ((st = pack_tokens(c, p, oscr, t0, tn)))
			return st;
		for (int64_t w0 = 0; w0 < all; w0 += wn) {
			int64_t n = all - w0 < wn ? all - w0 : wn;
			if ((!once && (st = fill_window(tern_cu_stream(c), kw, p, wscr, w0, n))) ||
			    (st = window_gemm(c, op, p, wscr, oscr, w0, n, t0, tn)))
				return st;
		}
	}
	return TERN_OK;
}

enum tern_status tern_cu_matmul_lora(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view u, struct tern_view B, const struct tern_weight *w,
				     int64_t R, float scale, int64_t T, enum tern_dtype prec)
{
	const char *op = "matmul_lora";
	struct cu_backend *c = cu_be(be);
	struct cuk_weight kw;
	enum tern_status st;
	int64_t O = w->O, I = w->I;
	long long lT = (long long)T, lO = (long long)O, lI = (long long)I, lR = (long long)R;
	float *yp, *xp, *up, *bp;
	(void)prec; /* BF16: lora_fuses accepts nothing else */
	if ((st = tern_cu_weight_open(op, w, &kw)) ||
	    (st = tern_cu_view(op, "y", y, (size_t)(T * O) * 4, 4, (void **)&yp, "T=%lld O=%lld f32", lT,
			       lO)) ||
	    (st = tern_cu_view(op, "x", x, (size_t)(T * I) * 4, 4, (void **)&xp, "T=%lld I=%lld f32", lT,
			       lI)) ||
	    (st = tern_cu_view(op, "u", u, (size_t)(T * R) * 4, 4, (void **)&up, "T=%lld R=%lld f32", lT,
			       lR)) ||
	    (st = tern_cu_view(op, "B", B, (size_t)(O * R) * 4, 4, (void **)&bp, "O=%lld R=%lld f32", lO,
			       lR)))
		return st;
	if (T == 0)
		return TERN_OK;
	const float zero = 0.0f;
	struct lora_side p = {.bwd = false,
			      .act = xp,
			      .low = up,
			      .ab = bp,
			      .K = I,
			      .R = R,
			      .Kp = ext8(I, R),
			      .all = O,
			      .alpha = scale,
			      .out = yp,
			      .beta = &zero};
	return lora_product(c, op, &kw, &p, T);
}

enum tern_status tern_cu_matmul_lora_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					 struct tern_view du, struct tern_view A, const struct tern_weight *w,
					 int64_t R, int64_t T, bool accumulate, enum tern_dtype prec)
{
	const char *op = "matmul_lora_bwd";
	struct cu_backend *c = cu_be(be);
	struct cuk_weight kw;
	enum tern_status st;
	int64_t O = w->O, I = w->I;
	long long lT = (long long)T, lO = (long long)O, lI = (long long)I, lR = (long long)R;
	float *dxp, *dyp, *dup, *ap;
	(void)prec; /* BF16: lora_fuses accepts nothing else */
	if ((st = tern_cu_weight_open(op, w, &kw)) ||
	    (st = tern_cu_view(op, "dx", dx, (size_t)(T * I) * 4, 4, (void **)&dxp, "T=%lld I=%lld f32", lT,
			       lI)) ||
	    (st = tern_cu_view(op, "dy", dy, (size_t)(T * O) * 4, 4, (void **)&dyp, "T=%lld O=%lld f32", lT,
			       lO)) ||
	    (st = tern_cu_view(op, "du", du, (size_t)(T * R) * 4, 4, (void **)&dup, "T=%lld R=%lld f32", lT,
			       lR)) ||
	    (st = tern_cu_view(op, "A", A, (size_t)(R * I) * 4, 4, (void **)&ap, "R=%lld I=%lld f32", lR,
			       lI)))
		return st;
	if (T == 0)
		return TERN_OK;
	const float zero = 0.0f, one = 1.0f;
	struct lora_side p = {.bwd = true,
			      .act = dyp,
			      .low = dup,
			      .ab = ap,
			      .K = O,
			      .R = R,
			      .Kp = ext8(O, R),
			      .all = I,
			      .alpha = 1.0f,
			      .out = dxp,
			      .beta = accumulate ? &one : &zero};
	return lora_product(c, op, &kw, &p, T);
}
