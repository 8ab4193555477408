/* compat_http: the Segment, Plausible and Umami compatible endpoints of SPEC 15
 * (docs/INGEST.md, docs/API.md), and the site keys they are sent with.
 *
 * http.c routes the paths of lib/cf_compat.h here once the body is read; this
 * module decides who may send (the write key: ingest token or site key;
 * Origin; the per-IP rate), maps the body with cf_compat, derives a visitor
 * id for events without a user, and hands the events to the same validation
 * (cf_ingest_parse) and engine path as POST /api/v1/events, so dedup by
 * event_id (Segment's messageId), the WAL and exactly-once hold. It answers
 * the way the real API does, so the unmodified clients take the answer for
 * their own server's. The reply is returned as data: http.c sends it, with
 * the headers every answer carries. */
#ifndef CF_COMPAT_HTTP_H
#define CF_COMPAT_HTTP_H

#include <stdbool.h>
#include <stddef.h>

#include <microhttpd.h>

#include "cf_compat.h"
#include "config.h"
#include "engine.h"

typedef struct cf_compat_http cf_compat_http;

/* cfg is copied; the engine is borrowed and must outlive the module. The
 * visitor-id secret (server/enrich.h) is loaded on first need, once the data
 * directory exists. NULL on OOM. */
cf_compat_http *cf_compat_http_new(const cf_config *cfg, cf_engine *engine);

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

/* Whether a CORS preflight from origin may be answered positively: it is an
 * origin of some site key (a preflight does not carry the key). */
bool cf_compat_http_origin_known(const cf_compat_http *ch, const char *origin);

#endif
