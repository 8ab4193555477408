/* engine: the sequencer, the routing to shards, the query merges, the clock
 * ticker and the durability glue (WAL, snapshots, recovery). The design is
 * explained in docs/DESIGN.md; in short:
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
#include "engine.h"
#include "engine_test.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cf_dedup.h"
#include "cf_hash.h"
#include "cf_time.h"
#include "cf_trending.h"
#include "cf_watermark.h"
#include "cf_winop.h"
#include "log.h"
#include "push.h"
#include "results_json.h"
#include "shard.h"
#include "snapshot.h"
#include "sql_exec.h"
#include "sql_pull.h"
#include "sql_runtime.h"
#include "wal.h"

/* Queue slots beyond --queue-capacity kept for watermark markers and
 * snapshot barriers, so a queue full of events never starves them. */
#define RESERVED_SLOTS 2
#define TICK_MS 100
#define MAX_QUERY_LIMIT 100000
#define SNAP_MAGIC 0x50414e53464355ull   /* "UCFSNAP" */
/* 2: pane-based window state (cf_winop CFW2); 3: the hash key in the
 * sequencer part; 4: the SQL definitions after the dedup table (a version 3
 * snapshot still loads: it had none). */
#define SNAP_VERSION 4u
#define INTERIM_PER_TYPE 100           /* busiest open windows per type per interim push */
#define RATE_SAMPLES 11                 /* 1 s of 100 ms ticks, plus one */
#define DEDUP_PREFETCH 8                /* ids ahead whose dedup slot is prefetched */

/* Per-event routing and message offsets, computed outside the lock. */
typedef struct route {
    uint32_t page_shard;
    uint32_t user_shard;
    size_t page_off;        /* offset of the entry in msgs[page_shard] */
    size_t user_off;        /* offset in msgs[user_shard], or SIZE_MAX if the same entry */
    size_t pack_off;        /* offset of the packed event in `packed` */
    size_t pack_len;
    uint64_t id_hash;       /* cf_dedup_hash(event_id), hashed before the lock */
} route;

/* Offset of an event's entry in msgs[s] for the shards that get it only for
 * user SQL views (neither its page nor its user shard). */
#define XOFF(p, i, s, n) ((p)->xoff[(size_t)(i) * (n) + (s)])

/* A request prepared for the sequencer. */
typedef struct prepared {
    size_t n;
    route *rt;
    cf_msg **msgs;          /* per shard, NULL when no event goes there */
    uint32_t *accepted;     /* per shard: entries not duplicates */
    cf_buf packed;          /* the events, cf_event_pack'ed back to back (WAL payload) */
    size_t bytes;           /* message bytes, for the in-flight budget */
    bool bcast;             /* user SQL views run: every shard gets every event */
    size_t *xoff;           /* bcast: XOFF, SIZE_MAX for the page and user shards */
} prepared;

struct cf_engine {
    cf_config cfg;
    cf_push *push;
    cf_sqlrt *sql;                  /* SQL catalog; changed under mu only */
    atomic_bool sql_runs;           /* user views run: events go to every shard (mu writes) */
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
    atomic_int failed;              /* a WAL write/fsync failed: -EIO from now on */
    atomic_bool ready;
    _Atomic uint64_t rate_x1000;    /* events/s over the last second, x1000 */

    cf_wal *wal;                    /* NULL: durability off */
    _Atomic int64_t recovery_ms;    /* atomics: metrics may be read during recovery */
    _Atomic int64_t replayed;
    int64_t snapshot_lsn;
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
};

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint32_t shard_of(const cf_engine *e, const char *key, size_t len)
{
    return cf_hash_shard(cf_hash64(key, len, 0), e->n_shards);
}

/* ---- life cycle -------------------------------------------------------- */

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
    if (!e->dedup || !e->wm || !e->shards || !e->sql) {
        cf_engine_free(e);
        return NULL;
    }
    return e;
}

void cf_engine_set_push(cf_engine *e, cf_push *push) { e->push = push; }

bool cf_engine_ready(const cf_engine *e) { return atomic_load(&((cf_engine *)e)->ready); }

bool cf_engine_failed(const cf_engine *e) { return atomic_load(&((cf_engine *)e)->failed) != 0; }

static int64_t log_counters_locked(cf_engine *e, uint64_t dups, uint64_t rejected);

/* Rejected events are logged like duplicates (a CF_WAL_COUNTERS record,
 * committed before the 202 goes out), so the count survives a crash. */
void cf_engine_count_rejected(cf_engine *e, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&e->mu);
    int64_t lsn = e->accepting ? log_counters_locked(e, 0, n) : 0;
    atomic_fetch_add(&e->rejected, n);
    pthread_mutex_unlock(&e->mu);
    if (e->wal && lsn > 0 && cf_wal_commit(e->wal, lsn) < 0 && !atomic_exchange(&e->failed, 1))
        cf_error("write-ahead log commit failed: no longer acknowledging events");
}

/* ---- the sequencer ----------------------------------------------------- */

static void prepared_free(cf_engine *e, prepared *p)
{
    if (p->msgs)
        for (unsigned s = 0; s < e->n_shards; s++)
            free(p->msgs[s]);
    free(p->msgs);
    free(p->accepted);
    free(p->rt);
    free(p->xoff);
    cf_buf_free(&p->packed);
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Routes and packs a request without holding the sequencer lock: one
 * message per target shard with every event in it (roles and arrival
 * numbers are patched in under the lock), and the packed events for the
 * WAL. O(total event bytes). 0 or -ENOMEM. */
static int prepare(cf_engine *e, const cf_event *evs, size_t n, prepared *p)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    p->rt = calloc(n ? n : 1, sizeof *p->rt);
    p->msgs = calloc(e->n_shards, sizeof *p->msgs);
    p->accepted = calloc(e->n_shards, sizeof *p->accepted);
    p->bcast = atomic_load(&e->sql_runs) && e->n_shards > 1;
    if (p->bcast)
        p->xoff = malloc((n ? n : 1) * e->n_shards * sizeof *p->xoff);
    size_t *size = calloc(e->n_shards, sizeof *size);
    uint32_t *count = calloc(e->n_shards, sizeof *count);
    int rc = -ENOMEM;
    if (!p->rt || !p->msgs || !p->accepted || !size || !count || (p->bcast && !p->xoff))
        goto out;
    /* One allocation for the packed events instead of a doubling series of
     * reallocs and copies: the fields plus a generous header each. */
    size_t estimate = 0;
    for (size_t i = 0; i < n; i++)
        estimate += 32 + evs[i].user_id_len + evs[i].page_url_len + evs[i].element_len +
                    evs[i].event_id_len + evs[i].properties_len + evs[i].name_len;
    if (cf_buf_reserve(&p->packed, estimate) < 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        route *r = &p->rt[i];
        r->page_shard = shard_of(e, evs[i].page_url, evs[i].page_url_len);
        r->user_shard = shard_of(e, evs[i].user_id, evs[i].user_id_len);
        if (evs[i].event_id && evs[i].event_id_len > 0)
            r->id_hash = cf_dedup_hash(e->dedup, evs[i].event_id, evs[i].event_id_len);
        r->pack_off = p->packed.len;
        if (cf_event_pack(&evs[i], &p->packed) < 0)
            goto out;
        r->pack_len = p->packed.len - r->pack_off;
        size_t entry = CF_ENTRY_HEAD + r->pack_len;
        size[r->page_shard] += entry;
        count[r->page_shard]++;
        if (r->user_shard != r->page_shard) {
            size[r->user_shard] += entry;
            count[r->user_shard]++;
        }
        for (unsigned s = 0; p->bcast && s < e->n_shards; s++) {
            if (s != r->page_shard && s != r->user_shard) {
                size[s] += entry;
                count[s]++;
            }
        }
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        if (!count[s])
            continue;
        p->msgs[s] = cf_msg_new(CF_MSG_EVENTS, size[s]);
        if (!p->msgs[s])
            goto out;
        p->msgs[s]->n = count[s];
        p->bytes += cf_msg_bytes(p->msgs[s]);
        size[s] = 0;    /* reused as the fill position */
    }
    for (size_t i = 0; i < n; i++) {
        route *r = &p->rt[i];
        const uint8_t *packed = p->packed.data + r->pack_off;
        uint32_t targets[2] = {r->page_shard, r->user_shard};
        for (int k = 0; k < 2; k++) {
            uint32_t s = targets[k];
            if (k == 1 && s == r->page_shard) {
                r->user_off = SIZE_MAX;
                break;
            }
            uint8_t *at = p->msgs[s]->data + size[s];
            at[0] = 0;                      /* role: patched under the lock */
            memset(at + 1, 0, 24);          /* arrival number, W, C: likewise */
            memcpy(at + CF_ENTRY_HEAD, packed, r->pack_len);
            if (k == 0)
                r->page_off = size[s];
            else
                r->user_off = size[s];
            size[s] += CF_ENTRY_HEAD + r->pack_len;
        }
        for (unsigned s = 0; p->bcast && s < e->n_shards; s++) {
            XOFF(p, i, s, e->n_shards) = SIZE_MAX;
            if (s == r->page_shard || s == r->user_shard)
                continue;
            uint8_t *at = p->msgs[s]->data + size[s];
            at[0] = 0;
            memset(at + 1, 0, 24);
            memcpy(at + CF_ENTRY_HEAD, packed, r->pack_len);
            XOFF(p, i, s, e->n_shards) = size[s];
            size[s] += CF_ENTRY_HEAD + r->pack_len;
        }
    }
    rc = 0;
out:
    free(size);
    free(count);
    if (rc)
        prepared_free(e, p);
    return rc;
}

/* True when every shard the request targets can take one more message
 * (keeping the reserved slots) and the byte budget allows it. */
static bool has_room_locked(cf_engine *e, const prepared *p)
{
    if (atomic_load(&e->inflight) + p->bytes > e->inflight_cap)
        return false;
    for (unsigned s = 0; s < e->n_shards; s++)
        if (p->msgs[s] && cf_queue_space(cf_shard_queue(e->shards[s])) <= RESERVED_SLOTS)
            return false;
    return true;
}

static bool all_have_room_locked(cf_engine *e)
{
    for (unsigned s = 0; s < e->n_shards; s++)
        if (cf_queue_space(cf_shard_queue(e->shards[s])) == 0)
            return false;
    return true;
}

static void enqueue_locked(cf_engine *e, unsigned s, cf_msg *m)
{
    atomic_fetch_add(&e->inflight, cf_msg_bytes(m));
    /* Room was checked under this same lock and only the consumer changes
     * it since, by making more. */
    bool ok = cf_queue_push(cf_shard_queue(e->shards[s]), m);
    (void)ok;
}

/* The clock dedup judges by: the max accepted timestamp and the clock of the
 * last marker, both recorded in the WAL, so a replay decides identically. */
static int64_t dedup_clock_locked(const cf_engine *e)
{
    int64_t mx = cf_watermark_max_ts(e->wm);
    if (mx == CF_TIME_NONE || (e->mark_clock != CF_TIME_NONE && e->mark_clock > mx))
        return e->mark_clock;
    return mx;
}

static int wal_fail_locked(cf_engine *e, int64_t rc)
{
    if (!atomic_exchange(&e->failed, 1))
        cf_error("write-ahead log append failed (%s): no longer acknowledging events",
                 strerror((int)-rc));
    return -EIO;
}

/* Logs counter increments that no events record carries (duplicates,
 * rejected events), so a replay restores them exactly. Returns the LSN, 0
 * without a WAL, or -EIO. */
static int64_t log_counters_locked(cf_engine *e, uint64_t dups, uint64_t rejected)
{
    if (!e->wal || atomic_load(&e->failed))
        return 0;
    uint8_t payload[16];
    put_le64(payload, dups);
    put_le64(payload + 8, rejected);
    int64_t lsn = cf_wal_append(e->wal, CF_WAL_COUNTERS, payload, sizeof payload);
    return lsn < 0 ? wal_fail_locked(e, lsn) : lsn;
}

/* Sends a watermark marker (W, C) to every shard, logging it first. The
 * caller checked room. Returns the record's LSN (0 without a WAL) or -EIO. */
static int64_t send_marker_locked(cf_engine *e, int64_t w, int64_t c, bool log)
{
    int64_t lsn = 0;
    if (log && e->wal) {
        uint8_t payload[16];
        put_le64(payload, (uint64_t)w);
        put_le64(payload + 8, (uint64_t)c);
        lsn = cf_wal_append(e->wal, CF_WAL_WATERMARK, payload, sizeof payload);
        if (lsn < 0)
            return wal_fail_locked(e, lsn);
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        cf_msg *m = cf_msg_new(CF_MSG_MARK, 0);
        if (!m) {
            /* Markers are tiny; without memory for them the shards would
             * diverge from the log, so stop acknowledging like a WAL error. */
            cf_error("out of memory for a watermark marker");
            atomic_store(&e->failed, 1);
            return -EIO;
        }
        m->wm = w;
        m->clock = c;
        enqueue_locked(e, s, m);
    }
    e->sent_wm = w;
    if (c != CF_TIME_NONE && (e->mark_clock == CF_TIME_NONE || c > e->mark_clock))
        e->mark_clock = c;
    return lsn;
}

/* Recomputes W at wall time now and, if it moved past the last marker and
 * every queue has a slot, logs and sends a marker. A marker that does not
 * fit stays pending: the next request or tick sends the then-current W.
 * Returns the marker's LSN, 0 if none was needed/possible, or -EIO. */
static int64_t maybe_mark_locked(cf_engine *e, int64_t now)
{
    int64_t w = cf_watermark_advance(e->wm, now);
    if (w == CF_TIME_NONE || (e->sent_wm != CF_TIME_NONE && w <= e->sent_wm))
        return 0;
    if (!all_have_room_locked(e))
        return 0;
    return send_marker_locked(e, w, cf_watermark_clock(e->wm, now), true);
}

/* Applies a prepared request under the lock: dedup, clock, arrival numbers,
 * per-event W and C stamps, WAL record, enqueue. replay: the events come
 * from the WAL, so they are all accepted (dedup state is still rebuilt) and
 * nothing is logged again.
 * Returns the WAL LSN (0 without a WAL or when nothing was accepted), or
 * -EIO. The caller checked room. */
static int64_t apply_locked(cf_engine *e, prepared *p, const cf_event *evs, uint8_t *is_dup,
                            bool replay, size_t *ret_accepted)
{
    size_t accepted = 0, dups = 0;
    bool any_dup = false;
    for (size_t i = 0; i < p->n; i++) {
        const cf_event *ev = &evs[i];
        route *r = &p->rt[i];
        /* A large dedup table misses the cache on every id: start loading
         * the slot of an id a few events ahead, so the misses overlap. */
        if (i + DEDUP_PREFETCH < p->n && evs[i + DEDUP_PREFETCH].event_id_len > 0)
            cf_dedup_prefetch(e->dedup, p->rt[i + DEDUP_PREFETCH].id_hash);
        if (ev->event_id && ev->event_id_len > 0) {
            int d = cf_dedup_check_hashed(e->dedup, ev->event_id, ev->event_id_len, r->id_hash,
                                          ev->ts, dedup_clock_locked(e));
            if (d < 0) {
                /* Fail open: accepting is what the client asked for; the
                 * id is just not remembered. Counted for operators. */
                atomic_fetch_add(&e->dedup_errors, 1);
            } else if (d == 0 && !replay) {
                dups++;
                any_dup = true;
                if (is_dup)
                    is_dup[i] = 1;
                continue;   /* role stays 0: the shard skips the entry */
            }
        }
        /* SPEC 1: the event is judged against the W the events before it
         * left (the last marker's W, raised by the max ts so far), not the
         * W in force before the request. Only logged values go in, so a
         * replay stamps the same W. */
        uint64_t w = (uint64_t)cf_watermark_of_events(e->wm, e->sent_wm);
        uint64_t c = (uint64_t)dedup_clock_locked(e);
        cf_watermark_observe(e->wm, ev->ts);
        uint64_t seq = e->next_seq++;
        /* With user views running, every shard gets the event once (the
         * shard that owns a group's key keeps it: sql_exec.h). */
        uint8_t sql_role = e->n_shards == 1 || p->bcast ? (atomic_load(&e->sql_runs) ? CF_ROLE_SQL : 0) : 0;
        uint8_t *page_entry = p->msgs[r->page_shard]->data + r->page_off;
        page_entry[0] = (uint8_t)(CF_ROLE_PAGE | (r->user_off == SIZE_MAX ? CF_ROLE_USER : 0) | sql_role);
        put_le64(page_entry + 1, seq);
        put_le64(page_entry + 9, w);
        put_le64(page_entry + 17, c);
        p->accepted[r->page_shard]++;
        if (r->user_off != SIZE_MAX) {
            uint8_t *user_entry = p->msgs[r->user_shard]->data + r->user_off;
            user_entry[0] = (uint8_t)(CF_ROLE_USER | sql_role);
            put_le64(user_entry + 1, seq);
            put_le64(user_entry + 9, w);
            put_le64(user_entry + 17, c);
            p->accepted[r->user_shard]++;
        }
        for (unsigned s = 0; p->bcast && s < e->n_shards; s++) {
            size_t off = XOFF(p, i, s, e->n_shards);
            if (off == SIZE_MAX)
                continue;
            uint8_t *x = p->msgs[s]->data + off;
            x[0] = sql_role;
            put_le64(x + 1, seq);
            put_le64(x + 9, w);
            put_le64(x + 17, c);
            p->accepted[s] += sql_role != 0;
        }
        accepted++;
    }
    int64_t lsn = 0;
    if (accepted > 0 && !replay && e->wal) {
        const void *payload = p->packed.data;
        size_t len = p->packed.len;
        if (any_dup) {
            cf_buf_reset(&e->scratch);
            for (size_t i = 0; i < p->n; i++)
                if (!is_dup || !is_dup[i])
                    cf_buf_put(&e->scratch, p->packed.data + p->rt[i].pack_off,
                               p->rt[i].pack_len);
            if (e->scratch.oom)
                return wal_fail_locked(e, -ENOMEM);
            payload = e->scratch.data;
            len = e->scratch.len;
        }
        lsn = cf_wal_append(e->wal, CF_WAL_EVENTS, payload, len);
        if (lsn < 0)
            return wal_fail_locked(e, lsn);
    }
    if (dups > 0 && !replay) {
        int64_t clsn = log_counters_locked(e, dups, 0);
        if (clsn < 0)
            return clsn;
        if (clsn > lsn)
            lsn = clsn;
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        if (p->msgs[s] && p->accepted[s] > 0) {
            enqueue_locked(e, s, p->msgs[s]);
            p->msgs[s] = NULL;  /* now owned by the shard */
        }
    }
    atomic_fetch_add(&e->accepted, accepted);
    atomic_fetch_add(&e->duplicates, dups);
    *ret_accepted = accepted;
    return lsn;
}

int cf_engine_submit(cf_engine *e, const cf_event *evs, size_t n, uint8_t *ret_is_dup,
                     cf_submit_result *ret)
{
    if (atomic_load(&e->failed))
        return -EIO;
    uint8_t *is_dup = ret_is_dup;
    uint8_t *own_dup = NULL;
    if (!is_dup && n > 0) {
        /* The WAL payload filter needs to know which events were dups. */
        is_dup = own_dup = calloc(n, 1);
        if (!own_dup)
            return -ENOMEM;
    } else if (is_dup) {
        memset(is_dup, 0, n);
    }
    prepared p;
    int rc;
    size_t accepted = 0;
    int64_t lsn = 0, mlsn = 0, seen = 0;
again:
    rc = prepare(e, evs, n, &p);
    if (rc) {
        free(own_dup);
        return rc;
    }
    pthread_mutex_lock(&e->mu);
    if (!p.bcast && e->n_shards > 1 && atomic_load(&e->sql_runs)) {
        /* A view started running since the request was routed: route it
         * again so every shard gets its events (rare: once per change). */
        pthread_mutex_unlock(&e->mu);
        prepared_free(e, &p);
        goto again;
    }
    if (e->stopping) {
        rc = -ESHUTDOWN;
    } else if (atomic_load(&e->failed)) {
        rc = -EIO;
    } else if (!e->accepting) {
        rc = -EAGAIN;   /* still recovering: the log must be replayed first */
    } else if (!has_room_locked(e, &p)) {
        rc = -EAGAIN;   /* nothing accepted, nothing changed */
    } else {
        lsn = apply_locked(e, &p, evs, is_dup, false, &accepted);
        if (lsn >= 0)
            mlsn = maybe_mark_locked(e, wall_ms());
        if (lsn < 0 || mlsn < 0)
            rc = -EIO;
        /* A duplicate's first copy may still be in flight (appended by a
         * request whose commit has not returned): wait for every record
         * logged so far, so a 202 that reports a duplicate is never sent
         * before the original is durable. */
        if (e->wal)
            seen = cf_wal_last_lsn(e->wal);
    }
    pthread_mutex_unlock(&e->mu);
    prepared_free(e, &p);
    free(own_dup);
    if (rc)
        return rc;
    /* Group commit: wait outside the lock, so concurrent requests share one
     * write/fsync. */
    int64_t upto = mlsn > lsn ? mlsn : lsn;
    if (seen > upto)
        upto = seen;
    if (e->wal && upto > 0 && cf_wal_commit(e->wal, upto) < 0) {
        if (!atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging events");
        return -EIO;
    }
    if (ret) {
        ret->accepted = accepted;
        ret->duplicates = n - accepted;
    }
    return 0;
}

/* Sends the user views in force to every shard through the queues, so
 * each shard starts and stops them between the same two events. The
 * caller checked room. 0 or -EIO (no memory for a message: the shards
 * would diverge from the log, so stop acknowledging as on a WAL error). */
static int send_views_locked(cf_engine *e, cf_sqlx_set *set)
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

static int query_shards(cf_engine *e, cf_shard_query *qs, int only, bool sync,
                        int64_t *ret_clock);
static cf_shard_query *new_queries(cf_engine *e, cf_qkind kind);
static void free_queries(cf_engine *e, cf_shard_query *qs);

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

int cf_engine_raise_watermark(cf_engine *e, int64_t wm, int64_t *ret_wm)
{
    int rc = 0;
    int64_t lsn = 0, w = CF_TIME_NONE;
    pthread_mutex_lock(&e->mu);
    if (e->stopping) {
        rc = -ESHUTDOWN;
    } else if (atomic_load(&e->failed)) {
        rc = -EIO;
    } else if (!e->accepting) {
        rc = -EAGAIN;
    } else {
        cf_watermark_raise(e->wm, wm);
        lsn = maybe_mark_locked(e, wall_ms());
        if (lsn < 0)
            rc = -EIO;
        w = cf_watermark_current(e->wm);
    }
    pthread_mutex_unlock(&e->mu);
    if (!rc && e->wal && lsn > 0 && cf_wal_commit(e->wal, lsn) < 0) {
        atomic_store(&e->failed, 1);
        rc = -EIO;
    }
    if (!rc && ret_wm)
        *ret_wm = w;
    return rc;
}

/* ---- recovery ---------------------------------------------------------- */

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Replays one WAL events record through the live path (minus the log). The
 * shards are running, so a full queue only means waiting for them. */
static int replay_events(cf_engine *e, const uint8_t *payload, size_t len)
{
    size_t cap = 64, n = 0;
    cf_event *evs = malloc(cap * sizeof *evs);
    if (!evs)
        return -ENOMEM;
    cf_reader r;
    cf_reader_init(&r, payload, len);
    while (r.left > 0) {
        if (n == cap) {
            cf_event *bigger = realloc(evs, 2 * cap * sizeof *evs);
            if (!bigger) {
                free(evs);
                return -ENOMEM;
            }
            evs = bigger;
            cap *= 2;
        }
        if (cf_event_unpack(&r, &evs[n]) < 0) {
            free(evs);
            return -EINVAL;
        }
        n++;
    }
    prepared p;
    int rc = prepare(e, evs, n, &p);
    if (rc) {
        free(evs);
        return rc;
    }
    for (;;) {
        pthread_mutex_lock(&e->mu);
        if (has_room_locked(e, &p)) {
            size_t accepted = 0;
            int64_t lsn = apply_locked(e, &p, evs, NULL, true, &accepted);
            pthread_mutex_unlock(&e->mu);
            rc = lsn < 0 ? (int)lsn : 0;
            break;
        }
        pthread_mutex_unlock(&e->mu);
        sleep_ms(1);
    }
    prepared_free(e, &p);
    free(evs);
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
        if (all_have_room_locked(e)) {
            /* The very values the live run sent: W is restored, not
             * recomputed from today's wall clock. */
            cf_watermark_restore(e->wm, cf_watermark_max_ts(e->wm), w);
            int64_t rc = send_marker_locked(e, w, c, false);
            pthread_mutex_unlock(&e->mu);
            return rc < 0 ? (int)rc : 0;
        }
        pthread_mutex_unlock(&e->mu);
        sleep_ms(1);
    }
}

static void put_settings(cf_buf *b, const cf_view_settings *vs)
{
    cf_buf_put_i64(b, vs->window_ms);
    cf_buf_put_i64(b, vs->slide_size_ms);
    cf_buf_put_i64(b, vs->slide_ms);
    cf_buf_put_i64(b, vs->session_gap_ms);
    cf_buf_put_i64(b, vs->half_life_ms);
    cf_buf_put_i64(b, vs->allowed_lateness_ms);
}

static bool get_settings(cf_reader *r, cf_view_settings *vs)
{
    cf_get_i64(r, &vs->window_ms);
    cf_get_i64(r, &vs->slide_size_ms);
    cf_get_i64(r, &vs->slide_ms);
    cf_get_i64(r, &vs->session_gap_ms);
    cf_get_i64(r, &vs->half_life_ms);
    return cf_get_i64(r, &vs->allowed_lateness_ms) && vs->window_ms > 0 &&
           vs->slide_size_ms > 0 && vs->slide_ms > 0 && vs->session_gap_ms > 0 &&
           vs->half_life_ms > 0 && vs->allowed_lateness_ms >= 0;
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
            if (all_have_room_locked(e))
                break;
            pthread_mutex_unlock(&e->mu);
            sleep_ms(1);
        }
        for (unsigned s = 0; s < e->n_shards; s++) {
            cf_msg *m = cf_msg_new(CF_MSG_RESET, sizeof *vs);
            if (!m) {
                /* The shards would diverge from the log: stop like a WAL
                 * error. */
                atomic_store(&e->failed, 1);
                pthread_mutex_unlock(&e->mu);
                cf_error("out of memory switching view settings");
                return -EIO;
            }
            m->n = views;
            memcpy(m->data, vs, sizeof *vs);
            enqueue_locked(e, s, m);
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
    if (!get_settings(&r, &vs))
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
static int adopt_settings(cf_engine *e)
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
    put_settings(&b, &want);
    if (b.oom) {
        cf_buf_free(&b);
        return -EIO;
    }
    pthread_mutex_lock(&e->mu);
    int64_t lsn = cf_wal_append(e->wal, CF_WAL_SETTINGS, b.data, b.len);
    if (lsn < 0)
        (void)wal_fail_locked(e, lsn);
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

/* Re-applies logged definitions at their place in the event order. They
 * planned when logged, so a failure means a damaged record: skipped like
 * any malformed record. */
static int replay_sql(cf_engine *e, const uint8_t *payload, size_t len)
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

static int replay_record(void *ctx, int64_t lsn, uint8_t type, const uint8_t *payload,
                         size_t len)
{
    cf_engine *e = ctx;
    int rc = 0;
    if (type == CF_WAL_EVENTS)
        rc = replay_events(e, payload, len);
    else if (type == CF_WAL_WATERMARK)
        rc = replay_watermark(e, payload, len);
    else if (type == CF_WAL_COUNTERS)
        rc = replay_counters(e, payload, len);
    else if (type == CF_WAL_SETTINGS)
        rc = replay_settings(e, payload, len);
    else if (type == CF_WAL_SQL)
        rc = replay_sql(e, payload, len);
    else
        cf_warn("recovery: skipping WAL record %" PRId64 " of unknown type %u", lsn, type);
    if (rc == -EINVAL) {
        cf_warn("recovery: skipping malformed WAL record %" PRId64, lsn);
        rc = 0;
    }
    return rc;
}

/* The layout a snapshot's state depends on: the shard count (a restart
 * with another one re-distributes the state by key) and the view settings
 * the shards ran at the cut (a restart with other ones loads the state as
 * it was and switches later, see adopt_settings). */
static void put_fingerprint(const cf_engine *e, cf_buf *b)
{
    cf_buf_put_u32(b, e->n_shards);
    put_settings(b, &e->shard_vs);
}

/* Sequencer part of a snapshot (under mu). */
static int save_sequencer_locked(cf_engine *e, cf_buf *out)
{
    cf_buf_put_i64(out, cf_watermark_max_ts(e->wm));
    cf_buf_put_i64(out, e->sent_wm);
    cf_buf_put_i64(out, e->mark_clock);
    cf_buf_put_u64(out, e->next_seq);
    cf_buf_put_u64(out, atomic_load(&e->accepted));
    cf_buf_put_u64(out, atomic_load(&e->duplicates));
    cf_buf_put_u64(out, atomic_load(&e->rejected));
    cf_buf_put(out, e->hashkey, sizeof e->hashkey);
    cf_buf tmp = {0};
    int rc = cf_dedup_save(e->dedup, &tmp);
    if (rc >= 0 && !tmp.oom)
        cf_buf_put_str(out, (const char *)tmp.data, tmp.len);
    else if (rc >= 0)
        rc = -ENOMEM;
    cf_buf_free(&tmp);
    if (rc >= 0)
        rc = cf_sqlrt_save(e->sql, out);
    return rc < 0 ? rc : (out->oom ? -ENOMEM : 0);
}

/* Keys every shard's tables with the engine's hash key (before any state). */
static int key_shards(cf_engine *e)
{
    for (unsigned s = 0; s < e->n_shards; s++) {
        int rc = cf_shard_set_hashkey(e->shards[s], e->hashkey);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* Restores a snapshot payload into the (not yet started) engine. */
static int load_snapshot(cf_engine *e, const cf_buf *payload)
{
    cf_reader r;
    cf_reader_init(&r, payload->data, payload->len);
    uint64_t magic = 0;
    uint32_t version = 0;
    cf_get_u64(&r, &magic);
    cf_get_u32(&r, &version);
    if (r.bad || magic != SNAP_MAGIC || (version != SNAP_VERSION && version != 3)) {
        cf_error("snapshot: unknown format (magic %" PRIx64 ", version %u)", magic, version);
        return -EINVAL;
    }
    uint32_t old_shards = 0;
    cf_view_settings vs;
    cf_get_u32(&r, &old_shards);
    if (!get_settings(&r, &vs) || old_shards == 0) {
        cf_error("snapshot: malformed settings fingerprint");
        return -EINVAL;
    }
    int64_t max_ts = 0, sent = 0, clock = 0;
    uint64_t next_seq = 0, acc = 0, dup = 0, rej = 0;
    const char *blob = NULL;
    size_t blob_len = 0;
    cf_get_i64(&r, &max_ts);
    cf_get_i64(&r, &sent);
    cf_get_i64(&r, &clock);
    cf_get_u64(&r, &next_seq);
    cf_get_u64(&r, &acc);
    cf_get_u64(&r, &dup);
    cf_get_u64(&r, &rej);
    uint8_t key[CF_HASHKEY_LEN];
    if (r.left < sizeof key)
        return -EINVAL;
    memcpy(key, r.p, sizeof key);
    r.p += sizeof key;
    r.left -= sizeof key;
    if (!cf_get_str(&r, &blob, &blob_len))
        return -EINVAL;
    const char *defs = NULL;
    size_t defs_len = 0;
    if (version >= 4) {
        /* Read now, applied last: the state must load whole first. */
        if (!cf_get_str(&r, &defs, &defs_len))
            return -EINVAL;
    }
    /* The snapshot's key is the one its state was made with; a key file
     * that says otherwise (replaced, restored from elsewhere) is rewritten. */
    if (memcmp(key, e->hashkey, sizeof key) != 0) {
        cf_warn("snapshot: the hash key file differs from the snapshot's; using the snapshot's");
        memcpy(e->hashkey, key, sizeof key);
        int krc = key_shards(e);
        if (krc == 0)
            krc = cf_hashkey_store(e->cfg.data_dir, key);
        if (krc < 0) {
            cf_error("cannot store the hash key in %s: %s", e->cfg.data_dir, strerror(-krc));
            return krc;
        }
    }
    cf_reader dr;
    cf_reader_init(&dr, blob, blob_len);
    cf_dedup *d = cf_dedup_load(e->cfg.dedup_ttl_ms > 0 ? e->cfg.dedup_ttl_ms : 1,
                                e->cfg.max_keys, key, &dr);
    if (!d)
        return -EINVAL;
    uint32_t parts = 0;
    cf_get_u32(&r, &parts);
    cf_reader *pr = parts == old_shards ? calloc(parts, sizeof *pr) : NULL;
    cf_reader *copy = pr ? calloc(parts, sizeof *copy) : NULL;
    if (!copy) {
        free(pr);
        cf_dedup_free(d);
        return parts == old_shards ? -ENOMEM : -EINVAL;
    }
    for (unsigned i = 0; i < parts; i++) {
        if (!cf_get_str(&r, &blob, &blob_len)) {
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return -EINVAL;
        }
        cf_reader_init(&pr[i], blob, blob_len);
    }
    if (parts != e->n_shards)
        cf_info("snapshot: taken with %u shards, now %u: re-distributing the state by key",
                parts, e->n_shards);
    if (defs_len > 0) {
        /* The definitions first, installed straight into the shards (not
         * started yet), so that their parts can fill the views' state. */
        sql_error err;
        int src = cf_sqlrt_load(e->sql, defs, defs_len, &err);
        cf_sqlx_set *set = src == 0 ? cf_sqlrt_current_set(e->sql) : NULL;
        if (src < 0 || !set) {
            cf_error("snapshot: the SQL definitions do not plan (line %d, column %d: %s)",
                     err.line, err.column, err.message);
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return src < 0 ? src : -ENOMEM;
        }
        for (unsigned s = 0; s < e->n_shards; s++)
            cf_shard_install_sql(e->shards[s], cf_sqlx_set_ref(set));
        atomic_store(&e->sql_runs, cf_sqlx_set_runs(set));
        cf_sqlx_set_unref(set);
    }
    for (unsigned s = 0; s < e->n_shards; s++) {
        /* Each shard reads its own copy: after a rescale every shard reads
         * every part. */
        memcpy(copy, pr, parts * sizeof *copy);
        int rc = cf_shard_load(e->shards[s], copy, parts, e->n_shards, &vs);
        if (rc) {
            cf_error("snapshot: shard %u state is malformed", s);
            free(pr);
            free(copy);
            cf_dedup_free(d);
            return rc;
        }
    }
    free(pr);
    free(copy);
    e->shard_vs = vs;
    e->vs_known = true;
    cf_dedup_free(e->dedup);
    e->dedup = d;
    cf_watermark_restore(e->wm, max_ts, sent);
    e->sent_wm = sent;
    e->mark_clock = clock;
    e->next_seq = next_seq;
    atomic_store(&e->accepted, acc);
    atomic_store(&e->duplicates, dup);
    atomic_store(&e->rejected, rej);
    return 0;
}

/* ---- snapshots --------------------------------------------------------- */

static void job_free(cf_engine *e, cf_snapjob *job)
{
    if (!job)
        return;
    for (unsigned s = 0; s < e->n_shards + 1; s++)
        cf_buf_free(&job->parts[s]);
    free(job->parts);
    free(job);
}

/* Starts a snapshot: under the sequencer lock notes the last LSN, saves the
 * sequencer state and puts a barrier in every queue (a consistent cut: the
 * shards save exactly the effect of the records <= lsn). parts[n_shards]
 * holds the sequencer part. 0, -EAGAIN (no room now), or -errno. */
static int snapshot_begin(cf_engine *e)
{
    if (!e->recovered)
        return -EPERM;  /* never snapshot a partial recovery (see recover) */
    cf_snapjob *job = calloc(1, sizeof *job);
    if (!job)
        return -ENOMEM;
    job->parts = calloc(e->n_shards + 1, sizeof *job->parts);
    if (!job->parts) {
        free(job);
        return -ENOMEM;
    }
    atomic_init(&job->remaining, e->n_shards);
    atomic_init(&job->failed, 0);
    cf_msg **msgs = calloc(e->n_shards, sizeof *msgs);
    int rc = msgs ? 0 : -ENOMEM;
    for (unsigned s = 0; s < e->n_shards && !rc; s++) {
        msgs[s] = cf_msg_new(CF_MSG_BARRIER, 0);
        if (!msgs[s])
            rc = -ENOMEM;
        else
            msgs[s]->snap = job;
    }
    if (!rc) {
        pthread_mutex_lock(&e->mu);
        if (!all_have_room_locked(e))
            rc = -EAGAIN;
        else
            rc = save_sequencer_locked(e, &job->parts[e->n_shards]);
        if (!rc) {
            job->lsn = e->wal ? cf_wal_last_lsn(e->wal) : 0;
            for (unsigned s = 0; s < e->n_shards; s++) {
                enqueue_locked(e, s, msgs[s]);
                msgs[s] = NULL;
            }
        }
        pthread_mutex_unlock(&e->mu);
    }
    if (msgs)
        for (unsigned s = 0; s < e->n_shards; s++)
            free(msgs[s]);
    free(msgs);
    if (rc) {
        job_free(e, job);
        return rc;
    }
    e->job = job;
    return 0;
}

/* Finishes the snapshot once every shard answered: concatenates the parts
 * behind a versioned header, writes it and drops the log it covers. Returns
 * 1 when written, 0 when shards are still saving, or -errno. */
static int snapshot_finish(cf_engine *e)
{
    cf_snapjob *job = e->job;
    if (!job)
        return 0;
    if (atomic_load_explicit(&job->remaining, memory_order_acquire) > 0)
        return 0;
    e->job = NULL;
    int rc = atomic_load(&job->failed) ? -ENOMEM : 0;
    cf_buf out = {0};
    if (!rc) {
        cf_buf_put_u64(&out, SNAP_MAGIC);
        cf_buf_put_u32(&out, SNAP_VERSION);
        put_fingerprint(e, &out);
        cf_buf_put(&out, job->parts[e->n_shards].data, job->parts[e->n_shards].len);
        cf_buf_put_u32(&out, e->n_shards);
        for (unsigned s = 0; s < e->n_shards; s++)
            cf_buf_put_str(&out, (const char *)job->parts[s].data, job->parts[s].len);
        if (out.oom)
            rc = -ENOMEM;
    }
    /* The snapshot must not cover records that might still be lost. */
    if (!rc && job->lsn > 0 && cf_wal_commit(e->wal, job->lsn) < 0)
        rc = -EIO;
    if (!rc)
        rc = cf_snapshot_write(e->cfg.data_dir, job->lsn, out.data, out.len);
    /* cf_snapshot_load falls back to the previous snapshot when the newest
     * is damaged, so the log is kept from that one on: drop only what the
     * previous snapshot covers. */
    if (!rc && e->snapshot_lsn > 0)
        rc = cf_wal_drop_through(e->wal, e->snapshot_lsn);
    if (rc) {
        atomic_fetch_add(&e->snapshot_failures, 1);
        cf_warn("snapshot at LSN %" PRId64 " failed: %s", job->lsn, strerror(-rc));
    } else {
        atomic_fetch_add(&e->snapshots, 1);
        e->snapshot_lsn = job->lsn;
        cf_info("snapshot at LSN %" PRId64 " written (%zu bytes)", job->lsn, out.len);
    }
    cf_buf_free(&out);
    job_free(e, job);
    return rc ? rc : 1;
}

/* ---- queries ----------------------------------------------------------- */

/* Posts qs (one per shard, or only shard `only` when only >= 0) after
 * noting every queue's produced count under the sequencer lock, so the
 * answer reflects every request acknowledged before (sync; otherwise each
 * shard answers after its current message). *ret_clock gets C. */
static int query_shards(cf_engine *e, cf_shard_query *qs, int only, bool sync,
                        int64_t *ret_clock)
{
    uint64_t *targets = calloc(e->n_shards, sizeof *targets);
    if (!targets)
        return -ENOMEM;
    pthread_mutex_lock(&e->mu);
    bool down = e->stopping || !e->started;
    int64_t c = cf_watermark_clock(e->wm, wall_ms());
    /* The ticker's pushes do not need read-your-writes: target 0 lets a
     * busy shard answer right after its current message instead of after
     * its whole backlog. */
    for (unsigned s = 0; s < e->n_shards && !down && sync; s++)
        targets[s] = cf_queue_produced(cf_shard_queue(e->shards[s]));
    pthread_mutex_unlock(&e->mu);
    int rc = -ESHUTDOWN;
    if (!down) {
        if (only >= 0)
            rc = cf_shards_query(&e->shards[only], 1, &qs[0], &targets[only]);
        else
            rc = cf_shards_query(e->shards, e->n_shards, qs, targets);
    }
    free(targets);
    if (ret_clock)
        *ret_clock = c;
    return rc;
}

static cf_shard_query *new_queries(cf_engine *e, cf_qkind kind)
{
    cf_shard_query *qs = calloc(e->n_shards, sizeof *qs);
    if (qs)
        for (unsigned s = 0; s < e->n_shards; s++)
            qs[s].kind = kind;
    return qs;
}

static void free_queries(cf_engine *e, cf_shard_query *qs)
{
    if (!qs)
        return;
    for (unsigned s = 0; s < e->n_shards; s++)
        cf_shard_query_clear(&qs[s]);
    free(qs);
}

/* JSON number for a time that may be CF_TIME_NONE (null). */
static cJSON *time_json(int64_t t)
{
    return t == CF_TIME_NONE ? cJSON_CreateNull() : cJSON_CreateNumber((double)t);
}

/* Rounds to 10 significant digits: far inside SPEC 7's 1e-6, and it hides
 * last-bit differences between tables that rescaled at different moments,
 * so the JSON does not depend on the shard count. */
static double round_score(double v)
{
    if (!(v > 0) || !isfinite(v))
        return v;
    char buf[32];
    snprintf(buf, sizeof buf, "%.10g", v);
    return strtod(buf, NULL);
}

static int trend_cmp(const void *pa, const void *pb)
{
    const cf_trend_item *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    size_t n = a->page_url_len < b->page_url_len ? a->page_url_len : b->page_url_len;
    int c = memcmp(a->page_url, b->page_url, n);
    if (c)
        return c;
    return a->page_url_len < b->page_url_len ? -1 : a->page_url_len > b->page_url_len;
}

static cJSON *trending(cf_engine *e, size_t n, bool sync)
{
    if (n < 1)
        n = 1;
    if (n > 1000)
        n = 1000;
    cf_shard_query *qs = new_queries(e, CF_Q_TRENDING);
    const cf_trend_item **lists = calloc(e->n_shards, sizeof *lists);
    size_t *lens = calloc(e->n_shards, sizeof *lens);
    cf_trend_item *top = calloc(n, sizeof *top);
    cJSON *out = NULL;
    int64_t c = CF_TIME_NONE;
    if (!qs || !lists || !lens || !top)
        goto done;
    pthread_mutex_lock(&e->mu);
    c = cf_watermark_clock(e->wm, wall_ms());
    pthread_mutex_unlock(&e->mu);
    for (unsigned s = 0; s < e->n_shards; s++) {
        qs[s].T = c;
        qs[s].limit = n;
    }
    /* T is fixed before posting so every shard scores at the same time. */
    if (query_shards(e, qs, -1, sync, NULL) < 0)
        goto done;
    for (unsigned s = 0; s < e->n_shards; s++) {
        lists[s] = qs[s].trend;
        lens[s] = qs[s].n_trend;
    }
    size_t k = cf_trending_merge(lists, lens, e->n_shards, n, top);
    for (size_t i = 0; i < k; i++)
        top[i].score = round_score(top[i].score);
    qsort(top, k, sizeof *top, trend_cmp);
    out = cJSON_CreateObject();
    cJSON *items = cJSON_CreateArray();
    if (!out || !items) {
        cJSON_Delete(items);
        goto fail;
    }
    cJSON_AddItemToObject(out, "as_of", time_json(c));
    cJSON_AddNumberToObject(out, "half_life_ms", (double)e->cfg.half_life_ms);
    cJSON_AddItemToObject(out, "items", items);
    for (size_t i = 0; i < k; i++) {
        cJSON *it = cJSON_CreateObject();
        if (!it)
            goto fail;
        cJSON_AddItemToArray(items, it);
        if (!cJSON_AddStringToObject(it, "page_url", top[i].page_url) ||
            !cJSON_AddNumberToObject(it, "score", top[i].score))
            goto fail;
    }
    goto done;
fail:
    cJSON_Delete(out);
    out = NULL;
done:
    free_queries(e, qs);
    free(lists);
    free(lens);
    free(top);
    return out;
}

cJSON *cf_engine_trending(cf_engine *e, size_t n) { return trending(e, n, true); }

/* Merges per-shard partial lists (each in query order) into {"items": [...]}
 * of at most limit records, sorted with cmp and formatted with fmt. */
static cJSON *merge_items(cf_engine *e, cf_shard_query *qs, size_t nq, size_t limit,
                          int (*cmp)(const void *, const void *), cJSON *(*fmt)(const void *),
                          const char *user)
{
    size_t total = 0;
    for (size_t s = 0; s < nq; s++)
        total += qs[s].n_items;
    void **all = calloc(total ? total : 1, sizeof *all);
    cJSON *out = cJSON_CreateObject();
    cJSON *items = cJSON_CreateArray();
    (void)e;
    if (!all || !out || !items)
        goto fail;
    size_t k = 0;
    for (size_t s = 0; s < nq; s++)
        for (size_t i = 0; i < qs[s].n_items; i++)
            all[k++] = qs[s].items[i];
    if (cmp)
        qsort(all, k, sizeof *all, cmp);
    if (k > limit)
        k = limit;
    if (user && !cJSON_AddStringToObject(out, "user_id", user))
        goto fail;
    cJSON_AddItemToObject(out, "items", items);
    items = NULL;
    cJSON *arr = cJSON_GetObjectItemCaseSensitive(out, "items");
    for (size_t i = 0; i < k; i++) {
        cJSON *it = fmt(all[i]);
        if (!it)
            goto fail;
        cJSON_AddItemToArray(arr, it);
    }
    free(all);
    return out;
fail:
    free(all);
    cJSON_Delete(items);
    cJSON_Delete(out);
    return NULL;
}

static cJSON *fmt_w(const void *p) { return cf_wres_json(p); }
static cJSON *fmt_s(const void *p) { return cf_sres_json(p); }
static cJSON *fmt_l(const void *p) { return cf_lres_json(p); }

static size_t clamp_limit(size_t limit)
{
    if (limit < 1)
        return 1;
    return limit > MAX_QUERY_LIMIT ? MAX_QUERY_LIMIT : limit;
}

static cJSON *windows_ordered(cf_engine *e, const cf_window_query *q, bool sync, bool by_count);

static cJSON *windows(cf_engine *e, const cf_window_query *q, bool sync)
{
    return windows_ordered(e, q, sync, false);
}

/* by_count: the busiest windows first instead of the newest (interim
 * pushes keep the top of each window type). */
static cJSON *windows_ordered(cf_engine *e, const cf_window_query *q, bool sync, bool by_count)
{
    cf_shard_query *qs = new_queries(e, CF_Q_WINDOWS);
    if (!qs)
        return NULL;
    size_t limit = clamp_limit(q->limit);
    /* A page filter names one page, which lives on one shard. */
    int only = q->page_url ? (int)shard_of(e, q->page_url, strlen(q->page_url)) : -1;
    for (unsigned s = 0; s < e->n_shards; s++) {
        qs[s].limit = limit;
        qs[s].wtype = q->type;
        qs[s].state = q->state;
        qs[s].page = q->page_url;
        qs[s].page_len = q->page_url ? strlen(q->page_url) : 0;
        qs[s].by_count = by_count;
    }
    cJSON *out = NULL;
    if (query_shards(e, qs, only, sync, NULL) == 0)
        out = merge_items(e, qs, only >= 0 ? 1 : e->n_shards, limit,
                          by_count ? cf_wres_cmp_count : cf_wres_cmp, fmt_w, NULL);
    free_queries(e, qs);
    return out;
}

cJSON *cf_engine_windows(cf_engine *e, const cf_window_query *q) { return windows(e, q, true); }

/* A newest-first list kept in every shard's ring (late events, closed
 * sessions): each shard gives its newest `limit`, the merge keeps `limit`. */
static cJSON *ring_query(cf_engine *e, cf_qkind kind, size_t limit,
                         int (*cmp)(const void *, const void *), cJSON *(*fmt)(const void *))
{
    cf_shard_query *qs = new_queries(e, kind);
    if (!qs)
        return NULL;
    limit = clamp_limit(limit);
    for (unsigned s = 0; s < e->n_shards; s++)
        qs[s].limit = limit;
    cJSON *out = NULL;
    if (query_shards(e, qs, -1, true, NULL) == 0)
        out = merge_items(e, qs, e->n_shards, limit, cmp, fmt, NULL);
    free_queries(e, qs);
    return out;
}

cJSON *cf_engine_late(cf_engine *e, size_t limit)
{
    return ring_query(e, CF_Q_LATE, limit, cf_lres_cmp, fmt_l);
}

cJSON *cf_engine_sessions(cf_engine *e, size_t limit)
{
    return ring_query(e, CF_Q_SESSIONS, limit, cf_sres_cmp, fmt_s);
}

cJSON *cf_engine_user_sessions(cf_engine *e, const char *user_id, size_t len)
{
    cf_shard_query *qs = new_queries(e, CF_Q_USER_SESSIONS);
    char *user = malloc(len + 1);
    cJSON *out = NULL;
    if (!qs || !user)
        goto done;
    memcpy(user, user_id, len);
    user[len] = '\0';
    int only = (int)shard_of(e, user_id, len);
    qs[0].user = user_id;
    qs[0].user_len = len;
    if (query_shards(e, qs, only, true, NULL) == 0)
        out = merge_items(e, qs, 1, SIZE_MAX, NULL, fmt_s, user);   /* oldest first */
done:
    free_queries(e, qs);
    free(user);
    return out;
}

/* ---- stats and metrics ------------------------------------------------- */

typedef struct engine_stats {
    uint64_t accepted, rejected, duplicates, dedup_errors;
    cf_shard_stats sum;             /* summed over shards */
    size_t *depth;                  /* per shard, at the time of the request */
    int64_t watermark, clock, now;
    double rate;
    size_t dedup_ids;
    uint64_t dedup_evictions;
    size_t inflight;
    int64_t wal_lsn;
} engine_stats;

static int gather(cf_engine *e, engine_stats *st, bool sync)
{
    memset(st, 0, sizeof *st);
    pthread_mutex_lock(&e->mu);
    bool up = e->started && !e->stopping;
    pthread_mutex_unlock(&e->mu);
    if (!up)
        return -ESHUTDOWN;
    st->depth = calloc(e->n_shards, sizeof *st->depth);
    cf_shard_query *qs = new_queries(e, CF_Q_STATS);
    if (!st->depth || !qs) {
        free_queries(e, qs);
        return -ENOMEM;
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        st->depth[s] = cf_queue_depth(cf_shard_queue(e->shards[s]));
    int rc = query_shards(e, qs, -1, sync, NULL);
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
    free_queries(e, qs);
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
    st->dedup_errors = atomic_load(&e->dedup_errors);
    st->rate = (double)atomic_load(&e->rate_x1000) / 1000.0;
    st->inflight = atomic_load(&e->inflight);
    if (rc) {
        free(st->depth);
        st->depth = NULL;
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

static cJSON *stats(cf_engine *e, bool sync)
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
    cJSON_AddNumberToObject(o, "accepted", (double)st.accepted);
    cJSON_AddNumberToObject(o, "rejected", (double)st.rejected);
    cJSON_AddNumberToObject(o, "duplicates", (double)st.duplicates);
    cJSON_AddNumberToObject(o, "late_dropped", (double)st.sum.late_dropped);
    cJSON_AddNumberToObject(o, "late_updates", (double)st.sum.late_updates);
    cJSON_AddNumberToObject(o, "session_late_dropped", (double)st.sum.session_late_dropped);
    cJSON_AddNumberToObject(o, "session_late_updates", (double)st.sum.session_late_updates);
    cJSON_AddItemToObject(o, "watermark", time_json(st.watermark));
    cJSON_AddItemToObject(o, "event_clock", time_json(st.clock));
    cJSON_AddItemToObject(o, "lag_ms", st.watermark == CF_TIME_NONE
                                           ? cJSON_CreateNull()
                                           : cJSON_CreateNumber((double)(st.now - st.watermark)));
    for (unsigned s = 0; s < e->n_shards; s++)
        cJSON_AddItemToArray(depth, cJSON_CreateNumber((double)st.depth[s]));
    cJSON_AddItemToObject(o, "queue_depth", depth);
    cJSON_AddNumberToObject(o, "queue_capacity", (double)e->cfg.queue_capacity);
    cJSON_AddNumberToObject(o, "ingest_rate", st.rate);
    cJSON_AddNumberToObject(o, "open_windows", (double)st.sum.open_windows);
    cJSON_AddNumberToObject(o, "kept_windows", (double)st.sum.kept_windows);
    cJSON_AddNumberToObject(o, "open_sessions", (double)st.sum.open_sessions);
    cJSON_AddNumberToObject(o, "state_bytes", (double)st.sum.memory);
    cJSON_AddNumberToObject(o, "session_state_bytes", (double)st.sum.session_memory);
    cJSON_AddNumberToObject(o, "trending_pages", (double)st.sum.trending_pages);
    /* What the key bound cost (SPEC 6: an evicted id is accepted again). */
    cJSON_AddNumberToObject(o, "dedup_evictions", (double)st.dedup_evictions);
    cJSON_AddNumberToObject(o, "session_evictions", (double)st.sum.session_evictions);
    cJSON_AddNumberToObject(o, "window_refused",
                            (double)(st.sum.window_refused[0] + st.sum.window_refused[1]));
    cJSON_AddNumberToObject(o, "trending_evictions", (double)st.sum.trending_evictions);
    keyed_row rows[KEYED_ROWS];
    keyed_rows(e, &st, rows);
    cJSON_AddItemToObject(o, "keyed_state", keyed_json(rows));
    cJSON_AddNumberToObject(o, "ws_clients", e->push ? (double)cf_push_clients(e->push) : 0);
    cJSON_AddNumberToObject(o, "ws_dropped", e->push ? (double)cf_push_dropped(e->push) : 0);
    cJSON_AddNumberToObject(o, "shards", e->n_shards);
    cJSON_AddBoolToObject(o, "ready", cf_engine_ready(e));
    cJSON_AddBoolToObject(o, "durable", e->wal != NULL);
    free(st.depth);
    return o;
}

cJSON *cf_engine_stats(cf_engine *e) { return stats(e, true); }

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
    metric(out, "events_accepted_total", "counter", "Events accepted.", (double)st.accepted);
    metric(out, "events_rejected_total", "counter", "Events rejected as invalid.",
           (double)st.rejected);
    metric(out, "events_duplicate_total", "counter", "Events dropped as duplicates.",
           (double)st.duplicates);
    metric(out, "late_dropped_total", "counter", "Events late-dropped for windows.",
           (double)st.sum.late_dropped);
    metric(out, "late_updates_total", "counter", "Window re-firings caused by late events.",
           (double)st.sum.late_updates);
    metric(out, "session_late_dropped_total", "counter", "Events late-dropped for sessions.",
           (double)st.sum.session_late_dropped);
    metric(out, "session_late_updates_total", "counter", "Session re-firings (revision > 0).",
           (double)st.sum.session_late_updates);
    metric(out, "windows_fired_total", "counter", "Final window results emitted.",
           (double)st.sum.windows_fired);
    metric(out, "sessions_closed_total", "counter", "session_end records emitted.",
           (double)st.sum.sessions_closed);
    if (st.watermark != CF_TIME_NONE) {
        metric(out, "watermark_ms", "gauge", "Event-time watermark W (epoch ms).",
               (double)st.watermark);
        metric(out, "lag_ms", "gauge", "Wall clock minus watermark.",
               (double)(st.now - st.watermark));
    }
    if (st.clock != CF_TIME_NONE)
        metric(out, "event_clock_ms", "gauge", "Event-time clock C (epoch ms).",
               (double)st.clock);
    metric(out, "ingest_rate", "gauge", "Accepted events per second over the last second.",
           st.rate);
    metric(out, "open_windows", "gauge", "Windows not yet fired.", (double)st.sum.open_windows);
    metric(out, "kept_windows", "gauge", "Fired windows kept for allowed lateness.",
           (double)st.sum.kept_windows);
    metric(out, "open_sessions", "gauge", "Sessions not yet closed.",
           (double)st.sum.open_sessions);
    metric(out, "session_state_bytes", "gauge", "Approximate bytes of session state.",
           (double)st.sum.session_memory);
    metric(out, "trending_pages", "gauge", "Pages in the trending tables.",
           (double)st.sum.trending_pages);
    metric(out, "dedup_ids", "gauge", "event_ids remembered for deduplication.",
           (double)st.dedup_ids);
    keyed_row rows[KEYED_ROWS];
    keyed_rows(e, &st, rows);
    keyed_metric(out, "state_keys", "gauge", "Keys held per keyed operator.", rows,
                 offsetof(keyed_row, keys));
    keyed_metric(out, "state_max_keys", "gauge",
                 "Key bound in force per keyed operator (--max-keys; 0: none).", rows,
                 offsetof(keyed_row, max_keys));
    keyed_metric(out, "state_keys_evicted_total", "counter",
                 "Keys evicted at the key bound (dedup ids, session users, trending pages).",
                 rows, offsetof(keyed_row, evicted));
    keyed_metric(out, "state_keys_refused_total", "counter",
                 "Events refused at the key bound because their key was new (windows).", rows,
                 offsetof(keyed_row, refused));
    metric(out, "state_bytes", "gauge", "Approximate operator state bytes.",
           (double)st.sum.memory);
    metric(out, "queue_bytes", "gauge", "Bytes in queued shard messages.", (double)st.inflight);
    metric(out, "operator_errors_total", "counter", "Operator calls that failed (OOM).",
           (double)(st.sum.errors + st.dedup_errors));
    cf_buf_put(out, "# HELP clickflow_queue_depth Messages waiting per shard.\n"
                    "# TYPE clickflow_queue_depth gauge\n",
               strlen("# HELP clickflow_queue_depth Messages waiting per shard.\n"
                      "# TYPE clickflow_queue_depth gauge\n"));
    for (unsigned s = 0; s < e->n_shards; s++) {
        char line[128];
        int n = snprintf(line, sizeof line, "clickflow_queue_depth{shard=\"%u\"} %zu\n", s,
                         st.depth[s]);
        if (n > 0)
            cf_buf_put(out, line, (size_t)n);
    }
    metric(out, "ws_clients", "gauge", "Connected WebSocket clients.",
           e->push ? (double)cf_push_clients(e->push) : 0);
    metric(out, "ws_dropped_total", "counter", "Push messages dropped for slow clients.",
           e->push ? (double)cf_push_dropped(e->push) : 0);
    metric(out, "ws_sent_total", "counter", "Push messages sent.",
           e->push ? (double)cf_push_sent(e->push) : 0);
    metric(out, "ready", "gauge", "1 once recovery is done.", cf_engine_ready(e) ? 1 : 0);
    metric(out, "recovery_seconds", "gauge", "Time the last recovery took.",
           (double)atomic_load(&e->recovery_ms) / 1000.0);
    metric(out, "recovery_records", "gauge", "WAL records replayed by the last recovery.",
           (double)atomic_load(&e->replayed));
    metric(out, "snapshots_total", "counter", "Snapshots written.",
           (double)atomic_load(&e->snapshots));
    metric(out, "snapshot_failures_total", "counter", "Snapshots that failed.",
           (double)atomic_load(&e->snapshot_failures));
    if (e->wal) {
        metric(out, "wal_lsn", "gauge", "Last WAL record appended.",
               (double)st.wal_lsn);
        metric(out, "wal_fsyncs_total", "counter", "WAL fsync calls.",
               (double)cf_wal_fsyncs(e->wal));
        metric(out, "wal_bytes_total", "counter", "WAL bytes written.",
               (double)cf_wal_bytes(e->wal));
    }
    free(st.depth);
}

/* Logs, once, that the dedup table reached --max-keys: from then on an id
 * may be forgotten before its TTL and a retry of it counted again (SPEC 6).
 * Ticker thread; the shards log their own bounds (shard.c). */
static void check_dedup_bound(cf_engine *e)
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

/* ---- the ticker -------------------------------------------------------- */

static void publish(cf_engine *e, cf_topic topic, const char *type, cJSON *data, bool interim)
{
    size_t len = 0;
    char *text = cf_push_message(type, data, &len);
    if (text) {
        cf_push_publish(e->push, topic, text, len, interim);
        cJSON_free(text);
    }
}

/* Interim results of open windows (final=false), newest first. */
/* Interim results of the busiest open windows of each type. A push goes to
 * every client every --push-interval, so it is kept small (a dashboard shows
 * the top pages): all open windows would be megabytes per second per client
 * under load. Final results are never capped. */
static void push_interim(cf_engine *e)
{
    cJSON *all = NULL;
    for (int t = CF_WINDOW_TUMBLING; t <= CF_WINDOW_SLIDING; t++) {
        cf_window_query q = {.type = t, .page_url = NULL, .state = 0, .limit = INTERIM_PER_TYPE};
        cJSON *res = windows_ordered(e, &q, false, true);
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
    if (all && cJSON_GetArraySize(all) > 0)
        publish(e, CF_TOPIC_WINDOWS, "windows", all, true);
    else
        cJSON_Delete(all);
}

static void push_trending(cf_engine *e)
{
    cJSON *t = trending(e, 10, false);
    if (!t)
        return;
    /* "When it changed": compare the ranked items, not as_of. */
    char *items = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(t, "items"));
    if (items && (!e->last_trending || strcmp(items, e->last_trending) != 0)) {
        cJSON_free(e->last_trending);
        e->last_trending = items;
        publish(e, CF_TOPIC_TRENDING, "trending", t, false);
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

static void *ticker_main(void *arg)
{
    cf_engine *e = arg;
    int64_t next_push = mono_ms() + e->cfg.push_interval_ms;
    int64_t next_stats = mono_ms() + 1000;
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
            mlsn = maybe_mark_locked(e, now);
        pthread_mutex_unlock(&e->mu);
        /* The log only writes on commit: commit the marker so an idle
         * server's log buffer does not grow (and a failure is noticed). */
        if (e->wal && mlsn > 0 && cf_wal_commit(e->wal, mlsn) < 0 &&
            !atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging events");
        sample_rate(e, mono);
        check_dedup_bound(e);
        /* Interim results cost the shards a pass over every open window:
         * only when someone listens. */
        bool listened = e->push && cf_push_clients(e->push) > 0;
        if (listened && e->cfg.push_interval_ms > 0 && mono >= next_push) {
            next_push = mono + e->cfg.push_interval_ms;
            push_interim(e);
            push_trending(e);
        }
        if (listened && mono >= next_stats) {
            next_stats = mono + 1000;
            cJSON *st = stats(e, false);
            if (st)
                publish(e, CF_TOPIC_STATS, "stats", st, true);
        }
        if (e->wal && e->cfg.snapshot_interval_ms > 0) {
            if (e->job)
                (void)snapshot_finish(e);
            else if (mono >= e->snap_due && snapshot_begin(e) != -EAGAIN)
                e->snap_due = mono + e->cfg.snapshot_interval_ms;
        }
        pthread_mutex_lock(&e->tick_mu);
    }
    pthread_mutex_unlock(&e->tick_mu);
    return NULL;
}

/* ---- start, stop ------------------------------------------------------- */

static int recover(cf_engine *e)
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
     * so every restart hashes ids alike. */
    int krc = cf_hashkey_load(e->cfg.data_dir, e->hashkey);
    if (krc < 0) {
        cf_error("cannot read or create the hash key in %s: %s", e->cfg.data_dir,
                 strerror(-krc));
        return krc;
    }
    cf_dedup *fresh = cf_dedup_new_keyed(e->cfg.dedup_ttl_ms > 0 ? e->cfg.dedup_ttl_ms : 1,
                                         e->cfg.max_keys, e->hashkey);
    if (!fresh)
        return -ENOMEM;
    cf_dedup_free(e->dedup);
    e->dedup = fresh;
    krc = key_shards(e);
    if (krc < 0)
        return krc;
    cf_buf payload = {0};
    int64_t lsn = 0;
    int rc = cf_snapshot_load(e->cfg.data_dir, &lsn, &payload);
    if (rc == 0) {
        rc = load_snapshot(e, &payload);
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
    pthread_mutex_unlock(&e->mu);
    int64_t n = cf_wal_replay(e->wal, lsn, replay_record, e);
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
    int64_t took = mono_ms() - t0;
    atomic_store(&e->replayed, n);
    atomic_store(&e->recovery_ms, took);
    cf_info("recovery: %" PRId64 " WAL records replayed after LSN %" PRId64 " in %" PRId64
            " ms; %" PRIu64 " events accepted so far", n, lsn, took,
            (uint64_t)atomic_load(&e->accepted));
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
    int rc = 0;
    if (e->cfg.data_dir[0]) {
        rc = recover(e);
        if (!rc)
            rc = adopt_settings(e);
    } else {
        cf_info("durability off (no --data-dir): events are not logged");
        rc = key_shards(e);
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
    int64_t mlsn = maybe_mark_locked(e, wall_ms());
    e->accepting = mlsn >= 0;
    pthread_mutex_unlock(&e->mu);
    if (mlsn < 0)
        return -EIO;
    rc = pthread_create(&e->ticker, NULL, ticker_main, e);
    if (rc)
        return -rc;
    e->ticker_started = true;
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
    /* A last snapshot makes the next start fast: the shards save their
     * state behind every queued message, then stop. */
    if (e->wal && e->started && e->recovered && e->cfg.snapshot_interval_ms > 0 &&
        !atomic_load(&e->failed)) {
        if (e->job)
            while (snapshot_finish(e) == 0)
                sleep_ms(1);
        int rc;
        while ((rc = snapshot_begin(e)) == -EAGAIN)
            sleep_ms(1);
        if (rc == 0)
            while (snapshot_finish(e) == 0)
                sleep_ms(1);
    }
    for (unsigned s = 0; s < e->n_shards; s++)
        if (e->shards[s])
            cf_shard_stop(e->shards[s]);
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
    job_free(e, e->job);
    if (e->wal)
        cf_wal_close(e->wal);
    cf_dedup_free(e->dedup);
    cf_watermark_free(e->wm);
    cf_sqlrt_free(e->sql);
    cf_buf_free(&e->scratch);
    cJSON_free(e->last_trending);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->tick_mu);
    pthread_cond_destroy(&e->tick_cond);
    free(e);
}

/* ---- test seams (engine_test.h) ---------------------------------------- */

void cf_engine_test_hold(cf_engine *e, bool hold)
{
    for (unsigned s = 0; s < e->n_shards; s++)
        if (e->shards[s])
            cf_shard_hold(e->shards[s], hold);
}
