/* sql_lex: hand-written scanner for the SQL language (see sql_lex.h). */
#include "sql_lex.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct sql_lex {
    const char *src;
    size_t len;
    size_t pos;
    int line;
    size_t line_start;   /* offset of the current line's first byte */
};

static const struct {
    const char *name;
    int reserved;
} keywords[] = {
    {"", 0},
#define SQL_KW_ROW_(name, reserved) {#name, reserved},
    SQL_KEYWORDS(SQL_KW_ROW_)
#undef SQL_KW_ROW_
};

const char *sql_keyword_name(sql_keyword kw)
{
    return (unsigned)kw < SQL_KW_COUNT_ ? keywords[kw].name : "";
}

int sql_keyword_reserved(sql_keyword kw)
{
    return (unsigned)kw < SQL_KW_COUNT_ ? keywords[kw].reserved : 0;
}

static sql_keyword keyword_of(const char *s, size_t n)
{
    /* Binary search: the X-macro list is kept in alphabetical order. */
    size_t lo = 1, hi = SQL_KW_COUNT_;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *w = keywords[mid].name;
        int c = 0;
        size_t i = 0;
        for (; i < n && w[i]; i++) {
            char a = s[i];
            if (a >= 'a' && a <= 'z')
                a = (char)(a - 32);
            if (a != w[i]) {
                c = (unsigned char)a < (unsigned char)w[i] ? -1 : 1;
                break;
            }
        }
        if (c == 0 && i == n && !w[i])
            return (sql_keyword)mid;
        if (c == 0)
            c = i == n ? -1 : 1;
        if (c < 0)
            hi = mid;
        else
            lo = mid + 1;
    }
    return SQL_KW_NONE;
}

sql_lex *sql_lex_new(const char *src, size_t len)
{
    sql_lex *lx = calloc(1, sizeof *lx);
    if (!lx)
        return NULL;
    lx->src = src;
    lx->len = len;
    lx->line = 1;
    return lx;
}

void sql_lex_free(sql_lex *lx)
{
    free(lx);
}

static int is_ident_start(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80;
}

static int is_ident_char(unsigned char c)
{
    return is_ident_start(c) || (c >= '0' && c <= '9');
}

static int column_of(const sql_lex *lx, size_t pos)
{
    size_t col = pos - lx->line_start + 1;
    return col > INT32_MAX ? INT32_MAX : (int)col;
}

/* Advances over n bytes, keeping line and column in step. */
static void advance(sql_lex *lx, size_t n)
{
    for (size_t i = 0; i < n && lx->pos < lx->len; i++) {
        if (lx->src[lx->pos] == '\n') {
            if (lx->line < INT32_MAX)
                lx->line++;
            lx->line_start = lx->pos + 1;
        }
        lx->pos++;
    }
}

/* Skips blanks and comments. Returns -EINVAL for an unterminated block
 * comment (position of its start in *ret_err). */
static int skip_blank(sql_lex *lx, sql_error *ret_err)
{
    while (lx->pos < lx->len) {
        char c = lx->src[lx->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            advance(lx, 1);
        } else if (c == '-' && lx->pos + 1 < lx->len && lx->src[lx->pos + 1] == '-') {
            while (lx->pos < lx->len && lx->src[lx->pos] != '\n')
                advance(lx, 1);
        } else if (c == '/' && lx->pos + 1 < lx->len && lx->src[lx->pos + 1] == '*') {
            int line = lx->line, col = column_of(lx, lx->pos);
            advance(lx, 2);
            for (;;) {
                if (lx->pos + 1 >= lx->len) {
                    sql_error_set(ret_err, line, col, "unterminated comment");
                    return -EINVAL;
                }
                if (lx->src[lx->pos] == '*' && lx->src[lx->pos + 1] == '/') {
                    advance(lx, 2);
                    break;
                }
                advance(lx, 1);
            }
        } else {
            break;
        }
    }
    return 0;
}

/* Duration units: singular and plural, in milliseconds. */
static int64_t unit_ms(const char *s, size_t n)
{
    static const struct {
        const char *name;
        int64_t ms;
    } units[] = {
        {"MILLISECOND", 1}, {"MILLISECONDS", 1}, {"SECOND", 1000}, {"SECONDS", 1000},
        {"MINUTE", 60000}, {"MINUTES", 60000}, {"HOUR", 3600000}, {"HOURS", 3600000},
        {"DAY", 86400000}, {"DAYS", 86400000},
    };
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++)
        if (sql_ieq(s, n, units[i].name))
            return units[i].ms;
    return 0;
}

/* Scans a number at lx->pos into tok; a following unit word makes it a
 * DURATION. */
static int scan_number(sql_lex *lx, sql_token *tok, sql_error *ret_err)
{
    const char *s = lx->src;
    size_t p = lx->pos;
    bool is_float = false;
    while (p < lx->len && s[p] >= '0' && s[p] <= '9')
        p++;
    if (p + 1 < lx->len && s[p] == '.' && s[p + 1] >= '0' && s[p + 1] <= '9') {
        is_float = true;
        p++;
        while (p < lx->len && s[p] >= '0' && s[p] <= '9')
            p++;
    }
    if (p < lx->len && (s[p] == 'e' || s[p] == 'E')) {
        size_t q = p + 1;
        if (q < lx->len && (s[q] == '+' || s[q] == '-'))
            q++;
        if (q < lx->len && s[q] >= '0' && s[q] <= '9') {
            is_float = true;
            p = q;
            while (p < lx->len && s[p] >= '0' && s[p] <= '9')
                p++;
        }
    }
    size_t n = p - lx->pos;
    if (p < lx->len && is_ident_char((unsigned char)s[p])) {
        size_t q = p;
        while (q < lx->len && is_ident_char((unsigned char)s[q]))
            q++;
        sql_error_set(ret_err, tok->line, tok->column, "bad number '%.*s'",
                      (int)(q - lx->pos > 64 ? 64 : q - lx->pos), s + lx->pos);
        return -EINVAL;
    }
    char buf[128];
    if (n >= sizeof buf) {
        sql_error_set(ret_err, tok->line, tok->column, "number too long");
        return -EINVAL;
    }
    memcpy(buf, s + lx->pos, n);
    buf[n] = '\0';
    tok->text = s + lx->pos;
    tok->len = (uint32_t)n;
    if (!is_float) {
        errno = 0;
        char *end = NULL;
        unsigned long long u = strtoull(buf, &end, 10);
        if (errno == 0 && u <= (unsigned long long)INT64_MAX) {
            tok->kind = SQL_TOK_INTEGER;
            tok->i = (int64_t)u;
        } else {
            is_float = true;  /* too large for BIGINT: a DOUBLE literal */
        }
    }
    if (is_float) {
        tok->kind = SQL_TOK_FLOAT;
        tok->d = strtod(buf, NULL);
        if (!isfinite(tok->d)) {
            sql_error_set(ret_err, tok->line, tok->column, "number out of range '%s'", buf);
            return -EINVAL;
        }
    }
    advance(lx, n);

    /* A unit after an integer (blanks between): a duration. Look ahead
     * without consuming unless it is one. */
    if (tok->kind == SQL_TOK_INTEGER) {
        size_t q = lx->pos;
        while (q < lx->len && (s[q] == ' ' || s[q] == '\t' || s[q] == '\n' || s[q] == '\r'))
            q++;
        size_t w = q;
        while (w < lx->len && is_ident_char((unsigned char)s[w]))
            w++;
        int64_t ms = w > q ? unit_ms(s + q, w - q) : 0;
        if (ms) {
            if (tok->i > INT64_MAX / ms) {
                sql_error_set(ret_err, tok->line, tok->column, "duration out of range");
                return -EINVAL;
            }
            tok->kind = SQL_TOK_DURATION;
            tok->i *= ms;
            advance(lx, w - lx->pos);
            tok->len = (uint32_t)(lx->pos - (size_t)(tok->text - s));
        }
    }
    return 0;
}

/* Scans a quoted string or identifier (quote q, doubled to escape). */
static int scan_quoted(sql_lex *lx, sql_token *tok, char q, sql_error *ret_err)
{
    size_t start = lx->pos;
    size_t p = start + 1;
    for (;;) {
        if (p >= lx->len) {
            sql_error_set(ret_err, tok->line, tok->column, q == '\'' ? "unterminated string literal"
                                                                     : "unterminated quoted identifier");
            return -EINVAL;
        }
        if (lx->src[p] == '\0') {
            /* Names and strings are C strings from here on (and SPEC 2
             * refuses U+0000 anywhere): refuse rather than truncate. */
            sql_error_set(ret_err, tok->line, tok->column, q == '\'' ? "NUL byte in string literal"
                                                                     : "NUL byte in quoted identifier");
            return -EINVAL;
        }
        if (lx->src[p] == q) {
            if (p + 1 < lx->len && lx->src[p + 1] == q) {
                p += 2;
                continue;
            }
            p++;
            break;
        }
        p++;
    }
    if (p - start > UINT32_MAX) {
        sql_error_set(ret_err, tok->line, tok->column, "literal too long");
        return -EINVAL;
    }
    tok->kind = q == '\'' ? SQL_TOK_STRING : SQL_TOK_QIDENT;
    tok->text = lx->src + start;
    tok->len = (uint32_t)(p - start);
    if (tok->kind == SQL_TOK_QIDENT && tok->len == 2) {
        sql_error_set(ret_err, tok->line, tok->column, "empty quoted identifier");
        return -EINVAL;
    }
    advance(lx, p - start);
    return 0;
}

int sql_lex_next(sql_lex *lx, sql_token *ret_tok, sql_error *ret_err)
{
    int rc = skip_blank(lx, ret_err);
    if (rc < 0)
        return rc;
    sql_token tok;
    memset(&tok, 0, sizeof tok);
    tok.line = lx->line;
    tok.column = column_of(lx, lx->pos);
    tok.text = lx->src + lx->pos;
    if (lx->pos >= lx->len) {
        tok.kind = SQL_TOK_EOF;
        *ret_tok = tok;
        return 0;
    }
    const char *s = lx->src + lx->pos;
    unsigned char c = (unsigned char)s[0];
    char c1 = lx->pos + 1 < lx->len ? s[1] : '\0';
    if (is_ident_start(c)) {
        size_t p = lx->pos;
        while (p < lx->len && is_ident_char((unsigned char)lx->src[p]))
            p++;
        tok.kind = SQL_TOK_IDENT;
        tok.len = (uint32_t)(p - lx->pos);
        tok.kw = keyword_of(s, tok.len);
        advance(lx, tok.len);
    } else if (c >= '0' && c <= '9') {
        rc = scan_number(lx, &tok, ret_err);
        if (rc < 0)
            return rc;
    } else if (c == '\'' || c == '"') {
        rc = scan_quoted(lx, &tok, (char)c, ret_err);
        if (rc < 0)
            return rc;
    } else {
        size_t n = 1;
        switch (c) {
        case ',': tok.kind = SQL_TOK_COMMA; break;
        case '(': tok.kind = SQL_TOK_LPAREN; break;
        case ')': tok.kind = SQL_TOK_RPAREN; break;
        case ';': tok.kind = SQL_TOK_SEMI; break;
        case '.': tok.kind = SQL_TOK_DOT; break;
        case '*': tok.kind = SQL_TOK_STAR; break;
        case '+': tok.kind = SQL_TOK_PLUS; break;
        case '-': tok.kind = SQL_TOK_MINUS; break;
        case '/': tok.kind = SQL_TOK_SLASH; break;
        case '%': tok.kind = SQL_TOK_PERCENT; break;
        case '=': tok.kind = SQL_TOK_EQ; break;
        case '!':
            if (c1 != '=') {
                sql_error_set(ret_err, tok.line, tok.column, "unexpected character '!' (did you mean '!=')");
                return -EINVAL;
            }
            tok.kind = SQL_TOK_NE;
            n = 2;
            break;
        case '<':
            if (c1 == '=') {
                tok.kind = SQL_TOK_LE;
                n = 2;
            } else if (c1 == '>') {
                tok.kind = SQL_TOK_NE;
                n = 2;
            } else {
                tok.kind = SQL_TOK_LT;
            }
            break;
        case '>':
            if (c1 == '=') {
                tok.kind = SQL_TOK_GE;
                n = 2;
            } else {
                tok.kind = SQL_TOK_GT;
            }
            break;
        default:
            if (c >= 0x21 && c < 0x7f)
                sql_error_set(ret_err, tok.line, tok.column, "unexpected character '%c'", (int)c);
            else
                sql_error_set(ret_err, tok.line, tok.column, "unexpected byte 0x%c%c",
                              (int)"0123456789abcdef"[c >> 4], (int)"0123456789abcdef"[c & 15]);
            return -EINVAL;
        }
        tok.len = (uint32_t)n;
        advance(lx, n);
    }
    *ret_tok = tok;
    return 0;
}

size_t sql_token_unquote(const sql_token *tok, char *buf, size_t cap)
{
    if (cap == 0)
        return 0;
    size_t n = 0;
    if ((tok->kind == SQL_TOK_STRING || tok->kind == SQL_TOK_QIDENT) && tok->len >= 2) {
        char q = tok->text[0];
        for (size_t i = 1; i + 1 < tok->len && n + 1 < cap; i++) {
            buf[n++] = tok->text[i];
            if (tok->text[i] == q)
                i++;  /* the second of a doubled quote */
        }
    } else {
        n = tok->len < cap - 1 ? tok->len : cap - 1;
        memcpy(buf, tok->text, n);
    }
    buf[n] = '\0';
    return n;
}

int sql_duration_parse(const char *s, size_t n, int64_t *ret_ms)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < n && s[i] == ' ')
        i++;
    size_t digits = i;
    while (i < n && s[i] >= '0' && s[i] <= '9') {
        v = v * 10 + (uint64_t)(s[i] - '0');
        if (v > (uint64_t)INT64_MAX)
            return -ERANGE;
        i++;
    }
    if (i == digits)
        return -EINVAL;
    while (i < n && s[i] == ' ')
        i++;
    const char *u = s + i;
    size_t un = n - i;
    int64_t mul;
    if (sql_ieq(u, un, "ms"))
        mul = 1;
    else if (sql_ieq(u, un, "s"))
        mul = 1000;
    else if (sql_ieq(u, un, "m"))
        mul = 60000;
    else if (sql_ieq(u, un, "h"))
        mul = 3600000;
    else if (sql_ieq(u, un, "d"))
        mul = 86400000;
    else if (un == 0 && v == 0)
        mul = 1;
    else if ((mul = unit_ms(u, un)) == 0)
        return -EINVAL;
    if (v > (uint64_t)(INT64_MAX / mul))
        return -ERANGE;
    *ret_ms = (int64_t)v * mul;
    return 0;
}
