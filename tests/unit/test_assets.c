/* Unit tests for the embedded dashboard (cf_asset_find, generated from web/
 * by web/embed.py): every served path resolves with its content type, "/"
 * is the index page, and the page references only embedded files (no CDN). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "assets.h"

static const char *find_type(const char *path, const unsigned char **data, size_t *len)
{
    const char *type = NULL;
    if (!cf_asset_find(path, data, len, &type))
        return NULL;
    return type;
}

static bool contains(const unsigned char *data, size_t len, const char *needle)
{
    return memmem(data, len, needle, strlen(needle)) != NULL;
}

static void every_asset_resolves(void **state)
{
    (void)state;
    static const struct { const char *path, *type; } want[] = {
        {"/", "text/html; charset=utf-8"},
        {"/index.html", "text/html; charset=utf-8"},
        {"/app.js", "text/javascript; charset=utf-8"},
        {"/style.css", "text/css; charset=utf-8"},
        {"/vendor/uPlot.iife.min.js", "text/javascript; charset=utf-8"},
        {"/vendor/uPlot.min.css", "text/css; charset=utf-8"},
        {"/cf.js", "text/javascript; charset=utf-8"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const unsigned char *data = NULL;
        size_t len = 0;
        const char *type = find_type(want[i].path, &data, &len);
        assert_non_null(type);
        assert_string_equal(type, want[i].type);
        assert_true(len > 100);
        assert_int_equal(data[len], 0);   /* NUL after the data, not counted */
        assert_int_equal(strlen((const char *)data), len);
    }
}

static void unknown_paths_are_not_found(void **state)
{
    (void)state;
    const unsigned char *data = (const unsigned char *)"untouched";
    size_t len = 7;
    const char *type = "untouched";
    assert_false(cf_asset_find("/nope", &data, &len, &type));
    assert_false(cf_asset_find("", &data, &len, &type));
    assert_false(cf_asset_find("/app.js/", &data, &len, &type));
    assert_false(cf_asset_find("/../server/main.c", &data, &len, &type));
    assert_false(cf_asset_find(NULL, &data, &len, &type));
    assert_int_equal(len, 7);
    assert_string_equal(type, "untouched");
}

static void page_uses_embedded_files_only(void **state)
{
    (void)state;
    const unsigned char *html = NULL;
    size_t len = 0;
    assert_non_null(find_type("/", &html, &len));
    assert_true(contains(html, len, "src=\"vendor/uPlot.iife.min.js\""));
    assert_true(contains(html, len, "href=\"vendor/uPlot.min.css\""));
    assert_true(contains(html, len, "src=\"app.js\""));
    assert_true(contains(html, len, "id=\"conn-status\""));
    assert_false(contains(html, len, "http://"));
    assert_false(contains(html, len, "https://"));
    assert_false(contains(html, len, "//cdn"));

    const unsigned char *js = NULL;
    assert_non_null(find_type("/app.js", &js, &len));
    assert_false(contains(js, len, "innerHTML"));
    assert_false(contains(js, len, "insertAdjacentHTML"));
    assert_true(contains(js, len, "/api/v1/info"));
}

/* The web tracker (SPEC 15): under 4 KB, posts to the events endpoint with
 * sendBeacon or fetch keepalive, and neither sets cookies nor stores. */
static void tracker_is_small_and_stores_nothing(void **state)
{
    (void)state;
    const unsigned char *js = NULL;
    size_t len = 0;
    assert_non_null(find_type("/cf.js", &js, &len));
    assert_true(len < 4096);
    assert_true(contains(js, len, "/api/v1/events"));
    assert_true(contains(js, len, "sendBeacon"));
    assert_true(contains(js, len, "keepalive"));
    assert_true(contains(js, len, "data-site"));
    assert_false(contains(js, len, "document.cookie"));
    assert_false(contains(js, len, "localStorage"));
    assert_false(contains(js, len, "sessionStorage"));
    assert_false(contains(js, len, "indexedDB"));
    assert_false(contains(js, len, "import "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_asset_resolves),
        cmocka_unit_test(unknown_paths_are_not_found),
        cmocka_unit_test(page_uses_embedded_files_only),
        cmocka_unit_test(tracker_is_small_and_stores_nothing),
    };
    return cmocka_run_group_tests_name("assets", tests, NULL, NULL);
}
