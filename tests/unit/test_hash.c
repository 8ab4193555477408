/* Unit tests for cf_hash: SipHash against the paper's known answers, and the
 * shard mapping. */
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(siphash24_known_answers),
        cmocka_unit_test(siphash13_keyed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
