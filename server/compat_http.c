#include "compat_http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include "builtin_panels.h"
#include "cf_jsonnum.h"
#include "clock.h"
#include "enrich.h"
#include "ingest.h"
#include "log.h"
#include "sites.h"
#include "stream_ingest.h"

/* User-Agents each thread's parser caches (the enricher is loaded for the
 * visitor-id secret; its parser serves the enrichment step). */
#define UA_CACHE 4096

struct cf_compat_http {
    cf_config cfg;
    cf_engine *engine;
    const cf_annotate *annotate;
    cf_sites *sites;
    /* Loaded on first need: the data directory exists only once the engine
     * has started, after the HTTP server. */
    pthread_mutex_t enricher_mu;
    cf_enricher *enricher;
    char enricher_err[256];
    bool enricher_tried;
};

cf_compat_http *cf_compat_http_new(const cf_config *cfg, cf_engine *engine, const cf_annotate *annotate)
{
    cf_compat_http *ch = calloc(1, sizeof *ch);
    if (!ch)
        return NULL;
    ch->cfg = *cfg;
    ch->engine = engine;
    ch->annotate = annotate;
    pthread_mutex_init(&ch->enricher_mu, NULL);
    ch->sites = cf_sites_new(cfg->sites, cfg->ip_rate);
    if (!ch->sites) {
        cf_compat_http_free(ch);
        return NULL;
    }
    return ch;
}

void cf_compat_http_free(cf_compat_http *ch)
{
    if (!ch)
        return;
    cf_sites_free(ch->sites);
    cf_enricher_free(ch->enricher);
    pthread_mutex_destroy(&ch->enricher_mu);
    free(ch);
}

bool cf_compat_http_origin_known(const cf_compat_http *ch, const char *origin)
{
    return cf_sites_origin_known(ch->sites, origin);
}

static cf_enricher *get_enricher(cf_compat_http *ch)
{
    pthread_mutex_lock(&ch->enricher_mu);
    if (!ch->enricher && !ch->enricher_tried) {
        ch->enricher_tried = true;
        if (!ch->cfg.data_dir[0]) {
            snprintf(ch->enricher_err, sizeof ch->enricher_err,
                     "visitor ids need the secret in --data-dir, and durability is off");
        } else if (cf_enricher_new(NULL, ch->cfg.data_dir, UA_CACHE, &ch->enricher, ch->enricher_err,
                                   sizeof ch->enricher_err) < 0) {
            ch->enricher = NULL;
        }
        if (!ch->enricher)
            cf_error("compatible ingest: cannot derive visitor ids: %s", ch->enricher_err);
    }
    cf_enricher *e = ch->enricher;
    pthread_mutex_unlock(&ch->enricher_mu);
    return e;
}

static const char *header(struct MHD_Connection *c, const char *name)
{
    return MHD_lookup_connection_value(c, MHD_HEADER_KIND, name);
}

/* The peer's address as text ("" if unknown). */
static void client_ip(struct MHD_Connection *c, char out[INET6_ADDRSTRLEN])
{
    out[0] = '\0';
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!ci || !ci->client_addr)
        return;
    const struct sockaddr *sa = ci->client_addr;
    if (sa->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, out, INET6_ADDRSTRLEN);
    else if (sa->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, out, INET6_ADDRSTRLEN);
}

/* ---- replies -------------------------------------------------------------- */

static int reply_text(cf_compat_reply *r, unsigned status, const char *ctype, const char *text)
{
    r->status = status;
    r->ctype = ctype;
    r->len = strlen(text);
    r->body = strdup(text);
    return r->body ? 0 : -ENOMEM;
}

/* {"error": msg} (Segment: plus "success": false, its failure shape). The
 * message may quote client input: cJSON escapes it. */
static int reply_error(cf_compat_reply *r, cf_compat_api api, unsigned status, const char *msg)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || (api == CF_COMPAT_API_SEGMENT && !cJSON_AddBoolToObject(o, "success", 0)) ||
        !cJSON_AddStringToObject(o, "error", msg)) {
        cJSON_Delete(o);
        return -ENOMEM;
    }
    char *text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!text)
        return -ENOMEM;
    r->status = status;
    r->ctype = "application/json";
    r->body = text;
    r->len = strlen(text);
    return 0;
}

/* What the real API answers on success: Segment 200 {"success": true},
 * Plausible 202 "ok", Umami 200 with a JSON object. */
static int reply_ok(cf_compat_reply *r, cf_compat_api api)
{
    switch (api) {
    case CF_COMPAT_API_PLAUSIBLE:
        return reply_text(r, 202, "text/plain; charset=utf-8", "ok");
    case CF_COMPAT_API_UMAMI:
        return reply_text(r, 200, "application/json", "{\"ok\":true}");
    case CF_COMPAT_API_SEGMENT:
        break;
    }
    return reply_text(r, 200, "application/json", "{\"success\":true}");
}

/* ---- who may send --------------------------------------------------------- */

typedef enum sender { SENDER_REFUSED = 0, SENDER_TRUSTED, SENDER_SITE, SENDER_OPEN } sender;

static bool token_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char diff = (unsigned char)(an != bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

/* Decides from the key (Basic user name, else the body's key field, or an
 * `Authorization: Bearer <ingest token>`). Writes the status and message of a
 * refusal. *ret_site is the site index for SENDER_SITE. */
static sender authorize(cf_compat_http *ch, struct MHD_Connection *c, const char *body_key, int *ret_site,
                        unsigned *ret_status, const char **ret_msg)
{
    const char *token = ch->cfg.ingest_token;
    const char *auth = header(c, MHD_HTTP_HEADER_AUTHORIZATION);
    char basic[CF_SITE_KEY_MAX + 2];
    const char *key = body_key;
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *t = auth + 7;
        while (*t == ' ')
            t++;
        if (token[0] && token_equal(t, strlen(t), token, strlen(token)))
            return SENDER_TRUSTED;
    } else if (auth && cf_compat_basic_user(auth, basic, sizeof basic) > 0) {
        key = basic;
    }
    if (key) {
        if (token[0] && token_equal(key, strlen(key), token, strlen(token)))
            return SENDER_TRUSTED;
        int s = cf_sites_find(ch->sites, key, strlen(key));
        if (s >= 0) {
            *ret_site = s;
            return SENDER_SITE;
        }
    }
    /* An open server (no token, no site) takes any key or none, as it takes
     * any POST /api/v1/events. */
    if (!token[0] && !cf_sites_any(ch->sites))
        return SENDER_OPEN;
    *ret_status = 401;
    *ret_msg = key ? "unknown write key" : "missing write key (HTTP Basic user name or the body's key field)";
    return SENDER_REFUSED;
}

/* ---- events --------------------------------------------------------------- */

static const char *obj_str(const cJSON *o, const char *k)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* Fills user_id where the API gave none (SPEC 15: a hash of site, client IP,
 * User-Agent and the day's salt) and names the site. The IP is Segment's
 * context.ip when given (a server SDK relaying a browser's), else the peer;
 * the User-Agent the event's, else the header. Returns 0, or -EAGAIN when
 * ids cannot be derived (no secret). */
static int fill_users(cf_compat_http *ch, cJSON *rows, const char *site, const char *peer, const char *header_ua,
                      int64_t now_ms)
{
    for (cJSON *e = rows ? rows->child : NULL; e; e = e->next) {
        if (site && !cJSON_GetObjectItemCaseSensitive(e, "site") && !cJSON_AddStringToObject(e, "site", site))
            return -ENOMEM;
        if (cJSON_GetObjectItemCaseSensitive(e, "user_id"))
            continue;
        cf_enricher *en = get_enricher(ch);
        if (!en)
            return -EAGAIN;
        const char *ip = obj_str(e, "client_ip");
        const char *ua = obj_str(e, "user_agent");
        if (!ip)
            ip = peer;
        if (!ua)
            ua = header_ua ? header_ua : "";
        const char *s = site ? site : "";
        char id[CF_VISITOR_ID_LEN + 1];
        cf_enricher_visitor_id(en, now_ms, s, strlen(s), ip, strlen(ip), ua, strlen(ua), id);
        if (!cJSON_AddStringToObject(e, "user_id", id))
            return -ENOMEM;
    }
    return 0;
}

/* Enriches the valid events of ig, which are the rows of `events` in order
 * (submit refuses a request with an invalid one), as POST /api/v1/events
 * does, plus what a relayed row says of its browser: `client_ip`
 * (Segment's context.ip) for the country and the utm_* fields (Segment's
 * context.campaign). 0 or -ENOMEM. */
static int enrich(cf_compat_http *ch, struct MHD_Connection *c, cf_ingest *ig, const cJSON *events)
{
    if (!ch->annotate || ig->n_events == 0)
        return 0;
    cf_annotate_relayed *rel = calloc(ig->n_events, sizeof *rel);
    if (!rel)
        return -ENOMEM;
    size_t i = 0;
    for (const cJSON *e = events->child; e && i < ig->n_events; e = e->next, i++) {
        rel[i].client_ip = obj_str(e, "client_ip");
        for (int k = 0; k < CF_UTM_COUNT; k++)
            rel[i].utm[k] = obj_str(e, cf_enrich_utm_name(k));
    }
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    int rc = cf_annotate_apply_relayed(ch->annotate, ig, header(c, MHD_HTTP_HEADER_USER_AGENT),
                                       header(c, MHD_HTTP_HEADER_REFERER), ci ? ci->client_addr : NULL, rel);
    free(rel);
    return rc;
}

/* Validates the mapped events as POST /api/v1/events would, enriches and
 * submits them. All or nothing: one invalid event refuses the request
 * (400), so a client never has to guess which of its events counted. */
static int submit(cf_compat_http *ch, struct MHD_Connection *c, cf_compat_api api, cJSON *events, int64_t now_ms,
                  cf_compat_reply *r)
{
    if (cJSON_GetArraySize(events) == 0)
        return reply_ok(r, api);
    /* Numbers exact (cf_jsonnum.h): properties pass through this text. A
     * number no double holds (1e400, read as an infinity) would print as
     * null and so change what the sender wrote: refused, as natively. */
    cf_buf tb = {0};
    int pr = cf_json_print_exact_to(events, &tb);
    cf_buf_put_u8(&tb, 0);
    if (pr == -ERANGE) {
        cf_buf_free(&tb);
        return reply_error(r, api, 400, "properties must not hold a number beyond the range of a double (such as 1e400)");
    }
    if (pr < 0 || tb.oom) {
        cf_buf_free(&tb);
        return -ENOMEM;
    }
    char *text = (char *)tb.data;
    cf_ingest ig;
    memset(&ig, 0, sizeof ig);
    cf_event_limits lim = {.max_future_ms = ch->cfg.max_future_ms};
    const char *why = NULL;
    int rc = cf_ingest_parse(&ig, CF_BODY_JSON, text, strlen(text), ch->cfg.max_batch, &lim, now_ms, &why);
    if (rc == -E2BIG) {
        rc = reply_error(r, api, 413, why);
    } else if (rc < 0) {
        rc = reply_error(r, api, rc == -ENOMEM ? 503 : 400, why ? why : "invalid body");
        r->retry_after = r->status == 503 ? 1 : 0;
    } else if (ig.rejected > 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "event %zu: %s", ig.errors[0].index, ig.errors[0].reason);
        cf_engine_count_rejected(ch->engine, ig.rejected);
        rc = reply_error(r, api, 400, msg);
    } else if (enrich(ch, c, &ig, events) < 0) {
        rc = reply_error(r, api, 503, "out of memory");
        r->retry_after = 1;
    } else {
        cf_submit_result res = {0, 0};
        int s = cf_engine_ready(ch->engine) ? cf_engine_submit(ch->engine, ig.events, ig.n_events, NULL, &res)
                                            : -EINPROGRESS;
        if (s < 0) {
            /* 503 + Retry-After: the SDKs retry, and dedup by messageId
             * makes the retry exact. */
            const char *msg = s == -EINPROGRESS ? "not ready: recovery in progress, retry later"
                              : s == -EAGAIN    ? "server busy: ingest queues are full, retry later"
                              : s == -ESHUTDOWN ? "server is shutting down"
                                                : "events not accepted";
            rc = reply_error(r, api, 503, msg);
            r->retry_after = 1;
        } else {
            rc = reply_ok(r, api);
        }
    }
    cf_ingest_free(&ig);
    cf_buf_free(&tb);
    return rc;
}

bool cf_compat_http_sites_any(const cf_compat_http *ch) { return cf_sites_any(ch->sites); }

cJSON *cf_compat_http_sites_json(const cf_compat_http *ch)
{
    cJSON *o = cJSON_CreateObject();
    cJSON *items = o ? cJSON_AddArrayToObject(o, "items") : NULL;
    if (!items)
        goto oom;
    for (size_t i = 0; i < cf_sites_count(ch->sites); i++) {
        cJSON *it = cJSON_CreateObject();
        if (!cJSON_AddItemToArray(items, it)) {
            cJSON_Delete(it);
            goto oom;
        }
        cJSON *origins = cJSON_AddArrayToObject(it, "origins");
        if (!cJSON_AddStringToObject(it, "key", cf_sites_key(ch->sites, (int)i)) || !origins)
            goto oom;
        for (size_t j = 0; j < cf_sites_n_origins(ch->sites, (int)i); j++) {
            cJSON *s = cJSON_CreateString(cf_sites_origin(ch->sites, (int)i, j));
            if (!s || !cJSON_AddItemToArray(origins, s)) {
                cJSON_Delete(s);
                goto oom;
            }
        }
    }
    return o;
oom:
    cJSON_Delete(o);
    return NULL;
}

static int gate_refuse(cf_site_gate *g, unsigned status, const char *msg)
{
    g->status = status;
    g->msg = msg;
    return 0;
}

int cf_compat_http_gate_events(cf_compat_http *ch, struct MHD_Connection *c, bool bearer, bool site_only, bool ndjson,
                               const char *body, size_t len, cf_site_gate *g)
{
    memset(g, 0, sizeof *g);
    if (!cf_sites_any(ch->sites))
        return 0;
    const char *qsite = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "site");
    static const char missing[] = "missing bearer token or site key (the event's \"site\" or ?site=)";
    /* The common cases stay cheap: a body that cannot name a site is left
     * alone (or refused when a site key is its only credential). */
    if (!qsite && !memmem(body, len, "\"site\"", 6))
        return site_only ? gate_refuse(g, 401, missing) : 0;
    if (ndjson)
        return site_only ? gate_refuse(g, 415, "send site-key events as JSON (application/json or text/plain)") : 0;
    if (!cf_compat_json_clean(body, len))
        return site_only ? gate_refuse(g, 400, "a string contains U+0000 or a raw control character") : 0;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(body, len + 1, &end, 1);
    if (!root || end != body + len || !(cJSON_IsObject(root) || cJSON_IsArray(root))) {
        /* Not JSON: the ingest path answers 400 and accepts nothing. */
        cJSON_Delete(root);
        return 0;
    }
    const char *origin = header(c, "Origin");
    char peer[INET6_ADDRSTRLEN];
    client_ip(c, peer);
    const char *ua = header(c, MHD_HTTP_HEADER_USER_AGENT);
    int64_t now = wall_ms();
    size_t n_site = 0;
    bool changed = false;
    int rc = 0;
    cJSON *first = cJSON_IsArray(root) ? root->child : root;
    for (cJSON *e = first; e; e = cJSON_IsArray(root) ? e->next : NULL) {
        if (!cJSON_IsObject(e))
            continue;   /* validation rejects it */
        const char *name = obj_str(e, "site");
        if (!name)
            name = qsite;
        int site = name ? cf_sites_find(ch->sites, name, strlen(name)) : -1;
        if (site < 0) {
            if (site_only) {
                rc = gate_refuse(g, 401, name ? "unknown site key" : missing);
                goto out;
            }
            continue;
        }
        if (!bearer && !cf_sites_origin_ok(ch->sites, site, origin)) {
            rc = gate_refuse(g, 403, "this Origin is not one of the site key's origins");
            goto out;
        }
        n_site++;
        const char *key = cf_sites_key(ch->sites, site);
        if (!obj_str(e, "site")) {
            if (!cJSON_AddStringToObject(e, "site", key)) {
                rc = -ENOMEM;
                goto out;
            }
            changed = true;
        }
        const cJSON *u = cJSON_GetObjectItemCaseSensitive(e, "user_id");
        if (!u || cJSON_IsNull(u)) {
            cf_enricher *en = get_enricher(ch);
            if (!en) {
                rc = gate_refuse(g, 503, "visitor ids cannot be derived now (see the server log)");
                g->retry_after = 1;
                goto out;
            }
            const char *eua = obj_str(e, "user_agent");
            if (!eua)
                eua = ua ? ua : "";
            char id[CF_VISITOR_ID_LEN + 1];
            cf_enricher_visitor_id(en, now, key, strlen(key), peer, strlen(peer), eua, strlen(eua), id);
            cJSON_DeleteItemFromObjectCaseSensitive(e, "user_id");
            if (!cJSON_AddStringToObject(e, "user_id", id)) {
                rc = -ENOMEM;
                goto out;
            }
            changed = true;
        }
    }
    if (n_site > 0 && !bearer) {
        g->allow_origin = origin != NULL;
        unsigned wait = cf_sites_rate(ch->sites, peer, n_site);
        if (wait > 0) {
            rc = gate_refuse(g, 429, "too many events from this IP address (see --ip-rate), retry later");
            g->retry_after = wait;
            goto out;
        }
    }
    if (changed) {
        g->body = cJSON_PrintUnformatted(root);
        if (!g->body)
            rc = -ENOMEM;
        else
            g->len = strlen(g->body);
    }
out:
    cJSON_Delete(root);
    return rc;
}

/* identify calls: upserts their trait rows into the built-in user_traits
 * table (builtin_panels.h) through the engine's table path, so they are
 * logged and ordered like table rows: applied before the request's events,
 * a join of those events with user_traits sees them. The row's
 * `timestamp` (Segment's message time) becomes `updated_at`, else the
 * receive time. 0 with nothing in *r, or the reply (r->status set). */
static int submit_traits(cf_compat_http *ch, cf_compat_api api, cJSON *rows, int64_t now_ms,
                         cf_compat_reply *r)
{
    if (cJSON_GetArraySize(rows) == 0)
        return 0;
    for (cJSON *row = rows->child; row; row = row->next) {
        cJSON *ts = cJSON_DetachItemFromObjectCaseSensitive(row, "timestamp");
        if (!ts)
            ts = cJSON_CreateNumber((double)now_ms);
        if (!ts)
            return -ENOMEM;
        cJSON_AddItemToObject(row, "updated_at", ts);
    }
    /* The traits' numbers as sent (cf_jsonnum.h): rows is not read again. */
    char *text = cf_json_print_exact(rows);
    if (!text)
        return -ENOMEM;
    cf_stream_batch b;
    memset(&b, 0, sizeof b);
    const char *why = NULL;
    cf_submit_result res = {0, 0};
    int rc = cf_engine_table_rows(ch->engine, CF_USER_TRAITS_TABLE, CF_BODY_JSON, text, strlen(text), now_ms,
                                  &b, &why, &res);
    if (rc == 0 && b.rejected > 0) {
        /* The first row's reason, as submit() answers for events. */
        const cJSON *e0 = cJSON_GetArrayItem(b.errors, 0);
        const char *reason = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(e0, "error"));
        char msg[256];
        snprintf(msg, sizeof msg, "identify: %s", reason ? reason : "invalid trait row");
        rc = reply_error(r, api, 400, msg);
    } else if (rc == -ENOMEM) {
        rc = -ENOMEM;
    } else if (rc == -EBADMSG || rc == -E2BIG || rc == -EINVAL) {
        rc = reply_error(r, api, 400, why ? why : "identify: invalid trait rows");
    } else if (rc < 0) {
        /* Busy, recovering, stopping or a storage failure: the SDKs retry
         * a 503, and an upsert of the same traits again is harmless. */
        rc = reply_error(r, api, 503, rc == -EAGAIN ? "server busy, retry later" : "trait rows not applied");
        r->retry_after = 1;
    }
    cf_stream_batch_free(&b);
    free(text);
    return rc;
}

int cf_compat_http_handle(cf_compat_http *ch, struct MHD_Connection *c, cf_compat_endpoint ep, char *body,
                          size_t len, cf_compat_reply *r)
{
    memset(r, 0, sizeof *r);
    cf_compat_api api = cf_compat_api_of(ep);
    cf_compat_result res;
    const char *why = NULL;
    int rc = cf_compat_translate(ep, body, len, &res, &why);
    if (rc == -ENOMEM)
        return -ENOMEM;
    if (rc < 0)
        return reply_error(r, api, 400, why);

    const char *origin = header(c, "Origin");
    int site = -1;
    unsigned status = 0;
    const char *msg = NULL;
    sender who = authorize(ch, c, res.key, &site, &status, &msg);
    if (who == SENDER_REFUSED) {
        rc = reply_error(r, api, status, msg);
        goto out;
    }
    char peer[INET6_ADDRSTRLEN];
    client_ip(c, peer);
    if (who == SENDER_SITE) {
        if (!cf_sites_origin_ok(ch->sites, site, origin)) {
            rc = reply_error(r, api, 403, "this Origin is not one of the site key's origins");
            goto out;
        }
        r->allow_origin = origin != NULL;
        size_t n = (size_t)cJSON_GetArraySize(res.events) + (size_t)cJSON_GetArraySize(res.traits);
        unsigned wait = cf_sites_rate(ch->sites, peer, n);
        if (wait > 0) {
            rc = reply_error(r, api, 429, "too many events from this IP address (see --ip-rate), retry later");
            r->retry_after = wait;
            goto out;
        }
    }
    int64_t now = wall_ms();
    /* Only a site key names the site: the ingest token is a secret and
     * never goes into an event. */
    const char *site_key = who == SENDER_SITE ? cf_sites_key(ch->sites, site) : NULL;
    rc = fill_users(ch, res.events, site_key, peer, header(c, MHD_HTTP_HEADER_USER_AGENT), now);
    if (rc == 0)
        rc = fill_users(ch, res.traits, site_key, peer, header(c, MHD_HTTP_HEADER_USER_AGENT), now);
    if (rc == -EAGAIN) {
        rc = reply_error(r, api, 503, "visitor ids cannot be derived now (see the server log)");
        r->retry_after = 1;
        goto out;
    }
    if (rc < 0)
        goto out;
    /* Trait rows first: the request's events come after them in the log. */
    rc = submit_traits(ch, api, res.traits, now, r);
    if (rc == 0 && r->status == 0)
        rc = submit(ch, c, api, res.events, now, r);
out:
    cf_compat_result_free(&res);
    if (rc < 0) {
        free(r->body);
        memset(r, 0, sizeof *r);
    }
    return rc;
}
