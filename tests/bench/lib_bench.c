/* lib_bench: the whole click pipeline of lib/ on one thread (dedup, and the
 * built-in views on sql_view as the shards configure them: tumbling and
 * sliding windows with count and distinct users, sessions, trending) over
 * a generated stream: Zipf-skewed pages, uniformly drawn users, bounded
 * disorder. Prints events/s and state bytes per key. Generation happens
 * before the clock starts, so only the library is timed.
 *
 *   lib_bench [--events N] [--users N] [--pages N] [--disorder-ms N]
 *             [--rate N (event-time events/s)] [--seed N] [--plain] [--huge]
 *             [--skip tumbling,sliding,sessions,trending] [--share]
 *
 * --skip leaves the named views out (not applied, not prefetched), so a
 * view's share of the loop is the difference of two runs.
 *
 * --share makes tumbling and sliding (one pane grid: the tumbling size is
 * the sliding advance) keep one pane store (sql_view_share): each click
 * goes into its pane once, and sliding's apply returns what tumbling's did
 * for it, as in the shards (shard_share_panes). Both windows carry the
 * server's default key bound (--max-keys 10M, one shard), which a shared
 * pair counts as one budget.
 *
 * The shards hash each click's page and user once for all the views
 * (sql_view_apply_hashed) and walk the lookups of the next four clicks a
 * step per click (sql_view_prefetch_step); so does this by default.
 * --plain lets every view hash for itself and skips the look-ahead, as
 * before that, for a before/after in one build.
 *
 * As in the server, each event carries its page and user strings (the
 * shard reads them from the events message the sequencer just wrote, not
 * from a 16 MB table of a million users), and the dedup slot of the id 8
 * events ahead is prefetched (the sequencer hashes ids before it takes
 * its lock and does the same: DEDUP_PREFETCH); --plain does neither.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>

#include "bench_util.h"
#include "cf_dedup.h"
#include "cf_kv.h"
#include "sql_view.h"

typedef struct gen_event {
    uint32_t user;
    uint32_t page;
    int64_t ts;
    uint64_t id_hash;       /* cf_dedup_hash of its id (the sequencer's prepare) */
    uint8_t user_len, page_len;
    char user_s[16], page_s[24]; /* the strings, as in an events message */
} gen_event;

enum { DEDUP_AHEAD = 8 };

static uint64_t rng_state;

static uint64_t rng_next(void) { return bench_splitmix64(&rng_state); }

static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* User and system CPU seconds of this process: the system part is mostly
 * the kernel zeroing the pages the state grows into, which on this
 * shared virtual machine swings by 2-20x between runs; the user part is
 * the library's own cost. */
static void cpu_split(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
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

static void count_emit(void *ctx, const sql_view_result *r)
{
    (void)r;
    (*(uint64_t *)ctx)++;
}

static bool below_min(void *ctx, const sql_view_result *r)
{
    (void)ctx;
    return r->aggs[0].u.d < 0.01;
}

/* The look-ahead ring (as the shards do): each event's hashes, computed
 * when it enters, AHEAD events before its apply, with its step 0. */
enum { AHEAD = 4 };
struct ahead {
    uint64_t ph, uh, wh[2], sh[4];
};

static void ahead_fill(struct ahead *a, const gen_event *e, sql_view *const pviews[3],
                       sql_view *sessions, const bool on[4])
{
    sql_value pk = sql_string(e->page_s, e->page_len);
    sql_value uk = sql_string(e->user_s, e->user_len);
    a->ph = sql_view_key_hash(pviews[0], &pk);   /* one seed: every page view's hash */
    a->uh = sql_view_key_hash(sessions, &uk);
    a->wh[0] = 0;
    a->wh[1] = sql_agg_distinct_hash(uk);
    a->sh[0] = a->sh[2] = a->sh[3] = 0;
    a->sh[1] = sql_agg_distinct_hash(pk);
    for (int v = 0; v < 3; v++)
        if (on[v])
            sql_view_prefetch_step(pviews[v], a->ph, a->wh, e->ts, 0);
    if (on[3])
        sql_view_prefetch_step(sessions, a->uh, a->sh, e->ts, 0);
}

static inline void set_str(sql_value *v, const char *s, uint32_t len)
{
    v->type = SQL_STRING;
    v->pad_[0] = v->pad_[1] = v->pad_[2] = 0;
    v->len = len;
    v->u.s = s;
}

static inline void set_null(sql_value *v)
{
    v->type = SQL_NULL;
    v->pad_[0] = v->pad_[1] = v->pad_[2] = 0;
    v->len = 0;
    v->u.i = 0;
}

/* --huge: the large tables' memory (cf_kv_set_table_mem) as 2 MiB-aligned
 * anonymous mappings marked MADV_HUGEPAGE, zeroed lazily by the kernel.
 * Off by default, as in the server: on this shared VM it cut the user CPU
 * per event by ~15% but the kernel's zeroing of huge pages cost more system
 * CPU than that (BENCHMARKS.md, "Per-core engine, second round"). */
#define HUGE_PAGE ((size_t)2 << 20)

static size_t huge_span(size_t bytes)
{
    return (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1);
}

static void *huge_alloc(size_t bytes)
{
    size_t span = huge_span(bytes);
    char *p = mmap(NULL, span + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    size_t head = (HUGE_PAGE - ((uintptr_t)p & (HUGE_PAGE - 1))) & (HUGE_PAGE - 1);
    if (head)
        munmap(p, head);
    if (HUGE_PAGE - head)
        munmap(p + head + span, HUGE_PAGE - head);
    p += head;
    (void)madvise(p, span, MADV_HUGEPAGE);
    return p;
}

static void huge_free(void *p, size_t bytes)
{
    munmap(p, huge_span(bytes));
}

int main(int argc, char **argv)
{
    size_t n_events = (size_t)bench_arg_long(argc, argv, "--events", 5000000);
    uint32_t n_users = (uint32_t)bench_arg_long(argc, argv, "--users", 1000000);
    uint32_t n_pages = (uint32_t)bench_arg_long(argc, argv, "--pages", 10000);
    int64_t disorder = bench_arg_long(argc, argv, "--disorder-ms", 5000);
    int64_t rate = bench_arg_long(argc, argv, "--rate", 10000);
    rng_state = (uint64_t)bench_arg_long(argc, argv, "--seed", 42);
    bool plain = false, huge = false, share = false;
    const char *skip = "";
    for (int i = 1; i < argc; i++) {
        plain |= strcmp(argv[i], "--plain") == 0;
        huge |= strcmp(argv[i], "--huge") == 0;
        share |= strcmp(argv[i], "--share") == 0;
        if (strcmp(argv[i], "--skip") == 0 && i + 1 < argc)
            skip = argv[i + 1];
    }
    /* tumbling, sliding, trending (the page-keyed views), sessions */
    const bool on[4] = {!strstr(skip, "tumbling"), !strstr(skip, "sliding"),
                        !strstr(skip, "trending"), !strstr(skip, "sessions")};
    if (huge)
        cf_kv_set_table_mem(huge_alloc, huge_free);

    /* Keys, pre-formatted. */
    char (*users)[16] = malloc((size_t)n_users * 16);
    char (*pages)[24] = malloc((size_t)n_pages * 24);
    uint8_t *user_len = malloc(n_users), *page_len = malloc(n_pages);
    double *cdf = malloc((size_t)n_pages * sizeof *cdf);
    gen_event *evs = malloc(n_events * sizeof *evs);
    char (*ids)[24] = malloc(n_events * 24);
    if (!users || !pages || !user_len || !page_len || !cdf || !evs || !ids) {
        fprintf(stderr, "lib_bench: out of memory\n");
        return 1;
    }
    for (uint32_t u = 0; u < n_users; u++) {
        user_len[u] = (uint8_t)snprintf(users[u], 16, "u%07" PRIu32, u);
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

    /* The aggregates of builtin_sql.h's views. */
    static const sql_agg_spec win_aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT_DISTINCT, 0}};
    static const sql_agg_spec sess_aggs[] = {{SQL_AGG_COUNT_STAR, 0},
                                             {SQL_AGG_COUNT_DISTINCT, 0},
                                             {SQL_AGG_EARLIEST, 0},
                                             {SQL_AGG_LATEST, 0}};
    static const sql_agg_spec trend_aggs[] = {{SQL_AGG_DECAYED_COUNT, 60000}};
    sql_view_config tcfg = {.nkeys = 1, .aggs = win_aggs, .naggs = 2,
                            .window = SQL_WINDOW_TUMBLING, .size_ms = 60000,
                            .advance_ms = 60000, .grace_ms = 60000,
                            .max_keys = 10000000};
    sql_view_config scfg = tcfg;
    scfg.window = SQL_WINDOW_HOPPING;
    scfg.size_ms = 300000;
    sql_view_config ecfg = {.nkeys = 1, .aggs = sess_aggs, .naggs = 4,
                            .window = SQL_WINDOW_SESSION, .gap_ms = 30 * 60000,
                            .grace_ms = 60000};
    sql_view_config rcfg = {.nkeys = 1, .aggs = trend_aggs, .naggs = 1,
                            .window = SQL_WINDOW_NONE};
    sql_view *tumbling = sql_view_new(&tcfg), *sliding = sql_view_new(&scfg);
    sql_view *sessions = sql_view_new(&ecfg);
    sql_view *trending = sql_view_new(&rcfg);
    cf_dedup *dedup = cf_dedup_new(10 * 60000, 0);
    if (!tumbling || !sliding || !sessions || !trending || !dedup) {
        fprintf(stderr, "lib_bench: cannot create operators\n");
        return 1;
    }
    uint64_t windows_out = 0, sessions_out = 0, dups = 0, late = 0;
    share = share && on[0] && on[1];
    if (share && sql_view_share(tumbling, sliding, count_emit, &windows_out) < 0) {
        fprintf(stderr, "lib_bench: tumbling and sliding cannot share panes\n");
        return 1;
    }

    for (size_t i = 0; i < n_events; i++) {
        gen_event *e = &evs[i];
        e->id_hash = cf_dedup_hash(dedup, ids[i], 15);
        e->user_len = user_len[e->user];
        e->page_len = page_len[e->page];
        memcpy(e->user_s, users[e->user], sizeof e->user_s);
        memcpy(e->page_s, pages[e->page], sizeof e->page_s);
    }

    struct ahead ring[AHEAD + 1];
    sql_view *pviews[3] = {tumbling, sliding, trending};

    int64_t max_ts = INT64_MIN, wm = INT64_MIN;
    long rss_before = rss_kib();
    double user0, sys0;
    cpu_split(&user0, &sys0);
    double start = now_s(), cpu_start = bench_cpu_s();
    for (size_t i = 0; i < n_events; i++) {
        const gen_event *e = &evs[i];
        int64_t clock = max_ts;
        if (!plain) {
            if (i == 0)
                for (size_t j = 0; j < AHEAD && j < n_events; j++)
                    ahead_fill(&ring[j % (AHEAD + 1)], &evs[j], pviews, sessions, on);
            if (i + AHEAD < n_events)
                ahead_fill(&ring[(i + AHEAD) % (AHEAD + 1)], &evs[i + AHEAD], pviews, sessions,
                           on);
            for (size_t d = 1; d < AHEAD && i + d < n_events; d++) {
                const struct ahead *a = &ring[(i + d) % (AHEAD + 1)];
                unsigned step = (unsigned)(AHEAD - d);
                for (int v = 0; v < 3; v++)
                    if (on[v])
                        sql_view_prefetch_step(pviews[v], a->ph, a->wh, evs[i + d].ts, step);
                if (on[3])
                    sql_view_prefetch_step(sessions, a->uh, a->sh, evs[i + d].ts, step);
            }
        }
        int fresh;
        if (plain) {
            fresh = cf_dedup_check(dedup, ids[i], 15, e->ts, clock);
        } else {
            if (i + DEDUP_AHEAD < n_events)
                cf_dedup_prefetch(dedup, evs[i + DEDUP_AHEAD].id_hash);
            fresh = cf_dedup_check_hashed(dedup, ids[i], 15, e->id_hash, e->ts, clock);
        }
        if (fresh == 0) {
            dups++;
            continue;
        }
        if (e->ts > max_ts)
            max_ts = e->ts;
        /* The values field by field, in place, as the shard's click_row:
         * copying a value an inline constructor returned stalls on store
         * forwarding (12% of this loop's samples). */
        const char *ps = plain ? pages[e->page] : e->page_s;
        const char *us = plain ? users[e->user] : e->user_s;
        uint32_t pl = plain ? page_len[e->page] : e->page_len;
        uint32_t ul = plain ? user_len[e->user] : e->user_len;
        sql_value pk, wargs[2], sargs[4];
        set_str(&pk, ps, pl);
        set_null(&wargs[0]);
        set_str(&wargs[1], us, ul);
        set_null(&sargs[0]);
        for (int k = 1; k < 4; k++)
            set_str(&sargs[k], ps, pl);
        sql_value uk;
        set_str(&uk, us, ul);
        int a = SQL_VIEW_LATE, b = SQL_VIEW_LATE;
        if (plain) {
            if (on[0])
                a = sql_view_apply(tumbling, &pk, wargs, e->ts, i, wm, count_emit, &windows_out);
            if (on[1])
                b = sql_view_apply(sliding, &pk, wargs, e->ts, i, wm, count_emit, &windows_out);
            if (on[3])
                sql_view_apply(sessions, &uk, sargs, e->ts, i, wm, count_emit, &sessions_out);
            if (on[2])
                sql_view_apply(trending, &pk, NULL, e->ts, i, wm, NULL, NULL);
        } else {
            /* As the shards do: each string hashed once (one seed, one key). */
            const struct ahead *h = &ring[i % (AHEAD + 1)];
            if (on[0])
                a = sql_view_apply_hashed(tumbling, &pk, h->ph, wargs, h->wh, e->ts, i, wm,
                                          count_emit, &windows_out);
            if (on[1])
                b = sql_view_apply_hashed(sliding, &pk, h->ph, wargs, h->wh, e->ts, i, wm,
                                          count_emit, &windows_out);
            if (on[3])
                sql_view_apply_hashed(sessions, &uk, h->uh, sargs, h->sh, e->ts, i, wm,
                                      count_emit, &sessions_out);
            if (on[2])
                sql_view_apply_hashed(trending, &pk, h->ph, NULL, NULL, e->ts, i, wm, NULL,
                                      NULL);
        }
        if (a == SQL_VIEW_LATE && b == SQL_VIEW_LATE)
            late++;
        if ((i & 1023) == 1023) { /* a watermark marker per 1024 events, as the server sends */
            wm = max_ts - 5000;
            sql_view_advance(tumbling, wm, count_emit, &windows_out);
            sql_view_advance(sliding, wm, count_emit, &windows_out);
            sql_view_advance(sessions, wm, count_emit, &sessions_out);
            if ((i & 65535) == 65535)
                sql_view_forget(trending, max_ts, below_min, NULL);
        }
    }
    double secs = now_s() - start, cpu_secs = bench_cpu_s() - cpu_start;
    double user1, sys1;
    cpu_split(&user1, &sys1);
    long rss_after = rss_kib();

    sql_view_stats st_t, st_s, st_e, st_r;
    sql_view_stats_get(tumbling, &st_t);
    sql_view_stats_get(sliding, &st_s);
    sql_view_stats_get(sessions, &st_e);
    sql_view_stats_get(trending, &st_r);
    size_t open_sessions = st_e.open;
    size_t window_keys = st_t.open + st_t.kept + st_s.open + st_s.kept;
    size_t window_bytes = st_t.bytes + st_s.bytes;
    printf("lib_bench%s%s%s: events=%zu users=%" PRIu32 " pages=%" PRIu32 " disorder_ms=%" PRId64 "\n",
           plain ? " --plain" : "", huge ? " --huge" : "", share ? " --share" : "", n_events, n_users, n_pages, disorder);
    printf("events_per_s=%.0f seconds=%.3f duplicates=%" PRIu64 " late=%" PRIu64
           " window_results=%" PRIu64 " session_ends=%" PRIu64 "\n",
           (double)n_events / secs, secs, dups, late, windows_out, sessions_out);
    printf("events_per_cpu_s=%.0f cpu_seconds=%.3f\n", (double)n_events / cpu_secs, cpu_secs);
    printf("events_per_user_cpu_s=%.0f user_seconds=%.3f sys_seconds=%.3f\n",
           (double)n_events / (user1 - user0), user1 - user0, sys1 - sys0);
    printf("open_sessions=%zu bytes_per_open_session=%.1f\n", open_sessions,
           open_sessions ? (double)st_e.bytes / (double)open_sessions : 0.0);
    printf("window_keys=%zu bytes_per_window_key=%.1f\n", window_keys,
           window_keys ? (double)window_bytes / (double)window_keys : 0.0);
    printf("dedup_ids=%zu bytes_per_dedup_id=%.1f trending_pages=%zu bytes_per_trending_page=%.1f\n",
           cf_dedup_count(dedup),
           cf_dedup_count(dedup) ? (double)cf_dedup_memory(dedup) / (double)cf_dedup_count(dedup) : 0.0,
           st_r.groups, st_r.groups ? (double)st_r.bytes / (double)st_r.groups : 0.0);
    printf("rss_growth_mib=%.1f\n", (double)(rss_after - rss_before) / 1024.0);
    /* The timed loop on CLOCK_MONOTONIC, for a profile of it alone:
     * perf record -k CLOCK_MONOTONIC ...; perf report --time START,END. */
    printf("loop_monotonic=%.6f,%.6f\n", start, start + secs);

    sql_view_free(tumbling);
    sql_view_free(sliding);
    sql_view_free(sessions);
    sql_view_free(trending);
    cf_dedup_free(dedup);
    free(users); free(pages); free(user_len); free(page_len); free(cdf);
    free(evs); free(ids);
    return 0;
}
