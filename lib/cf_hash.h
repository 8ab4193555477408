/* cf_hash: the one 64-bit hash used everywhere a key is hashed (shard
 * routing, hash maps, HyperLogLog, dedup). One function, so that a key lands
 * on the same shard and in the same HLL register in every module and after a
 * restart. Not cryptographic; seeded so tests can vary it. */
#ifndef CF_HASH_H
#define CF_HASH_H

#include <stddef.h>
#include <stdint.h>

/* Hash of n bytes at p. Deterministic across runs and hosts (little-endian
 * reads, no per-process randomness). O(n). */
uint64_t cf_hash64(const void *p, size_t n, uint64_t seed);

/* Which of `n_shards` shards owns a key with hash h; uniform for any count. */
static inline uint32_t cf_hash_shard(uint64_t h, uint32_t n_shards)
{
    return (uint32_t)(((h >> 32) * (uint64_t)n_shards) >> 32);
}

#endif
