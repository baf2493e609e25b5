/* Pipelines, descriptor sets, command recording, barriers, submission and timestamps.
 *
 * Every pipeline shares one layout (8 storage buffers, 128 bytes of push constants), so one
 * descriptor pool layout and one helper serve all ops. Work is recorded into one command buffer
 * and submitted when the host needs a result (download, upload, synchronize), a streaming mark
 * or wait asks for it, the descriptor pool is full, or (with timeline semaphores) every
 * submit_every dispatches, so the device starts while the host records the rest. With timeline semaphores submissions do
 * not wait: command buffers and descriptor pools go round a ring of TERN_VK_FRAMES frames, each
 * reused once the compute timeline value it signalled is reached. */
#include "backend/vulkan/vk.h"

#include "backend/vulkan/spirv.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_SETS 2048u
#define MAX_QUERIES 4096u

/* The timestamp query pool and what each pair of queries times, once. */
static enum tern_status query_pool(struct tern_vk *vk)
{
	if (vk->queries)
		return TERN_OK;
	uint32_t n = MAX_QUERIES * TERN_VK_FRAMES; /* a range for each frame of the ring */
	VkQueryPoolCreateInfo qci = {
		.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
		.queryType = VK_QUERY_TYPE_TIMESTAMP,
		.queryCount = n,
	};
	enum tern_status st =
		tern_vk_check(tvk_vkCreateQueryPool(vk->device, &qci, NULL, &vk->queries), "query pool");
	if (st)
		return st;
	vk->max_queries = MAX_QUERIES;
	vk->qpipe = tern_calloc(n / 2, sizeof *vk->qpipe);
	vk->qkind = tern_calloc(n / 2, sizeof *vk->qkind);
	vk->qop = tern_calloc(n / 2, sizeof *vk->qop);
	return vk->qpipe && vk->qkind && vk->qop ? TERN_OK : TERN_E_NOMEM;
}

enum tern_status tern_vk_dispatch_init(struct tern_vk *vk)
{
	enum tern_status st;
	if (vk->props.limits.maxPerStageDescriptorStorageBuffers < TERN_VK_NBIND)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: maxPerStageDescriptorStorageBuffers %u < %u",
				 vk->props.limits.maxPerStageDescriptorStorageBuffers, TERN_VK_NBIND);
	VkDescriptorSetLayoutBinding b[TERN_VK_NBIND];
	for (uint32_t i = 0; i < TERN_VK_NBIND; i++)
		b[i] = (VkDescriptorSetLayoutBinding){i, VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, 1,
						      VK_SHADER_STAGE_COMPUTE_BIT, NULL};
	VkDescriptorSetLayoutCreateInfo dci = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
		.bindingCount = TERN_VK_NBIND,
		.pBindings = b,
	};
	if ((st = tern_vk_check(tvk_vkCreateDescriptorSetLayout(vk->device, &dci, NULL, &vk->dsl),
				"descriptor layout")))
		return st;
	if (vk->props.limits.maxPushConstantsSize < TERN_VK_PUSH)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: maxPushConstantsSize %u < %u",
				 vk->props.limits.maxPushConstantsSize, TERN_VK_PUSH);
	VkPushConstantRange pr = {VK_SHADER_STAGE_COMPUTE_BIT, 0, TERN_VK_PUSH};
	VkPipelineLayoutCreateInfo lci = {
		.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
		.setLayoutCount = 1,
		.pSetLayouts = &vk->dsl,
		.pushConstantRangeCount = 1,
		.pPushConstantRanges = &pr,
	};
	if ((st = tern_vk_check(tvk_vkCreatePipelineLayout(vk->device, &lci, NULL, &vk->layout),
				"pipeline layout")))
		return st;
	VkDescriptorPoolSize ps = {VK_DESCRIPTOR_TYPE_STORAGE_BUFFER, POOL_SETS * TERN_VK_NBIND};
	VkDescriptorPoolCreateInfo pci = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
		.maxSets = POOL_SETS,
		.poolSizeCount = 1,
		.pPoolSizes = &ps,
	};
	vk->pool_max = POOL_SETS;
	VkCommandPoolCreateInfo cpi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
		.queueFamilyIndex = vk->compute_family,
	};
	if ((st = tern_vk_check(tvk_vkCreateCommandPool(vk->device, &cpi, NULL, &vk->cmd_pool),
				"command pool")))
		return st;
	/* one frame without timeline semaphores (every submission waits), a ring with them */
	int nframes = vk->timeline ? TERN_VK_FRAMES : 1;
	for (int i = 0; i < nframes; i++) {
		struct tern_vk_frame *f = &vk->frames[i];
		if ((st = tern_vk_check(tvk_vkCreateDescriptorPool(vk->device, &pci, NULL, &f->pool),
					"descriptor pool")))
			return st;
		VkCommandBufferAllocateInfo cai = {
			.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
			.commandPool = vk->cmd_pool,
			.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
			.commandBufferCount = 1,
		};
		if ((st = tern_vk_check(tvk_vkAllocateCommandBuffers(vk->device, &cai, &f->cmd),
					"command buffer")))
			return st;
	}
	vk->frame = 0;
	vk->cmd = vk->frames[0].cmd;
	vk->pool = vk->frames[0].pool;
	VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
	if ((st = tern_vk_check(tvk_vkCreateFence(vk->device, &fci, NULL, &vk->fence), "fence")))
		return st;
	if (vk->timeline) {
		VkSemaphoreTypeCreateInfo tci = {
			.sType = VK_STRUCTURE_TYPE_SEMAPHORE_TYPE_CREATE_INFO,
			.semaphoreType = VK_SEMAPHORE_TYPE_TIMELINE,
			.initialValue = 0,
		};
		VkSemaphoreCreateInfo sci = {.sType = VK_STRUCTURE_TYPE_SEMAPHORE_CREATE_INFO, .pNext = &tci};
		if ((st = tern_vk_check(tvk_vkCreateSemaphore(vk->device, &sci, NULL, &vk->comp_sem),
					"timeline semaphore")) ||
		    (st = tern_vk_check(tvk_vkCreateSemaphore(vk->device, &sci, NULL, &vk->xfer_sem),
					"timeline semaphore")))
			return st;
	}
	if (vk->profile && (st = query_pool(vk)))
		return st;
	/* the dummy buffer backs unused bindings and holds sumsq partials (1024 floats) */
	if ((st = tern_vk_buffer_alloc(&vk->base, 4096, &vk->dummy)))
		return st;
	if ((st = tern_vk_buffer_alloc(&vk->base, 64 * 4, &vk->aux)))
		return st;
	float map[256];
	tern_dynamic_map(map);
	if ((st = tern_vk_buffer_alloc(&vk->base, sizeof map, &vk->consts)))
		return st;
	return tern_vk_upload(&vk->base, (struct tern_view){vk->consts, 0, sizeof map}, map);
}

void tern_vk_dispatch_free(struct tern_vk *vk)
{
	if (vk->recording)
		tern_vk_flush(vk);
	tern_vk_buffer_free(&vk->base, vk->dummy);
	tern_vk_buffer_free(&vk->base, vk->consts);
	vk->dummy = vk->consts = NULL;
	for (int i = 0; i < TERN_PIPE_COUNT; i++)
		if (vk->pipes[i].pipeline)
			tvk_vkDestroyPipeline(vk->device, vk->pipes[i].pipeline, NULL);
	if (vk->queries)
		tvk_vkDestroyQueryPool(vk->device, vk->queries, NULL);
	free(vk->qpipe);
	free(vk->qkind);
	free(vk->qop);
	if (vk->fence)
		tvk_vkDestroyFence(vk->device, vk->fence, NULL);
	if (vk->cmd_pool)
		tvk_vkDestroyCommandPool(vk->device, vk->cmd_pool, NULL);
	for (int i = 0; i < TERN_VK_FRAMES; i++)
		if (vk->frames[i].pool)
			tvk_vkDestroyDescriptorPool(vk->device, vk->frames[i].pool, NULL);
	if (vk->comp_sem)
		tvk_vkDestroySemaphore(vk->device, vk->comp_sem, NULL);
	if (vk->xfer_sem)
		tvk_vkDestroySemaphore(vk->device, vk->xfer_sem, NULL);
	if (vk->layout)
		tvk_vkDestroyPipelineLayout(vk->device, vk->layout, NULL);
	if (vk->dsl)
		tvk_vkDestroyDescriptorSetLayout(vk->device, vk->dsl, NULL);
}

/* One global barrier: everything recorded before it is visible to what comes after. */
static void barrier(struct tern_vk *vk)
{
	VkMemoryBarrier mb = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
		.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
				 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
	};
	VkPipelineStageFlags stages = VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
	tvk_vkCmdPipelineBarrier(vk->cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
	vk->base.counts.barriers++;
	vk->ntouched = 0;
	vk->touched_all = false;
}

static enum tern_status begin_recording(struct tern_vk *vk);
static void read_timestamps(struct tern_vk *vk, uint32_t frame);

/* Before a transfer or copy: starts recording, or records a barrier after everything so far; and
 * makes the next dispatch wait for this command (touched_all). */
enum tern_status tern_vk_begin(struct tern_vk *vk)
{
	enum tern_status st = TERN_OK;
	if (!vk->recording)
		st = begin_recording(vk);
	else if (vk->ndispatch)
		barrier(vk);
	vk->touched_all = true;
	return st;
}

/* A new command buffer of the frame ring, ordered after the submissions before it. */
static enum tern_status begin_recording(struct tern_vk *vk)
{
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	/* the next frame of the ring, once the GPU is done with what it last held (without
	 * timeline semaphores every submission was waited for) */
	enum tern_status st;
	if (vk->timeline) {
		vk->frame = (vk->frame + 1) % TERN_VK_FRAMES;
		if ((st = tern_vk_wait_value(vk, vk->comp_sem, vk->frames[vk->frame].value)))
			return st;
	}
	struct tern_vk_frame *f = &vk->frames[vk->frame];
	read_timestamps(vk, vk->frame); /* what its last submission timed, before the reset */
	vk->cmd = f->cmd;
	vk->pool = f->pool;
	tvk_vkResetCommandBuffer(vk->cmd, 0);
	tvk_vkResetDescriptorPool(vk->device, vk->pool, 0);
	vk->pool_used = 0;
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	if ((st = tern_vk_check(tvk_vkBeginCommandBuffer(vk->cmd, &bi), "vkBeginCommandBuffer")))
		return st;
	if (vk->profile)
		tvk_vkCmdResetQueryPool(vk->cmd, vk->queries, vk->frame * vk->max_queries, vk->max_queries);
	if (vk->timeline && vk->comp_value) {
		/* earlier submissions may still run: order this one after them (a pipeline barrier's
		 * first scope reaches back over earlier submissions to the same queue) */
		VkMemoryBarrier mb = {
			.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
			.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
			.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
					 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
		};
		VkPipelineStageFlags stages =
			VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
		tvk_vkCmdPipelineBarrier(vk->cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
		vk->base.counts.barriers++;
	}
	vk->recording = true;
	vk->ntouched = 0;
	vk->touched_all = false;
	vk->ndispatch = 0;
	vk->nqueries = 0;
	return TERN_OK;
}

enum tern_status tern_vk_wait_value(struct tern_vk *vk, VkSemaphore sem, uint64_t value)
{
	if (value == 0)
		return TERN_OK;
	uint64_t now = 0; /* already reached: no wait (and none counted) */
	if (tvk_vkGetSemaphoreCounterValue(vk->device, sem, &now) == VK_SUCCESS && now >= value)
		return TERN_OK;
	VkSemaphoreWaitInfo wi = {
		.sType = VK_STRUCTURE_TYPE_SEMAPHORE_WAIT_INFO,
		.semaphoreCount = 1,
		.pSemaphores = &sem,
		.pValues = &value,
	};
	vk->base.counts.waits++;
	enum tern_status st =
		tern_vk_check(tvk_vkWaitSemaphores(vk->device, &wi, UINT64_MAX), "vkWaitSemaphores");
	if (st)
		vk->failed = true;
	return st;
}

/* Sums the timestamps of frame's last submission (finished: its timeline value was reached, or
 * its fence waited for) into the profile, once. Frames are read in submission order (the ring's),
 * so prof_prev is the end of the command before the first one read here. */
static void read_timestamps(struct tern_vk *vk, uint32_t frame)
{
	struct tern_vk_frame *f = &vk->frames[frame];
	uint32_t n = f->nq, q0 = frame * vk->max_queries;
	f->nq = 0;
	if (!n || !vk->queries)
		return;
	uint64_t *t = malloc(n * sizeof *t);
	if (!t)
		return;
	if (tvk_vkGetQueryPoolResults(vk->device, vk->queries, q0, n, n * sizeof *t, t, sizeof *t,
				      VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS) {
		/* While profiling a barrier separates every command from the one before (depends),
		 * so a command runs only once the previous one has ended; its top-of-pipe stamp may
		 * be written earlier, while that one still runs. Starting each interval at the
		 * previous end keeps the intervals disjoint: their sum never exceeds the time the
		 * device spent on them. */
		uint64_t prev = vk->prof_prev;
		for (uint32_t i = 0; i + 1 < n; i += 2) {
			uint64_t t0 = t[i] > prev ? t[i] : prev, t1 = t[i + 1];
			double ns = t1 > t0 ? (double)(t1 - t0) * vk->ts_period : 0.0;
			uint32_t k = (q0 + i) / 2;
			prev = t1 > prev ? t1 : prev;
			if (vk->qpipe[k])
				vk->qpipe[k]->ns += ns;
			vk->prof.ns[vk->qkind[k]] += ns;
			if (vk->qop[k])
				vk->prof.op_ns[vk->qop[k] - 1] += ns;
		}
		vk->prof_prev = prev;
	}
	free(t);
}

enum tern_status tern_vk_submit(struct tern_vk *vk)
{
	if (!vk->recording)
		return TERN_OK;
	vk->recording = false;
	vk->base.counts.submits++;
	enum tern_status st = tern_vk_check(tvk_vkEndCommandBuffer(vk->cmd), "vkEndCommandBuffer");
	if (st)
		goto fail;
	VkSubmitInfo si = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.commandBufferCount = 1,
		.pCommandBuffers = &vk->cmd,
	};
	if (!vk->timeline) {
		if ((st = tern_vk_check(tvk_vkQueueSubmit(vk->queue, 1, &si, vk->fence), "vkQueueSubmit")))
			goto fail;
		vk->base.counts.waits++;
		if ((st = tern_vk_check(tvk_vkWaitForFences(vk->device, 1, &vk->fence, VK_TRUE, UINT64_MAX),
					"vkWaitForFences")))
			goto fail;
		tvk_vkResetFences(vk->device, 1, &vk->fence);
	} else {
		/* signal the compute timeline; wait (on the device) for the copies asked for */
		uint64_t signal = vk->comp_value + 1, wait = vk->wait_xfer;
		VkPipelineStageFlags wait_stage =
			VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
		VkTimelineSemaphoreSubmitInfo ti = {
			.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
			.waitSemaphoreValueCount = wait ? 1 : 0,
			.pWaitSemaphoreValues = &wait,
			.signalSemaphoreValueCount = 1,
			.pSignalSemaphoreValues = &signal,
		};
		si.pNext = &ti;
		si.waitSemaphoreCount = wait ? 1 : 0;
		si.pWaitSemaphores = &vk->xfer_sem;
		si.pWaitDstStageMask = &wait_stage;
		si.signalSemaphoreCount = 1;
		si.pSignalSemaphores = &vk->comp_sem;
		if ((st = tern_vk_check(tvk_vkQueueSubmit(vk->queue, 1, &si, VK_NULL_HANDLE),
					"vkQueueSubmit")))
			goto fail;
		vk->comp_value = signal;
		vk->frames[vk->frame].value = signal;
	}
	vk->frames[vk->frame].nq = vk->nqueries;
	if (!vk->timeline) /* finished: its fence was waited for */
		read_timestamps(vk, vk->frame);
	return TERN_OK;
fail:
	vk->failed = true;
	return st;
}

enum tern_status tern_vk_flush(struct tern_vk *vk)
{
	enum tern_status st = tern_vk_submit(vk);
	if (st)
		return st;
	if (vk->timeline && ((st = tern_vk_wait_value(vk, vk->comp_sem, vk->comp_value)) ||
			     (st = tern_vk_wait_value(vk, vk->xfer_sem, vk->xfer_value))))
		return st;
	for (uint32_t i = 1; i <= TERN_VK_FRAMES; i++) /* oldest first: the last one is this frame */
		read_timestamps(vk, (vk->frame + i) % TERN_VK_FRAMES);
	if (vk->validation_messages)
		return tern_fail(TERN_E_VALIDATION, "vulkan: the validation layer reported %llu message(s)",
				 (unsigned long long)vk->validation_messages);
	return TERN_OK;
}

enum tern_status tern_vk_synchronize(struct tern_backend *be)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = tern_vk_flush(vk);
	if (!st && vk->validation_messages)
		st = tern_fail(TERN_E_VALIDATION, "vulkan: the validation layer reported %llu message(s)",
			       (unsigned long long)vk->validation_messages);
	return st;
}

const char *tern_vk_pipe_name(enum tern_vk_pipe pipe)
{
	return (unsigned)pipe < TERN_PIPE_COUNT ? tern_spirv_table[pipe].name : "?";
}

/* The bindings a shader may write (bit i: binding i): every storage buffer variable of set 0 not
 * declared readonly (glslang marks the variable NonWritable, or every member of its block).
 * Bindings that alias (a float and a vec4 view of one buffer) count as written if any view is.
 * A module this reader cannot follow counts as writing every binding. */
static uint32_t spirv_writes(const uint32_t *w, size_t nwords)
{
	enum {
		OP_TYPE_STRUCT = 30,
		OP_TYPE_POINTER = 32,
		OP_VARIABLE = 59,
		OP_DECORATE = 71,
		OP_MEMBER_DECORATE = 72,
		DEC_NON_WRITABLE = 24,
		DEC_BINDING = 33,
		SC_UNIFORM = 2, /* buffer blocks before SPIR-V 1.3 */
		SC_STORAGE_BUFFER = 12
	};
	uint32_t bound = nwords > 3 ? w[3] : 0, all = (1u << TERN_VK_NBIND) - 1u;
	if (nwords < 5 || bound == 0 || bound > (1u << 20))
		return all;
	/* per id: its binding + 1 (variables), NonWritable on it, its members' count and how many
	 * of them are NonWritable (structs), the pointee (pointer types) */
	uint32_t *bind = calloc(bound, sizeof *bind), *nw = calloc(bound, sizeof *nw),
		 *nmem = calloc(bound, sizeof *nmem), *nwmem = calloc(bound, sizeof *nwmem),
		 *pointee = calloc(bound, sizeof *pointee);
	uint32_t writes = all;
	if (!bind || !nw || !nmem || !nwmem || !pointee)
		goto out;
	/* first pass: decorations, types */
	for (size_t i = 5; i < nwords;) {
		uint32_t op = w[i] & 0xffffu, n = w[i] >> 16;
		if (n == 0 || i + n > nwords)
			goto out;
		const uint32_t *a = w + i + 1;
		if (op == OP_DECORATE && n >= 3 && a[0] < bound) {
			if (a[1] == DEC_BINDING && n >= 4)
				bind[a[0]] = a[2] + 1;
			else if (a[1] == DEC_NON_WRITABLE)
				nw[a[0]] = 1;
		} else if (op == OP_MEMBER_DECORATE && n >= 4 && a[0] < bound && a[2] == DEC_NON_WRITABLE) {
			nwmem[a[0]]++;
		} else if (op == OP_TYPE_STRUCT && n >= 2 && a[0] < bound) {
			nmem[a[0]] = n - 2;
		} else if (op == OP_TYPE_POINTER && n >= 4 && a[0] < bound) {
			pointee[a[0]] = a[2];
		}
		i += n;
	}
	/* second pass: the buffer variables */
	writes = 0;
	for (size_t i = 5; i < nwords;) {
		uint32_t op = w[i] & 0xffffu, n = w[i] >> 16;
		const uint32_t *a = w + i + 1;
		if (op == OP_VARIABLE && n >= 4 && a[0] < bound && a[1] < bound && bind[a[1]] &&
		    (a[2] == SC_STORAGE_BUFFER || a[2] == SC_UNIFORM)) {
			uint32_t b = bind[a[1]] - 1, blk = pointee[a[0]];
			bool ro = nw[a[1]] || (blk < bound && nmem[blk] > 0 && nwmem[blk] >= nmem[blk]);
			if (!ro)
				writes |= b < TERN_VK_NBIND ? 1u << b : all;
		}
		i += n;
	}
out:
	free(bind);
	free(nw);
	free(nmem);
	free(nwmem);
	free(pointee);
	return writes;
}

/* TERN_VK_PIPELINE_STATS=1: logs what the driver says of pipeline pl (named name), one line per
 * executable: "vulkan: pipeline name (executable): Register Count 128, Binary Size ..., ..." */
static void log_pipeline_stats(struct tern_vk *vk, VkPipeline pl, const char *name)
{
	VkPipelineInfoKHR pi = {.sType = VK_STRUCTURE_TYPE_PIPELINE_INFO_KHR, .pipeline = pl};
	VkPipelineExecutablePropertiesKHR ep[4];
	uint32_t ne = 4;
	for (uint32_t i = 0; i < ne; i++)
		ep[i] = (VkPipelineExecutablePropertiesKHR){
			.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_PROPERTIES_KHR};
	VkResult r = tvk_vkGetPipelineExecutablePropertiesKHR(vk->device, &pi, &ne, ep);
	for (uint32_t e = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && e < ne; e++) {
		VkPipelineExecutableInfoKHR ei = {.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_INFO_KHR,
						  .pipeline = pl,
						  .executableIndex = e};
		VkPipelineExecutableStatisticKHR st[32];
		uint32_t ns = 32;
		for (uint32_t i = 0; i < ns; i++)
			st[i] = (VkPipelineExecutableStatisticKHR){
				.sType = VK_STRUCTURE_TYPE_PIPELINE_EXECUTABLE_STATISTIC_KHR};
		VkResult rs = tvk_vkGetPipelineExecutableStatisticsKHR(vk->device, &ei, &ns, st);
		if (rs != VK_SUCCESS && rs != VK_INCOMPLETE)
			continue;
		char line[2048];
		size_t len = 0;
		for (uint32_t i = 0; i < ns && len < sizeof line; i++) {
			const char *sep = i ? ", " : "";
			int w = 0;
			switch (st[i].format) {
			case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_BOOL32_KHR:
				w = snprintf(line + len, sizeof line - len, "%s%s %s", sep, st[i].name,
					     st[i].value.b32 ? "yes" : "no");
				break;
			case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_INT64_KHR:
				w = snprintf(line + len, sizeof line - len, "%s%s %lld", sep, st[i].name,
					     (long long)st[i].value.i64);
				break;
			case VK_PIPELINE_EXECUTABLE_STATISTIC_FORMAT_UINT64_KHR:
				w = snprintf(line + len, sizeof line - len, "%s%s %llu", sep, st[i].name,
					     (unsigned long long)st[i].value.u64);
				break;
			default:
				w = snprintf(line + len, sizeof line - len, "%s%s %g", sep, st[i].name,
					     st[i].value.f64);
			}
			len += w > 0 ? (size_t)w : 0;
		}
		tern_log(TERN_LOG_INFO, "vulkan: pipeline %s (%s): %s", name, ep[e].name, len ? line : "-");
	}
}

/* vk->pipes[pipe], its VkPipeline created on first use. */
static enum tern_status get_pipeline(struct tern_vk *vk, enum tern_vk_pipe pipe,
				     struct tern_vk_pipeline **out)
{
	if ((unsigned)pipe >= TERN_PIPE_COUNT)
		return tern_fail(TERN_E_INVALID, "vulkan: pipeline %d does not exist", (int)pipe);
	struct tern_vk_pipeline *p = &vk->pipes[pipe];
	const char *name = p->spv->name;
	if (!p->spv->words) /* listed in shaders/variants.cmake, not compiled (TERN_SHADER_VARIANTS_OFF) */
		return tern_fail(TERN_E_UNSUPPORTED, "vulkan: shader %s is not in this build", name);
	*out = p;
	if (p->pipeline)
		return TERN_OK;
	VkShaderModuleCreateInfo mci = {
		.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
		.codeSize = p->spv->size,
		.pCode = p->spv->words,
	};
	VkShaderModule mod;
	enum tern_status st = tern_vk_check(tvk_vkCreateShaderModule(vk->device, &mci, NULL, &mod), name);
	if (st)
		return st;
	VkComputePipelineCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
		.flags = vk->pstats ? VK_PIPELINE_CREATE_CAPTURE_STATISTICS_BIT_KHR : 0,
		.stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
			  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
			  .module = mod,
			  .pName = "main"},
		.layout = vk->layout,
	};
	double t = tern_now();
	st = tern_vk_check(tvk_vkCreateComputePipelines(vk->device, vk->pcache, 1, &ci, NULL, &p->pipeline),
			   name);
	tvk_vkDestroyShaderModule(vk->device, mod, NULL);
	vk->pipe_s += tern_now() - t;
	if (st == TERN_OK && vk->pstats)
		log_pipeline_stats(vk, p->pipeline, name);
	vk->pipes_created += st == TERN_OK;
	p->writes = spirv_writes(p->spv->words, p->spv->size / 4);
	return st;
}

uint32_t tern_vk_place(struct tern_vk *vk, struct tern_view *v)
{
	size_t start = v->off / vk->align * vk->align;
	uint32_t delta = (uint32_t)(v->off - start);
	v->off = start;
	v->size += delta;
	return delta;
}

/* Profiling: no room for another pair of timestamps in this command buffer. */
static bool queries_full(const struct tern_vk *vk)
{
	return vk->profile && vk->nqueries + 2 > vk->max_queries;
}

/* Profiling: the stamp before a timed command, which read_timestamps sums into pipeline pl (NULL:
 * a transfer) and the open op's kind; stamp_end writes the one after it. */
static void stamp_begin(struct tern_vk *vk, struct tern_vk_pipeline *pl)
{
	if (!vk->profile)
		return;
	uint32_t q = vk->frame * vk->max_queries + vk->nqueries++;
	vk->qpipe[q / 2] = pl;
	vk->qkind[q / 2] = (uint8_t)vk->prof_kind;
	vk->qop[q / 2] = (uint8_t)(vk->prof_op + 1);
	tvk_vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, vk->queries, q);
}

static void stamp_end(struct tern_vk *vk)
{
	if (vk->profile)
		tvk_vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, vk->queries,
					vk->frame * vk->max_queries + vk->nqueries++);
}

/* Whether a dispatch of pl with these bindings (bi: their ranges) must wait for the commands
 * recorded since the last barrier: it reads a range one of them wrote, or writes a range one of
 * them read or wrote; always after a transfer, when the ranges outgrow the table, with
 * all_barriers and while profiling (the per-command times need commands one after another). */
static bool depends(const struct tern_vk *vk, const struct tern_vk_pipeline *pl,
		    const struct tern_view *binds, int nbind, const VkDescriptorBufferInfo *bi)
{
	if (vk->all_barriers || vk->profile || vk->touched_all ||
	    vk->ntouched + (uint32_t)nbind > TERN_VK_TOUCHED)
		return true;
	for (int i = 0; i < nbind; i++) {
		if (!binds[i].buf || binds[i].size == 0)
			continue;
		bool write = (pl->writes >> i) & 1u;
		VkDeviceSize off = bi[i].offset, end = off + bi[i].range;
		for (uint32_t k = 0; k < vk->ntouched; k++) {
			const struct tern_vk_touch *t = &vk->touched[k];
			if (t->buf == bi[i].buffer && off < t->end && t->off < end && (write || t->write))
				return true;
		}
	}
	return false;
}

/* Records what a dispatch of pl reads and writes for depends(). */
static void touch(struct tern_vk *vk, const struct tern_vk_pipeline *pl, const struct tern_view *binds,
		  int nbind, const VkDescriptorBufferInfo *bi)
{
	if (vk->all_barriers) /* fixed at create: nothing will ask (profiling does not: it may end) */
		return;
	for (int i = 0; i < nbind && vk->ntouched < TERN_VK_TOUCHED; i++)
		if (binds[i].buf && binds[i].size)
			vk->touched[vk->ntouched++] =
				(struct tern_vk_touch){bi[i].buffer, bi[i].offset, bi[i].offset + bi[i].range,
						       (pl->writes >> i) & 1u};
}

enum tern_status tern_vk_dispatch(struct tern_vk *vk, enum tern_vk_pipe pipe, const struct tern_view *binds,
				  int nbind, const void *push, size_t push_size, uint32_t gx, uint32_t gy,
				  uint32_t gz)
{
	const VkPhysicalDeviceLimits *lim = &vk->props.limits;
	const char *name = tern_vk_pipe_name(pipe); /* for messages */
	if (nbind > TERN_VK_NBIND)
		return tern_fail(TERN_E_INVALID, "vulkan: %s: %d bindings, the layout has %d", name, nbind,
				 TERN_VK_NBIND);
	if (push_size > TERN_VK_PUSH)
		return tern_fail(TERN_E_INVALID, "vulkan: %s: %zu bytes of push constants, the layout has %d",
				 name, push_size, TERN_VK_PUSH);
	if (gx == 0 || gy == 0 || gz == 0)
		return TERN_OK; /* nothing to do */
	if (gx > lim->maxComputeWorkGroupCount[0] || gy > lim->maxComputeWorkGroupCount[1] ||
	    gz > lim->maxComputeWorkGroupCount[2])
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s: %u x %u x %u groups exceed the device limit %u x %u x %u", name,
				 gx, gy, gz, lim->maxComputeWorkGroupCount[0],
				 lim->maxComputeWorkGroupCount[1], lim->maxComputeWorkGroupCount[2]);

	VkDescriptorBufferInfo bi[TERN_VK_NBIND];
	for (int i = 0; i < TERN_VK_NBIND; i++) {
		struct tern_view v = i < nbind ? binds[i] : (struct tern_view){0};
		if (!v.buf || v.size == 0) {
			bi[i] = (VkDescriptorBufferInfo){vk->dummy->buffer, 0, VK_WHOLE_SIZE};
			continue;
		}
		if (v.off % vk->align)
			return tern_fail(TERN_E_INVALID,
					 "vulkan: %s: binding %d at byte %zu is not %llu-aligned", name, i,
					 v.off, (unsigned long long)vk->align);
		/* shaders read whole words: a buffer's size is padded to 4 bytes, so is the range */
		VkDeviceSize range = tern_align_up(v.size, 4);
		if (v.off + range > tern_align_up(v.buf->size, 4))
			return tern_fail(TERN_E_INVALID,
					 "vulkan: %s: binding %d [%zu, +%zu) outside its buffer of %zu bytes",
					 name, i, v.off, v.size, (size_t)v.buf->size);
		if (range > vk->max_range)
			return tern_fail(
				TERN_E_UNSUPPORTED,
				"vulkan: %s: binding %d needs %.1f MiB, more than maxStorageBufferRange (%.1f MiB)",
				name, i, (double)range / (1 << 20), (double)vk->max_range / (1 << 20));
		bi[i] = (VkDescriptorBufferInfo){v.buf->buffer, v.off, range};
	}

	struct tern_vk_pipeline *pl = NULL;
	enum tern_status st = get_pipeline(vk, pipe, &pl);
	if (st)
		return st;
	if (vk->pool_used == vk->pool_max || queries_full(vk))
		if ((st = tern_vk_submit(vk)))
			return st;
	if (!vk->recording && (st = begin_recording(vk)))
		return st;
	if (vk->ndispatch && depends(vk, pl, binds, nbind, bi))
		barrier(vk);
	touch(vk, pl, binds, nbind, bi);

	VkDescriptorSetAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
		.descriptorPool = vk->pool,
		.descriptorSetCount = 1,
		.pSetLayouts = &vk->dsl,
	};
	VkDescriptorSet set;
	if ((st = tern_vk_check(tvk_vkAllocateDescriptorSets(vk->device, &ai, &set),
				"vkAllocateDescriptorSets")))
		return st;
	vk->pool_used++;
	VkWriteDescriptorSet w[TERN_VK_NBIND];
	for (uint32_t i = 0; i < TERN_VK_NBIND; i++)
		w[i] = (VkWriteDescriptorSet){
			.sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
			.dstSet = set,
			.dstBinding = i,
			.descriptorCount = 1,
			.descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
			.pBufferInfo = &bi[i],
		};
	tvk_vkUpdateDescriptorSets(vk->device, TERN_VK_NBIND, w, 0, NULL);

	/* the push block is always TERN_VK_PUSH bytes: the tail past the shader's struct is zero */
	uint8_t pc[TERN_VK_PUSH] = {0};
	memcpy(pc, push, push_size);
	tvk_vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pl->pipeline);
	tvk_vkCmdBindDescriptorSets(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->layout, 0, 1, &set, 0, NULL);
	tvk_vkCmdPushConstants(vk->cmd, vk->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, TERN_VK_PUSH, pc);
	stamp_begin(vk, pl);
	tvk_vkCmdDispatch(vk->cmd, gx, gy, gz);
	stamp_end(vk);
	vk->ndispatch++;
	vk->base.counts.commands++;
	pl->calls++;
	/* hand the device what is recorded so far: it runs while the host records the rest (no
	 * wait; the frame ring holds the host back when it is TERN_VK_FRAMES submissions ahead) */
	if (vk->timeline && vk->submit_every && vk->ndispatch >= vk->submit_every)
		return tern_vk_submit(vk);
	return TERN_OK;
}

enum tern_status tern_vk_transfer_begin(struct tern_vk *vk)
{
	enum tern_status st;
	if (queries_full(vk) && (st = tern_vk_submit(vk)))
		return st;
	if ((st = tern_vk_begin(vk)))
		return st;
	stamp_begin(vk, NULL);
	return TERN_OK;
}

void tern_vk_transfer_end(struct tern_vk *vk)
{
	stamp_end(vk);
	vk->ndispatch++;
	vk->base.counts.commands++;
}

/* ---- the profile entries (backend.h) -------------------------------------------------------- */

enum tern_status tern_vk_profile_set(struct tern_backend *be, bool on)
{
	struct tern_vk *vk = tern_vk_of(be);
	if (on && !vk->timestamps)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: %s has no compute timestamps (timestampComputeAndGraphics), so its "
				 "ops cannot be profiled",
				 vk->props.deviceName);
	/* the command buffer being recorded began with the old setting (the query pool is reset
	 * when one begins): submit it first */
	enum tern_status st = tern_vk_flush(vk);
	if (st == TERN_OK && on)
		st = query_pool(vk);
	if (st)
		return st;
	vk->profile = on || vk->profile_env;
	vk->prof_kind = TERN_PROF_COPIES;
	vk->prof_op = -1;
	memset(&vk->prof, 0, sizeof vk->prof);
	return TERN_OK;
}

void tern_vk_profile_op(struct tern_backend *be, enum tern_prof_kind kind, double flops, bool begin)
{
	struct tern_vk *vk = tern_vk_of(be);
	/* commands recorded from here to the end of the op are timed as its kind (read_timestamps);
	 * outside ops only transfers are recorded: copies */
	vk->prof_kind = begin ? kind : TERN_PROF_COPIES;
	vk->prof_op = begin ? (int)be->profile_op : -1;
	if (begin) {
		vk->prof.flops[kind] += flops;
		vk->prof.op_calls[be->profile_op]++;
	}
}

enum tern_status tern_vk_profile_read(struct tern_backend *be, struct tern_profile *out, bool reset)
{
	struct tern_vk *vk = tern_vk_of(be);
	/* every submission's timestamps are summed once it has finished: submit and wait */
	enum tern_status st = tern_vk_flush(vk);
	if (st)
		return st;
	*out = vk->prof;
	if (reset)
		memset(&vk->prof, 0, sizeof vk->prof);
	return TERN_OK;
}
