/* CRC-32C, bit by bit (crc32c.h): the data are small (event records, a pipeline cache of a few
 * MB), and no table means no shared state. */
#include "core/crc32c.h"

uint32_t tern_crc32c(uint32_t crc, const void *data, size_t n)
{
	const uint8_t *p = data;
	crc = ~crc;
	for (size_t i = 0; i < n; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1)));
	}
	return ~crc;
}
