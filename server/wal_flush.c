/* wal_flush: the group commit (cf_wal_commit: one committer at a time
 * writes, and under --fsync always fdatasyncs, everything appended so far)
 * and the flusher thread (--fsync batch: fdatasync shortly after a write;
 * mapped segments: it also prepares the next segment and retires the
 * closed one, wal_segment.c). */
#include "wal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cf_buf.h"
#include "wal_int.h"
#include "wal_test.h"

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static int64_t ts_ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

/* ns may be before the epoch of CLOCK_MONOTONIC only in theory (boot time):
 * a negative value then means "due now", as it should. */
static struct timespec ns_ts(int64_t ns)
{
    struct timespec t = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
    if (t.tv_nsec < 0) {
        t.tv_nsec += 1000000000L;
        t.tv_sec--;
    }
    return t;
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* ---- test seams (wal_test.h) ---------------------------------------------- */

/* Process-wide by design: tests reach logs owned by the engine this way. In
 * the daemon the hold is never set and costs one relaxed load per write. */
static atomic_uint test_waiting;
static atomic_ulong test_flusher_wakeups;
static pthread_mutex_t test_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t test_cv = PTHREAD_COND_INITIALIZER;

/* A point where a test can hold the log's threads: set on, and how many
 * threads wait there now. */
typedef struct {
    atomic_bool on;
    atomic_uint held;
} test_hold;

static test_hold write_hold, flusher_hold;

static void test_hold_set(test_hold *t, bool hold)
{
    pthread_mutex_lock(&test_mu);
    atomic_store(&t->on, hold);
    pthread_cond_broadcast(&test_cv);
    pthread_mutex_unlock(&test_mu);
}

static void test_hold_wait(test_hold *t)
{
    if (!atomic_load_explicit(&t->on, memory_order_relaxed))
        return;
    pthread_mutex_lock(&test_mu);
    atomic_fetch_add(&t->held, 1);
    while (atomic_load(&t->on))
        pthread_cond_wait(&test_cv, &test_mu);
    atomic_fetch_sub(&t->held, 1);
    pthread_mutex_unlock(&test_mu);
}

void cf_wal_test_hold(bool hold) { test_hold_set(&write_hold, hold); }

unsigned cf_wal_test_held(void) { return atomic_load(&write_hold.held); }

unsigned cf_wal_test_waiting(void) { return atomic_load(&test_waiting); }

unsigned long cf_wal_test_flusher_wakeups(void) { return atomic_load(&test_flusher_wakeups); }

/* Integration-test seam: CLICKFLOW_TEST_WAL_GATE=FILE holds every write
 * while FILE exists, so a test can keep requests logged but not durable
 * (tests/integration/test_park.py). Read once at the first write. */
static void test_gate_point(void)
{
    static const char *gate;
    static atomic_int gate_known;
    if (!atomic_load_explicit(&gate_known, memory_order_acquire)) {
        gate = getenv("CLICKFLOW_TEST_WAL_GATE");
        atomic_store_explicit(&gate_known, 1, memory_order_release);
    }
    if (!gate || !gate[0])
        return;
    struct timespec ts = {0, 5 * 1000000L};
    while (access(gate, F_OK) == 0)
        nanosleep(&ts, NULL);
}

void cf_wal_test_hold_flusher(bool hold) { test_hold_set(&flusher_hold, hold); }

unsigned cf_wal_test_flusher_held(void) { return atomic_load(&flusher_hold.held); }

int64_t cf_wal_test_due_after_sync_ns(cf_wal *w) { return atomic_load(&w->test_due_after_sync_ns); }

static void test_hold_point(void)
{
    test_gate_point();
    test_hold_wait(&write_hold);
}

static void test_flusher_hold_point(void) { test_hold_wait(&flusher_hold); }

/* Writes a batch of whole records, rotating at record boundaries once a
 * segment reaches segment_bytes. Writer only. 0 or -errno. */
static int write_records(cf_wal *w, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (w->fd < 0) {
            int r = wal_open_new_segment(w, (int64_t)rd64(p + 9));
            if (r < 0)
                return r;
        }
        size_t chunk = 0;
        while (chunk < n) {
            chunk += REC_HDR + rd32(p + chunk);
            if (w->seg_size + chunk >= w->segment_bytes)
                break;
        }
        int r = wal_write_all(w->fd, p, chunk, -1);
        if (r < 0)
            return r;
        w->seg_size += chunk;
        atomic_fetch_add(&w->bytes, chunk);
        p += chunk;
        n -= chunk;
        if (w->seg_size >= w->segment_bytes && (r = wal_rotate(w)) < 0)
            return r;
    }
    return 0;
}

/* Called with mu held: fdatasyncs the open segment through a dup()ed
 * descriptor with mu released (appends and a rotation may go on meanwhile;
 * a rotation syncs the segments before it itself), then takes mu again.
 * hold: the test seam to stop at first (the committer's or the flusher's).
 * 0, or -errno of the dup or the fdatasync. */
static int sync_segment_unlocked(cf_wal *w, void (*hold)(void))
{
    int fd = w->fd >= 0 ? dup(w->fd) : -2;
    int r = fd == -1 ? -errno : 0;
    pthread_mutex_unlock(&w->mu);
    hold();
    if (fd >= 0) {
        r = wal_datasync(w, fd);
        close(fd);
    }
    pthread_mutex_lock(&w->mu);
    return r;
}

/* One round of a mapped log's committer (--fsync always; under batch and
 * off an appended record is already committed): fdatasyncs what is written
 * so far. The descriptor is dup()ed under mu, as the flusher's: a rotation
 * by the appender synced the segments before it. */
static void sync_round(cf_wal *w)
{
    w->writing = true;
    if (wal_settle_all_locked(w) < 0) {
        w->writing = false;
        return;
    }
    int64_t upto = w->written_lsn;
    int r = sync_segment_unlocked(w, test_hold_point);
    w->writing = false;
    if (r < 0) {
        wal_set_failed(w, "fdatasync", r);
        return;
    }
    if (w->synced_lsn < upto)
        w->synced_lsn = upto;
    pthread_cond_broadcast(&w->done_cv);
}

/* One group-commit round. Called with mu held and no writer running;
 * returns with mu held. Takes everything appended so far. */
static void writer_round(cf_wal *w)
{
    if (w->mapped) {
        sync_round(w);
        return;
    }
    w->writing = true;
    cf_buf batch = w->pending;
    w->pending = w->spare;
    w->spare = batch;
    int64_t upto = atomic_load(&w->next_lsn) - 1;
    pthread_mutex_unlock(&w->mu);
    test_hold_point();

    int r = write_records(w, w->spare.data, w->spare.len);
    const char *what = "write";
    if (r == 0 && w->policy == CF_FSYNC_ALWAYS && w->fd >= 0) {
        what = "fdatasync";
        r = wal_datasync(w, w->fd);
    }
    cf_buf_reset(&w->spare);

    pthread_mutex_lock(&w->mu);
    w->writing = false;
    if (r < 0) {
        wal_set_failed(w, what, r);
        return;
    }
    wal_written_locked(w, upto);
    if (w->policy == CF_FSYNC_ALWAYS)
        w->synced_lsn = upto;
    pthread_cond_broadcast(&w->done_cv);
}

/* --fsync batch: fdatasyncs the current segment FLUSH_DELAY_NS after the
 * first unsynced write (at once when stopping). It syncs a dup() of the
 * descriptor taken under mu, so a concurrent rotation cannot pull the file
 * away; segments closed by a rotation were synced by it. */
void *wal_flusher_main(void *arg)
{
    cf_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->err)
            break;
        /* A rotated-out segment first (it must be synced before anything
         * after it), then the next segment's preparation. */
        if ((w->ret_fd >= 0 || w->dir_dirty) && !w->settling) {
            wal_settle_locked(w);
            continue;
        }
        if (w->prep == PREP_WANTED && !w->stopping) {
            wal_prepare_locked(w);
            continue;
        }
        if (w->policy != CF_FSYNC_BATCH || w->written_lsn <= w->synced_lsn) {
            if (w->stopping)
                break;
            pthread_cond_wait(&w->flush_cv, &w->mu);
            atomic_fetch_add_explicit(&test_flusher_wakeups, 1, memory_order_relaxed);
            continue;
        }
        if (!w->stopping) {
            struct timespec due = w->unsynced_since, now;
            add_ns(&due, FLUSH_DELAY_NS);
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (ts_before(&now, &due)) {
                pthread_cond_timedwait(&w->flush_cv, &w->mu, &due);
                atomic_fetch_add_explicit(&test_flusher_wakeups, 1, memory_order_relaxed);
                continue;
            }
        }
        if (wal_settle_all_locked(w) < 0)
            break;
        int64_t target = w->written_lsn;
        struct timespec started;
        clock_gettime(CLOCK_MONOTONIC, &started);
        int e = sync_segment_unlocked(w, test_flusher_hold_point);
        if (e < 0) {
            wal_set_failed(w, "fdatasync", e);
            break;
        }
        if (w->synced_lsn < target)
            w->synced_lsn = target;
        if (w->written_lsn > w->synced_lsn) {
            /* These came after `started` (target was taken under mu then),
             * at the earliest just after it. The next sync is due
             * FLUSH_DELAY_NS after this one's end, which gathers the most,
             * unless that is too late for the 10 ms of --fsync batch: it must
             * begin by FLUSH_BOUND_NS after `started` less a sync's length
             * (this one's), or a slow fdatasync would add its own length to
             * the promise. */
            struct timespec end;
            clock_gettime(CLOCK_MONOTONIC, &end);
            int64_t t0 = ts_ns(&started), t1 = ts_ns(&end);
            int64_t due = t1 + FLUSH_DELAY_NS;
            if (t0 + FLUSH_BOUND_NS - (t1 - t0) < due)
                due = t0 + FLUSH_BOUND_NS - (t1 - t0);
            w->unsynced_since = ns_ts(due - FLUSH_DELAY_NS);
            atomic_store(&w->test_due_after_sync_ns, due);
        }
        pthread_cond_broadcast(&w->done_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* Group commit: the first committer that finds no writer running becomes the
 * writer for everything appended so far; the others wait for it (and, if
 * their record came after its batch, one of them runs the next round). */
int cf_wal_commit(cf_wal *w, int64_t lsn)
{
    if (w->mapped && w->policy != CF_FSYNC_ALWAYS) {
        /* Appended is written (append_mapped), and batch and off wait for
         * nothing more: no lock per request. */
        if (atomic_load(&w->failed))
            return -EIO;
        return lsn < atomic_load(&w->next_lsn) ? 0 : -EINVAL;
    }
    int r;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->err) {
            r = w->err;
            break;
        }
        int64_t have = w->policy == CF_FSYNC_ALWAYS ? w->synced_lsn : w->written_lsn;
        if (have >= lsn) {
            r = 0;
            break;
        }
        if (lsn >= atomic_load(&w->next_lsn)) {
            r = -EINVAL; /* never appended */
            break;
        }
        if (!w->writing) {
            writer_round(w);
        } else {
            atomic_fetch_add(&test_waiting, 1);
            pthread_cond_wait(&w->done_cv, &w->mu);
            atomic_fetch_sub(&test_waiting, 1);
        }
    }
    pthread_mutex_unlock(&w->mu);
    return r;
}
