/* Chat templates in Jinja: the model's own template (tokenizer_config.json's "chat_template", or
 * chat_template.jinja beside it), a template given in the config, or tern's built-in qwen3,
 * gemma, mistral_v2v3, mistral_v3_tekken, phi_3 and phi_35, rendered as transformers' apply_chat_template renders them, with the span of text each
 * assistant turn trains.
 *
 * Variables the template sees: messages (role, content and the message's other fields;
 * reasoning_content, thinking and reasoning alias each other as in transformers), tools and
 * documents (none), add_generation_prompt, bos_token and eos_token (when the tokenizer has them).
 *
 * Trained spans (train_on_inputs: false). With {% generation %} blocks in the template, those
 * blocks, as transformers' return_assistant_tokens_mask. Otherwise each assistant message's span
 * is found by rendering (axolotl and transformers find turns the same way, by rendering):
 *   start  where the conversation rendered with that message's content replaced by a sentinel
 *          first differs, moved back to the end of the generation prompt when the template has one
 *          (the conversation up to the message renders longer with add_generation_prompt) and the
 *          conversation up to the message, rendered with it, is a prefix of the whole (so Qwen3's
 *          "<think>\n\n</think>\n\n" in front of the last answer is trained);
 *   end    where the two renderings agree again from the end, plus the end-of-turn marker right
 *          after it (an end marker string given by the caller: the tokenizer's special tokens and
 *          EOS), after spaces only. */
#ifndef TERN_CHAT_H
#define TERN_CHAT_H

#include "core/core.h"
#include "train/config.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

struct tern_chat;

/* A template from text. name is used in messages. */
enum tern_status tern_chat_from_text(struct tern_chat **out, const char *name, const char *text, size_t len);

/* The template of a model directory's tokenizer_config.json (path): its "chat_template" (a string,
 * or the "default" entry of a list of {name, template}), else chat_template.jinja in the same
 * directory. */
enum tern_status tern_chat_from_tokenizer_config(struct tern_chat **out, const char *path);

/* chat_template_jinja: template text, or the path of a file holding it (a value without "{{" or
 * "{%" that names a readable file). */
enum tern_status tern_chat_from_config_value(struct tern_chat **out, const char *value);

/* tern's built-in Jinja templates: TERN_TEMPLATE_QWEN3, _GEMMA, _MISTRAL_V2V3, _MISTRAL_V3_TEKKEN,
 * _PHI_3, _PHI_35. */
enum tern_status tern_chat_builtin(struct tern_chat **out, enum tern_chat_template t);

void tern_chat_free(struct tern_chat *c);

/* Special strings: bos/eos (NULL: undefined for the template) and the end markers (NULL-terminated
 * list, borrowed while c lives) that close a trained assistant span. */
void tern_chat_set_tokens(struct tern_chat *c, const char *bos, const char *eos,
			  const char *const *end_markers);

struct tern_chat_text {
	char *text; /* malloc'd, NUL-terminated */
	size_t len;
	size_t *span; /* n_span trained [start, end) byte ranges, 2 per range, ascending */
	size_t n_span;
};

/* Renders messages (a JSON array of message objects, borrowed). spans: also find the trained
 * spans (otherwise n_span = 0). */
enum tern_status tern_chat_render(const struct tern_chat *c, json_t *messages, bool add_generation_prompt,
				  bool spans, struct tern_chat_text *out);

void tern_chat_text_free(struct tern_chat_text *t);

#endif
