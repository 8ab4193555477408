/* sql_pull: pull query answers (see the header). */
#include "sql_pull.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_agg.h"
#include "sql_exec.h"

typedef struct rec {
    const char *id;
    size_t id_len;
    uint32_t revision;
    sql_value *v;
    uint32_t n;
    sql_value *keys;        /* ORDER BY values */
} rec;

typedef struct order_ctx {
    const bool *desc;
    uint32_t n;
} order_ctx;

static int id_cmp(const rec *a, const rec *b)
{
    size_t n = a->id_len < b->id_len ? a->id_len : b->id_len;
    int c = memcmp(a->id, b->id, n);
    if (c)
        return c;
    if (a->id_len != b->id_len)
        return a->id_len < b->id_len ? -1 : 1;
    return a->revision < b->revision ? -1 : a->revision > b->revision;
}

static int order_cmp(const rec *a, const rec *b, const order_ctx *o)
{
    for (uint32_t i = 0; o && i < o->n; i++) {
        int c = sql_agg_value_cmp(a->keys[i], b->keys[i]);
        if (c)
            return o->desc[i] ? -c : c;
    }
    return id_cmp(a, b);    /* a total order: answers do not depend on shards */
}

/* Stable merge sort with a context (qsort has none). O(n log n). */
static void sort_recs(rec *v, rec *tmp, size_t n, const order_ctx *o)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    sort_recs(v, tmp, h, o);
    sort_recs(v + h, tmp, n - h, o);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n)
        tmp[k++] = order_cmp(&v[j], &v[i], o) < 0 ? v[j++] : v[i++];
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int read_part(const cf_buf *b, rec **recs, size_t *n, size_t *cap)
{
    cf_reader r;
    cf_reader_init(&r, b->data, b->len);
    while (r.left > 0) {
        if (*n == *cap) {
            size_t nc = *cap ? *cap * 2 : 64;
            rec *g = realloc(*recs, nc * sizeof *g);
            if (!g)
                return -ENOMEM;
            *recs = g;
            *cap = nc;
        }
        rec *x = &(*recs)[*n];
        memset(x, 0, sizeof *x);
        uint32_t ncols = 0;
        if (!cf_get_str(&r, &x->id, &x->id_len) || !cf_get_u32(&r, &x->revision) ||
            !cf_get_u32(&r, &ncols) || ncols > 4096)
            return -EINVAL;
        x->v = calloc(ncols ? ncols : 1, sizeof *x->v);
        if (!x->v)
            return -ENOMEM;
        x->n = ncols;
        (*n)++;
        for (uint32_t i = 0; i < ncols; i++)
            if (!cf_sqlx_get_value(&r, &x->v[i]))
                return -EINVAL;
    }
    return 0;
}

int cf_sqlpull_answer(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                      size_t max_items, cJSON **ret)
{
    *ret = NULL;
    rec *recs = NULL, *tmp = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    int rc = 0;
    sql_scratch scratch = {0};
    sql_sb sb = {0};
    for (size_t p = 0; p < nparts && rc == 0; p++) {
        if (parts[p]) {
            rc = read_part(parts[p], &recs, &n, &cap);
            bytes += parts[p]->len;
        }
    }
    tmp = rc == 0 ? malloc((n ? n : 1) * sizeof *tmp) : NULL;
    scratch.cap = ((size_t)1 << 20) + 2 * bytes;
    scratch.buf = rc == 0 ? malloc(scratch.cap) : NULL;
    if (rc == 0 && (!tmp || !scratch.buf))
        rc = -ENOMEM;
    if (rc)
        goto out;
    /* Newest revision of each window and group (a window fired again
     * within its grace period is kept once per revision). */
    sort_recs(recs, tmp, n, NULL);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        bool newer_follows = i + 1 < n && recs[i + 1].id_len == recs[i].id_len &&
                             memcmp(recs[i + 1].id, recs[i].id, recs[i].id_len) == 0;
        if (newer_follows) {
            free(recs[i].v);
            continue;
        }
        recs[k++] = recs[i];
    }
    n = k;
    /* WHERE, then the ORDER BY values of the rows kept. */
    k = 0;
    for (size_t i = 0; i < n; i++) {
        rec *x = &recs[i];
        sql_row row = {.v = x->v, .n = x->n, .rowtime = 0};
        sql_value f;
        size_t mark = scratch.used;
        bool keep = !pi->filter || (sql_prog_eval(pi->filter, &row, &scratch, &f) == 0 &&
                                    sql_value_is_true(f));
        scratch.used = mark;
        if (keep && pi->norder_by > 0) {
            x->keys = calloc(pi->norder_by, sizeof *x->keys);
            if (!x->keys) {
                rc = -ENOMEM;
                keep = false;
            }
            for (uint32_t o = 0; x->keys && o < pi->norder_by; o++)
                if (sql_prog_eval(pi->order_by[o], &row, &scratch, &x->keys[o]) < 0)
                    x->keys[o] = sql_null();
        }
        if (!keep) {
            free(x->v);
            free(x->keys);
            continue;
        }
        recs[k++] = *x;
    }
    n = k;
    if (rc)
        goto out;
    order_ctx oc = {pi->order_desc, pi->norder_by};
    if (pi->norder_by > 0)
        sort_recs(recs, tmp, n, &oc);
    size_t limit = pi->limit >= 0 && (size_t)pi->limit < max_items ? (size_t)pi->limit : max_items;
    sql_sb_puts(&sb, "{\"items\":[");
    for (size_t i = 0; i < n && i < limit; i++) {
        sql_row row = {.v = recs[i].v, .n = recs[i].n, .rowtime = 0};
        sql_sb_puts(&sb, i ? ",{" : "{");
        size_t mark = scratch.used;
        for (uint32_t c = 0; c < pi->ncolumns; c++) {
            sql_value v;
            if (sql_prog_eval(pi->columns[c].prog, &row, &scratch, &v) < 0)
                v = sql_null();
            if (c)
                sql_sb_puts(&sb, ",");
            sql_sb_put_json_string(&sb, pi->columns[c].name, strlen(pi->columns[c].name));
            sql_sb_puts(&sb, ":");
            sql_value_to_json(v, &sb);
        }
        scratch.used = mark;
        sql_sb_puts(&sb, "}");
    }
    sql_sb_puts(&sb, "]}");
    if (sb.oom) {
        rc = -ENOMEM;
        goto out;
    }
    *ret = cJSON_ParseWithLength(sb.data, sb.len);
    if (!*ret)
        rc = -ENOMEM;
out:
    for (size_t i = 0; i < n; i++) {
        free(recs[i].v);
        free(recs[i].keys);
    }
    free(recs);
    free(tmp);
    free(scratch.buf);
    sql_sb_free(&sb);
    return rc;
}
