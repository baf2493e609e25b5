/* The residency planner: see include/tern/plan.h and train/plan.h. */
#define _POSIX_C_SOURCE 200809L
#include "train/plan.h"

#include "model/model.h"
#include "model/pack.h"
#include "train/adapter.h"
#include "train/net.h"
#include "backend/backend.h"
#include "tern/hub.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MIB ((uint64_t)1 << 20)
#define GIB ((uint64_t)1 << 30)
#define SMALL_ALIGN 256     /* src/train/net.c: views in the small fp32 block */
#define PACK_KEY_ABOUT 4096 /* the pack key's JSON text, about */

const char *tern_plan_tier_name(enum tern_plan_tier t)
{
	static const char *const n[TERN_PLAN_TIERS] = {"device", "host", "disk"};
	return (unsigned)t < TERN_PLAN_TIERS ? n[t] : "?";
}

void tern_plan_fmt(char *buf, size_t size, uint64_t b)
{
	if (b >= GIB)
		snprintf(buf, size, "%.2f GiB", (double)b / (double)GIB);
	else if (b >= MIB)
		snprintf(buf, size, "%.1f MiB", (double)b / (double)MIB);
	else if (b >= 1024)
		snprintf(buf, size, "%.1f KiB", (double)b / 1024.0);
	else
		snprintf(buf, size, "%" PRIu64 " bytes", b);
}

uint64_t tern_plan_device_auto(uint64_t heap)
{
	uint64_t m = heap / 10 > TERN_PLAN_DEVICE_MARGIN_MIN ? heap / 10 : TERN_PLAN_DEVICE_MARGIN_MIN;
	return heap > m ? heap - m : 0;
}

uint64_t tern_plan_host_auto_from(uint64_t avail)
{
	uint64_t m = avail / 10 > TERN_PLAN_HOST_MARGIN_MIN ? avail / 10 : TERN_PLAN_HOST_MARGIN_MIN;
	return avail > m ? avail - m : 0;
}

enum tern_status tern_plan_host_auto(uint64_t *bytes)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (!f)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "host_memory: auto reads MemAvailable from /proc/meminfo, which cannot be "
				 "opened; give a size (--host-memory 32GB or host_memory: 32GB)");
	char line[256];
	unsigned long long kb = 0;
	bool found = false;
	while (fgets(line, sizeof line, f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
			found = true;
			break;
		}
	fclose(f);
	if (!found)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "host_memory: auto found no MemAvailable line in /proc/meminfo; give a size "
				 "(--host-memory 32GB or host_memory: 32GB)");
	*bytes = tern_plan_host_auto_from((uint64_t)kb * 1024);
	return TERN_OK;
}

enum tern_base_format tern_plan_format(const struct tern_model_config *mc, const struct tern_config *cfg)
{
	enum tern_base_format f = cfg->base_format;
	if (f != TERN_FORMAT_AUTO)
		return f;
	if (mc->arch == TERN_ARCH_BITNET)
		return TERN_FORMAT_TERNARY;
	if (mc->qmethod == TERN_QMETHOD_BNB_4BIT)
		return mc->bnb_double_quant ? TERN_FORMAT_NF4_DQ : TERN_FORMAT_NF4;
	if (mc->qmethod == TERN_QMETHOD_NONE)
		return mc->dtype == TERN_F32   ? TERN_FORMAT_F32
		       : mc->dtype == TERN_F16 ? TERN_FORMAT_F16
					       : TERN_FORMAT_BF16;
	return TERN_FORMAT_NF4_DQ; /* quantize on load (tern_model_open's default) */
}

unsigned tern_plan_modules(const struct tern_config *cfg)
{
	unsigned m = 0;
	if (cfg->lora_target_linear)
		m = (1u << TERN_MOD_COUNT) - 1;
	for (int i = 0; i < cfg->n_target_modules; i++) {
		enum tern_module mo;
		if (tern_module_parse(cfg->lora_target_modules[i], &mo))
			m |= 1u << mo;
	}
	return m;
}

unsigned tern_plan_experts(const struct tern_config *cfg)
{
	unsigned e = 0;
	for (int i = 0; i < cfg->n_target_parameters; i++)
		e |= tern_expert_param_bit(cfg->lora_target_parameters[i]);
	for (int i = 0; i < cfg->n_target_modules; i++) /* PEFT's target_modules "gate": the router */
		e |= !strcmp(cfg->lora_target_modules[i], "gate") ? 4u : 0u;
	return e;
}

int64_t tern_plan_mlp_shards(const struct tern_config *cfg, int64_t T, int64_t D)
{
	if (!cfg->tiled_mlp)
		return 0;
	return cfg->tiled_mlp_num_shards > 0 ? cfg->tiled_mlp_num_shards : (T + D - 1) / (D > 0 ? D : 1);
}

unsigned tern_plan_full(const struct tern_config *cfg)
{
	unsigned f = 0;
	for (int i = 0; i < cfg->n_modules_to_save; i++) {
		enum tern_full x;
		if (tern_full_parse(cfg->lora_modules_to_save[i], &x))
			f |= 1u << x;
	}
	return f;
}

static enum tern_dtype format_dtype(enum tern_base_format f)
{
	switch (f) {
	case TERN_FORMAT_NF4: return TERN_NF4;
	case TERN_FORMAT_NF4_DQ: return TERN_NF4_DQ;
	case TERN_FORMAT_TERNARY: return TERN_TERNARY;
	case TERN_FORMAT_F16: return TERN_F16;
	case TERN_FORMAT_F32: return TERN_F32;
	default: return TERN_BF16;
	}
}

/* Bytes of a tensor inside its pack group: each part 256-aligned (tern_pack_build_begin). */
static uint64_t pack_tensor_bytes(enum tern_dtype dt, int64_t O, int64_t I)
{
	uint64_t s[3], b = 0;
	tern_pack_part_sizes(dt, O, I, 64, s);
	for (int k = 0; k < 3; k++)
		b += tern_align_up(s[k], TERN_PACK_ALIGN);
	return b;
}

static void item(struct tern_plan_item *it, int *n, int max, uint64_t bytes, const char *fmt, ...)
	TERN_PRINTF(5, 6);
static void item(struct tern_plan_item *it, int *n, int max, uint64_t bytes, const char *fmt, ...)
{
	if (*n >= max || bytes == 0)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(it[*n].name, sizeof it[*n].name, fmt, ap);
	va_end(ap);
	it[*n].bytes = bytes;
	(*n)++;
}

/* A layer range "3-17" or "5" into buf. */
static void range_str(char *buf, size_t size, const struct tern_plan *p, enum tern_plan_tier t)
{
	int64_t first = -1, last = -1;
	for (int64_t l = 0; l < p->L; l++)
		if (p->tier[l] == t) {
			if (first < 0)
				first = l;
			last = l;
		}
	if (first < 0)
		snprintf(buf, size, "none");
	else if (first == last)
		snprintf(buf, size, "layer %" PRId64, first);
	else
		snprintf(buf, size, "layers %" PRId64 "-%" PRId64, first, last);
}

enum tern_status tern_plan_split_parse(const struct tern_config *cfg, int64_t *k, int max, int *n)
{
	const char *v = cfg->layer_split, *file = cfg->file ? cfg->file : "config";
	*n = -1;
	if (!v || !*v || !strcmp(v, "false") || !strcmp(v, "off") || !strcmp(v, "no") || !strcmp(v, "none"))
		return TERN_OK;
	if (!strcmp(v, "auto") || !strcmp(v, "true")) {
		*n = 0;
		return TERN_OK;
	}
	int c = 0;
	for (const char *p = v;;) {
		char *end;
		while (*p == ' ')
			p++;
		long long x = strtoll(p, &end, 10);
		while (*end == ' ')
			end++;
		if (end == p || x < 1 || (*end && *end != ',') || c >= max || (c && x <= k[c - 1]))
			return tern_fail(
				TERN_E_INVALID,
				"%s: layer_split: '%s' is not false, auto or increasing layer indices "
				"(the first layer of each stage after the first, e.g. 16 for two stages "
				"or 10,20,30 for four)",
				file, v);
		k[c++] = x;
		if (!*end)
			break;
		p = end + 1;
	}
	*n = c;
	return TERN_OK;
}

/* The auto split: contiguous stages, stage s holding extra[s] bytes of global tensors besides its
 * layers of lb bytes each; the smallest cap C such that filling each stage in turn with as many
 * layers as fit under C (at least one, leaving one for each later stage) places every layer.
 * Filling greedily is optimal for a fixed order of stages, so the largest stage is as small as
 * a contiguous split can make it. */
static void split_auto(int64_t L, int S, uint64_t lb, const uint64_t *extra, int64_t *split)
{
	uint64_t lo = 0, hi = (uint64_t)L * lb;
	for (int s = 0; s < S; s++)
		hi += extra[s];
	while (lo < hi) {
		uint64_t C = lo + (hi - lo) / 2;
		int64_t at = 0;
		bool ok = true;
		for (int s = 0; s < S && ok; s++) {
			int64_t left = L - at, later = S - 1 - s;
			int64_t fit = C > extra[s] ? (int64_t)((C - extra[s]) / (lb ? lb : 1)) : 0;
			int64_t take = s == S - 1 ? left : fit < left - later ? fit : left - later;
			if (take < 1 || extra[s] + (uint64_t)take * lb > C)
				ok = false;
			at += take;
		}
		if (ok)
			hi = C;
		else
			lo = C + 1;
	}
	int64_t at = 0;
	for (int s = 0; s < S; s++) {
		split[s] = at;
		int64_t left = L - at, later = S - 1 - s;
		int64_t fit = lo > extra[s] ? (int64_t)((lo - extra[s]) / (lb ? lb : 1)) : 0;
		int64_t take = s == S - 1 ? left : fit < left - later ? fit : left - later;
		at += take < 1 ? 1 : take;
	}
	split[S] = L;
}

/* tern_plan_make with the layer inputs on the device (offload false) or offloaded to the host. */
static enum tern_status plan_once(const struct tern_model_config *mc, const struct tern_config *cfg,
				  uint64_t device_budget, uint64_t host_budget, bool offload,
				  struct tern_plan *out)
{
	int depth = out->prefetch_depth > 0 ? out->prefetch_depth : TERN_PLAN_DEFAULT_DEPTH;
	struct tern_plan keep = *out; /* the auto-budget fields the caller may have set */
	memset(out, 0, sizeof *out);
	out->prefetch_depth = depth;
	out->stages = keep.stages > 1 ? keep.stages : 1;
	out->stage = keep.stage;
	out->prec = keep.prec;
	out->device_auto = keep.device_auto;
	out->host_auto = keep.host_auto;
	out->device_detected = keep.device_detected;
	memcpy(out->device_name, keep.device_name, sizeof out->device_name);
	const char *file = cfg->file ? cfg->file : "config";
	if (mc->L < 1 || mc->L > TERN_PLAN_MAX_LAYERS)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: num_hidden_layers %lld: the planner handles 1 to %d layers", file,
				 (long long)mc->L, TERN_PLAN_MAX_LAYERS);
	if (depth > 64)
		return tern_fail(TERN_E_INVALID, "plan: prefetch depth %d out of range (allowed: 1..64)",
				 depth);
	bool moe = mc->E > 0;
	int64_t L = mc->L;
	int64_t T = cfg->micro_batch_size * cfg->sequence_len;
	/* the figures the config's backend allocates for itself (before anything is filled in, so a
	 * backend this build lacks fails the plan with nothing to print) */
	enum tern_base_format fmt = tern_plan_format(mc, cfg);
	enum tern_dtype pdt = format_dtype(fmt), odt = mc->dtype;
	struct tern_backend_sizes bs;
	/* the config's backend's own sizes; auto counts what it picks on a machine with a GPU. Its
	 * scratch may depend on the products' shapes: the widest operand and the largest projection
	 * (the experts' too), the attention's heads, the precision and dtypes */
	int64_t qd = mc->H * mc->Dh, Fx = mc->E > 0 && mc->Fe > mc->F ? mc->Fe : mc->F;
	int64_t K = mc->D > Fx ? mc->D : Fx;
	K = qd > K ? qd : K;
	struct tern_size_shapes shp = {
		.T = T,
		.V = mc->V,
		.D = mc->D,
		.K = K,
		.W = (qd > Fx ? qd : Fx) * mc->D,
		.H = mc->H,
		.Hkv = mc->Hkv,
		.Dh = mc->Dh,
		.prec = (enum tern_dtype)out->prec,
		.proj = pdt,
		.head = (tern_plan_full(cfg) >> TERN_FULL_HEAD) & 1u ? TERN_F32 : odt,
	};
	enum tern_status st = tern_backend_sizes_for(tern_backend_kind_name(cfg->backend), &shp, &bs);
	if (st) {
		char msg[512];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st, "%s: %s", file, msg);
	}
	snprintf(out->model_type, sizeof out->model_type, "%s", mc->model_type);
	snprintf(out->format, sizeof out->format, "%s", tern_base_format_name(fmt));
	out->L = L;
	out->E = moe ? mc->E : 0;
	out->top_k = moe ? mc->top_k : 0;
	out->T = T;
	out->accum = cfg->gradient_accumulation_steps;
	out->device_budget = device_budget;
	out->host_budget = host_budget;

	/* ---- the pack groups, from the tensor map ---- */
	struct tern_tensor_spec *spec = NULL;
	size_t ns = 0;
	st = tern_model_tensor_map(mc, &spec, &ns);
	if (st)
		return st;
	uint64_t embed = 0, head = 0, fnorm = 0, small = 0;
	size_t n_layer0 = 0;
	for (size_t i = 0; i < ns; i++) {
		const struct tern_tensor_spec *s = &spec[i];
		bool proj = tern_role_is_proj(s->role);
		uint64_t b = pack_tensor_bytes(proj ? pdt : odt, s->shape[0], s->shape[1]);
		if (s->layer < 0) {
			if (s->role == TERN_ROLE_EMBED)
				embed = b;
			else if (s->role == TERN_ROLE_HEAD)
				head = b;
			else
				fnorm = b;
			continue;
		}
		if (s->layer != 0)
			continue;
		n_layer0++;
		out->layer_bytes += b; /* a sparse layer's map holds the router and every expert */
		if (s->expert == 0)
			out->expert_bytes += b;
		if (!proj && s->role != TERN_ROLE_ROUTER) /* its fp32 copy in the small block, per layer */
			small += tern_align_up((uint64_t)s->shape[0] * 4, SMALL_ALIGN) * (uint64_t)L;
	}
	free(spec);
	out->global_bytes = embed + head + fnorm;
	/* tied: the global group goes to the device whole (the embeddings are the lm_head); untied:
	 * the lm_head only, the embeddings stay in host memory (net.c gathers a micro-batch's rows) */
	bool tied = head == 0;

	/* ---- the layer split: this stage's layers ---- */
	int64_t ks[TERN_PLAN_MAX_STAGES];
	int nk;
	if ((st = tern_plan_split_parse(cfg, ks, TERN_PLAN_MAX_STAGES - 1, &nk)))
		return st;
	if (keep.stages == 0 && nk > 0) /* tern plan without --stages: the list's stages */
		out->stages = nk + 1;
	if (keep.stages == 1) /* one device (the trainer with one rank, tern eval): no split */
		nk = -1;
	int S = out->stages;
	if (S > TERN_PLAN_MAX_STAGES || S > L || (nk > 0 && nk != S - 1) || out->stage < 0 ||
	    out->stage >= S) {
		if (nk > 0 && nk != S - 1)
			return tern_fail(
				TERN_E_INVALID,
				"%s: layer_split: %s gives %d stages, and there are %d devices (ranks); "
				"give %d boundaries or use auto",
				file, cfg->layer_split, nk + 1, S, S - 1);
		return tern_fail(TERN_E_INVALID,
				 "%s: layer_split: %d stages for %lld layers (at most one stage per layer "
				 "and %d stages; run fewer ranks)",
				 file, S, (long long)L, TERN_PLAN_MAX_STAGES);
	}
	if (nk > 0) {
		out->split[0] = 0;
		for (int i = 0; i < nk; i++) {
			if (ks[i] >= L)
				return tern_fail(TERN_E_INVALID,
						 "%s: layer_split: %s names layer %lld of a %lld-layer model "
						 "(each boundary is a layer from 1 to %lld)",
						 file, cfg->layer_split, (long long)ks[i], (long long)L,
						 (long long)(L - 1));
			out->split[i + 1] = ks[i];
		}
		out->split[S] = L;
	} else {
		uint64_t extra[TERN_PLAN_MAX_STAGES] = {0};
		extra[0] += tied ? embed + fnorm : 0;
		extra[S - 1] += tied ? (S > 1 ? embed + fnorm : 0) : head;
		split_auto(L, S, out->layer_bytes, extra, out->split);
	}
	for (int s = 0; s < S; s++)
		out->stage_weights[s] = (uint64_t)(out->split[s + 1] - out->split[s]) * out->layer_bytes +
					(s == 0 && tied ? embed + fnorm : 0) +
					(s == S - 1 ? (tied ? (s > 0 ? embed + fnorm : 0) : head) : 0);
	out->l0 = out->split[out->stage];
	out->l1 = out->split[out->stage + 1];
	bool first = out->stage == 0, last = out->stage == S - 1;
	uint64_t meta = TERN_PACK_HEADER + (n_layer0 * (uint64_t)L + 3) * TERN_PACK_RECORD +
			16 * (uint64_t)(L + 1) + PACK_KEY_ABOUT;
	out->pack_bytes = tern_align_up(meta, TERN_PACK_PAGE) +
			  tern_align_up(out->global_bytes, TERN_PACK_PAGE) +
			  tern_align_up(out->layer_bytes, TERN_PACK_PAGE) * (uint64_t)L;
	/* the rest of the small block: final norm, inv_freq [Dh/2], ones [T] */
	small += tern_align_up((uint64_t)mc->D * 4, SMALL_ALIGN) +
		 tern_align_up((uint64_t)(mc->Dh / 2) * 4, SMALL_ALIGN) +
		 tern_align_up((uint64_t)T * 4, SMALL_ALIGN);

	/* ---- LoRA and activations: tern_net_sizes (the activations of a MoE model exactly as the net
	 * lays them out: every expert's rows for top_k experts per token) ---- */
	unsigned mods = tern_plan_modules(cfg);
	if (moe &&
	    cfg->lora_target_linear) /* as the trainer: the attention (experts: lora_target_parameters) */
		mods &= ~((1u << TERN_MOD_GATE) | (1u << TERN_MOD_UP) | (1u << TERN_MOD_DOWN));
	struct tern_net_opts no = {.R = cfg->lora_r,
				   .modules = mods,
				   .experts = moe ? tern_plan_experts(cfg) : 0,
				   .T = T,
				   .checkpointing = cfg->gradient_checkpointing,
				   .offload = offload,
				   .mlp_shards = tern_plan_mlp_shards(cfg, T, mc->D),
				   .prec = (enum tern_dtype)out->prec,
				   .l0 = out->l0,
				   .l1 = out->l1};
	struct tern_net_sizes ns_all;
	if ((st = tern_net_sizes(mc, &no, &ns_all)))
		return st;
	uint64_t lora = ns_all.lora, act = ns_all.act;
	int64_t params = ns_all.params;
	out->offload = ns_all.offload_slots > 0;
	out->offload_host = ns_all.offload_host;
	out->offload_slots = ns_all.offload_slots;

	/* modules trained in full (modules_to_save): fp32 [V, D] weights, gradients and both moments
	 * in buffers of their own; the bytes they add, as the net allocates them */
	unsigned full = tern_plan_full(cfg);
	uint64_t full_bytes = 0;
	if (full) {
		struct tern_net_opts nf = no;
		nf.full = full;
		struct tern_net_sizes sf;
		if ((st = tern_net_sizes(mc, &nf, &sf)))
			return st;
		full_bytes = sf.lora - ns_all.lora;
	}
	out->lora_params = params;

	/* ---- fixed device costs ---- */
	struct tern_plan_item *fx = out->fixed;
	int *nf = &out->n_fixed;
	const char *dn = tern_dtype_name(odt);
	/* a stage: the embeddings on the first, lm_head and final norm on the last (tied: the global
	 * group on both) */
	item(fx, nf, TERN_PLAN_ITEMS, tied && (first || last) ? embed : 0, "embeddings [%lld, %lld] %s%s",
	     (long long)mc->V, (long long)mc->D, dn,
	     tied ? " (tied: the lm_head)" : " (host: rows gathered per micro-batch)");
	item(fx, nf, TERN_PLAN_ITEMS, last ? head : 0, "lm_head [%lld, %lld] %s", (long long)mc->V,
	     (long long)mc->D, dn);
	item(fx, nf, TERN_PLAN_ITEMS, tied && (first || last) ? fnorm : 0, "final norm [%lld] %s",
	     (long long)mc->D, dn);
	item(fx, nf, TERN_PLAN_ITEMS, small, "fp32 norms, biases, inv_freq, ones");
	item(fx, nf, TERN_PLAN_ITEMS, lora / 4, "LoRA parameters (%lld, r %lld)", (long long)params,
	     (long long)cfg->lora_r);
	item(fx, nf, TERN_PLAN_ITEMS, lora / 4, "LoRA gradients");
	item(fx, nf, TERN_PLAN_ITEMS, lora / 4, "AdamW first moments");
	item(fx, nf, TERN_PLAN_ITEMS, lora / 4, "AdamW second moments");
	item(fx, nf, TERN_PLAN_ITEMS, full_bytes, "%s%s%s in full (f32, grads, AdamW)",
	     (full & 1u) ? "embed_tokens" : "", full == 3u ? ", " : "", (full & 2u) ? "lm_head" : "");
	/* tiled_mlp: the shards the net runs (none without checkpointing or with experts) */
	char tiled[48] = "";
	if (ns_all.mlp_shards > 1)
		snprintf(tiled, sizeof tiled, ", MLP in %lld shards", (long long)ns_all.mlp_shards);
	item(fx, nf, TERN_PLAN_ITEMS, act, "activations (%lld tokens%s%s%s)", (long long)T,
	     out->offload                  ? ", checkpoints offloaded"
	     : cfg->gradient_checkpointing ? ", checkpointed"
					   : "",
	     out->prec == TERN_F16    ? (out->offload ? ", f16" : ", f16 inputs")
	     : out->prec == TERN_BF16 ? (out->offload ? ", bf16" : ", bf16 inputs")
				      : "",
	     tiled);
	/* the backend's own (asked above): what its ce_loss allocates, a reserve for its buffers */
	if (bs.shared) /* one scratch the products and attention take too (CUDA) */
		item(fx, nf, TERN_PLAN_ITEMS, bs.ce_scratch, "shared scratch (ce_loss: %lld x %lld logits)",
		     (long long)bs.ce_chunk, (long long)mc->V);
	else
		item(fx, nf, TERN_PLAN_ITEMS, bs.ce_scratch, "ce_loss scratch (%lld tokens x %lld logits)",
		     (long long)bs.ce_chunk, (long long)mc->V);
	item(fx, nf, TERN_PLAN_ITEMS, bs.reserve, "backend reserve (own buffers, rounding)");
	for (int i = 0; i < *nf; i++)
		out->fixed_bytes += fx[i].bytes;

	/* ---- host reserve ---- */
	item(out->host_reserve, &out->n_host_reserve, 4, TERN_PLAN_HOST_RESERVE,
	     "tern, tokenized data, staging, page cache");
	item(out->host_reserve, &out->n_host_reserve, 4, (lora + full_bytes) / 4 * 3,
	     full ? "LoRA + modules_to_save host copy (params, moments)"
		  : "LoRA host copy (parameters, moments)");
	if (out->offload)
		item(out->host_reserve, &out->n_host_reserve, 4, out->offload_host,
		     "offloaded layer inputs (%lld, pinned; 2 device slots)",
		     (long long)(out->l1 - out->l0 - 1));
	for (int i = 0; i < out->n_host_reserve; i++)
		out->host_reserve_bytes += out->host_reserve[i].bytes;

	/* ---- placement ---- */
	/* this stage's layers */
	int64_t Lall = L;
	L = out->l1 - out->l0;
	uint64_t lb = out->layer_bytes, Lu = (uint64_t)L, slots = (uint64_t)depth + 1;
	out->all_device = out->fixed_bytes + Lu * lb;
	uint64_t stream_min = out->fixed_bytes + slots * lb;
	out->min_device = stream_min < out->all_device ? stream_min : out->all_device;
	out->loads_per_micro = 2;
	char a[32], b[32], c[32], d[32];
	if (device_budget < out->min_device) {
		tern_plan_fmt(a, sizeof a, device_budget);
		tern_plan_fmt(b, sizeof b, out->min_device);
		tern_plan_fmt(c, sizeof c, out->fixed_bytes);
		tern_plan_fmt(d, sizeof d, lb);
		snprintf(out->verdict, sizeof out->verdict,
			 "does not fit: the device budget %s is below the smallest that works, %s", a, b);
		if (out->min_device != out->all_device) { /* the slots it would need */
			out->n_slots = depth + 1;
			out->slot_bytes = slots * lb;
		}
		if (out->min_device == out->all_device)
			return tern_fail(
				TERN_E_DEVICE_MEM,
				"%s: device budget %s is below the smallest that works, %s (%" PRIu64
				" bytes: fixed costs %s + %lld layers of %s); raise device_memory or lower "
				"sequence_len or micro_batch_size",
				file, a, b, out->min_device, c, (long long)L, d);
		return tern_fail(
			TERN_E_DEVICE_MEM,
			"%s: device budget %s is below the smallest that works, %s (%" PRIu64
			" bytes: fixed costs %s + %d streaming slots of %s); raise device_memory or lower "
			"sequence_len or micro_batch_size",
			file, a, b, out->min_device, c, depth + 1, d);
	}
	int64_t nd = L;
	if (device_budget < out->all_device) {
		out->n_slots = depth + 1;
		out->slot_bytes = slots * lb;
		nd = (int64_t)((device_budget - stream_min) / lb);
		if (nd > L)
			nd = L;
	}
	uint64_t host_room =
		host_budget > out->host_reserve_bytes ? host_budget - out->host_reserve_bytes : 0;
	int64_t nh = (int64_t)(host_room / lb);
	if (nh > L - nd)
		nh = L - nd;
	for (int64_t l = 0; l < Lall; l++) {
		int64_t i = l - out->l0; /* the stage's i-th layer */
		out->tier[l] = l < out->l0 || l >= out->l1 ? TERN_PLAN_TIERS
			       : i < nd                    ? TERN_PLAN_DEVICE
			       : i < nd + nh               ? TERN_PLAN_HOST
							   : TERN_PLAN_DISK;
	}
	out->n_layers[TERN_PLAN_DEVICE] = nd;
	out->n_layers[TERN_PLAN_HOST] = nh;
	out->n_layers[TERN_PLAN_DISK] = L - nd - nh;
	out->used[TERN_PLAN_DEVICE] = out->fixed_bytes + out->slot_bytes + (uint64_t)nd * lb;
	out->used[TERN_PLAN_HOST] = out->host_reserve_bytes + (uint64_t)nh * lb;
	out->used[TERN_PLAN_DISK] = (uint64_t)(L - nd - nh) * lb;
	for (int t = TERN_PLAN_HOST; t < TERN_PLAN_TIERS; t++)
		out->streamed[t] = (uint64_t)out->loads_per_micro * (uint64_t)out->n_layers[t] * lb *
				   (uint64_t)(out->accum > 0 ? out->accum : 1);
	if (out->E > 0) {
		double E = (double)out->E, hit = E * (1.0 - pow(1.0 - (double)out->top_k / E, (double)T));
		out->experts_hit = hit;
		/* one load of a sparse layer; whole when nearly every expert is hit (net.c experts_all) */
		double per = hit >= 0.875 * E ? (double)lb
					      : (double)(lb - (uint64_t)out->E * out->expert_bytes) +
							hit * (double)out->expert_bytes;
		for (int t = TERN_PLAN_HOST; t < TERN_PLAN_TIERS; t++)
			out->streamed_est[t] =
				(uint64_t)((double)out->loads_per_micro * (double)out->n_layers[t] * per *
					   (double)(out->accum > 0 ? out->accum : 1));
	} else {
		for (int t = 0; t < TERN_PLAN_TIERS; t++)
			out->streamed_est[t] = out->streamed[t];
	}
	out->ok = true;

	tern_plan_fmt(a, sizeof a, out->used[TERN_PLAN_DEVICE]);
	tern_plan_fmt(b, sizeof b, device_budget);
	if (nd == L) {
		snprintf(out->verdict, sizeof out->verdict,
			 "fits: all %lld layers on the device (%s of %s), nothing streamed", (long long)L, a,
			 b);
	} else {
		char rd[48], rh[48], rk[48];
		range_str(rd, sizeof rd, out, TERN_PLAN_DEVICE);
		range_str(rh, sizeof rh, out, TERN_PLAN_HOST);
		range_str(rk, sizeof rk, out, TERN_PLAN_DISK);
		tern_plan_fmt(c, sizeof c, out->streamed[TERN_PLAN_HOST] + out->streamed[TERN_PLAN_DISK]);
		snprintf(out->verdict, sizeof out->verdict,
			 "works with streaming: device %s, host %s, disk %s; %s streamed per step", rd, rh,
			 rk, c);
	}
	return TERN_OK;
}

/* gradient_checkpointing: offload always offloads the layer inputs; true only where the plan with
 * them on the device does not fit the device budget at all and offloading them fits (the verdict
 * says so). */
enum tern_status tern_plan_make(const struct tern_model_config *mc, const struct tern_config *cfg,
				uint64_t device_budget, uint64_t host_budget, struct tern_plan *out)
{
	bool asked = cfg->gradient_checkpointing == TERN_CKPT_OFFLOAD;
	struct tern_plan *in = NULL, *alt = NULL;
	if (!asked && cfg->gradient_checkpointing && !(in = tern_malloc(2 * sizeof *in)))
		return TERN_E_NOMEM;
	if (in)
		*in = *out;
	enum tern_status st = plan_once(mc, cfg, device_budget, host_budget, asked, out);
	if (in && st == TERN_E_DEVICE_MEM) {
		alt = in + 1;
		*alt = *in;
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		enum tern_status st2 = plan_once(mc, cfg, device_budget, host_budget, true, alt);
		if (st2 == TERN_OK && alt->offload) {
			*out = *alt;
			size_t n = strlen(out->verdict);
			snprintf(out->verdict + n, sizeof out->verdict - n,
				 " (layer inputs offloaded to the host: on the device they would not fit)");
			st = TERN_OK;
			tern_clear_error();
		} else if (st2 == TERN_E_DEVICE_MEM && alt->min_device < out->min_device) {
			*out = *alt; /* neither fits: the smallest budget that works is the offloaded one's */
		} else {
			tern_fail(st, "%s", msg); /* the first plan's error stands */
		}
	}
	free(in);
	return st;
}

/* The device budget for device_memory: auto: the config's GPU device's budget
 * (VK_EXT_memory_budget where present, else its heap: the backend's memory_info), else the
 * device-local memory tern_devices reports, less the margin. */
static enum tern_status device_auto(const struct tern_config *cfg, struct tern_plan *p, uint64_t *budget)
{
	static const char fix[] = "give a size: --device-memory 12GB, or device_memory: 12GB in the config";
	if (cfg->backend == TERN_BACKEND_CPU || cfg->backend == TERN_BACKEND_REF)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "%s: device_memory: auto reads a GPU's memory, and the backend is a CPU; %s",
				 cfg->file, fix);
	/* the config's GPU backend; auto: cuda (where built and present), then vulkan */
	const char *gpus[2] = {cfg->backend == TERN_BACKEND_VULKAN ? "vulkan" : "cuda",
			       cfg->backend == TERN_BACKEND_AUTO ? "vulkan" : NULL};
	for (int g = 0; g < 2 && gpus[g] && !p->device_detected; g++) {
		struct tern_backend *be = NULL;
		if (tern_backend_create(gpus[g], (int)cfg->device, &be) == TERN_OK) {
			uint64_t b = 0, used = 0;
			if (be->vt->memory_info && be->vt->memory_info(be, &b, &used) == TERN_OK &&
			    b > used) {
				p->device_detected = b - used;
				snprintf(p->device_name, sizeof p->device_name, "%s", be->device_name);
				/* compute_dtype auto: what this device runs (the trainer's choice) */
				p->prec = (int)tern_backend_auto_prec(be);
			}
			tern_backend_free(be);
		}
		tern_clear_error();
	}
	if (!p->device_detected) {
		struct tern_device_info dev[16];
		int n = 0;
		if (tern_devices(dev, 16, &n))
			n = 0;
		for (int g = 0; g < 2 && gpus[g] && !p->device_detected; g++)
			for (int i = 0; i < n; i++)
				if (!strcmp(dev[i].backend, gpus[g]) && dev[i].index == (int)cfg->device &&
				    dev[i].device_local_bytes) {
					p->device_detected = dev[i].device_local_bytes;
					snprintf(p->device_name, sizeof p->device_name, "%s", dev[i].name);
					break;
				}
	}
	if (!p->device_detected)
		return tern_fail(
			TERN_E_UNAVAILABLE,
			"%s: device_memory: auto reads a GPU's memory, and no %s device %lld was found; %s",
			cfg->file,
			cfg->backend == TERN_BACKEND_CUDA   ? "CUDA"
			: cfg->backend == TERN_BACKEND_AUTO ? "CUDA or Vulkan"
							    : "Vulkan",
			(long long)cfg->device, fix);
	*budget = tern_plan_device_auto(p->device_detected);
	p->device_auto = true;
	return TERN_OK;
}

bool tern_plan_parse_size(const char *s, int64_t *bytes) { return tern_parse_size(s, bytes); }

enum tern_status tern_plan_config(const char *config_path, const char *const *sets, int n_sets,
				  int64_t device_memory, int64_t host_memory, struct tern_plan *out)
{
	struct tern_config *cfg = NULL;
	struct tern_model_config mc;
	int depth = out->prefetch_depth, stages = out->stages, stage = out->stage;
	memset(out, 0, sizeof *out);
	enum tern_status st = tern_config_load(&cfg, config_path);
	if (st)
		return st;
	for (int i = 0; i < n_sets && st == TERN_OK; i++)
		st = tern_config_set(cfg, sets[i]);
	if (st == TERN_OK && n_sets)
		st = tern_config_check(cfg);
	char *dir = NULL; /* base_model's directory: only config.json is fetched for a Hub id */
	if (st == TERN_OK)
		st = tern_hub_resolve(cfg->base_model, cfg->revision_of_model, TERN_HUB_CONFIG, &dir, NULL);
	if (st == TERN_OK)
		st = tern_model_config_load(dir, &mc);
	free(dir);
	uint64_t dev = 0, host = 0;
	int64_t dm = device_memory >= 0 ? device_memory : cfg ? cfg->device_memory : 0;
	int64_t hm = host_memory >= 0 ? host_memory : cfg ? cfg->host_memory : 0;
	if (st == TERN_OK) {
		if (dm > 0)
			dev = (uint64_t)dm;
		else
			st = device_auto(cfg, out, &dev);
	}
	if (st == TERN_OK) {
		if (hm > 0) {
			host = (uint64_t)hm;
		} else {
			st = tern_plan_host_auto(&host);
			out->host_auto = true;
		}
	}
	if (st == TERN_OK) {
		out->prefetch_depth = depth;
		out->stages = stages;
		out->stage = stage;
		/* an explicit f16/bf16 is known here; auto is the device's choice: the one device_auto
		 * read from the device it opened (the trainer resolves it the same way), else (a size
		 * given, no device opened) the larger fp32 layer inputs */
		if (cfg->compute_dtype != TERN_COMPUTE_AUTO || !out->device_detected)
			out->prec = cfg->compute_dtype == TERN_COMPUTE_F16    ? TERN_F16
				    : cfg->compute_dtype == TERN_COMPUTE_BF16 ? TERN_BF16
									      : TERN_F32;
		st = tern_plan_make(&mc, cfg, dev, host, out);
	}
	tern_config_free(cfg);
	return st;
}
