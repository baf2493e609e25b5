/* What a training run shows about itself besides the progress line: peak memory figures and the
 * TensorBoard scalars of use_tensorboard (tags as transformers' TensorBoardCallback writes them). */
#ifndef TERN_TRAIN_OBSERVE_H
#define TERN_TRAIN_OBSERVE_H

#include "train/tfevents.h"

#include <stdint.h>

/* Peak resident set of this process in bytes (getrusage ru_maxrss; 0 when unknown). */
uint64_t tern_peak_rss(void);

/* One logged optimizer step. */
struct tern_step_log {
	int64_t step;
	double epoch, loss, lr, grad_norm, tokens_per_s;
	uint64_t peak_device, peak_host; /* bytes */
};

/* train/loss, train/learning_rate, train/grad_norm, train/epoch, train/tokens_per_second,
 * train/peak_device_memory_mib, train/peak_host_memory_mib at step; then flushed. */
enum tern_status tern_tb_step(struct tern_tfevents *w, const struct tern_step_log *l);

/* eval/loss at step; then flushed. */
enum tern_status tern_tb_eval(struct tern_tfevents *w, int64_t step, double loss);

/* Seconds per optimizer step for the max_time plan, without the warm-up: the first step of a
 * run compiles the shaders the steps use (about 50 s on lavapipe with 2 cores and a cold cache,
 * against 1-3 s for a step), so it is left out; eval and checkpoint time are not step time
 * either (the caller feeds step times only). */
struct tern_step_clock {
	int64_t seen;    /* steps fed */
	int64_t skip;    /* the first `skip` steps fed are warm-up (1) */
	double warmup_s; /* their seconds */
	double sum;      /* seconds of the steps after them */
};

void tern_step_clock_add(struct tern_step_clock *c, double seconds);

/* The mean seconds of the steps after warm-up, or 0 while fewer than `need` were measured. */
double tern_step_clock_per_step(const struct tern_step_clock *c, int64_t need);

/* The total steps that fit in max_time: `step` done after `elapsed` seconds (warm-up included:
 * it was spent), each further step taking per_step seconds. Never less than step. */
int64_t tern_time_fit(double max_time, double elapsed, int64_t step, double per_step);

#endif
