/* Unit tests for cf_sessions: per-user session windows (SPEC section 5), their
 * boundaries, merges, lateness and revisions, eviction, save/load, and a
 * seeded out-of-order trace checked against a brute-force model. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

#include <cmocka.h>

#include "cf_sessions.h"
#include "cf_time.h"

/* ---- captured emissions ---------------------------------------------------- */

struct rec {
    char user[32];
    int64_t start, end, duration;
    uint64_t views, distinct;
    char entry[32], exit[32];
    uint32_t revision;
    bool final;
};

#define MAX_RECS 4096
struct log {
    struct rec r[MAX_RECS];
    size_t n;
};

static void copy_str(char *dst, const char *s, size_t n)
{
    if (n > 31)
        n = 31;
    memcpy(dst, s, n);
    dst[n] = 0;
}

static void capture(void *ctx, const cf_session_record *r)
{
    struct log *l = ctx;
    assert_true(l->n < MAX_RECS);
    struct rec *c = &l->r[l->n++];
    memset(c, 0, sizeof *c);
    copy_str(c->user, r->user_id, r->user_id_len);
    c->start = r->start;
    c->end = r->end;
    c->duration = r->duration_ms;
    c->views = r->page_views;
    c->distinct = r->distinct_pages;
    copy_str(c->entry, r->entry_page, r->entry_page_len);
    copy_str(c->exit, r->exit_page, r->exit_page_len);
    c->revision = r->revision;
    c->final = r->final;
}

static struct log *new_log(void)
{
    struct log *l = calloc(1, sizeof *l);
    assert_non_null(l);
    return l;
}

static int add(cf_sessions *s, const char *user, const char *page, int64_t ts, struct log *l)
{
    return cf_sessions_add(s, user, strlen(user), page, strlen(page), ts, capture, l);
}

static void expect(const struct rec *r, const char *user, int64_t start, int64_t end,
                   uint64_t views, uint64_t distinct, const char *entry, const char *exit,
                   uint32_t revision, bool final)
{
    assert_string_equal(r->user, user);
    assert_true(r->start == start);
    assert_true(r->end == end);
    assert_true(r->duration == end - start);
    assert_int_equal(r->views, views);
    assert_int_equal(r->distinct, distinct);
    assert_string_equal(r->entry, entry);
    assert_string_equal(r->exit, exit);
    assert_int_equal(r->revision, revision);
    assert_int_equal(r->final, final);
}

/* ---- rules ----------------------------------------------------------------- */

static void exactly_gap_apart_is_one_session(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    assert_int_equal(add(s, "u", "/b", 10, l), 1);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[0], "u", 0, 10, 2, 2, "/a", "/b", 0, false);
    l->n = 0;
    /* closes at W = last_ts + gap - 1 = 19 exactly, not at 18 */
    cf_sessions_advance(s, 18, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, 19, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u", 0, 10, 2, 2, "/a", "/b", 0, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 0);
    cf_sessions_free(s);
    cf_sessions_free(NULL);
    free(l);
}

static void gap_plus_one_is_two_sessions(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "u", "/b", 11, l), 1);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    assert_int_equal(cf_sessions_open_count(s), 2);
    /* oldest first */
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 2);
    expect(&l->r[0], "u", 0, 0, 1, 1, "/a", "/a", 0, false);
    expect(&l->r[1], "u", 11, 11, 1, 1, "/b", "/b", 0, false);
    l->n = 0;
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u", 0, 0, 1, 1, "/a", "/a", 0, true);
    cf_sessions_advance(s, 20, capture, l);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 11, 11, 1, 1, "/b", "/b", 0, true);
    cf_sessions_free(s);
    free(l);
}

static void bridging_event_merges(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    assert_int_equal(add(s, "u", "/x", 2, l), 1);
    assert_int_equal(add(s, "u", "/b", 20, l), 1);
    assert_int_equal(add(s, "u", "/x", 22, l), 1);
    assert_int_equal(add(s, "u", "/y", 21, l), 1);
    assert_int_equal(cf_sessions_open_count(s), 2);
    /* 12 is within gap of 2 and of 20: one session [0, 22] */
    assert_int_equal(add(s, "u", "/c", 12, l), 1);
    assert_int_equal(l->n, 0);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    /* views add, distinct pages are a union (/x in both), entry of the
     * smallest ts, exit of the largest */
    expect(&l->r[0], "u", 0, 22, 6, 5, "/a", "/x", 0, false);
    cf_sessions_free(s);
    free(l);
}

static void merge_of_fired_sessions_takes_max_revision(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 100, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    assert_int_equal(add(s, "u", "/b", 20, l), 1);
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(l->n, 1);
    /* joins that keep the fire point (9) behind W re-fire at once */
    assert_int_equal(add(s, "u", "/a2", 0, l), 1); /* rev 1 */
    assert_int_equal(add(s, "u", "/a3", 0, l), 1); /* rev 2 */
    cf_sessions_advance(s, 29, capture, l);       /* [20] fires rev 0 */
    assert_int_equal(l->n, 4);
    expect(&l->r[2], "u", 0, 0, 3, 3, "/a", "/a3", 2, true);
    expect(&l->r[3], "u", 20, 20, 1, 1, "/b", "/b", 0, true);
    /* 10 touches [0,0] (10 <= 0 + 10) and [20] (10 + 10 >= 20); the merged
     * fire point 29 is reached: fires at once with max(2, 0) + 1 */
    assert_int_equal(add(s, "u", "/m", 10, l), 1);
    assert_int_equal(l->n, 5);
    expect(&l->r[4], "u", 0, 20, 5, 5, "/a", "/b", 3, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    cf_sessions_free(s);
    free(l);
}

static void merge_of_open_and_fired(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 100, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(add(s, "u", "/b", 20, l), 1); /* open */
    assert_int_equal(cf_sessions_open_count(s), 1);
    /* merged [0, 20]: fire point 29 is past W = 9, so (as Flink) it is open
     * again with the pending revision 1 and nothing is emitted yet */
    assert_int_equal(add(s, "u", "/m", 10, l), 1);
    assert_int_equal(l->n, 1);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[1], "u", 0, 20, 3, 3, "/a", "/b", 1, false);
    cf_sessions_advance(s, 28, capture, l);
    assert_int_equal(l->n, 2);
    cf_sessions_advance(s, 29, capture, l);
    assert_int_equal(l->n, 3);
    expect(&l->r[2], "u", 0, 20, 3, 3, "/a", "/b", 1, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    cf_sessions_advance(s, 1000, capture, l);
    assert_int_equal(l->n, 3);
    cf_sessions_free(s);
    free(l);
}

static void revision_on_late_join(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 5, 0);
    assert_int_equal(add(s, "u", "/a", 100, l), 1);
    cf_sessions_advance(s, 109, capture, l); /* fires; kept until W >= 114 */
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u", 100, 100, 1, 1, "/a", "/a", 0, true);
    /* own purge point 90 + 9 + 5 = 104 <= W, but it joins a kept session */
    cf_sessions_advance(s, 110, capture, l);
    assert_int_equal(add(s, "u", "/e", 90, l), 1);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 90, 100, 2, 2, "/e", "/a", 1, true);
    /* fire point 105 + 9 = 114 > W: re-opened, revision 2 pending */
    assert_int_equal(add(s, "u", "/f", 105, l), 1);
    assert_int_equal(l->n, 2);
    assert_int_equal(cf_sessions_open_count(s), 1);
    cf_sessions_advance(s, 113, capture, l);
    assert_int_equal(l->n, 2);
    cf_sessions_advance(s, 114, capture, l);
    assert_int_equal(l->n, 3);
    expect(&l->r[2], "u", 90, 105, 3, 3, "/e", "/f", 2, true);
    /* now kept until W >= 105 + 9 + 5 = 119 */
    cf_sessions_advance(s, 118, capture, l);
    assert_int_equal(add(s, "u", "/g", 115, l), 1); /* re-opened, rev 3 pending */
    assert_int_equal(add(s, "u", "/h", 116, l), 1); /* still rev 3: not emitted since */
    assert_int_equal(l->n, 3);
    cf_sessions_advance(s, 125, capture, l);       /* fire point 116 + 9 */
    assert_int_equal(l->n, 4);
    expect(&l->r[3], "u", 90, 116, 5, 5, "/e", "/h", 3, true);
    /* kept until W >= 116 + 14 = 130; a join that leaves the fire point
     * behind W re-fires at once */
    cf_sessions_advance(s, 129, capture, l);
    assert_int_equal(add(s, "u", "/i", 100, l), 1);
    assert_int_equal(l->n, 5);
    expect(&l->r[4], "u", 90, 116, 6, 6, "/e", "/h", 4, true);
    /* purged at W = 130: an event at 116 would have joined */
    cf_sessions_advance(s, 130, capture, l);
    assert_int_equal(add(s, "u", "/j", 116, l), 0);
    assert_int_equal(l->n, 5);
    cf_sessions_free(s);
    free(l);
}

/* The Flink rule: a late event that moves a fired session's fire point past
 * the watermark re-opens it instead of re-emitting it at once. */
static void late_join_past_watermark_reopens(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 50, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u", 0, 0, 1, 1, "/a", "/a", 0, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    /* last_ts 5: fire point 14 > W = 9: no emission, open again */
    assert_int_equal(add(s, "u", "/b", 5, l), 1);
    assert_int_equal(l->n, 1);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[1], "u", 0, 5, 2, 2, "/a", "/b", 1, false);
    /* another event while re-opened: same pending revision */
    assert_int_equal(add(s, "u", "/c", 3, l), 1);
    assert_int_equal(l->n, 2);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[2], "u", 0, 5, 3, 3, "/a", "/b", 1, false);
    l->n = 0;
    cf_sessions_advance(s, 13, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, 14, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u", 0, 5, 3, 3, "/a", "/b", 1, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 0);
    cf_sessions_advance(s, 40, capture, l);
    assert_int_equal(l->n, 1);
    /* a join whose fire point (14) is behind W fires at once, revision 2 */
    assert_int_equal(add(s, "u", "/d", 2, l), 1);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 0, 5, 4, 4, "/a", "/b", 2, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    /* moving last_ts to 15 keeps the fire point 24 behind W = 40: at once */
    assert_int_equal(add(s, "u", "/e", 15, l), 1);
    assert_int_equal(l->n, 3);
    expect(&l->r[2], "u", 0, 15, 5, 5, "/a", "/e", 3, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    cf_sessions_free(s);
    free(l);
}

/* A re-opened session (revision r pending, r - 1 emitted) merged with a fired
 * one (revision q emitted) gets max(r, q + 1): one past every revision
 * emitted, none skipped. */
static void merge_of_reopened_and_fired(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 100, 0);
    assert_int_equal(add(s, "u", "/b", -20, l), 1);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    cf_sessions_advance(s, 9, capture, l);          /* both fire, rev 0 */
    assert_int_equal(add(s, "u", "/a1", 0, l), 1);  /* rev 1 at once */
    assert_int_equal(add(s, "u", "/a2", 0, l), 1);  /* rev 2 at once */
    assert_int_equal(l->n, 4);
    assert_int_equal(add(s, "u", "/a3", 5, l), 1);  /* re-opened, rev 3 pending */
    assert_int_equal(l->n, 4);
    assert_int_equal(cf_sessions_open_count(s), 1);
    /* -10 touches [-20] and [0, 5] */
    assert_int_equal(add(s, "u", "/m", -10, l), 1);
    assert_int_equal(l->n, 4);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[4], "u", -20, 5, 6, 6, "/b", "/a3", 3, false);
    cf_sessions_advance(s, 14, capture, l);
    assert_int_equal(l->n, 6);
    expect(&l->r[5], "u", -20, 5, 6, 6, "/b", "/a3", 3, true);
    cf_sessions_free(s);

    /* two open sessions, one re-opened with revision 1 pending: the merge
     * keeps 1 (neither has emitted it) and fires at once when due */
    l->n = 0;
    s = cf_sessions_new(10, 100, 0);
    assert_int_equal(add(s, "u", "/a", 0, l), 1);
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(add(s, "u", "/b", 5, l), 1);   /* re-opened, rev 1 */
    assert_int_equal(add(s, "u", "/c", 25, l), 1);  /* open, rev 0 */
    assert_int_equal(cf_sessions_open_count(s), 2);
    assert_int_equal(add(s, "u", "/d", 15, l), 1);  /* merges both */
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(l->n, 1);
    cf_sessions_advance(s, 34, capture, l);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 0, 25, 4, 4, "/a", "/c", 1, true);
    cf_sessions_free(s);
    free(l);
}

/* Revisions saturate at 2^32 - 1, and a saved re-opened session (fired = 0,
 * revision > 0) loads and fires with its pending revision. */
static void revision_saturates_and_reopened_loads(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_buf b = {0};
    cf_buf_put_u32(&b, 0x53534643u); /* "CFSS" */
    cf_buf_put_u32(&b, 1);
    cf_buf_put_i64(&b, 10);  /* gap */
    cf_buf_put_i64(&b, 100); /* lateness */
    cf_buf_put_i64(&b, 9);   /* wm */
    cf_buf_put_u64(&b, 0);   /* evictions */
    cf_buf_put_u32(&b, 1);   /* users */
    cf_buf_put_str(&b, "u", 1);
    cf_buf_put_u32(&b, 2);
    /* [0, 0] fired with the largest revision */
    cf_buf_put_i64(&b, 0);
    cf_buf_put_i64(&b, 0);
    cf_buf_put_u32(&b, 1);
    cf_buf_put_u32(&b, UINT32_MAX);
    cf_buf_put_u8(&b, 1);
    cf_buf_put_str(&b, "/a", 2);
    cf_buf_put_str(&b, "/a", 2);
    cf_buf_put_u32(&b, 1);
    cf_buf_put_u64(&b, 0x1111);
    /* [100, 100] re-opened, revision 7 pending */
    cf_buf_put_i64(&b, 100);
    cf_buf_put_i64(&b, 100);
    cf_buf_put_u32(&b, 1);
    cf_buf_put_u32(&b, 7);
    cf_buf_put_u8(&b, 0);
    cf_buf_put_str(&b, "/b", 2);
    cf_buf_put_str(&b, "/b", 2);
    cf_buf_put_u32(&b, 1);
    cf_buf_put_u64(&b, 0x2222);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_sessions *s = cf_sessions_load(10, 100, 0, &r);
    assert_non_null(s);
    assert_int_equal(r.left, 0);
    cf_buf_free(&b);
    assert_int_equal(cf_sessions_open_count(s), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[0], "u", 100, 100, 1, 1, "/b", "/b", 7, false);
    /* a join of the fired one: revision stays at the top, never wraps to 0 */
    assert_int_equal(add(s, "u", "/c", 0, l), 1);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 0, 0, 2, 2, "/a", "/c", UINT32_MAX, true);
    cf_sessions_advance(s, 109, capture, l);
    assert_int_equal(l->n, 3);
    expect(&l->r[2], "u", 100, 100, 1, 1, "/b", "/b", 7, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    cf_sessions_free(s);
    free(l);
}

static void late_drop_boundary(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 5, 0);
    cf_sessions_advance(s, 100, capture, l);
    /* new session: dropped iff ts + gap - 1 + lateness <= W, i.e. ts <= 86 */
    assert_int_equal(add(s, "a", "/p", 86, l), 0);
    assert_int_equal(l->n, 0);
    assert_int_equal(add(s, "b", "/p", 87, l), 1); /* due: fires at once, rev 0 */
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "b", 87, 87, 1, 1, "/p", "/p", 0, true);
    assert_int_equal(add(s, "c", "/p", 91, l), 1); /* fire point 100 = W: due */
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "c", 91, 91, 1, 1, "/p", "/p", 0, true);
    assert_int_equal(add(s, "d", "/p", 92, l), 1); /* fire point 101: open */
    assert_int_equal(l->n, 2);
    assert_int_equal(cf_sessions_open_count(s), 1);
    /* the watermark never goes back */
    cf_sessions_advance(s, 50, capture, l);
    assert_int_equal(add(s, "e", "/p", 86, l), 0);
    cf_sessions_free(s);
    free(l);
}

static void user_who_never_returns_is_closed(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(1800000, 60000, 0);
    assert_int_equal(add(s, "u42", "/home", 1000, l), 1);
    assert_int_equal(add(s, "u42", "/products/7", 2000, l), 1);
    cf_sessions_advance(s, CF_TIME_NONE, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, 10000000, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "u42", 1000, 2000, 2, 2, "/home", "/products/7", 0, true);
    assert_int_equal(cf_sessions_open_count(s), 0);
    /* purged: the user's state is gone, a late event is dropped */
    assert_int_equal(add(s, "u42", "/x", 2000, l), 0);
    cf_sessions_free(s);
    free(l);
}

static void fire_order_by_end_then_user(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "b", "/p", 5, l), 1);
    assert_int_equal(add(s, "ab", "/p", 5, l), 1);
    assert_int_equal(add(s, "a", "/p", 5, l), 1);
    assert_int_equal(add(s, "c", "/p", 3, l), 1);
    assert_int_equal(add(s, "a", "/p", 30, l), 1); /* a's second session */
    assert_int_equal(add(s, "\xff", "/p", 4, l), 1);
    cf_sessions_advance(s, 100, capture, l);
    assert_int_equal(l->n, 6);
    assert_string_equal(l->r[0].user, "c");
    assert_string_equal(l->r[1].user, "\xff");
    assert_string_equal(l->r[2].user, "a");
    assert_string_equal(l->r[3].user, "ab");
    assert_string_equal(l->r[4].user, "b");
    assert_string_equal(l->r[5].user, "a");
    assert_true(l->r[5].start == 30);
    cf_sessions_free(s);
    free(l);
}

/* The heap keeps a session whose fire point moved later at its old place
 * (lazy re-keying): it must fire at its new point, never at the stale one,
 * in (fire time, user_id) order with the others, be passed over by eviction
 * while its true fire point is later, and survive save/load the same way. */
static void extended_session_fires_at_new_point(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "c", "/p", 0, l), 1);   /* placed at 9 */
    assert_int_equal(add(s, "b", "/p", 3, l), 1);   /* 12 */
    assert_int_equal(add(s, "a", "/p", 1, l), 1);   /* placed at 10 */
    assert_int_equal(add(s, "d", "/p", 0, l), 1);   /* placed at 9 */
    assert_int_equal(add(s, "c", "/q", 3, l), 1);   /* now 12 */
    assert_int_equal(add(s, "a", "/q", 3, l), 1);   /* now 12 */
    assert_int_equal(add(s, "d", "/q", 2, l), 1);   /* now 11 */
    /* the stale points 9 and 10 are reached: nothing fires early */
    cf_sessions_advance(s, 10, capture, l);
    assert_int_equal(l->n, 0);
    assert_int_equal(cf_sessions_open_count(s), 4);
    assert_int_equal(add(s, "d", "/r", 3, l), 1);   /* now 12 too */
    cf_sessions_advance(s, 11, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, 12, capture, l);
    assert_int_equal(l->n, 4);
    expect(&l->r[0], "a", 1, 3, 2, 2, "/p", "/q", 0, true);
    expect(&l->r[1], "b", 3, 3, 1, 1, "/p", "/p", 0, true);
    expect(&l->r[2], "c", 0, 3, 2, 2, "/p", "/q", 0, true);
    expect(&l->r[3], "d", 0, 3, 3, 3, "/p", "/r", 0, true);
    cf_sessions_free(s);

    /* eviction picks the true soonest: x was placed at 9 but now fires at
     * 17, so y (12) goes */
    l->n = 0;
    s = cf_sessions_new(10, 0, 2);
    assert_int_equal(add(s, "x", "/p", 0, l), 1);
    assert_int_equal(add(s, "y", "/p", 3, l), 1);
    assert_int_equal(add(s, "x", "/q", 8, l), 1);
    assert_int_equal(add(s, "z", "/p", 8, l), 1);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "y", 3, 3, 1, 1, "/p", "/p", 0, true);
    cf_sessions_free(s);

    /* a move later than 2^32 ms does not fit the lag: re-placed at once, so
     * v (placed behind it) still fires on time */
    l->n = 0;
    const int64_t big = INT64_C(1) << 33;
    s = cf_sessions_new(big, 0, 0);
    assert_int_equal(add(s, "u", "/p", 0, l), 1);          /* big - 1 */
    assert_int_equal(add(s, "v", "/p", 100, l), 1);        /* big + 99 */
    assert_int_equal(add(s, "u", "/q", big, l), 1);        /* 2 big - 1 */
    cf_sessions_advance(s, big + 98, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, big + 99, capture, l);
    assert_int_equal(l->n, 1);
    expect(&l->r[0], "v", 100, 100, 1, 1, "/p", "/p", 0, true);
    cf_sessions_advance(s, 2 * big - 2, capture, l);
    assert_int_equal(l->n, 1);
    cf_sessions_advance(s, 2 * big - 1, capture, l);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 0, big, 2, 2, "/p", "/q", 0, true);
    cf_sessions_free(s);

    /* a re-opened session's key moves earlier (purge 109 -> fire 12): it
     * fires at 12 */
    l->n = 0;
    s = cf_sessions_new(10, 100, 0);
    assert_int_equal(add(s, "u", "/p", 0, l), 1);
    cf_sessions_advance(s, 9, capture, l);
    assert_int_equal(l->n, 1);
    assert_int_equal(add(s, "v", "/p", 5, l), 1);          /* 14 */
    assert_int_equal(add(s, "u", "/q", 3, l), 1);          /* open, rev 1, 12 */
    assert_int_equal(l->n, 1);
    cf_sessions_advance(s, 11, capture, l);
    assert_int_equal(l->n, 1);
    cf_sessions_advance(s, 12, capture, l);
    assert_int_equal(l->n, 2);
    expect(&l->r[1], "u", 0, 3, 2, 2, "/p", "/q", 1, true);

    /* save/load with stale keys in the heap: both copies go on alike */
    assert_int_equal(add(s, "v", "/q", 9, l), 1);          /* 18, placed 14 */
    assert_int_equal(add(s, "w", "/p", 7, l), 1);          /* 16 */
    cf_buf b = {0};
    assert_int_equal(cf_sessions_save(s, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_sessions *c = cf_sessions_load(10, 100, 0, &r);
    assert_non_null(c);
    struct log *l2 = new_log();
    l->n = 0;
    cf_sessions *both[2] = { s, c };
    struct log *logs[2] = { l, l2 };
    for (int k = 0; k < 2; k++) {
        cf_sessions_advance(both[k], 14, capture, logs[k]);
        assert_int_equal(logs[k]->n, 0);
        cf_sessions_advance(both[k], 17, capture, logs[k]);
        add(both[k], "v", "/r", 10, logs[k]);              /* 19 */
        cf_sessions_advance(both[k], 200, capture, logs[k]);
    }
    assert_int_equal(l->n, 2);
    expect(&l->r[0], "w", 7, 7, 1, 1, "/p", "/p", 0, true);
    expect(&l->r[1], "v", 5, 10, 3, 3, "/p", "/r", 0, true);
    assert_int_equal(l2->n, l->n);
    assert_memory_equal(l->r, l2->r, l->n * sizeof l->r[0]);
    cf_buf_free(&b);
    cf_sessions_free(c);
    cf_sessions_free(s);
    free(l2);
    free(l);
}

static void entry_exit_ties(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    assert_int_equal(add(s, "u", "/first", 5, l), 1);
    assert_int_equal(add(s, "u", "/second", 5, l), 1);
    assert_int_equal(add(s, "u", "/third", 5, l), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[0], "u", 5, 5, 3, 3, "/first", "/third", 0, false);
    assert_int_equal(add(s, "u", "/early", 4, l), 1);
    assert_int_equal(add(s, "u", "/early2", 4, l), 1);
    assert_int_equal(add(s, "u", "/first", 5, l), 1); /* repeat page: not distinct */
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[1], "u", 4, 5, 6, 5, "/early", "/first", 0, false);
    cf_sessions_free(s);
    free(l);
}

static void many_distinct_pages_exact(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(1000, 0, 0);
    char page[16];
    for (int i = 0; i < 300; i++) {
        int n = snprintf(page, sizeof page, "/p%d", i % 150);
        assert_int_equal(cf_sessions_add(s, "u", 1, page, (size_t)n, i, capture, l), 1);
    }
    /* a second session far away with pages 100..249, then a bridge */
    for (int i = 0; i < 150; i++) {
        int n = snprintf(page, sizeof page, "/p%d", 100 + i);
        assert_int_equal(cf_sessions_add(s, "u", 1, page, (size_t)n, 2000 + i, capture, l), 1);
    }
    assert_int_equal(cf_sessions_open_count(s), 2);
    assert_int_equal(add(s, "u", "/p0", 1200, l), 1);
    assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 1);
    expect(&l->r[0], "u", 0, 2149, 451, 250, "/p0", "/p249", 0, false);
    cf_sessions_free(s);
    free(l);
}

static void distinct_pages_every_size(void **state)
{
    (void)state;
    /* every size through the inline, list and table forms (and their growth),
     * each checked live, after a merge and after save/load */
    struct log *l = new_log();
    char page[16];
    for (int n = 1; n <= 80; n++) {
        cf_sessions *s = cf_sessions_new(100, 0, 0);
        for (int i = 0; i < n; i++) {
            int len = snprintf(page, sizeof page, "/d%d", i);
            /* each page twice; the second session starts at 1000 */
            assert_int_equal(cf_sessions_add(s, "u", 1, page, (size_t)len, i % 50, capture, l), 1);
            assert_int_equal(cf_sessions_add(s, "u", 1, page, (size_t)len, 1000 + i % 50, capture, l), 1);
        }
        l->n = 0;
        assert_int_equal(cf_sessions_get_open(s, "u", 1, capture, l), 2);
        assert_int_equal(l->r[0].distinct, n);
        assert_int_equal(l->r[1].distinct, n);
        cf_buf b = {0};
        assert_int_equal(cf_sessions_save(s, &b), 0);
        cf_reader r;
        cf_reader_init(&r, b.data, b.len);
        cf_sessions *c = cf_sessions_load(100, 0, 0, &r);
        assert_non_null(c);
        cf_buf_free(&b);
        cf_sessions_free(s);
        /* bridge the two sessions in steps of exactly gap */
        for (int64_t ts = 100; ts < 1000; ts += 100)
            assert_int_equal(cf_sessions_add(c, "u", 1, "/bridge", 7, ts, capture, l), 1);
        l->n = 0;
        assert_int_equal(cf_sessions_get_open(c, "u", 1, capture, l), 1);
        assert_int_equal(l->r[0].distinct, n + 1);
        assert_int_equal(l->r[0].views, 2 * n + 9);
        cf_sessions_free(c);
    }
    free(l);
}

static void extreme_times_do_not_overflow(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(INT64_MAX, INT64_MAX, 0);
    assert_int_equal(add(s, "z", "/p", INT64_MIN, l), 1);
    assert_int_equal(add(s, "m", "/p", INT64_MIN, l), 1);
    assert_int_equal(add(s, "m", "/q", -1, l), 1);        /* exactly gap apart */
    assert_int_equal(add(s, "a", "/p", 0, l), 1);
    assert_int_equal(add(s, "a", "/q", INT64_MAX, l), 1); /* exactly gap apart */
    assert_int_equal(cf_sessions_open_count(s), 3);
    cf_sessions_advance(s, CF_TIME_NONE, capture, l);
    cf_sessions_advance(s, -3, capture, l);
    assert_int_equal(l->n, 0);
    cf_sessions_advance(s, -2, capture, l); /* z: INT64_MIN + gap - 1 */
    assert_int_equal(l->n, 1);
    assert_true(l->r[0].start == INT64_MIN && l->r[0].duration == 0);
    cf_sessions_advance(s, INT64_MAX - 3, capture, l);
    assert_int_equal(l->n, 1);
    cf_sessions_advance(s, INT64_MAX - 2, capture, l); /* m: -1 + gap - 1 */
    assert_int_equal(l->n, 2);
    assert_true(l->r[1].start == INT64_MIN && l->r[1].end == -1 &&
                l->r[1].duration == INT64_MAX);
    cf_sessions_advance(s, INT64_MAX - 1, capture, l);
    assert_int_equal(l->n, 2);
    /* a's fire point saturates at INT64_MAX */
    cf_sessions_advance(s, INT64_MAX, capture, l);
    assert_int_equal(l->n, 3);
    assert_true(l->r[2].start == 0 && l->r[2].end == INT64_MAX);
    cf_sessions_free(s);

    /* W = INT64_MIN + 2: a real watermark at the bottom of the range */
    l->n = 0;
    s = cf_sessions_new(2, 1, 0);
    cf_sessions_advance(s, INT64_MIN + 2, capture, l);
    assert_int_equal(add(s, "b", "/p", INT64_MIN, l), 0);     /* purge point MIN + 2 */
    assert_int_equal(add(s, "b", "/p", INT64_MIN + 1, l), 1); /* due at once */
    assert_int_equal(l->n, 1);
    assert_int_equal(l->r[0].revision, 0);
    cf_sessions_free(s);
    assert_null(cf_sessions_new(0, 0, 0));
    assert_null(cf_sessions_new(1, -1, 0));
    free(l);
}

static void max_users_evicts_soonest_closing(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 2);
    assert_int_equal(add(s, "b", "/p", 5, l), 1);
    assert_int_equal(add(s, "a", "/p", 0, l), 1);
    assert_int_equal(add(s, "a", "/q", 30, l), 1); /* same user: no eviction */
    assert_int_equal(cf_sessions_evictions(s), 0);
    assert_int_equal(add(s, "c", "/p", 7, l), 1);
    /* a closes soonest (fire point 9): both its sessions are closed early */
    assert_int_equal(cf_sessions_evictions(s), 1);
    assert_int_equal(l->n, 2);
    expect(&l->r[0], "a", 0, 0, 1, 1, "/p", "/p", 0, true);
    expect(&l->r[1], "a", 30, 30, 1, 1, "/q", "/q", 0, true);
    assert_int_equal(cf_sessions_get_open(s, "a", 1, capture, l), 0);
    assert_int_equal(cf_sessions_open_count(s), 2);
    for (int i = 0; i < 100; i++) {
        char u[8];
        int n = snprintf(u, sizeof u, "x%d", i);
        assert_int_equal(cf_sessions_add(s, u, (size_t)n, "/p", 2, 100 + i, capture, l), 1);
        assert_true(cf_sessions_open_count(s) <= 2);
    }
    assert_int_equal(cf_sessions_evictions(s), 101);
    cf_sessions_free(s);
    free(l);
}

static cf_sessions *reload(cf_sessions *s, int64_t gap, int64_t lat, size_t max_users);

/* A table loaded under a smaller bound (a restart with more shards) shrinks
 * to it at its next new user, closing the soonest-closing users early; the
 * user count is what the bound counts. */
static void loaded_above_bound_shrinks(void **state)
{
    (void)state;
    struct log *l = new_log();
    cf_sessions *s = cf_sessions_new(10, 0, 0);
    for (int i = 0; i < 5; i++) {
        char u[8];
        int n = snprintf(u, sizeof u, "u%d", i);
        assert_int_equal(cf_sessions_add(s, u, (size_t)n, "/p", 2, 10 * i, capture, l), 1);
    }
    assert_int_equal(cf_sessions_users(s), 5);
    s = reload(s, 10, 0, 2);
    assert_int_equal(cf_sessions_users(s), 5);
    assert_int_equal(add(s, "u4", "/q", 41, l), 1);   /* a held user: nothing evicted */
    assert_int_equal(cf_sessions_evictions(s), 0);
    assert_int_equal(add(s, "new", "/p", 50, l), 1);
    assert_int_equal(cf_sessions_users(s), 2);
    assert_int_equal(cf_sessions_evictions(s), 4);
    /* u0..u3 closed early, soonest first; u4 and the new user are held. */
    assert_int_equal(l->n, 4);
    expect(&l->r[0], "u0", 0, 0, 1, 1, "/p", "/p", 0, true);
    expect(&l->r[3], "u3", 30, 30, 1, 1, "/p", "/p", 0, true);
    assert_int_equal(cf_sessions_open_count(s), 2);
    cf_sessions_free(s);
    free(l);
}

static void save_load_mid_trace(void **state)
{
    (void)state;
    struct log *l1 = new_log(), *l2 = new_log();
    cf_sessions *s = cf_sessions_new(10, 20, 3);
    add(s, "u1", "/a", 0, l1);
    add(s, "u1", "/b", 40, l1);
    add(s, "u2", "/c", 5, l1);
    cf_sessions_advance(s, 15, capture, l1);
    add(s, "u1", "/d", 3, l1); /* late join, fire point 12 <= 15: rev 1 at once */
    add(s, "u2", "/x", 8, l1); /* late join, fire point 17 > 15: re-opened, rev 1 */
    char page[16];
    for (int i = 0; i < 5; i++) {
        int n = snprintf(page, sizeof page, "/many%d", i);
        cf_sessions_add(s, "u3", 2, page, (size_t)n, 41 + i, capture, l1);
    }
    l1->n = 0;
    cf_buf b = {0};
    assert_int_equal(cf_sessions_save(s, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_sessions *c = cf_sessions_load(10, 20, 3, &r);
    assert_non_null(c);
    assert_int_equal(r.left, 0);
    assert_int_equal(cf_sessions_open_count(c), cf_sessions_open_count(s));
    assert_int_equal(cf_sessions_evictions(c), cf_sessions_evictions(s));
    cf_sessions *both[2] = { s, c };
    struct log *logs[2] = { l1, l2 };
    for (int k = 0; k < 2; k++) {
        cf_sessions *t = both[k];
        struct log *l = logs[k];
        cf_sessions_get_open(t, "u1", 2, capture, l);
        cf_sessions_get_open(t, "u2", 2, capture, l);
        cf_sessions_get_open(t, "u3", 2, capture, l);
        add(t, "u1", "/e", 8, l);
        add(t, "u4", "/f", 50, l); /* evicts */
        cf_sessions_advance(t, 30, capture, l);
        add(t, "u1", "/g", 45, l);
        cf_sessions_advance(t, 100, capture, l);
        add(t, "u3", "/late", 2, l);
    }
    assert_int_equal(l1->n, l2->n);
    assert_true(l1->n >= 5);
    /* u2's re-opened session is listed with its pending revision */
    expect(&l1->r[1], "u2", 5, 8, 2, 2, "/c", "/x", 1, false);
    assert_memory_equal(l1->r, l2->r, l1->n * sizeof l1->r[0]);
    assert_int_equal(cf_sessions_evictions(c), cf_sessions_evictions(s));
    /* truncated input is rejected without leaks */
    for (size_t cut = 0; cut < b.len; cut += 5) {
        cf_reader_init(&r, b.data, cut);
        assert_null(cf_sessions_load(10, 20, 3, &r));
    }
    cf_buf_free(&b);
    cf_sessions_free(s);
    cf_sessions_free(c);
    free(l1);
    free(l2);
}

/* ---- brute-force model ----------------------------------------------------- */

#define M_MAX_SESS 512
#define M_MAX_EV 256

struct m_sess {
    bool alive;
    char user[8];
    int64_t ts[M_MAX_EV];
    int page[M_MAX_EV];
    int n;
    bool fired;
    uint32_t rev;
};

struct model {
    int64_t gap, lat, wm;
    bool has_wm;
    size_t max_users;
    uint64_t evictions;
    uint64_t reopens;   /* fired sessions a late event made open again */
    struct m_sess s[M_MAX_SESS];
};

static int64_t m_first(const struct m_sess *x)
{
    int64_t v = x->ts[0];
    for (int i = 1; i < x->n; i++)
        if (x->ts[i] < v)
            v = x->ts[i];
    return v;
}

static int64_t m_last(const struct m_sess *x)
{
    int64_t v = x->ts[0];
    for (int i = 1; i < x->n; i++)
        if (x->ts[i] > v)
            v = x->ts[i];
    return v;
}

static void m_emit(const struct m_sess *x, bool final, struct log *l)
{
    assert_true(l->n < MAX_RECS);
    struct rec *c = &l->r[l->n++];
    memset(c, 0, sizeof *c);
    strcpy(c->user, x->user);
    c->start = m_first(x);
    c->end = m_last(x);
    c->duration = c->end - c->start;
    c->views = (uint64_t)x->n;
    bool seen[64] = { false };
    for (int i = 0; i < x->n; i++)
        if (!seen[x->page[i]]) {
            seen[x->page[i]] = true;
            c->distinct++;
        }
    /* events are stored in order added: entry = first with min ts, exit = last with max ts */
    int e = 0, z = 0;
    for (int i = 0; i < x->n; i++) {
        if (x->ts[i] < x->ts[e])
            e = i;
        if (x->ts[i] >= x->ts[z])
            z = i;
    }
    snprintf(c->entry, sizeof c->entry, "/page-%d", x->page[e]);
    snprintf(c->exit, sizeof c->exit, "/page-%d", x->page[z]);
    c->revision = x->rev;
    c->final = final;
}

static int64_t m_action(const struct model *m, const struct m_sess *x)
{
    return m_last(x) + m->gap - 1 + (x->fired ? m->lat : 0);
}

/* Early close of the user whose next session action is the soonest. */
static void m_evict(struct model *m, struct log *l)
{
    int best = -1;
    for (int i = 0; i < M_MAX_SESS; i++) {
        const struct m_sess *x = &m->s[i];
        if (!x->alive)
            continue;
        if (best < 0) {
            best = i;
            continue;
        }
        const struct m_sess *b = &m->s[best];
        int c = strcmp(x->user, b->user);
        if (m_action(m, x) < m_action(m, b) ||
            (m_action(m, x) == m_action(m, b) && (c < 0 || (c == 0 && m_first(x) < m_first(b)))))
            best = i;
    }
    char user[8];
    strcpy(user, m->s[best].user);
    for (;;) {
        int o = -1;
        for (int i = 0; i < M_MAX_SESS; i++)
            if (m->s[i].alive && strcmp(m->s[i].user, user) == 0 &&
                (o < 0 || m_first(&m->s[i]) < m_first(&m->s[o])))
                o = i;
        if (o < 0)
            break;
        if (!m->s[o].fired)
            m_emit(&m->s[o], true, l);
        m->s[o].alive = false;
    }
    m->evictions++;
}

static bool m_has_user(const struct model *m, const char *user)
{
    for (int i = 0; i < M_MAX_SESS; i++)
        if (m->s[i].alive && strcmp(m->s[i].user, user) == 0)
            return true;
    return false;
}

static size_t m_users(const struct model *m)
{
    size_t n = 0;
    for (int i = 0; i < M_MAX_SESS; i++) {
        if (!m->s[i].alive)
            continue;
        bool dup = false;
        for (int k = 0; k < i; k++)
            if (m->s[k].alive && strcmp(m->s[k].user, m->s[i].user) == 0)
                dup = true;
        n += !dup;
    }
    return n;
}

static int m_add(struct model *m, const char *user, int page, int64_t ts, struct log *l)
{
    int hit[M_MAX_SESS], nh = 0;
    for (int i = 0; i < M_MAX_SESS; i++) {
        struct m_sess *x = &m->s[i];
        if (x->alive && strcmp(x->user, user) == 0 && ts + m->gap >= m_first(x) &&
            ts <= m_last(x) + m->gap)
            hit[nh++] = i;
    }
    if (nh == 0) {
        if (m->has_wm && ts + m->gap - 1 + m->lat <= m->wm)
            return 0;
        if (m->max_users && !m_has_user(m, user) && m_users(m) >= m->max_users)
            m_evict(m, l);
        for (int i = 0; i < M_MAX_SESS; i++) {
            struct m_sess *x = &m->s[i];
            if (x->alive)
                continue;
            memset(x, 0, sizeof *x);
            x->alive = true;
            strcpy(x->user, user);
            x->ts[0] = ts;
            x->page[0] = page;
            x->n = 1;
            if (m->has_wm && ts + m->gap - 1 <= m->wm) {
                x->fired = true;
                m_emit(x, true, l);
            }
            return 1;
        }
        fail_msg("model full");
    }
    /* merge in order added: events of all hit sessions keep their relative
     * order only within a session, so order them by (session first added) —
     * ties across sessions are impossible (disjoint ts ranges). */
    struct m_sess *a = &m->s[hit[0]];
    bool any_fired = false;
    uint32_t rev = 0; /* one past every emitted revision, or a pending one */
    for (int k = 0; k < nh; k++) {
        struct m_sess *x = &m->s[hit[k]];
        any_fired |= x->fired;
        if (x->rev + x->fired > rev)
            rev = x->rev + x->fired;
    }
    for (int k = 1; k < nh; k++) {
        struct m_sess *x = &m->s[hit[k]];
        for (int i = 0; i < x->n; i++) {
            assert_true(a->n < M_MAX_EV);
            a->ts[a->n] = x->ts[i];
            a->page[a->n] = x->page[i];
            a->n++;
        }
        x->alive = false;
    }
    assert_true(a->n < M_MAX_EV);
    a->ts[a->n] = ts;
    a->page[a->n] = page;
    a->n++;
    /* Flink: the merged session fires at once only if its end is already
     * behind the watermark; otherwise it is open until advance reaches it */
    a->rev = rev;
    a->fired = false;
    if (m->has_wm && m_last(a) + m->gap - 1 <= m->wm) {
        a->fired = true;
        m_emit(a, true, l);
    } else if (any_fired) {
        m->reopens++;
    }
    return 1;
}

static void m_advance(struct model *m, int64_t wm, struct log *l)
{
    if (m->has_wm && wm <= m->wm)
        return;
    m->has_wm = true;
    m->wm = wm;
    for (;;) {
        /* the open due session with the smallest (fire point, user) */
        int best = -1;
        for (int i = 0; i < M_MAX_SESS; i++) {
            struct m_sess *x = &m->s[i];
            if (!x->alive || x->fired || m_last(x) + m->gap - 1 > wm)
                continue;
            if (best < 0 || m_last(x) < m_last(&m->s[best]) ||
                (m_last(x) == m_last(&m->s[best]) && strcmp(x->user, m->s[best].user) < 0))
                best = i;
        }
        if (best < 0)
            break;
        m->s[best].fired = true;
        m_emit(&m->s[best], true, l);
    }
    for (int i = 0; i < M_MAX_SESS; i++) {
        struct m_sess *x = &m->s[i];
        if (x->alive && x->fired && m_last(x) + m->gap - 1 + m->lat <= wm)
            x->alive = false;
    }
}

static size_t m_open(const struct model *m)
{
    size_t n = 0;
    for (int i = 0; i < M_MAX_SESS; i++)
        n += m->s[i].alive && !m->s[i].fired;
    return n;
}

static uint64_t rng;

static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 0x2545f4914f6cdd1dULL;
}

static cf_sessions *reload(cf_sessions *s, int64_t gap, int64_t lat, size_t max_users)
{
    cf_buf b = {0};
    assert_int_equal(cf_sessions_save(s, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_sessions *c = cf_sessions_load(gap, lat, max_users, &r);
    assert_non_null(c);
    assert_int_equal(r.left, 0);
    cf_buf_free(&b);
    cf_sessions_free(s);
    return c;
}

static void randomized_trace_matches_model(void **state)
{
    (void)state;
    struct model *m = calloc(1, sizeof *m);
    struct log *la = new_log(), *lb = new_log();
    assert_non_null(m);
    uint64_t total_evictions = 0, total_reopens = 0;
    for (uint64_t seed = 1; seed <= 40; seed++) {
        rng = seed * 0x9e3779b97f4a7c15ULL;
        int64_t gap = 1 + (int64_t)(rnd() % 12);
        int64_t lat = (int64_t)(rnd() % 3) * (int64_t)(rnd() % 15);
        memset(m, 0, sizeof *m);
        m->gap = gap;
        m->lat = lat;
        /* half the seeds bound the users, so evictions happen */
        m->max_users = seed % 2 ? 0 : 1 + (size_t)(rnd() % 4);
        cf_sessions *s = cf_sessions_new(gap, lat, m->max_users);
        int64_t t = (int64_t)(rnd() % 1000) - 500;
        int n_users = 1 + (int)(rnd() % 6);
        for (int step = 0; step < 1500; step++) {
            la->n = lb->n = 0;
            uint64_t op = rnd() % 20;
            if (op < 14) {
                char user[8];
                snprintf(user, sizeof user, "u%d", (int)(rnd() % (uint64_t)n_users));
                int page = (int)(rnd() % 9);
                char pstr[16];
                snprintf(pstr, sizeof pstr, "/page-%d", page);
                int64_t ts = t - (int64_t)(rnd() % (uint64_t)(3 * gap + lat + 5));
                if (rnd() % 8 == 0)
                    ts = t + (int64_t)(rnd() % 5);
                int ra = cf_sessions_add(s, user, strlen(user), pstr, strlen(pstr), ts, capture, la);
                int rb = m_add(m, user, page, ts, lb);
                assert_int_equal(ra, rb);
            } else if (op < 18) {
                t += (int64_t)(rnd() % (uint64_t)(gap + 2));
                int64_t wm = t - (int64_t)(rnd() % (uint64_t)(2 * gap + 3));
                cf_sessions_advance(s, wm, capture, la);
                m_advance(m, wm, lb);
            } else if (op < 19) {
                char user[8];
                snprintf(user, sizeof user, "u%d", (int)(rnd() % (uint64_t)n_users));
                cf_sessions_get_open(s, user, strlen(user), capture, la);
                /* model: open sessions of user, oldest first */
                for (;;) {
                    int best = -1;
                    for (int i = 0; i < M_MAX_SESS; i++) {
                        struct m_sess *x = &m->s[i];
                        if (!x->alive || x->fired || strcmp(x->user, user) != 0)
                            continue;
                        bool done = false;
                        for (size_t k = 0; k < lb->n; k++)
                            if (lb->r[k].start == m_first(x))
                                done = true;
                        if (done)
                            continue;
                        if (best < 0 || m_first(x) < m_first(&m->s[best]))
                            best = i;
                    }
                    if (best < 0)
                        break;
                    m_emit(&m->s[best], false, lb);
                }
            } else {
                s = reload(s, gap, lat, m->max_users);
            }
            assert_int_equal(la->n, lb->n);
            for (size_t k = 0; k < la->n; k++) {
                const struct rec *x = &la->r[k], *y = &lb->r[k];
                if (memcmp(x, y, sizeof *x) != 0) {
                    print_error("seed %llu step %d rec %zu: impl %s [%lld,%lld] v%llu d%llu %s %s r%u f%d"
                                " / model %s [%lld,%lld] v%llu d%llu %s %s r%u f%d\n",
                                (unsigned long long)seed, step, k, x->user, (long long)x->start,
                                (long long)x->end, (unsigned long long)x->views,
                                (unsigned long long)x->distinct, x->entry, x->exit, x->revision,
                                x->final, y->user, (long long)y->start, (long long)y->end,
                                (unsigned long long)y->views, (unsigned long long)y->distinct,
                                y->entry, y->exit, y->revision, y->final);
                    fail();
                }
            }
            assert_int_equal(cf_sessions_open_count(s), m_open(m));
            assert_int_equal(cf_sessions_evictions(s), m->evictions);
        }
        total_evictions += m->evictions;
        total_reopens += m->reopens;
        cf_sessions_free(s);
    }
    assert_true(total_evictions > 100);
    print_message("sessions model: %llu evictions, %llu re-opened sessions\n",
                  (unsigned long long)total_evictions, (unsigned long long)total_reopens);
    assert_true(total_reopens > 100);
    free(m);
    free(la);
    free(lb);
}

/* ---- memory ---------------------------------------------------------------- */

static void noop_emit(void *ctx, const cf_session_record *r)
{
    (void)ctx;
    (void)r;
}

/* Bytes per open session for users with one session of 3 page views, user ids
 * of 10 bytes and urls of ~20 bytes from a shared set of 200 pages. */
static void memory_per_open_session(void **state)
{
    (void)state;
    const int N = 50000;
    struct mallinfo2 before = mallinfo2();
    cf_sessions *s = cf_sessions_new(1800000, 60000, 0);
    char user[16], page[32];
    for (int i = 0; i < N; i++) {
        snprintf(user, sizeof user, "user-%05d", i);
        for (int k = 0; k < 3; k++) {
            int pn = snprintf(page, sizeof page, "/products/item-%05d", (i * 7 + k * 13) % 200);
            assert_int_equal(cf_sessions_add(s, user, 10, page, (size_t)pn, 1000000 + i + k,
                                             noop_emit, NULL), 1);
        }
    }
    struct mallinfo2 after = mallinfo2();
    assert_int_equal(cf_sessions_open_count(s), (size_t)N);
    double est = (double)cf_sessions_memory(s) / N;
    double real = (double)(after.uordblks - before.uordblks) / N;
    print_message("sessions: %.1f bytes/open session (cf_sessions_memory), %.1f (malloc in use)\n",
                  est, real);
    assert_true(est < 200.0);
    cf_sessions_free(s);
}

/* ---- rescale: load_parts ------------------------------------------------- */

static bool odd_user(void *ctx, const char *p, size_t len)
{
    (void)ctx;
    return len > 0 && (p[len - 1] & 1);
}

static bool even_user(void *ctx, const char *p, size_t len) { return !odd_user(ctx, p, len); }

/* What a table will say from now on: every user's open sessions, then every
 * session_end once the watermark passes everything, as text lines, sorted. */
typedef struct lines {
    char **v;
    size_t n, cap;
} lines;

static void line_of(void *ctx, const cf_session_record *r)
{
    lines *l = ctx;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->v = realloc(l->v, l->cap * sizeof *l->v);
        assert_non_null(l->v);
    }
    char buf[256];
    snprintf(buf, sizeof buf, "%.*s %lld %lld %llu %llu %.*s %.*s %u %d", (int)r->user_id_len,
             r->user_id, (long long)r->start, (long long)r->end,
             (unsigned long long)r->page_views, (unsigned long long)r->distinct_pages,
             (int)r->entry_page_len, r->entry_page, (int)r->exit_page_len, r->exit_page,
             r->revision, r->final);
    l->v[l->n++] = strdup(buf);
}

static int cmp_line(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void future_of(cf_sessions *s, int nusers, int64_t wm, lines *out)
{
    char u[16];
    for (int i = 0; i < nusers; i++) {
        int n = snprintf(u, sizeof u, "u%d", i);
        cf_sessions_get_open(s, u, (size_t)n, line_of, out);
    }
    cf_sessions_advance(s, wm, line_of, out);
    qsort(out->v, out->n, sizeof *out->v, cmp_line);
}

static void lines_equal_free(lines *a, lines *b)
{
    assert_int_equal(a->n, b->n);
    for (size_t i = 0; i < a->n; i++) {
        assert_string_equal(a->v[i], b->v[i]);
        free(a->v[i]);
        free(b->v[i]);
    }
    free(a->v);
    free(b->v);
    memset(a, 0, sizeof *a);
    memset(b, 0, sizeof *b);
}

static cf_sessions *reload_parts(cf_sessions *const *src, size_t n, cf_sessions_keep_fn keep,
                                 cf_buf *bufs)
{
    cf_reader parts[4];
    for (size_t i = 0; i < n; i++) {
        cf_buf_reset(&bufs[i]);
        assert_int_equal(cf_sessions_save(src[i], &bufs[i]), 0);
        cf_reader_init(&parts[i], bufs[i].data, bufs[i].len);
    }
    return cf_sessions_load_parts(1000, 500, 0, 77, parts, n, keep, NULL);
}

/* Tables fed the odd and the even users of a trace load into a table that
 * behaves exactly like the one fed everything, and that one splits back:
 * the rescale of a restart with another shard count. */
static void load_parts_merges_and_splits(void **state)
{
    (void)state;
    cf_sessions *all = cf_sessions_new(1000, 500, 0), *odd = cf_sessions_new(1000, 500, 0),
                *even = cf_sessions_new(1000, 500, 0), *plain = cf_sessions_new(1000, 500, 0);
    /* Seeded tables (as the daemon makes them) behave like unseeded ones. */
    assert_int_equal(cf_sessions_set_hash_seed(all, 77), 0);
    assert_int_equal(cf_sessions_set_hash_seed(odd, 77), 0);
    assert_int_equal(cf_sessions_set_hash_seed(even, 77), 0);
    lines sink = {0}, plain_sink = {0};
    uint64_t lcg = 99;
    char u[16], p[16];
    int64_t ts = 10000;
    for (int i = 0; i < 4000; i++) {
        lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
        ts += (int64_t)((lcg >> 33) % 40);
        int un = snprintf(u, sizeof u, "u%d", (int)((lcg >> 20) % 60));
        int pn = snprintf(p, sizeof p, "/p%d", (int)((lcg >> 40) % 9));
        int64_t t = ts - (int64_t)((lcg >> 50) % 1200);
        cf_sessions_add(all, u, (size_t)un, p, (size_t)pn, t, line_of, &sink);
        cf_sessions_add(plain, u, (size_t)un, p, (size_t)pn, t, line_of, &plain_sink);
        cf_sessions_add(odd_user(NULL, u, (size_t)un) ? odd : even, u, (size_t)un, p,
                        (size_t)pn, t, line_of, &sink);
        if (i % 40 == 39) {
            cf_sessions_advance(all, ts - 300, line_of, &sink);
            cf_sessions_advance(plain, ts - 300, line_of, &plain_sink);
            cf_sessions_advance(odd, ts - 300, line_of, &sink);
            cf_sessions_advance(even, ts - 300, line_of, &sink);
        }
    }
    assert_int_equal(cf_sessions_set_hash_seed(all, 5), -EBUSY);
    cf_buf bufs[2] = {{0}};
    cf_sessions *pair[2] = {odd, even};
    cf_sessions *merged = reload_parts(pair, 2, NULL, bufs);
    cf_sessions *merged2 = reload_parts(pair, 2, NULL, bufs);
    assert_non_null(merged);
    assert_non_null(merged2);
    assert_int_equal(cf_sessions_open_count(merged), cf_sessions_open_count(all));
    cf_sessions *split_odd = reload_parts(&all, 1, odd_user, bufs);
    cf_sessions *split_even = reload_parts(&all, 1, even_user, bufs);
    assert_non_null(split_odd);
    assert_non_null(split_even);
    assert_int_equal(cf_sessions_open_count(split_odd), cf_sessions_open_count(odd));

    lines a = {0}, b = {0};
    future_of(split_odd, 60, ts + 100000, &a);
    future_of(odd, 60, ts + 100000, &b);
    lines_equal_free(&a, &b);
    future_of(split_even, 60, ts + 100000, &a);
    future_of(even, 60, ts + 100000, &b);
    lines_equal_free(&a, &b);
    future_of(merged, 60, ts + 100000, &a);
    future_of(all, 60, ts + 100000, &b);
    assert_true(a.n > 0);
    lines_equal_free(&a, &b);
    future_of(plain, 60, ts + 100000, &a);
    future_of(merged2, 60, ts + 100000, &b);
    assert_true(a.n > 0);
    lines_equal_free(&a, &b);
    cf_sessions_free(merged2);
    cf_sessions_free(plain);
    for (size_t i = 0; i < plain_sink.n; i++)
        free(plain_sink.v[i]);
    free(plain_sink.v);

    cf_sessions_free(merged);
    cf_sessions_free(split_odd);
    cf_sessions_free(split_even);
    cf_sessions_free(all);
    cf_sessions_free(odd);
    cf_sessions_free(even);
    for (size_t i = 0; i < sink.n; i++)
        free(sink.v[i]);
    free(sink.v);
    cf_buf_free(&bufs[0]);
    cf_buf_free(&bufs[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(exactly_gap_apart_is_one_session),
        cmocka_unit_test(load_parts_merges_and_splits),
        cmocka_unit_test(gap_plus_one_is_two_sessions),
        cmocka_unit_test(bridging_event_merges),
        cmocka_unit_test(merge_of_fired_sessions_takes_max_revision),
        cmocka_unit_test(merge_of_open_and_fired),
        cmocka_unit_test(revision_on_late_join),
        cmocka_unit_test(late_join_past_watermark_reopens),
        cmocka_unit_test(merge_of_reopened_and_fired),
        cmocka_unit_test(revision_saturates_and_reopened_loads),
        cmocka_unit_test(late_drop_boundary),
        cmocka_unit_test(user_who_never_returns_is_closed),
        cmocka_unit_test(fire_order_by_end_then_user),
        cmocka_unit_test(extended_session_fires_at_new_point),
        cmocka_unit_test(entry_exit_ties),
        cmocka_unit_test(many_distinct_pages_exact),
        cmocka_unit_test(distinct_pages_every_size),
        cmocka_unit_test(extreme_times_do_not_overflow),
        cmocka_unit_test(max_users_evicts_soonest_closing),
        cmocka_unit_test(loaded_above_bound_shrinks),
        cmocka_unit_test(save_load_mid_trace),
        cmocka_unit_test(randomized_trace_matches_model),
        cmocka_unit_test(memory_per_open_session),
    };
    return cmocka_run_group_tests_name("sessions", tests, NULL, NULL);
}
