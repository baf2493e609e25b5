#define _POSIX_C_SOURCE 200809L
#include "core/core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static _Thread_local char err_msg[1024];

static tern_log_fn log_fn;
static void *log_user;
static int log_max = TERN_LOG_WARN;

const char *tern_status_str(enum tern_status st)
{
	switch (st) {
	case TERN_OK: return "ok";
	case TERN_E_INVALID: return "invalid argument";
	case TERN_E_NOMEM: return "out of host memory";
	case TERN_E_DEVICE_MEM: return "out of device memory";
	case TERN_E_IO: return "i/o error";
	case TERN_E_FORMAT: return "malformed file";
	case TERN_E_UNSUPPORTED: return "unsupported";
	case TERN_E_UNAVAILABLE: return "unavailable";
	case TERN_E_DEVICE: return "device error";
	case TERN_E_VALIDATION: return "validation error";
	case TERN_E_INTERRUPTED: return "interrupted";
	}
	return "unknown status";
}

const char *tern_error(void) { return err_msg; }

void tern_clear_error(void) { err_msg[0] = 0; }

/* A message longer than err_msg keeps its head (where: file, line, key) and its tail (the reason
 * and the fix), joined by "...": a huge value cuts itself, never the reason. */
enum tern_status tern_fail(enum tern_status st, const char *fmt, ...)
{
	va_list ap, again;
	va_start(ap, fmt);
	va_copy(again, ap);
	int n = vsnprintf(err_msg, sizeof err_msg, fmt, ap);
	va_end(ap);
	char *full = n >= (int)sizeof err_msg ? malloc((size_t)n + 1) : NULL;
	if (full) {
		vsnprintf(full, (size_t)n + 1, fmt, again);
		size_t head = 320, tail = sizeof err_msg - head - 4;
		while (head > 0 && ((unsigned char)full[head] & 0xc0) == 0x80) /* UTF-8 boundaries */
			head--;
		while (tail > 0 && ((unsigned char)full[(size_t)n - tail] & 0xc0) == 0x80)
			tail--;
		memcpy(err_msg, full, head);
		memcpy(err_msg + head, "...", 3);
		memcpy(err_msg + head + 3, full + (size_t)n - tail, tail + 1);
		free(full);
	}
	va_end(again);
	return st;
}

enum tern_status tern_vfail_suffix(enum tern_status st, const char *fmt, va_list ap)
{
	char suffix[256];
	vsnprintf(suffix, sizeof suffix, fmt, ap);
	size_t n = strlen(err_msg);
	snprintf(err_msg + n, sizeof err_msg - n, " (%s)", suffix);
	return st;
}

void tern_set_log(tern_log_fn fn, void *user, int max_level)
{
	log_fn = fn;
	log_user = user;
	log_max = max_level;
}

void tern_log(int level, const char *fmt, ...)
{
	if (level > log_max)
		return;
	char buf[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (log_fn) {
		log_fn(level, buf, log_user);
		return;
	}
	static const char *tag[] = {"error", "warning", "info", "debug"};
	if (level == TERN_LOG_NOTE_LEVEL && !strncmp(buf, "note: ", 6)) {
		fprintf(stderr, "tern: %s\n", buf);
		return;
	}
	fprintf(stderr, "tern: %s: %s\n", tag[level < 0 ? 0 : level > 3 ? 3 : level], buf);
}

double tern_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void *tern_malloc(size_t size)
{
	void *p = malloc(size ? size : 1);
	if (!p)
		tern_fail(TERN_E_NOMEM, "out of host memory allocating %zu bytes", size);
	return p;
}

void *tern_calloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		tern_fail(TERN_E_NOMEM, "out of host memory allocating %zu x %zu bytes", n, size);
	return p;
}

char *tern_path_join(const char *dir, const char *name)
{
	size_t a = strlen(dir), b = strlen(name);
	char *p = tern_malloc(a + b + 2);
	if (!p)
		return NULL;
	memcpy(p, dir, a);
	p[a] = '/';
	memcpy(p + a + 1, name, b + 1);
	return p;
}
