/* The residency manager: slots, staging, prefetch and per-expert streaming (residency.h). */
#define _POSIX_C_SOURCE 200809L /* posix_madvise */
#include "residency/residency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

struct range {
	uint64_t off, size;
};
enum { XR_MAX = TERN_RESIDENCY_XPARTS };

/* A layer's group. */
struct rlayer {
	enum tern_tier tier;
	const uint8_t *host;          /* host tier: its pinned copy of the group; disk tier: the mapping */
	struct tern_buffer *host_buf; /* host tier: the pinned copy (host_alloc) */
	uint64_t bytes;               /* group size */
	/* a streamed sparse layer streams per expert: the byte ranges (into the group) of expert e's
	 * parts, xr[XR_MAX * e + j] for j < nxr[e], copied when the expert first gets tokens; the
	 * rest of the group (attention, router), copied when the layer is loaded */
	struct range *xr, *rest;
	int *nxr, nrest;
	uint64_t *xbytes; /* [E] */
	uint64_t rest_bytes;
};

/* A device slot for a streamed layer. A copy into it is ordered after a mark of every op queued
 * before (so the ops reading its previous layer are done); ops using it wait for its ticket. */
struct slot {
	struct tern_buffer *buf;
	int layer;                   /* -1: empty */
	uint64_t ticket;             /* copy not yet waited for by ops (0: none) */
	struct tern_buffer *staging; /* disk tier: the group read from the pack file, copied from */
	uint8_t *staging_ptr;
	uint64_t staging_ticket; /* the last copy out of staging */
	uint8_t *have;           /* [E] sparse layer: experts copied in since it was loaded */
};

struct tern_residency {
	struct tern_backend *be;
	int64_t L, E, K;
	int64_t T;         /* tokens of the micro-batch at work (the last acquire's) */
	struct rlayer *lw; /* [L] */
	uint64_t slot_bytes;
	int nslots;
	struct slot *slots;
	int *seq; /* the layer of each acquire of one micro-batch */
	int seq_len, seq_pos, seq_train, seq_eval;
	struct tern_residency_stats stats;
};

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;
	return x->off < y->off ? -1 : x->off > y->off;
}

/* Sorts ranges r[0..k) and joins neighbours whose gap holds no part (parts start at multiples of
 * TERN_PACK_ALIGN); returns the count left. */
static int join_ranges(struct range *r, int k)
{
	qsort(r, (size_t)k, sizeof *r, range_cmp);
	int j = 0;
	for (int i = 0; i < k; i++) {
		uint64_t end = j ? r[j - 1].off + r[j - 1].size : 0;
		if (j && r[i].off <= tern_align_up(end, TERN_PACK_ALIGN))
			r[j - 1].size = r[i].off + r[i].size - r[j - 1].off;
		else
			r[j++] = r[i];
	}
	return j;
}

/* The streaming units of streamed sparse layer w from its experts' parts d: each expert's ranges
 * and the rest of the group (the gaps between the experts' ranges that hold a part). */
static enum tern_status expert_ranges(struct tern_residency *res, struct rlayer *w,
				      const struct tern_residency_layer *d)
{
	int64_t E = res->E;
	struct range *all = tern_calloc((size_t)(E * XR_MAX), sizeof *all);
	w->xr = tern_calloc((size_t)(E * XR_MAX), sizeof *w->xr);
	w->rest = tern_calloc((size_t)(E * XR_MAX + 1), sizeof *w->rest);
	w->nxr = tern_calloc((size_t)E, sizeof *w->nxr);
	w->xbytes = tern_calloc((size_t)E, sizeof *w->xbytes);
	if (!all || !w->xr || !w->rest || !w->nxr || !w->xbytes) {
		free(all);
		return tern_fail(TERN_E_NOMEM, "residency: out of host memory");
	}
	int na = 0;
	for (int64_t e = 0; e < E; e++) {
		struct range *r = &w->xr[XR_MAX * e];
		int k = d->nparts[e];
		if (k < 0 || k > XR_MAX) {
			free(all);
			return tern_fail(TERN_E_INVALID, "residency: expert %lld has %d parts", (long long)e,
					 k);
		}
		for (int j = 0; j < k; j++)
			r[j] = (struct range){d->parts[XR_MAX * e + j].off, d->parts[XR_MAX * e + j].size};
		w->nxr[e] = join_ranges(r, k);
		for (int j = 0; j < w->nxr[e]; j++) {
			w->xbytes[e] += r[j].size;
			all[na++] = r[j];
		}
	}
	na = join_ranges(all, na);
	uint64_t pos = 0;
	for (int i = 0; i <= na; i++) {
		uint64_t end = i < na ? all[i].off : w->bytes;
		if (end > pos && tern_align_up(pos, TERN_PACK_ALIGN) < end) {
			w->rest[w->nrest++] = (struct range){pos, end - pos};
			w->rest_bytes += end - pos;
		}
		if (i < na)
			pos = all[i].off + all[i].size;
	}
	free(all);
	return TERN_OK;
}

enum tern_status tern_residency_create(struct tern_backend *be, const struct tern_residency_opts *o,
				       struct tern_residency **out)
{
	enum tern_status st = TERN_OK;
	int64_t L = o->L;
	*out = NULL;
	if (!be->vt->host_alloc || !be->vt->copy_async)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "backend %s cannot stream layers (no asynchronous copies)", be->name);
	if (o->seq_eval < 0 || o->seq_train < o->seq_eval)
		return tern_fail(TERN_E_INVALID, "residency: sequence of %d entries, %d forward",
				 o->seq_train, o->seq_eval);
	struct tern_residency *r = tern_calloc(1, sizeof *r);
	if (!r)
		return tern_fail(TERN_E_NOMEM, "residency: out of host memory");
	r->be = be;
	r->L = L;
	r->E = o->E;
	r->K = o->K;
	r->nslots = o->slots > 0 ? o->slots : 2;
	r->lw = tern_calloc((size_t)L, sizeof *r->lw);
	r->slots = tern_calloc((size_t)r->nslots, sizeof *r->slots);
	r->seq = tern_calloc((size_t)(o->seq_train > 0 ? o->seq_train : 1), sizeof *r->seq);
	if (!r->lw || !r->slots || !r->seq) {
		st = tern_fail(TERN_E_NOMEM, "residency: out of host memory");
		goto out;
	}
	memcpy(r->seq, o->seq, (size_t)o->seq_train * sizeof *r->seq);
	r->seq_eval = o->seq_eval;
	r->seq_train = o->seq_train;
	r->seq_len = r->seq_train;
	for (int64_t l = 0; l < L; l++) {
		const struct tern_residency_layer *d = &o->layers[l];
		r->lw[l].tier = d->tier;
		r->lw[l].bytes = d->bytes;
		if (d->tier != TERN_TIER_DEVICE && d->bytes > r->slot_bytes)
			r->slot_bytes = d->bytes;
	}
	for (int i = 0; i < r->nslots; i++) {
		struct slot *sl = &r->slots[i];
		sl->layer = -1;
		if (r->E > 0 && !(sl->have = tern_calloc((size_t)r->E, 1))) {
			st = tern_fail(TERN_E_NOMEM, "residency: out of host memory");
			goto out;
		}
		if ((st = be->vt->buffer_alloc(be, r->slot_bytes, &sl->buf)) ||
		    (st = be->vt->host_alloc(be, r->slot_bytes, &sl->staging, (void **)&sl->staging_ptr)))
			goto out;
	}
	for (int64_t l = 0; l < L; l++) {
		const struct tern_residency_layer *d = &o->layers[l];
		struct rlayer *w = &r->lw[l];
		if (w->tier == TERN_TIER_DEVICE)
			continue;
		if (w->tier == TERN_TIER_HOST) {
			void *ptr = NULL;
			if ((st = be->vt->host_alloc(be, w->bytes, &w->host_buf, &ptr)))
				goto out;
			memcpy(ptr, d->src, w->bytes);
			w->host = ptr;
		} else {
			w->host = d->src;
		}
		if (d->parts && (st = expert_ranges(r, w, d)))
			goto out;
	}
	*out = r;
	r = NULL;
out:
	tern_residency_free(r);
	return st;
}

void tern_residency_free(struct tern_residency *r)
{
	if (!r)
		return;
	struct tern_backend *be = r->be;
	for (int i = 0; i < r->nslots && r->slots; i++) {
		if (r->slots[i].buf)
			be->vt->buffer_free(be, r->slots[i].buf);
		if (r->slots[i].staging)
			be->vt->buffer_free(be, r->slots[i].staging);
		free(r->slots[i].have);
	}
	if (r->lw)
		for (int64_t l = 0; l < r->L; l++) {
			struct rlayer *w = &r->lw[l];
			if (w->host_buf)
				be->vt->buffer_free(be, w->host_buf);
			free(w->xr);
			free(w->rest);
			free(w->nxr);
			free(w->xbytes);
		}
	free(r->lw);
	free(r->slots);
	free(r->seq);
	free(r);
}

uint64_t tern_residency_device_bytes(const struct tern_residency *r)
{
	return (uint64_t)r->nslots * r->slot_bytes;
}

void tern_residency_order(struct tern_residency *r, bool backward)
{
	int len = backward ? r->seq_train : r->seq_eval;
	if (len != r->seq_len)
		r->seq_len = len, r->seq_pos = 0;
}

static int slot_of(const struct tern_residency *r, int l)
{
	for (int i = 0; i < r->nslots; i++)
		if (r->slots[i].layer == l)
			return i;
	return -1;
}

/* Copies ranges rg[0..k) of layer l's group into slot s after mark `after`: host-tier layers from
 * their pinned copy, disk-tier ones read from the mapping into the slot's staging buffer first
 * (the caller has waited for the staging's earlier copies of these bytes). *ticket = the last
 * copy's ticket. */
static enum tern_status copy_ranges(struct tern_residency *r, int s, int l, const struct range *rg, int k,
				    uint64_t after, uint64_t *ticket)
{
	const struct tern_backend_vtable *vt = r->be->vt;
	struct slot *sl = &r->slots[s];
	struct rlayer *w = &r->lw[l];
	enum tern_status st;
	for (int i = 0; i < k; i++) {
		struct tern_view src = {w->host_buf, rg[i].off, rg[i].size};
		if (w->tier == TERN_TIER_DISK) {
			double t0 = tern_now();
			/* the disk read (page faults on the mapping) */
			memcpy(sl->staging_ptr + rg[i].off, w->host + rg[i].off, rg[i].size);
			r->stats.read_s += tern_now() - t0;
			src.buf = sl->staging;
		}
		struct tern_view dst = {sl->buf, rg[i].off, rg[i].size};
		if ((st = vt->copy_async(r->be, dst, src, after, ticket)))
			return st;
		if (w->tier == TERN_TIER_DISK)
			sl->staging_ticket = *ticket;
		r->stats.bytes[w->tier] += rg[i].size;
	}
	return TERN_OK;
}

/* Whether a micro-batch of T tokens is expected to route to nearly every expert: the expected
 * distinct experts of T·K uniform draws, E·(1 − (1 − K/E)^T), reach 7/8 of E. Then a sparse
 * layer is loaded whole (its experts prefetched with it): per-expert copies start only once the
 * routing is known, so they pay only when many experts stay idle. */
static bool experts_all(const struct tern_residency *r)
{
	double E = (double)r->E;
	return E * (1.0 - pow(1.0 - (double)r->K / E, (double)r->T)) >= 0.875 * E;
}

/* Starts copying layer l's group into slot s, after every op queued so far (among them the last
 * reads of the slot's previous layer). Disk-tier groups are read from the mapping into the slot's
 * staging buffer first, which the host may rewrite only after the slot's previous copy is done.
 * A sparse layer's experts are left out unless experts_all: tern_residency_acquire_experts
 * copies those that get tokens. */
static enum tern_status load_slot(struct tern_residency *r, int s, int l)
{
	const struct tern_backend_vtable *vt = r->be->vt;
	struct slot *sl = &r->slots[s];
	struct rlayer *w = &r->lw[l];
	uint64_t mark = 0;
	enum tern_status st = vt->mark(r->be, &mark);
	if (st != TERN_OK)
		return st;
	sl->layer = -1;
	if (sl->ticket) { /* a prefetch never used: two copies into one slot must not overlap */
		if ((st = vt->ticket_wait_host(r->be, sl->ticket)))
			return st;
		sl->ticket = 0;
	}
	if (w->tier == TERN_TIER_DISK) {
		double t0 = tern_now();
		if ((st = vt->ticket_wait_host(r->be, sl->staging_ticket)))
			return st;
		r->stats.wait_s += tern_now() - t0;
		/* readahead: the neighbours are read next (l + 1 in the forward, l - 1 in the backward);
		 * of a sparse layer only the rest (its experts are read when they get tokens) */
		for (int d = -1; d <= 1; d += 2) {
			int u = l + d;
			if (u < 0 || u >= r->L || r->lw[u].tier != TERN_TIER_DISK)
				continue;
			const struct rlayer *wu = &r->lw[u];
			struct range whole = {0, wu->bytes};
			const struct range *rg = wu->xr ? wu->rest : &whole;
			for (int i = 0; i < (wu->xr ? wu->nrest : 1); i++) {
				const uint8_t *p = wu->host + rg[i].off;
				uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095;
				posix_madvise((void *)a, rg[i].size + ((uintptr_t)p - a),
					      POSIX_MADV_WILLNEED);
			}
		}
	}
	struct range whole = {0, w->bytes};
	bool part = w->xr && !experts_all(r);
	if (w->xr) {
		uint64_t xb = w->bytes - w->rest_bytes; /* the experts' ranges and the padding between */
		memset(sl->have, !part, (size_t)r->E);
		r->stats.expert_whole += xb;
		if (!part) {
			r->stats.expert_bytes += xb;
			r->stats.expert_loads += (uint64_t)r->E;
		}
	}
	if ((st = copy_ranges(r, s, l, part ? w->rest : &whole, part ? w->nrest : 1, mark, &sl->ticket)))
		return st;
	sl->layer = l;
	r->stats.loads++;
	return TERN_OK;
}

enum tern_status tern_residency_acquire_experts(struct tern_residency *r, int l, const int64_t *cnt)
{
	const struct tern_backend_vtable *vt = r->be->vt;
	if (l < 0 || l >= r->L)
		return tern_fail(TERN_E_INVALID, "residency: layer %d of %lld", l, (long long)r->L);
	struct rlayer *w = &r->lw[l];
	if (!w->xr)
		return TERN_OK;
	int s = slot_of(r, l);
	if (s < 0)
		return tern_fail(TERN_E_INVALID, "net: layer %d is not in a slot", l);
	struct slot *sl = &r->slots[s];
	uint64_t mark = 0, ticket = 0;
	enum tern_status st;
	for (int64_t e = 0; e < r->E; e++) {
		if (!cnt[e])
			continue;
		if (sl->have[e]) {
			r->stats.expert_hits++;
			continue;
		}
		if (!mark && (st = vt->mark(r->be, &mark)))
			return st;
		if ((st = copy_ranges(r, s, l, &w->xr[XR_MAX * e], w->nxr[e], mark, &ticket)))
			return st;
		sl->have[e] = 1;
		r->stats.expert_loads++;
		r->stats.expert_bytes += w->xbytes[e];
	}
	return ticket ? vt->wait_ticket(r->be, ticket) : TERN_OK;
}

/* The streamed layers used after sequence position pos, up to max distinct ones into out (the
 * layer at pos itself left out); returns their count. */
static int upcoming(const struct tern_residency *r, int pos, int *out, int max)
{
	int k = 0;
	for (int i = 1; i <= r->seq_len && k < max; i++) {
		int l = r->seq[(pos + i) % r->seq_len];
		if (r->lw[l].tier == TERN_TIER_DEVICE || l == r->seq[pos % r->seq_len])
			continue;
		bool dup = false;
		for (int j = 0; j < k; j++)
			dup |= out[j] == l;
		if (!dup)
			out[k++] = l;
	}
	return k;
}

enum tern_status tern_residency_acquire(struct tern_residency *r, int l, int64_t tokens,
					struct tern_view *out)
{
	*out = (struct tern_view){NULL, 0, 0};
	if (l < 0 || l >= r->L)
		return tern_fail(TERN_E_INVALID, "residency: layer %d of %lld", l, (long long)r->L);
	if (r->seq_len <= 0)
		return TERN_OK;
	struct rlayer *w = &r->lw[l];
	r->T = tokens;
	/* the sequence position of this call */
	int pos = r->seq_pos;
	for (int i = 0; i < r->seq_len && r->seq[pos % r->seq_len] != l; i++)
		pos++;
	pos %= r->seq_len;
	r->seq_pos = pos + 1;
	enum tern_status st;
	int next[64], nn = upcoming(r, pos, next, r->nslots - 1 < 64 ? r->nslots - 1 : 64);
	if (w->tier != TERN_TIER_DEVICE) {
		int s = slot_of(r, l);
		if (s >= 0) {
			r->stats.hits++;
		} else {
			/* not prefetched: any slot not holding an upcoming layer */
			for (int i = 0; i < r->nslots && s < 0; i++) {
				bool keep = false;
				for (int j = 0; j < nn; j++)
					keep |= r->slots[i].layer == next[j];
				if (!keep)
					s = i;
			}
			if (s < 0)
				s = 0;
			if ((st = load_slot(r, s, l)))
				return st;
		}
		struct slot *sl = &r->slots[s];
		if (sl->ticket && (st = r->be->vt->wait_ticket(r->be, sl->ticket)))
			return st;
		sl->ticket = 0;
		*out = (struct tern_view){sl->buf, 0, w->bytes};
	}
	/* prefetch */
	for (int j = 0; j < nn; j++) {
		if (slot_of(r, next[j]) >= 0)
			continue;
		int victim = -1;
		for (int i = 0; i < r->nslots && victim < 0; i++) {
			int vl = r->slots[i].layer;
			bool busy = vl == l && w->tier != TERN_TIER_DEVICE;
			for (int k = 0; k < nn; k++)
				busy |= vl >= 0 && vl == next[k];
			if (!busy)
				victim = i;
		}
		if (victim < 0)
			break;
		if ((st = load_slot(r, victim, next[j])))
			return st;
	}
	return TERN_OK;
}

void tern_residency_stats(struct tern_residency *r, struct tern_residency_stats *out, bool reset)
{
	*out = r->stats;
	if (reset)
		memset(&r->stats, 0, sizeof r->stats);
}
