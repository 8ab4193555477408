/* cf_siphash: SipHash-2-4 (Aumasson and Bernstein, 2012), a keyed 64-bit
 * PRF. Used where an attacker must not be able to predict or invert a hash
 * without the key (visitor ids, SPEC 15); cf_hash64 is the fast unkeyed one
 * for everything else. */
#ifndef CF_SIPHASH_H
#define CF_SIPHASH_H

#include <stddef.h>
#include <stdint.h>

#define CF_SIPHASH_KEY_LEN 16

/* SipHash-2-4 of n bytes at p under the 16-byte key k (read little-endian,
 * as in the reference implementation, so the paper's test vectors hold).
 * O(n), no allocation. */
uint64_t cf_siphash24(const uint8_t k[CF_SIPHASH_KEY_LEN], const void *p, size_t n);

#endif
