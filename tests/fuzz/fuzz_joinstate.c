/* Fuzz harness for the join state loaders (sql_join_load, sql_table_load)
 * and the packed-row decoder (sql_unpack_row). The first byte picks:
 *   0  the rest drives pushes and watermarks of an interval join; its saved
 *      state must load whole and split by key with the same counts, and the
 *      saved bytes with one byte changed (where the input says) must load or
 *      be refused, never crash, and a loaded state must drain to nothing;
 *   1  the rest as a saved interval join;
 *   2  the rest as a saved table;
 *   3  the rest as a packed row of data[1] % 9 values. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sql_join.h"
#include "sql_pack.h"
#include "sql_table.h"

static void count_emit(void *ctx, const sql_join_result *r)
{
    FUZZ_CHECK(r->row.n == 5);
    (*(size_t *)ctx)++;
}

static const sql_join_config join_cfg = {
    .left_outer = true, .nkeys = 1, .ncols = {3, 2}, .within_ms = 20, .grace_ms = 5,
};

static bool keep_odd(void *ctx, const void *key, size_t len)
{
    (void)ctx;
    return len && (((const uint8_t *)key)[len - 1] & 1);
}

static size_t held(const sql_join *j)
{
    sql_join_stats st;
    sql_join_stats_get(j, &st);
    return st.buffered[0] + st.buffered[1];
}

/* Loads a join blob; if it loads, the state drains to nothing. */
static void load_and_drain(const uint8_t *p, size_t n)
{
    sql_join *j = sql_join_new(&join_cfg);
    if (!j)
        return;
    cf_reader r;
    cf_reader_init(&r, p, n);
    int rc = sql_join_load(j, &r, NULL, NULL);
    FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
    if (rc == 0) {
        size_t out = 0;
        sql_join_advance(j, INT64_MAX, count_emit, &out);
        FUZZ_CHECK(held(j) == 0);
    }
    sql_join_free(j);
}

static void drive(const uint8_t *data, size_t size)
{
    sql_join *j = sql_join_new(&join_cfg);
    if (!j)
        return;
    size_t out = 0;
    int64_t maxt = 0;
    uint64_t arrival = 0;
    const char tags[] = "abcdefgh";
    for (size_t i = 0; i + 4 <= size; i += 4) {
        int side = data[i] & 1;
        int k = data[i + 1] % 8;
        int64_t t = 1000 + (int64_t)(i / 4) * (data[i + 2] & 3) - (data[i + 3] % 64);
        sql_value key = k == 7 ? sql_null() : (data[i] & 2) ? sql_double((double)k) : sql_bigint(k);
        sql_value v[3] = {sql_bigint((int64_t)i), key, sql_string(tags, (uint32_t)(data[i + 2] % 8))};
        sql_row row = {.v = v, .n = side ? 2 : 3, .rowtime = t};
        maxt = t > maxt ? t : maxt;
        int rc = sql_join_push(j, side ? SQL_JOIN_SIDE_RIGHT : SQL_JOIN_SIDE_LEFT, &key, &row, ++arrival,
                               maxt - (data[i] >> 4), count_emit, &out);
        FUZZ_CHECK(rc == SQL_JOIN_APPLIED || rc == SQL_JOIN_LATE);
    }
    cf_buf b = {0};
    FUZZ_CHECK(sql_join_save(j, &b) == 0);
    /* Whole, and split in two by key. */
    sql_join *w = sql_join_new(&join_cfg), *odd = sql_join_new(&join_cfg), *even = sql_join_new(&join_cfg);
    if (w && odd && even) {
        cf_reader r;
        cf_reader_init(&r, b.data, b.len);
        FUZZ_CHECK(sql_join_load(w, &r, NULL, NULL) == 0);
        FUZZ_CHECK(held(w) == held(j));
        cf_reader_init(&r, b.data, b.len);
        FUZZ_CHECK(sql_join_load(odd, &r, keep_odd, NULL) == 0);
        cf_buf eb = {0};
        FUZZ_CHECK(sql_join_save(w, &eb) == 0);
        cf_reader_init(&r, eb.data, eb.len);
        FUZZ_CHECK(sql_join_load(even, &r, NULL, NULL) == 0);
        FUZZ_CHECK(held(even) == held(j));
        cf_buf_free(&eb);
        FUZZ_CHECK(held(odd) <= held(j));
    }
    sql_join_free(w);
    sql_join_free(odd);
    sql_join_free(even);
    /* One byte changed where the input says. */
    if (b.len && size >= 2) {
        size_t pos = ((size_t)data[0] << 8 | data[1]) % b.len;
        b.data[pos] ^= (uint8_t)(data[size - 1] | 1);
        load_and_drain(b.data, b.len);
    }
    cf_buf_free(&b);
    sql_join_free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *p = data + 1;
    size_t n = size - 1;
    switch (data[0] % 4) {
    case 0: drive(p, n); break;
    case 1: load_and_drain(p, n); break;
    case 2: {
        sql_table_config c = {.ncols = 3, .key_column = 0};
        sql_table *t = sql_table_new(&c);
        if (!t)
            return 0;
        cf_reader r;
        cf_reader_init(&r, p, n);
        int rc = sql_table_load(t, &r, NULL, NULL);
        FUZZ_CHECK(rc == 0 || rc == -EINVAL || rc == -ENOMEM);
        if (rc == 0) {
            cf_buf b = {0};
            FUZZ_CHECK(sql_table_save(t, &b) == 0);
            sql_table *u = sql_table_new(&c);
            cf_reader_init(&r, b.data, b.len);
            FUZZ_CHECK(!u || sql_table_load(u, &r, NULL, NULL) == 0);
            sql_table_free(u);
            cf_buf_free(&b);
        }
        sql_table_free(t);
        break;
    }
    default: {
        if (n < 1)
            return 0;
        uint32_t nv = p[0] % 9;
        sql_value v[8];
        if (sql_unpack_row(p + 1, n - 1, nv, v) == 0) {
            /* It packs back into no more bytes (a varint read may be overlong). */
            size_t len = sql_pack_row_size(v, nv);
            uint8_t *back = malloc(len + 1);
            if (back) {
                sql_pack_row_write(v, nv, back);
                FUZZ_CHECK(len <= n - 1);
                free(back);
            }
        }
        break;
    }
    }
    return 0;
}
