/* Unit tests for cf_jsonscan: \u0000 escapes and raw control bytes that
 * cJSON 1.7.15 accepts, attributed to the top-level element they are in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "cf_jsonscan.h"

/* The findings of one scan as text: "element:kind," each ("o" = outside). */
typedef struct found {
    char text[256];
} found;

static void record(void *ctx, size_t element, cf_jsonscan_kind kind)
{
    found *f = ctx;
    size_t len = strlen(f->text);
    if (element == CF_JSONSCAN_OUTSIDE)
        snprintf(f->text + len, sizeof f->text - len, "o:%d,", (int)kind);
    else
        snprintf(f->text + len, sizeof f->text - len, "%zu:%d,", element, (int)kind);
}

static const char *scan_n(const char *p, size_t n, found *f)
{
    memset(f, 0, sizeof *f);
    size_t calls = cf_jsonscan(p, n, record, f);
    /* One call per finding reported, none lost. */
    size_t commas = 0;
    for (const char *c = f->text; *c; c++)
        commas += *c == ',';
    assert_int_equal(calls, commas);
    return f->text;
}

static const char *scan(const char *p, found *f) { return scan_n(p, strlen(p), f); }

static void clean_json_has_no_findings(void **state)
{
    (void)state;
    found f;
    const char *ok[] = {
        "{\"user_id\":\"u\",\"page_url\":\"/p\"}",
        "[{\"a\":\"\\u0001x\"},{\"b\":\"\\\\u0000\"}]",   /* escaped \u0001; \\ then u0000 */
        "\t[\r\n{\"k\":[1,2,{\"x\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}]} ]\n",
        "{\"a\":\"\\u0100\\u1000\\uD83D\\uDE00 \xc3\xbc\"}",
        "\"just a string\"", "42", "",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        assert_string_equal(scan(ok[i], &f), "");
}

static void nul_escape_anywhere(void **state)
{
    (void)state;
    found f;
    /* In a value, in a key, deep inside properties; upper/lower case does
     * not matter for digits. */
    assert_string_equal(scan("{\"user_id\":\"a\\u0000b\",\"page_url\":\"/x\"}", &f), "0:1,");
    assert_string_equal(scan("{\"k\\u0000\":1}", &f), "0:1,");
    assert_string_equal(scan("[{\"a\":1},{\"properties\":{\"x\":[{\"y\":\"\\u0000\"}]}},{}]", &f),
                        "1:1,");
    /* One report per element, in element order. */
    assert_string_equal(
        scan("[\"\\u0000\",{\"a\":\"\\u0000\\u0000\"},{\"b\":2},{\"c\":\"x\\u0000\"}]", &f),
        "0:1,1:1,3:1,");
    /* Not a NUL: \u00000 is U+0000 followed by '0' (still a NUL), \\u0000
     * is a backslash then text, \u000A is a newline. */
    assert_string_equal(scan("{\"a\":\"\\u00000\"}", &f), "0:1,");
    assert_string_equal(scan("{\"a\":\"\\\\u0000\"}", &f), "");
    assert_string_equal(scan("{\"a\":\"\\u000A\"}", &f), "");
}

static void raw_control_bytes(void **state)
{
    (void)state;
    found f;
    /* Raw 0x01 and 0x1f inside strings; a raw NUL (explicit length). */
    assert_string_equal(scan("{\"user_id\":\"a\x01" "b\"}", &f), "0:2,");
    assert_string_equal(scan("[{\"a\":\"x\"},{\"k\x1f\":1}]", &f), "1:2,");
    static const char nul[] = "[{\"a\":\"x\"},{\"a\":\"y\"},{\"a\":\"a\0b\"}]";
    assert_string_equal(scan_n(nul, sizeof nul - 1, &f), "2:2,");
    /* A backslash before a raw control byte. */
    assert_string_equal(scan("{\"a\":\"\\\x01\"}", &f), "0:2,");
    /* Raw tab and newline are not allowed inside strings either. */
    assert_string_equal(scan("[{\"a\":\"x\ty\"},{\"a\":\"x\ny\"}]", &f), "0:2,1:2,");
    /* Outside strings: JSON whitespace is fine, other control bytes are
     * the element's fault inside it, nobody's around or between. */
    assert_string_equal(scan("[{\"a\":\x01 1}]", &f), "0:2,");
    assert_string_equal(scan("{\"a\":1\x02}", &f), "0:2,");
    assert_string_equal(scan("\x01{\"a\":1}", &f), "o:2,");
    assert_string_equal(scan("{\"a\":1}\x0b", &f), "o:2,");
    assert_string_equal(scan("[{\"a\":1},\x0c{\"a\":2}]", &f), "o:2,");
    /* Outside is reported once; elements still each. */
    assert_string_equal(scan("[\x01{\"a\":\"\x01\"},\x01{\"a\":\"\\u0000\"}]", &f), "o:2,0:2,1:1,");
}

static void reads_stay_in_bounds(void **state)
{
    (void)state;
    found f;
    /* Truncated escapes and strings at every length: no read past n (ASan),
     * no finding for the truncated tail. */
    const char *text = "[{\"a\":\"abcdefghijklmnop\\u0000\\u12\"}]";
    for (size_t n = 0; n <= strlen(text); n++) {
        char buf[64];
        memcpy(buf, text, n);
        (void)scan_n(buf, n, &f);
    }
    /* Long strings take the 8-byte path; a control byte at each offset is
     * still found. */
    for (size_t k = 0; k < 40; k++) {
        char buf[64];
        memset(buf, 'x', sizeof buf);
        memcpy(buf, "{\"a\":\"", 6);
        buf[6 + k] = '\x07';
        memcpy(buf + 50, "\"}", 2);
        assert_string_equal(scan_n(buf, 52, &f), "0:2,");
    }
    assert_int_equal(cf_jsonscan("{\"a\":\"\\u0000\"}", 14, NULL, NULL), 1);
    assert_non_null(strstr(cf_jsonscan_reason(CF_JSONSCAN_NUL_ESCAPE), "U+0000"));
    assert_non_null(strstr(cf_jsonscan_reason(CF_JSONSCAN_RAW_CONTROL), "control"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(clean_json_has_no_findings),
        cmocka_unit_test(nul_escape_anywhere),
        cmocka_unit_test(raw_control_bytes),
        cmocka_unit_test(reads_stay_in_bounds),
    };
    return cmocka_run_group_tests_name("jsonscan", tests, NULL, NULL);
}
