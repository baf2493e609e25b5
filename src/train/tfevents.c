/* TensorBoard event files (tfevents.h): a CRC-32C, a protobuf encoder for the two Event shapes
 * tern writes, and the TFRecord framing around them. */
#define _POSIX_C_SOURCE 200809L /* gethostname, localtime_r, mkdir */
#include "train/tfevents.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

uint32_t tern_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

/* ---- protobuf: the few wire types Event needs ---- */

struct pb {
	uint8_t *b;
	size_t n, cap;
	bool over;
};

static void pb_byte(struct pb *p, uint8_t v)
{
	if (p->n < p->cap)
		p->b[p->n] = v;
	else
		p->over = true;
	p->n++;
}

static void pb_varint(struct pb *p, uint64_t v)
{
	while (v >= 0x80) {
		pb_byte(p, (uint8_t)(v | 0x80));
		v >>= 7;
	}
	pb_byte(p, (uint8_t)v);
}

static void pb_key(struct pb *p, unsigned field, unsigned wire) { pb_varint(p, (uint64_t)field << 3 | wire); }

static void pb_bytes(struct pb *p, unsigned field, const void *s, size_t n)
{
	pb_key(p, field, 2);
	pb_varint(p, n);
	for (size_t i = 0; i < n; i++)
		pb_byte(p, ((const uint8_t *)s)[i]);
}

static void pb_le(struct pb *p, uint64_t v, int bytes)
{
	for (int i = 0; i < bytes; i++)
		pb_byte(p, (uint8_t)(v >> (8 * i)));
}

static size_t varint_len(uint64_t v)
{
	size_t n = 1;
	while (v >= 0x80) {
		v >>= 7;
		n++;
	}
	return n;
}

/* Event { double wall_time = 1; int64 step = 2; oneof { string file_version = 3; Summary summary = 5; } }
 * Summary { repeated Value value = 1; }  Value { string tag = 1; float simple_value = 2; } */
size_t tern_tfevents_encode(uint8_t *buf, size_t cap, double wall_time, int64_t step,
			    const char *file_version, const char *tag, float value)
{
	struct pb p = {buf, 0, cap, false};
	uint64_t w;
	memcpy(&w, &wall_time, 8);
	pb_key(&p, 1, 1);
	pb_le(&p, w, 8);
	if (step)
		pb_key(&p, 2, 0), pb_varint(&p, (uint64_t)step);
	if (file_version) {
		pb_bytes(&p, 3, file_version, strlen(file_version));
	} else {
		size_t tl = strlen(tag);
		size_t val = 1 + varint_len(tl) + tl + 1 + 4; /* Value */
		size_t sum = 1 + varint_len(val) + val;       /* Summary */
		uint32_t f;
		memcpy(&f, &value, 4);
		pb_key(&p, 5, 2);
		pb_varint(&p, sum);
		pb_key(&p, 1, 2);
		pb_varint(&p, val);
		pb_bytes(&p, 1, tag, tl);
		pb_key(&p, 2, 5);
		pb_le(&p, f, 4);
	}
	return p.over ? 0 : p.n;
}

/* ---- the file ---- */

struct tern_tfevents {
	FILE *f;
	char path[4400];
};

static enum tern_status write_record(struct tern_tfevents *w, const uint8_t *data, size_t n)
{
	uint8_t head[12];
	uint64_t len = n;
	for (int i = 0; i < 8; i++)
		head[i] = (uint8_t)(len >> (8 * i));
	uint32_t c = tern_crc32c_mask(tern_crc32c(0, head, 8));
	for (int i = 0; i < 4; i++)
		head[8 + i] = (uint8_t)(c >> (8 * i));
	uint8_t tail[4];
	c = tern_crc32c_mask(tern_crc32c(0, data, n));
	for (int i = 0; i < 4; i++)
		tail[i] = (uint8_t)(c >> (8 * i));
	if (fwrite(head, 1, 12, w->f) != 12 || fwrite(data, 1, n, w->f) != n || fwrite(tail, 1, 4, w->f) != 4)
		return tern_fail(TERN_E_IO, "cannot write %s: %s", w->path, strerror(errno));
	return TERN_OK;
}

static double wall_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static enum tern_status mkdir1(const char *p)
{
	if (mkdir(p, 0777) != 0 && errno != EEXIST)
		return tern_fail(TERN_E_IO, "cannot create directory %s: %s", p, strerror(errno));
	return TERN_OK;
}

enum tern_status tern_tfevents_open(const char *dir, struct tern_tfevents **out, char *path, size_t cap)
{
	enum tern_status st;
	struct tern_tfevents *w = tern_calloc(1, sizeof *w);
	if (!w)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	char host[256] = "localhost", when[64], runs[4200];
	if (gethostname(host, sizeof host - 1) != 0 || !host[0])
		snprintf(host, sizeof host, "localhost");
	for (char *h = host; *h; h++) /* a file name: no separators */
		if (*h == '/')
			*h = '_';
	double now = wall_now();
	time_t t = (time_t)now;
	struct tm tm;
	localtime_r(&t, &tm);
	static const char mon[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					"Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	snprintf(when, sizeof when, "%s%02d_%02d-%02d-%02d", mon[tm.tm_mon % 12], tm.tm_mday, tm.tm_hour,
		 tm.tm_min, tm.tm_sec);
	snprintf(runs, sizeof runs, "%s/runs", dir);
	if ((st = mkdir1(runs)) != TERN_OK)
		goto fail;
	snprintf(runs, sizeof runs, "%s/runs/%s_%s", dir, when, host);
	if ((st = mkdir1(runs)) != TERN_OK)
		goto fail;
	snprintf(w->path, sizeof w->path, "%s/events.out.tfevents.%lld.%s.%ld.0", runs, (long long)t, host,
		 (long)getpid());
	if (!(w->f = fopen(w->path, "wb"))) {
		st = tern_fail(TERN_E_IO, "cannot write %s: %s", w->path, strerror(errno));
		goto fail;
	}
	uint8_t buf[64];
	size_t n = tern_tfevents_encode(buf, sizeof buf, now, 0, "brain.Event:2", NULL, 0);
	if ((st = write_record(w, buf, n)) != TERN_OK || (st = tern_tfevents_flush(w)) != TERN_OK)
		goto fail;
	if (path)
		snprintf(path, cap, "%s", w->path);
	*out = w;
	return TERN_OK;
fail:
	tern_tfevents_close(w);
	return st;
}

enum tern_status tern_tfevents_scalar(struct tern_tfevents *w, const char *tag, int64_t step, double value)
{
	uint8_t buf[512];
	size_t n = tern_tfevents_encode(buf, sizeof buf, wall_now(), step, NULL, tag, (float)value);
	if (!n)
		return tern_fail(TERN_E_INVALID, "tensorboard tag '%.64s' is too long", tag);
	return write_record(w, buf, n);
}

enum tern_status tern_tfevents_flush(struct tern_tfevents *w)
{
	if (fflush(w->f) != 0)
		return tern_fail(TERN_E_IO, "cannot write %s: %s", w->path, strerror(errno));
	return TERN_OK;
}

void tern_tfevents_close(struct tern_tfevents *w)
{
	if (!w)
		return;
	if (w->f)
		fclose(w->f);
	free(w);
}
