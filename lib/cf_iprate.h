/* cf_iprate: the per-client-IP event rate limit of SPEC 15 (`--ip-rate`,
 * events per second): a token bucket per IP in a table of fixed size.
 *
 * Each IP holds up to `rate` tokens (one second's worth, the burst) and gains
 * `rate` per second. A request of n events is allowed when its IP's bucket is
 * not in debt; it then takes n tokens, and may leave the bucket negative, so
 * one request larger than the burst still passes once and the next ones wait
 * for the debt to be paid back (no request is refused forever).
 *
 * Memory is bounded: the table holds at most `capacity` IPs. A new IP that
 * finds no free slot among the few it may use takes the one seen least
 * recently; a bucket idle for a second or more is full, so forgetting it
 * loses nothing. Only a flood from more than `capacity` IPs at once can make
 * an IP's debt be forgotten early.
 *
 * Pure (time passed in), not thread-safe: the caller serialises calls. */
#ifndef CF_IPRATE_H
#define CF_IPRATE_H

#include <stddef.h>
#include <stdint.h>

/* Longest key kept; longer keys (no textual IP is) are cut to this. */
#define CF_IPRATE_KEY_MAX 63

typedef struct cf_iprate cf_iprate;

/* rate: events per second per IP, > 0; capacity: IPs tracked (rounded up
 * to a power of two, at least 64). NULL on OOM or a bad argument. */
cf_iprate *cf_iprate_new(double rate, size_t capacity);

/* Accepts NULL. */
void cf_iprate_free(cf_iprate *rl);

/* Takes n tokens from ip's bucket at time now_ms (a monotonic clock; a time
 * before the last call counts as no time passed). Returns 0 when allowed,
 * or the milliseconds (>= 1) until a request from this IP would be allowed,
 * in which case nothing is taken. O(1). */
int64_t cf_iprate_take(cf_iprate *rl, const char *ip, size_t ip_len, size_t n, int64_t now_ms);

#endif
