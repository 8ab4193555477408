/* Unit tests for body_budget: the total and per-address bounds on request
 * body bytes in flight, and how addresses map to slots. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "body_budget.h"

static unsigned slot4(const char *ip)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, ip, &a.sin_addr), 1);
    return cf_body_budget_slot((const struct sockaddr *)&a);
}

static unsigned slot6(const char *ip)
{
    struct sockaddr_in6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, ip, &a.sin6_addr), 1);
    return cf_body_budget_slot((const struct sockaddr *)&a);
}

/* One address cannot take more than its share, and the others still get
 * theirs: the attack of issue 10 (one address holding the whole budget). */
static void per_address_share(void **state)
{
    (void)state;
    cf_body_budget *b = cf_body_budget_new(1000, 300);
    assert_non_null(b);
    unsigned a = slot4("127.0.0.2"), c = slot4("127.0.0.1");
    assert_int_not_equal(a, c);
    assert_true(cf_body_budget_take(b, a, 200));
    assert_true(cf_body_budget_take(b, a, 100));
    assert_false(cf_body_budget_take(b, a, 1));      /* its share is full */
    assert_int_equal(cf_body_budget_slot_in_flight(b, a), 300);
    assert_true(cf_body_budget_take(b, c, 300));     /* another address is served */
    assert_int_equal(cf_body_budget_in_flight(b), 600);
    cf_body_budget_give(b, a, 300);
    assert_true(cf_body_budget_take(b, a, 250));     /* given back, taken again */
    cf_body_budget_give(b, a, 250);
    cf_body_budget_give(b, c, 300);
    assert_int_equal(cf_body_budget_in_flight(b), 0);
    cf_body_budget_free(b);
    cf_body_budget_free(NULL);
}

static void total_bound(void **state)
{
    (void)state;
    cf_body_budget *b = cf_body_budget_new(500, 300);
    unsigned s[3] = {slot4("10.0.0.1"), slot4("10.0.0.2"), slot4("10.0.0.3")};
    assert_true(cf_body_budget_take(b, s[0], 250));
    assert_true(cf_body_budget_take(b, s[1], 250));
    assert_false(cf_body_budget_take(b, s[2], 1));   /* the total is full */
    /* A refusal takes nothing, from the total or the slot. */
    assert_int_equal(cf_body_budget_in_flight(b), 500);
    assert_int_equal(cf_body_budget_slot_in_flight(b, s[2]), 0);
    assert_false(cf_body_budget_take(b, s[2], SIZE_MAX));   /* no wrap-around */
    assert_int_equal(cf_body_budget_in_flight(b), 500);
    cf_body_budget_free(b);
}

static void address_slots(void **state)
{
    (void)state;
    /* Deterministic. */
    assert_int_equal(slot4("192.0.2.7"), slot4("192.0.2.7"));
    /* An IPv4 client of a dual-stack socket counts as its IPv4 address,
     * not as one shared "::ffff:0:0/96" slot. */
    assert_int_equal(slot6("::ffff:192.0.2.7"), slot4("192.0.2.7"));
    assert_int_not_equal(slot6("::ffff:192.0.2.7"), slot6("::ffff:192.0.2.8"));
    /* IPv6: one /64 is one client. */
    assert_int_equal(slot6("2001:db8:1:2::1"), slot6("2001:db8:1:2:ffff::9"));
    assert_int_not_equal(slot6("2001:db8:1:2::1"), slot6("2001:db8:1:3::1"));
    /* Neighbouring addresses spread over the slots. */
    char ip[32];
    unsigned seen[CF_BODY_BUDGET_SLOTS / 32 + 1];
    memset(seen, 0, sizeof seen);
    size_t distinct = 0;
    for (int i = 0; i < 256; i++) {
        snprintf(ip, sizeof ip, "127.0.0.%d", i);
        unsigned s = slot4(ip);
        assert_true(s < CF_BODY_BUDGET_SLOTS);
        if (!(seen[s / 32] & (1u << (s % 32)))) {
            seen[s / 32] |= 1u << (s % 32);
            distinct++;
        }
    }
    assert_true(distinct >= 240);
    assert_true(cf_body_budget_slot(NULL) < CF_BODY_BUDGET_SLOTS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(per_address_share),
        cmocka_unit_test(total_bound),
        cmocka_unit_test(address_slots),
    };
    return cmocka_run_group_tests_name("body_budget", tests, NULL, NULL);
}
