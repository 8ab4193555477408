/* Unit tests for cf_agg: each aggregator's results, empty states, type and
 * NaN rejection, int64 range, reset, and exact merging of partials. */
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

#include "cf_agg.h"
#include "cf_hash.h"

static cf_value I(int64_t x) { cf_value v = {.type = CF_VALUE_I64, .v.i = x}; return v; }
static cf_value F(double x) { cf_value v = {.type = CF_VALUE_F64, .v.f = x}; return v; }
static cf_value U(uint64_t x) { cf_value v = {.type = CF_VALUE_U64, .v.u = x}; return v; }

static void *mk(const cf_agg_ops *ops)
{
    void *s = malloc(ops->state_size);
    assert_non_null(s);
    assert_int_equal(ops->init(s), 0);
    return s;
}

static void rm(const cf_agg_ops *ops, void *s)
{
    ops->fini(s);
    free(s);
}

static void add_ok(const cf_agg_ops *ops, void *s, cf_value v)
{
    assert_int_equal(ops->add(s, &v), 0);
}

static cf_value res(const cf_agg_ops *ops, const void *s)
{
    cf_value r;
    assert_int_equal(ops->result(s, &r), 0);
    return r;
}

static void count_counts_everything(void **state)
{
    (void)state;
    void *s = mk(&cf_agg_count);
    assert_true(res(&cf_agg_count, s).v.u == 0);
    add_ok(&cf_agg_count, s, I(5));
    add_ok(&cf_agg_count, s, F(1.5));
    add_ok(&cf_agg_count, s, U(9));
    cf_value r = res(&cf_agg_count, s);
    assert_int_equal(r.type, CF_VALUE_U64);
    assert_int_equal(r.v.u, 3);
    cf_agg_count.reset(s);
    assert_int_equal(res(&cf_agg_count, s).v.u, 0);
    rm(&cf_agg_count, s);
}

static void int_sum_avg_and_range(void **state)
{
    (void)state;
    void *s = mk(&cf_agg_sum_i64), *a = mk(&cf_agg_avg_i64);
    assert_true(res(&cf_agg_sum_i64, s).v.i == 0);
    cf_value r;
    assert_int_equal(cf_agg_avg_i64.result(a, &r), -ENODATA);
    int64_t vals[] = {3, -10, 4, 0};
    for (int i = 0; i < 4; i++) {
        add_ok(&cf_agg_sum_i64, s, I(vals[i]));
        add_ok(&cf_agg_avg_i64, a, I(vals[i]));
    }
    assert_true(res(&cf_agg_sum_i64, s).v.i == -3);
    r = res(&cf_agg_avg_i64, a);
    assert_int_equal(r.type, CF_VALUE_F64);
    assert_true(r.v.f == -0.75);
    /* Intermediate sums may leave int64; only the result must fit. */
    cf_agg_sum_i64.reset(s);
    add_ok(&cf_agg_sum_i64, s, I(INT64_MAX));
    add_ok(&cf_agg_sum_i64, s, I(1));
    assert_int_equal(cf_agg_sum_i64.result(s, &r), -ERANGE);
    add_ok(&cf_agg_sum_i64, s, I(-1));
    assert_true(res(&cf_agg_sum_i64, s).v.i == INT64_MAX);
    cf_agg_sum_i64.reset(s);
    add_ok(&cf_agg_sum_i64, s, I(INT64_MIN));
    assert_true(res(&cf_agg_sum_i64, s).v.i == INT64_MIN);
    add_ok(&cf_agg_sum_i64, s, I(-1));
    assert_int_equal(cf_agg_sum_i64.result(s, &r), -ERANGE);
    /* Average of huge values is exact-ish, no overflow. */
    cf_agg_avg_i64.reset(a);
    add_ok(&cf_agg_avg_i64, a, I(INT64_MAX));
    add_ok(&cf_agg_avg_i64, a, I(INT64_MAX));
    assert_true(res(&cf_agg_avg_i64, a).v.f == (double)INT64_MAX);
    /* Wrong type rejected, state unchanged. */
    cf_value f = F(1.0);
    assert_int_equal(cf_agg_sum_i64.add(s, &f), -EINVAL);
    assert_int_equal(cf_agg_sum_i64.result(s, &r), -ERANGE);
    rm(&cf_agg_sum_i64, s);
    rm(&cf_agg_avg_i64, a);
}

static void double_sum_avg(void **state)
{
    (void)state;
    void *s = mk(&cf_agg_sum_f64), *a = mk(&cf_agg_avg_f64);
    cf_value r;
    assert_true(res(&cf_agg_sum_f64, s).v.f == 0.0);
    assert_int_equal(cf_agg_avg_f64.result(a, &r), -ENODATA);
    /* Compensated: 1e16 + 1 + 1 - 1e16 = 2, which naive summation loses. */
    double vals[] = {1e16, 1.0, 1.0, -1e16};
    for (int i = 0; i < 4; i++) {
        add_ok(&cf_agg_sum_f64, s, F(vals[i]));
        add_ok(&cf_agg_avg_f64, a, F(vals[i]));
    }
    assert_true(res(&cf_agg_sum_f64, s).v.f == 2.0);
    assert_true(res(&cf_agg_avg_f64, a).v.f == 0.5);
    cf_value bad = F(NAN), wrong = I(1);
    assert_int_equal(cf_agg_sum_f64.add(s, &bad), -EINVAL);
    assert_int_equal(cf_agg_avg_f64.add(a, &wrong), -EINVAL);
    assert_true(res(&cf_agg_sum_f64, s).v.f == 2.0);
    /* Merging carries the compensation too. */
    void *p1 = mk(&cf_agg_sum_f64), *p2 = mk(&cf_agg_sum_f64);
    add_ok(&cf_agg_sum_f64, p1, F(1e16));
    add_ok(&cf_agg_sum_f64, p1, F(1.0));
    add_ok(&cf_agg_sum_f64, p1, F(1.0));
    add_ok(&cf_agg_sum_f64, p2, F(-1e16));
    assert_int_equal(cf_agg_sum_f64.merge(p2, p1), 0);
    assert_true(res(&cf_agg_sum_f64, p2).v.f == 2.0);
    rm(&cf_agg_sum_f64, p1);
    rm(&cf_agg_sum_f64, p2);
    cf_agg_avg_f64.reset(a);
    assert_int_equal(cf_agg_avg_f64.result(a, &r), -ENODATA);
    rm(&cf_agg_sum_f64, s);
    rm(&cf_agg_avg_f64, a);
}

static void min_max(void **state)
{
    (void)state;
    const cf_agg_ops *ops[] = {&cf_agg_min_i64, &cf_agg_max_i64, &cf_agg_min_f64,
                               &cf_agg_max_f64};
    for (int k = 0; k < 4; k++) {
        void *s = mk(ops[k]);
        cf_value r;
        assert_int_equal(ops[k]->result(s, &r), -ENODATA);
        bool is_f = k >= 2;
        int64_t vals[] = {5, -7, 12, 12, 0};
        for (int i = 0; i < 5; i++)
            add_ok(ops[k], s, is_f ? F((double)vals[i] / 2) : I(vals[i]));
        r = res(ops[k], s);
        bool is_max = k % 2 == 1;
        if (is_f) {
            assert_int_equal(r.type, CF_VALUE_F64);
            assert_true(r.v.f == (is_max ? 6.0 : -3.5));
        } else {
            assert_int_equal(r.type, CF_VALUE_I64);
            assert_true(r.v.i == (is_max ? 12 : -7));
        }
        cf_value wrong = is_f ? I(1) : F(1), nan = F(NAN);
        assert_int_equal(ops[k]->add(s, &wrong), -EINVAL);
        if (is_f)
            assert_int_equal(ops[k]->add(s, &nan), -EINVAL);
        ops[k]->reset(s);
        assert_int_equal(ops[k]->result(s, &r), -ENODATA);
        /* Extremes. */
        add_ok(ops[k], s, is_f ? F(-INFINITY) : I(INT64_MIN));
        add_ok(ops[k], s, is_f ? F(INFINITY) : I(INT64_MAX));
        r = res(ops[k], s);
        if (is_f)
            assert_true(r.v.f == (is_max ? INFINITY : -INFINITY));
        else
            assert_true(r.v.i == (is_max ? INT64_MAX : INT64_MIN));
        rm(ops[k], s);
    }
}

static void distinct_counts_hashes(void **state)
{
    (void)state;
    void *s = mk(&cf_agg_distinct);
    for (uint64_t i = 0; i < 150; i++) {
        uint64_t h = cf_hash64(&i, sizeof i, 1);
        add_ok(&cf_agg_distinct, s, U(h));
        add_ok(&cf_agg_distinct, s, U(h));
    }
    cf_value r = res(&cf_agg_distinct, s);
    assert_int_equal(r.type, CF_VALUE_U64);
    assert_int_equal(r.v.u, 150);
    cf_value wrong = I(1);
    assert_int_equal(cf_agg_distinct.add(s, &wrong), -EINVAL);
    cf_agg_distinct.reset(s);
    assert_int_equal(res(&cf_agg_distinct, s).v.u, 0);
    add_ok(&cf_agg_distinct, s, U(1));
    assert_int_equal(res(&cf_agg_distinct, s).v.u, 1);
    rm(&cf_agg_distinct, s);
}

/* Splits a value stream over 3 partials (one empty) and checks that
 * merging gives the same result as one aggregator over everything. */
static void merge_matches_single(void **state)
{
    (void)state;
    const char *names[] = {"count", "sum_i64", "avg_i64", "sum_f64", "avg_f64", "min_i64",
                           "min_f64", "max_i64", "max_f64", "distinct"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        const cf_agg_ops *ops = cf_agg_lookup(names[k]);
        assert_non_null(ops);
        assert_string_equal(ops->name, names[k]);
        void *all = mk(ops), *part[3] = {mk(ops), mk(ops), mk(ops)};
        uint64_t rs = 12345;
        for (int i = 0; i < 5000; i++) {
            rs = rs * 6364136223846793005ULL + 1442695040888963407ULL;
            int64_t x = (int64_t)(rs >> 20) - (1LL << 43);
            cf_value v;
            if (ops->input == CF_VALUE_I64)
                v = I(x);
            else if (ops->input == CF_VALUE_F64)
                v = F((double)(x % 100000) / 8); /* exact in binary: sums are exact */
            else
                v = U(cf_hash64(&x, sizeof x, 3) % 2000 == 0 ? 1 : (rs >> 40) % 700);
            add_ok(ops, all, v);
            add_ok(ops, part[(rs >> 8) % 2 ? 0 : 2], v);
        }
        void *m = mk(ops);
        for (int p = 0; p < 3; p++)
            assert_int_equal(ops->merge(m, part[p]), 0);
        cf_value a = res(ops, all), b = res(ops, m);
        assert_int_equal(a.type, b.type);
        assert_memory_equal(&a.v, &b.v, sizeof a.v);
        /* Merging an empty state changes nothing; merging into empty copies. */
        void *e = mk(ops);
        assert_int_equal(ops->merge(m, e), 0);
        cf_value c = res(ops, m);
        assert_memory_equal(&c.v, &b.v, sizeof c.v);
        assert_int_equal(ops->merge(e, all), 0);
        c = res(ops, e);
        assert_memory_equal(&c.v, &a.v, sizeof c.v);
        rm(ops, e);
        rm(ops, m);
        rm(ops, all);
        for (int p = 0; p < 3; p++)
            rm(ops, part[p]);
    }
    assert_null(cf_agg_lookup("median"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(count_counts_everything),
        cmocka_unit_test(int_sum_avg_and_range),
        cmocka_unit_test(double_sum_avg),
        cmocka_unit_test(min_max),
        cmocka_unit_test(distinct_counts_hashes),
        cmocka_unit_test(merge_matches_single),
    };
    return cmocka_run_group_tests_name("agg", tests, NULL, NULL);
}
