/* sql_table: the state of a SQL table (SPEC 12) and the stream-table join
 * step (SPEC 14), `FROM s [INNER|LEFT] JOIN t ON s.col = t.pk`.
 *
 * Keyed mutable rows: the primary key (one value, compared by SQL equality
 * through sql_pack_key bytes, so a BIGINT column finds a DOUBLE 2.0 key) to
 * a packed copy of the row. The caller applies upserts, deletes and events
 * in the order of the log they share, so an event sees the row as of its
 * own place in that order, and a replay sees the same.
 *
 * Bounded by max_keys rows: an upsert of a new key into a full table is
 * refused (-ENOSPC, counted), never evicting a row: a join would silently
 * lose its reference data. Pure, deterministic, not thread-safe: even the
 * const lookups (get) use the table's scratch, so one thread at a time. */
#ifndef SQL_TABLE_H
#define SQL_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_value.h"

typedef struct sql_table_config {
    uint32_t ncols;         /* 1..4096 */
    uint32_t key_column;    /* < ncols */
    size_t max_keys;        /* rows held (0: no bound) */
    uint8_t hash_key[16];   /* SipHash key (clients choose the keys) */
} sql_table_config;

typedef struct sql_table_stats {
    size_t rows;
    size_t bytes;           /* packed rows and keys */
    size_t memory;          /* all heap bytes */
    uint64_t upserts, deletes, refused;
    uint64_t hits, misses;  /* join lookups */
} sql_table_stats;

typedef struct sql_table sql_table;

/* NULL on an invalid config or OOM. */
sql_table *sql_table_new(const sql_table_config *cfg);
/* Accepts NULL. */
void sql_table_free(sql_table *t);

/* Sets the row of its key (row->v[key_column]) to a copy of row (ncols
 * values; rowtime ignored). Returns 0, or (nothing changed):
 *   -EINVAL  wrong width, a NULL (or NaN) key, a key over 64 KiB or a row
 *            over SQL_PACK_MAX_ROW;
 *   -ENOSPC  a new key while max_keys rows are held (counted in refused);
 *   -ENOMEM.
 * Borrowed rows of that key (get, join) become invalid. O(row) expected. */
int sql_table_upsert(sql_table *t, const sql_row *row);

/* Removes the row of key. Returns 0, -ENOENT (absent), -EINVAL (NULL key). */
int sql_table_delete(sql_table *t, sql_value key);

/* The row of key into ret_values (ncols values; strings borrowed from the
 * table, valid until the next upsert, delete or load). Returns 1 found, 0
 * absent (ret_values untouched), -EINVAL (a NULL key: absent by SQL). */
int sql_table_get(const sql_table *t, sql_value key, sql_value *ret_values);

/* The join step for one event: key is the event's ON expression, left its
 * row (nleft values). Found: emits left's values then the table row's
 * (rowtime: left's); absent: INNER emits nothing, LEFT emits left's values
 * then ncols NULLs. Returns 1 if a row was emitted, 0 if not. Counts hits
 * and misses. The emitted row is valid during the callback only. */
typedef void (*sql_table_emit_fn)(void *ctx, const sql_row *row);
int sql_table_join(sql_table *t, bool left_outer, sql_value key, const sql_row *left,
                   sql_table_emit_fn emit, void *ctx);

void sql_table_stats_get(const sql_table *t, sql_table_stats *ret);

/* Snapshot and rescale: save() appends every row and the counters
 * (versioned); load() adds the rows of a saved blob whose key bytes
 * (sql_pack_key of the key) keep(ctx, bytes, len) accepts (keep NULL: all,
 * counters too) to t, made with equal ncols and key_column; parts must
 * hold disjoint keys. Returns 0, -EINVAL (malformed, mismatch or a key
 * seen twice: t then holds what was read before; discard it) or -ENOMEM.
 * max_keys is not applied to loaded rows (a smaller bound refuses new keys
 * until the table is below it). */
typedef bool (*sql_table_keep_fn)(void *ctx, const void *key, size_t len);
int sql_table_save(const sql_table *t, cf_buf *out);
int sql_table_load(sql_table *t, cf_reader *in, sql_table_keep_fn keep, void *ctx);

#endif
