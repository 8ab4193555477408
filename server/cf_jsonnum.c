/* cf_jsonnum: exact number printing for cJSON trees (cf_jsonnum.h). */
#include "cf_jsonnum.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The shortest of %.15g, %.16g, %.17g that reads back as d exactly (%.17g
 * always does), into buf. Returns its length, or 0 when %.15g already is
 * exact (cJSON's own text then is that one). */
static int exact_text(double d, char *buf, size_t cap)
{
    /* Integers below 10^15 have at most 15 digits: always exact. */
    if (fabs(d) < 1e15 && d == floor(d))
        return 0;
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(buf, cap, "%.*g", prec, d);
        if (n <= 0 || (size_t)n >= cap)
            return 0;
        if (strtod(buf, NULL) == d)
            return prec == 15 ? 0 : n;
    }
    return 0;
}

int cf_json_exact_numbers(cJSON *root)
{
    if (!root || (root->type & cJSON_IsReference))
        return 0;
    int rc = 0;
    if (cJSON_IsNumber(root) && isfinite(root->valuedouble)) {
        char buf[40];
        int n = exact_text(root->valuedouble, buf, sizeof buf);
        if (n > 0) {
            /* cJSON's allocator: freed as the tree is (an arena's reset,
             * or cJSON_Delete). */
            char *raw = cJSON_malloc((size_t)n + 1);
            if (!raw)
                return -ENOMEM;
            memcpy(raw, buf, (size_t)n + 1);
            root->type = cJSON_Raw | (root->type & ~0xFF);
            root->valuestring = raw;
        }
    } else if (cJSON_IsArray(root) || cJSON_IsObject(root)) {
        /* Recursive like cJSON's own printer: parsed trees are at most
         * CJSON_NESTING_LIMIT deep. */
        for (cJSON *c = root->child; c; c = c->next)
            if (cf_json_exact_numbers(c) < 0)
                rc = -ENOMEM;
    }
    return rc;
}

char *cf_json_print_exact(cJSON *root)
{
    (void)cf_json_exact_numbers(root);
    return cJSON_PrintUnformatted(root);
}
