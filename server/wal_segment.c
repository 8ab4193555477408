/* wal_segment: the log's segment files. Listing them at open, creating,
 * mapping and preallocating the current one, rotating (inline, or to the
 * next segment the flusher prepared ahead as wal-next.tmp, retiring the
 * closed one afterwards), and dropping segments a snapshot covers. */
#include "wal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "dirstream.h"
#include "log.h"
#include "wal_int.h"
#include "wal_test.h"

/* Parses "wal-<20 digits>.log"; false for any other name. */
static bool parse_seg_name(const char *name, int64_t *ret_lsn)
{
    int64_t v;
    if (!dirstream_lsn_name(name, "wal-", ".log", &v) || v == 0)   /* LSNs start at 1 */
        return false;
    *ret_lsn = v;
    return true;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Writes all n bytes, at the file's position when off < 0 (write), else at
 * off (pwrite), retrying short writes and EINTR. 0 or -errno. */
int wal_write_all(int fd, const void *buf, size_t n, off_t off)
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

/* A mapped segment's file is preallocated in steps of ALLOC_STEP as
 * records come, ALLOC_STEP_BIG past its first MiB (one fallocate per 64 KiB
 * was 3% of the server under 1000-event batches); a disk full or a file
 * size limit shows at the next step, not at the segment's start. */
#define ALLOC_STEP ((size_t)1 << 16)
#define ALLOC_STEP_BIG ((size_t)1 << 20)
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
int wal_alloc_to(cf_wal *w, size_t need)
{
    size_t len = round_up(need, need > ALLOC_STEP_BIG ? ALLOC_STEP_BIG : ALLOC_STEP);
    if (fallocate(w->fd, 0, 0, (off_t)len) < 0)
        return -errno;
    w->alloc = len;
    return 0;
}

/* Unmaps the current segment and cuts its file to its records (the
 * preallocated rest is zeros). Writer only. 0 or -errno. */
int wal_unmap_segment(cf_wal *w)
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
int wal_open_new_segment(cf_wal *w, int64_t first_lsn)
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
int wal_rotate(cf_wal *w)
{
    int r = wal_unmap_segment(w);
    if (r < 0)
        return r;
    if (w->policy != CF_FSYNC_OFF && (r = wal_datasync(w, w->fd)) < 0)
        return r;
    pthread_mutex_lock(&w->mu);
    int old = w->fd;
    w->fd = -1;
    pthread_mutex_unlock(&w->mu);
    close(old);
    return 0;
}

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
 * (except under --fsync off) and closes it: what wal_rotate() does inline.
 * 0 or -errno. */
static int retire_segment(cf_wal *w, int fd, uint8_t *map, size_t map_len, uint64_t size)
{
    int r = 0;
    if (map)
        munmap(map, map_len);
    if (ftruncate(fd, (off_t)size) < 0) {
        r = -errno;
    } else if (w->policy != CF_FSYNC_OFF) {
        r = wal_datasync(w, fd);
    }
    close(fd);
    return r;
}

/* Called with mu held and no one settling: retires the rotated-out segment
 * and fsyncs the directory (the new segment's name), outside mu. Returns
 * with mu held. */
void wal_settle_locked(cf_wal *w)
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
        wal_set_failed(w, "segment rotation", r);
    pthread_cond_broadcast(&w->done_cv);
}

/* With mu held, before syncing the current segment: every earlier segment
 * is synced and the current one's name durable once this returns 0 (mu
 * held throughout the check, so no rotation slips in before the caller
 * takes its fd and target). Returns w->err. */
int wal_settle_all_locked(cf_wal *w)
{
    while (!w->err && (w->ret_fd >= 0 || w->dir_dirty || w->settling)) {
        if (w->settling)
            pthread_cond_wait(&w->done_cv, &w->mu);
        else
            wal_settle_locked(w);
    }
    return w->err;
}

/* Flusher thread, mu held and prep == PREP_WANTED: creates, preallocates
 * (its first MiB) and maps the next segment outside mu. A failure only
 * turns preparation off: rotations then run inline, as before, and a real
 * disk problem shows there. Returns with mu held. */
void wal_prepare_locked(cf_wal *w)
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
int wal_rotate_prepared(cf_wal *w, int64_t lsn)
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

int wal_list_segments(cf_wal *w)
{
    int r = 0;
    DIR *d = dirstream_at(w->dirfd, &r);
    if (!d)
        return r;
    struct dirent *de;
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
bool wal_can_map(cf_wal *w)
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
