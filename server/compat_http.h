/* compat_http: the Segment, Plausible and Umami compatible endpoints of SPEC 15
 * (docs/INGEST.md, docs/API.md), and the site keys they are sent with.
 *
 * http.c routes the paths of lib/cf_compat.h here once the body is read; this
 * module decides who may send (the write key: ingest token or site key;
 * Origin; the per-IP rate), maps the body with cf_compat, derives a visitor
 * id for events without a user, and hands the events to the same validation
 * (cf_ingest_parse), enrichment (annotate.h: Segment's context.ip gives the
 * country, context.campaign the utm_* columns) and engine path as POST
 * /api/v1/events, so dedup by
 * event_id (Segment's messageId), the WAL and exactly-once hold. It answers
 * the way the real API does, so the unmodified clients take the answer for
 * their own server's. The reply is returned as data: http_post.c sends it, with
 * the headers every answer carries. */
#ifndef CF_COMPAT_HTTP_H
#define CF_COMPAT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>
#include <microhttpd.h>

#include "annotate.h"
#include "cf_compat.h"
#include "config.h"
#include "engine.h"

typedef struct cf_compat_http cf_compat_http;

/* cfg is copied; the engine and the enrichment step (the one of POST
 * /api/v1/events, may be NULL: none) are borrowed and must outlive the
 * module. The visitor-id secret (server/enrich.h) is loaded on first need,
 * once the data directory exists. NULL on OOM. */
cf_compat_http *cf_compat_http_new(const cf_config *cfg, cf_engine *engine, const cf_annotate *annotate);

/* Accepts NULL. */
void cf_compat_http_free(cf_compat_http *ch);

typedef struct cf_compat_reply {
    unsigned status;
    const char *ctype;      /* static */
    char *body;             /* malloc'd; the caller frees it (or hands it to MHD) */
    size_t len;
    unsigned retry_after;   /* seconds for Retry-After, 0: none */
    bool allow_origin;      /* echo the request's Origin in Access-Control-Allow-Origin */
} cf_compat_reply;

/* Answers one request to endpoint ep whose whole body is body[0..len)
 * (body[len] == '\0'). Headers and the client address are read from c.
 * Returns 0 and fills *ret, or -ENOMEM (nothing to send: close). */
int cf_compat_http_handle(cf_compat_http *ch, struct MHD_Connection *c, cf_compat_endpoint ep, char *body,
                          size_t len, cf_compat_reply *ret);

/* ---- site keys on POST /api/v1/events ---------------------------------------
 * The web tracker (GET /cf.js) sends {"site": KEY, ...} without a user_id and
 * without Authorization (sendBeacon cannot set it); ?site=KEY names the site
 * of every event of the request. */

/* True when at least one --site is configured. */
bool cf_compat_http_sites_any(const cf_compat_http *ch);

typedef struct cf_site_gate {
    char *body;             /* a rewritten body (malloc'd, NUL-terminated), or NULL: the original */
    size_t len;
    unsigned status;        /* 0: go on; else refuse with status and msg */
    const char *msg;        /* static */
    unsigned retry_after;   /* seconds, with 429 */
    bool allow_origin;      /* echo Origin in Access-Control-Allow-Origin */
} cf_site_gate;

/* Applies the site keys to a POST /api/v1/events body before validation:
 * for each event that names a known site (its "site" field, else ?site=),
 * checks the Origin against the site's origins (403), derives user_id when
 * absent and records the site; counts those events against the client IP's
 * --ip-rate (429) unless `bearer` (the request carried the ingest token).
 * `site_only`: the request has no Authorization and the server has a token,
 * so every event must name a known site (else 401, nothing accepted).
 * ndjson bodies are left to the usual path (a site_only one is refused).
 * Returns 0 and fills *ret (ret->body freed by the caller), or -ENOMEM. */
int cf_compat_http_gate_events(cf_compat_http *ch, struct MHD_Connection *c, bool bearer, bool site_only, bool ndjson,
                               const char *body, size_t len, cf_site_gate *ret);

/* GET /api/v1/sites: {"items": [{"key", "origins": [...]}]} in the order
 * configured, for the dashboard's snippet panel. Site keys are public (they
 * are in every page's HTML), but the answer is a read like any other (http.c
 * asks for the read token). NULL on OOM. */
cJSON *cf_compat_http_sites_json(const cf_compat_http *ch);

/* Whether a CORS preflight from origin may be answered positively: it is an
 * origin of some site key (a preflight does not carry the key). */
bool cf_compat_http_origin_known(const cf_compat_http *ch, const char *origin);

#endif
