/* Unit tests for sql_lex: tokens, positions, keywords vs identifiers,
 * quoting, numbers, durations and lexical errors. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_lex.h"
#include "unit_util.h"

/* Lexes src into up to cap tokens; returns the count (EOF included) or -1
 * on a lexical error (err set). */
static int lex(const char *src, sql_token *out, int cap, sql_error *err)
{
    sql_lex *lx = sql_lex_new(src, strlen(src));
    assert_non_null(lx);
    int n = 0;
    for (;;) {
        assert_true(n < cap);
        if (sql_lex_next(lx, &out[n], err) < 0) {
            sql_lex_free(lx);
            return -1;
        }
        if (out[n++].kind == SQL_TOK_EOF)
            break;
    }
    sql_lex_free(lx);
    return n;
}

static void keywords_case_insensitive_identifiers_not(void **state)
{
    (void)state;
    sql_token t[16];
    sql_error err;
    int n = lex("select Page_URL FrOm clicks", t, 16, &err);
    assert_int_equal(n, 5);
    assert_int_equal(t[0].kind, SQL_TOK_IDENT);
    assert_int_equal(t[0].kw, SQL_KW_SELECT);
    assert_int_equal(t[1].kw, SQL_KW_NONE);
    assert_int_equal(t[1].len, 8);
    assert_memory_equal(t[1].text, "Page_URL", 8);
    assert_int_equal(t[2].kw, SQL_KW_FROM);
    assert_int_equal(t[4].kind, SQL_TOK_EOF);
}

static void every_keyword_is_found(void **state)
{
    /* The keyword table is binary-searched: a misordered entry would make
     * some keyword unfindable. Every one, in lower case. */
    (void)state;
    for (int k = 1; k < SQL_KW_COUNT_; k++) {
        char buf[32];
        const char *name = sql_keyword_name((sql_keyword)k);
        size_t n = strlen(name);
        for (size_t i = 0; i <= n; i++)
            buf[i] = (char)(name[i] >= 'A' && name[i] <= 'Z' ? name[i] + 32 : name[i]);
        sql_token t[2];
        sql_error err;
        assert_int_equal(lex(buf, t, 2, &err), 2);
        assert_int_equal(t[0].kw, k);
    }
}

static void positions_are_line_and_column(void **state)
{
    (void)state;
    sql_token t[16];
    sql_error err;
    int n = lex("SELECT a,\n  b -- comment\n/* x\ny */ FROM s", t, 16, &err);
    assert_int_equal(n, 7);
    assert_int_equal(t[0].line, 1);
    assert_int_equal(t[0].column, 1);
    assert_int_equal(t[1].column, 8);
    assert_int_equal(t[2].kind, SQL_TOK_COMMA);
    assert_int_equal(t[3].line, 2);
    assert_int_equal(t[3].column, 3);
    assert_int_equal(t[4].line, 4);
    assert_int_equal(t[4].column, 6);
    assert_int_equal(t[5].line, 4);
    assert_int_equal(t[5].column, 11);
}

static void quoted_strings_and_identifiers(void **state)
{
    (void)state;
    sql_token t[8];
    sql_error err;
    int n = lex("'it''s' \"Order \"\"x\"\"\" \"select\"", t, 8, &err);
    assert_int_equal(n, 4);
    char buf[64];
    assert_int_equal(t[0].kind, SQL_TOK_STRING);
    assert_int_equal(sql_token_unquote(&t[0], buf, sizeof buf), 4);
    assert_string_equal(buf, "it's");
    assert_int_equal(t[1].kind, SQL_TOK_QIDENT);
    sql_token_unquote(&t[1], buf, sizeof buf);
    assert_string_equal(buf, "Order \"x\"");
    /* A quoted keyword is an identifier. */
    assert_int_equal(t[2].kind, SQL_TOK_QIDENT);
    assert_int_equal(t[2].kw, SQL_KW_NONE);
    assert_int_equal(lex("''", t, 8, &err), 2);
    assert_int_equal(sql_token_unquote(&t[0], buf, sizeof buf), 0);
}

static void numbers(void **state)
{
    (void)state;
    sql_token t[8];
    sql_error err;
    int n = lex("42 3.5 1e3 9223372036854775807 9223372036854775808", t, 8, &err);
    assert_int_equal(n, 6);
    assert_int_equal(t[0].kind, SQL_TOK_INTEGER);
    assert_int_equal(t[0].i, 42);
    assert_int_equal(t[1].kind, SQL_TOK_FLOAT);
    assert_true(t[1].d == 3.5);
    assert_int_equal(t[2].kind, SQL_TOK_FLOAT);
    assert_true(t[2].d == 1000.0);
    assert_int_equal(t[3].kind, SQL_TOK_INTEGER);
    assert_true(t[3].i == INT64_MAX);
    /* Past BIGINT: a DOUBLE literal, not an error or a wrap. */
    assert_int_equal(t[4].kind, SQL_TOK_FLOAT);
    /* a.b stays three tokens */
    assert_int_equal(lex("a.b", t, 8, &err), 4);
    assert_int_equal(t[1].kind, SQL_TOK_DOT);
}

static void durations(void **state)
{
    (void)state;
    sql_token t[16];
    sql_error err;
    int n = lex("5 SECONDS 1 minute 2\n HOURS 1 DAY 250 MILLISECONDS 3 Second", t, 16, &err);
    assert_int_equal(n, 7);
    int64_t want[] = {5000, 60000, 7200000, 86400000, 250, 3000};
    for (int i = 0; i < 6; i++) {
        assert_int_equal(t[i].kind, SQL_TOK_DURATION);
        assert_int_equal(t[i].i, want[i]);
    }
    assert_int_equal(t[2].line, 1);
    /* An integer before a non-unit word stays an integer. */
    assert_int_equal(lex("5 seconds_x", t, 16, &err), 3);
    assert_int_equal(t[0].kind, SQL_TOK_INTEGER);
    assert_int_equal(lex("9223372036854775807 DAYS", t, 16, &err), -1);
    assert_string_equal(err.message, "duration out of range");

    int64_t ms = 0;
    assert_int_equal(sql_duration_parse("1d", 2, &ms), 0);
    assert_int_equal(ms, 86400000);
    assert_int_equal(sql_duration_parse("90m", 3, &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(sql_duration_parse("500ms", 5, &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(sql_duration_parse("2 hours", 7, &ms), 0);
    assert_int_equal(ms, 7200000);
    assert_int_equal(sql_duration_parse("1w", 2, &ms), -EINVAL);
    assert_int_equal(sql_duration_parse("", 0, &ms), -EINVAL);
    assert_int_equal(sql_duration_parse("99999999999999999999s", 21, &ms), -ERANGE);
}

static void operators(void **state)
{
    (void)state;
    sql_token t[20];
    sql_error err;
    int n = lex("<= >= <> != < > = + - * / % ( ) ; ,", t, 20, &err);
    assert_int_equal(n, 17);
    sql_tok_kind want[] = {SQL_TOK_LE, SQL_TOK_GE, SQL_TOK_NE, SQL_TOK_NE, SQL_TOK_LT, SQL_TOK_GT,
                           SQL_TOK_EQ, SQL_TOK_PLUS, SQL_TOK_MINUS, SQL_TOK_STAR, SQL_TOK_SLASH,
                           SQL_TOK_PERCENT, SQL_TOK_LPAREN, SQL_TOK_RPAREN, SQL_TOK_SEMI, SQL_TOK_COMMA};
    for (int i = 0; i < 16; i++)
        assert_int_equal(t[i].kind, want[i]);
}

static void errors_have_positions(void **state)
{
    (void)state;
    static const uu_bad_sql cases[] = {
        {"SELECT 'abc", "unterminated string literal", 1, 8},
        {"SELECT \"abc", "unterminated quoted identifier", 1, 8},
        {"SELECT\n  a ! b", "unexpected character '!' (did you mean '!=')", 2, 5},
        {"SELECT ?", "unexpected character '?'", 1, 8},
        {"/* never closed", "unterminated comment", 1, 1},
        {"SELECT 12abc", "bad number '12abc'", 1, 8},
        {"SELECT \"\"", "empty quoted identifier", 1, 8},
        {"SELECT \x01", "unexpected byte 0x01", 1, 8},
        {"SELECT 1e999", "number out of range '1e999'", 1, 8},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        sql_token t[16];
        sql_error err;
        assert_int_equal(lex(cases[i].sql, t, 16, &err), -1);
        uu_expect_error(i, &cases[i], &err);
    }
}

static void nul_bytes_are_refused(void **state)
{
    /* Inside quotes too: names and strings become C strings. */
    (void)state;
    static const char a[] = "SELECT 'a\0b'";
    static const char b[] = "SELECT \"a\0b\"";
    sql_token t;
    sql_error err;
    sql_lex *lx = sql_lex_new(a, sizeof a - 1);
    assert_int_equal(sql_lex_next(lx, &t, &err), 0);
    assert_int_equal(sql_lex_next(lx, &t, &err), -EINVAL);
    assert_string_equal(err.message, "NUL byte in string literal");
    assert_int_equal(err.column, 8);
    sql_lex_free(lx);
    lx = sql_lex_new(b, sizeof b - 1);
    assert_int_equal(sql_lex_next(lx, &t, &err), 0);
    assert_int_equal(sql_lex_next(lx, &t, &err), -EINVAL);
    assert_string_equal(err.message, "NUL byte in quoted identifier");
    sql_lex_free(lx);
}

static void eof_repeats_and_empty_input(void **state)
{
    (void)state;
    sql_lex *lx = sql_lex_new("", 0);
    sql_token t;
    sql_error err;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(sql_lex_next(lx, &t, &err), 0);
        assert_int_equal(t.kind, SQL_TOK_EOF);
    }
    sql_lex_free(lx);
    sql_lex_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keywords_case_insensitive_identifiers_not),
        cmocka_unit_test(every_keyword_is_found),
        cmocka_unit_test(positions_are_line_and_column),
        cmocka_unit_test(quoted_strings_and_identifiers),
        cmocka_unit_test(numbers),
        cmocka_unit_test(durations),
        cmocka_unit_test(operators),
        cmocka_unit_test(errors_have_positions),
        cmocka_unit_test(nul_bytes_are_refused),
        cmocka_unit_test(eof_repeats_and_empty_input),
    };
    return cmocka_run_group_tests_name("sql_lex", tests, NULL, NULL);
}
