/* Unit tests for server/shard_msg: the one codec of the messages the
 * sequencer sends to the shards. An entry written the way the sequencer
 * writes it (cf_entry_put outside the lock, cf_entry_stamp under it) reads
 * back the way the shard reads it, at the extremes of every field, and a
 * truncated entry is refused rather than misread. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_buf.h"
#include "cf_event.h"
#include "cf_time.h"
#include "shard_msg.h"

static cf_event event(const char *user, const char *page, int64_t ts, const char *id)
{
    cf_event ev = {0};
    ev.ts = ts;
    ev.user_id = user;
    ev.user_id_len = strlen(user);
    ev.page_url = page;
    ev.page_url_len = strlen(page);
    if (id) {
        ev.event_id = id;
        ev.event_id_len = strlen(id);
    }
    return ev;
}

static bool same_str(const char *a, size_t an, const char *b, size_t bn)
{
    return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

static void assert_same_event(const cf_event *a, const cf_event *b)
{
    assert_int_equal(a->ts, b->ts);
    assert_true(same_str(a->user_id, a->user_id_len, b->user_id, b->user_id_len));
    assert_true(same_str(a->page_url, a->page_url_len, b->page_url, b->page_url_len));
    assert_true(same_str(a->event_id, a->event_id_len, b->event_id, b->event_id_len));
}

/* Packs ev and writes it as one entry into a fresh message; returns it. */
static cf_msg *one_entry(const cf_event *ev, const cf_entry_head *stamp)
{
    cf_buf packed = {0};
    assert_true(cf_event_pack(ev, &packed) > 0);
    cf_msg *m = cf_msg_new(CF_MSG_EVENTS, cf_entry_size(packed.len));
    assert_non_null(m);
    m->n = 1;
    assert_int_equal(cf_entry_put(m->data, packed.data, packed.len, stamp ? stamp->views : 0),
                     m->len);
    if (stamp)
        cf_entry_stamp(m->data, stamp);
    cf_buf_free(&packed);
    return m;
}

/* The head is 33 bytes, little-endian, in the order shard_msg.h
 * states: pinned byte by byte, so writer and reader cannot drift together
 * away from what docs/DESIGN.md describes. */
static void head_layout_is_pinned(void **state)
{
    (void)state;
    cf_event ev = event("u", "/p", 1, NULL);
    cf_entry_head h = {.role = CF_ROLE_PAGE | CF_ROLE_USER,
                       .seq = 0x0102030405060708ull,
                       .wm = -2,
                       .clock = 0x1122334455667788ll,
                       .views = 0x8000000000000005ull};
    cf_msg *m = one_entry(&ev, &h);
    static const uint8_t want[CF_ENTRY_HEAD] = {
        3,                                                  /* role */
        0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,     /* seq */
        0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,     /* W = -2 */
        0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,     /* C */
        0x05, 0, 0, 0, 0, 0, 0, 0x80,                       /* views: 0, 2 and 63+ */
    };
    assert_memory_equal(m->data, want, sizeof want);
    /* The packed event follows the head unchanged. */
    cf_buf packed = {0};
    assert_true(cf_event_pack(&ev, &packed) > 0);
    assert_int_equal(m->len, CF_ENTRY_HEAD + packed.len);
    assert_memory_equal(m->data + CF_ENTRY_HEAD, packed.data, packed.len);
    cf_buf_free(&packed);
    free(m);
}

/* Before the sequencer stamps it, an entry reads as role 0 (a duplicate
 * the shard skips) with every number 0. */
static void unstamped_entry_reads_blank(void **state)
{
    (void)state;
    cf_event ev = event("user-1", "/home", 1700000000000, "id-1");
    cf_msg *m = one_entry(&ev, NULL);
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    cf_entry_head h = {.role = 9, .seq = 9, .wm = 9, .clock = 9, .views = 9};
    cf_event got;
    assert_int_equal(cf_entry_get(&r, &h, &got), 0);
    assert_int_equal(h.role, 0);
    assert_int_equal(h.seq, 0);
    assert_int_equal(h.wm, 0);
    assert_int_equal(h.clock, 0);
    assert_true(h.views == 0);
    assert_same_event(&ev, &got);
    assert_int_equal(r.left, 0);
    free(m);
}

/* Several entries back to back, heads at the extremes of their types
 * (CF_TIME_NONE, the largest arrival number, negative and maximal times),
 * read back in order, each exactly consumed. */
static void entries_round_trip_at_the_extremes(void **state)
{
    (void)state;
    const cf_entry_head heads[] = {
        {CF_ROLE_PAGE, 0, CF_TIME_NONE, CF_TIME_NONE, 0},
        {CF_ROLE_USER, UINT64_MAX, INT64_MAX, INT64_MAX, UINT64_MAX},
        {CF_ROLE_PAGE | CF_ROLE_USER, 1, -1, INT64_MIN + 1, 1},
        {0, 42, 1700000000000, 1700000005000, 1ull << 62},
    };
    char page[CF_PAGE_URL_MAX + 1];
    memset(page, 'p', CF_PAGE_URL_MAX);
    page[0] = '/';
    page[CF_PAGE_URL_MAX] = '\0';
    const cf_event evs[] = {
        event("a", "/", 0, NULL),
        event("user-\xc3\xa9", page, 253402300799999, "e-longest-page"),
        event("u3", "/x?y=1", 1, "e3"),
        event("u4", "/dup", 2, "e4"),
    };
    enum { N = sizeof evs / sizeof evs[0] };
    cf_buf packed[N];
    size_t total = 0;
    for (size_t i = 0; i < N; i++) {
        memset(&packed[i], 0, sizeof packed[i]);
        assert_true(cf_event_pack(&evs[i], &packed[i]) > 0);
        total += cf_entry_size(packed[i].len);
    }
    cf_msg *m = cf_msg_new(CF_MSG_EVENTS, total);
    assert_non_null(m);
    m->n = N;
    size_t at = 0, offs[N];
    for (size_t i = 0; i < N; i++) {
        offs[i] = at;
        at += cf_entry_put(m->data + at, packed[i].data, packed[i].len, heads[i].views);
    }
    assert_int_equal(at, total);
    /* Stamped out of order, as the sequencer may patch a later entry of
     * one shard's message before an earlier one of another's. */
    for (size_t i = N; i-- > 0;)
        cf_entry_stamp(m->data + offs[i], &heads[i]);
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    for (size_t i = 0; i < N; i++) {
        cf_entry_head h;
        cf_event got;
        assert_int_equal(cf_entry_get(&r, &h, &got), 0);
        assert_int_equal(h.role, heads[i].role);
        assert_true(h.seq == heads[i].seq);
        assert_true(h.wm == heads[i].wm);
        assert_true(h.clock == heads[i].clock);
        assert_true(h.views == heads[i].views);   /* written with the entry, kept by the stamp */
        assert_same_event(&evs[i], &got);
        assert_int_equal(r.left, m->len - (i + 1 < N ? offs[i + 1] : m->len));
    }
    for (size_t i = 0; i < N; i++)
        cf_buf_free(&packed[i]);
    free(m);
}

/* Every truncation of an entry is refused: inside the head, right after
 * it, and inside the packed event. */
static void truncated_entries_are_refused(void **state)
{
    (void)state;
    cf_event ev = event("user", "/page", 5, "id");
    cf_entry_head stamp = {CF_ROLE_PAGE, 7, 3, 4, 5};
    cf_msg *m = one_entry(&ev, &stamp);
    for (size_t len = 0; len < m->len; len++) {
        cf_reader r;
        cf_reader_init(&r, m->data, len);
        cf_entry_head h;
        cf_event got;
        assert_int_equal(cf_entry_get(&r, &h, &got), -EINVAL);
    }
    cf_reader r;
    cf_reader_init(&r, m->data, m->len);
    cf_entry_head h;
    cf_event got;
    assert_int_equal(cf_entry_get(&r, &h, &got), 0);
    /* Nothing left: one more read is a truncation too. */
    assert_int_equal(cf_entry_get(&r, &h, &got), -EINVAL);
    free(m);
}

static void reset_message_round_trips(void **state)
{
    (void)state;
    cf_view_settings vs = {.window_ms = 60000,
                           .slide_size_ms = 300000,
                           .slide_ms = 60000,
                           .session_gap_ms = 1800000,
                           .half_life_ms = 3600000,
                           .allowed_lateness_ms = 0};
    unsigned mask = CF_VIEW_SLIDING | CF_VIEW_TRENDING;
    cf_msg *m = cf_msg_reset_new(mask, &vs);
    assert_non_null(m);
    assert_int_equal(m->kind, CF_MSG_RESET);
    assert_int_equal(cf_msg_bytes(m), sizeof *m + sizeof vs);
    unsigned views = 0;
    cf_view_settings got;
    memset(&got, 0xff, sizeof got);
    assert_int_equal(cf_msg_reset_get(m, &views, &got), 0);
    assert_int_equal(views, mask);
    assert_memory_equal(&got, &vs, sizeof vs);
    free(m);
    /* A RESET whose data is not one settings record is refused. */
    cf_msg *bad = cf_msg_new(CF_MSG_RESET, sizeof vs - 1);
    assert_non_null(bad);
    memset(bad->data, 0, bad->len);
    assert_int_equal(cf_msg_reset_get(bad, &views, &got), -EINVAL);
    free(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(head_layout_is_pinned),
        cmocka_unit_test(unstamped_entry_reads_blank),
        cmocka_unit_test(entries_round_trip_at_the_extremes),
        cmocka_unit_test(truncated_entries_are_refused),
        cmocka_unit_test(reset_message_round_trips),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
