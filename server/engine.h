/* engine: the processing core of the daemon. A sequencer (one short critical
 * section per request) deduplicates by event_id, advances the event-time
 * clock, appends to the write-ahead log and hands events to `shards` worker
 * threads through bounded single-producer queues, keyed like Flink's keyBy:
 * user_id -> sessions, page_url -> windows and trending. Watermark markers
 * travel through the same queues, so every shard fires at the same W.
 *
 * Queries are answered by the shards themselves, after every message that was
 * enqueued before the query (read-your-writes), so REST answers reflect every
 * accepted event; shards are never locked by readers. */
#ifndef CF_ENGINE_H
#define CF_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "cf_event.h"
#include "config.h"
#include "ingest.h"
#include "sql_str.h"

typedef struct cf_engine cf_engine;
typedef struct cf_push cf_push;     /* server/push.h */

/* Creates the engine (no threads yet). cfg is copied. NULL on OOM. */
cf_engine *cf_engine_new(const cf_config *cfg);
/* Optional: results go to the WebSocket hub as well. Call before start. */
void cf_engine_set_push(cf_engine *e, cf_push *push);
/* Recovers from cfg->data_dir (snapshot + log replay), then starts the shard
 * threads and the clock ticker. Returns 0 or a negative errno. */
int cf_engine_start(cf_engine *e);
/* Ready once recovery is done (GET /readyz). */
bool cf_engine_ready(const cf_engine *e);
/* True once a WAL write or fsync failed: the engine acknowledges nothing
 * more (submit returns -EIO); the daemon should log and exit non-zero. */
bool cf_engine_failed(const cf_engine *e);
/* Stops taking events (submit -> -ESHUTDOWN), drains the queues, joins the
 * threads. Idempotent. */
void cf_engine_stop(cf_engine *e);
void cf_engine_free(cf_engine *e);

typedef struct cf_submit_result {
    size_t accepted;    /* new events handed to the shards */
    size_t duplicates;  /* event_id seen within the dedup TTL */
} cf_submit_result;

/* Submits n validated events, all or nothing. ret_is_dup (n bytes, may be
 * NULL) gets 1 for each duplicate. Returns 0 once the events are accepted
 * (durable per --fsync), -EAGAIN when the queues cannot take the whole
 * request or recovery is not finished (nothing accepted; answer 503), -ESHUTDOWN while stopping, -EIO
 * after a log failure. Thread-safe. */
int cf_engine_submit(cf_engine *e, const cf_event *evs, size_t n, uint8_t *ret_is_dup,
                     cf_submit_result *ret);
/* cf_engine_submit without the commit wait: the events are accepted and
 * logged, and *ret_upto is the LSN that must be durable (cf_engine_commit)
 * before they may be acknowledged (0: nothing to wait for). Lets the HTTP
 * server park the request instead of holding a thread through the fsync
 * (http_park.c). Same returns as cf_engine_submit. */
int cf_engine_submit_nowait(cf_engine *e, const cf_event *evs, size_t n, uint8_t *ret_is_dup,
                            cf_submit_result *ret, int64_t *ret_upto);
/* Blocks until everything logged up to upto is durable per --fsync (group
 * commit with any concurrent committers). 0, or -EIO after a log failure. */
int cf_engine_commit(cf_engine *e, int64_t upto);
/* True when a commit waits for an fsync (--fsync always with a data dir):
 * the case where parking a request instead of blocking on it pays. */
bool cf_engine_commit_slow(const cf_engine *e);

/* POST /api/v1/watermark: raises W to at least wm (never lowers it).
 * Returns the watermark in force afterwards via *ret_wm. 0 or -errno. */
int cf_engine_raise_watermark(cf_engine *e, int64_t wm, int64_t *ret_wm);

/* SQL statements (SPEC 13; sql_runtime.h): plans the script, logs what it
 * changes and commits it, all or nothing, in the sequencer's order.
 * at_start: --sql FILE (definitions already in force are kept). Returns 0
 * with *ret_answer ({"results": [...]}, caller frees), -EINVAL with *err
 * (a bad statement: 400), -EAGAIN (recovering), -ESHUTDOWN, -EIO, -ENOMEM. */
int cf_engine_sql(cf_engine *e, const char *text, size_t len, bool at_start, cJSON **ret_answer,
                  sql_error *err);
/* POST/GET /api/v1/query: a pull query over a user view's running rows,
 * open windows and retained fired results, answered after every request
 * acknowledged before it. 0 with *ret ({"items": [...]}), -EINVAL with
 * *err (400), -EAGAIN (recovering), -ESHUTDOWN, -ENOMEM. */
int cf_engine_query(cf_engine *e, const char *text, size_t len, cJSON **ret, sql_error *err);
/* POST /api/v1/streams/{name}/events (SPEC 12): parses the body against the
 * declared stream (stream_ingest.h: b gets the rows and the per-event
 * errors; the caller frees it) and submits the valid rows through the
 * sequencer (dedup per stream, per-event watermark, WAL, every shard when a
 * view reads the stream). 0 with *ret, -ENOENT (no such declared stream),
 * -EBADMSG (*ret_error), -E2BIG, -EAGAIN, -ESHUTDOWN, -EIO, -ENOMEM. */
typedef struct cf_stream_batch cf_stream_batch;
int cf_engine_stream_events(cf_engine *e, const char *stream, cf_body_format fmt, char *body,
                            size_t len, int64_t now_ms, cf_stream_batch *b, const char **ret_error,
                            cf_submit_result *ret);
/* POST /api/v1/tables/{name}/rows (SPEC 12): the body's rows parsed like
 * a declared stream's events (a row needs its primary key) and upserted in
 * the sequencer's order, logged (CF_WAL_TABLE). ret->accepted: the rows
 * applied (a new key past --max-keys is rejected in b). -ENOENT (no such
 * table), else as cf_engine_stream_events. */
int cf_engine_table_rows(cf_engine *e, const char *table, cf_body_format fmt, char *body,
                         size_t len, int64_t now_ms, cf_stream_batch *b, const char **ret_error,
                         cf_submit_result *ret);
/* GET (del false: *ret the row as an object) or DELETE (del true, logged)
 * of the row whose primary key is `key` (the URL's text, read as the key
 * column's type). 0, -ENOENT (no such table), -ESRCH (no such row),
 * -EINVAL (*ret_why: not a key of that type), -EAGAIN, -ESHUTDOWN, -EIO,
 * -ENOMEM. */
int cf_engine_table_row(cf_engine *e, const char *table, const char *key, bool del, cJSON **ret,
                        const char **ret_why);
/* GET /api/v1/tables: {"items": [{"name","columns","key","rows","bytes",
 * "refused","sql"}]}. NULL on OOM. */
cJSON *cf_engine_tables(cf_engine *e);
/* Whether `stream` is a declared stream (takes events at its URL). */
bool cf_engine_has_stream(cf_engine *e, const char *stream);
/* GET /api/v1/views and /api/v1/streams. NULL on OOM. */
cJSON *cf_engine_sql_views(cf_engine *e);
cJSON *cf_engine_sql_streams(cf_engine *e);

/* Queries. Each returns a new cJSON (caller frees with cJSON_Delete), the
 * JSON shape of SPEC section 8, or NULL on OOM / shutdown. */
typedef struct cf_window_query {
    int type;               /* CF_WINDOW_TUMBLING, CF_WINDOW_SLIDING, or -1 for both */
    const char *page_url;   /* NUL-terminated filter, or NULL for all pages */
    int state;              /* 0 open, 1 closed, -1 both */
    size_t limit;           /* 1..100000 */
    /* A time range (start >= from, end <= to): closed results are then read
     * from memory and history.db as one answer (newest revision per
     * window). Without it, memory only (the retained rings). */
    bool ranged;
    int64_t from, to;
} cf_window_query;

cJSON *cf_engine_trending(cf_engine *e, size_t n);                 /* {"as_of","half_life_ms","items"} */
cJSON *cf_engine_windows(cf_engine *e, const cf_window_query *q);  /* {"items": [...]} newest first */
cJSON *cf_engine_late(cf_engine *e, size_t limit);                 /* {"items": [...]} newest first */
cJSON *cf_engine_sessions(cf_engine *e, size_t limit);             /* {"items": [...]} closed, newest first */
/* Open sessions of one user: {"user_id": u, "items": [...]}; items empty when none. */
cJSON *cf_engine_user_sessions(cf_engine *e, const char *user_id, size_t len);
cJSON *cf_engine_stats(cf_engine *e);

/* GET /api/v1/views/{name}/rollup (SPEC 16), read from history.db. Returns
 * 0 with *ret set, -ENOENT for an unknown view, -ENOTSUP when history is
 * off, -EINVAL for a bad range or step, or -errno. */
int cf_engine_rollup(cf_engine *e, const char *view, int64_t from, int64_t to, int64_t step_ms,
                     cJSON **ret, char *why, size_t why_cap);
/* GET /api/v1/streams/clicks/events: {"items": [...]} the newest accepted
 * events (at most limit, clamped to 1..100000), newest first, with their
 * enrichment columns (server/recent.h). Read-your-writes. NULL on OOM. */
cJSON *cf_engine_events(cf_engine *e, size_t limit);
/* The HTTP layer counts invalid events here (stats "rejected"). Thread-safe. */
void cf_engine_count_rejected(cf_engine *e, size_t n);
/* Appends the Prometheus text exposition (names prefixed clickflow_). */
void cf_engine_metrics(cf_engine *e, cf_buf *out);

#endif
