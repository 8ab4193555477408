/* sql_runtime: the server's side of continuous SQL (SPEC 12, 13): the
 * catalog of what exists and the durable definitions behind it.
 *
 * A request is planned against a clone of the catalog, statement after
 * statement (each sees the effect of the ones before it), and only a
 * request whose every statement planned is committed, by swapping the
 * clone in: "applied whole or not at all". The engine does both steps in
 * its sequencer critical section and logs the applied statements in the
 * WAL between them, so the definitions take effect at one point of the
 * event order and a replay re-applies them at the same point.
 *
 * The definitions are kept as the canonical script of the statements in
 * force (CREATEs in creation order, dropped ones left out): that script is
 * what a snapshot stores, and re-planning it gives the same catalog.
 * Thread-safe: one mutex guards the catalog (readers list it). */
#ifndef CF_SQL_RUNTIME_H
#define CF_SQL_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "sql_plan.h"
#include "sql_str.h"

typedef struct cf_sqlx_set cf_sqlx_set;   /* sql_exec.h */

typedef struct cf_sqlrt cf_sqlrt;
typedef struct cf_sqlrt_change cf_sqlrt_change;

enum {
    /* Replaying the log or a snapshot: --max-queries is not checked (the
     * definitions were accepted under the limit in force then). */
    CF_SQLRT_REPLAY = 1,
    /* --sql FILE at start: a CREATE of a name that exists with the very
     * same statement text is skipped (the file was applied before), so a
     * restart with the same file is not an error. */
    CF_SQLRT_SKIP_SAME = 2,
    /* The server's own views (builtin_panels.h): marked built in, so not
     * counted by --max-queries, not droppable, not in cf_sqlrt_save's
     * script and listed with "builtin": true. The caller does not log. */
    CF_SQLRT_BUILTIN = 4,
};

/* NULL on OOM. max_queries: views and derived streams at most; shards:
 * what EXPLAIN's placement names; allowed_lateness: GRACE PERIOD's
 * default; max_keys: groups per view per shard (0: none). */
cf_sqlrt *cf_sqlrt_new(size_t max_queries, unsigned shards, int64_t allowed_lateness_ms,
                       size_t max_keys);
void cf_sqlrt_free(cf_sqlrt *rt);

/* Plans the script text[0..len) against a clone of the catalog. Returns 0
 * with *ret the change to commit or drop; -EINVAL with *err (message, line,
 * column) when a statement is bad; -ENOMEM. Nothing changes in rt. */
int cf_sqlrt_prepare(cf_sqlrt *rt, const char *text, size_t len, unsigned flags,
                     cf_sqlrt_change **ret, sql_error *err);
/* The canonical text of the statements the change applies (CREATE and
 * DROP, `;`-separated; EXPLAIN and skipped statements left out): what the
 * WAL records. Empty when the change alters nothing. Valid until the
 * change is committed or freed. */
const char *cf_sqlrt_change_log(const cf_sqlrt_change *ch, size_t *ret_len);
/* The answer of SPEC 13 ({"results": [...]}); the caller owns it. NULL on
 * OOM. Call at most once. */
cJSON *cf_sqlrt_change_answer(cf_sqlrt_change *ch);
/* The compiled views in force after the change (sql_exec.h), or NULL when
 * it creates and drops no view: the engine sends it to every shard. The
 * change keeps its reference; take one to keep it. */
cf_sqlx_set *cf_sqlrt_change_set(const cf_sqlrt_change *ch);
/* The names the change drops (any kind), NUL-terminated back to back in
 * [*ret, *ret + *ret_len). Valid until the change is committed or freed. */
void cf_sqlrt_change_dropped(const cf_sqlrt_change *ch, const char **ret, size_t *ret_len);
/* A new reference to the views in force. */
cf_sqlx_set *cf_sqlrt_current_set(cf_sqlrt *rt);
/* Swaps the change's catalog (and view set) in and frees the change. */
void cf_sqlrt_commit(cf_sqlrt *rt, cf_sqlrt_change *ch);
/* Accepts NULL. */
void cf_sqlrt_change_free(cf_sqlrt_change *ch);

/* Plans a pull query (one SELECT) against the catalog. Returns 0 with *ret
 * (caller frees), -EINVAL with *err (also when the view does not run in
 * this version, or the source is a stream), -ENOMEM. */
int cf_sqlrt_pull(cf_sqlrt *rt, const char *text, size_t len, sql_plan **ret, sql_error *err);

/* Calls fn (under the catalog lock) with the declared stream `name`;
 * returns what fn returns, or -ENOENT when there is no such declared stream
 * (clicks and derived streams take no events here). *ret_generation: the
 * catalog's commit count then (a later commit may have changed the stream). */
int cf_sqlrt_with_stream(cf_sqlrt *rt, const char *name,
                         int (*fn)(void *ctx, const sql_object *stream), void *ctx,
                         uint64_t *ret_generation);
/* Same for the table `name` (-ENOENT: no such table). */
int cf_sqlrt_with_table(cf_sqlrt *rt, const char *name,
                        int (*fn)(void *ctx, const sql_object *table), void *ctx);
/* Calls fn for every table (under the catalog lock). */
void cf_sqlrt_each_table(cf_sqlrt *rt, void (*fn)(void *ctx, const sql_object *table), void *ctx);
uint64_t cf_sqlrt_generation(cf_sqlrt *rt);
/* Whether a running view reads `source`. */
bool cf_sqlrt_reads(cf_sqlrt *rt, const char *source);

/* GET /api/v1/views: {"items": [{"name","sql","columns","keys","windowed",
 * "state_bytes"}]}. GET /api/v1/streams: {"items": [{"name","columns",
 * "derived","builtin","timestamp","event_id","sql"}]}. NULL on OOM. */
cJSON *cf_sqlrt_views_json(cf_sqlrt *rt);
cJSON *cf_sqlrt_streams_json(cf_sqlrt *rt);
/* [{"name","type","not_null"}] of o's columns. NULL on OOM. */
cJSON *cf_sqlrt_columns_json(const sql_object *o);
/* User definitions in force (streams, tables, views). */
size_t cf_sqlrt_count(cf_sqlrt *rt);

/* Snapshot: appends the definitions script as one length-prefixed string.
 * load() re-applies such a script to an empty runtime (replay rules). 0,
 * -EINVAL (a script that no longer plans: logged by the caller) or
 * -ENOMEM. */
int cf_sqlrt_save(cf_sqlrt *rt, cf_buf *out);
int cf_sqlrt_load(cf_sqlrt *rt, const char *script, size_t len, sql_error *err);

#endif
