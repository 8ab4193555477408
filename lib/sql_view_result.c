/* sql_view_result.c: results out of states: a row per group and window or
 * session, sorted where the API promises an order; the open windows and
 * sessions, a scan of running rows and a key's lookup. */
#include "sql_view_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- emitting ----------------------------------------------------------------- */

void sql_view_emit_row(const sql_view *cv, const group *g, const void *st, int64_t start,
                       int64_t end, uint32_t rev, bool final, int64_t now, sql_view_emit_fn emit,
                       void *ctx)
{
    if (!emit)
        return;
    /* The scratch members are the view's working memory. */
    sql_view *v = (sql_view *)cv;
    cf_buf_reset(&v->text);
    (void)sql_agg_results(v->aggs, st, now, &v->text, v->res);
    sql_view_result r = {
        .start = start,
        .end = end,
        .key = g->key,
        .nkeys = v->cfg.nkeys,
        .aggs = v->res,
        .naggs = v->cfg.naggs,
        .revision = rev,
        .final = final,
        .agg_set = v->aggs,
        .state = st,
    };
    emit(ctx, &r);
}

void sql_view_emit_sess(const sql_view *v, const sess *x, bool final, sql_view_emit_fn emit,
                        void *ctx)
{
    sql_view_emit_row(v, x->g, sess_state(x), x->first, x->last, x->revision, final, x->last,
                      emit, ctx);
}

int sql_view_sort_reserve(const sql_view *cv, size_t n)
{
    sql_view *v = (sql_view *)cv;
    if (n <= v->sort_cap)
        return 0;
    size_t ncap = v->sort_cap ? v->sort_cap : 64;
    while (ncap < n)
        ncap *= 2;
    void **s = realloc(v->sort, ncap * sizeof *s);
    if (!s)
        return -ENOMEM;
    v->sort = s;
    v->sort_cap = ncap;
    return 0;
}
static void sift(const sql_view *v, void **a, size_t i, size_t n, ptr_cmp_fn cmp)
{
    void *x = a[i];
    for (;;) {
        size_t l = 2 * i + 1, best = l;
        if (l >= n)
            break;
        if (l + 1 < n && cmp(v, a[l + 1], a[l]) > 0)
            best = l + 1;
        if (cmp(v, a[best], x) <= 0)
            break;
        a[i] = a[best];
        i = best;
    }
    a[i] = x;
}

void sql_view_sort_ptrs(const sql_view *v, void **a, size_t n, ptr_cmp_fn cmp)
{
    for (size_t i = n / 2; i > 0; i--)
        sift(v, a, i - 1, n, cmp);
    for (size_t end = n; end > 1; end--) {
        void *t = a[0];
        a[0] = a[end - 1];
        a[end - 1] = t;
        sift(v, a, 0, end - 1, cmp);
    }
}

int sql_view_cmp_group_key(const sql_view *v, const void *a, const void *b)
{
    const group *x = a, *y = b;
    return key_cmp(x->key, y->key, v->cfg.nkeys);
}

static int cmp_sess_fire(const sql_view *v, const void *a, const void *b)
{
    const sess *x = a, *y = b;
    /* open sessions only: the action is firing */
    int64_t s = x->last, t = y->last;
    if (s != t)
        return s < t ? -1 : 1;
    if (x->g != y->g) {
        int c = key_cmp(x->g->key, y->g->key, v->cfg.nkeys);
        if (c)
            return c;
    }
    return (x->first > y->first) - (x->first < y->first);
}

size_t sql_view_foreach_open(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    size_t n = 0;
    if (v->cfg.window == SQL_WINDOW_TUMBLING || v->cfg.window == SQL_WINDOW_HOPPING) {
        for (uint32_t i = 0; i < v->nslots; i++) {
            if (fire_due(v, v->slots[i].start + v->cfg.size_ms))
                continue;
            n += sql_view_emit_window(v, i, false, now, emit, ctx);
        }
        return n;
    }
    if (sql_view_sort_reserve(v, v->heap_n) < 0)
        return 0;
    for (uint32_t i = 0; i < v->heap_n; i++)
        if (v->cfg.window == SQL_WINDOW_NONE || !((sess *)v->heap[i])->fired)
            v->sort[n++] = v->heap[i];
    if (v->cfg.window == SQL_WINDOW_SESSION) {
        sql_view_sort_ptrs(v, v->sort, n, cmp_sess_fire);
        for (size_t i = 0; i < n; i++)
            sql_view_emit_sess(v, v->sort[i], false, emit, ctx);
    } else {
        sql_view_sort_ptrs(v, v->sort, n, sql_view_cmp_group_key);
        for (size_t i = 0; i < n; i++) {
            const group *g = v->sort[i];
            sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now,
                              emit, ctx);
        }
    }
    return n;
}

size_t sql_view_scan(const sql_view *v, int64_t now, sql_view_emit_fn emit, void *ctx)
{
    if (v->cfg.window != SQL_WINDOW_NONE || !v->groups.s)
        return 0;
    size_t n = 0;
    for (uint32_t i = 0; i <= v->groups.mask; i++) {
        const group *g = v->groups.s[i].p;
        if (!g)
            continue;
        sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit,
                          ctx);
        n++;
    }
    return n;
}

size_t sql_view_lookup(const sql_view *v, const sql_value *key, int64_t now,
                       sql_view_emit_fn emit, void *ctx)
{
    group *g = sql_view_group_find(v, key_hash(v, key), key);
    if (!g)
        return 0;
    size_t n = 0;
    switch (v->cfg.window) {
    case SQL_WINDOW_NONE:
        sql_view_emit_row(v, g, group_state(v, g), g->last_ts, g->last_ts, 0, false, now, emit,
                          ctx);
        return 1;
    case SQL_WINDOW_SESSION:
        for (const sess *x = g->sessions; x; x = x->next)
            if (!x->fired) {
                sql_view_emit_sess(v, x, false, emit, ctx);
                n++;
            }
        return n;
    default:
        for (uint32_t i = 0; i < v->nslots; i++) {
            int64_t w = v->slots[i].start;
            if (fire_due(v, w + v->cfg.size_ms))
                continue;
            merger mg = {0};
            bool prior;
            sql_view_merge_group(v, w, g, &mg, &prior);
            if (mg.n) {
                sql_view_emit_row(v, g, sql_view_merged_state(v, &mg), w, w + v->cfg.size_ms, 0,
                                  false, now, emit, ctx);
                n++;
            }
        }
        return n;
    }
}
