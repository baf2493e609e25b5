/* The residency manager: streams frozen layers' weights (their pack groups) between the device,
 * pinned host memory and the mmapped pack file, shared by training (src/train/net.c) and
 * generation (through tern_net_use_layer).
 *
 * A layer lives in one tier (the residency planner, src/train/plan.c, picks it): device (its own
 * buffer, uploaded once by its owner: the residency leaves it alone), host (a pinned copy made here
 * at creation) or disk (the pack file's mapping, read through a pinned staging buffer). A streamed
 * layer is copied into one of `slots` device slots before its use: tern_residency_acquire makes it
 * resident (prefetched earlier, or loaded now), has the ops queued next wait on the device for
 * its copy, and prefetches the next slots - 1 streamed layers of the streaming sequence into slots
 * whose layers are not about to be used.
 *
 * Ordering. A copy into a slot is queued after a mark of every op queued before it (among them
 * the last reads of the slot's previous layer), so there is no release call: a slot needs no
 * hand-back, and the layer stays usable by the ops queued after its acquire until the streaming
 * sequence refills its slot (at least slots - 1 acquires later).
 *
 * Sparse (MoE) layers stream per expert: the group is split at creation into each expert's byte
 * ranges and the rest (attention, router); acquire copies the rest, and
 * tern_residency_acquire_experts the experts that get tokens, once the routing is known (unless
 * a micro-batch is expected to route to nearly every expert: then the layer is copied whole).
 *
 * Not thread-safe; one residency per net (per backend). */
#ifndef TERN_RESIDENCY_H
#define TERN_RESIDENCY_H

#include "backend/backend.h"
#include "model/pack.h"

#include <stdbool.h>
#include <stdint.h>

/* Where a layer's frozen weights live between uses (issue 5's residency tiers). */
enum tern_tier {
	TERN_TIER_DEVICE, /* its own device buffer, uploaded once */
	TERN_TIER_HOST,   /* a host copy, uploaded into a device slot before each use */
	TERN_TIER_DISK,   /* the mmapped pack file, read into a device slot before each use */
	TERN_TIER_COUNT
};

/* Streaming counters since the last reset: bytes uploaded from each tier, slot loads and hits,
 * and host seconds spent waiting for uploads. */
struct tern_residency_stats {
	uint64_t bytes[TERN_TIER_COUNT];
	uint64_t loads, hits;
	double wait_s; /* host seconds waiting for earlier copies (slot staging reuse) */
	double read_s; /* host seconds reading disk-tier groups from the mapping (the disk reads) */
	/* streamed sparse layers stream per expert (in bytes[] too): the experts copied in (those
	 * that got tokens and were not in the layer's slot yet), their bytes, the experts that got
	 * tokens and were there (hits), and the experts' bytes whole-layer streaming would have
	 * copied (all experts of every load) */
	uint64_t expert_loads, expert_hits, expert_bytes, expert_whole;
};

/* A byte range [off, off + size) of a layer's group. */
struct tern_residency_range {
	uint64_t off, size;
};

/* An expert's ranges at most: its 3 tensors' (gate, up, down) parts. */
enum { TERN_RESIDENCY_XPARTS = 3 * TERN_PART_COUNT };

/* One layer's group as the residency sees it. */
struct tern_residency_layer {
	enum tern_tier tier; /* device: not streamed (acquire leaves it to its owner) */
	const uint8_t *src;  /* host and disk tiers: the group's bytes (the pack file's mapping) */
	uint64_t bytes;      /* group size */
	/* a sparse layer streamed per expert: the ranges (into the group) of expert e's parts,
	 * parts[TERN_RESIDENCY_XPARTS * e + j] for j < nparts[e], in any order (joined at creation);
	 * NULL: the group streams whole */
	const struct tern_residency_range *parts;
	const int *nparts; /* [E] */
};

struct tern_residency_opts {
	const struct tern_residency_layer *layers; /* [L], by layer index; read during create only */
	int64_t L;
	int slots; /* device slots (each the largest streamed group); 0: 2 */
	/* the streaming sequence: the layer of each acquire of one micro-batch, seq[0 .. seq_train);
	 * its first seq_eval entries are a forward's (tern_residency_order) */
	const int *seq;
	int seq_eval, seq_train;
	int64_t E, K; /* experts of a sparse layer and experts per token; 0, 0 for a dense model */
};

struct tern_residency;

/* Allocates the slots (device buffer and pinned staging each), the host tier's pinned copies
 * (copied from src) and the experts' ranges. Needs the backend's host_alloc and copy_async. */
enum tern_status tern_residency_create(struct tern_backend *be, const struct tern_residency_opts *o,
				       struct tern_residency **out);
void tern_residency_free(struct tern_residency *r);

/* Device bytes the residency holds (its slots). */
uint64_t tern_residency_device_bytes(const struct tern_residency *r);

/* Selects the streaming sequence the next acquires follow: a micro-batch with its backward
 * (the whole sequence) or a forward only (its first seq_eval entries); a change restarts it. */
void tern_residency_order(struct tern_residency *r, bool backward);

/* Makes layer l's group usable by the ops queued next, for a micro-batch of `tokens` tokens: a
 * streamed layer is in a slot (prefetched earlier, or loaded now) and the ops wait on the device
 * for its copy; *out = the group in its slot (the view to bind the layer's weights to), or
 * {NULL, 0, 0} for a device-tier layer (its own buffer stays bound). Then the next slots - 1
 * streamed layers of the sequence are prefetched. */
enum tern_status tern_residency_acquire(struct tern_residency *r, int l, int64_t tokens,
					struct tern_view *out);

/* Makes the experts of acquired sparse layer l that get tokens (cnt[e] > 0, [E]) usable by the ops
 * queued next: those not yet in the layer's slot are copied in (after every op queued so far), and
 * the ops wait on the device for the copies. Device-tier and whole-streamed layers: nothing. */
enum tern_status tern_residency_acquire_experts(struct tern_residency *r, int l, const int64_t *cnt);

/* The counters since the last reset into *out; reset: zeroes them. */
void tern_residency_stats(struct tern_residency *r, struct tern_residency_stats *out, bool reset);

#endif
