/* push_admit: see push_admit.h. */
#include "push_admit.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clock.h"
#include "host_name.h"
#include "log.h"

struct cf_push_admit {
    size_t max_clients;
    char read_token[sizeof ((cf_config *)0)->read_token];
    char origins[CF_MAX_ORIGINS][sizeof ((cf_config *)0)->cors_origins[0]];
    size_t n_origins;
    bool any_origin;
    char iface[sizeof ((cf_config *)0)->bind];
    int64_t last_refusal_log_ms;
    uint64_t refusals_unlogged;
};

cf_push_admit *cf_push_admit_new(const cf_config *cfg)
{
    cf_push_admit *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->max_clients = cfg->ws_max_clients;
    snprintf(p->read_token, sizeof p->read_token, "%s", cfg->read_token);
    for (size_t i = 0; i < cfg->n_cors_origins && i < CF_MAX_ORIGINS; i++) {
        if (strcmp(cfg->cors_origins[i], "*") == 0)
            p->any_origin = true;
        snprintf(p->origins[p->n_origins++], sizeof p->origins[0], "%s", cfg->cors_origins[i]);
    }
    snprintf(p->iface, sizeof p->iface, "%s", cfg->bind);
    return p;
}

void cf_push_admit_free(cf_push_admit *p) { free(p); }

/* Copies header h into buf (cap bytes incl. NUL). Returns its length, 0 when
 * absent, -1 when it does not fit (treated as a failed check by callers). */
static int copy_header(struct lws *wsi, enum lws_token_indexes h, char *buf, int cap)
{
    int total = lws_hdr_total_length(wsi, h);
    if (total <= 0) {
        buf[0] = '\0';
        return 0;
    }
    if (total >= cap)
        return -1;
    return lws_hdr_copy(wsi, buf, cap, h);
}

static bool host_equal(const char *a, size_t an, const char *b, size_t bn)
{
    return an > 0 && an == bn && strncasecmp(a, b, an) == 0;
}

/* True when the Origin (scheme://host[:port][/...]) is this server's own
 * page. Comparing Origin with Host is not enough: after DNS rebinding both
 * name the attacker's host (evil.example now resolving to us), so a name is
 * trusted only when it cannot be rebound:
 *   - "localhost", which browsers always resolve to loopback;
 *   - the --bind address itself (an IP literal);
 *   - an IP literal equal to the Host header's: a browser sends such an
 *     Origin only for a page it loaded from that address, and such a Host
 *     only when it connected to that address (this covers a wildcard bind
 *     reached by one of the machine's addresses).
 * Any other name must be listed in --cors-origin. Ports are ignored (the
 * dashboard is on the HTTP port, the WebSocket on its own). */
static bool own_origin(const cf_push_admit *p, const char *origin, const char *host)
{
    const char *sep = strstr(origin, "://");
    if (!sep)
        return false;
    const char *o = sep + 3;
    size_t olen = strcspn(o, "/?#");
    size_t oh_len;
    const char *oh = cf_host_part(o, olen, &oh_len);
    if (host_equal(oh, oh_len, "localhost", 9))
        return true;
    if (!cf_host_is_ip_literal(oh, oh_len))
        return false;
    /* --bind is stored without brackets; compare inside them. */
    const char *bare = oh;
    size_t bare_len = oh_len;
    if (bare_len >= 2 && bare[0] == '[') {
        bare++;
        bare_len -= 2;
    }
    if (host_equal(bare, bare_len, p->iface, strlen(p->iface)))
        return true;
    size_t hh_len;
    const char *hh = cf_host_part(host, strlen(host), &hh_len);
    return host_equal(oh, oh_len, hh, hh_len);
}

static bool origin_allowed(const cf_push_admit *p, const char *origin, const char *host)
{
    if (!origin[0] || p->any_origin)
        return true;
    if (own_origin(p, origin, host))
        return true;
    size_t olen = strlen(origin);
    while (olen > 0 && origin[olen - 1] == '/')
        olen--;
    for (size_t i = 0; i < p->n_origins; i++) {
        size_t alen = strlen(p->origins[i]);
        while (alen > 0 && p->origins[i][alen - 1] == '/')
            alen--;
        if (alen == olen && strncasecmp(p->origins[i], origin, olen) == 0)
            return true;
    }
    return false;
}

/* Compares in time independent of where the strings differ. */
static bool token_equal(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned diff = alen != blen;
    size_t n = alen < blen ? alen : blen;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)a[i] ^ (unsigned char)b[i];
    return diff == 0;
}

static bool token_ok(const cf_push_admit *p, struct lws *wsi)
{
    const char *want = p->read_token;
    size_t want_len = strlen(want);
    if (want_len == 0)
        return true;
    char buf[sizeof p->read_token + 16];

    int n = copy_header(wsi, WSI_TOKEN_HTTP_AUTHORIZATION, buf, (int)sizeof buf);
    if (n > 7 && strncasecmp(buf, "Bearer ", 7) == 0) {
        const char *t = buf + 7;
        while (*t == ' ')
            t++;
        if (token_equal(t, strlen(t), want, want_len))
            return true;
    }
    /* URL arguments arrive as fragments "name=value", already URL-decoded. */
    for (int i = 0; i < 64; i++) {
        int len = lws_hdr_fragment_length(wsi, WSI_TOKEN_HTTP_URI_ARGS, i);
        if (len <= 0)
            break;
        if (len >= (int)sizeof buf)
            continue;
        if (lws_hdr_copy_fragment(wsi, buf, (int)sizeof buf, WSI_TOKEN_HTTP_URI_ARGS, i) < 0)
            continue;
        if (strncmp(buf, "token=", 6) == 0 &&
            token_equal(buf + 6, strlen(buf + 6), want, want_len))
            return true;
    }
    return false;
}

void cf_push_admit_refused(cf_push_admit *p, const char *why, const char *detail)
{
    int64_t now = mono_ms();
    if (p->last_refusal_log_ms != 0 && now - p->last_refusal_log_ms < 1000) {
        p->refusals_unlogged++;
        return;
    }
    cf_warn("push: refused a WebSocket client: %s%.200s (%llu more refused since the last report)",
            why, detail, (unsigned long long)p->refusals_unlogged);
    p->refusals_unlogged = 0;
    p->last_refusal_log_ms = now;
}

bool cf_push_admit_check(cf_push_admit *p, struct lws *wsi, size_t clients)
{
    char origin[512], host[512];
    if (clients >= p->max_clients) {
        cf_push_admit_refused(p, "too many clients (--ws-max-clients)", "");
        return false;
    }
    char version[8];
    if (copy_header(wsi, WSI_TOKEN_VERSION, version, (int)sizeof version) < 0 || strcmp(version, "13") != 0) {
        cf_push_admit_refused(p, "Sec-WebSocket-Version is not 13", "");
        return false;
    }
    if (copy_header(wsi, WSI_TOKEN_ORIGIN, origin, (int)sizeof origin) < 0 ||
        copy_header(wsi, WSI_TOKEN_HOST, host, (int)sizeof host) < 0) {
        cf_push_admit_refused(p, "oversized Origin or Host header", "");
        return false;
    }
    if (!origin_allowed(p, origin, host)) {
        cf_push_admit_refused(p, "origin not allowed (see --cors-origin): ", origin);
        return false;
    }
    if (!token_ok(p, wsi)) {
        cf_push_admit_refused(p, "missing or wrong read token", "");
        return false;
    }
    return true;
}
