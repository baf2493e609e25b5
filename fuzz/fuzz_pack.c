/* libFuzzer harness for the pack-file reader: tern_pack_parse on the input (copied to a
 * page-aligned buffer, as an mmap would give it); a pack that validates has every tensor's
 * parts read: small tensors are dequantized in full (ASan checks each read), large ones have their
 * first and last bytes touched. Seeds: fuzz/corpus/pack (tiny models from `tern quantize`). */
#include "model/model.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *buf = aligned_alloc(4096, (size + 4095) / 4096 * 4096 + 4096);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	/* Mend the metadata checksum (when the declared size is in range) so that mutations reach
	 * the checks behind it; the last input byte's low bit keeps some inputs unmended. */
	if (size >= TERN_PACK_HEADER && (data[size - 1] & 1)) {
		uint64_t meta = 0;
		for (int i = 0; i < 8; i++)
			meta |= (uint64_t)buf[32 + i] << (8 * i);
		if (meta >= 32 && meta <= size) {
			static const uint8_t zero[8];
			uint64_t h = tern_fnv1a(TERN_FNV_INIT, buf, 24);
			h = tern_fnv1a(h, zero, 8);
			h = tern_fnv1a(h, buf + 32, meta - 32);
			for (int i = 0; i < 8; i++)
				buf[24 + i] = (uint8_t)(h >> (8 * i));
		}
	}
	struct tern_pack *p = NULL;
	if (tern_pack_parse(buf, size, "fuzz.tpack", &p) != TERN_OK) {
		if (!tern_error()[0] || strchr(tern_error(), '\n'))
			__builtin_trap();
		free(buf);
		return 0;
	}
	volatile uint64_t sink = 0;
	for (uint32_t i = 0; i < p->n_tensors; i++) {
		const struct tern_pack_tensor *t = &p->t[i];
		for (int k = 0; k < TERN_PART_COUNT; k++) {
			if (!t->size[k])
				continue;
			if (t->off[k] + t->size[k] > size)
				__builtin_trap();
			sink += buf[t->off[k]] + buf[t->off[k] + t->size[k] - 1];
		}
		int64_t n = t->shape[0] * t->shape[1];
		if (n <= (1 << 16)) {
			float *out = malloc((size_t)n * sizeof *out);
			if (out) {
				tern_pack_tensor_f32(p, t, out);
				uint32_t bits;
				memcpy(&bits, &out[n - 1], 4);
				sink += bits;
				free(out);
			}
		}
	}
	(void)sink;
	tern_pack_free(p);
	free(buf);
	return 0;
}
