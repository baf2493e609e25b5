/* The embedded SPIR-V modules (generated into the build directory by cmake/shaders.cmake). */
#ifndef TERN_VK_SPIRV_H
#define TERN_VK_SPIRV_H

#include <stddef.h>
#include <stdint.h>

#include "spirv_pipes.h" /* enum tern_vk_pipe (generated): one value per variant, in table order */

struct tern_spirv {
	const char *name;
	const uint32_t *words; /* NULL for a variant not compiled in this build */
	size_t size;           /* bytes */
};

/* Indexed by enum tern_vk_pipe, terminated by an entry with name == NULL (the size makes the
 * compiler check that the generated table and enum agree). */
extern const struct tern_spirv tern_spirv_table[TERN_PIPE_COUNT + 1];

#endif
