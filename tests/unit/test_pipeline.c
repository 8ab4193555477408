/* Unit tests for cf_pipeline: stage order, map/filter/flat-map semantics,
 * per-stage counters, fan-out limit, sink errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cf_pipeline.h"

typedef struct sink_log {
    int calls;
    int64_t ts[64];
    char page[64][16];
    int fail_from; /* fail calls with index >= this (0 = never) */
} sink_log;

static int sink(void *user, const cf_event *ev)
{
    sink_log *s = user;
    int idx = s->calls++;
    if (s->fail_from && idx + 1 >= s->fail_from)
        return -EIO;
    if (idx < 64) {
        s->ts[idx] = ev->ts;
        size_t n = ev->page_url_len < 15 ? ev->page_url_len : 15;
        memcpy(s->page[idx], ev->page_url, n);
        s->page[idx][n] = '\0';
    }
    return 0;
}

static cf_event mk(int64_t ts)
{
    cf_event ev = {.ts = ts, .user_id = "u", .user_id_len = 1, .page_url = "/a",
                   .page_url_len = 2};
    return ev;
}

static cf_stage_stats stats(cf_pipeline *p, size_t i)
{
    cf_stage_stats st;
    assert_int_equal(cf_pipeline_stats(p, i, &st), 0);
    return st;
}

static int add_ms(void *user, cf_event *ev)
{
    ev->ts += *(int64_t *)user;
    return 0;
}

static int times_ten(void *user, cf_event *ev)
{
    (void)user;
    ev->ts *= 10;
    return 0;
}

static int rename_page(void *user, cf_event *ev)
{
    ev->page_url = user;
    ev->page_url_len = strlen(user);
    return 0;
}

static int fail_odd(void *user, cf_event *ev)
{
    (void)user;
    return ev->ts % 2 ? -EBADMSG : 0;
}

static int keep_even(void *user, const cf_event *ev)
{
    (void)user;
    if (ev->ts < 0)
        return -EDOM;
    return ev->ts % 2 == 0;
}

/* Emits ts copies of the event (ts, ts+1, ...), fails if ts == 99 after
 * emitting two. */
static int explode(void *user, const cf_event *ev, cf_emitter *em)
{
    int *last_rc = user;
    cf_event e = *ev;
    int64_t n = ev->ts == 99 ? 2 : ev->ts;
    for (int64_t k = 0; k < n; k++) {
        e.ts = ev->ts + k;
        int rc = cf_emitter_emit(em, &e);
        if (last_rc)
            *last_rc = rc;
        if (rc < 0)
            return 0; /* stop quietly: the overflow itself is counted */
    }
    return ev->ts == 99 ? -EPROTO : 0;
}

static void empty_pipeline_reaches_sink(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_non_null(p);
    cf_event ev = mk(5);
    assert_int_equal(cf_pipeline_push(p, &ev), 1);
    assert_int_equal(log.calls, 1);
    assert_true(log.ts[0] == 5);
    assert_int_equal(cf_pipeline_stage_count(p), 0);
    cf_stage_stats st = stats(p, 0);
    assert_string_equal(st.name, "sink");
    assert_true(st.in == 1 && st.out == 1 && st.errors == 0);
    cf_pipeline_free(p);
    cf_pipeline_free(NULL);
}

static void maps_run_in_order_on_a_copy(void **state)
{
    (void)state;
    sink_log log = {0};
    int64_t delta = 1;
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_int_equal(cf_pipeline_add_map(p, "plus1", add_ms, &delta), 0);
    assert_int_equal(cf_pipeline_add_map(p, "x10", times_ten, NULL), 0);
    assert_int_equal(cf_pipeline_add_map(p, "rename", rename_page, "/b"), 0);
    cf_event ev = mk(4);
    assert_int_equal(cf_pipeline_push(p, &ev), 1);
    assert_true(log.ts[0] == 50); /* (4 + 1) * 10, not 4 * 10 + 1 */
    assert_string_equal(log.page[0], "/b");
    assert_true(ev.ts == 4);      /* the caller's event is not modified */
    assert_memory_equal(ev.page_url, "/a", 2);
    assert_int_equal(cf_pipeline_stage_count(p), 3);
    assert_string_equal(stats(p, 0).name, "plus1");
    assert_string_equal(stats(p, 2).name, "rename");
    cf_pipeline_free(p);
}

static void map_errors_are_counted(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_int_equal(cf_pipeline_add_map(p, "m", fail_odd, NULL), 0);
    for (int64_t ts = 0; ts < 5; ts++) {
        cf_event ev = mk(ts);
        assert_int_equal(cf_pipeline_push(p, &ev), ts % 2 ? 0 : 1);
    }
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 5 && st.out == 3 && st.errors == 2 && st.dropped == 0);
    assert_int_equal(st.last_error, -EBADMSG);
    assert_int_equal(log.calls, 3);
    assert_true(stats(p, 1).in == 3);
    cf_pipeline_free(p);
}

static void filter_keep_drop_error(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_int_equal(cf_pipeline_add_filter(p, "even", keep_even, NULL), 0);
    int64_t in[] = {0, 1, 2, -4, 3, 4};
    for (size_t i = 0; i < 6; i++) {
        cf_event ev = mk(in[i]);
        cf_pipeline_push(p, &ev);
    }
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 6);
    assert_true(st.out == 3);
    assert_true(st.dropped == 2);
    assert_true(st.errors == 1);
    assert_int_equal(st.last_error, -EDOM);
    assert_int_equal(log.calls, 3);
    assert_true(log.ts[0] == 0 && log.ts[1] == 2 && log.ts[2] == 4);
    cf_pipeline_free(p);
}

static void flat_map_zero_one_many(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_int_equal(cf_pipeline_add_flat_map(p, "fm", explode, NULL, 10), 0);
    cf_event ev = mk(0);
    assert_int_equal(cf_pipeline_push(p, &ev), 0);
    ev = mk(1);
    assert_int_equal(cf_pipeline_push(p, &ev), 1);
    ev = mk(3);
    assert_int_equal(cf_pipeline_push(p, &ev), 3);
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 3 && st.out == 4 && st.dropped == 1 && st.errors == 0);
    assert_int_equal(log.calls, 4);
    assert_true(log.ts[0] == 1 && log.ts[1] == 3 && log.ts[2] == 4 && log.ts[3] == 5);
    cf_pipeline_free(p);
}

static void flat_map_then_stages_each_output(void **state)
{
    (void)state;
    sink_log log = {0};
    int64_t delta = 100;
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    cf_pipeline_add_flat_map(p, "fm", explode, NULL, 10);
    cf_pipeline_add_filter(p, "even", keep_even, NULL);
    cf_pipeline_add_map(p, "plus100", add_ms, &delta);
    cf_event ev = mk(4); /* emits 4 5 6 7; keeps 4 6 */
    assert_int_equal(cf_pipeline_push(p, &ev), 2);
    assert_int_equal(log.calls, 2);
    assert_true(log.ts[0] == 104 && log.ts[1] == 106);
    assert_true(stats(p, 1).in == 4 && stats(p, 1).dropped == 2);
    assert_true(stats(p, 2).in == 2 && stats(p, 2).out == 2);
    cf_pipeline_free(p);
}

static void flat_map_error_after_emitting(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    cf_pipeline_add_flat_map(p, "fm", explode, NULL, 10);
    cf_event ev = mk(99);
    assert_int_equal(cf_pipeline_push(p, &ev), 2); /* what went out stays out */
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 1 && st.out == 2 && st.errors == 1 && st.dropped == 0);
    assert_int_equal(st.last_error, -EPROTO);
    cf_pipeline_free(p);
}

static void flat_map_fanout_limit(void **state)
{
    (void)state;
    sink_log log = {0};
    int last_rc = 0;
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    cf_pipeline_add_flat_map(p, "fm", explode, &last_rc, 3);
    cf_event ev = mk(3); /* exactly the limit */
    assert_int_equal(cf_pipeline_push(p, &ev), 3);
    assert_int_equal(last_rc, 0);
    assert_true(stats(p, 0).errors == 0);
    ev = mk(4); /* one over */
    assert_int_equal(cf_pipeline_push(p, &ev), 3);
    assert_int_equal(last_rc, -ENOSPC);
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 2 && st.out == 6 && st.errors == 1);
    assert_int_equal(st.last_error, -ENOSPC);
    assert_int_equal(log.calls, 6);
    cf_pipeline_free(p);
}

static void sink_errors_are_counted(void **state)
{
    (void)state;
    sink_log log = {.fail_from = 2};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    cf_pipeline_add_flat_map(p, "fm", explode, NULL, 10);
    cf_event ev = mk(3);
    assert_int_equal(cf_pipeline_push(p, &ev), 1);
    cf_stage_stats st = stats(p, 1);
    assert_true(st.in == 3 && st.out == 1 && st.errors == 2);
    assert_int_equal(st.last_error, -EIO);
    cf_pipeline_free(p);
}

static void build_limits_and_arguments(void **state)
{
    (void)state;
    sink_log log = {0};
    assert_null(cf_pipeline_new(NULL, NULL));
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    assert_int_equal(cf_pipeline_add_map(p, "x", NULL, NULL), -EINVAL);
    assert_int_equal(cf_pipeline_add_filter(p, "x", NULL, NULL), -EINVAL);
    assert_int_equal(cf_pipeline_add_flat_map(p, "x", NULL, NULL, 1), -EINVAL);
    assert_int_equal(cf_pipeline_add_flat_map(p, "x", explode, NULL, 0), -EINVAL);
    assert_int_equal(cf_pipeline_add_map(NULL, "x", times_ten, NULL), -EINVAL);
    int64_t one = 1;
    for (int i = 0; i < CF_PIPELINE_MAX_STAGES; i++)
        assert_int_equal(cf_pipeline_add_map(p, NULL, add_ms, &one), 0);
    assert_int_equal(cf_pipeline_add_map(p, NULL, add_ms, &one), -E2BIG);
    assert_int_equal(cf_pipeline_add_filter(p, NULL, keep_even, NULL), -E2BIG);
    assert_int_equal(cf_pipeline_stage_count(p), CF_PIPELINE_MAX_STAGES);
    cf_event ev = mk(0);
    assert_int_equal(cf_pipeline_push(p, &ev), 1);
    assert_true(log.ts[0] == CF_PIPELINE_MAX_STAGES);
    assert_int_equal(cf_pipeline_push(p, NULL), -EINVAL);
    assert_int_equal(cf_pipeline_push(NULL, &ev), -EINVAL);
    cf_stage_stats st;
    assert_int_equal(cf_pipeline_stats(p, CF_PIPELINE_MAX_STAGES, &st), 0);
    assert_string_equal(st.name, "sink");
    assert_int_equal(cf_pipeline_stats(p, CF_PIPELINE_MAX_STAGES + 1, &st), -ERANGE);
    cf_pipeline_free(p);
}

static void reset_stats_keeps_names(void **state)
{
    (void)state;
    sink_log log = {0};
    cf_pipeline *p = cf_pipeline_new(sink, &log);
    cf_pipeline_add_filter(p, "even", keep_even, NULL);
    cf_event ev = mk(1);
    cf_pipeline_push(p, &ev);
    ev = mk(2);
    cf_pipeline_push(p, &ev);
    assert_true(stats(p, 0).in == 2);
    cf_pipeline_reset_stats(p);
    cf_stage_stats st = stats(p, 0);
    assert_true(st.in == 0 && st.out == 0 && st.dropped == 0 && st.errors == 0);
    assert_string_equal(st.name, "even");
    assert_true(stats(p, 1).in == 0);
    assert_string_equal(stats(p, 1).name, "sink");
    cf_pipeline_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_pipeline_reaches_sink),
        cmocka_unit_test(maps_run_in_order_on_a_copy),
        cmocka_unit_test(map_errors_are_counted),
        cmocka_unit_test(filter_keep_drop_error),
        cmocka_unit_test(flat_map_zero_one_many),
        cmocka_unit_test(flat_map_then_stages_each_output),
        cmocka_unit_test(flat_map_error_after_emitting),
        cmocka_unit_test(flat_map_fanout_limit),
        cmocka_unit_test(sink_errors_are_counted),
        cmocka_unit_test(build_limits_and_arguments),
        cmocka_unit_test(reset_stats_keeps_names),
    };
    return cmocka_run_group_tests_name("pipeline", tests, NULL, NULL);
}
