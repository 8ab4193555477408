/* sql_agg_save: a state block as bytes and back (snapshots), and the heap
 * memory it holds (sql_agg.h, sql_agg_int.h). */
#include <errno.h>

#include "sql_agg_int.h"

#define SAVE_VERSION 1u
#define DISTINCT_IN_HLL 0xff /* the count byte of a saved sketch */
/* A saved string may not claim more than this (a corrupt snapshot cannot
 * make load allocate without bound). */
#define MAX_SAVED_STR (1u << 24)

/* ---- save / load ----------------------------------------------------------------------
 * u8 version, u32 n, then per aggregate u8 kind and its payload:
 *   counts: u64; distinct: u8 n, n x u64 or a cf_hll encoding (n = 255);
 *   sum/avg: u8 mode, i64, f64, u64 n; min/max: value; earliest/latest:
 *   value, i64 ts, u64 arrival; topk: u32 n, n x (value, u64 count, u64
 *   err); decayed: i64 ref, f64 v.  A value is u8 type + payload. */

int sql_agg_save(const sql_agg_set *set, const void *st, cf_buf *out)
{
    cf_buf_put_u8(out, SAVE_VERSION);
    cf_buf_put_u32(out, set->n);
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        cf_buf_put_u8(out, (uint8_t)set->spec[i].kind);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_STAR:
        case SQL_AGG_COUNT: cf_buf_put_u64(out, ((const st_count *)p)->n); break;
        case SQL_AGG_COUNT_DISTINCT: {
            const st_distinct *s = p;
            uint8_t n = d_is_hll(s) ? DISTINCT_IN_HLL : d_n(s);
            cf_buf_put_u8(out, n);
            if (n == DISTINCT_IN_HLL)
                cf_hll_save(d_hll(s), out);
            else
                for (uint8_t j = 0; j < n; j++)
                    cf_buf_put_u64(out, s->w[j]);
            break;
        }
        case SQL_AGG_SUM:
        case SQL_AGG_AVG: {
            const st_sum *s = p;
            cf_buf_put_u8(out, s->mode);
            cf_buf_put_i64(out, s->i);
            cf_buf_put_f64(out, s->d);
            cf_buf_put_u64(out, s->n);
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: sql_value_save(out, ov(p)); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: {
            const st_edge *e = p;
            sql_value_save(out, ov(&e->o));
            cf_buf_put_i64(out, e->ts);
            cf_buf_put_u64(out, e->arrival);
            break;
        }
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)p)->t;
            uint32_t n = t ? t->n : 0;
            cf_buf_put_u32(out, n);
            for (uint32_t j = 0; j < n; j++) {
                sql_value_save(out, ov(&t->e[j].val));
                cf_buf_put_u64(out, t->e[j].count);
                cf_buf_put_u64(out, t->e[j].err);
            }
            break;
        }
        case SQL_AGG_DECAYED_COUNT: {
            const st_decay *d = p;
            cf_buf_put_i64(out, d->ref);
            cf_buf_put_f64(out, d->v);
            break;
        }
        default: break;
        }
    }
    return out->oom ? -ENOMEM : 0;
}

static int load_one(const sql_agg_set *set, void *st, uint32_t i, cf_reader *in)
{
    void *p = slot_of(set, st, i);
    const sql_agg_spec *sp = &set->spec[i];
    switch (sp->kind) {
    case SQL_AGG_COUNT_STAR:
    case SQL_AGG_COUNT: return cf_get_u64(in, &((st_count *)p)->n) ? 0 : -EINVAL;
    case SQL_AGG_COUNT_DISTINCT: {
        st_distinct *s = p;
        uint8_t n;
        if (!cf_get_u8(in, &n) || (n > INLINE_DISTINCT && n != DISTINCT_IN_HLL))
            return -EINVAL;
        if (n == DISTINCT_IN_HLL) {
            cf_hll *h = cf_hll_load(in);
            if (!h)
                return -EINVAL;
            d_set_hll(s, h);
            return 0;
        }
        for (uint8_t j = 0; j < n; j++) {
            uint64_t h;
            if (!cf_get_u64(in, &h) || h != d_fix(h))
                return -EINVAL;
            for (uint8_t x = 0; x < j; x++)
                if (s->w[x] == h)
                    return -EINVAL;
            s->w[j] = h;
        }
        return 0;
    }
    case SQL_AGG_SUM:
    case SQL_AGG_AVG: {
        st_sum *s = p;
        if (!cf_get_u8(in, &s->mode) || !cf_get_i64(in, &s->i) || !cf_get_f64(in, &s->d) ||
            !cf_get_u64(in, &s->n) || s->mode > 2 || (s->mode == 0) != (s->n == 0))
            return -EINVAL;
        return 0;
    }
    case SQL_AGG_MIN:
    case SQL_AGG_MAX: {
        sql_value v;
        if (!sql_value_load(in, MAX_SAVED_STR, &v))
            return -EINVAL;
        return sql_agg_owned_set(p, v);
    }
    case SQL_AGG_EARLIEST:
    case SQL_AGG_LATEST: {
        st_edge *e = p;
        sql_value v;
        if (!sql_value_load(in, MAX_SAVED_STR, &v) || !cf_get_i64(in, &e->ts) || !cf_get_u64(in, &e->arrival))
            return -EINVAL;
        return sql_agg_owned_set(&e->o, v);
    }
    case SQL_AGG_TOPK: {
        uint32_t n;
        if (!cf_get_u32(in, &n) || n > sql_agg_topk_counters(sp->param))
            return -EINVAL;
        for (uint32_t j = 0; j < n; j++) {
            sql_value v;
            uint64_t count, err;
            if (!sql_value_load(in, MAX_SAVED_STR, &v) || !cf_get_u64(in, &count) || !cf_get_u64(in, &err) ||
                v.type == SQL_NULL || count == 0)
                return -EINVAL;
            uint64_t h = sql_agg_value_hash(v);
            if (sql_agg_topk_find(((st_topk *)p)->t, h, v))
                return -EINVAL;
            int rc = sql_agg_topk_add(p, sp->param, v, h, count, err, true);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    case SQL_AGG_DECAYED_COUNT: {
        st_decay *d = p;
        if (!cf_get_i64(in, &d->ref) || !cf_get_f64(in, &d->v) || !(d->v >= 0) ||
            (d->ref != INT64_MIN && (d->ref > TS_LIMIT || d->ref < -TS_LIMIT)))
            return -EINVAL;
        return 0;
    }
    default: return -EINVAL;
    }
}

int sql_agg_load(const sql_agg_set *set, void *st, cf_reader *in)
{
    sql_agg_init(set, st);
    uint8_t version;
    uint32_t n;
    if (!cf_get_u8(in, &version) || version != SAVE_VERSION || !cf_get_u32(in, &n) || n != set->n)
        return -EINVAL;
    for (uint32_t i = 0; i < set->n; i++) {
        uint8_t kind;
        int rc = -EINVAL;
        if (cf_get_u8(in, &kind) && kind == (uint8_t)set->spec[i].kind)
            rc = load_one(set, st, i, in);
        if (rc < 0) {
            sql_agg_fini(set, st);
            sql_agg_init(set, st);
            return rc;
        }
    }
    return 0;
}

size_t sql_agg_bytes(const sql_agg_set *set, const void *st)
{
    size_t b = 0;
    for (uint32_t i = 0; i < set->n; i++) {
        const void *p = cslot_of(set, st, i);
        switch (set->spec[i].kind) {
        case SQL_AGG_COUNT_DISTINCT: {
            const st_distinct *s = p;
            if (d_is_hll(s))
                b += cf_hll_memory(d_hll(s));
            break;
        }
        case SQL_AGG_MIN:
        case SQL_AGG_MAX: b += owned_bytes(p); break;
        case SQL_AGG_EARLIEST:
        case SQL_AGG_LATEST: b += owned_bytes(&((const st_edge *)p)->o); break;
        case SQL_AGG_TOPK: {
            const topk *t = ((const st_topk *)p)->t;
            if (t) {
                b += sql_agg_topk_size(t->cap);
                for (uint32_t j = 0; j < t->n; j++)
                    b += owned_bytes(&t->e[j].val);
            }
            break;
        }
        default: break;
        }
    }
    return b;
}
