#include "ingest.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cf_jsonscan.h"
#include "json_arena.h"

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

void cf_ingest_free(cf_ingest *ig)
{
    if (!ig)
        return;
    if (ig->arena)
        cf_json_arena_reset();  /* every tree at once, no walk */
    else
        for (size_t i = 0; i < ig->n_trees; i++)
            cJSON_Delete(ig->trees[i]);
    free(ig->trees);
    free(ig->events);
    free(ig->event_index);
    cf_buf_free(&ig->scratch);
    memset(ig, 0, sizeof *ig);
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

/* Room for up to n events (n <= max_batch). */
static int reserve_events(cf_ingest *ig, size_t n, size_t **ret_prop_off)
{
    size_t cap = n ? n : 1;
    ig->events = calloc(cap, sizeof *ig->events);
    ig->event_index = calloc(cap, sizeof *ig->event_index);
    *ret_prop_off = calloc(cap, sizeof **ret_prop_off);
    if (!ig->events || !ig->event_index || !*ret_prop_off)
        return -ENOMEM;
    return 0;
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
    size_t k = ig->n_events++;
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
    free(prop_off);
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
    ig->trees = malloc(sizeof *ig->trees);
    if (!ig->trees) {
        cJSON_Delete(root);
        return -ENOMEM;
    }
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
        free(prop_off);
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
    if (!ig->trees || reserve_events(ig, lines, &prop_off) < 0) {
        free(prop_off);
        return -ENOMEM;
    }
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
        if (sr.oom) {
            free(prop_off);
            return -ENOMEM;
        }
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
        free(prop_off);
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
