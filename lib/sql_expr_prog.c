/* sql_expr_prog: the SQL function table (SQL_FUNCS) with each function's
 * type rule, read by the planner, and building an expression program
 * (sql_expr.h): constants, instructions with their stack effect checked as
 * they come (a call's arity from the table), and program equality. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_expr_int.h"

#define PROG_MAX_CODE 65536
#define PROG_MAX_CONSTS 65536

/* -- function table ---------------------------------------------------------- */

static const struct {
    const char *name;
    uint32_t lo, hi;
    sql_func_rule rule;
} funcs[] = {
#define SQL_FUNC_ROW_(name, lo, hi, rule) {#name, lo, hi, rule},
    SQL_FUNCS(SQL_FUNC_ROW_)
#undef SQL_FUNC_ROW_
};

int sql_func_lookup(const char *s, size_t n)
{
    for (int i = 0; i < SQL_FN_COUNT_; i++)
        if (sql_ieq(s, n, funcs[i].name))
            return i;
    return -1;
}

const char *sql_func_name(sql_func f)
{
    return (unsigned)f < SQL_FN_COUNT_ ? funcs[f].name : "?";
}

void sql_func_arity(sql_func f, uint32_t *ret_min, uint32_t *ret_max)
{
    *ret_min = (unsigned)f < SQL_FN_COUNT_ ? funcs[f].lo : 0;
    *ret_max = (unsigned)f < SQL_FN_COUNT_ ? funcs[f].hi : 0;
}

static bool dyn(sql_type t)
{
    return t == SQL_NULL || t == SQL_JSON;
}

static bool is_num_type(sql_type t)
{
    return t == SQL_BIGINT || t == SQL_DOUBLE;
}

int sql_func_type(sql_func f, const sql_type *args, uint32_t n, sql_type *ret_type,
                  uint32_t *ret_bad_arg)
{
    if ((unsigned)f >= SQL_FN_COUNT_)
        return -EINVAL;
    sql_type rt = SQL_STRING;
    for (uint32_t i = 0; i < n; i++) {
        sql_type t = args[i];
        bool ok = dyn(t);
        switch (funcs[f].rule) {
        case SQL_FR_STR_STR:
        case SQL_FR_STR_BIGINT:
        case SQL_FR_STR2_STR:
            ok = ok || t == SQL_STRING;
            break;
        case SQL_FR_SUBSTRING:
            ok = ok || (i == 0 ? t == SQL_STRING : t == SQL_BIGINT);
            break;
        case SQL_FR_ANY_STR:
            ok = true;
            break;
        case SQL_FR_COMMON:
            ok = true;  /* checked below, across the arguments */
            break;
        case SQL_FR_NUMERIC:
            ok = ok || is_num_type(t);
            break;
        case SQL_FR_ROUND:
            ok = ok || (i == 0 ? is_num_type(t) : t == SQL_BIGINT);
            break;
        }
        if (!ok) {
            *ret_bad_arg = i;
            return -EINVAL;
        }
    }
    switch (funcs[f].rule) {
    case SQL_FR_STR_BIGINT:
        rt = SQL_BIGINT;
        break;
    case SQL_FR_NUMERIC:
        rt = dyn(args[0]) ? SQL_DOUBLE : args[0];
        break;
    case SQL_FR_ROUND:
        rt = n == 2 || dyn(args[0]) ? SQL_DOUBLE : args[0];
        break;
    case SQL_FR_COMMON:
        /* All of one type; BIGINT mixed with DOUBLE is DOUBLE; NULL and
         * JSON join anything (JSON only if nothing is known). */
        rt = SQL_NULL;
        for (uint32_t i = 0; i < n; i++) {
            sql_type t = args[i];
            if (t == SQL_NULL)
                continue;
            if (rt == SQL_NULL || rt == SQL_JSON) {
                rt = t;
            } else if (t == SQL_JSON || t == rt) {
                continue;
            } else if (is_num_type(t) && is_num_type(rt)) {
                rt = SQL_DOUBLE;
            } else {
                *ret_bad_arg = i;
                return -EINVAL;
            }
        }
        break;
    default:
        break;
    }
    *ret_type = rt;
    return 0;
}

/* -- program building ---------------------------------------------------------- */

sql_prog *sql_prog_new(void)
{
    sql_prog *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    if (!(p->arena = sql_arena_new())) {
        free(p);
        return NULL;
    }
    return p;
}

void sql_prog_free(sql_prog *p)
{
    if (!p)
        return;
    free(p->code);
    free(p->consts);
    sql_arena_free(p->arena);
    free(p);
}

int sql_prog_const(sql_prog *p, sql_value v)
{
    if (p->bad)
        return -EINVAL;
    if (p->nconst == PROG_MAX_CONSTS)
        return p->bad = true, -E2BIG;
    if (p->nconst == p->capconst) {
        uint32_t cap = p->capconst ? p->capconst * 2 : 8;
        sql_value *c = realloc(p->consts, cap * sizeof *c);
        if (!c)
            return p->bad = true, -ENOMEM;
        p->consts = c;
        p->capconst = cap;
    }
    if (v.type == SQL_STRING || v.type == SQL_ARRAY || v.type == SQL_JSON) {
        char *s = sql_arena_strndup(p->arena, v.u.s, v.len);
        if (!s)
            return p->bad = true, -ENOMEM;
        v.u.s = s;
    }
    memset(v.pad_, 0, sizeof v.pad_);
    p->consts[p->nconst] = v;
    return (int)p->nconst++;
}

/* Values an instruction pops and pushes. */
static int stack_effect(const sql_prog *p, sql_vm_op op, uint32_t a, uint32_t b,
                        uint32_t *ret_pop, uint32_t *ret_push)
{
    uint32_t pop = 0, push = 1;
    switch (op) {
    case SQL_VM_CONST:
        if (a >= p->nconst)
            return -EINVAL;
        break;
    case SQL_VM_COL:
    case SQL_VM_ROWTIME:
        break;
    case SQL_VM_PATH:
        if (b == 0 || a >= p->nconst || b > p->nconst - a)
            return -EINVAL;
        for (uint32_t i = a; i < a + b; i++)
            if (p->consts[i].type != SQL_STRING)
                return -EINVAL;
        pop = 1;
        break;
    case SQL_VM_NEG:
    case SQL_VM_NOT:
    case SQL_VM_IS_NULL:
        pop = 1;
        break;
    case SQL_VM_CAST:
        if (a > SQL_JSON || a == SQL_NULL)
            return -EINVAL;
        pop = 1;
        break;
    case SQL_VM_IN:
        if (a == 0 || a > SQL_PROG_MAX_STACK)
            return -EINVAL;
        pop = a + 1;
        break;
    case SQL_VM_BETWEEN:
        pop = 3;
        break;
    case SQL_VM_CASE:
        if (a == 0 || a > SQL_PROG_MAX_STACK)
            return -EINVAL;
        pop = 2 * a + 1;
        break;
    case SQL_VM_CALL: {
        if (a >= SQL_FN_COUNT_ || b < funcs[a].lo || b > funcs[a].hi)
            return -EINVAL;
        pop = b;
        break;
    }
    case SQL_VM_ADD: case SQL_VM_SUB: case SQL_VM_MUL: case SQL_VM_DIV: case SQL_VM_MOD:
    case SQL_VM_EQ: case SQL_VM_NE: case SQL_VM_LT: case SQL_VM_LE: case SQL_VM_GT:
    case SQL_VM_GE: case SQL_VM_AND: case SQL_VM_OR: case SQL_VM_LIKE:
        pop = 2;
        break;
    default:
        return -EINVAL;
    }
    *ret_pop = pop;
    *ret_push = push;
    return 0;
}

int sql_prog_emit(sql_prog *p, sql_vm_op op, uint32_t a, uint32_t b)
{
    if (p->bad)
        return -EINVAL;
    uint32_t pop, push;
    if (stack_effect(p, op, a, b, &pop, &push) < 0 || pop > p->depth)
        return p->bad = true, -EINVAL;
    if (p->ncode == PROG_MAX_CODE)
        return p->bad = true, -E2BIG;
    uint32_t depth = p->depth - pop + push;
    if (depth > SQL_PROG_MAX_STACK)
        return p->bad = true, -E2BIG;
    if (p->ncode == p->capcode) {
        uint32_t cap = p->capcode ? p->capcode * 2 : 16;
        sql_ins *c = realloc(p->code, cap * sizeof *c);
        if (!c)
            return p->bad = true, -ENOMEM;
        p->code = c;
        p->capcode = cap;
    }
    p->code[p->ncode++] = (sql_ins){(uint32_t)op, a, b};
    p->depth = depth;
    if (depth > p->max_depth)
        p->max_depth = depth;
    return 0;
}

bool sql_prog_ready(const sql_prog *p)
{
    return p && !p->bad && p->depth == 1;
}

uint32_t sql_prog_length(const sql_prog *p)
{
    return p ? p->ncode : 0;
}

static bool value_identical(sql_value a, sql_value b)
{
    if (a.type != b.type)
        return false;
    switch (a.type) {
    case SQL_NULL: return true;
    case SQL_BOOLEAN: return a.u.b == b.u.b;
    case SQL_BIGINT:
    case SQL_TIMESTAMP: return a.u.i == b.u.i;
    case SQL_DOUBLE: return memcmp(&a.u.d, &b.u.d, sizeof a.u.d) == 0;
    default: return a.len == b.len && (a.len == 0 || memcmp(a.u.s, b.u.s, a.len) == 0);
    }
}

bool sql_prog_equal(const sql_prog *a, const sql_prog *b)
{
    if (!a || !b || a->ncode != b->ncode)
        return false;
    for (uint32_t i = 0; i < a->ncode; i++) {
        sql_ins x = a->code[i], y = b->code[i];
        if (x.op != y.op || x.b != y.b)
            return false;
        if (x.op == SQL_VM_CONST) {
            if (!value_identical(a->consts[x.a], b->consts[y.a]))
                return false;
        } else if (x.op == SQL_VM_PATH) {
            for (uint32_t k = 0; k < x.b; k++)
                if (!value_identical(a->consts[x.a + k], b->consts[y.a + k]))
                    return false;
        } else if (x.a != y.a) {
            return false;
        }
    }
    return true;
}
