/* sql_parse_select: SELECT and its clauses, in the order of the SPEC 13
 * grammar; a pull query (top-level SELECT) refuses the continuous ones. */
#include "sql_parse_int.h"

static bool parse_source(parser *p, sql_source *s, const char *what)
{
    const sql_token *t = peek(p);
    s->line = t->line;
    s->column = t->column;
    if (!(s->name = sql_parser_name(p, what)))
        return false;
    if (accept_kw(p, SQL_KW_AS)) {
        if (!(s->alias = sql_parser_name(p, "an alias")))
            return false;
    } else if (is_name_token(peek(p))) {
        s->alias = sql_parser_name(p, "an alias");
    }
    return !p->failed;
}

/* A clause a pull query can't have: an error at its first token. */
static bool pull_forbids(parser *p, bool pull, const char *clause)
{
    if (!pull)
        return true;
    sql_parser_fail_at(p, peek(p), "%s is not allowed in a pull query (SELECT ... FROM view|stream "
            "[WHERE ...] [ORDER BY ...] [LIMIT n])", clause);
    return false;
}

static bool parse_expr_list(parser *p, sql_expr ***list, uint32_t *n)
{
    uint32_t cap = 0;
    do {
        sql_expr *e = sql_parser_expr(p);
        if (!e)
            return false;
        *list = sql_parser_push(p, *list, n, &cap, sizeof **list);
        if (!*list)
            return false;
        (*list)[(*n)++] = e;
    } while (accept(p, SQL_TOK_COMMA));
    return true;
}

/* select := SELECT items FROM source ... ; `pull` for a top-level query. */
sql_select *sql_parser_select(parser *p, bool pull)
{
    const sql_token *t = peek(p);
    if (!expect_kw(p, SQL_KW_SELECT))
        return NULL;
    sql_select *s = sql_parser_alloc(p, sizeof *s);
    if (!s)
        return NULL;
    s->line = t->line;
    s->column = t->column;
    s->within_ms = -1;
    s->grace_ms = -1;
    s->limit = -1;

    uint32_t cap = 0;
    do {
        s->items = sql_parser_push(p, s->items, &s->nitems, &cap, sizeof *s->items);
        if (!s->items)
            return NULL;
        sql_select_item *it = &s->items[s->nitems++];
        const sql_token *at = peek(p);
        it->line = at->line;
        it->column = at->column;
        if (accept(p, SQL_TOK_STAR))
            continue;
        if (!(it->expr = sql_parser_expr(p)))
            return NULL;
        if (accept_kw(p, SQL_KW_AS)) {
            if (!(it->alias = sql_parser_name(p, "a column name after AS")))
                return NULL;
        } else if (is_name_token(peek(p))) {
            it->alias = sql_parser_name(p, "a column name");
        }
    } while (accept(p, SQL_TOK_COMMA));

    if (!expect_kw(p, SQL_KW_FROM) || !parse_source(p, &s->from, "a stream, table or view name"))
        return NULL;

    if (is_kw(p, SQL_KW_INNER) || is_kw(p, SQL_KW_LEFT) || is_kw(p, SQL_KW_JOIN)) {
        if (!pull_forbids(p, pull, "JOIN"))
            return NULL;
        s->join = accept_kw(p, SQL_KW_LEFT) ? SQL_JOIN_LEFT : SQL_JOIN_INNER;
        accept_kw(p, SQL_KW_INNER);
        if (!expect_kw(p, SQL_KW_JOIN) || !parse_source(p, &s->join_source, "a stream or table name"))
            return NULL;
        if (accept_kw(p, SQL_KW_WITHIN) && !sql_parser_duration(p, &s->within_ms))
            return NULL;
        if (!expect_kw(p, SQL_KW_ON) || !(s->join_on = sql_parser_expr(p)))
            return NULL;
    }
    if (is_kw(p, SQL_KW_CROSS)) {
        if (!pull_forbids(p, pull, "CROSS JOIN UNNEST"))
            return NULL;
        p->pos++;
        if (!expect_kw(p, SQL_KW_JOIN) || !expect_kw(p, SQL_KW_UNNEST) ||
            !expect(p, SQL_TOK_LPAREN, "'(' after UNNEST") || !(s->unnest_expr = sql_parser_expr(p)) ||
            !expect(p, SQL_TOK_RPAREN, "')'"))
            return NULL;
        accept_kw(p, SQL_KW_AS);
        if (!(s->unnest_alias = sql_parser_name(p, "an alias for the UNNEST elements")))
            return NULL;
        s->has_unnest = true;
    }
    if (accept_kw(p, SQL_KW_WHERE) && !(s->where = sql_parser_expr(p)))
        return NULL;
    if (is_kw(p, SQL_KW_WINDOW)) {
        if (!pull_forbids(p, pull, "WINDOW"))
            return NULL;
        p->pos++;
        if (!sql_parser_window(p, s))
            return NULL;
    }
    if (is_kw(p, SQL_KW_GRACE)) {
        if (!pull_forbids(p, pull, "GRACE PERIOD"))
            return NULL;
        p->pos++;
        if (!expect_kw(p, SQL_KW_PERIOD) || !sql_parser_duration(p, &s->grace_ms))
            return NULL;
    }
    if (is_kw(p, SQL_KW_GROUP)) {
        if (!pull_forbids(p, pull, "GROUP BY"))
            return NULL;
        p->pos++;
        if (!expect_kw(p, SQL_KW_BY) || !parse_expr_list(p, &s->group_by, &s->ngroup_by))
            return NULL;
    }
    if (is_kw(p, SQL_KW_EMIT)) {
        if (!pull_forbids(p, pull, "EMIT"))
            return NULL;
        p->pos++;
        if (accept_kw(p, SQL_KW_CHANGES)) {
            s->emit = SQL_EMIT_CHANGES;
        } else if (accept_kw(p, SQL_KW_FINAL)) {
            s->emit = SQL_EMIT_FINAL;
        } else {
            sql_parser_expected(p, "CHANGES or FINAL");
            return NULL;
        }
    }
    if (is_kw(p, SQL_KW_ORDER)) {
        if (!pull) {
            sql_parser_fail_at(p, peek(p), "ORDER BY is only allowed in pull queries");
            return NULL;
        }
        p->pos++;
        if (!expect_kw(p, SQL_KW_BY))
            return NULL;
        cap = 0;
        do {
            s->order_by = sql_parser_push(p, s->order_by, &s->norder_by, &cap, sizeof *s->order_by);
            if (!s->order_by)
                return NULL;
            sql_order_item *o = &s->order_by[s->norder_by++];
            if (!(o->expr = sql_parser_expr(p)))
                return NULL;
            if (accept_kw(p, SQL_KW_DESC))
                o->desc = true;
            else
                accept_kw(p, SQL_KW_ASC);
        } while (accept(p, SQL_TOK_COMMA));
    }
    if (is_kw(p, SQL_KW_LIMIT)) {
        if (!pull) {
            sql_parser_fail_at(p, peek(p), "LIMIT is only allowed in pull queries");
            return NULL;
        }
        p->pos++;
        const sql_token *n = peek(p);
        if (n->kind != SQL_TOK_INTEGER) {
            sql_parser_expected(p, "a non-negative integer after LIMIT");
            return NULL;
        }
        p->pos++;
        s->limit = n->i;
    }
    return s;
}
