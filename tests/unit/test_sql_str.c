/* Unit tests for sql_str: the small printf, JSON and SQL quoting, number
 * formatting, positioned errors, the arena and keyword comparison. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sql_str.h"

static void printf_subset(void **state)
{
    (void)state;
    sql_sb sb = {0};
    sql_sb_printf(&sb, "a %s b %d c %L d %.*s e %c %% f %q", "str", -42, (int64_t)INT64_MIN, 3, "xyzzy", 'Q');
    assert_false(sb.oom);
    /* an unknown directive is printed as is */
    assert_string_equal(sb.data, "a str b -42 c -9223372036854775808 d xyz e Q % f %q");
    sql_sb_free(&sb);
    sql_sb_free(&sb);  /* twice is fine */
    sql_sb_printf(&sb, "%s", (const char *)NULL);
    assert_string_equal(sb.data, "(null)");
    sql_sb_free(&sb);
    /* growth past the first block */
    for (int i = 0; i < 1000; i++)
        sql_sb_puts(&sb, "0123456789");
    assert_int_equal(sb.len, 10000);
    assert_int_equal(strlen(sb.data), 10000);
    sql_sb_free(&sb);
}

static void quoting(void **state)
{
    (void)state;
    sql_sb sb = {0};
    sql_sb_put_json_string(&sb, "a\"b\\c\n\t\x01\x1f\xc3\xa9", 11);
    assert_string_equal(sb.data, "\"a\\\"b\\\\c\\n\\t\\u0001\\u001f\xc3\xa9\"");
    sql_sb_free(&sb);
    sql_sb_put_sql_string(&sb, "it's 'x'", 8);
    assert_string_equal(sb.data, "'it''s ''x'''");
    sql_sb_free(&sb);
    sql_sb_put_sql_string(&sb, "", 0);
    assert_string_equal(sb.data, "''");
    sql_sb_free(&sb);
}

static void numbers(void **state)
{
    (void)state;
    char buf[40];
    assert_int_equal(sql_format_int64(0, buf, sizeof buf), 1);
    assert_string_equal(buf, "0");
    assert_int_equal(sql_format_int64(INT64_MAX, buf, sizeof buf), 19);
    assert_string_equal(buf, "9223372036854775807");
    assert_int_equal(sql_format_int64(INT64_MIN, buf, sizeof buf), 20);
    assert_int_equal(sql_format_int64(12345, buf, 5), -ENOSPC);
    assert_int_equal(sql_format_double(2.5, buf, sizeof buf), 3);
    assert_string_equal(buf, "2.5");
    sql_format_double(3.0, buf, sizeof buf);
    assert_string_equal(buf, "3");
    sql_format_double(0.1, buf, sizeof buf);
    assert_string_equal(buf, "0.1");
    sql_format_double(1e300, buf, sizeof buf);
    assert_string_equal(buf, "1e+300");
    sql_format_double(NAN, buf, sizeof buf);
    assert_string_equal(buf, "null");
    /* The shortest text that reads back exactly (cf_jsonnum_format). */
    sql_format_double(0.1 + 0.2, buf, sizeof buf);
    assert_string_equal(buf, "0.30000000000000004");
    sql_format_double(1.0 / 3.0, buf, sizeof buf);
    assert_true(strtod(buf, NULL) == 1.0 / 3.0);
    assert_int_equal(sql_format_double(123.456, buf, 4), -ENOSPC);
}

static void errors(void **state)
{
    (void)state;
    sql_error e;
    sql_error_set(&e, 3, 7, "unknown column '%s'", "x");
    assert_string_equal(e.message, "unknown column 'x'");
    assert_int_equal(e.line, 3);
    assert_int_equal(e.column, 7);
    char longname[600];
    memset(longname, 'n', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    sql_error_set(&e, 1, 1, "name %s", longname);
    assert_int_equal(strlen(e.message), sizeof e.message - 1);  /* truncated, terminated */
    sql_error_set(NULL, 1, 1, "ignored");
}

static void arena(void **state)
{
    (void)state;
    sql_arena *a = sql_arena_new();
    assert_non_null(a);
    char *p = sql_arena_alloc(a, 3);
    assert_non_null(p);
    assert_true(((uintptr_t)p & 7) == 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(p[i], 0);
    /* many small and one large allocation, all usable */
    for (int i = 0; i < 5000; i++) {
        int *q = sql_arena_alloc(a, sizeof(int) * 3);
        assert_non_null(q);
        q[2] = i;
    }
    char *big = sql_arena_alloc(a, 100000);
    assert_non_null(big);
    memset(big, 1, 100000);
    char *s = sql_arena_strndup(a, "abcdef", 3);
    assert_string_equal(s, "abc");
    assert_true(sql_arena_bytes(a) > 100000);
    assert_null(sql_arena_alloc(a, (size_t)65 << 20));  /* over the cap */
    sql_arena_free(a);
    sql_arena_free(NULL);
    assert_int_equal(sql_arena_bytes(NULL), 0);
}

static void keyword_compare(void **state)
{
    (void)state;
    assert_true(sql_ieq("select", 6, "SELECT"));
    assert_true(sql_ieq("SeLeCt", 6, "select"));
    assert_false(sql_ieq("selec", 5, "SELECT"));
    assert_false(sql_ieq("selects", 7, "SELECT"));
    assert_true(sql_ieq("", 0, ""));
    assert_false(sql_ieq("s_", 2, "S\x7f"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(printf_subset),
        cmocka_unit_test(quoting),
        cmocka_unit_test(numbers),
        cmocka_unit_test(errors),
        cmocka_unit_test(arena),
        cmocka_unit_test(keyword_compare),
    };
    return cmocka_run_group_tests_name("sql_str", tests, NULL, NULL);
}
