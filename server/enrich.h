/* enrich: the server side of SPEC 15's enrichment, ready for the ingest path
 * to call. It owns what lib/ must not do: reading uap-core's regexes.yaml,
 * the visitor-id secret in the data directory, and one User-Agent parser per
 * thread.
 *
 * - User-Agents: the rules are compiled once (cf_ua_rules, shared read-only);
 *   each calling thread gets its own cf_ua with a bounded cache on first use
 *   (thread-local, so HTTP worker threads that libmicrohttpd starts need no
 *   set-up hook), freed when the thread exits or with the enricher.
 * - Visitor ids: `<data_dir>/visitor.key` holds 16 random bytes, created
 *   (mode 0600, written to a temporary file, fsynced, renamed) the first
 *   time; the salt of each UTC day derives from it (lib/cf_visitor.h), so
 *   ids stay the same across restarts within a day and change every day.
 *
 * Thread-safe after cf_enricher_new: any thread may call the functions below
 * at the same time. cf_enricher_free must run after every other call. */
#ifndef CF_ENRICH_SERVER_H
#define CF_ENRICH_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include "cf_ua.h"
#include "cf_visitor.h"

/* Where Debian's uap-core package keeps the rules. */
#define CF_ENRICHER_DEFAULT_REGEXES "/usr/share/uap-core/regexes.yaml"
#define CF_ENRICHER_KEY_FILE "visitor.key"

typedef struct cf_enricher cf_enricher;

/* Loads the rules from regexes_path (NULL: the default above) and the
 * visitor secret from data_dir (created when missing; data_dir must exist;
 * NULL: no secret, for an enricher that only parses User-Agents, on which
 * cf_enricher_visitor_id must not be called).
 * ua_cache is the number of User-Agents each thread's parser caches.
 * Returns 0 and sets *ret, or a negative errno (-ENOENT: no rules file,
 * -EINVAL: the rules or the key file are malformed, other I/O errors) with
 * a human-readable reason in err[0..errlen) (names the file). */
int cf_enricher_new(const char *regexes_path, const char *data_dir, size_t ua_cache, cf_enricher **ret,
                    char *err, size_t errlen);

/* Accepts NULL. Frees every thread's parser. */
void cf_enricher_free(cf_enricher *e);

/* Parses a User-Agent with the calling thread's parser (created on first
 * use). The result's strings are valid until this thread's next call.
 * Returns 0 or -ENOMEM. */
int cf_enricher_ua(cf_enricher *e, const char *ua, size_t len, cf_ua_result *ret);

/* The derived user_id of (site, ip, user_agent) on the UTC day of now_ms;
 * see cf_visitor_id. Never fails. */
void cf_enricher_visitor_id(const cf_enricher *e, int64_t now_ms, const char *site, size_t site_len,
                            const char *ip, size_t ip_len, const char *user_agent, size_t ua_len,
                            char ret_id[CF_VISITOR_ID_LEN + 1]);

#endif
