/* eval_prompts (docs/CONFIG.md): greedy completions of the config's prompts with the adapter as
 * it is at each eval, printed and written to <output_dir>/eval_prompts/step_<N>.jsonl, so the
 * user sees the model change while it trains. Generation runs on the training net (gen.h): the
 * same weights, LoRA block and residency; its KV cache and scratch are allocated on the first
 * eval, beside the plan's budget (prompt + eval_max_new_tokens tokens). */
#ifndef TERN_TRAIN_EVAL_PROMPTS_H
#define TERN_TRAIN_EVAL_PROMPTS_H

#include "model/model.h"
#include "tern/tokenizer.h"
#include "train/config.h"
#include "train/net.h"

#include <stdio.h>

struct tern_eval_prompts;

/* Encodes the prompts (a string raw, with the tokenizer's special tokens; a message list through
 * chat_template_jinja when set, else the model's tokenizer_config.json template, with the
 * generation prompt). Fails with one line when there is no tokenizer or no template for a message
 * list. *out stays NULL when the config has no eval_prompts. */
enum tern_status tern_eval_prompts_open(const struct tern_config *c, const char *model_dir,
					const struct tern_tokenizer *tok, struct tern_net *net,
					const struct tern_model *m, struct tern_eval_prompts **out);
void tern_eval_prompts_free(struct tern_eval_prompts *e);

/* Generates every completion (greedy, eval_max_new_tokens, stopping at the model's EOS ids),
 * prints "eval prompt i: <completion>" lines on out and writes
 * <output_dir>/eval_prompts/step_<step>.jsonl (one {"step", "prompt", "completion", "ids"} line
 * each) through a temporary name renamed into place. */
enum tern_status tern_eval_prompts_run(struct tern_eval_prompts *e, int64_t step, FILE *out);

#endif
