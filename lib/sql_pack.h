/* sql_pack: compact copies of SQL rows, and the canonical bytes of join and
 * table keys (SPEC 12, 14). Shared by the interval join (sql_join) and the
 * table state (sql_table), which keep rows past the event that carried them.
 *
 * A packed row is a run of (tag, payload) per value: one byte for NULL and
 * booleans, a zigzag varint for BIGINT and TIMESTAMP (an epoch-ms timestamp
 * takes 7 bytes, a small integer 2), 9 bytes for a DOUBLE, a varint length
 * and the bytes for STRING, ARRAY and JSON. That is about half of the 16
 * bytes per sql_value plus the strings that a copy of the value array would
 * take, which is what a join buffer holds per event.
 *
 * Key bytes follow SQL equality (sql_value_compare == 0): numbers by value,
 * so BIGINT 2, TIMESTAMP 2 and DOUBLE 2.0 give the same bytes and a DOUBLE
 * that is not an integer gets bytes no integer has; other values are equal
 * only with the same type and bytes. A NULL (or NaN) component makes the key
 * equal to nothing, not even itself (SQL: NULL = NULL is not TRUE). The
 * planner also lets a TIMESTAMP key meet a STRING key; callers CAST one side
 * first, as these bytes do not parse strings. The server routes join sides
 * and table rows to shards by a hash of these bytes, so equal keys meet on
 * one shard. Pure; no state. */
#ifndef SQL_PACK_H
#define SQL_PACK_H

#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_value.h"

/* Largest packed row (bytes); bigger rows are refused (-E2BIG). */
#define SQL_PACK_MAX_ROW (1u << 24)

/* Bytes the packed form of n values takes. O(n). */
size_t sql_pack_row_size(const sql_value *v, uint32_t n);

/* Writes the packed form of n values to dst, which has room for
 * sql_pack_row_size(v, n) bytes. O(size). */
void sql_pack_row_write(const sql_value *v, uint32_t n, uint8_t *dst);

/* Decodes n values packed at p (len bytes) into ret[0..n-1]; strings point
 * into p. Returns 0, or -EINVAL when the bytes are not exactly n packed
 * values (snapshots are read through here, so it checks every bound). */
int sql_unpack_row(const void *p, size_t len, uint32_t n, sql_value *ret);

/* Appends the canonical bytes of an n-value key to out. Returns 0, 1 when
 * a component is NULL or NaN (the key joins nothing; the bytes are still
 * written, so such a key can be routed), or -ENOMEM (out->oom). */
int sql_pack_key(const sql_value *key, uint32_t n, cf_buf *out);

#endif
