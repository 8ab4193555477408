/* sql_agg_scalar: SUM/AVG (BIGINT until a DOUBLE or an overflow) and
 * DECAYED_COUNT (sql_agg_int.h). */
#include <errno.h>
#include <math.h>

#include "sql_agg_int.h"

/* DECAYED_COUNT moves its reference time to a row more than this many
 * half-lives after it, so the value stays below rows * 2^64. */
#define DECAY_RESCALE 64

/* ---- SUM / AVG ------------------------------------------------------------------ */

static void sum_add_double(st_sum *s, double d)
{
    if (s->mode == 1)
        s->d = (double)s->i;
    else if (s->mode == 0)
        s->d = 0;
    s->mode = 2;
    s->d += d;
}

int sql_agg_sum_add(st_sum *s, sql_value v)
{
    if (v.type == SQL_BIGINT) {
        int64_t r;
        if (s->mode == 0) {
            s->i = v.u.i;
            s->mode = 1;
        } else if (s->mode == 1 && !__builtin_add_overflow(s->i, v.u.i, &r)) {
            s->i = r;
        } else {
            sum_add_double(s, (double)v.u.i);
        }
    } else if (v.type == SQL_DOUBLE) {
        sum_add_double(s, v.u.d);
    } else {
        return -EINVAL;
    }
    s->n++;
    return 0;
}

void sql_agg_sum_merge(st_sum *d, const st_sum *s)
{
    if (s->mode == 1) {
        st_sum tmp = *d;
        (void)sql_agg_sum_add(&tmp, sql_bigint(s->i));
        *d = tmp;
    } else if (s->mode == 2) {
        sum_add_double(d, s->d);
    }
    /* sql_agg_sum_add counted one value; the true count is the sum of both. */
    if (s->mode == 1)
        d->n--;
    d->n += s->n;
}

/* ---- DECAYED_COUNT ----------------------------------------------------------------- */

static inline int64_t clamp_ts(int64_t ts)
{
    return ts > TS_LIMIT ? TS_LIMIT : ts < -TS_LIMIT ? -TS_LIMIT : ts;
}

void sql_agg_decay_add(st_decay *s, int64_t h, int64_t ts, double w)
{
    ts = clamp_ts(ts);
    if (s->ref == INT64_MIN) {
        s->ref = ts;
        s->v = w;
    } else if (ts - s->ref > DECAY_RESCALE * h) {
        s->v = s->v * exp2((double)(s->ref - ts) / (double)h) + w;
        s->ref = ts;
    } else {
        s->v += w * exp2((double)(ts - s->ref) / (double)h);
    }
}

double sql_agg_decay_at(const st_decay *s, int64_t h, int64_t now)
{
    if (s->ref == INT64_MIN)
        return 0.0;
    return s->v * exp2((double)(s->ref - clamp_ts(now)) / (double)h);
}
