/* sql_expr: the expression stack machine and the SQL functions (see
 * sql_expr.h). Each operator's NULL rule is written once, in its case of
 * sql_prog_eval(). */
#include "sql_expr.h"

#include "sql_expr.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#include "cf_time.h"
#include "sql_expr_int.h"

/* -- comparisons ------------------------------------------------------------------- */

static int cmp_i(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static int cmp_num(sql_value a, sql_value b)
{
    if (is_int(a) && is_int(b))
        return cmp_i(a.u.i, b.u.i);
    if (a.type == SQL_DOUBLE && b.type == SQL_DOUBLE)
        return a.u.d < b.u.d ? -1 : a.u.d > b.u.d ? 1 : a.u.d == b.u.d ? 0 : -2;
    /* int64 against double: exact, without rounding the integer. */
    bool flip = a.type == SQL_DOUBLE;
    int64_t i = flip ? b.u.i : a.u.i;
    double d = flip ? a.u.d : b.u.d;
    int r;
    if (isnan(d))
        return -2;
    if (d >= 9223372036854775808.0)
        r = -1;
    else if (d < -9223372036854775808.0)
        r = 1;
    else {
        double fl = floor(d);
        int64_t di = (int64_t)fl;
        r = i < di ? -1 : i > di ? 1 : (fl < d ? -1 : 0);
    }
    return flip ? -r : r;
}

static int cmp_bytes(const char *a, size_t an, const char *b, size_t bn)
{
    size_t n = an < bn ? an : bn;
    int c = n ? memcmp(a, b, n) : 0;
    if (c)
        return c < 0 ? -1 : 1;
    return an < bn ? -1 : an > bn;
}

int sql_value_compare(sql_value a, sql_value b)
{
    if (a.type == SQL_NULL || b.type == SQL_NULL)
        return -2;
    if (is_num(a) && is_num(b))
        return cmp_num(a, b);
    /* A TIMESTAMP against an RFC 3339 string literal. */
    if ((a.type == SQL_TIMESTAMP && b.type == SQL_STRING) ||
        (a.type == SQL_STRING && b.type == SQL_TIMESTAMP)) {
        sql_value s = a.type == SQL_STRING ? a : b;
        int64_t ms;
        if (cf_rfc3339_parse(s.u.s, s.len, &ms) < 0)
            return -2;
        return a.type == SQL_STRING ? cmp_i(ms, b.u.i) : cmp_i(a.u.i, ms);
    }
    if (a.type != b.type)
        return -2;
    switch (a.type) {
    case SQL_BOOLEAN: return cmp_i(a.u.b, b.u.b);
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON: return cmp_bytes(a.u.s, a.len, b.u.s, b.len);
    default: return -2;
    }
}

/* -- arithmetic ---------------------------------------------------------------------------- */

static sql_value arith(sql_vm_op op, sql_value a, sql_value b)
{
    if (!is_num(a) || !is_num(b))
        return sql_null();
    if (is_int(a) && is_int(b)) {
        int64_t x = a.u.i, y = b.u.i, r;
        switch (op) {
        case SQL_VM_ADD:
            if (!__builtin_add_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x + (double)y);
        case SQL_VM_SUB:
            if (!__builtin_sub_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x - (double)y);
        case SQL_VM_MUL:
            if (!__builtin_mul_overflow(x, y, &r))
                return sql_bigint(r);
            return sql_double((double)x * (double)y);
        case SQL_VM_DIV:
            if (y == 0)
                return sql_null();
            if (x == INT64_MIN && y == -1)
                return sql_double(-(double)INT64_MIN);
            return sql_bigint(x / y);
        default: /* MOD */
            if (y == 0)
                return sql_null();
            if (y == -1)
                return sql_bigint(0);
            return sql_bigint(x % y);
        }
    }
    double x = is_int(a) ? (double)a.u.i : a.u.d;
    double y = is_int(b) ? (double)b.u.i : b.u.d;
    double r;
    switch (op) {
    case SQL_VM_ADD: r = x + y; break;
    case SQL_VM_SUB: r = x - y; break;
    case SQL_VM_MUL: r = x * y; break;
    case SQL_VM_DIV:
        if (y == 0)
            return sql_null();
        r = x / y;
        break;
    default:
        if (y == 0)
            return sql_null();
        r = fmod(x, y);
        break;
    }
    /* JSON has no infinities or NaN, and NaN compares with nothing: a
     * result that is not a finite number is NULL, like x / 0. */
    return isfinite(r) ? sql_double(r) : sql_null();
}

/* Three-valued logic: -1 NULL (or not a boolean), 0 FALSE, 1 TRUE. */
static int tv(sql_value v)
{
    return v.type == SQL_BOOLEAN ? v.u.b : -1;
}

/* -- the machine ------------------------------------------------------------------------------ */

/* In-place writers for the stack: field by field. Assigning a value an
 * inline constructor returns (st[i] = sql_bool(r)) made GCC build it on the
 * stack with narrow stores and copy it with a 16-byte load that cannot be
 * forwarded from them: a store-forwarding stall per operation, and another
 * when the next operation reloads the slot (as click_row's columns were,
 * 6df63f4). The header's four stores merge into one 8-byte store. */
static inline void vm_set(sql_value *v, uint8_t type, int64_t i)
{
    v->type = type;
    v->pad_[0] = v->pad_[1] = v->pad_[2] = 0;
    v->len = 0;
    v->u.i = i;
}

static inline void vm_null(sql_value *v)
{
    vm_set(v, SQL_NULL, 0);
}

/* A BOOLEAN, its union zeroed as sql_bool's is, then the flag. */
static inline void vm_bool(sql_value *v, bool b)
{
    vm_set(v, SQL_BOOLEAN, 0);
    v->u.b = b;
}

/* A truth value (-1 unknown, 0, 1) as NULL or BOOLEAN. */
static inline void vm_tv(sql_value *v, int t)
{
    if (t < 0)
        vm_null(v);
    else
        vm_bool(v, t != 0);
}

/* Copies a value as two 8-byte halves, each loadable from the store that
 * wrote it (a 16-byte load spanning two stores is not). */
static inline void vm_copy(sql_value *dst, const sql_value *src)
{
    uint64_t h[2];
    memcpy(h, src, sizeof h);
    memcpy(dst, h, sizeof h);
}

int sql_prog_eval(const sql_prog *p, const sql_row *row, sql_scratch *scratch, sql_value *ret)
{
    sql_value st[SQL_PROG_MAX_STACK + 1];
    uint32_t sp = 0;
    int rc = 0;
    if (!sql_prog_ready(p)) {
        vm_null(ret);
        return -EINVAL;
    }
    for (uint32_t pc = 0; pc < p->ncode; pc++) {
        sql_ins in = p->code[pc];
        switch ((sql_vm_op)in.op) {
        case SQL_VM_CONST:
            st[sp++] = p->consts[in.a];
            break;
        case SQL_VM_COL:
            if (row && in.a < row->n)
                st[sp++] = row->v[in.a];
            else
                vm_null(&st[sp++]);
            break;
        case SQL_VM_ROWTIME:
            vm_set(&st[sp++], SQL_TIMESTAMP, row ? row->rowtime : 0);
            break;
        case SQL_VM_PATH: {
            sql_value v = st[sp - 1];
            if (v.type != SQL_JSON) {
                vm_null(&st[sp - 1]);
                break;
            }
            const char *s = v.u.s;
            size_t n = v.len;
            bool found = true;
            for (uint32_t k = 0; k < in.b && found; k++) {
                sql_value key = p->consts[in.a + k];
                size_t b, e;
                found = sql_expr_json_field(s, n, key.u.s, key.len, &b, &e);
                if (found) {
                    s += b;
                    n = e - b;
                }
            }
            if (!found)
                vm_null(&st[sp - 1]);
            else if ((rc = sql_expr_json_natural(s, n, scratch, &st[sp - 1])) < 0)
                return rc;
            break;
        }
        case SQL_VM_ADD: case SQL_VM_SUB: case SQL_VM_MUL: case SQL_VM_DIV: case SQL_VM_MOD: {
            sql_value a, b;
            if ((rc = sql_expr_natural(st[sp - 2], scratch, &a)) < 0 || (rc = sql_expr_natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            st[sp - 1] = arith((sql_vm_op)in.op, a, b);
            break;
        }
        case SQL_VM_NEG: {
            sql_value a;
            if ((rc = sql_expr_natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            if (is_int(a))
                st[sp - 1] = a.u.i == INT64_MIN ? sql_double(-(double)INT64_MIN) : sql_bigint(-a.u.i);
            else if (a.type == SQL_DOUBLE)
                st[sp - 1] = sql_double(-a.u.d);
            else
                st[sp - 1] = sql_null();
            break;
        }
        case SQL_VM_EQ: case SQL_VM_NE: case SQL_VM_LT: case SQL_VM_LE: case SQL_VM_GT: case SQL_VM_GE: {
            sql_value a, b;
            if ((rc = sql_expr_natural(st[sp - 2], scratch, &a)) < 0 || (rc = sql_expr_natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            int c = sql_value_compare(a, b);
            bool r;
            switch ((sql_vm_op)in.op) {
            case SQL_VM_EQ: r = c == 0; break;
            case SQL_VM_NE: r = c != 0; break;
            case SQL_VM_LT: r = c < 0; break;
            case SQL_VM_LE: r = c <= 0; break;
            case SQL_VM_GT: r = c > 0; break;
            default: r = c >= 0; break;
            }
            if (c == -2)
                vm_null(&st[sp - 1]);
            else
                vm_bool(&st[sp - 1], r);
            break;
        }
        case SQL_VM_AND:
        case SQL_VM_OR: {
            sql_value a, b;
            if ((rc = sql_expr_natural(st[sp - 2], scratch, &a)) < 0 || (rc = sql_expr_natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            int x = tv(a), y = tv(b), r;
            sp--;
            if (in.op == SQL_VM_AND)
                r = (x == 0 || y == 0) ? 0 : (x < 0 || y < 0) ? -1 : 1;
            else
                r = (x == 1 || y == 1) ? 1 : (x < 0 || y < 0) ? -1 : 0;
            vm_tv(&st[sp - 1], r);
            break;
        }
        case SQL_VM_NOT: {
            sql_value a;
            if ((rc = sql_expr_natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            int x = tv(a);
            vm_tv(&st[sp - 1], x < 0 ? -1 : !x);
            break;
        }
        case SQL_VM_IS_NULL: {
            /* A JSON null is NULL too. */
            sql_value a;
            if ((rc = sql_expr_natural(st[sp - 1], scratch, &a)) < 0)
                return rc;
            bool isnull = a.type == SQL_NULL;
            vm_bool(&st[sp - 1], in.a ? !isnull : isnull);
            break;
        }
        case SQL_VM_IN: {
            /* x IN (a, b) is x = a OR x = b. */
            uint32_t base = sp - in.a - 1;
            sql_value x;
            if ((rc = sql_expr_natural(st[base], scratch, &x)) < 0)
                return rc;
            int r = 0;
            for (uint32_t k = 0; k < in.a && r != 1; k++) {
                sql_value y;
                if ((rc = sql_expr_natural(st[base + 1 + k], scratch, &y)) < 0)
                    return rc;
                int c = sql_value_compare(x, y);
                if (c == 0)
                    r = 1;
                else if (c == -2)
                    r = -1;
            }
            sp = base + 1;
            vm_tv(&st[base], r);
            break;
        }
        case SQL_VM_LIKE: {
            sql_value a, b;
            if ((rc = sql_expr_natural(st[sp - 2], scratch, &a)) < 0 || (rc = sql_expr_natural(st[sp - 1], scratch, &b)) < 0)
                return rc;
            sp--;
            if (a.type != SQL_STRING || b.type != SQL_STRING)
                vm_null(&st[sp - 1]);
            else
                vm_bool(&st[sp - 1], sql_expr_like_match(a.u.s, a.len, b.u.s, b.len));
            break;
        }
        case SQL_VM_BETWEEN: {
            sql_value x, lo, hi;
            if ((rc = sql_expr_natural(st[sp - 3], scratch, &x)) < 0 || (rc = sql_expr_natural(st[sp - 2], scratch, &lo)) < 0 ||
                (rc = sql_expr_natural(st[sp - 1], scratch, &hi)) < 0)
                return rc;
            sp -= 2;
            int c1 = sql_value_compare(x, lo), c2 = sql_value_compare(x, hi);
            int t1 = c1 == -2 ? -1 : c1 >= 0, t2 = c2 == -2 ? -1 : c2 <= 0;
            int r = (t1 == 0 || t2 == 0) ? 0 : (t1 < 0 || t2 < 0) ? -1 : 1;
            vm_tv(&st[sp - 1], r);
            break;
        }
        case SQL_VM_CASE: {
            uint32_t base = sp - 2 * in.a - 1;
            sql_value r = st[sp - 1];
            for (uint32_t k = 0; k < in.a; k++) {
                sql_value c;
                if ((rc = sql_expr_natural(st[base + 2 * k], scratch, &c)) < 0)
                    return rc;
                if (sql_value_is_true(c)) {
                    r = st[base + 2 * k + 1];
                    break;
                }
            }
            sp = base + 1;
            st[base] = r;
            break;
        }
        case SQL_VM_CAST:
            if ((rc = sql_expr_cast(st[sp - 1], (sql_type)in.a, scratch, &st[sp - 1])) < 0)
                return rc;
            break;
        case SQL_VM_CALL: {
            uint32_t base = sp - in.b;
            sql_value r;
            if ((rc = sql_expr_call((sql_func)in.a, &st[base], in.b, scratch, &r)) < 0)
                return rc;
            sp = base + 1;
            st[base] = r;
            break;
        }
        default:
            vm_null(ret);
            return -EINVAL;
        }
    }
    vm_copy(ret, &st[0]);
    return 0;
}
