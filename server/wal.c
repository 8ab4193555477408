/* wal: segment files of CRC-checked records with group commit. The on-disk
 * format is described in docs/FORMATS.md.
 *
 * Threads and locks. One mutex (mu) guards the in-memory state: the pending
 * buffer that appends copy into, the LSN counters, the writer flag, the
 * sticky error and the segment list. The actual I/O happens outside mu by
 * exactly one "writer" at a time: a committing thread that finds no writer
 * running takes the pending buffer (swapping in an empty one, so appends go
 * on meanwhile), writes it, fsyncs it under --fsync always, and wakes every
 * committer whose record is now covered. Under --fsync batch a flusher thread
 * fdatasyncs the current segment shortly after new bytes were written.
 *
 * Only the writer touches fd/seg_size, except that it swaps fd under mu at a
 * rotation so the flusher can dup() a stable descriptor under mu.
 *
 * Mapped segments (the default where the file system can preallocate): a
 * segment is mapped MAP_SHARED and fallocate'd in steps ahead of its
 * records, and an append copies its record (pwrite()s a large one) into the
 * file's page cache, where a process crash cannot lose it: the record is "written
 * to the log file" (SPEC 10) when cf_wal_append returns, with no write()
 * per request (8-10% of the server's time under single-event POSTs, issue
 * 15). Appends are serialized by the caller, so then the appender owns
 * fd/seg_size/map and rotates; committers only fdatasync (--fsync always),
 * the flusher as before. The preallocated blocks mean no ENOSPC in a page
 * fault; the never-written tail reads as zeros, which replay takes as the
 * end of the segment (docs/FORMATS.md), and a closed or rotated segment is
 * truncated to its records. The flusher thread (any policy, when mapped)
 * prepares the next segment ahead and retires the closed one, so that a
 * rotation under the caller's lock only renames and swaps (struct cf_wal). */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cf_buf.h"
#include "crc32c.h"
#include "log.h"
#include "wal_int.h"
#include "wal_test.h"

/* ---- small helpers -------------------------------------------------------- */

static void wr32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void wr64(uint8_t *p, uint64_t v)
{
    wr32(p, (uint32_t)v);
    wr32(p + 4, (uint32_t)(v >> 32));
}

/* Parses "wal-<20 digits>.log"; false for any other name. */
static bool parse_seg_name(const char *name, int64_t *ret_lsn)
{
    if (strlen(name) != SEG_NAME_LEN - 1 || strncmp(name, "wal-", 4) != 0 ||
        strcmp(name + 24, ".log") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 4; i < 24; i++) {
        if (name[i] < '0' || name[i] > '9')
            return false;
        if (v > (uint64_t)INT64_MAX / 10)
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX || v == 0)
        return false;
    *ret_lsn = (int64_t)v;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Writes all n bytes, at the file's position when off < 0 (write), else at
 * off (pwrite), retrying short writes and EINTR. 0 or -errno. */
static int write_all(int fd, const void *buf, size_t n, off_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, off);
        if (k < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += k;
        n -= (size_t)k;
        if (off >= 0)
            off += k;
    }
    return 0;
}

static int mkdir_p(const char *dir)
{
    char tmp[1024];
    size_t n = strlen(dir);
    if (n == 0 || n >= sizeof tmp)
        return -ENAMETOOLONG;
    memcpy(tmp, dir, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] != '/' && tmp[i] != '\0')
            continue;
        char c = tmp[i];
        tmp[i] = '\0';
        if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
            return -errno;
        tmp[i] = c;
    }
    return 0;
}

static void add_ns(struct timespec *t, long ns)
{
    t->tv_nsec += ns;
    while (t->tv_nsec >= 1000000000L) {
        t->tv_nsec -= 1000000000L;
        t->tv_sec++;
    }
}

static bool ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static int segs_push(cf_wal *w, int64_t first)
{
    if (w->nsegs == w->segcap) {
        size_t cap = w->segcap ? w->segcap * 2 : 16;
        int64_t *p = realloc(w->segs, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        w->segs = p;
        w->segcap = cap;
    }
    w->segs[w->nsegs++] = first;
    return 0;
}

/* Called with mu held: records the first failure and wakes everyone. */
static void set_failed(cf_wal *w, const char *what, int err)
{
    if (!w->err)
        cf_error("wal: %s failed: %s; no more records will be acknowledged", what,
                 strerror(-err));
    w->err = -EIO;
    atomic_store(&w->failed, true);
    pthread_cond_broadcast(&w->done_cv);
    pthread_cond_broadcast(&w->flush_cv);
}

/* ---- test seams (wal_test.h) ---------------------------------------------- */

/* Process-wide by design: tests reach logs owned by the engine this way. In
 * the daemon the hold is never set and costs one relaxed load per write. */
static atomic_bool test_hold_on;
static atomic_uint test_held, test_waiting;
static atomic_ulong test_flusher_wakeups;
static atomic_bool test_force_write;
static pthread_mutex_t test_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t test_cv = PTHREAD_COND_INITIALIZER;

void cf_wal_test_hold(bool hold)
{
    pthread_mutex_lock(&test_mu);
    atomic_store(&test_hold_on, hold);
    pthread_cond_broadcast(&test_cv);
    pthread_mutex_unlock(&test_mu);
}

unsigned cf_wal_test_held(void) { return atomic_load(&test_held); }

unsigned cf_wal_test_waiting(void) { return atomic_load(&test_waiting); }

unsigned long cf_wal_test_flusher_wakeups(void) { return atomic_load(&test_flusher_wakeups); }

void cf_wal_test_force_write(bool on) { atomic_store(&test_force_write, on); }

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

static void test_hold_point(void)
{
    test_gate_point();
    if (!atomic_load_explicit(&test_hold_on, memory_order_relaxed))
        return;
    pthread_mutex_lock(&test_mu);
    atomic_fetch_add(&test_held, 1);
    while (atomic_load(&test_hold_on))
        pthread_cond_wait(&test_cv, &test_mu);
    atomic_fetch_sub(&test_held, 1);
    pthread_mutex_unlock(&test_mu);
}

/* ---- writing -------------------------------------------------------------- */

/* A mapped segment's file is preallocated in steps of ALLOC_STEP as
 * records come, ALLOC_STEP_BIG past its first MiB (one fallocate per 64 KiB
 * was 3% of the server under 1000-event batches); a disk full or a file
 * size limit shows at the next step, not at the segment's start. */
#define ALLOC_STEP ((size_t)1 << 16)
#define ALLOC_STEP_BIG ((size_t)1 << 20)
/* Records larger than this are pwrite()n into the mapped segment instead
 * of copied: a page fault per 4 KiB page of a 1000-event batch cost more
 * (18% of the server under S2) than one system call per batch, which a
 * single event saves. The page cache is the same, so both are as written. */
#define MAP_COPY_MAX ((size_t)4096)

static size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }

/* Maps len bytes of the current segment, or remaps to len (a record past
 * the mapped length: rare). The mapping may pass the file's end; appends
 * stay within the preallocated part. Writer only. 0 or -errno. */
int wal_map_to(cf_wal *w, size_t len)
{
    len = round_up(len, ALLOC_STEP);
    void *m = w->map ? mremap(w->map, w->map_len, len, MREMAP_MAYMOVE)
                     : mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, w->fd, 0);
    if (m == MAP_FAILED)
        return -errno;
    w->map = m;
    w->map_len = len;
    return 0;
}

/* Preallocates the current segment to at least need bytes: the blocks are
 * reserved, so no ENOSPC can come later from a page fault or a writeback
 * (which would be a SIGBUS or a lost record). Writer only. 0 or -errno. */
static int alloc_to(cf_wal *w, size_t need)
{
    size_t len = round_up(need, need > ALLOC_STEP_BIG ? ALLOC_STEP_BIG : ALLOC_STEP);
    if (fallocate(w->fd, 0, 0, (off_t)len) < 0)
        return -errno;
    w->alloc = len;
    return 0;
}

/* Unmaps the current segment and cuts its file to its records (the
 * preallocated rest is zeros). Writer only. 0 or -errno. */
static int unmap_segment(cf_wal *w)
{
    if (!w->map)
        return 0;
    munmap(w->map, w->map_len);
    w->map = NULL;
    w->map_len = 0;
    w->alloc = 0;
    return ftruncate(w->fd, (off_t)w->seg_size) < 0 ? -errno : 0;
}

/* Creates the segment file for first_lsn and makes its directory entry
 * durable; maps it when segments are mapped. Writer only. */
static int open_new_segment(cf_wal *w, int64_t first_lsn)
{
    char name[SEG_NAME_LEN];
    seg_name(name, first_lsn);
    int fd = openat(w->dirfd, name, (w->mapped ? O_RDWR : O_WRONLY) | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -errno;
    if (fsync(w->dirfd) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    pthread_mutex_lock(&w->mu);
    int r = segs_push(w, first_lsn);
    if (r == 0)
        w->fd = fd;
    pthread_mutex_unlock(&w->mu);
    if (r < 0) {
        close(fd);
        return r;
    }
    w->seg_size = 0;
    if (w->mapped) {
        /* The directory entry is durable, so an unmappable segment stays
         * (empty) with the log failed: replay removes it. */
        w->alloc = 0;
        r = wal_map_to(w, w->segment_bytes);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Closes the full current segment, fsyncing it first (except under
 * --fsync off) so that a later segment never survives an earlier one's lost
 * tail; the flusher then only ever needs to sync the current segment. */
static int rotate(cf_wal *w)
{
    int r = unmap_segment(w);
    if (r < 0)
        return r;
    if (w->policy != CF_FSYNC_OFF) {
        if (fdatasync(w->fd) < 0)
            return -errno;
        atomic_fetch_add(&w->fsyncs, 1);
    }
    pthread_mutex_lock(&w->mu);
    int old = w->fd;
    w->fd = -1;
    pthread_mutex_unlock(&w->mu);
    close(old);
    return 0;
}

/* The prepared next segment's name: not a segment name, so replay never
 * reads it. A crash before it is used leaves it behind (zeros) and the next
 * open removes it; once used it was renamed to its segment's name first. */
#define PREP_NAME "wal-next.tmp"

static atomic_ulong test_prepared_rotations;

unsigned long cf_wal_test_prepared_rotations(void) { return atomic_load(&test_prepared_rotations); }

bool cf_wal_test_wait_prepared(cf_wal *w)
{
    pthread_mutex_lock(&w->mu);
    while (!w->err && (w->prep == PREP_WANTED || w->prep == PREP_BUSY))
        pthread_cond_wait(&w->done_cv, &w->mu);
    bool ready = w->prep == PREP_READY;
    pthread_mutex_unlock(&w->mu);
    return ready;
}

/* Unmaps a rotated-out segment, cuts it to its records, fdatasyncs it
 * (except under --fsync off) and closes it: what rotate() does inline.
 * 0 or -errno. */
static int retire_segment(cf_wal *w, int fd, uint8_t *map, size_t map_len, uint64_t size)
{
    int r = 0;
    if (map)
        munmap(map, map_len);
    if (ftruncate(fd, (off_t)size) < 0) {
        r = -errno;
    } else if (w->policy != CF_FSYNC_OFF) {
        if (fdatasync(fd) < 0)
            r = -errno;
        else
            atomic_fetch_add(&w->fsyncs, 1);
    }
    close(fd);
    return r;
}

/* Called with mu held and no one settling: retires the rotated-out segment
 * and fsyncs the directory (the new segment's name), outside mu. Returns
 * with mu held. */
static void settle_locked(cf_wal *w)
{
    w->settling = true;
    int fd = w->ret_fd;
    uint8_t *map = w->ret_map;
    size_t map_len = w->ret_map_len;
    uint64_t size = w->ret_size;
    bool dir = w->dir_dirty;
    w->ret_fd = -1;
    w->ret_map = NULL;
    w->dir_dirty = false;
    pthread_mutex_unlock(&w->mu);
    int r = fd >= 0 ? retire_segment(w, fd, map, map_len, size) : 0;
    if (r == 0 && dir && fsync(w->dirfd) < 0)
        r = -errno;
    pthread_mutex_lock(&w->mu);
    w->settling = false;
    if (r < 0)
        set_failed(w, "segment rotation", r);
    pthread_cond_broadcast(&w->done_cv);
}

/* With mu held, before syncing the current segment: every earlier segment
 * is synced and the current one's name durable once this returns 0 (mu
 * held throughout the check, so no rotation slips in before the caller
 * takes its fd and target). Returns w->err. */
static int settle_all_locked(cf_wal *w)
{
    while (!w->err && (w->ret_fd >= 0 || w->dir_dirty || w->settling)) {
        if (w->settling)
            pthread_cond_wait(&w->done_cv, &w->mu);
        else
            settle_locked(w);
    }
    return w->err;
}

/* Flusher thread, mu held and prep == PREP_WANTED: creates, preallocates
 * (its first MiB) and maps the next segment outside mu. A failure only
 * turns preparation off: rotations then run inline, as before, and a real
 * disk problem shows there. Returns with mu held. */
static void prepare_locked(cf_wal *w)
{
    w->prep = PREP_BUSY;
    pthread_mutex_unlock(&w->mu);
    size_t map_len = round_up(w->segment_bytes, ALLOC_STEP);
    size_t alloc = map_len < ALLOC_STEP_BIG ? map_len : ALLOC_STEP_BIG;
    void *m = MAP_FAILED;
    int fd = openat(w->dirfd, PREP_NAME, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd >= 0 && fallocate(fd, 0, 0, (off_t)alloc) == 0)
        m = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int e = errno;
    /* The first write fault into a new file cost the appender about
     * 0.45 ms (tests/bench/wal_rotate_bench): taken here instead, by
     * writing zeros over the first pages (zeros are what they hold anyway;
     * replay reads them as the end of the segment). */
    if (m != MAP_FAILED)
        for (size_t o = 0; o < alloc && o < ALLOC_STEP; o += 4096)
            ((volatile uint8_t *)m)[o] = 0;
    if (m == MAP_FAILED && fd >= 0) {
        close(fd);
        unlinkat(w->dirfd, PREP_NAME, 0);
    }
    pthread_mutex_lock(&w->mu);
    if (m == MAP_FAILED) {
        cf_warn("wal: %s: cannot prepare the next segment (%s); rotating inline", w->dir,
                strerror(e));
        w->prep = PREP_OFF;
    } else {
        w->prep_fd = fd;
        w->prep_map = m;
        w->prep_map_len = map_len;
        w->prep_alloc = alloc;
        w->prep = PREP_READY;
    }
    pthread_cond_broadcast(&w->done_cv);
}

/* A mapped rotation with the prepared segment: renames it to the name of
 * lsn and swaps it in; the closed segment is retired later (see struct
 * cf_wal). 1 done, 0 none prepared (or the last one not yet retired, or
 * the rename failed): rotate inline. Appender only. */
static int rotate_prepared(cf_wal *w, int64_t lsn)
{
    pthread_mutex_lock(&w->mu);
    if (w->prep != PREP_READY || w->ret_fd >= 0) {
        pthread_mutex_unlock(&w->mu);
        return 0;
    }
    int fd = w->prep_fd;
    uint8_t *map = w->prep_map;
    size_t map_len = w->prep_map_len, alloc = w->prep_alloc;
    w->prep_fd = -1;
    w->prep_map = NULL;
    w->prep = PREP_NONE;
    pthread_mutex_unlock(&w->mu);

    char name[SEG_NAME_LEN];
    seg_name(name, lsn);
    if (renameat(w->dirfd, PREP_NAME, w->dirfd, name) < 0) {
        munmap(map, map_len);
        close(fd);
        unlinkat(w->dirfd, PREP_NAME, 0);
        return 0;
    }
    pthread_mutex_lock(&w->mu);
    int r = segs_push(w, lsn);
    if (r < 0) {
        pthread_mutex_unlock(&w->mu);
        munmap(map, map_len);
        close(fd);
        return r;
    }
    w->ret_fd = w->fd;
    w->ret_map = w->map;
    w->ret_map_len = w->map_len;
    w->ret_size = w->seg_size;
    w->dir_dirty = true;
    w->fd = fd;
    pthread_cond_signal(&w->flush_cv);
    pthread_mutex_unlock(&w->mu);
    w->map = map;
    w->map_len = map_len;
    w->alloc = alloc;
    w->seg_size = 0;
    atomic_fetch_add(&test_prepared_rotations, 1);
    return 1;
}

/* Writes a batch of whole records, rotating at record boundaries once a
 * segment reaches segment_bytes. Writer only. 0 or -errno. */
static int write_records(cf_wal *w, const uint8_t *p, size_t n)
{
    while (n > 0) {
        if (w->fd < 0) {
            int r = open_new_segment(w, (int64_t)rd64(p + 9));
            if (r < 0)
                return r;
        }
        size_t chunk = 0;
        while (chunk < n) {
            chunk += REC_HDR + rd32(p + chunk);
            if (w->seg_size + chunk >= w->segment_bytes)
                break;
        }
        int r = write_all(w->fd, p, chunk, -1);
        if (r < 0)
            return r;
        w->seg_size += chunk;
        atomic_fetch_add(&w->bytes, chunk);
        p += chunk;
        n -= chunk;
        if (w->seg_size >= w->segment_bytes && (r = rotate(w)) < 0)
            return r;
    }
    return 0;
}

/* Called with mu held: records <= upto are in the file. Under --fsync
 * batch the flusher sleeps without a deadline only when everything written
 * is synced; otherwise it is already timed for the first unsynced write and
 * needs no wake-up. (Signalling it on every round woke it once per request
 * under single-event POSTs, only for it to find its deadline not due and
 * sleep again, issue 15.) */
static void written_locked(cf_wal *w, int64_t upto)
{
    if (w->written_lsn >= upto)
        return;
    bool wake_flusher = false;
    if (w->written_lsn <= w->synced_lsn) {
        clock_gettime(CLOCK_MONOTONIC, &w->unsynced_since);
        wake_flusher = true;
    }
    w->written_lsn = upto;
    if (w->policy == CF_FSYNC_BATCH && wake_flusher)
        pthread_cond_signal(&w->flush_cv);
}

/* Called with mu held: fdatasyncs the open segment through a dup()ed
 * descriptor with mu released (appends and a rotation may go on meanwhile;
 * a rotation syncs the segments before it itself), then takes mu again.
 * hold: stop at the test seam first (the committer's, not the flusher's).
 * 0, or -errno of the dup or the fdatasync. */
static int sync_segment_unlocked(cf_wal *w, bool hold)
{
    int fd = w->fd >= 0 ? dup(w->fd) : -2;
    int r = fd == -1 ? -errno : 0;
    pthread_mutex_unlock(&w->mu);
    if (hold)
        test_hold_point();
    if (fd >= 0) {
        if (fdatasync(fd) < 0)
            r = -errno;
        else
            atomic_fetch_add(&w->fsyncs, 1);
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
    if (settle_all_locked(w) < 0) {
        w->writing = false;
        return;
    }
    int64_t upto = w->written_lsn;
    int r = sync_segment_unlocked(w, true);
    w->writing = false;
    if (r < 0) {
        set_failed(w, "fdatasync", r);
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
        if (fdatasync(w->fd) < 0)
            r = -errno;
        else
            atomic_fetch_add(&w->fsyncs, 1);
    }
    cf_buf_reset(&w->spare);

    pthread_mutex_lock(&w->mu);
    w->writing = false;
    if (r < 0) {
        set_failed(w, what, r);
        return;
    }
    written_locked(w, upto);
    if (w->policy == CF_FSYNC_ALWAYS)
        w->synced_lsn = upto;
    pthread_cond_broadcast(&w->done_cv);
}

/* --fsync batch: fdatasyncs the current segment FLUSH_DELAY_NS after the
 * first unsynced write (at once when stopping). It syncs a dup() of the
 * descriptor taken under mu, so a concurrent rotation cannot pull the file
 * away; segments closed by a rotation were synced by it. */
static void *flusher_main(void *arg)
{
    cf_wal *w = arg;
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->err)
            break;
        /* A rotated-out segment first (it must be synced before anything
         * after it), then the next segment's preparation. */
        if ((w->ret_fd >= 0 || w->dir_dirty) && !w->settling) {
            settle_locked(w);
            continue;
        }
        if (w->prep == PREP_WANTED && !w->stopping) {
            prepare_locked(w);
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
        if (settle_all_locked(w) < 0)
            break;
        int64_t target = w->written_lsn;
        int e = sync_segment_unlocked(w, false);
        if (e < 0) {
            set_failed(w, "fdatasync", e);
            break;
        }
        if (w->synced_lsn < target)
            w->synced_lsn = target;
        if (w->written_lsn > w->synced_lsn)
            clock_gettime(CLOCK_MONOTONIC, &w->unsynced_since);
        pthread_cond_broadcast(&w->done_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* ---- open / close --------------------------------------------------------- */

static int list_segments(cf_wal *w)
{
    int fd = dup(w->dirfd);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (!d) {
        int e = -errno;
        close(fd);
        return e;
    }
    rewinddir(d);
    struct dirent *de;
    int r = 0;
    while ((de = readdir(d)) != NULL) {
        int64_t lsn;
        if (parse_seg_name(de->d_name, &lsn) && (r = segs_push(w, lsn)) < 0)
            break;
    }
    closedir(d);
    if (r == 0 && w->nsegs > 1)
        qsort(w->segs, w->nsegs, sizeof *w->segs, cmp_i64);
    return r;
}

/* Whether the log's file system can preallocate and map a file (not every
 * one has fallocate): tried on a scratch file, which replay never reads. */
static bool can_map(cf_wal *w)
{
    static const char probe[] = "wal-probe.tmp";
    int fd = openat(w->dirfd, probe, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return false;
    bool ok = fallocate(fd, 0, 0, 4096) == 0;
    void *m = ok ? mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0) : MAP_FAILED;
    ok = m != MAP_FAILED;
    if (ok)
        munmap(m, 4096);
    close(fd);
    unlinkat(w->dirfd, probe, 0);
    return ok;
}

cf_wal *cf_wal_open(const char *dir, cf_fsync_policy policy, size_t segment_bytes, char *err,
                    size_t errcap)
{
    cf_wal *w = calloc(1, sizeof *w);
    const char *what = "out of memory";
    int e = -ENOMEM;
    if (!w)
        goto fail;
    w->dirfd = -1;
    w->fd = -1;
    w->prep_fd = -1;
    w->ret_fd = -1;
    w->policy = policy;
    w->segment_bytes = segment_bytes ? segment_bytes : DEFAULT_SEGMENT_BYTES;
    atomic_store(&w->next_lsn, 1);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->done_cv, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->flush_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(w->dir = strdup(dir)))
        goto fail;

    what = "cannot create the directory";
    if ((e = mkdir_p(dir)) < 0)
        goto fail;
    what = "cannot open the directory";
    w->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (w->dirfd < 0) {
        e = -errno;
        goto fail;
    }
    what = "cannot list the directory";
    if ((e = list_segments(w)) < 0)
        goto fail;
    /* A next segment prepared by a process that crashed before using it. */
    unlinkat(w->dirfd, PREP_NAME, 0);
    w->mapped = !atomic_load(&test_force_write) && can_map(w);
    /* The flusher also prepares mapped segments' successors (any policy). */
    if (policy == CF_FSYNC_BATCH || w->mapped) {
        what = "cannot start the flusher thread";
        if ((e = -pthread_create(&w->flusher, NULL, flusher_main, w)) < 0)
            goto fail;
        w->has_flusher = true;
    }
    return w;

fail:
    if (err && errcap)
        snprintf(err, errcap, "wal: %s: %s: %s", dir, what, strerror(-e));
    cf_wal_close(w);
    return NULL;
}

void cf_wal_close(cf_wal *w)
{
    if (!w)
        return;
    /* Write out whatever was appended and not yet committed. */
    int64_t last = atomic_load(&w->next_lsn) - 1;
    if (last > 0 && w->dirfd >= 0)
        (void)cf_wal_commit(w, last);
    if (w->has_flusher) {
        pthread_mutex_lock(&w->mu);
        w->stopping = true;
        pthread_cond_signal(&w->flush_cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->flusher, NULL);
    }
    pthread_mutex_lock(&w->mu);
    settle_all_locked(w);
    pthread_mutex_unlock(&w->mu);
    if (w->ret_fd >= 0) { /* only after a failure: nothing more to sync */
        if (w->ret_map)
            munmap(w->ret_map, w->ret_map_len);
        close(w->ret_fd);
    }
    if (w->prep_fd >= 0) {
        munmap(w->prep_map, w->prep_map_len);
        close(w->prep_fd);
        unlinkat(w->dirfd, PREP_NAME, 0);
    }
    if (w->fd >= 0) {
        /* A mapped segment is cut to its records first: the file ends at
         * the last record, as a written one does. */
        int r = unmap_segment(w);
        if (r < 0)
            cf_warn("wal: %s: cannot cut the segment to its records: %s", w->dir, strerror(-r));
        if (w->policy != CF_FSYNC_OFF && !w->err && fdatasync(w->fd) == 0)
            atomic_fetch_add(&w->fsyncs, 1);
        close(w->fd);
    }
    if (w->dirfd >= 0)
        close(w->dirfd);
    pthread_cond_destroy(&w->flush_cv);
    pthread_cond_destroy(&w->done_cv);
    pthread_mutex_destroy(&w->mu);
    cf_buf_free(&w->pending);
    cf_buf_free(&w->spare);
    free(w->segs);
    free(w->dir);
    free(w);
}

/* ---- append / commit ------------------------------------------------------ */

/* Room for rec more bytes in the current mapped segment: a new segment
 * once this one holds segment_bytes (as a written log rotates), a larger
 * mapping for a record past the preallocated end. Appender only. */
static int mapped_room(cf_wal *w, int64_t lsn, size_t rec)
{
    int r = 0;
    if (w->fd >= 0 && w->seg_size >= w->segment_bytes) {
        r = rotate_prepared(w, lsn);
        if (r == 0)
            r = rotate(w);
        if (r < 0)
            return r;
    }
    if (w->fd < 0 && (r = open_new_segment(w, lsn)) < 0)
        return r;
    size_t need = w->seg_size + rec;
    if (need > w->map_len && (r = wal_map_to(w, need)) < 0)
        return r;
    if (need > w->alloc)
        r = alloc_to(w, need);
    return r;
}

/* cf_wal_append of a mapped log: the record goes straight into the
 * segment's page cache (see the top of this file), so it is written, and
 * under --fsync batch and off committed, when this returns. */
static int64_t append_mapped(cf_wal *w, const uint8_t h[REC_HDR], const void *payload, size_t len,
                             int64_t lsn)
{
    if (atomic_load(&w->failed))
        return -EIO;
    int r = mapped_room(w, lsn, REC_HDR + len);
    if (r < 0) {
        pthread_mutex_lock(&w->mu);
        set_failed(w, "segment preallocation", r);
        pthread_mutex_unlock(&w->mu);
        return -EIO;
    }
    if (REC_HDR + len <= MAP_COPY_MAX) {
        uint8_t *at = w->map + w->seg_size;
        memcpy(at, h, REC_HDR);
        if (len)
            memcpy(at + REC_HDR, payload, len);
    } else if ((r = write_all(w->fd, h, REC_HDR, (off_t)w->seg_size)) < 0 ||
               (r = write_all(w->fd, payload, len, (off_t)(w->seg_size + REC_HDR))) < 0) {
        pthread_mutex_lock(&w->mu);
        set_failed(w, "write", r);
        pthread_mutex_unlock(&w->mu);
        return -EIO;
    }
    w->seg_size += REC_HDR + len;
    atomic_fetch_add(&w->bytes, REC_HDR + len);
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->next_lsn, lsn + 1);
    written_locked(w, lsn);
    if (w->prep == PREP_NONE && w->seg_size >= w->segment_bytes / 2) {
        w->prep = PREP_WANTED;
        pthread_cond_signal(&w->flush_cv);
    }
    pthread_mutex_unlock(&w->mu);
    return lsn;
}

int64_t cf_wal_append(cf_wal *w, uint8_t type, const void *payload, size_t len)
{
    if (!w->replayed) {
        /* Defensive: a caller that skipped replay still gets consistent
         * LSNs and a clean tail. */
        int64_t r = cf_wal_replay(w, 0, NULL, NULL);
        if (r < 0)
            return r;
    }
    if (len > REC_MAX)
        return -EMSGSIZE;
    /* Appends are serialized by the caller, so next_lsn cannot change under
     * us: the header and CRC are built before taking mu, which committers
     * and the flusher contend for. */
    int64_t lsn = atomic_load(&w->next_lsn);
    uint8_t h[REC_HDR];
    wr32(h, (uint32_t)len);
    h[8] = type;
    wr64(h + 9, (uint64_t)lsn);
    wr32(h + 4, cf_crc32c(cf_crc32c(0, h + 8, 9), payload, len));
    if (w->mapped)
        return append_mapped(w, h, payload, len, lsn);
    pthread_mutex_lock(&w->mu);
    if (w->err) {
        int e = w->err;
        pthread_mutex_unlock(&w->mu);
        return e;
    }
    if (cf_buf_reserve(&w->pending, REC_HDR + len) < 0) {
        w->pending.oom = false; /* the buffered records are intact */
        pthread_mutex_unlock(&w->mu);
        return -ENOMEM;
    }
    memcpy(w->pending.data + w->pending.len, h, REC_HDR);
    if (len)
        memcpy(w->pending.data + w->pending.len + REC_HDR, payload, len);
    w->pending.len += REC_HDR + len;
    atomic_store(&w->next_lsn, lsn + 1);
    pthread_mutex_unlock(&w->mu);
    return lsn;
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

/* ---- maintenance ---------------------------------------------------------- */

/* A segment's records are all below the next segment's first LSN, so segment
 * i may go when segs[i + 1] - 1 <= lsn. The newest segment always stays: it
 * anchors the LSN sequence (and may be open for writing). The list is
 * shortened under mu; the unlinks happen outside it. */
int cf_wal_drop_through(cf_wal *w, int64_t lsn)
{
    pthread_mutex_lock(&w->mu);
    size_t k = 0;
    while (k + 1 < w->nsegs && w->segs[k + 1] - 1 <= lsn)
        k++;
    int64_t *gone = NULL;
    if (k > 0) {
        gone = malloc(k * sizeof *gone);
        if (!gone) {
            pthread_mutex_unlock(&w->mu);
            return -ENOMEM;
        }
        memcpy(gone, w->segs, k * sizeof *gone);
        memmove(w->segs, w->segs + k, (w->nsegs - k) * sizeof *w->segs);
        w->nsegs -= k;
    }
    pthread_mutex_unlock(&w->mu);
    int r = 0;
    for (size_t i = 0; i < k; i++) {
        char name[SEG_NAME_LEN];
        seg_name(name, gone[i]);
        if (unlinkat(w->dirfd, name, 0) < 0 && errno != ENOENT && r == 0)
            r = -errno;
    }
    free(gone);
    if (k > 0 && fsync(w->dirfd) < 0 && r == 0)
        r = -errno;
    return r;
}

int64_t cf_wal_last_lsn(const cf_wal *w) { return atomic_load(&w->next_lsn) - 1; }

uint64_t cf_wal_fsyncs(const cf_wal *w) { return atomic_load(&w->fsyncs); }

uint64_t cf_wal_bytes(const cf_wal *w) { return atomic_load(&w->bytes); }
