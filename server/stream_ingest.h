/* stream_ingest: the body of POST /api/v1/streams/{name}/events (SPEC 12)
 * turned into typed rows of the declared stream, with the body formats and
 * per-event errors of SPEC 3 (docs/API.md). No I/O.
 *
 * A value must have its column's type, no coercion: STRING a JSON string,
 * BIGINT an integral number (|v| <= 2^53), DOUBLE a number, BOOLEAN true or
 * false, TIMESTAMP an RFC 3339 string or integral epoch ms, ARRAY<t> an
 * array of t (or nulls), JSON anything. null or a missing field is NULL,
 * which a NOT NULL column (and a table's primary key) refuses. Unknown fields are ignored. The event
 * time is the TIMESTAMP column's value (the receive time when the stream
 * has none or the value is NULL); more than max_future ahead is refused.
 *
 * A row is packed as i64 event time, then one value per column
 * (cf_sqlx_put_value): what the WAL records and the shards decode. */
#ifndef CF_STREAM_INGEST_H
#define CF_STREAM_INGEST_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "cf_buf.h"
#include "ingest.h"
#include "sql_plan.h"

/* The longest STRING primary key a table row may have: what GET and DELETE
 * /api/v1/tables/{name}/rows/{key} can address (http_int.h's key buffer);
 * a longer key made a row nobody could read or delete (user_traits cannot
 * even be dropped). */
#define CF_TABLE_KEY_MAX 255

typedef struct cf_stream_row {
    size_t off, len;        /* the packed row in batch.packed */
    int64_t ts;
    size_t id_off, id_len;  /* the EVENT_ID value's bytes in packed (id_len 0: none) */
    size_t index;           /* its place in the body (for a later per-row error) */
} cf_stream_row;

typedef struct cf_stream_batch {
    cf_buf packed;
    cf_stream_row *rows;    /* the valid rows, in body order */
    size_t n, cap;
    size_t total;           /* events in the body */
    size_t rejected;
    cJSON *errors;          /* [{"index", "error"}], at most CF_INGEST_MAX_ERRORS */
} cf_stream_batch;

/* Parses body[0..len) (body[len] == '\0'; NDJSON lines are cut in place)
 * against the stream's columns. Returns 0 (b filled), -EBADMSG (not JSON
 * at all: *ret_error), -E2BIG (more than max_batch events), -ENOMEM. b must
 * be zeroed; free it with cf_stream_batch_free. */
int cf_stream_parse(const sql_object *stream, cf_body_format fmt, char *body, size_t len,
                    size_t max_batch, int64_t max_future_ms, int64_t now_ms,
                    cf_stream_batch *b, const char **ret_error);
void cf_stream_batch_free(cf_stream_batch *b);
/* Counts row `index` of the body as rejected, with `why` in b->errors (a
 * row the engine refused after parsing it). 0 or -ENOMEM. */
int cf_stream_reject(cf_stream_batch *b, size_t index, const char *why);

#endif
