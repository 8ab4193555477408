/* sql_agg: the aggregate functions of continuous SQL views (SPEC 13), as a
 * set laid out over one caller-owned state block per group (or per window
 * and group, or per session), so a view keeps all of a row's aggregates in
 * one place and updates them with one call per event.
 *
 * Kinds (one X-macro table, SQL_AGG_KINDS, gives the enum and the names):
 *   COUNT(*)           rows, NULLs included
 *   COUNT(x)           non-NULL values
 *   COUNT(DISTINCT x)  distinct non-NULL values: exact up to CF_HLL_SPARSE_MAX
 *                      (512) distinct 64-bit value hashes per state, then
 *                      HyperLogLog (p = 14, ~0.8% standard error). A STRING
 *                      hashes as cf_hash64(bytes, len, 0), as the built-in
 *                      unique_users does, so the sketches are identical.
 *   SUM(x)             BIGINT while every input is BIGINT and the sum fits
 *                      int64, else DOUBLE (from the first DOUBLE input or the
 *                      first overflow on)
 *   AVG(x)             DOUBLE: SUM / COUNT(x)
 *   MIN(x), MAX(x)     over BIGINT, DOUBLE, STRING (bytewise), TIMESTAMP,
 *                      BOOLEAN; BIGINT and DOUBLE compare numerically
 *   EARLIEST(x)        the value of the event with the smallest (ts, arrival)
 *   LATEST(x)          the value of the event with the largest (ts, arrival)
 *   TOPK(x, k)         the k most frequent values with their counts, as a
 *                      JSON array [{"value": v, "count": n}, ...] (count
 *                      descending, ties by value ascending). Exact while a
 *                      state has seen at most max(8k, 64) distinct values;
 *                      beyond that it is the Space-Saving summary of that
 *                      many counters: every value more frequent than N/m (N
 *                      rows, m counters) is listed and a count is over by at
 *                      most N/m. Merging keeps that bound (the sum of both).
 *   DECAYED_COUNT(d)   sum over rows of 2^(-(T - ts) / d) at read time T
 *                      (SPEC 7), relative error below 1e-9.
 * Every aggregate skips NULL arguments except COUNT(*) and DECAYED_COUNT,
 * which take no argument. Every kind is mergeable (session merging and
 * shard partials): exactly, except TOPK beyond its counters and distinct
 * counts in dense form (merged register-wise, the very sketch of the union).
 *
 * Strings a state keeps (MIN/MAX/EARLIEST/LATEST of STRING, TOPK values) are
 * copied into storage the state owns and reuses, so a stream of updates
 * allocates only when a value outgrows what the state had. Pure, not
 * thread-safe; a set is immutable once made and may be shared. */
#ifndef SQL_AGG_H
#define SQL_AGG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_value.h"

/* X(ENUM_SUFFIX, "SQL name", takes an argument) */
#define SQL_AGG_KINDS(X)                       \
    X(COUNT_STAR, "COUNT(*)", false)           \
    X(COUNT, "COUNT", true)                    \
    X(COUNT_DISTINCT, "COUNT(DISTINCT)", true) \
    X(SUM, "SUM", true)                        \
    X(AVG, "AVG", true)                        \
    X(MIN, "MIN", true)                        \
    X(MAX, "MAX", true)                        \
    X(EARLIEST, "EARLIEST", true)              \
    X(LATEST, "LATEST", true)                  \
    X(TOPK, "TOPK", true)                      \
    X(DECAYED_COUNT, "DECAYED_COUNT", false)

typedef enum sql_agg_kind {
#define SQL_AGG_ENUM_(name, sql, arg) SQL_AGG_##name,
    SQL_AGG_KINDS(SQL_AGG_ENUM_)
#undef SQL_AGG_ENUM_
    SQL_AGG_KIND_COUNT_
} sql_agg_kind;

/* Largest k of TOPK, so a state stays bounded whatever the SQL says. */
#define SQL_AGG_TOPK_MAX 1000

typedef struct sql_agg_spec {
    sql_agg_kind kind;
    int64_t param;      /* TOPK: k (1..SQL_AGG_TOPK_MAX); DECAYED_COUNT:
                         * half-life ms (> 0); otherwise 0 */
} sql_agg_spec;

/* "COUNT", "TOPK", ... or NULL for a kind out of range. */
const char *sql_agg_name(sql_agg_kind kind);
/* Whether the kind reads an argument (COUNT(*) and DECAYED_COUNT do not). */
bool sql_agg_takes_arg(sql_agg_kind kind);

typedef struct sql_agg_set sql_agg_set;

/* A set of n aggregates (1..64), specs copied. NULL on OOM or an invalid
 * spec (unknown kind, bad param). */
sql_agg_set *sql_agg_set_new(const sql_agg_spec *specs, uint32_t n);
void sql_agg_set_free(sql_agg_set *set);
uint32_t sql_agg_set_count(const sql_agg_set *set);
const sql_agg_spec *sql_agg_set_spec(const sql_agg_set *set, uint32_t i);
/* Bytes of one state block (a multiple of 8; align blocks to 8). */
size_t sql_agg_state_size(const sql_agg_set *set);
/* True when the two sets have the same specs in the same order. */
bool sql_agg_set_equal(const sql_agg_set *a, const sql_agg_set *b);

/* Makes st (state_size bytes) an empty state. Allocates nothing. */
void sql_agg_init(const sql_agg_set *set, void *st);
/* Frees what the state owns; it must be init'ed again before reuse. */
void sql_agg_fini(const sql_agg_set *set, void *st);
/* Empties an init'ed state but keeps a distinct-count sketch's storage
 * (cf_hll_clear), so a scratch state that windows are merged into again
 * and again stops allocating once warm. Results are those of an empty
 * state; a kept sketch counts exactly in sparse form as inline hashes do,
 * so merges into it give the results of merges into a fresh state. */
void sql_agg_clear(const sql_agg_set *set, void *st);

/* One row: args[i] is aggregate i's argument (ignored by the kinds that take
 * none; args may be NULL when none takes one), ts its event time, arrival
 * its place in the arrival order (EARLIEST/LATEST tie-break). Returns 0,
 * -EINVAL (a value no aggregate of that kind accepts, e.g. SUM of a STRING:
 * the planner's type check keeps those out; that aggregate ignores it) or
 * -ENOMEM (that aggregate did not take the row; the others did). */
int sql_agg_add(const sql_agg_set *set, void *st, const sql_value *args, int64_t ts,
                uint64_t arrival);

/* Hints, no effect on results, for a caller looking ahead (sql_view_
 * prefetch_step): step 0 starts loading the sketches of st's COUNT(DISTINCT)
 * aggregates that have one; step 1 (once those landed) where hashes[i]
 * (as sql_agg_add_hashed reads them) will go. */
void sql_agg_prefetch(const sql_agg_set *set, const void *st, const uint64_t *hashes,
                      unsigned step);

/* The hash COUNT(DISTINCT) keeps of a value (type-aware; a STRING's is
 * cf_hash64(bytes, 0)). */
uint64_t sql_agg_distinct_hash(sql_value v);

/* sql_agg_add with the distinct hashes computed by the caller: hashes NULL,
 * or hashes[i] == sql_agg_distinct_hash(args[i]) for every COUNT(DISTINCT)
 * i with a non-NULL argument (other entries are not read). One event
 * feeding several views' COUNT(DISTINCT user_id) hashes the user once. */
int sql_agg_add_hashed(const sql_agg_set *set, void *st, const sql_value *args,
                       const uint64_t *hashes, int64_t ts, uint64_t arrival);

/* dst := dst combined with src (src unchanged), as if dst had seen src's
 * rows too. 0 or -ENOMEM (dst then partly merged; callers drop it). */
int sql_agg_merge(const sql_agg_set *set, void *dst, const void *src);

/* The n results into ret_values[0..n-1]. STRING results of MIN/MAX/EARLIEST/
 * LATEST point into the state (valid until it next changes); TOPK's JSON
 * text is appended to scratch (the values point into scratch->data: valid
 * until scratch changes; reset it between rows). now is T for
 * DECAYED_COUNT. Empty aggregates give NULL, except the counts (0) and
 * DECAYED_COUNT (0.0). Returns 0 or -ENOMEM (scratch full: TOPK is NULL). */
int sql_agg_results(const sql_agg_set *set, const void *st, int64_t now, cf_buf *scratch,
                    sql_value *ret_values);

/* Appends the state (versioned, self-delimiting). 0 or -ENOMEM. */
int sql_agg_save(const sql_agg_set *set, const void *st, cf_buf *out);
/* Reads one state written by sql_agg_save with an equal set into st, which
 * must be uninitialised or fini'ed. 0, -EINVAL (malformed: st is then left
 * empty and init'ed) or -ENOMEM. */
int sql_agg_load(const sql_agg_set *set, void *st, cf_reader *in);

/* Appends aggregate i's distinct-count sketch (a COUNT(DISTINCT) of st) as
 * one cf_hll_save encoding, exact in sparse form while small, so history
 * rollups can merge sketches of many windows (cf_hll_merge_encoded).
 * 0, -EINVAL (i is not a COUNT(DISTINCT)) or -ENOMEM. */
int sql_agg_sketch_save(const sql_agg_set *set, const void *st, uint32_t i, cf_buf *out);

/* Heap bytes the state owns beyond its block. */
size_t sql_agg_bytes(const sql_agg_set *set, const void *st);

/* Total order over values used by MIN/MAX and TOPK ties: NULL first, then by
 * type class (numbers, strings, booleans), numbers numerically, strings
 * bytewise (a prefix first). */
int sql_agg_value_cmp(sql_value a, sql_value b);

#endif
