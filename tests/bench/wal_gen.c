/* wal_gen: writes a write-ahead log of N synthetic click events straight
 * into a data dir, the way the engine logs accepted requests (one
 * CF_WAL_EVENTS record of cf_event_pack'ed events per request, then a
 * CF_WAL_WATERMARK record with (W, C) as le64 pairs), so recovery can be
 * timed without pushing millions of events through HTTP first.
 *
 *   wal_gen DATA_DIR N [EVENTS_PER_RECORD=1000] [OUT_OF_ORDERNESS_MS=5000]
 *
 * Events: ts = 2026-01-01 + i ms, 100,000 users, 1,000 pages, every event
 * with an event_id. Built by tests/bench/recovery_bench.sh. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cf_buf.h"
#include "cf_event.h"
#include "wal.h"

#define BASE_TS INT64_C(1767225600000)

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DATA_DIR N [EVENTS_PER_RECORD] [OUT_OF_ORDERNESS_MS]\n",
                argv[0]);
        return 2;
    }
    long long n = atoll(argv[2]);
    long long per = argc > 3 ? atoll(argv[3]) : 1000;
    long long ooo = argc > 4 ? atoll(argv[4]) : 5000;
    if (n <= 0 || per <= 0) {
        fprintf(stderr, "wal_gen: N and EVENTS_PER_RECORD must be positive\n");
        return 2;
    }
    char err[512];
    cf_wal *w = cf_wal_open(argv[1], CF_FSYNC_OFF, 64u << 20, err, sizeof err);
    if (!w) {
        fprintf(stderr, "wal_gen: %s\n", err);
        return 1;
    }
    if (cf_wal_replay(w, 0, NULL, NULL) != 0 || cf_wal_last_lsn(w) != 0) {
        fprintf(stderr, "wal_gen: %s already holds a log\n", argv[1]);
        cf_wal_close(w);
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cf_buf payload = {0};
    char user[32], page[32], id[32];
    int rc = 0;
    for (long long i = 0; i < n && rc == 0;) {
        cf_buf_reset(&payload);
        long long end = i + per < n ? i + per : n;
        int64_t max_ts = 0;
        for (; i < end; i++) {
            /* A cheap scramble so users and pages do not march in step. */
            uint64_t h = (uint64_t)i * UINT64_C(0x9E3779B97F4A7C15);
            cf_event ev = {0};
            ev.ts = BASE_TS + i;
            ev.user_id_len = (size_t)snprintf(user, sizeof user, "u%" PRIu64, (h >> 20) % 100000);
            ev.user_id = user;
            ev.page_url_len = (size_t)snprintf(page, sizeof page, "/p/%" PRIu64, (h >> 40) % 1000);
            ev.page_url = page;
            ev.element = "buy";
            ev.element_len = 3;
            ev.event_id_len = (size_t)snprintf(id, sizeof id, "g%lld", i);
            ev.event_id = id;
            if (cf_event_pack(&ev, &payload) < 0) {
                rc = -ENOMEM;
                break;
            }
            max_ts = ev.ts;
        }
        if (rc)
            break;
        int64_t lsn = cf_wal_append(w, CF_WAL_EVENTS, payload.data, payload.len);
        uint8_t mark[16];
        put_le64(mark, (uint64_t)(max_ts - ooo));
        put_le64(mark + 8, (uint64_t)max_ts);
        int64_t lsn2 = lsn < 0 ? lsn : cf_wal_append(w, CF_WAL_WATERMARK, mark, sizeof mark);
        if (lsn2 < 0 || (rc = cf_wal_commit(w, lsn2)) < 0)
            rc = lsn2 < 0 ? (int)lsn2 : rc;
    }
    cf_buf_free(&payload);
    uint64_t bytes = cf_wal_bytes(w);
    int64_t last = cf_wal_last_lsn(w);
    cf_wal_close(w);
    /* The log on disk before anyone times a recovery of it: left dirty in
     * the page cache (fsync off), its ~400 MB were written back during the
     * first recovery timed after it, which run.py's R1 runs first (the
     * after-build): 1.5-2.4x its time in either order of binaries. */
    int dfd = rc == 0 ? open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (dfd >= 0) {
        if (syncfs(dfd) < 0)
            rc = -errno;
        close(dfd);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc < 0) {
        fprintf(stderr, "wal_gen: %s\n", strerror(-rc));
        return 1;
    }
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("wal_gen: %lld events, %" PRId64 " records, %.1f MiB in %.2fs\n", n, last,
           (double)bytes / (1 << 20), s);
    return 0;
}
