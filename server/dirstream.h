/* dirstream.h - listing a directory the log or the snapshot store keeps open:
 * a stream over its descriptor, and the LSN-numbered names it holds.
 *
 * The log and the snapshot store keep their directory open (dirfd) and list it
 * now and then. fdopendir takes ownership of its descriptor, so the stream
 * reads a dup; the dup shares dirfd's file offset, so it is rewound to list
 * from the first entry every time. */
#ifndef CF_DIRSTREAM_H
#define CF_DIRSTREAM_H

#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

/* A stream listing dirfd from its start (closedir closes only the dup), or
 * NULL with -errno in *ret_err. */
static inline DIR *dirstream_at(int dirfd, int *ret_err)
{
    int fd = dup(dirfd);
    if (fd < 0) {
        *ret_err = -errno;
        return NULL;
    }
    DIR *d = fdopendir(fd);
    if (!d) {
        *ret_err = -errno;
        close(fd);
        return NULL;
    }
    rewinddir(d);
    return d;
}

/* Parses the names both keep in such a directory, "<prefix><20 digits>
 * <suffix>" (wal-00000000000000000001.log, snapshot-...cfs): true and the
 * number in *ret_lsn, or false for any other name (temp files included). */
static inline bool dirstream_lsn_name(const char *name, const char *prefix, const char *suffix,
                                      int64_t *ret_lsn)
{
    size_t np = strlen(prefix), ns = strlen(suffix);
    if (strlen(name) != np + 20 + ns || strncmp(name, prefix, np) != 0 ||
        strcmp(name + np + 20, suffix) != 0)
        return false;
    uint64_t v = 0;
    for (size_t i = np; i < np + 20; i++) {
        if (name[i] < '0' || name[i] > '9' || v > (uint64_t)INT64_MAX / 10)
            return false;
        v = v * 10 + (uint64_t)(name[i] - '0');
    }
    if (v > (uint64_t)INT64_MAX)
        return false;
    *ret_lsn = (int64_t)v;
    return true;
}

#endif
