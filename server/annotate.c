#include "annotate.h"

#include <errno.h>
#include <stdlib.h>

#include "enrich.h"
#include "geoip.h"
#include "log.h"

/* User-Agents cached per HTTP thread: a busy site sees a few hundred
 * distinct ones; each entry is at most CF_UA_MAX_LEN bytes of key. */
#define UA_CACHE 4096

struct cf_annotate {
    bool on;
    cf_enricher *ua;    /* NULL: no rules, browser/os/device NULL */
    cf_geoip *geo;      /* NULL: country NULL */
};

cf_annotate *cf_annotate_new(const cf_config *cfg)
{
    cf_annotate *a = calloc(1, sizeof *a);
    if (!a)
        return NULL;
    a->on = cfg->enrich;
    if (!a->on)
        return a;
    char err[600];
    const char *rules = cfg->ua_regexes[0] ? cfg->ua_regexes : CF_ENRICHER_DEFAULT_REGEXES;
    int rc = cf_enricher_new(rules, NULL, UA_CACHE, &a->ua, err, sizeof err);
    if (rc == -ENOMEM) {
        free(a);
        return NULL;
    }
    if (rc < 0) {
        a->ua = NULL;
        cf_warn("enrichment: no User-Agent rules (%s): browser, os and device are null, is_bot false", err);
    }
    if (cfg->geoip[0]) {
        rc = cf_geoip_open(cfg->geoip, &a->geo, err, sizeof err);
        if (rc == -ENOMEM) {
            cf_annotate_free(a);
            return NULL;
        }
        if (rc < 0) {
            a->geo = NULL;
            cf_warn("enrichment: cannot open the GeoIP database (%s): country is null", err);
        }
    }
    return a;
}

void cf_annotate_free(cf_annotate *a)
{
    if (!a)
        return;
    cf_enricher_free(a->ua);
    cf_geoip_close(a->geo);
    free(a);
}

int cf_annotate_apply(const cf_annotate *a, cf_ingest *ig, const char *user_agent, const char *referer,
                      const struct sockaddr *peer)
{
    return cf_annotate_apply_relayed(a, ig, user_agent, referer, peer, NULL);
}

int cf_annotate_apply_relayed(const cf_annotate *a, cf_ingest *ig, const char *user_agent, const char *referer,
                              const struct sockaddr *peer, const cf_annotate_relayed *rel)
{
    if (!a || !a->on || ig->n_events == 0)
        return 0;
    cf_ingest_override *ov = NULL;
    char (*codes)[CF_GEOIP_CODE_MAX + 1] = NULL;
    if (rel) {
        ov = calloc(ig->n_events, sizeof *ov);
        codes = a->geo ? calloc(ig->n_events, sizeof *codes) : NULL;
        if (!ov || (a->geo && !codes)) {
            free(ov);
            free(codes);
            return -ENOMEM;
        }
        for (size_t i = 0; i < ig->n_events; i++) {
            for (int k = 0; k < CF_UTM_COUNT; k++)
                ov[i].utm[k] = rel[i].utm[k];
            /* The browser's address a back end relays: the peer is that
             * back end, whose country says nothing of the visitor, so an
             * address the database does not know is an unknown country. */
            if (codes && rel[i].client_ip && rel[i].client_ip[0]) {
                ov[i].country_set = true;
                ov[i].country = cf_geoip_country_text(a->geo, rel[i].client_ip, codes[i]) > 0 ? codes[i] : NULL;
            }
        }
    }
    char country[CF_GEOIP_CODE_MAX + 1];
    size_t clen = a->geo && peer ? cf_geoip_country(a->geo, peer, country) : 0;
    cf_ingest_context ctx = {
        .ua = a->ua,
        .user_agent = user_agent,
        .referer = referer,
        .country = clen ? country : NULL,
        .override = ov,
    };
    int rc = cf_ingest_enrich(ig, &ctx);
    free(ov);
    free(codes);
    return rc;
}
