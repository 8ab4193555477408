/* sql_parse_int.h: what the parser's modules share, inside lib only: the
 * parser's state, its token cursor (inline: every rule calls it per token)
 * and the rules one module calls in another.
 *   sql_parse.c         statements (CREATE, DROP, EXPLAIN, SELECT), the
 *                       script and its entry points (sql_parse, sql_parse_expr)
 *   sql_parse_select.c  SELECT and its clauses (FROM, JOIN, UNNEST, WHERE,
 *                       GROUP BY, EMIT, ORDER BY, LIMIT)
 *   sql_parse_clause.c  the clauses with a grammar of their own: WINDOW,
 *                       types, column definitions, WITH options
 *   sql_parse_expr.c    expressions, by precedence
 *   sql_parse_token.c   errors, arena allocation, names and durations
 *   sql_parse_print.c   names of operators and kinds, an expression as SQL */
#ifndef SQL_PARSE_INT_H
#define SQL_PARSE_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sql_lex.h"
#include "sql_parse.h"

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

/* ---- sql_parse_token.c (contracts there) ---- */

void sql_parser_fail_at(parser *p, const sql_token *t, const char *fmt, ...);
void sql_parser_expected(parser *p, const char *what);
/* Arena memory; NULL (and the error set) when out of it. */
void *sql_parser_alloc(parser *p, size_t n);
void *sql_parser_push(parser *p, void *arr, uint32_t *n, uint32_t *cap, size_t sz);
/* The token's text, unquoted, in the arena. */
const char *sql_parser_token_string(parser *p, const sql_token *t);
const char *sql_parser_name(parser *p, const char *what);
bool sql_parser_duration(parser *p, int64_t *ret_ms);

/* ---- the rules other modules call ---- */

sql_expr *sql_parser_expr(parser *p);                       /* sql_parse_expr.c */
sql_select *sql_parser_select(parser *p, bool pull);        /* sql_parse_select.c */
bool sql_parser_window(parser *p, sql_select *s);           /* sql_parse_clause.c */
bool sql_parser_type(parser *p, sql_type_ref *ret);
bool sql_parser_columns(parser *p, sql_stmt *st);
bool sql_parser_options(parser *p, sql_stmt *st);

/* ---- the token cursor ---- */

static inline const sql_token *peek(const parser *p)
{
    return &p->toks[p->pos];
}

static inline const sql_token *peek_at(const parser *p, size_t k)
{
    size_t i = p->pos + k;
    return &p->toks[i < p->ntoks ? i : p->ntoks - 1];
}

static inline const sql_token *next(parser *p)
{
    const sql_token *t = &p->toks[p->pos];
    if (t->kind != SQL_TOK_EOF)
        p->pos++;
    return t;
}

static inline bool is_kw(const parser *p, sql_keyword kw)
{
    const sql_token *t = peek(p);
    return t->kind == SQL_TOK_IDENT && t->kw == kw;
}

static inline bool accept_kw(parser *p, sql_keyword kw)
{
    if (!is_kw(p, kw))
        return false;
    p->pos++;
    return true;
}

static inline bool expect_kw(parser *p, sql_keyword kw)
{
    if (accept_kw(p, kw))
        return true;
    sql_parser_expected(p, sql_keyword_name(kw));
    return false;
}

static inline bool accept(parser *p, sql_tok_kind kind)
{
    if (peek(p)->kind != kind)
        return false;
    p->pos++;
    return true;
}

static inline bool expect(parser *p, sql_tok_kind kind, const char *what)
{
    if (accept(p, kind))
        return true;
    sql_parser_expected(p, what);
    return false;
}

static inline bool is_name_token(const sql_token *t)
{
    return t->kind == SQL_TOK_QIDENT ||
           (t->kind == SQL_TOK_IDENT && !sql_keyword_reserved(t->kw));
}

#endif
