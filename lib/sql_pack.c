/* sql_pack: packed rows and canonical key bytes (see sql_pack.h). */
#include "sql_pack.h"

#include <errno.h>
#include <math.h>
#include <string.h>

enum {
    TAG_NULL = 0,
    TAG_FALSE,
    TAG_TRUE,
    TAG_BIGINT,
    TAG_TIMESTAMP,
    TAG_DOUBLE,
    TAG_STRING,
    TAG_ARRAY,
    TAG_JSON,
};

static uint64_t zigzag(int64_t i) { return ((uint64_t)i << 1) ^ (uint64_t)(i >> 63); }
static int64_t unzigzag(uint64_t u) { return (int64_t)(u >> 1) ^ -(int64_t)(u & 1); }

static size_t varint_size(uint64_t u)
{
    size_t n = 1;
    while (u >= 0x80) {
        u >>= 7;
        n++;
    }
    return n;
}

static uint8_t *varint_put(uint8_t *d, uint64_t u)
{
    while (u >= 0x80) {
        *d++ = (uint8_t)(u | 0x80);
        u >>= 7;
    }
    *d++ = (uint8_t)u;
    return d;
}

static bool varint_get(const uint8_t **p, const uint8_t *end, uint64_t *ret)
{
    uint64_t u = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p == end)
            return false;
        uint8_t b = *(*p)++;
        u |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *ret = u;
            return true;
        }
    }
    return false;
}

static bool is_bytes(uint8_t type)
{
    return type == SQL_STRING || type == SQL_ARRAY || type == SQL_JSON;
}

size_t sql_pack_row_size(const sql_value *v, uint32_t n)
{
    size_t size = 0;
    for (uint32_t i = 0; i < n; i++) {
        switch (v[i].type) {
        case SQL_BIGINT:
        case SQL_TIMESTAMP: size += 1 + varint_size(zigzag(v[i].u.i)); break;
        case SQL_DOUBLE: size += 9; break;
        case SQL_STRING:
        case SQL_ARRAY:
        case SQL_JSON: size += 1 + varint_size(v[i].len) + v[i].len; break;
        default: size += 1; break; /* NULL, BOOLEAN */
        }
    }
    return size;
}

void sql_pack_row_write(const sql_value *v, uint32_t n, uint8_t *d)
{
    for (uint32_t i = 0; i < n; i++) {
        switch (v[i].type) {
        case SQL_BOOLEAN: *d++ = v[i].u.b ? TAG_TRUE : TAG_FALSE; break;
        case SQL_BIGINT:
        case SQL_TIMESTAMP:
            *d++ = v[i].type == SQL_BIGINT ? TAG_BIGINT : TAG_TIMESTAMP;
            d = varint_put(d, zigzag(v[i].u.i));
            break;
        case SQL_DOUBLE:
            *d++ = TAG_DOUBLE;
            memcpy(d, &v[i].u.d, 8);
            d += 8;
            break;
        case SQL_STRING:
        case SQL_ARRAY:
        case SQL_JSON:
            *d++ = v[i].type == SQL_STRING ? TAG_STRING : v[i].type == SQL_ARRAY ? TAG_ARRAY : TAG_JSON;
            d = varint_put(d, v[i].len);
            if (v[i].len)
                memcpy(d, v[i].u.s, v[i].len);
            d += v[i].len;
            break;
        default: *d++ = TAG_NULL; break;
        }
    }
}

int sql_unpack_row(const void *p, size_t len, uint32_t n, sql_value *ret)
{
    const uint8_t *s = p, *end = s + len;
    for (uint32_t i = 0; i < n; i++) {
        if (s == end)
            return -EINVAL;
        uint8_t tag = *s++;
        sql_value v = sql_null();
        uint64_t u;
        switch (tag) {
        case TAG_NULL: break;
        case TAG_FALSE:
        case TAG_TRUE: v = sql_bool(tag == TAG_TRUE); break;
        case TAG_BIGINT:
        case TAG_TIMESTAMP:
            if (!varint_get(&s, end, &u))
                return -EINVAL;
            v = tag == TAG_BIGINT ? sql_bigint(unzigzag(u)) : sql_timestamp(unzigzag(u));
            break;
        case TAG_DOUBLE: {
            if ((size_t)(end - s) < 8)
                return -EINVAL;
            double d;
            memcpy(&d, s, 8);
            s += 8;
            v = sql_double(d);
            break;
        }
        case TAG_STRING:
        case TAG_ARRAY:
        case TAG_JSON:
            if (!varint_get(&s, end, &u) || u > (uint64_t)(end - s) || u > UINT32_MAX)
                return -EINVAL;
            v.type = tag == TAG_STRING ? SQL_STRING : tag == TAG_ARRAY ? SQL_ARRAY : SQL_JSON;
            v.len = (uint32_t)u;
            v.u.s = (const char *)s;
            s += u;
            break;
        default: return -EINVAL;
        }
        ret[i] = v;
    }
    return s == end ? 0 : -EINVAL;
}

int sql_pack_key(const sql_value *key, uint32_t n, cf_buf *out)
{
    int null = 0;
    for (uint32_t i = 0; i < n; i++) {
        sql_value v = key[i];
        switch (v.type) {
        case SQL_BOOLEAN:
            cf_buf_put_u8(out, 'b');
            cf_buf_put_u8(out, v.u.b ? 1 : 0);
            break;
        case SQL_BIGINT:
        case SQL_TIMESTAMP:
            cf_buf_put_u8(out, 'i');
            cf_buf_put_i64(out, v.u.i);
            break;
        case SQL_DOUBLE:
            if (isnan(v.u.d)) {
                cf_buf_put_u8(out, 'n');
                null = 1;
            } else if (v.u.d == trunc(v.u.d) && v.u.d >= -9223372036854775808.0 &&
                       v.u.d < 9223372036854775808.0) {
                /* An integral double equals the integer of the same value
                 * (and -0.0 equals 0): same bytes. */
                cf_buf_put_u8(out, 'i');
                cf_buf_put_i64(out, (int64_t)v.u.d);
            } else {
                cf_buf_put_u8(out, 'd');
                cf_buf_put_f64(out, v.u.d);
            }
            break;
        default:
            if (is_bytes(v.type)) {
                cf_buf_put_u8(out, v.type == SQL_STRING ? 's' : v.type == SQL_ARRAY ? 'a' : 'j');
                cf_buf_put_str(out, v.u.s, v.len);
            } else {
                cf_buf_put_u8(out, 'n');
                null = 1;
            }
            break;
        }
    }
    return out->oom ? -ENOMEM : null;
}
