/* join_bench: the SQL join operators of lib/ on one thread.
 *
 * Interval join (sql_join): N orders and N payments, WITHIN 5 minutes,
 * GRACE 60 s; order i at T0 + i * spacing (default 100 orders per second
 * of event time), its payment 0-10 minutes later (uniform, so about half
 * pair); every event arrives up to 4 s out of order (sorted by event time
 * plus a random delay) and the watermark trails the largest event time by
 * 5 s. Prints events per CPU second, pairs and NULL rows, the buffered
 * count at ten points of the run (flat once the watermark moves: buffers
 * are freed), its peak, and the state bytes per buffered event.
 *
 * Stream-table join (sql_table): a table of R users, then N click events
 * looking up a user each (90% present), INNER: events per CPU second (the
 * comparison with a view without the join needs the server: BENCHMARKS.md).
 *
 *   join_bench [--orders N] [--rows N] [--seed N]
 *
 * Rows are built before the clock starts, so only the library is timed. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "sql_join.h"
#include "sql_table.h"

static uint64_t rng_state = 1;

static uint64_t rng_next(void) { return bench_splitmix64(&rng_state); }

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

#define NCOLS 4
#define IDLEN 16

typedef struct gen {
    int side;               /* 0 order, 1 payment */
    int64_t ts;
    int64_t arrive;         /* sort key: ts + delay */
    uint32_t order;         /* the order it belongs to */
} gen;

static int cmp_arrive(const void *a, const void *b)
{
    const gen *x = a, *y = b;
    return x->arrive < y->arrive ? -1 : x->arrive > y->arrive;
}

typedef struct counts {
    uint64_t pairs, unmatched;
} counts;

static void count_emit(void *ctx, const sql_join_result *r)
{
    counts *c = ctx;
    if (r->matched)
        c->pairs++;
    else
        c->unmatched++;
}

static void count_row(void *ctx, const sql_row *row)
{
    (void)row;
    (*(uint64_t *)ctx)++;
}

static void interval_bench(size_t n, bool left, uint64_t seed)
{
    rng_state = seed; /* the same trace for INNER and LEFT */
    const int64_t T0 = 1700000000000, spacing = 10, d = 300000, grace = 60000, ooo = 5000;
    gen *g = malloc(2 * n * sizeof *g);
    char *ids = malloc(2 * n * IDLEN);
    char *cust = malloc(n * IDLEN);
    sql_value *vals = malloc(2 * n * NCOLS * sizeof *vals);
    if (!g || !ids || !cust || !vals) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) {
        int64_t to = T0 + (int64_t)i * spacing, tp = to + (int64_t)(rng_next() % 600001);
        g[2 * i] = (gen){0, to, to + (int64_t)(rng_next() % 4000), (uint32_t)i};
        g[2 * i + 1] = (gen){1, tp, tp + (int64_t)(rng_next() % 4000), (uint32_t)i};
        snprintf(ids + 2 * i * IDLEN, IDLEN, "o-%07u", (unsigned)i);
        snprintf(ids + (2 * i + 1) * IDLEN, IDLEN, "p-%07u", (unsigned)i);
        snprintf(cust + i * IDLEN, IDLEN, "c-%06u", (unsigned)(rng_next() % 100000));
    }
    qsort(g, 2 * n, sizeof *g, cmp_arrive);
    /* orders (order_id, customer_id, amount, ts); payments (payment_id,
     * order_id, amount, ts). */
    for (size_t k = 0; k < 2 * n; k++) {
        sql_value *v = vals + k * NCOLS;
        const char *oid = ids + 2 * (size_t)g[k].order * IDLEN;
        double amount = (double)(rng_next() % 100000) / 100.0;
        if (g[k].side == 0) {
            v[0] = sql_string(oid, 9);
            v[1] = sql_string(cust + (size_t)g[k].order * IDLEN, 8);
        } else {
            v[0] = sql_string(oid + IDLEN, 9);
            v[1] = sql_string(oid, 9);
        }
        v[2] = sql_double(amount);
        v[3] = sql_timestamp(g[k].ts);
    }

    sql_join_config cfg = {.left_outer = left, .nkeys = 1, .ncols = {NCOLS, NCOLS}, .within_ms = d,
                           .grace_ms = grace};
    memcpy(cfg.hash_key, "join-bench-key16", 16);
    sql_join *j = sql_join_new(&cfg);
    counts c = {0};
    size_t peak = 0, peak_bytes = 0, peak_mem = 0, checkpoint[10] = {0}, tenth = 2 * n / 10;
    int64_t maxt = INT64_MIN;
    long rss0 = rss_kib();
    double t0 = bench_cpu_s();
    for (size_t k = 0; k < 2 * n; k++) {
        const sql_value *v = vals + k * NCOLS;
        sql_row row = {.v = v, .n = NCOLS, .rowtime = g[k].ts};
        maxt = g[k].ts > maxt ? g[k].ts : maxt;
        int rc = sql_join_push(j, g[k].side ? SQL_JOIN_SIDE_RIGHT : SQL_JOIN_SIDE_LEFT, g[k].side ? &v[1] : &v[0],
                               &row, k + 1, maxt - ooo, count_emit, &c);
        if (rc != SQL_JOIN_APPLIED) {
            fprintf(stderr, "push %zu: %d\n", k, rc);
            exit(1);
        }
        if ((k & 1023) == 0 || k + 1 == 2 * n) {
            sql_join_stats st;
            sql_join_stats_get(j, &st);
            size_t b = st.buffered[0] + st.buffered[1];
            if (b > peak) {
                peak = b;
                peak_bytes = st.bytes[0] + st.bytes[1];
                peak_mem = st.memory;
            }
        }
        if ((k + 1) % tenth == 0 && (k + 1) / tenth <= 10) {
            sql_join_stats st;
            sql_join_stats_get(j, &st);
            checkpoint[(k + 1) / tenth - 1] = st.buffered[0] + st.buffered[1];
        }
    }
    double secs = bench_cpu_s() - t0;
    long rss1 = rss_kib();
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    printf("interval join (%s, WITHIN 5 min, GRACE 60 s): %zu orders + %zu payments\n", left ? "LEFT" : "INNER", n,
           n);
    printf("  %.0f events/s (CPU), %.3f s\n", (double)(2 * n) / secs, secs);
    printf("  pairs %" PRIu64 ", NULL rows %" PRIu64 " (before the final flush), dropped %" PRIu64 "\n", c.pairs,
           c.unmatched, st.dropped);
    printf("  buffered at each tenth of the run:");
    for (int i = 0; i < 10; i++)
        printf(" %zu", checkpoint[i]);
    printf("\n  peak buffered %zu events, %.1f bytes per buffered event (record + packed row + heap slot),"
           " %.1f with keys and tables\n",
           peak, peak ? (double)peak_bytes / (double)peak : 0.0, peak ? (double)peak_mem / (double)peak : 0.0);
    printf("  RSS %ld KiB -> %ld KiB\n", rss0, rss1);
    sql_join_advance(j, INT64_MAX, count_emit, &c);
    sql_join_stats_get(j, &st);
    printf("  after the final flush: buffered %zu, pairs %" PRIu64 ", NULL rows %" PRIu64 "\n",
           st.buffered[0] + st.buffered[1], c.pairs, c.unmatched);
    sql_join_free(j);
    free(g);
    free(ids);
    free(cust);
    free(vals);
}

static void table_bench(size_t rows, size_t events)
{
    char *keys = malloc(rows * 2 * IDLEN);
    sql_table_config cfg = {.ncols = 3, .key_column = 0};
    memcpy(cfg.hash_key, "table-bench-k16b", 16);
    sql_table *t = sql_table_new(&cfg);
    static const char *plans[] = {"free", "pro", "team", "enterprise"};
    for (size_t i = 0; i < rows * 2; i++)
        snprintf(keys + i * IDLEN, IDLEN, "u-%07u", (unsigned)i);
    double t0 = bench_cpu_s();
    for (size_t i = 0; i < rows; i++) {
        sql_value v[3] = {sql_string(keys + i * IDLEN, 9), sql_string(plans[i % 4], (uint32_t)strlen(plans[i % 4])),
                          sql_string("FR", 2)};
        sql_row row = {.v = v, .n = 3};
        if (sql_table_upsert(t, &row) != 0) {
            fprintf(stderr, "upsert failed\n");
            exit(1);
        }
    }
    double up = bench_cpu_s() - t0;
    uint32_t *pick = malloc(events * sizeof *pick);
    for (size_t i = 0; i < events; i++)
        pick[i] = (uint32_t)(rng_next() % (rows * 10 / 9 + 1)); /* ~90% present */
    uint64_t out = 0;
    t0 = bench_cpu_s();
    for (size_t i = 0; i < events; i++) {
        sql_value v[2] = {sql_string(keys + (size_t)pick[i] * IDLEN, 9), sql_string("/pricing", 8)};
        sql_row row = {.v = v, .n = 2, .rowtime = (int64_t)i};
        sql_table_join(t, false, v[0], &row, count_row, &out);
    }
    double js = bench_cpu_s() - t0;
    sql_table_stats st;
    sql_table_stats_get(t, &st);
    printf("stream-table join (INNER): %zu-row table, %zu events\n", rows, events);
    printf("  upserts %.0f rows/s; joins %.0f events/s (%" PRIu64 " rows out)\n", (double)rows / up,
           (double)events / js, out);
    printf("  table %.1f bytes per row (packed row and key), %.1f with the hash table\n",
           (double)st.bytes / (double)st.rows, (double)st.memory / (double)st.rows);
    sql_table_free(t);
    free(keys);
    free(pick);
}

int main(int argc, char **argv)
{
    size_t orders = 1000000, rows = 1000000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--orders") == 0)
            orders = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--rows") == 0)
            rows = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--seed") == 0)
            rng_state = strtoull(argv[i + 1], NULL, 10);
        else {
            fprintf(stderr, "usage: join_bench [--orders N] [--rows N] [--seed N]\n");
            return 2;
        }
    }
    if (orders < 10 || rows < 10 || orders > 10000000 || rows > 10000000) {
        fprintf(stderr, "orders and rows: 10..10000000\n");
        return 2;
    }
    uint64_t seed = rng_state;
    interval_bench(orders, false, seed);
    interval_bench(orders, true, seed);
    table_bench(rows, 2 * orders);
    return 0;
}
