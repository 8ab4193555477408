/* sql_join: the stream-stream interval join of continuous SQL (SPEC 14),
 * `FROM a [INNER|LEFT] JOIN b WITHIN d ON a.k = b.k [AND ...]`, over SQL
 * rows. One operator per query per shard; both sides are routed to the
 * shard by the key (sql_pack_key bytes), so equal keys meet here.
 *
 * Each pushed event brings its key (nkeys values, compared as sql_pack.h
 * says), its row (copied, packed) and its ROWTIME and arrival number (its
 * place in the ordered log; increasing). With W the watermark:
 *
 *  - late: an event with W >= ROWTIME + d + grace when it arrives (its own
 *    buffer would already be dropped) is reported as SQL_JOIN_LATE and
 *    does nothing else: it joins nothing and is not kept;
 *  - pairs: an event is matched against the other side's buffered events
 *    of its key, oldest arrival first; each with |dt| <= d gives one row
 *    (left columns, then right columns) with ROWTIME = max of the two.
 *    Then it is buffered. A pair is thus emitted exactly once, by the push
 *    of whichever of the two arrives second, whatever the arrival order;
 *  - cleanup: an event is kept until W >= ROWTIME + d + grace, then dropped
 *    (advance); a partner arriving after that finds nothing;
 *  - LEFT: a left event that found no partner by W >= ROWTIME + d is
 *    emitted once with NULL right columns (ROWTIME its own), by the advance
 *    that reaches it, in (ROWTIME, arrival) order, or at once by its push if
 *    W is already there. A right event arriving later but within grace
 *    still pairs with it (the pair is emitted as in an INNER join), so a
 *    LEFT join's pairs are always the INNER join's pairs;
 *  - a key with a NULL component joins nothing: a left event of a LEFT
 *    join is kept (like any other, until its drop) for its NULL row, other
 *    such events are not kept.
 *
 * Bounds (both CF_KEYCAP_REFUSE-like, since dropping a buffered event would
 * silently lose pairs): max_keys distinct keys held (cf_keycap), and
 * max_events events held. An event that does not fit is refused whole
 * (nothing emitted, not kept) and counted.
 *
 * Deterministic: the same calls give the same emissions in the same order.
 * Results handed to the callback borrow from the operator and the pushed
 * row, valid during the callback only; callbacks must not call back into
 * the operator. Pure; not thread-safe (one shard owns it). */
#ifndef SQL_JOIN_H
#define SQL_JOIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_value.h"

#define SQL_JOIN_MAX_KEYS 16   /* key components, as the planner allows */

typedef enum sql_join_side {
    SQL_JOIN_SIDE_LEFT = 0,
    SQL_JOIN_SIDE_RIGHT = 1,
} sql_join_side;

typedef struct sql_join_config {
    bool left_outer;        /* LEFT JOIN (else INNER) */
    uint32_t nkeys;         /* 1..SQL_JOIN_MAX_KEYS */
    uint32_t ncols[2];      /* columns of a left and a right row (each 0..4096) */
    int64_t within_ms;      /* d: 0..2^62 */
    int64_t grace_ms;       /* 0..2^62 */
    size_t max_keys;        /* distinct keys held (0: no bound) */
    size_t max_events;      /* events held, both sides (0: no bound) */
    uint8_t hash_key[16];   /* SipHash key of the key table (clients choose keys) */
} sql_join_config;

/* One output row: ncols[0] + ncols[1] values (right ones NULL when
 * !matched), rowtime as above; the arrival numbers of its events (right:
 * UINT64_MAX when !matched). */
typedef struct sql_join_result {
    sql_row row;
    bool matched;
    uint64_t left_arrival;
    uint64_t right_arrival;
} sql_join_result;

typedef void (*sql_join_emit_fn)(void *ctx, const sql_join_result *r);

/* What sql_join_push did with an event. */
enum {
    SQL_JOIN_APPLIED = 0,   /* matched, then kept (or not: a NULL key) */
    SQL_JOIN_LATE = 1,      /* late: nothing done */
    SQL_JOIN_REFUSED = 2,   /* max_keys or max_events reached: nothing done */
};

typedef struct sql_join_stats {
    size_t buffered[2];     /* events held per side */
    size_t bytes[2];        /* their bytes (record, packed row, heap slots) */
    size_t keys;            /* distinct keys held */
    size_t memory;          /* all heap bytes of the operator */
    uint64_t pushed[2];     /* events offered per side */
    uint64_t late[2];
    uint64_t refused[2];
    uint64_t pairs;         /* matched rows emitted */
    uint64_t unmatched;     /* LEFT rows with NULLs emitted */
    uint64_t dropped;       /* events dropped by the watermark */
} sql_join_stats;

typedef struct sql_join sql_join;

/* NULL on an invalid config or OOM. */
sql_join *sql_join_new(const sql_join_config *cfg);
/* Accepts NULL. */
void sql_join_free(sql_join *j);

/* One event of one side: key (nkeys values, borrowed), row (ncols[side]
 * values and its rowtime, borrowed), arrival, and the watermark wm it is
 * judged against (the one the events before it left). First advances to
 * wm (see sql_join_advance), then applies the event; rows go to emit.
 * Returns SQL_JOIN_APPLIED, SQL_JOIN_LATE, SQL_JOIN_REFUSED, or -EINVAL
 * (row width, a row or key over SQL_PACK_MAX_ROW / 64 KiB: nothing done),
 * -ENOMEM (nothing emitted, not kept). O(events of the key on the other
 * side + log held). Allocates one record per kept event. */
int sql_join_push(sql_join *j, sql_join_side side, const sql_value *key, const sql_row *row,
                  uint64_t arrival, int64_t wm, sql_join_emit_fn emit, void *ctx);

/* Raises the watermark to wm (a lower one is ignored): emits the LEFT rows
 * now due (W >= ROWTIME + d, unmatched), then drops every event with
 * W >= ROWTIME + d + grace. Returns the number dropped.
 * O((emitted + dropped) log held). */
size_t sql_join_advance(sql_join *j, int64_t wm, sql_join_emit_fn emit, void *ctx);

/* CF_TIME_NONE (INT64_MIN) before the first advance. */
int64_t sql_join_watermark(const sql_join *j);
/* O(1). */
void sql_join_stats_get(const sql_join *j, sql_join_stats *ret);
const sql_join_config *sql_join_get_config(const sql_join *j);

/* Snapshot and rescale. save() appends the watermark, the counters and
 * every held event (versioned). load() adds the events of one saved blob
 * whose key bytes (sql_pack_key) keep(ctx, bytes, len) accepts (keep
 * NULL: all) to j, made with an equal config (within, grace, kind, widths):
 * j must be empty or hold the same watermark (the parts of one snapshot),
 * and the parts must hold disjoint keys. Counters are added only for
 * keep == NULL. Returns 0, -EINVAL (malformed blob, config or watermark
 * mismatch: j then holds what was read before the fault; discard it) or
 * -ENOMEM. A join loaded from the parts of a saved one, fed the events of
 * its keys, emits what the saved one would have. */
typedef bool (*sql_join_keep_fn)(void *ctx, const void *key, size_t len);
int sql_join_save(const sql_join *j, cf_buf *out);
int sql_join_load(sql_join *j, cf_reader *in, sql_join_keep_fn keep, void *ctx);

#endif
