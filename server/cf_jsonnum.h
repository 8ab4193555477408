/* cf_jsonnum: prints cJSON trees with every number exact.
 *
 * cJSON 1.7.15 prints a number with %1.15g unless that text reads back
 * "different", and its test of "different" tolerates a relative error of
 * DBL_EPSILON: 9007199254740991 printed as 9.00719925474099e+15 (read back
 * 9007199254740990) and 0.1 + 0.2 as 0.3. Every value accepted (BIGINTs up
 * to 2^53, doubles, numbers inside JSON columns and traits) must come back
 * as sent, so the numbers whose 15-digit text does not read back exactly
 * are written with 17 digits (integers up to 2^53 with all their digits). */
#ifndef CF_JSONNUM_H
#define CF_JSONNUM_H

#include <cjson/cJSON.h>

/* Rewrites, in place, every number of the tree whose %.15g text is not
 * exact into a raw item holding its exact text (so read the tree's numbers
 * before, and only print it after). 0, or -ENOMEM with the tree still
 * printable (some numbers then keep cJSON's text). */
int cf_json_exact_numbers(cJSON *root);

/* cf_json_exact_numbers then cJSON_PrintUnformatted: the text (free()) or
 * NULL on OOM. */
char *cf_json_print_exact(cJSON *root);

#endif
