/* Linear with LoRA (training-math.md "Linear with LoRA"), composed only from the ops' front doors
 * (tern_gemm, tern_matmul, ...) so that every backend runs the same sequence:
 *
 *   forward   xd = drop(x)                       [T,I]   (p > 0 only; p == 0 uses x itself)
 *             u  = xd Aᵀ                         [T,R]   saved for the backward
 *             y  = x Wᵀ + s · u Bᵀ              [T,O]   (xbase Wᵀ when given: BitNet)
 *   backward  dB += s · dyᵀ u                    [O,R]
 *             du  = s · dy B                     [T,R]
 *             dA += duᵀ xd                       [R,I]
 *             dx (+)= dy W + drop(du A)          [T,I]   same mask as the forward (same key)
 *
 * Where tern_lora_fused says so (the backend's matmul_lora: CUDA at bf16 products, Vulkan at f16
 * products unless TERN_VK_LORA_FUSE=0; no dropout, no xbase), the two rank-R updates ride in the
 * base products instead of two gemms that read and write y and dx again: y = [x | s·u] · [W | B]ᵀ
 * and dx (+)= [dy | du] · [W ; A]. u, dB, du and dA are the same gemms either way, in the same
 * order.
 */
#include "backend/backend.h"

#include <math.h>

static enum tern_status check_lora(const char *op, const struct tern_lora *lora, int64_t T,
				   const struct tern_weight *w)
{
	if (!lora)
		return tern_fail(TERN_E_INVALID, "%s: no LoRA parameters", op);
	if (!w)
		return tern_fail(TERN_E_INVALID, "%s: no weight", op);
	if (T < 0 || lora->R <= 0)
		return tern_fail(TERN_E_INVALID, "%s: bad sizes T=%lld R=%lld", op, (long long)T,
				 (long long)lora->R);
	if (!(lora->dropout >= 0.0f && lora->dropout < 1.0f))
		return tern_fail(TERN_E_INVALID, "%s: dropout p=%g is outside [0, 1)", op,
				 (double)lora->dropout);
	if (!isfinite(lora->scale))
		return tern_fail(TERN_E_INVALID, "%s: LoRA scale is %g", op, (double)lora->scale);
	enum tern_status st = tern_check_view(op, "A", lora->A, (size_t)(lora->R * w->I) * 4);
	if (st == TERN_OK)
		st = tern_check_view(op, "B", lora->B, (size_t)(w->O * lora->R) * 4);
	return st;
}

bool tern_lora_fused(struct tern_backend *be, const struct tern_weight *w, const struct tern_lora *lora,
		     int64_t T)
{
	const struct tern_backend_vtable *vt = be->vt;
	return vt->lora_fuses && vt->matmul_lora && vt->matmul_lora_bwd && lora->dropout == 0.0f &&
	       !lora->xbase.size &&
	       (lora->lprec == lora->prec || (lora->prec == TERN_F16 && lora->lprec == TERN_F32)) &&
	       vt->lora_fuses(be, w, lora->R, T, lora->prec);
}

/* u[T,R] = drop(x)[T,I] · A[R,I]ᵀ, xd[T,I] = drop(x) written first where p > 0 (lora checked) */
static enum tern_status form_u(struct tern_backend *be, const char *op, struct tern_view u,
			       struct tern_view xd, struct tern_view x, const struct tern_weight *w,
			       const struct tern_lora *lora, int64_t T)
{
	int64_t R = lora->R, I = w->I;
	enum tern_status st = tern_check_view(op, "u", u, (size_t)(T * R) * 4);
	if (st != TERN_OK)
		return st;
	struct tern_view xin = x;
	if (lora->dropout > 0.0f) {
		if ((st = tern_check_view(op, "xd", xd, (size_t)(T * I) * 4)) != TERN_OK ||
		    (st = tern_dropout(be, xd, x, T * I, lora->dropout, lora->key)) != TERN_OK)
			return st;
		xin = xd;
	}
	return tern_gemm(be, u, xin, lora->A, T, R, I, false, true, 1.0f, 0.0f, lora->lprec);
}

enum tern_status tern_lora_forward(struct tern_backend *be, struct tern_view y, struct tern_view u,
				   struct tern_view xd, struct tern_view x, const struct tern_weight *w,
				   const struct tern_lora *lora, int64_t T)
{
	enum tern_status st = check_lora("lora_forward", lora, T, w);
	if (st != TERN_OK || (st = form_u(be, "lora_forward", u, xd, x, w, lora, T)) != TERN_OK)
		return st;
	int64_t R = lora->R, O = w->O;
	/* y[T,O] = [x | s·u] · [W | B]ᵀ in one product */
	if (tern_lora_fused(be, w, lora, T))
		return tern_matmul_lora(be, y, x, u, lora->B, w, R, lora->scale, T, lora->prec);
	/* y[T,O] = x[T,I] · W[O,I]ᵀ */
	if ((st = tern_matmul(be, y, lora->xbase.size ? lora->xbase : x, w, T, lora->prec)) != TERN_OK)
		return st;
	/* y[T,O] += s · u[T,R] · B[O,R]ᵀ */
	return tern_gemm(be, y, u, lora->B, T, O, R, false, true, lora->scale, 1.0f, lora->lprec);
}

enum tern_status tern_lora_add(struct tern_backend *be, struct tern_view y, struct tern_view u,
			       struct tern_view xd, struct tern_view x, const struct tern_weight *w,
			       const struct tern_lora *lora, int64_t T)
{
	enum tern_status st = check_lora("lora_add", lora, T, w);
	if (st != TERN_OK)
		return st;
	if (lora->xbase.size || tern_lora_fused(be, w, lora, T))
		return tern_fail(TERN_E_INVALID,
				 "lora_add: only for an unfused LoRA without xbase (R=%lld T=%lld)",
				 (long long)lora->R, (long long)T);
	/* u[T,R] = drop(x)[T,I] · A[R,I]ᵀ, then y[T,O] += s · u[T,R] · B[O,R]ᵀ: tern_lora_forward's
	 * gemms (form_u refuses p > 0 without xd, before writing) */
	if ((st = form_u(be, "lora_add", u, xd, x, w, lora, T)) != TERN_OK)
		return st;
	return tern_gemm(be, y, u, lora->B, T, w->O, lora->R, false, true, lora->scale, 1.0f, lora->lprec);
}

enum tern_status tern_lora_u(struct tern_backend *be, struct tern_view u, struct tern_view xd,
			     struct tern_view x, const struct tern_weight *w, const struct tern_lora *lora,
			     int64_t T)
{
	enum tern_status st = check_lora("lora_u", lora, T, w);
	return st != TERN_OK ? st : form_u(be, "lora_u", u, xd, x, w, lora, T);
}

enum tern_status tern_lora_backward(struct tern_backend *be, struct tern_view dx, struct tern_view dA,
				    struct tern_view dB, struct tern_view du, struct tern_view tmp,
				    struct tern_view dy, struct tern_view x, struct tern_view xd,
				    struct tern_view u, const struct tern_weight *w,
				    const struct tern_lora *lora, int64_t T, bool accumulate)
{
	enum tern_status st = check_lora("lora_backward", lora, T, w);
	if (st != TERN_OK)
		return st;
	int64_t R = lora->R, I = w->I, O = w->O;
	bool drop = lora->dropout > 0.0f;
	if ((st = tern_check_view("lora_backward", "du", du, (size_t)(T * R) * 4)) != TERN_OK)
		return st;
	if (drop && (st = tern_check_view("lora_backward", "tmp", tmp, (size_t)(T * I) * 4)) != TERN_OK)
		return st;
	if (drop && (st = tern_check_view("lora_backward", "xd", xd, (size_t)(T * I) * 4)) != TERN_OK)
		return st;
	struct tern_view xin = drop ? xd : x;

	/* dB[O,R] += s · dy[T,O]ᵀ · u[T,R] */
	if ((st = tern_gemm(be, dB, dy, u, O, R, T, true, false, lora->scale, 1.0f, lora->lprec)) != TERN_OK)
		return st;
	/* du[T,R] = s · dy[T,O] · B[O,R] */
	if ((st = tern_gemm(be, du, dy, lora->B, T, R, O, false, false, lora->scale, 0.0f, lora->lprec)) !=
	    TERN_OK)
		return st;
	/* dA[R,I] += du[T,R]ᵀ · xin[T,I]; the last read of x, so dx may be x (backend.h) */
	if ((st = tern_gemm(be, dA, du, xin, R, I, T, true, false, 1.0f, 1.0f, lora->lprec)) != TERN_OK)
		return st;
	/* dx[T,I] (+)= [dy | du] · [W ; A] in one product */
	if (tern_lora_fused(be, w, lora, T))
		return tern_matmul_lora_bwd(be, dx, dy, du, lora->A, w, R, T, accumulate, lora->prec);
	/* dx[T,I] (+)= dy[T,O] · W[O,I] */
	if ((st = tern_matmul_bwd(be, dx, dy, w, T, accumulate, lora->prec)) != TERN_OK)
		return st;
	if (!drop) {
		/* dx[T,I] += du[T,R] · A[R,I] */
		return tern_gemm(be, dx, du, lora->A, T, I, R, false, false, 1.0f, 1.0f, lora->lprec);
	}
	/* tmp[T,I] = du · A, masked and rescaled with the forward's mask, then added to dx */
	if ((st = tern_gemm(be, tmp, du, lora->A, T, I, R, false, false, 1.0f, 0.0f, lora->lprec)) != TERN_OK)
		return st;
	if ((st = tern_dropout(be, tmp, tmp, T * I, lora->dropout, lora->key)) != TERN_OK)
		return st;
	return tern_axpy(be, dx, tmp, T * I, 1.0f);
}
