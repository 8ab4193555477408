/* sql_exec_click: a click as a row of the `clicks` columns, and the fast
 * path the shard's built-in views take with it (cf_sqlx_def_apply,
 * cf_sqlx_def_prefetch; see sql_exec.h). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

/* The `clicks` columns in catalog order (sql_catalog_add_clicks). */
static const char *const click_columns[CF_SQLX_CLICK_COLUMNS] = {
    "user_id", "page_url", "element", "timestamp", "event_id", "properties", "name",
    "referrer", "referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "page_path", "browser", "os", "device", "is_bot", "country",
};

static int click_column(const char *name)
{
    for (int i = 0; name && i < CF_SQLX_CLICK_COLUMNS; i++)
        if (click_columns[i] && strcmp(click_columns[i], name) == 0)
            return i;
    return -1;
}

/* Where each enrichment column, the device and is_bot sit in the row: looked
 * up by name once, not per event (the name compares were 10% of a shard's
 * time with ten views, BENCHMARKS.md S9); and the columns nothing fills
 * (none today), NULL in every row. */
static int enrich_at[CF_COL_COUNT];
static int device_at, is_bot_at;
static int unset_at[CF_SQLX_CLICK_COLUMNS];
static int n_unset;
static pthread_once_t click_layout_once = PTHREAD_ONCE_INIT;

static void click_layout(void)
{
    bool filled[CF_SQLX_CLICK_COLUMNS] = {[0] = true, true, true, true, true, true, true};
    for (int c = 0; c < CF_COL_COUNT; c++) {
        enrich_at[c] = click_column(cf_enrich_col_name(c));
        if (enrich_at[c] >= 0 && filled[enrich_at[c]])
            enrich_at[c] = -1;  /* one writer per column */
        if (enrich_at[c] >= 0)
            filled[enrich_at[c]] = true;
    }
    device_at = click_column("device");
    if (device_at >= 0 && filled[device_at])
        device_at = -1;
    if (device_at >= 0)
        filled[device_at] = true;
    is_bot_at = click_column("is_bot");
    if (is_bot_at >= 0 && filled[is_bot_at])
        is_bot_at = -1;
    if (is_bot_at >= 0)
        filled[is_bot_at] = true;
    for (int i = 0; i < CF_SQLX_CLICK_COLUMNS; i++)
        if (!filled[i])
            unset_at[n_unset++] = i;
}

/* Column writers: field by field, in place. Assigning the sql_value an
 * inline constructor returns made GCC build it on the stack with narrow
 * stores and copy it with one 16-byte load, which cannot be forwarded from
 * them: a store-forwarding stall per column, most of click_row's time
 * (perf annotate under S2). */
static inline void col_set(sql_value *v, uint8_t type, uint32_t len)
{
    v->type = type;
    v->pad_[0] = v->pad_[1] = v->pad_[2] = 0;
    v->len = len;
}

static inline void col_str(sql_value *v, uint8_t type, const char *s, uint32_t len)
{
    col_set(v, type, len);
    v->u.s = s;
}

static inline void col_null(sql_value *v)
{
    col_set(v, SQL_NULL, 0);
    v->u.i = 0;
}

/* The click as a row of the `clicks` columns (sql_catalog_add_clicks).
 * Each column is written once (a NULL where the click has no value): the
 * shard decodes every click it gets so. */
static void click_row(const cf_event *ev, sql_value v[CF_SQLX_CLICK_COLUMNS])
{
    pthread_once(&click_layout_once, click_layout);
    col_str(&v[0], SQL_STRING, ev->user_id, (uint32_t)ev->user_id_len);
    col_str(&v[1], SQL_STRING, ev->page_url, (uint32_t)ev->page_url_len);
    if (ev->element)
        col_str(&v[2], SQL_STRING, ev->element, (uint32_t)ev->element_len);
    else
        col_null(&v[2]);
    col_set(&v[3], SQL_TIMESTAMP, 0);
    v[3].u.i = ev->ts;
    if (ev->event_id && ev->event_id_len > 0)
        col_str(&v[4], SQL_STRING, ev->event_id, (uint32_t)ev->event_id_len);
    else
        col_null(&v[4]);
    if (ev->properties && ev->properties_len > 0)
        col_str(&v[5], SQL_JSON, ev->properties, (uint32_t)ev->properties_len);
    else
        col_null(&v[5]);
    size_t nl = 0;
    const char *name = cf_event_name(ev, &nl);
    col_str(&v[6], SQL_STRING, name, (uint32_t)nl);
    /* SPEC 15's enrichment, by column name (the catalog's order). */
    for (int c = 0; c < CF_COL_COUNT; c++) {
        int at = enrich_at[c];
        if (at < 0)
            continue;
        if (ev->enrich.col[c])
            col_str(&v[at], SQL_STRING, ev->enrich.col[c], ev->enrich.len[c]);
        else
            col_null(&v[at]);
    }
    if (device_at >= 0) {
        const char *dev = cf_event_device_name(ev->enrich.device);
        if (dev)
            col_str(&v[device_at], SQL_STRING, dev, (uint32_t)strlen(dev));
        else
            col_null(&v[device_at]);
    }
    if (is_bot_at >= 0) {
        col_set(&v[is_bot_at], SQL_BOOLEAN, 0);
        v[is_bot_at].u.i = 0;
        v[is_bot_at].u.b = ev->enrich.is_bot;
    }
    for (int i = 0; i < n_unset; i++)
        col_null(&v[unset_at[i]]);
}

void cf_sqlx_click_row(const cf_event *ev, sql_value *cols) { click_row(ev, cols); }

bool cf_sqlx_def_where(cf_sqlx *x, const cf_sqlx_def *d, const sql_value *cols, int64_t ts)
{
    const sql_plan_info *pi = d->pi;
    if (!pi->filter)
        return true;
    int inl = sqlx_where_inline(d, cols, CF_SQLX_CLICK_COLUMNS);
    if (inl >= 0)
        return inl;
    sql_row row = {.v = (sql_value *)cols, .n = CF_SQLX_CLICK_COLUMNS, .rowtime = ts};
    sql_value f;
    x->scratch.used = 0;
    return sql_prog_eval(pi->filter, &row, &x->scratch, &f) == 0 && sql_value_is_true(f);
}

void cf_sqlx_def_prefetch(const cf_sqlx_def *d, const sql_view *v, const sql_value *cols,
                          int64_t ts, cf_sqlx_memo *memo, unsigned step)
{
    const sql_plan_info *pi = d->pi;
    sql_value keys[16];
    for (uint32_t k = 0; k < pi->ngroup_keys && k < 16; k++) {
        int c = d->key_col[k];
        if (c < 0)
            return;     /* an expression: not worth evaluating twice */
        keys[k] = c < CF_SQLX_CLICK_COLUMNS ? cols[c] : sql_null();
    }
    if (memo && pi->ngroup_keys == 1) {
        uint64_t ah[64];
        if (step == 3)  /* where the COUNT(DISTINCT) of plain columns go */
            for (uint32_t a = 0; a < pi->naggs && a < 64; a++) {
                int c = d->arg_col[a];
                ah[a] = 0;
                if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && c >= 0 && c < CF_SQLX_CLICK_COLUMNS &&
                    cols[c].type != SQL_NULL)
                    ah[a] = sqlx_memo_distinct_hash(memo, c, cols[c]);
            }
        sql_view_prefetch_step(v, sqlx_memo_key_hash(memo, v, d->key_col[0], keys),
                               step == 3 ? ah : NULL, ts, step);
    } else if (step == 0)
        sql_view_prefetch(v, keys, ts);
}

bool cf_sqlx_def_ahead(const cf_sqlx_def *d, const sql_view *v, const sql_value *cols,
                       cf_sqlx_memo *memo, uint64_t *ret_kh, uint64_t ret_ah[CF_SQLX_AHEAD_AGGS])
{
    const sql_plan_info *pi = d->pi;
    int kc = d->key_col[0];
    if (pi->ngroup_keys != 1 || kc < 0 || pi->naggs > CF_SQLX_AHEAD_AGGS)
        return false;
    sql_value key = kc < CF_SQLX_CLICK_COLUMNS ? cols[kc] : sql_null();
    for (uint32_t a = 0; a < pi->naggs; a++) {
        int c = d->arg_col[a];
        ret_ah[a] = 0;
        if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && c >= 0 && c < CF_SQLX_CLICK_COLUMNS &&
            cols[c].type != SQL_NULL)
            ret_ah[a] = sqlx_memo_distinct_hash(memo, c, cols[c]);
    }
    *ret_kh = sqlx_memo_key_hash(memo, v, kc, &key);
    return true;
}

int cf_sqlx_def_apply(cf_sqlx *x, const cf_sqlx_def *d, sql_view *v, const sql_value *cols,
                      int64_t ts, bool where_checked, uint64_t seq, int64_t wm,
                      sql_view_emit_fn emit, void *ctx, cf_sqlx_memo *memo)
{
    const sql_plan_info *pi = d->pi;
    sql_row row = {.v = (sql_value *)cols, .n = CF_SQLX_CLICK_COLUMNS, .rowtime = ts};
    sql_value keys[16], args[64];
    if (!where_checked && !cf_sqlx_def_where(x, d, cols, ts))
        return CF_SQLX_FILTERED;
    x->scratch.used = 0;
    for (uint32_t k = 0; k < pi->ngroup_keys && k < 16; k++) {
        int c = d->key_col[k];
        if (c >= 0)
            keys[k] = c < CF_SQLX_CLICK_COLUMNS ? cols[c] : sql_null();
        else if (sql_prog_eval(pi->group_keys[k], &row, &x->scratch, &keys[k]) < 0) {
            x->errors++;
            return -EINVAL;
        }
    }
    args[0] = sql_null();
    for (uint32_t a = 0; a < pi->naggs && a < 64; a++) {
        int c = d->arg_col[a];
        args[a] = sql_null();
        if (c >= 0)
            args[a] = c < CF_SQLX_CLICK_COLUMNS ? cols[c] : sql_null();
        else if (pi->aggs[a].arg &&
                 sql_prog_eval(pi->aggs[a].arg, &row, &x->scratch, &args[a]) < 0)
            x->errors++;
    }
    if (!memo)
        return sql_view_apply(v, keys, args, ts, seq, wm, emit, ctx);
    /* The hashes of plain columns once per row, whatever views share them. */
    uint64_t kh = pi->ngroup_keys == 1 && d->key_col[0] >= 0
                      ? sqlx_memo_key_hash(memo, v, d->key_col[0], keys)
                      : sql_view_key_hash(v, keys);
    uint64_t ah[64];
    for (uint32_t a = 0; a < pi->naggs && a < 64; a++)
        if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && args[a].type != SQL_NULL)
            ah[a] = d->arg_col[a] >= 0 ? sqlx_memo_distinct_hash(memo, d->arg_col[a], args[a])
                                       : sql_agg_distinct_hash(args[a]);
    return sql_view_apply_hashed(v, keys, kh, args, ah, ts, seq, wm, emit, ctx);
}
