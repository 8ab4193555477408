/* Unit tests for cf_kv: the keyed state store (lookup, growth, backward-shift
 * deletion, key arena, TTL expiry order and boundaries, the key bound and its
 * eviction policy, save/load). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>

#include <cmocka.h>

#include "cf_kv.h"

static uint64_t rng_state;

static uint64_t rnd(void)
{
    /* xorshift64*: deterministic, seeded per test */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 0x2545f4914f6cdd1dULL;
}

static size_t make_key(char *buf, uint64_t i, size_t pad)
{
    /* "k<i>" plus `pad` filler bytes, to exercise inline and arena keys */
    size_t n = 0;
    buf[n++] = 'k';
    char tmp[24];
    size_t t = 0;
    do {
        tmp[t++] = (char)('0' + i % 10);
        i /= 10;
    } while (i);
    while (t)
        buf[n++] = tmp[--t];
    for (size_t p = 0; p < pad; p++)
        buf[n++] = (char)('a' + p % 26);
    return n;
}

static void put_get_delete(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    assert_non_null(kv);
    void *v;
    assert_int_equal(cf_kv_put(kv, "abc", 3, 100, NULL, NULL, &v), 1);
    assert_true(*(uint64_t *)v == 0); /* new values are zeroed */
    *(uint64_t *)v = 42;
    assert_int_equal(cf_kv_put(kv, "abc", 3, 999, NULL, NULL, &v), 0);
    assert_true(*(uint64_t *)v == 42);
    int64_t exp = 0;
    v = cf_kv_get(kv, "abc", 3, &exp);
    assert_non_null(v);
    assert_true(exp == 100); /* put on an existing key keeps its expiry */
    assert_null(cf_kv_get(kv, "abd", 3, NULL));
    assert_null(cf_kv_get(kv, "ab", 2, NULL));
    /* empty key and the 17/18-byte inline/arena boundary */
    assert_int_equal(cf_kv_put(kv, "", 0, 1, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "12345678901234567", 17, 2, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "123456789012345678", 18, 3, NULL, NULL, NULL), 1);
    assert_non_null(cf_kv_get(kv, "", 0, NULL));
    assert_non_null(cf_kv_get(kv, "12345678901234567", 17, NULL));
    assert_non_null(cf_kv_get(kv, "123456789012345678", 18, NULL));
    assert_null(cf_kv_get(kv, "123456789012345679", 18, NULL));
    assert_null(cf_kv_get(kv, "12345678901234568", 17, NULL));
    assert_int_equal(cf_kv_count(kv), 4);
    assert_int_equal(cf_kv_set_expiry(kv, "abc", 3, 5), 0);
    assert_non_null(cf_kv_get(kv, "abc", 3, &exp));
    assert_true(exp == 5);
    assert_int_equal(cf_kv_set_expiry(kv, "zzz", 3, 5), -ENOENT);
    assert_int_equal(cf_kv_delete(kv, "abc", 3), 0);
    assert_int_equal(cf_kv_delete(kv, "abc", 3), -ENOENT);
    assert_null(cf_kv_get(kv, "abc", 3, NULL));
    assert_int_equal(cf_kv_count(kv), 3);
    assert_true(cf_kv_next_expiry(kv) == 1);
    cf_kv_free(kv);
    cf_kv_free(NULL);
}

static void rejects_overlong_key(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(0, 0);
    size_t n = CF_KV_MAX_KEY + 1;
    char *big = calloc(1, n);
    assert_non_null(big);
    assert_int_equal(cf_kv_put(kv, big, n, 1, NULL, NULL, NULL), -EINVAL);
    assert_int_equal(cf_kv_put(kv, big, n - 1, 1, NULL, NULL, NULL), 1);
    assert_non_null(cf_kv_get(kv, big, n - 1, NULL));
    assert_int_equal(cf_kv_count(kv), 1);
    free(big);
    cf_kv_free(kv);
}

struct seen {
    int64_t exp[64];
    char key[64][32];
    size_t n;
};

static void record(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)value;
    struct seen *s = ctx;
    if (s->n < 64) {
        s->exp[s->n] = expiry;
        memcpy(s->key[s->n], key, key_len < 31 ? key_len : 31);
        s->key[s->n][key_len < 31 ? key_len : 31] = 0;
    }
    s->n++;
}

static void expiry_boundaries_and_order(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(0, 0);
    assert_int_equal(cf_kv_put(kv, "c", 1, 100, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "a", 1, 100, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "b", 1, 50, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "d", 1, 101, NULL, NULL, NULL), 1);
    assert_int_equal(cf_kv_put(kv, "min", 3, INT64_MIN, NULL, NULL, NULL), 1);
    struct seen s = {0};
    assert_int_equal(cf_kv_expire(kv, INT64_MIN, record, &s), 1);
    assert_string_equal(s.key[0], "min");
    s.n = 0;
    assert_int_equal(cf_kv_expire(kv, 49, record, &s), 0);
    assert_int_equal(cf_kv_expire(kv, 50, record, &s), 1); /* due at exactly expiry */
    assert_int_equal(cf_kv_expire(kv, 99, record, &s), 0);
    assert_int_equal(cf_kv_expire(kv, 100, record, &s), 2);
    assert_int_equal(s.n, 3);
    assert_true(s.exp[0] == 50 && s.exp[1] == 100 && s.exp[2] == 100);
    assert_int_equal(cf_kv_count(kv), 1);
    assert_non_null(cf_kv_get(kv, "d", 1, NULL));
    assert_int_equal(cf_kv_expire(kv, INT64_MAX, NULL, NULL), 1);
    assert_int_equal(cf_kv_count(kv), 0);
    assert_true(cf_kv_next_expiry(kv) == INT64_MAX);
    cf_kv_free(kv);
}

static void expiry_order_is_independent_of_history(void **state)
{
    (void)state;
    /* Equal expiries: the order comes from (hash, key), so two stores built in
     * opposite orders expire identically. */
    cf_kv *a = cf_kv_new(0, 0), *b = cf_kv_new(0, 0);
    char k[32];
    for (int i = 0; i < 40; i++) {
        size_t n = make_key(k, (uint64_t)i, 0);
        cf_kv_put(a, k, n, 7, NULL, NULL, NULL);
        n = make_key(k, (uint64_t)(39 - i), 0);
        cf_kv_put(b, k, n, 7, NULL, NULL, NULL);
    }
    struct seen sa = {0}, sb = {0};
    cf_kv_expire(a, 7, record, &sa);
    cf_kv_expire(b, 7, record, &sb);
    assert_int_equal(sa.n, 40);
    assert_int_equal(sb.n, 40);
    for (int i = 0; i < 40; i++)
        assert_string_equal(sa.key[i], sb.key[i]);
    cf_kv_free(a);
    cf_kv_free(b);
}

struct evict_log {
    int64_t last_exp;
    size_t n;
    bool order_ok;
};

static void on_evict(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)key; (void)key_len; (void)value;
    struct evict_log *e = ctx;
    if (e->n && expiry < e->last_exp)
        e->order_ok = false;
    e->last_exp = expiry;
    e->n++;
}

static void honours_key_limit_under_10x(void **state)
{
    (void)state;
    const size_t max = 1000;
    cf_kv *kv = cf_kv_new(8, max);
    char k[64];
    struct evict_log e = { 0, 0, true };
    size_t mem_at_full = 0;
    for (uint64_t i = 0; i < 10 * max; i++) {
        size_t n = make_key(k, i, i % 2 ? 20 : 0); /* half arena keys */
        /* increasing expiry: the oldest key is always the one evicted */
        int r = cf_kv_put(kv, k, n, (int64_t)i, on_evict, &e, NULL);
        assert_int_equal(r, 1);
        assert_true(cf_kv_count(kv) <= max);
        if (i == max - 1)
            mem_at_full = cf_kv_memory(kv);
    }
    assert_int_equal(cf_kv_count(kv), max);
    assert_int_equal(cf_kv_evictions(kv), 9 * max);
    assert_int_equal(e.n, 9 * max);
    assert_true(e.order_ok);
    /* memory does not grow with the flood (arena garbage is compacted) */
    assert_true(cf_kv_memory(kv) <= mem_at_full * 2);
    for (uint64_t i = 0; i < 10 * max; i++) {
        size_t n = make_key(k, i, i % 2 ? 20 : 0);
        if (i < 9 * max)
            assert_null(cf_kv_get(kv, k, n, NULL));
        else
            assert_non_null(cf_kv_get(kv, k, n, NULL));
    }
    /* an existing key never evicts */
    size_t n = make_key(k, 9999, 20);
    assert_int_equal(cf_kv_put(kv, k, n, 0, on_evict, &e, NULL), 0);
    assert_int_equal(cf_kv_evictions(kv), 9 * max);
    /* a new key whose expiry is the smallest still goes in; the old min goes */
    assert_int_equal(cf_kv_put(kv, "new", 3, -5, on_evict, &e, NULL), 1);
    assert_null(cf_kv_get(kv, "k9000", 5, NULL));
    assert_non_null(cf_kv_get(kv, "new", 3, NULL));
    cf_kv_free(kv);
}

static void growth_rehash_many_keys(void **state)
{
    (void)state;
    const uint64_t N = 100000;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    char k[64];
    for (uint64_t i = 0; i < N; i++) {
        size_t n = make_key(k, i, i % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, n, (int64_t)(i * 7919 % N), NULL, NULL, &v), 1);
        memcpy(v, &i, 8);
    }
    assert_int_equal(cf_kv_count(kv), N);
    for (uint64_t i = 0; i < N; i++) {
        size_t n = make_key(k, i, i % 3 == 0 ? 15 : 0);
        int64_t exp;
        uint64_t *v = cf_kv_get(kv, k, n, &exp);
        assert_non_null(v);
        assert_true(*v == i);
        assert_true(exp == (int64_t)(i * 7919 % N));
    }
    /* delete the odd keys; the even ones survive backward shifts */
    for (uint64_t i = 1; i < N; i += 2) {
        size_t n = make_key(k, i, i % 3 == 0 ? 15 : 0);
        assert_int_equal(cf_kv_delete(kv, k, n), 0);
    }
    assert_int_equal(cf_kv_count(kv), N / 2);
    for (uint64_t i = 0; i < N; i++) {
        size_t n = make_key(k, i, i % 3 == 0 ? 15 : 0);
        uint64_t *v = cf_kv_get(kv, k, n, NULL);
        if (i % 2) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_true(*v == i);
        }
    }
    /* expiry through the heap after all the moves: ascending, complete */
    struct evict_log e = { 0, 0, true };
    size_t expired = cf_kv_expire(kv, (int64_t)N / 2 - 1, on_evict, &e);
    assert_int_equal(expired, e.n);
    assert_true(expired > N / 8);
    assert_true(e.order_ok);
    assert_int_equal(cf_kv_count(kv) + e.n, N / 2);
    assert_true(cf_kv_next_expiry(kv) >= (int64_t)N / 2);
    cf_kv_free(kv);
}

/* Every key 0..n-1 not in `deleted` is present with value i and expiry
 * exp_of(i); every deleted one is absent. */
static void assert_contents(cf_kv *kv, uint64_t n, const bool *deleted)
{
    char k[64];
    for (uint64_t i = 0; i < n; i++) {
        size_t len = make_key(k, i, i % 3 == 0 ? 15 : 0);
        int64_t exp;
        uint64_t *v = cf_kv_get(kv, k, len, &exp);
        if (deleted && deleted[i]) {
            assert_null(v);
        } else {
            assert_non_null(v);
            assert_true(*v == i);
            assert_true(exp == (int64_t)(i * 7919 % 100003));
        }
    }
}

/* Growth is incremental (issue 15: a doubling under the sequencer lock was
 * a multi-millisecond pause): no put moves more than CF_KV_MIGRATE_STEP
 * entries, and while a doubling is under way every operation sees both
 * halves: keys still in the old table and keys already moved or inserted
 * into the new one are found, deleted, re-timed and expired, and a save
 * made mid-way loads into the same store. */
/* When the next table is asked for: a small one (up to CF_KV_SPARE_EARLY
 * bytes) whenever no doubling is under way, a large one from half of cap
 * (2/3 of the doubling's trigger at 3/4) on, not before. */
static void next_table_window(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(0, 0);
    char k[64];
    uint32_t cap = 0;
    size_t small_asks = 0;
    for (uint64_t n = 0;; n++) {
        size_t bytes = cf_kv_next_table(kv, &cap);
        if (cf_kv_migrating(kv))
            assert_int_equal(bytes, 0);
        else if (bytes > CF_KV_SPARE_EARLY) {
            /* the first large ask (asked before every put, so not one put
             * late or early): exactly at half of the current cap */
            assert_int_equal((uint64_t)cf_kv_count(kv) * 4, (uint64_t)cap);
            break;
        } else if (bytes) {
            small_asks++;
        }
        size_t len = make_key(k, n, 0);
        assert_int_equal(cf_kv_put(kv, k, len, 0, NULL, NULL, NULL), 1);
    }
    assert_true(small_asks > 1000);
    cf_kv_free(kv);
}

/* The next doubling's table handed in ahead of time (cf_kv_next_table,
 * cf_kv_offer_table): asked for only when a doubling is near, taken by that
 * doubling instead of a fresh calloc, refused (freed) when it no longer
 * fits, and the store's contents stay whole across it. */
static void spare_table_is_used_by_the_next_doubling(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    char k[64];
    uint64_t n = 0;
    uint32_t cap = 0;
    size_t bytes = 0;
    /* Fill until a doubling is near (asked before every put); the
     * expiries are assert_contents' own. */
    for (;; n++) {
        /* A table large enough that its doubling takes many puts. */
        bytes = cf_kv_next_table(kv, &cap);
        if (bytes && cap >= 1024)
            break;
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        if (cf_kv_migrating(kv)) {
            /* Never asked during a doubling: finish it (puts). */
            assert_int_equal(cf_kv_next_table(kv, &cap), 0);
        }
    }
    assert_false(cf_kv_migrating(kv));
    uint32_t grows = cf_kv_grows(kv);
    /* A small next table is asked for at any count (the first ask at a
     * new size comes right after a doubling ended). */
    assert_true(bytes <= CF_KV_SPARE_EARLY);
    assert_int_equal(bytes % cap, 0);

    /* A table of another size is refused and freed (ASan: no leak). */
    assert_false(cf_kv_offer_table(kv, cf_kv_table_alloc(bytes * 2), cap * 2));
    assert_int_equal(cf_kv_next_table(kv, &cap), bytes);
    size_t before = cf_kv_memory(kv);
    void *spare = cf_kv_table_alloc(bytes);
    assert_non_null(spare);
    assert_true(cf_kv_offer_table(kv, spare, cap));
    assert_int_equal(cf_kv_memory(kv), before + bytes);
    uint32_t again = 0;
    assert_int_equal(cf_kv_next_table(kv, &again), 0);  /* held now */

    /* The doubling takes it. */
    while (cf_kv_grows(kv) == grows) {
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        n++;
    }
    void *table = NULL;
    size_t tbytes = 0;
    assert_true(cf_kv_growing_table(kv, &table, &tbytes));
    assert_ptr_equal(table, spare);
    assert_int_equal(tbytes, bytes);
    /* An offer that a doubling overtook is freed, not kept. */
    size_t mem = cf_kv_memory(kv);
    cf_kv_offer_table(kv, calloc(1, bytes), cap);
    assert_int_equal(cf_kv_memory(kv), mem);
    assert_int_equal(cf_kv_next_table(kv, &again), 0);
    assert_contents(kv, n, NULL);
    while (cf_kv_migrating(kv)) {
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        n++;
    }
    assert_false(cf_kv_growing_table(kv, &table, &tbytes));
    assert_contents(kv, n, NULL);
    cf_kv_free(kv);
}

static void growth_is_incremental(void **state)
{
    (void)state;
    const uint64_t N = 60000;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    bool *deleted = calloc(N, sizeof *deleted);
    char k[64];
    uint32_t checked_midway = 0, grows = 0;
    uint64_t n = 0;
    for (; n < N; n++) {
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        assert_true(cf_kv_max_moved(kv) <= CF_KV_MIGRATE_STEP);
        /* Full checks at a few points inside each doubling (not every put:
         * that would be quadratic). */
        if (cf_kv_migrating(kv) && cf_kv_grows(kv) != grows) {
            grows = cf_kv_grows(kv);
            assert_contents(kv, n + 1, NULL);
            checked_midway++;
        }
    }
    assert_true(checked_midway >= 10);
    assert_true(cf_kv_max_moved(kv) > 0);

    /* Grow once more and stop half-way through the migration. */
    while (!cf_kv_migrating(kv)) {
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        n++;
    }
    uint64_t start = n;
    while (n < start + 2000) {
        size_t len = make_key(k, n, n % 3 == 0 ? 15 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, len, (int64_t)(n * 7919 % 100003), NULL, NULL, &v), 1);
        memcpy(v, &n, 8);
        n++;
    }
    assert_true(cf_kv_migrating(kv)); /* the old table still holds most keys */
    deleted = realloc(deleted, n * sizeof *deleted);
    memset(deleted, 0, n * sizeof *deleted);
    assert_contents(kv, n, deleted);

    /* Deletes in both halves (old keys, and keys put after the doubling). */
    for (uint64_t i = 0; i < n; i += 7) {
        size_t len = make_key(k, i, i % 3 == 0 ? 15 : 0);
        assert_int_equal(cf_kv_delete(kv, k, len), 0);
        assert_int_equal(cf_kv_delete(kv, k, len), -ENOENT);
        deleted[i] = true;
    }
    assert_true(cf_kv_migrating(kv));
    assert_contents(kv, n, deleted);

    /* A save mid-way loads into a store with the same contents. */
    cf_buf b = { 0 };
    assert_int_equal(cf_kv_save(kv, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_kv *copy = cf_kv_load(sizeof(uint64_t), 0, &r);
    assert_non_null(copy);
    assert_int_equal(cf_kv_count(copy), cf_kv_count(kv));
    assert_contents(copy, n, deleted);
    cf_kv_free(copy);
    cf_buf_free(&b);

    /* Expiry through the heap sees entries of both tables, in order. */
    struct evict_log e = { 0, 0, true };
    size_t live = cf_kv_count(kv);
    size_t expired = cf_kv_expire(kv, 50000, on_evict, &e);
    assert_true(e.order_ok);
    assert_true(expired > 0);
    assert_int_equal(cf_kv_count(kv), live - expired);
    assert_true(cf_kv_next_expiry(kv) > 50000);
    for (uint64_t i = 0; i < n; i++)
        if ((int64_t)(i * 7919 % 100003) <= 50000)
            deleted[i] = true;

    /* Finishing the migration with more puts loses nothing. */
    while (cf_kv_migrating(kv)) {
        size_t len = make_key(k, n, 0);
        assert_int_equal(cf_kv_put(kv, k, len, INT64_MAX, NULL, NULL, NULL), 1);
        n++;
    }
    assert_true(cf_kv_max_moved(kv) <= CF_KV_MIGRATE_STEP);
    assert_contents(kv, start + 2000, deleted);
    free(deleted);
    cf_kv_free(kv);
}

/* A brute-force model: arrays of (key id, expiry, value). */
#define MODEL_KEYS 300
struct model {
    bool present[MODEL_KEYS];
    int64_t exp[MODEL_KEYS];
    uint64_t val[MODEL_KEYS];
};

/* The model's arrays as the steps below see them (either test's model). */
typedef struct kv_model {
    bool *present;
    int64_t *exp;
    uint64_t *val;
} kv_model;

/* One step of a trace on both the table and the model, asserting that the
 * table answers as the model says. */
static void model_put(cf_kv *kv, const kv_model *m, const char *k, size_t n, uint64_t id, int64_t exp)
{
    void *v;
    int r = cf_kv_put(kv, k, n, exp, NULL, NULL, &v);
    assert_int_equal(r, m->present[id] ? 0 : 1);
    if (r == 1) {
        m->present[id] = true;
        m->exp[id] = exp;
        m->val[id] = rnd();
        memcpy(v, &m->val[id], 8);
    }
}

static void model_delete(cf_kv *kv, const kv_model *m, const char *k, size_t n, uint64_t id)
{
    assert_int_equal(cf_kv_delete(kv, k, n), m->present[id] ? 0 : -ENOENT);
    m->present[id] = false;
}

static void model_set_expiry(cf_kv *kv, const kv_model *m, const char *k, size_t n, uint64_t id, int64_t exp)
{
    assert_int_equal(cf_kv_set_expiry(kv, k, n, exp), m->present[id] ? 0 : -ENOENT);
    if (m->present[id])
        m->exp[id] = exp;
}

/* Expires the model's ids below nkeys that are due at now, and the table
 * must expire exactly as many. */
static void model_expire(cf_kv *kv, const kv_model *m, uint64_t nkeys, int64_t now)
{
    size_t want = 0;
    for (uint64_t i = 0; i < nkeys; i++)
        if (m->present[i] && m->exp[i] <= now) {
            m->present[i] = false;
            want++;
        }
    assert_int_equal(cf_kv_expire(kv, now, NULL, NULL), want);
}

/* Every key id below n answers as the model says, and the table counts
 * exactly the present ones. Every long_every-th id is padded by pad bytes
 * (make_key), as the trace that filled the table made it. */
static void assert_kv_matches(cf_kv *kv, const kv_model *m, uint64_t n, uint64_t long_every, size_t pad)
{
    char k[64];
    size_t cnt = 0;
    for (uint64_t i = 0; i < n; i++) {
        size_t kn = make_key(k, i, i % long_every == 0 ? pad : 0);
        int64_t exp;
        uint64_t *v = cf_kv_get(kv, k, kn, &exp);
        assert_true((v != NULL) == m->present[i]);
        if (v) {
            cnt++;
            assert_true(*v == m->val[i]);
            assert_true(exp == m->exp[i]);
        }
    }
    assert_int_equal(cf_kv_count(kv), cnt);
}

static void randomized_against_model(void **state)
{
    (void)state;
    rng_state = 0x1234567ULL;
    struct model m;
    memset(&m, 0, sizeof m);
    kv_model mm = {m.present, m.exp, m.val};
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    char k[64];
    int64_t now = 0;
    for (int step = 0; step < 50000; step++) {
        uint64_t id = rnd() % MODEL_KEYS;
        size_t n = make_key(k, id, id % 4 == 0 ? 14 : 0);
        switch (rnd() % 5) {
        case 0:
        case 1:
            model_put(kv, &mm, k, n, id, now + (int64_t)(rnd() % 100));
            break;
        case 2:
            model_delete(kv, &mm, k, n, id);
            break;
        case 3:
            model_set_expiry(kv, &mm, k, n, id, now + (int64_t)(rnd() % 100));
            break;
        default:
            now += (int64_t)(rnd() % 5);
            model_expire(kv, &mm, MODEL_KEYS, now);
            break;
        }
        if (step % 997 == 0)
            assert_kv_matches(kv, &mm, MODEL_KEYS, 4, 14);
    }
    cf_kv_free(kv);
}

static void save_load_roundtrip(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 50);
    char k[64];
    for (uint64_t i = 0; i < 80; i++) {
        size_t n = make_key(k, i, i % 2 ? 16 : 0);
        void *v;
        assert_int_equal(cf_kv_put(kv, k, n, (int64_t)(i % 10), NULL, NULL, &v), 1);
        memcpy(v, &i, 8);
    }
    assert_int_equal(cf_kv_evictions(kv), 30);
    cf_buf b = {0};
    assert_int_equal(cf_kv_save(kv, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_kv *c = cf_kv_load(sizeof(uint64_t), 50, &r);
    assert_non_null(c);
    assert_int_equal(r.left, 0);
    assert_int_equal(cf_kv_count(c), 50);
    assert_int_equal(cf_kv_evictions(c), 30);
    for (uint64_t i = 0; i < 80; i++) {
        size_t n = make_key(k, i, i % 2 ? 16 : 0);
        int64_t e1 = 0, e2 = 0;
        uint64_t *v1 = cf_kv_get(kv, k, n, &e1), *v2 = cf_kv_get(c, k, n, &e2);
        assert_true((v1 == NULL) == (v2 == NULL));
        if (v1) {
            assert_true(*v1 == *v2);
            assert_true(e1 == e2);
        }
    }
    /* identical future: the same expiry order */
    struct seen s1 = {0}, s2 = {0};
    cf_kv_expire(kv, 5, record, &s1);
    cf_kv_expire(c, 5, record, &s2);
    assert_int_equal(s1.n, s2.n);
    for (size_t i = 0; i < s1.n && i < 64; i++)
        assert_string_equal(s1.key[i], s2.key[i]);
    /* wrong value size, truncation and garbage are rejected */
    cf_reader_init(&r, b.data, b.len);
    assert_null(cf_kv_load(4, 50, &r));
    for (size_t cut = 0; cut < b.len; cut += 7) {
        cf_reader_init(&r, b.data, cut);
        assert_null(cf_kv_load(sizeof(uint64_t), 50, &r));
    }
    cf_buf_free(&b);
    cf_kv_free(kv);
    cf_kv_free(c);
}

/* Reports the bytes of overhead per key beyond key + value (table slack,
 * heap, arena) at a few sizes, and asserts it stays under 100 on average
 * over growth. */
static void overhead_per_key(void **state)
{
    (void)state;
    char k[64];
    const size_t vsizes[2] = { 0, 8 };
    const size_t pads[2] = { 0, 30 };
    for (int vi = 0; vi < 2; vi++) {
        for (int pi = 0; pi < 2; pi++) {
            cf_kv *kv = cf_kv_new(vsizes[vi], 0);
            cf_kv_hand_out_retired(kv); /* as the dedup table's store */
            double worst = 0, sum = 0;
            int samples = 0;
            size_t keybytes = 0;
            for (uint64_t i = 0; i < 200000; i++) {
                size_t n = make_key(k, i, pads[pi]);
                keybytes += n;
                assert_int_equal(cf_kv_put(kv, k, n, 0, NULL, NULL, NULL), 1);
                /* The old table of a finished doubling is the caller's to
                 * free (the server's ticker does within 100 ms). */
                void *old;
                size_t old_bytes;
                if (cf_kv_take_retired(kv, &old, &old_bytes))
                    cf_kv_table_free(old, old_bytes);
                if ((i + 1) % 10000 == 0) {
                    size_t cnt = i + 1;
                    double ov = ((double)cf_kv_memory(kv) - (double)keybytes -
                                 (double)(cnt * vsizes[vi])) / (double)cnt;
                    if (ov > worst)
                        worst = ov;
                    sum += ov;
                    samples++;
                }
            }
            print_message("kv overhead: value %zu B, key ~%zu B: mean %.1f, worst %.1f bytes/key\n",
                          vsizes[vi], keybytes / 200000, sum / samples, worst);
            assert_true(sum / samples < 100.0);
            cf_kv_free(kv);
        }
    }
}

/* put_hashed with cf_kv_hash is put; a prefetch changes nothing, even of a
 * slot that is then moved by growth. */
static void hashed_put_and_prefetch(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(0, 0);
    char k[64];
    for (uint64_t i = 0; i < 5000; i++) {
        size_t n = make_key(k, i % 3000, i % 2 ? 30 : 0);
        uint64_t h = cf_kv_hash(kv, k, n);
        cf_kv_prefetch(kv, h);
        int r = cf_kv_put_hashed(kv, k, n, h, (int64_t)i, NULL, NULL, NULL);
        assert_int_equal(r, i >= 3000 ? 0 : 1);
    }
    assert_int_equal(cf_kv_count(kv), 3000);
    for (uint64_t i = 0; i < 3000; i++) {
        size_t n = make_key(k, i, (i % 2) ? 30 : 0);
        int64_t exp = -1;
        assert_non_null(cf_kv_get(kv, k, n, &exp));
        assert_int_equal(exp, (int64_t)i);
        assert_int_equal(cf_kv_put(kv, k, n, 0, NULL, NULL, NULL), 0);
    }
    assert_int_equal(cf_kv_put_hashed(kv, k, CF_KV_MAX_KEY + 1, 0, 0, NULL, NULL, NULL), -EINVAL);
    cf_kv_free(kv);
}

/* The prefetch loads the slot where the probe for the key begins, in the
 * current table, whatever the number of doublings: it once took the bare
 * slot index for a heap reference, so after an odd number of doublings it
 * pointed into the old table (NULL once the doubling was done) and the
 * sequencer's look-ahead loaded nothing (issue 15). A key left alone in a
 * grown table sits in its home slot (backward-shift deletion), so its value
 * is the slot's 32-byte header past the prefetched address. */
static void prefetch_targets_home_slot(void **state)
{
    (void)state;
    bool seen[2] = {false, false};
    char k[64];
    for (uint64_t n = 8; n <= 4096; n *= 2) {
        cf_kv *kv = cf_kv_new(8, 0);
        uint64_t put = 0;
        while (put < n || cf_kv_migrating(kv)) {
            size_t len = make_key(k, put, put % 2 ? 30 : 0);
            assert_int_equal(cf_kv_put(kv, k, len, (int64_t)put, NULL, NULL, NULL), 1);
            put++;
        }
        for (uint64_t i = 1; i < put; i++) {
            size_t len = make_key(k, i, i % 2 ? 30 : 0);
            assert_int_equal(cf_kv_delete(kv, k, len), 0);
        }
        size_t len = make_key(k, 0, 0);
        const uint8_t *v = cf_kv_get(kv, k, len, NULL);
        assert_non_null(v);
        const uint8_t *a = cf_kv_prefetch_addr(kv, cf_kv_hash(kv, k, len));
        assert_ptr_equal(a + 32, v);
        seen[cf_kv_grows(kv) % 2] = true;
        cf_kv_free(kv);
    }
    assert_true(seen[0] && seen[1]);
}

/* Loading is linear: the table is sized once for the saved count, so a load
 * of N keys grows nothing and examines about one slot per key. The saved
 * table is a large one that lost most of its keys (capacity kept), saved in
 * its slot order: loading that into a small growing table, as cf_kv_load
 * once did, lays each pass over the small table onto the last one's
 * clusters (quadratic probing work). */
static void load_is_linear(void **state)
{
    (void)state;
    static const uint8_t key[16] = "0123456789abcdef";
    for (int keyed = 0; keyed < 2; keyed++) {
        cf_kv *kv = keyed ? cf_kv_new_keyed(0, 0, key) : cf_kv_new(0, 0);
        char k[64];
        const uint64_t all = 400000, keep = 150000;
        for (uint64_t i = 0; i < all; i++) {
            size_t n = make_key(k, i, i % 4 == 0 ? 20 : 0);
            assert_int_equal(cf_kv_put(kv, k, n, (int64_t)(i % 1000), NULL, NULL, NULL), 1);
        }
        for (uint64_t i = keep; i < all; i++) {
            size_t n = make_key(k, i, i % 4 == 0 ? 20 : 0);
            assert_int_equal(cf_kv_delete(kv, k, n), 0);
        }
        cf_buf b = {0};
        assert_int_equal(cf_kv_save(kv, &b), 0);
        cf_reader r;
        cf_reader_init(&r, b.data, b.len);
        cf_kv *c = keyed ? cf_kv_load_keyed(0, 0, key, &r) : cf_kv_load(0, 0, &r);
        assert_non_null(c);
        assert_int_equal(cf_kv_count(c), keep);
        assert_int_equal(cf_kv_grows(c), 0);
        uint64_t probes = cf_kv_load_probes(c);
        printf("# load of %llu keys (%s): %llu probes\n", (unsigned long long)keep,
               keyed ? "keyed" : "unkeyed", (unsigned long long)probes);
        assert_true(probes <= 3 * keep);
        for (uint64_t i = 0; i < all; i += 7) {
            size_t n = make_key(k, i, i % 4 == 0 ? 20 : 0);
            assert_true((cf_kv_get(c, k, n, NULL) != NULL) == (i < keep));
        }
        /* The heap built in bulk expires in the same order as the original. */
        struct seen s1 = {0}, s2 = {0};
        cf_kv_expire(kv, 3, record, &s1);
        cf_kv_expire(c, 3, record, &s2);
        assert_int_equal(s1.n, s2.n);
        for (size_t i = 0; i < s1.n && i < 64; i++)
            assert_string_equal(s1.key[i], s2.key[i]);
        cf_buf_free(&b);
        cf_kv_free(kv);
        cf_kv_free(c);
    }
}

/* A keyed store hashes with SipHash-1-3 under its key: another key gives
 * other hashes (so other collisions), and the store works the same. */
static void keyed_store(void **state)
{
    (void)state;
    static const uint8_t k1[16] = "key-number-one!!", k2[16] = "key-number-two!!";
    cf_kv *a = cf_kv_new_keyed(8, 0, k1), *b = cf_kv_new_keyed(8, 0, k2), *u = cf_kv_new(8, 0);
    int same_ab = 0, same_au = 0;
    char k[64];
    for (uint64_t i = 0; i < 1000; i++) {
        size_t n = make_key(k, i, i % 2 ? 20 : 0);
        same_ab += cf_kv_hash(a, k, n) == cf_kv_hash(b, k, n);
        same_au += cf_kv_hash(a, k, n) == cf_kv_hash(u, k, n);
        assert_int_equal(cf_kv_put(a, k, n, (int64_t)i, NULL, NULL, NULL), 1);
    }
    assert_int_equal(same_ab, 0);
    assert_int_equal(same_au, 0);
    for (uint64_t i = 0; i < 1000; i += 2) {
        size_t n = make_key(k, i, i % 2 ? 20 : 0);
        assert_int_equal(cf_kv_delete(a, k, n), 0);
    }
    for (uint64_t i = 0; i < 1000; i++) {
        size_t n = make_key(k, i, i % 2 ? 20 : 0);
        int64_t exp = -1;
        assert_true((cf_kv_get(a, k, n, &exp) != NULL) == (i % 2 == 1));
        if (i % 2)
            assert_int_equal(exp, (int64_t)i);
    }
    cf_kv_free(a);
    cf_kv_free(b);
    cf_kv_free(u);
}

typedef struct expired_log {
    char keys[600][40];
    size_t lens[600];
    int64_t exps[600];
    size_t n;
} expired_log;

static void log_expired(void *ctx, const void *key, size_t key_len, void *value, int64_t expiry)
{
    (void)value;
    expired_log *l = ctx;
    assert_true(l->n < 600 && key_len <= sizeof l->keys[0]);
    memcpy(l->keys[l->n], key, key_len);
    l->lens[l->n] = key_len;
    l->exps[l->n++] = expiry;
}

/* A store bulk-built from a set of entries (cf_kv_bulk_*) holds the same
 * keys and expiries as one made by puts, expires them in the same order,
 * evicts alike, and keeps its eviction counter and bound; adding a key twice
 * or more keys than announced is refused. */
static void bulk_build_equals_puts(void **state)
{
    (void)state;
    rng_state = 77;
    cf_kv *a = cf_kv_new(0, 500);
    cf_kv *b = cf_kv_new(0, 500);
    char key[40];
    /* b has history to forget: entries, a doubling, evictions. */
    for (uint64_t i = 0; i < 700; i++)
        assert_int_equal(cf_kv_put(b, key, make_key(key, 100000 + i, i % 30), (int64_t)i,
                                   NULL, NULL, NULL), 1);
    uint64_t ev = cf_kv_evictions(b);
    assert_int_equal(ev, 200);
    assert_int_equal(cf_kv_bulk_begin(b, 400), 0);
    assert_int_equal(cf_kv_count(b), 0);
    for (uint64_t i = 0; i < 400; i++) {
        size_t len = make_key(key, i, i % 30);
        int64_t exp = (int64_t)(rnd() % 100);    /* ties: order by key bytes */
        assert_int_equal(cf_kv_put(a, key, len, exp, NULL, NULL, NULL), 1);
        assert_int_equal(cf_kv_bulk_add(b, key, len, exp), 1);
    }
    assert_int_equal(cf_kv_bulk_add(b, key, make_key(key, 0, 0), 5), -EINVAL); /* present */
    assert_int_equal(cf_kv_bulk_add(b, key, make_key(key, 999, 0), 5), -EINVAL); /* > n */
    cf_kv_bulk_end(b);
    assert_int_equal(cf_kv_count(b), 400);
    assert_int_equal(cf_kv_evictions(b), ev);
    assert_int_equal(cf_kv_max_keys(b), 500);
    assert_int_equal(cf_kv_next_expiry(a), cf_kv_next_expiry(b));
    /* Fill both to the bound and past it: the same ids are evicted. */
    for (uint64_t i = 400; i < 650; i++) {
        size_t len = make_key(key, i, 3);
        assert_int_equal(cf_kv_put(a, key, len, 50, NULL, NULL, NULL), 1);
        assert_int_equal(cf_kv_put(b, key, len, 50, NULL, NULL, NULL), 1);
    }
    assert_int_equal(cf_kv_evictions(a) + ev, cf_kv_evictions(b));
    static expired_log la, lb;
    la.n = lb.n = 0;
    assert_int_equal(cf_kv_expire(a, 1000, log_expired, &la), 500);
    assert_int_equal(cf_kv_expire(b, 1000, log_expired, &lb), 500);
    for (size_t i = 0; i < la.n; i++) {
        assert_int_equal(la.lens[i], lb.lens[i]);
        assert_memory_equal(la.keys[i], lb.keys[i], la.lens[i]);
        assert_int_equal(la.exps[i], lb.exps[i]);
    }
    cf_kv_free(a);
    cf_kv_free(b);
}

/* ---- incremental save ---------------------------------------------------- */

#define ISV_KEYS 3000u

/* The model: per key index, whether it is present, its expiry and value. */
struct isv_model {
    bool present[ISV_KEYS];
    int64_t expiry[ISV_KEYS];
    uint64_t value[ISV_KEYS];
};

static size_t isv_key(char *buf, uint32_t i)
{
    /* A third of the keys live in the arena (longer than 17 bytes). */
    return make_key(buf, i, i % 3 == 0 ? 20 : 0);
}

/* Parses a save's bytes and checks they hold exactly the model's entries,
 * each once, with the model's expiry and value. */
static void assert_save_equals(const cf_buf *b, const struct isv_model *m, uint64_t evictions)
{
    cf_reader r;
    cf_reader_init(&r, b->data, b->len);
    uint32_t magic, version, vsize, count;
    uint64_t ev;
    assert_true(cf_get_u32(&r, &magic) && cf_get_u32(&r, &version) && cf_get_u32(&r, &vsize));
    assert_true(cf_get_u64(&r, &ev) && cf_get_u32(&r, &count));
    assert_int_equal(vsize, sizeof(uint64_t));
    assert_int_equal(ev, evictions);
    uint32_t want = 0;
    for (uint32_t i = 0; i < ISV_KEYS; i++)
        want += m->present[i];
    assert_int_equal(count, want);
    static bool seen[ISV_KEYS];
    memset(seen, 0, sizeof seen);
    for (uint32_t k = 0; k < count; k++) {
        const char *kb;
        size_t kl;
        int64_t exp;
        uint64_t v;
        assert_true(cf_get_str(&r, &kb, &kl));
        assert_true(cf_get_i64(&r, &exp));
        assert_true(cf_get(&r, &v, sizeof v));
        /* "k<i>" then optional filler: the index is the digits. */
        uint32_t i = 0;
        for (size_t j = 1; j < kl && kb[j] >= '0' && kb[j] <= '9'; j++)
            i = i * 10 + (uint32_t)(kb[j] - '0');
        assert_true(i < ISV_KEYS);
        char k2[64];
        assert_int_equal(isv_key(k2, i), kl);
        assert_memory_equal(k2, kb, kl);
        assert_false(seen[i]); /* exactly once */
        seen[i] = true;
        assert_true(m->present[i]);
        assert_true(exp == m->expiry[i]);
        assert_true(v == m->value[i]);
    }
    assert_int_equal(r.left, 0);
    /* And the store's own loader takes it. */
    cf_reader_init(&r, b->data, b->len);
    cf_kv *c = cf_kv_load(sizeof(uint64_t), 0, &r);
    assert_non_null(c);
    assert_int_equal(cf_kv_count(c), want);
    cf_kv_free(c);
}

static void isv_put(cf_kv *kv, struct isv_model *m, uint32_t i, int64_t exp, uint64_t val)
{
    char k[64];
    size_t n = isv_key(k, i);
    void *v;
    int r = cf_kv_put(kv, k, n, exp, NULL, NULL, &v);
    assert_int_equal(r, m->present[i] ? 0 : 1);
    if (r == 1)
        m->expiry[i] = exp;
    memcpy(v, &val, sizeof val); /* a change in place for an existing key */
    m->value[i] = val;
    m->present[i] = true;
}

/* The cursor rules, one by one: a save begun at a cut writes every entry of
 * the cut exactly once, with its value at the cut, while entries are
 * inserted after the cut (not written), removed (delete, expiry), changed
 * (value written through put's pointer, set_expiry) and moved (backward
 * shift after deletes, and a doubling of the table with its migration). */
static void incremental_save_cursor_rules(void **state)
{
    (void)state;
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    static struct isv_model m, cut;
    memset(&m, 0, sizeof m);
    char k[64];
    /* 700 keys: the table (1024 slots) doubles at the 769th. */
    for (uint32_t i = 0; i < 700; i++)
        isv_put(kv, &m, i, 1000 + i, i);
    assert_false(cf_kv_migrating(kv));
    uint32_t grows = cf_kv_grows(kv);
    cut = m;
    cf_buf b = {0};
    /* Explicit steps only (put_step 0), so the doubling below comes
     * while most of the cut is unsaved. */
    assert_int_equal(cf_kv_save_begin(kv, &b, 0), 0);
    assert_int_equal(cf_kv_save_begin(kv, &b, 0), -EBUSY);
    assert_true(cf_kv_saving(kv));
    /* A few slots only: most of the table is still ahead of the cursor. */
    assert_int_equal(cf_kv_save_step(kv, 5), 0);
    /* Changed in place and re-timed. */
    for (uint32_t i = 0; i < 700; i += 7)
        isv_put(kv, &m, i, 0, 100000 + i);
    for (uint32_t i = 3; i < 700; i += 11) {
        size_t n = isv_key(k, i);
        assert_int_equal(cf_kv_set_expiry(kv, k, n, 5000 + i), 0);
        m.expiry[i] = 5000 + i;
    }
    /* Deleted (their clusters shift back, over the cursor too). */
    for (uint32_t i = 1; i < 700; i += 5) {
        size_t n = isv_key(k, i);
        assert_int_equal(cf_kv_delete(kv, k, n), 0);
        m.present[i] = false;
    }
    /* Expired: keys 2..49 have expiry 1002..1049 unless changed above. */
    size_t expired = cf_kv_expire(kv, 1049, NULL, NULL);
    size_t want_expired = 0;
    for (uint32_t i = 0; i < ISV_KEYS; i++)
        if (m.present[i] && m.expiry[i] <= 1049) {
            m.present[i] = false;
            want_expired++;
        }
    assert_int_equal(expired, want_expired);
    assert_true(expired > 0);
    /* Inserted after the cut, enough to double the table mid-save. */
    bool migrated_while_saving = false;
    for (uint32_t i = 700; i < 2000; i++) {
        isv_put(kv, &m, i, 3000 + i, i);
        migrated_while_saving |= cf_kv_migrating(kv) && cf_kv_saving(kv);
    }
    assert_true(cf_kv_grows(kv) > grows);
    assert_true(migrated_while_saving);
    int rc;
    while ((rc = cf_kv_save_step(kv, 3)) == 0)
        ;
    assert_int_equal(rc, 1);
    assert_false(cf_kv_saving(kv));
    assert_save_equals(&b, &cut, 0);
    /* The next save starts a new epoch: it holds the state now. */
    cf_buf b2 = {0};
    assert_int_equal(cf_kv_save_begin(kv, &b2, 0), 0);
    assert_int_equal(cf_kv_save_finish(kv), 1);
    assert_save_equals(&b2, &m, 0);
    cf_buf_free(&b);
    cf_buf_free(&b2);
    cf_kv_free(kv);
}

/* A bulk rebuild after an odd number of saves (the "saved" bit's meaning
 * flipped) gives entries that the next incremental save writes, every one
 * of them; and a rebuild cannot start while a save refers to the slots. */
static void bulk_rebuild_after_saves_then_incremental_save(void **state)
{
    (void)state;
    static struct isv_model m;
    memset(&m, 0, sizeof m);
    cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
    for (uint32_t i = 0; i < 10; i++)
        isv_put(kv, &m, i, 100 + i, i);
    cf_buf b1 = {0};
    assert_int_equal(cf_kv_save_begin(kv, &b1, 0), 0);
    assert_int_equal(cf_kv_bulk_begin(kv, 40), -EBUSY);
    assert_int_equal(cf_kv_save_finish(kv), 1);
    assert_save_equals(&b1, &m, 0);
    memset(&m, 0, sizeof m);
    assert_int_equal(cf_kv_bulk_begin(kv, 40), 0);
    char k[64];
    for (uint32_t i = 100; i < 140; i++) {
        assert_int_equal(cf_kv_bulk_add(kv, k, isv_key(k, i), 500 + i), 1);
        m.present[i] = true;
        m.expiry[i] = 500 + i;
    }
    cf_kv_bulk_end(kv);
    cf_buf b2 = {0};
    assert_int_equal(cf_kv_save_begin(kv, &b2, 0), 0);
    int rc;
    while ((rc = cf_kv_save_step(kv, 7)) == 0)
        ;
    assert_int_equal(rc, 1);
    assert_save_equals(&b2, &m, 0);
    cf_buf_free(&b1);
    cf_buf_free(&b2);
    cf_kv_free(kv);
}

/* Random puts, changes, deletes, expiries and steps against a model, with
 * saves begun at random cuts (some while a doubling is under way), each
 * compared with the model as it was at its cut. */
static void incremental_save_randomized(void **state)
{
    (void)state;
    static struct isv_model m, cut;
    for (uint64_t seed = 1; seed <= 12; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ULL;
        memset(&m, 0, sizeof m);
        cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
        cf_buf b = {0};
        bool saving = false, began_migrating = false;
        int saves = 0;
        int64_t now = 0;
        char k[64];
        for (int op = 0; op < 20000; op++) {
            uint64_t r = rnd();
            uint32_t i = (uint32_t)((r >> 8) % ISV_KEYS);
            switch (r % 16) {
            case 0: case 1: case 2: case 3: case 4: case 5: case 6:
                isv_put(kv, &m, i, now + 1 + (int64_t)((r >> 32) % 5000), r >> 16);
                break;
            case 7: case 8: {
                size_t n = isv_key(k, i);
                assert_int_equal(cf_kv_delete(kv, k, n), m.present[i] ? 0 : -ENOENT);
                m.present[i] = false;
                break;
            }
            case 9: {
                size_t n = isv_key(k, i);
                int64_t e = now + 1 + (int64_t)((r >> 32) % 5000);
                assert_int_equal(cf_kv_set_expiry(kv, k, n, e), m.present[i] ? 0 : -ENOENT);
                if (m.present[i])
                    m.expiry[i] = e;
                break;
            }
            case 10:
                now += 20;
                cf_kv_expire(kv, now, NULL, NULL);
                for (uint32_t j = 0; j < ISV_KEYS; j++)
                    if (m.present[j] && m.expiry[j] <= now)
                        m.present[j] = false;
                break;
            case 11: case 12:
                if (saving) {
                    int rc = cf_kv_save_step(kv, 1 + (r >> 40) % 40);
                    assert_true(rc == 0 || rc == 1);
                }
                break;
            default:
                if (!saving && (r >> 20) % 8 == 0) {
                    cut = m;
                    cf_buf_reset(&b);
                    began_migrating |= cf_kv_migrating(kv);
                    assert_int_equal(cf_kv_save_begin(kv, &b, (uint32_t)(r >> 50) % 3), 0);
                    saving = true;
                }
                break;
            }
            if (saving && !cf_kv_saving(kv)) {
                assert_int_equal(cf_kv_save_step(kv, 1), 1);
                assert_save_equals(&b, &cut, cf_kv_evictions(kv));
                saving = false;
                saves++;
            }
        }
        if (saving) {
            assert_int_equal(cf_kv_save_finish(kv), 1);
            assert_save_equals(&b, &cut, 0);
            saves++;
        }
        assert_true(saves > 3);
        (void)began_migrating;
        cf_buf_free(&b);
        cf_kv_free(kv);
    }
}

/* Tables of 4 MiB and more come from the allocator the process installed
 * (the server's and lib_bench's map huge pages), smaller ones and all of
 * them without one from calloc; each goes back the way it came, with its
 * byte count, and a store on the installed memory works as on calloc's. */
static size_t hook_allocs, hook_frees, hook_live_bytes;

static void *hook_alloc(size_t bytes)
{
    hook_allocs++;
    hook_live_bytes += bytes;
    return calloc(1, bytes);
}

static void hook_free(void *p, size_t bytes)
{
    hook_frees++;
    assert_true(hook_live_bytes >= bytes);
    hook_live_bytes -= bytes;
    free(p);
}

static void table_mem_hook(void **state)
{
    (void)state;
    const size_t big = (size_t)4 << 20;
    unsigned char *p = cf_kv_table_alloc(big - 1), *q;
    assert_int_equal(hook_allocs, 0);
    cf_kv_table_free(p, big - 1);
    cf_kv_set_table_mem(hook_alloc, hook_free);
    p = cf_kv_table_alloc(big - 1); /* below the threshold: calloc */
    q = cf_kv_table_alloc(big);
    assert_non_null(p);
    assert_non_null(q);
    assert_int_equal(hook_allocs, 1);
    assert_int_equal(p[big - 2] | q[0] | q[big - 1], 0);
    cf_kv_table_free(p, big - 1);
    cf_kv_table_free(q, big);
    assert_int_equal(hook_frees, 1);
    assert_int_equal(hook_live_bytes, 0);
    /* a store that grows past 4 MiB of slots (131072 slots of 32 bytes) */
    cf_kv *kv = cf_kv_new(0, 0);
    assert_non_null(kv);
    char key[16];
    for (int i = 0; i < 200000; i++) {
        int n = snprintf(key, sizeof key, "k%d", i);
        assert_int_equal(cf_kv_put(kv, key, (size_t)n, i, NULL, NULL, NULL), 1);
    }
    assert_true(hook_allocs >= 2); /* the 4 MiB and 8 MiB tables */
    for (int i = 0; i < 200000; i += 997) {
        int n = snprintf(key, sizeof key, "k%d", i);
        int64_t exp;
        assert_non_null(cf_kv_get(kv, key, (size_t)n, &exp));
        assert_int_equal(exp, i);
    }
    cf_kv_free(kv);
    assert_int_equal(hook_allocs, hook_frees);
    assert_int_equal(hook_live_bytes, 0);
    cf_kv_set_table_mem(NULL, NULL);
    p = cf_kv_table_alloc(big);
    assert_int_equal(hook_allocs, hook_frees); /* calloc again */
    cf_kv_table_free(p, big);
}

/* The old table of a finished doubling is handed out (cf_kv_take_retired),
 * not freed by the put that moved its last entry (issue 15: unmapping it
 * there held the sequencer lock 3-9 ms). Seeded random traces of puts,
 * deletes, re-timings and expiries over a growing key space, taking the
 * retired table at random moments or leaving it: the store answers exactly
 * as a plain map (the model) throughout, each doubling's end leaves exactly
 * one table to take, of the old table's size (the memory it counted), and a
 * table left untaken is freed by the next doubling's end or cf_kv_free
 * (ASan: no leak). */
#define RT_KEYS 40000
static void retired_tables_are_handed_out(void **state)
{
    (void)state;
    static struct {
        bool present[RT_KEYS];
        int64_t exp[RT_KEYS];
        uint64_t val[RT_KEYS];
    } m;
    kv_model mm = {m.present, m.exp, m.val};
    char k[64];
    for (uint64_t seed = 1; seed <= 6; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ULL;
        memset(&m, 0, sizeof m);
        cf_kv *kv = cf_kv_new(sizeof(uint64_t), 0);
        assert_non_null(kv);
        cf_kv_hand_out_retired(kv);
        int64_t now = 0;
        uint64_t span = 64;    /* key ids in play: grows, so the table does */
        unsigned ends = 0, taken = 0, last_end = 0;
        size_t last_bytes = 0;
        bool was_migrating = false;
        void *t;
        size_t tbytes;
        assert_false(cf_kv_take_retired(kv, &t, &tbytes));
        for (int step = 0; step < 120000; step++) {
            if (span < RT_KEYS && rnd() % 3 == 0)
                span++;
            uint64_t id = rnd() % span;
            size_t n = make_key(k, id, id % 3 == 0 ? 15 : 0);
            unsigned op = (unsigned)(rnd() % 64);
            if (op < 44) {
                model_put(kv, &mm, k, n, id, now + 50 + (int64_t)(rnd() % 5000));
            } else if (op < 52) {
                model_delete(kv, &mm, k, n, id);
            } else if (op < 60) {
                model_set_expiry(kv, &mm, k, n, id, now + 50 + (int64_t)(rnd() % 5000));
            } else if (op < 63) {
                int64_t exp;
                uint64_t *v = cf_kv_get(kv, k, n, &exp);
                assert_true((v != NULL) == m.present[id]);
                if (v) {
                    assert_true(*v == m.val[id]);
                    assert_true(exp == m.exp[id]);
                }
            } else {
                now += (int64_t)(rnd() % 64);
                model_expire(kv, &mm, span, now);
            }
            bool migrating = cf_kv_migrating(kv);
            if (was_migrating && !migrating) {
                /* A doubling ended in this operation: its old table (half
                 * the current one) waits, counted in the memory. */
                ends++;
                if (rnd() % 4 != 0) {
                    size_t mem = cf_kv_memory(kv);
                    assert_true(cf_kv_take_retired(kv, &t, &tbytes));
                    assert_non_null(t);
                    assert_int_equal(cf_kv_memory(kv), mem - tbytes);
                    /* Each doubling's old table is twice the last one's:
                     * one left untaken was replaced by the newer. */
                    if (last_bytes)
                        assert_int_equal(tbytes, last_bytes << (ends - last_end));
                    last_bytes = tbytes;
                    last_end = ends;
                    cf_kv_table_free(t, tbytes);
                    taken++;
                    /* only one, and it is gone now */
                    void *again;
                    size_t again_bytes;
                    assert_false(cf_kv_take_retired(kv, &again, &again_bytes));
                }
            }
            was_migrating = migrating;
            if (step % 1499 == 0 || step == 119999)
                assert_kv_matches(kv, &mm, span, 3, 15);
        }
        /* The traces grew the table through several doublings, and some
         * retired tables were left for the next end or cf_kv_free. */
        assert_true(ends >= 4);
        assert_true(taken >= 1);
        assert_true(taken <= ends);
        cf_kv_free(kv);
    }
}

/* The hand-out is opt-in (cf_kv_hand_out_retired): a store without it
 * frees each old table in the put that ends its doubling and keeps
 * nothing (the shards' small indexes, whose owners never take one), also
 * after a bulk rebuild. Two stores fed the same puts, deletes and expiries,
 * one opted in: they answer alike, and at every doubling's end the plain
 * one holds exactly the opted-in one's memory less the table waiting there,
 * and has none to hand out. */
static void retired_tables_kept_only_on_opt_in(void **state)
{
    (void)state;
    char k[64];
    for (uint64_t seed = 1; seed <= 3; seed++) {
        rng_state = seed * 0x9e3779b97f4a7c15ULL;
        cf_kv *plain = cf_kv_new(sizeof(uint64_t), 0);
        cf_kv *opted = cf_kv_new(sizeof(uint64_t), 0);
        assert_non_null(plain);
        assert_non_null(opted);
        cf_kv_hand_out_retired(opted);
        unsigned ends = 0;
        void *t;
        size_t tbytes;
        int64_t now = 0;
        for (uint64_t i = 0; i < 60000; i++) {
            if (i == 30000) {
                /* A bulk rebuild keeps the choice (cf_kv_bulk_begin empties
                 * the store, not its settings). */
                assert_int_equal(cf_kv_bulk_begin(plain, 8), 0);
                assert_int_equal(cf_kv_bulk_begin(opted, 8), 0);
                cf_kv_bulk_end(plain);
                cf_kv_bulk_end(opted);
            }
            uint64_t id = rnd() % (i + 1);
            size_t n = make_key(k, id, id % 3 == 0 ? 20 : 0);
            unsigned op = (unsigned)(rnd() % 16);
            if (op < 12) {
                int64_t exp = now + 1 + (int64_t)(rnd() % 40000);
                int a = cf_kv_put(plain, k, n, exp, NULL, NULL, NULL);
                assert_int_equal(cf_kv_put(opted, k, n, exp, NULL, NULL, NULL), a);
            } else if (op < 15) {
                int a = cf_kv_delete(plain, k, n);
                assert_int_equal(cf_kv_delete(opted, k, n), a);
            } else {
                now += (int64_t)(rnd() % 50);
                size_t a = cf_kv_expire(plain, now, NULL, NULL);
                assert_int_equal(cf_kv_expire(opted, now, NULL, NULL), a);
            }
            assert_int_equal(cf_kv_count(plain), cf_kv_count(opted));
            assert_int_equal(cf_kv_migrating(plain), cf_kv_migrating(opted));
            assert_false(cf_kv_take_retired(plain, &t, &tbytes));
            /* A small table's doubling can start and end in one put, so
             * the hand-out is checked after every operation: at most one
             * table, and only when a doubling ended. */
            size_t mem = cf_kv_memory(opted);
            if (cf_kv_take_retired(opted, &t, &tbytes)) {
                ends++;
                assert_false(cf_kv_migrating(opted));
                assert_int_equal(cf_kv_memory(plain), mem - tbytes);
                cf_kv_table_free(t, tbytes);
            }
            assert_int_equal(cf_kv_memory(plain), cf_kv_memory(opted));
        }
        assert_true(ends >= 6); /* doublings ended before and after the rebuild */
        cf_kv_free(plain);
        cf_kv_free(opted);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(put_get_delete),
        cmocka_unit_test(table_mem_hook),
        cmocka_unit_test(rejects_overlong_key),
        cmocka_unit_test(expiry_boundaries_and_order),
        cmocka_unit_test(expiry_order_is_independent_of_history),
        cmocka_unit_test(honours_key_limit_under_10x),
        cmocka_unit_test(growth_rehash_many_keys),
        cmocka_unit_test(growth_is_incremental),
        cmocka_unit_test(spare_table_is_used_by_the_next_doubling),
        cmocka_unit_test(next_table_window),
        cmocka_unit_test(retired_tables_are_handed_out),
        cmocka_unit_test(retired_tables_kept_only_on_opt_in),
        cmocka_unit_test(randomized_against_model),
        cmocka_unit_test(save_load_roundtrip),
        cmocka_unit_test(hashed_put_and_prefetch),
        cmocka_unit_test(prefetch_targets_home_slot),
        cmocka_unit_test(load_is_linear),
        cmocka_unit_test(keyed_store),
        cmocka_unit_test(overhead_per_key),
        cmocka_unit_test(bulk_build_equals_puts),
        cmocka_unit_test(incremental_save_cursor_rules),
        cmocka_unit_test(incremental_save_randomized),
        cmocka_unit_test(bulk_rebuild_after_saves_then_incremental_save),
    };
    return cmocka_run_group_tests_name("kv", tests, NULL, NULL);
}
