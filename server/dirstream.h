/* dirstream.h - a directory stream over an already open directory descriptor.
 *
 * The log and the snapshot store keep their directory open (dirfd) and list it
 * now and then. fdopendir takes ownership of its descriptor, so the stream
 * reads a dup; the dup shares dirfd's file offset, so it is rewound to list
 * from the first entry every time. */
#ifndef CF_DIRSTREAM_H
#define CF_DIRSTREAM_H

#include <dirent.h>
#include <errno.h>
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

#endif
