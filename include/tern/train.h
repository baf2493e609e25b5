/* tern — training and evaluation driven by a YAML config (docs/CONFIG.md).
 *
 * tern_train runs the whole job: config (+ overrides), data, model, backend, LoRA (fresh, from
 * lora_model_dir, or resumed from a checkpoint), the optimizer loop with evaluation, logging,
 * checkpoints and the final PEFT adapter in <output_dir>/adapter. It prints the banner and the
 * progress to `out` (a live line on a terminal, one line per logging step otherwise) and leaves
 * errors in tern_error(). */
#ifndef TERN_TRAIN_H
#define TERN_TRAIN_H

#include "tern/tern.h"

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tern_train_result {
	int64_t steps;      /* optimizer steps done in total */
	double loss;        /* the last step's loss */
	double eval_before; /* eval loss before training (NAN without a validation split) */
	double eval_after;  /* eval loss at the end (NAN without a validation split) */
	int interrupted;    /* the signal (SIGINT, SIGTERM) that stopped the run after writing a
			     * checkpoint; 0 when it ran to its end */
	char adapter_dir[4096];
};

/* How a run reports, apart from the config: none of it changes what is computed. */
struct tern_train_opts {
	/* After every optimizer step, one line on `out` with the device time per op kind and the
	 * FLOP rates achieved, and the same figures (profile_*) in that step's metrics.jsonl line
	 * (every step gets one). TERN_PROFILE=1 in the environment does the same. Profiling may
	 * serialize the device's work (Vulkan waits for every submission to read its timestamps). */
	bool profile;
};

/* sets[n_sets]: "key=value" overrides (--set). opts may be NULL (the defaults: all off). */
enum tern_status tern_train(const char *config_path, const char *const *sets, int n_sets,
			    const struct tern_train_opts *opts, FILE *out, struct tern_train_result *res);

struct tern_eval_result {
	double base_loss, base_ppl;       /* base model alone */
	double adapter_loss, adapter_ppl; /* with the adapter (NAN when there is none) */
	int64_t tokens;                   /* trained targets evaluated */
	char adapter_dir[4096];           /* the adapter used ("" when none) */
};

/* Loss and perplexity of the base model and of base + adapter on the config's validation split
 * (or, without one, on all its data). The adapter: adapter_dir when given, else
 * <output_dir>/adapter when present, else lora_model_dir. */
enum tern_status tern_eval(const char *config_path, const char *const *sets, int n_sets,
			   const char *adapter_dir, FILE *out, struct tern_eval_result *res);

struct tern_report_result {
	char path[4200];      /* <dir>/report.html */
	int64_t steps, evals; /* step and eval lines plotted */
	bool truncated;       /* metrics.jsonl ended in a cut-off line (a killed run), left out */
};

/* Writes <dir>/report.html: one self-contained page (inline SVG, no scripts) with the loss and
 * eval loss, learning rate, grad norm, tokens/s and peak memory of <dir>/metrics.jsonl against the
 * step, a summary, and the resolved <dir>/config.yaml. A missing or damaged metrics.jsonl fails
 * with one line (TERN_E_IO, TERN_E_FORMAT); a cut-off last line is left out. */
enum tern_status tern_report(const char *dir, struct tern_report_result *res);

#ifdef __cplusplus
}
#endif
#endif
