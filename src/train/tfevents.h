/* TensorBoard event files (use_tensorboard: true), written as transformers' TensorBoardCallback
 * writes them: <output_dir>/runs/<Mon>DD_HH-MM-SS_<host>/events.out.tfevents.<time>.<host>.<pid>.0,
 * a TFRecord stream of Event protobufs (docs/FORMATS.md "TensorBoard event file"): the first
 * holds file_version "brain.Event:2", every other one scalar (tag, simple_value) at a step. */
#ifndef TERN_TRAIN_TFEVENTS_H
#define TERN_TRAIN_TFEVENTS_H

#include "core/core.h"
#include "core/crc32c.h"

#include <stddef.h>
#include <stdint.h>

/* TFRecord's masked CRC: ((c >> 15) | (c << 17)) + 0xa282ead8. */
uint32_t tern_crc32c_mask(uint32_t crc);

struct tern_tfevents;

/* Creates <dir>/runs/<Mon>DD_HH-MM-SS_<host>/ (local time, as transformers' logging_dir) and the
 * event file in it, and writes the file_version event. path (cap bytes) gets the file's path. */
enum tern_status tern_tfevents_open(const char *dir, struct tern_tfevents **out, char *path, size_t cap);

/* One scalar event: tag ("train/loss"), step, value; wall time now. */
enum tern_status tern_tfevents_scalar(struct tern_tfevents *w, const char *tag, int64_t step, double value);

/* Makes what was written visible to readers (TensorBoard reads the file while it grows). */
enum tern_status tern_tfevents_flush(struct tern_tfevents *w);

void tern_tfevents_close(struct tern_tfevents *w);

/* Event protobuf bytes into buf (cap bytes); returns the length, or 0 when it does not fit.
 * file_version NULL: a scalar event (tag, value); else the file-version event. For tests. */
size_t tern_tfevents_encode(uint8_t *buf, size_t cap, double wall_time, int64_t step,
			    const char *file_version, const char *tag, float value);

#endif
