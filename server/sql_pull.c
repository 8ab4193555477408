/* sql_pull: pull query answers (see the header). */
#include "sql_pull.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "history.h"
#include "sql_agg.h"
#include "sql_exec.h"
#include "sql_expr.h"

typedef struct rec {
    const char *id;
    size_t id_len;
    uint32_t revision;
    sql_value *v;
    uint32_t n;
    sql_value *keys;        /* ORDER BY values */
    char *own_id;           /* the ranged identity, when made here */
    bool hist;              /* read from history.db */
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

/* The ranged identity: window start as 8 bytes that sort like the
 * number, then the group values as a JSON array (history.db's grp). */
static void ranged_id(sql_sb *sb, int64_t start)
{
    uint64_t u = (uint64_t)start ^ (UINT64_C(1) << 63);
    char b[8];
    for (int i = 0; i < 8; i++)
        b[i] = (char)(u >> (56 - 8 * i));
    sql_sb_put(sb, b, 8);
}

/* Rewrites a shard record's identity (i64 start, then the key values)
 * into the ranged form. */
static int canon_id(rec *x)
{
    cf_reader r;
    cf_reader_init(&r, x->id, x->id_len);
    int64_t start = 0;
    if (!cf_get_i64(&r, &start))
        return -EINVAL;
    sql_sb sb = {0};
    ranged_id(&sb, start);
    sql_sb_puts(&sb, "[");
    for (int k = 0; r.left > 0; k++) {
        sql_value v;
        if (!cf_sqlx_get_value(&r, &v)) {
            sql_sb_free(&sb);
            return -EINVAL;
        }
        if (k)
            sql_sb_puts(&sb, ",");
        sql_value_to_json(v, &sb);
    }
    sql_sb_puts(&sb, "]");
    if (sb.oom) {
        sql_sb_free(&sb);
        return -ENOMEM;
    }
    x->own_id = sb.data;
    x->id = sb.data;
    x->id_len = sb.len;
    return 0;
}

static int read_part(const cf_buf *b, rec **recs, size_t *n, size_t *cap, bool hist, bool canon)
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
        x->hist = hist;
        (*n)++;
        for (uint32_t i = 0; i < ncols; i++)
            if (!cf_sqlx_get_value(&r, &x->v[i]))
                return -EINVAL;
        int rc = canon ? canon_id(x) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

static int answer(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                  const cf_buf *hist, bool ranged, size_t max_items, cJSON **ret)
{
    *ret = NULL;
    rec *recs = NULL, *tmp = NULL;
    size_t n = 0, cap = 0, bytes = 0;
    int rc = 0;
    sql_scratch scratch = {0};
    sql_sb sb = {0};
    for (size_t p = 0; p < nparts && rc == 0; p++) {
        if (parts[p]) {
            rc = read_part(parts[p], &recs, &n, &cap, false, ranged);
            bytes += parts[p]->len;
        }
    }
    if (hist && rc == 0) {
        rc = read_part(hist, &recs, &n, &cap, true, false);
        bytes += hist->len;
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
    /* Ranged: memory wins for a window it still holds (its newest
     * revision there), else history's newest. */
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && recs[j].id_len == recs[i].id_len &&
               memcmp(recs[j].id, recs[i].id, recs[i].id_len) == 0)
            j++;
        size_t pick = j - 1;
        for (size_t m = i; m < j; m++)
            if (!recs[m].hist)
                pick = m;   /* ascending revisions: the last from memory */
        for (size_t m = i; m < j; m++) {
            if (m == pick)
                continue;
            free(recs[m].v);
            free(recs[m].own_id);
        }
        recs[k++] = recs[pick];
        i = j;
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
            free(x->own_id);
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
        free(recs[i].own_id);
    }
    free(recs);
    free(tmp);
    free(scratch.buf);
    sql_sb_free(&sb);
    return rc;
}

int cf_sqlpull_answer(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                      size_t max_items, cJSON **ret)
{
    return answer(pi, parts, nparts, NULL, false, max_items, ret);
}

int cf_sqlpull_answer_ranged(const sql_plan_info *pi, const cf_buf *const *parts, size_t nparts,
                             const cf_buf *hist, size_t max_items, cJSON **ret)
{
    return answer(pi, parts, nparts, hist, true, max_items, ret);
}

/* ---- WHERE ranges --------------------------------------------------------- */

typedef struct bounds {
    int64_t s_lo, s_hi, e_lo, e_hi;     /* WINDOWSTART / WINDOWEND, inclusive */
    bool any;
} bounds;

static void lower(int64_t *b, int64_t v) { if (v > *b) *b = v; }
static void upper(int64_t *b, int64_t v) { if (v < *b) *b = v; }

/* An integer literal filling [p, p+n), or false. */
static bool int_lit(const char *p, size_t n, int64_t *ret)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf)
        return false;
    memcpy(buf, p, n);
    buf[n] = '\0';
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end || end == buf)
        return false;
    *ret = v;
    return true;
}

/* 1 WINDOWSTART, 2 WINDOWEND, 0 anything else. */
static int bound_col(const char *p, size_t n)
{
    if (n >= 2 && p[0] == '"' && p[n - 1] == '"') {
        p++;
        n -= 2;
    }
    if (n == 11 && memcmp(p, "WINDOWSTART", 11) == 0)
        return 1;
    if (n == 9 && memcmp(p, "WINDOWEND", 9) == 0)
        return 2;
    return 0;
}

static void add_bound(bounds *b, int col, const char *op, int64_t v)
{
    int64_t *lo = col == 1 ? &b->s_lo : &b->e_lo, *hi = col == 1 ? &b->s_hi : &b->e_hi;
    if (strcmp(op, ">=") == 0) {
        lower(lo, v);
    } else if (strcmp(op, ">") == 0) {
        lower(lo, v == INT64_MAX ? v : v + 1);
    } else if (strcmp(op, "<=") == 0) {
        upper(hi, v);
    } else if (strcmp(op, "<") == 0) {
        upper(hi, v == INT64_MIN ? v : v - 1);
    } else if (strcmp(op, "=") == 0) {
        lower(lo, v);
        upper(hi, v);
    } else {
        return;
    }
    b->any = true;
}

/* The position of the top-level (depth 0, outside quotes) occurrence of
 * pat in [p, p+n), or -1. */
static long top_level(const char *p, size_t n, const char *pat)
{
    size_t pl = strlen(pat);
    int depth = 0;
    char q = 0;
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (q) {
            if (c == q)
                q = 0;
            continue;
        }
        if (c == '\'' || c == '"')
            q = c;
        else if (c == '(')
            depth++;
        else if (c == ')')
            depth--;
        else if (depth == 0 && i + pl <= n && memcmp(p + i, pat, pl) == 0)
            return (long)i;
    }
    return -1;
}

static const char *const OPS[] = {">=", "<=", "<>", "!=", ">", "<", "="};
static const char *flip(const char *op)
{
    return strcmp(op, ">=") == 0 ? "<=" : strcmp(op, "<=") == 0 ? ">=" : strcmp(op, ">") == 0 ? "<"
         : strcmp(op, "<") == 0 ? ">" : op;
}

/* One canonical expression "(...)" (sql_expr_to_sql: fully parenthesised):
 * a conjunction recurses, a comparison or BETWEEN of a window bound with
 * an integer literal adds a bound, anything else adds none (the WHERE
 * still filters; history is then read wider, never narrower). */
static void collect(const char *p, size_t n, bounds *b, int depth)
{
    if (depth > 64 || n < 2 || p[0] != '(' || p[n - 1] != ')')
        return;
    p++;
    n -= 2;
    long bt = top_level(p, n, " BETWEEN ");
    if (bt > 0) {
        int col = bound_col(p, (size_t)bt);
        const char *r = p + bt + 9;
        size_t rn = n - (size_t)bt - 9;
        long a = top_level(r, rn, " AND ");
        int64_t lo, hi;
        if (col && a > 0 && int_lit(r, (size_t)a, &lo) && int_lit(r + a + 5, rn - (size_t)a - 5, &hi)) {
            add_bound(b, col, ">=", lo);
            add_bound(b, col, "<=", hi);
        }
        return;
    }
    long a = top_level(p, n, " AND ");
    if (a > 0) {
        collect(p, (size_t)a, b, depth + 1);
        collect(p + a + 5, n - (size_t)a - 5, b, depth + 1);
        return;
    }
    for (size_t o = 0; o < sizeof OPS / sizeof OPS[0]; o++) {
        char pat[8];
        snprintf(pat, sizeof pat, " %s ", OPS[o]);
        long at = top_level(p, n, pat);
        if (at <= 0)
            continue;
        const char *rhs = p + at + strlen(pat);
        size_t rn = n - (size_t)at - strlen(pat);
        int64_t v;
        int col = bound_col(p, (size_t)at);
        if (col && int_lit(rhs, rn, &v))
            add_bound(b, col, OPS[o], v);
        else if ((col = bound_col(rhs, rn)) != 0 && int_lit(p, (size_t)at, &v))
            add_bound(b, col, flip(OPS[o]), v);
        return;
    }
}

bool cf_sqlpull_range(const sql_plan_info *pi, int64_t *from, int64_t *to)
{
    /* Only views have windows in history (a stream's column could be
     * named WINDOWSTART). */
    if (!pi->filter || !pi->filter_text || pi->source_kind != SQL_OBJ_VIEW)
        return false;
    bool windowed = false;
    for (uint32_t i = 0; i < pi->ninput; i++)
        windowed = windowed || strcmp(pi->input[i].name, "WINDOWSTART") == 0;
    if (!windowed)
        return false;
    bounds b = {INT64_MIN, INT64_MAX, INT64_MIN, INT64_MAX, false};
    collect(pi->filter_text, strlen(pi->filter_text), &b, 0);
    if (!b.any)
        return false;
    /* start >= from and end <= to are what history's key can bound; an
     * upper bound on the start or a lower one on the end reads wider. */
    *from = b.s_lo;
    *to = b.e_hi;
    return true;
}

/* ---- history rows as records --------------------------------------------- */

typedef struct hist_ctx {
    const sql_plan_info *pi;
    const uint32_t *map;        /* input column -> value index, or a window column */
    cf_buf *out;
    sql_sb id;
    int err;
} hist_ctx;

enum { COL_START = UINT32_MAX, COL_END = UINT32_MAX - 1, COL_REV = UINT32_MAX - 2,
       COL_FINAL = UINT32_MAX - 3 };

/* A stored value as a value of the column's type. Text is copied by
 * cf_sqlx_put_value before the next call. */
static void put_typed(cf_buf *out, sql_type t, const cf_history_val *v)
{
    char num[32];
    switch (v->type) {
    case CF_HISTORY_VAL_INT:
        if (t == SQL_TIMESTAMP)
            cf_sqlx_put_value(out, sql_timestamp(v->i));
        else if (t == SQL_DOUBLE)
            cf_sqlx_put_value(out, sql_double((double)v->i));
        else if (t == SQL_BOOLEAN)
            cf_sqlx_put_value(out, sql_bool(v->i != 0));
        else if (t == SQL_BIGINT)
            cf_sqlx_put_value(out, sql_bigint(v->i));
        else {
            int n = snprintf(num, sizeof num, "%lld", (long long)v->i);
            sql_value s = sql_string(num, (uint32_t)n);
            s.type = (uint8_t)(t == SQL_STRING || t == SQL_NULL ? SQL_STRING : t);
            cf_sqlx_put_value(out, s);
        }
        break;
    case CF_HISTORY_VAL_REAL:
        if (t == SQL_BIGINT || t == SQL_TIMESTAMP) {
            sql_value x = sql_bigint((int64_t)v->d);
            x.type = (uint8_t)t;
            cf_sqlx_put_value(out, x);
        } else {
            cf_sqlx_put_value(out, sql_double(v->d));
        }
        break;
    case CF_HISTORY_VAL_TEXT: {
        sql_value s = sql_string(v->s ? v->s : "", (uint32_t)v->len);
        if (t == SQL_ARRAY || t == SQL_JSON)
            s.type = (uint8_t)t;
        cf_sqlx_put_value(out, s);
        break;
    }
    default: cf_sqlx_put_value(out, sql_null()); break;
    }
}

static int hist_row(void *ctx, int64_t start, int64_t end, const char *group, size_t group_len,
                    uint32_t revision, const cf_history_val *vals, size_t n)
{
    hist_ctx *c = ctx;
    (void)n;
    c->id.len = 0;
    ranged_id(&c->id, start);
    sql_sb_put(&c->id, group ? group : "", group_len);
    if (c->id.oom) {
        c->err = -ENOMEM;
        return 1;
    }
    cf_buf_put_str(c->out, c->id.data, c->id.len);
    cf_buf_put_u32(c->out, revision);
    cf_buf_put_u32(c->out, c->pi->ninput);
    for (uint32_t i = 0; i < c->pi->ninput; i++) {
        uint32_t m = c->map[i];
        if (m == COL_START)
            cf_sqlx_put_value(c->out, sql_timestamp(start));
        else if (m == COL_END)
            cf_sqlx_put_value(c->out, sql_timestamp(end));
        else if (m == COL_REV)
            cf_sqlx_put_value(c->out, sql_bigint(revision));
        else if (m == COL_FINAL)
            cf_sqlx_put_value(c->out, sql_bool(true));
        else
            put_typed(c->out, c->pi->input[i].type, &vals[m]);
    }
    if (c->out->oom) {
        c->err = -ENOMEM;
        return 1;
    }
    return 0;
}

long cf_sqlpull_history_part(cf_history *h, const sql_plan_info *pi, int64_t from, int64_t to,
                             size_t max_rows, cf_buf *out)
{
    /* A user view named like a built-in is not stored: the rows of that
     * name are the built-in's. */
    if (!h || !pi->source || pi->ninput > CF_HISTORY_COLS_MAX ||
        cf_history_is_registered(h, pi->source))
        return 0;
    uint32_t *map = calloc(pi->ninput ? pi->ninput : 1, sizeof *map);
    const char **names = calloc(pi->ninput ? pi->ninput : 1, sizeof *names);
    if (!map || !names) {
        free(map);
        free(names);
        return -ENOMEM;
    }
    size_t nn = 0;
    bool windowed = false;
    for (uint32_t i = 0; i < pi->ninput; i++) {
        const char *name = pi->input[i].name;
        /* The window columns the shards add (sql_exec: after the view's). */
        if (strcmp(name, "WINDOWSTART") == 0) {
            map[i] = COL_START;
            windowed = true;
        } else if (strcmp(name, "WINDOWEND") == 0) {
            map[i] = COL_END;
        } else if (strcmp(name, "revision") == 0 && windowed) {
            map[i] = COL_REV;
        } else if (strcmp(name, "final") == 0 && windowed) {
            map[i] = COL_FINAL;
        } else {
            map[i] = (uint32_t)nn;
            names[nn++] = name;
        }
    }
    long rc = 0;
    if (windowed) {
        hist_ctx c = {.pi = pi, .map = map, .out = out};
        rc = cf_history_scan_cols(h, pi->source, from, to, names, nn, max_rows, hist_row, &c);
        if (rc >= 0 && c.err)
            rc = c.err;
        sql_sb_free(&c.id);
        if (rc == -ENOENT)
            rc = 0;     /* a view without stored rows yet */
    }
    free(map);
    free(names);
    return rc;
}
