/* recent: the newest accepted events of the built-in `clicks` stream, for
 * GET /api/v1/streams/clicks/events (SPEC 13: "every stream keeps its newest
 * --retain-results events for reads"), with their enrichment columns.
 *
 * The sequencer appends each request's accepted events as one chunk (their
 * packed bytes, the very buffer the WAL record was written from, handed
 * over rather than copied), so the cost under the sequencer lock is O(1)
 * per request. Readers take references to the chunks they need under the
 * same lock and format them outside it; a chunk is freed when the ring and
 * the last reader let go of it.
 *
 * Bounded: whole chunks are dropped from the old end while the rest still
 * holds at least `capacity` events, or while the ring holds more than
 * `max_bytes` (keeping at least the newest chunk). Not thread-safe: the
 * engine calls add and take under its sequencer lock; release and the
 * formatting need no lock. */
#ifndef CF_RECENT_H
#define CF_RECENT_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_event.h"

typedef struct cf_recent cf_recent;
typedef struct cf_recent_chunk cf_recent_chunk;

/* NULL on OOM. */
cf_recent *cf_recent_new(size_t capacity, size_t max_bytes);
/* Accepts NULL. Chunks still held by readers stay valid until released. */
void cf_recent_free(cf_recent *r);

/* A chunk for add: allocated outside the lock. NULL on OOM. */
cf_recent_chunk *cf_recent_chunk_new(void);
/* Frees a chunk never added. Accepts NULL. */
void cf_recent_chunk_discard(cf_recent_chunk *c);

/* Appends n packed events (cf_event_pack, back to back; bytes[0..len),
 * cap bytes allocated, taken over: freed with free()) whose arrival numbers
 * are first_seq, first_seq + 1, ... Takes c. O(1) amortised, plus the
 * chunks it drops. */
void cf_recent_add(cf_recent *r, cf_recent_chunk *c, uint8_t *bytes, size_t len, size_t cap, size_t n,
                   uint64_t first_seq);
/* cf_recent_add for a caller under a lock: the chunks it drops, up to
 * dropped_cap of them, are not released but stored in dropped[] (the count
 * is returned), for the caller to cf_recent_unref after its lock (freeing
 * them was most of the add's cost). Any more are released here. */
size_t cf_recent_add_deferred(cf_recent *r, cf_recent_chunk *c, uint8_t *bytes, size_t len, size_t cap,
                              size_t n, uint64_t first_seq, cf_recent_chunk **dropped, size_t dropped_cap);
/* Releases a chunk cf_recent_add_deferred dropped. Accepts NULL. */
void cf_recent_unref(cf_recent_chunk *c);

/* Events held now, and their bytes. */
size_t cf_recent_count(const cf_recent *r);

/* References to the newest chunks that hold `limit` events (fewer when the
 * ring holds fewer), newest first, in a malloc'd array (*ret, *ret_n).
 * 0 or -ENOMEM. O(chunks returned). */
int cf_recent_take(cf_recent *r, size_t limit, cf_recent_chunk ***ret, size_t *ret_n);

/* What a chunk holds (for snapshots): its packed events, their count and
 * the arrival number of the first. */
void cf_recent_chunk_get(const cf_recent_chunk *c, const uint8_t **ret_bytes, size_t *ret_len, size_t *ret_n,
                         uint64_t *ret_first_seq);

/* Lets go of the references of a take and frees the array. */
void cf_recent_release(cf_recent_chunk **chunks, size_t n);

/* {"items": [...]}: the newest `limit` events of the chunks of a take,
 * newest first, each an object of the event's fields and enrichment
 * columns (docs/API.md). NULL on OOM. */
cJSON *cf_recent_json(cf_recent_chunk *const *chunks, size_t n, size_t limit);

/* One event as JSON (also for tests). NULL on OOM. */
cJSON *cf_recent_event_json(const cf_event *ev, uint64_t seq);

#endif
