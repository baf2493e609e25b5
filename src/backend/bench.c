/* tern_bench_ops: times every op of the backend vtable at one shape.
 *
 * Only backend.h is used (the buffer entries of the vtable, the ops through their front doors),
 * so the same code times every backend. Each measurement is
 * one warm-up call, then batches of calls until opts->min_seconds have passed (at least 3 calls);
 * the backend is synchronised before the clock is read, so a row is the mean wall time of a call
 * with the queue kept busy.
 *
 * Shapes (letters of DESIGN.md): x [T, I], y [T, O], W [O, I]; LoRA A [R, I], B [O, R],
 * u [T, R]. The optimizer rows work on the LoRA parameters of one decoder layer: 7 modules of
 * this shape, n = 7 R (I + O). Element-wise activation ops work on x, n = T I.
 *
 * GFLOP/s counts 2 flops per multiply-add (2 T O I for a matmul, 2 M N K for a GEMM) and is 0 for
 * element-wise ops. GB/s counts the bytes the op must read and write at least once: the weight in
 * its storage format (codes + block scales), activations in and out, and both directions of
 * anything updated in place. */
#include "backend/backend.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BENCH_NF4_BLOCKSIZE 64 /* QLoRA's default */
#define BENCH_MAX_ELEMS ((int64_t)1 << 36)

/* Names accepted in opts->ops, in the order the rows come out. */
static const char *const bench_ops[] = {"matmul", "matmul_bwd", "gemm",      "lora",
					"adamw",  "sumsq",      "scale",     "axpy",
					"cast",   "dropout",    "attention", "attention_bwd"};
#define BENCH_NOPS (sizeof bench_ops / sizeof bench_ops[0])

static const enum tern_dtype weight_dtypes[] = {TERN_F32, TERN_F16,    TERN_BF16,
						TERN_NF4, TERN_NF4_DQ, TERN_TERNARY};

/* One call to time: which op and its arguments (outputs first, as in backend.h). */
enum bench_kind {
	K_MATMUL,
	K_MATMUL_BWD,
	K_GEMM,
	K_LORA_FWD,
	K_LORA_BWD,
	K_ADAMW,
	K_SUMSQ,
	K_SCALE,
	K_AXPY,
	K_CAST,
	K_DROPOUT,
	K_ATTN,
	K_ATTN_BWD
};

/* The LoRA linear's parameters and the buffers of its other outputs (rows "lora"). */
struct bench_lora {
	struct tern_lora lora;
	struct tern_view u, du, dA, dB;
};

struct bench_call {
	enum bench_kind kind;
	struct tern_view v[10];
	const struct tern_weight *w;
	int64_t M, N, K; /* gemm; T is M for the matmuls; n is M for element-wise ops */
	bool ta, tb;
	float alpha, beta;
	enum tern_dtype dt, st;
	struct tern_adamw_args adamw;
	enum tern_dtype prec; /* matmuls, gemm */
	const struct bench_lora *lo;
	const struct tern_attn_args *attn;
};

struct bench {
	const struct tern_bench_opts *o;
	struct tern_backend *be;
	tern_bench_fn fn;
	void *user;
	bool want[BENCH_NOPS];
	uint64_t rng;
	enum tern_dtype prec; /* of the matmuls (opts->prec) */
	int64_t H, Hkv, Dh;   /* the attention rows' shape (opts', 0 taking the defaults) */
	/* Every buffer this run allocated, freed at the end. */
	struct tern_buffer *bufs[32];
	int nbufs;
};

/* ---- small helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
	/* splitmix64 */
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Roughly normal values with standard deviation sd (sum of four uniforms). */
static void fill_random(uint64_t *s, float *x, int64_t n, float sd)
{
	for (int64_t i = 0; i < n; i++) {
		uint64_t r = rng_next(s);
		float acc = 0;
		for (int k = 0; k < 4; k++)
			acc += (float)((r >> (16 * k)) & 0xffff) * (1.0f / 65536.0f);
		x[i] = (acc - 2.0f) * 1.7320508f * sd; /* variance of the sum is 4/12 */
	}
}

static enum tern_status parse_filter(struct bench *b, const char *ops)
{
	bool any = ops && *ops;
	for (size_t k = 0; k < BENCH_NOPS; k++)
		b->want[k] = !any;
	if (!any)
		return TERN_OK;
	const char *p = ops;
	while (*p) {
		while (*p == ',' || *p == ' ')
			p++;
		const char *e = p;
		while (*e && *e != ',' && *e != ' ')
			e++;
		size_t len = (size_t)(e - p);
		if (!len)
			break;
		size_t k = 0;
		while (k < BENCH_NOPS && !(strlen(bench_ops[k]) == len && !memcmp(bench_ops[k], p, len)))
			k++;
		if (k == BENCH_NOPS) {
			char known[256] = "";
			for (size_t j = 0; j < BENCH_NOPS; j++) {
				strncat(known, j ? ", " : "", sizeof known - strlen(known) - 1);
				strncat(known, bench_ops[j], sizeof known - strlen(known) - 1);
			}
			return tern_fail(TERN_E_INVALID, "bench: unknown op '%.*s' (known: %s)", (int)len, p,
					 known);
		}
		b->want[k] = true;
		p = e;
	}
	return TERN_OK;
}

static bool wanted(const struct bench *b, const char *op)
{
	for (size_t k = 0; k < BENCH_NOPS; k++)
		if (!strcmp(bench_ops[k], op))
			return b->want[k];
	return false;
}

/* Allocates a device buffer of at least size bytes (rounded up to 16 and zeroed, so the
 * zero padding block formats rely on is there) and returns a view of exactly size bytes. */
static enum tern_status bench_alloc(struct bench *b, size_t size, struct tern_view *out)
{
	if (b->nbufs == (int)(sizeof b->bufs / sizeof b->bufs[0]))
		return tern_fail(TERN_E_INVALID, "bench: too many buffers");
	size_t padded = tern_align_up(size ? size : 1, 16);
	struct tern_buffer *buf = NULL;
	enum tern_status st = b->be->vt->buffer_alloc(b->be, padded, &buf);
	if (st)
		return st;
	b->bufs[b->nbufs++] = buf;
	struct tern_view all = {buf, 0, padded};
	st = b->be->vt->zero(b->be, all);
	if (st)
		return st;
	*out = tern_view_sub(all, 0, size);
	return TERN_OK;
}

/* Frees the buffers allocated after the first `keep`. */
static void bench_release(struct bench *b, int keep)
{
	while (b->nbufs > keep)
		b->be->vt->buffer_free(b->be, b->bufs[--b->nbufs]);
}

/* A device buffer of n fp32 random values. */
static enum tern_status bench_random(struct bench *b, int64_t n, float sd, struct tern_view *out)
{
	float *h = tern_malloc((size_t)n * sizeof *h);
	if (!h)
		return TERN_E_NOMEM;
	fill_random(&b->rng, h, n, sd);
	enum tern_status st = bench_alloc(b, (size_t)n * sizeof(float), out);
	if (!st)
		st = b->be->vt->upload(b->be, *out, h);
	free(h);
	return st;
}

static enum tern_status bench_upload(struct bench *b, const void *src, size_t size, struct tern_view *out)
{
	enum tern_status st = bench_alloc(b, size, out);
	if (!st)
		st = b->be->vt->upload(b->be, *out, src);
	return st;
}

/* Builds W [O, I] in dtype dt on the device from the fp32 values wf. */
static enum tern_status bench_weight(struct bench *b, enum tern_dtype dt, const float *wf, int64_t O,
				     int64_t I, struct tern_weight *w)
{
	int64_t n = O * I;
	enum tern_status st = TERN_OK;
	void *data = NULL;
	float *absmax = NULL;
	uint8_t *qabsmax = NULL;
	float *nested = NULL;

	memset(w, 0, sizeof *w);
	w->dtype = dt;
	w->O = O;
	w->I = I;
	switch (dt) {
	case TERN_F32: st = bench_upload(b, wf, (size_t)n * 4, &w->data); break;
	case TERN_F16:
	case TERN_BF16: {
		uint16_t *h = data = tern_malloc((size_t)n * 2);
		if (!h)
			return TERN_E_NOMEM;
		for (int64_t i = 0; i < n; i++)
			h[i] = dt == TERN_F16 ? tern_f32_to_f16(wf[i]) : tern_f32_to_bf16(wf[i]);
		st = bench_upload(b, h, (size_t)n * 2, &w->data);
		break;
	}
	case TERN_NF4:
	case TERN_NF4_DQ: {
		int64_t nb = tern_nf4_blocks(n, BENCH_NF4_BLOCKSIZE);
		int64_t nn = tern_cdiv(nb, TERN_NF4_NESTED_BLOCK);
		size_t codes_bytes = (size_t)(n + 1) / 2;
		data = tern_malloc(codes_bytes);
		absmax = tern_malloc((size_t)nb * sizeof *absmax);
		if (!data || !absmax) {
			st = TERN_E_NOMEM;
			break;
		}
		w->blocksize = BENCH_NF4_BLOCKSIZE;
		tern_nf4_quantize(wf, n, BENCH_NF4_BLOCKSIZE, data, absmax);
		st = bench_upload(b, data, codes_bytes, &w->data);
		if (st)
			break;
		if (dt == TERN_NF4) {
			st = bench_upload(b, absmax, (size_t)nb * sizeof *absmax, &w->absmax);
			break;
		}
		qabsmax = tern_malloc((size_t)nb);
		nested = tern_malloc((size_t)nn * sizeof *nested);
		if (!qabsmax || !nested) {
			st = TERN_E_NOMEM;
			break;
		}
		tern_nf4_double_quant(absmax, nb, qabsmax, nested, &w->offset);
		st = bench_upload(b, qabsmax, (size_t)nb, &w->absmax);
		if (!st)
			st = bench_upload(b, nested, (size_t)nn * sizeof *nested, &w->nested);
		break;
	}
	case TERN_TERNARY: {
		size_t words = (size_t)(O * tern_ternary_row_words(I));
		data = tern_malloc(words * 4);
		if (!data)
			return TERN_E_NOMEM;
		w->scale = tern_ternary_quantize(wf, O, I, data);
		st = bench_upload(b, data, words * 4, &w->data);
		break;
	}
	default: st = tern_fail(TERN_E_INVALID, "bench: no weight of dtype %d", (int)dt);
	}
	free(data);
	free(absmax);
	free(qabsmax);
	free(nested);
	return st;
}

static size_t weight_bytes(const struct tern_weight *w)
{
	return w->data.size + w->absmax.size + w->nested.size;
}

/* ---- timing ---- */

static enum tern_status bench_run(struct tern_backend *be, struct bench_call *c)
{
	struct tern_view *v = c->v;
	switch (c->kind) {
	case K_MATMUL: return tern_matmul(be, v[0], v[1], c->w, c->M, c->prec);
	case K_MATMUL_BWD: return tern_matmul_bwd(be, v[0], v[1], c->w, c->M, false, c->prec);
	case K_GEMM:
		return tern_gemm(be, v[0], v[1], v[2], c->M, c->N, c->K, c->ta, c->tb, c->alpha, c->beta,
				 c->prec);
	case K_LORA_FWD:
		return tern_lora_forward(be, v[0], c->lo->u, (struct tern_view){0}, v[1], c->w, &c->lo->lora,
					 c->M);
	case K_LORA_BWD:
		return tern_lora_backward(be, v[0], c->lo->dA, c->lo->dB, c->lo->du, (struct tern_view){0},
					  v[1], v[2], (struct tern_view){0}, c->lo->u, c->w, &c->lo->lora,
					  c->M, false);
	case K_ADAMW: return tern_adamw(be, v[0], v[1], v[2], v[3], c->M, &c->adamw);
	case K_SUMSQ: return tern_sumsq(be, v[0], v[1], c->M, false);
	case K_SCALE: return tern_scale(be, v[0], c->M, c->alpha);
	case K_AXPY: return tern_axpy(be, v[0], v[1], c->M, c->alpha);
	case K_CAST: return tern_cast(be, v[0], c->dt, v[1], c->st, c->M);
	case K_DROPOUT: return tern_dropout(be, v[0], v[1], c->M, c->alpha, 0x7465726eULL);
	case K_ATTN: return tern_attention(be, v[0], v[1], v[2], v[3], v[4], v[5], c->attn);
	case K_ATTN_BWD:
		return tern_attention_bwd(be, v[6], v[7], v[8], v[9], v[2], v[3], v[4], v[0], v[1], v[5],
					  c->attn);
	}
	return tern_fail(TERN_E_INVALID, "bench: bad call kind %d", (int)c->kind);
}

/* Times c and reports one row. flops and bytes are per call. */
static enum tern_status bench_time(struct bench *b, struct bench_call *c, const char *op, const char *dtype,
				   const char *shape, double flops, double bytes)
{
	struct tern_backend *be = b->be;
	double min_s = b->o->min_seconds > 0 ? b->o->min_seconds : 0;

	/* Warm-up: pipeline creation, first-touch page faults, caches. */
	enum tern_status st = bench_run(be, c);
	if (!st)
		st = be->vt->synchronize(be);
	if (st)
		return st;

	int64_t reps = 0, batch = 1;
	double t0 = tern_now(), elapsed = 0;
	for (;;) {
		for (int64_t i = 0; i < batch; i++) {
			st = bench_run(be, c);
			if (st)
				return st;
		}
		st = be->vt->synchronize(be);
		if (st)
			return st;
		reps += batch;
		elapsed = tern_now() - t0;
		if (reps >= 3 && elapsed >= min_s)
			break;
		/* Size the next batch to the time left, at most doubling, so that a slow first
		 * call does not decide the count and queue submission is amortised. */
		double per = elapsed / (double)reps;
		double next = per > 0 ? (min_s - elapsed) / per + 1 : (double)reps;
		if (next > (double)reps)
			next = (double)reps;
		batch = next < 1 ? 1 : (int64_t)next;
		if (reps + batch < 3)
			batch = 3 - reps;
	}

	struct tern_bench_row row;
	memset(&row, 0, sizeof row);
	snprintf(row.op, sizeof row.op, "%s", op);
	snprintf(row.dtype, sizeof row.dtype, "%s", dtype);
	snprintf(row.shape, sizeof row.shape, "%s", shape);
	double per = elapsed / (double)reps;
	row.ms = per * 1e3;
	row.gflops = per > 0 ? flops / per * 1e-9 : 0;
	row.gbs = per > 0 ? bytes / per * 1e-9 : 0;
	row.reps = reps > 0x7fffffff ? 0x7fffffff : (int)reps;
	if (b->fn)
		b->fn(&row, b->user);
	return TERN_OK;
}

/* Whether the backend has the op's entry at all and runs it for dtype dt. */
static bool have(struct bench *b, enum tern_op op, enum tern_dtype dt)
{
	return tern_backend_has_op(b->be, op) && b->be->vt->supports(b->be, op, dt);
}

/* ---- the groups of rows ---- */

static enum tern_status bench_matmuls(struct bench *b, struct tern_view x, struct tern_view y,
				      struct tern_view dy, struct tern_view dx)
{
	const struct tern_backend_vtable *vt = b->be->vt;
	int64_t T = b->o->T, O = b->o->O, I = b->o->I;
	bool fwd = wanted(b, "matmul") && tern_backend_has_op(b->be, TERN_OP_MATMUL);
	bool bwd = wanted(b, "matmul_bwd") && tern_backend_has_op(b->be, TERN_OP_MATMUL_BWD);
	if (!fwd && !bwd)
		return TERN_OK;

	float *wf = tern_malloc((size_t)(O * I) * sizeof *wf);
	if (!wf)
		return TERN_E_NOMEM;
	/* Scale like a trained projection: sd ~ 1/sqrt(I). */
	fill_random(&b->rng, wf, O * I, 1.0f / sqrtf((float)I));

	char shape[64];
	snprintf(shape, sizeof shape, "T=%lld O=%lld I=%lld", (long long)T, (long long)O, (long long)I);
	double flops = 2.0 * (double)T * (double)O * (double)I;
	enum tern_status st = TERN_OK;
	for (size_t k = 0; k < sizeof weight_dtypes / sizeof weight_dtypes[0] && !st; k++) {
		enum tern_dtype dt = weight_dtypes[k];
		bool f = fwd && vt->supports(b->be, TERN_OP_MATMUL, dt);
		bool g = bwd && vt->supports(b->be, TERN_OP_MATMUL_BWD, dt);
		if (!f && !g)
			continue;
		int keep = b->nbufs;
		struct tern_weight w;
		st = bench_weight(b, dt, wf, O, I, &w);
		double wb = (double)weight_bytes(&w);
		if (!st && f) {
			struct bench_call c = {
				.kind = K_MATMUL, .v = {y, x}, .w = &w, .M = T, .prec = b->prec};
			st = bench_time(b, &c, "matmul", tern_dtype_name(dt), shape, flops,
					wb + 4.0 * (double)(T * I + T * O));
		}
		if (!st && g) {
			struct bench_call c = {
				.kind = K_MATMUL_BWD, .v = {dx, dy}, .w = &w, .M = T, .prec = b->prec};
			st = bench_time(b, &c, "matmul_bwd", tern_dtype_name(dt), shape, flops,
					wb + 4.0 * (double)(T * I + T * O));
		}
		bench_release(b, keep);
	}
	free(wf);
	return st;
}

/* The six fp32 products of a LoRA linear (training-math.md), forward then backward. */
static enum tern_status bench_gemms(struct bench *b, struct tern_view x, struct tern_view y,
				    struct tern_view dy, struct tern_view dx)
{
	if (!have(b, TERN_OP_GEMM, TERN_F32) || !wanted(b, "gemm"))
		return TERN_OK;
	int64_t T = b->o->T, O = b->o->O, I = b->o->I, R = b->o->R;
	int keep = b->nbufs;
	struct tern_view A, B, u, dA, dB, du;
	enum tern_status st = bench_random(b, R * I, 0.02f, &A);
	if (!st)
		st = bench_random(b, O * R, 0.02f, &B);
	if (!st)
		st = bench_random(b, T * R, 1.0f, &u);
	if (!st)
		st = bench_random(b, T * R, 1.0f, &du);
	if (!st)
		st = bench_alloc(b, (size_t)(R * I) * 4, &dA);
	if (!st)
		st = bench_alloc(b, (size_t)(O * R) * 4, &dB);

	/* C = alpha op(A) op(B) + beta C; A stored [M,K] ([K,M] if ta), B [K,N] ([N,K] if tb). */
	const struct {
		const char *name;
		struct tern_view *C, *A, *B;
		int64_t M, N, K;
		bool ta, tb;
		float beta;
	} g[] = {
		{"u=x*A^T", &u, &x, &A, T, R, I, false, true, 0},
		{"y+=u*B^T", &y, &u, &B, T, O, R, false, true, 1},
		{"dB+=dy^T*u", &dB, &dy, &u, O, R, T, true, false, 1},
		{"du=dy*B", &du, &dy, &B, T, R, O, false, false, 0},
		{"dA+=du^T*x", &dA, &du, &x, R, I, T, true, false, 1},
		{"dx+=du*A", &dx, &du, &A, T, I, R, false, false, 1},
	};
	/* the LoRA products at the matmuls' precision where gemm runs it (bf16 on CUDA), as training
	 * does; fp32 otherwise */
	enum tern_dtype lp = tern_backend_supports_prec(b->be, TERN_OP_GEMM, b->prec) ? b->prec : TERN_F32;
	for (size_t k = 0; k < sizeof g / sizeof g[0] && !st; k++) {
		char shape[64];
		snprintf(shape, sizeof shape, "%s M=%lld N=%lld K=%lld", g[k].name, (long long)g[k].M,
			 (long long)g[k].N, (long long)g[k].K);
		struct bench_call c = {.kind = K_GEMM,
				       .v = {*g[k].C, *g[k].A, *g[k].B},
				       .M = g[k].M,
				       .N = g[k].N,
				       .K = g[k].K,
				       .ta = g[k].ta,
				       .tb = g[k].tb,
				       .alpha = g[k].beta ? 0.5f : 1.0f,
				       .beta = g[k].beta,
				       .prec = lp};
		double mn = (double)(g[k].M * g[k].N);
		double bytes = 4.0 * ((double)(g[k].M * g[k].K + g[k].K * g[k].N) + mn * (g[k].beta ? 2 : 1));
		st = bench_time(b, &c, "gemm", tern_dtype_name(lp), shape, 2.0 * mn * (double)g[k].K, bytes);
	}
	bench_release(b, keep);
	return st;
}

/* The whole LoRA linear (tern_lora_forward, tern_lora_backward with dx =) on an NF4-DQ weight, the
 * QLoRA case, at the matmuls' precision with the LoRA products where training runs them (net.c:
 * bf16 where gemm runs it at bf16 products, else fp32). The shape says whether the backend ran
 * the rank-R updates inside the base products (tern_lora_fused: "fused") or as gemms
 * ("composed"; CUDA with TERN_CUDA_LORA_FUSE=0, Vulkan with TERN_VK_LORA_FUSE=0): one row of each
 * from two runs is the change. */
static enum tern_status bench_lora(struct bench *b, struct tern_view x, struct tern_view y,
				   struct tern_view dy, struct tern_view dx)
{
	if (!wanted(b, "lora") || !have(b, TERN_OP_MATMUL, TERN_NF4_DQ) ||
	    !have(b, TERN_OP_MATMUL_BWD, TERN_NF4_DQ) || !have(b, TERN_OP_GEMM, TERN_F32))
		return TERN_OK;
	int64_t T = b->o->T, O = b->o->O, I = b->o->I, R = b->o->R;
	int keep = b->nbufs;
	float *wf = tern_malloc((size_t)(O * I) * sizeof *wf);
	if (!wf)
		return TERN_E_NOMEM;
	fill_random(&b->rng, wf, O * I, 1.0f / sqrtf((float)I));
	struct tern_weight w;
	struct bench_lora lo;
	memset(&lo, 0, sizeof lo);
	enum tern_status st = bench_weight(b, TERN_NF4_DQ, wf, O, I, &w);
	free(wf);
	if (!st)
		st = bench_random(b, R * I, 0.02f, &lo.lora.A);
	if (!st)
		st = bench_random(b, O * R, 0.02f, &lo.lora.B);
	if (!st)
		st = bench_alloc(b, (size_t)(T * R) * 4, &lo.u);
	if (!st)
		st = bench_alloc(b, (size_t)(T * R) * 4, &lo.du);
	if (!st)
		st = bench_alloc(b, (size_t)(R * I) * 4, &lo.dA);
	if (!st)
		st = bench_alloc(b, (size_t)(O * R) * 4, &lo.dB);
	lo.lora.R = R;
	lo.lora.scale = 2.0f;
	lo.lora.prec = b->prec;
	lo.lora.lprec = b->prec == TERN_BF16 && tern_backend_supports_prec(b->be, TERN_OP_GEMM, TERN_BF16)
				? TERN_BF16
				: TERN_F32;
	char shape[96];
	snprintf(shape, sizeof shape, "T=%lld O=%lld I=%lld R=%lld %s (%s)", (long long)T, (long long)O,
		 (long long)I, (long long)R, tern_lora_fused(b->be, &w, &lo.lora, T) ? "fused" : "composed",
		 tern_dtype_name(lo.lora.lprec));
	double tf = (double)T, big = 2.0 * tf * (double)O * (double)I, lr = (double)R * (double)(I + O);
	double wb = (double)weight_bytes(&w);
	if (!st) {
		struct bench_call c = {.kind = K_LORA_FWD, .v = {y, x}, .w = &w, .M = T, .lo = &lo};
		st = bench_time(b, &c, "lora", "nf4-dq", shape, big + 2.0 * tf * lr,
				wb + 4.0 * (tf * (double)(I + O + R) + lr));
	}
	if (!st) {
		char sb[104];
		snprintf(sb, sizeof sb, "bwd %s", shape);
		struct bench_call c = {.kind = K_LORA_BWD, .v = {dx, dy, x}, .w = &w, .M = T, .lo = &lo};
		st = bench_time(b, &c, "lora", "nf4-dq", sb, big + 4.0 * tf * lr,
				wb + 4.0 * (tf * (double)(O + 2 * I + 2 * R) + 3.0 * lr));
	}
	bench_release(b, keep);
	return st;
}

/* Element-wise ops: the optimizer group on the LoRA parameters of one layer, the activation group
 * on x. */
static enum tern_status bench_elementwise(struct bench *b, struct tern_view x, struct tern_view dx)
{
	const struct tern_backend_vtable *vt = b->be->vt;
	int64_t T = b->o->T, O = b->o->O, I = b->o->I, R = b->o->R;
	int64_t np = 7 * R * (I + O), na = T * I;
	bool adamw = wanted(b, "adamw") && have(b, TERN_OP_ADAMW, TERN_F32);
	bool sumsq = wanted(b, "sumsq") && have(b, TERN_OP_SUMSQ, TERN_F32);
	bool scale = wanted(b, "scale") && have(b, TERN_OP_SCALE, TERN_F32);
	bool axpy = wanted(b, "axpy") && have(b, TERN_OP_AXPY, TERN_F32);
	bool cast = wanted(b, "cast") && tern_backend_has_op(b->be, TERN_OP_CAST);
	bool drop = wanted(b, "dropout") && have(b, TERN_OP_DROPOUT, TERN_F32);
	enum tern_status st = TERN_OK;
	int keep = b->nbufs;
	char shape[64];
	snprintf(shape, sizeof shape, "n=%lld (7 x R(I+O))", (long long)np);

	if (adamw || sumsq || scale || axpy) {
		struct tern_view p, g, m, v, out;
		st = bench_random(b, np, 0.02f, &p);
		if (!st)
			st = bench_random(b, np, 1e-3f, &g);
		if (!st)
			st = bench_alloc(b, (size_t)np * 4, &m);
		if (!st)
			st = bench_alloc(b, (size_t)np * 4, &v);
		if (!st)
			st = bench_alloc(b, 4, &out);
		if (!st && adamw) {
			struct bench_call c = {.kind = K_ADAMW, .v = {p, g, m, v}, .M = np};
			c.adamw = (struct tern_adamw_args){.lr = 1e-4f,
							   .beta1 = 0.9f,
							   .beta2 = 0.999f,
							   .eps = 1e-8f,
							   .weight_decay = 0.01f,
							   .step = 10};
			/* param, m, v read and written; grad read */
			st = bench_time(b, &c, "adamw", "f32", shape, 0, 28.0 * (double)np);
		}
		if (!st && sumsq) {
			struct bench_call c = {.kind = K_SUMSQ, .v = {out, g}, .M = np};
			st = bench_time(b, &c, "sumsq", "f32", shape, 0, 4.0 * (double)np + 4);
		}
		if (!st && scale) {
			/* alpha 1: repeated calls leave the values as they are */
			struct bench_call c = {.kind = K_SCALE, .v = {g}, .M = np, .alpha = 1.0f};
			st = bench_time(b, &c, "scale", "f32", shape, 0, 8.0 * (double)np);
		}
		if (!st && axpy) {
			struct bench_call c = {.kind = K_AXPY, .v = {m, g}, .M = np, .alpha = 0.5f};
			st = bench_time(b, &c, "axpy", "f32", shape, 0, 12.0 * (double)np);
		}
		bench_release(b, keep);
	}

	snprintf(shape, sizeof shape, "n=%lld (T x I)", (long long)na);
	if (!st && cast) {
		static const enum tern_dtype to[] = {TERN_F16, TERN_BF16};
		struct tern_view h;
		st = bench_alloc(b, (size_t)na * 2, &h);
		for (size_t k = 0; k < 2 && !st; k++) {
			if (!vt->supports(b->be, TERN_OP_CAST, to[k]))
				continue;
			char dt[16];
			snprintf(dt, sizeof dt, "f32>%s", tern_dtype_name(to[k]));
			struct bench_call c = {
				.kind = K_CAST, .v = {h, x}, .M = na, .dt = to[k], .st = TERN_F32};
			st = bench_time(b, &c, "cast", dt, shape, 0, 6.0 * (double)na);
		}
		bench_release(b, keep);
	}
	if (!st && drop) {
		struct bench_call c = {.kind = K_DROPOUT, .v = {dx, x}, .M = na, .alpha = 0.1f};
		st = bench_time(b, &c, "dropout", "f32", shape, 0, 8.0 * (double)na);
	}
	return st;
}

/* Causal attention over one sample of T tokens, forward and backward (rows "attention",
 * "attention_bwd"): q, dO [T, H, Dh] and k, v [T, Hkv, Dh] random, scale 1/sqrt(Dh), at the
 * matmuls' precision (the tensor-core shaders at f16 where the backend has them). The backward
 * reads the forward's o and lse (one forward call first). FLOPs as the profiler counts them
 * (ops.c): 4 a (query, key) pair and head dimension forward, 2.5 times that backward. */
static enum tern_status bench_attention(struct bench *b)
{
	bool fwd = wanted(b, "attention") && tern_backend_has_op(b->be, TERN_OP_ATTENTION);
	bool bwd = wanted(b, "attention_bwd") && tern_backend_has_op(b->be, TERN_OP_ATTENTION_BWD);
	if (!fwd && !bwd)
		return TERN_OK;
	int64_t T = b->o->T, H = b->H, Hkv = b->Hkv, Dh = b->Dh;
	struct tern_attn_args a = {
		.T = T, .H = H, .Hkv = Hkv, .Dh = Dh, .scale = 1.0f / sqrtf((float)Dh), .prec = b->prec};
	int64_t nq = T * H * Dh, nk = T * Hkv * Dh;
	int keep = b->nbufs;
	/* o, lse, q, k, v, seg; dq, dk, dv, dO */
	struct tern_view v[10];
	enum tern_status st = bench_alloc(b, (size_t)nq * 4, &v[0]);
	if (!st)
		st = bench_alloc(b, (size_t)(H * T) * 4, &v[1]);
	if (!st)
		st = bench_random(b, nq, 1.0f, &v[2]);
	if (!st)
		st = bench_random(b, nk, 1.0f, &v[3]);
	if (!st)
		st = bench_random(b, nk, 1.0f, &v[4]);
	if (!st)
		st = bench_alloc(b, (size_t)T * 4, &v[5]); /* zeros: one segment */
	if (!st)
		st = bench_alloc(b, (size_t)nq * 4, &v[6]);
	if (!st)
		st = bench_alloc(b, (size_t)nk * 4, &v[7]);
	if (!st)
		st = bench_alloc(b, (size_t)nk * 4, &v[8]);
	if (!st)
		st = bench_random(b, nq, 1.0f, &v[9]);
	char shape[64];
	snprintf(shape, sizeof shape, "T=%lld H=%lld Hkv=%lld Dh=%lld", (long long)T, (long long)H,
		 (long long)Hkv, (long long)Dh);
	double pairs = (double)T * (double)(T + 1) / 2.0, flops = 4.0 * pairs * (double)H * (double)Dh;
	/* q, k, v read, o written (lse is small); the backward reads them and dO, writes dq, dk, dv */
	double bytes = 4.0 * (double)(2 * nq + 2 * nk);
	struct bench_call c = {.kind = K_ATTN, .attn = &a};
	memcpy(c.v, v, sizeof v);
	if (!st && fwd)
		st = bench_time(b, &c, "attention", tern_dtype_name(b->prec), shape, flops, bytes);
	else if (!st)
		st = bench_run(b->be, &c); /* o and lse for the backward */
	c.kind = K_ATTN_BWD;
	if (!st && bwd)
		st = bench_time(b, &c, "attention_bwd", tern_dtype_name(b->prec), shape, 2.5 * flops,
				2.0 * bytes);
	bench_release(b, keep);
	return st;
}

/* ---- entry ---- */

static bool product_ok(int64_t a, int64_t b) { return a > 0 && b > 0 && a <= BENCH_MAX_ELEMS / b; }

enum tern_status tern_bench_ops(const struct tern_bench_opts *opts, tern_bench_fn fn, void *user,
				char *device_name, size_t device_name_size)
{
	if (device_name && device_name_size)
		device_name[0] = 0;
	if (!opts)
		return tern_fail(TERN_E_INVALID, "bench: no options");
	if (opts->T < 1 || opts->O < 1 || opts->I < 1 || opts->R < 1)
		return tern_fail(
			TERN_E_INVALID, "bench: sizes must be positive (T=%lld O=%lld I=%lld R=%lld)",
			(long long)opts->T, (long long)opts->O, (long long)opts->I, (long long)opts->R);
	if (!product_ok(opts->O, opts->I) || !product_ok(opts->T, opts->I) || !product_ok(opts->T, opts->O) ||
	    !product_ok(opts->R, opts->O + opts->I) || !product_ok(7 * opts->R, opts->O + opts->I))
		return tern_fail(TERN_E_INVALID, "bench: shape T=%lld O=%lld I=%lld R=%lld is too large",
				 (long long)opts->T, (long long)opts->O, (long long)opts->I,
				 (long long)opts->R);
	/* Llama-3-8B's attention unless asked */
	int64_t H = opts->heads ? opts->heads : 32, Hkv = opts->kv_heads ? opts->kv_heads : 8,
		Dh = opts->head_dim ? opts->head_dim : 128;
	if (H < 1 || Hkv < 1 || Dh < 1 || H % Hkv || H > 65536 || Dh > 65536 || !product_ok(opts->T, H * Dh))
		return tern_fail(
			TERN_E_INVALID,
			"bench: attention shape T=%lld H=%lld Hkv=%lld Dh=%lld (needs sizes >= 1, H a "
			"multiple of Hkv)",
			(long long)opts->T, (long long)H, (long long)Hkv, (long long)Dh);
	if (!(opts->min_seconds >= 0) || opts->min_seconds > 3600)
		return tern_fail(TERN_E_INVALID, "bench: min_seconds %g is not in 0..3600",
				 opts->min_seconds);

	struct bench b;
	memset(&b, 0, sizeof b);
	b.o = opts;
	b.fn = fn;
	b.user = user;
	b.rng = 0x5eed7e2aULL;
	b.H = H;
	b.Hkv = Hkv;
	b.Dh = Dh;
	enum tern_status st = parse_filter(&b, opts->ops);
	if (st)
		return st;
	b.prec = TERN_F32;
	if (opts->prec && !strcmp(opts->prec, "f16"))
		b.prec = TERN_F16;
	else if (opts->prec && !strcmp(opts->prec, "bf16"))
		b.prec = TERN_BF16;
	else if (opts->prec && *opts->prec && strcmp(opts->prec, "f32"))
		return tern_fail(TERN_E_INVALID, "bench: precision %s (allowed: f32, f16, bf16)", opts->prec);
	st = tern_backend_create(opts->backend ? opts->backend : "auto", opts->device, &b.be);
	if (st)
		return st;
	if (!tern_backend_supports_prec(b.be, TERN_OP_MATMUL, b.prec)) {
		st = tern_fail(TERN_E_UNSUPPORTED, "bench: the %s backend has no %s matmul on this device",
			       b.be->name, tern_dtype_name(b.prec));
		tern_backend_free(b.be);
		return st;
	}
	if (device_name && device_name_size)
		snprintf(device_name, device_name_size, "%s device %d: %s", b.be->name, b.be->device_index,
			 b.be->device_name);

	int64_t T = opts->T, O = opts->O, I = opts->I;
	struct tern_view x, y, dy, dx;
	st = bench_random(&b, T * I, 1.0f, &x);
	if (!st)
		st = bench_alloc(&b, (size_t)(T * O) * 4, &y);
	if (!st)
		st = bench_random(&b, T * O, 1.0f, &dy);
	if (!st)
		st = bench_alloc(&b, (size_t)(T * I) * 4, &dx);
	if (st)
		goto out;

	st = bench_matmuls(&b, x, y, dy, dx);
	if (st)
		goto out;
	st = bench_gemms(&b, x, y, dy, dx);
	if (st)
		goto out;
	st = bench_lora(&b, x, y, dy, dx);
	if (st)
		goto out;
	st = bench_elementwise(&b, x, dx);
	if (st)
		goto out;
	st = bench_attention(&b);
	if (st)
		goto out;
	st = b.be->vt->synchronize(b.be);
out:
	if (st) {
		/* Let queued work finish before its buffers go; keep the first error's message. */
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		b.be->vt->synchronize(b.be);
		tern_fail(st, "%s", msg);
	}
	bench_release(&b, 0);
	tern_backend_free(b.be);
	return st;
}
