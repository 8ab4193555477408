/* history_rollup_bucket: one step (or hour) being summed: the additive
 * columns' integer and float sums and a sketch per distinct-count column,
 * merged from rows, from hour rows' blobs (sums, sketches) and encoded
 * into them; the names lists of views.additive and views.sketch_col. */
#include <errno.h>
#include <string.h>

#include "history_rollup_int.h"

void cf_hroll_bucket_reset(bucket *b)
{
    memset(b->sums, 0, sizeof b->sums);
    memset(b->fsums, 0, sizeof b->fsums);
    memset(b->is_float, 0, sizeof b->is_float);
    for (size_t i = 0; i < CF_HROLL_SKETCH_MAX; i++)
        if (b->users[i])
            cf_hll_clear(b->users[i]);  /* keeps its storage for the next step */
    b->min_end = INT64_MAX;
    b->max_end = INT64_MIN;
    b->any = false;
}

void cf_hroll_bucket_free(bucket *b)
{
    for (size_t i = 0; i < CF_HROLL_SKETCH_MAX; i++) {
        cf_hll_free(b->users[i]);
        b->users[i] = NULL;
    }
}

static int merge_one(bucket *b, size_t i, cf_reader *in)
{
    if (!b->users[i] && !(b->users[i] = cf_hll_new()))
        return -ENOMEM;
    int rc = cf_hll_merge_encoded(b->users[i], in);
    return rc == -EINVAL ? 0 : rc;  /* a damaged sketch only loses its own users */
}

/* One cf_hll_save encoding (one sketch column), or the container of a view
 * with several (CF_HROLL_SKETCH_MULTI, u8 k, k x str encoding). */
int cf_hroll_bucket_merge_sketch(bucket *b, const void *data, size_t len)
{
    cf_reader in;
    cf_reader_init(&in, data, len);
    if (len == 0 || ((const uint8_t *)data)[0] != CF_HROLL_SKETCH_MULTI)
        return merge_one(b, 0, &in);
    uint8_t tag = 0, k = 0;
    if (!cf_get_u8(&in, &tag) || !cf_get_u8(&in, &k) || k > CF_HROLL_SKETCH_MAX)
        return 0;
    for (size_t i = 0; i < k; i++) {
        const char *p;
        size_t n;
        if (!cf_get_str(&in, &p, &n))
            return 0;
        cf_reader one;
        cf_reader_init(&one, p, n);
        int rc = merge_one(b, i, &one);
        if (rc)
            return rc;
    }
    return 0;
}

int cf_hroll_sketches_encode(cf_hll *const *sketches, size_t k, cf_buf *out)
{
    if (k == 1)
        return cf_hll_save(sketches[0], out);
    cf_buf one = {0};
    cf_buf_put_u8(out, CF_HROLL_SKETCH_MULTI);
    cf_buf_put_u8(out, (uint8_t)k);
    int rc = 0;
    for (size_t i = 0; i < k && !rc; i++) {
        one.len = 0;
        if (sketches[i])
            rc = cf_hll_save(sketches[i], &one);
        cf_buf_put_str(out, (const char *)one.data, one.len);
    }
    if (one.oom || out->oom)
        rc = -ENOMEM;
    cf_buf_free(&one);
    return rc;
}

/* sums blob: u8 na, then per additive column u8 is_float, i64 integer
 * sum, f64 float sum (little endian). */
void cf_hroll_sums_encode(const bucket *b, size_t na, cf_buf *out)
{
    cf_buf_put_u8(out, (uint8_t)na);
    for (size_t i = 0; i < na; i++) {
        cf_buf_put_u8(out, b->is_float[i]);
        cf_buf_put_i64(out, b->sums[i]);
        cf_buf_put_f64(out, b->fsums[i]);
    }
}

/* Adds a sums blob into b. false when it does not fit na columns. */
bool cf_hroll_sums_add(bucket *b, size_t na, const void *data, size_t len)
{
    cf_reader in;
    cf_reader_init(&in, data, len);
    uint8_t n;
    if (!cf_get_u8(&in, &n) || n != na || len != 1 + na * 17)
        return false;
    for (size_t i = 0; i < na; i++) {
        uint8_t f;
        int64_t s;
        double fs;
        if (!cf_get_u8(&in, &f) || !cf_get_i64(&in, &s) || !cf_get_f64(&in, &fs))
            return false;
        b->is_float[i] |= f != 0;
        b->sums[i] += s;
        b->fsums[i] += fs;
    }
    return true;
}

/* Adds one row's additive values (columns first..first+na of st, as
 * json_extract gives them) to b. */
void cf_hroll_bucket_add_values(bucket *b, sqlite3_stmt *st, int first, size_t na)
{
    for (size_t i = 0; i < na; i++) {
        int col = first + (int)i;
        int t = sqlite3_column_type(st, col);
        if (t == SQLITE_INTEGER) {
            b->sums[i] += sqlite3_column_int64(st, col);
        } else if (t == SQLITE_FLOAT) {
            b->fsums[i] += sqlite3_column_double(st, col);
            b->is_float[i] = true;
        }
    }
}

/* Splits "a,b,c" into at most max names. false when malformed. */
bool cf_hroll_split_names_max(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n,
                              size_t max)
{
    size_t n = 0;
    for (const char *p = s; *p;) {
        const char *c = strchr(p, ',');
        size_t len = c ? (size_t)(c - p) : strlen(p);
        if (len == 0 || len > CF_HROLL_NAME_MAX || n == max)
            return false;
        for (size_t i = 0; i < len; i++) {
            char ch = p[i];
            bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' ||
                      (i > 0 && ch >= '0' && ch <= '9');
            if (!ok)
                return false;
        }
        memcpy(names[n], p, len);
        names[n++][len] = '\0';
        p = c ? c + 1 : p + len;
    }
    *ret_n = n;
    return true;
}

bool cf_hroll_split_names(const char *s, char names[][CF_HROLL_NAME_MAX + 1], size_t *ret_n)
{
    return cf_hroll_split_names_max(s, names, ret_n, CF_HROLL_ADDITIVE_MAX);
}

int64_t cf_hroll_floor(int64_t t, int64_t step)
{
    if (t < INT64_MIN + step)
        return INT64_MIN;   /* saturates: the true floor is not representable */
    return (t >= 0 ? t / step : -((-(t + 1)) / step) - 1) * step;
}
