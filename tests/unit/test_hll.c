/* Unit tests for cf_hll: exact sparse form, dense HyperLogLog accuracy,
 * exact merging, save/load and memory accounting. */
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
#include "cf_hash.h"
#include "cf_hll.h"

static uint64_t key_hash(uint64_t i, uint64_t seed)
{
    return cf_hash64(&i, sizeof i, seed);
}

/* Adds keys [from, to) hashed with seed. */
static void add_range(cf_hll *h, uint64_t from, uint64_t to, uint64_t seed)
{
    for (uint64_t i = from; i < to; i++)
        assert_true(cf_hll_add(h, key_hash(i, seed)) >= 0);
}

static void empty_counts_zero(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    assert_non_null(h);
    assert_int_equal(cf_hll_count(h), 0);
    assert_false(cf_hll_is_dense(h));
    cf_hll_free(h);
    cf_hll_free(NULL);
}

static void exact_up_to_sparse_limit(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    for (uint64_t i = 0; i < CF_HLL_SPARSE_MAX; i++) {
        assert_int_equal(cf_hll_add(h, key_hash(i, 7)), 1);
        /* Duplicates change nothing. */
        assert_int_equal(cf_hll_add(h, key_hash(i, 7)), 0);
        assert_int_equal(cf_hll_add(h, key_hash(i / 2, 7)), 0);
        assert_int_equal(cf_hll_count(h), i + 1);
        assert_false(cf_hll_is_dense(h));
    }
    /* The 513th distinct hash switches to dense form. */
    assert_int_equal(cf_hll_add(h, key_hash(CF_HLL_SPARSE_MAX, 7)), 1);
    assert_true(cf_hll_is_dense(h));
    uint64_t c = cf_hll_count(h);
    assert_true(c >= 503 && c <= 523);
    cf_hll_free(h);
}

static void exact_for_extreme_hashes(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    uint64_t v[] = {0, UINT64_MAX, 1, 1ULL << 63, 0, UINT64_MAX};
    for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
        cf_hll_add(h, v[i]);
    assert_int_equal(cf_hll_count(h), 4);
    cf_hll_reset(h);
    assert_int_equal(cf_hll_count(h), 0);
    assert_int_equal(cf_hll_add(h, 0), 1);
    assert_int_equal(cf_hll_count(h), 1);
    /* Hash 0 in merges and snapshots. */
    cf_hll *g = cf_hll_new(), *z = cf_hll_new();
    cf_hll_add(g, 0);
    cf_hll_add(g, 2);
    cf_hll_add(h, 1);
    assert_int_equal(cf_hll_merge(h, g), 0);
    assert_int_equal(cf_hll_count(h), 3);
    assert_int_equal(cf_hll_merge(z, g), 0);
    assert_true(cf_hll_equal(z, g));
    assert_false(cf_hll_equal(z, h));
    cf_hll_add(h, UINT64_MAX);
    cf_buf b = {0};
    assert_int_equal(cf_hll_save(h, &b), 0);
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_hll *l = cf_hll_load(&r);
    assert_non_null(l);
    assert_true(cf_hll_equal(l, h));
    assert_int_equal(cf_hll_count(l), 4);
    cf_buf_free(&b);
    cf_hll_free(l);
    cf_hll_free(g);
    cf_hll_free(z);
    cf_hll_free(h);
}

static void check_accuracy(uint64_t n, uint64_t seed)
{
    cf_hll *h = cf_hll_new();
    add_range(h, 0, n, seed);
    double est = (double)cf_hll_count(h);
    double err = (est - (double)n) / (double)n;
    if (err < 0)
        err = -err;
    if (err > 0.02)
        fail_msg("n=%llu seed=%llu estimate=%.0f error=%.4f", (unsigned long long)n,
                 (unsigned long long)seed, est, err);
    cf_hll_free(h);
}

static void accuracy_within_two_percent(void **state)
{
    (void)state;
    const uint64_t sizes[] = {1000, 10000, 30000, 50000, 70000, 100000, 1000000};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++)
        for (uint64_t seed = 1; seed <= 6; seed++)
            check_accuracy(sizes[s], seed * 0x9e3779b97f4a7c15ULL);
}

static void accuracy_sweep_small_range(void **state)
{
    (void)state;
    /* Every 16th count from the sparse limit to 20000, one sketch grown
     * incrementally: the linear-counting range. */
    cf_hll *h = cf_hll_new();
    for (uint64_t i = 0; i < 20000; i++) {
        cf_hll_add(h, key_hash(i, 99));
        if (i >= 512 && i % 16 == 0) {
            double est = (double)cf_hll_count(h), n = (double)(i + 1);
            double err = est > n ? (est - n) / n : (n - est) / n;
            if (err > 0.02)
                fail_msg("n=%.0f estimate=%.0f", n, est);
        }
    }
    cf_hll_free(h);
}

/* Builds a sketch from keys [from, to). */
static cf_hll *build(uint64_t from, uint64_t to)
{
    cf_hll *h = cf_hll_new();
    assert_non_null(h);
    add_range(h, from, to, 5);
    return h;
}

static void merge_case(uint64_t a0, uint64_t a1, uint64_t b0, uint64_t b1)
{
    cf_hll *a = build(a0, a1), *b = build(b0, b1);
    uint64_t lo = a0 < b0 ? a0 : b0, hi = a1 > b1 ? a1 : b1;
    /* The ranges below always overlap or touch, so the union is [lo, hi). */
    cf_hll *u = build(lo, hi);
    cf_hll *b_copy = cf_hll_clone(b);
    assert_int_equal(cf_hll_merge(a, b), 0);
    assert_true(cf_hll_equal(a, u));
    assert_true(cf_hll_equal(b, b_copy)); /* src untouched */
    assert_int_equal(cf_hll_count(a), cf_hll_count(u));
    /* And the other way round. */
    cf_hll *a2 = build(a0, a1);
    assert_int_equal(cf_hll_merge(b, a2), 0);
    assert_true(cf_hll_equal(b, u));
    cf_hll_free(a);
    cf_hll_free(b);
    cf_hll_free(u);
    cf_hll_free(a2);
    cf_hll_free(b_copy);
}

static void merge_is_exact_union(void **state)
{
    (void)state;
    merge_case(0, 60, 30, 99);          /* sparse + sparse, exact 99 */
    merge_case(0, 300, 212, 512);       /* sparse + sparse = exactly 512, stays sparse */
    merge_case(0, 300, 213, 513);       /* sparse + sparse = 513, turns dense */
    merge_case(0, 400, 100, 500);
    merge_case(0, 100, 50, 5000);       /* sparse + dense */
    merge_case(0, 3000, 2000, 40000);   /* dense + dense */
    merge_case(0, 10, 10, 20);          /* disjoint, touching */

    cf_hll *a = build(0, 100), *b = build(0, 300);
    cf_hll_merge(a, b);
    assert_int_equal(cf_hll_count(a), 300);
    assert_false(cf_hll_is_dense(a));
    cf_hll_free(a);
    cf_hll_free(b);

    cf_hll *e = cf_hll_new(), *f = cf_hll_new();
    assert_int_equal(cf_hll_merge(e, f), 0);
    assert_int_equal(cf_hll_count(e), 0);
    cf_hll_free(e);
    cf_hll_free(f);
}

static void merge_of_shards_matches_single_sketch(void **state)
{
    (void)state;
    /* Four shards each see a quarter of 200000 keys, plus some overlap. */
    cf_hll *shards[4], *all = cf_hll_new(), *merged = cf_hll_new();
    for (int s = 0; s < 4; s++)
        shards[s] = cf_hll_new();
    for (uint64_t i = 0; i < 200000; i++) {
        uint64_t hsh = key_hash(i, 11);
        cf_hll_add(shards[i % 4], hsh);
        if (i % 7 == 0)
            cf_hll_add(shards[(i + 1) % 4], hsh);
        cf_hll_add(all, hsh);
    }
    for (int s = 0; s < 4; s++) {
        assert_int_equal(cf_hll_merge(merged, shards[s]), 0);
        cf_hll_free(shards[s]);
    }
    assert_true(cf_hll_equal(merged, all));
    cf_hll_free(all);
    cf_hll_free(merged);
}

static void roundtrip(cf_hll *h)
{
    cf_buf b = {0};
    assert_int_equal(cf_hll_save(h, &b), 0);
    cf_buf_put_u8(&b, 0x5a); /* trailing byte must remain unread */
    cf_reader r;
    cf_reader_init(&r, b.data, b.len);
    cf_hll *l = cf_hll_load(&r);
    assert_non_null(l);
    assert_int_equal(r.left, 1);
    assert_true(cf_hll_equal(h, l));
    assert_int_equal(cf_hll_count(h), cf_hll_count(l));
    /* Same future behaviour: add the same keys to both. */
    add_range(h, 1000000, 1000600, 3);
    add_range(l, 1000000, 1000600, 3);
    assert_true(cf_hll_equal(h, l));
    cf_hll_free(l);
    cf_buf_free(&b);
}

static void save_load_roundtrip(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    roundtrip(h); /* empty, then grows past the sparse limit inside */
    cf_hll_reset(h);
    add_range(h, 0, 77, 1);
    roundtrip(h);
    cf_hll_reset(h);
    add_range(h, 0, 50000, 1);
    roundtrip(h);
    cf_hll_free(h);
}

static cf_hll *load_bytes(const cf_buf *b)
{
    cf_reader r;
    cf_reader_init(&r, b->data, b->len);
    return cf_hll_load(&r);
}

/* The sparse encoding lists the set ascending for every size the sparse
 * form takes (the sort covers its small and partitioned cases, with the
 * zero hash too), so equal sets give equal bytes whatever the order. */
static void sparse_save_is_ascending(void **state)
{
    (void)state;
    for (uint64_t n = 0; n <= CF_HLL_SPARSE_MAX; n += (n < 40 ? 1 : 37)) {
        cf_hll *a = cf_hll_new(), *b = cf_hll_new();
        assert_non_null(a);
        assert_non_null(b);
        if (n % 3 == 0) {
            assert_true(cf_hll_add(a, 0) >= 0);
            assert_true(cf_hll_add(b, 0) >= 0);
        }
        add_range(a, 0, n, 11);
        for (uint64_t i = n; i-- > 0;)
            assert_true(cf_hll_add(b, key_hash(i, 11)) >= 0);
        cf_buf ba = {0}, bb = {0};
        assert_int_equal(cf_hll_save(a, &ba), 0);
        assert_int_equal(cf_hll_save(b, &bb), 0);
        assert_int_equal(ba.len, bb.len);
        assert_memory_equal(ba.data, bb.data, ba.len);
        cf_reader r;
        cf_reader_init(&r, ba.data, ba.len);
        uint8_t form;
        uint32_t k;
        assert_true(cf_get_u8(&r, &form));
        if (ba.len != 1 + CF_HLL_REGISTERS) {   /* still sparse */
            assert_true(cf_get_u32(&r, &k));
            uint64_t prev = 0;
            for (uint32_t i = 0; i < k; i++) {
                uint64_t v;
                assert_true(cf_get_u64(&r, &v));
                if (i > 0)
                    assert_true(v > prev);
                prev = v;
            }
        }
        cf_buf_free(&ba);
        cf_buf_free(&bb);
        cf_hll_free(a);
        cf_hll_free(b);
    }
}

/* Reads a sparse save (form, count, hashes) and checks that it holds
 * want_k hashes, strictly ascending. Returns the first hash. */
static uint64_t assert_sparse_save_ascending(const cf_buf *b, uint32_t want_k)
{
    cf_reader r;
    cf_reader_init(&r, b->data, b->len);
    uint8_t form;
    uint32_t k;
    assert_true(cf_get_u8(&r, &form));
    assert_true(cf_get_u32(&r, &k));
    assert_int_equal(k, want_k);
    uint64_t first = 0, prev = 0;
    for (uint32_t i = 0; i < k; i++) {
        uint64_t v;
        assert_true(cf_get_u64(&r, &v));
        assert_true(i == 0 || v > prev);
        if (i == 0)
            first = v;
        prev = v;
    }
    return first;
}

/* A full sparse set (CF_HLL_SPARSE_MAX hashes, with and without the zero
 * hash) saves every hash once, ascending, and loads back equal: the save
 * gathers the table's slots without a test per slot and writes one past the
 * last hash (ASan checks that bound). */
static void full_sparse_set_saves_every_hash(void **state)
{
    (void)state;
    for (int zero = 0; zero < 2; zero++) {
        cf_hll *h = cf_hll_new();
        assert_non_null(h);
        if (zero)
            assert_int_equal(cf_hll_add(h, 0), 1);
        add_range(h, 0, CF_HLL_SPARSE_MAX - (uint64_t)zero, 5);
        assert_false(cf_hll_is_dense(h));
        assert_int_equal(cf_hll_count(h), CF_HLL_SPARSE_MAX);
        cf_buf b = {0};
        assert_int_equal(cf_hll_save(h, &b), 0);
        assert_int_equal(b.len, 1 + 4 + 8 * CF_HLL_SPARSE_MAX);
        /* The zero hash, when added, is the first. */
        assert_true((assert_sparse_save_ascending(&b, CF_HLL_SPARSE_MAX) == 0) == (zero == 1));
        cf_hll *back = load_bytes(&b);
        assert_non_null(back);
        assert_true(cf_hll_equal(h, back));
        cf_hll_free(back);
        cf_buf_free(&b);
        cf_hll_free(h);
    }
}

/* Skewed values (small integers: every one in the same top-byte bucket of
 * the save's sort, or two buckets) are saved ascending too. */
static void sparse_save_of_skewed_values_is_ascending(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    assert_non_null(h);
    for (uint64_t i = 300; i > 0; i--)
        assert_true(cf_hll_add(h, i % 2 ? i : i | (0xffull << 56)) >= 0);
    cf_buf b = {0};
    assert_int_equal(cf_hll_save(h, &b), 0);
    (void)assert_sparse_save_ascending(&b, 300);
    cf_buf_free(&b);
    cf_hll_free(h);
}

static void load_rejects_malformed(void **state)
{
    (void)state;
    cf_buf b = {0};
    /* Unknown form. */
    cf_buf_put_u8(&b, 2);
    assert_null(load_bytes(&b));
    /* Unsorted sparse set. */
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 0);
    cf_buf_put_u32(&b, 2);
    cf_buf_put_u64(&b, 5);
    cf_buf_put_u64(&b, 4);
    assert_null(load_bytes(&b));
    /* Duplicate in sparse set. */
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 0);
    cf_buf_put_u32(&b, 2);
    cf_buf_put_u64(&b, 5);
    cf_buf_put_u64(&b, 5);
    assert_null(load_bytes(&b));
    /* Sparse set over the limit. */
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 0);
    cf_buf_put_u32(&b, CF_HLL_SPARSE_MAX + 1);
    for (uint64_t i = 0; i <= CF_HLL_SPARSE_MAX; i++)
        cf_buf_put_u64(&b, i);
    assert_null(load_bytes(&b));
    /* Truncated sparse set. */
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 0);
    cf_buf_put_u32(&b, 3);
    cf_buf_put_u64(&b, 1);
    assert_null(load_bytes(&b));
    /* Register value above 51, and a truncated register array. */
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 1);
    uint8_t regs[CF_HLL_REGISTERS] = {0};
    regs[100] = 52;
    cf_buf_put(&b, regs, sizeof regs);
    assert_null(load_bytes(&b));
    regs[100] = 51;
    cf_buf_reset(&b);
    cf_buf_put_u8(&b, 1);
    cf_buf_put(&b, regs, sizeof regs);
    cf_hll *ok = load_bytes(&b);
    assert_non_null(ok);
    cf_hll_free(ok);
    b.len -= 1;
    assert_null(load_bytes(&b));
    cf_buf_free(&b);
}

static void memory_accounting(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    size_t empty = cf_hll_memory(h);
    assert_true(empty > 0 && empty < 64);
    add_range(h, 0, 10, 1);
    size_t small = cf_hll_memory(h);
    /* A table at most 3/4 full: 16 slots for 10 hashes. */
    assert_int_equal(small, empty + 16 * 8);
    add_range(h, 10, 512, 1);
    assert_int_equal(cf_hll_memory(h), empty + 1024 * 8);
    add_range(h, 512, 513, 1);
    assert_int_equal(cf_hll_memory(h), empty + CF_HLL_REGISTERS);
    cf_hll_reset(h);
    assert_int_equal(cf_hll_memory(h), empty);
    cf_hll_free(h);
}

/* cf_hll_clear empties the sketch but keeps its storage, in both forms:
 * once grown, a cleared scratch sketch reused for merges keeps the same
 * memory, and every result equals that of a fresh sketch. */
static void clear_keeps_storage(void **state)
{
    (void)state;
    cf_hll *h = cf_hll_new();
    size_t empty = cf_hll_memory(h);
    add_range(h, 0, 300, 3);
    cf_hll_clear(h);
    assert_int_equal(cf_hll_count(h), 0);
    assert_false(cf_hll_is_dense(h));
    assert_int_equal(cf_hll_memory(h), empty + 512 * 8);
    add_range(h, 0, 600, 3);           /* dense now; the table is kept */
    assert_true(cf_hll_is_dense(h));
    size_t full = cf_hll_memory(h);
    assert_int_equal(full, empty + 1024 * 8 + CF_HLL_REGISTERS);
    cf_hll_clear(h);
    assert_int_equal(cf_hll_count(h), 0);
    assert_false(cf_hll_is_dense(h));
    assert_int_equal(cf_hll_memory(h), full);
    /* Reuse in both forms, by adds and by merges: same results as fresh
     * sketches, no growth. */
    for (int round = 0; round < 3; round++) {
        cf_hll *small = build(0, 40), *big = build(100, 900), *u = build(0, 40);
        add_range(u, 100, 900, 5);
        cf_hll_clear(h);
        assert_int_equal(cf_hll_merge(h, small), 0);
        assert_true(cf_hll_equal(h, small));
        assert_int_equal(cf_hll_count(h), 40);
        assert_int_equal(cf_hll_merge(h, big), 0);
        assert_true(cf_hll_equal(h, u));
        assert_int_equal(cf_hll_count(h), cf_hll_count(u));
        cf_hll_clear(h);
        add_range(h, 0, 40, 5);
        assert_true(cf_hll_equal(h, small));
        assert_int_equal(cf_hll_memory(h), full);
        cf_hll_free(small);
        cf_hll_free(big);
        cf_hll_free(u);
    }
    cf_hll_reset(h);
    assert_int_equal(cf_hll_memory(h), empty);
    cf_hll_free(h);
}

/* Merging an encoding gives the very sketch that merging its loaded copy
 * gives, for every pair of forms; a malformed encoding changes nothing. */
static void merge_encoded_matches_merge(void **state)
{
    (void)state;
    static const uint64_t sizes[] = {0, 3, 400, 5000};
    for (size_t i = 0; i < 4; i++) {
        for (size_t j = 0; j < 4; j++) {
            cf_hll *a = cf_hll_new(), *a2 = cf_hll_new(), *b = cf_hll_new();
            add_range(a, 0, sizes[i], 1);
            add_range(a2, 0, sizes[i], 1);
            add_range(b, 100, 100 + sizes[j], 1);   /* overlaps a */
            cf_buf enc = {0};
            assert_int_equal(cf_hll_save(b, &enc), 0);
            cf_reader in;
            cf_reader_init(&in, enc.data, enc.len);
            assert_int_equal(cf_hll_merge_encoded(a, &in), 0);
            assert_int_equal(in.left, 0);
            assert_int_equal(cf_hll_merge(a2, b), 0);
            assert_true(cf_hll_equal(a, a2));
            /* Cut short or a register out of range: -EINVAL, a unchanged. */
            cf_reader_init(&in, enc.data, enc.len - 1);
            if (enc.len > 5) {
                assert_int_equal(cf_hll_merge_encoded(a, &in), -EINVAL);
                assert_true(cf_hll_equal(a, a2));
            }
            if (!cf_hll_is_dense(b) && sizes[j] >= 2) {
                /* Not ascending (the last two values swapped): -EINVAL
                 * before anything is added. */
                uint8_t t[8], *last = enc.data + enc.len - 8;
                memcpy(t, last, 8);
                memcpy(last, last - 8, 8);
                memcpy(last - 8, t, 8);
                cf_reader_init(&in, enc.data, enc.len);
                assert_int_equal(cf_hll_merge_encoded(a, &in), -EINVAL);
                assert_true(cf_hll_equal(a, a2));
            }
            if (cf_hll_is_dense(b)) {
                enc.data[1] = 200;
                cf_reader_init(&in, enc.data, enc.len);
                assert_int_equal(cf_hll_merge_encoded(a, &in), -EINVAL);
                assert_true(cf_hll_equal(a, a2));
            }
            cf_buf_free(&enc);
            cf_hll_free(a);
            cf_hll_free(a2);
            cf_hll_free(b);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_counts_zero),
        cmocka_unit_test(exact_up_to_sparse_limit),
        cmocka_unit_test(exact_for_extreme_hashes),
        cmocka_unit_test(accuracy_within_two_percent),
        cmocka_unit_test(accuracy_sweep_small_range),
        cmocka_unit_test(merge_is_exact_union),
        cmocka_unit_test(merge_of_shards_matches_single_sketch),
        cmocka_unit_test(save_load_roundtrip),
        cmocka_unit_test(sparse_save_is_ascending),
        cmocka_unit_test(full_sparse_set_saves_every_hash),
        cmocka_unit_test(sparse_save_of_skewed_values_is_ascending),
        cmocka_unit_test(load_rejects_malformed),
        cmocka_unit_test(memory_accounting),
        cmocka_unit_test(clear_keeps_storage),
        cmocka_unit_test(merge_encoded_matches_merge),
    };
    return cmocka_run_group_tests_name("hll", tests, NULL, NULL);
}
