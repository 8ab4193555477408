/* history: every final result of every view (each revision), kept in an
 * embedded SQLite database (`history.db` in the data directory) beyond the
 * in-memory rings, for time-range reads and rollups (SPEC section 16).
 *
 * Writing: producers (shard threads) hand rows over with cf_history_offer(),
 * which copies the row into a bounded in-memory queue and never waits for
 * the writer: the queue has a byte budget, and a row that does not fit is
 * appended to a spill file (history.db.spill) that the writer drains next
 * (see docs/DESIGN.md). One writer thread owns the
 * database connection and writes the queue in transactions with INSERT OR
 * IGNORE on the key (view, start, end, group, revision), so a replay after a
 * crash writes nothing twice. During recovery (cf_history_set_blocking) an
 * offer waits for room instead: nothing is ingested then, so nothing slows.
 *
 * The row interface is generic, so the SQL view runtime can plug in: a view
 * name, a window [start, end), a group key, a revision, the row's named
 * columns as a JSON object, and an optional distinct-count sketch (the
 * cf_hll_save encoding) of one column. A view is registered once with its
 * additive columns (summed by rollups) and its sketch column (merged).
 *
 * Reading (any thread): each call opens its own read-only connection, so
 * readers never wait for the writer (WAL journal mode). */
#ifndef CF_HISTORY_H
#define CF_HISTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"

#define CF_HISTORY_SCHEMA_VERSION 3
#define CF_HISTORY_SCHEMA_VERSION_STR "3"
/* The page size of a history.db this build creates (an older file keeps
 * the one it was made with). */
#define CF_HISTORY_PAGE_SIZE 16384
#define CF_HISTORY_PAGE_SIZE_STR "16384"
#define CF_HISTORY_VIEW_MAX 64      /* bytes of a view name */

typedef struct cf_history cf_history;

typedef struct cf_history_row {
    const char *view;               /* NUL-terminated, 1..CF_HISTORY_VIEW_MAX bytes */
    int64_t start;                  /* window start (ms) */
    int64_t end;                    /* window end (ms) */
    const char *group;              /* group key bytes (page_url, user_id, ...) */
    size_t group_len;
    uint32_t revision;
    const char *cols;               /* JSON object text of the named columns */
    size_t cols_len;
    const uint8_t *sketch;          /* cf_hll_save encoding, or NULL */
    size_t sketch_len;
    /* Where the row was fired (cf_history_positions): by shard `shard`,
     * at that shard's watermark `fired_w`. Only when positioned. */
    bool positioned;
    uint32_t shard;
    int64_t fired_w;
} cf_history_row;

typedef struct cf_history_stats {
    uint64_t offered;               /* rows handed over */
    uint64_t written;               /* rows the writer committed (incl. already stored) */
    uint64_t inserted;              /* of which were new in the database */
    uint64_t spilled;               /* rows that went through the spill file (queue full) */
    uint64_t overflow;              /* rows lost: the queue was full and the spill failed */
    uint64_t errors;                /* failed transactions (their rows are counted lost) */
    uint64_t retention_deleted;     /* rows deleted by retention */
    int64_t retention_cutoff;       /* rows with end < this were deleted (0: none yet) */
    size_t queued_bytes;            /* in the hand-off queue now */
    int64_t rollup_dirty;           /* rollup hours waiting for a rebuild (-1: not known yet) */
    uint64_t replay_skipped;        /* rows a replay did not offer: stored before (positions) */
} cf_history_stats;

/* Opens (creating if needed) the database at path, WAL journal mode, schema
 * version CF_HISTORY_SCHEMA_VERSION (a newer version on disk is refused).
 * retention_ms: rows whose end is older than the retention clock minus this
 * are deleted in the background (0: keep forever). queue_bytes bounds the
 * hand-off queue. NULL with a message in err on failure. */
cf_history *cf_history_open(const char *path, int64_t retention_ms, size_t queue_bytes, char *err,
                            size_t err_cap);

/* Declares a view (before cf_history_start): additive is a comma-separated
 * list of its additive columns (may be empty), sketch_col the column its
 * sketch counts (NULL: none). Names are identifiers ([A-Za-z_][A-Za-z0-9_]*).
 * Stored in the database, so readers know the views of earlier runs. 0 or
 * -EINVAL / -EIO. */
int cf_history_register_view(cf_history *h, const char *view, const char *additive,
                             const char *sketch_col);

/* Declares or re-declares a view at any time (user SQL views, created
 * while running): like cf_history_register_view, plus meta, a JSON object
 * text stored with the definition (a user view's columns with their types
 * and its rollup rules, docs/FORMATS.md; NULL for none). Once the writer
 * runs, the definition is queued ahead of every row offered after this
 * call; with wait, returns once it is stored (readers see it). 0, -EINVAL,
 * -ENOMEM, -EIO, -ETIMEDOUT (not stored within 10 s: the writer is stuck). */
int cf_history_define_view(cf_history *h, const char *view, const char *additive,
                           const char *sketch_col, const char *meta, bool wait);
/* Waits until every definition queued so far is stored (at most 10 s).
 * 0 or -ETIMEDOUT. */
int cf_history_defs_wait(cf_history *h);

/* Whether view was declared with cf_history_register_view (a built-in
 * view's rows): a user view of that name is not written (its rows would
 * mix with the built-in's). Thread-safe after start. */
bool cf_history_is_registered(const cf_history *h, const char *view);

/* True for an SQL identifier of 1..CF_HISTORY_VIEW_MAX bytes (letters,
 * digits after the first, '_'): the only names history.db splices into
 * its SQL and json paths. */
bool cf_history_is_ident(const char *s, size_t n);

/* Test seam: the writer pauses ms before each transaction, so that tests
 * can make it lag behind the shards (before cf_history_start). */
void cf_history_test_stall(cf_history *h, int ms);

/* Rows stored by the writer are also passed to fn (from the writer
 * thread, before they count as written), encoded with
 * cf_history_row_encode back to back: n rows in len bytes. Before start. */
typedef void (*cf_history_written_fn)(void *ctx, const uint8_t *records, size_t len, size_t n);
void cf_history_set_written_fn(cf_history *h, cf_history_written_fn fn, void *ctx);

/* A row as a record: u32 length, then str view, i64 start, i64 end, str
 * group, u32 revision, str cols, u8 has_sketch, str sketch (cf_buf
 * encodings). Appends to b (check b->oom). */
void cf_history_row_encode(const cf_history_row *r, cf_buf *b);
/* Reads one record: 1 with *ret pointing into the input (view copied into
 * view[]), 0 at the end of the input, -EINVAL when malformed. */
int cf_history_row_decode(cf_reader *in, cf_history_row *ret, char view[CF_HISTORY_VIEW_MAX + 1]);

/* Starts the writer thread. 0 or -errno. */
int cf_history_start(cf_history *h);

/* Drains the queue, commits, stops the writer and closes. Accepts NULL. */
void cf_history_close(cf_history *h);

/* Copies r into the hand-off queue, or, when the queue is full, appends it
 * to the spill file. Returns 0, -ENOSPC when even the spill failed (the row
 * is counted in overflow and lost; the caller keeps going), -EINVAL for a
 * malformed row, -ENOMEM. Never waits for the writer (except while
 * blocking is set). Thread-safe. */
int cf_history_offer(cf_history *h, const cf_history_row *r);

/* Replay positions (issue 15). A shard fires its rows in the order of its
 * watermark, which never goes back, and replay fires the same rows at the
 * same watermarks (given the same shard count and hash key). The writer
 * stores, per shard, the largest watermark W among the positioned rows it
 * has committed, but only at points where every row offered before is
 * committed (no spill file being read back, no failed transaction and no
 * lost row since the start), and one transaction late (so the sink's
 * backlog, appended after a commit, has the rows too). So every row shard
 * s fired at a watermark below its stored W is in the database, and a
 * replay need not fire it again.
 * Call before cf_history_start: loads into ret_w[0..n_shards-1] the stored
 * W of each shard for this shard count and hash key (INT64_MIN where there
 * is none, or when the stored ones were made with another count or key:
 * those are dropped), and makes the writer keep them for these from now
 * on. 0 or -EIO. */
int cf_history_positions(cf_history *h, unsigned n_shards, const uint8_t hashkey[16],
                         int64_t *ret_w);

/* Counts a row a replay did not offer (stats.replay_skipped). Thread-safe. */
void cf_history_count_skipped(cf_history *h);

/* While true, cf_history_offer waits for room instead of refusing (used
 * during recovery, when no ingest can be slowed), the queue holds at least
 * 32 MiB (one transaction of the writer each time), and the writer defers
 * SQLite's WAL checkpoints: they run once when it is set back to false
 * (after /readyz), so a replay's rows are copied into history.db once,
 * not at every 1000 pages of log (docs/DESIGN.md "History"). */
void cf_history_set_blocking(cf_history *h, bool block);

/* Test seam: times the writer's page cache spilled dirty pages in the
 * middle of a transaction (SQLITE_DBSTATUS_CACHE_SPILL), and times it ran
 * a WAL checkpoint of its own accord (the automatic ones included).
 * Thread-safe. */
uint64_t cf_history_test_cache_spills(cf_history *h);
uint64_t cf_history_test_checkpoints(cf_history *h);
/* Test seam: row transactions the writer committed. Thread-safe. */
uint64_t cf_history_test_transactions(cf_history *h);

/* The retention clock (event time: the engine passes its watermark). Rows
 * with end < now - retention are deleted by the writer. Never moves back. */
void cf_history_set_clock(cf_history *h, int64_t now);

/* Rows offered so far, and whether the writer has committed (or given up on)
 * the first n of them: a snapshot may only cover results that are stored. */
uint64_t cf_history_offered(cf_history *h);
bool cf_history_written(cf_history *h, uint64_t n);

void cf_history_get_stats(cf_history *h, cf_history_stats *ret);

/* ---- reads ---- */

/* Calls fn for the newest revision of every row of view with start >= from
 * and end <= to (and group == group when group is not NULL), ordered by end
 * descending, then group ascending (bytewise), at most limit rows. fn
 * returns 0 to go on, non-zero to stop. Returns the rows passed, or -errno
 * (-ENOENT: the database has no such view). */
typedef int (*cf_history_row_fn)(void *ctx, const cf_history_row *r);
long cf_history_scan(cf_history *h, const char *view, const char *group, size_t group_len,
                     int64_t from, int64_t to, size_t limit, cf_history_row_fn fn, void *ctx);

/* A view's meta as stored (malloc'd into *ret; NULL when it has none, as
 * the built-in views). 0, -ENOENT (unknown view), -ENOMEM, -EIO. */
int cf_history_view_meta(cf_history *h, const char *view, char **ret);

/* Typed column values of stored rows, as SQLite's json_extract gives them
 * (integers exact, JSON arrays and objects as text, booleans as 1/0). */
enum { CF_HISTORY_VAL_NULL, CF_HISTORY_VAL_INT, CF_HISTORY_VAL_REAL, CF_HISTORY_VAL_TEXT };
typedef struct cf_history_val {
    int type;
    int64_t i;
    double d;
    const char *s;
    size_t len;
} cf_history_val;
#define CF_HISTORY_COLS_MAX 256

/* Calls fn for the newest revision of every row of view with start >= from
 * and end <= to (no particular order), with the values of the n columns
 * names (of the cols object; NULL when absent). Strings are valid during
 * the call. More than max_rows rows is -E2BIG (after max_rows calls).
 * Returns the rows passed, -ENOENT (no such view), -EINVAL, -EIO. */
typedef int (*cf_history_cols_fn)(void *ctx, int64_t start, int64_t end, const char *group,
                                  size_t group_len, uint32_t revision, const cf_history_val *vals,
                                  size_t n);
long cf_history_scan_cols(cf_history *h, const char *view, int64_t from, int64_t to,
                          const char *const *names, size_t n, size_t max_rows,
                          cf_history_cols_fn fn, void *ctx);

/* Rollup of view over [from, to) in steps of step_ms (aligned to the epoch:
 * UTC hours and days): for each step holding rows (newest revision of each
 * key, start >= from, end <= to, the step chosen by start), the sum of every
 * additive column and the distinct count of the merged sketches.
 * *ret = {"view", "step_ms", "items": [{"start","end",<additive>...,<sketch col>}]}
 * ascending by start. Steps of whole hours read the hourly pre-aggregates
 * (history_rollup.h) and scan the rows of at most CF_HROLL_SCAN_HOURS_MAX
 * hours (dirty or partly in range); other steps scan every row. Returns 0,
 * -ENOENT (unknown view), -EAGAIN (too many hours still to be rebuilt:
 * retry later), -ENOMEM or -EIO. */
int cf_history_rollup(cf_history *h, const char *view, int64_t from, int64_t to, int64_t step_ms,
                      cJSON **ret, char *why, size_t why_cap);
/* (continued) A user view's meta may make columns derived (AVG from its
 * SUM and COUNT columns, computed per step) or refuse the rollup: then
 * -EDOM with the reason, naming the column, in why. */

/* Benchmark baseline: rollups scan every row as schema v1 did, and the
 * writer rebuilds no dirty rollup hours meanwhile. */
void cf_history_set_rollup_scan(cf_history *h, bool scan);

#endif
