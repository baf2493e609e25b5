/* What a resumed run checks against its checkpoint (docs/ARCHITECTURE.md, "Output directory:
 * lock, atomic writes, resume checks"): the training rows it trains on are the rows the
 * checkpoint's run trained on, and the checkpoint's data position lies within them. */
#ifndef TERN_TRAIN_RESUME_H
#define TERN_TRAIN_RESUME_H

#include "data/data.h"
#include "train/adapter.h"
#include "train/config.h"

/* 16 hex digits of a 64-bit hash of n bytes (a word-wise multiply-rotate hash: fast enough for
 * gigabytes of rows; not cryptographic). */
void tern_fingerprint_hex(const void *data, size_t n, char out[17]);

/* Fills the data fields of *st: rows, sequence_len and the fingerprint of train (tokens,
 * targets, positions, segments), and the fingerprint of each dataset file of c that is a regular
 * file (up to TERN_STATE_FILES; others are recorded with an empty fingerprint). */
void tern_state_set_data(struct tern_train_state *st, const struct tern_rows *train,
			 const struct tern_config *c);

/* Checks a checkpoint's state (then) against this run's data fields (now, from
 * tern_state_set_data) with rows = now's training rows. Fails (TERN_E_INVALID) with one line
 * naming the checkpoint and what changed: sequence_len, the number of rows, a dataset file, or
 * the rows themselves (tokenizer, template, packing or masking); or a data position (row) past
 * the rows. A version-1 state (no data fields) passes with a warning. */
enum tern_status tern_resume_check(const char *ckpt, const struct tern_train_state *then,
				   const struct tern_train_state *now);

#endif
