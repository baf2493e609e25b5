/* Vulkan backend internals. The loader is opened with dlopen so a machine without Vulkan still
 * runs tern (the backend reports itself unavailable instead of the program failing to start).
 *
 * Sequence: instance -> physical device (by index) -> device + compute queue (+ transfer queue
 * when a separate family exists) -> memory blocks -> buffers -> pipelines (one shared layout:
 * 8 storage buffers + 128 bytes of push constants) -> record dispatches with a global barrier
 * between them -> submit (signalling the compute timeline) when the ring of command buffers
 * moves on or someone waits; streaming copies on the transfer queue (vk_stream.c). */
#ifndef TERN_VK_H
#define TERN_VK_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include "backend/backend.h"
#include "backend/vulkan/spirv.h"
#include "backend/vulkan/vk_pcache.h"

/* clang-format off */
#define TERN_VK_FUNCS(X)                                                                                   \
	X(vkCreateInstance) X(vkEnumerateInstanceLayerProperties) X(vkEnumerateInstanceExtensionProperties)        \
	X(vkEnumerateInstanceVersion)
#define TERN_VK_INSTANCE_FUNCS(X)                                                                          \
	X(vkDestroyInstance) X(vkEnumeratePhysicalDevices) X(vkGetPhysicalDeviceProperties)                        \
	X(vkGetPhysicalDeviceProperties2) X(vkGetPhysicalDeviceFeatures2)                                      \
	X(vkGetPhysicalDeviceMemoryProperties) X(vkGetPhysicalDeviceMemoryProperties2)                         \
	X(vkGetPhysicalDeviceQueueFamilyProperties) X(vkEnumerateDeviceExtensionProperties) X(vkCreateDevice)      \
	X(vkGetDeviceProcAddr) X(vkCreateDebugUtilsMessengerEXT) X(vkDestroyDebugUtilsMessengerEXT)               \
	X(vkGetPhysicalDeviceCooperativeMatrixPropertiesNV)
#define TERN_VK_DEVICE_FUNCS(X)                                                                            \
	X(vkDestroyDevice) X(vkGetDeviceQueue) X(vkDeviceWaitIdle) X(vkAllocateMemory) X(vkFreeMemory)            \
	X(vkMapMemory) X(vkUnmapMemory) X(vkCreateBuffer) X(vkDestroyBuffer) X(vkGetBufferMemoryRequirements)      \
	X(vkBindBufferMemory) X(vkCreateShaderModule) X(vkDestroyShaderModule) X(vkCreateDescriptorSetLayout)      \
	X(vkDestroyDescriptorSetLayout) X(vkCreatePipelineLayout) X(vkDestroyPipelineLayout)                      \
	X(vkCreateComputePipelines) X(vkDestroyPipeline) X(vkCreatePipelineCache) X(vkDestroyPipelineCache)     \
	X(vkGetPipelineCacheData) X(vkCreateDescriptorPool) X(vkDestroyDescriptorPool)      \
	X(vkResetDescriptorPool) X(vkAllocateDescriptorSets) X(vkUpdateDescriptorSets) X(vkCreateCommandPool)      \
	X(vkDestroyCommandPool) X(vkAllocateCommandBuffers) X(vkResetCommandBuffer) X(vkBeginCommandBuffer)        \
	X(vkEndCommandBuffer) X(vkCmdBindPipeline) X(vkCmdBindDescriptorSets) X(vkCmdPushConstants)               \
	X(vkCmdDispatch) X(vkCmdPipelineBarrier) X(vkCmdCopyBuffer) X(vkCmdFillBuffer) X(vkQueueSubmit)            \
	X(vkCreateFence) X(vkDestroyFence) X(vkWaitForFences) X(vkResetFences) X(vkCreateQueryPool)                \
	X(vkDestroyQueryPool) X(vkCmdResetQueryPool) X(vkCmdWriteTimestamp) X(vkGetQueryPoolResults)             \
	X(vkCreateSemaphore) X(vkDestroySemaphore) X(vkWaitSemaphores) X(vkGetSemaphoreCounterValue)        \
	X(vkGetPipelineExecutablePropertiesKHR) X(vkGetPipelineExecutableStatisticsKHR)
/* clang-format on */

#define TERN_VK_DECL(name) extern PFN_##name tvk_##name;
TERN_VK_FUNCS(TERN_VK_DECL)
TERN_VK_INSTANCE_FUNCS(TERN_VK_DECL)
TERN_VK_DEVICE_FUNCS(TERN_VK_DECL)
#undef TERN_VK_DECL

/* Opens libvulkan and loads the global functions (once per process). */
enum tern_status tern_vk_load(void);
void tern_vk_load_instance(VkInstance inst);
void tern_vk_load_device(VkDevice dev);

#define TERN_VK_NBIND 10
#define TERN_VK_PUSH 128
#define TERN_VK_BLOCK (256u << 20) /* default memory block size for sub-allocation */

struct tern_vk_block; /* a VkDeviceMemory with a free list */

struct tern_buffer {
	VkBuffer buffer;
	struct tern_vk_block *block;
	VkDeviceSize offset; /* within the block's memory */
	VkDeviceSize size;   /* the size the user asked for */
	VkDeviceSize alloc;  /* the size taken from the block */
	bool own_block;      /* a dedicated allocation for a buffer larger than a block */
	bool host;           /* host_alloc: its own host-visible memory (host_mem), mapped at map */
	VkDeviceMemory host_mem;
	void *map;
};

/* Compute command buffers in flight: recording goes round this ring, each submission signals
 * the compute timeline, and a command buffer (with its descriptor pool) is reused once the
 * value it signalled is reached. Transfer command buffers (one copy_async each) likewise. */
#define TERN_VK_FRAMES 8
#define TERN_VK_TOUCHED 64 /* byte ranges tracked between barriers (more: a barrier) */
/* Dispatches after which a command buffer is submitted while recording goes on, so the device
 * starts on them while the host records the rest (a decode step is one long recording that ends
 * in a download); TERN_VK_SUBMIT_EVERY overrides, 0 turns it off. */
#define TERN_VK_SUBMIT_EVERY 128
#define TERN_VK_XCMDS 32

struct tern_vk_frame {
	VkCommandBuffer cmd;
	VkDescriptorPool pool;
	uint64_t value; /* compute timeline value its last submission signals; 0: never submitted */
	uint32_t nq;    /* profiling: timestamps its last submission wrote, not yet read */
};

struct tern_vk_xcmd {
	VkCommandBuffer cmd;
	uint64_t value; /* transfer timeline value (ticket) its last submission signals */
};

struct tern_vk_pipeline {
	const struct tern_spirv *spv;
	VkPipeline pipeline; /* created on first use */
	uint32_t writes;     /* bit i: the shader may write binding i (read from its SPIR-V) */
	double ns;           /* profiling: accumulated GPU time */
	uint64_t calls;
};

struct tern_vk {
	struct tern_backend base;
	VkInstance instance;
	VkDebugUtilsMessengerEXT messenger;
	VkPhysicalDevice phys;
	VkPhysicalDeviceProperties props;
	VkPhysicalDeviceMemoryProperties memprops;
	VkDevice device;
	uint32_t compute_family, transfer_family;
	VkQueue queue;
	VkQueue transfer_queue; /* VK_NULL_HANDLE when the device has no separate transfer family */
	uint32_t mem_type;      /* for tensors */
	bool mem_mappable;      /* the tensor memory type is host visible + coherent */
	uint32_t staging_type;
	VkDeviceSize max_alloc, max_range, align, block_size;

	struct tern_vk_block **blocks;
	int nblocks;

	/* staging for upload/download when tensor memory is not mappable */
	VkBuffer staging;
	VkDeviceMemory staging_mem;
	void *staging_map;
	VkDeviceSize staging_size;

	struct tern_buffer *dummy;  /* bound to unused bindings; also the sumsq partials */
	struct tern_buffer *consts; /* the 256-entry dynamic map (f32) */

	VkDescriptorSetLayout dsl;
	VkPipelineLayout layout;
	VkDescriptorPool pool; /* the current frame's */
	uint32_t pool_used, pool_max;
	VkCommandPool cmd_pool;
	VkCommandBuffer cmd; /* the current frame's */
	VkFence fence;       /* submissions without timeline semaphores */
	bool recording;
	uint32_t ndispatch;    /* dispatches recorded in cmd */
	uint32_t submit_every; /* with timeline semaphores: submit (no wait) after this many (0: no) */
	struct tern_vk_frame frames[TERN_VK_FRAMES];
	int frame; /* the current frame */
	/* Barriers (vk_dispatch.c): a dispatch waits for the commands before it only when it reads
	 * what one of them wrote or writes what one of them read or wrote since the last barrier
	 * (bindings' byte ranges, the writes from each shader's SPIR-V); a transfer, and the first
	 * dispatch after it, always wait. all_barriers (TERN_VK_BARRIERS=all; and while
	 * profiling): one before every command. */
	bool all_barriers;
	bool touched_all; /* a transfer since the last barrier: the next dispatch waits */
	uint32_t ntouched;
	struct tern_vk_touch {
		VkBuffer buf;
		VkDeviceSize off, end;
		bool write;
	} touched[TERN_VK_TOUCHED];

	/* streaming (vk_stream.c). With timeline semaphores (timeline): every compute submission
	 * signals comp_sem = ++comp_value and waits for xfer_sem >= wait_xfer; every copy_async is
	 * one submission on xfer_queue (the transfer queue, else the compute queue) that waits for
	 * comp_sem >= its `after` mark and signals xfer_sem = ++xfer_value (its ticket). Without
	 * them, copies are synchronous and marks/tickets plain counters. */
	bool timeline;
	bool budget_ext; /* VK_EXT_memory_budget enabled */
	VkSemaphore comp_sem, xfer_sem;
	uint64_t comp_value, xfer_value, wait_xfer;
	uint64_t sync_marks; /* marks handed out without timeline semaphores */
	VkQueue xfer_queue;
	VkCommandPool xfer_pool;
	struct tern_vk_xcmd xcmds[TERN_VK_XCMDS];
	int xnext;
	uint32_t families[2]; /* queue families buffers are shared by (CONCURRENT when 2) */
	uint32_t nfamilies;
	uint32_t host_type;   /* memory type of host_alloc buffers */
	uint64_t sub_bytes;   /* bytes of live buffers sub-allocated from blocks */
	uint64_t own_bytes;   /* bytes of live buffers with a block of their own */
	uint64_t block_bytes; /* bytes of the shared blocks */

	/* profiling (TERN_PROFILE=1, or tern_backend_profile): each dispatch, and each transfer
	 * command recorded into the compute command buffer, between a pair of timestamp queries,
	 * summed per pipeline and per profile kind when a submission has finished (frame f's
	 * queries at f max_queries .. + max_queries, read when the frame is reused or flushed, so
	 * submissions need not wait while profiling) */
	VkQueryPool queries; /* created when profiling first starts */
	bool profile;        /* commands are timed */
	bool profile_env;    /* TERN_PROFILE=1: timed for the backend's life (per-pipeline log at exit) */
	bool timestamps;     /* the device has compute timestamps (timestampComputeAndGraphics) */
	struct tern_vk_pipeline **qpipe; /* the pipeline of each query pair (NULL: a transfer) */
	uint8_t *qkind;                  /* the profile kind of each query pair */
	uint8_t *qop;                    /* its enum tern_op + 1 (0: a copy outside any op) */
	uint32_t nqueries, max_queries;  /* in the frame being recorded; per frame */
	uint64_t prof_prev;              /* the last end stamp read (intervals kept disjoint) */
	float ts_period;
	enum tern_prof_kind prof_kind; /* of what is recorded now: the open op's, else copies */
	int prof_op;                   /* the open op's enum tern_op, -1 outside ops */
	struct tern_profile prof;      /* totals per kind since the last reset */

	struct tern_vk_pipeline pipes[TERN_PIPE_COUNT]; /* indexed by enum tern_vk_pipe */
	/* the on-disk pipeline cache (vk_pcache.h): loaded at creation, saved at exit when this run
	 * created pipelines; pipe_s: seconds spent in vkCreateComputePipelines */
	VkPipelineCache pcache;
	struct tern_vk_pcache_id pcache_id;
	int pipes_created;
	double pipe_s;
	size_t pcache_n;     /* bytes loaded from the file, and their CRC-32C: an unchanged cache */
	uint32_t pcache_crc; /* is not written again */

	uint64_t validation_messages;
	bool failed; /* a device error happened: every later call fails */

	struct tern_buffer *ce_scratch; /* ce_loss: one chunk of logits + terms (vk_loss.c), lazily */

	/* half-precision products (vk_mm.c, vk_attention.c) */
	bool fp16;                   /* shaderFloat16 enabled: the register-blocked f16 variants run */
	bool coopmat;                /* VK_NV_cooperative_matrix (f16 16x16x16, subgroups of 32, Vulkan memory
			 * model) enabled and its variants compiled: the tensor-core variants run */
	bool pstats;                 /* TERN_VK_PIPELINE_STATS=1 and the extension for it: each
				      * pipeline's statistics logged when created (vk_dispatch.c) */
	bool vote;                   /* subgroup vote in compute shaders: attention_simple.comp and
				      * attention_rb.comp need it (subgroupAny), attention.comp not */
	uint32_t sm_count;           /* multiprocessors (VK_NV_shader_sm_builtins), else a guess */
	struct tern_buffer *aux;     /* 64 u32 words: the max|x| bits of the scale passes */
	struct tern_buffer *mm_part; /* split-K partials (vk_mm.c), grown on first need */
	struct tern_buffer *lr_cnt;  /* gemm_lr TKP's arrival counters, zero between dispatches */
	struct tern_buffer *mm_x16;  /* the f16 input of a half-precision matmul (vk_mm.c) */
	struct tern_buffer *mm_rmax; /* its rows' max|x| bits (castx.comp), one u32 a row */
	struct tern_buffer *mm_w16[2]; /* decode-first products: W rows decoded to f16, two slots */
	int mm_w16_next;               /* the slot the next decode takes */
	struct tern_buffer *attn_scr;  /* attention backward: (lse, D) per row and the dO scale */
	struct tern_buffer *attn_h;    /* attention: f16 copies of q, k, v, s dO */
	int attn_frag;                 /* the -DFRAG attention passes: 0 not probed yet, 1 yes, -1 no */
};

static inline struct tern_vk *tern_vk_of(struct tern_backend *be) { return (struct tern_vk *)be; }

/* How many units of unit_bytes one binding holds: maxStorageBufferRange less the slack that
 * tern_vk_place may add in front of a view (0 when not even one fits). */
static inline int64_t tern_vk_fit(const struct tern_vk *vk, int64_t unit_bytes)
{
	int64_t room = (int64_t)vk->max_range - (int64_t)vk->align - 16;
	int64_t n = room / (unit_bytes > 0 ? unit_bytes : 1);
	return n > 0 ? n : 0;
}

/* Workgroups for n items at `per` items per group, clamped to [1, cap]: the shaders that take
 * it loop over the rest (grid-stride). */
static inline uint32_t tern_vk_grid(int64_t n, int64_t per, int64_t cap)
{
	int64_t g = (n + per - 1) / per;
	return (uint32_t)(g > cap ? cap : g < 1 ? 1 : g);
}

enum tern_status tern_vk_check(VkResult r, const char *what);

/* memory (vk_memory.c) */
enum tern_status tern_vk_memory_init(struct tern_vk *vk);
void tern_vk_memory_free(struct tern_vk *vk);
enum tern_status tern_vk_buffer_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out);
void tern_vk_buffer_free(struct tern_backend *be, struct tern_buffer *buf);
enum tern_status tern_vk_upload(struct tern_backend *be, struct tern_view dst, const void *src);
enum tern_status tern_vk_download(struct tern_backend *be, void *dst, struct tern_view src);
enum tern_status tern_vk_zero(struct tern_backend *be, struct tern_view dst);

/* command recording and dispatch (vk_dispatch.c) */
enum tern_status tern_vk_dispatch_init(struct tern_vk *vk);
void tern_vk_dispatch_free(struct tern_vk *vk);
enum tern_status tern_vk_begin(struct tern_vk *vk);
enum tern_status tern_vk_flush(struct tern_vk *vk); /* submit what is recorded, wait for all */
/* Submits what is recorded without waiting (with timeline semaphores; else as flush). */
enum tern_status tern_vk_submit(struct tern_vk *vk);
/* Host waits until timeline semaphore sem reaches value. */
enum tern_status tern_vk_wait_value(struct tern_vk *vk, VkSemaphore sem, uint64_t value);
enum tern_status tern_vk_synchronize(struct tern_backend *be);

/* Moves a view's start down to the device's storage-buffer offset alignment (growing its size
 * to match) and returns how many bytes the original start lies past the new one: shaders get
 * that offset in push constants. */
uint32_t tern_vk_place(struct tern_vk *vk, struct tern_view *v);

/* The variant name of a pipeline ("matmul_bwd_nf4_dq"), for messages and the profile. */
const char *tern_vk_pipe_name(enum tern_vk_pipe pipe);

/* Records one dispatch of pipeline `pipe` (created on first use) with up to 8 bindings (placed
 * views; a view with no buffer binds a dummy) and the push-constant block; checks binding
 * alignment and range, push size and group-count limits. */
enum tern_status tern_vk_dispatch(struct tern_vk *vk, enum tern_vk_pipe pipe, const struct tern_view *binds,
				  int nbind, const void *push, size_t push_size, uint32_t gx, uint32_t gy,
				  uint32_t gz);

/* A transfer command (copy, fill) recorded into the compute command buffer goes between these:
 * begin starts recording (after the barrier that orders it after earlier work) and, when
 * profiling, writes the timestamp before; end writes the one after and counts the command. Its
 * time counts as the open op's kind, or as copies outside ops. */
enum tern_status tern_vk_transfer_begin(struct tern_vk *vk);
void tern_vk_transfer_end(struct tern_vk *vk);

/* the profile entries of the vtable (backend.h) */
enum tern_status tern_vk_profile_set(struct tern_backend *be, bool on);
void tern_vk_profile_op(struct tern_backend *be, enum tern_prof_kind kind, double flops, bool begin);
enum tern_status tern_vk_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset);

void tern_vk_destroy(struct tern_backend *be);

/* streaming (vk_stream.c; host_alloc in vk_memory.c): contracts in backend.h */
enum tern_status tern_vk_stream_init(struct tern_vk *vk);
void tern_vk_stream_free(struct tern_vk *vk);
enum tern_status tern_vk_host_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out,
				    void **ptr);
enum tern_status tern_vk_mark(struct tern_backend *be, uint64_t *mark);
enum tern_status tern_vk_copy_async(struct tern_backend *be, struct tern_view dst, struct tern_view src,
				    uint64_t after, uint64_t *ticket);
enum tern_status tern_vk_wait_ticket(struct tern_backend *be, uint64_t ticket);
enum tern_status tern_vk_ticket_wait_host(struct tern_backend *be, uint64_t ticket);
enum tern_status tern_vk_memory_info(struct tern_backend *be, uint64_t *budget, uint64_t *usage);

/* ops (vk_ops.c) */
extern const struct tern_backend_vtable tern_vk_vtable;
/* Whether matmul, gemm and attention run their "simple" shaders (no shared memory or barriers,
 * for CPU-type devices) instead of the tiled ones: the device type, or TERN_VK_VARIANT. */
enum tern_status tern_vk_simple(struct tern_vk *vk, bool *simple);
/* The kernel generation environment variable `var` asks for: 1 for "v1" (the kernels before issue
 * 9's second pass, kept for side-by-side timing), 2 for "v2" or unset; anything else is refused in
 * one line. TERN_VK_LORA (gemm_lr), TERN_VK_LOSS (ce_loss), TERN_VK_SPLITK (mm split-K). */
enum tern_status tern_vk_gen(const char *var, int *gen);

/* An initializer of a table of pipelines indexed by weight dtype: P##_F32, P##_F16, ... (every
 * matmul family has one variant per format, named by the dtype's suffix). */
#define TERN_VK_PIPES_BY_DTYPE(P)                                                                         \
	{                                                                                                 \
		[TERN_F32] = P##_F32, [TERN_F16] = P##_F16, [TERN_BF16] = P##_BF16, [TERN_NF4] = P##_NF4, \
		[TERN_NF4_DQ] = P##_NF4_DQ, [TERN_TERNARY] = P##_TERNARY                                  \
	}

/* Bytes of one row of W as tern_vk_weight_rows binds it (NF4: codes plus the odd nibble's
 * slack). vk_ops.c. */
int64_t tern_vk_weight_row_bytes(const struct tern_weight *w);
/* The binding of W rows [r0, r0 + rows) and the element position of row r0 inside it (elements
 * are nibbles for NF4, words for ternary). vk_ops.c. */
struct tern_view tern_vk_weight_rows(struct tern_vk *vk, const struct tern_weight *w, int64_t r0,
				     int64_t rows, uint32_t *pos);
/* W's block scales (absmax, nested) and the dynamic map as a dispatch binds them (bindings 3..5
 * of shaders/common/weights.glsl), with the word offsets its push constants take. vk_ops.c. */
struct tern_vk_wscales {
	struct tern_view absmax, nested, dmap;
	uint32_t absmax_off, nested_off, dmap_off;
};
struct tern_vk_wscales tern_vk_weight_scales(struct tern_vk *vk, const struct tern_weight *w);

/* vk_mm.c: matmul / matmul_bwd at precision F16 (shaders/mm.comp), with the LoRA term when
 * lora is not NULL (backend.h matmul_lora, matmul_lora_bwd: out gets scale · u[T,R] · B[O,R]ᵀ
 * forward, or du[T,R] · A[R,I] backward with du in lora->u, A in lora->B and scale 1; R more steps
 * of the product's reduction, shaders/mm.comp -DLORA), after in's f16 copy, scaled row by row
 * (shaders/castx.comp; the rows' max |in| bits in vk->mm_rmax). Variants: "coopmat" (tensor
 * cores) and "regs"; TERN_VK_MM16 forces one (tests, benchmarks). */
enum tern_status tern_vk_mm16(struct tern_vk *vk, bool bwd, struct tern_view out, struct tern_view in,
			      const struct tern_weight *w, int64_t T, bool accumulate,
			      const struct tern_lora_term *lora);
/* matmul_multi at F16 (backend.h): x's scale and f16 copy made once for the n products, each with
 * its LoRA term where lt (NULL: none) has one (R > 0). */
enum tern_status tern_vk_mm16_multi(struct tern_vk *vk, const struct tern_view *y, struct tern_view x,
				    const struct tern_weight *const *w, const struct tern_lora_term *lt,
				    int n, int64_t T);
enum tern_status tern_vk_absmax(struct tern_vk *vk, struct tern_view x, int64_t n, uint32_t slot);
/* *buf, one of the backend's scratch buffers (mm_part, mm_x16, attn_h, ce_scratch, ...), holding
 * at least `bytes`: reallocated (contents lost) when smaller; one op at a time uses each. */
enum tern_status tern_vk_scratch(struct tern_vk *vk, struct tern_buffer **buf, size_t bytes);
bool tern_vk_has_variant(struct tern_backend *be, const char *variant);
/* Whether every pipeline of a list was compiled into this build. */
bool tern_vk_built(const enum tern_vk_pipe *pipes, int n);

/* vk_loss.c: the fused lm_head + cross-entropy */
enum tern_status tern_vk_ce_loss(struct tern_backend *be, struct tern_view loss, struct tern_view dx,
				 struct tern_view dW, struct tern_view x, const struct tern_weight *W,
				 struct tern_view labels, int64_t T, float inv_n, enum tern_dtype prec);

/* vk_layers.c: rmsnorm, rope, swiglu, embed (contracts in backend.h) */
enum tern_status tern_vk_rmsnorm(struct tern_backend *be, struct tern_view y, struct tern_view rstd,
				 struct tern_view x, struct tern_view w, int64_t T, int64_t D, float eps);
enum tern_status tern_vk_rmsnorm_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
				     struct tern_view x, struct tern_view w, struct tern_view rstd, int64_t T,
				     int64_t D, bool accumulate);
enum tern_status tern_vk_rope(struct tern_backend *be, struct tern_view x, struct tern_view pos,
			      struct tern_view inv_freq, int64_t T, int64_t H, int64_t Dh, bool inverse);
enum tern_status tern_vk_swiglu(struct tern_backend *be, struct tern_view h, struct tern_view g,
				struct tern_view u, int64_t n, enum tern_act act);
enum tern_status tern_vk_swiglu_bwd(struct tern_backend *be, struct tern_view dg, struct tern_view du,
				    struct tern_view dh, struct tern_view g, struct tern_view u, int64_t n,
				    enum tern_act act);
enum tern_status tern_vk_embed(struct tern_backend *be, struct tern_view y, struct tern_view ids,
			       const struct tern_weight *E, int64_t T);
enum tern_status tern_vk_embed_bwd(struct tern_backend *be, struct tern_view dE, struct tern_view dy,
				   struct tern_view ids, int64_t T, int64_t V, int64_t D);

/* vk_moe.c: the mixture-of-experts row ops (contracts in backend.h) */
enum tern_status tern_vk_gather_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
				     struct tern_view idx, int64_t n, int64_t Tx, int64_t D);
enum tern_status tern_vk_scatter_add_rows(struct tern_backend *be, struct tern_view y, struct tern_view x,
					  struct tern_view idx, struct tern_view w, int64_t n, int64_t Ty,
					  int64_t D);
/* vk_bitnet.c: BitNet's per-token 8-bit activation fake-quantization */
/* argmax (backend.h), vk_sample.c */
enum tern_status tern_vk_argmax(struct tern_backend *be, struct tern_view out, struct tern_view x,
				int64_t rows, int64_t n);
enum tern_status tern_vk_act_quant8(struct tern_backend *be, struct tern_view y, struct tern_view x,
				    int64_t T, int64_t I);
enum tern_status tern_vk_rowdot(struct tern_backend *be, struct tern_view out, struct tern_view a,
				struct tern_view b, int64_t n, int64_t D);
enum tern_status tern_vk_route_topk(struct tern_backend *be, struct tern_view sel, struct tern_view w,
				    struct tern_view prob, struct tern_view counts, struct tern_view logits,
				    int64_t T, int64_t E, int64_t k, bool norm);
enum tern_status tern_vk_matmul_grouped(struct tern_backend *be, struct tern_view y, struct tern_view in,
					const struct tern_experts *x, struct tern_view off, int64_t T,
					enum tern_dtype prec);
enum tern_status tern_vk_matmul_grouped_bwd(struct tern_backend *be, struct tern_view dx, struct tern_view dy,
					    const struct tern_experts *x, struct tern_view off, int64_t T,
					    bool accumulate, enum tern_dtype prec);
enum tern_status tern_vk_route_topk_bwd(struct tern_backend *be, struct tern_view dlogits,
					struct tern_view dw, struct tern_view prob, struct tern_view sel,
					int64_t T, int64_t E, int64_t k, bool norm);

/* vk_attention.c: causal GQA attention forward/backward (contracts in backend.h) */
enum tern_status tern_vk_attention(struct tern_backend *be, struct tern_view o, struct tern_view lse,
				   struct tern_view q, struct tern_view k, struct tern_view v,
				   struct tern_view seg, const struct tern_attn_args *a);
enum tern_status tern_vk_attention_kv(struct tern_backend *be, struct tern_view o, struct tern_view q,
				      struct tern_view k, struct tern_view v,
				      const struct tern_attn_kv_args *a);
enum tern_status tern_vk_attention_bwd(struct tern_backend *be, struct tern_view dq, struct tern_view dk,
				       struct tern_view dv, struct tern_view dout, struct tern_view q,
				       struct tern_view k, struct tern_view v, struct tern_view o,
				       struct tern_view lse, struct tern_view seg,
				       const struct tern_attn_args *a);

#endif
