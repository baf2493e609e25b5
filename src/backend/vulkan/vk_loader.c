/* Loads libvulkan at run time (see vk.h for why). */
#include "backend/vulkan/vk.h"

#include <dlfcn.h>
#include <stddef.h>

#define TERN_VK_DEF(name) PFN_##name tvk_##name;
TERN_VK_FUNCS(TERN_VK_DEF)
TERN_VK_INSTANCE_FUNCS(TERN_VK_DEF)
TERN_VK_DEVICE_FUNCS(TERN_VK_DEF)
#undef TERN_VK_DEF

static PFN_vkGetInstanceProcAddr get_instance_proc;

enum tern_status tern_vk_load(void)
{
	static void *lib;
	if (get_instance_proc)
		return TERN_OK;
	lib = dlopen("libvulkan.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib)
		lib = dlopen("libvulkan.so", RTLD_NOW | RTLD_LOCAL);
	if (!lib)
		return tern_fail(TERN_E_UNAVAILABLE,
				 "vulkan: cannot load libvulkan.so.1 (install libvulkan1)");
	/* POSIX guarantees that a function pointer survives the trip through dlsym's void *. */
	*(void **)&get_instance_proc = dlsym(lib, "vkGetInstanceProcAddr");
	if (!get_instance_proc)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: libvulkan has no vkGetInstanceProcAddr");
#define TERN_VK_GET(name) tvk_##name = (PFN_##name)get_instance_proc(NULL, #name);
	TERN_VK_FUNCS(TERN_VK_GET)
#undef TERN_VK_GET
	if (!tvk_vkCreateInstance)
		return tern_fail(TERN_E_UNAVAILABLE, "vulkan: the loader exports no vkCreateInstance");
	return TERN_OK;
}

void tern_vk_load_instance(VkInstance inst)
{
#define TERN_VK_GET(name) tvk_##name = (PFN_##name)get_instance_proc(inst, #name);
	TERN_VK_INSTANCE_FUNCS(TERN_VK_GET)
#undef TERN_VK_GET
}

void tern_vk_load_device(VkDevice dev)
{
#define TERN_VK_GET(name) tvk_##name = (PFN_##name)tvk_vkGetDeviceProcAddr(dev, #name);
	TERN_VK_DEVICE_FUNCS(TERN_VK_GET)
#undef TERN_VK_GET
}
