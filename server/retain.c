#include "retain.h"

#include <stdbool.h>
#include <stdlib.h>

struct cf_retain {
    void **items;       /* circular: items[(first + i) % alloc] */
    size_t alloc;       /* slots allocated, <= cap */
    size_t first;
    size_t len;
    size_t cap;
    cf_retain_free_fn free_fn;
};

cf_retain *cf_retain_new(size_t capacity, cf_retain_free_fn free_fn)
{
    if (capacity == 0)
        return NULL;
    cf_retain *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->cap = capacity;
    r->free_fn = free_fn;
    return r;
}

void cf_retain_free(cf_retain *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->len; i++)
        if (r->free_fn)
            r->free_fn(r->items[(r->first + i) % r->alloc]);
    free(r->items);
    free(r);
}

/* Doubles the storage (up to cap), unrolling the circle. false on OOM. */
static bool grow(cf_retain *r)
{
    size_t n = r->alloc ? r->alloc * 2 : 64;
    if (n > r->cap)
        n = r->cap;
    void **items = malloc(n * sizeof *items);
    if (!items)
        return false;
    for (size_t i = 0; i < r->len; i++)
        items[i] = r->items[(r->first + i) % r->alloc];
    free(r->items);
    r->items = items;
    r->alloc = n;
    r->first = 0;
    return true;
}

void cf_retain_push(cf_retain *r, void *item)
{
    if (r->len == r->alloc && (r->alloc == r->cap || !grow(r))) {
        if (r->alloc == 0) {        /* could not allocate anything: drop */
            if (r->free_fn)
                r->free_fn(item);
            return;
        }
        if (r->free_fn)
            r->free_fn(r->items[r->first]);
        r->items[r->first] = item;  /* the oldest slot becomes the newest */
        r->first = (r->first + 1) % r->alloc;
        return;
    }
    r->items[(r->first + r->len) % r->alloc] = item;
    r->len++;
}

size_t cf_retain_len(const cf_retain *r) { return r->len; }
size_t cf_retain_capacity(const cf_retain *r) { return r->cap; }

void *cf_retain_at(const cf_retain *r, size_t i)
{
    return i < r->len ? r->items[(r->first + i) % r->alloc] : NULL;
}
