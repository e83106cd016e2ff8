#ifndef GLOWRT_CRC32C_H
#define GLOWRT_CRC32C_H
#include <stddef.h>
#include <stdint.h>
/* CRC32C (Castagnoli), reflected; start with crc = 0, chain by passing the
 * previous result. crc32c_update(0, "123456789", 9) == 0xE3069283. */
uint32_t crc32c_update(uint32_t crc, const void *data, size_t n);
#endif
