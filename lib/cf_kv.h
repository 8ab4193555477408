/* cf_kv: a keyed state store. An open-addressing hash map (linear probing,
 * backward-shift deletion) from byte-string keys to fixed-size values, with
 * an event-time expiry per entry and a bound on the number of keys.
 *
 * Layout: every table slot holds a 32-byte header (expiry, heap position, key
 * length, an 8-bit hash tag, and the key itself when it is <= 17 bytes, else its
 * arena offset and the low 32 bits of its hash) then the value bytes, so a lookup is one probe sequence with no pointer chase to the
 * value. Longer keys live in one shared arena (no malloc per key), which is
 * compacted when half of it is garbage. A binary min-heap of slot indices
 * orders the entries by (expiry, key bytes): a total order, so expiry
 * and eviction order depend on the contents only, never on the history, and
 * a loaded store behaves exactly like the saved one.
 *
 * Eviction policy: when the store holds max_keys keys and a new key is put,
 * the entry that expires soonest (the heap minimum) is removed first and
 * counted in cf_kv_evictions().
 *
 * Pointers: any put, delete, expire or load may move entries, so a value
 * pointer returned by get/put is valid only until the next modifying call.
 * Values are plain bytes, saved as they are in memory (they must not hold
 * pointers). Deterministic; not thread-safe. */
#ifndef CF_KV_H
#define CF_KV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

typedef struct cf_kv cf_kv;

/* Longest key accepted (bytes); longer keys are -EINVAL. */
#define CF_KV_MAX_KEY 65535u

/* Per-entry callback (expiry, eviction, iteration). key and value point into
 * the store and are valid during the call only; the callback must not modify
 * the store. */
typedef void (*cf_kv_entry_fn)(void *ctx, const void *key, size_t key_len, void *value,
                               int64_t expiry);

/* value_size may be 0 (a set with expiry). max_keys 0 = no bound. Returns
 * NULL on OOM. */
cf_kv *cf_kv_new(size_t value_size, size_t max_keys);
/* Like cf_kv_new, hashing keys with SipHash-1-3 under a secret 16-byte key
 * (copied; NULL = cf_kv_new): for keys chosen by clients, so nobody who does
 * not know the key can make them collide (hash flooding). */
cf_kv *cf_kv_new_keyed(size_t value_size, size_t max_keys, const uint8_t key[16]);
void cf_kv_free(cf_kv *kv);

/* Looks a key up. Returns a pointer to its value (non-NULL even when
 * value_size is 0) and sets *ret_expiry (if not NULL), or NULL if absent.
 * O(1) expected. */
void *cf_kv_get(const cf_kv *kv, const void *key, size_t key_len, int64_t *ret_expiry);

/* Finds or inserts a key. A new key gets the given expiry and a zeroed value
 * and the call returns 1; an existing key keeps its expiry and value and the
 * call returns 0. If the store is full, the soonest-expiring entry is evicted
 * first (on_evict, may be NULL, sees it before removal). Sets *ret_value (if
 * not NULL) to the value. Returns -EINVAL (key longer than CF_KV_MAX_KEY) or
 * -ENOMEM, with the store unchanged. O(1) + O(log n) heap, and O(1) worst
 * case for growth (CF_KV_MIGRATE_STEP). */
int cf_kv_put(cf_kv *kv, const void *key, size_t key_len, int64_t expiry,
              cf_kv_entry_fn on_evict, void *ctx, void **ret_value);

/* The hash cf_kv uses for a key, for the two calls below: a caller can hash
 * its keys ahead (outside a lock, say) and prefetch their slots. O(len). */
uint64_t cf_kv_hash(const cf_kv *kv, const void *key, size_t key_len);

/* Asks the CPU to start loading the slot where the probe for hash h begins,
 * so that a put or get of that key a little later does not wait for memory.
 * Only a hint: the store is not changed and any later call stays correct
 * (even if the table grew meanwhile). O(1). */
void cf_kv_prefetch(const cf_kv *kv, uint64_t h);
/* For tests: the address cf_kv_prefetch loads for h (the start of the slot
 * in the current table where the probe for h begins). */
const void *cf_kv_prefetch_addr(const cf_kv *kv, uint64_t h);

/* cf_kv_put with h = cf_kv_hash(kv, key, key_len) computed by the caller (any
 * other h breaks the store). Same results. */
int cf_kv_put_hashed(cf_kv *kv, const void *key, size_t key_len, uint64_t h, int64_t expiry,
                     cf_kv_entry_fn on_evict, void *ctx, void **ret_value);

/* Changes the expiry of a present key: 0, or -ENOENT. O(log n). */
int cf_kv_set_expiry(cf_kv *kv, const void *key, size_t key_len, int64_t expiry);

/* Removes a key: 0, or -ENOENT. O(log n) amortized. */
int cf_kv_delete(cf_kv *kv, const void *key, size_t key_len);

/* Removes every entry with expiry <= now, in (expiry, key) order,
 * calling fn (may be NULL) on each before removal. Returns how many.
 * O(removed log n). */
size_t cf_kv_expire(cf_kv *kv, int64_t now, cf_kv_entry_fn fn, void *ctx);

/* The smallest expiry in the store, or INT64_MAX when it is empty. O(1). */
int64_t cf_kv_next_expiry(const cf_kv *kv);

/* Calls fn on every entry, in table order (unspecified). O(capacity). */
void cf_kv_foreach(const cf_kv *kv, cf_kv_entry_fn fn, void *ctx);

size_t cf_kv_count(const cf_kv *kv);
uint64_t cf_kv_evictions(const cf_kv *kv);
/* Adds n to the eviction count: a loader applying a saved delta (cf_dedup)
 * restores the count the saved store had. */
void cf_kv_add_evictions(cf_kv *kv, uint64_t n);
/* Bytes allocated by the store (table, heap, key arena, the struct). */
size_t cf_kv_memory(const cf_kv *kv);

/* Appends the store (entries, eviction counter) to out. 0 or -ENOMEM. */
int cf_kv_save(const cf_kv *kv, cf_buf *out);
/* Reads what cf_kv_save wrote; value_size must match the saved one. Returns
 * NULL on malformed input or OOM. */
cf_kv *cf_kv_load(size_t value_size, size_t max_keys, cf_reader *in);
/* cf_kv_load into a cf_kv_new_keyed store. Linear time: the table is sized
 * once for the saved count and the heap built bottom-up. */
cf_kv *cf_kv_load_keyed(size_t value_size, size_t max_keys, const uint8_t key[16],
                        cf_reader *in);

/* Bulk rebuild (recovery rebuilds the dedup table this way, cf_dedup.h):
 * cf_kv_bulk_begin empties kv (keeping its hash key, bound and eviction
 * counter) and sizes it for n keys; cf_kv_bulk_add inserts a key that is not
 * in the store yet (no heap work, no growth); cf_kv_bulk_end builds the heap
 * bottom-up. At most n adds, and no other call on kv in between. Together
 * O(n), against O(n log n) for n puts. begin: 0 or -ENOMEM (kv is then empty
 * and usable, or unchanged when not even an empty table could be had); add:
 * 1, -EINVAL (a key longer than CF_KV_MAX_KEY or already present, or more
 * than n adds) or -ENOMEM; begin refuses with -EBUSY while an incremental
 * save (below) is under way. */
int cf_kv_bulk_begin(cf_kv *kv, size_t n);
int cf_kv_bulk_add(cf_kv *kv, const void *key, size_t key_len, int64_t expiry);
void cf_kv_bulk_end(cf_kv *kv);

/* The bound the store was made with (0 = none). */
size_t cf_kv_max_keys(const cf_kv *kv);
/* Incremental save: the bytes of cf_kv_save, as of the moment of
 * cf_kv_save_begin (the cut), written a bounded number of slots at a time
 * while the store keeps changing, so a large store is saved without one
 * long pause. The entries come out in another order than cf_kv_save's
 * (load accepts any). How it stays exact: the cut flips a per-slot "saved"
 * bit's meaning, so every entry is "not saved"; entries put after the cut
 * are born saved; an entry not yet saved is written out before anything
 * moves it (growth, backward shift), removes it (delete, expiry, eviction)
 * or changes it (set_expiry, and a get or put of an existing key of a store
 * with values, since the caller may write through the pointer); a cursor
 * writes the rest. Each entry of the cut is written exactly once.
 *
 * begin writes the header to out and keeps out (the caller's, which must
 * stay valid and otherwise untouched until the save ends): 0, -EBUSY (a
 * save is under way) or -ENOMEM. step examines at most budget slots:
 * 0 (more to do), 1 (done: out holds the whole save and the store no
 * longer refers to it), -ENOMEM (out ran out of memory; the save has
 * ended). Every put also takes a step of put_step slots (0: none), so a busy
 * store may finish its save by itself: a step after the end returns how
 * the last save ended. finish completes a save at once (same results). */
int cf_kv_save_begin(cf_kv *kv, cf_buf *out, uint32_t put_step);
int cf_kv_save_step(cf_kv *kv, size_t budget);
int cf_kv_save_finish(cf_kv *kv);
bool cf_kv_saving(const cf_kv *kv);

/* For tests: slots examined by the bulk insert of the load that made kv
 * (about one per key when loading is linear), and table doublings. */
uint64_t cf_kv_load_probes(const cf_kv *kv);
uint32_t cf_kv_grows(const cf_kv *kv);
/* Growth is incremental: a doubling allocates the new table and then every
 * put moves the entries of at most CF_KV_MIGRATE_STEP slots of the old one,
 * so no single put rehashes the store (a pause that grew with the store).
 * For tests: whether a doubling is under way, and the most entries any one
 * put has moved. */
#define CF_KV_MIGRATE_STEP 16u
bool cf_kv_migrating(const cf_kv *kv);
uint32_t cf_kv_max_moved(const cf_kv *kv);

/* The new table of a doubling under way (false when none is): its memory,
 * which comes from calloc untouched, so the entries the puts move into it
 * fault its pages in one by one, inside the caller's lock. A caller that
 * owns the store's lock can note the range under it and have the pages
 * mapped after releasing it (issue 15: these faults were most of a
 * 1000-event batch's longest holds of the sequencer lock). Pure accessor. */
bool cf_kv_growing_table(const cf_kv *kv, void **ret_table, size_t *ret_bytes);

/* The next doubling's table, ahead of time: a doubling allocates its new
 * table inside the caller's lock, and the entries moved into it fault in
 * thousands of pages in the hold that starts it. next_table gives the byte
 * size (and *ret_cap, in slots) of that table once the doubling is near
 * (past 2/3 of its trigger, or at any count for a next table of at most
 * CF_KV_SPARE_EARLY bytes; none under way, no such table held), else 0.
 * The caller allocates it with cf_kv_table_alloc outside its lock, maps its pages,
 * and hands it over with offer_table, which takes ownership: the table is
 * kept for that doubling (counted in cf_kv_memory), or freed when it no
 * longer fits (a doubling came first). Pure: no allocation of its own.
 * offer_table returns whether the table was kept. */
#define CF_KV_SPARE_EARLY ((size_t)16 << 20)
size_t cf_kv_next_table(const cf_kv *kv, uint32_t *ret_cap);
bool cf_kv_offer_table(cf_kv *kv, void *table, uint32_t cap);

/* The old table of the doubling that ended last, handed to the caller to
 * free with cf_kv_table_free(*ret_table, *ret_bytes) outside its lock:
 * freeing it in the put that moved its last entry unmapped tens of MB
 * inside the caller's lock (3-9 ms of CPU in a 1000-event batch's hold of
 * the sequencer lock, issue 15). False when there is none. A table not
 * taken is freed at the next doubling's end or by cf_kv_free, and counts
 * in cf_kv_memory until then. */
bool cf_kv_take_retired(cf_kv *kv, void **ret_table, size_t *ret_bytes);
/* Opts kv in to the hand-out above. Without it (the default) the put that
 * ends a doubling frees the old table at once: a store whose owner never
 * calls cf_kv_take_retired (the shards' small indexes) would otherwise hold
 * its previous table until its next doubling. Only an owner that frees the
 * tables outside a lock (cf_dedup, for the sequencer's ticker) opts in.
 * Call it once, before the first doubling ends; it survives bulk rebuilds. */
void cf_kv_hand_out_retired(cf_kv *kv);

/* Zeroed memory for a large table probed at random (cf_kv's slots,
 * sql_view's group table and session chunks): from 4 MiB on it comes from
 * the allocator the process installed with cf_kv_set_table_mem (e.g.
 * lib_bench --huge maps them on 2 MiB boundaries with MADV_HUGEPAGE: fewer
 * TLB misses and page faults; lib/ makes no system call itself),
 * else, and without one, from calloc. Free with the same byte count. NULL
 * on OOM. */
void *cf_kv_table_alloc(size_t bytes);
void cf_kv_table_free(void *p, size_t bytes);
/* Installs the allocator for tables of 4 MiB and more: alloc(bytes)
 * returns zeroed memory or NULL, free_fn(p, bytes) takes it back. Process
 * wide: call it once, before any store or view exists (a table is freed
 * the way it was allocated only if the allocator has not changed since).
 * NULL (either) restores calloc. */
void cf_kv_set_table_mem(void *(*alloc)(size_t bytes), void (*free_fn)(void *p, size_t bytes));

#endif
