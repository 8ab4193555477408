/* sql_runtime: catalog, statements and durable definitions (see the header). */
#include "sql_runtime.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sql_parse.h"
#include "sql_exec.h"
#include "sql_plan.h"

struct cf_sqlrt {
    pthread_mutex_t mu;
    sql_catalog *cat;
    size_t max_queries;
    unsigned shards;
    int64_t allowed_lateness_ms;
    size_t max_keys;            /* groups per view per shard (0: none) */
    cf_sqlx_set *set;           /* compiled views in force */
    uint64_t generation;        /* commits so far */
};

struct cf_sqlrt_change {
    sql_catalog *cat;       /* the catalog after the request */
    cJSON *results;         /* [{"statement","name"}, ...] */
    cf_buf log;             /* applied statements, "\n;\n"-separated */
    cf_sqlx_def **created;  /* views created by the request */
    size_t ncreated;
    cf_buf dropped;         /* names dropped, NUL-terminated back to back */
    cf_sqlx_set *set;       /* the views after the request; NULL: unchanged */
};

/* Statements are joined with a newline before the `;`: a statement text
 * that ends in a `--` comment would otherwise swallow the separator. */
static const char STMT_SEP[] = "\n;\n";

cf_sqlrt *cf_sqlrt_new(size_t max_queries, unsigned shards, int64_t allowed_lateness_ms,
                       size_t max_keys)
{
    cf_sqlrt *rt = calloc(1, sizeof *rt);
    if (!rt)
        return NULL;
    rt->cat = sql_catalog_new();
    if (!rt->cat || sql_catalog_add_clicks(rt->cat) < 0) {
        sql_catalog_free(rt->cat);
        free(rt);
        return NULL;
    }
    pthread_mutex_init(&rt->mu, NULL);
    rt->max_queries = max_queries;
    rt->shards = shards ? shards : 1;
    rt->allowed_lateness_ms = allowed_lateness_ms;
    rt->max_keys = max_keys;
    rt->set = cf_sqlx_set_new(NULL, 0);
    if (!rt->set) {
        cf_sqlrt_free(rt);
        return NULL;
    }
    return rt;
}

void cf_sqlrt_free(cf_sqlrt *rt)
{
    if (!rt)
        return;
    sql_catalog_free(rt->cat);
    cf_sqlx_set_unref(rt->set);
    pthread_mutex_destroy(&rt->mu);
    free(rt);
}

void cf_sqlrt_change_free(cf_sqlrt_change *ch)
{
    if (!ch)
        return;
    sql_catalog_free(ch->cat);
    cJSON_Delete(ch->results);
    cf_buf_free(&ch->log);
    for (size_t i = 0; i < ch->ncreated; i++)
        cf_sqlx_def_unref(ch->created[i]);
    free(ch->created);
    cf_buf_free(&ch->dropped);
    cf_sqlx_set_unref(ch->set);
    free(ch);
}

/* Continuous queries the catalog holds (what --max-queries bounds): views
 * and derived streams; declared streams and tables run nothing. */
static size_t count_queries(const sql_catalog *cat)
{
    size_t n = 0;
    for (size_t i = 0; i < sql_catalog_count(cat); i++) {
        const sql_object *o = sql_catalog_at(cat, i);
        if (!o->builtin && (o->kind == SQL_OBJ_VIEW || (o->kind == SQL_OBJ_STREAM && o->derived)))
            n++;
    }
    return n;
}

static bool same_text(const char *a, const char *b, size_t blen)
{
    return a && strlen(a) == blen && memcmp(a, b, blen) == 0;
}

static bool add_result(cJSON *results, const char *statement, const char *name, cJSON *extra)
{
    cJSON *r = cJSON_CreateObject();
    if (!r || !cJSON_AddStringToObject(r, "statement", statement) ||
        (name && !cJSON_AddStringToObject(r, "name", name))) {
        cJSON_Delete(r);
        cJSON_Delete(extra);
        return false;
    }
    if (extra)
        cJSON_AddItemToObject(r, "plan", extra);
    cJSON_AddItemToArray(results, r);
    return true;
}

/* Where a query's input rows go (sql_route.h). */
static const char *placement_rows(const sql_plan_info *pi, bool keyed)
{
    if (!keyed)
        return "stay on the shard they arrive on";
    if (pi->aggregate && pi->join_table)
        return "sent to every shard (the key needs the table's row)";
    return pi->reroute ? "re-routed to the shard owning the key"
                       : "sent to the shard owning the key on arrival";
}

/* EXPLAIN's answer: the planner's text and JSON renderings, and where the
 * rows run: the shard owning the hash of the partition key (the sequencer
 * routes each click or declared-stream row there before logging it; rows
 * of a derived stream keyed otherwise are re-routed the same way, the
 * router deriving them itself), every shard when the key needs a table's
 * row, or the shard an event arrives on without a key. */
static cJSON *explain_json(const sql_plan_info *pi, unsigned shards)
{
    cJSON *j = cJSON_Parse(pi->explain_json);
    cJSON *o = cJSON_CreateObject();
    cJSON *pl = cJSON_CreateObject();
    bool keyed = pi->partition && pi->partition[0];
    if (!pl || !cJSON_AddNumberToObject(pl, "shards", shards) ||
        !cJSON_AddStringToObject(pl, "key", keyed ? pi->partition : "") ||
        !cJSON_AddStringToObject(pl, "rows", placement_rows(pi, keyed))) {
        cJSON_Delete(pl);
        pl = NULL;
    }
    if (!j || !o || !pl || !cJSON_AddStringToObject(o, "text", pi->explain_text)) {
        cJSON_Delete(pl);
        cJSON_Delete(j);
        cJSON_Delete(o);
        return NULL;
    }
    cJSON_AddItemToObject(o, "json", j);
    cJSON_AddItemToObject(o, "placement", pl);
    return o;
}

/* Plans and applies one statement to cat. Returns 0, 1 (skipped: the same
 * definition is in force), -EINVAL with *err, or -ENOMEM. */
static bool was_dropped(const cf_sqlrt_change *ch, const char *name);

/* Whether the stream `name` produces rows in the shards: clicks and
 * declared streams always; a derived stream when its own definition runs
 * (made in this request, latest first, or in force). */
static bool source_running(cf_sqlrt *rt, const cf_sqlrt_change *ch, const sql_catalog *cat,
                           const char *name)
{
    const sql_object *src = sql_catalog_find(cat, name);
    if (!src || !src->derived)
        return src != NULL;
    const cf_sqlx_def *sd = NULL;
    for (size_t i = ch->ncreated; i > 0 && !sd; i--)
        if (strcmp(cf_sqlx_def_name(ch->created[i - 1]), src->name) == 0)
            sd = ch->created[i - 1];
    if (!sd && !was_dropped(ch, src->name))
        sd = cf_sqlx_set_find(rt->set, src->name);
    return sd && cf_sqlx_def_runnable(sd);
}

static int apply_stmt(cf_sqlrt *rt, sql_catalog *cat, const sql_stmt *st, unsigned flags,
                      cf_sqlrt_change *ch, sql_error *err)
{
    if ((flags & CF_SQLRT_SKIP_SAME) && st->name && st->kind != SQL_STMT_DROP) {
        const sql_object *o = sql_catalog_find(cat, st->name);
        if (o && same_text(o->sql, st->text, st->text_len))
            return 1;
    }
    if (st->kind == SQL_STMT_SELECT) {
        sql_error_set(err, st->line, st->column,
                      "a pull query (SELECT) goes to /api/v1/query, not /api/v1/sql");
        return -EINVAL;
    }
    sql_plan *p = sql_plan_new(cat, st, err);
    if (!p)
        return err->message[0] ? -EINVAL : -ENOMEM;
    const sql_plan_info *pi = sql_plan_get(p);
    int rc = 0;
    if (pi->kind == SQL_PLAN_EXPLAIN) {
        cJSON *ex = explain_json(pi, rt->shards);
        if (!ex || !add_result(ch->results, "EXPLAIN", NULL, ex))
            rc = -ENOMEM;
        sql_plan_free(p);
        return rc;
    }
    const char *statement = sql_stmt_kind_name(st->kind);
    if (st->kind == SQL_STMT_DROP)
        statement = st->drop_kind == SQL_OBJ_VIEW    ? "DROP VIEW"
                    : st->drop_kind == SQL_OBJ_TABLE ? "DROP TABLE"
                                                     : "DROP STREAM";
    rc = sql_plan_apply(p, cat, err);
    if (rc < 0) {
        sql_plan_free(p);
        return rc == -ENOMEM ? rc : -EINVAL;
    }
    if ((flags & CF_SQLRT_BUILTIN) && st->name && st->kind != SQL_STMT_DROP)
        (void)sql_catalog_set_builtin(cat, st->name);   /* just added: found */
    if (pi->kind == SQL_PLAN_VIEW || pi->kind == SQL_PLAN_DERIVED_STREAM) {
        /* Compiled once here, from the very plan that was checked. */
        cf_sqlx_def **grown = realloc(ch->created, (ch->ncreated + 1) * sizeof *grown);
        if (!grown) {
            sql_plan_free(p);
            return -ENOMEM;
        }
        ch->created = grown;
        bool source_runs = pi->source && source_running(rt, ch, cat, pi->source);
        if (pi->join != SQL_JOIN_NONE && !pi->join_table)
            source_runs = source_runs && source_running(rt, ch, cat, pi->join_source);
        cf_sqlx_def *d = cf_sqlx_def_new(p, source_runs, rt->allowed_lateness_ms, rt->max_keys);
        if (!d)
            return -ENOMEM;
        ch->created[ch->ncreated++] = d;
    } else {
        if (pi->kind == SQL_PLAN_DROP)
            cf_buf_put(&ch->dropped, st->name, strlen(st->name) + 1);
        sql_plan_free(p);
    }
    if (!(flags & CF_SQLRT_REPLAY) && count_queries(cat) > rt->max_queries) {
        sql_error_set(err, st->line, st->column,
                      "too many continuous queries: at most --max-queries (%d) views and derived streams",
                      (int)rt->max_queries);
        return -EINVAL;
    }
    if (ch->log.len > 0)
        cf_buf_put(&ch->log, STMT_SEP, sizeof STMT_SEP - 1);
    cf_buf_put(&ch->log, st->text, st->text_len);
    if (ch->log.oom || !add_result(ch->results, statement, st->name, NULL))
        return -ENOMEM;
    return 0;
}

static bool was_dropped(const cf_sqlrt_change *ch, const char *name)
{
    for (size_t at = 0; at < ch->dropped.len; at += strlen((const char *)ch->dropped.data + at) + 1)
        if (strcmp((const char *)ch->dropped.data + at, name) == 0)
            return true;
    return false;
}

/* The views after the request: those in force that it did not drop (a
 * view dropped and made again in one request starts afresh), then the
 * ones it created that still exist. */
static int next_set(cf_sqlrt *rt, cf_sqlrt_change *ch)
{
    size_t n = cf_sqlx_set_count(rt->set);
    cf_sqlx_def **v = calloc(n + ch->ncreated + 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        cf_sqlx_def *d = cf_sqlx_set_at(rt->set, i);
        if (!was_dropped(ch, cf_sqlx_def_name(d)))
            v[k++] = d;
    }
    for (size_t i = 0; i < ch->ncreated; i++) {
        const sql_object *o = sql_catalog_find(ch->cat, cf_sqlx_def_name(ch->created[i]));
        bool superseded = false;
        for (size_t j = i + 1; j < ch->ncreated; j++)
            superseded |= strcmp(cf_sqlx_def_name(ch->created[j]), cf_sqlx_def_name(ch->created[i])) == 0;
        if (o && (o->kind == SQL_OBJ_VIEW || o->derived) && !superseded)
            v[k++] = ch->created[i];
    }
    ch->set = cf_sqlx_set_new(v, k);
    free(v);
    return ch->set ? 0 : -ENOMEM;
}

int cf_sqlrt_prepare(cf_sqlrt *rt, const char *text, size_t len, unsigned flags,
                     cf_sqlrt_change **ret, sql_error *err)
{
    *ret = NULL;
    memset(err, 0, sizeof *err);
    sql_script *s = sql_parse(text, len, err);
    if (!s)
        return err->line == 0 && err->column == 0 ? -ENOMEM : -EINVAL;
    cf_sqlrt_change *ch = calloc(1, sizeof *ch);
    int rc = -ENOMEM;
    if (!ch)
        goto out;
    ch->results = cJSON_CreateArray();
    pthread_mutex_lock(&rt->mu);
    ch->cat = sql_catalog_clone(rt->cat);
    pthread_mutex_unlock(&rt->mu);
    if (!ch->results || !ch->cat)
        goto out;
    if (sql_script_count(s) == 0) {
        sql_error_set(err, 1, 1, "no statement: the body must hold SQL statements separated by ;");
        rc = -EINVAL;
        goto out;
    }
    for (size_t i = 0; i < sql_script_count(s); i++) {
        rc = apply_stmt(rt, ch->cat, sql_script_stmt(s, i), flags, ch, err);
        if (rc < 0)
            goto out;
    }
    if (ch->ncreated > 0 || ch->dropped.len > 0) {
        pthread_mutex_lock(&rt->mu);
        rc = next_set(rt, ch);
        pthread_mutex_unlock(&rt->mu);
        if (rc < 0)
            goto out;
    }
    rc = 0;
    *ret = ch;
    ch = NULL;
out:
    cf_sqlrt_change_free(ch);
    sql_script_free(s);
    return rc;
}

const char *cf_sqlrt_change_log(const cf_sqlrt_change *ch, size_t *ret_len)
{
    *ret_len = ch->log.len;
    return ch->log.len ? (const char *)ch->log.data : "";
}

cJSON *cf_sqlrt_change_answer(cf_sqlrt_change *ch)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !ch->results)
        goto fail;
    cJSON_AddItemToObject(o, "results", ch->results);
    ch->results = NULL;
    return o;
fail:
    cJSON_Delete(o);
    return NULL;
}

cf_sqlx_set *cf_sqlrt_change_set(const cf_sqlrt_change *ch) { return ch->set; }

cf_sqlx_set *cf_sqlrt_current_set(cf_sqlrt *rt)
{
    pthread_mutex_lock(&rt->mu);
    cf_sqlx_set *s = cf_sqlx_set_ref(rt->set);
    pthread_mutex_unlock(&rt->mu);
    return s;
}

void cf_sqlrt_commit(cf_sqlrt *rt, cf_sqlrt_change *ch)
{
    pthread_mutex_lock(&rt->mu);
    sql_catalog *old = rt->cat;
    rt->cat = ch->cat;
    ch->cat = old;
    if (ch->set) {
        cf_sqlx_set *was = rt->set;
        rt->set = ch->set;
        ch->set = was;
    }
    rt->generation++;
    pthread_mutex_unlock(&rt->mu);
    cf_sqlrt_change_free(ch);
}

int cf_sqlrt_pull(cf_sqlrt *rt, const char *text, size_t len, sql_plan **ret, sql_error *err)
{
    *ret = NULL;
    memset(err, 0, sizeof *err);
    sql_script *s = sql_parse(text, len, err);
    if (!s)
        return err->line == 0 && err->column == 0 ? -ENOMEM : -EINVAL;
    int rc = -EINVAL;
    const sql_stmt *st = sql_script_count(s) == 1 ? sql_script_stmt(s, 0) : NULL;
    if (!st || st->kind != SQL_STMT_SELECT) {
        sql_error_set(err, st ? st->line : 1, st ? st->column : 1,
                      "a pull query is one SELECT ... FROM view [WHERE] [ORDER BY] [LIMIT]");
        goto out;
    }
    pthread_mutex_lock(&rt->mu);
    sql_plan *p = sql_plan_new(rt->cat, st, err);
    const cf_sqlx_def *d = NULL;
    if (p) {
        const sql_plan_info *pi = sql_plan_get(p);
        /* Views, and derived streams (their newest rows, sql_exec.h). */
        const sql_object *src = sql_catalog_find(rt->cat, pi->source);
        bool derived = pi->source_kind == SQL_OBJ_STREAM && src && src->derived;
        d = pi->source_kind == SQL_OBJ_VIEW || derived ? cf_sqlx_set_find(rt->set, pi->source) : NULL;
        if (!d || !cf_sqlx_def_runnable(d)) {
            sql_error_set(err, st->select->from.line, st->select->from.column,
                          pi->source_kind == SQL_OBJ_VIEW
                              ? "view '%s' does not run yet: this version runs views over clicks, declared and derived streams without JOIN or UNNEST"
                              : derived ? "stream '%s' does not run yet (JOIN)"
                              : "pull queries over clicks and declared streams are not supported yet: read a view or a derived stream",
                          pi->source);
            sql_plan_free(p);
            p = NULL;
        }
    }
    pthread_mutex_unlock(&rt->mu);
    if (!p) {
        rc = err->message[0] ? -EINVAL : -ENOMEM;
        goto out;
    }
    *ret = p;
    rc = 0;
out:
    sql_script_free(s);
    return rc;
}

int cf_sqlrt_with_stream(cf_sqlrt *rt, const char *name,
                         int (*fn)(void *ctx, const sql_object *stream), void *ctx,
                         uint64_t *ret_generation)
{
    pthread_mutex_lock(&rt->mu);
    const sql_object *o = sql_catalog_find(rt->cat, name);
    int rc = -ENOENT;
    if (o && o->kind == SQL_OBJ_STREAM && !o->derived && !o->builtin)
        rc = fn(ctx, o);
    if (ret_generation)
        *ret_generation = rt->generation;
    pthread_mutex_unlock(&rt->mu);
    return rc;
}

int cf_sqlrt_with_table(cf_sqlrt *rt, const char *name,
                        int (*fn)(void *ctx, const sql_object *table), void *ctx)
{
    pthread_mutex_lock(&rt->mu);
    const sql_object *o = sql_catalog_find(rt->cat, name);
    int rc = o && o->kind == SQL_OBJ_TABLE && o->key_column >= 0 ? fn(ctx, o) : -ENOENT;
    pthread_mutex_unlock(&rt->mu);
    return rc;
}

void cf_sqlrt_each_table(cf_sqlrt *rt, void (*fn)(void *ctx, const sql_object *table), void *ctx)
{
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < sql_catalog_count(rt->cat); i++) {
        const sql_object *o = sql_catalog_at(rt->cat, i);
        if (o->kind == SQL_OBJ_TABLE && o->key_column >= 0)
            fn(ctx, o);
    }
    pthread_mutex_unlock(&rt->mu);
}

void cf_sqlrt_change_dropped(const cf_sqlrt_change *ch, const char **ret, size_t *ret_len)
{
    *ret = (const char *)ch->dropped.data;
    *ret_len = ch->dropped.len;
}

uint64_t cf_sqlrt_generation(cf_sqlrt *rt)
{
    pthread_mutex_lock(&rt->mu);
    uint64_t g = rt->generation;
    pthread_mutex_unlock(&rt->mu);
    return g;
}

bool cf_sqlrt_reads(cf_sqlrt *rt, const char *source)
{
    pthread_mutex_lock(&rt->mu);
    bool r = cf_sqlx_set_reads(rt->set, source);
    pthread_mutex_unlock(&rt->mu);
    return r;
}

/* ---- listings --------------------------------------------------------------- */

cJSON *cf_sqlrt_columns_json(const sql_object *o)
{
    cJSON *a = cJSON_CreateArray();
    for (uint32_t i = 0; a && i < o->ncolumns; i++) {
        const sql_column *c = &o->columns[i];
        char ty[48];
        if (c->type == SQL_ARRAY)
            snprintf(ty, sizeof ty, "ARRAY<%s>", sql_type_name(c->elem));
        else
            snprintf(ty, sizeof ty, "%s", sql_type_name(c->type));
        cJSON *col = cJSON_CreateObject();
        if (!col || !cJSON_AddStringToObject(col, "name", c->name) ||
            !cJSON_AddStringToObject(col, "type", ty) ||
            !cJSON_AddBoolToObject(col, "not_null", c->not_null)) {
            cJSON_Delete(col);
            cJSON_Delete(a);
            return NULL;
        }
        cJSON_AddItemToArray(a, col);
    }
    return a;
}

static const char *column_name(const sql_object *o, int i)
{
    return i >= 0 && (uint32_t)i < o->ncolumns ? o->columns[i].name : NULL;
}

static bool add_nullable_string(cJSON *o, const char *key, const char *v)
{
    return v ? cJSON_AddStringToObject(o, key, v) != NULL : cJSON_AddNullToObject(o, key) != NULL;
}

static cJSON *object_json(const sql_object *o)
{
    cJSON *j = cJSON_CreateObject();
    cJSON *cols = cf_sqlrt_columns_json(o);
    if (!j || !cols) {
        cJSON_Delete(j);
        cJSON_Delete(cols);
        return NULL;
    }
    bool ok = cJSON_AddStringToObject(j, "name", o->name) != NULL;
    cJSON_AddItemToObject(j, "columns", cols);
    ok = ok && add_nullable_string(j, "sql", o->sql);
    if (o->kind == SQL_OBJ_VIEW) {
        /* The GROUP BY key (canonical SQL), "" for one global group. */
        ok = ok && add_nullable_string(j, "keys", o->partition ? o->partition : "");
        ok = ok && cJSON_AddBoolToObject(j, "windowed", o->windowed);
        /* Summed over the shards by the engine (0 for a view that does
         * not run in this version). */
        ok = ok && cJSON_AddNumberToObject(j, "state_bytes", 0);
        ok = ok && cJSON_AddNumberToObject(j, "groups", 0);
        ok = ok && cJSON_AddNumberToObject(j, "late_dropped", 0);
        /* Only the mark: the caller says "builtin": false for the rest. */
        ok = ok && (!o->builtin || cJSON_AddBoolToObject(j, "builtin", true));
    } else {
        ok = ok && cJSON_AddBoolToObject(j, "builtin", o->builtin);
        ok = ok && cJSON_AddBoolToObject(j, "derived", o->derived);
        ok = ok && add_nullable_string(j, "timestamp", column_name(o, o->timestamp_column));
        ok = ok && add_nullable_string(j, "event_id", column_name(o, o->event_id_column));
    }
    if (!ok) {
        cJSON_Delete(j);
        return NULL;
    }
    return j;
}

static cJSON *list_json(cf_sqlrt *rt, sql_object_kind kind)
{
    cJSON *root = cJSON_CreateObject();
    cJSON *items = cJSON_AddArrayToObject(root, "items");
    if (!items) {
        cJSON_Delete(root);
        return NULL;
    }
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < sql_catalog_count(rt->cat); i++) {
        const sql_object *o = sql_catalog_at(rt->cat, i);
        if (o->kind != kind)
            continue;
        cJSON *j = object_json(o);
        if (!j) {
            cJSON_Delete(root);
            root = NULL;
            break;
        }
        cJSON_AddItemToArray(items, j);
    }
    pthread_mutex_unlock(&rt->mu);
    return root;
}

cJSON *cf_sqlrt_views_json(cf_sqlrt *rt) { return list_json(rt, SQL_OBJ_VIEW); }
cJSON *cf_sqlrt_streams_json(cf_sqlrt *rt) { return list_json(rt, SQL_OBJ_STREAM); }

size_t cf_sqlrt_count(cf_sqlrt *rt)
{
    size_t n = 0;
    pthread_mutex_lock(&rt->mu);
    for (size_t i = 0; i < sql_catalog_count(rt->cat); i++)
        n += !sql_catalog_at(rt->cat, i)->builtin;
    pthread_mutex_unlock(&rt->mu);
    return n;
}

/* ---- snapshots ---------------------------------------------------------------- */

int cf_sqlrt_save(cf_sqlrt *rt, cf_buf *out)
{
    cf_buf script = {0};
    pthread_mutex_lock(&rt->mu);
    /* Creation order: each definition only reads ones made before it. */
    for (size_t i = 0; i < sql_catalog_count(rt->cat); i++) {
        const sql_object *o = sql_catalog_at(rt->cat, i);
        if (o->builtin || !o->sql)
            continue;
        if (script.len > 0)
            cf_buf_put(&script, STMT_SEP, sizeof STMT_SEP - 1);
        cf_buf_put(&script, o->sql, strlen(o->sql));
    }
    pthread_mutex_unlock(&rt->mu);
    cf_buf_put_str(out, script.len ? (const char *)script.data : "", script.len);
    int rc = script.oom || out->oom ? -ENOMEM : 0;
    cf_buf_free(&script);
    return rc;
}

int cf_sqlrt_load(cf_sqlrt *rt, const char *script, size_t len, sql_error *err)
{
    memset(err, 0, sizeof *err);
    if (len == 0)
        return 0;
    cf_sqlrt_change *ch = NULL;
    int rc = cf_sqlrt_prepare(rt, script, len, CF_SQLRT_REPLAY, &ch, err);
    if (rc == 0)
        cf_sqlrt_commit(rt, ch);
    return rc;
}
