/* Unit tests for cf_compat: the bodies below are byte for byte what the
 * real clients sent (captured from @segment/analytics-node 3.1.0,
 * @umami/node 0.4.0 and plausible-tracker 0.3.9 under tests/compat), and
 * each maps to the click events and trait rows of SPEC 15's table. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_compat.h"

/* @segment/analytics-node 3.1.0: track (with context), page (anonymous,
 * context.page), screen, identify, and a track with a fixed messageId and
 * timestamp, flushed as one /v1/batch. */
static const char SEGMENT_BATCH[] =
    "{\"batch\":[{\"timestamp\":\"2026-12-07T02:34:33.990Z\",\"integrations\":{},\"event\":\"Signed Up\","
    "\"type\":\"track\",\"properties\":{\"plan\":\"pro\",\"url\":\"https://shop.example/pricing?utm_source=news\"},"
    "\"context\":{\"userAgent\":\"Mozilla/5.0 X\",\"ip\":\"203.0.113.9\",\"campaign\":{\"source\":\"news\","
    "\"medium\":\"email\",\"name\":\"spring\"},\"page\":{\"referrer\":\"https://news.example/a\"},\"library\":"
    "{\"name\":\"@segment/analytics-node\",\"version\":\"3.1.0\"}},\"userId\":\"u1\",\"messageId\":"
    "\"node-next-1796610873990-e08fdd1f-7b11-4638-b216-2ef461499d37\",\"_metadata\":{\"nodeVersion\":"
    "\"v20.20.2\",\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-12-07T02:34:33.991Z\",\"integrations\":{},"
    "\"type\":\"page\",\"properties\":{\"path\":\"/home\"},\"name\":\"Home\",\"context\":{\"page\":{\"url\":"
    "\"https://shop.example/home\",\"path\":\"/home\",\"referrer\":\"https://r.example/\"},\"library\":{\"name\":"
    "\"@segment/analytics-node\",\"version\":\"3.1.0\"}},\"anonymousId\":\"anon-7\",\"messageId\":"
    "\"node-next-1796610873991-dd1f7b11-a638-4216-aef4-61499d372d6b\",\"_metadata\":{\"nodeVersion\":"
    "\"v20.20.2\",\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-12-07T02:34:33.991Z\",\"integrations\":{},"
    "\"type\":\"screen\",\"properties\":{},\"name\":\"Settings\",\"context\":{\"library\":{\"name\":"
    "\"@segment/analytics-node\",\"version\":\"3.1.0\"}},\"userId\":\"u2\",\"messageId\":"
    "\"node-next-1796610873991-7b11a638-3216-4ef4-a149-9d372d6b88fd\",\"_metadata\":{\"nodeVersion\":"
    "\"v20.20.2\",\"jsRuntime\":\"node\"}},{\"timestamp\":\"2026-12-07T02:34:33.991Z\",\"integrations\":{},"
    "\"type\":\"identify\",\"userId\":\"u1\",\"traits\":{\"email\":\"a@b.example\",\"plan\":\"pro\"},\"context\":"
    "{\"library\":{\"name\":\"@segment/analytics-node\",\"version\":\"3.1.0\"}},\"messageId\":"
    "\"node-next-1796610873991-a6383216-2ef4-4149-9d37-2d6b88fd5abe\",\"_metadata\":{\"nodeVersion\":"
    "\"v20.20.2\",\"jsRuntime\":\"node\"}},{\"timestamp\":\"2023-11-14T22:13:20.000Z\",\"integrations\":{},"
    "\"event\":\"Clicked\",\"type\":\"track\",\"properties\":{},\"context\":{\"library\":{\"name\":"
    "\"@segment/analytics-node\",\"version\":\"3.1.0\"}},\"anonymousId\":\"anon-8\",\"messageId\":\"fixed-1\","
    "\"_metadata\":{\"nodeVersion\":\"v20.20.2\",\"jsRuntime\":\"node\"}}],\"writeKey\":\"wk_test\","
    "\"sentAt\":\"2026-12-07T02:34:34.000Z\"}";

/* @umami/node 0.4.0: track(object), track(name, data), identify(data). */
static const char UMAMI_PAGE[] =
    "{\"type\":\"event\",\"payload\":{\"website\":\"4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b\",\"url\":"
    "\"/home?utm_source=x\",\"title\":\"Home\",\"referrer\":\"https://ref.example/\",\"hostname\":"
    "\"shop.example\",\"language\":\"en-US\",\"screen\":\"1920x1080\"}}";
static const char UMAMI_EVENT[] =
    "{\"type\":\"event\",\"payload\":{\"website\":\"4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b\",\"name\":\"signup\","
    "\"data\":{\"plan\":\"pro\"}}}";
static const char UMAMI_IDENTIFY[] =
    "{\"type\":\"identify\",\"payload\":{\"website\":\"4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b\",\"data\":"
    "{\"email\":\"a@b.example\"}}}";

/* plausible-tracker 0.3.9 (lib/request.js): short keys, p a JSON string,
 * w and h alongside. */
static const char PLAUSIBLE_SHORT[] =
    "{\"n\":\"signup\",\"u\":\"https://shop.example/pricing?utm_medium=cpc\",\"d\":\"shop.example\","
    "\"r\":\"https://news.example/\",\"w\":1280,\"h\":0,\"p\":\"{\\\"plan\\\":\\\"pro\\\"}\"}";
/* The Plausible Events API's documented long keys, props an object. */
static const char PLAUSIBLE_LONG[] =
    "{\"name\":\"pageview\",\"url\":\"https://shop.example/\",\"domain\":\"shop.example\",\"referrer\":null,"
    "\"props\":{\"author\":\"kim\"}}";

static int translate(cf_compat_endpoint ep, const char *body, cf_compat_result *res, const char **why)
{
    /* A heap copy of exactly the body, so ASan sees any read past it. */
    size_t n = strlen(body);
    char *copy = malloc(n + 1);
    assert_non_null(copy);
    memcpy(copy, body, n + 1);
    int r = cf_compat_translate(ep, copy, n, res, why);
    free(copy);
    return r;
}

static const char *str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static void assert_field(const cJSON *o, const char *k, const char *want)
{
    const char *got = str(o, k);
    if (!want) {
        assert_null(cJSON_GetObjectItemCaseSensitive(o, k));
        return;
    }
    assert_non_null(got);
    assert_string_equal(got, want);
}

static void assert_json(const cJSON *v, const char *want)
{
    assert_non_null(v);
    char *t = cJSON_PrintUnformatted(v);
    assert_string_equal(t, want);
    free(t);
}

static void routes(void **state)
{
    (void)state;
    static const struct {
        const char *path;
        cf_compat_endpoint ep;
    } cases[] = {
        {"/v1/batch", CF_COMPAT_SEGMENT_BATCH}, {"/v1/t", CF_COMPAT_SEGMENT_TRACK},
        {"/v1/page", CF_COMPAT_SEGMENT_PAGE},   {"/v1/s", CF_COMPAT_SEGMENT_SCREEN},
        {"/v1/i", CF_COMPAT_SEGMENT_IDENTIFY},  {"/api/event", CF_COMPAT_PLAUSIBLE},
        {"/api/send", CF_COMPAT_UMAMI},         {"/v1/batchx", CF_COMPAT_NONE},
        {"/v1", CF_COMPAT_NONE},                {"/api/v1/events", CF_COMPAT_NONE},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        assert_int_equal(cf_compat_route(cases[i].path, strlen(cases[i].path)), cases[i].ep);
    assert_int_equal(cf_compat_api_of(CF_COMPAT_SEGMENT_PAGE), CF_COMPAT_API_SEGMENT);
    assert_int_equal(cf_compat_api_of(CF_COMPAT_PLAUSIBLE), CF_COMPAT_API_PLAUSIBLE);
    assert_int_equal(cf_compat_api_of(CF_COMPAT_UMAMI), CF_COMPAT_API_UMAMI);
}

static void segment_node_batch_maps_per_spec(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH, SEGMENT_BATCH, &res, &why), 0);
    assert_string_equal(res.key, "wk_test");
    assert_int_equal(cJSON_GetArraySize(res.events), 4);
    assert_int_equal(cJSON_GetArraySize(res.traits), 1);

    const cJSON *t = cJSON_GetArrayItem(res.events, 0);
    assert_field(t, "user_id", "u1");
    assert_field(t, "name", "Signed Up");
    assert_field(t, "page_url", "https://shop.example/pricing?utm_source=news");   /* properties.url */
    assert_field(t, "event_id", "node-next-1796610873990-e08fdd1f-7b11-4638-b216-2ef461499d37");
    assert_field(t, "timestamp", "2026-12-07T02:34:33.990Z");
    assert_field(t, "user_agent", "Mozilla/5.0 X");
    assert_field(t, "client_ip", "203.0.113.9");
    assert_field(t, "referrer", "https://news.example/a");
    assert_field(t, "utm_source", "news");
    assert_field(t, "utm_medium", "email");
    assert_field(t, "utm_campaign", "spring");
    assert_field(t, "utm_term", NULL);
    assert_json(cJSON_GetObjectItemCaseSensitive(t, "properties"),
                "{\"plan\":\"pro\",\"url\":\"https://shop.example/pricing?utm_source=news\"}");

    const cJSON *p = cJSON_GetArrayItem(res.events, 1);
    assert_field(p, "user_id", "anon-7");                        /* anonymousId without userId */
    assert_field(p, "name", "pageview");
    assert_field(p, "page_url", "https://shop.example/home");    /* context.page.url */
    assert_field(p, "referrer", "https://r.example/");
    assert_field(p, "user_agent", NULL);

    const cJSON *s = cJSON_GetArrayItem(res.events, 2);
    assert_field(s, "user_id", "u2");
    assert_field(s, "name", "pageview");
    assert_field(s, "page_url", "(none)");

    const cJSON *c = cJSON_GetArrayItem(res.events, 3);
    assert_field(c, "user_id", "anon-8");
    assert_field(c, "event_id", "fixed-1");
    assert_field(c, "timestamp", "2023-11-14T22:13:20.000Z");

    const cJSON *id = cJSON_GetArrayItem(res.traits, 0);
    assert_field(id, "user_id", "u1");
    assert_json(cJSON_GetObjectItemCaseSensitive(id, "traits"), "{\"email\":\"a@b.example\",\"plan\":\"pro\"}");
    cf_compat_result_free(&res);
    cf_compat_result_free(&res);   /* zeroed: harmless */
}

static void segment_single_calls_and_short_paths(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    /* analytics.js short path: text/plain body, key in the body, no type
     * needed (the path says it), page path only. */
    assert_int_equal(translate(CF_COMPAT_SEGMENT_PAGE,
                               "{\"anonymousId\":\"a1\",\"writeKey\":\"site1\",\"context\":{\"page\":"
                               "{\"path\":\"/docs\"}},\"messageId\":\"m1\"}",
                               &res, &why), 0);
    assert_string_equal(res.key, "site1");
    const cJSON *e = cJSON_GetArrayItem(res.events, 0);
    assert_field(e, "page_url", "/docs");   /* context.page.path when no url */
    assert_field(e, "name", "pageview");
    assert_field(e, "event_id", "m1");
    cf_compat_result_free(&res);

    /* An empty userId counts as absent; with no anonymousId either there is
     * no user_id (the server derives one). */
    assert_int_equal(translate(CF_COMPAT_SEGMENT_TRACK, "{\"userId\":\"\",\"event\":\"x\"}", &res, &why), 0);
    assert_null(res.key);
    assert_field(cJSON_GetArrayItem(res.events, 0), "user_id", NULL);
    cf_compat_result_free(&res);

    /* A non-string userId is passed on as sent, for validation to reject. */
    assert_int_equal(translate(CF_COMPAT_SEGMENT_TRACK, "{\"userId\":42,\"event\":\"x\"}", &res, &why), 0);
    assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(res.events, 0), "user_id")));
    cf_compat_result_free(&res);

    assert_int_equal(translate(CF_COMPAT_SEGMENT_IDENTIFY, "{\"userId\":\"u9\",\"traits\":{\"a\":1}}", &res, &why),
                     0);
    assert_int_equal(cJSON_GetArraySize(res.events), 0);
    assert_field(cJSON_GetArrayItem(res.traits, 0), "user_id", "u9");
    cf_compat_result_free(&res);
}

static void segment_group_and_alias_are_ignored(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH,
                               "{\"batch\":[{\"type\":\"group\",\"groupId\":\"g\"},{\"type\":\"alias\"},"
                               "{\"type\":\"track\",\"event\":\"e\",\"userId\":\"u\"}]}",
                               &res, &why), 0);
    assert_int_equal(res.ignored, 2);
    assert_int_equal(cJSON_GetArraySize(res.events), 1);
    cf_compat_result_free(&res);
}

static char *big_batch(size_t n_messages, size_t pad)
{
    size_t cap = 64 + n_messages * (pad + 96);
    char *b = malloc(cap);
    assert_non_null(b);
    size_t n = (size_t)snprintf(b, cap, "{\"writeKey\":\"k\",\"batch\":[");
    for (size_t i = 0; i < n_messages; i++) {
        n += (size_t)snprintf(b + n, cap - n, "%s{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\","
                              "\"properties\":{\"pad\":\"", i ? "," : "");
        memset(b + n, 'x', pad);
        n += pad;
        n += (size_t)snprintf(b + n, cap - n, "\"}}");
    }
    snprintf(b + n, cap - n, "]}");
    return b;
}

static void segment_size_limits(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    /* One message just over 32 KB: refused whole, nothing mapped. */
    char *b = big_batch(1, 32 * 1024);
    assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH, b, &res, &why), -EMSGSIZE);
    assert_string_equal(why, "a message is larger than 32 KB");
    assert_null(res.events);
    free(b);
    /* Just under: fine. */
    b = big_batch(1, 32 * 1024 - 100);
    assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH, b, &res, &why), 0);
    cf_compat_result_free(&res);
    free(b);
    /* Twenty 30 KB messages: each fine, the batch over 500 KB. */
    b = big_batch(20, 30 * 1024);
    assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH, b, &res, &why), -EMSGSIZE);
    assert_string_equal(why, "request body is larger than 500 KB");
    free(b);
    /* A single call is one message: 32 KB applies to the body. */
    b = big_batch(1, 33 * 1024);
    char *single = strstr(b, "{\"type\"");
    single[strlen(single) - 2] = '\0';   /* cut the closing "]}" */
    assert_int_equal(translate(CF_COMPAT_SEGMENT_TRACK, single, &res, &why), -EMSGSIZE);
    free(b);
}

/* The 32 KB rule measures the message's compact JSON exactly (keys,
 * escapes, numbers, literals): 32768 bytes pass, 32769 do not. */
static void segment_message_size_is_exact(void **state)
{
    (void)state;
    const char *head = "{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"n\":-12345,\"t\":true,"
                       "\"f\":false,\"z\":null,\"a\":[1,{}],\"esc\":\"q\\\"b\\\\\\n\",\"pad\":\"";
    const char *tail = "\"}";
    for (size_t total = 32767; total <= 32769; total++) {
        size_t pad = total - strlen(head) - strlen(tail);
        char *m = malloc(total + 1);
        assert_non_null(m);
        strcpy(m, head);
        memset(m + strlen(head), 'x', pad);
        strcpy(m + strlen(head) + pad, tail);
        assert_int_equal(strlen(m), total);
        /* Compact already: what JSON.stringify would print. */
        cJSON *v = cJSON_Parse(m);
        char *printed = cJSON_PrintUnformatted(v);
        assert_string_equal(printed, m);
        free(printed);
        cJSON_Delete(v);
        cf_compat_result res;
        const char *why = NULL;
        int r = translate(CF_COMPAT_SEGMENT_TRACK, m, &res, &why);
        assert_int_equal(r, total <= 32768 ? 0 : -EMSGSIZE);
        cf_compat_result_free(&res);
        free(m);
    }
}

static void segment_bad_shapes(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    static const char *const bad[] = {
        "not json", "[1,2]", "{\"batch\":{}}", "{\"batch\":[1]}", "{\"batch\":[{\"event\":\"no type\"}]}",
        "{\"batch\":[]} trailing", "{\"batch\":[{\"type\":\"track\",\"event\":\"a\\u0000b\"}]}",
        "{\"batch\":[{\"type\":\"track\",\"event\":\"a\x01" "b\"}]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(translate(CF_COMPAT_SEGMENT_BATCH, bad[i], &res, &why), -EBADMSG);
        assert_non_null(why);
        assert_null(res.events);
    }
    /* An escaped backslash before "u0000" is not a NUL escape. */
    assert_int_equal(translate(CF_COMPAT_SEGMENT_TRACK, "{\"event\":\"a\\\\u0000\"}", &res, &why), 0);
    assert_field(cJSON_GetArrayItem(res.events, 0), "name", "a\\u0000");
    cf_compat_result_free(&res);
}

static void umami_node_bodies(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    assert_int_equal(translate(CF_COMPAT_UMAMI, UMAMI_PAGE, &res, &why), 0);
    assert_string_equal(res.key, "4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b");
    const cJSON *e = cJSON_GetArrayItem(res.events, 0);
    assert_field(e, "name", "pageview");   /* no name: a pageview */
    assert_field(e, "page_url", "/home?utm_source=x");
    assert_field(e, "referrer", "https://ref.example/");
    assert_field(e, "site", "4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b");
    assert_field(e, "user_id", NULL);
    assert_null(cJSON_GetObjectItemCaseSensitive(e, "properties"));
    cf_compat_result_free(&res);

    assert_int_equal(translate(CF_COMPAT_UMAMI, UMAMI_EVENT, &res, &why), 0);
    e = cJSON_GetArrayItem(res.events, 0);
    assert_field(e, "name", "signup");
    assert_field(e, "page_url", "(none)");   /* no url */
    assert_json(cJSON_GetObjectItemCaseSensitive(e, "properties"), "{\"plan\":\"pro\"}");
    cf_compat_result_free(&res);

    assert_int_equal(translate(CF_COMPAT_UMAMI, UMAMI_IDENTIFY, &res, &why), 0);
    assert_int_equal(cJSON_GetArraySize(res.events), 0);
    const cJSON *t = cJSON_GetArrayItem(res.traits, 0);
    assert_json(cJSON_GetObjectItemCaseSensitive(t, "traits"), "{\"email\":\"a@b.example\"}");
    assert_field(t, "site", "4fb7fa4c-5b46-438d-94b3-3a8fb9bc2e8b");
    cf_compat_result_free(&res);

    static const char *const bad[] = {
        "{\"type\":\"boom\",\"payload\":{\"website\":\"w\"}}", "{\"type\":\"event\"}",
        "{\"type\":\"event\",\"payload\":{\"url\":\"/x\"}}",
        "{\"type\":\"event\",\"payload\":{\"website\":\"w\",\"data\":[1]}}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(translate(CF_COMPAT_UMAMI, bad[i], &res, &why), -EBADMSG);

    /* identify data over 32 KB (a user_traits row kept until deleted):
     * refused like a Segment message that size. */
    size_t big = 40000;
    char *body = malloc(big + 200);
    assert_non_null(body);
    int n = snprintf(body, 200, "{\"type\":\"identify\",\"payload\":{\"website\":\"w\",\"id\":\"u\",\"data\":{\"k\":\"");
    memset(body + n, 'z', big);
    strcpy(body + n + big, "\"}}}");
    assert_int_equal(translate(CF_COMPAT_UMAMI, body, &res, &why), -EMSGSIZE);
    assert_string_equal(why, "payload.data is larger than 32 KB");
    free(body);
}

static void plausible_short_and_long_keys(void **state)
{
    (void)state;
    cf_compat_result res;
    const char *why = NULL;
    assert_int_equal(translate(CF_COMPAT_PLAUSIBLE, PLAUSIBLE_SHORT, &res, &why), 0);
    assert_string_equal(res.key, "shop.example");
    const cJSON *e = cJSON_GetArrayItem(res.events, 0);
    assert_field(e, "name", "signup");
    assert_field(e, "page_url", "https://shop.example/pricing?utm_medium=cpc");
    assert_field(e, "referrer", "https://news.example/");
    assert_field(e, "site", "shop.example");
    assert_json(cJSON_GetObjectItemCaseSensitive(e, "properties"), "{\"plan\":\"pro\"}");
    cf_compat_result_free(&res);

    assert_int_equal(translate(CF_COMPAT_PLAUSIBLE, PLAUSIBLE_LONG, &res, &why), 0);
    e = cJSON_GetArrayItem(res.events, 0);
    assert_field(e, "name", "pageview");
    assert_field(e, "referrer", NULL);   /* null: absent */
    assert_json(cJSON_GetObjectItemCaseSensitive(e, "properties"), "{\"author\":\"kim\"}");
    cf_compat_result_free(&res);

    static const char *const bad[] = {
        "{\"n\":\"pageview\",\"d\":\"shop.example\"}",                     /* no url */
        "{\"n\":\"pageview\",\"u\":42,\"d\":\"shop.example\"}",            /* bad url */
        "{\"n\":\"pageview\",\"u\":\"/\"}",                                /* no domain */
        "{\"u\":\"/\",\"d\":\"s\"}",                                       /* no name */
        "{\"n\":\"x\",\"u\":\"/\",\"d\":\"s\",\"p\":\"not json\"}",
        "{\"n\":\"x\",\"u\":\"/\",\"d\":\"s\",\"p\":\"[1]\"}",
        "{\"n\":\"x\",\"u\":\"/\",\"d\":\"s\",\"props\":7}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(translate(CF_COMPAT_PLAUSIBLE, bad[i], &res, &why), -EBADMSG);
        assert_non_null(why);
    }
}

static void basic_auth_user(void **state)
{
    (void)state;
    char out[64];
    /* What analytics-node sends for writeKey "wk_test": base64("wk_test:"). */
    assert_int_equal(cf_compat_basic_user("Basic d2tfdGVzdDo=", out, sizeof out), 7);
    assert_string_equal(out, "wk_test");
    /* user:password keeps only the user. */
    assert_int_equal(cf_compat_basic_user("basic dXNlcjpwYXNz", out, sizeof out), 4);
    assert_string_equal(out, "user");
    assert_int_equal(cf_compat_basic_user("Bearer d2tfdGVzdDo=", out, sizeof out), -EINVAL);
    assert_int_equal(cf_compat_basic_user("Basic !!!!", out, sizeof out), -EINVAL);
    assert_int_equal(cf_compat_basic_user("Basic d2tfdGVzdA==", out, sizeof out), -EINVAL);   /* no ':' */
    assert_int_equal(cf_compat_basic_user("Basic Og==", out, sizeof out), -EINVAL);           /* empty user */
    assert_int_equal(cf_compat_basic_user("Basic d2tfdGVzdDo=", out, 4), -EINVAL);            /* too long */
    assert_int_equal(cf_compat_basic_user(NULL, out, sizeof out), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(routes),
        cmocka_unit_test(segment_node_batch_maps_per_spec),
        cmocka_unit_test(segment_single_calls_and_short_paths),
        cmocka_unit_test(segment_group_and_alias_are_ignored),
        cmocka_unit_test(segment_size_limits),
        cmocka_unit_test(segment_message_size_is_exact),
        cmocka_unit_test(segment_bad_shapes),
        cmocka_unit_test(umami_node_bodies),
        cmocka_unit_test(plausible_short_and_long_keys),
        cmocka_unit_test(basic_auth_user),
    };
    return cmocka_run_group_tests_name("compat", tests, NULL, NULL);
}
