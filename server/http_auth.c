/* http_auth: the bearer-token checks of the HTTP server (http_int.h):
 * --ingest-token, --read-token and --admin-token; and the Host check
 * against DNS rebinding (--allowed-host). */
#include "http_int.h"

#include <arpa/inet.h>
#include <string.h>
#include <strings.h>

#include "host_name.h"

/* Constant-time comparison, so the token cannot be guessed byte by byte
 * from response times. */
static bool token_equal(const char *a, size_t an, const char *b, size_t bn)
{
    unsigned char diff = (unsigned char)(an != bn);
    size_t n = an < bn ? an : bn;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

bool http_authorized(struct MHD_Connection *c, const char *token)
{
    if (!token[0])
        return true;
    const char *auth = http_header(c, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return false;
    const char *t = auth + 7;
    while (*t == ' ')
        t++;
    size_t tn = strlen(t);
    while (tn > 0 && (t[tn - 1] == ' ' || t[tn - 1] == '\t'))
        tn--;
    return token_equal(t, tn, token, strlen(token));
}

enum MHD_Result http_send_unauthorized(request *rq, struct MHD_Connection *c, bool had_header)
{
    const extra_header h[] = {{MHD_HTTP_HEADER_WWW_AUTHENTICATE,
                               had_header ? "Bearer realm=\"clickflow\", error=\"invalid_token\""
                                          : "Bearer realm=\"clickflow\""}};
    return http_send_error_h(rq, c, MHD_HTTP_UNAUTHORIZED,
                        had_header ? "invalid bearer token" : "missing bearer token", h, 1);
}

/* A loopback bind is the case DNS rebinding is aimed at (a dashboard on a
 * laptop, an API behind a local proxy): there the check is on by default.
 * A server bound to other addresses is reached by names we cannot know,
 * so it checks only when --allowed-host is given (as Jupyter does). */
static bool bound_to_loopback(const char *bind)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, bind, &a4) == 1)
        return (ntohl(a4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, bind, &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

/* True when host is in the ','-separated list (or the list holds "*"). */
static bool listed(const char *list, const char *host, size_t n)
{
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if ((len == 1 && *p == '*') || cf_host_equal(host, n, p, len))
            return true;
        p += len + (p[len] == ',');
    }
    return false;
}

bool http_host_allowed(const cf_http *h, struct MHD_Connection *c)
{
    const cf_config *cfg = &h->cfg;
    if (!cfg->allowed_hosts[0] && !bound_to_loopback(cfg->bind))
        return true;
    const char *hdr = http_header(c, MHD_HTTP_HEADER_HOST);
    if (!hdr)
        return true;   /* HTTP/1.0: no browser sends a request without Host */
    size_t n;
    const char *host = cf_host_part(hdr, strlen(hdr), &n);
    if (cf_host_is_ip_literal(host, n) || cf_host_is_local_name(host, n) || listed(cfg->allowed_hosts, host, n))
        return true;
    /* The public name of a setup behind a proxy is usually listed as a
     * CORS origin already (the WebSocket needs it): take its host. */
    for (size_t i = 0; i < cfg->n_cors_origins; i++) {
        const char *o = cfg->cors_origins[i];
        if (strcmp(o, "*") == 0)
            return true;
        const char *sep = strstr(o, "://");
        if (!sep)
            continue;
        size_t on;
        const char *oh = cf_host_part(sep + 3, strcspn(sep + 3, "/?#"), &on);
        if (cf_host_equal(host, n, oh, on))
            return true;
    }
    return false;
}

enum MHD_Result http_send_wrong_host(request *rq, struct MHD_Connection *c)
{
    return http_send_error(rq, c, MHD_HTTP_FORBIDDEN,
                      "the Host header names a host this server does not answer to: list it with "
                      "--allowed-host (a guard against DNS rebinding)");
}
