/* The products of the CUDA backend through cuBLAS (fp32 accumulation): matmul / matmul_bwd on
 * every weight format, gemm (the fp32 LoRA products) and the fused lm_head + cross-entropy.
 *
 * Row-major on a column-major library: a row-major [R, C] matrix is the column-major C×R matrix
 * of its transpose, so y[T,O] = x[T,I] · W[O,I]ᵀ is the column-major yᵀ (O×T) = W (O×I) · xᵀ,
 * i.e. gemm(opA = T on W stored I×O, opB = N on xᵀ), and so on for each product below.
 *
 * The dequant-matmul, first version (decode-then-GEMM): the weight is decoded by one kernel per
 * format (k_quant.cu) into the shared scratch in the precision of the product (f32, f16, bf16;
 * in row chunks of at most CU_DECODE_BYTES), then one cuBLAS GEMM per chunk multiplies it.
 * A weight already in the product's dtype (f32 at F32, f16 at F16, bf16 at BF16) is used in
 * place. At F16 the activation operand is scaled by the power of two of backend.h and rounded
 * (cuk_prec_operand) and the GEMM's alpha is 1/s, read from device memory. A fused kernel that
 * decodes a tile into shared memory and feeds the tensor cores directly would replace mm_step's
 * decode + GEMM pair; struct mm_plan is where it would be chosen per shape. */
#include "backend/cuda/cu.h"
#include "backend/cuda/cu_gemv.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

static cudaDataType cuda_type(enum tern_dtype dt)
{
	return dt == TERN_F16 ? CUDA_R_16F : dt == TERN_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static size_t esize(enum tern_dtype dt) { return dt == TERN_F32 ? 4 : 2; }

/* C (col-major m×n, ldc) = alpha · op(A) · op(B) + beta · C; A, B of type ab, C fp32, fp32
 * accumulation. alpha/beta are host floats, or device pointers when dev. */
static enum tern_status gemm_ex(struct cu_backend *c, const char *op, bool ta, bool tb, int64_t m, int64_t n,
				int64_t k, const void *alpha, const void *A, int64_t lda, const void *B,
				int64_t ldb, const void *beta, float *C, int64_t ldc, cudaDataType ab,
				bool dev)
{
	enum tern_status st = tern_cu_check_blas(
		cublasSetPointerMode(c->blas, dev ? CUBLAS_POINTER_MODE_DEVICE : CUBLAS_POINTER_MODE_HOST),
		op);
	if (st)
		return st;
	tern_cu_stream(c); /* counts as queued work for mark() */
	return tern_cu_check_blas(cublasGemmEx_64(c->blas, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
						  tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, alpha, A, ab, lda,
						  B, ab, ldb, beta, C, CUDA_R_32F, ldc, CUBLAS_COMPUTE_32F,
						  CUBLAS_GEMM_DEFAULT),
				  op);
}

/* ---- the weight on the device ---- */

static enum tern_status weight_open(const char *op, const struct tern_weight *w, struct cuk_weight *kw)
{
	enum tern_status st;
	const char *dn = tern_dtype_name(w->dtype);
	long long O = (long long)w->O, I = (long long)w->I;
	size_t align = w->dtype == TERN_F32 || w->dtype == TERN_TERNARY ? 4
		       : tern_dtype_size(w->dtype)                      ? 2
									: 1;
	void *data, *absmax = NULL, *nested = NULL;
	if ((st = tern_cu_view(op, "W data", w->data, tern_weight_data_bytes(w->dtype, w->O, w->I), align,
			       &data, "O=%lld I=%lld %s", O, I, dn)))
		return st;
	if (w->dtype == TERN_NF4 || w->dtype == TERN_NF4_DQ) {
		int64_t nb = tern_nf4_blocks(w->O * w->I, w->blocksize);
		bool dq = w->dtype == TERN_NF4_DQ;
		if ((st = tern_cu_view(op, "W absmax", w->absmax, (size_t)nb * (dq ? 1 : 4), dq ? 1 : 4,
				       &absmax, "O=%lld I=%lld %s bs=%d", O, I, dn, w->blocksize)))
			return st;
		if (dq && (st = tern_cu_view(op, "W nested absmax", w->nested,
					     (size_t)tern_cdiv(nb, TERN_NF4_NESTED_BLOCK) * 4, 4, &nested,
					     "O=%lld I=%lld %s bs=%d", O, I, dn, w->blocksize)))
			return st;
	}
	*kw = (struct cuk_weight){
		.dtype = (int)w->dtype,
		.O = w->O,
		.I = w->I,
		.data = data,
		.absmax = absmax,
		.nested = nested,
		.blocksize = w->blocksize,
		.offset = w->offset,
		.scale = w->scale,
	};
	return TERN_OK;
}

/* ---- matmul / matmul_bwd ---- */

/* How one product runs: the operands' dtype, whether W is used in place, and the chunks. The
 * forward takes W in chunks of rows (y's columns: each GEMM has the whole reduction), the
 * backward in chunks of columns (dx's columns, again the whole reduction over O: no chunk adds
 * into dx after another). The activation operand is rounded once per chunk of tokens; W is
 * decoded once when it fits the scratch, else once per chunk of tokens and W. */
struct mm_plan {
	enum tern_dtype prec;
	cudaDataType ab;
	bool direct;   /* W's storage is the operand (no decode) */
	int64_t wn;    /* rows (forward) or columns (backward) of W per step */
	int64_t toks;  /* tokens of the activation operand per step (all when prec is F32) */
	size_t wbytes; /* scratch: decoded W */
	size_t obytes; /* scratch: the half-precision activation rows */
};

/* def, or the environment's var when it is a smaller positive number of bytes (read once) */
static size_t bytes_env(const char *var, size_t def, long long *cache)
{
	if (*cache < 0) {
		const char *e = getenv(var);
		long long v = e ? strtoll(e, NULL, 10) : 0;
		*cache = v > 0 && (size_t)v < def ? v : (long long)def;
	}
	return (size_t)*cache;
}

/* W [O, I]; the activation operand has K columns (I forward, O backward) and T rows. */
static struct mm_plan mm_plan_of(const struct tern_weight *w, enum tern_dtype prec, int64_t T, int64_t K,
				 bool bwd)
{
	struct mm_plan p = {.prec = prec, .ab = cuda_type(prec)};
	p.direct = (int)w->dtype == (int)prec; /* F32/F16/BF16 only match themselves */
	size_t es = esize(prec);
	int64_t all = bwd ? w->I : w->O, other = bwd ? w->O : w->I;
	static long long dec = -1, opd = -1;
	int64_t n =
		(int64_t)(bytes_env("TERN_CUDA_DECODE_BYTES", CU_DECODE_BYTES, &dec) / ((size_t)other * es));
	if (bwd && n < all) /* column windows start at multiples of 8 (the eight-weight decode) */
		n &= ~(int64_t)7;
	p.wn = p.direct ? all : n < (bwd ? 8 : 1) ? (bwd ? 8 : 1) : tern_cu_split(all, n, 64);
	p.wbytes = p.direct ? 0 : (size_t)(p.wn * other) * es;
	int64_t toks =
		(int64_t)(bytes_env("TERN_CUDA_OPERAND_BYTES", CU_OPERAND_BYTES, &opd) / ((size_t)K * 2));
	p.toks = prec == TERN_F32 ? T : toks < 1 ? 1 : tern_cu_split(T, toks, 128);
	p.obytes = prec == TERN_F32 ? 0 : (size_t)(p.toks * K) * 2;
	return p;
}

/* Rows [o0, o0 + on) (forward) or columns [i0, i0 + in) (backward) of W as the operand: in place
 * (the whole W: a direct plan has one part), or decoded into wscr. */
static enum tern_status mm_weight_part(struct cu_backend *c, const struct mm_plan *p,
				       const struct cuk_weight *kw, void *wscr, bool bwd, int64_t k0,
				       int64_t kn, const void **out)
{
	if (p->direct) {
		*out = kw->data;
		return TERN_OK;
	}
	*out = wscr;
	cudaStream_t s = tern_cu_stream(c);
	return tern_cu_check(bwd ? cuk_decode_window(s, wscr, (int)p->prec, kw, 0, kw->O, k0, kn)
				 : cuk_decode(s, wscr, (int)p->prec, kw, k0, kn),
			     "decode");
}

/* Rows [o0, o0 + on) of W (the loss's chunks of the vocabulary), in place or decoded. */
static enum tern_status mm_weight_rows(struct cu_backend *c, const struct mm_plan *p,
				       const struct cuk_weight *kw, void *wscr, int64_t o0, int64_t on,
				       const void **out)
{
	enum tern_status st = mm_weight_part(c, p, kw, wscr, false, o0, on, out);
	if (st == TERN_OK && p->direct)
		*out = (const char *)*out + (size_t)(o0 * kw->I) * esize(p->prec);
	return st;
}

/* The activation operand: rows [t0, t0 + tn) of a [T, K] fp32 tensor, in place (F32) or scaled
 * and rounded into oscr (the inverse scale into consts[0]). */
static enum tern_status mm_act_rows(struct cu_backend *c, const struct mm_plan *p, const float *x, int64_t K,
				    void *oscr, int64_t t0, int64_t tn, const void **out)
{
	if (p->prec == TERN_F32) {
		*out = x + t0 * K;
		return TERN_OK;
	}
	*out = oscr;
	return tern_cu_check(cuk_prec_operand(tern_cu_stream(c), oscr, (int)p->prec, x + t0 * K, tn * K,
					      c->absmax, c->consts),
			     "operand");
}

/* For F16: the max |x| of the whole input (the scale is one for all of it). */
static enum tern_status mm_absmax(struct cu_backend *c, const struct mm_plan *p, const float *x, int64_t n)
{
	if (p->prec != TERN_F16)
		return TERN_OK;
	cudaStream_t s = tern_cu_stream(c);
	enum tern_status st = tern_cu_check(cudaMemsetAsync(c->absmax, 0, 4, s), "absmax");
	return st ? st : tern_cu_check(cuk_absmax_bits(s, x, n, c->absmax), "absmax");
}

/* y = x · Wᵀ (forward) or dx (+)= dy · W (backward): out [T, N], in [T, K]. xc: in's operand rows
 * for all T tokens already made (mm_multi: outside the scratch this product's W uses), or NULL. */
static enum tern_status mm_run(struct tern_backend *be, bool bwd, struct tern_view out, struct tern_view in,
			       const struct tern_weight *w, int64_t T, bool accumulate, enum tern_dtype prec,
			       const void *xc)
{
	const char *op = bwd ? "matmul_bwd" : "matmul";
	struct cu_backend *c = cu_be(be);
	struct cuk_weight kw;
	enum tern_status st;
	int64_t O = w->O, I = w->I, N = bwd ? I : O, K = bwd ? O : I;
	float *outp, *inp;
	if ((st = weight_open(op, w, &kw)) ||
	    (st = tern_cu_view(op, bwd ? "dx" : "y", out, (size_t)(T * N) * 4, 4, (void **)&outp,
			       "T=%lld %s=%lld f32", (long long)T, bwd ? "I" : "O", (long long)N)) ||
	    (st = tern_cu_view(op, bwd ? "dy" : "x", in, (size_t)(T * K) * 4, 4, (void **)&inp,
			       "T=%lld %s=%lld f32", (long long)T, bwd ? "O" : "I", (long long)K)))
		return st;
	if (T == 0)
		return TERN_OK;
	if (!bwd && tern_cu_gemv_takes(T)) /* a few tokens (decoding): W read once, no decoded copy */
		return tern_cu_gemv(c, outp, inp, &kw, T, prec);
	struct mm_plan p = mm_plan_of(w, prec, T, K, bwd);
	size_t need = p.wbytes + (xc ? 0 : p.obytes);
	void *scr = NULL;
	if (need && (st = tern_cu_scratch(c, need, &scr)))
		return st;
	void *wscr = scr, *oscr = scr && !xc ? (char *)scr + p.wbytes : NULL;
	if (!xc && (st = mm_absmax(c, &p, inp, T * K)))
		return st;
	const float one = 1.0f, zero = 0.0f;
	bool dev = prec == TERN_F16, once = p.wn >= N;
	const void *alpha = dev ? (const void *)c->consts : &one;
	const void *beta = dev ? (const void *)(c->consts + (accumulate ? 2 : 1)) : accumulate ? &one : &zero;
	const void *Wc = NULL, *Xc;
	if (once && (st = mm_weight_part(c, &p, &kw, wscr, bwd, 0, N, &Wc)))
		return st;
	for (int64_t t0 = 0; t0 < T; t0 += p.toks) {
		int64_t tn = T - t0 < p.toks ? T - t0 : p.toks;
		if (xc) /* (one chunk: every token) */
			Xc = xc;
		else if ((st = mm_act_rows(c, &p, inp, K, oscr, t0, tn, &Xc)))
			return st;
		for (int64_t k0 = 0; k0 < N; k0 += p.wn) {
			int64_t kn = N - k0 < p.wn ? N - k0 : p.wn;
			if (!once && (st = mm_weight_part(c, &p, &kw, wscr, bwd, k0, kn, &Wc)))
				return st;
			if (!bwd) /* yᵀ[o0.., t0..] (on×tn) = Wc (on×I) · Xcᵀ (I×tn) */
				st = gemm_ex(c, op, true, false, kn, tn, I, alpha, Wc, I, Xc, I, beta,
					     outp + t0 * O + k0, O, p.ab, dev);
			else /* dxᵀ[i0.., t0..] (in×tn) (+)= Wc[:, i0..]ᵀ (in×O) · dyᵀ[.., t0..] (O×tn) */
				st = gemm_ex(c, op, false, false, kn, tn, O, alpha, Wc, kn, Xc, O, beta,
					     outp + t0 * I + k0, I, p.ab, dev);
			if (st)
				return st;
		}
	}
	return TERN_OK;
}

enum tern_status tern_cu_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
				const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	return mm_run(be, false, y, x, w, T, false, prec, NULL);
}

/* matmul_multi past the small-T path: where x's half-precision operand fits the scratch in one
 * chunk of tokens, its scale and rows are made once, after the largest W any of the products
 * decodes, and read by each product (matmul makes them for each); else matmul one by one. */
static enum tern_status mm_multi(struct tern_backend *be, const struct tern_view *y, struct tern_view x,
				 const struct tern_weight *const *w, int n, int64_t T, enum tern_dtype prec)
{
	struct cu_backend *c = cu_be(be);
	int64_t I = w[0]->I;
	struct mm_plan p = mm_plan_of(w[0], prec, T, I, false);
	enum tern_status st;
	if (prec == TERN_F32 || T == 0 || tern_cu_gemv_takes(T) || p.toks < T || n < 2) {
		for (int i = 0; i < n; i++)
			if ((st = mm_run(be, false, y[i], x, w[i], T, false, prec, NULL)))
				return st;
		return TERN_OK;
	}
	size_t wmax = 0;
	for (int i = 0; i < n; i++) {
		size_t wb = mm_plan_of(w[i], prec, T, I, false).wbytes;
		wmax = wb > wmax ? wb : wmax;
	}
	wmax = (wmax + 255) & ~(size_t)255;
	float *xp;
	void *scr;
	const void *xc;
	if ((st = tern_cu_view("matmul_multi", "x", x, (size_t)(T * I) * 4, 4, (void **)&xp,
			       "T=%lld I=%lld f32", (long long)T, (long long)I)) ||
	    (st = tern_cu_scratch(c, wmax + p.obytes, &scr)) || (st = mm_absmax(c, &p, xp, T * I)) ||
	    (st = mm_act_rows(c, &p, xp, I, (char *)scr + wmax, 0, T, &xc)))
		return st;
	for (int i = 0; i < n; i++)
		if ((st = mm_run(be, false, y[i], x, w[i], T, false, prec, xc)))
			return st;
	return TERN_OK;
}

/* The small-T path's products of one x in one launch where cuk_gemv_multi takes them (the
 * tensor-core kernel: NF4 or NF4-DQ at bf16); else mm_multi. TERN_CUDA_GEMV_MULTI=0 (read at each
 * call): the small-T path one by one, for before/after timings. With LoRA terms (lt), matmul_lora
 * and matmul one by one. */
enum tern_status tern_cu_matmul_multi(struct tern_backend *be, const struct tern_view *y, struct tern_view x,
				      const struct tern_weight *const *w, const struct tern_lora_term *lt,
				      int n, int64_t T, enum tern_dtype prec)
{
	const char *op = "matmul_multi";
	struct cu_backend *c = cu_be(be);
	const char *e = getenv("TERN_CUDA_GEMV_MULTI");
	enum tern_status st;
	bool terms = false;
	for (int i = 0; lt && i < n; i++)
		terms = terms || lt[i].R;
	if (terms) { /* the LoRA products each extend their own operand (cu_lora.c) */
		for (int i = 0; i < n; i++)
			if ((st = lt[i].R ? tern_cu_matmul_lora(be, y[i], x, lt[i].u, lt[i].B, w[i], lt[i].R,
								lt[i].scale, T, prec)
					  : mm_run(be, false, y[i], x, w[i], T, false, prec, NULL)))
				return st;
		return TERN_OK;
	}
	if (T > 0 && n <= CUK_GEMV_MULTI && prec == TERN_BF16 && tern_cu_gemv_takes(T) &&
	    !(e && !strcmp(e, "0"))) {
		struct cuk_weight kw[CUK_GEMV_MULTI];
		float *yp[CUK_GEMV_MULTI], *xp;
		if ((st = tern_cu_view(op, "x", x, (size_t)(T * w[0]->I) * 4, 4, (void **)&xp,
				       "T=%lld I=%lld f32", (long long)T, (long long)w[0]->I)))
			return st;
		for (int i = 0; i < n; i++)
			if ((st = weight_open(op, w[i], &kw[i])) ||
			    (st = tern_cu_view(op, "y", y[i], (size_t)(T * w[i]->O) * 4, 4, (void **)&yp[i],
					       "T=%lld O=%lld f32", (long long)T, (long long)w[i]->O)))
				return st;
		cudaError_t ce = cuk_gemv_multi(tern_cu_stream(c), yp, xp, kw, n, T, (int)prec, c->sms);
		if (ce != cudaErrorNotSupported)
			return tern_cu_check(ce, op);
	}
	return mm_multi(be, y, x, w, n, T, prec);
}

enum tern_status tern_cu_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				    const struct tern_weight *w, int64_t T, bool accumulate,
				    enum tern_dtype prec)
{
	return mm_run(be, true, dx, dy, w, T, accumulate, prec, NULL);
}

/* ---- gemm (fp32, or bf16 products) ---- */

enum tern_status tern_cu_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			      struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb,
			      float alpha, float beta, enum tern_dtype prec)
{
	const char *op = "gemm";
	struct cu_backend *c = cu_be(be);
	enum tern_status st;
	float *cp, *ap, *bp;
	if ((st = tern_cu_view(op, "C", C, (size_t)(M * N) * 4, 4, (void **)&cp, "M=%lld N=%lld f32",
			       (long long)M, (long long)N)) ||
	    (st = tern_cu_view(op, "A", A, (size_t)(M * K) * 4, 4, (void **)&ap, "%s M=%lld K=%lld f32",
			       ta ? "[K,M]" : "[M,K]", (long long)M, (long long)K)) ||
	    (st = tern_cu_view(op, "B", B, (size_t)(K * N) * 4, 4, (void **)&bp, "%s K=%lld N=%lld f32",
			       tb ? "[N,K]" : "[K,N]", (long long)K, (long long)N)))
		return st;
	if (M * N == 0)
		return TERN_OK;
	if (K == 0) { /* an empty sum: C = beta · C (beta = 0 does not read C) */
		if (beta == 0.0f)
			return tern_cu_check(cudaMemsetAsync(cp, 0, (size_t)(M * N) * 4, tern_cu_stream(c)),
					     op);
		return tern_cu_check(cuk_scale(tern_cu_stream(c), cp, M * N, beta), op);
	}
	/* Cᵀ (N×M) = op(B)ᵀ · op(A)ᵀ: B stored [K,N] is Bᵀ column-major (N×K, ld N), and so on */
	if (prec == TERN_BF16) {
		/* the fp32 operands rounded to bf16 inside cuBLAS for the tensor cores, fp32
		 * accumulation (backend.h gemm; test_ops checks the rounding against the reference) */
		if ((st = tern_cu_check_blas(cublasSetPointerMode(c->blas, CUBLAS_POINTER_MODE_HOST), op)))
			return st;
		tern_cu_stream(c);
		return tern_cu_check_blas(cublasGemmEx_64(c->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
							  ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, bp,
							  CUDA_R_32F, tb ? K : N, ap, CUDA_R_32F, ta ? M : K,
							  &beta, cp, CUDA_R_32F, N,
							  CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT),
					  op);
	}
	return gemm_ex(c, op, tb, ta, N, M, K, &alpha, bp, tb ? K : N, ap, ta ? M : K, &beta, cp, N,
		       CUDA_R_32F, false);
}

/* ---- ce_loss ---- */

/* Tokens of one ce_loss chunk: as many as a sixteenth of the micro-batch's [T, V] fp32 logits hold,
 * but at least CU_CE_CHUNK_BYTES of them and at least CU_CE_TOKEN_TILE · (D / 2048)² tokens (the
 * chunk is the lm_head products' N: a wider model's GEMMs want it taller; the floor grows with
 * the weights, D², so the small models' peak memory is unchanged), and at most CU_CE_CHUNK_MAX of
 * logits, in whole tiles of CU_CE_TOKEN_TILE tokens (130 tokens ran a second tile of the GEMMs for
 * 2 columns). At 2,048 tokens and a 128,256-word vocabulary: 128 tokens (64 MiB) at D = 2,048,
 * 512 (256 MiB) at D = 4,096; at 8,192 tokens 512 whatever D. Llama-3-8B at micro-batch 1 on an
 * H100 (docs/PERFORMANCE.md, 2026-12-05 23:55): 512 tokens against 128 made the step 1.038x
 * faster for 0.17 GiB more, still under Unsloth's peak. TERN_CE_CHUNK=N makes it N tokens
 * (timings; the planner asks this function too). */
int64_t tern_cu_ce_chunk(int64_t T, int64_t V, int64_t D)
{
	int64_t vb = 4 * (V > 0 ? V : 1), bytes = T > 0 ? T * vb / 16 : 0;
	bytes = bytes < CU_CE_CHUNK_BYTES ? CU_CE_CHUNK_BYTES : bytes;
	int64_t tc = bytes / vb;
	if (D > 2048) {
		double f = (double)D / 2048.0, w = (double)CU_CE_TOKEN_TILE * f * f;
		int64_t wide = w > (double)CU_CE_CHUNK_MAX ? CU_CE_CHUNK_MAX : (int64_t)w;
		tc = tc < wide ? wide : tc;
	}
	tc = tc > CU_CE_CHUNK_MAX / vb ? CU_CE_CHUNK_MAX / vb : tc;
	if (tc > CU_CE_TOKEN_TILE)
		tc -= tc % CU_CE_TOKEN_TILE;
	const char *env = getenv("TERN_CE_CHUNK");
	if (env) {
		long long f = strtoll(env, NULL, 10);
		if (f > 0)
			tc = f;
	}
	if (tc > T)
		tc = T;
	return tc < 1 ? 1 : tc;
}

/* The products run in bf16 at prec BF16 (x and W as bf16 operands, the gradient rows written as
 * bf16 by the rows kernel, fp32 accumulation) unless dW is asked for; in fp32 otherwise (F16
 * included: the contract allows it, the CPU reference does). */
enum tern_status tern_cu_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				 struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				 struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec)
{
	const char *op = "ce_loss";
	struct cu_backend *c = cu_be(be);
	enum tern_status st;
	int64_t V = W->O, D = W->I;
	struct cuk_weight kw;
	float *lp, *dxp, *xp, *dwp = NULL;
	int32_t *lab;
	if ((st = weight_open(op, W, &kw)) ||
	    (st = tern_cu_view(op, "loss", loss, 4, 4, (void **)&lp, "1 f32")) ||
	    (st = tern_cu_view(op, "dx", dx, (size_t)(T * D) * 4, 4, (void **)&dxp, "T=%lld D=%lld f32",
			       (long long)T, (long long)D)) ||
	    (st = tern_cu_view(op, "x", x, (size_t)(T * D) * 4, 4, (void **)&xp, "T=%lld D=%lld f32",
			       (long long)T, (long long)D)) ||
	    (st = tern_cu_view(op, "labels", labels, (size_t)T * 4, 4, (void **)&lab, "T=%lld i32",
			       (long long)T)))
		return st;
	if (dW.size && (st = tern_cu_view(op, "dW", dW, (size_t)(V * D) * 4, 4, (void **)&dwp,
					  "V=%lld D=%lld f32", (long long)V, (long long)D)))
		return st;
	if (T == 0)
		return TERN_OK;
	int64_t tc = tern_cu_ce_chunk(T, V, D);
	bool bf = prec == TERN_BF16 && !dwp;
	struct mm_plan p = mm_plan_of(W, bf ? TERN_BF16 : TERN_F32, tc, D, false);
	double *term;
	void *scr;
	size_t zbytes = (size_t)(tc * V) * 4, xbytes = bf ? (size_t)(tc * D) * 2 : 0;
	if ((st = tern_cu_terms(c, T, &term)) || (st = tern_cu_scratch(c, zbytes + p.wbytes + xbytes, &scr)))
		return st;
	float *z = scr;
	void *wscr = (char *)scr + zbytes, *xbf = (char *)scr + zbytes + p.wbytes;
	cudaDataType ab = bf ? CUDA_R_16BF : CUDA_R_32F;
	/* untrained tokens keep dx = 0; every chunk adds its vocabulary slices into dx */
	if ((st = tern_cu_check(cudaMemsetAsync(dxp, 0, (size_t)(T * D) * 4, tern_cu_stream(c)), op)))
		return st;
	const float one = 1.0f, zero = 0.0f;
	for (int64_t t0 = 0; t0 < T; t0 += tc) {
		int64_t tn = T - t0 < tc ? T - t0 : tc;
		const float *xc = xp + t0 * D;
		const void *xo = bf ? xbf : (const void *)xc; /* the chunk's x as the product's operand */
		if (bf && (st = tern_cu_check(cuk_prec_operand(tern_cu_stream(c), xbf, TERN_BF16, xc, tn * D,
							       c->absmax, NULL),
					      "operand")))
			return st;
		for (int64_t v0 = 0; v0 < V; v0 += p.wn) { /* zᵀ[v0.., :] (vn×tn) = Wc · xcᵀ */
			int64_t vn = V - v0 < p.wn ? V - v0 : p.wn;
			const void *Wc;
			if ((st = mm_weight_rows(c, &p, &kw, wscr, v0, vn, &Wc)) ||
			    (st = gemm_ex(c, op, true, false, vn, tn, D, &one, Wc, D, xo, D, &zero, z + v0, V,
					  ab, false)))
				return st;
		}
		if ((st = tern_cu_check(
			     cuk_ce_rows(tern_cu_stream(c), z, tn, V, lab + t0, inv_n, term + t0, bf), op)))
			return st;
		for (int64_t v0 = 0; v0 < V; v0 += p.wn) {
			int64_t vn = V - v0 < p.wn ? V - v0 : p.wn;
			const void *Wc;
			/* dxᵀ[:, t0..] (D×tn) += Wcᵀ (D×vn) · dzᵀ[v0.., :] (vn×tn); in bf16 the rows of dz
			 * are 2V bf16 apart */
			const void *dz = bf ? (const void *)((const uint16_t *)(const void *)z + v0) : z + v0;
			if ((st = mm_weight_rows(c, &p, &kw, wscr, v0, vn, &Wc)) ||
			    (st = gemm_ex(c, op, false, false, D, tn, vn, &one, Wc, D, dz, bf ? 2 * V : V,
					  &one, dxp + t0 * D, D, ab, false)))
				return st;
			/* dWᵀ[:, v0..] (D×vn) += xcᵀ (D×tn) · dz[:, v0..] (tn×vn) */
			if (dwp && (st = gemm_ex(c, op, false, true, D, vn, tn, &one, xc, D, z + v0, V, &one,
						 dwp + v0 * D, D, CUDA_R_32F, false)))
				return st;
		}
	}
	return tern_cu_check(cuk_ce_total(tern_cu_stream(c), lp, term, T, inv_n), op);
}

/* For the grouped matmul (cu_moe.c, cu_more.h). */
enum tern_status tern_cu_weight_open(const char *op, const struct tern_weight *w, struct cuk_weight *kw)
{
	return weight_open(op, w, kw);
}

/* For the fused LoRA products (cu_lora.c, cu.h): the GEMM above, and the two scratch budgets
 * (TERN_CUDA_DECODE_BYTES / TERN_CUDA_OPERAND_BYTES lower them as for matmul; read at every call,
 * so that test_ops can set them around its chunked cases). */
enum tern_status tern_cu_gemm_ex(struct cu_backend *c, const char *op, bool ta, bool tb, int64_t m, int64_t n,
				 int64_t k, const void *alpha, const void *A, int64_t lda, const void *B,
				 int64_t ldb, const void *beta, float *C, int64_t ldc, cudaDataType ab,
				 bool dev)
{
	return gemm_ex(c, op, ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc, ab, dev);
}

int64_t tern_cu_split(int64_t total, int64_t most, int64_t align)
{
	if (most >= total || most < align)
		return most >= total ? total : most;
	for (int64_t parts = (total + most - 1) / most;; parts++) {
		int64_t p = ((total + parts - 1) / parts + align - 1) & ~(align - 1);
		if (p <= most)
			return p;
	}
}

void tern_cu_mm_budget(size_t *decode_bytes, size_t *operand_bytes)
{
	long long dec = -1, opd = -1;
	*decode_bytes = bytes_env("TERN_CUDA_DECODE_BYTES", CU_DECODE_BYTES, &dec);
	*operand_bytes = bytes_env("TERN_CUDA_OPERAND_BYTES", CU_OPERAND_BYTES, &opd);
}
