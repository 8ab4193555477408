/* sql_view: the keyed view operator of continuous SQL (SPEC 13): GROUP BY
 * one or more key values, a set of aggregates (sql_agg) per group, and one
 * of four shapes:
 *
 *   NONE      a running row per group, updated by every event; STATE_TTL
 *             forgets a group once W >= its largest event time + TTL.
 *   TUMBLING  windows [start, start + size), start = floor(ts / size) * size.
 *   HOPPING   windows of `size` every `advance` (size a multiple of advance,
 *             at most 4096 windows per event): an event is in every window
 *             with start <= ts < start + size, start a multiple of advance.
 *   SESSION   per group, events within `gap` of each other (transitively)
 *             share a session [first, last + gap) (Flink's merging windows).
 *
 * Time rules (SPEC 4, 5, 13; the built-in views of builtin_sql.h run on
 * this operator, and the unit tests check it on random traces against a
 * naive evaluator): a window fires (final, revision
 * 0) when W >= end - 1 (a session when W >= last + gap - 1), its state is
 * kept until W >= end - 1 + grace, an event reaching a fired but kept
 * window updates it and re-fires it at once with revision + 1 (a group new
 * to a fired window fires at revision 0); an event all of whose windows are
 * past that point is late (reported to the caller for the late side
 * output, state unchanged). Sessions: lateness is judged on the merged
 * session, an event joining or merging fired sessions gives revision
 * max(part revision + fired), fired again at once only if the merged
 * session's fire point is already behind W.
 *
 * Emission order is deterministic: advance() fires windows by ascending
 * start, each window's groups in key order (sql_agg_value_cmp per key
 * column); sessions by (fire or purge time, key, first event time).
 *
 * max_keys bounds the groups held (0: no bound). Policy, when a new group
 * would exceed it:
 *   NONE      the group whose newest event time is the oldest is evicted
 *             (forgotten, as TTL would) and counted in evictions (for a
 *             DECAYED_COUNT, the page clicked least recently: near the
 *             lowest-scored, not always it);
 *   SESSION   the group whose next session action comes first is closed
 *             early (open sessions fire as final) and counted in evictions;
 *   TUMBLING, HOPPING   the event is refused (not applied, counted in
 *             refusals): evicting a window's partial result would silently
 *             undercount a result that is still to fire.
 *
 * Its own containers, not lib's generic ones (issue 11 asks for one table
 * and one heap unless a benchmark shows a special one pays):
 * - the heap of sessions or running groups is a private copy with the
 *   comparison and the position update inlined; ported onto cf_heap
 *   (indirect less and moved callbacks), sql_view_bench lost about 10% on
 *   sessions (1.11M vs 1.23M events per CPU-second, best of 4 alternating
 *   runs) and about 8% on trending (11.5M vs 12.6M);
 * - the group table keeps 11 bits of each key's hash beside the group's
 *   address in an 8-byte slot, so a probe skips other keys without
 *   loading their group records, and the cell table holds 8-byte (cell
 *   index, hash tag) slots, half of a (hash, pointer) slot, so both stay
 *   in cache twice as long; both are walked a step at a time by the shard's
 *   look-ahead (sql_view_prefetch_step), which a generic table's API does
 *   not offer. (Not measured against cf_kv on its own.)
 *
 * Strings are copied: a key or value passed in is borrowed for the call
 * only. Results handed to callbacks borrow from the view and are valid only
 * during the callback; callbacks must not call back into the view. Pure,
 * deterministic, not thread-safe (one shard owns a view). */
#ifndef SQL_VIEW_H
#define SQL_VIEW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_agg.h"
#include "sql_value.h"

/* sql_window_kind, sql_emit: sql_value.h. EMIT CHANGES (or DEFAULT): interim
 * results are pushed too (the caller's periodic foreach_open); FINAL: only
 * fired results are pushed. */

/* Filled by the planner; copied by sql_view_new. */
typedef struct sql_view_config {
    uint32_t nkeys;                 /* 0..16 GROUP BY columns (0: one global group) */
    const sql_agg_spec *aggs;       /* naggs aggregates, 1..64 */
    uint32_t naggs;
    sql_window_kind window;
    int64_t size_ms;                /* TUMBLING, HOPPING: > 0 */
    int64_t advance_ms;             /* HOPPING: 0 < advance <= size, size % advance == 0 */
    int64_t gap_ms;                 /* SESSION: > 0 */
    int64_t grace_ms;               /* windowed: >= 0 (GRACE PERIOD) */
    sql_emit emit;
    int64_t state_ttl_ms;           /* NONE: 0 = keep forever */
    size_t max_keys;                /* 0 = unbounded */
    /* Seeds the group table's hash, so that keys colliding in it cannot be
     * computed without the seed (hash flooding by client-chosen keys): a
     * secret of the caller's. Not state: a saved view loads under any. */
    uint64_t hash_seed;
} sql_view_config;

/* One result row. For windows start/end are the window bounds (end
 * exclusive); for sessions start = first and end = last event time (SPEC
 * 13's WINDOWSTART/WINDOWEND); for running rows both are the group's
 * newest event time. */
typedef struct sql_view_result {
    int64_t start, end;
    const sql_value *key;           /* nkeys values */
    uint32_t nkeys;
    const sql_value *aggs;          /* naggs results (sql_agg_results) */
    uint32_t naggs;
    uint32_t revision;              /* 0 on the first firing */
    bool final;                     /* false: open window/session, running row */
    /* The aggregate state the results come from, valid during the emit
     * call: history stores distinct-count sketches (sql_agg_sketch_save). */
    const sql_agg_set *agg_set;
    const void *state;
} sql_view_result;

typedef void (*sql_view_emit_fn)(void *ctx, const sql_view_result *r);

/* What sql_view_apply did with an event. */
enum {
    SQL_VIEW_APPLIED = 1,
    SQL_VIEW_LATE = 0,              /* past every window's grace: side output */
    SQL_VIEW_REFUSED = 2,           /* max_keys reached (windowed views) */
};

typedef struct sql_view_stats {
    size_t groups;                  /* groups held */
    size_t open;                    /* windows/sessions not fired; running rows */
    size_t kept;                    /* fired windows/sessions kept for lateness */
    size_t bytes;                   /* approximate heap bytes of the state */
    uint64_t applied, late_dropped, late_updates; /* late_updates: re-firings */
    uint64_t evictions, refusals, expired;        /* expired: groups TTL forgot */
} sql_view_stats;

typedef struct sql_view sql_view;

/* Appends the distinct-count sketch behind aggregate agg of r (a
 * COUNT(DISTINCT); r as handed to a callback of v, during that callback)
 * as a cf_hll encoding (sql_agg_sketch_save). 0, -EINVAL, -ENOMEM. */
int sql_view_result_sketch(const sql_view *v, const sql_view_result *r, uint32_t agg,
                           cf_buf *out);

/* NULL on OOM or an invalid config. */
sql_view *sql_view_new(const sql_view_config *cfg);
/* Frees v; a view sharing panes leaves them to the other (sql_view_unshare). */
void sql_view_free(sql_view *v);

/* Shared panes (issue 15). Two TUMBLING/HOPPING views over the same pane
 * grid (equal pane size: a tumbling size or a hopping advance), keys,
 * aggregates, hash seed and max_keys can keep one set of panes: an event
 * is added once, and each view fires, revises, drops late events, counts
 * and saves exactly as it would alone, except for the key bound: the pair
 * has one budget of max_keys groups, counted over the shared store (a
 * group lives while either view keeps one of its panes), and a new
 * group's event is refused (SQL_VIEW_REFUSED, counted in `refusals`) by
 * each view that would have taken it.
 * sql_view_can_share() says whether two configs qualify. sql_view_share()
 * links two empty views (nothing applied or loaded, no watermark): the
 * owner holds the panes; the follower reads them. Then:
 * - apply each event to the owner first, then to the follower with the
 *   same arrival: the owner's apply does the follower's part too (its
 *   late re-firings go to femit(fctx), as do the follower's firings when
 *   the owner's watermark moves), and the follower's apply only returns
 *   what that part gave (-EINVAL if the owner did not apply it last);
 * - advance and read either as before (statistics: `groups` is the shared
 *   table's, `bytes` the owner's); save each as before (the same format);
 *   load the owner's blob before the follower's;
 * - freeing either leaves the other whole (the owner's panes pass to its
 *   follower). 0 or -EINVAL (configs do not qualify, a view not empty or
 *   already sharing). */
bool sql_view_can_share(const sql_view_config *a, const sql_view_config *b);
int sql_view_share(sql_view *owner, sql_view *follower, sql_view_emit_fn femit, void *fctx);
/* Ends v's sharing: each view keeps its own panes from then on. */
void sql_view_unshare(sql_view *v);

/* One event: key (nkeys values), args (one per aggregate, see sql_agg_add;
 * may be NULL when no aggregate takes one), its event time and arrival
 * sequence number (increasing; EARLIEST/LATEST ties), and the watermark it
 * is judged against (the one the events before it left). First advances
 * to wm (firing what became due, through emit), then applies the event;
 * re-fired results go to emit. Returns SQL_VIEW_APPLIED, SQL_VIEW_LATE,
 * SQL_VIEW_REFUSED, or -ENOMEM / -EINVAL (a new key whose strings exceed
 * 1 MiB: nothing applied; or an argument type an aggregate rejects: the
 * rest of the event applied). An event for a group the pane, session or
 * row already holds allocates only when a kept string or a distinct-count
 * sketch outgrows its storage. */
int sql_view_apply(sql_view *v, const sql_value *key, const sql_value *args, int64_t rowtime,
                   uint64_t arrival, int64_t wm, sql_view_emit_fn emit, void *ctx);

/* sql_view_apply with the hashes computed by the caller, so that one event
 * feeding several views hashes each string once: key_hash ==
 * sql_view_key_hash(v, key), and arg_hash NULL or as sql_agg_add_hashed
 * reads it (arg_hash[i] == sql_agg_distinct_hash(args[i]) for each
 * COUNT(DISTINCT) i). A wrong hash breaks the view's state, not just the
 * speed; the unit tests compare both paths. */
int sql_view_apply_hashed(sql_view *v, const sql_value *key, uint64_t key_hash,
                          const sql_value *args, const uint64_t *arg_hash, int64_t rowtime,
                          uint64_t arrival, int64_t wm, sql_view_emit_fn emit, void *ctx);

/* The hash v's group table keys key by. Views created with the same
 * hash_seed and nkeys hash a key alike, so one hash serves them all. */
uint64_t sql_view_key_hash(const sql_view *v, const sql_value *key);

/* A hint, no effect on results: starts loading the table slot where an
 * event of this key and time will be looked up, so that a caller feeding
 * one event to several views overlaps their cache misses (prefetch every
 * view first, then apply). The key's string must be readable. */
void sql_view_prefetch(const sql_view *v, const sql_value *key, int64_t rowtime);
/* The same, key_hash == sql_view_key_hash(v, key). */
void sql_view_prefetch_hashed(const sql_view *v, uint64_t key_hash, int64_t rowtime);
/* A hint in steps, for a caller that looks ahead over the events to come:
 * step 0 is sql_view_prefetch_hashed (the table slot); step 1 reads that
 * slot and loads the cell (windows) or group record it points to (with a
 * session group's inline session); step 2 reads that and loads the group
 * record behind a cell and the cell's distinct-count sketches, a group's
 * first session when not inline, or the inline session's sketches; step 3
 * (windows, sessions) loads where arg_hash (NULL, or as
 * sql_view_apply_hashed takes it) goes in those sketches. Each step is
 * worth it only once the previous one's loads have landed: feed event
 * i + 4 step 0, i + 3 step 1, and so on, then apply event i. Other steps do nothing. No effect on results. */
void sql_view_prefetch_step(const sql_view *v, uint64_t key_hash, const uint64_t *arg_hash,
                            int64_t rowtime, unsigned step);

/* Moves the watermark to wm (ignored unless higher): fires what is due,
 * purges what is past grace, expires running rows past STATE_TTL. */
void sql_view_advance(sql_view *v, int64_t wm, sql_view_emit_fn emit, void *ctx);

/* Every open window/session (final = false, the revision it would fire
 * with) or running row, in firing order (running rows in key order). now
 * is T for DECAYED_COUNT. Returns how many. O(state + groups log groups). */
size_t sql_view_foreach_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx);

/* The first `limit` rows of foreach_open's order, exactly: each window's
 * (or the sessions', running rows') first ones are chosen with a bounded
 * heap and only those sorted, so a capped interim push does not sort every
 * group. Returns how many. O(state + groups log limit). */
size_t sql_view_foreach_open_first(const sql_view *v, int64_t now, size_t limit,
                                  sql_view_emit_fn emit, void *ctx);

/* The rows of foreach_open, in no particular order, without sorting: for
 * callers whose output does not depend on key order (a count, a top-N by
 * count that sorts its own picks). Returns how many. O(state). */
size_t sql_view_walk_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx);

/* Running views (NONE) only: every running row, in no particular order,
 * without sorting or allocating (a top-N over a large view: trending).
 * Returns how many; 0 for other shapes. O(groups). */
size_t sql_view_scan(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx);

/* Running views (NONE) only: forgets every group whose row at `now`
 * drop(ctx, row) says to drop, as STATE_TTL would (not counted as
 * evictions or expiries). Used for trending's prune of pages scored below
 * SPEC 7's 0.01. Returns how many. O(groups); nothing is forgotten on
 * OOM. */
typedef bool (*sql_view_drop_fn)(void *ctx, const sql_view_result *r);
size_t sql_view_forget(sql_view *v, int64_t now, sql_view_drop_fn drop, void *ctx);

/* The open windows/sessions or the running row of one group (pull
 * queries). Returns how many were emitted (0: no such group). */
size_t sql_view_lookup(const sql_view *v, const sql_value *key, int64_t now,
                       sql_view_emit_fn emit, void *ctx);

/* Counters and sizes. O(state), no sort: walks every group, session and
 * cell (the window pair counts are counted from the panes), so call it for
 * stats pages and metrics, not per event. */
void sql_view_stats_get(const sql_view *v, sql_view_stats *ret);
/* The counters and the group count alone (open, kept and bytes 0): O(1),
 * for a per-message check. */
void sql_view_counters(const sql_view *v, sql_view_stats *ret);
/* The group count alone: O(1), for a per-event check. */
size_t sql_view_groups(const sql_view *v);
int64_t sql_view_watermark(const sql_view *v);
const sql_view_config *sql_view_get_config(const sql_view *v);

/* Snapshot and rescale. save() appends the watermark and the state of the
 * groups for which keep(ctx, key, nkeys) says true (keep NULL: all), so a
 * state can be split by key across shards. load() adds the groups of one
 * saved blob to v (made with an equal config): v must be empty or hold the
 * same watermark (parts of one snapshot), and must not hold any of the
 * groups already (disjoint parts). -EINVAL on a malformed blob, a config or
 * watermark mismatch, or a group seen twice (v then holds what was read
 * before the fault: callers discard it); -ENOMEM. A view loaded from the
 * parts of a saved view behaves exactly as the saved one would. */
typedef bool (*sql_view_keep_fn)(void *ctx, const sql_value *key, uint32_t nkeys);
int sql_view_save(const sql_view *v, sql_view_keep_fn keep, void *ctx, cf_buf *out);
int sql_view_load(sql_view *v, cf_reader *in);
/* After a follower of shared panes has loaded all its blobs: whether they
 * held every pane of the owner's that the follower reads (false: the two
 * were saved unshared and hold different keys, e.g. at the key bound; the
 * follower would read data it never took, so load them unshared). */
bool sql_view_share_covers(const sql_view *follower);

#endif
