/* Unit tests for park_gather: when the committer of parked requests
 * (--fsync always) starts its next round. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "park_gather.h"

/* A fresh committer, and one whose last round answered a single request
 * (one client), never wait: gathering must not add latency to a lone
 * client. */
static void lone_client_never_waits(void **state)
{
    (void)state;
    park_gather g = {0};
    assert_int_equal(park_gather_wait_ns(&g, 1, 0), 0);
    assert_int_equal(park_gather_want(&g), 0);
    park_gather_done(&g, 1, 0, 800000);
    assert_int_equal(park_gather_wait_ns(&g, 1, 0), 0);
    assert_int_equal(park_gather_want(&g), 0);
}

/* After a round that left 40 requests waiting (30 answered, 10 parked
 * during it), the committer waits for 40 parked, at most as long as the
 * last commit took; the 40th parker is the one that wakes it. */
static void waits_for_the_last_population(void **state)
{
    (void)state;
    park_gather g = {0};
    park_gather_done(&g, 30, 10, 700000);
    assert_int_equal(park_gather_want(&g), 40);
    assert_int_equal(park_gather_wait_ns(&g, 10, 0), 700000);
    assert_int_equal(park_gather_wait_ns(&g, 39, 200000), 500000);
    assert_int_equal(park_gather_wait_ns(&g, 40, 200000), 0);
    assert_int_equal(park_gather_wait_ns(&g, 64, 0), 0);
    /* The budget spent: start with whoever came. */
    assert_int_equal(park_gather_wait_ns(&g, 12, 700000), 0);
    assert_int_equal(park_gather_wait_ns(&g, 12, 900000), 0);
}

/* A slow fsync does not make the wait unbounded. */
static void wait_is_capped(void **state)
{
    (void)state;
    park_gather g = {0};
    park_gather_done(&g, 64, 0, 50 * 1000000LL);
    assert_int_equal(park_gather_wait_ns(&g, 1, 0), PARK_GATHER_MAX_NS);
    assert_int_equal(park_gather_wait_ns(&g, 1, PARK_GATHER_MAX_NS), 0);
}

/* Nothing parked: nothing to wait for (the committer sleeps elsewhere);
 * a clock step backwards (negative duration) counts as an instant commit. */
static void edges(void **state)
{
    (void)state;
    park_gather g = {0};
    park_gather_done(&g, 8, 0, -5);
    assert_int_equal(park_gather_wait_ns(&g, 0, 0), 0);
    assert_int_equal(park_gather_wait_ns(&g, 3, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(lone_client_never_waits),
        cmocka_unit_test(waits_for_the_last_population),
        cmocka_unit_test(wait_is_capped),
        cmocka_unit_test(edges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
