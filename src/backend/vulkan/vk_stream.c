/* Streaming: copies between host and device (either way) on the transfer queue, ordered against
 * compute by two timeline semaphores (contracts in backend.h, the scheme in vk.h and
 * docs/ARCHITECTURE.md §6).
 *
 * comp_sem counts compute submissions: a mark is the value the submission holding the ops so
 * far signals. xfer_sem counts copies: a ticket is the value its copy's submission signals.
 * A copy waits on the device for comp_sem >= after; compute submissions made after
 * wait_ticket(t) wait on the device for xfer_sem >= t. Buffers are CONCURRENT across the two
 * queue families when they differ, so no ownership transfer is needed, and semaphore waits carry
 * the memory dependencies (no barrier is recorded for the copies). */
#include "backend/vulkan/vk.h"

#include <stdio.h>
#include <string.h>

enum tern_status tern_vk_stream_init(struct tern_vk *vk)
{
	if (!vk->timeline) {
		tern_log(TERN_LOG_INFO, "vulkan: no timeline semaphores: streaming copies are synchronous");
		return TERN_OK;
	}
	bool separate = vk->transfer_queue != VK_NULL_HANDLE;
	vk->xfer_queue = separate ? vk->transfer_queue : vk->queue;
	VkCommandPoolCreateInfo cpi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
		.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
		.queueFamilyIndex = separate ? vk->transfer_family : vk->compute_family,
	};
	enum tern_status st = tern_vk_check(tvk_vkCreateCommandPool(vk->device, &cpi, NULL, &vk->xfer_pool),
					    "transfer command pool");
	if (st)
		return st;
	VkCommandBuffer cmds[TERN_VK_XCMDS];
	VkCommandBufferAllocateInfo cai = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
		.commandPool = vk->xfer_pool,
		.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
		.commandBufferCount = TERN_VK_XCMDS,
	};
	if ((st = tern_vk_check(tvk_vkAllocateCommandBuffers(vk->device, &cai, cmds),
				"transfer command buffers")))
		return st;
	for (int i = 0; i < TERN_VK_XCMDS; i++)
		vk->xcmds[i] = (struct tern_vk_xcmd){cmds[i], 0};
	tern_log(TERN_LOG_INFO, "vulkan: streaming copies on the %s queue (family %u), timeline semaphores",
		 separate ? "transfer" : "compute", separate ? vk->transfer_family : vk->compute_family);
	return TERN_OK;
}

void tern_vk_stream_free(struct tern_vk *vk)
{
	if (vk->xfer_pool) {
		tern_vk_wait_value(vk, vk->xfer_sem, vk->xfer_value);
		tvk_vkDestroyCommandPool(vk->device, vk->xfer_pool, NULL);
		vk->xfer_pool = VK_NULL_HANDLE;
	}
}

enum tern_status tern_vk_mark(struct tern_backend *be, uint64_t *mark)
{
	struct tern_vk *vk = tern_vk_of(be);
	*mark = 0;
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	if (!vk->timeline) {
		/* every op has finished once flush returns: a mark is only a count */
		enum tern_status st = tern_vk_flush(vk);
		if (st)
			return st;
		*mark = ++vk->sync_marks;
		return TERN_OK;
	}
	enum tern_status st = tern_vk_submit(vk);
	if (st)
		return st;
	*mark = vk->comp_value;
	return TERN_OK;
}

static enum tern_status check_copy(struct tern_vk *vk, struct tern_view dst, struct tern_view src,
				   uint64_t after)
{
	if (dst.size == 0 || src.size != dst.size)
		return tern_fail(
			TERN_E_INVALID,
			"copy_async: dst is %zu bytes and src %zu; both must be the same nonzero size",
			dst.size, src.size);
	if (!src.buf || !dst.buf || src.buf->host == dst.buf->host)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: one of src and dst must be a view of a host_alloc buffer and "
				 "the other of a device buffer");
	if (dst.off > dst.buf->size || dst.size > dst.buf->size - dst.off)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: dst view [%zu, +%zu) lies outside its %zu-byte buffer", dst.off,
				 dst.size, (size_t)dst.buf->size);
	if (src.off > src.buf->size || src.size > src.buf->size - src.off)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: src view [%zu, +%zu) lies outside its %zu-byte buffer", src.off,
				 src.size, (size_t)src.buf->size);
	uint64_t last = vk->timeline ? vk->comp_value : vk->sync_marks;
	if (after > last)
		return tern_fail(TERN_E_INVALID,
				 "copy_async: after = %llu, but the last mark is %llu (pass 0 or a mark())",
				 (unsigned long long)after, (unsigned long long)last);
	return TERN_OK;
}

/* A copy into a host_alloc buffer (device -> host): its writes made visible to the host, which
 * reads them after a wait on the copy's semaphore value or fence. */
static void host_visible(VkCommandBuffer cmd, struct tern_view dst)
{
	if (!dst.buf->host)
		return;
	VkMemoryBarrier mb = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
		.srcAccessMask = VK_ACCESS_TRANSFER_WRITE_BIT,
		.dstAccessMask = VK_ACCESS_HOST_READ_BIT,
	};
	tvk_vkCmdPipelineBarrier(cmd, VK_PIPELINE_STAGE_TRANSFER_BIT, VK_PIPELINE_STAGE_HOST_BIT, 0, 1, &mb,
				 0, NULL, 0, NULL);
}

enum tern_status tern_vk_copy_async(struct tern_backend *be, struct tern_view dst, struct tern_view src,
				    uint64_t after, uint64_t *ticket)
{
	struct tern_vk *vk = tern_vk_of(be);
	*ticket = 0;
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	enum tern_status st = check_copy(vk, dst, src, after);
	if (st)
		return st;
	VkBufferCopy region = {src.off, dst.off, dst.size};
	if (!vk->timeline) {
		/* synchronous: after every queued op, in the compute command buffer, waited for */
		if ((st = tern_vk_transfer_begin(vk)))
			return st;
		tvk_vkCmdCopyBuffer(vk->cmd, src.buf->buffer, dst.buf->buffer, 1, &region);
		host_visible(vk->cmd, dst);
		tern_vk_transfer_end(vk);
		if ((st = tern_vk_flush(vk)))
			return st;
		*ticket = ++vk->xfer_value;
		return TERN_OK;
	}

	/* the oldest transfer command buffer, once its copy has finished */
	struct tern_vk_xcmd *x = &vk->xcmds[vk->xnext];
	if ((st = tern_vk_wait_value(vk, vk->xfer_sem, x->value)))
		return st;
	VkCommandBufferBeginInfo bi = {
		.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
		.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
	};
	tvk_vkResetCommandBuffer(x->cmd, 0);
	if ((st = tern_vk_check(tvk_vkBeginCommandBuffer(x->cmd, &bi), "vkBeginCommandBuffer")))
		goto fail;
	tvk_vkCmdCopyBuffer(x->cmd, src.buf->buffer, dst.buf->buffer, 1, &region);
	host_visible(x->cmd, dst);
	if ((st = tern_vk_check(tvk_vkEndCommandBuffer(x->cmd), "vkEndCommandBuffer")))
		goto fail;

	uint64_t signal = vk->xfer_value + 1;
	VkPipelineStageFlags wait_stage = VK_PIPELINE_STAGE_TRANSFER_BIT;
	VkTimelineSemaphoreSubmitInfo ti = {
		.sType = VK_STRUCTURE_TYPE_TIMELINE_SEMAPHORE_SUBMIT_INFO,
		.waitSemaphoreValueCount = after ? 1 : 0,
		.pWaitSemaphoreValues = &after,
		.signalSemaphoreValueCount = 1,
		.pSignalSemaphoreValues = &signal,
	};
	VkSubmitInfo si = {
		.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
		.pNext = &ti,
		.waitSemaphoreCount = after ? 1 : 0,
		.pWaitSemaphores = &vk->comp_sem,
		.pWaitDstStageMask = &wait_stage,
		.commandBufferCount = 1,
		.pCommandBuffers = &x->cmd,
		.signalSemaphoreCount = 1,
		.pSignalSemaphores = &vk->xfer_sem,
	};
	if ((st = tern_vk_check(tvk_vkQueueSubmit(vk->xfer_queue, 1, &si, VK_NULL_HANDLE), "vkQueueSubmit")))
		goto fail;
	vk->xfer_value = signal;
	x->value = signal;
	vk->xnext = (vk->xnext + 1) % TERN_VK_XCMDS;
	*ticket = signal;
	return TERN_OK;
fail:
	vk->failed = true;
	return st;
}

static enum tern_status check_ticket(struct tern_vk *vk, const char *what, uint64_t ticket)
{
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	if (ticket > vk->xfer_value)
		return tern_fail(TERN_E_INVALID, "%s: ticket %llu was never issued (the last is %llu)", what,
				 (unsigned long long)ticket, (unsigned long long)vk->xfer_value);
	return TERN_OK;
}

enum tern_status tern_vk_wait_ticket(struct tern_backend *be, uint64_t ticket)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = check_ticket(vk, "wait_ticket", ticket);
	if (st || !vk->timeline || ticket <= vk->wait_xfer)
		return st;
	/* ops queued so far need not wait: they go in a submission of their own (unless the copy
	 * has finished already, when waiting for it costs them nothing) */
	uint64_t done = 0;
	if (tvk_vkGetSemaphoreCounterValue(vk->device, vk->xfer_sem, &done) != VK_SUCCESS || done < ticket)
		if ((st = tern_vk_submit(vk)))
			return st;
	vk->wait_xfer = ticket;
	return TERN_OK;
}

enum tern_status tern_vk_ticket_wait_host(struct tern_backend *be, uint64_t ticket)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = check_ticket(vk, "ticket_wait_host", ticket);
	if (st || !vk->timeline)
		return st;
	return tern_vk_wait_value(vk, vk->xfer_sem, ticket);
}

enum tern_status tern_vk_memory_info(struct tern_backend *be, uint64_t *budget, uint64_t *usage)
{
	struct tern_vk *vk = tern_vk_of(be);
	uint32_t heap = vk->memprops.memoryTypes[vk->mem_type].heapIndex;
	uint64_t mine = vk->sub_bytes + vk->own_bytes;
	*budget = vk->memprops.memoryHeaps[heap].size;
	*usage = mine;
	if (vk->budget_ext) {
		VkPhysicalDeviceMemoryBudgetPropertiesEXT mb = {
			.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
		VkPhysicalDeviceMemoryProperties2 p2 = {
			.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2, .pNext = &mb};
		tvk_vkGetPhysicalDeviceMemoryProperties2(vk->phys, &p2);
		/* the driver counts whole blocks; tern reuses the free space inside them */
		uint64_t spare = vk->block_bytes > vk->sub_bytes ? vk->block_bytes - vk->sub_bytes : 0;
		uint64_t used = mb.heapUsage[heap] > spare ? mb.heapUsage[heap] - spare : 0;
		*budget = mb.heapBudget[heap];
		*usage = used > mine ? used : mine;
	}
	return TERN_OK;
}
