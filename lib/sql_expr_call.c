/* sql_expr_call: the SQL functions (SQL_FUNCS: string, URL, number and
 * time functions) and LIKE. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cf_time.h"
#include "sql_expr_int.h"

/* -- LIKE ---------------------------------------------------------------------------- */

static size_t utf8_len(const char *s, size_t n, size_t i)
{
    unsigned char c = (unsigned char)s[i];
    size_t l = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
    return i + l <= n ? l : n - i;
}

/* % matches any run, _ one character (UTF-8). Greedy with one backtrack
 * point, O(len(s) * len(p)) at worst, no recursion. */
bool sql_expr_like_match(const char *s, size_t sn, const char *p, size_t pn)
{
    size_t si = 0, pi = 0, star_p = SIZE_MAX, star_s = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '%') {
            star_p = ++pi;
            star_s = si;
        } else if (pi < pn && p[pi] == '_') {
            si += utf8_len(s, sn, si);
            pi++;
        } else if (pi < pn && p[pi] == s[si]) {
            si++;
            pi++;
        } else if (star_p != SIZE_MAX) {
            star_s += utf8_len(s, sn, star_s);
            si = star_s;
            pi = star_p;
        } else {
            return false;
        }
    }
    while (pi < pn && p[pi] == '%')
        pi++;
    return pi == pn;
}

/* -- string and URL functions ------------------------------------------------------------------ */

static int url_split(const char *s, size_t n, size_t *ret_hb, size_t *ret_he, size_t *ret_pb,
                     size_t *ret_pe, size_t *ret_qb, size_t *ret_qe)
{
    size_t i = 0, hb = 0, he = 0;
    /* scheme "://" or a network-path "//" */
    size_t k = 0;
    while (k < n && ((s[k] >= 'a' && s[k] <= 'z') || (s[k] >= 'A' && s[k] <= 'Z') ||
                     (k > 0 && ((s[k] >= '0' && s[k] <= '9') || s[k] == '+' || s[k] == '-' ||
                                s[k] == '.'))))
        k++;
    int has_host = 0;
    if (k > 0 && k + 2 < n + 0 && s[k] == ':' && s[k + 1] == '/' && s[k + 2] == '/') {
        i = k + 3;
        has_host = 1;
    } else if (n >= 2 && s[0] == '/' && s[1] == '/') {
        i = 2;
        has_host = 1;
    }
    if (has_host) {
        size_t e = i;
        while (e < n && s[e] != '/' && s[e] != '?' && s[e] != '#')
            e++;
        hb = i;
        for (size_t a = i; a < e; a++)
            if (s[a] == '@')
                hb = a + 1;
        he = e;
        if (he > hb && s[hb] == '[') {
            size_t c = hb;
            while (c < he && s[c] != ']')
                c++;
            he = c < he ? c + 1 : he;
        } else {
            for (size_t c = hb; c < he; c++)
                if (s[c] == ':') {
                    he = c;
                    break;
                }
        }
        i = e;
    }
    size_t pb = i;
    while (i < n && s[i] != '?' && s[i] != '#')
        i++;
    size_t pe = i, qb = i, qe = i;
    if (i < n && s[i] == '?') {
        qb = i + 1;
        qe = qb;
        while (qe < n && s[qe] != '#')
            qe++;
    }
    *ret_hb = hb;
    *ret_he = he;
    *ret_pb = pb;
    *ret_pe = pe;
    *ret_qb = qb;
    *ret_qe = qe;
    return has_host;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Percent-decodes (and '+' as space) into out (room for n). */
static size_t url_decode(const char *s, size_t n, char *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int h, l;
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%' && i + 2 < n + 0 && (h = hexval(s[i + 1])) >= 0 &&
                   (l = hexval(s[i + 2])) >= 0) {
            out[o++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    return o;
}

static size_t utf8_count(const char *s, size_t n)
{
    size_t c = 0;
    for (size_t i = 0; i < n; i++)
        c += ((unsigned char)s[i] & 0xC0) != 0x80;
    return c;
}

/* Byte offset of the k-th character (0-based), or n. */
static size_t utf8_offset(const char *s, size_t n, int64_t k)
{
    size_t i = 0;
    while (i < n && k > 0) {
        i += utf8_len(s, n, i);
        k--;
    }
    return i;
}

static double round_half_away(double x)
{
    return x < 0 ? -floor(-x + 0.5) : floor(x + 0.5);
}

int sql_expr_call(sql_func f, sql_value *args, uint32_t n, sql_scratch *scratch, sql_value *ret)
{
    int rc;
    *ret = sql_null();
    for (uint32_t i = 0; i < n; i++)
        if ((rc = sql_expr_natural(args[i], scratch, &args[i])) < 0)
            return rc;
    if (f == SQL_FN_COALESCE) {
        for (uint32_t i = 0; i < n; i++)
            if (args[i].type != SQL_NULL) {
                *ret = args[i];
                return 0;
            }
        return 0;
    }
    if (f == SQL_FN_CONCAT) {
        size_t total = 0;
        const char *parts[SQL_FUNC_MAX_ARGS];
        size_t lens[SQL_FUNC_MAX_ARGS];
        for (uint32_t i = 0; i < n; i++) {
            if ((rc = sql_expr_to_text(args[i], scratch, &parts[i], &lens[i])) < 0)
                return rc;
            total += lens[i];
        }
        if (total > UINT32_MAX)
            return 0;
        char *o = scratch_alloc(scratch, total);
        if (!o && total)
            return -ENOSPC;
        size_t at = 0;
        for (uint32_t i = 0; i < n; i++) {
            if (lens[i])
                memcpy(o + at, parts[i], lens[i]);
            at += lens[i];
        }
        *ret = sql_string(o ? o : "", (uint32_t)total);
        return 0;
    }
    for (uint32_t i = 0; i < n; i++)
        if (args[i].type == SQL_NULL)
            return 0;
    sql_value a = args[0];
    switch (f) {
    case SQL_FN_LOWER:
    case SQL_FN_UPPER: {
        if (a.type != SQL_STRING)
            return 0;
        char *o = scratch_alloc(scratch, a.len);
        if (!o && a.len)
            return -ENOSPC;
        /* ASCII letters only: multi-byte characters are left as they are. */
        for (uint32_t i = 0; i < a.len; i++) {
            char c = a.u.s[i];
            if (f == SQL_FN_LOWER && c >= 'A' && c <= 'Z')
                c = (char)(c + 32);
            else if (f == SQL_FN_UPPER && c >= 'a' && c <= 'z')
                c = (char)(c - 32);
            o[i] = c;
        }
        *ret = sql_string(o ? o : "", a.len);
        return 0;
    }
    case SQL_FN_LENGTH:
        if (a.type == SQL_STRING)
            *ret = sql_bigint((int64_t)utf8_count(a.u.s, a.len));
        return 0;
    case SQL_FN_SUBSTRING: {
        /* SUBSTRING(s, start [, len]): 1-based characters; a start before 1
         * eats into len like standard SQL. */
        if (a.type != SQL_STRING || !is_int(args[1]) || (n == 3 && !is_int(args[2])))
            return 0;
        int64_t start = args[1].u.i, len = n == 3 ? args[2].u.i : INT64_MAX;
        if (len < 0)
            return 0;
        int64_t end = start > 0 && len > INT64_MAX - start ? INT64_MAX
                      : start <= 0 && len == INT64_MAX ? INT64_MAX : start + len;
        if (start < 1)
            start = 1;
        if (end <= start) {
            *ret = sql_string("", 0);
            return 0;
        }
        size_t b = utf8_offset(a.u.s, a.len, start - 1);
        size_t e = end == INT64_MAX ? a.len : b + utf8_offset(a.u.s + b, a.len - b, end - start);
        *ret = sql_string(a.u.s + b, (uint32_t)(e - b));
        return 0;
    }
    case SQL_FN_ABS:
        if (is_int(a))
            *ret = a.u.i == INT64_MIN ? sql_double(-(double)INT64_MIN) : sql_bigint(a.u.i < 0 ? -a.u.i : a.u.i);
        else if (a.type == SQL_DOUBLE)
            *ret = sql_double(fabs(a.u.d));
        return 0;
    case SQL_FN_FLOOR:
    case SQL_FN_CEIL:
        if (is_int(a))
            *ret = sql_bigint(a.u.i);
        else if (a.type == SQL_DOUBLE)
            *ret = sql_double(f == SQL_FN_FLOOR ? floor(a.u.d) : ceil(a.u.d));
        return 0;
    case SQL_FN_ROUND:
        if (n == 2) {
            if (!is_num(a) || !is_int(args[1]))
                return 0;
            double x = is_int(a) ? (double)a.u.i : a.u.d;
            int64_t digits = args[1].u.i;
            if (digits > 15 || digits < -15) {
                *ret = sql_double(digits > 0 ? x : 0);
                return 0;
            }
            double m = pow(10.0, (double)digits);
            /* x * m overflows only where x has no digits to round there */
            *ret = sql_double(isfinite(x * m) ? round_half_away(x * m) / m : x);
        } else if (is_int(a)) {
            *ret = sql_bigint(a.u.i);
        } else if (a.type == SQL_DOUBLE) {
            *ret = sql_double(round_half_away(a.u.d));
        }
        return 0;
    case SQL_FN_URL_HOST:
    case SQL_FN_URL_PATH:
    case SQL_FN_URL_PARAM: {
        if (a.type != SQL_STRING)
            return 0;
        size_t hb, he, pb, pe, qb, qe;
        int has_host = url_split(a.u.s, a.len, &hb, &he, &pb, &pe, &qb, &qe);
        if (f == SQL_FN_URL_HOST) {
            if (has_host)
                *ret = sql_string(a.u.s + hb, (uint32_t)(he - hb));
            return 0;
        }
        if (f == SQL_FN_URL_PATH) {
            *ret = pe > pb ? sql_string(a.u.s + pb, (uint32_t)(pe - pb)) : sql_string("/", 1);
            return 0;
        }
        if (args[1].type != SQL_STRING)
            return 0;
        const char *q = a.u.s;
        for (size_t i = qb; i < qe;) {
            size_t e = i;
            while (e < qe && q[e] != '&')
                e++;
            size_t eq = i;
            while (eq < e && q[eq] != '=')
                eq++;
            if (eq - i == args[1].len && memcmp(q + i, args[1].u.s, eq - i) == 0) {
                size_t vb = eq < e ? eq + 1 : e;
                char *o = scratch_alloc(scratch, e - vb);
                if (!o && e > vb)
                    return -ENOSPC;
                size_t on = e > vb ? url_decode(q + vb, e - vb, o) : 0;
                scratch->used -= (e - vb) - on;
                *ret = sql_string(o ? o : "", (uint32_t)on);
                return 0;
            }
            i = e + 1;
        }
        return 0;
    }
    default:
        return 0;
    }
}
