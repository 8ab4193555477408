/* accept_fault: an LD_PRELOAD shim for test_http_limits. While the file
 * named by $CF_TEST_ACCEPT_FAULT exists, the next connection accept4()
 * takes is closed and reported as the error EPROTO instead (the file is
 * removed): Linux's accept passes a new connection's pending network error
 * on that way (accept(2), "Error handling"), which no loopback client can
 * provoke on demand. (_GNU_SOURCE comes from the build, for RTLD_NEXT;
 * __SOCKADDR_ARG is how glibc declares accept4 under it.) */
#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

typedef int (*accept4_fn)(int, __SOCKADDR_ARG, socklen_t *restrict, int);

int accept4(int fd, __SOCKADDR_ARG sa, socklen_t *restrict len, int flags)
{
    static accept4_fn real;
    if (!real)
        *(void **)&real = dlsym(RTLD_NEXT, "accept4");
    int c = real(fd, sa, len, flags);
    const char *trigger = getenv("CF_TEST_ACCEPT_FAULT");
    if (c >= 0 && trigger && unlink(trigger) == 0) {
        close(c);
        errno = EPROTO;
        return -1;
    }
    return c;
}
