/* engine_sql: the engine's side of continuous SQL (SPEC 13): statements
 * through the sequencer (cf_engine_sql), their replay from the log, the set
 * of user views sent to the shards, and pull queries (cf_engine_query).
 * The catalog and view compilation are sql_runtime/sql_exec; this file is
 * the glue to the sequencer lock, the WAL and the shard queues. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine_int.h"
#include "log.h"
#include "shard_msg.h"
#include "sql_exec.h"
#include "sql_pull.h"
#include "history_views.h"
#include "sql_route.h"
#include "sql_runtime.h"
#include "stream_ingest.h"
#include "tables.h"
#include "cf_watermark.h"

#define MAX_QUERY_LIMIT 100000  /* rows a pull query answers at most */
#define MAX_HISTORY_ROWS 500000 /* stored rows a ranged pull query reads at most */

/* Sends the user views in force to every shard through the queues, so
 * each shard starts and stops them between the same two events. The
 * caller checked room. 0 or -EIO (no memory for a message: the shards
 * would diverge from the log, so stop acknowledging as on a WAL error). */
int engine_send_views_locked(cf_engine *e, cf_sqlx_set *set)
{
    /* History definitions of the windowed views go ahead of any row the
     * shards fire for them (queued, never waited for under the lock). */
    for (size_t i = 0; e->history && i < cf_sqlx_set_count(set); i++)
        if (cf_histview_define(e->history, cf_sqlx_def_info(cf_sqlx_set_at(set, i))) < 0)
            cf_warn("history: cannot declare view %s", cf_sqlx_def_name(cf_sqlx_set_at(set, i)));
    for (unsigned s = 0; s < e->n_shards; s++) {
        cf_msg *m = cf_msg_new(CF_MSG_SQL, sizeof set);
        if (!m) {
            cf_error("out of memory for a view change message");
            atomic_store(&e->failed, 1);
            return -EIO;
        }
        cf_sqlx_set *ref = cf_sqlx_set_ref(set);
        memcpy(m->data, &ref, sizeof ref);
        engine_enqueue_locked(e, s, m);
    }
    engine_route_views_locked(e, set);
    return 0;
}

void engine_route_views_locked(cf_engine *e, cf_sqlx_set *set)
{
    cf_sqlx_set *ref = set ? cf_sqlx_set_ref(set) : NULL;
    bool reads = cf_sqlx_set_reads(set, "clicks");
    pthread_mutex_lock(&e->route_mu);
    cf_sqlx_set *old = e->route_set;
    e->route_set = ref;
    e->route_reads_clicks = reads;  /* with the set: every request asked (issue 15) */
    pthread_mutex_unlock(&e->route_mu);
    cf_sqlx_set_unref(old);
    atomic_store(&e->sql_runs, reads);
}

/* Whether every shard queue has room for the messages committing ch sends
 * (the view set, one per dropped name). */
static bool change_room_locked(cf_engine *e, const cf_sqlrt_change *ch)
{
    const char *dropped = NULL;
    size_t dl = 0, n = cf_sqlrt_change_set(ch) ? 1 : 0;
    cf_sqlrt_change_dropped(ch, &dropped, &dl);
    for (size_t i = 0; i < dl; i += strlen(dropped + i) + 1)
        n++;
    for (unsigned s = 0; n > 0 && s < e->n_shards; s++)
        if (cf_queue_space(cf_shard_queue(e->shards[s])) < n)
            return false;
    return true;
}

/* Commits a prepared change under mu: the view set goes to the shards
 * first (room checked by the caller), then the catalog is swapped. */
static int commit_change_locked(cf_engine *e, cf_sqlrt_change *ch)
{
    cf_sqlx_set *set = cf_sqlrt_change_set(ch);
    int rc = set ? engine_send_views_locked(e, set) : 0;
    /* A dropped table's rows go now: one created again starts empty. */
    const char *dropped = NULL;
    size_t dl = 0;
    cf_sqlrt_change_dropped(ch, &dropped, &dl);
    for (size_t i = 0; i < dl; i += strlen(dropped + i) + 1) {
        if (e->tables)
            cf_tables_drop(e->tables, dropped + i);
        /* The shards' copies too (a name of another kind: a no-op there). */
        if (rc == 0)
            rc = engine_send_table_drop_locked(e, dropped + i);
    }
    cf_sqlrt_commit(e->sql, ch);
    return rc;
}

int cf_engine_sql(cf_engine *e, const char *text, size_t len, bool at_start, cJSON **ret_answer,
                  sql_error *err)
{
    *ret_answer = NULL;
    memset(err, 0, sizeof *err);
    cf_sqlrt_change *ch = NULL;
    int64_t lsn = 0;
    int rc = 0;
    /* Planned and committed inside the sequencer's critical section, with
     * the log record between: the definitions take effect between two
     * events of the one total order, and a replay re-applies them there. */
    pthread_mutex_lock(&e->mu);
    rc = engine_gate_locked(e);
    if (rc == 0) {
        rc = cf_sqlrt_prepare(e->sql, text, len, at_start ? CF_SQLRT_SKIP_SAME : 0, &ch, err);
        if (rc == 0 && !change_room_locked(e, ch))
            rc = -EAGAIN;   /* the shards' queues are full: nothing applied */
        size_t log_len = 0;
        const char *log = rc == 0 ? cf_sqlrt_change_log(ch, &log_len) : NULL;
        if (rc == 0 && log_len > 0 && e->wal) {
            lsn = cf_wal_append(e->wal, CF_WAL_SQL, log, log_len);
            if (lsn < 0)
                rc = engine_wal_fail_locked(e, lsn);
        }
        if (rc == 0) {
            *ret_answer = cf_sqlrt_change_answer(ch);
            rc = commit_change_locked(e, ch);
            ch = NULL;
        }
    }
    pthread_mutex_unlock(&e->mu);
    cf_sqlrt_change_free(ch);
    if (rc == 0 && e->wal && lsn > 0 && cf_wal_commit(e->wal, lsn) < 0) {
        if (!atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging");
        rc = -EIO;
    }
    /* Readers (rollups, ranged pull queries) know a new view once this
     * answers. */
    if (rc == 0 && e->history)
        (void)cf_history_defs_wait(e->history);
    if (rc == 0 && !*ret_answer)
        rc = -ENOMEM;
    if (rc) {
        cJSON_Delete(*ret_answer);
        *ret_answer = NULL;
    }
    return rc;
}


int cf_engine_query(cf_engine *e, const char *text, size_t len, cJSON **ret, sql_error *err)
{
    *ret = NULL;
    if (!cf_engine_ready(e))
        return -EAGAIN;
    sql_plan *p = NULL;
    int rc = cf_sqlrt_pull(e->sql, text, len, &p, err);
    if (rc)
        return rc;
    const sql_plan_info *pi = sql_plan_get(p);
    cf_shard_query *qs = engine_new_queries(e, CF_Q_SQL);
    if (!qs) {
        sql_plan_free(p);
        return -ENOMEM;
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        qs[s].view = pi->source;
    /* After every message enqueued before: read-your-writes (SPEC 8). */
    rc = engine_query_shards(e, qs, -1, true, NULL);
    const cf_buf **parts = calloc(e->n_shards, sizeof *parts);
    for (unsigned s = 0; rc == 0 && s < e->n_shards; s++) {
        if (qs[s].err)
            rc = qs[s].err;
        else if (parts)
            parts[s] = &qs[s].rows;
    }
    if (rc == 0 && !parts)
        rc = -ENOMEM;
    /* A WINDOWSTART/WINDOWEND range also reads history.db (SPEC 16), after
     * the shards: a window fired meanwhile is in both, and memory wins. */
    int64_t from = 0, to = 0;
    bool ranged = rc == 0 && e->history && cf_sqlpull_range(pi, &from, &to);
    cf_buf hist = {0};
    if (ranged) {
        long hn = cf_sqlpull_history_part(e->history, pi, from, to, MAX_HISTORY_ROWS, &hist);
        if (hn < 0)
            rc = (int)hn;
    }
    if (rc == 0)
        rc = ranged ? cf_sqlpull_answer_ranged(pi, parts, e->n_shards, &hist, MAX_QUERY_LIMIT, ret)
                    : cf_sqlpull_answer(pi, parts, e->n_shards, MAX_QUERY_LIMIT, ret);
    cf_buf_free(&hist);
    free(parts);
    engine_free_queries(e, qs);
    sql_plan_free(p);
    return rc;
}

/* GET /api/v1/views: the definitions, with the state each running view
 * holds summed over the shards (asked after every acknowledged request). */
static cJSON *user_views(cf_engine *e)
{
    cJSON *root = cf_sqlrt_views_json(e->sql);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "items");
    if (!root || cJSON_GetArraySize(items) == 0)
        return root;
    cJSON *v;
    cJSON_ArrayForEach(v, items)    /* the panels (builtin_panels.h) say true */
        if (!cJSON_HasObjectItem(v, "builtin"))
            cJSON_AddBoolToObject(v, "builtin", false);
    cf_shard_query *qs = engine_new_queries(e, CF_Q_SQL_STATS);
    if (!qs || engine_query_shards(e, qs, -1, true, NULL) < 0) {
        engine_free_queries(e, qs);
        return root;    /* the definitions still answer (state sizes 0) */
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        if (qs[s].err)
            continue;
        cf_reader r;
        cf_reader_init(&r, qs[s].rows.data, qs[s].rows.len);
        uint32_t n = 0;
        cf_get_u32(&r, &n);
        for (uint32_t i = 0; i < n; i++) {
            const char *name = NULL;
            size_t nl = 0;
            uint64_t bytes = 0, groups = 0, late = 0, rows_in = 0;
            if (!cf_get_str(&r, &name, &nl) || !cf_get_u64(&r, &bytes) || !cf_get_u64(&r, &groups) ||
                !cf_get_u64(&r, &late) || !cf_get_u64(&r, &rows_in))
                break;
            cJSON *it;
            cJSON_ArrayForEach(it, items) {
                const char *vn = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(it, "name"));
                if (!vn || strlen(vn) != nl || memcmp(vn, name, nl) != 0)
                    continue;
                /* rows_in: input rows the shards evaluated the view on,
                 * summed: each row once (on its key's shard), not once
                 * per shard (sql_route.h). */
                static const char *const keys[] = {"state_bytes", "groups", "late_dropped",
                                                   "rows_in"};
                uint64_t add[] = {bytes, groups, late, rows_in};
                for (int k = 0; k < 4; k++) {
                    cJSON *f = cJSON_GetObjectItemCaseSensitive(it, keys[k]);
                    if (f)
                        cJSON_SetNumberValue(f, f->valuedouble + (double)add[k]);
                    else
                        cJSON_AddNumberToObject(it, keys[k], (double)add[k]);
                }
            }
        }
    }
    engine_free_queries(e, qs);
    return root;
}

/* GET /api/v1/views: the built-in views first (SPEC 13 lists them with
 * the user's; their state sizes are reported by stats, state_bytes, so
 * they are 0 here), then the user's. */
cJSON *cf_engine_sql_views(cf_engine *e)
{
    cJSON *user = user_views(e);
    cJSON *root = cJSON_Duplicate(e->builtin_views, true);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(root, "items");
    cJSON *from = cJSON_GetObjectItemCaseSensitive(user, "items");
    if (!items || !from) {
        cJSON_Delete(user);
        cJSON_Delete(root);
        return NULL;
    }
    while (cJSON_GetArraySize(from) > 0)
        cJSON_AddItemToArray(items, cJSON_DetachItemFromArray(from, 0));
    cJSON_Delete(user);
    return root;
}
cJSON *cf_engine_sql_streams(cf_engine *e) { return cf_sqlrt_streams_json(e->sql); }

/* Re-applies logged definitions at their place in the event order. They
 * planned when logged, so a failure means a damaged record: skipped like
 * any malformed record. */
int engine_replay_sql(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_sqlrt_change *ch = NULL;
    sql_error err;
    pthread_mutex_lock(&e->mu);
    int rc = cf_sqlrt_prepare(e->sql, (const char *)payload, len, CF_SQLRT_REPLAY, &ch, &err);
    /* The shards are running: a full queue only means waiting for them. */
    while (rc == 0 && !change_room_locked(e, ch)) {
        pthread_mutex_unlock(&e->mu);
        engine_sleep_ms(1);
        pthread_mutex_lock(&e->mu);
    }
    if (rc == 0)
        rc = commit_change_locked(e, ch);
    pthread_mutex_unlock(&e->mu);
    if (rc == -EINVAL)
        cf_warn("recovery: logged SQL no longer plans (line %d, column %d: %s)", err.line,
                err.column, err.message);
    return rc;
}

/* ---- declared streams' events ------------------------------------------------------ */

typedef struct row_ref {
    const uint8_t *p;       /* packed row (stream_ingest.h) */
    size_t len;
    int64_t ts;
    const char *id;         /* EVENT_ID value, or NULL */
    size_t id_len;
} row_ref;

/* Dedup, clock, arrival numbers, per-row W and C, WAL record and one
 * CF_MSG_ROWS per shard (when a view reads the stream), like engine_apply_locked
 * does for clicks. Event ids are deduplicated per stream (the key is the
 * stream name, a NUL, then the id). replay: the rows come from the WAL.
 * Returns the WAL LSN (0 without one or nothing to log), or -EIO/-ENOMEM. */
static int64_t submit_rows_locked(cf_engine *e, const char *stream, const row_ref *rows, size_t n,
                                  const cf_sqlx_set *pre_set, const uint64_t *pre,
                                  bool replay, size_t *ret_accepted, size_t *ret_dups)
{
    size_t slen = strlen(stream), acc = 0, dups = 0;
    unsigned ns = e->n_shards;
    bool reads = cf_sqlrt_reads(e->sql, stream);
    cf_buf key = {0}, wal = {0};
    /* One message per shard, with the rows routed to it (sql_route.h). */
    cf_buf *msg = calloc(ns, sizeof *msg);
    uint32_t *count = calloc(ns, sizeof *count);
    uint64_t *masks = calloc(ns, sizeof *masks);
    int64_t lsn = 0;
    if (!msg || !count || !masks) {
        free(msg);
        free(count);
        free(masks);
        return -ENOMEM;     /* nothing judged yet */
    }
    for (unsigned s = 0; s < ns; s++)
        cf_buf_put_str(&msg[s], stream, slen);
    cf_buf_put_str(&wal, stream, slen);
    size_t count_at = wal.len;
    cf_buf_put_u32(&wal, 0);
    for (size_t i = 0; i < n; i++) {
        const row_ref *r = &rows[i];
        if (r->id && r->id_len > 0) {
            cf_buf_reset(&key);
            cf_buf_put(&key, stream, slen + 1);
            cf_buf_put(&key, r->id, r->id_len);
            if (key.oom)
                break;
            const char *k = (const char *)key.data;
            int d = cf_dedup_check_hashed(e->dedup, k, key.len, cf_dedup_hash(e->dedup, k, key.len),
                                          r->ts, engine_dedup_clock_locked(e));
            if (d < 0) {
                atomic_fetch_add(&e->dedup_errors, 1);
            } else if (d == 0 && !replay) {
                dups++;
                continue;
            }
        }
        int64_t w = cf_watermark_of_events(e->wm, e->sent_wm);
        int64_t c = engine_dedup_clock_locked(e);
        cf_watermark_observe(e->wm, r->ts);
        uint64_t seq = e->next_seq++;
        if (reads) {
            memset(masks, 0, ns * sizeof *masks);
            if (ns == 1)
                masks[0] = CF_SQLX_ALL_VIEWS;
            else if (pre && pre_set == e->route_set)
                memcpy(masks, &pre[i * ns], ns * sizeof *masks);   /* routed before the lock */
            else
                cf_route_row(e->route_set, ns, stream, slen, r->p, r->len, masks);
        }
        for (unsigned s = 0; reads && s < ns; s++) {
            if (!masks[s])
                continue;
            cf_buf_put_u64(&msg[s], masks[s]);
            cf_buf_put_u64(&msg[s], seq);
            cf_buf_put_i64(&msg[s], w);
            cf_buf_put_i64(&msg[s], c);
            cf_buf_put_str(&msg[s], (const char *)r->p, r->len);
            count[s]++;
        }
        cf_buf_put_str(&wal, (const char *)r->p, r->len);
        cf_buf_put_str(&wal, r->id ? r->id : "", r->id ? r->id_len : 0);
        acc++;
    }
    bool oom = false;
    for (unsigned s = 0; s < ns; s++)
        oom |= msg[s].oom;
    if (key.oom || oom || wal.oom) {
        lsn = engine_wal_fail_locked(e, -ENOMEM);   /* the dedup table moved on: stop */
        goto out;
    }
    for (int k = 0; k < 4; k++)
        wal.data[count_at + (size_t)k] = (uint8_t)(acc >> (8 * k));
    if (acc > 0 && !replay && e->wal) {
        lsn = cf_wal_append(e->wal, CF_WAL_ROWS, wal.data, wal.len);
        if (lsn < 0) {
            lsn = engine_wal_fail_locked(e, lsn);
            goto out;
        }
    }
    if (dups > 0 && !replay) {
        int64_t clsn = engine_log_counters_locked(e, dups, 0);
        if (clsn < 0) {
            lsn = clsn;
            goto out;
        }
        if (clsn > lsn)
            lsn = clsn;
    }
    if (acc > 0 && reads) {
        for (unsigned s = 0; s < ns; s++) {
            if (!count[s])
                continue;
            cf_msg *m = cf_msg_new(CF_MSG_ROWS, msg[s].len);
            if (!m) {
                cf_error("out of memory for a stream rows message");
                atomic_store(&e->failed, 1);
                lsn = -EIO;
                goto out;
            }
            memcpy(m->data, msg[s].data, msg[s].len);
            m->n = count[s];
            engine_enqueue_locked(e, s, m);
        }
    }
    atomic_fetch_add(&e->accepted, acc);
    atomic_fetch_add(&e->duplicates, dups);
    *ret_accepted = acc;
    *ret_dups = dups;
out:
    cf_buf_free(&key);
    for (unsigned s = 0; s < ns; s++)
        cf_buf_free(&msg[s]);
    free(msg);
    free(count);
    free(masks);
    cf_buf_free(&wal);
    return lsn;
}

/* Room for one rows message of about `bytes` in every shard queue. */
static bool rows_room_locked(cf_engine *e, size_t bytes)
{
    if (atomic_load(&e->inflight) + e->n_shards * bytes > e->inflight_cap)
        return false;
    for (unsigned s = 0; s < e->n_shards; s++)
        if (cf_queue_space(cf_shard_queue(e->shards[s])) <= RESERVED_SLOTS)
            return false;
    return true;
}

typedef struct parse_ctx {
    cf_body_format fmt;
    char *body;
    size_t len;
    size_t max_batch;
    int64_t max_future_ms, now_ms;
    cf_stream_batch *b;
    const char **why;
} parse_ctx;

static int parse_in_catalog(void *ctx, const sql_object *stream)
{
    parse_ctx *p = ctx;
    return cf_stream_parse(stream, p->fmt, p->body, p->len, p->max_batch, p->max_future_ms,
                           p->now_ms, p->b, p->why);
}

int cf_engine_stream_events(cf_engine *e, const char *stream, cf_body_format fmt, char *body,
                            size_t len, int64_t now_ms, cf_stream_batch *b, const char **ret_error,
                            cf_submit_result *ret)
{
    memset(ret, 0, sizeof *ret);
    if (!cf_engine_ready(e))
        return -EAGAIN;
    parse_ctx pc = {fmt, body, len, e->cfg.max_batch ? e->cfg.max_batch : 10000,
                    e->cfg.max_future_ms, now_ms, b, ret_error};
    uint64_t gen = 0;
    int rc = cf_sqlrt_with_stream(e->sql, stream, parse_in_catalog, &pc, &gen);
    if (rc)
        return rc;
    if (b->rejected > 0)
        cf_engine_count_rejected(e, b->rejected);
    if (b->n == 0)
        return 0;
    row_ref *rows = calloc(b->n, sizeof *rows);
    if (!rows)
        return -ENOMEM;
    size_t bytes = sizeof(cf_msg) + strlen(stream) + 8;
    for (size_t i = 0; i < b->n; i++) {
        const cf_stream_row *r = &b->rows[i];
        rows[i] = (row_ref){b->packed.data + r->off, r->len, r->ts,
                            r->id_len ? (const char *)b->packed.data + r->id_off : NULL, r->id_len};
        bytes += r->len + 32;
    }
    /* Routed outside the lock, like clicks (sql_route.h); a set changed
     * in between is routed again under it. */
    unsigned ns = e->n_shards;
    cf_sqlx_set *pre_set = NULL;
    uint64_t *pre = NULL;
    if (ns > 1) {
        pthread_mutex_lock(&e->route_mu);
        pre_set = e->route_set ? cf_sqlx_set_ref(e->route_set) : NULL;
        pthread_mutex_unlock(&e->route_mu);
    }
    if (pre_set && cf_sqlx_set_reads(pre_set, stream) && (pre = calloc(b->n * ns, sizeof *pre)))
        for (size_t i = 0; i < b->n; i++)
            cf_route_row(pre_set, ns, stream, strlen(stream), rows[i].p, rows[i].len, &pre[i * ns]);
    size_t acc = 0, dups = 0;
    int64_t lsn = 0, mlsn = 0, seen = 0;
    pthread_mutex_lock(&e->mu);
    rc = engine_gate_locked(e);
    /* A full queue, or the stream changed since the body was checked: retry. */
    if (rc == 0 && (!rows_room_locked(e, bytes) || cf_sqlrt_generation(e->sql) != gen))
        rc = -EAGAIN;
    if (rc == 0) {
        lsn = submit_rows_locked(e, stream, rows, b->n, pre_set, pre, false, &acc, &dups);
        if (lsn >= 0)
            mlsn = engine_maybe_mark_locked(e, wall_ms());
        if (lsn < 0 || mlsn < 0)
            rc = -EIO;
        if (e->wal)
            seen = cf_wal_last_lsn(e->wal);
    }
    pthread_mutex_unlock(&e->mu);
    free(rows);
    free(pre);
    cf_sqlx_set_unref(pre_set);
    if (rc)
        return rc;
    rc = engine_wait_committed(e, lsn, mlsn, seen);
    if (rc)
        return rc;
    ret->accepted = acc;
    ret->duplicates = dups;
    return 0;
}

int engine_replay_rows(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, payload, len);
    const char *name = NULL;
    size_t name_len = 0;
    uint32_t n = 0;
    if (!cf_get_str(&r, &name, &name_len) || !cf_get_u32(&r, &n) || n > len)
        return -EINVAL;
    char *stream = strndup(name, name_len);
    row_ref *rows = calloc(n ? n : 1, sizeof *rows);
    int rc = stream && rows ? 0 : -ENOMEM;
    size_t bytes = sizeof(cf_msg) + name_len + 8;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const char *p = NULL, *id = NULL;
        size_t pl = 0, il = 0;
        if (!cf_get_str(&r, &p, &pl) || !cf_get_str(&r, &id, &il) || pl < 8) {
            rc = -EINVAL;
            break;
        }
        int64_t ts = 0;
        for (int k = 0; k < 8; k++)
            ts |= (int64_t)((uint64_t)(uint8_t)p[k] << (8 * k));
        rows[i] = (row_ref){(const uint8_t *)p, pl, ts, il ? id : NULL, il};
        bytes += pl + 32;
    }
    if (rc == 0) {
        size_t acc = 0, dups = 0;
        pthread_mutex_lock(&e->mu);
        /* The shards are running: a full queue only means waiting. */
        while (!rows_room_locked(e, bytes) && !atomic_load(&e->failed)) {
            pthread_mutex_unlock(&e->mu);
            engine_sleep_ms(1);
            pthread_mutex_lock(&e->mu);
        }
        int64_t lsn = submit_rows_locked(e, stream, rows, n, NULL, NULL, true, &acc, &dups);
        pthread_mutex_unlock(&e->mu);
        if (lsn < 0)
            rc = (int)lsn;
    }
    free(rows);
    free(stream);
    return rc;
}

/* The ticker, every --push-interval while a client listens: each shard
 * pushes the open rows of its EMIT CHANGES views that changed. The shards
 * answer after their current message (no read-your-writes needed). */
void engine_sql_push_interim(cf_engine *e)
{
    /* The built-in panel views (builtin_panels.h) read clicks: sql_runs. */
    if (!cf_sqlrt_count(e->sql) && !atomic_load(&e->sql_runs))
        return;
    cf_shard_query *qs = engine_new_queries(e, CF_Q_SQL_INTERIM);
    if (!qs)
        return;
    (void)engine_query_shards(e, qs, -1, false, NULL);
    engine_free_queries(e, qs);
}

static int exists(void *ctx, const sql_object *stream)
{
    (void)ctx;
    (void)stream;
    return 0;
}

bool cf_engine_has_stream(cf_engine *e, const char *stream)
{
    return cf_sqlrt_with_stream(e->sql, stream, exists, NULL, NULL) == 0;
}
