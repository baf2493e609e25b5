/* Pipelines, descriptor sets, command recording, barriers, submission and timestamps.
 *
 * Every pipeline shares one layout (8 storage buffers, 128 bytes of push constants), so one
 * descriptor pool and one helper serve all ops. Work is recorded into one command buffer and
 * submitted only when the host needs a result (download, upload, synchronize) or the descriptor
 * pool is full. */
#include "backend/vulkan/vk.h"

#include "backend/vulkan/spirv.h"
#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

#define POOL_SETS 2048u
#define MAX_QUERIES 4096u

enum tern_status tern_vk_dispatch_init(struct tern_vk *vk)
{
	enum tern_status st;
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
	if ((st = tern_vk_check(tvk_vkCreateDescriptorPool(vk->device, &pci, NULL, &vk->pool),
				"descriptor pool")))
		return st;
	vk->pool_max = POOL_SETS;
	VkCommandPoolCreateInfo cpi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
		.queueFamilyIndex = vk->compute_family,
	};
	if ((st = tern_vk_check(tvk_vkCreateCommandPool(vk->device, &cpi, NULL, &vk->cmd_pool),
				"command pool")))
		return st;
	VkCommandBufferAllocateInfo cai = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
		.commandPool = vk->cmd_pool,
		.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
		.commandBufferCount = 1,
	};
	if ((st = tern_vk_check(tvk_vkAllocateCommandBuffers(vk->device, &cai, &vk->cmd), "command buffer")))
		return st;
	VkFenceCreateInfo fci = {.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO};
	if ((st = tern_vk_check(tvk_vkCreateFence(vk->device, &fci, NULL, &vk->fence), "fence")))
		return st;
	if (vk->profile) {
		VkQueryPoolCreateInfo qci = {
			.sType = VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO,
			.queryType = VK_QUERY_TYPE_TIMESTAMP,
			.queryCount = MAX_QUERIES,
		};
		if ((st = tern_vk_check(tvk_vkCreateQueryPool(vk->device, &qci, NULL, &vk->queries),
					"query pool")))
			return st;
		vk->max_queries = MAX_QUERIES;
		vk->qpipe = tern_calloc(MAX_QUERIES / 2, sizeof *vk->qpipe);
		if (!vk->qpipe)
			return TERN_E_NOMEM;
	}
	/* the dummy buffer backs unused bindings and holds sumsq partials (1024 floats) */
	if ((st = tern_vk_buffer_alloc(&vk->base, 4096, &vk->dummy)))
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
	for (int i = 0; i < vk->npipes; i++)
		if (vk->pipes[i].pipeline)
			tvk_vkDestroyPipeline(vk->device, vk->pipes[i].pipeline, NULL);
	if (vk->queries)
		tvk_vkDestroyQueryPool(vk->device, vk->queries, NULL);
	free(vk->qpipe);
	if (vk->fence)
		tvk_vkDestroyFence(vk->device, vk->fence, NULL);
	if (vk->cmd_pool)
		tvk_vkDestroyCommandPool(vk->device, vk->cmd_pool, NULL);
	if (vk->pool)
		tvk_vkDestroyDescriptorPool(vk->device, vk->pool, NULL);
	if (vk->layout)
		tvk_vkDestroyPipelineLayout(vk->device, vk->layout, NULL);
	if (vk->dsl)
		tvk_vkDestroyDescriptorSetLayout(vk->device, vk->dsl, NULL);
}

enum tern_status tern_vk_begin(struct tern_vk *vk)
{
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	if (vk->recording) {
		/* make everything recorded so far visible to what comes next: one global barrier is
		 * the simple correct default between dependent dispatches and transfers */
		if (vk->ndispatch) {
			VkMemoryBarrier mb = {
				.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
				.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
				.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
						 VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT,
			};
			VkPipelineStageFlags stages =
				VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
			tvk_vkCmdPipelineBarrier(vk->cmd, stages, stages, 0, 1, &mb, 0, NULL, 0, NULL);
		}
		return TERN_OK;
	}
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	enum tern_status st = tern_vk_check(tvk_vkBeginCommandBuffer(vk->cmd, &bi), "vkBeginCommandBuffer");
	if (st)
		return st;
	if (vk->profile)
		tvk_vkCmdResetQueryPool(vk->cmd, vk->queries, 0, vk->max_queries);
	vk->recording = true;
	vk->ndispatch = 0;
	vk->nqueries = 0;
	return TERN_OK;
}

static void read_timestamps(struct tern_vk *vk)
{
	if (!vk->nqueries)
		return;
	uint64_t *t = malloc(vk->nqueries * sizeof *t);
	if (!t)
		return;
	if (tvk_vkGetQueryPoolResults(vk->device, vk->queries, 0, vk->nqueries, vk->nqueries * sizeof *t, t,
				      sizeof *t,
				      VK_QUERY_RESULT_64_BIT | VK_QUERY_RESULT_WAIT_BIT) == VK_SUCCESS)
		for (uint32_t i = 0; i + 1 < vk->nqueries; i += 2)
			vk->qpipe[i / 2]->ns += (double)(t[i + 1] - t[i]) * vk->ts_period;
	free(t);
}

enum tern_status tern_vk_flush(struct tern_vk *vk)
{
	if (!vk->recording)
		return TERN_OK;
	vk->recording = false;
	enum tern_status st = tern_vk_check(tvk_vkEndCommandBuffer(vk->cmd), "vkEndCommandBuffer");
	if (st)
		goto fail;
	VkSubmitInfo si = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.commandBufferCount = 1,
		.pCommandBuffers = &vk->cmd,
	};
	if ((st = tern_vk_check(tvk_vkQueueSubmit(vk->queue, 1, &si, vk->fence), "vkQueueSubmit")))
		goto fail;
	if ((st = tern_vk_check(tvk_vkWaitForFences(vk->device, 1, &vk->fence, VK_TRUE, UINT64_MAX),
				"vkWaitForFences")))
		goto fail;
	tvk_vkResetFences(vk->device, 1, &vk->fence);
	tvk_vkResetCommandBuffer(vk->cmd, 0);
	tvk_vkResetDescriptorPool(vk->device, vk->pool, 0);
	vk->pool_used = 0;
	if (vk->profile)
		read_timestamps(vk);
	if (vk->validation_messages)
		return tern_fail(TERN_E_VALIDATION, "vulkan: the validation layer reported %llu message(s)",
				 (unsigned long long)vk->validation_messages);
	return TERN_OK;
fail:
	vk->failed = true;
	return st;
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

static enum tern_status get_pipeline(struct tern_vk *vk, const char *name, struct tern_vk_pipeline **out)
{
	struct tern_vk_pipeline *p = NULL;
	for (int i = 0; i < vk->npipes && !p; i++)
		if (strcmp(vk->pipes[i].spv->name, name) == 0)
			p = &vk->pipes[i];
	if (!p)
		return tern_fail(TERN_E_UNSUPPORTED, "vulkan: no shader named %s in this build", name);
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
		.stage = {.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
			  .stage = VK_SHADER_STAGE_COMPUTE_BIT,
			  .module = mod,
			  .pName = "main"},
		.layout = vk->layout,
	};
	st = tern_vk_check(
		tvk_vkCreateComputePipelines(vk->device, VK_NULL_HANDLE, 1, &ci, NULL, &p->pipeline), name);
	tvk_vkDestroyShaderModule(vk->device, mod, NULL);
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

enum tern_status tern_vk_dispatch(struct tern_vk *vk, const char *name, const struct tern_view *binds,
				  int nbind, const void *push, size_t push_size, uint32_t gx, uint32_t gy,
				  uint32_t gz)
{
	const VkPhysicalDeviceLimits *lim = &vk->props.limits;
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

	struct tern_vk_pipeline *pipe = NULL;
	enum tern_status st = get_pipeline(vk, name, &pipe);
	if (st)
		return st;
	if (vk->pool_used == vk->pool_max || (vk->profile && vk->nqueries + 2 > vk->max_queries))
		if ((st = tern_vk_flush(vk)))
			return st;
	if ((st = tern_vk_begin(vk)))
		return st;

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
	tvk_vkCmdBindPipeline(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipe->pipeline);
	tvk_vkCmdBindDescriptorSets(vk->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, vk->layout, 0, 1, &set, 0, NULL);
	tvk_vkCmdPushConstants(vk->cmd, vk->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, TERN_VK_PUSH, pc);
	if (vk->profile) {
		vk->qpipe[vk->nqueries / 2] = pipe;
		tvk_vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_TOP_OF_PIPE_BIT, vk->queries,
					vk->nqueries++);
	}
	tvk_vkCmdDispatch(vk->cmd, gx, gy, gz);
	if (vk->profile)
		tvk_vkCmdWriteTimestamp(vk->cmd, VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT, vk->queries,
					vk->nqueries++);
	vk->ndispatch++;
	pipe->calls++;
	return TERN_OK;
}
