/* fdio: whole writes and reads (server/fdio.h): positioned and appending
 * writes, reads that stop at the end of the file, errors as -errno, and
 * writes interrupted by signals arriving whole. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdio.h"

static int temp_file(void)
{
    char path[] = "/tmp/cf-fdio-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    return fd;
}

static void test_positioned_and_appending_writes(void **state)
{
    (void)state;
    int fd = temp_file();
    assert_int_equal(fdio_write_full(fd, "abcdef", 6, -1), 0);
    assert_int_equal(fdio_write_full(fd, "XY", 2, 2), 0);      /* pwrite: position kept */
    assert_int_equal(fdio_write_full(fd, "gh", 2, -1), 0);     /* appends after "f" */
    char buf[16] = {0};
    assert_int_equal(fdio_read_full(fd, buf, sizeof buf, 0), 8);   /* short: end of file */
    assert_memory_equal(buf, "abXYefgh", 8);
    assert_int_equal(fdio_read_full(fd, buf, 3, 5), 3);
    assert_memory_equal(buf, "fgh", 3);
    assert_int_equal(fdio_read_full(fd, buf, 4, 100), 0);           /* past the end */
    close(fd);
}

static void test_errors_are_negative_errno(void **state)
{
    (void)state;
    int fd = open("/dev/null", O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(fdio_write_full(fd, "x", 1, -1), -EBADF);
    close(fd);
    char c;
    assert_int_equal(fdio_read_full(fd, &c, 1, 0), -EBADF);
    int p[2];
    assert_int_equal(pipe(p), 0);
    assert_int_equal(fdio_read_full(p[0], &c, 1, 0), -ESPIPE);   /* pread on a pipe */
    close(p[0]);
    close(p[1]);
}

enum { BIG = 8 << 20 };

typedef struct {
    int fd;
    uint8_t *got;
    size_t n;
} drain_arg;

/* Reads the pipe in small pieces, so the writer blocks again and again. */
static void *drain(void *arg)
{
    drain_arg *d = arg;
    for (;;) {
        ssize_t k = read(d->fd, d->got + d->n, d->n + 4096 <= BIG ? 4096 : BIG - d->n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        d->n += (size_t)k;
    }
    return NULL;
}

static void on_alarm(int sig) { (void)sig; }

/* A signal without SA_RESTART makes a blocked write return short (or fail
 * with EINTR): every byte still arrives once, in order. */
static void test_write_survives_signals(void **state)
{
    (void)state;
    uint8_t *src = malloc(BIG), *dst = malloc(BIG);
    assert_non_null(src);
    assert_non_null(dst);
    for (size_t i = 0; i < BIG; i++)
        src[i] = (uint8_t)(i * 2654435761u >> 13);
    struct sigaction sa = {.sa_handler = on_alarm}, old;
    sigemptyset(&sa.sa_mask);
    assert_int_equal(sigaction(SIGALRM, &sa, &old), 0);
    int p[2];
    assert_int_equal(pipe(p), 0);
    drain_arg d = {p[0], dst, 0};
    pthread_t t;
    sigset_t block, prev;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    pthread_sigmask(SIG_BLOCK, &block, &prev);   /* the drain never takes the signal */
    assert_int_equal(pthread_create(&t, NULL, drain, &d), 0);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    struct itimerval every = {{0, 200}, {0, 200}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &every, NULL);
    int rc = fdio_write_full(p[1], src, BIG, -1);
    setitimer(ITIMER_REAL, &off, NULL);
    close(p[1]);
    pthread_join(t, NULL);
    close(p[0]);
    sigaction(SIGALRM, &old, NULL);
    assert_int_equal(rc, 0);
    assert_int_equal(d.n, BIG);
    assert_memory_equal(src, dst, BIG);
    free(src);
    free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_positioned_and_appending_writes),
        cmocka_unit_test(test_errors_are_negative_errno),
        cmocka_unit_test(test_write_survives_signals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
