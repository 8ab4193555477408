/* fdio.h - whole reads and writes on a file descriptor.
 *
 * read, write, pread and pwrite may move fewer bytes than asked (a signal,
 * a pipe, a full disk) and fail with EINTR; every file the daemon keeps
 * (snapshots, the log, spill and backlog files, the hash key) wants all of
 * the bytes or a clear error. These two loops are the one place that says so. */
#ifndef CF_FDIO_H
#define CF_FDIO_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <unistd.h>

/* Writes all n bytes: at the file's position (write) when off < 0, else at
 * off (pwrite). 0, or -errno (-EIO when the kernel wrote nothing). */
static inline int fdio_write_full(int fd, const void *buf, size_t n, off_t off)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t k = off < 0 ? write(fd, p, n) : pwrite(fd, p, n, off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return k < 0 ? -errno : -EIO;
        p += k;
        n -= (size_t)k;
        if (off >= 0)
            off += k;
    }
    return 0;
}

/* Reads up to n bytes at off (pread), stopping early only at the end of the
 * file. The bytes read (< n at the end), or -errno. */
static inline ssize_t fdio_read_full(int fd, void *buf, size_t n, off_t off)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, p + got, n - got, off + (off_t)got);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

#endif
