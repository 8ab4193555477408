/* Unit tests for sql_expr: every operator and function with its NULL rules,
 * JSON paths, CAST, the scratch contract, and a seeded brute-force check of
 * the compiled stack machine against a direct tree-walking evaluator of the
 * parsed expression (the reference model). */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_expr.h"
#include "sql_parse.h"
#include "sql_plan.h"

/* -- a fixed row ------------------------------------------------------------- */

static const char props[] =
    "{\"plan\":\"pro\",\"n\":5,\"x\":{\"y\":[1,2],\"k\":\"v\"},\"esc\":\"a\\\"b\\u00e9\","
    "\"t\":true,\"z\":null,\"f\":2.5,\"end\":\"e\"}";
static const char url[] = "https://user@Shop.example:8080/a/b?q=red+shoes&x=%41%2&empty&q=2#frag";

static const sql_column cols[] = {
    {"i", SQL_BIGINT, SQL_NULL, false},      /* 0: 7 */
    {"j", SQL_BIGINT, SQL_NULL, false},      /* 1: -3 */
    {"d", SQL_DOUBLE, SQL_NULL, false},      /* 2: 2.5 */
    {"s", SQL_STRING, SQL_NULL, false},      /* 3: 'Hello' */
    {"n", SQL_BIGINT, SQL_NULL, false},      /* 4: NULL */
    {"ns", SQL_STRING, SQL_NULL, false},     /* 5: NULL */
    {"b", SQL_BOOLEAN, SQL_NULL, false},     /* 6: TRUE */
    {"f", SQL_BOOLEAN, SQL_NULL, false},     /* 7: FALSE */
    {"nb", SQL_BOOLEAN, SQL_NULL, false},    /* 8: NULL */
    {"p", SQL_JSON, SQL_NULL, false},        /* 9: props */
    {"ts", SQL_TIMESTAMP, SQL_NULL, false},  /* 10: 2025-11-24T16:00:00Z */
    {"u", SQL_STRING, SQL_NULL, false},      /* 11: url */
    {"big", SQL_BIGINT, SQL_NULL, false},    /* 12: INT64_MAX */
    {"small", SQL_BIGINT, SQL_NULL, false},  /* 13: INT64_MIN */
    {"arr", SQL_ARRAY, SQL_STRING, false},   /* 14: ["a","b"] */
    {"uni", SQL_STRING, SQL_NULL, false},    /* 15: 'héllo wörld' */
};
#define NCOLS (sizeof cols / sizeof cols[0])

static sql_value rowv[NCOLS];
static sql_row row = {rowv, NCOLS, 1764000000123};
static char scratch_buf[4096];

static int setup(void **state)
{
    (void)state;
    rowv[0] = sql_bigint(7);
    rowv[1] = sql_bigint(-3);
    rowv[2] = sql_double(2.5);
    rowv[3] = sql_string("Hello", 5);
    rowv[4] = sql_null();
    rowv[5] = sql_null();
    rowv[6] = sql_bool(true);
    rowv[7] = sql_bool(false);
    rowv[8] = sql_null();
    rowv[9] = (sql_value){.type = SQL_JSON, .len = (uint32_t)strlen(props), .u.s = props};
    rowv[10] = sql_timestamp(1764000000000);
    rowv[11] = sql_string(url, (uint32_t)strlen(url));
    rowv[12] = sql_bigint(INT64_MAX);
    rowv[13] = sql_bigint(INT64_MIN);
    rowv[14] = (sql_value){.type = SQL_ARRAY, .len = 9, .u.s = "[\"a\",\"b\"]"};
    rowv[15] = sql_string("h\xc3\xa9llo w\xc3\xb6rld", 13);
    return 0;
}

/* Programs stay alive until the suite ends: a result may point into its
 * program's constants. */
static sql_prog *kept[2048];
static size_t nkept;

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < nkept; i++)
        sql_prog_free(kept[i]);
    nkept = 0;
    return 0;
}

/* Compiles and evaluates expr over the row; fails the test on errors. */
static sql_value ev(const char *expr)
{
    sql_error err = {0};
    sql_type t;
    sql_prog *p = sql_plan_compile_expr(expr, strlen(expr), cols, NCOLS, &t, &err);
    if (!p)
        fail_msg("compile '%s': %d:%d %s", expr, err.line, err.column, err.message);
    sql_scratch sc = {scratch_buf, sizeof scratch_buf, 0};
    sql_value v;
    assert_int_equal(sql_prog_eval(p, &row, &sc, &v), 0);
    assert_true(nkept < sizeof kept / sizeof kept[0]);
    kept[nkept++] = p;
    return v;
}

static void expect_null(const char *expr)
{
    sql_value v = ev(expr);
    if (v.type != SQL_NULL)
        fail_msg("%s: want NULL, got type %s", expr, sql_type_name(v.type));
}

static void expect_int(const char *expr, int64_t want)
{
    sql_value v = ev(expr);
    if (v.type != SQL_BIGINT || v.u.i != want)
        fail_msg("%s: want BIGINT %lld, got %s %lld", expr, (long long)want, sql_type_name(v.type),
                 (long long)(v.type == SQL_BIGINT ? v.u.i : 0));
}

static void expect_double(const char *expr, double want)
{
    sql_value v = ev(expr);
    if (v.type != SQL_DOUBLE || v.u.d != want)
        fail_msg("%s: want DOUBLE %.17g, got %s %.17g", expr, want, sql_type_name(v.type),
                 v.type == SQL_DOUBLE ? v.u.d : 0.0);
}

static void expect_bool(const char *expr, bool want)
{
    sql_value v = ev(expr);
    if (v.type != SQL_BOOLEAN || v.u.b != want)
        fail_msg("%s: want %s, got %s", expr, want ? "TRUE" : "FALSE",
                 v.type == SQL_BOOLEAN ? (v.u.b ? "TRUE" : "FALSE") : sql_type_name(v.type));
}

static void expect_str(const char *expr, const char *want)
{
    sql_value v = ev(expr);
    if (v.type != SQL_STRING || v.len != strlen(want) || memcmp(v.u.s, want, v.len) != 0)
        fail_msg("%s: want '%s', got %s '%.*s'", expr, want, sql_type_name(v.type),
                 v.type == SQL_STRING ? (int)v.len : 0, v.type == SQL_STRING ? v.u.s : "");
}

static void expect_type(const char *expr, sql_type want)
{
    sql_error err = {0};
    sql_type t;
    sql_prog *p = sql_plan_compile_expr(expr, strlen(expr), cols, NCOLS, &t, &err);
    if (!p)
        fail_msg("compile '%s': %s", expr, err.message);
    if (t != want)
        fail_msg("%s: static type %s, want %s", expr, sql_type_name(t), sql_type_name(want));
    sql_prog_free(p);
}

static void expect_compile_error(const char *expr, const char *msg, int column)
{
    sql_error err = {0};
    sql_type t;
    sql_prog *p = sql_plan_compile_expr(expr, strlen(expr), cols, NCOLS, &t, &err);
    if (p)
        fail_msg("'%s' compiled", expr);
    if (strcmp(err.message, msg) != 0 || err.column != column)
        fail_msg("'%s': got %d '%s', want %d '%s'", expr, err.column, err.message, column, msg);
}

/* -- operators -------------------------------------------------------------- */

static void arithmetic(void **state)
{
    (void)state;
    expect_int("i + j", 4);
    expect_int("i - j", 10);
    expect_int("i * j", -21);
    expect_int("i / 2", 3);         /* integer division truncates */
    expect_int("j / 2", -1);
    expect_int("i % 4", 3);
    expect_int("j % 2", -1);
    expect_int("-i", -7);
    expect_double("i / 2.0", 3.5);
    expect_double("d * 2", 5.0);
    expect_double("d % 1", 0.5);
    expect_double("-d", -2.5);
    /* overflow: the DOUBLE result */
    expect_double("big + 1", 9223372036854775808.0);
    expect_double("small - 1", -9223372036854775809.0);
    expect_double("big * 2", 18446744073709551614.0);
    expect_double("-small", 9223372036854775808.0);
    expect_double("small / -1", 9223372036854775808.0);
    expect_int("small % -1", 0);
    expect_int("big - 1", INT64_MAX - 1);
    /* division by zero is NULL */
    expect_null("i / 0");
    expect_null("i % 0");
    expect_null("d / 0");
    expect_null("d / 0.0");
    expect_null("d % 0");
    /* a DOUBLE that is not finite is NULL too */
    expect_null("1e300 * 1e300");
    expect_null("-1e300 * 1e300");
    expect_null("(1e300 * 1e300) - (1e300 * 1e300)");
    expect_double("1e300 * 10", 1e301);
    /* NULL in, NULL out */
    expect_null("n + 1");
    expect_null("1 - n");
    expect_null("n * d");
    expect_null("n / 1");
    expect_null("n % 2");
    expect_null("-n");
    expect_null("NULL + 1");
    /* static types */
    expect_type("i + j", SQL_BIGINT);
    expect_type("i + d", SQL_DOUBLE);
    expect_type("ts - 1000", SQL_BIGINT);
    expect_type("p.n + 1", SQL_DOUBLE);
}

static void comparisons_and_null(void **state)
{
    (void)state;
    expect_bool("i = 7", true);
    expect_bool("i != 7", false);
    expect_bool("i <> 8", true);
    expect_bool("i < d", false);
    expect_bool("d < i", true);
    expect_bool("i >= 7.0", true);
    expect_bool("big > 9223372036854775806", true);
    expect_bool("big < 9223372036854775808.0", true);  /* exact int/double comparison */
    expect_bool("s = 'Hello'", true);
    expect_bool("s < 'Help'", true);
    expect_bool("s > 'Hell'", true);
    expect_bool("b = TRUE", true);
    expect_bool("f < b", true);
    /* any NULL operand: NULL */
    expect_null("n = 1");
    expect_null("n != 1");
    expect_null("1 < n");
    expect_null("ns <= 'a'");
    expect_null("ns > 'a'");
    expect_null("n >= n");
    expect_null("NULL = NULL");
    /* TIMESTAMP against an RFC 3339 literal */
    expect_bool("ts = '2025-11-24T16:00:00Z'", true);
    expect_bool("ts > '2025-11-24T15:59:59.999Z'", true);
    expect_null("ts > 'not a time'");
    expect_bool("ROWTIME > ts", true);
    /* mismatched static types are errors */
    expect_compile_error("s = 1", "can't compare STRING with BIGINT", 3);
    expect_compile_error("b < 1", "can't compare BOOLEAN with BIGINT", 3);
}

static void three_valued_logic(void **state)
{
    (void)state;
    /* The full truth tables: b TRUE, f FALSE, nb NULL. */
    expect_bool("b AND b", true);
    expect_bool("b AND f", false);
    expect_null("b AND nb");
    expect_bool("f AND b", false);
    expect_bool("f AND f", false);
    expect_bool("f AND nb", false);
    expect_null("nb AND b");
    expect_bool("nb AND f", false);
    expect_null("nb AND nb");
    expect_bool("b OR b", true);
    expect_bool("b OR f", true);
    expect_bool("b OR nb", true);
    expect_bool("f OR b", true);
    expect_bool("f OR f", false);
    expect_null("f OR nb");
    expect_bool("nb OR b", true);
    expect_null("nb OR f");
    expect_null("nb OR nb");
    expect_bool("NOT b", false);
    expect_bool("NOT f", true);
    expect_null("NOT nb");
    /* WHERE keeps only TRUE */
    assert_true(sql_value_is_true(ev("b")));
    assert_false(sql_value_is_true(ev("f")));
    assert_false(sql_value_is_true(ev("nb")));
    assert_false(sql_value_is_true(ev("n = 1")));
    expect_compile_error("i AND b", "AND needs a BOOLEAN, got BIGINT", 1);
    expect_compile_error("NOT s", "NOT needs a BOOLEAN, got STRING", 5);
}

static void predicates(void **state)
{
    (void)state;
    expect_bool("n IS NULL", true);
    expect_bool("i IS NULL", false);
    expect_bool("n IS NOT NULL", false);
    expect_bool("i IS NOT NULL", true);
    expect_bool("p.z IS NULL", true);        /* a JSON null is NULL */
    expect_bool("p.missing IS NULL", true);
    expect_bool("p.plan IS NOT NULL", true);
    /* IN: x = a OR x = b ... */
    expect_bool("i IN (1, 7, 9)", true);
    expect_bool("i IN (1, 2)", false);
    expect_bool("i NOT IN (1, 2)", true);
    expect_bool("i IN (1, NULL, 7)", true);
    expect_null("i IN (1, NULL)");
    expect_null("i NOT IN (1, NULL)");
    expect_null("n IN (1, 2)");
    expect_null("n NOT IN (1, 2)");
    expect_bool("s IN ('a', 'Hello')", true);
    expect_bool("i IN (7.0)", true);
    /* BETWEEN (inclusive) */
    expect_bool("i BETWEEN 7 AND 9", true);
    expect_bool("i BETWEEN 1 AND 6", false);
    expect_bool("i NOT BETWEEN 1 AND 6", true);
    expect_bool("d BETWEEN 2 AND 3", true);
    expect_null("n BETWEEN 1 AND 2");
    expect_null("i BETWEEN n AND 9");
    expect_bool("i BETWEEN n AND 6", false);  /* FALSE AND NULL is FALSE */
    expect_null("i NOT BETWEEN 1 AND n");
    /* LIKE */
    expect_bool("s LIKE 'Hello'", true);
    expect_bool("s LIKE 'H%'", true);
    expect_bool("s LIKE '%llo'", true);
    expect_bool("s LIKE '%l%'", true);
    expect_bool("s LIKE 'H_llo'", true);
    expect_bool("s LIKE 'h%'", false);      /* case-sensitive */
    expect_bool("s LIKE '_'", false);
    expect_bool("s LIKE '%'", true);
    expect_bool("s LIKE '%%o'", true);
    expect_bool("s LIKE 'Hel'", false);
    expect_bool("s NOT LIKE 'x%'", true);
    expect_bool("uni LIKE 'h_llo%'", true); /* _ is one UTF-8 character */
    expect_bool("uni LIKE '%w_rld'", true);
    expect_bool("'aaa' LIKE '%a%a%a%'", true);
    expect_bool("'aa' LIKE '%a%a%a%'", false);
    expect_bool("'' LIKE '%'", true);
    expect_bool("'' LIKE '_'", false);
    expect_null("ns LIKE 'a%'");
    expect_null("s LIKE ns");
    expect_null("ns NOT LIKE 'a%'");
    expect_compile_error("i LIKE 'a'", "LIKE needs strings, got BIGINT and STRING", 3);
}

static void case_when(void **state)
{
    (void)state;
    expect_str("CASE WHEN i > 5 THEN 'big' ELSE 'small' END", "big");
    expect_str("CASE WHEN i > 50 THEN 'big' WHEN i > 5 THEN 'mid' ELSE 'small' END", "mid");
    expect_null("CASE WHEN i > 50 THEN 'big' END");
    expect_str("CASE WHEN nb THEN 'a' ELSE 'b' END", "b");   /* NULL is not TRUE */
    expect_str("CASE i WHEN 1 THEN 'one' WHEN 7 THEN 'seven' END", "seven");
    expect_null("CASE n WHEN 1 THEN 'one' END");               /* NULL = 1 is NULL */
    expect_str("CASE n WHEN 1 THEN 'one' ELSE 'other' END", "other");
    expect_int("CASE WHEN b THEN 1 ELSE 2.5 END", 1);  /* the chosen branch's value */
    expect_type("CASE WHEN b THEN 1 ELSE 2.5 END", SQL_DOUBLE);
    expect_compile_error("CASE WHEN b THEN 1 ELSE 'x' END", "CASE branches have different types (STRING)", 25);
    expect_compile_error("CASE WHEN i THEN 1 END", "WHEN needs a BOOLEAN, got BIGINT", 11);
}

static void casts(void **state)
{
    (void)state;
    expect_str("CAST(i AS STRING)", "7");
    expect_str("CAST(d AS STRING)", "2.5");
    expect_str("CAST(b AS STRING)", "true");
    expect_str("CAST(ts AS STRING)", "2025-11-24T16:00:00.000Z");
    expect_str("CAST(small AS STRING)", "-9223372036854775808");
    expect_int("CAST('42' AS BIGINT)", 42);
    expect_int("CAST(' -5 ' AS BIGINT)", -5);
    expect_int("CAST(d AS BIGINT)", 2);
    expect_int("CAST(-2.9 AS BIGINT)", -2);
    expect_int("CAST(b AS BIGINT)", 1);
    expect_int("CAST(ts AS BIGINT)", 1764000000000);
    expect_double("CAST('1.5e3' AS DOUBLE)", 1500.0);
    expect_double("CAST(i AS DOUBLE)", 7.0);
    expect_bool("CAST('TRUE' AS BOOLEAN)", true);
    expect_bool("CAST(0 AS BOOLEAN)", false);
    sql_value v = ev("CAST('2025-11-24T16:00:00Z' AS TIMESTAMP)");
    assert_int_equal(v.type, SQL_TIMESTAMP);
    assert_int_equal(v.u.i, 1764000000000);
    v = ev("CAST(1000 AS TIMESTAMP)");
    assert_int_equal(v.type, SQL_TIMESTAMP);
    assert_int_equal(v.u.i, 1000);
    v = ev("CAST(s AS JSON)");
    assert_int_equal(v.type, SQL_JSON);
    assert_int_equal(v.len, 7);
    assert_memory_equal(v.u.s, "\"Hello\"", 7);
    v = ev("CAST(p.x AS JSON)");
    assert_int_equal(v.type, SQL_JSON);
    assert_memory_equal(v.u.s, "{\"y\":[1,2],\"k\":\"v\"}", v.len);
    v = ev("CAST(p.x.y AS ARRAY<BIGINT>)");
    assert_int_equal(v.type, SQL_ARRAY);
    /* failures are NULL, never an error */
    expect_null("CAST('12x' AS BIGINT)");
    expect_null("CAST('' AS BIGINT)");
    expect_null("CAST('99999999999999999999' AS BIGINT)");
    expect_null("CAST(1e300 AS BIGINT)");
    expect_null("CAST('nan' AS DOUBLE)");
    expect_null("CAST('inf' AS DOUBLE)");
    expect_null("CAST('yes' AS BOOLEAN)");
    expect_null("CAST('soon' AS TIMESTAMP)");
    expect_null("CAST(s AS ARRAY<STRING>)");
    expect_null("CAST(n AS STRING)");
    expect_null("CAST(NULL AS BIGINT)");
    expect_type("CAST(s AS DOUBLE)", SQL_DOUBLE);
}

static void functions(void **state)
{
    (void)state;
    expect_str("LOWER(s)", "hello");
    expect_str("upper(s)", "HELLO");
    expect_str("UPPER(uni)", "H\xc3\xa9LLO W\xc3\xb6RLD");  /* ASCII letters only */
    expect_int("LENGTH(s)", 5);
    expect_int("LENGTH(uni)", 11);                          /* characters, not bytes */
    expect_int("LENGTH('')", 0);
    expect_str("SUBSTRING(s, 2)", "ello");
    expect_str("SUBSTRING(s, 2, 3)", "ell");
    expect_str("SUBSTRING(s, 0, 3)", "He");                 /* start 0 eats one of len */
    expect_str("SUBSTRING(s, -5, 3)", "");
    expect_str("SUBSTRING(s, 4, 100)", "lo");
    expect_str("SUBSTRING(s, 10)", "");
    expect_str("SUBSTRING(uni, 2, 4)", "\xc3\xa9llo");
    expect_null("SUBSTRING(s, 1, -1)");
    expect_str("CONCAT(s, ' ', i, ' ', d, ' ', b)", "Hello 7 2.5 true");
    expect_str("CONCAT(s, ns, '!')", "Hello!");             /* CONCAT skips NULLs */
    expect_str("CONCAT(ns)", "");
    expect_int("COALESCE(n, i, 1)", 7);
    expect_str("COALESCE(ns, s)", "Hello");
    expect_null("COALESCE(n, NULL)");
    expect_str("COALESCE(p.missing, p.plan)", "pro");
    expect_type("COALESCE(n, d)", SQL_DOUBLE);
    expect_int("ABS(j)", 3);
    expect_double("ABS(-d)", 2.5);
    expect_double("ABS(small)", 9223372036854775808.0);
    expect_int("ROUND(i)", 7);
    expect_double("ROUND(d)", 3.0);
    expect_double("ROUND(-2.5)", -3.0);                      /* half away from zero */
    expect_double("ROUND(3.14159, 2)", 3.14);
    expect_double("ROUND(1234, -2)", 1200.0);
    expect_double("ROUND(1e300, 15)", 1e300);
    expect_double("FLOOR(d)", 2.0);
    expect_double("CEIL(d)", 3.0);
    expect_double("FLOOR(-d)", -3.0);
    expect_int("CEIL(j)", -3);
    expect_type("ROUND(d, 1)", SQL_DOUBLE);
    expect_type("FLOOR(i)", SQL_BIGINT);
    expect_type("LENGTH(s)", SQL_BIGINT);
    /* URL functions */
    expect_str("URL_HOST(u)", "Shop.example");
    expect_str("URL_PATH(u)", "/a/b");
    expect_str("URL_PARAM(u, 'q')", "red shoes");          /* first one, decoded */
    expect_str("URL_PARAM(u, 'x')", "A%2");                /* a bad escape stays */
    expect_str("URL_PARAM(u, 'empty')", "");
    expect_null("URL_PARAM(u, 'nope')");
    expect_null("URL_HOST('/relative/path?x=1')");
    expect_str("URL_PATH('/relative/path?x=1')", "/relative/path");
    expect_str("URL_PATH('https://a.example')", "/");
    expect_str("URL_HOST('http://[::1]:80/x')", "[::1]");
    expect_str("URL_HOST('//cdn.example/x')", "cdn.example");
    expect_str("URL_PARAM('/p?a=1&b=2', 'b')", "2");
    /* every function: NULL argument, NULL result (but COALESCE, CONCAT) */
    static const char *const nulls[] = {
        "LOWER(ns)", "UPPER(ns)", "LENGTH(ns)", "SUBSTRING(ns, 1)", "SUBSTRING(s, n)",
        "SUBSTRING(s, 1, n)", "ABS(n)", "ROUND(n)", "ROUND(d, n)", "FLOOR(n)", "CEIL(n)",
        "URL_HOST(ns)", "URL_PATH(ns)", "URL_PARAM(ns, 'a')", "URL_PARAM(u, ns)",
    };
    for (size_t k = 0; k < sizeof nulls / sizeof nulls[0]; k++)
        expect_null(nulls[k]);
    /* type and arity errors name the function */
    expect_compile_error("LOWER(i)", "LOWER: argument 1 has the wrong type (BIGINT)", 7);
    expect_compile_error("LOWER(s, s)", "LOWER takes 1 argument, got 2", 1);
    expect_compile_error("SUBSTRING(s)", "SUBSTRING takes 2 to 3 arguments, got 1", 1);
    expect_compile_error("ABS(s)", "ABS: argument 1 has the wrong type (STRING)", 5);
    expect_compile_error("NOPE(s)", "unknown function 'NOPE'", 1);
    expect_compile_error("COALESCE(s, i)", "COALESCE: argument 2 has the wrong type (BIGINT)", 13);
    expect_compile_error("LOWER(*)", "LOWER(*) is not allowed: only COUNT(*)", 1);
    expect_compile_error("COUNT(*)", "aggregate COUNT is not allowed in an expression", 1);
    expect_compile_error("s.x", "column 's' is STRING: only JSON columns have fields ('.x')", 1);
    expect_compile_error("zz + 1", "unknown column 'zz'", 1);
}

static void json_paths(void **state)
{
    (void)state;
    expect_str("p.plan", "pro");
    expect_int("p.n", 5);
    expect_double("p.f", 2.5);
    expect_bool("p.t", true);
    expect_null("p.z");
    expect_null("p.missing");
    expect_null("p.plan.deeper");                 /* not an object */
    expect_str("p.x.k", "v");
    expect_str("p.esc", "a\"b\xc3\xa9");          /* unescaped */
    expect_str("p.\"end\"", "e");
    expect_str("p.end", "e");
    sql_value v = ev("p.x.y");
    assert_int_equal(v.type, SQL_JSON);
    assert_memory_equal(v.u.s, "[1,2]", 5);
    /* dynamic types in operators */
    expect_bool("p.plan = 'pro'", true);
    expect_bool("p.n > 4", true);
    expect_int("p.n * 2", 10);
    expect_null("p.plan > 4");                     /* string vs number: NULL */
    expect_null("p.plan + 1");
    expect_bool("p.t AND b", true);
    expect_str("UPPER(p.plan)", "PRO");
    expect_bool("p.plan IN ('free', 'pro')", true);
    expect_bool("p.plan LIKE 'p%'", true);
}

static void scratch_overflow_is_enospc(void **state)
{
    (void)state;
    sql_error err;
    sql_type t;
    const char *e = "CONCAT(s, s, s)";
    sql_prog *p = sql_plan_compile_expr(e, strlen(e), cols, NCOLS, &t, &err);
    assert_non_null(p);
    char small[8];
    sql_scratch sc = {small, sizeof small, 0};
    sql_value v;
    assert_int_equal(sql_prog_eval(p, &row, &sc, &v), -ENOSPC);
    sql_scratch none = {0};
    assert_int_equal(sql_prog_eval(p, &row, &none, &v), -ENOSPC);
    char big[64];
    sql_scratch ok = {big, sizeof big, 0};
    assert_int_equal(sql_prog_eval(p, &row, &ok, &v), 0);
    assert_int_equal(ok.used, 15);
    assert_memory_equal(v.u.s, "HelloHelloHello", 15);
    sql_prog_free(p);
    /* A column past the row's end reads NULL. */
    sql_row shortrow = {rowv, 2, 0};
    e = "d IS NULL";
    p = sql_plan_compile_expr(e, strlen(e), cols, NCOLS, &t, &err);
    assert_int_equal(sql_prog_eval(p, &shortrow, &ok, &v), 0);
    assert_true(sql_value_is_true(v));
    sql_prog_free(p);
}

static void builder_checks(void **state)
{
    (void)state;
    sql_prog *p = sql_prog_new();
    assert_false(sql_prog_ready(p));
    assert_int_equal(sql_prog_emit(p, SQL_VM_ADD, 0, 0), -EINVAL);  /* underflow */
    sql_prog_free(p);
    p = sql_prog_new();
    for (int i = 0; i < SQL_PROG_MAX_STACK; i++)
        assert_int_equal(sql_prog_emit(p, SQL_VM_COL, 0, 0), 0);
    assert_int_equal(sql_prog_emit(p, SQL_VM_COL, 0, 0), -E2BIG);
    sql_prog_free(p);
    p = sql_prog_new();
    assert_int_equal(sql_prog_emit(p, SQL_VM_CONST, 0, 0), -EINVAL);  /* no such constant */
    sql_prog_free(p);
    sql_prog_free(NULL);
}

/* -- the reference model -------------------------------------------------------- */

/* A tree-walking evaluator over the parsed expression, written apart from
 * the VM: numbers as (is_int, int64, double) with long double comparisons,
 * NULL as a flag. It covers the operators the generator below produces. */
typedef struct rv {
    int kind;           /* 0 NULL, 1 int, 2 double, 3 bool */
    int64_t i;
    double d;
    bool b;
} rv;

static const rv RNULL = {0, 0, 0, false};

static rv rint_(int64_t i) { rv r = {1, i, 0, false}; return r; }
static rv rdbl(double d) { rv r = {2, 0, d, false}; return r; }
static rv rbool(bool b) { rv r = {3, 0, 0, b}; return r; }

static int64_t ref_cols_i[3];
static int ref_cols_null[5];
static double ref_x;
static int ref_p, ref_q;   /* -1 NULL, 0, 1 */

static rv ref_eval(const sql_expr *e);

static long double as_ld(rv v)
{
    return v.kind == 1 ? (long double)v.i : (long double)v.d;
}

static int ref_cmp(rv a, rv b)
{
    long double x = as_ld(a), y = as_ld(b);
    return x < y ? -1 : x > y ? 1 : 0;
}

__extension__ typedef __int128 i128;

static rv ref_arith(sql_op op, rv a, rv b)
{
    if (a.kind == 0 || b.kind == 0)
        return RNULL;
    if (a.kind == 1 && b.kind == 1) {
        i128 x = a.i, y = b.i, r;
        switch (op) {
        case SQL_OP_ADD: r = x + y; break;
        case SQL_OP_SUB: r = x - y; break;
        case SQL_OP_MUL: r = x * y; break;
        case SQL_OP_DIV:
            if (y == 0)
                return RNULL;
            r = x / y;
            break;
        default:
            if (y == 0)
                return RNULL;
            r = x % y;
            break;
        }
        if (r >= INT64_MIN && r <= INT64_MAX)
            return rint_((int64_t)r);
        /* out of range: the operation redone in doubles */
        double dx = (double)a.i, dy = (double)b.i;
        switch (op) {
        case SQL_OP_ADD: return rdbl(dx + dy);
        case SQL_OP_SUB: return rdbl(dx - dy);
        case SQL_OP_MUL: return rdbl(dx * dy);
        default: return rdbl(dx / dy);
        }
    }
    double x = a.kind == 1 ? (double)a.i : a.d, y = b.kind == 1 ? (double)b.i : b.d;
    rv r;
    switch (op) {
    case SQL_OP_ADD: r = rdbl(x + y); break;
    case SQL_OP_SUB: r = rdbl(x - y); break;
    case SQL_OP_MUL: r = rdbl(x * y); break;
    case SQL_OP_DIV: r = y == 0 ? RNULL : rdbl(x / y); break;
    default: r = y == 0 ? RNULL : rdbl(fmod(x, y)); break;
    }
    /* no infinities or NaN: NULL */
    return r.kind == 2 && (isnan(r.d) || isinf(r.d)) ? RNULL : r;
}

/* 0 FALSE, 1 TRUE, -1 NULL */
static int t3(rv v)
{
    return v.kind == 3 ? v.b : -1;
}

static rv from3(int t)
{
    return t < 0 ? RNULL : rbool(t);
}

static rv ref_eval(const sql_expr *e)
{
    switch (e->kind) {
    case SQL_EXPR_LITERAL:
        if (e->value.type == SQL_BIGINT)
            return rint_(e->value.u.i);
        if (e->value.type == SQL_DOUBLE)
            return rdbl(e->value.u.d);
        if (e->value.type == SQL_BOOLEAN)
            return rbool(e->value.u.b);
        return RNULL;
    case SQL_EXPR_NAME: {
        const char *n = e->parts[0];
        if (n[0] == 'x')
            return ref_cols_null[3] ? RNULL : rdbl(ref_x);
        if (n[0] == 'p')
            return from3(ref_p);
        if (n[0] == 'q')
            return from3(ref_q);
        int k = n[0] - 'a';
        return ref_cols_null[k] ? RNULL : rint_(ref_cols_i[k]);
    }
    case SQL_EXPR_UNARY: {
        rv a = ref_eval(e->a);
        if (e->op == SQL_OP_NOT) {
            int t = t3(a);
            return from3(t < 0 ? -1 : !t);
        }
        if (a.kind == 0)
            return RNULL;
        if (a.kind == 1)
            return a.i == INT64_MIN ? rdbl(9223372036854775808.0) : rint_(-a.i);
        return rdbl(-a.d);
    }
    case SQL_EXPR_BINARY: {
        rv a = ref_eval(e->a), b = ref_eval(e->b);
        switch (e->op) {
        case SQL_OP_AND: {
            int x = t3(a), y = t3(b);
            return from3(x == 0 || y == 0 ? 0 : (x < 0 || y < 0) ? -1 : 1);
        }
        case SQL_OP_OR: {
            int x = t3(a), y = t3(b);
            return from3(x == 1 || y == 1 ? 1 : (x < 0 || y < 0) ? -1 : 0);
        }
        case SQL_OP_EQ: case SQL_OP_NE: case SQL_OP_LT: case SQL_OP_LE: case SQL_OP_GT: case SQL_OP_GE: {
            if (a.kind == 0 || b.kind == 0)
                return RNULL;
            int c = ref_cmp(a, b);
            bool r = e->op == SQL_OP_EQ ? c == 0 : e->op == SQL_OP_NE ? c != 0 : e->op == SQL_OP_LT ? c < 0
                   : e->op == SQL_OP_LE ? c <= 0 : e->op == SQL_OP_GT ? c > 0 : c >= 0;
            return rbool(r);
        }
        default:
            return ref_arith(e->op, a, b);
        }
    }
    case SQL_EXPR_IS_NULL: {
        bool isnull = ref_eval(e->a).kind == 0;
        return rbool(e->negated ? !isnull : isnull);
    }
    case SQL_EXPR_IN: {
        rv x = ref_eval(e->a);
        int r = 0;
        for (uint32_t k = 0; k < e->nlist; k++) {
            rv y = ref_eval(e->list[k]);
            if (x.kind == 0 || y.kind == 0) {
                if (r == 0)
                    r = -1;
            } else if (ref_cmp(x, y) == 0) {
                r = 1;
            }
        }
        if (e->negated)
            r = r < 0 ? -1 : !r;
        return from3(r);
    }
    case SQL_EXPR_BETWEEN: {
        rv x = ref_eval(e->a), lo = ref_eval(e->b), hi = ref_eval(e->c);
        int t1 = (x.kind == 0 || lo.kind == 0) ? -1 : ref_cmp(x, lo) >= 0;
        int t2 = (x.kind == 0 || hi.kind == 0) ? -1 : ref_cmp(x, hi) <= 0;
        int r = (t1 == 0 || t2 == 0) ? 0 : (t1 < 0 || t2 < 0) ? -1 : 1;
        if (e->negated)
            r = r < 0 ? -1 : !r;
        return from3(r);
    }
    case SQL_EXPR_CASE:
        for (uint32_t k = 0; k + 1 < e->nlist; k += 2)
            if (t3(ref_eval(e->list[k])) == 1)
                return ref_eval(e->list[k + 1]);
        return e->b ? ref_eval(e->b) : RNULL;
    case SQL_EXPR_CALL:
        if (strcmp(e->name, "COALESCE") == 0) {
            for (uint32_t k = 0; k < e->nlist; k++) {
                rv v = ref_eval(e->list[k]);
                if (v.kind)
                    return v;
            }
            return RNULL;
        } else {  /* ABS */
            rv v = ref_eval(e->list[0]);
            if (v.kind == 1)
                return v.i == INT64_MIN ? rdbl(9223372036854775808.0) : rint_(v.i < 0 ? -v.i : v.i);
            if (v.kind == 2)
                return rdbl(fabs(v.d));
            return RNULL;
        }
    default:
        fail_msg("reference model: unexpected node %d", (int)e->kind);
    }
    return RNULL;
}

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)((rng_state >> 33) % n);
}

static void gen_num(sql_sb *sb, int depth);
static void gen_bool(sql_sb *sb, int depth);

static void gen_num(sql_sb *sb, int depth)
{
    static const char *const leaves[] = {"a", "b", "c", "x", "0", "1", "-1", "7", "2.5", "-0.5",
                                         "9223372036854775807", "-9223372036854775807", "NULL", "3"};
    uint32_t k = depth <= 0 ? 0 : rnd(10);
    if (k < 4) {
        sql_sb_puts(sb, leaves[rnd(sizeof leaves / sizeof leaves[0])]);
        return;
    }
    if (k < 8) {
        static const char *const ops[] = {" + ", " - ", " * ", " / ", " % "};
        sql_sb_puts(sb, "(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, ops[rnd(5)]);
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, ")");
    } else if (k == 8) {
        sql_sb_puts(sb, rnd(2) ? "COALESCE(" : "ABS(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, ")");
    } else {
        sql_sb_puts(sb, "CASE WHEN ");
        gen_bool(sb, depth - 1);
        sql_sb_puts(sb, " THEN ");
        gen_num(sb, depth - 1);
        if (rnd(2)) {
            sql_sb_puts(sb, " ELSE ");
            gen_num(sb, depth - 1);
        }
        sql_sb_puts(sb, " END");
    }
}

static void gen_bool(sql_sb *sb, int depth)
{
    uint32_t k = depth <= 0 ? rnd(2) : rnd(9);
    static const char *const cmp[] = {" = ", " != ", " < ", " <= ", " > ", " >= "};
    switch (k) {
    case 0:
        sql_sb_puts(sb, (const char *const[]){"p", "q", "TRUE", "FALSE", "NULL"}[rnd(5)]);
        break;
    case 1:
    case 2:
        sql_sb_puts(sb, "(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, cmp[rnd(6)]);
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, ")");
        break;
    case 3:
    case 4:
        sql_sb_puts(sb, "(");
        gen_bool(sb, depth - 1);
        sql_sb_puts(sb, rnd(2) ? " AND " : " OR ");
        gen_bool(sb, depth - 1);
        sql_sb_puts(sb, ")");
        break;
    case 5:
        sql_sb_puts(sb, "(NOT ");
        gen_bool(sb, depth - 1);
        sql_sb_puts(sb, ")");
        break;
    case 6:
        sql_sb_puts(sb, "(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, rnd(2) ? " IS NULL)" : " IS NOT NULL)");
        break;
    case 7:
        sql_sb_puts(sb, "(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, rnd(2) ? " IN (" : " NOT IN (");
        for (uint32_t n = 1 + rnd(3), i = 0; i < n; i++) {
            if (i)
                sql_sb_puts(sb, ", ");
            gen_num(sb, 0);
        }
        sql_sb_puts(sb, "))");
        break;
    default:
        sql_sb_puts(sb, "(");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, rnd(2) ? " BETWEEN " : " NOT BETWEEN ");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, " AND ");
        gen_num(sb, depth - 1);
        sql_sb_puts(sb, ")");
        break;
    }
}

static bool same(rv want, sql_value got)
{
    switch (want.kind) {
    case 0: return got.type == SQL_NULL;
    case 1: return got.type == SQL_BIGINT && got.u.i == want.i;
    case 2: return got.type == SQL_DOUBLE && (got.u.d == want.d || (isnan(got.u.d) && isnan(want.d)));
    default: return got.type == SQL_BOOLEAN && got.u.b == want.b;
    }
}

static void vm_matches_reference_model(void **state)
{
    (void)state;
    static const sql_column rcols[] = {
        {"a", SQL_BIGINT, SQL_NULL, false}, {"b", SQL_BIGINT, SQL_NULL, false},
        {"c", SQL_BIGINT, SQL_NULL, false}, {"x", SQL_DOUBLE, SQL_NULL, false},
        {"p", SQL_BOOLEAN, SQL_NULL, false}, {"q", SQL_BOOLEAN, SQL_NULL, false},
    };
    static const int64_t ints[] = {0, 1, -1, 2, 7, -3, 100, INT64_MAX, INT64_MIN, 4611686018427387904LL};
    static const double dbls[] = {0.0, -0.0, 2.5, -1.5, 1e300, 3.0};
    rng_state = 20261207;
    int checked = 0, nulls = 0;
    for (int iter = 0; iter < 3000; iter++) {
        sql_sb sb = {0};
        if (rnd(2))
            gen_num(&sb, 4);
        else
            gen_bool(&sb, 4);
        sql_error err = {0};
        sql_type t;
        sql_prog *prog = sql_plan_compile_expr(sb.data, sb.len, rcols, 6, &t, &err);
        const sql_expr *ast = NULL;
        sql_script *s = sql_parse_expr(sb.data, sb.len, &ast, &err);
        if (!prog || !s)
            fail_msg("generated expression rejected: %s\n  %s", err.message, sb.data);
        for (int r = 0; r < 8; r++) {
            sql_value v[6];
            for (int k = 0; k < 3; k++) {
                ref_cols_i[k] = ints[rnd(sizeof ints / sizeof ints[0])];
                ref_cols_null[k] = rnd(5) == 0;
                v[k] = ref_cols_null[k] ? sql_null() : sql_bigint(ref_cols_i[k]);
            }
            ref_x = dbls[rnd(sizeof dbls / sizeof dbls[0])];
            ref_cols_null[3] = rnd(5) == 0;
            v[3] = ref_cols_null[3] ? sql_null() : sql_double(ref_x);
            ref_p = (int)rnd(3) - 1;
            ref_q = (int)rnd(3) - 1;
            v[4] = ref_p < 0 ? sql_null() : sql_bool(ref_p);
            v[5] = ref_q < 0 ? sql_null() : sql_bool(ref_q);
            sql_row rw = {v, 6, 0};
            sql_scratch sc = {scratch_buf, sizeof scratch_buf, 0};
            sql_value got;
            assert_int_equal(sql_prog_eval(prog, &rw, &sc, &got), 0);
            rv want = ref_eval(ast);
            if (!same(want, got))
                fail_msg("VM and reference differ on %s\n  a=%lld%s b=%lld%s c=%lld%s x=%g%s p=%d q=%d\n"
                         "  want kind %d (%lld %.17g %d), got %s (%lld %.17g %d)",
                         sb.data, (long long)ref_cols_i[0], ref_cols_null[0] ? "(NULL)" : "",
                         (long long)ref_cols_i[1], ref_cols_null[1] ? "(NULL)" : "",
                         (long long)ref_cols_i[2], ref_cols_null[2] ? "(NULL)" : "", ref_x,
                         ref_cols_null[3] ? "(NULL)" : "", ref_p, ref_q, want.kind, (long long)want.i, want.d,
                         want.b, sql_type_name(got.type), (long long)got.u.i, got.u.d, got.u.b);
            checked++;
            nulls += want.kind == 0;
        }
        sql_script_free(s);
        sql_prog_free(prog);
        sql_sb_free(&sb);
    }
    /* The generator reaches NULL and non-NULL results alike. */
    assert_true(nulls > checked / 20);
    assert_true(nulls < checked - checked / 20);
}

/* LIKE against a naive recursive matcher over UTF-8 characters, on random
 * short values and patterns. */
static bool naive_like(const char *s, size_t sn, const char *p, size_t pn)
{
    if (pn == 0)
        return sn == 0;
    if (p[0] == '%')
        for (size_t k = 0;; ) {
            if (naive_like(s + k, sn - k, p + 1, pn - 1))
                return true;
            if (k == sn)
                return false;
            k += ((unsigned char)s[k] >= 0xC0) ? 2 : 1;  /* the alphabet has 2-byte é only */
        }
    if (sn == 0)
        return false;
    size_t cl = ((unsigned char)s[0] >= 0xC0) ? 2 : 1;
    if (p[0] == '_')
        return naive_like(s + cl, sn - cl, p + 1, pn - 1);
    return p[0] == s[0] && naive_like(s + 1, sn - 1, p + 1, pn - 1);
}

static void like_matches_naive_matcher(void **state)
{
    (void)state;
    static const char *const alpha[] = {"a", "b", "\xc3\xa9"};
    static const char *const palpha[] = {"a", "b", "\xc3\xa9", "%", "_"};
    static const sql_column c2[] = {{"v", SQL_STRING, SQL_NULL, false}, {"p", SQL_STRING, SQL_NULL, false}};
    sql_error err;
    sql_type t;
    sql_prog *prog = sql_plan_compile_expr("v LIKE p", 8, c2, 2, &t, &err);
    assert_non_null(prog);
    rng_state = 7;
    int matches = 0;
    for (int iter = 0; iter < 20000; iter++) {
        char v[32] = "", p[32] = "";
        for (uint32_t n = rnd(7), i = 0; i < n; i++)
            strcat(v, alpha[rnd(3)]);
        for (uint32_t n = rnd(6), i = 0; i < n; i++)
            strcat(p, palpha[rnd(5)]);
        sql_value row2[2] = {sql_string(v, (uint32_t)strlen(v)), sql_string(p, (uint32_t)strlen(p))};
        sql_row r = {row2, 2, 0};
        sql_scratch sc = {scratch_buf, sizeof scratch_buf, 0};
        sql_value got;
        assert_int_equal(sql_prog_eval(prog, &r, &sc, &got), 0);
        bool want = naive_like(v, strlen(v), p, strlen(p));
        if (got.type != SQL_BOOLEAN || got.u.b != want)
            fail_msg("'%s' LIKE '%s': want %d", v, p, want);
        matches += want;
    }
    assert_true(matches > 1000 && matches < 19000);
    sql_prog_free(prog);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(arithmetic),
        cmocka_unit_test(comparisons_and_null),
        cmocka_unit_test(three_valued_logic),
        cmocka_unit_test(predicates),
        cmocka_unit_test(case_when),
        cmocka_unit_test(casts),
        cmocka_unit_test(functions),
        cmocka_unit_test(json_paths),
        cmocka_unit_test(scratch_overflow_is_enospc),
        cmocka_unit_test(builder_checks),
        cmocka_unit_test(vm_matches_reference_model),
        cmocka_unit_test(like_matches_naive_matcher),
    };
    return cmocka_run_group_tests_name("sql_expr", tests, setup, teardown);
}
