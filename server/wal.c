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
 * rotation under the caller's lock only renames and swaps (struct cf_wal).
 *
 * This file: open, close, append. Beside it (wal_int.h lists them): the
 * segment files (wal_segment.c), the group commit and the flusher
 * (wal_flush.c), the replay (wal_replay.c). */
#include "wal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
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

/* ---- test seam (wal_test.h) ----------------------------------------------- */

static atomic_bool test_force_write;

void cf_wal_test_force_write(bool on) { atomic_store(&test_force_write, on); }

/* ---- open / close --------------------------------------------------------- */

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
    if ((e = wal_list_segments(w)) < 0)
        goto fail;
    /* A next segment prepared by a process that crashed before using it. */
    unlinkat(w->dirfd, PREP_NAME, 0);
    w->mapped = !atomic_load(&test_force_write) && wal_can_map(w);
    /* The flusher also prepares mapped segments' successors (any policy). */
    if (policy == CF_FSYNC_BATCH || w->mapped) {
        what = "cannot start the flusher thread";
        if ((e = -pthread_create(&w->flusher, NULL, wal_flusher_main, w)) < 0)
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
    wal_settle_all_locked(w);
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
        int r = wal_unmap_segment(w);
        if (r < 0)
            cf_warn("wal: %s: cannot cut the segment to its records: %s", w->dir, strerror(-r));
        if (w->policy != CF_FSYNC_OFF && !w->err)
            (void)wal_datasync(w, w->fd);
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

/* ---- append --------------------------------------------------------------- */

/* Records larger than this are pwrite()n into the mapped segment instead
 * of copied: a page fault per 4 KiB page of a 1000-event batch cost more
 * (18% of the server under S2) than one system call per batch, which a
 * single event saves. The page cache is the same, so both are as written. */
#define MAP_COPY_MAX ((size_t)4096)

/* Room for rec more bytes in the current mapped segment: a new segment
 * once this one holds segment_bytes (as a written log rotates), a larger
 * mapping for a record past the preallocated end. Appender only. */
static int mapped_room(cf_wal *w, int64_t lsn, size_t rec)
{
    int r = 0;
    if (w->fd >= 0 && w->seg_size >= w->segment_bytes) {
        r = wal_rotate_prepared(w, lsn);
        if (r == 0)
            r = wal_rotate(w);
        if (r < 0)
            return r;
    }
    if (w->fd < 0 && (r = wal_open_new_segment(w, lsn)) < 0)
        return r;
    size_t need = w->seg_size + rec;
    if (need > w->map_len && (r = wal_map_to(w, need)) < 0)
        return r;
    if (need > w->alloc)
        r = wal_alloc_to(w, need);
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
        wal_set_failed(w, "segment preallocation", r);
        pthread_mutex_unlock(&w->mu);
        return -EIO;
    }
    if (REC_HDR + len <= MAP_COPY_MAX) {
        uint8_t *at = w->map + w->seg_size;
        memcpy(at, h, REC_HDR);
        if (len)
            memcpy(at + REC_HDR, payload, len);
    } else if ((r = wal_write_all(w->fd, h, REC_HDR, (off_t)w->seg_size)) < 0 ||
               (r = wal_write_all(w->fd, payload, len, (off_t)(w->seg_size + REC_HDR))) < 0) {
        pthread_mutex_lock(&w->mu);
        wal_set_failed(w, "write", r);
        pthread_mutex_unlock(&w->mu);
        return -EIO;
    }
    w->seg_size += REC_HDR + len;
    atomic_fetch_add(&w->bytes, REC_HDR + len);
    pthread_mutex_lock(&w->mu);
    atomic_store(&w->next_lsn, lsn + 1);
    wal_written_locked(w, lsn);
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

int64_t cf_wal_last_lsn(const cf_wal *w) { return atomic_load(&w->next_lsn) - 1; }

uint64_t cf_wal_fsyncs(const cf_wal *w) { return atomic_load(&w->fsyncs); }

uint64_t cf_wal_bytes(const cf_wal *w) { return atomic_load(&w->bytes); }
