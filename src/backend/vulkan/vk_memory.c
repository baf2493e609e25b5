/* Device memory: large blocks sub-allocated first-fit (within maxMemoryAllocationSize), one
 * VkBuffer per tern buffer bound at its sub-range, and host transfers either straight through a
 * persistent mapping (memory that is host visible, as on lavapipe and integrated GPUs) or
 * through a staging buffer. */
#include "backend/vulkan/vk.h"

#include "quant/quant.h"

#include <stdlib.h>
#include <string.h>

#define STAGING_BYTES (64u << 20)

struct range {
	VkDeviceSize off, size;
};

struct tern_vk_block {
	VkDeviceMemory mem;
	VkDeviceSize size;
	void *map;
	struct range *free; /* sorted by offset, coalesced */
	int nfree, cap;
};

static uint32_t find_type(struct tern_vk *vk, uint32_t bits, VkMemoryPropertyFlags want,
			  VkMemoryPropertyFlags avoid)
{
	for (uint32_t i = 0; i < vk->memprops.memoryTypeCount; i++) {
		VkMemoryPropertyFlags f = vk->memprops.memoryTypes[i].propertyFlags;
		if ((bits & (1u << i)) && (f & want) == want && !(f & avoid))
			return i;
	}
	return UINT32_MAX;
}

static enum tern_status block_new(struct tern_vk *vk, VkDeviceSize size, struct tern_vk_block **out)
{
	struct tern_vk_block *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	VkMemoryAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
		.allocationSize = size,
		.memoryTypeIndex = vk->mem_type,
	};
	VkResult r = tvk_vkAllocateMemory(vk->device, &ai, NULL, &b->mem);
	if (r != VK_SUCCESS) {
		free(b);
		if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY)
			return tern_fail(TERN_E_DEVICE_MEM,
					 "vulkan: out of device memory allocating a block of %.1f MiB",
					 (double)size / (1 << 20));
		return tern_vk_check(r, "vkAllocateMemory");
	}
	b->size = size;
	if (vk->mem_mappable) {
		r = tvk_vkMapMemory(vk->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map);
		if (r != VK_SUCCESS) {
			tvk_vkFreeMemory(vk->device, b->mem, NULL);
			free(b);
			return tern_vk_check(r, "vkMapMemory");
		}
	}
	b->cap = 16;
	b->free = tern_calloc((size_t)b->cap, sizeof *b->free);
	if (!b->free) {
		tvk_vkFreeMemory(vk->device, b->mem, NULL);
		free(b);
		return TERN_E_NOMEM;
	}
	b->free[0] = (struct range){0, size};
	b->nfree = 1;
	*out = b;
	return TERN_OK;
}

static void block_free(struct tern_vk *vk, struct tern_vk_block *b)
{
	tvk_vkFreeMemory(vk->device, b->mem, NULL); /* unmaps implicitly */
	free(b->free);
	free(b);
}

/* First fit; returns false when nothing fits. */
static bool block_take(struct tern_vk_block *b, VkDeviceSize size, VkDeviceSize align, VkDeviceSize *off)
{
	for (int i = 0; i < b->nfree; i++) {
		struct range *r = &b->free[i];
		VkDeviceSize start = tern_align_up(r->off, align);
		if (start + size > r->off + r->size)
			continue;
		VkDeviceSize tail_off = start + size, tail = r->off + r->size - tail_off;
		VkDeviceSize head = start - r->off;
		*off = start;
		if (head && tail) {
			if (b->nfree == b->cap) {
				struct range *nf = realloc(b->free, (size_t)b->cap * 2 * sizeof *nf);
				if (!nf)
					return false;
				b->free = nf;
				b->cap *= 2;
				r = &b->free[i];
			}
			memmove(&b->free[i + 2], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *r);
			b->free[i + 1] = (struct range){tail_off, tail};
			b->nfree++;
			r->size = head;
		} else if (head) {
			r->size = head;
		} else if (tail) {
			*r = (struct range){tail_off, tail};
		} else {
			memmove(r, r + 1, (size_t)(b->nfree - i - 1) * sizeof *r);
			b->nfree--;
		}
		return true;
	}
	return false;
}

static void block_give(struct tern_vk_block *b, VkDeviceSize off, VkDeviceSize size)
{
	int i = 0;
	while (i < b->nfree && b->free[i].off < off)
		i++;
	/* merge with the previous and/or next free range, else insert */
	bool prev = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
	bool next = i < b->nfree && off + size == b->free[i].off;
	if (prev && next) {
		b->free[i - 1].size += size + b->free[i].size;
		memmove(&b->free[i], &b->free[i + 1], (size_t)(b->nfree - i - 1) * sizeof *b->free);
		b->nfree--;
	} else if (prev) {
		b->free[i - 1].size += size;
	} else if (next) {
		b->free[i].off = off;
		b->free[i].size += size;
	} else {
		if (b->nfree == b->cap) {
			struct range *nf = realloc(b->free, (size_t)b->cap * 2 * sizeof *nf);
			if (!nf)
				return; /* the range leaks inside the block until the block is freed */
			b->free = nf;
			b->cap *= 2;
		}
		memmove(&b->free[i + 1], &b->free[i], (size_t)(b->nfree - i) * sizeof *b->free);
		b->free[i] = (struct range){off, size};
		b->nfree++;
	}
}

static enum tern_status make_buffer(struct tern_vk *vk, VkDeviceSize size, VkBuffer *buf,
				    VkMemoryRequirements *req)
{
	VkBufferCreateInfo bci = {
		.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
		.size = size,
		.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
			 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
		/* shared by the compute and transfer families when streaming uses both */
		.sharingMode = vk->nfamilies > 1 ? VK_SHARING_MODE_CONCURRENT : VK_SHARING_MODE_EXCLUSIVE,
		.queueFamilyIndexCount = vk->nfamilies > 1 ? vk->nfamilies : 0,
		.pQueueFamilyIndices = vk->families,
	};
	enum tern_status st =
		tern_vk_check(tvk_vkCreateBuffer(vk->device, &bci, NULL, buf), "vkCreateBuffer");
	if (st)
		return st;
	tvk_vkGetBufferMemoryRequirements(vk->device, *buf, req);
	return TERN_OK;
}

enum tern_status tern_vk_buffer_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out)
{
	struct tern_vk *vk = tern_vk_of(be);
	*out = NULL;
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	/* shaders read whole 4-byte words */
	VkDeviceSize bytes = tern_align_up(size ? size : 4, 4);
	if (bytes > vk->max_alloc)
		return tern_fail(
			TERN_E_UNSUPPORTED,
			"vulkan: a buffer of %.1f MiB exceeds this device's maxMemoryAllocationSize (%.1f MiB)",
			(double)bytes / (1 << 20), (double)vk->max_alloc / (1 << 20));
	struct tern_buffer *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	VkMemoryRequirements req;
	enum tern_status st = make_buffer(vk, bytes, &b->buffer, &req);
	if (st)
		goto fail;
	if (!(req.memoryTypeBits & (1u << vk->mem_type))) {
		st = tern_fail(TERN_E_DEVICE, "vulkan: buffer cannot live in the chosen memory type %u",
			       vk->mem_type);
		goto fail;
	}
	VkDeviceSize align = req.alignment > vk->align ? req.alignment : vk->align;
	b->size = size;
	b->alloc = req.size;
	if (req.size > vk->block_size) {
		if ((st = block_new(vk, req.size, &b->block)))
			goto fail;
		b->own_block = true;
		b->offset = 0;
	} else {
		for (int i = 0; i < vk->nblocks && !b->block; i++)
			if (block_take(vk->blocks[i], req.size, align, &b->offset))
				b->block = vk->blocks[i];
		if (!b->block) {
			struct tern_vk_block *nb;
			struct tern_vk_block **nl =
				realloc(vk->blocks, (size_t)(vk->nblocks + 1) * sizeof *nl);
			if (!nl) {
				st = tern_fail(TERN_E_NOMEM, "vulkan: out of host memory");
				goto fail;
			}
			vk->blocks = nl;
			if ((st = block_new(vk, vk->block_size, &nb)))
				goto fail;
			vk->blocks[vk->nblocks++] = nb;
			vk->block_bytes += nb->size;
			block_take(nb, req.size, align, &b->offset);
			b->block = nb;
		}
	}
	if (b->own_block)
		vk->own_bytes += b->alloc;
	else
		vk->sub_bytes += b->alloc;
	st = tern_vk_check(tvk_vkBindBufferMemory(vk->device, b->buffer, b->block->mem, b->offset),
			   "vkBindBufferMemory");
	if (st)
		goto fail;
	/* new buffers read as zero on every backend */
	st = tern_vk_zero(be, (struct tern_view){b, 0, size});
	if (st)
		goto fail;
	*out = b;
	return TERN_OK;
fail:
	tern_vk_buffer_free(be, b);
	return st;
}

void tern_vk_buffer_free(struct tern_backend *be, struct tern_buffer *b)
{
	struct tern_vk *vk = tern_vk_of(be);
	if (!b)
		return;
	/* the GPU may still use it in recorded or submitted work, or a copy */
	if (vk->recording || vk->timeline)
		tern_vk_flush(vk);
	if (b->buffer)
		tvk_vkDestroyBuffer(vk->device, b->buffer, NULL);
	if (b->host_mem)
		tvk_vkFreeMemory(vk->device, b->host_mem, NULL);
	if (b->block) {
		if (b->own_block) {
			block_free(vk, b->block);
			vk->own_bytes -= b->alloc;
		} else {
			block_give(b->block, b->offset, b->alloc);
			vk->sub_bytes -= b->alloc;
		}
	}
	free(b);
}

static enum tern_status check_view(struct tern_view v, const char *what)
{
	if (!v.buf || v.off > v.buf->size || v.size > v.buf->size - v.off)
		return tern_fail(TERN_E_INVALID,
				 "vulkan: %s: view [%zu, +%zu) outside its buffer of %zu bytes", what, v.off,
				 v.size, v.buf ? (size_t)v.buf->size : (size_t)0);
	if (v.buf->host)
		return tern_fail(TERN_E_INVALID,
				 "vulkan: %s: the view is of a host_alloc buffer (write it through its "
				 "mapping; only copy_async reads it)",
				 what);
	return TERN_OK;
}

enum tern_status tern_vk_host_alloc(struct tern_backend *be, size_t size, struct tern_buffer **out,
				    void **ptr)
{
	struct tern_vk *vk = tern_vk_of(be);
	*out = NULL;
	*ptr = NULL;
	if (vk->failed)
		return tern_fail(TERN_E_DEVICE, "vulkan: the device failed earlier");
	if (size == 0)
		return tern_fail(TERN_E_INVALID, "host_alloc: size 0; a host buffer needs at least one byte");
	if (vk->host_type == UINT32_MAX)
		return tern_fail(TERN_E_UNSUPPORTED,
				 "vulkan: host_alloc: no host-visible coherent memory type");
	struct tern_buffer *b = tern_calloc(1, sizeof *b);
	if (!b)
		return TERN_E_NOMEM;
	b->host = true;
	b->size = size;
	VkMemoryRequirements req;
	enum tern_status st = make_buffer(vk, tern_align_up(size, 4), &b->buffer, &req);
	if (st)
		goto fail;
	if (!(req.memoryTypeBits & (1u << vk->host_type))) {
		st = tern_fail(TERN_E_DEVICE, "vulkan: host_alloc: buffer cannot live in memory type %u",
			       vk->host_type);
		goto fail;
	}
	VkMemoryAllocateInfo ai = {
		.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
		.allocationSize = req.size,
		.memoryTypeIndex = vk->host_type,
	};
	VkResult r = tvk_vkAllocateMemory(vk->device, &ai, NULL, &b->host_mem);
	if (r != VK_SUCCESS) {
		st = tern_fail(
			r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY
				? TERN_E_NOMEM
				: TERN_E_DEVICE,
			"vulkan: host_alloc: cannot allocate %.1f MiB of host-visible memory (VkResult %d)",
			(double)size / (1 << 20), (int)r);
		b->host_mem = VK_NULL_HANDLE;
		goto fail;
	}
	if ((st = tern_vk_check(tvk_vkBindBufferMemory(vk->device, b->buffer, b->host_mem, 0),
				"vkBindBufferMemory")) ||
	    (st = tern_vk_check(tvk_vkMapMemory(vk->device, b->host_mem, 0, VK_WHOLE_SIZE, 0, &b->map),
				"vkMapMemory")))
		goto fail;
	memset(b->map, 0, size);
	b->alloc = req.size;
	*out = b;
	*ptr = b->map;
	return TERN_OK;
fail:
	tern_vk_buffer_free(be, b);
	return st;
}

static enum tern_status copy_staged(struct tern_vk *vk, struct tern_view v, void *host, bool up)
{
	enum tern_status st;
	for (size_t done = 0; done < v.size;) {
		size_t n = v.size - done < vk->staging_size ? v.size - done : (size_t)vk->staging_size;
		if (up)
			memcpy(vk->staging_map, (char *)host + done, n);
		if ((st = tern_vk_transfer_begin(vk)))
			return st;
		VkBufferCopy c = {up ? 0 : v.off + done, up ? v.off + done : 0, n};
		tvk_vkCmdCopyBuffer(vk->cmd, up ? vk->staging : v.buf->buffer,
				    up ? v.buf->buffer : vk->staging, 1, &c);
		tern_vk_transfer_end(vk);
		if ((st = tern_vk_flush(vk)))
			return st;
		if (!up)
			memcpy((char *)host + done, vk->staging_map, n);
		done += n;
	}
	return TERN_OK;
}

enum tern_status tern_vk_upload(struct tern_backend *be, struct tern_view dst, const void *src)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = check_view(dst, "upload");
	if (st || dst.size == 0)
		return st;
	be->counts.uploads++;
	/* ordered after queued work that may read or write the same bytes */
	if ((st = tern_vk_flush(vk)))
		return st;
	if (vk->mem_mappable) {
		memcpy((char *)dst.buf->block->map + dst.buf->offset + dst.off, src, dst.size);
		return TERN_OK;
	}
	return copy_staged(vk, dst, (void *)src, true);
}

enum tern_status tern_vk_download(struct tern_backend *be, void *dst, struct tern_view src)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = check_view(src, "download");
	if (st || src.size == 0)
		return st;
	be->counts.downloads++;
	if ((st = tern_vk_flush(vk)))
		return st;
	if (vk->mem_mappable) {
		memcpy(dst, (char *)src.buf->block->map + src.buf->offset + src.off, src.size);
		return TERN_OK;
	}
	return copy_staged(vk, src, dst, false);
}

enum tern_status tern_vk_zero(struct tern_backend *be, struct tern_view dst)
{
	struct tern_vk *vk = tern_vk_of(be);
	enum tern_status st = check_view(dst, "zero");
	if (st || dst.size == 0)
		return st;
	if (dst.off % 4 == 0 && (dst.size % 4 == 0 || dst.off + dst.size == dst.buf->size)) {
		/* vkCmdFillBuffer wants 4-byte multiples; a buffer's tail is padded to one */
		if ((st = tern_vk_transfer_begin(vk)))
			return st;
		tvk_vkCmdFillBuffer(vk->cmd, dst.buf->buffer, dst.off, tern_align_up(dst.size, 4), 0);
		tern_vk_transfer_end(vk);
		return TERN_OK;
	}
	void *z = tern_calloc(1, dst.size);
	if (!z)
		return TERN_E_NOMEM;
	st = tern_vk_upload(be, dst, z);
	free(z);
	return st;
}

enum tern_status tern_vk_memory_init(struct tern_vk *vk)
{
	/* the memory types a storage buffer may use */
	VkBuffer probe;
	VkMemoryRequirements req;
	enum tern_status st = make_buffer(vk, 256, &probe, &req);
	if (st)
		return st;
	tvk_vkDestroyBuffer(vk->device, probe, NULL);

	const VkMemoryPropertyFlags local = VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT;
	const VkMemoryPropertyFlags visible =
		VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
	bool unified = vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ||
		       vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU;
	vk->mem_type = UINT32_MAX;
	if (unified)
		vk->mem_type = find_type(vk, req.memoryTypeBits, local | visible, 0);
	if (vk->mem_type == UINT32_MAX)
		vk->mem_type = find_type(vk, req.memoryTypeBits, local, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT);
	if (vk->mem_type == UINT32_MAX)
		vk->mem_type = find_type(vk, req.memoryTypeBits, local, 0);
	if (vk->mem_type == UINT32_MAX)
		vk->mem_type = find_type(vk, req.memoryTypeBits, 0, 0);
	if (vk->mem_type == UINT32_MAX)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: no memory type for storage buffers");
	VkMemoryPropertyFlags f = vk->memprops.memoryTypes[vk->mem_type].propertyFlags;
	vk->mem_mappable = (f & visible) == visible;
	/* host_alloc: host memory the DMA engine reads, preferably not device-local (that is the
	 * scarce resource streaming saves) */
	vk->host_type = find_type(vk, req.memoryTypeBits, visible, local);
	if (vk->host_type == UINT32_MAX)
		vk->host_type = find_type(vk, req.memoryTypeBits, visible, 0);
	vk->block_size = TERN_VK_BLOCK < vk->max_alloc ? TERN_VK_BLOCK : vk->max_alloc;

	if (!vk->mem_mappable) {
		VkBufferCreateInfo bci = {
			.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
			.size = STAGING_BYTES,
			.usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT | VK_BUFFER_USAGE_TRANSFER_DST_BIT,
		};
		if ((st = tern_vk_check(tvk_vkCreateBuffer(vk->device, &bci, NULL, &vk->staging),
					"vkCreateBuffer")))
			return st;
		tvk_vkGetBufferMemoryRequirements(vk->device, vk->staging, &req);
		uint32_t t =
			find_type(vk, req.memoryTypeBits, visible | VK_MEMORY_PROPERTY_HOST_CACHED_BIT, 0);
		if (t == UINT32_MAX)
			t = find_type(vk, req.memoryTypeBits, visible, 0);
		if (t == UINT32_MAX)
			return tern_fail(TERN_E_UNAVAILABLE, "vulkan: no host-visible memory for staging");
		VkMemoryAllocateInfo ai = {
			.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
			.allocationSize = req.size,
			.memoryTypeIndex = t,
		};
		if ((st = tern_vk_check(tvk_vkAllocateMemory(vk->device, &ai, NULL, &vk->staging_mem),
					"staging memory")))
			return st;
		if ((st = tern_vk_check(tvk_vkBindBufferMemory(vk->device, vk->staging, vk->staging_mem, 0),
					"staging bind")))
			return st;
		if ((st = tern_vk_check(tvk_vkMapMemory(vk->device, vk->staging_mem, 0, VK_WHOLE_SIZE, 0,
							&vk->staging_map),
					"staging map")))
			return st;
		vk->staging_size = STAGING_BYTES;
	}
	return TERN_OK;
}

void tern_vk_memory_free(struct tern_vk *vk)
{
	if (vk->staging)
		tvk_vkDestroyBuffer(vk->device, vk->staging, NULL);
	if (vk->staging_mem)
		tvk_vkFreeMemory(vk->device, vk->staging_mem, NULL);
	for (int i = 0; i < vk->nblocks; i++)
		block_free(vk, vk->blocks[i]);
	free(vk->blocks);
	vk->blocks = NULL;
	vk->nblocks = 0;
}
