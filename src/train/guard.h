/* Input guards of a training run that need the model's config.json beside the config: checks
 * that fail with one line before anything large is allocated or anything written. */
#ifndef TERN_TRAIN_GUARD_H
#define TERN_TRAIN_GUARD_H

#include "data/data.h"
#include "model/config.h"
#include "tern/tokenizer.h"
#include "train/config.h"

/* sequence_len × micro_batch_size against host memory, before the data and the net are
 * allocated: the micro-batch's staging and rows (16 bytes a token each) plus, with backend: cpu,
 * the activations (tern_net_sizes); host_avail is host_memory or the auto budget (0: unknown, not
 * checked). The device side is the residency plan's (tern_plan_make refuses a budget below its
 * fixed costs, activations included, naming sequence_len and micro_batch_size). Fails
 * (TERN_E_NOMEM) with one line naming the keys, the need and what is available. */
enum tern_status tern_guard_batch(const struct tern_config *c, const struct tern_model_config *mc,
				  uint64_t host_avail);

/* The tokenizer's ids (tok may be NULL) and the training and validation rows' token ids must lie
 * below the model's vocab_size: fails (TERN_E_INVALID) naming base_model's tokenizer.json (or the
 * dataset) and config.json. */
enum tern_status tern_guard_vocab(const struct tern_config *c, const struct tern_model_config *mc,
				  const struct tern_tokenizer *tok, const struct tern_data *d);

/* The training rows must hold at least one trained target (a label not -100): fails
 * (TERN_E_INVALID) naming the datasets and what masks them. */
enum tern_status tern_guard_trained(const struct tern_config *c, const struct tern_data *d);

#endif
