/* snapshot_io_bench: what a snapshot file write does to the log's commits
 * (issue 15, T1: a probe's 202 waits for its group commit, an fdatasync,
 * while the ticker writes a snapshot of tens of MB). A thread appends a
 * 4 KiB record to a file and fdatasyncs it every 2 ms (as the WAL's group
 * commit does under load); meanwhile cf_snapshot_writev writes MIB MiB of
 * payload ROUNDS times, a second apart. Prints one BENCH line per round:
 * the write's duration and the commits' latency while it ran (ms).
 *
 *   snapshot_io_bench DIR [MIB=90] [ROUNDS=4]
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "snapshot.h"

static double now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

enum { MAX_LAT = 1 << 16 };
static double lat_at[MAX_LAT], lat_ms[MAX_LAT];
static atomic_int n_lat;
static atomic_bool stop;
static int wal_fd;

static void *committer(void *arg)
{
    (void)arg;
    static char rec[4096];
    memset(rec, 'x', sizeof rec);
    while (!atomic_load(&stop)) {
        if (write(wal_fd, rec, sizeof rec) != (ssize_t)sizeof rec)
            break;
        double t = now_ms();
        if (fdatasync(wal_fd) < 0)
            break;
        int i = atomic_load(&n_lat);
        if (i < MAX_LAT) {
            lat_at[i] = t;
            lat_ms[i] = now_ms() - t;
            atomic_store(&n_lat, i + 1);
        }
        struct timespec d = {0, 2000000};
        nanosleep(&d, NULL);
    }
    return NULL;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: snapshot_io_bench DIR [MIB=90] [ROUNDS=4]\n");
        return 2;
    }
    const char *dir = argv[1];
    size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 90;
    int rounds = argc > 3 ? atoi(argv[3]) : 4;
    if (mib < 1 || rounds < 1) {
        fprintf(stderr, "snapshot_io_bench: MIB and ROUNDS must be >= 1\n");
        return 2;
    }
    (void)mkdir(dir, 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/commits", dir);
    wal_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    size_t len = mib << 20;
    uint8_t *payload = malloc(len);
    if (wal_fd < 0 || !payload) {
        fprintf(stderr, "snapshot_io_bench: cannot open %s or allocate\n", path);
        return 1;
    }
    for (size_t i = 0; i < len; i++)
        payload[i] = (uint8_t)(i * 2654435761u >> 13);
    pthread_t th;
    pthread_create(&th, NULL, committer, NULL);
    int failed = 0;
    for (int r = 0; r < rounds; r++) {
        sleep(1);
        double t0 = now_ms();
        struct iovec iov = {payload, len};
        int rc = cf_snapshot_writev(dir, 100 + r, &iov, 1);
        double t1 = now_ms();
        failed |= rc < 0;
        int n = atomic_load(&n_lat);
        double during[MAX_LAT];
        int k = 0;
        for (int i = 0; i < n; i++)
            if (lat_at[i] + lat_ms[i] >= t0 && lat_at[i] <= t1)
                during[k++] = lat_ms[i];
        qsort(during, (size_t)k, sizeof *during, cmp_d);
        printf("BENCH round=%d rc=%d write_ms=%.1f commits=%d commit_p50_ms=%.2f commit_max_ms=%.2f\n",
               r, rc, t1 - t0, k, k ? during[k / 2] : 0.0, k ? during[k - 1] : 0.0);
    }
    atomic_store(&stop, true);
    pthread_join(th, NULL);
    close(wal_fd);
    unlink(path);
    free(payload);
    return failed;
}
