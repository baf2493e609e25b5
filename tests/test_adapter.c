/* test_adapter: src/train/adapter.c — PEFT adapter directories and training checkpoints.
 *
 * - write -> read round trips, bit-exact (adapter; checkpoint with moments and trainer state);
 * - adapter_config.json as PEFT writes it: compared line by line with the file real PEFT wrote
 *   (tests/data/adapter/peft_llama, from tools/make_adapter_fixture.py), Python's number and
 *   string spelling, the same key set;
 * - the PEFT-written adapter read and compared with the values PEFT held in memory
 *   (peft_llama.bin); tern's adapter_model.safetensors compared byte for byte with PEFT's;
 * - every read error, each with its message;
 * - atomic directory writes: replacement, and a failure injected at every file-system step
 *   leaves neither a final nor a temporary directory (and an old directory intact);
 * - checkpoint rotation (save_total_limit) and tern_checkpoint_latest with stray directories;
 * - modules trained in full (modules_to_save): PEFT's names and config key, round trips with their
 *   moments, an adapter listing only some of them, and the refusals.
 * With TERN_ADAPTER_KEEP=DIR it also writes an adapter for the fixture's tiny model to DIR, for
 * `tools/make_adapter_fixture.py --check DIR` (PEFT loads it; docs/FORMATS.md has the result).
 *
 * Files go to a fresh directory under $TMPDIR (or /tmp), removed at the end. Prints one line per
 * check and a final "N passed, M failed"; exits 0 only if nothing failed. */
#define _POSIX_C_SOURCE 200809L
#include "train/adapter.h"
#include "train/manifest.h"

#include "core/core.h"
#include "formats/safetensors.h"
#include "quant/quant.h"

#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern int tern_adapter_fault_at; /* adapter.c: fail the n-th file-system step (tests only) */

static int n_pass, n_fail;
static char tmpdir[512];

static void check(bool ok, const char *fmt, ...) TERN_PRINTF(2, 3);
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

static char *path_in(const char *fmt, ...) TERN_PRINTF(1, 2);
static char *path_in(const char *fmt, ...)
{
	static char buf[16][1024];
	static int k;
	char *p = buf[k++ % 16], name[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(name, sizeof name, fmt, ap);
	va_end(ap);
	snprintf(p, sizeof buf[0], "%s/%s", tmpdir, name);
	return p;
}

static bool exists(const char *path)
{
	struct stat sb;
	return !lstat(path, &sb);
}

static bool has(const char *msg, const char *s) { return strstr(msg, s) != NULL; }

static char *read_text(const char *path)
{
	FILE *fp = fopen(path, "rb");
	if (!fp)
		return NULL;
	fseek(fp, 0, SEEK_END);
	long n = ftell(fp);
	fseek(fp, 0, SEEK_SET);
	char *p = malloc((size_t)n + 1);
	if (p && fread(p, 1, (size_t)n, fp) != (size_t)n) {
		free(p);
		p = NULL;
	}
	if (p)
		p[n] = 0;
	fclose(fp);
	return p;
}

static void write_text(const char *path, const char *text)
{
	FILE *fp = fopen(path, "wb");
	if (!fp || fwrite(text, 1, strlen(text), fp) != strlen(text)) {
		fprintf(stderr, "cannot write %s\n", path);
		exit(1);
	}
	fclose(fp);
}

/* Replaces the first occurrence of `from` in the file; false when absent. */
static bool edit_file(const char *path, const char *from, const char *to)
{
	char *t = read_text(path);
	char *at = t ? strstr(t, from) : NULL;
	if (!at) {
		free(t);
		return false;
	}
	size_t n = strlen(t) - strlen(from) + strlen(to) + 1;
	char *u = malloc(n);
	snprintf(u, n, "%.*s%s%s", (int)(at - t), t, to, at + strlen(from));
	write_text(path, u);
	free(t);
	free(u);
	return true;
}

static void remove_tree(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb))
		return;
	if (S_ISDIR(sb.st_mode)) {
		chmod(path, 0755);
		DIR *d = opendir(path);
		struct dirent *e;
		while (d && (e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char p[2048];
			snprintf(p, sizeof p, "%s/%s", path, e->d_name);
			remove_tree(p);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

/* Entries of dir containing ".tmp" or ".old." (leftovers of an interrupted write). */
static int leftovers(const char *dir)
{
	DIR *d = opendir(dir);
	int n = 0;
	struct dirent *e;
	while (d && (e = readdir(d)))
		n += strstr(e->d_name, ".tmp") || strstr(e->d_name, ".old.");
	if (d)
		closedir(d);
	return n;
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static float rng_float(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return (float)((int64_t)((rng_state * 0x2545f4914f6cdd1dull) >> 40) - (1 << 23)) / (float)(1 << 23);
}

/* ---- sets ------------------------------------------------------------------------------- */

#define ALL_MODULES ((1u << TERN_MOD_COUNT) - 1)
#define QVOD ((1u << TERN_MOD_Q) | (1u << TERN_MOD_V) | (1u << TERN_MOD_O) | (1u << TERN_MOD_DOWN))

/* A small model's shapes: D = 48, Hkv*Dh = 16, F = 80. */
static const int64_t io_small[TERN_MOD_COUNT][2] = {{48, 48}, {48, 16}, {48, 16}, {48, 48},
						    {48, 80}, {48, 80}, {80, 48}};

static struct tern_lora_set *new_set(int L, int64_t R, unsigned modules, const int64_t io[TERN_MOD_COUNT][2],
				     bool moments)
{
	struct tern_lora_set *s = NULL;
	if (tern_lora_set_alloc(&s, L, R, modules, io, moments)) {
		fprintf(stderr, "tern_lora_set_alloc: %s\n", tern_error());
		exit(1);
	}
	return s;
}

/* Random values, with a few that a lossy path would change: -0, a subnormal, 1e30. */
static void fill_values(struct tern_lora_set *s, bool specials)
{
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_MOD_COUNT; m++) {
			struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			if (!t->A)
				continue;
			float *p[6] = {t->A, t->B, t->mA, t->vA, t->mB, t->vB};
			int64_t n[6] = {s->R * t->I, t->O * s->R, s->R * t->I,
					s->R * t->I, t->O * s->R, t->O * s->R};
			for (int k = 0; k < 6; k++) {
				for (int64_t i = 0; p[k] && i < n[k]; i++)
					p[k][i] = rng_float() * (k >= 3 || k == 2 ? 1e-3f : 1.0f);
			}
			if (specials) {
				t->A[0] = -0.0f;
				t->B[1] = 1e-40f;
				t->A[2] = 1e30f;
			}
		}
	}
}

static void fill(struct tern_lora_set *s) { fill_values(s, true); }

/* Bitwise equality of every targeted tensor (and moments when both have them). */
static bool same(const struct tern_lora_set *a, const struct tern_lora_set *b)
{
	if (a->L != b->L || a->R != b->R || a->modules != b->modules)
		return false;
	for (int l = 0; l < a->L; l++) {
		for (int m = 0; m < TERN_LORA_SLOTS; m++) { /* expert slots: r = E·R */
			const struct tern_lora_tensor *x = tern_lora_at(a, l, (enum tern_module)m);
			const struct tern_lora_tensor *y = tern_lora_at(b, l, (enum tern_module)m);
			if (!x->A)
				continue;
			if (!y->A || x->r != y->r || x->I != y->I || x->O != y->O)
				return false;
			size_t na = (size_t)(x->r * x->I) * 4, nb = (size_t)(x->O * x->r) * 4;
			if (memcmp(x->A, y->A, na) || memcmp(x->B, y->B, nb))
				return false;
			if (x->mA && y->mA &&
			    (memcmp(x->mA, y->mA, na) || memcmp(x->vA, y->vA, na) ||
			     memcmp(x->mB, y->mB, nb) || memcmp(x->vB, y->vB, nb)))
				return false;
		}
	}
	return true;
}

static const struct tern_adapter_meta meta_default = {"/models/Llama-3.2-1B", 16.0, 0.05, false, false, NULL};

/* ---- adapter round trip and adapter_config.json ---------------------------------------- */

static void test_modules(void)
{
	enum tern_module m;
	bool ok = true;
	for (int i = 0; i < TERN_MOD_COUNT; i++)
		ok = ok && tern_module_parse(tern_module_name((enum tern_module)i), &m) &&
		     m == (enum tern_module)i &&
		     strstr(tern_module_path((enum tern_module)i), tern_module_name((enum tern_module)i));
	check(ok && !tern_module_parse("lm_head", &m) &&
		      !strcmp(tern_module_path(TERN_MOD_GATE), "mlp.gate_proj"),
	      "module names, paths and parsing");
	struct tern_lora_set *s = NULL;
	enum tern_status st = tern_lora_set_alloc(&s, 2, 0, QVOD, io_small, false);
	check(st == TERN_E_INVALID && !s && has(tern_error(), "rank 0"), "rank 0 refused: %s", tern_error());
}

static void test_round_trip(void)
{
	struct tern_lora_set *a = new_set(3, 4, QVOD, io_small, false),
			     *b = new_set(3, 4, QVOD, io_small, false);
	fill(a);
	const char *dir = path_in("rt/adapter/"); /* a trailing slash is fine */
	mkdir(path_in("rt"), 0755);
	enum tern_status st = tern_adapter_write(dir, a, &meta_default);
	check(st == TERN_OK, "adapter written: %s", st ? tern_error() : "ok");
	struct tern_adapter_meta got = {0};
	st = tern_adapter_read(path_in("rt/adapter"), b, &got);
	check(st == TERN_OK && same(a, b), "adapter round trip bit-exact (-0, subnormal, 1e30 included): %s",
	      st ? tern_error() : "ok");
	check(got.alpha == 16.0 && got.dropout == 0.05 && !got.rslora && !got.base_model,
	      "meta read back: alpha %g dropout %g rslora %d", got.alpha, got.dropout, got.rslora);
	check(leftovers(path_in("rt")) == 0 && exists(path_in("rt/adapter/adapter_config.json")) &&
		      exists(path_in("rt/adapter/adapter_model.safetensors")),
	      "only adapter/ in the parent, with its two files");

	struct tern_st_file *f = NULL;
	st = tern_st_open(path_in("rt/adapter/adapter_model.safetensors"), &f);
	bool ok = !st && tern_st_file_count(f) == 3 * 4 * 2 && tern_st_file_metadata(f, "format") &&
		  !strcmp(tern_st_file_metadata(f, "format"), "pt");
	const struct tern_st_tensor *t =
		ok ? tern_st_file_find(f, "base_model.model.model.layers.2.mlp.down_proj.lora_A.weight")
		   : NULL;
	const struct tern_st_tensor *u =
		ok ? tern_st_file_find(f, "base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight")
		   : NULL;
	check(t && u && t->dtype == TERN_ST_F32 && t->ndim == 2 && t->shape[0] == 4 && t->shape[1] == 80 &&
		      u->shape[0] == 16 && u->shape[1] == 4,
	      "24 F32 tensors, format pt, A [r, in] = [4, 80] for down_proj, B [out, r] = [16, 4] for v_proj");
	ok = true;
	for (size_t i = 1; f && i < tern_st_file_count(f); i++)
		ok = ok && strcmp(tern_st_file_tensor(f, i - 1)->name, tern_st_file_tensor(f, i)->name) < 0;
	check(ok, "tensors stored in name order");
	tern_st_close(f);

	/* replacing: a second write with other values and meta */
	fill(a);
	struct tern_adapter_meta m2 = {"base", 6.5, 0.0, true, false, NULL};
	st = tern_adapter_write(path_in("rt/adapter"), a, &m2);
	if (!st)
		st = tern_adapter_read(path_in("rt/adapter"), b, &got);
	check(st == TERN_OK && same(a, b) && got.alpha == 6.5 && got.dropout == 0 && got.rslora &&
		      leftovers(path_in("rt")) == 0,
	      "an existing adapter directory is replaced (new values, alpha 6.5, rslora) and nothing is left "
	      "behind: %s",
	      st ? tern_error() : "ok");
	char *cfg = read_text(path_in("rt/adapter/adapter_config.json"));
	check(cfg && has(cfg, "\n  \"lora_alpha\": 6.5,\n") && has(cfg, "\n  \"lora_dropout\": 0.0,\n") &&
		      has(cfg, "\n  \"use_rslora\": true,\n"),
	      "non-integral alpha written as 6.5, dropout 0 as 0.0, use_rslora true");
	free(cfg);

	/* Python's float and string spelling */
	static const struct {
		double v;
		const char *s;
	} fl[] = {{1e-05, "1e-05"},
		  {0.1, "0.1"},
		  {0.0001, "0.0001"},
		  {0.3333333333333333, "0.3333333333333333"},
		  {2.5e-07, "2.5e-07"}};
	for (size_t i = 0; i < sizeof fl / sizeof fl[0]; i++) {
		struct tern_adapter_meta m3 = {"x", 16, fl[i].v, false, false, NULL};
		char want[64];
		snprintf(want, sizeof want, "\n  \"lora_dropout\": %s,\n", fl[i].s);
		st = tern_adapter_write(path_in("rt/fl"), a, &m3);
		cfg = st ? NULL : read_text(path_in("rt/fl/adapter_config.json"));
		check(cfg && has(cfg, want), "lora_dropout %.17g written as Python does: %s", fl[i].v,
		      fl[i].s);
		free(cfg);
	}
	struct tern_adapter_meta m4 = {
		"dir/\"q\"/caf\xc3\xa9/\xf0\x9f\x98\x80\t", 1e15, 0, false, false, NULL};
	st = tern_adapter_write(path_in("rt/fl"), a, &m4);
	cfg = st ? NULL : read_text(path_in("rt/fl/adapter_config.json"));
	check(cfg &&
		      has(cfg,
			  "\"base_model_name_or_path\": \"dir/\\\"q\\\"/caf\\u00e9/\\ud83d\\ude00\\t\",") &&
		      has(cfg, "\"lora_alpha\": 1000000000000000,"),
	      "base_model escaped as Python's ensure_ascii does; integral alpha 1e15 as an integer");
	free(cfg);
	struct tern_adapter_meta bad = {"x", NAN, 0, false, false, NULL};
	st = tern_adapter_write(path_in("rt/bad"), a, &bad);
	check(st == TERN_E_INVALID && has(tern_error(), "lora_alpha") && !exists(path_in("rt/bad")),
	      "NaN alpha refused: %s", tern_error());
	tern_lora_set_free(a);
	tern_lora_set_free(b);
}

/* ---- the adapter PEFT wrote ------------------------------------------------------------- */

static char data_dir[1024];

struct fixture {
	json_t *j;
	int L;
	int64_t R;
	int64_t io[TERN_MOD_COUNT][2];
	float *values;
	size_t n_values;
};

static bool load_fixture(struct fixture *fx)
{
	char p[1200];
	json_error_t err;
	snprintf(p, sizeof p, "%s/adapter/peft_llama.json", data_dir);
	fx->j = json_load_file(p, 0, &err);
	if (!fx->j) {
		check(false, "%s: %s", p, err.text);
		return false;
	}
	fx->L = (int)json_integer_value(json_object_get(fx->j, "layers"));
	fx->R = json_integer_value(json_object_get(fx->j, "r"));
	json_t *io = json_object_get(fx->j, "in_out");
	for (int m = 0; m < TERN_MOD_COUNT; m++) {
		json_t *x = json_object_get(io, tern_module_name((enum tern_module)m));
		fx->io[m][0] = json_integer_value(json_array_get(x, 0));
		fx->io[m][1] = json_integer_value(json_array_get(x, 1));
	}
	snprintf(p, sizeof p, "%s/adapter/peft_llama.bin", data_dir);
	FILE *fp = fopen(p, "rb");
	if (!fp) {
		check(false, "%s: cannot open", p);
		return false;
	}
	fseek(fp, 0, SEEK_END);
	fx->n_values = (size_t)ftell(fp) / 4;
	fseek(fp, 0, SEEK_SET);
	fx->values = malloc(fx->n_values * 4);
	bool ok = fread(fx->values, 4, fx->n_values, fp) == fx->n_values;
	fclose(fp);
	return ok && fx->L > 0 && fx->R > 0;
}

/* Lines of a JSON text without the "target_modules" list (PEFT writes a set: any order). */
static void strip_modules(char *t)
{
	char *a = strstr(t, "  \"target_modules\": [\n");
	char *b = a ? strstr(a, "\n  ],\n") : NULL;
	if (a && b)
		memmove(a, b + 6, strlen(b + 6) + 1);
}

static void test_peft_fixture(void)
{
	struct fixture fx = {0};
	if (!load_fixture(&fx))
		return;
	struct tern_lora_set *s = new_set(fx.L, fx.R, ALL_MODULES, (const int64_t(*)[2])fx.io, false);
	char dir[1200], p[1300];
	snprintf(dir, sizeof dir, "%s/adapter/peft_llama", data_dir);
	struct tern_adapter_meta meta = {0};
	enum tern_status st = tern_adapter_read(dir, s, &meta);
	check(st == TERN_OK && meta.alpha == 8 && meta.dropout == 0.05 && !meta.rslora,
	      "the adapter PEFT %s wrote reads (target_modules in PEFT's set order, README.md beside): %s",
	      json_string_value(json_object_get(fx.j, "peft_version")), st ? tern_error() : "ok");
	/* every tensor against PEFT's in-memory values, in the order the script dumped them */
	size_t off = 0, n_t = 0;
	bool ok = st == TERN_OK, names_ok = true;
	json_t *ts = json_object_get(fx.j, "tensors");
	for (int l = 0; ok && l < fx.L; l++) {
		for (int m = 0; ok && m < TERN_MOD_COUNT; m++) {
			const struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			for (int ab = 0; ab < 2 && ok; ab++, n_t++) {
				char name[160];
				snprintf(name, sizeof name,
					 "base_model.model.model.layers.%d.%s.lora_%c.weight", l,
					 tern_module_path((enum tern_module)m), "AB"[ab]);
				json_t *e = json_array_get(ts, n_t);
				names_ok = names_ok && e &&
					   !strcmp(json_string_value(json_object_get(e, "name")), name);
				size_t n = (size_t)(ab ? t->O * fx.R : fx.R * t->I);
				ok = off + n <= fx.n_values &&
				     !memcmp(ab ? t->B : t->A, fx.values + off, n * 4);
				off += n;
			}
		}
	}
	bool nonzero = false;
	for (size_t i = 0; i < fx.n_values; i++)
		nonzero = nonzero || fx.values[i] != 0;
	check(ok && names_ok && off == fx.n_values && n_t == json_array_size(ts) && nonzero,
	      "%zu tensors (%zu floats, A and B non-zero) equal PEFT's in-memory values, names as PEFT's",
	      n_t, off);

	/* tern writes the same adapter: the tensor file byte for byte, the config line for line */
	struct tern_adapter_meta same_meta = {"tern-tests/tiny-llama", 8, 0.05, false, false, NULL};
	st = tern_adapter_write(path_in("peft_same"), s, &same_meta);
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
	FILE *fa = fopen(p, "rb"), *fb = fopen(path_in("peft_same/adapter_model.safetensors"), "rb");
	bool eq = !st && fa && fb;
	while (eq) {
		int x = fgetc(fa), y = fgetc(fb);
		eq = x == y;
		if (x == EOF)
			break;
	}
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	check(eq,
	      "tern's adapter_model.safetensors is byte-identical to PEFT's (header, order, padding, data)");
	snprintf(p, sizeof p, "%s/adapter_config.json", dir);
	char *theirs = read_text(p), *ours = read_text(path_in("peft_same/adapter_config.json"));
	bool both = theirs && ours;
	check(both && has(ours,
			  "  \"target_modules\": [\n    \"q_proj\",\n    \"k_proj\",\n    \"v_proj\",\n    "
			  "\"o_proj\",\n    \"gate_proj\",\n    \"up_proj\",\n    \"down_proj\"\n  ],\n"),
	      "target_modules written as a list in tern's stable order (q k v o gate up down)");
	if (both) {
		strip_modules(theirs);
		strip_modules(ours);
	}
	check(both && !strcmp(theirs, ours),
	      "tern's adapter_config.json equals PEFT's byte for byte apart from target_modules' order "
	      "(same keys, sorted, 2-space indent, no final newline)");
	if (both && strcmp(theirs, ours))
		printf("--- PEFT\n%s\n--- tern\n%s\n", theirs, ours);
	free(theirs);
	free(ours);

	/* TERN_ADAPTER_KEEP: an adapter for tools/make_adapter_fixture.py --check */
	const char *keep = getenv("TERN_ADAPTER_KEEP");
	if (keep && *keep) {
		fill_values(s, false);
		struct tern_adapter_meta km = {"tern-tests/tiny-llama", 6.5, 0.1, true, false, NULL};
		st = tern_adapter_write(keep, s, &km);
		check(st == TERN_OK, "TERN_ADAPTER_KEEP: adapter for the tiny Llama written to %s (%s)", keep,
		      st ? tern_error() : "alpha 6.5, rslora, new values");
	}
	tern_lora_set_free(s);
	free(fx.values);
	json_decref(fx.j);
}

/* ---- read errors ------------------------------------------------------------------------ */

static void expect_fail(const char *dir, struct tern_lora_set *s, enum tern_status want, const char *what,
			const char *m1, const char *m2)
{
	enum tern_status st = tern_adapter_read(dir, s, NULL);
	const char *e = tern_error();
	check(st == want && has(e, m1) && has(e, m2), "%s: %s", what, st ? e : "read succeeded");
}

/* Rewrites dir/adapter_model.safetensors from s, dropping tensor `drop`, adding `add` and
 * storing everything as dtype dt. */
static void rewrite_tensors(const char *dir, const struct tern_lora_set *s, const char *drop, const char *add,
			    enum tern_st_dtype dt)
{
	struct tern_st_desc d[64];
	char names[64][160];
	uint16_t *half[64] = {0};
	size_t n = 0;
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_MOD_COUNT; m++) {
			const struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			for (int ab = 0; t->A && ab < 2; ab++) {
				snprintf(names[n], 160, "base_model.model.model.layers.%d.%s.lora_%c.weight",
					 l, tern_module_path((enum tern_module)m), "AB"[ab]);
				if (drop && !strcmp(drop, names[n]))
					continue;
				memset(&d[n], 0, sizeof d[n]);
				d[n].name = names[n];
				d[n].dtype = dt;
				d[n].ndim = 2;
				d[n].shape[0] = ab ? t->O : s->R;
				d[n].shape[1] = ab ? s->R : t->I;
				const float *src = ab ? t->B : t->A;
				d[n].data = src;
				if (dt != TERN_ST_F32) {
					size_t k = (size_t)(d[n].shape[0] * d[n].shape[1]);
					half[n] = malloc(k * 2);
					for (size_t i = 0; i < k; i++)
						half[n][i] = dt == TERN_ST_F16 ? tern_f32_to_f16(src[i])
									       : tern_f32_to_bf16(src[i]);
					d[n].data = half[n];
				}
				n++;
			}
		}
	}
	static const int32_t junk[8];
	if (add) {
		memset(&d[n], 0, sizeof d[n]);
		d[n].name = add;
		d[n].dtype = TERN_ST_I32;
		d[n].ndim = 2;
		d[n].shape[0] = 2;
		d[n].shape[1] = 4;
		d[n].data = junk;
		n++;
	}
	char p[1100];
	snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
	if (tern_st_write(p, d, n, NULL, 0)) {
		fprintf(stderr, "%s\n", tern_error());
		exit(1);
	}
	for (size_t i = 0; i < n; i++)
		free(half[i]);
}

static void test_read_errors(void)
{
	enum tern_status st;
	struct tern_lora_set *a = new_set(2, 4, QVOD, io_small, false),
			     *b = new_set(2, 4, QVOD, io_small, false);
	fill(a);
	char dir[1024];
	snprintf(dir, sizeof dir, "%s", path_in("err"));
	char cfg[1100];
	snprintf(cfg, sizeof cfg, "%s/adapter_config.json", dir);
	if (tern_adapter_write(dir, a, &meta_default) || tern_adapter_read(dir, b, NULL)) {
		check(false, "error fixture: %s", tern_error());
		return;
	}
	struct tern_lora_set *r8 = new_set(2, 8, QVOD, io_small, false);
	expect_fail(dir, r8, TERN_E_INVALID, "wrong r",
		    "err/adapter_config.json: r is 4 but the run uses rank 8", "lora_r: 4");
	tern_lora_set_free(r8);
	struct tern_lora_set *qv = new_set(2, 4, (1u << TERN_MOD_Q) | (1u << TERN_MOD_V), io_small, false);
	expect_fail(
		dir, qv, TERN_E_INVALID, "wrong target modules",
		"target_modules is [q_proj, v_proj, o_proj, down_proj] but the run targets [q_proj, v_proj]",
		"adapter_config.json");
	tern_lora_set_free(qv);
	int64_t io2[TERN_MOD_COUNT][2];
	memcpy(io2, io_small, sizeof io2);
	io2[TERN_MOD_DOWN][0] = 96;
	struct tern_lora_set *sh = new_set(2, 4, QVOD, (const int64_t(*)[2])io2, false);
	expect_fail(
		dir, sh, TERN_E_FORMAT, "wrong shape",
		"adapter_model.safetensors: tensor base_model.model.model.layers.0.mlp.down_proj.lora_A.weight "
		"has shape [4, 80]; expected [4, 96]",
		"down_proj");
	tern_lora_set_free(sh);
	struct tern_lora_set *l3 = new_set(3, 4, QVOD, io_small, false);
	expect_fail(dir, l3, TERN_E_FORMAT, "a layer missing",
		    "tensor base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight is missing",
		    "adapter_model.safetensors");
	tern_lora_set_free(l3);
	/* a directory without adapter_config.json: the file and the reason, no line (was ":-1:") */
	st = tern_adapter_read(path_in("no_such_adapter"), b, NULL);
	check(st == TERN_E_IO &&
		      has(tern_error(),
			  "no_such_adapter/adapter_config.json: cannot read: No such file or directory") &&
		      !has(tern_error(), ":-1:"),
	      "missing adapter_config.json: %s", tern_error());

	fill(b); /* a failed read must leave these values */
	const char *miss = "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight";
	rewrite_tensors(dir, a, miss, NULL, TERN_ST_F32);
	float before = tern_lora_at(b, 0, TERN_MOD_Q)->A[5];
	expect_fail(dir, b, TERN_E_FORMAT, "missing tensor", "adapter_model.safetensors: tensor", miss);
	check(tern_lora_at(b, 0, TERN_MOD_Q)->A[5] == before, "a failed read leaves the set unchanged");
	rewrite_tensors(dir, a, NULL, "base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
			TERN_ST_F32);
	expect_fail(dir, b, TERN_E_FORMAT, "extra tensor",
		    "unexpected tensor base_model.model.model.layers.0.self_attn.k_proj.lora_A.weight",
		    "adapter_model.safetensors");

	/* F16 and BF16 files are converted */
	for (int k = 0; k < 2; k++) {
		enum tern_st_dtype dt = k ? TERN_ST_BF16 : TERN_ST_F16;
		rewrite_tensors(dir, a, NULL, NULL, dt);
		st = tern_adapter_read(dir, b, NULL);
		bool ok = !st;
		for (int l = 0; ok && l < 2; l++) {
			for (int m = 0; ok && m < TERN_MOD_COUNT; m++) {
				const struct tern_lora_tensor *x = tern_lora_at(a, l, (enum tern_module)m),
							      *y = tern_lora_at(b, l, (enum tern_module)m);
				for (int64_t i = 0; x->A && ok && i < a->R * x->I; i++) {
					float w = k ? tern_bf16_to_f32(tern_f32_to_bf16(x->A[i]))
						    : tern_f16_to_f32(tern_f32_to_f16(x->A[i]));
					ok = memcmp(&w, &y->A[i], 4) == 0;
				}
			}
		}
		check(ok, "%s tensors read and widened exactly: %s", tern_st_dtype_name(dt),
		      st ? tern_error() : "ok");
	}
	/* a dtype that is not a float */
	{
		struct tern_st_desc d = {"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
					 TERN_ST_I32,
					 2,
					 {4, 48},
					 tern_lora_at(a, 0, TERN_MOD_Q)->A};
		char p[1100];
		snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
		tern_st_write(p, &d, 1, NULL, 0);
		expect_fail(dir, b, TERN_E_FORMAT, "integer dtype", "lora_A.weight has dtype I32",
			    "expected F32, F16 or BF16");
	}
	/* a corrupt file: truncated */
	rewrite_tensors(dir, a, NULL, NULL, TERN_ST_F32);
	{
		char p[1100];
		snprintf(p, sizeof p, "%s/adapter_model.safetensors", dir);
		struct stat sb;
		stat(p, &sb);
		if (truncate(p, sb.st_size - 10)) {
			check(false, "truncate %s", p);
		}
		expect_fail(dir, b, TERN_E_FORMAT, "corrupt safetensors", "err/adapter_model.safetensors",
			    "");
	}
	rewrite_tensors(dir, a, NULL, NULL, TERN_ST_F32);
	check(tern_adapter_read(dir, b, NULL) == TERN_OK && same(a, b), "the repaired directory reads again");

	/* adapter_config.json */
	char *orig = read_text(cfg);
	edit_file(cfg, "\"peft_type\": \"LORA\"", "\"peft_type\": \"IA3\"");
	expect_fail(dir, b, TERN_E_UNSUPPORTED, "not LORA", "adapter_config.json: peft_type is IA3",
		    "only LORA");
	write_text(cfg, orig);
	char *a1 = strstr(orig, "  \"target_modules\": [");
	char *a2 = a1 ? strstr(a1, "],") : NULL;
	if (a1 && a2) {
		char buf[8192];
		snprintf(buf, sizeof buf,
			 "%.*s  \"target_modules\": \".*\\\\.(q_proj|v_proj|o_proj|down_proj)$\"%s",
			 (int)(a1 - orig), orig, a2 + 1);
		write_text(cfg, buf);
		expect_fail(
			dir, b, TERN_E_UNSUPPORTED, "regex target_modules",
			"target_modules is the regular expression \".*\\.(q_proj|v_proj|o_proj|down_proj)$\"",
			"expected [q_proj, v_proj, o_proj, down_proj]");
		/* the same modules listed in another order, with a duplicate: accepted (a set) */
		snprintf(buf, sizeof buf,
			 "%.*s  \"target_modules\": [\"down_proj\", \"v_proj\", \"q_proj\", \"o_proj\", "
			 "\"v_proj\"]%s",
			 (int)(a1 - orig), orig, a2 + 1);
		write_text(cfg, buf);
		st = tern_adapter_read(dir, b, NULL);
		check(st == TERN_OK, "target_modules listed in another order, with a duplicate: %s",
		      st ? tern_error() : "ok");
		snprintf(buf, sizeof buf, "%.*s  \"target_modules\": [\"q_proj\", \"lm_head\"]%s",
			 (int)(a1 - orig), orig, a2 + 1);
		write_text(cfg, buf);
		expect_fail(dir, b, TERN_E_UNSUPPORTED, "unknown module", "target_modules has lm_head",
			    "q_proj");
	} else {
		check(false, "target_modules not found in the written config");
	}
	write_text(cfg, orig);
	edit_file(cfg, "\"use_dora\": false", "\"use_dora\": true");
	expect_fail(dir, b, TERN_E_UNSUPPORTED, "DoRA",
		    "adapter_config.json: the adapter uses use_dora: true", "");
	write_text(cfg, orig);
	edit_file(cfg, "\"rank_pattern\": {}", "\"rank_pattern\": {\"q_proj\": 8}");
	expect_fail(dir, b, TERN_E_UNSUPPORTED, "rank_pattern", "uses a rank_pattern", "");
	write_text(cfg, orig);
	edit_file(cfg, "\"r\": 4,", "\"r\": \"4\",");
	expect_fail(dir, b, TERN_E_FORMAT, "r not an integer",
		    "adapter_config.json: r is missing or not an integer", "");
	write_text(cfg, orig);
	edit_file(cfg, "\"lora_alpha\": 16,", "");
	expect_fail(dir, b, TERN_E_FORMAT, "no lora_alpha", "lora_alpha is missing", "");
	write_text(cfg, orig);
	edit_file(cfg, "{", "{,");
	expect_fail(dir, b, TERN_E_FORMAT, "broken JSON", "err/adapter_config.json:1:", "");
	unlink(cfg);
	expect_fail(dir, b, TERN_E_IO, "no adapter_config.json", "err/adapter_config.json", "");
	write_text(cfg, orig);
	check(tern_adapter_read(dir, b, NULL) == TERN_OK, "the restored config reads");
	free(orig);
	tern_lora_set_free(a);
	tern_lora_set_free(b);
}

/* ---- atomic writes ---------------------------------------------------------------------- */

static void test_atomic(void)
{
	struct tern_lora_set *a = new_set(2, 4, QVOD, io_small, true),
			     *b = new_set(2, 4, QVOD, io_small, true);
	struct tern_lora_set *c = new_set(2, 4, QVOD, io_small, false);
	fill(a);
	fill(b);
	mkdir(path_in("at"), 0755);
	char dir[1024];
	snprintf(dir, sizeof dir, "%s", path_in("at/adapter"));
	/* an injected ENOSPC at every file-system step of a fresh write */
	int steps = 0;
	bool clean = true;
	enum tern_status st = TERN_OK;
	for (int k = 1; k < 50; k++) {
		tern_adapter_fault_at = k;
		st = tern_adapter_write(dir, a, &meta_default);
		if (!st)
			break;
		steps++;
		clean = clean && st == TERN_E_IO && has(tern_error(), "No space left on device") &&
			!exists(dir) && leftovers(path_in("at")) == 0;
	}
	tern_adapter_fault_at = 0;
	check(!st && steps >= 4 && clean,
	      "a fresh write failing at each of its %d file-system steps leaves no directory and no temporary",
	      steps);
	/* the same for a replacement: the old adapter stays readable and intact */
	steps = 0;
	for (int k = 1; k < 50; k++) {
		tern_adapter_fault_at = k;
		st = tern_adapter_write(dir, b, &meta_default);
		if (!st)
			break;
		steps++;
		clean = clean && st == TERN_E_IO && !tern_adapter_read(dir, c, NULL) && same(a, c) &&
			leftovers(path_in("at")) == 0;
	}
	tern_adapter_fault_at = 0;
	check(!st && steps >= 5 && clean && !tern_adapter_read(dir, c, NULL) && same(b, c),
	      "a replacement failing at each of its %d steps keeps the old adapter intact; then it succeeds",
	      steps);
	/* the same for a checkpoint */
	struct tern_train_state ts = {.step = 3, .config_hash = "0123456789abcdef"};
	steps = 0;
	for (int k = 1; k < 50; k++) {
		tern_adapter_fault_at = k;
		st = tern_checkpoint_write(path_in("at/out"), a, &meta_default, &ts, 0);
		if (!st)
			break;
		steps++;
		clean = clean && st == TERN_E_IO && !exists(path_in("at/out/checkpoint-3")) &&
			leftovers(path_in("at/out")) == 0;
	}
	tern_adapter_fault_at = 0;
	check(!st && steps >= 6 && clean,
	      "a checkpoint failing at each of its %d steps leaves nothing behind", steps);

	/* real failures */
	st = tern_adapter_write(path_in("at/no/such/adapter"), a, &meta_default);
	check(st == TERN_E_IO && has(tern_error(), "at/no/such/adapter.tmp.") &&
		      has(tern_error(), "No such file"),
	      "missing parent: %s", tern_error());
	write_text(path_in("at/file"), "x");
	st = tern_adapter_write(path_in("at/file"), a, &meta_default);
	char *t = read_text(path_in("at/file"));
	check(st == TERN_E_IO && has(tern_error(), "at/file: exists and is not a directory") && t &&
		      !strcmp(t, "x") && leftovers(path_in("at")) == 0,
	      "a regular file in the way is kept: %s", tern_error());
	free(t);
	if (geteuid() != 0) {
		mkdir(path_in("at/ro"), 0755);
		chmod(path_in("at/ro"), 0555);
		st = tern_adapter_write(path_in("at/ro/adapter"), a, &meta_default);
		check(st == TERN_E_IO && has(tern_error(), "Permission denied") &&
			      !exists(path_in("at/ro/adapter")),
		      "read-only parent: %s", tern_error());
		chmod(path_in("at/ro"), 0755);
	}
	/* a directory holding more than an adapter (an output_dir) is not replaced: the files are */
	mkdir(path_in("at/outdir"), 0755);
	write_text(path_in("at/outdir/metrics.jsonl"), "{}\n");
	mkdir(path_in("at/outdir/checkpoint-1"), 0755);
	st = tern_adapter_write(path_in("at/outdir"), a, &meta_default);
	if (!st)
		st = tern_adapter_write(path_in("at/outdir"), b, &meta_default);
	check(!st && exists(path_in("at/outdir/metrics.jsonl")) &&
		      exists(path_in("at/outdir/checkpoint-1")) &&
		      !tern_adapter_read(path_in("at/outdir"), c, NULL) && same(b, c) &&
		      leftovers(path_in("at/outdir")) == 0,
	      "an output_dir with other files keeps them; its adapter files are replaced: %s",
	      st ? tern_error() : "ok");
	/* a real ENOSPC: the tensor file's temporary is a link to /dev/full */
	if (exists("/dev/full") && symlink("/dev/full", path_in("at/outdir/adapter_model.safetensors.tmp.%ld",
								(long)getpid())) == 0) {
		st = tern_adapter_write(path_in("at/outdir"), a, &meta_default);
		check(st == TERN_E_IO && has(tern_error(), "No space left on device") &&
			      !tern_adapter_read(path_in("at/outdir"), c, NULL) && same(b, c) &&
			      leftovers(path_in("at/outdir")) == 0,
		      "ENOSPC from /dev/full leaves the previous adapter intact and no temporary: %s",
		      tern_error());
	}
	tern_lora_set_free(a);
	tern_lora_set_free(b);
	tern_lora_set_free(c);
}

/* ---- checkpoints ------------------------------------------------------------------------ */

static bool same_state(const struct tern_train_state *x, const struct tern_train_state *y)
{
	return x->step == y->step && x->total_steps == y->total_steps && x->warmup_steps == y->warmup_steps &&
	       x->epoch == y->epoch && x->row == y->row && x->seed == y->seed && x->tokens == y->tokens &&
	       !memcmp(&x->elapsed, &y->elapsed, sizeof(double)) &&
	       !memcmp(&x->last_loss, &y->last_loss, sizeof(double)) &&
	       !strcmp(x->config_hash, y->config_hash) && x->schedule_steps == y->schedule_steps &&
	       x->data_rows == y->data_rows && x->data_seq_len == y->data_seq_len &&
	       !strcmp(x->data_fingerprint, y->data_fingerprint) && x->n_data_files == y->n_data_files &&
	       (x->n_data_files < 2 || (!strcmp(x->data_files[1].path, y->data_files[1].path) &&
					!strcmp(x->data_files[1].fingerprint, y->data_files[1].fingerprint)));
}

static void test_checkpoint(void)
{
	struct tern_lora_set *a = new_set(2, 4, QVOD, io_small, true),
			     *b = new_set(2, 4, QVOD, io_small, true);
	fill(a);
	char out[1024];
	snprintf(out, sizeof out, "%s", path_in("ck/out"));
	mkdir(path_in("ck"), 0755);
	struct tern_train_state s0 = {
		.step = 7,
		.total_steps = 1000,
		.warmup_steps = 30,
		.epoch = 2,
		.row = 12345,
		.seed = UINT64_MAX,
		.tokens = (int64_t)1 << 53 | 1,
		.elapsed = 1.0 / 3.0,
		.last_loss = 2.345678901234567e-7,
		.config_hash = "00ff00ff12345678",
		.schedule_steps = 1200,
		.data_rows = 60,
		.data_seq_len = 24,
		.data_fingerprint = "0123456789abcdef",
		.n_data_files = 2,
		.data_files = {{"data/a.jsonl", "fedcba9876543210"}, {"data/\"b\".json", ""}},
	};
	enum tern_status st = tern_checkpoint_write(out, a, &meta_default, &s0, 0);
	check(st == TERN_OK && exists(path_in("ck/out/checkpoint-7/optimizer.safetensors")) &&
		      exists(path_in("ck/out/checkpoint-7/trainer_state.json")) &&
		      exists(path_in("ck/out/checkpoint-7/adapter_config.json")) &&
		      exists(path_in("ck/out/checkpoint-7/adapter_model.safetensors")) && leftovers(out) == 0,
	      "checkpoint-7 written with its four files (output_dir created): %s", st ? tern_error() : "ok");
	struct tern_train_state s1;
	memset(&s1, 0xab, sizeof s1);
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-7"), b, &s1);
	check(st == TERN_OK && same(a, b) && same_state(&s0, &s1),
	      "checkpoint round trip: tensors, moments and state bit-exact (u64 max, 2^53+1 tokens, 1/3 s): %s",
	      st ? tern_error() : "ok");
	struct tern_st_file *f = NULL;
	st = tern_st_open(path_in("ck/out/checkpoint-7/optimizer.safetensors"), &f);
	const struct tern_st_tensor *t =
		st ? NULL
		   : tern_st_file_find(
			     f, "base_model.model.model.layers.1.self_attn.o_proj.lora_B.weight.exp_avg_sq");
	check(t && tern_st_file_count(f) == 2 * 4 * 4 && t->dtype == TERN_ST_F32 && t->shape[0] == 48 &&
		      t->shape[1] == 4 && !memcmp(t->data, tern_lora_at(a, 1, TERN_MOD_O)->vB, 48 * 4 * 4),
	      "optimizer.safetensors: 32 F32 moments named <adapter tensor>.exp_avg / .exp_avg_sq");
	tern_st_close(f);
	char *js = read_text(path_in("ck/out/checkpoint-7/trainer_state.json"));
	check(js && has(js, "\"seed\": \"18446744073709551615\"") && !has(js, "\"rng\"") &&
		      has(js, "\"tokens\": 9007199254740993,") &&
		      has(js, "\"elapsed\": 0.3333333333333333,") &&
		      has(js, "\"format\": \"tern-trainer-state\""),
	      "trainer_state.json: the seed as a string, exact integers, shortest round-trip doubles");
	free(js);

	/* a NaN loss survives; moments needed */
	s0.last_loss = NAN;
	s0.step = 8;
	st = tern_checkpoint_write(out, a, &meta_default, &s0, 0);
	if (!st)
		st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
	check(st == TERN_OK && isnan(s1.last_loss) && s1.step == 8, "a NaN last_loss round-trips: %s",
	      st ? tern_error() : "ok");
	struct tern_lora_set *nm = new_set(2, 4, QVOD, io_small, false);
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), nm, &s1);
	check(st == TERN_E_INVALID && has(tern_error(), "no AdamW moments"), "reading needs moments: %s",
	      tern_error());
	st = tern_checkpoint_write(out, nm, &meta_default, &s0, 0);
	check(st == TERN_E_INVALID && has(tern_error(), "no AdamW moments"), "writing needs moments: %s",
	      tern_error());
	tern_lora_set_free(nm);

	/* read errors */
	rename(path_in("ck/out/checkpoint-8"), path_in("ck/out/checkpoint-9"));
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-9"), b, &s1);
	check(st == TERN_E_FORMAT && has(tern_error(), "step is 8 but the directory is checkpoint-9"),
	      "step and directory name disagree: %s", tern_error());
	rename(path_in("ck/out/checkpoint-9"), path_in("ck/out/checkpoint-8"));
	char tsp[1024];
	snprintf(tsp, sizeof tsp, "%s", path_in("ck/out/checkpoint-8/trainer_state.json"));
	char *orig = read_text(tsp);
	edit_file(tsp, "\"version\": 2", "\"version\": 3");
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
	check(st == TERN_E_FORMAT &&
		      has(tern_error(), "checkpoint-8/trainer_state.json: not a tern trainer state"),
	      "another state version: %s", tern_error());
	write_text(tsp, orig);
	{
		/* checksums.sha256: sha256sum's format; one flipped bit in any file is caught, naming it */
		char *man = read_text(path_in("ck/out/checkpoint-8/checksums.sha256"));
		check(man &&
			      strlen(man) == 4 * (64 + 2) + strlen("adapter_config.json\n") +
						     strlen("adapter_model.safetensors\n") +
						     strlen("optimizer.safetensors\n") +
						     strlen("trainer_state.json\n") &&
			      has(man, "  optimizer.safetensors\n") && has(man, "  trainer_state.json\n"),
		      "checksums.sha256 lists the four files as sha256sum writes them");
		static const char *const files[] = {"adapter_model.safetensors", "optimizer.safetensors",
						    "adapter_config.json"};
		for (int i = 0; i < 3; i++) {
			char fp[1024];
			snprintf(fp, sizeof fp, "%s", path_in("ck/out/checkpoint-8/%s", files[i]));
			FILE *fh = fopen(fp, "r+b");
			fseek(fh, 0, SEEK_END);
			long at = ftell(fh) - 3; /* in the data, past any header */
			fseek(fh, at, SEEK_SET);
			int c = fgetc(fh);
			fseek(fh, at, SEEK_SET);
			fputc(c ^ 0x10, fh);
			fclose(fh);
			st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
			check(st == TERN_E_FORMAT && has(tern_error(), files[i]) &&
				      has(tern_error(), "checksum mismatch"),
			      "a flipped bit in %s is caught: %s", files[i], tern_error());
			fh = fopen(fp, "r+b");
			fseek(fh, at, SEEK_SET);
			fputc(c, fh);
			fclose(fh);
		}
		/* a version-1 checkpoint (no data fields, no checksums) still reads */
		char *v1 = read_text(tsp);
		char *d = v1 ? strstr(v1, "\"data\": {") : NULL, *e = NULL;
		for (int depth = 0; d && (e = e ? e + 1 : strchr(d, '{')) && *e;) { /* the matching } */
			depth += (*e == '{') - (*e == '}');
			if (!depth)
				break;
		}
		if (e && *e == '}' && e[1] == ',') {
			e += 2;
			while (*e == ' ' || *e == '\n')
				e++;
			memmove(d, e, strlen(e) + 1);
			write_text(tsp, v1);
			edit_file(tsp, "\"version\": 2", "\"version\": 1");
		}
		rename(path_in("ck/out/checkpoint-8/checksums.sha256"), path_in("ck/out/man.sha256"));
		st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
		check(e && st == TERN_OK && s1.version == 1 && s1.data_rows == 0,
		      "a version-1 state without data fields or checksums reads: %s",
		      st ? tern_error() : "ok");
		write_text(tsp, orig);
		st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
		check(st == TERN_E_IO && has(tern_error(), "checksums.sha256"),
		      "a version-2 checkpoint without checksums.sha256 is refused: %s", tern_error());
		rename(path_in("ck/out/man.sha256"), path_in("ck/out/checkpoint-8/checksums.sha256"));
		free(v1);
		free(man);
	}
	edit_file(tsp, "\"seed\": \"", "\"seed\": \"-");
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
	check(st == TERN_E_FORMAT &&
		      has(tern_error(), "trainer_state.json: seed is missing or not a decimal"),
	      "a bad seed: %s", tern_error());
	write_text(tsp, orig);
	edit_file(tsp, "\"row\"", "\"rows\"");
	st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
	check(st == TERN_E_FORMAT && has(tern_error(), "trainer_state.json: unknown key rows"),
	      "an unknown key: %s", tern_error());
	write_text(tsp, orig);
	free(orig);
	{
		/* optimizer.safetensors without one moment */
		struct tern_st_desc d = {
			"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.exp_avg",
			TERN_ST_F32,
			2,
			{4, 48},
			tern_lora_at(a, 0, TERN_MOD_Q)->mA};
		tern_st_write(path_in("ck/out/checkpoint-8/optimizer.safetensors"), &d, 1, NULL, 0);
		st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
		check(st == TERN_E_FORMAT && has(tern_error(), "optimizer.safetensors: checksum mismatch"),
		      "a replaced optimizer.safetensors fails its checksum: %s", tern_error());
		static const char *const four[] = {"adapter_config.json", "adapter_model.safetensors",
						   "optimizer.safetensors", "trainer_state.json"};
		tern_manifest_write(path_in("ck/out/checkpoint-8"), four, 4);
		st = tern_checkpoint_read(path_in("ck/out/checkpoint-8"), b, &s1);
		check(st == TERN_E_FORMAT &&
			      has(tern_error(),
				  "checkpoint-8/optimizer.safetensors: tensor "
				  "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight.exp_avg_sq "
				  "is missing"),
		      "a moment missing: %s", tern_error());
	}

	/* rotation: save_total_limit 2 over four saves */
	char rot[1024];
	snprintf(rot, sizeof rot, "%s", path_in("ck/rot"));
	bool ok = true;
	for (int i = 1; i <= 4; i++) {
		s0.step = 10 * i;
		s0.last_loss = 1.0 / i;
		st = tern_checkpoint_write(rot, a, &meta_default, &s0, 2);
		ok = ok && !st && exists(path_in("ck/rot/checkpoint-%d", 10 * i)) &&
		     exists(path_in("ck/rot/checkpoint-%d", 10 * (i - 1) > 0 ? 10 * (i - 1) : 10 * i)) &&
		     (i < 3 || !exists(path_in("ck/rot/checkpoint-%d", 10 * (i - 2))));
	}
	check(ok && !exists(path_in("ck/rot/checkpoint-10")) && !exists(path_in("ck/rot/checkpoint-20")) &&
		      exists(path_in("ck/rot/checkpoint-30")) && exists(path_in("ck/rot/checkpoint-40")) &&
		      leftovers(rot) == 0,
	      "save_total_limit 2 over saves 10, 20, 30, 40 keeps 30 and 40 after each step: %s",
	      st ? tern_error() : "ok");
	s0.step = 5;
	st = tern_checkpoint_write(rot, a, &meta_default, &s0, 2);
	check(!st && exists(path_in("ck/rot/checkpoint-5")) && !exists(path_in("ck/rot/checkpoint-30")) &&
		      exists(path_in("ck/rot/checkpoint-40")),
	      "a save at an earlier step (5) is never the one removed: 30 goes, 5 and 40 stay");

	/* latest: stray temporary, incomplete and non-directory entries are ignored */
	char path[1200];
	mkdir(path_in("ck/rot/checkpoint-50.tmp.999"), 0755);
	write_text(path_in("ck/rot/checkpoint-50.tmp.999/trainer_state.json"), "{}");
	mkdir(path_in("ck/rot/checkpoint-60"), 0755);
	write_text(path_in("ck/rot/checkpoint-60/adapter_config.json"), "{}");
	write_text(path_in("ck/rot/checkpoint-70"), "");
	mkdir(path_in("ck/rot/checkpoint-80.old.1"), 0755);
	bool found = tern_checkpoint_latest(rot, path, sizeof path);
	check(found && !strcmp(path, path_in("ck/rot/checkpoint-40")),
	      "latest is checkpoint-40 beside strays: %s", found ? path : "none");
	found = tern_checkpoint_latest(rot, path, 8);
	check(!found, "latest refuses a path buffer too small");
	mkdir(path_in("ck/empty"), 0755);
	check(!tern_checkpoint_latest(path_in("ck/empty"), path, sizeof path) &&
		      !tern_checkpoint_latest(path_in("ck/none"), path, sizeof path),
	      "no checkpoint in an empty or missing output_dir");
	st = tern_checkpoint_read(path_in("ck/rot/checkpoint-40"), b, &s1);
	check(!st && s1.step == 40 && s1.last_loss == 0.25 && same(a, b), "checkpoint-40 reads back: %s",
	      st ? tern_error() : "ok");
	tern_lora_set_free(a);
	tern_lora_set_free(b);
}

/* ---- modules trained in full (modules_to_save) -------------------------------------------- */

static struct tern_lora_set *full_set(unsigned full, bool moments)
{
	struct tern_lora_set *s = new_set(2, 4, QVOD, io_small, moments);
	if (tern_lora_set_add_full(s, full, 50, 48, moments)) {
		fprintf(stderr, "tern_lora_set_add_full: %s\n", tern_error());
		exit(1);
	}
	return s;
}

static void fill_full(struct tern_lora_set *s)
{
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		for (int64_t i = 0; s->f[f].W && i < 50 * 48; i++) {
			s->f[f].W[i] = rng_float();
			if (s->f[f].m)
				s->f[f].m[i] = rng_float() * 1e-3f, s->f[f].v[i] = rng_float() * 1e-6f;
		}
	s->full_have = s->full;
}

static bool same_full(const struct tern_lora_set *a, const struct tern_lora_set *b, int f, bool moments)
{
	size_t n = (size_t)(50 * 48) * 4;
	return !memcmp(a->f[f].W, b->f[f].W, n) &&
	       (!moments || (!memcmp(a->f[f].m, b->f[f].m, n) && !memcmp(a->f[f].v, b->f[f].v, n)));
}

static void test_full(void)
{
	enum tern_full f;
	check(tern_full_parse("embed_tokens", &f) && f == TERN_FULL_EMBED && tern_full_parse("lm_head", &f) &&
		      f == TERN_FULL_HEAD && tern_full_parse("model.embed_tokens", &f) &&
		      f == TERN_FULL_EMBED && !tern_full_parse("q_proj", &f) &&
		      !tern_full_parse("lm_heads", &f),
	      "modules_to_save names parse (a dotted path by its last part)");
	/* write -> read: PEFT's tensor names and shapes, modules_to_save in the config */
	struct tern_lora_set *a = full_set(3, false), *b = full_set(3, false);
	fill(a);
	fill_full(a);
	char *dir = path_in("full");
	enum tern_status st = tern_adapter_write(dir, a, &meta_default);
	struct tern_st_file *sf = NULL;
	char *stp = path_in("full/adapter_model.safetensors");
	bool names = st == TERN_OK && tern_st_open(stp, &sf) == TERN_OK;
	const struct tern_st_tensor *te =
		names ? tern_st_file_find(sf, "base_model.model.model.embed_tokens.weight") : NULL;
	const struct tern_st_tensor *th =
		names ? tern_st_file_find(sf, "base_model.model.lm_head.weight") : NULL;
	check(te && th && te->shape[0] == 50 && te->shape[1] == 48 && th->dtype == TERN_ST_F32,
	      "embed_tokens / lm_head saved under PEFT's names, F32 [50, 48]");
	tern_st_close(sf);
	char *cfg = read_text(path_in("full/adapter_config.json"));
	check(cfg && strstr(cfg, "\"modules_to_save\": [\n    \"embed_tokens\",\n    \"lm_head\"\n  ]"),
	      "adapter_config.json: modules_to_save [embed_tokens, lm_head]");
	free(cfg);
	check(tern_adapter_full(dir) == 3u && tern_adapter_full(path_in("nowhere")) == 0,
	      "tern_adapter_full reads the list");
	st = tern_adapter_read(dir, b, NULL);
	check(st == TERN_OK && same(a, b) && same_full(a, b, 0, false) && same_full(a, b, 1, false) &&
		      b->full_have == 3,
	      "full modules read back bit for bit: %s", st ? tern_error() : "ok");
	/* a set that never got values for them is not written */
	struct tern_lora_set *c = full_set(3, false);
	fill(c);
	st = tern_adapter_write(path_in("full_empty"), c, &meta_default);
	check(st == TERN_E_INVALID && has(tern_error(), "holds no values"), "unset full modules refused: %s",
	      tern_error());
	/* an adapter listing only lm_head read into a run training both: embed_tokens keeps its bit clear */
	struct tern_lora_set *h = full_set(2, false);
	fill(h);
	fill_full(h);
	tern_lora_set_free(c);
	c = full_set(3, false);
	st = tern_adapter_write(path_in("full_head"), h, &meta_default);
	if (st == TERN_OK)
		st = tern_adapter_read(path_in("full_head"), c, NULL);
	check(st == TERN_OK && c->full_have == 2u && same_full(h, c, 1, false),
	      "an adapter with lm_head only: read, embed_tokens left to the base: %s",
	      st ? tern_error() : "ok");
	/* ... but a run that does not train what the adapter lists refuses it */
	struct tern_lora_set *none = new_set(2, 4, QVOD, io_small, false);
	st = tern_adapter_read(dir, none, NULL);
	check(st == TERN_E_INVALID &&
		      has(tern_error(), "modules_to_save has embed_tokens but the run does not train it"),
	      "modules_to_save the run does not train: %s", tern_error());
	tern_lora_set_free(none);
	/* refusals: an unknown module, a missing tensor */
	char *cp = path_in("full/adapter_config.json");
	edit_file(cp, "\"lm_head\"", "\"score\"");
	st = tern_adapter_read(dir, b, NULL);
	check(st == TERN_E_UNSUPPORTED && has(tern_error(), "modules_to_save has score"),
	      "modules_to_save [score] refused: %s", tern_error());
	edit_file(cp, "\"score\"", "\"model.lm_head\"");
	st = tern_adapter_read(dir, b, NULL);
	check(st == TERN_OK, "modules_to_save [model.lm_head] accepted: %s", st ? tern_error() : "ok");
	/* the LoRA tensors alone (rewrite_tensors writes no full module) */
	rewrite_tensors(dir, a, NULL, NULL, TERN_ST_F32);
	st = tern_adapter_read(dir, b, NULL);
	check(st == TERN_E_FORMAT &&
		      has(tern_error(), "base_model.model.model.embed_tokens.weight is missing"),
	      "a listed module's tensor missing: %s", tern_error());
	/* checkpoints carry the moments */
	struct tern_lora_set *ma = full_set(3, true), *mb = full_set(3, true);
	fill(ma);
	fill_full(ma);
	struct tern_train_state ts = {.step = 3, .total_steps = 9, .seed = 1};
	snprintf(ts.config_hash, sizeof ts.config_hash, "00ff");
	struct tern_train_state rs;
	st = tern_checkpoint_write(path_in("fullck"), ma, &meta_default, &ts, 0);
	if (st == TERN_OK)
		st = tern_checkpoint_read(path_in("fullck/checkpoint-3"), mb, &rs);
	check(st == TERN_OK && same(ma, mb) && same_full(ma, mb, 0, true) && same_full(ma, mb, 1, true),
	      "checkpoint: full modules and their AdamW moments bit for bit: %s", st ? tern_error() : "ok");
	struct tern_lora_set *mh = full_set(2, true);
	st = tern_checkpoint_read(path_in("fullck/checkpoint-3"), mh, &rs);
	check(st != TERN_OK && has(tern_error(), "modules_to_save"),
	      "checkpoint into a run with other modules_to_save: %s", tern_error());
	tern_lora_set_free(mh);
	tern_lora_set_free(ma);
	tern_lora_set_free(mb);
	tern_lora_set_free(h);
	tern_lora_set_free(c);
	tern_lora_set_free(a);
	tern_lora_set_free(b);
}

/* LoRA on experts: PEFT's fused layout round trip, and the older per-expert layout written on
 * request (lora_expert_layout: per_expert) holding the same factors per expert. */
static void test_experts(void)
{
	static const int64_t io[TERN_MOD_COUNT][2] = {{16, 16}, {16, 8},  {16, 8}, {16, 16},
						      {16, 24}, {16, 24}, {24, 16}};
	const int L = 3;
	const int64_t R = 2, E = 3, D = 16, Fe = 12;
	const uint8_t sparse[3] = {1, 0, 1}; /* layer 1 dense (mlp_only_layers) */
	struct tern_lora_set *a = NULL, *b = NULL;
	unsigned q = 1u << TERN_MOD_Q;
	enum tern_status st = tern_lora_set_alloc(&a, L, R, q, io, false);
	if (!st)
		st = tern_lora_set_alloc(&b, L, R, q, io, false);
	if (!st)
		st = tern_lora_set_add_experts(a, 3u, E, D, Fe, sparse, false);
	if (!st)
		st = tern_lora_set_add_experts(b, 3u, E, D, Fe, sparse, false);
	check(st == TERN_OK, "expert sets: %s", st ? tern_error() : "ok");
	if (st)
		goto out;
	uint32_t x = 12345;
	for (int i = 0; i < L * TERN_LORA_SLOTS; i++) {
		struct tern_lora_tensor *t = &a->t[i];
		for (int64_t j = 0; t->A && j < t->r * t->I; j++)
			t->A[j] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
		for (int64_t j = 0; t->B && j < t->O * t->r; j++)
			t->B[j] = (float)((x = x * 1664525u + 1013904223u) >> 8) / 16777216.0f - 0.5f;
	}
	mkdir(path_in("ex"), 0755);
	struct tern_adapter_meta m = meta_default;
	m.dropout = 0;
	st = tern_adapter_write(path_in("ex/peft"), a, &m);
	if (!st)
		st = tern_adapter_read(path_in("ex/peft"), b, NULL);
	check(st == TERN_OK && same(a, b), "experts: PEFT layout round trip bit-exact: %s",
	      st ? tern_error() : "ok");
	struct tern_st_file *f = NULL;
	bool ok = st == TERN_OK && tern_st_open(path_in("ex/peft/adapter_model.safetensors"), &f) == TERN_OK;
	const struct tern_st_tensor *gu =
		ok ? tern_st_file_find(f,
				       "base_model.model.model.layers.0.mlp.experts.base_layer.lora_B.weight")
		   : NULL;
	const struct tern_st_tensor *dn =
		ok ? tern_st_file_find(f, "base_model.model.model.layers.2.mlp.experts.lora_A.weight") : NULL;
	check(gu && dn && gu->shape[0] == 2 * Fe && gu->shape[1] == R * E && dn->shape[0] == E * R &&
		      dn->shape[1] == Fe &&
		      !tern_st_file_find(f, "base_model.model.model.layers.1.mlp.experts.lora_A.weight") &&
		      tern_st_file_count(f) == 3 * 2 + 2 * 4,
	      "experts: gate_up nested under base_layer [2Fe, R*E], down [E*R, Fe], none in the dense layer");
	tern_st_close(f);
	f = NULL;
	m.per_expert = true;
	m.model_type = "mixtral";
	st = tern_adapter_write(path_in("ex/pe"), a, &m);
	ok = st == TERN_OK && tern_st_open(path_in("ex/pe/adapter_model.safetensors"), &f) == TERN_OK;
	bool same_f = ok && tern_st_file_count(f) == 3 * 2 + 2 * E * 3 * 2;
	for (int l = 0; l < L && same_f; l += 2)
		for (int64_t e = 0; e < E && same_f; e++)
			for (int k = 0; k < 3 && same_f; k++) {
				static const char *const w[3] = {"w1", "w3", "w2"};
				char na[200], nb[200];
				snprintf(
					na, sizeof na,
					"base_model.model.model.layers.%d.block_sparse_moe.experts.%lld.%s.lora_A.weight",
					l, (long long)e, w[k]);
				snprintf(
					nb, sizeof nb,
					"base_model.model.model.layers.%d.block_sparse_moe.experts.%lld.%s.lora_B.weight",
					l, (long long)e, w[k]);
				const struct tern_st_tensor *ta = tern_st_file_find(f, na),
							    *tb = tern_st_file_find(f, nb);
				const struct tern_lora_tensor *t =
					tern_lora_at(a, l,
						     (enum tern_module)(k < 2 ? TERN_LORA_EXP_GATE_UP
									      : TERN_LORA_EXP_DOWN));
				int64_t Ok = k < 2 ? Fe : D;
				same_f = ta && tb && ta->shape[0] == R && ta->shape[1] == t->I &&
					 tb->shape[0] == Ok && tb->shape[1] == R &&
					 !memcmp(ta->data, t->A + e * R * t->I, (size_t)(R * t->I) * 4);
				for (int64_t o = 0; same_f && o < Ok; o++)
					for (int64_t j = 0; same_f && j < R; j++) {
						float v;
						memcpy(&v, (const char *)tb->data + (size_t)(o * R + j) * 4,
						       4);
						same_f = v ==
							 t->B[((k == 1 ? Fe : 0) + o) * R * E + j * E + e];
					}
			}
	check(same_f,
	      "experts: per-expert layout holds A_e and the de-interleaved B_e (gate, up rows) of every expert");
	tern_st_close(f);
	json_error_t je;
	json_t *cj = json_load_file(path_in("ex/pe/adapter_config.json"), 0, &je), *pj;
	json_t *tm = cj ? json_object_get(cj, "target_modules") : NULL;
	char mods[128] = "";
	size_t mi;
	json_array_foreach(tm, mi, pj)
	{
		strncat(mods, json_string_value(pj), sizeof mods - strlen(mods) - 2);
		strcat(mods, " ");
	}
	check(cj && !strcmp(mods, "q_proj w1 w3 w2 ") &&
		      json_is_null(json_object_get(cj, "target_parameters")),
	      "experts: per-expert adapter_config: target_modules [%s], no target_parameters", mods);
	json_decref(cj);
	cj = json_load_file(path_in("ex/peft/adapter_config.json"), 0, &je);
	tm = cj ? json_object_get(cj, "target_parameters") : NULL;
	check(json_array_size(tm) == 2 &&
		      !strcmp(json_string_value(json_array_get(tm, 0)), "mlp.experts.down_proj") &&
		      !strcmp(json_string_value(json_array_get(tm, 1)), "mlp.experts.gate_up_proj"),
	      "experts: PEFT layout lists target_parameters sorted");
	json_decref(cj);
	/* lora_model_dir reads the per-expert layout back into the fused slots, bit for bit */
	for (int i = 0; i < L * TERN_LORA_SLOTS; i++) {
		struct tern_lora_tensor *t = &b->t[i];
		if (t->A)
			memset(t->A, 0, (size_t)(t->r * t->I) * 4),
				memset(t->B, 0, (size_t)(t->O * t->r) * 4);
	}
	st = tern_adapter_read(path_in("ex/pe"), b, NULL);
	check(st == TERN_OK && same(a, b),
	      "experts: the per-expert layout reads back into the fused slots: %s", st ? tern_error() : "ok");
	/* w3's A of expert 0 in layer 0 made to differ from w1's: no exact fused form, one line */
	{
		FILE *fp = fopen(path_in("ex/pe/adapter_model.safetensors"), "r+b");
		uint64_t hl = 0;
		char *hdr = NULL;
		bool done = false;
		if (fp && fread(&hl, 8, 1, fp) == 1 && hl < (1u << 20) && (hdr = calloc(1, (size_t)hl + 1)) &&
		    fread(hdr, 1, (size_t)hl, fp) == hl) {
			json_t *hj = json_loads(hdr, 0, &je);
			json_t *off = json_object_get(
				json_object_get(
					hj,
					"base_model.model.model.layers.0.block_sparse_moe.experts.0.w3.lora_A.weight"),
				"data_offsets");
			float one = 1.0f;
			done = json_is_array(off) &&
			       !fseek(fp,
				      (long)(8 + hl + (uint64_t)json_integer_value(json_array_get(off, 0))),
				      SEEK_SET) &&
			       fwrite(&one, 4, 1, fp) == 1;
			json_decref(hj);
		}
		free(hdr);
		if (fp)
			fclose(fp);
		st = done ? tern_adapter_read(path_in("ex/pe"), b, NULL) : TERN_E_IO;
		check(done && st == TERN_E_UNSUPPORTED && strstr(tern_error(), "different lora_A") &&
			      !strchr(tern_error(), '\n'),
		      "experts: gate and up with different A refused in one line: %s", tern_error());
	}
out:
	tern_lora_set_free(a);
	tern_lora_set_free(b);
}

int main(void)
{
	const char *t = getenv("TMPDIR"), *d = getenv("TERN_TEST_DATA");
	snprintf(tmpdir, sizeof tmpdir, "%s/tern_adapter_XXXXXX", t && *t ? t : "/tmp");
	snprintf(data_dir, sizeof data_dir, "%s", d && *d ? d : "tests/data");
	if (!mkdtemp(tmpdir)) {
		fprintf(stderr, "mkdtemp %s failed\n", tmpdir);
		return 1;
	}
	test_modules();
	test_round_trip();
	test_peft_fixture();
	test_read_errors();
	test_atomic();
	test_checkpoint();
	test_full();
	test_experts();
	remove_tree(tmpdir);
	printf("%d passed, %d failed\n", n_pass, n_fail);
	return n_fail ? 1 : 0;
}
