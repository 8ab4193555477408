/* cf_jsonnum: numbers printed exactly, alone and in cJSON trees.
 *
 * cJSON 1.7.15 prints a number with %1.15g unless that text reads back
 * "different", and its test of "different" tolerates a relative error of
 * DBL_EPSILON: 9007199254740991 printed as 9.00719925474099e+15 (read back
 * 9007199254740990) and 0.1 + 0.2 as 0.3. Every value accepted (BIGINTs up
 * to 2^53, doubles, numbers inside JSON columns and traits) and every
 * DOUBLE a query computes must come back as it is, so numbers are written
 * with the shortest of %.15g, %.16g and %.17g that reads back as the same
 * double (%.17g always does).
 *
 * Pure (lib/ has no stdio): the digits come from an exact big-integer
 * expansion of the double, rounded as printf rounds (half to even). */
#ifndef CF_JSONNUM_H
#define CF_JSONNUM_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"

/* The shortest of %.15g, %.16g and %.17g text of d that reads back
 * (strtod) as d, NUL-terminated into buf: "0.1", "1e+300",
 * "0.30000000000000004", "-0" for negative zero; "null" for NaN and the
 * infinities (not JSON numbers). Returns its length, or -ENOSPC when cap
 * is too small (32 always is enough). */
int cf_jsonnum_format(double d, char *buf, size_t cap);

/* Rewrites, in place, every number of the tree whose %.15g text is not
 * exact into a raw item holding its exact text (so read the tree's numbers
 * before, and only print it after). 0, or -ENOMEM with the tree still
 * printable (some numbers then keep cJSON's text). */
int cf_json_exact_numbers(cJSON *root);

/* cf_json_exact_numbers then cJSON_PrintUnformatted: the text (free()) or
 * NULL on OOM. */
char *cf_json_print_exact(cJSON *root);

/* Appends item compactly to out, as cJSON_PrintUnformatted would but with
 * every number exact and without touching the tree (so it may be const
 * and shared). 0, or -ENOMEM (out->oom set), -ERANGE for a number that is
 * not finite (JSON text such as 1e400 that no double holds), or -EINVAL for
 * an item cJSON could not print either. */
int cf_json_print_exact_to(const cJSON *item, cf_buf *out);

#endif
