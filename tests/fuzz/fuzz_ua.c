/* Fuzz harness for cf_ua: arbitrary bytes as a User-Agent against Debian's
 * regexes.yaml (loaded once; CF_UAP_CORE_DIR names the folder; without the
 * file the harness does nothing). Checks that the families are set, every
 * string is valid UTF-8, the class is one of the four, and a second parse
 * (a cache hit) gives the same answer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_event.h"
#include "cf_ua.h"
#include "fuzz.h"

static cf_ua_rules *rules;
static cf_ua *ua;
static int loaded;

static void load(void)
{
    loaded = 1;
    const char *dir = getenv("CF_UAP_CORE_DIR");
    char path[4096];
    snprintf(path, sizeof path, "%s/regexes.yaml", dir && *dir ? dir : "/usr/share/uap-core");
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    size_t cap = 1 << 20, len = 0;
    char *text = malloc(cap);
    size_t n;
    while (text && (n = fread(text + len, 1, cap - len, f)) > 0) {
        len += n;
        if (len == cap)
            text = realloc(text, cap *= 2);
    }
    fclose(f);
    if (text && cf_ua_rules_new(text, len, &rules, NULL) == 0)
        ua = cf_ua_new(rules, 64);
    free(text);
}

static void check(const char *s, bool required)
{
    FUZZ_CHECK(!required || s != NULL);
    if (s)
        FUZZ_CHECK(cf_utf8_valid(s, strlen(s)));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!loaded)
        load();
    if (!ua)
        return 0;
    cf_ua_result r;
    if (cf_ua_parse(ua, (const char *)data, size, &r) < 0)
        return 0;
    const char *s[] = {r.browser_major, r.browser_minor, r.browser_patch, r.os_major, r.os_minor,
                       r.device_brand, r.device_model};
    check(r.browser, true);
    check(r.os, true);
    check(r.device_family, true);
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        check(s[i], false);
    FUZZ_CHECK(r.device >= CF_UA_DESKTOP && r.device <= CF_UA_BOT);
    FUZZ_CHECK(r.is_bot == (r.device == CF_UA_BOT));
    /* Copy what the second call may not keep, then compare. */
    char browser[256], os[256];
    snprintf(browser, sizeof browser, "%s", r.browser);
    snprintf(os, sizeof os, "%s", r.os);
    cf_ua_device dev = r.device;
    cf_ua_result again;
    if (cf_ua_parse(ua, (const char *)data, size, &again) < 0)
        return 0;
    FUZZ_CHECK(strncmp(again.browser, browser, sizeof browser - 1) == 0);
    FUZZ_CHECK(strncmp(again.os, os, sizeof os - 1) == 0);
    FUZZ_CHECK(again.device == dev);
    return 0;
}
