/* The ops' front doors (declared in backend.h): one function per vtable op. Each checks, once for
 * every backend, what the contract in backend.h states: view sizes against the shape, the weight
 * (tern_check_weight), ranges of counts and scalars, the dtypes an op takes. Then it calls the
 * backend's entry, which may assume all of that and checks only what is its own (a view lies
 * inside its buffer, alignment, device limits, data only it can read such as embed's ids).
 *
 * Failures are one line naming the op, the tensor and the shape, e.g.
 * "matmul: x view is 100 bytes, needs 128 (T=2 I=16 f32)"; a rejected call writes nothing.
 *
 * With the profile on (tern_backend_profile), a checked call runs its entry between the backend's
 * profile_op(kind, flops, true) and profile_op(kind, 0, false): the front doors are where the op,
 * its kind and its shape (hence its FLOPs) are all known. */
#include "backend/backend.h"

#include <math.h>
#include <stdarg.h>

/* ---- checks ------------------------------------------------------------------------------- */

/* A NULL vtable entry. */
static enum tern_status missing(const struct tern_backend *be, enum tern_op op)
{
	return tern_fail(TERN_E_UNSUPPORTED, "backend %s: %s is not implemented", be->name, tern_op_name(op));
}

/* tern_check_view with the shape appended to its message. need is computed by the caller after
 * the counts it is made of were checked, so it cannot overflow. */
static enum tern_status view(const char *op, const char *what, struct tern_view v, size_t need,
			     const char *fmt, ...) TERN_PRINTF(5, 6);
static enum tern_status view(const char *op, const char *what, struct tern_view v, size_t need,
			     const char *fmt, ...)
{
	enum tern_status st = tern_check_view(op, what, v, need);
	if (st == TERN_OK)
		return TERN_OK;
	va_list ap;
	va_start(ap, fmt);
	st = tern_vfail_suffix(st, fmt, ap);
	va_end(ap);
	return st;
}

/* n in [0, TERN_MAX_ELEMS]. */
static enum tern_status count(const char *op, const char *what, int64_t n)
{
	if (n < 0 || n > TERN_MAX_ELEMS)
		return tern_fail(TERN_E_INVALID, "%s: %s=%lld is out of range", op, what, (long long)n);
	return TERN_OK;
}

/* a, b >= 0 and a·b <= TERN_MAX_ELEMS. */
static enum tern_status dims(const char *op, int64_t a, const char *an, int64_t b, const char *bn)
{
	if (a < 0 || b < 0 || (b > 0 && a > TERN_MAX_ELEMS / b))
		return tern_fail(TERN_E_INVALID, "%s: %s=%lld %s=%lld is out of range", op, an, (long long)a,
				 bn, (long long)b);
	return TERN_OK;
}

/* T token rows against a checked weight (O, I >= 1): T·O and T·I are counts. */
static enum tern_status tokens(const char *op, int64_t T, const struct tern_weight *w)
{
	if (T < 0 || T > TERN_MAX_ELEMS / w->O || T > TERN_MAX_ELEMS / w->I)
		return tern_fail(TERN_E_INVALID, "%s: T=%lld is out of range for O=%lld I=%lld", op,
				 (long long)T, (long long)w->O, (long long)w->I);
	return TERN_OK;
}

static bool plain(enum tern_dtype dt) { return dt == TERN_F32 || dt == TERN_F16 || dt == TERN_BF16; }

/* ---- the profile hook (backend.h, profile_op) --------------------------------------------- */

/* Opens the profile bracket of a checked op about to run its entry: only the outermost front
 * door tells the backend, so an entry that runs other ops through their front doors is timed as
 * one op of its own kind. Returns whether prof_end has a bracket to close. */
static bool prof_begin(struct tern_backend *be, enum tern_op op, enum tern_prof_kind kind, double flops)
{
	be->counts.ops++;
	if (!be->profiling)
		return false;
	if (be->profile_depth++ == 0) {
		be->profile_op = op;
		be->vt->profile_op(be, kind, flops, true);
	}
	return true;
}

/* Closes what prof_begin opened; returns the entry's status. */
static enum tern_status prof_end(struct tern_backend *be, bool open, enum tern_prof_kind kind,
				 enum tern_status st)
{
	if (open && --be->profile_depth == 0)
		be->vt->profile_op(be, kind, 0.0, false);
	return st;
}

enum tern_status tern_backend_profile(struct tern_backend *be, bool on)
{
	if (on && (!be->vt->profile_op || !be->vt->profile_read))
		return tern_fail(TERN_E_UNSUPPORTED, "backend %s cannot profile ops", be->name);
	if (be->profile_depth) /* an op's entry turning the profile over would unbalance the brackets */
		return tern_fail(TERN_E_INVALID, "backend %s: the profile cannot change inside an op",
				 be->name);
	enum tern_status st = be->vt->profile_set ? be->vt->profile_set(be, on) : TERN_OK;
	if (st == TERN_OK)
		be->profiling = on;
	return st;
}

enum tern_status tern_backend_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset)
{
	if (!be->profiling)
		return tern_fail(TERN_E_INVALID, "backend %s: the profile is off (tern_backend_profile)",
				 be->name);
	return be->vt->profile_read(be, out, reset);
}

/* ---- matmul, gemm ------------------------------------------------------------------------- */

/* The product precision: a plain dtype the backend runs this op at. */
static enum tern_status prec_check(struct tern_backend *be, const char *op, enum tern_op id,
				   enum tern_dtype prec)
{
	if (!plain(prec))
		return tern_fail(TERN_E_INVALID, "%s: precision %s is not f32, f16 or bf16", op,
				 tern_dtype_name(prec));
	if (!tern_backend_supports_prec(be, id, prec))
		return tern_fail(TERN_E_UNSUPPORTED, "backend %s: %s precision %s is not supported", be->name,
				 op, tern_dtype_name(prec));
	return TERN_OK;
}

/* matmul: out = y [T,O], in = x [T,I]; matmul_bwd: out = dx [T,I], in = dy [T,O]. */
static enum tern_status mm_check(struct tern_backend *be, bool bwd, struct tern_view out, struct tern_view in,
				 const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	const char *op = bwd ? "matmul_bwd" : "matmul";
	enum tern_status st;
	if ((st = tern_check_weight(op, w)) ||
	    (st = prec_check(be, op, bwd ? TERN_OP_MATMUL_BWD : TERN_OP_MATMUL, prec)) ||
	    (st = tokens(op, T, w)))
		return st;
	long long lT = (long long)T, O = (long long)w->O, I = (long long)w->I;
	if (bwd) {
		if ((st = view(op, "dx", out, (size_t)(T * w->I) * 4, "T=%lld I=%lld f32", lT, I)) ||
		    (st = view(op, "dy", in, (size_t)(T * w->O) * 4, "T=%lld O=%lld f32", lT, O)))
			return st;
	} else {
		if ((st = view(op, "y", out, (size_t)(T * w->O) * 4, "T=%lld O=%lld f32", lT, O)) ||
		    (st = view(op, "x", in, (size_t)(T * w->I) * 4, "T=%lld I=%lld f32", lT, I)))
			return st;
	}
	return TERN_OK;
}

enum tern_status tern_matmul(struct tern_backend *be, struct tern_view y, struct tern_view x,
			     const struct tern_weight *w, int64_t T, enum tern_dtype prec)
{
	if (!be->vt->matmul)
		return missing(be, TERN_OP_MATMUL);
	enum tern_status st = mm_check(be, false, y, x, w, T, prec);
	if (st)
		return st;
	enum tern_prof_kind pk = TERN_PROF_MATMUL_FWD;
	bool prof = prof_begin(be, TERN_OP_MATMUL, pk, 2.0 * (double)T * (double)w->O * (double)w->I);
	return prof_end(be, prof, pk, be->vt->matmul(be, y, x, w, T, prec));
}

/* Whether the first na bytes of a and the first nb bytes of b share a byte. */
static bool views_overlap(struct tern_view a, size_t na, struct tern_view b, size_t nb)
{
	return a.buf == b.buf && na && nb && a.off < b.off + nb && b.off < a.off + na;
}

static enum tern_status mm_lora_check(struct tern_backend *be, bool bwd, struct tern_view out,
				      struct tern_view in, struct tern_view lo, struct tern_view par,
				      const struct tern_weight *w, int64_t R, int64_t T,
				      enum tern_dtype prec);

enum tern_status tern_matmul_multi(struct tern_backend *be, const struct tern_view *y, struct tern_view x,
				   const struct tern_weight *const *w, const struct tern_lora_term *lt, int n,
				   int64_t T, enum tern_dtype prec)
{
	if (!be->vt->matmul)
		return missing(be, TERN_OP_MATMUL);
	if (n < 1 || n > TERN_MATMUL_MULTI || !y || !w)
		return tern_fail(TERN_E_INVALID, "matmul_multi: n=%d weights (1 to %d)", n,
				 TERN_MATMUL_MULTI);
	enum tern_status st;
	double flops = 0.0;
	for (int i = 0; i < n; i++) {
		if ((st = mm_check(be, false, y[i], x, w[i], T, prec)))
			return st;
		if (w[i]->I != w[0]->I)
			return tern_fail(TERN_E_INVALID,
					 "matmul_multi: weight %d has I=%lld, weight 0 I=%lld", i,
					 (long long)w[i]->I, (long long)w[0]->I);
		size_t ni = (size_t)(T * w[i]->O) * 4;
		for (int j = 0; j < i; j++)
			if (views_overlap(y[i], ni, y[j], (size_t)(T * w[j]->O) * 4))
				return tern_fail(TERN_E_INVALID, "matmul_multi: y[%d] overlaps y[%d]", i, j);
		if (views_overlap(y[i], ni, x, (size_t)(T * w[i]->I) * 4))
			return tern_fail(TERN_E_INVALID, "matmul_multi: y[%d] overlaps x", i);
		flops += 2.0 * (double)T * (double)w[i]->O * (double)w[i]->I;
		if (!lt || lt[i].R == 0)
			continue;
		if ((st = mm_lora_check(be, false, y[i], x, lt[i].u, lt[i].B, w[i], lt[i].R, T, prec)))
			return st;
		if (!isfinite(lt[i].scale))
			return tern_fail(TERN_E_INVALID, "matmul_multi: term %d's scale is %g", i,
					 (double)lt[i].scale);
		flops += 2.0 * (double)T * (double)w[i]->O * (double)lt[i].R;
	}
	if (!be->vt->matmul_multi) {
		for (int i = 0; i < n; i++) {
			bool l = lt && lt[i].R;
			if ((st = l ? tern_matmul_lora(be, y[i], x, lt[i].u, lt[i].B, w[i], lt[i].R,
						       lt[i].scale, T, prec)
				    : tern_matmul(be, y[i], x, w[i], T, prec)))
				return st;
		}
		return TERN_OK;
	}
	enum tern_prof_kind pk = TERN_PROF_MATMUL_FWD;
	bool prof = prof_begin(be, TERN_OP_MATMUL, pk, flops);
	return prof_end(be, prof, pk, be->vt->matmul_multi(be, y, x, w, lt, n, T, prec));
}

enum tern_status tern_matmul_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				 const struct tern_weight *w, int64_t T, bool accumulate,
				 enum tern_dtype prec)
{
	if (!be->vt->matmul_bwd)
		return missing(be, TERN_OP_MATMUL_BWD);
	enum tern_status st = mm_check(be, true, dx, dy, w, T, prec);
	if (st)
		return st;
	enum tern_prof_kind pk = TERN_PROF_MATMUL_BWD;
	bool prof = prof_begin(be, TERN_OP_MATMUL_BWD, pk, 2.0 * (double)T * (double)w->O * (double)w->I);
	return prof_end(be, prof, pk, be->vt->matmul_bwd(be, dx, dy, w, T, accumulate, prec));
}

enum tern_status tern_gemm(struct tern_backend *be, struct tern_view C, struct tern_view A,
			   struct tern_view B, int64_t M, int64_t N, int64_t K, bool ta, bool tb, float alpha,
			   float beta, enum tern_dtype prec)
{
	const char *op = "gemm";
	if (!be->vt->gemm)
		return missing(be, TERN_OP_GEMM);
	enum tern_status st;
	if ((st = count(op, "M", M)) || (st = count(op, "N", N)) || (st = count(op, "K", K)))
		return st;
	/* each product a count, tested by division so that it cannot overflow */
	if ((N > 0 && M > TERN_MAX_ELEMS / N) || (K > 0 && M > TERN_MAX_ELEMS / K) ||
	    (N > 0 && K > TERN_MAX_ELEMS / N))
		return tern_fail(TERN_E_INVALID, "gemm: M=%lld N=%lld K=%lld is too large", (long long)M,
				 (long long)N, (long long)K);
	if ((st = prec_check(be, op, TERN_OP_GEMM, prec)))
		return st;
	long long lM = (long long)M, lN = (long long)N, lK = (long long)K;
	if ((st = view(op, "C", C, (size_t)(M * N) * 4, "M=%lld N=%lld f32", lM, lN)) ||
	    (st = view(op, "A", A, (size_t)(M * K) * 4, "%s M=%lld K=%lld f32", ta ? "[K,M]" : "[M,K]", lM,
		       lK)) ||
	    (st = view(op, "B", B, (size_t)(K * N) * 4, "%s K=%lld N=%lld f32", tb ? "[N,K]" : "[K,N]", lK,
		       lN)))
		return st;
	enum tern_prof_kind pk = TERN_PROF_LORA;
	bool prof = prof_begin(be, TERN_OP_GEMM, pk, 2.0 * (double)M * (double)N * (double)K);
	return prof_end(be, prof, pk, be->vt->gemm(be, C, A, B, M, N, K, ta, tb, alpha, beta, prec));
}

/* matmul_lora(_bwd): the matmul's checks, then R, the low-rank views (u or du [T,R], B [O,R] or
 * A [R,I]) and whether the backend fuses this case. */
static enum tern_status mm_lora_check(struct tern_backend *be, bool bwd, struct tern_view out,
				      struct tern_view in, struct tern_view lo, struct tern_view par,
				      const struct tern_weight *w, int64_t R, int64_t T, enum tern_dtype prec)
{
	const char *op = bwd ? "matmul_lora_bwd" : "matmul_lora";
	if (!be->vt->lora_fuses || (bwd ? !be->vt->matmul_lora_bwd : !be->vt->matmul_lora))
		return tern_fail(TERN_E_UNSUPPORTED, "backend %s: %s is not implemented", be->name, op);
	enum tern_status st = mm_check(be, bwd, out, in, w, T, prec);
	if (st)
		return st;
	int64_t P = bwd ? w->I : w->O;
	if (R < 1 || R > TERN_MAX_ELEMS / P || R > TERN_MAX_ELEMS / (T > 0 ? T : 1))
		return tern_fail(TERN_E_INVALID, "%s: R=%lld is out of range (T=%lld O=%lld I=%lld)", op,
				 (long long)R, (long long)T, (long long)w->O, (long long)w->I);
	long long lT = (long long)T, lR = (long long)R, lP = (long long)P;
	if ((st = view(op, bwd ? "du" : "u", lo, (size_t)(T * R) * 4, "T=%lld R=%lld f32", lT, lR)) ||
	    (st = view(op, bwd ? "A" : "B", par, (size_t)(P * R) * 4,
		       bwd ? "R=%lld I=%lld f32" : "O=%lld R=%lld f32", bwd ? lR : lP, bwd ? lP : lR)))
		return st;
	if (!be->vt->lora_fuses(be, w, R, T, prec))
		return tern_fail(TERN_E_UNSUPPORTED,
				 "backend %s: %s does not run %s weights at R=%lld, T=%lld in %s", be->name,
				 op, tern_dtype_name(w->dtype), lR, lT, tern_dtype_name(prec));
	return TERN_OK;
}

enum tern_status tern_matmul_lora(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  struct tern_view u, struct tern_view B, const struct tern_weight *w,
				  int64_t R, float scale, int64_t T, enum tern_dtype prec)
{
	enum tern_status st = mm_lora_check(be, false, y, x, u, B, w, R, T, prec);
	if (st)
		return st;
	if (!isfinite(scale))
		return tern_fail(TERN_E_INVALID, "matmul_lora: scale is %g", (double)scale);
	enum tern_prof_kind pk = TERN_PROF_MATMUL_FWD;
	bool prof =
		prof_begin(be, TERN_OP_MATMUL_LORA, pk, 2.0 * (double)T * (double)w->O * (double)(w->I + R));
	return prof_end(be, prof, pk, be->vt->matmul_lora(be, y, x, u, B, w, R, scale, T, prec));
}

enum tern_status tern_matmul_lora_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				      struct tern_view du, struct tern_view A, const struct tern_weight *w,
				      int64_t R, int64_t T, bool accumulate, enum tern_dtype prec)
{
	enum tern_status st = mm_lora_check(be, true, dx, dy, du, A, w, R, T, prec);
	if (st)
		return st;
	enum tern_prof_kind pk = TERN_PROF_MATMUL_BWD;
	bool prof = prof_begin(be, TERN_OP_MATMUL_LORA_BWD, pk,
			       2.0 * (double)T * (double)(w->O + R) * (double)w->I);
	return prof_end(be, prof, pk, be->vt->matmul_lora_bwd(be, dx, dy, du, A, w, R, T, accumulate, prec));
}

/* ---- element-wise and optimizer ops ------------------------------------------------------- */

/* n, then the fp32 vectors of n elements each (names[k] for v[k]). */
static enum tern_status vectors(const char *op, int64_t n, const char *const *names,
				const struct tern_view *v, int nv)
{
	enum tern_status st = count(op, "n", n);
	for (int k = 0; k < nv && st == TERN_OK; k++)
		st = view(op, names[k], v[k], (size_t)n * 4, "n=%lld f32", (long long)n);
	return st;
}

enum tern_status tern_dropout(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			      float p, uint64_t key)
{
	const char *op = "dropout";
	if (!be->vt->dropout)
		return missing(be, TERN_OP_DROPOUT);
	static const char *const names[] = {"y", "x"};
	struct tern_view v[2] = {y, x};
	enum tern_status st = vectors(op, n, names, v, 2);
	if (st)
		return st;
	if (!(p >= 0.0f && p < 1.0f))
		return tern_fail(TERN_E_INVALID, "dropout: p=%g is outside [0, 1)", (double)p);
	if (n > (INT64_C(1) << 32)) /* the hash takes a 32-bit element index */
		return tern_fail(TERN_E_INVALID, "dropout: n=%lld exceeds the 32-bit element counter",
				 (long long)n);
	bool prof = prof_begin(be, TERN_OP_DROPOUT, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->dropout(be, y, x, n, p, key));
}

enum tern_status tern_axpy(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t n,
			   float alpha)
{
	if (!be->vt->axpy)
		return missing(be, TERN_OP_AXPY);
	static const char *const names[] = {"y", "x"};
	struct tern_view v[2] = {y, x};
	enum tern_status st = vectors("axpy", n, names, v, 2);
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_AXPY, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->axpy(be, y, x, n, alpha));
}

enum tern_status tern_adamw(struct tern_backend *be, struct tern_view param, struct tern_view grad,
			    struct tern_view m, struct tern_view v, int64_t n,
			    const struct tern_adamw_args *args)
{
	if (!be->vt->adamw)
		return missing(be, TERN_OP_ADAMW);
	static const char *const names[] = {"param", "grad", "m", "v"};
	struct tern_view vs[4] = {param, grad, m, v};
	enum tern_status st = vectors("adamw", n, names, vs, 4);
	if (st)
		return st;
	if (!args)
		return tern_fail(TERN_E_INVALID, "adamw: no arguments");
	if (args->step < 1)
		return tern_fail(TERN_E_INVALID, "adamw: step %lld (steps count from 1)",
				 (long long)args->step);
	if (!isfinite(args->lr) || !isfinite(args->eps) || !isfinite(args->weight_decay) ||
	    !(args->beta1 >= 0.0f && args->beta1 < 1.0f) || !(args->beta2 >= 0.0f && args->beta2 < 1.0f))
		return tern_fail(TERN_E_INVALID,
				 "adamw: bad hyperparameters lr=%g beta1=%g beta2=%g eps=%g wd=%g",
				 (double)args->lr, (double)args->beta1, (double)args->beta2,
				 (double)args->eps, (double)args->weight_decay);
	bool prof = prof_begin(be, TERN_OP_ADAMW, TERN_PROF_OPTIMIZER, 0.0);
	return prof_end(be, prof, TERN_PROF_OPTIMIZER, be->vt->adamw(be, param, grad, m, v, n, args));
}

enum tern_status tern_sumsq(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t n,
			    bool accumulate)
{
	const char *op = "sumsq";
	if (!be->vt->sumsq)
		return missing(be, TERN_OP_SUMSQ);
	static const char *const names[] = {"x"};
	enum tern_status st = vectors(op, n, names, &x, 1);
	if (!st)
		st = view(op, "out", out, 4, "1 f32");
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_SUMSQ, TERN_PROF_OPTIMIZER, 0.0);
	return prof_end(be, prof, TERN_PROF_OPTIMIZER, be->vt->sumsq(be, out, x, n, accumulate));
}

enum tern_status tern_scale(struct tern_backend *be, struct tern_view x, int64_t n, float alpha)
{
	if (!be->vt->scale)
		return missing(be, TERN_OP_SCALE);
	static const char *const names[] = {"x"};
	enum tern_status st = vectors("scale", n, names, &x, 1);
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_SCALE, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->scale(be, x, n, alpha));
}

enum tern_status tern_clip(struct tern_backend *be, struct tern_view x, int64_t n, struct tern_view sumsq,
			   float max_norm)
{
	const char *op = "clip";
	if (!be->vt->clip)
		return missing(be, TERN_OP_CLIP);
	static const char *const names[] = {"x"};
	enum tern_status st = vectors(op, n, names, &x, 1);
	if (!st)
		st = view(op, "sumsq", sumsq, 4, "1 f32");
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_CLIP, TERN_PROF_OPTIMIZER, 0.0);
	return prof_end(be, prof, TERN_PROF_OPTIMIZER, be->vt->clip(be, x, n, sumsq, max_norm));
}

enum tern_status tern_cast(struct tern_backend *be, struct tern_view dst, enum tern_dtype dt,
			   struct tern_view src, enum tern_dtype st_, int64_t n)
{
	const char *op = "cast";
	if (!be->vt->cast)
		return missing(be, TERN_OP_CAST);
	enum tern_status st = count(op, "n", n);
	if (st)
		return st;
	if (!plain(dt) || !plain(st_))
		return tern_fail(TERN_E_INVALID, "cast: %s -> %s: only f32, f16 and bf16 convert",
				 tern_dtype_name(st_), tern_dtype_name(dt));
	size_t ds = tern_dtype_size(dt), ss = tern_dtype_size(st_);
	if ((st = view(op, "dst", dst, (size_t)n * ds, "n=%lld %s", (long long)n, tern_dtype_name(dt))) ||
	    (st = view(op, "src", src, (size_t)n * ss, "n=%lld %s", (long long)n, tern_dtype_name(st_))))
		return st;
	bool prof = prof_begin(be, TERN_OP_CAST, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->cast(be, dst, dt, src, st_, n));
}

/* ---- transformer ops ---------------------------------------------------------------------- */

enum tern_status tern_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
			      struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps)
{
	const char *op = "rmsnorm";
	if (!be->vt->rmsnorm)
		return missing(be, TERN_OP_RMSNORM);
	enum tern_status st = dims(op, T, "T", D, "D");
	if (st)
		return st;
	if (D < 1 || !(eps >= 0.0f) || !isfinite(eps))
		return tern_fail(TERN_E_INVALID, "rmsnorm: D=%lld eps=%g (D >= 1, eps finite and >= 0)",
				 (long long)D, (double)eps);
	long long lT = (long long)T, lD = (long long)D;
	if ((st = view(op, "y", y, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "rstd", rstd, (size_t)T * 4, "T=%lld f32", lT)) ||
	    (st = view(op, "x", x, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "w", w, (size_t)D * 4, "D=%lld f32", lD)))
		return st;
	bool prof = prof_begin(be, TERN_OP_RMSNORM, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->rmsnorm(be, y, rstd, x, w, T, D, eps));
}

enum tern_status tern_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				  struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				  int64_t D, bool accumulate)
{
	const char *op = "rmsnorm_bwd";
	if (!be->vt->rmsnorm_bwd)
		return missing(be, TERN_OP_RMSNORM_BWD);
	enum tern_status st = dims(op, T, "T", D, "D");
	if (st)
		return st;
	if (D < 1)
		return tern_fail(TERN_E_INVALID, "rmsnorm_bwd: D=%lld (D >= 1)", (long long)D);
	long long lT = (long long)T, lD = (long long)D;
	if ((st = view(op, "dx", dx, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "dy", dy, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "x", x, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "w", w, (size_t)D * 4, "D=%lld f32", lD)) ||
	    (st = view(op, "rstd", rstd, (size_t)T * 4, "T=%lld f32", lT)))
		return st;
	bool prof = prof_begin(be, TERN_OP_RMSNORM_BWD, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->rmsnorm_bwd(be, dx, dy, x, w, rstd, T, D, accumulate));
}

enum tern_status tern_add_rmsnorm(struct tern_backend *be, struct tern_view h, struct tern_view y,
				  struct tern_view rstd, struct tern_view x, struct tern_view w, int64_t T,
				  int64_t D, float eps)
{
	const char *op = "add_rmsnorm";
	enum tern_status st = dims(op, T, "T", D, "D");
	if (st)
		return st;
	if (D < 1 || !(eps >= 0.0f) || !isfinite(eps))
		return tern_fail(TERN_E_INVALID, "add_rmsnorm: D=%lld eps=%g (D >= 1, eps finite and >= 0)",
				 (long long)D, (double)eps);
	long long lT = (long long)T, lD = (long long)D;
	if ((st = view(op, "h", h, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "y", y, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "rstd", rstd, (size_t)T * 4, "T=%lld f32", lT)) ||
	    (st = view(op, "x", x, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "w", w, (size_t)D * 4, "D=%lld f32", lD)))
		return st;
	size_t nm = (size_t)(T * D) * 4, nr = (size_t)T * 4;
	if (views_overlap(y, nm, h, nm) || views_overlap(y, nm, x, nm) || views_overlap(rstd, nr, h, nm) ||
	    views_overlap(rstd, nr, x, nm) || views_overlap(x, nm, h, nm))
		return tern_fail(TERN_E_INVALID, "add_rmsnorm: h, x, y and rstd overlap (T=%lld D=%lld)", lT,
				 lD);
	if (!be->vt->add_rmsnorm) { /* the two ops it fuses */
		if ((st = tern_axpy(be, h, x, T * D, 1.0f)))
			return st;
		return tern_rmsnorm(be, y, rstd, h, w, T, D, eps);
	}
	bool prof = prof_begin(be, TERN_OP_ADD_RMSNORM, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->add_rmsnorm(be, h, y, rstd, x, w, T, D, eps));
}

/* rope's arguments: x [T, H, Dh] (named xn, its head count hn), pos [T], inv_freq [Dh/2] */
static enum tern_status rope_check(const char *op, struct tern_view x, const char *xn, int64_t H,
				   const char *hn, struct tern_view pos, struct tern_view inv_freq, int64_t T,
				   int64_t Dh)
{
	enum tern_status st;
	if ((st = dims(op, T, "T", H, hn)) || (st = dims(op, T * H, "T*H", Dh, "Dh")))
		return st;
	if (Dh < 2 || Dh % 2 || H < 1)
		return tern_fail(TERN_E_INVALID, "%s: %s=%lld Dh=%lld (%s >= 1, Dh even and >= 2)", op, hn,
				 (long long)H, (long long)Dh, hn);
	long long lT = (long long)T, lH = (long long)H, lDh = (long long)Dh;
	if ((st = view(op, xn, x, (size_t)(T * H * Dh) * 4, "T=%lld %s=%lld Dh=%lld f32", lT, hn, lH, lDh)) ||
	    (st = view(op, "pos", pos, (size_t)T * 4, "T=%lld i32", lT)) ||
	    (st = view(op, "inv_freq", inv_freq, (size_t)(Dh / 2) * 4, "Dh/2=%lld f32", lDh / 2)))
		return st;
	return TERN_OK;
}

enum tern_status tern_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			   struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	if (!be->vt->rope)
		return missing(be, TERN_OP_ROPE);
	enum tern_status st = rope_check("rope", x, "x", H, "H", pos, inv_freq, T, Dh);
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_ROPE, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->rope(be, x, pos, inv_freq, T, H, Dh, inverse));
}

enum tern_status tern_rope2(struct tern_backend *be, struct tern_view x, int64_t H, struct tern_view x2,
			    int64_t H2, struct tern_view pos, struct tern_view inv_freq, int64_t T,
			    int64_t Dh, bool inverse)
{
	const char *op = "rope2";
	if (!be->vt->rope)
		return missing(be, TERN_OP_ROPE);
	enum tern_status st;
	if ((st = rope_check(op, x, "x", H, "H", pos, inv_freq, T, Dh)) ||
	    (st = rope_check(op, x2, "x2", H2, "H2", pos, inv_freq, T, Dh)))
		return st;
	if (views_overlap(x, (size_t)(T * H * Dh) * 4, x2, (size_t)(T * H2 * Dh) * 4))
		return tern_fail(TERN_E_INVALID, "rope2: x2 overlaps x (T=%lld H=%lld H2=%lld Dh=%lld)",
				 (long long)T, (long long)H, (long long)H2, (long long)Dh);
	if (!be->vt->rope2) {
		st = tern_rope(be, x, pos, inv_freq, T, H, Dh, inverse);
		return st ? st : tern_rope(be, x2, pos, inv_freq, T, H2, Dh, inverse);
	}
	bool prof = prof_begin(be, TERN_OP_ROPE, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->rope2(be, x, H, x2, H2, pos, inv_freq, T, Dh, inverse));
}

/* n, the activation, then the fp32 vectors. */
static enum tern_status mlp_check(const char *op, int64_t n, enum tern_act act, const char *const *names,
				  const struct tern_view *v, int nv)
{
	enum tern_status st = count(op, "n", n);
	if (st)
		return st;
	if (act != TERN_ACT_SILU && act != TERN_ACT_RELU2)
		return tern_fail(TERN_E_INVALID, "%s: unknown activation %d", op, (int)act);
	return vectors(op, n, names, v, nv);
}

enum tern_status tern_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
			     struct tern_view u, int64_t n, enum tern_act act)
{
	if (!be->vt->swiglu)
		return missing(be, TERN_OP_SWIGLU);
	static const char *const names[] = {"h", "g", "u"};
	struct tern_view v[3] = {h, g, u};
	enum tern_status st = mlp_check("swiglu", n, act, names, v, 3);
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_SWIGLU, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->swiglu(be, h, g, u, n, act));
}

enum tern_status tern_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				 struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				 enum tern_act act)
{
	if (!be->vt->swiglu_bwd)
		return missing(be, TERN_OP_SWIGLU_BWD);
	static const char *const names[] = {"dg", "du", "dh", "g", "u"};
	struct tern_view v[5] = {dg, du, dh, g, u};
	enum tern_status st = mlp_check("swiglu_bwd", n, act, names, v, 5);
	if (st)
		return st;
	bool prof = prof_begin(be, TERN_OP_SWIGLU_BWD, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->swiglu_bwd(be, dg, du, dh, g, u, n, act));
}

/* The ids are not checked here: they live on the device (the CPU backend reads and checks them;
 * Vulkan writes NaN rows for ids outside [0, V), see backend.h). */
enum tern_status tern_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			    const struct tern_weight *E, int64_t T)
{
	const char *op = "embed";
	if (!be->vt->embed)
		return missing(be, TERN_OP_EMBED);
	enum tern_status st = tern_check_weight(op, E);
	if (st)
		return st;
	if (!plain(E->dtype))
		return tern_fail(TERN_E_UNSUPPORTED, "embed: E dtype %s (f32, f16 or bf16 only)",
				 tern_dtype_name(E->dtype));
	int64_t D = E->I;
	if ((st = dims(op, T, "T", D, "D")))
		return st;
	long long lT = (long long)T, lD = (long long)D;
	if ((st = view(op, "y", y, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "ids", ids, (size_t)T * 4, "T=%lld i32", lT)))
		return st;
	bool prof = prof_begin(be, TERN_OP_EMBED, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->embed(be, y, ids, E, T));
}

/* The ids are not checked here either (see tern_embed). */
enum tern_status tern_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				struct tern_view ids, int64_t T, int64_t V, int64_t D)
{
	const char *op = "embed_bwd";
	if (!be->vt->embed_bwd)
		return missing(be, TERN_OP_EMBED_BWD);
	enum tern_status st;
	if (V < 1 || D < 1)
		return tern_fail(TERN_E_INVALID, "embed_bwd: V=%lld D=%lld (both must be >= 1)", (long long)V,
				 (long long)D);
	if ((st = dims(op, T, "T", D, "D")) || (st = dims(op, V, "V", D, "D")))
		return st;
	long long lT = (long long)T, lD = (long long)D, lV = (long long)V;
	if ((st = view(op, "dE", dE, (size_t)(V * D) * 4, "V=%lld D=%lld f32", lV, lD)) ||
	    (st = view(op, "dy", dy, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "ids", ids, (size_t)T * 4, "T=%lld i32", lT)))
		return st;
	bool prof = prof_begin(be, TERN_OP_EMBED_BWD, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->embed_bwd(be, dE, dy, ids, T, V, D));
}

/* The attention shape: sizes >= 1 (T >= 0), H a multiple of Hkv, T·H·Dh a count, finite scale. */
static enum tern_status attn_shape(const char *op, const struct tern_attn_args *a)
{
	if (!a)
		return tern_fail(TERN_E_INVALID, "%s: no arguments", op);
	if (a->T < 0 || a->H < 1 || a->Hkv < 1 || a->Dh < 1 || a->window < 0 || a->H % a->Hkv != 0 ||
	    a->H > TERN_MAX_ELEMS / a->Dh || a->T > TERN_MAX_ELEMS / (a->H * a->Dh) || !isfinite(a->scale))
		return tern_fail(TERN_E_INVALID,
				 "%s: bad shape T=%lld H=%lld Hkv=%lld Dh=%lld window=%lld scale=%g (needs "
				 "H %% Hkv == 0, sizes >= 1, finite scale)",
				 op, (long long)a->T, (long long)a->H, (long long)a->Hkv, (long long)a->Dh,
				 (long long)a->window, (double)a->scale);
	return TERN_OK;
}

/* The (query, key) pairs of a causal attention for the profiler: the caller's count, else one
 * sequence of T. */
static double attn_pairs(const struct tern_attn_args *a)
{
	return a->pairs > 0.0 ? a->pairs : (double)a->T * (double)(a->T + 1) / 2.0;
}

/* fp32 (seg: i32) tensors of n[k] elements, the shape in any message. */
static enum tern_status attn_views(const char *op, const struct tern_attn_args *a, const char *const *names,
				   const struct tern_view *v, const int64_t *n, int nv)
{
	enum tern_status st = TERN_OK;
	for (int k = 0; k < nv && st == TERN_OK; k++)
		st = view(op, names[k], v[k], (size_t)n[k] * 4, "T=%lld H=%lld Hkv=%lld Dh=%lld",
			  (long long)a->T, (long long)a->H, (long long)a->Hkv, (long long)a->Dh);
	return st;
}

enum tern_status tern_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				struct tern_view q, struct tern_view k, struct tern_view v,
				struct tern_view seg, const struct tern_attn_args *a)
{
	const char *op = "attention";
	if (!be->vt->attention)
		return missing(be, TERN_OP_ATTENTION);
	enum tern_status st = attn_shape(op, a);
	if (st)
		return st;
	int64_t nq = a->T * a->H * a->Dh, nk = a->T * a->Hkv * a->Dh;
	static const char *const names[] = {"o", "lse", "q", "k", "v", "seg"};
	struct tern_view vs[6] = {o, lse, q, k, v, seg};
	int64_t n[6] = {nq, a->H * a->T, nq, nk, nk, a->T};
	if ((st = attn_views(op, a, names, vs, n, 6)))
		return st;
	/* two products (q kᵀ and p v) per score the masks leave */
	double flops = 2.0 * 2.0 * attn_pairs(a) * (double)a->H * (double)a->Dh;
	bool prof = prof_begin(be, TERN_OP_ATTENTION, TERN_PROF_ATTENTION, flops);
	return prof_end(be, prof, TERN_PROF_ATTENTION, be->vt->attention(be, o, lse, q, k, v, seg, a));
}

enum tern_status tern_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				   struct tern_view k, struct tern_view v, const struct tern_attn_kv_args *a)
{
	const char *op = "attention_kv";
	if (!be->vt->attention_kv)
		return missing(be, TERN_OP_ATTENTION_KV);
	if (!a)
		return tern_fail(TERN_E_INVALID, "%s: no arguments", op);
	long long lq = (long long)a->Tq, lk = (long long)a->Tk, lh = (long long)a->H, lkv = (long long)a->Hkv,
		  ld = (long long)a->Dh;
	if (a->Tq < 0 || a->Tk < 1 || a->Tk < a->Tq || a->H < 1 || a->Hkv < 1 || a->Dh < 1 || a->window < 0 ||
	    a->H % a->Hkv != 0 || a->H > TERN_MAX_ELEMS / a->Dh || a->Tk > TERN_MAX_ELEMS / (a->H * a->Dh) ||
	    !isfinite(a->scale))
		return tern_fail(TERN_E_INVALID,
				 "%s: bad shape Tq=%lld Tk=%lld H=%lld Hkv=%lld Dh=%lld window=%lld scale=%g "
				 "(needs 0 <= Tq <= Tk, Tk >= 1, H %% Hkv == 0, sizes >= 1, finite scale)",
				 op, lq, lk, lh, lkv, ld, (long long)a->window, (double)a->scale);
	enum tern_status st;
	size_t nq = (size_t)(a->Tq * a->H * a->Dh) * 4, nk = (size_t)(a->Tk * a->Hkv * a->Dh) * 4;
	const char *fmt = "Tq=%lld Tk=%lld H=%lld Hkv=%lld Dh=%lld";
	if ((st = view(op, "o", o, nq, fmt, lq, lk, lh, lkv, ld)) ||
	    (st = view(op, "q", q, nq, fmt, lq, lk, lh, lkv, ld)) ||
	    (st = view(op, "k", k, nk, fmt, lq, lk, lh, lkv, ld)) ||
	    (st = view(op, "v", v, nk, fmt, lq, lk, lh, lkv, ld)))
		return st;
	/* two products (q kᵀ and p v) per score, Tq rows of up to Tk keys */
	double flops = 2.0 * 2.0 * (double)a->Tq * (double)a->Tk * (double)a->H * (double)a->Dh;
	bool prof = prof_begin(be, TERN_OP_ATTENTION_KV, TERN_PROF_ATTENTION, flops);
	return prof_end(be, prof, TERN_PROF_ATTENTION, be->vt->attention_kv(be, o, q, k, v, a));
}

enum tern_status tern_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				    struct tern_view dv, struct tern_view dout, struct tern_view q,
				    struct tern_view k, struct tern_view v, struct tern_view o,
				    struct tern_view lse, struct tern_view seg,
				    const struct tern_attn_args *a)
{
	const char *op = "attention_bwd";
	if (!be->vt->attention_bwd)
		return missing(be, TERN_OP_ATTENTION_BWD);
	enum tern_status st = attn_shape(op, a);
	if (st)
		return st;
	int64_t nq = a->T * a->H * a->Dh, nk = a->T * a->Hkv * a->Dh;
	static const char *const names[] = {"dq", "dk", "dv", "dout", "q", "k", "v", "o", "lse", "seg"};
	struct tern_view vs[10] = {dq, dk, dv, dout, q, k, v, o, lse, seg};
	int64_t n[10] = {nq, nk, nk, nq, nq, nk, nk, nq, a->H * a->T, a->T};
	if ((st = attn_views(op, a, names, vs, n, 10)))
		return st;
	/* 2.5 times the forward: five products per score (q kᵀ recomputed, dO vᵀ, dV, dQ, dK) against
	 * the forward's two */
	double flops = 2.5 * 2.0 * 2.0 * attn_pairs(a) * (double)a->H * (double)a->Dh;
	bool prof = prof_begin(be, TERN_OP_ATTENTION_BWD, TERN_PROF_ATTENTION, flops);
	return prof_end(be, prof, TERN_PROF_ATTENTION,
			be->vt->attention_bwd(be, dq, dk, dv, dout, q, k, v, o, lse, seg, a));
}

/* The labels are not checked here: they live on the device (the CPU backend reads and checks
 * them; Vulkan makes a bad label's term NaN, see backend.h). */
enum tern_status tern_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
			      struct tern_view dW, struct tern_view x, const struct tern_weight *W,
			      struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec)
{
	const char *op = "ce_loss";
	if (!be->vt->ce_loss)
		return missing(be, TERN_OP_CE_LOSS);
	enum tern_status st = tern_check_weight(op, W);
	if (st)
		return st;
	if (!plain(W->dtype))
		return tern_fail(TERN_E_UNSUPPORTED, "ce_loss: W dtype %s (lm_head takes f32, f16 or bf16)",
				 tern_dtype_name(W->dtype));
	int64_t D = W->I;
	if (T < 0 || T > TERN_MAX_ELEMS / D)
		return tern_fail(TERN_E_INVALID, "ce_loss: T=%lld is out of range for D=%lld", (long long)T,
				 (long long)D);
	if (!isfinite(inv_n))
		return tern_fail(TERN_E_INVALID, "ce_loss: inv_n=%g is not finite", (double)inv_n);
	if (!plain(prec))
		return tern_fail(TERN_E_INVALID, "ce_loss: precision %s is not f32, f16 or bf16",
				 tern_dtype_name(prec));
	long long lT = (long long)T, lD = (long long)D;
	if ((st = view(op, "loss", loss, 4, "1 f32")) ||
	    (st = view(op, "dx", dx, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "x", x, (size_t)(T * D) * 4, "T=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "labels", labels, (size_t)T * 4, "T=%lld i32", lT)))
		return st;
	if (dW.size && W->dtype != TERN_F32)
		return tern_fail(TERN_E_UNSUPPORTED, "ce_loss: dW needs an f32 W (got %s)",
				 tern_dtype_name(W->dtype));
	if (dW.size &&
	    (st = view(op, "dW", dW, (size_t)(W->O * D) * 4, "V=%lld D=%lld f32", (long long)W->O, lD)))
		return st;
	/* the logits x Wᵀ and dx = (softmax - onehot) W (and dW += dzᵀ x) */
	bool prof = prof_begin(be, TERN_OP_CE_LOSS, TERN_PROF_LOSS,
			       (dW.size ? 3.0 : 2.0) * 2.0 * (double)T * (double)W->O * (double)D);
	return prof_end(be, prof, TERN_PROF_LOSS,
			be->vt->ce_loss(be, loss, dx, dW, x, W, labels, T, inv_n, prec));
}

/* ---- mixture-of-experts row ops ----------------------------------------------------------- */

/* D >= 1 and n, Tx (or Ty) in range with n·D and Tx·D counts; rows names Tx or Ty. The idx are
 * not checked here: they live on the device (the CPU checks them, Vulkan marks or skips them). */
static enum tern_status rows_shape(const char *op, int64_t n, int64_t T, const char *tn, int64_t D)
{
	enum tern_status st;
	if (D < 1)
		return tern_fail(TERN_E_INVALID, "%s: D=%lld (D >= 1)", op, (long long)D);
	if ((st = dims(op, n, "n", D, "D")) || (st = dims(op, T, tn, D, "D")))
		return st;
	return TERN_OK;
}

enum tern_status tern_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				  struct tern_view idx, int64_t n, int64_t Tx, int64_t D)
{
	const char *op = "gather_rows";
	if (!be->vt->gather_rows)
		return missing(be, TERN_OP_GATHER_ROWS);
	enum tern_status st = rows_shape(op, n, Tx, "Tx", D);
	if (st)
		return st;
	long long ln = (long long)n, lT = (long long)Tx, lD = (long long)D;
	if ((st = view(op, "y", y, (size_t)(n * D) * 4, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = view(op, "x", x, (size_t)(Tx * D) * 4, "Tx=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "idx", idx, (size_t)n * 4, "n=%lld i32", ln)))
		return st;
	bool prof = prof_begin(be, TERN_OP_GATHER_ROWS, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->gather_rows(be, y, x, idx, n, Tx, D));
}

enum tern_status tern_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				       struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
				       int64_t D)
{
	const char *op = "scatter_add_rows";
	if (!be->vt->scatter_add_rows)
		return missing(be, TERN_OP_SCATTER_ADD_ROWS);
	enum tern_status st = rows_shape(op, n, Ty, "Ty", D);
	if (st)
		return st;
	long long ln = (long long)n, lT = (long long)Ty, lD = (long long)D;
	if ((st = view(op, "y", y, (size_t)(Ty * D) * 4, "Ty=%lld D=%lld f32", lT, lD)) ||
	    (st = view(op, "x", x, (size_t)(n * D) * 4, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = view(op, "idx", idx, (size_t)n * 4, "n=%lld i32", ln)))
		return st;
	/* w: n weights, or none at all (every weight 1) */
	if (w.size && (st = view(op, "w", w, (size_t)n * 4,
				 "n=%lld f32, or a view of size 0 for unit "
				 "weights",
				 ln)))
		return st;
	bool prof = prof_begin(be, TERN_OP_SCATTER_ADD_ROWS, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->scatter_add_rows(be, y, x, idx, w, n, Ty, D));
}

enum tern_status tern_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
			     struct tern_view b, int64_t n, int64_t D)
{
	const char *op = "rowdot";
	if (!be->vt->rowdot)
		return missing(be, TERN_OP_ROWDOT);
	enum tern_status st;
	if (D < 1)
		return tern_fail(TERN_E_INVALID, "rowdot: D=%lld (D >= 1)", (long long)D);
	if ((st = dims(op, n, "n", D, "D")))
		return st;
	long long ln = (long long)n, lD = (long long)D;
	if ((st = view(op, "out", out, (size_t)n * 4, "n=%lld f32", ln)) ||
	    (st = view(op, "a", a, (size_t)(n * D) * 4, "n=%lld D=%lld f32", ln, lD)) ||
	    (st = view(op, "b", b, (size_t)(n * D) * 4, "n=%lld D=%lld f32", ln, lD)))
		return st;
	bool prof = prof_begin(be, TERN_OP_ROWDOT, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->rowdot(be, out, a, b, n, D));
}

enum tern_status tern_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x, int64_t T,
				 int64_t I)
{
	const char *op = "act_quant8";
	if (!be->vt->act_quant8)
		return missing(be, TERN_OP_ACT_QUANT8);
	enum tern_status st;
	if (I < 1)
		return tern_fail(TERN_E_INVALID, "act_quant8: I=%lld (I >= 1)", (long long)I);
	if ((st = dims(op, T, "T", I, "I")))
		return st;
	long long lT = (long long)T, lI = (long long)I;
	if ((st = view(op, "y", y, (size_t)(T * I) * 4, "T=%lld I=%lld f32", lT, lI)) ||
	    (st = view(op, "x", x, (size_t)(T * I) * 4, "T=%lld I=%lld f32", lT, lI)))
		return st;
	size_t n = (size_t)(T * I) * 4;
	bool same = y.buf == x.buf && y.off == x.off;
	if (!same && n > 0 && y.buf == x.buf && y.off < x.off + n && x.off < y.off + n)
		return tern_fail(TERN_E_INVALID,
				 "act_quant8: y (offset %zu) overlaps x (offset %zu) without being x itself",
				 y.off, x.off);
	bool prof = prof_begin(be, TERN_OP_ACT_QUANT8, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->act_quant8(be, y, x, T, I));
}

enum tern_status tern_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x, int64_t rows,
			     int64_t n)
{
	const char *op = "argmax";
	if (!be->vt->argmax)
		return missing(be, TERN_OP_ARGMAX);
	enum tern_status st;
	if (n < 1 || n > INT32_MAX)
		return tern_fail(TERN_E_INVALID, "argmax: n=%lld (1 <= n <= 2^31 - 1: i32 indices)",
				 (long long)n);
	if ((st = dims(op, rows, "rows", n, "n")))
		return st;
	long long lr = (long long)rows, ln = (long long)n;
	if ((st = view(op, "out", out, (size_t)rows * 4, "rows=%lld i32", lr)) ||
	    (st = view(op, "x", x, (size_t)(rows * n) * 4, "rows=%lld n=%lld f32", lr, ln)))
		return st;
	bool prof = prof_begin(be, TERN_OP_ARGMAX, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE, be->vt->argmax(be, out, x, rows, n));
}

/* The router's shape: E >= 1 (and an i32 id), 1 <= k <= E, T·E a count. */
static enum tern_status route_shape(const char *op, int64_t T, int64_t E, int64_t k)
{
	if (E < 1 || E > INT32_MAX || k < 1 || k > E)
		return tern_fail(TERN_E_INVALID, "%s: E=%lld k=%lld (needs 1 <= k <= E < 2^31)", op,
				 (long long)E, (long long)k);
	return dims(op, T, "T", E, "E");
}

enum tern_status tern_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				 struct tern_view prob, struct tern_view counts, struct tern_view logits,
				 int64_t T, int64_t E, int64_t k, bool norm)
{
	const char *op = "route_topk";
	if (!be->vt->route_topk)
		return missing(be, TERN_OP_ROUTE_TOPK);
	enum tern_status st = route_shape(op, T, E, k);
	if (st)
		return st;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	if ((st = view(op, "sel", sel, (size_t)(T * k) * 4, "T=%lld k=%lld i32", lT, lk)) ||
	    (st = view(op, "w", w, (size_t)(T * k) * 4, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = view(op, "prob", prob, (size_t)(T * E) * 4, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = view(op, "counts", counts, (size_t)E * 4, "E=%lld i32", lE)) ||
	    (st = view(op, "logits", logits, (size_t)(T * E) * 4, "T=%lld E=%lld f32", lT, lE)))
		return st;
	bool prof = prof_begin(be, TERN_OP_ROUTE_TOPK, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->route_topk(be, sel, w, prob, counts, logits, T, E, k, norm));
}

/* sel is not checked here: it lives on the device (the CPU checks it, Vulkan skips bad ids). */
enum tern_status tern_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits, struct tern_view dw,
				     struct tern_view prob, struct tern_view sel, int64_t T, int64_t E,
				     int64_t k, bool norm)
{
	const char *op = "route_topk_bwd";
	if (!be->vt->route_topk_bwd)
		return missing(be, TERN_OP_ROUTE_TOPK_BWD);
	enum tern_status st = route_shape(op, T, E, k);
	if (st)
		return st;
	long long lT = (long long)T, lE = (long long)E, lk = (long long)k;
	if ((st = view(op, "dlogits", dlogits, (size_t)(T * E) * 4, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = view(op, "dw", dw, (size_t)(T * k) * 4, "T=%lld k=%lld f32", lT, lk)) ||
	    (st = view(op, "prob", prob, (size_t)(T * E) * 4, "T=%lld E=%lld f32", lT, lE)) ||
	    (st = view(op, "sel", sel, (size_t)(T * k) * 4, "T=%lld k=%lld i32", lT, lk)))
		return st;
	bool prof = prof_begin(be, TERN_OP_ROUTE_TOPK_BWD, TERN_PROF_ELEMENTWISE, 0.0);
	return prof_end(be, prof, TERN_PROF_ELEMENTWISE,
			be->vt->route_topk_bwd(be, dlogits, dw, prob, sel, T, E, k, norm));
}

/* The grouped matmul: E checked experts (struct tern_experts: expert 0 a checked weight, not
 * ternary, strides multiples of 4 that keep every expert's part inside 2^62 bytes, NF4_DQ's
 * offsets f32 [E]), T rows, off i32 [E + 1]; out/in as for mm_check. The offsets and the
 * experts' bytes past expert 0 are not checked here: they live on the device (the backend checks
 * its views). */
static enum tern_status mmg_check(struct tern_backend *be, bool bwd, struct tern_view out,
				  struct tern_view in, const struct tern_experts *x, struct tern_view off,
				  int64_t T, enum tern_dtype prec)
{
	const char *op = bwd ? "matmul_grouped_bwd" : "matmul_grouped";
	enum tern_status st;
	if (!x)
		return tern_fail(TERN_E_INVALID, "%s: no experts", op);
	const struct tern_weight *w = &x->w;
	int64_t E = x->E;
	if ((st = tern_check_weight(op, w)))
		return st;
	if (E < 1 || E > INT32_MAX)
		return tern_fail(TERN_E_INVALID, "%s: E=%lld is outside [1, 2^31 - 1]", op, (long long)E);
	if (w->dtype == TERN_TERNARY)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: ternary weights have one scale per matrix, not one per expert", op);
	static const char *const part[3] = {"data", "absmax", "nested"};
	const struct tern_view *pv[3] = {&w->data, &w->absmax, &w->nested};
	for (int k = 0; k < 3; k++) {
		uint64_t sk = x->stride[k], end = (uint64_t)pv[k]->off + pv[k]->size;
		if (sk % 4 || sk > (UINT64_C(1) << 62) / (uint64_t)E ||
		    (uint64_t)(E - 1) * sk > (UINT64_C(1) << 62) - end)
			return tern_fail(TERN_E_INVALID,
					 "%s: the experts' %s stride %llu bytes is not a multiple of 4 or "
					 "reaches past 2^62 bytes (E=%lld)",
					 op, part[k], (unsigned long long)sk, (long long)E);
	}
	if (w->dtype == TERN_NF4_DQ &&
	    (st = view(op, "offsets", x->offsets, (size_t)E * 4, "E=%lld f32", (long long)E)))
		return st;
	if (!plain(prec))
		return tern_fail(TERN_E_INVALID, "%s: precision %s is not f32, f16 or bf16", op,
				 tern_dtype_name(prec));
	if (prec != TERN_F32)
		return tern_fail(TERN_E_UNSUPPORTED, "backend %s: %s precision %s is not supported", be->name,
				 op, tern_dtype_name(prec));
	if ((st = tokens(op, T, w)))
		return st;
	int64_t O = w->O;
	long long lT = (long long)T, lO = (long long)O, I = (long long)w->I, lE = (long long)E;
	if (bwd) {
		if ((st = view(op, "dx", out, (size_t)(T * w->I) * 4, "T=%lld I=%lld f32", lT, I)) ||
		    (st = view(op, "dy", in, (size_t)(T * O) * 4, "T=%lld O=%lld f32", lT, lO)))
			return st;
	} else {
		if ((st = view(op, "y", out, (size_t)(T * O) * 4, "T=%lld O=%lld f32", lT, lO)) ||
		    (st = view(op, "x", in, (size_t)(T * w->I) * 4, "T=%lld I=%lld f32", lT, I)))
			return st;
	}
	return view(op, "off", off, (size_t)(E + 1) * 4, "E+1=%lld i32", lE + 1);
}

enum tern_status tern_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
				     const struct tern_experts *x, struct tern_view off, int64_t T,
				     enum tern_dtype prec)
{
	if (!be->vt->matmul_grouped)
		return missing(be, TERN_OP_MATMUL_GROUPED);
	enum tern_status st = mmg_check(be, false, y, in, x, off, T, prec);
	if (st)
		return st;
	enum tern_prof_kind pk = TERN_PROF_MATMUL_FWD;
	bool prof =
		prof_begin(be, TERN_OP_MATMUL_GROUPED, pk, 2.0 * (double)T * (double)x->w.O * (double)x->w.I);
	return prof_end(be, prof, pk, be->vt->matmul_grouped(be, y, in, x, off, T, prec));
}

enum tern_status tern_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					 const struct tern_experts *x, struct tern_view off, int64_t T,
					 bool accumulate, enum tern_dtype prec)
{
	if (!be->vt->matmul_grouped_bwd)
		return missing(be, TERN_OP_MATMUL_GROUPED_BWD);
	enum tern_status st = mmg_check(be, true, dx, dy, x, off, T, prec);
	if (st)
		return st;
	enum tern_prof_kind pk = TERN_PROF_MATMUL_BWD;
	bool prof = prof_begin(be, TERN_OP_MATMUL_GROUPED_BWD, pk,
			       2.0 * (double)T * (double)x->w.O * (double)x->w.I);
	return prof_end(be, prof, pk, be->vt->matmul_grouped_bwd(be, dx, dy, x, off, T, accumulate, prec));
}
