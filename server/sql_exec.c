/* sql_exec: user views in the shard threads (see the header; the other
 * jobs are in sql_exec_*.c, sql_exec_int.h lists them). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <sys/random.h>

#include "cf_hash.h"
#include "cf_jsonnum.h"
#include "cf_time.h"
#include "log.h"

#define SCRATCH_BYTES (256u << 10)  /* strings one event's programs make */

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
            if (sqlx_same_filtered_source(d, nv[j].def))
                nv[i].where_twin = (int32_t)j;
    }
    cf_sqlx_set_unref(x->set);
    x->set = set;
}

unsigned sqlx_owner_of_bytes(const cf_sqlx *x, const cf_sqlx_def *d, const void *p, size_t n)
{
    return sqlx_place(cf_hash64(n ? p : "", n, OWNER_SEED), d->place_seed, x->n_shards);
}

uint64_t sqlx_key_hash(cf_sqlx *x, const sql_value *keys, uint32_t n)
{
    cf_buf_reset(&x->keybuf);
    for (uint32_t i = 0; i < n; i++)
        cf_sqlx_put_value(&x->keybuf, keys[i]);
    return cf_hash64(x->keybuf.len ? (const void *)x->keybuf.data : "", x->keybuf.len, OWNER_SEED);
}

/* The shard owning a group of d (sql_exec_int.h). */
unsigned sqlx_owner(cf_sqlx *x, const cf_sqlx_def *d, const sql_value *keys, uint32_t n)
{
    if (x->n_shards == 1)
        return 0;
    return sqlx_place(sqlx_key_hash(x, keys, n), d->place_seed, x->n_shards);
}



/* An UNNEST element (compact JSON) as a value of the element type; strings
 * are copied into the scratch. */
static bool element_value(cf_sqlx *x, const cJSON *el, sql_type et, sql_value *ret)
{
    *ret = sql_null();
    if (cJSON_IsNull(el))
        return true;
    if (et == SQL_JSON || cJSON_IsArray(el) || cJSON_IsObject(el)) {
        /* Exact numbers (cJSON's own printer keeps 15 digits). */
        cf_buf t = {0};
        if (cf_json_print_exact_to(el, &t) < 0) {
            cf_buf_free(&t);
            return false;
        }
        size_t n = t.len;
        bool ok = x->scratch.used + n <= x->scratch.cap;
        if (ok) {
            memcpy(x->scratch.buf + x->scratch.used, t.data, n);
            *ret = sql_string(x->scratch.buf + x->scratch.used, (uint32_t)n);
            ret->type = SQL_JSON;
            x->scratch.used += n;
        }
        cf_buf_free(&t);
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

static void view_row(cf_sqlx *x, xview *xv, const sql_row *rowp, uint64_t seq, int64_t wm,
                     bool routed, row_memo *rm);
static void derive_one(cf_sqlx *x, const cf_sqlx_def *d, const sql_row *in, uint64_t seq,
                       int64_t wm, int depth);

/* The stream-table join step (join_ctx, sql_exec_int.h). */
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
        xstream *xs = sqlx_stream_batch(x, d->name);
        if (!xs) {
            x->errors++;
        } else {
            sqlx_keep_stream_row(x, xs, out, pi->ncolumns, seq);
            if (x->collect)
                sqlx_render_stream_row(x, d, xs, out, pi->ncolumns);
        }
    }
    sql_row row = {.v = out, .n = pi->ncolumns, .rowtime = in->rowtime};
    sqlx_apply_row(x, d->name, strlen(d->name), &row, seq, wm, depth + 1);
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

/* One row of `source` through every view and derived stream that reads it. */
void sqlx_apply_row(cf_sqlx *x, const char *source, size_t source_len, const sql_row *rowp,
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
            } else if (sqlx_is_source(d->pi->source, d->source_len, source, source_len) ||
                       sqlx_is_source(d->pi->join_source, d->join_source_len, source, source_len)) {
                for (unsigned s = 0; s < x->n_shards; s++)
                    x->masks[s] = CF_SQLX_ALL_VIEWS;
                return;
            }
            x->scratch.used = base;
        } else if (d->is_stream && d->runnable && sqlx_is_source(d->pi->source, d->source_len, source, source_len)) {
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
        sqlx_route_views(x, source, source_len, &row, base);
        return;
    }
    row_memo rm;
    cf_sqlx_memo_reset(&rm.m);
    if (depth == 0 && x->seed_memo) {
        /* The caller's hashes of this very row: only the entries it holds
         * (a few), not the whole 328-byte memo, which a whole-struct copy
         * moved per row with a rep movs (a fifth of this function's
         * samples in a 10M-event recovery, issue 15). */
        const cf_sqlx_memo *sm = x->seed_memo;
        rm.m.nkey = sm->nkey;
        rm.m.ndist = sm->ndist;
        for (uint32_t k = 0; k < sm->nkey; k++)
            rm.m.key[k] = sm->key[k];
        for (uint32_t k = 0; k < sm->ndist; k++)
            rm.m.dist[k] = sm->dist[k];
    }
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
            sql_view_advance(xv->v, wm, sqlx_on_result, x);
            continue;
        }
        if (!sqlx_is_source(pi->source, xv->def->source_len, source, source_len) ||
            !(x->routed & cf_sqlx_view_bit(xv->at))) {
            /* Not its source, or its key is another shard's: the view
             * still sees the event's W. */
            sql_view_advance(xv->v, wm, sqlx_on_result, x);
            continue;
        }
        x->scratch.used = base;
        if (pi->join_table) {
            join_ctx jc = {x, xv, NULL, seq, wm, depth};
            if (!join_table(x, pi, &row, &jc))
                sql_view_advance(xv->v, wm, sqlx_on_result, x);  /* INNER, no row */
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

/* xv's WHERE over the row, or the verdict of its twin (an equal program
 * over the same row) when rm holds one. */
static bool view_where(cf_sqlx *x, const xview *xv, const sql_row *row, row_memo *rm)
{
    uint32_t self = (uint32_t)(xv - x->views);
    uint32_t at = rm && xv->where_twin >= 0 ? (uint32_t)xv->where_twin : self;
    for (uint32_t i = 0; rm && i < rm->nwhere; i++)
        if (rm->where[i].view == at)
            return rm->where[i].pass;
    int inl = x->generic ? -1 : sqlx_where_inline(xv->def, row->v, row->n);
    sql_value f;
    bool pass = inl >= 0 ? inl == 1
                         : sql_prog_eval(xv->def->pi->filter, row, &x->scratch, &f) == 0 &&
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
 * memo (sqlx_apply_row's rows; NULL for joined rows and the generic path): then
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
    if (take && !routed && sqlx_owner(x, d, keys, pi->ngroup_keys) != x->index)
        take = false;
    if (!take) {
        /* Not this shard's row: the view still sees the event's W. */
        sql_view_advance(xv->v, wm, sqlx_on_result, x);
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
        rc = sql_view_apply(xv->v, keys, args, row.rowtime, seq, wm, sqlx_on_result, x);
    } else {
        uint64_t kh = pi->ngroup_keys == 1 && d->key_col[0] >= 0
                          ? sqlx_memo_key_hash(&rm->m, xv->v, d->key_col[0], keys)
                          : sql_view_key_hash(xv->v, keys);
        uint64_t ah[64];
        for (uint32_t a = 0; a < pi->naggs && a < 64; a++)
            if (d->specs[a].kind == SQL_AGG_COUNT_DISTINCT && args[a].type != SQL_NULL)
                ah[a] = d->arg_col[a] >= 0 ? sqlx_memo_distinct_hash(&rm->m, d->arg_col[a], args[a])
                                           : sql_agg_distinct_hash(args[a]);
        rc = sql_view_apply_hashed(xv->v, keys, kh, args, ah, row.rowtime, seq, wm, sqlx_on_result, x);
    }
    if (rc < 0)
        x->errors++;
    else
        xv->dirty = true;
}

void cf_sqlx_set_generic(cf_sqlx *x, bool generic) { x->generic = generic; }

void cf_sqlx_event(cf_sqlx *x, const cf_event *ev, uint64_t seq, int64_t wm, int64_t clock,
                   uint64_t views)
{
    if (cf_sqlx_set_count(x->set) == 0) {
        cf_sqlx_event_row(x, NULL, ev->ts, NULL, seq, wm, clock, views);
        return;
    }
    sql_value cols[CF_SQLX_CLICK_COLUMNS];
    cf_sqlx_click_row(ev, cols);
    cf_sqlx_event_row(x, cols, ev->ts, NULL, seq, wm, clock, views);
}

void cf_sqlx_event_row(cf_sqlx *x, const sql_value *cols, int64_t ts, const cf_sqlx_memo *memo,
                       uint64_t seq, int64_t wm, int64_t clock, uint64_t views)
{
    x->routed = views;
    if (clock != CF_TIME_NONE && (x->clock == CF_TIME_NONE || clock > x->clock))
        x->clock = clock;
    if (cf_sqlx_set_count(x->set) == 0)
        return;     /* nothing runs (derived streams are in the set, not in views) */
    sql_row row = {.v = (sql_value *)cols, .n = CF_SQLX_CLICK_COLUMNS, .rowtime = ts};
    x->scratch.used = 0;
    x->last_seq = seq;
    x->seed_memo = x->generic ? NULL : memo;
    sqlx_apply_row(x, "clicks", 6, &row, seq, wm, 0);
    x->seed_memo = NULL;
}

#define MAX_ROW_COLUMNS 1024

/* Decodes a packed declared-stream row (stream_ingest.h) into cols (room
 * for MAX_ROW_COLUMNS) and runs it through sqlx_apply_row. */
void sqlx_packed_row(cf_sqlx *x, const char *stream, size_t stream_len, const uint8_t *packed,
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
        sqlx_apply_row(x, stream, stream_len, &row, seq, wm, 0);
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
    sqlx_packed_row(x, stream, stream_len, packed, packed_len, seq, wm);
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
        sql_view_advance(x->views[i].v, wm, sqlx_on_result, x);
    }
    x->cur = NULL;
}

