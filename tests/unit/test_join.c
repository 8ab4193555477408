/* Unit tests for cf_join: the orders-with-payments interval join (each
 * matching pair once, window boundaries, either arrival order, watermark
 * cleanup, late records, the buffer bound, a randomized exactly-once check)
 * and the stream-table join (upsert, override, delete, miss). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "cf_join.h"

/* ---- the example: orders and payments ------------------------------------ */

typedef struct order {
    char order_id[16];
    char customer_id[16];
    int64_t amount_cents;
} order;

typedef struct payment {
    char payment_id[16];
    char order_id[16];
    char method[16];
} payment;

typedef struct paid_order {
    char order_id[16];
    char customer_id[16];
    int64_t amount_cents;
    char payment_id[16];
    char method[16];
    char status[8];
    int64_t order_ts, payment_ts;
} paid_order;

#define MAX_OUT 4096

typedef struct sink {
    paid_order rows[MAX_OUT];
    size_t n;
} sink;

/* Builds the joined record from both payloads (left = order, right =
 * payment), as an application would. */
static void emit_paid(void *ctx, const cf_join_record *l, const cf_join_record *r)
{
    sink *s = ctx;
    assert_int_equal(l->payload_len, sizeof(order));
    assert_int_equal(r->payload_len, sizeof(payment));
    order o;
    payment p;
    memcpy(&o, l->payload, sizeof o);
    memcpy(&p, r->payload, sizeof p);
    /* The key is the order id on both sides. */
    assert_int_equal(l->key_len, strlen(o.order_id));
    assert_memory_equal(l->key, o.order_id, l->key_len);
    assert_memory_equal(r->key, p.order_id, r->key_len);
    assert_true(s->n < MAX_OUT);
    paid_order *out = &s->rows[s->n++];
    memset(out, 0, sizeof *out);
    memcpy(out->order_id, o.order_id, sizeof out->order_id);
    memcpy(out->customer_id, o.customer_id, sizeof out->customer_id);
    out->amount_cents = o.amount_cents;
    memcpy(out->payment_id, p.payment_id, sizeof out->payment_id);
    memcpy(out->method, p.method, sizeof out->method);
    strcpy(out->status, "paid");
    out->order_ts = l->ts;
    out->payment_ts = r->ts;
}

static int push_order(cf_join_interval *j, const char *id, const char *cust, int64_t amount,
                      int64_t ts)
{
    order o;
    memset(&o, 0, sizeof o);
    snprintf(o.order_id, sizeof o.order_id, "%s", id);
    snprintf(o.customer_id, sizeof o.customer_id, "%s", cust);
    o.amount_cents = amount;
    return cf_join_interval_push(j, CF_JOIN_LEFT, id, strlen(id), ts, &o, sizeof o);
}

static int push_payment(cf_join_interval *j, const char *id, const char *order_id,
                        const char *method, int64_t ts)
{
    payment p;
    memset(&p, 0, sizeof p);
    snprintf(p.payment_id, sizeof p.payment_id, "%s", id);
    snprintf(p.order_id, sizeof p.order_id, "%s", order_id);
    snprintf(p.method, sizeof p.method, "%s", method);
    return cf_join_interval_push(j, CF_JOIN_RIGHT, order_id, strlen(order_id), ts, &p, sizeof p);
}

static const paid_order *find_row(const sink *s, const char *order_id, const char *payment_id)
{
    const paid_order *hit = NULL;
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->rows[i].order_id, order_id) && !strcmp(s->rows[i].payment_id, payment_id)) {
            assert_null(hit); /* at most once */
            hit = &s->rows[i];
        }
    return hit;
}

#define MIN 60000
#define T0 1795000000000

static sink out;

static int reset_sink(void **state)
{
    (void)state;
    memset(&out, 0, sizeof out);
    return 0;
}

/* ---- interval join ------------------------------------------------------- */

static void new_rejects_bad_arguments(void **state)
{
    (void)state;
    assert_null(cf_join_interval_new(-1, 0, 10, emit_paid, &out));
    assert_null(cf_join_interval_new(10, -1, 10, emit_paid, &out));
    assert_null(cf_join_interval_new(10, 0, 0, emit_paid, &out));
    assert_null(cf_join_interval_new(10, 0, 10, NULL, &out));
    cf_join_interval_free(NULL);
    cf_join_interval *j = cf_join_interval_new(0, 0, 1, emit_paid, &out);
    assert_non_null(j);
    assert_true(cf_join_interval_watermark(j) == INT64_MIN);
    cf_join_interval_free(j);
}

static void each_pair_once_either_order(void **state)
{
    (void)state;
    cf_join_interval *j = cf_join_interval_new(10 * MIN, 0, 100, emit_paid, &out);
    /* o1 first, then its payment. */
    assert_int_equal(push_order(j, "o1", "c7", 1999, T0), 0);
    assert_int_equal(push_payment(j, "p1", "o1", "card", T0 + MIN), 1);
    /* p2 arrives before its order. */
    assert_int_equal(push_payment(j, "p2", "o2", "paypal", T0 + 2 * MIN), 0);
    assert_int_equal(push_order(j, "o2", "c8", 500, T0 + MIN), 1);
    /* o3 is paid twice (a retry): two pairs, each once. */
    assert_int_equal(push_order(j, "o3", "c9", 42, T0), 0);
    assert_int_equal(push_payment(j, "p3a", "o3", "card", T0 + 3 * MIN), 1);
    assert_int_equal(push_payment(j, "p3b", "o3", "card", T0 + 4 * MIN), 1);
    /* A payment for an unknown order and an order without payment. */
    assert_int_equal(push_payment(j, "p9", "o9", "card", T0), 0);
    assert_int_equal(push_order(j, "o4", "c1", 7, T0), 0);
    assert_int_equal(out.n, 4);

    const paid_order *r = find_row(&out, "o1", "p1");
    assert_non_null(r);
    assert_string_equal(r->customer_id, "c7");
    assert_int_equal(r->amount_cents, 1999);
    assert_string_equal(r->method, "card");
    assert_string_equal(r->status, "paid");
    assert_true(r->order_ts == T0 && r->payment_ts == T0 + MIN);
    r = find_row(&out, "o2", "p2");
    assert_non_null(r);
    assert_string_equal(r->customer_id, "c8");
    assert_string_equal(r->method, "paypal");
    assert_non_null(find_row(&out, "o3", "p3a"));
    assert_non_null(find_row(&out, "o3", "p3b"));

    cf_join_interval_stats st;
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.joined, 4);
    assert_int_equal(st.pushed[CF_JOIN_LEFT], 4);
    assert_int_equal(st.pushed[CF_JOIN_RIGHT], 5);
    assert_int_equal(st.buffered[CF_JOIN_LEFT], 4);
    assert_int_equal(st.buffered[CF_JOIN_RIGHT], 5);
    cf_join_interval_free(j);
}

/* |dt| = window joins, window + 1 does not, on both sides of the order and
 * in both arrival orders. */
static void window_boundary_is_inclusive(void **state)
{
    (void)state;
    const int64_t w = 10 * MIN;
    const int64_t dts[] = {w, -w, w + 1, -w - 1, 0};
    const int joins[] = {1, 1, 0, 0, 1};
    for (int payment_first = 0; payment_first < 2; payment_first++) {
        for (size_t k = 0; k < 5; k++) {
            memset(&out, 0, sizeof out);
            cf_join_interval *j = cf_join_interval_new(w, 0, 10, emit_paid, &out);
            int a, b;
            if (payment_first) {
                a = push_payment(j, "p", "o", "card", T0 + dts[k]);
                b = push_order(j, "o", "c", 1, T0);
            } else {
                a = push_order(j, "o", "c", 1, T0);
                b = push_payment(j, "p", "o", "card", T0 + dts[k]);
            }
            assert_int_equal(a, 0);
            assert_int_equal(b, joins[k]);
            assert_int_equal(out.n, (size_t)joins[k]);
            cf_join_interval_free(j);
        }
    }
    /* A zero window joins equal timestamps only. */
    memset(&out, 0, sizeof out);
    cf_join_interval *j = cf_join_interval_new(0, 0, 10, emit_paid, &out);
    assert_int_equal(push_order(j, "o", "c", 1, T0), 0);
    assert_int_equal(push_payment(j, "p", "o", "card", T0 + 1), 0);
    assert_int_equal(push_payment(j, "q", "o", "card", T0), 1);
    cf_join_interval_free(j);
}

/* Records are freed by the watermark exactly when W > ts + window, and only
 * by advance. */
static void watermark_cleans_buffer(void **state)
{
    (void)state;
    const int64_t w = 10 * MIN;
    cf_join_interval *j = cf_join_interval_new(w, 0, 100, emit_paid, &out);
    assert_int_equal(push_order(j, "o1", "c", 1, T0), 0);
    assert_int_equal(push_order(j, "o2", "c", 1, T0 + MIN), 0);
    assert_int_equal(push_payment(j, "p2", "o2", "card", T0 + 2 * MIN), 1);
    cf_join_interval_stats st;
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.buffered[0] + st.buffered[1], 3);
    size_t bytes_full = st.buffered_bytes;
    assert_true(bytes_full > 0);

    assert_int_equal(cf_join_interval_advance(j, T0 + w), 0); /* W = ts + window: kept */
    assert_int_equal(cf_join_interval_advance(j, T0 + w + 1), 1); /* o1 goes */
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.buffered[CF_JOIN_LEFT], 1);
    assert_int_equal(st.buffered[CF_JOIN_RIGHT], 1);
    assert_int_equal(st.expired, 1);
    assert_true(st.buffered_bytes < bytes_full);
    /* A watermark that does not move forward changes nothing. */
    assert_int_equal(cf_join_interval_advance(j, T0), 0);
    assert_true(cf_join_interval_watermark(j) == T0 + w + 1);
    assert_int_equal(cf_join_interval_advance(j, T0 + 2 * MIN + w + 1), 2);
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.buffered[0] + st.buffered[1], 0);
    assert_int_equal(st.buffered_bytes, 0);
    assert_int_equal(st.expired, 3);
    /* The key came back empty: a new order for o2 finds no old payment. */
    assert_int_equal(push_order(j, "o2", "c", 1, T0 + 2 * MIN + w + 1), 0);
    cf_join_interval_free(j);
}

/* A record behind the watermark is counted and dropped, even if a
 * buffered partner would match it; at the watermark it is accepted. */
static void late_record_dropped(void **state)
{
    (void)state;
    const int64_t w = 10 * MIN;
    cf_join_interval *j = cf_join_interval_new(w, 0, 100, emit_paid, &out);
    assert_int_equal(push_order(j, "o1", "c", 1, T0), 0);
    cf_join_interval_advance(j, T0 + MIN);
    assert_int_equal(push_payment(j, "p1", "o1", "card", T0 + MIN - 1), -ERANGE);
    assert_int_equal(out.n, 0);
    assert_int_equal(push_payment(j, "p2", "o1", "card", T0 + MIN), 1);
    cf_join_interval_stats st;
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.late, 1);
    assert_int_equal(st.joined, 1);
    assert_int_equal(st.buffered[CF_JOIN_RIGHT], 1);
    cf_join_interval_free(j);

    /* With allowed lateness L: late below W - L, kept until W > ts + w + L. */
    memset(&out, 0, sizeof out);
    const int64_t L = 5000;
    j = cf_join_interval_new(w, L, 100, emit_paid, &out);
    cf_join_interval_advance(j, T0);
    assert_int_equal(push_order(j, "o1", "c", 1, T0 - L - 1), -ERANGE);
    assert_int_equal(push_order(j, "o1", "c", 1, T0 - L), 0);
    assert_int_equal(push_payment(j, "p1", "o1", "card", T0 - L + w), 1);
    assert_int_equal(cf_join_interval_advance(j, T0 - L + w + L), 0);
    assert_int_equal(cf_join_interval_advance(j, T0 + w + 1), 1);
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.late, 1);
    cf_join_interval_free(j);
}

/* Beyond max_buffered a record is refused whole; room made by the
 * watermark lets records in again. */
static void buffer_bound_refuses(void **state)
{
    (void)state;
    const int64_t w = MIN;
    cf_join_interval *j = cf_join_interval_new(w, 0, 3, emit_paid, &out);
    assert_int_equal(push_order(j, "o1", "c", 1, T0), 0);
    assert_int_equal(push_order(j, "o2", "c", 1, T0 + 10), 0);
    assert_int_equal(push_order(j, "o3", "c", 1, T0 + 20), 0);
    assert_int_equal(push_payment(j, "p1", "o1", "card", T0 + 30), -ENOBUFS);
    assert_int_equal(out.n, 0);
    cf_join_interval_stats st;
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.buffered[0] + st.buffered[1], 3);
    assert_int_equal(cf_join_interval_advance(j, T0 + w + 1), 1);
    assert_int_equal(push_payment(j, "p2", "o2", "card", T0 + w + 1), 1); /* dt = w - 9 */
    /* Oversized keys are refused too. */
    static char big[CF_JOIN_MAX_BYTES + 1];
    assert_int_equal(cf_join_interval_push(j, CF_JOIN_LEFT, big, sizeof big, T0 + w + 1, "", 0),
                     -EINVAL);
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.refused, 2);
    cf_join_interval_free(j);
}

/* Randomized: records on both sides with random keys and bounded disorder,
 * a watermark that trails the maximum timestamp. The emitted pairs must be
 * exactly the pairs of accepted records within the window: none missing,
 * none twice, none outside. */
typedef struct gen_rec {
    int side, key, id;
    int64_t ts;
    int accepted;
} gen_rec;

typedef struct pair_sink {
    int (*pairs)[2];
    size_t n, cap;
} pair_sink;

static void emit_ids(void *ctx, const cf_join_record *l, const cf_join_record *r)
{
    pair_sink *s = ctx;
    assert_true(s->n < s->cap);
    int a, b;
    memcpy(&a, l->payload, sizeof a);
    memcpy(&b, r->payload, sizeof b);
    s->pairs[s->n][0] = a;
    s->pairs[s->n][1] = b;
    s->n++;
}

static void randomized_exactly_once(void **state)
{
    (void)state;
    uint64_t seed = 99;
    const int n = 3000, keys = 40;
    const int64_t w = 2000, disorder = 5000;
    gen_rec *g = calloc((size_t)n, sizeof *g);
    pair_sink s = {calloc(200000, sizeof *s.pairs), 0, 200000};
    assert_non_null(g);
    assert_non_null(s.pairs);
    cf_join_interval *j = cf_join_interval_new(w, 0, 100000, emit_ids, &s);
    int64_t max_ts = T0;
    for (int i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t x = seed >> 20;
        g[i].side = (int)(x & 1);
        g[i].key = (int)((x >> 1) % (uint64_t)keys);
        g[i].id = i;
        g[i].ts = T0 + i * 100 - (int64_t)((x >> 10) % (uint64_t)disorder);
        char key[8];
        int kl = snprintf(key, sizeof key, "k%d", g[i].key);
        int rc = cf_join_interval_push(j, g[i].side ? CF_JOIN_RIGHT : CF_JOIN_LEFT, key,
                                       (size_t)kl, g[i].ts, &g[i].id, sizeof g[i].id);
        assert_true(rc >= 0 || rc == -ERANGE);
        g[i].accepted = rc >= 0;
        if (g[i].ts > max_ts)
            max_ts = g[i].ts;
        if (i % 10 == 0)
            cf_join_interval_advance(j, max_ts - 3000); /* some records are late */
    }
    /* Expected pairs, counted per (left, right). */
    size_t expected = 0, late = 0;
    for (int a = 0; a < n; a++) {
        late += !g[a].accepted;
        if (!g[a].accepted || g[a].side != 0)
            continue;
        for (int b = 0; b < n; b++) {
            if (!g[b].accepted || g[b].side != 1 || g[b].key != g[a].key)
                continue;
            int64_t dt = g[a].ts - g[b].ts;
            if (dt >= -w && dt <= w)
                expected++;
        }
    }
    assert_true(late > 0 && late < (size_t)n / 2);
    assert_true(expected > 100);
    assert_int_equal(s.n, expected);
    /* Each emitted pair is a real pair, and no pair appears twice. */
    unsigned char *seen = calloc((size_t)n * (size_t)n, 1);
    assert_non_null(seen);
    for (size_t i = 0; i < s.n; i++) {
        int a = s.pairs[i][0], b = s.pairs[i][1];
        assert_int_equal(g[a].side, 0);
        assert_int_equal(g[b].side, 1);
        assert_int_equal(g[a].key, g[b].key);
        int64_t dt = g[a].ts - g[b].ts;
        assert_true(dt >= -w && dt <= w);
        assert_int_equal(seen[(size_t)a * (size_t)n + (size_t)b], 0);
        seen[(size_t)a * (size_t)n + (size_t)b] = 1;
    }
    cf_join_interval_stats st;
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.late, late);
    /* The watermark bounds the buffer: nothing older than W - w is held. */
    assert_true(st.buffered[0] + st.buffered[1] < (size_t)n / 5);
    cf_join_interval_advance(j, INT64_MAX);
    cf_join_interval_stats_get(j, &st);
    assert_int_equal(st.buffered[0] + st.buffered[1], 0);
    assert_int_equal(st.buffered_bytes, 0);
    free(seen);
    free(s.pairs);
    free(g);
    cf_join_interval_free(j);
}

/* Timestamps at the ends of int64 neither overflow nor match wrongly. */
static void extreme_timestamps(void **state)
{
    (void)state;
    cf_join_interval *j = cf_join_interval_new(10, 0, 10, emit_paid, &out);
    assert_int_equal(push_order(j, "o", "c", 1, INT64_MIN), 0);
    assert_int_equal(push_payment(j, "p", "o", "card", INT64_MAX), 0);
    assert_int_equal(push_payment(j, "q", "o", "card", INT64_MIN + 10), 1);
    assert_int_equal(cf_join_interval_advance(j, INT64_MIN + 20), 1);
    assert_int_equal(cf_join_interval_advance(j, INT64_MAX), 1);
    cf_join_interval_free(j);
}

/* ---- stream-table join ---------------------------------------------------- */

static void table_upsert_delete_miss(void **state)
{
    (void)state;
    assert_null(cf_join_table_new(0));
    cf_join_table_free(NULL);
    cf_join_table *t = cf_join_table_new(2);
    order o1 = {"o1", "c7", 1999}, o1b = {"o1", "c7", 2500}, o2 = {"o2", "c8", 10};
    size_t len = 0;
    /* Payment for an order the table has not seen: a miss. */
    assert_null(cf_join_table_enrich(t, "o1", 2, &len));
    assert_int_equal(cf_join_table_upsert(t, "o1", 2, &o1, sizeof o1), 0);
    const order *v = cf_join_table_enrich(t, "o1", 2, &len);
    assert_non_null(v);
    assert_int_equal(len, sizeof(order));
    assert_int_equal(v->amount_cents, 1999);
    /* An upsert overrides (the table keeps its own copy). */
    assert_int_equal(cf_join_table_upsert(t, "o1", 2, &o1b, sizeof o1b), 0);
    o1b.amount_cents = -1;
    v = cf_join_table_enrich(t, "o1", 2, &len);
    assert_int_equal(v->amount_cents, 2500);
    assert_int_equal(cf_join_table_upsert(t, "o2", 2, &o2, sizeof o2), 0);
    /* Full: a new key is refused, an existing one still updates. */
    assert_int_equal(cf_join_table_upsert(t, "o3", 2, &o2, sizeof o2), -ENOBUFS);
    assert_int_equal(cf_join_table_upsert(t, "o2", 2, "", 0), 0);
    const void *empty = cf_join_table_enrich(t, "o2", 2, &len);
    assert_non_null(empty); /* an empty value is present, not a miss */
    assert_int_equal(len, 0);
    /* Delete, then the key misses and frees room. */
    assert_int_equal(cf_join_table_delete(t, "o1", 2), 0);
    assert_int_equal(cf_join_table_delete(t, "o1", 2), -ENOENT);
    assert_null(cf_join_table_enrich(t, "o1", 2, NULL));
    assert_int_equal(cf_join_table_upsert(t, "o3", 2, &o2, sizeof o2), 0);
    /* Keys are bytes: a prefix or a different length is another key. */
    assert_null(cf_join_table_enrich(t, "o", 1, NULL));
    assert_null(cf_join_table_enrich(t, "o3\0", 3, NULL));

    cf_join_table_stats st;
    cf_join_table_stats_get(t, &st);
    assert_int_equal(st.hits, 3);
    assert_int_equal(st.misses, 4);
    assert_int_equal(st.refused, 1);
    assert_int_equal(st.entries, 2);
    assert_int_equal(st.bytes, 2 + 0 + 2 + sizeof(order));
    cf_join_table_free(t);
}

/* Many keys in and half of them out: every survivor stays reachable
 * (backward-shift deletion in the shared map). */
static void table_many_keys(void **state)
{
    (void)state;
    cf_join_table *t = cf_join_table_new(100000);
    char k[16];
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof k, "order-%d", i);
        assert_int_equal(cf_join_table_upsert(t, k, (size_t)n, &i, sizeof i), 0);
    }
    for (int i = 1; i < 5000; i += 2) {
        int n = snprintf(k, sizeof k, "order-%d", i);
        assert_int_equal(cf_join_table_delete(t, k, (size_t)n), 0);
    }
    for (int i = 0; i < 5000; i++) {
        int n = snprintf(k, sizeof k, "order-%d", i);
        size_t len;
        const int *v = cf_join_table_enrich(t, k, (size_t)n, &len);
        if (i % 2) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_int_equal(*v, i);
        }
    }
    cf_join_table_stats st;
    cf_join_table_stats_get(t, &st);
    assert_int_equal(st.entries, 2500);
    cf_join_table_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(new_rejects_bad_arguments, reset_sink),
        cmocka_unit_test_setup(each_pair_once_either_order, reset_sink),
        cmocka_unit_test_setup(window_boundary_is_inclusive, reset_sink),
        cmocka_unit_test_setup(watermark_cleans_buffer, reset_sink),
        cmocka_unit_test_setup(late_record_dropped, reset_sink),
        cmocka_unit_test_setup(buffer_bound_refuses, reset_sink),
        cmocka_unit_test(randomized_exactly_once),
        cmocka_unit_test_setup(extreme_timestamps, reset_sink),
        cmocka_unit_test(table_upsert_delete_miss),
        cmocka_unit_test(table_many_keys),
    };
    return cmocka_run_group_tests_name("join", tests, NULL, NULL);
}
