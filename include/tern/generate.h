/* tern — generation with a trained adapter (tern generate, tern chat): the base model and an
 * optional PEFT adapter on a backend, with the trainer's residency plan (a model that trains
 * streamed also generates streamed), a KV cache, greedy or sampled decoding. docs/ARCHITECTURE.md
 * "Generation". */
#ifndef TERN_GENERATE_H
#define TERN_GENERATE_H

#include "tern/tern.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct tern_generate_opts {
	const char *model;   /* a model directory (or Hub id), or a training config (.yaml / .yml) */
	const char *adapter; /* a PEFT adapter directory; NULL: none for a model, and for a config
			      * <output_dir>/adapter when present, else lora_model_dir, else none */
	bool no_adapter;     /* the base model alone, even with a config */
	const char *backend; /* "auto", "cpu", "vulkan"; NULL: the config's (a model: auto) */
	int device;          /* -1: the config's (a model: 0) */
	int64_t device_memory, host_memory; /* -1: the config's; 0: auto; else bytes */
	const char *format; /* a model directory's projection format ("f32", "nf4-dq", ...); NULL: as
			     * stored (the checkpoint's dtype, or its bitsandbytes 4-bit tensors) */
};

struct tern_generator;

/* Opens the model, tokenizer (when the directory has one), chat template, adapter and backend.
 * An adapter that does not fit the base (another model's shapes, another rank than the config's
 * lora_r) fails with one line naming the adapter and what differs. */
enum tern_status tern_generator_open(const struct tern_generate_opts *o, struct tern_generator **out);
void tern_generator_free(struct tern_generator *g);

/* One line for a banner: "<model> (<format>) + adapter <dir> on <backend> (<device>)". */
const char *tern_generator_describe(const struct tern_generator *g);

/* A text prompt as ids: raw (the tokenizer's special tokens added, as transformers' tokenizer
 * call), or with chat as one user message through the chat template with the generation prompt.
 * Fails with one line when the model has no tokenizer (or, with chat, no template). */
enum tern_status tern_generator_encode(const struct tern_generator *g, const char *text, bool chat,
				       int32_t **ids, size_t *n);
/* messages_json: a JSON array of {"role", "content"} objects, rendered with the generation prompt. */
enum tern_status tern_generator_encode_chat(const struct tern_generator *g, const char *messages_json,
					    int32_t **ids, size_t *n);

struct tern_generate_params {
	int64_t max_new_tokens;
	double temperature;        /* 0: greedy */
	int64_t top_k;             /* 0: off */
	double top_p;              /* 1: off */
	double min_p;              /* 0: off */
	double repetition_penalty; /* 1: off */
	uint64_t seed;
	const char *const *stop; /* n_stop strings that end the completion (not included) */
	int n_stop;
};

struct tern_generation {
	int32_t *ids; /* the generated ids (an EOS that ended it included), malloc'd */
	size_t n;
	char *text;         /* their text without special tokens, cut before a stop string; NULL without a
		     * tokenizer */
	const char *finish; /* "eos", "stop" or "length" */
	double prefill_s;   /* wall seconds of the prompt's pass(es), to the first token's logits */
	double decode_s;    /* wall seconds of the decode steps after it (one per further token) */
	/* what one decode step cost the backend, averaged over the steps (backend.h, struct
	 * tern_backend_counts): op calls, device commands, barriers, submissions, host waits for the
	 * device, uploads, downloads; all 0 without decode steps */
	struct {
		double ops, commands, barriers, submits, waits, uploads, downloads;
	} per_step;
	/* with TERN_PROFILE=1 in the environment, where the backend can time its ops: the device time
	 * of one decode step by op, longest first ("matmul 2.105 ms x225 | ..."; averaged over the
	 * steps) and its sum in ms; NULL and 0 otherwise */
	char *profile;
	double profile_ms;
};
void tern_generation_free(struct tern_generation *r);

/* Generates after ids[n]; on_text (may be NULL) receives the text as it comes (held back only
 * while it may be the start of a stop string or an incomplete UTF-8 character). */
enum tern_status tern_generator_run(struct tern_generator *g, const int32_t *ids, size_t n,
				    const struct tern_generate_params *p,
				    void (*on_text)(void *user, const char *text, size_t len), void *user,
				    struct tern_generation *out);

/* The end-of-sequence ids generation stops at (generation_config.json and config.json). */
size_t tern_generator_eos(const struct tern_generator *g, const int32_t **ids);

#ifdef __cplusplus
}
#endif
#endif
