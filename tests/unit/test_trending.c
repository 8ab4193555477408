/* Unit tests for cf_trending: decayed scores against a brute-force long
 * double sum over every click, rescaling over days of event time, ranking
 * and ties, exact merge of per-shard top lists, prune boundaries,
 * out-of-order clicks and save/load. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>

#include <cmocka.h>

#include "cf_buf.h"
#include "cf_hash.h"
#include "cf_trending.h"

#define MAX_PAGES 512

/* ---- helpers ------------------------------------------------------------ */

static uint64_t rng_state;

static uint64_t rng(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int64_t rng_range(int64_t lo, int64_t hi) /* inclusive */
{
    return lo + (int64_t)(rng() % (uint64_t)(hi - lo + 1));
}

typedef struct click {
    int page;
    int64_t ts;
} click;

static char page_names[MAX_PAGES][32];

static void init_names(void)
{
    for (int i = 0; i < MAX_PAGES; i++)
        snprintf(page_names[i], sizeof page_names[i], "/p/%d", i);
}

static int add_click(cf_trending *t, int page, int64_t ts)
{
    return cf_trending_add(t, page_names[page], strlen(page_names[page]), ts);
}

/* The exact definition, in long double, over every click seen so far. */
static void brute_scores(const click *c, size_t n, int64_t T, int64_t h, long double *out,
                         int pages)
{
    for (int p = 0; p < pages; p++)
        out[p] = 0.0L;
    for (size_t i = 0; i < n; i++)
        out[c[i].page] += exp2l(-(long double)(T - c[i].ts) / (long double)h);
}

/* |got - want| within 1e-6 relative; contributions below 1e-300 may have
 * underflowed. */
static void assert_close(double got, long double want)
{
    assert_true(isfinite(got));
    assert_true(got >= 0.0);
    long double err = fabsl((long double)got - want);
    if (!(err <= 1e-6L * want + 1e-300L)) {
        fprintf(stderr, "got %.17g want %.17Lg\n", got, want);
        fail();
    }
}

static int page_index(const cf_trend_item *it)
{
    char tmp[32];
    assert_true(it->page_url_len < sizeof tmp);
    memcpy(tmp, it->page_url, it->page_url_len);
    tmp[it->page_url_len] = '\0';
    assert_int_equal(strncmp(tmp, "/p/", 3), 0);
    return atoi(tmp + 3);
}

static int url_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = memcmp(a, b, n);
    if (c)
        return c;
    return (an > bn) - (an < bn);
}

/* Checks every page's score and the top-n ranking against brute force.
 * A rank may differ from brute force only between pages whose exact scores
 * are within 1e-12 relative (a near tie that double rounding may order
 * either way). */
static void check_against_brute(const cf_trending *t, const click *c, size_t n, int64_t T,
                                int64_t h, int pages, size_t topn)
{
    long double want[MAX_PAGES];
    brute_scores(c, n, T, h, want, pages);
    for (int p = 0; p < pages; p++)
        assert_close(cf_trending_score(t, page_names[p], strlen(page_names[p]), T), want[p]);

    /* Expected ranking: pages with a click, by exact score then name. */
    int order[MAX_PAGES];
    int m = 0;
    int seen[MAX_PAGES] = {0};
    for (size_t i = 0; i < n; i++)
        seen[c[i].page] = 1;
    for (int p = 0; p < pages; p++)
        if (seen[p])
            order[m++] = p;
    for (int i = 1; i < m; i++) { /* insertion sort, small m */
        int x = order[i], j = i;
        while (j > 0) {
            int y = order[j - 1];
            int before = want[x] > want[y] ||
                         (want[x] == want[y] &&
                          url_cmp(page_names[x], strlen(page_names[x]), page_names[y],
                                  strlen(page_names[y])) < 0);
            if (!before)
                break;
            order[j] = y;
            j--;
        }
        order[j] = x;
    }
    assert_int_equal(cf_trending_count(t), (size_t)m);

    cf_trend_item items[MAX_PAGES];
    size_t got = cf_trending_top(t, T, topn, items);
    assert_int_equal(got, topn < (size_t)m ? topn : (size_t)m);
    for (size_t i = 0; i < got; i++) {
        int p = page_index(&items[i]);
        assert_close(items[i].score, want[p]);
        if (i > 0) { /* our own order is strict and consistent */
            assert_true(items[i - 1].score > items[i].score ||
                        (items[i - 1].score == items[i].score &&
                         url_cmp(items[i - 1].page_url, items[i - 1].page_url_len,
                                 items[i].page_url, items[i].page_url_len) < 0));
        }
        if (p != order[i]) {
            long double a = want[p], b = want[order[i]];
            assert_true(fabsl(a - b) <= 1e-12L * fmaxl(a, b));
        }
    }
}

static void shuffle(click *c, size_t n)
{
    for (size_t i = n; i > 1; i--) {
        size_t j = (size_t)(rng() % i);
        click tmp = c[i - 1];
        c[i - 1] = c[j];
        c[j] = tmp;
    }
}

/* ---- tests -------------------------------------------------------------- */

static void new_rejects_bad_half_life(void **state)
{
    (void)state;
    assert_null(cf_trending_new(0));
    assert_null(cf_trending_new(-5));
    cf_trending_free(NULL);
    cf_trending *t = cf_trending_new(1);
    assert_non_null(t);
    cf_trending_free(t);
}

static void single_click_decays_by_half_life(void **state)
{
    (void)state;
    cf_trending *t = cf_trending_new(60000);
    cf_trend_item items[4];
    assert_int_equal(cf_trending_top(t, 0, 4, items), 0);
    assert_true(cf_trending_score(t, "/a", 2, 0) == 0.0);

    assert_int_equal(cf_trending_add(t, "/a", 2, 1000), 0);
    assert_true(cf_trending_score(t, "/a", 2, 1000) == 1.0);
    assert_true(cf_trending_score(t, "/a", 2, 61000) == 0.5);
    assert_true(cf_trending_score(t, "/a", 2, 121000) == 0.25);
    assert_true(cf_trending_score(t, "/b", 2, 1000) == 0.0);
    assert_int_equal(cf_trending_add(t, "/a", 2, 61000), 0);
    assert_true(cf_trending_score(t, "/a", 2, 61000) == 1.5);
    assert_int_equal(cf_trending_count(t), 1);
    cf_trending_free(t);
}

/* Random trace over five days with a 60 s half-life, clicks up to 10 min
 * out of order and a moving set of hot pages; checked at several times. */
static void matches_brute_force_over_days(void **state)
{
    (void)state;
    rng_state = 1;
    const int64_t h = 60000, t0 = 1795000000000, span = 5LL * 86400000;
    const int pages = 200;
    const size_t n = 30000;
    click *c = calloc(n, sizeof *c);
    assert_non_null(c);
    cf_trending *t = cf_trending_new(h);
    int64_t max_ts = t0;
    for (size_t i = 0; i < n; i++) {
        int64_t base = t0 + (int64_t)((long double)span * i / n);
        c[i].ts = base - rng_range(0, 600000);
        /* Half of the clicks go to a handful of pages that drift over time. */
        int hot = (int)((i / 3000) % 20);
        c[i].page = (rng() & 1) ? hot * 7 % pages : (int)(rng() % (uint64_t)pages);
        assert_int_equal(add_click(t, c[i].page, c[i].ts), 0);
        if (c[i].ts > max_ts)
            max_ts = c[i].ts;
        if ((i + 1) % 7500 == 0) {
            check_against_brute(t, c, i + 1, max_ts, h, pages, 50);
            check_against_brute(t, c, i + 1, max_ts + 123457, h, pages, 10);
        }
    }
    free(c);
    cf_trending_free(t);
}

/* A 1 s half-life over three days is ~500 rescales; without them the values
 * would overflow to infinity after 1024 s of event time. */
static void rescaling_keeps_scores_exact(void **state)
{
    (void)state;
    rng_state = 2;
    const int64_t h = 1000, t0 = 1795000000000, span = 3LL * 86400000;
    const int pages = 50;
    const size_t n = 20000;
    click *c = calloc(n, sizeof *c);
    assert_non_null(c);
    cf_trending *t = cf_trending_new(h);
    int64_t max_ts = t0;
    for (size_t i = 0; i < n; i++) {
        /* Bursts: 20 clicks within a few seconds, then a jump. */
        int64_t base = t0 + (int64_t)((long double)span * (i / 20) / (n / 20));
        c[i].ts = base + rng_range(0, 4000);
        c[i].page = (int)(rng() % (uint64_t)pages);
        assert_int_equal(add_click(t, c[i].page, c[i].ts), 0);
        if (c[i].ts > max_ts)
            max_ts = c[i].ts;
        if (i % 1000 == 999)
            check_against_brute(t, c, i + 1, max_ts, h, pages, 20);
    }
    /* Every score is finite and non-negative, including long-dead pages. */
    cf_trend_item items[MAX_PAGES];
    size_t got = cf_trending_top(t, max_ts, MAX_PAGES, items);
    assert_int_equal(got, (size_t)pages);
    for (size_t i = 0; i < got; i++)
        assert_true(isfinite(items[i].score) && items[i].score >= 0.0);
    free(c);
    cf_trending_free(t);
}

/* Clicks far before the reference time (days late) and far after it, in
 * both orders. */
static void far_past_and_future_clicks(void **state)
{
    (void)state;
    const int64_t h = 60000, t0 = 1795000000000, day = 86400000;
    click c[] = {
        {0, t0},           {1, t0 - 10 * day}, {0, t0 - 3 * h},  {2, t0 + 3 * day},
        {1, t0 + 3 * day - 5 * h}, {0, t0 - 40 * h}, {3, t0 - 1100 * h},
        {2, t0 + 3 * day - 1}, {3, t0 + 3 * day - 2 * h},
    };
    size_t n = sizeof c / sizeof c[0];
    cf_trending *t = cf_trending_new(h);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(add_click(t, c[i].page, c[i].ts), 0);
    check_against_brute(t, c, n, t0 + 3 * day, h, 4, 4);
    check_against_brute(t, c, n, t0 + 3 * day + 30 * h, h, 4, 2);
    /* Page 0's clicks are 3 days old: they have underflowed, to exactly 0. */
    assert_true(cf_trending_score(t, "/p/0", 4, t0 + 3 * day) == 0.0);
    cf_trending_free(t);
}

/* Timestamps and query times at the ends of int64 never produce a
 * negative, NaN or infinite score. */
static void extreme_times_stay_finite(void **state)
{
    (void)state;
    const int64_t ts[] = {INT64_MIN, INT64_MAX, 0, -1, INT64_MIN + 1, INT64_MAX - 1,
                          1795000000000};
    const int64_t hs[] = {1, 60000, (int64_t)1 << 40};
    for (size_t k = 0; k < 3; k++) {
        cf_trending *t = cf_trending_new(hs[k]);
        assert_non_null(t);
        for (size_t i = 0; i < 7; i++)
            assert_int_equal(cf_trending_add(t, "/x", 2, ts[i]), 0);
        for (size_t i = 0; i < 7; i++)
            assert_int_equal(cf_trending_add(t, page_names[i], strlen(page_names[i]), ts[i]), 0);
        for (size_t i = 0; i < 7; i++) {
            cf_trend_item items[16];
            size_t got = cf_trending_top(t, ts[i], 16, items);
            assert_int_equal(got, 8);
            for (size_t j = 0; j < got; j++)
                assert_true(isfinite(items[j].score) && items[j].score >= 0.0);
            double s = cf_trending_score(t, "/x", 2, ts[i]);
            assert_true(isfinite(s) && s >= 0.0);
        }
        cf_trending_free(t);
    }
}

static void ties_ordered_by_page_url(void **state)
{
    (void)state;
    cf_trending *t = cf_trending_new(60000);
    const char *names[] = {"/b", "/ab", "/a", "/c", "/a/"};
    for (size_t i = 0; i < 5; i++)
        assert_int_equal(cf_trending_add(t, names[i], strlen(names[i]), 5000), 0);
    assert_int_equal(cf_trending_add(t, "/z", 2, 5000), 0);
    assert_int_equal(cf_trending_add(t, "/z", 2, 5000), 0);
    /* Empty page name is a key like any other. */
    assert_int_equal(cf_trending_add(t, "", 0, 5000), 0);
    const char *want[] = {"/z", "", "/a", "/a/", "/ab", "/b", "/c"};
    cf_trend_item items[8];
    assert_int_equal(cf_trending_top(t, 9000, 8, items), 7);
    for (size_t i = 0; i < 7; i++) {
        assert_int_equal(items[i].page_url_len, strlen(want[i]));
        assert_memory_equal(items[i].page_url, want[i], strlen(want[i]) + 1); /* NUL too */
    }
    /* A bounded top keeps the first ones in that order. */
    assert_int_equal(cf_trending_top(t, 9000, 3, items), 3);
    assert_string_equal(items[2].page_url, "/a");
    assert_int_equal(cf_trending_top(t, 9000, 0, items), 0);
    cf_trending_free(t);
}

/* The top-n of 4 per-shard tables, merged, is exactly (bitwise scores) the
 * top-n of one table that saw all clicks, although the tables rescaled at
 * different times. */
static void merge_of_shards_equals_single_table(void **state)
{
    (void)state;
    rng_state = 3;
    const int64_t h = 1000, t0 = 1795000000000;
    const int pages = 300;
    cf_trending *all = cf_trending_new(h);
    cf_trending *shard[4];
    for (int s = 0; s < 4; s++)
        shard[s] = cf_trending_new(h);
    int64_t ts = t0;
    for (int i = 0; i < 20000; i++) {
        ts += rng_range(0, 120); /* ~40 minutes: several rescales */
        int p = (int)(rng() % (uint64_t)pages);
        if (rng() % 4 == 0)
            p = (int)(rng() % 10); /* a few hot pages, some near ties */
        int64_t when = ts - rng_range(0, 3000);
        size_t len = strlen(page_names[p]);
        uint32_t sh = cf_hash_shard(cf_hash64(page_names[p], len, 0), 4);
        assert_int_equal(add_click(all, p, when), 0);
        assert_int_equal(add_click(shard[sh], p, when), 0);
    }
    /* Exact ties across shards: pages 400..403, one click each at ts. */
    for (int p = 400; p < 404; p++) {
        uint32_t sh = cf_hash_shard(cf_hash64(page_names[p], strlen(page_names[p]), 0), 4);
        assert_int_equal(add_click(all, p, ts), 0);
        assert_int_equal(add_click(shard[sh], p, ts), 0);
    }
    const size_t ns[] = {1, 10, 25, 500};
    for (size_t k = 0; k < 4; k++) {
        size_t n = ns[k];
        static cf_trend_item part[4][MAX_PAGES], merged[MAX_PAGES], single[MAX_PAGES];
        const cf_trend_item *lists[4];
        size_t lens[4];
        for (int s = 0; s < 4; s++) {
            lens[s] = cf_trending_top(shard[s], ts, n, part[s]);
            lists[s] = part[s];
        }
        size_t m = cf_trending_merge(lists, lens, 4, n, merged);
        size_t w = cf_trending_top(all, ts, n, single);
        assert_int_equal(m, w);
        for (size_t i = 0; i < m; i++) {
            assert_int_equal(merged[i].page_url_len, single[i].page_url_len);
            assert_memory_equal(merged[i].page_url, single[i].page_url, single[i].page_url_len);
            assert_true(merged[i].score == single[i].score);
        }
    }
    size_t total = 0;
    for (int s = 0; s < 4; s++)
        total += cf_trending_count(shard[s]);
    assert_int_equal(total, cf_trending_count(all));
    for (int s = 0; s < 4; s++)
        cf_trending_free(shard[s]);
    cf_trending_free(all);
}

static void merge_edge_cases(void **state)
{
    (void)state;
    cf_trend_item a[] = {{"/a", 2, 3.0}, {"/c", 2, 1.0}};
    cf_trend_item b[] = {{"/b", 2, 3.0}, {"/d", 2, 2.0}};
    const cf_trend_item *lists[] = {a, b, NULL};
    size_t lens[] = {2, 2, 0};
    cf_trend_item out[8];
    assert_int_equal(cf_trending_merge(lists, lens, 3, 8, out), 4);
    assert_string_equal(out[0].page_url, "/a");
    assert_string_equal(out[1].page_url, "/b");
    assert_string_equal(out[2].page_url, "/d");
    assert_string_equal(out[3].page_url, "/c");
    assert_int_equal(cf_trending_merge(lists, lens, 3, 2, out), 2);
    assert_string_equal(out[1].page_url, "/b");
    assert_int_equal(cf_trending_merge(lists, lens, 0, 8, out), 0);
    assert_int_equal(cf_trending_merge(lists, lens, 3, 0, out), 0);

    /* More lists than the merge tracks on its stack (100 > 64): page i in
     * list i % 100 with score 1000 - i / 3 (ties of three, by name). */
    static cf_trend_item many[100][4];
    static char names[400][8];
    const cf_trend_item *mlists[100];
    size_t mlens[100];
    for (int l = 0; l < 100; l++) {
        mlens[l] = 4;
        mlists[l] = many[l];
    }
    for (int i = 0; i < 400; i++) {
        snprintf(names[i], sizeof names[i], "/%03d", i);
        many[i % 100][i / 100] = (cf_trend_item){names[i], 4, 1000.0 - i / 3};
    }
    cf_trend_item mout[400];
    assert_int_equal(cf_trending_merge(mlists, mlens, 100, 400, mout), 400);
    for (int i = 0; i < 400; i++)
        assert_string_equal(mout[i].page_url, names[i]);
    assert_int_equal(cf_trending_merge(mlists, mlens, 100, 7, mout), 7);
    assert_string_equal(mout[6].page_url, names[6]);
}

static void prune_threshold_boundary(void **state)
{
    (void)state;
    const int64_t h = 60000, T = 1795000000000;
    /* 2^(-398631/60000) = 0.0100000036 >= 0.01; one ms older is below. */
    assert_true(exp2l(-398631.0L / 60000) >= 0.01L);
    assert_true(exp2l(-398632.0L / 60000) < 0.01L);
    cf_trending *t = cf_trending_new(h);
    assert_int_equal(cf_trending_add(t, "/keep", 5, T - 398631), 0);
    assert_int_equal(cf_trending_add(t, "/drop", 5, T - 398632), 0);
    assert_int_equal(cf_trending_add(t, "/half", 5, T - h), 0);
    cf_trending_prune(t, T, 0.01);
    assert_int_equal(cf_trending_count(t), 2);
    assert_true(cf_trending_score(t, "/drop", 5, T) == 0.0);
    assert_true(cf_trending_score(t, "/keep", 5, T) >= 0.01);
    /* An exact score equal to the threshold is kept; one ulp above drops. */
    assert_true(cf_trending_score(t, "/half", 5, T) == 0.5);
    cf_trending_prune(t, T, 0.5);
    assert_int_equal(cf_trending_count(t), 1);
    cf_trending_prune(t, T, nextafter(0.5, 1.0));
    assert_int_equal(cf_trending_count(t), 0);
    cf_trend_item items[2];
    assert_int_equal(cf_trending_top(t, T, 2, items), 0);
    /* The emptied table takes new clicks. */
    assert_int_equal(cf_trending_add(t, "/half", 5, T), 0);
    assert_true(cf_trending_score(t, "/half", 5, T) == 1.0);
    cf_trending_free(t);
}

/* Pruning many pages out of a table keeps every survivor reachable with its
 * score (backward-shift deletion), and shrinks the table. */
static void prune_many_keeps_survivors(void **state)
{
    (void)state;
    const int64_t h = 1000, T = 1000000;
    cf_trending *t = cf_trending_new(h);
    for (int p = 0; p < MAX_PAGES; p++)
        assert_int_equal(add_click(t, p, T - (p % 2 ? 10 * h : 0)), 0);
    size_t mem_before = cf_trending_memory(t);
    cf_trending_prune(t, T, 0.01); /* 2^-10 < 0.01: odd pages go */
    assert_int_equal(cf_trending_count(t), MAX_PAGES / 2);
    for (int p = 0; p < MAX_PAGES; p++) {
        double s = cf_trending_score(t, page_names[p], strlen(page_names[p]), T);
        assert_true(s == (p % 2 ? 0.0 : 1.0));
    }
    for (int p = 0; p < MAX_PAGES; p += 2)
        assert_int_equal(add_click(t, p, T + h), 0);
    cf_trending_prune(t, T + h, 1.0); /* even pages: 0.5 + 1 */
    assert_int_equal(cf_trending_count(t), MAX_PAGES / 2);
    cf_trending_prune(t, T + 100 * h, 0.01);
    assert_int_equal(cf_trending_count(t), 0);
    assert_true(cf_trending_memory(t) < mem_before);
    cf_trending_free(t);
}

/* The same clicks in time order, reversed and shuffled give the same scores
 * (to rounding) and match brute force. */
static void out_of_order_clicks(void **state)
{
    (void)state;
    rng_state = 4;
    const int64_t h = 60000, t0 = 1795000000000;
    const int pages = 40;
    const size_t n = 4000;
    click *c = calloc(n, sizeof *c);
    assert_non_null(c);
    for (size_t i = 0; i < n; i++) {
        c[i].ts = t0 + (int64_t)i * 5000 + rng_range(0, 4999);
        c[i].page = (int)(rng() % (uint64_t)pages);
    }
    int64_t T = t0 + (int64_t)n * 5000;
    cf_trending *t[3];
    for (int k = 0; k < 3; k++) {
        t[k] = cf_trending_new(h);
        if (k == 1)
            for (size_t i = 0; i < n / 2; i++) {
                click tmp = c[i];
                c[i] = c[n - 1 - i];
                c[n - 1 - i] = tmp;
            }
        if (k == 2)
            shuffle(c, n);
        for (size_t i = 0; i < n; i++)
            assert_int_equal(add_click(t[k], c[i].page, c[i].ts), 0);
        check_against_brute(t[k], c, n, T, h, pages, pages);
    }
    for (int p = 0; p < pages; p++) {
        double a = cf_trending_score(t[0], page_names[p], strlen(page_names[p]), T);
        for (int k = 1; k < 3; k++) {
            double b = cf_trending_score(t[k], page_names[p], strlen(page_names[p]), T);
            assert_true(fabs(a - b) <= 1e-12 * a);
        }
    }
    for (int k = 0; k < 3; k++)
        cf_trending_free(t[k]);
    free(c);
}

/* Clicks on pages the table already holds allocate nothing. */
static void existing_pages_do_not_grow_memory(void **state)
{
    (void)state;
    /* Every page count, including those that fill the table exactly to its
     * growth threshold (12 of 16, 24 of 32, 48 of 64, 96 of 128). */
    for (int pages = 1; pages <= 200; pages++) {
        cf_trending *t = cf_trending_new(60000);
        for (int p = 0; p < pages; p++)
            assert_int_equal(add_click(t, p, 1000), 0);
        size_t mem = cf_trending_memory(t);
        for (int i = 0; i < 2000; i++)
            assert_int_equal(add_click(t, i % pages, 1000 + i), 0);
        assert_int_equal(cf_trending_memory(t), mem);
        assert_int_equal(cf_trending_count(t), (size_t)pages);
        cf_trending_free(t);
    }
}

static void assert_same_top(const cf_trending *a, const cf_trending *b, int64_t T)
{
    static cf_trend_item x[MAX_PAGES], y[MAX_PAGES];
    size_t n = cf_trending_top(a, T, MAX_PAGES, x);
    assert_int_equal(cf_trending_top(b, T, MAX_PAGES, y), n);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(x[i].page_url_len, y[i].page_url_len);
        assert_memory_equal(x[i].page_url, y[i].page_url, x[i].page_url_len);
        assert_true(x[i].score == y[i].score);
    }
}

static cf_trending *reload(const cf_trending *t, int64_t h)
{
    cf_buf b = {0};
    assert_int_equal(cf_trending_save(t, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_trending *u = cf_trending_load(h, &r);
    assert_non_null(u);
    assert_int_equal(r.left, 0);
    cf_buf_free(&b);
    return u;
}

static void save_load_behaves_identically(void **state)
{
    (void)state;
    rng_state = 5;
    const int64_t h = 1000, t0 = 1795000000000;
    cf_trending *t = cf_trending_new(h);

    /* An empty table round-trips. */
    cf_trending *e = reload(t, h);
    assert_int_equal(cf_trending_count(e), 0);
    cf_trending_free(e);

    int64_t ts = t0;
    for (int i = 0; i < 3000; i++) {
        ts += rng_range(0, 300);
        assert_int_equal(add_click(t, (int)(rng() % 100), ts - rng_range(0, 2000)), 0);
    }
    cf_trending *u = reload(t, h);
    assert_int_equal(cf_trending_count(u), cf_trending_count(t));
    assert_int_equal(cf_trending_memory(u) > 0, 1);
    assert_same_top(t, u, ts);
    /* Identical future: the same clicks, through more rescales. */
    for (int i = 0; i < 3000; i++) {
        ts += rng_range(0, 600);
        int p = (int)(rng() % 150);
        int64_t when = ts - rng_range(0, 2000);
        assert_int_equal(add_click(t, p, when), 0);
        assert_int_equal(add_click(u, p, when), 0);
        if (i % 500 == 0) {
            assert_same_top(t, u, ts);
            cf_trending_prune(t, ts, 0.01);
            cf_trending_prune(u, ts, 0.01);
        }
    }
    assert_same_top(t, u, ts);
    assert_same_top(t, u, ts + 12345);
    cf_trending_free(u);
    cf_trending_free(t);
}

/* ---- the page bound (policy evict, lowest rank first) --------------------- */

/* With 12x more pages than the bound: the table never holds more than the
 * bound, every eviction is counted, each evicted page ranked at or below
 * every page kept, a page never evicted has the bitwise score of an
 * unbounded table, and the hot pages (and so the top 5) are those of the
 * unbounded table. */
static void page_bound_evicts_lowest_and_keeps_held_exact(void **state)
{
    (void)state;
    enum { CAP = 40, HOT = 5, CLICKS = 6000 };
    const int64_t h = 60000;
    cf_trending *t = cf_trending_new(h), *all = cf_trending_new(h);
    assert_non_null(t);
    assert_non_null(all);
    cf_trending_set_max_pages(t, CAP);
    static bool held[MAX_PAGES], ever_evicted[MAX_PAGES];
    static double before[MAX_PAGES];
    memset(held, 0, sizeof held);
    memset(ever_evicted, 0, sizeof ever_evicted);
    rng_state = 99;
    int64_t ts = 1764000000000;
    uint64_t evicted = 0;
    for (int i = 0; i < CLICKS; i++) {
        ts += rng_range(0, 200);
        int p = rng() % 10 < 3 ? (int)rng_range(0, HOT - 1) : (int)rng_range(HOT, MAX_PAGES - 1);
        for (int q = 0; q < MAX_PAGES; q++)
            before[q] = cf_trending_score(t, page_names[q], strlen(page_names[q]), ts);
        assert_int_equal(add_click(t, p, ts), 0);
        assert_int_equal(add_click(all, p, ts), 0);
        assert_true(cf_trending_count(t) <= CAP);
        /* What left the table ranked below everything that stayed. */
        double max_gone = -1.0, min_kept = INFINITY;
        for (int q = 0; q < MAX_PAGES; q++) {
            double sc = cf_trending_score(t, page_names[q], strlen(page_names[q]), ts);
            bool now = sc > 0.0;
            if (held[q] && !now) {
                ever_evicted[q] = true;
                evicted++;
                if (before[q] > max_gone)
                    max_gone = before[q];
            }
            if (now && q != p && sc < min_kept)
                min_kept = sc;
            held[q] = now;
            if (now && !ever_evicted[q])
                assert_true(sc == cf_trending_score(all, page_names[q], strlen(page_names[q]), ts));
        }
        if (max_gone >= 0.0)
            assert_true(max_gone <= min_kept);
        assert_int_equal(cf_trending_evictions(t), evicted);
    }
    assert_true(evicted > CLICKS / 3);
    for (int q = 0; q < HOT; q++)
        assert_false(ever_evicted[q]);
    cf_trend_item x[HOT], y[HOT];
    assert_int_equal(cf_trending_top(t, ts, HOT, x), HOT);
    assert_int_equal(cf_trending_top(all, ts, HOT, y), HOT);
    for (int i = 0; i < HOT; i++) {
        assert_string_equal(x[i].page_url, y[i].page_url);
        assert_true(x[i].score == y[i].score);
    }
    /* The count survives save/load; the bound is set again by the owner. */
    cf_trending *u = reload(t, h);
    assert_int_equal(cf_trending_evictions(u), evicted);
    assert_int_equal(cf_trending_count(u), cf_trending_count(t));
    /* Under a smaller bound the next new page shrinks the table to it. */
    cf_trending_set_max_pages(u, 10);
    assert_int_equal(cf_trending_add(u, "/new", 4, ts), 0);
    assert_true(cf_trending_count(u) <= 10);
    assert_true(cf_trending_score(u, "/new", 4, ts) > 0.0);
    for (int q = 0; q < HOT; q++)
        assert_true(cf_trending_score(u, page_names[q], strlen(page_names[q]), ts) > 0.0);
    assert_int_equal(cf_trending_evictions(u), evicted + (cf_trending_count(t) + 1 - cf_trending_count(u)));
    cf_trending_free(u);
    cf_trending_free(t);
    cf_trending_free(all);
}

/* Ties go by rank too: among equal scores the larger page_url goes first;
 * a bound of 1 keeps exactly the newest page. */
static void page_bound_ties_and_bound_one(void **state)
{
    (void)state;
    cf_trending *t = cf_trending_new(1000);
    cf_trending_set_max_pages(t, 2);
    assert_int_equal(cf_trending_add(t, "/a", 2, 0), 0);
    assert_int_equal(cf_trending_add(t, "/b", 2, 0), 0);
    assert_int_equal(cf_trending_add(t, "/c", 2, 0), 0);    /* evicts /b, not /a */
    assert_true(cf_trending_score(t, "/a", 2, 0) == 1.0);
    assert_true(cf_trending_score(t, "/b", 2, 0) == 0.0);
    assert_true(cf_trending_score(t, "/c", 2, 0) == 1.0);
    assert_int_equal(cf_trending_evictions(t), 1);
    cf_trending_set_max_pages(t, 1);
    assert_int_equal(cf_trending_add(t, "/d", 2, 5), 0);    /* 2 over: both go */
    assert_int_equal(cf_trending_count(t), 1);
    assert_int_equal(cf_trending_evictions(t), 3);
    assert_true(cf_trending_score(t, "/d", 2, 5) == 1.0);
    assert_int_equal(cf_trending_add(t, "/d", 2, 5), 0);    /* held: no eviction */
    assert_int_equal(cf_trending_evictions(t), 3);
    cf_trending_free(t);
}

static void load_rejects_malformed(void **state)
{
    (void)state;
    cf_trending *t = cf_trending_new(60000);
    assert_int_equal(cf_trending_add(t, "/a", 2, 1000), 0);
    assert_int_equal(cf_trending_add(t, "/bb", 3, 2000), 0);
    cf_buf b = {0};
    assert_int_equal(cf_trending_save(t, &b), 0);
    cf_reader r;
    /* Every truncation fails. */
    for (size_t len = 0; len < b.len; len++) {
        cf_reader_init(&r, b.data, len);
        assert_null(cf_trending_load(60000, &r));
    }
    /* Header: magic(4) version(1) h(8) R(8) evictions(8) count(8) = 37
     * bytes, then len(4) key value(8). A NaN or negative value is refused. */
    uint8_t *bad = malloc(b.len);
    assert_non_null(bad);
    const double vals[] = {NAN, -1.0, INFINITY, 1e300};
    uint32_t klen = b.data[37]; /* first key is "/a" or "/bb" */
    size_t voff = 37 + 4 + klen;
    for (size_t i = 0; i < 4; i++) {
        memcpy(bad, b.data, b.len);
        memcpy(bad + voff, &vals[i], 8); /* little-endian host */
        cf_reader_init(&r, bad, b.len);
        assert_null(cf_trending_load(60000, &r));
    }
    /* Bad magic, version, and a count larger than the input. */
    memcpy(bad, b.data, b.len);
    bad[0] ^= 1;
    cf_reader_init(&r, bad, b.len);
    assert_null(cf_trending_load(60000, &r));
    memcpy(bad, b.data, b.len);
    bad[4] = 9;
    cf_reader_init(&r, bad, b.len);
    assert_null(cf_trending_load(60000, &r));
    memcpy(bad, b.data, b.len);
    bad[29 + 7] = 0x10;
    cf_reader_init(&r, bad, b.len);
    assert_null(cf_trending_load(60000, &r));
    free(bad);
    cf_buf_free(&b);

    /* A duplicate page is refused (in a version 1 table, which has no
     * eviction count and still loads). */
    cf_buf d = {0};
    cf_buf_put_u32(&d, 0x52544643u);
    cf_buf_put_u8(&d, 1);
    cf_buf_put_i64(&d, 60000);
    cf_buf_put_i64(&d, 0);
    cf_buf_put_u64(&d, 2);
    for (int i = 0; i < 2; i++) {
        cf_buf_put_str(&d, "/a", 2);
        cf_buf_put_f64(&d, 1.0);
    }
    cf_reader_init(&r, d.data, d.len);
    assert_null(cf_trending_load(60000, &r));
    cf_buf_free(&d);
    cf_trending_free(t);
}

/* Loaded with another half-life, scores at the saved reference time are
 * kept and then decay at the new rate. */
static void load_with_new_half_life(void **state)
{
    (void)state;
    cf_trending *t = cf_trending_new(60000);
    assert_int_equal(cf_trending_add(t, "/a", 2, 120000), 0); /* R = 120000 */
    cf_trending *u = reload(t, 45000);                       /* R' = 90000 */
    assert_true(fabs(cf_trending_score(u, "/a", 2, 120000) - 1.0) < 1e-15);
    assert_true(fabs(cf_trending_score(u, "/a", 2, 165000) - 0.5) < 1e-15);
    cf_trending_free(u);
    cf_trending_free(t);
}

/* ---- rescale: load_parts ------------------------------------------------- */

static bool odd_page(void *ctx, const char *p, size_t len)
{
    (void)ctx;
    return len > 0 && (p[len - 1] & 1);
}

static cf_trending *reload_parts(cf_trending *const *src, size_t n, cf_trending_keep_fn keep,
                                 int64_t h)
{
    cf_buf bufs[2] = {{0}};
    cf_reader parts[2];
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(cf_trending_save(src[i], &bufs[i]), 0);
        cf_reader_init(&parts[i], bufs[i].data, bufs[i].len);
    }
    cf_trending *t = cf_trending_load_parts(h, 77, parts, n, keep, NULL);
    for (size_t i = 0; i < n; i++)
        cf_buf_free(&bufs[i]);
    return t;
}

/* Tables fed the odd and the even pages (their R moved at different clicks,
 * far apart in time) load into one whose scores are bitwise those of the
 * table fed everything, and that one splits back. */
static void load_parts_merges_and_splits(void **state)
{
    (void)state;
    const int64_t h = 1000;
    cf_trending *all = cf_trending_new(h), *odd = cf_trending_new(h), *even = cf_trending_new(h);
    cf_trending *plain = cf_trending_new(h);
    /* Seeded tables (as the daemon makes them) score like unseeded ones. */
    assert_int_equal(cf_trending_set_hash_seed(all, 77), 0);
    assert_int_equal(cf_trending_set_hash_seed(odd, 77), 0);
    assert_int_equal(cf_trending_set_hash_seed(even, 77), 0);
    char p[16];
    int64_t ts = 5000;
    for (int i = 0; i < 3000; i++) {
        /* Long quiet stretches move R by many half-lives, at other clicks
         * in each table. */
        ts += i % 500 == 0 ? 2000 * h : (i * 7919) % 300;
        int n = snprintf(p, sizeof p, "/p%d", (i * 31) % 23);
        assert_int_equal(cf_trending_add(all, p, (size_t)n, ts), 0);
        assert_int_equal(cf_trending_add(plain, p, (size_t)n, ts), 0);
        assert_int_equal(cf_trending_add(odd_page(NULL, p, (size_t)n) ? odd : even, p, (size_t)n,
                                         ts), 0);
    }
    cf_trending *pair[2] = {odd, even};
    cf_trending *merged = reload_parts(pair, 2, NULL, h);
    cf_trending *split = reload_parts(&all, 1, odd_page, h);
    assert_non_null(merged);
    assert_non_null(split);
    assert_int_equal(cf_trending_count(merged), cf_trending_count(all));
    for (int k = 0; k < 23; k++) {
        int n = snprintf(p, sizeof p, "/p%d", k);
        for (int64_t T = ts; T < ts + 5 * h; T += h / 3) {
            double want = cf_trending_score(all, p, (size_t)n, T);
            assert_true(cf_trending_score(plain, p, (size_t)n, T) == want);
            assert_true(cf_trending_score(merged, p, (size_t)n, T) == want);
            double s = cf_trending_score(split, p, (size_t)n, T);
            assert_true(s == (odd_page(NULL, p, (size_t)n) ? want : 0.0));
        }
    }
    assert_int_equal(cf_trending_set_hash_seed(all, 5), -EBUSY);
    cf_trending_free(plain);
    cf_trending_free(merged);
    cf_trending_free(split);
    cf_trending_free(all);
    cf_trending_free(odd);
    cf_trending_free(even);
}

int main(void)
{
    init_names();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(new_rejects_bad_half_life),
        cmocka_unit_test(page_bound_evicts_lowest_and_keeps_held_exact),
        cmocka_unit_test(page_bound_ties_and_bound_one),
        cmocka_unit_test(load_parts_merges_and_splits),
        cmocka_unit_test(single_click_decays_by_half_life),
        cmocka_unit_test(matches_brute_force_over_days),
        cmocka_unit_test(rescaling_keeps_scores_exact),
        cmocka_unit_test(far_past_and_future_clicks),
        cmocka_unit_test(extreme_times_stay_finite),
        cmocka_unit_test(ties_ordered_by_page_url),
        cmocka_unit_test(merge_of_shards_equals_single_table),
        cmocka_unit_test(merge_edge_cases),
        cmocka_unit_test(prune_threshold_boundary),
        cmocka_unit_test(prune_many_keeps_survivors),
        cmocka_unit_test(out_of_order_clicks),
        cmocka_unit_test(existing_pages_do_not_grow_memory),
        cmocka_unit_test(save_load_behaves_identically),
        cmocka_unit_test(load_rejects_malformed),
        cmocka_unit_test(load_with_new_half_life),
    };
    return cmocka_run_group_tests_name("trending", tests, NULL, NULL);
}
