/* sql_exec_result: fired results of the views: encoded as rows, kept for
 * pull queries, rendered for push (view:NAME, stream:NAME), handed to
 * history; and pull reads of a view's rows (see sql_exec.h). */
#include "sql_exec_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "history_views.h"

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

xstream *sqlx_stream_batch(cf_sqlx *x, const char *name)
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
void sqlx_keep_stream_row(cf_sqlx *x, xstream *xs, const sql_value *v, uint32_t n, uint64_t seq)
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
void sqlx_render_stream_row(cf_sqlx *x, const cf_sqlx_def *d, xstream *xs, const sql_value *v,
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

void sqlx_on_result(void *ctx, const sql_view_result *r)
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
        /* The first max_rows of the firing order, as a full walk's first
         * rows would be, without sorting every open group of a large view
         * each push interval. */
        sql_view_foreach_open_first(xv->v, x->clock == CF_TIME_NONE ? 0 : x->clock, max_rows,
                                    on_interim, x);
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

