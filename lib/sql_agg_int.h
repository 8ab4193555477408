/* sql_agg_int.h: what the sql_agg modules share, inside lib only. The
 * state layouts of each kind, the set, and the helpers one module defines
 * for another:
 *   sql_agg.c           the set: kinds, layout, init/fini/clear, add,
 *                       merge, results
 *   sql_agg_value.c     values: ordering, the distinct-count hash, owned
 *                       copies of strings
 *   sql_agg_distinct.c  COUNT(DISTINCT): inline hashes, then a HyperLogLog
 *   sql_agg_scalar.c    SUM/AVG and DECAYED_COUNT
 *   sql_agg_topk.c      TOPK: the Space-Saving summary and its JSON text
 *   sql_agg_save.c      save, load and memory of a state block
 * COUNT, MIN/MAX and EARLIEST/LATEST need no code of their own beyond the
 * owned values and the set's dispatch. */
#ifndef SQL_AGG_INT_H
#define SQL_AGG_INT_H

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "sql_agg.h"

/* State layouts, one per kind; a set places them one after another in its
 * block, each 8-aligned. All are plain data with at most one pointer, so a
 * block is init'ed by memset and moved by memcpy. */

#define MAX_AGGS 64u
#define INLINE_DISTINCT 4
/* The last inline word of a distinct state holding a sketch. Hashes are
 * kept away from 0 (an empty word) and this mark: 2 of 2^64 values move
 * by one, which no count can notice. */
#define HLL_MARK UINT64_MAX
/* Times and half-lives are clamped (as in cf_trending) so that every
 * difference below fits int64. */
#define TS_LIMIT ((int64_t)1 << 61)
#define HALF_LIFE_MAX ((int64_t)1 << 40)

/* A value the state owns: strings (STRING, ARRAY, JSON) of up to
 * OWNED_INLINE bytes inline (most page paths and ids: no allocation),
 * longer ones in a heap buffer of cap bytes that is reused while big
 * enough. 24 bytes. Read it with ov(). */
#define OWNED_INLINE 16

typedef struct owned {
    uint8_t type;       /* sql_type; SQL_NULL: no value */
    uint8_t heap;       /* string bytes in u.h.p */
    uint8_t pad_[2];
    uint32_t len;
    union {
        bool b;
        int64_t i;
        double d;
        char inl[OWNED_INLINE];
        struct {
            char *p;
            uint32_t cap;
        } h;
    } u;
} owned;

typedef struct st_count {
    uint64_t n;
} st_count;

/* Up to four distinct hashes inline (nonzero words, filled in order),
 * else w[0] holds a cf_hll and w[3] HLL_MARK: 32 bytes, and the sessions of
 * a few pages (the usual case) never allocate a sketch. */
typedef struct st_distinct {
    uint64_t w[INLINE_DISTINCT];
} st_distinct;

static inline bool d_is_hll(const st_distinct *s)
{
    return s->w[INLINE_DISTINCT - 1] == HLL_MARK;
}

static inline cf_hll *d_hll(const st_distinct *s)
{
    cf_hll *h;
    memcpy(&h, &s->w[0], sizeof h);
    return h;
}

static inline void d_set_hll(st_distinct *s, cf_hll *h)
{
    memset(s, 0, sizeof *s);
    memcpy(&s->w[0], &h, sizeof h);
    s->w[INLINE_DISTINCT - 1] = HLL_MARK;
}

static inline uint8_t d_n(const st_distinct *s)
{
    uint8_t n = 0;
    while (n < INLINE_DISTINCT && s->w[n])
        n++;
    return n;
}

static inline uint64_t d_fix(uint64_t h)
{
    return h == 0 ? 1 : h == HLL_MARK ? HLL_MARK - 1 : h;
}

typedef struct st_sum {
    int64_t i;
    double d;
    uint64_t n;         /* non-NULL values (AVG's divisor) */
    uint8_t mode;       /* 0: no value yet, 1: BIGINT in i, 2: DOUBLE in d */
} st_sum;

typedef struct st_edge {
    owned o;            /* o.type SQL_NULL: no value yet */
    int64_t ts;
    uint64_t arrival;
} st_edge;

typedef struct tk_entry {
    uint64_t hash;
    uint64_t count;
    uint64_t err;       /* Space-Saving overestimate bound */
    owned val;
} tk_entry;

typedef struct topk {
    uint32_t n, cap;
    tk_entry e[];
} topk;

typedef struct st_topk {
    topk *t;
} st_topk;

typedef struct st_decay {
    int64_t ref;        /* INT64_MIN: empty */
    double v;           /* sum of 2^((ts - ref) / h) */
} st_decay;

struct sql_agg_set {
    uint32_t n;
    size_t size;
    sql_agg_spec spec[MAX_AGGS];
    uint32_t off[MAX_AGGS];
    bool arg[MAX_AGGS];     /* kind_info[kind].arg, at hand for sql_agg_add */
    /* The COUNT(DISTINCT) aggregates' indexes, in order: sql_agg_prefetch
     * (two look-ahead steps per view and click) walks only these. */
    uint8_t ndistinct;
    uint8_t distinct[MAX_AGGS];
};

static inline void *slot_of(const sql_agg_set *set, void *st, uint32_t i)
{
    return (char *)st + set->off[i];
}

static inline const void *cslot_of(const sql_agg_set *set, const void *st, uint32_t i)
{
    return (const char *)st + set->off[i];
}

static inline sql_value ov(const owned *o)
{
    sql_value v = sql_null();
    v.type = o->type;
    switch (o->type) {
    case SQL_NULL: break;
    case SQL_BOOLEAN: v.u.b = o->u.b; break;
    case SQL_DOUBLE: v.u.d = o->u.d; break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: v.u.i = o->u.i; break;
    default:
        v.len = o->len;
        v.u.s = o->heap ? o->u.h.p : o->u.inl;
        break;
    }
    return v;
}

static inline size_t owned_bytes(const owned *o)
{
    return o->heap ? o->u.h.cap : 0;
}

/* ---- sql_agg_value.c ---- */

/* Frees what o holds and leaves it empty (SQL_NULL). */
void sql_agg_owned_free(owned *o);
/* o := a copy of v. 0 or -ENOMEM (o unchanged). */
int sql_agg_owned_set(owned *o, sql_value v);
/* The distinct-count hash of v (sql_agg_distinct_hash). */
uint64_t sql_agg_value_hash(sql_value v);

/* ---- sql_agg_distinct.c ---- */

/* The per-row step is inline here, as sql_view_int.h's are: it runs for
 * every COUNT(DISTINCT) of every event (the built-in views' unique users),
 * and out of line its call was extra work the one file did not have. */
static inline int sql_agg_distinct_add(st_distinct *s, uint64_t h)
{
    if (d_is_hll(s)) {
        int rc = cf_hll_add(d_hll(s), h);
        return rc < 0 ? rc : 0;
    }
    uint8_t n = 0;
    for (; n < INLINE_DISTINCT && s->w[n]; n++)
        if (s->w[n] == h)
            return 0;
    if (n < INLINE_DISTINCT) {
        s->w[n] = h;
        return 0;
    }
    cf_hll *hll = cf_hll_new();
    if (!hll)
        return -ENOMEM;
    for (uint8_t i = 0; i < n; i++)
        if (cf_hll_add(hll, s->w[i]) < 0)
            goto oom;
    if (cf_hll_add(hll, h) < 0)
        goto oom;
    d_set_hll(s, hll);
    return 0;
oom:
    cf_hll_free(hll);
    return -ENOMEM;
}

/* d := d union s; 0 or -ENOMEM. */
int sql_agg_distinct_merge(st_distinct *d, const st_distinct *s);
uint64_t sql_agg_distinct_count(const st_distinct *s);

/* ---- sql_agg_scalar.c ---- */

/* Adds a BIGINT or DOUBLE v to a sum; -EINVAL for another type. */
int sql_agg_sum_add(st_sum *s, sql_value v);
void sql_agg_sum_merge(st_sum *d, const st_sum *s);
/* Adds weight w at time ts with half-life h (ms). */
void sql_agg_decay_add(st_decay *s, int64_t h, int64_t ts, double w);
/* The decayed count at time now. */
double sql_agg_decay_at(const st_decay *s, int64_t h, int64_t now);

/* ---- sql_agg_topk.c ---- */

/* Counters kept for a TOPK of k: max(8k, 64). */
uint32_t sql_agg_topk_counters(int64_t k);
/* Bytes of a summary of cap counters. */
size_t sql_agg_topk_size(uint32_t cap);
/* The entry of value v (hash h), or NULL. */
tk_entry *sql_agg_topk_find(const topk *t, uint64_t h, sql_value v);
/* Adds count (error bound err) of v, Space-Saving when bounded; 0 or -ENOMEM. */
int sql_agg_topk_add(st_topk *s, int64_t k, sql_value v, uint64_t h, uint64_t count, uint64_t err,
                     bool bounded);
/* Keeps the biggest counters after a merge; 0 or -ENOMEM. */
int sql_agg_topk_trim(st_topk *s, int64_t k);
void sql_agg_topk_free(st_topk *s);
/* Appends the JSON array of the k best; false on OOM. */
bool sql_agg_topk_result(const st_topk *s, int64_t k, cf_buf *out);

#endif
