/* sql_expr: expression programs. The planner (sql_plan) compiles each bound
 * SQL expression into a flat program for a small stack machine; the
 * runtime evaluates it once per row with no allocation: the value stack is
 * a fixed array on the C stack (programs deeper than SQL_PROG_MAX_STACK are
 * refused when built) and strings a program makes (LOWER, CONCAT, CAST,
 * JSON unescaping, URL decoding) go to a caller-provided scratch arena that
 * the caller resets per row.
 *
 * NULL rules (SPEC 13), one place for all of them: an operator or function
 * with a NULL operand gives NULL (except IS [NOT] NULL, COALESCE, CONCAT,
 * and AND/OR, which are three-valued: FALSE AND NULL is FALSE, TRUE OR NULL
 * is TRUE); a comparison of values that can't be compared (a JSON field
 * holding a string against a number) is NULL; x / 0 and x % 0 are NULL, as
 * is a DOUBLE result that is not finite (JSON has no inf or NaN);
 * BIGINT arithmetic that overflows gives the DOUBLE result; a failed CAST
 * is NULL. Values are dynamically typed at run time, so a JSON field
 * (`properties.plan`) takes the type of what the event holds.
 *
 * The SQL functions are one X-macro table (SQL_FUNCS) with arity and type
 * rule, read by the planner (type checking) and by the VM (dispatch). */
#ifndef SQL_EXPR_H
#define SQL_EXPR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sql_str.h"
#include "sql_value.h"

#define SQL_PROG_MAX_STACK 64
#define SQL_FUNC_MAX_ARGS 32

/* Type rules of the functions; see sql_func_type(). */
typedef enum sql_func_rule {
    SQL_FR_STR_STR,        /* f(STRING) -> STRING */
    SQL_FR_STR_BIGINT,     /* f(STRING) -> BIGINT */
    SQL_FR_SUBSTRING,      /* f(STRING, BIGINT [, BIGINT]) -> STRING */
    SQL_FR_ANY_STR,        /* f(any...) -> STRING (CONCAT: each as CAST(x AS STRING)) */
    SQL_FR_COMMON,         /* f(t, t, ...) -> t (COALESCE; BIGINT with DOUBLE is DOUBLE) */
    SQL_FR_NUMERIC,        /* f(BIGINT|DOUBLE) -> the same type */
    SQL_FR_ROUND,          /* f(n) -> type of n; f(n, BIGINT digits) -> DOUBLE */
    SQL_FR_STR2_STR,       /* f(STRING, STRING) -> STRING */
} sql_func_rule;

/* X(name, min_args, max_args, rule) */
#define SQL_FUNCS(X)                                  \
    X(LOWER, 1, 1, SQL_FR_STR_STR)                    \
    X(UPPER, 1, 1, SQL_FR_STR_STR)                    \
    X(LENGTH, 1, 1, SQL_FR_STR_BIGINT)                \
    X(SUBSTRING, 2, 3, SQL_FR_SUBSTRING)              \
    X(CONCAT, 1, SQL_FUNC_MAX_ARGS, SQL_FR_ANY_STR)   \
    X(COALESCE, 1, SQL_FUNC_MAX_ARGS, SQL_FR_COMMON)  \
    X(ABS, 1, 1, SQL_FR_NUMERIC)                      \
    X(ROUND, 1, 2, SQL_FR_ROUND)                      \
    X(FLOOR, 1, 1, SQL_FR_NUMERIC)                    \
    X(CEIL, 1, 1, SQL_FR_NUMERIC)                     \
    X(URL_HOST, 1, 1, SQL_FR_STR_STR)                 \
    X(URL_PATH, 1, 1, SQL_FR_STR_STR)                 \
    X(URL_PARAM, 2, 2, SQL_FR_STR2_STR)

typedef enum sql_func {
#define SQL_FUNC_ENUM_(name, lo, hi, rule) SQL_FN_##name,
    SQL_FUNCS(SQL_FUNC_ENUM_)
#undef SQL_FUNC_ENUM_
    SQL_FN_COUNT_
} sql_func;

/* The function named s (n bytes, case-insensitive), or -1. */
int sql_func_lookup(const char *s, size_t n);
const char *sql_func_name(sql_func f);
void sql_func_arity(sql_func f, uint32_t *ret_min, uint32_t *ret_max);

/* Static typing of a call: the argument types (SQL_NULL for a NULL literal,
 * SQL_JSON for a JSON value whose type is known only at run time; both are
 * accepted anywhere). Returns 0 with *ret_type, or -EINVAL with
 * *ret_bad_arg = the 0-based argument of the wrong type. Arity is the
 * caller's check. */
int sql_func_type(sql_func f, const sql_type *args, uint32_t n, sql_type *ret_type,
                  uint32_t *ret_bad_arg);

/* The instructions. Stack effect in brackets. */
typedef enum sql_vm_op {
    SQL_VM_CONST,    /* [+1] push constant a */
    SQL_VM_COL,      /* [+1] push column a of the row (NULL past its end) */
    SQL_VM_ROWTIME,  /* [+1] push the row's event time as TIMESTAMP */
    SQL_VM_PATH,     /* [0] replace a JSON value by its field path: constants a..a+b-1 */
    SQL_VM_ADD, SQL_VM_SUB, SQL_VM_MUL, SQL_VM_DIV, SQL_VM_MOD,  /* [-1] */
    SQL_VM_NEG,      /* [0] */
    SQL_VM_EQ, SQL_VM_NE, SQL_VM_LT, SQL_VM_LE, SQL_VM_GT, SQL_VM_GE, /* [-1] */
    SQL_VM_AND, SQL_VM_OR, /* [-1] three-valued */
    SQL_VM_NOT,      /* [0] */
    SQL_VM_IS_NULL,  /* [0] a = 1 for IS NOT NULL */
    SQL_VM_IN,       /* [-a] x, a list values -> BOOLEAN */
    SQL_VM_LIKE,     /* [-1] value, pattern */
    SQL_VM_BETWEEN,  /* [-2] x, lo, hi */
    SQL_VM_CASE,     /* [-2a] a (condition, result) pairs then the ELSE value */
    SQL_VM_CAST,     /* [0] a = target sql_type */
    SQL_VM_CALL,     /* [1-b] function a with b arguments */
    SQL_VM_OP_COUNT_
} sql_vm_op;

typedef struct sql_prog sql_prog;

/* An empty program. Returns NULL on OOM. */
sql_prog *sql_prog_new(void);
/* Accepts NULL. */
void sql_prog_free(sql_prog *p);

/* Appends an instruction. Returns 0, -EINVAL (bad operands, stack
 * underflow), -E2BIG (stack deeper than SQL_PROG_MAX_STACK or too many
 * instructions) or -ENOMEM; after a failure the program is unusable. */
int sql_prog_emit(sql_prog *p, sql_vm_op op, uint32_t a, uint32_t b);
/* Adds a constant (string bytes are copied into the program) and returns
 * its index, or a negative errno. */
int sql_prog_const(sql_prog *p, sql_value v);
/* True when the program leaves exactly one value: ready to evaluate. */
bool sql_prog_ready(const sql_prog *p);
uint32_t sql_prog_length(const sql_prog *p);

/* True when both programs compute the same thing the same way (same code
 * and constants): the planner's test for "this SELECT expression is that
 * GROUP BY key". */
bool sql_prog_equal(const sql_prog *a, const sql_prog *b);

/* Where a program's strings go. The caller owns buf and resets `used` to 0
 * whenever the values of earlier evaluations are no longer needed. */
typedef struct sql_scratch {
    char *buf;
    size_t cap;
    size_t used;
} sql_scratch;

/* Evaluates p over row into *ret. The result may point into the row, the
 * program's constants or the scratch. Returns 0, or -ENOSPC when the
 * scratch is too small (nothing else can fail at run time). O(program
 * length) plus the string work of its functions. */
int sql_prog_eval(const sql_prog *p, const sql_row *row, sql_scratch *scratch, sql_value *ret);

/* For WHERE: true only for a BOOLEAN TRUE result. */
static inline bool sql_value_is_true(sql_value v)
{
    return v.type == SQL_BOOLEAN && v.u.b;
}

/* Three-way comparison as used by `<` and ORDER BY: returns -1, 0 or 1, or
 * -2 when the two can't be compared (either NULL, or different kinds).
 * Numbers compare by value whatever their type. */
int sql_value_compare(sql_value a, sql_value b);

/* Appends v as JSON (strings escaped; TIMESTAMP as epoch ms; ARRAY and
 * JSON as their text; NULL as null). */
void sql_value_to_json(sql_value v, sql_sb *sb);

#endif
