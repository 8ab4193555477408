/* sql_agg_distinct: COUNT(DISTINCT) (sql_agg_int.h): up to four hashes
 * inline, then a HyperLogLog; and a state's sketch as cf_hll bytes. */
#include <errno.h>

#include "sql_agg_int.h"

/* ---- COUNT(DISTINCT) ---------------------------------------------------------- */

int sql_agg_distinct_merge(st_distinct *d, const st_distinct *s)
{
    if (!d_is_hll(s)) {
        for (uint8_t i = 0; i < INLINE_DISTINCT && s->w[i]; i++) {
            int rc = sql_agg_distinct_add(d, s->w[i]);
            if (rc < 0)
                return rc;
        }
        return 0;
    }
    if (!d_is_hll(d)) {
        cf_hll *hll = cf_hll_clone(d_hll(s));
        if (!hll)
            return -ENOMEM;
        for (uint8_t i = 0; i < INLINE_DISTINCT && d->w[i]; i++)
            if (cf_hll_add(hll, d->w[i]) < 0) {
                cf_hll_free(hll);
                return -ENOMEM;
            }
        d_set_hll(d, hll);
        return 0;
    }
    return cf_hll_merge(d_hll(d), d_hll(s));
}

uint64_t sql_agg_distinct_count(const st_distinct *s)
{
    return d_is_hll(s) ? cf_hll_count(d_hll(s)) : d_n(s);
}

int sql_agg_sketch_save(const sql_agg_set *set, const void *st, uint32_t i, cf_buf *out)
{
    if (i >= set->n || set->spec[i].kind != SQL_AGG_COUNT_DISTINCT)
        return -EINVAL;
    const st_distinct *s = cslot_of(set, st, i);
    if (d_is_hll(s))
        return cf_hll_save(d_hll(s), out);
    /* The inline hashes become a (sparse, exact) sketch of their own. */
    cf_hll *h = cf_hll_new();
    int rc = h ? 0 : -ENOMEM;
    for (uint8_t j = 0; rc == 0 && j < d_n(s); j++)
        rc = cf_hll_add(h, s->w[j]) < 0 ? -ENOMEM : 0;
    if (rc == 0)
        rc = cf_hll_save(h, out);
    cf_hll_free(h);
    return rc;
}
