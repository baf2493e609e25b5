/* The on-disk Vulkan pipeline cache (docs/FORMATS.md "Vulkan pipeline cache file"): one file per
 * device and driver, $XDG_CACHE_HOME/tern/ (else ~/.cache/tern/)
 * pipelines-<vendorID>-<deviceID>-<driverVersion>-<pipelineCacheUUID>.bin, holding tern's header
 * and the bytes vkGetPipelineCacheData returned. TERN_PIPELINE_CACHE=off turns it off, any other
 * value is the file's path. A file whose header names another device or driver, or whose bytes
 * do not match their checksum, is ignored (a -v note) and replaced at exit. */
#ifndef TERN_VK_PCACHE_H
#define TERN_VK_PCACHE_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

/* What a cache file must have been written for. */
struct tern_vk_pcache_id {
	uint32_t vendor, device, driver;
	uint8_t uuid[16];
};

/* The file's path for id (environment and home as above) into buf; false when the cache is off
 * (TERN_PIPELINE_CACHE=off, or no XDG_CACHE_HOME nor HOME). */
bool tern_vk_pcache_path(const struct tern_vk_pcache_id *id, char *buf, size_t cap);

/* The driver's bytes from the file at path, written for id: *data (tern_malloc'd) and *n. Fails
 * (TERN_E_IO when the file is missing or unreadable, TERN_E_FORMAT when it is short, corrupt or
 * foreign) with the reason in tern_error(). */
enum tern_status tern_vk_pcache_read(const char *path, const struct tern_vk_pcache_id *id, void **data,
				     size_t *n);

/* Writes the file atomically (path.tmp.<pid>, then rename), creating its directory. */
enum tern_status tern_vk_pcache_write(const char *path, const struct tern_vk_pcache_id *id, const void *data,
				      size_t n);

#endif
