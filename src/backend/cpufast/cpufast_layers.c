/* The fast backend's RoPE and SwiGLU (contracts: backend.h; the math as the reference's
 * src/backend/cpu/cpu_layers.c).
 *
 * RoPE: the reference computes c, s = cos θ, sin θ (in double, rounded to fp32) for every token
 * and frequency of every call; here they come from a table over positions 0 .. P-1 kept between
 * calls (the same values: the same formula, computed once while inv_freq stays the same), and
 * the rotation is the reference's fp32 arithmetic, so the result is bit-identical to it.
 * Positions outside the table's reach (negative, 2^20 and above, or beyond 64 MiB of table) are
 * computed directly.
 * SwiGLU: silu in fp32 with the vector exp (cpufast_simd.c); ReLU² runs the reference. */
#include "backend/cpufast/cpufast.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#define ROPE_MAX_POS ((int64_t)1 << 20)
#define ROPE_MAX_BYTES ((int64_t)64 << 20) /* the table's size at most */
#define ROW_TASK 64                        /* token rows of one task */
#define ELEM_TASK 16384                    /* elements of one task */

struct rope_table {
	int64_t half, np;
	float *freq; /* [half]: the inv_freq the table was made for */
	float *cs;   /* [np][half][2]: cos, sin */
};

static void rope_table_free(struct rope_table *r)
{
	if (!r)
		return;
	free(r->freq);
	free(r->cs);
	free(r);
}

void tern_fast_state_free(struct tern_backend *be)
{
	rope_table_free(cpu_be(be)->ext);
	cpu_be(be)->ext = NULL;
}

static inline void rope_cs(float p, float f, float *c, float *s)
{
	float th = p * f;
	*c = (float)cos((double)th);
	*s = (float)sin((double)th);
}

/* The table for inv_freq f[half] covering positions < np (made again when f changes or np
 * grows); NULL when out of memory (the caller then computes directly). */
static struct rope_table *rope_table_get(struct tern_backend *be, const float *f, int64_t half, int64_t np)
{
	struct rope_table *r = cpu_be(be)->ext;
	if (r && r->half == half && r->np >= np && memcmp(r->freq, f, (size_t)half * sizeof(float)) == 0)
		return r;
	if (r && r->half == half && memcmp(r->freq, f, (size_t)half * sizeof(float)) == 0 && np < 2 * r->np)
		np = 2 * r->np; /* grow geometrically, within the cap */
	if (np * half * 2 * (int64_t)sizeof(float) > ROPE_MAX_BYTES)
		np = ROPE_MAX_BYTES / (half * 2 * (int64_t)sizeof(float));
	tern_fast_state_free(be);
	r = tern_calloc(1, sizeof *r);
	if (!r)
		return NULL;
	r->half = half;
	r->np = np;
	r->freq = tern_malloc((size_t)half * sizeof(float));
	r->cs = tern_malloc((size_t)(np * half * 2) * sizeof(float));
	if (!r->freq || !r->cs) {
		rope_table_free(r);
		return NULL;
	}
	memcpy(r->freq, f, (size_t)half * sizeof(float));
	FAST_PARALLEL_FOR
	for (int64_t p = 0; p < np; p++)
		for (int64_t i = 0; i < half; i++)
			rope_cs((float)p, f[i], &r->cs[(p * half + i) * 2], &r->cs[(p * half + i) * 2 + 1]);
	cpu_be(be)->ext = r;
	return r;
}

enum tern_status tern_fast_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
				struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse)
{
	const char *op = "rope";
	enum tern_status st;
	void *xv, *pv, *fv;
	long long lT = (long long)T, lH = (long long)H, lDh = (long long)Dh;
	if ((st = tern_cpu_view(op, "x", x, (size_t)(T * H * Dh) * 4, 4, &xv, "T=%lld H=%lld Dh=%lld f32", lT,
				lH, lDh)) ||
	    (st = tern_cpu_view(op, "pos", pos, (size_t)T * 4, 4, &pv, "T=%lld i32", lT)) ||
	    (st = tern_cpu_view(op, "inv_freq", inv_freq, (size_t)(Dh / 2) * 4, 4, &fv, "Dh/2=%lld f32",
				lDh / 2)))
		return st;
	if (T == 0)
		return TERN_OK;
	float *xp = xv;
	const int32_t *pp = pv;
	const float *fp = fv;
	int64_t half = Dh / 2, pmax = 0;
	for (int64_t t = 0; t < T; t++)
		pmax = pp[t] > pmax ? pp[t] : pmax;
	int64_t np = pmax < ROPE_MAX_POS ? pmax + 1 : ROPE_MAX_POS;
	if (np * half * 2 * (int64_t)sizeof(float) > ROPE_MAX_BYTES)
		np = ROPE_MAX_BYTES / (half * 2 * (int64_t)sizeof(float)); /* the rest computed directly */
	const struct rope_table *tab = half > 0 && np > 0 ? rope_table_get(be, fp, half, np) : NULL;
	float sign = inverse ? -1.0f : 1.0f;
	/* c, s of one token that the table does not hold, per thread */
	float *scratch =
		tern_malloc((size_t)(tern_fast_threads() * 2 * (half > 0 ? half : 1)) * sizeof(float));
	if (!scratch)
		return TERN_E_NOMEM;
	int64_t ntask = tern_cdiv(T, ROW_TASK);
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
#ifdef _OPENMP
		float *own = scratch + (int64_t)omp_get_thread_num() * 2 * half;
#else
		float *own = scratch;
#endif
		for (int64_t t = k * ROW_TASK; t < T && t < (k + 1) * ROW_TASK; t++) {
			int32_t p = pp[t];
			const float *row = own;
			if (tab && p >= 0 && p < tab->np)
				row = tab->cs + (int64_t)p * half * 2;
			else
				for (int64_t i = 0; i < half; i++)
					rope_cs((float)p, fp[i], &own[2 * i], &own[2 * i + 1]);
			for (int64_t h = 0; h < H; h++) {
				float *xr = xp + (t * H + h) * Dh;
				for (int64_t i = 0; i < half; i++) {
					float c = row[2 * i], s = sign * row[2 * i + 1];
					float x0 = xr[i], x1 = xr[i + half];
					float a = x0 * c, b = x1 * s, d = x1 * c, e = x0 * s;
					xr[i] = a - b;
					xr[i + half] = d + e;
				}
			}
		}
	}
	free(scratch);
	return TERN_OK;
}

static enum tern_status elem_views(const char *op, int64_t n, const char **names, const struct tern_view *v,
				   float **p, int nv)
{
	enum tern_status st;
	for (int k = 0; k < nv; k++) {
		void *q;
		if ((st = tern_cpu_view(op, names[k], v[k], (size_t)n * 4, 4, &q, "n=%lld f32",
					(long long)n)))
			return st;
		p[k] = q;
	}
	return TERN_OK;
}

enum tern_status tern_fast_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				  struct tern_view u, int64_t n, enum tern_act act)
{
	if (act != TERN_ACT_SILU)
		return tern_cpu_swiglu(be, h, g, u, n, act);
	static const char *names[] = {"h", "g", "u"};
	struct tern_view v[3] = {h, g, u};
	float *p[3];
	enum tern_status st = elem_views("swiglu", n, names, v, p, 3);
	if (st != TERN_OK)
		return st;
	int64_t ntask = tern_cdiv(n, ELEM_TASK);
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo = k * ELEM_TASK, m = n - lo < ELEM_TASK ? n - lo : ELEM_TASK;
		tern_fast_silu_mul(p[0] + lo, p[1] + lo, p[2] + lo, m);
	}
	return TERN_OK;
}

enum tern_status tern_fast_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				      struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				      enum tern_act act)
{
	if (act != TERN_ACT_SILU)
		return tern_cpu_swiglu_bwd(be, dg, du, dh, g, u, n, act);
	static const char *names[] = {"dg", "du", "dh", "g", "u"};
	struct tern_view v[5] = {dg, du, dh, g, u};
	float *p[5];
	enum tern_status st = elem_views("swiglu_bwd", n, names, v, p, 5);
	if (st != TERN_OK)
		return st;
	int64_t ntask = tern_cdiv(n, ELEM_TASK);
	FAST_PARALLEL_FOR
	for (int64_t k = 0; k < ntask; k++) {
		int64_t lo = k * ELEM_TASK, m = n - lo < ELEM_TASK ? n - lo : ELEM_TASK;
		tern_fast_silu_bwd(p[0] + lo, p[1] + lo, p[2] + lo, p[3] + lo, p[4] + lo, m);
	}
	return TERN_OK;
}
