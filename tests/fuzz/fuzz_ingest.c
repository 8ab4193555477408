/* Fuzz harness for the HTTP ingest body parser (server/ingest.c): any body,
 * in either format, with any batch limit, gives 0 / -EBADMSG / -E2BIG and a
 * coherent result; every accepted event is valid and its borrowed strings are
 * readable after parsing (ASan checks the reads).
 *
 * Input: byte 0 selects the format (bit 0: NDJSON) and the batch limit
 * (bits 1..3: 1..8); the rest is the body. Build note: compile with
 * server/ingest.c (it needs only lib/ and cJSON). */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/ingest.h"
#include "cf_jsonscan.h"
#include "fuzz.h"

#define NOW INT64_C(1795514400000)

/* Elements of a JSON body that hold \u0000 or a raw control byte. */
typedef struct flagged {
    size_t idx[64];
    size_t n;
    bool outside;
} flagged;

static void on_flag(void *ctx, size_t element, cf_jsonscan_kind kind)
{
    (void)kind;
    flagged *f = ctx;
    if (element == CF_JSONSCAN_OUTSIDE)
        f->outside = true;
    else if (f->n < 64)
        f->idx[f->n++] = element;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cf_body_format fmt = (data[0] & 1) ? CF_BODY_NDJSON : CF_BODY_JSON;
    size_t max_batch = 1 + ((data[0] >> 1) & 7);
    size_t len = size - 1;
    /* The parser needs a writable, NUL-terminated copy (as the HTTP layer
     * gives it); it is freed before the events are inspected, which must
     * not borrow from it. */
    char *body = malloc(len + 1);
    if (!body)
        return 0;
    memcpy(body, data + 1, len);
    body[len] = '\0';
    static const cf_event_limits lim = {.max_future_ms = 60000};
    flagged fl = {.n = 0};
    if (fmt == CF_BODY_JSON)
        cf_jsonscan(body, len, on_flag, &fl);
    cf_ingest ig;
    memset(&ig, 0, sizeof ig);
    const char *why = NULL;
    int r = cf_ingest_parse(&ig, fmt, body, len, max_batch, &lim, NOW, &why);
    free(body);
    FUZZ_CHECK(r == 0 || r == -EBADMSG || r == -E2BIG || r == -ENOMEM);
    if (r == 0) {
        /* SPEC 2: no event holding U+0000 or a raw control byte is
         * accepted, and such bytes outside every event refuse the body. */
        FUZZ_CHECK(!fl.outside);
        for (size_t i = 0; i < ig.n_events; i++)
            for (size_t k = 0; k < fl.n; k++)
                FUZZ_CHECK(ig.event_index[i] != fl.idx[k]);
        FUZZ_CHECK(ig.n_events + ig.rejected <= max_batch);
        FUZZ_CHECK(ig.n_errors == (ig.rejected < CF_INGEST_MAX_ERRORS ? ig.rejected : CF_INGEST_MAX_ERRORS));
        size_t last = 0;
        for (size_t i = 0; i < ig.n_events; i++) {
            const cf_event *ev = &ig.events[i];
            FUZZ_CHECK(i == 0 || ig.event_index[i] > last);
            last = ig.event_index[i];
            FUZZ_CHECK(ev->user_id_len >= 1 && ev->user_id_len <= CF_USER_ID_MAX);
            FUZZ_CHECK(ev->page_url_len >= 1 && ev->page_url_len <= CF_PAGE_URL_MAX);
            FUZZ_CHECK(cf_utf8_valid(ev->user_id, ev->user_id_len));
            FUZZ_CHECK(cf_utf8_valid(ev->page_url, ev->page_url_len));
            FUZZ_CHECK(ev->ts <= NOW + lim.max_future_ms);
            if (ev->properties)
                FUZZ_CHECK(ev->properties_len >= 2 && ev->properties[0] == '{' &&
                           ev->properties[ev->properties_len - 1] == '}');
        }
        for (size_t i = 0; i < ig.n_errors; i++)
            FUZZ_CHECK(ig.errors[i].reason && ig.errors[i].reason[0]);
        /* SPEC 15: enrichment (without User-Agent rules here) never fails
         * on a valid event, and every enriched event packs and reads back
         * with the same columns. */
        const cf_ingest_context ctx = {.referer = "https://r.example/a", .country = "DE"};
        FUZZ_CHECK(cf_ingest_enrich(&ig, &ctx) == 0);
        cf_buf b = {0};
        for (size_t i = 0; i < ig.n_events; i++) {
            const cf_event *ev = &ig.events[i];
            cf_buf_reset(&b);
            FUZZ_CHECK(cf_event_pack(ev, &b) > 0);
            cf_reader rd;
            cf_reader_init(&rd, b.data, b.len);
            cf_event back;
            FUZZ_CHECK(cf_event_unpack(&rd, &back) == 0 && rd.left == 0);
            for (int c = 0; c < CF_COL_COUNT; c++) {
                FUZZ_CHECK((ev->enrich.col[c] == NULL) == (back.enrich.col[c] == NULL));
                FUZZ_CHECK(ev->enrich.len[c] == back.enrich.len[c]);
                if (ev->enrich.len[c])
                    FUZZ_CHECK(memcmp(ev->enrich.col[c], back.enrich.col[c], ev->enrich.len[c]) == 0);
            }
            FUZZ_CHECK(back.enrich.col[CF_COL_REFERRER] != NULL);
        }
        cf_buf_free(&b);
    } else {
        FUZZ_CHECK(why && why[0]);
    }
    cf_ingest_free(&ig);
    return 0;
}
