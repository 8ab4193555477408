/* sql_parse_expr: expressions by precedence (OR, AND, NOT, predicates,
 * + -, * / %, unary, primaries), each node sealed with its height so the
 * later recursive passes are bounded (SQL_PARSE_MAX_HEIGHT). */
#include <string.h>

#include "sql_parse_int.h"

static sql_expr *new_expr(parser *p, sql_expr_kind kind, const sql_token *at)
{
    sql_expr *e = sql_parser_alloc(p, sizeof *e);
    if (!e)
        return NULL;
    e->kind = kind;
    e->line = at->line;
    e->column = at->column;
    e->height = 1;
    return e;
}

/* Completes a node: its height is one more than its tallest child's.
 * Chains like a + b + c + ... are built by loops, not recursion, so the
 * parse depth limit doesn't bound them; every later pass over the tree
 * recurses, so the height is bounded here. */
static sql_expr *seal(parser *p, sql_expr *e)
{
    uint32_t h = 0;
    const sql_expr *kids[3] = {e->a, e->b, e->c};
    for (int k = 0; k < 3; k++)
        if (kids[k] && kids[k]->height > h)
            h = kids[k]->height;
    for (uint32_t i = 0; i < e->nlist; i++)
        if (e->list[i]->height > h)
            h = e->list[i]->height;
    e->height = h + 1;
    if (e->height > SQL_PARSE_MAX_HEIGHT) {
        if (!p->failed) {
            p->failed = true;
            sql_error_set(p->err, e->line, e->column, "expression too long (more than %d operators deep)",
                          SQL_PARSE_MAX_HEIGHT);
        }
        return NULL;
    }
    return e;
}

/* `( expr, ... )` after a function name or IN; `star` allows `(*)`. */
static bool parse_list(parser *p, sql_expr *e, bool allow_star, bool allow_distinct)
{
    if (!expect(p, SQL_TOK_LPAREN, "'('"))
        return false;
    if (allow_star && peek(p)->kind == SQL_TOK_STAR && peek_at(p, 1)->kind == SQL_TOK_RPAREN) {
        p->pos += 2;
        e->star = true;
        return true;
    }
    if (allow_distinct && accept_kw(p, SQL_KW_DISTINCT))
        e->distinct = true;
    else if (allow_distinct && accept(p, SQL_TOK_RPAREN))
        return true;  /* f() */
    uint32_t cap = 0;
    do {
        sql_expr *a = sql_parser_expr(p);
        if (!a)
            return false;
        e->list = sql_parser_push(p, e->list, &e->nlist, &cap, sizeof *e->list);
        if (!e->list)
            return false;
        e->list[e->nlist++] = a;
    } while (accept(p, SQL_TOK_COMMA));
    return expect(p, SQL_TOK_RPAREN, "',' or ')'");
}

static sql_expr *parse_case(parser *p, const sql_token *at)
{
    sql_expr *e = new_expr(p, SQL_EXPR_CASE, at);
    if (!e)
        return NULL;
    if (!is_kw(p, SQL_KW_WHEN) && !(e->a = sql_parser_expr(p)))
        return NULL;
    uint32_t cap = 0;
    if (!is_kw(p, SQL_KW_WHEN)) {
        sql_parser_expected(p, "WHEN");
        return NULL;
    }
    while (accept_kw(p, SQL_KW_WHEN)) {
        sql_expr *w = sql_parser_expr(p);
        if (!w || !expect_kw(p, SQL_KW_THEN))
            return NULL;
        sql_expr *t = sql_parser_expr(p);
        if (!t)
            return NULL;
        for (int k = 0; k < 2; k++) {
            e->list = sql_parser_push(p, e->list, &e->nlist, &cap, sizeof *e->list);
            if (!e->list)
                return NULL;
            e->list[e->nlist++] = k ? t : w;
        }
    }
    if (accept_kw(p, SQL_KW_ELSE) && !(e->b = sql_parser_expr(p)))
        return NULL;
    if (!is_kw(p, SQL_KW_END)) {
        sql_parser_expected(p, e->b ? "END" : "WHEN, ELSE or END");
        return NULL;
    }
    p->pos++;
    return seal(p, e);
}

static sql_expr *parse_primary(parser *p)
{
    const sql_token *t = peek(p);
    sql_expr *e;
    switch (t->kind) {
    case SQL_TOK_STRING: {
        p->pos++;
        const char *s = sql_parser_token_string(p, t);
        if (!s || !(e = new_expr(p, SQL_EXPR_LITERAL, t)))
            return NULL;
        e->value = sql_string(s, (uint32_t)strlen(s));
        return e;
    }
    case SQL_TOK_INTEGER:
    case SQL_TOK_DURATION:
        p->pos++;
        if (!(e = new_expr(p, SQL_EXPR_LITERAL, t)))
            return NULL;
        e->value = sql_bigint(t->i);
        return e;
    case SQL_TOK_FLOAT:
        p->pos++;
        if (!(e = new_expr(p, SQL_EXPR_LITERAL, t)))
            return NULL;
        e->value = sql_double(t->d);
        return e;
    case SQL_TOK_LPAREN:
        p->pos++;
        e = sql_parser_expr(p);
        if (!e || !expect(p, SQL_TOK_RPAREN, "')'"))
            return NULL;
        return e;
    case SQL_TOK_IDENT:
    case SQL_TOK_QIDENT:
        break;
    default:
        sql_parser_expected(p, "an expression");
        return NULL;
    }
    if (t->kind == SQL_TOK_IDENT) {
        switch (t->kw) {
        case SQL_KW_TRUE:
        case SQL_KW_FALSE:
            p->pos++;
            if (!(e = new_expr(p, SQL_EXPR_LITERAL, t)))
                return NULL;
            e->value = sql_bool(t->kw == SQL_KW_TRUE);
            return e;
        case SQL_KW_NULL:
            p->pos++;
            return new_expr(p, SQL_EXPR_LITERAL, t);
        case SQL_KW_ROWTIME:
            p->pos++;
            return new_expr(p, SQL_EXPR_ROWTIME, t);
        case SQL_KW_WINDOWSTART:
            p->pos++;
            return new_expr(p, SQL_EXPR_WINDOWSTART, t);
        case SQL_KW_WINDOWEND:
            p->pos++;
            return new_expr(p, SQL_EXPR_WINDOWEND, t);
        case SQL_KW_CASE:
            p->pos++;
            return parse_case(p, t);
        case SQL_KW_CAST:
            p->pos++;
            if (!(e = new_expr(p, SQL_EXPR_CAST, t)) || !expect(p, SQL_TOK_LPAREN, "'(' after CAST") ||
                !(e->a = sql_parser_expr(p)) || !expect_kw(p, SQL_KW_AS) || !sql_parser_type(p, &e->cast_type) ||
                !expect(p, SQL_TOK_RPAREN, "')'"))
                return NULL;
            return seal(p, e);
        default:
            break;
        }
    }
    /* A function call: a bare word followed by '('. */
    if (t->kind == SQL_TOK_IDENT && peek_at(p, 1)->kind == SQL_TOK_LPAREN &&
        !sql_keyword_reserved(t->kw)) {
        p->pos++;
        if (!(e = new_expr(p, SQL_EXPR_CALL, t)) || !(e->name = sql_parser_token_string(p, t)))
            return NULL;
        if (!parse_list(p, e, true, true))
            return NULL;
        return seal(p, e);
    }
    /* A name: col, alias.col, col.json.path. */
    if (!(e = new_expr(p, SQL_EXPR_NAME, t)))
        return NULL;
    e->parts = sql_parser_alloc(p, SQL_PARSE_MAX_PATH * sizeof *e->parts);
    if (!e->parts)
        return NULL;
    if (!is_name_token(t)) {
        sql_parser_expected(p, "an expression");  /* no reserved-word hint: `SELECT FROM` lacks an item */
        return NULL;
    }
    if (!(e->parts[0] = sql_parser_name(p, "an expression")))
        return NULL;
    e->nparts = 1;
    while (peek(p)->kind == SQL_TOK_DOT) {
        p->pos++;
        const sql_token *part = peek(p);
        /* After a dot any word names a field: `properties.end` is fine. */
        if (part->kind != SQL_TOK_IDENT && part->kind != SQL_TOK_QIDENT) {
            sql_parser_expected(p, "a field name after '.'");
            return NULL;
        }
        if (e->nparts == SQL_PARSE_MAX_PATH) {
            sql_parser_fail_at(p, part, "name has too many parts (at most 16)");
            return NULL;
        }
        p->pos++;
        if (!(e->parts[e->nparts++] = sql_parser_token_string(p, part)))
            return NULL;
    }
    return e;
}

static bool enter(parser *p)
{
    if (++p->depth > SQL_PARSE_MAX_DEPTH) {
        sql_parser_fail_at(p, peek(p), "expression nested too deeply (at most 64 levels)");
        return false;
    }
    return true;
}

static sql_expr *parse_unary(parser *p)
{
    const sql_token *t = peek(p);
    if (t->kind != SQL_TOK_MINUS && t->kind != SQL_TOK_PLUS)
        return parse_primary(p);
    if (!enter(p))
        return NULL;
    p->pos++;
    sql_expr *a = parse_unary(p);
    p->depth--;
    if (!a || t->kind == SQL_TOK_PLUS)
        return a;
    /* Fold a negated number, so -9223372036854775807 stays a literal. */
    if (a->kind == SQL_EXPR_LITERAL && a->value.type == SQL_BIGINT && a->value.u.i != INT64_MIN) {
        a->value.u.i = -a->value.u.i;
        a->line = t->line;
        a->column = t->column;
        return a;
    }
    if (a->kind == SQL_EXPR_LITERAL && a->value.type == SQL_DOUBLE) {
        a->value.u.d = -a->value.u.d;
        a->line = t->line;
        a->column = t->column;
        return a;
    }
    sql_expr *e = new_expr(p, SQL_EXPR_UNARY, t);
    if (!e)
        return NULL;
    e->op = SQL_OP_NEG;
    e->a = a;
    return seal(p, e);
}

static sql_expr *binary(parser *p, sql_op op, sql_expr *a, sql_expr *b, const sql_token *at)
{
    if (!a || !b)
        return NULL;
    sql_expr *e = new_expr(p, SQL_EXPR_BINARY, at);
    if (!e)
        return NULL;
    e->op = op;
    e->a = a;
    e->b = b;
    return seal(p, e);
}

static sql_expr *parse_mul(parser *p)
{
    sql_expr *e = parse_unary(p);
    for (;;) {
        const sql_token *t = peek(p);
        sql_op op;
        if (t->kind == SQL_TOK_STAR)
            op = SQL_OP_MUL;
        else if (t->kind == SQL_TOK_SLASH)
            op = SQL_OP_DIV;
        else if (t->kind == SQL_TOK_PERCENT)
            op = SQL_OP_MOD;
        else
            return e;
        if (!e)
            return NULL;
        p->pos++;
        e = binary(p, op, e, parse_unary(p), t);
    }
}

static sql_expr *parse_add(parser *p)
{
    sql_expr *e = parse_mul(p);
    for (;;) {
        const sql_token *t = peek(p);
        sql_op op;
        if (t->kind == SQL_TOK_PLUS)
            op = SQL_OP_ADD;
        else if (t->kind == SQL_TOK_MINUS)
            op = SQL_OP_SUB;
        else
            return e;
        if (!e)
            return NULL;
        p->pos++;
        e = binary(p, op, e, parse_mul(p), t);
    }
}

/* Comparison and the SQL predicates: one per operand, not associative. */
static sql_expr *parse_pred(parser *p)
{
    sql_expr *a = parse_add(p);
    if (!a)
        return NULL;
    const sql_token *t = peek(p);
    sql_op op;
    switch (t->kind) {
    case SQL_TOK_EQ: op = SQL_OP_EQ; break;
    case SQL_TOK_NE: op = SQL_OP_NE; break;
    case SQL_TOK_LT: op = SQL_OP_LT; break;
    case SQL_TOK_LE: op = SQL_OP_LE; break;
    case SQL_TOK_GT: op = SQL_OP_GT; break;
    case SQL_TOK_GE: op = SQL_OP_GE; break;
    default: goto predicates;
    }
    p->pos++;
    return binary(p, op, a, parse_add(p), t);

predicates:;
    sql_expr *e;
    if (is_kw(p, SQL_KW_IS)) {
        p->pos++;
        if (!(e = new_expr(p, SQL_EXPR_IS_NULL, t)))
            return NULL;
        e->negated = accept_kw(p, SQL_KW_NOT);
        if (!expect_kw(p, SQL_KW_NULL))
            return NULL;
        e->a = a;
        return seal(p, e);
    }
    bool neg = false;
    if (is_kw(p, SQL_KW_NOT)) {
        const sql_token *n = peek_at(p, 1);
        if (n->kind != SQL_TOK_IDENT ||
            (n->kw != SQL_KW_IN && n->kw != SQL_KW_LIKE && n->kw != SQL_KW_BETWEEN)) {
            p->pos++;
            sql_parser_expected(p, "IN, LIKE or BETWEEN after NOT");
            return NULL;
        }
        p->pos++;
        neg = true;
    }
    if (accept_kw(p, SQL_KW_IN)) {
        if (!(e = new_expr(p, SQL_EXPR_IN, t)))
            return NULL;
        e->negated = neg;
        e->a = a;
        if (!parse_list(p, e, false, false))
            return NULL;
        return seal(p, e);
    }
    if (accept_kw(p, SQL_KW_LIKE)) {
        if (!(e = new_expr(p, SQL_EXPR_LIKE, t)))
            return NULL;
        e->negated = neg;
        e->a = a;
        if (!(e->b = parse_add(p)))
            return NULL;
        return seal(p, e);
    }
    if (accept_kw(p, SQL_KW_BETWEEN)) {
        if (!(e = new_expr(p, SQL_EXPR_BETWEEN, t)))
            return NULL;
        e->negated = neg;
        e->a = a;
        if (!(e->b = parse_add(p)) || !expect_kw(p, SQL_KW_AND) || !(e->c = parse_add(p)))
            return NULL;
        return seal(p, e);
    }
    return a;
}

static sql_expr *parse_not(parser *p)
{
    const sql_token *t = peek(p);
    if (!is_kw(p, SQL_KW_NOT))
        return parse_pred(p);
    if (!enter(p))
        return NULL;
    p->pos++;
    sql_expr *a = parse_not(p);
    p->depth--;
    if (!a)
        return NULL;
    sql_expr *e = new_expr(p, SQL_EXPR_UNARY, t);
    if (!e)
        return NULL;
    e->op = SQL_OP_NOT;
    e->a = a;
    return seal(p, e);
}

static sql_expr *parse_and(parser *p)
{
    sql_expr *e = parse_not(p);
    while (e && is_kw(p, SQL_KW_AND)) {
        const sql_token *t = next(p);
        e = binary(p, SQL_OP_AND, e, parse_not(p), t);
    }
    return e;
}

sql_expr *sql_parser_expr(parser *p)
{
    if (!enter(p))
        return NULL;
    sql_expr *e = parse_and(p);
    while (e && is_kw(p, SQL_KW_OR)) {
        const sql_token *t = next(p);
        e = binary(p, SQL_OP_OR, e, parse_and(p), t);
    }
    p->depth--;
    return e;
}
