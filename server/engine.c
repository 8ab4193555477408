/* engine: the life cycle of the processing core (engine.h is its API,
 * engine_int.h names the file of each of its jobs): creating it, starting
 * it (recovery or a fresh start, then the ticker), stopping it with a last
 * snapshot, freeing it. */
#include "engine.h"
#include "engine_test.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "builtin_panels.h"
#include "builtin_sql.h"
#include "cf_dedup.h"
#include "tables.h"
#include "cf_time.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "log.h"
#include "recent.h"
#include "shard.h"
#include "sql_exec.h"
#include "thread_role.h"
#include "wal.h"

cf_engine *cf_engine_new(const cf_config *cfg)
{
    cf_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->cfg = *cfg;
    e->n_shards = cfg->shards ? cfg->shards : 1;
    if (e->cfg.queue_capacity == 0)
        e->cfg.queue_capacity = 1;
    /* Bytes queued for the shards are bounded as well as messages: a full
     * budget answers 503 like a full queue (SPEC 3: memory stays bounded). */
    size_t body = cfg->max_body ? cfg->max_body : (4u << 20);
    e->inflight_cap = 16 * body * 3 > ((size_t)256 << 20) ? 16 * body * 3 : ((size_t)256 << 20);
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->tick_mu, NULL);
    pthread_mutex_init(&e->route_mu, NULL);
    pthread_mutex_init(&e->prep_mu, NULL);
    pthread_cond_init(&e->prep_cond, NULL);
    /* The ticker waits with CLOCK_MONOTONIC deadlines: the condition
     * variable must use that clock (the default is CLOCK_REALTIME). */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&e->tick_cond, &ca);
    pthread_condattr_destroy(&ca);
    atomic_init(&e->inflight, 0);
    atomic_init(&e->failed, 0);
    atomic_init(&e->ready, false);
    e->sent_wm = CF_TIME_NONE;
    e->mark_clock = CF_TIME_NONE;
    e->snapshot_lsn = -1;
    e->dd_chain_base = -1;
    cf_view_settings_of(cfg, &e->shard_vs);
    /* Without a data dir the dedup key only has to be secret; with one,
     * recovery replaces it by the directory's key. */
    if (getrandom(e->hashkey, sizeof e->hashkey, GRND_NONBLOCK) != (ssize_t)sizeof e->hashkey)
        cf_warn("getrandom failed: the dedup hash key is not secret");
    e->dedup = cf_dedup_new_keyed(cfg->dedup_ttl_ms > 0 ? cfg->dedup_ttl_ms : 1, cfg->max_keys,
                                  e->hashkey);
    e->wm = cf_watermark_new(cfg->out_of_orderness_ms, cfg->idle_timeout_ms);
    e->shards = calloc(e->n_shards, sizeof *e->shards);
    e->sql = cf_sqlrt_new(cfg->max_queries ? cfg->max_queries : 64, e->n_shards,
                          cfg->allowed_lateness_ms, cf_shard_max_keys(cfg));
    e->recent = cf_recent_new(cfg->retain_results, RECENT_MAX_BYTES);
    e->builtin_views = cf_builtin_views_json(cfg, e->n_shards, cf_shard_max_keys(cfg));
    if (!e->dedup || !e->wm || !e->shards || !e->recent || !e->sql || !e->builtin_views) {
        cf_engine_free(e);
        return NULL;
    }
    return e;
}

void cf_engine_set_push(cf_engine *e, cf_push *push) { e->push = push; }

bool cf_engine_ready(const cf_engine *e) { return atomic_load(&((cf_engine *)e)->ready); }

bool cf_engine_failed(const cf_engine *e) { return atomic_load(&((cf_engine *)e)->failed) != 0; }

/* user_traits and the dashboard panels (builtin_panels.h) go into the catalog and the
 * (not yet started) shards before recovery: a snapshot's view state and
 * the log's events then reach them as they reach a user's views. */
static int install_panels(cf_engine *e)
{
    sql_error err;
    int rc = cf_builtin_panels_install(e->sql, e->cfg.panels, &err);
    if (rc) {
        cf_error("built-in panel views do not plan (line %d, column %d: %s)", err.line, err.column,
                 err.message);
        return rc;
    }
    cf_sqlx_set *set = cf_sqlrt_current_set(e->sql);
    if (!set)
        return -ENOMEM;
    for (unsigned s = 0; s < e->n_shards; s++)
        cf_shard_install_sql(e->shards[s], cf_sqlx_set_ref(set));
    /* The router must know them too, or no shard would be sent their rows
     * (nothing else runs yet: the lock engine_route_views_locked expects is moot). */
    engine_route_views_locked(e, set);
    cf_sqlx_set_unref(set);
    return 0;
}

int cf_engine_start(cf_engine *e)
{
    if (e->started || e->stopping)
        return -EALREADY;
    /* The ring holds the configured events messages plus reserved slots. */
    size_t slots = e->cfg.queue_capacity + RESERVED_SLOTS;
    for (unsigned s = 0; s < e->n_shards; s++) {
        e->shards[s] = cf_shard_new(&e->cfg, s, slots, e->push, &e->inflight);
        if (!e->shards[s]) {
            cf_error("cannot create shard %u (out of memory or invalid window settings)", s);
            return -ENOMEM;
        }
    }
    int rc = install_panels(e);
    if (rc)
        return rc;
    if (e->cfg.data_dir[0]) {
        rc = engine_recover(e);
        if (!rc)
            rc = engine_adopt_settings(e);
    } else {
        cf_info("durability off (no --data-dir): events are not logged");
        rc = engine_key_shards(e);
        for (unsigned s = 0; s < e->n_shards && !rc; s++)
            rc = cf_shard_start(e->shards[s]);
        pthread_mutex_lock(&e->mu);
        e->started = true;
        pthread_mutex_unlock(&e->mu);
    }
    if (rc)
        return rc;
    /* W after recovery (or at start) from today's wall clock. */
    pthread_mutex_lock(&e->mu);
    int64_t mlsn = engine_maybe_mark_locked(e, wall_ms());
    e->accepting = mlsn >= 0;
    pthread_mutex_unlock(&e->mu);
    if (mlsn < 0)
        return -EIO;
    /* Before the ticker, which posts to it. Without it the ticker maps
     * the tables itself (engine_dedup_prep_post), as before. */
    if (engine_dedup_prep_start(e) < 0)
        cf_warn("no dedup table thread: the ticker maps the dedup tables");
    rc = pthread_create(&e->ticker, NULL, engine_ticker_main, e);
    if (rc)
        return -rc;
    e->ticker_started = true;
    cf_thread_role_name_thread(e->ticker, "cf-ticker");
    atomic_store(&e->ready, true);
    return 0;
}

void cf_engine_stop(cf_engine *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&e->mu);
    bool was = e->stopping;
    e->stopping = true;
    pthread_mutex_unlock(&e->mu);
    if (was)
        return;
    atomic_store(&e->ready, false);
    if (e->ticker_started) {
        pthread_mutex_lock(&e->tick_mu);
        e->tick_stop = true;
        pthread_cond_signal(&e->tick_cond);
        pthread_mutex_unlock(&e->tick_mu);
        pthread_join(e->ticker, NULL);
        e->ticker_started = false;
    }
    engine_dedup_prep_stop(e); /* after the ticker, which posts to it */
    /* A last snapshot makes the next start fast: the shards save their
     * state behind every queued message, then stop. */
    if (e->wal && e->started && e->recovered && e->cfg.snapshot_interval_ms > 0 &&
        !atomic_load(&e->failed)) {
        if (e->job)
            while (engine_snapshot_finish(e) == 0)
                engine_sleep_ms(1);
        int rc;
        while ((rc = engine_snapshot_begin(e)) == -EAGAIN)
            engine_sleep_ms(1);
        if (rc == 0)
            while (engine_snapshot_finish(e) == 0)
                engine_sleep_ms(1);
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        if (e->shards[s])
            cf_shard_stop(e->shards[s]);
    /* After the shards: every result they fired is stored before exit. */
    cf_history_close(e->history);
    e->history = NULL;
    cf_sink_stop(e->sink);    /* what is not sent waits in the backlog */
    e->sink = NULL;
}

void cf_engine_free(cf_engine *e)
{
    if (!e)
        return;
    cf_engine_stop(e);
    if (e->shards)
        for (unsigned s = 0; s < e->n_shards; s++)
            cf_shard_free(e->shards[s]);
    free(e->shards);
    engine_job_free(e, e->job);
    cf_history_close(e->history);
    cf_sink_stop(e->sink);
    if (e->wal)
        cf_wal_close(e->wal);
    cf_dedup_free(e->dedup);
    cf_buf_free(&e->dd_spare);
    cf_watermark_free(e->wm);
    cf_sqlrt_free(e->sql);
    cJSON_Delete(e->builtin_views);
    cf_tables_free(e->tables);
    cf_buf_free(&e->scratch);
    cf_recent_free(e->recent);
    cJSON_free(e->last_trending);
    cf_sqlx_set_unref(e->route_set);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->tick_mu);
    pthread_mutex_destroy(&e->route_mu);
    pthread_cond_destroy(&e->tick_cond);
    pthread_mutex_destroy(&e->prep_mu);
    pthread_cond_destroy(&e->prep_cond);
    free(e);
}

/* ---- test seams (engine_test.h) ---------------------------------------- */

void cf_engine_test_hold(cf_engine *e, bool hold)
{
    for (unsigned s = 0; s < e->n_shards; s++)
        if (e->shards[s])
            cf_shard_hold(e->shards[s], hold);
}

void cf_engine_test_dedup_spare(cf_engine *e)
{
    engine_dedup_spare(e);
    engine_dedup_prep_idle(e);
}

void cf_engine_test_dedup_prep_hold(cf_engine *e, bool hold) { engine_dedup_prep_hold(e, hold); }

uint64_t cf_engine_test_retired_freed_by_prep(cf_engine *e, bool *ret_pending)
{
    return engine_dedup_prep_retired_frees(e, ret_pending);
}

size_t cf_engine_test_dedup_prep_touch(cf_engine *e, void *p, size_t len)
{
    return engine_dedup_prep_touch(e, p, len);
}

bool cf_engine_test_dedup_prep_posted(cf_engine *e)
{
    pthread_mutex_lock(&e->prep_mu);
    bool posted = e->prep_bytes != 0;
    pthread_mutex_unlock(&e->prep_mu);
    return posted;
}

void cf_engine_test_dedup_tables(cf_engine *e, uint64_t *ret_prepared, uint64_t *ret_by_submit)
{
    pthread_mutex_lock(&e->mu);
    *ret_prepared = e->spare_prefaults;
    *ret_by_submit = e->submit_prefaults;
    pthread_mutex_unlock(&e->mu);
}
