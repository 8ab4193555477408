/* Unit tests for push_queue: the per-client bounded queue of the WebSocket hub
 * and its drop policy (interim first, then refuse interim; a final message
 * evicts the oldest interim or else the oldest message). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "push_queue.h"

/* A message whose payload is its name ("f1", "i2", ...): 'i' = interim. */
static cf_push_msg *mk(const char *name)
{
    cf_push_msg *m = cf_push_msg_new(name, strlen(name), 16, name[0] == 'i');
    assert_non_null(m);
    return m;
}

/* Offers a fresh message and drops the caller's reference. */
static size_t offer(cf_push_queue *q, const char *name)
{
    cf_push_msg *m = mk(name);
    size_t d = cf_push_queue_offer(q, m);
    cf_push_msg_unref(m);
    return d;
}

/* Pops everything and compares the names, space separated, with want. */
static void expect_contents(cf_push_queue *q, const char *want)
{
    char got[256] = "";
    cf_push_msg *m;
    while ((m = cf_push_queue_pop(q))) {
        if (got[0])
            strcat(got, " ");
        strcat(got, (const char *)cf_push_msg_payload(m));
        cf_push_msg_unref(m);
    }
    assert_string_equal(got, want);
    assert_int_equal(cf_push_queue_len(q), 0);
    assert_int_equal(cf_push_queue_interim(q), 0);
}

static void message_copy_and_headroom(void **state)
{
    (void)state;
    char src[] = "hello";
    cf_push_msg *m = cf_push_msg_new(src, 5, 16, true);
    assert_non_null(m);
    src[0] = 'X';   /* the message holds its own copy */
    assert_int_equal(m->len, 5);
    assert_true(m->interim);
    assert_ptr_equal(cf_push_msg_payload(m), m->buf + 16);
    assert_string_equal((const char *)cf_push_msg_payload(m), "hello");
    memset(m->buf, 0xAA, 16);   /* headroom is writable */
    cf_push_msg_unref(m);
    cf_push_msg_unref(NULL);
}

static void fifo_below_capacity(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(3, SIZE_MAX);
    assert_non_null(q);
    assert_null(cf_push_queue_pop(q));
    assert_int_equal(offer(q, "f1"), 0);
    assert_int_equal(offer(q, "i2"), 0);
    assert_int_equal(offer(q, "f3"), 0);    /* exactly full: nothing dropped */
    assert_int_equal(cf_push_queue_len(q), 3);
    assert_int_equal(cf_push_queue_interim(q), 1);
    expect_contents(q, "f1 i2 f3");
    cf_push_queue_free(q);
}

static void interim_evicts_oldest_interim(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(4, SIZE_MAX);
    offer(q, "f1");
    offer(q, "i2");
    offer(q, "f3");
    offer(q, "i4");
    assert_int_equal(offer(q, "i5"), 1);
    assert_int_equal(cf_push_queue_len(q), 4);
    expect_contents(q, "f1 f3 i4 i5");
    cf_push_queue_free(q);
}

static void interim_refused_when_only_finals(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(2, SIZE_MAX);
    offer(q, "f1");
    offer(q, "f2");
    assert_int_equal(offer(q, "i3"), 1);
    expect_contents(q, "f1 f2");
    cf_push_queue_free(q);
}

static void final_evicts_oldest_interim(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(3, SIZE_MAX);
    offer(q, "f1");
    offer(q, "i2");
    offer(q, "i3");
    assert_int_equal(offer(q, "f4"), 1);
    assert_int_equal(cf_push_queue_interim(q), 1);
    expect_contents(q, "f1 i3 f4");
    cf_push_queue_free(q);
}

static void final_evicts_oldest_when_no_interim(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(3, SIZE_MAX);
    offer(q, "f1");
    offer(q, "f2");
    offer(q, "f3");
    assert_int_equal(offer(q, "f4"), 1);
    expect_contents(q, "f2 f3 f4");
    cf_push_queue_free(q);
}

static void capacity_one(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(1, SIZE_MAX);
    assert_int_equal(offer(q, "i1"), 0);
    assert_int_equal(offer(q, "i2"), 1);    /* replaces i1 */
    assert_int_equal(offer(q, "f3"), 1);    /* replaces i2 */
    assert_int_equal(offer(q, "i4"), 1);    /* refused */
    assert_int_equal(offer(q, "f5"), 1);    /* replaces f3 */
    expect_contents(q, "f5");
    cf_push_queue_free(q);
    assert_null(cf_push_queue_new(0, SIZE_MAX));
}

/* Evictions from the middle keep order while the ring wraps around. */
static void wraparound_keeps_order(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(4, SIZE_MAX);
    char name[8];
    size_t drops = 0;
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "%c%d", i % 3 == 0 ? 'f' : 'i', i);
        drops += offer(q, name);
        if (i % 7 == 6)
            cf_push_msg_unref(cf_push_queue_pop(q));   /* a slow reader */
        assert_true(cf_push_queue_len(q) <= 4);
    }
    /* 50 offered, 7 popped, 4 left: the rest were dropped. */
    assert_int_equal(drops, 50 - 7 - 4);
    /* Older interim messages went first; the last pop (after f48) took f39,
     * which left room for the newest interim one. */
    expect_contents(q, "f42 f45 f48 i49");
    cf_push_queue_free(q);
}

/* The byte bound: a client that never reads holds at most cap_bytes of
 * payload, however the bytes are split into messages (the message bound
 * alone let one silent client pin 256 large messages). */
static void bounded_in_bytes(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(100, 6);
    assert_int_equal(offer(q, "f1"), 0);
    assert_int_equal(offer(q, "f2"), 0);
    assert_int_equal(offer(q, "f3"), 0);
    assert_int_equal(cf_push_queue_bytes(q), 6);
    assert_int_equal(offer(q, "i4"), 1);    /* only finals: the interim one is refused */
    assert_int_equal(offer(q, "f5"), 1);    /* evicts the oldest, f1 */
    assert_int_equal(cf_push_queue_bytes(q), 6);
    expect_contents(q, "f2 f3 f5");
    assert_int_equal(cf_push_queue_bytes(q), 0);

    /* A message larger than the bound never fits: refused, and what is
     * queued stays. */
    assert_int_equal(offer(q, "f1"), 0);
    assert_int_equal(offer(q, "fbigmessage"), 1);
    assert_int_equal(offer(q, "ibigmessage"), 1);
    assert_int_equal(cf_push_queue_bytes(q), 2);
    assert_int_equal(offer(q, "i2"), 0);
    /* A large final message evicts as many as it takes: the interim i2
     * first, then the oldest (f1). */
    assert_int_equal(offer(q, "fhuge1"), 2);
    expect_contents(q, "fhuge1");

    /* Interim updates make room for a final one before finals go. */
    assert_int_equal(offer(q, "f1"), 0);
    assert_int_equal(offer(q, "i2"), 0);
    assert_int_equal(offer(q, "i3"), 0);
    assert_int_equal(offer(q, "f4x"), 2);   /* 3 bytes: i2 and i3 go, f1 stays */
    expect_contents(q, "f1 f4x");
    cf_push_queue_free(q);
}

/* Offers a fresh message carrying state bits (push_queue.h, lost state). */
static size_t offer_state(cf_push_queue *q, const char *name, unsigned bits)
{
    cf_push_msg *m = mk(name);
    m->state = bits;
    size_t d = cf_push_queue_offer(q, m);
    cf_push_msg_unref(m);
    return d;
}

/* A state message that a later one of the same bit replaced is not lost. */
static void superseded_state_is_not_lost(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(2, SIZE_MAX);
    offer_state(q, "iw1", 1);
    offer_state(q, "iw2", 1);
    assert_int_equal(offer_state(q, "iw3", 1), 1);
    assert_int_equal(cf_push_queue_lost(q), 0);
    expect_contents(q, "iw2 iw3");
    /* Sent is not lost either. */
    assert_int_equal(cf_push_queue_lost(q), 0);
    cf_push_queue_free(q);
}

/* The latest state pushed out by other messages is lost until a message
 * of its bit is queued again. */
static void evicted_latest_state_is_lost(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(2, SIZE_MAX);
    offer_state(q, "iw", 1);
    offer(q, "is1");
    assert_int_equal(offer(q, "is2"), 1);       /* evicts iw, the oldest interim */
    assert_int_equal(cf_push_queue_lost(q), 1);
    assert_int_equal(offer_state(q, "iw", 1), 1);
    assert_int_equal(cf_push_queue_lost(q), 0);
    expect_contents(q, "is2 iw");

    /* Final state messages (trending) evicted as the oldest, by bit. */
    offer_state(q, "ft", 2);
    offer_state(q, "iw", 1);
    assert_int_equal(offer(q, "f1"), 1);        /* evicts iw: lost */
    assert_int_equal(cf_push_queue_lost(q), 1);
    assert_int_equal(offer(q, "f2"), 1);        /* evicts ft: lost too */
    assert_int_equal(cf_push_queue_lost(q), 3);
    expect_contents(q, "f1 f2");
    cf_push_queue_free(q);
}

/* A refused state message is lost: the state queued before it is old. */
static void refused_state_is_lost(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(2, 8);
    offer_state(q, "ft", 2);
    offer(q, "f1");
    assert_int_equal(offer_state(q, "iw", 1), 1);   /* only finals queued */
    assert_int_equal(cf_push_queue_lost(q), 1);
    expect_contents(q, "ft f1");
    assert_int_equal(offer_state(q, "ftrending", 2), 1);    /* over the byte bound */
    assert_int_equal(cf_push_queue_lost(q), 3);
    cf_push_queue_free(q);
}

/* A message shared by two queues lives until both let go of it. */
static void shared_reference_counting(void **state)
{
    (void)state;
    cf_push_queue *a = cf_push_queue_new(2, SIZE_MAX), *b = cf_push_queue_new(2, SIZE_MAX);
    cf_push_msg *m = mk("f1");
    cf_push_queue_offer(a, m);
    cf_push_queue_offer(b, m);
    assert_int_equal(atomic_load(&m->refs), 3);
    cf_push_msg_unref(m);
    cf_push_msg *x = cf_push_queue_pop(a);
    assert_ptr_equal(x, m);
    assert_int_equal(atomic_load(&x->refs), 2);
    cf_push_msg_unref(x);
    cf_push_queue_free(a);
    cf_push_queue_free(b);  /* frees the message (ASan reports a leak otherwise) */
}

/* RFC 6455 5.2 header bytes at each length encoding's edges. */
static void frame_headers(void **state)
{
    (void)state;
    unsigned char h[CF_PUSH_FRAME_HDR_MAX];
    static const struct {
        size_t len;
        size_t hlen;
        unsigned char want[10];
    } cases[] = {
        {0, 2, {0x81, 0}},
        {125, 2, {0x81, 125}},
        {126, 4, {0x81, 126, 0, 126}},
        {0xFFFF, 4, {0x81, 126, 0xFF, 0xFF}},
        {0x10000, 10, {0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0}},
        {0x0102030405ULL, 10, {0x81, 127, 0, 0, 0, 1, 2, 3, 4, 5}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(cf_push_frame_header_len(cases[i].len), cases[i].hlen);
        memset(h, 0xEE, sizeof h);
        assert_int_equal(cf_push_frame_header(h, cases[i].len), cases[i].hlen);
        assert_memory_equal(h, cases[i].want, cases[i].hlen);
    }
}

/* A batch takes the oldest messages in order while their frames fit the
 * budget (each "fN" frame is 2 + 2 bytes), always at least one, and at
 * most max; what is left stays queued in order, counts intact. */
static void pop_batch_by_budget_and_count(void **state)
{
    (void)state;
    cf_push_queue *q = cf_push_queue_new(8, 1 << 20);
    cf_push_msg *out[8];
    assert_int_equal(cf_push_queue_pop_batch(q, out, 8, 100), 0);
    const char *names[] = {"f1", "i2", "f3", "i4", "f5", "f6"};
    for (size_t i = 0; i < 6; i++)
        assert_int_equal(offer(q, names[i]), 0);

    /* 12 bytes: three 4-byte frames, not a fourth (budget 15). */
    size_t n = cf_push_queue_pop_batch(q, out, 8, 15);
    assert_int_equal(n, 3);
    assert_string_equal((const char *)cf_push_msg_payload(out[0]), "f1");
    assert_string_equal((const char *)cf_push_msg_payload(out[1]), "i2");
    assert_string_equal((const char *)cf_push_msg_payload(out[2]), "f3");
    for (size_t i = 0; i < n; i++)
        cf_push_msg_unref(out[i]);
    assert_int_equal(cf_push_queue_len(q), 3);
    assert_int_equal(cf_push_queue_interim(q), 1);
    assert_int_equal(cf_push_queue_bytes(q), 6);

    /* A budget below one frame still yields the oldest message. */
    n = cf_push_queue_pop_batch(q, out, 8, 1);
    assert_int_equal(n, 1);
    assert_string_equal((const char *)cf_push_msg_payload(out[0]), "i4");
    cf_push_msg_unref(out[0]);
    assert_int_equal(cf_push_queue_interim(q), 0);

    /* max bounds the count whatever the budget. */
    n = cf_push_queue_pop_batch(q, out, 1, 1000);
    assert_int_equal(n, 1);
    assert_string_equal((const char *)cf_push_msg_payload(out[0]), "f5");
    cf_push_msg_unref(out[0]);
    expect_contents(q, "f6");
    cf_push_queue_free(q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(message_copy_and_headroom),
        cmocka_unit_test(fifo_below_capacity),
        cmocka_unit_test(interim_evicts_oldest_interim),
        cmocka_unit_test(interim_refused_when_only_finals),
        cmocka_unit_test(final_evicts_oldest_interim),
        cmocka_unit_test(final_evicts_oldest_when_no_interim),
        cmocka_unit_test(capacity_one),
        cmocka_unit_test(wraparound_keeps_order),
        cmocka_unit_test(bounded_in_bytes),
        cmocka_unit_test(superseded_state_is_not_lost),
        cmocka_unit_test(evicted_latest_state_is_lost),
        cmocka_unit_test(refused_state_is_lost),
        cmocka_unit_test(shared_reference_counting),
        cmocka_unit_test(frame_headers),
        cmocka_unit_test(pop_batch_by_budget_and_count),
    };
    return cmocka_run_group_tests_name("push_queue", tests, NULL, NULL);
}
