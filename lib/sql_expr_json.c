/* sql_expr_json: JSON in expressions: reading a field of the event's
 * compact JSON text as a typed value, and a value as JSON text. */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sql_expr_int.h"

/* -- JSON reading (the event's compact text; robust to any bytes) -------------- */

static size_t json_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The end of the JSON value starting at i, or SIZE_MAX if malformed. */
static size_t json_skip(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return SIZE_MAX;
    if (s[i] == '"') {
        for (i++; i < n; i++) {
            if (s[i] == '\\')
                i++;
            else if (s[i] == '"')
                return i + 1;
        }
        return SIZE_MAX;
    }
    if (s[i] == '{' || s[i] == '[') {
        /* Iterative: nesting depth counted, strings stepped over. */
        size_t depth = 0;
        for (; i < n; i++) {
            char c = s[i];
            if (c == '"') {
                size_t e = json_skip(s, n, i);
                if (e == SIZE_MAX)
                    return SIZE_MAX;
                i = e - 1;
            } else if (c == '{' || c == '[') {
                depth++;
            } else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
        }
        return SIZE_MAX;
    }
    size_t st = i;
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
           s[i] != '\n' && s[i] != '\r')
        i++;
    return i > st ? i : SIZE_MAX;
}

/* Finds key in the object at [i, n): sets the value's span. */
bool sql_expr_json_field(const char *s, size_t n, const char *key, size_t klen, size_t *ret_b,
                         size_t *ret_e)
{
    size_t i = json_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return false;
    i = json_ws(s, n, i + 1);
    if (i < n && s[i] == '}')
        return false;
    for (;;) {
        if (i >= n || s[i] != '"')
            return false;
        size_t ke = json_skip(s, n, i);
        if (ke == SIZE_MAX)
            return false;
        /* Keys compare as raw bytes: an escaped key never matches a path
         * written in SQL (documented in SQL.md). */
        bool match = ke - i - 2 == klen && memcmp(s + i + 1, key, klen) == 0;
        i = json_ws(s, n, ke);
        if (i >= n || s[i] != ':')
            return false;
        i = json_ws(s, n, i + 1);
        size_t ve = json_skip(s, n, i);
        if (ve == SIZE_MAX)
            return false;
        if (match) {
            *ret_b = i;
            *ret_e = ve;
            return true;
        }
        i = json_ws(s, n, ve);
        if (i >= n || s[i] != ',')
            return false;
        i = json_ws(s, n, i + 1);
    }
}

static void put_utf8(char *out, size_t *o, uint32_t cp)
{
    if (cp < 0x80) {
        out[(*o)++] = (char)cp;
    } else if (cp < 0x800) {
        out[(*o)++] = (char)(0xC0 | (cp >> 6));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
        out[(*o)++] = (char)(0xE0 | (cp >> 12));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    } else {
        out[(*o)++] = (char)(0xF0 | (cp >> 18));
        out[(*o)++] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[(*o)++] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[(*o)++] = (char)(0x80 | (cp & 0x3F));
    }
}

static int hex4(const char *s, size_t n, size_t i, uint32_t *ret)
{
    if (i + 4 > n)
        return -1;
    uint32_t v = 0;
    for (size_t k = i; k < i + 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (uint32_t)(c - 'A' + 10);
        else
            return -1;
    }
    *ret = v;
    return 0;
}

/* A JSON value's text as a typed SQL value: strings (unescaped into the
 * scratch only when they hold escapes), numbers, booleans, null; objects
 * and arrays stay JSON. Malformed text is NULL. */
int sql_expr_json_natural(const char *s, size_t n, sql_scratch *scratch, sql_value *ret)
{
    size_t i = json_ws(s, n, 0);
    while (n > i && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\t' || s[n - 1] == '\r'))
        n--;
    *ret = sql_null();
    if (i >= n)
        return 0;
    s += i;
    n -= i;
    char c = s[0];
    if (c == '{' || c == '[') {
        ret->type = SQL_JSON;
        ret->u.s = s;
        ret->len = (uint32_t)n;
        return 0;
    }
    if (c == '"') {
        if (n < 2 || s[n - 1] != '"')
            return 0;
        if (!memchr(s + 1, '\\', n - 2)) {
            *ret = sql_string(s + 1, (uint32_t)(n - 2));
            return 0;
        }
        char *out = scratch_alloc(scratch, n);
        if (!out)
            return -ENOSPC;
        size_t o = 0;
        for (size_t k = 1; k + 1 < n; k++) {
            if (s[k] != '\\') {
                out[o++] = s[k];
                continue;
            }
            k++;
            if (k + 1 >= n)
                break;
            switch (s[k]) {
            case 'n': out[o++] = '\n'; break;
            case 't': out[o++] = '\t'; break;
            case 'r': out[o++] = '\r'; break;
            case 'b': out[o++] = '\b'; break;
            case 'f': out[o++] = '\f'; break;
            case 'u': {
                uint32_t cp;
                if (hex4(s, n - 1, k + 1, &cp) < 0)
                    return 0;
                k += 4;
                if (cp >= 0xD800 && cp < 0xDC00 && k + 6 < n && s[k + 1] == '\\' && s[k + 2] == 'u') {
                    uint32_t lo;
                    if (hex4(s, n - 1, k + 3, &lo) == 0 && lo >= 0xDC00 && lo < 0xE000) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        k += 6;
                    }
                }
                if (cp >= 0xD800 && cp < 0xE000)
                    cp = 0xFFFD;  /* a lone surrogate */
                /* 6 escape bytes always hold the <= 4 UTF-8 bytes. */
                put_utf8(out, &o, cp);
                break;
            }
            default: out[o++] = s[k]; break;
            }
        }
        *ret = sql_string(out, (uint32_t)o);
        return 0;
    }
    if (n == 4 && memcmp(s, "true", 4) == 0) {
        *ret = sql_bool(true);
    } else if (n == 5 && memcmp(s, "false", 5) == 0) {
        *ret = sql_bool(false);
    } else if ((c >= '0' && c <= '9') || c == '-') {
        char buf[64];
        if (n >= sizeof buf)
            return 0;
        memcpy(buf, s, n);
        buf[n] = '\0';
        char *end = NULL;
        bool integral = !memchr(s, '.', n) && !memchr(s, 'e', n) && !memchr(s, 'E', n);
        if (integral) {
            errno = 0;
            long long v = strtoll(buf, &end, 10);
            if (errno == 0 && *end == '\0') {
                *ret = sql_bigint((int64_t)v);
                return 0;
            }
        }
        double d = strtod(buf, &end);
        if (*end == '\0' && isfinite(d))
            *ret = sql_double(d);
    }
    return 0;
}

void sql_value_to_json(sql_value v, sql_sb *sb)
{
    char buf[40];
    int n;
    switch (v.type) {
    case SQL_NULL: sql_sb_puts(sb, "null"); break;
    case SQL_BOOLEAN: sql_sb_puts(sb, v.u.b ? "true" : "false"); break;
    case SQL_BIGINT:
    case SQL_TIMESTAMP:
        n = sql_format_int64(v.u.i, buf, sizeof buf);
        sql_sb_put(sb, buf, (size_t)n);
        break;
    case SQL_DOUBLE:
        n = sql_format_double(v.u.d, buf, sizeof buf);
        sql_sb_put(sb, buf, n > 0 ? (size_t)n : 0);
        break;
    case SQL_STRING: sql_sb_put_json_string(sb, v.u.s, v.len); break;
    default: sql_sb_put(sb, v.u.s, v.len); break;
    }
}
