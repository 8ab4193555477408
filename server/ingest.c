#include "ingest.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cf_enrich.h"
#include "cf_jsonscan.h"
#include "json_arena.h"
#include "zalloc.h"

int cf_ingest_content_type(const char *ct, cf_body_format *ret)
{
    if (!ct)
        return -EPROTONOSUPPORT;
    while (*ct == ' ' || *ct == '\t')
        ct++;
    size_t n = strcspn(ct, ";");
    while (n > 0 && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
        n--;
    static const struct {
        const char *type;
        cf_body_format fmt;
    } types[] = {
        {"application/json", CF_BODY_JSON},
        {"text/plain", CF_BODY_JSON},   /* navigator.sendBeacon with a string */
        {"application/x-ndjson", CF_BODY_NDJSON},
    };
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        if (strlen(types[i].type) == n && strncasecmp(ct, types[i].type, n) == 0) {
            *ret = types[i].fmt;
            return 0;
        }
    }
    return -EPROTONOSUPPORT;
}

void cf_ingest_init(cf_ingest *ig) { memset(ig, 0, offsetof(cf_ingest, errors)); }

void cf_ingest_free(cf_ingest *ig)
{
    if (!ig)
        return;
    if (ig->arena)
        cf_json_arena_reset();  /* every tree at once, no walk */
    else
        for (size_t i = 0; i < ig->n_trees; i++)
            cJSON_Delete(ig->trees[i]);
    if (ig->trees != &ig->tree1)
        free(ig->trees);
    free(ig->events);   /* one block with src and event_index (reserve_events) */
    cf_buf_free(&ig->scratch);
    cf_buf_free(&ig->enrich);
    cf_ingest_init(ig);
}

static bool is_ws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static void add_error(cf_ingest *ig, size_t index, const char *reason)
{
    if (ig->n_errors < CF_INGEST_MAX_ERRORS) {
        ig->errors[ig->n_errors].index = index;
        ig->errors[ig->n_errors].reason = reason;
        ig->n_errors++;
    }
    ig->rejected++;
}

/* Parses exactly p[0..n) (p[n] == '\0'); NULL unless all of it is one JSON
 * value. The explicit length and the NUL check are the cJSON 1.7.15
 * precautions of DEPENDENCY-NOTES.md; an embedded NUL fails too. */
static cJSON *parse_exact(const char *p, size_t n)
{
    const char *end = NULL;
    cJSON *v = cJSON_ParseWithLengthOpts(p, n + 1, &end, 1);
    if (v && end != p + n) {
        cJSON_Delete(v);
        return NULL;
    }
    return v;
}

/* Room for up to n events (n <= max_batch): events, src, event_index and
 * the properties offsets in one zeroed block owned by ig->events (four
 * callocs per request before, issue 15). *ret_prop_off lives in it too:
 * it is never freed on its own. cf_zalloc: glibc's calloc skips the
 * thread cache (zalloc.h). */
static int reserve_events(cf_ingest *ig, size_t n, size_t **ret_prop_off)
{
    size_t cap = n ? n : 1;
    size_t o_src = cap * sizeof *ig->events;
    size_t o_index = o_src + cap * sizeof *ig->src;
    size_t o_prop = o_index + cap * sizeof *ig->event_index;
    uint8_t *block = cf_zalloc(o_prop + cap * sizeof **ret_prop_off);
    if (!block)
        return -ENOMEM;
    ig->events = (cf_event *)(void *)block;
    ig->src = (cf_ingest_src *)(void *)(block + o_src);
    ig->event_index = (size_t *)(void *)(block + o_index);
    *ret_prop_off = (size_t *)(void *)(block + o_prop);
    return 0;
}

/* Reads an optional string field of SPEC 15 (`user_agent`, `referrer`):
 * absent, null or "" leave *ret NULL; another type is false. The length is
 * the C string's: cf_jsonscan refused every U+0000 before. */
static bool origin_field(const cJSON *f, const char **ret, size_t *ret_len)
{
    if (!f || cJSON_IsNull(f))
        return true;
    if (!cJSON_IsString(f) || !f->valuestring)
        return false;
    size_t n = strlen(f->valuestring);
    if (n > 0) {
        *ret = f->valuestring;
        *ret_len = n;
    }
    return true;
}

/* Finds `user_agent` and `referrer` in one walk over the keys (the first
 * of duplicates wins, as with cJSON_GetObjectItemCaseSensitive): this runs
 * per event, and two lookups would compare every key twice. */
static void origin_items(const cJSON *v, const cJSON **ret_ua, const cJSON **ret_ref)
{
    *ret_ua = *ret_ref = NULL;
    for (const cJSON *c = v->child; c; c = c->next) {
        const char *k = c->string;
        if (!k)
            continue;
        if (k[0] == 'u' && !*ret_ua && strcmp(k, "user_agent") == 0)
            *ret_ua = c;
        else if (k[0] == 'r' && !*ret_ref && strcmp(k, "referrer") == 0)
            *ret_ref = c;
    }
}

/* Validates one value as event number `index`. Properties text goes into
 * ig->scratch; its offset is kept in prop_off because later appends move the
 * buffer (fixed up by finish()). */
static void take_event(cf_ingest *ig, const cJSON *v, size_t index, const cf_event_limits *lim,
                       int64_t now_ms, size_t *prop_off)
{
    if (!cJSON_IsObject(v)) {
        add_error(ig, index, "event must be a JSON object");
        return;
    }
    const char *reason = NULL;
    cf_event ev;
    size_t before = ig->scratch.len;
    if (cf_event_from_json(v, lim, now_ms, &ig->scratch, &ev, &reason) < 0) {
        ig->scratch.len = before;
        add_error(ig, index, reason ? reason : "invalid event");
        return;
    }
    cf_ingest_src src = {0};
    const cJSON *f_ua, *f_ref;
    origin_items(v, &f_ua, &f_ref);
    const char *bad = !origin_field(f_ua, &src.user_agent, &src.user_agent_len) ? "user_agent must be a string"
                      : !origin_field(f_ref, &src.referrer, &src.referrer_len)  ? "referrer must be a string"
                                                                                : NULL;
    if (bad) {
        ig->scratch.len = before;
        add_error(ig, index, bad);
        return;
    }
    size_t k = ig->n_events++;
    ig->src[k] = src;
    prop_off[k] = ev.properties ? (size_t)((const uint8_t *)ev.properties - ig->scratch.data) : SIZE_MAX;
    ig->events[k] = ev;
    ig->event_index[k] = index;
}

static int finish(cf_ingest *ig, size_t *prop_off)
{
    int r = 0;
    if (ig->scratch.oom) {
        r = -ENOMEM;
    } else {
        for (size_t i = 0; i < ig->n_events; i++)
            if (prop_off[i] != SIZE_MAX)
                ig->events[i].properties = (const char *)ig->scratch.data + prop_off[i];
    }
    return r;
}

/* Findings of cf_jsonscan over a body: the kind per element (allocated at
 * the first finding), and whether something lies outside every element. */
typedef struct scan_result {
    uint8_t *kinds;
    size_t n;
    bool outside;
    bool oom;
} scan_result;

static void on_finding(void *ctx, size_t element, cf_jsonscan_kind kind)
{
    scan_result *r = ctx;
    if (element == CF_JSONSCAN_OUTSIDE) {
        r->outside = true;
        return;
    }
    if (element >= r->n)
        return;     /* cannot happen for text cJSON parsed: stay in bounds */
    if (!r->kinds && !(r->kinds = calloc(r->n, 1))) {
        r->oom = true;
        return;
    }
    r->kinds[element] = (uint8_t)kind;
}

static int parse_json(cf_ingest *ig, char *body, size_t len, size_t max_batch, const cf_event_limits *lim,
                      int64_t now_ms, const char **ret_error)
{
    cJSON *root = parse_exact(body, len);
    if (!root) {
        *ret_error = "body is not valid JSON";
        return -EBADMSG;
    }
    ig->trees = &ig->tree1;
    ig->trees[0] = root;
    ig->n_trees = 1;

    if (!cJSON_IsObject(root) && !cJSON_IsArray(root)) {
        *ret_error = "body must be a JSON object or an array of objects";
        return -EBADMSG;
    }
    size_t n = 1;
    if (cJSON_IsArray(root)) {
        n = 0;
        for (const cJSON *c = root->child; c; c = c->next)
            if (++n > max_batch)
                return -E2BIG;
    } else if (max_batch < 1) {
        return -E2BIG;
    }
    /* What cJSON let through (SPEC 2): \u0000 and raw control bytes. An
     * element holding one is rejected with a reason; outside every element
     * the body is not JSON. */
    scan_result sr = {.n = n};
    cf_jsonscan(body, len, on_finding, &sr);
    if (sr.oom)
        return -ENOMEM;
    if (sr.outside) {
        free(sr.kinds);
        *ret_error = "body is not valid JSON (a raw control character outside any event)";
        return -EBADMSG;
    }
    size_t *prop_off = NULL;
    if (reserve_events(ig, n, &prop_off) < 0) {
        free(sr.kinds);
        return -ENOMEM;
    }
    bool array = cJSON_IsArray(root);
    size_t i = 0;
    for (const cJSON *c = array ? root->child : root; c; c = (array ? c->next : NULL), i++) {
        if (sr.kinds && sr.kinds[i])
            add_error(ig, i, cf_jsonscan_reason((cf_jsonscan_kind)sr.kinds[i]));
        else
            take_event(ig, c, i, lim, now_ms, prop_off);
    }
    free(sr.kinds);
    return finish(ig, prop_off);
}

static int parse_ndjson(cf_ingest *ig, char *body, size_t len, size_t max_batch,
                        const cf_event_limits *lim, int64_t now_ms, const char **ret_error)
{
    /* First pass: count non-blank lines, so an oversized batch is refused
     * before anything is parsed. */
    size_t lines = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        bool blank = true;
        while (j < len && body[j] != '\n') {
            if (!is_ws(body[j]))
                blank = false;
            j++;
        }
        if (!blank && ++lines > max_batch)
            return -E2BIG;
        i = j + 1;
    }
    if (lines == 0) {
        *ret_error = "body is empty";
        return -EBADMSG;
    }
    ig->trees = calloc(lines, sizeof *ig->trees);
    size_t *prop_off = NULL;
    if (!ig->trees || reserve_events(ig, lines, &prop_off) < 0)
        return -ENOMEM;
    size_t index = 0, parsed = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && body[j] != '\n')
            j++;
        size_t a = i, b = j;
        while (a < b && is_ws(body[a]))
            a++;
        while (b > a && is_ws(body[b - 1]))
            b--;
        i = j + 1;
        if (a == b)
            continue;
        body[b] = '\0';   /* b <= j, and body[len] is already NUL */
        cJSON *v = parse_exact(body + a, b - a);
        if (!v) {
            add_error(ig, index++, "line is not valid JSON");
            continue;
        }
        parsed++;
        ig->trees[ig->n_trees++] = v;
        scan_result sr = {.n = 1};
        cf_jsonscan(body + a, b - a, on_finding, &sr);
        if (sr.oom)
            return -ENOMEM;
        if (sr.outside || sr.kinds) {
            /* One line is one event: whatever the finding, it is isolated. */
            add_error(ig, index++, cf_jsonscan_reason(sr.kinds ? (cf_jsonscan_kind)sr.kinds[0]
                                                               : CF_JSONSCAN_RAW_CONTROL));
            free(sr.kinds);
            continue;
        }
        take_event(ig, v, index++, lim, now_ms, prop_off);
    }
    if (parsed == 0) {
        *ret_error = "no line of the body is valid JSON";
        return -EBADMSG;
    }
    return finish(ig, prop_off);
}

int cf_ingest_parse(cf_ingest *ig, cf_body_format fmt, char *body, size_t len, size_t max_batch,
                    const cf_event_limits *lim, int64_t now_ms, const char **ret_error)
{
    *ret_error = NULL;
    size_t i = 0;
    while (i < len && is_ws(body[i]))
        i++;
    if (i == len) {
        *ret_error = "body is empty";
        return -EBADMSG;
    }
    /* Only cJSON's allocations go to the arena, and only during the parse:
     * the events borrow strings from the trees until cf_ingest_free. */
    ig->arena = cf_json_arena_begin();
    int r = fmt == CF_BODY_NDJSON ? parse_ndjson(ig, body, len, max_batch, lim, now_ms, ret_error)
                                  : parse_json(ig, body, len, max_batch, lim, now_ms, ret_error);
    if (ig->arena)
        cf_json_arena_end();
    if (r == -ENOMEM && !*ret_error)
        *ret_error = "out of memory";
    if (r == -E2BIG)
        *ret_error = "too many events in one request (see --max-batch)";
    return r;
}

/* ---- enrichment (SPEC 15) --------------------------------------------------- */

#define NO_OFF UINT32_MAX

/* The User-Agent columns of one User-Agent, copied into ig->enrich. */
typedef struct ua_cols {
    uint32_t off[2];        /* browser, os (NO_OFF: NULL) */
    uint16_t len[2];
    uint8_t device;
    bool is_bot;
} ua_cols;

static uint32_t put_str(cf_buf *b, const char *s, size_t n, uint16_t *ret_len)
{
    if (!s || n == 0 || n > CF_ENRICH_COL_MAX)
        return NO_OFF;
    uint32_t off = (uint32_t)b->len;
    cf_buf_put(b, s, n);
    *ret_len = (uint16_t)n;
    return off;
}

static int parse_ua(cf_ingest *ig, cf_enricher *en, const char *ua, size_t len, ua_cols *ret)
{
    memset(ret, 0, sizeof *ret);
    ret->off[0] = ret->off[1] = NO_OFF;
    if (!en || !ua || len == 0)
        return 0;
    cf_ua_result r;
    int rc = cf_enricher_ua(en, ua, len, &r);
    if (rc < 0)
        return rc;
    /* Copied at once: r borrows from this thread's cache, which the next
     * parse may change. */
    ret->off[0] = put_str(&ig->enrich, r.browser, r.browser ? strlen(r.browser) : 0, &ret->len[0]);
    ret->off[1] = put_str(&ig->enrich, r.os, r.os ? strlen(r.os) : 0, &ret->len[1]);
    ret->device = (uint8_t)(CF_DEVICE_DESKTOP + (int)r.device);
    ret->is_bot = r.is_bot;
    return 0;
}

/* A request-local memo of the User-Agents of `user_agent` fields: a batch
 * relayed by a server holds the same few browsers many times, and a memo
 * hit skips the parser's hash of the whole string and the copies of its
 * results (the columns are already in ig->enrich). Direct-mapped; a
 * collision just parses again. */
#define MEMO_SLOTS 256u
#define MEMO_MIN_EVENTS 16u

typedef struct ua_memo {
    const char *s;
    size_t len;
    ua_cols cols;
} ua_memo;

static size_t memo_slot(const char *s, size_t len)
{
    uint64_t a = 0, b = 0;
    memcpy(&a, s, len < 8 ? len : 8);
    if (len >= 8)
        memcpy(&b, s + len - 8, 8);
    uint64_t h = (a ^ (b * 0x9e3779b97f4a7c15ull) ^ len) * 0xff51afd7ed558ccdull;
    return (size_t)(h >> 56) & (MEMO_SLOTS - 1);
}

static int memo_parse_ua(cf_ingest *ig, cf_enricher *en, ua_memo *memo, const char *ua, size_t len, ua_cols *ret)
{
    if (!memo)
        return parse_ua(ig, en, ua, len, ret);
    ua_memo *m = &memo[memo_slot(ua, len)];
    if (m->s && m->len == len && memcmp(m->s, ua, len) == 0) {
        *ret = m->cols;
        return 0;
    }
    int rc = parse_ua(ig, en, ua, len, ret);
    if (rc == 0) {
        m->s = ua;
        m->len = len;
        m->cols = *ret;
    }
    return rc;
}

static uint32_t str_off(const cf_buf *b, const cf_enrich_str *s, uint16_t *ret_len)
{
    if (!s->s)
        return NO_OFF;
    *ret_len = (uint16_t)s->len;
    return (uint32_t)((const uint8_t *)s->s - b->data);
}

int cf_ingest_enrich(cf_ingest *ig, const cf_ingest_context *ctx)
{
    size_t n = ig->n_events;
    if (n == 0)
        return 0;
    /* The strings go into one buffer that grows: offsets first, pointers
     * once it stops moving. A few events' offsets fit on the stack (one
     * malloc less per single-event request, issue 15). */
    uint32_t small[4 * CF_COL_COUNT];
    uint32_t *off = n * CF_COL_COUNT <= sizeof small / sizeof small[0] ? small
                                                                         : malloc(n * CF_COL_COUNT * sizeof *off);
    if (!off)
        return -ENOMEM;
    const char *hdr_ua = ctx->user_agent && ctx->user_agent[0] ? ctx->user_agent : NULL;
    const char *hdr_ref = ctx->referer && ctx->referer[0] ? ctx->referer : NULL;
    size_t hdr_ref_len = hdr_ref ? strlen(hdr_ref) : 0;
    cf_buf *b = &ig->enrich;
    uint16_t country_len = 0;
    uint32_t country = ctx->country ? put_str(b, ctx->country, strlen(ctx->country), &country_len) : NO_OFF;
    ua_cols shared;
    bool shared_done = false;
    /* Only worth its allocation for a batch. */
    ua_memo *memo = n >= MEMO_MIN_EVENTS && ctx->ua ? calloc(MEMO_SLOTS, sizeof *memo) : NULL;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        cf_event *ev = &ig->events[i];
        const cf_ingest_src *src = &ig->src[i];
        cf_event_enrich *en = &ev->enrich;
        uint32_t *o = off + i * CF_COL_COUNT;
        memset(en, 0, sizeof *en);
        for (int c = 0; c < CF_COL_COUNT; c++)
            o[c] = NO_OFF;
        cf_enrich u;
        rc = cf_enrich_compute(ev->page_url, ev->page_url_len, src->referrer, src->referrer_len, hdr_ref,
                               hdr_ref_len, b, &u);
        if (rc < 0)
            break;
        o[CF_COL_REFERRER] = str_off(b, &u.referrer, &en->len[CF_COL_REFERRER]);
        o[CF_COL_REFERRER_HOST] = str_off(b, &u.referrer_host, &en->len[CF_COL_REFERRER_HOST]);
        const cf_ingest_override *ov = ctx->override ? &ctx->override[i] : NULL;
        for (int k = 0; k < CF_UTM_COUNT; k++) {
            o[CF_COL_UTM_SOURCE + k] = str_off(b, &u.utm[k], &en->len[CF_COL_UTM_SOURCE + k]);
            /* A tag the sender names outright wins over the URL's (put_str
             * refuses an empty or over-long one: the URL's then stays). */
            const char *t = ov ? ov->utm[k] : NULL;
            uint16_t tl = 0;
            uint32_t to = t ? put_str(b, t, strlen(t), &tl) : NO_OFF;
            if (to != NO_OFF) {
                o[CF_COL_UTM_SOURCE + k] = to;
                en->len[CF_COL_UTM_SOURCE + k] = tl;
            }
        }
        o[CF_COL_PAGE_PATH] = str_off(b, &u.page_path, &en->len[CF_COL_PAGE_PATH]);
        ua_cols own;
        const ua_cols *uc;
        if (src->user_agent) {
            rc = memo_parse_ua(ig, ctx->ua, memo, src->user_agent, src->user_agent_len, &own);
            uc = &own;
        } else {
            /* The common case: every event of a request comes from the
             * sender of its User-Agent header. */
            if (!shared_done) {
                rc = parse_ua(ig, ctx->ua, hdr_ua, hdr_ua ? strlen(hdr_ua) : 0, &shared);
                shared_done = true;
            }
            uc = &shared;
        }
        o[CF_COL_BROWSER] = uc->off[0];
        en->len[CF_COL_BROWSER] = uc->len[0];
        o[CF_COL_OS] = uc->off[1];
        en->len[CF_COL_OS] = uc->len[1];
        en->device = uc->device;
        en->is_bot = uc->is_bot;
        o[CF_COL_COUNTRY] = country;
        en->len[CF_COL_COUNTRY] = country_len;
        if (ov && ov->country_set) {
            uint16_t ocl = 0;
            o[CF_COL_COUNTRY] = ov->country ? put_str(b, ov->country, strlen(ov->country), &ocl) : NO_OFF;
            en->len[CF_COL_COUNTRY] = ocl;
        }
    }
    if (rc == 0 && b->oom)
        rc = -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        cf_event_enrich *en = &ig->events[i].enrich;
        if (rc < 0) {
            memset(en, 0, sizeof *en);
            continue;
        }
        for (int c = 0; c < CF_COL_COUNT; c++) {
            uint32_t x = off[i * CF_COL_COUNT + c];
            en->col[c] = x == NO_OFF ? NULL : (const char *)b->data + x;
            if (x == NO_OFF)
                en->len[c] = 0;
        }
    }
    free(memo);
    if (off != small)
        free(off);
    return rc;
}
