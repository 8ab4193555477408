/* save_bench: the CPU time of sql_view_save, the bulk of a shard's pause at
 * a snapshot barrier (issue 15, T1: the sessions view was 2.2-3.2 ms of a
 * 3.4-5 ms part). Builds the built-in sessions and tumbling views over
 * --users users and --pages pages (one event each per user, a page per
 * event), then saves each --repeat times into a reused buffer and prints
 * the fastest save (thread CPU time), its bytes and MB per CPU-second.
 *
 *   save_bench [--users N] [--pages N] [--events N] [--repeat N] [--seed N]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "cf_buf.h"
#include "sql_view.h"

static uint64_t rng_state;

static uint64_t rng_next(void) { return bench_splitmix64(&rng_state); }

static void ignore(void *ctx, const sql_view_result *r) { (void)ctx; (void)r; }

/* Fills v with events: key_is_user keys by user (sessions), else by page. */
static void fill(sql_view *v, bool key_is_user, long users, long pages, long events)
{
    char u[16], p[24];
    int64_t t0 = 1790000000000;
    for (long i = 0; i < events; i++) {
        int ul = snprintf(u, sizeof u, "u%07" PRIu64, rng_next() % (uint64_t)users);
        int pl = snprintf(p, sizeof p, "/products/%" PRIu64, rng_next() % (uint64_t)pages);
        sql_value page = sql_string(p, (size_t)pl), user = sql_string(u, (size_t)ul);
        sql_value key = key_is_user ? user : page;
        sql_value args[4] = {sql_null(), key_is_user ? page : user, page, page};
        sql_view_apply(v, &key, args, t0 + i / 100, (uint64_t)i, INT64_MIN, ignore, NULL);
    }
}

static void measure(const char *name, const sql_view_config *c, bool key_is_user, long users,
                    long pages, long events, int repeat)
{
    sql_view *v = sql_view_new(c);
    if (!v) {
        fprintf(stderr, "save_bench: bad view config\n");
        exit(1);
    }
    fill(v, key_is_user, users, pages, events);
    cf_buf out = {0};
    double best = 1e30;
    for (int r = 0; r < repeat; r++) {
        cf_buf_reset(&out);
        double t = bench_cpu_s();
        if (sql_view_save(v, NULL, NULL, &out) < 0) {
            fprintf(stderr, "save_bench: save failed\n");
            exit(1);
        }
        t = bench_cpu_s() - t;
        if (t < best)
            best = t;
    }
    printf("%-9s save %8.3f ms  bytes %zu  MB/cpu-s %.0f\n", name, best * 1e3, out.len,
           (double)out.len / best / 1e6);
    cf_buf_free(&out);
    sql_view_free(v);
}

int main(int argc, char **argv)
{
    long users = bench_arg_long(argc, argv, "--users", 20000);
    long pages = bench_arg_long(argc, argv, "--pages", 2000);
    long events = bench_arg_long(argc, argv, "--events", 4 * users);
    int repeat = (int)bench_arg_long(argc, argv, "--repeat", 20);
    rng_state = (uint64_t)bench_arg_long(argc, argv, "--seed", 42);
    if (users < 1 || pages < 1 || events < 1 || repeat < 1) {
        fprintf(stderr, "save_bench: --users, --pages, --events, --repeat must be >= 1\n");
        return 2;
    }
    const sql_agg_spec win_aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT_DISTINCT, 0}};
    const sql_agg_spec sess_aggs[] = {{SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT_DISTINCT, 0},
                                      {SQL_AGG_EARLIEST, 0}, {SQL_AGG_LATEST, 0}};
    sql_view_config sess = {.nkeys = 1, .aggs = sess_aggs, .naggs = 4,
                            .window = SQL_WINDOW_SESSION, .gap_ms = 30 * 60000,
                            .grace_ms = 60000};
    sql_view_config tumb = {.nkeys = 1, .aggs = win_aggs, .naggs = 2,
                            .window = SQL_WINDOW_TUMBLING, .size_ms = 60000, .grace_ms = 60000};
    measure("sessions", &sess, true, users, pages, events, repeat);
    measure("tumbling", &tumb, false, users, pages, events, repeat);
    return 0;
}
