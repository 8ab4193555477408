/* Unit tests for cf_jsonnum: numbers printed exactly (cJSON 1.7.15 alone
 * prints 9007199254740991 as 9.00719925474099e+15). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_jsonnum.h"

static void print_is(const char *in, const char *want)
{
    cJSON *j = cJSON_Parse(in);
    assert_non_null(j);
    char *out = cf_json_print_exact(j);
    assert_non_null(out);
    assert_string_equal(out, want);
    free(out);
    cJSON_Delete(j);
}

static void numbers_read_back_exactly(void **state)
{
    (void)state;
    /* cJSON's own text for these is off by one or in the last bit. */
    print_is("9007199254740991", "9007199254740991");
    print_is("-9007199254740991", "-9007199254740991");
    print_is("[5000000000000001, 0.30000000000000004]", "[5000000000000001,0.30000000000000004]");
    print_is("{\"a\":{\"b\":[1,[9007199254740989]]},\"c\":2.5}",
             "{\"a\":{\"b\":[1,[9007199254740989]]},\"c\":2.5}");
    /* Numbers cJSON prints exactly keep its text. */
    print_is("[0, 1, 1767225600000, 0.5, 1e+300, 123456789012345]",
             "[0,1,1767225600000,0.5,1e+300,123456789012345]");
    print_is("\"9007199254740991\"", "\"9007199254740991\"");
}

static void every_double_round_trips(void **state)
{
    (void)state;
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    for (int i = 0; i < 20000; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        double d;
        if (i % 2) {
            d = (double)(int64_t)(s % (1ULL << 53)) * (i % 4 == 1 ? 1 : -1);
        } else {
            memcpy(&d, &s, sizeof d);
            if (d != d || d - d != 0)
                continue;   /* NaN, infinities: not JSON */
        }
        cJSON *n = cJSON_CreateNumber(d);
        assert_non_null(n);
        char *out = cf_json_print_exact(n);
        assert_non_null(out);
        assert_true(strtod(out, NULL) == d);
        free(out);
        cJSON_Delete(n);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(numbers_read_back_exactly),
        cmocka_unit_test(every_double_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
