/* history_rollup_int.h: what the rollup's modules share, inside server/
 * only (history_rollup.h says what the rollup is).
 *   history_rollup.c         the writer: view definitions, the hours a
 *                            transaction touched, written at its flush
 *   history_rollup_dirty.c   dirty hours: marking them, rebuilding them from
 *                            their rows
 *   history_rollup_read.c    the rollup reads (cf_hroll_query) and the scan
 *                            of the newest revisions that the rebuild shares
 *   history_rollup_bucket.c  one step (or hour) being summed: its sums and
 *                            sketches, and their blob encodings */
#ifndef CF_HISTORY_ROLLUP_INT_H
#define CF_HISTORY_ROLLUP_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "history_rollup.h"

#define MAX_DEFS 256

/* ---- one step (or hour) being summed (history_rollup_bucket.c) ---- */

typedef struct bucket {
    int64_t start;
    int64_t sums[CF_HROLL_ADDITIVE_MAX];
    double fsums[CF_HROLL_ADDITIVE_MAX];
    bool is_float[CF_HROLL_ADDITIVE_MAX];
    cf_hll *users[CF_HROLL_SKETCH_MAX];     /* one per sketch column */
    int64_t min_end, max_end;
    bool any;
} bucket;

/* Notes a row whose window ends at end (called per row). */
static inline void bucket_add_end(bucket *b, int64_t end)
{
    b->any = true;
    if (end < b->min_end)
        b->min_end = end;
    if (end > b->max_end)
        b->max_end = end;
}

void cf_hroll_bucket_reset(bucket *b);
void cf_hroll_bucket_free(bucket *b);
/* One cf_hll_save encoding, or the container of several (history_rollup.h). */
int cf_hroll_bucket_merge_sketch(bucket *b, const void *data, size_t len);
/* Adds one row's additive values (columns first..first+na of st). */
void cf_hroll_bucket_add_values(bucket *b, sqlite3_stmt *st, int first, size_t na);
/* The sums blob of b's na additive columns, and its addition into b (false
 * when it does not fit na columns). */
void cf_hroll_sums_encode(const bucket *b, size_t na, cf_buf *out);
bool cf_hroll_sums_add(bucket *b, size_t na, const void *data, size_t len);
bool cf_hroll_split_names_max(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n,
                              size_t max);

/* ---- scanning rows (history_rollup_read.c) ---- */

typedef struct scan_out {
    int64_t step;
    char (*names)[CF_HROLL_NAME_MAX + 1];
    size_t na;
    const char *sketch_col;
    cJSON *items;                   /* NULL: everything goes into b (one hour) */
} scan_out;

/* The SELECT cf_hroll_scan_rows steps (the view's na additive columns). */
sqlite3_stmt *cf_hroll_scan_prepare(sqlite3 *db, char names[][CF_HROLL_NAME_MAX + 1], size_t na);
/* Folds the newest revision of every key with lo <= start < hi and
 * end <= end_max into b (and, with o->items, the steps after it). */
int cf_hroll_scan_rows(sqlite3_stmt *st, const char *view, int64_t lo, int64_t hi,
                       int64_t end_max, bucket *b, const scan_out *o);

/* ---- the writer's state (history_rollup.c) ---- */

/* A view's definition as the writer needs it. */
typedef struct hdef {
    char view[CF_HROLL_NAME_MAX + 1];
    bool known;                     /* in the views table */
    char names[CF_HROLL_ADDITIVE_MAX][CF_HROLL_NAME_MAX + 1];
    size_t na;
    char sketch[CF_HROLL_SKETCH_LIST_MAX];   /* sketch columns, comma-separated */
    size_t nsk;
    sqlite3_stmt *extract;          /* SELECT json_extract(?1, '$.a'), ...; NULL when na == 0 */
    sqlite3_stmt *scan;             /* cf_hroll_scan_prepare, made on first rebuild */
} hdef;

/* An hour touched by the open transaction. */
typedef struct acc {
    hdef *def;
    int64_t hour;
    bool dirty;
    bucket b;
} acc;

struct cf_hroll {
    sqlite3 *db;
    sqlite3_stmt *probe, *get, *put, *del, *mark, *pick, *count;
    hdef *defs[MAX_DEFS];
    size_t n_defs;
    acc *accs;
    size_t n_accs, cap_accs, last;
};

hdef *cf_hroll_def_get(cf_hroll *r, const char *view);
int cf_hroll_put_hour(cf_hroll *r, const hdef *d, int64_t hour, const bucket *b, bool dirty);

#endif
