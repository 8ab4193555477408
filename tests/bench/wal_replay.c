/* wal_replay: times cf_wal_replay alone over a data dir (reading, CRC and
 * sequence checks, no engine), to separate the log's share of recovery from
 * the engine's. Built and run by tests/bench/recovery_bench.sh.
 *
 *   wal_replay DATA_DIR */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

#include "wal.h"

static int count(void *ctx, int64_t lsn, uint8_t type, const uint8_t *p, size_t n)
{
    (void)lsn;
    (void)type;
    (void)p;
    *(size_t *)ctx += n;
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DATA_DIR\n", argv[0]);
        return 2;
    }
    char err[512];
    cf_wal *w = cf_wal_open(argv[1], CF_FSYNC_OFF, (size_t)64 << 20, err, sizeof err);
    if (!w) {
        fprintf(stderr, "wal_replay: %s\n", err);
        return 1;
    }
    struct timespec a, b;
    size_t bytes = 0;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int64_t n = cf_wal_replay(w, 0, count, &bytes);
    clock_gettime(CLOCK_MONOTONIC, &b);
    cf_wal_close(w);
    if (n < 0) {
        fprintf(stderr, "wal_replay: replay failed (%" PRId64 ")\n", n);
        return 1;
    }
    printf("wal_replay: %" PRId64 " records, %.1f MiB of payload read and checked in %.3f s\n", n,
           (double)bytes / (1 << 20),
           (double)(b.tv_sec - a.tv_sec) + (double)(b.tv_nsec - a.tv_nsec) / 1e9);
    return 0;
}
