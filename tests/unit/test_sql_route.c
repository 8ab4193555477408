/* Unit tests for server/sql_route (and the probe of server/sql_exec it
 * runs): which shards a click is routed to for the user views in force.
 * A view keyed by GROUP BY gets its bit on exactly one shard, the same one
 * for the same key whatever else the event holds; a row its filter drops
 * goes nowhere; a view joined to a table goes everywhere; a view over a
 * derived stream is routed by the derived row's key, and shard 0 gets every
 * row that yields a derived row (it keeps them). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "builtin_panels.h"
#include "cf_event.h"
#include "sql_exec.h"
#include "sql_expr.h"
#include "sql_parse.h"
#include "sql_plan.h"
#include "sql_route.h"

#define SHARDS 4

enum { V_ELEMENT, V_JOINED, S_BUYS, V_BUYS, NDEFS };

static const char *const defs_sql[NDEFS] = {
    "CREATE VIEW by_element AS SELECT element, COUNT(*) AS n FROM clicks "
    "WHERE element IS NOT NULL GROUP BY element",
    "CREATE VIEW by_plan AS SELECT u.plan, COUNT(*) AS n FROM clicks c "
    "JOIN users u ON c.user_id = u.user_id GROUP BY u.plan",
    "CREATE STREAM buys AS SELECT user_id, UPPER(page_url) AS page FROM clicks WHERE element = 'buy'",
    "CREATE VIEW buy_pages AS SELECT page, COUNT(*) AS n FROM buys GROUP BY page",
};

/* Plans one statement against c (applying it when apply); NULL fails. */
static sql_plan *plan(sql_catalog *c, const char *text, bool apply)
{
    sql_error err = {0};
    sql_script *s = sql_parse(text, strlen(text), &err);
    if (!s)
        fail_msg("parse: %s", err.message);
    sql_plan *p = sql_plan_new(c, sql_script_stmt(s, 0), &err);
    if (!p)
        fail_msg("plan: %s (%s)", err.message, text);
    if (apply)
        assert_int_equal(sql_plan_apply(p, c, &err), 0);
    sql_script_free(s);
    return p;
}

typedef struct fixture {
    sql_catalog *cat;
    cf_sqlx_set *set;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->cat = sql_catalog_new();
    assert_int_equal(sql_catalog_add_clicks(f->cat), 0);
    sql_plan_free(plan(f->cat, "CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING)", true));
    cf_sqlx_def *defs[NDEFS];
    for (int i = 0; i < NDEFS; i++) {
        /* The def takes a plan of its own; a second one adds the object
         * to the catalog for the statements after it. */
        defs[i] = cf_sqlx_def_new(plan(f->cat, defs_sql[i], false), true, 0, 0);
        sql_plan_free(plan(f->cat, defs_sql[i], true));
        assert_non_null(defs[i]);
        assert_true(cf_sqlx_def_runnable(defs[i]));
    }
    f->set = cf_sqlx_set_new(defs, NDEFS);
    assert_non_null(f->set);
    for (int i = 0; i < NDEFS; i++)
        cf_sqlx_def_unref(defs[i]);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cf_sqlx_set_unref(f->set);
    sql_catalog_free(f->cat);
    free(f);
    return 0;
}

static cf_event click(const char *user, const char *page, const char *element)
{
    cf_event ev = {0};
    ev.ts = 1767225600000;
    ev.user_id = user;
    ev.user_id_len = strlen(user);
    ev.page_url = page;
    ev.page_url_len = strlen(page);
    if (element) {
        ev.element = element;
        ev.element_len = strlen(element);
    }
    return ev;
}

static void route(fixture *f, const cf_event *ev, uint64_t masks[SHARDS])
{
    memset(masks, 0, SHARDS * sizeof *masks);
    cf_route_event(f->set, SHARDS, ev, masks);
}

/* The shards whose mask has the bit of definition i. */
static unsigned shards_with(const uint64_t masks[SHARDS], int i, int *ret_first)
{
    unsigned n = 0;
    *ret_first = -1;
    for (int s = 0; s < SHARDS; s++)
        if (masks[s] & cf_sqlx_view_bit((size_t)i)) {
            if (*ret_first < 0)
                *ret_first = s;
            n++;
        }
    return n;
}

static void grouped_view_goes_to_one_shard_by_key(void **state)
{
    fixture *f = *state;
    uint64_t masks[SHARDS];
    int home = -1, at;
    const char *users[] = {"u1", "u2", "someone-else"};
    const char *pages[] = {"/a", "/b?x=1", "/c"};
    for (int k = 0; k < 3; k++) {
        cf_event ev = click(users[k], pages[k], "nav");
        route(f, &ev, masks);
        assert_int_equal(shards_with(masks, V_ELEMENT, &at), 1);
        if (home < 0)
            home = at;
        assert_int_equal(at, home);     /* the key alone decides */
    }
    /* Many keys spread over more than one shard. */
    unsigned seen = 0;
    for (int k = 0; k < 64; k++) {
        char el[16];
        snprintf(el, sizeof el, "e%d", k);
        cf_event ev = click("u", "/p", el);
        route(f, &ev, masks);
        assert_int_equal(shards_with(masks, V_ELEMENT, &at), 1);
        seen |= 1u << at;
    }
    assert_true(__builtin_popcount(seen) > 1);
}

static void filtered_row_goes_nowhere_table_join_everywhere(void **state)
{
    fixture *f = *state;
    uint64_t masks[SHARDS];
    int at;
    cf_event ev = click("u1", "/a", NULL);    /* element IS NULL: by_element drops it */
    route(f, &ev, masks);
    assert_int_equal(shards_with(masks, V_ELEMENT, &at), 0);
    /* The join's key needs the table's row: every shard. */
    assert_int_equal(shards_with(masks, V_JOINED, &at), SHARDS);
    /* Not a buy: no derived row, so neither the stream nor its view. */
    assert_int_equal(shards_with(masks, S_BUYS, &at), 0);
    assert_int_equal(shards_with(masks, V_BUYS, &at), 0);
}

static void derived_rows_routed_by_their_own_key(void **state)
{
    fixture *f = *state;
    uint64_t masks[SHARDS];
    int at, home = -1;
    /* The same derived key (UPPER(page_url)) from different spellings and
     * users lands on one shard; that shard derives the stream (its bit), and
     * shard 0 always does (it keeps the derived rows). */
    const char *pages[] = {"/shop", "/SHOP", "/Shop"};
    for (int k = 0; k < 3; k++) {
        cf_event ev = click(k ? "u2" : "u1", pages[k], "buy");
        route(f, &ev, masks);
        assert_int_equal(shards_with(masks, V_BUYS, &at), 1);
        if (home < 0)
            home = at;
        assert_int_equal(at, home);
        assert_true(masks[at] & cf_sqlx_view_bit(S_BUYS));
        assert_true(masks[0] & cf_sqlx_view_bit(S_BUYS));
    }
}

/* An interval join's rows go to every shard, on both sides (1): every
 * shard runs the join over every key so that its rows reach the shards
 * owning the view's groups, whatever they group by (docs/SQL.md). A stream
 * the join does not read is not its business (-ENOENT). A self-join reads
 * a row on both sides. */
static void interval_join_partitions_by_the_join_key(void **state)
{
    (void)state;
    sql_catalog *c = sql_catalog_new();
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    sql_plan_free(plan(c, "CREATE STREAM orders (order_id STRING, customer STRING, ts TIMESTAMP) "
                          "WITH (TIMESTAMP = 'ts')", true));
    sql_plan_free(plan(c, "CREATE STREAM payments (paid DOUBLE, ref STRING, ts TIMESTAMP) "
                          "WITH (TIMESTAMP = 'ts')", true));
    cf_sqlx_def *d = cf_sqlx_def_new(
        plan(c, "CREATE VIEW paid AS SELECT o.customer, COUNT(*) AS n FROM orders o "
                "JOIN payments p WITHIN 1 HOUR ON o.order_id = p.ref GROUP BY o.customer", false),
        true, 0, 0);
    assert_non_null(d);
    const sql_prog *filter = NULL;
    const sql_prog *const *keys = NULL;
    uint32_t n = 0;
    assert_int_equal(cf_sqlx_def_partition(d, "orders", 6, 0, &filter, &keys, &n), 1);
    assert_int_equal(cf_sqlx_def_partition(d, "orders", 6, 1, &filter, &keys, &n), -ENOENT);
    assert_int_equal(cf_sqlx_def_partition(d, "payments", 8, 1, &filter, &keys, &n), 1);
    assert_int_equal(cf_sqlx_def_partition(d, "payments", 8, 0, &filter, &keys, &n), -ENOENT);
    assert_int_equal(cf_sqlx_def_partition(d, "clicks", 6, 0, &filter, &keys, &n), -ENOENT);
    cf_sqlx_def_unref(d);

    d = cf_sqlx_def_new(plan(c, "CREATE VIEW pairs AS SELECT a.user_id, COUNT(*) AS n FROM clicks a "
                                "JOIN clicks b WITHIN 1 MINUTE ON a.user_id = b.page_url "
                                "GROUP BY a.user_id", false), true, 0, 0);
    assert_non_null(d);
    assert_int_equal(cf_sqlx_def_partition(d, "clicks", 6, 0, &filter, &keys, &n), 1);
    assert_int_equal(cf_sqlx_def_partition(d, "clicks", 6, 1, &filter, &keys, &n), 1);
    cf_sqlx_def_unref(d);
    sql_catalog_free(c);
}

/* A plain view: its filter and GROUP BY key from its own source only; a
 * table join: not known before the join. */
static void grouped_and_table_join_partitions(void **state)
{
    fixture *f = *state;
    const sql_prog *filter = NULL;
    const sql_prog *const *keys = NULL;
    uint32_t n = 0;
    cf_sqlx_def *el = cf_sqlx_set_at(f->set, V_ELEMENT);
    assert_int_equal(cf_sqlx_def_partition(el, "clicks", 6, 0, &filter, &keys, &n), 0);
    assert_non_null(filter);
    assert_int_equal(n, 1);
    assert_int_equal(cf_sqlx_def_partition(el, "clicks", 6, 1, &filter, &keys, &n), -ENOENT);
    assert_int_equal(cf_sqlx_def_partition(el, "buys", 4, 0, &filter, &keys, &n), -ENOENT);
    assert_int_equal(cf_sqlx_def_partition(cf_sqlx_set_at(f->set, V_JOINED), "clicks", 6, 0, &filter,
                                           &keys, &n), 1);
    assert_int_equal(cf_sqlx_def_partition(cf_sqlx_set_at(f->set, S_BUYS), "clicks", 6, 0, &filter,
                                           &keys, &n), -ENOENT);
}

/* The probe remembers a key's owner within a row by column and by value
 * (views keyed by different columns holding equal values, NULLs above
 * all, share one hash) and skips the second side of views that are not
 * interval joins: every view lands where it lands when routed alone. */
static void shared_owners_route_as_each_view_alone(void **state)
{
    (void)state;
    static const char *const views[] = {
        "CREATE VIEW v_el AS SELECT element, COUNT(*) AS n FROM clicks GROUP BY element",
        "CREATE VIEW v_page AS SELECT page_url, COUNT(*) AS n FROM clicks GROUP BY page_url",
        "CREATE VIEW v_ref AS SELECT referrer_host, COUNT(*) AS n FROM clicks GROUP BY referrer_host",
        "CREATE VIEW v_utm AS SELECT utm_source, COUNT(*) AS n FROM clicks GROUP BY utm_source",
        "CREATE VIEW v_user AS SELECT user_id, COUNT(*) AS n FROM clicks GROUP BY user_id",
        "CREATE VIEW v_pairs AS SELECT a.user_id, COUNT(*) AS n FROM clicks a "
        "JOIN clicks b WITHIN 1 MINUTE ON a.user_id = b.page_url GROUP BY a.user_id",
    };
    enum { NV = sizeof views / sizeof views[0] };
    sql_catalog *c = sql_catalog_new();
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    cf_sqlx_def *defs[NV];
    cf_sqlx_set *alone[NV];
    for (int i = 0; i < NV; i++) {
        defs[i] = cf_sqlx_def_new(plan(c, views[i], false), true, 0, 0);
        assert_non_null(defs[i]);
        alone[i] = cf_sqlx_set_new(&defs[i], 1);
        assert_non_null(alone[i]);
    }
    cf_sqlx_set *all = cf_sqlx_set_new(defs, NV);
    assert_non_null(all);
    /* Equal values in two key columns, a key equal to another view's NULL-
     * free value, NULL keys, and plain distinct ones. */
    const char *rows[][3] = {{"/x", "/x", "/x"}, {"u1", "/y", NULL}, {"/z", "/z", "e"},
                             {"u2", "/a", "/b"}};
    for (size_t r = 0; r < sizeof rows / sizeof rows[0]; r++) {
        cf_event ev = click(rows[r][0], rows[r][1], rows[r][2]);
        uint64_t m_all[SHARDS] = {0};
        cf_route_event(all, SHARDS, &ev, m_all);
        for (int i = 0; i < NV; i++) {
            uint64_t m_one[SHARDS] = {0};
            cf_route_event(alone[i], SHARDS, &ev, m_one);
            for (int s = 0; s < SHARDS; s++)
                assert_int_equal(!!(m_all[s] & cf_sqlx_view_bit((size_t)i)),
                                 !!(m_one[s] & cf_sqlx_view_bit(0)));
        }
        int at;
        assert_int_equal(shards_with(m_all, NV - 1, &at), SHARDS);  /* the join: everywhere */
    }
    for (int i = 0; i < NV; i++) {
        cf_sqlx_set_unref(alone[i]);
        cf_sqlx_def_unref(defs[i]);
    }
    cf_sqlx_set_unref(all);
    sql_catalog_free(c);
}

/* The dashboard panels (builtin_panels.c) over a click that leaves every
 * panel's column NULL (a direct visit: no referrer, UTM, user agent or
 * GeoIP): each panel's NULL group is one group on one shard, placed by a
 * per-view seed, so with two shards they are not all on one (issue 15:
 * the busiest shard did every panel's work). Each view's shard is the same
 * routed alone or among the others. */
static void panels_null_groups_spread_over_shards(void **state)
{
    (void)state;
    sql_catalog *c = sql_catalog_new();
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    char *text = strdup(cf_builtin_panels_sql());
    assert_non_null(text);
    cf_sqlx_def *defs[8];
    int n = 0;
    for (char *st = text, *end; (end = strchr(st, ';')) != NULL; st = end + 1) {
        *end = '\0';
        assert_true(n < 8);
        defs[n] = cf_sqlx_def_new(plan(c, st, false), true, 0, 0);
        assert_non_null(defs[n]);
        n++;
    }
    assert_int_equal(n, 5);
    cf_sqlx_set *all = cf_sqlx_set_new(defs, (size_t)n);
    assert_non_null(all);
    cf_event ev = click("u1", "/", NULL);
    uint64_t m[2] = {0};
    cf_route_event(all, 2, &ev, m);
    int on[2] = {0};
    for (int i = 0; i < n; i++) {
        int at = -1;
        for (int s = 0; s < 2; s++)
            if (m[s] & cf_sqlx_view_bit((size_t)i)) {
                assert_int_equal(at, -1);   /* one shard per view */
                at = s;
            }
        assert_true(at >= 0);
        on[at]++;
        cf_sqlx_set *one = cf_sqlx_set_new(&defs[i], 1);
        uint64_t m1[2] = {0};
        cf_route_event(one, 2, &ev, m1);
        assert_true(m1[at] & cf_sqlx_view_bit(0));
        cf_sqlx_set_unref(one);
    }
    assert_true(on[0] > 0 && on[1] > 0);
    cf_sqlx_set_unref(all);
    for (int i = 0; i < n; i++)
        cf_sqlx_def_unref(defs[i]);
    free(text);
    sql_catalog_free(c);
}

static void view_bits_saturate_at_63(void **state)
{
    (void)state;
    assert_true(cf_sqlx_view_bit(0) == 1);
    assert_true(cf_sqlx_view_bit(62) == 1ull << 62);
    assert_true(cf_sqlx_view_bit(63) == 1ull << 63);
    assert_true(cf_sqlx_view_bit(500) == 1ull << 63);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(grouped_view_goes_to_one_shard_by_key, setup, teardown),
        cmocka_unit_test_setup_teardown(filtered_row_goes_nowhere_table_join_everywhere, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(derived_rows_routed_by_their_own_key, setup, teardown),
        cmocka_unit_test_setup_teardown(grouped_and_table_join_partitions, setup, teardown),
        cmocka_unit_test(interval_join_partitions_by_the_join_key),
        cmocka_unit_test(view_bits_saturate_at_63),
        cmocka_unit_test(shared_owners_route_as_each_view_alone),
        cmocka_unit_test(panels_null_groups_spread_over_shards),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
