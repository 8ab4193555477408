/* sql_agg: the set of aggregates over a state block (sql_agg.h): the kinds,
 * the layout, and the per-row, merge and result dispatch over the kinds,
 * whose states live in the modules sql_agg_int.h lists. */
#include "sql_agg.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"
#include "sql_agg_int.h"

static const struct {
    const char *name;
    bool arg;
} kind_info[] = {
#define SQL_AGG_INFO_(name, sql, arg) {sql, arg},
    SQL_AGG_KINDS(SQL_AGG_INFO_)
#undef SQL_AGG_INFO_
};

const char *sql_agg_name(sql_agg_kind kind)
{
    return (unsigned)kind < SQL_AGG_KIND_COUNT_ ? kind_info[kind].name : NULL;
}

bool sql_agg_takes_arg(sql_agg_kind kind)
{
    return (unsigned)kind < SQL_AGG_KIND_COUNT_ && kind_info[kind].arg;
}

static size_t kind_size(sql_agg_kind k)
{
    switch (k) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: return sizeof(st_count);
    case SQL_AGG_COUNT_DISTINCT: return sizeof(st_distinct);
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: return sizeof(st_sum);
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: return sizeof(owned);
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: return sizeof(st_edge);
    case SQL_AGG_TOPK: return sizeof(st_topk);
    case SQL_AGG_DECAYED_COUNT: return sizeof(st_decay);
    default: return 0;
    }
}

/* ---- the set ------------------------------------------------------------------------ */

static bool spec_valid(const sql_agg_spec *s)
{
    if ((unsigned)s->kind >= SQL_AGG_KIND_COUNT_)
        return false;
    if (s->kind == SQL_AGG_TOPK)
        return s->param >= 1 && s->param <= SQL_AGG_TOPK_MAX;
    if (s->kind == SQL_AGG_DECAYED_COUNT)
        return s->param > 0 && s->param <= HALF_LIFE_MAX;
    return s->param == 0;
}

sql_agg_set *sql_agg_set_new(const sql_agg_spec *specs, uint32_t n)
{
    if (!specs || n == 0 || n > MAX_AGGS)
        return NULL;
    for (uint32_t i = 0; i < n; i++)
        if (!spec_valid(&specs[i]))
            return NULL;
    sql_agg_set *set = calloc(1, sizeof *set);
    if (!set)
        return NULL;
    set->n = n;
    size_t off = 0;
    for (uint32_t i = 0; i < n; i++) {
        set->spec[i] = specs[i];
        set->off[i] = (uint32_t)off;
        set->arg[i] = kind_info[specs[i].kind].arg;
        off += (kind_size(specs[i].kind) + 7) & ~(size_t)7;
        if (specs[i].kind == SQL_AGG_COUNT_DISTINCT)
            set->distinct[set->ndistinct++] = (uint8_t)i;
    }
    set->size = off;
    return set;
}

void sql_agg_set_free(sql_agg_set *set)
{
    free(set);
}

uint32_t sql_agg_set_count(const sql_agg_set *set)
{
    return set->n;
}

const sql_agg_spec *sql_agg_set_spec(const sql_agg_set *set, uint32_t i)
{
    return i < set->n ? &set->spec[i] : NULL;
}

size_t sql_agg_state_size(const sql_agg_set *set)
{
    return set->size;
}

bool sql_agg_set_equal(const sql_agg_set *a, const sql_agg_set *b)
{
    if (a->n != b->n)
        return false;
    for (uint32_t i = 0; i < a->n; i++)
        if (a->spec[i].kind != b->spec[i].kind || a->spec[i].param != b->spec[i].param)
            return false;
    return true;
}

void sql_agg_init(const sql_agg_set *set, void *st)
{
    memset(st, 0, set->size);
    for (uint32_t i = 0; i < set->n; i++)
        if (set->spec[i].kind == SQL_AGG_DECAYED_COUNT)
            ((st_decay *)slot_of(set, st, i))->ref = INT64_MIN;
}

void sql_agg_fini(const sql_agg_set *set, void *st)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *p = slot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            st_distinct *s = p;
            if (d_is_hll(s))
                cf_hll_free(d_hll(s));
            memset(s, 0, sizeof *s);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: sql_agg_owned_free(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: sql_agg_owned_free(&((st_edge *)p)->o); break;
        case SQL_AGG_TOPK: sql_agg_topk_free(p); break;
        default: break;
        }
    }
}

void sql_agg_clear(const sql_agg_set *set, void *st)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *p = slot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            st_distinct *s = p;
            if (d_is_hll(s))
                cf_hll_clear(d_hll(s));
            else
                memset(s, 0, sizeof *s);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: sql_agg_owned_free(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: sql_agg_owned_free(&((st_edge *)p)->o); memset(p, 0, sizeof(st_edge)); break;
        case SQL_AGG_TOPK: sql_agg_topk_free(p); break;
        case SQL_AGG_DECAYED_COUNT: ((st_decay *)p)->ref = INT64_MIN; ((st_decay *)p)->v = 0; break;
        default: memset(p, 0, kind_size(set->spec[i].kind)); break;
        }
    }
}

/* (ts, arrival) of a row against a kept one. */
static inline int cmp_when(int64_t ts, uint64_t arr, int64_t kts, uint64_t karr)
{
    if (ts != kts)
        return ts < kts ? -1 : 1;
    return (arr > karr) - (arr < karr);
}

/* Adds one row to aggregate i (value v, not NULL unless the kind takes no
 * argument). */
/* The argument comes by pointer: passed by value, GCC copied it through a
 * stack slot written in narrow stores and read in one 16-byte load, a
 * store-forwarding stall per aggregate on the hot path (perf annotate,
 * S2), though COUNT(*) and a hashed COUNT(DISTINCT) do not read it. */
static int add_one(const sql_agg_set *set, void *st, uint32_t i, const sql_value *vp,
                   const uint64_t *hashes, int64_t ts, uint64_t arrival)
{
    void *p = slot_of(set, st, i);
    const sql_agg_spec *sp = &set->spec[i];
    switch (sp->kind) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: ((st_count *)p)->n++; return 0;
    case SQL_AGG_COUNT_DISTINCT:
        /* A hash the caller computed once for several views, else STRING
         * without the dispatch: the common COUNT(DISTINCT user_id). */
        return sql_agg_distinct_add(p, d_fix(hashes ? hashes[i]
                                          : vp->type == SQL_STRING ? cf_hash64(vp->u.s, vp->len, 0)
                                                                   : sql_agg_value_hash(*vp)));
    default: break;
    }
    sql_value v = *vp;
    switch (sp->kind) {
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: return sql_agg_sum_add(p, v);
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: {
        owned *o = p;
        if (o->type != SQL_NULL) {
            int c = sql_agg_value_cmp(v, ov(o));
            if (sp->kind == SQL_AGG_MIN ? c >= 0 : c <= 0)
                return 0;
        }
        return sql_agg_owned_set(o, v);
    }
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: {
        st_edge *e = p;
        if (e->o.type != SQL_NULL) {
            int c = cmp_when(ts, arrival, e->ts, e->arrival);
            if (sp->kind == SQL_AGG_EARLIEST ? c >= 0 : c <= 0)
                return 0;
        }
        int rc = sql_agg_owned_set(&e->o, v);
        if (rc == 0) {
            e->ts = ts;
            e->arrival = arrival;
        }
        return rc;
    }
    case SQL_AGG_TOPK: return sql_agg_topk_add(p, sp->param, v, sql_agg_value_hash(v), 1, 0, true);
    case SQL_AGG_DECAYED_COUNT: sql_agg_decay_add(p, sp->param, ts, 1.0); return 0;
    default: return -EINVAL;
    }
}

void sql_agg_prefetch(const sql_agg_set *set, const void *st, const uint64_t *hashes,
                      unsigned step)
{
    for (uint32_t k = 0; k < set->ndistinct; k++) {
        uint32_t i = set->distinct[k];
        const st_distinct *s = cslot_of(set, st, i);
        if (!d_is_hll(s))
            continue;
        if (step == 0)
            __builtin_prefetch(d_hll(s));
        else if (hashes)
            cf_hll_prefetch(d_hll(s), d_fix(hashes[i]));
    }
}

uint64_t sql_agg_distinct_hash(sql_value v)
{
    return sql_agg_value_hash(v);
}

int sql_agg_add(const sql_agg_set *set, void *st, const sql_value *args, int64_t ts,
                uint64_t arrival)
{
    return sql_agg_add_hashed(set, st, args, NULL, ts, arrival);
}

int sql_agg_add_hashed(const sql_agg_set *set, void *st, const sql_value *args,
                       const uint64_t *hashes, int64_t ts, uint64_t arrival)
{
    static const sql_value none;    /* COUNT(*)'s and DECAYED_COUNT's argument */
    int rc = 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const sql_value *v = &none;
        if (set->arg[i]) {
            if (!args || args[i].type == SQL_NULL)
                continue;
            v = &args[i];
        }
        int r = add_one(set, st, i, v, hashes, ts, arrival);
        if (r < 0 && (rc == 0 || r == -ENOMEM))
            rc = r;
    }
    return rc;
}

int sql_agg_merge(const sql_agg_set *set, void *dst, const void *src)
{
    for (uint32_t i = 0; i < set->n; i++) {
        void *d = slot_of(set, dst, i);
        const void *s = cslot_of(set, src, i);
        const sql_agg_spec *sp = &set->spec[i];
        int rc = 0;
        switch (sp->kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: ((st_count *)d)->n += ((const st_count *)s)->n; break;
        case SQL_AGG_COUNT_DISTINCT: rc = sql_agg_distinct_merge(d, s); break;
        case SQL_AGG_SUM:
        case SQL_AGG_AVG: sql_agg_sum_merge(d, s); break;
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: {
            const owned *so = s;
            owned *dout = d;
            if (so->type == SQL_NULL)
                break;
            if (dout->type != SQL_NULL) {
                int c = sql_agg_value_cmp(ov(so), ov(dout));
                if (sp->kind == SQL_AGG_MIN ? c >= 0 : c <= 0)
                    break;
            }
            rc = sql_agg_owned_set(dout, ov(so));
            break;
        }
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: {
            const st_edge *se = s;
            st_edge *de = d;
            if (se->o.type == SQL_NULL)
                break;
            if (de->o.type != SQL_NULL) {
                int c = cmp_when(se->ts, se->arrival, de->ts, de->arrival);
                if (sp->kind == SQL_AGG_EARLIEST ? c >= 0 : c <= 0)
                    break;
            }
            rc = sql_agg_owned_set(&de->o, ov(&se->o));
            if (rc == 0) {
                de->ts = se->ts;
                de->arrival = se->arrival;
            }
            break;
        }
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)s)->t;
            for (uint32_t j = 0; t && j < t->n && rc == 0; j++)
                rc = sql_agg_topk_add(d, sp->param, ov(&t->e[j].val), t->e[j].hash, t->e[j].count,
                              t->e[j].err, false);
            if (rc == 0)
                rc = sql_agg_topk_trim(d, sp->param);
            break;
        }
        case SQL_AGG_DECAYED_COUNT: {
            const st_decay *sd = s;
            st_decay *dd = d;
            if (sd->ref == INT64_MIN)
                break;
            if (dd->ref == INT64_MIN) {
                *dd = *sd;
            } else if (sd->ref > dd->ref) {
                dd->v = dd->v * exp2((double)(dd->ref - sd->ref) / (double)sp->param) + sd->v;
                dd->ref = sd->ref;
            } else {
                dd->v += sd->v * exp2((double)(sd->ref - dd->ref) / (double)sp->param);
            }
            break;
        }
        default: break;
        }
        if (rc < 0)
            return rc;
    }
    return 0;
}

int sql_agg_results(const sql_agg_set *set, const void *st, int64_t now, cf_buf *scratch,
                    sql_value *ret_values)
{
    int rc = 0;
    /* TOPK texts are placed first and pointed at last: scratch may move
     * while later ones are appended. */
    size_t text_at[MAX_AGGS];
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        const sql_agg_spec *sp = &set->spec[i];
        sql_value v = sql_null();
        text_at[i] = SIZE_MAX;
        switch (sp->kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: v = sql_bigint((int64_t)((const st_count *)p)->n); break;
        case SQL_AGG_COUNT_DISTINCT: v = sql_bigint((int64_t)sql_agg_distinct_count(p)); break;
        case SQL_AGG_SUM: {
            const st_sum *s = p;
            if (s->mode == 1)
                v = sql_bigint(s->i);
            else if (s->mode == 2)
                v = sql_double(s->d);
            break;
        }
        case SQL_AGG_AVG: {
            const st_sum *s = p;
            if (s->n)
                v = sql_double((s->mode == 1 ? (double)s->i : s->d) / (double)s->n);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: v = ov(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: v = ov(&((const st_edge *)p)->o); break;
        case SQL_AGG_TOPK: {
            if (!scratch) {
                rc = -ENOMEM;
                break;
            }
            size_t at = scratch->len;
            if (sql_agg_topk_result(p, sp->param, scratch)) {
                text_at[i] = at;
                v.type = SQL_ARRAY;
                v.len = (uint32_t)(scratch->len - at);
            } else {
                rc = -ENOMEM;
            }
            break;
        }
        case SQL_AGG_DECAYED_COUNT: v = sql_double(sql_agg_decay_at(p, sp->param, now)); break;
        default: break;
        }
        ret_values[i] = v;
    }
    for (uint32_t i = 0; i < set->n; i++)
        if (text_at[i] != SIZE_MAX)
            ret_values[i].u.s = (const char *)scratch->data + text_at[i];
    return rc;
}
