/* Peak memory and the TensorBoard scalars of a training run (observe.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/observe.h"

#include <math.h>
#include <sys/resource.h>

uint64_t tern_peak_rss(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0 || ru.ru_maxrss <= 0)
		return 0;
	return (uint64_t)ru.ru_maxrss * 1024; /* Linux: kilobytes */
}

enum tern_status tern_tb_step(struct tern_tfevents *w, const struct tern_step_log *l)
{
	const double mib = 1.0 / 1048576.0;
	enum tern_status st;
	if ((st = tern_tfevents_scalar(w, "train/loss", l->step, l->loss)) ||
	    (st = tern_tfevents_scalar(w, "train/learning_rate", l->step, l->lr)) ||
	    (st = tern_tfevents_scalar(w, "train/grad_norm", l->step, l->grad_norm)) ||
	    (st = tern_tfevents_scalar(w, "train/epoch", l->step, l->epoch)) ||
	    (st = tern_tfevents_scalar(w, "train/tokens_per_second", l->step, l->tokens_per_s)) ||
	    (st = tern_tfevents_scalar(w, "train/peak_device_memory_mib", l->step,
				       (double)l->peak_device * mib)) ||
	    (st = tern_tfevents_scalar(w, "train/peak_host_memory_mib", l->step, (double)l->peak_host * mib)))
		return st;
	return tern_tfevents_flush(w);
}

enum tern_status tern_tb_eval(struct tern_tfevents *w, int64_t step, double loss)
{
	enum tern_status st = tern_tfevents_scalar(w, "eval/loss", step, loss);
	return st ? st : tern_tfevents_flush(w);
}

void tern_step_clock_add(struct tern_step_clock *c, double seconds)
{
	if (c->seen++ < c->skip)
		c->warmup_s += seconds;
	else
		c->sum += seconds;
}

double tern_step_clock_per_step(const struct tern_step_clock *c, int64_t need)
{
	int64_t n = c->seen - c->skip;
	return n >= need && n > 0 ? c->sum / (double)n : 0;
}

int64_t tern_time_fit(double max_time, double elapsed, int64_t step, double per_step)
{
	if (!(per_step > 0) || elapsed >= max_time)
		return step;
	double more = floor((max_time - elapsed) / per_step);
	return more > 1e15 ? step + (int64_t)1e15 : step + (int64_t)more;
}
