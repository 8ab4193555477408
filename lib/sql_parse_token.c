/* sql_parse_token: the parser's services below the grammar: the first
 * error and "expected X, found Y", arena allocation and growing arrays,
 * names (with the reserved-word hint) and durations. */
#include <stdarg.h>
#include <string.h>

#include "sql_parse_int.h"

/* Sets the first error only: later ones are consequences. */
void sql_parser_fail_at(parser *p, const sql_token *t, const char *fmt, ...)
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
void sql_parser_expected(parser *p, const char *what)
{
    const sql_token *t = peek(p);
    if (t->kind == SQL_TOK_EOF) {
        sql_parser_fail_at(p, t, "expected %s, found end of input", what);
        return;
    }
    if (t->kind == SQL_TOK_SEMI) {
        sql_parser_fail_at(p, t, "expected %s, found ';'", what);
        return;
    }
    char found[48];
    size_t n = t->len < 40 ? t->len : 40;
    memcpy(found, t->text, n);
    if (n < t->len)
        memcpy(found + n, "...", 4);
    else
        found[n] = '\0';
    sql_parser_fail_at(p, t, "expected %s, found '%s'", what, found);
}

void *sql_parser_alloc(parser *p, size_t n)
{
    void *m = sql_arena_alloc(p->arena, n);
    if (!m && !p->failed) {
        p->failed = true;
        sql_error_set(p->err, 0, 0, "out of memory");
    }
    return m;
}

/* Grows an arena array of elements of size `sz` to hold n+1. */
void *sql_parser_push(parser *p, void *arr, uint32_t *n, uint32_t *cap, size_t sz)
{
    if (*n < *cap)
        return arr;
    uint32_t ncap = *cap ? *cap * 2 : 4;
    void *m = sql_parser_alloc(p, ncap * sz);
    if (!m)
        return NULL;
    if (*n)
        memcpy(m, arr, *n * sz);
    *cap = ncap;
    return m;
}

const char *sql_parser_token_string(parser *p, const sql_token *t)
{
    char *s = sql_parser_alloc(p, (size_t)t->len + 1);
    if (!s)
        return NULL;
    sql_token_unquote(t, s, (size_t)t->len + 1);
    return s;
}

/* A name (identifier or "quoted"); `what` names it in the error. */
const char *sql_parser_name(parser *p, const char *what)
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
            sql_parser_expected(p, n ? buf : what);
        } else {
            sql_parser_expected(p, what);
        }
        return NULL;
    }
    p->pos++;
    return sql_parser_token_string(p, t);
}

bool sql_parser_duration(parser *p, int64_t *ret_ms)
{
    const sql_token *t = peek(p);
    if (t->kind != SQL_TOK_DURATION) {
        sql_parser_expected(p, "a duration such as 5 SECONDS");
        return false;
    }
    p->pos++;
    *ret_ms = t->i;
    return true;
}
