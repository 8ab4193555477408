/* cf_compat: translates the request bodies of the Segment HTTP Tracking API,
 * the Plausible Events API and Umami's /api/send into clickflow click events
 * (SPEC 15). Pure: the HTTP layer reads the body and the headers, this module
 * maps them, and the events then go through the same validation and ingest
 * path as POST /api/v1/events (so dedup, the WAL and exactly-once hold).
 *
 * An event produced here is a cJSON object in the shape of SPEC 2:
 *   user_id (absent when the API has none: the server derives a visitor id),
 *   page_url, name, timestamp, event_id, properties,
 * plus the fields the enrichment step reads, ignored by validation today:
 *   referrer, user_agent, client_ip, site, utm_source .. utm_content
 *   (utm_* only from Segment's context.campaign; otherwise enrichment reads
 *   them from page_url's query).
 * Values are copied as sent (a userId that is a number stays a number), so
 * the event validator rejects them with its usual reasons.
 *
 * identify calls produce trait rows instead of events:
 *   {"user_id": ..., "traits": {...}, "timestamp": ...} (user_id may be absent).
 *
 * The field-by-field mapping, and what each real client sends that is ignored,
 * is in docs/INGEST.md. */
#ifndef CF_COMPAT_H
#define CF_COMPAT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

/* Segment's documented limits (HTTP Tracking API "Max request size"). */
#define CF_COMPAT_SEGMENT_MAX_MESSAGE (32 * 1024)
#define CF_COMPAT_SEGMENT_MAX_BATCH (500 * 1024)
/* Name of a Segment page or screen call, and of an Umami event without one. */
#define CF_COMPAT_PAGEVIEW "pageview"
/* page_url of a call that names no page (SPEC 15). */
#define CF_COMPAT_NO_PAGE "(none)"

typedef enum cf_compat_endpoint {
    CF_COMPAT_NONE = 0,
    CF_COMPAT_SEGMENT_BATCH,      /* /v1/batch (also /v1/import) */
    CF_COMPAT_SEGMENT_TRACK,      /* /v1/track, /v1/t */
    CF_COMPAT_SEGMENT_PAGE,       /* /v1/page, /v1/p */
    CF_COMPAT_SEGMENT_SCREEN,     /* /v1/screen, /v1/s */
    CF_COMPAT_SEGMENT_IDENTIFY,   /* /v1/identify, /v1/i */
    CF_COMPAT_PLAUSIBLE,          /* /api/event */
    CF_COMPAT_UMAMI,              /* /api/send */
} cf_compat_endpoint;

typedef enum cf_compat_api {
    CF_COMPAT_API_SEGMENT = 0,
    CF_COMPAT_API_PLAUSIBLE,
    CF_COMPAT_API_UMAMI,
} cf_compat_api;

/* The endpoint of a request path path[0..n) (no query), or CF_COMPAT_NONE. */
cf_compat_endpoint cf_compat_route(const char *path, size_t n);

/* Which API an endpoint belongs to (decides the answer's shape). */
cf_compat_api cf_compat_api_of(cf_compat_endpoint ep);

typedef struct cf_compat_result {
    cJSON *events;      /* array of event objects (owned), in body order */
    cJSON *traits;      /* array of trait rows (owned) */
    char *key;          /* the write key / site key the body names, or NULL (owned) */
    size_t ignored;     /* Segment messages of types clickflow does not use (group, alias) */
} cf_compat_result;

/* Frees what the result owns and zeroes it; accepts NULL. */
void cf_compat_result_free(cf_compat_result *res);

/* Translates body[0..len) (body[len] must be '\0') of endpoint ep.
 * Returns 0 and fills *res (zeroed before the call), or:
 *   -EBADMSG   not JSON, or not the shape the API defines (*ret_error says
 *              why; answer 400, nothing accepted)
 *   -EMSGSIZE  Segment: a message over 32 KB (its compact JSON) or a body
 *              over 500 KB (answer 400, as Segment does; the SDK does not
 *              retry it)
 *   -ENOMEM
 * On failure *res is empty. *ret_error is a static string. O(len). */
int cf_compat_translate(cf_compat_endpoint ep, const char *body, size_t len, cf_compat_result *res,
                        const char **ret_error);

/* False when a JSON string in s[0..n) holds a raw control byte or the escape
 * \u0000: cJSON 1.7.15 would cut the string at the NUL or take the byte
 * silently, and SPEC 2 rejects both (checked on the raw text; O(n)). */
bool cf_compat_json_clean(const char *s, size_t n);

/* The user name of an HTTP Basic Authorization header value ("Basic
 * base64(user:password)"), Segment's way to send the write key. Writes it
 * NUL-terminated to out (cap bytes) and returns its length, or -EINVAL when
 * the value is not Basic, not base64, has no ':' or an empty user, contains
 * NUL, or does not fit. */
int cf_compat_basic_user(const char *authorization, char *out, size_t cap);

#endif
