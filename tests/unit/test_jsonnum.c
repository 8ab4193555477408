/* Unit tests for cf_jsonnum: numbers printed exactly (cJSON 1.7.15 alone
 * prints 9007199254740991 as 9.00719925474099e+15), alone, in cJSON trees
 * and as SQL values. */
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

#include "cf_jsonnum.h"
#include "sql_expr.h"

static void print_is(const char *in, const char *want)
{
    cJSON *j = cJSON_Parse(in);
    assert_non_null(j);
    char *out = cf_json_print_exact(j);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
    cJSON_Delete(j);
}

static void numbers_read_back_exactly(void **state)
{
    (void)state;
    /* cJSON's own text for these is off by one or in the last bit. */
    print_is("9007199254740991", "9007199254740991");
    print_is("-9007199254740991", "-9007199254740991");
    print_is("[5000000000000001, 0.30000000000000004]", "[5000000000000001,0.30000000000000004]");
    print_is("{\"a\":{\"b\":[1,[9007199254740989]]},\"c\":2.5}",
             "{\"a\":{\"b\":[1,[9007199254740989]]},\"c\":2.5}");
    /* Numbers cJSON prints exactly keep its text. */
    print_is("[0, 1, 1767225600000, 0.5, 1e+300, 123456789012345]",
             "[0,1,1767225600000,0.5,1e+300,123456789012345]");
    print_is("\"9007199254740991\"", "\"9007199254740991\"");
}

static void every_double_round_trips(void **state)
{
    (void)state;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double d;
        if (i % 2) {
            d = (double)(int64_t)(s % (1ULL << 53)) * (i % 4 == 1 ? 1 : -1);
        } else {
            memcpy(&d, &s, sizeof d);
            if (d != d || d - d != 0)
                continue;   /* NaN, infinities: not JSON */
        }
        cJSON *n = cJSON_CreateNumber(d);
        assert_non_null(n);
        char *out = cf_json_print_exact(n);
        assert_non_null(out);
        assert_true(strtod(out, NULL) == d);
        free(out);
        cJSON_Delete(n);
    }
}

static uint64_t xorshift(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void format_is(double d, const char *want)
{
    char buf[40];
    int n = cf_jsonnum_format(d, buf, sizeof buf);
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(buf, want);
}

static void format_shortest_exact(void **state)
{
    (void)state;
    format_is(0.1, "0.1");
    format_is(1e300, "1e+300");
    format_is(-0.0, "-0");
    format_is(0.0, "0");
    format_is(1.0 / 3, "0.3333333333333333");
    format_is(2.0 / 3, "0.6666666666666666");
    format_is(0.1 + 0.2, "0.30000000000000004");
    format_is(9007199254740993.0, "9007199254740992");   /* 2^53+1 is no double */
    format_is(9007199254740991.0, "9007199254740991");
    format_is(1e15, "1e+15");
    format_is(123456789012345.0, "123456789012345");
    format_is(-2.5e-7, "-2.5e-07");
    format_is(0.0001, "0.0001");
    format_is(5e-324, "4.94065645841247e-324");   /* any nearby text reads back */
    format_is(1.7976931348623157e308, "1.7976931348623157e+308");
    format_is(NAN, "null");
    format_is(-INFINITY, "null");
    char small[4];
    assert_int_equal(cf_jsonnum_format(1.0 / 3, small, sizeof small), -ENOSPC);
}

/* The printer agrees byte for byte with the shortest of printf's %.15g,
 * %.16g and %.17g that reads back, over random bit patterns (every
 * exponent, subnormals) and random short decimals. */
static void format_agrees_with_printf(void **state)
{
    (void)state;
    uint64_t s = 0x2545f4914f6cdd1dULL;
    for (int i = 0; i < 200000; i++) {
        uint64_t r = xorshift(&s);
        double d;
        if (i % 3 == 0) {
            memcpy(&d, &r, sizeof d);
            if (!isfinite(d))
                continue;
        } else if (i % 3 == 1) {
            d = (double)(int64_t)(r % 2000000001) / (double)(1 + xorshift(&s) % 100000);
        } else {
            d = (double)(r >> 11) * pow(10.0, (double)(int)(xorshift(&s) % 60) - 30);
        }
        char want[40] = "";
        for (int prec = 15; prec <= 17; prec++) {
            snprintf(want, sizeof want, "%.*g", prec, d);
            if (strtod(want, NULL) == d)
                break;
        }
        char got[40];
        assert_true(cf_jsonnum_format(d, got, sizeof got) > 0);
        if (strcmp(got, want) != 0)
            fail_msg("%a: want %s, got %s", d, want, got);
    }
}

/* The const printer writes what cJSON writes, but every number exact. */
static void print_to_matches_cjson(void **state)
{
    (void)state;
    const char *in = "{\"s\":\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001/\u00e9\",\"n\":[1,-2.5,null,true,false,{}],"
                     "\"e\":[],\"big\":9007199254740991,\"x\":0.30000000000000004,\"z\":-0}";
    cJSON *j = cJSON_Parse(in);
    assert_non_null(j);
    cf_buf b = {0};
    assert_int_equal(cf_json_print_exact_to(j, &b), 0);
    cf_buf_put_u8(&b, 0);
    assert_string_equal((const char *)b.data,
                        "{\"s\":\"a\\\"b\\\\c\\n\\t\\r\\b\\f\\u0001/\u00e9\",\"n\":[1,-2.5,null,true,false,{}],"
                        "\"e\":[],\"big\":9007199254740991,\"x\":0.30000000000000004,\"z\":-0}");
    /* Where cJSON's numbers are exact, the same bytes as cJSON's. */
    cJSON *k = cJSON_Parse("{\"s\":\"q\\\"\\u001f\",\"a\":[0.5,12,1e+300]}");
    char *cj = cJSON_PrintUnformatted(k);
    cf_buf_reset(&b);
    assert_int_equal(cf_json_print_exact_to(k, &b), 0);
    assert_int_equal(b.len, strlen(cj));
    assert_memory_equal(b.data, cj, b.len);
    free(cj);
    cJSON_Delete(k);
    /* A number beyond a double (cJSON read it as an infinity) has no
     * JSON text: the printer says so instead of writing null. */
    cJSON *inf = cJSON_Parse("{\"a\":[1,1e400]}");
    cf_buf_reset(&b);
    assert_int_equal(cf_json_print_exact_to(inf, &b), -ERANGE);
    cJSON_Delete(inf);
    cf_buf_free(&b);
    cJSON_Delete(j);
}

static void sql_value_is(sql_value v, const char *want)
{
    sql_sb sb = {0};
    sql_value_to_json(v, &sb);
    assert_false(sb.oom);
    assert_int_equal(sb.len, strlen(want));
    assert_memory_equal(sb.data, want, sb.len);
    sql_sb_free(&sb);
}

/* DOUBLE columns of results print exactly (they printed 15 digits). */
static void sql_values_print_exactly(void **state)
{
    (void)state;
    sql_value_is(sql_double(0.1), "0.1");
    sql_value_is(sql_double(1e300), "1e+300");
    sql_value_is(sql_double(-0.0), "-0");
    sql_value_is(sql_double(1.0 / 3), "0.3333333333333333");
    sql_value_is(sql_double(0.1 + 0.2), "0.30000000000000004");
    sql_value_is(sql_bigint(9007199254740993LL), "9007199254740993");
    sql_value_is(sql_bigint(INT64_MIN), "-9223372036854775808");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numbers_read_back_exactly),
        cmocka_unit_test(every_double_round_trips),
        cmocka_unit_test(format_shortest_exact),
        cmocka_unit_test(format_agrees_with_printf),
        cmocka_unit_test(print_to_matches_cjson),
        cmocka_unit_test(sql_values_print_exactly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
