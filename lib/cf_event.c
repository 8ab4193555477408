/* cf_event: validation of click events (SPEC section 2) and their compact
 * binary form.
 *
 * Both run on the ingest hot path (once per event, next to cJSON's parse),
 * so neither allocates: validation borrows strings from the cJSON tree and
 * prints `properties` into the caller's scratch buffer, pack appends to the
 * caller's cf_buf, unpack points into the input. */
#include "cf_event.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "cf_jsonnum.h"
#include "cf_time.h"

/* Accepted timestamps: 1970-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z.
 * Below 0 nothing real happens in a click stream; the upper bound is the
 * largest a 4-digit RFC 3339 year can say, and keeps every value exact in a
 * double (< 2^53) and far from int64 overflow in window arithmetic. */
#define TS_MIN INT64_C(0)
#define TS_MAX INT64_C(253402300799999)

#define DEFAULT_MAX_FUTURE_MS INT64_C(60000)

/* Pack flags: which optional fields are present (an empty `element` is kept
 * distinct from an absent one). */
#define F_ELEMENT 0x01u
#define F_EVENT_ID 0x02u
#define F_PROPERTIES 0x04u
/* Packed form version 2: a name other than "click". A u16 name length
 * follows the fixed header and the name bytes come last, so version 1
 * records (no such flag) read as before; a version 1 reader refuses the
 * flag rather than misreading the record. */
#define F_NAME 0x08u
/* Packed form version 3: the enrichment block (SPEC 15) after the name
 * bytes: u16 mask, a u16 length per present string column, the strings.
 * Mask bits 0..10: string column i present (cf_enrich_col order); bits
 * 11..13: the device (cf_event_device); bit 14: is_bot; bit 15: page_path
 * is page_url whole (the common relative URL "/x" costs no bytes). */
#define F_ENRICH 0x10u
#define F_ALL (F_ELEMENT | F_EVENT_ID | F_PROPERTIES | F_NAME | F_ENRICH)

#define EM_DEVICE_SHIFT 11u
#define EM_DEVICE_MASK (7u << EM_DEVICE_SHIFT)
#define EM_BOT (1u << 14)
#define EM_PATH_IS_URL (1u << 15)
#define EM_COLS ((1u << CF_COL_COUNT) - 1u)

/* ts(8) flags(1) 4 x u16 lengths, u32 properties length. */
#define PACK_HEADER 21u
#define PACK_NAME_LEN 2u    /* the u16 name length, with F_NAME only */

static const char default_name[] = CF_EVENT_DEFAULT_NAME;

static const char *const col_names[CF_COL_COUNT] = {
#define COL_NAME_(id, name) name,
    CF_ENRICH_COLUMNS(COL_NAME_)
#undef COL_NAME_
};

const char *cf_enrich_col_name(int col)
{
    return col >= 0 && col < CF_COL_COUNT ? col_names[col] : NULL;
}

const char *cf_event_device_name(int device)
{
    static const char *const names[] = {NULL, "desktop", "mobile", "tablet", "bot"};
    return device > 0 && device < (int)(sizeof names / sizeof names[0]) ? names[device] : NULL;
}

const char *cf_event_name(const cf_event *ev, size_t *ret_len)
{
    if (ev->name) {
        *ret_len = ev->name_len;
        return ev->name;
    }
    *ret_len = sizeof default_name - 1;
    return default_name;
}

/* True when ev has a name to pack: present and not the default. */
static bool has_own_name(const cf_event *ev)
{
    return ev->name && !(ev->name_len == sizeof default_name - 1 &&
                         memcmp(ev->name, default_name, ev->name_len) == 0);
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* RFC 3629 table 4 (well-formed byte sequences), checked byte by byte for
 * non-ASCII input; ASCII runs are skipped 8 bytes at a time, since almost
 * every id and URL is pure ASCII. O(n). */
bool cf_utf8_valid(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & UINT64_C(0x8080808080808080))
                break;
            i += 8;
        }
        if (i >= n)
            break;
        unsigned char c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the 2nd byte */
        if (c >= 0xc2 && c <= 0xdf) {
            len = 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3;
            if (c == 0xe0)
                lo = 0xa0;      /* overlong */
            else if (c == 0xed)
                hi = 0x9f;      /* surrogates U+D800..U+DFFF */
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4;
            if (c == 0xf0)
                lo = 0x90;      /* overlong */
            else if (c == 0xf4)
                hi = 0x8f;      /* above U+10FFFF */
        } else {
            return false;       /* 0x80..0xc1 (continuation, overlong), 0xf5.. */
        }
        if (n - i < len)
            return false;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return false;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
        i += len;
    }
    return true;
}

/* ---- validation ---------------------------------------------------------- */

/* Checks a string field: a JSON string of min..max bytes of valid UTF-8. */
static bool string_field(const cJSON *item, size_t min, size_t max, const char **ret_s,
                         size_t *ret_n)
{
    if (!cJSON_IsString(item) || !item->valuestring)
        return false;
    const char *s = item->valuestring;
    /* strnlen: stop early on absurd lengths instead of scanning them all. */
    size_t n = strnlen(s, max + 1);
    if (n < min || n > max || !cf_utf8_valid(s, n))
        return false;
    *ret_s = s;
    *ret_n = n;
    return true;
}

static int parse_timestamp(const cJSON *item, int64_t *ret_ts, const char **ret_reason)
{
    int64_t ts;
    if (cJSON_IsString(item) && item->valuestring) {
        const char *s = item->valuestring;
        /* The longest sensible RFC 3339 text is short; a fraction of any
         * length is allowed, so only bound the scan (fields <= 64 KiB). */
        size_t n = strnlen(s, 65536);
        if (cf_rfc3339_parse(s, n, &ts) < 0) {
            *ret_reason = "timestamp must be an RFC 3339 date-time or integer epoch milliseconds";
            return -EINVAL;
        }
    } else if (cJSON_IsNumber(item)) {
        /* valueint saturates at INT_MAX; the double is exact up to 2^53,
         * which covers the whole accepted range. */
        double v = item->valuedouble;
        if (!(v >= (double)TS_MIN && v <= (double)TS_MAX)) {  /* also NaN */
            *ret_reason = "timestamp is out of range (1970-01-01 to 9999-12-31)";
            return -EINVAL;
        }
        if (v != floor(v)) {
            *ret_reason = "timestamp in epoch milliseconds must be an integer";
            return -EINVAL;
        }
        ts = (int64_t)v;
    } else {
        *ret_reason = "timestamp must be an RFC 3339 date-time or integer epoch milliseconds";
        return -EINVAL;
    }
    if (ts < TS_MIN || ts > TS_MAX) {
        *ret_reason = "timestamp is out of range (1970-01-01 to 9999-12-31)";
        return -EINVAL;
    }
    *ret_ts = ts;
    return 0;
}

/* Prints obj compactly at the end of scratch, every number exact
 * (cf_jsonnum.h: cJSON's own printer writes 9007199254740991 as
 * 9.00719925474099e+15). Returns 0, -ERANGE for a number beyond the range
 * of a double, or -ENOMEM. */
static int print_properties(const cJSON *obj, cf_buf *scratch, const char **ret_s,
                            size_t *ret_n)
{
    size_t start = scratch->len;
    int rc = cf_json_print_exact_to(obj, scratch);
    if (rc < 0) {
        scratch->len = start;
        return rc == -ERANGE ? -ERANGE : -ENOMEM;
    }
    *ret_s = (const char *)scratch->data + start;
    *ret_n = scratch->len - start;
    return 0;
}

/* One pass over the object's members instead of one
 * cJSON_GetObjectItemCaseSensitive() per field (each a linear scan): same
 * result (keys compared case-sensitively, the first of duplicate keys wins),
 * a sixth of the string compares on the hot path. */
int cf_event_from_json(const cJSON *obj, const cf_event_limits *lim, int64_t now_ms,
                       cf_buf *scratch, cf_event *ret, const char **ret_reason)
{
    const char *unused_reason;
    if (!ret_reason)
        ret_reason = &unused_reason;
    if (!ret || !scratch) {
        *ret_reason = "internal error";
        return -EINVAL;
    }
    if (!cJSON_IsObject(obj)) {
        *ret_reason = "event must be a JSON object";
        return -EINVAL;
    }

    const cJSON *f_user = NULL, *f_page = NULL, *f_elem = NULL, *f_ts = NULL, *f_id = NULL,
                *f_props = NULL, *f_name = NULL;
    for (const cJSON *c = obj->child; c; c = c->next) {
        const char *k = c->string;
        if (!k)
            continue;
        const cJSON **slot = NULL;
        switch (k[0]) {
        case 'u': if (strcmp(k, "user_id") == 0) slot = &f_user; break;
        case 'p':
            if (strcmp(k, "page_url") == 0)
                slot = &f_page;
            else if (strcmp(k, "properties") == 0)
                slot = &f_props;
            break;
        case 'e':
            if (strcmp(k, "element") == 0)
                slot = &f_elem;
            else if (strcmp(k, "event_id") == 0)
                slot = &f_id;
            break;
        case 't': if (strcmp(k, "timestamp") == 0) slot = &f_ts; break;
        case 'n': if (strcmp(k, "name") == 0) slot = &f_name; break;
        default: break;
        }
        if (slot && !*slot)
            *slot = c;
    }
    /* An optional field set to null means "absent", as JSON producers often
     * write it (JavaScript's undefined-to-null, ORMs); required fields must
     * still be strings. */
    if (f_elem && cJSON_IsNull(f_elem))
        f_elem = NULL;
    if (f_id && cJSON_IsNull(f_id))
        f_id = NULL;
    if (f_ts && cJSON_IsNull(f_ts))
        f_ts = NULL;
    if (f_props && cJSON_IsNull(f_props))
        f_props = NULL;
    if (f_name && cJSON_IsNull(f_name))
        f_name = NULL;

    cf_event ev = {0};
    if (!f_user) {
        *ret_reason = "user_id is required";
        return -EINVAL;
    }
    if (!string_field(f_user, 1, CF_USER_ID_MAX, &ev.user_id, &ev.user_id_len)) {
        *ret_reason = "user_id must be a string of 1 to 256 bytes of valid UTF-8";
        return -EINVAL;
    }
    if (!f_page) {
        *ret_reason = "page_url is required";
        return -EINVAL;
    }
    if (!string_field(f_page, 1, CF_PAGE_URL_MAX, &ev.page_url, &ev.page_url_len)) {
        *ret_reason = "page_url must be a string of 1 to 2048 bytes of valid UTF-8";
        return -EINVAL;
    }
    if (f_elem && !string_field(f_elem, 0, CF_ELEMENT_MAX, &ev.element, &ev.element_len)) {
        *ret_reason = "element must be a string of at most 256 bytes of valid UTF-8";
        return -EINVAL;
    }
    if (f_id && !string_field(f_id, 1, CF_EVENT_ID_MAX, &ev.event_id, &ev.event_id_len)) {
        *ret_reason = "event_id must be a string of 1 to 128 bytes of valid UTF-8";
        return -EINVAL;
    }
    if (f_name && !string_field(f_name, 0, CF_NAME_MAX, &ev.name, &ev.name_len)) {
        *ret_reason = "name must be a string of at most 256 bytes of valid UTF-8";
        return -EINVAL;
    }

    if (f_ts) {
        if (parse_timestamp(f_ts, &ev.ts, ret_reason) < 0)
            return -EINVAL;
        int64_t max_future = lim ? lim->max_future_ms : DEFAULT_MAX_FUTURE_MS;
        if (max_future < 0)
            max_future = 0;
        /* now_ms + max_future saturates instead of overflowing. */
        int64_t limit = now_ms > INT64_MAX - max_future ? INT64_MAX : now_ms + max_future;
        if (ev.ts > limit) {
            *ret_reason = "timestamp is too far in the future";
            return -EINVAL;
        }
    } else {
        ev.ts = now_ms;
    }

    if (f_props) {
        if (!cJSON_IsObject(f_props)) {
            *ret_reason = "properties must be an object";
            return -EINVAL;
        }
        int rc = print_properties(f_props, scratch, &ev.properties, &ev.properties_len);
        if (rc == -ERANGE) {
            /* Kept as null it would change what the sender wrote. */
            *ret_reason = "properties must not hold a number beyond the range of a double (such as 1e400)";
            return -EINVAL;
        }
        if (rc < 0) {
            *ret_reason = "out of memory";
            return -ENOMEM;
        }
    }

    *ret = ev;
    return 0;
}

/* ---- binary form --------------------------------------------------------- */

/* Layout (little-endian):
 *   i64 ts | u8 flags | u16 user_id_len | u16 page_url_len | u16 element_len
 *   | u16 event_id_len | u32 properties_len | the bytes, in that order.
 * This is the encoding cf_buf_put_i64/u16/u32 produce, but the header is
 * written in one go after a single cf_buf_reserve(): this runs once per event
 * on the ingest path, and a put_* call per field costs several times more.
 * O(size of the event). */
static void le16(uint8_t *p, size_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void le32(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static size_t rd16(const uint8_t *p) { return (size_t)p[0] | (size_t)p[1] << 8; }

static size_t rd32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

static uint64_t rd64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

static uint8_t *put_bytes(uint8_t *dst, const char *s, size_t n)
{
    if (n)
        memcpy(dst, s, n);
    return dst + n;
}

/* The bytes of ev's enrichment block and its mask (0: no block), or
 * SIZE_MAX when a column breaks the limits. */
static size_t enrich_size(const cf_event *ev, unsigned *ret_mask)
{
    const cf_event_enrich *en = &ev->enrich;
    unsigned mask = 0;
    size_t n = 0;
    for (int i = 0; i < CF_COL_COUNT; i++) {
        if (!en->col[i])
            continue;
        if (en->len[i] > CF_ENRICH_COL_MAX)
            return SIZE_MAX;
        if (i == CF_COL_PAGE_PATH && en->len[i] == ev->page_url_len &&
            memcmp(en->col[i], ev->page_url, ev->page_url_len) == 0) {
            mask |= EM_PATH_IS_URL;
            continue;
        }
        mask |= 1u << i;
        n += 2 + en->len[i];
    }
    if (en->device > CF_DEVICE_BOT)
        return SIZE_MAX;
    mask |= (unsigned)en->device << EM_DEVICE_SHIFT;
    if (en->is_bot)
        mask |= EM_BOT;
    *ret_mask = mask;
    return mask ? 2 + n : 0;
}

static void put_enrich(uint8_t *p, const cf_event_enrich *en, unsigned mask)
{
    le16(p, mask);
    p += 2;
    for (int i = 0; i < CF_COL_COUNT; i++)
        if (mask & (1u << i)) {
            le16(p, en->len[i]);
            p += 2;
        }
    for (int i = 0; i < CF_COL_COUNT; i++)
        if (mask & (1u << i))
            p = put_bytes(p, en->col[i], en->len[i]);
}

/* Reads the enrichment block at r (after the other bytes of the event).
 * page_url is the event's, for bit 15. 0 or -EINVAL (r->bad set). */
static int get_enrich(cf_reader *r, const char *page_url, size_t page_url_len, cf_event_enrich *ret)
{
    uint8_t h[2];
    if (!cf_get(r, h, sizeof h)) {
        r->bad = true;
        return -EINVAL;
    }
    unsigned mask = (unsigned)rd16(h);
    unsigned device = (mask & EM_DEVICE_MASK) >> EM_DEVICE_SHIFT;
    if (mask == 0 || device > CF_DEVICE_BOT ||
        ((mask & EM_PATH_IS_URL) && (mask & (1u << CF_COL_PAGE_PATH)))) {
        r->bad = true;
        return -EINVAL;
    }
    size_t lens[CF_COL_COUNT] = {0}, body = 0;
    for (int i = 0; i < CF_COL_COUNT; i++) {
        if (!(mask & (1u << i)))
            continue;
        if (!cf_get(r, h, sizeof h) || rd16(h) > CF_ENRICH_COL_MAX) {
            r->bad = true;
            return -EINVAL;
        }
        lens[i] = rd16(h);
        body += lens[i];
    }
    if (body > r->left) {
        r->bad = true;
        return -EINVAL;
    }
    /* *ret is written only now, once the block checked out (unpack fills
     * its caller's event in place and leaves it untouched on failure). */
    memset(ret, 0, sizeof *ret);
    const char *p = (const char *)r->p;
    for (int i = 0; i < CF_COL_COUNT; i++) {
        if (!(mask & (1u << i)))
            continue;
        ret->col[i] = p;
        ret->len[i] = (uint16_t)lens[i];
        p += lens[i];
    }
    if (mask & EM_PATH_IS_URL) {
        ret->col[CF_COL_PAGE_PATH] = page_url;
        ret->len[CF_COL_PAGE_PATH] = (uint16_t)page_url_len;
    }
    ret->device = (uint8_t)device;
    ret->is_bot = (mask & EM_BOT) != 0;
    r->p += body;
    r->left -= body;
    return 0;
}

int cf_event_pack(const cf_event *ev, cf_buf *out)
{
    if (!ev || !out)
        return -EINVAL;
    if (ev->user_id_len < 1 || ev->user_id_len > CF_USER_ID_MAX || !ev->user_id ||
        ev->page_url_len < 1 || ev->page_url_len > CF_PAGE_URL_MAX || !ev->page_url ||
        ev->element_len > CF_ELEMENT_MAX || (ev->element_len && !ev->element) ||
        ev->event_id_len > CF_EVENT_ID_MAX || (ev->event_id && ev->event_id_len == 0) ||
        (ev->event_id_len && !ev->event_id) ||
        ev->properties_len > UINT32_MAX || (ev->properties_len && !ev->properties) ||
        ev->name_len > CF_NAME_MAX || (ev->name_len && !ev->name))
        return -EINVAL;
    bool named = has_own_name(ev);
    unsigned mask = 0;
    size_t enrich = enrich_size(ev, &mask);
    if (enrich == SIZE_MAX)
        return -EINVAL;
    size_t total = PACK_HEADER + ev->user_id_len + ev->page_url_len + ev->element_len +
                   ev->event_id_len + ev->properties_len +
                   (named ? PACK_NAME_LEN + ev->name_len : 0) + enrich;
    if (total > INT_MAX)
        return -EINVAL;
    if (cf_buf_reserve(out, total) < 0)
        return -ENOMEM;

    uint8_t *p = out->data + out->len;
    le64(p, (uint64_t)ev->ts);
    p[8] = (uint8_t)((ev->element ? F_ELEMENT : 0) | (ev->event_id ? F_EVENT_ID : 0) |
                     (ev->properties ? F_PROPERTIES : 0) | (named ? F_NAME : 0) |
                     (mask ? F_ENRICH : 0));
    le16(p + 9, ev->user_id_len);
    le16(p + 11, ev->page_url_len);
    le16(p + 13, ev->element_len);
    le16(p + 15, ev->event_id_len);
    le32(p + 17, ev->properties_len);
    p += PACK_HEADER;
    if (named) {
        le16(p, ev->name_len);
        p += PACK_NAME_LEN;
    }
    p = put_bytes(p, ev->user_id, ev->user_id_len);
    p = put_bytes(p, ev->page_url, ev->page_url_len);
    p = put_bytes(p, ev->element, ev->element_len);
    p = put_bytes(p, ev->event_id, ev->event_id_len);
    p = put_bytes(p, ev->properties, ev->properties_len);
    if (named)
        p = put_bytes(p, ev->name, ev->name_len);
    if (mask)
        put_enrich(p, &ev->enrich, mask);
    out->len += total;
    return (int)total;
}

/* Checks framing and the limits pack enforces (so a corrupt length can
 * never make a consumer read past the record), not the UTF-8 content: the
 * bytes were validated before they were packed, and WAL records carry their
 * own checksum. O(1): nothing is copied but the 21-byte header (and the
 * name length). */
int cf_event_unpack(cf_reader *r, cf_event *ret)
{
    if (!r || !ret)
        return -EINVAL;
    /* The header read in place: a 21-byte cf_get was a memcpy call per
     * event, and the shards and the replay's decoder unpack every event
     * (issue 15, R1). */
    if (r->bad || r->left < PACK_HEADER) {
        r->bad = true;
        return -EINVAL;
    }
    const uint8_t *h = r->p;
    r->p += PACK_HEADER;
    r->left -= PACK_HEADER;
    unsigned flags = h[8];
    size_t ul = rd16(h + 9), pl = rd16(h + 11), el = rd16(h + 13), il = rd16(h + 15);
    size_t prl = rd32(h + 17);
    size_t nl = 0;
    if (flags & F_NAME) {
        uint8_t nh[PACK_NAME_LEN];
        if (!cf_get(r, nh, sizeof nh))
            return -EINVAL;
        nl = rd16(nh);
    }
    /* Each length is below 2^32, so the sum cannot wrap a size_t. */
    size_t body = ul + pl + el + il + prl + nl;
    if ((flags & ~F_ALL) || ul < 1 || ul > CF_USER_ID_MAX || pl < 1 || pl > CF_PAGE_URL_MAX ||
        el > CF_ELEMENT_MAX || il > CF_EVENT_ID_MAX || (el && !(flags & F_ELEMENT)) ||
        (!il != !(flags & F_EVENT_ID)) || (prl && !(flags & F_PROPERTIES)) ||
        nl > CF_NAME_MAX || body > r->left) {
        r->bad = true;
        return -EINVAL;
    }
    /* The event is written in place, field by field, once everything checked
     * out: building it in a local and copying it out (*ret = ev) reloaded
     * the narrow stores just made with wide loads, which cannot be forwarded
     * (a store-forwarding stall per event; perf annotate under S2). */
    const char *p = (const char *)r->p;
    cf_reader rest = *r;
    rest.p += body;
    rest.left -= body;
    const char *url = p + ul;
    if (flags & F_ENRICH) {
        /* Fills ret->enrich only on success. */
        if (get_enrich(&rest, url, pl, &ret->enrich) < 0) {
            r->bad = true;
            return -EINVAL;
        }
    } else {
        memset(&ret->enrich, 0, sizeof ret->enrich);
    }
    ret->ts = (int64_t)rd64(h);
    ret->user_id = p;
    ret->user_id_len = ul;
    p += ul;
    ret->page_url = p;
    ret->page_url_len = pl;
    p += pl;
    ret->element = (flags & F_ELEMENT) ? p : NULL;
    ret->element_len = el;
    p += el;
    ret->event_id = (flags & F_EVENT_ID) ? p : NULL;
    ret->event_id_len = il;
    p += il;
    ret->properties = (flags & F_PROPERTIES) ? p : NULL;
    ret->properties_len = prl;
    p += prl;
    ret->name = (flags & F_NAME) ? p : NULL;
    ret->name_len = nl;
    /* The reader moves only once the whole event checked out. */
    r->p = rest.p;
    r->left = rest.left;
    return 0;
}
