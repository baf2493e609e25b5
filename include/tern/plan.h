/* tern — the residency planner: where each frozen layer of a model lives during training (device
 * memory, host memory or the pack file on disk) under memory budgets, computed from config.json
 * and the training config alone (no weights needed). docs/ARCHITECTURE.md "Residency planner".
 *
 * Device memory holds the fixed costs (embeddings, lm_head, final norm, the fp32 norms/biases
 * block, the LoRA parameters, gradients and AdamW moments, the activations of one micro-batch, the
 * loss scratch and a reserve, both the figures of the config's backend), then, when not every layer
 * fits, prefetch_depth + 1 streaming slots of one layer group each, then as many layers as fit
 * ("device" tier). The next layers go to
 * pinned host buffers within the host budget less a host reserve ("host" tier); the rest stay in
 * the mmapped pack file ("disk" tier). Layers are placed in layer order: 0.. on the device, then
 * host, then disk. */
#ifndef TERN_PLAN_H
#define TERN_PLAN_H

#include "tern/tern.h"

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The same values as the trainer's enum tern_tier (src/residency/residency.h): tier[] of a plan can be
 * passed as tern_net_opts.tiers as it is. */
enum tern_plan_tier { TERN_PLAN_DEVICE, TERN_PLAN_HOST, TERN_PLAN_DISK, TERN_PLAN_TIERS };

/* "device", "host", "disk". */
const char *tern_plan_tier_name(enum tern_plan_tier t);

#define TERN_PLAN_ITEMS 16
#define TERN_PLAN_MAX_LAYERS 4096
#define TERN_PLAN_DEFAULT_DEPTH 2
#define TERN_PLAN_MAX_STAGES 64

/* Auto budgets: device = heap - max(10 %, 512 MiB); host = MemAvailable - max(10 %, 1 GiB). */
#define TERN_PLAN_DEVICE_MARGIN_MIN ((uint64_t)512 << 20)
#define TERN_PLAN_HOST_MARGIN_MIN ((uint64_t)1 << 30)
/* Host memory kept out of the host tier: tern itself, the tokenized data, the Vulkan staging
 * buffer and the page cache the disk tier reads through (plus the LoRA host copy, an item). */
#define TERN_PLAN_HOST_RESERVE ((uint64_t)1 << 30)

struct tern_plan_item {
	char name[80];
	uint64_t bytes;
};

struct tern_plan {
	/* ---- inputs (prefetch_depth is read by the planner: 0 = TERN_PLAN_DEFAULT_DEPTH) ---- */
	int prefetch_depth;
	/* A layer split (layer_split, docs/ARCHITECTURE.md "Layer split"), read by the planner too:
	 * stages devices (0 or 1: no split; with a layer_split list of k boundaries, 0 means k + 1)
	 * of which this plan is stage `stage` (0-based): its layers, its fixed costs (the embeddings
	 * on the first stage, lm_head and final norm on the last, the LoRA block whole on every one)
	 * and its own tiers. */
	int stages, stage;
	/* The product precision the net runs at (compute_dtype resolved for the backend), read by
	 * the planner: at F16/BF16 the checkpointed layer inputs take 2 bytes a value. 0 (F32)
	 * when unknown: the larger fp32 figure. */
	int prec;
	char model_type[32];
	char format[16];             /* base format of the projections ("nf4-dq", ...) */
	int64_t L, E, top_k;         /* layers; Mixtral experts (0 otherwise) */
	int64_t T, accum;            /* tokens per micro-batch, micro-batches per optimizer step */
	uint64_t device_budget;      /* bytes the plan may use on the device */
	uint64_t host_budget;        /* bytes the plan may use in host memory */
	bool device_auto, host_auto; /* the budget was derived (margin already taken off) */
	uint64_t device_detected;    /* auto: the heap size read from the device (else 0) */
	char device_name[256];       /* auto: the device whose memory was read */

	/* ---- sizes ---- */
	uint64_t layer_bytes;  /* one layer's pack group (all layers of an architecture are alike) */
	uint64_t global_bytes; /* the global pack group: embeddings, final norm, lm_head */
	uint64_t pack_bytes;   /* the pack file, about (page-aligned groups + metadata) */
	int64_t lora_params;   /* trainable parameters */

	/* Fixed device costs, each named; fixed_bytes is their sum. */
	struct tern_plan_item fixed[TERN_PLAN_ITEMS];
	int n_fixed;
	uint64_t fixed_bytes;
	/* Offloaded checkpoints (gradient_checkpointing: offload, or true where the inputs on the
	 * device would not fit): the layer inputs in pinned host memory (offload_host bytes, a host
	 * reserve item), passing through offload_slots device slots (inside the activations). */
	bool offload;
	uint64_t offload_host;
	int offload_slots;
	/* Streaming slots: n_slots × layer_bytes (0 when every layer is on the device). */
	int n_slots;
	uint64_t slot_bytes;
	/* Host reserve, each named; host_reserve_bytes is their sum. */
	struct tern_plan_item host_reserve[4];
	int n_host_reserve;
	uint64_t host_reserve_bytes;

	/* ---- layer split ---- */
	int64_t l0, l1;                          /* this stage's layers [l0, l1); 0, L without a split */
	int64_t split[TERN_PLAN_MAX_STAGES + 1]; /* each stage's first layer, split[stages] = L */
	/* each stage's weights: its layers + the global tensors it holds (the bytes the auto split
	 * balances: it minimises the largest) */
	uint64_t stage_weights[TERN_PLAN_MAX_STAGES];

	/* ---- placement ---- */
	uint8_t tier[TERN_PLAN_MAX_LAYERS]; /* enum tern_plan_tier of layer l; TERN_PLAN_TIERS: a layer
					     * of another stage */
	int64_t n_layers[TERN_PLAN_TIERS];  /* of this stage's layers */
	/* device: fixed + slots + device layers; host: reserve + host layers; disk: disk layers */
	uint64_t used[TERN_PLAN_TIERS];

	/* ---- traffic: bytes copied to the device per optimizer step, by source tier ---- */
	int loads_per_micro; /* loads of each streamed layer per micro-batch (forward, backward) */
	uint64_t streamed[TERN_PLAN_TIERS];
	/* MoE: a streamed sparse layer's experts stream one by one, only those a micro-batch routes
	 * tokens to. expert_bytes: one expert's bytes; experts_hit: the expected distinct experts of
	 * T·top_k uniform draws, E·(1−(1−top_k/E)^T) — an estimate (real routers are not uniform);
	 * streamed_est: streamed[] with only those experts copied per load (streamed[] copies all;
	 * as the net, a layer loads whole when experts_hit reaches 7/8 of E) */
	uint64_t expert_bytes;
	double experts_hit;
	uint64_t streamed_est[TERN_PLAN_TIERS];

	/* ---- verdict ---- */
	uint64_t min_device; /* smallest device budget with which the plan works */
	uint64_t all_device; /* device budget with which every layer stays on the device */
	bool ok;
	char verdict[320];
};

/* Reads a training config (with "key=value" overrides) and its base_model's config.json only,
 * and plans. device_memory / host_memory: -1 = the config's keys, 0 = auto, > 0 = bytes (the
 * --device-memory / --host-memory flags). Auto device reads the budget of the config's Vulkan
 * device (VK_EXT_memory_budget where present, else its heap; else tern_devices' figure) and fails with a one-line error naming the flag when there is no GPU. When the
 * plan cannot work, *out is filled (ok = false, min_device set) and the error is one line giving
 * the smallest device budget that would work. */
enum tern_status tern_plan_config(const char *config_path, const char *const *sets, int n_sets,
				  int64_t device_memory, int64_t host_memory, struct tern_plan *out);

/* Parses "auto" (0), "12GB", "512MB", "1.5GiB", "1024" (bytes) as the config's size keys do (KB..TB
 * and KiB..TiB are all powers of 1024). False when s is not a size. */
bool tern_plan_parse_size(const char *s, int64_t *bytes);

/* The auto budgets: heap (or the driver's budget) minus max(10 %, 512 MiB), 0 when smaller. */
uint64_t tern_plan_device_auto(uint64_t heap);
/* mem_available minus max(10 %, 1 GiB), 0 when smaller. */
uint64_t tern_plan_host_auto_from(uint64_t mem_available);
/* tern_plan_host_auto_from(MemAvailable of /proc/meminfo). */
enum tern_status tern_plan_host_auto(uint64_t *bytes);

#ifdef __cplusplus
}
#endif
#endif
