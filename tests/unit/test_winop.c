/* Unit tests for cf_winop: firing and lateness boundaries, revisions,
 * purging, tumbling and sliding windows, emission order, interim results,
 * overflow edges, save/load, memory accounting, and a randomized
 * out-of-order trace checked against a brute-force model. */
#include <errno.h>
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
#include "cf_time.h"
#include "cf_winop.h"

/* ---- emission capture -------------------------------------------------- */

typedef struct emission {
    cf_window_type type;
    int64_t start, end;
    char page[64];
    uint64_t count, unique;
    uint32_t revision;
    bool final;
} emission;

typedef struct sink {
    emission *e;
    size_t n, cap;
} sink;

static void collect(void *ctx, const cf_window_result *r)
{
    sink *s = ctx;
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 64;
        s->e = realloc(s->e, s->cap * sizeof *s->e);
        assert_non_null(s->e);
    }
    emission *e = &s->e[s->n++];
    memset(e, 0, sizeof *e);
    e->type = r->type;
    e->start = r->start;
    e->end = r->end;
    assert_true(r->page_url_len < sizeof e->page);
    memcpy(e->page, r->page_url, r->page_url_len);
    assert_int_equal(r->page_url[r->page_url_len], '\0');
    e->count = r->count;
    e->unique = r->unique_users;
    e->revision = r->revision;
    e->final = r->final;
}

static void sink_reset(sink *s) { s->n = 0; }
static void sink_free(sink *s) { free(s->e); memset(s, 0, sizeof *s); }

static uint64_t user(int i)
{
    return cf_hash64(&i, sizeof i, 42);
}

static int add(cf_winop *op, const char *page, int u, int64_t ts, sink *s)
{
    return cf_winop_add(op, page, strlen(page), user(u), ts, collect, s);
}

static void expect(const emission *e, int64_t start, int64_t end, const char *page,
                   uint64_t count, uint64_t unique, uint32_t rev, bool final)
{
    if (e->start != start || e->end != end || strcmp(e->page, page) != 0 || e->count != count ||
        e->unique != unique || e->revision != rev || e->final != final)
        fail_msg("got [%lld,%lld) %s count=%llu unique=%llu rev=%u final=%d, want "
                 "[%lld,%lld) %s count=%llu unique=%llu rev=%u final=%d",
                 (long long)e->start, (long long)e->end, e->page, (unsigned long long)e->count,
                 (unsigned long long)e->unique, e->revision, e->final, (long long)start,
                 (long long)end, page, (unsigned long long)count, (unsigned long long)unique,
                 rev, final);
}

static cf_winop *tumbling(int64_t size, int64_t late)
{
    cf_winop_config c = {CF_WINDOW_TUMBLING, size, size, late, 0};
    cf_winop *op = cf_winop_new(&c);
    assert_non_null(op);
    return op;
}

/* ---- config ---------------------------------------------------------- */

static void config_validation(void **state)
{
    (void)state;
    cf_winop_config bad[] = {
        {CF_WINDOW_TUMBLING, 0, 0, 0, 0},
        {CF_WINDOW_TUMBLING, 1000, 500, 0, 0},
        {CF_WINDOW_TUMBLING, 1000, 1000, -1, 0},
        {CF_WINDOW_SLIDING, 1000, 300, 0, 0},
        {CF_WINDOW_SLIDING, 1000, 0, 0, 0},
        {CF_WINDOW_SLIDING, 1000, 2000, 0, 0},
        {CF_WINDOW_SLIDING, 2000, 1, 0, 0}, /* 2000 windows per event: over the bound */
        {(cf_window_type)7, 1000, 1000, 0, 0},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_null(cf_winop_new(&bad[i]));
    assert_null(cf_winop_new(NULL));
    cf_winop_config good[] = {
        {CF_WINDOW_TUMBLING, 1000, 1000, 0, 0},
        {CF_WINDOW_TUMBLING, 1000, 0, 0, 0}, /* slide 0 means size */
        {CF_WINDOW_SLIDING, 300000, 60000, 60000, 0},
        {CF_WINDOW_SLIDING, 1000, 1000, INT64_MAX, 0},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        cf_winop *op = cf_winop_new(&good[i]);
        assert_non_null(op);
        cf_winop_free(op);
    }
    cf_winop_free(NULL);
}

/* ---- tumbling boundaries ------------------------------------------------ */

static void tumbling_end_boundary_and_firing(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 5000);
    sink s = {0};
    assert_int_equal(add(op, "/p", 1, 999, &s), 1);   /* [0,1000) */
    assert_int_equal(add(op, "/p", 2, 1000, &s), 1);  /* [1000,2000) */
    assert_int_equal(add(op, "/p", 2, 0, &s), 1);     /* [0,1000) */
    assert_int_equal(s.n, 0);
    assert_int_equal(cf_winop_open_count(op), 2);
    cf_winop_advance(op, 998, collect, &s);           /* W = end - 2 */
    assert_int_equal(s.n, 0);
    cf_winop_advance(op, 999, collect, &s);           /* W = end - 1: fires */
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 0, 1000, "/p", 2, 2, 0, true);
    assert_int_equal(cf_winop_open_count(op), 1);
    assert_int_equal(cf_winop_kept_count(op), 1);
    cf_winop_advance(op, 1000, collect, &s);          /* no second firing */
    assert_int_equal(s.n, 1);
    cf_winop_advance(op, 1998, collect, &s);
    assert_int_equal(s.n, 1);
    cf_winop_advance(op, 1999, collect, &s);
    assert_int_equal(s.n, 2);
    expect(&s.e[1], 1000, 2000, "/p", 1, 1, 0, true);
    sink_free(&s);
    cf_winop_free(op);
}

static void watermark_none_and_backwards(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 0);
    sink s = {0};
    /* Without a watermark nothing is late, however old. */
    assert_int_equal(add(op, "/p", 1, INT64_MIN / 2, &s), 1);
    cf_winop_advance(op, CF_TIME_NONE, collect, &s);
    assert_int_equal(s.n, 0);
    assert_int_equal(cf_winop_open_count(op), 1);
    cf_winop_advance(op, 5000, collect, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(cf_winop_open_count(op), 0);
    assert_int_equal(cf_winop_kept_count(op), 0); /* lateness 0: purged at once */
    /* The watermark never moves back: a lower one changes nothing. */
    assert_int_equal(add(op, "/p", 1, 5500, &s), 1);
    cf_winop_advance(op, 4000, collect, &s);
    assert_int_equal(add(op, "/p", 1, 4500, &s), 0); /* [4000,5000): 4999 <= 5000 */
    assert_int_equal(s.n, 1);
    sink_free(&s);
    cf_winop_free(op);
}

static void lateness_limit_exact(void **state)
{
    (void)state;
    const int64_t L = 3000;
    cf_winop *op = tumbling(1000, L);
    sink s = {0};
    add(op, "/p", 1, 10, &s);
    cf_winop_advance(op, 999, collect, &s);
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 0, 1000, "/p", 1, 1, 0, true);
    /* W = end - 1 + L - 1: still kept, a late event updates and re-fires. */
    cf_winop_advance(op, 999 + L - 1, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 1);
    assert_int_equal(add(op, "/p", 2, 500, &s), 1);
    assert_int_equal(s.n, 2);
    expect(&s.e[1], 0, 1000, "/p", 2, 2, 1, true);
    assert_int_equal(add(op, "/p", 2, 999, &s), 1);
    expect(&s.e[2], 0, 1000, "/p", 3, 2, 2, true);
    /* A page new to the kept window: its first result, revision 0. */
    assert_int_equal(add(op, "/q", 3, 0, &s), 1);
    expect(&s.e[3], 0, 1000, "/q", 1, 1, 0, true);
    assert_int_equal(cf_winop_kept_count(op), 2);
    /* W = end - 1 + L: purged; events for it are dropped. */
    cf_winop_advance(op, 999 + L, collect, &s);
    assert_int_equal(s.n, 4);
    assert_int_equal(cf_winop_kept_count(op), 0);
    assert_int_equal(add(op, "/p", 2, 500, &s), 0);
    assert_int_equal(add(op, "/z", 2, 999, &s), 0);
    assert_int_equal(s.n, 4);
    assert_int_equal(cf_winop_open_count(op), 0);
    sink_free(&s);
    cf_winop_free(op);
}

static void late_event_into_window_never_created(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 2000);
    sink s = {0};
    cf_winop_advance(op, 3000, collect, &s);
    /* [1000,2000) fired at W >= 1999 but nobody was in it: the first event
     * creates it fired and emits at once. [0,1000): 999 + 2000 <= 3000. */
    assert_int_equal(add(op, "/p", 1, 1500, &s), 1);
    assert_int_equal(add(op, "/p", 1, 999, &s), 0);
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 1000, 2000, "/p", 1, 1, 0, true);
    assert_int_equal(cf_winop_kept_count(op), 1);
    assert_int_equal(add(op, "/p", 1, 1501, &s), 1);
    expect(&s.e[1], 1000, 2000, "/p", 2, 1, 1, true);
    cf_winop_advance(op, 3998, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 1);
    cf_winop_advance(op, 3999, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 0);
    assert_int_equal(s.n, 2);
    sink_free(&s);
    cf_winop_free(op);
}

static void emission_order_end_then_page(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 0);
    sink s = {0};
    const char *pages[] = {"/b", "/a/b", "/", "/a", "/B", "/ab"};
    for (int w = 2; w >= 0; w--)
        for (size_t i = 0; i < 6; i++)
            add(op, pages[i], (int)i, w * 1000 + (int64_t)i, &s);
    /* Interim results first: same order, final = false. */
    cf_winop_foreach_open(op, collect, &s);
    assert_int_equal(s.n, 18);
    const char *sorted[] = {"/", "/B", "/a", "/a/b", "/ab", "/b"};
    for (size_t k = 0; k < 18; k++)
        expect(&s.e[k], (int64_t)(k / 6) * 1000, (int64_t)(k / 6) * 1000 + 1000,
               sorted[k % 6], 1, 1, 0, false);
    sink_reset(&s);
    cf_winop_advance(op, 10000, collect, &s);
    assert_int_equal(s.n, 18);
    for (size_t k = 0; k < 18; k++)
        expect(&s.e[k], (int64_t)(k / 6) * 1000, (int64_t)(k / 6) * 1000 + 1000,
               sorted[k % 6], 1, 1, 0, true);
    sink_free(&s);
    cf_winop_free(op);
}

static void foreach_open_skips_fired(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 10000);
    sink s = {0};
    add(op, "/p", 1, 100, &s);
    add(op, "/p", 2, 1100, &s);
    add(op, "/p", 3, 1200, &s);
    cf_winop_advance(op, 999, collect, &s);
    sink_reset(&s);
    cf_winop_foreach_open(op, collect, &s);
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 1000, 2000, "/p", 2, 2, 0, false);
    cf_winop_foreach_open(op, NULL, NULL);
    sink_free(&s);
    cf_winop_free(op);
}

static void unique_users_exact_well_past_100(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 0);
    sink s = {0};
    for (int round = 0; round < 3; round++)
        for (int u = 0; u < 300; u++)
            add(op, "/p", u, 5, &s);
    cf_winop_foreach_open(op, collect, &s);
    expect(&s.e[0], 0, 1000, "/p", 900, 300, 0, false);
    /* Inline boundary: 1, 2, 3 users. */
    sink_reset(&s);
    add(op, "/q", 1, 5, &s);
    add(op, "/q", 1, 5, &s);
    add(op, "/r", 1, 5, &s);
    add(op, "/r", 2, 5, &s);
    add(op, "/r", 1, 5, &s);
    add(op, "/t", 1, 5, &s);
    add(op, "/t", 2, 5, &s);
    add(op, "/t", 3, 5, &s);
    add(op, "/t", 2, 5, &s);
    cf_winop_foreach_open(op, collect, &s);
    expect(&s.e[1], 0, 1000, "/q", 2, 1, 0, false);
    expect(&s.e[2], 0, 1000, "/r", 3, 2, 0, false);
    expect(&s.e[3], 0, 1000, "/t", 4, 3, 0, false);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- sliding ------------------------------------------------------------ */

static void sliding_windows(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_SLIDING, 5000, 1000, 2000, 0};
    cf_winop *op = cf_winop_new(&c);
    sink s = {0};
    /* ts 10000 lies in windows starting 6000..10000. */
    assert_int_equal(add(op, "/p", 1, 10000, &s), 5);
    assert_int_equal(add(op, "/p", 2, 9999, &s), 5); /* starts 5000..9000 */
    assert_int_equal(cf_winop_open_count(op), 6);
    cf_winop_advance(op, 9998, collect, &s);
    assert_int_equal(s.n, 0);
    cf_winop_advance(op, 9999, collect, &s);     /* [5000,10000) fires */
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 5000, 10000, "/p", 1, 1, 0, true);
    cf_winop_advance(op, 10999, collect, &s);    /* [6000,11000) fires */
    assert_int_equal(s.n, 2);
    expect(&s.e[1], 6000, 11000, "/p", 2, 2, 0, true);
    /* W = 10999: [5000,10000) is kept until 9999 + 2000 = 11999. A late
     * event at 9500 reaches windows 5000..9000: 5000 and 6000 re-fire, the
     * rest are open. */
    assert_int_equal(add(op, "/p", 3, 9500, &s), 5);
    assert_int_equal(s.n, 4);
    expect(&s.e[2], 5000, 10000, "/p", 2, 2, 1, true);
    expect(&s.e[3], 6000, 11000, "/p", 3, 3, 1, true);
    cf_winop_advance(op, 11999, collect, &s);    /* fires 7000; purges 5000 */
    assert_int_equal(s.n, 5);
    expect(&s.e[4], 7000, 12000, "/p", 3, 3, 0, true);
    /* Now the event at 9500 misses [5000,10000) only. */
    assert_int_equal(add(op, "/p", 3, 9500, &s), 4);
    assert_int_equal(s.n, 7);
    expect(&s.e[5], 6000, 11000, "/p", 4, 3, 2, true);
    expect(&s.e[6], 7000, 12000, "/p", 4, 3, 1, true);
    /* All windows of an old event gone: 0. */
    assert_int_equal(add(op, "/p", 3, 5000, &s), 0);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- overflow edges ------------------------------------------------------ */

static void extreme_times_do_not_overflow(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_SLIDING, 3000, 1000, INT64_MAX, 0};
    cf_winop *op = cf_winop_new(&c);
    sink s = {0};
    /* Windows that cannot be represented: in no window. */
    assert_int_equal(add(op, "/p", 1, INT64_MAX, &s), 0);
    assert_int_equal(add(op, "/p", 1, INT64_MIN, &s), 0);
    assert_int_equal(add(op, "/p", 1, INT64_MAX - 5000, &s), 3);
    assert_int_equal(add(op, "/p", 1, -5, &s), 3);
    cf_winop_advance(op, INT64_MIN + 1, collect, &s);
    assert_int_equal(s.n, 0);
    cf_winop_advance(op, INT64_MAX, collect, &s);
    assert_int_equal(s.n, 6);
    /* Lateness INT64_MAX: end - 1 + L overflows; purge only once
     * W - L >= end - 1, which for W = INT64_MAX means end <= 1: of the
     * windows of ts -5 ([-3000,0), [-2000,1000), [-1000,2000)) only the
     * first goes. */
    assert_int_equal(cf_winop_kept_count(op), 5);
    sink_free(&s);
    cf_winop_free(op);

    /* W - lateness below INT64_MIN: a fired window stays kept. */
    op = tumbling(1000, INT64_MAX);
    assert_int_equal(add(op, "/p", 1, -3000, &s), 1);
    cf_winop_advance(op, -2, collect, &s);
    assert_int_equal(s.n, 1);
    assert_int_equal(cf_winop_kept_count(op), 1);
    assert_int_equal(add(op, "/p", 1, -3000, &s), 1);
    expect(&s.e[1], -3000, -2000, "/p", 2, 1, 1, true);
    sink_free(&s);
    cf_winop_free(op);

    op = tumbling(1000, 1000);
    /* INT64_MAX = ...775807: the window ...775000 would end past it. */
    assert_int_equal(add(op, "/p", 1, INT64_MAX - 500, &s), 0);
    assert_int_equal(add(op, "/p", 1, INT64_MAX - 1000, &s), 1); /* ends ...775000 */
    assert_int_equal(add(op, "/p", 1, INT64_MAX - 2000, &s), 1); /* ends ...774000 */
    cf_winop_advance(op, INT64_MAX, collect, &s);
    assert_int_equal(s.n, 2);
    /* ...775000 - 1 + 1000 is past INT64_MAX: kept for ever; the other one
     * is purged. */
    assert_int_equal(cf_winop_kept_count(op), 1);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- purge and memory ---------------------------------------------------- */

static void purge_releases_memory(void **state)
{
    (void)state;
    cf_winop *op = tumbling(1000, 1000);
    size_t base = cf_winop_memory(op);
    assert_true(base > 0);
    sink s = {0};
    char page[32];
    for (int i = 0; i < 2000; i++) {
        snprintf(page, sizeof page, "/page/%d", i % 500);
        add(op, page, i % 7, (i / 500) * 1000, &s);
    }
    for (int u = 0; u < 600; u++)
        add(op, "/big", u, 10, &s); /* dense sketch */
    size_t full = cf_winop_memory(op);
    assert_true(full > base + 2000 * 40 + 16384);
    assert_int_equal(cf_winop_open_count(op), 2001);
    cf_winop_advance(op, 1998, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 501);
    assert_int_equal(cf_winop_open_count(op), 1500);
    cf_winop_advance(op, 10000, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 0);
    assert_int_equal(cf_winop_open_count(op), 0);
    size_t after = cf_winop_memory(op);
    assert_true(after < full - 16384 - 500 * 8);
    /* Reuse after purge: the structures are recycled, not grown. */
    for (int i = 0; i < 2000; i++) {
        snprintf(page, sizeof page, "/page/%d", i % 500);
        add(op, page, i % 7, 20000 + (i / 500) * 1000, &s);
    }
    assert_true(cf_winop_memory(op) <= full);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- save / load ---------------------------------------------------------- */

static cf_winop *reload(const cf_winop_config *c, const cf_winop *op)
{
    cf_buf b = {0};
    assert_int_equal(cf_winop_save(op, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_winop *l = cf_winop_load(c, &r);
    assert_non_null(l);
    assert_int_equal(r.left, 0);
    /* Saving the loaded one gives the same bytes. */
    cf_buf b2 = {0};
    assert_int_equal(cf_winop_save(l, &b2), 0);
    assert_int_equal(b.len, b2.len);
    assert_memory_equal(b.data, b2.data, b.len);
    cf_buf_free(&b);
    cf_buf_free(&b2);
    return l;
}

static void load_rejects_bad_input(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_TUMBLING, 1000, 1000, 5000, 0};
    cf_winop *op = cf_winop_new(&c);
    sink s = {0};
    add(op, "/p", 1, 10, &s);
    add(op, "/q", 1, 1010, &s);
    for (int u = 0; u < 40; u++)
        add(op, "/q", u, 1020, &s);
    cf_winop_advance(op, 1200, collect, &s);
    cf_buf b = {0};
    assert_int_equal(cf_winop_save(op, &b), 0);
    cf_reader r;
    /* Every truncation fails. */
    for (size_t n = 0; n < b.len; n++) {
        cf_reader_init(&r, b.data, n);
        assert_null(cf_winop_load(&c, &r));
    }
    /* Another config fails. */
    cf_winop_config c2 = {CF_WINDOW_TUMBLING, 1000, 1000, 6000, 0};
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c2, &r));
    cf_winop_config c3 = {CF_WINDOW_SLIDING, 1000, 1000, 5000, 0};
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c3, &r));
    /* A bad magic fails. */
    b.data[0] ^= 1;
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c, &r));
    b.data[0] ^= 1;
    /* A window start off the slide grid fails (first window start at
     * offset 4+1+8*4+8+4 = 49). */
    b.data[49] ^= 1;
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c, &r));
    b.data[49] ^= 1;
    /* A start of INT64_MIN (not a multiple of 1000) is rejected without
     * overflowing. */
    uint8_t saved[8];
    memcpy(saved, &b.data[49], 8);
    memset(&b.data[41], 0, 7);
    b.data[48] = 0x80;
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c, &r));
    memcpy(&b.data[41], saved, 8);
    cf_reader_init(&r, b.data, b.len);
    cf_winop *ok = cf_winop_load(&c, &r);
    assert_non_null(ok);
    cf_winop_free(ok);
    cf_buf_free(&b);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- randomized trace against a brute-force model -------------------------- */

#define NPAGES 7
#define NUSERS 40
static const char *const model_pages[NPAGES] = {"/", "/a", "/a/b", "/ab", "/b", "/checkout",
                                                "/products/7"};

typedef struct mevent {
    int64_t ts;
    int page;
    int user;
    int64_t w_arrival;  /* watermark when it arrived */
    int nw;             /* its windows, by brute force */
    int64_t starts[8];
} mevent;

typedef struct model {
    cf_winop_config c;
    int64_t wm;
    mevent *ev;
    size_t n;
    sink out;           /* expected emissions */
    /* revision counters: final emissions so far per (start, page) */
    int64_t *rev_start;
    int *rev_page;
    uint32_t *rev_n;
    size_t nrev;
} model;

static int64_t floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Window starts holding ts, ascending, by brute force over a range. */
static int windows_of(const model *m, int64_t ts, int64_t *starts)
{
    int n = 0;
    int64_t first = floordiv(ts - m->c.size_ms, m->c.slide_ms) * m->c.slide_ms;
    for (int64_t s = first; s <= ts; s += m->c.slide_ms)
        if (s <= ts && ts < s + m->c.size_ms)
            starts[n++] = s;
    return n;
}

static bool held(const model *m, const mevent *e, int64_t start)
{
    int64_t end = start + m->c.size_ms;
    return !(e->w_arrival != CF_TIME_NONE &&
             e->w_arrival >= end - 1 + m->c.allowed_lateness_ms);
}

static void model_result(model *m, int64_t start, int page, uint32_t rev, bool final)
{
    uint64_t count = 0, users = 0;
    for (size_t i = 0; i < m->n; i++) {
        const mevent *e = &m->ev[i];
        if (e->page == page && e->ts >= start && e->ts < start + m->c.size_ms && held(m, e, start)) {
            count++;
            users |= 1ULL << e->user;
        }
    }
    cf_window_result r = {.type = m->c.type,
                          .start = start,
                          .end = start + m->c.size_ms,
                          .page_url = model_pages[page],
                          .page_url_len = strlen(model_pages[page]),
                          .count = count,
                          .unique_users = (uint64_t)__builtin_popcountll(users),
                          .revision = rev,
                          .final = final};
    collect(&m->out, &r);
}

static uint32_t *model_rev(model *m, int64_t start, int page)
{
    for (size_t i = 0; i < m->nrev; i++)
        if (m->rev_start[i] == start && m->rev_page[i] == page)
            return &m->rev_n[i];
    m->rev_start = realloc(m->rev_start, (m->nrev + 1) * sizeof *m->rev_start);
    m->rev_page = realloc(m->rev_page, (m->nrev + 1) * sizeof *m->rev_page);
    m->rev_n = realloc(m->rev_n, (m->nrev + 1) * sizeof *m->rev_n);
    m->rev_start[m->nrev] = start;
    m->rev_page[m->nrev] = page;
    m->rev_n[m->nrev] = 0;
    return &m->rev_n[m->nrev++];
}

static int model_add(model *m, int page, int u, int64_t ts)
{
    m->ev = realloc(m->ev, (m->n + 1) * sizeof *m->ev);
    mevent *ne = &m->ev[m->n++];
    *ne = (mevent){.ts = ts, .page = page, .user = u, .w_arrival = m->wm};
    ne->nw = windows_of(m, ts, ne->starts);
    const int64_t *starts = ne->starts;
    int nw = ne->nw, added = 0;
    for (int k = 0; k < nw; k++) {
        if (!held(m, &m->ev[m->n - 1], starts[k]))
            continue;
        added++;
        int64_t end = starts[k] + m->c.size_ms;
        if (m->wm != CF_TIME_NONE && m->wm >= end - 1) {
            uint32_t *rv = model_rev(m, starts[k], page);
            model_result(m, starts[k], page, (*rv)++, true);
        }
    }
    return added;
}

typedef struct mkey {
    int64_t start;
    int page;
} mkey;

static int cmp_mkey(const void *a, const void *b)
{
    const mkey *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    /* model_pages is in bytewise order (checked in the test), so the index
     * orders pages as strcmp does. */
    return (x->page > y->page) - (x->page < y->page);
}

/* Keys with at least one held event, selected by pred on their end. */
static size_t model_keys(const model *m, mkey **ret, bool (*pred)(const model *, int64_t, int64_t),
                         int64_t arg)
{
    size_t n = 0, cap = 256;
    mkey *k = malloc(cap * sizeof *k);
    for (size_t i = 0; i < m->n; i++) {
        const int64_t *starts = m->ev[i].starts;
        for (int j = 0; j < m->ev[i].nw; j++) {
            if (!held(m, &m->ev[i], starts[j]) || !pred(m, starts[j] + m->c.size_ms, arg))
                continue;
            if (n == cap)
                k = realloc(k, (cap *= 2) * sizeof *k);
            k[n++] = (mkey){starts[j], m->ev[i].page};
        }
    }
    if (n)
        qsort(k, n, sizeof *k, cmp_mkey);
    size_t u = 0;
    for (size_t i = 0; i < n; i++)
        if (u == 0 || cmp_mkey(&k[u - 1], &k[i]) != 0)
            k[u++] = k[i];
    *ret = k;
    return u;
}

static bool due_between(const model *m, int64_t end, int64_t new_wm)
{
    bool was = m->wm != CF_TIME_NONE && m->wm >= end - 1;
    return !was && new_wm >= end - 1;
}

static bool is_open(const model *m, int64_t end, int64_t unused)
{
    (void)unused;
    return m->wm == CF_TIME_NONE || m->wm < end - 1;
}

static bool is_kept(const model *m, int64_t end, int64_t unused)
{
    (void)unused;
    return !is_open(m, end, 0) && m->wm < end - 1 + m->c.allowed_lateness_ms;
}

static void model_advance(model *m, int64_t wm)
{
    if (wm <= m->wm)
        return;
    mkey *k;
    size_t n = model_keys(m, &k, due_between, wm);
    m->wm = wm;
    for (size_t i = 0; i < n; i++) {
        uint32_t *rv = model_rev(m, k[i].start, k[i].page);
        model_result(m, k[i].start, k[i].page, (*rv)++, true);
    }
    free(k);
}

static void model_open(model *m)
{
    mkey *k;
    size_t n = model_keys(m, &k, is_open, 0);
    for (size_t i = 0; i < n; i++)
        model_result(m, k[i].start, k[i].page, 0, false);
    free(k);
}

static size_t model_count(model *m, bool (*pred)(const model *, int64_t, int64_t))
{
    mkey *k;
    size_t n = model_keys(m, &k, pred, 0);
    free(k);
    return n;
}

static void model_free(model *m)
{
    free(m->ev);
    sink_free(&m->out);
    free(m->rev_start);
    free(m->rev_page);
    free(m->rev_n);
}

static uint64_t rng_next(uint64_t *s)
{
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return *s >> 33;
}

/* Compares emissions [from, n) of both. */
static void compare_from(const sink *got, const sink *want, size_t from)
{
    assert_int_equal(got->n, want->n);
    for (size_t i = from; i < got->n; i++) {
        const emission *w = &want->e[i];
        assert_int_equal(got->e[i].type, w->type);
        expect(&got->e[i], w->start, w->end, w->page, w->count, w->unique, w->revision, w->final);
    }
}

static void compare(const sink *got, const sink *want)
{
    compare_from(got, want, 0);
}

/* Runs one seeded trace through the operator and the model, comparing
 * every emission and the add() results; at event `reload_at` the operator
 * is replaced by save+load of itself. Returns the operator's emissions. */
static void run_trace(const cf_winop_config *c, uint64_t seed, int64_t t0, size_t nev,
                      size_t reload_at, sink *ret_got)
{
    cf_winop *op = cf_winop_new(c);
    assert_non_null(op);
    model m = {.c = *c, .wm = CF_TIME_NONE};
    if (m.c.type == CF_WINDOW_TUMBLING)
        m.c.slide_ms = m.c.size_ms;
    uint64_t rs = seed;
    int64_t max_ts = t0;
    size_t dropped = 0, checked = 0;
    for (size_t i = 0; i < nev; i++) {
        if (i == reload_at) {
            cf_winop *l = reload(c, op);
            cf_winop_free(op);
            op = l;
        }
        max_ts += (int64_t)(rng_next(&rs) % 40);
        int64_t ts = max_ts - (int64_t)(rng_next(&rs) % 1500);
        if (rng_next(&rs) % 20 == 0)
            ts -= (int64_t)(rng_next(&rs) % 8000); /* very late */
        int page = (int)(rng_next(&rs) % NPAGES);
        int u = (int)(rng_next(&rs) % NUSERS);
        int a = cf_winop_add(op, model_pages[page], strlen(model_pages[page]), user(u), ts,
                             collect, ret_got);
        int b = model_add(&m, page, u, ts);
        assert_int_equal(a, b);
        if (a == 0)
            dropped++;
        if (rng_next(&rs) % 8 == 0) {
            /* Watermark trails the clock by 1000 ms, sometimes jumps. */
            int64_t wm = max_ts - 1000;
            if (rng_next(&rs) % 10 == 0)
                wm += (int64_t)(rng_next(&rs) % 3000);
            cf_winop_advance(op, wm, collect, ret_got);
            model_advance(&m, wm);
            assert_int_equal(cf_winop_open_count(op), model_count(&m, is_open));
            assert_int_equal(cf_winop_kept_count(op), model_count(&m, is_kept));
        }
        if (rng_next(&rs) % 200 == 0) {
            cf_winop_foreach_open(op, collect, ret_got);
            model_open(&m);
        }
        compare_from(ret_got, &m.out, checked);
        checked = ret_got->n;
    }
    cf_winop_advance(op, INT64_MAX, collect, ret_got);
    model_advance(&m, INT64_MAX);
    compare(ret_got, &m.out);
    assert_int_equal(cf_winop_open_count(op), 0);
    /* Make sure the trace exercised what it is meant to. */
    size_t refires = 0;
    for (size_t i = 0; i < ret_got->n; i++)
        if (ret_got->e[i].revision > 0)
            refires++;
    assert_true(dropped > 10);
    if (c->allowed_lateness_ms > 0)
        assert_true(refires > 10);
    else
        assert_int_equal(refires, 0);
    model_free(&m);
    cf_winop_free(op);
}

static void randomized_trace_matches_model(void **state)
{
    (void)state;
    const cf_winop_config cfgs[] = {
        {CF_WINDOW_TUMBLING, 1000, 1000, 2500, 0},
        {CF_WINDOW_SLIDING, 5000, 1000, 2000, 0},
        {CF_WINDOW_SLIDING, 3000, 1000, 0, 0},
        /* Long lateness: many kept windows share panes with open ones. */
        {CF_WINDOW_SLIDING, 4000, 1000, 3500, 0},
    };
    const int64_t t0s[] = {1764000000000, -20000};
    for (int i = 1; i < NPAGES; i++)
        assert_true(strcmp(model_pages[i - 1], model_pages[i]) < 0);
    for (size_t ci = 0; ci < sizeof cfgs / sizeof cfgs[0]; ci++)
        for (size_t ti = 0; ti < 2; ti++) {
            uint64_t seed = 1 + ci * 2 + ti;
            sink a = {0}, b = {0};
            run_trace(&cfgs[ci], seed, t0s[ti], 2000, SIZE_MAX, &a);
            /* Save and load mid-trace: the rest must be identical. */
            run_trace(&cfgs[ci], seed, t0s[ti], 2000, 1000, &b);
            compare(&b, &a);
            sink_free(&a);
            sink_free(&b);
        }
}


/* ---- the key bound (max_keys, policy refuse) ------------------------------ */

/* A capped operator against an uncapped one fed only the events the capped
 * one took: with 12x more pages than the cap, the capped one never holds
 * more than max_keys pages, refuses only pages it does not hold while full,
 * counts every refusal, and emits exactly what the uncapped one emits (held
 * pages' results are exact; the uncapped operator is checked against the
 * brute-force model above). Pages free their place when purged, so later
 * pages get in (the active pages drift over the trace). A save/load mid-trace keeps the count and the behaviour. */
static void key_bound_refuses_new_pages_and_keeps_held_exact(void **state)
{
    (void)state;
    enum { CAP = 16, PAGES = 200, EVENTS = 20000 };
    const cf_winop_config cfgs[] = {
        {CF_WINDOW_TUMBLING, 1000, 1000, 500, CAP},
        {CF_WINDOW_SLIDING, 3000, 1000, 1000, CAP},
    };
    for (size_t ci = 0; ci < 2; ci++) {
        cf_winop_config free_cfg = cfgs[ci];
        free_cfg.max_keys = 0;
        cf_winop *a = cf_winop_new(&cfgs[ci]), *b = cf_winop_new(&free_cfg);
        assert_non_null(a);
        assert_non_null(b);
        sink sa = {0}, sb = {0};
        uint64_t rs = 7 + ci, refused = 0;
        int64_t max_ts = 1764000000000;
        bool admitted[PAGES] = {false};
        for (size_t i = 0; i < EVENTS; i++) {
            if (i == EVENTS / 2) {
                cf_winop *l = reload(&cfgs[ci], a);
                assert_int_equal(cf_winop_refused(l), refused);
                cf_winop_free(a);
                a = l;
            }
            max_ts += (int64_t)(rng_next(&rs) % 5);
            int64_t ts = max_ts - (int64_t)(rng_next(&rs) % 800);
            /* The active pages drift, so held pages go idle and are purged. */
            int page = (int)(((i / 500) * 7 + rng_next(&rs) % 24) % PAGES);
            char name[32];
            snprintf(name, sizeof name, "/p/%03d", page);
            int u = (int)(rng_next(&rs) % 50);
            size_t before = cf_winop_keys(a);
            int ra = add(a, name, u, ts, &sa);
            if (ra == -ENOSPC) {
                assert_int_equal(before, CAP);
                assert_int_equal(cf_winop_keys(a), CAP);
                refused++;
            } else {
                assert_int_equal(ra, add(b, name, u, ts, &sb));
                if (ra > 0)
                    admitted[page] = true;
            }
            assert_true(cf_winop_keys(a) <= CAP);
            assert_int_equal(cf_winop_refused(a), refused);
            if (rng_next(&rs) % 16 == 0) {
                cf_winop_advance(a, max_ts - 300, collect, &sa);
                cf_winop_advance(b, max_ts - 300, collect, &sb);
                assert_int_equal(cf_winop_open_count(a), cf_winop_open_count(b));
                assert_int_equal(cf_winop_kept_count(a), cf_winop_kept_count(b));
                assert_int_equal(cf_winop_keys(a), cf_winop_keys(b));
            }
            compare(&sa, &sb);
        }
        cf_winop_advance(a, INT64_MAX, collect, &sa);
        cf_winop_advance(b, INT64_MAX, collect, &sb);
        compare(&sa, &sb);
        assert_int_equal(cf_winop_keys(a), 0);
        /* The bound was hit often, and purging let many more pages in than
         * it holds at once. */
        assert_true(refused > EVENTS / 10);
        size_t distinct = 0;
        for (int p = 0; p < PAGES; p++)
            distinct += admitted[p];
        assert_true(distinct > 4 * CAP);
        sink_free(&sa);
        sink_free(&sb);
        cf_winop_free(a);
        cf_winop_free(b);
    }
}

/* A page already held is never refused, and a late event of a new page is
 * late (0), not refused; a state loaded under a smaller bound is kept and
 * refuses new pages until purging brings it below. */
static void key_bound_edges(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_TUMBLING, 1000, 1000, 0, 2};
    cf_winop *op = cf_winop_new(&c);
    assert_non_null(op);
    sink s = {0};
    assert_int_equal(add(op, "/a", 1, 100, &s), 1);
    assert_int_equal(add(op, "/b", 1, 1100, &s), 1);
    assert_int_equal(add(op, "/c", 1, 200, &s), -ENOSPC);
    assert_int_equal(add(op, "/a", 2, 1200, &s), 1);   /* held: a new pane is fine */
    assert_int_equal(cf_winop_refused(op), 1);
    cf_winop_advance(op, 999, collect, &s);            /* [0,1000) fires and is purged */
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 0, 1000, "/a", 1, 1, 0, true);
    assert_int_equal(add(op, "/c", 1, 300, &s), 0);    /* late, not refused */
    assert_int_equal(cf_winop_refused(op), 1);
    assert_int_equal(cf_winop_keys(op), 2);            /* /a (pane 1000) and /b */
    assert_int_equal(add(op, "/c", 1, 1300, &s), -ENOSPC);
    /* Load under a bound of 1: the two held pages stay, new ones wait. */
    cf_winop_config c1 = c;
    c1.max_keys = 1;
    cf_buf b = {0};
    assert_int_equal(cf_winop_save(op, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_winop *l = cf_winop_load(&c1, &r);
    assert_non_null(l);
    assert_int_equal(cf_winop_keys(l), 2);
    assert_int_equal(cf_winop_refused(l), 2);
    assert_int_equal(add(l, "/d", 1, 1400, &s), -ENOSPC);
    assert_int_equal(add(l, "/b", 3, 1400, &s), 1);
    cf_winop_advance(l, 1999, collect, &s);
    assert_int_equal(cf_winop_keys(l), 0);
    assert_int_equal(add(l, "/d", 1, 2400, &s), 1);
    assert_int_equal(add(l, "/e", 1, 2400, &s), -ENOSPC);
    assert_int_equal(cf_winop_refused(l), 4);
    cf_buf_free(&b);
    sink_free(&s);
    cf_winop_free(op);
    cf_winop_free(l);
}

/* A CFW2 state (before the refused count was saved) still loads. */
static void loads_version_2_state(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_TUMBLING, 1000, 1000, 0, 0};
    cf_buf b = {0};
    cf_buf_put_u32(&b, 0x32574643u);   /* "CFW2" */
    cf_buf_put_u8(&b, CF_WINDOW_TUMBLING);
    cf_buf_put_i64(&b, 1000);
    cf_buf_put_i64(&b, 1000);
    cf_buf_put_i64(&b, 0);
    cf_buf_put_i64(&b, 500);           /* watermark */
    cf_buf_put_u32(&b, 1);             /* one slot */
    cf_buf_put_i64(&b, 1000);
    cf_buf_put_u32(&b, 1);             /* one cell */
    cf_buf_put_str(&b, "/x", 2);
    cf_buf_put_u64(&b, 3);             /* count */
    cf_buf_put_u8(&b, 0);
    cf_buf_put_u32(&b, 0);
    cf_buf_put_u16(&b, 0);
    cf_buf_put_u8(&b, 1);
    cf_buf_put_u64(&b, 77);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_winop *op = cf_winop_load(&c, &r);
    assert_non_null(op);
    assert_int_equal(r.left, 0);
    assert_int_equal(cf_winop_refused(op), 0);
    assert_int_equal(cf_winop_open_count(op), 1);
    sink s = {0};
    cf_winop_advance(op, 1999, collect, &s);
    assert_int_equal(s.n, 1);
    expect(&s.e[0], 1000, 2000, "/x", 3, 1, 0, true);
    sink_free(&s);
    cf_buf_free(&b);
    cf_winop_free(op);
}


/* ---- panes ---------------------------------------------------------------- */

static cf_winop *sliding_op(int64_t size, int64_t slide, int64_t late)
{
    cf_winop_config c = {CF_WINDOW_SLIDING, size, slide, late, 0};
    cf_winop *op = cf_winop_new(&c);
    assert_non_null(op);
    return op;
}

/* A late event re-fires every fired, kept window of its pane, each with its
 * own revision; a page new to fired windows starts at revision 0 there; the
 * revisions survive save/load. */
static void pane_late_event_refires_with_own_revisions(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_SLIDING, 4000, 1000, 3000, 0};
    cf_winop *op = cf_winop_new(&c);
    assert_non_null(op);
    sink s = {0};
    assert_int_equal(add(op, "/p", 1, 3500, &s), 4);    /* windows 0..3000 */
    cf_winop_advance(op, 4999, collect, &s);            /* fires 0 and 1000 */
    assert_int_equal(s.n, 2);
    expect(&s.e[0], 0, 4000, "/p", 1, 1, 0, true);
    expect(&s.e[1], 1000, 5000, "/p", 1, 1, 0, true);
    assert_int_equal(add(op, "/p", 2, 3200, &s), 4);
    assert_int_equal(s.n, 4);
    expect(&s.e[2], 0, 4000, "/p", 2, 2, 1, true);
    expect(&s.e[3], 1000, 5000, "/p", 2, 2, 1, true);
    cf_winop_advance(op, 5999, collect, &s);            /* fires 2000 */
    assert_int_equal(s.n, 5);
    expect(&s.e[4], 2000, 6000, "/p", 2, 2, 0, true);
    /* Pane 1000: windows -2000 and -1000 are purged (1999 + 3000 and
     * 2999 + 3000 <= 5999), 0 and 1000 are kept. */
    assert_int_equal(add(op, "/p", 3, 1500, &s), 2);
    assert_int_equal(s.n, 7);
    expect(&s.e[5], 0, 4000, "/p", 3, 3, 2, true);
    expect(&s.e[6], 1000, 5000, "/p", 3, 3, 2, true);
    /* Save and load: the revisions carry over. */
    cf_buf b = {0};
    assert_int_equal(cf_winop_save(op, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_winop *l = cf_winop_load(&c, &r);
    assert_non_null(l);
    cf_buf_free(&b);
    cf_winop_free(op);
    op = l;
    assert_int_equal(cf_winop_open_count(op), 1);       /* 3000 */
    assert_int_equal(cf_winop_kept_count(op), 3);
    /* Pane 3000: 0, 1000, 2000 re-fire (revisions 3, 3, 1); 3000 is open. */
    assert_int_equal(add(op, "/p", 3, 3900, &s), 4);
    assert_int_equal(s.n, 10);
    expect(&s.e[7], 0, 4000, "/p", 4, 3, 3, true);
    expect(&s.e[8], 1000, 5000, "/p", 4, 3, 3, true);
    expect(&s.e[9], 2000, 6000, "/p", 3, 3, 1, true);
    /* A page new to three fired windows: revision 0 in each, new pairs. */
    assert_int_equal(add(op, "/q", 9, 3100, &s), 4);
    assert_int_equal(s.n, 13);
    expect(&s.e[10], 0, 4000, "/q", 1, 1, 0, true);
    expect(&s.e[11], 1000, 5000, "/q", 1, 1, 0, true);
    expect(&s.e[12], 2000, 6000, "/q", 1, 1, 0, true);
    assert_int_equal(cf_winop_kept_count(op), 6);
    assert_int_equal(cf_winop_open_count(op), 2);
    /* Again, from another pane: now revision 1 in both kept windows. */
    assert_int_equal(add(op, "/q", 8, 1200, &s), 2);
    assert_int_equal(s.n, 15);
    expect(&s.e[13], 0, 4000, "/q", 2, 2, 1, true);
    expect(&s.e[14], 1000, 5000, "/q", 2, 2, 1, true);
    assert_int_equal(cf_winop_kept_count(op), 6);
    /* 3000 fires with both pages, at revision 0. */
    cf_winop_advance(op, 6999, collect, &s);
    assert_int_equal(s.n, 17);
    expect(&s.e[15], 3000, 7000, "/p", 3, 3, 0, true);
    expect(&s.e[16], 3000, 7000, "/q", 1, 1, 0, true);
    assert_int_equal(cf_winop_open_count(op), 0);
    /* 3000 adds 2 kept pairs, 0 (purged at 6999) takes 2 away. */
    assert_int_equal(cf_winop_kept_count(op), 6);
    sink_free(&s);
    cf_winop_free(op);
}

/* A pane is shared by k windows and freed only with the last of them: a
 * window still kept sees the data of its panes after older windows that
 * shared them are purged. */
static void pane_purge_shared_by_windows(void **state)
{
    (void)state;
    cf_winop *op = sliding_op(3000, 1000, 1000);
    sink s = {0};
    size_t base = cf_winop_memory(op);
    add(op, "/p", 1, 500, &s);      /* pane 0 */
    add(op, "/p", 2, 1500, &s);     /* pane 1000 */
    add(op, "/p", 3, 2500, &s);     /* pane 2000 */
    add(op, "/p", 4, 2600, &s);
    assert_int_equal(cf_winop_open_count(op), 5);       /* -2000 .. 2000 */
    cf_winop_advance(op, 3999, collect, &s);
    /* Fired: -2000, -1000, 0, 1000 (3999 >= 3999); purged: -2000, -1000,
     * 0 (2999 + 1000 <= 3999); pane 0 is gone, panes 1000, 2000 stay. */
    assert_int_equal(s.n, 4);
    expect(&s.e[2], 0, 3000, "/p", 4, 4, 0, true);
    expect(&s.e[3], 1000, 4000, "/p", 3, 3, 0, true);
    assert_int_equal(cf_winop_kept_count(op), 1);
    assert_int_equal(cf_winop_open_count(op), 1);
    /* Pane 1000 is only in window 1000 now. */
    assert_int_equal(add(op, "/p", 5, 1700, &s), 1);
    expect(&s.e[4], 1000, 4000, "/p", 4, 4, 1, true);
    /* Pane 0 is in no live window. */
    assert_int_equal(add(op, "/p", 5, 700, &s), 0);
    cf_winop_advance(op, 4999, collect, &s);            /* fires 2000, purges 1000 */
    assert_int_equal(s.n, 6);
    expect(&s.e[5], 2000, 5000, "/p", 2, 2, 0, true);
    assert_int_equal(add(op, "/p", 6, 1999, &s), 0);
    assert_int_equal(add(op, "/p", 6, 2999, &s), 1);
    expect(&s.e[6], 2000, 5000, "/p", 3, 3, 1, true);
    cf_winop_advance(op, 5999, collect, &s);
    assert_int_equal(cf_winop_kept_count(op), 0);
    assert_int_equal(cf_winop_open_count(op), 0);
    assert_int_equal(add(op, "/p", 6, 2999, &s), 0);
    assert_int_equal(s.n, 7);
    /* Cells are recycled: the same load later does not grow the state. */
    size_t after = cf_winop_memory(op);
    assert_true(after > base);
    add(op, "/p", 1, 10500, &s);
    add(op, "/p", 2, 11500, &s);
    add(op, "/p", 3, 12500, &s);
    cf_winop_advance(op, 100000, collect, &s);
    assert_int_equal(cf_winop_memory(op), after);
    sink_free(&s);
    cf_winop_free(op);
}

/* Pages present in some panes of a window only; unique users merged over
 * panes exactly (sparse) and as the very sketch of the union (dense). */
static void pane_page_in_some_panes_only(void **state)
{
    (void)state;
    cf_winop *op = sliding_op(3000, 1000, 0);
    sink s = {0};
    add(op, "/a", 1, 100, &s);      /* pane 0 */
    add(op, "/a", 1, 2100, &s);     /* pane 2000 */
    add(op, "/a", 2, 2200, &s);
    add(op, "/b", 1, 1100, &s);     /* pane 1000 */
    /* /a: windows -2000 .. 2000 (5); /b: -1000 .. 1000 (3). */
    assert_int_equal(cf_winop_open_count(op), 8);
    cf_winop_foreach_open(op, collect, &s);
    assert_int_equal(s.n, 8);
    expect(&s.e[0], -2000, 1000, "/a", 1, 1, 0, false);
    expect(&s.e[1], -1000, 2000, "/a", 1, 1, 0, false);
    expect(&s.e[2], -1000, 2000, "/b", 1, 1, 0, false);
    expect(&s.e[3], 0, 3000, "/a", 3, 2, 0, false);
    expect(&s.e[4], 0, 3000, "/b", 1, 1, 0, false);
    expect(&s.e[5], 1000, 4000, "/a", 2, 2, 0, false);
    expect(&s.e[6], 1000, 4000, "/b", 1, 1, 0, false);
    expect(&s.e[7], 2000, 5000, "/a", 2, 2, 0, false);
    /* /b in pane 2000 too: no new pair for 0 and 1000, one for 2000. */
    add(op, "/b", 3, 2300, &s);
    assert_int_equal(cf_winop_open_count(op), 9);
    sink_reset(&s);
    /* Sparse sets over panes: users 0..199 in pane 0, 100..299 in pane
     * 2000: 300 exactly in window 0. */
    for (int u = 0; u < 200; u++)
        add(op, "/c", u, 10, &s);
    for (int u = 100; u < 300; u++)
        add(op, "/c", u, 2010, &s);
    /* Dense: 700 users in pane 0, 700 overlapping by 300 in pane 1000. */
    cf_hll *want = cf_hll_new();
    assert_non_null(want);
    for (int u = 1000; u < 1700; u++) {
        add(op, "/d", u, 20, &s);
        assert_true(cf_hll_add(want, user(u)) >= 0);
    }
    for (int u = 1400; u < 2100; u++) {
        add(op, "/d", u, 1020, &s);
        assert_true(cf_hll_add(want, user(u)) >= 0);
    }
    cf_winop_foreach_open(op, collect, &s);
    bool seen_c = false, seen_d = false;
    for (size_t i = 0; i < s.n; i++) {
        if (s.e[i].start == 0 && strcmp(s.e[i].page, "/c") == 0) {
            expect(&s.e[i], 0, 3000, "/c", 400, 300, 0, false);
            seen_c = true;
        }
        if (s.e[i].start == 0 && strcmp(s.e[i].page, "/d") == 0) {
            assert_int_equal(s.e[i].count, 1400);
            assert_int_equal(s.e[i].unique, cf_hll_count(want));
            seen_d = true;
        }
    }
    assert_true(seen_c && seen_d);
    cf_hll_free(want);
    /* Final results equal the interim ones; all go at lateness 0. */
    sink_reset(&s);
    cf_winop_advance(op, INT64_MAX, collect, &s);
    assert_int_equal(cf_winop_open_count(op), 0);
    assert_int_equal(cf_winop_kept_count(op), 0);
    sink_free(&s);
    cf_winop_free(op);
}

static void load_rejects_bad_pane_state(void **state)
{
    (void)state;
    cf_winop_config c = {CF_WINDOW_SLIDING, 2000, 1000, 5000, 0};
    cf_winop *op = cf_winop_new(&c);
    sink s = {0};
    add(op, "/p", 1, 10, &s);
    cf_winop_advance(op, 1999, collect, &s);    /* fires -1000 and 0 */
    add(op, "/p", 2, 20, &s);                   /* records at -1000 and 0 */
    cf_buf b = {0};
    assert_int_equal(cf_winop_save(op, &b), 0);
    cf_reader r;
    /* Layout after the 49-byte header: slot -1000 (i64, u32 = 1 cell):
     * str "/p" (u32 len + 2), u64 count 0, u8 rec 1, u32 revision 1, ... */
    size_t rec_at = 49 + 12 + 6 + 8;
    assert_int_equal(b.data[rec_at], 1);
    /* A record dropped leaves a cell with neither data nor record. */
    b.data[rec_at] = 0;
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c, &r));
    b.data[rec_at] = 1;
    /* A prior page cannot be back at revision 0. */
    b.data[rec_at + 1] = 0;
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_winop_load(&c, &r));
    b.data[rec_at + 1] = 1;
    cf_reader_init(&r, b.data, b.len);
    cf_winop *ok = cf_winop_load(&c, &r);
    assert_non_null(ok);
    assert_int_equal(cf_winop_kept_count(ok), 2);
    cf_winop_free(ok);
    cf_buf_free(&b);
    sink_free(&s);
    cf_winop_free(op);
}

/* A first event in a pane whose earliest window starts near INT64_MIN
 * looks at neighbouring panes without stepping out of int64. */
static void pane_neighbours_near_int64_min(void **state)
{
    (void)state;
    cf_winop *op = sliding_op(3000, 1000, 0);
    sink s = {0};
    const int64_t first = -9223372036854775807LL - 1 + 808; /* smallest multiple of 1000 */
    const int64_t p = first + 2000;
    assert_int_equal(add(op, "/q", 1, p - 1000, &s), 0);    /* its first window would not fit */
    assert_int_equal(add(op, "/q", 1, p + 1005, &s), 3);
    assert_int_equal(add(op, "/q", 2, p + 5, &s), 3);
    assert_int_equal(cf_winop_open_count(op), 4);
    cf_winop_foreach_open(op, collect, &s);
    assert_int_equal(s.n, 4);
    expect(&s.e[0], first, first + 3000, "/q", 1, 1, 0, false);
    expect(&s.e[1], first + 1000, first + 4000, "/q", 2, 2, 0, false);
    expect(&s.e[3], first + 3000, first + 6000, "/q", 1, 1, 0, false);
    sink_free(&s);
    cf_winop_free(op);
}

/* ---- rescale: load_parts ------------------------------------------------- */

static bool odd_page(void *ctx, const char *p, size_t len)
{
    (void)ctx;
    return len > 0 && (p[len - 1] & 1);
}

static bool even_page(void *ctx, const char *p, size_t len) { return !odd_page(ctx, p, len); }

static void save_to(const cf_winop *op, cf_buf *b)
{
    cf_buf_reset(b);
    assert_int_equal(cf_winop_save(op, b), 0);
}

/* Two operators fed the odd and the even pages of a trace (same watermark
 * moves) load into exactly the operator fed the whole trace, and one
 * operator splits back into the two: the rescale of a restart with another
 * shard count. */
static void load_parts_merges_and_splits(void **state)
{
    (void)state;
    /* Seeded (as the daemon makes them): saves the same bytes as unseeded. */
    cf_winop_config c = {CF_WINDOW_SLIDING, 20, 5, 10, 0};
    cf_winop *all = cf_winop_new(&c), *odd = cf_winop_new(&c), *even = cf_winop_new(&c);
    cf_winop *plain = cf_winop_new(&c);
    assert_int_equal(cf_winop_set_hash_seed(all, 77), 0);
    assert_int_equal(cf_winop_set_hash_seed(odd, 77), 0);
    assert_int_equal(cf_winop_set_hash_seed(even, 77), 0);
    sink s = {0};
    uint64_t rng = 7;
    char page[16];
    int64_t ts = 1000;
    for (int i = 0; i < 3000; i++) {
        ts += (int64_t)(rng_next(&rng) % 3);
        int64_t t = ts - (int64_t)(rng_next(&rng) % 40);  /* some late ones */
        snprintf(page, sizeof page, "/p%d", (int)(rng_next(&rng) % 37));
        int u = (int)(rng_next(&rng) % 150);
        add(all, page, u, t, &s);
        add(plain, page, u, t, &s);
        add(odd_page(NULL, page, strlen(page)) ? odd : even, page, u, t, &s);
        if (i % 50 == 49) {
            cf_winop_advance(all, ts - 5, collect, &s);
            cf_winop_advance(plain, ts - 5, collect, &s);
            cf_winop_advance(odd, ts - 5, collect, &s);
            cf_winop_advance(even, ts - 5, collect, &s);
        }
    }
    cf_buf ball = {0}, bodd = {0}, beven = {0}, got = {0};
    save_to(plain, &bodd);
    save_to(all, &ball);
    assert_int_equal(bodd.len, ball.len);
    assert_memory_equal(bodd.data, ball.data, ball.len);
    cf_winop_free(plain);
    save_to(odd, &bodd);
    save_to(even, &beven);
    cf_reader parts[2];
    cf_reader_init(&parts[0], bodd.data, bodd.len);
    cf_reader_init(&parts[1], beven.data, beven.len);
    cf_winop *merged = cf_winop_load_parts(&c, 77, parts, 2, NULL, NULL);
    assert_non_null(merged);
    save_to(merged, &got);
    assert_int_equal(got.len, ball.len);
    assert_memory_equal(got.data, ball.data, ball.len);
    assert_int_equal(cf_winop_open_count(merged), cf_winop_open_count(all));
    assert_int_equal(cf_winop_kept_count(merged), cf_winop_kept_count(all));

    cf_reader one;
    cf_reader_init(&one, ball.data, ball.len);
    cf_winop *split = cf_winop_load_parts(&c, 77, &one, 1, odd_page, NULL);
    assert_non_null(split);
    save_to(split, &got);
    assert_int_equal(got.len, bodd.len);
    assert_memory_equal(got.data, bodd.data, bodd.len);
    cf_winop_free(split);
    cf_reader_init(&one, ball.data, ball.len);
    split = cf_winop_load_parts(&c, 77, &one, 1, even_page, NULL);
    assert_non_null(split);
    save_to(split, &got);
    assert_int_equal(got.len, beven.len);
    assert_memory_equal(got.data, beven.data, beven.len);

    /* Parts of different cuts (watermarks) are refused. */
    cf_winop_advance(odd, ts + 100, collect, &s);
    save_to(odd, &bodd);
    cf_reader_init(&parts[0], bodd.data, bodd.len);
    cf_reader_init(&parts[1], beven.data, beven.len);
    assert_null(cf_winop_load_parts(&c, 77, parts, 2, NULL, NULL));
    assert_int_equal(cf_winop_set_hash_seed(all, 5), -EBUSY);

    cf_winop_free(split);
    cf_winop_free(merged);
    cf_winop_free(all);
    cf_winop_free(odd);
    cf_winop_free(even);
    cf_buf_free(&ball);
    cf_buf_free(&bodd);
    cf_buf_free(&beven);
    cf_buf_free(&got);
    sink_free(&s);
}

/* ---- the sketch behind unique_users (history rollups) ------------------- */

typedef struct sketch_sink {
    cf_hll *got[8];
    uint64_t unique[8];
    int64_t start[8];
    size_t n;
} sketch_sink;

static void collect_sketch(void *ctx, const cf_window_result *r)
{
    sketch_sink *s = ctx;
    if (!r->final)
        return;
    assert_true(s->n < 8);
    cf_buf b = {0};
    assert_int_equal(cf_window_result_save_users(r, &b), 0);
    cf_reader in;
    cf_reader_init(&in, b.data, b.len);
    s->got[s->n] = cf_hll_load(&in);
    assert_non_null(s->got[s->n]);
    s->unique[s->n] = r->unique_users;
    s->start[s->n] = r->start;
    s->n++;
    cf_buf_free(&b);
}

/* Every final result carries the very sketch its unique_users came from:
 * one pane with few users (inline), one with many (an HLL), and a sliding
 * window merged from several panes, each equal to the sketch of its users
 * built directly, so sketches of several windows merge like their users. */
static void final_results_carry_their_sketch(void **state)
{
    (void)state;
    cf_winop_config c = {.type = CF_WINDOW_SLIDING, .size_ms = 300, .slide_ms = 100,
                         .allowed_lateness_ms = 0};
    cf_winop *op = cf_winop_new(&c);
    assert_non_null(op);
    sketch_sink s = {0};
    /* Pane [0,100): users 0..1 (inline); pane [100,200): users 0..699 (dense). */
    for (int u = 0; u < 2; u++)
        assert_true(cf_winop_add(op, "/a", 2, user(u), 10, collect_sketch, &s) > 0);
    for (int u = 0; u < 700; u++)
        assert_true(cf_winop_add(op, "/a", 2, user(u), 150, collect_sketch, &s) > 0);
    cf_winop_advance(op, 1000, collect_sketch, &s);
    /* Windows starting -200, -100 (pane 0 only, or panes 0-1), 0, 100. */
    assert_true(s.n >= 3);
    for (size_t i = 0; i < s.n; i++) {
        cf_hll *want = cf_hll_new();
        assert_non_null(want);
        int64_t st = s.start[i];
        if (st <= 0 && st + 300 > 10)
            for (int u = 0; u < 2; u++)
                assert_true(cf_hll_add(want, user(u)) >= 0);
        if (st <= 150 && st + 300 > 150)
            for (int u = 0; u < 700; u++)
                assert_true(cf_hll_add(want, user(u)) >= 0);
        assert_true(cf_hll_equal(s.got[i], want));
        assert_true(cf_hll_count(s.got[i]) == s.unique[i]);
        cf_hll_free(want);
        cf_hll_free(s.got[i]);
    }
    cf_winop_free(op);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(config_validation),
        cmocka_unit_test(load_parts_merges_and_splits),
        cmocka_unit_test(tumbling_end_boundary_and_firing),
        cmocka_unit_test(watermark_none_and_backwards),
        cmocka_unit_test(lateness_limit_exact),
        cmocka_unit_test(late_event_into_window_never_created),
        cmocka_unit_test(emission_order_end_then_page),
        cmocka_unit_test(foreach_open_skips_fired),
        cmocka_unit_test(unique_users_exact_well_past_100),
        cmocka_unit_test(sliding_windows),
        cmocka_unit_test(extreme_times_do_not_overflow),
        cmocka_unit_test(purge_releases_memory),
        cmocka_unit_test(load_rejects_bad_input),
        cmocka_unit_test(randomized_trace_matches_model),
        cmocka_unit_test(key_bound_refuses_new_pages_and_keeps_held_exact),
        cmocka_unit_test(key_bound_edges),
        cmocka_unit_test(loads_version_2_state),
        cmocka_unit_test(pane_late_event_refires_with_own_revisions),
        cmocka_unit_test(pane_purge_shared_by_windows),
        cmocka_unit_test(pane_page_in_some_panes_only),
        cmocka_unit_test(load_rejects_bad_pane_state),
        cmocka_unit_test(pane_neighbours_near_int64_min),
        cmocka_unit_test(final_results_carry_their_sketch),
    };
    return cmocka_run_group_tests_name("winop", tests, NULL, NULL);
}
