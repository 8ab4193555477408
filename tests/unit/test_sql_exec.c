/* Unit tests for the interval join step of sql_exec (the shard executor):
 * the key a router would place each side by (cf_sqlx_route_key), a pair
 * made by a derived stream whatever the arrival order, and the join's
 * buffers carried by a shard snapshot part into another executor (a
 * restart, also under another shard count). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_event.h"
#include "sql_exec.h"
#include "sql_join.h"
#include "sql_parse.h"
#include "sql_plan.h"

static const char streams_sql[] =
    "CREATE STREAM orders (order_id STRING NOT NULL, customer_id STRING, ts TIMESTAMP) "
    "WITH (TIMESTAMP = 'ts');"
    "CREATE STREAM pays (pay_id STRING NOT NULL, oid STRING, ts TIMESTAMP) WITH (TIMESTAMP = 'ts')";
static const char paid_sql[] =
    "CREATE STREAM paid AS SELECT o.order_id AS order_id, p.pay_id AS pay_id "
    "FROM orders o JOIN pays p WITHIN 1 MINUTE ON o.order_id = p.oid";

/* Plans and applies streams_sql, then plans paid_sql into a def. */
static cf_sqlx_def *paid_def(void)
{
    sql_catalog *c = sql_catalog_new();
    assert_non_null(c);
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    sql_error err = {0};
    sql_script *s = sql_parse(streams_sql, strlen(streams_sql), &err);
    assert_non_null(s);
    for (size_t i = 0; i < sql_script_count(s); i++) {
        sql_plan *p = sql_plan_new(c, sql_script_stmt(s, i), &err);
        assert_non_null(p);
        assert_int_equal(sql_plan_apply(p, c, &err), 0);
        sql_plan_free(p);
    }
    sql_script_free(s);
    s = sql_parse(paid_sql, strlen(paid_sql), &err);
    assert_non_null(s);
    sql_plan *p = sql_plan_new(c, sql_script_stmt(s, 0), &err);
    assert_non_null(p);
    sql_script_free(s);
    sql_catalog_free(c);
    cf_sqlx_def *d = cf_sqlx_def_new(p, true, 0, 0);
    assert_non_null(d);
    assert_true(cf_sqlx_def_runnable(d));
    return d;
}

static cf_sqlx *shard(cf_sqlx_def *d, unsigned index, unsigned n)
{
    cf_sqlx *x = cf_sqlx_new(index, n, 100);
    assert_non_null(x);
    cf_sqlx_set *set = cf_sqlx_set_new(&d, 1);
    assert_non_null(set);
    cf_sqlx_install(x, set);    /* takes the reference */
    return x;
}

/* A declared stream's packed row (stream_ingest.h): ts, then the values. */
static void feed(cf_sqlx *x, const char *stream, const char *a, const char *b, int64_t ts,
                 uint64_t seq)
{
    cf_buf buf = {0};
    cf_buf_put_i64(&buf, ts);
    cf_sqlx_put_value(&buf, sql_string(a, (uint32_t)strlen(a)));
    cf_sqlx_put_value(&buf, sql_string(b, (uint32_t)strlen(b)));
    cf_sqlx_put_value(&buf, sql_timestamp(ts));
    assert_false(buf.oom);
    cf_sqlx_row(x, stream, strlen(stream), buf.data, buf.len, seq, ts - 5000, ts, CF_SQLX_ALL_VIEWS);
    cf_buf_free(&buf);
}

/* The derived rows of `paid` shard 0 keeps: count, and the first's values. */
static long paid_rows(cf_sqlx *x, char *ret_order, char *ret_pay)
{
    cf_buf out = {0};
    long n = cf_sqlx_rows(x, "paid", &out);
    if (n > 0) {
        cf_reader r;
        cf_reader_init(&r, out.data, out.len);
        const char *id = NULL;
        size_t id_len = 0;
        uint32_t rev = 0, nv = 0;
        sql_value v[2];
        assert_true(cf_get_str(&r, &id, &id_len) && cf_get_u32(&r, &rev) && cf_get_u32(&r, &nv));
        assert_int_equal(nv, 2);
        assert_true(cf_sqlx_get_value(&r, &v[0]) && cf_sqlx_get_value(&r, &v[1]));
        memcpy(ret_order, v[0].u.s, v[0].len);
        ret_order[v[0].len] = '\0';
        memcpy(ret_pay, v[1].u.s, v[1].len);
        ret_pay[v[1].len] = '\0';
    }
    cf_buf_free(&out);
    return n;
}

static void test_route_key_is_each_sides_join_key(void **state)
{
    (void)state;
    cf_sqlx_def *d = paid_def();
    cf_sqlx *x = shard(d, 0, 1);
    sql_value left[3] = {sql_string("o1", 2), sql_string("c9", 2), sql_timestamp(1)};
    sql_value right[3] = {sql_string("p1", 2), sql_string("o1", 2), sql_timestamp(1)};
    sql_row lrow = {.v = left, .n = 3, .rowtime = 1}, rrow = {.v = right, .n = 3, .rowtime = 1};
    sql_value k[SQL_JOIN_MAX_KEYS];
    assert_int_equal(cf_sqlx_route_key(x, d, "orders", &lrow, k), 1);
    assert_int_equal(k[0].type, SQL_STRING);
    assert_memory_equal(k[0].u.s, "o1", 2);
    assert_int_equal(cf_sqlx_route_key(x, d, "pays", &rrow, k), 1);
    assert_memory_equal(k[0].u.s, "o1", 2);     /* the order id, not the payment's */
    assert_int_equal(cf_sqlx_route_key(x, d, "clicks", &rrow, k), 0);
    cf_sqlx_free(x);
    cf_sqlx_def_unref(d);
}

static void test_pair_in_both_orders(void **state)
{
    (void)state;
    cf_sqlx_def *d = paid_def();
    char o[16], p[16];
    for (int order = 0; order < 2; order++) {
        cf_sqlx *x = shard(d, 0, 1);
        const int64_t t = 1000000;
        if (order == 0) {
            feed(x, "orders", "o1", "c1", t, 1);
            feed(x, "pays", "p1", "o1", t + 60000, 2);   /* |dt| = d: joins */
        } else {
            feed(x, "pays", "p1", "o1", t + 60000, 1);
            feed(x, "orders", "o1", "c1", t, 2);
        }
        feed(x, "pays", "p2", "o1", t + 60001, 3);       /* d + 1: does not */
        assert_int_equal(paid_rows(x, o, p), 1);
        assert_string_equal(o, "o1");
        assert_string_equal(p, "p1");
        cf_sqlx_free(x);
    }
    cf_sqlx_def_unref(d);
}

static void test_buffers_survive_a_snapshot_part(void **state)
{
    (void)state;
    cf_sqlx_def *d = paid_def();
    cf_sqlx *a = shard(d, 0, 2);
    feed(a, "orders", "o7", "c1", 5000000, 1);
    cf_buf part = {0};
    assert_int_equal(cf_sqlx_save(a, &part), 0);
    cf_sqlx_free(a);
    /* Restored under another shard count: the order still finds its payment. */
    for (unsigned n = 1; n <= 3; n += 2) {
        cf_sqlx *b = shard(d, 0, n);
        cf_reader r;
        cf_reader_init(&r, part.data, part.len);
        assert_int_equal(cf_sqlx_load(b, &r, n != 2, true), 0);
        char o[16], p[16];
        assert_int_equal(paid_rows(b, o, p), 0);
        feed(b, "pays", "p7", "o7", 5000010, 2);
        assert_int_equal(paid_rows(b, o, p), 1);
        assert_string_equal(o, "o7");
        cf_sqlx_free(b);
    }
    /* A version 2 part (no joins) loads with empty buffers. */
    cf_sqlx *c = shard(d, 0, 2);
    cf_reader r;
    cf_reader_init(&r, part.data, part.len);
    assert_int_equal(cf_sqlx_load(c, &r, false, false), 0);
    feed(c, "pays", "p7", "o7", 5000010, 2);
    char o[16], p[16];
    assert_int_equal(paid_rows(c, o, p), 0);
    cf_sqlx_free(c);
    cf_buf_free(&part);
    cf_sqlx_def_unref(d);
}

/* -- view_row's shortcuts --------------------------------------------------- */

static const char hits_sql[] =
    "CREATE STREAM hits (page STRING, uid STRING, qty BIGINT, ts TIMESTAMP) WITH (TIMESTAMP = 'ts')";
/* Plain-column keys and arguments, two views with one WHERE and one key,
 * a COUNT(DISTINCT) shared by three, an expression key over two columns,
 * a window, and a NULL-able column. */
static const char *const hits_views[] = {
    "CREATE VIEW a AS SELECT page, COUNT(*) AS c, COUNT(DISTINCT uid) AS u FROM hits "
    "WHERE qty > 2 GROUP BY page",
    "CREATE VIEW b AS SELECT page, SUM(qty) AS s, COUNT(DISTINCT uid) AS u, MAX(qty + 1) AS m "
    "FROM hits WHERE qty > 2 GROUP BY page",
    "CREATE VIEW c AS SELECT uid, COUNT(DISTINCT page) AS p, COUNT(DISTINCT uid) AS u, "
    "MIN(qty) AS lo FROM hits WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY uid",
    "CREATE VIEW d AS SELECT UPPER(page) AS up, uid, COUNT(*) AS c FROM hits "
    "WHERE qty <= 2 GROUP BY UPPER(page), uid",
    "CREATE VIEW e AS SELECT qty, COUNT(uid) AS c FROM hits WHERE qty > 2 GROUP BY qty",
};
#define NVIEWS (sizeof hits_views / sizeof *hits_views)

/* sql_plan borrows names from the script until applied: apply first. */
static sql_plan *plan_one(sql_catalog *c, const char *sql, bool apply)
{
    sql_error err = {0};
    sql_script *s = sql_parse(sql, strlen(sql), &err);
    if (!s)
        fail_msg("%s: %s", sql, err.message);
    sql_plan *p = sql_plan_new(c, sql_script_stmt(s, 0), &err);
    if (!p)
        fail_msg("%s: %s", sql, err.message);
    if (apply)
        assert_int_equal(sql_plan_apply(p, c, &err), 0);
    sql_script_free(s);
    return p;
}

/* The n views of sqls as runnable defs (into defs) and their set, planned
 * over the clicks catalog plus the statement stream_sql (NULL: none). */
static cf_sqlx_set *views_set(const char *stream_sql, const char *const *sqls, size_t n,
                              cf_sqlx_def **defs)
{
    sql_catalog *c = sql_catalog_new();
    assert_non_null(c);
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    if (stream_sql)
        sql_plan_free(plan_one(c, stream_sql, true));
    for (size_t i = 0; i < n; i++) {
        defs[i] = cf_sqlx_def_new(plan_one(c, sqls[i], false), true, 0, 0);
        assert_non_null(defs[i]);
        assert_true(cf_sqlx_def_runnable(defs[i]));
    }
    sql_catalog_free(c);
    cf_sqlx_set *set = cf_sqlx_set_new(defs, n);
    assert_non_null(set);
    return set;
}

static cf_sqlx_set *hits_set(void)
{
    cf_sqlx_def *defs[NVIEWS];
    cf_sqlx_set *set = views_set(hits_sql, hits_views, NVIEWS, defs);
    for (size_t i = 0; i < NVIEWS; i++)
        cf_sqlx_def_unref(defs[i]);
    return set;
}

/* Row i of a seeded trace of hits (packed as stream_ingest.h does). */
static void hit_row(uint64_t i, unsigned *seed, cf_buf *buf, int64_t *ret_ts)
{
    static const char *const pages[] = {"/", "/a", "/b", "/A", "/cart"};
    static const char *const users[] = {"u1", "u2", "u3", "u4"};
    *seed = *seed * 1103515245u + 12345u;
    const char *pg = pages[(*seed >> 8) % 5];
    const char *u = users[(*seed >> 12) % 4];
    int64_t ts = 1000000 + (int64_t)i * 900;
    cf_buf_reset(buf);
    cf_buf_put_i64(buf, ts);
    cf_sqlx_put_value(buf, sql_string(pg, (uint32_t)strlen(pg)));
    /* every 7th uid NULL: COUNT(uid) and COUNT(DISTINCT uid) skip it */
    cf_sqlx_put_value(buf, i % 7 ? sql_string(u, (uint32_t)strlen(u)) : sql_null());
    cf_sqlx_put_value(buf, sql_bigint((int64_t)((*seed >> 16) % 6)));
    cf_sqlx_put_value(buf, sql_timestamp(ts));
    assert_false(buf->oom);
    *ret_ts = ts;
}

static void feed_hits(cf_sqlx *x, unsigned seed)
{
    cf_buf buf = {0};
    for (uint64_t i = 1; i <= 400; i++) {
        int64_t ts;
        hit_row(i, &seed, &buf, &ts);
        cf_sqlx_row(x, "hits", 4, buf.data, buf.len, i, ts - 1000, ts, CF_SQLX_ALL_VIEWS);
    }
    cf_buf_free(&buf);
}

/* Shard idx of n running set twice: on the fast paths and on the generic
 * ones (cf_sqlx_set_generic), to be fed the same rows and compared. */
static void fast_and_generic(cf_sqlx_set *set, unsigned idx, unsigned n, cf_sqlx **ret_fast,
                             cf_sqlx **ret_slow)
{
    cf_sqlx *fast = cf_sqlx_new(idx, n, 100), *slow = cf_sqlx_new(idx, n, 100);
    assert_non_null(fast);
    assert_non_null(slow);
    cf_sqlx_set_generic(slow, true);
    cf_sqlx_install(fast, cf_sqlx_set_ref(set));
    cf_sqlx_install(slow, cf_sqlx_set_ref(set));
    *ret_fast = fast;
    *ret_slow = slow;
}

/* The views named a, b, ... of fast and slow give the same rows (some) and
 * byte-identical saved state; then both are freed. */
static void assert_same_rows_and_state_then_free(cf_sqlx *fast, cf_sqlx *slow, size_t nviews)
{
    long total = 0;
    for (size_t i = 0; i < nviews; i++) {
        char name[2] = {(char)('a' + i), '\0'};
        cf_buf rf = {0}, rs = {0};
        long nf = cf_sqlx_rows(fast, name, &rf), ns = cf_sqlx_rows(slow, name, &rs);
        assert_int_equal(nf, ns);
        assert_int_equal(rf.len, rs.len);
        assert_memory_equal(rf.data, rs.data, rf.len);
        total += nf;
        cf_buf_free(&rf);
        cf_buf_free(&rs);
    }
    assert_true(total > 0);
    cf_buf sf = {0}, ss = {0};
    assert_int_equal(cf_sqlx_save(fast, &sf), 0);
    assert_int_equal(cf_sqlx_save(slow, &ss), 0);
    assert_int_equal(sf.len, ss.len);
    assert_memory_equal(sf.data, ss.data, sf.len);
    cf_buf_free(&sf);
    cf_buf_free(&ss);
    cf_sqlx_free(fast);
    cf_sqlx_free(slow);
}

/* view_row's copied columns, shared hashes and shared WHERE verdicts give
 * the same rows and byte-identical saved state as running every program,
 * on one shard and on each of two (the owner check on the copied keys). */
static void test_fast_view_row_matches_generic(void **state)
{
    (void)state;
    cf_sqlx_set *set = hits_set();
    for (unsigned n = 1; n <= 2; n++)
        for (unsigned idx = 0; idx < n; idx++) {
            cf_sqlx *fast, *slow;
            fast_and_generic(set, idx, n, &fast, &slow);
            feed_hits(fast, 7 + n);
            feed_hits(slow, 7 + n);
            assert_int_equal(cf_sqlx_errors(fast), cf_sqlx_errors(slow));
            assert_same_rows_and_state_then_free(fast, slow, NVIEWS);
        }
    cf_sqlx_set_unref(set);
}

/* The probe's shortcuts (shared WHERE verdicts, copied key columns, one
 * owner per key column value) place every row as running every program
 * does. */
static void test_fast_probe_matches_generic(void **state)
{
    (void)state;
    cf_sqlx_set *set = hits_set();
    for (unsigned n = 2; n <= 3; n++) {
        cf_sqlx *fast = cf_sqlx_probe_new(n), *slow = cf_sqlx_probe_new(n);
        assert_non_null(fast);
        assert_non_null(slow);
        cf_sqlx_set_generic(slow, true);
        cf_buf buf = {0};
        unsigned seed = 11;
        uint64_t some = 0;
        for (uint64_t i = 1; i <= 200; i++) {
            int64_t ts;
            hit_row(i, &seed, &buf, &ts);
            uint64_t mf[3] = {0}, ms[3] = {0};
            assert_int_equal(cf_sqlx_route_row(fast, set, "hits", 4, buf.data, buf.len, mf),
                             cf_sqlx_route_row(slow, set, "hits", 4, buf.data, buf.len, ms));
            assert_memory_equal(mf, ms, sizeof mf);
            some |= mf[1];
        }
        assert_true(some != 0);     /* shard 1 owns some keys */
        cf_buf_free(&buf);
        cf_sqlx_free(fast);
        cf_sqlx_free(slow);
    }
    cf_sqlx_set_unref(set);
}

/* -- clicks decoded and hashed once (cf_sqlx_event_row) ------------------ */

static const char *const click_views[] = {
    "CREATE VIEW a AS SELECT COALESCE(referrer_host, 'Direct') AS r, COUNT(*) AS c, "
    "COUNT(DISTINCT user_id) AS v FROM clicks WHERE NOT COALESCE(is_bot, FALSE) "
    "GROUP BY referrer_host",
    "CREATE VIEW b AS SELECT user_id, COUNT(DISTINCT page_url) AS p FROM clicks "
    "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id",
    "CREATE VIEW c AS SELECT page_url, COUNT(*) AS c, COUNT(DISTINCT user_id) AS u FROM clicks "
    "WHERE NOT COALESCE(is_bot, FALSE) GROUP BY page_url",
    /* Keyed by another column, NULL on most clicks: its NULL key shares
     * the memo's hash of a's NULL referrer (sqlx_memo_key_hash). */
    "CREATE VIEW d AS SELECT COALESCE(utm_source, '(none)') AS s, COUNT(*) AS c, "
    "COUNT(DISTINCT user_id) AS v FROM clicks GROUP BY utm_source",
};
#define NCLICK_VIEWS (sizeof click_views / sizeof *click_views)

/* The click views' defs (into defs) and their set. */
static cf_sqlx_set *click_set(cf_sqlx_def *defs[NCLICK_VIEWS])
{
    return views_set(NULL, click_views, NCLICK_VIEWS, defs);
}

/* Click i of a seeded trace: few pages, users and referrers, some bots. */
static void click_of(uint64_t i, unsigned *seed, cf_event *ev)
{
    static const char *const pages[] = {"/", "/a", "/b", "/cart"};
    static const char *const users[] = {"u1", "u2", "u3", "u4", "u5"};
    static const char *const refs[] = {"x.example", "y.example", NULL};
    *seed = *seed * 1103515245u + 12345u;
    memset(ev, 0, sizeof *ev);
    ev->ts = 1000000 + (int64_t)i * 700;
    ev->page_url = pages[(*seed >> 8) % 4];
    ev->page_url_len = strlen(ev->page_url);
    ev->user_id = users[(*seed >> 12) % 5];
    ev->user_id_len = strlen(ev->user_id);
    ev->enrich.is_bot = (*seed >> 16) % 7 == 0;
    const char *r = refs[(*seed >> 20) % 3];
    const char *utm = (*seed >> 24) % 4 == 0 ? "news" : NULL;
    for (int c = 0; c < CF_COL_COUNT; c++) {
        const char *v = strcmp(cf_enrich_col_name(c), "referrer_host") == 0 ? r
                        : strcmp(cf_enrich_col_name(c), "utm_source") == 0  ? utm
                                                                           : NULL;
        if (v) {
            ev->enrich.col[c] = v;
            ev->enrich.len[c] = (uint16_t)strlen(v);
        }
    }
}

/* The user views given the shard's decoded row and the hashes its
 * built-ins took (one view of the same seed as the user views, one of
 * another: only hashes of equal seed may be shared) keep the same rows and
 * byte-identical state as the generic path decoding the click itself. */
static void test_event_row_matches_generic(void **state)
{
    (void)state;
    cf_sqlx_def *defs[NCLICK_VIEWS];
    cf_sqlx_set *set = click_set(defs);
    sql_view_config cb = *cf_sqlx_def_view_config(defs[1]), cc = *cf_sqlx_def_view_config(defs[2]);
    cc.hash_seed = 0x5eedull;   /* a built-in's own seed */
    sql_view *vb = sql_view_new(&cb), *vc = sql_view_new(&cc);
    assert_non_null(vb);
    assert_non_null(vc);
    for (unsigned n = 1; n <= 2; n++)
        for (unsigned idx = 0; idx < n; idx++) {
            cf_sqlx *fast, *slow;
            fast_and_generic(set, idx, n, &fast, &slow);
            unsigned seed = 3 + n;
            for (uint64_t i = 1; i <= 400; i++) {
                cf_event ev;
                click_of(i, &seed, &ev);
                sql_value cols[CF_SQLX_CLICK_COLUMNS];
                cf_sqlx_click_row(&ev, cols);
                cf_sqlx_memo memo;
                cf_sqlx_memo_reset(&memo);
                uint64_t kh, ah[CF_SQLX_AHEAD_AGGS];
                assert_true(cf_sqlx_def_ahead(defs[1], vb, cols, &memo, &kh, ah));
                assert_true(cf_sqlx_def_ahead(defs[2], vc, cols, &memo, &kh, ah));
                cf_sqlx_event_row(fast, cols, ev.ts, &memo, i, ev.ts - 1000, ev.ts,
                                  CF_SQLX_ALL_VIEWS);
                cf_sqlx_event(slow, &ev, i, ev.ts - 1000, ev.ts, CF_SQLX_ALL_VIEWS);
            }
            assert_int_equal(cf_sqlx_errors(fast), 0);
            assert_int_equal(cf_sqlx_errors(slow), 0);
            assert_same_rows_and_state_then_free(fast, slow, NCLICK_VIEWS);
        }
    sql_view_free(vb);
    sql_view_free(vc);
    for (size_t i = 0; i < NCLICK_VIEWS; i++)
        cf_sqlx_def_unref(defs[i]);
    cf_sqlx_set_unref(set);
}

/* cf_sqlx_click_row writes each column once, NULLs too: over a buffer full
 * of stale values, a click without optional fields or enrichment gives a
 * row of its five values and NULLs (is_bot FALSE), and an enriched one its
 * enrichment by column name. */
static void test_click_row_every_column(void **state)
{
    (void)state;
    sql_catalog *c = sql_catalog_new();
    assert_non_null(c);
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    const sql_object *o = sql_catalog_find(c, "clicks");
    assert_non_null(o);
    assert_int_equal(o->ncolumns, CF_SQLX_CLICK_COLUMNS);
    cf_event ev = {.ts = 1234, .user_id = "u", .user_id_len = 1, .page_url = "/p",
                   .page_url_len = 2};
    sql_value cols[CF_SQLX_CLICK_COLUMNS];
    for (int i = 0; i < CF_SQLX_CLICK_COLUMNS; i++)
        cols[i] = sql_bigint(77);   /* stale */
    cf_sqlx_click_row(&ev, cols);
    for (uint32_t i = 0; i < o->ncolumns; i++) {
        const char *name = o->columns[i].name;
        if (strcmp(name, "user_id") == 0 || strcmp(name, "page_url") == 0 ||
            strcmp(name, "name") == 0)
            assert_int_equal(cols[i].type, SQL_STRING);
        else if (strcmp(name, "timestamp") == 0)
            assert_int_equal(cols[i].u.i, 1234);
        else if (strcmp(name, "is_bot") == 0)
            assert_true(cols[i].type == SQL_BOOLEAN && !cols[i].u.b);
        else if (cols[i].type != SQL_NULL)
            fail_msg("column %s is not NULL", name);
    }
    ev.enrich.is_bot = true;
    for (int k = 0; k < CF_COL_COUNT; k++) {
        ev.enrich.col[k] = cf_enrich_col_name(k);   /* its own name as its value */
        ev.enrich.len[k] = (uint16_t)strlen(cf_enrich_col_name(k));
    }
    cf_sqlx_click_row(&ev, cols);
    for (uint32_t i = 0; i < o->ncolumns; i++)
        for (int k = 0; k < CF_COL_COUNT; k++)
            if (strcmp(o->columns[i].name, cf_enrich_col_name(k)) == 0)
                assert_true(cols[i].type == SQL_STRING && cols[i].len == ev.enrich.len[k] &&
                            memcmp(cols[i].u.s, ev.enrich.col[k], cols[i].len) == 0);
    sql_catalog_free(c);
}

/* The bot filter NOT COALESCE(b, FALSE) of a BOOLEAN column is recognised
 * (and read off the row), other shapes are not; either way a click's
 * verdict is the program's, for is_bot NULL, TRUE and FALSE. */
static void test_bot_filter_inline(void **state)
{
    (void)state;
    static const struct {
        const char *where;
        bool inline_;
    } cases[] = {
        {"NOT COALESCE(is_bot, FALSE)", true},
        {"NOT COALESCE(is_bot, TRUE)", false},
        {"COALESCE(is_bot, FALSE)", false},
        {"NOT is_bot", false},
        {"NOT COALESCE(is_bot, FALSE) AND page_url <> '/a'", false},
    };
    sql_catalog *c = sql_catalog_new();
    assert_non_null(c);
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    cf_sqlx *x = cf_sqlx_new(0, 1, 10);
    assert_non_null(x);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char sql[256];
        snprintf(sql, sizeof sql,
                 "CREATE VIEW v AS SELECT page_url, COUNT(*) AS n FROM clicks WHERE %s "
                 "GROUP BY page_url", cases[i].where);
        sql_plan *p = plan_one(c, sql, false);
        const sql_prog *filter = sql_plan_get(p)->filter;
        cf_sqlx_def *d = cf_sqlx_def_new(p, true, 0, 0);
        assert_non_null(d);
        assert_int_equal(cf_sqlx_def_where_inline(d), cases[i].inline_);
        for (int bot = 0; bot < 3; bot++) {   /* NULL (not enriched), FALSE, TRUE */
            cf_event ev = {.ts = 5, .user_id = "u", .user_id_len = 1, .page_url = "/b",
                           .page_url_len = 2};
            ev.enrich.is_bot = bot == 2;
            sql_value cols[CF_SQLX_CLICK_COLUMNS];
            cf_sqlx_click_row(&ev, cols);
            if (bot == 0)
                for (uint32_t k = 0; k < CF_SQLX_CLICK_COLUMNS; k++)
                    if (strcmp(sql_catalog_find(c, "clicks")->columns[k].name, "is_bot") == 0)
                        cols[k] = sql_null();
            char buf[256];
            sql_scratch sc = {.buf = buf, .cap = sizeof buf};
            sql_row row = {.v = cols, .n = CF_SQLX_CLICK_COLUMNS, .rowtime = 5};
            sql_value f;
            assert_int_equal(sql_prog_eval(filter, &row, &sc, &f), 0);
            assert_int_equal(cf_sqlx_def_where(x, d, cols, 5), sql_value_is_true(f));
        }
        cf_sqlx_def_unref(d);
    }
    cf_sqlx_free(x);
    sql_catalog_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_route_key_is_each_sides_join_key),
        cmocka_unit_test(test_pair_in_both_orders),
        cmocka_unit_test(test_buffers_survive_a_snapshot_part),
        cmocka_unit_test(test_fast_view_row_matches_generic),
        cmocka_unit_test(test_fast_probe_matches_generic),
        cmocka_unit_test(test_event_row_matches_generic),
        cmocka_unit_test(test_click_row_every_column),
        cmocka_unit_test(test_bot_filter_inline),
    };
    return cmocka_run_group_tests_name("sql_exec", tests, NULL, NULL);
}
