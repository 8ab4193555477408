/* sites: the site keys of SPEC 15 (--site KEY=ORIGIN[,ORIGIN...]) and the
 * per-client-IP event rate that applies to them (--ip-rate).
 *
 * A site key is public (it is in every page's HTML) and write-only: it lets
 * an event in without the ingest token, never reads anything. A request
 * that carries an Origin header (a browser) must come from one of the site's
 * origins; server-side SDKs send none and are not checked. The rate limit
 * protects exactly this public door: events sent with the ingest token are
 * not limited (they come from the site owner's own back end).
 *
 * Thread-safe after cf_sites_new: lookups read an immutable table, the rate
 * limiter is behind a mutex (one short critical section per request). */
#ifndef CF_SITES_H
#define CF_SITES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cf_sites cf_sites;

/* Builds the table from config's normalised text ("KEY=o1,o2\n" lines,
 * already validated by config.c) and the events/s per IP. NULL on OOM. */
cf_sites *cf_sites_new(const char *text, unsigned ip_rate);

/* Accepts NULL. */
void cf_sites_free(cf_sites *s);

/* True when at least one site key is configured. */
bool cf_sites_any(const cf_sites *s);

/* The index of site key key[0..n), or -1. Constant time in the key's bytes
 * is not needed: site keys are public. */
int cf_sites_find(const cf_sites *s, const char *key, size_t n);

/* The site's key, NUL-terminated. */
const char *cf_sites_key(const cf_sites *s, int site);

/* How many site keys are configured (0 when s is NULL), and site i's
 * origins in the order given: GET /api/v1/sites lists them. */
size_t cf_sites_count(const cf_sites *s);
size_t cf_sites_n_origins(const cf_sites *s, int site);
const char *cf_sites_origin(const cf_sites *s, int site, size_t j);

/* Whether a request with this Origin header value (NULL: none, as from a
 * server-side SDK) may use the site. Origins compare case-insensitively;
 * "*" allows any. */
bool cf_sites_origin_ok(const cf_sites *s, int site, const char *origin);

/* Whether origin is an origin of any site: decides a CORS preflight, which
 * does not carry the key. */
bool cf_sites_origin_known(const cf_sites *s, const char *origin);

/* Takes n events from the client IP's budget. Returns 0 when allowed, else
 * the whole seconds (>= 1) to put in Retry-After. */
unsigned cf_sites_rate(cf_sites *s, const char *ip, size_t n);

#endif
