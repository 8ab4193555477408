/* Unit tests for cf_buf (record building and bounds-checked reading) and
 * cf_hash (stable hashing and shard routing). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cf_buf.h"
#include "cf_hash.h"

static void roundtrip_all_types(void **state)
{
    (void)state;
    cf_buf b = {0};
    cf_buf_put_u8(&b, 0xab);
    cf_buf_put_u16(&b, 0xbeef);
    cf_buf_put_u32(&b, 0xdeadbeef);
    cf_buf_put_u64(&b, 0x0123456789abcdefULL);
    cf_buf_put_i64(&b, -42);
    cf_buf_put_f64(&b, 0.1);
    cf_buf_put_str(&b, "hello", 5);
    assert_false(b.oom);
    assert_int_equal(b.len, 1 + 2 + 4 + 8 + 8 + 8 + 4 + 5);

    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    uint8_t u8; uint16_t u16; uint32_t u32; uint64_t u64; int64_t i64; double f;
    const char *s; size_t n;
    assert_true(cf_get_u8(&r, &u8));
    assert_true(cf_get_u16(&r, &u16));
    assert_true(cf_get_u32(&r, &u32));
    assert_true(cf_get_u64(&r, &u64));
    assert_true(cf_get_i64(&r, &i64));
    assert_true(cf_get_f64(&r, &f));
    assert_true(cf_get_str(&r, &s, &n));
    assert_int_equal(u8, 0xab);
    assert_int_equal(u16, 0xbeef);
    assert_int_equal(u32, 0xdeadbeef);
    assert_true(u64 == 0x0123456789abcdefULL);
    assert_true(i64 == -42);
    assert_true(f == 0.1);
    assert_int_equal(n, 5);
    assert_memory_equal(s, "hello", 5);
    assert_int_equal(r.left, 0);
    assert_false(cf_get_u8(&r, &u8));
    assert_true(r.bad);
    cf_buf_free(&b);
    cf_buf_free(NULL);
}

static void reader_rejects_truncated_string(void **state)
{
    (void)state;
    cf_buf b = {0};
    cf_buf_put_str(&b, "abcdef", 6);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len - 1);
    const char *s; size_t n;
    assert_false(cf_get_str(&r, &s, &n));
    assert_true(r.bad);
    cf_buf_free(&b);
}

static void buf_grows_and_resets(void **state)
{
    (void)state;
    cf_buf b = {0};
    for (int i = 0; i < 10000; i++)
        cf_buf_put_u32(&b, (uint32_t)i);
    assert_int_equal(b.len, 40000);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    for (uint32_t i = 0; i < 10000; i++) {
        uint32_t v;
        assert_true(cf_get_u32(&r, &v));
        assert_int_equal(v, i);
    }
    cf_buf_reset(&b);
    assert_int_equal(b.len, 0);
    cf_buf_free(&b);
}

/* The inline puts (in place when the room is there, through the slow
 * path otherwise) write the same little-endian bytes whatever the room
 * left, and write nothing once the buffer is out of memory, even with room
 * (a record is checked once at its end). */
static void inline_puts_match_bytes_at_every_boundary(void **state)
{
    (void)state;
    for (size_t pre = 0; pre < 80; pre++) {
        cf_buf b = {0};
        for (size_t i = 0; i < pre; i++)
            cf_buf_put_u8(&b, (uint8_t)i);
        cf_buf_put_u16(&b, 0x0201);
        cf_buf_put_u32(&b, 0x06050403u);
        cf_buf_put_u64(&b, 0x0e0d0c0b0a090807ull);
        cf_buf_put_i64(&b, -2);
        cf_buf_put_str(&b, "abc", 3);
        static const uint8_t want[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
                                       0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       3, 0, 0, 0, 'a', 'b', 'c'};
        assert_false(b.oom);
        assert_int_equal(b.len, pre + sizeof want);
        for (size_t i = 0; i < pre; i++)
            assert_int_equal(b.data[i], (uint8_t)i);
        assert_memory_equal(b.data + pre, want, sizeof want);
        cf_buf_free(&b);
    }
    cf_buf b = {0};
    assert_int_equal(cf_buf_reserve(&b, 64), 0);
    b.oom = true;
    cf_buf_put_u64(&b, 1);
    cf_buf_put_u8(&b, 1);
    cf_buf_put_str(&b, "x", 1);
    assert_int_equal(b.len, 0);
    cf_buf_free(&b);
}

static void hash_is_stable_and_spreads(void **state)
{
    (void)state;
    /* Same input, same hash; seeds and lengths change it. */
    assert_true(cf_hash64("u42", 3, 0) == cf_hash64("u42", 3, 0));
    assert_true(cf_hash64("u42", 3, 0) != cf_hash64("u42", 3, 1));
    assert_true(cf_hash64("u42", 3, 0) != cf_hash64("u43", 3, 0));
    assert_true(cf_hash64("", 0, 0) != cf_hash64("\0", 1, 0));

    /* Shard routing is roughly uniform over 4 shards. */
    unsigned counts[4] = {0};
    char key[32];
    for (int i = 0; i < 40000; i++) {
        int n = snprintf(key, sizeof key, "/page/%d", i);
        uint32_t s = cf_hash_shard(cf_hash64(key, (size_t)n, 0), 4);
        assert_true(s < 4);
        counts[s]++;
    }
    for (int s = 0; s < 4; s++) {
        assert_true(counts[s] > 9000);
        assert_true(counts[s] < 11000);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(roundtrip_all_types),
        cmocka_unit_test(reader_rejects_truncated_string),
        cmocka_unit_test(buf_grows_and_resets),
        cmocka_unit_test(inline_puts_match_bytes_at_every_boundary),
        cmocka_unit_test(hash_is_stable_and_spreads),
    };
    return cmocka_run_group_tests_name("buf_hash", tests, NULL, NULL);
}
