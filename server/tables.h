/* tables: the rows of the SQL tables (SPEC 12), held by the sequencer.
 *
 * Upserts and deletes are applied under the sequencer lock in the order of
 * the log they share with events (CF_WAL_TABLE), so a replay rebuilds the
 * same rows. One sql_table per table, keyed by name and definition text: a
 * table dropped and created again under the same name starts empty. Not
 * thread-safe (the engine's mutex guards it). */
#ifndef CF_TABLES_H
#define CF_TABLES_H

#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"
#include "sql_plan.h"
#include "sql_table.h"

typedef struct cf_tables cf_tables;

/* max_keys: rows per table (0: none); hash_key keys the row index. NULL
 * on OOM. */
cf_tables *cf_tables_new(size_t max_keys, const uint8_t hash_key[16]);
void cf_tables_free(cf_tables *ts);

/* The rows of table o (o->sql identifies its definition), created empty
 * when absent or defined differently before. NULL on OOM. */
sql_table *cf_tables_get(cf_tables *ts, const sql_object *o);
/* The rows of table `name`, whatever its definition, or NULL. */
sql_table *cf_tables_by_name(cf_tables *ts, const char *name);
/* Frees the rows of table `name` (dropped), if any. */
void cf_tables_drop(cf_tables *ts, const char *name);
/* Same, without creating: NULL when the table holds no rows yet. */
sql_table *cf_tables_find(cf_tables *ts, const sql_object *o);

/* Snapshot: every table's rows (u32 count, then per table: str name, str
 * definition, u32 ncols, u32 key column, str sql_table_save blob). load()
 * adds them to an empty ts. 0, -EINVAL (malformed) or -ENOMEM. */
int cf_tables_save(const cf_tables *ts, cf_buf *out);
int cf_tables_load(cf_tables *ts, cf_reader *in);

/* Applies one packed op (see engine_tables.c): u8 op (CF_TABLE_UPSERT: a
 * packed row as stream_ingest packs it; CF_TABLE_DELETE: one packed key
 * value). Returns what sql_table_upsert/delete return, or -EINVAL. */
enum { CF_TABLE_UPSERT = 1, CF_TABLE_DELETE = 2, CF_TABLE_DROP = 3 /* shard messages only */ };
int cf_tables_apply(sql_table *t, const sql_object *o, uint8_t op, const uint8_t *p, size_t len);

#endif
