/* ingest: turns the body of POST /api/v1/events into validated events and
 * per-event errors (SPEC section 3). No I/O: the HTTP layer reads the body
 * into its own bounded buffer, this module parses it, the engine takes the
 * events. Kept apart from http.c so the rules are unit-testable and fuzzable.
 *
 * Body rules (docs/API.md):
 * - CF_BODY_JSON (application/json, text/plain): one JSON object, or an array
 *   whose elements are each one event. Anything that is not JSON, has
 *   trailing bytes, or is a JSON scalar at the top level fails the whole
 *   request (400).
 * - CF_BODY_NDJSON (application/x-ndjson): one JSON value per line; '\n' or
 *   "\r\n" ends a line; blank lines are skipped and do not count as events. A
 *   line that is not JSON is a per-event error, unless no line is JSON at all
 *   (400).
 * - An empty body (nothing but whitespace) is 400.
 * - More than max_batch events is 413, whatever their validity. */
#ifndef CF_INGEST_H
#define CF_INGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "cf_enrich.h"
#include "cf_event.h"
#include "enrich.h"

typedef enum cf_body_format {
    CF_BODY_JSON = 0,
    CF_BODY_NDJSON = 1,
} cf_body_format;

/* Errors listed in a response at most (SPEC 3); the rest are only counted. */
#define CF_INGEST_MAX_ERRORS 100

/* Maps a Content-Type header value to a body format. Media types compare
 * case-insensitively and parameters (";charset=UTF-8") are ignored. Returns 0
 * and sets *ret, or -EPROTONOSUPPORT for any other or a missing (NULL) type
 * (answer 415). */
int cf_ingest_content_type(const char *content_type, cf_body_format *ret);

typedef struct cf_ingest_error {
    size_t index;           /* 0-based event index (NDJSON: among non-blank lines) */
    const char *reason;     /* static text */
} cf_ingest_error;

/* What an event says about its own origin (SPEC 15): its `user_agent` and
 * `referrer` fields, NULL when absent, null or empty. Borrowed from the
 * trees. */
typedef struct cf_ingest_src {
    const char *user_agent;
    size_t user_agent_len;
    const char *referrer;
    size_t referrer_len;
} cf_ingest_src;

typedef struct cf_ingest {
    cf_event *events;       /* the valid events, in body order */
    cf_ingest_src *src;     /* per valid event */
    size_t n_events;
    size_t *event_index;    /* body index of each valid event */
    size_t rejected;        /* invalid events, listed or not */
    size_t n_errors;        /* min(rejected, CF_INGEST_MAX_ERRORS) */
    /* Owned storage the events borrow from. */
    cJSON **trees;
    size_t n_trees;
    cJSON *tree1;           /* trees of a JSON body: its one tree needs no allocation */
    cf_buf scratch;         /* properties text */
    cf_buf enrich;          /* enrichment strings (cf_ingest_enrich) */
    bool arena;             /* the trees live in this thread's JSON arena */
    /* Last: cf_ingest_init leaves it alone (only n_errors entries are read). */
    cf_ingest_error errors[CF_INGEST_MAX_ERRORS];
} cf_ingest;

/* Makes ig valid and empty, zeroing all but the 1.6 KiB error list (twice
 * per request, issue 15); a zeroed cf_ingest is valid and empty too. */
void cf_ingest_init(cf_ingest *ig);

/* Releases everything the events borrow from (accepts NULL) and leaves ig
 * empty. If the parse used the thread's JSON arena (ig->arena), free must
 * run on the parsing thread: it resets that arena. */
void cf_ingest_free(cf_ingest *ig);

/* Parses and validates body[0..len) (body[len] must be '\0'; NDJSON parsing
 * writes NULs into body, so the caller's buffer is modified). now_ms is the
 * receive time for events without a timestamp. Returns:
 *   0        ig holds the valid events and the errors
 *   -EBADMSG the body is not JSON (*ret_error says why; answer 400)
 *   -E2BIG   more than max_batch events (answer 413)
 *   -ENOMEM
 * ig must be zeroed (or freed) before the call. O(len).
 * When the cJSON hooks of json_arena.h are installed and the calling thread's
 * arena is free, the trees are allocated there (ig->arena), which makes the
 * parse and cf_ingest_free cheaper; cf_ingest_free then resets the arena, so
 * call it on the same thread and before the next parse of that thread that
 * should use the arena. */
int cf_ingest_parse(cf_ingest *ig, cf_body_format fmt, char *body, size_t len, size_t max_batch,
                    const cf_event_limits *lim, int64_t now_ms, const char **ret_error);

/* What one relayed event says of its sender that the request cannot (a
 * server SDK sends for many browsers: Segment's context.ip and
 * context.campaign). NULL or "" fields leave the request's value. */
typedef struct cf_ingest_override {
    bool country_set;                   /* country below replaces the request's */
    const char *country;                /* NULL: unknown */
    const char *utm[CF_UTM_COUNT];      /* instead of page_url's utm_* tags */
} cf_ingest_override;

/* The request-wide inputs of the enrichment (SPEC 15). */
typedef struct cf_ingest_context {
    cf_enricher *ua;            /* User-Agent rules; NULL: browser, os, device unknown */
    const char *user_agent;     /* the User-Agent header, NULL if none */
    const char *referer;        /* the Referer header, NULL if none */
    const char *country;        /* the client IP's country code, NULL if unknown */
    const cf_ingest_override *override; /* n_events entries, or NULL: none */
} cf_ingest_context;

/* Fills the enrichment of every valid event of ig (cf_event.enrich):
 * referrer (the event's field, else the header), referrer_host, utm_*,
 * page_path (lib/cf_enrich.h; ctx->override's utm_* win), browser, os,
 * device and is_bot from the
 * event's `user_agent` field, else the header (parsed once per request and
 * cached per thread), and country (ctx->override's wins). An event with no User-Agent at all has
 * browser, os and device NULL and is_bot false. The strings live in
 * ig->enrich until cf_ingest_free. Returns 0 or -ENOMEM (the events are
 * then left without enrichment). O(bytes of the events) plus one
 * User-Agent parse per distinct User-Agent not in this thread's cache. */
int cf_ingest_enrich(cf_ingest *ig, const cf_ingest_context *ctx);

#endif
