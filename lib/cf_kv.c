/* cf_kv.c: the store itself: the hash table and its probes, the expiry
 * heap, the key arena, incremental growth (doubling) and the public
 * operations. Saving and loading live in cf_kv_save.c, table memory in
 * cf_kv_table.c (cf_kv_int.h lists them). */
#include "cf_kv_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* find() result for an absent key; never a slot reference (indices are
 * below 2^30, so even an old-table reference is below it). */
#define KV_EMPTY UINT32_MAX

cf_kv *cf_kv_new_keyed(size_t value_size, size_t max_keys, const uint8_t key[16])
{
    cf_kv *kv = cf_kv_new(value_size, max_keys);
    if (kv && key) {
        kv->keyed = true;
        memcpy(kv->key, key, sizeof kv->key);
    }
    return kv;
}

cf_kv *cf_kv_new(size_t value_size, size_t max_keys)
{
    if (value_size > (1u << 20))
        return NULL;
    cf_kv *kv = calloc(1, sizeof *kv);
    if (!kv)
        return NULL;
    kv->value_size = value_size;
    kv->slot_size = sizeof(struct kv_slot) + ((value_size + 7) & ~(size_t)7);
    kv->max_keys = max_keys;
    kv->save_rc = 1;
    kv->cap = KV_MIN_CAP;
    kv->slots = cf_kv_alloc_slots(kv->cap, kv->slot_size);
    if (!kv->slots) {
        free(kv);
        return NULL;
    }
    return kv;
}

void cf_kv_free(cf_kv *kv)
{
    if (!kv)
        return;
    cf_kv_free_slots(kv->slots, kv->cap, kv->slot_size);
    cf_kv_free_slots(kv->old, kv->ocap, kv->slot_size);
    cf_kv_free_slots(kv->spare, kv->spare_cap, kv->slot_size);
    cf_kv_free_slots(kv->retired, kv->retired_cap, kv->slot_size);
    free(kv->heap);
    free(kv->heap_exp);
    free(kv->arena);
    free(kv);
}

/* ---- heap ---------------------------------------------------------------- */

static bool key_less(const cf_kv *kv, uint32_t a, uint32_t b)
{
    const struct kv_slot *x = slot_at(kv, a), *y = slot_at(kv, b);
    size_t n = x->klen < y->klen ? x->klen : y->klen;
    int c = n ? memcmp(slot_key(kv, x), slot_key(kv, y), n) : 0;
    if (c != 0)
        return c < 0;
    return x->klen < y->klen;
}

/* True if slot a (expiry ea) orders before slot b (expiry eb): (expiry,
 * key bytes, length). The slots are read only on an expiry tie. */
static inline bool slot_less(const cf_kv *kv, uint32_t a, int64_t ea, uint32_t b, int64_t eb)
{
    if (ea != eb)
        return ea < eb;
    return key_less(kv, a, b);
}

static inline void heap_set(cf_kv *kv, uint32_t pos, uint32_t idx, int64_t exp)
{
    kv->heap[pos] = idx;
    kv->heap_exp[pos] = exp;
    struct kv_slot *s = slot_at(kv, idx);
    s->hp = (s->hp & KV_SAVED) | (pos + 1);
}

/* Sifting reads heap[pos]'s expiry from heap_exp[pos]: whoever places or
 * changes an entry writes it there first. */
static void heap_up(cf_kv *kv, uint32_t pos)
{
    uint32_t idx = kv->heap[pos];
    int64_t e = kv->heap_exp[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!slot_less(kv, idx, e, kv->heap[parent], kv->heap_exp[parent]))
            break;
        heap_set(kv, pos, kv->heap[parent], kv->heap_exp[parent]);
        pos = parent;
    }
    heap_set(kv, pos, idx, e);
}

void cf_kv_heap_down(cf_kv *kv, uint32_t pos)
{
    uint32_t n = kv->count;
    uint32_t idx = kv->heap[pos];
    int64_t e = kv->heap_exp[pos];
    for (;;) {
        uint32_t c = 2 * pos + 1;
        if (c >= n)
            break;
        if (c + 1 < n &&
            slot_less(kv, kv->heap[c + 1], kv->heap_exp[c + 1], kv->heap[c], kv->heap_exp[c]))
            c++;
        if (!slot_less(kv, kv->heap[c], kv->heap_exp[c], idx, e))
            break;
        heap_set(kv, pos, kv->heap[c], kv->heap_exp[c]);
        pos = c;
    }
    heap_set(kv, pos, idx, e);
}

static void heap_fix(cf_kv *kv, uint32_t pos)
{
    uint32_t up = (pos - 1) / 2;
    if (pos > 0 &&
        slot_less(kv, kv->heap[pos], kv->heap_exp[pos], kv->heap[up], kv->heap_exp[up]))
        heap_up(kv, pos);
    else
        cf_kv_heap_down(kv, pos);
}

/* ---- probing ------------------------------------------------------------- */

/* The low 32 bits of the hash of an entry in the table (the home slot's
 * bits): stored for arena keys, recomputed from the inline bytes otherwise. */
static inline uint32_t slot_hash_lo(const cf_kv *kv, const struct kv_slot *s)
{
    if (s->klen > KV_INLINE_KEY)
        return arena_hash(s);
    return (uint32_t)key_hash(kv, slot_key(kv, s), s->klen);
}

/* Home slot of an entry already in the table. */
static inline uint32_t slot_home(const cf_kv *kv, const struct kv_slot *s)
{
    return slot_hash_lo(kv, s) & (kv->cap - 1);
}

/* Where the old table's probe for hash h begins. Migration empties it from
 * slot 0 up to kv->mig (exclusive), so a home slot below mig starts a run of
 * KV_MOVED slots: an entry still there sits at mig or above, on the same
 * unbroken run (a run that wrapped past the end to reach it would have ended
 * below the home slot, in the moved part), so the probe may start at mig.
 * It skips cold slots that cannot match (half the old-table probes of a
 * doubling) for mig's, which migration just touched. */
static inline uint32_t old_probe_start(const cf_kv *kv, uint64_t h)
{
    uint32_t i = (uint32_t)h & (kv->ocap - 1);
    return i < kv->mig ? kv->mig : i;
}

/* Reference of the key's slot (new table first, then the old one during a
 * doubling), or KV_EMPTY. */
static uint32_t find(const cf_kv *kv, uint64_t h, const void *key, size_t len)
{
    uint32_t mask = kv->cap - 1;
    for (uint32_t i = (uint32_t)h & mask;; i = (i + 1) & mask) {
        const struct kv_slot *s = raw_slot(kv->slots, kv->slot_size, i);
        if (s->hp == KV_HP_EMPTY)
            break;
        if (slot_matches(kv, s, h, key, len))
            return cur_ref(kv, i);
    }
    if (!kv->old)
        return KV_EMPTY;
    /* The old table only loses entries (to KV_MOVED), so the probe
     * sequence of every entry still in it is intact. */
    mask = kv->ocap - 1;
    for (uint32_t i = old_probe_start(kv, h);; i = (i + 1) & mask) {
        const struct kv_slot *s = raw_slot(kv->old, kv->slot_size, i);
        if (s->hp == KV_HP_EMPTY)
            return KV_EMPTY;
        if (s->hp != KV_MOVED && slot_matches(kv, s, h, key, len))
            return i | (kv->gen ^ KV_GEN);
    }
}

/* An empty slot of the new table for hash h. */
static uint32_t find_empty(const cf_kv *kv, uint64_t h)
{
    uint32_t mask = kv->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    while (raw_slot(kv->slots, kv->slot_size, i)->hp != KV_HP_EMPTY)
        i = (i + 1) & mask;
    return i;
}

/* The old table once its last entry moved: freed now, unless the owner
 * opted in to free it outside its lock (cf_kv_hand_out_retired), then kept
 * for it (cf_kv_take_retired). One not taken by then is freed here: an
 * owner that does not take them (a replay) frees each at the next
 * doubling's end instead of at its own. */
static void retire(cf_kv *kv)
{
    if (!kv->hand_out) {
        cf_kv_free_slots(kv->old, kv->ocap, kv->slot_size);
        return;
    }
    cf_kv_free_slots(kv->retired, kv->retired_cap, kv->slot_size);
    kv->retired = kv->old;
    kv->retired_cap = kv->ocap;
}

/* Moves the entries of the next `budget` old slots to the new table (their
 * heap references follow) and retires the old table after its last slot.
 * Returns how many entries moved. */
static uint32_t migrate(cf_kv *kv, uint32_t budget)
{
    uint32_t moved = 0;
    /* The entries of old slot i go to new slot i or i + ocap (or a little
     * after, probing): the next step's destinations are known now. Loading
     * them a step ahead takes the miss off find_empty's first probe (53% of
     * cf_kv_put_hashed's samples in lib_bench were that load). */
    if (kv->old && budget == CF_KV_MIGRATE_STEP && kv->mig + 2 * budget <= kv->ocap) {
        uint32_t next = kv->mig + budget;
        size_t span = (size_t)budget * kv->slot_size;
        const char *lo = (const char *)raw_slot(kv->slots, kv->slot_size, next);
        const char *hi = (const char *)raw_slot(kv->slots, kv->slot_size, next + kv->ocap);
        for (size_t off = 0; off < span; off += 64) {
            __builtin_prefetch(lo + off, 1);
            __builtin_prefetch(hi + off, 1);
        }
        /* and the heap references those entries will rewrite (random) */
        for (uint32_t i = next; i < next + budget; i++) {
            const struct kv_slot *s = raw_slot(kv->old, kv->slot_size, i);
            if (slot_live(s))
                __builtin_prefetch(&kv->heap[slot_pos(s)], 1);
        }
    }
    while (kv->old && budget--) {
        struct kv_slot *s = raw_slot(kv->old, kv->slot_size, kv->mig);
        if (slot_live(s)) {
            save_pending(kv, s);
            uint32_t j = find_empty(kv, slot_hash_lo(kv, s));
            memcpy(raw_slot(kv->slots, kv->slot_size, j), s, kv->slot_size);
            kv->heap[slot_pos(s)] = cur_ref(kv, j);
            s->hp = KV_MOVED;
            moved++;
        }
        if (++kv->mig == kv->ocap) {
            for (int k = 0; k < 2; k++)
                if (kv->save_scan[k].table == kv->old)
                    kv->save_scan[k].table = NULL;
            retire(kv);
            kv->old = NULL;
            kv->ocap = kv->mig = 0;
        }
    }
    return moved;
}

/* Starts doubling the table: the current one becomes the old table, which
 * later puts empty step by step (migrate). A doubling still under way is
 * finished first; that cannot happen through puts alone (a doubling ends
 * after cap / CF_KV_MIGRATE_STEP puts, the next one is due after more than
 * cap / 2), so it never breaks the per-put bound. */
static int grow(cf_kv *kv)
{
    if (kv->cap > (UINT32_MAX >> 2))
        return -ENOMEM;
    uint32_t ncap = kv->cap * 2;
    uint8_t *nslots;
    if (kv->spare && kv->spare_cap == ncap) {
        nslots = kv->spare;
        kv->spare = NULL;
        kv->spare_cap = 0;
    } else {
        nslots = cf_kv_alloc_slots(ncap, kv->slot_size);
    }
    if (!nslots)
        return -ENOMEM;
    if (kv->old)
        migrate(kv, UINT32_MAX);
    kv->old = kv->slots;
    kv->ocap = kv->cap;
    kv->mig = 0;
    kv->gen ^= KV_GEN; /* every reference in the heap now names the old table */
    kv->slots = nslots;
    kv->cap = ncap;
    kv->grows++;
    return 0;
}

/* Rewrites the arena without the garbage. Amortized O(1) per deleted byte:
 * it runs only once garbage exceeds the live bytes. */
static void arena_compact(cf_kv *kv)
{
    size_t live = kv->arena_len - kv->arena_garbage;
    uint8_t *na = live ? malloc(live) : NULL;
    if (live && !na)
        return; /* keep the garbage; correctness does not depend on compaction */
    size_t len = 0;
    for (int t = 0; t < 2; t++) {
        uint8_t *table = t ? kv->old : kv->slots;
        uint32_t cap = t ? kv->ocap : kv->cap;
        for (uint32_t i = 0; table && i < cap; i++) {
            struct kv_slot *s = raw_slot(table, kv->slot_size, i);
            if (!slot_live(s) || s->klen <= KV_INLINE_KEY)
                continue;
            memcpy(na + len, kv->arena + arena_off(s), s->klen);
            uint32_t off = (uint32_t)len;
            memcpy(s->key, &off, sizeof off);
            len += s->klen;
        }
    }
    free(kv->arena);
    kv->arena = na;
    kv->arena_len = len;
    kv->arena_cap = live;
    kv->arena_garbage = 0;
}

static void backward_shift(cf_kv *kv, uint32_t i);

/* Removes the entry in slot i: heap first, then backward-shift deletion so no
 * tombstones are needed and probe sequences stay short. An entry of the old
 * table (during a doubling) leaves KV_MOVED instead: nothing is inserted
 * there, and the table is freed once migrated. */
static void remove_slot(cf_kv *kv, uint32_t i, bool may_compact)
{
    struct kv_slot *s = slot_at(kv, i);
    save_pending(kv, s);
    uint32_t pos = slot_pos(s);
    if (s->klen > KV_INLINE_KEY)
        kv->arena_garbage += s->klen;
    kv->count--;
    bool old = ref_is_old(kv, i);
    uint32_t gone = old ? KV_MOVED : KV_HP_EMPTY;
    if (pos != kv->count) {
        heap_set(kv, pos, kv->heap[kv->count], kv->heap_exp[kv->count]);
        s->hp = gone; /* no longer reachable from the heap */
        heap_fix(kv, pos);
    }
    if (old)
        s->hp = KV_MOVED;
    else
        backward_shift(kv, i & ~KV_GEN);
    if (may_compact && kv->arena_garbage > 4096 && kv->arena_garbage * 2 > kv->arena_len)
        arena_compact(kv);
}

/* Closes the gap at slot i of the new table: later entries of its cluster
 * that may live closer to their home slot move back. */
static void backward_shift(cf_kv *kv, uint32_t i)
{
    uint32_t mask = kv->cap - 1;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        struct kv_slot *t = raw_slot(kv->slots, kv->slot_size, j);
        if (t->hp == KV_HP_EMPTY)
            break;
        uint32_t home = slot_home(kv, t);
        if (((j - home) & mask) >= ((j - i) & mask)) {
            save_pending(kv, t);
            memcpy(raw_slot(kv->slots, kv->slot_size, i), t, kv->slot_size);
            kv->heap[slot_pos(t)] = cur_ref(kv, i);
            i = j;
        }
    }
    raw_slot(kv->slots, kv->slot_size, i)->hp = KV_HP_EMPTY;
}

int cf_kv_arena_reserve(cf_kv *kv, size_t extra)
{
    if (kv->arena_len + extra > UINT32_MAX)
        return -ENOMEM;
    if (kv->arena_len + extra <= kv->arena_cap)
        return 0;
    /* 1.5x growth: the arena is the largest part for long keys, so its
     * slack is what counts in bytes per key. */
    size_t ncap = kv->arena_cap ? kv->arena_cap + kv->arena_cap / 2 : 256;
    if (ncap < kv->arena_len + extra)
        ncap = kv->arena_len + extra;
    uint8_t *na = realloc(kv->arena, ncap);
    if (!na)
        return -ENOMEM;
    kv->arena = na;
    kv->arena_cap = ncap;
    return 0;
}

/* ---- public -------------------------------------------------------------- */

void *cf_kv_get(const cf_kv *kv, const void *key, size_t key_len, int64_t *ret_expiry)
{
    if (key_len > CF_KV_MAX_KEY)
        return NULL;
    uint64_t h = key_hash(kv, key, key_len);
    uint32_t i = find(kv, h, key, key_len);
    if (i == KV_EMPTY)
        return NULL;
    struct kv_slot *s = slot_at(kv, i);
    /* The caller may write the value through the pointer: save it first.
     * (The store is never defined const; the const is the API's promise
     * outside a save.) */
    if (kv->value_size)
        save_pending((cf_kv *)(uintptr_t)kv, s);
    if (ret_expiry)
        *ret_expiry = s->expiry;
    return slot_value(s);
}

uint64_t cf_kv_hash(const cf_kv *kv, const void *key, size_t key_len)
{
    return key_hash(kv, key, key_len);
}

/* The slot of the current table where the probe for hash h begins. Not
 * slot_at(): a bare index is not a reference (it lacks the generation bit),
 * and after an odd number of doublings slot_at() took it for an old-table
 * one, so the prefetch went to kv->old (NULL once the doubling was done)
 * and the sequencer's dedup look-ahead loaded nothing (issue 15). */
static inline const struct kv_slot *home_slot(const cf_kv *kv, uint64_t h)
{
    return raw_slot(kv->slots, kv->slot_size, (uint32_t)h & (kv->cap - 1));
}

void cf_kv_prefetch(const cf_kv *kv, uint64_t h)
{
    /* Three lines from the home slot: a key that is not there (the usual
     * dedup check: a new id) probes on to an empty slot, 1/2 (1 + 1/(1 -
     * a)^2) slots of 32 bytes at load a (a growing table goes through
     * 0.375-0.75): 3.6 at 0.6, 8 at 3/4. The third line (and the old
     * table's second) measured +4-7% per CPU-second in lib_bench. */
    const char *home = (const char *)home_slot(kv, h);
    __builtin_prefetch(home);
    __builtin_prefetch(home + 64);
    __builtin_prefetch(home + 128);
    /* During a doubling a key not yet moved is found in the old table. */
    if (kv->old) {
        const char *o = (const char *)raw_slot(kv->old, kv->slot_size, old_probe_start(kv, h));
        __builtin_prefetch(o);
        __builtin_prefetch(o + 64);
    }
}

const void *cf_kv_prefetch_addr(const cf_kv *kv, uint64_t h)
{
    return home_slot(kv, h);
}

int cf_kv_put(cf_kv *kv, const void *key, size_t key_len, int64_t expiry,
              cf_kv_entry_fn on_evict, void *ctx, void **ret_value)
{
    if (key_len > CF_KV_MAX_KEY)
        return -EINVAL;
    return cf_kv_put_hashed(kv, key, key_len, key_hash(kv, key, key_len), expiry, on_evict, ctx,
                            ret_value);
}

int cf_kv_put_hashed(cf_kv *kv, const void *key, size_t key_len, uint64_t h, int64_t expiry,
                     cf_kv_entry_fn on_evict, void *ctx, void **ret_value)
{
    if (key_len > CF_KV_MAX_KEY)
        return -EINVAL;
    if (kv->save_out && kv->save_put_step)
        (void)cf_kv_save_step(kv, kv->save_put_step);
    uint32_t i = find(kv, h, key, key_len);
    if (i != KV_EMPTY) {
        if (ret_value) {
            if (kv->value_size)
                save_pending(kv, slot_at(kv, i)); /* the caller may change it */
            *ret_value = slot_value(slot_at(kv, i));
        }
        return 0;
    }
    /* Garbage left by evictions is compacted here, before the arena room
     * for this key is reserved (so the eviction below cannot undo it). */
    if (kv->arena_garbage > 4096 && kv->arena_garbage * 2 > kv->arena_len)
        arena_compact(kv);
    /* Reserve everything that can fail before evicting, so a failed put
     * leaves the store unchanged. */
    if (heap_reserve(kv, kv->count + 1) < 0)
        return -ENOMEM;
    if (key_len > KV_INLINE_KEY && cf_kv_arena_reserve(kv, key_len) < 0)
        return -ENOMEM;
    bool evict = kv->max_keys && kv->count >= kv->max_keys;
    if (!evict && (uint64_t)(kv->count + 1) * 4 > (uint64_t)kv->cap * 3 && grow(kv) < 0)
        return -ENOMEM;
    if (kv->old) {
        uint32_t moved = migrate(kv, CF_KV_MIGRATE_STEP);
        if (moved > kv->max_moved)
            kv->max_moved = moved;
    }
    if (evict) {
        struct kv_slot *m = slot_at(kv, kv->heap[0]);
        if (on_evict)
            on_evict(ctx, slot_key(kv, m), m->klen, slot_value(m), m->expiry);
        /* No compaction here: the arena room reserved above must stay. */
        remove_slot(kv, kv->heap[0], false);
        kv->evictions++;
    }
    i = cur_ref(kv, find_empty(kv, h));
    struct kv_slot *s = slot_at(kv, i);
    s->tag = tag_of(h);
    s->klen = (uint16_t)key_len;
    s->expiry = expiry;
    memset(s->key, 0, sizeof s->key);
    if (key_len <= KV_INLINE_KEY) {
        if (key_len)
            memcpy(s->key, key, key_len);
    } else {
        uint32_t off = (uint32_t)kv->arena_len;
        memcpy(kv->arena + off, key, key_len);
        kv->arena_len += key_len;
        memcpy(s->key, &off, sizeof off);
        uint32_t lo = (uint32_t)h;
        memcpy(s->key + sizeof off, &lo, sizeof lo);
    }
    memset(slot_value(s), 0, kv->slot_size - sizeof(struct kv_slot));
    kv->heap[kv->count] = i;
    kv->heap_exp[kv->count] = expiry;
    s->hp = (kv->count + 1) | kv->save_bit; /* not part of a save under way */
    kv->count++;
    heap_up(kv, slot_pos(s));
    if (ret_value)
        *ret_value = slot_value(slot_at(kv, i));
    return 1;
}

int cf_kv_set_expiry(cf_kv *kv, const void *key, size_t key_len, int64_t expiry)
{
    if (key_len > CF_KV_MAX_KEY)
        return -ENOENT;
    uint64_t h = key_hash(kv, key, key_len);
    uint32_t i = find(kv, h, key, key_len);
    if (i == KV_EMPTY)
        return -ENOENT;
    struct kv_slot *s = slot_at(kv, i);
    save_pending(kv, s);
    s->expiry = expiry;
    kv->heap_exp[slot_pos(s)] = expiry;
    heap_fix(kv, slot_pos(s));
    return 0;
}

int cf_kv_delete(cf_kv *kv, const void *key, size_t key_len)
{
    if (key_len > CF_KV_MAX_KEY)
        return -ENOENT;
    uint64_t h = key_hash(kv, key, key_len);
    uint32_t i = find(kv, h, key, key_len);
    if (i == KV_EMPTY)
        return -ENOENT;
    remove_slot(kv, i, true);
    return 0;
}

size_t cf_kv_expire(cf_kv *kv, int64_t now, cf_kv_entry_fn fn, void *ctx)
{
    size_t n = 0;
    while (kv->count > 0 && kv->heap_exp[0] <= now) {
        struct kv_slot *m = slot_at(kv, kv->heap[0]);
        if (fn)
            fn(ctx, slot_key(kv, m), m->klen, slot_value(m), m->expiry);
        remove_slot(kv, kv->heap[0], true);
        n++;
    }
    return n;
}

int64_t cf_kv_next_expiry(const cf_kv *kv)
{
    return kv->count ? kv->heap_exp[0] : INT64_MAX;
}

void cf_kv_foreach(const cf_kv *kv, cf_kv_entry_fn fn, void *ctx)
{
    for (uint32_t i = 0; i < kv->cap; i++) {
        struct kv_slot *s = raw_slot(kv->slots, kv->slot_size, i);
        if (slot_live(s))
            fn(ctx, slot_key(kv, s), s->klen, slot_value(s), s->expiry);
    }
    for (uint32_t i = 0; kv->old && i < kv->ocap; i++) {
        struct kv_slot *s = raw_slot(kv->old, kv->slot_size, i);
        if (slot_live(s))
            fn(ctx, slot_key(kv, s), s->klen, slot_value(s), s->expiry);
    }
}

size_t cf_kv_count(const cf_kv *kv)
{
    return kv->count;
}

uint64_t cf_kv_evictions(const cf_kv *kv)
{
    return kv->evictions;
}

size_t cf_kv_memory(const cf_kv *kv)
{
    return sizeof *kv +
           ((size_t)kv->cap + kv->ocap + kv->spare_cap + kv->retired_cap) * kv->slot_size +
           (size_t)kv->heap_cap * (sizeof *kv->heap + sizeof *kv->heap_exp) + kv->arena_cap;
}

size_t cf_kv_max_keys(const cf_kv *kv)
{
    return kv->max_keys;
}

uint64_t cf_kv_load_probes(const cf_kv *kv)
{
    return kv->load_probes;
}

uint32_t cf_kv_grows(const cf_kv *kv)
{
    return kv->grows;
}

bool cf_kv_migrating(const cf_kv *kv)
{
    return kv->old != NULL;
}

uint32_t cf_kv_max_moved(const cf_kv *kv)
{
    return kv->max_moved;
}
