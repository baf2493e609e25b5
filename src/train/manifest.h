/* Checksums of a checkpoint's files: <dir>/checksums.sha256, in the format `sha256sum` writes and
 * `sha256sum -c` checks ("<64 hex digits>  <file name>\n" per file), so a flipped bit in any file
 * is caught before a resume uses it (docs/FORMATS.md). */
#ifndef TERN_TRAIN_MANIFEST_H
#define TERN_TRAIN_MANIFEST_H

#include "core/core.h"

#include <stddef.h>
#include <stdint.h>

#define TERN_MANIFEST_NAME "checksums.sha256"

/* Writes dir/checksums.sha256 with the SHA-256 of dir/<files[i]>, in that order (through a
 * temporary name, fsync and rename). */
enum tern_status tern_manifest_write(const char *dir, const char *const *files, size_t n);

/* Checks dir/checksums.sha256: every files[i] must be listed and have that SHA-256. Fails with one
 * line naming the file (TERN_E_FORMAT: a mismatch, an unlisted file, a malformed manifest;
 * TERN_E_IO: the manifest or a file cannot be read). */
enum tern_status tern_manifest_verify(const char *dir, const char *const *files, size_t n);

#endif
