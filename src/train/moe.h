/* Mixture-of-experts routing on the host (mixtral, qwen3_moe), as transformers computes it:
 *	p = softmax(logits) over E in fp32;  (v, e) = topk(p, k) (descending, lower index first on
 *	ties, torch.topk's order);  w = v / Σ v when norm_topk (Mixtral always), else w = v.
 * and its backward: d(logits) from the gradient of each routing weight.
 *
 * The grouped layout: the rows of expert e are the tokens that chose it, ascending, at data rows
 * off[e] .. off[e] + cnt[e] of the expert activations (off[e] a multiple of `pad` rows, so each
 * expert's views start aligned) and at idx rows ioff[e] .. (a multiple of 64: i32/f32 arrays).
 * idx[ioff[e] + j] is the token of the j-th row, wrow[...] its routing weight.
 *
 * The same rows for the grouped ops (one matmul_grouped per projection, net.c), in one block the
 * net uploads at once (blk, nblk i32 entries; each array at a multiple of 64 entries): dtok[cap]
 * and dwt[cap], the token and routing weight of every data row (the gap rows that align the next
 * expert: token 0, weight 0, so every row holds finite values); goff[E + 1], expert e's data rows
 * [goff[e], goff[e+1]) (its tokens, then its gap); srow[s·T + t] and sw[s·T + t] for s < k, the data
 * row and weight of token t's s-th choice counted in ascending expert order (so the combine, one
 * slot after another, adds each token's experts in expert order, as the loop over experts did). */
#ifndef TERN_TRAIN_MOE_H
#define TERN_TRAIN_MOE_H

#include "core/core.h"

#include <stdbool.h>
#include <stdint.h>

struct tern_moe_route {
	int64_t T, E, k, pad;
	int64_t cap, icap;         /* data rows and idx rows allocated: T·k + E·(pad − 1), T·k + E·63 */
	float *prob;               /* [T, E] */
	int32_t *sel;              /* [T, k] expert of each choice */
	float *topv, *w;           /* [T, k] probability and routing weight of each choice */
	int32_t *pos;              /* [T, k] the idx row of each choice */
	int64_t *cnt, *off, *ioff; /* [E] */
	int32_t *idx;              /* [icap] token of each row (ioff layout; gaps 0) */
	float *wrow;               /* [icap] routing weight of each row (gaps 0) */
	int32_t *dpos;             /* [T, k] the data row of each choice */
	int32_t *blk;              /* [nblk] the grouped block: */
	int64_t nblk, b_dtok, b_dwt, b_goff, b_srow, b_sw; /* its size and the arrays' entries */
	int64_t rows;                                      /* goff[E]: the data rows in use */
};

/* Rows of capacity for T tokens, E experts, top k, data alignment pad. */
int64_t tern_moe_cap(int64_t T, int64_t E, int64_t k, int64_t pad);
int64_t tern_moe_icap(int64_t T, int64_t E, int64_t k);
/* i32 entries of the grouped block (blk) for T tokens, E experts, top k, data alignment pad. */
int64_t tern_moe_nblk(int64_t T, int64_t E, int64_t k, int64_t pad);

/* pad: the smallest row count whose byte size is a multiple of 256 for every width in w[n]. */
int64_t tern_moe_pad(const int64_t *w, int n);

enum tern_status tern_moe_route_alloc(int64_t T, int64_t E, int64_t k, int64_t pad,
				      struct tern_moe_route **out);
void tern_moe_route_free(struct tern_moe_route *r);

/* Routes T <= r->T tokens from logits [T, E] (both layouts). */
void tern_moe_route(struct tern_moe_route *r, const float *logits, int64_t T, bool norm_topk);

/* dlogits[T, E] (=) from dwrow (the gradient of each row's weight: ioff layout [icap], or with
 * data_rows the data-row layout [cap] of the grouped ops) and, when
 * gp is not NULL, gp[E] added to the gradient of every real token's probabilities p[t, e]
 * (seg[t] >= 0; the load-balancing loss, below). */
void tern_moe_route_bwd(const struct tern_moe_route *r, const float *dwrow, bool data_rows, int64_t T,
			bool norm_topk, const double *gp, const int32_t *seg, float *dlogits);

/* The load-balancing loss as transformers' load_balancing_loss_func computes it (Mixtral,
 * Qwen3-MoE, output_router_logits): over the rows of every sparse layer whose token is real
 * (attention_mask 1; here seg[t] >= 0),
 *	aux = E · Σ_e (C_e / N) · (P_e / N)
 * C_e the number of top-k choices of expert e, P_e the sum of p[·, e], N the rows. The top-k mask
 * has no gradient: d aux / d p[row, e] = E · C_e / N² for each counted row.
 * tern_moe_aux_add adds one layer's routing to the sums (cnt, prob [E], *rows); tern_moe_aux
 * returns aux from them and writes gp[e] = coef · E · C_e / N² (0 when N = 0). */
void tern_moe_aux_add(const struct tern_moe_route *r, int64_t T, const int32_t *seg, double *cnt,
		      double *prob, double *rows);
double tern_moe_aux(int64_t E, const double *cnt, const double *prob, double rows, double coef, double *gp);

#endif
