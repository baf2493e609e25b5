/* test_ops harness: random numbers, device tensors with guard regions, checks, comparisons
 * and host-side weights. test_ops is one translation unit: this header and each group of
 * checks (tests/test_ops_*.h) are included by tests/test_ops.c, so everything here is static. */
#ifndef TERN_TEST_OPS_HARNESS_H
#define TERN_TEST_OPS_HARNESS_H

#include "backend/backend.h"
#include "quant/quant.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* POSIX, not C11 (the checks that switch a backend variant through its environment switch) */
int setenv(const char *name, const char *value, int overwrite);
int unsetenv(const char *name);

#define GUARD 256 /* bytes before and after every tensor */
#define GUARD_BYTE 0xA5
#define MAX_TENSORS 24 /* device tensors one check may hold */
#define TOL_F32 1e-5   /* normalised error allowed for fp32 ops */
#define TOL_FD 1e-4    /* finite differences of linear losses: rounding only */

/* ---- random numbers ---------------------------------------------------------------------- */

struct rng {
	uint64_t s;
};

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static uint64_t rng_u64(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return mix64(r->s);
}

/* uniform in [0, 1) */
static double rng_unif(struct rng *r) { return (double)(rng_u64(r) >> 11) * 0x1p-53; }

/* uniform in (-a, a) */
static float rng_sym(struct rng *r, double a) { return (float)((2.0 * rng_unif(r) - 1.0) * a); }

/* standard normal (Box-Muller): weights look like real ones to the quantizers */
static float rng_normal(struct rng *r)
{
	double u = rng_unif(r), v = rng_unif(r);
	return (float)(sqrt(-2.0 * log(1.0 - u)) * cos(6.283185307179586 * v));
}

/* a value in ±[lo, hi): never zero, so a dropped element is always distinguishable */
static float rng_nonzero(struct rng *r, double lo, double hi)
{
	double m = lo + (hi - lo) * rng_unif(r);
	return (float)((rng_u64(r) & 1) ? m : -m);
}

static void fill_sym(struct rng *r, float *x, int64_t n, double a)
{
	for (int64_t i = 0; i < n; i++)
		x[i] = rng_sym(r, a);
}

/* ---- the suite and one check ------------------------------------------------------------- */

struct suite {
	struct tern_backend *be;
	const char *bname;
	bool is_cpu;
	uint64_t seed;
	uint64_t nchecks; /* checks started on this backend: each check's seed derives from it */
	int passed, failed, skipped;
};

/* A device tensor: the view sits lead = GUARD (+ dt_shift) bytes into its buffer with GUARD bytes
 * after it. */
struct dten {
	struct tern_buffer *buf;
	size_t size, lead;
	struct tern_view v;
	const char *name;
};

struct chk {
	struct suite *s;
	const char *op;
	char desc[160];
	uint64_t seed;
	struct rng r;
	double err;    /* largest normalised error of the compared tensors */
	char why[512]; /* the first failure, "" while none */
	struct dten t[MAX_TENSORS];
	int nt;
};

static void fail(struct chk *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void fail(struct chk *c, const char *fmt, ...)
{
	if (c->why[0])
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->why, sizeof c->why, fmt, ap);
	va_end(ap);
	if (!c->why[0])
		snprintf(c->why, sizeof c->why, "failed");
}

/* Records a failed tern call; returns true when st is not TERN_OK. */
static bool bad(struct chk *c, enum tern_status st, const char *what)
{
	if (st == TERN_OK)
		return false;
	fail(c, "%s: %s: %s", what, tern_status_str(st), tern_error());
	return true;
}

static void chk_begin(struct chk *c, struct suite *s, const char *op, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void chk_begin(struct chk *c, struct suite *s, const char *op, const char *fmt, ...)
{
	memset(c, 0, sizeof *c);
	c->s = s;
	c->op = op;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(c->desc, sizeof c->desc, fmt, ap);
	va_end(ap);
	c->seed = mix64(s->seed ^ mix64(++s->nchecks));
	c->r.s = c->seed;
}

static void chk_free_tensors(struct chk *c)
{
	for (int i = 0; i < c->nt; i++)
		if (c->t[i].buf)
			c->s->be->vt->buffer_free(c->s->be, c->t[i].buf);
	c->nt = 0;
}

static void print_line(struct suite *s, const char *op, const char *desc, const char *tail)
{
	printf("%-7s %-11s %-40s %s\n", s->bname, op, desc, tail);
	fflush(stdout);
}

/* Prints the check's line and counts it. */
static void chk_end(struct chk *c)
{
	chk_free_tensors(c);
	char tail[768];
	if (c->why[0]) {
		snprintf(tail, sizeof tail, "err=%.1e  FAIL: %s (seed %#" PRIx64 ")", c->err, c->why,
			 c->seed);
		c->s->failed++;
	} else {
		snprintf(tail, sizeof tail, "err=%.1e  ok", c->err);
		c->s->passed++;
	}
	print_line(c->s, c->op, c->desc, tail);
}

/* Ends a check that could not run here: its line says "not run (why)" and it counts as skipped,
 * neither passed nor failed. */
static void chk_not_run(struct chk *c, const char *why)
{
	chk_free_tensors(c);
	char tail[160];
	snprintf(tail, sizeof tail, "not run (%s)", why);
	print_line(c->s, c->op, c->desc, tail);
	c->s->skipped++;
}

/* Reports an op (or op and weight dtype) the backend does not support; true when skipped. */
static bool skip_unsupported(struct chk *c, enum tern_op op, enum tern_dtype wt)
{
	if (c->s->be->vt->supports(c->s->be, op, wt))
		return false;
	char tail[96];
	snprintf(tail, sizeof tail, "unsupported (%s %s)", tern_op_name(op), tern_dtype_name(wt));
	print_line(c->s, c->op, c->desc, tail);
	c->s->skipped++;
	return true;
}

/* skip_unsupported, then the product precision prec (backend.h supports_prec); true when skipped. */
static bool skip_unsupported_prec(struct chk *c, enum tern_op op, enum tern_dtype wt, enum tern_dtype prec)
{
	if (skip_unsupported(c, op, wt))
		return true;
	if (tern_backend_supports_prec(c->s->be, op, prec))
		return false;
	print_line(c->s, c->op, c->desc, "unsupported (precision)");
	c->s->skipped++;
	return true;
}

/* ---- guarded device tensors -------------------------------------------------------------- */

/* Bytes added before the views of the tensors dt_new makes (0: views on 256-byte boundaries; 4: on
 * words but not on 16 bytes, for the checks of shaders that read views as vec4). */
static size_t dt_shift;

/* A new tensor of size bytes, guards filled with GUARD_BYTE, contents from init (or, when init
 * is NULL, GUARD_BYTE too). Returns NULL (and records why) on failure. */
static struct dten *dt_new(struct chk *c, const char *name, size_t size, const void *init)
{
	struct tern_backend *be = c->s->be;
	if (c->nt == MAX_TENSORS) {
		fail(c, "test bug: more than %d tensors", MAX_TENSORS);
		return NULL;
	}
	struct dten *t = &c->t[c->nt];
	memset(t, 0, sizeof *t);
	size_t lead = GUARD + dt_shift, total = lead + size + GUARD;
	enum tern_status st = be->vt->buffer_alloc(be, total, &t->buf);
	if (bad(c, st, name))
		return NULL;
	c->nt++;
	t->size = size;
	t->lead = lead;
	t->name = name;
	t->v = (struct tern_view){t->buf, lead, size};
	unsigned char *pat = malloc(total);
	if (!pat) {
		fail(c, "out of host memory");
		return NULL;
	}
	memset(pat, GUARD_BYTE, total);
	if (init)
		memcpy(pat + lead, init, size);
	st = be->vt->upload(be, (struct tern_view){t->buf, 0, total}, pat);
	free(pat);
	if (bad(c, st, name))
		return NULL;
	return t;
}

/* A tensor of n fp32 values, each NaN: proves an "=" output is written before it is read. */
static struct dten *dt_nan(struct chk *c, const char *name, int64_t n)
{
	float *h = malloc((size_t)n * 4 + 4);
	if (!h) {
		fail(c, "out of host memory");
		return NULL;
	}
	for (int64_t i = 0; i < n; i++)
		h[i] = NAN;
	struct dten *t = dt_new(c, name, (size_t)n * 4, h);
	free(h);
	return t;
}

/* Downloads the tensor's contents into out after checking both guard regions. */
static bool dt_get(struct chk *c, struct dten *t, void *out)
{
	struct tern_backend *be = c->s->be;
	size_t total = t->lead + t->size + GUARD;
	unsigned char *h = malloc(total);
	if (!h) {
		fail(c, "out of host memory");
		return false;
	}
	enum tern_status st = be->vt->download(be, h, (struct tern_view){t->buf, 0, total});
	bool ok = !bad(c, st, t->name);
	for (size_t i = 0; ok && i < t->lead; i++)
		if (h[i] != GUARD_BYTE) {
			fail(c, "%s: guard byte %zu before the view overwritten (0x%02x)", t->name,
			     t->lead - i, h[i]);
			ok = false;
		}
	for (size_t i = 0; ok && i < GUARD; i++)
		if (h[t->lead + t->size + i] != GUARD_BYTE) {
			fail(c, "%s: guard byte %zu after the view overwritten (0x%02x)", t->name, i,
			     h[t->lead + t->size + i]);
			ok = false;
		}
	if (ok && out)
		memcpy(out, h + t->lead, t->size);
	free(h);
	return ok;
}

static struct dten *dt_find(struct chk *c, const char *name)
{
	for (int i = 0; i < c->nt; i++)
		if (!strcmp(c->t[i].name, name))
			return &c->t[i];
	return NULL;
}

/* Checks that an input tensor still holds exactly `orig` (and its guards). */
static void dt_unchanged(struct chk *c, struct dten *t, const void *orig)
{
	if (!t) {
		fail(c, "test bug: no such tensor");
		return;
	}
	unsigned char *h = malloc(t->size + 1);
	if (!h) {
		fail(c, "out of host memory");
		return;
	}
	if (dt_get(c, t, h) && memcmp(h, orig, t->size) != 0)
		fail(c, "%s: input was modified", t->name);
	free(h);
}

/* err = ||got - want|| / max(||want||, ||mag||) (mag may be NULL: ||want|| alone). */
static double l2_err(const float *got, const double *want, const double *mag, int64_t n)
{
	double num = 0.0, den = 0.0, dmag = 0.0;
	for (int64_t i = 0; i < n; i++) {
		double d = (double)got[i] - want[i];
		num += d * d;
		den += want[i] * want[i];
		if (mag)
			dmag += mag[i] * mag[i];
	}
	return num == 0.0 ? 0.0 : sqrt(num) / fmax(sqrt(fmax(den, dmag)), 1e-30);
}

/* Compares got[n] (fp32 from the device) with want[n] by l2_err; non-finite outputs always fail.
 * mag (may be NULL) holds, per element, the sum of the magnitudes of the parts a backend rounds
 * separately before adding them (say |dx0| + |dy W| for dx += dy W): where those parts cancel,
 * their fp32 rounding is relative to them, not to the small result, and a single-element case
 * would otherwise fail by chance. */
static void cmp_mag(struct chk *c, const char *name, const float *got, const double *want, const double *mag,
		    int64_t n, double tol)
{
	for (int64_t i = 0; i < n; i++)
		if (!isfinite(got[i])) {
			fail(c, "%s[%lld] = %g (want %g)", name, (long long)i, (double)got[i], want[i]);
			if (c->err < INFINITY)
				c->err = INFINITY;
			return;
		}
	double err = l2_err(got, want, mag, n);
	if (err > c->err)
		c->err = err;
	if (err > tol) {
		/* name the worst element: the first thing anyone debugging wants */
		int64_t worst = 0;
		double wd = -1.0;
		for (int64_t i = 0; i < n; i++) {
			double d = fabs((double)got[i] - want[i]);
			if (d > wd) {
				wd = d;
				worst = i;
			}
		}
		fail(c, "%s: err %.2e > %.0e; worst [%lld] got %.8g want %.8g", name, err, tol,
		     (long long)worst, (double)got[worst], want[worst]);
	}
}

static void cmp(struct chk *c, const char *name, const float *got, const double *want, int64_t n, double tol)
{
	cmp_mag(c, name, got, want, NULL, n, tol);
}

/* Downloads an fp32 output of n values and compares it (mag as in cmp_mag, may be NULL). */
static void expect_mag(struct chk *c, struct dten *t, const double *want, const double *mag, int64_t n,
		       double tol)
{
	float *got = malloc((size_t)n * 4 + 4);
	if (!got) {
		fail(c, "out of host memory");
		return;
	}
	if (dt_get(c, t, got))
		cmp_mag(c, t->name, got, want, mag, n, tol);
	free(got);
}

static void expect(struct chk *c, struct dten *t, const double *want, int64_t n, double tol)
{
	expect_mag(c, t, want, NULL, n, tol);
}

/* A dt_nan output a refused call must have left as it was: every value still NaN. */
static void dt_untouched(struct chk *c, struct dten *t, int64_t n)
{
	float *got = malloc((size_t)n * 4 + 4);
	if (!got) {
		fail(c, "out of host memory");
		return;
	}
	if (dt_get(c, t, got))
		for (int64_t i = 0; i < n; i++)
			if (!isnan(got[i])) {
				fail(c, "%s[%lld] was written by a refused call", t->name, (long long)i);
				break;
			}
	free(got);
}

static double *dvec(int64_t n) { return calloc((size_t)n + 1, sizeof(double)); }
static float *fvec(int64_t n) { return calloc((size_t)n + 1, sizeof(float)); }

/* ---- frozen weights ---------------------------------------------------------------------- */

/* A host weight in one of the tern formats, with the oracle's fp32 matrix deq [O, I] made by the
 * src/quant functions. */
struct hweight {
	enum tern_dtype dt;
	int bs;
	int64_t O, I;
	void *data;
	size_t data_bytes;
	void *absmax;
	size_t absmax_bytes;
	float *nested;
	size_t nested_bytes;
	float offset, scale;
	float *deq;
};

static void hweight_free(struct hweight *hw)
{
	free(hw->data);
	free(hw->absmax);
	free(hw->nested);
	free(hw->deq);
	memset(hw, 0, sizeof *hw);
}

static const char *wdesc(enum tern_dtype dt, int bs)
{
	static char buf[4][32];
	static int k;
	char *b = buf[k++ & 3];
	if (dt == TERN_NF4 || dt == TERN_NF4_DQ)
		snprintf(b, 32, "%s bs=%d", tern_dtype_name(dt), bs);
	else
		snprintf(b, 32, "%s", tern_dtype_name(dt));
	return b;
}

static bool hweight_make(struct hweight *hw, enum tern_dtype dt, int bs, int64_t O, int64_t I, struct rng *r)
{
	memset(hw, 0, sizeof *hw);
	hw->dt = dt;
	hw->bs = bs;
	hw->O = O;
	hw->I = I;
	int64_t n = O * I;
	float *w = fvec(n);
	hw->deq = fvec(n);
	hw->data_bytes = tern_weight_data_bytes(dt, O, I);
	hw->data = calloc(hw->data_bytes + 4, 1);
	if (!w || !hw->deq || !hw->data)
		goto fail;
	/* normal weights with a few outliers, as real checkpoints have */
	for (int64_t i = 0; i < n; i++)
		w[i] = 0.05f * rng_normal(r) * (rng_unif(r) < 0.01 ? 8.0f : 1.0f);

	switch (dt) {
	case TERN_F32:
		memcpy(hw->data, w, (size_t)n * 4);
		memcpy(hw->deq, w, (size_t)n * 4);
		break;
	case TERN_F16:
	case TERN_BF16: {
		uint16_t *h = hw->data;
		for (int64_t i = 0; i < n; i++) {
			h[i] = dt == TERN_F16 ? tern_f32_to_f16(w[i]) : tern_f32_to_bf16(w[i]);
			hw->deq[i] = dt == TERN_F16 ? tern_f16_to_f32(h[i]) : tern_bf16_to_f32(h[i]);
		}
		break;
	}
	case TERN_NF4:
	case TERN_NF4_DQ: {
		int64_t nb = tern_nf4_blocks(n, bs);
		float *absmax = fvec(nb);
		if (!absmax)
			goto fail;
		tern_nf4_quantize(w, n, bs, hw->data, absmax);
		if (dt == TERN_NF4) {
			hw->absmax = absmax;
			hw->absmax_bytes = (size_t)nb * 4;
			tern_nf4_dequantize(hw->data, absmax, n, bs, hw->deq);
			break;
		}
		int64_t nn = tern_cdiv(nb, TERN_NF4_NESTED_BLOCK);
		hw->absmax_bytes = (size_t)nb;
		hw->absmax = calloc((size_t)nb + 4, 1);
		hw->nested_bytes = (size_t)nn * 4;
		hw->nested = fvec(nn);
		float *rebuilt = fvec(nb);
		if (!hw->absmax || !hw->nested || !rebuilt) {
			free(absmax);
			free(rebuilt);
			goto fail;
		}
		tern_nf4_double_quant(absmax, nb, hw->absmax, hw->nested, &hw->offset);
		tern_nf4_nested_absmax(hw->absmax, hw->nested, hw->offset, nb, rebuilt);
		tern_nf4_dequantize(hw->data, rebuilt, n, bs, hw->deq);
		free(absmax);
		free(rebuilt);
		break;
	}
	case TERN_TERNARY:
		hw->scale = tern_ternary_quantize(w, O, I, hw->data);
		tern_ternary_dequantize(hw->data, hw->scale, O, I, hw->deq);
		break;
	case TERN_DTYPE_COUNT: goto fail;
	}
	free(w);
	return true;
fail:
	free(w);
	hweight_free(hw);
	return false;
}

/* Uploads a host weight into guarded device tensors and describes it in *w. */
static bool dweight_make(struct chk *c, const struct hweight *hw, struct tern_weight *w)
{
	memset(w, 0, sizeof *w);
	w->dtype = hw->dt;
	w->O = hw->O;
	w->I = hw->I;
	w->blocksize = hw->bs;
	w->offset = hw->offset;
	w->scale = hw->scale;
	struct dten *d = dt_new(c, "W data", hw->data_bytes, hw->data);
	if (!d)
		return false;
	w->data = d->v;
	if (hw->absmax) {
		struct dten *a = dt_new(c, "W absmax", hw->absmax_bytes, hw->absmax);
		if (!a)
			return false;
		w->absmax = a->v;
	}
	if (hw->nested) {
		struct dten *nd = dt_new(c, "W nested", hw->nested_bytes, hw->nested);
		if (!nd)
			return false;
		w->nested = nd->v;
	}
	return true;
}

#endif
