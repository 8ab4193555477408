/* cf_heap: the one generic binary min-heap of lib/.
 *
 * Elements are fixed-size byte blocks stored by value in one array (no
 * allocation per element). The order comes from a caller's less(): ties are
 * the caller's business, so a caller that needs a deterministic order (every
 * user in lib/ does: state must not depend on history) makes less() total.
 *
 * Position tracking (optional): when moved is not NULL it is called with an
 * element's new index every time the heap stores it somewhere, so the owner
 * can keep the index beside the element and later cf_heap_fix() it after
 * changing its key, or cf_heap_remove() it. Without it the heap is a plain
 * priority queue (push/top/pop).
 *
 * Growth: the array starts at 64 elements and doubles; cf_heap_cap() reports
 * it for memory accounting. Pure; not thread-safe. */
#ifndef CF_HEAP_H
#define CF_HEAP_H

#include <stdbool.h>
#include <stddef.h>

typedef struct cf_heap cf_heap;

/* True when a must come out before b. */
typedef bool (*cf_heap_less_fn)(const void *a, const void *b, void *ctx);
/* The element now at elem was stored at index pos. */
typedef void (*cf_heap_moved_fn)(void *elem, size_t pos, void *ctx);

/* elem_size > 0. moved may be NULL. Returns NULL on OOM or elem_size 0. */
cf_heap *cf_heap_new(size_t elem_size, cf_heap_less_fn less, cf_heap_moved_fn moved, void *ctx);
void cf_heap_free(cf_heap *h);

size_t cf_heap_len(const cf_heap *h);
/* Elements the array holds without growing. */
size_t cf_heap_cap(const cf_heap *h);

/* Makes room for extra more elements, so the pushes that follow cannot fail:
 * 0 or -ENOMEM (heap unchanged). */
int cf_heap_reserve(cf_heap *h, size_t extra);

/* Copies elem in. 0 or -ENOMEM (heap unchanged); never fails after a
 * cf_heap_reserve that covers it. O(log n). */
int cf_heap_push(cf_heap *h, const void *elem);

/* The minimum, or NULL when empty. Valid until the next modifying call. */
void *cf_heap_top(const cf_heap *h);
/* The element at index pos (< len), for owners that track positions. */
void *cf_heap_at(const cf_heap *h, size_t pos);

/* Removes the minimum, copying it to out (may be NULL). False when empty.
 * O(log n). */
bool cf_heap_pop(cf_heap *h, void *out);
/* Removes the element at index pos (< len), copying it to out (may be NULL).
 * O(log n). */
void cf_heap_remove(cf_heap *h, size_t pos, void *out);
/* Restores the order after the key of the element at pos changed, either
 * way. O(log n). */
void cf_heap_fix(cf_heap *h, size_t pos);

/* Removes every element (the array is kept). */
void cf_heap_clear(cf_heap *h);

#endif
