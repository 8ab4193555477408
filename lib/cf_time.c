/* cf_time: durations and RFC 3339 timestamps (SPEC section 1).
 *
 * Pure integer arithmetic: no locale, no libc time functions (timegm and
 * gmtime depend on the TZ database and are not needed for UTC), no stdio. */
#include "cf_time.h"

#include <errno.h>
#include <stdbool.h>

#define MS_PER_S INT64_C(1000)
#define MS_PER_M INT64_C(60000)
#define MS_PER_H INT64_C(3600000)
#define MS_PER_DAY INT64_C(86400000)

/* Range of cf_rfc3339_format: 0000-01-01T00:00:00.000Z .. 9999-12-31T23:59:59.999Z. */
#define FORMAT_MIN_MS INT64_C(-62167219200000)
#define FORMAT_MAX_MS INT64_C(253402300799999)

static bool is_digit(char c) { return c >= '0' && c <= '9'; }

int cf_duration_parse(const char *s, int64_t *ret_ms)
{
    if (!s || !ret_ms)
        return -EINVAL;

    /* Syntax first, so "99999999999999999999x" is -EINVAL, not -ERANGE. */
    size_t ndig = 0;
    while (is_digit(s[ndig]))
        ndig++;
    if (ndig == 0)
        return -EINVAL;

    const char *u = s + ndig;
    int64_t unit;
    if (u[0] == '\0') {
        /* A bare number is only accepted for zero ("0"), where no unit is
         * ambiguous; "00" or "5" are errors. */
        if (ndig != 1 || s[0] != '0')
            return -EINVAL;
        *ret_ms = 0;
        return 0;
    } else if (u[0] == 'm' && u[1] == 's' && u[2] == '\0') {
        unit = 1;
    } else if (u[0] == 's' && u[1] == '\0') {
        unit = MS_PER_S;
    } else if (u[0] == 'm' && u[1] == '\0') {
        unit = MS_PER_M;
    } else if (u[0] == 'h' && u[1] == '\0') {
        unit = MS_PER_H;
    } else if (u[0] == 'd' && u[1] == '\0') {
        unit = MS_PER_DAY;   /* retention periods (--history-retention 90d) */
    } else {
        return -EINVAL;
    }

    int64_t v = 0;
    for (size_t i = 0; i < ndig; i++) {
        int d = s[i] - '0';
        if (v > (INT64_MAX - d) / 10)
            return -ERANGE;
        v = v * 10 + d;
    }
    if (v > INT64_MAX / unit)
        return -ERANGE;
    *ret_ms = v * unit;
    return 0;
}

static bool is_leap(int64_t y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

static int days_in_month(int64_t y, int m)
{
    static const unsigned char dim[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return (m == 2 && is_leap(y)) ? 29 : dim[m - 1];
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
 * days_from_civil); exact for every year we accept. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

/* Reads exactly `width` digits at s[*pos]; advances *pos. */
static bool get_digits(const char *s, size_t n, size_t *pos, int width, int *ret)
{
    if (n - *pos < (size_t)width)
        return false;
    int v = 0;
    for (int i = 0; i < width; i++) {
        char c = s[*pos + (size_t)i];
        if (!is_digit(c))
            return false;
        v = v * 10 + (c - '0');
    }
    *pos += (size_t)width;
    *ret = v;
    return true;
}

static bool expect(const char *s, size_t n, size_t *pos, char c)
{
    if (*pos >= n || s[*pos] != c)
        return false;
    (*pos)++;
    return true;
}

/* Grammar (RFC 3339 section 5.6), strictly: no spaces, no missing fields.
 *   YYYY-MM-DD ("T"|"t") hh:mm:ss ["." 1*DIGIT] ("Z"|"z"|("+"|"-") hh:mm)
 * O(n). */
int cf_rfc3339_parse(const char *s, size_t n, int64_t *ret_ms)
{
    if (!s || !ret_ms)
        return -EINVAL;
    size_t p = 0;
    int year = 0, mon = 0, day = 0, hour = 0, min = 0, sec = 0;
    if (!get_digits(s, n, &p, 4, &year) || !expect(s, n, &p, '-') ||
        !get_digits(s, n, &p, 2, &mon) || !expect(s, n, &p, '-') ||
        !get_digits(s, n, &p, 2, &day))
        return -EINVAL;
    if (p >= n || (s[p] != 'T' && s[p] != 't'))
        return -EINVAL;
    p++;
    if (!get_digits(s, n, &p, 2, &hour) || !expect(s, n, &p, ':') ||
        !get_digits(s, n, &p, 2, &min) || !expect(s, n, &p, ':') ||
        !get_digits(s, n, &p, 2, &sec))
        return -EINVAL;

    int frac_ms = 0;
    if (p < n && s[p] == '.') {
        p++;
        size_t start = p;
        while (p < n && is_digit(s[p])) {
            /* Only the first three digits matter: truncation, not rounding,
             * so a timestamp never moves into the next millisecond. */
            if (p - start < 3)
                frac_ms = frac_ms * 10 + (s[p] - '0');
            p++;
        }
        size_t nd = p - start;
        if (nd == 0)
            return -EINVAL;
        for (size_t i = nd; i < 3; i++)
            frac_ms *= 10;
    }

    int64_t off_min = 0;
    if (p >= n)
        return -EINVAL;
    if (s[p] == 'Z' || s[p] == 'z') {
        p++;
    } else if (s[p] == '+' || s[p] == '-') {
        int sign = s[p] == '-' ? -1 : 1;
        int oh, om;
        p++;
        if (!get_digits(s, n, &p, 2, &oh) || !expect(s, n, &p, ':') ||
            !get_digits(s, n, &p, 2, &om))
            return -EINVAL;
        if (oh > 23 || om > 59)
            return -EINVAL;
        off_min = sign * (oh * 60 + om);
    } else {
        return -EINVAL;
    }
    if (p != n)
        return -EINVAL;

    if (mon < 1 || mon > 12 || day < 1 || day > days_in_month(year, mon) || hour > 23 ||
        min > 59 || sec > 60)
        return -EINVAL;
    if (sec == 60) {
        /* A leap second has no epoch-ms value of its own (POSIX time
         * ignores them); fold it to the last ms of the minute so order with
         * its neighbours is kept. */
        sec = 59;
        frac_ms = 999;
    }

    int64_t days = days_from_civil(year, mon, day);
    *ret_ms = days * MS_PER_DAY + hour * MS_PER_H + min * MS_PER_M + sec * MS_PER_S + frac_ms -
              off_min * MS_PER_M;
    return 0;
}

static char *put_num(char *p, int64_t v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

int cf_rfc3339_format(int64_t ms, char *buf, size_t cap)
{
    if (!buf || cap < 25)
        return -ENOSPC;
    if (ms < FORMAT_MIN_MS || ms > FORMAT_MAX_MS)
        return -ERANGE;
    int64_t days = cf_floor_div(ms, MS_PER_DAY);
    int64_t rem = ms - days * MS_PER_DAY;
    int64_t y;
    int m, d;
    civil_from_days(days, &y, &m, &d);

    char *p = buf;
    p = put_num(p, y, 4);
    *p++ = '-';
    p = put_num(p, m, 2);
    *p++ = '-';
    p = put_num(p, d, 2);
    *p++ = 'T';
    p = put_num(p, rem / MS_PER_H, 2);
    *p++ = ':';
    p = put_num(p, rem / MS_PER_M % 60, 2);
    *p++ = ':';
    p = put_num(p, rem / MS_PER_S % 60, 2);
    *p++ = '.';
    p = put_num(p, rem % MS_PER_S, 3);
    *p++ = 'Z';
    *p = '\0';
    return (int)(p - buf);
}
