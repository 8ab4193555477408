/* engine_int: what the engine's files share, private to them (the public
 * API is engine.h). The engine is one object whose jobs live in one file
 * each:
 *
 *   engine.c      life cycle: new, start (recovery, then the ticker), stop, free
 *   sequencer.c   submit: route + pack, dedup, clock, WAL append, enqueue
 *   recovery.c    replay of the write-ahead log, settings changes (SPEC 10)
 *   checkpoint.c  snapshots: barrier, collect, write; loading one at start
 *                 (the payload is written and read there only)
 *   query.c       query fan-out to the shards, merges and their JSON
 *   stats.c       stats JSON and /metrics, from one table (stats_table.h)
 *   ticker.c      the 100 ms clock: idle watermark, pushes, snapshots
 *   dedup_prep.c  the dedup table's next table, mapped on a thread of its own
 *
 * The pipeline (docs/DESIGN.md):
 *
 *   request thread                     shard threads (keyBy)
 *   ---------------                    ---------------------
 *   route + pack (no lock)
 *   lock sequencer:                    pop message
 *     room in every target queue?        EVENTS: winop x2 + trending (page
 *     dedup + clock + arrival seq          role), sessions (user role),
 *     stamp W, C before each event         after advancing to the event's W
 *     WAL append (memcpy)                MARK: advance operators, fire
 *     enqueue one message per shard      BARRIER: save state for a snapshot
 *     W moved? WAL + marker to all     answer queries posted on the
 *   unlock; wait for WAL commit          control list once caught up
 *
 * Everything that decides what an event means (duplicate or not, its
 * arrival number, the watermark it is judged against) happens in the one
 * sequencer critical section, in one total order that the WAL records, so a
 * replay through the same path reproduces the same results. The watermark
 * moves per event (SPEC 1): each event carries the W the events before it
 * left, computed from logged values only, so how a client splits events
 * into requests changes nothing. */
#ifndef CF_ENGINE_INT_H
#define CF_ENGINE_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "cf_dedup.h"
#include "cf_event.h"
#include "cf_hash.h"
#include "cf_watermark.h"
#include "clock.h"
#include "config.h"
#include "engine.h"
#include "history.h"
#include "push.h"
#include "recent.h"
#include "shard.h"
#include "sink_pg.h"
#include "snapshot.h"
#include "sql_runtime.h"
#include "wal.h"

/* Queue slots beyond --queue-capacity kept for watermark markers and
 * snapshot barriers, so a queue full of events never starves them. */
#define RESERVED_SLOTS 2
#define RATE_SAMPLES 11                 /* 1 s of 100 ms ticks, plus one */
/* Bytes of packed events kept for GET /api/v1/streams/clicks/events, beside
 * the --retain-results event count (whichever bound is hit first). */
#define RECENT_MAX_BYTES ((size_t)128 << 20)

/* Per-event routing and message offsets, computed outside the lock. */
typedef struct route {
    uint32_t page_shard;
    uint32_t user_shard;
    size_t page_off;        /* offset of the entry in msgs[page_shard] */
    size_t user_off;        /* offset in msgs[user_shard], or SIZE_MAX if the same entry */
    size_t pack_off;        /* offset of the packed event in `packed` */
    size_t pack_len;
    uint64_t id_hash;       /* cf_dedup_hash(event_id), hashed before the lock */
    bool bot;               /* is_bot (SPEC 15): logged and counted, sent to no shard */
} route;

/* Per event and shard: the user views it is routed there for (sql_route.h),
 * and the offset of its entry in msgs[s] when the shard gets it only for
 * them (neither its page nor its user shard; else SIZE_MAX). */
#define VMASK(p, i, s, n) ((p)->vmask[(size_t)(i) * (n) + (s)])
#define XOFF(p, i, s, n) ((p)->xoff[(size_t)(i) * (n) + (s)])

/* A request prepared for the sequencer. */
typedef struct prepared {
    size_t n;
    route *rt;
    cf_msg **msgs;          /* per shard, NULL when no event goes there */
    uint32_t *accepted;     /* per shard: entries not duplicates */
    cf_buf packed;          /* the events, cf_event_pack'ed back to back (WAL payload) */
    size_t bytes;           /* message bytes, for the in-flight budget */
    cf_sqlx_set *set;       /* the user views it was routed for (a reference, or NULL) */
    uint64_t *vmask;        /* routed: VMASK */
    size_t *xoff;           /* routed: XOFF */
    cf_recent_chunk *chunk; /* for the recent-events ring, allocated before the lock */
    cf_recent_chunk *dropped[4]; /* the ring's chunks it dropped: released after the lock */
    size_t ndropped;
} prepared;

struct cf_engine {
    cf_config cfg;
    cf_push *push;
    cf_sqlrt *sql;                  /* SQL catalog and views; changed under mu only */
    cJSON *builtin_views;           /* GET /api/v1/views items of the built-ins (builtin_sql.h) */
    struct cf_tables *tables;       /* SQL tables' rows (tables.h); under mu, made on first use */
    atomic_bool sql_runs;           /* user views read clicks (mu writes) */
    /* The view set in force, which requests are routed for (sql_route.h):
     * written under mu and route_mu, read under either. */
    pthread_mutex_t route_mu;
    cf_sqlx_set *route_set;
    bool route_reads_clicks;        /* cf_sqlx_set_reads(route_set, "clicks"), kept with it */
    unsigned n_shards;
    cf_shard **shards;
    atomic_size_t inflight;         /* bytes in queued messages */
    size_t inflight_cap;

    /* Sequencer: everything below up to the counters is guarded by mu. */
    pthread_mutex_t mu;
    cf_dedup *dedup;
    uint8_t hashkey[CF_HASHKEY_LEN]; /* keys the dedup hash (per data dir) */
    /* View settings the shards' operators run (those the log was made with
     * during replay; the configured ones once started), and whether the log
     * or snapshot said what they were. */
    cf_view_settings shard_vs;
    bool vs_known;
    cf_watermark *wm;
    int64_t sent_wm;                /* W of the last marker sent to the shards */
    int64_t mark_clock;             /* C carried by that marker */
    uint64_t next_seq;              /* global arrival number of accepted events */
    cf_buf scratch;                 /* WAL payloads */
    bool stopping;
    bool started;                   /* shard threads run (queries work) */
    bool accepting;                 /* recovery done: submissions allowed */
    bool recovered;                 /* the whole log was replayed: snapshots allowed */
    cf_snapjob *job;                /* snapshot in progress (ticker-owned) */
    int64_t snap_due;               /* wall time of the next snapshot */

    _Atomic uint64_t accepted, duplicates, rejected, dedup_errors;
    _Atomic uint64_t bots;          /* accepted events with is_bot (SPEC 15), a part of accepted */
    cf_recent *recent;              /* newest accepted events (guarded by mu) */
    atomic_int failed;              /* a WAL write/fsync failed: -EIO from now on */
    /* Submits push into the shard queues under mu but wake sleeping shards
     * after releasing it (engine_enqueue_locked, wake_deferred): a wake-up under
     * the lock let the woken shard preempt the submitter on a busy 2-core
     * machine, and every other submit then waited 2-25 ms for the lock
     * (issue 15, T1). defer_wakes is set under mu by the submit; wake_due
     * has bit s set for shard s (s < 64) with a message not yet woken for. */
    bool defer_wakes;
    /* The new dedup table of the doubling under way whose pages are mapped
     * already (by cf-dedup-prep, or by a submit's engine_prefault), so only
     * the first submit after a doubling without one maps them. Guarded by mu. */
    void *dedup_prefaulted;
    uint64_t spare_prefaults;       /* tables mapped ahead (dedup_prep.c) and handed over */
    uint64_t submit_prefaults;      /* tables a submit mapped (not the ticker) */
    uint64_t retired_frees;         /* doublings' old tables the ticker took */
    _Atomic uint64_t wake_due;
    atomic_bool ready;
    _Atomic uint64_t rate_x1000;    /* events/s over the last second, x1000 */

    cf_wal *wal;                    /* NULL: durability off */
    cf_history *history;            /* NULL: history off (or no data dir) */
    cf_sink *sink;                  /* NULL: no --sink */
    _Atomic int64_t recovery_ms;    /* atomics: metrics may be read during recovery */
    _Atomic int64_t replayed;
    int64_t snapshot_lsn;
    /* Incremental dedup snapshots (checkpoint.c; the ticker's, and the
     * loader's): the LSN of the whole save the newest snapshot's chain of
     * deltas starts at (-1: that snapshot is whole), the deltas since and
     * their bytes, the whole save's bytes and ids, whether the journal runs from
     * the newest snapshot's cut (false after a failed snapshot: the next
     * is whole) and the last journal's size (the next spare's). */
    int64_t dd_chain_base;
    unsigned dd_chain_len;
    size_t dd_chain_bytes, dd_base_bytes, dd_base_ids, dd_last_ops;
    bool dd_delta_ok;
    cf_buf dd_spare;    /* the journal's next buffer, kept while a begin waits for room */
    _Atomic uint64_t snapshots, snapshot_failures;

    /* Ticker. */
    pthread_t ticker;
    bool ticker_started;
    pthread_mutex_t tick_mu;
    pthread_cond_t tick_cond;
    bool tick_stop;
    uint64_t rate_acc[RATE_SAMPLES];
    int64_t rate_t[RATE_SAMPLES];
    size_t rate_i;
    char *last_trending;            /* last trending push, to publish on change */
    bool dedup_bound_logged;        /* the first dedup eviction was logged (ticker) */

    /* The dedup table's next table, mapped off the ticker (dedup_prep.c).
     * prep_bytes/prep_cap: the table posted (0: idle); guarded by prep_mu. */
    pthread_t prep;
    bool prep_started;
    pthread_mutex_t prep_mu;
    pthread_cond_t prep_cond;
    size_t prep_bytes;
    uint32_t prep_cap;
    bool prep_stop;
    bool prep_classed;              /* the thread took its class: start returns */
    bool prep_hold;                 /* test seam: posted tables wait */
    /* A finished doubling's old table the ticker took (engine_dedup_spare)
     * for the thread to free, and how many it freed; guarded by prep_mu. */
    void *prep_retired;
    size_t prep_retired_len;
    uint64_t prep_retired_frees;
};

static inline uint32_t engine_shard_of(const cf_engine *e, const char *key, size_t len)
{
    return cf_hash_shard(cf_hash64(key, len, 0), e->n_shards);
}

/* Whether the engine takes a change now (called with mu held): 0, or
 * -ESHUTDOWN (stopping), -EIO (the log failed: nothing is acknowledged
 * again), -EAGAIN (still recovering: the log is replayed first). */
static inline int engine_gate_locked(cf_engine *e)
{
    if (e->stopping)
        return -ESHUTDOWN;
    if (atomic_load(&e->failed))
        return -EIO;
    if (!e->accepting)
        return -EAGAIN;
    return 0;
}

static inline void engine_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Functions one engine file defines and another calls. They keep the names
 * they had as static functions of one engine.c (open branches port by
 * name); this header is included by the engine's files only. */

/* sequencer.c */
void engine_prepared_free(cf_engine *e, prepared *p);
int engine_prepare(cf_engine *e, const cf_event *evs, size_t n, prepared *p);
/* engine_prepare of events unpacked back to back from src (a replayed
 * events record): event i's packed bytes are src[offs[i] .. offs[i + 1]),
 * and they are taken as they are instead of packed again (the same bytes:
 * cf_event_pack of cf_event_unpack's event). src NULL: engine_prepare. */
int engine_prepare_packed(cf_engine *e, const cf_event *evs, size_t n, const uint8_t *src,
                          const size_t *offs, prepared *p);
bool engine_has_room_locked(cf_engine *e, const prepared *p);
bool engine_all_have_room_locked(cf_engine *e);
void engine_enqueue_locked(cf_engine *e, unsigned s, cf_msg *m);
int engine_wal_fail_locked(cf_engine *e, int64_t rc);
int engine_key_shards(cf_engine *e);
int64_t engine_dedup_clock_locked(const cf_engine *e);
int64_t engine_log_counters_locked(cf_engine *e, uint64_t dups, uint64_t rejected);
int64_t engine_send_marker_locked(cf_engine *e, int64_t w, int64_t c, bool log);
int64_t engine_maybe_mark_locked(cf_engine *e, int64_t now);
int engine_wait_committed(cf_engine *e, int64_t lsn, int64_t mlsn, int64_t seen);
int64_t engine_apply_locked(cf_engine *e, prepared *p, const cf_event *evs, uint8_t *is_dup,
                     bool replay, size_t *ret_accepted);

/* recovery.c */
int engine_adopt_settings(cf_engine *e);
int engine_recover(cf_engine *e);

/* checkpoint.c */
void engine_put_settings(cf_buf *b, const cf_view_settings *vs);
bool engine_get_settings(cf_reader *r, cf_view_settings *vs);
int engine_load_snapshot(cf_engine *e, const cf_buf *payload);
void engine_job_free(cf_engine *e, cf_snapjob *job);
int engine_snapshot_begin(cf_engine *e);
int engine_snapshot_finish(cf_engine *e);
/* Maps the missing pages of [p, p + len) without writing them
 * (MADV_POPULATE_WRITE; nothing on a kernel without it): the sequencer and
 * the snapshot call it after releasing mu for memory that the holds of mu
 * are about to fill, so those holds do not take the page faults. Safe while
 * other threads write into the range. In pieces of 2 MiB (checkpoint.c);
 * returns the madvise calls made. */
size_t engine_prefault(void *p, size_t len);
/* sequencer.c, called by the ticker: has the dedup table's next doubling
 * prepared outside mu (cf_dedup_next_table, posted to dedup_prep.c), and
 * frees the old table of one that ended (cf_dedup_take_retired), also
 * outside mu. */
void engine_dedup_spare(cf_engine *e);

/* dedup_prep.c: the thread that allocates and maps the next dedup table
 * and offers it to the store. start/stop with the ticker (start: 0 or
 * -errno); post hands it a table of bytes/cap slots (ignored while one is
 * in hand; done inline when the thread is not running); idle waits until
 * nothing is posted (or the thread is held); hold (tests) keeps posted
 * tables waiting. */
int engine_dedup_prep_start(cf_engine *e);
void engine_dedup_prep_stop(cf_engine *e);
void engine_dedup_prep_post(cf_engine *e, size_t bytes, uint32_t cap);
void engine_dedup_prep_idle(cf_engine *e);
void engine_dedup_prep_hold(cf_engine *e, bool hold);
/* Hands the thread an old dedup table to free (freed inline when the
 * thread is not running). */
void engine_dedup_prep_retire(cf_engine *e, void *table, size_t bytes);
/* Old tables the thread freed; *ret_pending: one waits for it. */
uint64_t engine_dedup_prep_retired_frees(cf_engine *e, bool *ret_pending);
/* Maps [p, p + len) a piece at a time unless the thread is stopping;
 * returns the bytes mapped (len, or less when stopped). */
size_t engine_dedup_prep_touch(cf_engine *e, uint8_t *p, size_t len);

/* query.c */
int engine_query_shards(cf_engine *e, cf_shard_query *qs, int only, bool sync, int64_t *ret_clock);
cf_shard_query *engine_new_queries(cf_engine *e, cf_qkind kind);
void engine_free_queries(cf_engine *e, cf_shard_query *qs);
cJSON *engine_time_json(int64_t t);
cJSON *engine_trending(cf_engine *e, size_t n, bool sync);
cJSON *engine_windows_ordered(cf_engine *e, const cf_window_query *q, bool sync, bool by_count);

/* stats.c */
cJSON *engine_stats_json(cf_engine *e, bool sync);
void engine_check_dedup_bound(cf_engine *e);

/* engine_sql.c (continuous SQL: statements, view sets, pull queries) */
int engine_replay_sql(cf_engine *e, const uint8_t *payload, size_t len);
int engine_replay_table(cf_engine *e, const uint8_t *payload, size_t len);
/* engine_tables.c: tells every shard that table `name` is gone (the
 * caller checked room). 0 or -EIO. */
int engine_send_table_drop_locked(cf_engine *e, const char *name);
int engine_send_views_locked(cf_engine *e, cf_sqlx_set *set);
/* Makes set (a new reference is taken) the one requests are routed for;
 * under mu. */
void engine_route_views_locked(cf_engine *e, cf_sqlx_set *set);

int engine_replay_rows(cf_engine *e, const uint8_t *payload, size_t len);
void engine_sql_push_interim(cf_engine *e);

/* ticker.c */
void *engine_ticker_main(void *arg);

#endif
