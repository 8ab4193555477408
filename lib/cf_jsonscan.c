/* cf_jsonscan: see cf_jsonscan.h. One pass over the bytes with a tiny
 * state machine (inside or outside a string, nesting depth, index of the
 * top-level element). String contents, most of an event's bytes, are
 * skipped 8 bytes at a time while a word holds no quote, backslash or
 * control byte: the scan runs beside cJSON's parse on the ingest hot path. */
#include "cf_jsonscan.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#define ONES UINT64_C(0x0101010101010101)
#define HIGHS UINT64_C(0x8080808080808080)

/* Nonzero when some byte of w is zero (exact: the classic haszero). */
static uint64_t has_zero(uint64_t w) { return (w - ONES) & ~w & HIGHS; }

/* Nonzero when some byte of w is a quote, a backslash or below 0x20. */
static bool word_is_special(uint64_t w)
{
    uint64_t below = (w - ONES * 0x20) & ~w & HIGHS; /* some byte < 0x20 (exact as a test) */
    return (below | has_zero(w ^ (ONES * '"')) | has_zero(w ^ (ONES * '\\'))) != 0;
}

/* True when p[0..n) holds no byte below 0x20 and no backslash: then it can
 * hold neither a raw control byte nor any escape, \u0000 included. Compact
 * JSON from most clients is like that, and this check runs at several GB/s
 * (8 bytes per step) where the state machine below manages a few hundred
 * MB/s on short strings. */
static bool plain(const unsigned char *p, size_t n)
{
    size_t i = 0;
    uint64_t acc = 0;
    for (; n - i >= 32; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, sizeof w);
        for (int k = 0; k < 4; k++)
            acc |= ((w[k] - ONES * 0x20) & ~w[k] & HIGHS) | has_zero(w[k] ^ (ONES * '\\'));
        if (acc)
            return false;
    }
    for (; i < n; i++)
        if (p[i] < 0x20 || p[i] == '\\')
            return false;
    return true;
}

static bool is_hex(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

typedef struct scan {
    cf_jsonscan_fn fn;
    void *ctx;
    size_t calls;
    size_t last;            /* element last reported, CF_JSONSCAN_OUTSIDE if none */
    bool outside_done;
} scan;

static void report(scan *s, size_t element, cf_jsonscan_kind kind)
{
    if (element == CF_JSONSCAN_OUTSIDE) {
        if (s->outside_done)
            return;
        s->outside_done = true;
    } else {
        if (element == s->last)
            return;
        s->last = element;
    }
    s->calls++;
    if (s->fn)
        s->fn(s->ctx, element, kind);
}

const char *cf_jsonscan_reason(cf_jsonscan_kind kind)
{
    return kind == CF_JSONSCAN_NUL_ESCAPE
               ? "strings must not contain U+0000 (\\u0000)"
               : "raw control characters (bytes 0x00-0x1F) are not allowed: escape them in "
                 "strings";
}

size_t cf_jsonscan(const char *text, size_t n, cf_jsonscan_fn fn, void *ctx)
{
    const unsigned char *p = (const unsigned char *)text;
    if (plain(p, n))
        return 0;
    scan s = {.fn = fn, .ctx = ctx, .last = CF_JSONSCAN_OUTSIDE};
    bool root_seen = false, root_array = false;
    size_t depth = 0, elem = 0;
    size_t i = 0;
    while (i < n) {
        unsigned char c = p[i];
        if (c == '"') {
            /* A string: its findings belong to the element it is in. At
             * depth 0 it is the root value itself (element 0). */
            if (!root_seen) {
                root_seen = true;
                root_array = false;
            }
            size_t owner = root_array ? elem : 0;
            i++;
            for (;;) {
                while (n - i >= 8) {
                    uint64_t w;
                    memcpy(&w, p + i, 8);
                    if (word_is_special(w))
                        break;
                    i += 8;
                }
                if (i >= n)
                    break;
                unsigned char d = p[i];
                if (d == '"') {
                    i++;
                    break;
                }
                if (d < 0x20) {
                    report(&s, owner, CF_JSONSCAN_RAW_CONTROL);
                    i++;
                } else if (d == '\\') {
                    if (i + 1 >= n) {
                        i++;
                        break;
                    }
                    unsigned char q = p[i + 1];
                    if (q < 0x20) {
                        report(&s, owner, CF_JSONSCAN_RAW_CONTROL);
                        i += 2;
                    } else if (q == 'u' && n - i >= 6 && is_hex(p[i + 2]) && is_hex(p[i + 3]) &&
                               is_hex(p[i + 4]) && is_hex(p[i + 5])) {
                        if (memcmp(p + i + 2, "0000", 4) == 0)
                            report(&s, owner, CF_JSONSCAN_NUL_ESCAPE);
                        i += 6;
                    } else {
                        i += 2;     /* \" \\ \/ \b \f \n \r \t (or bad: the parser says) */
                    }
                } else {
                    i++;
                }
            }
            continue;
        }
        if (c == '[' || c == '{') {
            if (!root_seen) {
                root_seen = true;
                root_array = c == '[';
            }
            depth++;
        } else if (c == ']' || c == '}') {
            if (depth > 0)
                depth--;
        } else if (c == ',') {
            if (root_array && depth == 1)
                elem++;
        } else if (c < 0x20 && c != '\t' && c != '\n' && c != '\r') {
            /* Not JSON whitespace. Inside an element it is that element's
             * fault; around the root or between elements, nobody's. */
            bool inside = root_array ? depth >= 2 : depth >= 1;
            report(&s, inside ? (root_array ? elem : 0) : CF_JSONSCAN_OUTSIDE,
                   CF_JSONSCAN_RAW_CONTROL);
        } else if (!root_seen && c > ' ') {
            root_seen = true;   /* a scalar root */
        }
        i++;
    }
    return s.calls;
}
