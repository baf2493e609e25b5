/* The PEFT adapter directory and training checkpoints (adapter.h).
 *
 * Files written (docs/FORMATS.md, "PEFT adapters and checkpoints"):
 *	adapter_config.json        PEFT's keys (as PEFT 0.21 writes them), sorted, 2-space indent,
 *	                           Python's number and string spelling (json.dumps(indent=2,
 *	                           sort_keys=True)), no trailing newline
 *	adapter_model.safetensors  F32 lora_A [R, I] / lora_B [O, R], and the modules trained in
 *	                           full (modules_to_save) as base_model.model.<path>.weight [V, D],
 *	                           sorted by name
 *	optimizer.safetensors      F32 <adapter tensor>.exp_avg / .exp_avg_sq (checkpoints)
 *	trainer_state.json         struct tern_train_state (checkpoints)
 * Directories are built under "<final>.tmp.<pid>" and renamed into place; an existing directory
 * is moved aside to "<final>.old.<pid>" first and removed after the new one is in place. */
#define _POSIX_C_SOURCE 200809L
#include "train/adapter.h"

#include "formats/safetensors.h"
#include "quant/quant.h"
#include "train/manifest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PEFT_VERSION "0.21.2" /* the PEFT release whose adapter_config.json key set tern writes */
#define STATE_FORMAT "tern-trainer-state"
#define STATE_VERSION 2 /* 1: without the data fields and checksums.sha256 */
#define NAME_CAP 160

static const char *const mod_name[TERN_LORA_SLOTS] = {"q_proj",
						      "k_proj",
						      "v_proj",
						      "o_proj",
						      "gate_proj",
						      "up_proj",
						      "down_proj",
						      "mlp.experts.gate_up_proj",
						      "mlp.experts.down_proj",
						      "mlp.gate.weight"};
static const char *const mod_path[TERN_MOD_COUNT] = {
	"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
	"mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

unsigned tern_expert_param_bit(const char *name)
{
	return !name                                                              ? 0u
	       : !strcmp(name, "mlp.experts.gate_up_proj")                        ? 1u
	       : !strcmp(name, "mlp.experts.down_proj")                           ? 2u
	       : !strcmp(name, "mlp.gate.weight") || !strcmp(name, "gate.weight") ? 4u
										  : 0u;
}

const char *tern_module_name(enum tern_module m) { return (unsigned)m < TERN_LORA_SLOTS ? mod_name[m] : "?"; }

const char *tern_module_path(enum tern_module m) { return (unsigned)m < TERN_MOD_COUNT ? mod_path[m] : "?"; }

bool tern_module_parse(const char *s, enum tern_module *out)
{
	for (int m = 0; m < TERN_MOD_COUNT; m++) {
		if (s && !strcmp(s, mod_name[m])) {
			*out = (enum tern_module)m;
			return true;
		}
	}
	return false;
}

static const char *const full_name[TERN_FULL_COUNT] = {"embed_tokens", "lm_head"};
/* the module's path in the model, as PEFT prefixes it with "base_model.model." */
static const char *const full_path[TERN_FULL_COUNT] = {"model.embed_tokens", "lm_head"};

const char *tern_full_name(enum tern_full f) { return (unsigned)f < TERN_FULL_COUNT ? full_name[f] : "?"; }

bool tern_full_parse(const char *s, enum tern_full *out)
{
	if (!s)
		return false;
	const char *dot = strrchr(s, '.');
	const char *last = dot ? dot + 1 : s;
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		if (!strcmp(last, full_name[f])) {
			*out = (enum tern_full)f;
			return true;
		}
	}
	return false;
}

/* ---- fault injection (tests) ------------------------------------------------------------ */

/* When > 0, the n-th file-system step of the next adapter or checkpoint write fails with ENOSPC
 * (test_adapter walks n = 1, 2, ... to check that every failure point leaves nothing behind). */
int tern_adapter_fault_at;
static int fault_n;

static bool fault(void)
{
	if (tern_adapter_fault_at > 0 && ++fault_n == tern_adapter_fault_at) {
		errno = ENOSPC;
		return true;
	}
	return false;
}

/* ---- the set ---------------------------------------------------------------------------- */

static bool targeted(const struct tern_lora_set *s, int m) { return (s->modules >> m) & 1u; }

/* Module m of layer l has tensors: targeted, and present in that layer (experts: sparse layers). */
static bool present(const struct tern_lora_set *s, int l, int m)
{
	return targeted(s, m) && tern_lora_at(s, l, (enum tern_module)m)->I > 0;
}

static float *alloc_f32(int64_t a, int64_t b)
{
	if (a <= 0 || b <= 0 || a > INT64_MAX / b || (uint64_t)(a * b) > SIZE_MAX / sizeof(float)) {
		tern_fail(TERN_E_NOMEM, "LoRA set: %" PRId64 " x %" PRId64 " floats do not fit in memory", a,
			  b);
		return NULL;
	}
	return tern_calloc((size_t)(a * b), sizeof(float));
}

enum tern_status tern_lora_set_alloc(struct tern_lora_set **out, int L, int64_t R, unsigned modules,
				     const int64_t io[TERN_MOD_COUNT][2], bool moments)
{
	*out = NULL;
	if (L <= 0 || R <= 0 || !modules || (modules >> TERN_MOD_COUNT))
		return tern_fail(TERN_E_INVALID,
				 "LoRA set: %d layers, rank %" PRId64
				 ", modules 0x%x: need layers > 0, rank > 0 "
				 "and at least one of the %d modules",
				 L, R, modules, TERN_MOD_COUNT);
	for (int m = 0; m < TERN_MOD_COUNT; m++) {
		if (((modules >> m) & 1u) && (io[m][0] <= 0 || io[m][1] <= 0))
			return tern_fail(TERN_E_INVALID,
					 "LoRA set: module %s has %" PRId64 " in and %" PRId64
					 " out features; both must be > 0",
					 mod_name[m], io[m][0], io[m][1]);
	}
	struct tern_lora_set *s = tern_calloc(1, sizeof *s);
	if (!s)
		return TERN_E_NOMEM;
	s->L = L;
	s->R = R;
	s->modules = modules;
	s->t = tern_calloc((size_t)L * TERN_LORA_SLOTS, sizeof *s->t);
	if (!s->t)
		goto nomem;
	for (int l = 0; l < L; l++) {
		for (int m = 0; m < TERN_MOD_COUNT; m++) {
			struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			t->I = io[m][0];
			t->O = io[m][1];
			t->r = R;
			if (!targeted(s, m))
				continue;
			if (!(t->A = alloc_f32(R, t->I)) || !(t->B = alloc_f32(t->O, R)))
				goto nomem;
			if (moments && (!(t->mA = alloc_f32(R, t->I)) || !(t->vA = alloc_f32(R, t->I)) ||
					!(t->mB = alloc_f32(t->O, R)) || !(t->vB = alloc_f32(t->O, R))))
				goto nomem;
		}
	}
	*out = s;
	return TERN_OK;
nomem:
	tern_lora_set_free(s);
	return TERN_E_NOMEM;
}

enum tern_status tern_lora_set_add_experts(struct tern_lora_set *s, unsigned experts, int64_t E, int64_t D,
					   int64_t Fe, const uint8_t *sparse, bool moments)
{
	if (!s || !experts || (experts >> 3) || E <= 0 || D <= 0 || Fe <= 0 || !sparse)
		return tern_fail(TERN_E_INVALID,
				 "LoRA set: bad experts 0x%x (E %" PRId64 ", D %" PRId64 ", Fe %" PRId64 ")",
				 experts, E, D, Fe);
	s->E = E;
	for (int k = 0; k < 3; k++) {
		if (!((experts >> k) & 1u))
			continue;
		int m = TERN_LORA_EXP_GATE_UP + k;
		s->modules |= 1u << m;
		for (int l = 0; l < s->L; l++) {
			struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			if (!sparse[l])
				continue;
			t->I = k == 1 ? Fe : D;
			t->O = k == 2 ? E : k ? D : 2 * Fe;
			t->r = k == 2 ? s->R : E * s->R;
			if (!(t->A = alloc_f32(t->r, t->I)) || !(t->B = alloc_f32(t->O, t->r)))
				return TERN_E_NOMEM; /* freed with the set */
			if (moments &&
			    (!(t->mA = alloc_f32(t->r, t->I)) || !(t->vA = alloc_f32(t->r, t->I)) ||
			     !(t->mB = alloc_f32(t->O, t->r)) || !(t->vB = alloc_f32(t->O, t->r))))
				return TERN_E_NOMEM;
		}
	}
	return TERN_OK;
}

enum tern_status tern_lora_set_add_full(struct tern_lora_set *s, unsigned full, int64_t V, int64_t D,
					bool moments)
{
	if (!s || (full >> TERN_FULL_COUNT) || V <= 0 || D <= 0)
		return tern_fail(TERN_E_INVALID,
				 "LoRA set: bad modules_to_save 0x%x [%" PRId64 ", %" PRId64 "]", full, V, D);
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		struct tern_full_tensor *t = &s->f[f];
		if (!((full >> f) & 1u) || ((s->full >> f) & 1u))
			continue;
		t->O = V;
		t->I = D;
		if (!(t->W = alloc_f32(V, D)) ||
		    (moments && (!(t->m = alloc_f32(V, D)) || !(t->v = alloc_f32(V, D)))))
			return TERN_E_NOMEM; /* freed with the set */
		s->full |= 1u << f;
	}
	return TERN_OK;
}

void tern_lora_set_free(struct tern_lora_set *s)
{
	if (!s)
		return;
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		free(s->f[f].W);
		free(s->f[f].m);
		free(s->f[f].v);
	}
	if (s->t) {
		for (int i = 0; i < s->L * TERN_LORA_SLOTS; i++) {
			struct tern_lora_tensor *t = &s->t[i];
			free(t->A);
			free(t->B);
			free(t->mA);
			free(t->vA);
			free(t->mB);
			free(t->vB);
		}
	}
	free(s->t);
	free(s);
}

/* The set is usable for writing or reading: every targeted tensor present (with moments when
 * asked). `what` names the caller in the message. */
static enum tern_status check_set(const struct tern_lora_set *s, bool moments, const char *what)
{
	if (!s || !s->t || s->L <= 0 || s->R <= 0 || !s->modules || (s->modules >> TERN_LORA_SLOTS))
		return tern_fail(TERN_E_INVALID, "%s: the LoRA set is empty or not allocated", what);
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		const struct tern_full_tensor *t = &s->f[f];
		if (((s->full >> f) & 1u) && (!t->W || (moments && (!t->m || !t->v))))
			return tern_fail(TERN_E_INVALID, "%s: %s (modules_to_save) is not allocated%s", what,
					 full_name[f], moments ? " with moments" : "");
	}
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_LORA_SLOTS; m++) {
			const struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			if (!present(s, l, m))
				continue;
			if (t->I <= 0 || t->O <= 0 || !t->A || !t->B)
				return tern_fail(TERN_E_INVALID, "%s: layer %d %s has no A/B tensors", what,
						 l, mod_name[m]);
			if (moments && (!t->mA || !t->vA || !t->mB || !t->vB))
				return tern_fail(
					TERN_E_INVALID,
					"%s: layer %d %s has no AdamW moments (allocate the set with "
					"moments)",
					what, l, mod_name[m]);
		}
	}
	return TERN_OK;
}

/* ---- tensor names and the kinds of tensors in a file ------------------------------------ */

/* One kind of tensor per (layer, module): lora_A or lora_B, and a name suffix. */
struct kind {
	char ab;            /* 'A' or 'B' */
	const char *suffix; /* "", ".exp_avg", ".exp_avg_sq" */
	size_t field;       /* which pointer of struct tern_lora_tensor */
};

#define FIELD(f) offsetof(struct tern_lora_tensor, f)
static const struct kind weight_kinds[] = {{'A', "", FIELD(A)}, {'B', "", FIELD(B)}};
static const struct kind moment_kinds[] = {{'A', ".exp_avg", FIELD(mA)},
					   {'A', ".exp_avg_sq", FIELD(vA)},
					   {'B', ".exp_avg", FIELD(mB)},
					   {'B', ".exp_avg_sq", FIELD(vB)}};
#define N_KINDS(k) (sizeof(k) / sizeof((k)[0]))

/* Experts: PEFT nests one ParamWrapper per targeted parameter in registration order (gate_up_proj,
 * then down_proj): with both, gate_up's tensors sit under "mlp.experts.base_layer". */
static void tensor_name(char *buf, const struct tern_lora_set *s, int l, int m, const struct kind *k)
{
	const char *path = m < TERN_MOD_COUNT      ? mod_path[m]
			   : m == TERN_LORA_ROUTER ? "mlp.gate"
			   : m == TERN_LORA_EXP_GATE_UP && targeted(s, TERN_LORA_EXP_DOWN)
				   ? "mlp.experts.base_layer"
				   : "mlp.experts";
	snprintf(buf, NAME_CAP, "base_model.model.model.layers.%d.%s.lora_%c.weight%s", l, path, k->ab,
		 k->suffix);
}

/* A module trained in full has one tensor per suffix: the kinds of lora_A stand for it. */
static void full_tensor_name(char *buf, int f, const struct kind *k)
{
	snprintf(buf, NAME_CAP, "base_model.model.%s.weight%s", full_path[f], k->suffix);
}

static float *full_ptr(const struct tern_full_tensor *t, const struct kind *k)
{
	return !k->suffix[0] ? t->W : !strcmp(k->suffix, ".exp_avg") ? t->m : t->v;
}

/* Slots of the found[] array of a file: per (layer, module, kind), then per (full module, kind). */
static size_t found_slots(const struct tern_lora_set *s, size_t nk)
{
	return ((size_t)s->L * TERN_LORA_SLOTS + TERN_FULL_COUNT) * nk;
}

static float *kind_ptr(const struct tern_lora_tensor *t, const struct kind *k)
{
	return *(float *const *)((const char *)t + k->field);
}

/* [rows, cols] of a kind: A [R, I], B [O, R]. */
static void kind_shape(const struct tern_lora_set *s, const struct tern_lora_tensor *t, const struct kind *k,
		       int64_t shape[2])
{
	int64_t r = t->r ? t->r : s->R;
	shape[0] = k->ab == 'A' ? r : t->O;
	shape[1] = k->ab == 'A' ? t->I : r;
}

/* ---- small helpers: paths, text buffers, files ------------------------------------------- */

static char *str_printf(const char *fmt, ...) TERN_PRINTF(1, 2);
static char *str_printf(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	char *p = n >= 0 ? tern_malloc((size_t)n + 1) : NULL;
	if (p) {
		va_start(ap, fmt);
		vsnprintf(p, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	return p;
}

/* dir without trailing slashes ("a/b/" -> "a/b"); "" and "/" are refused. */
static enum tern_status norm_dir(const char *dir, const char *what, char **out)
{
	size_t n = dir ? strlen(dir) : 0;
	*out = NULL;
	while (n > 1 && dir[n - 1] == '/')
		n--;
	if (!n || (n == 1 && dir[0] == '/'))
		return tern_fail(TERN_E_INVALID, "%s: \"%s\" is not a usable directory name", what,
				 dir ? dir : "");
	char *p = tern_malloc(n + 1);
	if (!p)
		return TERN_E_NOMEM;
	memcpy(p, dir, n);
	p[n] = 0;
	*out = p;
	return TERN_OK;
}

/* The directory holding path ("." when it has no slash). */
static char *parent_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return str_printf(".");
	if (slash == path)
		return str_printf("/");
	return str_printf("%.*s", (int)(slash - path), path);
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_CLOEXEC);
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

static bool exists(const char *path)
{
	struct stat sb;
	return !lstat(path, &sb);
}

/* A JSON file that did not load: "path: cannot read: ..." when it is missing or unreadable,
 * "path:LINE: what" when it does not parse. */
static enum tern_status json_fail(const char *path, const json_error_t *err)
{
	if (!exists(path))
		return tern_fail(TERN_E_IO, "%s: cannot read: %s", path, strerror(ENOENT));
	if (err->line < 1)
		return tern_fail(TERN_E_IO, "%s: %s", path, err->text);
	return tern_fail(TERN_E_FORMAT, "%s:%d: %s", path, err->line, err->text);
}

/* Removes a file or a directory tree (symbolic links are removed, never followed). */
static enum tern_status rm_rf(const char *path)
{
	struct stat sb;
	if (lstat(path, &sb))
		return errno == ENOENT ? TERN_OK : tern_fail(TERN_E_IO, "%s: %s", path, strerror(errno));
	if (S_ISDIR(sb.st_mode)) {
		DIR *d = opendir(path);
		if (!d)
			return tern_fail(TERN_E_IO, "%s: cannot open to remove: %s", path, strerror(errno));
		enum tern_status st = TERN_OK;
		struct dirent *e;
		while (!st && (e = readdir(d))) {
			if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
				continue;
			char *p = tern_path_join(path, e->d_name);
			st = p ? rm_rf(p) : TERN_E_NOMEM;
			free(p);
		}
		closedir(d);
		if (st)
			return st;
		if (rmdir(path))
			return tern_fail(TERN_E_IO, "%s: cannot remove: %s", path, strerror(errno));
		return TERN_OK;
	}
	if (unlink(path))
		return tern_fail(TERN_E_IO, "%s: cannot remove: %s", path, strerror(errno));
	return TERN_OK;
}

/* Writes text to path through "<path>.tmp.<pid>", fsync and rename. */
static enum tern_status write_text(const char *path, const char *text)
{
	char *tmp = str_printf("%s.tmp.%ld", path, (long)getpid());
	if (!tmp)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	int fd = fault() ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		st = tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
		goto out;
	}
	size_t n = strlen(text), done = 0;
	while (done < n) {
		ssize_t w = write(fd, text + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			st = tern_fail(TERN_E_IO, "%s: write failed: %s", tmp,
				       w < 0 ? strerror(errno) : "short write");
			break;
		}
		done += (size_t)w;
	}
	if (!st && fsync(fd))
		st = tern_fail(TERN_E_IO, "%s: fsync failed: %s", tmp, strerror(errno));
	if (close(fd) && !st)
		st = tern_fail(TERN_E_IO, "%s: close failed: %s", tmp, strerror(errno));
	if (!st && rename(tmp, path))
		st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(errno));
	if (st)
		unlink(tmp);
out:
	free(tmp);
	return st;
}

struct sbuf {
	char *p;
	size_t n, cap;
	bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
	if (b->oom)
		return;
	if (b->n + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 256;
		while (cap < b->n + n + 1)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
	memcpy(b->p + b->n, s, n);
	b->n += n;
	b->p[b->n] = 0;
}

static void sb_puts(struct sbuf *b, const char *s) { sb_add(b, s, strlen(s)); }

static void sb_printf(struct sbuf *b, const char *fmt, ...) TERN_PRINTF(2, 3);
static void sb_printf(struct sbuf *b, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n >= 0)
		sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* ---- JSON as Python's json.dumps(indent=2, sort_keys=True) writes it ---------------------- */

/* Python's repr(float): the shortest decimal that reads back to x; fixed notation for decimal
 * exponents -4..15 (always with a fractional part: "16.0"), else "1e-05" / "1.5e+300". */
static void py_float(char *out, size_t cap, double x)
{
	if (isnan(x) || isinf(x)) {
		snprintf(out, cap, "%s", isnan(x) ? "NaN" : x < 0 ? "-Infinity" : "Infinity");
		return;
	}
	char e[40];
	for (int p = 1; p <= 17; p++) {
		snprintf(e, sizeof e, "%.*e", p - 1, x);
		if (strtod(e, NULL) == x)
			break;
	}
	/* e = "-d.ddde+XX" */
	const char *q = e;
	bool neg = *q == '-';
	if (neg)
		q++;
	char dig[24];
	int nd = 0;
	for (; *q && *q != 'e'; q++) {
		if (*q != '.' && nd < 23)
			dig[nd++] = *q;
	}
	int exp10 = atoi(q + 1);
	while (nd > 1 && dig[nd - 1] == '0')
		nd--;
	dig[nd] = 0;
	struct sbuf b = {0};
	if (neg)
		sb_puts(&b, "-");
	if (exp10 < -4 || exp10 >= 16) {
		sb_add(&b, dig, 1);
		if (nd > 1) {
			sb_puts(&b, ".");
			sb_puts(&b, dig + 1);
		}
		sb_printf(&b, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
	} else if (exp10 >= 0) {
		for (int i = 0; i <= exp10; i++)
			sb_add(&b, i < nd ? &dig[i] : "0", 1);
		sb_puts(&b, ".");
		sb_puts(&b, nd > exp10 + 1 ? dig + exp10 + 1 : "0");
	} else {
		sb_puts(&b, "0.");
		for (int i = 0; i < -exp10 - 1; i++)
			sb_puts(&b, "0");
		sb_puts(&b, dig);
	}
	snprintf(out, cap, "%s", b.p ? b.p : "0.0");
	free(b.p);
}

/* A JSON string with Python's ensure_ascii escapes (input: valid UTF-8, as jansson keeps it). */
static void py_string(struct sbuf *b, const char *s)
{
	const unsigned char *u = (const unsigned char *)s;
	sb_puts(b, "\"");
	while (*u) {
		unsigned c = *u;
		int len = 1;
		if (c >= 0xf0) {
			c = (c & 0x07u) << 18 | (u[1] & 0x3fu) << 12 | (u[2] & 0x3fu) << 6 | (u[3] & 0x3fu);
			len = 4;
		} else if (c >= 0xe0) {
			c = (c & 0x0fu) << 12 | (u[1] & 0x3fu) << 6 | (u[2] & 0x3fu);
			len = 3;
		} else if (c >= 0xc0) {
			c = (c & 0x1fu) << 6 | (u[1] & 0x3fu);
			len = 2;
		}
		u += len;
		switch (c) {
		case '"': sb_puts(b, "\\\""); break;
		case '\\': sb_puts(b, "\\\\"); break;
		case '\n': sb_puts(b, "\\n"); break;
		case '\r': sb_puts(b, "\\r"); break;
		case '\t': sb_puts(b, "\\t"); break;
		case '\b': sb_puts(b, "\\b"); break;
		case '\f': sb_puts(b, "\\f"); break;
		default:
			if (c >= 0x20 && c < 0x7f) {
				char ch = (char)c;
				sb_add(b, &ch, 1);
			} else if (c > 0xffff) {
				c -= 0x10000;
				sb_printf(b, "\\u%04x\\u%04x", 0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
			} else {
				sb_printf(b, "\\u%04x", c);
			}
		}
	}
	sb_puts(b, "\"");
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void py_indent(struct sbuf *b, int depth)
{
	sb_puts(b, "\n");
	for (int i = 0; i < depth; i++)
		sb_puts(b, "  ");
}

static void py_dump(struct sbuf *b, json_t *v, int depth)
{
	char num[64];
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		size_t n = json_object_size(v), i = 0;
		if (!n) {
			sb_puts(b, "{}");
			break;
		}
		const char **keys = malloc(n * sizeof *keys);
		if (!keys) {
			b->oom = true;
			break;
		}
		const char *k;
		json_t *x;
		json_object_foreach(v, k, x) keys[i++] = k;
		qsort(keys, n, sizeof *keys, cmp_str);
		sb_puts(b, "{");
		for (i = 0; i < n; i++) {
			py_indent(b, depth + 1);
			py_string(b, keys[i]);
			sb_puts(b, ": ");
			py_dump(b, json_object_get(v, keys[i]), depth + 1);
			if (i + 1 < n)
				sb_puts(b, ",");
		}
		py_indent(b, depth);
		sb_puts(b, "}");
		free(keys);
		break;
	}
	case JSON_ARRAY: {
		size_t n = json_array_size(v);
		if (!n) {
			sb_puts(b, "[]");
			break;
		}
		sb_puts(b, "[");
		for (size_t i = 0; i < n; i++) {
			py_indent(b, depth + 1);
			py_dump(b, json_array_get(v, i), depth + 1);
			if (i + 1 < n)
				sb_puts(b, ",");
		}
		py_indent(b, depth);
		sb_puts(b, "]");
		break;
	}
	case JSON_STRING: py_string(b, json_string_value(v)); break;
	case JSON_INTEGER: sb_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v)); break;
	case JSON_REAL:
		py_float(num, sizeof num, json_real_value(v));
		sb_puts(b, num);
		break;
	case JSON_TRUE: sb_puts(b, "true"); break;
	case JSON_FALSE: sb_puts(b, "false"); break;
	case JSON_NULL: sb_puts(b, "null"); break;
	}
}

/* Dumps root and writes it (no trailing newline, as PEFT). Takes the reference to root. */
static enum tern_status write_json(const char *path, json_t *root)
{
	if (!root)
		return tern_fail(TERN_E_NOMEM, "%s: out of memory building JSON", path);
	struct sbuf b = {0};
	py_dump(&b, root, 0);
	json_decref(root);
	if (b.oom || !b.p) {
		free(b.p);
		return tern_fail(TERN_E_NOMEM, "%s: out of memory building JSON", path);
	}
	enum tern_status st = write_text(path, b.p);
	free(b.p);
	return st;
}

/* ---- writing ------------------------------------------------------------------------------ */

static int cmp_desc(const void *a, const void *b)
{
	return strcmp(((const struct tern_st_desc *)a)->name, ((const struct tern_st_desc *)b)->name);
}

/* Writes the kinds of tensors of every targeted (layer, module) as F32, sorted by name. */
/* The older per-expert module names of expert e's module k (0 gate, 1 up, 2 down). */
static void per_expert_name(char *buf, bool mixtral, int l, int64_t e, int k, char ab)
{
	static const char *const mix[3] = {"w1", "w3", "w2"}, *const q3[3] = {"gate_proj", "up_proj",
									      "down_proj"};
	snprintf(buf, NAME_CAP, "base_model.model.model.layers.%d.%s.experts.%lld.%s.lora_%c.weight", l,
		 mixtral ? "block_sparse_moe" : "mlp", (long long)e, mixtral ? mix[k] : q3[k], ab);
}

static enum tern_status write_tensors(const char *path, const struct tern_lora_set *s,
				      const struct kind *kinds, size_t nk,
				      const struct tern_adapter_meta *meta)
{
	bool pe = meta && meta->per_expert && (s->modules >> TERN_MOD_COUNT);
	bool mixtral = pe && meta->model_type && !strcmp(meta->model_type, "mixtral");
	float *pool = NULL; /* per-expert B matrices, de-interleaved */
	if (fault())
		return tern_fail(TERN_E_IO, "%s: %s", path, strerror(errno));
	size_t n = 0;
	size_t npool = 0;
	for (int l = 0; l < s->L; l++)
		for (int m = 0; m < TERN_LORA_SLOTS; m++) {
			const struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			if (!present(s, l, m))
				continue;
			if (!pe || m < TERN_MOD_COUNT || m == TERN_LORA_ROUTER) {
				n += nk;
				continue;
			}
			int mods = m == TERN_LORA_EXP_GATE_UP ? 2 : 1; /* gate and up, or down */
			n += (size_t)(s->E * mods * 2);
			npool += (size_t)(t->O * t->r);
		}
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		for (size_t k = 0; k < nk; k++)
			n += ((s->full >> f) & 1u) && kinds[k].ab == 'A';
	struct tern_st_desc *d = tern_calloc(n, sizeof *d);
	char(*names)[NAME_CAP] = tern_calloc(n, NAME_CAP);
	enum tern_status st = TERN_E_NOMEM;
	if (!d || !names || (npool && !(pool = tern_malloc(npool * sizeof *pool))))
		goto out;
	size_t used = 0;
	size_t i = 0;
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_LORA_SLOTS; m++) {
			if (!present(s, l, m))
				continue;
			const struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			if (pe && m >= TERN_MOD_COUNT && m != TERN_LORA_ROUTER) {
				/* expert e: A_e = rows e·R of A; B_e[o, j] = B[o, j·E + e], split into gate
				 * and up rows for gate_up */
				int64_t R = s->R, E = s->E, O = t->O;
				for (int64_t e = 0; e < E; e++) {
					float *b = pool + used;
					for (int64_t o = 0; o < O; o++)
						for (int64_t j = 0; j < R; j++)
							b[o * R + j] = t->B[o * R * E + j * E + e];
					used += (size_t)(O * R);
					int mods = m == TERN_LORA_EXP_GATE_UP ? 2 : 1;
					for (int q = 0; q < mods; q++) {
						int k = m == TERN_LORA_EXP_GATE_UP ? q : 2;
						int64_t Oq = O / mods;
						per_expert_name(names[i], mixtral, l, e, k, 'A');
						d[i] = (struct tern_st_desc){.name = names[i],
									     .dtype = TERN_ST_F32,
									     .ndim = 2,
									     .shape = {R, t->I},
									     .data = t->A + e * R * t->I};
						i++;
						per_expert_name(names[i], mixtral, l, e, k, 'B');
						d[i] = (struct tern_st_desc){.name = names[i],
									     .dtype = TERN_ST_F32,
									     .ndim = 2,
									     .shape = {Oq, R},
									     .data = b + q * Oq * R};
						i++;
					}
				}
				continue;
			}
			for (size_t k = 0; k < nk; k++, i++) {
				tensor_name(names[i], s, l, m, &kinds[k]);
				d[i].name = names[i];
				d[i].dtype = TERN_ST_F32;
				d[i].ndim = 2;
				kind_shape(s, t, &kinds[k], d[i].shape);
				d[i].data = kind_ptr(t, &kinds[k]);
			}
		}
	}
	for (int f = 0; f < TERN_FULL_COUNT; f++) {
		if (!((s->full >> f) & 1u))
			continue;
		for (size_t k = 0; k < nk; k++) {
			if (kinds[k].ab != 'A')
				continue;
			full_tensor_name(names[i], f, &kinds[k]);
			d[i].name = names[i];
			d[i].dtype = TERN_ST_F32;
			d[i].ndim = 2;
			d[i].shape[0] = s->f[f].O;
			d[i].shape[1] = s->f[f].I;
			d[i].data = full_ptr(&s->f[f], &kinds[k]);
			i++;
		}
	}
	qsort(d, n, sizeof *d, cmp_desc);
	st = tern_st_write(path, d, n, NULL, 0);
out:
	free(pool);
	free(d);
	free(names);
	return st;
}

static json_t *adapter_config_json(const struct tern_lora_set *s, const struct tern_adapter_meta *meta)
{
	json_t *mods = json_array();
	for (int m = 0; m < TERN_MOD_COUNT; m++) {
		if (targeted(s, m))
			json_array_append_new(mods, json_string(mod_name[m]));
	}
	bool pe = meta->per_expert && (s->modules >> TERN_MOD_COUNT);
	if (pe) { /* the per-expert modules (older layout) join target_modules */
		bool mix = meta->model_type && !strcmp(meta->model_type, "mixtral");
		static const char *const mn[2][3] = {{"gate_proj", "up_proj", "down_proj"},
						     {"w1", "w3", "w2"}};
		for (int k = 0; k < 3; k++)
			if (targeted(s, k < 2 ? TERN_LORA_EXP_GATE_UP : TERN_LORA_EXP_DOWN) &&
			    !(!mix && targeted(s, TERN_MOD_GATE + k)))
				json_array_append_new(mods, json_string(mn[mix][k]));
	}
	double a = meta->alpha;
	json_t *alpha =
		a == floor(a) && fabs(a) < 9007199254740992.0 ? json_integer((json_int_t)a) : json_real(a);
	json_t *base = meta->base_model ? json_string(meta->base_model) : json_null();
	if (!base || !alpha || !mods) {
		json_decref(base);
		json_decref(alpha);
		json_decref(mods);
		return NULL;
	}
	/* json_pack steals the "o" references; keys as PEFT 0.21.2 writes them for a LoraConfig */
	json_t *root = json_pack(
		"{s:n, s:{}, s:n, s:n, s:o, s:s, s:n, s:b, s:n, s:n, s:b, s:b, s:b, s:n, s:n, s:n, "
		"s:n, s:{}, s:o, s:b, s:f, s:n, s:n, s:s, s:n, s:n, s:s, s:s, s:i, s:I, s:{}, s:n, "
		"s:o, s:n, s:s, s:n, s:n, s:b, s:b, s:b, s:n}",
		"alora_invocation_tokens", "alpha_pattern", "arrow_config", "auto_mapping",
		"base_model_name_or_path", base, "bias", "none", "corda_config", "ensure_weight_tying", 0,
		"eva_config", "exclude_modules", "fan_in_fan_out", 0, "inference_mode", 1,
		"init_lora_weights", 1, "kasa_config", "layer_replication", "layers_pattern",
		"layers_to_transform", "loftq_config", "lora_alpha", alpha, "lora_bias", 0, "lora_dropout",
		meta->dropout, "lora_ga_config", "megatron_config", "megatron_core", "megatron.core",
		"modules_to_save", "monteclora_config", "peft_type", "LORA", "peft_version", PEFT_VERSION,
		"qalora_group_size", 16, "r", (json_int_t)s->R, "rank_pattern", "revision", "target_modules",
		mods, "target_parameters", "task_type", "CAUSAL_LM", "trainable_token_indices", "use_bdlora",
		"use_dora", 0, "use_qalora", 0, "use_rslora", (int)meta->rslora, "velora_config");
	if (root && !pe && (s->modules >> TERN_MOD_COUNT)) { /* sorted, as PEFT writes them */
		json_t *tp = json_array();
		if (targeted(s, TERN_LORA_EXP_DOWN))
			json_array_append_new(tp, json_string(mod_name[TERN_LORA_EXP_DOWN]));
		if (targeted(s, TERN_LORA_EXP_GATE_UP))
			json_array_append_new(tp, json_string(mod_name[TERN_LORA_EXP_GATE_UP]));
		if (targeted(s, TERN_LORA_ROUTER))
			json_array_append_new(tp, json_string(mod_name[TERN_LORA_ROUTER]));
		if (!tp || json_object_set_new(root, "target_parameters", tp)) {
			json_decref(root);
			return NULL;
		}
	}
	if (root && s->full) {
		json_t *save = json_array();
		for (int f = 0; f < TERN_FULL_COUNT; f++)
			if ((s->full >> f) & 1u)
				json_array_append_new(save, json_string(full_name[f]));
		if (!save || json_object_set_new(root, "modules_to_save", save)) {
			json_decref(root);
			return NULL;
		}
	}
	return root;
}

static enum tern_status check_meta(const struct tern_adapter_meta *meta, const char *what)
{
	if (!meta)
		return tern_fail(TERN_E_INVALID, "%s: no adapter metadata", what);
	if (!isfinite(meta->alpha) || meta->alpha <= 0)
		return tern_fail(TERN_E_INVALID, "%s: lora_alpha %g must be a finite number > 0", what,
				 meta->alpha);
	if (!(meta->dropout >= 0 && meta->dropout < 1))
		return tern_fail(TERN_E_INVALID, "%s: lora_dropout %g must be in [0, 1)", what,
				 meta->dropout);
	return TERN_OK;
}

/* adapter_config.json and adapter_model.safetensors into an existing directory. */
static enum tern_status write_adapter_files(const char *dir, const struct tern_lora_set *s,
					    const struct tern_adapter_meta *meta)
{
	for (int f = 0; f < TERN_FULL_COUNT; f++)
		if (((s->full & ~s->full_have) >> f) & 1u)
			return tern_fail(TERN_E_INVALID, "%s: %s (modules_to_save) holds no values to write",
					 dir, full_name[f]);
	char *st_path = tern_path_join(dir, "adapter_model.safetensors");
	char *cfg_path = tern_path_join(dir, "adapter_config.json");
	enum tern_status st = TERN_E_NOMEM;
	if (st_path && cfg_path) {
		st = write_tensors(st_path, s, weight_kinds, N_KINDS(weight_kinds), meta);
		if (!st)
			st = write_json(cfg_path, adapter_config_json(s, meta));
	}
	free(st_path);
	free(cfg_path);
	return st;
}

/* Creates a fresh "<final>.tmp.<pid>" (removing a stale one of that name). */
static enum tern_status make_tmp_dir(const char *final, char **out)
{
	char *tmp = str_printf("%s.tmp.%ld", final, (long)getpid());
	*out = tmp;
	if (!tmp)
		return TERN_E_NOMEM;
	enum tern_status st = rm_rf(tmp);
	if (st)
		return st;
	if (fault() || mkdir(tmp, 0755))
		return tern_fail(TERN_E_IO, "%s: cannot create: %s", tmp, strerror(errno));
	return TERN_OK;
}

/* Renames the finished directory tmp to final, replacing an existing final directory: it is
 * moved aside to "<final>.old.<pid>", tmp renamed in, then the old one removed. On failure the
 * old directory is back under its name (tmp is left for the caller to remove). */
static enum tern_status commit_dir(const char *tmp, const char *final)
{
	enum tern_status st = TERN_OK;
	char *old = NULL, *parent = parent_of(final);
	if (!parent)
		return TERN_E_NOMEM;
	fsync_dir(tmp);
	struct stat sb;
	if (lstat(final, &sb)) {
		if (errno != ENOENT) {
			st = tern_fail(TERN_E_IO, "%s: %s", final, strerror(errno));
		} else if (fault() || rename(tmp, final)) {
			st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", final, tmp,
				       strerror(errno));
		}
		goto out;
	}
	if (!S_ISDIR(sb.st_mode)) {
		st = tern_fail(TERN_E_IO,
			       "%s: exists and is not a directory; remove it or choose another path", final);
		goto out;
	}
	old = str_printf("%s.old.%ld", final, (long)getpid());
	if (!old) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = rm_rf(old)))
		goto out;
	if (fault() || rename(final, old)) {
		st = tern_fail(TERN_E_IO, "%s: cannot move the existing directory aside to %s: %s", final,
			       old, strerror(errno));
		goto out;
	}
	if (fault() || rename(tmp, final)) {
		int err = errno;
		if (rename(old, final))
			st = tern_fail(TERN_E_IO,
				       "%s: cannot rename %s into place: %s (the previous one is at %s)",
				       final, tmp, strerror(err), old);
		else
			st = tern_fail(TERN_E_IO, "%s: cannot rename %s into place: %s", final, tmp,
				       strerror(err));
		goto out;
	}
	fsync_dir(parent);
	if (rm_rf(old))
		tern_log(TERN_LOG_WARN, "%s", tern_error());
out:
	if (!st)
		fsync_dir(parent);
	free(old);
	free(parent);
	return st;
}

/* Whether dir holds anything besides the files of a PEFT adapter (then it is not replaced). */
static bool has_foreign_entries(const char *dir)
{
	static const char *const own[] = {".", "..", "adapter_config.json", "adapter_model.safetensors",
					  "README.md"};
	DIR *d = opendir(dir);
	if (!d)
		return false;
	bool foreign = false;
	struct dirent *e;
	while (!foreign && (e = readdir(d))) {
		foreign = true;
		for (size_t i = 0; i < sizeof own / sizeof own[0]; i++)
			foreign = foreign && strcmp(e->d_name, own[i]) != 0;
	}
	closedir(d);
	return foreign;
}

enum tern_status tern_adapter_write(const char *dir, const struct tern_lora_set *s,
				    const struct tern_adapter_meta *meta)
{
	fault_n = 0;
	enum tern_status st;
	if ((st = check_set(s, false, dir ? dir : "adapter")) ||
	    (st = check_meta(meta, dir ? dir : "adapter")))
		return st;
	char *final = NULL, *tmp = NULL;
	if ((st = norm_dir(dir, "adapter", &final)))
		return st;
	struct stat sb;
	if (!lstat(final, &sb) && S_ISDIR(sb.st_mode) && has_foreign_entries(final)) {
		/* e.g. an output_dir that also holds checkpoints: replace the two files, keep the rest */
		st = write_adapter_files(final, s, meta);
		if (!st)
			fsync_dir(final);
		goto out;
	}
	if ((st = make_tmp_dir(final, &tmp)) || (st = write_adapter_files(tmp, s, meta)) ||
	    (st = commit_dir(tmp, final)))
		goto out;
out:
	if (st && tmp) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		rm_rf(tmp);
		tern_fail(st, "%s", msg);
	}
	free(tmp);
	free(final);
	return st;
}

/* ---- reading ------------------------------------------------------------------------------ */

static void set_modules_str(char *buf, size_t cap, unsigned modules)
{
	size_t n = 0;
	buf[0] = 0;
	for (int m = 0; m < TERN_MOD_COUNT; m++) {
		if ((modules >> m) & 1u)
			n += (size_t)snprintf(buf + n, n < cap ? cap - n : 0, "%s%s", n ? ", " : "",
					      mod_name[m]);
	}
}

/* Validates adapter_config.json against s; alpha, dropout, rslora into *meta. */
/* Reading an adapter in the older per-expert module layout (tern_adapter_read): its expert module
 * names are skipped in target_modules and its per-expert tensors in the tensor check; the experts
 * are read by read_per_expert. File-local, set only for the duration of one read. */
static bool g_per_expert;

static bool per_expert_module(const char *name)
{
	static const char *const n[] = {"w1", "w2", "w3", "gate_proj", "up_proj", "down_proj"};
	for (int i = 0; i < 6; i++)
		if (!strcmp(name, n[i]))
			return true;
	return false;
}

static enum tern_status read_config(const char *dir, const struct tern_lora_set *s,
				    struct tern_adapter_meta *meta, unsigned *full_out)
{
	*full_out = 0;
	char *path = tern_path_join(dir, "adapter_config.json");
	if (!path)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	json_error_t err;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err), *v;
	char want[128], have[512];
	if (!root) {
		st = json_fail(path, &err);
		goto out;
	}
	if (!json_is_object(root)) {
		st = tern_fail(TERN_E_FORMAT, "%s: not a JSON object", path);
		goto out;
	}
	v = json_object_get(root, "peft_type");
	if (!json_is_string(v) || strcmp(json_string_value(v), "LORA")) {
		st = tern_fail(TERN_E_UNSUPPORTED, "%s: peft_type is %s; tern reads only LORA adapters", path,
			       json_is_string(v) ? json_string_value(v) : "missing or not a string");
		goto out;
	}
	v = json_object_get(root, "r");
	if (!json_is_integer(v) || json_integer_value(v) != s->R) {
		if (json_is_integer(v))
			st = tern_fail(TERN_E_INVALID,
				       "%s: r is %" JSON_INTEGER_FORMAT " but the run uses rank %" PRId64
				       " (set lora_r: %" JSON_INTEGER_FORMAT
				       " to continue from this adapter)",
				       path, json_integer_value(v), s->R, json_integer_value(v));
		else
			st = tern_fail(TERN_E_FORMAT, "%s: r is missing or not an integer", path);
		goto out;
	}
	v = json_object_get(root, "target_modules");
	set_modules_str(want, sizeof want, s->modules);
	if (json_is_string(v)) {
		st = tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: target_modules is the regular expression \"%s\"; tern needs a list of module "
			"names (expected [%s])",
			path, json_string_value(v), want);
		goto out;
	}
	if (!json_is_array(v)) {
		st = tern_fail(TERN_E_FORMAT, "%s: target_modules is missing or not a list (expected [%s])",
			       path, want);
		goto out;
	}
	unsigned mods = 0;
	size_t i, hn = 0;
	json_t *x;
	have[0] = 0;
	json_array_foreach(v, i, x)
	{
		enum tern_module m;
		if (g_per_expert && json_is_string(x) && per_expert_module(json_string_value(x)))
			continue;
		if (!json_is_string(x) || !tern_module_parse(json_string_value(x), &m)) {
			st = tern_fail(
				TERN_E_UNSUPPORTED,
				"%s: target_modules has %s, which tern cannot train (it trains q_proj, k_proj, "
				"v_proj, o_proj, gate_proj, up_proj, down_proj)",
				path, json_is_string(x) ? json_string_value(x) : "a non-string");
			goto out;
		}
		mods |= 1u << m;
		hn += (size_t)snprintf(have + hn, hn < sizeof have ? sizeof have - hn : 0, "%s%s",
				       i ? ", " : "", json_string_value(x));
	}
	if (mods != (s->modules & ((1u << TERN_MOD_COUNT) - 1))) {
		st = tern_fail(
			TERN_E_INVALID,
			"%s: target_modules is [%s] but the run targets [%s] (set lora_target_modules to "
			"match the adapter)",
			path, have, want);
		goto out;
	}
	v = json_object_get(root, "target_parameters");
	unsigned params = 0;
	if (v && !json_is_null(v) && !json_is_array(v)) {
		st = tern_fail(TERN_E_FORMAT, "%s: target_parameters is not a list or null", path);
		goto out;
	}
	json_array_foreach(v, i, x)
	{
		const char *ps = json_is_string(x) ? json_string_value(x) : "";
		unsigned bit = tern_expert_param_bit(ps);
		if (!bit) {
			st = tern_fail(TERN_E_UNSUPPORTED,
				       "%s: target_parameters has %s, which tern cannot train (it trains "
				       "mlp.experts.gate_up_proj, mlp.experts.down_proj, mlp.gate.weight)",
				       path, json_is_string(x) ? ps : "a non-string");
			goto out;
		}
		params |= bit << TERN_MOD_COUNT;
	}
	if (!g_per_expert && params != (s->modules & ~((1u << TERN_MOD_COUNT) - 1))) {
		st = tern_fail(TERN_E_INVALID,
			       "%s: target_parameters differs from the run's lora_target_parameters (set "
			       "lora_target_parameters to match the adapter)",
			       path);
		goto out;
	}
	v = json_object_get(root, "lora_alpha");
	if (!json_is_number(v) || !(json_number_value(v) > 0)) {
		st = tern_fail(TERN_E_FORMAT, "%s: lora_alpha is missing or not a number > 0", path);
		goto out;
	}
	meta->alpha = json_number_value(v);
	v = json_object_get(root, "lora_dropout");
	meta->dropout = json_is_number(v) ? json_number_value(v) : 0.0;
	if (v && !json_is_null(v) && (!json_is_number(v) || !(meta->dropout >= 0 && meta->dropout < 1))) {
		st = tern_fail(TERN_E_FORMAT, "%s: lora_dropout must be a number in [0, 1)", path);
		goto out;
	}
	v = json_object_get(root, "use_rslora");
	if (v && !json_is_boolean(v) && !json_is_null(v)) {
		st = tern_fail(TERN_E_FORMAT, "%s: use_rslora must be true or false", path);
		goto out;
	}
	meta->rslora = json_is_true(v);
	v = json_object_get(root, "modules_to_save");
	if (v && !json_is_null(v)) {
		if (!json_is_array(v)) {
			st = tern_fail(TERN_E_FORMAT, "%s: modules_to_save is not a list or null", path);
			goto out;
		}
		json_t *xs;
		json_array_foreach(v, i, xs)
		{
			enum tern_full f;
			if (!json_is_string(xs) || !tern_full_parse(json_string_value(xs), &f)) {
				st = tern_fail(
					TERN_E_UNSUPPORTED,
					"%s: modules_to_save has %s, which tern cannot train in full (it "
					"trains embed_tokens and lm_head)",
					path, json_is_string(xs) ? json_string_value(xs) : "a non-string");
				goto out;
			}
			if (!((s->full >> f) & 1u)) {
				st = tern_fail(
					TERN_E_INVALID,
					"%s: modules_to_save has %s but the run does not train it (add it "
					"to lora_modules_to_save)",
					path, full_name[f]);
				goto out;
			}
			*full_out |= 1u << f;
		}
	}
	/* options that change the shapes or the math tern implements */
	const char *bad = json_is_true(json_object_get(root, "use_dora"))            ? "use_dora: true"
			  : json_is_true(json_object_get(root, "fan_in_fan_out"))    ? "fan_in_fan_out: true"
			  : json_object_size(json_object_get(root, "rank_pattern"))  ? "a rank_pattern"
			  : json_object_size(json_object_get(root, "alpha_pattern")) ? "an alpha_pattern"
			  : !json_is_null(json_object_get(root, "layers_to_transform")) &&
					  json_object_get(root, "layers_to_transform")
				  ? "layers_to_transform"
			  : json_is_string(json_object_get(root, "bias")) &&
					  strcmp(json_string_value(json_object_get(root, "bias")), "none")
				  ? "bias other than \"none\""
				  : NULL;
	if (bad)
		st = tern_fail(TERN_E_UNSUPPORTED, "%s: the adapter uses %s, which tern does not support",
			       path, bad);
out:
	json_decref(root);
	free(path);
	return st;
}

/* Checks that file f (at path) holds exactly the kinds of tensors s expects, 2-D with the right
 * shapes and an accepted dtype; found[(l * TERN_LORA_SLOTS + m) * nk + k] receives each. */
static enum tern_status check_tensors(const struct tern_st_file *f, const char *path,
				      const struct tern_lora_set *s, const struct kind *kinds, size_t nk,
				      bool f32_only, unsigned fullbits, const struct tern_st_tensor **found)
{
	char name[NAME_CAP];
	size_t expected = 0;
	size_t fbase = (size_t)s->L * TERN_LORA_SLOTS * nk;
	for (int fm = 0; fm < TERN_FULL_COUNT; fm++) {
		if (!((fullbits >> fm) & 1u))
			continue;
		for (size_t k = 0; k < nk; k++) {
			if (kinds[k].ab != 'A')
				continue;
			full_tensor_name(name, fm, &kinds[k]);
			const struct tern_st_tensor *t = tern_st_file_find(f, name);
			if (!t)
				return tern_fail(TERN_E_FORMAT,
						 "%s: tensor %s is missing (modules_to_save has %s)", path,
						 name, full_name[fm]);
			if (t->dtype != TERN_ST_F32 &&
			    (f32_only || (t->dtype != TERN_ST_F16 && t->dtype != TERN_ST_BF16)))
				return tern_fail(TERN_E_FORMAT, "%s: tensor %s has dtype %s; expected %s",
						 path, name, tern_st_dtype_name(t->dtype),
						 f32_only ? "F32" : "F32, F16 or BF16");
			if (t->ndim != 2 || t->shape[0] != s->f[fm].O || t->shape[1] != s->f[fm].I)
				return tern_fail(TERN_E_FORMAT,
						 "%s: tensor %s is not [%" PRId64 ", %" PRId64
						 "] (the base model's vocabulary and hidden size)",
						 path, name, s->f[fm].O, s->f[fm].I);
			found[fbase + (size_t)fm * nk + k] = t;
			expected++;
		}
	}
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_LORA_SLOTS; m++) {
			if (!present(s, l, m))
				continue;
			const struct tern_lora_tensor *lt = tern_lora_at(s, l, (enum tern_module)m);
			for (size_t k = 0; k < nk; k++) {
				tensor_name(name, s, l, m, &kinds[k]);
				const struct tern_st_tensor *t = tern_st_file_find(f, name);
				if (!t)
					return tern_fail(TERN_E_FORMAT, "%s: tensor %s is missing", path,
							 name);
				if (t->dtype != TERN_ST_F32 &&
				    (f32_only || (t->dtype != TERN_ST_F16 && t->dtype != TERN_ST_BF16)))
					return tern_fail(TERN_E_FORMAT,
							 "%s: tensor %s has dtype %s; expected %s", path,
							 name, tern_st_dtype_name(t->dtype),
							 f32_only ? "F32" : "F32, F16 or BF16");
				int64_t shape[2];
				kind_shape(s, lt, &kinds[k], shape);
				if (t->ndim != 2 || t->shape[0] != shape[0] || t->shape[1] != shape[1]) {
					char got[128];
					size_t n = (size_t)snprintf(got, sizeof got, "[");
					for (int d = 0; d < t->ndim && n < sizeof got; d++)
						n += (size_t)snprintf(got + n, sizeof got - n, "%s%" PRId64,
								      d ? ", " : "", t->shape[d]);
					if (n < sizeof got)
						snprintf(got + n, sizeof got - n, "]");
					return tern_fail(
						TERN_E_FORMAT,
						"%s: tensor %s has shape %s; expected [%" PRId64 ", %" PRId64
						"] (rank %" PRId64 ", the base model's %s)",
						path, name, got, shape[0], shape[1], s->R, mod_name[m]);
				}
				found[(size_t)(l * TERN_LORA_SLOTS + m) * nk + k] = t;
				expected++;
			}
		}
	}
	size_t n = tern_st_file_count(f), slots = found_slots(s, nk);
	if (n == expected)
		return TERN_OK;
	for (size_t i = 0; i < n; i++) {
		const struct tern_st_tensor *t = tern_st_file_tensor(f, i);
		bool ok = g_per_expert && strstr(t->name, ".experts.");
		for (size_t j = 0; j < slots && !ok; j++)
			ok = found[j] == t;
		if (!ok) {
			set_modules_str(name, sizeof name, s->modules);
			return tern_fail(TERN_E_FORMAT,
					 "%s: unexpected tensor %s (the run has %d layers, rank %" PRId64
					 ", modules [%s])",
					 path, t->name, s->L, s->R, name);
		}
	}
	return TERN_OK;
}

static void load_f32(float *dst, const struct tern_st_tensor *t)
{
	const unsigned char *src = t->data;
	if (t->dtype == TERN_ST_F32) {
		memcpy(dst, src, t->nbytes);
		return;
	}
	for (int64_t i = 0; i < t->numel; i++) {
		uint16_t h;
		memcpy(&h, src + 2 * i, 2);
		dst[i] = t->dtype == TERN_ST_F16 ? tern_f16_to_f32(h) : tern_bf16_to_f32(h);
	}
}

static void load_tensors(struct tern_lora_set *s, const struct kind *kinds, size_t nk,
			 const struct tern_st_tensor **found)
{
	size_t fbase = (size_t)s->L * TERN_LORA_SLOTS * nk;
	for (int fm = 0; fm < TERN_FULL_COUNT; fm++)
		for (size_t k = 0; k < nk; k++) {
			const struct tern_st_tensor *t = found[fbase + (size_t)fm * nk + k];
			if (!t)
				continue;
			load_f32(full_ptr(&s->f[fm], &kinds[k]), t);
			if (!kinds[k].suffix[0])
				s->full_have |= 1u << fm;
		}
	for (int l = 0; l < s->L; l++) {
		for (int m = 0; m < TERN_LORA_SLOTS; m++) {
			if (!present(s, l, m))
				continue;
			const struct tern_lora_tensor *lt = tern_lora_at(s, l, (enum tern_module)m);
			for (size_t k = 0; k < nk; k++) {
				const struct tern_st_tensor *t =
					found[(size_t)(l * TERN_LORA_SLOTS + m) * nk + k];
				load_f32(kind_ptr(lt, &kinds[k]), t);
			}
		}
	}
}

/* An opened, validated tensor file of a directory. */
struct src {
	char *path;
	struct tern_st_file *f;
	const struct tern_st_tensor **found;
};

static enum tern_status src_open(struct src *x, const char *dir, const char *file,
				 const struct tern_lora_set *s, const struct kind *kinds, size_t nk,
				 bool f32_only, unsigned fullbits)
{
	x->path = tern_path_join(dir, file);
	x->found = tern_calloc(found_slots(s, nk), sizeof *x->found);
	if (!x->path || !x->found)
		return TERN_E_NOMEM;
	enum tern_status st = tern_st_open(x->path, &x->f);
	if (st)
		return st;
	return check_tensors(x->f, x->path, s, kinds, nk, f32_only, fullbits, x->found);
}

static void src_close(struct src *x)
{
	tern_st_close(x->f);
	free(x->found);
	free(x->path);
}

/* Whether dir's adapter holds s's experts in the older per-expert module layout: s trains experts,
 * adapter_config.json has no target_parameters and its tensors have a per-expert name; *mixtral:
 * Mixtral's names (block_sparse_moe.experts.<e>.w1) rather than Qwen3-MoE's. */
static bool is_per_expert(const char *dir, const struct tern_lora_set *s, bool *mixtral)
{
	if (!(s->modules >> TERN_MOD_COUNT))
		return false;
	char *path = tern_path_join(dir, "adapter_model.safetensors");
	struct tern_st_file *f = NULL;
	bool pe = false;
	if (path && tern_st_open(path, &f) == TERN_OK) {
		for (size_t i = 0; i < tern_st_file_count(f) && !pe; i++) {
			const char *nm = tern_st_file_tensor(f, i)->name;
			*mixtral = strstr(nm, ".block_sparse_moe.experts.") != NULL;
			pe = *mixtral || (strstr(nm, ".mlp.experts.") && !strstr(nm, ".mlp.experts.lora_") &&
					  !strstr(nm, ".mlp.experts.base_layer."));
		}
		tern_st_close(f);
	}
	free(path);
	return pe;
}

/* The experts of s from the per-expert layout (validated first, then stored): per sparse layer
 * and expert, gate/up (w1/w3) must carry the same A (their fused gate_up has one), which becomes
 * A_e; their B rows and down's (w2) B are interleaved into PEFT's [O, R·E]. */
static enum tern_status read_per_expert(const char *dir, struct tern_lora_set *s, bool mixtral, bool store)
{
	char *path = tern_path_join(dir, "adapter_model.safetensors");
	struct tern_st_file *f = NULL;
	enum tern_status st = path ? tern_st_open(path, &f) : TERN_E_NOMEM;
	float *a0 = NULL, *a1 = NULL, *b = NULL;
	for (int l = 0; l < s->L && st == TERN_OK; l++)
		for (int slot = 0; slot < 2 && st == TERN_OK; slot++) {
			int m = TERN_LORA_EXP_GATE_UP + slot;
			if (!present(s, l, m))
				continue;
			struct tern_lora_tensor *t = tern_lora_at(s, l, (enum tern_module)m);
			int64_t R = s->R, E = s->E, I = t->I, O = t->O, nmod = slot ? 1 : 2, Oq = O / nmod;
			free(a0), free(a1), free(b);
			a0 = tern_malloc((size_t)(R * I) * 4), a1 = tern_malloc((size_t)(R * I) * 4);
			b = tern_malloc((size_t)(Oq * R) * 4);
			if (!a0 || !a1 || !b) {
				st = TERN_E_NOMEM;
				break;
			}
			for (int64_t e = 0; e < E && st == TERN_OK; e++)
				for (int q = 0; q < nmod && st == TERN_OK; q++) {
					int k = slot ? 2 : q;
					char na[NAME_CAP], nb[NAME_CAP];
					per_expert_name(na, mixtral, l, e, k, 'A');
					per_expert_name(nb, mixtral, l, e, k, 'B');
					const struct tern_st_tensor *ta = tern_st_file_find(f, na),
								    *tb = tern_st_file_find(f, nb);
					const struct tern_st_tensor *tt[2] = {ta, tb};
					int64_t want[2][2] = {{R, I}, {Oq, R}};
					for (int z = 0; z < 2 && st == TERN_OK; z++) {
						const struct tern_st_tensor *x = tt[z];
						if (!x)
							st = tern_fail(TERN_E_FORMAT,
								       "%s: tensor %s is missing", path,
								       z ? nb : na);
						else if ((x->dtype != TERN_ST_F32 &&
							  x->dtype != TERN_ST_F16 &&
							  x->dtype != TERN_ST_BF16) ||
							 x->ndim != 2 || x->shape[0] != want[z][0] ||
							 x->shape[1] != want[z][1])
							st = tern_fail(
								TERN_E_FORMAT,
								"%s: tensor %s is not F32/F16/BF16 [%" PRId64
								", %" PRId64 "]",
								path, x->name, want[z][0], want[z][1]);
					}
					if (st)
						break;
					load_f32(q ? a1 : a0, ta);
					if (q && memcmp(a0, a1, (size_t)(R * I) * 4)) {
						st = tern_fail(
							TERN_E_UNSUPPORTED,
							"%s: expert %lld of layer %d: the gate and up modules have "
							"different lora_A; tern trains experts as PEFT's fused "
							"gate_up_proj (one A per expert) and cannot read this adapter "
							"exactly",
							path, (long long)e, l);
						break;
					}
					if (!store)
						continue;
					load_f32(b, tb);
					if (!q)
						memcpy(t->A + e * R * I, a0, (size_t)(R * I) * 4);
					for (int64_t o = 0; o < Oq; o++)
						for (int64_t j = 0; j < R; j++)
							t->B[(q * Oq + o) * R * E + j * E + e] = b[o * R + j];
				}
		}
	free(a0);
	free(a1);
	free(b);
	tern_st_close(f);
	free(path);
	return st;
}

enum tern_status tern_adapter_read(const char *dir, struct tern_lora_set *s,
				   struct tern_adapter_meta *meta_out)
{
	struct tern_adapter_meta meta = {0};
	struct src a = {0};
	enum tern_status st;
	unsigned full = 0;
	if ((st = check_set(s, false, dir ? dir : "adapter")))
		return st;
	if (!dir)
		return tern_fail(TERN_E_INVALID, "adapter: no directory given");
	/* the older per-expert layout: the dense modules as usual (a view of s without its expert
	 * slots), the experts by read_per_expert */
	bool mixtral = false, pe = is_per_expert(dir, s, &mixtral);
	struct tern_lora_set dense = *s;
	if (pe)
		dense.modules &= (1u << TERN_MOD_COUNT) - 1;
	g_per_expert = pe;
	if (!(st = read_config(dir, &dense, &meta, &full)) &&
	    !(st = src_open(&a, dir, "adapter_model.safetensors", &dense, weight_kinds, N_KINDS(weight_kinds),
			    false, full)) &&
	    (!pe || !(st = read_per_expert(dir, s, mixtral, false)))) {
		load_tensors(&dense, weight_kinds, N_KINDS(weight_kinds), a.found);
		if (pe)
			st = read_per_expert(dir, s, mixtral, true);
		s->full_have |= dense.full_have;
		if (meta_out)
			*meta_out = meta;
	}
	g_per_expert = false;
	src_close(&a);
	return st;
}

unsigned tern_adapter_full(const char *dir)
{
	char *path = dir ? tern_path_join(dir, "adapter_config.json") : NULL;
	json_t *root = path ? json_load_file(path, 0, NULL) : NULL;
	json_t *v = json_object_get(root, "modules_to_save"), *x;
	unsigned full = 0;
	size_t i;
	if (json_is_array(v))
		json_array_foreach(v, i, x)
		{
			enum tern_full f;
			if (json_is_string(x) && tern_full_parse(json_string_value(x), &f))
				full |= 1u << f;
		}
	json_decref(root);
	free(path);
	return full;
}

/* ---- checkpoints -------------------------------------------------------------------------- */

static enum tern_status get_i64(json_t *root, const char *path, const char *key, int64_t *out);

static json_t *f64_json(double x)
{
	if (isfinite(x))
		return json_real(x);
	return json_string(isnan(x) ? "nan" : x < 0 ? "-inf" : "inf");
}

static json_t *u64_json(uint64_t x)
{
	char b[32];
	snprintf(b, sizeof b, "%" PRIu64, x);
	return json_string(b);
}

static json_t *state_json(const struct tern_train_state *t)
{
	json_t *files = json_array();
	for (int i = 0; files && i < t->n_data_files && i < TERN_STATE_FILES; i++)
		json_array_append_new(files, json_pack("{s:s, s:s}", "path", t->data_files[i].path,
						       "fingerprint", t->data_files[i].fingerprint));
	json_t *j =
		json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:o, s:o, s:s}", "format",
			  STATE_FORMAT, "version", STATE_VERSION, "step", (json_int_t)t->step, "total_steps",
			  (json_int_t)t->total_steps, "warmup_steps", (json_int_t)t->warmup_steps, "epoch",
			  (json_int_t)t->epoch, "row", (json_int_t)t->row, "seed", u64_json(t->seed),
			  "tokens", (json_int_t)t->tokens, "elapsed", f64_json(t->elapsed), "last_loss",
			  f64_json(t->last_loss), "config_hash", t->config_hash);
	json_t *data =
		json_pack("{s:I, s:I, s:s, s:o}", "rows", (json_int_t)t->data_rows, "sequence_len",
			  (json_int_t)t->data_seq_len, "fingerprint", t->data_fingerprint, "files", files);
	if (!j || !data || json_object_set_new(j, "data", data) ||
	    json_object_set_new(j, "schedule_steps", json_integer((json_int_t)t->schedule_steps))) {
		json_decref(j);
		if (!j)
			json_decref(data);
		return NULL;
	}
	return j;
}

/* "data" of a version-2 state: {"rows", "sequence_len", "fingerprint", "files": [{"path",
 * "fingerprint"}]}. */
static enum tern_status read_data(json_t *d, const char *path, struct tern_train_state *t)
{
	json_t *files = json_object_get(d, "files");
	const char *fp = json_string_value(json_object_get(d, "fingerprint"));
	enum tern_status st;
	if (!json_is_object(d) || !json_is_array(files) || !fp || strlen(fp) >= sizeof t->data_fingerprint)
		return tern_fail(TERN_E_FORMAT,
				 "%s: data is missing or not {\"rows\", \"sequence_len\", \"fingerprint\", "
				 "\"files\"}",
				 path);
	if ((st = get_i64(d, path, "rows", &t->data_rows)) ||
	    (st = get_i64(d, path, "sequence_len", &t->data_seq_len)))
		return st;
	snprintf(t->data_fingerprint, sizeof t->data_fingerprint, "%s", fp);
	size_t i;
	json_t *f;
	json_array_foreach(files, i, f)
	{
		const char *p = json_string_value(json_object_get(f, "path"));
		const char *h = json_string_value(json_object_get(f, "fingerprint"));
		if (!p || !h || strlen(p) >= sizeof t->data_files[0].path ||
		    strlen(h) >= sizeof t->data_files[0].fingerprint || i >= TERN_STATE_FILES)
			return tern_fail(TERN_E_FORMAT,
					 "%s: data.files[%zu] is not {\"path\", \"fingerprint\"}", path, i);
		snprintf(t->data_files[i].path, sizeof t->data_files[i].path, "%s", p);
		snprintf(t->data_files[i].fingerprint, sizeof t->data_files[i].fingerprint, "%s", h);
		t->n_data_files = (int)i + 1;
	}
	return TERN_OK;
}

static enum tern_status check_state(const struct tern_train_state *t, const char *what)
{
	if (!t)
		return tern_fail(TERN_E_INVALID, "%s: no trainer state", what);
	const int64_t v[] = {t->step, t->total_steps, t->warmup_steps, t->epoch, t->row, t->tokens};
	static const char *const k[] = {"step", "total_steps", "warmup_steps", "epoch", "row", "tokens"};
	for (int i = 0; i < 6; i++) {
		if (v[i] < 0)
			return tern_fail(TERN_E_INVALID, "%s: %s is %" PRId64 "; it must be >= 0", what, k[i],
					 v[i]);
	}
	size_t n = strnlen(t->config_hash, sizeof t->config_hash);
	if (n == sizeof t->config_hash)
		return tern_fail(TERN_E_INVALID, "%s: config_hash is not terminated", what);
	for (size_t i = 0; i < n; i++) {
		char c = t->config_hash[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
			return tern_fail(TERN_E_INVALID, "%s: config_hash \"%s\" is not lower-case hex", what,
					 t->config_hash);
	}
	return TERN_OK;
}

/* "checkpoint-<digits>" exactly, n <= 18 digits; the step into *step. */
static bool ckpt_name(const char *name, int64_t *step)
{
	static const char prefix[] = "checkpoint-";
	if (strncmp(name, prefix, sizeof prefix - 1))
		return false;
	const char *d = name + sizeof prefix - 1;
	size_t n = strlen(d);
	if (!n || n > 18 || strspn(d, "0123456789") != n)
		return false;
	*step = strtoll(d, NULL, 10);
	return true;
}

struct step_list {
	int64_t *v;
	size_t n, cap;
};

static int cmp_i64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return (x > y) - (x < y);
}

/* The checkpoint-<n> directories of out, sorted by n. */
static enum tern_status list_checkpoints(const char *out, struct step_list *l)
{
	DIR *d = opendir(out);
	if (!d)
		return tern_fail(TERN_E_IO, "%s: cannot list: %s", out, strerror(errno));
	struct dirent *e;
	enum tern_status st = TERN_OK;
	while (!st && (e = readdir(d))) {
		int64_t step;
		if (!ckpt_name(e->d_name, &step))
			continue;
		char *p = tern_path_join(out, e->d_name);
		struct stat sb;
		bool dir = p && !lstat(p, &sb) && S_ISDIR(sb.st_mode);
		free(p);
		if (!dir)
			continue;
		if (l->n == l->cap) {
			size_t cap = l->cap ? 2 * l->cap : 16;
			int64_t *v = realloc(l->v, cap * sizeof *v);
			if (!v) {
				st = tern_fail(TERN_E_NOMEM, "%s: out of memory listing checkpoints", out);
				break;
			}
			l->v = v;
			l->cap = cap;
		}
		l->v[l->n++] = step;
	}
	closedir(d);
	if (!st && l->n)
		qsort(l->v, l->n, sizeof *l->v, cmp_i64);
	return st;
}

/* Keeps the newest `limit` checkpoints (never removing keep_step); problems are warnings, the
 * checkpoint just written is safe either way. */
static void rotate(const char *out, int64_t limit, int64_t keep_step)
{
	struct step_list l = {0};
	if (list_checkpoints(out, &l)) {
		tern_log(TERN_LOG_WARN, "save_total_limit: %s", tern_error());
		return;
	}
	size_t count = l.n;
	for (size_t i = 0; i < l.n && count > (uint64_t)limit; i++) {
		if (l.v[i] == keep_step)
			continue;
		char *p = str_printf("%s/checkpoint-%" PRId64, out, l.v[i]);
		char *del = str_printf("%s/checkpoint-%" PRId64 ".old.%ld", out, l.v[i], (long)getpid());
		/* renamed first, so an interrupted removal never leaves a partial checkpoint-<n> */
		if (p && del && !rm_rf(del) && !rename(p, del) && !rm_rf(del))
			count--;
		else
			tern_log(TERN_LOG_WARN, "save_total_limit: cannot remove %s: %s",
				 p ? p : "a checkpoint", tern_error()[0] ? tern_error() : strerror(errno));
		free(p);
		free(del);
	}
	free(l.v);
}

/* The files of a checkpoint that checksums.sha256 covers. */
static const char *const ckpt_files[] = {"adapter_config.json", "adapter_model.safetensors",
					 "optimizer.safetensors", "trainer_state.json"};

enum tern_status tern_checkpoint_write(const char *output_dir, const struct tern_lora_set *s,
				       const struct tern_adapter_meta *meta,
				       const struct tern_train_state *state, int64_t save_total_limit)
{
	fault_n = 0;
	const char *what = output_dir ? output_dir : "checkpoint";
	enum tern_status st;
	if ((st = check_set(s, true, what)) || (st = check_meta(meta, what)) ||
	    (st = check_state(state, what)))
		return st;
	char *out = NULL, *final = NULL, *tmp = NULL, *opt = NULL, *ts = NULL;
	if ((st = norm_dir(output_dir, "checkpoint", &out)))
		return st;
	if (mkdir(out, 0755) && errno != EEXIST) {
		st = tern_fail(TERN_E_IO, "%s: cannot create the output directory: %s", out, strerror(errno));
		goto out;
	}
	final = str_printf("%s/checkpoint-%" PRId64, out, state->step);
	if (!final) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = make_tmp_dir(final, &tmp)) || (st = write_adapter_files(tmp, s, meta)))
		goto out;
	opt = tern_path_join(tmp, "optimizer.safetensors");
	ts = tern_path_join(tmp, "trainer_state.json");
	if (!opt || !ts) {
		st = TERN_E_NOMEM;
		goto out;
	}
	if ((st = write_tensors(opt, s, moment_kinds, N_KINDS(moment_kinds), NULL)) ||
	    (st = write_json(ts, state_json(state))) ||
	    (st = tern_manifest_write(tmp, ckpt_files, N_KINDS(ckpt_files))) || (st = commit_dir(tmp, final)))
		goto out;
	if (save_total_limit > 0)
		rotate(out, save_total_limit, state->step);
out:
	if (st && tmp) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		rm_rf(tmp);
		tern_fail(st, "%s", msg);
	}
	free(ts);
	free(opt);
	free(tmp);
	free(final);
	free(out);
	return st;
}

static enum tern_status get_i64(json_t *root, const char *path, const char *key, int64_t *out)
{
	json_t *v = json_object_get(root, key);
	if (!json_is_integer(v) || json_integer_value(v) < 0)
		return tern_fail(TERN_E_FORMAT, "%s: %s is missing or not an integer >= 0", path, key);
	*out = json_integer_value(v);
	return TERN_OK;
}

static enum tern_status get_u64(json_t *root, const char *path, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(root, key);
	const char *s = json_string_value(v);
	size_t n = s ? strlen(s) : 0;
	if (!n || n > 20 || strspn(s, "0123456789") != n)
		return tern_fail(TERN_E_FORMAT, "%s: %s is missing or not a decimal string (\"12345\")", path,
				 key);
	errno = 0;
	unsigned long long x = strtoull(s, NULL, 10);
	if (errno)
		return tern_fail(TERN_E_FORMAT, "%s: %s \"%s\" does not fit in 64 bits", path, key, s);
	*out = (uint64_t)x;
	return TERN_OK;
}

static enum tern_status get_f64(json_t *root, const char *path, const char *key, double *out)
{
	json_t *v = json_object_get(root, key);
	const char *s = json_string_value(v);
	if (json_is_number(v))
		*out = json_number_value(v);
	else if (s && !strcmp(s, "nan"))
		*out = NAN;
	else if (s && (!strcmp(s, "inf") || !strcmp(s, "-inf")))
		*out = s[0] == '-' ? -INFINITY : INFINITY;
	else
		return tern_fail(TERN_E_FORMAT, "%s: %s is missing or not a number", path, key);
	return TERN_OK;
}

static enum tern_status read_state(const char *dir, struct tern_train_state *t)
{
	/* "rng": written by the first release, never read; ignored */
	static const char *const keys[] = {"format",       "version", "step",          "total_steps",
					   "warmup_steps", "epoch",   "row",           "seed",
					   "tokens",       "elapsed", "last_loss",     "config_hash",
					   "rng",          "data",    "schedule_steps"};
	char *path = tern_path_join(dir, "trainer_state.json");
	if (!path)
		return TERN_E_NOMEM;
	enum tern_status st = TERN_OK;
	json_error_t err;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &err), *v;
	const char *k;
	memset(t, 0, sizeof *t);
	if (!root) {
		st = json_fail(path, &err);
		goto out;
	}
	if (!json_is_object(root)) {
		st = tern_fail(TERN_E_FORMAT, "%s: not a JSON object", path);
		goto out;
	}
	json_object_foreach(root, k, v)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++)
			known = known || !strcmp(k, keys[i]);
		if (!known) {
			st = tern_fail(TERN_E_FORMAT, "%s: unknown key %s", path, k);
			goto out;
		}
	}
	v = json_object_get(root, "format");
	json_t *ver = json_object_get(root, "version");
	if (!json_is_string(v) || strcmp(json_string_value(v), STATE_FORMAT) || !json_is_integer(ver) ||
	    json_integer_value(ver) < 1 || json_integer_value(ver) > STATE_VERSION) {
		st = tern_fail(
			TERN_E_FORMAT,
			"%s: not a tern trainer state of version 1 to %d (format \"%s\" expected); "
			"this tern cannot resume it: start from its adapter with lora_model_dir instead",
			path, STATE_VERSION, STATE_FORMAT);
		goto out;
	}
	t->version = (int)json_integer_value(ver);
	if (t->version >= 2 && ((st = get_i64(root, path, "schedule_steps", &t->schedule_steps)) ||
				(st = read_data(json_object_get(root, "data"), path, t))))
		goto out;
	if ((st = get_i64(root, path, "step", &t->step)) ||
	    (st = get_i64(root, path, "total_steps", &t->total_steps)) ||
	    (st = get_i64(root, path, "warmup_steps", &t->warmup_steps)) ||
	    (st = get_i64(root, path, "epoch", &t->epoch)) || (st = get_i64(root, path, "row", &t->row)) ||
	    (st = get_u64(root, path, "seed", &t->seed)) ||
	    (st = get_i64(root, path, "tokens", &t->tokens)) ||
	    (st = get_f64(root, path, "elapsed", &t->elapsed)) ||
	    (st = get_f64(root, path, "last_loss", &t->last_loss)))
		goto out;
	v = json_object_get(root, "config_hash");
	const char *h = json_string_value(v);
	if (!h || strlen(h) >= sizeof t->config_hash || strspn(h, "0123456789abcdef") != strlen(h)) {
		st = tern_fail(TERN_E_FORMAT,
			       "%s: config_hash is missing or not up to 16 lower-case hex digits", path);
		goto out;
	}
	memcpy(t->config_hash, h, strlen(h) + 1);
out:
	json_decref(root);
	free(path);
	return st;
}

enum tern_status tern_checkpoint_read(const char *dir, struct tern_lora_set *s,
				      struct tern_train_state *state)
{
	enum tern_status st;
	if ((st = check_set(s, true, dir ? dir : "checkpoint")))
		return st;
	if (!dir || !state)
		return tern_fail(TERN_E_INVALID, "checkpoint: no directory or state given");
	char *d = NULL;
	if ((st = norm_dir(dir, "checkpoint", &d)))
		return st;
	struct tern_train_state t;
	struct tern_adapter_meta meta;
	struct src a = {0}, o = {0};
	int64_t step;
	const char *base = strrchr(d, '/');
	base = base ? base + 1 : d;
	if ((st = read_state(d, &t)))
		goto out;
	if (ckpt_name(base, &step) && step != t.step) {
		st = tern_fail(TERN_E_FORMAT,
			       "%s/trainer_state.json: step is %" PRId64 " but the directory is %s", d,
			       t.step, base);
		goto out;
	}
	/* a damaged file is named as such before its contents are parsed */
	unsigned full = 0;
	if ((t.version >= 2 && (st = tern_manifest_verify(d, ckpt_files, N_KINDS(ckpt_files)))) ||
	    (st = read_config(d, s, &meta, &full)))
		goto out;
	if (full != s->full) {
		st = tern_fail(TERN_E_INVALID,
			       "%s/adapter_config.json: modules_to_save differs from the run's "
			       "lora_modules_to_save (a checkpoint resumes the run that wrote it)",
			       d);
		goto out;
	}
	if ((st = src_open(&a, d, "adapter_model.safetensors", s, weight_kinds, N_KINDS(weight_kinds), true,
			   full)) ||
	    (st = src_open(&o, d, "optimizer.safetensors", s, moment_kinds, N_KINDS(moment_kinds), true,
			   full)))
		goto out;
	load_tensors(s, weight_kinds, N_KINDS(weight_kinds), a.found);
	load_tensors(s, moment_kinds, N_KINDS(moment_kinds), o.found);
	*state = t;
out:
	src_close(&a);
	src_close(&o);
	free(d);
	return st;
}

bool tern_checkpoint_latest(const char *output_dir, char *path, size_t cap)
{
	static const char *const files[] = {"adapter_config.json", "adapter_model.safetensors",
					    "optimizer.safetensors", "trainer_state.json"};
	struct step_list l = {0};
	bool ok = false;
	if (!output_dir || list_checkpoints(output_dir, &l)) {
		tern_clear_error();
		free(l.v);
		return false;
	}
	for (size_t i = l.n; i-- > 0;) {
		char dir[4096];
		int n = snprintf(dir, sizeof dir, "%s/checkpoint-%" PRId64, output_dir, l.v[i]);
		if (n < 0 || (size_t)n >= sizeof dir)
			continue;
		bool complete = true;
		for (size_t f = 0; f < 4 && complete; f++) {
			char *p = tern_path_join(dir, files[f]);
			struct stat sb;
			complete = p && !stat(p, &sb) && S_ISREG(sb.st_mode);
			free(p);
		}
		if (!complete)
			continue;
		if ((size_t)n < cap) {
			memcpy(path, dir, (size_t)n + 1);
			ok = true;
		} else
			tern_log(TERN_LOG_WARN, "%s: the path does not fit in %zu bytes", dir, cap);
		break;
	}
	free(l.v);
	return ok;
}
