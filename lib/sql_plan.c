/* sql_plan: the catalog, name binding, type checking and query plans (see
 * sql_plan.h). One binder walks each expression once, emitting its program
 * and computing its static type; the three row layouts (input, group,
 * pull) are its modes. */
#include "sql_plan.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_lex.h"

/* -- catalog -------------------------------------------------------------------------- */

typedef struct cat_entry {
    sql_arena *arena;
    sql_object obj;     /* every pointer into `arena` */
} cat_entry;

struct sql_catalog {
    cat_entry *v;
    size_t n, cap;
};

sql_catalog *sql_catalog_new(void)
{
    return calloc(1, sizeof(sql_catalog));
}

void sql_catalog_free(sql_catalog *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sql_arena_free(c->v[i].arena);
    free(c->v);
    free(c);
}

const sql_object *sql_catalog_find(const sql_catalog *c, const char *name)
{
    for (size_t i = 0; c && i < c->n; i++)
        if (strcmp(c->v[i].obj.name, name) == 0)
            return &c->v[i].obj;
    return NULL;
}

size_t sql_catalog_count(const sql_catalog *c)
{
    return c ? c->n : 0;
}

const sql_object *sql_catalog_at(const sql_catalog *c, size_t i)
{
    return c && i < c->n ? &c->v[i].obj : NULL;
}

static const char *adup(sql_arena *a, const char *s)
{
    return s ? sql_arena_strndup(a, s, strlen(s)) : NULL;
}

int sql_catalog_add(sql_catalog *c, const sql_object *o)
{
    if (!o->name || !o->name[0] || o->ncolumns > 4096 || o->nsources > 64)
        return -EINVAL;
    if (sql_catalog_find(c, o->name))
        return -EEXIST;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        cat_entry *v = realloc(c->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        c->v = v;
        c->cap = cap;
    }
    sql_arena *a = sql_arena_new();
    if (!a)
        return -ENOMEM;
    sql_object obj = *o;
    sql_column *cols = sql_arena_alloc(a, (o->ncolumns + 1) * sizeof *cols);
    const char **srcs = sql_arena_alloc(a, (o->nsources + 1) * sizeof *srcs);
    bool ok = cols && srcs && (obj.name = adup(a, o->name));
    for (uint32_t i = 0; ok && i < o->ncolumns; i++) {
        cols[i] = o->columns[i];
        ok = (cols[i].name = adup(a, o->columns[i].name)) != NULL;
    }
    for (uint32_t i = 0; ok && i < o->nsources; i++)
        ok = (srcs[i] = adup(a, o->sources[i])) != NULL;
    if (ok && !(obj.partition = adup(a, o->partition ? o->partition : "")))
        ok = false;
    if (ok && o->sql && !(obj.sql = adup(a, o->sql)))
        ok = false;
    if (!ok) {
        sql_arena_free(a);
        return -ENOMEM;
    }
    obj.columns = cols;
    obj.sources = srcs;
    c->v[c->n].arena = a;
    c->v[c->n].obj = obj;
    c->n++;
    return 0;
}

int sql_catalog_remove(sql_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].obj.name, name) != 0)
            continue;
        sql_arena_free(c->v[i].arena);
        memmove(&c->v[i], &c->v[i + 1], (c->n - i - 1) * sizeof *c->v);
        c->n--;
        return 0;
    }
    return -ENOENT;
}

int sql_catalog_set_builtin(sql_catalog *c, const char *name)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->v[i].obj.name, name) == 0) {
            c->v[i].obj.builtin = true;
            return 0;
        }
    }
    return -ENOENT;
}

sql_catalog *sql_catalog_clone(const sql_catalog *c)
{
    sql_catalog *d = sql_catalog_new();
    for (size_t i = 0; d && i < c->n; i++) {
        if (sql_catalog_add(d, &c->v[i].obj) < 0) {
            sql_catalog_free(d);
            return NULL;
        }
    }
    return d;
}

int sql_catalog_add_clicks(sql_catalog *c)
{
    /* SPEC 2 fields and the SPEC 15 enrichment. */
    static const sql_column cols[] = {
        {"user_id", SQL_STRING, SQL_NULL, true},
        {"page_url", SQL_STRING, SQL_NULL, true},
        {"element", SQL_STRING, SQL_NULL, false},
        {"timestamp", SQL_TIMESTAMP, SQL_NULL, true},
        {"event_id", SQL_STRING, SQL_NULL, false},
        {"properties", SQL_JSON, SQL_NULL, false},
        {"name", SQL_STRING, SQL_NULL, true},
        {"referrer", SQL_STRING, SQL_NULL, false},
        {"referrer_host", SQL_STRING, SQL_NULL, false},
        {"utm_source", SQL_STRING, SQL_NULL, false},
        {"utm_medium", SQL_STRING, SQL_NULL, false},
        {"utm_campaign", SQL_STRING, SQL_NULL, false},
        {"utm_term", SQL_STRING, SQL_NULL, false},
        {"utm_content", SQL_STRING, SQL_NULL, false},
        {"page_path", SQL_STRING, SQL_NULL, false},
        {"browser", SQL_STRING, SQL_NULL, false},
        {"os", SQL_STRING, SQL_NULL, false},
        {"device", SQL_STRING, SQL_NULL, false},
        {"is_bot", SQL_BOOLEAN, SQL_NULL, false},
        {"country", SQL_STRING, SQL_NULL, false},
    };
    sql_object o = {
        .name = "clicks", .kind = SQL_OBJ_STREAM, .builtin = true, .columns = cols,
        .ncolumns = sizeof cols / sizeof cols[0], .timestamp_column = 3, .event_id_column = 4,
        .key_column = -1, .partition = "",
    };
    return sql_catalog_add(c, &o);
}

/* -- plan memory ------------------------------------------------------------------------- */

struct sql_plan {
    sql_arena *arena;
    sql_prog **progs;   /* every program, freed with the plan */
    size_t nprogs, capprogs;
    sql_plan_info info;
    sql_object object;
};

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

void sql_plan_free(sql_plan *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nprogs; i++)
        sql_prog_free(p->progs[i]);
    free(p->progs);
    sql_arena_free(p->arena);
    free(p);
}

const sql_plan_info *sql_plan_get(const sql_plan *p)
{
    return &p->info;
}

static sql_prog *plan_prog(sql_plan *p)
{
    if (p->nprogs == p->capprogs) {
        size_t cap = p->capprogs ? p->capprogs * 2 : 16;
        sql_prog **v = realloc(p->progs, cap * sizeof *v);
        if (!v)
            return NULL;
        p->progs = v;
        p->capprogs = cap;
    }
    sql_prog *g = sql_prog_new();
    if (g)
        p->progs[p->nprogs++] = g;
    return g;
}

/* -- binder ------------------------------------------------------------------------------ */

typedef struct scope_src {
    const char *qual;       /* alias, else the object's name */
    const sql_column *cols;
    uint32_t ncols;
    uint32_t offset;
} scope_src;

enum bind_mode { MODE_INPUT, MODE_GROUP, MODE_PULL };

typedef struct agg_vec {
    sql_plan_agg *v;
    uint32_t n, cap;
} agg_vec;

typedef struct binder {
    sql_plan *plan;
    sql_error *err;
    bool failed;
    scope_src src[3];
    int nsrc;
    enum bind_mode mode;
    bool windowed;              /* GROUP mode: WINDOWSTART/END exist */
    bool decayed_ok;            /* no WINDOW: DECAYED_COUNT allowed */
    const char *where;          /* "WHERE", "GROUP BY", ... for errors */
    sql_prog *const *gkeys;
    const sql_type *gkey_types;
    uint32_t ngkeys;
    agg_vec *aggs;
    uint32_t used_mask;         /* sources referenced (bit per src) */
} binder;

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

static bool comparable(sql_type a, sql_type b)
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

static bool contains_agg(const sql_expr *e)
{
    if (!e)
        return false;
    if (is_agg_call(e))
        return true;
    if (contains_agg(e->a) || contains_agg(e->b) || contains_agg(e->c))
        return true;
    for (uint32_t i = 0; i < e->nlist; i++)
        if (contains_agg(e->list[i]))
            return true;
    return false;
}

/* The first aggregate call in e (for error positions), or NULL. */
static const sql_expr *first_agg(const sql_expr *e)
{
    if (!e)
        return NULL;
    if (is_agg_call(e))
        return e;
    const sql_expr *f = first_agg(e->a);
    if (!f)
        f = first_agg(e->b);
    if (!f)
        f = first_agg(e->c);
    for (uint32_t i = 0; !f && i < e->nlist; i++)
        f = first_agg(e->list[i]);
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

static char *expr_text(sql_plan *p, const sql_expr *e)
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
        if (contains_agg(e->list[i]))
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
        sql_prog *arg = plan_prog(b->plan);
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
    if (!(a.text = expr_text(b->plan, e)))
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

static int want_bool(binder *b, const sql_expr *e, sql_type t, const char *what)
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
            if (want_bool(b, e->a, ta, "NOT") < 0)
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
            if (want_bool(b, e->a, ta, opn) < 0 || want_bool(b, e->b, tb, opn) < 0)
                return -1;
            *ret_type = SQL_BOOLEAN;
            return emit(b, e, g, e->op == SQL_OP_AND ? SQL_VM_AND : SQL_VM_OR, 0, 0);
        case SQL_OP_EQ: case SQL_OP_NE: case SQL_OP_LT: case SQL_OP_LE: case SQL_OP_GT: case SQL_OP_GE: {
            if (!comparable(ta, tb))
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
            if (!comparable(ta, tb))
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
        if (!comparable(ta, tb) || !comparable(ta, tc))
            return bfail(b, e->line, e->column, "BETWEEN: can't compare %s with %s", sql_type_name(ta),
                         sql_type_name(comparable(ta, tb) ? tc : tb));
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
                if (!comparable(ta, tb))
                    return bfail(b, w->line, w->column, "CASE: can't compare %s with %s", sql_type_name(ta),
                                 sql_type_name(tb));
                if (emit(b, w, g, SQL_VM_EQ, 0, 0) < 0)
                    return -1;
            } else {
                if (compile(b, w, g, &tb) < 0 || want_bool(b, w, tb, "WHEN") < 0)
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
    if (b->mode == MODE_GROUP && b->ngkeys && e->kind != SQL_EXPR_LITERAL && !contains_agg(e) &&
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
static sql_prog *compile_prog(binder *b, const sql_expr *e, sql_type *ret_type)
{
    sql_prog *g = plan_prog(b->plan);
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

/* -- statements ---------------------------------------------------------------------------- */

static int pfail(sql_error *err, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sql_error_vset(err, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *kind_name(sql_object_kind k)
{
    return k == SQL_OBJ_STREAM ? "stream" : k == SQL_OBJ_TABLE ? "table" : "view";
}

static bool valid_column_type(sql_type_ref t)
{
    return t.type != SQL_ARRAY || (t.elem != SQL_NULL && t.elem != SQL_ARRAY);
}

/* CREATE STREAM name (cols) WITH (...) and CREATE TABLE. */
static int plan_declared(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err)
{
    bool table = st->kind == SQL_STMT_CREATE_TABLE;
    const sql_object *old = sql_catalog_find(cat, st->name);
    if (old)
        return pfail(err, st->name_line, st->name_column, "%s '%s' already exists", kind_name(old->kind), st->name);
    if (st->ncolumns > 1024)
        return pfail(err, st->line, st->column, "too many columns (at most 1024)");
    sql_column *cols = sql_arena_alloc(p->arena, (st->ncolumns + 1) * sizeof *cols);
    if (!cols)
        return pfail(err, 0, 0, "out of memory");
    int key = -1, ts = -1, eid = -1;
    for (uint32_t i = 0; i < st->ncolumns; i++) {
        const sql_column_def *c = &st->columns[i];
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(st->columns[j].name, c->name) == 0)
                return pfail(err, c->line, c->column, "duplicate column '%s'", c->name);
        if (!valid_column_type(c->type))
            return pfail(err, c->line, c->column, "column '%s': bad ARRAY element type", c->name);
        if (c->primary_key) {
            if (!table)
                return pfail(err, c->line, c->column, "PRIMARY KEY applies only to tables (column '%s')", c->name);
            if (key >= 0)
                return pfail(err, c->line, c->column, "a table has one PRIMARY KEY column ('%s' is a second)",
                             c->name);
            if (c->type.type != SQL_STRING && c->type.type != SQL_BIGINT)
                return pfail(err, c->line, c->column, "PRIMARY KEY '%s' must be STRING or BIGINT", c->name);
            key = (int)i;
        }
        cols[i] = (sql_column){c->name, c->type.type, c->type.elem, c->not_null || c->primary_key};
    }
    if (table && key < 0)
        return pfail(err, st->name_line, st->name_column, "table '%s' needs a PRIMARY KEY column", st->name);
    for (uint32_t i = 0; i < st->noptions; i++) {
        const sql_option *o = &st->options[i];
        bool is_ts = sql_ieq(o->key, strlen(o->key), "TIMESTAMP");
        bool is_id = sql_ieq(o->key, strlen(o->key), "EVENT_ID");
        if (table || (!is_ts && !is_id))
            return pfail(err, o->line, o->column, "unknown option '%s'%s", o->key,
                         table ? " (tables take no options)" : " (expected TIMESTAMP or EVENT_ID)");
        int found = -1;
        for (uint32_t c = 0; c < st->ncolumns; c++)
            if (strcmp(st->columns[c].name, o->value) == 0)
                found = (int)c;
        if (found < 0)
            return pfail(err, o->line, o->column, "%s names unknown column '%s'", is_ts ? "TIMESTAMP" : "EVENT_ID",
                         o->value);
        sql_type t = st->columns[found].type.type;
        if (is_ts && t != SQL_TIMESTAMP && t != SQL_BIGINT)
            return pfail(err, o->line, o->column, "TIMESTAMP column '%s' must be TIMESTAMP or BIGINT", o->value);
        if (is_id && t != SQL_STRING)
            return pfail(err, o->line, o->column, "EVENT_ID column '%s' must be STRING", o->value);
        if (is_ts)
            ts = found;
        else
            eid = found;
    }
    p->info.kind = table ? SQL_PLAN_CREATE_TABLE : SQL_PLAN_CREATE_STREAM;
    p->object = (sql_object){
        .name = sql_arena_strndup(p->arena, st->name, strlen(st->name)),
        .kind = table ? SQL_OBJ_TABLE : SQL_OBJ_STREAM, .columns = cols, .ncolumns = st->ncolumns,
        .timestamp_column = ts, .event_id_column = eid, .key_column = key, .partition = "",
        .sql = sql_arena_strndup(p->arena, st->text, st->text_len),
    };
    if (!p->object.name || !p->object.sql)
        return pfail(err, 0, 0, "out of memory");
    p->info.name = p->object.name;
    p->info.object = &p->object;
    return 0;
}

static int plan_drop(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err)
{
    const sql_object *o = sql_catalog_find(cat, st->name);
    const char *want = kind_name(st->drop_kind);
    if (!o)
        return pfail(err, st->name_line, st->name_column, "no %s named '%s'", want, st->name);
    if (o->kind != st->drop_kind) {
        sql_error_set(err, st->name_line, st->name_column, "'%s' is a %s, not a %s", st->name, kind_name(o->kind),
                      want);
        return -1;
    }
    if (o->builtin)
        return pfail(err, st->name_line, st->name_column, "'%s' is built in and can't be dropped", st->name);
    sql_sb users = {0};
    for (size_t i = 0; i < sql_catalog_count(cat); i++) {
        const sql_object *u = sql_catalog_at(cat, i);
        for (uint32_t k = 0; k < u->nsources; k++) {
            if (strcmp(u->sources[k], st->name) == 0) {
                if (users.len)
                    sql_sb_puts(&users, ", ");
                sql_sb_puts(&users, u->name);
                break;
            }
        }
    }
    if (users.len) {
        sql_error_set(err, st->name_line, st->name_column, "can't drop '%s': read by %s", st->name, users.data);
        sql_sb_free(&users);
        return -1;
    }
    sql_sb_free(&users);
    p->info.kind = SQL_PLAN_DROP;
    p->info.drop_kind = st->drop_kind;
    p->info.name = sql_arena_strndup(p->arena, st->name, strlen(st->name));
    return p->info.name ? 0 : pfail(err, 0, 0, "out of memory");
}

/* The SPEC 13 name of a SELECT item: AS, else a column's field name, else
 * col_N. */
static const char *item_name(sql_plan *p, const sql_select_item *it, uint32_t pos)
{
    if (it->alias)
        return sql_arena_strndup(p->arena, it->alias, strlen(it->alias));
    const sql_expr *e = it->expr;
    if (e->kind == SQL_EXPR_NAME)
        return sql_arena_strndup(p->arena, e->parts[e->nparts - 1], strlen(e->parts[e->nparts - 1]));
    if (e->kind == SQL_EXPR_ROWTIME)
        return "ROWTIME";
    if (e->kind == SQL_EXPR_WINDOWSTART)
        return "WINDOWSTART";
    if (e->kind == SQL_EXPR_WINDOWEND)
        return "WINDOWEND";
    char buf[32] = "col_";
    int n = sql_format_int64(pos, buf + 4, sizeof buf - 4);
    return sql_arena_strndup(p->arena, buf, (size_t)n + 4);
}

/* Splits `a AND b AND c` into its terms. */
static int and_terms(const sql_expr *e, const sql_expr **out, int n, int cap)
{
    if (e->kind == SQL_EXPR_BINARY && e->op == SQL_OP_AND) {
        n = and_terms(e->a, out, n, cap);
        return n < 0 ? n : and_terms(e->b, out, n, cap);
    }
    if (n >= cap)
        return -1;
    out[n] = e;
    return n + 1;
}

typedef struct colvec {
    sql_plan_column *v;
    uint32_t n, cap;
} colvec;

static int add_column(sql_plan *p, colvec *cv, sql_plan_column c)
{
    if (cv->n == cv->cap) {
        uint32_t cap = cv->cap ? cv->cap * 2 : 8;
        sql_plan_column *v = sql_arena_alloc(p->arena, cap * sizeof *v);
        if (!v)
            return -1;
        if (cv->n)
            memcpy(v, cv->v, cv->n * sizeof *v);
        cv->v = v;
        cv->cap = cap;
    }
    cv->v[cv->n++] = c;
    return 0;
}

static void render_explain(sql_plan *p);

/* CREATE STREAM AS, CREATE VIEW, EXPLAIN and pull queries. */
static int plan_query(sql_plan *p, const sql_catalog *cat, const sql_stmt *st, sql_error *err)
{
    const sql_select *s = st->select;
    sql_plan_info *pi = &p->info;
    bool pull = st->kind == SQL_STMT_SELECT;
    bool want_view = st->kind == SQL_STMT_CREATE_VIEW;
    bool want_stream = st->kind == SQL_STMT_CREATE_STREAM_AS;

    if (st->kind == SQL_STMT_CREATE_VIEW || st->kind == SQL_STMT_CREATE_STREAM_AS) {
        const sql_object *old = sql_catalog_find(cat, st->name);
        if (old)
            return pfail(err, st->name_line, st->name_column, "%s '%s' already exists", kind_name(old->kind),
                         st->name);
    }
    const sql_object *src = sql_catalog_find(cat, s->from.name);
    if (!src)
        return pfail(err, s->from.line, s->from.column, "unknown stream, table or view '%s'", s->from.name);
    if (pull && src->kind == SQL_OBJ_TABLE)
        return pfail(err, s->from.line, s->from.column,
                     "pull queries read views and streams; read a row of table '%s' with GET "
                     "/api/v1/tables/%s/rows/{key}", src->name, src->name);
    if (!pull && src->kind != SQL_OBJ_STREAM)
        return pfail(err, s->from.line, s->from.column, "'%s' is a %s: continuous queries read streams",
                     src->name, src->kind == SQL_OBJ_TABLE ? "table (JOIN it to a stream)" : "view");
    /* The plan owns copies of every name it shows (the catalog may change
     * while the plan lives). */
    pi->source = sql_arena_strndup(p->arena, src->name, strlen(src->name));
    if (!pi->source)
        return pfail(err, 0, 0, "out of memory");
    pi->source_kind = src->kind;
    pi->within_ms = -1;
    pi->unnest_column = -1;
    pi->grace_ms = s->grace_ms;
    pi->state_ttl_ms = -1;
    pi->limit = s->limit;
    pi->window = s->window;
    pi->window_size_ms = s->window_size_ms;
    pi->window_advance_ms = s->window_advance_ms;
    pi->partition = "";

    agg_vec aggs = {0};
    binder b = {.plan = p, .err = err, .aggs = &aggs, .mode = pull ? MODE_PULL : MODE_INPUT};
    b.src[0] = (scope_src){s->from.alias ? s->from.alias : src->name, src->columns, src->ncolumns, 0};
    b.nsrc = 1;
    uint32_t ninput = src->ncolumns;

    /* JOIN */
    const sql_object *right = NULL;
    if (s->join) {
        right = sql_catalog_find(cat, s->join_source.name);
        if (!right)
            return pfail(err, s->join_source.line, s->join_source.column, "unknown stream or table '%s'",
                         s->join_source.name);
        if (right->kind == SQL_OBJ_VIEW)
            return pfail(err, s->join_source.line, s->join_source.column,
                         "'%s' is a view: JOIN a stream or a table", right->name);
        const char *rq = s->join_source.alias ? s->join_source.alias : right->name;
        if (strcmp(rq, b.src[0].qual) == 0)
            return pfail(err, s->join_source.line, s->join_source.column,
                         "both sides of the JOIN are named '%s': give one an alias", rq);
        pi->join = s->join;
        pi->join_source = sql_arena_strndup(p->arena, right->name, strlen(right->name));
        if (!pi->join_source)
            return pfail(err, 0, 0, "out of memory");
        pi->join_table = right->kind == SQL_OBJ_TABLE;
        pi->right_offset = ninput;
        if (pi->join_table && s->within_ms >= 0)
            return pfail(err, s->join_source.line, s->join_source.column,
                         "WITHIN applies only to stream-stream joins ('%s' is a table)", right->name);
        if (!pi->join_table && s->within_ms < 0)
            return pfail(err, s->join_source.line, s->join_source.column,
                         "a stream-stream JOIN needs WITHIN d (e.g. WITHIN 1 HOUR)");
        pi->within_ms = s->within_ms;
        b.src[1] = (scope_src){rq, right->columns, right->ncolumns, ninput};
        b.nsrc = 2;
        ninput += right->ncolumns;

        /* ON: equalities between one side and the other. */
        const sql_expr *terms[16];
        int nt = and_terms(s->join_on, terms, 0, 16);
        if (nt < 0)
            return pfail(err, s->join_on->line, s->join_on->column, "JOIN ON has too many terms (at most 16)");
        const sql_prog **lk = sql_arena_alloc(p->arena, (size_t)nt * sizeof *lk);
        const sql_prog **rk = sql_arena_alloc(p->arena, (size_t)nt * sizeof *rk);
        const char **lt_text = sql_arena_alloc(p->arena, (size_t)nt * sizeof *lt_text);
        const char **rt_text = sql_arena_alloc(p->arena, (size_t)nt * sizeof *rt_text);
        if (!lk || !rk || !lt_text || !rt_text)
            return pfail(err, 0, 0, "out of memory");
        b.where = "JOIN ON";
        for (int i = 0; i < nt; i++) {
            const sql_expr *t = terms[i];
            if (t->kind != SQL_EXPR_BINARY || t->op != SQL_OP_EQ)
                return pfail(err, t->line, t->column,
                             "JOIN ON must be equalities joined by AND (left.key = right.key)");
            const sql_expr *sides[2] = {t->a, t->b};
            const sql_expr *ls = NULL, *rs = NULL;
            sql_type lt = SQL_NULL, rt = SQL_NULL;
            for (int k = 0; k < 2; k++) {
                b.used_mask = 0;
                sql_type ty;
                if (!compile_prog(&b, sides[k], &ty))
                    return -1;
                if (b.used_mask == 1 && !ls) {
                    ls = sides[k];
                    lt = ty;
                } else if (b.used_mask == 2 && !rs) {
                    rs = sides[k];
                    rt = ty;
                } else {
                    return pfail(err, sides[k]->line, sides[k]->column,
                                 "each side of a JOIN ON equality must read exactly one side of the join");
                }
            }
            if (!comparable(lt, rt))
                return pfail(err, t->line, t->column, "JOIN key types differ: %s and %s", sql_type_name(lt),
                             sql_type_name(rt));
            /* Left keys over the left row (offset 0 already); right keys
             * over the right row alone. */
            lk[i] = compile_prog(&b, ls, NULL);
            lt_text[i] = expr_text(p, ls);
            rt_text[i] = expr_text(p, rs);
            if (!lt_text[i] || !rt_text[i])
                return pfail(err, 0, 0, "out of memory");
            binder rb = b;
            rb.src[0] = b.src[1];
            rb.src[0].offset = 0;
            rb.nsrc = 1;
            rk[i] = compile_prog(&rb, rs, NULL);
            if (rb.failed || !lk[i] || !rk[i])
                return -1;
            if (pi->join_table && (rs->kind != SQL_EXPR_NAME || nt != 1 ||
                                   strcmp(rs->parts[rs->nparts - 1], right->columns[right->key_column].name) != 0 ||
                                   rs->nparts > 2))
                return pfail(err, t->line, t->column,
                             "a stream-table JOIN must be ON <stream expression> = %s.%s (the table's primary key)",
                             rq, right->columns[right->key_column].name);
        }
        pi->left_keys = lk;
        pi->left_key_texts = lt_text;
        pi->right_key_texts = rt_text;
        pi->right_keys = rk;
        pi->njoin_keys = (uint32_t)nt;
    }

    /* The input row's columns. */
    uint32_t nunnest = s->has_unnest ? 1 : 0;
    sql_column *input = sql_arena_alloc(p->arena, (ninput + nunnest + 1) * sizeof *input);
    if (!input)
        return pfail(err, 0, 0, "out of memory");
    memcpy(input, src->columns, src->ncolumns * sizeof *input);
    if (right)
        memcpy(input + src->ncolumns, right->columns, right->ncolumns * sizeof *input);
    if (s->has_unnest) {
        b.where = "UNNEST";
        sql_type ut;
        if (!(pi->unnest = compile_prog(&b, s->unnest_expr, &ut)))
            return -1;
        if (!(pi->unnest_text = expr_text(p, s->unnest_expr)))
            return pfail(err, 0, 0, "out of memory");
        if (ut != SQL_ARRAY && ut != SQL_JSON)
            return pfail(err, s->unnest_expr->line, s->unnest_expr->column, "UNNEST needs an ARRAY, got %s",
                         sql_type_name(ut));
        /* The element's type: the ARRAY's element type (JSON for a JSON path). */
        sql_type et = SQL_JSON;
        if (s->unnest_expr->kind == SQL_EXPR_NAME && ut == SQL_ARRAY) {
            for (int k = 0; k < b.nsrc; k++)
                for (uint32_t c = 0; c < b.src[k].ncols; c++)
                    if (strcmp(b.src[k].cols[c].name, s->unnest_expr->parts[s->unnest_expr->nparts - 1]) == 0 &&
                        b.src[k].cols[c].type == SQL_ARRAY)
                        et = b.src[k].cols[c].elem;
        }
        input[ninput] = (sql_column){s->unnest_alias, et, SQL_NULL, false};
        pi->unnest_column = (int)ninput;
        b.src[2] = (scope_src){NULL, &input[ninput], 1, ninput};
        b.nsrc = 3;
        ninput++;
    }
    for (uint32_t i = 0; i < ninput; i++)
        if (!(input[i].name = sql_arena_strndup(p->arena, input[i].name, strlen(input[i].name))))
            return pfail(err, 0, 0, "out of memory");
    pi->input = input;
    pi->ninput = ninput;

    /* WHERE */
    if (s->where) {
        b.where = "WHERE";
        sql_type wt;
        if (contains_agg(s->where)) {
            const sql_expr *w = first_agg(s->where);
            return pfail(err, w->line, w->column, "aggregates are not allowed in WHERE");
        }
        if (!(pi->filter = compile_prog(&b, s->where, &wt)))
            return -1;
        if (!(pi->filter_text = expr_text(p, s->where)))
            return pfail(err, 0, 0, "out of memory");
        if (want_bool(&b, s->where, wt, "WHERE") < 0)
            return -1;
    }

    /* Aggregating or not. */
    bool has_agg = false;
    for (uint32_t i = 0; i < s->nitems; i++)
        if (s->items[i].expr && contains_agg(s->items[i].expr))
            has_agg = true;
    bool aggregate = has_agg || s->ngroup_by > 0;
    if (pull && aggregate)
        return pfail(err, s->line, s->column, "aggregates are not allowed in pull queries: read a view");
    if (st->kind == SQL_STMT_EXPLAIN)
        want_view = aggregate, want_stream = !aggregate;
    if (want_stream && aggregate)
        return pfail(err, s->line, s->column,
                     "CREATE STREAM AS can't aggregate (GROUP BY or an aggregate): use CREATE VIEW");
    if (want_view && !aggregate)
        return pfail(err, s->line, s->column,
                     "a view aggregates: add GROUP BY or an aggregate, or use CREATE STREAM AS for a "
                     "filter or projection");
    if (want_stream || pull) {
        if (s->window)
            return pfail(err, s->window_line, s->window_column, "WINDOW needs an aggregating view");
        if (s->emit)
            return pfail(err, s->line, s->column, "EMIT applies only to views");
    }
    if (s->grace_ms >= 0 && !s->window && !(s->join && !pi->join_table))
        return pfail(err, s->line, s->column, "GRACE PERIOD needs a WINDOW or a stream-stream JOIN");
    if (s->window) {
        if (s->window_size_ms <= 0)
            return pfail(err, s->window_line, s->window_column, "window size must be positive");
        if (s->window == SQL_WINDOW_HOPPING &&
            (s->window_advance_ms <= 0 || s->window_advance_ms > s->window_size_ms))
            return pfail(err, s->window_line, s->window_column,
                         "ADVANCE BY must be positive and at most the window SIZE");
    }
    pi->aggregate = aggregate;
    pi->emit = s->emit == SQL_EMIT_DEFAULT ? SQL_EMIT_CHANGES : s->emit;

    /* View options. */
    for (uint32_t i = 0; i < st->noptions; i++) {
        const sql_option *o = &st->options[i];
        if (!sql_ieq(o->key, strlen(o->key), "STATE_TTL"))
            return pfail(err, o->line, o->column, "unknown option '%s' (expected STATE_TTL)", o->key);
        int64_t ms;
        if (sql_duration_parse(o->value, strlen(o->value), &ms) < 0 || ms <= 0)
            return pfail(err, o->line, o->column, "bad STATE_TTL '%s': expected a duration such as '1d'",
                         o->value);
        if (s->window)
            return pfail(err, o->line, o->column, "STATE_TTL applies only to views without WINDOW");
        pi->state_ttl_ms = ms;
    }

    /* GROUP BY keys, over the input row. */
    sql_prog **gk = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gk);
    sql_type *gt = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gt);
    const char **gtext = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gtext);
    if (!gk || !gt || !gtext)
        return pfail(err, 0, 0, "out of memory");
    b.where = "GROUP BY";
    sql_sb part = {0};
    for (uint32_t i = 0; i < s->ngroup_by; i++) {
        if (s->group_by[i]->kind == SQL_EXPR_LITERAL) {
            /* `GROUP BY 1` means a column position elsewhere: say so
             * rather than silently grouping everything into one group. */
            sql_sb_free(&part);
            return pfail(err, s->group_by[i]->line, s->group_by[i]->column,
                         "GROUP BY a constant: write the expression (positions are not supported)");
        }
        if (!(gk[i] = compile_prog(&b, s->group_by[i], &gt[i]))) {
            sql_sb_free(&part);
            return -1;
        }
        gtext[i] = expr_text(p, s->group_by[i]);
        if (gt[i] == SQL_ARRAY) {
            sql_sb_free(&part);
            return pfail(err, s->group_by[i]->line, s->group_by[i]->column, "can't GROUP BY an ARRAY");
        }
        if (i)
            sql_sb_puts(&part, ", ");
        sql_sb_puts(&part, gtext[i] ? gtext[i] : "");
    }
    pi->group_keys = (const sql_prog *const *)gk;
    pi->group_key_texts = gtext;
    pi->ngroup_keys = s->ngroup_by;

    /* Output columns. */
    colvec cols = {0};
    if (aggregate) {
        b.mode = MODE_GROUP;
        b.windowed = s->window != SQL_WINDOW_NONE;
        b.decayed_ok = s->window == SQL_WINDOW_NONE;
        b.gkeys = gk;
        b.gkey_types = gt;
        b.ngkeys = s->ngroup_by;
    }
    b.where = pull ? "pull queries" : "the SELECT list";
    for (uint32_t i = 0; i < s->nitems; i++) {
        const sql_select_item *it = &s->items[i];
        if (!it->expr) {
            if (aggregate) {
                sql_sb_free(&part);
                return pfail(err, it->line, it->column, "* is not allowed in an aggregating query");
            }
            for (uint32_t c = 0; c < ninput; c++) {
                sql_prog *g = plan_prog(p);
                if (!g || sql_prog_emit(g, SQL_VM_COL, c, 0) < 0 ||
                    add_column(p, &cols, (sql_plan_column){input[c].name, input[c].type, input[c].elem, g,
                                                           input[c].name}) < 0) {
                    sql_sb_free(&part);
                    return pfail(err, 0, 0, "out of memory");
                }
            }
            continue;
        }
        if (b.windowed && !it->alias &&
            (it->expr->kind == SQL_EXPR_WINDOWSTART || it->expr->kind == SQL_EXPR_WINDOWEND))
            continue;  /* every windowed view's row has them already */
        sql_plan_column c = {0};
        sql_prog *g = compile_prog(&b, it->expr, &c.type);
        if (!g) {
            sql_sb_free(&part);
            return -1;
        }
        c.prog = g;
        c.name = item_name(p, it, i + 1);
        c.text = expr_text(p, it->expr);
        if (it->expr->kind == SQL_EXPR_NAME && c.type == SQL_ARRAY) {
            for (uint32_t k = 0; k < ninput; k++)
                if (strcmp(input[k].name, it->expr->parts[it->expr->nparts - 1]) == 0)
                    c.elem = input[k].elem;
        }
        if (!c.name || !c.text || add_column(p, &cols, c) < 0) {
            sql_sb_free(&part);
            return pfail(err, 0, 0, "out of memory");
        }
    }
    /* Names: unique, and not one a windowed view adds itself. */
    static const char *const added[] = {"WINDOWSTART", "WINDOWEND", "revision", "final"};
    for (uint32_t i = 0; i < cols.n; i++) {
        const sql_select_item *it = NULL;
        for (uint32_t k = 0, c = 0; k < s->nitems && !it; k++) {
            c += s->items[k].expr ? 1 : 0;
            if (s->items[k].expr && c == i + 1)
                it = &s->items[k];
        }
        int line = it ? it->line : s->line, col = it ? it->column : s->column;
        for (uint32_t j = 0; j < i; j++)
            if (strcmp(cols.v[i].name, cols.v[j].name) == 0) {
                sql_sb_free(&part);
                return pfail(err, line, col, "duplicate column name '%s': rename one with AS", cols.v[i].name);
            }
        for (int k = 0; k < 4 && s->window && aggregate; k++)
            if (strcmp(cols.v[i].name, added[k]) == 0) {
                sql_sb_free(&part);
                return pfail(err, line, col, "'%s' is a column every windowed view has: choose another name",
                             added[k]);
            }
    }
    pi->columns = cols.v;
    pi->ncolumns = cols.n;
    pi->aggs = aggs.v;
    pi->naggs = aggs.n;

    /* ORDER BY (pull): over the source row. */
    if (s->norder_by) {
        b.mode = MODE_PULL;
        b.where = "ORDER BY";
        const sql_prog **ob = sql_arena_alloc(p->arena, s->norder_by * sizeof *ob);
        bool *od = sql_arena_alloc(p->arena, s->norder_by * sizeof *od);
        if (!ob || !od) {
            sql_sb_free(&part);
            return pfail(err, 0, 0, "out of memory");
        }
        for (uint32_t i = 0; i < s->norder_by; i++) {
            /* A bare name that is no source column may be an output
             * column's AS name (`SELECT count AS n ... ORDER BY n`); its
             * program reads the same row. */
            const sql_expr *oe = s->order_by[i].expr;
            const sql_prog *alias_prog = NULL;
            if (oe->kind == SQL_EXPR_NAME && oe->nparts == 1) {
                bool is_input = false;
                for (uint32_t k = 0; k < ninput; k++)
                    is_input = is_input || strcmp(input[k].name, oe->parts[0]) == 0;
                for (uint32_t k = 0; !is_input && k < cols.n && !alias_prog; k++)
                    if (strcmp(cols.v[k].name, oe->parts[0]) == 0)
                        alias_prog = cols.v[k].prog;
            }
            if (alias_prog) {
                ob[i] = alias_prog;
                od[i] = s->order_by[i].desc;
                continue;
            }
            if (!(ob[i] = compile_prog(&b, s->order_by[i].expr, NULL))) {
                sql_sb_free(&part);
                return -1;
            }
            od[i] = s->order_by[i].desc;
        }
        pi->order_by = ob;
        pi->order_desc = od;
        pi->norder_by = s->norder_by;
    }

    /* Partitioning: by the GROUP BY key, the join key, or (stateless) as
     * the input arrives. Rows of a derived stream are on the shard of its
     * own key; anything else keyed differently must be re-routed. */
    if (!aggregate && s->join) {
        /* the left side's key: the one the left stream is routed by */
        for (uint32_t i = 0; i < pi->njoin_keys; i++) {
            if (i)
                sql_sb_puts(&part, ", ");
            sql_sb_puts(&part, pi->left_key_texts[i]);
        }
    } else if (!aggregate) {
        sql_sb_puts(&part, src->partition ? src->partition : "");
    }
    if (part.oom) {
        sql_sb_free(&part);
        return pfail(err, 0, 0, "out of memory");
    }
    pi->partition = sql_arena_strndup(p->arena, part.data ? part.data : "", part.len);
    sql_sb_free(&part);
    if (!pi->partition)
        return pfail(err, 0, 0, "out of memory");
    if (src->derived && strcmp(src->partition ? src->partition : "", pi->partition) != 0)
        pi->reroute = true;
    if (aggregate && (s->join || s->has_unnest)) {
        /* The join runs on the join key's shard and UNNEST makes rows of
         * many keys from one event: grouping by anything but the join key
         * moves the rows again. */
        bool same = s->join && !s->has_unnest && pi->ngroup_keys == pi->njoin_keys;
        for (uint32_t i = 0; same && i < pi->njoin_keys; i++) {
            /* each join key (either side's spelling) must be a group key */
            bool hit = false;
            for (uint32_t k = 0; k < pi->ngroup_keys; k++)
                hit = hit || (pi->group_key_texts[k] && (strcmp(pi->left_key_texts[i], pi->group_key_texts[k]) == 0 ||
                                                         strcmp(pi->right_key_texts[i], pi->group_key_texts[k]) == 0));
            same = hit;
        }
        if (!same)
            pi->reroute = true;
    }
    if (right && right->derived && strcmp(right->partition ? right->partition : "", pi->partition) != 0)
        pi->reroute = true;

    if (pull) {
        pi->kind = SQL_PLAN_PULL;
        return 0;
    }

    /* The object a CREATE adds. */
    bool windowed = aggregate && s->window;
    uint32_t nout = cols.n + (windowed ? 4 : 0);
    sql_column *ocols = sql_arena_alloc(p->arena, (nout + 1) * sizeof *ocols);
    const char **srcs = sql_arena_alloc(p->arena, 2 * sizeof *srcs);
    if (!ocols || !srcs)
        return pfail(err, 0, 0, "out of memory");
    for (uint32_t i = 0; i < cols.n; i++)
        ocols[i] = (sql_column){cols.v[i].name, cols.v[i].type, cols.v[i].elem, false};
    if (windowed) {
        ocols[cols.n] = (sql_column){"WINDOWSTART", SQL_TIMESTAMP, SQL_NULL, true};
        ocols[cols.n + 1] = (sql_column){"WINDOWEND", SQL_TIMESTAMP, SQL_NULL, true};
        ocols[cols.n + 2] = (sql_column){"revision", SQL_BIGINT, SQL_NULL, true};
        ocols[cols.n + 3] = (sql_column){"final", SQL_BOOLEAN, SQL_NULL, true};
    }
    srcs[0] = pi->source;
    srcs[1] = right ? pi->join_source : NULL;
    p->object = (sql_object){
        .name = st->name ? sql_arena_strndup(p->arena, st->name, strlen(st->name)) : NULL,
        .kind = want_view ? SQL_OBJ_VIEW : SQL_OBJ_STREAM, .derived = !want_view, .windowed = windowed,
        .columns = ocols, .ncolumns = nout, .timestamp_column = -1, .event_id_column = -1,
        .key_column = -1, .partition = pi->partition, .sources = srcs, .nsources = right ? 2 : 1,
        .sql = sql_arena_strndup(p->arena, st->text, st->text_len),
    };
    pi->object = &p->object;
    pi->name = p->object.name;
    if (st->kind == SQL_STMT_EXPLAIN) {
        pi->kind = SQL_PLAN_EXPLAIN;
        pi->object = NULL;
        render_explain(p);
        if (!pi->explain_text || !pi->explain_json)
            return pfail(err, 0, 0, "out of memory");
    } else {
        pi->kind = want_view ? SQL_PLAN_VIEW : SQL_PLAN_DERIVED_STREAM;
    }
    return 0;
}

sql_plan *sql_plan_new(const sql_catalog *cat, const sql_stmt *st, sql_error *ret_err)
{
    sql_plan *p = calloc(1, sizeof *p);
    if (!p || !(p->arena = sql_arena_new())) {
        free(p);
        sql_error_set(ret_err, 0, 0, "out of memory");
        return NULL;
    }
    int rc;
    switch (st->kind) {
    case SQL_STMT_CREATE_STREAM:
    case SQL_STMT_CREATE_TABLE: rc = plan_declared(p, cat, st, ret_err); break;
    case SQL_STMT_DROP: rc = plan_drop(p, cat, st, ret_err); break;
    default: rc = plan_query(p, cat, st, ret_err); break;
    }
    if (rc < 0) {
        sql_plan_free(p);
        return NULL;
    }
    return p;
}

int sql_plan_apply(const sql_plan *p, sql_catalog *cat, sql_error *ret_err)
{
    const sql_plan_info *pi = &p->info;
    int rc = 0;
    if (pi->kind == SQL_PLAN_DROP) {
        rc = sql_catalog_remove(cat, pi->name);
        if (rc < 0)
            sql_error_set(ret_err, 0, 0, "no %s named '%s'", kind_name(pi->drop_kind), pi->name);
    } else if (pi->object) {
        rc = sql_catalog_add(cat, pi->object);
        if (rc == -EEXIST)
            sql_error_set(ret_err, 0, 0, "'%s' already exists", pi->name);
        else if (rc < 0)
            sql_error_set(ret_err, 0, 0, "out of memory");
    }
    return rc;
}

sql_prog *sql_plan_compile_expr(const char *text, size_t len, const sql_column *cols, uint32_t ncols,
                                sql_type *ret_type, sql_error *ret_err)
{
    const sql_expr *e = NULL;
    sql_script *s = sql_parse_expr(text, len, &e, ret_err);
    if (!s)
        return NULL;
    sql_plan *p = calloc(1, sizeof *p);
    sql_prog *g = NULL;
    if (p && (p->arena = sql_arena_new())) {
        agg_vec aggs = {0};
        binder b = {.plan = p, .err = ret_err, .aggs = &aggs, .mode = MODE_INPUT, .where = "an expression"};
        b.src[0] = (scope_src){"", cols, ncols, 0};
        b.nsrc = 1;
        g = compile_prog(&b, e, ret_type);
        if (g) {
            /* Hand the program over: take it out of the plan's list. */
            for (size_t i = 0; i < p->nprogs; i++)
                if (p->progs[i] == g)
                    p->progs[i] = NULL;
        }
    } else {
        sql_error_set(ret_err, 0, 0, "out of memory");
    }
    sql_plan_free(p);
    sql_script_free(s);
    return g;
}

/* -- EXPLAIN --------------------------------------------------------------------------------- */

static const char *window_name(sql_window_kind w)
{
    return w == SQL_WINDOW_TUMBLING ? "TUMBLING" : w == SQL_WINDOW_HOPPING ? "HOPPING"
         : w == SQL_WINDOW_SESSION ? "SESSION" : "NONE";
}

/* Text for people, JSON for tools: the operators in data-flow order. */
static void render_explain(sql_plan *p)
{
    const sql_plan_info *pi = &p->info;
    sql_sb t = {0}, j = {0};
    const char *kind = pi->aggregate ? "view" : "derived stream";
    sql_sb_printf(&t, "%s\n  source: %s %s\n", kind, kind_name(pi->source_kind), pi->source);
    sql_sb_puts(&j, "{\"kind\":");
    sql_sb_put_json_string(&j, pi->aggregate ? "view" : "stream", pi->aggregate ? 4 : 6);
    sql_sb_puts(&j, ",\"source\":");
    sql_sb_put_json_string(&j, pi->source, strlen(pi->source));
    if (pi->join) {
        const char *jk = pi->join == SQL_JOIN_LEFT ? "LEFT" : "INNER";
        sql_sb_printf(&t, "  join: %s %s-%s join with %s %s", jk, "stream", pi->join_table ? "table" : "stream",
                      pi->join_table ? "table" : "stream", pi->join_source);
        if (!pi->join_table)
            sql_sb_printf(&t, " within %L ms", pi->within_ms);
        sql_sb_puts(&t, " on");
        sql_sb_printf(&j, ",\"join\":{\"type\":\"%s\",\"right\":", jk);
        sql_sb_put_json_string(&j, pi->join_source, strlen(pi->join_source));
        sql_sb_printf(&j, ",\"table\":%s,\"within_ms\":%L,\"keys\":[", pi->join_table ? "true" : "false",
                      pi->within_ms);
        for (uint32_t i = 0; i < pi->njoin_keys; i++) {
            sql_sb_printf(&t, "%s %s = %s", i ? " AND" : "", pi->left_key_texts[i], pi->right_key_texts[i]);
            sql_sb_printf(&j, "%s{\"left\":", i ? "," : "");
            sql_sb_put_json_string(&j, pi->left_key_texts[i], strlen(pi->left_key_texts[i]));
            sql_sb_puts(&j, ",\"right\":");
            sql_sb_put_json_string(&j, pi->right_key_texts[i], strlen(pi->right_key_texts[i]));
            sql_sb_puts(&j, "}");
        }
        sql_sb_puts(&t, "\n");
        sql_sb_puts(&j, "]");
        if (!pi->join_table) {
            /* Where its memory goes: both sides buffered per key until the
             * watermark passes their last possible partner (SPEC 14). */
            sql_sb_printf(&t, "  buffers: left and right events by key, each until W >= ROWTIME + %L ms + grace (",
                          pi->within_ms);
            if (pi->grace_ms >= 0)
                sql_sb_printf(&t, "%L ms)", pi->grace_ms);
            else
                sql_sb_puts(&t, "--allowed-lateness)");
            if (pi->join == SQL_JOIN_LEFT)
                sql_sb_printf(&t, "; unmatched left events emitted with NULLs at W >= ROWTIME + %L ms",
                              pi->within_ms);
            sql_sb_puts(&t, "\n");
            sql_sb_printf(&j, ",\"buffers\":{\"sides\":[\"left\",\"right\"],\"kept_until\":\"W >= ROWTIME + within + grace\",\"grace_ms\":%L}",
                          pi->grace_ms);
        }
        sql_sb_puts(&j, "}");
    }
    if (pi->unnest_column >= 0) {
        const char *ua = pi->input[pi->unnest_column].name;
        sql_sb_printf(&t, "  unnest: one row per element of %s, as %s\n", pi->unnest_text, ua);
        sql_sb_puts(&j, ",\"unnest\":{\"expr\":");
        sql_sb_put_json_string(&j, pi->unnest_text, strlen(pi->unnest_text));
        sql_sb_puts(&j, ",\"as\":");
        sql_sb_put_json_string(&j, ua, strlen(ua));
        sql_sb_puts(&j, "}");
    }
    sql_sb_printf(&t, "  filter: %s\n", pi->filter ? pi->filter_text : "none");
    sql_sb_puts(&j, ",\"filter\":");
    if (pi->filter)
        sql_sb_put_json_string(&j, pi->filter_text, strlen(pi->filter_text));
    else
        sql_sb_puts(&j, "null");
    if (pi->aggregate) {
        sql_sb_printf(&t, "  window: %s", window_name(pi->window));
        sql_sb_printf(&j, ",\"window\":{\"type\":\"%s\"", window_name(pi->window));
        if (pi->window) {
            sql_sb_printf(&t, " size %L ms", pi->window_size_ms);
            sql_sb_printf(&j, ",\"size_ms\":%L", pi->window_size_ms);
            if (pi->window == SQL_WINDOW_HOPPING) {
                sql_sb_printf(&t, " advance %L ms", pi->window_advance_ms);
                sql_sb_printf(&j, ",\"advance_ms\":%L", pi->window_advance_ms);
            }
        }
        sql_sb_puts(&j, "}");
        if (pi->grace_ms >= 0)
            sql_sb_printf(&t, ", grace %L ms", pi->grace_ms);
        else if (pi->window)
            sql_sb_puts(&t, ", grace --allowed-lateness");
        sql_sb_printf(&j, ",\"grace_ms\":%L", pi->grace_ms);
        sql_sb_puts(&t, "\n  group by:");
        sql_sb_puts(&j, ",\"group_by\":[");
        for (uint32_t i = 0; i < pi->ngroup_keys; i++) {
            const char *k = pi->group_key_texts[i] ? pi->group_key_texts[i] : "";
            sql_sb_printf(&t, "%s %s", i ? "," : "", k);
            if (i)
                sql_sb_puts(&j, ",");
            sql_sb_put_json_string(&j, k, strlen(k));
        }
        if (!pi->ngroup_keys)
            sql_sb_puts(&t, " (one group)");
        sql_sb_puts(&t, "\n  aggregates:");
        sql_sb_puts(&j, "],\"aggregates\":[");
        for (uint32_t i = 0; i < pi->naggs; i++) {
            sql_sb_printf(&t, "%s %s %s", i ? "," : "", pi->aggs[i].text, sql_type_name(pi->aggs[i].type));
            if (i)
                sql_sb_puts(&j, ",");
            sql_sb_puts(&j, "{\"expr\":");
            sql_sb_put_json_string(&j, pi->aggs[i].text, strlen(pi->aggs[i].text));
            sql_sb_printf(&j, ",\"type\":\"%s\"}", sql_type_name(pi->aggs[i].type));
        }
        sql_sb_puts(&j, "]");
        sql_sb_printf(&t, "\n  emit: %s", pi->emit == SQL_EMIT_FINAL ? "FINAL" : "CHANGES");
        sql_sb_printf(&j, ",\"emit\":\"%s\"", pi->emit == SQL_EMIT_FINAL ? "FINAL" : "CHANGES");
        if (pi->state_ttl_ms >= 0)
            sql_sb_printf(&t, ", state ttl %L ms", pi->state_ttl_ms);
        sql_sb_printf(&j, ",\"state_ttl_ms\":%L", pi->state_ttl_ms);
        sql_sb_puts(&t, "\n");
    }
    sql_sb_puts(&t, "  columns:");
    sql_sb_puts(&j, ",\"columns\":[");
    for (uint32_t i = 0; i < pi->ncolumns; i++) {
        const sql_plan_column *c = &pi->columns[i];
        sql_sb_printf(&t, "%s %s %s = %s", i ? "," : "", c->name, sql_type_name(c->type), c->text);
        if (i)
            sql_sb_puts(&j, ",");
        sql_sb_puts(&j, "{\"name\":");
        sql_sb_put_json_string(&j, c->name, strlen(c->name));
        sql_sb_printf(&j, ",\"type\":\"%s\",\"expr\":", sql_type_name(c->type));
        sql_sb_put_json_string(&j, c->text, strlen(c->text));
        sql_sb_puts(&j, "}");
    }
    sql_sb_printf(&t, "\n  partition: %s (%s)\n", pi->partition[0] ? pi->partition : "none",
                  pi->reroute ? "re-routed to the key's shard" : "no re-routing");
    /* Where the sequencer sends the input rows (server/sql_route.h): a
     * key needing a table's row is unknown before the join, which every
     * shard can do (each holds every table). */
    const char *place = !pi->aggregate ? "derived on shard 0 (which keeps the rows) and on the shards owning a reading view's key"
                      : pi->join_table ? "every shard (the key needs the table's row; each keeps the groups it owns)"
                      : "the shard owning the key, chosen before the row is logged";
    sql_sb_printf(&t, "  placement: %s\n", place);
    sql_sb_puts(&j, "],\"partition\":");
    sql_sb_put_json_string(&j, pi->partition, strlen(pi->partition));
    sql_sb_printf(&j, ",\"reroute\":%s}", pi->reroute ? "true" : "false");
    if (!t.oom && !j.oom && t.data && j.data) {
        p->info.explain_text = sql_arena_strndup(p->arena, t.data, t.len);
        p->info.explain_json = sql_arena_strndup(p->arena, j.data, j.len);
    }
    sql_sb_free(&t);
    sql_sb_free(&j);
}
