/* cf_event: a click event (SPEC section 2): validation from parsed JSON and a
 * compact binary form used for shard queue messages and WAL records. */
#ifndef CF_EVENT_H
#define CF_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"

#define CF_USER_ID_MAX 256
#define CF_PAGE_URL_MAX 2048
#define CF_ELEMENT_MAX 256
#define CF_EVENT_ID_MAX 128
#define CF_NAME_MAX 256

/* The enrichment columns of SPEC 15 that are strings, in their packed and
 * JSON order: X(id, "name"). One list drives the enum, the names and the
 * packed block, so a column is added in one place. */
#define CF_ENRICH_COLUMNS(X)                \
    X(REFERRER, "referrer")                 \
    X(REFERRER_HOST, "referrer_host")       \
    X(UTM_SOURCE, "utm_source")             \
    X(UTM_MEDIUM, "utm_medium")             \
    X(UTM_CAMPAIGN, "utm_campaign")         \
    X(UTM_TERM, "utm_term")                 \
    X(UTM_CONTENT, "utm_content")           \
    X(PAGE_PATH, "page_path")               \
    X(BROWSER, "browser")                   \
    X(OS, "os")                             \
    X(COUNTRY, "country")

typedef enum cf_enrich_col {
#define CF_ENRICH_ENUM_(id, name) CF_COL_##id,
    CF_ENRICH_COLUMNS(CF_ENRICH_ENUM_)
#undef CF_ENRICH_ENUM_
    CF_COL_COUNT
} cf_enrich_col;

/* Longest enrichment string packed (referrer and page_url's parts are
 * bounded by 2048 bytes already; User-Agent families are short). */
#define CF_ENRICH_COL_MAX 2048

/* The device column: none (unknown) or uap-core's class (cf_ua.h order + 1). */
typedef enum cf_event_device {
    CF_DEVICE_NONE = 0,
    CF_DEVICE_DESKTOP,
    CF_DEVICE_MOBILE,
    CF_DEVICE_TABLET,
    CF_DEVICE_BOT,
} cf_event_device;

/* The enrichment of an event (SPEC 15), computed once at ingest and packed
 * with the event (flag 0x10), so a replay reads the same values whatever
 * the User-Agent rules or GeoIP file are then. A zeroed struct is "nothing
 * known": every column NULL, is_bot false. Strings borrow like the other
 * fields and are not NUL-terminated. */
typedef struct cf_event_enrich {
    const char *col[CF_COL_COUNT];  /* NULL: the column is NULL */
    uint16_t len[CF_COL_COUNT];
    uint8_t device;                 /* cf_event_device */
    bool is_bot;
} cf_event_enrich;

/* "referrer", ... for a cf_enrich_col; "desktop", ... for a device (NULL
 * for CF_DEVICE_NONE or out of range). */
const char *cf_enrich_col_name(int col);
const char *cf_event_device_name(int device);

/* The name of an event without one (SPEC 2). */
#define CF_EVENT_DEFAULT_NAME "click"

/* A validated event. The string fields borrow memory from whatever they were
 * parsed from (the cJSON tree or the packed bytes) and are valid only as long
 * as that is; they are NOT NUL-terminated. Optional fields absent: ptr NULL,
 * len 0. `properties` is compact JSON text of the properties object, or NULL. */
typedef struct cf_event {
    int64_t ts;                 /* event time, epoch ms */
    const char *user_id;
    size_t user_id_len;
    const char *page_url;
    size_t page_url_len;
    const char *element;
    size_t element_len;
    const char *event_id;
    size_t event_id_len;
    const char *properties;     /* JSON text or NULL */
    size_t properties_len;
    const char *name;           /* NULL: the default, "click" (see cf_event_name) */
    size_t name_len;
    cf_event_enrich enrich;     /* zeroed: not enriched (packs as version 2) */
} cf_event;

typedef struct cf_event_limits {
    int64_t max_future_ms;      /* SPEC --max-future, default 60000 */
} cf_event_limits;

/* The event's name: ev->name, or "click" when it has none. Sets *ret_len. */
const char *cf_event_name(const cf_event *ev, size_t *ret_len);

/* Validates one JSON value as a click event per SPEC section 2.
 * - `now_ms` is the receive time: used when `timestamp` is absent, and for the
 *   max-future check (ts > now_ms + max_future_ms is rejected).
 * - `timestamp` may be an RFC 3339 string or an integral JSON number of epoch
 *   ms (checked with valuedouble: integral, 0 <= v <= 253402300799999); either
 *   form must fall in 1970-01-01T00:00:00Z .. 9999-12-31T23:59:59.999Z.
 * - Strings must be valid UTF-8 (no overlongs, no surrogates) within limits;
 *   user_id and page_url non-empty; `name` at most 256 bytes. Unknown fields
 *   are ignored.
 * - cJSON has already cut a string at an escaped U+0000 and let raw control
 *   bytes through, which no tree walk can see: callers check the raw text
 *   with cf_jsonscan (SPEC 2) before or beside this call.
 * - `properties`, when present, must be an object; it is printed compactly
 *   into `scratch` (appended; ret->properties points into scratch->data, so do
 *   not append to scratch again before you are done with *ret).
 * On success returns 0 and fills *ret (strings borrow from `obj`). On
 * rejection returns -EINVAL and sets *ret_reason to a static human-readable
 * string ("user_id is required", "timestamp is too far in the future", ...);
 * *ret is then unspecified. Thread-safe (uses no cJSON global state). */
int cf_event_from_json(const cJSON *obj, const cf_event_limits *lim, int64_t now_ms,
                       cf_buf *scratch, cf_event *ret, const char **ret_reason);

/* True if s[0..n) is valid UTF-8 (RFC 3629). */
bool cf_utf8_valid(const char *s, size_t n);

/* Appends the compact binary form of ev to out (fixed little-endian header
 * with lengths, then the bytes; docs/EVENT.md). A name equal to the default
 * "click" is packed as absent (the same meaning, and the form older readers
 * know); so is an enrichment with nothing in it (version 3 adds the block,
 * flag 0x10, only when a column is known). Returns the number of bytes
 * appended, -EINVAL if ev breaks the limits above (empty user_id/page_url, a
 * field or enrichment column too long, an empty event_id), or -ENOMEM
 * (out->oom). No allocation beyond out. */
int cf_event_pack(const cf_event *ev, cf_buf *out);

/* Reads one packed event from r; the strings of *ret point into the reader's
 * input. Returns 0, or -EINVAL if the bytes are truncated or malformed
 * (framing and length limits are checked, UTF-8 content is not); *ret is
 * untouched on failure. */
int cf_event_unpack(cf_reader *r, cf_event *ret);

#endif
