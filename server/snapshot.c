/* snapshot: versioned, CRC-checked state files (format in docs/FORMATS.md).
 *
 * A snapshot becomes visible only by rename(2) after its bytes are fsynced,
 * and the rename is made durable by fsyncing the directory, so a crash leaves
 * either the old set of snapshots or the new one, plus at most a stray
 * temp file that the next write removes. */
#include "snapshot.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "crc32c.h"
#include "dirstream.h"
#include "fdio.h"
#include "log.h"

#define SNAP_MAGIC "CFSNAP01"
#define SNAP_VERSION 1u
/* magic 8, version 4, lsn 8, payload length 8, payload CRC 4, header CRC 4 */
#define SNAP_HDR 36u
/* "snapshot-" + 20 digits + ".cfs" + NUL */
#define SNAP_NAME_LEN 34
#define SNAP_TMP_SUFFIX ".tmp"
/* A snapshot that fails its checks is renamed to <name>.corrupt: kept for
 * inspection, but no longer loaded or counted among the kept two (so the
 * next snapshot's fallback is a good one). */
#define SNAP_BAD_SUFFIX ".corrupt"
/* Snapshots kept: the newest and the one before it (the fallback). */
#define SNAP_KEEP 2

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

static uint32_t rd32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

static void snap_name(char out[SNAP_NAME_LEN], int64_t lsn)
{
    snprintf(out, SNAP_NAME_LEN, "snapshot-%020" PRId64 ".cfs", lsn);
}

/* Parses "snapshot-<20 digits>.cfs"; false for anything else (temp files
 * included). */
static bool parse_snap_name(const char *name, int64_t *ret_lsn)
{
    return dirstream_lsn_name(name, "snapshot-", ".cfs", ret_lsn);
}

/* True for "<snapshot name>.corrupt"; sets *ret_lsn. */
static bool parse_bad_name(const char *name, int64_t *ret_lsn)
{
    char base[SNAP_NAME_LEN];
    size_t n = strlen(name);
    if (n != SNAP_NAME_LEN - 1 + strlen(SNAP_BAD_SUFFIX) ||
        strcmp(name + SNAP_NAME_LEN - 1, SNAP_BAD_SUFFIX) != 0)
        return false;
    memcpy(base, name, SNAP_NAME_LEN - 1);
    base[SNAP_NAME_LEN - 1] = '\0';
    return parse_snap_name(base, ret_lsn);
}

static int cmp_desc(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x < y) - (x > y);
}

/* The LSNs of dir's snapshot files, newest first, into *ret (malloc'd).
 * With remove_below >= 0 (after a write), stray temp files and quarantined
 * snapshots older than remove_below are deleted on the way. */
static int list_snapshots(int dirfd, int64_t remove_below, int64_t **ret, size_t *ret_n)
{
    int r = 0;
    DIR *d = dirstream_at(dirfd, &r);
    if (!d)
        return r;
    int64_t *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        int64_t lsn;
        size_t nl = strlen(de->d_name);
        if (remove_below >= 0 && strncmp(de->d_name, "snapshot-", 9) == 0 && nl > 4 &&
            strcmp(de->d_name + nl - 4, SNAP_TMP_SUFFIX) == 0) {
            (void)unlinkat(dirfd, de->d_name, 0);
            continue;
        }
        if (parse_bad_name(de->d_name, &lsn)) {
            if (lsn < remove_below)
                (void)unlinkat(dirfd, de->d_name, 0);
            continue;
        }
        if (!parse_snap_name(de->d_name, &lsn))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 8;
            int64_t *p = realloc(v, cap * sizeof *p);
            if (!p) {
                r = -ENOMEM;
                break;
            }
            v = p;
        }
        v[n++] = lsn;
    }
    closedir(d);
    if (r < 0) {
        free(v);
        return r;
    }
    if (n > 1)
        qsort(v, n, sizeof *v, cmp_desc);
    *ret = v;
    *ret_n = n;
    return 0;
}

/* Writeback pacing (issue 15, T1). A snapshot of tens of MB written at
 * once sat in the page cache until its fsync, which then queued all of it
 * at the device: the log's group commit (an fdatasync that a waiting 202
 * needs) waited behind it, 40-125 ms (snapshot_io_bench). So the file is
 * written in SNAP_PACE_CHUNK pieces, the writeback of each is started
 * when it is written, and the writer waits for the one SNAP_PACE_AHEAD
 * chunks back: at most that much of the snapshot is ahead of a commit at
 * the device. sync_file_range promises no durability and its errors are
 * ignored: the fsync after the last byte is the check, as before. */
#define SNAP_PACE_CHUNK ((size_t)512 << 10)
#define SNAP_PACE_AHEAD 2u

typedef struct pacer {
    off_t written;      /* file bytes written */
    off_t started;      /* writeback started below this */
    off_t waited;       /* writeback waited for below this */
} pacer;

static void pace(int fd, pacer *p)
{
    while (p->written - p->started >= (off_t)SNAP_PACE_CHUNK) {
        (void)sync_file_range(fd, p->started, (off_t)SNAP_PACE_CHUNK, SYNC_FILE_RANGE_WRITE);
        p->started += (off_t)SNAP_PACE_CHUNK;
        if (p->started - p->waited > (off_t)(SNAP_PACE_AHEAD * SNAP_PACE_CHUNK)) {
            (void)sync_file_range(fd, p->waited, (off_t)SNAP_PACE_CHUNK,
                                  SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                      SYNC_FILE_RANGE_WAIT_AFTER);
            p->waited += (off_t)SNAP_PACE_CHUNK;
        }
    }
}

/* Writes the pieces iov[0..n) in order, resuming after short writes; at
 * most 64 pieces and SNAP_PACE_CHUNK bytes per call, pacing the writeback
 * after each (p->written: the file bytes before the first piece). 0 or
 * -errno. */
static int writev_all(int fd, const struct iovec *iov, size_t n, pacer *p)
{
    size_t i = 0, done = 0;   /* done: bytes of iov[i] already written */
    while (i < n) {
        struct iovec v[64];
        size_t k = 0, room = SNAP_PACE_CHUNK;
        for (size_t j = i; j < n && k < sizeof v / sizeof *v && room > 0; j++) {
            size_t off = j == i ? done : 0;
            if (iov[j].iov_len == off)
                continue;
            v[k].iov_base = (uint8_t *)iov[j].iov_base + off;
            v[k].iov_len = iov[j].iov_len - off < room ? iov[j].iov_len - off : room;
            room -= v[k].iov_len;
            k++;
        }
        if (k == 0)
            return 0;
        ssize_t w = writev(fd, v, (int)k);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p->written += (off_t)w;
        pace(fd, p);
        size_t left = (size_t)w;
        while (i < n && left >= iov[i].iov_len - done) {
            left -= iov[i].iov_len - done;
            i++;
            done = 0;
        }
        done += left;
    }
    return 0;
}

int cf_snapshot_write(const char *dir, int64_t lsn, const void *payload, size_t len)
{
    if (len > 0 && !payload)
        return -EINVAL;
    struct iovec one = {(void *)(uintptr_t)payload, len};
    return cf_snapshot_writev(dir, lsn, &one, 1);
}

/* Writes <name>.tmp, fsyncs it, renames it over <name>, fsyncs the
 * directory, then deletes all but the SNAP_KEEP newest snapshots and those
 * at or after keep_from. The payload is not kept. O(len) I/O. */
int cf_snapshot_writev(const char *dir, int64_t lsn, const struct iovec *iov, size_t niov)
{
    return cf_snapshot_writev_keep(dir, lsn, iov, niov, INT64_MAX);
}

int cf_snapshot_writev_keep(const char *dir, int64_t lsn, const struct iovec *iov, size_t niov,
                            int64_t keep_from)
{
    if (lsn < 0 || (niov > 0 && !iov))
        return -EINVAL;
    size_t len = 0;
    uint32_t crc = 0;
    for (size_t i = 0; i < niov; i++) {
        if (iov[i].iov_len > 0 && !iov[i].iov_base)
            return -EINVAL;
        len += iov[i].iov_len;
        crc = cf_crc32c(crc, iov[i].iov_base, iov[i].iov_len);
    }
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;

    uint8_t h[SNAP_HDR];
    memcpy(h, SNAP_MAGIC, 8);
    wr32(h + 8, SNAP_VERSION);
    wr64(h + 12, (uint64_t)lsn);
    wr64(h + 20, (uint64_t)len);
    wr32(h + 28, crc);
    wr32(h + 32, cf_crc32c(0, h, 32));

    char name[SNAP_NAME_LEN], tmp[SNAP_NAME_LEN + sizeof SNAP_TMP_SUFFIX];
    snap_name(name, lsn);
    snprintf(tmp, sizeof tmp, "%s%s", name, SNAP_TMP_SUFFIX);
    int r = 0;
    int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    pacer p = {.written = SNAP_HDR};
    if ((r = fdio_write_full(fd, h, SNAP_HDR, -1)) < 0 || (r = writev_all(fd, iov, niov, &p)) < 0)
        goto out_tmp;
    if (fsync(fd) < 0) {
        r = -errno;
        goto out_tmp;
    }
    if (close(fd) < 0) {
        fd = -1;
        r = -errno;
        goto out_tmp;
    }
    fd = -1;
    if (renameat(dirfd, tmp, dirfd, name) < 0) {
        r = -errno;
        goto out_tmp;
    }
    if (fsync(dirfd) < 0) {
        r = -errno;
        goto out;
    }

    /* Two passes: the first finds the oldest snapshot kept, the second
     * (inside list_snapshots) drops quarantined files older than it. */
    int64_t *lsns;
    size_t n;
    if (list_snapshots(dirfd, -1, &lsns, &n) == 0) {
        int64_t oldest_kept = n == 0 ? lsn : lsns[(n < SNAP_KEEP ? n : SNAP_KEEP) - 1];
        for (size_t i = SNAP_KEEP; i < n; i++) {
            if (lsns[i] >= keep_from) {
                oldest_kept = lsns[i];  /* a base the kept ones need */
                continue;
            }
            char old[SNAP_NAME_LEN];
            snap_name(old, lsns[i]);
            (void)unlinkat(dirfd, old, 0);
        }
        free(lsns);
        if (list_snapshots(dirfd, oldest_kept, &lsns, &n) == 0)
            free(lsns);
        (void)fsync(dirfd);
    }
    goto out;

out_tmp:
    if (fd >= 0)
        close(fd);
    (void)unlinkat(dirfd, tmp, 0);
out:
    close(dirfd);
    return r;
}

/* Reads and checks one snapshot file. Returns 0, or a negative errno with a
 * reason in *why for a file that fails a check. */
static int load_one(int dirfd, int64_t lsn, cf_buf *out, const char **why)
{
    char name[SNAP_NAME_LEN];
    snap_name(name, lsn);
    int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *why = "cannot open";
        return -errno;
    }
    int r = -EBADMSG;
    struct stat st;
    uint8_t h[SNAP_HDR];
    if (fstat(fd, &st) < 0) {
        *why = "cannot stat";
        r = -errno;
        goto out;
    }
    if (st.st_size < (off_t)SNAP_HDR || pread(fd, h, SNAP_HDR, 0) != (ssize_t)SNAP_HDR) {
        *why = "truncated header";
        goto out;
    }
    if (memcmp(h, SNAP_MAGIC, 8) != 0) {
        *why = "bad magic";
        goto out;
    }
    if (cf_crc32c(0, h, 32) != rd32(h + 32)) {
        *why = "header CRC mismatch";
        goto out;
    }
    if (rd32(h + 8) != SNAP_VERSION) {
        *why = "unsupported format version";
        goto out;
    }
    if ((int64_t)rd64(h + 12) != lsn) {
        *why = "LSN in header differs from the file name";
        goto out;
    }
    uint64_t len = rd64(h + 20);
    if ((uint64_t)st.st_size - SNAP_HDR != len) {
        *why = (uint64_t)st.st_size - SNAP_HDR < len ? "truncated payload" : "trailing bytes";
        goto out;
    }
    if (len > SIZE_MAX / 2) {
        *why = "payload too large";
        goto out;
    }
    cf_buf_reset(out);
    if (cf_buf_reserve(out, (size_t)len) < 0) {
        out->oom = false;
        *why = "out of memory";
        r = -ENOMEM;
        goto out;
    }
    ssize_t got = fdio_read_full(fd, out->data, (size_t)len, SNAP_HDR);
    if (got < (ssize_t)len) {
        *why = got < 0 ? "read error" : "truncated payload";
        r = got < 0 ? (int)got : -EBADMSG;
        goto out;
    }
    if (cf_crc32c(0, out->data, (size_t)len) != rd32(h + 28)) {
        *why = "payload CRC mismatch";
        goto out;
    }
    out->len = (size_t)len;
    r = 0;
out:
    close(fd);
    return r;
}

int cf_snapshot_read(const char *dir, int64_t lsn, cf_buf *ret_payload)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    const char *why = "";
    int r = load_one(dirfd, lsn, ret_payload, &why);
    if (r < 0) {
        char name[SNAP_NAME_LEN];
        snap_name(name, lsn);
        cf_warn("snapshot: %s/%s: %s (%s)", dir, name, why, strerror(-r));
        cf_buf_reset(ret_payload);
    }
    close(dirfd);
    return r;
}

/* Tries snapshots newest first; each one that fails a check is logged,
 * renamed to <name>.corrupt and skipped. ret_payload is reset first and holds
 * the accepted payload.
 * O(size of the snapshots tried). */
int cf_snapshot_load(const char *dir, int64_t *ret_lsn, cf_buf *ret_payload)
{
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return errno == ENOENT ? -ENOENT : -errno;
    int64_t *lsns;
    size_t n;
    int r = list_snapshots(dirfd, -1, &lsns, &n);
    if (r < 0) {
        close(dirfd);
        return r;
    }
    cf_buf_reset(ret_payload);
    r = -ENOENT;
    for (size_t i = 0; i < n; i++) {
        const char *why = "";
        int e = load_one(dirfd, lsns[i], ret_payload, &why);
        if (e == 0) {
            *ret_lsn = lsns[i];
            r = 0;
            break;
        }
        char name[SNAP_NAME_LEN], bad[SNAP_NAME_LEN + sizeof SNAP_BAD_SUFFIX];
        snap_name(name, lsns[i]);
        snprintf(bad, sizeof bad, "%s%s", name, SNAP_BAD_SUFFIX);
        /* Only a file that failed a check is moved aside; an I/O error may
         * be passing. */
        bool moved = e == -EBADMSG && renameat(dirfd, name, dirfd, bad) == 0 &&
                     fsync(dirfd) == 0;
        cf_warn("snapshot: %s/%s: %s (%s); skipping it%s%s%s", dir, name, why, strerror(-e),
                i + 1 < n ? " for the previous one" : "", moved ? "; moved aside as " : "",
                moved ? bad : "");
        cf_buf_reset(ret_payload);
        if (e == -ENOMEM) {
            r = e;
            break;
        }
    }
    free(lsns);
    close(dirfd);
    return r;
}

/* ---- the data directory's hash key ------------------------------------ */

#define HASHKEY_NAME "hashkey"
#define HASHKEY_TMP "hashkey.tmp"

int cf_hashkey_store(const char *dir, const uint8_t key[CF_HASHKEY_LEN])
{
    if (mkdir(dir, 0755) < 0 && errno != EEXIST)
        return -errno;
    int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dirfd < 0)
        return -errno;
    int r = 0;
    int fd = openat(dirfd, HASHKEY_TMP, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    r = fdio_write_full(fd, key, CF_HASHKEY_LEN, -1);
    if (!r && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && !r)
        r = -errno;
    if (!r && renameat(dirfd, HASHKEY_TMP, dirfd, HASHKEY_NAME) < 0)
        r = -errno;
    if (!r && fsync(dirfd) < 0)
        r = -errno;
    if (r)
        (void)unlinkat(dirfd, HASHKEY_TMP, 0);
out:
    close(dirfd);
    return r;
}

int cf_hashkey_load(const char *dir, uint8_t key[CF_HASHKEY_LEN])
{
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, HASHKEY_NAME) >= sizeof path)
        return -ENAMETOOLONG;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        uint8_t buf[CF_HASHKEY_LEN + 1];
        ssize_t n = read(fd, buf, sizeof buf);
        close(fd);
        if (n == CF_HASHKEY_LEN) {
            memcpy(key, buf, CF_HASHKEY_LEN);
            return 0;
        }
        cf_warn("%s: not a %d-byte hash key; making a new one", path, CF_HASHKEY_LEN);
    } else if (errno != ENOENT) {
        return -errno;
    }
    /* First start (or a damaged file): a fresh secret from the kernel. */
    size_t got = 0;
    while (got < CF_HASHKEY_LEN) {
        ssize_t n = getrandom(key + got, CF_HASHKEY_LEN - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return cf_hashkey_store(dir, key);
}
