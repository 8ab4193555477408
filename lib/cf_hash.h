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

#endif
