/* sql_exec: user views in the shard threads (see the header). */
#include "sql_exec.h"

#include <errno.h>
#include <pthread.h>

#include <cjson/cJSON.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "cf_hash.h"
#include "cf_time.h"
#include "history_views.h"
#include "log.h"
#include "retain.h"
#include "sql_join.h"
#include "sql_view.h"
#include "tables.h"

#define SCRATCH_BYTES (256u << 10)  /* strings one event's programs make */
#define CLICKS_COLUMNS CF_SQLX_CLICK_COLUMNS  /* sql_catalog_add_clicks */
#define OWNER_SEED 0x51574b4559ull  /* key -> shard hash ("QWKEY") */

struct cf_sqlx_def {
    atomic_uint refs;
    char *name;
    sql_plan *plan;
    const sql_plan_info *pi;
    sql_agg_spec *specs;
    sql_view_config vcfg;
    uint32_t ncols;             /* the view's columns: outputs (+4 when windowed) */
    bool windowed;
    bool runnable;
    bool is_stream;             /* CREATE STREAM AS: rows for the views downstream */
    /* The source column a GROUP BY key or an aggregate argument merely
     * reads (-1: an expression): cf_sqlx_def_apply copies those instead of
     * running their programs. */
    int16_t key_col[16];
    int16_t arg_col[64];
    bool interval;              /* a stream-stream (interval) join runs before the rest */
    sql_join_config jcfg;       /* its operator's configuration */
    size_t source_len, join_source_len; /* strlen of pi's, once (compared per row) */
};

struct cf_sqlx_set {
    atomic_uint refs;
    size_t n;
    cf_sqlx_def **defs;
    /* Per def: the first def before it that reads the same source with an
     * equal WHERE (neither a join nor a derived stream), or -1: the probe
     * (route_views) evaluates that WHERE once per row for both. */
    int32_t *where_twin;
};

/* d and e filter the same rows alike (one verdict serves both). */
static bool same_filtered_source(const cf_sqlx_def *d, const cf_sqlx_def *e)
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
            if (same_filtered_source(defs[i], defs[j]))
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

/* -- the executor ------------------------------------------------------------------- */

/* A fired result kept for pull queries. */
typedef struct kept_row {
    uint32_t revision;
    uint32_t id_len;
    uint32_t row_len;       /* value count, then values */
    uint8_t data[];         /* identity bytes, then the row */
} kept_row;

typedef struct xview {
    cf_sqlx_def *def;
    sql_view *v;
    cf_retain *kept;
    sql_sb pending;         /* fired rows to push, JSON objects comma-separated */
    size_t npending;
    bool dirty;             /* applied a row since the last interim push */
    uint32_t at;            /* index of the def in the set (its bit in a views mask) */
    uint64_t rows_in;       /* input rows this shard evaluated the view on */
    /* The first view before this one (index in x->views) with the same
     * source and an equal WHERE program, or -1: one verdict per row serves
     * both (view_row). */
    int32_t where_twin;
} xview;

/* What one input row's views share (view_row): the hashes of its plain
 * columns and the verdicts of its WHERE programs. Lives in apply_row's
 * frame: valid for its row only. */
#define ROW_MEMO_WHERE 8
typedef struct row_memo {
    cf_sqlx_memo m;
    uint32_t nwhere;
    struct { uint32_t view; bool pass; } where[ROW_MEMO_WHERE];
} row_memo;

/* A derived stream's rows to push (topic stream:NAME), rendered on shard
 * 0 only: every shard derives every row, one copy is enough. */
typedef struct xstream {
    char *name;
    sql_sb pending;         /* JSON objects comma-separated */
    size_t npending;
    /* The newest --retain-results rows, for pull queries (SPEC 13: every
     * stream keeps its newest events for reads), kept on shard 0 only. */
    cf_retain *kept;
    uint64_t last_seq;      /* arrival number of the newest row's event */
    uint32_t sub;           /* rows derived from that event so far (UNNEST) */
} xstream;

/* The interval join of one view or derived stream on this shard: every
 * shard holds every key, like every table (see the header). */
typedef struct xjoin {
    cf_sqlx_def *def;
    sql_join *j;
    bool loaded;            /* filled from a snapshot part (one copy is enough) */
} xjoin;

struct cf_sqlx {
    unsigned index, n_shards;
    xjoin *joins;
    size_t njoins;
    uint64_t last_seq;      /* arrival number of the last event (rows a marker emits) */
    xstream *streams;       /* derived streams with rows pushed since the set changed */
    size_t nstreams;
    size_t retain;
    cf_sqlx_set *set;
    xview *views;
    size_t n;
    int64_t clock;          /* C of the last event or marker (DECAYED_COUNT's T) */
    uint64_t errors;
    sql_scratch scratch;
    cf_buf id, row, keybuf; /* per result */
    bool collect;           /* render fired rows for push (someone listens) */
    bool interim;           /* the pending rows are interim (cf_sqlx_interim) */
    size_t interim_left;    /* rows an interim push may still render for this view */
    cf_buf *out;            /* cf_sqlx_rows target */
    long out_n;
    const xview *cur;
    bool generic;           /* test hook: view_row takes no shortcut (cf_sqlx_set_generic) */
    cf_tables *tables;      /* every table's rows, as of the shard's place in the log */
    cf_history *history;    /* final results of windowed views go there too */
    sql_sb hist_sb;         /* their rendering, reused */
    uint64_t routed;        /* the views the current event is routed here for */
    /* Routing probe (cf_sqlx_route_*): no state, only the programs run. */
    bool routing;
    uint64_t *masks;        /* per shard: the views it owns the current row for */
    uint64_t chain;         /* bits of the derived streams the current row came through */
};

void cf_sqlx_set_history(cf_sqlx *x, cf_history *h) { x->history = h; }

uint64_t cf_sqlx_view_bit(size_t i) { return 1ull << (i < 63 ? i : 63); }

cf_sqlx *cf_sqlx_new(unsigned index, unsigned n_shards, size_t retain)
{
    cf_sqlx *x = calloc(1, sizeof *x);
    if (!x)
        return NULL;
    x->scratch.buf = malloc(SCRATCH_BYTES);
    if (!x->scratch.buf) {
        free(x);
        return NULL;
    }
    x->scratch.cap = SCRATCH_BYTES;
    x->index = index;
    x->n_shards = n_shards ? n_shards : 1;
    x->retain = retain ? retain : 1;
    x->clock = CF_TIME_NONE;
    x->routed = CF_SQLX_ALL_VIEWS;
    /* Clients choose the keys: a key of our own for the rows' index. */
    uint8_t key[16] = {0};
    if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key)
        memset(key, 0x5a, sizeof key);
    x->tables = cf_tables_new(0, key);
    if (!x->tables) {
        free(x->scratch.buf);
        free(x);
        return NULL;
    }
    return x;
}

static void xview_free(xview *xv)
{
    sql_sb_free(&xv->pending);
    sql_view_free(xv->v);
    cf_retain_free(xv->kept);
    cf_sqlx_def_unref(xv->def);
}

static void xjoin_free(xjoin *xj)
{
    sql_join_free(xj->j);
    cf_sqlx_def_unref(xj->def);
}

void cf_sqlx_free(cf_sqlx *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->njoins; i++)
        xjoin_free(&x->joins[i]);
    free(x->joins);
    for (size_t i = 0; i < x->n; i++)
        xview_free(&x->views[i]);
    free(x->views);
    sql_sb_free(&x->hist_sb);
    for (size_t i = 0; i < x->nstreams; i++) {
        free(x->streams[i].name);
        sql_sb_free(&x->streams[i].pending);
        cf_retain_free(x->streams[i].kept);
    }
    free(x->streams);
    cf_sqlx_set_unref(x->set);
    free(x->scratch.buf);
    cf_tables_free(x->tables);
    cf_buf_free(&x->id);
    cf_buf_free(&x->row);
    cf_buf_free(&x->keybuf);
    free(x);
}

uint64_t cf_sqlx_errors(const cf_sqlx *x) { return x->errors; }

void cf_sqlx_install(cf_sqlx *x, cf_sqlx_set *set)
{
    size_t n = cf_sqlx_set_count(set);
    xview *nv = calloc(n ? n : 1, sizeof *nv);
    if (!nv) {
        /* Without memory the views stay as they were; counted. */
        x->errors++;
        cf_sqlx_set_unref(set);
        return;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        cf_sqlx_def *d = set->defs[i];
        if (!d->runnable || d->is_stream)
            continue;       /* derived streams keep no state: run from the set */
        xview *old = NULL;
        for (size_t j = 0; j < x->n && !old; j++)
            if (x->views[j].def == d)
                old = &x->views[j];
        if (old) {
            nv[k] = *old;
            nv[k++].at = (uint32_t)i;   /* its place may have moved in the new set */
            old->def = NULL;    /* moved */
            continue;
        }
        xview fresh = {.def = cf_sqlx_def_ref(d), .v = sql_view_new(&d->vcfg), .at = (uint32_t)i,
                       .kept = cf_retain_new(x->retain, free)};
        if (!fresh.v || !fresh.kept) {
            x->errors++;
            cf_error("shard %u: out of memory for view %s", x->index, d->name);
            xview_free(&fresh);
            continue;
        }
        nv[k++] = fresh;
    }
    /* Interval joins: carried on with their definition, else new and
     * empty (a view sees the events accepted after it was created). */
    xjoin *nj = calloc(n ? n : 1, sizeof *nj);
    size_t kj = 0;
    for (size_t i = 0; nj && i < n; i++) {
        cf_sqlx_def *d = set->defs[i];
        if (!d->runnable || !d->interval)
            continue;
        xjoin *old = NULL;
        for (size_t j = 0; j < x->njoins && !old; j++)
            if (x->joins[j].def == d)
                old = &x->joins[j];
        if (old) {
            nj[kj++] = *old;
            old->def = NULL;
            old->j = NULL;
            continue;
        }
        xjoin fresh = {.def = cf_sqlx_def_ref(d), .j = sql_join_new(&d->jcfg)};
        if (!fresh.j) {
            x->errors++;
            cf_error("shard %u: out of memory for the join of %s", x->index, d->name);
            xjoin_free(&fresh);
            continue;
        }
        nj[kj++] = fresh;
    }
    if (!nj)
        x->errors++;
    for (size_t j = 0; j < x->njoins; j++)
        xjoin_free(&x->joins[j]);
    free(x->joins);
    x->joins = nj;
    x->njoins = kj;
    /* A dropped derived stream's rows go with it (a new one of the same
     * name starts empty). */
    size_t ks = 0;
    for (size_t j = 0; j < x->nstreams; j++) {
        const cf_sqlx_def *sd = cf_sqlx_set_find(set, x->streams[j].name);
        bool keep = false;
        for (size_t i = 0; x->set && sd && i < x->set->n && !keep; i++)
            keep = x->set->defs[i] == sd;  /* the very definition, not a new one */
        if (keep) {
            x->streams[ks++] = x->streams[j];
        } else {
            free(x->streams[j].name);
            sql_sb_free(&x->streams[j].pending);
            cf_retain_free(x->streams[j].kept);
        }
    }
    x->nstreams = ks;
    for (size_t j = 0; j < x->n; j++)
        if (x->views[j].def)
            xview_free(&x->views[j]);
    free(x->views);
    x->views = nv;
    x->n = k;
    for (size_t i = 0; i < k; i++) {
        const cf_sqlx_def *d = nv[i].def;
        nv[i].where_twin = -1;
        for (size_t j = 0; j < i && nv[i].where_twin < 0; j++)
            if (same_filtered_source(d, nv[j].def))
                nv[i].where_twin = (int32_t)j;
    }
    cf_sqlx_set_unref(x->set);
    x->set = set;
}

/* The `clicks` columns in catalog order (sql_catalog_add_clicks). */
static const char *const click_columns[CLICKS_COLUMNS] = {
    "user_id", "page_url", "element", "timestamp", "event_id", "properties", "name",
    "referrer", "referrer_host", "utm_source", "utm_medium", "utm_campaign", "utm_term",
    "utm_content", "page_path", "browser", "os", "device", "is_bot", "country",
};

static int click_column(const char *name)
{
    for (int i = 0; name && i < CLICKS_COLUMNS; i++)
        if (click_columns[i] && strcmp(click_columns[i], name) == 0)
            return i;
    return -1;
}

/* Where each enrichment column, the device and is_bot sit in the row: looked
 * up by name once, not per event (the name compares were 10% of a shard's
 * time with ten views, BENCHMARKS.md S9). */
static int enrich_at[CF_COL_COUNT];
static int device_at, is_bot_at;
static pthread_once_t click_layout_once = PTHREAD_ONCE_INIT;

static void click_layout(void)
{
    for (int c = 0; c < CF_COL_COUNT; c++)
        enrich_at[c] = click_column(cf_enrich_col_name(c));
    device_at = click_column("device");
    is_bot_at = click_column("is_bot");
}

/* The click as a row of the `clicks` columns (sql_catalog_add_clicks). */
static void click_row(const cf_event *ev, sql_value v[CLICKS_COLUMNS])
{
    pthread_once(&click_layout_once, click_layout);
    for (int i = 0; i < CLICKS_COLUMNS; i++)
        v[i] = sql_null();
    v[0] = sql_string(ev->user_id, (uint32_t)ev->user_id_len);
    v[1] = sql_string(ev->page_url, (uint32_t)ev->page_url_len);
    if (ev->element)
        v[2] = sql_string(ev->element, (uint32_t)ev->element_len);
    v[3] = sql_timestamp(ev->ts);
    if (ev->event_id && ev->event_id_len > 0)
        v[4] = sql_string(ev->event_id, (uint32_t)ev->event_id_len);
    if (ev->properties && ev->properties_len > 0) {
        v[5] = sql_string(ev->properties, (uint32_t)ev->properties_len);
        v[5].type = SQL_JSON;
    }
    size_t nl = 0;
    const char *name = cf_event_name(ev, &nl);
    v[6] = sql_string(name, (uint32_t)nl);
    /* SPEC 15's enrichment, by column name (the catalog's order). */
    for (int c = 0; c < CF_COL_COUNT; c++) {
        int at = enrich_at[c];
        if (at >= 0 && ev->enrich.col[c])
            v[at] = sql_string(ev->enrich.col[c], ev->enrich.len[c]);
    }
    const char *dev = cf_event_device_name(ev->enrich.device);
    if (device_at >= 0 && dev)
        v[device_at] = sql_string(dev, (uint32_t)strlen(dev));
    if (is_bot_at >= 0)
        v[is_bot_at] = sql_bool(ev->enrich.is_bot);
}

static unsigned owner_of_bytes(const cf_sqlx *x, const void *p, size_t n)
{
    return (unsigned)(cf_hash64(n ? p : "", n, OWNER_SEED) % x->n_shards);
}

/* The shard owning a group: a hash of its encoded key values (type and
 * bytes), the same bytes a result's identity holds after its start. */
static unsigned owner(cf_sqlx *x, const sql_value *keys, uint32_t n)
{
    if (x->n_shards == 1)
        return 0;
    cf_buf_reset(&x->keybuf);
    for (uint32_t i = 0; i < n; i++)
        cf_sqlx_put_value(&x->keybuf, keys[i]);
    return owner_of_bytes(x, x->keybuf.data, x->keybuf.len);
}

/* Encodes a result as the view's row (output columns evaluated over the
 * group row, plus the window columns) into x->row, its identity into x->id. */
static int encode_result(cf_sqlx *x, const cf_sqlx_def *d, const sql_view_result *r)
{
    const sql_plan_info *pi = d->pi;
    uint32_t ng = SQL_PLAN_GROUP_ROW_KEYS + pi->ngroup_keys + pi->naggs;
    sql_value gv[SQL_PLAN_GROUP_ROW_KEYS + 16 + 64];
    if (ng > sizeof gv / sizeof gv[0])
        return -EINVAL;
    gv[0] = d->windowed ? sql_timestamp(r->start) : sql_null();
    gv[1] = d->windowed ? sql_timestamp(r->end) : sql_null();
    for (uint32_t i = 0; i < pi->ngroup_keys; i++)
        gv[SQL_PLAN_GROUP_ROW_KEYS + i] = r->key[i];
    for (uint32_t i = 0; i < pi->naggs; i++)
        gv[SQL_PLAN_GROUP_ROW_KEYS + pi->ngroup_keys + i] = r->aggs[i];
    sql_row grow = {.v = gv, .n = ng, .rowtime = r->end};
    cf_buf_reset(&x->row);
    cf_buf_reset(&x->id);
    cf_buf_put_u32(&x->row, d->ncols);
    size_t mark = x->scratch.used;
    for (uint32_t i = 0; i < pi->ncolumns; i++) {
        sql_value v;
        if (sql_prog_eval(pi->columns[i].prog, &grow, &x->scratch, &v) < 0) {
            x->scratch.used = mark;
            return -ENOSPC;
        }
        cf_sqlx_put_value(&x->row, v);
    }
    x->scratch.used = mark;
    if (d->windowed) {
        cf_sqlx_put_value(&x->row, sql_timestamp(r->start));
        cf_sqlx_put_value(&x->row, sql_timestamp(r->end));
        cf_sqlx_put_value(&x->row, sql_bigint(r->revision));
        cf_sqlx_put_value(&x->row, sql_bool(r->final));
    }
    /* A session's start can move as it merges; its identity is the key
     * and its first event time at firing, good enough for newest-revision
     * reads of fired sessions. */
    cf_buf_put_i64(&x->id, d->windowed ? r->start : 0);
    for (uint32_t i = 0; i < r->nkeys; i++)
        cf_sqlx_put_value(&x->id, r->key[i]);
    return x->row.oom || x->id.oom ? -ENOMEM : 0;
}

/* Appends the encoded row in x->row as a JSON object of the view's
 * columns to the view's pending push batch. Names and strings escaped. */
static void render_pending(cf_sqlx *x, xview *xv)
{
    const sql_plan_info *pi = xv->def->pi;
    static const char *const added[] = {"WINDOWSTART", "WINDOWEND", "revision", "final"};
    cf_reader r;
    cf_reader_init(&r, x->row.data, x->row.len);
    uint32_t n = 0;
    cf_get_u32(&r, &n);
    sql_sb *sb = &xv->pending;
    sql_sb_puts(sb, xv->npending ? ",{" : "{");
    for (uint32_t i = 0; i < n; i++) {
        sql_value v;
        if (!cf_sqlx_get_value(&r, &v))
            break;
        const char *name = i < pi->ncolumns ? pi->columns[i].name : added[(i - pi->ncolumns) & 3];
        if (i)
            sql_sb_puts(sb, ",");
        sql_sb_put_json_string(sb, name, strlen(name));
        sql_sb_puts(sb, ":");
        sql_value_to_json(v, sb);
    }
    sql_sb_puts(sb, "}");
    xv->npending++;
}

void cf_sqlx_collect(cf_sqlx *x, bool on) { x->collect = on; }

static xstream *stream_batch(cf_sqlx *x, const char *name)
{
    for (size_t i = 0; i < x->nstreams; i++)
        if (strcmp(x->streams[i].name, name) == 0)
            return &x->streams[i];
    xstream *ns = realloc(x->streams, (x->nstreams + 1) * sizeof *ns);
    if (!ns)
        return NULL;
    x->streams = ns;
    xstream *xs = &ns[x->nstreams];
    *xs = (xstream){.name = strdup(name), .kept = cf_retain_new(x->retain, free)};
    if (!xs->name || !xs->kept) {
        free(xs->name);
        cf_retain_free(xs->kept);
        return NULL;
    }
    x->nstreams++;
    return xs;
}

/* Keeps one derived row for pull queries: identity = the bitwise NOT of
 * its event's arrival number, then its index among that event's rows, both
 * big-endian, so identity order is newest first (sql_pull's default). */
static void keep_stream_row(cf_sqlx *x, xstream *xs, const sql_value *v, uint32_t n, uint64_t seq)
{
    if (seq != xs->last_seq || cf_retain_len(xs->kept) == 0)
        xs->sub = 0;
    xs->last_seq = seq;
    uint8_t id[12];
    uint64_t inv = ~seq;
    uint32_t sub = xs->sub++;   /* within one event: the first row first */
    for (int i = 0; i < 8; i++)
        id[i] = (uint8_t)(inv >> (56 - 8 * i));
    for (int i = 0; i < 4; i++)
        id[8 + i] = (uint8_t)(sub >> (24 - 8 * i));
    x->row.len = 0;
    x->row.oom = false;
    cf_buf_put_u32(&x->row, n);
    for (uint32_t i = 0; i < n; i++)
        cf_sqlx_put_value(&x->row, v[i]);
    kept_row *k = x->row.oom ? NULL : malloc(sizeof *k + sizeof id + x->row.len);
    if (!k) {
        x->errors++;
        return;
    }
    k->revision = 0;
    k->id_len = sizeof id;
    k->row_len = (uint32_t)x->row.len;
    memcpy(k->data, id, sizeof id);
    memcpy(k->data + sizeof id, x->row.data, x->row.len);
    cf_retain_push(xs->kept, k);
}

/* Appends one derived row (the stream's columns) to its push batch. */
static void render_stream_row(cf_sqlx *x, const cf_sqlx_def *d, xstream *xs, const sql_value *v,
                              uint32_t n)
{
    sql_sb *sb = &xs->pending;
    sql_sb_puts(sb, xs->npending ? ",{" : "{");
    for (uint32_t i = 0; i < n; i++) {
        const char *name = d->pi->columns[i].name;
        if (i)
            sql_sb_puts(sb, ",");
        sql_sb_put_json_string(sb, name, strlen(name));
        sql_sb_puts(sb, ":");
        sql_value_to_json(v[i], sb);
    }
    sql_sb_puts(sb, "}");
    xs->npending++;
}

/* {"type":"stream","name","data":[rows]} per derived stream with rows:
 * never interim (a slow client drops interim updates first). */
static void flush_streams(cf_sqlx *x, cf_sqlx_publish_fn fn, void *ctx)
{
    sql_sb msg = {0}, topic = {0};
    for (size_t i = 0; i < x->nstreams; i++) {
        xstream *xs = &x->streams[i];
        if (!xs->npending)
            continue;
        sql_sb_puts(&msg, "{\"type\":\"stream\",\"name\":");
        sql_sb_put_json_string(&msg, xs->name, strlen(xs->name));
        sql_sb_puts(&msg, ",\"data\":[");
        sql_sb_put(&msg, xs->pending.data, xs->pending.len);
        sql_sb_puts(&msg, "]}");
        sql_sb_printf(&topic, "stream:%s", xs->name);
        if (!msg.oom && !topic.oom && !xs->pending.oom)
            fn(ctx, topic.data, msg.data, msg.len, false);
        else
            x->errors++;
        msg.len = topic.len = 0;
        msg.oom = topic.oom = false;
        xs->pending.len = 0;
        xs->pending.oom = false;
        xs->npending = 0;
    }
    sql_sb_free(&msg);
    sql_sb_free(&topic);
}

void cf_sqlx_flush(cf_sqlx *x, cf_sqlx_publish_fn fn, void *ctx)
{
    sql_sb msg = {0}, topic = {0};
    for (size_t i = 0; i < x->n; i++) {
        xview *xv = &x->views[i];
        if (!xv->npending)
            continue;
        sql_sb_puts(&msg, "{\"type\":\"view\",\"name\":");
        sql_sb_put_json_string(&msg, xv->def->name, strlen(xv->def->name));
        sql_sb_puts(&msg, ",\"data\":[");
        sql_sb_put(&msg, xv->pending.data, xv->pending.len);
        sql_sb_puts(&msg, "]}");
        sql_sb_printf(&topic, "view:%s", xv->def->name);
        if (!msg.oom && !topic.oom && !xv->pending.oom)
            fn(ctx, topic.data, msg.data, msg.len, x->interim);
        else
            x->errors++;
        msg.len = topic.len = 0;
        msg.oom = topic.oom = false;
        xv->pending.len = 0;
        xv->pending.oom = false;
        xv->npending = 0;
    }
    sql_sb_free(&msg);
    sql_sb_free(&topic);
    if (!x->interim)
        flush_streams(x, fn, ctx);
}

/* Hands a final result to history: the output values decoded from the
 * row just encoded (x->row). */
static void history_result(cf_sqlx *x, const xview *xv, const sql_view_result *r)
{
    const sql_plan_info *pi = xv->def->pi;
    sql_value cols[256];
    cf_reader rd;
    cf_reader_init(&rd, x->row.data, x->row.len);
    uint32_t n = 0;
    if (!cf_get_u32(&rd, &n) || pi->ncolumns > n || pi->ncolumns > sizeof cols / sizeof cols[0]) {
        x->errors++;
        return;
    }
    for (uint32_t i = 0; i < pi->ncolumns; i++)
        if (!cf_sqlx_get_value(&rd, &cols[i])) {
            x->errors++;
            return;
        }
    cf_histview_offer(x->history, pi, r, cols, &x->hist_sb, &x->errors);
}

static void on_result(void *ctx, const sql_view_result *r)
{
    cf_sqlx *x = ctx;
    xview *xv = (xview *)x->cur;
    if (!r->final)
        return;     /* interim re-emissions are not kept: pull reads open state */
    if (encode_result(x, xv->def, r) < 0) {
        x->errors++;
        return;
    }
    if (x->collect)
        render_pending(x, xv);
    if (x->history && cf_histview_kept(x->history, xv->def->pi))
        history_result(x, xv, r);
    kept_row *k = malloc(sizeof *k + x->id.len + x->row.len);
    if (!k) {
        x->errors++;
        return;
    }
    k->revision = r->revision;
    k->id_len = (uint32_t)x->id.len;
    k->row_len = (uint32_t)x->row.len;
    memcpy(k->data, x->id.data, x->id.len);
    memcpy(k->data + x->id.len, x->row.data, x->row.len);
    cf_retain_push(xv->kept, k);
}

static void apply_row(cf_sqlx *x, const char *source, size_t source_len, const sql_row *rowp,
                      uint64_t seq, int64_t wm, int depth);

/* An UNNEST element (compact JSON) as a value of the element type; strings
 * are copied into the scratch. */
static bool element_value(cf_sqlx *x, const cJSON *el, sql_type et, sql_value *ret)
{
    *ret = sql_null();
    if (cJSON_IsNull(el))
        return true;
    if (et == SQL_JSON || cJSON_IsArray(el) || cJSON_IsObject(el)) {
        char *t = cJSON_PrintUnformatted(el);
        if (!t)
            return false;
        size_t n = strlen(t);
        bool ok = x->scratch.used + n <= x->scratch.cap;
        if (ok) {
            memcpy(x->scratch.buf + x->scratch.used, t, n);
            *ret = sql_string(x->scratch.buf + x->scratch.used, (uint32_t)n);
            ret->type = SQL_JSON;
            x->scratch.used += n;
        }
        cJSON_free(t);
        return ok;
    }
    if (cJSON_IsString(el)) {
        size_t n = strlen(el->valuestring);
        if (x->scratch.used + n > x->scratch.cap)
            return false;
        memcpy(x->scratch.buf + x->scratch.used, el->valuestring, n);
        *ret = sql_string(x->scratch.buf + x->scratch.used, (uint32_t)n);
        x->scratch.used += n;
        return true;
    }
    if (cJSON_IsBool(el)) {
        *ret = sql_bool(cJSON_IsTrue(el));
        return true;
    }
    if (cJSON_IsNumber(el)) {
        double v = el->valuedouble;
        if (et == SQL_BIGINT && v == (double)(int64_t)v)
            *ret = sql_bigint((int64_t)v);
        else if (et == SQL_TIMESTAMP && v == (double)(int64_t)v)
            *ret = sql_timestamp((int64_t)v);
        else
            *ret = sql_double(v);
        return true;
    }
    return false;
}

/* The stream-table join step (SPEC 14) of a view (xv) or a derived stream
 * (d): every shard holds every table, updated in the log's order, so the
 * row found is the one as of the event's place in that order. */
typedef struct join_ctx {
    cf_sqlx *x;
    xview *xv;
    const cf_sqlx_def *d;
    uint64_t seq;
    int64_t wm;
    int depth;
} join_ctx;

static void view_row(cf_sqlx *x, xview *xv, const sql_row *rowp, uint64_t seq, int64_t wm,
                     bool routed, row_memo *rm);
static void derive_one(cf_sqlx *x, const cf_sqlx_def *d, const sql_row *in, uint64_t seq,
                       int64_t wm, int depth);

static void on_joined(void *ctx, const sql_row *row)
{
    join_ctx *jc = ctx;
    if (jc->xv)
        view_row(jc->x, jc->xv, row, jc->seq, jc->wm, false, NULL);
    else
        derive_one(jc->x, jc->d, row, jc->seq, jc->wm, jc->depth);
}

/* Returns whether a row went on (INNER without a row: none). */
static bool join_table(cf_sqlx *x, const sql_plan_info *pi, const sql_row *src, join_ctx *jc)
{
    bool left = pi->join == SQL_JOIN_LEFT;
    sql_value key;
    if (sql_prog_eval(pi->left_keys[0], src, &x->scratch, &key) < 0) {
        x->errors++;
        return false;
    }
    /* The source row, cut or padded to where the table's columns go. */
    sql_value *l = malloc((pi->right_offset ? pi->right_offset : 1) * sizeof *l);
    if (!l) {
        x->errors++;
        return false;
    }
    for (uint32_t i = 0; i < pi->right_offset; i++)
        l[i] = i < src->n ? src->v[i] : sql_null();
    sql_row lrow = {.v = l, .n = pi->right_offset, .rowtime = src->rowtime};
    sql_table *t = cf_tables_by_name(x->tables, pi->join_source);
    bool went = false;
    if (t) {
        went = sql_table_join(t, left, key, &lrow, on_joined, jc) == 1;
    } else if (left) {
        /* No row was ever written to the table: every lookup misses. */
        uint32_t n = pi->ninput;
        sql_value *v = calloc(n ? n : 1, sizeof *v);
        if (v) {
            for (uint32_t i = 0; i < n; i++)
                v[i] = i < pi->right_offset ? l[i] : sql_null();
            sql_row row = {.v = v, .n = n, .rowtime = src->rowtime};
            on_joined(jc, &row);
            went = true;
        } else {
            x->errors++;
        }
        free(v);
    }
    free(l);
    return went;
}

static xjoin *join_of(cf_sqlx *x, const cf_sqlx_def *d)
{
    for (size_t i = 0; i < x->njoins; i++)
        if (x->joins[i].def == d)
            return &x->joins[i];
    return NULL;
}

/* A row sql_join emits (the input row: left columns, then right ones). */
static void on_paired(void *ctx, const sql_join_result *r)
{
    join_ctx *jc = ctx;
    size_t mark = jc->x->scratch.used;
    on_joined(ctx, &r->row);
    jc->x->scratch.used = mark;
}

/* The interval join step (SPEC 14) of a view (xv) or a derived stream (d):
 * a row of `source` is pushed as the left side, the right side or both (a
 * self-join), evaluated on its own columns; the pairs and LEFT rows it
 * emits go on like any input row. At depth 0 (an event, not a row derived
 * from one) a join that does not read source still sees the event's W, so
 * LEFT rows and buffer drops happen in event order; deeper, the join may
 * be the one emitting (sql_join's callbacks must not call back into it). */
static void join_interval(cf_sqlx *x, const cf_sqlx_def *d, xview *xv, const char *source,
                          size_t source_len, const sql_row *src, uint64_t seq, int64_t wm,
                          int depth)
{
    xjoin *xj = join_of(x, d);
    if (!xj)
        return;
    const sql_plan_info *pi = d->pi;
    join_ctx jc = {x, xv, d, seq, wm, depth};
    bool pushed = false;
    for (int side = 0; side < 2; side++) {
        const char *name = side ? pi->join_source : pi->source;
        if (strlen(name) != source_len || memcmp(name, source, source_len) != 0)
            continue;
        pushed = true;
        uint32_t w = d->jcfg.ncols[side];
        sql_value *v = malloc((w ? w : 1) * sizeof *v);
        if (!v) {
            x->errors++;
            continue;
        }
        for (uint32_t i = 0; i < w; i++)
            v[i] = i < src->n ? src->v[i] : sql_null();
        sql_row row = {.v = v, .n = w, .rowtime = src->rowtime};
        sql_value key[SQL_JOIN_MAX_KEYS];
        const sql_prog *const *kp = side ? pi->right_keys : pi->left_keys;
        bool ok = true;
        for (uint32_t k = 0; ok && k < pi->njoin_keys; k++)
            ok = sql_prog_eval(kp[k], &row, &x->scratch, &key[k]) == 0;
        int rc = ok ? sql_join_push(xj->j, side ? SQL_JOIN_SIDE_RIGHT : SQL_JOIN_SIDE_LEFT, key,
                                    &row, seq, wm, on_paired, &jc)
                    : -EINVAL;
        if (rc < 0) {
            x->errors++;
            if (depth == 0)
                sql_join_advance(xj->j, wm, on_paired, &jc);
        }
        free(v);
    }
    if (!pushed && depth == 0)
        sql_join_advance(xj->j, wm, on_paired, &jc);
}

/* The key rows of `source` are placed by for query d: the join key of its
 * side for an interval join (both sides of a pair must meet on one shard),
 * else its partition (GROUP BY) key. Writes n <= SQL_JOIN_MAX_KEYS values
 * to ret_keys (strings may point into row or x's scratch) and returns n,
 * 0 when rows go anywhere, or -EINVAL. Today every shard gets every row and
 * the joins hold every key; an owner router calls this instead. */
int cf_sqlx_route_key(cf_sqlx *x, const cf_sqlx_def *d, const char *source, const sql_row *row,
                      sql_value *ret_keys)
{
    const sql_plan_info *pi = d->pi;
    const sql_prog *const *kp = NULL;
    uint32_t n = 0;
    if (d->interval) {
        kp = strcmp(source, pi->source) == 0 ? pi->left_keys
             : strcmp(source, pi->join_source) == 0 ? pi->right_keys
                                                     : NULL;
        n = pi->njoin_keys;
    } else if (!d->is_stream && !pi->join && pi->unnest_column < 0) {
        kp = pi->group_keys;
        n = pi->ngroup_keys;
    }
    if (!kp || n > SQL_JOIN_MAX_KEYS)
        return kp ? -EINVAL : 0;
    for (uint32_t k = 0; k < n; k++)
        if (sql_prog_eval(kp[k], row, &x->scratch, &ret_keys[k]) < 0)
            return -EINVAL;
    return (int)n;
}

/* A derived stream's output for one input row (source columns, plus the
 * UNNEST element when there is one), passed on to what reads it. */
static void derive_one(cf_sqlx *x, const cf_sqlx_def *d, const sql_row *in, uint64_t seq,
                       int64_t wm, int depth)
{
    const sql_plan_info *pi = d->pi;
    sql_value f;
    if (pi->filter && !(sql_prog_eval(pi->filter, in, &x->scratch, &f) == 0 && sql_value_is_true(f)))
        return;
    sql_value *out = malloc((pi->ncolumns ? pi->ncolumns : 1) * sizeof *out);
    if (!out) {
        x->errors++;
        return;
    }
    for (uint32_t c = 0; c < pi->ncolumns; c++)
        if (sql_prog_eval(pi->columns[c].prog, in, &x->scratch, &out[c]) < 0) {
            out[c] = sql_null();
            x->errors++;
        }
    if (x->routing) {
        x->masks[0] |= x->chain;    /* shard 0 keeps and pushes every derived row */
    } else if (x->index == 0) {
        xstream *xs = stream_batch(x, d->name);
        if (!xs) {
            x->errors++;
        } else {
            keep_stream_row(x, xs, out, pi->ncolumns, seq);
            if (x->collect)
                render_stream_row(x, d, xs, out, pi->ncolumns);
        }
    }
    sql_row row = {.v = out, .n = pi->ncolumns, .rowtime = in->rowtime};
    apply_row(x, d->name, strlen(d->name), &row, seq, wm, depth + 1);
    free(out);
}

/* Every shard derives every row (each gets every source event) and the
 * views downstream keep the groups their shard owns: the effect of
 * re-routing the rows to the key's shard, without a second hop. */
static void derive(cf_sqlx *x, const cf_sqlx_def *d, const sql_row *src, uint64_t seq, int64_t wm,
                   int depth)
{
    const sql_plan_info *pi = d->pi;
    if (pi->join_table && x->routing) {
        /* The probe holds no table: the joined row, and so every key
         * downstream, is unknown here. Every shard gets the row (and
         * re-checks the owner of what it derives). */
        for (unsigned s = 0; s < x->n_shards; s++)
            x->masks[s] = CF_SQLX_ALL_VIEWS;
        return;
    }
    if (pi->join_table) {
        join_ctx jc = {x, NULL, d, seq, wm, depth};
        join_table(x, pi, src, &jc);
        return;
    }
    if (pi->unnest_column < 0) {
        derive_one(x, d, src, seq, wm, depth);
        return;
    }
    sql_value arr;
    if (sql_prog_eval(pi->unnest, src, &x->scratch, &arr) < 0 ||
        (arr.type != SQL_ARRAY && arr.type != SQL_JSON))
        return;     /* NULL or not an array: no rows (SQL's UNNEST of NULL) */
    cJSON *a = cJSON_ParseWithLength(arr.u.s, arr.len);
    uint32_t ncols = (uint32_t)pi->unnest_column + 1;
    sql_value *in = malloc(ncols * sizeof *in);
    if (!a || !in || !cJSON_IsArray(a)) {
        cJSON_Delete(a);
        free(in);
        return;
    }
    for (uint32_t c = 0; c + 1 < ncols; c++)
        in[c] = c < src->n ? src->v[c] : sql_null();
    sql_type et = pi->input[pi->unnest_column].type;
    const cJSON *el;
    cJSON_ArrayForEach(el, a) {
        size_t mark = x->scratch.used;
        if (!element_value(x, el, et, &in[ncols - 1])) {
            x->errors++;
            continue;
        }
        sql_row row = {.v = in, .n = ncols, .rowtime = src->rowtime};
        derive_one(x, d, &row, seq, wm, depth);
        x->scratch.used = mark;
    }
    cJSON_Delete(a);
    free(in);
}

static bool is_source(const char *name, size_t len, const char *source, size_t source_len)
{
    return name && len == source_len && memcmp(name, source, source_len) == 0;
}

int cf_sqlx_def_partition(const cf_sqlx_def *d, const char *source, size_t source_len, int side,
                          const sql_prog **ret_filter, const sql_prog *const **ret_keys,
                          uint32_t *ret_nkeys)
{
    const sql_plan_info *pi = d->pi;
    if (d->is_stream)
        return -ENOENT;
    if (pi->join != SQL_JOIN_NONE && !pi->join_table) {
        /* A stream-stream (interval) join: both sides meet on the shard
         * owning the join key; WHERE reads the joined row, not this one. */
        if (!(side ? is_source(pi->join_source, d->join_source_len, source, source_len)
                   : is_source(pi->source, d->source_len, source, source_len)))
            return -ENOENT;
        /* Every shard runs the join over every key and keeps the groups
         * it owns of the rows it makes (docs/SQL.md), so the rows of both
         * sides go to every shard. Routing them by the join key (side ?
         * right_keys : left_keys) would keep one copy of the buffers, but
         * a view grouping by anything else would then need a second hop,
         * and the shards' snapshot parts would hold different keys at
         * different watermarks, which a rescale can't merge yet. */
        return 1;
    }
    if (side || !is_source(pi->source, d->source_len, source, source_len))
        return -ENOENT;
    if (pi->join_table)
        return 1;   /* the key may read the table's row */
    *ret_filter = pi->filter;
    *ret_keys = pi->group_keys;
    *ret_nkeys = pi->ngroup_keys;
    return 0;
}

/* The probe's half of apply_row: for each view reading `source`, the shard
 * that owns the row's partition key (cf_sqlx_def_partition: the filter and
 * key programs evaluated once, here) gets the view's bit and the bits of
 * the derived streams the row came through. A view joined to a table, or a
 * row whose programs fail, goes to every shard: they re-check the owner
 * after the join. */
static void route_views(cf_sqlx *x, const char *source, size_t source_len, const sql_row *row,
                        size_t base)
{
    /* What the row's views share: their WHERE verdicts (1 pass, 0 not,
     * -1 failed; by the set index of the first of equal filters) and the
     * owner of each plain key column's value. */
    struct { uint32_t def; int verdict; } wv[8];
    struct { int col; unsigned shard; } own[8];
    uint32_t nwv = 0, nown = 0;
    for (size_t j = 0; x->set && j < 2 * x->set->n; j++) {
        size_t i = j / 2;   /* each view twice: a self-join's row is on both sides */
        const cf_sqlx_def *d = x->set->defs[i];
        const sql_prog *filter = NULL;
        const sql_prog *const *kp = NULL;
        uint32_t nk = 0;
        if (!d->runnable)
            continue;
        int part = cf_sqlx_def_partition(d, source, source_len, (int)(j % 2), &filter, &kp, &nk);
        if (part < 0)
            continue;
        /* part 0: filter and kp are the view's own WHERE and GROUP BY */
        bool fast = part == 0 && !x->generic;
        uint64_t bits = x->chain | cf_sqlx_view_bit(i);
        x->scratch.used = base;
        sql_value keys[16], f;
        bool all = part == 1 || nk > 16;
        if (!all && filter) {
            uint32_t at = fast && x->set->where_twin[i] >= 0 ? (uint32_t)x->set->where_twin[i]
                                                              : (uint32_t)i;
            int verdict = 2;
            for (uint32_t w = 0; fast && w < nwv && verdict == 2; w++)
                if (wv[w].def == at)
                    verdict = wv[w].verdict;
            if (verdict == 2) {
                int rc = sql_prog_eval(filter, row, &x->scratch, &f);
                verdict = rc < 0 ? -1 : sql_value_is_true(f) ? 1 : 0;
                if (fast && nwv < 8) {
                    wv[nwv].def = at;
                    wv[nwv++].verdict = verdict;
                }
            }
            if (verdict == 0)
                continue;   /* filtered out: no shard needs it */
            all = verdict < 0;
        }
        for (uint32_t k = 0; !all && k < nk; k++) {
            int c = fast ? d->key_col[k] : -1;
            if (c >= 0)   /* what SQL_VM_COL reads */
                keys[k] = (uint32_t)c < row->n ? row->v[c] : sql_null();
            else
                all = sql_prog_eval(kp[k], row, &x->scratch, &keys[k]) < 0;
        }
        if (all) {
            for (unsigned s = 0; s < x->n_shards; s++)
                x->masks[s] |= bits;
            continue;
        }
        int c = fast && nk == 1 ? d->key_col[0] : -1;
        unsigned shard = x->n_shards;
        for (uint32_t o = 0; c >= 0 && o < nown && shard == x->n_shards; o++)
            if (own[o].col == c)
                shard = own[o].shard;
        if (shard == x->n_shards) {
            shard = owner(x, keys, nk);
            if (c >= 0 && nown < 8) {
                own[nown].col = c;
                own[nown++].shard = shard;
            }
        }
        x->masks[shard] |= bits;
    }
    x->scratch.used = base;
}

/* One row of `source` through every view and derived stream that reads it. */
static void apply_row(cf_sqlx *x, const char *source, size_t source_len, const sql_row *rowp,
                      uint64_t seq, int64_t wm, int depth)
{
    sql_row row = *rowp;
    size_t base = x->scratch.used;  /* an outer derived row's strings live below */
    for (size_t i = 0; depth < 64 && x->set && i < x->set->n; i++) {
        const cf_sqlx_def *d = x->set->defs[i];
        if (d->is_stream && d->runnable && d->interval) {
            /* Every shard gets the rows of a join's sides and runs the
             * join over every key (docs/SQL.md): the probe holds no join
             * state, so what the join derives, and every key downstream,
             * is unknown there. */
            if (!x->routing) {
                join_interval(x, d, NULL, source, source_len, &row, seq, wm, depth);
            } else if (is_source(d->pi->source, d->source_len, source, source_len) ||
                       is_source(d->pi->join_source, d->join_source_len, source, source_len)) {
                for (unsigned s = 0; s < x->n_shards; s++)
                    x->masks[s] = CF_SQLX_ALL_VIEWS;
                return;
            }
            x->scratch.used = base;
        } else if (d->is_stream && d->runnable && is_source(d->pi->source, d->source_len, source, source_len)) {
            uint64_t chain = x->chain;
            if (x->routing)
                x->chain |= cf_sqlx_view_bit(i);
            else if (!(x->routed & cf_sqlx_view_bit(i)))
                continue;   /* routed elsewhere: no view here needs its rows */
            derive(x, d, &row, seq, wm, depth);
            x->chain = chain;
            x->scratch.used = base;
        }
    }
    if (x->routing) {
        route_views(x, source, source_len, &row, base);
        return;
    }
    row_memo rm;
    cf_sqlx_memo_reset(&rm.m);
    rm.nwhere = 0;
    for (size_t i = 0; i < x->n; i++) {
        xview *xv = &x->views[i];
        const sql_plan_info *pi = xv->def->pi;
        x->cur = xv;
        if (xv->def->interval) {
            /* Rows routed here for this view go into its join; others
             * only move it to their W. */
            bool mine = x->routed & cf_sqlx_view_bit(xv->at);
            x->scratch.used = base;
            join_interval(x, xv->def, xv, mine ? source : "", mine ? source_len : 0, &row, seq, wm,
                          depth);
            x->cur = xv;    /* a derived row's views may have moved it */
            sql_view_advance(xv->v, wm, on_result, x);
            continue;
        }
        if (!is_source(pi->source, xv->def->source_len, source, source_len) ||
            !(x->routed & cf_sqlx_view_bit(xv->at))) {
            /* Not its source, or its key is another shard's: the view
             * still sees the event's W. */
            sql_view_advance(xv->v, wm, on_result, x);
            continue;
        }
        x->scratch.used = base;
        if (pi->join_table) {
            join_ctx jc = {x, xv, NULL, seq, wm, depth};
            if (!join_table(x, pi, &row, &jc))
                sql_view_advance(xv->v, wm, on_result, x);  /* INNER, no row */
            continue;
        }
        /* A row of the view's own source routed here by the probe passed
         * the filter there and its key is this shard's: not evaluated
         * again. Not so for one shard (no probe ran), a failed probe (every
         * mask full), views past the 63rd bit, or rows derived here (an
         * UNNEST's elements have keys of their own). */
        bool routed = depth == 0 && xv->at < 63 && x->routed != CF_SQLX_ALL_VIEWS &&
                      pi->join == SQL_JOIN_NONE;
        view_row(x, xv, &row, seq, wm, routed, x->generic ? NULL : &rm);
    }
    x->cur = NULL;
}

static uint64_t memo_key_hash(cf_sqlx_memo *m, const sql_view *v, int c, const sql_value *key);
static uint64_t memo_distinct_hash(cf_sqlx_memo *m, int c, sql_value val);

/* xv's WHERE over the row, or the verdict of its twin (an equal program
 * over the same row) when rm holds one. */
static bool view_where(cf_sqlx *x, const xview *xv, const sql_row *row, row_memo *rm)
{
    uint32_t self = (uint32_t)(xv - x->views);
    uint32_t at = rm && xv->where_twin >= 0 ? (uint32_t)xv->where_twin : self;
    for (uint32_t i = 0; rm && i < rm->nwhere; i++)
        if (rm->where[i].view == at)
            return rm->where[i].pass;
    sql_value f;
    bool pass = sql_prog_eval(xv->def->pi->filter, row, &x->scratch, &f) == 0 &&
                sql_value_is_true(f);
    if (rm && rm->nwhere < ROW_MEMO_WHERE) {
        rm->where[rm->nwhere].view = at;
        rm->where[rm->nwhere++].pass = pass;
    }
    return pass;
}

/* One input row (the source's, or joined) into view xv: filter, group key,
 * owner, aggregates. routed: the probe found the row passes the filter and
 * this shard owns its key (only the key is evaluated again). rm: the row's
 * memo (apply_row's rows; NULL for joined rows and the generic path): then
 * keys and arguments that are plain columns are copied, not run, and their
 * hashes and the WHERE verdict are shared with the row's other views, as
 * cf_sqlx_def_apply does for the built-ins. Same state either way
 * (test_sql_exec: test_fast_view_row_matches_generic). */
static void view_row(cf_sqlx *x, xview *xv, const sql_row *rowp, uint64_t seq, int64_t wm,
                     bool routed, row_memo *rm)
{
    const cf_sqlx_def *d = xv->def;
    const sql_plan_info *pi = d->pi;
    sql_row row = *rowp;
    xv->rows_in++;
    sql_value keys[16], args[64];
    bool take = true;
    if (pi->filter && !routed)
        take = view_where(x, xv, &row, rm);
    for (uint32_t k = 0; take && k < pi->ngroup_keys && k < 16; k++) {
        int c = rm ? d->key_col[k] : -1;
        if (c >= 0)   /* what SQL_VM_COL reads */
            keys[k] = (uint32_t)c < row.n ? row.v[c] : sql_null();
        else if (sql_prog_eval(pi->group_keys[k], &row, &x->scratch, &keys[k]) < 0) {
            x->errors++;
            take = false;
        }
    }
    if (take && !routed && owner(x, keys, pi->ngroup_keys) != x->index)
        take = false;
    if (!take) {
        /* Not this shard's row: the view still sees the event's W. */
        sql_view_advance(xv->v, wm, on_result, x);
        return;
    }
    for (uint32_t a = 0; a < pi->naggs && a < 64; a++) {
        int c = rm ? d->arg_col[a] : -1;
        args[a] = sql_null();
        if (c >= 0)
            args[a] = (uint32_t)c < row.n ? row.v[c] : sql_null();
        else if (pi->aggs[a].arg && sql_prog_eval(pi->aggs[a].arg, &row, &x->scratch, &args[a]) < 0)
            x->errors++;
    }
    if (pi->naggs == 0)
        args[0] = sql_null();
    int rc;
    if (!rm) {
        rc = sql_view_apply(xv->v, keys, args, row.rowtime, seq, wm, on_result, x);
    } else {
        uint64_t kh = pi->ngroup_keys == 1 && d->key_col[0] >= 0
                          ? memo_key_hash(&rm->m, xv->v, d->key_col[0], keys)
                          : sql_view_key_hash(xv->v, keys);
        uint64_t ah[64];
        for (uint32_t a = 0; a < pi->naggs && a < 64; a++)
            if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && args[a].type != SQL_NULL)
                ah[a] = d->arg_col[a] >= 0 ? memo_distinct_hash(&rm->m, d->arg_col[a], args[a])
                                           : sql_agg_distinct_hash(args[a]);
        rc = sql_view_apply_hashed(xv->v, keys, kh, args, ah, row.rowtime, seq, wm, on_result, x);
    }
    if (rc < 0)
        x->errors++;
    else
        xv->dirty = true;
}

void cf_sqlx_set_generic(cf_sqlx *x, bool generic) { x->generic = generic; }

const sql_view_config *cf_sqlx_def_view_config(const cf_sqlx_def *d) { return &d->vcfg; }

void cf_sqlx_click_row(const cf_event *ev, sql_value *cols) { click_row(ev, cols); }

bool cf_sqlx_def_where(cf_sqlx *x, const cf_sqlx_def *d, const sql_value *cols, int64_t ts)
{
    const sql_plan_info *pi = d->pi;
    if (!pi->filter)
        return true;
    sql_row row = {.v = (sql_value *)cols, .n = CLICKS_COLUMNS, .rowtime = ts};
    sql_value f;
    x->scratch.used = 0;
    return sql_prog_eval(pi->filter, &row, &x->scratch, &f) == 0 && sql_value_is_true(f);
}

bool cf_sqlx_def_same_where(const cf_sqlx_def *a, const cf_sqlx_def *b)
{
    const sql_prog *fa = a->pi->filter, *fb = b->pi->filter;
    return fa == fb || (fa && fb && sql_prog_equal(fa, fb));
}

/* v's hash of a one-column key (column c of the row), through the memo:
 * views of one seed hash a key alike (sql_view_key_hash). */
static uint64_t memo_key_hash(cf_sqlx_memo *m, const sql_view *v, int c, const sql_value *key)
{
    uint64_t seed = sql_view_get_config(v)->hash_seed;
    for (uint32_t i = 0; i < m->nkey; i++)
        if (m->key[i].col == c && m->key[i].seed == seed)
            return m->key[i].hash;
    uint64_t h = sql_view_key_hash(v, key);
    if (m->nkey < CF_SQLX_MEMO) {
        m->key[m->nkey].col = c;
        m->key[m->nkey].seed = seed;
        m->key[m->nkey++].hash = h;
    }
    return h;
}

static uint64_t memo_distinct_hash(cf_sqlx_memo *m, int c, sql_value val)
{
    for (uint32_t i = 0; i < m->ndist; i++)
        if (m->dist[i].col == c)
            return m->dist[i].hash;
    uint64_t h = sql_agg_distinct_hash(val);
    if (m->ndist < CF_SQLX_MEMO) {
        m->dist[m->ndist].col = c;
        m->dist[m->ndist++].hash = h;
    }
    return h;
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
        keys[k] = c < CLICKS_COLUMNS ? cols[c] : sql_null();
    }
    if (memo && pi->ngroup_keys == 1) {
        uint64_t ah[64];
        if (step == 3)  /* where the COUNT(DISTINCT) of plain columns go */
            for (uint32_t a = 0; a < pi->naggs && a < 64; a++) {
                int c = d->arg_col[a];
                ah[a] = 0;
                if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && c >= 0 && c < CLICKS_COLUMNS &&
                    cols[c].type != SQL_NULL)
                    ah[a] = memo_distinct_hash(memo, c, cols[c]);
            }
        sql_view_prefetch_step(v, memo_key_hash(memo, v, d->key_col[0], keys),
                               step == 3 ? ah : NULL, ts, step);
    } else if (step == 0)
        sql_view_prefetch(v, keys, ts);
}

int cf_sqlx_def_apply(cf_sqlx *x, const cf_sqlx_def *d, sql_view *v, const sql_value *cols,
                      int64_t ts, bool where_checked, uint64_t seq, int64_t wm,
                      sql_view_emit_fn emit, void *ctx, cf_sqlx_memo *memo)
{
    const sql_plan_info *pi = d->pi;
    sql_row row = {.v = (sql_value *)cols, .n = CLICKS_COLUMNS, .rowtime = ts};
    sql_value keys[16], args[64];
    if (!where_checked && !cf_sqlx_def_where(x, d, cols, ts))
        return CF_SQLX_FILTERED;
    x->scratch.used = 0;
    for (uint32_t k = 0; k < pi->ngroup_keys && k < 16; k++) {
        int c = d->key_col[k];
        if (c >= 0)
            keys[k] = c < CLICKS_COLUMNS ? cols[c] : sql_null();
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
            args[a] = c < CLICKS_COLUMNS ? cols[c] : sql_null();
        else if (pi->aggs[a].arg &&
                 sql_prog_eval(pi->aggs[a].arg, &row, &x->scratch, &args[a]) < 0)
            x->errors++;
    }
    if (!memo)
        return sql_view_apply(v, keys, args, ts, seq, wm, emit, ctx);
    /* The hashes of plain columns once per row, whatever views share them. */
    uint64_t kh = pi->ngroup_keys == 1 && d->key_col[0] >= 0
                      ? memo_key_hash(memo, v, d->key_col[0], keys)
                      : sql_view_key_hash(v, keys);
    uint64_t ah[64];
    for (uint32_t a = 0; a < pi->naggs && a < 64; a++)
        if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && args[a].type != SQL_NULL)
            ah[a] = d->arg_col[a] >= 0 ? memo_distinct_hash(memo, d->arg_col[a], args[a])
                                       : sql_agg_distinct_hash(args[a]);
    return sql_view_apply_hashed(v, keys, kh, args, ah, ts, seq, wm, emit, ctx);
}

void cf_sqlx_event(cf_sqlx *x, const cf_event *ev, uint64_t seq, int64_t wm, int64_t clock,
                   uint64_t views)
{
    x->routed = views;
    if (clock != CF_TIME_NONE && (x->clock == CF_TIME_NONE || clock > x->clock))
        x->clock = clock;
    if (cf_sqlx_set_count(x->set) == 0)
        return;     /* nothing runs (derived streams are in the set, not in views) */
    sql_value cols[CLICKS_COLUMNS];
    click_row(ev, cols);
    sql_row row = {.v = cols, .n = CLICKS_COLUMNS, .rowtime = ev->ts};
    x->scratch.used = 0;
    x->last_seq = seq;
    apply_row(x, "clicks", 6, &row, seq, wm, 0);
}

#define MAX_ROW_COLUMNS 1024

/* Decodes a packed declared-stream row (stream_ingest.h) into cols (room
 * for MAX_ROW_COLUMNS) and runs it through apply_row. */
static void packed_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *packed,
                       size_t packed_len, uint64_t seq, int64_t wm)
{
    sql_value *cols = malloc(MAX_ROW_COLUMNS * sizeof *cols);
    if (!cols) {
        x->errors++;
        return;
    }
    cf_reader r;
    cf_reader_init(&r, packed, packed_len);
    int64_t ts = 0;
    uint32_t n = 0;
    bool ok = cf_get_i64(&r, &ts);
    while (ok && r.left > 0 && n < MAX_ROW_COLUMNS)
        ok = cf_sqlx_get_value(&r, &cols[n++]);
    if (ok) {
        sql_row row = {.v = cols, .n = n, .rowtime = ts};
        x->scratch.used = 0;
        x->last_seq = seq;
        apply_row(x, stream, stream_len, &row, seq, wm, 0);
    } else {
        x->errors++;    /* the sequencer packed it: a bug */
    }
    free(cols);
}

void cf_sqlx_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *packed,
                 size_t packed_len, uint64_t seq, int64_t wm, int64_t clock, uint64_t views)
{
    x->routed = views;
    if (clock != CF_TIME_NONE && (x->clock == CF_TIME_NONE || clock > x->clock))
        x->clock = clock;
    if (cf_sqlx_set_count(x->set) == 0)
        return;
    packed_row(x, stream, stream_len, packed, packed_len, seq, wm);
}

/* -- routing probe ------------------------------------------------------------------ */

cf_sqlx *cf_sqlx_probe_new(unsigned n_shards)
{
    cf_sqlx *x = cf_sqlx_new(0, n_shards, 1);
    if (x)
        x->routing = true;
    return x;
}

unsigned cf_sqlx_probe_shards(const cf_sqlx *probe) { return probe->n_shards; }

/* Points the probe at set and masks for one route; the set is borrowed. */
static void probe_begin(cf_sqlx *x, cf_sqlx_set *set, uint64_t *masks)
{
    x->set = set;
    x->masks = masks;
    x->chain = 0;
    x->scratch.used = 0;
}

static int probe_end(cf_sqlx *x, uint64_t errors)
{
    x->set = NULL;
    x->masks = NULL;
    if (x->errors == errors)
        return 0;
    /* A program failed (scratch full, OOM): every shard gets every view,
     * and each one decides for itself as before routing. */
    for (unsigned s = 0; s < x->n_shards; s++)
        x->masks[s] = CF_SQLX_ALL_VIEWS;
    return 0;
}

int cf_sqlx_route_event(cf_sqlx *probe, cf_sqlx_set *set, const cf_event *ev, uint64_t *masks)
{
    uint64_t errors = probe->errors;
    probe_begin(probe, set, masks);
    sql_value cols[CLICKS_COLUMNS];
    click_row(ev, cols);
    sql_row row = {.v = cols, .n = CLICKS_COLUMNS, .rowtime = ev->ts};
    apply_row(probe, "clicks", 6, &row, 0, CF_TIME_NONE, 0);
    return probe_end(probe, errors);
}

int cf_sqlx_route_row(cf_sqlx *probe, cf_sqlx_set *set, const char *stream, size_t stream_len,
                      const uint8_t *packed, size_t packed_len, uint64_t *masks)
{
    uint64_t errors = probe->errors;
    probe_begin(probe, set, masks);
    packed_row(probe, stream, stream_len, packed, packed_len, 0, CF_TIME_NONE);
    return probe_end(probe, errors);
}

void cf_sqlx_advance(cf_sqlx *x, int64_t wm, int64_t clock)
{
    if (clock != CF_TIME_NONE && (x->clock == CF_TIME_NONE || clock > x->clock))
        x->clock = clock;
    /* The joins first: the LEFT rows this W makes due reach their views
     * before the views fire at it, as they would with an event. */
    for (size_t i = 0; i < x->njoins; i++) {
        xjoin *xj = &x->joins[i];
        xview *xv = NULL;
        for (size_t k = 0; !xj->def->is_stream && k < x->n && !xv; k++)
            if (x->views[k].def == xj->def)
                xv = &x->views[k];
        if (!xj->def->is_stream && !xv)
            continue;
        x->scratch.used = 0;
        x->cur = xv;
        join_ctx jc = {x, xv, xj->def, x->last_seq, wm, 0};
        sql_join_advance(xj->j, wm, on_paired, &jc);
    }
    for (size_t i = 0; i < x->n; i++) {
        x->cur = &x->views[i];
        sql_view_advance(x->views[i].v, wm, on_result, x);
    }
    x->cur = NULL;
}

static void put_record(cf_sqlx *x, uint32_t revision, const void *id, size_t id_len,
                       const void *row, size_t row_len)
{
    cf_buf_put_str(x->out, id, id_len);
    cf_buf_put_u32(x->out, revision);
    cf_buf_put(x->out, row, row_len);
    x->out_n++;
}

static void on_open(void *ctx, const sql_view_result *r)
{
    cf_sqlx *x = ctx;
    if (encode_result(x, x->cur->def, r) < 0) {
        x->errors++;
        return;
    }
    put_record(x, r->revision, x->id.data, x->id.len, x->row.data, x->row.len);
}

static void on_interim(void *ctx, const sql_view_result *r)
{
    cf_sqlx *x = ctx;
    xview *xv = (xview *)x->cur;
    if (x->interim_left == 0)
        return;
    if (encode_result(x, xv->def, r) < 0) {
        x->errors++;
        return;
    }
    render_pending(x, xv);
    x->interim_left--;
}

void cf_sqlx_interim(cf_sqlx *x, size_t max_rows, cf_sqlx_publish_fn fn, void *ctx)
{
    x->interim = true;
    for (size_t i = 0; i < x->n; i++) {
        xview *xv = &x->views[i];
        if (!xv->dirty || xv->def->vcfg.emit == SQL_EMIT_FINAL)
            continue;
        xv->dirty = false;
        x->cur = xv;
        x->scratch.used = 0;
        x->interim_left = max_rows;
        sql_view_foreach_open(xv->v, x->clock == CF_TIME_NONE ? 0 : x->clock, on_interim, x);
    }
    x->cur = NULL;
    cf_sqlx_flush(x, fn, ctx);
    x->interim = false;
}

long cf_sqlx_rows(cf_sqlx *x, const char *name, cf_buf *out)
{
    xview *xv = NULL;
    for (size_t i = 0; i < x->n && !xv; i++)
        if (strcmp(x->views[i].def->name, name) == 0)
            xv = &x->views[i];
    if (!xv) {
        const cf_sqlx_def *d = cf_sqlx_set_find(x->set, name);
        if (!d || !d->is_stream || !d->runnable)
            return -ENOENT;
        /* A derived stream: its newest rows, kept on shard 0 alone. */
        x->out = out;
        x->out_n = 0;
        for (size_t i = 0; x->index == 0 && i < x->nstreams; i++) {
            const xstream *xs = &x->streams[i];
            if (strcmp(xs->name, name) != 0)
                continue;
            for (size_t j = 0; j < cf_retain_len(xs->kept); j++) {
                const kept_row *k = cf_retain_at(xs->kept, j);
                put_record(x, 0, k->data, k->id_len, k->data + k->id_len, k->row_len);
            }
        }
        x->out = NULL;
        return out->oom ? -ENOMEM : x->out_n;
    }
    x->out = out;
    x->out_n = 0;
    x->cur = xv;
    x->scratch.used = 0;
    for (size_t i = 0; i < cf_retain_len(xv->kept); i++) {
        const kept_row *k = cf_retain_at(xv->kept, i);
        put_record(x, k->revision, k->data, k->id_len, k->data + k->id_len, k->row_len);
    }
    sql_view_foreach_open(xv->v, x->clock == CF_TIME_NONE ? 0 : x->clock, on_open, x);
    x->cur = NULL;
    x->out = NULL;
    return out->oom ? -ENOMEM : x->out_n;
}

/* -- snapshots ---------------------------------------------------------------------- */

int cf_sqlx_save(const cf_sqlx *x, cf_buf *out)
{
    cf_buf_put_u32(out, (uint32_t)x->n);
    cf_buf blob = {0};
    int rc = 0;
    for (size_t i = 0; i < x->n && rc == 0; i++) {
        const xview *xv = &x->views[i];
        cf_buf_put_str(out, xv->def->name, strlen(xv->def->name));
        cf_buf_reset(&blob);
        rc = sql_view_save(xv->v, NULL, NULL, &blob);
        cf_buf_put_str(out, blob.len ? (const char *)blob.data : "", blob.len);
        size_t n = cf_retain_len(xv->kept);
        cf_buf_put_u64(out, n);
        for (size_t k = 0; k < n; k++) {
            const kept_row *r = cf_retain_at(xv->kept, k);
            cf_buf_put_u32(out, r->revision);
            cf_buf_put_str(out, (const char *)r->data, r->id_len);
            cf_buf_put_str(out, (const char *)r->data + r->id_len, r->row_len);
        }
    }
    /* Then the interval joins (shard part version 3), by query name. */
    cf_buf_put_u32(out, (uint32_t)x->njoins);
    for (size_t i = 0; i < x->njoins && rc == 0; i++) {
        const xjoin *xj = &x->joins[i];
        cf_buf_put_str(out, xj->def->name, strlen(xj->def->name));
        cf_buf_reset(&blob);
        rc = sql_join_save(xj->j, &blob);
        cf_buf_put_str(out, blob.len ? (const char *)blob.data : "", blob.len);
    }
    cf_buf_free(&blob);
    return rc < 0 ? rc : out->oom || blob.oom ? -ENOMEM : 0;
}

typedef struct keep_ctx {
    cf_sqlx *x;
} keep_ctx;

static bool keep_mine(void *ctx, const sql_value *key, uint32_t nkeys)
{
    keep_ctx *k = ctx;
    return owner(k->x, key, nkeys) == k->x->index;
}

/* A part saved under another shard count: load it whole into a scratch
 * view, then move over only the groups this shard owns now. */
static int load_rescaled(cf_sqlx *x, xview *xv, cf_reader *blob)
{
    sql_view *tmp = sql_view_new(&xv->def->vcfg);
    if (!tmp)
        return -ENOMEM;
    int rc = sql_view_load(tmp, blob);
    cf_buf mine = {0};
    keep_ctx kc = {x};
    if (rc == 0)
        rc = sql_view_save(tmp, keep_mine, &kc, &mine);
    sql_view_free(tmp);
    if (rc == 0 && mine.oom)
        rc = -ENOMEM;
    if (rc == 0) {
        cf_reader r;
        cf_reader_init(&r, mine.data, mine.len);
        rc = sql_view_load(xv->v, &r);
    }
    cf_buf_free(&mine);
    return rc;
}

/* The joins of one part. Every shard holds every key of a join, so every
 * part holds the same events: the first part read fills the join, the
 * others (a rescale reads them all) are skipped. */
static int load_joins(cf_sqlx *x, cf_reader *in)
{
    uint32_t n = 0;
    if (!cf_get_u32(in, &n))
        return -EINVAL;
    for (uint32_t i = 0; i < n; i++) {
        const char *name = NULL, *blob = NULL;
        size_t name_len = 0, blob_len = 0;
        if (!cf_get_str(in, &name, &name_len) || !cf_get_str(in, &blob, &blob_len))
            return -EINVAL;
        xjoin *xj = NULL;
        for (size_t k = 0; k < x->njoins && !xj; k++)
            if (strlen(x->joins[k].def->name) == name_len &&
                memcmp(x->joins[k].def->name, name, name_len) == 0)
                xj = &x->joins[k];
        if (!xj || xj->loaded)
            continue;
        cf_reader br;
        cf_reader_init(&br, blob, blob_len);
        int rc = sql_join_load(xj->j, &br, NULL, NULL);
        if (rc < 0)
            return rc;
        xj->loaded = true;
    }
    return 0;
}

int cf_sqlx_load(cf_sqlx *x, cf_reader *in, bool rescale, bool joins)
{
    uint32_t nviews = 0;
    if (!cf_get_u32(in, &nviews))
        return -EINVAL;
    for (uint32_t i = 0; i < nviews; i++) {
        const char *name = NULL, *blob = NULL;
        size_t name_len = 0, blob_len = 0;
        uint64_t nkept = 0;
        if (!cf_get_str(in, &name, &name_len) || !cf_get_str(in, &blob, &blob_len) ||
            !cf_get_u64(in, &nkept))
            return -EINVAL;
        xview *xv = NULL;
        for (size_t k = 0; k < x->n && !xv; k++)
            if (strlen(x->views[k].def->name) == name_len &&
                memcmp(x->views[k].def->name, name, name_len) == 0)
                xv = &x->views[k];
        if (xv) {
            cf_reader br;
            cf_reader_init(&br, blob, blob_len);
            int rc = rescale ? load_rescaled(x, xv, &br) : sql_view_load(xv->v, &br);
            if (rc < 0)
                return rc;
        }
        for (uint64_t k = 0; k < nkept; k++) {
            uint32_t rev = 0;
            const char *id = NULL, *row = NULL;
            size_t id_len = 0, row_len = 0;
            if (!cf_get_u32(in, &rev) || !cf_get_str(in, &id, &id_len) ||
                !cf_get_str(in, &row, &row_len) || id_len < 8)
                return -EINVAL;
            if (!xv || (rescale && owner_of_bytes(x, id + 8, id_len - 8) != x->index))
                continue;
            kept_row *r = malloc(sizeof *r + id_len + row_len);
            if (!r)
                return -ENOMEM;
            r->revision = rev;
            r->id_len = (uint32_t)id_len;
            r->row_len = (uint32_t)row_len;
            memcpy(r->data, id, id_len);
            memcpy(r->data + id_len, row, row_len);
            cf_retain_push(xv->kept, r);
        }
    }
    return joins ? load_joins(x, in) : 0;
}

void cf_sqlx_stats(const cf_sqlx *x, cf_buf *out)
{
    cf_buf_put_u32(out, (uint32_t)x->n);
    for (size_t i = 0; i < x->n; i++) {
        const xview *xv = &x->views[i];
        sql_view_stats st;
        sql_view_stats_get(xv->v, &st);
        size_t kept = 0;
        for (size_t k = 0; k < cf_retain_len(xv->kept); k++) {
            const kept_row *r = cf_retain_at(xv->kept, k);
            kept += sizeof *r + r->id_len + r->row_len;
        }
        cf_buf_put_str(out, xv->def->name, strlen(xv->def->name));
        cf_buf_put_u64(out, st.bytes + kept);
        cf_buf_put_u64(out, st.groups);
        cf_buf_put_u64(out, st.late_dropped);
        cf_buf_put_u64(out, xv->rows_in);
    }
    /* Then per interval join: str name, and u64 buffered left, buffered
     * right, bytes, keys, pairs, unmatched (LEFT rows), late, dropped. */
    cf_buf_put_u32(out, (uint32_t)x->njoins);
    for (size_t i = 0; i < x->njoins; i++) {
        const xjoin *xj = &x->joins[i];
        sql_join_stats st;
        sql_join_stats_get(xj->j, &st);
        cf_buf_put_str(out, xj->def->name, strlen(xj->def->name));
        cf_buf_put_u64(out, st.buffered[0]);
        cf_buf_put_u64(out, st.buffered[1]);
        cf_buf_put_u64(out, st.memory);
        cf_buf_put_u64(out, st.keys);
        cf_buf_put_u64(out, st.pairs);
        cf_buf_put_u64(out, st.unmatched);
        cf_buf_put_u64(out, st.late[0] + st.late[1]);
        cf_buf_put_u64(out, st.dropped);
    }
}

void cf_sqlx_table(cf_sqlx *x, const uint8_t *msg, size_t len, uint32_t n)
{
    cf_reader r;
    cf_reader_init(&r, msg, len);
    const char *name = NULL, *sql = NULL;
    size_t nl = 0, sl = 0;
    uint32_t ncols = 0, key = 0;
    if (!cf_get_str(&r, &name, &nl) || !cf_get_str(&r, &sql, &sl) || !cf_get_u32(&r, &ncols) ||
        !cf_get_u32(&r, &key) || nl >= 256) {
        x->errors++;
        return;
    }
    char nbuf[256];
    memcpy(nbuf, name, nl);
    nbuf[nl] = '\0';
    char *def = strndup(sql, sl);
    sql_object o = {.name = nbuf, .kind = SQL_OBJ_TABLE, .ncolumns = ncols, .key_column = (int)key,
                    .sql = def};
    sql_table *t = NULL;
    for (uint32_t i = 0; def && i < n; i++) {
        uint8_t op = 0;
        const char *p = NULL;
        size_t pl = 0;
        if (!cf_get_u8(&r, &op) || !cf_get_str(&r, &p, &pl)) {
            x->errors++;
            break;
        }
        if (op == CF_TABLE_DROP) {
            cf_tables_drop(x->tables, nbuf);
            t = NULL;
            continue;
        }
        if (!t)
            t = cf_tables_get(x->tables, &o);
        /* The sequencer applied the same op to the same rows: it fits. */
        if (!t || cf_tables_apply(t, &o, op, (const uint8_t *)p, pl) < 0)
            x->errors++;
    }
    if (!def)
        x->errors++;
    free(def);
}

int cf_sqlx_load_tables(cf_sqlx *x, const void *blob, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, blob, len);
    return cf_tables_load(x->tables, &r);
}
