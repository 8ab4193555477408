/* cf_time: durations and RFC 3339 timestamps. All times are int64
 * milliseconds since the Unix epoch, UTC (SPEC section 1). Pure functions. */
#ifndef CF_TIME_H
#define CF_TIME_H

#include <stddef.h>
#include <stdint.h>

/* "No time yet" (e.g. the watermark before any event). Compare with it
 * before doing arithmetic: it is INT64_MIN. */
#define CF_TIME_NONE INT64_MIN

/* Parses a duration: a non-negative integer followed by a unit `ms`, `s`,
 * `m`, `h` or `d` ("1500ms", "5s", "30m", "2h", "90d"); a bare "0" is
 * accepted.
 * Returns 0 and sets *ret_ms, or -EINVAL (bad syntax or unit) / -ERANGE
 * (does not fit in int64 ms). *ret_ms is untouched on failure. */
int cf_duration_parse(const char *s, int64_t *ret_ms);

/* Parses an RFC 3339 date-time of n bytes (not necessarily NUL-terminated):
 * "2026-11-24T10:00:00Z", "2026-11-24T10:00:00.123+02:00", lower-case 't'
 * and 'z' allowed, a fraction of any length (truncated to ms), a numeric
 * offset or Z. Validates calendar ranges (month, day of that month incl. leap
 * years, hour <= 23, minute <= 59, second <= 60 where 60 is folded to 59.999).
 * Returns 0 and sets *ret_ms, or -EINVAL. */
int cf_rfc3339_parse(const char *s, size_t n, int64_t *ret_ms);

/* Formats ms as "YYYY-MM-DDTHH:MM:SS.mmmZ" into buf (cap >= 25 recommended).
 * Returns the length written (excluding NUL, always 24), -ENOSPC if cap is too
 * small (< 25), or -ERANGE if ms is outside 0000-01-01 .. 9999-12-31 (the
 * years a 4-digit RFC 3339 date can hold, e.g. CF_TIME_NONE). */
int cf_rfc3339_format(int64_t ms, char *buf, size_t cap);

/* floor(a / b) for b > 0, correct for negative a (window starts). */
static inline int64_t cf_floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

#endif
