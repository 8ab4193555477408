/* sql_plan_bind: the binder (see sql_plan_int.h). One binder walks each
 * expression once, resolving names, emitting its program and computing its
 * static type; the three row layouts (input, group, pull) are its modes. */
#include "sql_plan_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_lex.h"

static const struct {
    const char *name;
    uint32_t lo, hi;
} aggs_table[] = {
#define SQL_PLAN_FN_ROW_(name, lo, hi) {#name, lo, hi},
    SQL_PLAN_FNS(SQL_PLAN_FN_ROW_)
#undef SQL_PLAN_FN_ROW_
};

const char *sql_plan_fn_name(sql_plan_fn k)
{
    return (unsigned)k < SQL_PLAN_FN_COUNT_ ? aggs_table[k].name : "?";
}

static int agg_lookup(const char *s)
{
    for (int i = 0; i < SQL_PLAN_FN_COUNT_; i++)
        if (sql_ieq(s, strlen(s), aggs_table[i].name))
            return i;
    return -1;
}

static int bfail(binder *b, int line, int col, const char *fmt, ...)
{
    /* The first error only: later ones are its consequences. */
    if (!b->failed) {
        b->failed = true;
        va_list ap;
        va_start(ap, fmt);
        sql_error_vset(b->err, line, col, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int emit(binder *b, const sql_expr *e, sql_prog *g, sql_vm_op op, uint32_t a, uint32_t c)
{
    int rc = sql_prog_emit(g, op, a, c);
    if (rc == -E2BIG)
        return bfail(b, e->line, e->column, "expression too complex");
    if (rc < 0)
        return bfail(b, e->line, e->column, "out of memory");
    return 0;
}

static int emit_const(binder *b, const sql_expr *e, sql_prog *g, sql_value v)
{
    int k = sql_prog_const(g, v);
    if (k < 0)
        return bfail(b, e->line, e->column, k == -E2BIG ? "expression too complex" : "out of memory");
    return emit(b, e, g, SQL_VM_CONST, (uint32_t)k, 0);
}

static bool dyn_t(sql_type t)
{
    return t == SQL_NULL || t == SQL_JSON;
}

static bool num_t(sql_type t)
{
    return t == SQL_BIGINT || t == SQL_DOUBLE || t == SQL_TIMESTAMP;
}

bool sql_bind_comparable(sql_type a, sql_type b)
{
    if (dyn_t(a) || dyn_t(b) || a == b)
        return true;
    if (num_t(a) && num_t(b))
        return true;
    return (a == SQL_TIMESTAMP && b == SQL_STRING) || (a == SQL_STRING && b == SQL_TIMESTAMP);
}

/* The common type of two branch results (CASE), or -1. */
static int common_type(sql_type a, sql_type b)
{
    if (a == SQL_NULL)
        return b;
    if (b == SQL_NULL || a == b)
        return a;
    if (a == SQL_JSON || b == SQL_JSON)
        return SQL_JSON;
    if ((a == SQL_BIGINT || a == SQL_DOUBLE) && (b == SQL_BIGINT || b == SQL_DOUBLE))
        return SQL_DOUBLE;
    return -1;
}

static bool is_agg_call(const sql_expr *e)
{
    return e->kind == SQL_EXPR_CALL && agg_lookup(e->name) >= 0;
}

bool sql_bind_contains_agg(const sql_expr *e)
{
    if (!e)
        return false;
    if (is_agg_call(e))
        return true;
    if (sql_bind_contains_agg(e->a) || sql_bind_contains_agg(e->b) || sql_bind_contains_agg(e->c))
        return true;
    for (uint32_t i = 0; i < e->nlist; i++)
        if (sql_bind_contains_agg(e->list[i]))
            return true;
    return false;
}

/* The first aggregate call in e (for error positions), or NULL. */
const sql_expr *sql_bind_first_agg(const sql_expr *e)
{
    if (!e)
        return NULL;
    if (is_agg_call(e))
        return e;
    const sql_expr *f = sql_bind_first_agg(e->a);
    if (!f)
        f = sql_bind_first_agg(e->b);
    if (!f)
        f = sql_bind_first_agg(e->c);
    for (uint32_t i = 0; !f && i < e->nlist; i++)
        f = sql_bind_first_agg(e->list[i]);
    return f;
}

static size_t node_count(const sql_expr *e, size_t limit)
{
    if (!e || limit == 0)
        return 0;
    size_t n = 1 + node_count(e->a, limit) + node_count(e->b, limit) + node_count(e->c, limit);
    for (uint32_t i = 0; i < e->nlist && n <= limit; i++)
        n += node_count(e->list[i], limit);
    return n;
}

char *sql_bind_expr_text(sql_plan *p, const sql_expr *e)
{
    sql_sb sb = {0};
    sql_expr_to_sql(e, &sb);
    char *s = sb.oom || !sb.data ? NULL : sql_arena_strndup(p->arena, sb.data, sb.len);
    sql_sb_free(&sb);
    return s;
}

static int compile(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type);

/* A name: [qualifier.]column[.json.path]. */
static int compile_name(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type)
{
    int si = -1, ci = -1;
    uint32_t first_path = 1;
    const char *col = e->parts[0];
    /* alias.column first, when the first part names a source. */
    if (e->nparts >= 2) {
        for (int s = 0; s < b->nsrc; s++) {
            if (b->src[s].qual && strcmp(b->src[s].qual, e->parts[0]) == 0 && b->src[s].ncols > 0 &&
                s != 2) {
                si = s;
                break;
            }
        }
        if (si >= 0) {
            col = e->parts[1];
            first_path = 2;
            for (uint32_t c = 0; c < b->src[si].ncols; c++)
                if (strcmp(b->src[si].cols[c].name, col) == 0)
                    ci = (int)c;
            if (ci < 0)
                return bfail(b, e->line, e->column, "unknown column '%s' in '%s'", col, b->src[si].qual);
        }
    }
    if (si < 0) {
        for (int s = 0; s < b->nsrc; s++) {
            for (uint32_t c = 0; c < b->src[s].ncols; c++) {
                if (strcmp(b->src[s].cols[c].name, col) != 0)
                    continue;
                if (si >= 0 && si != s)
                    return bfail(b, e->line, e->column,
                                 "column '%s' is ambiguous: qualify it as %s.%s or %s.%s", col,
                                 b->src[si].qual, col, b->src[s].qual, col);
                si = s;
                ci = (int)c;
                break;
            }
        }
        if (si < 0) {
            for (int s = 0; s < b->nsrc; s++)
                if (b->src[s].qual && strcmp(b->src[s].qual, col) == 0 && s != 2)
                    return bfail(b, e->line, e->column,
                                 "'%s' names a source, not a column: write %s.column", col, col);
            if (b->nsrc == 1 && b->src[0].qual && b->src[0].qual[0])
                return bfail(b, e->line, e->column, "unknown column '%s' in '%s'", col, b->src[0].qual);
            return bfail(b, e->line, e->column, "unknown column '%s'", col);
        }
    }
    const sql_column *c = &b->src[si].cols[ci];
    b->used_mask |= 1u << si;
    if (emit(b, e, g, SQL_VM_COL, b->src[si].offset + (uint32_t)ci, 0) < 0)
        return -1;
    *ret_type = c->type;
    if (first_path < e->nparts) {
        if (c->type != SQL_JSON)
            return bfail(b, e->line, e->column,
                         "column '%s' is %s: only JSON columns have fields ('.%s')", c->name,
                         sql_type_name(c->type), e->parts[first_path]);
        int k0 = -1;
        for (uint32_t i = first_path; i < e->nparts; i++) {
            const char *f = e->parts[i];
            int k = sql_prog_const(g, sql_string(f, (uint32_t)strlen(f)));
            if (k < 0)
                return bfail(b, e->line, e->column, "expression too complex");
            if (k0 < 0)
                k0 = k;
        }
        if (emit(b, e, g, SQL_VM_PATH, (uint32_t)k0, e->nparts - first_path) < 0)
            return -1;
        *ret_type = SQL_JSON;
    }
    return 0;
}

static int compile_agg(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type)
{
    sql_plan_fn kind = (sql_plan_fn)agg_lookup(e->name);
    const char *name = aggs_table[kind].name;
    if (b->mode != MODE_GROUP)
        return bfail(b, e->line, e->column, "aggregate %s is not allowed in %s", name, b->where);
    if (e->star && kind != SQL_PLAN_FN_COUNT)
        return bfail(b, e->line, e->column, "%s(*) is not allowed: only COUNT(*)", name);
    if (e->distinct && kind != SQL_PLAN_FN_COUNT)
        return bfail(b, e->line, e->column, "DISTINCT is only allowed in COUNT(DISTINCT x)");
    if (!e->star && (e->nlist < aggs_table[kind].lo || e->nlist > aggs_table[kind].hi))
        return bfail(b, e->line, e->column, "%s takes %d argument%s, got %d", name,
                     (int)aggs_table[kind].lo, aggs_table[kind].lo == 1 ? "" : "s", (int)e->nlist);
    for (uint32_t i = 0; i < e->nlist; i++)
        if (sql_bind_contains_agg(e->list[i]))
            return bfail(b, e->list[i]->line, e->list[i]->column, "aggregate calls can't be nested");

    sql_plan_agg a = {.kind = kind, .star = e->star, .distinct = e->distinct, .arg_type = SQL_NULL};
    if (kind == SQL_PLAN_FN_DECAYED_COUNT) {
        const sql_expr *d = e->list[0];
        if (!b->decayed_ok)
            return bfail(b, e->line, e->column, "DECAYED_COUNT is only allowed in views without WINDOW");
        if (d->kind != SQL_EXPR_LITERAL || d->value.type != SQL_BIGINT || d->value.u.i <= 0)
            return bfail(b, d->line, d->column,
                         "DECAYED_COUNT needs a positive half-life duration, e.g. DECAYED_COUNT(1 HOUR)");
        a.param = d->value.u.i;
    } else if (!e->star) {
        /* The argument reads the input row. */
        binder in = *b;
        in.mode = MODE_INPUT;
        in.where = "an aggregate's argument";
        sql_prog *arg = sql_plan_new_prog(b->plan);
        if (!arg)
            return bfail(b, e->line, e->column, "out of memory");
        int rc = compile(&in, e->list[0], arg, &a.arg_type);
        b->failed = in.failed;
        b->used_mask |= in.used_mask;
        if (rc < 0)
            return -1;
        a.arg = arg;
        sql_type t = a.arg_type;
        if ((kind == SQL_PLAN_FN_SUM || kind == SQL_PLAN_FN_AVG) && !dyn_t(t) && t != SQL_BIGINT && t != SQL_DOUBLE)
            return bfail(b, e->list[0]->line, e->list[0]->column, "%s needs a number, got %s", name,
                         sql_type_name(t));
        if ((kind == SQL_PLAN_FN_MIN || kind == SQL_PLAN_FN_MAX) && (t == SQL_ARRAY))
            return bfail(b, e->list[0]->line, e->list[0]->column, "%s can't compare %s values", name,
                         sql_type_name(t));
        if (kind == SQL_PLAN_FN_TOPK) {
            const sql_expr *k = e->list[1];
            if (k->kind != SQL_EXPR_LITERAL || k->value.type != SQL_BIGINT || k->value.u.i < 1 ||
                k->value.u.i > 1000)
                return bfail(b, k->line, k->column, "TOPK needs a constant k from 1 to 1000");
            a.param = k->value.u.i;
        }
    }
    switch (kind) {
    case SQL_PLAN_FN_COUNT: a.type = SQL_BIGINT; break;
    case SQL_PLAN_FN_SUM: a.type = a.arg_type == SQL_BIGINT ? SQL_BIGINT : SQL_DOUBLE; break;
    case SQL_PLAN_FN_AVG:
    case SQL_PLAN_FN_DECAYED_COUNT: a.type = SQL_DOUBLE; break;
    case SQL_PLAN_FN_TOPK: a.type = SQL_JSON; break;
    default: a.type = a.arg_type == SQL_NULL ? SQL_JSON : a.arg_type; break;
    }
    if (!(a.text = sql_bind_expr_text(b->plan, e)))
        return bfail(b, e->line, e->column, "out of memory");
    /* The same aggregate twice is computed once. */
    uint32_t idx = b->aggs->n;
    for (uint32_t i = 0; i < b->aggs->n; i++)
        if (strcmp(b->aggs->v[i].text, a.text) == 0)
            idx = i;
    if (idx == b->aggs->n) {
        if (b->aggs->n == 256)
            return bfail(b, e->line, e->column, "too many aggregates (at most 256)");
        if (b->aggs->n == b->aggs->cap) {
            uint32_t cap = b->aggs->cap ? b->aggs->cap * 2 : 8;
            sql_plan_agg *v = sql_arena_alloc(b->plan->arena, cap * sizeof *v);
            if (!v)
                return bfail(b, e->line, e->column, "out of memory");
            if (b->aggs->n)
                memcpy(v, b->aggs->v, b->aggs->n * sizeof *v);
            b->aggs->v = v;
            b->aggs->cap = cap;
        }
        b->aggs->v[b->aggs->n++] = a;
    }
    *ret_type = a.type;
    return emit(b, e, g, SQL_VM_COL, SQL_PLAN_GROUP_ROW_KEYS + b->ngkeys + idx, 0);
}

static int compile_call(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type)
{
    if (is_agg_call(e))
        return compile_agg(b, e, g, ret_type);
    int f = sql_func_lookup(e->name, strlen(e->name));
    if (f < 0)
        return bfail(b, e->line, e->column, "unknown function '%s'", e->name);
    const char *name = sql_func_name((sql_func)f);
    if (e->star)
        return bfail(b, e->line, e->column, "%s(*) is not allowed: only COUNT(*)", name);
    if (e->distinct)
        return bfail(b, e->line, e->column, "DISTINCT is only allowed in COUNT(DISTINCT x)");
    uint32_t lo, hi;
    sql_func_arity((sql_func)f, &lo, &hi);
    if (e->nlist < lo || e->nlist > hi) {
        if (lo == hi)
            return bfail(b, e->line, e->column, "%s takes %d argument%s, got %d", name, (int)lo,
                         lo == 1 ? "" : "s", (int)e->nlist);
        return bfail(b, e->line, e->column, "%s takes %d to %d arguments, got %d", name, (int)lo,
                     (int)hi, (int)e->nlist);
    }
    sql_type types[SQL_FUNC_MAX_ARGS];
    for (uint32_t i = 0; i < e->nlist; i++)
        if (compile(b, e->list[i], g, &types[i]) < 0)
            return -1;
    uint32_t bad = 0;
    if (sql_func_type((sql_func)f, types, e->nlist, ret_type, &bad) < 0)
        return bfail(b, e->list[bad]->line, e->list[bad]->column, "%s: argument %d has the wrong type (%s)",
                     name, (int)bad + 1, sql_type_name(types[bad]));
    return emit(b, e, g, SQL_VM_CALL, (uint32_t)f, e->nlist);
}

int sql_bind_want_bool(binder *b, const sql_expr *e, sql_type t, const char *what)
{
    if (t == SQL_BOOLEAN || dyn_t(t))
        return 0;
    return bfail(b, e->line, e->column, "%s needs a BOOLEAN, got %s", what, sql_type_name(t));
}

static int compile_node(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type)
{
    sql_type ta = SQL_NULL, tb = SQL_NULL, tc = SQL_NULL;
    switch (e->kind) {
    case SQL_EXPR_LITERAL:
        *ret_type = (sql_type)e->value.type;
        return emit_const(b, e, g, e->value);
    case SQL_EXPR_NAME:
        if (b->mode == MODE_GROUP)
            return bfail(b, e->line, e->column,
                         "column '%s' must appear in GROUP BY or inside an aggregate", e->parts[e->nparts - 1]);
        return compile_name(b, e, g, ret_type);
    case SQL_EXPR_ROWTIME:
        if (b->mode == MODE_GROUP)
            return bfail(b, e->line, e->column, "ROWTIME must appear in GROUP BY or inside an aggregate");
        *ret_type = SQL_TIMESTAMP;
        return emit(b, e, g, SQL_VM_ROWTIME, 0, 0);
    case SQL_EXPR_WINDOWSTART:
    case SQL_EXPR_WINDOWEND: {
        const char *w = e->kind == SQL_EXPR_WINDOWSTART ? "WINDOWSTART" : "WINDOWEND";
        if (b->mode == MODE_PULL) {
            sql_expr name = *e;
            const char *parts[1] = {w};
            name.kind = SQL_EXPR_NAME;
            name.parts = parts;
            name.nparts = 1;
            return compile_name(b, &name, g, ret_type);
        }
        if (b->mode != MODE_GROUP || !b->windowed)
            return bfail(b, e->line, e->column, "%s is only available in the SELECT list of a windowed view", w);
        *ret_type = SQL_TIMESTAMP;
        return emit(b, e, g, SQL_VM_COL, e->kind == SQL_EXPR_WINDOWSTART ? 0 : 1, 0);
    }
    case SQL_EXPR_UNARY:
        if (compile(b, e->a, g, &ta) < 0)
            return -1;
        if (e->op == SQL_OP_NOT) {
            if (sql_bind_want_bool(b, e->a, ta, "NOT") < 0)
                return -1;
            *ret_type = SQL_BOOLEAN;
            return emit(b, e, g, SQL_VM_NOT, 0, 0);
        }
        if (!num_t(ta) && !dyn_t(ta))
            return bfail(b, e->line, e->column, "unary - needs a number, got %s", sql_type_name(ta));
        *ret_type = ta == SQL_DOUBLE ? SQL_DOUBLE : dyn_t(ta) ? SQL_DOUBLE : SQL_BIGINT;
        return emit(b, e, g, SQL_VM_NEG, 0, 0);
    case SQL_EXPR_BINARY: {
        if (compile(b, e->a, g, &ta) < 0 || compile(b, e->b, g, &tb) < 0)
            return -1;
        const char *opn = sql_op_name(e->op);
        switch (e->op) {
        case SQL_OP_AND:
        case SQL_OP_OR:
            if (sql_bind_want_bool(b, e->a, ta, opn) < 0 || sql_bind_want_bool(b, e->b, tb, opn) < 0)
                return -1;
            *ret_type = SQL_BOOLEAN;
            return emit(b, e, g, e->op == SQL_OP_AND ? SQL_VM_AND : SQL_VM_OR, 0, 0);
        case SQL_OP_EQ: case SQL_OP_NE: case SQL_OP_LT: case SQL_OP_LE: case SQL_OP_GT: case SQL_OP_GE: {
            if (!sql_bind_comparable(ta, tb))
                return bfail(b, e->line, e->column, "can't compare %s with %s", sql_type_name(ta),
                             sql_type_name(tb));
            static const sql_vm_op ops[] = {
                [SQL_OP_EQ] = SQL_VM_EQ, [SQL_OP_NE] = SQL_VM_NE, [SQL_OP_LT] = SQL_VM_LT,
                [SQL_OP_LE] = SQL_VM_LE, [SQL_OP_GT] = SQL_VM_GT, [SQL_OP_GE] = SQL_VM_GE,
            };
            *ret_type = SQL_BOOLEAN;
            return emit(b, e, g, ops[e->op], 0, 0);
        }
        default: {
            if ((!num_t(ta) && !dyn_t(ta)) || (!num_t(tb) && !dyn_t(tb)))
                return bfail(b, e->line, e->column, "operator %s needs numbers, got %s and %s", opn,
                             sql_type_name(ta), sql_type_name(tb));
            bool ints = (ta == SQL_BIGINT || ta == SQL_TIMESTAMP) && (tb == SQL_BIGINT || tb == SQL_TIMESTAMP);
            *ret_type = ints ? SQL_BIGINT : SQL_DOUBLE;
            static const sql_vm_op ops[] = {
                [SQL_OP_ADD] = SQL_VM_ADD, [SQL_OP_SUB] = SQL_VM_SUB, [SQL_OP_MUL] = SQL_VM_MUL,
                [SQL_OP_DIV] = SQL_VM_DIV, [SQL_OP_MOD] = SQL_VM_MOD,
            };
            return emit(b, e, g, ops[e->op], 0, 0);
        }
        }
    }
    case SQL_EXPR_IS_NULL:
        if (compile(b, e->a, g, &ta) < 0)
            return -1;
        *ret_type = SQL_BOOLEAN;
        return emit(b, e, g, SQL_VM_IS_NULL, e->negated, 0);
    case SQL_EXPR_IN:
        if (e->nlist > SQL_PROG_MAX_STACK - 2)
            return bfail(b, e->line, e->column, "IN list too long (at most 62 values)");
        if (compile(b, e->a, g, &ta) < 0)
            return -1;
        for (uint32_t i = 0; i < e->nlist; i++) {
            if (compile(b, e->list[i], g, &tb) < 0)
                return -1;
            if (!sql_bind_comparable(ta, tb))
                return bfail(b, e->list[i]->line, e->list[i]->column, "IN: can't compare %s with %s",
                             sql_type_name(ta), sql_type_name(tb));
        }
        *ret_type = SQL_BOOLEAN;
        if (emit(b, e, g, SQL_VM_IN, e->nlist, 0) < 0)
            return -1;
        return e->negated ? emit(b, e, g, SQL_VM_NOT, 0, 0) : 0;
    case SQL_EXPR_LIKE:
        if (compile(b, e->a, g, &ta) < 0 || compile(b, e->b, g, &tb) < 0)
            return -1;
        if ((ta != SQL_STRING && !dyn_t(ta)) || (tb != SQL_STRING && !dyn_t(tb)))
            return bfail(b, e->line, e->column, "LIKE needs strings, got %s and %s", sql_type_name(ta),
                         sql_type_name(tb));
        *ret_type = SQL_BOOLEAN;
        if (emit(b, e, g, SQL_VM_LIKE, 0, 0) < 0)
            return -1;
        return e->negated ? emit(b, e, g, SQL_VM_NOT, 0, 0) : 0;
    case SQL_EXPR_BETWEEN:
        if (compile(b, e->a, g, &ta) < 0 || compile(b, e->b, g, &tb) < 0 || compile(b, e->c, g, &tc) < 0)
            return -1;
        if (!sql_bind_comparable(ta, tb) || !sql_bind_comparable(ta, tc))
            return bfail(b, e->line, e->column, "BETWEEN: can't compare %s with %s", sql_type_name(ta),
                         sql_type_name(sql_bind_comparable(ta, tb) ? tc : tb));
        *ret_type = SQL_BOOLEAN;
        if (emit(b, e, g, SQL_VM_BETWEEN, 0, 0) < 0)
            return -1;
        return e->negated ? emit(b, e, g, SQL_VM_NOT, 0, 0) : 0;
    case SQL_EXPR_CASE: {
        uint32_t pairs = e->nlist / 2;
        if (pairs > (SQL_PROG_MAX_STACK - 2) / 2)
            return bfail(b, e->line, e->column, "CASE has too many WHEN branches (at most 31)");
        int rt = SQL_NULL;
        for (uint32_t i = 0; i < pairs; i++) {
            const sql_expr *w = e->list[2 * i], *t = e->list[2 * i + 1];
            if (e->a) {
                /* CASE x WHEN v: the condition is x = v (x compiled again;
                 * it has no side effects). */
                if (compile(b, e->a, g, &ta) < 0 || compile(b, w, g, &tb) < 0)
                    return -1;
                if (!sql_bind_comparable(ta, tb))
                    return bfail(b, w->line, w->column, "CASE: can't compare %s with %s", sql_type_name(ta),
                                 sql_type_name(tb));
                if (emit(b, w, g, SQL_VM_EQ, 0, 0) < 0)
                    return -1;
            } else {
                if (compile(b, w, g, &tb) < 0 || sql_bind_want_bool(b, w, tb, "WHEN") < 0)
                    return -1;
            }
            if (compile(b, t, g, &tc) < 0)
                return -1;
            if ((rt = common_type((sql_type)rt, tc)) < 0)
                return bfail(b, t->line, t->column, "CASE branches have different types (%s)", sql_type_name(tc));
        }
        if (e->b) {
            if (compile(b, e->b, g, &tc) < 0)
                return -1;
            if ((rt = common_type((sql_type)rt, tc)) < 0)
                return bfail(b, e->b->line, e->b->column, "CASE branches have different types (%s)",
                             sql_type_name(tc));
        } else if (emit_const(b, e, g, sql_null()) < 0) {
            return -1;
        }
        *ret_type = (sql_type)rt;
        return emit(b, e, g, SQL_VM_CASE, pairs, 0);
    }
    case SQL_EXPR_CAST:
        if (compile(b, e->a, g, &ta) < 0)
            return -1;
        *ret_type = e->cast_type.type;
        return emit(b, e, g, SQL_VM_CAST, e->cast_type.type, 0);
    case SQL_EXPR_CALL:
        return compile_call(b, e, g, ret_type);
    }
    return bfail(b, e->line, e->column, "unsupported expression");
}

static int compile(binder *b, const sql_expr *e, sql_prog *g, sql_type *ret_type)
{
    if (b->failed)
        return -1;
    /* In an aggregating SELECT, an expression equal to a GROUP BY key reads
     * the key's slot of the group row. */
    if (b->mode == MODE_GROUP && b->ngkeys && e->kind != SQL_EXPR_LITERAL && !sql_bind_contains_agg(e) &&
        node_count(e, 257) <= 256) {
        binder in = *b;
        sql_error ignored;
        in.mode = MODE_INPUT;
        in.err = &ignored;
        sql_prog *t = sql_prog_new();
        sql_type tt;
        if (!t)
            return bfail(b, e->line, e->column, "out of memory");
        bool ok = compile(&in, e, t, &tt) == 0 && sql_prog_ready(t);
        for (uint32_t i = 0; ok && i < b->ngkeys; i++) {
            if (sql_prog_equal(t, b->gkeys[i])) {
                sql_prog_free(t);
                *ret_type = b->gkey_types[i];
                return emit(b, e, g, SQL_VM_COL, SQL_PLAN_GROUP_ROW_KEYS + i, 0);
            }
        }
        sql_prog_free(t);
    }
    return compile_node(b, e, g, ret_type);
}

/* Compiles e as a whole program of the plan. */
sql_prog *sql_bind_prog(binder *b, const sql_expr *e, sql_type *ret_type)
{
    sql_prog *g = sql_plan_new_prog(b->plan);
    if (!g) {
        bfail(b, e->line, e->column, "out of memory");
        return NULL;
    }
    sql_type t = SQL_NULL;
    if (compile(b, e, g, &t) < 0)
        return NULL;
    if (!sql_prog_ready(g)) {
        bfail(b, e->line, e->column, "expression too complex");
        return NULL;
    }
    if (ret_type)
        *ret_type = t;
    return g;
}
