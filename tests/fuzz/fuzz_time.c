/* Fuzz harness for cf_time: RFC 3339 and duration parsers on arbitrary bytes,
 * and format -> parse round trips. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char buf[32];
    int64_t ms = 0;

    /* The input as an RFC 3339 string (not NUL-terminated: length given). */
    if (cf_rfc3339_parse((const char *)data, size, &ms) == 0) {
        int n = cf_rfc3339_format(ms, buf, sizeof buf);
        if (n >= 0) {
            int64_t back = 0;
            FUZZ_CHECK(n == 24);
            FUZZ_CHECK(cf_rfc3339_parse(buf, (size_t)n, &back) == 0 && back == ms);
        } else {
            FUZZ_CHECK(n == -ERANGE);
        }
    }

    /* The input as a duration (NUL-terminated copy; stops at an inner NUL). */
    char *copy = malloc(size + 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    copy[size] = '\0';
    int rc = cf_duration_parse(copy, &ms);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ERANGE);
    if (rc == 0)
        FUZZ_CHECK(ms >= 0);
    free(copy);

    /* The first 8 bytes as a timestamp: format and parse back. */
    if (size >= 8) {
        uint64_t u = 0;
        for (int i = 0; i < 8; i++)
            u |= (uint64_t)data[i] << (8 * i);
        int64_t v = (int64_t)u;
        /* Fold into the formattable range so most inputs exercise it. */
        v = v % INT64_C(253402300800000);
        int n = cf_rfc3339_format(v, buf, sizeof buf);
        if (v >= INT64_C(-62167219200000)) {
            int64_t back = 0;
            FUZZ_CHECK(n == 24);
            FUZZ_CHECK(cf_rfc3339_parse(buf, 24, &back) == 0 && back == v);
        } else {
            FUZZ_CHECK(n == -ERANGE);
        }
    }
    return 0;
}
