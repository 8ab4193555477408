/* cf_kv_save.c: the store saved and loaded: the whole save, the incremental
 * save (cf_kv_save_begin/step/finish), the load and the bulk build
 * (cf_kv_bulk_*). */
#include "cf_kv_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define KV_MAGIC 0x564b4643u /* "CFKV" */
#define KV_VERSION 1u

/* ---- save and load ------------------------------------------------------- */

static inline uint8_t *put_le32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 4;
}

static inline uint8_t *put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return p + 8;
}

/* Appends one entry in the layout of cf_kv_save (the load reads entries in
 * any order): what cf_buf_put_str(key), cf_buf_put_i64(expiry),
 * cf_buf_put(value) would append, with one capacity check (the room is
 * reserved at the start of a save, so that check is all it costs). */
void cf_kv_write_entry(const cf_kv *kv, const struct kv_slot *s, cf_buf *out)
{
    if (cf_buf_reserve(out, 4 + (size_t)s->klen + 8 + kv->value_size) < 0)
        return; /* out->oom is set: the save ends in -ENOMEM */
    uint8_t *p = out->data + out->len, *start = p;
    p = put_le32(p, s->klen);
    memcpy(p, slot_key(kv, s), s->klen);
    p += s->klen;
    p = put_le64(p, (uint64_t)s->expiry);
    if (kv->value_size)
        memcpy(p, (const uint8_t *)s + sizeof(struct kv_slot), kv->value_size);
    p += kv->value_size;
    out->len += (size_t)(p - start);
}

/* Writes the live entries of one table at p (room reserved by the caller):
 * what cf_buf_put_str(key), cf_buf_put_i64(expiry), cf_buf_put(value) would
 * append, without a capacity check and call per field. */
static uint8_t *save_table(const cf_kv *kv, const uint8_t *table, uint32_t cap, uint8_t *p)
{
    for (uint32_t i = 0; table && i < cap; i++) {
        const struct kv_slot *s = raw_slot(table, kv->slot_size, i);
        if (!slot_live(s))
            continue;
        p = put_le32(p, s->klen);
        memcpy(p, slot_key(kv, s), s->klen);
        p += s->klen;
        p = put_le64(p, (uint64_t)s->expiry);
        memcpy(p, slot_value((struct kv_slot *)(uintptr_t)s), kv->value_size);
        p += kv->value_size;
    }
    return p;
}

/* The save's header, and room for every entry after it: an upper bound,
 * every key inline at full length or in the arena. 0 or -ENOMEM. */
static int save_header(const cf_kv *kv, cf_buf *out)
{
    cf_buf_put_u32(out, KV_MAGIC);
    cf_buf_put_u32(out, KV_VERSION);
    cf_buf_put_u32(out, (uint32_t)kv->value_size);
    cf_buf_put_u64(out, kv->evictions);
    cf_buf_put_u32(out, kv->count);
    size_t need = (size_t)kv->count * (4 + KV_INLINE_KEY + 8 + kv->value_size) +
                  (kv->arena_len - kv->arena_garbage);
    return cf_buf_reserve(out, need) < 0 ? -ENOMEM : 0;
}

/* One reservation for the whole store, then plain stores: growing the
 * buffer by doubling copied it about twice over. */
int cf_kv_save(const cf_kv *kv, cf_buf *out)
{
    if (save_header(kv, out) < 0)
        return -ENOMEM;
    uint8_t *start = out->data + out->len;
    uint8_t *p = save_table(kv, kv->slots, kv->cap, start);
    p = save_table(kv, kv->old, kv->ocap, p);
    out->len += (size_t)(p - start);
    return out->oom ? -ENOMEM : 0;
}

/* Sizes the table for n keys at once: the smallest power of two that holds
 * them without growing (the load factor bound of cf_kv_put_hashed). */
static int presize(cf_kv *kv, uint32_t n)
{
    uint32_t cap = KV_MIN_CAP;
    while ((uint64_t)n * 4 > (uint64_t)cap * 3) {
        if (cap > (UINT32_MAX >> 2))
            return -ENOMEM;
        cap *= 2;
    }
    if (cap > kv->cap) {
        uint8_t *slots = cf_kv_alloc_slots(cap, kv->slot_size);
        if (!slots)
            return -ENOMEM;
        cf_kv_free_slots(kv->slots, kv->cap, kv->slot_size);
        kv->slots = slots;
        kv->cap = cap;
    }
    return heap_reserve(kv, n ? n : 1);
}

/* Bulk insert while loading: the table is presized and the heap is built
 * once at the end, so this is one probe sequence per key. Returns 1, or -1
 * for a key already present (malformed input) or -ENOMEM. */
static int load_insert(cf_kv *kv, const void *key, size_t len, int64_t expiry, void **ret_value)
{
    if (len > CF_KV_MAX_KEY)
        return -1;
    uint64_t h = key_hash(kv, key, len);
    uint32_t mask = kv->cap - 1;
    uint32_t i = (uint32_t)h & mask;
    for (;; i = (i + 1) & mask) {
        kv->load_probes++;
        const struct kv_slot *t = raw_slot(kv->slots, kv->slot_size, i);
        if (t->hp == KV_HP_EMPTY)
            break;
        if (slot_matches(kv, t, h, key, len))
            return -1;
    }
    if (len > KV_INLINE_KEY && cf_kv_arena_reserve(kv, len) < 0)
        return -ENOMEM;
    struct kv_slot *s = raw_slot(kv->slots, kv->slot_size, i);
    s->tag = tag_of(h);
    s->klen = (uint16_t)len;
    s->expiry = expiry;
    memset(s->key, 0, sizeof s->key);
    if (len <= KV_INLINE_KEY) {
        if (len)
            memcpy(s->key, key, len);
    } else {
        uint32_t off = (uint32_t)kv->arena_len;
        memcpy(kv->arena + off, key, len);
        kv->arena_len += len;
        memcpy(s->key, &off, sizeof off);
        uint32_t lo = (uint32_t)h;
        memcpy(s->key + sizeof off, &lo, sizeof lo);
    }
    memset(slot_value(s), 0, kv->slot_size - sizeof(struct kv_slot));
    kv->heap[kv->count] = cur_ref(kv, i);
    kv->heap_exp[kv->count] = expiry;
    /* Born saved, as a put's entry is: a bulk rebuild may fill a store
     * whose save_bit earlier saves flipped. */
    s->hp = (kv->count + 1) | kv->save_bit;
    kv->count++;
    *ret_value = slot_value(s);
    return 1;
}

cf_kv *cf_kv_load(size_t value_size, size_t max_keys, cf_reader *in)
{
    return cf_kv_load_keyed(value_size, max_keys, NULL, in);
}

/* Linear time: the table is sized for every saved key before the first
 * insert. Inserting keys in the saved table's slot order into a smaller,
 * growing table is quadratic under linear probing (each pass over the
 * smaller table lays its keys onto the clusters of the previous one), which
 * made a 2.4M-id restart take over a minute. */
cf_kv *cf_kv_load_keyed(size_t value_size, size_t max_keys, const uint8_t key[16],
                        cf_reader *in)
{
    uint32_t magic, version, vsize, count;
    uint64_t evictions;
    if (!cf_get_u32(in, &magic) || !cf_get_u32(in, &version) || !cf_get_u32(in, &vsize) ||
        !cf_get_u64(in, &evictions) || !cf_get_u32(in, &count))
        return NULL;
    if (magic != KV_MAGIC || version != KV_VERSION || vsize != value_size)
        return NULL;
    /* Each entry takes at least 12 bytes (length, expiry): a count the input
     * cannot hold is malformed, not a reason to allocate. */
    if ((uint64_t)count * 12 > in->left)
        return NULL;
    cf_kv *kv = cf_kv_new_keyed(value_size, max_keys, key);
    if (!kv)
        return NULL;
    /* More keys than the bound: they go through put, which evicts (rare: the
     * bound was lowered between runs). */
    bool bulk = !max_keys || count <= max_keys;
    if (presize(kv, bulk ? count : (uint32_t)max_keys) < 0)
        goto fail;
    for (uint32_t k = 0; k < count; k++) {
        const char *kb;
        size_t klen;
        int64_t expiry;
        const uint8_t *val = NULL;
        if (!cf_get_str(in, &kb, &klen) || !cf_get_i64(in, &expiry))
            goto fail;
        if (value_size) {
            if (in->left < value_size) {
                in->bad = true;
                goto fail;
            }
            val = in->p;
            in->p += value_size;
            in->left -= value_size;
        }
        void *v;
        int r = bulk ? load_insert(kv, kb, klen, expiry, &v)
                     : cf_kv_put(kv, kb, klen, expiry, NULL, NULL, &v);
        if (r != 1)
            goto fail; /* OOM, bad key, or a duplicate key: malformed */
        if (value_size)
            memcpy(v, val, value_size);
    }
    /* Bottom-up heap construction: O(n) instead of n sift-ups. */
    if (bulk)
        for (uint32_t pos = kv->count / 2; pos-- > 0;)
            cf_kv_heap_down(kv, pos);
    /* Evictions made while loading into a smaller bound are counted too. */
    kv->evictions += evictions;
    return kv;
fail:
    cf_kv_free(kv);
    return NULL;
}

void cf_kv_add_evictions(cf_kv *kv, uint64_t n)
{
    kv->evictions += n;
}

int cf_kv_bulk_begin(cf_kv *kv, size_t n)
{
    if (kv->save_out)
        return -EBUSY;  /* a save under way refers to the slots freed here */
    uint8_t *slots = cf_kv_alloc_slots(KV_MIN_CAP, kv->slot_size);
    if (!slots)
        return -ENOMEM;
    cf_kv_free_slots(kv->slots, kv->cap, kv->slot_size);
    cf_kv_free_slots(kv->old, kv->ocap, kv->slot_size);
    free(kv->heap);
    free(kv->heap_exp);
    free(kv->arena);
    kv->old = kv->arena = NULL;
    kv->heap = NULL;
    kv->heap_exp = NULL;
    kv->count = kv->heap_cap = kv->ocap = kv->mig = 0;
    kv->arena_len = kv->arena_cap = kv->arena_garbage = 0;
    kv->slots = slots;
    kv->cap = KV_MIN_CAP;
    if (n == 0)
        return 0;
    if (n > UINT32_MAX >> 2 || presize(kv, (uint32_t)n) < 0)
        return -ENOMEM;
    /* Exactly n heap entries: cf_kv_bulk_add refuses the (n+1)th. presize
     * reserved at least n in both arrays, so a shrink that fails leaves
     * them larger and heap_cap = n is still within both. */
    uint32_t *heap = realloc(kv->heap, n * sizeof *heap);
    if (heap)
        kv->heap = heap;
    int64_t *exp = realloc(kv->heap_exp, n * sizeof *exp);
    if (exp)
        kv->heap_exp = exp;
    kv->heap_cap = (uint32_t)n;
    return 0;
}

int cf_kv_bulk_add(cf_kv *kv, const void *key, size_t key_len, int64_t expiry)
{
    /* Within the heap presize reserved and the table's load bound: the
     * probe below always finds an empty slot. */
    if (kv->count >= kv->heap_cap || (uint64_t)(kv->count + 1) * 4 > (uint64_t)kv->cap * 3)
        return -EINVAL;
    void *v;
    int r = load_insert(kv, key, key_len, expiry, &v);
    return r == -1 ? -EINVAL : r;
}

void cf_kv_bulk_end(cf_kv *kv)
{
    for (uint32_t pos = kv->count / 2; pos-- > 0;)
        cf_kv_heap_down(kv, pos);
}

/* ---- incremental save ---------------------------------------------------- */

int cf_kv_save_begin(cf_kv *kv, cf_buf *out, uint32_t put_step)
{
    if (kv->save_out)
        return -EBUSY;
    /* The whole save's room at once: growing by doubling later copied the
     * buffer inside a step, 10 ms for 1M ids, and a step is a hold of the
     * sequencer's lock. A large reservation is mapped, not touched, so this
     * costs little here. */
    if (save_header(kv, out) < 0 || out->oom)
        return -ENOMEM;
    /* The cut: every live entry turns "not saved" at once. */
    kv->save_bit ^= KV_SAVED;
    kv->save_out = out;
    kv->save_put_step = put_step;
    kv->save_left = kv->count;
    kv->save_scan[0].table = kv->slots;
    kv->save_scan[0].cap = kv->cap;
    kv->save_scan[0].cur = 0;
    kv->save_scan[1].table = kv->old;
    kv->save_scan[1].cap = kv->ocap;
    kv->save_scan[1].cur = 0;
    return 0;
}

int cf_kv_save_step(cf_kv *kv, size_t budget)
{
    if (!kv->save_out)
        return kv->save_rc;
    for (int k = 0; k < 2 && kv->save_left > 0; k++) {
        while (budget > 0 && kv->save_scan[k].table &&
               kv->save_scan[k].cur < kv->save_scan[k].cap) {
            struct kv_slot *s = raw_slot(kv->save_scan[k].table, kv->slot_size,
                                         kv->save_scan[k].cur++);
            save_pending(kv, s);
            budget--;
        }
        if (budget == 0)
            break;
    }
    bool done = kv->save_left == 0;
    if (!done) {
        done = true;
        for (int k = 0; k < 2; k++)
            if (kv->save_scan[k].table && kv->save_scan[k].cur < kv->save_scan[k].cap)
                done = false;
    }
    if (!done)
        return 0;
    cf_buf *out = kv->save_out;
    kv->save_out = NULL;
    kv->save_scan[0].table = kv->save_scan[1].table = NULL;
    /* Every entry of the cut is written (save_left counts them down; a
     * scan that ended short of that would be a broken invariant). */
    kv->save_rc = kv->save_left != 0 ? -EIO : out->oom ? -ENOMEM : 1;
    return kv->save_rc;
}

int cf_kv_save_finish(cf_kv *kv)
{
    int rc;
    while ((rc = cf_kv_save_step(kv, SIZE_MAX)) == 0)
        ;
    return rc;
}

bool cf_kv_saving(const cf_kv *kv)
{
    return kv->save_out != NULL;
}
