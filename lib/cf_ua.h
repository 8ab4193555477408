/* cf_ua: User-Agent parsing with uap-core's regexes.yaml (SPEC 15).
 *
 * Two objects, so that threads can share the expensive part:
 * - cf_ua_rules: the regexes of regexes.yaml, compiled once with PCRE2 (JIT
 *   where available). Immutable after cf_ua_rules_new(): any number of
 *   threads may use one rules object at the same time (pcre2_match only reads
 *   a compiled pattern).
 * - cf_ua: a parser over shared rules with its own match data and a bounded
 *   cache keyed by the User-Agent string. NOT thread-safe: use one cf_ua per
 *   thread (e.g. one per shard or HTTP worker). Browsers send few distinct
 *   User-Agents, so the common case is one hash lookup; a miss tries the
 *   regexes in file order (about 1,200 of them; some 80 microseconds).
 *
 * The YAML text is passed in (the caller reads the file, usually
 * /usr/share/uap-core/regexes.yaml from Debian's uap-core package), so this
 * module does no I/O. Replacement rules follow uap-core's specification.md:
 * $1..$9 in a *_replacement are the regex's groups (an unmatched group is
 * empty), results are trimmed, empty means unknown (NULL); without a
 * replacement the n-th group is used; `regex_flag: 'i'` matches caselessly;
 * no matching regex gives family "Other". */
#ifndef CF_UA_H
#define CF_UA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* User-Agents longer than this are parsed (and cached) by their first
 * CF_UA_MAX_LEN bytes: real ones are a few hundred bytes, and the cost of a
 * miss grows with the length a client chooses. */
#define CF_UA_MAX_LEN 1024

typedef struct cf_ua_rules cf_ua_rules;    /* opaque, shareable read-only */
typedef struct cf_ua cf_ua;                /* opaque, one per thread */

/* The coarse device class derived from the parse (see cf_ua_parse). */
typedef enum cf_ua_device {
    CF_UA_DESKTOP = 0,
    CF_UA_MOBILE = 1,
    CF_UA_TABLET = 2,
    CF_UA_BOT = 3,
} cf_ua_device;

/* A parse result. Every string is NUL-terminated, borrowed from the cf_ua
 * that produced it and valid until the next cf_ua_parse() on that cf_ua (a
 * later parse may evict the cache entry it points into); copy what you keep.
 * The three families are never NULL ("Other" when unknown); the other
 * strings are NULL when unknown. */
typedef struct cf_ua_result {
    const char *browser;            /* uap-core user_agent family, "Chrome" */
    const char *browser_major;      /* "120" */
    const char *browser_minor;
    const char *browser_patch;
    const char *os;                 /* os family, "Windows", "Android", "iOS" */
    const char *os_major;
    const char *os_minor;
    const char *device_family;      /* "iPhone", "Samsung SM-G960F", "Spider", "Other" */
    const char *device_brand;
    const char *device_model;
    cf_ua_device device;
    bool is_bot;
} cf_ua_result;

/* Compiles the regexes of a regexes.yaml document yaml[0..len) (need not be
 * NUL-terminated). On success returns 0 and sets *ret (free with
 * cf_ua_rules_free). Returns -EINVAL when the text is not YAML or not
 * shaped like regexes.yaml, or a regex does not compile (*ret_error then
 * says what, statically), -ENOMEM on allocation failure; *ret is untouched
 * on failure. O(size of the file), dominated by regex compilation (about a
 * quarter of a second for uap-core's file). */
int cf_ua_rules_new(const char *yaml, size_t len, cf_ua_rules **ret, const char **ret_error);

/* Accepts NULL. Every cf_ua made from the rules must be freed first. */
void cf_ua_rules_free(cf_ua_rules *rules);

/* Number of compiled regexes per parser list (for logs and tests). */
void cf_ua_rules_counts(const cf_ua_rules *rules, size_t *ret_ua, size_t *ret_os, size_t *ret_device);

/* A parser over `rules` (borrowed: they must outlive the parser) with a cache
 * of at most `cache_capacity` User-Agents (0 means no cache: every parse runs
 * the regexes). Memory is bounded by cache_capacity entries of at most
 * CF_UA_MAX_LEN bytes of key plus their results. Returns NULL on OOM. */
cf_ua *cf_ua_new(const cf_ua_rules *rules, size_t cache_capacity);

/* Accepts NULL. */
void cf_ua_free(cf_ua *ua);

/* Parses the User-Agent s[0..len) (any bytes; invalid UTF-8 never matches
 * across the invalid sequence, so every result string is valid UTF-8). An
 * empty or NULL string gives families "Other" and device desktop.
 * Derived fields:
 * - is_bot: the user_agent or device family is "Spider" (uap-core's name for
 *   crawlers), or the browser is a headless one (HeadlessChrome, PhantomJS).
 * - device: bot if is_bot; tablet for iPads, Kindles, uap-core's "Generic
 *   Tablet", or an Android User-Agent without "Mobile" (Android tablets drop
 *   it, per Google's guidance); mobile for a "Mobi" anywhere (MDN's advice),
 *   a mobile OS (iOS, Android, Windows Phone, ...) or a phone-like device
 *   family; desktop otherwise.
 * Returns 0 and fills *ret, or -ENOMEM (the parse could not be stored; *ret
 * untouched). Amortised O(1) on a cache hit (one hash of the string). */
int cf_ua_parse(cf_ua *ua, const char *s, size_t len, cf_ua_result *ret);

/* "desktop", "mobile", "tablet" or "bot". */
const char *cf_ua_device_name(cf_ua_device d);

/* Cache counters since cf_ua_new: hits, misses, and entries held now
 * (<= the capacity). */
void cf_ua_cache_stats(const cf_ua *ua, uint64_t *ret_hits, uint64_t *ret_misses, size_t *ret_size);

#endif
