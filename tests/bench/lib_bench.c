/* lib_bench: the whole click pipeline of lib/ on one thread (dedup, tumbling
 * and sliding windows with count and distinct users, sessions, trending) over
 * a generated stream: Zipf-skewed pages, uniformly drawn users, bounded
 * disorder. Prints events/s and state bytes per key. Generation happens
 * before the clock starts, so only the library is timed.
 *
 *   lib_bench [--events N] [--users N] [--pages N] [--disorder-ms N]
 *             [--rate N (event-time events/s)] [--seed N]
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cf_dedup.h"
#include "cf_hash.h"
#include "cf_sessions.h"
#include "cf_trending.h"
#include "cf_winop.h"

typedef struct gen_event {
    uint32_t user;
    uint32_t page;
    int64_t ts;
} gen_event;

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    /* splitmix64: small, seeded, reproducible. */
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* CPU time of this (single-threaded) process: on a shared, loaded machine
 * events per CPU second is far steadier than events per wall second. */
static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

static void count_emit_window(void *ctx, const cf_window_result *r)
{
    (void)r;
    (*(uint64_t *)ctx)++;
}

static void count_emit_session(void *ctx, const cf_session_record *r)
{
    (void)r;
    (*(uint64_t *)ctx)++;
}

static long arg_long(int argc, char **argv, const char *name, long def)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return strtol(argv[i + 1], NULL, 10);
    return def;
}

int main(int argc, char **argv)
{
    size_t n_events = (size_t)arg_long(argc, argv, "--events", 5000000);
    uint32_t n_users = (uint32_t)arg_long(argc, argv, "--users", 1000000);
    uint32_t n_pages = (uint32_t)arg_long(argc, argv, "--pages", 10000);
    int64_t disorder = arg_long(argc, argv, "--disorder-ms", 5000);
    int64_t rate = arg_long(argc, argv, "--rate", 10000);
    rng_state = (uint64_t)arg_long(argc, argv, "--seed", 42);

    /* Keys, pre-formatted. */
    char (*users)[16] = malloc((size_t)n_users * 16);
    char (*pages)[24] = malloc((size_t)n_pages * 24);
    uint8_t *user_len = malloc(n_users), *page_len = malloc(n_pages);
    uint64_t *user_hash = malloc((size_t)n_users * sizeof *user_hash);
    double *cdf = malloc((size_t)n_pages * sizeof *cdf);
    gen_event *evs = malloc(n_events * sizeof *evs);
    char (*ids)[24] = malloc(n_events * 24);
    if (!users || !pages || !user_len || !page_len || !user_hash || !cdf || !evs || !ids) {
        fprintf(stderr, "lib_bench: out of memory\n");
        return 1;
    }
    for (uint32_t u = 0; u < n_users; u++) {
        user_len[u] = (uint8_t)snprintf(users[u], 16, "u%07" PRIu32, u);
        user_hash[u] = cf_hash64(users[u], user_len[u], 0);
    }
    double total = 0;
    for (uint32_t p = 0; p < n_pages; p++) {
        page_len[p] = (uint8_t)snprintf(pages[p], 24, "/products/%" PRIu32, p);
        total += 1.0 / (p + 1); /* Zipf, s = 1 */
        cdf[p] = total;
    }
    int64_t t0 = 1790000000000; /* 2026-09 */
    for (size_t i = 0; i < n_events; i++) {
        double x = rng_unit() * total;
        uint32_t lo = 0, hi = n_pages - 1;
        while (lo < hi) {
            uint32_t mid = (lo + hi) / 2;
            if (cdf[mid] < x)
                lo = mid + 1;
            else
                hi = mid;
        }
        evs[i].page = lo;
        evs[i].user = (uint32_t)(rng_next() % n_users);
        int64_t base = t0 + (int64_t)i * 1000 / rate;
        evs[i].ts = base - (disorder ? (int64_t)(rng_next() % (uint64_t)disorder) : 0);
        snprintf(ids[i], 24, "e%014zu", i % (n_events - n_events / 100)); /* ~1% duplicates */
    }

    cf_winop_config tcfg = {CF_WINDOW_TUMBLING, 60000, 60000, 60000, 0};
    cf_winop_config scfg = {CF_WINDOW_SLIDING, 300000, 60000, 60000, 0};
    cf_winop *tumbling = cf_winop_new(&tcfg), *sliding = cf_winop_new(&scfg);
    cf_sessions *sessions = cf_sessions_new(30 * 60000, 60000, 0);
    cf_trending *trending = cf_trending_new(60000);
    cf_dedup *dedup = cf_dedup_new(10 * 60000, 0);
    if (!tumbling || !sliding || !sessions || !trending || !dedup) {
        fprintf(stderr, "lib_bench: cannot create operators\n");
        return 1;
    }

    uint64_t windows_out = 0, sessions_out = 0, dups = 0, late = 0;
    int64_t max_ts = INT64_MIN;
    long rss_before = rss_kib();
    double start = now_s(), cpu_start = cpu_s();
    for (size_t i = 0; i < n_events; i++) {
        const gen_event *e = &evs[i];
        int64_t clock = max_ts;
        if (cf_dedup_check(dedup, ids[i], 15, e->ts, clock) == 0) {
            dups++;
            continue;
        }
        if (e->ts > max_ts)
            max_ts = e->ts;
        const char *page = pages[e->page];
        size_t plen = page_len[e->page];
        int a = cf_winop_add(tumbling, page, plen, user_hash[e->user], e->ts, count_emit_window,
                             &windows_out);
        int b = cf_winop_add(sliding, page, plen, user_hash[e->user], e->ts, count_emit_window,
                             &windows_out);
        if (a == 0 && b == 0)
            late++;
        cf_sessions_add(sessions, users[e->user], user_len[e->user], page, plen, e->ts,
                        count_emit_session, &sessions_out);
        cf_trending_add(trending, page, plen, e->ts);
        if ((i & 1023) == 1023) { /* a watermark marker per 1024 events, as the server sends */
            int64_t wm = max_ts - 5000;
            cf_winop_advance(tumbling, wm, count_emit_window, &windows_out);
            cf_winop_advance(sliding, wm, count_emit_window, &windows_out);
            cf_sessions_advance(sessions, wm, count_emit_session, &sessions_out);
            if ((i & 65535) == 65535)
                cf_trending_prune(trending, max_ts, 0.01);
        }
    }
    double secs = now_s() - start, cpu_secs = cpu_s() - cpu_start;
    long rss_after = rss_kib();

    size_t open_sessions = cf_sessions_open_count(sessions);
    size_t window_keys = cf_winop_open_count(tumbling) + cf_winop_kept_count(tumbling) +
                         cf_winop_open_count(sliding) + cf_winop_kept_count(sliding);
    size_t window_bytes = cf_winop_memory(tumbling) + cf_winop_memory(sliding);
    printf("lib_bench: events=%zu users=%" PRIu32 " pages=%" PRIu32 " disorder_ms=%" PRId64 "\n",
           n_events, n_users, n_pages, disorder);
    printf("events_per_s=%.0f seconds=%.3f duplicates=%" PRIu64 " late=%" PRIu64
           " window_results=%" PRIu64 " session_ends=%" PRIu64 "\n",
           (double)n_events / secs, secs, dups, late, windows_out, sessions_out);
    printf("events_per_cpu_s=%.0f cpu_seconds=%.3f\n", (double)n_events / cpu_secs, cpu_secs);
    printf("open_sessions=%zu bytes_per_open_session=%.1f\n", open_sessions,
           open_sessions ? (double)cf_sessions_memory(sessions) / (double)open_sessions : 0.0);
    printf("window_keys=%zu bytes_per_window_key=%.1f\n", window_keys,
           window_keys ? (double)window_bytes / (double)window_keys : 0.0);
    printf("dedup_ids=%zu bytes_per_dedup_id=%.1f trending_pages=%zu bytes_per_trending_page=%.1f\n",
           cf_dedup_count(dedup),
           cf_dedup_count(dedup) ? (double)cf_dedup_memory(dedup) / (double)cf_dedup_count(dedup) : 0.0,
           cf_trending_count(trending),
           cf_trending_count(trending) ? (double)cf_trending_memory(trending) / (double)cf_trending_count(trending) : 0.0);
    printf("rss_growth_mib=%.1f\n", (double)(rss_after - rss_before) / 1024.0);

    cf_winop_free(tumbling);
    cf_winop_free(sliding);
    cf_sessions_free(sessions);
    cf_trending_free(trending);
    cf_dedup_free(dedup);
    free(users); free(pages); free(user_len); free(page_len); free(user_hash); free(cdf);
    free(evs); free(ids);
    return 0;
}
