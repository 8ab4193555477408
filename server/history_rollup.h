/* history_rollup: per-hour pre-aggregates of history.db (the `rollup`
 * table, schema v2, docs/FORMATS.md), so that a rollup over 30 days reads
 * 720 rows instead of millions.
 *
 * One row per (view, UTC hour of window start) holds the sum of every
 * additive column and the merged sketch of the newest revision of each
 * window starting in that hour, plus the smallest and largest window end.
 * The history writer keeps it up to date inside its own transactions:
 * a window's first revision is added to the hour directly; anything else
 * (a later revision replacing an earlier one, retention deleting rows, an
 * upgrade from v1, a changed view definition) marks the hour dirty, since
 * a sketch cannot subtract; the writer then rebuilds dirty hours from
 * their rows in the background, and readers scan a dirty hour's rows
 * instead of trusting its row. Answers are thus always those of a full
 * scan of the newest revisions.
 *
 * Internal to history*.c: the writer-side state is used only by the writer
 * thread (its connection), cf_hroll_query by any reader connection. */
#ifndef CF_HISTORY_ROLLUP_H
#define CF_HISTORY_ROLLUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include "cf_buf.h"
#include "cf_hll.h"

#define CF_HROLL_HOUR_MS INT64_C(3600000)
/* A rollup request scans the rows of at most this many hours (dirty ones
 * and the partial hours at from/to); more is -EAGAIN (see docs/API.md). */
#define CF_HROLL_SCAN_HOURS_MAX 24
#define CF_HROLL_NAME_MAX 64
#define CF_HROLL_ADDITIVE_MAX 32
/* Distinct-count sketch columns per view (user SQL views may have several;
 * the built-ins have one). With more than one, a row's and an hour's
 * sketch is a container: u8 CF_HROLL_SKETCH_MULTI, u8 k, k x (u32 length,
 * cf_hll_save encoding), in the order of views.sketch_col; with one, the
 * bare encoding (cf_hll_save's first byte is 0 or 1). */
#define CF_HROLL_SKETCH_MAX 8
#define CF_HROLL_SKETCH_MULTI 0x4d
#define CF_HROLL_SKETCH_LIST_MAX (CF_HROLL_SKETCH_MAX * (CF_HROLL_NAME_MAX + 1))

extern const char CF_HROLL_SCHEMA[];

/* Marks every hour of view's rows (all views when view is NULL) dirty,
 * creating their rollup rows: the v1 -> v2 upgrade and a changed view
 * definition. Inside the caller's transaction. 0 or -EIO. */
int cf_hroll_mark_all(sqlite3 *db, const char *view);

/* ---- writer side ---- */
typedef struct cf_hroll cf_hroll;

/* NULL on failure. db is the writer's connection (schema present). */
cf_hroll *cf_hroll_new(sqlite3 *db);
void cf_hroll_free(cf_hroll *r);

/* A row was newly inserted (in the open transaction): adds it to its hour,
 * or marks the hour dirty when another revision of its key is stored. */
int cf_hroll_row_added(cf_hroll *r, const char *view, int64_t start, int64_t end, const char *grp,
                       size_t grp_len, uint32_t revision, const char *cols, size_t cols_len,
                       const uint8_t *sketch, size_t sketch_len);
/* Drops the cached definition of view (it was re-declared). Accepts NULL. */
void cf_hroll_forget(cf_hroll *r, const char *view);
/* Writes the hours touched since the last flush (in the open transaction).
 * 0 or -EIO/-ENOMEM. */
int cf_hroll_flush(cf_hroll *r);
/* Forgets the hours touched (the transaction was rolled back). */
void cf_hroll_discard(cf_hroll *r);
/* Marks (view, hour) dirty if it has a row (retention deleted rows of it). */
int cf_hroll_mark_dirty(cf_hroll *r, const char *view, int64_t hour);
/* Rebuilds at most max dirty hours from their rows, in one transaction.
 * Returns the dirty hours left, or -EIO. */
long cf_hroll_rebuild(cf_hroll *r, int max);

/* ---- reads ---- */

/* Rollup items of view (additive column names[na], sketch column or "")
 * over rows with start >= from and end <= to, in steps of step_ms,
 * appended to items ascending. Uses the hourly rows when step_ms is a
 * multiple of an hour and scan_only is false, else scans every row.
 * 0, -EAGAIN (more than CF_HROLL_SCAN_HOURS_MAX hours to scan), -ENOMEM,
 * -EIO. */
int cf_hroll_query(sqlite3 *db, const char *view, char names[][CF_HROLL_NAME_MAX + 1], size_t na,
                   const char *sketch_col, int64_t from, int64_t to, int64_t step_ms, bool scan_only,
                   cJSON *items);

/* Splits a views.additive list "a,b" into names. false when malformed. */
bool cf_hroll_split_names(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n);

/* Encodes k sketches as one row's or hour's sketch (see above; NULL
 * entries are empty). 0 or -ENOMEM. */
int cf_hroll_sketches_encode(cf_hll *const *sketches, size_t k, cf_buf *out);

/* floor(t / step) * step, also before 1970 (INT64_MIN near INT64_MIN). */
int64_t cf_hroll_floor(int64_t t, int64_t step);

#endif
