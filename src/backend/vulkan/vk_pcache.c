/* The on-disk Vulkan pipeline cache file (vk_pcache.h). Layout, little-endian:
 *	0  "TERNVKPC"   8  u32 version (1)   12 u32 vendorID   16 u32 deviceID   20 u32 driverVersion
 *	24 u8[16] pipelineCacheUUID   40 u64 n   48 u32 crc32c of the n bytes   52 u32 0
 *	56 the n bytes of vkGetPipelineCacheData (they start with Vulkan's own header: size 32+,
 *	   version 1, vendorID, deviceID, pipelineCacheUUID, checked too) */
#define _POSIX_C_SOURCE 200809L /* mkdir, getpid */
#include "backend/vulkan/vk_pcache.h"

#include "core/crc32c.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define HEAD 56
#define VERSION 1u

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

bool tern_vk_pcache_path(const struct tern_vk_pcache_id *id, char *buf, size_t cap)
{
	const char *env = getenv("TERN_PIPELINE_CACHE");
	if (env && *env) {
		if (!strcmp(env, "off") || !strcmp(env, "0"))
			return false;
		snprintf(buf, cap, "%s", env);
		return true;
	}
	char dir[4096];
	const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
	if (xdg && xdg[0] == '/')
		snprintf(dir, sizeof dir, "%s/tern", xdg);
	else if (home && *home)
		snprintf(dir, sizeof dir, "%s/.cache/tern", home);
	else
		return false;
	char uuid[33];
	for (int i = 0; i < 16; i++)
		snprintf(uuid + 2 * i, 3, "%02x", id->uuid[i]);
	snprintf(buf, cap, "%s/pipelines-%04x-%04x-%08x-%s.bin", dir, id->vendor, id->device, id->driver,
		 uuid);
	return true;
}

enum tern_status tern_vk_pcache_read(const char *path, const struct tern_vk_pcache_id *id, void **data,
				     size_t *n)
{
	*data = NULL;
	*n = 0;
	FILE *f = fopen(path, "rb");
	if (!f)
		return tern_fail(TERN_E_IO, "%s: %s", path, strerror(errno));
	enum tern_status st = TERN_OK;
	uint8_t h[HEAD], *d = NULL;
	if (fread(h, 1, HEAD, f) != HEAD || memcmp(h, "TERNVKPC", 8) != 0 || get32(h + 8) != VERSION) {
		st = tern_fail(TERN_E_FORMAT, "%s: not a tern pipeline cache file (version %u)", path,
			       VERSION);
		goto out;
	}
	if (get32(h + 12) != id->vendor || get32(h + 16) != id->device || get32(h + 20) != id->driver ||
	    memcmp(h + 24, id->uuid, 16) != 0) {
		st = tern_fail(
			TERN_E_FORMAT,
			"%s: written for device %04x:%04x driver %08x, not this one (%04x:%04x driver %08x "
			"or another pipelineCacheUUID)",
			path, get32(h + 12), get32(h + 16), get32(h + 20), id->vendor, id->device,
			id->driver);
		goto out;
	}
	uint64_t len = (uint64_t)get32(h + 40) | (uint64_t)get32(h + 44) << 32;
	if (len < 32 || len > (1ull << 31) || !(d = tern_malloc((size_t)len)) ||
	    fread(d, 1, (size_t)len, f) != len || fgetc(f) != EOF) {
		st = tern_fail(TERN_E_FORMAT, "%s: the size in the header (%llu bytes) is not the file's",
			       path, (unsigned long long)len);
		goto out;
	}
	if (tern_crc32c(0, d, (size_t)len) != get32(h + 48)) {
		st = tern_fail(TERN_E_FORMAT, "%s: checksum mismatch (a corrupt file)", path);
		goto out;
	}
	/* Vulkan's own header: what the driver would check, checked before the driver sees it */
	if (get32(d) < 32 || get32(d) > len || get32(d + 4) != 1 || get32(d + 8) != id->vendor ||
	    get32(d + 12) != id->device || memcmp(d + 16, id->uuid, 16) != 0) {
		st = tern_fail(TERN_E_FORMAT, "%s: the driver's data has a foreign VkPipelineCache header",
			       path);
		goto out;
	}
	*data = d;
	*n = (size_t)len;
	d = NULL;
out:
	free(d);
	fclose(f);
	return st;
}

static enum tern_status mkdirs_of(const char *path)
{
	char buf[4096];
	snprintf(buf, sizeof buf, "%s", path);
	char *slash = strrchr(buf, '/');
	if (!slash || slash == buf)
		return TERN_OK;
	*slash = 0;
	for (char *p = buf + 1;; p++) {
		if (*p != '/' && *p != 0)
			continue;
		char c = *p;
		*p = 0;
		if (mkdir(buf, 0777) != 0 && errno != EEXIST)
			return tern_fail(TERN_E_IO, "cannot create directory %s: %s", buf, strerror(errno));
		*p = c;
		if (!c)
			break;
	}
	return TERN_OK;
}

enum tern_status tern_vk_pcache_write(const char *path, const struct tern_vk_pcache_id *id, const void *data,
				      size_t n)
{
	enum tern_status st = mkdirs_of(path);
	if (st)
		return st;
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	uint8_t h[HEAD] = {0};
	memcpy(h, "TERNVKPC", 8);
	put32(h + 8, VERSION);
	put32(h + 12, id->vendor);
	put32(h + 16, id->device);
	put32(h + 20, id->driver);
	memcpy(h + 24, id->uuid, 16);
	put32(h + 40, (uint32_t)n);
	put32(h + 44, (uint32_t)((uint64_t)n >> 32));
	put32(h + 48, tern_crc32c(0, data, n));
	FILE *f = fopen(tmp, "wb");
	if (!f)
		return tern_fail(TERN_E_IO, "cannot write %s: %s", tmp, strerror(errno));
	bool ok = fwrite(h, 1, HEAD, f) == HEAD && fwrite(data, 1, n, f) == n;
	ok = (fclose(f) == 0) && ok;
	if (!ok || rename(tmp, path) != 0) {
		st = tern_fail(TERN_E_IO, "cannot write %s: %s", path, strerror(errno));
		remove(tmp);
	}
	return st;
}
