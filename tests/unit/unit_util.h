/* unit_util: helpers several unit tests share (instead of a copy in each).
 * Include after <cmocka.h>. */
#ifndef UNIT_UTIL_H
#define UNIT_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sql_str.h"
#include "sql_view.h"

/* A statement (or token stream) that must fail: the message and the
 * 1-based line and column it names. */
typedef struct uu_bad_sql {
    const char *sql;
    const char *msg;
    int line, column;
} uu_bad_sql;

/* Fails the test, naming case i and what came instead, unless err holds
 * c's message at c's position. */
void uu_expect_error(size_t i, const uu_bad_sql *c, const sql_error *err);

/* The whole file (malloc'd, not NUL-terminated) and its length, or NULL
 * when it can't be opened. */
char *uu_read_file(const char *path, size_t *ret_len);

/* Removes dir and everything below it (a test's scratch directory). */
void uu_remove_tree(const char *dir);

/* cmocka fixtures: *state is a fresh directory under /tmp (a malloc'd
 * path), removed with all it holds after the test. */
int uu_setup_temp_dir(void **state);
int uu_teardown_temp_dir(void **state);

/* splitmix64: the next number of the repeatable stream *state seeds (the
 * tests' seeded random traces). */
uint64_t uu_splitmix64(uint64_t *state);

/* A growing list of text lines (emitted rows rendered as text, compared
 * between an operator and its reference model). */
typedef struct uu_lines {
    char **s;
    size_t n, cap;
} uu_lines;

/* Appends a copy of s. */
void uu_lines_add(uu_lines *l, const char *s);
/* Frees every line and empties l. */
void uu_lines_free(uu_lines *l);
/* A sql_view emit callback: appends r to the uu_lines ctx as
 * "[start,end) rREV final|open 'key'... agg..." with text keys and integer
 * aggregates (NULL as -1). */
void uu_lines_add_view_row(void *ctx, const sql_view_result *r);
/* qsort comparison of two char * (uu_lines.s). */
int uu_cmp_str(const void *a, const void *b);

#endif
