/* Streaming frozen layers through device slots (issue 5): a 6-layer model trained with 2 layers on
 * the device, 2 in host memory and 2 read from the mmapped pack file must end with LoRA parameters
 * and losses bit-identical to the all-resident run, upload exactly the bytes the slot policy
 * implies per tier, and allocate less device memory. Offloaded checkpoints (the layer inputs in
 * host memory, two device slots; alone and with streamed layers, and at the backend's half
 * precision where it has one) must give the same bytes too, with 5 fewer [T, D] inputs on the
 * device. On ref, cpu, vulkan (lavapipe in CI) and cuda (where present). */
#include "backend/backend.h"
#include "model/model.h"
#include "train/adapter.h"
#include "train/net.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int passed, failed, skipped;

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

enum { S = 16, MB = 2, T = S * MB, STEPS = 2, ACCUM = 2 };

struct run {
	double loss[STEPS];
	struct tern_lora_set *set;
	struct tern_residency_stats stats;
	uint64_t weights, act;
};

/* STEPS optimizer steps of ACCUM micro-batches on deterministic pseudo-random rows. */
static enum tern_status train(struct tern_backend *be, struct tern_model *m, const uint8_t *tiers, int slots,
			      bool offload, enum tern_dtype prec, struct run *r)
{
	unsigned mods = (1u << TERN_MOD_COUNT) - 1;
	int64_t io[TERN_MOD_COUNT][2];
	tern_net_module_shapes(&m->cfg, io);
	struct tern_net_opts no = {.R = 4,
				   .scale = 2.0f,
				   .dropout = 0.1f,
				   .modules = mods,
				   .T = T,
				   .checkpointing = true,
				   .offload = offload,
				   .prec = prec,
				   .seed = 5,
				   .tiers = tiers,
				   .slots = slots};
	struct tern_net *net = NULL;
	enum tern_status st = tern_net_create(be, m, &no, &net);
	if (st == TERN_OK)
		st = tern_lora_set_alloc(&r->set, (int)m->cfg.L, 4, mods, io, false);
	if (st != TERN_OK)
		goto out;
	/* A and B non-zero so every path carries gradient */
	uint64_t x = 99;
	for (int l = 0; l < r->set->L; l++)
		for (int mm = 0; mm < TERN_MOD_COUNT; mm++) {
			struct tern_lora_tensor *t = tern_lora_at(r->set, l, (enum tern_module)mm);
			for (int64_t i = 0; i < 4 * t->I; i++)
				t->A[i] = (float)((x = x * 6364136223846793005ull + 1442695040888963407ull) >>
						  41) /
						  8388608.0f * 0.2f -
					  0.1f;
			for (int64_t i = 0; i < t->O * 4; i++)
				t->B[i] = (float)((x = x * 6364136223846793005ull + 1442695040888963407ull) >>
						  41) /
						  8388608.0f * 0.02f -
					  0.01f;
		}
	if ((st = tern_net_lora_upload(net, r->set)))
		goto out;
	int32_t tk[T], tg[T], ps[T], sg[T];
	for (int k = 0; k < STEPS && st == TERN_OK; k++) {
		if ((st = tern_net_zero(net)))
			break;
		for (int j = 0; j < ACCUM && st == TERN_OK; j++) {
			for (int t = 0; t < T; t++) {
				x = x * 6364136223846793005ull + 1442695040888963407ull;
				tk[t] = (int32_t)((x >> 33) % 256);
				ps[t] = t % S;
				sg[t] = t / S;
			}
			for (int t = 0; t < T; t++)
				tg[t] = t % S == S - 1 ? -100 : tk[t + 1];
			st = tern_net_micro(net, tk, tg, ps, sg, 1.0f / (float)(ACCUM * MB * (S - 1)), true,
					    (uint64_t)k, (uint32_t)j);
		}
		double norm;
		struct tern_adamw_args aa = {1e-2, 0.9, 0.999, 1e-8, 0.01, k + 1};
		if (st || (st = tern_net_loss(net, &r->loss[k])) || (st = tern_net_clip(net, 1.0f, &norm)) ||
		    (st = tern_net_adamw(net, &aa)))
			break;
	}
	if (st == TERN_OK)
		st = tern_net_lora_download(net, r->set);
	tern_net_stream_stats(net, &r->stats, false);
	uint64_t lb, ab;
	tern_net_memory(net, &r->weights, &lb, &ab);
	r->act = ab;
out:
	tern_net_free(net);
	return st;
}

static bool same_params(const struct tern_lora_set *a, const struct tern_lora_set *b)
{
	for (int l = 0; l < a->L; l++)
		for (int mm = 0; mm < TERN_MOD_COUNT; mm++) {
			struct tern_lora_tensor *x = tern_lora_at(a, l, (enum tern_module)mm),
						*y = tern_lora_at(b, l, (enum tern_module)mm);
			if (memcmp(x->A, y->A, (size_t)(a->R * x->I) * 4) ||
			    memcmp(x->B, y->B, (size_t)(x->O * a->R) * 4))
				return false;
		}
	return true;
}

static void run_backend(const char *root, const char *bname)
{
	struct tern_backend *be = NULL;
	struct tern_model *m = NULL;
	struct run all = {0}, str = {0}, one = {0}, off = {0}, offs = {0}, dev16 = {0}, off16 = {0};
	enum tern_status st = tern_backend_create(bname, 0, &be);
	if (st == TERN_E_UNAVAILABLE) {
		/* TERN_REQUIRE_VULKAN=1 (TERN_REQUIRE_CUDA=1): a missing Vulkan (CUDA) device fails */
		const char *req = getenv(strcmp(bname, "cuda") ? "TERN_REQUIRE_VULKAN" : "TERN_REQUIRE_CUDA");
		if (req && !strcmp(req, "1"))
			check(false, "%s: backend unavailable: %s", bname, tern_error());
		else
			printf("skip  %s: backend unavailable: %s (not run)\n", bname, tern_error()),
				skipped++;
		return;
	}
	char path[4200];
	snprintf(path, sizeof path, "%s/models/llama6", root);
	struct tern_model_opts mo = {.format = TERN_FORMAT_NF4_DQ, .blocksize = 64};
	if (st || (st = tern_model_open(path, &mo, &m))) {
		check(false, "%s: setup: %s", bname, tern_error());
		goto out;
	}
	const uint8_t tiers[6] = {TERN_TIER_DEVICE, TERN_TIER_DEVICE, TERN_TIER_HOST,
				  TERN_TIER_HOST,   TERN_TIER_DISK,   TERN_TIER_DISK};
	const uint8_t one_dev[6] = {TERN_TIER_DISK, TERN_TIER_HOST, TERN_TIER_DISK,
				    TERN_TIER_HOST, TERN_TIER_DISK, TERN_TIER_DEVICE};
	/* a half precision the backend's products run at (the layer inputs then kept in it) */
	enum tern_dtype half = tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_BF16)  ? TERN_BF16
			       : tern_backend_supports_prec(be, TERN_OP_MATMUL, TERN_F16) ? TERN_F16
											  : TERN_F32;
	if ((st = train(be, m, NULL, 0, false, TERN_F32, &all)) ||
	    (st = train(be, m, tiers, 2, false, TERN_F32, &str)) ||
	    (st = train(be, m, one_dev, 3, false, TERN_F32, &one)) ||
	    (st = train(be, m, NULL, 0, true, TERN_F32, &off)) ||
	    (st = train(be, m, tiers, 2, true, TERN_F32, &offs)) ||
	    (half != TERN_F32 && ((st = train(be, m, NULL, 0, false, half, &dev16)) ||
				  (st = train(be, m, NULL, 0, true, half, &off16))))) {
		check(false, "%s: training: %s", bname, tern_error());
		goto out;
	}
	/* offloaded checkpoints: the same bytes; the inputs of layers 0-6 in 2 slots instead of 7 */
	size_t xb = (size_t)(T * m->cfg.D) * 4;
	check(!memcmp(all.loss, off.loss, sizeof all.loss) && same_params(all.set, off.set) &&
		      all.act - off.act == 5 * xb,
	      "%s: offloaded checkpoints: losses %.6f %.6f and LoRA bit-identical to the inputs on the "
	      "device; activations %llu -> %llu bytes",
	      bname, off.loss[0], off.loss[1], (unsigned long long)all.act, (unsigned long long)off.act);
	check(!memcmp(all.loss, offs.loss, sizeof all.loss) && same_params(all.set, offs.set),
	      "%s: offloaded checkpoints with 2 device + 2 host + 2 disk layers: bit-identical", bname);
	if (half != TERN_F32)
		check(!memcmp(dev16.loss, off16.loss, sizeof dev16.loss) &&
			      same_params(dev16.set, off16.set) && dev16.act - off16.act == 5 * xb / 2,
		      "%s: offloaded %s layer inputs (%s products): losses %.6f %.6f, bit-identical", bname,
		      tern_dtype_name(half), tern_dtype_name(half), off16.loss[0], off16.loss[1]);
	else
		printf("skip  %s: no half-precision products here: the f16/bf16 offload case not run\n",
		       bname),
			skipped++;
	check(!memcmp(all.loss, str.loss, sizeof all.loss) && same_params(all.set, str.set),
	      "%s: 2 device + 2 host + 2 disk layers, 2 slots: losses %.6f %.6f and LoRA bit-identical to all-resident",
	      bname, str.loss[0], str.loss[1]);
	check(!memcmp(all.loss, one.loss, sizeof all.loss) && same_params(all.set, one.set),
	      "%s: 1 device layer, host and disk interleaved, 3 slots: bit-identical", bname);
	/* every layer group of this model has the same size G */
	uint64_t G = m->pack->groups[0].size;
	int micro = STEPS * ACCUM;
	/* with 2 slots (LRU): the first forward loads 2, 3 (host) and 4, 5 (disk); every backward finds
	 * 5 and 4 still in the slots and loads 3 and 2 (host), which the next forward then finds; so
	 * host: 2 + 2 per micro-batch, disk: 2 per micro-batch */
	uint64_t want_host = (uint64_t)(2 + 2 * micro) * G, want_disk = (uint64_t)(2 * micro) * G;
	check(str.stats.bytes[TERN_TIER_HOST] == want_host && str.stats.bytes[TERN_TIER_DISK] == want_disk &&
		      str.stats.bytes[TERN_TIER_DEVICE] == 0 && str.stats.loads == (uint64_t)(2 + 4 * micro),
	      "%s: streamed bytes host %llu (expected %llu), disk %llu (expected %llu), %llu loads, %llu hits",
	      bname, (unsigned long long)str.stats.bytes[TERN_TIER_HOST], (unsigned long long)want_host,
	      (unsigned long long)str.stats.bytes[TERN_TIER_DISK], (unsigned long long)want_disk,
	      (unsigned long long)str.stats.loads, (unsigned long long)str.stats.hits);
	/* device weights: 2 layers + 2 slots instead of 6 layers */
	check(all.weights - str.weights == 2 * G && all.weights - one.weights == 2 * G,
	      "%s: device weight bytes %llu all-resident, %llu streaming (2 slots), %llu (1 layer + 3 slots)",
	      bname, (unsigned long long)all.weights, (unsigned long long)str.weights,
	      (unsigned long long)one.weights);
out:
	tern_lora_set_free(all.set);
	tern_lora_set_free(str.set);
	tern_lora_set_free(one.set);
	tern_lora_set_free(off.set);
	tern_lora_set_free(offs.set);
	tern_lora_set_free(dev16.set);
	tern_lora_set_free(off16.set);
	tern_model_free(m);
	if (be)
		tern_backend_free(be);
}

int main(void)
{
	const char *root = getenv("TERN_TEST_DATA");
	if (!root) {
		fprintf(stderr, "test_stream: TERN_TEST_DATA is not set (run through ctest)\n");
		return 1;
	}
	static const char *const backends[] = {"ref", "cpu", "vulkan", "cuda"};
	const char *only = getenv("TERN_TEST_BACKEND"); /* one backend only */
	for (int b = 0; b < 4; b++)
		if (!only || !strcmp(only, backends[b]))
			run_backend(root, backends[b]);
	printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
	return failed ? 1 : 0;
}
