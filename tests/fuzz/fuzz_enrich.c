/* Fuzz harness for cf_enrich: arbitrary page_url, referrer field and Referer
 * header (the input split at its first two 0x01 bytes). Checks the result's
 * invariants: every column is NUL-terminated, no longer than its source,
 * the utm_* values and the referrer are valid UTF-8 without NUL, the
 * referrer host has no upper-case ASCII, and page_path lies inside
 * page_url (or is "/"). */
#include <stdlib.h>
#include <string.h>

#include "cf_enrich.h"
#include "cf_event.h"
#include "fuzz.h"

static void check_str(cf_enrich_str s, size_t max)
{
    if (!s.s) {
        FUZZ_CHECK(s.len == 0);
        return;
    }
    FUZZ_CHECK(s.len > 0 && s.len <= max);
    FUZZ_CHECK(s.s[s.len] == '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p = (const char *)data;
    const char *parts[3] = {p, NULL, NULL};
    size_t lens[3] = {size, 0, 0};
    const char *sep = memchr(p, 1, size);
    if (sep) {
        lens[0] = (size_t)(sep - p);
        parts[1] = sep + 1;
        lens[1] = size - lens[0] - 1;
        const char *sep2 = memchr(parts[1], 1, lens[1]);
        if (sep2) {
            lens[1] = (size_t)(sep2 - parts[1]);
            parts[2] = sep2 + 1;
            lens[2] = size - lens[0] - lens[1] - 2;
        }
    }
    cf_buf b = {0};
    cf_enrich e;
    if (cf_enrich_compute(parts[0], lens[0], parts[1], lens[1], parts[2], lens[2], &b, &e) < 0) {
        cf_buf_free(&b);
        return 0;
    }
    check_str(e.referrer, CF_ENRICH_MAX);
    if (e.referrer.s) {
        FUZZ_CHECK(cf_utf8_valid(e.referrer.s, e.referrer.len));
        FUZZ_CHECK(!memchr(e.referrer.s, 0, e.referrer.len));
    }
    check_str(e.referrer_host, e.referrer.len);
    for (size_t i = 0; i < e.referrer_host.len; i++)
        FUZZ_CHECK(!(e.referrer_host.s[i] >= 'A' && e.referrer_host.s[i] <= 'Z'));
    for (int k = 0; k < CF_UTM_COUNT; k++) {
        check_str(e.utm[k], lens[0]);
        if (e.utm[k].s) {
            FUZZ_CHECK(cf_utf8_valid(e.utm[k].s, e.utm[k].len));
            FUZZ_CHECK(!memchr(e.utm[k].s, 0, e.utm[k].len));
        }
    }
    check_str(e.page_path, lens[0] > 0 ? lens[0] : 1);
    if (e.page_path.s && !(e.page_path.len == 1 && e.page_path.s[0] == '/'))
        FUZZ_CHECK(memmem(parts[0], lens[0], e.page_path.s, e.page_path.len) != NULL);
    cf_buf_free(&b);
    return 0;
}
