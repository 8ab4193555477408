/* Unit tests for cf_enrich: referrer choice and host, utm_* tags and
 * page_path from page_url (SPEC 15), including odd URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_enrich.h"

static cf_buf scratch;

static cf_enrich run(const char *url, const char *field, const char *header)
{
    cf_enrich e;
    memset(&e, 0xa5, sizeof e);
    cf_buf_reset(&scratch);
    assert_int_equal(cf_enrich_compute(url, strlen(url), field, field ? strlen(field) : 0, header,
                                       header ? strlen(header) : 0, &scratch, &e),
                     0);
    return e;
}

static void is(cf_enrich_str s, const char *want)
{
    if (!want) {
        assert_null(s.s);
        assert_int_equal(s.len, 0);
        return;
    }
    assert_non_null(s.s);
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.s, want, s.len);
    assert_int_equal(s.s[s.len], '\0');
}

static void page_path_of_urls(void **state)
{
    (void)state;
    static const struct { const char *url, *path; } cases[] = {
        {"https://a.example/x?y=1", "/x"},
        {"/x?y=1", "/x"},
        {"/x", "/x"},
        {"https://a.example", "/"},
        {"https://a.example?q=1", "/"},
        {"https://a.example#top", "/"},
        {"https://user:pw@a.example:8443/p/q/?x#f", "/p/q/"},
        {"//cdn.example/lib.js?v=2", "/lib.js"},
        {"http://[::1]:8080/ipv6", "/ipv6"},
        {"/products/7#reviews", "/products/7"},
        {"/#/spa/route?x=1", "/"},
        {"/a%20b/c?d", "/a%20b/c"},           /* kept as sent, not decoded */
        {"HTTPS://A.EXAMPLE/Case", "/Case"},
        {"app://x/screen", "/screen"},
        {"about:blank", "about:blank"},       /* no "//": not an authority */
        {"products/7?x", "products/7"},
        {"?utm_source=x", NULL},
        {"", NULL},
        {"https://", "/"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf_enrich e = run(cases[i].url, NULL, NULL);
        is(e.page_path, cases[i].path);
    }
}

static void utm_tags_are_decoded(void **state)
{
    (void)state;
    cf_enrich e = run("https://shop.example/p?utm_source=news%20letter&utm_medium=email&"
                      "utm_campaign=black+friday&utm_term=caf%C3%A9&utm_content=a%2Bb#utm_source=frag",
                      NULL, NULL);
    is(e.utm[CF_UTM_SOURCE], "news letter");
    is(e.utm[CF_UTM_MEDIUM], "email");
    is(e.utm[CF_UTM_CAMPAIGN], "black friday");
    is(e.utm[CF_UTM_TERM], "caf\xc3\xa9");
    is(e.utm[CF_UTM_CONTENT], "a+b");
    assert_string_equal(cf_enrich_utm_name(CF_UTM_SOURCE), "utm_source");
    assert_string_equal(cf_enrich_utm_name(CF_UTM_CONTENT), "utm_content");
    assert_null(cf_enrich_utm_name(CF_UTM_COUNT));

    /* First non-empty wins; an encoded name counts; other names and
     * parameters without '=' are ignored; no query, no tags. */
    e = run("/x?utm_source=&utm%5Fsource=first&utm_source=second&utm_medium&UTM_CAMPAIGN=c&x=1", NULL, NULL);
    is(e.utm[CF_UTM_SOURCE], "first");
    is(e.utm[CF_UTM_MEDIUM], NULL);
    is(e.utm[CF_UTM_CAMPAIGN], NULL);
    e = run("/x#a?utm_source=frag", NULL, NULL);
    is(e.utm[CF_UTM_SOURCE], NULL);

    /* A '%' without two hex digits stays; a NUL or invalid UTF-8 once
     * decoded drops the value (never truncated). */
    e = run("/x?utm_source=100%&utm_medium=%zz&utm_term=%4&utm_campaign=a%00b&utm_content=%ff", NULL, NULL);
    is(e.utm[CF_UTM_SOURCE], "100%");
    is(e.utm[CF_UTM_MEDIUM], "%zz");
    is(e.utm[CF_UTM_TERM], "%4");
    is(e.utm[CF_UTM_CAMPAIGN], NULL);
    is(e.utm[CF_UTM_CONTENT], NULL);
    e = run("/x?utm_source=a%00b&utm_source=ok", NULL, NULL);
    is(e.utm[CF_UTM_SOURCE], "ok");
}

static void referrer_and_host(void **state)
{
    (void)state;
    /* The field wins over the header. */
    cf_enrich e = run("/", "https://www.Google.com/search?q=x", "https://other.example/");
    is(e.referrer, "https://www.Google.com/search?q=x");
    is(e.referrer_host, "www.google.com");
    /* Empty field: the header (browsers send only the origin in it). */
    e = run("/", "", "https://news.example/");
    is(e.referrer, "https://news.example/");
    is(e.referrer_host, "news.example");
    e = run("/", NULL, NULL);
    is(e.referrer, NULL);
    is(e.referrer_host, NULL);

    static const struct { const char *ref, *host; } cases[] = {
        {"https://user:pw@Example.COM:8443/x", "example.com"},
        {"http://[2001:DB8::1]:8080/", "[2001:db8::1]"},
        {"android-app://com.google.android.gm/", "com.google.android.gm"},
        {"https://a.example?x=1", "a.example"},
        {"https://a.example#f", "a.example"},
        {"//proto.relative/x", "proto.relative"},
        {"/relative/path", NULL},
        {"not a url", NULL},
        {"https:///no-host", NULL},
        {"https://:80/", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        e = run("/", cases[i].ref, NULL);
        is(e.referrer, cases[i].ref);
        is(e.referrer_host, cases[i].host);
    }

    /* A header that is not UTF-8 or too long is not used. */
    e = run("/", NULL, "https://bad.example/\xff");
    is(e.referrer, NULL);
    char *long_ref = malloc(CF_ENRICH_MAX + 2);
    memset(long_ref, 'a', CF_ENRICH_MAX + 1);
    long_ref[CF_ENRICH_MAX + 1] = '\0';
    e = run("/", long_ref, "https://fallback.example/");
    is(e.referrer_host, "fallback.example");
    free(long_ref);
    /* A NUL inside the header (length-delimited input) is not used. */
    cf_enrich e2;
    cf_buf_reset(&scratch);
    assert_int_equal(cf_enrich_compute("/", 1, NULL, 0, "https://x\0y/", 12, &scratch, &e2), 0);
    is(e2.referrer, NULL);
}

static void results_survive_in_scratch(void **state)
{
    (void)state;
    /* The results point into scratch: computing into a buffer that already
     * holds data keeps that data and the new strings intact. */
    cf_buf b = {0};
    cf_buf_put(&b, "prefix", 6);
    cf_enrich e;
    assert_int_equal(cf_enrich_compute("https://a.example/x?utm_source=s", 32, "https://r.example/", 18, NULL, 0,
                                       &b, &e),
                     0);
    assert_memory_equal(b.data, "prefix", 6);
    is(e.page_path, "/x");
    is(e.utm[CF_UTM_SOURCE], "s");
    is(e.referrer_host, "r.example");
    assert_true((const uint8_t *)e.page_path.s >= b.data && (const uint8_t *)e.page_path.s < b.data + b.len);
    cf_buf_free(&b);
}

static int teardown(void **state)
{
    (void)state;
    cf_buf_free(&scratch);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(page_path_of_urls),
        cmocka_unit_test(utm_tags_are_decoded),
        cmocka_unit_test(referrer_and_host),
        cmocka_unit_test(results_survive_in_scratch),
    };
    return cmocka_run_group_tests_name("enrich", tests, NULL, teardown);
}
