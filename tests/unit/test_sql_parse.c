/* Unit tests for sql_parse: the tree of every statement kind, operator
 * precedence (through the canonical text), and a table of syntax errors
 * with their messages and positions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_parse.h"
#include "unit_util.h"

static sql_script *parse_ok(const char *src)
{
    sql_error err = {0};
    sql_script *s = sql_parse(src, strlen(src), &err);
    if (!s)
        fail_msg("parse failed: %d:%d %s\n  in: %s", err.line, err.column, err.message, src);
    return s;
}

/* The canonical text of one expression. */
static void assert_expr_text(const char *src, const char *want)
{
    const sql_expr *e = NULL;
    sql_error err = {0};
    sql_script *s = sql_parse_expr(src, strlen(src), &e, &err);
    if (!s)
        fail_msg("expr failed: %s in %s", err.message, src);
    sql_sb sb = {0};
    sql_expr_to_sql(e, &sb);
    if (strcmp(sb.data, want) != 0)
        fail_msg("%s\n  gives %s\n  want  %s", src, sb.data, want);
    /* The canonical text reads back as itself. */
    const sql_expr *e2 = NULL;
    sql_script *s2 = sql_parse_expr(sb.data, sb.len, &e2, &err);
    assert_non_null(s2);
    sql_sb sb2 = {0};
    sql_expr_to_sql(e2, &sb2);
    assert_string_equal(sb2.data, sb.data);
    sql_sb_free(&sb);
    sql_sb_free(&sb2);
    sql_script_free(s2);
    sql_script_free(s);
}

static void precedence(void **state)
{
    (void)state;
    assert_expr_text("a + b * c", "(a + (b * c))");
    assert_expr_text("a - b - c", "((a - b) - c)");
    assert_expr_text("a / b % c", "((a / b) % c)");
    assert_expr_text("-a * b", "((-a) * b)");
    assert_expr_text("- 5 + 2", "(-5 + 2)");
    assert_expr_text("a OR b AND c", "(a OR (b AND c))");
    assert_expr_text("NOT a = b AND c", "((NOT (a = b)) AND c)");
    assert_expr_text("NOT NOT a", "(NOT (NOT a))");
    assert_expr_text("a + 1 < b * 2 OR x IS NULL", "(((a + 1) < (b * 2)) OR (x IS NULL))");
    assert_expr_text("x NOT IN (1, 2) AND y LIKE 'a%'", "((x NOT IN (1, 2)) AND (y LIKE 'a%'))");
    assert_expr_text("x BETWEEN 1 + 1 AND 5 AND y", "((x BETWEEN (1 + 1) AND 5) AND y)");
    assert_expr_text("x NOT BETWEEN a AND b", "(x NOT BETWEEN a AND b)");
    assert_expr_text("x IS NOT NULL", "(x IS NOT NULL)");
    assert_expr_text("a <> b", "(a != b)");
    assert_expr_text("(a OR b) AND c", "((a OR b) AND c)");
    assert_expr_text("CASE WHEN a > 1 THEN 'x' WHEN b THEN 'y' ELSE 'z' END",
                     "CASE WHEN (a > 1) THEN 'x' WHEN b THEN 'y' ELSE 'z' END");
    assert_expr_text("case plan when 'pro' then 1 end", "CASE plan WHEN 'pro' THEN 1 END");
    assert_expr_text("CAST(x AS ARRAY<string>)", "CAST(x AS ARRAY<STRING>)");
    assert_expr_text("count(*) + COUNT(DISTINCT u)", "(count(*) + COUNT(DISTINCT u))");
    assert_expr_text("o.meta.plan = 'it''s'", "(o.meta.plan = 'it''s')");
    assert_expr_text("\"weird col\" + \"select\"", "(\"weird col\" + \"select\")");
    assert_expr_text("properties.end", "properties.\"end\"");
    assert_expr_text("ROWTIME - WINDOWSTART + windowend", "((ROWTIME - WINDOWSTART) + WINDOWEND)");
    assert_expr_text("TRUE AND NOT FALSE OR NULL", "((TRUE AND (NOT FALSE)) OR NULL)");
    assert_expr_text("2.5 * 10 + 1e2", "((2.5 * 10) + 100.0)");
    assert_expr_text("DECAYED_COUNT(1 HOUR)", "DECAYED_COUNT(3600000)");
    assert_expr_text("-9223372036854775807", "-9223372036854775807");
    assert_expr_text("timestamp > 0", "(\"timestamp\" > 0)");
    assert_expr_text("f()", "f()");
}

static void create_stream_with_columns(void **state)
{
    (void)state;
    sql_script *s = parse_ok(
        "CREATE STREAM orders (order_id STRING NOT NULL, customer_id STRING, amount DOUBLE,\n"
        "  items ARRAY<STRING>, meta JSON, ts TIMESTAMP) WITH (TIMESTAMP = 'ts', EVENT_ID = 'order_id');");
    assert_int_equal(sql_script_count(s), 1);
    const sql_stmt *st = sql_script_stmt(s, 0);
    assert_int_equal(st->kind, SQL_STMT_CREATE_STREAM);
    assert_string_equal(st->name, "orders");
    assert_int_equal(st->ncolumns, 6);
    assert_string_equal(st->columns[0].name, "order_id");
    assert_true(st->columns[0].not_null);
    assert_false(st->columns[1].not_null);
    assert_int_equal(st->columns[2].type.type, SQL_DOUBLE);
    assert_int_equal(st->columns[3].type.type, SQL_ARRAY);
    assert_int_equal(st->columns[3].type.elem, SQL_STRING);
    assert_int_equal(st->columns[4].type.type, SQL_JSON);
    assert_int_equal(st->columns[5].type.type, SQL_TIMESTAMP);
    assert_int_equal(st->columns[3].line, 2);
    assert_int_equal(st->columns[3].column, 3);
    assert_int_equal(st->noptions, 2);
    assert_string_equal(st->options[0].key, "TIMESTAMP");
    assert_string_equal(st->options[0].value, "ts");
    assert_string_equal(st->options[1].value, "order_id");
    /* The statement's text excludes the `;`. */
    assert_int_equal(st->text[st->text_len - 1], ')');
    sql_script_free(s);
}

static void create_table_drop_and_several_statements(void **state)
{
    (void)state;
    sql_script *s = parse_ok("create table users (user_id STRING PRIMARY KEY, plan STRING, country STRING);\n"
                             ";; DROP STREAM a; drop view b ; DROP TABLE \"c d\" -- done\n");
    assert_int_equal(sql_script_count(s), 4);
    const sql_stmt *t = sql_script_stmt(s, 0);
    assert_int_equal(t->kind, SQL_STMT_CREATE_TABLE);
    assert_true(t->columns[0].primary_key);
    assert_false(t->columns[1].primary_key);
    assert_int_equal(sql_script_stmt(s, 1)->kind, SQL_STMT_DROP);
    assert_int_equal(sql_script_stmt(s, 1)->drop_kind, SQL_OBJ_STREAM);
    assert_int_equal(sql_script_stmt(s, 2)->drop_kind, SQL_OBJ_VIEW);
    assert_int_equal(sql_script_stmt(s, 3)->drop_kind, SQL_OBJ_TABLE);
    assert_string_equal(sql_script_stmt(s, 3)->name, "c d");
    assert_int_equal(sql_script_stmt(s, 3)->line, 2);
    assert_null(sql_script_stmt(s, 4));
    sql_script_free(s);

    s = parse_ok("  ; -- nothing\n");
    assert_int_equal(sql_script_count(s), 0);
    sql_script_free(s);
}

static void create_view_full_select(void **state)
{
    (void)state;
    sql_script *s = parse_ok(
        "CREATE MATERIALIZED VIEW v WITH (STATE_TTL = '1d') AS\n"
        "SELECT c.page_url, COUNT(*) AS n, COUNT(DISTINCT c.user_id) users, u.plan\n"
        "FROM clicks AS c LEFT JOIN users u ON c.user_id = u.user_id\n"
        "WHERE c.is_bot = FALSE\n"
        "WINDOW HOPPING (SIZE 10 MINUTES, ADVANCE BY 1 MINUTE) GRACE PERIOD 30 SECONDS\n"
        "GROUP BY c.page_url, u.plan EMIT FINAL");
    const sql_stmt *st = sql_script_stmt(s, 0);
    assert_int_equal(st->kind, SQL_STMT_CREATE_VIEW);
    assert_true(st->materialized);
    assert_string_equal(st->options[0].key, "STATE_TTL");
    const sql_select *q = st->select;
    assert_int_equal(q->nitems, 4);
    assert_null(q->items[0].alias);
    assert_string_equal(q->items[1].alias, "n");
    assert_string_equal(q->items[2].alias, "users");
    assert_true(q->items[2].expr->distinct);
    assert_true(q->items[1].expr->star);
    assert_string_equal(q->from.name, "clicks");
    assert_string_equal(q->from.alias, "c");
    assert_int_equal(q->join, SQL_JOIN_LEFT);
    assert_string_equal(q->join_source.name, "users");
    assert_string_equal(q->join_source.alias, "u");
    assert_int_equal(q->within_ms, -1);
    assert_non_null(q->join_on);
    assert_non_null(q->where);
    assert_int_equal(q->window, SQL_WINDOW_HOPPING);
    assert_int_equal(q->window_size_ms, 600000);
    assert_int_equal(q->window_advance_ms, 60000);
    assert_int_equal(q->grace_ms, 30000);
    assert_int_equal(q->ngroup_by, 2);
    assert_int_equal(q->emit, SQL_EMIT_FINAL);
    assert_int_equal(q->limit, -1);
    sql_script_free(s);
}

static void stream_as_with_join_and_unnest(void **state)
{
    (void)state;
    sql_script *s = parse_ok(
        "CREATE STREAM paid AS SELECT o.order_id, p.amount FROM orders o JOIN payments p WITHIN 1 HOUR "
        "ON o.order_id = p.order_id AND o.customer_id = p.customer_id;"
        "CREATE STREAM items AS SELECT order_id, item FROM orders CROSS JOIN UNNEST(items) AS item;"
        "CREATE STREAM items2 AS SELECT item FROM orders CROSS JOIN UNNEST(items) item WHERE item != 'x'");
    const sql_select *q = sql_script_stmt(s, 0)->select;
    assert_int_equal(sql_script_stmt(s, 0)->kind, SQL_STMT_CREATE_STREAM_AS);
    assert_int_equal(q->join, SQL_JOIN_INNER);
    assert_int_equal(q->within_ms, 3600000);
    assert_int_equal(q->join_on->op, SQL_OP_AND);
    q = sql_script_stmt(s, 1)->select;
    assert_true(q->has_unnest);
    assert_string_equal(q->unnest_alias, "item");
    q = sql_script_stmt(s, 2)->select;
    assert_string_equal(q->unnest_alias, "item");
    assert_non_null(q->where);
    sql_script_free(s);
}

static void windows_and_emit(void **state)
{
    (void)state;
    sql_script *s = parse_ok(
        "CREATE VIEW a AS SELECT COUNT(*) FROM clicks WINDOW TUMBLING (SIZE 1 MINUTE) GROUP BY page_url;"
        "CREATE VIEW b AS SELECT COUNT(*) FROM clicks WINDOW SESSION (30 MINUTES) GROUP BY user_id EMIT CHANGES;"
        "EXPLAIN SELECT page_url FROM clicks");
    assert_int_equal(sql_script_stmt(s, 0)->select->window, SQL_WINDOW_TUMBLING);
    assert_int_equal(sql_script_stmt(s, 0)->select->window_size_ms, 60000);
    assert_int_equal(sql_script_stmt(s, 0)->select->emit, SQL_EMIT_DEFAULT);
    assert_int_equal(sql_script_stmt(s, 1)->select->window, SQL_WINDOW_SESSION);
    assert_int_equal(sql_script_stmt(s, 1)->select->window_size_ms, 1800000);
    assert_int_equal(sql_script_stmt(s, 1)->select->emit, SQL_EMIT_CHANGES);
    assert_int_equal(sql_script_stmt(s, 2)->kind, SQL_STMT_EXPLAIN);
    sql_script_free(s);
}

static void pull_query(void **state)
{
    (void)state;
    sql_script *s = parse_ok("SELECT page_url, count FROM pages WHERE count > 10 ORDER BY count DESC, page_url LIMIT 5");
    const sql_stmt *st = sql_script_stmt(s, 0);
    assert_int_equal(st->kind, SQL_STMT_SELECT);
    assert_int_equal(st->select->norder_by, 2);
    assert_true(st->select->order_by[0].desc);
    assert_false(st->select->order_by[1].desc);
    assert_int_equal(st->select->limit, 5);
    sql_script_free(s);
}

/* Syntax errors: message, line, column. */
static void syntax_errors(void **state)
{
    (void)state;
    static const uu_bad_sql cases[] = {
        {"SELEC * FROM clicks", "expected CREATE, DROP, EXPLAIN or SELECT, found 'SELEC'", 1, 1},
        {"SELECT FROM clicks", "expected an expression, found 'FROM'", 1, 8},
        {"SELECT * clicks", "expected FROM, found 'clicks'", 1, 10},
        {"SELECT * FROM", "expected a stream, table or view name, found end of input", 1, 14},
        {"SELECT a FROM clicks WHERE", "expected an expression, found end of input", 1, 27},
        {"SELECT (a FROM clicks", "expected ')', found 'FROM'", 1, 11},
        {"SELECT a +\n FROM clicks", "expected an expression, found 'FROM'", 2, 2},
        {"CREATE STREAM s (a INT)",
         "expected a type (STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, ARRAY<t>, JSON), found 'INT'", 1, 20},
        {"CREATE STREAM s (a STRING,)", "expected a column name, found ')'", 1, 27},
        {"CREATE TABLE t (id STRING PRIMARY)", "expected KEY, found ')'", 1, 34},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks WINDOW TUMBLING (SIZE 5)",
         "expected a duration such as 5 SECONDS, found '5'", 1, 68},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks WINDOW SLIDING (SIZE 5 SECONDS)",
         "expected TUMBLING, HOPPING or SESSION, found 'SLIDING'", 1, 53},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks\nWINDOW HOPPING (SIZE 5 SECONDS ADVANCE BY 1 SECOND)",
         "expected ',', found 'ADVANCE'", 2, 32},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks EMIT NOW", "expected CHANGES or FINAL, found 'NOW'", 1, 51},
        {"CREATE VIEW v AS SELECT COUNT(*) FROM clicks ORDER BY 1", "ORDER BY is only allowed in pull queries", 1, 46},
        {"CREATE STREAM s AS SELECT * FROM clicks LIMIT 1", "LIMIT is only allowed in pull queries", 1, 41},
        {"SELECT * FROM clicks GROUP BY user_id",
         "GROUP BY is not allowed in a pull query (SELECT ... FROM view|stream [WHERE ...] [ORDER BY ...] [LIMIT n])",
         1, 22},
        {"SELECT * FROM clicks c JOIN users u ON c.a = u.a",
         "JOIN is not allowed in a pull query (SELECT ... FROM view|stream [WHERE ...] [ORDER BY ...] [LIMIT n])",
         1, 24},
        {"SELECT * FROM clicks LIMIT x", "expected a non-negative integer after LIMIT, found 'x'", 1, 28},
        {"SELECT CASE WHEN a THEN 1 FROM clicks", "expected WHEN, ELSE or END, found 'FROM'", 1, 27},
        {"SELECT CASE a END FROM clicks", "expected WHEN, found 'END'", 1, 15},
        {"SELECT CAST(a AS INT) FROM clicks",
         "expected a type (STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, ARRAY<t>, JSON), found 'INT'", 1, 18},
        {"SELECT a NOT NULL FROM clicks", "expected IN, LIKE or BETWEEN after NOT, found 'NULL'", 1, 14},
        {"SELECT a IS NOT 5 FROM clicks", "expected NULL, found '5'", 1, 17},
        {"DROP INDEX x", "expected STREAM, VIEW or TABLE, found 'INDEX'", 1, 6},
        {"CREATE MATERIALIZED STREAM s AS SELECT * FROM clicks", "MATERIALIZED applies only to VIEW", 1, 21},
        {"SELECT * FROM clicks;\nSELECT * FROM clicks WHERE a = 'x", "unterminated string literal", 2, 32},
        {"SELECT * FROM clicks WHERE a IN ()", "expected an expression, found ')'", 1, 34},
        {"CREATE STREAM s (a ARRAY<ARRAY<STRING>>)", "nested ARRAY types are not supported", 1, 26},
        {"SELECT * FROM clicks WHERE a = 1 = 2", "expected ';' or end of input, found '='", 1, 34},
        {"EXPLAIN DROP STREAM s", "expected SELECT, found 'DROP'", 1, 9},
        {"CREATE STREAM s AS SELECT * FROM clicks CROSS JOIN UNNEST(a)",
         "expected an alias for the UNNEST elements, found end of input", 1, 61},
        {"SELECT COUNT(DISTINCT) FROM clicks", "expected an expression, found ')'", 1, 22},
        {"CREATE VIEW v WITH (STATE_TTL = 1) AS SELECT COUNT(*) FROM clicks",
         "expected a string literal as the option's value, found '1'", 1, 33},
        {"SELECT * FROM clicks WHERE a BETWEEN 1 OR 2", "expected AND, found 'OR'", 1, 40},
        {"SELECT * FROM clicks\nWHERE user_id = 'x' extra", "expected ';' or end of input, found 'extra'", 2, 21},
        {"CREATE STREAM select (a STRING)",
         "expected a name (SELECT is a reserved word; quote it as \"select\"), found 'select'", 1, 15},
        {"CREATE STREAM s AS SELECT * FROM a JOIN b ON", "expected an expression, found end of input", 1, 45},
        {"CREATE STREAM s AS SELECT * FROM a JOIN b WITHIN 5 ON a.x = b.x",
         "expected a duration such as 5 SECONDS, found '5'", 1, 50},
        {"SELECT * FROM s WHERE x = 'a' GRACE PERIOD 1 SECOND",
         "GRACE PERIOD is not allowed in a pull query (SELECT ... FROM view|stream [WHERE ...] [ORDER BY ...] [LIMIT n])",
         1, 31},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sql_error err = {0};
        sql_script *s = sql_parse(cases[i].sql, strlen(cases[i].sql), &err);
        if (s)
            fail_msg("case %zu parsed: %s", i, cases[i].sql);
        uu_expect_error(i, &cases[i], &err);
    }
}

static void byte_order_mark_is_skipped(void **state)
{
    /* At the start of a script only (a --sql file saved by an editor). */
    (void)state;
    sql_error err = {0};
    sql_script *s = sql_parse("\xef\xbb\xbf" "DROP VIEW v", 14, &err);
    assert_non_null(s);
    assert_int_equal(sql_script_stmt(s, 0)->column, 1);
    assert_int_equal(sql_script_stmt(s, 0)->name_column, 11);
    sql_script_free(s);
    assert_null(sql_parse("\xef\xbb\xbf" "DROP VIEW", 12, &err));
    assert_int_equal(err.column, 10);
}

static void nesting_is_bounded(void **state)
{
    (void)state;
    /* 10000 parentheses: an error, not a stack overflow. */
    size_t n = 10000;
    char *src = malloc(2 * n + 16);
    assert_non_null(src);
    strcpy(src, "SELECT ");
    size_t at = 7;
    for (size_t i = 0; i < n; i++)
        src[at++] = '(';
    src[at++] = '1';
    for (size_t i = 0; i < n; i++)
        src[at++] = ')';
    src[at] = '\0';
    sql_error err = {0};
    assert_null(sql_parse(src, at, &err));
    assert_string_equal(err.message, "expression nested too deeply (at most 64 levels)");
    /* 60 levels are fine. */
    strcpy(src, "SELECT ");
    at = 7;
    for (int i = 0; i < 60; i++)
        src[at++] = '(';
    src[at++] = '1';
    for (int i = 0; i < 60; i++)
        src[at++] = ')';
    strcpy(src + at, " FROM s");
    sql_script *s = sql_parse(src, strlen(src), &err);
    assert_non_null(s);
    sql_script_free(s);
    free(src);

    /* A long flat chain is built by a loop, not recursion: its height is
     * bounded separately (later passes recurse over the tree). */
    sql_sb sb = {0};
    sql_sb_puts(&sb, "SELECT 1");
    for (int i = 0; i < 300; i++)
        sql_sb_puts(&sb, " + 1");
    sql_sb_puts(&sb, " FROM s");
    assert_null(sql_parse(sb.data, sb.len, &err));
    assert_string_equal(err.message, "expression too long (more than 256 operators deep)");
    assert_int_equal(err.column, 8 + 4 * 255 + 2);  /* the 256th `+`: height 257 */
    sql_sb_free(&sb);
    sql_sb_puts(&sb, "SELECT 1");
    for (int i = 0; i < 200; i++)
        sql_sb_puts(&sb, " OR TRUE");
    sql_sb_puts(&sb, " FROM s");
    s = sql_parse(sb.data, sb.len, &err);
    assert_non_null(s);
    assert_int_equal(sql_script_stmt(s, 0)->select->items[0].expr->height, 201);
    sql_script_free(s);
    sql_sb_free(&sb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(precedence),
        cmocka_unit_test(create_stream_with_columns),
        cmocka_unit_test(create_table_drop_and_several_statements),
        cmocka_unit_test(create_view_full_select),
        cmocka_unit_test(stream_as_with_join_and_unnest),
        cmocka_unit_test(windows_and_emit),
        cmocka_unit_test(pull_query),
        cmocka_unit_test(syntax_errors),
        cmocka_unit_test(byte_order_mark_is_skipped),
        cmocka_unit_test(nesting_is_bounded),
    };
    return cmocka_run_group_tests_name("sql_parse", tests, NULL, NULL);
}
