/* sql_parse: recursive descent over the token array of one SQL text (see
 * sql_parse.h). One function per grammar rule, in the order of the SPEC 13
 * grammar; errors name what was expected and what was found. */
#include "sql_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_lex.h"

struct sql_script {
    sql_arena *arena;
    sql_stmt **stmts;
    size_t n;
};

typedef struct parser {
    const char *src;
    sql_token *toks;
    size_t ntoks;
    size_t pos;
    sql_arena *arena;
    sql_error *err;
    int depth;
    bool failed;
} parser;

const char *sql_op_name(sql_op op)
{
    static const char *const names[] = {
        [SQL_OP_OR] = "OR", [SQL_OP_AND] = "AND", [SQL_OP_NOT] = "NOT", [SQL_OP_EQ] = "=",
        [SQL_OP_NE] = "!=", [SQL_OP_LT] = "<", [SQL_OP_LE] = "<=", [SQL_OP_GT] = ">",
        [SQL_OP_GE] = ">=", [SQL_OP_ADD] = "+", [SQL_OP_SUB] = "-", [SQL_OP_MUL] = "*",
        [SQL_OP_DIV] = "/", [SQL_OP_MOD] = "%", [SQL_OP_NEG] = "-",
    };
    return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

const char *sql_stmt_kind_name(sql_stmt_kind kind)
{
    switch (kind) {
    case SQL_STMT_CREATE_STREAM:
    case SQL_STMT_CREATE_STREAM_AS: return "CREATE STREAM";
    case SQL_STMT_CREATE_TABLE: return "CREATE TABLE";
    case SQL_STMT_CREATE_VIEW: return "CREATE VIEW";
    case SQL_STMT_DROP: return "DROP";
    case SQL_STMT_EXPLAIN: return "EXPLAIN";
    case SQL_STMT_SELECT: return "SELECT";
    }
    return "?";
}

const char *sql_type_ref_name(sql_type_ref t, char *buf, size_t cap)
{
    sql_sb sb = {0};
    if (t.type == SQL_ARRAY)
        sql_sb_printf(&sb, "ARRAY<%s>", sql_type_name(t.elem));
    else
        sql_sb_puts(&sb, sql_type_name(t.type));
    size_t n = 0;
    if (cap) {
        n = sb.data && !sb.oom ? sb.len : 0;
        if (n >= cap)
            n = cap - 1;
        if (n)
            memcpy(buf, sb.data, n);
        buf[n] = '\0';
    }
    sql_sb_free(&sb);
    return buf;
}

/* -- token helpers ------------------------------------------------------------ */

static const sql_token *peek(const parser *p)
{
    return &p->toks[p->pos];
}

static const sql_token *peek_at(const parser *p, size_t k)
{
    size_t i = p->pos + k;
    return &p->toks[i < p->ntoks ? i : p->ntoks - 1];
}

static const sql_token *next(parser *p)
{
    const sql_token *t = &p->toks[p->pos];
    if (t->kind != SQL_TOK_EOF)
        p->pos++;
    return t;
}

/* Sets the first error only: later ones are consequences. */
static void fail_at(parser *p, const sql_token *t, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    va_list ap;
    va_start(ap, fmt);
    sql_error_vset(p->err, t->line, t->column, fmt, ap);
    va_end(ap);
}

/* "expected X, found Y" at the current token. */
static void expected(parser *p, const char *what)
{
    const sql_token *t = peek(p);
    if (t->kind == SQL_TOK_EOF) {
        fail_at(p, t, "expected %s, found end of input", what);
        return;
    }
    if (t->kind == SQL_TOK_SEMI) {
        fail_at(p, t, "expected %s, found ';'", what);
        return;
    }
    char found[48];
    size_t n = t->len < 40 ? t->len : 40;
    memcpy(found, t->text, n);
    if (n < t->len)
        memcpy(found + n, "...", 4);
    else
        found[n] = '\0';
    fail_at(p, t, "expected %s, found '%s'", what, found);
}

static bool is_kw(const parser *p, sql_keyword kw)
{
    const sql_token *t = peek(p);
    return t->kind == SQL_TOK_IDENT && t->kw == kw;
}

static bool accept_kw(parser *p, sql_keyword kw)
{
    if (!is_kw(p, kw))
        return false;
    p->pos++;
    return true;
}

static bool expect_kw(parser *p, sql_keyword kw)
{
    if (accept_kw(p, kw))
        return true;
    expected(p, sql_keyword_name(kw));
    return false;
}

static bool accept(parser *p, sql_tok_kind kind)
{
    if (peek(p)->kind != kind)
        return false;
    p->pos++;
    return true;
}

static bool expect(parser *p, sql_tok_kind kind, const char *what)
{
    if (accept(p, kind))
        return true;
    expected(p, what);
    return false;
}

static void *alloc(parser *p, size_t n)
{
    void *m = sql_arena_alloc(p->arena, n);
    if (!m && !p->failed) {
        p->failed = true;
        sql_error_set(p->err, 0, 0, "out of memory");
    }
    return m;
}

/* Grows an arena array of elements of size `sz` to hold n+1. */
static void *push(parser *p, void *arr, uint32_t *n, uint32_t *cap, size_t sz)
{
    if (*n < *cap)
        return arr;
    uint32_t ncap = *cap ? *cap * 2 : 4;
    void *m = alloc(p, ncap * sz);
    if (!m)
        return NULL;
    if (*n)
        memcpy(m, arr, *n * sz);
    *cap = ncap;
    return m;
}

static bool is_name_token(const sql_token *t)
{
    return t->kind == SQL_TOK_QIDENT ||
           (t->kind == SQL_TOK_IDENT && !sql_keyword_reserved(t->kw));
}

static const char *token_string(parser *p, const sql_token *t)
{
    char *s = alloc(p, (size_t)t->len + 1);
    if (!s)
        return NULL;
    sql_token_unquote(t, s, (size_t)t->len + 1);
    return s;
}

/* A name (identifier or "quoted"); `what` names it in the error. */
static const char *parse_name(parser *p, const char *what)
{
    const sql_token *t = peek(p);
    if (!is_name_token(t)) {
        if (t->kind == SQL_TOK_IDENT && t->kw) {
            char buf[96];
            sql_sb sb = {0};
            sql_sb_printf(&sb, "%s (%s is a reserved word; quote it as \"%.*s\")", what,
                          sql_keyword_name(t->kw), (int)t->len, t->text);
            size_t n = sb.data && !sb.oom ? sb.len : 0;
            if (n >= sizeof buf)
                n = sizeof buf - 1;
            if (n)
                memcpy(buf, sb.data, n);
            buf[n] = '\0';
            sql_sb_free(&sb);
            expected(p, n ? buf : what);
        } else {
            expected(p, what);
        }
        return NULL;
    }
    p->pos++;
    return token_string(p, t);
}

static bool parse_duration(parser *p, int64_t *ret_ms)
{
    const sql_token *t = peek(p);
    if (t->kind != SQL_TOK_DURATION) {
        expected(p, "a duration such as 5 SECONDS");
        return false;
    }
    p->pos++;
    *ret_ms = t->i;
    return true;
}

/* -- expressions --------------------------------------------------------------- */

static sql_expr *parse_expr(parser *p);

static sql_expr *new_expr(parser *p, sql_expr_kind kind, const sql_token *at)
{
    sql_expr *e = alloc(p, sizeof *e);
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

static bool parse_type(parser *p, sql_type_ref *ret)
{
    const sql_token *t = peek(p);
    sql_type_ref r = {SQL_NULL, SQL_NULL};
    if (t->kind == SQL_TOK_IDENT) {
        switch (t->kw) {
        case SQL_KW_STRING: r.type = SQL_STRING; break;
        case SQL_KW_BIGINT: r.type = SQL_BIGINT; break;
        case SQL_KW_DOUBLE: r.type = SQL_DOUBLE; break;
        case SQL_KW_BOOLEAN: r.type = SQL_BOOLEAN; break;
        case SQL_KW_TIMESTAMP: r.type = SQL_TIMESTAMP; break;
        case SQL_KW_JSON: r.type = SQL_JSON; break;
        case SQL_KW_ARRAY: r.type = SQL_ARRAY; break;
        default: break;
        }
    }
    if (r.type == SQL_NULL) {
        expected(p, "a type (STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, ARRAY<t>, JSON)");
        return false;
    }
    p->pos++;
    if (r.type == SQL_ARRAY) {
        if (!expect(p, SQL_TOK_LT, "'<' after ARRAY"))
            return false;
        if (is_kw(p, SQL_KW_ARRAY)) {
            fail_at(p, peek(p), "nested ARRAY types are not supported");
            return false;
        }
        sql_type_ref elem;
        if (!parse_type(p, &elem))
            return false;
        r.elem = elem.type;
        if (!expect(p, SQL_TOK_GT, "'>'"))
            return false;
    }
    *ret = r;
    return true;
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
        sql_expr *a = parse_expr(p);
        if (!a)
            return false;
        e->list = push(p, e->list, &e->nlist, &cap, sizeof *e->list);
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
    if (!is_kw(p, SQL_KW_WHEN) && !(e->a = parse_expr(p)))
        return NULL;
    uint32_t cap = 0;
    if (!is_kw(p, SQL_KW_WHEN)) {
        expected(p, "WHEN");
        return NULL;
    }
    while (accept_kw(p, SQL_KW_WHEN)) {
        sql_expr *w = parse_expr(p);
        if (!w || !expect_kw(p, SQL_KW_THEN))
            return NULL;
        sql_expr *t = parse_expr(p);
        if (!t)
            return NULL;
        for (int k = 0; k < 2; k++) {
            e->list = push(p, e->list, &e->nlist, &cap, sizeof *e->list);
            if (!e->list)
                return NULL;
            e->list[e->nlist++] = k ? t : w;
        }
    }
    if (accept_kw(p, SQL_KW_ELSE) && !(e->b = parse_expr(p)))
        return NULL;
    if (!is_kw(p, SQL_KW_END)) {
        expected(p, e->b ? "END" : "WHEN, ELSE or END");
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
        const char *s = token_string(p, t);
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
        e = parse_expr(p);
        if (!e || !expect(p, SQL_TOK_RPAREN, "')'"))
            return NULL;
        return e;
    case SQL_TOK_IDENT:
    case SQL_TOK_QIDENT:
        break;
    default:
        expected(p, "an expression");
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
                !(e->a = parse_expr(p)) || !expect_kw(p, SQL_KW_AS) || !parse_type(p, &e->cast_type) ||
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
        if (!(e = new_expr(p, SQL_EXPR_CALL, t)) || !(e->name = token_string(p, t)))
            return NULL;
        if (!parse_list(p, e, true, true))
            return NULL;
        return seal(p, e);
    }
    /* A name: col, alias.col, col.json.path. */
    if (!(e = new_expr(p, SQL_EXPR_NAME, t)))
        return NULL;
    e->parts = alloc(p, SQL_PARSE_MAX_PATH * sizeof *e->parts);
    if (!e->parts)
        return NULL;
    if (!is_name_token(t)) {
        expected(p, "an expression");  /* no reserved-word hint: `SELECT FROM` lacks an item */
        return NULL;
    }
    if (!(e->parts[0] = parse_name(p, "an expression")))
        return NULL;
    e->nparts = 1;
    while (peek(p)->kind == SQL_TOK_DOT) {
        p->pos++;
        const sql_token *part = peek(p);
        /* After a dot any word names a field: `properties.end` is fine. */
        if (part->kind != SQL_TOK_IDENT && part->kind != SQL_TOK_QIDENT) {
            expected(p, "a field name after '.'");
            return NULL;
        }
        if (e->nparts == SQL_PARSE_MAX_PATH) {
            fail_at(p, part, "name has too many parts (at most 16)");
            return NULL;
        }
        p->pos++;
        if (!(e->parts[e->nparts++] = token_string(p, part)))
            return NULL;
    }
    return e;
}

static bool enter(parser *p)
{
    if (++p->depth > SQL_PARSE_MAX_DEPTH) {
        fail_at(p, peek(p), "expression nested too deeply (at most 64 levels)");
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
            expected(p, "IN, LIKE or BETWEEN after NOT");
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

static sql_expr *parse_expr(parser *p)
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

/* -- SELECT ---------------------------------------------------------------------- */

static bool parse_source(parser *p, sql_source *s, const char *what)
{
    const sql_token *t = peek(p);
    s->line = t->line;
    s->column = t->column;
    if (!(s->name = parse_name(p, what)))
        return false;
    if (accept_kw(p, SQL_KW_AS)) {
        if (!(s->alias = parse_name(p, "an alias")))
            return false;
    } else if (is_name_token(peek(p))) {
        s->alias = parse_name(p, "an alias");
    }
    return !p->failed;
}

/* A clause a pull query can't have: an error at its first token. */
static bool pull_forbids(parser *p, bool pull, const char *clause)
{
    if (!pull)
        return true;
    fail_at(p, peek(p), "%s is not allowed in a pull query (SELECT ... FROM view|stream "
            "[WHERE ...] [ORDER BY ...] [LIMIT n])", clause);
    return false;
}

static bool parse_window(parser *p, sql_select *s)
{
    const sql_token *t = peek(p);
    s->window_line = t->line;
    s->window_column = t->column;
    if (accept_kw(p, SQL_KW_TUMBLING)) {
        s->window = SQL_WINDOW_TUMBLING;
        return expect(p, SQL_TOK_LPAREN, "'('") && expect_kw(p, SQL_KW_SIZE) &&
               parse_duration(p, &s->window_size_ms) && expect(p, SQL_TOK_RPAREN, "')'");
    }
    if (accept_kw(p, SQL_KW_HOPPING)) {
        s->window = SQL_WINDOW_HOPPING;
        return expect(p, SQL_TOK_LPAREN, "'('") && expect_kw(p, SQL_KW_SIZE) &&
               parse_duration(p, &s->window_size_ms) && expect(p, SQL_TOK_COMMA, "','") &&
               expect_kw(p, SQL_KW_ADVANCE) && expect_kw(p, SQL_KW_BY) &&
               parse_duration(p, &s->window_advance_ms) && expect(p, SQL_TOK_RPAREN, "')'");
    }
    if (accept_kw(p, SQL_KW_SESSION)) {
        s->window = SQL_WINDOW_SESSION;
        return expect(p, SQL_TOK_LPAREN, "'('") && parse_duration(p, &s->window_size_ms) &&
               expect(p, SQL_TOK_RPAREN, "')'");
    }
    expected(p, "TUMBLING, HOPPING or SESSION");
    return false;
}

static bool parse_expr_list(parser *p, sql_expr ***list, uint32_t *n)
{
    uint32_t cap = 0;
    do {
        sql_expr *e = parse_expr(p);
        if (!e)
            return false;
        *list = push(p, *list, n, &cap, sizeof **list);
        if (!*list)
            return false;
        (*list)[(*n)++] = e;
    } while (accept(p, SQL_TOK_COMMA));
    return true;
}

/* select := SELECT items FROM source ... ; `pull` for a top-level query. */
static sql_select *parse_select(parser *p, bool pull)
{
    const sql_token *t = peek(p);
    if (!expect_kw(p, SQL_KW_SELECT))
        return NULL;
    sql_select *s = alloc(p, sizeof *s);
    if (!s)
        return NULL;
    s->line = t->line;
    s->column = t->column;
    s->within_ms = -1;
    s->grace_ms = -1;
    s->limit = -1;

    uint32_t cap = 0;
    do {
        s->items = push(p, s->items, &s->nitems, &cap, sizeof *s->items);
        if (!s->items)
            return NULL;
        sql_select_item *it = &s->items[s->nitems++];
        const sql_token *at = peek(p);
        it->line = at->line;
        it->column = at->column;
        if (accept(p, SQL_TOK_STAR))
            continue;
        if (!(it->expr = parse_expr(p)))
            return NULL;
        if (accept_kw(p, SQL_KW_AS)) {
            if (!(it->alias = parse_name(p, "a column name after AS")))
                return NULL;
        } else if (is_name_token(peek(p))) {
            it->alias = parse_name(p, "a column name");
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
        if (accept_kw(p, SQL_KW_WITHIN) && !parse_duration(p, &s->within_ms))
            return NULL;
        if (!expect_kw(p, SQL_KW_ON) || !(s->join_on = parse_expr(p)))
            return NULL;
    }
    if (is_kw(p, SQL_KW_CROSS)) {
        if (!pull_forbids(p, pull, "CROSS JOIN UNNEST"))
            return NULL;
        p->pos++;
        if (!expect_kw(p, SQL_KW_JOIN) || !expect_kw(p, SQL_KW_UNNEST) ||
            !expect(p, SQL_TOK_LPAREN, "'(' after UNNEST") || !(s->unnest_expr = parse_expr(p)) ||
            !expect(p, SQL_TOK_RPAREN, "')'"))
            return NULL;
        accept_kw(p, SQL_KW_AS);
        if (!(s->unnest_alias = parse_name(p, "an alias for the UNNEST elements")))
            return NULL;
        s->has_unnest = true;
    }
    if (accept_kw(p, SQL_KW_WHERE) && !(s->where = parse_expr(p)))
        return NULL;
    if (is_kw(p, SQL_KW_WINDOW)) {
        if (!pull_forbids(p, pull, "WINDOW"))
            return NULL;
        p->pos++;
        if (!parse_window(p, s))
            return NULL;
    }
    if (is_kw(p, SQL_KW_GRACE)) {
        if (!pull_forbids(p, pull, "GRACE PERIOD"))
            return NULL;
        p->pos++;
        if (!expect_kw(p, SQL_KW_PERIOD) || !parse_duration(p, &s->grace_ms))
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
            expected(p, "CHANGES or FINAL");
            return NULL;
        }
    }
    if (is_kw(p, SQL_KW_ORDER)) {
        if (!pull) {
            fail_at(p, peek(p), "ORDER BY is only allowed in pull queries");
            return NULL;
        }
        p->pos++;
        if (!expect_kw(p, SQL_KW_BY))
            return NULL;
        cap = 0;
        do {
            s->order_by = push(p, s->order_by, &s->norder_by, &cap, sizeof *s->order_by);
            if (!s->order_by)
                return NULL;
            sql_order_item *o = &s->order_by[s->norder_by++];
            if (!(o->expr = parse_expr(p)))
                return NULL;
            if (accept_kw(p, SQL_KW_DESC))
                o->desc = true;
            else
                accept_kw(p, SQL_KW_ASC);
        } while (accept(p, SQL_TOK_COMMA));
    }
    if (is_kw(p, SQL_KW_LIMIT)) {
        if (!pull) {
            fail_at(p, peek(p), "LIMIT is only allowed in pull queries");
            return NULL;
        }
        p->pos++;
        const sql_token *n = peek(p);
        if (n->kind != SQL_TOK_INTEGER) {
            expected(p, "a non-negative integer after LIMIT");
            return NULL;
        }
        p->pos++;
        s->limit = n->i;
    }
    return s;
}

/* -- statements ---------------------------------------------------------------------- */

static bool parse_options(parser *p, sql_stmt *st)
{
    if (!expect(p, SQL_TOK_LPAREN, "'(' after WITH"))
        return false;
    uint32_t cap = 0;
    do {
        const sql_token *k = peek(p);
        if (k->kind != SQL_TOK_IDENT && k->kind != SQL_TOK_QIDENT) {
            expected(p, "an option name");
            return false;
        }
        p->pos++;
        st->options = push(p, st->options, &st->noptions, &cap, sizeof *st->options);
        if (!st->options)
            return false;
        sql_option *o = &st->options[st->noptions++];
        o->line = k->line;
        o->column = k->column;
        if (!(o->key = token_string(p, k)) || !expect(p, SQL_TOK_EQ, "'='"))
            return false;
        const sql_token *v = peek(p);
        if (v->kind != SQL_TOK_STRING) {
            expected(p, "a string literal as the option's value");
            return false;
        }
        p->pos++;
        if (!(o->value = token_string(p, v)))
            return false;
    } while (accept(p, SQL_TOK_COMMA));
    return expect(p, SQL_TOK_RPAREN, "',' or ')'");
}

static bool parse_columns(parser *p, sql_stmt *st)
{
    if (!expect(p, SQL_TOK_LPAREN, "'(' and column definitions, or AS"))
        return false;
    uint32_t cap = 0;
    do {
        const sql_token *t = peek(p);
        st->columns = push(p, st->columns, &st->ncolumns, &cap, sizeof *st->columns);
        if (!st->columns)
            return false;
        sql_column_def *c = &st->columns[st->ncolumns++];
        c->line = t->line;
        c->column = t->column;
        if (!(c->name = parse_name(p, "a column name")) || !parse_type(p, &c->type))
            return false;
        for (;;) {
            if (accept_kw(p, SQL_KW_NOT)) {
                if (!expect_kw(p, SQL_KW_NULL))
                    return false;
                c->not_null = true;
            } else if (accept_kw(p, SQL_KW_PRIMARY)) {
                if (!expect_kw(p, SQL_KW_KEY))
                    return false;
                c->primary_key = true;
            } else {
                break;
            }
        }
    } while (accept(p, SQL_TOK_COMMA));
    return expect(p, SQL_TOK_RPAREN, "',' or ')'");
}

static bool parse_create(parser *p, sql_stmt *st)
{
    st->materialized = accept_kw(p, SQL_KW_MATERIALIZED);
    const sql_token *what = peek(p);
    bool view = false, table = false;
    if (accept_kw(p, SQL_KW_VIEW))
        view = true;
    else if (accept_kw(p, SQL_KW_TABLE))
        table = true;
    else if (!accept_kw(p, SQL_KW_STREAM)) {
        expected(p, st->materialized ? "VIEW" : "STREAM, TABLE or VIEW");
        return false;
    }
    if (st->materialized && !view) {
        fail_at(p, what, "MATERIALIZED applies only to VIEW");
        return false;
    }
    const sql_token *n = peek(p);
    st->name_line = n->line;
    st->name_column = n->column;
    if (!(st->name = parse_name(p, "a name")))
        return false;
    if (view) {
        st->kind = SQL_STMT_CREATE_VIEW;
        if (accept_kw(p, SQL_KW_WITH) && !parse_options(p, st))
            return false;
        return expect_kw(p, SQL_KW_AS) && (st->select = parse_select(p, false));
    }
    if (table) {
        st->kind = SQL_STMT_CREATE_TABLE;
        if (!parse_columns(p, st))
            return false;
        return !accept_kw(p, SQL_KW_WITH) || parse_options(p, st);
    }
    if (accept_kw(p, SQL_KW_AS)) {
        st->kind = SQL_STMT_CREATE_STREAM_AS;
        return (st->select = parse_select(p, false)) != NULL;
    }
    st->kind = SQL_STMT_CREATE_STREAM;
    if (!parse_columns(p, st))
        return false;
    return !accept_kw(p, SQL_KW_WITH) || parse_options(p, st);
}

static sql_stmt *parse_stmt(parser *p)
{
    const sql_token *t = peek(p);
    sql_stmt *st = alloc(p, sizeof *st);
    if (!st)
        return NULL;
    st->line = t->line;
    st->column = t->column;
    bool ok;
    if (accept_kw(p, SQL_KW_CREATE)) {
        ok = parse_create(p, st);
    } else if (accept_kw(p, SQL_KW_DROP)) {
        st->kind = SQL_STMT_DROP;
        if (accept_kw(p, SQL_KW_STREAM))
            st->drop_kind = SQL_OBJ_STREAM;
        else if (accept_kw(p, SQL_KW_VIEW))
            st->drop_kind = SQL_OBJ_VIEW;
        else if (accept_kw(p, SQL_KW_TABLE))
            st->drop_kind = SQL_OBJ_TABLE;
        else {
            expected(p, "STREAM, VIEW or TABLE");
            return NULL;
        }
        const sql_token *n = peek(p);
        st->name_line = n->line;
        st->name_column = n->column;
        ok = (st->name = parse_name(p, "a name")) != NULL;
    } else if (accept_kw(p, SQL_KW_EXPLAIN)) {
        st->kind = SQL_STMT_EXPLAIN;
        ok = (st->select = parse_select(p, false)) != NULL;
    } else if (is_kw(p, SQL_KW_SELECT)) {
        st->kind = SQL_STMT_SELECT;
        ok = (st->select = parse_select(p, true)) != NULL;
    } else {
        expected(p, "CREATE, DROP, EXPLAIN or SELECT");
        return NULL;
    }
    if (!ok)
        return NULL;
    const sql_token *end = peek(p);
    if (end->kind != SQL_TOK_SEMI && end->kind != SQL_TOK_EOF) {
        expected(p, "';' or end of input");
        return NULL;
    }
    const sql_token *last = &p->toks[p->pos - 1];
    st->text = t->text;
    st->text_len = (size_t)(last->text + last->len - t->text);
    return st;
}

/* Lexes the whole text into p->toks (EOF last). */
static int lex_all(parser *p, const char *src, size_t len)
{
    sql_lex *lx = sql_lex_new(src, len);
    if (!lx) {
        sql_error_set(p->err, 0, 0, "out of memory");
        return -ENOMEM;
    }
    size_t cap = 0;
    int rc = 0;
    for (;;) {
        if (p->ntoks == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            sql_token *t = realloc(p->toks, ncap * sizeof *t);
            if (!t) {
                sql_error_set(p->err, 0, 0, "out of memory");
                rc = -ENOMEM;
                break;
            }
            p->toks = t;
            cap = ncap;
        }
        sql_token *t = &p->toks[p->ntoks];
        if ((rc = sql_lex_next(lx, t, p->err)) < 0)
            break;
        p->ntoks++;
        if (t->kind == SQL_TOK_EOF)
            break;
    }
    sql_lex_free(lx);
    return rc;
}

static sql_script *script_new(parser *p, const char *src, size_t len, sql_error *ret_err)
{
    memset(p, 0, sizeof *p);
    p->src = src;
    p->err = ret_err;
    sql_script *s = calloc(1, sizeof *s);
    if (!s || !(s->arena = sql_arena_new())) {
        free(s);
        sql_error_set(ret_err, 0, 0, "out of memory");
        return NULL;
    }
    p->arena = s->arena;
    if (lex_all(p, src, len) < 0) {
        sql_script_free(s);
        free(p->toks);
        return NULL;
    }
    return s;
}

sql_script *sql_parse(const char *src, size_t len, sql_error *ret_err)
{
    parser p;
    /* A UTF-8 byte order mark (editors add it to --sql files) is not text;
     * columns count from after it. */
    if (len >= 3 && memcmp(src, "\xef\xbb\xbf", 3) == 0) {
        src += 3;
        len -= 3;
    }
    sql_script *s = script_new(&p, src, len, ret_err);
    if (!s)
        return NULL;
    size_t cap = 0;
    for (;;) {
        while (accept(&p, SQL_TOK_SEMI))
            ;
        if (peek(&p)->kind == SQL_TOK_EOF)
            break;
        if (s->n == SQL_PARSE_MAX_STATEMENTS) {
            fail_at(&p, peek(&p), "too many statements (at most 256)");
            break;
        }
        sql_stmt *st = parse_stmt(&p);
        if (!st)
            break;
        if (s->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            sql_stmt **m = realloc(s->stmts, ncap * sizeof *m);
            if (!m) {
                fail_at(&p, peek(&p), "out of memory");
                break;
            }
            s->stmts = m;
            cap = ncap;
        }
        s->stmts[s->n++] = st;
    }
    free(p.toks);
    if (p.failed) {
        sql_script_free(s);
        return NULL;
    }
    return s;
}

sql_script *sql_parse_expr(const char *src, size_t len, const sql_expr **ret_expr, sql_error *ret_err)
{
    parser p;
    sql_script *s = script_new(&p, src, len, ret_err);
    if (!s)
        return NULL;
    sql_expr *e = parse_expr(&p);
    if (e && peek(&p)->kind != SQL_TOK_EOF)
        expected(&p, "end of expression");
    free(p.toks);
    if (!e || p.failed) {
        sql_script_free(s);
        return NULL;
    }
    *ret_expr = e;
    return s;
}

void sql_script_free(sql_script *s)
{
    if (!s)
        return;
    sql_arena_free(s->arena);
    free(s->stmts);
    free(s);
}

size_t sql_script_count(const sql_script *s)
{
    return s ? s->n : 0;
}

const sql_stmt *sql_script_stmt(const sql_script *s, size_t i)
{
    return s && i < s->n ? s->stmts[i] : NULL;
}

/* -- canonical text ------------------------------------------------------------------- */

static bool plain_name(const char *s)
{
    if (!s[0])
        return false;
    for (const char *c = s; *c; c++) {
        bool ok = (*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || *c == '_' ||
                  (c > s && *c >= '0' && *c <= '9');
        if (!ok)
            return false;
    }
    sql_lex *lx = sql_lex_new(s, strlen(s));
    sql_token t;
    bool kw = lx && sql_lex_next(lx, &t, NULL) == 0 && t.kw != SQL_KW_NONE;
    sql_lex_free(lx);
    return !kw;
}

static void put_name(sql_sb *sb, const char *s)
{
    if (plain_name(s)) {
        sql_sb_puts(sb, s);
        return;
    }
    sql_sb_put(sb, "\"", 1);
    for (const char *c = s; *c; c++) {
        sql_sb_put(sb, c, 1);
        if (*c == '"')
            sql_sb_put(sb, "\"", 1);  /* doubled inside quotes */
    }
    sql_sb_put(sb, "\"", 1);
}

void sql_expr_to_sql(const sql_expr *e, sql_sb *sb)
{
    char num[40];
    int n;
    switch (e->kind) {
    case SQL_EXPR_LITERAL:
        switch (e->value.type) {
        case SQL_NULL: sql_sb_puts(sb, "NULL"); break;
        case SQL_BOOLEAN: sql_sb_puts(sb, e->value.u.b ? "TRUE" : "FALSE"); break;
        case SQL_BIGINT:
            n = sql_format_int64(e->value.u.i, num, sizeof num);
            sql_sb_put(sb, num, (size_t)n);
            break;
        case SQL_DOUBLE:
            n = sql_format_double(e->value.u.d, num, sizeof num);
            sql_sb_put(sb, num, n > 0 ? (size_t)n : 0);
            /* Keep it a DOUBLE when read back: 2.0 prints as "2". */
            if (n > 0 && !memchr(num, '.', (size_t)n) && !memchr(num, 'e', (size_t)n))
                sql_sb_puts(sb, ".0");
            break;
        default: sql_sb_put_sql_string(sb, e->value.u.s, e->value.len); break;
        }
        break;
    case SQL_EXPR_NAME:
        for (uint32_t i = 0; i < e->nparts; i++) {
            if (i)
                sql_sb_put(sb, ".", 1);
            put_name(sb, e->parts[i]);
        }
        break;
    case SQL_EXPR_ROWTIME: sql_sb_puts(sb, "ROWTIME"); break;
    case SQL_EXPR_WINDOWSTART: sql_sb_puts(sb, "WINDOWSTART"); break;
    case SQL_EXPR_WINDOWEND: sql_sb_puts(sb, "WINDOWEND"); break;
    case SQL_EXPR_UNARY:
        sql_sb_puts(sb, e->op == SQL_OP_NOT ? "(NOT " : "(-");
        sql_expr_to_sql(e->a, sb);
        sql_sb_puts(sb, ")");
        break;
    case SQL_EXPR_BINARY:
        sql_sb_puts(sb, "(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_printf(sb, " %s ", sql_op_name(e->op));
        sql_expr_to_sql(e->b, sb);
        sql_sb_puts(sb, ")");
        break;
    case SQL_EXPR_IS_NULL:
        sql_sb_puts(sb, "(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_puts(sb, e->negated ? " IS NOT NULL)" : " IS NULL)");
        break;
    case SQL_EXPR_IN:
        sql_sb_puts(sb, "(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_puts(sb, e->negated ? " NOT IN (" : " IN (");
        for (uint32_t i = 0; i < e->nlist; i++) {
            if (i)
                sql_sb_puts(sb, ", ");
            sql_expr_to_sql(e->list[i], sb);
        }
        sql_sb_puts(sb, "))");
        break;
    case SQL_EXPR_LIKE:
        sql_sb_puts(sb, "(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_puts(sb, e->negated ? " NOT LIKE " : " LIKE ");
        sql_expr_to_sql(e->b, sb);
        sql_sb_puts(sb, ")");
        break;
    case SQL_EXPR_BETWEEN:
        sql_sb_puts(sb, "(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_puts(sb, e->negated ? " NOT BETWEEN " : " BETWEEN ");
        sql_expr_to_sql(e->b, sb);
        sql_sb_puts(sb, " AND ");
        sql_expr_to_sql(e->c, sb);
        sql_sb_puts(sb, ")");
        break;
    case SQL_EXPR_CASE:
        sql_sb_puts(sb, "CASE");
        if (e->a) {
            sql_sb_puts(sb, " ");
            sql_expr_to_sql(e->a, sb);
        }
        for (uint32_t i = 0; i + 1 < e->nlist; i += 2) {
            sql_sb_puts(sb, " WHEN ");
            sql_expr_to_sql(e->list[i], sb);
            sql_sb_puts(sb, " THEN ");
            sql_expr_to_sql(e->list[i + 1], sb);
        }
        if (e->b) {
            sql_sb_puts(sb, " ELSE ");
            sql_expr_to_sql(e->b, sb);
        }
        sql_sb_puts(sb, " END");
        break;
    case SQL_EXPR_CAST: {
        char tn[32];
        sql_sb_puts(sb, "CAST(");
        sql_expr_to_sql(e->a, sb);
        sql_sb_printf(sb, " AS %s)", sql_type_ref_name(e->cast_type, tn, sizeof tn));
        break;
    }
    case SQL_EXPR_CALL:
        sql_sb_puts(sb, e->name);
        sql_sb_puts(sb, e->star ? "(*" : e->distinct ? "(DISTINCT " : "(");
        for (uint32_t i = 0; i < e->nlist; i++) {
            if (i)
                sql_sb_puts(sb, ", ");
            sql_expr_to_sql(e->list[i], sb);
        }
        sql_sb_puts(sb, ")");
        break;
    }
}
