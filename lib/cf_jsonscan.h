/* cf_jsonscan: a byte-level check of JSON text for what cJSON 1.7.15 lets
 * through but the event contract forbids (SPEC 2, DEPENDENCY-NOTES.md):
 *
 * - a `\u0000` escape in a string (a value or a key, at any depth): cJSON
 *   decodes it into a NUL that silently cuts the C string, so
 *   "a\u0000b" would be counted as "a";
 * - a raw control byte 0x00-0x1F inside a string, which JSON forbids;
 * - a raw control byte outside strings other than the JSON whitespace
 *   \t \n \r (cJSON skips every byte <= 0x20 as whitespace).
 *
 * After cJSON's parse an escaped `\u0001` and a raw 0x01 look the same, so
 * this runs on the bytes, beside the parse. It does not validate the rest of
 * the grammar (the parser does that); on text that is not JSON its findings
 * are unspecified but its reads stay within the input. */
#ifndef CF_JSONSCAN_H
#define CF_JSONSCAN_H

#include <stddef.h>

/* A finding that lies outside every top-level element: before or after the
 * root value, or between the elements of a root array. */
#define CF_JSONSCAN_OUTSIDE ((size_t)-1)

typedef enum cf_jsonscan_kind {
    CF_JSONSCAN_NUL_ESCAPE = 1,     /* \u0000 in a string */
    CF_JSONSCAN_RAW_CONTROL = 2,    /* raw 0x00-0x1F in a string, or a non-whitespace one outside */
} cf_jsonscan_kind;

/* Called once per top-level element with a finding (its first one), in
 * increasing element order; element is CF_JSONSCAN_OUTSIDE for a finding
 * outside every element (reported once). */
typedef void (*cf_jsonscan_fn)(void *ctx, size_t element, cf_jsonscan_kind kind);

/* Scans p[0..n). When the root value is an array, element i is its i-th
 * element (0-based); otherwise the whole root value is element 0. Calls fn
 * for each element holding a finding. Returns the number of calls. Pure,
 * O(n), no allocation. */
size_t cf_jsonscan(const char *p, size_t n, cf_jsonscan_fn fn, void *ctx);

/* The per-event rejection reason for a kind (static text). */
const char *cf_jsonscan_reason(cf_jsonscan_kind kind);

#endif
