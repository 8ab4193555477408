/* cf_kv_int.h: what the store's files share (not installed, not for
 * callers of cf_kv.h). The store is split by job:
 *   cf_kv.c        the hash table, probing, the expiry heap, the key arena,
 *                  incremental growth, the public operations
 *   cf_kv_save.c   save and load, the incremental save, the bulk build
 *   cf_kv_table.c  table memory: the process's allocator, the spare table
 * Helpers called per operation across these files are static inline here,
 * so the split costs the hot path no call. */
#ifndef CF_KV_INT_H
#define CF_KV_INT_H

#include "cf_kv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cf_hash.h"

#define KV_SEED 0x6b765f73746f7265ULL /* "kv_store" */
#define KV_INLINE_KEY 17u
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
    /* The old table of the doubling that ended last, for the caller to
     * free outside its lock (cf_kv_take_retired): unmapping tens of MB
     * took 3-9 ms of CPU in the put that moved the last entry. NULL: none. */
    uint8_t *retired;
    uint32_t retired_cap;
    bool hand_out;          /* cf_kv_hand_out_retired: keep it for the owner */

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

/* -- the table (cf_kv.c) --------------------------------------------------- */

/* Sifts heap[pos] down; its expiry is read from heap_exp[pos]. */
void cf_kv_heap_down(cf_kv *kv, uint32_t pos);

/* Room for extra more key bytes in the arena: 0 or -ENOMEM. */
int cf_kv_arena_reserve(cf_kv *kv, size_t extra);

/* -- table memory (cf_kv_table.c) ------------------------------------------ */

/* A table of cap slots, all empty (hp 0), or NULL; freed with
 * cf_kv_free_slots (NULL is fine there). */
uint8_t *cf_kv_alloc_slots(uint32_t cap, size_t slot_size);

void cf_kv_free_slots(uint8_t *t, uint32_t cap, size_t slot_size);

/* -- saving (cf_kv_save.c) ------------------------------------------------- */

/* Appends one entry in cf_kv_save's layout (save_pending's writer). */
void cf_kv_write_entry(const cf_kv *kv, const struct kv_slot *s, cf_buf *out);

/* -- inline helpers ------------------------------------------------------- */


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

/* Save-before-change: while an incremental save is under way, a live entry
 * of the cut that is not yet written is written now, as it is, before
 * anything moves, removes or changes it. O(1) (plus the key's bytes). */
static inline void save_pending(cf_kv *kv, struct kv_slot *s)
{
    if (!kv->save_out || (s->hp & KV_SAVED) == kv->save_bit || !slot_live(s))
        return;
    cf_kv_write_entry(kv, s, kv->save_out);
    s->hp ^= KV_SAVED;
    kv->save_left--;
}

/* hashes and tags (the probes are in cf_kv.c) */

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

/* Whether slot s holds the key of hash h. Inline here: find() runs it on
 * every probe (the compiler inlined it there before the split). */
static inline bool slot_matches(const cf_kv *kv, const struct kv_slot *s, uint64_t h,
                                const void *key, size_t len)
{
    if (s->tag != tag_of(h) || s->klen != len)
        return false;
    /* An arena key's stored hash bits reject most tag collisions without
     * reading the arena. */
    if (len > KV_INLINE_KEY && arena_hash(s) != (uint32_t)h)
        return false;
    return cf_hash_key_eq(slot_key(kv, s), key, len);
}

/* Room for need heap entries in both arrays: 0 or -ENOMEM. Inline here:
 * every insert asks (the compiler inlined it into cf_kv_put_hashed before
 * the split). */
static inline int heap_reserve(cf_kv *kv, uint32_t need)
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

#endif
