/* The embedded SPIR-V modules (generated into the build directory by cmake/shaders.cmake). */
#ifndef TERN_VK_SPIRV_H
#define TERN_VK_SPIRV_H

#include <stddef.h>
#include <stdint.h>

struct tern_spirv {
	const char *name;
	const uint32_t *words;
	size_t size; /* bytes */
};

/* Terminated by an entry with name == NULL. */
extern const struct tern_spirv tern_spirv_table[];

#endif
