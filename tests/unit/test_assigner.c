/* Unit tests for cf_assigner: tumbling and sliding assignment (boundaries,
 * negative timestamps, overflow) and session merging. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cf_assigner.h"

static void tumbling_boundaries(void **state)
{
    (void)state;
    cf_interval w;
    assert_int_equal(cf_assign_tumbling(60000, 0, &w), 0);
    assert_true(w.start == 0 && w.end == 60000);
    assert_int_equal(cf_assign_tumbling(60000, 59999, &w), 0);
    assert_true(w.start == 0 && w.end == 60000);
    assert_int_equal(cf_assign_tumbling(60000, 60000, &w), 0);
    assert_true(w.start == 60000 && w.end == 120000);
    assert_int_equal(cf_assign_tumbling(60000, 1764000000123, &w), 0);
    assert_true(w.start == 1764000000000 && w.end == 1764000060000);
    assert_int_equal(cf_assign_tumbling(1, 5, &w), 0);
    assert_true(w.start == 5 && w.end == 6);
}

static void tumbling_negative_timestamps(void **state)
{
    (void)state;
    cf_interval w;
    assert_int_equal(cf_assign_tumbling(60000, -1, &w), 0);
    assert_true(w.start == -60000 && w.end == 0);
    assert_int_equal(cf_assign_tumbling(60000, -60000, &w), 0);
    assert_true(w.start == -60000 && w.end == 0);
    assert_int_equal(cf_assign_tumbling(60000, -60001, &w), 0);
    assert_true(w.start == -120000 && w.end == -60000);
}

static void tumbling_rejects_bad_size_and_overflow(void **state)
{
    (void)state;
    cf_interval w = {7, 8};
    assert_int_equal(cf_assign_tumbling(0, 5, &w), -EINVAL);
    assert_int_equal(cf_assign_tumbling(-5, 5, &w), -EINVAL);
    /* The window of INT64_MAX would end past INT64_MAX. */
    assert_int_equal(cf_assign_tumbling(60000, INT64_MAX, &w), -ERANGE);
    /* INT64_MIN is not a multiple of 60000: the start would underflow. */
    assert_int_equal(cf_assign_tumbling(60000, INT64_MIN, &w), -ERANGE);
    assert_true(w.start == 7 && w.end == 8); /* untouched */
    /* Size 1 fits everywhere but at INT64_MAX (end would be 2^63). */
    assert_int_equal(cf_assign_tumbling(1, INT64_MIN, &w), 0);
    assert_true(w.start == INT64_MIN && w.end == INT64_MIN + 1);
    assert_int_equal(cf_assign_tumbling(1, INT64_MAX - 1, &w), 0);
    assert_true(w.end == INT64_MAX);
}

static void sliding_validate(void **state)
{
    (void)state;
    assert_int_equal(cf_sliding_validate(300000, 60000), 0);
    assert_int_equal(cf_sliding_validate(60000, 60000), 0);
    assert_int_equal(cf_sliding_validate(300000, 70000), -EINVAL);
    assert_int_equal(cf_sliding_validate(0, 60000), -EINVAL);
    assert_int_equal(cf_sliding_validate(300000, 0), -EINVAL);
    assert_int_equal(cf_sliding_validate(300000, -60000), -EINVAL);
    assert_int_equal(cf_sliding_validate(60000, 300000), -EINVAL);
    assert_int_equal(cf_sliding_validate(CF_ASSIGNER_MAX_WINDOWS, 1), 0);
    assert_int_equal(cf_sliding_validate(CF_ASSIGNER_MAX_WINDOWS + 1, 1), -EINVAL);
}

static void sliding_assigns_every_window(void **state)
{
    (void)state;
    cf_interval w[8];
    /* 5m every 1m: ts = 10m exactly is in windows starting 6m..10m. */
    assert_int_equal(cf_assign_sliding(300000, 60000, 600000, w, 8), 5);
    for (int k = 0; k < 5; k++) {
        assert_true(w[k].start == 360000 + k * 60000);
        assert_true(w[k].end == w[k].start + 300000);
    }
    /* One ms earlier: windows starting 5m..9m. */
    assert_int_equal(cf_assign_sliding(300000, 60000, 599999, w, 8), 5);
    assert_true(w[0].start == 300000 && w[4].start == 540000);
    /* Negative ts. */
    assert_int_equal(cf_assign_sliding(300000, 60000, -1, w, 8), 5);
    assert_true(w[0].start == -300000 && w[4].start == -60000 && w[4].end == 240000);
    /* Brute force over a range: exactly the windows with start <= ts < end. */
    for (int64_t ts = -1000; ts <= 1000; ts++) {
        int n = cf_assign_sliding(30, 10, ts, w, 8);
        assert_int_equal(n, 3);
        int expect = 0;
        for (int64_t s = -1100; s <= 1100; s += 10)
            if (s <= ts && ts < s + 30) {
                assert_true(w[expect].start == s && w[expect].end == s + 30);
                expect++;
            }
        assert_int_equal(expect, 3);
    }
}

static void sliding_errors(void **state)
{
    (void)state;
    cf_interval w[8];
    assert_int_equal(cf_assign_sliding(300000, 60000, 0, w, 4), -EINVAL);
    assert_int_equal(cf_assign_sliding(300000, 70000, 0, w, 8), -EINVAL);
    assert_int_equal(cf_assign_sliding(300000, 60000, INT64_MAX, w, 8), -ERANGE);
    assert_int_equal(cf_assign_sliding(300000, 60000, INT64_MIN, w, 8), -ERANGE);
    /* The earliest window of INT64_MIN + 10 would start before INT64_MIN. */
    assert_int_equal(cf_assign_sliding(20, 10, INT64_MIN + 10, w, 8), -ERANGE);
    assert_int_equal(cf_assign_sliding(20, 10, INT64_MIN + 17, w, 8), -ERANGE);
    /* INT64_MIN + 8 is a multiple of 10, so INT64_MIN + 18 fits exactly. */
    assert_int_equal(cf_assign_sliding(20, 10, INT64_MIN + 18, w, 8), 2);
    assert_true(w[0].start == INT64_MIN + 8 && w[1].start == INT64_MIN + 18);
}

static void session_touching_and_bridging(void **state)
{
    (void)state;
    cf_interval s[8];
    size_t n = 0, at;
    int rc = cf_session_insert(s, n, 1000, 100, &at);
    assert_int_equal(rc, 1);
    n = 1;
    assert_true(at == 0 && s[0].start == 1000 && s[0].end == 1100);
    /* Exactly gap apart: touches, same session. */
    n = (size_t)cf_session_insert(s, n, 1100, 100, &at);
    assert_int_equal(n, 1);
    assert_true(s[0].start == 1000 && s[0].end == 1200);
    /* gap + 1 apart: a new session. */
    n = (size_t)cf_session_insert(s, n, 1301, 100, &at);
    assert_int_equal(n, 2);
    assert_true(at == 1 && s[1].start == 1301 && s[1].end == 1401);
    /* Out of order, before both, not touching. */
    n = (size_t)cf_session_insert(s, n, 800, 100, &at);
    assert_int_equal(n, 3);
    assert_true(at == 0 && s[0].start == 800 && s[0].end == 900);
    assert_true(s[1].start == 1000 && s[2].start == 1301);
    /* Inside an existing session: no change of count. */
    n = (size_t)cf_session_insert(s, n, 1050, 100, &at);
    assert_int_equal(n, 3);
    assert_true(at == 1 && s[1].start == 1000 && s[1].end == 1200);
    /* 1200 touches [1000,1200) only: [1200,1300) ends one ms before 1301. */
    n = (size_t)cf_session_insert(s, n, 1200, 100, &at);
    assert_int_equal(n, 3);
    assert_true(at == 1 && s[1].start == 1000 && s[1].end == 1300);
    /* 1300 touches [1000,1300) and overlaps [1301,1401): a bridge. */
    n = (size_t)cf_session_insert(s, n, 1300, 100, &at);
    assert_int_equal(n, 2);
    assert_true(at == 1 && s[1].start == 1000 && s[1].end == 1401);
    assert_true(s[0].start == 800 && s[0].end == 900);
    /* One event bridging three: [900,1000) touches both neighbours. */
    n = (size_t)cf_session_insert(s, n, 900, 100, &at);
    assert_int_equal(n, 1);
    assert_true(at == 0 && s[0].start == 800 && s[0].end == 1401);
}

static void session_gap_plus_one_does_not_bridge(void **state)
{
    (void)state;
    cf_interval s[4] = {{0, 10}, {21, 31}};
    size_t at;
    /* [10.5..) impossible in ms: event at 11 ends at 21 and touches the
     * second only; 0..10 ends at 10 < 11. */
    int n = cf_session_insert(s, 2, 11, 10, &at);
    assert_int_equal(n, 2);
    assert_true(s[0].start == 0 && s[0].end == 10);
    assert_true(s[1].start == 11 && s[1].end == 31 && at == 1);
    /* Event at 10 touches the first ([0,10) and [10,20)) and the second
     * session [11,31) overlaps [10,20): all merge. */
    n = cf_session_insert(s, 2, 10, 10, &at);
    assert_int_equal(n, 1);
    assert_true(s[0].start == 0 && s[0].end == 31);
}

static void session_errors(void **state)
{
    (void)state;
    cf_interval s[2];
    size_t at;
    assert_int_equal(cf_session_insert(s, 0, 0, 0, &at), -EINVAL);
    assert_int_equal(cf_session_insert(s, 0, INT64_MAX - 5, 10, &at), -ERANGE);
    assert_int_equal(cf_session_insert(s, 0, INT64_MAX - 10, 10, &at), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tumbling_boundaries),
        cmocka_unit_test(tumbling_negative_timestamps),
        cmocka_unit_test(tumbling_rejects_bad_size_and_overflow),
        cmocka_unit_test(sliding_validate),
        cmocka_unit_test(sliding_assigns_every_window),
        cmocka_unit_test(sliding_errors),
        cmocka_unit_test(session_touching_and_bridging),
        cmocka_unit_test(session_gap_plus_one_does_not_bridge),
        cmocka_unit_test(session_errors),
    };
    return cmocka_run_group_tests_name("assigner", tests, NULL, NULL);
}
