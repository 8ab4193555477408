/* Unit tests for cf_siphash (the reference test vectors) and cf_visitor:
 * the derived user_id of SPEC 15 is stable within a UTC day and changes with
 * the salt, the day, the site, the IP and the User-Agent. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cf_siphash.h"
#include "cf_visitor.h"

static void siphash_reference_vectors(void **state)
{
    (void)state;
    /* From the SipHash paper's appendix and the reference vectors.h: key
     * 00..0f, messages 00..(n-1). */
    uint8_t k[16], m[64];
    for (int i = 0; i < 16; i++)
        k[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        m[i] = (uint8_t)i;
    assert_int_equal(cf_siphash24(k, m, 0), 0x726fdb47dd0e0e31ULL);
    assert_int_equal(cf_siphash24(k, m, 1), 0x74f839c593dc67fdULL);
    assert_int_equal(cf_siphash24(k, m, 8), 0x93f5f5799a932462ULL);
    assert_int_equal(cf_siphash24(k, m, 15), 0xa129ca6149be45e5ULL);
    assert_int_equal(cf_siphash24(k, m, 63), 0x958a324ceb064572ULL);
}

static void id(const uint8_t salt[16], const char *site, const char *ip, const char *ua, char out[18])
{
    cf_visitor_id(salt, site, strlen(site), ip, strlen(ip), ua, strlen(ua), out);
}

static void visitor_id_changes_with_salt_and_parts(void **state)
{
    (void)state;
    uint8_t secret[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
    const int64_t day = 86400000;
    const int64_t t = 20000 * day + 3600000;    /* 01:00 UTC of some day */
    uint8_t s1[16], s1b[16], s2[16], s0[16];
    cf_visitor_salt(secret, t, s1);
    cf_visitor_salt(secret, t - 3600000, s1b);      /* 00:00, same day */
    cf_visitor_salt(secret, t + day, s2);           /* the next day */
    cf_visitor_salt(secret, t - day, s0);
    assert_memory_equal(s1, s1b, 16);
    assert_memory_not_equal(s1, s2, 16);
    assert_memory_not_equal(s1, s0, 16);
    /* The day before midnight is another day (floor division, also < 1970). */
    uint8_t a[16], b[16];
    cf_visitor_salt(secret, 20000 * day - 1, a);
    assert_memory_equal(a, s0, 16);
    cf_visitor_salt(secret, -1, a);
    cf_visitor_salt(secret, -day, b);
    assert_memory_equal(a, b, 16);
    cf_visitor_salt(secret, 0, b);
    assert_memory_not_equal(a, b, 16);
    /* Another secret gives another salt for the same day. */
    uint8_t other[16] = {0};
    cf_visitor_salt(other, t, a);
    assert_memory_not_equal(a, s1, 16);

    char x[18], y[18];
    id(s1, "shop", "203.0.113.7", "Mozilla/5.0", x);
    assert_int_equal(strlen(x), CF_VISITOR_ID_LEN);
    assert_int_equal(x[0], 'v');
    for (int i = 1; i < CF_VISITOR_ID_LEN; i++)
        assert_non_null(strchr("0123456789abcdef", x[i]));
    id(s1b, "shop", "203.0.113.7", "Mozilla/5.0", y);
    assert_string_equal(x, y);                      /* same day, same visitor */
    id(s2, "shop", "203.0.113.7", "Mozilla/5.0", y);
    assert_string_not_equal(x, y);                  /* the salt changed */
    id(s1, "shop2", "203.0.113.7", "Mozilla/5.0", y);
    assert_string_not_equal(x, y);
    id(s1, "shop", "203.0.113.8", "Mozilla/5.0", y);
    assert_string_not_equal(x, y);
    id(s1, "shop", "203.0.113.7", "Mozilla/5.1", y);
    assert_string_not_equal(x, y);
    /* Parts are delimited: moving a byte across a boundary changes the id. */
    id(s1, "ab", "c", "", x);
    id(s1, "a", "bc", "", y);
    assert_string_not_equal(x, y);
    /* NULL parts with length 0 are empty strings. */
    cf_visitor_id(s1, NULL, 0, NULL, 0, NULL, 0, x);
    id(s1, "", "", "", y);
    assert_string_equal(x, y);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(siphash_reference_vectors),
        cmocka_unit_test(visitor_id_changes_with_salt_and_parts),
    };
    return cmocka_run_group_tests_name("visitor", tests, NULL, NULL);
}
