/* sql_lex: the tokens of the continuous-SQL language (SPEC 13), each with
 * its 1-based line and column.
 *
 * Keywords are case-insensitive and identifiers case-sensitive (they match
 * JSON field names). A keyword written in double quotes ("timestamp") is an
 * identifier. String literals use '' for a quote. An integer followed by a
 * time unit (5 SECONDS, 1 DAY) is one DURATION token in milliseconds.
 * Comments: `-- to end of line` and `/ * ... * /`. */
#ifndef SQL_LEX_H
#define SQL_LEX_H

#include <stddef.h>
#include <stdint.h>

#include "sql_str.h"

/* Keywords: X(name, reserved). A reserved keyword can't be a bare
 * identifier; the others (type names, window words, ...) also name columns
 * (`timestamp`, `size`, `session`) where the grammar expects a name. */
#define SQL_KEYWORDS(X)                                                         \
    X(ADVANCE, 0) X(AND, 1) X(ARRAY, 0) X(AS, 1) X(ASC, 0) X(BETWEEN, 1)        \
    X(BIGINT, 0) X(BOOLEAN, 0) X(BY, 1) X(CASE, 1) X(CAST, 1) X(CHANGES, 0)     \
    X(CREATE, 1) X(CROSS, 1) X(DESC, 0) X(DISTINCT, 1) X(DOUBLE, 0) X(DROP, 1)  \
    X(ELSE, 1) X(EMIT, 1) X(END, 1) X(EXPLAIN, 1) X(FALSE, 1) X(FINAL, 0)       \
    X(FROM, 1) X(GRACE, 1) X(GROUP, 1) X(HOPPING, 0) X(IN, 1) X(INNER, 1)       \
    X(IS, 1) X(JOIN, 1) X(JSON, 0) X(KEY, 0) X(LEFT, 1) X(LIKE, 1) X(LIMIT, 1)  \
    X(MATERIALIZED, 0) X(NOT, 1) X(NULL, 1) X(ON, 1) X(OR, 1) X(ORDER, 1)       \
    X(PERIOD, 0) X(PRIMARY, 0) X(ROWTIME, 0) X(SELECT, 1) X(SESSION, 0)         \
    X(SIZE, 0) X(STREAM, 0) X(STRING, 0) X(TABLE, 0) X(THEN, 1)                 \
    X(TIMESTAMP, 0) X(TRUE, 1) X(TUMBLING, 0) X(UNNEST, 1) X(VIEW, 0)           \
    X(WHEN, 1) X(WHERE, 1) X(WINDOW, 1) X(WINDOWEND, 0) X(WINDOWSTART, 0)       \
    X(WITH, 0) X(WITHIN, 1)

typedef enum sql_keyword {
    SQL_KW_NONE = 0,
#define SQL_KW_ENUM_(name, reserved) SQL_KW_##name,
    SQL_KEYWORDS(SQL_KW_ENUM_)
#undef SQL_KW_ENUM_
    SQL_KW_COUNT_
} sql_keyword;

typedef enum sql_tok_kind {
    SQL_TOK_EOF = 0,
    SQL_TOK_IDENT,     /* bare word; `kw` says if it is a keyword */
    SQL_TOK_QIDENT,    /* "quoted identifier" ("" inside for a quote) */
    SQL_TOK_STRING,    /* 'literal' ('' inside for a quote) */
    SQL_TOK_INTEGER,   /* `i` */
    SQL_TOK_FLOAT,     /* `d` (also integers too large for int64) */
    SQL_TOK_DURATION,  /* `i` milliseconds */
    SQL_TOK_COMMA, SQL_TOK_LPAREN, SQL_TOK_RPAREN, SQL_TOK_SEMI, SQL_TOK_DOT,
    SQL_TOK_STAR, SQL_TOK_PLUS, SQL_TOK_MINUS, SQL_TOK_SLASH, SQL_TOK_PERCENT,
    SQL_TOK_EQ, SQL_TOK_NE, SQL_TOK_LT, SQL_TOK_LE, SQL_TOK_GT, SQL_TOK_GE,
} sql_tok_kind;

typedef struct sql_token {
    sql_tok_kind kind;
    sql_keyword kw;     /* SQL_KW_NONE unless a bare keyword */
    const char *text;   /* the token's source bytes (quotes included) */
    uint32_t len;
    int line;
    int column;         /* 1-based, in bytes */
    int64_t i;          /* INTEGER value, DURATION milliseconds */
    double d;           /* FLOAT value */
} sql_token;

typedef struct sql_lex sql_lex;

/* A lexer over len bytes of src (not copied: src must outlive the lexer and
 * its tokens). Returns NULL on OOM. */
sql_lex *sql_lex_new(const char *src, size_t len);
/* Accepts NULL. */
void sql_lex_free(sql_lex *lx);

/* The next token into *ret_tok (EOF at the end, repeatedly). Returns 0, or
 * -EINVAL with *ret_err set (unterminated string, stray character, ...). */
int sql_lex_next(sql_lex *lx, sql_token *ret_tok, sql_error *ret_err);

/* The upper-case spelling of a keyword ("SELECT"); "" for SQL_KW_NONE. */
const char *sql_keyword_name(sql_keyword kw);
/* True for keywords that can't be bare identifiers. */
int sql_keyword_reserved(sql_keyword kw);

/* Copies the value of a STRING or QIDENT token without its quotes and with
 * doubled quotes undone into buf (cap >= tok->len suffices). Returns the
 * length. Any other token is copied as is. */
size_t sql_token_unquote(const sql_token *tok, char *buf, size_t cap);

/* Parses a duration string for options like STATE_TTL: a non-negative
 * integer and a unit ms, s, m, h or d ("1d", "90m", "500ms"). Returns 0 and
 * sets *ret_ms, or -EINVAL / -ERANGE. */
int sql_duration_parse(const char *s, size_t n, int64_t *ret_ms);

#endif
