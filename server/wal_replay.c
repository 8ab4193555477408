/* wal_replay: the log's replay at start (docs/FORMATS.md "Replay"): reads
 * each segment, checks its records, cuts a torn or zero tail, and positions
 * the appends after the last valid record. */
#include "wal_int.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fdio.h"
#include "log.h"

/* ---- replay --------------------------------------------------------------- */

/* A segment's bytes, as replay reads them. */
typedef struct seg_bytes {
    uint8_t *data;
    size_t size;
    bool mapped;    /* data is a read-only mapping of the file */
    bool owned;     /* data is malloc'd (the read() fallback) */
} seg_bytes;

/* Maps a whole segment read-only (populated up front), or reads it into a
 * malloc'd block where it cannot be mapped. Mapped, the page cache's pages
 * are the bytes: a read() copied each 64 MiB segment into a fresh block,
 * a page fault per 4 KiB and an munmap per segment (issue 15: 103,000 of
 * the decoder's faults and 9% of its CPU replaying 10M events). Replay
 * only reads the file while it is mapped; seg_release before any cut. */
static int load_segment(cf_wal *w, const char *name, seg_bytes *ret)
{
    static uint8_t none[1];
    *ret = (seg_bytes){.data = none};
    int fd = openat(w->dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    size_t n = (size_t)st.st_size;
    if (n == 0) {
        close(fd);
        return 0;
    }
    void *m = mmap(NULL, n, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
    if (m != MAP_FAILED) {
        close(fd);
        *ret = (seg_bytes){.data = m, .size = n, .mapped = true};
        return 0;
    }
    uint8_t *p = malloc(n);
    if (!p) {
        close(fd);
        return -ENOMEM;
    }
    /* A read error is an error, not the end of the log: replay would cut
     * the segment there. */
    ssize_t got = fdio_read_full(fd, p, n, 0);
    close(fd);
    if (got < 0) {
        free(p);
        return (int)got;
    }
    *ret = (seg_bytes){.data = p, .size = (size_t)got, .owned = true};
    return 0;
}

static void seg_release(seg_bytes *b)
{
    if (b->mapped)
        munmap(b->data, b->size);
    else if (b->owned)
        free(b->data);
    b->mapped = b->owned = false;
    b->size = 0;
}

/* Cuts segment segs[i] at byte off, quietly: what goes is the never-written,
 * preallocated rest of a mapped segment (zeros), not damage. cut_tail uses it
 * for the damaged case, with a warning. */
static int trim_segment(cf_wal *w, size_t i, size_t off)
{
    char name[SEG_NAME_LEN];
    seg_name(name, w->segs[i]);
    int fd = openat(w->dirfd, name, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int r = 0;
    if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0)
        r = -errno;
    close(fd);
    return r;
}

/* Cuts segment segs[i] at byte off and deletes every later segment, so the
 * log ends with the last whole, valid record. */
static int cut_tail(cf_wal *w, size_t i, size_t off, size_t size, const char *why)
{
    char name[SEG_NAME_LEN];
    seg_name(name, w->segs[i]);
    cf_warn("wal: %s/%s: %s at byte %zu; cutting the log there (%zu bytes dropped)", w->dir,
            name, why, off, size - off);
    int r = trim_segment(w, i, off);
    if (r < 0)
        return r;
    for (size_t j = i + 1; j < w->nsegs; j++) {
        seg_name(name, w->segs[j]);
        cf_warn("wal: %s/%s: after the cut; deleting the segment", w->dir, name);
        if (unlinkat(w->dirfd, name, 0) < 0 && errno != ENOENT)
            return -errno;
    }
    w->nsegs = i + 1;
    if (fsync(w->dirfd) < 0)
        return -errno;
    return 0;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (p[i])
            return false;
    return true;
}

/* Opens the newest segment for appending when the next LSN continues it;
 * otherwise the next write starts a segment named after the next LSN (an
 * empty newest segment is removed first). */
static int position_appends(cf_wal *w, int64_t last_in_log, bool last_seg_empty, size_t last_size)
{
    if (w->nsegs == 0)
        return 0;
    char name[SEG_NAME_LEN];
    seg_name(name, w->segs[w->nsegs - 1]);
    if (last_seg_empty) {
        if (unlinkat(w->dirfd, name, 0) < 0 && errno != ENOENT)
            return -errno;
        w->nsegs--;
        return 0;
    }
    if (last_in_log != atomic_load(&w->next_lsn) - 1 || last_size >= w->segment_bytes)
        return 0;
    int fd = openat(w->dirfd, name, (w->mapped ? O_RDWR : O_WRONLY) | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (lseek(fd, (off_t)last_size, SEEK_SET) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    w->fd = fd;
    w->seg_size = last_size;
    if (w->mapped) {
        w->alloc = last_size;
        return wal_map_to(w, w->segment_bytes > last_size ? w->segment_bytes : last_size + 1);
    }
    return 0;
}

/* Validates every segment in order (length, CRC, LSN continuity) but those
 * whose records are all <= after (skipped unread), calls fn
 * for records with lsn > after, cuts the log at the first torn or corrupt
 * record and positions appends after max(last good lsn, after): a snapshot
 * may cover records that never reached the log. A missing range of LSNs that
 * the snapshot does not cover (a deleted segment) is -ENODATA: replaying
 * past it would silently lose acknowledged events. O(log size) I/O; holds
 * one segment in memory at a time. */
int64_t cf_wal_replay(cf_wal *w, int64_t after, cf_wal_record_fn fn, void *ctx)
{
    if (w->replayed)
        return -EALREADY;
    if (after < 0)
        after = 0;
    int64_t last = 0, count = 0;
    bool last_seg_empty = false;
    size_t last_size = 0;
    for (size_t i = 0; i < w->nsegs; i++) {
        int64_t first = w->segs[i];
        int64_t covered = last > after ? last : after;
        char name[SEG_NAME_LEN];
        seg_name(name, first);
        if (first > covered + 1) {
            cf_error("wal: %s/%s: records %" PRId64 "..%" PRId64
                     " are missing from the log and not covered by the snapshot",
                     w->dir, name, covered + 1, first - 1);
            return -ENODATA;
        }
        /* Every record of a segment before the one holding after + 1 is
         * covered by the snapshot: not read. The log is kept from the
         * previous snapshot on (the fallback, docs/FORMATS.md), so a
         * restart onto the newest one would read a snapshot interval of
         * log it does not need, and damage there would cut the log it
         * does need. */
        if (i + 1 < w->nsegs && w->segs[i + 1] - 1 <= after) {
            last = w->segs[i + 1] - 1;
            continue;
        }
        seg_bytes seg;
        int r = load_segment(w, name, &seg);
        if (r < 0)
            return r;
        const uint8_t *data = seg.data;
        size_t size = seg.size;
        size_t off = 0;
        const char *why = NULL;
        int64_t expect = first;
        bool overlaps = last > 0 && first <= last;
        if (overlaps)
            why = "segment overlaps the previous one";
        while (!why && off < size) {
            if (size - off < REC_HDR) {
                why = "torn record header";
                break;
            }
            const uint8_t *h = data + off;
            uint32_t len = rd32(h);
            if (len > REC_MAX || size - off - REC_HDR < len) {
                why = "torn record";
                break;
            }
            if (cf_crc32c(0, h + 8, 9 + (size_t)len) != rd32(h + 4)) {
                why = "CRC mismatch";
                break;
            }
            int64_t lsn = (int64_t)rd64(h + 9);
            if (lsn != expect) {
                why = "LSN out of sequence";
                break;
            }
            if (lsn > after && fn) {
                int fr = fn(ctx, lsn, h[8], h + REC_HDR, len);
                if (fr < 0) {
                    seg_release(&seg);
                    return fr;
                }
            }
            if (lsn > after)
                count++;
            last = lsn;
            expect = lsn + 1;
            off += REC_HDR + len;
        }
        /* Zeros from a record boundary to the end: a mapped segment's
         * preallocated rest, left by a crash before the segment was cut to
         * its records (or by a power loss before its last pages reached the
         * disk, then like any lost tail). The segment ends there, unless a
         * later segment does not continue it: then the later ones go, as
         * after any damage. */
        bool zero_tail = why && !overlaps && all_zero(data + off, size - off);
        seg_release(&seg);  /* before any cut: the file shrinks under a mapping */
        if (zero_tail && (i + 1 == w->nsegs || w->segs[i + 1] == expect)) {
            why = NULL;
            if ((r = trim_segment(w, i, off)) < 0)
                return r;
            size = off;
        }
        if (why) {
            if ((r = cut_tail(w, i, off, size, why)) < 0)
                return r;
            size = off;
        }
        last_seg_empty = off == 0;
        last_size = size;
        if (why)
            break;
    }
    atomic_store(&w->next_lsn, (last > after ? last : after) + 1);
    int r = position_appends(w, last, last_seg_empty, last_size);
    if (r < 0)
        return r;
    pthread_mutex_lock(&w->mu);
    w->written_lsn = w->synced_lsn = atomic_load(&w->next_lsn) - 1;
    w->replayed = true;
    pthread_mutex_unlock(&w->mu);
    if (last > 0 || count > 0)
        cf_info("wal: %s: replayed %" PRId64 " records after lsn %" PRId64
                "; next lsn %" PRId64, w->dir, count, after, atomic_load(&w->next_lsn));
    return count;
}

