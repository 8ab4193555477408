/* sql_exec_def: definitions (a CREATE VIEW compiled once, shared by the
 * shards), sets of them, and the value codec of rows and snapshots (see
 * sql_exec.h). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cf_hash.h"

/* d and e filter the same rows alike (one verdict serves both). */
bool sqlx_same_filtered_source(const cf_sqlx_def *d, const cf_sqlx_def *e)
{
    return d->pi->filter && e->pi->filter && !d->is_stream && !e->is_stream &&
           d->pi->join == SQL_JOIN_NONE && e->pi->join == SQL_JOIN_NONE &&
           d->pi->source && e->pi->source && strcmp(d->pi->source, e->pi->source) == 0 &&
           cf_sqlx_def_same_where(d, e);
}

/* -- defs ---------------------------------------------------------------------- */

static sql_agg_kind agg_kind(const sql_plan_agg *a)
{
    switch (a->kind) {
    case SQL_PLAN_FN_COUNT:
        return a->star ? SQL_AGG_COUNT_STAR : a->distinct ? SQL_AGG_COUNT_DISTINCT : SQL_AGG_COUNT;
    case SQL_PLAN_FN_SUM: return SQL_AGG_SUM;
    case SQL_PLAN_FN_AVG: return SQL_AGG_AVG;
    case SQL_PLAN_FN_MIN: return SQL_AGG_MIN;
    case SQL_PLAN_FN_MAX: return SQL_AGG_MAX;
    case SQL_PLAN_FN_EARLIEST: return SQL_AGG_EARLIEST;
    case SQL_PLAN_FN_LATEST: return SQL_AGG_LATEST;
    case SQL_PLAN_FN_TOPK: return SQL_AGG_TOPK;
    case SQL_PLAN_FN_DECAYED_COUNT: return SQL_AGG_DECAYED_COUNT;
    case SQL_PLAN_FN_COUNT_: break;
    }
    return SQL_AGG_COUNT_STAR;
}

/* The column p only reads (its program is one SQL_VM_COL), or -1. */
static int16_t prog_column(const sql_prog *p, uint32_t ncols)
{
    if (!p || sql_prog_length(p) != 1)
        return -1;
    int16_t found = -1;
    for (uint32_t c = 0; c < ncols && c < 1024 && found < 0; c++) {
        sql_prog *q = sql_prog_new();
        if (q && sql_prog_emit(q, SQL_VM_COL, c, 0) == 0 && sql_prog_equal(p, q))
            found = (int16_t)c;
        sql_prog_free(q);
    }
    return found;
}

/* The BOOLEAN input column b when p is exactly NOT COALESCE(b, FALSE), as
 * the planner compiles it (COL b, CONST FALSE, CALL COALESCE 2, NOT), or -1. */
static int16_t not_coalesce_column(const sql_prog *p, const sql_plan_info *pi)
{
    if (!p || sql_prog_length(p) != 4)
        return -1;
    int16_t found = -1;
    for (uint32_t c = 0; c < pi->ninput && c < 1024 && found < 0; c++) {
        if (pi->input[c].type != SQL_BOOLEAN)
            continue;
        sql_prog *q = sql_prog_new();
        int k = q ? sql_prog_const(q, sql_bool(false)) : -1;
        if (k >= 0 && sql_prog_emit(q, SQL_VM_COL, c, 0) == 0 &&
            sql_prog_emit(q, SQL_VM_CONST, (uint32_t)k, 0) == 0 &&
            sql_prog_emit(q, SQL_VM_CALL, SQL_FN_COALESCE, 2) == 0 &&
            sql_prog_emit(q, SQL_VM_NOT, 0, 0) == 0 && sql_prog_equal(p, q))
            found = (int16_t)c;
        sql_prog_free(q);
    }
    return found;
}

cf_sqlx_def *cf_sqlx_def_new(sql_plan *plan, bool source_runs, int64_t allowed_lateness_ms,
                             size_t max_keys)
{
    const sql_plan_info *pi = sql_plan_get(plan);
    cf_sqlx_def *d = calloc(1, sizeof *d);
    if (!d || !pi->object || !pi->name) {
        free(d);
        sql_plan_free(plan);
        return NULL;
    }
    atomic_init(&d->refs, 1);
    d->plan = plan;
    d->pi = pi;
    d->name = strdup(pi->name);
    d->specs = calloc(pi->naggs ? pi->naggs : 1, sizeof *d->specs);
    if (!d->name || !d->specs) {
        cf_sqlx_def_unref(d);
        return NULL;
    }
    for (uint32_t i = 0; i < pi->naggs; i++) {
        d->specs[i].kind = agg_kind(&pi->aggs[i]);
        if (d->specs[i].kind == SQL_AGG_TOPK || d->specs[i].kind == SQL_AGG_DECAYED_COUNT)
            d->specs[i].param = pi->aggs[i].param;
    }
    for (uint32_t k = 0; k < 16; k++)
        d->key_col[k] = k < pi->ngroup_keys ? prog_column(pi->group_keys[k], pi->ninput) : -1;
    for (uint32_t a = 0; a < 64; a++)
        d->arg_col[a] = a < pi->naggs ? prog_column(pi->aggs[a].arg, pi->ninput) : -1;
    d->not_col = not_coalesce_column(pi->filter, pi);
    d->place_seed = cf_hash64(d->name, strlen(d->name), 0);
    d->windowed = pi->window != SQL_WINDOW_NONE;
    d->ncols = pi->ncolumns + (d->windowed ? 4 : 0);
    d->vcfg = (sql_view_config){
        .nkeys = pi->ngroup_keys,
        .aggs = d->specs,
        .naggs = pi->naggs,
        .window = pi->window,
        .size_ms = pi->window == SQL_WINDOW_SESSION ? 0 : pi->window_size_ms,
        .advance_ms = pi->window == SQL_WINDOW_HOPPING ? pi->window_advance_ms
                                                       : pi->window_size_ms,
        .gap_ms = pi->window == SQL_WINDOW_SESSION ? pi->window_size_ms : 0,
        .grace_ms = pi->grace_ms >= 0 ? pi->grace_ms : allowed_lateness_ms,
        .emit = pi->emit,
        .state_ttl_ms = pi->state_ttl_ms > 0 ? pi->state_ttl_ms : 0,
        .max_keys = max_keys,
    };
    if (pi->window != SQL_WINDOW_TUMBLING && pi->window != SQL_WINDOW_HOPPING) {
        d->vcfg.size_ms = 0;
        d->vcfg.advance_ms = 0;
    }
    /* A view without aggregates (GROUP BY only) still needs one aggregate
     * slot for sql_view: a hidden COUNT(*). */
    if (d->vcfg.naggs == 0) {
        d->specs[0].kind = SQL_AGG_COUNT_STAR;
        d->vcfg.naggs = 1;
    }
    d->is_stream = pi->kind == SQL_PLAN_DERIVED_STREAM;
    d->interval = pi->join != SQL_JOIN_NONE && !pi->join_table;
    d->source_len = pi->source ? strlen(pi->source) : 0;
    d->join_source_len = pi->join_source ? strlen(pi->join_source) : 0;
    d->runnable = (pi->kind == SQL_PLAN_VIEW || d->is_stream) && pi->source &&
                  pi->source_kind == SQL_OBJ_STREAM && source_runs &&
                  (pi->join == SQL_JOIN_NONE ? d->is_stream || pi->unnest_column < 0
                   : pi->join_table ? pi->njoin_keys == 1 && pi->unnest_column < 0
                                    : pi->unnest_column < 0 && pi->njoin_keys >= 1 &&
                                          pi->njoin_keys <= SQL_JOIN_MAX_KEYS);
    if (d->interval) {
        /* The join's rows: the source's columns, then the right side's
         * (sql_plan's input row, which is what the join emits). Its GRACE
         * PERIOD is the query's, like a window's. */
        d->jcfg = (sql_join_config){
            .left_outer = pi->join == SQL_JOIN_LEFT,
            .nkeys = pi->njoin_keys,
            .ncols = {pi->right_offset, pi->ninput - pi->right_offset},
            .within_ms = pi->within_ms,
            .grace_ms = d->vcfg.grace_ms,
            .max_keys = max_keys,
        };
        if (getrandom(d->jcfg.hash_key, sizeof d->jcfg.hash_key, 0) !=
            (ssize_t)sizeof d->jcfg.hash_key)
            memset(d->jcfg.hash_key, 0x6b, sizeof d->jcfg.hash_key);
    }
    return d;
}

cf_sqlx_def *cf_sqlx_def_ref(cf_sqlx_def *d)
{
    atomic_fetch_add(&d->refs, 1);
    return d;
}

void cf_sqlx_def_unref(cf_sqlx_def *d)
{
    if (!d || atomic_fetch_sub(&d->refs, 1) != 1)
        return;
    sql_plan_free(d->plan);
    free(d->specs);
    free(d->name);
    free(d);
}

const sql_plan_info *cf_sqlx_def_info(const cf_sqlx_def *d) { return d->pi; }

const char *cf_sqlx_def_name(const cf_sqlx_def *d) { return d->name; }
bool cf_sqlx_def_runnable(const cf_sqlx_def *d) { return d->runnable; }

cf_sqlx_set *cf_sqlx_set_new(cf_sqlx_def *const *defs, size_t n)
{
    cf_sqlx_set *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->defs = calloc(n ? n : 1, sizeof *s->defs);
    s->where_twin = calloc(n ? n : 1, sizeof *s->where_twin);
    if (!s->defs || !s->where_twin) {
        free(s->defs);
        free(s->where_twin);
        free(s);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    for (size_t i = 0; i < n; i++) {
        s->defs[i] = cf_sqlx_def_ref(defs[i]);
        s->where_twin[i] = -1;
        for (size_t j = 0; j < i && s->where_twin[i] < 0; j++)
            if (sqlx_same_filtered_source(defs[i], defs[j]))
                s->where_twin[i] = (int32_t)j;
    }
    s->n = n;
    return s;
}

cf_sqlx_set *cf_sqlx_set_ref(cf_sqlx_set *s)
{
    atomic_fetch_add(&s->refs, 1);
    return s;
}

void cf_sqlx_set_unref(cf_sqlx_set *s)
{
    if (!s || atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    for (size_t i = 0; i < s->n; i++)
        cf_sqlx_def_unref(s->defs[i]);
    free(s->defs);
    free(s->where_twin);
    free(s);
}

size_t cf_sqlx_set_count(const cf_sqlx_set *s) { return s ? s->n : 0; }
cf_sqlx_def *cf_sqlx_set_at(const cf_sqlx_set *s, size_t i) { return s->defs[i]; }

cf_sqlx_def *cf_sqlx_set_find(const cf_sqlx_set *s, const char *name)
{
    for (size_t i = 0; s && i < s->n; i++)
        if (strcmp(s->defs[i]->name, name) == 0)
            return s->defs[i];
    return NULL;
}

/* Whether a running view or derived stream reads source. A derived
 * stream runs even with no view downstream: its rows are pushed on
 * stream:NAME as they are produced (SPEC 13). */
bool cf_sqlx_set_reads(const cf_sqlx_set *s, const char *source)
{
    for (size_t i = 0; s && i < s->n; i++) {
        const cf_sqlx_def *d = s->defs[i];
        if (d->runnable && (strcmp(d->pi->source, source) == 0 ||
                            (d->interval && strcmp(d->pi->join_source, source) == 0)))
            return true;
    }
    return false;
}

/* -- value codec ------------------------------------------------------------------ */

void cf_sqlx_put_value(cf_buf *b, sql_value v)
{
    cf_buf_put_u8(b, v.type);
    switch ((sql_type)v.type) {
    case SQL_NULL: break;
    case SQL_BOOLEAN: cf_buf_put_u8(b, v.u.b ? 1 : 0); break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: cf_buf_put_i64(b, v.u.i); break;
    case SQL_DOUBLE: cf_buf_put_f64(b, v.u.d); break;
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON: cf_buf_put_str(b, v.u.s ? v.u.s : "", v.len); break;
    }
}

bool cf_sqlx_get_value(cf_reader *r, sql_value *ret)
{
    uint8_t t = 0, b = 0;
    *ret = sql_null();
    if (!cf_get_u8(r, &t))
        return false;
    ret->type = t;
    switch ((sql_type)t) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN:
        if (!cf_get_u8(r, &b))
            return false;
        ret->u.b = b != 0;
        return true;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return cf_get_i64(r, &ret->u.i);
    case SQL_DOUBLE: return cf_get_f64(r, &ret->u.d);
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON: {
        size_t n = 0;
        if (!cf_get_str(r, &ret->u.s, &n))
            return false;
        ret->len = (uint32_t)n;
        return true;
    }
    }
    return false;
}

const sql_view_config *cf_sqlx_def_view_config(const cf_sqlx_def *d) { return &d->vcfg; }

bool cf_sqlx_def_where_inline(const cf_sqlx_def *d) { return d->not_col >= 0; }

bool cf_sqlx_def_same_where(const cf_sqlx_def *a, const cf_sqlx_def *b)
{
    const sql_prog *fa = a->pi->filter, *fb = b->pi->filter;
    return fa == fb || (fa && fb && sql_prog_equal(fa, fb));
}
