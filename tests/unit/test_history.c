/* Unit tests of server/history.c: idempotent writes (the same row twice is
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
#include <sqlite3.h>

#include "cf_buf.h"
#include "cf_hll.h"
#include "history.h"

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st; (void)flag; (void)ftw;
    return remove(path);
}

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
    nftw(f->dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
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

static long count_rows(const fixture *f)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM results", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
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
    assert_int_equal(cf_history_rollup(h, "tumbling", 0, 10000, 2000, &out), 0);
    cJSON *items = cJSON_GetObjectItemCaseSensitive(out, "items");
    assert_int_equal(cJSON_GetArraySize(items), 2);
    assert_true(item_num(items, 0, "start") == 0 && item_num(items, 0, "end") == 2000);
    assert_true(item_num(items, 0, "count") == 10);        /* 6 + 4 */
    assert_true(item_num(items, 0, "unique_users") == 5);  /* {0..2} u {2..4} */
    assert_true(item_num(items, 1, "start") == 2000);
    assert_true(item_num(items, 1, "count") == 7 && item_num(items, 1, "unique_users") == 1);
    cJSON_Delete(out);
    /* end <= to: the window ending at 3000 is out of [0, 2999]. */
    assert_int_equal(cf_history_rollup(h, "tumbling", 0, 2999, 2000, &out), 0);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(out, "items")), 1);
    cJSON_Delete(out);
    assert_int_equal(cf_history_rollup(h, "nosuch", 0, 1, 1000, &out), -ENOENT);
    assert_int_equal(cf_history_rollup(h, "tumbling", 5, 1, 1000, &out), -EINVAL);
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
    cf_history *h = open_h(f, 0, 1);
    cf_history_test_stall(h, 20);
    assert_int_equal(cf_history_start(h), 0);
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
    cf_history *h = open_h(f, 0, 1);
    cf_history_test_stall(h, 50);
    assert_int_equal(cf_history_start(h), 0);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(writes_are_idempotent_and_scans_keep_the_newest, setup, teardown),
        cmocka_unit_test_setup_teardown(rollup_sums_and_merges_sketches, setup, teardown),
        cmocka_unit_test_setup_teardown(retention_follows_the_clock, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_queue_spills_and_loses_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(a_large_spill_is_read_back_in_chunks, setup, teardown),
        cmocka_unit_test_setup_teardown(a_newer_schema_is_refused, setup, teardown),
    };
    return cmocka_run_group_tests_name("history", tests, NULL, NULL);
}
