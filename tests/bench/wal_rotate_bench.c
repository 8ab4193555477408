/* wal_rotate_bench: how long a segment rotation holds the appender (the
 * engine calls cf_wal_append under its sequencer lock, so every request
 * waits that long). Appends RECORD-byte records at RATE per second into a
 * log of SEGMENT_MIB segments for SECONDS, timing every cf_wal_append; the
 * appends that rotated are known from the record sizes.
 *
 *   wal_rotate_bench DATA_DIR [batch|always|off] [SEGMENT_MIB=8] [RATE=200000]
 *                    [SECONDS=4] [RECORD=200]
 *
 * Prints one BENCH line: rotations, their max/median append time, and the
 * max and p99.9 of the other appends (microseconds). */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "wal.h"

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [batch|always|off] [SEGMENT_MIB] [RATE] [SECONDS] [RECORD]\n",
                argv[0]);
        return 2;
    }
    cf_fsync_policy pol = CF_FSYNC_BATCH;
    if (argc > 2 && strcmp(argv[2], "always") == 0)
        pol = CF_FSYNC_ALWAYS;
    else if (argc > 2 && strcmp(argv[2], "off") == 0)
        pol = CF_FSYNC_OFF;
    size_t seg = (size_t)(argc > 3 ? atol(argv[3]) : 8) << 20;
    double rate = argc > 4 ? atof(argv[4]) : 200000;
    double secs = argc > 5 ? atof(argv[5]) : 4;
    size_t rec = (size_t)(argc > 6 ? atol(argv[6]) : 200);
    char err[256];
    cf_wal *w = cf_wal_open(argv[1], pol, seg, err, sizeof err);
    if (!w || cf_wal_replay(w, 0, NULL, NULL) < 0) {
        fprintf(stderr, "%s\n", w ? "replay failed" : err);
        return 1;
    }
    size_t n = (size_t)(rate * secs);
    double *other = malloc(n * sizeof *other), *rot = malloc((n / 100 + 16) * sizeof *rot);
    uint8_t *payload = calloc(1, rec);
    if (!other || !rot || !payload)
        return 1;
    size_t nother = 0, nrot = 0;
    uint64_t in_seg = 0;
    double t0 = now_us();
    for (size_t i = 0; i < n; i++) {
        double due = t0 + (double)i * 1e6 / rate;
        while (now_us() < due)
            ;
        memcpy(payload, &i, sizeof i < rec ? sizeof i : rec);
        /* Rotation happens at the append after the segment reached its
         * size (wal.c, mapped_room). */
        bool rotates = in_seg >= seg;
        if (rotates)
            in_seg = 0;
        in_seg += 17 + rec;
        double a = now_us();
        int64_t lsn = cf_wal_append(w, 1, payload, rec);
        double d = now_us() - a;
        if (lsn < 0 || (pol == CF_FSYNC_ALWAYS && i % 64 == 0 && cf_wal_commit(w, lsn) < 0)) {
            fprintf(stderr, "append/commit failed\n");
            return 1;
        }
        if (rotates)
            rot[nrot++] = d;
        else
            other[nother++] = d;
    }
    cf_wal_close(w);
    qsort(rot, nrot, sizeof *rot, cmp_d);
    qsort(other, nother, sizeof *other, cmp_d);
    printf("BENCH rotations=%zu rot_max_us=%.0f rot_p50_us=%.0f other_max_us=%.0f "
           "other_p999_us=%.1f appends=%zu\n",
           nrot, nrot ? rot[nrot - 1] : 0.0, nrot ? rot[nrot / 2] : 0.0,
           nother ? other[nother - 1] : 0.0, nother ? other[nother * 999 / 1000] : 0.0, n);
    free(other);
    free(rot);
    free(payload);
    return 0;
}
