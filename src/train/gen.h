/* Generation over the trainable net (src/train/net.c): the same loaded model, LoRA parameters and
 * residency (device tiers, streamed layers through the slots) as training, plus a KV cache.
 *
 * Per layer l, for a chunk of Tq new tokens at positions p0 .. p0+Tq-1 (x [Tq,D]):
 *	xn = rmsnorm(x)
 *	q, k[p0..], v[p0..] = lin_q/k/v(xn)        k and v written straight into the cache rows
 *	q, k = rmsnorm_Dh(q), rmsnorm_Dh(k)         Qwen3 only
 *	q, k = rope(q), rope(k)                     positions p0 ..
 *	ao = attention_kv(q, k[0..p0+Tq), v[..])    causal over the cache, GQA, window
 *	h1 = x + lin_o(ao)
 *	x' = h1 + mlp(rmsnorm(h1))                  tern_net_mlp: the net's own MLP
 * then the final norm and lm_head on the last row only. The prompt goes through in chunks of up to
 * 256 tokens (one pass for prompts up to that), then one token per step. The LoRA runs without
 * dropout; lora false runs the base model alone.
 *
 * Sampling (host side, on the fp32 logits of the last position), in transformers' order: the
 * repetition penalty over every token of the prompt and the completion (a logit > 0 divided by
 * it, else multiplied), then temperature, top-k, top-p, min-p, softmax and a draw from a
 * splitmix64 generator seeded with seed (the same seed gives the same tokens). temperature 0 is
 * greedy: the first largest logit, as torch.argmax; without a repetition penalty it is taken on
 * the device (the argmax op), so a decode step brings back 4 bytes, not the [V] logits
 * (TERN_DECODE_LEGACY=1: downloaded and picked on the host, the same id). */
#ifndef TERN_TRAIN_GEN_H
#define TERN_TRAIN_GEN_H

#include "train/net.h"

struct tern_gen;

/* A generator over net (borrowed; it must outlive the generator). The cache and scratch are
 * allocated on the first call for the lengths it needs and kept for later calls. */
enum tern_status tern_gen_create(struct tern_net *net, const struct tern_model *m, bool lora,
				 struct tern_gen **out);
void tern_gen_free(struct tern_gen *g);

struct tern_sample_opts {
	double temperature;        /* 0: greedy */
	int64_t top_k;             /* 0: off */
	double top_p;              /* 1: off */
	double min_p;              /* 0: off */
	double repetition_penalty; /* 1: off */
	uint64_t seed;
};

/* One completion: the prompt (n_prompt >= 1 ids), then up to max_new tokens; stops after a token
 * of eos[n_eos], or when on_token (may be NULL) returns false after a token. *out (malloc'd) gets
 * the generated ids without the prompt (an eos that stopped it included), *n_out their count. */
struct tern_gen_request {
	const int32_t *prompt;
	int64_t n_prompt, max_new;
	const int32_t *eos;
	int n_eos;
	struct tern_sample_opts sample;
	bool (*on_token)(void *user, int32_t id);
	void *user;
	double prefill_s, decode_s; /* out: wall seconds of the prompt's passes and of the decode steps */
	struct tern_backend_counts decode_counts; /* out: what the decode steps cost the backend */
	int64_t decode_steps;                     /* out: how many there were */
	bool profile;                             /* in: time the decode steps' ops (tern_backend_profile) */
	struct tern_profile decode_profile;       /* out: their device time by op, when profiled */
	bool profiled; /* out: whether decode_profile holds it (the backend could) */
};
enum tern_status tern_gen_run(struct tern_gen *g, struct tern_gen_request *r, int32_t **out, int64_t *n_out);

/* Picks the next token from logits[V] (modified in place) as described above; history[n] the
 * tokens so far (for the repetition penalty); *state the generator (seeded by the caller). */
int32_t tern_gen_sample(float *logits, int64_t V, const int32_t *history, int64_t n,
			const struct tern_sample_opts *o, uint64_t *state);

#endif
