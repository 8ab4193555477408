/* Fuzz harness for the ingest path: JSON -> cf_event_from_json -> pack ->
 * unpack must round-trip every accepted event exactly; arbitrary bytes fed to
 * cf_event_unpack must never read out of bounds. */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cf_event.h"
#include "fuzz.h"

#define NOW INT64_C(1795514400000)

static bool same_field(const char *a, size_t an, const char *b, size_t bn)
{
    if (an != bn || (a == NULL) != (b == NULL))
        return false;
    return an == 0 || memcmp(a, b, an) == 0;
}

static void check_round_trip(const cf_event *ev)
{
    cf_buf out = {0};
    int n = cf_event_pack(ev, &out);
    FUZZ_CHECK(n > 0 && (size_t)n == out.len);
    cf_reader r;
    cf_reader_init(&r, out.data, out.len);
    cf_event back;
    FUZZ_CHECK(cf_event_unpack(&r, &back) == 0);
    FUZZ_CHECK(r.left == 0 && !r.bad);
    FUZZ_CHECK(back.ts == ev->ts);
    FUZZ_CHECK(same_field(ev->user_id, ev->user_id_len, back.user_id, back.user_id_len));
    FUZZ_CHECK(same_field(ev->page_url, ev->page_url_len, back.page_url, back.page_url_len));
    FUZZ_CHECK(same_field(ev->element, ev->element_len, back.element, back.element_len));
    FUZZ_CHECK(same_field(ev->event_id, ev->event_id_len, back.event_id, back.event_id_len));
    FUZZ_CHECK(same_field(ev->properties, ev->properties_len, back.properties,
                          back.properties_len));
    size_t nl, bnl;
    const char *name = cf_event_name(ev, &nl), *bname = cf_event_name(&back, &bnl);
    FUZZ_CHECK(same_field(name, nl, bname, bnl));
    FUZZ_CHECK(nl <= CF_NAME_MAX && cf_utf8_valid(name, nl));
    /* What validation accepted is valid UTF-8 within limits. */
    FUZZ_CHECK(cf_utf8_valid(ev->user_id, ev->user_id_len));
    FUZZ_CHECK(cf_utf8_valid(ev->page_url, ev->page_url_len));
    FUZZ_CHECK(ev->element_len <= CF_ELEMENT_MAX);
    FUZZ_CHECK(ev->event_id_len <= CF_EVENT_ID_MAX);
    /* Every truncation is rejected. */
    for (size_t cut = 0; cut < out.len; cut += 1 + cut / 4) {
        cf_reader_init(&r, out.data, cut);
        FUZZ_CHECK(cf_event_unpack(&r, &back) == -EINVAL);
    }
    cf_buf_free(&out);
}

static void validate(const cJSON *item, cf_buf *scratch)
{
    static const cf_event_limits lim = {.max_future_ms = 60000};
    cf_event ev;
    const char *reason = NULL;
    cf_buf_reset(scratch);
    int rc = cf_event_from_json(item, &lim, NOW, scratch, &ev, &reason);
    if (rc == 0)
        check_round_trip(&ev);
    else
        FUZZ_CHECK(reason != NULL && reason[0] != '\0');
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Raw bytes as a packed record (WAL / queue input). */
    cf_reader r;
    cf_reader_init(&r, data, size);
    cf_event ev;
    while (cf_event_unpack(&r, &ev) == 0)
        FUZZ_CHECK(ev.user_id_len >= 1 && ev.page_url_len >= 1);

    if (size > (1u << 20))
        return 0;
    /* Parse a NUL-terminated copy with an explicit length, as the server
     * does (DEPENDENCY-NOTES: cJSON 1.7.15). */
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(copy, size + 1, &end, 1);
    if (root) {
        cf_buf scratch = {0};
        if (cJSON_IsArray(root)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, root)
                validate(it, &scratch);
        } else {
            validate(root, &scratch);
        }
        cf_buf_free(&scratch);
        cJSON_Delete(root);
    }
    free(copy);
    return 0;
}
