/* sql_exec: user views of continuous SQL (SPEC 13) executed in the shard
 * threads.
 *
 * A cf_sqlx_def is one CREATE VIEW compiled once (its plan's expression
 * programs and the sql_view configuration), shared read-only by every
 * shard and reference-counted. A cf_sqlx_set is the list of views in force;
 * the engine sends a new set to every shard through the shard queues, in
 * the sequencer's order, so a view sees exactly the events accepted after
 * it was created.
 *
 * Placement: every click reaches every shard (role CF_ROLE_SQL) while a
 * view runs; each shard decodes it once into a row of the `clicks` columns
 * and, per view, applies the filter, evaluates the GROUP BY key and keeps
 * the row only when it owns the key (hash of the key values modulo the
 * shard count), so a group lives on exactly one shard and needs no merge.
 * Each row is judged against the watermark stamped on its event, like the
 * built-in operators.
 *
 * Declared streams' events come as packed rows (cf_sqlx_row) to every
 * shard, and are owned and judged the same way.
 *
 * This slice runs views over `clicks`, declared and derived streams without
 * UNNEST, derived streams (UNNEST allowed), and both with a stream-table
 * join (every shard holds every table's rows, applied in the log's order:
 * cf_sqlx_table), or a stream-stream interval join (sql_join). Every shard
 * gets both sides' events and runs the join over every key, like it holds
 * every table, so the joined rows reach every shard as derived rows do and
 * the views downstream keep the groups they own whatever they group by
 * (a join's state is thus held once per shard). cf_sqlx_route_key names
 * the key an owner router would send each side by instead. Bots reach no
 * shard (SPEC 15), so views do not see them. */
#ifndef CF_SQL_EXEC_H
#define CF_SQL_EXEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "cf_event.h"
#include "sql_plan.h"

typedef struct cf_sqlx_def cf_sqlx_def;
typedef struct cf_sqlx_set cf_sqlx_set;
typedef struct cf_sqlx cf_sqlx;

/* Compiles a view from its plan (taken: freed with the def, or at once on
 * failure). allowed_lateness: GRACE PERIOD's default; max_keys: groups per
 * shard (0 none). NULL on OOM. */
cf_sqlx_def *cf_sqlx_def_new(sql_plan *plan, bool source_runs, int64_t allowed_lateness_ms,
                             size_t max_keys);
cf_sqlx_def *cf_sqlx_def_ref(cf_sqlx_def *d);
void cf_sqlx_def_unref(cf_sqlx_def *d);
const char *cf_sqlx_def_name(const cf_sqlx_def *d);
/* Whether this slice executes it: a view (no JOIN, no UNNEST) or a derived
 * stream (no JOIN; UNNEST allowed) whose source runs (clicks, a declared
 * stream, or a derived stream that runs). */
bool cf_sqlx_def_runnable(const cf_sqlx_def *d);
/* (Joins run too: a stream-table join, or an interval join without UNNEST,
 * whose both sides run; source_runs covers both sides.) */

/* A set of n defs (each ref'd). NULL on OOM. */
cf_sqlx_set *cf_sqlx_set_new(cf_sqlx_def *const *defs, size_t n);
cf_sqlx_set *cf_sqlx_set_ref(cf_sqlx_set *s);
void cf_sqlx_set_unref(cf_sqlx_set *s);
size_t cf_sqlx_set_count(const cf_sqlx_set *s);
cf_sqlx_def *cf_sqlx_set_at(const cf_sqlx_set *s, size_t i);
/* The def named `name`, or NULL. */
cf_sqlx_def *cf_sqlx_set_find(const cf_sqlx_set *s, const char *name);
/* True when some running view or derived stream of the set reads `source`
 * (its events must reach every shard). */
bool cf_sqlx_set_reads(const cf_sqlx_set *s, const char *source);

/* -- one shard's executor (not thread-safe: the shard thread owns it) -- */

/* retain: fired results kept per view for pull queries. NULL on OOM. */
cf_sqlx *cf_sqlx_new(unsigned index, unsigned n_shards, size_t retain);
void cf_sqlx_free(cf_sqlx *x);
/* Takes a reference to set: views new in it start empty, views no longer
 * in it are freed with their state, the others carry on. */
void cf_sqlx_install(cf_sqlx *x, cf_sqlx_set *set);
/* One accepted click, its arrival number, and the W and C stamped on it. */
void cf_sqlx_event(cf_sqlx *x, const cf_event *ev, uint64_t seq, int64_t wm, int64_t clock);
/* One accepted event of a declared stream: its packed row
 * (stream_ingest.h), arrival number, W and C. */
void cf_sqlx_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *row,
                 size_t row_len, uint64_t seq, int64_t wm, int64_t clock);
/* Table rows (CF_MSG_TABLE, engine_tables.c): str table, str definition,
 * u32 ncols, u32 key column, then n x (u8 op, str bytes): applied to this
 * shard's copy of every table, which stream-table joins read. */
void cf_sqlx_table(cf_sqlx *x, const uint8_t *msg, size_t len, uint32_t n);
/* Fills the (empty) tables from a snapshot's blob (tables.h). 0, -EINVAL,
 * -ENOMEM. */
int cf_sqlx_load_tables(cf_sqlx *x, const void *blob, size_t len);
/* A watermark marker. */
void cf_sqlx_advance(cf_sqlx *x, int64_t wm, int64_t clock);
/* Appends the rows of view `name` this shard holds (open windows, running
 * rows, retained fired results) to out as records: str identity (window
 * start + key), u32 revision, u32 value count, values (cf_sqlx_get_value).
 * Returns the number of records, or -ENOENT (no such view here), -ENOMEM. */
long cf_sqlx_rows(cf_sqlx *x, const char *name, cf_buf *out);
/* Snapshot part of this shard: every running view's state (sql_view_save)
 * and its retained fired results, by view name, then every interval join's
 * buffers (sql_join_save). 0 or -ENOMEM. */
int cf_sqlx_save(const cf_sqlx *x, cf_buf *out);
/* Adds one saved part into the installed views (by name; a view not
 * installed is skipped). rescale: the part was saved under another shard
 * count, so only the groups this shard owns now are kept. joins: the part
 * has the joins (version 3); each join is filled from the first part that
 * has it. 0 or -EINVAL
 * (malformed: the caller discards the shard) or -ENOMEM. */
int cf_sqlx_load(cf_sqlx *x, cf_reader *in, bool rescale, bool joins);

/* The key rows of `source` are placed by for query d (an interval join: its
 * side's join key; a view: its GROUP BY key), evaluated over row into
 * ret_keys (SQL_JOIN_MAX_KEYS slots; strings may point into row or x's
 * scratch). Returns the key count, 0 when its rows may go anywhere, or
 * -EINVAL. The one place an owner router asks where a row belongs. */
int cf_sqlx_route_key(cf_sqlx *x, const cf_sqlx_def *d, const char *source, const sql_row *row,
                      sql_value *ret_keys);

/* Push (WebSocket topics view:NAME and stream:NAME): while collecting,
 * fired results are rendered as JSON rows, and so are derived streams'
 * rows on shard 0 (every shard derives them all); flush() hands one
 * {"type":"view","name","data"} message per view and one
 * {"type":"stream",...} per derived stream with pending rows to fn, and
 * empties the batches. */
typedef void (*cf_sqlx_publish_fn)(void *ctx, const char *topic, const char *msg, size_t len,
                                   bool interim);
void cf_sqlx_collect(cf_sqlx *x, bool on);
void cf_sqlx_flush(cf_sqlx *x, cf_sqlx_publish_fn fn, void *ctx);
/* EMIT CHANGES (SPEC 13): the open windows and running rows (final: false)
 * of every such view that applied a row since its last interim push, at
 * most max_rows per view, handed to fn as interim messages (a slow client
 * drops them first). O(state of those views). */
void cf_sqlx_interim(cf_sqlx *x, size_t max_rows, cf_sqlx_publish_fn fn, void *ctx);

/* Per running view: str name, u64 state bytes (sql_view_stats + kept
 * rows), u64 groups, u64 late-dropped rows; after a u32 count. Then a u32
 * count of interval joins and per join: str name, u64 buffered left and
 * right events, bytes, keys, pairs, LEFT rows, late events, dropped events.
 * O(state). */
void cf_sqlx_stats(const cf_sqlx *x, cf_buf *out);

/* Errors counted (OOM, scratch overflow, rejected arguments). */
uint64_t cf_sqlx_errors(const cf_sqlx *x);

/* Value codec of the row records (and snapshots). */
void cf_sqlx_put_value(cf_buf *b, sql_value v);
bool cf_sqlx_get_value(cf_reader *r, sql_value *ret);

#endif
