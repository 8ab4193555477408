/* retain: a bounded ring of owned result records (closed window results,
 * session_end records, late events) kept for queries. When full, pushing
 * evicts (frees) the oldest, so memory stays bounded by the capacity. The
 * storage grows on demand up to the capacity, so an idle ring is small.
 * Not thread-safe: one shard owns each ring. */
#ifndef CF_RETAIN_H
#define CF_RETAIN_H

#include <stddef.h>

typedef struct cf_retain cf_retain;
typedef void (*cf_retain_free_fn)(void *item);

/* capacity >= 1 items; free_fn releases an evicted or remaining item. NULL
 * on OOM. */
cf_retain *cf_retain_new(size_t capacity, cf_retain_free_fn free_fn);
/* Frees every item and the ring. Accepts NULL. */
void cf_retain_free(cf_retain *r);

/* Takes ownership of item (not NULL). If the ring is full the oldest item is
 * freed first. If growing the storage fails the oldest item is evicted
 * instead, so this never fails. O(1) amortized. */
void cf_retain_push(cf_retain *r, void *item);

size_t cf_retain_len(const cf_retain *r);
size_t cf_retain_capacity(const cf_retain *r);
/* Item i, 0 = oldest, len-1 = newest; borrowed. */
void *cf_retain_at(const cf_retain *r, size_t i);

#endif
