/* cf_hash: the one 64-bit hash used everywhere a key is hashed (shard
 * routing, hash maps, HyperLogLog, dedup). One function, so that a key lands
 * on the same shard and in the same HLL register in every module and after a
 * restart. Not cryptographic; seeded so tests can vary it. */
#ifndef CF_HASH_H
#define CF_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Hash of n bytes at p. Deterministic across runs and hosts (little-endian
 * reads, no per-process randomness). O(n). */
uint64_t cf_hash64(const void *p, size_t n, uint64_t seed);

/* SipHash (Aumasson and Bernstein, "SipHash: a fast short-input PRF",
 * 2012) of n bytes at p under a 16-byte secret key: a keyed hash for tables
 * whose keys come from clients, so colliding keys cannot be computed without
 * the key (hash flooding). c_rounds/d_rounds: 2/4 is the paper's SipHash-2-4,
 * 1/3 the faster SipHash-1-3 the tables use. O(n). */
uint64_t cf_siphash(const uint8_t key[16], const void *p, size_t n, int c_rounds, int d_rounds);

static inline uint64_t cf_siphash13(const uint8_t key[16], const void *p, size_t n)
{
    return cf_siphash(key, p, n, 1, 3);
}

/* Which of `n_shards` shards owns a key with hash h; uniform for any count. */
static inline uint32_t cf_hash_shard(uint64_t h, uint32_t n_shards)
{
    return (uint32_t)(((h >> 32) * (uint64_t)n_shards) >> 32);
}

/* Whether n bytes at a and b are equal: the hash tables' key check after a
 * hash match. Keys of 1-16 bytes (page URLs of lib_bench, user and event
 * ids) are compared inline with two overlapping loads per side instead of
 * a call to memcmp, which spilled the probe loop's registers around it
 * (memcmp was 2.7% of lib_bench's loop). Longer keys: memcmp. a and b may
 * be NULL when n is 0. */
static inline bool cf_hash_key_eq(const void *a, const void *b, size_t n)
{
    const unsigned char *x = a, *y = b;
    if (n >= 8 && n <= 16) {
        uint64_t x0, x1, y0, y1;
        memcpy(&x0, x, 8);
        memcpy(&y0, y, 8);
        memcpy(&x1, x + n - 8, 8);
        memcpy(&y1, y + n - 8, 8);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n >= 4 && n < 8) {
        uint32_t x0, x1, y0, y1;
        memcpy(&x0, x, 4);
        memcpy(&y0, y, 4);
        memcpy(&x1, x + n - 4, 4);
        memcpy(&y1, y + n - 4, 4);
        return ((x0 ^ y0) | (x1 ^ y1)) == 0;
    }
    if (n < 4) /* bytes 0, n / 2 and n - 1 cover n = 1..3 */
        return n == 0 || (x[0] == y[0] && x[n / 2] == y[n / 2] && x[n - 1] == y[n - 1]);
    return memcmp(a, b, n) == 0;
}

#endif
