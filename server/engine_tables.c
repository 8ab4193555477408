/* engine_tables: SQL tables' rows through the sequencer (SPEC 12).
 *
 * An upsert or delete is applied under the sequencer lock, between two
 * events of the one total order, and logged (CF_WAL_TABLE) before the
 * request is acknowledged, so a replay re-applies it at the same place.
 * The sequencer holds the rows (tables.h) and answers reads from them;
 * every shard holds a copy too, sent the same ops through its queue
 * (CF_MSG_TABLE) in the same order as events, so a stream-table join in a
 * shard sees each row as of the event's place in the log (SPEC 14).
 *
 * WAL payload: str table, u32 n, then n x (u8 op, str bytes): the ops that
 * were applied (a refused upsert is not logged). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "engine_int.h"
#include "log.h"
#include "shard_msg.h"
#include "sql_exec.h"
#include "sql_expr.h"
#include "sql_runtime.h"
#include "stream_ingest.h"
#include "tables.h"

typedef struct table_op {
    uint8_t op;
    const uint8_t *p;
    size_t len;
    size_t index;           /* in the request body (for its error) */
    int rc;                 /* out: what applying it returned */
} table_op;

/* Room in every shard queue for one table message of about `bytes`. */
static bool table_room_locked(cf_engine *e, size_t bytes)
{
    if (atomic_load(&e->inflight) + e->n_shards * (bytes + sizeof(cf_msg)) > e->inflight_cap)
        return false;
    for (unsigned s = 0; s < e->n_shards; s++)
        if (cf_queue_space(cf_shard_queue(e->shards[s])) <= RESERVED_SLOTS)
            return false;
    return true;
}

/* Sends the header (table, definition, shape) and ops to every shard. */
static int send_shards_locked(cf_engine *e, const cf_buf *msg, uint32_t n)
{
    for (unsigned s = 0; s < e->n_shards; s++) {
        cf_msg *m = cf_msg_new(CF_MSG_TABLE, msg->len);
        if (!m) {
            cf_error("out of memory for a table rows message");
            atomic_store(&e->failed, 1);
            return -EIO;
        }
        memcpy(m->data, msg->data, msg->len);
        m->n = n;
        engine_enqueue_locked(e, s, m);
    }
    return 0;
}

static void put_header(cf_buf *b, const char *name, const char *sql, uint32_t ncols, uint32_t key)
{
    cf_buf_put_str(b, name, strlen(name));
    cf_buf_put_str(b, sql, strlen(sql));
    cf_buf_put_u32(b, ncols);
    cf_buf_put_u32(b, key);
}

int engine_send_table_drop_locked(cf_engine *e, const char *name)
{
    cf_buf msg = {0};
    put_header(&msg, name, "", 0, 0);
    cf_buf_put_u8(&msg, CF_TABLE_DROP);
    cf_buf_put_str(&msg, "", 0);
    int rc = msg.oom ? -ENOMEM : send_shards_locked(e, &msg, 1);
    cf_buf_free(&msg);
    if (rc == -ENOMEM) {
        atomic_store(&e->failed, 1);
        rc = -EIO;
    }
    return rc;
}

static cf_tables *tables_locked(cf_engine *e)
{
    if (!e->tables)
        e->tables = cf_tables_new(e->cfg.max_keys, e->hashkey);
    return e->tables;
}

/* Applies ops to table o in order and logs the applied ones (not when
 * replaying). Returns the WAL LSN (0: nothing logged) or -EIO/-ENOMEM. */
static int64_t apply_ops_locked(cf_engine *e, const sql_object *o, table_op *ops, size_t n,
                                bool replay, size_t *ret_applied)
{
    *ret_applied = 0;
    cf_tables *ts = tables_locked(e);
    sql_table *t = ts ? cf_tables_get(ts, o) : NULL;
    if (!t)
        return engine_wal_fail_locked(e, -ENOMEM);
    cf_buf wal = {0}, msg = {0};
    put_header(&msg, o->name, o->sql ? o->sql : "", o->ncolumns, (uint32_t)o->key_column);
    cf_buf_put_str(&wal, o->name, strlen(o->name));
    size_t count_at = wal.len;
    cf_buf_put_u32(&wal, 0);
    size_t applied = 0;
    for (size_t i = 0; i < n; i++) {
        ops[i].rc = cf_tables_apply(t, o, ops[i].op, ops[i].p, ops[i].len);
        /* A delete of an absent key changes nothing: not logged either. */
        if (ops[i].rc != 0)
            continue;
        cf_buf_put_u8(&wal, ops[i].op);
        cf_buf_put_str(&wal, (const char *)ops[i].p, ops[i].len);
        cf_buf_put_u8(&msg, ops[i].op);
        cf_buf_put_str(&msg, (const char *)ops[i].p, ops[i].len);
        applied++;
    }
    int64_t lsn = 0;
    if (wal.oom || msg.oom) {
        lsn = engine_wal_fail_locked(e, -ENOMEM);    /* the rows changed but are not logged: stop */
    } else if (applied > 0 && !replay && e->wal) {
        for (int k = 0; k < 4; k++)
            wal.data[count_at + (size_t)k] = (uint8_t)(applied >> (8 * k));
        lsn = cf_wal_append(e->wal, CF_WAL_TABLE, wal.data, wal.len);
        if (lsn < 0)
            lsn = engine_wal_fail_locked(e, lsn);
    }
    if (lsn >= 0 && applied > 0) {
        int src = send_shards_locked(e, &msg, (uint32_t)applied);
        if (src < 0)
            lsn = src;
    }
    cf_buf_free(&wal);
    cf_buf_free(&msg);
    *ret_applied = applied;
    return lsn;
}

/* Makes the request durable: waits for the log up to lsn. */
static int commit_lsn(cf_engine *e, int64_t lsn)
{
    if (e->wal && lsn > 0 && cf_wal_commit(e->wal, lsn) < 0) {
        if (!atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging");
        return -EIO;
    }
    return 0;
}

/* ---- POST /api/v1/tables/{name}/rows ------------------------------------ */

typedef struct upsert_ctx {
    cf_engine *e;
    cf_body_format fmt;
    char *body;
    size_t len;
    int64_t now_ms;
    cf_stream_batch *b;
    const char **why;
    size_t applied;
    int64_t lsn;
} upsert_ctx;

static int upsert_in_catalog(void *ctx, const sql_object *o)
{
    upsert_ctx *u = ctx;
    cf_engine *e = u->e;
    size_t max_batch = e->cfg.max_batch ? e->cfg.max_batch : 10000;
    /* Any time is fine for a table row: it has no event time. */
    int rc = cf_stream_parse(o, u->fmt, u->body, u->len, max_batch, INT64_MAX / 4, u->now_ms, u->b,
                             u->why);
    if (rc || u->b->n == 0)
        return rc;
    if (!table_room_locked(e, u->b->packed.len + 16 * u->b->n + 512))
        return -EAGAIN;     /* the shards are behind: nothing applied, retry */
    table_op *ops = calloc(u->b->n, sizeof *ops);
    if (!ops)
        return -ENOMEM;
    for (size_t i = 0; i < u->b->n; i++) {
        const cf_stream_row *r = &u->b->rows[i];
        ops[i] = (table_op){CF_TABLE_UPSERT, u->b->packed.data + r->off, r->len, r->index, 0};
    }
    u->lsn = apply_ops_locked(e, o, ops, u->b->n, false, &u->applied);
    for (size_t i = 0; rc == 0 && u->lsn >= 0 && i < u->b->n; i++) {
        if (ops[i].rc == -ENOSPC)
            rc = cf_stream_reject(u->b, ops[i].index, "the table holds --max-keys rows: a new key is refused");
        else if (ops[i].rc == -EINVAL)
            rc = cf_stream_reject(u->b, ops[i].index, "row too large");
        else if (ops[i].rc < 0)
            rc = ops[i].rc;
    }
    free(ops);
    return u->lsn < 0 ? (int)u->lsn : rc;
}

int cf_engine_table_rows(cf_engine *e, const char *table, cf_body_format fmt, char *body,
                         size_t len, int64_t now_ms, cf_stream_batch *b, const char **ret_error,
                         cf_submit_result *ret)
{
    memset(ret, 0, sizeof *ret);
    if (!cf_engine_ready(e))
        return -EAGAIN;
    upsert_ctx u = {e, fmt, body, len, now_ms, b, ret_error, 0, 0};
    /* Parsed and applied inside the sequencer's critical section: the
     * table's definition cannot change in between, and the rows take their
     * place in the order of events. */
    pthread_mutex_lock(&e->mu);
    int rc = engine_gate_locked(e);
    if (rc == 0)
        rc = cf_sqlrt_with_table(e->sql, table, upsert_in_catalog, &u);
    int64_t seen = e->wal ? cf_wal_last_lsn(e->wal) : 0;
    pthread_mutex_unlock(&e->mu);
    if (b->rejected > 0)
        cf_engine_count_rejected(e, b->rejected);
    if (rc)
        return rc == -EIO || u.lsn < 0 ? -EIO : rc;
    if (commit_lsn(e, seen > u.lsn ? seen : u.lsn) < 0)
        return -EIO;
    ret->accepted = u.applied;
    return 0;
}

/* ---- one row by key ----------------------------------------------------- */

/* The key in the URL as a value of the key column's type. Strings borrow
 * text. -EINVAL with *ret_why when it is not one. */
static int key_value(const sql_object *o, const char *text, sql_value *ret, const char **ret_why)
{
    const sql_column *c = &o->columns[o->key_column];
    size_t n = strlen(text);
    char *end = NULL;
    errno = 0;
    switch (c->type) {
    case SQL_STRING:
        *ret = sql_string(text, (uint32_t)n);
        return 0;
    case SQL_BIGINT: {
        long long v = n ? strtoll(text, &end, 10) : 0;
        if (n && *end == '\0' && errno == 0 && llabs(v) <= (1LL << 53)) {
            *ret = sql_bigint(v);
            return 0;
        }
        *ret_why = "the key must be a BIGINT (an integer)";
        return -EINVAL;
    }
    case SQL_DOUBLE: {
        double v = n ? strtod(text, &end) : NAN;
        if (n && *end == '\0' && isfinite(v)) {
            *ret = sql_double(v);
            return 0;
        }
        *ret_why = "the key must be a DOUBLE (a number)";
        return -EINVAL;
    }
    case SQL_BOOLEAN:
        if (strcmp(text, "true") == 0 || strcmp(text, "false") == 0) {
            *ret = sql_bool(text[0] == 't');
            return 0;
        }
        *ret_why = "the key must be a BOOLEAN (true or false)";
        return -EINVAL;
    case SQL_TIMESTAMP: {
        int64_t ms = 0;
        long long v = n ? strtoll(text, &end, 10) : -1;
        if (n && *end == '\0' && errno == 0 && v >= 0) {
            *ret = sql_timestamp(v);
            return 0;
        }
        if (cf_rfc3339_parse(text, n, &ms) == 0) {
            *ret = sql_timestamp(ms);
            return 0;
        }
        *ret_why = "the key must be a TIMESTAMP (RFC 3339 or integer epoch ms)";
        return -EINVAL;
    }
    default:
        break;
    }
    *ret_why = "rows of this table cannot be addressed by URL";
    return -EINVAL;
}

typedef struct key_ctx {
    cf_engine *e;
    const char *key;
    const char **why;
    bool del;
    cJSON *row;             /* get: the row found */
    int64_t lsn;            /* delete */
} key_ctx;

static int row_json(const sql_object *o, const sql_value *v, cJSON **ret)
{
    sql_sb sb = {0};
    sql_sb_puts(&sb, "{");
    for (uint32_t i = 0; i < o->ncolumns; i++) {
        if (i)
            sql_sb_puts(&sb, ",");
        sql_sb_put_json_string(&sb, o->columns[i].name, strlen(o->columns[i].name));
        sql_sb_puts(&sb, ":");
        sql_value_to_json(v[i], &sb);
    }
    sql_sb_puts(&sb, "}");
    *ret = sb.oom ? NULL : cJSON_ParseWithLength(sb.data, sb.len);
    sql_sb_free(&sb);
    return *ret ? 0 : -ENOMEM;
}

static int key_in_catalog(void *ctx, const sql_object *o)
{
    key_ctx *k = ctx;
    sql_value key;
    int rc = key_value(o, k->key, &key, k->why);
    if (rc)
        return rc;
    if (k->del) {
        cf_buf b = {0};
        cf_sqlx_put_value(&b, key);
        if (b.oom) {
            cf_buf_free(&b);
            return -ENOMEM;
        }
        if (!table_room_locked(k->e, b.len + 512)) {
            cf_buf_free(&b);
            return -EAGAIN;
        }
        table_op op = {CF_TABLE_DELETE, b.data, b.len, 0, 0};
        size_t applied = 0;
        k->lsn = apply_ops_locked(k->e, o, &op, 1, false, &applied);
        cf_buf_free(&b);
        if (k->lsn < 0)
            return (int)k->lsn;
        return op.rc == -ENOENT ? -ESRCH : op.rc;
    }
    sql_table *t = k->e->tables ? cf_tables_find(k->e->tables, o) : NULL;
    sql_value *v = calloc(o->ncolumns, sizeof *v);
    if (!v)
        return -ENOMEM;
    rc = t ? sql_table_get(t, key, v) : 0;
    if (rc == 1)
        rc = row_json(o, v, &k->row);
    else
        rc = -ESRCH;
    free(v);
    return rc;
}

int cf_engine_table_row(cf_engine *e, const char *table, const char *key, bool del, cJSON **ret,
                        const char **ret_why)
{
    if (ret)
        *ret = NULL;
    *ret_why = NULL;
    if (!cf_engine_ready(e))
        return -EAGAIN;
    key_ctx k = {e, key, ret_why, del, NULL, 0};
    pthread_mutex_lock(&e->mu);
    /* A read needs no gate: it sees every acknowledged write. */
    int rc = del ? engine_gate_locked(e) : 0;
    if (rc == 0)
        rc = cf_sqlrt_with_table(e->sql, table, key_in_catalog, &k);
    pthread_mutex_unlock(&e->mu);
    if (rc == 0 && del)
        rc = commit_lsn(e, k.lsn);
    if (rc == 0 && ret)
        *ret = k.row;
    else
        cJSON_Delete(k.row);
    return rc;
}

/* ---- GET /api/v1/tables ------------------------------------------------- */

typedef struct list_ctx {
    cf_engine *e;
    cJSON *items;
    bool oom;
} list_ctx;

static void list_one(void *ctx, const sql_object *o)
{
    list_ctx *l = ctx;
    sql_table *t = l->e->tables ? cf_tables_find(l->e->tables, o) : NULL;
    sql_table_stats st = {0};
    if (t)
        sql_table_stats_get(t, &st);
    cJSON *it = cJSON_CreateObject();
    cJSON *cols = cf_sqlrt_columns_json(o);
    if (!it || !cols || !cJSON_AddStringToObject(it, "name", o->name) ||
        !cJSON_AddItemToObject(it, "columns", cols) ||
        !cJSON_AddStringToObject(it, "key", o->columns[o->key_column].name) ||
        !cJSON_AddNumberToObject(it, "rows", (double)st.rows) ||
        !cJSON_AddNumberToObject(it, "bytes", (double)st.bytes) ||
        !cJSON_AddNumberToObject(it, "refused", (double)st.refused) ||
        !cJSON_AddStringToObject(it, "sql", o->sql ? o->sql : "")) {
        if (!cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(it, "columns")))
            cJSON_Delete(cols);
        cJSON_Delete(it);
        l->oom = true;
        return;
    }
    cJSON_AddItemToArray(l->items, it);
}

cJSON *cf_engine_tables(cf_engine *e)
{
    cJSON *root = cJSON_CreateObject();
    list_ctx l = {e, cJSON_AddArrayToObject(root, "items"), false};
    if (!l.items) {
        cJSON_Delete(root);
        return NULL;
    }
    pthread_mutex_lock(&e->mu);
    cf_sqlrt_each_table(e->sql, list_one, &l);
    pthread_mutex_unlock(&e->mu);
    if (l.oom) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

/* ---- replay ------------------------------------------------------------- */

typedef struct replay_ctx {
    cf_engine *e;
    table_op *ops;
    size_t n;
    int64_t lsn;
} replay_ctx;

static int replay_in_catalog(void *ctx, const sql_object *o)
{
    replay_ctx *r = ctx;
    size_t applied = 0;
    r->lsn = apply_ops_locked(r->e, o, r->ops, r->n, true, &applied);
    return r->lsn < 0 ? (int)r->lsn : 0;
}

int engine_replay_table(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, payload, len);
    const char *name = NULL;
    size_t name_len = 0;
    uint32_t n = 0;
    if (!cf_get_str(&r, &name, &name_len) || !cf_get_u32(&r, &n) || n > len)
        return -EINVAL;
    char *table = strndup(name, name_len);
    table_op *ops = calloc(n ? n : 1, sizeof *ops);
    int rc = table && ops ? 0 : -ENOMEM;
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        uint8_t op = 0;
        const char *p = NULL;
        size_t pl = 0;
        if (!cf_get_u8(&r, &op) || !cf_get_str(&r, &p, &pl))
            rc = -EINVAL;
        else
            ops[i] = (table_op){op, (const uint8_t *)p, pl, i, 0};
    }
    if (rc == 0) {
        replay_ctx rc_ = {e, ops, n, 0};
        pthread_mutex_lock(&e->mu);
        /* The shards are running: a full queue only means waiting. */
        while (!table_room_locked(e, len + 512) && !atomic_load(&e->failed)) {
            pthread_mutex_unlock(&e->mu);
            engine_sleep_ms(1);
            pthread_mutex_lock(&e->mu);
        }
        rc = cf_sqlrt_with_table(e->sql, table, replay_in_catalog, &rc_);
        pthread_mutex_unlock(&e->mu);
        if (rc == -ENOENT) {
            cf_warn("recovery: logged rows of table '%s', which is not defined there", table);
            rc = 0;
        }
    }
    free(ops);
    free(table);
    return rc;
}
