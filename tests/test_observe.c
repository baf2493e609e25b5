/* Seeing training (issue 10): the CRC-32C against its published vectors, TensorBoard event files
 * read back record by record (framing, both CRCs, the Event protobuf fields), the max_time step
 * estimate without the warm-up step, and the on-disk Vulkan pipeline cache (file round trip,
 * foreign and corrupt files ignored; on a Vulkan device: saved at exit, loaded by the next
 * backend, a corrupt or foreign one ignored). */
#define _POSIX_C_SOURCE 200809L
#include "backend/backend.h"
#include "backend/vulkan/vk_pcache.h"
#include "core/crc32c.h"
#include "train/observe.h"
#include "train/tfevents.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;

static void check(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	printf("%s  ", ok ? "ok  " : "FAIL");
	vprintf(fmt, ap);
	printf("\n");
	va_end(ap);
	if (ok)
		passed++;
	else
		failed++;
}

static void test_crc(void)
{
	uint8_t z[32], ff[32], inc[32];
	for (int i = 0; i < 32; i++)
		z[i] = 0, ff[i] = 0xff, inc[i] = (uint8_t)i;
	check(tern_crc32c(0, "123456789", 9) == 0xE3069283u, "crc32c(\"123456789\") = e3069283");
	check(tern_crc32c(0, z, 32) == 0x8A9136AAu, "crc32c(32 zero bytes) = 8a9136aa (RFC 3720)");
	check(tern_crc32c(0, ff, 32) == 0x62A8AB43u, "crc32c(32 0xff bytes) = 62a8ab43 (RFC 3720)");
	check(tern_crc32c(0, inc, 32) == 0x46DD794Eu, "crc32c(0..31) = 46dd794e (RFC 3720)");
	check(tern_crc32c(tern_crc32c(0, "1234", 4), "56789", 5) == 0xE3069283u, "crc32c continues");
	check(tern_crc32c_mask(0) == 0xa282ead8u, "masked crc of 0 = a282ead8 (TFRecord's delta)");
}

/* ---- a protobuf reader for the checks (independent of the writer) ---- */

static bool varint(const uint8_t **p, const uint8_t *e, uint64_t *v)
{
	*v = 0;
	for (int s = 0; *p < e && s < 64; s += 7) {
		uint8_t b = *(*p)++;
		*v |= (uint64_t)(b & 0x7f) << s;
		if (!(b & 0x80))
			return true;
	}
	return false;
}

struct ev {
	double wall;
	int64_t step;
	char version[32], tag[64];
	float value;
	bool has_value;
};

static bool parse_value(const uint8_t *p, const uint8_t *e, struct ev *ev)
{
	while (p < e) {
		uint64_t k, n;
		if (!varint(&p, e, &k))
			return false;
		if (k == (1 << 3 | 2)) {
			if (!varint(&p, e, &n) || n >= sizeof ev->tag || n > (uint64_t)(e - p))
				return false;
			memcpy(ev->tag, p, n), ev->tag[n] = 0, p += n;
		} else if (k == (2 << 3 | 5) && e - p >= 4) {
			memcpy(&ev->value, p, 4), p += 4, ev->has_value = true;
		} else
			return false;
	}
	return true;
}

static bool parse_event(const uint8_t *p, const uint8_t *e, struct ev *ev)
{
	memset(ev, 0, sizeof *ev);
	while (p < e) {
		uint64_t k, n;
		if (!varint(&p, e, &k))
			return false;
		if (k == (1 << 3 | 1) && e - p >= 8) {
			memcpy(&ev->wall, p, 8), p += 8;
		} else if (k == (2 << 3 | 0)) {
			if (!varint(&p, e, &n))
				return false;
			ev->step = (int64_t)n;
		} else if (k == (3 << 3 | 2)) {
			if (!varint(&p, e, &n) || n >= sizeof ev->version || n > (uint64_t)(e - p))
				return false;
			memcpy(ev->version, p, n), ev->version[n] = 0, p += n;
		} else if (k == (5 << 3 | 2)) { /* Summary { Value value = 1 } */
			if (!varint(&p, e, &n) || n > (uint64_t)(e - p))
				return false;
			const uint8_t *se = p + n;
			uint64_t vk, vn;
			if (!varint(&p, se, &vk) || vk != (1 << 3 | 2) || !varint(&p, se, &vn) ||
			    vn != (uint64_t)(se - p) || !parse_value(p, se, ev))
				return false;
			p = se;
		} else
			return false;
	}
	return true;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Reads every record of path: framing and both masked CRCs checked; events parsed. */
static int read_events(const char *path, struct ev *evs, int max, bool *frames_ok)
{
	FILE *f = fopen(path, "rb");
	int n = 0;
	*frames_ok = f != NULL;
	if (!f)
		return 0;
	uint8_t h[12], data[1024], t[4];
	while (fread(h, 1, 12, f) == 12) {
		uint64_t len = 0;
		for (int i = 0; i < 8; i++)
			len |= (uint64_t)h[i] << (8 * i);
		if (le32(h + 8) != tern_crc32c_mask(tern_crc32c(0, h, 8)) || len > sizeof data ||
		    fread(data, 1, len, f) != len || fread(t, 1, 4, f) != 4 ||
		    le32(t) != tern_crc32c_mask(tern_crc32c(0, data, len)) || n >= max ||
		    !parse_event(data, data + len, &evs[n])) {
			*frames_ok = false;
			break;
		}
		n++;
	}
	if (!feof(f) && *frames_ok && fgetc(f) != EOF)
		*frames_ok = false;
	fclose(f);
	return n;
}

static void test_tfevents(const char *tmp)
{
	/* the encoder's bytes for one scalar, by hand: Event{wall_time 1.5, step 3, summary{value{tag
	 * "a", simple_value 2.0}}} */
	uint8_t b[64];
	size_t n = tern_tfevents_encode(b, sizeof b, 1.5, 3, NULL, "a", 2.0f);
	static const uint8_t want[] = {0x09, 0,    0,    0,    0,    0,   0,    0xf8, 0x3f, 0x10, 0x03, 0x2a,
				       0x0a, 0x0a, 0x08, 0x0a, 0x01, 'a', 0x15, 0,    0,    0,    0x40};
	check(n == sizeof want && !memcmp(b, want, n),
	      "scalar event bytes match the protobuf encoding by hand");
	check(tern_tfevents_encode(b, 8, 1.5, 3, NULL, "a", 2.0f) == 0, "encode reports a short buffer");

	struct tern_tfevents *w = NULL;
	char path[4400];
	enum tern_status st = tern_tfevents_open(tmp, &w, path, sizeof path);
	check(st == TERN_OK, "tfevents_open: %s", st ? tern_error() : path);
	if (st)
		return;
	struct tern_step_log l = {7, 0.25, 1.875, 3e-4, 0.5, 123.0, 3u << 20, 5u << 20};
	st = tern_tb_step(w, &l);
	if (!st)
		st = tern_tb_eval(w, 7, 2.125);
	tern_tfevents_close(w);
	check(st == TERN_OK, "scalars written");

	/* runs/<Mon>DD_HH-MM-SS_<host>/events.out.tfevents.<time>.<host>.<pid>.0 */
	char host[256] = "";
	gethostname(host, sizeof host - 1);
	const char *r = strstr(path, "/runs/");
	const char *d = r ? r + 6 : "";
	bool name_ok = r && strlen(d) > 16 && d[0] >= 'A' && d[0] <= 'Z' && d[3] >= '0' && d[3] <= '9' &&
		       d[5] == '_' && d[8] == '-' && d[11] == '-' && d[14] == '_' &&
		       !strncmp(d + 15, host, strlen(host)) && strstr(path, "/events.out.tfevents.") != NULL;
	char tail[64];
	snprintf(tail, sizeof tail, ".%ld.0", (long)getpid());
	name_ok = name_ok && strlen(path) > strlen(tail) && !strcmp(path + strlen(path) - strlen(tail), tail);
	check(name_ok, "event file path as transformers names it: %s", path);

	struct ev ev[16];
	bool frames;
	int ne = read_events(path, ev, 16, &frames);
	check(frames && ne == 9, "9 records read back, lengths and both masked CRCs right (%d)", ne);
	if (ne != 9)
		return;
	check(!strcmp(ev[0].version, "brain.Event:2") && ev[0].wall > 1.6e9 && !ev[0].has_value,
	      "first event: file_version brain.Event:2 with a wall time");
	static const char *tags[] = {"train/loss",
				     "train/learning_rate",
				     "train/grad_norm",
				     "train/epoch",
				     "train/tokens_per_second",
				     "train/peak_device_memory_mib",
				     "train/peak_host_memory_mib",
				     "eval/loss"};
	const float vals[] = {1.875f, 3e-4f, 0.5f, 0.25f, 123.0f, 3.0f, 5.0f, 2.125f};
	bool all = true;
	for (int i = 0; i < 8; i++) {
		const struct ev *e = &ev[i + 1];
		bool ok = !strcmp(e->tag, tags[i]) && e->has_value && e->value == vals[i] && e->step == 7 &&
			  e->wall >= ev[0].wall;
		if (!ok)
			printf("      event %d: tag %s step %lld value %g\n", i + 1, e->tag,
			       (long long)e->step, (double)e->value);
		all &= ok;
	}
	check(all, "scalar events: tags, step 7 and values as written");
}

static void test_clock(void)
{
	/* a cold start: the first step takes 50 s (shader compilation), the next ones 3 s */
	struct tern_step_clock c = {.skip = 1};
	double steps[] = {50, 3, 3, 3};
	tern_step_clock_add(&c, steps[0]);
	check(tern_step_clock_per_step(&c, 3) == 0, "no estimate from the warm-up step alone");
	for (int i = 1; i < 4; i++)
		tern_step_clock_add(&c, steps[i]);
	double per = tern_step_clock_per_step(&c, 3);
	check(per == 3.0 && c.warmup_s == 50.0, "per-step estimate 3 s leaves out the 50 s warm-up (%g)",
	      per);
	/* max_time 4m, 59 s spent (warm-up included) after 4 steps: 4 + floor(181 / 3) = 64 steps;
	 * the old estimate (59 s / 4 steps) planned 4 + 12 = 16 */
	int64_t fit = tern_time_fit(240, 59, 4, per);
	check(fit == 64, "max_time 240 s: %lld steps fit (want 64)", (long long)fit);
	check(tern_time_fit(240, 250, 4, per) == 4, "over the budget: no more steps");
	check(tern_time_fit(240, 10, 4, 0) == 4, "no estimate: no more steps");
}

static bool write_file(const char *path, const void *d, size_t n)
{
	FILE *f = fopen(path, "wb");
	bool ok = f && fwrite(d, 1, n, f) == n;
	if (f)
		ok = fclose(f) == 0 && ok;
	return ok;
}

static size_t read_file(const char *path, uint8_t *d, size_t cap)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return 0;
	size_t n = fread(d, 1, cap, f);
	fclose(f);
	return n;
}

static void test_pcache_file(const char *tmp)
{
	struct tern_vk_pcache_id a = {
		0x10de, 0x2330, 0x12345678, {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}};
	struct tern_vk_pcache_id b = a;
	b.driver++;
	uint8_t data[100];
	memset(data, 0x5a, sizeof data);
	/* Vulkan's header: size 32, version 1, vendor, device, uuid */
	uint32_t vh[4] = {32, 1, a.vendor, a.device};
	memcpy(data, vh, 16);
	memcpy(data + 16, a.uuid, 16);
	char path[4200], p2[4300];
	snprintf(path, sizeof path, "%s/cache/sub/pc.bin", tmp);
	enum tern_status st = tern_vk_pcache_write(path, &a, data, sizeof data);
	check(st == TERN_OK, "pipeline cache written (directories created): %s", st ? tern_error() : path);
	void *got = NULL;
	size_t n = 0;
	st = tern_vk_pcache_read(path, &a, &got, &n);
	check(st == TERN_OK && n == sizeof data && !memcmp(got, data, n),
	      "round trip: the driver's bytes back");
	free(got);
	snprintf(p2, sizeof p2, "%s.tmp.%ld", path, (long)getpid());
	check(access(p2, F_OK) != 0, "no temporary file left");
	st = tern_vk_pcache_read(path, &b, &got, &n);
	check(st == TERN_E_FORMAT && !got && strstr(tern_error(), "not this one"),
	      "another driver version: ignored (%s)", tern_error());
	uint8_t raw[256];
	size_t rn = read_file(path, raw, sizeof raw);
	raw[rn - 1] ^= 1;
	write_file(path, raw, rn);
	st = tern_vk_pcache_read(path, &a, &got, &n);
	check(st == TERN_E_FORMAT && !got && strstr(tern_error(), "checksum"), "a flipped bit: ignored (%s)",
	      tern_error());
	write_file(path, raw, rn - 10);
	st = tern_vk_pcache_read(path, &a, &got, &n);
	check(st == TERN_E_FORMAT && !got, "a truncated file: ignored (%s)", tern_error());
	write_file(path, "garbage", 7);
	st = tern_vk_pcache_read(path, &a, &got, &n);
	check(st == TERN_E_FORMAT && !got, "not a cache file: ignored (%s)", tern_error());
	data[8] ^= 1; /* the driver's own header names another vendor */
	tern_vk_pcache_write(path, &a, data, sizeof data);
	st = tern_vk_pcache_read(path, &a, &got, &n);
	check(st == TERN_E_FORMAT && !got, "a foreign VkPipelineCache header inside: ignored (%s)",
	      tern_error());
	snprintf(p2, sizeof p2, "%s/missing.bin", tmp);
	check(tern_vk_pcache_read(p2, &a, &got, &n) == TERN_E_IO, "a missing file: TERN_E_IO");

	setenv("TERN_PIPELINE_CACHE", "off", 1);
	check(!tern_vk_pcache_path(&a, p2, sizeof p2), "TERN_PIPELINE_CACHE=off: no cache");
	setenv("TERN_PIPELINE_CACHE", "/x/y.bin", 1);
	check(tern_vk_pcache_path(&a, p2, sizeof p2) && !strcmp(p2, "/x/y.bin"), "TERN_PIPELINE_CACHE=PATH");
	unsetenv("TERN_PIPELINE_CACHE");
	setenv("XDG_CACHE_HOME", "/xdg", 1);
	check(tern_vk_pcache_path(&a, p2, sizeof p2) &&
		      !strcmp(p2,
			      "/xdg/tern/pipelines-10de-2330-12345678-0102030405060708090a0b0c0d0e0f10.bin"),
	      "XDG_CACHE_HOME: named per device and driver (%s)", p2);
	unsetenv("XDG_CACHE_HOME");
}

/* One backend's life: scale a buffer (creating a pipeline), free (saving the cache). */
static enum tern_status one_life(bool *loaded)
{
	struct tern_backend *be = NULL;
	enum tern_status st = tern_backend_create("vulkan", 0, &be);
	if (st)
		return st;
	*loaded = be->pipeline_cache_loaded;
	struct tern_buffer *buf = NULL;
	float x[64], y[64];
	for (int i = 0; i < 64; i++)
		x[i] = (float)i;
	struct tern_view v = {0};
	if (!(st = be->vt->buffer_alloc(be, sizeof x, &buf))) {
		v = (struct tern_view){buf, 0, sizeof x};
		if (!(st = be->vt->upload(be, v, x)) && !(st = tern_scale(be, v, 64, 2.0f)))
			st = be->vt->download(be, y, v);
		if (!st && y[5] != 10.0f)
			st = tern_fail(TERN_E_INVALID, "scale gave %g", (double)y[5]);
		be->vt->buffer_free(be, buf);
	}
	tern_backend_free(be);
	return st;
}

static void test_pcache_vulkan(const char *tmp)
{
	char path[4200];
	snprintf(path, sizeof path, "%s/vk/pipelines.bin", tmp);
	setenv("TERN_PIPELINE_CACHE", path, 1);
	bool loaded = true;
	enum tern_status st = one_life(&loaded);
	if (st == TERN_E_UNAVAILABLE) {
		const char *req = getenv("TERN_REQUIRE_VULKAN");
		if (req && !strcmp(req, "1"))
			check(false, "vulkan: backend unavailable: %s", tern_error());
		else
			printf("not run  vulkan pipeline cache: no Vulkan device\n");
		unsetenv("TERN_PIPELINE_CACHE");
		return;
	}
	check(st == TERN_OK && !loaded && access(path, F_OK) == 0,
	      "vulkan: a first run starts cold and saves its pipeline cache (%s)", st ? tern_error() : path);
	struct stat s1, s2;
	bool st1 = stat(path, &s1) == 0;
	st = one_life(&loaded);
	check(st == TERN_OK && loaded, "vulkan: the next backend loads it");
	check(st1 && stat(path, &s2) == 0 && s1.st_ino == s2.st_ino,
	      "vulkan: an unchanged cache is not written again (same inode)");
	uint8_t raw[1 << 16];
	size_t rn = read_file(path, raw, sizeof raw);
	if (rn > 56) {
		raw[rn - 1] ^= 0x40;
		write_file(path, raw, rn);
		st = one_life(&loaded);
		check(st == TERN_OK && !loaded, "vulkan: a corrupt cache file is ignored, the run goes on");
		rn = read_file(path, raw, sizeof raw);
		raw[20] ^= 1; /* driverVersion of tern's header */
		write_file(path, raw, rn);
		st = one_life(&loaded);
		check(st == TERN_OK && !loaded, "vulkan: a cache of another driver version is ignored");
		st = one_life(&loaded);
		check(st == TERN_OK && loaded, "vulkan: ... and replaced by a valid one");
	} else {
		check(false, "vulkan: cache file of %zu bytes", rn);
	}
	unsetenv("TERN_PIPELINE_CACHE");
}

int main(void)
{
	char tmp[] = "/tmp/tern_test_observe_XXXXXX";
	if (!mkdtemp(tmp)) {
		printf("FAIL  mkdtemp\n");
		return 1;
	}
	test_crc();
	test_tfevents(tmp);
	test_clock();
	test_pcache_file(tmp);
	test_pcache_vulkan(tmp);
	char cmd[256];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
	if (system(cmd) != 0)
		printf("note: could not remove %s\n", tmp);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
