/* Unit tests for sql_view's walks without a full sort (issue 15, S5):
 * on seeded random views of every shape (tumbling, hopping, session,
 * running), sql_view_walk_open emits exactly the rows of
 * sql_view_foreach_open (as a multiset), sql_view_foreach_open_first(limit)
 * exactly its first `limit` rows in its order, and sql_view_stats_get's
 * open/kept window counts match a model recomputed from the applied
 * events. (test_sql_view.c checks foreach_open itself, order included,
 * against a naive evaluator.) */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_time.h"
#include "sql_view.h"
#include "unit_util.h"

static uint64_t rng_state;

static uint64_t rng(void) { return uu_splitmix64(&rng_state); }

/* ---- rows as text lines ------------------------------------------------------------ */

/* a's first n lines equal b's first n, in order. */
static void assert_prefix_equal(const uu_lines *a, const uu_lines *b, size_t n)
{
    assert_true(a->n >= n && b->n >= n);
    for (size_t i = 0; i < n; i++)
        if (strcmp(a->s[i], b->s[i]) != 0) {
            print_error("line %zu differs:\n  got  %s\n  want %s\n", i, a->s[i], b->s[i]);
            fail();
        }
}

/* ---- random views ------------------------------------------------------------------- */

/* COUNT(*), SUM(n), MAX(n): a row's numbers tell whether the walk and the
 * sorted walk merged the same panes. */
static const sql_agg_spec aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_SUM, 0}, {SQL_AGG_MAX, 0}};

typedef struct applied {
    int64_t ts;
    int key;
} applied;

typedef struct rview {
    sql_view *v;
    applied *ev;        /* the events the view applied */
    size_t nev;
} rview;

static sql_view *new_view(sql_window_kind kind, int64_t size, int64_t adv, int64_t grace)
{
    sql_view_config c = {
        .nkeys = 1, .aggs = aggs, .naggs = 3, .window = kind, .size_ms = size,
        .advance_ms = adv, .gap_ms = kind == SQL_WINDOW_SESSION ? size : 0, .grace_ms = grace,
        .state_ttl_ms = kind == SQL_WINDOW_NONE ? size * 4 : 0, .hash_seed = rng(),
    };
    sql_view *v = sql_view_new(&c);
    assert_non_null(v);
    return v;
}

/* One event: keys drawn from nkeys (so that windows hold many groups and
 * a limit cuts through them), bounded disorder, a watermark that trails. */
static void feed(rview *r, size_t i, int nkeys, int64_t *max_ts, int64_t *wm)
{
    char k[16];
    int key = (int)(rng() % (uint64_t)nkeys);
    snprintf(k, sizeof k, "p%d", key);
    int64_t ts = 100000 + (int64_t)i * 7 - (int64_t)(rng() % 600);
    sql_value kv = sql_string(k, (uint32_t)strlen(k));
    sql_value args[3] = {sql_null(), sql_bigint((int64_t)(rng() % 50)),
                         sql_bigint((int64_t)(rng() % 50))};
    int rc = sql_view_apply(r->v, &kv, args, ts, i, *wm, NULL, NULL);
    assert_true(rc == SQL_VIEW_APPLIED || rc == SQL_VIEW_LATE);
    if (rc == SQL_VIEW_APPLIED)
        r->ev[r->nev++] = (applied){ts, key};
    if (ts > *max_ts)
        *max_ts = ts;
    int64_t cand = *max_ts - (int64_t)(rng() % 400);
    if (*wm == CF_TIME_NONE || cand > *wm)
        *wm = cand;
}

/* The walks agree with foreach_open on v as it is now. */
static void check_walks(const sql_view *v)
{
    uu_lines sorted = {0}, walked = {0};
    size_t n = sql_view_foreach_open(v, 0, uu_lines_add_view_row, &sorted);
    assert_int_equal(n, sorted.n);
    assert_int_equal(sql_view_walk_open(v, 0, uu_lines_add_view_row, &walked), n);
    assert_int_equal(walked.n, n);
    /* the same rows, whatever the order */
    uu_lines a = sorted;
    a.s = malloc((n ? n : 1) * sizeof *a.s);
    assert_non_null(a.s);
    memcpy(a.s, sorted.s, n * sizeof *a.s);
    qsort(a.s, n, sizeof *a.s, uu_cmp_str);
    qsort(walked.s, n, sizeof *walked.s, uu_cmp_str);
    assert_prefix_equal(&walked, &a, n);
    free(a.s);

    /* the first `limit` rows, in foreach_open's order */
    size_t limits[] = {0, 1, 2, 5, 17, n / 3, n / 2, n ? n - 1 : 0, n, n + 3, SIZE_MAX};
    for (size_t i = 0; i < sizeof limits / sizeof limits[0]; i++) {
        uu_lines first = {0};
        size_t want = limits[i] < n ? limits[i] : n;
        assert_int_equal(
            sql_view_foreach_open_first(v, 0, limits[i], uu_lines_add_view_row, &first), want);
        assert_int_equal(first.n, want);
        assert_prefix_equal(&first, &sorted, want);
        uu_lines_free(&first);
    }
    uu_lines_free(&sorted);
    uu_lines_free(&walked);
}

static int cmp_pair(const void *a, const void *b)
{
    const int64_t *x = a, *y = b;
    if (x[0] != y[0])
        return x[0] < y[0] ? -1 : 1;
    return (x[1] > y[1]) - (x[1] < y[1]);
}

/* Windowed views: stats' open and kept (window, group) pairs against the
 * pairs of the applied events whose windows are not purged yet. */
static void check_window_stats(const rview *r, int64_t size, int64_t adv, int64_t grace)
{
    int64_t w = sql_view_watermark(r->v);
    int64_t k = size / adv;
    int64_t(*pairs)[2] = malloc((r->nev * (size_t)k + 1) * sizeof *pairs);
    assert_non_null(pairs);
    size_t np = 0;
    for (size_t i = 0; i < r->nev; i++) {
        int64_t last = cf_floor_div(r->ev[i].ts, adv) * adv;
        for (int64_t g = last - size + adv; g <= last; g += adv) {
            if (w != CF_TIME_NONE && g + size - 1 + grace <= w)
                continue; /* purged */
            pairs[np][0] = g;
            pairs[np][1] = r->ev[i].key;
            np++;
        }
    }
    qsort(pairs, np, sizeof *pairs, cmp_pair);
    size_t open = 0, kept = 0;
    for (size_t i = 0; i < np; i++) {
        if (i && pairs[i][0] == pairs[i - 1][0] && pairs[i][1] == pairs[i - 1][1])
            continue;
        if (w != CF_TIME_NONE && pairs[i][0] + size - 1 <= w)
            kept++;
        else
            open++;
    }
    free(pairs);
    sql_view_stats st;
    sql_view_stats_get(r->v, &st);
    assert_int_equal(st.open, open);
    assert_int_equal(st.kept, kept);
}

static void run_shape(sql_window_kind kind, uint64_t seed, int64_t size, int64_t adv,
                      int64_t grace, int nkeys)
{
    rng_state = seed;
    size_t n = 900;
    rview r = {new_view(kind, size, adv, grace), calloc(n, sizeof(applied)), 0};
    assert_non_null(r.ev);
    int64_t max_ts = CF_TIME_NONE, wm = CF_TIME_NONE;
    size_t checked = 0;
    for (size_t i = 0; i < n; i++) {
        feed(&r, i, nkeys, &max_ts, &wm);
        if (i % 61 != 60)
            continue;
        check_walks(r.v);
        if (kind == SQL_WINDOW_TUMBLING || kind == SQL_WINDOW_HOPPING)
            check_window_stats(&r, size, adv, grace);
        sql_view_stats st;
        sql_view_stats_get(r.v, &st);
        uu_lines all = {0};
        assert_int_equal(sql_view_walk_open(r.v, 0, uu_lines_add_view_row, &all), st.open);
        checked += all.n;
        uu_lines_free(&all);
    }
    assert_true(checked > 100); /* the views did hold open rows */
    free(r.ev);
    sql_view_free(r.v);
}

static void test_walk_tumbling(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 6; seed++)
        run_shape(SQL_WINDOW_TUMBLING, seed, 1000, 1000, seed % 2 ? 0 : 1500, 40);
}

static void test_walk_hopping(void **state)
{
    (void)state;
    for (uint64_t seed = 11; seed <= 16; seed++)
        run_shape(SQL_WINDOW_HOPPING, seed, 3000, seed % 2 ? 1000 : 750, seed % 3 ? 800 : 0, 40);
}

static void test_walk_sessions(void **state)
{
    (void)state;
    for (uint64_t seed = 21; seed <= 26; seed++)
        run_shape(SQL_WINDOW_SESSION, seed, 150 + (int64_t)seed * 20, 0, seed % 2 ? 500 : 0,
                  30);
}

static void test_walk_running(void **state)
{
    (void)state;
    for (uint64_t seed = 31; seed <= 36; seed++)
        run_shape(SQL_WINDOW_NONE, seed, 400, 0, 0, 60);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_walk_tumbling),
        cmocka_unit_test(test_walk_hopping),
        cmocka_unit_test(test_walk_sessions),
        cmocka_unit_test(test_walk_running),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
