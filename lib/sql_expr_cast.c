/* sql_expr_cast: conversions between value types (CAST, and the text of a
 * value for CONCAT and the string functions). */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "sql_expr_int.h"

/* -- conversions ------------------------------------------------------------------------- */

/* v as text (CAST(v AS STRING), CONCAT): borrowed or in the scratch. */
int sql_expr_to_text(sql_value v, sql_scratch *scratch, const char **ret_s, size_t *ret_n)
{
    char buf[40];
    int n;
    switch (v.type) {
    case SQL_STRING:
    case SQL_ARRAY:
    case SQL_JSON:
        *ret_s = v.u.s;
        *ret_n = v.len;
        return 0;
    case SQL_BOOLEAN:
        *ret_s = v.u.b ? "true" : "false";
        *ret_n = v.u.b ? 4 : 5;
        return 0;
    case SQL_BIGINT: n = sql_format_int64(v.u.i, buf, sizeof buf); break;
    case SQL_DOUBLE: n = sql_format_double(v.u.d, buf, sizeof buf); break;
    case SQL_TIMESTAMP:
        n = cf_rfc3339_format(v.u.i, buf, sizeof buf);
        if (n < 0)
            n = sql_format_int64(v.u.i, buf, sizeof buf);
        break;
    default:
        *ret_s = "";
        *ret_n = 0;
        return 0;
    }
    if (n < 0)
        n = 0;
    char *o = scratch_alloc(scratch, (size_t)n);
    if (!o && n)
        return -ENOSPC;
    if (n)
        memcpy(o, buf, (size_t)n);
    *ret_s = o ? o : "";
    *ret_n = (size_t)n;
    return 0;
}

/* s[0..n) without its surrounding spaces, NUL-terminated into buf (CAST
 * reads numbers as strtoll/strtod do, which need the terminator). Its
 * length, or 0 when empty or too long for cap. */
static size_t trimmed_copy(const char *s, size_t n, char *buf, size_t cap)
{
    while (n && (*s == ' '))
        s++, n--;
    while (n && s[n - 1] == ' ')
        n--;
    if (n == 0 || n >= cap)
        return 0;
    memcpy(buf, s, n);
    buf[n] = '\0';
    return n;
}

static bool parse_int(const char *s, size_t n, int64_t *ret)
{
    char buf[32];
    if (!trimmed_copy(s, n, buf, sizeof buf))
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(buf, &end, 10);
    if (errno || *end)
        return false;
    *ret = (int64_t)v;
    return true;
}

static bool parse_double(const char *s, size_t n, double *ret)
{
    char buf[64];
    n = trimmed_copy(s, n, buf, sizeof buf);
    if (!n)
        return false;
    /* strtod also reads "inf", "nan" and hex: plain decimal only. */
    for (size_t i = 0; i < n; i++)
        if (!((buf[i] >= '0' && buf[i] <= '9') || buf[i] == '.' || buf[i] == 'e' ||
              buf[i] == 'E' || buf[i] == '+' || buf[i] == '-'))
            return false;
    char *end = NULL;
    double d = strtod(buf, &end);
    if (*end || !isfinite(d))
        return false;
    *ret = d;
    return true;
}

static bool double_to_int(double d, int64_t *ret)
{
    if (!(d >= -9223372036854775808.0 && d < 9223372036854775808.0))
        return false;
    *ret = (int64_t)d;
    return true;
}

static void json_escape_into(const char *s, size_t n, char *out, size_t *o)
{
    static const char hex[] = "0123456789abcdef";
    out[(*o)++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[(*o)++] = '\\';
            out[(*o)++] = (char)c;
        } else if (c < 0x20) {
            memcpy(out + *o, "\\u00", 4);
            *o += 4;
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        } else {
            out[(*o)++] = (char)c;
        }
    }
    out[(*o)++] = '"';
}

int sql_expr_cast(sql_value v, sql_type to, sql_scratch *scratch, sql_value *ret)
{
    int rc = sql_expr_natural(v, scratch, &v);
    if (rc < 0)
        return rc;
    *ret = sql_null();
    if (v.type == SQL_NULL)
        return 0;
    const char *s;
    size_t n;
    int64_t i;
    double d;
    switch (to) {
    case SQL_STRING:
        if ((rc = sql_expr_to_text(v, scratch, &s, &n)) < 0)
            return rc;
        *ret = sql_string(s, (uint32_t)n);
        return 0;
    case SQL_BIGINT:
    case SQL_TIMESTAMP:
        if (is_int(v)) {
            i = v.u.i;
        } else if (v.type == SQL_DOUBLE) {
            if (!double_to_int(v.u.d, &i))
                return 0;
        } else if (v.type == SQL_BOOLEAN) {
            i = v.u.b;
        } else if (v.type == SQL_STRING) {
            if (!parse_int(v.u.s, v.len, &i)) {
                if (to != SQL_TIMESTAMP || cf_rfc3339_parse(v.u.s, v.len, &i) < 0)
                    return 0;
            }
        } else {
            return 0;
        }
        *ret = to == SQL_BIGINT ? sql_bigint(i) : sql_timestamp(i);
        return 0;
    case SQL_DOUBLE:
        if (is_int(v))
            d = (double)v.u.i;
        else if (v.type == SQL_DOUBLE)
            d = v.u.d;
        else if (v.type == SQL_BOOLEAN)
            d = v.u.b;
        else if (v.type != SQL_STRING || !parse_double(v.u.s, v.len, &d))
            return 0;
        *ret = sql_double(d);
        return 0;
    case SQL_BOOLEAN:
        if (v.type == SQL_BOOLEAN)
            *ret = v;
        else if (is_int(v))
            *ret = sql_bool(v.u.i != 0);
        else if (v.type == SQL_DOUBLE)
            *ret = sql_bool(v.u.d != 0);
        else if (v.type == SQL_STRING && sql_ieq(v.u.s, v.len, "true"))
            *ret = sql_bool(true);
        else if (v.type == SQL_STRING && sql_ieq(v.u.s, v.len, "false"))
            *ret = sql_bool(false);
        return 0;
    case SQL_ARRAY:
        if ((v.type == SQL_ARRAY || v.type == SQL_JSON) && v.len && v.u.s[0] == '[') {
            *ret = v;
            ret->type = SQL_ARRAY;
        }
        return 0;
    case SQL_JSON: {
        if (v.type == SQL_JSON || v.type == SQL_ARRAY) {
            *ret = v;
            ret->type = SQL_JSON;
            return 0;
        }
        if (v.type == SQL_TIMESTAMP)
            v = sql_bigint(v.u.i);
        if (v.type != SQL_STRING) {
            if ((rc = sql_expr_to_text(v, scratch, &s, &n)) < 0)
                return rc;
            ret->type = SQL_JSON;
            ret->u.s = s;
            ret->len = (uint32_t)n;
            return 0;
        }
        if (v.len > (UINT32_MAX - 2) / 6)
            return 0;
        char *o = scratch_alloc(scratch, (size_t)v.len * 6 + 2);
        if (!o)
            return -ENOSPC;
        size_t on = 0;
        json_escape_into(v.u.s, v.len, o, &on);
        /* Give back what the escaping did not use. */
        scratch->used -= (size_t)v.len * 6 + 2 - on;
        ret->type = SQL_JSON;
        ret->u.s = o;
        ret->len = (uint32_t)on;
        return 0;
    }
    default:
        return 0;
    }
}
