/* libFuzzer harness for config.json: tern_model_config_parse on the raw input; a config that
 * parses is checked for support and expanded into its tensor map (bounded: the parser caps every
 * size), and the map's invariants are asserted. Seeds: fuzz/corpus/config. */
#include "model/model.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tern_model_config c;
	if (tern_model_config_parse((const char *)data, size, "fuzz/config.json", &c) != TERN_OK) {
		if (!tern_error()[0] || strchr(tern_error(), '\n'))
			__builtin_trap(); /* every failure is one non-empty line */
		return 0;
	}
	if (c.D < 1 || c.F < 1 || c.L < 1 || c.H < 1 || c.Hkv < 1 || c.H % c.Hkv || c.Dh < 2 || c.Dh % 2 ||
	    c.V < 1 || !(c.rms_eps > 0) || !(c.rope_theta > 0))
		__builtin_trap();
	tern_model_config_check(&c, "fuzz/config.json");
	struct tern_tensor_spec *s = NULL;
	size_t n = 0;
	if (c.L <= 64 && tern_model_tensor_map(&c, &s, &n) == TERN_OK) {
		for (size_t i = 0; i < n; i++)
			if (s[i].shape[0] < 1 || s[i].shape[1] < 1 || !s[i].name[0] || s[i].layer >= c.L)
				__builtin_trap();
		free(s);
	}
	return 0;
}
