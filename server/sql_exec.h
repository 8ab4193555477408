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
 * Placement (keyed execution, as a Kafka Streams repartition): the
 * sequencer routes each click or declared-stream row, before logging it, to
 * the shards that own its keys (sql_route.h: a probe evaluates each view's
 * filter and GROUP BY key once and hashes the key, owner(), modulo the
 * shard count), with a views mask per shard saying which views it is for.
 * A shard applies the row only to those views: a row of the view's own
 * source is trusted (filter and owner not evaluated again); rows joined to
 * a table or derived here, views past the 63rd bit, one shard and a failed
 * probe re-check the owner as before. The other views just see the row's
 * W, and markers move every view on every shard. So a
 * group lives on exactly one shard and needs no merge. Each row is judged
 * against the watermark stamped on its event, like the built-in operators.
 *
 * Derived streams: the probe runs their programs too (filter, map,
 * UNNEST), so a view over a derived stream is routed by its own key, and
 * the owner shard derives the rows again (no second hop, no second log
 * record). Shard 0 gets every row that yields a derived row, since it keeps
 * and pushes the derived streams' rows. A derived stream joined to a table
 * goes to every shard (the probe holds no table).
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
#include "sql_view.h"

typedef struct cf_sqlx_def cf_sqlx_def;
typedef struct cf_sqlx_set cf_sqlx_set;
typedef struct cf_sqlx cf_sqlx;
typedef struct cf_sqlx_memo cf_sqlx_memo;   /* below, with the built-ins */

/* Compiles a view from its plan (taken: freed with the def, or at once on
 * failure). allowed_lateness: GRACE PERIOD's default; max_keys: groups per
 * shard (0 none). NULL on OOM. */
cf_sqlx_def *cf_sqlx_def_new(sql_plan *plan, bool source_runs, int64_t allowed_lateness_ms,
                             size_t max_keys);
cf_sqlx_def *cf_sqlx_def_ref(cf_sqlx_def *d);
void cf_sqlx_def_unref(cf_sqlx_def *d);
const char *cf_sqlx_def_name(const cf_sqlx_def *d);
const sql_plan_info *cf_sqlx_def_info(const cf_sqlx_def *d);
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
 * (its events must be routed). */
bool cf_sqlx_set_reads(const cf_sqlx_set *s, const char *source);

/* -- one shard's executor (not thread-safe: the shard thread owns it) -- */

/* retain: fired results kept per view for pull queries. NULL on OOM. */
cf_sqlx *cf_sqlx_new(unsigned index, unsigned n_shards, size_t retain);
void cf_sqlx_free(cf_sqlx *x);
/* Takes a reference to set: views new in it start empty, views no longer
 * in it are freed with their state, the others carry on. */
void cf_sqlx_install(cf_sqlx *x, cf_sqlx_set *set);
/* A views mask: bit i for the set's i-th definition, bit 63 for every one
 * from the 63rd on (those re-check their owner anyway). */
#define CF_SQLX_ALL_VIEWS UINT64_MAX
uint64_t cf_sqlx_view_bit(size_t i);

/* One accepted click, its arrival number, the W and C stamped on it, and
 * the views it was routed here for (cf_sqlx_route_event). */
void cf_sqlx_event(cf_sqlx *x, const cf_event *ev, uint64_t seq, int64_t wm, int64_t clock,
                   uint64_t views);
/* cf_sqlx_event for a click already decoded into cols
 * (cf_sqlx_click_row; CF_SQLX_CLICK_COLUMNS values, borrowed), with the
 * hashes the caller took of its columns (memo, or NULL): the shard's
 * built-ins decode and hash each click once for the user views too. */
void cf_sqlx_event_row(cf_sqlx *x, const sql_value *cols, int64_t ts, const cf_sqlx_memo *memo,
                       uint64_t seq, int64_t wm, int64_t clock, uint64_t views);
/* One accepted event of a declared stream: its packed row
 * (stream_ingest.h), arrival number, W, C and views mask. */
void cf_sqlx_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *row,
                 size_t row_len, uint64_t seq, int64_t wm, int64_t clock, uint64_t views);

/* -- routing probe (sql_route.h; one per thread, no state) -- */

/* The partition key of view d for a row of `source` on side 0 (the FROM
 * side) or 1 (a stream-stream join's other side; a self-join reads a row
 * on both): its filter (NULL: none to apply before routing) and key
 * programs, the GROUP BY key, or the join's key on that side (both sides
 * of an interval join meet on the shard owning the join key; how the join
 * then groups is the join operator's business). Returns 0 with the outputs
 * set, 1 when the key is not known before the row is joined to a table
 * (every shard), or -ENOENT when d is a derived stream or does not read
 * source on that side. */
int cf_sqlx_def_partition(const cf_sqlx_def *d, const char *source, size_t source_len, int side,
                          const sql_prog **ret_filter, const sql_prog *const **ret_keys,
                          uint32_t *ret_nkeys);

/* NULL on OOM. Free with cf_sqlx_free. */
cf_sqlx *cf_sqlx_probe_new(unsigned n_shards);
unsigned cf_sqlx_probe_shards(const cf_sqlx *probe);
/* ORs into masks[s] (n_shards entries) the views of set (borrowed) whose
 * key of this click or packed declared-stream row shard s owns, the derived
 * streams the row must be derived through there, and shard 0's for the
 * derived rows it keeps. On a failed program every mask is all views. 0. */
int cf_sqlx_route_event(cf_sqlx *probe, cf_sqlx_set *set, const cf_event *ev, uint64_t *masks);
int cf_sqlx_route_row(cf_sqlx *probe, cf_sqlx_set *set, const char *stream, size_t stream_len,
                      const uint8_t *packed, size_t packed_len, uint64_t *masks);
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
/* Test hook: the views run every key and argument program and hash per
 * view (the generic path) instead of view_row's shortcuts. */
void cf_sqlx_set_generic(cf_sqlx *x, bool generic);
void cf_sqlx_flush(cf_sqlx *x, cf_sqlx_publish_fn fn, void *ctx);
/* EMIT CHANGES (SPEC 13): the open windows and running rows (final: false)
 * of every such view that applied a row since its last interim push, at
 * most max_rows per view, handed to fn as interim messages (a slow client
 * drops them first). O(state of those views). */
void cf_sqlx_interim(cf_sqlx *x, size_t max_rows, cf_sqlx_publish_fn fn, void *ctx);

/* Per running view: str name, u64 state bytes (sql_view_stats + kept
 * rows), u64 groups, u64 late-dropped rows, u64 input rows evaluated here;
 * after a u32 count. Then a u32 count of interval joins and per join: str
 * name, u64 buffered left and right events, bytes, keys, pairs, LEFT rows,
 * late events, dropped events. O(state). */
void cf_sqlx_stats(const cf_sqlx *x, cf_buf *out);

/* Final results of windowed views also go to history (history_views.h),
 * from this shard's thread. NULL: history off. Before events flow. */
typedef struct cf_history cf_history;
void cf_sqlx_set_history(cf_sqlx *x, cf_history *h);

/* Errors counted (OOM, scratch overflow, rejected arguments). */
uint64_t cf_sqlx_errors(const cf_sqlx *x);

/* -- built-in views (builtin_sql.h: SPEC 4, 5, 7) ------------------------------
 * The shard runs the built-in views from their compiled defs with a
 * sql_view of its own for each (not in the user set: their results feed
 * the built-in endpoints, rings, history and push topics). A built-in view
 * is grouped by one string column, page_url or user_id, and its groups
 * live where the sequencer routes that column (page_shard, user_shard:
 * cf_hash_shard(cf_hash64(key, len, 0), shards)), so a click reaches only
 * the shards that own its groups and is never broadcast for them. */

#define CF_SQLX_CLICK_COLUMNS 20
/* What cf_sqlx_def_apply did besides sql_view_apply's codes. */
#define CF_SQLX_FILTERED 3

/* The view configuration a def runs with. */
const sql_view_config *cf_sqlx_def_view_config(const cf_sqlx_def *d);
/* The click as a row of the `clicks` columns (CF_SQLX_CLICK_COLUMNS values;
 * strings borrowed from ev). Decode once, then apply to every built-in. */
void cf_sqlx_click_row(const cf_event *ev, sql_value *cols);
/* The hashes of one click row's columns, computed once for all the
 * built-in views it goes to (the page is a key of three views, the user a
 * key of one and a COUNT(DISTINCT) argument of two). Reset per row. */
#define CF_SQLX_MEMO 8
struct cf_sqlx_memo {
    uint32_t nkey, ndist;
    struct { int col; uint64_t seed, hash; } key[CF_SQLX_MEMO];  /* sql_view_key_hash */
    struct { int col; uint64_t hash; } dist[CF_SQLX_MEMO];       /* sql_agg_distinct_hash */
};
static inline void cf_sqlx_memo_reset(cf_sqlx_memo *m) { m->nkey = m->ndist = 0; }

/* sql_view_prefetch for the click row's group in v, when d's GROUP BY keys
 * are plain columns (else nothing): call for every view an event goes to,
 * then apply, so the table misses overlap. memo: NULL, or the row's (the
 * key hash is kept there for the apply); step: sql_view_prefetch_step's
 * (steps past 0 need a memo and a one-column key, else do nothing). */
void cf_sqlx_def_prefetch(const cf_sqlx_def *d, const sql_view *v, const sql_value *cols,
                          int64_t ts, cf_sqlx_memo *memo, unsigned step);
/* The look-ahead's hashes of a click row for d's view v, computed once
 * when the click is decoded (through the row's memo, so the apply finds
 * them there): its key's (ret_kh) and each COUNT(DISTINCT) argument's
 * (ret_ah, 0 elsewhere), for sql_view_prefetch_step at every step. False
 * when d's key is not one plain column or it has more than
 * CF_SQLX_AHEAD_AGGS aggregates (then cf_sqlx_def_prefetch's step 0 only). */
#define CF_SQLX_AHEAD_AGGS 8
bool cf_sqlx_def_ahead(const cf_sqlx_def *d, const sql_view *v, const sql_value *cols,
                       cf_sqlx_memo *memo, uint64_t *ret_kh, uint64_t ret_ah[CF_SQLX_AHEAD_AGGS]);
/* Whether a click row passes d's WHERE (no WHERE: true). */
bool cf_sqlx_def_where(cf_sqlx *x, const cf_sqlx_def *d, const sql_value *cols, int64_t ts);
/* Whether d's WHERE is the bot filter NOT COALESCE(b, FALSE) of a BOOLEAN
 * column, which the executor reads off the row instead of running. */
bool cf_sqlx_def_where_inline(const cf_sqlx_def *d);
/* True when a and b have the same WHERE (one verdict serves both). */
bool cf_sqlx_def_same_where(const cf_sqlx_def *a, const cf_sqlx_def *b);
/* One click row (cf_sqlx_click_row) through d's WHERE (unless the caller
 * says it checked it: where_checked), GROUP BY key and aggregate arguments
 * into v: sql_view_apply's result, CF_SQLX_FILTERED (WHERE said no:
 * nothing applied, v not advanced), or -EINVAL (the key did not evaluate;
 * counted in cf_sqlx_errors). A key or argument that is a plain column is
 * copied, not evaluated. Uses x's scratch. memo: NULL, or the row's
 * (cf_sqlx_memo): hashes of plain columns are taken from it or added. */
int cf_sqlx_def_apply(cf_sqlx *x, const cf_sqlx_def *d, sql_view *v, const sql_value *cols,
                      int64_t ts, bool where_checked, uint64_t seq, int64_t wm,
                      sql_view_emit_fn emit, void *ctx, cf_sqlx_memo *memo);

/* Value codec of the row records (and snapshots). */
void cf_sqlx_put_value(cf_buf *b, sql_value v);
bool cf_sqlx_get_value(cf_reader *r, sql_value *ret);

#endif
