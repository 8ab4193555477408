/* ingest: body formats, per-event errors, limits (SPEC section 3). */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <unistd.h>

#include "ingest.h"

#define NOW 1795000000000LL
#define EV "{\"user_id\":\"u\",\"page_url\":\"/p\"}"

static const cf_event_limits lim = {.max_future_ms = 60000};

/* Parses a copy of text (the parser writes into its buffer). */
static int parse(cf_ingest *ig, cf_body_format fmt, const char *text, size_t len, size_t max_batch,
                 const char **why)
{
    char *copy = malloc(len + 1);
    assert_non_null(copy);
    memcpy(copy, text, len);
    copy[len] = '\0';
    memset(ig, 0, sizeof *ig);
    int r = cf_ingest_parse(ig, fmt, copy, len, max_batch, &lim, NOW, why);
    /* Events may borrow from the trees but never from the body: free it
     * before the caller looks at them (ASan catches a mistake). */
    free(copy);
    return r;
}

static int parse_s(cf_ingest *ig, cf_body_format fmt, const char *text, size_t max_batch)
{
    const char *why;
    return parse(ig, fmt, text, strlen(text), max_batch, &why);
}

static void content_types(void **state)
{
    (void)state;
    cf_body_format f = CF_BODY_NDJSON;
    assert_int_equal(cf_ingest_content_type("application/json", &f), 0);
    assert_int_equal(f, CF_BODY_JSON);
    f = CF_BODY_NDJSON;
    assert_int_equal(cf_ingest_content_type("Application/JSON; charset=utf-8", &f), 0);
    assert_int_equal(f, CF_BODY_JSON);
    f = CF_BODY_NDJSON;
    assert_int_equal(cf_ingest_content_type("text/plain;charset=UTF-8", &f), 0);
    assert_int_equal(f, CF_BODY_JSON);
    assert_int_equal(cf_ingest_content_type(" application/x-ndjson ", &f), 0);
    assert_int_equal(f, CF_BODY_NDJSON);
    const char *bad[] = {"application/jsonx", "text/html", "", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", "json", "application/json5"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(cf_ingest_content_type(bad[i], &f), -EPROTONOSUPPORT);
    assert_int_equal(cf_ingest_content_type(NULL, &f), -EPROTONOSUPPORT);
}

static void single_object(void **state)
{
    (void)state;
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "  " EV "\n", 10), 0);
    assert_int_equal(ig.n_events, 1);
    assert_int_equal(ig.rejected, 0);
    assert_int_equal(ig.events[0].user_id_len, 1);
    assert_memory_equal(ig.events[0].user_id, "u", 1);
    assert_int_equal(ig.events[0].ts, NOW);   /* no timestamp: receive time */
    cf_ingest_free(&ig);
    cf_ingest_free(&ig);   /* idempotent */
    cf_ingest_free(NULL);
}

static void array_with_invalid_elements(void **state)
{
    (void)state;
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "[" EV ", 42, {\"user_id\":\"u\"}, " EV "]", 10), 0);
    assert_int_equal(ig.n_events, 2);
    assert_int_equal(ig.event_index[0], 0);
    assert_int_equal(ig.event_index[1], 3);
    assert_int_equal(ig.rejected, 2);
    assert_int_equal(ig.n_errors, 2);
    assert_int_equal(ig.errors[0].index, 1);
    assert_string_equal(ig.errors[0].reason, "event must be a JSON object");
    assert_int_equal(ig.errors[1].index, 2);
    assert_non_null(ig.errors[1].reason);
    cf_ingest_free(&ig);

    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "[]", 10), 0);
    assert_int_equal(ig.n_events, 0);
    assert_int_equal(ig.rejected, 0);
    cf_ingest_free(&ig);
}

static void not_json_is_refused_whole(void **state)
{
    (void)state;
    const char *bad[] = {"", "   \n", "nope", "{\"user_id\":", EV " x", EV EV, "42", "\"str\"", "null",
                         "[" EV ",]"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cf_ingest ig;
        const char *why = NULL;
        int r = parse(&ig, CF_BODY_JSON, bad[i], strlen(bad[i]), 10, &why);
        if (r != -EBADMSG)
            fail_msg("'%s' gave %d", bad[i], r);
        assert_non_null(why);
        cf_ingest_free(&ig);
    }
    /* An embedded NUL must not hide trailing garbage. */
    static const char nul[] = EV "\0garbage";
    cf_ingest ig;
    const char *why;
    assert_int_equal(parse(&ig, CF_BODY_JSON, nul, sizeof nul - 1, 10, &why), -EBADMSG);
    cf_ingest_free(&ig);
}

/* SPEC 2: U+0000 (escaped) and raw control bytes, which cJSON accepts, reject
 * the event that holds them with a reason; never a truncated string. */
static void nul_and_control_characters(void **state)
{
    (void)state;
    cf_ingest ig;
    const char *why = NULL;
    /* \u0000 in user_id, page_url, a key, deep in properties, and raw
     * 0x01 in a value: each element rejected, the clean ones kept. */
    static const char body[] =
        "[{\"user_id\":\"a\\u0000b\",\"page_url\":\"/x\"},"
        "{\"user_id\":\"u\",\"page_url\":\"/x\\u0000y\"},"
        EV ","
        "{\"user_id\":\"u\",\"page_url\":\"/p\",\"k\\u0000\":1},"
        "{\"user_id\":\"u\",\"page_url\":\"/p\",\"properties\":{\"a\":[{\"b\":\"\\u0000\"}]}},"
        "{\"user_id\":\"a\x01" "b\",\"page_url\":\"/p\"},"
        "{\"user_id\":\"u\",\"page_url\":\"/p\",\"element\":\"\\u0001ok\"}]";
    assert_int_equal(parse(&ig, CF_BODY_JSON, body, sizeof body - 1, 10, &why), 0);
    assert_int_equal(ig.n_events, 2);
    assert_int_equal(ig.event_index[0], 2);
    assert_int_equal(ig.event_index[1], 6);   /* an escaped \u0001 is fine */
    assert_int_equal(ig.events[1].element_len, 3);
    assert_int_equal(ig.rejected, 5);
    size_t want_index[] = {0, 1, 3, 4, 5};
    for (size_t i = 0; i < 5; i++) {
        assert_int_equal(ig.errors[i].index, want_index[i]);
        assert_non_null(strstr(ig.errors[i].reason, i < 4 ? "U+0000" : "control"));
    }
    cf_ingest_free(&ig);

    /* A raw NUL byte inside a string of a single object: rejected, not
     * counted as user "a". */
    static const char raw_nul[] = "{\"user_id\":\"a\0b\",\"page_url\":\"/p\"}";
    assert_int_equal(parse(&ig, CF_BODY_JSON, raw_nul, sizeof raw_nul - 1, 10, &why), 0);
    assert_int_equal(ig.n_events, 0);
    assert_int_equal(ig.rejected, 1);
    assert_non_null(strstr(ig.errors[0].reason, "control"));
    cf_ingest_free(&ig);

    /* Outside every event the body is not JSON: 400. */
    static const char between[] = "[" EV ",\x01" EV "]";
    assert_int_equal(parse(&ig, CF_BODY_JSON, between, sizeof between - 1, 10, &why), -EBADMSG);
    assert_non_null(strstr(why, "control"));
    cf_ingest_free(&ig);

    /* NDJSON: one line, one event, whatever the finding. */
    static const char nd[] = EV "\n"
                             "{\"user_id\":\"u\\u0000\",\"page_url\":\"/p\"}\n"
                             "\x02" EV "\n"
                             "{\"user_id\":\"u\",\"page_url\":\"/p\0\"}\n" EV "\n";
    assert_int_equal(parse(&ig, CF_BODY_NDJSON, nd, sizeof nd - 1, 10, &why), 0);
    assert_int_equal(ig.n_events, 2);
    assert_int_equal(ig.event_index[0], 0);
    assert_int_equal(ig.event_index[1], 4);
    assert_int_equal(ig.rejected, 3);
    assert_non_null(strstr(ig.errors[0].reason, "U+0000"));
    assert_non_null(strstr(ig.errors[1].reason, "control"));
    assert_non_null(strstr(ig.errors[2].reason, "control"));
    cf_ingest_free(&ig);
}

static char *repeat_array(size_t n, const char *elem)
{
    size_t el = strlen(elem);
    char *s = malloc(2 + n * (el + 1) + 1);
    assert_non_null(s);
    size_t o = 0;
    s[o++] = '[';
    for (size_t i = 0; i < n; i++) {
        if (i)
            s[o++] = ',';
        memcpy(s + o, elem, el);
        o += el;
    }
    s[o++] = ']';
    s[o] = '\0';
    return s;
}

static void batch_limit_is_exact(void **state)
{
    (void)state;
    cf_ingest ig;
    char *a = repeat_array(5, EV);
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, a, 5), 0);
    assert_int_equal(ig.n_events, 5);
    cf_ingest_free(&ig);
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, a, 4), -E2BIG);
    cf_ingest_free(&ig);
    free(a);
    /* Invalid elements count toward the limit too. */
    a = repeat_array(5, "1");
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, a, 4), -E2BIG);
    cf_ingest_free(&ig);
    free(a);
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, EV "\n" EV "\n\n" EV, 3), 0);
    assert_int_equal(ig.n_events, 3);
    cf_ingest_free(&ig);
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, EV "\n" EV "\nx\n" EV, 3), -E2BIG);
    cf_ingest_free(&ig);
}

static void ndjson_lines(void **state)
{
    (void)state;
    cf_ingest ig;
    const char *body = "\n" EV "\r\n  \nnot json\n[1]\n\t" EV "\t\n";
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, body, 10), 0);
    assert_int_equal(ig.n_events, 2);
    assert_int_equal(ig.event_index[0], 0);
    assert_int_equal(ig.event_index[1], 3);   /* blank lines do not count */
    assert_int_equal(ig.rejected, 2);
    assert_int_equal(ig.errors[0].index, 1);
    assert_string_equal(ig.errors[0].reason, "line is not valid JSON");
    assert_int_equal(ig.errors[1].index, 2);
    assert_string_equal(ig.errors[1].reason, "event must be a JSON object");
    cf_ingest_free(&ig);

    /* No line is JSON: the whole body is refused. */
    const char *why;
    assert_int_equal(parse(&ig, CF_BODY_NDJSON, "a\nb\n", 4, 10, &why), -EBADMSG);
    assert_non_null(why);
    cf_ingest_free(&ig);
    /* One JSON line that is not an event is not "not JSON": 202 material. */
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, "a\n7\n", 10), 0);
    assert_int_equal(ig.n_events, 0);
    assert_int_equal(ig.rejected, 2);
    cf_ingest_free(&ig);
    /* A JSON array body sent as NDJSON is one line, one (invalid) event. */
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, "[" EV "," EV "]", 10), 0);
    assert_int_equal(ig.n_events, 0);
    assert_int_equal(ig.rejected, 1);
    cf_ingest_free(&ig);
}

static void errors_are_capped(void **state)
{
    (void)state;
    cf_ingest ig;
    char *a = repeat_array(150, "{}");
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, a, 1000), 0);
    assert_int_equal(ig.rejected, 150);
    assert_int_equal(ig.n_errors, CF_INGEST_MAX_ERRORS);
    assert_int_equal(ig.errors[CF_INGEST_MAX_ERRORS - 1].index, CF_INGEST_MAX_ERRORS - 1);
    cf_ingest_free(&ig);
    free(a);
}

static void properties_survive_buffer_growth(void **state)
{
    (void)state;
    enum { N = 300 };
    char *body = malloc(N * 96);
    assert_non_null(body);
    size_t o = 0;
    for (int i = 0; i < N; i++)
        o += (size_t)sprintf(body + o, "{\"user_id\":\"u\",\"page_url\":\"/p\",\"properties\":{\"i\":%d}}\n", i);
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_NDJSON, body, N), 0);
    assert_int_equal(ig.n_events, N);
    for (int i = 0; i < N; i++) {
        char want[32];
        int n = sprintf(want, "{\"i\":%d}", i);
        assert_int_equal(ig.events[i].properties_len, (size_t)n);
        assert_memory_equal(ig.events[i].properties, want, (size_t)n);
    }
    cf_ingest_free(&ig);
    free(body);
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rnd(uint64_t *st)
{
    *st ^= *st >> 12;
    *st ^= *st << 25;
    *st ^= *st >> 27;
    return *st * 2685821657736338717ULL;
}

/* Mutated bodies (bytes flipped, inserted, deleted, lines cut) never crash
 * the parser (run under ASan/UBSan in CI) and always give a coherent result. */
static void random_mutations_are_handled(void **state)
{
    (void)state;
    static const char *const seeds[] = {
        "[" EV ",{\"user_id\":\"u2\",\"page_url\":\"/q\",\"element\":\"b\",\"event_id\":\"e\","
        "\"timestamp\":\"2026-11-24T10:00:00.123Z\",\"properties\":{\"a\":[1,{\"b\":null}]}}]",
        EV "\n" EV "\r\n{\"user_id\":\"\\u00e9\",\"page_url\":\"/\\ud83d\\ude00\",\"timestamp\":1795000000000}\n",
    };
    static const char alphabet[] = "{}[],:\"\\\n0-eu";   /* bytes that matter to JSON */
    uint64_t st = 0x9e3779b97f4a7c15ULL;
    char buf[512];
    size_t with_events = 0, refused = 0;
    for (int iter = 0; iter < 20000; iter++) {
        const char *seed = seeds[iter % 2];
        size_t n = strlen(seed);
        memcpy(buf, seed, n);
        int edits = 1 + (int)(rnd(&st) % 4);
        for (int k = 0; k < edits && n > 0; k++) {
            size_t at = (size_t)(rnd(&st) % n);
            switch (rnd(&st) % 4) {
            case 0: buf[at] = (char)rnd(&st); break;
            case 1: memmove(buf + at, buf + at + 1, n - at - 1); n--; break;
            case 2:
                if (n + 1 < sizeof buf) {
                    memmove(buf + at + 1, buf + at, n - at);
                    buf[at] = alphabet[rnd(&st) % (sizeof alphabet - 1)];
                    n++;
                }
                break;
            default: n = at; break;
            }
        }
        cf_ingest ig;
        const char *why = NULL;
        cf_body_format fmt = (cf_body_format)(iter / 2 % 2);
        size_t max_batch = 1 + (size_t)(rnd(&st) % 4);
        int r = parse(&ig, fmt, buf, n, max_batch, &why);
        assert_true(r == 0 || r == -EBADMSG || r == -E2BIG);
        with_events += r == 0 && ig.n_events > 0;
        refused += r == -EBADMSG;
        if (r == 0) {
            assert_true(ig.n_events + ig.rejected <= max_batch);
            assert_true(ig.n_errors <= ig.rejected);
            for (size_t i = 0; i < ig.n_events; i++) {
                assert_true(ig.events[i].user_id_len >= 1 && ig.events[i].page_url_len >= 1);
                if (ig.events[i].properties)
                    assert_int_equal(ig.events[i].properties[0], '{');
            }
        } else {
            assert_non_null(why);
        }
        cf_ingest_free(&ig);
    }
    /* Both paths were exercised, not just the refusal. */
    assert_true(with_events > 1000);
    assert_true(refused > 1000);
}

/* ---- enrichment (SPEC 15) ---------------------------------------------- */

static bool col_is(const cf_event *ev, int col, const char *want)
{
    if (!want)
        return ev->enrich.col[col] == NULL;
    return ev->enrich.col[col] && ev->enrich.len[col] == strlen(want) &&
           memcmp(ev->enrich.col[col], want, strlen(want)) == 0;
}

static cf_enricher *rules(void)
{
    const char *dir = getenv("CF_UAP_CORE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/regexes.yaml", dir && *dir ? dir : "/usr/share/uap-core");
    if (access(path, R_OK) != 0)
        return NULL;
    cf_enricher *e = NULL;
    char err[256];
    assert_int_equal(cf_enricher_new(path, NULL, 64, &e, err, sizeof err), 0);
    return e;
}

#define CHROME "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) " \
               "Chrome/120.0.0.0 Safari/537.36"
#define GOOGLEBOT "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"

/* The header's User-Agent and Referer serve every event without its own
 * fields; an event's user_agent and referrer win; URL columns per event. */
static void enrich_fields_and_headers(void **state)
{
    (void)state;
    cf_enricher *en = rules();
    if (!en)
        skip();
    const char *body = "[{\"user_id\":\"a\",\"page_url\":\"https://s.example/x?utm_source=news&utm_medium=mail\"},"
                       "{\"user_id\":\"b\",\"page_url\":\"/y\",\"user_agent\":\"" GOOGLEBOT "\","
                       "\"referrer\":\"https://Search.Example:8443/q\"},"
                       "{\"user_id\":\"c\",\"page_url\":\"/z\",\"user_agent\":null,\"referrer\":\"\"}]";
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, body, 10), 0);
    assert_int_equal(ig.n_events, 3);
    const cf_ingest_context ctx = {.ua = en, .user_agent = CHROME, .referer = "https://ref.example/",
                                   .country = "FR"};
    assert_int_equal(cf_ingest_enrich(&ig, &ctx), 0);
    const cf_event *a = &ig.events[0], *b = &ig.events[1], *c = &ig.events[2];
    assert_true(col_is(a, CF_COL_UTM_SOURCE, "news"));
    assert_true(col_is(a, CF_COL_UTM_MEDIUM, "mail"));
    assert_true(col_is(a, CF_COL_UTM_CAMPAIGN, NULL));
    assert_true(col_is(a, CF_COL_PAGE_PATH, "/x"));
    assert_true(col_is(a, CF_COL_REFERRER, "https://ref.example/"));
    assert_true(col_is(a, CF_COL_REFERRER_HOST, "ref.example"));
    assert_true(col_is(a, CF_COL_BROWSER, "Chrome"));
    assert_true(col_is(a, CF_COL_OS, "Windows"));
    assert_int_equal(a->enrich.device, CF_DEVICE_DESKTOP);
    assert_false(a->enrich.is_bot);
    assert_true(col_is(a, CF_COL_COUNTRY, "FR"));
    assert_true(col_is(b, CF_COL_REFERRER, "https://Search.Example:8443/q"));
    assert_true(col_is(b, CF_COL_REFERRER_HOST, "search.example"));
    assert_true(col_is(b, CF_COL_BROWSER, "Googlebot"));
    assert_int_equal(b->enrich.device, CF_DEVICE_BOT);
    assert_true(b->enrich.is_bot);
    /* null and "" fall back to the headers. */
    assert_true(col_is(c, CF_COL_BROWSER, "Chrome"));
    assert_true(col_is(c, CF_COL_REFERRER, "https://ref.example/"));
    assert_true(col_is(c, CF_COL_PAGE_PATH, "/z"));
    cf_ingest_free(&ig);
    cf_enricher_free(en);
}

/* A batch of events with their own user_agent fields goes through the
 * request's memo: every event still gets its own User-Agent's columns. */
static void enrich_batch_of_user_agents(void **state)
{
    (void)state;
    cf_enricher *en = rules();
    if (!en)
        skip();
    static const char *const uas[] = {CHROME, GOOGLEBOT, "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) "
                                      "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1",
                                      "x", "y"};
    static const char *const browsers[] = {"Chrome", "Googlebot", "Mobile Safari", "Other", "Other"};
    enum { N = 40 };
    cf_buf body = {0};
    cf_buf_put(&body, "[", 1);
    for (int i = 0; i < N; i++) {
        char ev[400];
        int n = snprintf(ev, sizeof ev, "%s{\"user_id\":\"u\",\"page_url\":\"/p\",\"user_agent\":\"%s\"}",
                         i ? "," : "", uas[(i * 7) % 5]);
        cf_buf_put(&body, ev, (size_t)n);
    }
    cf_buf_put(&body, "]", 1);
    cf_ingest ig;
    const char *why;
    assert_int_equal(parse(&ig, CF_BODY_JSON, (const char *)body.data, body.len, N, &why), 0);
    const cf_ingest_context ctx = {.ua = en, .user_agent = CHROME};
    assert_int_equal(cf_ingest_enrich(&ig, &ctx), 0);
    for (int i = 0; i < N; i++) {
        int k = (i * 7) % 5;
        assert_true(col_is(&ig.events[i], CF_COL_BROWSER, browsers[k]));
        assert_int_equal(ig.events[i].enrich.is_bot, k == 1);
    }
    cf_ingest_free(&ig);
    cf_buf_free(&body);
    cf_enricher_free(en);
}

/* No User-Agent anywhere, or no rules: the User-Agent columns are NULL and
 * is_bot false; the URL columns do not need the rules. */
static void enrich_without_user_agent_or_rules(void **state)
{
    (void)state;
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "{\"user_id\":\"u\",\"page_url\":\"/p?utm_term=a+b\","
                                                "\"user_agent\":\"" GOOGLEBOT "\"}", 10), 0);
    const cf_ingest_context none = {0};
    assert_int_equal(cf_ingest_enrich(&ig, &none), 0);
    const cf_event *ev = &ig.events[0];
    assert_true(col_is(ev, CF_COL_UTM_TERM, "a b"));
    assert_true(col_is(ev, CF_COL_PAGE_PATH, "/p"));
    assert_true(col_is(ev, CF_COL_BROWSER, NULL));
    assert_true(col_is(ev, CF_COL_OS, NULL));
    assert_true(col_is(ev, CF_COL_REFERRER, NULL));
    assert_true(col_is(ev, CF_COL_COUNTRY, NULL));
    assert_int_equal(ev->enrich.device, CF_DEVICE_NONE);
    assert_false(ev->enrich.is_bot);
    cf_ingest_free(&ig);
    cf_enricher *en = rules();
    if (!en)
        return;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, EV, 10), 0);
    const cf_ingest_context no_header = {.ua = en};
    assert_int_equal(cf_ingest_enrich(&ig, &no_header), 0);
    assert_true(col_is(&ig.events[0], CF_COL_BROWSER, NULL));
    assert_int_equal(ig.events[0].enrich.device, CF_DEVICE_NONE);
    cf_ingest_free(&ig);
    cf_enricher_free(en);
}

/* user_agent and referrer must be strings (or null). */
static void enrich_field_types(void **state)
{
    (void)state;
    cf_ingest ig;
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "[{\"user_id\":\"u\",\"page_url\":\"/p\",\"user_agent\":1},"
                                                "{\"user_id\":\"u\",\"page_url\":\"/p\",\"referrer\":{}}," EV "]", 10), 0);
    assert_int_equal(ig.n_events, 1);
    assert_int_equal(ig.rejected, 2);
    assert_string_equal(ig.errors[0].reason, "user_agent must be a string");
    assert_string_equal(ig.errors[1].reason, "referrer must be a string");
    cf_ingest_free(&ig);
    /* With duplicate keys the first wins, as for every other field. */
    assert_int_equal(parse_s(&ig, CF_BODY_JSON, "{\"user_id\":\"u\",\"page_url\":\"/p\",\"referrer\":\"https://a.example/\","
                                                "\"referrer\":7}", 10), 0);
    assert_int_equal(ig.n_events, 1);
    const cf_ingest_context none = {0};
    assert_int_equal(cf_ingest_enrich(&ig, &none), 0);
    assert_true(col_is(&ig.events[0], CF_COL_REFERRER_HOST, "a.example"));
    cf_ingest_free(&ig);
}

/* Many events: the strings survive the growth of the buffer they live in
 * (ASan checks the reads). */
static void enrich_survives_buffer_growth(void **state)
{
    (void)state;
    enum { N = 2000 };
    cf_buf body = {0};
    cf_buf_put(&body, "[", 1);
    for (int i = 0; i < N; i++) {
        char ev[160];
        int n = snprintf(ev, sizeof ev, "%s{\"user_id\":\"u\",\"page_url\":\"/p%d?utm_campaign=c%d\","
                         "\"referrer\":\"https://r%d.example/\"}", i ? "," : "", i, i, i);
        cf_buf_put(&body, ev, (size_t)n);
    }
    cf_buf_put(&body, "]", 1);
    cf_ingest ig;
    const char *why;
    assert_int_equal(parse(&ig, CF_BODY_JSON, (const char *)body.data, body.len, N, &why), 0);
    const cf_ingest_context ctx = {.country = "NZ"};
    assert_int_equal(cf_ingest_enrich(&ig, &ctx), 0);
    for (int i = 0; i < N; i++) {
        char want[32];
        snprintf(want, sizeof want, "c%d", i);
        assert_true(col_is(&ig.events[i], CF_COL_UTM_CAMPAIGN, want));
        snprintf(want, sizeof want, "r%d.example", i);
        assert_true(col_is(&ig.events[i], CF_COL_REFERRER_HOST, want));
        assert_true(col_is(&ig.events[i], CF_COL_COUNTRY, "NZ"));
    }
    cf_ingest_free(&ig);
    cf_buf_free(&body);
}

/* A relayed event's own country and campaign tags (Segment's context.ip and
 * context.campaign) win over the request's; empty or absent ones leave it,
 * and a country set to unknown is null even when the request has one. */
static void enrich_overrides(void **state)
{
    (void)state;
    static const char body[] = "[{\"user_id\":\"a\",\"page_url\":\"/p?utm_source=url&utm_term=t\"},"
                               "{\"user_id\":\"b\",\"page_url\":\"/q?utm_source=url\"},"
                               "{\"user_id\":\"c\",\"page_url\":\"/r\"}]";
    cf_ingest ig;
    const char *why;
    assert_int_equal(parse(&ig, CF_BODY_JSON, body, sizeof body - 1, 10, &why), 0);
    assert_int_equal(ig.n_events, 3);
    cf_ingest_override ov[3];
    memset(ov, 0, sizeof ov);
    ov[0].country_set = true;
    ov[0].country = "DE";
    ov[0].utm[0] = "news";          /* utm_source */
    ov[0].utm[2] = "spring";        /* utm_campaign */
    ov[1].utm[0] = "";              /* empty: the URL's stays */
    ov[2].country_set = true;       /* a relayed address of no known country */
    const cf_ingest_context ctx = {.country = "NZ", .override = ov};
    assert_int_equal(cf_ingest_enrich(&ig, &ctx), 0);
    assert_true(col_is(&ig.events[0], CF_COL_COUNTRY, "DE"));
    assert_true(col_is(&ig.events[0], CF_COL_UTM_SOURCE, "news"));
    assert_true(col_is(&ig.events[0], CF_COL_UTM_CAMPAIGN, "spring"));
    assert_true(col_is(&ig.events[0], CF_COL_UTM_TERM, "t"));
    assert_true(col_is(&ig.events[1], CF_COL_COUNTRY, "NZ"));
    assert_true(col_is(&ig.events[1], CF_COL_UTM_SOURCE, "url"));
    assert_true(col_is(&ig.events[2], CF_COL_COUNTRY, NULL));
    /* They pack and unpack like any enrichment. */
    cf_buf b = {0};
    assert_true(cf_event_pack(&ig.events[0], &b) > 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_event back;
    assert_int_equal(cf_event_unpack(&r, &back), 0);
    assert_true(col_is(&back, CF_COL_COUNTRY, "DE"));
    assert_true(col_is(&back, CF_COL_UTM_CAMPAIGN, "spring"));
    cf_buf_free(&b);
    cf_ingest_free(&ig);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(content_types),
        cmocka_unit_test(single_object),
        cmocka_unit_test(array_with_invalid_elements),
        cmocka_unit_test(not_json_is_refused_whole),
        cmocka_unit_test(nul_and_control_characters),
        cmocka_unit_test(batch_limit_is_exact),
        cmocka_unit_test(ndjson_lines),
        cmocka_unit_test(errors_are_capped),
        cmocka_unit_test(properties_survive_buffer_growth),
        cmocka_unit_test(random_mutations_are_handled),
        cmocka_unit_test(enrich_fields_and_headers),
        cmocka_unit_test(enrich_without_user_agent_or_rules),
        cmocka_unit_test(enrich_batch_of_user_agents),
        cmocka_unit_test(enrich_field_types),
        cmocka_unit_test(enrich_survives_buffer_growth),
        cmocka_unit_test(enrich_overrides),
    };
    return cmocka_run_group_tests_name("ingest", tests, NULL, NULL);
}
