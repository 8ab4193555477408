/* wal_int: what the log's modules share (private to server/wal*.c):
 *   wal.c          open, append, close (and the threads and locks, on top)
 *   wal_segment.c  segment files: list, create, map and preallocate, rotate
 *                  (the next one prepared ahead, the closed one retired), drop
 *   wal_flush.c    group commit and the flusher thread
 *   wal_replay.c   replay at start: read, check and cut the segments, then
 *                  position the appends after the last valid record */
#ifndef CF_WAL_INT_H
#define CF_WAL_INT_H

#include "wal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/types.h>
#include <unistd.h>

#include "cf_buf.h"
#include "log.h"

/* u32 payload length, u32 CRC32C, u8 type, u64 lsn. */
#define REC_HDR 17u
/* A record larger than this is rejected by append and treated as corrupt by
 * replay, so a torn length field cannot make replay allocate gigabytes. */
#define REC_MAX (256u << 20)
/* Under --fsync batch the flusher waits this long after the first unsynced
 * write before it fsyncs, to gather writes into one fsync; with the fsync
 * itself it stays within the 10 ms the contract promises on a healthy disk. */
#define FLUSH_DELAY_NS 4000000L
/* A write under --fsync batch must be durable within 10 ms (SPEC 10): the
 * latest its sync may begin is this long after it, less a sync's length
 * (1 ms for the flusher's wake-up). */
#define FLUSH_BOUND_NS 9000000L
#define DEFAULT_SEGMENT_BYTES ((size_t)64 << 20)
/* "wal-" + 20 digits + ".log" + NUL */
#define SEG_NAME_LEN 29

/* The prepared next segment's name: not a segment name, so replay never
 * reads it. A crash before it is used leaves it behind (zeros) and the next
 * open removes it; once used it was renamed to its segment's name first. */
#define PREP_NAME "wal-next.tmp"

struct cf_wal {
    char *dir;
    int dirfd;
    cf_fsync_policy policy;
    size_t segment_bytes;

    pthread_mutex_t mu;
    pthread_cond_t done_cv;  /* committers: written/synced advanced, or error */
    pthread_cond_t flush_cv; /* flusher: unsynced bytes, or stopping */
    cf_buf pending;          /* appended, not yet taken by a writer */
    cf_buf spare;            /* the writer's batch (swapped with pending) */
    _Atomic int64_t next_lsn;
    int64_t written_lsn;     /* records <= this are in the file */
    int64_t synced_lsn;      /* records <= this are fdatasynced */
    bool writing;
    bool replayed;
    bool stopping;
    int err;                 /* sticky -EIO */
    atomic_bool failed;      /* err is set: read without mu on the mapped append path */
    struct timespec unsynced_since; /* monotonic; valid while written > synced */

    /* Segment first-LSNs, ascending; the last one is the newest segment. */
    int64_t *segs;
    size_t nsegs, segcap;

    /* Writer-owned (fd is also swapped under mu, see above); with mapped
     * segments the appender is the writer. */
    int fd;                  /* current segment, -1 = create at next write */
    uint64_t seg_size;       /* bytes of records in it */
    bool mapped;             /* segments are preallocated and mapped (see top) */
    uint8_t *map;            /* the current segment's mapping, or NULL */
    size_t map_len;          /* its length (address space; may pass the file's end) */
    size_t alloc;            /* the file's preallocated size: appends stay below */

    /* Rotation off the appender's path (mapped segments): the flusher
     * thread prepares the next segment ahead (PREP_NAME: created,
     * preallocated, mapped) once the current one is half full, so that a
     * rotation under the caller's (sequencer's) lock only renames and
     * swaps. The segment it closed is "retired" (unmapped, cut to its
     * records, fdatasynced, closed) and the directory fsynced afterwards,
     * by the flusher or by the next --fsync always committer, before
     * synced_lsn passes it: the fsyncs that used to run inside the lock.
     * All under mu. */
    enum { PREP_NONE, PREP_WANTED, PREP_BUSY, PREP_READY, PREP_OFF } prep;
    int prep_fd;
    uint8_t *prep_map;
    size_t prep_map_len, prep_alloc;
    int ret_fd;              /* the rotated-out segment, -1 = none */
    uint8_t *ret_map;
    size_t ret_map_len;
    uint64_t ret_size;
    bool dir_dirty;          /* a renamed segment's entry is not yet fsynced */
    bool settling;           /* a thread is retiring / fsyncing the directory */

    bool has_flusher;
    pthread_t flusher;
    _Atomic uint64_t fsyncs;
    _Atomic uint64_t bytes;
    /* Test seam (wal_test.h): when the flusher's next sync is due, as set
     * after its last sync left writes unsynced (monotonic ns; 0: none). */
    _Atomic int64_t test_due_after_sync_ns;
};

/* Little-endian fields of a record header. */
static inline uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* A segment's file name: "wal-<first LSN, 20 digits>.log". */
static inline void seg_name(char out[SEG_NAME_LEN], int64_t first_lsn)
{
    snprintf(out, SEG_NAME_LEN, "wal-%020" PRId64 ".log", first_lsn);
}

/* Called with mu held: records the first failure and wakes everyone. */
static inline void wal_set_failed(cf_wal *w, const char *what, int err)
{
    if (!w->err)
        cf_error("wal: %s failed: %s; no more records will be acknowledged", what,
                 strerror(-err));
    w->err = -EIO;
    atomic_store(&w->failed, true);
    pthread_cond_broadcast(&w->done_cv);
    pthread_cond_broadcast(&w->flush_cv);
}

/* Called with mu held: records <= upto are in the file. Under --fsync
 * batch the flusher sleeps without a deadline only when everything written
 * is synced; otherwise it is already timed for the first unsynced write and
 * needs no wake-up. (Signalling it on every round woke it once per request
 * under single-event POSTs, only for it to find its deadline not due and
 * sleep again, issue 15.) Inline: every append of a mapped log calls it
 * (wal.c), as does the group commit (wal_flush.c). */
static inline void wal_written_locked(cf_wal *w, int64_t upto)
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

/* fdatasyncs fd, counted in w->fsyncs (stats). 0 or -errno. */
static inline int wal_datasync(cf_wal *w, int fd)
{
    if (fdatasync(fd) < 0)
        return -errno;
    atomic_fetch_add(&w->fsyncs, 1);
    return 0;
}

/* ---- wal_segment.c ---- */

/* Writes all n bytes, at the file's position when off < 0 (write), else at
 * off (pwrite), retrying short writes and EINTR. 0 or -errno. */
int wal_write_all(int fd, const void *buf, size_t n, off_t off);

/* Maps len bytes of the current segment, or remaps to len (a record past
 * the mapped length: rare). The mapping may pass the file's end; appends
 * stay within the preallocated part. Writer only. 0 or -errno. */
int wal_map_to(cf_wal *w, size_t len);

/* Unmaps the current segment and cuts its file to its records (the
 * preallocated rest is zeros). Writer only. 0 or -errno. */
int wal_unmap_segment(cf_wal *w);

/* Creates the segment file for first_lsn and makes its directory entry
 * durable; maps it when segments are mapped. Writer only. */
int wal_open_new_segment(cf_wal *w, int64_t first_lsn);

/* Closes the full current segment, fsyncing it first (except under
 * --fsync off). Writer only. 0 or -errno. */
int wal_rotate(cf_wal *w);

/* Called with mu held and no one settling: retires the rotated-out segment
 * and fsyncs the directory (the new segment's name), outside mu. Returns
 * with mu held. */
void wal_settle_locked(cf_wal *w);

/* With mu held, before syncing the current segment: every earlier segment
 * is synced and the current one's name durable once this returns 0.
 * Returns w->err. */
int wal_settle_all_locked(cf_wal *w);

/* Flusher thread, mu held and prep == PREP_WANTED: prepares the next
 * segment (PREP_NAME) outside mu. Returns with mu held. */
void wal_prepare_locked(cf_wal *w);

/* The segments in the directory, into w->segs (ascending). 0 or -errno. */
int wal_list_segments(cf_wal *w);

/* Whether the log's file system can preallocate and map a file. */
bool wal_can_map(cf_wal *w);

/* Preallocates the current segment to at least need bytes. Writer only.
 * 0 or -errno. */
int wal_alloc_to(cf_wal *w, size_t need);

/* A mapped rotation with the prepared segment (renamed to lsn's name and
 * swapped in; the closed one is retired later). 1 done, 0 none prepared:
 * rotate inline. Appender only. */
int wal_rotate_prepared(cf_wal *w, int64_t lsn);

/* ---- wal_flush.c ---- */


/* The flusher thread (--fsync batch, or mapped segments): arg is the log. */
void *wal_flusher_main(void *arg);

#endif
