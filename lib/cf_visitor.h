/* cf_visitor: the user_id the server derives for an event sent without one
 * (SPEC 15): a keyed hash of (site, client IP, User-Agent, a salt that
 * changes every UTC day). No cookie is needed, the id is stable for one
 * visitor during one UTC day, and without the salt it cannot be linked to
 * the IP or to the same visitor's id of another day.
 *
 * The salt of a day is itself derived from a server secret and the day
 * number (cf_visitor_salt), so every worker and every restart computes the
 * same salt without sharing state; the caller keeps the secret (random, at
 * least 16 bytes, e.g. in the data directory) and passes the time in. */
#ifndef CF_VISITOR_H
#define CF_VISITOR_H

#include <stddef.h>
#include <stdint.h>

#include "cf_siphash.h"

#define CF_VISITOR_SALT_LEN CF_SIPHASH_KEY_LEN
/* "v" and 16 lowercase hex digits (64 bits). */
#define CF_VISITOR_ID_LEN 17

/* The salt of the UTC day that contains now_ms (days since the epoch,
 * floor division, so times before 1970 work too): SipHash of the day number
 * under the secret, twice with different domain bytes to fill 16 bytes.
 * Writes CF_VISITOR_SALT_LEN bytes to ret_salt. */
void cf_visitor_salt(const uint8_t secret[CF_SIPHASH_KEY_LEN], int64_t now_ms,
                     uint8_t ret_salt[CF_VISITOR_SALT_LEN]);

/* The visitor id of (site, ip, user_agent) under salt, written with a
 * terminating NUL to ret_id (CF_VISITOR_ID_LEN + 1 bytes). Each part is
 * hashed with its length in front, so ("ab", "c") and ("a", "bc") differ;
 * a NULL part with length 0 is the empty string. Never fails. */
void cf_visitor_id(const uint8_t salt[CF_VISITOR_SALT_LEN], const char *site, size_t site_len,
                   const char *ip, size_t ip_len, const char *user_agent, size_t ua_len,
                   char ret_id[CF_VISITOR_ID_LEN + 1]);

#endif
