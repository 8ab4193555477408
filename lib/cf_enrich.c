#include "cf_enrich.h"

#include <errno.h>
#include <string.h>

#include "cf_event.h"

static const char *const UTM_NAMES[CF_UTM_COUNT] = {
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content",
};

const char *cf_enrich_utm_name(int i)
{
    return i >= 0 && i < CF_UTM_COUNT ? UTM_NAMES[i] : NULL;
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* Length of the authority's start: how many bytes of s[0..n) are
 * "scheme://" (RFC 3986 scheme) or "//"; 0 if s is not absolute in that
 * sense. */
static size_t authority_start(const char *s, size_t n)
{
    if (n >= 2 && s[0] == '/' && s[1] == '/')
        return 2;
    if (n == 0 || !is_alpha(s[0]))
        return 0;
    size_t i = 1;
    while (i < n && (is_alpha(s[i]) || is_digit(s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.'))
        i++;
    if (i + 2 < n && s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/')
        return i + 3;
    return 0;
}

/* End of the authority that starts at `from`: the first '/', '?' or '#'. */
static size_t authority_end(const char *s, size_t n, size_t from)
{
    size_t i = from;
    while (i < n && s[i] != '/' && s[i] != '?' && s[i] != '#')
        i++;
    return i;
}

/* Usable as a referrer: non-empty, short enough, UTF-8 without NUL. */
static bool referrer_ok(const char *s, size_t n)
{
    return s && n > 0 && n <= CF_ENRICH_MAX && !memchr(s, 0, n) && cf_utf8_valid(s, n);
}

static int hex_val(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Appends the form-decoded s[0..n) to b ('+' is a space, %XX a byte, a
 * lone '%' stays). */
static void put_decoded(cf_buf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (s[i] == '%' && i + 2 < n && (hi = hex_val(s[i + 1])) >= 0 && (lo = hex_val(s[i + 2])) >= 0) {
            cf_buf_put_u8(b, (uint8_t)(hi * 16 + lo));
            i += 2;
        } else {
            cf_buf_put_u8(b, s[i] == '+' ? ' ' : (uint8_t)s[i]);
        }
    }
}

/* Offsets of a string in scratch while building (pointers are made at the
 * end, once nothing moves). */
typedef struct span {
    size_t off, len;
    bool present;
} span;

/* Appends s[0..n) and a NUL; the span of it. */
static span put_copy(cf_buf *b, const char *s, size_t n)
{
    span sp = {b->len, n, true};
    cf_buf_put(b, s, n);
    cf_buf_put_u8(b, 0);
    return sp;
}

/* The utm_* tags of the query q[0..n). */
static void scan_query(cf_buf *b, const char *q, size_t n, span utm[CF_UTM_COUNT])
{
    size_t i = 0;
    while (i < n) {
        size_t end = i;
        while (end < n && q[end] != '&')
            end++;
        const char *eq = memchr(q + i, '=', end - i);
        if (eq) {
            /* Decode the name in place at the end of scratch, compare, drop. */
            size_t mark = b->len;
            put_decoded(b, q + i, (size_t)(eq - (q + i)));
            int which = -1;
            for (int k = 0; k < CF_UTM_COUNT && !b->oom; k++) {
                size_t ln = strlen(UTM_NAMES[k]);
                if (b->len - mark == ln && memcmp(b->data + mark, UTM_NAMES[k], ln) == 0)
                    which = k;
            }
            b->len = mark;
            if (which >= 0 && !utm[which].present) {
                put_decoded(b, eq + 1, (size_t)(q + end - (eq + 1)));
                size_t vlen = b->len - mark;
                if (!b->oom && vlen > 0 && !memchr(b->data + mark, 0, vlen) &&
                    cf_utf8_valid((const char *)b->data + mark, vlen)) {
                    cf_buf_put_u8(b, 0);
                    utm[which] = (span){mark, vlen, true};
                } else {
                    b->len = mark;
                }
            }
        }
        i = end + 1;
    }
}

static cf_enrich_str str_of(const cf_buf *b, span sp)
{
    if (!sp.present)
        return (cf_enrich_str){NULL, 0};
    return (cf_enrich_str){(const char *)b->data + sp.off, sp.len};
}

int cf_enrich_compute(const char *page_url, size_t page_url_len, const char *referrer_field,
                      size_t referrer_field_len, const char *referer_header, size_t referer_header_len,
                      cf_buf *scratch, cf_enrich *ret)
{
    if (!page_url)
        page_url = "", page_url_len = 0;
    const char *ref = NULL;
    size_t ref_len = 0;
    if (referrer_ok(referrer_field, referrer_field_len)) {
        ref = referrer_field;
        ref_len = referrer_field_len;
    } else if (referrer_ok(referer_header, referer_header_len)) {
        ref = referer_header;
        ref_len = referer_header_len;
    }
    /* Every string below is at most as long as its source, plus a NUL:
     * path and utm values <= page_url, referrer and host <= ref, "/" +1. */
    size_t start = scratch->len;
    if (cf_buf_reserve(scratch, 2 * page_url_len + 2 * ref_len + 16) < 0)
        return -ENOMEM;

    span s_ref = {0, 0, false}, s_host = {0, 0, false}, s_path = {0, 0, false};
    span utm[CF_UTM_COUNT] = {{0, 0, false}};
    if (ref) {
        s_ref = put_copy(scratch, ref, ref_len);
        size_t a = authority_start(ref, ref_len);
        if (a > 0) {
            size_t e = authority_end(ref, ref_len, a);
            const char *at = NULL;
            for (size_t i = a; i < e; i++) {
                if (ref[i] == '@')
                    at = ref + i;
            }
            size_t h = at ? (size_t)(at - ref) + 1 : a;
            size_t he = h;
            if (he < e && ref[he] == '[') {
                while (he < e && ref[he] != ']')
                    he++;
                he = he < e ? he + 1 : e;
            } else {
                while (he < e && ref[he] != ':')
                    he++;
            }
            if (he > h) {
                s_host = put_copy(scratch, ref + h, he - h);
                for (size_t i = 0; i < s_host.len && !scratch->oom; i++) {
                    uint8_t *c = &scratch->data[s_host.off + i];
                    if (*c >= 'A' && *c <= 'Z')
                        *c = (uint8_t)(*c - 'A' + 'a');
                }
            }
        }
    }

    size_t a = authority_start(page_url, page_url_len);
    size_t p = a > 0 ? authority_end(page_url, page_url_len, a) : 0;
    size_t pe = p;
    while (pe < page_url_len && page_url[pe] != '?' && page_url[pe] != '#')
        pe++;
    if (pe > p)
        s_path = put_copy(scratch, page_url + p, pe - p);
    else if (a > 0)
        s_path = put_copy(scratch, "/", 1);
    if (pe < page_url_len && page_url[pe] == '?') {
        size_t qe = pe + 1;
        while (qe < page_url_len && page_url[qe] != '#')
            qe++;
        scan_query(scratch, page_url + pe + 1, qe - pe - 1, utm);
    }
    if (scratch->oom) {
        scratch->len = start;
        return -ENOMEM;
    }
    ret->referrer = str_of(scratch, s_ref);
    ret->referrer_host = str_of(scratch, s_host);
    for (int k = 0; k < CF_UTM_COUNT; k++)
        ret->utm[k] = str_of(scratch, utm[k]);
    ret->page_path = str_of(scratch, s_path);
    return 0;
}
