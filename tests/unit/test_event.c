/* Unit tests for cf_event: SPEC section 2 validation, UTF-8 checking and
 * the packed binary form. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_event.h"

#define NOW INT64_C(1795514400000) /* 2026-11-24T10:00:00Z */

static const cf_event_limits LIM = {.max_future_ms = 60000};

/* Parses json, validates it; the tree and scratch stay alive in the fixture
 * so the borrowed strings can be inspected. */
typedef struct fx {
    cJSON *root;
    cf_buf scratch;
    cf_event ev;
    const char *reason;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof *f);
    *state = f;
    return f ? 0 : -1;
}

static int teardown(void **state)
{
    fx *f = *state;
    cJSON_Delete(f->root);
    cf_buf_free(&f->scratch);
    free(f);
    return 0;
}

static int check(fx *f, const char *json, int64_t now)
{
    cJSON_Delete(f->root);
    f->root = cJSON_Parse(json);
    assert_non_null(f->root);
    cf_buf_reset(&f->scratch);
    f->reason = NULL;
    int rc = cf_event_from_json(f->root, &LIM, now, &f->scratch, &f->ev, &f->reason);
    if (rc < 0)
        assert_non_null(f->reason);
    return rc;
}

/* Expects rejection with a reason containing `want`. */
static void reject(fx *f, const char *json, const char *want)
{
    int rc = check(f, json, NOW);
    if (rc != -EINVAL || !strstr(f->reason, want))
        fail_msg("%s: rc %d reason '%s', wanted '%s'", json, rc, f->reason ? f->reason : "",
                 want);
}

static void accept(fx *f, const char *json)
{
    int rc = check(f, json, NOW);
    if (rc != 0)
        fail_msg("%s: rejected: %s", json, f->reason);
}

static bool field_is(const char *p, size_t n, const char *want)
{
    return p && n == strlen(want) && memcmp(p, want, n) == 0;
}

/* A JSON document {"user_id":"u","page_url":"/", key: "<n x c>"} etc. */
static char *json_with_string(const char *key, size_t n, char c)
{
    char *v = malloc(n + 1);
    memset(v, c, n);
    v[n] = '\0';
    cJSON *o = cJSON_CreateObject();
    if (strcmp(key, "user_id") != 0)
        cJSON_AddStringToObject(o, "user_id", "u");
    if (strcmp(key, "page_url") != 0)
        cJSON_AddStringToObject(o, "page_url", "/");
    cJSON_AddStringToObject(o, key, v);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    free(v);
    return s;
}

static void length_boundary(fx *f, const char *key, size_t min, size_t max, const char *why)
{
    char *s;
    if (min > 0) {
        s = json_with_string(key, min - 1, 'a');
        reject(f, s, why);
        free(s);
    }
    s = json_with_string(key, min, 'a');
    accept(f, s);
    free(s);
    s = json_with_string(key, max, 'a');
    accept(f, s);
    free(s);
    s = json_with_string(key, max + 1, 'a');
    reject(f, s, why);
    free(s);
}

static void valid_full_event(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\": \"u42\", \"page_url\": \"/products/7\", \"element\": \"buy\","
              " \"timestamp\": \"2026-11-24T10:00:00.123Z\", \"event_id\": \"b3c1\","
              " \"properties\": { \"a\" : [1, 2, {\"b\" : null}], \"c\" : \"d\" }}");
    assert_true(f->ev.ts == NOW + 123);
    assert_true(field_is(f->ev.user_id, f->ev.user_id_len, "u42"));
    assert_true(field_is(f->ev.page_url, f->ev.page_url_len, "/products/7"));
    assert_true(field_is(f->ev.element, f->ev.element_len, "buy"));
    assert_true(field_is(f->ev.event_id, f->ev.event_id_len, "b3c1"));
    assert_true(field_is(f->ev.properties, f->ev.properties_len,
                         "{\"a\":[1,2,{\"b\":null}],\"c\":\"d\"}"));
    /* Borrowed from the tree, not copied. */
    assert_ptr_equal(f->ev.user_id,
                     cJSON_GetObjectItemCaseSensitive(f->root, "user_id")->valuestring);
    assert_true((const uint8_t *)f->ev.properties == f->scratch.data);
}

static void minimal_event_defaults(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\"}");
    assert_true(f->ev.ts == NOW);
    assert_null(f->ev.element);
    assert_int_equal(f->ev.element_len, 0);
    assert_null(f->ev.event_id);
    assert_null(f->ev.properties);
    assert_int_equal(f->ev.properties_len, 0);
    assert_int_equal(f->scratch.len, 0);
}

static void null_optional_fields_are_absent(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"element\":null,\"event_id\":null,"
              "\"timestamp\":null,\"properties\":null}");
    assert_true(f->ev.ts == NOW);
    assert_null(f->ev.element);
    assert_null(f->ev.event_id);
    assert_null(f->ev.properties);
    reject(f, "{\"user_id\":null,\"page_url\":\"/\"}", "user_id must be a string");
    reject(f, "{\"user_id\":\"u\",\"page_url\":null}", "page_url must be a string");
}

static void not_an_object(void **state)
{
    fx *f = *state;
    reject(f, "[]", "JSON object");
    reject(f, "[{\"user_id\":\"u\",\"page_url\":\"/\"}]", "JSON object");
    reject(f, "\"x\"", "JSON object");
    reject(f, "null", "JSON object");
    reject(f, "42", "JSON object");
    reject(f, "true", "JSON object");
    const char *reason = NULL;
    cf_event ev;
    cf_buf b = {0};
    assert_int_equal(cf_event_from_json(NULL, &LIM, NOW, &b, &ev, &reason), -EINVAL);
    assert_non_null(reason);
}

static void required_fields(void **state)
{
    fx *f = *state;
    reject(f, "{\"page_url\":\"/\"}", "user_id is required");
    reject(f, "{\"user_id\":\"u\"}", "page_url is required");
    reject(f, "{}", "user_id is required");
    reject(f, "{\"user_id\":42,\"page_url\":\"/\"}", "user_id must be");
    reject(f, "{\"user_id\":null,\"page_url\":\"/\"}", "user_id must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":[\"/\"]}", "page_url must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":{}}", "page_url must be");
    /* Case-sensitive keys. */
    reject(f, "{\"User_Id\":\"u\",\"page_url\":\"/\"}", "user_id is required");
    reject(f, "{\"user_id\":\"u\",\"PAGE_URL\":\"/\"}", "page_url is required");
}

static void string_length_boundaries(void **state)
{
    fx *f = *state;
    length_boundary(f, "user_id", 1, 256, "user_id must be a string of 1 to 256 bytes");
    length_boundary(f, "page_url", 1, 2048, "page_url must be a string of 1 to 2048 bytes");
    length_boundary(f, "element", 0, 256, "element must be a string of at most 256 bytes");
    length_boundary(f, "event_id", 1, 128, "event_id must be a string of 1 to 128 bytes");
}

static void optional_fields_types(void **state)
{
    fx *f = *state;
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"element\":1}", "element must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"event_id\":\"\"}", "event_id must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"event_id\":7}", "event_id must be");
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"element\":\"\"}");
    assert_non_null(f->ev.element); /* present but empty: not the same as absent */
    assert_int_equal(f->ev.element_len, 0);
}

static void multibyte_length_counts_bytes(void **state)
{
    fx *f = *state;
    /* 128 x U+00E9 = 256 bytes: ok; one more ASCII byte: too long. */
    char buf[600];
    size_t p = 0;
    p += (size_t)sprintf(buf, "{\"page_url\":\"/\",\"user_id\":\"");
    for (int i = 0; i < 128; i++) {
        buf[p++] = (char)0xc3;
        buf[p++] = (char)0xa9;
    }
    strcpy(buf + p, "\"}");
    accept(f, buf);
    assert_int_equal(f->ev.user_id_len, 256);
    buf[p] = 'x';
    strcpy(buf + p + 1, "\"}");
    reject(f, buf, "user_id must be");
}

static void invalid_utf8_rejected(void **state)
{
    fx *f = *state;
    reject(f, "{\"user_id\":\"a\xc0\x80\",\"page_url\":\"/\"}", "user_id must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\xed\xa0\x80\"}", "page_url must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"element\":\"\xff\"}", "element must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"event_id\":\"\xf4\x90\x80\x80\"}",
           "event_id must be");
    accept(f, "{\"user_id\":\"\xf0\x9f\x98\x80\",\"page_url\":\"/\\u00e9\"}");
    assert_true(field_is(f->ev.page_url, f->ev.page_url_len, "/\xc3\xa9"));
}

static void timestamp_numbers(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":0}");
    assert_true(f->ev.ts == 0);
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":1795514400123}");
    assert_true(f->ev.ts == INT64_C(1795514400123));
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":1.7e12}");
    assert_true(f->ev.ts == INT64_C(1700000000000));
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":-0}");
    assert_true(f->ev.ts == 0);
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":-1}", "out of range");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":1.5}", "integer");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":1795514400000.5}", "integer");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":1e999}", "out of range");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":true}", "timestamp must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":{}}", "timestamp must be");
}

static void timestamp_range_boundaries(void **state)
{
    fx *f = *state;
    cJSON *o = NULL;
    const char *reason = NULL;
    cf_buf b = {0};
    cf_event ev;
    const int64_t max = INT64_C(253402300799999);
    const int64_t far_now = max; /* so the future check does not interfere */
    o = cJSON_Parse("{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":253402300799999}");
    assert_int_equal(cf_event_from_json(o, &LIM, far_now, &b, &ev, &reason), 0);
    assert_true(ev.ts == max);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":253402300800000}");
    assert_int_equal(cf_event_from_json(o, &LIM, far_now, &b, &ev, &reason), -EINVAL);
    assert_non_null(strstr(reason, "out of range"));
    cJSON_Delete(o);
    o = cJSON_Parse("{\"user_id\":\"u\",\"page_url\":\"/\","
                    "\"timestamp\":\"9999-12-31T23:59:59.999Z\"}");
    assert_int_equal(cf_event_from_json(o, &LIM, far_now, &b, &ev, &reason), 0);
    assert_true(ev.ts == max);
    cJSON_Delete(o);
    o = cJSON_Parse("{\"user_id\":\"u\",\"page_url\":\"/\","
                    "\"timestamp\":\"9999-12-31T23:59:59.999-00:01\"}");
    assert_int_equal(cf_event_from_json(o, &LIM, far_now, &b, &ev, &reason), -EINVAL);
    assert_non_null(strstr(reason, "out of range"));
    cJSON_Delete(o);
    cf_buf_free(&b);

    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"1970-01-01T00:00:00Z\"}");
    assert_true(f->ev.ts == 0);
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"1969-12-31T23:59:59.999Z\"}",
           "out of range");
}

static void timestamp_strings(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\","
              "\"timestamp\":\"2026-11-24T12:00:00.5+02:00\"}");
    assert_true(f->ev.ts == NOW + 500);
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"2026-11-24 10:00:00Z\"}",
           "RFC 3339");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"1795514400000\"}",
           "RFC 3339");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"\"}", "RFC 3339");
}

static void timestamp_future_boundary(void **state)
{
    fx *f = *state;
    char buf[128];
    sprintf(buf, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":%lld}",
            (long long)(NOW + 60000));
    accept(f, buf);
    assert_true(f->ev.ts == NOW + 60000);
    sprintf(buf, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":%lld}",
            (long long)(NOW + 60001));
    reject(f, buf, "too far in the future");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"2026-11-24T10:01:00.001Z\"}",
           "too far in the future");
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"timestamp\":\"2026-11-24T10:01:00.000Z\"}");

    /* Custom limit, NULL limits (default 60 s), and now near INT64_MAX. */
    cJSON *o = cJSON_Parse(buf);
    cf_buf b = {0};
    cf_event ev;
    const char *reason = NULL;
    cf_event_limits zero = {.max_future_ms = 0};
    assert_int_equal(cf_event_from_json(o, &zero, NOW + 60001, &b, &ev, &reason), 0);
    assert_int_equal(cf_event_from_json(o, &zero, NOW + 60000, &b, &ev, &reason), -EINVAL);
    assert_int_equal(cf_event_from_json(o, NULL, NOW + 1, &b, &ev, &reason), 0);
    assert_int_equal(cf_event_from_json(o, NULL, NOW, &b, &ev, &reason), -EINVAL);
    cf_event_limits huge = {.max_future_ms = INT64_MAX};
    assert_int_equal(cf_event_from_json(o, &huge, INT64_MAX - 5, &b, &ev, &reason), 0);
    assert_int_equal(cf_event_from_json(o, &huge, 0, &b, &ev, &reason), 0);
    cJSON_Delete(o);
    cf_buf_free(&b);
}

static void properties_rules(void **state)
{
    fx *f = *state;
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":[]}", "properties must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":\"{}\"}",
           "properties must be");
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":{}}");
    assert_true(field_is(f->ev.properties, f->ev.properties_len, "{}"));
    /* 1e400 is valid JSON but no double: it must not become null silently. */
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":{\"a\":[1,{\"b\":1e400}]}}",
           "properties must not hold a number beyond");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":{\"a\":-1e999}}",
           "properties must not hold a number beyond");
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"properties\":{\"a\":1e-400,\"b\":1.7976931348623157e308}}");
    assert_true(field_is(f->ev.properties, f->ev.properties_len, "{\"a\":0,\"b\":1.7976931348623157e+308}"));
}

static void properties_large_and_appended(void **state)
{
    (void)state;
    /* A properties object much larger than the first print attempt. */
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "user_id", "u");
    cJSON_AddStringToObject(o, "page_url", "/");
    cJSON *props = cJSON_AddObjectToObject(o, "properties");
    char key[16];
    for (int i = 0; i < 500; i++) {
        sprintf(key, "k%d", i);
        cJSON_AddNumberToObject(props, key, i);
    }
    char *want = cJSON_PrintUnformatted(props);
    cf_buf b = {0};
    cf_buf_put(&b, "prefix", 6);
    cf_event ev;
    const char *reason = NULL;
    assert_int_equal(cf_event_from_json(o, &LIM, NOW, &b, &ev, &reason), 0);
    assert_true(field_is(ev.properties, ev.properties_len, want));
    assert_memory_equal(b.data, "prefix", 6); /* appended, not overwritten */
    assert_int_equal(b.len, 6 + strlen(want));
    assert_true((const uint8_t *)ev.properties == b.data + 6);
    /* Exact fits: scratch with capacity in every position around the size. */
    for (size_t pre = 0; pre < 40; pre++) {
        cf_buf c = {0};
        cf_buf_reserve(&c, strlen(want) + 1 + 8 - pre + 6);
        for (size_t i = 0; i < pre; i++)
            cf_buf_put_u8(&c, 'x');
        assert_int_equal(cf_event_from_json(o, &LIM, NOW, &c, &ev, &reason), 0);
        assert_true(field_is(ev.properties, ev.properties_len, want));
        cf_buf_free(&c);
    }
    cJSON_free(want);
    cJSON_Delete(o);
    cf_buf_free(&b);
}

static void unknown_fields_and_duplicates(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"extra\":[1,{}],\"x\":null,"
              "\"userid\":5,\"e\":1,\"p\":2,\"t\":3,\"u\":4,\"properties_\":1}");
    /* First of duplicate keys wins (as cJSON_GetObjectItemCaseSensitive). */
    accept(f, "{\"user_id\":\"first\",\"page_url\":\"/\",\"user_id\":\"second\"}");
    assert_true(field_is(f->ev.user_id, f->ev.user_id_len, "first"));
    reject(f, "{\"user_id\":\"\",\"page_url\":\"/\",\"user_id\":\"second\"}", "user_id must be");
}

static void utf8_validation(void **state)
{
    (void)state;
    static const struct {
        const char *s;
        bool ok;
    } cases[] = {
        {"", true},
        {"plain ascii", true},
        {"\x7f", true},
        {"\xc2\x80", true},
        {"\xdf\xbf", true},
        {"\xe0\xa0\x80", true},
        {"\xed\x9f\xbf", true},         /* U+D7FF */
        {"\xee\x80\x80", true},         /* U+E000 */
        {"\xef\xbf\xbf", true},
        {"\xf0\x90\x80\x80", true},
        {"\xf4\x8f\xbf\xbf", true},     /* U+10FFFF */
        {"\x80", false},                /* lone continuation */
        {"\xbf", false},
        {"\xc0\x80", false},            /* overlong NUL */
        {"\xc1\xbf", false},            /* overlong */
        {"\xe0\x9f\xbf", false},        /* overlong 3-byte */
        {"\xf0\x8f\xbf\xbf", false},    /* overlong 4-byte */
        {"\xed\xa0\x80", false},        /* U+D800 */
        {"\xed\xbf\xbf", false},        /* U+DFFF */
        {"\xf4\x90\x80\x80", false},    /* U+110000 */
        {"\xf5\x80\x80\x80", false},
        {"\xff", false},
        {"\xc2", false},                /* truncated */
        {"\xe0\xa0", false},
        {"\xf0\x90\x80", false},
        {"\xc2\x41", false},            /* bad continuation */
        {"\xe1\x80\x41", false},
        {"\xf1\x80\x80\x41", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (cf_utf8_valid(cases[i].s, strlen(cases[i].s)) != cases[i].ok)
            fail_msg("case %zu", i);
    }
    /* A bad byte at every position of a long ASCII run (the 8-byte path),
     * and a valid multi-byte char at every position. */
    char buf[40];
    for (size_t pos = 0; pos < 33; pos++) {
        memset(buf, 'a', sizeof buf);
        buf[pos] = (char)0x80;
        assert_false(cf_utf8_valid(buf, 33));
        assert_true(cf_utf8_valid(buf, pos));
        memset(buf, 'a', sizeof buf);
        buf[pos] = (char)0xc3;
        buf[pos + 1] = (char)0xa9;
        assert_true(cf_utf8_valid(buf, 35));
        assert_false(cf_utf8_valid(buf, pos + 1)); /* cut inside the char */
    }
    /* Length is respected: a NUL is just a byte. */
    assert_true(cf_utf8_valid("a\0b", 3));
    assert_true(cf_utf8_valid(NULL, 0));
}

static void assert_event_equal(const cf_event *a, const cf_event *b)
{
    assert_true(a->ts == b->ts);
#define SAME(f)                                                           \
    do {                                                                  \
        assert_int_equal(a->f##_len, b->f##_len);                         \
        assert_int_equal(a->f == NULL, b->f == NULL);                     \
        if (a->f##_len)                                                   \
            assert_memory_equal(a->f, b->f, a->f##_len);                  \
    } while (0)
    SAME(user_id);
    SAME(page_url);
    SAME(element);
    SAME(event_id);
    SAME(properties);
#undef SAME
    /* "click" is the default whether written or not. */
    size_t an, bn;
    const char *na = cf_event_name(a, &an), *nb = cf_event_name(b, &bn);
    assert_int_equal(an, bn);
    assert_memory_equal(na, nb, an);
    for (int i = 0; i < CF_COL_COUNT; i++) {
        assert_int_equal(a->enrich.col[i] == NULL, b->enrich.col[i] == NULL);
        assert_int_equal(a->enrich.len[i], b->enrich.len[i]);
        if (a->enrich.len[i])
            assert_memory_equal(a->enrich.col[i], b->enrich.col[i], a->enrich.len[i]);
    }
    assert_int_equal(a->enrich.device, b->enrich.device);
    assert_int_equal(a->enrich.is_bot, b->enrich.is_bot);
}

static void pack_round_trip(void **state)
{
    (void)state;
    cf_event evs[] = {
        {.ts = 123, .user_id = "u", .user_id_len = 1, .page_url = "/", .page_url_len = 1},
        {.ts = -5, .user_id = "user", .user_id_len = 4, .page_url = "/p/q", .page_url_len = 4,
         .element = "buy", .element_len = 3, .event_id = "id1", .event_id_len = 3,
         .properties = "{\"a\":1}", .properties_len = 7},
        {.ts = INT64_MAX, .user_id = "u", .user_id_len = 1, .page_url = "/", .page_url_len = 1,
         .element = "", .element_len = 0},
        {.ts = INT64_MIN, .user_id = "u", .user_id_len = 1, .page_url = "/", .page_url_len = 1,
         .properties = "", .properties_len = 0},
        {.ts = 7, .user_id = "u", .user_id_len = 1, .page_url = "/", .page_url_len = 1,
         .name = "signup", .name_len = 6},
        {.ts = 8, .user_id = "u", .user_id_len = 1, .page_url = "/", .page_url_len = 1,
         .name = "click", .name_len = 5},
    };
    size_t n = sizeof evs / sizeof evs[0];
    cf_buf b = {0};
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        int len = cf_event_pack(&evs[i], &b);
        assert_true(len > 0);
        total += (size_t)len;
        assert_int_equal(b.len, total);
    }
    assert_int_equal(cf_event_pack(&evs[0], &b), 21 + 2); /* header size is fixed */
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    for (size_t i = 0; i < n; i++) {
        cf_event out;
        size_t at = b.len - r.left;
        assert_int_equal(cf_event_unpack(&r, &out), 0);
        assert_event_equal(&evs[i], &out);
        /* Packing the unpacked event gives the very bytes back: recovery
         * passes a replayed record's bytes on without packing them again
         * (engine_prepare_packed), which must equal what packing gives. */
        cf_buf again = {0};
        assert_int_equal(cf_event_pack(&out, &again), (int)(b.len - r.left - at));
        assert_memory_equal(again.data, b.data + at, again.len);
        cf_buf_free(&again);
    }
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_int_equal(r.left, 0);
    assert_int_equal(cf_event_unpack(&r, &out), -EINVAL);
    cf_buf_free(&b);
}

static void pack_max_lengths_round_trip(void **state)
{
    (void)state;
    static char big[4096];
    memset(big, 'z', sizeof big);
    cf_event ev = {.ts = 1, .user_id = big, .user_id_len = CF_USER_ID_MAX, .page_url = big,
                   .page_url_len = CF_PAGE_URL_MAX, .element = big,
                   .element_len = CF_ELEMENT_MAX, .event_id = big,
                   .event_id_len = CF_EVENT_ID_MAX, .properties = big,
                   .properties_len = sizeof big};
    cf_buf b = {0};
    assert_true(cf_event_pack(&ev, &b) > 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_event_equal(&ev, &out);
    cf_buf_free(&b);
}

/* The packed form is stored in WAL files: its bytes must not change by
 * accident. */
static void pack_layout_is_stable(void **state)
{
    (void)state;
    cf_event ev = {.ts = 0x0102030405060708, .user_id = "u", .user_id_len = 1,
                   .page_url = "/p", .page_url_len = 2, .element = "e", .element_len = 1,
                   .properties = "{}", .properties_len = 2};
    static const uint8_t want[] = {
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* ts */
        0x05,                                           /* flags: element | properties */
        0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, /* user, page, element, event_id */
        0x02, 0x00, 0x00, 0x00,                         /* properties */
        'u', '/', 'p', 'e', '{', '}'};
    cf_buf b = {0};
    cf_buf_put_u8(&b, 0xee); /* appends after existing content */
    assert_int_equal(cf_event_pack(&ev, &b), sizeof want);
    assert_int_equal(b.len, 1 + sizeof want);
    assert_int_equal(b.data[0], 0xee);
    assert_memory_equal(b.data + 1, want, sizeof want);
    cf_buf_free(&b);
}

static void pack_rejects_invalid_events(void **state)
{
    (void)state;
    static char big[4096];
    memset(big, 'z', sizeof big);
    const cf_event ok = {.ts = 1, .user_id = "u", .user_id_len = 1, .page_url = "/",
                         .page_url_len = 1};
    cf_buf b = {0};
    cf_event e;
    e = ok; e.user_id_len = 0;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.user_id = big; e.user_id_len = CF_USER_ID_MAX + 1;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.page_url_len = 0;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.page_url = big; e.page_url_len = CF_PAGE_URL_MAX + 1;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.element = big; e.element_len = CF_ELEMENT_MAX + 1;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.event_id = big; e.event_id_len = CF_EVENT_ID_MAX + 1;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.event_id = big; e.event_id_len = 0;
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    e = ok; e.element_len = 3; /* length without a pointer */
    assert_int_equal(cf_event_pack(&e, &b), -EINVAL);
    assert_int_equal(b.len, 0);
    assert_int_equal(cf_event_pack(NULL, &b), -EINVAL);
    cf_buf_free(&b);
}

static void unpack_rejects_truncated(void **state)
{
    (void)state;
    cf_event ev = {.ts = 77, .user_id = "user", .user_id_len = 4, .page_url = "/page",
                   .page_url_len = 5, .element = "el", .element_len = 2, .event_id = "id",
                   .event_id_len = 2, .properties = "{}", .properties_len = 2};
    cf_buf b = {0};
    int len = cf_event_pack(&ev, &b);
    assert_int_equal(len, 21 + 4 + 5 + 2 + 2 + 2);
    /* Every proper prefix is rejected, reading only within it (ASan checks
     * this: each prefix is copied to its own exact-size allocation). */
    for (int cut = 0; cut < len; cut++) {
        uint8_t *copy = malloc(cut ? (size_t)cut : 1);
        memcpy(copy, b.data, (size_t)cut);
        cf_reader r;
        cf_reader_init(&r, copy, (size_t)cut);
        cf_event out = {.ts = 999};
        assert_int_equal(cf_event_unpack(&r, &out), -EINVAL);
        assert_true(out.ts == 999); /* untouched */
        free(copy);
    }
    cf_buf_free(&b);
}

static void unpack_rejects_malformed(void **state)
{
    (void)state;
    cf_event ev = {.ts = 1, .user_id = "u", .user_id_len = 1, .page_url = "/",
                   .page_url_len = 1};
    cf_buf b = {0};
    assert_int_equal(cf_event_pack(&ev, &b), 23);
    uint8_t rec[23];
    memcpy(rec, b.data, sizeof rec);
    cf_buf_free(&b);
    /* Offsets: ts 0..7, flags 8, user 9, page 11, element 13, event_id 15,
     * properties 17..20, bytes 21.. */
    struct {
        size_t off;
        uint8_t val;
    } muts[] = {
        {8, 0x10},  /* unknown flag */
        {8, 0x80},
        {9, 0},     /* empty user_id */
        {10, 1},    /* user_id 257 */
        {11, 0},    /* empty page_url */
        {12, 0x08}, /* page_url 2049 */
        {13, 1},    /* element bytes without the flag */
        {15, 1},    /* event_id bytes without the flag */
        {17, 1},    /* properties bytes without the flag */
        {20, 0x80}, /* properties length huge */
        {9, 2},     /* user_id longer than the record */
    };
    for (size_t i = 0; i < sizeof muts / sizeof muts[0]; i++) {
        uint8_t m[23];
        memcpy(m, rec, sizeof m);
        m[muts[i].off] = muts[i].val;
        if (muts[i].off == 10)
            m[9] = 1; /* 0x0101 = 257 */
        if (muts[i].off == 12)
            m[11] = 1; /* 0x0801 = 2049 */
        cf_reader r;
        cf_reader_init(&r, m, sizeof m);
        cf_event out;
        if (cf_event_unpack(&r, &out) != -EINVAL)
            fail_msg("mutation %zu accepted", i);
    }
    /* event_id flag with a zero length is malformed (pack never writes it). */
    uint8_t m[23];
    memcpy(m, rec, sizeof m);
    m[8] = 0x02;
    cf_reader r;
    cf_reader_init(&r, m, sizeof m);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), -EINVAL);
    /* Element flag with zero length is fine: an empty element. */
    memcpy(m, rec, sizeof m);
    m[8] = 0x01;
    cf_reader_init(&r, m, sizeof m);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_non_null(out.element);
    assert_int_equal(out.element_len, 0);
}

/* SPEC 2: `name`, optional, a string of at most 256 bytes (same string rules
 * as the others), "click" when absent or null. */
static void name_rules(void **state)
{
    fx *f = *state;
    size_t n;
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\"}");
    assert_null(f->ev.name);
    assert_string_equal(cf_event_name(&f->ev, &n), "click");
    assert_int_equal(n, 5);
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"name\":null}");
    assert_null(f->ev.name);
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"name\":\"signup\"}");
    assert_true(field_is(f->ev.name, f->ev.name_len, "signup"));
    const char *name = cf_event_name(&f->ev, &n);
    assert_true(field_is(name, n, "signup"));
    length_boundary(f, "name", 0, 256, "name must be a string of at most 256 bytes");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"name\":7}", "name must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"name\":[\"x\"]}", "name must be");
    reject(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"name\":\"\xc0\xaf\"}", "name must be");
    /* Keys are case-sensitive; the first of duplicates wins. */
    accept(f, "{\"user_id\":\"u\",\"page_url\":\"/\",\"Name\":\"x\","
              "\"name\":\"a\",\"name\":\"b\"}");
    assert_true(field_is(f->ev.name, f->ev.name_len, "a"));
}

/* Packed form version 2 (docs/EVENT.md): flag 0x08, a u16 name length
 * after the fixed header, the name bytes last. "click" packs as absent, so
 * events without a name keep the version 1 bytes (pack_layout_is_stable). */
static void pack_name(void **state)
{
    (void)state;
    cf_event ev = {.ts = 0x0102030405060708, .user_id = "u", .user_id_len = 1,
                   .page_url = "/p", .page_url_len = 2, .element = "e", .element_len = 1,
                   .properties = "{}", .properties_len = 2, .name = "pv", .name_len = 2};
    static const uint8_t want[] = {
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, /* ts */
        0x0d,                                           /* flags: element | properties | name */
        0x01, 0x00, 0x02, 0x00, 0x01, 0x00, 0x00, 0x00, /* user, page, element, event_id */
        0x02, 0x00, 0x00, 0x00,                         /* properties */
        0x02, 0x00,                                     /* name */
        'u', '/', 'p', 'e', '{', '}', 'p', 'v'};
    cf_buf b = {0};
    assert_int_equal(cf_event_pack(&ev, &b), sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_int_equal(r.left, 0);
    assert_true(field_is(out.name, out.name_len, "pv"));
    assert_event_equal(&ev, &out);
    /* Every truncation, the name length included, is refused. */
    for (size_t cut = 0; cut < sizeof want; cut++) {
        cf_reader_init(&r, want, cut);
        cf_event back = {.ts = 5};
        assert_int_equal(cf_event_unpack(&r, &back), -EINVAL);
        assert_true(back.ts == 5);
    }
    /* An empty name is present and empty; "click" packs as absent. */
    cf_buf_reset(&b);
    ev.name = "";
    ev.name_len = 0;
    assert_int_equal(cf_event_pack(&ev, &b), 21 + 6 + 2);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_non_null(out.name);
    assert_int_equal(out.name_len, 0);
    cf_buf_reset(&b);
    ev.name = "click";
    ev.name_len = 5;
    assert_int_equal(cf_event_pack(&ev, &b), 21 + 6);
    assert_int_equal(b.data[8], 0x05);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_null(out.name);
    assert_event_equal(&ev, &out);
    /* Limits: 256 bytes round-trip, 257 are refused by pack and unpack. */
    static char big[CF_NAME_MAX + 1];
    memset(big, 'n', sizeof big);
    cf_buf_reset(&b);
    ev.name = big;
    ev.name_len = CF_NAME_MAX;
    assert_true(cf_event_pack(&ev, &b) > 0);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_event_equal(&ev, &out);
    ev.name_len = CF_NAME_MAX + 1;
    assert_int_equal(cf_event_pack(&ev, &b), -EINVAL);
    b.data[21] = 0x01;
    b.data[22] = 0x01;   /* name length 257 */
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(cf_event_unpack(&r, &out), -EINVAL);
    cf_buf_free(&b);
}

static void set_col(cf_event *ev, int col, const char *v)
{
    ev->enrich.col[col] = v;
    ev->enrich.len[col] = (uint16_t)strlen(v);
}

/* Packed form version 3 (docs/EVENT.md): flag 0x10, the enrichment block
 * after the name: u16 mask, u16 lengths of the present strings, the
 * strings. A page_path equal to page_url is one mask bit. */
static void pack_enrich_layout(void **state)
{
    (void)state;
    cf_event ev = {.ts = 1, .user_id = "u", .user_id_len = 1, .page_url = "/p", .page_url_len = 2,
                   .name = "pv", .name_len = 2};
    set_col(&ev, CF_COL_PAGE_PATH, "/p");
    set_col(&ev, CF_COL_BROWSER, "Chrome");
    set_col(&ev, CF_COL_REFERRER, "r");
    ev.enrich.device = CF_DEVICE_MOBILE;
    ev.enrich.is_bot = true;
    static const uint8_t want[] = {
        0x01, 0, 0, 0, 0, 0, 0, 0,                      /* ts */
        0x18,                                           /* flags: name | enrich */
        0x01, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, /* user, page, element, event_id */
        0x00, 0x00, 0x00, 0x00,                         /* properties */
        0x02, 0x00,                                     /* name */
        'u', '/', 'p', 'p', 'v',
        0x01, 0xd1,                                     /* mask: referrer, browser, device 2,
                                                         * is_bot, page_path = page_url */
        0x01, 0x00, 0x06, 0x00,                         /* referrer, browser lengths */
        'r', 'C', 'h', 'r', 'o', 'm', 'e'};
    cf_buf b = {0};
    assert_int_equal(cf_event_pack(&ev, &b), sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_int_equal(r.left, 0);
    assert_event_equal(&ev, &out);
    assert_ptr_equal(out.enrich.col[CF_COL_PAGE_PATH], out.page_url);
    assert_string_equal(cf_event_device_name(out.enrich.device), "mobile");
    /* Every truncation is refused and leaves the output alone, every byte
     * of it: unpack writes the event in place, so a failure in the
     * enrichment block must come before any write (the enrichment too). */
    cf_event sentinel;
    memset(&sentinel, 0xa5, sizeof sentinel);
    for (size_t cut = 0; cut < sizeof want; cut++) {
        cf_reader_init(&r, want, cut);
        cf_event back = sentinel;
        assert_int_equal(cf_event_unpack(&r, &back), -EINVAL);
        assert_memory_equal(&back, &sentinel, sizeof back);
    }
    /* A malformed mask: empty, device 5, or page_path twice. */
    uint8_t bad[sizeof want];
    const uint16_t masks[] = {0x0000, 5u << 11, 0x8080};
    for (size_t i = 0; i < sizeof masks / sizeof masks[0]; i++) {
        memcpy(bad, want, sizeof want);
        bad[28] = (uint8_t)masks[i];
        bad[29] = (uint8_t)(masks[i] >> 8);
        cf_reader_init(&r, bad, sizeof bad);
        cf_event back = sentinel;
        assert_int_equal(cf_event_unpack(&r, &back), -EINVAL);
        assert_memory_equal(&back, &sentinel, sizeof back);
    }
    cf_buf_free(&b);
}

/* Every column round-trips at its limit; an unknown event packs as before
 * (absent fields cost nothing); too long a column is refused. */
static void pack_enrich_round_trip(void **state)
{
    (void)state;
    static char big[CF_ENRICH_COL_MAX + 1];
    memset(big, 'x', sizeof big - 1);
    cf_event ev = {.ts = 9, .user_id = "u", .user_id_len = 1, .page_url = "https://a.example/x?q",
                   .page_url_len = 20};
    cf_buf b = {0};
    assert_int_equal(cf_event_pack(&ev, &b), 21 + 21);
    assert_int_equal(b.data[8], 0);
    for (int i = 0; i < CF_COL_COUNT; i++) {
        assert_non_null(cf_enrich_col_name(i));
        ev.enrich.col[i] = big;
        ev.enrich.len[i] = (uint16_t)(i == 0 ? CF_ENRICH_COL_MAX : i);
    }
    assert_null(cf_enrich_col_name(CF_COL_COUNT));
    ev.enrich.device = CF_DEVICE_BOT;
    cf_buf_reset(&b);
    assert_true(cf_event_pack(&ev, &b) > 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_event_equal(&ev, &out);
    /* Only is_bot known still packs a block. */
    memset(&ev.enrich, 0, sizeof ev.enrich);
    ev.enrich.is_bot = true;
    cf_buf_reset(&b);
    assert_int_equal(cf_event_pack(&ev, &b), 21 + 21 + 2);
    cf_reader_init(&r, b.data, b.len);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_true(out.enrich.is_bot);
    assert_null(out.enrich.col[CF_COL_BROWSER]);
    ev.enrich.col[CF_COL_OS] = big;
    ev.enrich.len[CF_COL_OS] = CF_ENRICH_COL_MAX + 1;
    assert_int_equal(cf_event_pack(&ev, &b), -EINVAL);
    ev.enrich.len[CF_COL_OS] = 1;
    ev.enrich.device = CF_DEVICE_BOT + 1;
    assert_int_equal(cf_event_pack(&ev, &b), -EINVAL);
    cf_buf_free(&b);
}

/* A record of packed form version 2 (a name, no enrichment) reads as
 * before: the bytes below were written by the version 2 packer. */
static void unpack_reads_version2(void **state)
{
    (void)state;
    static const uint8_t v2[] = {
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01, 0x0d, 0x01, 0x00, 0x02, 0x00, 0x01, 0x00,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 'u', '/', 'p', 'e', '{', '}', 'p', 'v'};
    cf_reader r;
    cf_reader_init(&r, v2, sizeof v2);
    cf_event out;
    memset(&out, 0xa5, sizeof out);
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_int_equal(r.left, 0);
    assert_true(field_is(out.name, out.name_len, "pv"));
    for (int i = 0; i < CF_COL_COUNT; i++)
        assert_null(out.enrich.col[i]);
    assert_int_equal(out.enrich.device, CF_DEVICE_NONE);
    assert_false(out.enrich.is_bot);
}

static void json_to_pack_round_trip(void **state)
{
    fx *f = *state;
    accept(f, "{\"user_id\":\"u42\",\"page_url\":\"/x\",\"element\":\"buy\","
              "\"timestamp\":1795514400123,\"event_id\":\"e\",\"properties\":{\"k\":[true]},"
              "\"name\":\"signup\"}");
    cf_buf b = {0};
    assert_true(cf_event_pack(&f->ev, &b) > 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event out;
    assert_int_equal(cf_event_unpack(&r, &out), 0);
    assert_event_equal(&f->ev, &out);
    cf_buf_free(&b);
}

int main(void)
{
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(valid_full_event),
        T(minimal_event_defaults),
        T(null_optional_fields_are_absent),
        T(not_an_object),
        T(required_fields),
        T(string_length_boundaries),
        T(optional_fields_types),
        T(multibyte_length_counts_bytes),
        T(invalid_utf8_rejected),
        T(timestamp_numbers),
        T(timestamp_range_boundaries),
        T(timestamp_strings),
        T(timestamp_future_boundary),
        T(properties_rules),
        T(properties_large_and_appended),
        T(unknown_fields_and_duplicates),
        T(utf8_validation),
        T(pack_round_trip),
        T(pack_max_lengths_round_trip),
        T(pack_layout_is_stable),
        T(pack_rejects_invalid_events),
        T(unpack_rejects_truncated),
        T(unpack_rejects_malformed),
        T(json_to_pack_round_trip),
        T(name_rules),
        T(pack_name),
        T(pack_enrich_layout),
        T(pack_enrich_round_trip),
        T(unpack_reads_version2),
    };
    return cmocka_run_group_tests_name("event", tests, NULL, NULL);
}
