/* server/sites.c: the site-key table built from config's normalised text,
 * Origin matching (exact, case-insensitive, "*", none for SDKs), and the
 * per-IP budget in whole Retry-After seconds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sites.h"

static void table_and_origins(void **state)
{
    (void)state;
    cf_sites *s = cf_sites_new("shop=https://shop.example,https://www.shop.example\napi=\nany=*\n", 100);
    assert_non_null(s);
    assert_true(cf_sites_any(s));
    int shop = cf_sites_find(s, "shop", 4);
    int api = cf_sites_find(s, "api", 3);
    int any = cf_sites_find(s, "any", 3);
    assert_true(shop >= 0 && api >= 0 && any >= 0);
    assert_int_equal(cf_sites_find(s, "sho", 3), -1);
    assert_int_equal(cf_sites_find(s, "shopx", 5), -1);
    assert_string_equal(cf_sites_key(s, shop), "shop");

    assert_true(cf_sites_origin_ok(s, shop, NULL));                    /* server-side SDK */
    assert_true(cf_sites_origin_ok(s, shop, "https://shop.example"));
    assert_true(cf_sites_origin_ok(s, shop, "HTTPS://WWW.Shop.Example"));
    assert_false(cf_sites_origin_ok(s, shop, "http://shop.example"));  /* another scheme */
    assert_false(cf_sites_origin_ok(s, shop, "https://shop.example:8443"));
    assert_false(cf_sites_origin_ok(s, shop, "https://shop.example.evil.example"));
    assert_false(cf_sites_origin_ok(s, shop, "null"));
    assert_true(cf_sites_origin_ok(s, api, NULL));
    assert_false(cf_sites_origin_ok(s, api, "https://shop.example"));  /* no origins: SDKs only */
    assert_true(cf_sites_origin_ok(s, any, "https://whatever.example"));

    assert_true(cf_sites_origin_known(s, "https://www.shop.example"));
    assert_true(cf_sites_origin_known(s, "https://whatever.example"));  /* via "*" */
    assert_false(cf_sites_origin_known(s, NULL));
    cf_sites_free(s);

    s = cf_sites_new("", 100);
    assert_false(cf_sites_any(s));
    assert_int_equal(cf_sites_find(s, "shop", 4), -1);
    assert_false(cf_sites_origin_known(s, "https://shop.example"));
    cf_sites_free(s);
    cf_sites_free(NULL);
}

static void rate_in_retry_after_seconds(void **state)
{
    (void)state;
    cf_sites *s = cf_sites_new("k=*\n", 1);
    /* One event per second: the first passes, the next waits about a
     * second (rounded up to whole seconds for Retry-After). */
    assert_int_equal(cf_sites_rate(s, "192.0.2.1", 1), 0);
    assert_int_equal(cf_sites_rate(s, "192.0.2.1", 1), 1);
    assert_int_equal(cf_sites_rate(s, "192.0.2.2", 1), 0);
    /* 30 events from a full bucket pass, then the debt: about 30 s. */
    assert_int_equal(cf_sites_rate(s, "192.0.2.3", 30), 0);
    unsigned wait = cf_sites_rate(s, "192.0.2.3", 1);
    assert_true(wait >= 29 && wait <= 31);
    cf_sites_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(table_and_origins),
        cmocka_unit_test(rate_in_retry_after_seconds),
    };
    return cmocka_run_group_tests_name("sites", tests, NULL, NULL);
}
