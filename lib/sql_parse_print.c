/* sql_parse_print: the tree back to text: names of operators, statement
 * kinds and types, and an expression as canonical SQL (sql_expr_to_sql). */
#include <string.h>

#include "sql_parse_int.h"

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
