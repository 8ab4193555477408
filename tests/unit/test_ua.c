/* Unit tests for cf_ua: uap-core's replacement rules on small hand-written
 * rule files, the bounded CLOCK cache, bad rule files, and the derived device
 * class and bot flag on real User-Agents with Debian's regexes.yaml (those
 * skip when the uap-core package is missing; CF_UAP_CORE_DIR names it). */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_event.h"
#include "cf_ua.h"
#include "unit_util.h"

/* A small rules file exercising each replacement kind. */
static const char SMALL[] =
    "user_agent_parsers:\n"
    "  - regex: '(Namoroka|Shiretoko|Minefield)/(\\d+)\\.(\\d+)\\.(\\d+(?:pre)?)'\n"
    "    family_replacement: 'Firefox ($1)'\n"
    "  - regex: 'Fixed/(\\d+)'\n"
    "    family_replacement: 'Fixed Browser'\n"
    "    v1_replacement: '9'\n"
    "  - regex: '(Blank)( )?x'\n"
    "    family_replacement: '  $2  '\n"
    "  - regex: '(Plain)/(\\d+)(?:\\.(\\d+)|)'\n"
    "os_parsers:\n"
    "  - regex: 'Win(95|98|NT)'\n"
    "    os_replacement: 'Windows $1'\n"
    "  - regex: '(Linux)'\n"
    "device_parsers:\n"
    "  - regex: '; *(PEDI)_(PLUS)_(W) Build'\n"
    "    device_replacement: 'Odys $1 $2 $3'\n"
    "    brand_replacement: 'Odys'\n"
    "    model_replacement: '$1 $2 $3'\n"
    "  - regex: 'ipad'\n"
    "    regex_flag: 'i'\n"
    "    device_replacement: 'iPad'\n"
    "    brand_replacement: 'Apple'\n"
    "  - regex: '(Model)-(\\w+)'\n";

static cf_ua_rules *small_rules(void)
{
    cf_ua_rules *r = NULL;
    const char *err = NULL;
    assert_int_equal(cf_ua_rules_new(SMALL, sizeof SMALL - 1, &r, &err), 0);
    assert_non_null(r);
    return r;
}

static void parse(cf_ua *ua, const char *s, cf_ua_result *r)
{
    assert_int_equal(cf_ua_parse(ua, s, strlen(s), r), 0);
}

static void assert_str_or_null(const char *got, const char *want)
{
    if (!want)
        assert_null(got);
    else
        assert_non_null(got), assert_string_equal(got, want);
}

static void replacements_follow_the_spec(void **state)
{
    (void)state;
    cf_ua_rules *rules = small_rules();
    size_t nu, no, nd;
    cf_ua_rules_counts(rules, &nu, &no, &nd);
    assert_int_equal(nu, 4);
    assert_int_equal(no, 2);
    assert_int_equal(nd, 3);
    cf_ua *ua = cf_ua_new(rules, 16);
    assert_non_null(ua);
    cf_ua_result r;

    /* specification.md's examples: $1 in family_replacement, groups 2..4
     * as versions, $1..$3 in device and model replacements. */
    parse(ua, "Mozilla/5.0 (Windows; Windows NT 5.1; rv:2.0b3pre) Gecko/20100727 Minefield/4.0.1pre", &r);
    assert_string_equal(r.browser, "Firefox (Minefield)");
    assert_str_or_null(r.browser_major, "4");
    assert_str_or_null(r.browser_minor, "0");
    assert_str_or_null(r.browser_patch, "1pre");
    assert_string_equal(r.os, "Other");    /* "Windows NT" is not "WinNT" */
    parse(ua, "Mozilla/5.0 (Windows; U; Win95; en-US; rv:1.1) Gecko/20020826", &r);
    assert_string_equal(r.os, "Windows 95");
    parse(ua, "Mozilla/5.0 (Linux; U; Android 4.2.2; de-de; PEDI_PLUS_W Build/JDQ39)", &r);
    assert_string_equal(r.device_family, "Odys PEDI PLUS W");
    assert_str_or_null(r.device_brand, "Odys");
    assert_str_or_null(r.device_model, "PEDI PLUS W");
    assert_string_equal(r.os, "Linux");   /* no replacement: group 1 */
    assert_null(r.os_major);

    /* A replacement without $ replaces the group; v1_replacement likewise. */
    parse(ua, "Fixed/3", &r);
    assert_string_equal(r.browser, "Fixed Browser");
    assert_str_or_null(r.browser_major, "9");
    assert_null(r.browser_minor);

    /* An unmatched group is empty; the result is trimmed; empty is
     * unknown, and an unknown family is "Other". */
    parse(ua, "Blankx", &r);
    assert_string_equal(r.browser, "Other");
    assert_null(r.browser_major);

    /* No replacements: groups in order; an optional group that did not
     * take part is unknown, not "". */
    parse(ua, "Plain/7", &r);
    assert_string_equal(r.browser, "Plain");
    assert_str_or_null(r.browser_major, "7");
    assert_null(r.browser_minor);

    /* regex_flag 'i' matches caselessly; other regexes are case sensitive;
     * without model_replacement the model is group 1 (none here). */
    parse(ua, "Something IPAD something", &r);
    assert_string_equal(r.device_family, "iPad");
    assert_str_or_null(r.device_brand, "Apple");
    assert_null(r.device_model);
    assert_int_equal(r.device, CF_UA_TABLET);
    parse(ua, "plain/7 linux", &r);
    assert_string_equal(r.browser, "Other");
    assert_string_equal(r.os, "Other");

    /* Device without replacements: family and model are group 1. */
    parse(ua, "Model-X1", &r);
    assert_string_equal(r.device_family, "Model");
    assert_null(r.device_brand);
    assert_str_or_null(r.device_model, "Model");

    /* Nothing matches: "Other" everywhere, desktop, not a bot. */
    parse(ua, "", &r);
    assert_string_equal(r.browser, "Other");
    assert_string_equal(r.os, "Other");
    assert_string_equal(r.device_family, "Other");
    assert_int_equal(r.device, CF_UA_DESKTOP);
    assert_false(r.is_bot);
    assert_int_equal(cf_ua_parse(ua, NULL, 0, &r), 0);
    assert_string_equal(r.browser, "Other");

    cf_ua_free(ua);
    cf_ua_rules_free(rules);
}

static void cache_is_bounded_and_hits(void **state)
{
    (void)state;
    cf_ua_rules *rules = small_rules();
    cf_ua *ua = cf_ua_new(rules, 4);
    cf_ua_result r;
    uint64_t hits, misses;
    size_t size;
    char buf[64];
    for (int i = 0; i < 100; i++) {
        snprintf(buf, sizeof buf, "Plain/%d", i);
        parse(ua, buf, &r);
        assert_string_equal(r.browser, "Plain");
        char want[16];
        snprintf(want, sizeof want, "%d", i);
        assert_string_equal(r.browser_major, want);
        cf_ua_cache_stats(ua, &hits, &misses, &size);
        assert_true(size <= 4);
    }
    cf_ua_cache_stats(ua, &hits, &misses, &size);
    assert_int_equal(hits, 0);
    assert_int_equal(misses, 100);
    assert_int_equal(size, 4);

    /* The same string again is one lookup: a hit with the same answer. */
    parse(ua, "Plain/99", &r);
    assert_string_equal(r.browser_major, "99");
    cf_ua_cache_stats(ua, &hits, &misses, &size);
    assert_int_equal(hits, 1);
    assert_int_equal(misses, 100);

    /* CLOCK keeps what is used: with A referenced since the hand last
     * passed, the new entries evict the others first. */
    cf_ua *c = cf_ua_new(rules, 2);
    parse(c, "Plain/1", &r);        /* A */
    parse(c, "Plain/2", &r);        /* B */
    parse(c, "Plain/1", &r);        /* A hit: referenced */
    parse(c, "Plain/3", &r);        /* evicts B, clears A's bit */
    parse(c, "Plain/1", &r);        /* still a hit */
    assert_string_equal(r.browser_major, "1");
    cf_ua_cache_stats(c, &hits, &misses, &size);
    assert_int_equal(hits, 2);
    assert_int_equal(misses, 3);
    parse(c, "Plain/2", &r);        /* B was evicted: a miss */
    cf_ua_cache_stats(c, &hits, &misses, &size);
    assert_int_equal(misses, 4);
    assert_int_equal(size, 2);
    cf_ua_free(c);

    /* Capacity 0: no cache, every parse runs the regexes, still correct. */
    cf_ua *n = cf_ua_new(rules, 0);
    parse(n, "Plain/5", &r);
    parse(n, "Plain/5", &r);
    assert_string_equal(r.browser_major, "5");
    cf_ua_cache_stats(n, &hits, &misses, &size);
    assert_int_equal(hits, 0);
    assert_int_equal(misses, 2);
    assert_int_equal(size, 0);
    cf_ua_free(n);

    /* Only the first CF_UA_MAX_LEN bytes count (and are kept). */
    size_t big = CF_UA_MAX_LEN + 100;
    char *s = malloc(big);
    memset(s, 'z', big);
    memcpy(s, "Plain/8", 7);
    assert_int_equal(cf_ua_parse(ua, s, big, &r), 0);
    assert_string_equal(r.browser_major, "8");
    assert_int_equal(cf_ua_parse(ua, s, CF_UA_MAX_LEN, &r), 0);
    cf_ua_cache_stats(ua, &hits, &misses, &size);
    assert_int_equal(hits, 2);
    free(s);

    cf_ua_free(ua);
    cf_ua_free(NULL);
    cf_ua_rules_free(rules);
    cf_ua_rules_free(NULL);
}

static void bad_rule_files_are_refused(void **state)
{
    (void)state;
    static const char *bad[] = {
        "user_agent_parsers: [\n",                                  /* not YAML */
        "- a\n- b\n",                                                /* not a mapping */
        "user_agent_parsers: []\nos_parsers: []\n",                  /* no device_parsers */
        "user_agent_parsers:\n  - regex: '(unclosed'\nos_parsers: []\ndevice_parsers: []\n",
        "user_agent_parsers:\n  - family_replacement: x\nos_parsers: []\ndevice_parsers: []\n",
        "user_agent_parsers: 7\nos_parsers: []\ndevice_parsers: []\n",
        "",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cf_ua_rules *r = (cf_ua_rules *)&bad;   /* must stay untouched */
        const char *err = NULL;
        assert_int_equal(cf_ua_rules_new(bad[i], strlen(bad[i]), &r, &err), -EINVAL);
        assert_ptr_equal(r, (cf_ua_rules *)&bad);
        assert_non_null(err);
        assert_true(strlen(err) > 0);
    }
    /* Empty lists are a valid (if useless) file. */
    static const char empty[] = "user_agent_parsers: []\nos_parsers: []\ndevice_parsers: []\n";
    cf_ua_rules *r = NULL;
    assert_int_equal(cf_ua_rules_new(empty, sizeof empty - 1, &r, NULL), 0);
    cf_ua *ua = cf_ua_new(r, 4);
    cf_ua_result res;
    parse(ua, "Mozilla/5.0", &res);
    assert_string_equal(res.browser, "Other");
    cf_ua_free(ua);
    cf_ua_rules_free(r);
}

/* Regexes whose literal parts are optional, repeated, alternated or inside
 * lookarounds: the skip-by-required-literal shortcut must never skip a regex
 * that matches. Each UA below matches exactly its own rule. */
static void required_literal_shortcut_never_skips_a_match(void **state)
{
    (void)state;
    static const char yaml[] =
        "user_agent_parsers: []\n"
        "device_parsers: []\n"
        "os_parsers:\n"
        "  - regex: 'ab?cdef'\n    os_replacement: 'optional char'\n"
        "  - regex: 'Longest1x?'\n    os_replacement: 'optional tail'\n"
        "  - regex: '(?:LongOptional)?T1x'\n    os_replacement: 'optional long group'\n"
        "  - regex: '(?:xyz)?Tail1'\n    os_replacement: 'optional group'\n"
        "  - regex: '(Opt1|Opt2)Fixed'\n    os_replacement: 'alternation group'\n"
        "  - regex: 'Gr(?:oup)*End'\n    os_replacement: 'starred group'\n"
        "  - regex: 'Rep(?:eat){2}Done'\n    os_replacement: 'counted group'\n"
        "  - regex: 'Esc\\.Dot\\/Slash'\n    os_replacement: 'escapes'\n"
        "  - regex: 'Cls[abc]{0,3}Zed'\n    os_replacement: 'class'\n"
        "  - regex: 'Alt1Word|Alt2Word'\n    os_replacement: 'top alternation'\n"
        "  - regex: 'Look(?=ahead)ahead'\n    os_replacement: 'lookahead'\n"
        "  - regex: 'Lazy.{0,5}?Suffix'\n    os_replacement: 'lazy'\n"
        "  - regex: 'Zero{0}Count'\n    os_replacement: 'zero count'\n"
        "  - regex: 'Mult(i)+ple'\n    os_replacement: 'plus group'\n"
        "  - regex: 'CaseLess'\n    regex_flag: 'i'\n    os_replacement: 'caseless'\n";
    static const struct { const char *ua, *os; } cases[] = {
        {"xx acdef yy", "optional char"},
        {"Longest1", "optional tail"},
        {"T1x", "optional long group"},
        {"Tail1", "optional group"},
        {"Opt2Fixed", "alternation group"},
        {"GrEnd", "starred group"},
        {"RepeateatDone", "counted group"},
        {"Esc.Dot/Slash", "escapes"},
        {"ClsZed", "class"},
        {"Alt2Word", "top alternation"},
        {"Lookahead", "lookahead"},
        {"LazySuffix", "lazy"},
        {"ZerCount", "zero count"},
        {"Multiiple", "plus group"},
        {"CASELESS", "caseless"},
        {"abdef", "Other"},
    };
    cf_ua_rules *rules = NULL;
    assert_int_equal(cf_ua_rules_new(yaml, sizeof yaml - 1, &rules, NULL), 0);
    cf_ua *ua = cf_ua_new(rules, 0);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf_ua_result r;
        parse(ua, cases[i].ua, &r);
        assert_string_equal(r.os, cases[i].os);
    }
    cf_ua_free(ua);
    cf_ua_rules_free(rules);
}

/* ---- with Debian's regexes.yaml ----------------------------------------- */

static cf_ua_rules *real_rules;

static int load_real(void **state)
{
    (void)state;
    const char *dir = getenv("CF_UAP_CORE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/regexes.yaml", dir ? dir : "/usr/share/uap-core");
    size_t len = 0;
    char *text = uu_read_file(path, &len);
    if (!text)
        return 0;   /* the tests below skip */
    const char *err = NULL;
    int rc = cf_ua_rules_new(text, len, &real_rules, &err);
    free(text);
    if (rc < 0) {
        fprintf(stderr, "regexes.yaml: %s\n", err);
        return -1;
    }
    return 0;
}

static int free_real(void **state)
{
    (void)state;
    cf_ua_rules_free(real_rules);
    return 0;
}

static void real_user_agents_classify(void **state)
{
    (void)state;
    if (!real_rules)
        skip();
    static const struct {
        const char *ua, *browser, *os;
        cf_ua_device device;
        bool bot;
    } cases[] = {
        {"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36", "Chrome", "Windows", CF_UA_DESKTOP, false},
        {"Mozilla/5.0 (Macintosh; Intel Mac OS X 10.15; rv:121.0) Gecko/20100101 Firefox/121.0",
         "Firefox", "Mac OS X", CF_UA_DESKTOP, false},
        {"Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/17.1 Mobile/15E148 Safari/604.1", "Mobile Safari", "iOS", CF_UA_MOBILE, false},
        /* iPad Safari says "Mobile/..." too: the tablet rule comes first. */
        {"Mozilla/5.0 (iPad; CPU OS 12_2 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
         "Version/12.1 Mobile/15E148 Safari/604.1", "Mobile Safari", "iOS", CF_UA_TABLET, false},
        {"Mozilla/5.0 (Linux; Android 13; Pixel 7) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.6099.144 Mobile Safari/537.36", "Chrome Mobile", "Android", CF_UA_MOBILE, false},
        /* An Android tablet's browser drops "Mobile". */
        {"Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) "
         "Chrome/120.0.0.0 Safari/537.36", "Chrome", "Android", CF_UA_TABLET, false},
        {"Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "Googlebot", NULL,
         CF_UA_BOT, true},
        {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.6099.28 "
         "Safari/537.36", "HeadlessChrome", "Linux", CF_UA_BOT, true},
        {"curl/8.4.0", "curl", "Other", CF_UA_DESKTOP, false},
    };
    cf_ua *ua = cf_ua_new(real_rules, 64);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cf_ua_result r;
        parse(ua, cases[i].ua, &r);
        fprintf(stderr, "# %s -> %s / %s / %s / %s%s\n", cases[i].ua, r.browser, r.os, r.device_family,
                cf_ua_device_name(r.device), r.is_bot ? " (bot)" : "");
        assert_string_equal(r.browser, cases[i].browser);
        if (cases[i].os)
            assert_string_equal(r.os, cases[i].os);
        assert_int_equal(r.device, cases[i].device);
        assert_int_equal(r.is_bot, cases[i].bot);
    }
    assert_string_equal(cf_ua_device_name(CF_UA_DESKTOP), "desktop");
    assert_string_equal(cf_ua_device_name(CF_UA_MOBILE), "mobile");
    assert_string_equal(cf_ua_device_name(CF_UA_TABLET), "tablet");
    assert_string_equal(cf_ua_device_name(CF_UA_BOT), "bot");
    cf_ua_free(ua);
}

static void invalid_utf8_gives_valid_results(void **state)
{
    (void)state;
    if (!real_rules)
        skip();
    cf_ua *ua = cf_ua_new(real_rules, 8);
    static const char s[] = "Mozilla/5.0 (Linux; Android 9; \xff\xfe SM-G960F Build/x) Chrome/70.0.1 \xc0\xaf Mobile";
    cf_ua_result r;
    assert_int_equal(cf_ua_parse(ua, s, sizeof s - 1, &r), 0);
    const char *fields[] = {r.browser, r.browser_major, r.os, r.os_major, r.device_family,
                            r.device_brand, r.device_model};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        if (fields[i])
            assert_true(cf_utf8_valid(fields[i], strlen(fields[i])));
    }
    assert_string_equal(r.os, "Android");
    cf_ua_free(ua);
}

/* The documented thread model: one compiled rules object shared read-only,
 * one cf_ua per thread. Each thread parses the same User-Agents (with a tiny
 * cache, so most parses run the regexes) and must get what a single thread
 * gets. Run under the sanitizer build, this also checks for races. */
static const char *const THREAD_UAS[] = {
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.1 "
    "Mobile/15E148 Safari/604.1",
    "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "curl/8.4.0",
};
#define N_THREAD_UAS (sizeof THREAD_UAS / sizeof THREAD_UAS[0])

typedef struct thread_job {
    char browser[N_THREAD_UAS][64];
    int device[N_THREAD_UAS];
    int rc;
} thread_job;

static void *parse_thread(void *arg)
{
    thread_job *job = arg;
    cf_ua *ua = cf_ua_new(real_rules, 2);
    if (!ua) {
        job->rc = -1;
        return NULL;
    }
    for (int round = 0; round < 50; round++) {
        for (size_t i = 0; i < N_THREAD_UAS; i++) {
            cf_ua_result r;
            if (cf_ua_parse(ua, THREAD_UAS[i], strlen(THREAD_UAS[i]), &r) < 0) {
                job->rc = -1;
                break;
            }
            snprintf(job->browser[i], sizeof job->browser[i], "%s", r.browser);
            job->device[i] = (int)r.device;
        }
    }
    cf_ua_free(ua);
    return NULL;
}

static void rules_are_shared_across_threads(void **state)
{
    (void)state;
    if (!real_rules)
        skip();
    thread_job want = {0}, got[4];
    memset(got, 0, sizeof got);
    parse_thread(&want);
    assert_int_equal(want.rc, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, parse_thread, &got[i]), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(pthread_join(t[i], NULL), 0);
        assert_int_equal(got[i].rc, 0);
        for (size_t k = 0; k < N_THREAD_UAS; k++) {
            assert_string_equal(got[i].browser[k], want.browser[k]);
            assert_int_equal(got[i].device[k], want.device[k]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(replacements_follow_the_spec),
        cmocka_unit_test(cache_is_bounded_and_hits),
        cmocka_unit_test(bad_rule_files_are_refused),
        cmocka_unit_test(required_literal_shortcut_never_skips_a_match),
        cmocka_unit_test(real_user_agents_classify),
        cmocka_unit_test(invalid_utf8_gives_valid_results),
        cmocka_unit_test(rules_are_shared_across_threads),
    };
    return cmocka_run_group_tests_name("ua", tests, load_real, free_real);
}
