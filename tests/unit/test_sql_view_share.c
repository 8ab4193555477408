/* Unit tests for shared panes (sql_view_share, issue 15): on seeded random
 * traces, a pair of views sharing one pane store (an owner and a follower
 * of the same pane size: tumbling and hopping, or two hoppings) returns,
 * emits (firings, late re-firings with their revisions), lists and counts
 * exactly what the same two views do unshared, through late events past
 * either view's grace, watermarks moved through either view first, a
 * snapshot loaded across (shared blobs into unshared views and back), and
 * one of the pair freed while the other lives on. The open rows are also
 * checked against a brute-force model of the events each view took. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_buf.h"
#include "cf_time.h"
#include "sql_view.h"
#include "unit_util.h"

static uint64_t rng_state;

static uint64_t rng(void) { return uu_splitmix64(&rng_state); }

/* COUNT(*), SUM(n), COUNT(DISTINCT u): the numbers tell whether the
 * same panes were merged. */
static const sql_agg_spec aggs[] = {
    {SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_SUM, 0}, {SQL_AGG_COUNT_DISTINCT, 0}};
#define NAGGS 3
#define NKEYS 5

typedef struct ev {
    int64_t ts;
    int key;
    int64_t n;
} ev;

/* One view of the pair, shared (s) and alone (u), and the events it took. */
typedef struct side {
    sql_view_config cfg;
    sql_view *s, *u;
    uu_lines out_s, out_u;
    ev *took;
    size_t ntook;
} side;

/* The traces' i-th event: one of NKEYS keys (k) and of 40 users (u), at
 * i * 3 minus up to disorder; one in 25 goes back past some grace. */
static int64_t trace_event(size_t i, int64_t disorder, int *key, char k[8], char u[8])
{
    *key = (int)(rng() % NKEYS);
    snprintf(k, 8, "p%d", *key);
    snprintf(u, 8, "u%d", (int)(rng() % 40));
    int64_t ts = 1000 + (int64_t)i * 3 - (int64_t)(rng() % (uint64_t)disorder);
    if (rng() % 25 == 0)
        ts -= 300 + (int64_t)(rng() % 400);
    return ts;
}

/* The traces' watermark after an event at ts: the latest time so far
 * minus up to 119, never backwards. One event in 29 also moves it outside
 * an apply, through either view first (and the unshared copies, with_u). */
static int64_t next_watermark(int64_t wm, int64_t *max_ts, int64_t ts, side sd[2],
                              const bool alive[2], bool with_u)
{
    if (ts > *max_ts)
        *max_ts = ts;
    int64_t cand = *max_ts - (int64_t)(rng() % 120);
    if (wm == CF_TIME_NONE || cand > wm)
        wm = cand;
    if (rng() % 29 != 0)
        return wm;
    int64_t w2 = wm + (int64_t)(rng() % 60);
    int first = (int)(rng() % 2);
    for (int t = 0; t < 2; t++) {
        int j = t ? 1 - first : first;
        if (!alive[j])
            continue;
        sql_view_advance(sd[j].s, w2, uu_lines_add_view_row, &sd[j].out_s);
        if (with_u)
            sql_view_advance(sd[j].u, w2, uu_lines_add_view_row, &sd[j].out_u);
    }
    return w2;
}

static void lines_equal(const uu_lines *a, const uu_lines *b)
{
    size_t m = a->n < b->n ? a->n : b->n;
    for (size_t i = 0; i < m; i++)
        if (strcmp(a->s[i], b->s[i]) != 0) {
            for (size_t j = i > 6 ? i - 6 : 0; j < i + 6 && j < m; j++)
                print_error("%zu: %-40s | %s\n", j, a->s[j], b->s[j]);
            print_error("line %zu differs:\n  shared %s\n  alone  %s\n", i, a->s[i], b->s[i]);
            fail();
        }
    if (a->n != b->n) {
        print_error("%zu lines vs %zu; next: %s\n", a->n, b->n,
                    a->n > m ? a->s[m] : b->s[m]);
        fail();
    }
}

static sql_view_config random_cfg(int64_t pane, bool tumbling, uint64_t seed)
{
    int64_t k = tumbling ? 1 : 1 + (int64_t)(rng() % 5);
    int64_t graces[] = {0, pane / 2, pane * 3, 200};
    return (sql_view_config){
        .nkeys = 1, .aggs = aggs, .naggs = NAGGS,
        .window = tumbling ? SQL_WINDOW_TUMBLING : SQL_WINDOW_HOPPING,
        .size_ms = pane * k, .advance_ms = pane, .grace_ms = graces[rng() % 4],
        .hash_seed = seed,
    };
}

/* The open rows of a side's shared view against the events it took:
 * every (window, key) with events in an unfired window, and its COUNT(*)
 * and SUM. */
static void check_model(const side *sd)
{
    const sql_view *v = sd->s;
    int64_t w = sql_view_watermark(v), size = sd->cfg.size_ms, adv = sd->cfg.advance_ms;
    uu_lines got = {0}, want = {0};
    sql_view_foreach_open(v, 0, uu_lines_add_view_row, &got);
    /* Brute force: windows in start order, keys in order. */
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    for (size_t i = 0; i < sd->ntook; i++) {
        int64_t p = cf_floor_div(sd->took[i].ts, adv) * adv;
        lo = p - size + adv < lo ? p - size + adv : lo;
        hi = p > hi ? p : hi;
    }
    for (int64_t g = lo; sd->ntook && g <= hi; g += adv) {
        if (w != CF_TIME_NONE && g + size - 1 <= w)
            continue; /* fired */
        for (int k = 0; k < NKEYS; k++) {
            long long cnt = 0, sum = 0;
            for (size_t i = 0; i < sd->ntook; i++)
                if (sd->took[i].key == k && sd->took[i].ts >= g && sd->took[i].ts < g + size) {
                    cnt++;
                    sum += sd->took[i].n;
                }
            if (!cnt)
                continue;
            /* the distinct count is the exact one in sparse form: compare
             * it from the row the unshared view gives (checked equal) */
            char prefix[128];
            snprintf(prefix, sizeof prefix, "[%lld,%lld) r0 open 'p%d' %lld %lld ", (long long)g,
                     (long long)(g + size), k, cnt, sum);
            uu_lines_add(&want, prefix);
        }
    }
    assert_int_equal(got.n, want.n);
    for (size_t i = 0; i < got.n; i++)
        if (strncmp(got.s[i], want.s[i], strlen(want.s[i])) != 0) {
            print_error("open row %zu:\n  got   %s\n  model %s\n", i, got.s[i], want.s[i]);
            fail();
        }
    uu_lines_free(&got);
    uu_lines_free(&want);
}

/* The shared and the unshared view of a side agree now. */
static void check_side(side *sd)
{
    lines_equal(&sd->out_s, &sd->out_u);
    uu_lines a = {0}, b = {0};
    sql_view_foreach_open(sd->s, 0, uu_lines_add_view_row, &a);
    sql_view_foreach_open(sd->u, 0, uu_lines_add_view_row, &b);
    lines_equal(&a, &b);
    uu_lines_free(&a);
    uu_lines_free(&b);
    sql_view_stats x, y;
    sql_view_stats_get(sd->s, &x);
    sql_view_stats_get(sd->u, &y);
    assert_int_equal(x.open, y.open);
    assert_int_equal(x.kept, y.kept);
    assert_int_equal(x.applied, y.applied);
    assert_int_equal(x.late_dropped, y.late_dropped);
    assert_int_equal(x.late_updates, y.late_updates);
    check_model(sd);
}

static sql_view *reload(const sql_view_config *cfg, const sql_view *from, sql_view *into)
{
    cf_buf b = {0};
    assert_int_equal(sql_view_save(from, NULL, NULL, &b), 0);
    sql_view *v = into ? into : sql_view_new(cfg);
    assert_non_null(v);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_view_load(v, &r), 0);
    assert_int_equal(r.left, 0);
    cf_buf_free(&b);
    return v;
}

/* Snapshot across: the shared pair is rebuilt from the unshared views'
 * blobs, the unshared views from the shared pair's. */
static void snapshot_across(side sd[2])
{
    sql_view *s0 = sql_view_new(&sd[0].cfg), *s1 = sql_view_new(&sd[1].cfg);
    assert_non_null(s0);
    assert_non_null(s1);
    assert_int_equal(sql_view_share(s0, s1, uu_lines_add_view_row, &sd[1].out_s), 0);
    /* the follower's blob needs its owner's first */
    {
        cf_buf b = {0};
        assert_int_equal(sql_view_save(sd[1].u, NULL, NULL, &b), 0);
        cf_reader r;
        cf_reader_init(&r, b.data, b.len);
        if (sql_view_watermark(sd[1].u) != CF_TIME_NONE)
            assert_int_equal(sql_view_load(s1, &r), -EINVAL);
        cf_buf_free(&b);
    }
    reload(&sd[0].cfg, sd[0].u, s0);
    reload(&sd[1].cfg, sd[1].u, s1);
    sql_view *u0 = reload(&sd[0].cfg, sd[0].s, NULL);
    sql_view *u1 = reload(&sd[1].cfg, sd[1].s, NULL);
    sql_view_free(sd[1].s);
    sql_view_free(sd[0].s);
    sql_view_free(sd[0].u);
    sql_view_free(sd[1].u);
    sd[0].s = s0;
    sd[1].s = s1;
    sd[0].u = u0;
    sd[1].u = u1;
}

static void run_trace(uint64_t seed)
{
    rng_state = seed;
    int64_t pane = rng() % 2 ? 10 : 25;
    uint64_t hseed = rng();
    side sd[2];
    memset(sd, 0, sizeof sd);
    bool owner_tumbling = rng() % 2, follower_tumbling = !owner_tumbling && rng() % 3 == 0;
    sd[0].cfg = random_cfg(pane, owner_tumbling, hseed);
    sd[1].cfg = random_cfg(pane, follower_tumbling, hseed);
    assert_true(sql_view_can_share(&sd[0].cfg, &sd[1].cfg));
    if (getenv("SHARE_DEBUG"))
        fprintf(stderr, "owner %d size %lld grace %lld; follower %d size %lld grace %lld\n",
                sd[0].cfg.window, (long long)sd[0].cfg.size_ms, (long long)sd[0].cfg.grace_ms,
                sd[1].cfg.window, (long long)sd[1].cfg.size_ms, (long long)sd[1].cfg.grace_ms);
    size_t n = 700;
    for (int i = 0; i < 2; i++) {
        sd[i].s = sql_view_new(&sd[i].cfg);
        sd[i].u = sql_view_new(&sd[i].cfg);
        sd[i].took = calloc(n, sizeof(ev));
        assert_non_null(sd[i].s);
        assert_non_null(sd[i].u);
        assert_non_null(sd[i].took);
    }
    assert_int_equal(sql_view_share(sd[0].s, sd[1].s, uu_lines_add_view_row, &sd[1].out_s), 0);
    int64_t disorder = 1 + (int64_t)(rng() % 300), max_ts = CF_TIME_NONE, wm = CF_TIME_NONE;
    int drop = (int)(rng() % 3) - 1; /* -1: none; else the side freed at 3/4 */
    bool alive[2] = {true, true};
    for (size_t i = 0; i < n; i++) {
        int key;
        char k[8], u[8];
        int64_t ts = trace_event(i, disorder, &key, k, u);
        int64_t num = (int64_t)(rng() % 100);
        sql_value kv = sql_string(k, (uint32_t)strlen(k));
        sql_value args[NAGGS] = {sql_null(), sql_bigint(num), sql_string(u, (uint32_t)strlen(u))};
        for (int j = 0; j < 2; j++) {
            if (!alive[j])
                continue;
            int rs = sql_view_apply(sd[j].s, &kv, args, ts, i, wm,
                                    uu_lines_add_view_row, &sd[j].out_s);
            int ru = sql_view_apply(sd[j].u, &kv, args, ts, i, wm,
                                    uu_lines_add_view_row, &sd[j].out_u);
            assert_int_equal(rs, ru);
            assert_true(ru == SQL_VIEW_APPLIED || ru == SQL_VIEW_LATE);
            if (ru == SQL_VIEW_APPLIED)
                sd[j].took[sd[j].ntook++] = (ev){ts, key, num};
        }
        wm = next_watermark(wm, &max_ts, ts, sd, alive, true);
        if (i % 50 == 49)
            for (int j = 0; j < 2; j++)
                if (alive[j])
                    check_side(&sd[j]);
        if (i == n / 2)
            snapshot_across(sd);
        if (drop >= 0 && i == 3 * n / 4) {
            sql_view_free(sd[drop].s);
            sql_view_free(sd[drop].u);
            sd[drop].s = sd[drop].u = NULL;
            alive[drop] = false;
        }
    }
    for (int j = 0; j < 2; j++) {
        if (alive[j]) {
            sql_view_advance(sd[j].s, INT64_MAX - 1, uu_lines_add_view_row, &sd[j].out_s);
            sql_view_advance(sd[j].u, INT64_MAX - 1, uu_lines_add_view_row, &sd[j].out_u);
            check_side(&sd[j]);
        }
        sql_view_free(sd[j].s);
        sql_view_free(sd[j].u);
        uu_lines_free(&sd[j].out_s);
        uu_lines_free(&sd[j].out_u);
        free(sd[j].took);
    }
}

/* The one-key-budget rule of a capped shared pair (docs/DESIGN.md): a
 * key is live while either view keeps one of its data panes (a pane p
 * goes when both views are past grace for it); a new key's event is
 * refused by every view that would take it once `cap` keys are live. */
static bool model_past_grace(const sql_view_config *c, int64_t wm, int64_t p)
{
    return wm != CF_TIME_NONE && wm >= p + c->size_ms - 1 + c->grace_ms;
}

static size_t model_live(const side sd[2], int64_t wm, bool live[NKEYS])
{
    size_t n = 0;
    for (int k = 0; k < NKEYS; k++) {
        live[k] = false;
        for (int j = 0; j < 2 && !live[k]; j++)
            for (size_t i = 0; i < sd[j].ntook && !live[k]; i++) {
                if (sd[j].took[i].key != k)
                    continue;
                int64_t adv = sd[j].cfg.advance_ms;
                int64_t p = cf_floor_div(sd[j].took[i].ts, adv) * adv;
                live[k] = !model_past_grace(&sd[0].cfg, wm, p) ||
                          !model_past_grace(&sd[1].cfg, wm, p);
            }
        n += live[k];
    }
    return n;
}

/* A shared pair with max_keys against the model: every apply's result
 * for both views, the refusal counts, the store's group count and each
 * view's open rows; across a reload of the pair from its own blobs. */
static uint64_t run_capped_trace(uint64_t seed)
{
    rng_state = seed;
    int64_t pane = rng() % 2 ? 10 : 25;
    uint64_t hseed = rng();
    uint32_t cap = 1 + (uint32_t)(rng() % 3);
    side sd[2];
    memset(sd, 0, sizeof sd);
    bool owner_tumbling = rng() % 2, follower_tumbling = !owner_tumbling && rng() % 3 == 0;
    sd[0].cfg = random_cfg(pane, owner_tumbling, hseed);
    sd[1].cfg = random_cfg(pane, follower_tumbling, hseed);
    sd[0].cfg.max_keys = sd[1].cfg.max_keys = cap;
    assert_true(sql_view_can_share(&sd[0].cfg, &sd[1].cfg));
    size_t n = 600;
    for (int i = 0; i < 2; i++) {
        sd[i].s = sql_view_new(&sd[i].cfg);
        sd[i].took = calloc(n, sizeof(ev));
        assert_non_null(sd[i].s);
        assert_non_null(sd[i].took);
    }
    assert_int_equal(sql_view_share(sd[0].s, sd[1].s, uu_lines_add_view_row, &sd[1].out_s), 0);
    int64_t disorder = 1 + (int64_t)(rng() % 300), max_ts = CF_TIME_NONE, wm = CF_TIME_NONE;
    uint64_t refused[2] = {0, 0}, nrefused = 0;
    for (size_t i = 0; i < n; i++) {
        int key;
        char k[8], u[8];
        int64_t ts = trace_event(i, disorder, &key, k, u);
        int64_t num = (int64_t)(rng() % 100);
        sql_value kv = sql_string(k, (uint32_t)strlen(k));
        sql_value args[NAGGS] = {sql_null(), sql_bigint(num), sql_string(u, (uint32_t)strlen(u))};
        /* the model's answer, from the state before the event */
        bool live[NKEYS];
        size_t nlive = model_live(sd, wm, live);
        int want[2];
        for (int j = 0; j < 2; j++) {
            int64_t adv = sd[j].cfg.advance_ms, p = cf_floor_div(ts, adv) * adv;
            if (model_past_grace(&sd[j].cfg, wm, p))
                want[j] = SQL_VIEW_LATE;
            else if (!live[key] && nlive >= cap)
                want[j] = SQL_VIEW_REFUSED;
            else
                want[j] = SQL_VIEW_APPLIED;
        }
        for (int j = 0; j < 2; j++) {
            int rs = sql_view_apply(sd[j].s, &kv, args, ts, i, wm,
                                    uu_lines_add_view_row, &sd[j].out_s);
            assert_int_equal(rs, want[j]);
            if (rs == SQL_VIEW_APPLIED)
                sd[j].took[sd[j].ntook++] = (ev){ts, key, num};
            if (rs == SQL_VIEW_REFUSED)
                refused[j]++;
        }
        nrefused += want[0] == SQL_VIEW_REFUSED || want[1] == SQL_VIEW_REFUSED;
        wm = next_watermark(wm, &max_ts, ts, sd, (const bool[2]){true, true}, false);
        if (i % 50 == 49) {
            for (int j = 0; j < 2; j++) {
                sql_view_stats c;
                sql_view_counters(sd[j].s, &c);
                assert_int_equal(c.refusals, refused[j]);
                /* the store's groups: the live keys (the watermark the
                 * views were last moved to) */
                bool l2[NKEYS];
                assert_int_equal(c.groups, model_live(sd, sql_view_watermark(sd[0].s), l2));
                check_model(&sd[j]);
            }
        }
        if (i == n / 2) {
            /* a restart: the pair reloaded from its own blobs, owner first */
            sql_view *s0 = sql_view_new(&sd[0].cfg), *s1 = sql_view_new(&sd[1].cfg);
            assert_non_null(s0);
            assert_non_null(s1);
            assert_int_equal(sql_view_share(s0, s1, uu_lines_add_view_row, &sd[1].out_s), 0);
            reload(&sd[0].cfg, sd[0].s, s0);
            reload(&sd[1].cfg, sd[1].s, s1);
            assert_true(sql_view_share_covers(s1));
            sql_view_free(sd[1].s);
            sql_view_free(sd[0].s);
            sd[0].s = s0;
            sd[1].s = s1;
            refused[0] = refused[1] = 0; /* counters are not state */
        }
    }
    for (int j = 0; j < 2; j++) {
        sql_view_free(sd[j].s);
        uu_lines_free(&sd[j].out_s);
        free(sd[j].took);
    }
    return nrefused;
}

static void test_capped_traces(void **state)
{
    (void)state;
    uint64_t refused = 0;
    for (uint64_t seed = 1; seed <= 60; seed++)
        refused += run_capped_trace(seed * 0x2545f4914f6cdd1dULL);
    assert_true(refused > 100); /* the traces reach the bound */
}

/* Blobs saved by an unshared pair that took different keys (at a key
 * bound) load into a shared pair without error, but the follower would
 * read the owner's pane of a key it never took: sql_view_share_covers
 * says so. */
static void test_covers_tells_disagreeing_blobs(void **state)
{
    (void)state;
    sql_view_config t = {.nkeys = 1, .aggs = aggs, .naggs = NAGGS,
                         .window = SQL_WINDOW_TUMBLING, .size_ms = 60, .advance_ms = 60,
                         .grace_ms = 60, .max_keys = 2};
    sql_view_config h = t;
    h.window = SQL_WINDOW_HOPPING;
    h.size_ms = 300;
    for (int differ = 0; differ < 2; differ++) {
        sql_view *ut = sql_view_new(&t), *uh = sql_view_new(&h);
        assert_non_null(ut);
        assert_non_null(uh);
        sql_value args[NAGGS] = {sql_null(), sql_bigint(1), sql_string("u", 1)};
        sql_value a = sql_string("a", 1), b = sql_string("b", 1);
        assert_int_equal(sql_view_apply(ut, &a, args, 5, 1, 0, NULL, NULL), SQL_VIEW_APPLIED);
        assert_int_equal(sql_view_apply(uh, &a, args, 5, 1, 0, NULL, NULL), SQL_VIEW_APPLIED);
        if (differ) /* the tumbling view alone took b */
            assert_int_equal(sql_view_apply(ut, &b, args, 6, 2, 0, NULL, NULL),
                             SQL_VIEW_APPLIED);
        sql_view *st = sql_view_new(&t), *sh = sql_view_new(&h);
        assert_non_null(st);
        assert_non_null(sh);
        assert_int_equal(sql_view_share(st, sh, NULL, NULL), 0);
        reload(&t, ut, st);
        reload(&h, uh, sh);
        assert_int_equal(sql_view_share_covers(sh), !differ);
        assert_true(sql_view_share_covers(st)); /* an owner: nothing to cover */
        sql_view_free(sh);
        sql_view_free(st);
        sql_view_free(ut);
        sql_view_free(uh);
    }
}

static void test_random_traces(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 60; seed++)
        run_trace(seed * 0x9e3779b97f4a7c15ULL);
}

static void test_who_may_share(void **state)
{
    (void)state;
    sql_view_config t = {.nkeys = 1, .aggs = aggs, .naggs = NAGGS,
                         .window = SQL_WINDOW_TUMBLING, .size_ms = 60};
    sql_view_config h = t;
    h.window = SQL_WINDOW_HOPPING;
    h.size_ms = 300;
    h.advance_ms = 60;
    assert_true(sql_view_can_share(&t, &h));
    sql_view_config x = h;
    x.advance_ms = 30; /* another grid */
    assert_false(sql_view_can_share(&t, &x));
    x = h;
    x.naggs = 2;
    assert_false(sql_view_can_share(&t, &x));
    x = h;
    x.max_keys = 10; /* one key budget for the pair: the same bound */
    assert_false(sql_view_can_share(&t, &x));
    sql_view_config tc = t;
    tc.max_keys = 10;
    assert_true(sql_view_can_share(&tc, &x));
    x = h;
    x.hash_seed = 1;
    assert_false(sql_view_can_share(&t, &x));
    x = h;
    x.window = SQL_WINDOW_SESSION;
    x.gap_ms = 10;
    assert_false(sql_view_can_share(&t, &x));

    /* only empty views, each sharing once */
    sql_view *a = sql_view_new(&t), *b = sql_view_new(&h), *c = sql_view_new(&h);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    sql_value k = sql_string("p", 1);
    sql_value args[NAGGS] = {sql_null(), sql_bigint(1), sql_string("u", 1)};
    assert_int_equal(sql_view_apply(c, &k, args, 5, 1, CF_TIME_NONE, NULL, NULL),
                     SQL_VIEW_APPLIED);
    assert_int_equal(sql_view_share(a, c, NULL, NULL), -EINVAL);
    assert_int_equal(sql_view_share(a, a, NULL, NULL), -EINVAL);
    assert_int_equal(sql_view_share(a, b, NULL, NULL), 0);
    assert_int_equal(sql_view_share(a, b, NULL, NULL), -EINVAL);
    /* a follower applied before its owner did refuses */
    assert_int_equal(sql_view_apply(b, &k, args, 5, 7, CF_TIME_NONE, NULL, NULL), -EINVAL);
    assert_int_equal(sql_view_apply(a, &k, args, 5, 7, CF_TIME_NONE, NULL, NULL),
                     SQL_VIEW_APPLIED);
    assert_int_equal(sql_view_apply(b, &k, args, 5, 7, CF_TIME_NONE, NULL, NULL),
                     SQL_VIEW_APPLIED);
    sql_view_free(a);
    sql_view_free(b);
    sql_view_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_traces),
        cmocka_unit_test(test_who_may_share),
        cmocka_unit_test(test_capped_traces),
        cmocka_unit_test(test_covers_tells_disagreeing_blobs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
