/* wal_bench: group-commit throughput of the write-ahead log alone. T threads
 * each append a record of B bytes (under one mutex, as the engine's
 * sequencer does) and wait for cf_wal_commit, for S seconds per policy.
 *
 *   wal_bench DIR [THREADS=8] [BYTES=1200] [SECONDS=1]
 *
 * Prints commits/s, MB/s and fsyncs per policy (always, batch, off). */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "wal.h"

static pthread_mutex_t seq = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool stop;
static size_t rec_bytes;

typedef struct {
    cf_wal *w;
    uint64_t commits;
    int failed;
} worker;

static void *run(void *arg)
{
    worker *k = arg;
    uint8_t *payload = calloc(1, rec_bytes);
    while (payload && !atomic_load(&stop)) {
        pthread_mutex_lock(&seq);
        int64_t lsn = cf_wal_append(k->w, CF_WAL_EVENTS, payload, rec_bytes);
        pthread_mutex_unlock(&seq);
        if (lsn < 0 || cf_wal_commit(k->w, lsn) < 0) {
            k->failed = 1;
            break;
        }
        k->commits++;
    }
    free(payload);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR [THREADS] [BYTES] [SECONDS]\n", argv[0]);
        return 2;
    }
    int threads = argc > 2 ? atoi(argv[2]) : 8;
    rec_bytes = argc > 3 ? (size_t)atol(argv[3]) : 1200;
    double secs = argc > 4 ? atof(argv[4]) : 1.0;
    if (threads < 1 || threads > 256)
        threads = 8;
    static const char *names[] = {"always", "batch", "off"};
    for (int p = 0; p < 3; p++) {
        char dir[1024], err[256];
        snprintf(dir, sizeof dir, "%s/%s", argv[1], names[p]);
        cf_wal *w = cf_wal_open(dir, (cf_fsync_policy)p, 64u << 20, err, sizeof err);
        if (!w || cf_wal_replay(w, 0, NULL, NULL) < 0) {
            fprintf(stderr, "wal_bench: %s\n", w ? "replay failed" : err);
            return 1;
        }
        worker ks[256];
        pthread_t th[256];
        atomic_store(&stop, false);
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < threads; i++) {
            ks[i] = (worker){.w = w};
            pthread_create(&th[i], NULL, run, &ks[i]);
        }
        struct timespec nap = {(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)};
        nanosleep(&nap, NULL);
        atomic_store(&stop, true);
        uint64_t commits = 0;
        int failed = 0;
        for (int i = 0; i < threads; i++) {
            pthread_join(th[i], NULL);
            commits += ks[i].commits;
            failed |= ks[i].failed;
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
        printf("fsync %-6s %2d threads x %zu B: %9.0f commits/s %7.1f MB/s %6" PRIu64
               " fsyncs%s\n", names[p], threads, rec_bytes, (double)commits / s,
               (double)commits * (double)rec_bytes / s / 1e6, cf_wal_fsyncs(w),
               failed ? " (FAILED)" : "");
        cf_wal_close(w);
    }
    return 0;
}
