/* Unit tests for sql_view's group table (8-byte slots: a group's address,
 * its distance from its home slot, saturating at 255, and an 11-bit tag of
 * its hash; sql_view_int.h, pslot): seeded random traces of inserts,
 * lookups and deletes against a brute-force model, on a running view
 * (groups deleted by sql_view_forget), a session view (groups deleted
 * when their sessions purge), and keys that share one home slot (distances
 * past 255). Tens of thousands of keys, so the table doubles many times,
 * deletions shift long clusters back, and different keys share a tag. */
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

/* Key i's text: i in hex, '-', then 0-32 letters: lengths 2-41 (short
 * keys compare inline, long ones not), distinct for distinct i. */
static uint32_t key_text(char *buf, uint32_t i)
{
    int n = snprintf(buf, 64, "%x-", i);
    uint32_t pad = (i * 2654435761u) % 33;
    for (uint32_t k = 0; k < pad; k++)
        buf[n + (int)k] = (char)('a' + (i + k) % 26);
    return (uint32_t)n + pad;
}

typedef struct got {
    size_t rows;
    int64_t count;
} got;

static void take_count(void *ctx, const sql_view_result *r)
{
    got *g = ctx;
    g->rows++;
    g->count = r->aggs[0].u.i;
}

/* Key i is still in the view exactly when model[i] > 0, with that count. */
static void check_all(const sql_view *v, const int64_t *model, uint32_t nkeys, int64_t now)
{
    size_t live = 0;
    for (uint32_t i = 0; i < nkeys; i++) {
        char buf[64];
        sql_value k = sql_string(buf, key_text(buf, i));
        got g = {0};
        sql_view_lookup(v, &k, now, take_count, &g);
        if (model[i] > 0) {
            live++;
            if (g.rows != 1 || g.count != model[i]) {
                print_error("key %u: %zu rows, count %lld, want 1 row, %lld\n", i, g.rows,
                            (long long)g.count, (long long)model[i]);
                fail();
            }
        } else if (g.rows != 0) {
            print_error("key %u: %zu rows, want none\n", i, g.rows);
            fail();
        }
    }
    assert_int_equal(sql_view_groups(v), live);
}

static const sql_agg_spec count_star[] = {{SQL_AGG_COUNT_STAR, 0}};

/* forget's predicate: drops the keys whose bit `round` of a per-key hash
 * is set, as the model does. */
typedef struct drop_rule {
    uint32_t round;
} drop_rule;

static bool drop_bit(uint32_t i, uint32_t round)
{
    return (uu_splitmix64(&(uint64_t){(uint64_t)i * 977 + round}) & 3) == 0;
}

static bool drop_key(void *ctx, const sql_view_result *r)
{
    const drop_rule *d = ctx;
    uint32_t i = (uint32_t)strtoul(r->key[0].u.s, NULL, 16);
    return drop_bit(i, d->round);
}

static void run_running(uint64_t seed, uint32_t nkeys, size_t nevents)
{
    rng_state = seed;
    sql_view_config c = {.nkeys = 1, .aggs = count_star, .naggs = 1,
                         .window = SQL_WINDOW_NONE, .hash_seed = rng()};
    sql_view *v = sql_view_new(&c);
    assert_non_null(v);
    int64_t *model = calloc(nkeys, sizeof *model);
    assert_non_null(model);
    int64_t ts = 1000;
    uint32_t round = 0;
    for (size_t e = 0; e < nevents; e++) {
        /* Half the events on a small hot set, so groups live through many
         * doublings; the rest across all keys. */
        uint32_t i = (uint32_t)(rng() % (rng() & 1 ? 64 : nkeys));
        char buf[64];
        sql_value k = sql_string(buf, key_text(buf, i));
        assert_int_equal(sql_view_apply(v, &k, NULL, ++ts, e, CF_TIME_NONE, NULL, NULL),
                         SQL_VIEW_APPLIED);
        model[i]++;
        if (rng() % (nevents / 6) == 0) {
            drop_rule d = {round++};
            size_t want = 0;
            for (uint32_t j = 0; j < nkeys; j++)
                if (model[j] > 0 && drop_bit(j, d.round)) {
                    model[j] = 0;
                    want++;
                }
            assert_int_equal(sql_view_forget(v, ts, drop_key, &d), want);
            check_all(v, model, nkeys, ts);
        }
    }
    check_all(v, model, nkeys, ts);
    free(model);
    sql_view_free(v);
}

static void test_running_groups_match_model(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 4; seed++)
        run_running(seed * 0x51ed, 40000, 120000);
}

/* Rounds of sessions: each round clicks random users within a span
 * shorter than the gap (one session a user), checks every user, then
 * moves the watermark past every session's purge, which deletes every
 * group; the next round inserts into the table those deletions left. */
static void test_session_groups_match_model(void **state)
{
    (void)state;
    rng_state = 0xc0ffee;
    const uint32_t nkeys = 30000;
    const int64_t gap = 1000, grace = 10, span = 500;
    sql_view_config c = {.nkeys = 1, .aggs = count_star, .naggs = 1,
                         .window = SQL_WINDOW_SESSION, .gap_ms = gap, .grace_ms = grace,
                         .hash_seed = rng()};
    sql_view *v = sql_view_new(&c);
    assert_non_null(v);
    int64_t *model = calloc(nkeys, sizeof *model);
    assert_non_null(model);
    int64_t wm = CF_TIME_NONE;
    for (int round = 0; round < 6; round++) {
        int64_t base = 100000 + (int64_t)round * 10 * gap;
        size_t n = 20000 + (size_t)(rng() % 40000);
        for (size_t e = 0; e < n; e++) {
            uint32_t i = (uint32_t)(rng() % (round & 1 ? nkeys : nkeys / 3));
            char buf[64];
            sql_value k = sql_string(buf, key_text(buf, i));
            int64_t ts = base + (int64_t)(rng() % (uint64_t)span);
            assert_int_equal(sql_view_apply(v, &k, NULL, ts, e, wm, NULL, NULL),
                             SQL_VIEW_APPLIED);
            model[i]++;
        }
        check_all(v, model, nkeys, base + span);
        wm = base + span + gap + grace + 1;
        sql_view_advance(v, wm, NULL, NULL);
        memset(model, 0, nkeys * sizeof *model);
        check_all(v, model, nkeys, wm);
    }
    free(model);
    sql_view_free(v);
}

/* The session heap (16 bytes a session) grows by half, not by doubling
 * (sql_view_heap_reserve): the 2^16+1-th open session, one past a
 * doubling's step, costs its block and slot and no jump of 2^16 * 16 bytes
 * (the group table does not grow there either: it doubled at 3/4 of 2^16). */
static void test_session_heap_grows_by_half(void **state)
{
    (void)state;
    sql_view_config c = {.nkeys = 1, .aggs = count_star, .naggs = 1,
                         .window = SQL_WINDOW_SESSION, .gap_ms = 1000, .grace_ms = 0};
    sql_view *v = sql_view_new(&c);
    assert_non_null(v);
    const uint32_t n = 1u << 16;
    sql_view_stats st;
    size_t before = 0;
    for (uint32_t i = 0; i <= n; i++) {
        if (i == n) {
            sql_view_stats_get(v, &st);
            assert_int_equal(st.open, n);
            before = st.bytes;
        }
        char buf[64];
        sql_value k = sql_string(buf, key_text(buf, i));
        assert_int_equal(sql_view_apply(v, &k, NULL, 1000, i, CF_TIME_NONE, NULL, NULL),
                         SQL_VIEW_APPLIED);
    }
    sql_view_stats_get(v, &st);
    assert_int_equal(st.open, n + 1);
    assert_true(st.bytes > before);
    assert_true(st.bytes - before < 4096);
    sql_view_free(v);
}

/* 300 keys that share their home slot (the same low 12 hash bits: one
 * home in any table up to 4096 slots) probe up to 300 slots from it, past
 * the 255 a slot's distance field holds (PSLOT_FAR: the group's hash is
 * read then): inserts, forgets that shift those clusters back, and
 * lookups against the model. */
static void test_far_probes_match_model(void **state)
{
    (void)state;
    rng_state = 0xfa4;
    sql_view_config c = {.nkeys = 1, .aggs = count_star, .naggs = 1,
                         .window = SQL_WINDOW_NONE, .hash_seed = rng()};
    sql_view *v = sql_view_new(&c);
    assert_non_null(v);
    enum { SAME = 300, OTHERS = 600 };
    const uint32_t nkeys = 1u << 22;
    uint32_t *ids = malloc((SAME + OTHERS) * sizeof *ids);
    int64_t *model = calloc(nkeys, sizeof *model);
    assert_non_null(ids);
    assert_non_null(model);
    uint32_t n_same = 0, n_other = 0;
    for (uint32_t i = 0; i < nkeys && n_same < SAME; i++) {
        char buf[64];
        sql_value k = sql_string(buf, key_text(buf, i));
        if ((sql_view_key_hash(v, &k) & 4095) == 0x5a5)
            ids[n_same++] = i;
        else if (n_other < OTHERS && i % 97 == 0)
            ids[SAME + n_other++] = i;
    }
    assert_int_equal(n_same, SAME);
    int64_t ts = 1000;
    for (uint32_t round = 0; round < 4; round++) {
        for (uint32_t e = 0; e < 3000; e++) {
            uint32_t i = ids[rng() % (e & 1 ? SAME : SAME + n_other)];
            char buf[64];
            sql_value k = sql_string(buf, key_text(buf, i));
            assert_int_equal(sql_view_apply(v, &k, NULL, ++ts, e, CF_TIME_NONE, NULL, NULL),
                             SQL_VIEW_APPLIED);
            model[i]++;
        }
        drop_rule d = {round};
        size_t want = 0;
        for (uint32_t x = 0; x < SAME + n_other; x++)
            if (model[ids[x]] > 0 && drop_bit(ids[x], round)) {
                model[ids[x]] = 0;
                want++;
            }
        assert_int_equal(sql_view_forget(v, ts, drop_key, &d), want);
        for (uint32_t x = 0; x < SAME + n_other; x++) {
            char buf[64];
            sql_value k = sql_string(buf, key_text(buf, ids[x]));
            got g = {0};
            sql_view_lookup(v, &k, ts, take_count, &g);
            assert_int_equal(g.rows, model[ids[x]] > 0);
            if (g.rows)
                assert_int_equal(g.count, model[ids[x]]);
        }
    }
    free(model);
    free(ids);
    sql_view_free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_running_groups_match_model),
        cmocka_unit_test(test_session_groups_match_model),
        cmocka_unit_test(test_session_heap_grows_by_half),
        cmocka_unit_test(test_far_probes_match_model),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
