/* cf_dedup: idempotency by event_id (SPEC section 6). An id seen at event
 * time ts is a duplicate while the event-time clock C < ts + ttl; after that
 * it is forgotten (memory bounded) and accepted again. Deterministic; not
 * thread-safe. */
#ifndef CF_DEDUP_H
#define CF_DEDUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

typedef struct cf_dedup cf_dedup;

/* ttl_ms > 0; max_ids bounds memory (0 = no bound): when full, the id that
 * expires soonest is forgotten early and counted in cf_dedup_evictions(). */
cf_dedup *cf_dedup_new(int64_t ttl_ms, size_t max_ids);
/* Ids are hashed with SipHash-1-3 under a secret 16-byte key, so clients
 * cannot choose ids that collide in the table (hash flooding). key NULL:
 * a fixed default key (cf_dedup_new). Deterministic for a given key. */
cf_dedup *cf_dedup_new_keyed(int64_t ttl_ms, size_t max_ids, const uint8_t key[16]);
void cf_dedup_free(cf_dedup *d);

/* Checks id (len bytes) at clock C (CF_TIME_NONE allowed). First expires ids
 * with C >= first_ts + ttl. Returns 1 and records (id, ts) if the id is new,
 * 0 if it is a duplicate, -ENOMEM. O(1) amortized. */
int cf_dedup_check(cf_dedup *d, const char *id, size_t len, int64_t ts, int64_t clock);

/* For batches: hash an id once (outside a lock, say), prefetch its slot a
 * few ids ahead, then check it; cf_dedup_check_hashed(d, id, len,
 * cf_dedup_hash(d, id, len), ts, clock) is exactly cf_dedup_check(d, id, len,
 * ts, clock). */
uint64_t cf_dedup_hash(const cf_dedup *d, const char *id, size_t len);
void cf_dedup_prefetch(const cf_dedup *d, uint64_t h);
int cf_dedup_check_hashed(cf_dedup *d, const char *id, size_t len, uint64_t h, int64_t ts,
                          int64_t clock);

/* Drops every id with clock >= first_ts + ttl. */
void cf_dedup_expire(cf_dedup *d, int64_t clock);

/* Rebuild mode, for a replay of many checks (recovery): between begin and
 * end, checks answer exactly as they would otherwise and leave exactly the
 * same ids, expiries and eviction count behind, but skip the per-check
 * expiry work (see cf_dedup.c). Needs a clock that never goes back (else the
 * checks go on the normal way from there, still exact). cf_dedup_count
 * counts expired ids not yet dropped too, and cf_dedup_save and
 * cf_dedup_save_begin refuse (-EBUSY) until end. begin: 0, -EBUSY (an
 * incremental save is under way) or -ENOMEM (nothing changed: checks go the
 * normal way). end: 0, or -ENOMEM (ids that did not fit are forgotten, as a
 * failed check forgets its id). end without begin is a no-op; free ends. */
int cf_dedup_rebuild_begin(cf_dedup *d);
int cf_dedup_rebuild_end(cf_dedup *d);
/* The rebuild's id tables (the large, randomly probed blocks) come from
 * alloc instead of malloc (NULL: malloc again); they are freed with free().
 * For the server, which asks for huge pages there (the probes' TLB misses):
 * the library makes no system calls. */
void cf_dedup_set_table_alloc(cf_dedup *d, void *(*alloc)(size_t bytes));
/* How many id tables the rebuilds of d have allocated so far (their sweeps
 * reuse the last table when it has the size wanted): for tests. */
size_t cf_dedup_rebuild_tables(const cf_dedup *d);

size_t cf_dedup_count(const cf_dedup *d);
uint64_t cf_dedup_evictions(const cf_dedup *d);
size_t cf_dedup_memory(const cf_dedup *d);

int cf_dedup_save(const cf_dedup *d, cf_buf *out);
/* The same bytes as cf_dedup_save at the moment of begin (the cut), written
 * while checks go on: begin writes the ttl and the header into out (kept by
 * the store until the save ends, see cf_kv_save_begin), each step saves at
 * most budget table slots, and every check that records an id saves
 * put_step more. step and finish return 0 (more to do), 1 (done: out is
 * complete) or -ENOMEM; begin 0, -EBUSY or -ENOMEM. */
int cf_dedup_save_begin(cf_dedup *d, cf_buf *out, uint32_t put_step);
int cf_dedup_save_step(cf_dedup *d, size_t budget);
int cf_dedup_save_finish(cf_dedup *d);
bool cf_dedup_saving(const cf_dedup *d);
/* cf_kv_growing_table of the store (false during a rebuild, whose map is
 * not the store): the new table of a doubling under way, for the caller to
 * map its pages outside its lock. */
bool cf_dedup_growing_table(const cf_dedup *d, void **ret_table, size_t *ret_bytes);
/* cf_kv_take_retired of the store (every cf_dedup's store opts in to the
 * hand-out): the old table of the doubling that ended last, for the caller
 * to free with cf_kv_table_free outside its lock. False when there is none. */
bool cf_dedup_take_retired(cf_dedup *d, void **ret_table, size_t *ret_bytes);
/* cf_kv_next_table / cf_kv_offer_table of the store (0 during a rebuild;
 * an offer then is freed, and false is returned). */
size_t cf_dedup_next_table(const cf_dedup *d, uint32_t *ret_cap);
bool cf_dedup_offer_table(cf_dedup *d, void *table, uint32_t cap);
/* Incremental snapshots: a change journal and deltas. journal_start
 * (typically at a whole save's cut) starts recording every id recorded and
 * every id dropped (expired, evicted), in order; delta_cut writes a delta's
 * header into hdr and moves the operations recorded since the start or the
 * last cut into ops (empty), O(1): hdr's bytes followed by ops' are the
 * delta, which cf_dedup_apply_delta applies to the table as of that start
 * or last cut, giving the table as of this cut. A journal grown past
 * max_bytes is dropped (and its memory freed), as is one when a rebuild
 * begins: delta_cut then returns -ESTALE until the next start. 0, -EBUSY
 * (rebuild), -ESTALE, -ENOMEM (nothing taken). Both take spare's memory
 * (if not NULL and larger than the journal's) for the journal that starts:
 * a buffer the caller reserved and mapped outside its lock, so the
 * journal's appends under the lock neither copy nor fault. journal_bytes:
 * the journal's size, SIZE_MAX when there is none. */
int cf_dedup_journal_start(cf_dedup *d, size_t max_bytes, cf_buf *spare);
void cf_dedup_journal_stop(cf_dedup *d);
size_t cf_dedup_journal_bytes(const cf_dedup *d);
int cf_dedup_delta_cut(cf_dedup *d, cf_buf *hdr, cf_buf *ops, cf_buf *spare);
/* True when blob starts like a delta (not like cf_dedup_save's bytes). */
bool cf_dedup_is_delta(const void *blob, size_t len);
/* Applies a delta read from in. 0, -EINVAL (malformed, or not a delta of
 * this table: the count it ends with differs), -EBUSY, -ENOMEM; on an error
 * the table is partly changed (free it). */
int cf_dedup_apply_delta(cf_dedup *d, cf_reader *in);
/* Reads what cf_dedup_save wrote into a store keyed with key (NULL: the
 * default key). Linear in the number of ids. */
cf_dedup *cf_dedup_load(int64_t ttl_ms, size_t max_ids, const uint8_t key[16], cf_reader *in);

#endif
