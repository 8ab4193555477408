/* Unit tests for sql_plan: the catalog, name binding, the SPEC 13 naming
 * rule, static types, aggregates and the group row, joins, UNNEST, pull
 * queries, partitioning, EXPLAIN, DDL with dependencies, and a table of bad
 * statements (syntax and semantic) with message, line and column. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_parse.h"
#include "sql_plan.h"
#include "unit_util.h"

static const char setup_sql[] =
    "CREATE STREAM orders (order_id STRING NOT NULL, customer_id STRING, amount DOUBLE, qty BIGINT,\n"
    "  items ARRAY<STRING>, meta JSON, ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'order_id');\n"
    "CREATE STREAM payments (order_id STRING, customer_id STRING, paid DOUBLE, ts TIMESTAMP) WITH (TIMESTAMP = 'ts');\n"
    "CREATE TABLE users (user_id STRING PRIMARY KEY, plan STRING, country STRING);\n"
    "CREATE VIEW pages AS SELECT page_url, COUNT(*) AS count, COUNT(DISTINCT user_id) AS unique_users\n"
    "  FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url;\n"
    "CREATE STREAM big AS SELECT order_id, amount * 2 AS dbl, meta.plan FROM orders WHERE amount > 100;\n";

/* Plans and applies every statement; returns the first error or 0. */
static int run(sql_catalog *c, const char *sql, sql_error *err)
{
    sql_script *s = sql_parse(sql, strlen(sql), err);
    if (!s)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < sql_script_count(s) && rc == 0; i++) {
        sql_plan *p = sql_plan_new(c, sql_script_stmt(s, i), err);
        if (!p) {
            rc = -1;
            break;
        }
        rc = sql_plan_apply(p, c, err);
        sql_plan_free(p);
    }
    sql_script_free(s);
    return rc;
}

static sql_catalog *catalog(void)
{
    sql_catalog *c = sql_catalog_new();
    assert_non_null(c);
    assert_int_equal(sql_catalog_add_clicks(c), 0);
    sql_error err = {0};
    if (run(c, setup_sql, &err) != 0)
        fail_msg("setup: %d:%d %s", err.line, err.column, err.message);
    return c;
}

/* Plans the single statement sql against the setup catalog. The script
 * is freed at once: the plan must not point into it. */
static sql_plan *plan1(sql_catalog *c, const char *sql)
{
    sql_error err = {0};
    char *copy = strdup(sql);
    sql_script *s = sql_parse(copy, strlen(copy), &err);
    if (!s)
        fail_msg("parse: %d:%d %s\n  %s", err.line, err.column, err.message, sql);
    assert_int_equal(sql_script_count(s), 1);
    sql_plan *p = sql_plan_new(c, sql_script_stmt(s, 0), &err);
    if (!p)
        fail_msg("plan: %d:%d %s\n  %s", err.line, err.column, err.message, sql);
    sql_script_free(s);
    memset(copy, 'x', strlen(copy));
    free(copy);
    return p;
}

static void assert_columns(const sql_plan_info *pi, const char *const *names, const sql_type *types, uint32_t n)
{
    assert_int_equal(pi->ncolumns, n);
    for (uint32_t i = 0; i < n; i++) {
        if (strcmp(pi->columns[i].name, names[i]) != 0 || pi->columns[i].type != types[i])
            fail_msg("column %u: %s %s, want %s %s", i, pi->columns[i].name, sql_type_name(pi->columns[i].type),
                     names[i], sql_type_name(types[i]));
    }
}

static sql_value eval(const sql_prog *p, const sql_value *v, uint32_t n)
{
    static char buf[1024];
    sql_scratch sc = {buf, sizeof buf, 0};
    sql_row r = {v, n, 1000};
    sql_value out;
    assert_int_equal(sql_prog_eval(p, &r, &sc, &out), 0);
    return out;
}

/* -- catalog ------------------------------------------------------------------ */

static void catalog_basics(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    const sql_object *o = sql_catalog_find(c, "orders");
    assert_non_null(o);
    assert_int_equal(o->kind, SQL_OBJ_STREAM);
    assert_int_equal(o->ncolumns, 7);
    assert_int_equal(o->timestamp_column, 6);
    assert_int_equal(o->event_id_column, 0);
    assert_true(o->columns[0].not_null);
    assert_int_equal(o->columns[4].elem, SQL_STRING);
    assert_non_null(strstr(o->sql, "CREATE STREAM orders"));
    const sql_object *u = sql_catalog_find(c, "users");
    assert_int_equal(u->kind, SQL_OBJ_TABLE);
    assert_int_equal(u->key_column, 0);
    const sql_object *v = sql_catalog_find(c, "pages");
    assert_int_equal(v->kind, SQL_OBJ_VIEW);
    assert_true(v->windowed);
    /* page_url, count, unique_users + WINDOWSTART, WINDOWEND, revision, final */
    assert_int_equal(v->ncolumns, 7);
    assert_string_equal(v->columns[3].name, "WINDOWSTART");
    assert_string_equal(v->columns[6].name, "final");
    assert_int_equal(v->nsources, 1);
    assert_string_equal(v->sources[0], "clicks");
    assert_string_equal(v->partition, "page_url");
    const sql_object *b = sql_catalog_find(c, "big");
    assert_true(b->derived);
    assert_string_equal(b->columns[2].name, "plan");
    assert_int_equal(b->columns[2].type, SQL_JSON);

    /* A clone is independent: the all-or-nothing pattern. */
    sql_catalog *d = sql_catalog_clone(c);
    assert_non_null(d);
    assert_int_equal(sql_catalog_remove(d, "big"), 0);
    assert_null(sql_catalog_find(d, "big"));
    assert_non_null(sql_catalog_find(c, "big"));
    assert_int_equal(sql_catalog_count(d) + 1, sql_catalog_count(c));
    assert_int_equal(sql_catalog_remove(d, "big"), -ENOENT);
    sql_object dup = *o;
    assert_int_equal(sql_catalog_add(d, &dup), -EEXIST);
    sql_catalog_free(d);
    sql_catalog_free(c);
    sql_catalog_free(NULL);
}

static void drop_respects_readers(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_error err = {0};
    assert_int_equal(run(c, "CREATE VIEW byplan AS SELECT plan, COUNT(*) FROM big GROUP BY plan", &err), 0);
    assert_int_equal(run(c, "DROP STREAM big", &err), -1);
    assert_string_equal(err.message, "can't drop 'big': read by byplan");
    assert_int_equal(run(c, "DROP STREAM orders", &err), -1);
    assert_string_equal(err.message, "can't drop 'orders': read by big");
    assert_int_equal(run(c, "DROP VIEW byplan; DROP STREAM big; DROP STREAM orders", &err), 0);
    assert_null(sql_catalog_find(c, "orders"));
    assert_null(sql_catalog_find(c, "byplan"));
    /* The name is free again. */
    assert_int_equal(run(c, "CREATE STREAM big AS SELECT page_url FROM clicks", &err), 0);
    sql_catalog_free(c);
}

/* -- naming and types -------------------------------------------------------------- */

/* A view marked built in (the dashboard panels) can't be dropped, and the
 * mark survives a clone (each request plans against a clone). */
static void builtin_views_are_not_droppable(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_error err = {0};
    assert_int_equal(sql_catalog_set_builtin(c, "nosuch"), -ENOENT);
    assert_int_equal(sql_catalog_set_builtin(c, "pages"), 0);
    sql_catalog *d = sql_catalog_clone(c);
    assert_non_null(d);
    assert_true(sql_catalog_find(d, "pages")->builtin);
    assert_int_equal(run(d, "DROP VIEW pages", &err), -1);
    assert_string_equal(err.message, "'pages' is built in and can't be dropped");
    assert_non_null(sql_catalog_find(d, "pages"));
    sql_catalog_free(d);
    sql_catalog_free(c);
}

static void naming_rule(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "CREATE STREAM s AS SELECT page_url, user_id AS who, properties.plan, c.element,\n"
                           "  1 + 1, LOWER(page_url), properties.a.b, ROWTIME FROM clicks c");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->kind, SQL_PLAN_DERIVED_STREAM);
    static const char *const names[] = {"page_url", "who", "plan", "element", "col_5", "col_6", "b", "ROWTIME"};
    static const sql_type types[] = {SQL_STRING, SQL_STRING, SQL_JSON, SQL_STRING, SQL_BIGINT, SQL_STRING,
                                     SQL_JSON, SQL_TIMESTAMP};
    assert_columns(pi, names, types, 8);
    assert_string_equal(pi->columns[4].text, "(1 + 1)");
    assert_int_equal(pi->object->ncolumns, 8);
    sql_plan_free(p);

    /* `*` expands to the input row's columns. */
    p = plan1(c, "CREATE STREAM s AS SELECT * FROM orders WHERE qty > 1");
    pi = sql_plan_get(p);
    assert_int_equal(pi->ncolumns, 7);
    assert_string_equal(pi->columns[4].name, "items");
    assert_int_equal(pi->columns[4].elem, SQL_STRING);
    sql_plan_free(p);
    sql_catalog_free(c);
}

static void types_of_outputs(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c,
        "CREATE VIEW v AS SELECT customer_id, COUNT(*) AS n, COUNT(amount) AS na, COUNT(DISTINCT order_id) AS nd,\n"
        "  SUM(qty) AS sq, SUM(amount) AS sa, AVG(qty) AS aq, MIN(amount) AS mina, MAX(order_id) AS maxo,\n"
        "  EARLIEST(ts) AS first_ts, LATEST(meta.plan) AS lp, TOPK(order_id, 3) AS top, SUM(qty) * 2 AS sq2,\n"
        "  SUM(qty) / 2.0 AS half\n"
        "FROM orders GROUP BY customer_id");
    const sql_plan_info *pi = sql_plan_get(p);
    static const char *const names[] = {"customer_id", "n", "na", "nd", "sq", "sa", "aq", "mina", "maxo",
                                        "first_ts", "lp", "top", "sq2", "half"};
    static const sql_type types[] = {SQL_STRING, SQL_BIGINT, SQL_BIGINT, SQL_BIGINT, SQL_BIGINT, SQL_DOUBLE,
                                     SQL_DOUBLE, SQL_DOUBLE, SQL_STRING, SQL_TIMESTAMP, SQL_JSON, SQL_JSON,
                                     SQL_BIGINT, SQL_DOUBLE};
    assert_columns(pi, names, types, 14);
    /* SUM(qty) is computed once for three columns. */
    assert_int_equal(pi->naggs, 11);
    assert_int_equal(pi->aggs[0].kind, SQL_PLAN_FN_COUNT);
    assert_true(pi->aggs[0].star);
    assert_null(pi->aggs[0].arg);
    assert_true(pi->aggs[2].distinct);
    assert_int_equal(pi->aggs[10].kind, SQL_PLAN_FN_TOPK);
    assert_int_equal(pi->aggs[10].param, 3);
    assert_string_equal(pi->aggs[4].text, "SUM(amount)");
    assert_int_equal(pi->emit, SQL_EMIT_CHANGES);
    assert_int_equal(pi->window, SQL_WINDOW_NONE);
    assert_int_equal(pi->state_ttl_ms, -1);
    sql_plan_free(p);
    sql_catalog_free(c);
}

/* -- aggregates: programs over the input row and the group row ------------------------ */

static void group_row_programs(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c,
        "CREATE VIEW v AS SELECT LOWER(customer_id) AS cust, COUNT(*) AS n,\n"
        "  SUM(amount) / COUNT(*) AS avg_amount, UPPER(LOWER(customer_id)) AS loud, WINDOWSTART AS ws\n"
        "FROM orders WHERE qty >= 1 WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 5 MINUTES) GRACE PERIOD 5 SECONDS\n"
        "GROUP BY LOWER(customer_id) EMIT FINAL");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->kind, SQL_PLAN_VIEW);
    assert_true(pi->aggregate);
    assert_int_equal(pi->window, SQL_WINDOW_HOPPING);
    assert_int_equal(pi->window_size_ms, 600000);
    assert_int_equal(pi->window_advance_ms, 300000);
    assert_int_equal(pi->grace_ms, 5000);
    assert_int_equal(pi->emit, SQL_EMIT_FINAL);
    assert_int_equal(pi->ngroup_keys, 1);
    assert_string_equal(pi->group_key_texts[0], "LOWER(customer_id)");
    assert_string_equal(pi->partition, "LOWER(customer_id)");
    assert_false(pi->reroute);
    assert_int_equal(pi->naggs, 2);

    /* Input row: orders' columns. */
    sql_value in[7] = {sql_string("o1", 2), sql_string("ACME", 4), sql_double(30.0), sql_bigint(2)};
    assert_true(sql_value_is_true(eval(pi->filter, in, 7)));
    sql_value key = eval(pi->group_keys[0], in, 7);
    assert_int_equal(key.type, SQL_STRING);
    assert_memory_equal(key.u.s, "acme", 4);
    sql_value amount = eval(pi->aggs[1].arg, in, 7);
    assert_true(amount.type == SQL_DOUBLE && amount.u.d == 30.0);
    in[3] = sql_bigint(0);
    assert_false(sql_value_is_true(eval(pi->filter, in, 7)));

    /* Group row: WINDOWSTART, WINDOWEND, key, COUNT(*), SUM(amount). */
    sql_value g[5] = {sql_timestamp(600000), sql_timestamp(1200000), sql_string("acme", 4), sql_bigint(4),
                      sql_double(90.0)};
    sql_value v = eval(pi->columns[0].prog, g, 5);
    assert_memory_equal(v.u.s, "acme", 4);
    v = eval(pi->columns[1].prog, g, 5);
    assert_int_equal(v.u.i, 4);
    v = eval(pi->columns[2].prog, g, 5);
    assert_true(v.type == SQL_DOUBLE && v.u.d == 22.5);
    v = eval(pi->columns[3].prog, g, 5);
    assert_memory_equal(v.u.s, "ACME", 4);  /* built on the key's slot */
    v = eval(pi->columns[4].prog, g, 5);
    assert_true(v.type == SQL_TIMESTAMP && v.u.i == 600000);
    assert_int_equal(pi->object->ncolumns, 9);
    sql_plan_free(p);

    p = plan1(c, "CREATE VIEW t WITH (STATE_TTL = '1d') AS SELECT page_url, DECAYED_COUNT(1 HOUR) AS score "
                 "FROM clicks GROUP BY page_url");
    pi = sql_plan_get(p);
    assert_int_equal(pi->state_ttl_ms, 86400000);
    assert_int_equal(pi->aggs[0].kind, SQL_PLAN_FN_DECAYED_COUNT);
    assert_int_equal(pi->aggs[0].param, 3600000);
    assert_int_equal(pi->columns[1].type, SQL_DOUBLE);
    sql_plan_free(p);

    /* Without GROUP BY: one group, no key; selecting bare WINDOWSTART adds nothing. */
    p = plan1(c, "CREATE VIEW t AS SELECT WINDOWSTART, COUNT(*) AS n FROM clicks WINDOW SESSION (30 MINUTES)");
    pi = sql_plan_get(p);
    assert_int_equal(pi->ngroup_keys, 0);
    assert_int_equal(pi->ncolumns, 1);
    assert_string_equal(pi->partition, "");
    assert_int_equal(pi->window_size_ms, 1800000);
    sql_plan_free(p);
    sql_catalog_free(c);
}

/* -- joins and UNNEST --------------------------------------------------------------- */

static void stream_stream_join(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "CREATE STREAM paid AS SELECT o.order_id, p.paid, o.amount - p.paid AS due\n"
                           "FROM orders o LEFT JOIN payments p WITHIN 1 HOUR\n"
                           "ON p.order_id = o.order_id AND LOWER(o.customer_id) = LOWER(p.customer_id)\n"
                           "GRACE PERIOD 10 SECONDS");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->join, SQL_JOIN_LEFT);
    assert_false(pi->join_table);
    assert_string_equal(pi->join_source, "payments");
    assert_int_equal(pi->within_ms, 3600000);
    assert_int_equal(pi->grace_ms, 10000);
    assert_int_equal(pi->right_offset, 7);
    assert_int_equal(pi->ninput, 11);
    assert_int_equal(pi->njoin_keys, 2);
    /* Key programs: left over the order row, right over the payment row. */
    sql_value order[7] = {sql_string("o1", 2), sql_string("ACME", 4), sql_double(10.0)};
    sql_value pay[4] = {sql_string("o1", 2), sql_string("acme", 4), sql_double(4.0)};
    sql_value lk = eval(pi->left_keys[0], order, 7), rk = eval(pi->right_keys[0], pay, 4);
    assert_int_equal(sql_value_compare(lk, rk), 0);
    lk = eval(pi->left_keys[1], order, 7);
    rk = eval(pi->right_keys[1], pay, 4);
    assert_int_equal(sql_value_compare(lk, rk), 0);
    /* Output over the joined row. */
    sql_value joined[11] = {sql_string("o1", 2), sql_string("ACME", 4), sql_double(10.0)};
    memcpy(joined + 7, pay, sizeof pay);
    sql_value due = eval(pi->columns[2].prog, joined, 11);
    assert_true(due.type == SQL_DOUBLE && due.u.d == 6.0);
    assert_string_equal(pi->partition, "o.order_id, LOWER(o.customer_id)");
    assert_false(pi->reroute);
    assert_int_equal(pi->object->nsources, 2);
    sql_plan_free(p);
    sql_catalog_free(c);
}

static void stream_table_join_and_reroute(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "CREATE VIEW byplan AS SELECT u.plan, COUNT(*) AS n FROM clicks c\n"
                           "JOIN users u ON c.user_id = u.user_id GROUP BY u.plan");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_true(pi->join_table);
    assert_int_equal(pi->join, SQL_JOIN_INNER);
    assert_int_equal(pi->within_ms, -1);
    assert_string_equal(pi->partition, "u.plan");
    assert_true(pi->reroute);  /* joined on user_id, grouped by plan */
    sql_plan_free(p);

    p = plan1(c, "CREATE VIEW byuser AS SELECT c.user_id, COUNT(*) AS n FROM clicks c\n"
                 "LEFT JOIN users u ON c.user_id = u.user_id GROUP BY c.user_id");
    assert_false(sql_plan_get(p)->reroute);
    sql_plan_free(p);

    /* A view over a derived stream keyed otherwise: re-routed. */
    p = plan1(c, "CREATE VIEW x AS SELECT plan, COUNT(*) AS n FROM big GROUP BY plan");
    assert_true(sql_plan_get(p)->reroute);
    sql_plan_free(p);
    /* A derived stream of a derived stream keeps its partitioning. */
    p = plan1(c, "CREATE STREAM bigger AS SELECT order_id FROM big WHERE dbl > 1000");
    assert_false(sql_plan_get(p)->reroute);
    sql_plan_free(p);
    sql_catalog_free(c);
}

static void unnest(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "CREATE VIEW items AS SELECT item, COUNT(*) AS n FROM orders CROSS JOIN UNNEST(items) AS item "
                           "WHERE item != 'gift' GROUP BY item");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->unnest_column, 7);
    assert_int_equal(pi->ninput, 8);
    assert_int_equal(pi->input[7].type, SQL_STRING);
    assert_string_equal(pi->input[7].name, "item");
    sql_value in[8] = {sql_string("o1", 2)};
    in[4] = (sql_value){.type = SQL_ARRAY, .len = 9, .u.s = "[\"a\",\"b\"]"};
    sql_value arr = eval(pi->unnest, in, 8);
    assert_int_equal(arr.type, SQL_ARRAY);
    in[7] = sql_string("gift", 4);
    assert_false(sql_value_is_true(eval(pi->filter, in, 8)));
    assert_true(pi->reroute);
    sql_plan_free(p);
    sql_catalog_free(c);
}

/* -- pull queries and EXPLAIN ----------------------------------------------------------- */

static void pull_queries(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "SELECT page_url, count, WINDOWEND FROM pages WHERE WINDOWSTART >= 60000 AND final\n"
                           "ORDER BY count DESC, page_url LIMIT 10");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->kind, SQL_PLAN_PULL);
    assert_int_equal(pi->source_kind, SQL_OBJ_VIEW);
    assert_int_equal(pi->ninput, 7);
    assert_int_equal(pi->norder_by, 2);
    assert_true(pi->order_desc[0]);
    assert_false(pi->order_desc[1]);
    assert_int_equal(pi->limit, 10);
    assert_null(pi->object);
    sql_value row[7] = {sql_string("/a", 2), sql_bigint(5), sql_bigint(2), sql_timestamp(60000),
                        sql_timestamp(120000), sql_bigint(0), sql_bool(true)};
    assert_true(sql_value_is_true(eval(pi->filter, row, 7)));
    row[6] = sql_bool(false);
    assert_false(sql_value_is_true(eval(pi->filter, row, 7)));
    assert_int_equal(eval(pi->order_by[0], row, 7).u.i, 5);
    assert_int_equal(eval(pi->columns[2].prog, row, 7).u.i, 120000);
    assert_string_equal(pi->columns[2].name, "WINDOWEND");
    sql_plan_free(p);

    /* ORDER BY an output name; a source column of that name wins. */
    p = plan1(c, "SELECT page_url, count * 2 AS twice, unique_users AS count FROM pages ORDER BY twice DESC, count");
    pi = sql_plan_get(p);
    assert_int_equal(eval(pi->order_by[0], row, 7).u.i, 10);
    assert_int_equal(eval(pi->order_by[1], row, 7).u.i, 5);
    sql_plan_free(p);

    p = plan1(c, "SELECT * FROM big");
    assert_int_equal(sql_plan_get(p)->ncolumns, 3);
    assert_int_equal(sql_plan_get(p)->limit, -1);
    sql_plan_free(p);
    sql_catalog_free(c);
}

static void explain(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "EXPLAIN SELECT c.page_url, u.plan, COUNT(*) AS n FROM clicks c LEFT JOIN users u\n"
                           "ON c.user_id = u.user_id WHERE c.name = 'pageview'\n"
                           "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY c.page_url, u.plan EMIT FINAL");
    const sql_plan_info *pi = sql_plan_get(p);
    assert_int_equal(pi->kind, SQL_PLAN_EXPLAIN);
    assert_null(pi->object);  /* EXPLAIN creates nothing */
    assert_non_null(strstr(pi->explain_text, "source: stream clicks"));
    assert_non_null(strstr(pi->explain_text, "join: LEFT stream-table join with table users on c.user_id = u.user_id"));
    assert_non_null(strstr(pi->explain_text, "filter: (c.name = 'pageview')"));
    assert_non_null(strstr(pi->explain_text, "window: TUMBLING size 60000 ms, grace --allowed-lateness"));
    assert_non_null(strstr(pi->explain_text, "group by: c.page_url, u.plan"));
    assert_non_null(strstr(pi->explain_text, "aggregates: COUNT(*) BIGINT"));
    assert_non_null(strstr(pi->explain_text, "partition: c.page_url, u.plan (re-routed to the key's shard)"));
    /* Joined to a table: the key needs the table's row, so every shard. */
    assert_non_null(strstr(pi->explain_text, "placement: every shard (the key needs the table's row"));
    cJSON *j = cJSON_Parse(pi->explain_json);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring, "view");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "emit")->valuestring, "FINAL");
    cJSON *w = cJSON_GetObjectItemCaseSensitive(j, "window");
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(w, "size_ms")->valuedouble, 60000);
    cJSON *cols = cJSON_GetObjectItemCaseSensitive(j, "columns");
    assert_int_equal(cJSON_GetArraySize(cols), 3);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cols, 2), "name")->valuestring, "n");
    assert_true(cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, "reroute")));
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "filter")->valuestring, "(c.name = 'pageview')");
    cJSON *keys = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "join"), "keys");
    assert_int_equal(cJSON_GetArraySize(keys), 1);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(keys, 0), "right")->valuestring,
                        "u.user_id");
    cJSON_Delete(j);
    sql_plan_free(p);

    /* A non-aggregating EXPLAIN describes a derived stream; untrusted
     * names are escaped in the JSON. */
    p = plan1(c, "EXPLAIN SELECT page_url AS \"we\"\"ird\\\" FROM clicks");
    pi = sql_plan_get(p);
    j = cJSON_Parse(pi->explain_json);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "kind")->valuestring, "stream");
    assert_non_null(strstr(pi->explain_text, "placement: derived on shard 0 (which keeps the rows)"));
    cols = cJSON_GetObjectItemCaseSensitive(j, "columns");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(cols, 0), "name")->valuestring,
                        "we\"ird\\");
    cJSON_Delete(j);
    sql_plan_free(p);
    sql_catalog_free(c);
}

/* -- bad statements ------------------------------------------------------------------- */

static void bad_statements(void **state)
{
    (void)state;
    static const uu_bad_sql cases[] = {
        {"SELECT * FROM nope", "unknown stream, table or view 'nope'", 1, 15},
        {"SELECT nope FROM clicks", "unknown column 'nope' in 'clicks'", 1, 8},
        {"CREATE STREAM s AS SELECT page_url FROM clicks\nWHERE nope(page_url)", "unknown function 'nope'", 2, 7},
        {"CREATE VIEW v AS SELECT user_id, COUNT(*) FROM clicks GROUP BY page_url",
         "column 'user_id' must appear in GROUP BY or inside an aggregate", 1, 25},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks WHERE COUNT(*) > 1", "aggregates are not allowed in WHERE", 1, 52},
        {"CREATE STREAM s AS SELECT COUNT(*) FROM clicks",
         "CREATE STREAM AS can't aggregate (GROUP BY or an aggregate): use CREATE VIEW", 1, 20},
        {"CREATE VIEW v AS SELECT page_url FROM clicks",
         "a view aggregates: add GROUP BY or an aggregate, or use CREATE STREAM AS for a filter or projection", 1, 18},
        {"CREATE VIEW v AS SELECT DECAYED_COUNT(1 HOUR) FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE)",
         "DECAYED_COUNT is only allowed in views without WINDOW", 1, 25},
        {"CREATE VIEW v AS SELECT page_url AS a, COUNT(*) AS a FROM clicks GROUP BY page_url",
         "duplicate column name 'a': rename one with AS", 1, 40},
        {"CREATE VIEW pages AS SELECT COUNT(*) FROM clicks", "view 'pages' already exists", 1, 13},
        {"CREATE STREAM clicks (a STRING)", "stream 'clicks' already exists", 1, 15},
        {"CREATE STREAM s (a STRING, a BIGINT)", "duplicate column 'a'", 1, 28},
        {"CREATE STREAM s (a STRING PRIMARY KEY)", "PRIMARY KEY applies only to tables (column 'a')", 1, 18},
        {"CREATE TABLE t (a STRING)", "table 't' needs a PRIMARY KEY column", 1, 14},
        {"CREATE TABLE t (a STRING PRIMARY KEY, b BIGINT PRIMARY KEY)",
         "a table has one PRIMARY KEY column ('b' is a second)", 1, 39},
        {"CREATE TABLE t (a DOUBLE PRIMARY KEY)", "PRIMARY KEY 'a' must be STRING or BIGINT", 1, 17},
        {"CREATE STREAM s (a STRING) WITH (TIMESTAMP = 'a')", "TIMESTAMP column 'a' must be TIMESTAMP or BIGINT", 1, 34},
        {"CREATE STREAM s (a STRING) WITH (TIMESTAMP = 'b')", "TIMESTAMP names unknown column 'b'", 1, 34},
        {"CREATE STREAM s (a STRING) WITH (COLOR = 'b')", "unknown option 'COLOR' (expected TIMESTAMP or EVENT_ID)", 1, 34},
        {"CREATE STREAM s (a BIGINT) WITH (EVENT_ID = 'a')", "EVENT_ID column 'a' must be STRING", 1, 34},
        {"DROP VIEW nope", "no view named 'nope'", 1, 11},
        {"DROP STREAM clicks", "'clicks' is built in and can't be dropped", 1, 13},
        {"DROP VIEW big", "'big' is a stream, not a view", 1, 11},
        {"DROP STREAM orders", "can't drop 'orders': read by big", 1, 13},
        {"CREATE VIEW v WITH (STATE_TTL = 'forever') AS SELECT COUNT(*) FROM clicks",
         "bad STATE_TTL 'forever': expected a duration such as '1d'", 1, 21},
        {"CREATE VIEW v WITH (TTL = '1d') AS SELECT COUNT(*) FROM clicks",
         "unknown option 'TTL' (expected STATE_TTL)", 1, 21},
        {"CREATE VIEW v WITH (STATE_TTL = '1d') AS SELECT COUNT(*) FROM clicks WINDOW TUMBLING (SIZE 1 SECOND)",
         "STATE_TTL applies only to views without WINDOW", 1, 21},
        {"CREATE VIEW v AS SELECT SUM(page_url) FROM clicks", "SUM needs a number, got STRING", 1, 29},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks WINDOW HOPPING (SIZE 1 MINUTE, ADVANCE BY 2 MINUTES)",
         "ADVANCE BY must be positive and at most the window SIZE", 1, 53},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks WINDOW TUMBLING (SIZE 0 SECONDS)",
         "window size must be positive", 1, 53},
        {"CREATE STREAM s AS SELECT * FROM clicks c JOIN clicks c2 ON c.user_id = c2.user_id",
         "a stream-stream JOIN needs WITHIN d (e.g. WITHIN 1 HOUR)", 1, 48},
        {"CREATE STREAM s AS SELECT * FROM clicks JOIN clicks WITHIN 1 SECOND ON user_id = user_id",
         "both sides of the JOIN are named 'clicks': give one an alias", 1, 46},
        {"CREATE STREAM s AS SELECT page_url FROM clicks c JOIN clicks d WITHIN 1 SECOND ON c.user_id = d.user_id",
         "column 'page_url' is ambiguous: qualify it as c.page_url or d.page_url", 1, 27},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN clicks d WITHIN 1 SECOND\nON c.user_id > d.user_id",
         "JOIN ON must be equalities joined by AND (left.key = right.key)", 2, 14},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN clicks d WITHIN 1 SECOND ON c.user_id = c.page_url",
         "each side of a JOIN ON equality must read exactly one side of the join", 1, 97},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN users u WITHIN 1 SECOND ON c.user_id = u.user_id",
         "WITHIN applies only to stream-stream joins ('users' is a table)", 1, 57},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN users u ON c.user_id = u.plan",
         "a stream-table JOIN must be ON <stream expression> = u.user_id (the table's primary key)", 1, 78},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN pages p ON c.page_url = p.page_url",
         "'pages' is a view: JOIN a stream or a table", 1, 57},
        {"CREATE STREAM s AS SELECT user_id FROM users", "'users' is a table (JOIN it to a stream): continuous queries read streams",
         1, 40},
        {"CREATE STREAM s AS SELECT c.page_url FROM clicks c JOIN orders o WITHIN 1 SECOND ON c.user_id = o.qty",
         "JOIN key types differ: STRING and BIGINT", 1, 95},
        {"CREATE STREAM s AS SELECT page_url FROM clicks WHERE page_url + 1 > 2",
         "operator + needs numbers, got STRING and BIGINT", 1, 63},
        {"CREATE STREAM s AS SELECT page_url FROM clicks WHERE page_url", "WHERE needs a BOOLEAN, got STRING", 1, 54},
        {"CREATE STREAM s AS SELECT page_url FROM clicks WHERE WINDOWSTART > 0",
         "WINDOWSTART is only available in the SELECT list of a windowed view", 1, 54},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM pages", "'pages' is a view: continuous queries read streams", 1, 39},
        {"CREATE VIEW v AS SELECT COUNT(*), COUNT(*) AS revision FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE)",
         "'revision' is a column every windowed view has: choose another name", 1, 35},
        {"CREATE VIEW v AS SELECT TOPK(page_url, 0) FROM clicks", "TOPK needs a constant k from 1 to 1000", 1, 40},
        {"CREATE VIEW v AS SELECT COUNT(COUNT(*)) FROM clicks", "aggregate calls can't be nested", 1, 31},
        {"CREATE VIEW v AS SELECT MAX(*) FROM clicks", "MAX(*) is not allowed: only COUNT(*)", 1, 25},
        {"CREATE VIEW v AS SELECT SUM(DISTINCT amount) FROM orders", "DISTINCT is only allowed in COUNT(DISTINCT x)", 1, 25},
        {"CREATE VIEW v AS SELECT AVG(amount, 2) FROM orders", "AVG takes 1 argument, got 2", 1, 25},
        {"CREATE STREAM s AS SELECT page_url FROM clicks GRACE PERIOD 1 SECOND",
         "GRACE PERIOD needs a WINDOW or a stream-stream JOIN", 1, 20},
        {"CREATE STREAM s AS SELECT page_url FROM clicks CROSS JOIN UNNEST(page_url) AS x",
         "UNNEST needs an ARRAY, got STRING", 1, 66},
        {"CREATE STREAM s AS SELECT properties.plan.x, page_url.x FROM clicks",
         "column 'page_url' is STRING: only JSON columns have fields ('.x')", 1, 46},
        {"CREATE STREAM s AS SELECT c.nope FROM clicks c", "unknown column 'nope' in 'c'", 1, 27},
        {"CREATE STREAM s AS SELECT c FROM clicks c", "'c' names a source, not a column: write c.column", 1, 27},
        {"SELECT COUNT(*) FROM clicks", "aggregates are not allowed in pull queries: read a view", 1, 1},
        {"SELECT * FROM users", "pull queries read views and streams; read a row of table 'users' with GET "
                                "/api/v1/tables/users/rows/{key}", 1, 15},
        {"CREATE VIEW v AS SELECT * FROM clicks GROUP BY page_url", "* is not allowed in an aggregating query", 1, 25},
        {"CREATE STREAM s AS SELECT page_url FROM clicks EMIT CHANGES", "EMIT applies only to views", 1, 20},
        {"CREATE STREAM s AS SELECT page_url FROM clicks WINDOW TUMBLING (SIZE 1 SECOND)",
         "WINDOW needs an aggregating view", 1, 55},
        {"CREATE VIEW v AS SELECT items, COUNT(*) FROM orders GROUP BY items", "can't GROUP BY an ARRAY", 1, 62},
        {"CREATE STREAM s AS SELECT page_url FROM clicks WHERE name IN ('a', 1)", "IN: can't compare STRING with BIGINT",
         1, 68},
        {"CREATE VIEW v AS SELECT page_url, COUNT(*) FROM clicks GROUP BY 1",
         "GROUP BY a constant: write the expression (positions are not supported)", 1, 65},
        /* identifiers are case-sensitive (they match JSON field names) */
        {"select PAGE_URL from clicks", "unknown column 'PAGE_URL' in 'clicks'", 1, 8},
        {"select page_url from CLICKS", "unknown stream, table or view 'CLICKS'", 1, 22},
        /* syntax errors come through the same path */
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks\nGROUP page_url", "expected BY, found 'page_url'", 2, 7},
    };
    sql_catalog *c = catalog();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sql_catalog *d = sql_catalog_clone(c);
        sql_error err = {0};
        if (run(d, cases[i].sql, &err) == 0)
            fail_msg("case %zu accepted: %s", i, cases[i].sql);
        uu_expect_error(i, &cases[i], &err);
        /* A failed statement changes nothing. */
        assert_int_equal(sql_catalog_count(d), sql_catalog_count(c));
        sql_catalog_free(d);
    }
    sql_catalog_free(c);
}

/* A plan keeps its own copies: the script and the catalog may go first. */
static void plan_outlives_catalog(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    sql_plan *p = plan1(c, "CREATE VIEW items AS SELECT o.order_id, item, u.country, COUNT(*) AS n FROM orders o\n"
                           "JOIN users u ON o.customer_id = u.user_id CROSS JOIN UNNEST(o.items) AS item\n"
                           "GROUP BY o.order_id, item, u.country");
    sql_catalog_free(c);
    const sql_plan_info *pi = sql_plan_get(p);
    assert_string_equal(pi->source, "orders");
    assert_string_equal(pi->join_source, "users");
    assert_string_equal(pi->input[0].name, "order_id");
    assert_string_equal(pi->input[9].name, "country");
    assert_string_equal(pi->input[10].name, "item");
    assert_int_equal(pi->unnest_column, 10);
    assert_string_equal(pi->object->sources[1], "users");
    assert_string_equal(pi->columns[2].name, "country");
    sql_plan_free(p);
}

static void compile_expr_api(void **state)
{
    (void)state;
    static const sql_column cols[] = {{"a", SQL_BIGINT, SQL_NULL, false}};
    sql_error err = {0};
    sql_type t;
    sql_prog *p = sql_plan_compile_expr("a * 2 + 1", 9, cols, 1, &t, &err);
    assert_non_null(p);
    assert_int_equal(t, SQL_BIGINT);
    sql_value v[1] = {sql_bigint(20)};
    assert_int_equal(eval(p, v, 1).u.i, 41);
    sql_prog_free(p);
    assert_null(sql_plan_compile_expr("a +", 3, cols, 1, &t, &err));
    assert_string_equal(err.message, "expected an expression, found end of input");
    assert_int_equal(err.column, 4);
}

/* Which view pairs may keep one pane store: the built-ins' tumbling and
 * sliding (tumbling size = hopping advance), and nothing that differs in
 * grid, WHERE, keys, aggregates or source. */
static void panes_shareable(void **state)
{
    (void)state;
    sql_catalog *c = catalog();
    static const char head[] = "CREATE VIEW v AS SELECT page_url, COUNT(*) AS n, "
                               "COUNT(DISTINCT user_id) AS u FROM clicks ";
    static const char tail[] = " GROUP BY page_url";
    static const struct {
        const char *middle;  /* between head and tail */
        bool shares;         /* with the first */
    } cases[] = {
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW TUMBLING (SIZE 1 MINUTE) GRACE PERIOD 1 MINUTE", true},
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE)", true},
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW HOPPING (SIZE 2 MINUTES, ADVANCE BY 1 MINUTE) "
         "GRACE PERIOD 0 SECONDS", true},
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW HOPPING (SIZE 4 MINUTES, ADVANCE BY 2 MINUTES)", false},
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW TUMBLING (SIZE 2 MINUTES)", false},
        {"WHERE is_bot WINDOW TUMBLING (SIZE 1 MINUTE)", false},
        {"WINDOW TUMBLING (SIZE 1 MINUTE)", false},
        {"WHERE NOT COALESCE(is_bot, FALSE) WINDOW SESSION (1 MINUTE)", false},
    };
    sql_plan *first = NULL;
    char sql[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(sql, sizeof sql, "%s%s%s", head, cases[i].middle, tail);
        sql_plan *p = plan1(c, sql);
        if (!first) {
            first = p;
            assert_true(sql_plan_panes_shareable(sql_plan_get(p), sql_plan_get(p)));
            continue;
        }
        if (sql_plan_panes_shareable(sql_plan_get(first), sql_plan_get(p)) != cases[i].shares)
            fail_msg("case %zu: %s", i, cases[i].middle);
        assert_int_equal(sql_plan_panes_shareable(sql_plan_get(p), sql_plan_get(first)),
                         cases[i].shares);
        sql_plan_free(p);
    }
    /* other keys, other aggregates */
    sql_plan *keys = plan1(c, "CREATE VIEW v AS SELECT user_id, COUNT(*) AS n, "
                              "COUNT(DISTINCT user_id) AS u FROM clicks WHERE NOT COALESCE(is_bot, FALSE) "
                              "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY user_id");
    sql_plan *aggs = plan1(c, "CREATE VIEW v AS SELECT page_url, COUNT(*) AS n, "
                              "COUNT(DISTINCT country) AS u FROM clicks WHERE NOT COALESCE(is_bot, FALSE) "
                              "WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url");
    assert_false(sql_plan_panes_shareable(sql_plan_get(first), sql_plan_get(keys)));
    assert_false(sql_plan_panes_shareable(sql_plan_get(first), sql_plan_get(aggs)));
    sql_plan_free(keys);
    sql_plan_free(aggs);
    sql_plan_free(first);
    sql_catalog_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(catalog_basics),
        cmocka_unit_test(drop_respects_readers),
        cmocka_unit_test(builtin_views_are_not_droppable),
        cmocka_unit_test(naming_rule),
        cmocka_unit_test(types_of_outputs),
        cmocka_unit_test(group_row_programs),
        cmocka_unit_test(stream_stream_join),
        cmocka_unit_test(stream_table_join_and_reroute),
        cmocka_unit_test(unnest),
        cmocka_unit_test(pull_queries),
        cmocka_unit_test(explain),
        cmocka_unit_test(bad_statements),
        cmocka_unit_test(plan_outlives_catalog),
        cmocka_unit_test(compile_expr_api),
        cmocka_unit_test(panes_shareable),
    };
    return cmocka_run_group_tests_name("sql_plan", tests, NULL, NULL);
}
