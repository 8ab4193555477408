/* Unit tests for cf_watermark: the event-time clock C and watermark W of
 * SPEC section 1, with the wall clock passed in by the test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cf_time.h"
#include "cf_watermark.h"

static void none_before_anything_in_replay_mode(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 0);
    assert_non_null(w);
    assert_true(cf_watermark_current(w) == CF_TIME_NONE);
    assert_true(cf_watermark_clock(w, 1000000) == CF_TIME_NONE);
    assert_true(cf_watermark_advance(w, 1000000) == CF_TIME_NONE);
    assert_true(cf_watermark_max_ts(w) == CF_TIME_NONE);
    /* Even at extreme wall clocks. */
    assert_true(cf_watermark_advance(w, INT64_MAX) == CF_TIME_NONE);
    assert_true(cf_watermark_advance(w, INT64_MIN) == CF_TIME_NONE);
    cf_watermark_free(w);
    cf_watermark_free(NULL);
}

static void replay_mode_follows_max_ts(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 0);
    cf_watermark_observe(w, 100000);
    assert_true(cf_watermark_clock(w, 0) == 100000);
    assert_true(cf_watermark_advance(w, 999999999) == 95000); /* wall ignored */
    cf_watermark_observe(w, 90000);                          /* older: no change */
    assert_true(cf_watermark_max_ts(w) == 100000);
    assert_true(cf_watermark_advance(w, 0) == 95000);
    cf_watermark_observe(w, 100001);
    assert_true(cf_watermark_advance(w, 0) == 95001);
    assert_true(cf_watermark_current(w) == 95001);
    cf_watermark_free(w);
}

static void idle_timeout_term(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 10000);
    /* No events: C = wall - idle. */
    assert_true(cf_watermark_clock(w, 100000) == 90000);
    assert_true(cf_watermark_advance(w, 100000) == 85000);
    /* An event ahead of wall - idle wins. */
    cf_watermark_observe(w, 95000);
    assert_true(cf_watermark_clock(w, 100000) == 95000);
    assert_true(cf_watermark_advance(w, 100000) == 90000);
    /* Boundary: wall - idle == max_ts, then one past it. */
    assert_true(cf_watermark_clock(w, 105000) == 95000);
    assert_true(cf_watermark_clock(w, 105001) == 95001);
    assert_true(cf_watermark_advance(w, 105001) == 90001);
    cf_watermark_free(w);
}

static void never_moves_backwards(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(1000, 10000);
    assert_true(cf_watermark_advance(w, 1000000) == 989000);
    /* Wall clock jumps back: W stays, C follows the clock. */
    assert_true(cf_watermark_clock(w, 500000) == 490000);
    assert_true(cf_watermark_advance(w, 500000) == 989000);
    assert_true(cf_watermark_current(w) == 989000);
    assert_true(cf_watermark_advance(w, 1000001) == 989001);
    cf_watermark_free(w);
}

static void raise_lifts_never_lowers(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 0);
    cf_watermark_raise(w, 50000);
    assert_true(cf_watermark_current(w) == 50000);
    assert_true(cf_watermark_advance(w, 0) == 50000);
    cf_watermark_raise(w, 40000);
    assert_true(cf_watermark_current(w) == 50000);
    cf_watermark_observe(w, 54999);
    assert_true(cf_watermark_advance(w, 0) == 50000); /* 49999 < floor */
    cf_watermark_observe(w, 55001);
    assert_true(cf_watermark_advance(w, 0) == 50001);
    cf_watermark_raise(w, CF_TIME_NONE);
    assert_true(cf_watermark_current(w) == 50001);
    cf_watermark_free(w);
}

static void zero_out_of_orderness(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(0, 0);
    cf_watermark_observe(w, 7);
    assert_true(cf_watermark_advance(w, 0) == 7);
    cf_watermark_free(w);
}

static void extremes_do_not_overflow(void **state)
{
    (void)state;
    /* Run under UBSan: any signed overflow aborts. */
    cf_watermark *w = cf_watermark_new(INT64_MAX, INT64_MAX);
    assert_true(cf_watermark_clock(w, INT64_MIN) == CF_TIME_NONE);
    assert_true(cf_watermark_advance(w, INT64_MIN) == CF_TIME_NONE);
    assert_true(cf_watermark_clock(w, INT64_MAX) == 0);
    assert_true(cf_watermark_advance(w, INT64_MAX) == INT64_MIN + 1); /* 0 - INT64_MAX */
    cf_watermark_observe(w, INT64_MIN);
    assert_true(cf_watermark_clock(w, -1) == INT64_MIN);
    assert_true(cf_watermark_advance(w, -1) == INT64_MIN + 1);
    cf_watermark_observe(w, INT64_MAX);
    assert_true(cf_watermark_advance(w, 0) == 0);
    cf_watermark_free(w);

    w = cf_watermark_new(5, 1);
    assert_true(cf_watermark_clock(w, INT64_MIN + 1) == INT64_MIN);
    assert_true(cf_watermark_clock(w, INT64_MIN + 2) == INT64_MIN + 1);
    assert_true(cf_watermark_advance(w, INT64_MIN + 2) == CF_TIME_NONE);
    assert_true(cf_watermark_advance(w, INT64_MIN + 7) == INT64_MIN + 1);
    cf_watermark_observe(w, INT64_MAX);
    assert_true(cf_watermark_advance(w, INT64_MIN) == INT64_MAX - 5);
    cf_watermark_free(w);

    assert_null(cf_watermark_new(-1, 0));
    assert_null(cf_watermark_new(0, -1));
}

/* The per-event watermark: events imply max ts - out_of_orderness on top of
 * the last marker's W, and never the wall clock (idle timeout ignored), so
 * a replay of the log computes the same value. */
static void of_events_ignores_the_wall_clock(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 10000);
    assert_true(cf_watermark_of_events(w, CF_TIME_NONE) == CF_TIME_NONE);
    assert_true(cf_watermark_of_events(w, 42) == 42);
    cf_watermark_observe(w, 100000);
    assert_true(cf_watermark_of_events(w, CF_TIME_NONE) == 95000);
    assert_true(cf_watermark_of_events(w, 94999) == 95000);
    assert_true(cf_watermark_of_events(w, 95001) == 95001);  /* a raised floor wins */
    (void)cf_watermark_advance(w, 10000000);                 /* wall term: W far ahead */
    assert_true(cf_watermark_of_events(w, CF_TIME_NONE) == 95000);
    cf_watermark_observe(w, 90000);                          /* older: no change */
    assert_true(cf_watermark_of_events(w, CF_TIME_NONE) == 95000);
    cf_watermark_free(w);
    /* Saturates instead of overflowing (UBSan). */
    w = cf_watermark_new(INT64_MAX, 0);
    cf_watermark_observe(w, -1);
    assert_true(cf_watermark_of_events(w, CF_TIME_NONE) == CF_TIME_NONE);
    cf_watermark_free(w);
}

static void snapshot_restore(void **state)
{
    (void)state;
    cf_watermark *w = cf_watermark_new(5000, 0);
    cf_watermark_observe(w, 100000);
    cf_watermark_raise(w, 120000);
    int64_t max_ts = cf_watermark_max_ts(w), wm = cf_watermark_current(w);
    cf_watermark *r = cf_watermark_new(5000, 0);
    cf_watermark_restore(r, max_ts, wm);
    assert_true(cf_watermark_max_ts(r) == 100000);
    assert_true(cf_watermark_current(r) == 120000);
    assert_true(cf_watermark_advance(r, 0) == 120000);
    cf_watermark_observe(r, 130000);
    assert_true(cf_watermark_advance(r, 0) == 125000);
    cf_watermark_free(w);
    cf_watermark_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(none_before_anything_in_replay_mode),
        cmocka_unit_test(replay_mode_follows_max_ts),
        cmocka_unit_test(idle_timeout_term),
        cmocka_unit_test(never_moves_backwards),
        cmocka_unit_test(raise_lifts_never_lowers),
        cmocka_unit_test(zero_out_of_orderness),
        cmocka_unit_test(extremes_do_not_overflow),
        cmocka_unit_test(of_events_ignores_the_wall_clock),
        cmocka_unit_test(snapshot_restore),
    };
    return cmocka_run_group_tests_name("watermark", tests, NULL, NULL);
}
