#include "cf_buf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void cf_buf_init(cf_buf *b) { memset(b, 0, sizeof *b); }

void cf_buf_free(cf_buf *b)
{
    if (!b)
        return;
    free(b->data);
    memset(b, 0, sizeof *b);
}

void cf_buf_reset(cf_buf *b)
{
    b->len = 0;
    b->oom = false;
}

int cf_buf_reserve(cf_buf *b, size_t extra)
{
    if (b->oom)
        return -ENOMEM;
    if (extra <= b->cap - b->len)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len) {
        b->oom = true;
        return -ENOMEM;
    }
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (!p) {
        b->oom = true;
        return -ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

void cf_buf_put(cf_buf *b, const void *p, size_t n)
{
    if (n == 0 || cf_buf_reserve(b, n) < 0)
        return;
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

void cf_buf_put_le_slow(cf_buf *b, uint64_t v, size_t width)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < width && i < sizeof tmp; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    cf_buf_put(b, tmp, width < sizeof tmp ? width : sizeof tmp);
}

void cf_buf_put_f64(cf_buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    cf_buf_put_le(b, bits, 8);
}

void cf_buf_put_str(cf_buf *b, const char *s, size_t n)
{
    if (n > UINT32_MAX) {
        b->oom = true;
        return;
    }
    cf_buf_put_u32(b, (uint32_t)n);
    /* Short strings (keys, pages) in place: cf_buf_put's memcpy call cost
     * more than the copy. */
    if (n <= 32 && !b->oom && b->cap - b->len >= n) {
        for (size_t i = 0; i < n; i++)
            b->data[b->len + i] = (uint8_t)s[i];
        b->len += n;
        return;
    }
    cf_buf_put(b, s, n);
}

void cf_reader_init(cf_reader *r, const void *data, size_t len)
{
    r->p = data;
    r->left = len;
    r->bad = false;
}

bool cf_get(cf_reader *r, void *out, size_t n)
{
    if (r->bad || n > r->left) {
        r->bad = true;
        return false;
    }
    if (n)
        memcpy(out, r->p, n);
    r->p += n;
    r->left -= n;
    return true;
}

/* Read in place, not through cf_get's memcpy into a buffer: with the
 * width a constant at each caller below, the read compiles to one load
 * (the shards' entry headers and the history writer's rows read millions
 * of these; issue 15). */
static inline bool get_le(cf_reader *r, uint64_t *v, size_t width)
{
    if (r->bad || width > r->left) {
        r->bad = true;
        return false;
    }
    uint64_t x = 0;
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    memcpy(&x, r->p, width);    /* the low bytes: little-endian as stored */
#else
    for (size_t i = 0; i < width; i++)
        x |= (uint64_t)r->p[i] << (8 * i);
#endif
    r->p += width;
    r->left -= width;
    *v = x;
    return true;
}

bool cf_get_u8(cf_reader *r, uint8_t *v)
{
    uint64_t x;
    if (!get_le(r, &x, 1))
        return false;
    *v = (uint8_t)x;
    return true;
}

bool cf_get_u16(cf_reader *r, uint16_t *v)
{
    uint64_t x;
    if (!get_le(r, &x, 2))
        return false;
    *v = (uint16_t)x;
    return true;
}

bool cf_get_u32(cf_reader *r, uint32_t *v)
{
    uint64_t x;
    if (!get_le(r, &x, 4))
        return false;
    *v = (uint32_t)x;
    return true;
}

bool cf_get_u64(cf_reader *r, uint64_t *v) { return get_le(r, v, 8); }

bool cf_get_i64(cf_reader *r, int64_t *v)
{
    uint64_t x;
    if (!get_le(r, &x, 8))
        return false;
    *v = (int64_t)x;
    return true;
}

bool cf_get_f64(cf_reader *r, double *v)
{
    uint64_t x;
    if (!get_le(r, &x, 8))
        return false;
    memcpy(v, &x, sizeof *v);
    return true;
}

bool cf_get_str(cf_reader *r, const char **ret_s, size_t *ret_n)
{
    uint32_t n;
    if (!cf_get_u32(r, &n))
        return false;
    if (n > r->left) {
        r->bad = true;
        return false;
    }
    *ret_s = (const char *)r->p;
    *ret_n = n;
    r->p += n;
    r->left -= n;
    return true;
}
