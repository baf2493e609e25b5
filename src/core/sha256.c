/* SHA-256 (FIPS 180-4): checkpoint manifests (train/manifest.c) and the Hub's LFS blob names
 * (hub/hub.c). */
#define _POSIX_C_SOURCE 200809L
#include "core/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

/* one 64-byte block into the state */
static void block(uint32_t h[8], const uint8_t *p)
{
	uint32_t w[64];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
		       p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], k = h[7];
	for (int i = 0; i < 64; i++) {
		uint32_t t1 = k + (ror(e, 6) ^ ror(e, 11) ^ ror(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
		uint32_t t2 = (ror(a, 2) ^ ror(a, 13) ^ ror(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
		k = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
	}
	h[0] += a, h[1] += b, h[2] += c, h[3] += d, h[4] += e, h[5] += f, h[6] += g, h[7] += k;
}

void tern_sha256_init(struct tern_sha256 *s)
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(s->h, h0, sizeof h0);
	s->len = 0;
	s->n = 0;
}

void tern_sha256_update(struct tern_sha256 *s, const void *data, size_t size)
{
	const uint8_t *p = data;
	s->len += size;
	if (s->n) {
		size_t take = 64 - s->n < size ? 64 - s->n : size;
		memcpy(s->buf + s->n, p, take);
		s->n += take, p += take, size -= take;
		if (s->n < 64)
			return;
		block(s->h, s->buf);
		s->n = 0;
	}
	for (; size >= 64; p += 64, size -= 64)
		block(s->h, p);
	memcpy(s->buf, p, size);
	s->n = size;
}

void tern_sha256_final(struct tern_sha256 *s, uint8_t out[32])
{
	uint64_t bits = s->len * 8;
	uint8_t pad[72] = {0x80};
	size_t padn = (s->n < 56 ? 56 : 120) - s->n; /* to 56 mod 64, then the 8-byte length */
	for (int i = 0; i < 8; i++)
		pad[padn + (size_t)i] = (uint8_t)(bits >> (56 - 8 * i));
	tern_sha256_update(s, pad, padn + 8);
	for (int i = 0; i < 8; i++)
		for (int j = 0; j < 4; j++)
			out[4 * i + j] = (uint8_t)(s->h[i] >> (24 - 8 * j));
}

void tern_sha256_digest_hex(const uint8_t digest[32], char hex[65])
{
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", digest[i]);
}

bool tern_sha256_update_file(const char *path, uint64_t limit, struct tern_sha256 *s)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	static _Thread_local uint8_t buf[1 << 16];
	uint64_t left = limit;
	while (left) {
		size_t n = fread(buf, 1, left < sizeof buf ? (size_t)left : sizeof buf, f);
		if (!n)
			break;
		tern_sha256_update(s, buf, n);
		left -= n;
	}
	bool ok = left == 0 || limit == UINT64_MAX;
	fclose(f);
	return ok;
}

void tern_sha256_hex(const void *data, size_t n, char hex[65])
{
	struct tern_sha256 s;
	uint8_t d[32];
	tern_sha256_init(&s);
	tern_sha256_update(&s, data, n);
	tern_sha256_final(&s, d);
	tern_sha256_digest_hex(d, hex);
}

enum tern_status tern_sha256_file(const char *path, char hex[65])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot read: %s", path, strerror(errno));
	struct tern_sha256 s;
	tern_sha256_init(&s);
	enum tern_status st = TERN_OK;
	size_t cap = (size_t)1 << 20;
	uint8_t *buf = tern_malloc(cap);
	if (!buf) {
		close(fd);
		return TERN_E_NOMEM;
	}
	for (;;) {
		ssize_t r = read(fd, buf, cap);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			st = tern_fail(TERN_E_IO, "%s: read failed: %s", path, strerror(errno));
			break;
		}
		if (r == 0)
			break;
		tern_sha256_update(&s, buf, (size_t)r);
	}
	free(buf);
	close(fd);
	if (!st) {
		uint8_t d[32];
		tern_sha256_final(&s, d);
		tern_sha256_digest_hex(d, hex);
	}
	return st;
}
