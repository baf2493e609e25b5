/* test_safetensors: src/formats/safetensors — write/read round trips (every dtype, 0-d and empty
 * tensors), the streaming writer, atomic-write failures, sharded model directories, the file
 * written by the official library (tests/data/st_official.safetensors, from
 * tools/make_safetensors_fixture.py), and one crafted bad file per validation rule, each of which
 * must fail with the right status and a message naming the file and the offending tensor or key.
 *
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed at the end.
 * Prints one line per check and a final "N passed, M failed"; exits 0 only if nothing failed. */
#define _POSIX_C_SOURCE 200809L
#include "formats/safetensors.h"

#include "core/core.h"
#include "quant/quant.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int n_pass, n_fail;
static char tmpdir[512];

static void check(bool ok, const char *fmt, ...)
{
	va_list ap;
	printf("%s ", ok ? "PASS" : "FAIL");
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	printf("\n");
	if (ok)
		n_pass++;
	else
		n_fail++;
}

static char *path_in(const char *name)
{
	static char buf[8][1024];
	static int k;
	char *p = buf[k++ % 8];
	snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
	return p;
}

/* The writer's temporary of name: "<name>.tmp.<pid>". */
static char *tmp_in(const char *name)
{
	static char buf[4][1100];
	static int k;
	char *p = buf[k++ % 4];
	snprintf(p, sizeof buf[0], "%s.tmp.%ld", path_in(name), (long)getpid());
	return p;
}

static bool exists(const char *path)
{
	struct stat sb;
	return !stat(path, &sb);
}

static void write_bytes(const char *path, const void *data, size_t n)
{
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(data, 1, n, fp) != n) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	fclose(fp);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	*n = (size_t)ftell(fp);
	fseek(fp, 0, SEEK_SET);
	uint8_t *p = malloc(*n ? *n : 1);
	if (fread(p, 1, *n, fp) != *n) {
		free(p);
		p = NULL;
	}
	fclose(fp);
	return p;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint8_t rng_byte(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (uint8_t)((rng_state * 0x2545f4914f6cdd1dull) >> 56);
}

static bool has(const char *msg, const char *s) { return !s || strstr(msg, s) != NULL; }

/* ---- round trip ----------------------------------------------------------------------- */

#define N_RT (TERN_ST_DTYPE_COUNT + 3)

static void test_round_trip(void)
{
	struct tern_st_desc d[N_RT];
	char names[N_RT][32];
	void *bufs[N_RT];
	size_t sizes[N_RT];
	memset(d, 0, sizeof d);
	for (int i = 0; i < N_RT; i++) {
		d[i].name = names[i];
		if (i < TERN_ST_DTYPE_COUNT) {
			/* one tensor per dtype, odd shapes so the offsets are not all 8-aligned */
			snprintf(names[i], sizeof names[i], "model.layers.%d.%s", i,
				 tern_st_dtype_name((enum tern_st_dtype)i));
			d[i].dtype = (enum tern_st_dtype)i;
			d[i].ndim = 2 + i % 3;
			for (int k = 0; k < d[i].ndim; k++)
				d[i].shape[k] = 1 + (i + k) % 5;
		} else if (i == TERN_ST_DTYPE_COUNT) {
			snprintf(names[i], sizeof names[i], "scalar");
			d[i].dtype = TERN_ST_F32;
			d[i].ndim = 0;
		} else if (i == TERN_ST_DTYPE_COUNT + 1) {
			snprintf(names[i], sizeof names[i], "empty");
			d[i].dtype = TERN_ST_F16;
			d[i].ndim = 2;
			d[i].shape[0] = 0;
			d[i].shape[1] = 7;
		} else {
			snprintf(names[i], sizeof names[i], "zero.middle \"quoted\" é");
			d[i].dtype = TERN_ST_BF16;
			d[i].ndim = 3;
			d[i].shape[0] = 2;
			d[i].shape[1] = 0;
			d[i].shape[2] = 3;
		}
		size_t n = tern_st_dtype_size(d[i].dtype);
		for (int k = 0; k < d[i].ndim; k++)
			n *= (size_t)d[i].shape[k];
		sizes[i] = n;
		bufs[i] = malloc(n ? n : 1);
		for (size_t k = 0; k < n; k++)
			((uint8_t *)bufs[i])[k] = rng_byte();
		d[i].data = n ? bufs[i] : NULL;
	}
	struct tern_st_kv meta[] = {{"producer", "test_safetensors"}, {"note", "ünïcode ✓"}};
	const char *path = path_in("rt.safetensors");
	enum tern_status st = tern_st_write(path, d, N_RT, meta, 2);
	check(st == TERN_OK, "write %d tensors (every dtype, 0-d, empty) %s", N_RT, st ? tern_error() : "");
	check(!exists(tmp_in("rt.safetensors")), "write leaves no .tmp behind");

	struct tern_st_file *f = NULL;
	st = tern_st_open(path, &f);
	check(st == TERN_OK, "read back %s", st ? tern_error() : "");
	if (!f)
		goto out;
	check(tern_st_file_header_len(f) % 8 == 0, "header length %llu %% 8 == 0",
	      (unsigned long long)tern_st_file_header_len(f));
	check(tern_st_file_count(f) == N_RT, "tensor count %zu", tern_st_file_count(f));
	const char *fmt = tern_st_file_metadata(f, "format");
	check(fmt && !strcmp(fmt, "pt"), "__metadata__ format = pt");
	check(tern_st_file_metadata(f, "note") && !strcmp(tern_st_file_metadata(f, "note"), "ünïcode ✓") &&
		      tern_st_file_metadata_count(f) == 3,
	      "extra metadata kept (3 entries, UTF-8 value)");
	const char *k0, *v0;
	tern_st_file_metadata_at(f, 0, &k0, &v0);
	check(k0 && !strcmp(k0, "format"), "\"format\" is the first metadata key");
	bool all = true, order = true, aligned = true;
	for (int i = 0; i < N_RT; i++) {
		const struct tern_st_tensor *t = tern_st_file_find(f, names[i]);
		bool ok = t && t->dtype == d[i].dtype && t->ndim == d[i].ndim && t->nbytes == sizes[i] &&
			  t->file == f && (!sizes[i] || !memcmp(t->data, bufs[i], sizes[i]));
		for (int k = 0; ok && k < d[i].ndim; k++)
			ok = t->shape[k] == d[i].shape[k];
		if (ok && i == TERN_ST_DTYPE_COUNT)
			ok = t->numel == 1 && t->nbytes == 4;
		if (ok && i > TERN_ST_DTYPE_COUNT)
			ok = t->numel == 0;
		if (!ok)
			printf("  mismatch: %s\n", names[i]);
		all = all && ok;
		/* data in the order given */
		const struct tern_st_tensor *ti = tern_st_file_tensor(f, (size_t)i);
		if (sizes[i] && (!ti || strcmp(ti->name, names[i])))
			order = false;
		if (t && i == 0)
			aligned = t->offset % 8 == 0 && (uintptr_t)t->data % 8 == 0;
	}
	check(all, "every tensor: dtype, shape, numel, bytes equal");
	check(order, "data section in the order given");
	check(aligned, "data section starts 8-aligned (in the file and in memory)");
	check(tern_st_file_find(f, "nope") == NULL, "find of an absent name gives NULL");
	check(tern_st_file_size(f) == 8 + tern_st_file_header_len(f) +
					      (uint64_t)(tern_st_file_tensor(f, N_RT - 1)->offset - 8 -
							 tern_st_file_header_len(f) +
							 tern_st_file_tensor(f, N_RT - 1)->nbytes),
	      "file size == 8 + N + last end");

	/* the same bytes through the in-memory entry point */
	size_t len;
	uint8_t *img = read_bytes(path, &len);
	struct tern_st_file *g = NULL;
	st = tern_st_parse(img, len, "image", &g);
	check(st == TERN_OK && g && tern_st_file_count(g) == N_RT &&
		      !memcmp(tern_st_file_find(g, names[3])->data, bufs[3], sizes[3]),
	      "tern_st_parse of the same bytes");
	tern_st_close(g);

	/* streaming writer, odd chunks: byte-identical file */
	struct tern_st_writer *w;
	const char *p2 = path_in("rt_stream.safetensors");
	st = tern_st_writer_begin(p2, d, N_RT, meta, 2, &w);
	for (int i = 0; !st && i < N_RT; i++)
		for (size_t o = 0; !st && o < sizes[i]; o += 7)
			st = tern_st_writer_append(w, (uint8_t *)bufs[i] + o,
						   sizes[i] - o < 7 ? sizes[i] - o : 7);
	if (!st)
		st = tern_st_writer_finish(w);
	size_t len2;
	uint8_t *img2 = read_bytes(p2, &len2);
	check(st == TERN_OK && img2 && len2 == len && !memcmp(img, img2, len),
	      "streaming writer gives the identical file");
	free(img2);

	/* streaming writer that stops short: finish fails, nothing at the path */
	const char *p3 = path_in("short.safetensors");
	st = tern_st_writer_begin(p3, d, N_RT, NULL, 0, &w);
	if (!st)
		st = tern_st_writer_append(w, bufs[0], sizes[0]);
	if (!st)
		st = tern_st_writer_finish(w);
	check(st == TERN_E_INVALID && has(tern_error(), "short.safetensors") && !exists(p3) &&
		      !exists(tmp_in("short.safetensors")),
	      "short streaming write fails, leaves nothing (%s)", tern_error());
	st = tern_st_writer_begin(p3, d, N_RT, NULL, 0, &w);
	if (!st)
		st = tern_st_writer_append(w, img, sizes[0] + sizes[1] + 100000);
	check(st == TERN_E_INVALID, "append past the declared size fails (%s)", tern_error());
	if (w)
		tern_st_writer_abort(w);
	check(!exists(tmp_in("short.safetensors")), "abort removes the .tmp");

	/* failed writes leave an existing file untouched */
	struct tern_st_desc dup[2] = {d[0], d[1]};
	dup[1].name = dup[0].name;
	st = tern_st_write(path, dup, 2, NULL, 0);
	size_t len3;
	uint8_t *img3 = read_bytes(path, &len3);
	check(st == TERN_E_INVALID && has(tern_error(), names[0]) && img3 && len3 == len &&
		      !memcmp(img, img3, len),
	      "duplicate names refused, existing file untouched (%s)", tern_error());
	free(img3);
	struct tern_st_kv fm = {"format", "np"};
	st = tern_st_write(path_in("x.safetensors"), d, 1, &fm, 1);
	check(st == TERN_E_INVALID && has(tern_error(), "format"), "metadata key \"format\" refused (%s)",
	      tern_error());
	struct tern_st_desc neg = d[0];
	neg.shape[0] = -1;
	st = tern_st_write(path_in("x.safetensors"), &neg, 1, NULL, 0);
	check(st == TERN_E_INVALID && has(tern_error(), names[0]), "negative dimension refused (%s)",
	      tern_error());
	struct tern_st_desc nm = d[0];
	nm.name = "__metadata__";
	st = tern_st_write(path_in("x.safetensors"), &nm, 1, NULL, 0);
	check(st == TERN_E_INVALID, "tensor named __metadata__ refused (%s)", tern_error());
	struct tern_st_desc badu = d[0];
	badu.name = "bad\xff";
	st = tern_st_write(path_in("x.safetensors"), &badu, 1, NULL, 0);
	check(st == TERN_E_INVALID && has(tern_error(), "UTF-8"), "invalid UTF-8 name refused (%s)",
	      tern_error());
	check(!exists(path_in("x.safetensors")) && !exists(tmp_in("x.safetensors")),
	      "refused writes leave no file");
	st = tern_st_write(path_in("no/such/dir/y.safetensors"), d, 1, NULL, 0);
	check(st == TERN_E_IO && has(tern_error(), "no/such/dir/y.safetensors.tmp") &&
		      has(tern_error(), "No such file"),
	      "write into a missing directory: %s", tern_error());
	if (exists("/dev/full")) {
		/* <path>.tmp -> /dev/full: every write fails with ENOSPC */
		const char *p4 = path_in("full.safetensors");
		if (symlink("/dev/full", tmp_in("full.safetensors")) == 0) {
			st = tern_st_write(p4, d, N_RT, NULL, 0);
			check(st == TERN_E_IO && has(tern_error(), "full.safetensors") &&
				      has(tern_error(), "No space left on device") && !exists(p4),
			      "ENOSPC: %s", tern_error());
		}
	}
	/* empty file: only metadata */
	st = tern_st_write(path_in("none.safetensors"), NULL, 0, NULL, 0);
	struct tern_st_file *e = NULL;
	if (!st)
		st = tern_st_open(path_in("none.safetensors"), &e);
	check(st == TERN_OK && e && tern_st_file_count(e) == 0 && tern_st_file_metadata(e, "format"),
	      "a file with no tensors round-trips");
	tern_st_close(e);
	free(img);
out:
	tern_st_close(f);
	for (int i = 0; i < N_RT; i++)
		free(bufs[i]);
}

/* ---- the official library's file ------------------------------------------------------ */

static void test_official(void)
{
	const char *dir = getenv("TERN_TEST_DATA");
	char path[1024];
	snprintf(path, sizeof path, "%s/st_official.safetensors", dir ? dir : "tests/data");
	struct tern_st_file *f = NULL;
	enum tern_status st = tern_st_open(path, &f);
	check(st == TERN_OK, "open the official library's file %s", st ? tern_error() : "");
	if (!f)
		return;
	check(tern_st_file_count(f) == 10, "official: 10 tensors");
	const char *prod = tern_st_file_metadata(f, "producer");
	check(prod && !strcmp(prod, "tools/make_safetensors_fixture.py") &&
		      tern_st_file_metadata(f, "format"),
	      "official: metadata");
	const struct tern_st_tensor *t;
	bool ok = (t = tern_st_file_find(f, "f32")) && t->dtype == TERN_ST_F32 && t->ndim == 2 &&
		  t->shape[0] == 2 && t->shape[1] == 3;
	for (int i = 0; ok && i < 6; i++) {
		float v;
		memcpy(&v, (const uint8_t *)t->data + 4 * i, 4);
		ok = v == i * 0.5f - 1;
	}
	check(ok, "official: f32 [2, 3] values");
	ok = (t = tern_st_file_find(f, "f16")) && t->dtype == TERN_ST_F16 && t->ndim == 1 && t->shape[0] == 4;
	for (int i = 0; ok && i < 4; i++) {
		uint16_t h;
		memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
		ok = tern_f16_to_f32(h) == i * 0.25f - 0.5f;
	}
	check(ok, "official: f16 values");
	ok = (t = tern_st_file_find(f, "bf16")) && t->dtype == TERN_ST_BF16 && t->ndim == 2;
	for (int i = 0; ok && i < 4; i++) {
		uint16_t h;
		memcpy(&h, (const uint8_t *)t->data + 2 * i, 2);
		ok = tern_bf16_to_f32(h) == i * 2.0f - 3;
	}
	check(ok, "official: bf16 values");
	ok = (t = tern_st_file_find(f, "u8")) && t->dtype == TERN_ST_U8 && t->numel == 5;
	for (int i = 0; ok && i < 5; i++)
		ok = ((const uint8_t *)t->data)[i] == i * 50;
	check(ok, "official: u8 values");
	ok = (t = tern_st_file_find(f, "i8")) && t->dtype == TERN_ST_I8 &&
	     ((const int8_t *)t->data)[0] == -128 && ((const int8_t *)t->data)[1] == 0 &&
	     ((const int8_t *)t->data)[2] == 127;
	check(ok, "official: i8 values");
	int32_t i32[2] = {0};
	ok = (t = tern_st_file_find(f, "i32")) && t->dtype == TERN_ST_I32 && t->ndim == 2 && t->shape[1] == 1;
	if (ok)
		memcpy(i32, t->data, 8);
	check(ok && i32[0] == -70000 && i32[1] == 70000, "official: i32 values");
	int64_t i64[2] = {0};
	ok = (t = tern_st_file_find(f, "i64")) && t->dtype == TERN_ST_I64;
	if (ok)
		memcpy(i64, t->data, 16);
	check(ok && i64[0] == -(1ll << 40) && i64[1] == (1ll << 40) + 1, "official: i64 values");
	ok = (t = tern_st_file_find(f, "bool")) && t->dtype == TERN_ST_BOOL &&
	     ((const uint8_t *)t->data)[0] == 1 && ((const uint8_t *)t->data)[1] == 0 &&
	     ((const uint8_t *)t->data)[2] == 1;
	check(ok, "official: bool values");
	float sc = 0;
	ok = (t = tern_st_file_find(f, "scalar")) && t->ndim == 0 && t->numel == 1;
	if (ok)
		memcpy(&sc, t->data, 4);
	check(ok && sc == 3.25f, "official: 0-d scalar 3.25");
	ok = (t = tern_st_file_find(f, "empty")) && t->ndim == 2 && t->shape[0] == 0 && t->shape[1] == 4 &&
	     t->nbytes == 0;
	check(ok, "official: empty [0, 4]");
	tern_st_close(f);
}

/* ---- malformed files ------------------------------------------------------------------ */

static int n_bad;

/* A file with header text hdr (N = its length unless n_override) and data_len data bytes. */
static uint8_t *craft(const char *hdr, size_t data_len, uint64_t n_override, size_t *len)
{
	size_t hl = strlen(hdr);
	uint64_t n = n_override ? n_override : hl;
	*len = 8 + hl + data_len;
	uint8_t *p = calloc(1, *len);
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(n >> (8 * i));
	memcpy(p + 8, hdr, hl);
	for (size_t i = 0; i < data_len; i++)
		p[8 + hl + i] = (uint8_t)i;
	return p;
}

/* Writes bytes to a file, opens it (and parses the same bytes in memory); both must fail with
 * status want and a message naming the file and containing must1 and must2. */
static void expect_bad_bytes(const char *what, const uint8_t *img, size_t len, enum tern_status want,
			     const char *must1, const char *must2)
{
	char name[64];
	snprintf(name, sizeof name, "bad%02d.safetensors", n_bad++);
	const char *path = path_in(name);
	write_bytes(path, img, len);
	struct tern_st_file *f = NULL;
	enum tern_status st = tern_st_open(path, &f);
	char msg[1024];
	snprintf(msg, sizeof msg, "%s", tern_error());
	struct tern_st_file *g = NULL;
	enum tern_status st2 = tern_st_parse(img, len, name, &g);
	check(st == want && st2 == want && !f && !g && has(msg, path) && has(msg, must1) && has(msg, must2) &&
		      !strchr(msg, '\n'),
	      "%s -> [%s] %s", what, tern_status_str(st), msg);
	tern_st_close(f);
	tern_st_close(g);
}

static void expect_bad(const char *what, const char *hdr, size_t data_len, enum tern_status want,
		       const char *must1, const char *must2)
{
	size_t len;
	uint8_t *img = craft(hdr, data_len, 0, &len);
	expect_bad_bytes(what, img, len, want, must1, must2);
	free(img);
}

static void expect_good(const char *what, const char *hdr, size_t data_len, size_t n_tensors)
{
	size_t len;
	uint8_t *img = craft(hdr, data_len, 0, &len);
	struct tern_st_file *f = NULL;
	enum tern_status st = tern_st_parse(img, len, "good", &f);
	check(st == TERN_OK && f && tern_st_file_count(f) == n_tensors, "%s is accepted %s", what,
	      st ? tern_error() : "");
	tern_st_close(f);
	free(img);
}

#define T1(NAME, DT, SHAPE, B, E) \
	"\"" NAME "\":{\"dtype\":\"" DT "\",\"shape\":" SHAPE ",\"data_offsets\":[" B "," E "]}"

static void test_malformed(void)
{
	const enum tern_status F = TERN_E_FORMAT, U = TERN_E_UNSUPPORTED;
	size_t len;
	uint8_t *img;

	/* accepted edge cases first */
	expect_good("0-d and empty tensors",
		    "{" T1("s", "F32", "[]", "0", "4") "," T1("e", "F16", "[0,3]", "4", "4") "}", 4, 2);
	expect_good("empty tensor at offset 0 beside another",
		    "{" T1("e", "F16", "[0]", "0", "0") "," T1("a", "U8", "[2]", "0", "2") "}", 2, 2);
	expect_good("header padded with trailing spaces", "{" T1("a", "I8", "[3]", "0", "3") "}       ", 3,
		    1);
	expect_good("only __metadata__", "{\"__metadata__\":{\"format\":\"pt\"}}", 0, 0);
	expect_good("tensors listed out of offset order",
		    "{" T1("b", "U8", "[2]", "2", "4") "," T1("a", "U8", "[2]", "0", "2") "}", 4, 2);
	expect_good("unknown key inside a tensor entry (ignored, as the Rust reader does)",
		    "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 1, 1);
	expect_good("optional dtypes I16/U16/U32/U64/F64/BOOL",
		    "{" T1("a", "I16", "[1]", "0", "2") "," T1("b", "U16", "[1]", "2", "4") "," T1(
			    "c", "U32", "[1]", "4", "8") "," T1("d", "U64", "[1]", "8",
								"16") "," T1("e", "F64", "[1]", "16",
									     "24") "," T1("f", "BOOL", "[1]",
											  "24", "25") "}",
		    25, 6);

	/* the length prefix and the header's frame */
	for (size_t cut = 0; cut < 8; cut += 3) {
		uint8_t z[8] = {0};
		char what[64];
		snprintf(what, sizeof what, "%zu-byte file", cut);
		expect_bad_bytes(what, z, cut, F, "truncated", NULL);
	}
	img = craft("{}", 0, 100000001, &len);
	expect_bad_bytes("N = 100,000,001 (over the limit)", img, len, F, "100000001", "limit");
	free(img);
	img = craft("{}", 0, 0xffffffffffffffffull, &len);
	expect_bad_bytes("N = 2^64-1", img, len, F, "18446744073709551615", NULL);
	free(img);
	img = craft("{}", 0, 1000, &len);
	expect_bad_bytes("N past the end of the file", img, len, F, "truncated", "1000");
	free(img);
	img = craft("", 0, 0, &len);
	expect_bad_bytes("N = 0", img, len, F, "'{'", NULL);
	free(img);
	expect_bad("header starting with a space", " {}", 0, F, "'{'", NULL);
	expect_bad("header that is an array", "[1, 2]", 0, F, "'{'", NULL);
	expect_bad("non-JSON header", "{this is not json}", 0, F, "not valid UTF-8 JSON", NULL);
	expect_bad("JSON followed by garbage", "{}  x", 0, F, "not valid", NULL);
	img = craft("{}  ", 0, 0, &len);
	img[10] = 0; /* "{}\0 " */
	expect_bad_bytes("header padded with a NUL byte", img, len, F, "not valid", NULL);
	free(img);
	expect_bad("invalid UTF-8 in a name", "{\"a\xff\":{}}", 0, F, "not valid UTF-8", NULL);
	expect_bad("overlong UTF-8 in a name", "{\"a\xc0\xaf\":{}}", 0, F, "not valid UTF-8", NULL);
	expect_bad("\\u0000 in a name", "{\"a\\u0000b\":{}}", 0, F, "not valid", NULL);
	expect_bad("integer too large for JSON", "{" T1("a", "U8", "[1]", "0", "99999999999999999999") "}", 1,
		   F, "not valid", NULL);

	/* tensor entries */
	expect_bad("duplicate tensor names",
		   "{" T1("dup", "U8", "[1]", "0", "1") "," T1("dup", "U8", "[1]", "1", "2") "}", 2, F,
		   "duplicate", "dup");
	expect_bad("duplicate key inside an entry",
		   "{\"w\":{\"dtype\":\"U8\",\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, F,
		   "duplicate", "dtype");
	expect_bad("entry that is not an object", "{\"w\":5}", 0, F, "\"w\"", "must be an object");
	expect_bad("missing dtype", "{\"w\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1, F, "\"w\"",
		   "missing key \"dtype\"");
	expect_bad("missing shape", "{\"w\":{\"dtype\":\"U8\",\"data_offsets\":[0,1]}}", 1, F, "\"w\"",
		   "missing key \"shape\"");
	expect_bad("missing data_offsets", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1, F, "\"w\"",
		   "missing key \"data_offsets\"");
	expect_bad("dtype that is a number", "{\"w\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
		   F, "\"w\"", "dtype must be a string");
	expect_bad("unsupported dtype F8_E4M3", "{" T1("w8", "F8_E4M3", "[1]", "0", "1") "}", 1, U, "w8",
		   "unsupported dtype F8_E4M3");
	expect_bad("unsupported dtype F8_E5M2", "{" T1("w8", "F8_E5M2", "[1]", "0", "1") "}", 1, U, "w8",
		   "unsupported dtype F8_E5M2");
	expect_bad("unsupported dtype C64", "{" T1("c", "C64", "[1]", "0", "8") "}", 8, U, "\"c\"",
		   "unsupported dtype C64");
	expect_bad("unsupported dtype F4", "{" T1("c", "F4", "[2]", "0", "1") "}", 1, U, "\"c\"",
		   "unsupported dtype F4");
	expect_bad("unknown dtype", "{" T1("w", "F17", "[1]", "0", "2") "}", 2, F, "\"w\"",
		   "unknown dtype \"F17\"");
	expect_bad("lower-case dtype", "{" T1("w", "f32", "[1]", "0", "4") "}", 4, F, "\"w\"",
		   "unknown dtype \"f32\"");
	expect_bad("shape that is not an array", "{" T1("w", "U8", "3", "0", "3") "}", 3, F, "\"w\"",
		   "shape must be an array");
	expect_bad("negative dimension", "{" T1("w", "U8", "[2,-1]", "0", "0") "}", 0, F, "shape[1]",
		   "negative");
	expect_bad("fractional dimension", "{" T1("w", "U8", "[2.0]", "0", "2") "}", 2, F, "shape[0]",
		   "real number");
	expect_bad("string dimension", "{" T1("w", "U8", "[\"2\"]", "0", "2") "}", 2, F, "shape[0]",
		   "a string");
	expect_bad("9 dimensions", "{" T1("w", "U8", "[1,1,1,1,1,1,1,1,1]", "0", "1") "}", 1, U, "\"w\"",
		   "9 dimensions");
	expect_bad("element count overflowing 64 bits",
		   "{" T1("w", "U8", "[4294967296,4294967296]", "0", "1") "}", 1, F, "\"w\"", "overflow");
	expect_bad("byte count overflowing 64 bits",
		   "{" T1("w", "F64", "[4611686018427387904]", "0", "8") "}", 8, F, "\"w\"", "overflow");
	expect_bad("huge dims beside a zero dim: an empty tensor",
		   "{" T1("w", "U8", "[0,4294967296,4294967296]", "0", "1") "}", 1, F, "\"w\"", "needs 0");
	expect_bad("data_offsets not an array", "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":1}}",
		   1, F, "\"w\"", "[begin, end]");
	expect_bad("data_offsets with 3 entries",
		   "{\"w\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 1, F, "\"w\"",
		   "[begin, end]");
	expect_bad("negative data_offsets", "{" T1("w", "U8", "[1]", "-1", "0") "}", 1, F, "\"w\"",
		   "non-negative");
	expect_bad("begin > end", "{" T1("w", "U8", "[0]", "4", "2") "}", 4, F, "\"w\"",
		   "begin is greater than end");
	expect_bad("span != numel x size", "{" T1("w", "F32", "[2,3]", "0", "20") "}", 20, F, "\"w\"",
		   "needs 24");
	expect_bad("end past the data section", "{" T1("w", "F32", "[4]", "0", "16") "}", 10, F, "\"w\"",
		   "truncated");
	expect_bad("overlapping tensors",
		   "{" T1("a", "U8", "[4]", "0", "4") "," T1("b", "U8", "[4]", "2", "6") "}", 6, F, "\"b\"",
		   "overlap tensor \"a\"");
	expect_bad("empty tensor inside another",
		   "{" T1("a", "U8", "[4]", "0", "4") "," T1("e", "U8", "[0]", "2", "2") "}", 4, F, "\"e\"",
		   "overlap");
	expect_bad("two tensors at the same offset",
		   "{" T1("a", "U8", "[4]", "0", "4") "," T1("b", "U8", "[4]", "0", "4") "}", 4, F, "overlap",
		   NULL);
	expect_bad("hole between tensors",
		   "{" T1("a", "U8", "[2]", "0", "2") "," T1("b", "U8", "[2]", "4", "6") "}", 6, F, "hole",
		   "\"b\"");
	expect_bad("hole at the start", "{" T1("a", "U8", "[2]", "3", "5") "}", 5, F, "hole", "[0, 3)");
	expect_bad("trailing bytes after the last tensor", "{" T1("a", "U8", "[2]", "0", "2") "}", 5, F,
		   "3 unclaimed", NULL);
	expect_bad("data but no tensors", "{}", 1, F, "unclaimed", NULL);

	/* __metadata__ */
	expect_bad("metadata with an integer value", "{\"__metadata__\":{\"format\":\"pt\",\"step\":5}}", 0,
		   F, "\"step\"", "strings");
	expect_bad("metadata with a nested object", "{\"__metadata__\":{\"cfg\":{}}}", 0, F, "\"cfg\"",
		   "an object");
	expect_bad("metadata with a null value", "{\"__metadata__\":{\"k\":null}}", 0, F, "\"k\"", "null");
	expect_bad("metadata that is an array", "{\"__metadata__\":[\"format\",\"pt\"]}", 0, F,
		   "__metadata__", "an array");
	expect_bad("metadata that is a string", "{\"__metadata__\":\"pt\"}", 0, F, "__metadata__", NULL);

	/* a name with a newline stays one line in the message */
	expect_bad("name with a control character", "{" T1("a\\nb", "U8", "[1]", "0", "2") "}", 2, F, "a?b",
		   NULL);

	/* a real file cut at several points */
	const char *rt = path_in("rt.safetensors");
	uint8_t *full = read_bytes(rt, &len);
	if (full) {
		uint64_t hl = 0;
		for (int i = 7; i >= 0; i--)
			hl = hl << 8 | full[i];
		size_t cuts[] = {1,
				 7,
				 8,
				 9,
				 8 + (size_t)hl / 2,
				 8 + (size_t)hl - 1,
				 8 + (size_t)hl,
				 8 + (size_t)hl + 1,
				 len / 2 + 3,
				 len - 1};
		for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
			char what[64];
			snprintf(what, sizeof what, "round-trip file cut to %zu of %zu bytes", cuts[i], len);
			expect_bad_bytes(what, full, cuts[i], F, NULL, NULL);
		}
		/* and a byte appended */
		uint8_t *more = malloc(len + 1);
		memcpy(more, full, len);
		more[len] = 0;
		expect_bad_bytes("round-trip file with a byte appended", more, len + 1, F, "1 unclaimed",
				 NULL);
		free(more);
		free(full);
	}

	struct tern_st_file *f = NULL;
	enum tern_status st = tern_st_open(path_in("does-not-exist.safetensors"), &f);
	check(st == TERN_E_IO && has(tern_error(), "does-not-exist.safetensors") &&
		      has(tern_error(), "No such file"),
	      "missing file -> %s", tern_error());
	st = tern_st_open(tmpdir, &f);
	check(st == TERN_E_IO, "a directory is not a file -> %s", tern_error());
}

/* ---- model directories ---------------------------------------------------------------- */

static void mkdir_in(const char *name) { mkdir(path_in(name), 0755); }

static void write_text(const char *path, const char *text) { write_bytes(path, text, strlen(text)); }

/* Writes one shard with tensors named in names (U8 [k+1] each, value = first letter). */
static void write_shard(const char *path, const char *const *names, int n)
{
	struct tern_st_desc d[8];
	uint8_t buf[8][8];
	memset(d, 0, sizeof d);
	for (int i = 0; i < n; i++) {
		d[i].name = names[i];
		d[i].dtype = TERN_ST_U8;
		d[i].ndim = 1;
		d[i].shape[0] = i + 1;
		memset(buf[i], names[i][0], sizeof buf[i]);
		d[i].data = buf[i];
	}
	if (tern_st_write(path, d, (size_t)n, NULL, 0)) {
		fprintf(stderr, "write_shard: %s\n", tern_error());
		exit(1);
	}
}

static void expect_model_bad(const char *what, const char *dir, enum tern_status want, const char *must1,
			     const char *must2)
{
	struct tern_st_model *m = NULL;
	enum tern_status st = tern_st_model_open(path_in(dir), &m);
	check(st == want && !m && has(tern_error(), must1) && has(tern_error(), must2), "%s -> [%s] %s", what,
	      tern_status_str(st), tern_error());
	tern_st_model_close(m);
}

static void test_model(void)
{
	/* a sharded directory with index.json */
	mkdir_in("sharded");
	const char *s1[] = {"model.embed_tokens.weight", "model.layers.0.mlp.up_proj.weight"};
	const char *s2[] = {"lm_head.weight", "model.norm.weight", "model.layers.1.mlp.up_proj.weight"};
	write_shard(path_in("sharded/model-00001-of-00002.safetensors"), s1, 2);
	write_shard(path_in("sharded/model-00002-of-00002.safetensors"), s2, 3);
	const char *index = "{\"metadata\": {\"total_size\": 9}, \"weight_map\": {"
			    "\"lm_head.weight\": \"model-00002-of-00002.safetensors\","
			    "\"model.embed_tokens.weight\": \"model-00001-of-00002.safetensors\","
			    "\"model.layers.0.mlp.up_proj.weight\": \"model-00001-of-00002.safetensors\","
			    "\"model.layers.1.mlp.up_proj.weight\": \"model-00002-of-00002.safetensors\","
			    "\"model.norm.weight\": \"model-00002-of-00002.safetensors\"}}";
	write_text(path_in("sharded/model.safetensors.index.json"), index);
	struct tern_st_model *m = NULL;
	enum tern_status st = tern_st_model_open(path_in("sharded/"), &m);
	check(st == TERN_OK, "open a sharded directory with index.json %s", st ? tern_error() : "");
	if (m) {
		check(tern_st_model_count(m) == 5 && tern_st_model_file_count(m) == 2,
		      "5 tensors in 2 files");
		bool sorted = true;
		for (size_t i = 1; i < tern_st_model_count(m); i++)
			sorted = sorted && strcmp(tern_st_model_tensor(m, i - 1)->name,
						  tern_st_model_tensor(m, i)->name) < 0;
		check(sorted, "iteration is sorted by name");
		const struct tern_st_tensor *t = tern_st_model_find(m, "model.norm.weight");
		check(t && t->nbytes == 2 && ((const uint8_t *)t->data)[1] == 'm' &&
			      strstr(tern_st_file_path(t->file), "sharded/model-00002-of-00002.safetensors"),
		      "find: bytes and source file (%s)", t ? tern_st_file_path(t->file) : "-");
		t = tern_st_model_find(m, "model.embed_tokens.weight");
		check(t && !strcmp(tern_st_file_path(t->file),
				   path_in("sharded/model-00001-of-00002.safetensors")),
		      "shard path is dir/name");
		check(tern_st_model_data_bytes(m) == 9, "data bytes 9");
		const struct tern_st_tensor *g = NULL;
		st = tern_st_model_get(m, "model.layers.7.mlp.up_proj.weight", &g);
		check(st == TERN_E_FORMAT && !g && has(tern_error(), "model.layers.7.mlp.up_proj.weight") &&
			      has(tern_error(), "sharded"),
		      "get of a missing tensor: %s", tern_error());
		tern_st_model_close(m);
	}
	/* a single file path works too */
	st = tern_st_model_open(path_in("sharded/model-00002-of-00002.safetensors"), &m);
	check(st == TERN_OK && m && tern_st_model_count(m) == 3, "open a single file as a model");
	tern_st_model_close(m);

	/* index problems */
	mkdir_in("missing_shard");
	write_shard(path_in("missing_shard/model-00001-of-00002.safetensors"), s1, 2);
	write_text(path_in("missing_shard/model.safetensors.index.json"), index);
	expect_model_bad("index names a missing shard", "missing_shard", TERN_E_IO,
			 "model-00002-of-00002.safetensors", "missing");

	mkdir_in("absent");
	write_shard(path_in("absent/model-00001-of-00002.safetensors"), s1, 2);
	write_shard(path_in("absent/model-00002-of-00002.safetensors"), s2, 2); /* no layers.1 */
	write_text(path_in("absent/model.safetensors.index.json"), index);
	expect_model_bad("index lists a tensor its shard lacks", "absent", TERN_E_FORMAT,
			 "model.layers.1.mlp.up_proj.weight", "model-00002-of-00002.safetensors");

	mkdir_in("unlisted");
	const char *s2x[] = {"lm_head.weight", "model.norm.weight", "model.layers.1.mlp.up_proj.weight",
			     "extra.bias"};
	write_shard(path_in("unlisted/model-00001-of-00002.safetensors"), s1, 2);
	write_shard(path_in("unlisted/model-00002-of-00002.safetensors"), s2x, 4);
	write_text(path_in("unlisted/model.safetensors.index.json"), index);
	expect_model_bad("a shard holds a tensor the index does not list", "unlisted", TERN_E_FORMAT,
			 "extra.bias", "not listed");

	mkdir_in("dup");
	const char *s2d[] = {"lm_head.weight", "model.norm.weight", "model.layers.1.mlp.up_proj.weight",
			     "model.embed_tokens.weight"};
	write_shard(path_in("dup/model-00001-of-00002.safetensors"), s1, 2);
	write_shard(path_in("dup/model-00002-of-00002.safetensors"), s2d, 4);
	write_text(path_in("dup/model.safetensors.index.json"), index);
	expect_model_bad("a tensor in two shards", "dup", TERN_E_FORMAT, "model.embed_tokens.weight", "both");

	mkdir_in("badjson");
	write_text(path_in("badjson/model.safetensors.index.json"), "{\"weight_map\": {");
	expect_model_bad("index.json that is not JSON", "badjson", TERN_E_FORMAT,
			 "model.safetensors.index.json", "not valid JSON");
	mkdir_in("nomap");
	write_text(path_in("nomap/model.safetensors.index.json"), "{\"metadata\": {}}");
	expect_model_bad("index.json without weight_map", "nomap", TERN_E_FORMAT, "weight_map", NULL);
	mkdir_in("escape");
	write_text(path_in("escape/model.safetensors.index.json"),
		   "{\"weight_map\": {\"a\": \"../rt.safetensors\"}}");
	expect_model_bad("weight_map pointing outside the directory", "escape", TERN_E_FORMAT,
			 "../rt.safetensors", "plain file name");
	mkdir_in("nonstr");
	write_text(path_in("nonstr/model.safetensors.index.json"), "{\"weight_map\": {\"a\": 3}}");
	expect_model_bad("weight_map value that is not a string", "nonstr", TERN_E_FORMAT, "\"a\"",
			 "an integer");
	mkdir_in("dupkey");
	write_text(path_in("dupkey/model.safetensors.index.json"),
		   "{\"weight_map\": {\"a\": \"x.safetensors\", \"a\": \"y.safetensors\"}}");
	expect_model_bad("weight_map with a duplicate name", "dupkey", TERN_E_FORMAT, "duplicate", NULL);
	mkdir_in("badshard");
	write_text(path_in("badshard/model.safetensors.index.json"),
		   "{\"weight_map\": {\"a\": \"model-00001-of-00001.safetensors\"}}");
	write_text(path_in("badshard/model-00001-of-00001.safetensors"), "short");
	expect_model_bad("a malformed shard", "badshard", TERN_E_FORMAT,
			 "badshard/model-00001-of-00001.safetensors", "truncated");

	/* no index: model.safetensors, else every *.safetensors */
	mkdir_in("single");
	write_shard(path_in("single/model.safetensors"), s2, 3);
	write_shard(path_in("single/other.safetensors"), s1, 2); /* ignored: model.safetensors wins */
	st = tern_st_model_open(path_in("single"), &m);
	check(st == TERN_OK && m && tern_st_model_count(m) == 3 && tern_st_model_file_count(m) == 1,
	      "directory with model.safetensors %s", st ? tern_error() : "");
	tern_st_model_close(m);
	mkdir_in("glob");
	write_shard(path_in("glob/b.safetensors"), s2, 3);
	write_shard(path_in("glob/a.safetensors"), s1, 2);
	write_text(path_in("glob/README.md"), "not a tensor file");
	st = tern_st_model_open(path_in("glob"), &m);
	check(st == TERN_OK && m && tern_st_model_count(m) == 5 && tern_st_model_file_count(m) == 2 &&
		      strstr(tern_st_file_path(tern_st_model_file(m, 0)), "glob/a.safetensors"),
	      "directory with *.safetensors, files in name order %s", st ? tern_error() : "");
	tern_st_model_close(m);
	mkdir_in("globdup");
	write_shard(path_in("globdup/b.safetensors"), s2d, 4);
	write_shard(path_in("globdup/a.safetensors"), s1, 2);
	expect_model_bad("*.safetensors files sharing a tensor", "globdup", TERN_E_FORMAT,
			 "model.embed_tokens.weight", "a.safetensors and b.safetensors");
	mkdir_in("empty");
	expect_model_bad("directory without safetensors files", "empty", TERN_E_IO,
			 "no model.safetensors.index.json", NULL);
	expect_model_bad("missing directory", "nowhere", TERN_E_IO, "nowhere", "No such file");
}

static void remove_tree(const char *path)
{
	DIR *d = opendir(path);
	if (d) {
		struct dirent *de;
		while ((de = readdir(d)))
			if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) {
				char p[1024];
				snprintf(p, sizeof p, "%s/%s", path, de->d_name);
				remove_tree(p);
			}
		closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

int main(void)
{
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof tmpdir, "%s/tern_st_XXXXXX", t && *t ? t : "/tmp");
	if (!mkdtemp(tmpdir)) {
		fprintf(stderr, "mkdtemp %s failed\n", tmpdir);
		return 1;
	}
	test_round_trip();
	test_official();
	test_malformed();
	test_model();
	remove_tree(tmpdir);
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
