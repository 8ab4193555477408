#include "cf_agg.h"

#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <string.h>

#include "cf_hll.h"

/* Integer sums are kept in 128 bits: 2^64 int64 values cannot overflow it,
 * so partial sums merge exactly and only the final result is range-checked. */
__extension__ typedef __int128 i128;

/* ---- count ------------------------------------------------------------- */

typedef struct { uint64_t n; } count_state;

static int count_init(void *s) { memset(s, 0, sizeof(count_state)); return 0; }
static void noop_fini(void *s) { (void)s; }

static int count_add(void *s, const cf_value *v)
{
    (void)v;
    ((count_state *)s)->n++;
    return 0;
}

static int count_merge(void *d, const void *s)
{
    ((count_state *)d)->n += ((const count_state *)s)->n;
    return 0;
}

static int count_result(const void *s, cf_value *ret)
{
    ret->type = CF_VALUE_U64;
    ret->v.u = ((const count_state *)s)->n;
    return 0;
}

static void count_reset(void *s) { count_init(s); }

/* ---- int64 sum / avg ----------------------------------------------------- */

typedef struct { i128 sum; uint64_t n; } isum_state;

static int isum_init(void *s) { memset(s, 0, sizeof(isum_state)); return 0; }

static int isum_add(void *s, const cf_value *v)
{
    if (v->type != CF_VALUE_I64)
        return -EINVAL;
    isum_state *st = s;
    st->sum += v->v.i;
    st->n++;
    return 0;
}

static int isum_merge(void *d, const void *s)
{
    isum_state *a = d;
    const isum_state *b = s;
    a->sum += b->sum;
    a->n += b->n;
    return 0;
}

static int isum_result(const void *s, cf_value *ret)
{
    const isum_state *st = s;
    if (st->sum > INT64_MAX || st->sum < INT64_MIN)
        return -ERANGE;
    ret->type = CF_VALUE_I64;
    ret->v.i = (int64_t)st->sum;
    return 0;
}

static int iavg_result(const void *s, cf_value *ret)
{
    const isum_state *st = s;
    if (st->n == 0)
        return -ENODATA;
    ret->type = CF_VALUE_F64;
    ret->v.f = (double)st->sum / (double)st->n;
    return 0;
}

static void isum_reset(void *s) { isum_init(s); }

/* ---- double sum / avg (Neumaier compensated) ---------------------------- */

typedef struct { double sum, comp; uint64_t n; } fsum_state;

static int fsum_init(void *s) { memset(s, 0, sizeof(fsum_state)); return 0; }

static void fsum_feed(fsum_state *st, double x)
{
    double t = st->sum + x;
    if (fabs(st->sum) >= fabs(x))
        st->comp += (st->sum - t) + x;
    else
        st->comp += (x - t) + st->sum;
    st->sum = t;
}

static int fsum_add(void *s, const cf_value *v)
{
    if (v->type != CF_VALUE_F64 || isnan(v->v.f))
        return -EINVAL;
    fsum_state *st = s;
    fsum_feed(st, v->v.f);
    st->n++;
    return 0;
}

static int fsum_merge(void *d, const void *s)
{
    fsum_state *a = d;
    const fsum_state *b = s;
    fsum_feed(a, b->sum);
    fsum_feed(a, b->comp);
    a->n += b->n;
    return 0;
}

static int fsum_result(const void *s, cf_value *ret)
{
    const fsum_state *st = s;
    ret->type = CF_VALUE_F64;
    ret->v.f = st->sum + st->comp;
    return 0;
}

static int favg_result(const void *s, cf_value *ret)
{
    const fsum_state *st = s;
    if (st->n == 0)
        return -ENODATA;
    ret->type = CF_VALUE_F64;
    ret->v.f = (st->sum + st->comp) / (double)st->n;
    return 0;
}

static void fsum_reset(void *s) { fsum_init(s); }

/* ---- min / max ------------------------------------------------------------ */

typedef struct { bool any; cf_value best; } ext_state;

static int ext_init(void *s) { memset(s, 0, sizeof(ext_state)); return 0; }

/* True when a should replace b for min (want_max false) or max. */
static bool ext_better(const cf_value *a, const cf_value *b, bool want_max)
{
    if (a->type == CF_VALUE_I64)
        return want_max ? a->v.i > b->v.i : a->v.i < b->v.i;
    return want_max ? a->v.f > b->v.f : a->v.f < b->v.f;
}

static int ext_add(ext_state *st, const cf_value *v, cf_value_type t, bool want_max)
{
    if (v->type != t || (t == CF_VALUE_F64 && isnan(v->v.f)))
        return -EINVAL;
    if (!st->any || ext_better(v, &st->best, want_max)) {
        st->best = *v;
        st->any = true;
    }
    return 0;
}

static int ext_merge(ext_state *a, const ext_state *b, bool want_max)
{
    if (b->any && (!a->any || ext_better(&b->best, &a->best, want_max))) {
        a->best = b->best;
        a->any = true;
    }
    return 0;
}

static int ext_result(const void *s, cf_value *ret)
{
    const ext_state *st = s;
    if (!st->any)
        return -ENODATA;
    *ret = st->best;
    return 0;
}

static void ext_reset(void *s) { ext_init(s); }

static int min_i64_add(void *s, const cf_value *v) { return ext_add(s, v, CF_VALUE_I64, false); }
static int min_f64_add(void *s, const cf_value *v) { return ext_add(s, v, CF_VALUE_F64, false); }
static int max_i64_add(void *s, const cf_value *v) { return ext_add(s, v, CF_VALUE_I64, true); }
static int max_f64_add(void *s, const cf_value *v) { return ext_add(s, v, CF_VALUE_F64, true); }
static int min_merge(void *d, const void *s) { return ext_merge(d, s, false); }
static int max_merge(void *d, const void *s) { return ext_merge(d, s, true); }

/* ---- distinct --------------------------------------------------------------- */

typedef struct { cf_hll *h; } distinct_state;

static int distinct_init(void *s)
{
    distinct_state *st = s;
    st->h = cf_hll_new();
    return st->h ? 0 : -ENOMEM;
}

static void distinct_fini(void *s)
{
    distinct_state *st = s;
    cf_hll_free(st->h);
    st->h = NULL;
}

static int distinct_add(void *s, const cf_value *v)
{
    if (v->type != CF_VALUE_U64)
        return -EINVAL;
    int rc = cf_hll_add(((distinct_state *)s)->h, v->v.u);
    return rc < 0 ? rc : 0;
}

static int distinct_merge(void *d, const void *s)
{
    return cf_hll_merge(((distinct_state *)d)->h, ((const distinct_state *)s)->h);
}

static int distinct_result(const void *s, cf_value *ret)
{
    ret->type = CF_VALUE_U64;
    ret->v.u = cf_hll_count(((const distinct_state *)s)->h);
    return 0;
}

static void distinct_reset(void *s) { cf_hll_reset(((distinct_state *)s)->h); }

/* ---- vtables ---------------------------------------------------------------- */

const cf_agg_ops cf_agg_count = {"count", CF_VALUE_U64, sizeof(count_state), count_init,
                                 noop_fini, count_add, count_merge, count_result, count_reset};
const cf_agg_ops cf_agg_sum_i64 = {"sum_i64", CF_VALUE_I64, sizeof(isum_state), isum_init,
                                   noop_fini, isum_add, isum_merge, isum_result, isum_reset};
const cf_agg_ops cf_agg_avg_i64 = {"avg_i64", CF_VALUE_I64, sizeof(isum_state), isum_init,
                                   noop_fini, isum_add, isum_merge, iavg_result, isum_reset};
const cf_agg_ops cf_agg_sum_f64 = {"sum_f64", CF_VALUE_F64, sizeof(fsum_state), fsum_init,
                                   noop_fini, fsum_add, fsum_merge, fsum_result, fsum_reset};
const cf_agg_ops cf_agg_avg_f64 = {"avg_f64", CF_VALUE_F64, sizeof(fsum_state), fsum_init,
                                   noop_fini, fsum_add, fsum_merge, favg_result, fsum_reset};
const cf_agg_ops cf_agg_min_i64 = {"min_i64", CF_VALUE_I64, sizeof(ext_state), ext_init,
                                   noop_fini, min_i64_add, min_merge, ext_result, ext_reset};
const cf_agg_ops cf_agg_min_f64 = {"min_f64", CF_VALUE_F64, sizeof(ext_state), ext_init,
                                   noop_fini, min_f64_add, min_merge, ext_result, ext_reset};
const cf_agg_ops cf_agg_max_i64 = {"max_i64", CF_VALUE_I64, sizeof(ext_state), ext_init,
                                   noop_fini, max_i64_add, max_merge, ext_result, ext_reset};
const cf_agg_ops cf_agg_max_f64 = {"max_f64", CF_VALUE_F64, sizeof(ext_state), ext_init,
                                   noop_fini, max_f64_add, max_merge, ext_result, ext_reset};
const cf_agg_ops cf_agg_distinct = {"distinct", CF_VALUE_U64, sizeof(distinct_state),
                                    distinct_init, distinct_fini, distinct_add, distinct_merge,
                                    distinct_result, distinct_reset};

const cf_agg_ops *cf_agg_lookup(const char *name)
{
    static const cf_agg_ops *const all[] = {
        &cf_agg_count, &cf_agg_sum_i64, &cf_agg_sum_f64, &cf_agg_avg_i64, &cf_agg_avg_f64,
        &cf_agg_min_i64, &cf_agg_min_f64, &cf_agg_max_i64, &cf_agg_max_f64, &cf_agg_distinct,
    };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (strcmp(all[i]->name, name) == 0)
            return all[i];
    return NULL;
}
