/* sql_view_bench: the SQL view operator (sql_view + sql_agg) configured as
 * each built-in view of builtin_sql.h, one core:
 *   tumbling  SELECT page_url, COUNT(*), COUNT(DISTINCT user_id) ... WINDOW
 *             TUMBLING (SIZE 60 SECONDS)
 *   sliding   ... WINDOW HOPPING (SIZE 5 MINUTES, ADVANCE BY 1 MINUTE)
 *   sessions  ... WINDOW SESSION (30 MINUTES) GROUP BY user_id with COUNT(*),
 *             COUNT(DISTINCT page_url), EARLIEST(page_url), LATEST(page_url)
 *   trending  SELECT page_url, DECAYED_COUNT(60 SECONDS) GROUP BY page_url
 * Events as in lib_bench (Zipf pages, uniform users, bounded disorder, a
 * watermark every 1024 events). Prints events per CPU second for each and
 * all four, and state bytes per held unit (window-group pair, open
 * session, page). (Until the built-ins ran as SQL this compared each with
 * its hard-wired operator: 0.82-0.88x, BENCHMARKS.md.)
 *
 * On a shared machine the figures move by +-15% between runs, so --repeat
 * N runs each N times and keeps the fastest.
 *
 *   sql_view_bench [--events N] [--users N] [--pages N] [--disorder-ms N]
 *                  [--rate N] [--seed N] [--only NAME] [--repeat N]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "sql_view.h"

typedef struct gen_event {
    uint32_t user;
    uint32_t page;
    int64_t ts;
} gen_event;

static uint64_t rng_state;

static uint64_t rng_next(void) { return bench_splitmix64(&rng_state); }

static double rng_unit(void) { return (double)(rng_next() >> 11) / 9007199254740992.0; }

static const char *arg_str(int argc, char **argv, const char *name)
{
    for (int i = 1; i + 1 < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    return NULL;
}

static size_t n_events;
static gen_event *evs;
static char (*users)[16];
static char (*pages)[24];
static uint8_t *user_len, *page_len;
static uint64_t emitted;

static void count_view(void *ctx, const sql_view_result *r) { (void)ctx; (void)r; emitted++; }

typedef struct measure {
    double secs;
    uint64_t emitted;
    size_t bytes, units;
} measure;

/* ---- one view over the events ------------------------------------------------- */

/* key_is_user: sessions (key user_id, arguments page_url); otherwise the
 * key is page_url and the argument, if any aggregate takes one, user_id. */
static measure run_view(const sql_view_config *c, bool key_is_user)
{
    bool args_needed = false;
    for (uint32_t i = 0; i < c->naggs; i++)
        args_needed = args_needed || sql_agg_takes_arg(c->aggs[i].kind);
    sql_view *v = sql_view_new(c);
    if (!v) {
        fprintf(stderr, "sql_view_bench: bad view config\n");
        exit(1);
    }
    emitted = 0;
    int64_t max_ts = INT64_MIN, wm = INT64_MIN;
    double t0 = bench_cpu_s();
    for (size_t i = 0; i < n_events; i++) {
        const gen_event *e = &evs[i];
        if (e->ts > max_ts)
            max_ts = e->ts;
        sql_value page = sql_string(pages[e->page], page_len[e->page]), key = page;
        sql_value args[4] = {sql_null(), page, page, page};
        if (key_is_user)
            key = sql_string(users[e->user], user_len[e->user]);
        else if (args_needed)
            args[1] = sql_string(users[e->user], user_len[e->user]);
        sql_view_apply(v, &key, args_needed ? args : NULL, e->ts, i, wm, count_view, NULL);
        if ((i & 1023) == 1023)
            wm = max_ts - 5000; /* judged from the next event on, as in the server */
    }
    sql_view_advance(v, wm, count_view, NULL);
    double secs = bench_cpu_s() - t0;
    sql_view_stats st;
    sql_view_stats_get(v, &st);
    measure m = {secs, emitted, st.bytes,
                 c->window == SQL_WINDOW_NONE ? st.groups
                 : c->window == SQL_WINDOW_SESSION ? st.open : st.open + st.kept};
    sql_view_free(v);
    return m;
}

/* CPU seconds summed over the views run: all four per event is what a
 * shard does for the built-in analytics. */
static double total_sql;

static int repeat = 1;

static measure best(measure a, measure b)
{
    return a.secs <= b.secs ? a : b;
}

static void report(const char *name, const char *unit, measure s)
{
    total_sql += s.secs;
    printf("%-9s sql_view %10.0f ev/cpu-s  bytes/%s %.1f (units %zu, emitted %" PRIu64 ")\n",
           name, (double)n_events / s.secs, unit,
           s.units ? (double)s.bytes / (double)s.units : 0.0, s.units, s.emitted);
}

int main(int argc, char **argv)
{
    n_events = (size_t)bench_arg_long(argc, argv, "--events", 3000000);
    uint32_t n_users = (uint32_t)bench_arg_long(argc, argv, "--users", 1000000);
    uint32_t n_pages = (uint32_t)bench_arg_long(argc, argv, "--pages", 10000);
    int64_t disorder = bench_arg_long(argc, argv, "--disorder-ms", 5000);
    int64_t rate = bench_arg_long(argc, argv, "--rate", 10000);
    rng_state = (uint64_t)bench_arg_long(argc, argv, "--seed", 42);
    const char *only = arg_str(argc, argv, "--only");
    repeat = (int)bench_arg_long(argc, argv, "--repeat", 1);
    if (repeat < 1)
        repeat = 1;

    users = malloc((size_t)n_users * 16);
    pages = malloc((size_t)n_pages * 24);
    user_len = malloc(n_users);
    page_len = malloc(n_pages);
    double *cdf = malloc((size_t)n_pages * sizeof *cdf);
    evs = malloc(n_events * sizeof *evs);
    if (!users || !pages || !user_len || !page_len || !cdf || !evs) {
        fprintf(stderr, "sql_view_bench: out of memory\n");
        return 1;
    }
    for (uint32_t u = 0; u < n_users; u++)
        user_len[u] = (uint8_t)snprintf(users[u], 16, "u%07" PRIu32, u);
    double total = 0;
    for (uint32_t p = 0; p < n_pages; p++) {
        page_len[p] = (uint8_t)snprintf(pages[p], 24, "/products/%" PRIu32, p);
        total += 1.0 / (p + 1);
        cdf[p] = total;
    }
    int64_t t0 = 1790000000000;
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
        evs[i].ts = t0 + (int64_t)i * 1000 / rate -
                    (disorder ? (int64_t)(rng_next() % (uint64_t)disorder) : 0);
    }
    printf("sql_view_bench: events=%zu users=%" PRIu32 " pages=%" PRIu32 " disorder_ms=%" PRId64
           "\n", n_events, n_users, n_pages, disorder);

    const sql_agg_spec win_aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT_DISTINCT, 0}};
    const sql_agg_spec sess_aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT_DISTINCT, 0},
                                      {SQL_AGG_EARLIEST, 0}, {SQL_AGG_LATEST, 0}};
    const sql_agg_spec trend_aggs[] = {{SQL_AGG_DECAYED_COUNT, 60000}};
    if (!only || strcmp(only, "tumbling") == 0) {
        sql_view_config c = {.nkeys = 1, .aggs = win_aggs, .naggs = 2,
                             .window = SQL_WINDOW_TUMBLING, .size_ms = 60000, .grace_ms = 60000};
        measure q = {1e30, 0, 0, 0};
        for (int r = 0; r < repeat; r++)
            q = best(q, run_view(&c, false));
        report("tumbling", "window-group", q);
    }
    if (!only || strcmp(only, "sliding") == 0) {
        sql_view_config c = {.nkeys = 1, .aggs = win_aggs, .naggs = 2,
                             .window = SQL_WINDOW_HOPPING, .size_ms = 300000,
                             .advance_ms = 60000, .grace_ms = 60000};
        measure q = {1e30, 0, 0, 0};
        for (int r = 0; r < repeat; r++)
            q = best(q, run_view(&c, false));
        report("sliding", "window-group", q);
    }
    if (!only || strcmp(only, "sessions") == 0) {
        sql_view_config c = {.nkeys = 1, .aggs = sess_aggs, .naggs = 4,
                             .window = SQL_WINDOW_SESSION, .gap_ms = 30 * 60000,
                             .grace_ms = 60000};
        measure q = {1e30, 0, 0, 0};
        for (int r = 0; r < repeat; r++)
            q = best(q, run_view(&c, true));
        report("sessions", "open-session", q);
    }
    if (!only || strcmp(only, "trending") == 0) {
        sql_view_config c = {.nkeys = 1, .aggs = trend_aggs, .naggs = 1,
                             .window = SQL_WINDOW_NONE};
        measure q = {1e30, 0, 0, 0};
        for (int r = 0; r < repeat; r++)
            q = best(q, run_view(&c, false));
        report("trending", "page", q);
    }
    if (!only)
        printf("all four  sql_view %10.0f ev/cpu-s\n", (double)n_events / total_sql);
    free(users); free(pages); free(user_len); free(page_len); free(cdf);
    free(evs);
    return 0;
}
