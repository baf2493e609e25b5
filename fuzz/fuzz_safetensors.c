/* libFuzzer harness for the safetensors header parser: tern_st_parse on the raw input, then every
 * tensor's and metadata entry's fields are read (and the first and last data byte touched), so
 * ASan sees any pointer or size the validator let through. Seeds: fuzz/corpus/safetensors. */
#include "formats/safetensors.h"

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct tern_st_file *f = NULL;
	if (tern_st_parse(data, size, "fuzz", &f) != TERN_OK)
		return 0;
	volatile uint64_t sink = 0;
	size_t n = tern_st_file_count(f);
	for (size_t i = 0; i < n; i++) {
		const struct tern_st_tensor *t = tern_st_file_tensor(f, i);
		sink += strlen(t->name) + (uint64_t)t->dtype + tern_st_dtype_size(t->dtype) +
			(uint64_t)t->numel;
		for (int d = 0; d < t->ndim; d++)
			sink += (uint64_t)t->shape[d];
		if (t->nbytes) {
			const uint8_t *p = t->data;
			sink += p[0] + p[t->nbytes - 1];
		}
		if (tern_st_file_find(f, t->name) != t)
			__builtin_trap();
		if (t->offset + t->nbytes > size)
			__builtin_trap();
	}
	for (size_t i = 0; i < tern_st_file_metadata_count(f); i++) {
		const char *k, *v;
		tern_st_file_metadata_at(f, i, &k, &v);
		sink += strlen(k) + strlen(v);
		if (tern_st_file_metadata(f, k) == NULL)
			__builtin_trap();
	}
	(void)sink;
	tern_st_close(f);
	return 0;
}
