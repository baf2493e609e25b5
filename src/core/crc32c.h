/* CRC-32C (Castagnoli): TensorBoard's TFRecord framing and the Vulkan pipeline cache file. */
#ifndef TERN_CORE_CRC32C_H
#define TERN_CORE_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC-32C (reflected polynomial 0x82F63B78) of n bytes, continuing crc (start with 0):
 * tern_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t tern_crc32c(uint32_t crc, const void *data, size_t n);

#endif
