/* recovery: a start with --data-dir loads the newest snapshot
 * (checkpoint.c), then replays the write-ahead log after it through the
 * sequencer's own path with the shards running, so replayed events are
 * judged exactly as they were live. A configured view setting that differs
 * from the one the data was made with starts that view empty (SPEC 10),
 * logged as a CF_WAL_SETTINGS record so later replays switch at the same
 * point. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cf_dedup.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "log.h"
#include "shard_msg.h"
#include "snapshot.h"
#include "wal.h"

/* Grows the events array and its offsets to ncap (+ 1) entries. */
static int grow_events(cf_event **evs, size_t **offs, size_t *cap, size_t ncap)
{
    cf_event *bigger = realloc(*evs, ncap * sizeof **evs);
    if (bigger)
        *evs = bigger;
    size_t *more = realloc(*offs, (ncap + 1) * sizeof **offs);
    if (more)
        *offs = more;
    if (!bigger || !more)
        return -ENOMEM;
    *cap = ncap;
    return 0;
}

/* Unpacks a WAL events record into *evs (capacity *cap events, grown by
 * realloc as needed; the caller owns and frees it; the events point into
 * payload) and event i's byte range into (*offs)[i] .. (*offs)[i + 1] (the
 * same capacity plus one), so the packed bytes go on as they are
 * (engine_prepare_packed). Sets *ret_n. 0, -EINVAL (malformed) or -ENOMEM. */
static int unpack_events(const uint8_t *payload, size_t len, cf_event **evs, size_t **offs,
                         size_t *cap, size_t *ret_n)
{
    if (!*offs && grow_events(evs, offs, cap, *cap ? *cap : 64) < 0)
        return -ENOMEM;
    size_t n = 0;
    cf_reader r;
    cf_reader_init(&r, payload, len);
    while (r.left > 0) {
        if (n == *cap && grow_events(evs, offs, cap, 2 * *cap) < 0)
            return -ENOMEM;
        (*offs)[n] = len - r.left;
        if (cf_event_unpack(&r, &(*evs)[n]) < 0)
            return -EINVAL;
        n++;
    }
    (*offs)[n] = len;
    *ret_n = n;
    return 0;
}

/* Applies one prepared events record through the live path (minus the
 * log). The shards are running, so a full queue only means waiting for
 * them. p may have been routed ahead (the pipeline below) for a view set a
 * later-replayed SQL record has since replaced: it is routed again for the
 * set in force, as a live request is. Frees p. */
static int apply_replayed(cf_engine *e, prepared *p, const cf_event *evs, size_t n)
{
    int rc;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (e->n_shards > 1 && p->set != e->route_set) {
            pthread_mutex_unlock(&e->mu);
            engine_prepared_free(e, p);
            rc = engine_prepare(e, evs, n, p);
            if (rc)
                return rc;
            continue;
        }
        if (engine_has_room_locked(e, p)) {
            size_t accepted = 0;
            int64_t lsn = engine_apply_locked(e, p, evs, NULL, true, &accepted);
            pthread_mutex_unlock(&e->mu);
            rc = lsn < 0 ? (int)lsn : 0;
            break;
        }
        pthread_mutex_unlock(&e->mu);
        engine_sleep_ms(1);
    }
    engine_prepared_free(e, p);
    return rc;
}

static int replay_watermark(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, payload, len);
    int64_t w = 0, c = 0;
    cf_get_i64(&r, &w);
    if (!cf_get_i64(&r, &c))
        return -EINVAL;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (engine_all_have_room_locked(e)) {
            /* The very values the live run sent: W is restored, not
             * recomputed from today's wall clock. */
            cf_watermark_restore(e->wm, cf_watermark_max_ts(e->wm), w);
            int64_t rc = engine_send_marker_locked(e, w, c, false);
            pthread_mutex_unlock(&e->mu);
            return rc < 0 ? (int)rc : 0;
        }
        pthread_mutex_unlock(&e->mu);
        engine_sleep_ms(1);
    }
}

/* Switches the shards to the view settings vs at this point of the event
 * order: the views whose settings differ start empty (CF_MSG_RESET to every
 * shard, waiting for queue room like a replayed marker). Returns the changed
 * views, or -EIO. */
static int switch_settings(cf_engine *e, const cf_view_settings *vs)
{
    unsigned views = cf_view_settings_diff(&e->shard_vs, vs);
    if (views) {
        for (;;) {
            pthread_mutex_lock(&e->mu);
            if (engine_all_have_room_locked(e))
                break;
            pthread_mutex_unlock(&e->mu);
            engine_sleep_ms(1);
        }
        for (unsigned s = 0; s < e->n_shards; s++) {
            cf_msg *m = cf_msg_reset_new(views, vs);
            if (!m) {
                /* The shards would diverge from the log: stop like a WAL
                 * error. */
                atomic_store(&e->failed, 1);
                pthread_mutex_unlock(&e->mu);
                cf_error("out of memory switching view settings");
                return -EIO;
            }
            engine_enqueue_locked(e, s, m);
        }
        e->shard_vs = *vs;
        pthread_mutex_unlock(&e->mu);
    }
    e->vs_known = true;
    return (int)views;
}

static int replay_settings(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, payload, len);
    cf_view_settings vs;
    if (!engine_get_settings(&r, &vs))
        return -EINVAL;
    int rc = switch_settings(e, &vs);
    return rc < 0 ? rc : 0;
}

/* Names the views in a CF_VIEW_* mask, for the log. */
static void views_text(unsigned views, const cf_view_settings *was, const cf_view_settings *now,
                       char *out, size_t cap)
{
    int n = snprintf(out, cap, "%s", "");
    if (views & CF_VIEW_TUMBLING)
        n += snprintf(out + n, cap - (size_t)n, " tumbling (--window %" PRId64 " -> %" PRId64
                      " ms)", was->window_ms, now->window_ms);
    if (views & CF_VIEW_SLIDING && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " sliding (--slide-size %" PRId64 " -> %" PRId64
                      " ms, --slide %" PRId64 " -> %" PRId64 " ms)", was->slide_size_ms,
                      now->slide_size_ms, was->slide_ms, now->slide_ms);
    if (views & CF_VIEW_SESSIONS && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " sessions (--session-gap %" PRId64
                      " -> %" PRId64 " ms)", was->session_gap_ms, now->session_gap_ms);
    if (views & CF_VIEW_TRENDING && (size_t)n < cap)
        n += snprintf(out + n, cap - (size_t)n, " trending (--half-life %" PRId64
                      " -> %" PRId64 " ms)", was->half_life_ms, now->half_life_ms);
    if (views & (CF_VIEW_TUMBLING | CF_VIEW_SLIDING | CF_VIEW_SESSIONS) &&
        was->allowed_lateness_ms != now->allowed_lateness_ms && (size_t)n < cap)
        snprintf(out + n, cap - (size_t)n, " (--allowed-lateness %" PRId64 " -> %" PRId64 " ms)",
                 was->allowed_lateness_ms, now->allowed_lateness_ms);
}

/* After replay (SPEC 10): when the configured view settings differ from
 * those the data was made with, the changed views start empty from here,
 * which is logged as a CF_WAL_SETTINGS record (so a later replay switches at
 * the same point, before or after a snapshot alike). A log that never said
 * its settings gets the record too. 0 or -EIO. */
int engine_adopt_settings(cf_engine *e)
{
    cf_view_settings want, was = e->shard_vs;
    cf_view_settings_of(&e->cfg, &want);
    unsigned views = cf_view_settings_diff(&was, &want);
    if (views == 0 && e->vs_known)
        return 0;
    int rc = switch_settings(e, &want);
    if (rc < 0)
        return rc;
    if (views) {
        char text[512];
        views_text(views, &was, &want, text, sizeof text);
        cf_warn("settings changed since the data was written; these views start empty now "
                "(other views and counters carry on):%s", text);
    }
    cf_buf b = {0};
    engine_put_settings(&b, &want);
    if (b.oom) {
        cf_buf_free(&b);
        return -EIO;
    }
    pthread_mutex_lock(&e->mu);
    int64_t lsn = cf_wal_append(e->wal, CF_WAL_SETTINGS, b.data, b.len);
    if (lsn < 0)
        (void)engine_wal_fail_locked(e, lsn);
    pthread_mutex_unlock(&e->mu);
    cf_buf_free(&b);
    if (lsn < 0 || cf_wal_commit(e->wal, lsn) < 0) {
        atomic_store(&e->failed, 1);
        return -EIO;
    }
    return 0;
}

static int replay_counters(cf_engine *e, const uint8_t *payload, size_t len)
{
    cf_reader r;
    cf_reader_init(&r, payload, len);
    uint64_t dups = 0, rejected = 0;
    cf_get_u64(&r, &dups);
    if (!cf_get_u64(&r, &rejected))
        return -EINVAL;
    pthread_mutex_lock(&e->mu);
    atomic_fetch_add(&e->duplicates, dups);
    atomic_fetch_add(&e->rejected, rejected);
    pthread_mutex_unlock(&e->mu);
    return 0;
}

/* Replays one record that is not an events record (those go through
 * apply_replayed). */
static int replay_other(cf_engine *e, int64_t lsn, uint8_t type, const uint8_t *payload,
                        size_t len)
{
    int rc = 0;
    if (type == CF_WAL_WATERMARK)
        rc = replay_watermark(e, payload, len);
    else if (type == CF_WAL_COUNTERS)
        rc = replay_counters(e, payload, len);
    else if (type == CF_WAL_SETTINGS)
        rc = replay_settings(e, payload, len);
    else if (type == CF_WAL_SQL)
        rc = engine_replay_sql(e, payload, len);
    else if (type == CF_WAL_ROWS)
        rc = engine_replay_rows(e, payload, len);
    else if (type == CF_WAL_TABLE)
        rc = engine_replay_table(e, payload, len);
    else
        cf_warn("recovery: skipping WAL record %" PRId64 " of unknown type %u", lsn, type);
    if (rc == -EINVAL) {
        cf_warn("recovery: skipping malformed WAL record %" PRId64, lsn);
        rc = 0;
    }
    return rc;
}

/* ---- the replay pipeline -------------------------------------------------
 * Replay was one thread reading, decoding, routing and packing every event
 * before the sequencer step, while the shards waited (issue 15: the
 * recovering thread was the busiest of the process). Now a decoder thread
 * reads the log (cf_wal_replay), unpacks each events record and prepares it
 * (routing, packing: the work a live request does outside the lock) up to
 * RP_DEPTH records ahead; the recovering thread applies the records strictly
 * in log order under the sequencer lock, so dedup, arrival numbers, W and C
 * come out exactly as before. Other records are applied in their place. */

#define RP_DEPTH 32

/* A record's buffers: the payload copy and its unpacked events. They go
 * back to the decoder once applied (rp_pipe.spare) instead of being freed:
 * an events array of 1000 events is over 200 KB, and a malloc/free pair of
 * that size per record, freed on another thread than it was made on, cost
 * page faults and TLB shootdowns on every core (issue 15's profile). */
typedef struct rp_bufs {
    uint8_t *payload;
    size_t pcap;
    cf_event *evs;
    size_t *offs;           /* each event's bytes in payload (unpack_events) */
    size_t ecap;            /* evs' capacity; offs holds one more */
} rp_bufs;

static void rp_bufs_free(rp_bufs *b)
{
    free(b->payload);
    free(b->evs);
    free(b->offs);
}

typedef struct rp_item {
    int64_t lsn;
    uint8_t type;
    size_t len;             /* payload bytes */
    rp_bufs b;              /* b.payload: a copy (the log's buffer lives only
                             * per segment); b.evs: events point into it */
    int rc;                 /* events: 0, or the decode/prepare error */
    size_t n;
    prepared p;
} rp_item;

typedef struct rp_pipe {
    cf_engine *e;
    int64_t after;
    pthread_mutex_t mu;
    pthread_cond_t cv;      /* an item was added, taken, or the pipe ended */
    rp_item ring[RP_DEPTH];
    size_t head, count;     /* (mu) */
    rp_bufs spare[RP_DEPTH + 2];    /* (mu) buffers of applied records */
    size_t nspare;          /* (mu) */
    bool done;              /* (mu) the decoder finished: result holds its outcome */
    bool stop;              /* (mu) the applier failed: the decoder stops */
    int64_t result;         /* cf_wal_replay's return */
} rp_pipe;

/* Hands an applied record's buffers back for reuse (frees them when the
 * spares are full). Takes pp->mu. */
static void rp_give_back(rp_pipe *pp, rp_bufs *b)
{
    pthread_mutex_lock(&pp->mu);
    if (pp->nspare < sizeof pp->spare / sizeof pp->spare[0]) {
        pp->spare[pp->nspare++] = *b;
    } else {
        rp_bufs_free(b);
    }
    pthread_mutex_unlock(&pp->mu);
    memset(b, 0, sizeof *b);
}

static int rp_decode(void *ctx, int64_t lsn, uint8_t type, const uint8_t *payload, size_t len)
{
    rp_pipe *pp = ctx;
    rp_item it;
    memset(&it, 0, sizeof it);
    it.lsn = lsn;
    it.type = type;
    it.len = len;
    pthread_mutex_lock(&pp->mu);
    if (pp->nspare > 0)
        it.b = pp->spare[--pp->nspare];
    pthread_mutex_unlock(&pp->mu);
    if (it.b.pcap < len || !it.b.payload) {
        uint8_t *bigger = realloc(it.b.payload, len ? len : 1);
        if (!bigger) {
            rp_bufs_free(&it.b);
            return -ENOMEM;
        }
        it.b.payload = bigger;
        it.b.pcap = len ? len : 1;
    }
    if (len)
        memcpy(it.b.payload, payload, len);
    if (type == CF_WAL_EVENTS) {
        it.rc = unpack_events(it.b.payload, len, &it.b.evs, &it.b.offs, &it.b.ecap, &it.n);
        if (it.rc == 0)
            it.rc = engine_prepare_packed(pp->e, it.b.evs, it.n, it.b.payload, it.b.offs,
                                          &it.p);
        if (it.rc == -ENOMEM) {
            rp_bufs_free(&it.b);
            return -ENOMEM;
        }
    }
    pthread_mutex_lock(&pp->mu);
    while (pp->count == RP_DEPTH && !pp->stop)
        pthread_cond_wait(&pp->cv, &pp->mu);
    if (pp->stop) {
        pthread_mutex_unlock(&pp->mu);
        if (type == CF_WAL_EVENTS && it.rc == 0)
            engine_prepared_free(pp->e, &it.p);
        rp_bufs_free(&it.b);
        return -ECANCELED;
    }
    pp->ring[(pp->head + pp->count) % RP_DEPTH] = it;
    pp->count++;
    pthread_cond_signal(&pp->cv);
    pthread_mutex_unlock(&pp->mu);
    return 0;
}

static void *rp_decoder_main(void *arg)
{
    rp_pipe *pp = arg;
    (void)pthread_setname_np(pthread_self(), "cf-replay-dec");   /* per-thread figures */
    int64_t n = cf_wal_replay(pp->e->wal, pp->after, rp_decode, pp);
    pthread_mutex_lock(&pp->mu);
    pp->result = n;
    pp->done = true;
    pthread_cond_signal(&pp->cv);
    pthread_mutex_unlock(&pp->mu);
    return NULL;
}

static int rp_apply(cf_engine *e, rp_item *it)
{
    int rc;
    if (it->type != CF_WAL_EVENTS)
        rc = replay_other(e, it->lsn, it->type, it->b.payload, it->len);
    else if (it->rc == 0)
        rc = apply_replayed(e, &it->p, it->b.evs, it->n);
    else
        rc = it->rc;
    if (rc == -EINVAL) {
        cf_warn("recovery: skipping malformed WAL record %" PRId64, it->lsn);
        rc = 0;
    }
    return rc;
}

/* cf_wal_replay's contract: the number of records replayed, or a negative
 * errno (the first failure, the decoder's or the applier's). */
static int64_t replay_pipelined(cf_engine *e, int64_t after)
{
    rp_pipe *pp = calloc(1, sizeof *pp);
    if (!pp)
        return -ENOMEM;
    pp->e = e;
    pp->after = after;
    pthread_mutex_init(&pp->mu, NULL);
    pthread_cond_init(&pp->cv, NULL);
    pthread_t t;
    int64_t result;
    if (pthread_create(&t, NULL, rp_decoder_main, pp) != 0) {
        result = -EAGAIN;
        goto out;
    }
    int failed = 0;
    pthread_mutex_lock(&pp->mu);
    for (;;) {
        while (pp->count == 0 && !pp->done)
            pthread_cond_wait(&pp->cv, &pp->mu);
        if (pp->count == 0)
            break;
        rp_item it = pp->ring[pp->head];
        pp->head = (pp->head + 1) % RP_DEPTH;
        pp->count--;
        pthread_cond_signal(&pp->cv);
        pthread_mutex_unlock(&pp->mu);
        int rc = failed ? 0 : rp_apply(e, &it);
        if (failed && it.type == CF_WAL_EVENTS && it.rc == 0)
            engine_prepared_free(e, &it.p);    /* drained after a failure: only freed */
        rp_give_back(pp, &it.b);
        pthread_mutex_lock(&pp->mu);
        if (rc < 0 && !failed) {
            failed = rc;
            pp->stop = true;
            pthread_cond_signal(&pp->cv);
        }
    }
    pthread_mutex_unlock(&pp->mu);
    pthread_join(t, NULL);
    result = failed ? failed : pp->result;
    for (size_t i = 0; i < pp->nspare; i++)
        rp_bufs_free(&pp->spare[i]);
out:
    pthread_cond_destroy(&pp->cv);
    pthread_mutex_destroy(&pp->mu);
    free(pp);
    return result;
}
/* Opens history.db in the data directory (created by the WAL), declares
 * the built-in views and attaches the writer to every shard. During replay
 * an offer waits for room rather than overflow: nothing is ingested yet. */
static int history_open(cf_engine *e, int64_t *skip)
{
    char path[sizeof e->cfg.data_dir + 16];
    snprintf(path, sizeof path, "%s/history.db", e->cfg.data_dir);
    char err[512] = "";
    e->history = cf_history_open(path, e->cfg.history_retention_ms, e->cfg.history_queue_bytes, err,
                                 sizeof err);
    if (!e->history) {
        cf_error("history: %s", err);
        return -EIO;
    }
    if (cf_history_register_view(e->history, "tumbling", "count", "unique_users") < 0 ||
        cf_history_register_view(e->history, "sliding", "count", "unique_users") < 0 ||
        cf_history_register_view(e->history, "sessions", "page_views", NULL) < 0) {
        cf_error("history: cannot declare the built-in views in %s", path);
        return -EIO;
    }
    if (e->cfg.sink[0]) {
        e->sink = cf_sink_start(e->cfg.sink, e->cfg.data_dir, e->cfg.sink_backlog_bytes, err,
                                sizeof err);
        if (!e->sink) {
            cf_error("sink: %s", err);
            return -EIO;
        }
        cf_history_set_written_fn(e->history, cf_sink_append, e->sink);
    }
    /* Test seam (integration tests): a writer that lags behind. */
    const char *stall = getenv("CLICKFLOW_TEST_HISTORY_STALL_MS");
    if (stall)
        cf_history_test_stall(e->history, atoi(stall));
    /* Benchmark seam (tests/bench/history_bench.py): the v1 row-scan
     * rollups, to compare with the pre-aggregates in the same run. */
    if (getenv("CLICKFLOW_BENCH_ROLLUP_SCAN"))
        cf_history_set_rollup_scan(e->history, true);
    cf_history_set_blocking(e->history, true);
    /* Results the replay would fire again that history.db holds already
     * are not offered again (cf_history_positions): their sketches are not
     * saved and the writer does not look them up. Without positions every
     * result is offered, as before, and INSERT OR IGNORE keeps one. */
    (void)cf_history_positions(e->history, e->n_shards, e->hashkey, skip);
    int rc = cf_history_start(e->history);
    if (rc)
        return rc;
    for (unsigned s = 0; s < e->n_shards; s++) {
        cf_shard_set_history(e->shards[s], e->history);
        cf_shard_set_history_skip(e->shards[s], skip[s]);
    }
    cf_info("history: %s (retention %" PRId64 " ms, 0 = forever)", path, e->cfg.history_retention_ms);
    return 0;
}

/* The dedup rebuild's id tables (cf_dedup_set_table_alloc): tens of MB
 * probed at random once per replayed event, so in 4 KiB pages nearly every
 * probe missed the TLB as well as the cache (issue 15: the prefetch of the
 * next ids' slots was the recovering thread's top symbol). Blocks of 2 MiB
 * and more are aligned to 2 MiB and marked for transparent huge pages (THP
 * "madvise" mode, Debian's default); the kernel may still give 4 KiB pages.
 * free() frees them. */
#define HUGE_PAGE ((size_t)2 << 20)
static void *huge_table_alloc(size_t bytes)
{
    if (bytes < HUGE_PAGE)
        return malloc(bytes);
    size_t n = (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
    void *p = aligned_alloc(HUGE_PAGE, n);
#ifdef MADV_HUGEPAGE
    if (p)
        (void)madvise(p, n, MADV_HUGEPAGE);
#endif
    return p;
}

/* skip: the shards' replay positions (history_open), INT64_MIN each. */
static int recover(cf_engine *e, int64_t *skip)
{
    char err[256] = "";
    e->wal = cf_wal_open(e->cfg.data_dir, e->cfg.fsync,
                         e->cfg.segment_bytes ? e->cfg.segment_bytes : ((size_t)64 << 20),
                         err, sizeof err);
    if (!e->wal) {
        cf_error("cannot open the write-ahead log in %s: %s", e->cfg.data_dir, err);
        return -EIO;
    }
    int64_t t0 = mono_ms();
    /* The dedup hash key of this data directory (made at its first start),
     * so every restart hashes ids alike. History's replay positions are
     * kept for this key (history_open). */
    int krc = cf_hashkey_load(e->cfg.data_dir, e->hashkey);
    if (krc < 0) {
        cf_error("cannot read or create the hash key in %s: %s", e->cfg.data_dir,
                 strerror(-krc));
        return krc;
    }
    if (e->cfg.history) {
        int hrc = history_open(e, skip);
        if (hrc)
            return hrc;
    }
    cf_dedup *fresh = cf_dedup_new_keyed(e->cfg.dedup_ttl_ms > 0 ? e->cfg.dedup_ttl_ms : 1,
                                         e->cfg.max_keys, e->hashkey);
    if (!fresh)
        return -ENOMEM;
    cf_dedup_free(e->dedup);
    e->dedup = fresh;
    krc = engine_key_shards(e);
    if (krc < 0)
        return krc;
    cf_buf payload = {0};
    int64_t lsn = 0;
    int rc = cf_snapshot_load(e->cfg.data_dir, &lsn, &payload);
    if (rc == 0) {
        rc = engine_load_snapshot(e, &payload);
        if (rc == 0) {
            e->snapshot_lsn = lsn;
            cf_info("recovery: loaded snapshot at LSN %" PRId64, lsn);
        }
    } else if (rc == -ENOENT) {
        lsn = 0;
        rc = 0;
    } else {
        cf_error("recovery: cannot load a snapshot from %s: %s", e->cfg.data_dir,
                 strerror(-rc));
    }
    cf_buf_free(&payload);
    if (rc)
        return rc;
    /* Shards run during replay, so replayed events flow through them while
     * the log is read. */
    for (unsigned s = 0; s < e->n_shards; s++) {
        rc = cf_shard_start(e->shards[s]);
        if (rc)
            return rc;
    }
    pthread_mutex_lock(&e->mu);
    e->started = true;
    /* The replay checks every id again: the dedup table is rebuilt without
     * the per-check expiry work and built once at the end (cf_dedup.h), to
     * the same ids and expiries. Without memory for that, the checks just
     * go the normal way. */
    cf_dedup_set_table_alloc(e->dedup, huge_table_alloc);  /* the snapshot's table too */
    (void)cf_dedup_rebuild_begin(e->dedup);
    pthread_mutex_unlock(&e->mu);
    int64_t n = replay_pipelined(e, lsn);
    pthread_mutex_lock(&e->mu);
    if (cf_dedup_rebuild_end(e->dedup) < 0)
        atomic_fetch_add(&e->dedup_errors, 1);
    pthread_mutex_unlock(&e->mu);
    if (n < 0) {
        cf_error("recovery: replaying the write-ahead log failed: %s", strerror((int)-n));
        return (int)n;
    }
    /* Only a recovery that replayed the whole log may be snapshotted: a
     * snapshot of a partial replay would hide the missing records and count
     * the replayed ones twice once the log is repaired. */
    pthread_mutex_lock(&e->mu);
    e->recovered = true;
    pthread_mutex_unlock(&e->mu);
    if (e->history) {
        cf_history_set_blocking(e->history, false);
        /* The shards still work through the replay's queued messages, whose
         * results fire at watermarks up to the one the log ended at; new
         * events are stamped at or above it. A result fired below it and
         * below a position was stored; one at or above it is offered, so
         * even if the log lost a tail (power loss, fsync off) whose results
         * reached history.db, a result of a new event is never skipped. */
        pthread_mutex_lock(&e->mu);
        int64_t w_end = cf_watermark_of_events(e->wm, e->sent_wm);
        pthread_mutex_unlock(&e->mu);
        for (unsigned s = 0; s < e->n_shards; s++)
            cf_shard_set_history_skip(e->shards[s], skip[s] < w_end ? skip[s] : w_end);
    }
    int64_t took = mono_ms() - t0;
    atomic_store(&e->replayed, n);
    atomic_store(&e->recovery_ms, took);
    cf_info("recovery: %" PRId64 " WAL records replayed after LSN %" PRId64 " in %" PRId64
            " ms; %" PRIu64 " events accepted so far", n, lsn, took,
            (uint64_t)atomic_load(&e->accepted));
    return 0;
}

int engine_recover(cf_engine *e)
{
    int64_t *skip = malloc(e->n_shards * sizeof *skip);
    if (!skip)
        return -ENOMEM;
    for (unsigned s = 0; s < e->n_shards; s++)
        skip[s] = INT64_MIN;
    int rc = recover(e, skip);
    free(skip);
    return rc;
}
