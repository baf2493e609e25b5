/* SHA-256 (FIPS 180-4) and the checksums.sha256 manifest of a checkpoint (manifest.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sha256 {
	uint32_t h[8];
	uint64_t len;
	uint8_t buf[64];
	size_t nbuf;
};

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

static uint32_t ror(uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }

static void sha_init(struct sha256 *s)
{
	static const uint32_t h0[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
				       0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
	memcpy(s->h, h0, sizeof h0);
	s->len = 0;
	s->nbuf = 0;
}

static void sha_block(struct sha256 *s, const uint8_t *p)
{
	uint32_t w[64], a[8];
	for (int i = 0; i < 16; i++)
		w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 |
		       p[4 * i + 3];
	for (int i = 16; i < 64; i++) {
		uint32_t s0 = ror(w[i - 15], 7) ^ ror(w[i - 15], 18) ^ (w[i - 15] >> 3);
		uint32_t s1 = ror(w[i - 2], 17) ^ ror(w[i - 2], 19) ^ (w[i - 2] >> 10);
		w[i] = w[i - 16] + s0 + w[i - 7] + s1;
	}
	memcpy(a, s->h, sizeof a);
	for (int i = 0; i < 64; i++) {
		uint32_t S1 = ror(a[4], 6) ^ ror(a[4], 11) ^ ror(a[4], 25);
		uint32_t ch = (a[4] & a[5]) ^ (~a[4] & a[6]);
		uint32_t t1 = a[7] + S1 + ch + K[i] + w[i];
		uint32_t S0 = ror(a[0], 2) ^ ror(a[0], 13) ^ ror(a[0], 22);
		uint32_t mj = (a[0] & a[1]) ^ (a[0] & a[2]) ^ (a[1] & a[2]);
		uint32_t t2 = S0 + mj;
		memmove(a + 1, a, 7 * sizeof a[0]);
		a[4] += t1;
		a[0] = t1 + t2;
	}
	for (int i = 0; i < 8; i++)
		s->h[i] += a[i];
}

static void sha_update(struct sha256 *s, const void *data, size_t n)
{
	const uint8_t *p = data;
	s->len += n;
	if (s->nbuf) {
		size_t k = 64 - s->nbuf < n ? 64 - s->nbuf : n;
		memcpy(s->buf + s->nbuf, p, k);
		s->nbuf += k;
		p += k;
		n -= k;
		if (s->nbuf < 64)
			return;
		sha_block(s, s->buf);
		s->nbuf = 0;
	}
	for (; n >= 64; p += 64, n -= 64)
		sha_block(s, p);
	memcpy(s->buf, p, n);
	s->nbuf = n;
}

static void sha_final(struct sha256 *s, char hex[65])
{
	uint64_t bits = s->len * 8;
	uint8_t pad = 0x80, zero = 0, len[8];
	sha_update(s, &pad, 1);
	while (s->nbuf != 56)
		sha_update(s, &zero, 1);
	for (int i = 0; i < 8; i++)
		len[i] = (uint8_t)(bits >> (56 - 8 * i));
	sha_update(s, len, 8);
	for (int i = 0; i < 8; i++)
		snprintf(hex + 8 * i, 9, "%08x", s->h[i]);
}

void tern_sha256_hex(const void *data, size_t n, char hex[65])
{
	struct sha256 s;
	sha_init(&s);
	sha_update(&s, data, n);
	sha_final(&s, hex);
}

enum tern_status tern_sha256_file(const char *path, char hex[65])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return tern_fail(TERN_E_IO, "%s: cannot read: %s", path, strerror(errno));
	struct sha256 s;
	sha_init(&s);
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
		sha_update(&s, buf, (size_t)r);
	}
	free(buf);
	close(fd);
	if (!st)
		sha_final(&s, hex);
	return st;
}

static char *join(const char *a, const char *b)
{
	size_t n = strlen(a) + strlen(b) + 2;
	char *p = tern_malloc(n);
	if (p)
		snprintf(p, n, "%s/%s", a, b);
	return p;
}

enum tern_status tern_manifest_write(const char *dir, const char *const *files, size_t n)
{
	char *path = join(dir, TERN_MANIFEST_NAME), *tmp = NULL;
	char *text = tern_malloc(n * 256 + 1);
	enum tern_status st = TERN_OK;
	int fd = -1;
	if (!path || !text) {
		st = TERN_E_NOMEM;
		goto out;
	}
	size_t len = 0;
	for (size_t i = 0; i < n && !st; i++) {
		char hex[65], *p = join(dir, files[i]);
		if (!p) {
			st = TERN_E_NOMEM;
			break;
		}
		st = tern_sha256_file(p, hex);
		free(p);
		if (!st)
			len += (size_t)snprintf(text + len, 256, "%s  %.180s\n", hex, files[i]);
	}
	if (st)
		goto out;
	size_t tl = strlen(path) + 32;
	if (!(tmp = tern_malloc(tl))) {
		st = TERN_E_NOMEM;
		goto out;
	}
	snprintf(tmp, tl, "%s.tmp.%ld", path, (long)getpid());
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
		goto out;
	}
	if (write(fd, text, len) != (ssize_t)len || fsync(fd)) {
		st = tern_fail(TERN_E_IO, "%s: write failed: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd)) {
		fd = -1;
		st = tern_fail(TERN_E_IO, "%s: close failed: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path))
		st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
out:
	if (fd >= 0)
		close(fd);
	if (st && tmp)
		unlink(tmp);
	free(tmp);
	free(text);
	free(path);
	return st;
}

enum tern_status tern_manifest_verify(const char *dir, const char *const *files, size_t n)
{
	char *path = join(dir, TERN_MANIFEST_NAME);
	if (!path)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	FILE *f = fopen(path, "r");
	if (!f) {
		st = tern_fail(TERN_E_IO, "%s: cannot read: %s (every checkpoint carries its checksums)",
			       path, strerror(errno));
		free(path);
		return st;
	}
	char line[512], want[16][65];
	bool listed[16] = {false};
	int ln = 0;
	while (!st && fgets(line, sizeof line, f)) {
		ln++;
		size_t l = strlen(line);
		if (l && line[l - 1] == '\n')
			line[--l] = 0;
		if (l < 67 || strspn(line, "0123456789abcdef") != 64 || line[64] != ' ' ||
		    (line[65] != ' ' && line[65] != '*')) {
			st = tern_fail(TERN_E_FORMAT, "%s:%d: not \"<64 hex digits>  <file>\"", path, ln);
			break;
		}
		for (size_t i = 0; i < n && i < 16; i++) {
			if (!strcmp(line + 66, files[i])) {
				memcpy(want[i], line, 64);
				want[i][64] = 0;
				listed[i] = true;
			}
		}
	}
	fclose(f);
	for (size_t i = 0; i < n && i < 16 && !st; i++) {
		char hex[65], *p = join(dir, files[i]);
		if (!p) {
			st = TERN_E_NOMEM;
			break;
		}
		if (!listed[i])
			st = tern_fail(TERN_E_FORMAT,
				       "%s: %s is not listed in %s; the checkpoint is incomplete", p,
				       files[i], path);
		else if (!(st = tern_sha256_file(p, hex)) && strcmp(hex, want[i]))
			st = tern_fail(
				TERN_E_FORMAT,
				"%s: checksum mismatch (sha256 %.12s… on disk, %.12s… in %s): the file is "
				"damaged; resume from another checkpoint",
				p, hex, want[i], TERN_MANIFEST_NAME);
		free(p);
	}
	free(path);
	return st;
}
