/* Generation with a KV cache over the trainable net (gen.h). */
#include "train/gen.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GEN_CHUNK 256 /* prompt tokens per pass */
#define GEN_ALIGN 256

struct tern_gen {
	struct tern_net *net;
	struct tern_backend *be;
	const struct tern_model *m;
	bool lora, qkn;
	int64_t D, F, H, Hkv, Dh, V, L, R;
	float eps;
	int64_t ctx;             /* tokens the cache holds */
	int64_t C;               /* tokens of one pass the scratch holds */
	struct tern_buffer **kv; /* [L]: k [ctx,Hkv,Dh] then v [ctx,Hkv,Dh] */
	struct tern_buffer *act; /* the scratch of one pass */
	struct tern_view x, x2, xn, q, qr, kr, ao, h1, rstd, rstdh, ids, pos, xf, rstdf, logits, pick;
	struct tern_view aon; /* BitNet: attn_sub_norm(ao) */
	bool bitnet;
	struct tern_net_scratch s;
	int32_t *posh; /* the host image of ids then pos (one upload: they are adjacent in act) */
	float *logh;
	int32_t pickh; /* the argmax of the last logits (greedy on the device) */
};

static void take(size_t *off, struct tern_view *v, size_t bytes)
{
	v->buf = NULL;
	v->off = *off;
	v->size = bytes;
	*off += tern_align_up(bytes ? bytes : 4, GEN_ALIGN);
}

enum tern_status tern_gen_create(struct tern_net *net, const struct tern_model *m, bool lora,
				 struct tern_gen **out)
{
	*out = NULL;
	struct tern_gen *g = tern_calloc(1, sizeof *g);
	if (!g)
		return tern_fail(TERN_E_NOMEM, "generate: out of host memory");
	const struct tern_model_config *c = &m->cfg;
	g->net = net;
	g->m = m;
	g->lora = lora;
	g->D = c->D, g->F = c->F, g->H = c->H, g->Hkv = c->Hkv, g->Dh = c->Dh, g->V = c->V, g->L = c->L;
	g->qkn = c->qk_norm;
	g->bitnet = c->arch == TERN_ARCH_BITNET;
	g->eps = (float)c->rms_eps;
	*out = g;
	return TERN_OK;
}

static void free_bufs(struct tern_gen *g)
{
	if (!g->be)
		return;
	if (g->kv)
		for (int64_t l = 0; l < g->L; l++)
			if (g->kv[l])
				g->be->vt->buffer_free(g->be, g->kv[l]);
	free(g->kv);
	g->kv = NULL;
	if (g->act)
		g->be->vt->buffer_free(g->be, g->act);
	g->act = NULL;
	g->ctx = g->C = 0;
}

void tern_gen_free(struct tern_gen *g)
{
	if (!g)
		return;
	free_bufs(g);
	free(g->posh);
	free(g->logh);
	free(g);
}

/* The cache for ctx tokens and the scratch of one pass (reallocated when they are smaller). */
static enum tern_status reserve(struct tern_gen *g, struct tern_backend *be, int64_t ctx, int64_t R)
{
	int64_t C = ctx < GEN_CHUNK ? ctx : GEN_CHUNK;
	if (g->be == be && ctx <= g->ctx && C <= g->C && R <= g->R)
		return TERN_OK;
	free_bufs(g);
	g->be = be;
	g->R = R;
	enum tern_status st;
	int64_t D = g->D, F = g->F, H = g->H, Hkv = g->Hkv, Dh = g->Dh;
	size_t kvb = (size_t)(ctx * Hkv * Dh) * 4;
	if (!(g->kv = tern_calloc((size_t)g->L, sizeof *g->kv)))
		return tern_fail(TERN_E_NOMEM, "generate: out of host memory");
	for (int64_t l = 0; l < g->L; l++)
		if ((st = be->vt->buffer_alloc(be, 2 * tern_align_up(kvb, GEN_ALIGN), &g->kv[l])))
			return st;
	size_t off = 0;
	struct tern_view *dv[] = {&g->x, &g->x2, &g->xn, &g->h1};
	for (size_t i = 0; i < sizeof dv / sizeof dv[0]; i++)
		take(&off, dv[i], (size_t)(C * D) * 4);
	take(&off, &g->q, (size_t)(C * H * Dh) * 4);
	take(&off, &g->qr, (size_t)(C * H * Dh) * 4);
	take(&off, &g->ao, (size_t)(C * H * Dh) * 4);
	take(&off, &g->kr, (size_t)(C * Hkv * Dh) * 4);
	take(&off, &g->rstd, (size_t)C * 4);
	take(&off, &g->rstdh, (size_t)(C * H) * 4);
	take(&off, &g->ids, (size_t)C * 4); /* ids and pos adjacent: one upload per pass */
	take(&off, &g->pos, (size_t)C * 4);
	take(&off, &g->xf, (size_t)D * 4);
	take(&off, &g->rstdf, 4);
	take(&off, &g->logits, (size_t)g->V * 4);
	take(&off, &g->pick, 4);
	take(&off, &g->s.u, (size_t)(C * R) * 4);
	take(&off, &g->s.ones, (size_t)C * 4);
	take(&off, &g->s.g, (size_t)(C * F) * 4);
	take(&off, &g->s.up, (size_t)(C * F) * 4);
	take(&off, &g->s.a, (size_t)(C * F) * 4);
	if (g->bitnet) {
		int64_t maxI = D > F ? D : F;
		maxI = H * Dh > maxI ? H * Dh : maxI;
		take(&off, &g->s.xq, (size_t)(C * maxI) * 4);
		take(&off, &g->s.an, (size_t)(C * F) * 4);
		take(&off, &g->s.rstd, (size_t)C * 4);
		take(&off, &g->aon, (size_t)(C * H * Dh) * 4);
	}
	if ((st = be->vt->buffer_alloc(be, off, &g->act)))
		return st;
	struct tern_view *all[] = {&g->x,      &g->x2,   &g->xn,     &g->h1,  &g->q,    &g->qr,  &g->ao,
				   &g->kr,     &g->rstd, &g->rstdh,  &g->ids, &g->pos,  &g->xf,  &g->rstdf,
				   &g->logits, &g->s.u,  &g->s.ones, &g->s.g, &g->s.up, &g->s.a, &g->pick};
	struct tern_view *bn[] = {&g->s.xq, &g->s.an, &g->s.rstd, &g->aon}; /* BitNet's */
	for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
		all[i]->buf = g->act;
	for (size_t i = 0; g->bitnet && i < sizeof bn / sizeof bn[0]; i++)
		bn[i]->buf = g->act;
	free(g->posh);
	free(g->logh);
	g->posh = tern_calloc(1, g->pos.off - g->ids.off + (size_t)C * 4);
	g->logh = tern_malloc((size_t)g->V * 4);
	if (!g->posh || !g->logh)
		return tern_fail(TERN_E_NOMEM, "generate: out of host memory");
	float *ones = tern_malloc((size_t)C * 4);
	if (!ones)
		return tern_fail(TERN_E_NOMEM, "generate: out of host memory");
	for (int64_t i = 0; i < C; i++)
		ones[i] = 1.0f;
	st = be->vt->upload(be, g->s.ones, ones);
	free(ones);
	if (st)
		return st;
	g->ctx = ctx;
	g->C = C;
	return TERN_OK;
}

#define TRY(x)                             \
	do {                               \
		if ((st = (x)) != TERN_OK) \
			return st;         \
	} while (0)

/* The cache rows [r0, r0 + n) of layer l: k (which = 0) or v (1). */
static struct tern_view cache(const struct tern_gen *g, int64_t l, int which, int64_t r0, int64_t n)
{
	size_t row = (size_t)(g->Hkv * g->Dh) * 4;
	size_t base = which ? tern_align_up((size_t)g->ctx * row, GEN_ALIGN) : 0;
	return (struct tern_view){g->kv[l], base + (size_t)r0 * row, (size_t)n * row};
}

/* What a pass brings back: nothing (a prompt chunk before the last), the last row's logits [V]
 * into g->logh (sampling), or only their argmax into g->pickh (greedy: 4 bytes, not V floats). */
enum gen_out { GEN_NONE, GEN_LOGITS, GEN_ARGMAX };

/* Tq tokens at positions p0 .. p0+Tq-1 through every layer, then what `out` asks for. */
static enum tern_status pass(struct tern_gen *g, const int32_t *ids, int64_t p0, int64_t Tq, enum gen_out out)
{
	struct tern_backend *be = g->be;
	struct tern_net *n = g->net;
	int64_t D = g->D, H = g->H, Hkv = g->Hkv, Dh = g->Dh;
	enum tern_status st;
	struct tern_view norm, inv;
	struct tern_weight head;
	enum tern_dtype prec;
	tern_net_globals(n, &norm, &inv, &head, &prec);
	/* ids and positions in one upload (a round trip each where tensor memory is not host-visible) */
	size_t gap = g->pos.off - g->ids.off;
	int32_t *posh = g->posh + gap / 4;
	memcpy(g->posh, ids, (size_t)Tq * 4);
	for (int64_t i = 0; i < Tq; i++)
		posh[i] = (int32_t)(p0 + i);
	TRY(be->vt->upload(be, (struct tern_view){g->act, g->ids.off, gap + (size_t)Tq * 4}, g->posh));
	struct tern_view x = g->x, y = g->x2;
	TRY(tern_net_embed(n, ids, g->ids, x, Tq));
	for (int l = 0; l < g->L; l++) {
		struct tern_net_layer_info li;
		struct tern_view kc = cache(g, l, 0, p0, Tq), vc = cache(g, l, 1, p0, Tq);
		TRY(tern_net_use_layer(n, l, &li));
		if (l == 0)
			TRY(tern_rmsnorm(be, g->xn, g->rstd, x, li.attn_norm, Tq, D, g->eps));
		else /* x = h1 + mlp: the layer before's residual add, fused with this norm */
			TRY(tern_add_rmsnorm(be, x, g->xn, g->rstd, g->h1, li.attn_norm, Tq, D, g->eps));
		static const enum tern_module qkv[3] = {TERN_MOD_Q, TERN_MOD_K, TERN_MOD_V};
		struct tern_view qkvy[3] = {g->qkn ? g->qr : g->q, g->qkn ? g->kr : kc, vc};
		TRY(tern_net_linears(n, l, qkv, qkvy, 3, g->xn, &g->s, Tq, g->lora));
		if (g->qkn) {
			TRY(tern_rmsnorm(be, g->q, g->rstdh, g->qr, li.q_norm, Tq * H, Dh, g->eps));
			TRY(tern_rmsnorm(be, kc, g->rstdh, g->kr, li.k_norm, Tq * Hkv, Dh, g->eps));
		}
		TRY(tern_rope2(be, g->q, H, kc, Hkv, g->pos, inv, Tq, Dh, false));
		struct tern_attn_kv_args aa = {Tq, p0 + Tq, H, Hkv, Dh, li.window, 1.0f / sqrtf((float)Dh)};
		TRY(tern_attention_kv(be, g->ao, g->q, cache(g, l, 0, 0, p0 + Tq), cache(g, l, 1, 0, p0 + Tq),
				      &aa));
		if (g->bitnet)
			TRY(tern_rmsnorm(be, g->aon, g->rstd, g->ao, li.attn_sub, Tq, H * Dh, g->eps));
		TRY(tern_net_linear(n, l, TERN_MOD_O, g->h1, g->bitnet ? g->aon : g->ao, &g->s, Tq, g->lora));
		/* h1 = x + o; xn = norm(h1) */
		TRY(tern_add_rmsnorm(be, g->h1, g->xn, g->rstd, x, li.mlp_norm, Tq, D, g->eps));
		TRY(tern_net_mlp(n, l, y, g->xn, &g->s, Tq, g->lora));
		/* the layer's output is y + h1: added by the next layer's norm (or the final one) */
		struct tern_view t = x;
		x = y;
		y = t;
	}
	if (out == GEN_NONE)
		return TERN_OK;
	size_t lo = (size_t)((Tq - 1) * D) * 4;
	struct tern_view last = tern_view_sub(x, lo, (size_t)D * 4),
			 h1 = tern_view_sub(g->h1, lo, (size_t)D * 4);
	TRY(tern_add_rmsnorm(be, last, g->xf, g->rstdf, h1, norm, 1, D, g->eps)); /* the last layer's add */
	TRY(tern_matmul(be, g->logits, g->xf, &head, 1, prec));
	if (out == GEN_LOGITS)
		return be->vt->download(be, g->logh, g->logits);
	TRY(tern_argmax(be, g->pick, g->logits, 1, g->V));
	return be->vt->download(be, &g->pickh, g->pick);
}

/* ---- sampling ---- */

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

struct cand {
	float l;
	int32_t id;
};

static int cand_desc(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->l != y->l)
		return x->l > y->l ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

int32_t tern_gen_sample(float *logits, int64_t V, const int32_t *history, int64_t n,
			const struct tern_sample_opts *o, uint64_t *state)
{
	if (o->repetition_penalty > 0 && o->repetition_penalty != 1.0)
		for (int64_t i = 0; i < n; i++) {
			int32_t id = history[i];
			if (id < 0 || id >= V)
				continue;
			float *l = &logits[id];
			/* once per distinct token (transformers gathers, then scatters) */
			bool seen = false;
			for (int64_t j = 0; j < i && !seen; j++)
				seen = history[j] == id;
			if (!seen)
				*l = *l > 0 ? (float)(*l / o->repetition_penalty)
					    : (float)(*l * o->repetition_penalty);
		}
	if (!(o->temperature > 0)) {
		int64_t best = 0;
		for (int64_t i = 1; i < V; i++)
			if (logits[i] > logits[best])
				best = i;
		return (int32_t)best;
	}
	struct cand *c = malloc((size_t)V * sizeof *c);
	if (!c) { /* no memory for the sort: greedy */
		int64_t best = 0;
		for (int64_t i = 1; i < V; i++)
			if (logits[i] > logits[best])
				best = i;
		return (int32_t)best;
	}
	for (int64_t i = 0; i < V; i++)
		c[i] = (struct cand){(float)(logits[i] / o->temperature), (int32_t)i};
	qsort(c, (size_t)V, sizeof *c, cand_desc);
	int64_t keep = V;
	if (o->top_k > 0 && o->top_k < keep) {
		float kth = c[o->top_k - 1].l;
		keep = o->top_k;
		while (keep < V && c[keep].l == kth) /* ties with the k-th stay, as in transformers */
			keep++;
	}
	double mx = c[0].l, sum = 0.0;
	double *p = malloc((size_t)keep * sizeof *p);
	if (!p) {
		int32_t id = c[0].id;
		free(c);
		return id;
	}
	for (int64_t i = 0; i < keep; i++)
		sum += p[i] = exp((double)c[i].l - mx);
	if (o->top_p > 0 && o->top_p < 1.0) { /* the smallest prefix whose mass reaches top_p */
		double cum = 0.0;
		int64_t k = 0;
		while (k < keep && cum < o->top_p * sum)
			cum += p[k++];
		keep = k > 0 ? k : 1;
	}
	if (o->min_p > 0) { /* below min_p times the largest probability: out */
		int64_t k = 1;
		while (k < keep && p[k] >= o->min_p * p[0])
			k++;
		keep = k;
	}
	sum = 0.0;
	for (int64_t i = 0; i < keep; i++)
		sum += p[i];
	double u = (double)(splitmix(state) >> 11) * 0x1p-53 * sum, cum = 0.0;
	int32_t id = c[keep - 1].id;
	for (int64_t i = 0; i < keep; i++) {
		cum += p[i];
		if (u < cum) {
			id = c[i].id;
			break;
		}
	}
	free(p);
	free(c);
	return id;
}

enum tern_status tern_gen_run(struct tern_gen *g, struct tern_gen_request *r, int32_t **out, int64_t *n_out)
{
	*out = NULL;
	*n_out = 0;
	if (r->n_prompt < 1 || r->max_new < 0)
		return tern_fail(TERN_E_INVALID, "generate: a prompt of %lld tokens, max_new_tokens %lld",
				 (long long)r->n_prompt, (long long)r->max_new);
	for (int64_t i = 0; i < r->n_prompt; i++)
		if (r->prompt[i] < 0 || r->prompt[i] >= g->V)
			return tern_fail(
				TERN_E_INVALID,
				"generate: prompt token %lld is id %d, outside the vocabulary [0, %lld)",
				(long long)i, r->prompt[i], (long long)g->V);
	int64_t total = r->n_prompt + r->max_new;
	enum tern_status st = reserve(g, tern_net_backend(g->net), total, tern_net_rank(g->net));
	if (st)
		return st;
	int32_t *hist = tern_malloc((size_t)total * 4 + 4);
	if (!hist)
		return tern_fail(TERN_E_NOMEM, "generate: out of host memory");
	memcpy(hist, r->prompt, (size_t)r->n_prompt * 4);
	int64_t n = r->n_prompt, p0 = 0;
	/* greedy without a repetition penalty is the argmax of the logits as they come: on the
	 * device (TERN_DECODE_LEGACY=1: on the host, after downloading them) */
	const struct tern_sample_opts *so = &r->sample;
	bool dev_greedy = !(so->temperature > 0) &&
			  (!(so->repetition_penalty > 0) || so->repetition_penalty == 1.0) &&
			  !tern_decode_legacy();
	enum gen_out want = dev_greedy ? GEN_ARGMAX : GEN_LOGITS;
	double t0 = tern_now();
	while (p0 < r->n_prompt && st == TERN_OK) {
		int64_t Tq = r->n_prompt - p0 < g->C ? r->n_prompt - p0 : g->C;
		st = pass(g, r->prompt + p0, p0, Tq,
			  p0 + Tq == r->n_prompt && r->max_new > 0 ? want : GEN_NONE);
		p0 += Tq;
	}
	double t1 = tern_now();
	r->prefill_s = t1 - t0;
	uint64_t state = r->sample.seed;
	struct tern_backend_counts c0 = g->be->counts;
	r->decode_steps = 0;
	/* a backend that cannot time its ops decodes without the profile (profiled stays false) */
	r->profiled = r->profile && r->max_new > 1 && tern_backend_profile(g->be, true) == TERN_OK;
	for (int64_t k = 0; k < r->max_new && st == TERN_OK; k++) {
		int32_t id =
			dev_greedy ? g->pickh : tern_gen_sample(g->logh, g->V, hist, n, &r->sample, &state);
		hist[n++] = id;
		bool stop = false;
		for (int e = 0; e < r->n_eos; e++)
			stop |= id == r->eos[e];
		if (r->on_token && !r->on_token(r->user, id))
			stop = true;
		if (stop || k + 1 == r->max_new)
			break;
		st = pass(g, &id, n - 1, 1, want);
		r->decode_steps++;
	}
	r->decode_s = tern_now() - t1;
	if (r->profiled) {
		enum tern_status ps = tern_backend_profile_read(g->be, &r->decode_profile, true);
		enum tern_status off = tern_backend_profile(g->be, false);
		if (st == TERN_OK)
			st = ps ? ps : off;
	}
	const struct tern_backend_counts *c1 = &g->be->counts;
	r->decode_counts = (struct tern_backend_counts){c1->ops - c0.ops,
							c1->commands - c0.commands,
							c1->barriers - c0.barriers,
							c1->submits - c0.submits,
							c1->waits - c0.waits,
							c1->uploads - c0.uploads,
							c1->downloads - c0.downloads};
	if (st != TERN_OK) {
		free(hist);
		return st;
	}
	int64_t m = n - r->n_prompt;
	memmove(hist, hist + r->n_prompt, (size_t)m * 4);
	*out = hist;
	*n_out = m;
	return TERN_OK;
}
