/* ticker: the engine's clock thread, every TICK_MS. It moves the watermark
 * while no events arrive (SPEC 1: the wall-clock term of C), samples the
 * ingest rate, pushes interim windows, trending and stats to listening
 * WebSocket clients, and drives snapshots (checkpoint.c). */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "results_json.h"
#include "engine_int.h"
#include "log.h"
#include "push.h"
#include "thread_role.h"
#include "wal.h"

#define TICK_MS 100
#define INTERIM_PER_TYPE 100           /* busiest open windows per type per interim push */

/* The messages of one tick (interim windows, trending, stats), rendered and
 * then published as one group: one wake-up of the push thread and one write
 * per client for all of them, not one each. */
typedef struct tick_msgs {
    cf_push_item items[3];
    size_t n;
} tick_msgs;

/* Adds a rendered message (it.msg, owned from here on) to the tick's group. */
static void stage_text(tick_msgs *t, cf_push_item it)
{
    if (t->n == sizeof t->items / sizeof t->items[0]) {
        cJSON_free((char *)it.msg);
        return;
    }
    t->items[t->n++] = it;
}

/* Renders data (consumed) as a {"type","data"} message of the tick, it
 * giving the rest of the item. */
static void stage(tick_msgs *t, cf_push_item it, const char *type, cJSON *data)
{
    char *text = cf_push_message(type, data, &it.len);
    if (text) {
        it.msg = text;
        stage_text(t, it);
    }
}

/* What the ticker pushed last. Interim windows and trending go out when
 * they changed since (a dashboard keeps what it was sent), or to everyone
 * when a client joined (cf_push_joins), so a new subscriber has them within
 * one --push-interval; an idle server's clients are not sent the same
 * top-N every interval. When messages were dropped since the last push
 * tick (cf_push_dropped moved), the unchanged ones go out again, but only
 * to the clients whose queue lost the latest (cf_push_item.repair): a slow
 * reader would otherwise keep a stale list until the next change. */
typedef struct push_memo {
    char *windows;          /* the last interim windows message pushed */
    size_t windows_len;
    uint64_t joins;         /* cf_push_joins() at the last push tick */
    uint64_t dropped;       /* cf_push_dropped() at the last push tick */
} push_memo;

/* Why a push tick sends the interim state: to everyone when it changed or
 * a client joined; else, after drops, again to those that lost it. */
typedef struct push_why {
    bool fresh;             /* a client joined */
    bool repair;            /* messages were dropped */
} push_why;

/* The item of a state message: to all (changed or fresh), or as a repair. */
static cf_push_item state_item(cf_topic topic, bool interim, bool same, push_why why)
{
    return (cf_push_item){.topic = topic, .interim = interim, .state = true,
                          .repair = same && !why.fresh};
}

static void publish_staged(cf_engine *e, tick_msgs *t)
{
    cf_push_publish_group(e->push, t->items, t->n);
    for (size_t i = 0; i < t->n; i++)
        cJSON_free((char *)t->items[i].msg);
    t->n = 0;
}

/* Interim results of open windows (final=false), newest first. */
/* Interim results of the busiest open windows of each type. A push goes to
 * every client every --push-interval, so it is kept small (a dashboard shows
 * the top pages): all open windows would be megabytes per second per client
 * under load. Final results are never capped. */
static void push_interim(cf_engine *e, tick_msgs *out, push_memo *memo, push_why why)
{
    cJSON *all = NULL;
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING; t++) {
        cf_window_query q = {.type = t, .page_url = NULL, .state = 0, .limit = INTERIM_PER_TYPE};
        cJSON *res = engine_windows_ordered(e, &q, false, true);
        cJSON *items = res ? cJSON_DetachItemFromObjectCaseSensitive(res, "items") : NULL;
        cJSON_Delete(res);
        if (!items)
            continue;
        if (!all) {
            all = items;
            continue;
        }
        cJSON *it;
        while ((it = cJSON_DetachItemFromArray(items, 0)) != NULL)
            cJSON_AddItemToArray(all, it);
        cJSON_Delete(items);
    }
    if (!all || cJSON_GetArraySize(all) == 0) {
        cJSON_Delete(all);
        return;
    }
    size_t len = 0;
    char *text = cf_push_message("windows", all, &len);
    if (!text)
        return;
    bool same = memo->windows && len == memo->windows_len && memcmp(text, memo->windows, len) == 0;
    if (same && !why.fresh && !why.repair) {
        cJSON_free(text);   /* unchanged: nothing to push */
        return;
    }
    char *copy = same ? NULL : realloc(memo->windows, len);
    if (copy) {
        memcpy(copy, text, len);
        memo->windows = copy;
        memo->windows_len = len;
    }
    cf_push_item it = state_item(CF_TOPIC_WINDOWS, true, same, why);
    it.msg = text;
    it.len = len;
    stage_text(out, it);
}

static void push_trending(cf_engine *e, tick_msgs *out, push_why why)
{
    cJSON *t = engine_trending(e, 10, false);
    if (!t)
        return;
    /* "When it changed": compare the ranked items, not as_of. */
    char *items = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(t, "items"));
    bool same = items && e->last_trending && strcmp(items, e->last_trending) == 0;
    if (items && (!same || why.fresh || why.repair)) {
        if (same) {
            cJSON_free(items);
        } else {
            cJSON_free(e->last_trending);
            e->last_trending = items;
        }
        stage(out, state_item(CF_TOPIC_TRENDING, false, same, why), "trending", t);
        return;
    }
    cJSON_free(items);
    cJSON_Delete(t);
}

static void sample_rate(cf_engine *e, int64_t now)
{
    size_t i = e->rate_i % RATE_SAMPLES;
    e->rate_acc[i] = atomic_load(&e->accepted);
    e->rate_t[i] = now;
    e->rate_i++;
    /* The oldest sample within the ring is about one second old. */
    size_t oldest = e->rate_i >= RATE_SAMPLES ? e->rate_i % RATE_SAMPLES : 0;
    int64_t dt = now - e->rate_t[oldest];
    uint64_t dn = e->rate_acc[i] - e->rate_acc[oldest];
    atomic_store(&e->rate_x1000, dt > 0 ? (uint64_t)((double)dn * 1e6 / (double)dt) : 0);
}

void *engine_ticker_main(void *arg)
{
    cf_engine *e = arg;
    /* Request class (inherited): it holds the sequencer lock for the dedup
     * save's steps, and a niced holder would keep every submit waiting. */
    cf_thread_role_name("cf-ticker");
    push_memo memo = {.windows = NULL};
    int64_t start = mono_ms();
    int64_t next_push = start + e->cfg.push_interval_ms;
    int64_t next_stats = start + 1000;
    e->snap_due = mono_ms() + e->cfg.snapshot_interval_ms;
    pthread_mutex_lock(&e->tick_mu);
    while (!e->tick_stop) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_nsec += TICK_MS * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&e->tick_cond, &e->tick_mu, &until);
        if (e->tick_stop)
            break;
        pthread_mutex_unlock(&e->tick_mu);

        int64_t now = wall_ms(), mono = mono_ms();
        /* Idle progress (SPEC 1): the wall-clock term of C moves W; also
         * sends a marker that a full queue held back. Windows still fire
         * only through markers. */
        int64_t mlsn = 0;
        pthread_mutex_lock(&e->mu);
        if (!e->stopping && !atomic_load(&e->failed))
            mlsn = engine_maybe_mark_locked(e, now);
        pthread_mutex_unlock(&e->mu);
        /* History retention runs on event time: tell the writer W. */
        if (e->history) {
            pthread_mutex_lock(&e->mu);
            int64_t w = e->sent_wm;
            pthread_mutex_unlock(&e->mu);
            cf_history_set_clock(e->history, w);
        }
        /* The log only writes on commit: commit the marker so an idle
         * server's log buffer does not grow (and a failure is noticed). */
        if (e->wal && mlsn > 0 && cf_wal_commit(e->wal, mlsn) < 0 &&
            !atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging events");
        sample_rate(e, mono);
        engine_check_dedup_bound(e);
        engine_dedup_spare(e);
        /* Interim results cost the shards a pass over every open window:
         * only when someone listens. */
        bool listened = e->push && cf_push_clients(e->push) > 0;
        tick_msgs msgs = {.n = 0};
        /* Both schedules step from one start, so with the default 500 ms
         * every other push tick carries the stats too, in the same group
         * (one write per client). After a stall they restart from now. */
        if (listened && e->cfg.push_interval_ms > 0 && mono >= next_push) {
            next_push += e->cfg.push_interval_ms;
            if (next_push <= mono)
                next_push = mono + e->cfg.push_interval_ms;
            uint64_t joins = cf_push_joins(e->push);
            uint64_t dropped = cf_push_dropped(e->push);
            push_why why = {.fresh = joins != memo.joins, .repair = dropped != memo.dropped};
            memo.joins = joins;
            memo.dropped = dropped;
            /* Each part is computed only for its listeners: the interim
             * windows cost every shard a pass over its open windows. */
            if (cf_push_listened(e->push, CF_TOPIC_WINDOWS))
                push_interim(e, &msgs, &memo, why);
            if (cf_push_listened_named(e->push))
                engine_sql_push_interim(e);
            if (cf_push_listened(e->push, CF_TOPIC_TRENDING))
                push_trending(e, &msgs, why);
        }
        if (listened && mono >= next_stats) {
            next_stats += 1000;
            if (next_stats <= mono)
                next_stats = mono + 1000;
            cJSON *st = cf_push_listened(e->push, CF_TOPIC_STATS) ? engine_stats_json(e, false)
                                                                  : NULL;
            if (st)
                stage(&msgs, (cf_push_item){.topic = CF_TOPIC_STATS, .interim = true}, "stats", st);
        }
        publish_staged(e, &msgs);
        if (e->wal && e->cfg.snapshot_interval_ms > 0) {
            if (e->job)
                (void)engine_snapshot_finish(e);
            else if (mono >= e->snap_due && engine_snapshot_begin(e) != -EAGAIN)
                e->snap_due = mono + e->cfg.snapshot_interval_ms;
        }
        pthread_mutex_lock(&e->tick_mu);
    }
    pthread_mutex_unlock(&e->tick_mu);
    free(memo.windows);
    return NULL;
}
