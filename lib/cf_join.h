/* cf_join: joins of keyed streams.
 *
 * cf_join_interval: a stream-stream windowed interval join. A left and a
 * right record with equal keys (bytes) and |left.ts - right.ts| <= window
 * produce one joined output, exactly once, whichever side arrives first:
 * each record is matched against the other side's buffered records when it
 * arrives, then buffered itself. The watermark, passed in by the caller
 * (cf_join_interval_advance), removes records that can no longer match; a
 * record that arrives behind the watermark is late, counted and dropped.
 *
 * cf_join_table: a stream-table join. A keyed table of owned values that a
 * changelog stream upserts and deletes; each event of the other stream is
 * enriched with the current value for its key (or none).
 *
 * Both are deterministic and not thread-safe (one per shard). Keys and
 * payloads are opaque bytes. */
#ifndef CF_JOIN_H
#define CF_JOIN_H

#include <stddef.h>
#include <stdint.h>

/* ---- stream-stream interval join ---------------------------------------- */

typedef struct cf_join_interval cf_join_interval;

typedef enum cf_join_side {
    CF_JOIN_LEFT = 0,
    CF_JOIN_RIGHT = 1,
} cf_join_side;

/* One record as handed to the emit callback. All pointers are borrowed for
 * the duration of the callback only. */
typedef struct cf_join_record {
    const void *key;
    size_t key_len;
    int64_t ts;
    const void *payload;
    size_t payload_len;
} cf_join_record;

/* Called once per matching pair, from inside cf_join_interval_push (the
 * pair is complete when its second record arrives). It must not call back
 * into the same join. */
typedef void (*cf_join_emit_fn)(void *ctx, const cf_join_record *left,
                                const cf_join_record *right);

typedef struct cf_join_interval_stats {
    uint64_t pushed[2];   /* records offered per side (CF_JOIN_LEFT/RIGHT) */
    uint64_t joined;      /* pairs emitted */
    uint64_t late;        /* dropped: ts behind the watermark (minus lateness) */
    uint64_t refused;     /* dropped: buffer full, or key/payload too long */
    uint64_t expired;     /* removed by the watermark */
    size_t buffered[2];   /* records held now, per side */
    size_t buffered_bytes;/* payload and key bytes held now */
} cf_join_interval_stats;

/* window_ms >= 0: the largest |left.ts - right.ts| that joins.
 * allowed_lateness_ms >= 0: a record with ts < W - allowed_lateness is late
 *   (0 is Flink's interval-join rule: behind the watermark means late).
 * max_buffered >= 1: most records held at once (both sides together).
 * emit: required; ctx is passed through.
 * Returns NULL on invalid arguments or OOM. */
cf_join_interval *cf_join_interval_new(int64_t window_ms, int64_t allowed_lateness_ms,
                                       size_t max_buffered, cf_join_emit_fn emit, void *ctx);
void cf_join_interval_free(cf_join_interval *j);

/* Offers one record to one side. Its key and payload are copied if it is
 * buffered. Matching buffered records of the other side are emitted first,
 * in their arrival order. Returns the number of pairs emitted (>= 0), or
 *   -ERANGE   late (ts < W - allowed_lateness): dropped, counted;
 *   -ENOBUFS  max_buffered records are held: refused whole (nothing emitted),
 *             counted; advance the watermark and retry, or drop it;
 *   -EINVAL   key or payload longer than CF_JOIN_MAX_BYTES: refused, counted;
 *   -ENOMEM   out of memory (nothing emitted, nothing kept).
 * O(matches + records of that key on the other side + log buffered). */
#define CF_JOIN_MAX_BYTES (1u << 24)
int cf_join_interval_push(cf_join_interval *j, cf_join_side side, const void *key,
                          size_t key_len, int64_t ts, const void *payload, size_t payload_len);

/* Raises the watermark to wm (a lower wm is ignored: it never moves back)
 * and frees every buffered record that can no longer match, i.e. with
 * ts + window + allowed_lateness < W. Returns the number removed.
 * O(removed * log buffered). */
size_t cf_join_interval_advance(cf_join_interval *j, int64_t wm);

/* Current watermark (CF_TIME_NONE = INT64_MIN before the first advance). */
int64_t cf_join_interval_watermark(const cf_join_interval *j);
void cf_join_interval_stats_get(const cf_join_interval *j, cf_join_interval_stats *ret_stats);

/* ---- stream-table join -------------------------------------------------- */

typedef struct cf_join_table cf_join_table;

typedef struct cf_join_table_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t refused;     /* upserts refused: table full or too long */
    size_t entries;
    size_t bytes;         /* key and value bytes held */
} cf_join_table_stats;

/* max_entries >= 1 bounds the number of keys. NULL on invalid argument or
 * OOM. */
cf_join_table *cf_join_table_new(size_t max_entries);
void cf_join_table_free(cf_join_table *t);

/* Sets key's value to a copy of value (replacing any previous one, which is
 * freed: pointers from an earlier enrich of this key become invalid).
 * Returns 0, -ENOBUFS (a new key while max_entries are held), -EINVAL (key or
 * value longer than CF_JOIN_MAX_BYTES) or -ENOMEM (the old value is kept).
 * O(key + value) expected. */
int cf_join_table_upsert(cf_join_table *t, const void *key, size_t key_len, const void *value,
                         size_t value_len);

/* Removes key. Returns 0, or -ENOENT if absent. */
int cf_join_table_delete(cf_join_table *t, const void *key, size_t key_len);

/* The current value for key, or NULL if absent (a miss); counts hits and
 * misses. The value is borrowed: valid until key is next upserted or
 * deleted, or the table freed. *ret_len gets its length (may be NULL). */
const void *cf_join_table_enrich(cf_join_table *t, const void *key, size_t key_len,
                                 size_t *ret_len);

void cf_join_table_stats_get(const cf_join_table *t, cf_join_table_stats *ret_stats);

#endif
