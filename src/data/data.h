/* Training data: JSONL datasets -> tokenized samples (chat templates, prompt masking) -> rows of
 * sequence_len tokens, packed or one sample per row.
 *
 * Files: JSON Lines (one JSON object a line; blank lines are skipped) or one JSON array of objects
 * (a file whose first character is '['; messages name the line an element starts on). A dataset
 * reads its path, or its data_files (under path when path is a directory) in order, then keeps
 * the rows its split selects ("train[:20%]": tern_split_rows, before shuffling). field renames
 * completion's "text"; field_messages and role_key/content_key rename a chat's list and message
 * fields (default messages/role/content, else sharegpt's conversations/from/value).
 *
 * Dataset forms:
 *   alpaca        {"instruction", "input"?, "output"}: the prompt strings of ecosystem.md, target
 *                 = output + EOS. BOS as the tokenizer adds it.
 *   chat_template {"messages": [{"role", "content"}]} or sharegpt {"conversations": [{"from",
 *                 "value"}]} (human -> user, gpt -> assistant), rendered with ChatML, Llama 3 or
 *                 Mistral v1 (exact strings in data.c), or by a Jinja template (chat.h): the
 *                 model's own (tokenizer_default), chat_template_jinja (jinja), or the built-in
 *                 qwen3 and gemma.
 *   completion    {"text"}: BOS? + text + EOS, all trained.
 *   pretokenized  {"input_ids", "labels"?}: labels aligned with input_ids as in transformers
 *                 (-100 = not trained); without labels every token is trained.
 * A bad line fails the load with one line "file:line: reason" (invalid JSON, not an object, missing
 * field, wrong type, unknown role, labels not aligned, id outside the vocabulary); a missing or
 * empty file names the file.
 *
 * Tokenization. A sample is rendered as one text (template strings and contents) made of spans,
 * trained or not, and the whole text is tokenized at once without added specials (alpaca and
 * completion get the tokenizer's BOS in front), so the ids are exactly HF tokenizers' ids for the
 * rendered string (apply_chat_template(tokenize=True) for chats). A span boundary falls after the
 * tokens that the text before it encodes to; a token that straddles a boundary (Qwen's "\n\n" made
 * of the template's "\n" and a content's leading "\n") belongs to the span it ends in.
 *
 * Labels and targets. A sample first gets transformers-style labels (labels[t] = ids[t] when token t
 * is trained, else -100); train_on_inputs: false sets prompt tokens to -100 (chats: only assistant
 * contents and their end-of-turn token are trained). Rows then hold the *shifted* targets the loss
 * op consumes directly: targets[t] = labels[t+1] within the sample, -100 at each sample's last
 * token and on padding.
 *
 * Rows, each S = sequence_len long (shapes [n_rows, S], i32):
 *   tokens     token ids; padding = pad id (special_tokens.pad_token, else EOS, else 0)
 *   targets    as above
 *   positions  0, 1, ... restarting at each sample; padding 0
 *   segments   the sample's index within its split (unique across rows, so a flattened micro-batch
 *              of several rows never attends across rows or samples); padding -1
 * Samples longer than S are cut to S tokens and counted. Packing is next-fit in shuffled order.
 * Shuffling (Fisher-Yates over splitmix64 from the seed) happens before the validation split, so
 * the same seed gives the same rows. */
#ifndef TERN_DATA_H
#define TERN_DATA_H

#include "tern/tokenizer.h"
#include "train/config.h"

#include <stdbool.h>
#include <stdint.h>

struct tern_rows {
	int64_t S, n_rows;
	int32_t *tokens, *targets, *positions, *segments; /* [n_rows, S] each */
};

struct tern_data_stats {
	int64_t samples;   /* samples in this split */
	int64_t tokens;    /* tokens after truncation (no padding) */
	int64_t trained;   /* targets != -100 */
	int64_t rows;      /* rows of S tokens */
	int64_t truncated; /* samples cut to S */
	int64_t padding;   /* padding tokens */
};

struct tern_data {
	struct tern_rows train, val;
	struct tern_data_stats train_stats, val_stats;
	enum tern_chat_template template; /* the template used for chat datasets (resolved) */
};

struct tern_data_opts {
	const struct tern_dataset_cfg *datasets;
	int n_datasets;
	int64_t sequence_len;
	bool sample_packing;
	bool train_on_inputs;
	enum tern_chat_template chat_template; /* TOKENIZER_DEFAULT: tokenizer_config's Jinja template */
	const char *chat_template_jinja;       /* chat_template: jinja (text or a .jinja file) */
	const char *tokenizer_config;          /* path of tokenizer_config.json (may be NULL) */
	double val_set_size;                   /* fraction (< 1) or count */
	uint64_t seed;
	const char *eos_token, *pad_token; /* special_tokens overrides (may be NULL) */
};

/* Fills opts from a config (datasets, lengths, flags, seed, special tokens); tokenizer_config
 * is left NULL. */
void tern_data_opts_from_config(struct tern_data_opts *opts, const struct tern_config *cfg);

/* Reads, tokenizes, shuffles, splits and lays out every dataset. *out is freed with
 * tern_data_free. tok may be NULL when every dataset is pretokenized (ids are then checked only
 * for being >= 0; padding uses id 0); a text dataset without a tokenizer is an error. Chat
 * datasets need the template's marker tokens (<|im_start|>..., <|start_header_id|>..., <s> </s>)
 * in the tokenizer. */
enum tern_status tern_data_load(struct tern_data **out, const struct tern_data_opts *opts,
				const struct tern_tokenizer *tok);

void tern_data_free(struct tern_data *d);

#endif
