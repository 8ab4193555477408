/* stats: GET /api/v1/stats and /metrics. Both gather the same snapshot of
 * counters (the sequencer's, the shards' summed, the WAL's and the push
 * hub's) and walk the one table of stats_table.h, which says each row's
 * JSON key and Prometheus family. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cf_dedup.h"
#include "cf_time.h"
#include "cf_watermark.h"
#include "results_json.h"
#include "engine_int.h"
#include "log.h"
#include "push.h"
#include "stats_table.h"
#include "wal.h"

typedef struct engine_stats {
    uint64_t accepted, rejected, duplicates, dedup_errors, bots;
    cf_shard_stats sum;             /* summed over shards */
    size_t *depth;                  /* per shard, at the time of the request */
    int64_t watermark, clock, now;
    double rate;
    size_t dedup_ids;
    uint64_t dedup_evictions;
    size_t inflight;
    int64_t wal_lsn;
    cf_history_stats hist;          /* zero while history is off */
    cf_sink_stats sink;             /* zero without --sink */
    struct join_row *joins;         /* the interval joins (join_rows) */
    size_t njoins;
} engine_stats;

/* One interval join: one shard's copy of its buffers (every shard holds
 * all of them, identical), its bytes over all copies, and its counters. */
typedef struct join_row {
    char *name;                     /* any length: SQL identifiers are unbounded */
    uint64_t buffered[2];           /* left, right */
    uint64_t bytes, keys, pairs, unmatched, late, dropped;
} join_row;

static void free_joins(struct engine_stats *st)
{
    for (size_t i = 0; i < st->njoins; i++)
        free(st->joins[i].name);
    free(st->joins);
    st->joins = NULL;
    st->njoins = 0;
}

/* Reads the joins' part of every shard's CF_Q_SQL_STATS answer
 * (cf_sqlx_stats) into st->joins: counts from shard 0, bytes summed. */
static int join_rows(cf_engine *e, engine_stats *st, bool sync)
{
    cf_shard_query *qs = engine_new_queries(e, CF_Q_SQL_STATS);
    if (!qs)
        return -ENOMEM;
    int rc = engine_query_shards(e, qs, -1, sync, NULL);
    for (unsigned s = 0; rc == 0 && s < e->n_shards; s++) {
        if (qs[s].err)
            continue;
        cf_reader r;
        cf_reader_init(&r, qs[s].rows.data, qs[s].rows.len);
        uint32_t nv = 0, nj = 0;
        cf_get_u32(&r, &nv);
        for (uint32_t i = 0; i < nv; i++) {
            const char *name = NULL;
            size_t nl = 0;
            uint64_t skip = 0;
            cf_get_str(&r, &name, &nl);
            for (int k = 0; k < 4; k++)    /* bytes, groups, late, rows in */
                cf_get_u64(&r, &skip);
        }
        if (!cf_get_u32(&r, &nj) || r.bad)
            continue;
        for (uint32_t i = 0; i < nj; i++) {
            const char *name = NULL;
            size_t nl = 0;
            uint64_t v[8];
            bool ok = cf_get_str(&r, &name, &nl);
            for (int k = 0; ok && k < 8; k++)
                ok = cf_get_u64(&r, &v[k]);
            if (!ok)
                break;
            join_row *j = NULL;
            for (size_t k = 0; k < st->njoins && !j; k++)
                if (strlen(st->joins[k].name) == nl && memcmp(st->joins[k].name, name, nl) == 0)
                    j = &st->joins[k];
            if (!j) {
                join_row *grown = realloc(st->joins, (st->njoins + 1) * sizeof *grown);
                if (!grown) {
                    rc = -ENOMEM;
                    break;
                }
                st->joins = grown;
                char *copy = malloc(nl + 1);
                if (!copy) {
                    rc = -ENOMEM;
                    break;
                }
                memcpy(copy, name, nl);
                copy[nl] = '\0';
                j = &st->joins[st->njoins++];
                memset(j, 0, sizeof *j);
                j->name = copy;
                j->buffered[0] = v[0];
                j->buffered[1] = v[1];
                j->keys = v[3];
                j->pairs = v[4];
                j->unmatched = v[5];
                j->late = v[6];
                j->dropped = v[7];
            }
            j->bytes += v[2];
        }
    }
    engine_free_queries(e, qs);
    return rc;
}

static cJSON *joins_json(const engine_stats *st, unsigned copies)
{
    cJSON *o = cJSON_CreateObject();
    for (size_t i = 0; o && i < st->njoins; i++) {
        const join_row *j = &st->joins[i];
        cJSON *r = cJSON_AddObjectToObject(o, j->name);
        if (!r)
            break;
        cJSON_AddNumberToObject(r, "buffered_left", (double)j->buffered[0]);
        cJSON_AddNumberToObject(r, "buffered_right", (double)j->buffered[1]);
        cJSON_AddNumberToObject(r, "buffered_events", (double)(j->buffered[0] + j->buffered[1]));
        cJSON_AddNumberToObject(r, "buffered_bytes", (double)j->bytes);
        cJSON_AddNumberToObject(r, "copies", copies);
        cJSON_AddNumberToObject(r, "keys", (double)j->keys);
        cJSON_AddNumberToObject(r, "pairs", (double)j->pairs);
        cJSON_AddNumberToObject(r, "left_unmatched", (double)j->unmatched);
        cJSON_AddNumberToObject(r, "late", (double)j->late);
        cJSON_AddNumberToObject(r, "dropped", (double)j->dropped);
    }
    return o;
}

static int gather(cf_engine *e, engine_stats *st, bool sync)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&e->mu);
    bool up = e->started && !e->stopping;
    pthread_mutex_unlock(&e->mu);
    if (!up)
        return -ESHUTDOWN;
    st->depth = calloc(e->n_shards, sizeof *st->depth);
    cf_shard_query *qs = engine_new_queries(e, CF_Q_STATS);
    if (!st->depth || !qs) {
        engine_free_queries(e, qs);
        return -ENOMEM;
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        st->depth[s] = cf_queue_depth(cf_shard_queue(e->shards[s]));
    int rc = engine_query_shards(e, qs, -1, sync, NULL);
    if (rc == 0) {
        for (unsigned s = 0; s < e->n_shards; s++) {
            const cf_shard_stats *x = &qs[s].stats;
            cf_shard_stats *y = &st->sum;
            y->events += x->events;
            y->late_dropped += x->late_dropped;
            y->late_updates += x->late_updates;
            y->session_late_dropped += x->session_late_dropped;
            y->session_late_updates += x->session_late_updates;
            y->windows_fired += x->windows_fired;
            y->sessions_closed += x->sessions_closed;
            y->session_evictions += x->session_evictions;
            y->trending_evictions += x->trending_evictions;
            for (int t = 0; t < 2; t++) {
                y->window_refused[t] += x->window_refused[t];
                y->window_pages[t] += x->window_pages[t];
            }
            y->session_users += x->session_users;
            y->panes_shared += x->panes_shared;
            y->max_keys += x->max_keys;     /* the shares' sum: the real total bound */
            y->errors += x->errors;
            y->open_windows += x->open_windows;
            y->kept_windows += x->kept_windows;
            y->open_sessions += x->open_sessions;
            y->trending_pages += x->trending_pages;
            y->memory += x->memory;
            y->session_memory += x->session_memory;
        }
    }
    engine_free_queries(e, qs);
    st->now = wall_ms();
    pthread_mutex_lock(&e->mu);
    st->watermark = cf_watermark_current(e->wm);
    st->clock = cf_watermark_clock(e->wm, st->now);
    st->dedup_ids = cf_dedup_count(e->dedup);
    st->dedup_evictions = cf_dedup_evictions(e->dedup);
    st->wal_lsn = e->wal ? cf_wal_last_lsn(e->wal) : 0;
    pthread_mutex_unlock(&e->mu);
    st->accepted = atomic_load(&e->accepted);
    st->rejected = atomic_load(&e->rejected);
    st->duplicates = atomic_load(&e->duplicates);
    st->bots = atomic_load(&e->bots);
    st->dedup_errors = atomic_load(&e->dedup_errors);
    st->rate = (double)atomic_load(&e->rate_x1000) / 1000.0;
    st->inflight = atomic_load(&e->inflight);
    if (e->history)
        cf_history_get_stats(e->history, &st->hist);
    if (e->sink)
        cf_sink_get_stats(e->sink, &st->sink);
    if (rc == 0)
        rc = join_rows(e, st, sync);
    if (rc) {
        free(st->depth);
        st->depth = NULL;
        free_joins(st);
    }
    return rc;
}

/* The keyed operators and their key bound (cf_keycap.h), one row each: the
 * rows drive both the "keyed_state" object of the stats and the
 * clickflow_state_keys* metric families, so an operator (a future SQL view
 * too) is added in one place. max_keys is the bound actually in force: the
 * sum of the per-shard shares for sharded operators. */
typedef struct keyed_row {
    const char *name;
    const char *policy;     /* "evict" or "refuse" */
    uint64_t keys, max_keys, evicted, refused;
} keyed_row;

enum { KEYED_ROWS = 5 };

static void keyed_rows(const cf_engine *e, const engine_stats *st, keyed_row rows[KEYED_ROWS])
{
    const cf_shard_stats *x = &st->sum;
    rows[0] = (keyed_row){"dedup", "evict", st->dedup_ids, e->cfg.max_keys,
                          st->dedup_evictions, 0};
    rows[1] = (keyed_row){"sessions", "evict", x->session_users, x->max_keys,
                          x->session_evictions, 0};
    rows[2] = (keyed_row){"tumbling", "refuse", x->window_pages[CF_WINDOW_TUMBLING], x->max_keys,
                          0, x->window_refused[CF_WINDOW_TUMBLING]};
    rows[3] = (keyed_row){"sliding", "refuse", x->window_pages[CF_WINDOW_SLIDING], x->max_keys,
                          0, x->window_refused[CF_WINDOW_SLIDING]};
    rows[4] = (keyed_row){"trending", "evict", x->trending_pages, x->max_keys,
                          x->trending_evictions, 0};
}

static cJSON *keyed_json(const keyed_row rows[KEYED_ROWS])
{
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < KEYED_ROWS; i++) {
        cJSON *r = cJSON_AddObjectToObject(o, rows[i].name);
        if (!r)
            break;
        cJSON_AddStringToObject(r, "policy", rows[i].policy);
        cJSON_AddNumberToObject(r, "keys", (double)rows[i].keys);
        cJSON_AddNumberToObject(r, "max_keys", (double)rows[i].max_keys);
        cJSON_AddNumberToObject(r, "evicted", (double)rows[i].evicted);
        cJSON_AddNumberToObject(r, "refused", (double)rows[i].refused);
    }
    return o;
}

/* The value of every row of the table (stats_table.h), in its order. */
typedef struct stat_value {
    bool when;
    double v;
} stat_value;

typedef enum stat_kind {
    CF_STAT_NUM,
    CF_STAT_TIME,
    CF_STAT_BOOL,
    CF_STAT_DEPTH,
    CF_STAT_KEYED,
    CF_STAT_JOIN,
} stat_kind;

typedef struct stat_row {
    stat_kind kind;
    const char *json, *metric, *type, *help;
} stat_row;

#define STAT_ROW(kind, json, metric, type, help, when, value) {kind, json, metric, type, help},
static const stat_row stat_rows[] = {CF_STATS_TABLE(STAT_ROW)};
#undef STAT_ROW

enum { STAT_ROWS = sizeof stat_rows / sizeof stat_rows[0] };

static void stat_values(cf_engine *e, const engine_stats *st, stat_value out[STAT_ROWS])
{
    size_t i = 0;
#define STAT_VALUE(kind, json, metric, type, help, when_, value) \
    out[i].when = (when_); \
    out[i].v = (double)(value); \
    i++;
    CF_STATS_TABLE(STAT_VALUE)
#undef STAT_VALUE
}

/* The object a row's key goes into, and the key in it: "obj.key" names
 * member key of object obj (created at its first row, or null when the row's
 * `when` is false), any other key is top-level. NULL: the row is left out
 * (its object is null). */
static cJSON *row_target(cJSON *o, const char *json, bool when, const char **key)
{
    const char *dot = strchr(json, '.');
    *key = json;
    if (!dot)
        return o;
    char name[64];
    size_t n = (size_t)(dot - json);
    if (n >= sizeof name)
        return NULL;
    memcpy(name, json, n);
    name[n] = '\0';
    *key = dot + 1;
    cJSON *obj = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!obj) {
        obj = when ? cJSON_CreateObject() : cJSON_CreateNull();
        if (!obj || !cJSON_AddItemToObject(o, name, obj)) {
            cJSON_Delete(obj);
            return NULL;
        }
    }
    return cJSON_IsObject(obj) ? obj : NULL;
}

cJSON *engine_stats_json(cf_engine *e, bool sync)
{
    engine_stats st;
    if (gather(e, &st, sync) < 0)
        return NULL;
    cJSON *o = cJSON_CreateObject();
    cJSON *depth = cJSON_CreateArray();
    if (!o || !depth) {
        cJSON_Delete(o);
        cJSON_Delete(depth);
        free(st.depth);
        return NULL;
    }
    stat_value val[STAT_ROWS];
    stat_values(e, &st, val);
    keyed_row rows[KEYED_ROWS];
    keyed_rows(e, &st, rows);
    for (size_t i = 0; i < STAT_ROWS; i++) {
        const stat_row *r = &stat_rows[i];
        if (!r->json)
            continue;
        const char *key;
        cJSON *to = row_target(o, r->json, val[i].when, &key);
        if (!to)
            continue;
        switch (r->kind) {
        case CF_STAT_NUM:
            cJSON_AddNumberToObject(to, key, val[i].v);
            break;
        case CF_STAT_TIME:
            cJSON_AddItemToObject(to, key, val[i].when ? cJSON_CreateNumber(val[i].v)
                                                       : cJSON_CreateNull());
            break;
        case CF_STAT_BOOL:
            cJSON_AddBoolToObject(to, key, val[i].v != 0);
            break;
        case CF_STAT_DEPTH:
            for (unsigned s = 0; s < e->n_shards; s++)
                cJSON_AddItemToArray(depth, cJSON_CreateNumber((double)st.depth[s]));
            cJSON_AddItemToObject(to, key, depth);
            depth = NULL;
            break;
        case CF_STAT_KEYED:
            cJSON_AddItemToObject(to, key, keyed_json(rows));
            break;
        case CF_STAT_JOIN:
            cJSON_AddItemToObject(to, key, joins_json(&st, e->n_shards));
            break;
        }
    }
    cJSON_Delete(depth);    /* only if the table had no CF_STAT_DEPTH key */
    free(st.depth);
    free_joins(&st);
    return o;
}

cJSON *cf_engine_stats(cf_engine *e) { return engine_stats_json(e, true); }

/* Appends a metric family with one sample per keyed operator: the row
 * member at offset `field` (a uint64_t of keyed_row). */
static void keyed_metric(cf_buf *out, const char *name, const char *type, const char *help,
                         const keyed_row rows[KEYED_ROWS], size_t field)
{
    char line[512];
    int n = snprintf(line, sizeof line, "# HELP clickflow_%s %s\n# TYPE clickflow_%s %s\n",
                     name, help, name, type);
    if (n > 0)
        cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    for (int i = 0; i < KEYED_ROWS; i++) {
        const keyed_row *r = &rows[i];
        uint64_t v;
        memcpy(&v, (const char *)r + field, sizeof v);
        n = snprintf(line, sizeof line, "clickflow_%s{operator=\"%s\"} %" PRIu64 "\n", name, r->name,
                     v);
        if (n > 0)
            cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    }
}

/* Appends a metric family with one sample per interval join (two, by
 * side, for the buffered events): the join_row member at offset field.
 * Join names are SQL identifiers; still escaped as label values. */
static void join_metric(cf_buf *out, const char *name, const char *type, const char *help,
                        const engine_stats *st, size_t field)
{
    char line[1024];
    int n = snprintf(line, sizeof line, "# HELP clickflow_%s %s\n# TYPE clickflow_%s %s\n",
                     name, help, name, type);
    if (n > 0)
        cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
    for (size_t i = 0; i < st->njoins; i++) {
        const join_row *j = &st->joins[i];
        uint64_t v[2];
        memcpy(v, (const char *)j + field, field == offsetof(join_row, buffered) ? 2 * sizeof *v
                                                                                   : sizeof *v);
        /* Put piece by piece: a line buffer cut long names' samples short
         * (and ran them into the next line, breaking the whole scrape). */
        bool sides = field == offsetof(join_row, buffered);
        for (int k = 0; k < (sides ? 2 : 1); k++) {
            cf_buf_put(out, "clickflow_", 10);
            cf_buf_put(out, name, strlen(name));
            cf_buf_put(out, "{join=\"", 7);
            for (const char *c = j->name; *c; c++) {
                if (*c == '\\' || *c == '"' || *c == '\n')
                    cf_buf_put(out, "\\", 1);
                cf_buf_put(out, *c == '\n' ? "n" : c, 1);
            }
            n = snprintf(line, sizeof line, "\"%s} %" PRIu64 "\n",
                         !sides ? "" : k == 0 ? ",side=\"left\"" : ",side=\"right\"", v[k]);
            if (n > 0)
                cf_buf_put(out, line, (size_t)n);
        }
    }
}

/* Appends one metric with its HELP/TYPE header. */
static void metric(cf_buf *out, const char *name, const char *type, const char *help,
                   double value)
{
    char line[512];
    int n = snprintf(line, sizeof line, "# HELP clickflow_%s %s\n# TYPE clickflow_%s %s\n"
                     "clickflow_%s %.17g\n", name, help, name, type, name, value);
    if (n > 0)
        cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void cf_engine_metrics(cf_engine *e, cf_buf *out)
{
    engine_stats st;
    if (gather(e, &st, true) < 0)
        return;
    stat_value val[STAT_ROWS];
    stat_values(e, &st, val);
    keyed_row rows[KEYED_ROWS];
    keyed_rows(e, &st, rows);
    for (size_t i = 0; i < STAT_ROWS; i++) {
        const stat_row *r = &stat_rows[i];
        if (!r->metric || !val[i].when)
            continue;
        if (r->kind == CF_STAT_KEYED) {
            keyed_metric(out, r->metric, r->type, r->help, rows, (size_t)val[i].v);
        } else if (r->kind == CF_STAT_JOIN) {
            join_metric(out, r->metric, r->type, r->help, &st, (size_t)val[i].v);
        } else if (r->kind == CF_STAT_DEPTH) {
            char line[512];
            int n = snprintf(line, sizeof line, "# HELP clickflow_%s %s\n# TYPE clickflow_%s %s\n",
                             r->metric, r->help, r->metric, r->type);
            if (n > 0)
                cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            for (unsigned s = 0; s < e->n_shards; s++) {
                n = snprintf(line, sizeof line, "clickflow_%s{shard=\"%u\"} %zu\n", r->metric, s,
                             st.depth[s]);
                if (n > 0)
                    cf_buf_put(out, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
            }
        } else {
            metric(out, r->metric, r->type, r->help, val[i].v);
        }
    }
    free(st.depth);
    free_joins(&st);
}

/* Logs, once, that the dedup table reached --max-keys: from then on an id
 * may be forgotten before its TTL and a retry of it counted again (SPEC 6).
 * Ticker thread; the shards log their own bounds (shard.c). */
void engine_check_dedup_bound(cf_engine *e)
{
    if (e->dedup_bound_logged)
        return;
    pthread_mutex_lock(&e->mu);
    uint64_t n = cf_dedup_evictions(e->dedup);
    pthread_mutex_unlock(&e->mu);
    if (n == 0)
        return;
    e->dedup_bound_logged = true;
    cf_warn("key bound reached (--max-keys %zu event_ids): deduplication now forgets the ids "
            "that expire soonest before their TTL, so a retry of one is accepted again; "
            "counted in stats (dedup_evictions) and /metrics (state_keys_evicted_total)",
            e->cfg.max_keys);
}
