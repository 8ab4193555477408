#include "cf_kv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"

#define KV_SEED 0x6b765f73746f7265ULL /* "kv_store" */
#define KV_INLINE_KEY 17u
/* find() result for an absent key; never a slot reference (indices are
 * below 2^30, so even an old-table reference is below it). */
#define KV_EMPTY UINT32_MAX
/* Slot states in kv_slot.hp: 0 is empty (so a table from calloc is all
 * empty without being written: a big table's pages are then touched only
 * as entries land in them, not all at once at the doubling), KV_MOVED is a
 * slot of the old table whose entry moved to the new table or was removed,
 * anything else is heap position + 1. */
#define KV_HP_EMPTY 0u
#define KV_MOVED 0x7fffffffu
/* The top bit of a live slot's hp is its "saved in this save epoch" bit
 * (incremental save, cf_kv_save_begin): heap positions are below 2^30, so
 * 31 bits hold position + 1. An empty or KV_MOVED slot has the bit clear, so
 * both are still plain compares. The bit means "saved" when it equals
 * kv->save_bit, which a save's cut flips: outside a save every live entry
 * has it equal (inserts take it, the save gives it to the rest). */
#define KV_SAVED 0x80000000u
#define KV_HP_MASK 0x7fffffffu
/* A slot reference (what the heap holds) is a slot index plus a generation
 * bit: references whose bit equals kv->gen name the current table, the
 * others the old table of a doubling under way. A doubling flips kv->gen,
 * so every reference turns into an old-table one without being rewritten
 * (rewriting them would be a pass over the heap per doubling). */
#define KV_GEN 0x80000000u
#define KV_MIN_CAP 16u
#define KV_MAGIC 0x564b4643u /* "CFKV" */
#define KV_VERSION 1u

/* Slot header; the value (value_size bytes, rounded up to 8) follows it. */
/* The full hash is not stored for inline keys: an 8-bit tag filters probes,
 * and the home slot is recomputed from the key when an entry moves (growth,
 * backward shift), which buys 17 inline key bytes (most user ids). An arena
 * key needs only 4 of those bytes for its offset, so the low 32 bits of its
 * hash ride in the next 4 for free: moving it then neither rehashes it nor
 * reads the arena (a cache miss per entry when a large store grows). */
struct kv_slot {
    int64_t expiry;
    uint32_t hp;        /* KV_HP_EMPTY, KV_MOVED, or heap position + 1 */
    uint16_t klen;
    uint8_t tag;        /* top 8 bits of cf_hash64 */
    uint8_t key[KV_INLINE_KEY]; /* the key, or its arena offset (u32) and
                                 * the low 32 bits of its hash (u32) */
};

_Static_assert(sizeof(struct kv_slot) == 32, "slot header is 32 bytes");
_Static_assert(CF_KV_MAX_KEY <= UINT16_MAX, "klen is 16 bits");
_Static_assert(KV_INLINE_KEY >= 2 * sizeof(uint32_t), "arena offset and hash fit inline");

struct cf_kv {
    uint8_t *slots;
    uint32_t cap;           /* power of two */
    uint32_t count;
    size_t slot_size;
    size_t value_size;
    size_t max_keys;
    uint64_t evictions;

    uint32_t *heap;         /* slot references, min-heap by (expiry, key) */
    /* heap_exp[i] is heap[i]'s expiry: sifting compares expiries in this
     * array instead of loading the cold slot of each parent or child (a
     * cache miss per level; heap_up was 3.8% of lib_bench). The slots stay
     * the truth: set_expiry writes both, ties still compare the keys. */
    int64_t *heap_exp;
    uint32_t heap_cap;      /* both arrays hold at least this many */

    bool keyed;             /* SipHash-1-3 under `key` instead of cf_hash64 */
    uint8_t key[16];
    uint64_t load_probes;   /* slots examined by the last cf_kv_load* */
    uint32_t grows;         /* table doublings so far */
    uint32_t max_moved;     /* most entries one put moved (migration) */

    /* Incremental doubling: while old is set, entries live in both tables.
     * Each put moves the entries of the next CF_KV_MIGRATE_STEP old slots
     * (from index mig up) into slots, so no put pays for a whole rehash
     * (a multi-second pause under the sequencer lock for a large dedup
     * table). Lookups try the new table, then the old one, where moved and
     * removed entries leave KV_MOVED so probe sequences stay unbroken; the
     * old table gets no inserts. */
    uint8_t *old;
    uint32_t ocap;
    uint32_t mig;
    uint32_t gen;           /* 0 or KV_GEN: the current table's reference bit */
    /* A zeroed table of spare_cap slots handed in ahead of the doubling that
     * needs it (cf_kv_offer_table), its pages already mapped: grow() takes
     * it instead of calloc. NULL: none. */
    uint8_t *spare;
    uint32_t spare_cap;

    /* Incremental save (cf_kv_save_begin): the tables that existed at the
     * cut, each with a cursor. Entries not yet saved never move and are
     * never removed or changed (they are written out first), so scanning
     * these tables once finds every one of them; a table the cut did not
     * see holds saved or new entries only. A table freed by the end of a
     * doubling is dropped from the scan (all its entries moved, saved). */
    cf_buf *save_out;       /* NULL: no save under way */
    uint32_t save_bit;      /* 0 or KV_SAVED: the bit value meaning "saved" */
    uint32_t save_left;     /* entries of the cut not yet written */
    int save_rc;            /* how the last save ended (cf_kv_save_step) */
    uint32_t save_put_step; /* slots each put saves (cf_kv_save_begin) */
    struct {
        const uint8_t *table;
        uint32_t cap, cur;
    } save_scan[2];

    uint8_t *arena;         /* keys longer than KV_INLINE_KEY */
    size_t arena_len;
    size_t arena_cap;
    size_t arena_garbage;   /* bytes of deleted keys still in the arena */
};

static inline struct kv_slot *raw_slot(const uint8_t *table, size_t slot_size, uint32_t i)
{
    return (struct kv_slot *)(void *)(table + (size_t)i * slot_size);
}

static inline bool ref_is_old(const cf_kv *kv, uint32_t ref)
{
    return (ref & KV_GEN) != kv->gen;
}

/* The slot a reference names, in the current or the old table. */
static inline struct kv_slot *slot_at(const cf_kv *kv, uint32_t ref)
{
    return raw_slot(ref_is_old(kv, ref) ? kv->old : kv->slots, kv->slot_size, ref & ~KV_GEN);
}

/* Reference of slot i of the current table. */
static inline uint32_t cur_ref(const cf_kv *kv, uint32_t i)
{
    return i | kv->gen;
}

static inline bool slot_live(const struct kv_slot *s)
{
    uint32_t st = s->hp & KV_HP_MASK;
    return st != KV_HP_EMPTY && st != KV_MOVED;
}

static inline uint32_t slot_pos(const struct kv_slot *s)
{
    return (s->hp & KV_HP_MASK) - 1;
}

static inline void *slot_value(struct kv_slot *s)
{
    return (uint8_t *)s + sizeof(struct kv_slot);
}

static inline uint32_t arena_off(const struct kv_slot *s)
{
    uint32_t off;
    memcpy(&off, s->key, sizeof off);
    return off;
}

static inline const uint8_t *slot_key(const cf_kv *kv, const struct kv_slot *s)
{
    return s->klen <= KV_INLINE_KEY ? s->key : kv->arena + arena_off(s);
}

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
static void write_entry(const cf_kv *kv, const struct kv_slot *s, cf_buf *out)
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

/* Save-before-change: while an incremental save is under way, a live entry
 * of the cut that is not yet written is written now, as it is, before
 * anything moves, removes or changes it. O(1) (plus the key's bytes). */
static inline void save_pending(cf_kv *kv, struct kv_slot *s)
{
    if (!kv->save_out || (s->hp & KV_SAVED) == kv->save_bit || !slot_live(s))
        return;
    write_entry(kv, s, kv->save_out);
    s->hp ^= KV_SAVED;
    kv->save_left--;
}

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
static uint8_t *alloc_slots(uint32_t cap, size_t slot_size)
{
    return cf_kv_table_alloc((size_t)cap * slot_size);
}

static void free_slots(uint8_t *t, uint32_t cap, size_t slot_size)
{
    cf_kv_table_free(t, (size_t)cap * slot_size);
}

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
    kv->slots = alloc_slots(kv->cap, kv->slot_size);
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
    free_slots(kv->slots, kv->cap, kv->slot_size);
    free_slots(kv->old, kv->ocap, kv->slot_size);
    free_slots(kv->spare, kv->spare_cap, kv->slot_size);
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

static void heap_down(cf_kv *kv, uint32_t pos)
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
        heap_down(kv, pos);
}

/* ---- probing ------------------------------------------------------------- */

static inline uint64_t key_hash(const cf_kv *kv, const void *key, size_t len)
{
    return kv->keyed ? cf_siphash13(kv->key, key, len) : cf_hash64(key, len, KV_SEED);
}

static inline uint8_t tag_of(uint64_t h)
{
    return (uint8_t)(h >> 56);
}

static inline uint32_t arena_hash(const struct kv_slot *s)
{
    uint32_t h;
    memcpy(&h, s->key + sizeof(uint32_t), sizeof h);
    return h;
}

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

static bool slot_matches(const cf_kv *kv, const struct kv_slot *s, uint64_t h,
                         const void *key, size_t len)
{
    if (s->tag != tag_of(h) || s->klen != len)
        return false;
    /* An arena key's stored hash bits reject most tag collisions without
     * reading the arena. */
    if (len > KV_INLINE_KEY && arena_hash(s) != (uint32_t)h)
        return false;
    return len == 0 || memcmp(slot_key(kv, s), key, len) == 0;
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

/* Moves the entries of the next `budget` old slots to the new table (their
 * heap references follow) and frees the old table after its last slot.
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
            free_slots(kv->old, kv->ocap, kv->slot_size);
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
        nslots = alloc_slots(ncap, kv->slot_size);
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

static int heap_reserve(cf_kv *kv, uint32_t need)
{
    if (need <= kv->heap_cap)
        return 0;
    /* 1.5x growth: with the expiry beside each reference a heap entry is 12
     * bytes, and doubling's slack (a quarter of the entries on average) put
     * the store over its 100 bytes of overhead per key (test_kv
     * overhead_per_key). Large blocks are mremap'ed by realloc, not copied. */
    uint32_t ncap = kv->heap_cap > 16 ? kv->heap_cap : 16; /* bulk_begin may leave 1 */
    while (ncap < need)
        ncap += ncap / 2;
    uint32_t *nh = realloc(kv->heap, (size_t)ncap * sizeof *nh);
    if (!nh)
        return -ENOMEM;
    kv->heap = nh;
    int64_t *ne = realloc(kv->heap_exp, (size_t)ncap * sizeof *ne);
    if (!ne)
        return -ENOMEM; /* heap_cap unchanged: the next call grows both again */
    kv->heap_exp = ne;
    kv->heap_cap = ncap;
    return 0;
}

static int arena_reserve(cf_kv *kv, size_t extra)
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
    /* The home slot's line and the next: a key that is not there (the
     * usual dedup check: a new id) probes on to an empty slot, about 3
     * slots of 32 bytes at the load factors a growing table goes through
     * (0.375-0.75), so the probe often crosses into the next line. */
    const char *home = (const char *)home_slot(kv, h);
    __builtin_prefetch(home);
    __builtin_prefetch(home + 64);
    /* During a doubling a key not yet moved is found in the old table. */
    if (kv->old)
        __builtin_prefetch(raw_slot(kv->old, kv->slot_size, old_probe_start(kv, h)));
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
    if (key_len > KV_INLINE_KEY && arena_reserve(kv, key_len) < 0)
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
    return sizeof *kv + ((size_t)kv->cap + kv->ocap + kv->spare_cap) * kv->slot_size +
           (size_t)kv->heap_cap * (sizeof *kv->heap + sizeof *kv->heap_exp) + kv->arena_cap;
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
        uint8_t *slots = alloc_slots(cap, kv->slot_size);
        if (!slots)
            return -ENOMEM;
        free_slots(kv->slots, kv->cap, kv->slot_size);
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
    if (len > KV_INLINE_KEY && arena_reserve(kv, len) < 0)
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
            heap_down(kv, pos);
    /* Evictions made while loading into a smaller bound are counted too. */
    kv->evictions += evictions;
    return kv;
fail:
    cf_kv_free(kv);
    return NULL;
}

int cf_kv_bulk_begin(cf_kv *kv, size_t n)
{
    if (kv->save_out)
        return -EBUSY;  /* a save under way refers to the slots freed here */
    uint8_t *slots = alloc_slots(KV_MIN_CAP, kv->slot_size);
    if (!slots)
        return -ENOMEM;
    free_slots(kv->slots, kv->cap, kv->slot_size);
    free_slots(kv->old, kv->ocap, kv->slot_size);
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
        heap_down(kv, pos);
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
    /* Near: past 7/8 of the count that triggers it (3/4 of cap). */
    if ((uint64_t)kv->count * 32 < (uint64_t)kv->cap * 21)
        return 0;
    *ret_cap = ncap;
    return (size_t)ncap * kv->slot_size;
}

void cf_kv_offer_table(cf_kv *kv, void *table, uint32_t cap)
{
    if (!table)
        return;
    /* A doubling that came first (or another offer) made it useless. */
    if (kv->old || cap != kv->cap * 2 || (kv->spare && kv->spare_cap == cap)) {
        free_slots(table, cap, kv->slot_size);
        return;
    }
    free_slots(kv->spare, kv->spare_cap, kv->slot_size);
    kv->spare = table;
    kv->spare_cap = cap;
}

bool cf_kv_growing_table(const cf_kv *kv, void **ret_table, size_t *ret_bytes)
{
    if (!kv->old)
        return false;
    *ret_table = kv->slots;
    *ret_bytes = (size_t)kv->cap * kv->slot_size;
    return true;
}

uint32_t cf_kv_max_moved(const cf_kv *kv)
{
    return kv->max_moved;
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
