/* cf_enrich: the URL-derived enrichment columns of a click event (SPEC 15):
 * referrer and referrer_host, the five utm_* tags of page_url's query, and
 * page_path. Pure string work on the event's fields and the request's
 * Referer header; the User-Agent columns come from cf_ua, the visitor id
 * from cf_visitor.
 *
 * Rules (docs/INGEST.md):
 * - referrer: the event's `referrer` field when non-empty, else the Referer
 *   header when non-empty; a candidate that is not valid UTF-8, holds a NUL
 *   or is longer than CF_ENRICH_MAX is skipped. Kept byte for byte.
 * - referrer_host: the host of an absolute referrer (`scheme://[user@]host
 *   [:port]...`), ASCII-lowercased, without port or user info; IPv6 hosts
 *   keep their brackets. Absent for a relative referrer or an empty host.
 * - utm_source, utm_medium, utm_campaign, utm_term, utm_content: from the
 *   query of page_url (between the first '?' and the '#'), split on '&';
 *   names compare exactly after percent-decoding; values are
 *   percent-decoded with '+' as a space (form encoding; a '%' not followed
 *   by two hex digits stays as it is); the first non-empty occurrence wins.
 *   A decoded value that is not valid UTF-8 or holds a NUL is skipped.
 * - page_path: page_url without scheme and authority (`scheme://host` or
 *   `//host`), query and fragment; "/" when that leaves nothing after an
 *   authority. A relative page_url ("/x?y=1") keeps its path ("/x"); one
 *   with no path at all ("?a=1", "") has none. Not decoded: the path is
 *   kept as sent. */
#ifndef CF_ENRICH_H
#define CF_ENRICH_H

#include <stdbool.h>
#include <stddef.h>

#include "cf_buf.h"

/* Longest referrer kept, like page_url (SPEC 2). */
#define CF_ENRICH_MAX 2048

/* A string of the result: s[0..len) followed by a NUL; s is NULL (len 0)
 * when the column is absent. */
typedef struct cf_enrich_str {
    const char *s;
    size_t len;
} cf_enrich_str;

enum {
    CF_UTM_SOURCE = 0,
    CF_UTM_MEDIUM,
    CF_UTM_CAMPAIGN,
    CF_UTM_TERM,
    CF_UTM_CONTENT,
    CF_UTM_COUNT
};

typedef struct cf_enrich {
    cf_enrich_str referrer;
    cf_enrich_str referrer_host;
    cf_enrich_str utm[CF_UTM_COUNT];
    cf_enrich_str page_path;
} cf_enrich;

/* The column names of utm[i]: "utm_source", ... */
const char *cf_enrich_utm_name(int i);

/* Computes the columns of one event. page_url[0..page_url_len) is the
 * validated page_url; referrer_field and referer_header may be NULL (len 0).
 * The strings are NUL-terminated copies appended to `scratch` (reserved in
 * one step up front, so they stay valid until scratch is next appended to,
 * reset or freed). Returns 0 and fills *ret, or -ENOMEM (*ret untouched).
 * O(page_url_len + referrer length). */
int cf_enrich_compute(const char *page_url, size_t page_url_len, const char *referrer_field,
                      size_t referrer_field_len, const char *referer_header, size_t referer_header_len,
                      cf_buf *scratch, cf_enrich *ret);

#endif
