/* annotate: the enrichment of SPEC 15 as the HTTP layer applies it to an
 * ingest request, before the events go to the sequencer. It owns the
 * User-Agent rules (--ua-regexes) and the GeoIP database (--geoip), both
 * loaded once at start; either may be missing, which is a start-up warning
 * and NULL columns, never a failure. With --enrich off it does nothing.
 *
 * Thread-safe: any HTTP worker may call cf_annotate_apply at the same time
 * (per-thread User-Agent caches, read-only GeoIP lookups). */
#ifndef CF_ANNOTATE_H
#define CF_ANNOTATE_H

#include <sys/socket.h>

#include "config.h"
#include "ingest.h"

typedef struct cf_annotate cf_annotate;

/* Loads what cfg names and logs what is missing. NULL only on OOM. */
cf_annotate *cf_annotate_new(const cf_config *cfg);

/* Accepts NULL. After every other call. */
void cf_annotate_free(cf_annotate *a);

/* Enriches every valid event of ig (cf_ingest_enrich) with the request's
 * User-Agent and Referer headers (NULL when absent) and the country of
 * peer (may be NULL). Accepts a NULL a (nothing done). 0 or -ENOMEM. */
int cf_annotate_apply(const cf_annotate *a, cf_ingest *ig, const char *user_agent, const char *referer,
                      const struct sockaddr *peer);

/* What a relayed event (a compatible endpoint's, server/compat_http.c)
 * says of its sender: the browser's IP address as text and the campaign
 * tags. NULL fields: none. */
typedef struct cf_annotate_relayed {
    const char *client_ip;              /* its country (or none) replaces the peer's */
    const char *utm[CF_UTM_COUNT];      /* win over page_url's tags */
} cf_annotate_relayed;

/* cf_annotate_apply with per-event overrides: rel has ig->n_events entries
 * (or is NULL), in the order of ig->events. 0 or -ENOMEM. */
int cf_annotate_apply_relayed(const cf_annotate *a, cf_ingest *ig, const char *user_agent, const char *referer,
                              const struct sockaddr *peer, const cf_annotate_relayed *rel);

#endif
