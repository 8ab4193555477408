/* Unit tests of server/history*.c: idempotent writes (the same row twice is
 * stored once), scans keep the newest revision in the windows query order,
 * rollups sum additive columns and merge sketches per step, retention
 * follows the clock it is given, rows that find the queue full go through
 * the spill file, and a database with a newer schema is refused. */
#include <errno.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "unit_util.h"
#include <sqlite3.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "history.h"
#include "history_rollup.h"

typedef struct fixture {
    char dir[64];
    char path[128];
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    strcpy(f->dir, "/tmp/cf-test-hist-XXXXXX");
    if (!mkdtemp(f->dir))
        return -1;
    snprintf(f->path, sizeof f->path, "%s/history.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    uu_remove_tree(f->dir);
    free(f);
    return 0;
}

static cf_history *open_h(const fixture *f, int64_t retention, size_t queue)
{
    char err[256] = "";
    cf_history *h = cf_history_open(f->path, retention, queue, err, sizeof err);
    if (!h)
        fail_msg("open: %s", err);
    assert_int_equal(cf_history_register_view(h, "tumbling", "count", "unique_users"), 0);
    return h;
}

/* Opens and starts a writer whose every transaction waits stall_ms first,
 * so that the queue fills; recovering: in the bulk mode of a recovery
 * (cf_history_set_blocking). */
static cf_history *start_stalled(const fixture *f, size_t queue, bool recovering, int stall_ms)
{
    cf_history *h = open_h(f, 0, queue);
    if (recovering)
        cf_history_set_blocking(h, true);
    cf_history_test_stall(h, stall_ms);
    assert_int_equal(cf_history_start(h), 0);
    return h;
}

/* Offers one tumbling row: users u0..u0+nu-1 (hashes), count c. */
static void offer(cf_history *h, int64_t start, const char *page, uint32_t rev, uint64_t c, int u0,
                  int nu)
{
    cf_hll *s = cf_hll_new();
    for (int u = u0; u < u0 + nu; u++)
        assert_true(cf_hll_add(s, (uint64_t)u * 0x9e3779b97f4a7c15ull + 1) >= 0);
    cf_buf b = {0};
    assert_int_equal(cf_hll_save(s, &b), 0);
    char cols[64];
    int n = snprintf(cols, sizeof cols, "{\"count\":%llu,\"unique_users\":%d}", (unsigned long long)c,
                     nu);
    cf_history_row r = {.view = "tumbling", .start = start, .end = start + 1000, .group = page,
                        .group_len = strlen(page), .revision = rev, .cols = cols,
                        .cols_len = (size_t)n, .sketch = b.data, .sketch_len = b.len};
    assert_int_equal(cf_history_offer(h, &r), 0);
    cf_buf_free(&b);
    cf_hll_free(s);
}

/* The one integer a query on history.db answers (its first row, first column). */
static long sql_long(const fixture *f, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

static long count_rows(const fixture *f)
{
    return sql_long(f, "SELECT count(*) FROM results");
}

static long page_size(const fixture *f)
{
    return sql_long(f, "PRAGMA page_size");
}

/* A new history.db has CF_HISTORY_PAGE_SIZE pages (rows with sketches fit
 * a page instead of overflow chains); a file made with 4 KiB pages keeps
 * them (SQLite cannot change a WAL file's page size) and takes rows as
 * before. */
static void a_new_file_has_large_pages_an_old_one_keeps_its_own(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 5, 0, 300);
    cf_history_close(h);
    assert_int_equal(page_size(f), CF_HISTORY_PAGE_SIZE);
    assert_int_equal(count_rows(f), 1);

    char side[160];
    unlink(f->path);
    snprintf(side, sizeof side, "%s-wal", f->path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", f->path);
    unlink(side);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA page_size=4096; CREATE TABLE t(x); DROP TABLE t;", NULL,
                                  NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 5, 0, 300);
    offer(h, 1000, "/b", 0, 1, 0, 1);
    cf_history_close(h);
    assert_int_equal(page_size(f), 4096);
    assert_int_equal(count_rows(f), 2);
}

/* Offers a positioned tumbling row (no sketch): fired by shard at fired_w. */
static void offer_at(cf_history *h, int64_t start, unsigned shard, int64_t fired_w)
{
    char page[32];
    snprintf(page, sizeof page, "/p%lld", (long long)start);
    const char *cols = "{\"count\":1,\"unique_users\":1}";
    cf_history_row r = {.view = "tumbling", .start = start, .end = start + 1000, .group = page,
                        .group_len = strlen(page), .cols = cols, .cols_len = strlen(cols),
                        .positioned = true, .shard = shard, .fired_w = fired_w};
    assert_int_equal(cf_history_offer(h, &r), 0);
}

/* The stored positions: the number of rows with a known W; w0 and w1 the W
 * of shards 0 and 1 (INT64_MIN when absent). */
static int stored_positions(const fixture *f, int64_t *w0, int64_t *w1)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    *w0 = *w1 = INT64_MIN;
    int n = 0;
    if (sqlite3_prepare_v2(db, "SELECT shard, w FROM positions", -1, &st, NULL) == SQLITE_OK) {
        while (sqlite3_step(st) == SQLITE_ROW) {
            int64_t w = sqlite3_column_int64(st, 1);
            if (sqlite3_column_int(st, 0) == 0)
                *w0 = w;
            else
                *w1 = w;
            n += w != INT64_MIN;
        }
    }
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Replay positions: the writer stores per shard the largest W of the
 * positioned rows it committed (after a transaction, once idle), a later
 * open with the same shard count and key reads them back, and one with
 * another count or key gets none and drops them. */
static void positions_are_stored_and_kept_for_their_shards_and_key(void **state)
{
    fixture *f = *state;
    uint8_t key[16], other[16];
    memset(key, 7, sizeof key);
    memset(other, 8, sizeof other);
    int64_t w[3];
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_positions(h, 2, key, w), 0);
    assert_true(w[0] == INT64_MIN && w[1] == INT64_MIN);
    assert_int_equal(cf_history_start(h), 0);
    offer_at(h, 0, 0, 5000);
    offer_at(h, 1000, 1, 7000);
    offer_at(h, 2000, 0, 9000);
    int64_t w0, w1;
    while (stored_positions(f, &w0, &w1) < 2)
        usleep(10000);  /* waiting for the writer, not asserting time */
    assert_true(w0 == 9000 && w1 == 7000);
    cf_history_close(h);

    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_positions(h, 2, key, w), 0);
    assert_true(w[0] == 9000 && w[1] == 7000);
    cf_history_close(h);

    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_positions(h, 2, other, w), 0);     /* another data dir */
    assert_true(w[0] == INT64_MIN && w[1] == INT64_MIN);
    cf_history_close(h);
    assert_int_equal(stored_positions(f, &w0, &w1), 0);

    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_positions(h, 2, key, w), 0);
    assert_int_equal(cf_history_start(h), 0);
    offer_at(h, 3000, 1, 11000);
    while (stored_positions(f, &w0, &w1) < 1)
        usleep(10000);  /* waiting for the writer, not asserting time */
    assert_true(w0 == INT64_MIN && w1 == 11000);    /* this run's own maxima only */
    cf_history_close(h);
    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_positions(h, 3, key, w), 0);       /* another shard count */
    assert_true(w[0] == INT64_MIN && w[1] == INT64_MIN && w[2] == INT64_MIN);
    cf_history_close(h);
    assert_int_equal(stored_positions(f, &w0, &w1), 0);
    assert_int_equal(count_rows(f), 4);
}

typedef struct seen {
    char items[16][64];
    size_t n;
} seen;

static int collect(void *ctx, const cf_history_row *r)
{
    seen *s = ctx;
    if (s->n < 16)
        snprintf(s->items[s->n++], 64, "%lld %.*s r%u %.*s", (long long)r->start,
                 (int)r->group_len, r->group, r->revision, (int)r->cols_len, r->cols);
    return 0;
}

static void writes_are_idempotent_and_scans_keep_the_newest(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 5, 0, 2);
    offer(h, 0, "/a", 1, 6, 0, 3);     /* a late revision */
    offer(h, 1000, "/b", 0, 1, 0, 1);
    offer(h, 1000, "/a", 0, 2, 5, 1);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 4);
    /* A replay offers the same rows again: nothing new is stored. */
    h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 5, 0, 2);
    offer(h, 0, "/a", 1, 6, 0, 3);
    uint64_t n = cf_history_offered(h);
    while (!cf_history_written(h, n))
        usleep(1000);   /* waiting for the writer thread, not asserting time */
    cf_history_stats st;
    cf_history_get_stats(h, &st);
    assert_int_equal(st.written, 2);
    assert_int_equal(st.inserted, 0);
    assert_int_equal(count_rows(f), 4);

    seen s = {0};
    assert_int_equal(cf_history_scan(h, "tumbling", NULL, 0, INT64_MIN, INT64_MAX, 100, collect, &s), 3);
    assert_string_equal(s.items[0], "1000 /a r0 {\"count\":2,\"unique_users\":1}");
    assert_string_equal(s.items[1], "1000 /b r0 {\"count\":1,\"unique_users\":1}");
    assert_string_equal(s.items[2], "0 /a r1 {\"count\":6,\"unique_users\":3}");
    memset(&s, 0, sizeof s);
    assert_int_equal(cf_history_scan(h, "tumbling", "/a", 2, 0, 1000, 100, collect, &s), 1);
    assert_string_equal(s.items[0], "0 /a r1 {\"count\":6,\"unique_users\":3}");
    assert_int_equal(cf_history_scan(h, "nosuch", NULL, 0, 0, 1, 10, collect, &s), -ENOENT);
    cf_history_close(h);
}

static double item_num(const cJSON *items, int i, const char *k)
{
    return cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(items, i), k)->valuedouble;
}

static void rollup_sums_and_merges_sketches(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 5, 0, 2);
    offer(h, 0, "/a", 1, 6, 0, 3);     /* replaces revision 0 in sums */
    offer(h, 1000, "/b", 0, 4, 2, 3);  /* users 2..4: overlap with /a's 0..2 */
    offer(h, 2000, "/a", 0, 7, 10, 1); /* next step */
    cf_history_close(h);
    h = open_h(f, 0, 1 << 20);
    cJSON *out = NULL;
    assert_int_equal(cf_history_rollup(h, "tumbling", 0, 10000, 2000, &out, NULL, 0), 0);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_true(item_num(items, 0, "start") == 0 && item_num(items, 0, "end") == 2000);
    assert_true(item_num(items, 0, "count") == 10);        /* 6 + 4 */
    assert_true(item_num(items, 0, "unique_users") == 5);  /* {0..2} u {2..4} */
    assert_true(item_num(items, 1, "start") == 2000);
    assert_true(item_num(items, 1, "count") == 7 && item_num(items, 1, "unique_users") == 1);
    cJSON_Delete(out);
    /* end <= to: the window ending at 3000 is out of [0, 2999]. */
    assert_int_equal(cf_history_rollup(h, "tumbling", 0, 2999, 2000, &out, NULL, 0), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(out, "items")), 1);
    cJSON_Delete(out);
    assert_int_equal(cf_history_rollup(h, "nosuch", 0, 1, 1000, &out, NULL, 0), -ENOENT);
    assert_int_equal(cf_history_rollup(h, "tumbling", 5, 1, 1000, &out, NULL, 0), -EINVAL);
    cf_history_close(h);
}

static void retention_follows_the_clock(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 1500, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    offer(h, 0, "/a", 0, 1, 0, 1);      /* ends 1000 */
    offer(h, 1000, "/a", 0, 1, 0, 1);   /* ends 2000 */
    offer(h, 2000, "/a", 0, 1, 0, 1);   /* ends 3000 */
    uint64_t n = cf_history_offered(h);
    while (!cf_history_written(h, n))
        usleep(1000);
    cf_history_set_clock(h, 3501);      /* cutoff 2001: the first two go */
    cf_history_stats st;
    do {
        usleep(1000);   /* waiting for the writer thread */
        cf_history_get_stats(h, &st);
    } while (st.retention_cutoff != 2001);
    assert_int_equal(st.retention_deleted, 2);
    cf_history_set_clock(h, 100);       /* never backwards */
    cf_history_close(h);
    assert_int_equal(count_rows(f), 1);
}

static void a_full_queue_spills_and_loses_nothing(void **state)
{
    fixture *f = *state;
    /* A one-byte budget: every row but the first of a batch spills. */
    cf_history *h = start_stalled(f, 1, false, 20);
    for (int i = 0; i < 50; i++)
        offer(h, (int64_t)i * 1000, "/a", 0, 1, i, 1);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 50);
    char spill[160];
    snprintf(spill, sizeof spill, "%s.spill", f->path);
    assert_int_equal(access(spill, F_OK), -1);
}

/* More spilled bytes than one read-back chunk (1 MiB), and one row larger
 * than a chunk: read back in pieces, every row stored once. */
static void a_large_spill_is_read_back_in_chunks(void **state)
{
    fixture *f = *state;
    cf_history *h = start_stalled(f, 1, false, 50);
    size_t big = (size_t)3 << 19;   /* 1.5 MiB */
    char *cols = malloc(big + 64);
    assert_non_null(cols);
    for (int i = 0; i < 400; i++) {
        size_t pad = i == 200 ? big : 4000;
        int n = snprintf(cols, 64, "{\"count\":1,\"pad\":\"");
        memset(cols + n, 'x', pad);
        memcpy(cols + n + pad, "\"}", 3);
        cf_history_row r = {.view = "tumbling", .start = (int64_t)i * 1000,
                            .end = (int64_t)i * 1000 + 1000, .group = "/p", .group_len = 2,
                            .cols = cols, .cols_len = strlen(cols)};
        assert_int_equal(cf_history_offer(h, &r), 0);
    }
    free(cols);
    cf_history_stats st;
    cf_history_get_stats(h, &st);
    assert_true(st.spilled > 300);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 400);
}

/* Offers n tumbling rows of about 4 KB each (start i * 1000 from first). */
static void offer_padded(cf_history *h, int first, int n)
{
    char cols[4200];
    int k = snprintf(cols, sizeof cols, "{\"count\":1,\"pad\":\"");
    memset(cols + k, 'x', 4000);
    memcpy(cols + k + 4000, "\"}", 3);
    for (int i = first; i < first + n; i++) {
        cf_history_row r = {.view = "tumbling", .start = (int64_t)i * 1000,
                            .end = (int64_t)i * 1000 + 1000, .group = "/p", .group_len = 2,
                            .cols = cols, .cols_len = strlen(cols)};
        assert_int_equal(cf_history_offer(h, &r), 0);
    }
}

static void wait_written(cf_history *h)
{
    uint64_t n = cf_history_offered(h);
    while (!cf_history_written(h, n))
        usleep(1000);
}

static long file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

/* During recovery (blocking offers) the writer leaves its rows in the WAL:
 * 24 MB of rows, more than the 1000 pages (16 MB) after which a commit
 * checkpoints, reach no page of history.db itself; once recovery ends one
 * checkpoint copies them, and live writes checkpoint as before. Readers see
 * every row either way. */
static void recovery_defers_checkpoints_until_it_ends(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, (size_t)8 << 20);
    cf_history_set_blocking(h, true);
    assert_int_equal(cf_history_start(h), 0);
    offer_padded(h, 0, 6000);
    wait_written(h);
    assert_int_equal(count_rows(f), 6000);
    assert_int_equal(cf_history_test_checkpoints(h), 0);
    assert_true(file_size(f->path) < (1L << 20));
    cf_history_set_blocking(h, false);
    while (cf_history_test_checkpoints(h) == 0)
        usleep(1000);
    assert_true(file_size(f->path) > (20L << 20));
    /* Live writes: the automatic rule again (another 24 MB of WAL). */
    offer_padded(h, 6000, 6000);
    wait_written(h);
    assert_true(cf_history_test_checkpoints(h) >= 2);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 12000);
}

/* The writer's page cache holds a whole transaction of the default queue
 * (8 MiB): SQLite's default 2 MB cache spilled dirty pages mid-transaction,
 * writing them twice. The stall lets the queue fill, so transactions are
 * queue-sized. */
static void a_full_queue_commits_without_cache_spills(void **state)
{
    fixture *f = *state;
    cf_history *h = start_stalled(f, (size_t)8 << 20, true, 100);
    offer_padded(h, 0, 4000);
    wait_written(h);
    assert_int_equal(cf_history_test_cache_spills(h), 0);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 4000);
}

/* During recovery the queue takes 32 MiB whatever the configured budget
 * (1 MiB here), so the writer, stalled while 8 MB of rows arrive, writes
 * them in one or two transactions, not eight or more; live offers keep the
 * configured budget (they spill beyond it). */
static void recovery_writes_in_large_transactions(void **state)
{
    fixture *f = *state;
    cf_history *h = start_stalled(f, (size_t)1 << 20, true, 200);
    offer_padded(h, 0, 2000);
    wait_written(h);
    assert_true(cf_history_test_transactions(h) <= 3);
    cf_history_set_blocking(h, false);
    offer_padded(h, 2000, 2000);
    cf_history_stats st;
    cf_history_get_stats(h, &st);
    assert_true(st.spilled > 0);
    cf_history_close(h);
    assert_int_equal(count_rows(f), 4000);
}

/* ---- the hourly pre-aggregates (schema v2) ------------------------------ */

#define HOUR 3600000LL

/* Waits until the writer stored everything offered and rebuilt every dirty
 * rollup hour (waiting for the writer thread, not asserting time). */
static void settle(cf_history *h)
{
    uint64_t n = cf_history_offered(h);
    cf_history_stats st;
    for (;;) {
        cf_history_get_stats(h, &st);
        if (cf_history_written(h, n) && st.rollup_dirty == 0)
            break;
        usleep(1000);
    }
}

/* The rollup as compact JSON text, from the pre-aggregates or (scan) the
 * row scan of schema v1: the reference every answer must equal. */
static char *rollup_text(cf_history *h, int64_t from, int64_t to, int64_t step, bool scan)
{
    cf_history_set_rollup_scan(h, scan);
    cJSON *out = NULL;
    int rc = cf_history_rollup(h, "tumbling", from, to, step, &out, NULL, 0);
    cf_history_set_rollup_scan(h, false);
    if (rc)
        fail_msg("rollup: %d", rc);
    char *t = cJSON_PrintUnformatted(out);
    cJSON_Delete(out);
    return t;
}

/* Pre-aggregated answers equal the row scan over whole and partial ranges. */
static void assert_rollups_exact(cf_history *h, int64_t lo, int64_t hi)
{
    const int64_t ranges[][2] = {
        {lo, hi}, {lo + HOUR / 2, hi}, {lo, hi - HOUR / 2}, {lo + 1, hi - 1}, {lo + HOUR, lo + 2 * HOUR},
    };
    for (size_t i = 0; i < sizeof ranges / sizeof ranges[0]; i++)
        for (int s = 0; s < 2; s++) {
            int64_t step = s ? 24 * HOUR : HOUR;
            char *want = rollup_text(h, ranges[i][0], ranges[i][1], step, true);
            char *got = rollup_text(h, ranges[i][0], ranges[i][1], step, false);
            assert_string_equal(got, want);
            free(want);
            free(got);
        }
    /* Unbounded: the first hour's floor saturates instead of overflowing. */
    char *want = rollup_text(h, INT64_MIN, INT64_MAX, 24 * HOUR, true);
    char *got = rollup_text(h, INT64_MIN, INT64_MAX, 24 * HOUR, false);
    assert_string_equal(got, want);
    free(want);
    free(got);
}

/* A late revision replaces revision 0 of a window in an hour that is
 * already aggregated: its count is replaced, not added, and its sketch
 * rebuilt, exactly as a full recompute gives. */
static void late_revisions_give_the_full_recompute(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    int64_t t0 = 1000 * HOUR;
    for (int hr = 0; hr < 30; hr++)
        for (int p = 0; p < 5; p++) {
            char page[16];
            snprintf(page, sizeof page, "/p%d", p);
            offer(h, t0 + hr * HOUR + p * 60000, page, 0, (uint64_t)(hr + p + 1), hr * 7 + p, 1 + p % 3);
        }
    settle(h);
    /* Hour 0 is aggregated now (10 + ... ); the late revision comes later. */
    offer(h, t0 + 60000, "/p1", 1, 100, 500, 40);      /* bigger: users 500..539 */
    offer(h, t0 + 2 * HOUR, "/p0", 1, 1, 2 * 7, 1);    /* smaller count than rev 0 */
    settle(h);
    char *got = rollup_text(h, t0, t0 + 30 * HOUR, HOUR, false);
    cJSON *out = cJSON_Parse(got);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    /* hour 0: counts 1..5 with /p1's 2 replaced by 100 */
    assert_true(item_num(items, 0, "count") == 1 + 100 + 3 + 4 + 5);
    assert_true(item_num(items, 2, "count") == 1 + 4 + 5 + 6 + 7);
    cJSON_Delete(out);
    free(got);
    assert_rollups_exact(h, t0, t0 + 30 * HOUR);
    /* Both revisions in one batch (the writer may take them together). */
    offer(h, t0 + 40 * HOUR, "/q", 0, 3, 900, 2);
    offer(h, t0 + 40 * HOUR, "/q", 1, 5, 900, 4);
    settle(h);
    assert_rollups_exact(h, t0 + 39 * HOUR, t0 + 42 * HOUR);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup WHERE dirty = 1"), 0);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup"), 31);
    cf_history_close(h);
}

static const char V1_SCHEMA[] =
    "CREATE TABLE views(name TEXT PRIMARY KEY, additive TEXT NOT NULL, sketch_col TEXT);"
    "CREATE TABLE results(view TEXT NOT NULL, wstart INTEGER NOT NULL, wend INTEGER NOT NULL,"
    " grp TEXT NOT NULL, revision INTEGER NOT NULL, cols TEXT NOT NULL, sketch BLOB,"
    " PRIMARY KEY (view, wstart, wend, grp, revision)) WITHOUT ROWID;"
    "INSERT INTO views VALUES ('tumbling', 'count', 'unique_users');"
    "PRAGMA user_version=1;";

/* A v1 history.db: 30 hours x 4 pages (some with a second revision). */
static void write_v1(const fixture *f, int64_t t0)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, V1_SCHEMA, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "INSERT INTO results VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                                        -1, &st, NULL), SQLITE_OK);
    for (int hr = 0; hr < 30; hr++)
        for (int p = 0; p < 4; p++)
            for (int rev = 0; rev <= (p == 2); rev++) {
                cf_hll *u = cf_hll_new();
                for (int k = 0; k < 2 + rev; k++)
                    assert_true(cf_hll_add(u, (uint64_t)(hr * 3 + p + k) * 0x9e3779b97f4a7c15ull + 1) >= 0);
                cf_buf b = {0};
                assert_int_equal(cf_hll_save(u, &b), 0);
                char page[16], cols[64];
                snprintf(page, sizeof page, "/p%d", p);
                snprintf(cols, sizeof cols, "{\"count\":%d,\"unique_users\":%d}", hr + p + rev * 10,
                         2 + rev);
                int64_t ws = t0 + hr * HOUR + p * 1000;
                sqlite3_bind_text(st, 1, "tumbling", -1, SQLITE_STATIC);
                sqlite3_bind_int64(st, 2, ws);
                sqlite3_bind_int64(st, 3, ws + HOUR);
                sqlite3_bind_text(st, 4, page, -1, SQLITE_TRANSIENT);
                sqlite3_bind_int64(st, 5, rev);
                sqlite3_bind_text(st, 6, cols, -1, SQLITE_TRANSIENT);
                sqlite3_bind_blob(st, 7, b.data, (int)b.len, SQLITE_TRANSIENT);
                assert_int_equal(sqlite3_step(st), SQLITE_DONE);
                sqlite3_reset(st);
                cf_buf_free(&b);
                cf_hll_free(u);
            }
    sqlite3_finalize(st);
    sqlite3_close(db);
}

/* Opening a v1 database upgrades it to the current version (v2 added the rollup table): every hour of its rows is marked
 * dirty at once (answers scan them meanwhile, at most 24 hours per
 * request, else -EAGAIN) and the writer builds them in the background. */
static void a_v1_database_is_upgraded(void **state)
{
    fixture *f = *state;
    int64_t t0 = 2000 * HOUR;
    write_v1(f, t0);
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(sql_long(f, "PRAGMA user_version"), CF_HISTORY_SCHEMA_VERSION);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup WHERE dirty = 1"), 30);
    /* Before the writer runs: 30 dirty hours are too many for one request,
     * 12 are scanned and exact. */
    cJSON *out = NULL;
    assert_int_equal(cf_history_rollup(h, "tumbling", t0, t0 + 31 * HOUR, HOUR, &out, NULL, 0), -EAGAIN);
    char *want = rollup_text(h, t0, t0 + 12 * HOUR, HOUR, true);
    char *got = rollup_text(h, t0, t0 + 12 * HOUR, HOUR, false);
    assert_string_equal(got, want);
    free(want);
    free(got);
    assert_int_equal(cf_history_start(h), 0);
    settle(h);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup WHERE dirty = 0"), 30);
    assert_rollups_exact(h, t0, t0 + 31 * HOUR);
    cf_history_close(h);
    /* Opened again: already v2, nothing to mark. */
    h = open_h(f, 0, 1 << 20);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup WHERE dirty = 1"), 0);
    cf_history_close(h);
}

/* Retention removes the rollup rows of hours whose rows it deleted, and
 * rebuilds an hour it emptied only partly. */
static void retention_deletes_rollup_rows(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 3 * HOUR, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    int64_t t0 = 501 * HOUR;    /* a multiple of the 3-hour step */
    for (int hr = 0; hr < 6; hr++) {
        offer(h, t0 + hr * HOUR, "/a", 0, 2, hr, 2);               /* ends +1 s */
        offer(h, t0 + hr * HOUR + HOUR / 2, "/b", 0, 3, hr, 1);    /* ends +30 min +1 s */
    }
    settle(h);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup"), 6);
    /* cutoff t0 + 2h + 20 min: hours 0 and 1 go, hour 2 keeps only /b. */
    int64_t cutoff = t0 + 2 * HOUR + HOUR / 3;
    cf_history_set_clock(h, cutoff + 3 * HOUR);
    cf_history_stats st;
    do {
        usleep(1000);   /* waiting for the writer thread */
        cf_history_get_stats(h, &st);
    } while (st.retention_cutoff != cutoff);
    settle(h);
    assert_int_equal(st.retention_deleted, 5);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM rollup"), 4);
    char sql[160];
    snprintf(sql, sizeof sql, "SELECT min(hour) FROM rollup WHERE view = 'tumbling'");
    assert_true(sql_long(f, sql) == t0 + 2 * HOUR);
    assert_rollups_exact(h, t0, t0 + 7 * HOUR);
    char *got = rollup_text(h, t0, t0 + 3 * HOUR, HOUR, false);
    cJSON *out = cJSON_Parse(got);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 1);
    assert_true(item_num(items, 0, "count") == 3);
    cJSON_Delete(out);
    free(got);
    cf_history_close(h);
}

/* ---- user views (schema v3) ------------------------------------------------ */

static const char USER_META[] =
    "{\"kind\":\"user\",\"avg\":[[\"a\",\"s\",\"c\"]]}";

static void offer_user(cf_history *h, const char *view, int64_t start, const char *grp, uint32_t rev,
                       const char *cols)
{
    cf_history_row r = {.view = view, .start = start, .end = start + HOUR, .group = grp,
                        .group_len = strlen(grp), .revision = rev, .cols = cols,
                        .cols_len = strlen(cols)};
    assert_int_equal(cf_history_offer(h, &r), 0);
}

typedef struct typed {
    int rows;
    int64_t big;
    double avg;
    char text[64];
    int null_type;
} typed;

static int typed_row(void *ctx, int64_t start, int64_t end, const char *group, size_t group_len,
                     uint32_t revision, const cf_history_val *v, size_t n)
{
    typed *t = ctx;
    (void)start; (void)end; (void)group; (void)group_len;
    assert_int_equal(n, 4);
    assert_int_equal(revision, 1);      /* the newest revision only */
    assert_int_equal(v[0].type, CF_HISTORY_VAL_INT);
    t->big = v[0].i;
    assert_int_equal(v[1].type, CF_HISTORY_VAL_REAL);
    t->avg = v[1].d;
    assert_int_equal(v[2].type, CF_HISTORY_VAL_TEXT);
    snprintf(t->text, sizeof t->text, "%.*s", (int)v[2].len, v[2].s);
    t->null_type = v[3].type;
    if (strcmp(t->text, "/a") == 0) {
        assert_true(t->big == INT64_C(9007199254740993));  /* not through a double */
        assert_true(t->avg == 2.25);
    }
    t->rows++;
    return 0;
}

/* A view declared while the writer runs is stored before the rows offered
 * after it; typed scans keep integers exact (beyond 2^53); AVG columns
 * come from SUM / COUNT per step; a refusing view names its reason. */
static void user_views_are_declared_while_running(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_start(h), 0);
    assert_int_equal(cf_history_define_view(h, "uv", "s,c", NULL, USER_META, false), 0);
    assert_int_equal(cf_history_define_view(h, "uv_no", "", NULL,
                                            "{\"refuse\":\"column mx (MAX(x)) cannot\"}", true), 0);
    assert_int_equal(cf_history_define_view(h, "bad name", "", NULL, NULL, false), -EINVAL);
    assert_true(cf_history_is_registered(h, "tumbling"));
    assert_false(cf_history_is_registered(h, "uv"));
    int64_t t0 = 100 * HOUR;
    offer_user(h, "uv", t0, "[\"/a\"]", 0, "{\"s\":3,\"c\":2,\"a\":1.5,\"k\":\"x\"}");
    offer_user(h, "uv", t0, "[\"/a\"]", 1,
               "{\"s\":9007199254740993,\"c\":4,\"a\":2.25,\"k\":\"/a\"}");
    offer_user(h, "uv", t0, "[\"/b\"]", 1, "{\"s\":5,\"c\":1,\"a\":5.0,\"k\":\"/b\"}");
    assert_int_equal(cf_history_defs_wait(h), 0);
    settle(h);
    char *meta = NULL;
    assert_int_equal(cf_history_view_meta(h, "uv", &meta), 0);
    assert_string_equal(meta, USER_META);
    free(meta);
    assert_int_equal(cf_history_view_meta(h, "tumbling", &meta), 0);
    assert_null(meta);
    assert_int_equal(cf_history_view_meta(h, "nosuch", &meta), -ENOENT);

    const char *names[] = {"s", "a", "k", "missing"};
    typed t = {0};
    assert_int_equal(cf_history_scan_cols(h, "uv", t0, t0 + HOUR, names, 4, 10, typed_row, &t), 2);
    assert_int_equal(t.rows, 2);
    assert_int_equal(t.null_type, CF_HISTORY_VAL_NULL);
    /* More rows than allowed is an error, not a silent cut. */
    t.rows = 0;
    assert_int_equal(cf_history_scan_cols(h, "uv", t0, t0 + HOUR, names, 4, 1, typed_row, &t), -E2BIG);

    cJSON *out = NULL;
    assert_int_equal(cf_history_rollup(h, "uv", t0, t0 + HOUR, HOUR, &out, NULL, 0), 0);
    cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItem(out, "items"), 0);
    assert_int_equal((int64_t)cJSON_GetObjectItem(it, "c")->valuedouble, 5);
    assert_true(cJSON_GetObjectItem(it, "a")->valuedouble ==
                cJSON_GetObjectItem(it, "s")->valuedouble / 5);
    cJSON_Delete(out);
    char why[128] = "";
    assert_int_equal(cf_history_rollup(h, "uv_no", t0, t0 + HOUR, HOUR, &out, why, sizeof why), -EDOM);
    assert_string_equal(why, "column mx (MAX(x)) cannot");
    cf_history_close(h);
}

/* A view with two sketch columns: rows carry a container of sketches, and
 * rollups from the hourly pre-aggregates (late revisions included) equal
 * the row scan, each column its own union. */
static void two_sketch_columns_roll_up_separately(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_define_view(h, "uv2", "n", "du,dp", NULL, false), 0);
    assert_int_equal(cf_history_start(h), 0);
    int64_t t0 = 501 * HOUR;    /* a multiple of the 3-hour step */
    for (int w = 0; w < 6; w++)
        for (uint32_t rev = 0; rev < 2; rev++) {
            cf_hll *sk[2] = {cf_hll_new(), cf_hll_new()};
            for (int u = 0; u < 3 + w + (int)rev; u++)
                assert_true(cf_hll_add(sk[0], (uint64_t)(u + w) * 0x9e3779b97f4a7c15ull + 7) >= 0);
            for (int p = 0; p < 1 + (int)rev; p++)
                assert_true(cf_hll_add(sk[1], (uint64_t)(p + 1000) * 0x9e3779b97f4a7c15ull + 7) >= 0);
            cf_buf b = {0};
            assert_int_equal(cf_hroll_sketches_encode(sk, 2, &b), 0);
            char cols[64];
            snprintf(cols, sizeof cols, "{\"n\":%d}", 10 + w + (int)rev);
            int64_t start = t0 + (w / 2) * HOUR + (w % 2) * 1000;
            cf_history_row r = {.view = "uv2", .start = start, .end = start + 1000, .group = "[]",
                                .group_len = 2, .revision = rev, .cols = cols,
                                .cols_len = strlen(cols), .sketch = b.data, .sketch_len = b.len};
            assert_int_equal(cf_history_offer(h, &r), 0);
            cf_buf_free(&b);
            cf_hll_free(sk[0]);
            cf_hll_free(sk[1]);
        }
    settle(h);
    for (int scan = 0; scan < 2; scan++) {
        cf_history_set_rollup_scan(h, scan);
        cJSON *out = NULL;
        assert_int_equal(cf_history_rollup(h, "uv2", t0, t0 + 3 * HOUR, 3 * HOUR, &out, NULL, 0), 0);
        cJSON *it = cJSON_GetArrayItem(cJSON_GetObjectItem(out, "items"), 0);
        /* Newest revisions: n = sum of 11 + w, users 0..(3+5+1)-1+5, pages 2. */
        assert_int_equal((int)cJSON_GetObjectItem(it, "n")->valuedouble, 6 * 11 + 15);
        assert_int_equal((int)cJSON_GetObjectItem(it, "du")->valuedouble, 14);
        assert_int_equal((int)cJSON_GetObjectItem(it, "dp")->valuedouble, 2);
        cJSON_Delete(out);
    }
    cf_history_set_rollup_scan(h, false);
    cf_history_close(h);
}

/* A v2 history.db (no views.meta) is upgraded in place; its rows stay. */
static void a_v2_database_is_upgraded(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, V1_SCHEMA, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "INSERT INTO results VALUES ('tumbling', 0, 1000, '/p', 0,"
                                      " '{\"count\":2,\"unique_users\":1}', NULL);"
                                      "PRAGMA user_version=2;", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(sql_long(f, "PRAGMA user_version"), 3);
    assert_int_equal(sql_long(f, "SELECT count(*) FROM views WHERE meta IS NULL"), 1);
    assert_int_equal(count_rows(f), 1);
    cf_history_close(h);
    /* Opening again changes nothing. */
    h = open_h(f, 0, 1 << 20);
    assert_int_equal(sql_long(f, "PRAGMA user_version"), 3);
    cf_history_close(h);
}

static void a_newer_schema_is_refused(void **state)
{
    fixture *f = *state;
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA user_version=7", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    char err[256] = "";
    assert_null(cf_history_open(f->path, 0, 1024, err, sizeof err));
    assert_non_null(strstr(err, "newer schema"));
}

/* A definition's additive columns are a comma-separated list of up to 32
 * identifiers (spliced into the rollup's json paths), which may be empty;
 * anything else is refused before it reaches the database. */
static void additive_lists_are_checked(void **state)
{
    fixture *f = *state;
    cf_history *h = open_h(f, 0, 1 << 20);
    assert_int_equal(cf_history_define_view(h, "v_none", NULL, NULL, NULL, false), 0);
    assert_int_equal(cf_history_define_view(h, "v_empty", "", NULL, NULL, false), 0);
    assert_int_equal(cf_history_define_view(h, "v_two", "a,b_2", NULL, NULL, false), 0);
    assert_int_equal(cf_history_define_view(h, "v_space", "a b", NULL, NULL, false), -EINVAL);
    assert_int_equal(cf_history_define_view(h, "v_gap", "a,,b", NULL, NULL, false), -EINVAL);
    assert_int_equal(cf_history_define_view(h, "v_digit", "1a", NULL, NULL, false), -EINVAL);
    char list[33 * 4] = "";
    for (int i = 0; i < 33; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%sc%d", i ? "," : "", i);
    assert_int_equal(cf_history_define_view(h, "v_33", list, NULL, NULL, false), -EINVAL);
    *strrchr(list, ',') = '\0';   /* 32 columns */
    assert_int_equal(cf_history_define_view(h, "v_32", list, NULL, NULL, false), 0);
    /* Only the accepted ones are stored. */
    char *meta = NULL;
    assert_int_equal(cf_history_view_meta(h, "v_32", &meta), 0);
    assert_int_equal(cf_history_view_meta(h, "v_none", &meta), 0);
    assert_int_equal(cf_history_view_meta(h, "v_33", &meta), -ENOENT);
    assert_int_equal(cf_history_view_meta(h, "v_gap", &meta), -ENOENT);
    assert_null(meta);
    cf_history_close(h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writes_are_idempotent_and_scans_keep_the_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(rollup_sums_and_merges_sketches, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_follows_the_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_queue_spills_and_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_large_spill_is_read_back_in_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(a_newer_schema_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(late_revisions_give_the_full_recompute, setup, teardown),
        cmocka_unit_test_setup_teardown(a_v1_database_is_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_deletes_rollup_rows, setup, teardown),
        cmocka_unit_test_setup_teardown(user_views_are_declared_while_running, setup, teardown),
        cmocka_unit_test_setup_teardown(a_v2_database_is_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(two_sketch_columns_roll_up_separately, setup, teardown),
        cmocka_unit_test_setup_teardown(a_new_file_has_large_pages_an_old_one_keeps_its_own, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(positions_are_stored_and_kept_for_their_shards_and_key,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(additive_lists_are_checked, setup, teardown),
        cmocka_unit_test_setup_teardown(recovery_defers_checkpoints_until_it_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_queue_commits_without_cache_spills, setup, teardown),
        cmocka_unit_test_setup_teardown(recovery_writes_in_large_transactions, setup, teardown),
    };
    return cmocka_run_group_tests_name("history", tests, NULL, NULL);
}
