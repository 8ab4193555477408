/* crc32c: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum
 * of WAL records and snapshot files. Uses the SSE4.2 crc32 instruction when
 * the CPU has it, a slicing-by-8 table otherwise; both give the same value. */
#ifndef CF_CRC32C_H
#define CF_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* Extends crc (0 to start) over n bytes of p. Thread-safe, O(n).
 * cf_crc32c(0, "123456789", 9) == 0xE3069283. */
uint32_t cf_crc32c(uint32_t crc, const void *p, size_t n);

/* The portable table path alone (tests compare it with the hardware path). */
uint32_t cf_crc32c_sw(uint32_t crc, const void *p, size_t n);

#endif
