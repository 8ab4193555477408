/* sql_view_result.c: result rows out of aggregate states (a row per group
 * and window, session or running group) and the sort that puts them in the
 * order the API promises. */
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
    const group *g = sess_group(x);
    sql_view_emit_row(v, g, sql_view_sess_read(v, g, x), x->first, x->last, x->revision, final,
                      x->last, emit, ctx);
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

void sql_view_select_first(const sql_view *v, void **a, size_t n, size_t k, ptr_cmp_fn cmp)
{
    if (k < n) {
        /* a[0..k) a max-heap: its root is the largest kept, the one a
         * smaller candidate replaces. */
        for (size_t i = k / 2; i > 0; i--)
            sift(v, a, i - 1, k, cmp);
        for (size_t i = k; k > 0 && i < n; i++)
            if (cmp(v, a[i], a[0]) < 0) {
                a[0] = a[i];
                sift(v, a, 0, k, cmp);
            }
        n = k;
    }
    sql_view_sort_ptrs(v, a, n, cmp);
}

int sql_view_cmp_group_key(const sql_view *v, const void *a, const void *b)
{
    const group *x = a, *y = b;
    return key_cmp(x->key, y->key, v->cfg.nkeys);
}
