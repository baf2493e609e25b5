/* The training loop (include/tern/train.h): config -> data -> model -> backend -> net -> steps.
 *
 * One optimizer step k (0-based) takes the next micro_batch_size · gradient_accumulation_steps rows
 * of the epoch's order (a partial last window is padded with empty rows), counts N = the trained
 * targets of the whole window, runs every micro-batch with inv_n = 1/N (training-math.md "Loss"),
 * then the global norm, clipping, lr = learning_rate · λ(k) and AdamW with step k + 1.
 *
 * Reproducibility: the epoch order is a Fisher-Yates shuffle keyed by (seed, epoch); dropout masks
 * are keyed by (seed, step, micro-batch, layer, module); the LoRA init by seed. A checkpoint holds
 * the parameters, both moments, the step, the schedule length and the data position, so a resumed
 * run performs exactly the remaining computation of an uninterrupted one.
 *
 * Data parallel (src/dist/, several ranks): a step's window is micro_batch_size ·
 * gradient_accumulation_steps · ranks rows; rank r runs its micro-batches, the window's rows
 * r·mb·accum onwards (micro-batch index r·accum + j for the dropout masks, as one process with
 * accum · ranks would number them), N is counted over the whole window, and the gradients and the
 * loss are summed over the ranks before the norm, clipping and AdamW, which every rank then does
 * alike. Rank 0 alone evaluates and writes (output_dir, metrics, checkpoints, the adapter); the
 * data position is in global rows, so a checkpoint resumes with any number of ranks.
 *
 * Layer split (layer_split, several ranks): the ranks are pipeline stages instead; rank r runs
 * layers [l0, l1) of the plan's split (tern_plan_make) on every micro-batch of the step's window
 * (one process's window), passing the boundary's hidden state and its gradient to its neighbours
 * (tern_net_link over tern_dist_send/recv). Every rank keeps the whole LoRA block, whose other
 * layers' gradients stay zero, so the same sum over the ranks gives every rank the one-process
 * gradient (x + 0 is exact), the global norm, clipping and AdamW alike: each rank holds the
 * one-process parameters, and rank 0 writes them. Evaluation runs on every stage (rank 0 prints
 * the last stage's loss, summed). */
#define _POSIX_C_SOURCE 200809L /* mkdir, isatty, fileno, sigaction */
#include "tern/train.h"

#include "backend/backend.h"
#include "data/data.h"
#include "dist/dist.h"
#include "model/model.h"
#include "tern/hub.h"
#include "tern/tokenizer.h"
#include "train/adapter.h"
#include "train/config.h"
#include "train/eval_prompts.h"
#include "train/guard.h"
#include "train/net.h"
#include "train/outdir.h"
#include "train/observe.h"
#include "train/plan.h"
#include "train/resume.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- small helpers ---- */

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* uniform in [0, 1) with 24 bits, as floats are drawn */
static float uniform01(uint64_t *x) { return (float)(splitmix(x) >> 40) * (1.0f / 16777216.0f); }

static enum tern_status mkdirs(const char *path)
{
	char buf[4096];
	size_t n = strlen(path);
	if (n == 0 || n >= sizeof buf)
		return tern_fail(TERN_E_INVALID, "output path '%s' is empty or too long", path);
	memcpy(buf, path, n + 1);
	for (size_t i = 1; i <= n; i++) {
		if (buf[i] != '/' && buf[i] != 0)
			continue;
		char c = buf[i];
		buf[i] = 0;
		if (mkdir(buf, 0777) != 0 && errno != EEXIST)
			return tern_fail(TERN_E_IO, "cannot create directory %s: %s", buf, strerror(errno));
		buf[i] = c;
	}
	struct stat sb;
	if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode))
		return tern_fail(TERN_E_IO, "%s is not a directory", path);
	return TERN_OK;
}

static bool file_exists(const char *path)
{
	struct stat sb;
	return stat(path, &sb) == 0;
}

/* HF schedules (training-math.md); cosine with a floor as transformers'
 * _get_cosine_with_min_lr_schedule_with_warmup_lr_lambda (num_cycles 0.5) and axolotl's
 * _get_cosine_schedule_with_min_lr_lambda compute it. */
double tern_lr_lambda(enum tern_lr_sched s, int64_t k, int64_t W, int64_t K, double min_ratio)
{
	if (k < W)
		return (double)k / (double)(W > 1 ? W : 1);
	double span = (double)(K - W > 1 ? K - W : 1);
	switch (s) {
	case TERN_SCHED_COSINE:
	case TERN_SCHED_COSINE_MIN_LR: {
		double p = (double)(k - W) / span;
		double v = 0.5 * (1.0 + cos(3.14159265358979323846 * p));
		v = v * (1.0 - min_ratio) + min_ratio;
		return v > 0 ? v : 0;
	}
	case TERN_SCHED_LINEAR: {
		double v = (double)(K - k) / span;
		return v > 0 ? v : 0;
	}
	case TERN_SCHED_CONSTANT:
	case TERN_SCHED_CONSTANT_WARMUP: break;
	}
	return 1.0;
}

static void fmt_time(char *b, size_t cap, double s)
{
	if (!(s >= 0) || s > 1e8) {
		snprintf(b, cap, "--:--");
		return;
	}
	long t = (long)(s + 0.5);
	if (t >= 3600)
		snprintf(b, cap, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
	else
		snprintf(b, cap, "%02ld:%02ld", t / 60, t % 60);
}

static void fmt_bytes(char *b, size_t cap, double v)
{
	if (v >= 1073741824.0)
		snprintf(b, cap, "%.2f GiB", v / 1073741824.0);
	else if (v >= 1048576.0)
		snprintf(b, cap, "%.1f MiB", v / 1048576.0);
	else
		snprintf(b, cap, "%.0f KiB", v / 1024.0);
}

/* The first SIGINT/SIGTERM asks the loop to stop after the step (g_stop = the signal); a second
 * one stops at once: metrics.jsonl is flushed after every line and every adapter or checkpoint
 * is written under a temporary name and renamed, so exiting mid-step loses only the step. While
 * a checkpoint is being written (g_saving) the second signal waits for it. */
static volatile sig_atomic_t g_stop, g_saving;
static void on_signal(int sig)
{
	if (g_stop && !g_saving) {
		static const char msg[] = "\ntern: second interrupt: stopping now; the step in progress is "
					  "lost, the last checkpoint stands\n";
		ssize_t w = write(2, msg, sizeof msg - 1);
		(void)w;
		_exit(128 + sig);
	}
	if (!g_stop)
		g_stop = sig;
}

/* ---- the session: everything a train or eval run holds ---- */

struct session {
	struct tern_config *cfg;
	char *model_dir; /* base_model's directory (a Hub id's snapshot in the HF cache) */
	char commit[41]; /* a Hub id's snapshot commit, "" for a directory */
	struct tern_tokenizer *tok;
	struct tern_data *data;
	struct tern_model_config mc; /* config.json of base_model */
	struct tern_plan plan;       /* where each layer lives (residency planner) */
	uint64_t device_budget, host_budget;
	struct tern_model *model;
	struct tern_backend *be;
	struct tern_net *net;
	struct tern_lora_set *lora; /* host copy (with moments) for saving */
	struct tern_adapter_meta meta;
	int64_t S, mb, accum, T;
	bool pad_full;        /* pad_to_sequence_len (or sample_packing): micro-batches of mb rows of S */
	int64_t Tb, real;     /* the staged micro-batch: its tokens (mb·S, or rows × its longest row) and
			   * its real (non-pad) tokens */
	enum tern_dtype prec; /* compute_dtype resolved for the backend */
	int32_t *tok_b, *tgt_b, *pos_b, *seg_b; /* [T] staging of one micro-batch */
	int32_t pad;
	FILE *out;
	bool profile;                /* a profile line per step (--profile, TERN_PROFILE=1) */
	bool split;                  /* layer_split over several ranks: the ranks are pipeline stages */
	struct tern_net_link link;   /* the split's boundary (the net keeps a pointer to it) */
	struct tern_dist_nccl *nccl; /* NCCL (CUDA build): the sum, and the boundary when it can */
	char (*stages)[160];         /* a layer split, rank 0: each stage's layers and residency */
};

static void session_free(struct session *s)
{
	tern_net_free(s->net);
	if (s->be)
		tern_backend_free(s->be);
	tern_model_free(s->model);
	tern_data_free(s->data);
	tern_tokenizer_free(s->tok);
	tern_lora_set_free(s->lora);
	tern_config_free(s->cfg);
	free(s->model_dir);
	free(s->tok_b);
	free(s->tgt_b);
	free(s->pos_b);
	free(s->seg_b);
	free(s->stages);
}

static enum tern_status load_config(struct session *s, const char *path, const char *const *sets, int n_sets)
{
	enum tern_status st = tern_config_load(&s->cfg, path);
	for (int i = 0; i < n_sets && st == TERN_OK; i++)
		st = tern_config_set(s->cfg, sets[i]);
	if (st == TERN_OK && n_sets)
		st = tern_config_check(s->cfg);
	if (st != TERN_OK)
		return st;
	struct tern_config *c = s->cfg;
#ifndef TERN_HAVE_CUDA
	if (c->backend == TERN_BACKEND_CUDA)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: backend: cuda is not built into this tern (allowed: auto, vulkan, cpu; "
				 "build with -DTERN_CUDA=ON for cuda)",
				 c->file);
#endif
	/* config.json and the tokenizer now; the weights in open_model, after the cheap checks */
	return tern_hub_resolve(c->base_model, c->revision_of_model, TERN_HUB_CONFIG | TERN_HUB_TOKENIZER,
				&s->model_dir, s->commit);
}

static enum tern_status open_model(struct session *s)
{
	struct tern_config *c = s->cfg;
	struct tern_model_config mc = s->mc;
	enum tern_status st;
	enum tern_base_format f = c->base_format;
	if (f == TERN_FORMAT_AUTO && mc.arch == TERN_ARCH_BITNET)
		f = TERN_FORMAT_TERNARY;
	else if (f == TERN_FORMAT_AUTO && mc.qmethod == TERN_QMETHOD_NONE)
		f = mc.dtype == TERN_F32   ? TERN_FORMAT_F32
		    : mc.dtype == TERN_F16 ? TERN_FORMAT_F16
					   : TERN_FORMAT_BF16;
	char dir[4096], pack[4200];
	if (c->offload_dir)
		snprintf(dir, sizeof dir, "%s", c->offload_dir);
	else
		snprintf(dir, sizeof dir, "%s/offload", c->output_dir);
	if ((st = mkdirs(dir)) != TERN_OK)
		return st;
	snprintf(pack, sizeof pack, "%s/base-%s.tpack", dir, tern_base_format_name(f));
	struct tern_model_opts mo = {.format = f, .blocksize = 64, .pack_path = pack};
	if (s->commit[0]) { /* a Hub id: the weights of the same commit */
		free(s->model_dir);
		s->model_dir = NULL;
		if ((st = tern_hub_resolve(c->base_model, s->commit, TERN_HUB_ALL, &s->model_dir, NULL)))
			return st;
	}
	return tern_model_open(s->model_dir, &mo, &s->model);
}

static enum tern_status load_data(struct session *s)
{
	struct tern_config *c = s->cfg;
	bool text = false;
	for (int i = 0; i < c->n_datasets; i++)
		text |= c->datasets[i].type != TERN_DS_PRETOKENIZED;
	char path[4200];
	snprintf(path, sizeof path, "%s/tokenizer.json", s->model_dir);
	enum tern_status st;
	if (text || file_exists(path))
		if ((st = tern_tokenizer_load_dir(&s->tok, s->model_dir)) != TERN_OK)
			return st;
	struct tern_data_opts o;
	tern_data_opts_from_config(&o, c);
	snprintf(path, sizeof path, "%s/tokenizer_config.json", s->model_dir);
	if (file_exists(path))
		o.tokenizer_config = path;
	if ((st = tern_data_load(&s->data, &o, s->tok)) != TERN_OK)
		return st;
	s->S = c->sequence_len;
	s->mb = c->micro_batch_size;
	s->accum = c->gradient_accumulation_steps;
	s->T = s->S * s->mb;
	s->pad_full = c->pad_to_sequence_len || c->sample_packing;
	s->pad = 0; /* padded rows: any id (targets -100, segment -1) */
	size_t b = (size_t)s->T * 4;
	s->tok_b = tern_malloc(b), s->tgt_b = tern_malloc(b), s->pos_b = tern_malloc(b),
	s->seg_b = tern_malloc(b);
	if (!s->tok_b || !s->tgt_b || !s->pos_b || !s->seg_b)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	return TERN_OK;
}

static unsigned target_modules(const struct tern_config *c)
{
	unsigned m = 0;
	if (c->lora_target_linear)
		m = (1u << TERN_MOD_COUNT) - 1;
	for (int i = 0; i < c->n_target_modules; i++) {
		enum tern_module mo;
		if (tern_module_parse(c->lora_target_modules[i], &mo))
			m |= 1u << mo;
	}
	return m;
}

_Static_assert((int)TERN_PLAN_DEVICE == (int)TERN_TIER_DEVICE && (int)TERN_PLAN_HOST == (int)TERN_TIER_HOST &&
		       (int)TERN_PLAN_DISK == (int)TERN_TIER_DISK,
	       "plan tiers are net tiers");

/* Budgets (device_memory / host_memory, or auto from the backend and /proc/meminfo) and the plan. */
static enum tern_status plan_residency(struct session *s, uint64_t device_budget)
{
	struct tern_config *c = s->cfg;
	enum tern_status st;
	if (!device_budget) {
		uint64_t budget = 0, usage = 0;
		if (s->be->vt->memory_info && s->be->vt->memory_info(s->be, &budget, &usage) == TERN_OK)
			device_budget = tern_plan_device_auto(budget);
		else
			device_budget = UINT64_MAX / 4;
	}
	uint64_t host = (uint64_t)c->host_memory;
	if (!host && tern_plan_host_auto(&host) != TERN_OK)
		host = UINT64_MAX / 4;
	else if (!c->host_memory && tern_dist_local_size() > 1) /* auto: the ranks of a host share it */
		host /= (uint64_t)tern_dist_local_size();
	s->device_budget = device_budget;
	s->host_budget = host;
	memset(&s->plan, 0, sizeof s->plan);
	s->plan.stages = s->split ? tern_dist_size() : 1; /* this rank's stage of the layer split */
	s->plan.stage = s->split ? tern_dist_rank() : 0;
	s->plan.prec = (int)s->prec;
	if ((st = tern_plan_make(&s->mc, c, device_budget, host, &s->plan)) != TERN_OK)
		return st;
	if (s->plan.L != s->mc.L)
		return tern_fail(TERN_E_INVALID, "plan: %lld layers planned for a %lld-layer model",
				 (long long)s->plan.L, (long long)s->mc.L);
	return TERN_OK;
}

/* compute_dtype for the chosen backend: auto takes the fastest precision the device multiplies
 * in with fp32 accumulation (f16 on GPUs, f32 on CPUs and lavapipe); an explicit one must be
 * supported. */
static enum tern_status resolve_prec(struct session *s)
{
	struct tern_config *c = s->cfg;
	enum tern_dtype want = c->compute_dtype == TERN_COMPUTE_F16    ? TERN_F16
			       : c->compute_dtype == TERN_COMPUTE_BF16 ? TERN_BF16
								       : TERN_F32;
	if (c->compute_dtype == TERN_COMPUTE_AUTO)
		want = tern_backend_auto_prec(s->be);
	if (!tern_backend_supports_prec(s->be, TERN_OP_MATMUL, want) ||
	    !tern_backend_supports_prec(s->be, TERN_OP_MATMUL_BWD, want))
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: compute_dtype: %s is not supported by backend %s on %s (use auto or f32%s)",
			c->file, tern_dtype_name(want), s->be->name, s->be->device_name,
			want == TERN_BF16 ? "; bf16 products need GL_EXT_bfloat16 shaders, f16 runs "
					    "with the same fp32 accumulation"
					  : "");
	s->prec = want;
	return TERN_OK;
}

/* The boundary of a layer split: the neighbouring ranks (src/dist/). */
static enum tern_status link_send(void *ctx, int peer, const void *buf, size_t bytes)
{
	return tern_dist_send(buf, bytes, tern_dist_rank() + peer);
}
static enum tern_status link_recv(void *ctx, int peer, void *buf, size_t bytes)
{
	return tern_dist_recv(buf, bytes, tern_dist_rank() + peer);
}
/* ... and with NCCL between the devices, on the backend's stream */
static enum tern_status link_send_dev(void *ctx, int peer, struct tern_view v, size_t bytes)
{
	struct session *s = ctx;
	void *p, *stream;
	enum tern_status st = tern_dist_cuda_address(s->be, v, &p, &stream);
	return st ? st : tern_dist_nccl_send(s->nccl, p, bytes, tern_dist_rank() + peer, stream);
}
static enum tern_status link_recv_dev(void *ctx, int peer, struct tern_view v, size_t bytes)
{
	struct session *s = ctx;
	void *p, *stream;
	enum tern_status st = tern_dist_cuda_address(s->be, v, &p, &stream);
	return st ? st : tern_dist_nccl_recv(s->nccl, p, bytes, tern_dist_rank() + peer, stream);
}

/* The backend and the residency plan: before the model is converted, so that a plan that cannot
 * work fails without writing anything. */
static enum tern_status open_backend(struct session *s)
{
	struct tern_config *c = s->cfg;
	/* several ranks on one host: one device each (src/dist/dist.h) */
	int device = (int)c->device;
	bool gpu = c->backend != TERN_BACKEND_CPU && c->backend != TERN_BACKEND_REF;
	enum tern_status st = tern_dist_device(device, gpu, &device);
	if (st == TERN_OK)
		st = tern_backend_create(tern_backend_kind_name(c->backend), device, &s->be);
	if (st != TERN_OK && tern_dist_size() > 1 && device != (int)c->device) {
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		return tern_fail(st,
				 "%s (rank %d of %d takes device %d = device + its rank on this host; give "
				 "each rank's device with --devices, e.g. --devices 0,0 to share device 0)",
				 msg, tern_dist_rank(), tern_dist_size(), device);
	}
	if (st == TERN_OK)
		st = resolve_prec(s);
	if (st == TERN_OK)
		st = plan_residency(s, (uint64_t)c->device_memory);
	return st;
}

static enum tern_status open_net(struct session *s)
{
	struct tern_config *c = s->cfg;
	enum tern_status st;
	unsigned mods = target_modules(c);
	double R = (double)c->lora_r;
	struct tern_net_opts no = {
		.R = c->lora_r,
		.scale = (float)(c->use_rslora ? c->lora_alpha / sqrt(R) : c->lora_alpha / R),
		.dropout = (float)c->lora_dropout,
		.modules = mods,
		.experts = tern_plan_experts(c),
		.full = s->lora->full,
		.T = s->T,
		.checkpointing = c->gradient_checkpointing,
		.mlp_shards = tern_plan_mlp_shards(c, s->T, s->mc.D),
		.seed = (uint64_t)c->seed,
		.prec = s->prec,
		.aux_coef = s->mc.E > 0 && s->mc.router_logits ? s->mc.router_aux_coef : 0,
		.link = s->split ? &s->link : NULL,
	};
	s->link = (struct tern_net_link){s, link_send, link_recv, NULL, NULL};
	/* a device that refuses an allocation the plan counted on: re-plan with 3/4 of the budget */
	for (int attempt = 0;; attempt++) {
		bool streams = s->plan.n_layers[TERN_PLAN_DEVICE] < s->plan.l1 - s->plan.l0;
		no.l0 = s->plan.l0;
		no.l1 = s->plan.l1;
		no.tiers = streams ? s->plan.tier : NULL;
		no.slots = streams ? s->plan.n_slots : 0;
		no.offload = s->plan.offload;
		/* TERN_FAULT_DEVICE_ALLOC=1 makes the first attempt fail as a full device would (tests) */
		const char *fault = getenv("TERN_FAULT_DEVICE_ALLOC");
		if (attempt == 0 && fault && !strcmp(fault, "1"))
			st = tern_fail(TERN_E_DEVICE_MEM,
				       "injected device allocation failure (TERN_FAULT_DEVICE_ALLOC=1)");
		else
			st = tern_net_create(s->be, s->model, &no, &s->net);
		if (st != TERN_E_DEVICE_MEM || attempt == 4)
			break;
		uint64_t smaller = s->device_budget / 4 * 3;
		if (smaller < s->plan.min_device && s->plan.min_device < s->device_budget)
			smaller = s->plan.min_device; /* the least that still works */
		char a[32], b[32];
		tern_plan_fmt(a, sizeof a, s->device_budget);
		tern_plan_fmt(b, sizeof b, smaller);
		fprintf(s->out, "device allocation failed with a %s plan (%s); re-planning with %s\n", a,
			tern_error(), b);
		if ((st = plan_residency(s, smaller)) != TERN_OK)
			return st;
	}
	if (st != TERN_OK)
		return st;
	uint64_t wb, lb, ab;
	tern_net_memory(s->net, &wb, &lb, &ab);
	if (wb + lb + ab > s->device_budget)
		return tern_fail(
			TERN_E_DEVICE_MEM,
			"the net allocated %llu bytes of device memory, over the %llu-byte budget (a planner bug)",
			(unsigned long long)(wb + lb + ab), (unsigned long long)s->device_budget);
	return TERN_OK;
}

/* Reads base_model's config.json and allocates the host LoRA set (zero) from it: bad adapters are
 * found before the model is converted or anything is written. The modules trained in full are the
 * config's lora_modules_to_save and those the adapter in adapter_dir (NULL: none) lists in its
 * modules_to_save (PEFT trains what the adapter it continues saved). */
static enum tern_status open_lora(struct session *s, bool with_moments, const char *adapter_dir)
{
	struct tern_config *c = s->cfg;
	enum tern_status st = tern_model_config_load(s->model_dir, &s->mc);
	if (c->output_router_logits >= 0) /* model_config overrides (axolotl) */
		s->mc.router_logits = c->output_router_logits;
	if (c->router_aux_loss_coef >= 0)
		s->mc.router_aux_coef = c->router_aux_loss_coef;
	if (st == TERN_OK)
		st = tern_model_config_check(&s->mc, s->model_dir);
	if (st != TERN_OK)
		return st;
	unsigned mlp = (1u << TERN_MOD_GATE) | (1u << TERN_MOD_UP) | (1u << TERN_MOD_DOWN);
	if (c->tiled_mlp && !c->gradient_checkpointing)
		tern_log(TERN_LOG_NOTE_LEVEL,
			 "note: tiled_mlp: no effect without gradient_checkpointing (each "
			 "layer keeps its MLP activations for the backward); set "
			 "gradient_checkpointing: true to tile");
	else if (c->tiled_mlp && s->mc.E > 0)
		tern_log(TERN_LOG_NOTE_LEVEL,
			 "note: tiled_mlp: %s's MLP is a mixture of experts, whose rows "
			 "are grouped by expert already: not tiled",
			 s->mc.model_type);
	if (s->mc.E > 0 && c->lora_target_linear) {
		/* the experts are no linear modules in transformers 5 (PEFT's all-linear skips them) */
		if ((st = tern_config_set(c, "lora_target_linear=false")) ||
		    (st = tern_config_set(c, "lora_target_modules=[q_proj, k_proj, v_proj, o_proj]")))
			return st;
		tern_log(TERN_LOG_INFO,
			 "lora_target_linear on %s (a mixture of experts): LoRA on q_proj, k_proj, v_proj, "
			 "o_proj (as PEFT's all-linear; the experts take lora_target_parameters)",
			 s->mc.model_type);
	} else if (s->mc.E > 0 && (target_modules(c) & mlp)) {
		return tern_fail(TERN_E_UNSUPPORTED,
				 "%s: lora_target_modules: gate_proj/up_proj/down_proj on %s (a mixture of "
				 "experts): its experts are no linear modules (use lora_target_parameters: "
				 "[mlp.experts.gate_up_proj, mlp.experts.down_proj])",
				 c->file ? c->file : "config", s->mc.model_type);
	}
	unsigned experts = tern_plan_experts(c);
	if (experts && s->mc.E <= 0)
		return tern_fail(
			TERN_E_INVALID,
			"%s: lora_target_parameters (or lora_target_modules: gate) names expert or router "
			"parameters, but %s is not a mixture of experts (remove them)",
			c->file ? c->file : "config", s->mc.model_type);
	if ((experts & 4u) && c->lora_expert_layout == 1)
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"%s: lora_expert_layout: per_expert with LoRA on the router (gate): tern "
			"writes the router's LoRA only in PEFT's layout (set lora_expert_layout: peft)",
			c->file ? c->file : "config");
	if (experts && c->lora_dropout > 0)
		return tern_fail(
			TERN_E_INVALID,
			"%s: lora_target_parameters with lora_dropout %g: PEFT trains expert parameters "
			"without dropout (set lora_dropout: 0)",
			c->file ? c->file : "config", c->lora_dropout);
	int64_t io[TERN_MOD_COUNT][2];
	tern_net_module_shapes(&s->mc, io);
	unsigned full = tern_plan_full(c) | (adapter_dir ? tern_adapter_full(adapter_dir) : 0);
	if (full != tern_plan_full(c)) {
		/* the adapter's modules_to_save join the config's, so the plan and config.yaml count them */
		char set[128];
		snprintf(set, sizeof set, "lora_modules_to_save=[%s%s%s]",
			 (full & 1u) ? tern_full_name(TERN_FULL_EMBED) : "", full == 3u ? ", " : "",
			 (full & 2u) ? tern_full_name(TERN_FULL_HEAD) : "");
		if ((st = tern_config_set(c, set)))
			return st;
		tern_log(TERN_LOG_INFO, "%s/adapter_config.json lists modules_to_save: training %s in full",
			 adapter_dir, set + strlen("lora_modules_to_save="));
	}
	if ((st = tern_lora_set_alloc(&s->lora, (int)s->mc.L, c->lora_r, target_modules(c), io,
				      with_moments)) ||
	    (full && (st = tern_lora_set_add_full(s->lora, full, s->mc.V, s->mc.D, with_moments))))
		return st;
	if (experts) {
		uint8_t *sparse = tern_malloc((size_t)s->mc.L);
		if (!sparse)
			return tern_fail(TERN_E_NOMEM, "out of host memory");
		for (int64_t l = 0; l < s->mc.L; l++)
			sparse[l] = tern_model_layer_moe(&s->mc, l);
		st = tern_lora_set_add_experts(s->lora, experts, s->mc.E, s->mc.D, s->mc.Fe, sparse,
					       with_moments);
		free(sparse);
		if (st)
			return st;
	}
	s->meta.base_model = c->base_model;
	s->meta.alpha = c->lora_alpha;
	s->meta.dropout = c->lora_dropout;
	s->meta.rslora = c->use_rslora;
	return TERN_OK;
}

/* The batch against host memory before the data is allocated (the device side is the residency
 * plan's, before anything is allocated on the device), then the data (guard.h). */
static enum tern_status guard_inputs(struct session *s, bool train)
{
	struct tern_config *c = s->cfg;
	uint64_t host = (uint64_t)c->host_memory;
	if (!host && tern_plan_host_auto(&host) != TERN_OK)
		host = 0;
	enum tern_status st;
	if ((st = tern_guard_batch(c, &s->mc, host)) || (st = load_data(s)) ||
	    (st = tern_guard_vocab(c, &s->mc, s->tok, s->data)))
		return st;
	return train ? tern_guard_trained(c, s->data) : TERN_OK;
}

/* The LoRA scale comes from the config; an adapter trained with another alpha would be misread. */
static enum tern_status check_meta(const struct tern_config *c, const char *dir,
				   const struct tern_adapter_meta *am)
{
	if (am->alpha != c->lora_alpha || am->rslora != c->use_rslora)
		return tern_fail(
			TERN_E_INVALID,
			"%s/adapter_config.json: lora_alpha %g, use_rslora %s differ from %s (lora_alpha %g, "
			"use_rslora %s); set them to the adapter's values",
			dir, am->alpha, am->rslora ? "true" : "false", c->file, c->lora_alpha,
			c->use_rslora ? "true" : "false");
	return TERN_OK;
}

/* A fresh adapter: A ~ U(-1/sqrt(I), 1/sqrt(I)) (PEFT's kaiming_uniform(a=sqrt(5))), B = 0. */
static void lora_init(struct tern_lora_set *set, uint64_t seed)
{
	uint64_t rng = seed ^ 0x6c6f7261696e6974ull; /* "lorainit" */
	for (int l = 0; l < set->L; l++)
		for (int m = 0; m < TERN_LORA_SLOTS; m++) { /* experts: A [E·R, I], as PEFT's nn.Linear */
			struct tern_lora_tensor *t = tern_lora_at(set, l, (enum tern_module)m);
			if (!t->A)
				continue;
			float b = 1.0f / sqrtf((float)t->I);
			for (int64_t i = 0; i < t->r * t->I; i++)
				t->A[i] = (2.0f * uniform01(&rng) - 1.0f) * b;
			memset(t->B, 0, (size_t)(t->O * t->r) * 4);
		}
}

/* A row's length without its trailing padding (segment -1; padding only ends a row). */
static int64_t row_len(const struct tern_rows *r, int64_t row)
{
	int64_t n = r->S;
	while (n > 0 && r->segments[row * r->S + n - 1] < 0)
		n--;
	return n;
}

/* Stages rows idx[0..n) of r (n <= mb) as one micro-batch; returns the number of trained targets
 * and sets s->Tb and s->real. pad_to_sequence_len: mb rows of S (missing rows padded), as
 * allocated; otherwise the n rows cut to the longest of them (at least 1 token): the rows are laid
 * out at that stride, which changes nothing for a token (attention stays within its sample and
 * pads carry no target) but skips the padding's work. */
static int64_t stage(struct session *s, const struct tern_rows *r, const int64_t *idx, int64_t n)
{
	int64_t S = s->S, trained = 0, rows = s->mb;
	s->real = 0;
	if (!s->pad_full) {
		int64_t longest = 1;
		for (int64_t j = 0; j < n; j++) {
			int64_t len = row_len(r, idx[j]);
			longest = len > longest ? len : longest;
		}
		S = longest;
		rows = n > 0 ? n : 1;
	}
	s->Tb = rows * S;
	for (int64_t j = 0; j < rows; j++) {
		int32_t *tk = s->tok_b + j * S, *tg = s->tgt_b + j * S, *ps = s->pos_b + j * S,
			*sg = s->seg_b + j * S;
		if (j < n) {
			int64_t row = idx[j];
			memcpy(tk, r->tokens + row * r->S, (size_t)S * 4);
			memcpy(tg, r->targets + row * r->S, (size_t)S * 4);
			memcpy(ps, r->positions + row * r->S, (size_t)S * 4);
			memcpy(sg, r->segments + row * r->S, (size_t)S * 4);
			for (int64_t t = 0; t < S; t++) {
				trained += tg[t] != -100;
				s->real += sg[t] >= 0;
			}
		} else {
			for (int64_t t = 0; t < S; t++) {
				tk[t] = s->pad;
				tg[t] = -100;
				ps[t] = 0;
				sg[t] = -1;
			}
		}
	}
	return trained;
}

static int64_t count_trained(const struct tern_rows *r, const int64_t *idx, int64_t n)
{
	int64_t c = 0;
	for (int64_t j = 0; j < n; j++)
		for (int64_t t = 0; t < r->S; t++)
			c += r->targets[idx[j] * r->S + t] != -100;
	return c;
}

/* Mean loss over every trained target of rows r (forward only). */
static enum tern_status evaluate(struct session *s, const struct tern_rows *r, double *loss, int64_t *ntok)
{
	int64_t n = r->n_rows;
	int64_t *idx = tern_malloc((size_t)(n ? n : 1) * sizeof *idx);
	if (!idx)
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	int64_t N = count_trained(r, idx, n);
	enum tern_status st = tern_net_zero(s->net);
	for (int64_t i = 0; i < n && st == TERN_OK; i += s->mb) {
		int64_t k = n - i < s->mb ? n - i : s->mb;
		stage(s, r, idx + i, k);
		if ((st = tern_net_tokens(s->net, s->Tb)) == TERN_OK)
			st = tern_net_micro(s->net, s->tok_b, s->tgt_b, s->pos_b, s->seg_b,
					    N ? 1.0f / (float)N : 0.0f, false, 0, 0);
	}
	if (st == TERN_OK)
		st = tern_net_loss(s->net, loss);
	float f = (float)*loss; /* a layer split: the last stage's loss to every rank */
	if (st == TERN_OK && s->split && (st = tern_dist_allreduce_sum(&f, 1)) == TERN_OK)
		*loss = f;
	free(idx);
	*ntok = N;
	return st;
}

/* The epoch's row order: a Fisher-Yates shuffle keyed by (seed, epoch). */
static void epoch_order(int64_t *idx, int64_t n, uint64_t seed, int64_t epoch)
{
	for (int64_t i = 0; i < n; i++)
		idx[i] = i;
	uint64_t x = seed * 0x9e3779b97f4a7c15ull ^ (uint64_t)epoch ^ 0x65706f6368ull;
	for (int64_t i = n - 1; i > 0; i--) {
		int64_t j = (int64_t)(splitmix(&x) % (uint64_t)(i + 1));
		int64_t t = idx[i];
		idx[i] = idx[j];
		idx[j] = t;
	}
}

static uint64_t config_hash(const struct tern_config *c)
{
	char *y = NULL;
	uint64_t h = 0xcbf29ce484222325ull;
	if (tern_config_write(c, &y) != TERN_OK)
		return 0;
	for (const char *p = y; *p; p++) {
		/* output-only keys do not change the computation */
		if (!strncmp(p, "\noutput_dir:", 12) || !strncmp(p, "\nresume_from_checkpoint:", 24) ||
		    !strncmp(p, "\nmax_time:", 10) || !strncmp(p, "\nsave_", 6) ||
		    !strncmp(p, "\nlogging_steps:", 15) || !strncmp(p, "\neval_steps:", 12) ||
		    !strncmp(p, "\nevals_per_epoch:", 17) || !strncmp(p, "\nmax_steps:", 11) ||
		    !strncmp(p, "\nnum_epochs:", 12) || !strncmp(p, "\nuse_tensorboard:", 17) ||
		    !strncmp(p, "\nlayer_split:", 13)) { /* the same results with or without */
			while (p[1] && p[1] != '\n')
				p++;
			continue;
		}
		h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
	}
	free(y);
	return h;
}

/* metrics.jsonl.tmp.<pid> with the metrics lines of steps <= keep (a resumed run rewrites what
 * came after); commit_outputs renames it over metrics.jsonl once the run has done a step. */
static enum tern_status metrics_open(const char *dir, int64_t keep, FILE **out)
{
	char path[4200], tmp[4300];
	snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	FILE *in = keep > 0 ? fopen(path, "r") : NULL;
	FILE *o = fopen(tmp, "w");
	if (!o) {
		if (in)
			fclose(in);
		return tern_fail(TERN_E_IO, "cannot write %s: %s", tmp, strerror(errno));
	}
	if (in) {
		char line[8192];
		while (fgets(line, sizeof line, in)) {
			long long st = -1;
			if (sscanf(line, "{\"step\": %lld", &st) == 1 && st <= keep)
				fputs(line, o);
		}
		fclose(in);
	}
	if (fflush(o) != 0) {
		fclose(o);
		remove(tmp);
		return tern_fail(TERN_E_IO, "cannot write %s: %s", tmp, strerror(errno));
	}
	*out = o;
	return TERN_OK;
}

/* The run has produced something (a step, or its outputs at the end): its config.yaml and
 * metrics.jsonl replace the previous run's. Until then a failing run leaves both as they were. */
static enum tern_status commit_outputs(const struct tern_config *c, FILE *metrics, bool *committed)
{
	if (*committed)
		return TERN_OK;
	char path[4200], tmp[4300];
	snprintf(path, sizeof path, "%s/metrics.jsonl", c->output_dir);
	snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
	if (fflush(metrics) != 0 || rename(tmp, path) != 0)
		return tern_fail(TERN_E_IO, "cannot write %s: %s", path, strerror(errno));
	*committed = true;
	snprintf(path, sizeof path, "%s/config.yaml", c->output_dir);
	return tern_config_save(c, path);
}

/* A layer split: each stage's layers and placement, on rank 0 for the banner (every rank takes
 * part: a collective). */
static enum tern_status stage_lines(struct session *s)
{
	int rank = tern_dist_rank(), n = tern_dist_size();
	const struct tern_plan *p = &s->plan;
	uint64_t wb, lb, ab;
	tern_net_memory(s->net, &wb, &lb, &ab);
	char line[160], u[32], d[32];
	tern_plan_fmt(u, sizeof u, wb + lb + ab);
	tern_plan_fmt(d, sizeof d, s->device_budget);
	bool streams = p->n_layers[TERN_PLAN_DEVICE] < p->l1 - p->l0;
	snprintf(line, sizeof line,
		 "stage %d: layers %lld-%lld; %lld device, %lld host, %lld disk; %d slots; %s of %s", rank,
		 (long long)p->l0, (long long)(p->l1 - 1), (long long)p->n_layers[TERN_PLAN_DEVICE],
		 (long long)p->n_layers[TERN_PLAN_HOST], (long long)p->n_layers[TERN_PLAN_DISK],
		 streams ? p->n_slots : 0, u, d);
	if (rank > 0)
		return tern_dist_send(line, sizeof line, 0);
	if (!(s->stages = tern_calloc((size_t)n, sizeof *s->stages)))
		return tern_fail(TERN_E_NOMEM, "out of host memory");
	memcpy(s->stages[0], line, sizeof line);
	enum tern_status st = TERN_OK;
	for (int r = 1; r < n && st == TERN_OK; r++)
		st = tern_dist_recv(s->stages[r], sizeof line, r);
	for (int r = 1; r < n; r++)
		s->stages[r][sizeof line - 1] = 0;
	return st;
}

static void banner(struct session *s, int64_t steps_per_epoch, int64_t K, int64_t W)
{
	struct tern_config *c = s->cfg;
	const struct tern_model_config *mc = &s->model->cfg;
	struct tern_model_load_report rep;
	tern_model_report(s->model, &rep);
	uint64_t wb, lb, ab;
	tern_net_memory(s->net, &wb, &lb, &ab);
	char b1[32], b2[32], b3[32];
	fmt_bytes(b1, sizeof b1, (double)wb);
	fmt_bytes(b2, sizeof b2, (double)lb);
	fmt_bytes(b3, sizeof b3, (double)ab);
	const struct tern_data_stats *tr = &s->data->train_stats, *va = &s->data->val_stats;
	FILE *o = s->out;
	fprintf(o, "tern train %s\n", c->file);
	fprintf(o, "  model     %s (%s, L=%lld D=%lld F=%lld H=%lld/%lld Dh=%lld V=%lld), base %s, pack %s\n",
		c->base_model, mc->model_type, (long long)mc->L, (long long)mc->D, (long long)mc->F,
		(long long)mc->H, (long long)mc->Hkv, (long long)mc->Dh, (long long)mc->V, rep.format,
		rep.reused ? "reused" : "built");
	fprintf(o, "  lora      r=%lld alpha=%g%s dropout=%g, %lld trainable parameters\n",
		(long long)c->lora_r, c->lora_alpha, c->use_rslora ? " (rsLoRA)" : "", c->lora_dropout,
		(long long)tern_net_params(s->net));
	fprintf(o,
		"  device    %s: %s; %s products, fp32 accumulation; memory: weights %s, LoRA%s+grads+AdamW %s, "
		"activations %s\n",
		s->be->name, s->be->device_name, tern_dtype_name(s->prec), b1,
		s->lora->full ? "+modules_to_save" : "", b2, b3);
	{
		const struct tern_plan *p = &s->plan;
		char d[32], h[32], sl[32], u[32];
		tern_plan_fmt(d, sizeof d, s->device_budget);
		tern_plan_fmt(h, sizeof h, s->host_budget);
		tern_plan_fmt(sl, sizeof sl, p->slot_bytes);
		tern_plan_fmt(u, sizeof u, wb + lb + ab);
		bool streams = p->n_layers[TERN_PLAN_DEVICE] < mc->L;
		char off[96] = "", ob[32];
		tern_plan_fmt(ob, sizeof ob, p->offload_host);
		if (p->offload) /* gradient_checkpointing: offload, or true where they did not fit */
			snprintf(off, sizeof off,
				 "; layer inputs offloaded (%s pinned host, %d device slots)", ob,
				 p->offload_slots);
		fprintf(o,
			"  residency %lld device, %lld host, %lld disk layers; %d slots (%s); device memory %s of "
			"budget %s; host budget %s%s\n",
			(long long)p->n_layers[TERN_PLAN_DEVICE], (long long)p->n_layers[TERN_PLAN_HOST],
			(long long)p->n_layers[TERN_PLAN_DISK], streams ? p->n_slots : 0, streams ? sl : "-",
			u, d, h, off);
	}
	fprintf(o,
		"  data      train %lld samples, %lld tokens (%lld trained), %lld rows of %lld%s; val %lld samples; "
		"%s\n",
		(long long)tr->samples, (long long)tr->tokens, (long long)tr->trained, (long long)tr->rows,
		(long long)s->S, c->sample_packing ? " (packed)" : "", (long long)va->samples,
		s->pad_full ? "micro-batches padded to sequence_len"
			    : "micro-batches padded to their longest row");
	char ranks[48] = "";
	if (tern_dist_size() > 1 && !s->split)
		snprintf(ranks, sizeof ranks, " × %d ranks (%s)", tern_dist_size(), tern_dist_name());
	if (s->split) {
		const struct tern_plan *p = &s->plan;
		fprintf(o,
			"  split     layer split over %d ranks (%s): stage %d runs layers %lld-%lld; stages at",
			p->stages, tern_dist_name(), p->stage, (long long)p->l0, (long long)(p->l1 - 1));
		for (int i = 0; i < p->stages; i++)
			fprintf(o, " %lld-%lld", (long long)p->split[i], (long long)(p->split[i + 1] - 1));
		fprintf(o, "\n");
		for (int i = 0; s->stages && i < p->stages; i++) /* each stage's device memory and tiers */
			fprintf(o, "            %s\n", s->stages[i]);
	}
	fprintf(o,
		"  schedule  %lld steps/epoch, %lld steps, warmup %lld, %lld × %lld%s rows/step, lr %g %s\n",
		(long long)steps_per_epoch, (long long)K, (long long)W, (long long)s->mb, (long long)s->accum,
		ranks, c->learning_rate, tern_lr_sched_name(c->lr_scheduler));
	fflush(o);
}

/* --profile, or TERN_PROFILE=1: the backend sums device time per op kind. A device that cannot
 * time its ops fails a run that asked with --profile; with the variable alone (which also asks
 * the Vulkan backend for its per-pipeline totals at exit) the run goes on without the lines. */
static enum tern_status profile_start(struct session *s, const struct tern_train_opts *opts)
{
	bool asked = opts && opts->profile, env = tern_profile_env();
	if (!asked && !env)
		return TERN_OK;
	enum tern_status st = tern_backend_profile(s->be, true);
	if (st != TERN_OK && !asked) {
		tern_log(TERN_LOG_WARN, "TERN_PROFILE=1: %s; training without the profile lines",
			 tern_error());
		return TERN_OK;
	}
	s->profile = st == TERN_OK;
	return st;
}

/* TFLOP/s from FLOPs and nanoseconds, with three significant digits or so. */
static void fmt_rate(char *b, size_t cap, double flops, double ns)
{
	double t = ns > 0 ? flops / ns * 1e-3 : 0;
	snprintf(b, cap, t >= 100 ? "%.0f" : t >= 10 ? "%.1f" : t >= 1 ? "%.2f" : "%.3g", t);
}

/* The kinds' device time in ms and their FLOPs, summed. */
static void profile_totals(const struct tern_profile *p, double *ms, double *flops)
{
	*ms = *flops = 0;
	for (int k = 0; k < TERN_PROF_KIND_COUNT; k++) {
		*ms += p->ns[k] * 1e-6;
		*flops += p->flops[k];
	}
}

/* The profile line of one step: device time per kind, with the rate of each kind that does
 * products; idle = the step's wall time less the kinds' sum (host work, submission gaps, what the
 * device timeline cannot show); the step's rate is every kind's FLOPs over its wall time. On a
 * terminal it replaces the live progress line, which is printed again below it. */
static void profile_print(FILE *o, int64_t step, const struct tern_profile *p, double step_s, bool tty)
{
	double sum, flops;
	char r[32];
	profile_totals(p, &sum, &flops);
	fprintf(o, "%sprofile step %lld:", tty ? "\r" : "", (long long)step);
	for (int k = 0; k < TERN_PROF_KIND_COUNT; k++) {
		fprintf(o, "%s %s %.1f ms", k ? " |" : "", tern_prof_kind_name((enum tern_prof_kind)k),
			p->ns[k] * 1e-6);
		if (p->flops[k] > 0 && p->ns[k] > 0) {
			fmt_rate(r, sizeof r, p->flops[k], p->ns[k]);
			fprintf(o, " (%s TFLOP/s)", r);
		}
	}
	fmt_rate(r, sizeof r, flops, step_s * 1e9);
	fprintf(o, " | idle %.1f ms | step %.1f ms, %s TFLOP/s%s\n", step_s * 1e3 - sum, step_s * 1e3, r,
		tty ? "\033[K" : "");
	/* the same time by op, longest first: "name T ms xN" (N front-door calls) */
	char line[4096];
	tern_profile_ops_line(p, 1, line, sizeof line);
	fprintf(o, "profile ops step %lld: %s\n", (long long)step, line);
}

/* The same figures as metrics.jsonl fields: profile_<kind>_ms for every kind, profile_<kind>_tflops
 * for the kinds that did products, profile_idle_ms, profile_step_ms, profile_tflops. */
static void profile_fields(FILE *m, const struct tern_profile *p, double step_s)
{
	double sum, flops;
	profile_totals(p, &sum, &flops);
	for (int k = 0; k < TERN_PROF_KIND_COUNT; k++) {
		const char *key = tern_prof_kind_key((enum tern_prof_kind)k);
		fprintf(m, ", \"profile_%s_ms\": %.3f", key, p->ns[k] * 1e-6);
		if (p->flops[k] > 0 && p->ns[k] > 0)
			fprintf(m, ", \"profile_%s_tflops\": %.6g", key, p->flops[k] / p->ns[k] * 1e-3);
	}
	fprintf(m, ", \"profile_idle_ms\": %.3f, \"profile_step_ms\": %.3f, \"profile_tflops\": %.6g",
		step_s * 1e3 - sum, step_s * 1e3, step_s > 0 ? flops / step_s * 1e-12 : 0.0);
}

/* output_dir created and locked; what killed runs left there (and in the offload directory)
 * removed. Notes go to the output. */
/* Data parallel: sums the step's gradients and loss over the ranks (before the norm), with the
 * real tokens (*real) and whether a rank was asked to stop (*stop: the signal, else 0). With
 * NCCL (the CUDA build), on the device, in stream order; otherwise through host memory and the
 * group's all-reduce (gsum: tern_net_grad_floats + 2 floats). */
static enum tern_status sum_over_ranks(struct session *s, struct tern_dist_nccl *nccl, float *gsum,
				       int64_t *real, int *stop)
{
	enum tern_status st;
	int64_t ng = 0;
	if (nccl) {
		struct tern_view v[TERN_NET_GRAD_VIEWS];
		int nv = tern_net_grad_views(s->net, v);
		for (int i = 0; i < nv; i++) {
			void *p, *stream;
			if ((st = tern_dist_cuda_address(s->be, v[i], &p, &stream)) ||
			    (st = tern_dist_nccl_allreduce(nccl, p, (int64_t)(v[i].size / 4), stream)))
				return st;
		}
	} else {
		ng = tern_net_grad_floats(s->net);
		if ((st = tern_net_grads_get(s->net, gsum)) != TERN_OK)
			return st;
	}
	gsum[ng] = (float)*real;
	gsum[ng + 1] = g_stop ? 1.0f : 0.0f;
	if ((st = tern_dist_allreduce_sum(gsum, ng + 2)) ||
	    (!nccl && (st = tern_net_grads_put(s->net, gsum))))
		return st;
	*real = (int64_t)gsum[ng];
	*stop = gsum[ng + 1] > 0 ? (g_stop ? (int)g_stop : SIGINT) : 0;
	return TERN_OK;
}

/* NCCL for the sum when the backend is cuda, libnccl.so.2 loads on every rank and TERN_NCCL is
 * not 0; else NULL (the host path), with a note on out saying which. */
static enum tern_status open_nccl(struct session *s, struct tern_dist_nccl **out)
{
	*out = NULL;
	const char *e = getenv("TERN_NCCL");
	if (strcmp(s->be->name, "cuda") != 0 || (e && !strcmp(e, "0")))
		return TERN_OK;
	enum tern_status st = tern_dist_nccl_open(out);
	if (st == TERN_E_UNAVAILABLE || st == TERN_E_UNSUPPORTED) {
		fprintf(s->out, "gradients summed over MPI through host memory (%s)\n", tern_error());
		return TERN_OK;
	}
	if (st == TERN_OK)
		fprintf(s->out, "gradients summed on the devices with NCCL\n");
	return st;
}

static enum tern_status open_outdir(struct session *s, struct tern_outdir_lock **lock)
{
	struct tern_config *c = s->cfg;
	char note[1200], dir[4200];
	enum tern_status st;
	if ((st = mkdirs(c->output_dir)) || (st = tern_outdir_lock(c->output_dir, lock, note, sizeof note)))
		return st;
	if (note[0])
		fprintf(s->out, "%s\n", note);
	int64_t n = 0;
	uint64_t bytes = 0;
	tern_outdir_clean(c->output_dir, &n, &bytes);
	snprintf(dir, sizeof dir, "%s/adapter", c->output_dir);
	tern_outdir_clean(dir, &n, &bytes);
	if (c->offload_dir)
		snprintf(dir, sizeof dir, "%s", c->offload_dir);
	else
		snprintf(dir, sizeof dir, "%s/offload", c->output_dir);
	tern_outdir_clean(dir, &n, &bytes);
	if (n) {
		char b[32];
		fmt_bytes(b, sizeof b, (double)bytes);
		fprintf(s->out, "note: removed %lld temporary file%s of killed runs (%s)\n", (long long)n,
			n == 1 ? "" : "s", b);
	}
	return TERN_OK;
}

static enum tern_status save_checkpoint(struct session *s, struct tern_train_state *state)
{
	g_saving = 1;
	enum tern_status st = tern_net_lora_download(s->net, s->lora);
	if (st == TERN_OK)
		st = tern_checkpoint_write(s->cfg->output_dir, s->lora, &s->meta, state,
					   s->cfg->save_total_limit);
	g_saving = 0;
	return st;
}

/* The parameters (s->lora) and the state: resumed from a checkpoint (resume_from_checkpoint, whose
 * schedule *K, *W it takes unless max_steps or num_epochs changed), loaded from lora_model_dir, or
 * fresh. */
static enum tern_status load_params(struct session *s, struct tern_train_state *state, int64_t *K, int64_t *W)
{
	const struct tern_config *c = s->cfg;
	enum tern_status st;
	char ckpt[4096] = "";
	if (c->resume_from_checkpoint) {
		if (!strcmp(c->resume_from_checkpoint, "auto")) {
			if (!tern_checkpoint_latest(c->output_dir, ckpt, sizeof ckpt))
				ckpt[0] = 0;
		} else {
			snprintf(ckpt, sizeof ckpt, "%s", c->resume_from_checkpoint);
			struct stat sb;
			int e = stat(ckpt, &sb) != 0 ? errno : S_ISDIR(sb.st_mode) ? 0 : ENOTDIR;
			if (e) {
				return tern_fail(
					TERN_E_INVALID,
					"%s: resume_from_checkpoint: %s: %s (name a checkpoint directory, "
					"<output_dir>/checkpoint-N, or use auto)",
					c->file, ckpt, strerror(e));
			}
		}
	}
	if (ckpt[0]) {
		struct tern_train_state rs;
		if ((st = tern_checkpoint_read(ckpt, s->lora, &rs)) != TERN_OK ||
		    (st = tern_resume_check(ckpt, &rs, state)) != TERN_OK)
			return st;
		if (strcmp(rs.config_hash, state->config_hash))
			tern_log(TERN_LOG_WARN,
				 "%s was written with a different config; continuing with this one", ckpt);
		if (rs.step > *K)
			return tern_fail(
				TERN_E_INVALID,
				"%s is at step %lld, past the %lld steps of this config's schedule; raise "
				"max_steps or num_epochs to continue it",
				ckpt, (long long)rs.step, (long long)*K);
		if (rs.schedule_steps && *K != rs.schedule_steps) /* max_steps or num_epochs changed */
			fprintf(s->out,
				"the schedule now ends at step %lld (the checkpoint's ended at %lld)\n",
				(long long)*K, (long long)rs.total_steps);
		else /* the checkpoint's schedule, as max_time may have planned it */
			*K = rs.total_steps, *W = rs.warmup_steps;
		struct tern_train_state now = *state;
		*state = rs;
		state->total_steps = *K;
		state->warmup_steps = *W;
		state->schedule_steps = now.schedule_steps;
		memcpy(state->config_hash, now.config_hash, sizeof state->config_hash);
		state->data_rows = now.data_rows;
		state->data_seq_len = now.data_seq_len;
		memcpy(state->data_fingerprint, now.data_fingerprint, sizeof state->data_fingerprint);
		state->n_data_files = now.n_data_files;
		memcpy(state->data_files, now.data_files, sizeof state->data_files);
		fprintf(s->out, "resuming from %s at step %lld of %lld\n", ckpt, (long long)state->step,
			(long long)*K);
	} else if (c->lora_model_dir) {
		struct tern_adapter_meta am;
		if ((st = tern_adapter_read(c->lora_model_dir, s->lora, &am)) != TERN_OK ||
		    (st = check_meta(c, c->lora_model_dir, &am)) != TERN_OK)
			return st;
		fprintf(s->out, "starting from the adapter in %s\n", c->lora_model_dir);
	} else {
		lora_init(s->lora, (uint64_t)c->seed);
	}
	return TERN_OK;
}

/* ---- the training loop: one optimizer step, its log, its evaluation and saves ---- */

/* What the steps of tern_train's loop share. tern_train sets it up and owns (frees) every pointer
 * in it; train_step, train_budget, train_log and train_eval_save read it and move it on. */
struct train_loop {
	struct session *s;
	struct tern_train_state *state; /* the step, data position, tokens, elapsed time */
	FILE *out, *metrics;            /* metrics: /dev/null on the ranks other than 0 */
	struct tern_tfevents *tb;       /* use_tensorboard, rank 0 */
	struct tern_eval_prompts *ep;   /* eval_prompts, rank 0 */
	bool *committed;                /* metrics.jsonl and config.yaml replace the previous run's */
	struct tern_dist_nccl *nccl;
	float *gsum;    /* several ranks: the gradients, the loss, tokens and stop, summed */
	int64_t *order; /* [rows] the epoch's order */
	const struct tern_rows *val;
	int rank, ranks;
	int drank; /* the rank's place in the data window (0 in a layer split: one window) */
	int stop;  /* several ranks: whether any rank was asked to stop (summed with the gradients) */
	bool main_rank, tty, compiling;
	bool planned;           /* max_time has planned the schedule (or there is none) */
	int64_t rows, per_step; /* the training rows; a step's window of rows */
	int64_t K, W;           /* the schedule's steps and warm-up (max_time may shorten it) */
	int64_t eval_every, save_every, log_every;
	int64_t first_step;   /* the step this run (or its resume) started at */
	int64_t input_tokens; /* real tokens fed since this run (or its resume) started */
	double t0, elapsed0, warm0, tok_window;
	struct tern_step_clock clock;
	uint64_t peak_dev;
};

/* a finished optimizer step, for its log */
struct train_step_out {
	double loss, gnorm, lr;
	double step_s, now; /* the step's wall time; when it ended */
	struct tern_profile prof;
};

/* One optimizer step k = state->step: the window's micro-batches, the sum over the ranks, the
 * norm, clipping and AdamW; the state then moves on by the step. */
static enum tern_status train_step(struct train_loop *l, struct train_step_out *o)
{
	struct session *s = l->s;
	const struct tern_config *c = s->cfg;
	struct tern_train_state *state = l->state;
	enum tern_status st = TERN_OK;
	memset(&o->prof, 0, sizeof o->prof);
	/* the step's profile starts here: what ran since the last step (eval, a checkpoint's
	 * downloads) is not the step's */
	if (s->profile && (st = tern_backend_profile_read(s->be, &o->prof, true)) != TERN_OK)
		return st;
	double ts = tern_now();
	int64_t k = state->step;
	if (state->row >= l->rows) {
		state->epoch++;
		state->row = 0;
		epoch_order(l->order, l->rows, state->seed, state->epoch);
	}
	int64_t n_rows = l->rows - state->row < l->per_step ? l->rows - state->row : l->per_step;
	const int64_t *idx = l->order + state->row;
	int64_t N = count_trained(&s->data->train, idx, n_rows);
	if ((st = tern_net_zero(s->net)) != TERN_OK)
		return st;
	int64_t real = 0; /* the step's real (non-pad) tokens */
	for (int64_t j = 0; j < s->accum && st == TERN_OK; j++) {
		/* this rank's j-th micro-batch is the window's (rank · accum + j)-th */
		int64_t mi = l->drank * s->accum + j, a = mi * s->mb, m = n_rows - a;
		m = m < 0 ? 0 : m > s->mb ? s->mb : m;
		stage(s, &s->data->train, m > 0 ? idx + a : idx, m);
		real += s->real;
		if ((st = tern_net_tokens(s->net, s->Tb)) == TERN_OK)
			st = tern_net_micro(s->net, s->tok_b, s->tgt_b, s->pos_b, s->seg_b,
					    N ? 1.0f / (float)N : 0.0f, true, (uint64_t)k, (uint32_t)mi);
	}
	/* the sum over the ranks, before the norm and clipping; with it the real tokens and
	 * whether any rank was asked to stop (all stop after the same step) */
	if (s->split && l->rank > 0) /* every stage saw the same tokens: count them once */
		real = 0;
	if (st == TERN_OK && l->ranks > 1 &&
	    (st = sum_over_ranks(s, l->nccl, l->gsum, &real, &l->stop)) != TERN_OK)
		return st;
	if (st || (st = tern_net_loss(s->net, &o->loss)) ||
	    (st = tern_net_clip(s->net, (float)c->max_grad_norm, &o->gnorm)))
		return st;
	o->lr = c->learning_rate * tern_lr_lambda(c->lr_scheduler, k, l->W, l->K, c->cosine_min_lr_ratio);
	struct tern_adamw_args aa = {o->lr,           c->adam_beta1,   c->adam_beta2,
				     c->adam_epsilon, c->weight_decay, k + 1};
	if ((st = tern_net_adamw(s->net, &aa)) != TERN_OK)
		return st;
	if (!isfinite(o->loss))
		return tern_fail(
			TERN_E_INVALID,
			"step %lld: the loss is %g (diverged); lower learning_rate (now %g) or check the data",
			(long long)(k + 1), o->loss, c->learning_rate);
	/* waits for the step's ops, so the wall time below covers their device time */
	if (s->profile && (st = tern_backend_profile_read(s->be, &o->prof, true)) != TERN_OK)
		return st;
	state->step++;
	state->row += n_rows;
	state->tokens += N;
	state->last_loss = o->loss;
	o->now = tern_now();
	o->step_s = o->now - ts;
	l->tok_window += (double)real; /* tokens/s counts real tokens only, never padding */
	l->input_tokens += real;
	state->elapsed = l->elapsed0 + (o->now - l->t0);
	return TERN_OK;
}

/* The step clock and max_time after a step: the warm-up line, the schedule planned from the
 * first measured steps, the end when the time is up; several ranks follow rank 0's clock. */
static enum tern_status train_budget(struct train_loop *l, const struct train_step_out *o)
{
	const struct tern_config *c = l->s->cfg;
	struct tern_train_state *state = l->state;
	enum tern_status st;
	tern_step_clock_add(&l->clock, o->step_s);
	if (l->compiling && state->step - l->first_step == 1)
		fprintf(l->out,
			"compiling shaders: warm-up %.1f s (left out of the max_time step estimate)\n",
			o->now - l->warm0);
	/* time budget: plan the schedule from the first measured steps after the warm-up */
	double per = tern_step_clock_per_step(&l->clock, 3);
	if (!l->planned && per > 0) {
		int64_t fit = tern_time_fit((double)c->max_time, state->elapsed, state->step, per);
		l->planned = true;
		if (fit < l->K) {
			fprintf(l->out, "max_time %llds: %.2f s/step, planning %lld steps instead of %lld\n",
				(long long)c->max_time, per,
				(long long)(fit > state->step ? fit : state->step), (long long)l->K);
			l->K = fit > state->step ? fit : state->step;
			if (c->warmup_steps <= 0)
				l->W = (int64_t)ceil(c->warmup_ratio * (double)l->K);
			state->total_steps = l->K;
			state->warmup_steps = l->W;
		}
	}
	if (c->max_time > 0 && state->elapsed >= (double)c->max_time && state->step < l->K) {
		fprintf(l->out, "\nmax_time reached after %lld steps\n", (long long)state->step);
		l->K = state->step;
	}
	if (c->max_time > 0 && l->ranks > 1) { /* rank 0's clock decides for all */
		int64_t kw[2] = {l->K, l->W};
		if ((st = tern_dist_bcast(kw, sizeof kw, 0)) != TERN_OK)
			return st;
		l->K = kw[0], l->W = kw[1];
		state->total_steps = l->K;
		state->warmup_steps = l->W;
	}
	return TERN_OK;
}

/* A finished step's log: the profile line, the progress line (every logging_steps, or on a
 * terminal every step), the outputs' commit, the metrics.jsonl row and TensorBoard's scalars. */
static enum tern_status train_log(struct train_loop *l, const struct train_step_out *o)
{
	struct session *s = l->s;
	const struct tern_config *c = s->cfg;
	const struct tern_train_state *state = l->state;
	FILE *out = l->out, *metrics = l->metrics;
	bool tty = l->tty;
	enum tern_status st;
	{
		uint64_t budget = 0, usage = 0;
		if (s->be->vt->memory_info && s->be->vt->memory_info(s->be, &budget, &usage) == TERN_OK &&
		    usage > l->peak_dev)
			l->peak_dev = usage;
	}
	uint64_t peak_dev = l->peak_dev, peak_host = tern_peak_rss();
	double epoch = (double)state->epoch + (double)state->row / (double)l->rows;
	struct tern_residency_stats ss;
	tern_net_stream_stats(s->net, &ss, true);
	bool log = state->step % l->log_every == 0 || state->step == l->K;
	double done = (double)(state->step - l->first_step), tps = l->tok_window / (o->now - l->t0);
	/* the ETA from the steps after the warm-up once there are any */
	double per1 = tern_step_clock_per_step(&l->clock, 1);
	double eta = per1 > 0   ? per1 * (double)(l->K - state->step)
		     : done > 0 ? (o->now - l->t0) / done * (double)(l->K - state->step)
				: 0;
	if (s->profile)
		profile_print(out, state->step, &o->prof, o->step_s, tty);
	if (log || tty) {
		char e1[32], e2[32], mem[32], pd[32], ph[32];
		uint64_t wb, lb, ab;
		tern_net_memory(s->net, &wb, &lb, &ab);
		fmt_time(e1, sizeof e1, state->elapsed);
		fmt_time(e2, sizeof e2, eta);
		fmt_bytes(mem, sizeof mem, (double)(wb + lb + ab));
		fmt_bytes(pd, sizeof pd, (double)peak_dev);
		fmt_bytes(ph, sizeof ph, (double)peak_host);
		char strm[160] = "";
		if (ss.loads) {
			char b[32], xb[32], xw[32];
			fmt_bytes(b, sizeof b, (double)(ss.bytes[TERN_TIER_HOST] + ss.bytes[TERN_TIER_DISK]));
			int w0 = snprintf(strm, sizeof strm, "  streamed %s (wait %.2f s)", b, ss.wait_s);
			if (ss.expert_whole) {
				fmt_bytes(xb, sizeof xb, (double)ss.expert_bytes);
				fmt_bytes(xw, sizeof xw, (double)ss.expert_whole);
				snprintf(strm + w0, sizeof strm - (size_t)w0,
					 ", experts %s of %s (%llu in, %llu hits)", xb, xw,
					 (unsigned long long)ss.expert_loads,
					 (unsigned long long)ss.expert_hits);
			}
		}
		fprintf(out,
			"%sstep %lld/%lld  loss %.4f  lr %.3e  grad norm %.3f  epoch %.2f  %.0f tok/s  %s<%s  "
			"mem %s (peak device %s, host %s)%s%s",
			tty ? "\r" : "", (long long)state->step, (long long)l->K, o->loss, o->lr, o->gnorm,
			epoch, tps, e1, e2, mem, pd, ph, strm, tty ? "\033[K" : "\n");
		fflush(out);
	}
	if ((st = commit_outputs(c, metrics, l->committed)) != TERN_OK)
		return st;
	if (log || s->profile) { /* with the profile, every step's figures */
		fprintf(metrics,
			"{\"step\": %lld, \"epoch\": %.4f, \"loss\": %.6f, \"lr\": %.6e, \"grad_norm\": %.6f, "
			"\"tokens\": %lld, \"tokens_per_s\": %.1f, \"step_s\": %.4f, \"elapsed_s\": %.2f, "
			"\"stream_host_bytes\": %llu, \"stream_disk_bytes\": %llu, \"stream_wait_s\": %.4f, "
			"\"stream_read_s\": %.4f, \"stream_expert_bytes\": %llu, "
			"\"stream_expert_whole_bytes\": %llu, \"stream_expert_loads\": %llu, "
			"\"stream_expert_hits\": %llu, \"input_tokens\": %lld, \"peak_device_bytes\": %llu, "
			"\"peak_host_bytes\": %llu",
			(long long)state->step, epoch, o->loss, o->lr, o->gnorm, (long long)state->tokens,
			tps, o->step_s, state->elapsed, (unsigned long long)ss.bytes[TERN_TIER_HOST],
			(unsigned long long)ss.bytes[TERN_TIER_DISK], ss.wait_s, ss.read_s,
			(unsigned long long)ss.expert_bytes, (unsigned long long)ss.expert_whole,
			(unsigned long long)ss.expert_loads, (unsigned long long)ss.expert_hits,
			(long long)l->input_tokens, (unsigned long long)peak_dev,
			(unsigned long long)peak_host);
		if (s->profile)
			profile_fields(metrics, &o->prof, o->step_s);
		fprintf(metrics, "}\n");
		fflush(metrics);
		struct tern_step_log sl = {state->step, epoch, o->loss,  o->lr,
					   o->gnorm,    tps,   peak_dev, peak_host};
		if (l->tb && (st = tern_tb_step(l->tb, &sl)) != TERN_OK)
			return st;
	}
	return TERN_OK;
}

/* After a step: the periodic evaluation (rank 0 alone; a layer split: every stage) and eval
 * prompts every eval_every steps, and a checkpoint every save_every steps or when asked to stop. */
static enum tern_status train_eval_save(struct train_loop *l)
{
	struct session *s = l->s;
	struct tern_train_state *state = l->state;
	FILE *out = l->out;
	bool tty = l->tty;
	enum tern_status st;
	if (l->eval_every && l->val->n_rows && state->step % l->eval_every == 0 && state->step < l->K &&
	    (l->main_rank || s->split)) {
		double el;
		int64_t en;
		if ((st = evaluate(s, l->val, &el, &en)) != TERN_OK)
			return st;
		fprintf(out, "%seval step %lld: loss %.4f, perplexity %.2f\n", tty ? "\n" : "",
			(long long)state->step, el, exp(el));
		fprintf(l->metrics, "{\"step\": %lld, \"eval_loss\": %.6f, \"eval_tokens\": %lld}\n",
			(long long)state->step, el, (long long)en);
		fflush(l->metrics);
		if (l->tb && (st = tern_tb_eval(l->tb, state->step, el)) != TERN_OK)
			return st;
	}
	if (l->ep && l->eval_every && state->step % l->eval_every == 0 && state->step < l->K) {
		fprintf(out, "%s", tty ? "\n" : "");
		if ((st = tern_eval_prompts_run(l->ep, state->step, out)) != TERN_OK)
			return st;
	}
	int stopping = l->ranks > 1 ? l->stop : g_stop;
	if (((l->save_every && state->step % l->save_every == 0 && state->step < l->K) || stopping) &&
	    l->main_rank) {
		if ((st = save_checkpoint(s, state)) != TERN_OK)
			return st;
		if (stopping)
			fprintf(out,
				"%sinterrupted: checkpoint-%lld written; resume_from_checkpoint: auto continues\n",
				tty ? "\n" : "", (long long)state->step);
	}
	return TERN_OK;
}

/* The end of a finished run: the evaluation after training (rank 0; a layer split: every stage),
 * then on rank 0 the eval prompts, the last checkpoint and the adapter (res->adapter_dir). */
static enum tern_status train_finish(struct train_loop *l, struct tern_train_result *res)
{
	struct session *s = l->s;
	const struct tern_config *c = s->cfg;
	struct tern_train_state *state = l->state;
	FILE *out = l->out;
	double el;
	int64_t en;
	enum tern_status st;
	if (!l->main_rank && !s->split) /* rank 0 evaluates and writes the adapter */
		return TERN_OK;
	if (l->val->n_rows) {
		if ((st = evaluate(s, l->val, &el, &en)) != TERN_OK || !l->main_rank)
			return st;
		res->eval_after = el;
		fprintf(out, "eval after training: loss %.4f, perplexity %.2f", el, exp(el));
		if (!isnan(res->eval_before))
			fprintf(out, " (before: %.4f, %.2f)", res->eval_before, exp(res->eval_before));
		fprintf(out, "\n");
		fprintf(l->metrics, "{\"step\": %lld, \"eval_loss\": %.6f, \"eval_tokens\": %lld}\n",
			(long long)state->step, el, (long long)en);
		if (l->tb && (st = tern_tb_eval(l->tb, state->step, el)) != TERN_OK)
			return st;
	}
	if (!l->main_rank) /* a layer split's other stages: the evaluation above only */
		return TERN_OK;
	if ((st = tern_eval_prompts_run(l->ep, state->step, out)) != TERN_OK)
		return st;
	if (l->save_every && state->step % l->save_every == 0 && (st = save_checkpoint(s, state)) != TERN_OK)
		return st;
	snprintf(res->adapter_dir, sizeof res->adapter_dir, "%s/adapter", c->output_dir);
	struct tern_adapter_meta fm = s->meta; /* lora_expert_layout: the final adapter only */
	fm.per_expert = c->lora_expert_layout == 1;
	fm.model_type = s->mc.model_type;
	if ((st = tern_net_lora_download(s->net, s->lora)) ||
	    (st = tern_adapter_write(res->adapter_dir, s->lora, &fm)))
		return st;
	fprintf(out, "adapter written to %s (%lld steps, %.1f s)\n", res->adapter_dir, (long long)state->step,
		state->elapsed);
	return TERN_OK;
}

enum tern_status tern_train(const char *config_path, const char *const *sets, int n_sets,
			    const struct tern_train_opts *opts, FILE *out, struct tern_train_result *res)
{
	struct session s = {.out = out};
	memset(res, 0, sizeof *res);
	res->eval_before = res->eval_after = NAN;
	int64_t *order = NULL;
	FILE *metrics = NULL;
	bool created_out = false, committed = false;
	struct tern_outdir_lock *lock = NULL;
	struct tern_tfevents *tb = NULL;
	struct tern_eval_prompts *ep = NULL;
	float *gsum = NULL; /* several ranks: the gradients, the loss, tokens and stop, summed */
	struct tern_dist_nccl *nccl = NULL;
	int rank = tern_dist_rank(), ranks = tern_dist_size(), stop = 0;
	bool main_rank = rank == 0;
	enum tern_status st;
	if ((st = load_config(&s, config_path, sets, n_sets)) != TERN_OK)
		goto out;
	struct tern_config *c = s.cfg;
	created_out = !file_exists(c->output_dir);
	{
		char *y = NULL;
		if ((st = tern_config_write(c, &y)) != TERN_OK)
			goto out;
		fprintf(out, "%s", y);
		free(y);
	}
	if (main_rank && (st = open_outdir(&s, &lock)) != TERN_OK)
		goto out;
	/* everything that can fail on bad input before anything is written to output_dir */
	if ((st = open_lora(&s, true, c->lora_model_dir)) || (st = guard_inputs(&s, true)))
		goto out;
	if (s.data->train.n_rows == 0) {
		st = tern_fail(TERN_E_INVALID, "%s: datasets: no training rows", c->file);
		goto out;
	}
	{
		int64_t ks[TERN_PLAN_MAX_STAGES];
		int nk;
		if ((st = tern_plan_split_parse(c, ks, TERN_PLAN_MAX_STAGES - 1, &nk)))
			goto out;
		s.split = nk >= 0 && ranks > 1;
		if (nk >= 0 && ranks == 1) {
			fprintf(out, "layer_split: one process runs every layer (start one rank per stage: "
				     "mpirun -n N, or --devices)\n");
			if ((st = tern_config_set(c, "layer_split=null")))
				goto out;
		}
		if (s.split && c->n_eval_prompts) {
			st = tern_fail(
				TERN_E_UNSUPPORTED,
				"%s: eval_prompts with layer_split: generation runs on one device with "
				"every layer; remove eval_prompts, or run without layer_split",
				c->file);
			goto out;
		}
	}

	/* schedule */
	/* data parallel: the window covers every rank's rows; a layer split's stages share one */
	int dranks = s.split ? 1 : ranks, drank = s.split ? 0 : rank;
	int64_t rows = s.data->train.n_rows, per_step = s.mb * s.accum * dranks;
	int64_t steps_per_epoch = tern_cdiv(rows, per_step);
	int64_t K = c->max_steps > 0 ? c->max_steps : (int64_t)ceil(c->num_epochs * (double)steps_per_epoch);
	if (K < 1)
		K = 1;
	int64_t W = c->warmup_steps > 0 ? c->warmup_steps : (int64_t)ceil(c->warmup_ratio * (double)K);

	/* parameters: resumed, loaded or fresh */
	struct tern_train_state state = {
		.total_steps = K, .warmup_steps = W, .seed = (uint64_t)c->seed, .schedule_steps = K};
	snprintf(state.config_hash, sizeof state.config_hash, "%016llx", (unsigned long long)config_hash(c));
	tern_state_set_data(&state, &s.data->train, c);
	if ((st = load_params(&s, &state, &K, &W)) != TERN_OK)
		goto out;
	if ((st = open_backend(&s)) || (st = profile_start(&s, opts)))
		goto out;
	/* rank 0 builds the pack file; the others reuse it once it is there */
	if (main_rank)
		st = open_model(&s);
	if (st == TERN_OK && ranks > 1)
		st = tern_dist_barrier();
	if (st == TERN_OK && !main_rank)
		st = open_model(&s);
	if (st || (st = open_net(&s)) || (st = tern_net_lora_upload(s.net, s.lora)))
		goto out;
	if (ranks > 1 &&
	    ((st = open_nccl(&s, &nccl)) ||
	     !(gsum = tern_malloc((size_t)(nccl ? 2 : tern_net_grad_floats(s.net) + 2) * sizeof *gsum)))) {
		if (st == TERN_OK)
			st = tern_fail(TERN_E_NOMEM, "out of host memory");
		goto out;
	}
	s.nccl = nccl;
	if (s.split && tern_dist_nccl_p2p(nccl)) { /* the boundary between the devices too */
		s.link.send_dev = link_send_dev;
		s.link.recv_dev = link_recv_dev;
		fprintf(out, "layer split: the boundary passes between the devices with NCCL\n");
	}
	if (s.split && (st = stage_lines(&s)) != TERN_OK)
		goto out;
	banner(&s, steps_per_epoch, K, W);
	if (!main_rank) { /* the other ranks write nothing */
		committed = true;
		if (!(metrics = fopen("/dev/null", "w"))) {
			st = tern_fail(TERN_E_IO, "cannot open /dev/null: %s", strerror(errno));
			goto out;
		}
	} else if ((st = metrics_open(c->output_dir, state.step, &metrics)) != TERN_OK)
		goto out;
	if (c->use_tensorboard && main_rank) {
		char tbp[4400];
		if ((st = tern_tfevents_open(c->output_dir, &tb, tbp, sizeof tbp)) != TERN_OK)
			goto out;
		fprintf(out, "tensorboard: %s\n", tbp);
	}
	if (main_rank && (st = tern_eval_prompts_open(c, s.model_dir, s.tok, s.net, s.model, &ep)) != TERN_OK)
		goto out;
	/* the shaders compile at their first use: the eval below and the first step (warm-up) */
	bool compiling = s.be->pipeline_cache[0] && !s.be->pipeline_cache_loaded;
	if (compiling) {
		fprintf(out, "compiling shaders (first run: no pipeline cache at %s yet)\n",
			s.be->pipeline_cache);
		fflush(out);
	}
	double warm0 = tern_now();

	/* eval before */
	const struct tern_rows *val = &s.data->val;
	double el;
	int64_t en;
	/* evaluation: rank 0 alone (a layer split: every stage) */
	if (val->n_rows && state.step == 0 && (main_rank || s.split)) {
		if ((st = evaluate(&s, val, &el, &en)) != TERN_OK)
			goto out;
		res->eval_before = el;
		fprintf(out, "eval before training: loss %.4f, perplexity %.2f (%lld tokens)\n", el, exp(el),
			(long long)en);
		fprintf(metrics, "{\"step\": 0, \"eval_loss\": %.6f, \"eval_tokens\": %lld}\n", el,
			(long long)en);
		fflush(metrics);
		if (tb && (st = tern_tb_eval(tb, 0, el)) != TERN_OK)
			goto out;
	}
	if (state.step == 0 && (st = tern_eval_prompts_run(ep, 0, out)) != TERN_OK)
		goto out;

	int64_t eval_every = c->eval_steps > 0        ? c->eval_steps
			     : c->evals_per_epoch > 0 ? (steps_per_epoch / c->evals_per_epoch > 0
								 ? steps_per_epoch / c->evals_per_epoch
								 : 1)
						      : 0;
	int64_t save_every = c->save_steps > 0        ? c->save_steps
			     : c->saves_per_epoch > 0 ? (steps_per_epoch / c->saves_per_epoch > 0
								 ? steps_per_epoch / c->saves_per_epoch
								 : 1)
						      : 0;
	int64_t log_every = c->logging_steps > 0 ? c->logging_steps : 1;
	/* under mpirun, rank 0's stdout is mpirun's pipe or pty, whatever mpirun writes to: lines */
	bool tty = ranks == 1 && isatty(fileno(out));

	if (!(order = tern_malloc((size_t)rows * sizeof *order))) {
		st = tern_fail(TERN_E_NOMEM, "out of host memory");
		goto out;
	}
	epoch_order(order, rows, state.seed, state.epoch);

	struct sigaction sa = {0}, old_int, old_term;
	sa.sa_handler = on_signal;
	g_stop = g_saving = 0;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	struct train_loop l = {
		.s = &s,
		.state = &state,
		.out = out,
		.metrics = metrics,
		.tb = tb,
		.ep = ep,
		.committed = &committed,
		.nccl = nccl,
		.gsum = gsum,
		.order = order,
		.val = val,
		.rank = rank,
		.ranks = ranks,
		.drank = drank,
		.main_rank = main_rank,
		.tty = tty,
		.compiling = compiling,
		.planned = c->max_time <= 0,
		.rows = rows,
		.per_step = per_step,
		.K = K,
		.W = W,
		.eval_every = eval_every,
		.save_every = save_every,
		.log_every = log_every,
		.first_step = state.step,
		.t0 = tern_now(),
		.elapsed0 = state.elapsed,
		.warm0 = warm0,
		.clock = {.skip = 1}, /* the first step compiles: not step time */
	};
	struct train_step_out so;
	while (state.step < l.K && !(ranks > 1 ? l.stop : g_stop)) {
		if ((st = train_step(&l, &so)) || (st = train_budget(&l, &so)) || (st = train_log(&l, &so)) ||
		    (st = train_eval_save(&l)))
			break;
	}
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	if (tty)
		fprintf(out, "\n");
	if (st != TERN_OK)
		goto out;
	res->steps = state.step;
	res->loss = state.last_loss;
	stop = ranks > 1 ? l.stop : g_stop;
	res->interrupted = stop;
	if (!stop && (st = commit_outputs(c, metrics, &committed)) != TERN_OK)
		goto out;
	if (stop) {
		st = tern_fail(TERN_E_INTERRUPTED, "interrupted at step %lld; checkpoint written to %s",
			       (long long)state.step, c->output_dir);
		goto out;
	}
	st = train_finish(&l, res);
out:
	if (metrics) {
		fclose(metrics);
		if (!committed) { /* the previous run's metrics.jsonl stays as it was */
			char tmp[4300];
			snprintf(tmp, sizeof tmp, "%s/metrics.jsonl.tmp.%ld", s.cfg->output_dir,
				 (long)getpid());
			remove(tmp);
		}
	}
	tern_tfevents_close(tb);
	tern_eval_prompts_free(ep);
	free(order);
	free(gsum);
	tern_dist_nccl_close(nccl);
	tern_outdir_unlock(lock, st != TERN_OK && st != TERN_E_INTERRUPTED && created_out);
	if (st != TERN_OK && st != TERN_E_INTERRUPTED && created_out && s.cfg && main_rank) {
		/* a run that failed before writing anything leaves no directories behind (rmdir only
		 * removes empty ones) */
		char p[4200];
		snprintf(p, sizeof p, "%s/offload", s.cfg->output_dir);
		if (!s.cfg->offload_dir)
			rmdir(p);
		rmdir(s.cfg->output_dir);
	}
	session_free(&s);
	return st;
}

enum tern_status tern_eval(const char *config_path, const char *const *sets, int n_sets,
			   const char *adapter_dir, FILE *out, struct tern_eval_result *res)
{
	struct session s = {.out = out};
	memset(res, 0, sizeof *res);
	res->adapter_loss = res->adapter_ppl = NAN;
	enum tern_status st;
	char adir[4200] = "";
	if ((st = load_config(&s, config_path, sets, n_sets)))
		goto out;
	struct tern_config *c = s.cfg;
	if (adapter_dir)
		snprintf(adir, sizeof adir, "%s", adapter_dir);
	else {
		char p[4300];
		snprintf(p, sizeof p, "%s/adapter/adapter_config.json", c->output_dir);
		if (file_exists(p))
			snprintf(adir, sizeof adir, "%s/adapter", c->output_dir);
		else if (c->lora_model_dir)
			snprintf(adir, sizeof adir, "%s", c->lora_model_dir);
	}
	if ((st = open_lora(&s, false, adir[0] ? adir : NULL)) || (st = guard_inputs(&s, false)) ||
	    (st = open_backend(&s)) || (st = open_model(&s)) || (st = open_net(&s)))
		goto out;
	const struct tern_rows *r = s.data->val.n_rows ? &s.data->val : &s.data->train;
	/* base alone: B = 0 makes every LoRA term vanish */
	if ((st = tern_net_lora_upload(s.net, s.lora)) ||
	    (st = evaluate(&s, r, &res->base_loss, &res->tokens)))
		goto out;
	res->base_ppl = exp(res->base_loss);
	fprintf(out, "eval %s on %s split (%lld rows, %lld tokens)\n", c->base_model,
		s.data->val.n_rows ? "the validation" : "the whole (no val_set_size)", (long long)r->n_rows,
		(long long)res->tokens);
	fprintf(out, "  base          loss %.6f  perplexity %.4f\n", res->base_loss, res->base_ppl);
	if (adir[0]) {
		struct tern_adapter_meta am;
		if ((st = tern_adapter_read(adir, s.lora, &am)) || (st = check_meta(c, adir, &am)) ||
		    (st = tern_net_lora_upload(s.net, s.lora)) ||
		    (st = evaluate(&s, r, &res->adapter_loss, &res->tokens)))
			goto out;
		res->adapter_ppl = exp(res->adapter_loss);
		snprintf(res->adapter_dir, sizeof res->adapter_dir, "%s", adir);
		fprintf(out, "  + adapter     loss %.6f  perplexity %.4f  (%s)\n", res->adapter_loss,
			res->adapter_ppl, adir);
	}
out:
	session_free(&s);
	return st;
}
