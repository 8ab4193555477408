/* Unit tests for server/stats_table.h, the one list behind GET
 * /api/v1/stats and /metrics: every stats key and every metric family is
 * listed once (a duplicate family is invalid Prometheus exposition), each
 * row is shown somewhere, metrics carry a type and help, and counters are
 * named *_total as Prometheus expects. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stats_table.h"

typedef struct row {
    const char *json, *metric, *type, *help;
} row;

/* The names only: the value columns are dropped unexpanded. */
#define NAMES(kind, json, metric, type, help, when, value) {json, metric, type, help},
static const row rows[] = {CF_STATS_TABLE(NAMES)};
#undef NAMES
enum { ROWS = sizeof rows / sizeof rows[0] };

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static void keys_and_families_are_unique(void **state)
{
    (void)state;
    for (size_t i = 0; i < ROWS; i++)
        for (size_t j = i + 1; j < ROWS; j++) {
            if (rows[i].json && rows[j].json && strcmp(rows[i].json, rows[j].json) == 0)
                fail_msg("stats key \"%s\" listed twice", rows[i].json);
            if (rows[i].metric && rows[j].metric && strcmp(rows[i].metric, rows[j].metric) == 0)
                fail_msg("metric clickflow_%s listed twice", rows[i].metric);
        }
}

static void rows_are_well_formed(void **state)
{
    (void)state;
    size_t metrics = 0, keys = 0;
    for (size_t i = 0; i < ROWS; i++) {
        const row *r = &rows[i];
        if (!r->json && !r->metric)
            fail_msg("row %zu is neither a stats key nor a metric", i);
        keys += r->json != NULL;
        if (!r->metric) {
            assert_null(r->type);
            assert_null(r->help);
            continue;
        }
        metrics++;
        for (const char *c = r->metric; *c; c++)
            if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9') || *c == '_'))
                fail_msg("metric %s: not [a-z0-9_]", r->metric);
        assert_non_null(r->help);
        assert_true(strlen(r->help) > 0);
        assert_null(strchr(r->help, '\n'));
        assert_non_null(r->type);
        if (strcmp(r->type, "counter") == 0) {
            if (!ends_with(r->metric, "_total"))
                fail_msg("counter %s does not end in _total", r->metric);
        } else if (strcmp(r->type, "gauge") == 0) {
            if (ends_with(r->metric, "_total"))
                fail_msg("gauge %s ends in _total", r->metric);
        } else {
            fail_msg("metric %s: unknown type %s", r->metric, r->type);
        }
    }
    assert_true(keys > 0);
    assert_true(metrics > 0);
}

/* "obj.key" is member key of the stats object obj (stats.c): one level,
 * both names non-empty, and obj is not also a plain key (the object would
 * then be created twice, or a number would stand where members go). */
static void dotted_keys_name_an_object(void **state)
{
    (void)state;
    size_t dotted = 0;
    for (size_t i = 0; i < ROWS; i++) {
        const char *k = rows[i].json;
        const char *dot = k ? strchr(k, '.') : NULL;
        if (!dot)
            continue;
        dotted++;
        if (dot == k || dot[1] == '\0' || strchr(dot + 1, '.'))
            fail_msg("stats key \"%s\": not obj.key", k);
        size_t n = (size_t)(dot - k);
        for (size_t j = 0; j < ROWS; j++)
            if (rows[j].json && strlen(rows[j].json) == n && memcmp(rows[j].json, k, n) == 0)
                fail_msg("stats key \"%s\" is also the object of \"%s\"", rows[j].json, k);
    }
    assert_true(dotted > 0);    /* history and sink */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(keys_and_families_are_unique),
        cmocka_unit_test(rows_are_well_formed),
        cmocka_unit_test(dotted_keys_name_an_object),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
