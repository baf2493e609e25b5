/* The residency planner inside the library (include/tern/plan.h has the plan and the CLI's entry).
 *
 * tern_plan_make computes everything from shapes: the layer group in the base format (the pack's
 * per-layer group: the projections with their NF4 absmax/nested parts as tern_pack_part_sizes
 * sizes them, norms and biases at the checkpoint dtype, each part 256-aligned as in the pack;
 * Mixtral: E experts × (gate, up, down) + the router [E, D]), the global group, the fixed device
 * costs (LoRA ×4 and activations from tern_net_sizes), the streaming slots, the placement and the
 * traffic per optimizer step. The trainer calls it with the budgets it resolved and the
 * model config it loaded; out->prefetch_depth is read as an input (0: default 2). */
#ifndef TERN_TRAIN_PLAN_H
#define TERN_TRAIN_PLAN_H

#include "model/config.h"
#include "tern/plan.h"
#include "train/config.h"

/* The projection format a config trains on: base_format, or for auto the checkpoint's (a
 * bitsandbytes checkpoint: nf4 / nf4-dq as stored; else its dtype), as the trainer opens it. */
enum tern_base_format tern_plan_format(const struct tern_model_config *mc, const struct tern_config *cfg);

/* The LoRA modules a config targets (bit 1u << enum tern_module). */
unsigned tern_plan_modules(const struct tern_config *cfg);

/* The modules a config trains in full (lora_modules_to_save; bit 1u << enum tern_full). */
unsigned tern_plan_full(const struct tern_config *cfg);

/* LoRA on the experts the config asks for (lora_target_parameters): bit 0 gate_up, bit 1 down. */
unsigned tern_plan_experts(const struct tern_config *cfg);

/* The dense-MLP shards (tern_net_opts mlp_shards) of a micro-batch of T tokens: 0 without
 * tiled_mlp, tiled_mlp_num_shards where set, else ceil(T / D) (axolotl's ALST rule). */
int64_t tern_plan_mlp_shards(const struct tern_config *cfg, int64_t T, int64_t D);

/* Plans for mc under cfg with the given budgets (bytes, margins already taken off). Fills *out
 * in every case where the inputs are valid; returns TERN_E_DEVICE_MEM (one line giving the
 * smallest device budget that works) when fixed costs + slots exceed device_budget. */
enum tern_status tern_plan_make(const struct tern_model_config *mc, const struct tern_config *cfg,
				uint64_t device_budget, uint64_t host_budget, struct tern_plan *out);

/* layer_split of cfg: *n = -1 when the ranks split the data (unset, false, off, no, none),
 * 0 for auto, else the n boundaries k[0..n) (n <= max), each the first layer of a stage after
 * the first, as written (tern_plan_make checks them against the model). One line naming the key
 * for anything else. */
enum tern_status tern_plan_split_parse(const struct tern_config *cfg, int64_t *k, int max, int *n);

/* "12.00 GiB" */
void tern_plan_fmt(char *buf, size_t size, uint64_t bytes);

#endif
