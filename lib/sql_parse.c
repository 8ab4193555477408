/* sql_parse: recursive descent over the token array of one SQL text (see
 * sql_parse.h). One function per grammar rule, in the order of the SPEC 13
 * grammar; errors name what was expected and what was found. This file
 * holds the statements and the script; the other rules are in the
 * sql_parse_*.c modules (sql_parse_int.h). */
#include "sql_parse.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sql_lex.h"
#include "sql_parse_int.h"

struct sql_script {
    sql_arena *arena;
    sql_stmt **stmts;
    size_t n;
};

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
        sql_parser_expected(p, st->materialized ? "VIEW" : "STREAM, TABLE or VIEW");
        return false;
    }
    if (st->materialized && !view) {
        sql_parser_fail_at(p, what, "MATERIALIZED applies only to VIEW");
        return false;
    }
    const sql_token *n = peek(p);
    st->name_line = n->line;
    st->name_column = n->column;
    if (!(st->name = sql_parser_name(p, "a name")))
        return false;
    if (view) {
        st->kind = SQL_STMT_CREATE_VIEW;
        if (accept_kw(p, SQL_KW_WITH) && !sql_parser_options(p, st))
            return false;
        return expect_kw(p, SQL_KW_AS) && (st->select = sql_parser_select(p, false));
    }
    if (table) {
        st->kind = SQL_STMT_CREATE_TABLE;
        if (!sql_parser_columns(p, st))
            return false;
        return !accept_kw(p, SQL_KW_WITH) || sql_parser_options(p, st);
    }
    if (accept_kw(p, SQL_KW_AS)) {
        st->kind = SQL_STMT_CREATE_STREAM_AS;
        return (st->select = sql_parser_select(p, false)) != NULL;
    }
    st->kind = SQL_STMT_CREATE_STREAM;
    if (!sql_parser_columns(p, st))
        return false;
    return !accept_kw(p, SQL_KW_WITH) || sql_parser_options(p, st);
}

static sql_stmt *parse_stmt(parser *p)
{
    const sql_token *t = peek(p);
    sql_stmt *st = sql_parser_alloc(p, sizeof *st);
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
            sql_parser_expected(p, "STREAM, VIEW or TABLE");
            return NULL;
        }
        const sql_token *n = peek(p);
        st->name_line = n->line;
        st->name_column = n->column;
        ok = (st->name = sql_parser_name(p, "a name")) != NULL;
    } else if (accept_kw(p, SQL_KW_EXPLAIN)) {
        st->kind = SQL_STMT_EXPLAIN;
        ok = (st->select = sql_parser_select(p, false)) != NULL;
    } else if (is_kw(p, SQL_KW_SELECT)) {
        st->kind = SQL_STMT_SELECT;
        ok = (st->select = sql_parser_select(p, true)) != NULL;
    } else {
        sql_parser_expected(p, "CREATE, DROP, EXPLAIN or SELECT");
        return NULL;
    }
    if (!ok)
        return NULL;
    const sql_token *end = peek(p);
    if (end->kind != SQL_TOK_SEMI && end->kind != SQL_TOK_EOF) {
        sql_parser_expected(p, "';' or end of input");
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
            sql_parser_fail_at(&p, peek(&p), "too many statements (at most 256)");
            break;
        }
        sql_stmt *st = parse_stmt(&p);
        if (!st)
            break;
        if (s->n == cap) {
            size_t ncap = cap ? cap * 2 : 8;
            sql_stmt **m = realloc(s->stmts, ncap * sizeof *m);
            if (!m) {
                sql_parser_fail_at(&p, peek(&p), "out of memory");
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
    sql_expr *e = sql_parser_expr(&p);
    if (e && peek(&p)->kind != SQL_TOK_EOF)
        sql_parser_expected(&p, "end of expression");
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
