/* libFuzzer harness for the Jinja chat-template interpreter (data/jinja.c, data/chat.c).
 *
 * Input: template text, optionally followed by a NUL byte and a JSON object of variables (without
 * one, a two-turn chat is used). A template that parses is rendered under small limits (64 KiB of
 * output, 100,000 steps) and, through tern_chat_render, with its trained spans; every failure
 * must be one non-empty line, and a rendering must be NUL-terminated at its length with spans
 * inside it. Seeds: fuzz/corpus/jinja (the real templates of tests/data/chat/templates). */
#include "data/chat.h"
#include "data/jinja.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char chat[] =
	"[{\"role\": \"system\", \"content\": \"s\"}, {\"role\": \"user\", \"content\": \"u\"}, "
	"{\"role\": \"assistant\", \"content\": \" a \"}]";

static void one_line(void)
{
	if (!tern_error()[0] || strchr(tern_error(), '\n'))
		__builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	const char *p = (const char *)data;
	const char *nul = memchr(p, 0, size);
	size_t tlen = nul ? (size_t)(nul - p) : size;
	json_t *vars = nul ? json_loadb(nul + 1, size - tlen - 1, 0, NULL) : NULL;
	json_t *msgs = json_loads(chat, 0, NULL);
	if (!json_is_object(vars)) {
		json_decref(vars);
		vars = json_pack("{sOsbss}", "messages", msgs, "add_generation_prompt", 1, "bos_token",
				 "<s>");
	}
	struct tern_jinja *t = NULL;
	if (tern_jinja_parse(&t, "fuzz", p, tlen) != TERN_OK) {
		one_line();
	} else {
		struct tern_jinja_limits lim = {1 << 16, 100000};
		struct tern_jinja_out o;
		if (tern_jinja_render(t, vars, &lim, &o) == TERN_OK) {
			if (strlen(o.text) > o.len)
				__builtin_trap();
			for (size_t i = 0; i < 2 * o.n_gen; i++)
				if (o.gen[i] > o.len)
					__builtin_trap();
			tern_jinja_out_free(&o);
		} else {
			one_line();
		}
	}
	tern_jinja_free(t);
	struct tern_chat *c = NULL;
	static const char *const markers[] = {"</s>", NULL};
	if (tlen < 4096 && tern_chat_from_text(&c, "fuzz", p, tlen) == TERN_OK) {
		tern_chat_set_tokens(c, "<s>", "</s>", markers);
		struct tern_chat_text ct;
		if (tern_chat_render(c, msgs, false, true, &ct) == TERN_OK) {
			for (size_t i = 0; i < 2 * ct.n_span; i++)
				if (ct.span[i] > ct.len || (i && ct.span[i] < ct.span[i - 1]))
					__builtin_trap();
			tern_chat_text_free(&ct);
		} else {
			one_line();
		}
	}
	tern_chat_free(c);
	json_decref(msgs);
	json_decref(vars);
	return 0;
}
