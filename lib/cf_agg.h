/* cf_agg: mergeable aggregators behind one interface (a vtable over a
 * caller-owned state block of ops->state_size bytes): count, sum, avg, min,
 * max over int64 or double values, and distinct over 64-bit hashes (a
 * cf_hll). Every aggregator is mergeable, so per-shard partials combine into
 * the result a single instance would have given: exactly for count, the
 * int64 sums/averages, min, max and distinct; for double sums and averages
 * up to floating-point rounding (compensated summation keeps that small).
 *
 * Usage: void *st = malloc(ops->state_size); ops->init(st); ops->add(st,
 * &v)...; ops->result(st, &out); ops->fini(st); free(st). Not thread-safe;
 * the vtables are constant. */
#ifndef CF_AGG_H
#define CF_AGG_H

#include <stddef.h>
#include <stdint.h>

typedef enum cf_value_type {
    CF_VALUE_I64 = 0,
    CF_VALUE_F64 = 1,
    CF_VALUE_U64 = 2,   /* counts, and the hashes distinct consumes */
} cf_value_type;

typedef struct cf_value {
    cf_value_type type;
    union {
        int64_t i;
        double f;
        uint64_t u;
    } v;
} cf_value;

typedef struct cf_agg_ops {
    const char *name;           /* "count", "sum_i64", ..., "distinct" */
    cf_value_type input;        /* what add() accepts (count: anything) */
    size_t state_size;
    /* Makes an empty state. 0 or -ENOMEM. */
    int (*init)(void *state);
    /* Releases what init/add allocated; the state must be init'ed again
     * before reuse. */
    void (*fini)(void *state);
    /* One value. -EINVAL (wrong type, NaN), -ENOMEM; the state is unchanged
     * on error. */
    int (*add)(void *state, const cf_value *v);
    /* dst := dst combined with src (same ops; src unchanged). 0 or
     * -ENOMEM (dst unchanged). */
    int (*merge)(void *dst, const void *src);
    /* The current result. 0, -ENODATA (avg, min, max of nothing) or
     * -ERANGE (an int64 sum outside int64). */
    int (*result)(const void *state, cf_value *ret_value);
    /* Back to empty, keeping allocations where that is cheaper. */
    void (*reset)(void *state);
} cf_agg_ops;

extern const cf_agg_ops cf_agg_count;
extern const cf_agg_ops cf_agg_sum_i64;
extern const cf_agg_ops cf_agg_sum_f64;
extern const cf_agg_ops cf_agg_avg_i64;
extern const cf_agg_ops cf_agg_avg_f64;
extern const cf_agg_ops cf_agg_min_i64;
extern const cf_agg_ops cf_agg_min_f64;
extern const cf_agg_ops cf_agg_max_i64;
extern const cf_agg_ops cf_agg_max_f64;
extern const cf_agg_ops cf_agg_distinct;

/* The aggregator of that name, or NULL. */
const cf_agg_ops *cf_agg_lookup(const char *name);

#endif
