/* cf_kv_table.c: the memory of the stores' tables: the allocator a process
 * may install for large ones, the spare table handed in ahead of a
 * doubling (cf_kv_next_table, cf_kv_offer_table), and the old table handed
 * out after one (cf_kv_take_retired). */
#include "cf_kv_int.h"

#include <stdlib.h>

/* Large tables on memory the process chooses (cf_kv_set_table_mem), e.g.
 * transparent huge pages (lib_bench --huge). A random probe
 * of a table of tens of MB misses the TLB on 4 KiB pages nearly every
 * time, and the page walk stalls even a prefetch (cf_kv_prefetch's
 * prefetch instruction held 95% of its samples in lib_bench's profile).
 * lib/ makes no system call itself: without an allocator, calloc. */
#define TABLE_BIG ((size_t)4 << 20)

static void *(*table_alloc_fn)(size_t bytes);
static void (*table_free_fn)(void *p, size_t bytes);

void cf_kv_set_table_mem(void *(*alloc)(size_t bytes), void (*free_fn)(void *p, size_t bytes))
{
    table_alloc_fn = alloc && free_fn ? alloc : NULL;
    table_free_fn = alloc && free_fn ? free_fn : NULL;
}

void *cf_kv_table_alloc(size_t bytes)
{
    if (bytes >= TABLE_BIG && table_alloc_fn)
        return table_alloc_fn(bytes);
    return calloc(1, bytes ? bytes : 1);
}

void cf_kv_table_free(void *p, size_t bytes)
{
    if (!p)
        return;
    if (bytes >= TABLE_BIG && table_free_fn)
        table_free_fn(p, bytes);
    else
        free(p);
}

/* All slots empty (hp 0). */
uint8_t *cf_kv_alloc_slots(uint32_t cap, size_t slot_size)
{
    return cf_kv_table_alloc((size_t)cap * slot_size);
}

void cf_kv_free_slots(uint8_t *t, uint32_t cap, size_t slot_size)
{
    cf_kv_table_free(t, (size_t)cap * slot_size);
}

/* ---- the spare table ---------------------------------------------------- */

size_t cf_kv_next_table(const cf_kv *kv, uint32_t *ret_cap)
{
    /* No doubling is near while one is under way (the next is due after
     * more than cap / 2 more puts), or when the store evicts at max_keys
     * before its load factor calls for one (cf_kv_put_hashed). */
    if (kv->old || kv->cap > (UINT32_MAX >> 2) ||
        (kv->max_keys && (uint64_t)kv->max_keys * 4 <= (uint64_t)kv->cap * 3))
        return 0;
    uint32_t ncap = kv->cap * 2;
    if (kv->spare && kv->spare_cap == ncap)
        return 0;
    /* Near: past 2/3 of the count that triggers it (3/4 of cap), so a
     * caller that asks every 100 ms (the server's ticker) is in time: at
     * 375k new ids/s the window is 0.35 s at 512k slots (from 7/8 of the
     * trigger it was 0.13 s, and a loaded machine missed it). A table of
     * up to CF_KV_SPARE_EARLY bytes is asked for as soon as the last
     * doubling ended: the window of a small table is shorter than a tick,
     * and its doubling faulted 1,300-1,700 pages (3.5 ms) inside the put. */
    if ((uint64_t)ncap * kv->slot_size > CF_KV_SPARE_EARLY &&
        (uint64_t)kv->count * 2 < (uint64_t)kv->cap)
        return 0;
    *ret_cap = ncap;
    return (size_t)ncap * kv->slot_size;
}

bool cf_kv_offer_table(cf_kv *kv, void *table, uint32_t cap)
{
    if (!table)
        return false;
    /* A doubling that came first (or another offer) made it useless. */
    if (kv->old || cap != kv->cap * 2 || (kv->spare && kv->spare_cap == cap)) {
        cf_kv_free_slots(table, cap, kv->slot_size);
        return false;
    }
    cf_kv_free_slots(kv->spare, kv->spare_cap, kv->slot_size);
    kv->spare = table;
    kv->spare_cap = cap;
    return true;
}

bool cf_kv_take_retired(cf_kv *kv, void **ret_table, size_t *ret_bytes)
{
    if (!kv->retired)
        return false;
    *ret_table = kv->retired;
    *ret_bytes = (size_t)kv->retired_cap * kv->slot_size;
    kv->retired = NULL;
    kv->retired_cap = 0;
    return true;
}

void cf_kv_hand_out_retired(cf_kv *kv)
{
    kv->hand_out = true;
}

bool cf_kv_growing_table(const cf_kv *kv, void **ret_table, size_t *ret_bytes)
{
    if (!kv->old)
        return false;
    *ret_table = kv->slots;
    *ret_bytes = (size_t)kv->cap * kv->slot_size;
    return true;
}
