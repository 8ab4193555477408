/* Unit tests for cf_hash: SipHash against the paper's known answers, the
 * shard mapping, and cf_hash64's values pinned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cf_hash.h"

/* SipHash-2-4 test vectors (the paper's appendix A and the reference
 * implementation's vectors.h): key 00 01 .. 0f, message 00 01 .. (n-1). */
static void siphash24_known_answers(void **state)
{
    (void)state;
    uint8_t key[16], msg[64];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        msg[i] = (uint8_t)i;
    assert_true(cf_siphash(key, msg, 0, 2, 4) == 0x726fdb47dd0e0e31ULL);
    assert_true(cf_siphash(key, msg, 15, 2, 4) == 0xa129ca6149be45e5ULL);
}

/* SipHash-1-3 is the same construction with fewer rounds: keyed (another
 * key, another hash), and every input byte and the length matter. */
static void siphash13_keyed(void **state)
{
    (void)state;
    uint8_t k1[16] = {0}, k2[16] = {0};
    k2[15] = 1;
    const char *m = "event-id-0001";
    uint64_t h = cf_siphash13(k1, m, 13);
    assert_true(h != cf_siphash13(k2, m, 13));
    assert_true(h != cf_siphash(k1, m, 13, 2, 4));
    assert_true(h != cf_siphash13(k1, m, 12));
    assert_true(h != cf_siphash13(k1, "event-id-0002", 13));
    assert_true(h == cf_siphash13(k1, m, 13));
}

/* SipHash as the paper writes it (byte by byte, round counts in loops):
 * cf_siphash's unrolled 1-3 and 2-4 bodies and its one-read tail must give
 * its values for every length, tail size and alignment. */
static uint64_t ref_rotl(uint64_t x, int b)
{
    return (x << b) | (x >> (64 - b));
}

static uint64_t ref_siphash(const uint8_t key[16], const uint8_t *m, size_t n, int c, int d)
{
    uint64_t k0 = 0, k1 = 0;
    for (int i = 0; i < 8; i++) {
        k0 |= (uint64_t)key[i] << (8 * i);
        k1 |= (uint64_t)key[8 + i] << (8 * i);
    }
    uint64_t v[4] = {0x736f6d6570736575ULL ^ k0, 0x646f72616e646f6dULL ^ k1,
                     0x6c7967656e657261ULL ^ k0, 0x7465646279746573ULL ^ k1};
    size_t words = n / 8 + 1;
    for (size_t w = 0; w < words; w++) {
        uint64_t x = 0;
        for (size_t i = 0; i < 8; i++) {
            size_t at = w * 8 + i;
            if (at < n)
                x |= (uint64_t)m[at] << (8 * i);
        }
        if (w == words - 1)
            x |= (uint64_t)n << 56;
        v[3] ^= x;
        for (int r = 0; r < c; r++) {
            v[0] += v[1]; v[1] = ref_rotl(v[1], 13); v[1] ^= v[0]; v[0] = ref_rotl(v[0], 32);
            v[2] += v[3]; v[3] = ref_rotl(v[3], 16); v[3] ^= v[2];
            v[0] += v[3]; v[3] = ref_rotl(v[3], 21); v[3] ^= v[0];
            v[2] += v[1]; v[1] = ref_rotl(v[1], 17); v[1] ^= v[2]; v[2] = ref_rotl(v[2], 32);
        }
        v[0] ^= x;
    }
    v[2] ^= 0xff;
    for (int r = 0; r < d; r++) {
        v[0] += v[1]; v[1] = ref_rotl(v[1], 13); v[1] ^= v[0]; v[0] = ref_rotl(v[0], 32);
        v[2] += v[3]; v[3] = ref_rotl(v[3], 16); v[3] ^= v[2];
        v[0] += v[3]; v[3] = ref_rotl(v[3], 21); v[3] ^= v[0];
        v[2] += v[1]; v[1] = ref_rotl(v[1], 17); v[1] ^= v[2]; v[2] = ref_rotl(v[2], 32);
    }
    return v[0] ^ v[1] ^ v[2] ^ v[3];
}

static void siphash_matches_reference(void **state)
{
    (void)state;
    static const int rounds[][2] = {{1, 3}, {2, 4}, {1, 2}, {3, 5}};
    uint8_t key[16], buf[80];
    for (int i = 0; i < 16; i++)
        key[i] = (uint8_t)(0xa5 ^ (i * 29));
    for (int i = 0; i < 80; i++)
        buf[i] = (uint8_t)(i * 131 + 7);
    for (size_t r = 0; r < sizeof rounds / sizeof rounds[0]; r++)
        for (size_t off = 0; off < 8; off++)
            for (size_t n = 0; n <= 64; n++)
                assert_true(cf_siphash(key, buf + off, n, rounds[r][0], rounds[r][1]) ==
                            ref_siphash(key, buf + off, n, rounds[r][0], rounds[r][1]));
}

/* cf_hash64 is stable: routing, HLL registers and saved distinct sets
 * depend on its values, so these (message 01 08 0f .., seeds 0 and the
 * owner seed) must never change. */
static void cf_hash64_known_answers(void **state)
{
    (void)state;
    static const struct {
        size_t n;
        uint64_t h0, h1;
    } kat[] = {
        {0, 0x4e17cf67001b3979ULL, 0xe9df1ad9d633bae3ULL},
        {1, 0x0eac32d12944ba24ULL, 0x855588ffaecdedeeULL},
        {7, 0x57569423340f06bcULL, 0xbc998cd739bbacbbULL},
        {8, 0x51a979d19111d7f2ULL, 0x81ba153474138cd4ULL},
        {9, 0x4a5fdc93a7d83950ULL, 0x37c4dfbc1c941020ULL},
        {14, 0x6bdef2743cfe52f3ULL, 0x2316cbc67042ee8aULL},
        {15, 0x2b1b38510b30f56dULL, 0xff61379a5edacbaeULL},
        {16, 0xb0664905ec17da8dULL, 0x7ab5840596d3aaa3ULL},
        {17, 0xb9e572d652a75ee9ULL, 0x4a0372db4a4f621cULL},
        {36, 0x7d2384b123da75e0ULL, 0x44882a62676daacfULL},
    };
    uint8_t m[64];
    for (int i = 0; i < 64; i++)
        m[i] = (uint8_t)(i * 7 + 1);
    for (size_t k = 0; k < sizeof kat / sizeof kat[0]; k++) {
        assert_true(cf_hash64(m, kat[k].n, 0) == kat[k].h0);
        assert_true(cf_hash64(m, kat[k].n, 0x51574b4559ULL) == kat[k].h1);
    }
}

/* The hash as written first: the tail a byte at a time. */
static uint64_t ref_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ULL;
    x ^= x >> 32;
    return x;
}

static uint64_t ref_hash64(const uint8_t *p, size_t n, uint64_t seed)
{
    uint64_t h = seed ^ (0x9e3779b97f4a7c15ULL * (n + 1));
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w = 0;
        for (int i = 0; i < 8; i++)
            w |= (uint64_t)p[i] << (8 * i);
        h = (h ^ ref_mix(w + 0xa0761d6478bd642fULL)) * 0xe7037ed1a0b428dbULL;
        h ^= h >> 29;
    }
    if (n) {
        uint64_t tail = 0;
        for (size_t i = 0; i < n; i++)
            tail |= (uint64_t)p[i] << (8 * i);
        h = (h ^ ref_mix(tail + 0x8ebc6af09c88c6e3ULL)) * 0xe7037ed1a0b428dbULL;
    }
    return ref_mix(h);
}

/* The one-read tail gives the byte loop's value for every length and
 * alignment, with other bytes around the key (they must not leak in). */
static void cf_hash64_tail_read(void **state)
{
    (void)state;
    uint8_t buf[96];
    for (int i = 0; i < 96; i++)
        buf[i] = (uint8_t)(0xa5 ^ (i * 31));
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 48; n++)
            assert_true(cf_hash64(buf + off, n, 7) == ref_hash64(buf + off, n, 7));
}

/* cf_hash_key_eq agrees with memcmp for every length 0-40, every byte
 * position changed (its inline paths read overlapping words: a byte missed
 * by both would pass), and at every alignment. */
static void key_eq_matches_memcmp(void **state)
{
    (void)state;
    unsigned char a[64], b[64];
    for (int i = 0; i < 64; i++)
        a[i] = b[i] = (unsigned char)(i * 37 + 11);
    assert_true(cf_hash_key_eq(NULL, NULL, 0));
    for (size_t off = 0; off < 8; off++)
        for (size_t n = 0; n <= 40; n++) {
            assert_true(cf_hash_key_eq(a + off, b + off, n));
            for (size_t k = 0; k < n; k++) {
                b[off + k] ^= 0x40;
                assert_false(cf_hash_key_eq(a + off, b + off, n));
                b[off + k] ^= 0x40;
            }
            /* a byte just past the end does not count */
            b[off + n] ^= 0x40;
            assert_true(cf_hash_key_eq(a + off, b + off, n));
            b[off + n] ^= 0x40;
        }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(siphash24_known_answers),
        cmocka_unit_test(siphash13_keyed),
        cmocka_unit_test(siphash_matches_reference),
        cmocka_unit_test(cf_hash64_known_answers),
        cmocka_unit_test(cf_hash64_tail_read),
        cmocka_unit_test(key_eq_matches_memcmp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
