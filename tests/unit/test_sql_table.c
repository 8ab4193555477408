/* Unit tests for sql_table: keyed rows of a SQL table and the stream-table
 * join step (SPEC 12, 14). The caller applies upserts, deletes and events
 * in log order; each event must see the row as of its place in that order,
 * which a naive reference (the latest upsert or delete of each key, found
 * by scanning the log backwards) checks on random logs, also across a
 * save/load and a split by key into three tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "sql_expr.h"
#include "sql_pack.h"
#include "sql_table.h"

/* users (user_id STRING PRIMARY KEY, plan STRING, seats BIGINT) */
#define NC 3
/* clicks row: (user_id, page) */
#define NE 2

static sql_table_config config(size_t max_keys)
{
    sql_table_config c = {.ncols = NC, .key_column = 0, .max_keys = max_keys};
    for (int i = 0; i < 16; i++)
        c.hash_key[i] = (uint8_t)(i * 13 + 5);
    return c;
}

static int upsert(sql_table *t, const char *user, const char *plan, int64_t seats)
{
    sql_value v[NC] = {sql_string(user, (uint32_t)strlen(user)), sql_string(plan, (uint32_t)strlen(plan)),
                       sql_bigint(seats)};
    sql_row row = {.v = v, .n = NC};
    return sql_table_upsert(t, &row);
}

static int del(sql_table *t, const char *user)
{
    return sql_table_delete(t, sql_string(user, (uint32_t)strlen(user)));
}

typedef struct got {
    int n;
    char last[256];
} got;

static void fmt(char *buf, size_t cap, const sql_value *v, uint32_t n, int64_t t)
{
    int w = snprintf(buf, cap, "t%" PRId64, t);
    for (uint32_t i = 0; i < n && (size_t)w < cap; i++) {
        sql_value x = v[i];
        if (x.type == SQL_NULL)
            w += snprintf(buf + w, cap - (size_t)w, " null");
        else if (x.type == SQL_BIGINT)
            w += snprintf(buf + w, cap - (size_t)w, " %" PRId64, x.u.i);
        else if (x.type == SQL_DOUBLE)
            w += snprintf(buf + w, cap - (size_t)w, " %g", x.u.d);
        else
            w += snprintf(buf + w, cap - (size_t)w, " %.*s", (int)x.len, x.u.s);
    }
}

static void capture(void *ctx, const sql_row *row)
{
    got *g = ctx;
    g->n++;
    fmt(g->last, sizeof g->last, row->v, row->n, row->rowtime);
}

/* One click by user on page at t through the join; returns what came out
 * ("" when nothing). */
static const char *click(sql_table *t, bool left, const char *user, const char *page, int64_t ts, got *g)
{
    sql_value v[NE] = {sql_string(user, (uint32_t)strlen(user)), sql_string(page, (uint32_t)strlen(page))};
    sql_row row = {.v = v, .n = NE, .rowtime = ts};
    int before = g->n;
    int rc = sql_table_join(t, left, v[0], &row, capture, g);
    assert_int_equal(rc, g->n - before);
    return g->n > before ? g->last : "";
}

static void upsert_then_event_event_then_upsert_delete_then_event(void **state)
{
    (void)state;
    sql_table_config c = config(0);
    sql_table *t = sql_table_new(&c);
    assert_non_null(t);
    got g = {0};
    /* An event before any row: INNER drops it, LEFT fills NULLs. */
    assert_string_equal(click(t, false, "u1", "/a", 10, &g), "");
    assert_string_equal(click(t, true, "u1", "/a", 10, &g), "t10 u1 /a null null null");
    /* Upsert, then event: the row. */
    assert_int_equal(upsert(t, "u1", "free", 1), 0);
    assert_string_equal(click(t, false, "u1", "/b", 11, &g), "t11 u1 /b u1 free 1");
    /* Upsert of the same key replaces; the next event sees the new row. */
    assert_int_equal(upsert(t, "u1", "pro", 5), 0);
    assert_string_equal(click(t, true, "u1", "/c", 12, &g), "t12 u1 /c u1 pro 5");
    /* Delete, then event: gone again. */
    assert_int_equal(del(t, "u1"), 0);
    assert_int_equal(del(t, "u1"), -ENOENT);
    assert_string_equal(click(t, false, "u1", "/d", 13, &g), "");
    assert_string_equal(click(t, true, "u1", "/d", 13, &g), "t13 u1 /d null null null");
    /* A NULL key finds nothing. */
    sql_value nv[NE] = {sql_null(), sql_string("/e", 2)};
    sql_row nrow = {.v = nv, .n = NE, .rowtime = 14};
    assert_int_equal(sql_table_join(t, false, sql_null(), &nrow, capture, &g), 0);
    sql_table_stats st;
    sql_table_stats_get(t, &st);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.misses, 5);
    assert_int_equal(st.upserts, 2);
    assert_int_equal(st.deletes, 1);
    assert_int_equal(st.rows, 0);
    assert_int_equal(st.bytes, 0);
    sql_table_free(t);
}

static void keys_compare_by_value(void **state)
{
    (void)state;
    sql_table_config c = {.ncols = 2, .key_column = 1};
    sql_table *t = sql_table_new(&c);
    sql_value v[2] = {sql_string("x", 1), sql_bigint(42)};
    sql_row row = {.v = v, .n = 2};
    assert_int_equal(sql_table_upsert(t, &row), 0);
    sql_value out[2];
    assert_int_equal(sql_table_get(t, sql_double(42.0), out), 1);
    assert_int_equal(out[1].type, SQL_BIGINT);
    assert_int_equal(out[1].u.i, 42);
    assert_int_equal(sql_table_get(t, sql_double(42.5), out), 0);
    assert_int_equal(sql_table_get(t, sql_string("42", 2), out), 0);
    assert_int_equal(sql_table_get(t, sql_null(), out), -EINVAL);
    sql_table_free(t);
}

static void bad_rows_change_nothing(void **state)
{
    (void)state;
    sql_table_config c = config(2);
    sql_table *t = sql_table_new(&c);
    sql_value v[NC] = {sql_null(), sql_string("free", 4), sql_bigint(1)};
    sql_row row = {.v = v, .n = NC};
    assert_int_equal(sql_table_upsert(t, &row), -EINVAL); /* a row without its key */
    v[0] = sql_double(NAN);
    assert_int_equal(sql_table_upsert(t, &row), -EINVAL);
    row.n = NC - 1;
    v[0] = sql_string("u", 1);
    assert_int_equal(sql_table_upsert(t, &row), -EINVAL); /* wrong width */
    assert_int_equal(upsert(t, "a", "free", 1), 0);
    assert_int_equal(upsert(t, "b", "free", 1), 0);
    /* Full: a new key is refused, not evicted; held keys still update. */
    assert_int_equal(upsert(t, "c", "free", 1), -ENOSPC);
    assert_int_equal(upsert(t, "a", "pro", 2), 0);
    sql_value out[NC];
    assert_int_equal(sql_table_get(t, sql_string("b", 1), out), 1);
    assert_int_equal(sql_table_get(t, sql_string("c", 1), out), 0);
    sql_table_stats st;
    sql_table_stats_get(t, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.rows, 2);
    /* A delete makes room. */
    assert_int_equal(del(t, "b"), 0);
    assert_int_equal(upsert(t, "c", "free", 1), 0);
    assert_null(sql_table_new(&(sql_table_config){.ncols = 2, .key_column = 2}));
    assert_null(sql_table_new(&(sql_table_config){.ncols = 0}));
    sql_table_free(NULL);
    sql_table_free(t);
}

/* ---- random logs against a naive reference ------------------------------- */

typedef struct op {
    int kind;           /* 0 upsert, 1 delete, 2 event */
    char user[8];
    char plan[8];
    int64_t seats;
    bool left;
} op;

/* The reference: the latest upsert or delete of user before position i. */
static const op *ref_row(const op *ops, size_t i, const char *user)
{
    for (size_t k = i; k-- > 0;) {
        if (ops[k].kind == 2 || strcmp(ops[k].user, user) != 0)
            continue;
        return ops[k].kind == 0 ? &ops[k] : NULL;
    }
    return NULL;
}

#define NPARTS 3

static unsigned part_of_user(const char *user)
{
    sql_value k = sql_string(user, (uint32_t)strlen(user));
    cf_buf b = {0};
    sql_pack_key(&k, 1, &b);
    unsigned p = (unsigned)(cf_hash64(b.data, b.len, 0) % NPARTS);
    cf_buf_free(&b);
    return p;
}

static bool keep_part(void *ctx, const void *key, size_t len)
{
    return cf_hash64(key, len, 0) % NPARTS == *(const unsigned *)ctx;
}

static void run_log(uint64_t seed, int mode /* 0 plain, 1 save/load, 2 split */)
{
    uint64_t s = seed;
#define RND() (s = s * 6364136223846793005ULL + 1442695040888963407ULL, s >> 33)
    size_t n = 2000;
    op *ops = calloc(n, sizeof *ops);
    sql_table_config c = config(0);
    sql_table *parts[NPARTS] = {sql_table_new(&c)};
    bool split = false;
    for (size_t i = 0; i < n; i++) {
        op *o = &ops[i];
        uint64_t r = RND() % 10;
        o->kind = r < 3 ? 0 : r < 4 ? 1 : 2;
        snprintf(o->user, sizeof o->user, "u%d", (int)(RND() % 40));
        snprintf(o->plan, sizeof o->plan, "p%d", (int)(RND() % 5));
        o->seats = (int64_t)(RND() % 100);
        o->left = RND() % 2;
        if (i == n / 2 && mode) {
            cf_buf b = {0};
            assert_int_equal(sql_table_save(parts[0], &b), 0);
            sql_table_stats before;
            sql_table_stats_get(parts[0], &before);
            sql_table_free(parts[0]);
            size_t rows = 0;
            for (unsigned p = 0; p < (mode == 2 ? NPARTS : 1u); p++) {
                parts[p] = sql_table_new(&c);
                cf_reader rd;
                cf_reader_init(&rd, b.data, b.len);
                unsigned idx = p;
                assert_int_equal(sql_table_load(parts[p], &rd, mode == 2 ? keep_part : NULL, &idx), 0);
                sql_table_stats st;
                sql_table_stats_get(parts[p], &st);
                rows += st.rows;
            }
            assert_int_equal(rows, before.rows);
            split = mode == 2;
            cf_buf_free(&b);
        }
        sql_table *t = parts[split ? part_of_user(o->user) : 0];
        if (o->kind == 0) {
            assert_int_equal(upsert(t, o->user, o->plan, o->seats), 0);
        } else if (o->kind == 1) {
            int rc = del(t, o->user);
            bool present = ref_row(ops, i, o->user) != NULL;
            assert_int_equal(rc, present ? 0 : -ENOENT);
        } else {
            got g = {0};
            const char *res = click(t, o->left, o->user, "/p", (int64_t)i, &g);
            const op *want = ref_row(ops, i, o->user);
            char exp[256] = "";
            if (want)
                snprintf(exp, sizeof exp, "t%zu %s /p %s %s %" PRId64, i, o->user, want->user, want->plan,
                         want->seats);
            else if (o->left)
                snprintf(exp, sizeof exp, "t%zu %s /p null null null", i, o->user);
            assert_string_equal(res, exp);
        }
    }
    for (unsigned p = 0; p < NPARTS; p++)
        sql_table_free(parts[p]);
    free(ops);
#undef RND
}

static void random_logs_match_the_reference(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        run_log(seed, 0);
        run_log(seed, 1);
        run_log(seed, 2);
    }
}

static void malformed_snapshots_are_refused(void **state)
{
    (void)state;
    sql_table_config c = config(0);
    sql_table *t = sql_table_new(&c);
    for (int i = 0; i < 10; i++) {
        char u[8];
        snprintf(u, sizeof u, "u%d", i);
        assert_int_equal(upsert(t, u, "free", i), 0);
    }
    cf_buf b = {0};
    assert_int_equal(sql_table_save(t, &b), 0);
    for (size_t len = 0; len < b.len; len++) {
        sql_table *k = sql_table_new(&c);
        cf_reader r;
        cf_reader_init(&r, b.data, len);
        assert_int_equal(sql_table_load(k, &r, NULL, NULL), -EINVAL);
        sql_table_free(k);
    }
    /* Twice the same rows: refused; another width: refused. */
    sql_table *k = sql_table_new(&c);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_table_load(k, &r, NULL, NULL), 0);
    sql_value out[NC];
    assert_int_equal(sql_table_get(k, sql_string("u7", 2), out), 1);
    assert_int_equal(out[2].u.i, 7);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_table_load(k, &r, NULL, NULL), -EINVAL);
    sql_table_free(k);
    sql_table_config other = {.ncols = NC + 1, .key_column = 0};
    k = sql_table_new(&other);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(sql_table_load(k, &r, NULL, NULL), -EINVAL);
    sql_table_free(k);
    cf_buf_free(&b);
    sql_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(upsert_then_event_event_then_upsert_delete_then_event),
        cmocka_unit_test(keys_compare_by_value),
        cmocka_unit_test(bad_rows_change_nothing),
        cmocka_unit_test(random_logs_match_the_reference),
        cmocka_unit_test(malformed_snapshots_are_refused),
    };
    return cmocka_run_group_tests_name("sql_table", tests, NULL, NULL);
}
