/* Input guards (guard.h). */
#include "train/guard.h"

#include "train/net.h"
#include "train/plan.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

enum tern_status tern_guard_batch(const struct tern_config *c, const struct tern_model_config *mc,
				  uint64_t host_avail)
{
	int64_t S = c->sequence_len, mb = c->micro_batch_size, T = S * mb;
	bool cpu = c->backend == TERN_BACKEND_CPU || c->backend == TERN_BACKEND_REF;
	struct tern_net_opts no = {.R = c->lora_r,
				   .modules = tern_plan_modules(c),
				   .T = T,
				   .checkpointing = c->gradient_checkpointing,
				   .mlp_shards = tern_plan_mlp_shards(c, T, mc->D)};
	struct tern_net_sizes ns = {0};
	if (cpu && no.modules && tern_net_sizes(mc, &no, &ns) != TERN_OK)
		tern_clear_error(); /* the net reports its own errors later; only the size is wanted */
	/* staging of one micro-batch (tokens, targets, positions, segments) and at least its rows */
	double host = 2.0 * 16.0 * (double)T + (double)ns.act;
	if (!host_avail || host <= (double)host_avail)
		return TERN_OK;
	char need[32], have[32], act[32];
	tern_plan_fmt(need, sizeof need, (uint64_t)host);
	tern_plan_fmt(have, sizeof have, host_avail);
	tern_plan_fmt(act, sizeof act, ns.act);
	return tern_fail(
		TERN_E_NOMEM,
		"%s: sequence_len %" PRId64 " × micro_batch_size %" PRId64 " = %" PRId64
		" tokens per micro-batch need %s of host memory (staging and rows%s%s), more than the %s "
		"available (%s); lower sequence_len or micro_batch_size",
		c->file, S, mb, T, need, cpu ? ", activations " : "", cpu ? act : "", have,
		c->host_memory ? "host_memory" : "MemAvailable less a margin");
}

/* The largest token id of rows r (-1 when empty) and its row. */
static int32_t max_id(const struct tern_rows *r, int64_t *row)
{
	int32_t m = -1;
	int64_t n = r->n_rows * r->S;
	for (int64_t i = 0; i < n; i++) {
		if (r->tokens[i] > m) {
			m = r->tokens[i];
			*row = i / r->S;
		}
	}
	return m;
}

enum tern_status tern_guard_vocab(const struct tern_config *c, const struct tern_model_config *mc,
				  const struct tern_tokenizer *tok, const struct tern_data *d)
{
	int64_t V = mc->V;
	if (tok) {
		int32_t n = tern_tokenizer_vocab_size(tok);
		if (n > V) {
			const char *t = tern_tokenizer_token(tok, n - 1);
			return tern_fail(
				TERN_E_INVALID,
				"%s/tokenizer.json: token ids reach %" PRId32
				" (\"%.60s\"), past vocab_size %" PRId64
				" of %s/config.json: the tokenizer is not this model's (or the model's "
				"embeddings were never resized for its added tokens); use the model's own "
				"tokenizer",
				c->base_model, n - 1, t ? t : "?", V, c->base_model);
		}
	}
	const struct tern_rows *rs[2] = {&d->train, &d->val};
	for (int k = 0; k < 2; k++) {
		int64_t row = 0;
		int32_t m = rs[k]->n_rows ? max_id(rs[k], &row) : -1;
		if (m >= V)
			return tern_fail(TERN_E_INVALID,
					 "%s: datasets: a %s row holds token id %" PRId32
					 ", past vocab_size %" PRId64
					 " of %s/config.json: the data was tokenized for another model",
					 c->file, k ? "validation" : "training", m, V, c->base_model);
	}
	return TERN_OK;
}

enum tern_status tern_guard_trained(const struct tern_config *c, const struct tern_data *d)
{
	if (d->train.n_rows == 0 || d->train_stats.trained > 0)
		return TERN_OK;
	return tern_fail(TERN_E_INVALID,
			 "%s: datasets: no trained token: every label of the %" PRId64
			 " training samples (%" PRId64
			 " tokens) is masked (-100)%s; nothing would be learned",
			 c->file, d->train_stats.samples, d->train_stats.tokens,
			 c->train_on_inputs ? ""
					    : " (train_on_inputs: false masks the prompts; check the roles, "
					      "the labels or set train_on_inputs: true)");
}
