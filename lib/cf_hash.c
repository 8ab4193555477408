#include "cf_hash.h"

#include <stdbool.h>
#include <string.h>

/* A small multiply-xorshift hash in the style of wyhash/murmur finalizers:
 * 8 bytes a step, a strong avalanche at the end. Fast on short keys, which
 * is what user ids and URLs are. */

/* A little-endian word: one load (GCC did not always fuse the byte loop:
 * SipHash's key took 48 instructions to read). */
static inline uint64_t read64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
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
    const bool long_key = n >= 8;
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
    while (n >= 8) {
        h = (h ^ mix(read64(p) + 0xa0761d6478bd642fULL)) * 0xe7037ed1a0b428dbULL;
        h ^= h >> 29;
        p += 8;
        n -= 8;
    }
    if (n) {
        /* The last n bytes as a little-endian word. A key of 8 bytes or
         * more has them as the top of the 8 bytes ending at its end: one
         * read, not a loop a byte at a time (most URLs and ids end so);
         * the same value either way (test_hash: cf_hash64_tail_read). */
        uint64_t tail = 0;
        if (long_key) {
            tail = read64(p + n - 8) >> (8 * (8 - n));
        } else {
            for (size_t i = 0; i < n; i++)
                tail |= (uint64_t)p[i] << (8 * i);
        }
        h = (h ^ mix(tail + 0x8ebc6af09c88c6e3ULL)) * 0xe7037ed1a0b428dbULL;
    }
    return mix(h);
}

/* ---- SipHash, written from the paper (little-endian message words) ---- */

static inline uint64_t rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                               \
    do {                                                                       \
        v0 += v1; v1 = rotl(v1, 13); v1 ^= v0; v0 = rotl(v0, 32);              \
        v2 += v3; v3 = rotl(v3, 16); v3 ^= v2;                                 \
        v0 += v3; v3 = rotl(v3, 21); v3 ^= v0;                                 \
        v2 += v1; v1 = rotl(v1, 17); v1 ^= v2; v2 = rotl(v2, 32);              \
    } while (0)

/* The body with the round counts as arguments: inlined with constants for
 * SipHash-1-3 (the dedup store's hash of every event id, and of every id
 * its table moves when it doubles) and 2-4, so their rounds unroll (the
 * generic loops were 283 instructions per 15-byte id in lib_bench). */
static inline __attribute__((always_inline)) uint64_t
sip_body(const uint8_t key[16], const uint8_t *p, size_t n, int c_rounds, int d_rounds)
{
    uint64_t k0 = read64(key), k1 = read64(key + 8);
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0;
    uint64_t v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0;
    uint64_t v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)n << 56;
    const bool long_msg = n >= 8;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t m = read64(p);
        v3 ^= m;
        for (int i = 0; i < c_rounds; i++)
            SIPROUND;
        v0 ^= m;
    }
    /* The last n bytes as a little-endian word: for a message of 8 bytes
     * or more, the top of the 8 bytes ending at its end (one read, as in
     * cf_hash64); the same value as byte by byte (test_hash). */
    if (n && long_msg) {
        b |= read64(p + n - 8) >> (8 * (8 - n));
    } else {
        for (size_t i = 0; i < n; i++)
            b |= (uint64_t)p[i] << (8 * i);
    }
    v3 ^= b;
    for (int i = 0; i < c_rounds; i++)
        SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    for (int i = 0; i < d_rounds; i++)
        SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

uint64_t cf_siphash(const uint8_t key[16], const void *data, size_t n, int c_rounds,
                    int d_rounds)
{
    if (c_rounds == 1 && d_rounds == 3)
        return sip_body(key, data, n, 1, 3);
    if (c_rounds == 2 && d_rounds == 4)
        return sip_body(key, data, n, 2, 4);
    return sip_body(key, data, n, c_rounds, d_rounds);
}
