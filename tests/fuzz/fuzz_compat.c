/* Fuzz harness for cf_compat: the first byte picks the endpoint, the rest is
 * the body. Whatever the bytes, translation either fails cleanly (nothing
 * returned) or returns arrays of objects, every Segment, Plausible or
 * pageview event naming a page; the Basic-auth decoder, fed the same bytes
 * as a header value, returns a user name without ':' or NUL that fits. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_compat.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cf_compat_endpoint ep = (cf_compat_endpoint)(1 + data[0] % 7);
    size_t n = size - 1;
    char *body = malloc(n + 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, n);
    body[n] = '\0';

    cf_compat_result res;
    const char *why = NULL;
    int r = cf_compat_translate(ep, body, n, &res, &why);
    if (r < 0) {
        FUZZ_CHECK(r == -EBADMSG || r == -EMSGSIZE || r == -ENOMEM);
        FUZZ_CHECK(why != NULL);
        FUZZ_CHECK(!res.events && !res.traits && !res.key);
    } else {
        FUZZ_CHECK(r == 0 && cJSON_IsArray(res.events) && cJSON_IsArray(res.traits));
        for (const cJSON *e = res.events->child; e; e = e->next) {
            FUZZ_CHECK(cJSON_IsObject(e));
            FUZZ_CHECK(cJSON_GetObjectItemCaseSensitive(e, "page_url") != NULL);
        }
        for (const cJSON *t = res.traits->child; t; t = t->next)
            FUZZ_CHECK(cJSON_IsObject(t));
        if (ep == CF_COMPAT_PLAUSIBLE || ep == CF_COMPAT_UMAMI)
            FUZZ_CHECK(res.key && res.key[0]);
        /* A single Segment call that passed the 32 KB rule prints within
         * it (the size walk never undercounts cJSON's printer). */
        if (ep >= CF_COMPAT_SEGMENT_TRACK && ep <= CF_COMPAT_SEGMENT_IDENTIFY) {
            cJSON *v = cJSON_ParseWithLength(body, n + 1);
            char *text = v ? cJSON_PrintUnformatted(v) : NULL;
            if (text)
                FUZZ_CHECK(strlen(text) <= CF_COMPAT_SEGMENT_MAX_MESSAGE);
            free(text);
            cJSON_Delete(v);
        }
    }
    cf_compat_result_free(&res);

    char user[64];
    int u = cf_compat_basic_user(body, user, sizeof user);
    if (u >= 0) {
        FUZZ_CHECK(u > 0 && (size_t)u < sizeof user && strlen(user) == (size_t)u);
        FUZZ_CHECK(strchr(user, ':') == NULL);
    }
    free(body);
    return 0;
}
