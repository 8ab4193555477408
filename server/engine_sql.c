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
#include "sql_runtime.h"

#define MAX_QUERY_LIMIT 100000  /* rows a pull query answers at most */

/* Sends the user views in force to every shard through the queues, so
 * each shard starts and stops them between the same two events. The
 * caller checked room. 0 or -EIO (no memory for a message: the shards
 * would diverge from the log, so stop acknowledging as on a WAL error). */
int send_views_locked(cf_engine *e, cf_sqlx_set *set)
{
    for (unsigned s = 0; s < e->n_shards; s++) {
        cf_msg *m = cf_msg_new(CF_MSG_SQL, sizeof set);
        if (!m) {
            cf_error("out of memory for a view change message");
            atomic_store(&e->failed, 1);
            return -EIO;
        }
        cf_sqlx_set *ref = cf_sqlx_set_ref(set);
        memcpy(m->data, &ref, sizeof ref);
        enqueue_locked(e, s, m);
    }
    atomic_store(&e->sql_runs, cf_sqlx_set_runs(set));
    return 0;
}

/* Commits a prepared change under mu: the view set goes to the shards
 * first (room checked by the caller), then the catalog is swapped. */
static int commit_change_locked(cf_engine *e, cf_sqlrt_change *ch)
{
    cf_sqlx_set *set = cf_sqlrt_change_set(ch);
    int rc = set ? send_views_locked(e, set) : 0;
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
    if (e->stopping) {
        rc = -ESHUTDOWN;
    } else if (atomic_load(&e->failed)) {
        rc = -EIO;
    } else if (!e->accepting) {
        rc = -EAGAIN;
    } else {
        rc = cf_sqlrt_prepare(e->sql, text, len, at_start ? CF_SQLRT_SKIP_SAME : 0, &ch, err);
        if (rc == 0 && cf_sqlrt_change_set(ch) && !all_have_room_locked(e))
            rc = -EAGAIN;   /* the shards' queues are full: nothing applied */
        size_t log_len = 0;
        const char *log = rc == 0 ? cf_sqlrt_change_log(ch, &log_len) : NULL;
        if (rc == 0 && log_len > 0 && e->wal) {
            lsn = cf_wal_append(e->wal, CF_WAL_SQL, log, log_len);
            if (lsn < 0)
                rc = wal_fail_locked(e, lsn);
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
    cf_shard_query *qs = new_queries(e, CF_Q_SQL);
    if (!qs) {
        sql_plan_free(p);
        return -ENOMEM;
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        qs[s].view = pi->source;
    /* After every message enqueued before: read-your-writes (SPEC 8). */
    rc = query_shards(e, qs, -1, true, NULL);
    const cf_buf **parts = calloc(e->n_shards, sizeof *parts);
    for (unsigned s = 0; rc == 0 && s < e->n_shards; s++) {
        if (qs[s].err)
            rc = qs[s].err;
        else if (parts)
            parts[s] = &qs[s].rows;
    }
    if (rc == 0 && !parts)
        rc = -ENOMEM;
    if (rc == 0)
        rc = cf_sqlpull_answer(pi, parts, e->n_shards, MAX_QUERY_LIMIT, ret);
    free(parts);
    free_queries(e, qs);
    sql_plan_free(p);
    return rc;
}

cJSON *cf_engine_sql_views(cf_engine *e) { return cf_sqlrt_views_json(e->sql); }
cJSON *cf_engine_sql_streams(cf_engine *e) { return cf_sqlrt_streams_json(e->sql); }

/* Re-applies logged definitions at their place in the event order. They
 * planned when logged, so a failure means a damaged record: skipped like
 * any malformed record. */
int replay_sql(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_sqlrt_change *ch = NULL;
    sql_error err;
    pthread_mutex_lock(&e->mu);
    int rc = cf_sqlrt_prepare(e->sql, (const char *)payload, len, CF_SQLRT_REPLAY, &ch, &err);
    /* The shards are running: a full queue only means waiting for them. */
    while (rc == 0 && cf_sqlrt_change_set(ch) && !all_have_room_locked(e)) {
        pthread_mutex_unlock(&e->mu);
        sleep_ms(1);
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
