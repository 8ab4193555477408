#include "cf_hash.h"

#include <string.h>

/* A small multiply-xorshift hash in the style of wyhash/murmur finalizers:
 * 8 bytes a step, a strong avalanche at the end. Fast on short keys, which
 * is what user ids and URLs are. */

static inline uint64_t read64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static inline uint64_t mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

uint64_t cf_hash64(const void *data, size_t n, uint64_t seed)
{
    const uint8_t *p = data;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
    while (n >= 8) {
        h = (h ^ mix(read64(p) + 0xa0761d6478bd642fULL)) * 0xe7037ed1a0b428dbULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        uint64_t tail = 0;
        for (size_t i = 0; i < n; i++)
            tail |= (uint64_t)p[i] << (8 * i);
        h = (h ^ mix(tail + 0x8ebc6af09c88c6e3ULL)) * 0xe7037ed1a0b428dbULL;
    }
    return mix(h);
}
