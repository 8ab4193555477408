/* Unit tests for cf_iprate: the per-IP token bucket of SPEC 15 (--ip-rate):
 * a burst of one second's worth, refill over time, a Retry-After that is the
 * real wait, IPs independent, bounded memory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cf_iprate.h"

static int64_t take(cf_iprate *rl, const char *ip, size_t n, int64_t now)
{
    return cf_iprate_take(rl, ip, strlen(ip), n, now);
}

static void burst_then_refused_then_refilled(void **state)
{
    (void)state;
    cf_iprate *rl = cf_iprate_new(10, 100);
    assert_non_null(rl);
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(rl, "192.0.2.1", 1, 1000), 0);
    int64_t wait = take(rl, "192.0.2.1", 1, 1000);
    assert_int_equal(wait, 100);    /* one token at 10/s */
    /* Refused requests take nothing: the same wait, less the time passed. */
    assert_int_equal(take(rl, "192.0.2.1", 1, 1050), 50);
    assert_int_equal(take(rl, "192.0.2.1", 1, 1100), 0);
    assert_true(take(rl, "192.0.2.1", 1, 1100) > 0);
    /* A second later the bucket is full again, never fuller. */
    for (int i = 0; i < 10; i++)
        assert_int_equal(take(rl, "192.0.2.1", 1, 5000), 0);
    assert_true(take(rl, "192.0.2.1", 1, 5000) > 0);
    cf_iprate_free(rl);
}

static void ips_are_independent(void **state)
{
    (void)state;
    cf_iprate *rl = cf_iprate_new(5, 100);
    assert_int_equal(take(rl, "192.0.2.1", 5, 0), 0);
    assert_true(take(rl, "192.0.2.1", 1, 0) > 0);
    assert_int_equal(take(rl, "192.0.2.2", 5, 0), 0);
    assert_int_equal(take(rl, "2001:db8::1", 5, 0), 0);
    cf_iprate_free(rl);
}

static void request_above_burst_passes_once_then_waits_for_debt(void **state)
{
    (void)state;
    cf_iprate *rl = cf_iprate_new(100, 100);
    /* 250 events in one request: allowed from a full bucket, 150 in debt. */
    assert_int_equal(take(rl, "198.51.100.7", 250, 0), 0);
    /* Until the debt is paid and a token earned: 1.51 s at 100/s. */
    assert_int_equal(take(rl, "198.51.100.7", 1, 0), 1510);
    assert_true(take(rl, "198.51.100.7", 1, 1500) > 0);
    assert_int_equal(take(rl, "198.51.100.7", 1, 1510), 0);
    /* A second large request waits for a full bucket, not forever. */
    assert_true(take(rl, "198.51.100.7", 250, 1510) > 0);
    assert_int_equal(take(rl, "198.51.100.7", 250, 2520), 0);
    cf_iprate_free(rl);
}

static void memory_is_bounded_and_idle_ips_forgotten_harmlessly(void **state)
{
    (void)state;
    cf_iprate *rl = cf_iprate_new(2, 64);
    assert_int_equal(take(rl, "203.0.113.9", 2, 0), 0);
    assert_true(take(rl, "203.0.113.9", 1, 0) > 0);
    /* Many more IPs than slots, each seen later: the table keeps working and
     * every new IP gets its full burst. */
    char ip[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(ip, sizeof ip, "10.0.%d.%d", i / 256, i % 256);
        assert_int_equal(take(rl, ip, 2, 10 + i), 0);
    }
    /* The flooder, seen least recently, may have been forgotten: it is then
     * a full bucket again, which is what a second of idleness gives anyway. */
    assert_int_equal(take(rl, "203.0.113.9", 2, 6000), 0);
    cf_iprate_free(rl);
}

static void bad_arguments(void **state)
{
    (void)state;
    assert_null(cf_iprate_new(0, 10));
    assert_null(cf_iprate_new(-1, 10));
    cf_iprate_free(NULL);
    /* An empty or over-long key still works (cut, named). */
    cf_iprate *rl = cf_iprate_new(1, 10);
    assert_int_equal(cf_iprate_take(rl, "", 0, 1, 0), 0);
    assert_true(cf_iprate_take(rl, "", 0, 1, 0) > 0);
    char longkey[200];
    memset(longkey, 'a', sizeof longkey);
    assert_int_equal(cf_iprate_take(rl, longkey, sizeof longkey, 1, 0), 0);
    assert_true(cf_iprate_take(rl, longkey, sizeof longkey, 1, 0) > 0);
    cf_iprate_free(rl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(burst_then_refused_then_refilled),
        cmocka_unit_test(ips_are_independent),
        cmocka_unit_test(request_above_burst_passes_once_then_waits_for_debt),
        cmocka_unit_test(memory_is_bounded_and_idle_ips_forgotten_harmlessly),
        cmocka_unit_test(bad_arguments),
    };
    return cmocka_run_group_tests_name("iprate", tests, NULL, NULL);
}
