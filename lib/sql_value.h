/* sql_value: the typed values and rows the SQL runtime (SPEC 13) computes on.
 *
 * Shared by the expression programs (sql_expr), the aggregates (sql_agg) and
 * the view operators (sql_view), so a row decoded once from an event flows
 * through every plan without conversion. A value is 16 bytes and never owns
 * memory: strings and JSON borrow from the event they were decoded from (or
 * from an arena the caller resets per event). Whoever keeps a value past the
 * event (group keys, EARLIEST/LATEST, TOPK) copies its bytes.
 *
 * Types follow SPEC 12: STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP (epoch ms,
 * kept as an int64 but typed apart so CAST and JSON output can tell), ARRAY<t>
 * and JSON (both as compact JSON text, read with dot paths and UNNEST). NULL is
 * a type of its own at run time; the planner tracks nullability separately. */
#ifndef SQL_VALUE_H
#define SQL_VALUE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cf_buf.h"

typedef enum sql_type {
    SQL_NULL = 0,
    SQL_BOOLEAN,
    SQL_BIGINT,
    SQL_DOUBLE,
    SQL_STRING,
    SQL_TIMESTAMP,
    SQL_ARRAY,      /* compact JSON array text; element type in the schema */
    SQL_JSON,       /* compact JSON text of any value */
} sql_type;

/* The SQL name of a type ("BIGINT"; "?" for a value outside the enum). */
const char *sql_type_name(sql_type t);

typedef struct sql_value {
    uint8_t type;       /* sql_type */
    uint8_t pad_[3];
    uint32_t len;       /* bytes of s (STRING, ARRAY, JSON) */
    union {
        bool b;         /* BOOLEAN */
        int64_t i;      /* BIGINT, TIMESTAMP (epoch ms) */
        double d;       /* DOUBLE */
        const char *s;  /* STRING (UTF-8, not NUL-terminated), ARRAY, JSON */
    } u;
} sql_value;

/* A row: `n` values in the column order of the schema or plan that made it.
 * Borrowed; the row and what its values point to belong to the producer. */
typedef struct sql_row {
    const sql_value *v;
    uint32_t n;
    int64_t rowtime;    /* event time, epoch ms (ROWTIME) */
} sql_row;

/* Window shape and emit mode of a view: the parser, the planner and the view
 * operator (sql_view) share them. EMIT DEFAULT is what the statement left
 * unsaid; the planner resolves it (to CHANGES) and sql_view reads it so. */
typedef enum sql_window_kind {
    SQL_WINDOW_NONE = 0, SQL_WINDOW_TUMBLING, SQL_WINDOW_HOPPING, SQL_WINDOW_SESSION,
} sql_window_kind;
typedef enum sql_emit { SQL_EMIT_DEFAULT = 0, SQL_EMIT_CHANGES, SQL_EMIT_FINAL } sql_emit;

static inline sql_value sql_null(void) { sql_value v = {0}; return v; }
static inline sql_value sql_bigint(int64_t i) { sql_value v = {.type = SQL_BIGINT}; v.u.i = i; return v; }
static inline sql_value sql_double(double d) { sql_value v = {.type = SQL_DOUBLE}; v.u.d = d; return v; }
static inline sql_value sql_bool(bool b) { sql_value v = {.type = SQL_BOOLEAN}; v.u.b = b; return v; }
static inline sql_value sql_timestamp(int64_t ms) { sql_value v = {.type = SQL_TIMESTAMP}; v.u.i = ms; return v; }
static inline sql_value sql_string(const char *s, uint32_t len)
{
    sql_value v = {.type = SQL_STRING, .len = len};
    v.u.s = s;
    return v;
}
static inline bool sql_is_null(sql_value v) { return v.type == SQL_NULL; }

/* Appends v to out: u8 type, then BOOLEAN u8, BIGINT/TIMESTAMP i64, DOUBLE
 * f64, STRING/ARRAY/JSON u32 length + bytes (docs/FORMATS.md). */
void sql_value_save(cf_buf *out, sql_value v);
/* Reads a value saved by sql_value_save; strings point into the reader's
 * input and may hold at most max_str bytes. False on truncated or invalid
 * input (*ret untouched). */
bool sql_value_load(cf_reader *in, size_t max_str, sql_value *ret);

#endif
