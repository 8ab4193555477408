/* Unit tests for cf_keycap: the shared bound on keyed state. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cf_keycap.h"

static void unbounded_admits_everything(void **state)
{
    (void)state;
    cf_keycap c = cf_keycap_make(0);
    for (size_t k = 0; k < 100000; k += 997)
        assert_true(cf_keycap_admit(&c, k));
    assert_false(cf_keycap_full(&c, SIZE_MAX));
    assert_int_equal(c.refused, 0);
    assert_int_equal(c.evicted, 0);
}

static void refuses_and_counts_at_the_cap(void **state)
{
    (void)state;
    cf_keycap c = cf_keycap_make(3);
    assert_true(cf_keycap_admit(&c, 0));
    assert_true(cf_keycap_admit(&c, 2));
    assert_false(cf_keycap_full(&c, 2));
    assert_true(cf_keycap_full(&c, 3));
    assert_false(cf_keycap_admit(&c, 3));
    assert_false(cf_keycap_admit(&c, 4));   /* a loaded state may exceed a smaller cap */
    assert_int_equal(c.refused, 2);
    cf_keycap_evicted(&c, 5);
    cf_keycap_evicted(&c, 1);
    assert_int_equal(c.evicted, 6);
    assert_int_equal(c.refused, 2);
}

static void share_divides_the_total(void **state)
{
    (void)state;
    assert_int_equal(cf_keycap_share(10000, 4), 2500);
    assert_int_equal(cf_keycap_share(10001, 4), 2500);   /* the total is never exceeded */
    assert_int_equal(cf_keycap_share(10, 0), 10);
    assert_int_equal(cf_keycap_share(3, 8), 1);          /* every shard holds a key */
    assert_int_equal(cf_keycap_share(0, 8), 0);          /* no bound stays no bound */
    for (unsigned parts = 1; parts <= 64; parts++)
        assert_true(cf_keycap_share(1000, parts) * parts <= 1000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unbounded_admits_everything),
        cmocka_unit_test(refuses_and_counts_at_the_cap),
        cmocka_unit_test(share_divides_the_total),
    };
    return cmocka_run_group_tests_name("keycap", tests, NULL, NULL);
}
