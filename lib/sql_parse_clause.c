/* sql_parse_clause: the clauses with a small grammar of their own:
 * WINDOW TUMBLING|HOPPING|SESSION, column types, column definitions and
 * WITH (key = 'value', ...) options. */
#include "sql_parse_int.h"

bool sql_parser_window(parser *p, sql_select *s)
{
    const sql_token *t = peek(p);
    s->window_line = t->line;
    s->window_column = t->column;
    if (accept_kw(p, SQL_KW_TUMBLING)) {
        s->window = SQL_WINDOW_TUMBLING;
        return expect(p, SQL_TOK_LPAREN, "'('") && expect_kw(p, SQL_KW_SIZE) &&
               sql_parser_duration(p, &s->window_size_ms) && expect(p, SQL_TOK_RPAREN, "')'");
    }
    if (accept_kw(p, SQL_KW_HOPPING)) {
        s->window = SQL_WINDOW_HOPPING;
        return expect(p, SQL_TOK_LPAREN, "'('") && expect_kw(p, SQL_KW_SIZE) &&
               sql_parser_duration(p, &s->window_size_ms) && expect(p, SQL_TOK_COMMA, "','") &&
               expect_kw(p, SQL_KW_ADVANCE) && expect_kw(p, SQL_KW_BY) &&
               sql_parser_duration(p, &s->window_advance_ms) && expect(p, SQL_TOK_RPAREN, "')'");
    }
    if (accept_kw(p, SQL_KW_SESSION)) {
        s->window = SQL_WINDOW_SESSION;
        return expect(p, SQL_TOK_LPAREN, "'('") && sql_parser_duration(p, &s->window_size_ms) &&
               expect(p, SQL_TOK_RPAREN, "')'");
    }
    sql_parser_expected(p, "TUMBLING, HOPPING or SESSION");
    return false;
}

bool sql_parser_type(parser *p, sql_type_ref *ret)
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
        sql_parser_expected(p, "a type (STRING, BIGINT, DOUBLE, BOOLEAN, TIMESTAMP, ARRAY<t>, JSON)");
        return false;
    }
    p->pos++;
    if (r.type == SQL_ARRAY) {
        if (!expect(p, SQL_TOK_LT, "'<' after ARRAY"))
            return false;
        if (is_kw(p, SQL_KW_ARRAY)) {
            sql_parser_fail_at(p, peek(p), "nested ARRAY types are not supported");
            return false;
        }
        sql_type_ref elem;
        if (!sql_parser_type(p, &elem))
            return false;
        r.elem = elem.type;
        if (!expect(p, SQL_TOK_GT, "'>'"))
            return false;
    }
    *ret = r;
    return true;
}

bool sql_parser_columns(parser *p, sql_stmt *st)
{
    if (!expect(p, SQL_TOK_LPAREN, "'(' and column definitions, or AS"))
        return false;
    uint32_t cap = 0;
    do {
        const sql_token *t = peek(p);
        st->columns = sql_parser_push(p, st->columns, &st->ncolumns, &cap, sizeof *st->columns);
        if (!st->columns)
            return false;
        sql_column_def *c = &st->columns[st->ncolumns++];
        c->line = t->line;
        c->column = t->column;
        if (!(c->name = sql_parser_name(p, "a column name")) || !sql_parser_type(p, &c->type))
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

bool sql_parser_options(parser *p, sql_stmt *st)
{
    if (!expect(p, SQL_TOK_LPAREN, "'(' after WITH"))
        return false;
    uint32_t cap = 0;
    do {
        const sql_token *k = peek(p);
        if (k->kind != SQL_TOK_IDENT && k->kind != SQL_TOK_QIDENT) {
            sql_parser_expected(p, "an option name");
            return false;
        }
        p->pos++;
        st->options = sql_parser_push(p, st->options, &st->noptions, &cap, sizeof *st->options);
        if (!st->options)
            return false;
        sql_option *o = &st->options[st->noptions++];
        o->line = k->line;
        o->column = k->column;
        if (!(o->key = sql_parser_token_string(p, k)) || !expect(p, SQL_TOK_EQ, "'='"))
            return false;
        const sql_token *v = peek(p);
        if (v->kind != SQL_TOK_STRING) {
            sql_parser_expected(p, "a string literal as the option's value");
            return false;
        }
        p->pos++;
        if (!(o->value = sql_parser_token_string(p, v)))
            return false;
    } while (accept(p, SQL_TOK_COMMA));
    return expect(p, SQL_TOK_RPAREN, "',' or ')'");
}
