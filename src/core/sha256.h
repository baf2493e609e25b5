/* SHA-256 (FIPS 180-4), streaming and one-shot. */
#ifndef TERN_CORE_SHA256_H
#define TERN_CORE_SHA256_H

#include "core/core.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tern_sha256 {
	uint32_t h[8];
	uint64_t len; /* bytes hashed */
	uint8_t buf[64];
	size_t n; /* bytes waiting in buf */
};

void tern_sha256_init(struct tern_sha256 *s);
void tern_sha256_update(struct tern_sha256 *s, const void *data, size_t size);
void tern_sha256_final(struct tern_sha256 *s, uint8_t out[32]);
/* 64 lower-case hex digits and a NUL */
void tern_sha256_digest_hex(const uint8_t digest[32], char hex[65]);
/* Hashes the first `limit` bytes of a file into s (UINT64_MAX: all of it); false when the file
 * cannot be read or is shorter. */
bool tern_sha256_update_file(const char *path, uint64_t limit, struct tern_sha256 *s);

/* The SHA-256 of a buffer, as hex[65]. */
void tern_sha256_hex(const void *data, size_t n, char hex[65]);
/* The SHA-256 of a whole file, as hex[65]; TERN_E_IO naming the path when it cannot be read. */
enum tern_status tern_sha256_file(const char *path, char hex[65]);

#endif
