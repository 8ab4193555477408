/* http: the libmicrohttpd daemon and the request life cycle (uri_logger,
 * access_handler, request_completed), routing, and the CORS preflight.
 * The other jobs of the server have a file each (http_int.h). */
#include "http_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "cf_compat.h"
#include "log.h"

/* The largest request head served is --max-request-head, by
 * http_head_scan's cost (bytes plus 32 per parsed value). A head that
 * libmicrohttpd could still read into a connection's memory may leave no
 * room for the answer's headers: it then closes the connection without
 * one, after the request (events!) was handled. With a pool of P bytes
 * (http_conn_memory) that began at a cost of about P/2 - 240 in every mix
 * of bytes and headers we measured (7950 at 16 KiB, 3856 at 8 KiB, with a
 * CORS origin); heads over the limit are refused before anything is done
 * (test_http_limits), which leaves about 500 bytes for the answer's
 * headers. */
#define HTTP_HEAD_ROOM ((size_t)768)

/* CORS preflight answers may be cached this long by the browser. */
#define CORS_MAX_AGE "600"
/* After an over-limit body (no Content-Length, e.g. chunked) we keep
 * discarding so that the 413 can be sent, but only this many more bytes;
 * past that the connection is just closed. */
#define DISCARD_MAX ((size_t)16 << 20)

/* ---- routing ------------------------------------------------------------ */

/* /api/v1/streams/{name}/events with a plain name (letters, digits, _):
 * copies the name into out (cap bytes) when out is given. */
static bool stream_events_name(const char *path, size_t n, char *out, size_t cap)
{
    static const char tail[] = "/events";
    size_t pl = strlen(STREAMS_PREFIX), tl = sizeof tail - 1;
    if (n <= pl + tl || memcmp(path, STREAMS_PREFIX, pl) != 0 || memcmp(path + n - tl, tail, tl) != 0)
        return false;
    size_t nl = n - pl - tl;
    if (nl >= 128)
        return false;
    for (size_t i = 0; i < nl; i++) {
        char ch = path[pl + i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return false;
    }
    if (out && cap > nl) {
        memcpy(out, path + pl, nl);
        out[nl] = '\0';
    }
    return true;
}

#define TABLES_PREFIX "/api/v1/tables/"

static bool plain_name(const char *p, size_t n)
{
    if (n == 0 || n >= 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char ch = p[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_'))
            return false;
    }
    return true;
}

static int hex_digit(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* /api/v1/tables/{name}/rows (R_TABLE_ROWS) or .../rows/{key}
 * (R_TABLE_ROW, the key percent-decoded, 1..255 bytes, no '/' unencoded),
 * else R_NONE. Copies the name and key into rq when given. */
static route table_route(const char *path, size_t n, request *rq)
{
    static const char rows[] = "/rows";
    size_t pl = strlen(TABLES_PREFIX), rl = sizeof rows - 1;
    if (n <= pl || memcmp(path, TABLES_PREFIX, pl) != 0)
        return R_NONE;
    const char *name = path + pl;
    const char *slash = memchr(name, '/', n - pl);
    if (!slash || !plain_name(name, (size_t)(slash - name)))
        return R_NONE;
    size_t rest = n - (size_t)(slash - path);
    if (rest < rl || memcmp(slash, rows, rl) != 0)
        return R_NONE;
    if (rq) {
        memcpy(rq->stream, name, (size_t)(slash - name));
        rq->stream[slash - name] = '\0';
    }
    if (rest == rl)
        return R_TABLE_ROWS;
    const char *k = slash + rl;
    size_t kl = rest - rl;
    if (k[0] != '/' || kl < 2 || memchr(k + 1, '/', kl - 1))
        return R_NONE;
    size_t o = 0;
    for (size_t i = 1; i < kl; i++) {
        char ch = k[i];
        if (ch == '%') {
            int hi = i + 2 < kl ? hex_digit(k[i + 1]) : -1, lo = i + 2 < kl ? hex_digit(k[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return R_NONE;
            ch = (char)(hi * 16 + lo);
            i += 2;
        }
        if (o + 1 >= sizeof rq->key)
            return R_NONE;
        if (rq)
            rq->key[o] = ch;
        o++;
    }
    if (rq)
        rq->key[o] = '\0';
    return R_TABLE_ROW;
}

/* Routes on the raw path (before '?'), so an encoded slash cannot reach a
 * different handler than the one its bytes name. */
static route find_route(const char *path, size_t n)
{
    static const struct {
        const char *path;
        route rt;
    } table[] = {
        {"/api/v1/events", R_EVENTS},   {"/api/v1/watermark", R_WATERMARK},
        {"/api/v1/trending", R_TRENDING}, {"/api/v1/windows", R_WINDOWS},
        {"/api/v1/late", R_LATE},       {"/api/v1/sessions", R_SESSIONS},
        {"/api/v1/stats", R_STATS},     {"/api/v1/info", R_INFO},
        {"/metrics", R_METRICS},        {"/healthz", R_HEALTHZ},
        {"/readyz", R_READYZ},
        {"/api/v1/sql", R_SQL},         {"/api/v1/views", R_VIEWS},
        {"/api/v1/streams", R_STREAMS}, {"/api/v1/query", R_QUERY},
        {"/api/v1/streams/clicks/events", R_CLICK_EVENTS},
        {"/api/v1/sites", R_SITES},     {"/api/v1/tables", R_TABLES},
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strlen(table[i].path) == n && memcmp(table[i].path, path, n) == 0)
            return table[i].rt;
    size_t pl = strlen(SESSIONS_PREFIX);
    if (n > pl && memcmp(path, SESSIONS_PREFIX, pl) == 0 && memchr(path + pl, '/', n - pl) == NULL)
        return R_USER_SESSIONS;
    if (stream_events_name(path, n, NULL, 0))
        return R_STREAM_EVENTS;
    route tr = table_route(path, n, NULL);
    if (tr != R_NONE)
        return tr;
    if (cf_compat_route(path, n) != CF_COMPAT_NONE)
        return R_COMPAT;
    size_t vp = strlen(VIEWS_PREFIX), rs = strlen(ROLLUP_SUFFIX);
    if (n > vp + rs && memcmp(path, VIEWS_PREFIX, vp) == 0 &&
        memcmp(path + n - rs, ROLLUP_SUFFIX, rs) == 0 &&
        memchr(path + vp, '/', n - vp - rs) == NULL)
        return R_VIEW_ROLLUP;
    return R_NONE;
}

static bool route_is_post(route rt)
{
    return rt == R_EVENTS || rt == R_WATERMARK || rt == R_COMPAT || rt == R_SQL || rt == R_QUERY ||
           rt == R_STREAM_EVENTS || rt == R_TABLE_ROWS;
}

static const char *route_allow(route rt)
{
    if (rt == R_QUERY)
        return "GET, HEAD, POST, OPTIONS";
    if (rt == R_TABLE_ROW)
        return "GET, HEAD, DELETE, OPTIONS";
    return route_is_post(rt) ? "POST, OPTIONS" : "GET, HEAD, OPTIONS";
}

/* Read-protected routes: the API and /metrics; probes stay open. */
static bool route_needs_read_token(route rt)
{
    return rt == R_QUERY || (rt != R_NONE && rt != R_HEALTHZ && rt != R_READYZ && !route_is_post(rt));
}

/* Routes a rebound page could abuse: reads, SQL definitions and table-row
 * deletes. Ingest is not checked: any page may already post events
 * cross-origin, with or without rebinding. */
static bool route_checks_host(route rt)
{
    return route_needs_read_token(rt) || rt == R_SQL || rt == R_TABLE_ROW;
}


static enum MHD_Result handle_options(request *rq, struct MHD_Connection *c)
{
    const char *allow = route_allow(rq->rt);
    extra_header h[7];
    size_t n = 0;
    h[n++] = (extra_header){MHD_HTTP_HEADER_ALLOW, allow};
    /* A compatible endpoint's preflight carries no key: an origin of any
     * site key may go on (the request itself is checked against its key). */
    bool site_origin = rq->rt == R_COMPAT && !http_cors_allow(rq->h, c) &&
                       cf_compat_http_origin_known(rq->h->compat, http_header(c, "Origin"));
    if ((http_cors_allow(rq->h, c) || site_origin) && http_header(c, "Access-Control-Request-Method")) {
        if (site_origin) {
            h[n++] = (extra_header){"Access-Control-Allow-Origin", http_header(c, "Origin")};
            if (rq->h->cfg.n_cors_origins == 0)   /* else http_send_response adds Vary */
                h[n++] = (extra_header){MHD_HTTP_HEADER_VARY, "Origin"};
        }
        h[n++] = (extra_header){"Access-Control-Allow-Methods", allow};
        h[n++] = (extra_header){"Access-Control-Allow-Headers", "Content-Type, Authorization"};
        h[n++] = (extra_header){"Access-Control-Max-Age", CORS_MAX_AGE};
    }
    return http_send_static(rq, c, MHD_HTTP_NO_CONTENT, NULL, "", 0, h, n);
}

/* Answers every request but an accepted POST, once it is complete. */
static enum MHD_Result handle_request(request *rq, struct MHD_Connection *c, const char *url, const char *method)
{
    cf_http *h = rq->h;
    if (strcmp(method, "OPTIONS") == 0 && rq->rt != R_NONE)
        return handle_options(rq, c);
    if (rq->rt == R_NONE) {
        if (strcmp(method, "OPTIONS") == 0 && http_asset_exists(url)) {
            static const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, "GET, HEAD, OPTIONS"}};
            return http_send_static(rq, c, MHD_HTTP_NO_CONTENT, NULL, "", 0, allow, 1);
        }
        return http_handle_asset(rq, c, url, method);
    }
    bool is_get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
    if (route_checks_host(rq->rt) && !http_host_allowed(h, c))
        return http_send_wrong_host(rq, c);
    if (rq->rt == R_STREAM_EVENTS && !cf_engine_has_stream(rq->h->engine, rq->stream))
        return http_send_error(rq, c, MHD_HTTP_NOT_FOUND, "not found");  /* no such declared stream */
    if (rq->rt == R_QUERY && is_get) {
        if (!http_authorized(c, h->cfg.read_token))
            return http_send_unauthorized(rq, c, http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        const char *q = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "sql");
        if (!q)
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST, "the sql parameter is required");
        return http_answer_query(rq, c, q, strlen(q));
    }
    if (rq->rt == R_TABLE_ROW && strcmp(method, "DELETE") == 0) {
        /* A delete is a write: the ingest token, like the upserts. */
        if (!http_authorized(c, h->cfg.ingest_token))
            return http_send_unauthorized(rq, c, http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
        if (!cf_engine_ready(h->engine))
            return http_send_unavailable(rq, c, "not ready: recovery in progress, retry later");
        return http_handle_table_row(rq, c, true);
    }
    if (route_is_post(rq->rt) || !is_get) {
        const extra_header allow[] = {{MHD_HTTP_HEADER_ALLOW, route_allow(rq->rt)}};
        return http_send_error_h(rq, c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed", allow, 1);
    }
    if (route_needs_read_token(rq->rt) && !http_authorized(c, h->cfg.read_token))
        return http_send_unauthorized(rq, c, http_header(c, MHD_HTTP_HEADER_AUTHORIZATION) != NULL);
    return http_handle_get(rq, c);
}

static const extra_header close_hdr[] = {{MHD_HTTP_HEADER_CONNECTION, "close"}};

static enum MHD_Result access_handler(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                      const char *version, const char *upload, size_t *upload_size,
                                      void **con_cls)
{
    (void)cls;
    (void)version;
    request *rq = *con_cls;
    if (!rq)
        return MHD_NO;   /* uri_logger ran out of memory */
    cf_http *h = rq->h;
    if (rq->park_state == PARK_DONE)
        return http_finish_parked(rq, c);   /* resumed by http_park.c */
    if (rq->park_state == PARK_WAITING)
        return MHD_YES;                /* not expected while suspended */
    /* The clock only where a deadline is checked or set: with the headers
     * and with each piece of body, not at the final call. */
    int64_t now = 0, left = 0;
    if (!rq->headers_done || (rq->reading_body && *upload_size > 0)) {
        now = http_now_ms();
        left = h->cfg.request_deadline_ms - (now - rq->start_ms);
    }

    if (!rq->headers_done) {
        /* Headers are in. Only a POST is answered right away, when it is
         * refused (auth, type, size): MHD then skips its body and closes the
         * connection. Everything else is answered on the next call, once the
         * request is complete, so the connection can be kept alive. */
        rq->headers_done = true;
        if (left <= 0)
            return http_send_error(rq, c, MHD_HTTP_REQUEST_TIMEOUT, "request deadline exceeded");
        http_head_scan(c, &rq->head);
        if (rq->head.cost > h->cfg.max_request_head) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "the request head is too large (at most %zu bytes, less 32 per header, cookie and "
                     "query argument: --max-request-head)",
                     h->cfg.max_request_head);
            return http_send_error_h(rq, c, MHD_HTTP_REQUEST_HEADER_FIELDS_TOO_LARGE, msg, close_hdr, 1);
        }
        if (rq->head.framing_error)
            return http_send_bad_framing(rq, c, rq->head.framing_error);
        if (!http_target_clean(rq->raw_uri))
            return http_send_error(rq, c, MHD_HTTP_BAD_REQUEST,
                              "the URL must not contain %00 (NUL) or control characters");
        http_apply_deadline(rq, c, left);
        rq->rt = find_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"));
        if (rq->rt == R_STREAM_EVENTS)
            stream_events_name(rq->raw_uri, strcspn(rq->raw_uri, "?#"), rq->stream, sizeof rq->stream);
        if (rq->rt == R_TABLE_ROWS || rq->rt == R_TABLE_ROW)
            table_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"), rq);
        int64_t end = rq->start_ms + h->cfg.request_deadline_ms;
        if (rq->rt == R_COMPAT)
            rq->compat_ep = cf_compat_route(rq->raw_uri, strcspn(rq->raw_uri, "?#"));
        if (route_is_post(rq->rt) && strcmp(method, "POST") == 0) {
            if (route_checks_host(rq->rt) && !http_host_allowed(h, c))
                return http_send_wrong_host(rq, c);
            rq->reading_body = true;
            if (rq->conn) {
                /* The body must keep arriving: a stalled one is cut long
                 * before the request deadline, and so gives its share of
                 * the body budget back. */
                conn_set(&rq->conn->phase, PHASE_BODY);
                conn_set(&rq->conn->deadline_ms, min64(end, now + h->cfg.body_stall_timeout_ms));
            }
            return http_begin_post(rq, c);
        }
        if (rq->conn)
            conn_set(&rq->conn->deadline_ms, end);
        return MHD_YES;
    }

    if (!rq->reading_body) {
        /* A body sent with anything but an accepted POST is ignored. */
        if (*upload_size > 0) {
            *upload_size = 0;
            return MHD_YES;
        }
        if (rq->conn) {
            conn_set(&rq->conn->phase, PHASE_BUSY);
            conn_set(&rq->conn->deadline_ms, 0);
        }
        return handle_request(rq, c, url, method);
    }

    if (*upload_size > 0) {
        /* A response cannot be queued while upload data is passed in: an
         * over-limit body is discarded up to a bound and answered at the
         * end; an expired deadline closes the connection. */
        if (left <= 0)
            return MHD_NO;
        http_apply_deadline(rq, c, left);
        if (rq->conn) {
            conn_set(&rq->conn->deadline_ms,
                     min64(rq->start_ms + h->cfg.request_deadline_ms, now + h->cfg.body_stall_timeout_ms));
            conn_set(&rq->conn->body_bytes,
                     atomic_load_explicit(&rq->conn->body_bytes, memory_order_relaxed) + *upload_size);
        }
        size_t n = *upload_size;
        *upload_size = 0;
        if (!rq->too_big && rq->body.len + n > rq->body_limit)
            rq->too_big = true;
        if (!rq->too_big && !rq->over_budget && rq->body.len + n > rq->reserved &&
            !http_budget_take(h, rq, rq->body.len + n - rq->reserved)) {
            /* Refused anyway (503 at the end): what it holds goes back to
             * the others now. */
            rq->over_budget = true;
            http_budget_release(h, rq);
            cf_buf_free(&rq->body);
            atomic_fetch_add_explicit(&h->over_budget, 1, memory_order_relaxed);
        }
        if (rq->too_big || rq->over_budget) {
            rq->discarded += n;
            return rq->discarded > DISCARD_MAX ? MHD_NO : MHD_YES;
        }
        cf_buf_put(&rq->body, upload, n);
        return rq->body.oom ? MHD_NO : MHD_YES;
    }

    /* The whole body is in; from here on the answer is ours to make. */
    if (rq->conn) {
        conn_set(&rq->conn->phase, PHASE_BUSY);
        conn_set(&rq->conn->deadline_ms, 0);
    }
    if (rq->over_budget && !rq->too_big)
        return http_send_unavailable(rq, c, "server busy: too many request bodies in flight, retry later");
    if (rq->too_big)
        return http_send_error(rq, c, MHD_HTTP_CONTENT_TOO_LARGE,
                          rq->rt == R_EVENTS ? "request body is larger than --max-body" : "request body is too large");
    cf_buf_put_u8(&rq->body, 0);
    if (rq->body.oom)
        return http_send_unavailable(rq, c, "out of memory");
    rq->body.len--;
    char *body = (char *)rq->body.data;
    size_t len = rq->body.len;
    if (rq->rt == R_EVENTS)
        return http_finish_events(rq, c, body, len);
    if (rq->rt == R_SQL)
        return http_finish_sql(rq, c, body, len);
    if (rq->rt == R_QUERY)
        return http_finish_query(rq, c, body, len);
    if (rq->rt == R_STREAM_EVENTS)
        return http_finish_stream_events(rq, c, body, len);
    if (rq->rt == R_TABLE_ROWS)
        return http_finish_table_rows(rq, c, body, len);
    if (rq->rt == R_COMPAT)
        return http_finish_compat(rq, c, body, len);
    return http_finish_watermark(rq, c, body, len);
}

static void *uri_logger(void *cls, const char *uri, struct MHD_Connection *c)
{
    /* The raw URI right after the state, in one allocation (a strdup of
     * its own was one more malloc and free per request, issue 15). */
    size_t ulen = strlen(uri);
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    conn_entry *ce = ci ? ci->socket_context : NULL;
    size_t need = sizeof(request) + ulen + 1;
    request *rq;
    if (ce && ce->spare_rq && ce->spare_rq_cap >= need) {
        /* The block of the connection's last request (request_completed). */
        rq = ce->spare_rq;
        ce->spare_rq = NULL;
        memset(rq, 0, HTTP_RQ_ZERO);
        rq->stream[0] = rq->key[0] = '\0';
        rq->cap = ce->spare_rq_cap;
    } else {
        size_t cap = ce && need < HTTP_RQ_KEEP ? HTTP_RQ_KEEP : need;
        if (!(rq = calloc(1, cap)))
            return NULL;
        rq->cap = cap;
    }
    rq->raw_uri = (char *)(rq + 1);
    memcpy(rq->raw_uri, uri, ulen + 1);
    cf_http *h = cls;
    rq->h = h;
    rq->start_ms = http_now_ms();
    rq->conn = ce;
    if (rq->conn) {
        rq->body = rq->conn->spare_body;   /* empty; storage kept from the last request */
        memset(&rq->conn->spare_body, 0, sizeof rq->conn->spare_body);
        rq->stripe = rq->conn->stripe;
        /* The headers must follow within --header-timeout (never later
         * than the header deadline the connection already has, nor than
         * the request deadline). */
        int64_t t = min64(h->cfg.header_timeout_ms, h->cfg.request_deadline_ms);
        conn_set(&rq->conn->body_bytes, 0);
        conn_set(&rq->conn->phase, PHASE_HEADERS);
        int64_t was = atomic_load_explicit(&rq->conn->deadline_ms, memory_order_relaxed);
        conn_set(&rq->conn->deadline_ms, min64(was, rq->start_ms + t));
    } else {
        rq->stripe = http_connection_stripe(c);
    }
    return rq;
}

static void request_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                              enum MHD_RequestTerminationCode toe)
{
    cf_http *h = cls;
    request *rq = *con_cls;
    *con_cls = NULL;
    conn_entry *ce = rq ? rq->conn : NULL;
    if (rq) {
        http_budget_release(h, rq);
        /* Until the next request line: the idle timeout, then the header
         * timeout. */
        if (rq->conn) {
            int64_t now = http_now_ms();
            conn_set(&rq->conn->served, atomic_load_explicit(&rq->conn->served, memory_order_relaxed) + 1);
            conn_set(&rq->conn->since_ms, now);
            conn_set(&rq->conn->phase, PHASE_WAITING);
            conn_set(&rq->conn->deadline_ms, now + h->cfg.connection_timeout_ms + h->cfg.header_timeout_ms);
        }
        free(rq->park_answer);
        if (rq->conn && !rq->body.oom && rq->body.cap <= HTTP_BODY_KEEP) {
            cf_buf_reset(&rq->body);
            cf_buf_free(&rq->conn->spare_body);   /* none, unless a request never completed */
            rq->conn->spare_body = rq->body;
        } else {
            cf_buf_free(&rq->body);
        }
        if (rq->conn && !rq->conn->spare_rq && rq->cap <= HTTP_RQ_KEEP) {
            rq->conn->spare_rq = rq;   /* for the next request (uri_logger) */
            rq->conn->spare_rq_cap = rq->cap;
        } else {
            free(rq);   /* and raw_uri with it (uri_logger) */
        }
    }
    /* A kept-alive connection waits for its next request with the full
     * inactivity timeout again. */
    if (toe == MHD_REQUEST_TERMINATED_COMPLETED_OK)
        http_set_timeout(ce, c, http_idle_timeout_s(h));
}

/* Each connection's memory pool (request line, headers, read buffer, the
 * answer's headers): twice --max-request-head plus HTTP_HEAD_ROOM each
 * (8 KiB by default). libmicrohttpd 0.9.75 zeroes the whole pool after
 * every request, and half of it again when it shrinks the read buffer
 * for the answer: at its default of 32 KiB those memsets were 7% of the
 * server's samples under single-event POSTs, at 16 KiB 3.3% (issue 15).
 * A head larger than the pool takes is refused by libmicrohttpd (431).
 * Bodies do not live in it: they stream through into our own buffer, in
 * reads of what is left of the pool. */
static size_t http_conn_memory(const cf_config *cfg)
{
    return 2 * (cfg->max_request_head + HTTP_HEAD_ROOM);
}

static void mhd_logger(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && msg[n - 1] == '\n')
        msg[--n] = '\0';
    cf_warn("http: %s", msg);
}

cf_http *cf_http_start(const cf_config *cfg, cf_engine *engine, const char **ret_err)
{
    /* Aligned for the status rows' cache lines (http_status_row). */
    cf_http *h = aligned_alloc(_Alignof(cf_http), sizeof *h);
    if (h)
        memset(h, 0, sizeof *h);
    if (!h) {
        *ret_err = "out of memory";
        return NULL;
    }
    h->cfg = *cfg;
    h->engine = engine;
    h->listen_fd = -1;
    h->budget = cf_body_budget_new(cfg->body_budget, cfg->body_budget_per_ip);
    h->annotate = cf_annotate_new(cfg);
    h->compat = h->annotate ? cf_compat_http_new(cfg, engine, h->annotate) : NULL;
    if (!h->budget || !h->compat || !h->annotate) {
        cf_body_budget_free(h->budget);
        cf_compat_http_free(h->compat);
        cf_annotate_free(h->annotate);
        free(h);
        *ret_err = "out of memory";
        return NULL;
    }
    /* Shed when within a sixteenth of the limit, so libmicrohttpd (which
     * stops accepting at the limit) never gets there while something can
     * be shed. */
    unsigned slack = cfg->max_connections / 16 > 0 ? cfg->max_connections / 16 : 1;
    h->shed_at = cfg->max_connections > slack ? cfg->max_connections - slack : 1;
    h->fd_ceiling = cf_config_fd_ceiling(cfg, CF_FD_KEEP_HTTP);
    pthread_mutex_init(&h->reaper_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&h->reaper_cv, &ca);
    pthread_cond_init(&h->park_cv, &ca);   /* the committer's gathering waits are monotonic */
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&h->park_mu, NULL);
    pthread_cond_init(&h->accept_cv, NULL);
    /* Benchmark seam (tests/bench/run.py S6): the inline commit wait of
     * before parking, to compare both in one run. */
    h->park_off = getenv("CLICKFLOW_BENCH_NO_PARK") != NULL;
    /* Benchmark seam: the committer starts each round at once (before
     * park_gather.h), for A/B runs of one binary. */
    h->gather_off = getenv("CLICKFLOW_BENCH_NO_GATHER") != NULL;
    /* The shared single-event answers, built per thread (http_int.h). */
    pthread_mutex_init(&h->answers_mu, NULL);
    h->answers_gen = http_answers_new_gen();

    struct sockaddr_in sin;
    struct sockaddr_in6 sin6;
    const struct sockaddr *sa;
    socklen_t sa_len;
    /* MHD_ALLOW_SUSPEND_RESUME: requests waiting for their fsync are parked
     * (http_park.c). */
    /* MHD_USE_NO_LISTEN_SOCKET, MHD_USE_ITC: our thread accepts and hands
     * connections over (http_accept.c). */
    unsigned flags = MHD_USE_EPOLL_INTERNAL_THREAD | MHD_USE_ERROR_LOG | MHD_USE_TURBO |
                     MHD_ALLOW_SUSPEND_RESUME | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ITC;
    memset(&sin, 0, sizeof sin);
    memset(&sin6, 0, sizeof sin6);
    if (inet_pton(AF_INET, cfg->bind, &sin.sin_addr) == 1) {
        sin.sin_family = AF_INET;
        sin.sin_port = htons(cfg->http_port);
        sa = (const struct sockaddr *)&sin;
        sa_len = sizeof sin;
    } else if (inet_pton(AF_INET6, cfg->bind, &sin6.sin6_addr) == 1) {
        sin6.sin6_family = AF_INET6;
        sin6.sin6_port = htons(cfg->http_port);
        sa = (const struct sockaddr *)&sin6;
        sa_len = sizeof sin6;
        flags |= MHD_USE_IPv6;
    } else {
        cf_http_stop(h);
        *ret_err = "--bind is not an IP address";
        return NULL;
    }
    int lr = http_accept_listen(h, sa, sa_len);
    if (lr < 0) {
        cf_http_stop(h);
        errno = -lr;
        *ret_err = "cannot start the HTTP server (is the port in use?)";
        return NULL;
    }
    unsigned timeout_s = http_idle_timeout_s(h);
    errno = 0;
    h->daemon = MHD_start_daemon(
        flags, cfg->http_port, NULL, NULL, access_handler, h,
        MHD_OPTION_EXTERNAL_LOGGER, mhd_logger, NULL,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)(cfg->http_threads > 1 ? cfg->http_threads : 0),
        MHD_OPTION_CONNECTION_TIMEOUT, timeout_s,
        /* Twice ours: http_accept.c holds new connections back at
         * --max-connections by our count, which drops in the CLOSED
         * notification, a moment before libmicrohttpd's own; libmicrohttpd
         * refusing one in that moment would reset it instead of leaving it
         * in the backlog. */
        MHD_OPTION_CONNECTION_LIMIT, cfg->max_connections * 2,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, http_conn_memory(cfg),
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, cfg->max_connections_per_ip,
        MHD_OPTION_URI_LOG_CALLBACK, uri_logger, h,
        MHD_OPTION_NOTIFY_COMPLETED, request_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, http_notify_connection, h,
        MHD_OPTION_END);
    if (!h->daemon) {
        int saved = errno;
        cf_http_stop(h);
        errno = saved;
        *ret_err = "cannot start the HTTP server (is the port in use?)";
        return NULL;
    }
    if (http_park_start(h) < 0) {
        cf_http_stop(h);
        *ret_err = "cannot start the commit thread";
        return NULL;
    }
    if (http_accept_start(h) < 0) {
        cf_http_stop(h);
        *ret_err = "cannot start the HTTP accept thread";
        return NULL;
    }
    if (pthread_create(&h->reaper, NULL, http_reaper_main, h) != 0) {
        cf_http_stop(h);
        *ret_err = "cannot start the request deadline thread";
        return NULL;
    }
    h->reaper_started = true;
    return h;
}

void cf_http_stop(cf_http *h)
{
    if (!h)
        return;
    /* No new connections; then parked requests are committed and resumed:
     * MHD must not stop with suspended connections, and their events are
     * logged. */
    http_accept_stop(h);
    http_park_stop(h);
    if (h->daemon)
        MHD_stop_daemon(h->daemon);   /* every CLOSED notification has run */
    if (h->reaper_started) {
        pthread_mutex_lock(&h->reaper_mu);
        h->reaper_stop = true;
        pthread_cond_signal(&h->reaper_cv);
        pthread_mutex_unlock(&h->reaper_mu);
        pthread_join(h->reaper, NULL);
    }
    pthread_cond_destroy(&h->reaper_cv);
    pthread_mutex_destroy(&h->reaper_mu);
    pthread_cond_destroy(&h->park_cv);
    pthread_mutex_destroy(&h->park_mu);
    pthread_cond_destroy(&h->accept_cv);
    http_answers_free(h);   /* after the daemon: no connection holds one */
    pthread_mutex_destroy(&h->answers_mu);
    cf_body_budget_free(h->budget);
    cf_compat_http_free(h->compat);
    cf_annotate_free(h->annotate);
    free(h);
}
