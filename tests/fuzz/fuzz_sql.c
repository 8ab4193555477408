/* Fuzz harness for the SQL front end: parse arbitrary text, plan every
 * statement against a small catalog (applying DDL as the server would),
 * render EXPLAIN, check that canonical expression text parses back to
 * itself, and run every compiled program over sample rows. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sql_parse.h"
#include "sql_plan.h"

static const char setup_sql[] =
    "CREATE STREAM orders (order_id STRING NOT NULL, customer_id STRING, amount DOUBLE, qty BIGINT,"
    " items ARRAY<STRING>, meta JSON, ts TIMESTAMP, ok BOOLEAN) WITH (TIMESTAMP = 'ts', EVENT_ID = 'order_id');"
    "CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING, country STRING);"
    "CREATE VIEW pages AS SELECT page_url, COUNT(*) AS count FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE)"
    " GROUP BY page_url;";

static void apply_all(sql_catalog *c, const char *sql, size_t len)
{
    sql_error err;
    sql_script *s = sql_parse(sql, len, &err);
    for (size_t i = 0; s && i < sql_script_count(s); i++) {
        sql_plan *p = sql_plan_new(c, sql_script_stmt(s, i), &err);
        if (p)
            sql_plan_apply(p, c, &err);
        sql_plan_free(p);
    }
    sql_script_free(s);
}

/* A sample value of each type, so programs see real data. */
static sql_value sample(sql_type t, int k)
{
    static const char json[] = "{\"plan\":\"pro\",\"n\":3,\"a\":{\"b\":[1,\"x\"]},\"s\":\"q\\u00e9\\\"\"}";
    static const char arr[] = "[\"a\",\"b\"]";
    if (k == 1)
        return sql_null();
    switch (t) {
    case SQL_BOOLEAN: return sql_bool(k == 0);
    case SQL_BIGINT: return sql_bigint(k == 0 ? 7 : INT64_MIN);
    case SQL_DOUBLE: return sql_double(k == 0 ? 2.5 : -0.0);
    case SQL_STRING: return k == 0 ? sql_string("https://a.example/x?q=1%41", 26) : sql_string("", 0);
    case SQL_TIMESTAMP: return sql_timestamp(k == 0 ? 1764000000000 : -1);
    case SQL_ARRAY: return (sql_value){.type = SQL_ARRAY, .len = sizeof arr - 1, .u.s = arr};
    case SQL_JSON: return (sql_value){.type = SQL_JSON, .len = sizeof json - 1, .u.s = json};
    default: return sql_null();
    }
}

static void run_prog(const sql_prog *p, const sql_value *v, uint32_t n)
{
    static char buf[4096];
    if (!p)
        return;
    sql_scratch sc = {buf, sizeof buf, 0};
    sql_row row = {v, n, 1764000000000};
    sql_value out;
    int rc = sql_prog_eval(p, &row, &sc, &out);
    FUZZ_CHECK(rc == 0 || rc == -28 /* ENOSPC */);
    FUZZ_CHECK(sc.used <= sc.cap);
    if (rc != 0)
        return;
    if ((out.type == SQL_STRING || out.type == SQL_JSON || out.type == SQL_ARRAY) && out.len)
        FUZZ_CHECK(out.u.s != NULL);
    /* Every value renders, and equals itself (no NaN escapes the VM). */
    sql_sb sb = {0};
    sql_value_to_json(out, &sb);
    FUZZ_CHECK(sb.oom || sb.len > 0);
    sql_sb_free(&sb);
    if (out.type != SQL_NULL)
        FUZZ_CHECK(sql_value_compare(out, out) == 0);
}

static void run_plan(const sql_plan_info *pi)
{
    sql_value in[64], grp[64];
    for (int k = 0; k < 3; k++) {
        uint32_t n = pi->ninput < 64 ? pi->ninput : 64;
        for (uint32_t i = 0; i < n; i++)
            in[i] = sample(pi->input[i].type, k);
        run_prog(pi->filter, in, n);
        run_prog(pi->unnest, in, n);
        for (uint32_t i = 0; i < pi->ngroup_keys; i++)
            run_prog(pi->group_keys[i], in, n);
        for (uint32_t i = 0; i < pi->naggs; i++)
            run_prog(pi->aggs[i].arg, in, n);
        for (uint32_t i = 0; i < pi->njoin_keys; i++) {
            run_prog(pi->left_keys[i], in, n);
            if (pi->right_offset < n)  /* wide declared streams are cut at 64 columns */
                run_prog(pi->right_keys[i], in + pi->right_offset, n - pi->right_offset);
        }
        for (uint32_t i = 0; i < pi->norder_by; i++)
            run_prog(pi->order_by[i], in, n);
        const sql_value *cols = in;
        uint32_t ncols = n;
        if (pi->aggregate) {
            ncols = SQL_PLAN_GROUP_ROW_KEYS + pi->ngroup_keys + pi->naggs;
            ncols = ncols < 64 ? ncols : 64;
            for (uint32_t i = 0; i < ncols; i++)
                grp[i] = i < 2 ? sql_timestamp(60000 * i) : sample(i < 2 + pi->ngroup_keys ? SQL_STRING : SQL_BIGINT, k);
            cols = grp;
        }
        for (uint32_t i = 0; i < pi->ncolumns; i++)
            run_prog(pi->columns[i].prog, cols, ncols);
    }
}

/* Every expression's canonical text parses back to the same text. */
static void check_canonical(const sql_expr *e)
{
    if (!e)
        return;
    sql_sb a = {0}, b = {0};
    sql_expr_to_sql(e, &a);
    if (a.oom || !a.data)
        goto out;
    const sql_expr *e2 = NULL;
    sql_error err;
    sql_script *s = sql_parse_expr(a.data, a.len, &e2, &err);
    /* Depth may exceed the limit after parentheses are added; else it
     * must read back. */
    if (s) {
        sql_expr_to_sql(e2, &b);
        FUZZ_CHECK(b.oom || (b.len == a.len && memcmp(a.data, b.data, a.len) == 0));
        sql_script_free(s);
    } else {
        FUZZ_CHECK(strstr(err.message, "nested too deeply") != NULL || strstr(err.message, "memory") != NULL);
    }
out:
    sql_sb_free(&a);
    sql_sb_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 65536)
        return 0;
    sql_catalog *cat = sql_catalog_new();
    if (!cat || sql_catalog_add_clicks(cat) < 0) {
        sql_catalog_free(cat);
        return 0;
    }
    apply_all(cat, setup_sql, strlen(setup_sql));

    /* An exact-size copy: the parser must never read past `size`. */
    char *src = malloc(size ? size : 1);
    if (!src) {
        sql_catalog_free(cat);
        return 0;
    }
    memcpy(src, data, size);
    sql_error err;
    memset(&err, 0, sizeof err);
    sql_script *s = sql_parse(src, size, &err);
    if (!s) {
        FUZZ_CHECK(err.message[0] != '\0');
        FUZZ_CHECK(err.line >= 0 && err.column >= 0);
        FUZZ_CHECK(memchr(err.message, '\0', sizeof err.message) != NULL);
    }
    for (size_t i = 0; s && i < sql_script_count(s); i++) {
        const sql_stmt *st = sql_script_stmt(s, i);
        FUZZ_CHECK(st->text >= src && st->text + st->text_len <= src + size);
        if (st->select) {
            for (uint32_t k = 0; k < st->select->nitems; k++)
                check_canonical(st->select->items[k].expr);
            check_canonical(st->select->where);
        }
        sql_plan *p = sql_plan_new(cat, st, &err);
        if (!p) {
            FUZZ_CHECK(err.message[0] != '\0');
            continue;
        }
        const sql_plan_info *pi = sql_plan_get(p);
        if (pi->kind == SQL_PLAN_EXPLAIN)
            FUZZ_CHECK(pi->explain_text && pi->explain_json);
        run_plan(pi);
        size_t before = sql_catalog_count(cat);
        int rc = sql_plan_apply(p, cat, &err);
        if (rc == 0 && pi->kind == SQL_PLAN_DROP)
            FUZZ_CHECK(sql_catalog_count(cat) == before - 1);
        sql_plan_free(p);
    }
    sql_script_free(s);
    free(src);
    sql_catalog_free(cat);
    return 0;
}
