/* sql_expr_int.h: what the sql_expr modules share, inside lib only: the
 * program's layout and the helpers one module defines for another.
 *   sql_expr.c        the machine: sql_prog_eval, its operators and
 *                     comparisons
 *   sql_expr_prog.c   the function table and its type rules, and program
 *                     building (sql_prog_emit and the rest)
 *   sql_expr_json.c   reading JSON fields of the event, writing values as JSON
 *   sql_expr_cast.c   conversions (CAST, text of a value)
 *   sql_expr_call.c   the SQL functions and LIKE */
#ifndef SQL_EXPR_INT_H
#define SQL_EXPR_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sql_expr.h"

typedef struct sql_ins {
    uint32_t op;
    uint32_t a;
    uint32_t b;
} sql_ins;

struct sql_prog {
    sql_ins *code;
    uint32_t ncode, capcode;
    sql_value *consts;
    uint32_t nconst, capconst;
    sql_arena *arena;   /* constant strings */
    uint32_t depth;     /* stack depth after the last instruction */
    uint32_t max_depth;
    bool bad;
};

/* -- scratch ------------------------------------------------------------------- */

static inline char *scratch_alloc(sql_scratch *s, size_t n)
{
    if (!s || !s->buf || s->cap - s->used < n || s->used > s->cap)
        return NULL;
    char *p = s->buf + s->used;
    s->used += n;
    return p;
}

static inline bool is_int(sql_value v)
{
    return v.type == SQL_BIGINT || v.type == SQL_TIMESTAMP;
}

static inline bool is_num(sql_value v)
{
    return is_int(v) || v.type == SQL_DOUBLE;
}

/* ---- sql_expr_json.c ---- */

/* Finds key in the JSON object at [i, n) of s: sets the value's span. */
bool sql_expr_json_field(const char *s, size_t n, const char *key, size_t klen, size_t *ret_b,
                         size_t *ret_e);
/* A JSON value's text as a typed SQL value (strings unescaped into the
 * scratch). */
int sql_expr_json_natural(const char *s, size_t n, sql_scratch *scratch, sql_value *ret);

/* natural is inline here: the machine runs it for every JSON value it
 * loads; out of line, the call took a fifth of sql_bench's eval samples
 * (perf), where the one file had it inlined. */
/* A JSON (or ARRAY) value as its natural type; others unchanged. */
static inline int sql_expr_natural(sql_value v, sql_scratch *scratch, sql_value *ret)
{
    if (v.type != SQL_JSON) {
        *ret = v;
        return 0;
    }
    return sql_expr_json_natural(v.u.s, v.len, scratch, ret);
}

/* ---- sql_expr_cast.c ---- */

/* v as text: borrowed or in the scratch. */
int sql_expr_to_text(sql_value v, sql_scratch *scratch, const char **ret_s, size_t *ret_n);
/* CAST(v AS to); a failed one gives NULL. */
int sql_expr_cast(sql_value v, sql_type to, sql_scratch *scratch, sql_value *ret);

/* ---- sql_expr_call.c ---- */

/* s LIKE p. */
bool sql_expr_like_match(const char *s, size_t sn, const char *p, size_t pn);
/* The SQL function f of n args (NULL rules applied by the caller). */
int sql_expr_call(sql_func f, sql_value *args, uint32_t n, sql_scratch *scratch, sql_value *ret);

#endif
