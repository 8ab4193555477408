/* sql_plan: SELECT planning (joins, UNNEST, WHERE, aggregates and windows,
 * output columns, partitioning) and the plan API (see sql_plan.h); the
 * catalog, binder, DDL and EXPLAIN are in their own files (sql_plan_int.h). */
#include "sql_plan_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_lex.h"

/* -- plan memory ------------------------------------------------------------------------- */

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

static bool same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

static int64_t pane_ms(const sql_plan_info *pi)
{
    return pi->window == SQL_WINDOW_TUMBLING ? pi->window_size_ms : pi->window_advance_ms;
}

bool sql_plan_panes_shareable(const sql_plan_info *a, const sql_plan_info *b)
{
    const sql_plan_info *v[2] = {a, b};
    for (int i = 0; i < 2; i++)
        if (v[i]->kind != SQL_PLAN_VIEW || !v[i]->aggregate || v[i]->join != SQL_JOIN_NONE ||
            v[i]->unnest || (v[i]->window != SQL_WINDOW_TUMBLING && v[i]->window != SQL_WINDOW_HOPPING))
            return false;
    if (pane_ms(a) != pane_ms(b) || !same_text(a->source, b->source) ||
        !same_text(a->filter_text, b->filter_text) || !same_text(a->partition, b->partition) ||
        a->reroute != b->reroute || a->ngroup_keys != b->ngroup_keys || a->naggs != b->naggs)
        return false;
    for (uint32_t i = 0; i < a->ngroup_keys; i++)
        if (!same_text(a->group_key_texts[i], b->group_key_texts[i]))
            return false;
    for (uint32_t i = 0; i < a->naggs; i++) {
        const sql_plan_agg *x = &a->aggs[i], *y = &b->aggs[i];
        if (x->kind != y->kind || x->star != y->star || x->distinct != y->distinct ||
            x->arg_type != y->arg_type ||
            x->param != y->param || !same_text(x->text, y->text))
            return false;
    }
    return true;
}

sql_prog *sql_plan_new_prog(sql_plan *p)
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

/* -- statements ---------------------------------------------------------------------------- */

int sql_plan_fail(sql_error *err, int line, int col, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    sql_error_vset(err, line, col, fmt, ap);
    va_end(ap);
    return -1;
}

const char *sql_plan_kind_name(sql_object_kind k)
{
    return k == SQL_OBJ_STREAM ? "stream" : k == SQL_OBJ_TABLE ? "table" : "view";
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
            return sql_plan_fail(err, st->name_line, st->name_column, "%s '%s' already exists", sql_plan_kind_name(old->kind),
                         st->name);
    }
    const sql_object *src = sql_catalog_find(cat, s->from.name);
    if (!src)
        return sql_plan_fail(err, s->from.line, s->from.column, "unknown stream, table or view '%s'", s->from.name);
    if (pull && src->kind == SQL_OBJ_TABLE)
        return sql_plan_fail(err, s->from.line, s->from.column,
                     "pull queries read views and streams; read a row of table '%s' with GET "
                     "/api/v1/tables/%s/rows/{key}", src->name, src->name);
    if (!pull && src->kind != SQL_OBJ_STREAM)
        return sql_plan_fail(err, s->from.line, s->from.column, "'%s' is a %s: continuous queries read streams",
                     src->name, src->kind == SQL_OBJ_TABLE ? "table (JOIN it to a stream)" : "view");
    /* The plan owns copies of every name it shows (the catalog may change
     * while the plan lives). */
    pi->source = sql_arena_strndup(p->arena, src->name, strlen(src->name));
    if (!pi->source)
        return sql_plan_fail(err, 0, 0, "out of memory");
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
            return sql_plan_fail(err, s->join_source.line, s->join_source.column, "unknown stream or table '%s'",
                         s->join_source.name);
        if (right->kind == SQL_OBJ_VIEW)
            return sql_plan_fail(err, s->join_source.line, s->join_source.column,
                         "'%s' is a view: JOIN a stream or a table", right->name);
        const char *rq = s->join_source.alias ? s->join_source.alias : right->name;
        if (strcmp(rq, b.src[0].qual) == 0)
            return sql_plan_fail(err, s->join_source.line, s->join_source.column,
                         "both sides of the JOIN are named '%s': give one an alias", rq);
        pi->join = s->join;
        pi->join_source = sql_arena_strndup(p->arena, right->name, strlen(right->name));
        if (!pi->join_source)
            return sql_plan_fail(err, 0, 0, "out of memory");
        pi->join_table = right->kind == SQL_OBJ_TABLE;
        pi->right_offset = ninput;
        if (pi->join_table && s->within_ms >= 0)
            return sql_plan_fail(err, s->join_source.line, s->join_source.column,
                         "WITHIN applies only to stream-stream joins ('%s' is a table)", right->name);
        if (!pi->join_table && s->within_ms < 0)
            return sql_plan_fail(err, s->join_source.line, s->join_source.column,
                         "a stream-stream JOIN needs WITHIN d (e.g. WITHIN 1 HOUR)");
        pi->within_ms = s->within_ms;
        b.src[1] = (scope_src){rq, right->columns, right->ncolumns, ninput};
        b.nsrc = 2;
        ninput += right->ncolumns;

        /* ON: equalities between one side and the other. */
        const sql_expr *terms[16];
        int nt = and_terms(s->join_on, terms, 0, 16);
        if (nt < 0)
            return sql_plan_fail(err, s->join_on->line, s->join_on->column, "JOIN ON has too many terms (at most 16)");
        const sql_prog **lk = sql_arena_alloc(p->arena, (size_t)nt * sizeof *lk);
        const sql_prog **rk = sql_arena_alloc(p->arena, (size_t)nt * sizeof *rk);
        const char **lt_text = sql_arena_alloc(p->arena, (size_t)nt * sizeof *lt_text);
        const char **rt_text = sql_arena_alloc(p->arena, (size_t)nt * sizeof *rt_text);
        if (!lk || !rk || !lt_text || !rt_text)
            return sql_plan_fail(err, 0, 0, "out of memory");
        b.where = "JOIN ON";
        for (int i = 0; i < nt; i++) {
            const sql_expr *t = terms[i];
            if (t->kind != SQL_EXPR_BINARY || t->op != SQL_OP_EQ)
                return sql_plan_fail(err, t->line, t->column,
                             "JOIN ON must be equalities joined by AND (left.key = right.key)");
            const sql_expr *sides[2] = {t->a, t->b};
            const sql_expr *ls = NULL, *rs = NULL;
            sql_type lt = SQL_NULL, rt = SQL_NULL;
            for (int k = 0; k < 2; k++) {
                b.used_mask = 0;
                sql_type ty;
                if (!sql_bind_prog(&b, sides[k], &ty))
                    return -1;
                if (b.used_mask == 1 && !ls) {
                    ls = sides[k];
                    lt = ty;
                } else if (b.used_mask == 2 && !rs) {
                    rs = sides[k];
                    rt = ty;
                } else {
                    return sql_plan_fail(err, sides[k]->line, sides[k]->column,
                                 "each side of a JOIN ON equality must read exactly one side of the join");
                }
            }
            if (!sql_bind_comparable(lt, rt))
                return sql_plan_fail(err, t->line, t->column, "JOIN key types differ: %s and %s", sql_type_name(lt),
                             sql_type_name(rt));
            /* Left keys over the left row (offset 0 already); right keys
             * over the right row alone. */
            lk[i] = sql_bind_prog(&b, ls, NULL);
            lt_text[i] = sql_bind_expr_text(p, ls);
            rt_text[i] = sql_bind_expr_text(p, rs);
            if (!lt_text[i] || !rt_text[i])
                return sql_plan_fail(err, 0, 0, "out of memory");
            binder rb = b;
            rb.src[0] = b.src[1];
            rb.src[0].offset = 0;
            rb.nsrc = 1;
            rk[i] = sql_bind_prog(&rb, rs, NULL);
            if (rb.failed || !lk[i] || !rk[i])
                return -1;
            if (pi->join_table && (rs->kind != SQL_EXPR_NAME || nt != 1 ||
                                   strcmp(rs->parts[rs->nparts - 1], right->columns[right->key_column].name) != 0 ||
                                   rs->nparts > 2))
                return sql_plan_fail(err, t->line, t->column,
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
        return sql_plan_fail(err, 0, 0, "out of memory");
    memcpy(input, src->columns, src->ncolumns * sizeof *input);
    if (right)
        memcpy(input + src->ncolumns, right->columns, right->ncolumns * sizeof *input);
    if (s->has_unnest) {
        b.where = "UNNEST";
        sql_type ut;
        if (!(pi->unnest = sql_bind_prog(&b, s->unnest_expr, &ut)))
            return -1;
        if (!(pi->unnest_text = sql_bind_expr_text(p, s->unnest_expr)))
            return sql_plan_fail(err, 0, 0, "out of memory");
        if (ut != SQL_ARRAY && ut != SQL_JSON)
            return sql_plan_fail(err, s->unnest_expr->line, s->unnest_expr->column, "UNNEST needs an ARRAY, got %s",
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
            return sql_plan_fail(err, 0, 0, "out of memory");
    pi->input = input;
    pi->ninput = ninput;

    /* WHERE */
    if (s->where) {
        b.where = "WHERE";
        sql_type wt;
        if (sql_bind_contains_agg(s->where)) {
            const sql_expr *w = sql_bind_first_agg(s->where);
            return sql_plan_fail(err, w->line, w->column, "aggregates are not allowed in WHERE");
        }
        if (!(pi->filter = sql_bind_prog(&b, s->where, &wt)))
            return -1;
        if (!(pi->filter_text = sql_bind_expr_text(p, s->where)))
            return sql_plan_fail(err, 0, 0, "out of memory");
        if (sql_bind_want_bool(&b, s->where, wt, "WHERE") < 0)
            return -1;
    }

    /* Aggregating or not. */
    bool has_agg = false;
    for (uint32_t i = 0; i < s->nitems; i++)
        if (s->items[i].expr && sql_bind_contains_agg(s->items[i].expr))
            has_agg = true;
    bool aggregate = has_agg || s->ngroup_by > 0;
    if (pull && aggregate)
        return sql_plan_fail(err, s->line, s->column, "aggregates are not allowed in pull queries: read a view");
    if (st->kind == SQL_STMT_EXPLAIN)
        want_view = aggregate, want_stream = !aggregate;
    if (want_stream && aggregate)
        return sql_plan_fail(err, s->line, s->column,
                     "CREATE STREAM AS can't aggregate (GROUP BY or an aggregate): use CREATE VIEW");
    if (want_view && !aggregate)
        return sql_plan_fail(err, s->line, s->column,
                     "a view aggregates: add GROUP BY or an aggregate, or use CREATE STREAM AS for a "
                     "filter or projection");
    if (want_stream || pull) {
        if (s->window)
            return sql_plan_fail(err, s->window_line, s->window_column, "WINDOW needs an aggregating view");
        if (s->emit)
            return sql_plan_fail(err, s->line, s->column, "EMIT applies only to views");
    }
    if (s->grace_ms >= 0 && !s->window && !(s->join && !pi->join_table))
        return sql_plan_fail(err, s->line, s->column, "GRACE PERIOD needs a WINDOW or a stream-stream JOIN");
    if (s->window) {
        if (s->window_size_ms <= 0)
            return sql_plan_fail(err, s->window_line, s->window_column, "window size must be positive");
        if (s->window == SQL_WINDOW_HOPPING &&
            (s->window_advance_ms <= 0 || s->window_advance_ms > s->window_size_ms))
            return sql_plan_fail(err, s->window_line, s->window_column,
                         "ADVANCE BY must be positive and at most the window SIZE");
    }
    pi->aggregate = aggregate;
    pi->emit = s->emit == SQL_EMIT_DEFAULT ? SQL_EMIT_CHANGES : s->emit;

    /* View options. */
    for (uint32_t i = 0; i < st->noptions; i++) {
        const sql_option *o = &st->options[i];
        if (!sql_ieq(o->key, strlen(o->key), "STATE_TTL"))
            return sql_plan_fail(err, o->line, o->column, "unknown option '%s' (expected STATE_TTL)", o->key);
        int64_t ms;
        if (sql_duration_parse(o->value, strlen(o->value), &ms) < 0 || ms <= 0)
            return sql_plan_fail(err, o->line, o->column, "bad STATE_TTL '%s': expected a duration such as '1d'",
                         o->value);
        if (s->window)
            return sql_plan_fail(err, o->line, o->column, "STATE_TTL applies only to views without WINDOW");
        pi->state_ttl_ms = ms;
    }

    /* GROUP BY keys, over the input row. */
    sql_prog **gk = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gk);
    sql_type *gt = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gt);
    const char **gtext = sql_arena_alloc(p->arena, (s->ngroup_by + 1) * sizeof *gtext);
    if (!gk || !gt || !gtext)
        return sql_plan_fail(err, 0, 0, "out of memory");
    b.where = "GROUP BY";
    sql_sb part = {0};
    for (uint32_t i = 0; i < s->ngroup_by; i++) {
        if (s->group_by[i]->kind == SQL_EXPR_LITERAL) {
            /* `GROUP BY 1` means a column position elsewhere: say so
             * rather than silently grouping everything into one group. */
            sql_sb_free(&part);
            return sql_plan_fail(err, s->group_by[i]->line, s->group_by[i]->column,
                         "GROUP BY a constant: write the expression (positions are not supported)");
        }
        if (!(gk[i] = sql_bind_prog(&b, s->group_by[i], &gt[i]))) {
            sql_sb_free(&part);
            return -1;
        }
        gtext[i] = sql_bind_expr_text(p, s->group_by[i]);
        if (gt[i] == SQL_ARRAY) {
            sql_sb_free(&part);
            return sql_plan_fail(err, s->group_by[i]->line, s->group_by[i]->column, "can't GROUP BY an ARRAY");
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
                return sql_plan_fail(err, it->line, it->column, "* is not allowed in an aggregating query");
            }
            for (uint32_t c = 0; c < ninput; c++) {
                sql_prog *g = sql_plan_new_prog(p);
                if (!g || sql_prog_emit(g, SQL_VM_COL, c, 0) < 0 ||
                    add_column(p, &cols, (sql_plan_column){input[c].name, input[c].type, input[c].elem, g,
                                                           input[c].name}) < 0) {
                    sql_sb_free(&part);
                    return sql_plan_fail(err, 0, 0, "out of memory");
                }
            }
            continue;
        }
        if (b.windowed && !it->alias &&
            (it->expr->kind == SQL_EXPR_WINDOWSTART || it->expr->kind == SQL_EXPR_WINDOWEND))
            continue;  /* every windowed view's row has them already */
        sql_plan_column c = {0};
        sql_prog *g = sql_bind_prog(&b, it->expr, &c.type);
        if (!g) {
            sql_sb_free(&part);
            return -1;
        }
        c.prog = g;
        c.name = item_name(p, it, i + 1);
        c.text = sql_bind_expr_text(p, it->expr);
        if (it->expr->kind == SQL_EXPR_NAME && c.type == SQL_ARRAY) {
            for (uint32_t k = 0; k < ninput; k++)
                if (strcmp(input[k].name, it->expr->parts[it->expr->nparts - 1]) == 0)
                    c.elem = input[k].elem;
        }
        if (!c.name || !c.text || add_column(p, &cols, c) < 0) {
            sql_sb_free(&part);
            return sql_plan_fail(err, 0, 0, "out of memory");
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
                return sql_plan_fail(err, line, col, "duplicate column name '%s': rename one with AS", cols.v[i].name);
            }
        for (int k = 0; k < 4 && s->window && aggregate; k++)
            if (strcmp(cols.v[i].name, added[k]) == 0) {
                sql_sb_free(&part);
                return sql_plan_fail(err, line, col, "'%s' is a column every windowed view has: choose another name",
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
            return sql_plan_fail(err, 0, 0, "out of memory");
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
            if (!(ob[i] = sql_bind_prog(&b, s->order_by[i].expr, NULL))) {
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
        return sql_plan_fail(err, 0, 0, "out of memory");
    }
    pi->partition = sql_arena_strndup(p->arena, part.data ? part.data : "", part.len);
    sql_sb_free(&part);
    if (!pi->partition)
        return sql_plan_fail(err, 0, 0, "out of memory");
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
        return sql_plan_fail(err, 0, 0, "out of memory");
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
        sql_plan_render_explain(p);
        if (!pi->explain_text || !pi->explain_json)
            return sql_plan_fail(err, 0, 0, "out of memory");
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
    case SQL_STMT_CREATE_TABLE: rc = sql_plan_declared(p, cat, st, ret_err); break;
    case SQL_STMT_DROP: rc = sql_plan_drop(p, cat, st, ret_err); break;
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
            sql_error_set(ret_err, 0, 0, "no %s named '%s'", sql_plan_kind_name(pi->drop_kind), pi->name);
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
        g = sql_bind_prog(&b, e, ret_type);
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
