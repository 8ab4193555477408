/* cf_heap: generic binary min-heap, see cf_heap.h.
 *
 * Sifts move a hole instead of swapping: the travelling element is parked in
 * a scratch block and written once where it lands, so each level costs one
 * copy (and one moved() call) instead of three. */
#include "cf_heap.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define CF_HEAP_MIN_CAP 64u

struct cf_heap {
    unsigned char *a;           /* cap elements of size esz */
    unsigned char *tmp;         /* scratch: the element being sifted */
    size_t esz, len, cap;
    cf_heap_less_fn less;
    cf_heap_moved_fn moved;
    void *ctx;
};

static inline unsigned char *at(const cf_heap *h, size_t i) { return h->a + i * h->esz; }

/* Copies one element. The common sizes (a pointer, a key and a pointer)
 * get a constant-size memcpy the compiler turns into plain moves: a libc
 * call per level cost the join benchmark several percent. */
static inline void copy(void *dst, const void *src, size_t esz)
{
    if (esz == 16)
        memcpy(dst, src, 16);
    else if (esz == 8)
        memcpy(dst, src, 8);
    else
        memcpy(dst, src, esz);
}

/* Writes src to index i and tells the owner. */
static inline void put(cf_heap *h, size_t i, const void *src)
{
    copy(at(h, i), src, h->esz);
    if (h->moved)
        h->moved(at(h, i), i, h->ctx);
}

cf_heap *cf_heap_new(size_t elem_size, cf_heap_less_fn less, cf_heap_moved_fn moved, void *ctx)
{
    if (!elem_size || !less)
        return NULL;
    cf_heap *h = calloc(1, sizeof *h);
    if (!h)
        return NULL;
    h->tmp = malloc(elem_size);
    if (!h->tmp) {
        free(h);
        return NULL;
    }
    h->esz = elem_size;
    h->less = less;
    h->moved = moved;
    h->ctx = ctx;
    return h;
}

void cf_heap_free(cf_heap *h)
{
    if (!h)
        return;
    free(h->a);
    free(h->tmp);
    free(h);
}

size_t cf_heap_len(const cf_heap *h) { return h->len; }
size_t cf_heap_cap(const cf_heap *h) { return h->cap; }

int cf_heap_reserve(cf_heap *h, size_t extra)
{
    if (extra <= h->cap - h->len)
        return 0;
    if (extra > SIZE_MAX - h->len)
        return -ENOMEM;
    size_t need = h->len + extra;
    size_t nc = h->cap ? h->cap : CF_HEAP_MIN_CAP;
    while (nc < need) {
        if (nc > SIZE_MAX / 2)
            return -ENOMEM;
        nc *= 2;
    }
    if (nc > SIZE_MAX / h->esz)
        return -ENOMEM;
    unsigned char *na = realloc(h->a, nc * h->esz);
    if (!na)
        return -ENOMEM;
    h->a = na;
    h->cap = nc;
    return 0;
}

/* Sifts the element in h->tmp up from hole i; returns where it landed. */
static size_t sift_up(cf_heap *h, size_t i)
{
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!h->less(h->tmp, at(h, p), h->ctx))
            break;
        put(h, i, at(h, p));
        i = p;
    }
    put(h, i, h->tmp);
    return i;
}

/* Sifts the element in h->tmp down from hole i. */
static void sift_down(cf_heap *h, size_t i)
{
    size_t n = h->len;
    for (;;) {
        size_t l = 2 * i + 1, m = l;
        if (l >= n)
            break;
        if (l + 1 < n && h->less(at(h, l + 1), at(h, l), h->ctx))
            m = l + 1;
        if (!h->less(at(h, m), h->tmp, h->ctx))
            break;
        put(h, i, at(h, m));
        i = m;
    }
    put(h, i, h->tmp);
}

int cf_heap_push(cf_heap *h, const void *elem)
{
    if (cf_heap_reserve(h, 1) < 0)
        return -ENOMEM;
    copy(h->tmp, elem, h->esz);
    sift_up(h, h->len++);
    return 0;
}

void *cf_heap_top(const cf_heap *h) { return h->len ? h->a : NULL; }
void *cf_heap_at(const cf_heap *h, size_t pos) { return at(h, pos); }

void cf_heap_remove(cf_heap *h, size_t pos, void *out)
{
    if (out)
        copy(out, at(h, pos), h->esz);
    size_t last = --h->len;
    if (pos == last)
        return;
    /* The last element fills the hole and moves whichever way it must. */
    copy(h->tmp, at(h, last), h->esz);
    if (pos > 0 && h->less(h->tmp, at(h, (pos - 1) / 2), h->ctx))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}

bool cf_heap_pop(cf_heap *h, void *out)
{
    if (!h->len)
        return false;
    cf_heap_remove(h, 0, out);
    return true;
}

void cf_heap_fix(cf_heap *h, size_t pos)
{
    copy(h->tmp, at(h, pos), h->esz);
    if (pos > 0 && h->less(h->tmp, at(h, (pos - 1) / 2), h->ctx))
        sift_up(h, pos);
    else
        sift_down(h, pos);
}

void cf_heap_clear(cf_heap *h) { h->len = 0; }
