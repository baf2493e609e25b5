/* Backend-independent pieces: names, the shared argument checks, the dropout key, the AdamW
 * scalars, and the registry that maps a backend name to its create/devices functions. */
#include "backend/backend.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- names and sizes ---------------------------------------------------------------------- */

const char *tern_dtype_name(enum tern_dtype dt)
{
	switch (dt) {
	case TERN_F32: return "f32";
	case TERN_F16: return "f16";
	case TERN_BF16: return "bf16";
	case TERN_NF4: return "nf4";
	case TERN_NF4_DQ: return "nf4-dq";
	case TERN_TERNARY: return "ternary";
	case TERN_DTYPE_COUNT: break;
	}
	return "?";
}

size_t tern_dtype_size(enum tern_dtype dt)
{
	switch (dt) {
	case TERN_F32: return 4;
	case TERN_F16:
	case TERN_BF16: return 2;
	default: return 0;
	}
}

const char *tern_op_name(enum tern_op op)
{
	switch (op) {
	case TERN_OP_MATMUL: return "matmul";
	case TERN_OP_MATMUL_BWD: return "matmul_bwd";
	case TERN_OP_GEMM: return "gemm";
	case TERN_OP_DROPOUT: return "dropout";
	case TERN_OP_AXPY: return "axpy";
	case TERN_OP_ADAMW: return "adamw";
	case TERN_OP_SUMSQ: return "sumsq";
	case TERN_OP_SCALE: return "scale";
	case TERN_OP_CLIP: return "clip";
	case TERN_OP_CAST: return "cast";
	case TERN_OP_RMSNORM: return "rmsnorm";
	case TERN_OP_RMSNORM_BWD: return "rmsnorm_bwd";
	case TERN_OP_ROPE: return "rope";
	case TERN_OP_SWIGLU: return "swiglu";
	case TERN_OP_SWIGLU_BWD: return "swiglu_bwd";
	case TERN_OP_EMBED: return "embed";
	case TERN_OP_ATTENTION: return "attention";
	case TERN_OP_ATTENTION_BWD: return "attention_bwd";
	case TERN_OP_ATTENTION_KV: return "attention_kv";
	case TERN_OP_CE_LOSS: return "ce_loss";
	case TERN_OP_EMBED_BWD: return "embed_bwd";
	case TERN_OP_GATHER_ROWS: return "gather_rows";
	case TERN_OP_SCATTER_ADD_ROWS: return "scatter_add_rows";
	case TERN_OP_ROWDOT: return "rowdot";
	case TERN_OP_ROUTE_TOPK: return "route_topk";
	case TERN_OP_ROUTE_TOPK_BWD: return "route_topk_bwd";
	case TERN_OP_MATMUL_GROUPED: return "matmul_grouped";
	case TERN_OP_MATMUL_GROUPED_BWD: return "matmul_grouped_bwd";
	case TERN_OP_ACT_QUANT8: return "act_quant8";
	case TERN_OP_ARGMAX: return "argmax";
	case TERN_OP_MATMUL_LORA: return "matmul_lora";
	case TERN_OP_MATMUL_LORA_BWD: return "matmul_lora_bwd";
	case TERN_OP_ADD_RMSNORM: return "add_rmsnorm";
	case TERN_OP_COUNT: break;
	}
	return "?";
}

/* The profile's kinds: the name on the profile line and the key in metrics.jsonl. */
static const struct {
	const char *name, *key;
} prof_kinds[TERN_PROF_KIND_COUNT] = {
	[TERN_PROF_MATMUL_FWD] = {"matmul fwd", "matmul_fwd"},
	[TERN_PROF_MATMUL_BWD] = {"matmul bwd", "matmul_bwd"},
	[TERN_PROF_LORA] = {"LoRA", "lora"},
	[TERN_PROF_ATTENTION] = {"attention", "attention"},
	[TERN_PROF_LOSS] = {"loss", "loss"},
	[TERN_PROF_ELEMENTWISE] = {"norms/elementwise", "elementwise"},
	[TERN_PROF_OPTIMIZER] = {"optimizer", "optimizer"},
	[TERN_PROF_COPIES] = {"copies", "copies"},
};

const char *tern_prof_kind_name(enum tern_prof_kind k)
{
	return (unsigned)k < TERN_PROF_KIND_COUNT ? prof_kinds[k].name : "?";
}

const char *tern_prof_kind_key(enum tern_prof_kind k)
{
	return (unsigned)k < TERN_PROF_KIND_COUNT ? prof_kinds[k].key : "?";
}

bool tern_profile_env(void)
{
	const char *e = getenv("TERN_PROFILE");
	return e && *e && strcmp(e, "0") != 0;
}

void tern_profile_ops_line(const struct tern_profile *p, double per, char *buf, size_t cap)
{
	int ord[TERN_OP_COUNT], n = 0;
	for (int k = 0; k < TERN_OP_COUNT; k++)
		if (p->op_calls[k]) {
			int j = n++;
			for (; j > 0 && p->op_ns[ord[j - 1]] < p->op_ns[k]; j--)
				ord[j] = ord[j - 1];
			ord[j] = k;
		}
	size_t at = 0;
	buf[0] = 0;
	for (int j = 0; j < n && at < cap; j++) {
		int w = snprintf(buf + at, cap - at, "%s%s %.*f ms x%g", j ? " | " : "",
				 tern_op_name((enum tern_op)ord[j]), per == 1 ? 1 : 3,
				 p->op_ns[ord[j]] * 1e-6 / per, (double)p->op_calls[ord[j]] / per);
		if (w < 0)
			break;
		at += (size_t)w;
	}
}

/* ---- dropout key and AdamW scalars -------------------------------------------------------- */

/* splitmix64's finaliser: a bijection on 64 bits with full avalanche. */
static uint64_t splitmix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

/* Chained so that every field reaches every output bit, and (a, b) and (b, a) give different
 * keys: each field is mixed into the running state, never XORed side by side. */
uint64_t tern_dropout_key(uint64_t seed, uint64_t step, uint32_t micro, uint32_t layer, uint32_t module)
{
	uint64_t h = splitmix64(seed);
	h = splitmix64(h ^ step);
	h = splitmix64(h ^ micro);
	h = splitmix64(h ^ layer);
	return splitmix64(h ^ module);
}

/* torch.optim.AdamW, single-tensor path: Python computes these scalars in double; the fp32 CPU
 * kernels then convert each to float. */
struct tern_adamw_consts tern_adamw_consts(const struct tern_adamw_args *a)
{
	double lr = a->lr, b1 = a->beta1, b2 = a->beta2, t = (double)a->step;
	double bc1 = 1.0 - pow(b1, t);
	double bc2 = 1.0 - pow(b2, t);
	struct tern_adamw_consts c = {
		.decay = (float)(1.0 - lr * (double)a->weight_decay),
		.one_minus_b1 = (float)(1.0 - b1),
		.b2 = (float)a->beta2,
		.one_minus_b2 = (float)(1.0 - b2),
		.step_size = (float)(lr / bc1),
		.bc2_sqrt = (float)sqrt(bc2),
		.eps = (float)a->eps,
	};
	return c;
}

/* ---- argument checks ---------------------------------------------------------------------- */

/* A view that must hold nothing (T = 0, an unused xd) may come without a buffer. Whether the
 * view lies inside its buffer is the backend's to check: buffers are private to it. */
enum tern_status tern_check_view(const char *op, const char *what, struct tern_view v, size_t need)
{
	if (need == 0)
		return TERN_OK;
	if (!v.buf)
		return tern_fail(TERN_E_INVALID, "%s: %s view has no buffer, needs %zu bytes", op, what,
				 need);
	if (v.size < need)
		return tern_fail(TERN_E_INVALID, "%s: %s view is %zu bytes, needs %zu", op, what, v.size,
				 need);
	return TERN_OK;
}

size_t tern_weight_data_bytes(enum tern_dtype dt, int64_t O, int64_t I)
{
	if (O <= 0 || I <= 0)
		return 0;
	switch (dt) {
	case TERN_F32:
	case TERN_F16:
	case TERN_BF16: return (size_t)O * (size_t)I * tern_dtype_size(dt);
	case TERN_NF4:
	case TERN_NF4_DQ: return ((size_t)O * (size_t)I + 1) / 2;
	case TERN_TERNARY: return (size_t)O * (size_t)tern_ternary_row_words(I) * 4;
	case TERN_DTYPE_COUNT: break;
	}
	return 0;
}

/* Fails with the weight's shape appended, e.g.
 * "matmul: W absmax view is 8 bytes, needs 16 (O=7 I=33 nf4 bs=64)". */
static enum tern_status check_part(const char *op, const char *what, struct tern_view v, size_t need,
				   const struct tern_weight *w)
{
	enum tern_status st = tern_check_view(op, what, v, need);
	if (st == TERN_OK)
		return TERN_OK;
	char msg[512];
	snprintf(msg, sizeof msg, "%s", tern_error());
	if (w->dtype == TERN_NF4 || w->dtype == TERN_NF4_DQ)
		return tern_fail(st, "%s (O=%lld I=%lld %s bs=%d)", msg, (long long)w->O, (long long)w->I,
				 tern_dtype_name(w->dtype), w->blocksize);
	return tern_fail(st, "%s (O=%lld I=%lld %s)", msg, (long long)w->O, (long long)w->I,
			 tern_dtype_name(w->dtype));
}

void tern_experts_at(const struct tern_experts *x, int64_t e, struct tern_weight *out)
{
	*out = x->w;
	struct tern_view *v[3] = {&out->data, &out->absmax, &out->nested};
	for (int k = 0; k < 3; k++)
		if (v[k]->buf)
			v[k]->off += (size_t)((uint64_t)e * x->stride[k]);
}

enum tern_status tern_check_weight(const char *op, const struct tern_weight *w)
{
	if (!w)
		return tern_fail(TERN_E_INVALID, "%s: no weight", op);
	if ((unsigned)w->dtype >= TERN_DTYPE_COUNT)
		return tern_fail(TERN_E_INVALID, "%s: W has unknown dtype %d", op, (int)w->dtype);
	/* 2^31 per side keeps O*I and every byte count far inside size_t and int64 */
	if (w->O <= 0 || w->I <= 0 || w->O > (INT64_C(1) << 31) || w->I > (INT64_C(1) << 31))
		return tern_fail(TERN_E_INVALID, "%s: W shape O=%lld I=%lld is out of range", op,
				 (long long)w->O, (long long)w->I);
	enum tern_status st =
		check_part(op, "W data", w->data, tern_weight_data_bytes(w->dtype, w->O, w->I), w);
	if (st != TERN_OK)
		return st;

	if (w->dtype == TERN_NF4 || w->dtype == TERN_NF4_DQ) {
		int bs = w->blocksize;
		if (bs < 32 || bs > 4096 || (bs & (bs - 1)) != 0)
			return tern_fail(
				TERN_E_INVALID,
				"%s: W blocksize %d is not a power of two in 32..4096 (O=%lld I=%lld %s)", op,
				bs, (long long)w->O, (long long)w->I, tern_dtype_name(w->dtype));
		size_t nb = (size_t)tern_nf4_blocks(w->O * w->I, bs);
		if (w->dtype == TERN_NF4)
			return check_part(op, "W absmax", w->absmax, nb * 4, w);
		st = check_part(op, "W absmax", w->absmax, nb, w);
		if (st != TERN_OK)
			return st;
		st = check_part(op, "W nested absmax", w->nested,
				(size_t)tern_cdiv((int64_t)nb, TERN_NF4_NESTED_BLOCK) * 4, w);
		if (st != TERN_OK)
			return st;
		if (!isfinite(w->offset))
			return tern_fail(TERN_E_INVALID, "%s: W nested offset is %g (O=%lld I=%lld nf4-dq)",
					 op, (double)w->offset, (long long)w->O, (long long)w->I);
	}
	if (w->dtype == TERN_TERNARY && !isfinite(w->scale))
		return tern_fail(TERN_E_INVALID, "%s: W ternary scale is %g (O=%lld I=%lld)", op,
				 (double)w->scale, (long long)w->O, (long long)w->I);
	return TERN_OK;
}

/* ---- registry ----------------------------------------------------------------------------- */

struct backend_entry {
	const char *name;
	bool gpu; /* "auto" tries the GPU backends in table order, then cpu */
	enum tern_status (*create)(int device, struct tern_backend **out);
	enum tern_status (*devices)(struct tern_device_info *out, int max, int *count);
	enum tern_status (*sizes)(int64_t T, int64_t V, int64_t D, struct tern_backend_sizes *out);
	/* NULL: the scratch depends on T, V, D alone (sizes answers) */
	enum tern_status (*sizes_for)(const struct tern_size_shapes *s, struct tern_backend_sizes *out);
};

static const struct backend_entry backends[] = {
#ifdef TERN_HAVE_CUDA
	{"cuda", true, tern_cuda_create, tern_cuda_devices, tern_cuda_sizes, tern_cuda_sizes_for},
#endif
#ifdef TERN_HAVE_VULKAN
	{"vulkan", true, tern_vulkan_create, tern_vulkan_devices, tern_vulkan_sizes, tern_vulkan_sizes_for},
#endif
	{"cpu", false, tern_cpu_create, tern_cpu_devices, tern_cpu_sizes, NULL},
	{"ref", false, tern_ref_create, tern_ref_devices, tern_ref_sizes, NULL},
};
#define NBACKENDS ((int)(sizeof backends / sizeof backends[0]))

/* Every backend tern has, compiled in or not, so that asking for one this build lacks reads as
 * "unavailable" rather than "unknown". */
static const char *const known_backends[] = {"cpu", "ref", "vulkan", "cuda"};

/* The table entry of backend `name` (not "auto"). */
static enum tern_status find_named(const char *name, const struct backend_entry **out)
{
	for (int i = 0; i < NBACKENDS; i++)
		if (strcmp(backends[i].name, name) == 0) {
			*out = &backends[i];
			return TERN_OK;
		}
	for (size_t i = 0; i < sizeof known_backends / sizeof known_backends[0]; i++)
		if (strcmp(known_backends[i], name) == 0)
			return tern_fail(TERN_E_UNAVAILABLE, "backend '%s' is not compiled into this build",
					 name);
	return tern_fail(TERN_E_INVALID, "unknown backend '%s' (expected cpu, ref, vulkan, cuda or auto)",
			 name);
}

static enum tern_status create_named(const char *name, int device, struct tern_backend **out)
{
	const struct backend_entry *e = NULL;
	enum tern_status st = find_named(name, &e);
	return st ? st : e->create(device, out);
}

enum tern_status tern_backend_sizes(const char *name, int64_t T, int64_t V, int64_t D,
				    struct tern_backend_sizes *out)
{
	if (!name || !*name)
		name = "auto";
	if (T < 0 || V < 1 || D < 1 || T > TERN_MAX_ELEMS || V > TERN_MAX_ELEMS || D > TERN_MAX_ELEMS)
		return tern_fail(TERN_E_INVALID,
				 "backend %s sizes: T=%lld V=%lld D=%lld (T >= 0, V and D >= 1)", name,
				 (long long)T, (long long)V, (long long)D);
	const struct backend_entry *e = NULL;
	if (strcmp(name, "auto") == 0) {
		/* what auto would create on a machine with a GPU: the first GPU backend, else cpu */
		for (int i = 0; i < NBACKENDS && !e; i++)
			if (backends[i].gpu)
				e = &backends[i];
		if (!e)
			return tern_backend_sizes("cpu", T, V, D, out);
	} else {
		enum tern_status st = find_named(name, &e);
		if (st)
			return st;
	}
	return e->sizes(T, V, D, out);
}

enum tern_status tern_backend_sizes_for(const char *name, const struct tern_size_shapes *s,
					struct tern_backend_sizes *out)
{
	if (!name || !*name)
		name = "auto";
	int64_t x[] = {s->K, s->W, s->H, s->Hkv, s->Dh};
	bool bad = s->prec != TERN_F32 && s->prec != TERN_F16 && s->prec != TERN_BF16;
	for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
		bad |= x[i] < 0 || x[i] > TERN_MAX_ELEMS;
	if (bad)
		return tern_fail(
			TERN_E_INVALID,
			"backend %s sizes: K=%lld W=%lld H=%lld Hkv=%lld Dh=%lld prec %s (>= 0; F32, "
			"F16 or BF16)",
			name, (long long)s->K, (long long)s->W, (long long)s->H, (long long)s->Hkv,
			(long long)s->Dh, tern_dtype_name(s->prec));
	enum tern_status st = tern_backend_sizes(name, s->T, s->V, s->D, out);
	if (st)
		return st;
	const struct backend_entry *e = NULL;
	if (strcmp(name, "auto") == 0) {
		for (int i = 0; i < NBACKENDS && !e; i++)
			if (backends[i].gpu)
				e = &backends[i];
	} else if ((st = find_named(name, &e))) {
		return st;
	}
	return e && e->sizes_for ? e->sizes_for(s, out) : TERN_OK;
}

/* Whether device `device` of backend e exists and is a CPU (Vulkan's lavapipe). */
static bool device_is_cpu(const struct backend_entry *e, int device)
{
	struct tern_device_info info[16];
	int n = 0;
	if (device >= 16 || e->devices(info, 16, &n) != TERN_OK) {
		tern_clear_error();
		return false;
	}
	return device < n && strcmp(info[device].kind, "cpu") == 0;
}

enum tern_status tern_backend_create(const char *name, int device, struct tern_backend **out)
{
	if (!out)
		return tern_fail(TERN_E_INVALID, "backend: no output pointer");
	*out = NULL;
	if (!name || !*name)
		name = "auto";
	if (device < 0)
		return tern_fail(TERN_E_INVALID, "backend %s: device index %d is negative", name, device);
	if (strcmp(name, "auto") != 0)
		return create_named(name, device, out);

	/* auto: GPU device `device` when one can be made, else the fast CPU backend (its only
	 * device). A GPU backend's device that is itself a CPU (lavapipe) is passed over: the cpu
	 * backend trains faster there (docs/PERFORMANCE.md); ask for vulkan by name to use it. */
	for (int i = 0; i < NBACKENDS; i++) {
		if (!backends[i].gpu)
			continue;
		if (device_is_cpu(&backends[i], device)) {
			tern_log(TERN_LOG_INFO,
				 "auto: %s device %d is a CPU (a software driver); using the cpu backend",
				 backends[i].name, device);
			continue;
		}
		enum tern_status st = backends[i].create(device, out);
		if (st == TERN_OK)
			return TERN_OK;
		tern_log(st == TERN_E_UNAVAILABLE ? TERN_LOG_INFO : TERN_LOG_WARN,
			 "auto: %s device %d: %s; trying the next backend", backends[i].name, device,
			 tern_error());
		*out = NULL;
	}
	tern_clear_error();
	return create_named("cpu", 0, out);
}

void tern_backend_free(struct tern_backend *be)
{
	if (be)
		be->vt->destroy(be);
}

enum tern_status tern_devices(struct tern_device_info *out, int max, int *count)
{
	if (!count || max < 0 || (max > 0 && !out))
		return tern_fail(TERN_E_INVALID, "devices: bad arguments (max %d)", max);
	int n = 0;
	for (int i = 0; i < NBACKENDS; i++) {
		int got = 0;
		enum tern_status st = backends[i].devices(max > n ? out + n : NULL, max - n, &got);
		if (st == TERN_E_UNAVAILABLE) {
			tern_log(TERN_LOG_INFO, "%s: unavailable (%s)", backends[i].name, tern_error());
			tern_clear_error();
			continue;
		}
		if (st != TERN_OK) {
			*count = n;
			return st;
		}
		n += got;
	}
	*count = n;
	return TERN_OK;
}

enum tern_status tern_backend_probe(const char *name)
{
	const struct backend_entry *e = NULL;
	enum tern_status st = find_named(name ? name : "", &e);
	if (st)
		return st;
	struct tern_device_info d;
	int n = 0;
	st = e->devices(&d, 1, &n);
	if (st == TERN_OK && n == 0)
		st = tern_fail(TERN_E_UNAVAILABLE, "%s: no device", name);
	return st;
}

bool tern_backend_supports_prec(struct tern_backend *be, enum tern_op op, enum tern_dtype prec)
{
	if (!tern_backend_has_op(be, op) || (prec != TERN_F32 && prec != TERN_F16 && prec != TERN_BF16))
		return false;
	if (op == TERN_OP_GEMM && prec != TERN_F32)
		return prec == TERN_BF16 && be->vt->supports_prec && be->vt->supports_prec(be, op, prec);
	if (op != TERN_OP_MATMUL && op != TERN_OP_MATMUL_BWD)
		return prec == TERN_F32;
	return be->vt->supports_prec ? be->vt->supports_prec(be, op, prec) : prec == TERN_F32;
}

bool tern_backend_variant_ok(struct tern_backend *be, const char *variant)
{
	return be->vt->has_variant && be->vt->has_variant(be, variant);
}

enum tern_dtype tern_backend_auto_prec(struct tern_backend *be)
{
	return be->vt->auto_prec ? be->vt->auto_prec(be) : TERN_F32;
}

bool tern_backend_has_op(const struct tern_backend *be, enum tern_op op)
{
	const struct tern_backend_vtable *v = be->vt;
	switch (op) {
	case TERN_OP_MATMUL: return v->matmul;
	case TERN_OP_MATMUL_BWD: return v->matmul_bwd;
	case TERN_OP_GEMM: return v->gemm;
	case TERN_OP_DROPOUT: return v->dropout;
	case TERN_OP_AXPY: return v->axpy;
	case TERN_OP_ADAMW: return v->adamw;
	case TERN_OP_SUMSQ: return v->sumsq;
	case TERN_OP_SCALE: return v->scale;
	case TERN_OP_CLIP: return v->clip;
	case TERN_OP_CAST: return v->cast;
	case TERN_OP_RMSNORM: return v->rmsnorm;
	case TERN_OP_RMSNORM_BWD: return v->rmsnorm_bwd;
	case TERN_OP_ROPE: return v->rope;
	case TERN_OP_SWIGLU: return v->swiglu;
	case TERN_OP_SWIGLU_BWD: return v->swiglu_bwd;
	case TERN_OP_EMBED: return v->embed;
	case TERN_OP_ATTENTION: return v->attention;
	case TERN_OP_ATTENTION_BWD: return v->attention_bwd;
	case TERN_OP_ATTENTION_KV: return v->attention_kv;
	case TERN_OP_CE_LOSS: return v->ce_loss;
	case TERN_OP_EMBED_BWD: return v->embed_bwd;
	case TERN_OP_GATHER_ROWS: return v->gather_rows;
	case TERN_OP_SCATTER_ADD_ROWS: return v->scatter_add_rows;
	case TERN_OP_ROWDOT: return v->rowdot;
	case TERN_OP_ROUTE_TOPK: return v->route_topk;
	case TERN_OP_ROUTE_TOPK_BWD: return v->route_topk_bwd;
	case TERN_OP_MATMUL_GROUPED: return v->matmul_grouped;
	case TERN_OP_MATMUL_GROUPED_BWD: return v->matmul_grouped_bwd;
	case TERN_OP_ACT_QUANT8: return v->act_quant8;
	case TERN_OP_ARGMAX: return v->argmax;
	case TERN_OP_MATMUL_LORA: return v->matmul_lora;
	case TERN_OP_MATMUL_LORA_BWD: return v->matmul_lora_bwd;
	case TERN_OP_ADD_RMSNORM: return v->add_rmsnorm;
	case TERN_OP_COUNT: break;
	}
	return false;
}

bool tern_decode_legacy(void)
{
	static int on = -1;
	if (on < 0) {
		const char *e = getenv("TERN_DECODE_LEGACY");
		on = e && *e && strcmp(e, "0") != 0;
	}
	return on == 1;
}
