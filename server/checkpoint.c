/* checkpoint: the engine's snapshots (the file is snapshot.c's). The ticker
 * starts one with a barrier in every queue (a consistent cut at an LSN),
 * the shards save their parts, the ticker collects them, writes the file
 * and drops the log it covers. A start loads the newest one before the log
 * is replayed (checkpoint_load.c). The payload layout (docs/DESIGN.md,
 * "Snapshot payload") is written here and read there only. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>

#include "cf_dedup.h"
#include "cf_watermark.h"
#include "engine_int.h"
#include "engine_test.h"
#include "log.h"
#include "shard_msg.h"
#include "snapshot.h"
#include "sql_exec.h"
#include "tables.h"
#include "wal.h"

#include "checkpoint_int.h"

/* The view settings record: the snapshot's fingerprint below and the
 * CF_WAL_SETTINGS payload (recovery.c) alike. */
void engine_put_settings(cf_buf *b, const cf_view_settings *vs)
{
    cf_buf_put_i64(b, vs->window_ms);
    cf_buf_put_i64(b, vs->slide_size_ms);
    cf_buf_put_i64(b, vs->slide_ms);
    cf_buf_put_i64(b, vs->session_gap_ms);
    cf_buf_put_i64(b, vs->half_life_ms);
    cf_buf_put_i64(b, vs->allowed_lateness_ms);
}

bool engine_get_settings(cf_reader *r, cf_view_settings *vs)
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

/* The layout a snapshot's state depends on: the shard count (a restart
 * with another one re-distributes the state by key) and the view settings
 * the shards ran at the cut (a restart with other ones loads the state as
 * it was and switches later, see engine_adopt_settings). */
static void put_fingerprint(const cf_engine *e, cf_buf *b)
{
    cf_buf_put_u32(b, e->n_shards);
    engine_put_settings(b, &e->shard_vs);
}

/* Slots of the dedup table each step of its incremental save examines
 * under the sequencer lock (dedup_bench at 1M ids: about 0.3-0.5 ms of CPU
 * per step), and slots each recorded id adds. Under ingest the submits
 * drive the save (16 slots per id, inside their own hold of the lock: a
 * 1000-event batch holds it about 1 ms of CPU instead of 0.33 during a
 * save) and the ticker takes a few steps per tick; on an idle sequencer
 * the ticker steps until done. A ticker that stepped in a loop (lock, step,
 * unlock, yield) starved the submits: a mutex lets the unlocker take it
 * again before the woken waiter runs, and T1's probe then stalled for the
 * whole save (1-2 s on the loaded 2-core machine). */
#define SNAP_DEDUP_STEP 4096u
#define SNAP_DEDUP_PUT_STEP 16u
/* Steps the ticker takes per tick under ingest: 8 x 4096 slots every
 * 100 ms keeps a save moving (a 2M-slot table in about 6 s) when the
 * events carry no event_id, in few enough short holds not to starve. */
#define SNAP_DEDUP_TICK_STEPS 8u

/* Incremental dedup snapshots (issue 15, T1): a whole save wrote every id
 * into every snapshot (30-110 MB every 2 s in T1, through the sequencer
 * lock's holds and the disk), though most were in the snapshot before. The
 * table's change journal (cf_dedup_journal_start) gives a delta at the cut
 * instead: the ids recorded and dropped since the last snapshot, taken in
 * O(1) under the lock. A restart folds the chain: the whole save, then each
 * delta in order (each read from its own snapshot file, which the
 * retention keeps, see cf_snapshot_writev_keep). A whole save again after
 * SNAP_DEDUP_CHAIN_MAX deltas, when the deltas together would outgrow it,
 * and after any failed snapshot. */
#define SNAP_DEDUP_CHAIN_MAX 8u
/* The journal's own bound: past the whole save's size it is dropped (a
 * whole save is due then anyway). */
#define SNAP_DEDUP_JOURNAL_MIN ((size_t)16 << 20)
/* The spare buffer handed to the journal at a cut: the last delta's size
 * and a quarter, at least this (allocated and mapped outside the lock). */
#define SNAP_DEDUP_SPARE_MIN ((size_t)1 << 20)

/* Whether the dedup table of the snapshot cut now, at lsn, is saved as a
 * delta of the newest snapshot's table: the journal runs from that
 * snapshot's cut, the new one has a larger LSN (one at the same LSN would
 * replace the file of its own base), the chain is short, and its deltas
 * with this one stay within what a whole save would write now (the whole
 * save's bytes per id at its cut, times the ids now): a restart then reads
 * at most about twice a whole save. A table that only grows (T1) stays on
 * deltas; one whose ids turn over saves whole once the deltas add up. */
static bool dedup_delta_due(const cf_engine *e, int64_t lsn)
{
    size_t j = cf_dedup_journal_bytes(e->dedup);
    if (!e->dd_delta_ok || e->snapshot_lsn <= 0 || lsn <= e->snapshot_lsn ||
        e->dd_chain_len >= SNAP_DEDUP_CHAIN_MAX || j == SIZE_MAX)
        return false;
    double per_id = e->dd_base_ids ? (double)e->dd_base_bytes / (double)e->dd_base_ids : 64.0;
    return (double)(e->dd_chain_bytes + j) <= per_id * (double)cf_dedup_count(e->dedup);
}

/* Sequencer part of a snapshot (under mu): the fields into out, the SQL
 * definitions and tables into tail, and the cut of the dedup table: a
 * delta (dedup_delta_due), or a whole save whose entries are written into
 * dedup later (snapshot_step_dedup: writing them here stopped ingest for as
 * long as the table took, 0.7 s for 1M ids), from whose cut the journal
 * starts. spare: the journal's next buffer. */
static int save_sequencer_locked(cf_engine *e, cf_snapjob *job, int64_t lsn, cf_buf *spare)
{
    cf_buf *out = &job->parts[e->n_shards], *tail = &job->seq_tail;
    cf_buf_put_i64(out, cf_watermark_max_ts(e->wm));
    cf_buf_put_i64(out, e->sent_wm);
    cf_buf_put_i64(out, e->mark_clock);
    cf_buf_put_u64(out, e->next_seq);
    cf_buf_put_u64(out, atomic_load(&e->accepted));
    cf_buf_put_u64(out, atomic_load(&e->duplicates));
    cf_buf_put_u64(out, atomic_load(&e->rejected));
    cf_buf_put(out, e->hashkey, sizeof e->hashkey);
    int rc = cf_sqlrt_save(e->sql, tail);
    if (rc >= 0) {
        cf_buf tmp = {0};
        rc = cf_tables_save(e->tables, &tmp);
        if (rc >= 0)
            cf_buf_put_str(tail, (const char *)tmp.data, tmp.len);
        cf_buf_free(&tmp);
    }
    if (rc >= 0 && (out->oom || tail->oom))
        rc = -ENOMEM;
    /* Last, as it cannot be undone: from here on the store refers to dedup,
     * or the journal's operations are the job's. */
    if (rc >= 0) {
        job->dedup_base = 0;
        if (dedup_delta_due(e, lsn) &&
            cf_dedup_delta_cut(e->dedup, &job->dedup, &job->dedup_ops, spare) == 0) {
            job->dedup_base = e->snapshot_lsn;
            e->dd_last_ops = job->dedup_ops.len;
        } else {
            cf_buf_reset(&job->dedup);
            job->dedup_ids = cf_dedup_count(e->dedup);
            rc = cf_dedup_save_begin(e->dedup, &job->dedup, SNAP_DEDUP_PUT_STEP);
            /* Failing, the next snapshot is whole again. */
            if (rc >= 0)
                (void)cf_dedup_journal_start(
                    e->dedup, SNAP_DEDUP_JOURNAL_MIN + cf_dedup_count(e->dedup) * 48, spare);
        }
        /* Until this snapshot is written, the journal runs from a cut that
         * no snapshot holds. */
        e->dd_delta_ok = false;
    }
    return rc < 0 ? rc : 0;
}

/* Moves the dedup table's save on, one bounded step per hold of the
 * sequencer lock: SNAP_DEDUP_TICK_STEPS steps, then more only while no
 * submit runs between two of them (the submits drive the save meanwhile,
 * see SNAP_DEDUP_PUT_STEP); stops when the lock is taken. 0 (done or
 * not), or -ENOMEM (the snapshot fails). */
static int snapshot_save_dedup(cf_engine *e, cf_snapjob *job)
{
    int rc = 0;
    uint64_t last_seq = 0;
    unsigned steps = 0;
    while (job->dedup_saving) {
        if (pthread_mutex_trylock(&e->mu) != 0)
            break;
        uint64_t seq = e->next_seq;
        rc = cf_dedup_save_step(e->dedup, SNAP_DEDUP_STEP);
        pthread_mutex_unlock(&e->mu);
        if (rc != 0) {
            job->dedup_saving = false;
            break;
        }
        /* Ingest is on: the next tick goes on (events without an event_id
         * step nothing, so the ticker's steps must keep a save moving). */
        if (++steps >= SNAP_DEDUP_TICK_STEPS && seq != last_seq)
            break;
        last_seq = seq;
        sched_yield();
    }
    return rc < 0 ? rc : 0;
}

void engine_job_free(cf_engine *e, cf_snapjob *job)
{
    if (!job)
        return;
    /* The dedup store must not keep a pointer to the buffer freed below. */
    if (job->dedup_saving) {
        pthread_mutex_lock(&e->mu);
        (void)cf_dedup_save_finish(e->dedup);
        pthread_mutex_unlock(&e->mu);
    }
    cf_buf_free(&job->dedup);
    cf_buf_free(&job->dedup_ops);
    cf_buf_free(&job->seq_tail);
    for (unsigned s = 0; s < e->n_shards + 1; s++)
        cf_buf_free(&job->parts[s]);
    free(job->parts);
    cf_recent_release(job->recent, job->n_recent);
    free(job);
}

/* Maps the pages of [p, p + len) in advance, outside the sequencer lock
 * (engine_int.h). The dedup save's output is reserved whole at the cut but not touched, so
 * its pages were faulted in (zeroed by the kernel) by the save's steps,
 * inside the lock's holds: a third of a 1000-event batch's dedup time in a
 * snapshot (perf, T1). The submits may be writing into the buffer
 * meanwhile: MADV_POPULATE_WRITE only maps missing pages, it never writes,
 * so it does not race with them. A kernel without it (before 5.14) just
 * keeps the faults.
 *
 * In pieces of PREFAULT_PIECE: the call holds the process's mmap lock for
 * reading while it maps, and an mmap or mremap of another thread (a
 * malloc or realloc of a large block, the log's next segment) waits for
 * the write side; every page fault of every other thread then queues
 * behind that writer. Over a 100 MB range in one call that was a stall of
 * tens of ms for everyone (a trace of T1: an mmap waited 66 ms). */
#define PREFAULT_PIECE ((uintptr_t)2 << 20)
size_t engine_prefault(void *p, size_t len)
{
    size_t calls = 0;
#ifdef MADV_POPULATE_WRITE
    long page = sysconf(_SC_PAGESIZE);
    if (!p || page <= 0 || len < (size_t)page)
        return 0;
    uintptr_t lo = ((uintptr_t)p + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)p + len) & ~((uintptr_t)page - 1);
    for (uintptr_t at = lo; at < hi; at += PREFAULT_PIECE) {
        uintptr_t end = hi - at > PREFAULT_PIECE ? at + PREFAULT_PIECE : hi;
        calls++;
        if (madvise((void *)at, end - at, MADV_POPULATE_WRITE) < 0)
            break;
    }
#else
    (void)p;
    (void)len;
#endif
    return calls;
}

size_t cf_engine_test_prefault(void *p, size_t len)
{
    return engine_prefault(p, len);
}

/* Starts a snapshot: under the sequencer lock notes the last LSN, saves the
 * sequencer state and puts a barrier in every queue (a consistent cut: the
 * shards save exactly the effect of the records <= lsn). parts[n_shards]
 * holds the sequencer part. 0, -EAGAIN (no room now), or -errno. */
int engine_snapshot_begin(cf_engine *e)
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
    uint8_t *pf_base = NULL;
    size_t pf_len = 0;
    for (unsigned s = 0; s < e->n_shards && !rc; s++) {
        msgs[s] = cf_msg_new(CF_MSG_BARRIER, 0);
        if (!msgs[s])
            rc = -ENOMEM;
        else
            msgs[s]->snap = job;
    }
    /* The dedup journal's next buffer, allocated and mapped here, outside
     * the lock whose holds will fill it; kept for the next try when there
     * is no room now (under overload the ticker tries every tick). */
    cf_buf *spare = &e->dd_spare;
    size_t want = e->dd_last_ops + e->dd_last_ops / 4;
    if (want < SNAP_DEDUP_SPARE_MIN)
        want = SNAP_DEDUP_SPARE_MIN;
    if (!rc && spare->cap < want) {
        cf_buf_free(spare);
        if (cf_buf_reserve(spare, want) == 0)
            engine_prefault(spare->data, spare->cap);
    }
    if (!rc) {
        pthread_mutex_lock(&e->mu);
        int64_t lsn = e->wal ? cf_wal_last_lsn(e->wal) : 0;
        if (!engine_all_have_room_locked(e))
            rc = -EAGAIN;
        else
            rc = save_sequencer_locked(e, job, lsn, spare);
        job->dedup_saving = rc == 0 && job->dedup_base == 0;
        if (job->dedup_saving) {
            pf_base = job->dedup.data;
            pf_len = job->dedup.cap;
        }
        /* References only: the bytes are copied by the ticker. */
        if (!rc && cf_recent_take(e->recent, SIZE_MAX, &job->recent, &job->n_recent) < 0)
            rc = -ENOMEM;
        if (!rc) {
            job->lsn = lsn;
            job->bots = atomic_load(&e->bots);
            for (unsigned s = 0; s < e->n_shards; s++) {
                engine_enqueue_locked(e, s, msgs[s]);
                msgs[s] = NULL;
            }
        }
        pthread_mutex_unlock(&e->mu);
    }
    if (!rc)
        engine_prefault(pf_base, pf_len);
    if (msgs)
        for (unsigned s = 0; s < e->n_shards; s++)
            free(msgs[s]);
    free(msgs);
    if (rc) {
        engine_job_free(e, job);
        return rc;
    }
    e->job = job;
    return 0;
}

/* A snapshot payload as a list of pieces for cf_snapshot_writev: runs of
 * the small frame buffer (lengths, counters) between borrowed blobs. A
 * frame run is kept as an offset until pieces_close, since the frame's
 * buffer may move as it grows. */
typedef struct snap_pieces {
    cf_buf frame;
    struct iovec *iov;      /* frame runs: iov_base NULL, iov_len = offset */
    size_t *run_end;        /* frame runs: end offset; borrowed: unused */
    size_t n, cap;
    size_t frame_done;      /* frame bytes already in a run */
    bool oom;
} snap_pieces;

static void pieces_push(snap_pieces *ps, const void *p, size_t off, size_t end)
{
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? ps->cap * 2 : 16;
        struct iovec *v = realloc(ps->iov, cap * sizeof *v);
        if (v)
            ps->iov = v;
        size_t *r = v ? realloc(ps->run_end, cap * sizeof *r) : NULL;
        if (r)
            ps->run_end = r;
        if (!v || !r) {
            ps->oom = true;
            return;
        }
        ps->cap = cap;
    }
    ps->iov[ps->n] = (struct iovec){(void *)(uintptr_t)p, p ? end : off};
    ps->run_end[ps->n] = end;
    ps->n++;
}

/* Ends the frame run written since the last borrowed piece. */
static void pieces_cut_frame(snap_pieces *ps)
{
    if (ps->frame.len > ps->frame_done)
        pieces_push(ps, NULL, ps->frame_done, ps->frame.len);
    ps->frame_done = ps->frame.len;
}

/* Borrows p[0..len) (not copied: it must live until pieces_free). */
static void pieces_add(snap_pieces *ps, const void *p, size_t len)
{
    pieces_cut_frame(ps);
    if (len > 0)
        pieces_push(ps, p, 0, len);
}

/* The same, length-prefixed as cf_buf_put_str writes it. */
static void pieces_add_str(snap_pieces *ps, const void *p, size_t len)
{
    if (len > UINT32_MAX) {
        ps->oom = true;
        return;
    }
    cf_buf_put_u32(&ps->frame, (uint32_t)len);
    pieces_add(ps, p, len);
}

/* Turns the frame runs' offsets into pointers. 0 or -ENOMEM. */
static int pieces_close(snap_pieces *ps)
{
    pieces_cut_frame(ps);
    if (ps->oom || ps->frame.oom)
        return -ENOMEM;
    for (size_t i = 0; i < ps->n; i++)
        if (!ps->iov[i].iov_base) {
            size_t off = ps->iov[i].iov_len;
            ps->iov[i].iov_base = ps->frame.data + off;
            ps->iov[i].iov_len = ps->run_end[i] - off;
        }
    return 0;
}

static void pieces_free(snap_pieces *ps)
{
    cf_buf_free(&ps->frame);
    free(ps->iov);
    free(ps->run_end);
}

/* Finishes the snapshot once every shard answered: concatenates the parts
 * behind a versioned header, writes it and drops the log it covers. Returns
 * 1 when written, 0 when shards are still saving, or -errno. */
int engine_snapshot_finish(cf_engine *e)
{
    cf_snapjob *job = e->job;
    if (!job)
        return 0;
    /* The dedup table first (the ticker's own work, while the shards save
     * their parts): its failure fails the snapshot below. */
    if (job->dedup_saving && snapshot_save_dedup(e, job) < 0)
        atomic_store(&job->failed, 1);
    if (job->dedup_saving)
        return 0;
    if (atomic_load_explicit(&job->remaining, memory_order_acquire) > 0)
        return 0;
    /* Every shard has passed the barrier, so every result fired before the
     * cut has been offered to the history writer. The snapshot must not be
     * written before those rows are stored: after a crash, replay starts at
     * the snapshot and would not fire them again. Waiting here (returning
     * "not yet") delays only the snapshot, never a shard. */
    if (e->history) {
        if (job->history_target == 0)
            job->history_target = cf_history_offered(e->history) + 1;
        if (!cf_history_written(e->history, job->history_target - 1))
            return 0;
    }
    e->job = NULL;
    int rc = atomic_load(&job->failed) ? -ENOMEM : 0;
    /* The payload as pieces: the small fields go into frame, the parts
     * (the dedup blob alone is tens of MB with a large table) are written
     * from where they were saved. Concatenating them was the ticker's
     * largest cost per snapshot (a copy of the whole payload into a buffer
     * grown by doubling, its pages faulted in), taking CPU from the request
     * threads on a 2-core machine (issue 15, T1). */
    snap_pieces ps = {0};
    if (!rc) {
        cf_buf_put_u64(&ps.frame, SNAP_MAGIC);
        cf_buf_put_u32(&ps.frame, SNAP_VERSION);
        put_fingerprint(e, &ps.frame);
        pieces_add(&ps, job->parts[e->n_shards].data, job->parts[e->n_shards].len);
        cf_buf_put_i64(&ps.frame, job->dedup_base);
        if (job->dedup_base == 0) {
            pieces_add_str(&ps, job->dedup.data, job->dedup.len);
        } else if (job->dedup.len + job->dedup_ops.len > UINT32_MAX) {
            ps.oom = true;
        } else {
            /* One string: the delta's header, then its operations. */
            cf_buf_put_u32(&ps.frame, (uint32_t)(job->dedup.len + job->dedup_ops.len));
            pieces_add(&ps, job->dedup.data, job->dedup.len);
            pieces_add(&ps, job->dedup_ops.data, job->dedup_ops.len);
        }
        pieces_add(&ps, job->seq_tail.data, job->seq_tail.len);
        cf_buf_put_u32(&ps.frame, e->n_shards);
        for (unsigned s = 0; s < e->n_shards; s++)
            pieces_add_str(&ps, job->parts[s].data, job->parts[s].len);
        /* Optional trailing fields (docs/DESIGN.md), read when present so
         * older snapshots still load: the bots counter. */
        cf_buf_put_u64(&ps.frame, job->bots);
        /* The newest events of the clicks stream, oldest chunk first. */
        cf_buf_put_u64(&ps.frame, job->n_recent);
        for (size_t i = job->n_recent; i-- > 0;) {
            const uint8_t *bytes;
            size_t len, n;
            uint64_t first;
            cf_recent_chunk_get(job->recent[i], &bytes, &len, &n, &first);
            cf_buf_put_u64(&ps.frame, first);
            cf_buf_put_u64(&ps.frame, n);
            pieces_add_str(&ps, bytes, len);
        }
        rc = pieces_close(&ps);
    }
    size_t out_len = 0;
    for (size_t i = 0; i < ps.n; i++)
        out_len += ps.iov[i].iov_len;
    /* The snapshot must not cover records that might still be lost. */
    if (!rc && job->lsn > 0 && cf_wal_commit(e->wal, job->lsn) < 0)
        rc = -EIO;
    /* Kept besides the two newest: the chain of the previous one (the
     * fallback), which the new one's chain is part of if it is a delta. */
    int64_t keep_from = e->dd_chain_base >= 0 ? e->dd_chain_base : e->snapshot_lsn;
    if (!rc)
        rc = cf_snapshot_writev_keep(e->cfg.data_dir, job->lsn, ps.iov, ps.n,
                                     keep_from >= 0 ? keep_from : INT64_MAX);
    /* cf_snapshot_load falls back to the previous snapshot when the newest
     * is damaged, so the log is kept from that one on: drop only what the
     * previous snapshot covers. */
    if (!rc && e->snapshot_lsn > 0)
        rc = cf_wal_drop_through(e->wal, e->snapshot_lsn);
    if (rc) {
        atomic_fetch_add(&e->snapshot_failures, 1);
        cf_warn("snapshot at LSN %" PRId64 " failed: %s", job->lsn, strerror(-rc));
    } else {
        size_t dedup_len = job->dedup.len + job->dedup_ops.len;
        if (job->dedup_base > 0) {
            if (e->dd_chain_base < 0)
                e->dd_chain_base = job->dedup_base;
            e->dd_chain_len++;
            e->dd_chain_bytes += dedup_len;
        } else {
            e->dd_chain_base = -1;
            e->dd_chain_len = 0;
            e->dd_chain_bytes = 0;
            e->dd_base_bytes = dedup_len;
            e->dd_base_ids = job->dedup_ids;
        }
        e->dd_delta_ok = true;
        atomic_fetch_add(&e->snapshots, 1);
        e->snapshot_lsn = job->lsn;
        if (job->dedup_base > 0)
            cf_info("snapshot at LSN %" PRId64 " written (%zu bytes; dedup table: a delta of "
                    "%zu bytes on LSN %" PRId64 ")", job->lsn, out_len, dedup_len,
                    job->dedup_base);
        else
            cf_info("snapshot at LSN %" PRId64 " written (%zu bytes)", job->lsn, out_len);
    }
    pieces_free(&ps);
    engine_job_free(e, job);
    return rc ? rc : 1;
}
