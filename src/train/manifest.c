/* SHA-256 (FIPS 180-4) and the checksums.sha256 manifest of a checkpoint (manifest.h). */
#define _POSIX_C_SOURCE 200809L
#include "train/manifest.h"

#include "core/sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum tern_status tern_manifest_write(const char *dir, const char *const *files, size_t n)
{
	char *path = tern_path_join(dir, TERN_MANIFEST_NAME), *tmp = NULL;
	char *text = tern_malloc(n * 256 + 1);
	enum tern_status st = TERN_OK;
	int fd = -1;
	if (!path || !text) {
		st = TERN_E_NOMEM;
		goto out;
	}
	size_t len = 0;
	for (size_t i = 0; i < n && !st; i++) {
		char hex[65], *p = tern_path_join(dir, files[i]);
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
	char *path = tern_path_join(dir, TERN_MANIFEST_NAME);
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
		char hex[65], *p = tern_path_join(dir, files[i]);
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
