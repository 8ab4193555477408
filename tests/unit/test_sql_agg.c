/* Unit tests for sql_agg: every aggregate kind, NULL skipping, SUM's
 * BIGINT-to-DOUBLE switch, ties of EARLIEST/LATEST by arrival, distinct
 * counts against cf_hll, TOPK exactness and its Space-Saving bound,
 * DECAYED_COUNT against the formula, merge == adding both inputs, and
 * save/load round trips with malformed inputs rejected. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_buf.h"
#include "cf_hash.h"
#include "cf_hll.h"
#include "sql_agg.h"
#include "unit_util.h"

static uint64_t rng_state;

static uint64_t rng(void) { return uu_splitmix64(&rng_state); }

typedef struct agg {
    sql_agg_set *set;
    void *st;
} agg;

static agg agg_make(const sql_agg_spec *specs, uint32_t n)
{
    agg a;
    a.set = sql_agg_set_new(specs, n);
    assert_non_null(a.set);
    a.st = malloc(sql_agg_state_size(a.set));
    assert_non_null(a.st);
    sql_agg_init(a.set, a.st);
    return a;
}

static void agg_drop(agg *a)
{
    sql_agg_fini(a->set, a->st);
    free(a->st);
    sql_agg_set_free(a->set);
}

/* Every aggregate gets the same argument. */
static void add_all(agg *a, sql_value v, int64_t ts, uint64_t arrival)
{
    sql_value args[64];
    for (uint32_t i = 0; i < sql_agg_set_count(a->set); i++)
        args[i] = v;
    assert_int_equal(sql_agg_add(a->set, a->st, args, ts, arrival), 0);
}

static void results(const agg *a, int64_t now, cf_buf *scratch, sql_value *out)
{
    cf_buf_reset(scratch);
    assert_int_equal(sql_agg_results(a->set, a->st, now, scratch, out), 0);
}

static void test_names_and_specs(void **state)
{
    (void)state;
    assert_string_equal(sql_agg_name(SQL_AGG_COUNT_STAR), "COUNT(*)");
    assert_string_equal(sql_agg_name(SQL_AGG_TOPK), "TOPK");
    assert_null(sql_agg_name(SQL_AGG_KIND_COUNT_));
    assert_false(sql_agg_takes_arg(SQL_AGG_DECAYED_COUNT));
    assert_true(sql_agg_takes_arg(SQL_AGG_EARLIEST));
    sql_agg_spec bad[] = {{SQL_AGG_TOPK, 0}, {SQL_AGG_TOPK, SQL_AGG_TOPK_MAX + 1},
                          {SQL_AGG_DECAYED_COUNT, 0}, {SQL_AGG_COUNT, 3},
                          {SQL_AGG_KIND_COUNT_, 0}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_null(sql_agg_set_new(&bad[i], 1));
    assert_null(sql_agg_set_new(bad, 0));
    sql_agg_spec ok = {SQL_AGG_TOPK, 3};
    sql_agg_set *s = sql_agg_set_new(&ok, 1);
    assert_non_null(s);
    assert_int_equal(sql_agg_state_size(s) % 8, 0);
    sql_agg_set_free(s);
}

/* NULL in every aggregate: skipped by all but COUNT(*) (DECAYED_COUNT
 * counts rows, it has no argument). */
static void test_nulls_everywhere(void **state)
{
    (void)state;
    sql_agg_spec specs[SQL_AGG_KIND_COUNT_];
    for (int k = 0; k < SQL_AGG_KIND_COUNT_; k++) {
        specs[k].kind = (sql_agg_kind)k;
        specs[k].param = k == SQL_AGG_TOPK ? 3 : k == SQL_AGG_DECAYED_COUNT ? 1000 : 0;
    }
    agg a = agg_make(specs, SQL_AGG_KIND_COUNT_);
    cf_buf scratch = {0};
    sql_value r[SQL_AGG_KIND_COUNT_];
    results(&a, 0, &scratch, r);
    assert_int_equal(r[SQL_AGG_COUNT_STAR].u.i, 0);
    assert_int_equal(r[SQL_AGG_COUNT].u.i, 0);
    assert_int_equal(r[SQL_AGG_COUNT_DISTINCT].u.i, 0);
    assert_int_equal(r[SQL_AGG_SUM].type, SQL_NULL);
    assert_int_equal(r[SQL_AGG_AVG].type, SQL_NULL);
    assert_int_equal(r[SQL_AGG_MIN].type, SQL_NULL);
    assert_int_equal(r[SQL_AGG_EARLIEST].type, SQL_NULL);
    assert_int_equal(r[SQL_AGG_TOPK].type, SQL_ARRAY);
    assert_int_equal(r[SQL_AGG_TOPK].len, 2); /* [] */
    assert_true(r[SQL_AGG_DECAYED_COUNT].u.d == 0.0);

    for (int i = 0; i < 3; i++)
        add_all(&a, sql_null(), 1000 * i, (uint64_t)i);
    add_all(&a, sql_bigint(7), 5000, 3);
    results(&a, 5000, &scratch, r);
    assert_int_equal(r[SQL_AGG_COUNT_STAR].u.i, 4);
    assert_int_equal(r[SQL_AGG_COUNT].u.i, 1);
    assert_int_equal(r[SQL_AGG_COUNT_DISTINCT].u.i, 1);
    assert_int_equal(r[SQL_AGG_SUM].type, SQL_BIGINT);
    assert_int_equal(r[SQL_AGG_SUM].u.i, 7);
    assert_true(r[SQL_AGG_AVG].u.d == 7.0);
    assert_int_equal(r[SQL_AGG_MIN].u.i, 7);
    assert_int_equal(r[SQL_AGG_MAX].u.i, 7);
    assert_int_equal(r[SQL_AGG_EARLIEST].u.i, 7); /* the NULL rows were earlier */
    assert_int_equal(r[SQL_AGG_LATEST].u.i, 7);
    assert_memory_equal(r[SQL_AGG_TOPK].u.s, "[{\"value\":7,\"count\":1}]", r[SQL_AGG_TOPK].len);
    /* four rows at 0, 1, 2 and 5 half-lives... of 1 s at T = 5 s */
    double want = exp2(-5.0) + exp2(-4.0) + exp2(-3.0) + 1.0;
    assert_true(fabs(r[SQL_AGG_DECAYED_COUNT].u.d - want) <= 1e-12 * want);
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static void test_sum_avg(void **state)
{
    (void)state;
    sql_agg_spec specs[] = {{SQL_AGG_SUM, 0}, {SQL_AGG_AVG, 0}};
    agg a = agg_make(specs, 2);
    cf_buf scratch = {0};
    sql_value r[2];
    add_all(&a, sql_bigint(INT64_MAX - 1), 0, 0);
    add_all(&a, sql_bigint(1), 0, 1);
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].type, SQL_BIGINT);
    assert_true(r[0].u.i == INT64_MAX);
    add_all(&a, sql_bigint(1), 0, 2); /* no longer fits: DOUBLE from now on */
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].type, SQL_DOUBLE);
    assert_true(r[0].u.d == 9223372036854775808.0);
    assert_true(r[1].u.d == 9223372036854775808.0 / 3);
    agg_drop(&a);

    a = agg_make(specs, 2);
    add_all(&a, sql_bigint(3), 0, 0);
    add_all(&a, sql_double(0.5), 0, 1);
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].type, SQL_DOUBLE);
    assert_true(r[0].u.d == 3.5);
    assert_true(r[1].u.d == 1.75);
    sql_value s = sql_string("x", 1), args[2] = {s, s};
    assert_int_equal(sql_agg_add(a.set, a.st, args, 0, 2), -EINVAL);
    results(&a, 0, &scratch, r);
    assert_true(r[0].u.d == 3.5);
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static void test_min_max(void **state)
{
    (void)state;
    sql_agg_spec specs[] = {{SQL_AGG_MIN, 0}, {SQL_AGG_MAX, 0}};
    cf_buf scratch = {0};
    sql_value r[2];
    agg a = agg_make(specs, 2);
    add_all(&a, sql_bigint(5), 0, 0);
    add_all(&a, sql_double(2.5), 0, 1);
    add_all(&a, sql_bigint(9), 0, 2);
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].type, SQL_DOUBLE);
    assert_true(r[0].u.d == 2.5);
    assert_int_equal(r[1].u.i, 9);
    agg_drop(&a);

    a = agg_make(specs, 2);
    const char *words[] = {"pear", "apple", "applesauce", "zebra", "app"};
    for (int i = 0; i < 5; i++) {
        char buf[16];
        strcpy(buf, words[i]); /* the state must copy: the row's bytes go away */
        add_all(&a, sql_string(buf, (uint32_t)strlen(buf)), 0, (uint64_t)i);
        memset(buf, '#', sizeof buf);
    }
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].len, 3);
    assert_memory_equal(r[0].u.s, "app", 3);
    assert_int_equal(r[1].len, 5);
    assert_memory_equal(r[1].u.s, "zebra", 5);
    assert_int_equal(sql_agg_bytes(a.set, a.st), 0); /* short strings live inline */
    char longer[48];
    memset(longer, 'z', sizeof longer); /* beyond the inline bytes: on the heap */
    add_all(&a, sql_string(longer, sizeof longer), 0, 9);
    memset(longer, '#', sizeof longer);
    results(&a, 0, &scratch, r);
    assert_int_equal(r[1].len, 48);
    assert_true(r[1].u.s[0] == 'z' && r[1].u.s[47] == 'z');
    assert_true(sql_agg_bytes(a.set, a.st) >= 48);
    agg_drop(&a);

    a = agg_make(specs, 2);
    add_all(&a, sql_timestamp(1700000000000), 0, 0);
    add_all(&a, sql_timestamp(1600000000000), 0, 1);
    results(&a, 0, &scratch, r);
    assert_int_equal(r[0].type, SQL_TIMESTAMP);
    assert_true(r[0].u.i == 1600000000000);
    assert_true(r[1].u.i == 1700000000000);
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static void test_earliest_latest_ties(void **state)
{
    (void)state;
    sql_agg_spec specs[] = {{SQL_AGG_EARLIEST, 0}, {SQL_AGG_LATEST, 0}};
    agg a = agg_make(specs, 2);
    cf_buf scratch = {0};
    sql_value r[2];
    /* arrival order b, a, c, d; timestamps 20, 10, 10, 20 */
    add_all(&a, sql_string("b", 1), 20, 0);
    add_all(&a, sql_string("a", 1), 10, 1);
    add_all(&a, sql_string("c", 1), 10, 2);
    add_all(&a, sql_string("d", 1), 20, 3);
    results(&a, 0, &scratch, r);
    assert_memory_equal(r[0].u.s, "a", 1); /* first to arrive among ts 10 */
    assert_memory_equal(r[1].u.s, "d", 1); /* last to arrive among ts 20 */
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static void test_distinct_matches_hll(void **state)
{
    (void)state;
    sql_agg_spec spec = {SQL_AGG_COUNT_DISTINCT, 0};
    cf_buf scratch = {0};
    sql_value r;
    uint32_t sizes[] = {1, 2, 3, 99, 100, 512, 513, 5000, 40000};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        agg a = agg_make(&spec, 1);
        cf_hll *h = cf_hll_new();
        for (uint32_t rep = 0; rep < 2; rep++)
            for (uint32_t i = 0; i < sizes[si]; i++) {
                char id[16];
                int n = snprintf(id, sizeof id, "u%u", i);
                add_all(&a, sql_string(id, (uint32_t)n), 0, i);
                cf_hll_add(h, cf_hash64(id, (size_t)n, 0));
            }
        results(&a, 0, &scratch, &r);
        assert_int_equal((uint64_t)r.u.i, cf_hll_count(h));
        if (sizes[si] <= 512)
            assert_int_equal(r.u.i, sizes[si]);
        else
            assert_true(fabs((double)r.u.i - sizes[si]) <= 0.02 * sizes[si]);
        cf_hll_free(h);
        agg_drop(&a);
    }
    /* Types are kept apart: 1 and "1" and 1.0 are three values. */
    agg a = agg_make(&spec, 1);
    add_all(&a, sql_bigint(1), 0, 0);
    add_all(&a, sql_string("1", 1), 0, 1);
    add_all(&a, sql_double(1.0), 0, 2);
    add_all(&a, sql_double(-0.0), 0, 3);
    add_all(&a, sql_double(0.0), 0, 4);
    results(&a, 0, &scratch, &r);
    assert_int_equal(r.u.i, 4);
    cf_buf_free(&scratch);
    agg_drop(&a);
}

/* The sketch a COUNT(DISTINCT) hands to history: small sets (inline
 * hashes) and large ones (HyperLogLog) both load as the sketch of the very
 * values, and merging two states' sketches counts their union. */
static void test_distinct_sketch_save(void **state)
{
    (void)state;
    sql_agg_spec specs[] = {{SQL_AGG_COUNT, 0}, {SQL_AGG_COUNT_DISTINCT, 0}};
    uint32_t sizes[] = {0, 3, 700};
    for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
        agg a = agg_make(specs, 2);
        cf_hll *want = cf_hll_new();
        for (uint32_t i = 0; i < sizes[si]; i++) {
            char id[16];
            int n = snprintf(id, sizeof id, "u%u", i % (sizes[si] / 2 + 1));
            add_all(&a, sql_string(id, (uint32_t)n), 0, i);
            cf_hll_add(want, cf_hash64(id, (size_t)n, 0));
        }
        cf_buf b = {0};
        assert_int_equal(sql_agg_sketch_save(a.set, a.st, 0, &b), -EINVAL);  /* not distinct */
        assert_int_equal(sql_agg_sketch_save(a.set, a.st, 1, &b), 0);
        cf_reader in;
        cf_reader_init(&in, b.data, b.len);
        cf_hll *got = cf_hll_load(&in);
        assert_non_null(got);
        assert_int_equal(cf_hll_count(got), cf_hll_count(want));
        /* Merged with a disjoint set: the union's count. */
        cf_hll *other = cf_hll_new();
        for (uint32_t i = 0; i < 5; i++)
            cf_hll_add(other, cf_hash64("zz", 2, i + 1));
        cf_reader_init(&in, b.data, b.len);
        assert_int_equal(cf_hll_merge_encoded(other, &in), 0);
        assert_int_equal(cf_hll_merge(want, other), 0);
        assert_int_equal(cf_hll_count(other), cf_hll_count(want));
        cf_hll_free(other);
        cf_hll_free(got);
        cf_hll_free(want);
        cf_buf_free(&b);
        agg_drop(&a);
    }
}

static void test_topk_exact_and_json(void **state)
{
    (void)state;
    sql_agg_spec spec = {SQL_AGG_TOPK, 2};
    agg a = agg_make(&spec, 1);
    cf_buf scratch = {0};
    sql_value r;
    const char *vals[] = {"b", "a\"q", "b", "c", "a\"q", "b", "c"};
    for (int i = 0; i < 7; i++)
        add_all(&a, sql_string(vals[i], (uint32_t)strlen(vals[i])), 0, (uint64_t)i);
    results(&a, 0, &scratch, &r);
    const char *want = "[{\"value\":\"b\",\"count\":3},{\"value\":\"a\\\"q\",\"count\":2}]";
    assert_int_equal(r.len, strlen(want));
    assert_memory_equal(r.u.s, want, r.len);
    agg_drop(&a);

    sql_agg_spec d = {SQL_AGG_TOPK, 3};
    a = agg_make(&d, 1);
    add_all(&a, sql_double(0.1), 0, 0);
    add_all(&a, sql_double(-2.5e-7), 0, 1);
    add_all(&a, sql_bool(true), 0, 2);
    results(&a, 0, &scratch, &r);
    want = "[{\"value\":-2.5e-7,\"count\":1},{\"value\":1e-1,\"count\":1},"
           "{\"value\":true,\"count\":1}]";
    assert_int_equal(r.len, strlen(want));
    assert_memory_equal(r.u.s, want, r.len);
    cf_buf_free(&scratch);
    agg_drop(&a);
}

/* Beyond max(8k, 64) distinct values: every value more frequent than N/m is
 * listed, counts over by at most N/m. */
static void test_topk_space_saving_bound(void **state)
{
    (void)state;
    sql_agg_spec spec = {SQL_AGG_TOPK, 3};
    agg a = agg_make(&spec, 1);
    rng_state = 7;
    uint64_t truth[4] = {0}, total = 0;
    for (int i = 0; i < 20000; i++) {
        int64_t v;
        uint64_t x = rng() % 100;
        if (x < 12)
            v = 0;
        else if (x < 20)
            v = 1;
        else if (x < 26)
            v = 2;
        else
            v = 100 + (int64_t)(rng() % 5000); /* long tail */
        if (v < 4)
            truth[v]++;
        add_all(&a, sql_bigint(v), 0, (uint64_t)i);
        total++;
    }
    cf_buf scratch = {0};
    sql_value r;
    results(&a, 0, &scratch, &r);
    double bound = (double)total / 64;
    const char *p = r.u.s;
    for (int64_t v = 0; v < 3; v++) {
        char key[32];
        snprintf(key, sizeof key, "{\"value\":%lld,\"count\":", (long long)v);
        const char *at = strstr(p, key);
        assert_non_null(at);
        assert_true(at < r.u.s + r.len);
        unsigned long long c = strtoull(at + strlen(key), NULL, 10);
        assert_true(c >= truth[v] && (double)c <= (double)truth[v] + bound);
    }
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static double brute_decay(const int64_t *ts, int n, int64_t h, int64_t T)
{
    double s = 0;
    for (int i = 0; i < n; i++)
        s += exp2(-(double)(T - ts[i]) / (double)h);
    return s;
}

static void test_decayed_count(void **state)
{
    (void)state;
    int64_t h = 60000;
    sql_agg_spec spec = {SQL_AGG_DECAYED_COUNT, h};
    agg a = agg_make(&spec, 1);
    cf_buf scratch = {0};
    sql_value r;
    rng_state = 11;
    enum { N = 3000 };
    int64_t ts[N];
    int64_t t0 = 1790000000000;
    for (int i = 0; i < N; i++) {
        /* days of event time with disorder: exercises the rescaling */
        ts[i] = t0 + (int64_t)i * 60000 - (int64_t)(rng() % 600000);
        add_all(&a, sql_null(), ts[i], (uint64_t)i);
        if (i % 500 == 499) {
            int64_t T = t0 + (int64_t)i * 60000 + 1234;
            results(&a, T, &scratch, &r);
            double want = brute_decay(ts, i + 1, h, T);
            assert_true(fabs(r.u.d - want) <= 1e-9 * want);
        }
    }
    cf_buf_free(&scratch);
    agg_drop(&a);
}

static const sql_agg_spec all_specs[] = {
    {SQL_AGG_COUNT_STAR, 0}, {SQL_AGG_COUNT, 0},    {SQL_AGG_COUNT_DISTINCT, 0},
    {SQL_AGG_SUM, 0},        {SQL_AGG_AVG, 0},      {SQL_AGG_MIN, 0},
    {SQL_AGG_MAX, 0},        {SQL_AGG_EARLIEST, 0}, {SQL_AGG_LATEST, 0},
    {SQL_AGG_TOPK, 4},       {SQL_AGG_DECAYED_COUNT, 30000},
};
#define NALL (sizeof all_specs / sizeof *all_specs)

static sql_value random_value(char *buf)
{
    uint64_t x = rng() % 10;
    if (x == 0)
        return sql_null();
    if (x < 5)
        return sql_bigint((int64_t)(rng() % 50) - 10);
    int n = snprintf(buf, 16, "s%u", (unsigned)(rng() % 700));
    return sql_string(buf, (uint32_t)n);
}

/* Results must agree exactly (DOUBLE up to rounding). */
static void assert_same_results(const sql_value *x, const sql_value *y, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        assert_int_equal(x[i].type, y[i].type);
        if (x[i].type == SQL_DOUBLE)
            assert_true(fabs(x[i].u.d - y[i].u.d) <= 1e-9 * fabs(y[i].u.d) + 1e-12);
        else if (x[i].type == SQL_STRING || x[i].type == SQL_ARRAY) {
            assert_int_equal(x[i].len, y[i].len);
            assert_memory_equal(x[i].u.s, y[i].u.s, x[i].len);
        } else if (x[i].type != SQL_NULL)
            assert_true(x[i].u.i == y[i].u.i);
    }
}

/* One state fed everything == two states fed halves, merged; and the
 * merged state survives save/load unchanged. Separate numeric and string
 * columns, as a typed plan would give (SUM over strings is not allowed). */
static void test_merge_and_save_load(void **state)
{
    (void)state;
    for (uint64_t seed = 1; seed <= 6; seed++) {
        rng_state = seed;
        agg whole = agg_make(all_specs, NALL), a = agg_make(all_specs, NALL),
            b = agg_make(all_specs, NALL);
        int n = seed < 4 ? 60 : 3000;
        for (int i = 0; i < n; i++) {
            char buf[16];
            sql_value v = random_value(buf);
            sql_value args[NALL];
            for (size_t k = 0; k < NALL; k++)
                args[k] = v;
            if (v.type == SQL_STRING)
                args[3] = args[4] = sql_bigint(1); /* SUM/AVG get numbers */
            int64_t ts = 1000000 + (int64_t)(rng() % 100000);
            assert_int_equal(sql_agg_add(whole.set, whole.st, args, ts, (uint64_t)i), 0);
            agg *half = rng() % 2 ? &a : &b;
            assert_int_equal(sql_agg_add(half->set, half->st, args, ts, (uint64_t)i), 0);
        }
        assert_int_equal(sql_agg_merge(a.set, a.st, b.st), 0);
        cf_buf s1 = {0}, s2 = {0};
        sql_value r1[NALL], r2[NALL];
        results(&whole, 1100000, &s1, r1);
        results(&a, 1100000, &s2, r2);
        if (n <= 60) /* TOPK exact below 64 distinct values */
            assert_same_results(r1, r2, NALL);
        else
            assert_same_results(r1, r2, NALL - 2); /* beyond: bounded error */

        cf_buf saved = {0};
        assert_int_equal(sql_agg_save(a.set, a.st, &saved), 0);
        void *st = malloc(sql_agg_state_size(a.set));
        cf_reader rd;
        cf_reader_init(&rd, saved.data, saved.len);
        assert_int_equal(sql_agg_load(a.set, st, &rd), 0);
        assert_int_equal(rd.left, 0);
        cf_buf s3 = {0};
        sql_value r3[NALL];
        cf_buf_reset(&s2);
        assert_int_equal(sql_agg_results(a.set, a.st, 1100000, &s2, r2), 0);
        assert_int_equal(sql_agg_results(a.set, st, 1100000, &s3, r3), 0);
        assert_same_results(r2, r3, NALL);
        /* Same contents; TOPK's table may have grown differently. */
        assert_true(sql_agg_bytes(a.set, st) > 0);
        /* Every truncation is rejected, leaving an empty, freeable state. */
        for (size_t cut = 0; cut < saved.len; cut += 1 + cut / 8) {
            void *t = malloc(sql_agg_state_size(a.set));
            cf_reader_init(&rd, saved.data, cut);
            assert_int_equal(sql_agg_load(a.set, t, &rd), -EINVAL);
            sql_agg_fini(a.set, t);
            free(t);
        }
        /* A flipped bit is refused or gives a usable state (ASan in CI). */
        for (size_t pos = 0; pos < saved.len && seed < 4; pos++) {
            uint8_t keep = saved.data[pos];
            saved.data[pos] ^= (uint8_t)(1u << (pos % 8));
            void *t = malloc(sql_agg_state_size(a.set));
            cf_reader_init(&rd, saved.data, saved.len);
            if (sql_agg_load(a.set, t, &rd) == 0) {
                sql_value rr[NALL];
                cf_buf sc = {0};
                (void)sql_agg_results(a.set, t, 1100000, &sc, rr);
                sql_value args[NALL];
                for (size_t k = 0; k < NALL; k++)
                    args[k] = sql_bigint(3);
                (void)sql_agg_add(a.set, t, args, 1, 1);
                cf_buf_free(&sc);
            }
            sql_agg_fini(a.set, t);
            free(t);
            saved.data[pos] = keep;
        }
        sql_agg_fini(a.set, st);
        free(st);
        cf_buf_free(&saved);
        cf_buf_free(&s1);
        cf_buf_free(&s2);
        cf_buf_free(&s3);
        agg_drop(&whole);
        agg_drop(&a);
        agg_drop(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_and_specs),
        cmocka_unit_test(test_nulls_everywhere),
        cmocka_unit_test(test_sum_avg),
        cmocka_unit_test(test_min_max),
        cmocka_unit_test(test_earliest_latest_ties),
        cmocka_unit_test(test_distinct_matches_hll),
        cmocka_unit_test(test_distinct_sketch_save),
        cmocka_unit_test(test_topk_exact_and_json),
        cmocka_unit_test(test_topk_space_saving_bound),
        cmocka_unit_test(test_decayed_count),
        cmocka_unit_test(test_merge_and_save_load),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
