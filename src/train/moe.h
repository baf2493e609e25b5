/* Mixture-of-experts routing on the host (mixtral, qwen3_moe), as transformers computes it:
 *	p = softmax(logits) over E in fp32;  (v, e) = topk(p, k) (descending, lower index first on
 *	ties, torch.topk's order);  w = v / Σ v when norm_topk (Mixtral always), else w = v.
 * and its backward: d(logits) from the gradient of each routing weight.
 *
 * The grouped layout: the rows of expert e are the tokens that chose it, ascending, at data rows
 * off[e] .. off[e] + cnt[e] of the expert activations (off[e] a multiple of `pad` rows, so each
 * expert's views start aligned) and at idx rows ioff[e] .. (a multiple of 64: i32/f32 arrays).
 * idx[ioff[e] + j] is the token of the j-th row, wrow[...] its routing weight. */
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
};

/* Rows of capacity for T tokens, E experts, top k, data alignment pad. */
int64_t tern_moe_cap(int64_t T, int64_t E, int64_t k, int64_t pad);
int64_t tern_moe_icap(int64_t T, int64_t E, int64_t k);

/* pad: the smallest row count whose byte size is a multiple of 256 for every width in w[n]. */
int64_t tern_moe_pad(const int64_t *w, int n);

enum tern_status tern_moe_route_alloc(int64_t T, int64_t E, int64_t k, int64_t pad,
				      struct tern_moe_route **out);
void tern_moe_route_free(struct tern_moe_route *r);

/* Routes T <= r->T tokens from logits [T, E]. */
void tern_moe_route(struct tern_moe_route *r, const float *logits, int64_t T, bool norm_topk);

/* dlogits[T, E] (=) from dwrow[icap] (the gradient of each row's weight, ioff layout) and, when
 * gp is not NULL, gp[E] added to the gradient of every real token's probabilities p[t, e]
 * (seg[t] >= 0; the load-balancing loss, below). */
void tern_moe_route_bwd(const struct tern_moe_route *r, const float *dwrow, int64_t T, bool norm_topk,
			const double *gp, const int32_t *seg, float *dlogits);

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
