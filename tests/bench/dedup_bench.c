/* dedup_bench: what one event_id check costs while the dedup table grows
 * (issue 15: the table used to double in one go inside the sequencer lock,
 * so the insert that triggered a doubling paid for a rehash of every id).
 * Inserts --ids new ids of 36 bytes (UUID-shaped, stored in the key arena)
 * through cf_dedup_check and reports the slowest single check, the p99.99,
 * the median, the total rate and the memory.
 *
 *   dedup_bench [--ids 4000000]
 * Prints: BENCH ids=.. ids_per_s=.. max_us=.. max_at=.. over_1ms=.. p9999_us=.. p50_ns=..
 *              memory_mb=.. save_ms=.. save_cpu_ms=.. save_mb=.. (cf_dedup_save of the
 *              full table, wall and CPU time)
 *              inc_steps=.. inc_step_max_ms=.. inc_cpu_ms=.. (the snapshot's incremental
 *              save of the same table in 4096-slot steps: the longest step, CPU time, is
 *              the longest hold of the sequencer lock; then the total)
 *              lookups_per_s=.. lookups_pf_per_s=.. (every id checked again as a duplicate
 *              once the table is full: plainly, then hashed first with the slot of the id 8
 *              ahead prefetched, as the sequencer does under its lock)
 *              check_ns=.. check_jr_ns=.. (CPU per new id into a fresh table without and
 *              with the change journal of incremental snapshots, its buffer mapped
 *              beforehand as the engine's is; best of two, alternated)
 *              delta_cut_us=.. delta_mb=.. (the cut of a delta holding every id: CPU, bytes)
 * (a machine shared with other work adds preemptions of a few ms to max).
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf_dedup.h"

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

/* CPU time of this thread: less disturbed than wall time on a shared
 * machine (preemption does not count). */
static int64_t cpu_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    long n = 4000000;
    for (int i = 1; i + 1 < argc; i += 2)
        if (!strcmp(argv[i], "--ids"))
            n = atol(argv[i + 1]);
    if (n < 1)
        return 2;
    static const uint8_t key[16] = "dedup_bench_key!";
    cf_dedup *d = cf_dedup_new_keyed(24LL * 3600 * 1000, 0, key);
    int64_t *lat = malloc((size_t)n * sizeof *lat);
    if (!d || !lat)
        return 1;
    char id[64];
    int64_t t0 = now_ns(), slow_at = 0, slowest = 0;
    long over_1ms = 0;
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b3c1d2e4-%04lx-4000-8000-%012lx", (unsigned long)(i & 0xffff),
                 (unsigned long)i);
        int64_t a = now_ns();
        if (cf_dedup_check(d, id, 36, i, i) != 1)
            return 1;
        lat[i] = now_ns() - a;
        if (lat[i] > 1000000)
            over_1ms++;
        if (lat[i] > slowest) {
            slowest = lat[i];
            slow_at = i;
        }
    }
    double secs = (double)(now_ns() - t0) / 1e9;
    /* What a snapshot costs the sequencer: checkpoint.c serializes the
     * table under the sequencer lock, so this is an ingest pause. */
    cf_buf snap = {0};
    int64_t s0 = now_ns(), c0 = cpu_ns();
    if (cf_dedup_save(d, &snap) < 0)
        return 1;
    double save_ms = (double)(now_ns() - s0) / 1e6, save_cpu_ms = (double)(cpu_ns() - c0) / 1e6;
    /* The snapshot's save since issue 15's second round: the cut, then
     * steps of 4096 slots (checkpoint.c), each one hold of the sequencer
     * lock; the longest step (CPU time) is the pause ingest can see. */
    cf_buf inc = {0};
    int64_t i0 = cpu_ns(), step_max = 0;
    long steps = 0;
    if (cf_dedup_save_begin(d, &inc, 0) < 0)
        return 1;
    int src;
    do {
        int64_t a = cpu_ns();
        src = cf_dedup_save_step(d, 4096);
        int64_t dt = cpu_ns() - a;
        if (dt > step_max)
            step_max = dt;
        steps++;
    } while (src == 0);
    if (src < 0 || inc.len != snap.len)
        return 1;
    double inc_cpu_ms = (double)(cpu_ns() - i0) / 1e6;
    cf_buf_free(&inc);
    /* Duplicate checks of every id (the lookups of a full table), in the
     * sequencer's two shapes: one call per id, and hashes first with the
     * slot of the id PF ahead prefetched (cf_dedup_prefetch). CPU time. */
    enum { PF = 8 };
    uint64_t *hs = malloc((size_t)n * sizeof *hs);
    if (!hs)
        return 1;
    int64_t l0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        snprintf(id, sizeof id, "b3c1d2e4-%04lx-4000-8000-%012lx", (unsigned long)(i & 0xffff),
                 (unsigned long)i);
        if (cf_dedup_check(d, id, 36, n, n) != 0)
            return 1;
    }
    double lookup_s = (double)(cpu_ns() - l0) / 1e9;
    /* The ids are formatted again in both loops, so both pay the same. */
    char (*ids)[64] = malloc((size_t)(2 * PF) * sizeof *ids);
    if (!ids)
        return 1;
    int64_t p0 = cpu_ns();
    for (long i = 0; i < n + PF; i++) {
        if (i < n) {
            char *b = ids[i % (2 * PF)];
            snprintf(b, 64, "b3c1d2e4-%04lx-4000-8000-%012lx", (unsigned long)(i & 0xffff),
                     (unsigned long)i);
            hs[i] = cf_dedup_hash(d, b, 36);
            cf_dedup_prefetch(d, hs[i]);
        }
        long k = i - PF;
        if (k >= 0 && cf_dedup_check_hashed(d, ids[k % (2 * PF)], 36, hs[k], n, n) != 0)
            return 1;
    }
    double lookup_pf_s = (double)(cpu_ns() - p0) / 1e9;
    free(ids);
    free(hs);
    /* Incremental snapshots: what the change journal adds to each new id
     * (fresh tables, the same ids, alternated, best of two) and what the
     * cut of a delta costs under the lock (CPU: the buffer changes hands). */
    double check_ns = 1e18, check_jr_ns = 1e18, cut_us = 0, delta_mb = 0;
    for (int round = 0; round < 4; round++) {
        bool jr = round % 2;
        cf_dedup *f = cf_dedup_new_keyed(24LL * 3600 * 1000, 0, key);
        /* The journal's buffer reserved and mapped beforehand, as the
         * engine hands it over at a cut (checkpoint.c). */
        cf_buf spare = {0};
        if (jr && cf_buf_reserve(&spare, (size_t)n * 50) == 0)
            memset(spare.data, 0, spare.cap);
        if (!f || (jr && cf_dedup_journal_start(f, SIZE_MAX, &spare) < 0))
            return 1;
        cf_buf_free(&spare);
        int64_t a = cpu_ns();
        for (long i = 0; i < n; i++) {
            snprintf(id, sizeof id, "b3c1d2e4-%04lx-4000-8000-%012lx",
                     (unsigned long)(i & 0xffff), (unsigned long)i);
            if (cf_dedup_check(f, id, 36, i, i) != 1)
                return 1;
        }
        double per = (double)(cpu_ns() - a) / (double)n;
        if (jr) {
            check_jr_ns = per < check_jr_ns ? per : check_jr_ns;
            cf_buf hdr = {0}, ops = {0};
            int64_t c = cpu_ns();
            if (cf_dedup_delta_cut(f, &hdr, &ops, NULL) < 0)
                return 1;
            cut_us = (double)(cpu_ns() - c) / 1e3;
            delta_mb = (double)(hdr.len + ops.len) / 1048576;
            cf_buf_free(&hdr);
            cf_buf_free(&ops);
        } else {
            check_ns = per < check_ns ? per : check_ns;
        }
        cf_dedup_free(f);
    }
    qsort(lat, (size_t)n, sizeof *lat, cmp_i64);
    printf("BENCH ids=%ld ids_per_s=%.0f max_us=%.1f max_at=%ld over_1ms=%ld p9999_us=%.2f p50_ns=%lld "
           "memory_mb=%.1f save_ms=%.1f save_cpu_ms=%.1f save_mb=%.1f "
           "lookups_per_s=%.0f lookups_pf_per_s=%.0f inc_steps=%ld inc_step_max_ms=%.3f "
           "inc_cpu_ms=%.1f check_ns=%.0f check_jr_ns=%.0f delta_cut_us=%.1f delta_mb=%.1f\n",
           n, (double)n / secs, (double)slowest / 1000, (long)slow_at, over_1ms,
           (double)lat[(size_t)((double)(n - 1) * 0.9999)] / 1000, (long long)lat[n / 2],
           (double)cf_dedup_memory(d) / 1048576, save_ms, save_cpu_ms,
           (double)snap.len / 1048576, (double)n / lookup_s, (double)n / lookup_pf_s, steps,
           (double)step_max / 1e6, inc_cpu_ms, check_ns, check_jr_ns, cut_us, delta_mb);
    cf_buf_free(&snap);
    free(lat);
    cf_dedup_free(d);
    return 0;
}
