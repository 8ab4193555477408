/* sequencer: the one short critical section every request goes through
 * (engine_int.h has the picture). A request is routed and packed outside the
 * lock (prepare); under it, engine_apply_locked judges each event (duplicate or
 * not, its arrival number, the W and C it is judged against), logs the
 * accepted ones and enqueues one message per target shard; the commit is
 * waited for outside the lock, shared by concurrent requests. Recovery
 * replays the log through the same functions. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cf_dedup.h"
#include "cf_kv.h"
#include "cf_time.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "engine_test.h"
#include "log.h"
#include "shard_msg.h"
#include "sql_exec.h"
#include "sql_route.h"
#include "wal.h"
#include "zalloc.h"

#define DEDUP_PREFETCH 8                /* ids ahead whose dedup slot is prefetched */

void engine_prepared_free(cf_engine *e, prepared *p)
{
    if (p->msgs)
        for (unsigned s = 0; s < e->n_shards; s++)
            free(p->msgs[s]);
    free(p->rt);    /* one block with msgs, accepted, vmask and xoff (engine_prepare) */
    cf_sqlx_set_unref(p->set);
    cf_buf_free(&p->packed);
    cf_recent_chunk_discard(p->chunk);
    for (size_t i = 0; i < p->ndropped; i++)
        cf_recent_unref(p->dropped[i]);
    p->ndropped = 0;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

/* Keys every shard's tables with the engine's hash key (before any state). */
int engine_key_shards(cf_engine *e)
{
    for (unsigned s = 0; s < e->n_shards; s++) {
        int rc = cf_shard_set_hashkey(e->shards[s], e->hashkey);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The views mask of event i's entry in shard s (all views with one shard:
 * whether it applies them is the role's business). */
static uint64_t views_of(const cf_engine *e, const prepared *p, size_t i, unsigned s)
{
    if (e->n_shards == 1)
        return CF_SQLX_ALL_VIEWS;
    return p->vmask ? VMASK(p, i, s, e->n_shards) : 0;
}

/* Routes and packs a request without holding the sequencer lock: one
 * message per target shard (the event's page shard and user shard for the
 * built-in operators, and the shards that own its keys of the user views,
 * sql_route.h), with the events in it (roles and arrival numbers are
 * patched in under the lock), and the packed events for the WAL. The view
 * set routed for is kept in p->set: the caller routes again if another one
 * is in force under the lock. O(total event bytes + views x events). 0 or
 * -ENOMEM. */
int engine_prepare(cf_engine *e, const cf_event *evs, size_t n, prepared *p)
{
    return engine_prepare_packed(e, evs, n, NULL, NULL, p);
}

int engine_prepare_packed(cf_engine *e, const cf_event *evs, size_t n, const uint8_t *src,
                          const size_t *offs, prepared *p)
{
    memset(p, 0, sizeof *p);
    p->n = n;
    unsigned ns = e->n_shards;
    bool routed = false;
    if (ns > 1) {
        /* Whether the set reads clicks is kept with it: a strcmp per view
         * per request otherwise (0.4% of S1's samples). */
        pthread_mutex_lock(&e->route_mu);
        p->set = e->route_set ? cf_sqlx_set_ref(e->route_set) : NULL;
        routed = p->set && e->route_reads_clicks;
        pthread_mutex_unlock(&e->route_mu);
    }
    /* The per-event and per-shard arrays, and the fill counters, in one
     * zeroed block: seven callocs per request were a visible part of the
     * malloc time under single-event POSTs (issue 15). Largest alignment
     * first; p->rt owns the block. cf_zalloc, not calloc: glibc's calloc
     * skips the thread cache (zalloc.h). */
    size_t ne = n ? n : 1;
    size_t cells = routed ? ne * ns : 0;
    size_t o_vmask = ne * sizeof *p->rt;
    size_t o_xoff = o_vmask + cells * sizeof *p->vmask;
    size_t o_size = o_xoff + cells * sizeof *p->xoff;
    size_t o_msgs = o_size + ns * sizeof(size_t);
    size_t o_acc = o_msgs + ns * sizeof *p->msgs;
    size_t o_count = o_acc + ns * sizeof *p->accepted;
    uint8_t *block = cf_zalloc(o_count + ns * sizeof(uint32_t));
    int rc = -ENOMEM;
    if (!block) {
        engine_prepared_free(e, p);
        return rc;
    }
    p->rt = (route *)(void *)block;
    p->msgs = (cf_msg **)(void *)(block + o_msgs);
    p->accepted = (uint32_t *)(void *)(block + o_acc);
    size_t *size = (size_t *)(void *)(block + o_size);
    uint32_t *count = (uint32_t *)(void *)(block + o_count);
    if (routed) {
        p->vmask = (uint64_t *)(void *)(block + o_vmask);
        p->xoff = (size_t *)(void *)(block + o_xoff);
    }
    /* One allocation for the packed events instead of a doubling series of
     * reallocs and copies: the fields plus a generous header each. */
    size_t estimate = 0;
    for (size_t i = 0; !src && i < n; i++)
        estimate += 64 + evs[i].user_id_len + evs[i].page_url_len + evs[i].element_len +
                    evs[i].event_id_len + evs[i].properties_len + evs[i].name_len +
                    evs[i].enrich.len[CF_COL_REFERRER] + evs[i].enrich.len[CF_COL_BROWSER] +
                    evs[i].enrich.len[CF_COL_OS];
    /* Already packed (a replayed log record): its bytes, copied once. */
    if (src)
        estimate = offs[n];
    if (cf_buf_reserve(&p->packed, estimate) < 0)
        goto out;
    if (src)
        cf_buf_put(&p->packed, src, offs[n]);
    for (size_t i = 0; i < n; i++) {
        route *r = &p->rt[i];
        r->page_shard = engine_shard_of(e, evs[i].page_url, evs[i].page_url_len);
        r->user_shard = engine_shard_of(e, evs[i].user_id, evs[i].user_id_len);
        if (evs[i].event_id && evs[i].event_id_len > 0)
            r->id_hash = cf_dedup_hash(e->dedup, evs[i].event_id, evs[i].event_id_len);
        if (src) {
            r->pack_off = offs[i];
            r->pack_len = offs[i + 1] - offs[i];
        } else {
            r->pack_off = p->packed.len;
            if (cf_event_pack(&evs[i], &p->packed) < 0)
                goto out;
            r->pack_len = p->packed.len - r->pack_off;
        }
        /* Bots are accepted and logged but the built-in views skip them
         * (SPEC 15): they go to no shard at all. */
        r->bot = evs[i].enrich.is_bot;
        if (r->bot)
            continue;
        if (routed)
            cf_route_event(p->set, ns, &evs[i], &VMASK(p, i, 0, ns));
        size_t entry = cf_entry_size(r->pack_len);
        for (unsigned s = 0; s < ns; s++) {
            if (s == r->page_shard || s == r->user_shard || views_of(e, p, i, s)) {
                size[s] += entry;
                count[s]++;
            }
        }
    }
    for (unsigned s = 0; s < ns; s++) {
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
        if (r->bot)
            continue;
        const uint8_t *packed = p->packed.data + r->pack_off;
        uint32_t targets[2] = {r->page_shard, r->user_shard};
        for (int k = 0; k < 2; k++) {
            uint32_t s = targets[k];
            if (k == 1 && s == r->page_shard) {
                r->user_off = SIZE_MAX;
                break;
            }
            /* A blank head: role, arrival number, W and C are stamped
             * under the lock (engine_apply_locked). */
            size_t at = size[s];
            size[s] += cf_entry_put(p->msgs[s]->data + at, packed, r->pack_len,
                                    views_of(e, p, i, s));
            if (k == 0)
                r->page_off = at;
            else
                r->user_off = at;
        }
        for (unsigned s = 0; routed && s < ns; s++) {
            XOFF(p, i, s, ns) = SIZE_MAX;
            if (s == r->page_shard || s == r->user_shard || !VMASK(p, i, s, ns))
                continue;
            XOFF(p, i, s, ns) = size[s];
            size[s] += cf_entry_put(p->msgs[s]->data + size[s], packed, r->pack_len,
                                    VMASK(p, i, s, ns));
        }
    }
    p->chunk = cf_recent_chunk_new();
    rc = p->chunk ? 0 : -ENOMEM;
out:
    if (rc)
        engine_prepared_free(e, p);
    return rc;
}

/* True when every shard the request targets can take one more message
 * (keeping the reserved slots) and the byte budget allows it. */
bool engine_has_room_locked(cf_engine *e, const prepared *p)
{
    if (atomic_load(&e->inflight) + p->bytes > e->inflight_cap)
        return false;
    for (unsigned s = 0; s < e->n_shards; s++)
        if (p->msgs[s] && cf_queue_space(cf_shard_queue(e->shards[s])) <= RESERVED_SLOTS)
            return false;
    return true;
}

bool engine_all_have_room_locked(cf_engine *e)
{
    for (unsigned s = 0; s < e->n_shards; s++)
        if (cf_queue_space(cf_shard_queue(e->shards[s])) == 0)
            return false;
    return true;
}

void engine_enqueue_locked(cf_engine *e, unsigned s, cf_msg *m)
{
    atomic_fetch_add(&e->inflight, cf_msg_bytes(m));
    /* Room was checked under this same lock and only the consumer changes
     * it since, by making more. */
    bool ok;
    if (e->defer_wakes && s < 64) {
        ok = cf_queue_push_quiet(cf_shard_queue(e->shards[s]), m);
        atomic_fetch_or(&e->wake_due, UINT64_C(1) << s);
    } else {
        ok = cf_queue_push(cf_shard_queue(e->shards[s]), m);
    }
    (void)ok;
}

/* Outside mu: wakes the shards that engine_enqueue_locked left unwoken. Any
 * thread's call wakes for every submit's pushes before it, since a push
 * precedes setting its bit. */
static void wake_deferred(cf_engine *e)
{
    if (atomic_load_explicit(&e->wake_due, memory_order_relaxed) == 0)
        return; /* our own bits are seen; others are theirs to wake */
    uint64_t due = atomic_exchange(&e->wake_due, 0);
    for (unsigned s = 0; due; s++, due >>= 1)
        if (due & 1)
            cf_queue_wake(cf_shard_queue(e->shards[s]));
}

/* The clock dedup judges by: the max accepted timestamp and the clock of the
 * last marker, both recorded in the WAL, so a replay decides identically. */
int64_t engine_dedup_clock_locked(const cf_engine *e)
{
    int64_t mx = cf_watermark_max_ts(e->wm);
    if (mx == CF_TIME_NONE || (e->mark_clock != CF_TIME_NONE && e->mark_clock > mx))
        return e->mark_clock;
    return mx;
}

int engine_wal_fail_locked(cf_engine *e, int64_t rc)
{
    if (!atomic_exchange(&e->failed, 1))
        cf_error("write-ahead log append failed (%s): no longer acknowledging events",
                 strerror((int)-rc));
    return -EIO;
}

/* Logs counter increments that no events record carries (duplicates,
 * rejected events), so a replay restores them exactly. Returns the LSN, 0
 * without a WAL, or -EIO. */
int64_t engine_log_counters_locked(cf_engine *e, uint64_t dups, uint64_t rejected)
{
    if (!e->wal || atomic_load(&e->failed))
        return 0;
    uint8_t payload[16];
    put_le64(payload, dups);
    put_le64(payload + 8, rejected);
    int64_t lsn = cf_wal_append(e->wal, CF_WAL_COUNTERS, payload, sizeof payload);
    return lsn < 0 ? engine_wal_fail_locked(e, lsn) : lsn;
}

/* Sends a watermark marker (W, C) to every shard, logging it first. The
 * caller checked room. Returns the record's LSN (0 without a WAL) or -EIO. */
int64_t engine_send_marker_locked(cf_engine *e, int64_t w, int64_t c, bool log)
{
    int64_t lsn = 0;
    if (log && e->wal) {
        uint8_t payload[16];
        put_le64(payload, (uint64_t)w);
        put_le64(payload + 8, (uint64_t)c);
        lsn = cf_wal_append(e->wal, CF_WAL_WATERMARK, payload, sizeof payload);
        if (lsn < 0)
            return engine_wal_fail_locked(e, lsn);
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
        engine_enqueue_locked(e, s, m);
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
int64_t engine_maybe_mark_locked(cf_engine *e, int64_t now)
{
    int64_t w = cf_watermark_advance(e->wm, now);
    if (w == CF_TIME_NONE || (e->sent_wm != CF_TIME_NONE && w <= e->sent_wm))
        return 0;
    if (!engine_all_have_room_locked(e))
        return 0;
    return engine_send_marker_locked(e, w, cf_watermark_clock(e->wm, now), true);
}

/* Hands the accepted events of a request to the recent-events ring: the
 * packed buffer itself when nothing was a duplicate (no copy under the
 * lock), else a filtered copy. Without memory for the copy the request is
 * just not kept for reads. */
static void keep_recent_locked(cf_engine *e, prepared *p, const uint8_t *is_dup, bool any_dup,
                               size_t accepted, uint64_t first_seq)
{
    if (!p->chunk)
        return;
    uint8_t *bytes;
    size_t len, cap;
    if (!any_dup || !is_dup) {
        bytes = p->packed.data;
        len = p->packed.len;
        cap = p->packed.cap;
        memset(&p->packed, 0, sizeof p->packed);
    } else {
        cf_buf b = {0};
        for (size_t i = 0; i < p->n; i++)
            if (!is_dup[i])
                cf_buf_put(&b, p->packed.data + p->rt[i].pack_off, p->rt[i].pack_len);
        if (b.oom) {
            cf_buf_free(&b);
            return;
        }
        bytes = b.data;
        len = b.len;
        cap = b.cap;
    }
    p->ndropped = cf_recent_add_deferred(e->recent, p->chunk, bytes, len, cap, accepted, first_seq, p->dropped,
                                         sizeof p->dropped / sizeof *p->dropped);
    p->chunk = NULL;
}

/* Applies a prepared request under the lock: dedup, clock, arrival numbers,
 * per-event W and C stamps, WAL record, enqueue. replay: the events come
 * from the WAL, so they are all accepted (dedup state is still rebuilt) and
 * nothing is logged again.
 * Returns the WAL LSN (0 without a WAL or when nothing was accepted), or
 * -EIO. The caller checked room. */
int64_t engine_apply_locked(cf_engine *e, prepared *p, const cf_event *evs, uint8_t *is_dup,
                     bool replay, size_t *ret_accepted)
{
    size_t accepted = 0, dups = 0, bots = 0;
    uint64_t first_seq = e->next_seq;
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
                                          ev->ts, engine_dedup_clock_locked(e));
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
        int64_t w = cf_watermark_of_events(e->wm, e->sent_wm);
        int64_t c = engine_dedup_clock_locked(e);
        cf_watermark_observe(e->wm, ev->ts);
        uint64_t seq = e->next_seq++;
        if (r->bot) {
            /* Accepted, clocked and logged like any event; no shard entry. */
            bots++;
            accepted++;
            continue;
        }
        /* With user views running, a shard gets the event for the views
         * whose key it owns (sql_route.h); one shard runs them all. */
        bool sql_runs = atomic_load(&e->sql_runs);
        uint8_t one = e->n_shards == 1 && sql_runs ? CF_ROLE_SQL : 0;
        uint8_t page_sql = one, user_sql = one;
        if (p->vmask) {
            page_sql = VMASK(p, i, r->page_shard, e->n_shards) ? CF_ROLE_SQL : 0;
            user_sql = VMASK(p, i, r->user_shard, e->n_shards) ? CF_ROLE_SQL : 0;
        }
        cf_entry_head h = {
            .role = (uint8_t)(CF_ROLE_PAGE | (r->user_off == SIZE_MAX ? CF_ROLE_USER : 0) | page_sql),
            .seq = seq,
            .wm = w,
            .clock = c,
        };
        cf_entry_stamp(p->msgs[r->page_shard]->data + r->page_off, &h);
        p->accepted[r->page_shard]++;
        if (r->user_off != SIZE_MAX) {
            h.role = (uint8_t)(CF_ROLE_USER | user_sql);
            cf_entry_stamp(p->msgs[r->user_shard]->data + r->user_off, &h);
            p->accepted[r->user_shard]++;
        }
        for (unsigned s = 0; p->vmask && s < e->n_shards; s++) {
            size_t off = XOFF(p, i, s, e->n_shards);
            if (off == SIZE_MAX)
                continue;
            h.role = CF_ROLE_SQL;
            cf_entry_stamp(p->msgs[s]->data + off, &h);
            p->accepted[s]++;
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
                return engine_wal_fail_locked(e, -ENOMEM);
            payload = e->scratch.data;
            len = e->scratch.len;
        }
        lsn = cf_wal_append(e->wal, CF_WAL_EVENTS, payload, len);
        if (lsn < 0)
            return engine_wal_fail_locked(e, lsn);
    }
    if (dups > 0 && !replay) {
        int64_t clsn = engine_log_counters_locked(e, dups, 0);
        if (clsn < 0)
            return clsn;
        if (clsn > lsn)
            lsn = clsn;
    }
    if (accepted > 0)
        keep_recent_locked(e, p, is_dup, any_dup, accepted, first_seq);
    for (unsigned s = 0; s < e->n_shards; s++) {
        if (p->msgs[s] && p->accepted[s] > 0) {
            if (replay) {
                engine_enqueue_locked(e, s, p->msgs[s]);
            } else {
                /* Woken after the lock (wake_shards): a wake-up under it
                 * made the other request threads wait for the futex call
                 * and often for the woken shard's time slice too. */
                atomic_fetch_add(&e->inflight, cf_msg_bytes(p->msgs[s]));
                bool ok = cf_queue_push_quiet(cf_shard_queue(e->shards[s]), p->msgs[s]);
                (void)ok;   /* room was checked under this lock */
            }
            p->msgs[s] = NULL;  /* now owned by the shard */
        }
    }
    atomic_fetch_add(&e->accepted, accepted);
    atomic_fetch_add(&e->duplicates, dups);
    atomic_fetch_add(&e->bots, bots);
    *ret_accepted = accepted;
    return lsn;
}

/* The wake-ups engine_apply_locked left for after the lock: every shard that got
 * a message of p. */
static void wake_shards(cf_engine *e, const prepared *p)
{
    for (unsigned s = 0; s < e->n_shards; s++)
        if (p->accepted[s] > 0)
            cf_queue_wake(cf_shard_queue(e->shards[s]));
}

/* Group commit: waits, outside the lock, until the log holds everything up
 * to the largest of the request's records (lsn, mlsn) and what it saw logged
 * before it (seen), so concurrent requests share one write/fsync. 0, or -EIO
 * after marking the engine failed. */
int engine_wait_committed(cf_engine *e, int64_t lsn, int64_t mlsn, int64_t seen)
{
    int64_t upto = mlsn > lsn ? mlsn : lsn;
    if (seen > upto)
        upto = seen;
    if (e->wal && upto > 0 && cf_wal_commit(e->wal, upto) < 0) {
        if (!atomic_exchange(&e->failed, 1))
            cf_error("write-ahead log commit failed: no longer acknowledging events");
        return -EIO;
    }
    return 0;
}

int cf_engine_commit(cf_engine *e, int64_t upto)
{
    return engine_wait_committed(e, upto, 0, 0);
}

bool cf_engine_commit_slow(const cf_engine *e)
{
    return e->wal && e->cfg.fsync == CF_FSYNC_ALWAYS;
}

int cf_engine_submit(cf_engine *e, const cf_event *evs, size_t n, uint8_t *ret_is_dup,
                     cf_submit_result *ret)
{
    int64_t upto = 0;
    cf_submit_result res = {0, 0};
    int rc = cf_engine_submit_nowait(e, evs, n, ret_is_dup, &res, &upto);
    if (rc)
        return rc;
    rc = engine_wait_committed(e, upto, 0, 0);
    if (rc < 0)
        return rc;
    if (ret)
        *ret = res;
    return 0;
}

/* Under mu: the new table of a dedup doubling that this submit started
 * (or the first to see it), for the caller to map after unlocking. The
 * puts that migrate entries into it, and the new ids landing in it, took
 * its page faults inside the lock: 2-4 ms of CPU in the longest holds of a
 * 1000-event batch (perf, T1). NULL otherwise. */
static void grow_table_locked(cf_engine *e, void **ret, size_t *ret_len)
{
    void *t;
    size_t len;
    if (!cf_dedup_growing_table(e->dedup, &t, &len) || t == e->dedup_prefaulted)
        return;
    e->dedup_prefaulted = t;
    e->submit_prefaults++;
    *ret = t;
    *ret_len = len;
}

/* The ticker's part of the dedup table's growth (engine_int.h): when a
 * doubling is near, the next table is allocated and its pages mapped
 * ahead, off the lock (on the cf-dedup-prep thread, dedup_prep.c), and
 * handed to the store for that doubling. Allocated at the doubling itself,
 * inside the submit that triggers it, the table's first thousands of moved
 * entries faulted its pages in inside that hold of the lock (a 1000-event
 * batch moves up to 16000 entries). */
void engine_dedup_spare(cf_engine *e)
{
    uint32_t cap = 0;
    void *retired = NULL;
    size_t retired_len = 0;
    pthread_mutex_lock(&e->mu);
    size_t bytes = e->dedup ? cf_dedup_next_table(e->dedup, &cap) : 0;
    /* The old table of a doubling that ended, taken here and freed on the
     * cf-dedup-prep thread: the put that moved its last entry unmapped
     * 32-128 MB inside its hold (3-9 ms of CPU at T1's load), and a request
     * thread freeing it after its own hold would add that to its request's
     * latency. Not freed on the ticker either (dedup_prep.c says why). */
    if (e->dedup && cf_dedup_take_retired(e->dedup, &retired, &retired_len))
        e->retired_frees++;
    pthread_mutex_unlock(&e->mu);
    if (retired)
        engine_dedup_prep_retire(e, retired, retired_len);
    engine_dedup_prep_post(e, bytes, cap);
}

uint64_t cf_engine_test_retired_frees(cf_engine *e)
{
    pthread_mutex_lock(&e->mu);
    uint64_t n = e->retired_frees;
    pthread_mutex_unlock(&e->mu);
    return n;
}

/* The submit without the commit wait (engine.h): the HTTP server parks the
 * request on *ret_upto instead of blocking (http_park.c). */
int cf_engine_submit_nowait(cf_engine *e, const cf_event *evs, size_t n, uint8_t *ret_is_dup,
                            cf_submit_result *ret, int64_t *ret_upto)
{
    *ret_upto = 0;
    if (atomic_load(&e->failed))
        return -EIO;
    uint8_t *is_dup = ret_is_dup;
    uint8_t *own_dup = NULL;
    /* Small requests (nearly all) keep their flags on the stack. */
    uint8_t small_dup[64];
    if (!is_dup && n > 0) {
        /* The WAL payload filter needs to know which events were dups. */
        is_dup = n <= sizeof small_dup ? small_dup : (own_dup = malloc(n));
        if (!is_dup)
            return -ENOMEM;
    }
    if (is_dup)
        memset(is_dup, 0, n);
    prepared p;
    int rc;
    size_t accepted = 0;
    int64_t lsn = 0, mlsn = 0, seen = 0;
    void *grown = NULL;
    size_t grown_len = 0;
again:
    rc = engine_prepare(e, evs, n, &p);
    if (rc) {
        free(own_dup);
        return rc;
    }
    pthread_mutex_lock(&e->mu);
    if (e->n_shards > 1 && p.set != e->route_set) {
        /* The views changed since the request was routed: route it again
         * for the set in force (rare: once per change). */
        pthread_mutex_unlock(&e->mu);
        engine_prepared_free(e, &p);
        goto again;
    }
    rc = engine_gate_locked(e);
    if (rc == 0 && !engine_has_room_locked(e, &p))
        rc = -EAGAIN;   /* nothing accepted, nothing changed */
    if (rc == 0) {
        e->defer_wakes = true;
        lsn = engine_apply_locked(e, &p, evs, is_dup, false, &accepted);
        if (lsn >= 0)
            mlsn = engine_maybe_mark_locked(e, wall_ms());
        e->defer_wakes = false;
        if (lsn < 0 || mlsn < 0)
            rc = -EIO;
        /* A duplicate's first copy may still be in flight (appended by a
         * request whose commit has not returned): wait for every record
         * logged so far, so a 202 that reports a duplicate is never sent
         * before the original is durable. */
        if (e->wal)
            seen = cf_wal_last_lsn(e->wal);
        grow_table_locked(e, &grown, &grown_len);
    }
    pthread_mutex_unlock(&e->mu);
    engine_prefault(grown, grown_len);
    wake_shards(e, &p);
    wake_deferred(e);   /* the markers engine_maybe_mark_locked sent */
    engine_prepared_free(e, &p);
    free(own_dup);
    if (rc)
        return rc;
    /* What must be durable before the 202: the request's records and every
     * record logged before it (see seen above). */
    int64_t upto = mlsn > lsn ? mlsn : lsn;
    *ret_upto = seen > upto ? seen : upto;
    if (ret) {
        ret->accepted = accepted;
        ret->duplicates = n - accepted;
    }
    return 0;
}

int cf_engine_raise_watermark(cf_engine *e, int64_t wm, int64_t *ret_wm)
{
    int rc = 0;
    int64_t lsn = 0, w = CF_TIME_NONE;
    pthread_mutex_lock(&e->mu);
    rc = engine_gate_locked(e);
    if (rc == 0) {
        cf_watermark_raise(e->wm, wm);
        lsn = engine_maybe_mark_locked(e, wall_ms());
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

/* Rejected events are logged like duplicates (a CF_WAL_COUNTERS record,
 * committed before the 202 goes out), so the count survives a crash. */
void cf_engine_count_rejected(cf_engine *e, size_t n)
{
    if (n == 0)
        return;
    pthread_mutex_lock(&e->mu);
    int64_t lsn = e->accepting ? engine_log_counters_locked(e, 0, n) : 0;
    atomic_fetch_add(&e->rejected, n);
    pthread_mutex_unlock(&e->mu);
    if (e->wal && lsn > 0 && cf_wal_commit(e->wal, lsn) < 0 && !atomic_exchange(&e->failed, 1))
        cf_error("write-ahead log commit failed: no longer acknowledging events");
}
