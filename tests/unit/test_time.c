/* Unit tests for cf_time: durations, RFC 3339 parsing and formatting,
 * floor division. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "cf_time.h"

static int dur(const char *s, int64_t *v) { return cf_duration_parse(s, v); }

static void duration_units(void **state)
{
    (void)state;
    int64_t v = -1;
    assert_int_equal(dur("1500ms", &v), 0);
    assert_true(v == 1500);
    assert_int_equal(dur("5s", &v), 0);
    assert_true(v == 5000);
    assert_int_equal(dur("30m", &v), 0);
    assert_true(v == 1800000);
    assert_int_equal(dur("2h", &v), 0);
    assert_true(v == 7200000);
    assert_int_equal(dur("90d", &v), 0);
    assert_true(v == INT64_C(90) * 86400000);
    assert_int_equal(dur("0", &v), 0);
    assert_true(v == 0);
    assert_int_equal(dur("0ms", &v), 0);
    assert_true(v == 0);
    assert_int_equal(dur("0h", &v), 0);
    assert_true(v == 0);
    assert_int_equal(dur("007s", &v), 0);
    assert_true(v == 7000);
}

static void duration_rejects_bad_syntax(void **state)
{
    (void)state;
    static const char *bad[] = {"", "s", "ms", "5", "00", "1", "-5s", "+5s", " 5s", "5s ",
                                "5 s", "5S", "5MS", "5sec", "5D", "5dd", "1.5s", "5msx", "5hh",
                                "0x10s", "5m s", "99999999999999999999999x"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        assert_int_equal(dur(bad[i], &v), -EINVAL);
        assert_true(v == 42); /* untouched */
    }
    int64_t v = 0;
    assert_int_equal(dur(NULL, &v), -EINVAL);
}

static void duration_overflow_boundaries(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(dur("9223372036854775807ms", &v), 0);
    assert_true(v == INT64_MAX);
    v = 42;
    assert_int_equal(dur("9223372036854775808ms", &v), -ERANGE);
    assert_true(v == 42);
    assert_int_equal(dur("99999999999999999999999ms", &v), -ERANGE);
    /* INT64_MAX / 1000 = 9223372036854775 */
    assert_int_equal(dur("9223372036854775s", &v), 0);
    assert_true(v == INT64_C(9223372036854775000));
    assert_int_equal(dur("9223372036854776s", &v), -ERANGE);
    /* INT64_MAX / 3600000 = 2562047788015 */
    assert_int_equal(dur("2562047788015h", &v), 0);
    assert_true(v == INT64_C(2562047788015) * 3600000);
    assert_int_equal(dur("2562047788016h", &v), -ERANGE);
    /* INT64_MAX / 60000 = 153722867280912 */
    assert_int_equal(dur("153722867280912m", &v), 0);
    assert_int_equal(dur("153722867280913m", &v), -ERANGE);
    /* Leading zeros do not overflow. */
    assert_int_equal(dur("000000000000000000000000001s", &v), 0);
    assert_true(v == 1000);
}

static int parse(const char *s, int64_t *v) { return cf_rfc3339_parse(s, strlen(s), v); }

static void rfc3339_basic(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(parse("1970-01-01T00:00:00Z", &v), 0);
    assert_true(v == 0);
    assert_int_equal(parse("2026-11-24T10:00:00.123Z", &v), 0);
    assert_true(v == INT64_C(1795514400123));
    assert_int_equal(parse("2026-11-24t10:00:00.123z", &v), 0);
    assert_true(v == INT64_C(1795514400123));
    assert_int_equal(parse("2000-03-01T00:00:00Z", &v), 0);
    assert_true(v == INT64_C(951868800000));
    assert_int_equal(parse("1969-12-31T23:59:59.999Z", &v), 0);
    assert_true(v == -1);
    assert_int_equal(parse("0000-01-01T00:00:00Z", &v), 0);
    assert_true(v == INT64_C(-62167219200000));
    assert_int_equal(parse("9999-12-31T23:59:59.999Z", &v), 0);
    assert_true(v == INT64_C(253402300799999));
}

static void rfc3339_fraction_truncated(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(parse("1970-01-01T00:00:00.1Z", &v), 0);
    assert_true(v == 100);
    assert_int_equal(parse("1970-01-01T00:00:00.12Z", &v), 0);
    assert_true(v == 120);
    assert_int_equal(parse("1970-01-01T00:00:00.123Z", &v), 0);
    assert_true(v == 123);
    assert_int_equal(parse("1970-01-01T00:00:00.1239Z", &v), 0);
    assert_true(v == 123);
    assert_int_equal(parse("1970-01-01T00:00:00.999999999999999999999999Z", &v), 0);
    assert_true(v == 999);
    assert_int_equal(parse("1970-01-01T00:00:00.000001Z", &v), 0);
    assert_true(v == 0);
    /* Truncation toward the past also before 1970. */
    assert_int_equal(parse("1969-12-31T23:59:59.9999Z", &v), 0);
    assert_true(v == -1);
}

static void rfc3339_offsets(void **state)
{
    (void)state;
    int64_t v = 0;
    assert_int_equal(parse("2026-11-24T12:00:00.123+02:00", &v), 0);
    assert_true(v == INT64_C(1795514400123));
    assert_int_equal(parse("2026-11-24T04:30:00.123-05:30", &v), 0);
    assert_true(v == INT64_C(1795514400123));
    assert_int_equal(parse("1970-01-01T00:00:00+00:00", &v), 0);
    assert_true(v == 0);
    assert_int_equal(parse("1970-01-01T00:00:00-00:00", &v), 0);
    assert_true(v == 0);
    assert_int_equal(parse("1970-01-01T00:00:00+23:59", &v), 0);
    assert_true(v == -(23 * 60 + 59) * INT64_C(60000));
    assert_int_equal(parse("1970-01-01T00:00:00-23:59", &v), 0);
    assert_true(v == (23 * 60 + 59) * INT64_C(60000));
    assert_int_equal(parse("1970-01-01T00:00:00+24:00", &v), -EINVAL);
    assert_int_equal(parse("1970-01-01T00:00:00+00:60", &v), -EINVAL);
    assert_int_equal(parse("1970-01-01T00:00:00+0200", &v), -EINVAL);
    assert_int_equal(parse("1970-01-01T00:00:00+02", &v), -EINVAL);
    assert_int_equal(parse("1970-01-01T00:00:00+2:00", &v), -EINVAL);
}

static void rfc3339_calendar(void **state)
{
    (void)state;
    int64_t v = 0;
    /* Leap years: divisible by 4, except centuries, except by 400. */
    assert_int_equal(parse("2024-02-29T00:00:00Z", &v), 0);
    assert_int_equal(parse("2023-02-29T00:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("2023-02-28T00:00:00Z", &v), 0);
    assert_int_equal(parse("2000-02-29T00:00:00Z", &v), 0);
    assert_int_equal(parse("1900-02-29T00:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("2100-02-29T00:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("0000-02-29T00:00:00Z", &v), 0);
    assert_int_equal(parse("2024-02-30T00:00:00Z", &v), -EINVAL);
    /* Day of month per month. */
    static const int dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    for (int m = 1; m <= 12; m++) {
        char ok[] = "2023-MM-DDT00:00:00Z";
        ok[5] = (char)('0' + m / 10);
        ok[6] = (char)('0' + m % 10);
        ok[8] = (char)('0' + dim[m - 1] / 10);
        ok[9] = (char)('0' + dim[m - 1] % 10);
        assert_int_equal(parse(ok, &v), 0);
        int bad_day = dim[m - 1] + 1;
        ok[8] = (char)('0' + bad_day / 10);
        ok[9] = (char)('0' + bad_day % 10);
        assert_int_equal(parse(ok, &v), -EINVAL);
        ok[8] = '0';
        ok[9] = '0';
        assert_int_equal(parse(ok, &v), -EINVAL);
    }
    assert_int_equal(parse("2023-00-01T00:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("2023-13-01T00:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("2023-01-01T23:59:59Z", &v), 0);
    assert_int_equal(parse("2023-01-01T24:00:00Z", &v), -EINVAL);
    assert_int_equal(parse("2023-01-01T00:60:00Z", &v), -EINVAL);
    assert_int_equal(parse("2023-01-01T00:00:61Z", &v), -EINVAL);
}

static void rfc3339_leap_second_folded(void **state)
{
    (void)state;
    int64_t v = 0, w = 0;
    assert_int_equal(parse("2016-12-31T23:59:60Z", &v), 0);
    assert_int_equal(parse("2016-12-31T23:59:59.999Z", &w), 0);
    assert_true(v == w);
    assert_int_equal(parse("2016-12-31T23:59:60.5Z", &v), 0);
    assert_true(v == w);
    assert_int_equal(parse("2017-01-01T00:00:00Z", &w), 0);
    assert_true(v == w - 1);
}

static void rfc3339_rejects(void **state)
{
    (void)state;
    static const char *bad[] = {
        "",
        "2026-11-24",
        "2026-11-24T10:00:00",          /* no offset */
        "2026-11-24 10:00:00Z",         /* space separator */
        "2026-11-24X10:00:00Z",
        "2026-11-24T10:00Z",
        "2026-11-24T10:00:00.Z",        /* empty fraction */
        "2026-11-24T10:00:00,123Z",
        "2026-11-24T10:00:00ZZ",
        "2026-11-24T10:00:00Z ",
        " 2026-11-24T10:00:00Z",
        "26-11-24T10:00:00Z",
        "+2026-11-24T10:00:00Z",
        "-2026-11-24T10:00:00Z",
        "12026-11-24T10:00:00Z",
        "2026-1-24T10:00:00Z",
        "2026-11-4T10:00:00Z",
        "2026/11/24T10:00:00Z",
        "2026-11-24T1:00:00Z",
        "2026-11-24T10:0:00Z",
        "2026-11-24T10:00:0Z",
        "2026-11-24T10:00:00.12a3Z",
        "2026-11-24T10:00:00+02:00:00",
        "2026-11-24T10:00:00UTC",
        "2026-11-24T10:00:00.123",
        "2026-1a-24T10:00:00Z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int64_t v = 42;
        assert_int_equal(parse(bad[i], &v), -EINVAL);
        assert_true(v == 42);
    }
    int64_t v = 0;
    assert_int_equal(cf_rfc3339_parse(NULL, 0, &v), -EINVAL);
}

static void rfc3339_length_is_respected(void **state)
{
    (void)state;
    /* Not NUL-terminated: only n bytes count. */
    const char *s = "1970-01-01T00:00:01Zgarbage";
    int64_t v = 0;
    assert_int_equal(cf_rfc3339_parse(s, 20, &v), 0);
    assert_true(v == 1000);
    assert_int_equal(cf_rfc3339_parse(s, 19, &v), -EINVAL);
    assert_int_equal(cf_rfc3339_parse(s, 21, &v), -EINVAL);
    for (size_t n = 0; n < 20; n++)
        assert_int_equal(cf_rfc3339_parse(s, n, &v), -EINVAL);
}

static void format_basic_and_boundaries(void **state)
{
    (void)state;
    char buf[32];
    assert_int_equal(cf_rfc3339_format(0, buf, sizeof buf), 24);
    assert_string_equal(buf, "1970-01-01T00:00:00.000Z");
    assert_int_equal(cf_rfc3339_format(INT64_C(1795514400123), buf, sizeof buf), 24);
    assert_string_equal(buf, "2026-11-24T10:00:00.123Z");
    assert_int_equal(cf_rfc3339_format(-1, buf, sizeof buf), 24);
    assert_string_equal(buf, "1969-12-31T23:59:59.999Z");
    assert_int_equal(cf_rfc3339_format(INT64_C(951782400000), buf, sizeof buf), 24);
    assert_string_equal(buf, "2000-02-29T00:00:00.000Z");
    assert_int_equal(cf_rfc3339_format(INT64_C(253402300799999), buf, sizeof buf), 24);
    assert_string_equal(buf, "9999-12-31T23:59:59.999Z");
    assert_int_equal(cf_rfc3339_format(INT64_C(-62167219200000), buf, sizeof buf), 24);
    assert_string_equal(buf, "0000-01-01T00:00:00.000Z");
    assert_int_equal(cf_rfc3339_format(INT64_C(253402300800000), buf, sizeof buf), -ERANGE);
    assert_int_equal(cf_rfc3339_format(INT64_C(-62167219200001), buf, sizeof buf), -ERANGE);
    assert_int_equal(cf_rfc3339_format(CF_TIME_NONE, buf, sizeof buf), -ERANGE);
    assert_int_equal(cf_rfc3339_format(INT64_MAX, buf, sizeof buf), -ERANGE);
    /* cap boundary: 24 characters + NUL. */
    memset(buf, 'x', sizeof buf);
    assert_int_equal(cf_rfc3339_format(0, buf, 24), -ENOSPC);
    assert_int_equal(buf[0], 'x');
    assert_int_equal(cf_rfc3339_format(0, buf, 25), 24);
    assert_int_equal(buf[24], '\0');
    assert_int_equal(buf[25], 'x');
}

static void format_parse_round_trip(void **state)
{
    (void)state;
    char buf[32];
    /* A spread of values incl. negative ones and day edges. */
    int64_t vals[] = {0, 1, -1, 999, 1000, 86399999, 86400000, -86400000, -86400001,
                      INT64_C(1795514400123), INT64_C(253402300799999),
                      INT64_C(-62167219200000), INT64_C(951868799999), INT64_C(4102444800000)};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        int n = cf_rfc3339_format(vals[i], buf, sizeof buf);
        assert_int_equal(n, 24);
        int64_t back = 0;
        assert_int_equal(cf_rfc3339_parse(buf, (size_t)n, &back), 0);
        assert_true(back == vals[i]);
    }
    /* Every day over 400+ years (a full Gregorian cycle and then some). */
    for (int64_t d = -200000; d < 200000; d += 7) {
        int64_t ms = d * INT64_C(86400000) + 12345678;
        int n = cf_rfc3339_format(ms, buf, sizeof buf);
        assert_int_equal(n, 24);
        int64_t back = 0;
        assert_int_equal(cf_rfc3339_parse(buf, (size_t)n, &back), 0);
        assert_true(back == ms);
    }
}

static void floor_div(void **state)
{
    (void)state;
    assert_true(cf_floor_div(7, 5) == 1);
    assert_true(cf_floor_div(5, 5) == 1);
    assert_true(cf_floor_div(0, 5) == 0);
    assert_true(cf_floor_div(-1, 5) == -1);
    assert_true(cf_floor_div(-5, 5) == -1);
    assert_true(cf_floor_div(-6, 5) == -2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(duration_units),
        cmocka_unit_test(duration_rejects_bad_syntax),
        cmocka_unit_test(duration_overflow_boundaries),
        cmocka_unit_test(rfc3339_basic),
        cmocka_unit_test(rfc3339_fraction_truncated),
        cmocka_unit_test(rfc3339_offsets),
        cmocka_unit_test(rfc3339_calendar),
        cmocka_unit_test(rfc3339_leap_second_folded),
        cmocka_unit_test(rfc3339_rejects),
        cmocka_unit_test(rfc3339_length_is_respected),
        cmocka_unit_test(format_basic_and_boundaries),
        cmocka_unit_test(format_parse_round_trip),
        cmocka_unit_test(floor_div),
    };
    return cmocka_run_group_tests_name("time", tests, NULL, NULL);
}
