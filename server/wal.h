/* wal: the write-ahead log in --data-dir (SPEC section 10). Segment files of
 * length-prefixed, CRC-checked records, appended in the order the shards see
 * them. Group commit: many request threads wait on one write/fsync.
 *
 * Life cycle: open -> replay (cuts a torn or corrupt tail at the last whole
 * record) -> append/commit ... -> close. */
#ifndef CF_WAL_H
#define CF_WAL_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

typedef struct cf_wal cf_wal;

enum cf_wal_record_type {
    CF_WAL_EVENTS = 1,      /* payload: packed accepted events (cf_event_pack, concatenated) */
    CF_WAL_WATERMARK = 2,   /* payload: the watermark marker sent to the shards */
    CF_WAL_COUNTERS = 3,    /* payload: u64 duplicates, u64 rejected added by a request */
    CF_WAL_SETTINGS = 4,    /* payload: the view settings in effect from here on */
    CF_WAL_SQL = 5,         /* payload: SQL definitions applied here (sql_runtime.h) */
    CF_WAL_ROWS = 6,        /* payload: a declared stream's accepted events (engine_sql.c) */
    CF_WAL_TABLE = 7,       /* payload: a table's applied upserts and deletes (engine_sql.c) */
};

/* Opens (creating) dir. segment_bytes: rotate after a segment reaches it.
 * NULL on failure, with a message in err. */
cf_wal *cf_wal_open(const char *dir, cf_fsync_policy policy, size_t segment_bytes,
                    char *err, size_t errcap);
void cf_wal_close(cf_wal *w);

typedef int (*cf_wal_record_fn)(void *ctx, int64_t lsn, uint8_t type, const uint8_t *payload,
                                size_t len);

/* Calls fn for every record with lsn > after, in order; a torn or corrupt
 * tail is cut off (logged). fn returning < 0 stops the replay with that
 * value. Returns the number of records replayed, or a negative errno. Must
 * run before the first append. */
int64_t cf_wal_replay(cf_wal *w, int64_t after, cf_wal_record_fn fn, void *ctx);

/* Appends one record and returns its LSN (1, 2, ... consecutive), or a
 * negative errno. The caller serializes appends (one sequencer). Cheap:
 * copies into the log's buffer; no I/O under the caller's lock. */
int64_t cf_wal_append(cf_wal *w, uint8_t type, const void *payload, size_t len);

/* Blocks until record lsn is durable per the policy: written to the file
 * (batch, off) or fsynced (always; concurrent callers share one fsync).
 * Thread-safe. Returns 0, or -EIO once any write or fsync failed (sticky: the
 * server must stop acknowledging). */
int cf_wal_commit(cf_wal *w, int64_t lsn);

/* Deletes segments all of whose records have lsn <= lsn (after a snapshot). */
int cf_wal_drop_through(cf_wal *w, int64_t lsn);

int64_t cf_wal_last_lsn(const cf_wal *w);
/* Counters for metrics. */
uint64_t cf_wal_fsyncs(const cf_wal *w);
uint64_t cf_wal_bytes(const cf_wal *w);

#endif
