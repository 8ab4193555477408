/* Unit tests for host_name: the host part of Host/Origin values, IP literals,
 * the names that always resolve to loopback, and name comparison. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "host_name.h"

static void host_part_drops_the_port(void **state)
{
    (void)state;
    static const struct {
        const char *in, *host;
    } cases[] = {{"a.example:8080", "a.example"}, {"a.example", "a.example"}, {"[::1]:80", "[::1]"},
                 {"[::1]", "[::1]"}, {"127.0.0.1:1", "127.0.0.1"}, {":80", ""}, {"", ""}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t n;
        const char *h = cf_host_part(cases[i].in, strlen(cases[i].in), &n);
        assert_int_equal(n, strlen(cases[i].host));
        assert_memory_equal(h, cases[i].host, n);
    }
}

static bool ip(const char *s)
{
    return cf_host_is_ip_literal(s, strlen(s));
}

static void ip_literals(void **state)
{
    (void)state;
    assert_true(ip("127.0.0.1"));
    assert_true(ip("10.1.2.3"));
    assert_true(ip("[::1]"));
    assert_true(ip("[2001:db8::7]"));
    assert_false(ip("::1"));          /* a Host carries v6 in brackets */
    assert_false(ip("[127.0.0.1]"));
    assert_false(ip("1.2.3.4.example"));
    assert_false(ip("localhost"));
    assert_false(ip(""));
    assert_false(ip("[]"));
    /* Longer than any address: refused without overflowing. */
    char big[200];
    memset(big, '1', sizeof big);
    assert_false(cf_host_is_ip_literal(big, sizeof big));
}

static bool local(const char *s)
{
    return cf_host_is_local_name(s, strlen(s));
}

static void local_names(void **state)
{
    (void)state;
    assert_true(local("localhost"));
    assert_true(local("LocalHost"));
    assert_true(local("localhost."));
    assert_true(local("app.localhost"));
    assert_true(local("a.b.LOCALHOST"));
    assert_false(local("localhost.example"));
    assert_false(local("evillocalhost"));
    assert_false(local("example"));
    assert_false(local(""));
}

static void equal_ignores_case_and_final_dot(void **state)
{
    (void)state;
    assert_true(cf_host_equal("A.Example", 9, "a.example", 9));
    assert_true(cf_host_equal("a.example.", 10, "a.example", 9));
    assert_true(cf_host_equal("a.example", 9, "a.example.", 10));
    assert_false(cf_host_equal("a.example", 9, "b.example", 9));
    assert_false(cf_host_equal("xa.example", 10, "a.example", 9));
    assert_false(cf_host_equal("", 0, "", 0));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(host_part_drops_the_port),
        cmocka_unit_test(ip_literals),
        cmocka_unit_test(local_names),
        cmocka_unit_test(equal_ignores_case_and_final_dot),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
