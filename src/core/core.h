/* Core services for library code: error messages with context, logging, small helpers.
 *
 * Library functions return enum tern_status; on failure they call tern_fail() which records a
 * one-line message (thread-local) and returns the status, so the usual pattern is
 *	if (bad) return tern_fail(TERN_E_INVALID, "%s: missing key %s", path, key);
 * Nothing here prints except through the log callback. */
#ifndef TERN_CORE_H
#define TERN_CORE_H

#include "tern/tern.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define TERN_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define TERN_PRINTF(a, b)
#endif

enum tern_status tern_fail(enum tern_status st, const char *fmt, ...) TERN_PRINTF(2, 3);
/* Appends " (<fmt, ap>)" to the recorded message and returns st: context only the caller knows,
 * e.g. the shape of an op whose view check failed. */
enum tern_status tern_vfail_suffix(enum tern_status st, const char *fmt, va_list ap);
void tern_clear_error(void);

enum { TERN_LOG_ERROR, TERN_LOG_WARN, TERN_LOG_INFO, TERN_LOG_DEBUG };
void tern_log(int level, const char *fmt, ...) TERN_PRINTF(2, 3);

/* Monotonic time in seconds. */
double tern_now(void);

/* malloc that records TERN_E_NOMEM on failure. */
void *tern_malloc(size_t size);
void *tern_calloc(size_t n, size_t size);
/* "dir/name" in a new allocation (free() it); NULL with TERN_E_NOMEM recorded. */
char *tern_path_join(const char *dir, const char *name);

static inline size_t tern_align_up(size_t x, size_t a) { return (x + a - 1) / a * a; }
static inline int64_t tern_cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

#endif
