/* Vulkan instance, device selection, capability report and backend creation. */
#define _GNU_SOURCE
#include "backend/vulkan/vk.h"

#include "backend/vulkan/spirv.h"
#include "core/crc32c.h"
#include "quant/quant.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum tern_status tern_vk_check(VkResult r, const char *what)
{
	if (r == VK_SUCCESS)
		return TERN_OK;
	if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY)
		return tern_fail(TERN_E_DEVICE_MEM, "vulkan: %s: out of device memory", what);
	if (r == VK_ERROR_OUT_OF_HOST_MEMORY)
		return tern_fail(TERN_E_NOMEM, "vulkan: %s: out of host memory", what);
	if (r == VK_ERROR_DEVICE_LOST)
		return tern_fail(TERN_E_DEVICE, "vulkan: %s: device lost", what);
	return tern_fail(TERN_E_DEVICE, "vulkan: %s failed (VkResult %d)", what, (int)r);
}

static bool env_on(const char *name)
{
	const char *v = getenv(name);
	return v && *v && strcmp(v, "0") != 0;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL on_debug(VkDebugUtilsMessageSeverityFlagBitsEXT sev,
					       VkDebugUtilsMessageTypeFlagsEXT type,
					       const VkDebugUtilsMessengerCallbackDataEXT *data, void *user)
{
	struct tern_vk *vk = user;
	if (vk)
		vk->validation_messages++;
	tern_log(sev >= VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? TERN_LOG_ERROR : TERN_LOG_WARN,
		 "vulkan validation: %s", data && data->pMessage ? data->pMessage : "(no message)");
	return VK_FALSE;
}

static bool has_layer(const char *name)
{
	uint32_t n = 0;
	tvk_vkEnumerateInstanceLayerProperties(&n, NULL);
	VkLayerProperties *l = calloc(n ? n : 1, sizeof *l);
	bool found = false;
	if (l && tvk_vkEnumerateInstanceLayerProperties(&n, l) == VK_SUCCESS)
		for (uint32_t i = 0; i < n; i++)
			found |= strcmp(l[i].layerName, name) == 0;
	free(l);
	return found;
}

/* vk may be NULL (a short-lived instance for listing devices, never validated). */
static enum tern_status create_instance(struct tern_vk *vk, VkInstance *out)
{
	enum tern_status st = tern_vk_load();
	if (st)
		return st;
	uint32_t api = VK_API_VERSION_1_0;
	if (tvk_vkEnumerateInstanceVersion)
		tvk_vkEnumerateInstanceVersion(&api);
	if (api < VK_API_VERSION_1_2)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: the loader offers Vulkan %u.%u; tern needs 1.2",
				 VK_API_VERSION_MAJOR(api), VK_API_VERSION_MINOR(api));
	VkApplicationInfo app = {
		.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
		.pApplicationName = "tern",
		.pEngineName = "tern",
		.apiVersion = VK_API_VERSION_1_2,
	};
	const char *layers[1], *exts[2];
	uint32_t nlayers = 0, nexts = 0;
	bool validate = vk && env_on("TERN_VALIDATE");
	/* TERN_VALIDATE_SYNC=1 adds the layer's synchronization validation (slow) */
	VkValidationFeatureEnableEXT sync_feature =
		VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;
	VkValidationFeaturesEXT features = {
		.sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
		.enabledValidationFeatureCount = 1,
		.pEnabledValidationFeatures = &sync_feature,
	};
	bool validate_sync = validate && env_on("TERN_VALIDATE_SYNC");
	if (validate) {
		if (!has_layer("VK_LAYER_KHRONOS_validation"))
			return tern_fail(
				TERN_E_UNAVAILABLE,
				"vulkan: TERN_VALIDATE is set but VK_LAYER_KHRONOS_validation is not installed "
				"(apt-get install vulkan-validationlayers)");
		layers[nlayers++] = "VK_LAYER_KHRONOS_validation";
		exts[nexts++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
		if (validate_sync)
			exts[nexts++] = VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
	}
	VkDebugUtilsMessengerCreateInfoEXT dbg = {
		.sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
		.messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
				   VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
		.messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
			       VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT,
		.pfnUserCallback = on_debug,
		.pUserData = vk,
	};
	features.pNext = &dbg; /* the messenger also sees instance creation */
	VkInstanceCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
		.pNext = validate_sync ? (const void *)&features
			 : validate    ? (const void *)&dbg
				       : NULL,
		.pApplicationInfo = &app,
		.enabledLayerCount = nlayers,
		.ppEnabledLayerNames = layers,
		.enabledExtensionCount = nexts,
		.ppEnabledExtensionNames = exts,
	};
	VkResult r = tvk_vkCreateInstance(&ci, NULL, out);
	if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "vulkan: no Vulkan driver found (install mesa-vulkan-drivers "
				 "for lavapipe, or your GPU's driver)");
	if ((st = tern_vk_check(r, "vkCreateInstance")))
		return st;
	tern_vk_load_instance(*out);
	if (validate) {
		r = tvk_vkCreateDebugUtilsMessengerEXT(*out, &dbg, NULL, &vk->messenger);
		if ((st = tern_vk_check(r, "vkCreateDebugUtilsMessengerEXT"))) {
			tvk_vkDestroyInstance(*out, NULL);
			return st;
		}
		tern_log(TERN_LOG_INFO, "vulkan: validation layer enabled%s",
			 validate_sync ? " (with synchronization validation)" : "");
	}
	return TERN_OK;
}

static enum tern_status physical_devices(VkInstance inst, VkPhysicalDevice **out, uint32_t *n)
{
	*n = 0;
	*out = NULL;
	VkResult r = tvk_vkEnumeratePhysicalDevices(inst, n, NULL);
	if (r != VK_SUCCESS || *n == 0)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: no Vulkan devices found");
	*out = tern_calloc(*n, sizeof **out);
	if (!*out)
		return TERN_E_NOMEM;
	return tern_vk_check(tvk_vkEnumeratePhysicalDevices(inst, n, *out), "vkEnumeratePhysicalDevices");
}

static bool has_device_ext(VkPhysicalDevice pd, const char *name)
{
	uint32_t n = 0;
	tvk_vkEnumerateDeviceExtensionProperties(pd, NULL, &n, NULL);
	VkExtensionProperties *e = calloc(n ? n : 1, sizeof *e);
	bool found = false;
	if (e && tvk_vkEnumerateDeviceExtensionProperties(pd, NULL, &n, e) == VK_SUCCESS)
		for (uint32_t i = 0; i < n; i++)
			found |= strcmp(e[i].extensionName, name) == 0;
	free(e);
	return found;
}

static const char *kind_name(VkPhysicalDeviceType t)
{
	switch (t) {
	case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: return "integrated-gpu";
	case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: return "discrete-gpu";
	case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: return "virtual-gpu";
	case VK_PHYSICAL_DEVICE_TYPE_CPU: return "cpu";
	default: return "other";
	}
}

static const char *ctype_name(VkComponentTypeNV t)
{
	switch (t) {
	case VK_COMPONENT_TYPE_FLOAT16_NV: return "f16";
	case VK_COMPONENT_TYPE_FLOAT32_NV: return "f32";
	case VK_COMPONENT_TYPE_SINT8_NV: return "s8";
	case VK_COMPONENT_TYPE_UINT8_NV: return "u8";
	case VK_COMPONENT_TYPE_SINT32_NV: return "s32";
	case VK_COMPONENT_TYPE_UINT32_NV: return "u32";
	default: return "?";
	}
}

static void queue_families(VkPhysicalDevice pd, uint32_t *compute, uint32_t *transfer)
{
	uint32_t n = 0;
	tvk_vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, NULL);
	VkQueueFamilyProperties q[32];
	if (n > 32)
		n = 32;
	tvk_vkGetPhysicalDeviceQueueFamilyProperties(pd, &n, q);
	*compute = *transfer = UINT32_MAX;
	for (uint32_t i = 0; i < n; i++) {
		VkQueueFlags f = q[i].queueFlags;
		if ((f & VK_QUEUE_COMPUTE_BIT) && *compute == UINT32_MAX)
			*compute = i;
		if ((f & VK_QUEUE_TRANSFER_BIT) && !(f & (VK_QUEUE_COMPUTE_BIT | VK_QUEUE_GRAPHICS_BIT)) &&
		    *transfer == UINT32_MAX)
			*transfer = i;
	}
}

static void describe(VkPhysicalDevice pd, int index, struct tern_device_info *d)
{
	memset(d, 0, sizeof *d);
	VkPhysicalDeviceSubgroupProperties sub = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
	VkPhysicalDeviceDriverProperties drv = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES,
						.pNext = &sub};
	VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
					  .pNext = &drv};
	tvk_vkGetPhysicalDeviceProperties2(pd, &p2);
	VkPhysicalDeviceProperties *p = &p2.properties;

	VkPhysicalDevice16BitStorageFeatures s16 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES};
	VkPhysicalDeviceVulkan12Features f12 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = &s16};
	VkPhysicalDeviceFeatures2 f2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &f12};
	tvk_vkGetPhysicalDeviceFeatures2(pd, &f2);

	snprintf(d->backend, sizeof d->backend, "vulkan");
	d->index = index;
	snprintf(d->name, sizeof d->name, "%s", p->deviceName);
	snprintf(d->kind, sizeof d->kind, "%s", kind_name(p->deviceType));
	snprintf(d->driver, sizeof d->driver, "%.60s %.60s", drv.driverName, drv.driverInfo);
	snprintf(d->api, sizeof d->api, "Vulkan %u.%u.%u", VK_API_VERSION_MAJOR(p->apiVersion),
		 VK_API_VERSION_MINOR(p->apiVersion), VK_API_VERSION_PATCH(p->apiVersion));
	d->max_allocation = 0;
	d->max_storage_range = p->limits.maxStorageBufferRange;
	d->max_shared_memory = p->limits.maxComputeSharedMemorySize;
	d->max_workgroup_invocations = p->limits.maxComputeWorkGroupInvocations;
	d->subgroup_size = sub.subgroupSize;
	d->fp16 = f12.shaderFloat16;
	d->storage16 = s16.storageBuffer16BitAccess;
	d->int8 = f12.shaderInt8 && f12.storageBuffer8BitAccess;
	d->subgroup_arithmetic = (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) &&
				 (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
	d->timestamps = p->limits.timestampComputeAndGraphics;
	d->memory_budget = has_device_ext(pd, "VK_EXT_memory_budget");
	d->timeline_semaphores = f12.timelineSemaphore && !env_on("TERN_VK_NO_TIMELINE");
	uint32_t cf, tf;
	queue_families(pd, &cf, &tf);
	d->transfer_queue = tf != UINT32_MAX;

	VkPhysicalDeviceMaintenance3Properties m3 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES};
	VkPhysicalDeviceProperties2 p3 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
					  .pNext = &m3};
	tvk_vkGetPhysicalDeviceProperties2(pd, &p3);
	d->max_allocation = m3.maxMemoryAllocationSize;

	VkPhysicalDeviceMemoryProperties mp;
	tvk_vkGetPhysicalDeviceMemoryProperties(pd, &mp);
	size_t len = 0;
	for (uint32_t h = 0; h < mp.memoryHeapCount; h++) {
		VkMemoryHeap *heap = &mp.memoryHeaps[h];
		bool local = heap->flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
		bool visible = false;
		for (uint32_t t = 0; t < mp.memoryTypeCount; t++)
			if (mp.memoryTypes[t].heapIndex == h &&
			    (mp.memoryTypes[t].propertyFlags & VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT))
				visible = true;
		if (local)
			d->device_local_bytes += heap->size;
		if (visible)
			d->host_visible_bytes += heap->size;
		if (len < sizeof d->heaps)
			len += (size_t)snprintf(d->heaps + len, sizeof d->heaps - len, "%s%u: %.1f GiB%s%s",
						h ? ", " : "", h, (double)heap->size / (1 << 30),
						local ? " device-local" : " host",
						visible ? " host-visible" : "");
	}
	if (tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV &&
	    has_device_ext(pd, "VK_NV_cooperative_matrix")) {
		uint32_t n = 0;
		tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, NULL);
		VkCooperativeMatrixPropertiesNV *cm = calloc(n ? n : 1, sizeof *cm);
		if (cm) {
			for (uint32_t i = 0; i < n; i++)
				cm[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
			tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(pd, &n, cm);
			len = 0;
			for (uint32_t i = 0; i < n && len < sizeof d->coopmat; i++)
				len += (size_t)snprintf(d->coopmat + len, sizeof d->coopmat - len,
							"%s%ux%ux%u %sx%s->%s", i ? ", " : "", cm[i].MSize,
							cm[i].NSize, cm[i].KSize, ctype_name(cm[i].AType),
							ctype_name(cm[i].BType), ctype_name(cm[i].DType));
			free(cm);
		}
	}
}

enum tern_status tern_vulkan_devices(struct tern_device_info *out, int max, int *count)
{
	*count = 0;
	VkInstance inst;
	enum tern_status st = create_instance(NULL, &inst);
	if (st)
		return st;
	VkPhysicalDevice *pds;
	uint32_t n;
	st = physical_devices(inst, &pds, &n);
	for (uint32_t i = 0; st == TERN_OK && i < n && *count < max; i++)
		describe(pds[i], (int)i, &out[(*count)++]);
	free(pds);
	tvk_vkDestroyInstance(inst, NULL);
	return st;
}

/* The variants the NV cooperative-matrix path needs (all or none are compiled: the probe in
 * cmake/shaders.cmake). */
static const enum tern_vk_pipe nv_coopmat_pipes[] = {
	TERN_PIPE_MM_CM_F32,          TERN_PIPE_MM_CM_BWD_F32,
	TERN_PIPE_MM_CM_F16,          TERN_PIPE_MM_CM_BWD_F16,
	TERN_PIPE_MM_CM_BF16,         TERN_PIPE_MM_CM_BWD_BF16,
	TERN_PIPE_MM_CM_NF4,          TERN_PIPE_MM_CM_BWD_NF4,
	TERN_PIPE_MM_CM_NF4_DQ,       TERN_PIPE_MM_CM_BWD_NF4_DQ,
	TERN_PIPE_MM_CM_TERNARY,      TERN_PIPE_MM_CM_BWD_TERNARY,
	TERN_PIPE_ATTN_MMA_FWD_D64,   TERN_PIPE_ATTN_MMA_FWD_D128,
	TERN_PIPE_ATTN_MMA_PREP,      TERN_PIPE_ATTN_MMA_KV_D64,
	TERN_PIPE_ATTN_MMA_KV_D128,   TERN_PIPE_ATTN_MMA_Q_D64,
	TERN_PIPE_ATTN_MMA_Q_D128,    TERN_PIPE_ATTN_MMA_CAST,
	TERN_PIPE_ATTN_MMA_FWDF_D64,  TERN_PIPE_ATTN_MMA_FWDF_D128,
	TERN_PIPE_ATTN_MMA_KVF_D64,   TERN_PIPE_ATTN_MMA_KVF_D128,
	TERN_PIPE_ATTN_MMA_QF_D64,    TERN_PIPE_ATTN_MMA_QF_D128,
	TERN_PIPE_MM_CM_LORA_F32,     TERN_PIPE_MM_CM_LORA_BWD_F32,
	TERN_PIPE_MM_CM_LORA_F16,     TERN_PIPE_MM_CM_LORA_BWD_F16,
	TERN_PIPE_MM_CM_LORA_BF16,    TERN_PIPE_MM_CM_LORA_BWD_BF16,
	TERN_PIPE_MM_CM_LORA_NF4,     TERN_PIPE_MM_CM_LORA_BWD_NF4,
	TERN_PIPE_MM_CM_LORA_NF4_DQ,  TERN_PIPE_MM_CM_LORA_BWD_NF4_DQ,
	TERN_PIPE_MM_CM_LORA_TERNARY, TERN_PIPE_MM_CM_LORA_BWD_TERNARY,
	TERN_PIPE_ATTN_MMA_PROBE,
};

/* Half-precision products: shaderFloat16 lets the register-blocked f16 variants run; the
 * tensor-core variants also need VK_NV_cooperative_matrix with f16 x f16 -> f32 at 16x16x16 in
 * subgroup scope, subgroups of 32 with vote and shuffle, and the Vulkan memory model (their
 * SPIR-V declares it). TERN_VK_NO_FP16=1 / TERN_VK_NO_COOPMAT=1 turn them off (to measure the
 * fallbacks). Sets vk->fp16, vk->coopmat, vk->vote (subgroup vote in compute shaders, which the
 * fp32 attention's simple and register-blocked shaders use) and vk->sm_count. */
static void half_features(struct tern_vk *vk, const struct tern_device_info *info)
{
	bool ext = has_device_ext(vk->phys, "VK_NV_cooperative_matrix");
	VkPhysicalDeviceCooperativeMatrixFeaturesNV cmf = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV};
	VkPhysicalDeviceVulkan12Features q12 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES, .pNext = ext ? &cmf : NULL};
	VkPhysicalDeviceFeatures2 qf = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2, .pNext = &q12};
	tvk_vkGetPhysicalDeviceFeatures2(vk->phys, &qf);
	VkPhysicalDeviceSubgroupProperties sub = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES};
	VkPhysicalDeviceShaderSMBuiltinsPropertiesNV sm = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_SM_BUILTINS_PROPERTIES_NV, .pNext = &sub};
	bool sm_ext = has_device_ext(vk->phys, "VK_NV_shader_sm_builtins");
	VkPhysicalDeviceProperties2 p2 = {.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
					  .pNext = sm_ext ? (void *)&sm : (void *)&sub};
	tvk_vkGetPhysicalDeviceProperties2(vk->phys, &p2);
	vk->sm_count = sm_ext && sm.shaderSMCount ? sm.shaderSMCount : 64; /* a guess elsewhere */

	bool shape = false;
	if (ext && tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV) {
		uint32_t n = 0;
		tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(vk->phys, &n, NULL);
		VkCooperativeMatrixPropertiesNV *cm = calloc(n ? n : 1, sizeof *cm);
		if (cm) {
			for (uint32_t i = 0; i < n; i++)
				cm[i].sType = VK_STRUCTURE_TYPE_COOPERATIVE_MATRIX_PROPERTIES_NV;
			tvk_vkGetPhysicalDeviceCooperativeMatrixPropertiesNV(vk->phys, &n, cm);
			for (uint32_t i = 0; i < n; i++)
				shape |= cm[i].MSize == 16 && cm[i].NSize == 16 && cm[i].KSize == 16 &&
					 cm[i].AType == VK_COMPONENT_TYPE_FLOAT16_NV &&
					 cm[i].BType == VK_COMPONENT_TYPE_FLOAT16_NV &&
					 cm[i].CType == VK_COMPONENT_TYPE_FLOAT32_NV &&
					 cm[i].DType == VK_COMPONENT_TYPE_FLOAT32_NV &&
					 cm[i].scope == VK_SCOPE_SUBGROUP_NV;
			free(cm);
		}
	}
	VkSubgroupFeatureFlags need = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT |
				      VK_SUBGROUP_FEATURE_SHUFFLE_BIT;
	VkSubgroupFeatureFlags vote = VK_SUBGROUP_FEATURE_BASIC_BIT | VK_SUBGROUP_FEATURE_VOTE_BIT;
	vk->vote = (sub.supportedOperations & vote) == vote &&
		   (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT);
	vk->fp16 = q12.shaderFloat16 && !env_on("TERN_VK_NO_FP16");
	vk->coopmat = vk->fp16 && ext && cmf.cooperativeMatrix && shape && q12.vulkanMemoryModel &&
		      info->subgroup_size == 32 && (sub.supportedOperations & need) == need &&
		      (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) &&
		      tern_vk_built(nv_coopmat_pipes,
				    (int)(sizeof nv_coopmat_pipes / sizeof nv_coopmat_pipes[0])) &&
		      !env_on("TERN_VK_NO_COOPMAT");
}

/* The on-disk pipeline cache (vk_pcache.h): a valid file for this device and driver seeds the
 * VkPipelineCache; a missing, foreign or corrupt one is ignored (a -v note) and rewritten at exit. */
static enum tern_status pcache_open(struct tern_vk *vk)
{
	struct tern_vk_pcache_id *id = &vk->pcache_id;
	id->vendor = vk->props.vendorID;
	id->device = vk->props.deviceID;
	id->driver = vk->props.driverVersion;
	memcpy(id->uuid, vk->props.pipelineCacheUUID, 16);
	void *data = NULL;
	size_t n = 0;
	char *path = vk->base.pipeline_cache;
	if (!tern_vk_pcache_path(id, path, sizeof vk->base.pipeline_cache))
		path[0] = 0;
	else if (tern_vk_pcache_read(path, id, &data, &n) == TERN_OK) {
		vk->base.pipeline_cache_loaded = true;
		vk->pcache_n = n;
		vk->pcache_crc = tern_crc32c(0, data, n);
	} else
		tern_log(TERN_LOG_INFO, "vulkan: pipeline cache not used: %s", tern_error());
	VkPipelineCacheCreateInfo ci = {
		.sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
		.initialDataSize = n,
		.pInitialData = data,
	};
	enum tern_status st = tern_vk_check(tvk_vkCreatePipelineCache(vk->device, &ci, NULL, &vk->pcache),
					    "vkCreatePipelineCache");
	free(data);
	return st;
}

/* Saves the cache when this run created pipelines and the driver's data differ from what was
 * loaded (a failure is a -v note: the cache only saves time), then destroys it. */
static void pcache_close(struct tern_vk *vk)
{
	if (!vk->pcache)
		return;
	if (vk->pipes_created)
		tern_log(TERN_LOG_INFO, "vulkan: %d pipelines created in %.2f s (pipeline cache %s%s)",
			 vk->pipes_created, vk->pipe_s,
			 vk->base.pipeline_cache[0] ? vk->base.pipeline_cache : "off",
			 vk->base.pipeline_cache_loaded ? ", loaded" : "");
	size_t n = 0;
	void *data = NULL;
	if (vk->pipes_created && vk->base.pipeline_cache[0] &&
	    tvk_vkGetPipelineCacheData(vk->device, vk->pcache, &n, NULL) == VK_SUCCESS && n &&
	    (data = tern_malloc(n)) &&
	    tvk_vkGetPipelineCacheData(vk->device, vk->pcache, &n, data) == VK_SUCCESS &&
	    !(n == vk->pcache_n && tern_crc32c(0, data, n) == vk->pcache_crc) &&
	    tern_vk_pcache_write(vk->base.pipeline_cache, &vk->pcache_id, data, n) != TERN_OK)
		tern_log(TERN_LOG_INFO, "vulkan: pipeline cache not saved: %s", tern_error());
	free(data);
	tvk_vkDestroyPipelineCache(vk->device, vk->pcache, NULL);
	vk->pcache = VK_NULL_HANDLE;
}

void tern_vk_destroy(struct tern_backend *be)
{
	struct tern_vk *vk = tern_vk_of(be);
	if (!vk)
		return;
	if (vk->device) {
		tvk_vkDeviceWaitIdle(vk->device);
		pcache_close(vk);
		if (vk->profile) {
			for (int i = 0; i < TERN_PIPE_COUNT; i++)
				if (vk->pipes[i].calls)
					tern_log(TERN_LOG_INFO, "vulkan profile: %-16s %8llu calls %10.3f ms",
						 vk->pipes[i].spv->name,
						 (unsigned long long)vk->pipes[i].calls,
						 vk->pipes[i].ns * 1e-6);
		}
		tern_vk_buffer_free(be, vk->ce_scratch);
		tern_vk_buffer_free(be, vk->mm_part);
		tern_vk_buffer_free(be, vk->lr_cnt);
		tern_vk_buffer_free(be, vk->mm_x16);
		tern_vk_buffer_free(be, vk->mm_rmax);
		tern_vk_buffer_free(be, vk->mm_w16[0]);
		tern_vk_buffer_free(be, vk->mm_w16[1]);
		tern_vk_buffer_free(be, vk->attn_scr);
		tern_vk_buffer_free(be, vk->attn_h);
		tern_vk_buffer_free(be, vk->aux);
		tern_vk_stream_free(vk);
		tern_vk_dispatch_free(vk);
		tern_vk_memory_free(vk);
		tvk_vkDestroyDevice(vk->device, NULL);
	}
	if (vk->messenger)
		tvk_vkDestroyDebugUtilsMessengerEXT(vk->instance, vk->messenger, NULL);
	if (vk->instance)
		tvk_vkDestroyInstance(vk->instance, NULL);
	free(vk);
}

enum tern_status tern_vulkan_create(int device, struct tern_backend **out)
{
	*out = NULL;
	struct tern_vk *vk = tern_calloc(1, sizeof *vk);
	if (!vk)
		return TERN_E_NOMEM;
	vk->base.vt = &tern_vk_vtable;
	snprintf(vk->base.name, sizeof vk->base.name, "vulkan");
	vk->base.device_index = device;

	VkPhysicalDevice *pds = NULL;
	uint32_t n = 0;
	enum tern_status st = create_instance(vk, &vk->instance);
	if (st)
		goto fail;
	if ((st = physical_devices(vk->instance, &pds, &n)))
		goto fail;
	if (device < 0 || (uint32_t)device >= n) {
		st = tern_fail(TERN_E_INVALID,
			       "vulkan: device index %d out of range: %u device(s), 0..%u "
			       "(see `tern devices`)",
			       device, n, n - 1);
		goto fail;
	}
	vk->phys = pds[device];
	tvk_vkGetPhysicalDeviceProperties(vk->phys, &vk->props);
	tvk_vkGetPhysicalDeviceMemoryProperties(vk->phys, &vk->memprops);
	if (vk->props.apiVersion < VK_API_VERSION_1_2) {
		st = tern_fail(TERN_E_UNAVAILABLE,
			       "vulkan: device %d (%s) supports Vulkan %u.%u; tern needs 1.2", device,
			       vk->props.deviceName, VK_API_VERSION_MAJOR(vk->props.apiVersion),
			       VK_API_VERSION_MINOR(vk->props.apiVersion));
		goto fail;
	}
	struct tern_device_info info;
	describe(vk->phys, device, &info);
	vk->max_alloc = info.max_allocation ? info.max_allocation : (1ull << 30);
	vk->max_range = vk->props.limits.maxStorageBufferRange;
	vk->align = vk->props.limits.minStorageBufferOffsetAlignment;
	if (vk->align < 4)
		vk->align = 4;
	const char *lf = getenv("TERN_VK_LORA_FUSE"); /* read per call by vk_lora_fuses */
	if (lf && *lf && strcmp(lf, "0") && strcmp(lf, "1")) {
		st = tern_fail(TERN_E_INVALID,
			       "TERN_VK_LORA_FUSE=%s: use 1 (the LoRA updates inside the f16 products, "
			       "the default) or 0 (composed from gemms)",
			       lf);
		goto fail;
	}
	/* TERN_VK_MAX_RANGE=bytes (tests): a smaller maxStorageBufferRange than the device's, so that
	 * the ops' chunking (of W's rows, of tokens, of elements) runs at test sizes */
	const char *mr = getenv("TERN_VK_MAX_RANGE");
	if (mr && *mr) {
		char *end;
		unsigned long long v = strtoull(mr, &end, 10);
		if (*end || v < 4096) {
			st = tern_fail(TERN_E_INVALID, "TERN_VK_MAX_RANGE=%s: a number of bytes >= 4096", mr);
			goto fail;
		}
		if (v < vk->max_range)
			vk->max_range = (uint32_t)v;
	}
	vk->ts_period = vk->props.limits.timestampPeriod;
	snprintf(vk->base.device_name, sizeof vk->base.device_name, "%.180s (%.24s, %.30s)", info.name,
		 info.kind, info.api);

	queue_families(vk->phys, &vk->compute_family, &vk->transfer_family);
	if (vk->compute_family == UINT32_MAX) {
		st = tern_fail(TERN_E_UNAVAILABLE, "vulkan: device %d (%s) has no compute queue", device,
			       info.name);
		goto fail;
	}
	float prio = 1.0f;
	VkDeviceQueueCreateInfo qci = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
		.queueFamilyIndex = vk->compute_family,
		.queueCount = 1,
		.pQueuePriorities = &prio,
	};
	/* a dedicated transfer queue (DMA engine) when the device has one: streaming uses it */
	VkDeviceQueueCreateInfo qcis[2] = {qci, qci};
	qcis[1].queueFamilyIndex = vk->transfer_family;
	bool has_transfer = vk->transfer_family != UINT32_MAX;
	/* timeline semaphores order streaming copies against compute (TERN_VK_NO_TIMELINE=1 turns
	 * them off to exercise the synchronous fallback) */
	vk->timeline = info.timeline_semaphores;
	half_features(vk, &info);
	VkPhysicalDeviceCooperativeMatrixFeaturesNV cmf = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_COOPERATIVE_MATRIX_FEATURES_NV,
		.cooperativeMatrix = VK_TRUE,
	};
	/* TERN_VK_PIPELINE_STATS=1: what the driver says of each pipeline it compiles (registers,
	 * spills, ...), logged at info level (-v): the facts behind a shader's speed */
	const char *ps = getenv("TERN_VK_PIPELINE_STATS");
	vk->pstats =
		ps && !strcmp(ps, "1") && has_device_ext(vk->phys, "VK_KHR_pipeline_executable_properties");
	VkPhysicalDevicePipelineExecutablePropertiesFeaturesKHR pef = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PIPELINE_EXECUTABLE_PROPERTIES_FEATURES_KHR,
		.pNext = vk->coopmat ? &cmf : NULL,
		.pipelineExecutableInfo = VK_TRUE,
	};
	VkPhysicalDeviceVulkan12Features f12 = {
		.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES,
		.pNext = vk->pstats    ? (void *)&pef
			 : vk->coopmat ? (void *)&cmf
				       : NULL,
		.timelineSemaphore = vk->timeline,
		.shaderFloat16 = vk->fp16,
		.vulkanMemoryModel = vk->coopmat,
	};
	const char *dexts[3];
	uint32_t ndexts = 0;
	if (vk->pstats)
		dexts[ndexts++] = "VK_KHR_pipeline_executable_properties";
	vk->budget_ext = info.memory_budget;
	if (vk->budget_ext)
		dexts[ndexts++] = "VK_EXT_memory_budget";
	if (vk->coopmat)
		dexts[ndexts++] = "VK_NV_cooperative_matrix";
	VkDeviceCreateInfo dci = {
		.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
		.pNext = &f12,
		.queueCreateInfoCount = has_transfer ? 2 : 1,
		.pQueueCreateInfos = qcis,
		.enabledExtensionCount = ndexts,
		.ppEnabledExtensionNames = dexts,
	};
	if ((st = tern_vk_check(tvk_vkCreateDevice(vk->phys, &dci, NULL, &vk->device), "vkCreateDevice")))
		goto fail;
	tern_vk_load_device(vk->device);
	if (!(tvk_vkGetPipelineExecutablePropertiesKHR && tvk_vkGetPipelineExecutableStatisticsKHR))
		vk->pstats = false;
	if (ps && !strcmp(ps, "1") && !vk->pstats)
		tern_log(TERN_LOG_WARN,
			 "TERN_VK_PIPELINE_STATS=1: %s lacks VK_KHR_pipeline_executable_properties",
			 info.name);
	tvk_vkGetDeviceQueue(vk->device, vk->compute_family, 0, &vk->queue);
	if (has_transfer)
		tvk_vkGetDeviceQueue(vk->device, vk->transfer_family, 0, &vk->transfer_queue);
	/* buffers a transfer-queue copy writes are shared by both families (no ownership moves) */
	vk->families[0] = vk->compute_family;
	vk->nfamilies = 1;
	if (has_transfer && vk->timeline)
		vk->families[vk->nfamilies++] = vk->transfer_family;

	for (int i = 0; i < TERN_PIPE_COUNT; i++)
		vk->pipes[i].spv = &tern_spirv_table[i];
	vk->timestamps = info.timestamps;
	vk->profile = vk->profile_env = env_on("TERN_PROFILE") && info.timestamps;
	vk->prof_kind = TERN_PROF_COPIES; /* no op is open */
	vk->prof_op = -1;
	/* early submissions (vk_dispatch.c): TERN_VK_SUBMIT_EVERY dispatches, 0 = off; by default
	 * on GPUs only (a CPU-type device runs on the cores that record: nothing to overlap) */
	const char *se = getenv("TERN_VK_SUBMIT_EVERY");
	vk->submit_every = se && *se ? (uint32_t)strtoul(se, NULL, 10)
			   : vk->props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU ? 0
										 : TERN_VK_SUBMIT_EVERY;
	if (tern_decode_legacy())
		vk->submit_every = 0;
	/* deps or unset: a barrier only where a command depends on one before it (the default since
	 * the H200 timed it: 1.013x the 8B step, docs/PERFORMANCE.md); all: one before every command */
	const char *vb = getenv("TERN_VK_BARRIERS");
	if (vb && *vb && strcmp(vb, "all") && strcmp(vb, "deps")) {
		st = tern_fail(TERN_E_INVALID, "TERN_VK_BARRIERS=%s: must be deps or all (or unset: deps)",
			       vb);
		goto fail;
	}
	vk->all_barriers = vb && !strcmp(vb, "all");

	if ((st = pcache_open(vk)) || (st = tern_vk_memory_init(vk)) || (st = tern_vk_dispatch_init(vk)) ||
	    (st = tern_vk_stream_init(vk)))
		goto fail;
	free(pds);
	tern_log(TERN_LOG_INFO, "vulkan: device %d: %s", device, vk->base.device_name);
	*out = &vk->base;
	return TERN_OK;
fail:
	free(pds);
	{
		/* keep the first failure's message: teardown may overwrite it */
		char msg[1024];
		snprintf(msg, sizeof msg, "%s", tern_error());
		tern_vk_destroy(&vk->base);
		tern_fail(st, "%s", msg);
	}
	return st;
}
