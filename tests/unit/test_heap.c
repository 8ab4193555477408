/* Unit tests for cf_heap: the generic binary min-heap of lib/. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cf_heap.h"

/* ---- plain priority queue of (key, id) ------------------------------------ */

typedef struct item {
    int64_t key;
    uint32_t id;                /* tie-break: makes the order total */
} item;

static bool item_less(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    const item *x = a, *y = b;
    return x->key < y->key || (x->key == y->key && x->id < y->id);
}

static int item_cmp(const void *a, const void *b)
{
    return item_less(a, b, NULL) ? -1 : item_less(b, a, NULL) ? 1 : 0;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next_rand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void empty_heap_has_no_top(void **state)
{
    (void)state;
    cf_heap *h = cf_heap_new(sizeof(item), item_less, NULL, NULL);
    assert_non_null(h);
    assert_null(cf_heap_top(h));
    assert_false(cf_heap_pop(h, NULL));
    assert_int_equal(cf_heap_len(h), 0);
    cf_heap_free(h);
    assert_null(cf_heap_new(0, item_less, NULL, NULL));
    assert_null(cf_heap_new(8, NULL, NULL, NULL));
}

static void pops_in_order_with_ties(void **state)
{
    (void)state;
    cf_heap *h = cf_heap_new(sizeof(item), item_less, NULL, NULL);
    int64_t keys[] = {5, 3, 5, 1, 9, 3, 0, 5};
    for (uint32_t i = 0; i < 8; i++)
        assert_int_equal(cf_heap_push(h, &(item){keys[i], i}), 0);
    item want[] = {{0, 6}, {1, 3}, {3, 1}, {3, 5}, {5, 0}, {5, 2}, {5, 7}, {9, 4}};
    for (size_t i = 0; i < 8; i++) {
        item got;
        assert_true(cf_heap_pop(h, &got));
        assert_int_equal(got.key, want[i].key);
        assert_int_equal(got.id, want[i].id);
    }
    assert_false(cf_heap_pop(h, NULL));
    cf_heap_free(h);
}

static void reserve_grows_by_doubling_from_64(void **state)
{
    (void)state;
    cf_heap *h = cf_heap_new(sizeof(item), item_less, NULL, NULL);
    assert_int_equal(cf_heap_cap(h), 0);
    assert_int_equal(cf_heap_reserve(h, 1), 0);
    assert_int_equal(cf_heap_cap(h), 64);
    assert_int_equal(cf_heap_reserve(h, 64), 0);
    assert_int_equal(cf_heap_cap(h), 64);
    assert_int_equal(cf_heap_reserve(h, 65), 0);
    assert_int_equal(cf_heap_cap(h), 128);
    assert_int_equal(cf_heap_reserve(h, SIZE_MAX), -ENOMEM);
    assert_int_equal(cf_heap_cap(h), 128);
    cf_heap_free(h);
}

/* Random pushes and pops against a sorted-array reference. */
static void random_against_sorted_reference(void **state)
{
    (void)state;
    enum { OPS = 20000 };
    cf_heap *h = cf_heap_new(sizeof(item), item_less, NULL, NULL);
    item *ref = malloc(OPS * sizeof *ref);
    size_t n = 0;
    for (uint32_t op = 0; op < OPS; op++) {
        if (n == 0 || next_rand() % 3 != 0) {
            item x = {(int64_t)(next_rand() % 100) - 50, op};
            assert_int_equal(cf_heap_push(h, &x), 0);
            ref[n++] = x;
            qsort(ref, n, sizeof *ref, item_cmp);
        } else {
            item got;
            assert_true(cf_heap_pop(h, &got));
            assert_int_equal(got.key, ref[0].key);
            assert_int_equal(got.id, ref[0].id);
            memmove(ref, ref + 1, --n * sizeof *ref);
        }
        assert_int_equal(cf_heap_len(h), n);
        if (n) {
            const item *t = cf_heap_top(h);
            assert_int_equal(t->id, ref[0].id);
        }
    }
    for (size_t i = 0; i < n; i++) {
        item got;
        assert_true(cf_heap_pop(h, &got));
        assert_int_equal(got.id, ref[i].id);
    }
    free(ref);
    cf_heap_free(h);
}

/* ---- position tracking: elements are pointers to records ------------------ */

typedef struct rec {
    int64_t key;
    uint32_t id;
    size_t pos;                 /* kept by the moved callback */
    bool in;
} rec;

static bool rec_less(const void *a, const void *b, void *ctx)
{
    (void)ctx;
    const rec *x = *(rec *const *)a, *y = *(rec *const *)b;
    return x->key < y->key || (x->key == y->key && x->id < y->id);
}

static void rec_moved(void *elem, size_t pos, void *ctx)
{
    (void)ctx;
    (*(rec **)elem)->pos = pos;
}

static void check_positions(cf_heap *h)
{
    for (size_t i = 0; i < cf_heap_len(h); i++)
        assert_int_equal((*(rec **)cf_heap_at(h, i))->pos, i);
}

static void tracked_fix_and_remove_against_reference(void **state)
{
    (void)state;
    enum { N = 600, OPS = 20000 };
    rec *r = calloc(N, sizeof *r);
    for (uint32_t i = 0; i < N; i++)
        r[i].id = i;
    cf_heap *h = cf_heap_new(sizeof(rec *), rec_less, rec_moved, NULL);
    for (uint32_t op = 0; op < OPS; op++) {
        rec *x = &r[next_rand() % N];
        uint64_t what = next_rand() % 4;
        if (!x->in) {
            x->key = (int64_t)(next_rand() % 200);
            assert_int_equal(cf_heap_push(h, &x), 0);
            x->in = true;
        } else if (what == 0) {
            rec *got;
            cf_heap_remove(h, x->pos, &got);
            assert_ptr_equal(got, x);
            x->in = false;
        } else if (what == 1) {
            rec *got;
            /* The reference minimum: a scan over every record in the heap. */
            rec *min = NULL;
            for (size_t i = 0; i < N; i++)
                if (r[i].in && (!min || rec_less(&(rec *){&r[i]}, &min, NULL)))
                    min = &r[i];
            assert_true(cf_heap_pop(h, &got));
            assert_ptr_equal(got, min);
            min->in = false;
        } else {
            x->key = (int64_t)(next_rand() % 200); /* up or down */
            cf_heap_fix(h, x->pos);
        }
        if (op % 97 == 0)
            check_positions(h);
    }
    check_positions(h);
    /* Drain: sorted order, every record still in the heap exactly once. */
    size_t left = 0;
    for (size_t i = 0; i < N; i++)
        left += r[i].in;
    rec *prev = NULL, *got;
    while (cf_heap_pop(h, &got)) {
        assert_true(got->in);
        got->in = false;
        if (prev)
            assert_true(rec_less(&prev, &got, NULL));
        prev = got;
        left--;
    }
    assert_int_equal(left, 0);
    cf_heap_clear(h);
    cf_heap_free(h);
    free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(empty_heap_has_no_top),
        cmocka_unit_test(pops_in_order_with_ties),
        cmocka_unit_test(reserve_grows_by_doubling_from_64),
        cmocka_unit_test(random_against_sorted_reference),
        cmocka_unit_test(tracked_fix_and_remove_against_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
